//! SCEP enrollment throughput against the bare RSA operations it needs.
//!
//! `cargo bench -p citadel-certs --bench enrollment`
//!
//! The fixture is a real PKCSReq from Debian's `scepclient` (SHA-1, single-DES envelope) to
//! a throwaway test CA (RSA-3072, like the appliance's). One enrollment = decode (RSA
//! decryption of the content key, signature checks) + issue (one CA signature) + CertRep (one
//! CA signature). The ceiling is what the same threads do with only the three RSA private-key
//! operations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use citadel_certs::scep::{self, DecodeOptions};
use citadel_certs::{CertificateAuthority, SecretPem};
use rustls_pki_types::pem::PemObject;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/fixtures");
const RUN: Duration = Duration::from_secs(4);

fn per_second(threads: usize, work: impl Fn() + Send + Sync + 'static) -> f64 {
    let work = Arc::new(work);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let work = Arc::clone(&work);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    work();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let cert = std::fs::read_to_string(format!("{FIXTURES}/ca.pem")).unwrap();
    let key_pem = std::fs::read_to_string(format!("{FIXTURES}/ca.key")).unwrap();
    let ca = Arc::new(CertificateAuthority::from_pem(&cert, &SecretPem::new(key_pem.clone())).unwrap());
    let message = Arc::new(std::fs::read(format!("{FIXTURES}/pkcsreq-des.der")).unwrap());
    let now = ca.info().unwrap().not_before + time::Duration::days(1);
    let opts = DecodeOptions { allow_des: true, now };
    let ca_der = ca.certificate_der().to_vec();

    // Sanity: the fixture really enrols.
    let req = scep::decode_request(&message, &ca, &opts).unwrap();
    assert_eq!(req.csr.challenge_password.as_deref(), Some("BENCHCHALLENGE"));

    // The bare private-key operations, on the same key through the same library.
    let pkcs8 = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let der = pkcs8.secret_der().to_vec();
    let signer = Arc::new(RsaKeyPair::from_pkcs8(&der).unwrap());
    let private = PrivateDecryptingKey::from_pkcs8(&der).unwrap();
    let ciphertext = {
        let public = private.public_key();
        let enc = aws_lc_rs::rsa::Pkcs1PublicEncryptingKey::new(public).unwrap();
        let mut out = vec![0u8; enc.ciphertext_size()];
        enc.encrypt(&[7u8; 8], &mut out).unwrap().to_vec()
    };
    let decrypter = Arc::new(Pkcs1PrivateDecryptingKey::new(private).unwrap());
    let rng = aws_lc_rs::rand::SystemRandom::new();

    println!(
        "SCEP enrollment benchmark (RSA-{} CA), {RUN:?} per figure",
        signer.public_modulus_len() * 8
    );
    for threads in [1, 2] {
        let (s, r) = (Arc::clone(&signer), rng.clone());
        let signs = per_second(threads, move || {
            let mut sig = vec![0u8; s.public_modulus_len()];
            s.sign(&RSA_PKCS1_SHA256, &r, b"to be signed", &mut sig).unwrap();
        });
        let (d, c) = (Arc::clone(&decrypter), ciphertext.clone());
        let decrypts = per_second(threads, move || {
            let mut out = vec![0u8; d.key_size_bytes()];
            d.decrypt(&c, &mut out).unwrap();
        });
        let ceiling = 1.0 / (2.0 / signs + 1.0 / decrypts);
        let (ca2, msg, cad) = (Arc::clone(&ca), Arc::clone(&message), ca_der.clone());
        let enrollments = per_second(threads, move || {
            let req = scep::decode_request(&msg, &ca2, &opts).unwrap();
            let issued = ca2
                .issue_device_certificate(&req.csr, time::Duration::days(730), now)
                .unwrap();
            scep::cert_rep_success(&ca2, &req.reply_to(), &[&issued.der, &cad]).unwrap();
        });
        println!(
            "{threads} thread(s): {signs:>7.0} signatures/s  {decrypts:>7.0} decryptions/s  \
             ceiling {ceiling:>6.0} enrollments/s  measured {enrollments:>6.0} enrollments/s ({:.0} % of ceiling)",
            100.0 * enrollments / ceiling
        );
    }
}
