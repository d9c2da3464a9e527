//! The registry of every certificate the CA issued: what it is, how it was obtained, and
//! whether it still counts (active, superseded by a renewal, or revoked).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, StoreExt, Tree, Txn, decode, encode, scan_all};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CertificateStatus {
    Active,
    /// Replaced by a renewal; no longer usable to renew again.
    Superseded {
        by_serial: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Revoked {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IssuedVia {
    OneTimeChallenge,
    StaticChallenge,
    Renewal { previous_serial: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub serial: String,
    pub subject: String,
    pub sha256_fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    pub issued_via: IssuedVia,
    /// SCEP transaction that obtained it.
    pub transaction_id: String,
    pub status: CertificateStatus,
    /// The portal user the challenge was made for: the device enrolling with this certificate
    /// is theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_user: Option<String>,
}

impl CertificateRecord {
    pub fn is_revoked(&self) -> bool {
        matches!(self.status, CertificateStatus::Revoked { .. })
    }
}

pub fn get(store: &dyn Store, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
    store.get_record(Tree::Certificates, serial.as_bytes())
}

pub fn get_in(txn: &dyn Txn, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
    txn.get(Tree::Certificates, serial.as_bytes())?
        .map(|bytes| decode(Tree::Certificates, serial.as_bytes(), &bytes))
        .transpose()
}

pub fn put_in(txn: &dyn Txn, record: &CertificateRecord) -> Result<(), StoreError> {
    txn.put(Tree::Certificates, record.serial.as_bytes(), &encode(record)?)
}

/// Every record, in serial order.
pub fn list(store: &dyn Store) -> Result<Vec<CertificateRecord>, StoreError> {
    scan_all(store, Tree::Certificates, b"")?
        .iter()
        .map(|(k, v)| decode(Tree::Certificates, k, v))
        .collect()
}

/// Serial numbers and revocation times, for the CRL.
pub fn revoked(store: &dyn Store) -> Result<Vec<(String, OffsetDateTime)>, StoreError> {
    Ok(list(store)?
        .into_iter()
        .filter_map(|r| match r.status {
            CertificateStatus::Revoked { at } => Some((r.serial, at)),
            _ => None,
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked(CertificateRecord),
    AlreadyRevoked(CertificateRecord),
    Unknown,
}

/// Serials are compared in the canonical form the registry uses: lower-case hex, no colons.
pub fn normalise_serial(serial: &str) -> String {
    serial.trim().replace(':', "").to_ascii_lowercase()
}

pub fn revoke(store: &dyn Store, serial: &str, now: OffsetDateTime) -> Result<RevokeOutcome, StoreError> {
    let serial = normalise_serial(serial);
    let outcome = std::sync::Mutex::new(RevokeOutcome::Unknown);
    store.transaction(&|tx| {
        let result = match get_in(tx, &serial)? {
            None => RevokeOutcome::Unknown,
            Some(r) if r.is_revoked() => RevokeOutcome::AlreadyRevoked(r),
            Some(mut r) => {
                r.status = CertificateStatus::Revoked { at: now };
                put_in(tx, &r)?;
                RevokeOutcome::Revoked(r)
            }
        };
        if let Ok(mut slot) = outcome.lock() {
            *slot = result;
        }
        Ok(())
    })?;
    outcome
        .into_inner()
        .map_err(|_| StoreError::Engine("revocation result lock poisoned".into()))
}
