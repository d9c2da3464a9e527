//! Who is talking: the device identity certificate behind an MDM request, established before
//! any plist it sent is trusted.
//!
//! The certificate comes from the TLS client certificate (mTLS) or from the `Mdm-Signature`
//! header (base64 detached CMS over the exact body). Either way it must have been issued by our
//! issuing CA, be valid now, be in the registry and not be revoked.

use std::collections::HashMap;
use std::sync::Mutex;

use citadel_certs::inspect_der;
use time::OffsetDateTime;

use crate::pki::Pki;
use crate::scep::registry::{self, CertificateRecord};
use crate::store::{Store, StoreError};

/// A detached signature is a few KiB (signer certificate plus chain); more is not a signature.
const MAX_SIGNATURE_HEADER: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    ClientCertificate,
    MdmSignature,
}

/// An authenticated device identity certificate.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    pub sha256: String,
    pub serial: String,
    pub source: IdentitySource,
    pub record: CertificateRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no device identity: neither a client certificate nor an Mdm-Signature header")]
    Missing,
    #[error("the Mdm-Signature header is not valid: {0}")]
    BadSignature(String),
    #[error("the client certificate and the Mdm-Signature signer differ")]
    Conflicting,
    #[error("the certificate was not issued by this appliance's CA or is not valid now")]
    NotOurs,
    #[error("the certificate is not in the registry")]
    Unknown,
    #[error("the certificate has been revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Remembers which certificates already proved to be ours (CA signature checked), so that a
/// device's every request costs a hash lookup instead of parsing and an ECDSA verification.
/// Validity dates and revocation are still checked on every request.
#[derive(Debug)]
pub struct IdentityVerifier {
    known: Mutex<HashMap<[u8; 32], KnownCertificate>>,
    /// Checks `Mdm-Signature`s, keeping the parsed keys of the devices talking now.
    signatures: citadel_certs::cms::DetachedVerifier,
}

impl Default for IdentityVerifier {
    fn default() -> Self {
        Self {
            known: Mutex::default(),
            signatures: citadel_certs::cms::DetachedVerifier::new(SIGNERS_KEPT),
        }
    }
}

#[derive(Debug, Clone)]
struct KnownCertificate {
    serial: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

/// Beyond this many distinct certificates the cache starts over (a fleet is ~100,000).
const MAX_KNOWN: usize = 250_000;

/// Parsed signer keys kept: more than the devices in one push fan-out's flight (each signs an
/// Idle and then its answers within a second or two), ~6 MB at most for RSA-2048.
const SIGNERS_KEPT: usize = 4_096;

impl IdentityVerifier {
    /// Establishes the identity behind a request from the TLS peer certificate and/or the
    /// `Mdm-Signature` header value over `body`.
    pub fn authenticate(
        &self,
        pki: &Pki,
        store: &dyn Store,
        peer_certificate: Option<&[u8]>,
        signature_header: Option<&str>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<DeviceIdentity, IdentityError> {
        let signed_by = match signature_header {
            None => None,
            Some(value) => {
                let value = value.trim();
                if value.len() > MAX_SIGNATURE_HEADER {
                    return Err(IdentityError::BadSignature("too long".into()));
                }
                // Base64 with or without padding or line breaks, as clients differ (copied only
                // when it has whitespace: this runs on every request).
                let compact: std::borrow::Cow<'_, str> = if value.bytes().any(|b| b.is_ascii_whitespace()) {
                    value
                        .chars()
                        .filter(|c| !c.is_ascii_whitespace())
                        .collect::<String>()
                        .into()
                } else {
                    value.into()
                };
                let der = data_encoding::BASE64
                    .decode(compact.as_bytes())
                    .or_else(|_| data_encoding::BASE64_NOPAD.decode(compact.trim_end_matches('=').as_bytes()))
                    .map_err(|e| IdentityError::BadSignature(format!("not base64: {e}")))?;
                let signed = self
                    .signatures
                    .verify(&der, body)
                    .map_err(|e| IdentityError::BadSignature(e.to_string()))?;
                Some(signed.certificate_der)
            }
        };
        let der = match (peer_certificate, signed_by.as_deref()) {
            (None, None) => return Err(IdentityError::Missing),
            (Some(tls), Some(sig)) if tls != sig => return Err(IdentityError::Conflicting),
            (Some(tls), _) => tls,
            (None, Some(sig)) => sig,
        };
        let source = if peer_certificate.is_some() {
            IdentitySource::ClientCertificate
        } else {
            IdentitySource::MdmSignature
        };
        let digest = citadel_certs::sha256(der);
        let known = self.lookup(&digest);
        let known = match known {
            Some(k) => k,
            None => {
                if !pki.issuing_ca().issued_and_valid(der, now) {
                    return Err(IdentityError::NotOurs);
                }
                let info = inspect_der(der).map_err(|_| IdentityError::NotOurs)?;
                let k = KnownCertificate {
                    serial: info.serial_hex,
                    not_before: info.not_before,
                    not_after: info.not_after,
                };
                self.remember(digest, k.clone());
                k
            }
        };
        if now < known.not_before || now > known.not_after {
            return Err(IdentityError::NotOurs);
        }
        let record = registry::get(store, &known.serial)?.ok_or(IdentityError::Unknown)?;
        if record.is_revoked() {
            return Err(IdentityError::Revoked);
        }
        Ok(DeviceIdentity {
            sha256: hex::encode(digest),
            serial: known.serial,
            source,
            record,
        })
    }

    fn lookup(&self, digest: &[u8; 32]) -> Option<KnownCertificate> {
        self.known.lock().ok()?.get(digest).cloned()
    }

    fn remember(&self, digest: [u8; 32], known: KnownCertificate) {
        if let Ok(mut map) = self.known.lock() {
            if map.len() >= MAX_KNOWN {
                map.clear();
            }
            map.insert(digest, known);
        }
    }
}
