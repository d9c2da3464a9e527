use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::CertError;

/// What an operator (and the renewal logic) needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Lower-case hex SHA-256 of the DER encoding.
    pub sha256_fingerprint: String,
    /// DNS names and IP addresses from the subjectAltName extension.
    pub subject_alt_names: Vec<String>,
    pub is_ca: bool,
}

impl CertificateInfo {
    /// True when the certificate has expired or will within `window` of `now`.
    pub fn expires_within(&self, now: OffsetDateTime, window: time::Duration) -> bool {
        self.not_after - now <= window
    }

    /// Whole days until expiry (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

/// Decodes the first certificate of a PEM bundle.
pub fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Pem {
        what: "certificate",
        reason: e.to_string(),
    })
}

/// Parses the first certificate of a PEM bundle.
pub fn inspect_pem(pem: &str) -> Result<CertificateInfo, CertError> {
    inspect_der(&pem_to_der(pem)?)
}

/// Parses a DER certificate.
pub fn inspect_der(der: &[u8]) -> Result<CertificateInfo, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
    let mut subject_alt_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => subject_alt_names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        subject_alt_names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial_hex: cert.raw_serial_as_string().replace(':', ""),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        sha256_fingerprint: hex::encode(Sha256::digest(der)),
        subject_alt_names,
        is_ca,
    })
}

/// A certificate's serial number and validity period as it states them, nothing checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialAndValidity {
    /// As [`CertificateInfo::serial_hex`].
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// [`SerialAndValidity`] of a DER certificate, without the rest of what [`inspect_der`] reads
/// (this runs on every mTLS request).
pub fn serial_and_validity(der: &[u8]) -> Result<SerialAndValidity, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
    Ok(SerialAndValidity {
        serial_hex: hex::encode(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}
