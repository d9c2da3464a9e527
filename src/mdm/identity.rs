//! Who is talking: the device identity certificate behind an MDM request, established before
//! any plist it sent is trusted.
//!
//! The certificate comes from the TLS client certificate (mTLS) or from the `Mdm-Signature`
//! header (base64 detached CMS over the exact body). Either way it must be byte for byte a
//! certificate this appliance issued — the registry's record for its serial number has its
//! fingerprint, or (on the command channel) it is the certificate bound to the enrollment,
//! which the registry vouched for when it was bound — be valid now and not be revoked.

use std::borrow::Cow;

use time::OffsetDateTime;

use crate::scep::registry::{self, CertificateRecord};
use crate::store::{Store, StoreError};

/// A detached signature is a few KiB (signer certificate plus chain); more is not a signature.
const MAX_SIGNATURE_HEADER: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    ClientCertificate,
    MdmSignature,
}

/// A certificate a request was made with, its possession proven (the `Mdm-Signature` checked,
/// or the TLS handshake made with its key), not yet known to be one this appliance issued:
/// [`Self::registered`] asks the registry; the command channel compares it with the
/// certificate bound to the enrollment instead (`MdmService::answer_connect`).
#[derive(Debug, Clone)]
pub struct PresentedCertificate {
    pub sha256: String,
    pub serial: String,
    pub source: IdentitySource,
    /// The validity period the certificate states: the issued one once its fingerprint is
    /// known to be a certificate this appliance issued.
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl PresentedCertificate {
    /// The device identity behind this certificate: the registry's record for its serial
    /// number has its fingerprint (byte for byte the certificate this appliance issued, so no
    /// signature check against the CA), and it is valid now and not revoked.
    pub fn registered(self, store: &dyn Store, now: OffsetDateTime) -> Result<DeviceIdentity, IdentityError> {
        let record = registry::get(store, &self.serial)?.ok_or(IdentityError::Unknown)?;
        // Same serial, other bytes: not the certificate this appliance issued (a certificate
        // made elsewhere can carry any serial number).
        if record.sha256_fingerprint != self.sha256 {
            return Err(IdentityError::NotOurs);
        }
        if now < record.not_before || now > record.not_after {
            return Err(IdentityError::NotOurs);
        }
        if record.is_revoked() {
            return Err(IdentityError::Revoked);
        }
        Ok(DeviceIdentity {
            sha256: self.sha256,
            serial: self.serial,
            source: self.source,
            record,
        })
    }

    /// For a certificate already known to be one this appliance issued (bound to an
    /// enrollment when the registry vouched for it): still valid now and not revoked since.
    /// Reads the small revocation list, not the registry, so the command channel makes no
    /// read at a random place in a 100,000-record tree per request.
    pub fn check_still_valid(&self, store: &dyn Store, now: OffsetDateTime) -> Result<(), IdentityError> {
        if now < self.not_before || now > self.not_after {
            return Err(IdentityError::NotOurs);
        }
        if registry::revoked_at(store, &self.serial)?.is_some() {
            return Err(IdentityError::Revoked);
        }
        Ok(())
    }
}

/// An authenticated device identity certificate: one this appliance issued, valid and not
/// revoked.
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
    #[error("the certificate was not issued by this appliance or is not valid now")]
    NotOurs,
    #[error("the certificate is not in the registry")]
    Unknown,
    #[error("the certificate has been revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Establishes device identities. No cache of certificates seen (100,000 devices would keep
/// 100,000 entries in memory): the registry or the enrollment's binding is read per request.
#[derive(Debug)]
pub struct IdentityVerifier {
    /// Checks `Mdm-Signature`s, keeping the parsed keys of the devices talking now.
    signatures: citadel_certs::cms::DetachedVerifier,
}

impl Default for IdentityVerifier {
    fn default() -> Self {
        Self {
            signatures: citadel_certs::cms::DetachedVerifier::new(SIGNERS_KEPT),
        }
    }
}

/// Parsed signer keys kept: more than the devices in one push fan-out's flight (each signs an
/// Idle and then its answers within a second or two), ~6 MB at most for RSA-2048.
const SIGNERS_KEPT: usize = 4_096;

impl IdentityVerifier {
    /// Establishes the identity behind a request from the TLS peer certificate and/or the
    /// `Mdm-Signature` header value over `body`, and the registry.
    pub fn authenticate(
        &self,
        store: &dyn Store,
        peer_certificate: Option<&[u8]>,
        signature_header: Option<&str>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<DeviceIdentity, IdentityError> {
        self.presented(peer_certificate, signature_header, body)?
            .registered(store, now)
    }

    /// The certificate behind a request, from the TLS peer certificate and/or the
    /// `Mdm-Signature` header value over `body`: its possession proven, nothing else known.
    pub fn presented(
        &self,
        peer_certificate: Option<&[u8]>,
        signature_header: Option<&str>,
        body: &[u8],
    ) -> Result<PresentedCertificate, IdentityError> {
        let signed_by = match signature_header {
            None => None,
            Some(value) => {
                let value = value.trim();
                if value.len() > MAX_SIGNATURE_HEADER {
                    return Err(IdentityError::BadSignature("too long".into()));
                }
                // Base64 with or without padding or line breaks, as clients differ (copied only
                // when it has whitespace: this runs on every request).
                let compact: Cow<'_, str> = if value.bytes().any(|b| b.is_ascii_whitespace()) {
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
                Some(signed)
            }
        };
        let (sha256, stated) = match (peer_certificate, signed_by) {
            (None, None) => return Err(IdentityError::Missing),
            (Some(tls), Some(sig)) if tls != sig.certificate_der.as_slice() => {
                return Err(IdentityError::Conflicting);
            }
            (Some(tls), _) => (
                citadel_certs::sha256(tls),
                citadel_certs::serial_and_validity(tls).map_err(|_| IdentityError::NotOurs)?,
            ),
            (None, Some(sig)) => (
                sig.certificate_sha256,
                citadel_certs::SerialAndValidity {
                    serial_hex: sig.serial_hex,
                    not_before: sig.not_before,
                    not_after: sig.not_after,
                },
            ),
        };
        Ok(PresentedCertificate {
            sha256: hex::encode(sha256),
            serial: stated.serial_hex,
            source: if peer_certificate.is_some() {
                IdentitySource::ClientCertificate
            } else {
                IdentitySource::MdmSignature
            },
            not_before: stated.not_before,
            not_after: stated.not_after,
        })
    }
}
