//! The one-time bootstrap secret for the first administrator.
//!
//! On first start Citadel generates a random secret, keeps only its SHA-256 in the store and
//! prints the secret once. An operator can preset it (`admin.bootstrap_secret[_file]`) for
//! scripted installs. It stays valid until the first administrator is created with it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::config::Secret;
use crate::store::{Store, StoreError, StoreExt, Tree, TxResult, Txn, decode, encode};

const KEY: &[u8] = b"bootstrap";
/// 160 bits of entropy, shown as eight groups of four base32 characters.
const SECRET_BYTES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapRecord {
    pub secret_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub preset: bool,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub consumed_at: Option<OffsetDateTime>,
}

/// What happened to the bootstrap secret at start-up.
#[derive(Debug, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// A new secret was generated; it must be shown to the operator now and never again.
    Generated(String),
    /// The configured secret is in force.
    Preset,
    /// A secret already exists and has not been used yet.
    Pending,
    /// The first administrator exists; no bootstrap secret is valid any more.
    Consumed,
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn generate() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    let encoded = data_encoding::BASE32_NOPAD.encode(&bytes);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// Makes sure a bootstrap secret exists (or honours the preset one).
pub fn ensure(
    store: &dyn Store,
    preset: Option<&Secret>,
    now: OffsetDateTime,
) -> Result<BootstrapOutcome, StoreError> {
    let existing: Option<BootstrapRecord> = store.get_record(Tree::Meta, KEY)?;
    if existing.as_ref().is_some_and(|r| r.consumed_at.is_some()) {
        return Ok(BootstrapOutcome::Consumed);
    }
    match (preset, existing) {
        (Some(secret), existing) => {
            let wanted = digest(secret.expose());
            if existing.as_ref().is_none_or(|r| r.secret_sha256 != wanted) {
                let record = BootstrapRecord {
                    secret_sha256: wanted,
                    created_at: now,
                    preset: true,
                    consumed_at: None,
                };
                store.put_record(Tree::Meta, KEY, &record)?;
            }
            Ok(BootstrapOutcome::Preset)
        }
        (None, Some(_)) => Ok(BootstrapOutcome::Pending),
        (None, None) => {
            let secret = generate();
            let record = BootstrapRecord {
                secret_sha256: digest(&secret),
                created_at: now,
                preset: false,
                consumed_at: None,
            };
            store.put_record(Tree::Meta, KEY, &record)?;
            store.flush()?;
            Ok(BootstrapOutcome::Generated(secret))
        }
    }
}

/// Marks the secret used, inside the transaction that creates the first administrator; aborts
/// when it is already used (two set-ups racing).
pub fn consume(txn: &dyn Txn, now: OffsetDateTime) -> TxResult {
    let Some(bytes) = txn.get(Tree::Meta, KEY)? else {
        return Err(StoreError::Aborted("no bootstrap secret".into()));
    };
    let mut record: BootstrapRecord = decode(Tree::Meta, KEY, &bytes)?;
    if record.consumed_at.is_some() {
        return Err(StoreError::Aborted("the bootstrap secret has been used".into()));
    }
    record.consumed_at = Some(now);
    txn.put(Tree::Meta, KEY, &encode(&record)?)
}

/// True when `candidate` is the pending bootstrap secret. Whitespace and case around the
/// groups are forgiven, since people copy it from a terminal.
pub fn verify(store: &dyn Store, candidate: &str) -> Result<bool, StoreError> {
    let Some(record) = store.get_record::<BootstrapRecord>(Tree::Meta, KEY)? else {
        return Ok(false);
    };
    if record.consumed_at.is_some() {
        return Ok(false);
    }
    let given = digest(candidate.trim());
    let normalised = digest(&candidate.trim().to_ascii_uppercase());
    let stored = record.secret_sha256.as_bytes();
    Ok(bool::from(given.as_bytes().ct_eq(stored)) || bool::from(normalised.as_bytes().ct_eq(stored)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    #[test]
    fn generated_once_and_only_its_hash_is_kept() {
        let store = MemoryStore::new();
        let BootstrapOutcome::Generated(secret) = ensure(&store, None, NOW).unwrap() else {
            panic!("expected a new secret");
        };
        assert_eq!(secret.len(), 39, "{secret}");
        assert_eq!(ensure(&store, None, NOW).unwrap(), BootstrapOutcome::Pending);
        let raw = store.get(Tree::Meta, KEY).unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains(&secret));
        assert!(verify(&store, &secret).unwrap());
        assert!(verify(&store, &format!("  {}\n", secret.to_lowercase())).unwrap());
        assert!(!verify(&store, "AAAA-BBBB").unwrap());
    }

    #[test]
    fn preset_secret_wins_and_can_change_until_used() {
        let store = MemoryStore::new();
        ensure(&store, None, NOW).unwrap();
        let preset = Secret::new("a-long-enough-preset-secret".into());
        assert_eq!(
            ensure(&store, Some(&preset), NOW).unwrap(),
            BootstrapOutcome::Preset
        );
        assert!(verify(&store, "a-long-enough-preset-secret").unwrap());
        let mut record: BootstrapRecord = store.get_record(Tree::Meta, KEY).unwrap().unwrap();
        record.consumed_at = Some(NOW);
        store.put_record(Tree::Meta, KEY, &record).unwrap();
        assert_eq!(
            ensure(&store, Some(&preset), NOW).unwrap(),
            BootstrapOutcome::Consumed
        );
        assert!(!verify(&store, "a-long-enough-preset-secret").unwrap());
    }
}
