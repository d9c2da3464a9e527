//! Citadel's certificate authority.
//!
//! This crate is pure: bytes in, bytes out. It never opens a file or a socket and never reads
//! the clock; callers pass `now`. It is the only code that generates, parses or uses private
//! keys. Keys leave it only as [`SecretPem`] (for the caller to persist with owner-only
//! permissions) or wrapped in a rustls signing key.

mod authority;
pub mod cms;
mod crypto;
mod device;
mod inspect;
mod oids;
pub mod push;
pub mod scep;
pub mod seal;
mod secret;
#[cfg(test)]
mod test_support;

pub use authority::{
    CA_VALIDITY, CertificateAuthority, ISSUING_CA_VALIDITY, IssuedCertificate, RA_VALIDITY,
    RegistrationAuthority, SERVER_CERT_VALIDITY, ServerIdentity, certified_key,
};
pub use device::DeviceCertificate;
pub use inspect::{
    CertificateInfo, SerialAndValidity, inspect_der, inspect_pem, pem_to_der, serial_and_validity,
};
pub use secret::SecretPem;

/// SHA-256 of `data` (aws-lc's implementation: several times faster than a portable one on
/// CPUs without SHA extensions, and it runs on every device request).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
    out
}

/// Everything that can go wrong in this crate. The messages are meant for an operator.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("could not generate a key pair: {0}")]
    KeyGeneration(String),
    #[error("could not build the certificate: {0}")]
    Issue(String),
    #[error("not a valid PEM {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("not a valid X.509 certificate: {0}")]
    Parse(String),
    #[error("the private key is not usable: {0}")]
    Key(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("invalid server name {name:?}: {reason}")]
    ServerName { name: String, reason: String },
    #[error("certificate request refused: {0}")]
    Request(String),
    #[error("could not encode: {0}")]
    Encode(String),
}
