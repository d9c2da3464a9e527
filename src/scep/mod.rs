//! The SCEP service (RFC 8894): devices obtain their identity certificates from Citadel's CA.
//!
//! The codecs and the CA's work live in `citadel-certs`; this module decides who gets a
//! certificate (challenge or renewal), keeps the registry and the CRL, and answers every
//! failure it can identify with a signed CertRep FAILURE rather than an HTTP error.

pub mod challenges;
pub mod registry;

use crate::audit::{Actor, AuditEvent, Outcome};
use std::sync::{Arc, Mutex};

use citadel_certs::scep::{self, DecodeError, DecodeOptions, FailInfo, MessageType, ReplyTo, ScepRequest};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::config::{ScepSection, Secret};
use crate::pki::Pki;
use crate::store::{Store, StoreError, StoreExt, Tree};
use challenges::{ChallengeCheckError, ChallengeRejection};
use registry::{CertificateRecord, CertificateStatus, IssuedVia, RevokeOutcome};

const CRL_KEY: &[u8] = b"crl";
/// A CRL is valid for a week and re-signed when less than a day of that remains.
const CRL_VALIDITY: time::Duration = time::Duration::days(7);
const CRL_REFRESH_MARGIN: time::Duration = time::Duration::days(1);

#[derive(Debug, thiserror::Error)]
pub enum ScepError {
    /// Not a SCEP message: nothing can be signed back, so the client gets HTTP 400.
    #[error("malformed SCEP message: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("CA failure: {0}")]
    Ca(String),
}

/// What the HTTP layer needs from the configuration.
#[derive(Debug, Clone)]
pub struct ScepOptions {
    pub allow_legacy_des: bool,
    pub certificate_validity: time::Duration,
    pub challenge_ttl: time::Duration,
    pub static_challenge: Option<Secret>,
    pub max_message_bytes: usize,
}

impl From<&ScepSection> for ScepOptions {
    fn from(s: &ScepSection) -> Self {
        Self {
            allow_legacy_des: s.allow_legacy_des,
            certificate_validity: time::Duration::days(i64::from(s.certificate_validity_days)),
            challenge_ttl: time::Duration::seconds(i64::try_from(s.challenge_ttl_secs).unwrap_or(i64::MAX)),
            static_challenge: s.static_challenge.clone(),
            max_message_bytes: s.max_message_bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedCrl {
    number: u64,
    #[serde(with = "time::serde::rfc3339")]
    next_update: OffsetDateTime,
    der_hex: String,
}

pub struct ScepService {
    store: Arc<dyn Store>,
    pki: Arc<Pki>,
    options: ScepOptions,
    // Serialises CRL regeneration so two revocations cannot publish the same number.
    crl_lock: Mutex<()>,
    /// Where issuances are recorded (absent in the CLI's local mode, which issues nothing).
    audit: Option<Arc<crate::audit::AuditLog>>,
}

/// The outcome of the registry transaction that pays for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settlement {
    Issued,
    Refused(FailInfo, &'static str),
}

impl ScepService {
    pub fn new(store: Arc<dyn Store>, pki: Arc<Pki>, options: ScepOptions) -> Self {
        Self {
            store,
            pki,
            options,
            crl_lock: Mutex::new(()),
            audit: None,
        }
    }

    /// Records every certificate issued in `log`.
    pub fn with_audit(mut self, log: Arc<crate::audit::AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// The store this service records into (the CLI's local mode reuses it).
    pub fn pki(&self) -> &Arc<Pki> {
        &self.pki
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn options(&self) -> &ScepOptions {
        &self.options
    }

    pub fn ca_caps(&self) -> &'static str {
        scep::CA_CAPS
    }

    /// GetCACert: the RA that devices encrypt to (RSA, as Apple's SCEP payload requires) and
    /// the root that issued it, as a degenerate PKCS#7. Both are RSA, so clients that encrypt
    /// to every certificate they are given (Go's scepclient does) work as well. The ECDSA
    /// issuing CA reaches devices in the CertRep's chain.
    pub fn ca_certificates(&self) -> Result<(&'static str, Vec<u8>), ScepError> {
        let ra = self.pki.registration_authority().certificate_der().to_vec();
        let root = self.pki.ca_certificate_der();
        let p7 = scep::degenerate_pkcs7(&[&ra, &root]).map_err(|e| ScepError::Ca(e.to_string()))?;
        Ok((scep::CA_RA_CERT_CONTENT_TYPE, p7))
    }

    /// Handles one PKIOperation message. CPU-heavy: call it from a blocking pool.
    pub fn pki_operation(&self, message: &[u8], now: OffsetDateTime) -> Result<Vec<u8>, ScepError> {
        let ra = self.pki.registration_authority();
        let options = DecodeOptions {
            allow_des: self.options.allow_legacy_des,
            now,
        };
        let request = match scep::decode_request(message, &ra, self.pki.issuing_ca(), &options) {
            Ok(r) => r,
            Err(DecodeError::Malformed(reason)) => return Err(ScepError::Malformed(reason)),
            Err(DecodeError::Rejected {
                fail_info,
                reason,
                reply_to,
            }) => {
                tracing::warn!(transaction_id = %reply_to.transaction_id, ?fail_info, %reason, "SCEP request rejected");
                return self.failure(&reply_to, fail_info);
            }
        };
        if request.cipher == scep::ContentCipher::DesCbc {
            tracing::warn!(
                transaction_id = %request.transaction_id,
                "SCEP request used single-DES (accepted because scep.allow_legacy_des is on)"
            );
        }
        match request.message_type {
            MessageType::PkcsReq => self.enrol(&request, now),
            MessageType::RenewalReq => self.renew(&request, now),
            other => {
                tracing::warn!(transaction_id = %request.transaction_id, ?other, "unsupported SCEP message type");
                self.failure(&request.reply_to(), FailInfo::BadRequest)
            }
        }
    }

    fn failure(&self, to: &ReplyTo, fail: FailInfo) -> Result<Vec<u8>, ScepError> {
        scep::cert_rep_failure(&self.pki.registration_authority(), to, fail)
            .map_err(|e| ScepError::Ca(e.to_string()))
    }

    fn refuse(&self, request: &ScepRequest, fail: FailInfo, why: &str) -> Result<Vec<u8>, ScepError> {
        tracing::warn!(
            transaction_id = %request.transaction_id, subject = %request.csr.subject, ?fail, reason = why,
            "SCEP enrollment refused"
        );
        self.failure(&request.reply_to(), fail)
    }

    fn static_challenge_matches(&self, given: &str) -> bool {
        self.options
            .static_challenge
            .as_ref()
            .is_some_and(|s| bool::from(s.expose().as_bytes().ct_eq(given.as_bytes())))
    }

    fn enrol(&self, request: &ScepRequest, now: OffsetDateTime) -> Result<Vec<u8>, ScepError> {
        let Some(challenge) = request.csr.challenge_password.as_deref() else {
            return self.refuse(request, FailInfo::BadRequest, "no challenge password");
        };
        let mut assigned_user = None;
        let one_time = if self.static_challenge_matches(challenge) {
            None
        } else {
            match challenges::check(self.store.as_ref(), challenge, now) {
                Ok(record) => {
                    assigned_user = record.assign_to;
                    Some(challenge)
                }
                Err(ChallengeCheckError::Rejected(ChallengeRejection::Unknown)) => {
                    return self.refuse(request, FailInfo::BadRequest, "unknown or already used challenge");
                }
                Err(ChallengeCheckError::Rejected(ChallengeRejection::Expired)) => {
                    return self.refuse(request, FailInfo::BadRequest, "expired challenge");
                }
                Err(ChallengeCheckError::Store(e)) => return Err(e.into()),
            }
        };
        let via = if one_time.is_some() {
            IssuedVia::OneTimeChallenge
        } else {
            IssuedVia::StaticChallenge
        };
        self.issue_and_record(request, now, via, assigned_user, |tx| match one_time {
            None => Ok(Settlement::Issued),
            Some(c) => Ok(match challenges::redeem(tx, c, now)? {
                Ok(()) => Settlement::Issued,
                Err(_) => Settlement::Refused(FailInfo::BadRequest, "challenge used by a concurrent request"),
            }),
        })
    }

    fn renew(&self, request: &ScepRequest, now: OffsetDateTime) -> Result<Vec<u8>, ScepError> {
        let ca = self.pki.issuing_ca();
        if !ca.issued_and_valid(&request.signer_certificate, now) {
            return self.refuse(
                request,
                FailInfo::BadCertId,
                "renewal not signed by a valid certificate of this CA",
            );
        }
        let previous = match citadel_certs::inspect_der(&request.signer_certificate) {
            Ok(info) => info.serial_hex,
            Err(_) => return self.refuse(request, FailInfo::BadCertId, "unreadable signer certificate"),
        };
        self.issue_and_record(
            request,
            now,
            IssuedVia::Renewal {
                previous_serial: previous.clone(),
            },
            None,
            |tx| {
                // Checked inside the transaction, so a revocation racing the renewal wins.
                Ok(match registry::get_in(tx, &previous)?.map(|old| old.status) {
                    None => Settlement::Refused(FailInfo::BadCertId, "certificate not in the registry"),
                    Some(CertificateStatus::Active) => Settlement::Issued,
                    Some(CertificateStatus::Revoked { .. }) => {
                        Settlement::Refused(FailInfo::BadCertId, "certificate is revoked")
                    }
                    Some(CertificateStatus::Superseded { .. }) => {
                        Settlement::Refused(FailInfo::BadCertId, "certificate was already renewed")
                    }
                })
            },
        )
    }

    /// Issues the certificate, then in one transaction runs `settle` (redeem the challenge, or
    /// check the renewed certificate still counts), retires a renewed certificate and records
    /// the new one. A certificate that
    /// is not recorded is never sent.
    fn issue_and_record(
        &self,
        request: &ScepRequest,
        now: OffsetDateTime,
        via: IssuedVia,
        assigned_user: Option<String>,
        settle: impl Fn(&dyn crate::store::Txn) -> Result<Settlement, StoreError>,
    ) -> Result<Vec<u8>, ScepError> {
        let ca = self.pki.issuing_ca();
        let issued = match ca.issue_device_certificate(&request.csr, self.options.certificate_validity, now) {
            Ok(c) => c,
            Err(e) => return self.refuse(request, FailInfo::BadRequest, &e.to_string()),
        };
        let record = CertificateRecord {
            serial: issued.info.serial_hex.clone(),
            subject: issued.info.subject.clone(),
            sha256_fingerprint: issued.info.sha256_fingerprint.clone(),
            not_before: issued.info.not_before,
            not_after: issued.info.not_after,
            issued_at: now,
            issued_via: via,
            transaction_id: request.transaction_id.clone(),
            status: CertificateStatus::Active,
            assigned_user,
        };
        let settlement = Mutex::new(Settlement::Refused(FailInfo::BadRequest, "not settled"));
        self.store.transaction(&|tx| {
            let outcome = settle(tx)?;
            if outcome == Settlement::Issued {
                if let IssuedVia::Renewal { previous_serial } = &record.issued_via
                    && let Some(mut old) = registry::get_in(tx, previous_serial)?
                {
                    old.status = CertificateStatus::Superseded {
                        by_serial: record.serial.clone(),
                        at: now,
                    };
                    registry::put_in(tx, &old)?;
                }
                registry::put_in(tx, &record)?;
            }
            if let Ok(mut slot) = settlement.lock() {
                *slot = outcome;
            }
            Ok(())
        })?;
        match settlement
            .into_inner()
            .unwrap_or(Settlement::Refused(FailInfo::BadRequest, "poisoned"))
        {
            Settlement::Refused(fail, why) => self.refuse(request, fail, why),
            Settlement::Issued => {
                tracing::info!(
                    transaction_id = %request.transaction_id, serial = %record.serial, subject = %record.subject,
                    via = ?record.issued_via, "SCEP certificate issued"
                );
                if let Some(log) = &self.audit {
                    let event = AuditEvent::new(Actor::System, "certificate.issue", Outcome::Success)
                        .target(record.serial.as_str())
                        .reason(format!(
                            "{} via {:?}, SCEP transaction {}",
                            record.subject, record.issued_via, request.transaction_id
                        ));
                    // Issued and recorded in the registry already: a lost audit record is logged.
                    if let Err(e) = log.append(event, now) {
                        tracing::error!(serial = %record.serial, error = %e, "audit record not written");
                    }
                }
                let issuing_der = ca.certificate_der().to_vec();
                let root_der = self.pki.ca_certificate_der();
                let ra = self.pki.registration_authority();
                match scep::cert_rep_success(
                    &ra,
                    &request.reply_to(),
                    &[&issued.der, &issuing_der, &root_der],
                ) {
                    Ok(reply) => Ok(reply),
                    // The request decoded, so this is the requester's certificate being unusable
                    // as a recipient: answer FAILURE rather than a 500. The certificate stays in
                    // the registry (it was issued) but never reached anyone.
                    Err(e) => {
                        tracing::error!(
                            transaction_id = %request.transaction_id, serial = %record.serial, error = %e,
                            "could not envelope the issued certificate to the requester"
                        );
                        self.failure(&request.reply_to(), FailInfo::BadRequest)
                    }
                }
            }
        }
    }

    pub fn create_challenge(
        &self,
        ttl: Option<time::Duration>,
        now: OffsetDateTime,
        created_by: &str,
    ) -> Result<challenges::NewChallenge, StoreError> {
        self.create_challenge_for(ttl, now, created_by, None)
    }

    /// A challenge whose certificate marks the device as `assign_to`'s (a portal user's
    /// personal enrollment).
    pub fn create_challenge_for(
        &self,
        ttl: Option<time::Duration>,
        now: OffsetDateTime,
        created_by: &str,
        assign_to: Option<&str>,
    ) -> Result<challenges::NewChallenge, StoreError> {
        let created = challenges::create(
            self.store.as_ref(),
            ttl.unwrap_or(self.options.challenge_ttl),
            now,
            created_by,
            assign_to,
        )?;
        tracing::info!(%created_by, expires_at = %created.expires_at, "SCEP challenge created");
        Ok(created)
    }

    pub fn certificates(&self) -> Result<Vec<CertificateRecord>, StoreError> {
        registry::list(self.store.as_ref())
    }

    /// Revokes a certificate and re-issues the CRL.
    pub fn revoke(&self, serial: &str, now: OffsetDateTime) -> Result<RevokeOutcome, ScepError> {
        let outcome = registry::revoke(self.store.as_ref(), serial, now)?;
        if let RevokeOutcome::Revoked(r) = &outcome {
            tracing::info!(serial = %r.serial, subject = %r.subject, "certificate revoked");
            self.publish_crl(now)?;
        }
        Ok(outcome)
    }

    /// The current CRL (DER), re-signed when missing or close to its next update.
    pub fn crl(&self, now: OffsetDateTime) -> Result<Vec<u8>, ScepError> {
        if let Some(cached) = self.store.get_record::<CachedCrl>(Tree::Meta, CRL_KEY)?
            && cached.next_update - CRL_REFRESH_MARGIN > now
            && let Ok(der) = hex::decode(&cached.der_hex)
        {
            return Ok(der);
        }
        self.publish_crl(now)
    }

    fn publish_crl(&self, now: OffsetDateTime) -> Result<Vec<u8>, ScepError> {
        let _guard = self
            .crl_lock
            .lock()
            .map_err(|_| ScepError::Ca("CRL lock poisoned".into()))?;
        let number = self
            .store
            .get_record::<CachedCrl>(Tree::Meta, CRL_KEY)?
            .map_or(1, |c| c.number + 1);
        let revoked = registry::revoked(self.store.as_ref())?;
        let next_update = now + CRL_VALIDITY;
        let der = self
            .pki
            .issuing_ca()
            .crl(&revoked, number, now, next_update)
            .map_err(|e| ScepError::Ca(e.to_string()))?;
        let cached = CachedCrl {
            number,
            next_update,
            der_hex: hex::encode(&der),
        };
        self.store.put_record(Tree::Meta, CRL_KEY, &cached)?;
        Ok(der)
    }
}
