//! Feeds arbitrary bytes to the SCEP PKIOperation decoder: it must return an error or a
//! request, never panic.
#![no_main]

use std::sync::OnceLock;

use citadel_certs::CertificateAuthority;
use citadel_certs::scep::{DecodeOptions, decode_request};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

const NOW: i64 = 1_800_000_000;

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        let now = OffsetDateTime::from_unix_timestamp(NOW).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        CertificateAuthority::generate("fuzz", now).unwrap_or_else(|e| panic!("CA: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let opts = DecodeOptions {
        allow_des: data.first().is_some_and(|b| b & 1 == 1),
        now: OffsetDateTime::from_unix_timestamp(NOW).unwrap_or(OffsetDateTime::UNIX_EPOCH),
    };
    let _ = decode_request(data, ca(), &opts);
});
