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
    scan_all(store, Tree::RevokedCertificates, b"")?
        .iter()
        .map(|(k, v)| {
            let at: Revocation = decode(Tree::RevokedCertificates, k, v)?;
            Ok((String::from_utf8_lossy(k).into_owned(), at.at))
        })
        .collect()
}

/// When the certificate with this serial was revoked, if it was: from the list of revoked
/// certificates, which revocation writes in the same transaction as the registry record.
pub fn revoked_at(store: &dyn Store, serial: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    Ok(store
        .get_record::<Revocation>(Tree::RevokedCertificates, serial.as_bytes())?
        .map(|r| r.at))
}

/// An entry of [`Tree::RevokedCertificates`].
#[derive(Debug, Serialize, Deserialize)]
struct Revocation {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

/// Schema migration 1 → 2: lists the certificates revoked before the list existed.
pub fn list_revocations(store: &dyn Store) -> Result<(), StoreError> {
    for record in list(store)? {
        if let CertificateStatus::Revoked { at } = record.status {
            store.put_record(
                Tree::RevokedCertificates,
                record.serial.as_bytes(),
                &Revocation { at },
            )?;
        }
    }
    Ok(())
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
                tx.put(
                    Tree::RevokedCertificates,
                    serial.as_bytes(),
                    &encode(&Revocation { at: now })?,
                )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CURRENT_SCHEMA_VERSION, MIGRATIONS, MemoryStore, migrate};

    fn record(serial: &str, status: CertificateStatus) -> CertificateRecord {
        let at = time::macros::datetime!(2026-11-28 12:00 UTC);
        CertificateRecord {
            serial: serial.into(),
            subject: "CN=device".into(),
            sha256_fingerprint: format!("fp-{serial}"),
            not_before: at,
            not_after: at + time::Duration::days(365),
            issued_at: at,
            issued_via: IssuedVia::OneTimeChallenge,
            transaction_id: serial.into(),
            status,
            assigned_user: None,
        }
    }

    /// A store written before the list of revoked certificates existed gets one on upgrade,
    /// and revocation keeps it with the registry from then on.
    #[test]
    fn the_revocation_list_is_built_on_upgrade_and_kept_by_revocation() {
        let then = time::macros::datetime!(2026-12-01 08:00 UTC);
        let store = MemoryStore::new();
        migrate(&store, MIGRATIONS, 1).unwrap();
        let put = |r: &CertificateRecord| {
            store
                .put_record(Tree::Certificates, r.serial.as_bytes(), r)
                .unwrap()
        };
        put(&record("0a", CertificateStatus::Active));
        put(&record("0b", CertificateStatus::Revoked { at: then }));
        put(&record(
            "0c",
            CertificateStatus::Superseded {
                by_serial: "0d".into(),
                at: then,
            },
        ));
        assert_eq!(revoked_at(&store, "0b").unwrap(), None, "not listed yet");

        migrate(&store, MIGRATIONS, CURRENT_SCHEMA_VERSION).unwrap();
        assert_eq!(revoked_at(&store, "0b").unwrap(), Some(then));
        assert_eq!(revoked_at(&store, "0a").unwrap(), None);
        assert_eq!(revoked_at(&store, "0c").unwrap(), None);
        assert_eq!(revoked(&store).unwrap(), [("0b".to_owned(), then)]);

        let later = then + time::Duration::hours(1);
        assert!(matches!(
            revoke(&store, "0A", later).unwrap(),
            RevokeOutcome::Revoked(_)
        ));
        assert!(matches!(
            revoke(&store, "0a", later + time::Duration::hours(1)).unwrap(),
            RevokeOutcome::AlreadyRevoked(_)
        ));
        assert_eq!(
            revoked_at(&store, "0a").unwrap(),
            Some(later),
            "the first revocation counts"
        );
        assert!(matches!(
            revoke(&store, "ff", later).unwrap(),
            RevokeOutcome::Unknown
        ));
        assert_eq!(revoked_at(&store, "ff").unwrap(), None);
        assert_eq!(
            revoked(&store).unwrap(),
            [("0a".to_owned(), later), ("0b".to_owned(), then)]
        );
    }
}
