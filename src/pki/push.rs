//! The APNs push certificate on disk: `<data>/pki/push.crt` and `push.key` (0600), and the key
//! of a pending portal request, `push-request.key` (0600), kept until Apple's certificate for it
//! is imported.

use citadel_certs::SecretPem;
use citadel_certs::push::{self, PushIdentity};
use time::OffsetDateTime;

use super::{PkiError, cert_err};
use crate::datadir::{self, DataDir};

const PUSH_CERT: &str = "push.crt";
const PUSH_KEY: &str = "push.key";
const REQUEST_KEY: &str = "push-request.key";

#[derive(Debug, thiserror::Error)]
pub enum PushCertError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the new certificate is for topic {new:?} but devices are enrolled under {current:?}: \
         importing it would strand every enrolled device. Renew the existing certificate in \
         Apple's portal (Renew, not Create) so the topic stays the same"
    )]
    TopicChanged { current: String, new: String },
    #[error("the certificate expired on {0}")]
    Expired(OffsetDateTime),
    #[error(
        "no key given and no pending request key: pass the key, or create the request with `citadel push-cert csr`"
    )]
    NoKey,
}

/// The stored push identity, if one was imported.
pub fn load(data: &DataDir) -> Result<Option<PushIdentity>, PkiError> {
    let dir = data.pki_dir();
    let (cert, key) = (dir.join(PUSH_CERT), dir.join(PUSH_KEY));
    if !cert.exists() || !key.exists() {
        return Ok(None);
    }
    datadir::check_secret_file(&key)?;
    let cert_pem = datadir::read_file(&cert)?;
    let key_pem = SecretPem::new(datadir::read_file(&key)?);
    push::identity_from_pem(&cert_pem, &key_pem)
        .map(Some)
        .map_err(cert_err(format!(
            "cannot load the push certificate from {}",
            dir.display()
        )))
}

/// Creates the key and CSR for Apple's push certificates portal; the key waits in
/// `push-request.key` for the certificate. Returns the CSR (PEM and DER).
pub fn create_request(
    data: &DataDir,
    organization: &str,
    email: Option<&str>,
) -> Result<(String, Vec<u8>), PkiError> {
    let dir = data.pki_dir();
    data.ensure_subdir(&dir)?;
    let request =
        push::new_request(organization, email).map_err(cert_err("cannot create the push request"))?;
    datadir::write_file(&dir.join(REQUEST_KEY), request.key_pem.expose().as_bytes(), 0o600)?;
    Ok((request.csr_pem, request.csr_der))
}

/// What an import is given: PEM certificate (+ optional key), or PKCS#12.
pub enum ImportSource {
    Pem {
        cert_pem: String,
        key_pem: Option<SecretPem>,
    },
    Pkcs12 {
        der: Vec<u8>,
        password: String,
    },
}

/// A push certificate as sent to `PUT /api/v1/push-cert` (and by the CLI over the admin
/// socket): PEM (the key may be left out when it is the pending request's), or a base64
/// PKCS#12 file with its password.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushCertUpload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p12_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl TryFrom<PushCertUpload> for ImportSource {
    type Error = PushCertError;

    fn try_from(upload: PushCertUpload) -> Result<Self, PushCertError> {
        match (upload.cert_pem, upload.p12_base64) {
            (Some(cert_pem), None) => Ok(ImportSource::Pem {
                cert_pem,
                key_pem: upload.key_pem.map(SecretPem::new),
            }),
            (None, Some(p12)) => {
                let compact: String = p12.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let der = data_encoding::BASE64
                    .decode(compact.as_bytes())
                    .map_err(|e| PushCertError::Invalid(format!("p12_base64 is not base64: {e}")))?;
                Ok(ImportSource::Pkcs12 {
                    der,
                    password: upload.password.unwrap_or_default(),
                })
            }
            _ => Err(PushCertError::Invalid(
                "send either cert_pem (and key_pem) or p12_base64 (and password)".into(),
            )),
        }
    }
}

/// Checks and stores a push certificate. Without a key, the pending request's key is used.
/// A certificate for another topic than `pinned_topic` (what devices are enrolled under), or an
/// expired one, is refused.
pub fn import(
    data: &DataDir,
    source: ImportSource,
    pinned_topic: Option<&str>,
    now: OffsetDateTime,
) -> Result<PushIdentity, PushCertError> {
    let dir = data.pki_dir();
    let mut used_request_key = false;
    let identity = match source {
        ImportSource::Pkcs12 { der, password } => {
            push::identity_from_pkcs12(&der, &password).map_err(|e| PushCertError::Invalid(e.to_string()))?
        }
        ImportSource::Pem { cert_pem, key_pem } => {
            let key_pem = match key_pem {
                Some(k) => k,
                None => {
                    let path = dir.join(REQUEST_KEY);
                    if !path.exists() {
                        return Err(PushCertError::NoKey);
                    }
                    datadir::check_secret_file(&path).map_err(PkiError::from)?;
                    used_request_key = true;
                    SecretPem::new(datadir::read_file(&path).map_err(PkiError::from)?)
                }
            };
            push::identity_from_pem(&cert_pem, &key_pem).map_err(|e| PushCertError::Invalid(e.to_string()))?
        }
    };
    if identity.info.not_after <= now {
        return Err(PushCertError::Expired(identity.info.not_after));
    }
    if let Some(current) = pinned_topic
        && current != identity.info.topic
    {
        return Err(PushCertError::TopicChanged {
            current: current.to_owned(),
            new: identity.info.topic.clone(),
        });
    }
    data.ensure_subdir(&dir).map_err(PkiError::from)?;
    // Key first: a certificate without its key is the worse half-state.
    datadir::write_file(&dir.join(PUSH_KEY), identity.key_pem.expose().as_bytes(), 0o600)
        .map_err(PkiError::from)?;
    datadir::write_file(&dir.join(PUSH_CERT), identity.cert_chain_pem.as_bytes(), 0o644)
        .map_err(PkiError::from)?;
    if used_request_key {
        let _ = std::fs::remove_file(dir.join(REQUEST_KEY));
    }
    Ok(identity)
}
