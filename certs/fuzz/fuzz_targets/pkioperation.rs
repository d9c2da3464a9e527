//! Feeds arbitrary bytes to the SCEP PKIOperation decoder: it must return an error or a
//! request, never panic.
#![no_main]

use std::sync::OnceLock;

use citadel_certs::{CertificateAuthority, RegistrationAuthority};
use citadel_certs::scep::{DecodeOptions, decode_request};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

const NOW: i64 = 1_800_000_000;

/// The appliance's shape: an ECDSA issuing CA and an RSA RA under an RSA root.
fn pki() -> &'static (CertificateAuthority, RegistrationAuthority) {
    static PKI: OnceLock<(CertificateAuthority, RegistrationAuthority)> = OnceLock::new();
    PKI.get_or_init(|| {
        let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let root = CertificateAuthority::generate("fuzz", now).unwrap_or_else(|e| panic!("CA: {e}"));
        let issuing = root.generate_issuing("fuzz", now).unwrap_or_else(|e| panic!("CA: {e}"));
        let ra = root
            .issue_registration_authority("fuzz", now)
            .unwrap_or_else(|e| panic!("RA: {e}"));
        (issuing, ra)
    })
}

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions {
        allow_des: data.first().is_some_and(|b| b & 1 == 1),
        now: OffsetDateTime::from_unix_timestamp(NOW).unwrap_or(OffsetDateTime::UNIX_EPOCH),
    };
    let (issuing, ra) = pki();
    let _ = decode_request(data, ra, issuing, &opts);
});
