//! SCEP enrollment throughput against the bare private-key operations it needs.
//!
//! `cargo bench -p citadel-certs --bench enrollment`
//!
//! The fixture is a real PKCSReq from Debian's `scepclient` (SHA-1, single-DES envelope) to a
//! throwaway PKI of the appliance's shape: RSA-2048 RA, ECDSA P-256 issuing CA. One
//! enrollment = decode (RSA decryption of the content key with the RA key, signature checks) +
//! issue (one ECDSA signature by the issuing CA) + CertRep (one RSA signature by the RA). The
//! ceiling is what the same threads do with only those three private-key operations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256};
use citadel_certs::scep::{self, DecodeOptions};
use citadel_certs::{CertificateAuthority, RegistrationAuthority, SecretPem};
use rustls_pki_types::pem::PemObject;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/fixtures");
const RUN: Duration = Duration::from_secs(4);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

fn pkcs8(pem: &str) -> Vec<u8> {
    rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .secret_der()
        .to_vec()
}

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
    let (issuing_key, ra_key) = (fixture("issuing.key"), fixture("ra.key"));
    let issuing = Arc::new(
        CertificateAuthority::from_pem(&fixture("issuing.pem"), &SecretPem::new(issuing_key.clone()))
            .unwrap(),
    );
    let ra = Arc::new(
        RegistrationAuthority::from_pem(&fixture("ra.pem"), &SecretPem::new(ra_key.clone())).unwrap(),
    );
    let root_der = citadel_certs::pem_to_der(&fixture("root.pem")).unwrap().to_vec();
    let message = Arc::new(std::fs::read(format!("{FIXTURES}/pkcsreq-des.der")).unwrap());
    let now = issuing.info().unwrap().not_before + time::Duration::days(1);
    let opts = DecodeOptions { allow_des: true, now };
    let issuing_der = issuing.certificate_der().to_vec();

    // Sanity: the fixture really enrols.
    let req = scep::decode_request(&message, &ra, &issuing, &opts).unwrap();
    assert_eq!(req.csr.challenge_password.as_deref(), Some("BENCHCHALLENGE"));

    // The bare private-key operations, on the same keys through the same library.
    let ra_der = pkcs8(&ra_key);
    let rsa_signer = Arc::new(RsaKeyPair::from_pkcs8(&ra_der).unwrap());
    let private = PrivateDecryptingKey::from_pkcs8(&ra_der).unwrap();
    let ciphertext = {
        let public = private.public_key();
        let enc = aws_lc_rs::rsa::Pkcs1PublicEncryptingKey::new(public).unwrap();
        let mut out = vec![0u8; enc.ciphertext_size()];
        enc.encrypt(&[7u8; 8], &mut out).unwrap().to_vec()
    };
    let decrypter = Arc::new(Pkcs1PrivateDecryptingKey::new(private).unwrap());
    let ecdsa =
        Arc::new(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8(&issuing_key)).unwrap());
    let rng = aws_lc_rs::rand::SystemRandom::new();

    println!("SCEP enrollment benchmark (RSA-2048 RA, ECDSA P-256 issuing CA), {RUN:?} per figure");
    for threads in [1, 2] {
        let (s, r) = (Arc::clone(&rsa_signer), rng.clone());
        let rsa_signs = per_second(threads, move || {
            let mut sig = vec![0u8; s.public_modulus_len()];
            s.sign(&RSA_PKCS1_SHA256, &r, b"to be signed", &mut sig).unwrap();
        });
        let (d, c) = (Arc::clone(&decrypter), ciphertext.clone());
        let decrypts = per_second(threads, move || {
            let mut out = vec![0u8; d.key_size_bytes()];
            d.decrypt(&c, &mut out).unwrap();
        });
        let (e, r) = (Arc::clone(&ecdsa), rng.clone());
        let ec_signs = per_second(threads, move || {
            e.sign(&r, b"to be signed").unwrap();
        });
        let ceiling = 1.0 / (1.0 / rsa_signs + 1.0 / decrypts + 1.0 / ec_signs);
        let (ra2, ca2, msg) = (Arc::clone(&ra), Arc::clone(&issuing), Arc::clone(&message));
        let (cad, rootd) = (issuing_der.clone(), root_der.clone());
        let enrollments = per_second(threads, move || {
            let req = scep::decode_request(&msg, &ra2, &ca2, &opts).unwrap();
            let issued = ca2
                .issue_device_certificate(&req.csr, time::Duration::days(730), now)
                .unwrap();
            scep::cert_rep_success(&ra2, &req.reply_to(), &[&issued.der, &cad, &rootd]).unwrap();
        });
        println!(
            "{threads} thread(s): RSA {rsa_signs:>6.0} signatures/s {decrypts:>6.0} decryptions/s, \
             ECDSA {ec_signs:>6.0} signatures/s; ceiling {ceiling:>5.0} enrollments/s, \
             measured {enrollments:>5.0} enrollments/s ({:.0} % of ceiling)",
            100.0 * enrollments / ceiling
        );
    }
}
