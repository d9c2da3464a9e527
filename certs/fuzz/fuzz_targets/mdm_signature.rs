//! Feeds arbitrary bytes to the `Mdm-Signature` verifier: it must return an error or a
//! signer, never panic. The first two bytes give the signature's length; the rest of the
//! input is split there into signature and body.
#![no_main]

use citadel_certs::cms::verify_detached;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let at = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (signature, body) = rest.split_at(at);
    let _ = verify_detached(signature, body);
});
