//! One-time SCEP challenge passwords.
//!
//! A challenge is shown once to whoever creates it (an enrollment profile, an administrator)
//! and stored only as its SHA-256. Redeeming it deletes it inside the same transaction that
//! records the certificate it paid for, so one challenge can never issue two certificates.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, StoreExt, Tree, Txn, decode, scan_all};

/// 160 bits, base32: long enough to be unguessable, short enough to paste.
const CHALLENGE_BYTES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Who asked for it, for the audit trail ("cli", "api").
    pub created_by: String,
    /// The portal user whose personal device this challenge enrols (from their enrollment
    /// link): carried into the certificate it pays for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewChallenge {
    pub challenge: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Why a challenge does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRejection {
    Unknown,
    Expired,
}

fn key(challenge: &str) -> Vec<u8> {
    hex::encode(Sha256::digest(challenge.as_bytes())).into_bytes()
}

pub fn create(
    store: &dyn Store,
    ttl: time::Duration,
    now: OffsetDateTime,
    created_by: &str,
    assign_to: Option<&str>,
) -> Result<NewChallenge, StoreError> {
    let bytes: [u8; CHALLENGE_BYTES] = rand::random();
    let challenge = data_encoding::BASE32_NOPAD.encode(&bytes);
    let record = ChallengeRecord {
        created_at: now,
        expires_at: now + ttl,
        created_by: created_by.to_owned(),
        assign_to: assign_to.map(str::to_owned),
    };
    store.put_record(Tree::ScepChallenges, &key(&challenge), &record)?;
    Ok(NewChallenge {
        challenge,
        expires_at: record.expires_at,
    })
}

/// A read-only look, to refuse early before spending CA work on a request.
pub fn check(
    store: &dyn Store,
    challenge: &str,
    now: OffsetDateTime,
) -> Result<ChallengeRecord, ChallengeCheckError> {
    match store.get_record::<ChallengeRecord>(Tree::ScepChallenges, &key(challenge))? {
        None => Err(ChallengeRejection::Unknown.into()),
        Some(r) if r.expires_at <= now => Err(ChallengeRejection::Expired.into()),
        Some(r) => Ok(r),
    }
}

/// Redeems the challenge inside a transaction: it must exist and be unexpired; it is deleted.
pub fn redeem(
    txn: &dyn Txn,
    challenge: &str,
    now: OffsetDateTime,
) -> Result<Result<(), ChallengeRejection>, StoreError> {
    let k = key(challenge);
    let Some(bytes) = txn.get(Tree::ScepChallenges, &k)? else {
        return Ok(Err(ChallengeRejection::Unknown));
    };
    let record: ChallengeRecord = decode(Tree::ScepChallenges, &k, &bytes)?;
    txn.delete(Tree::ScepChallenges, &k)?;
    if record.expires_at <= now {
        return Ok(Err(ChallengeRejection::Expired));
    }
    Ok(Ok(()))
}

/// Deletes expired challenges; returns how many.
pub fn purge_expired(store: &dyn Store, now: OffsetDateTime) -> Result<usize, StoreError> {
    let mut removed = 0;
    for (k, v) in scan_all(store, Tree::ScepChallenges, b"")? {
        let record: ChallengeRecord = decode(Tree::ScepChallenges, &k, &v)?;
        if record.expires_at <= now && store.delete(Tree::ScepChallenges, &k)? {
            removed += 1;
        }
    }
    Ok(removed)
}

#[derive(Debug, thiserror::Error)]
pub enum ChallengeCheckError {
    #[error("challenge rejected: {0:?}")]
    Rejected(ChallengeRejection),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ChallengeRejection> for ChallengeCheckError {
    fn from(r: ChallengeRejection) -> Self {
        Self::Rejected(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use std::sync::Arc;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    #[test]
    fn a_challenge_is_redeemed_once() {
        let store = MemoryStore::new();
        let c = create(&store, time::Duration::hours(1), NOW, "test", None).unwrap();
        assert_eq!(c.challenge.len(), 32);
        check(&store, &c.challenge, NOW).unwrap();
        let redeem_once = || {
            let outcome = std::cell::Cell::new(None);
            store
                .transaction(&|tx| {
                    outcome.set(Some(redeem(tx, &c.challenge, NOW)?));
                    Ok(())
                })
                .unwrap();
            outcome.get().unwrap()
        };
        assert_eq!(redeem_once(), Ok(()));
        assert_eq!(redeem_once(), Err(ChallengeRejection::Unknown));
        assert!(matches!(
            check(&store, &c.challenge, NOW),
            Err(ChallengeCheckError::Rejected(ChallengeRejection::Unknown))
        ));
    }

    #[test]
    fn expired_challenges_are_refused_and_purged() {
        let store = MemoryStore::new();
        let c = create(&store, time::Duration::minutes(5), NOW, "test", None).unwrap();
        let later = NOW + time::Duration::minutes(5);
        assert!(matches!(
            check(&store, &c.challenge, later),
            Err(ChallengeCheckError::Rejected(ChallengeRejection::Expired))
        ));
        create(&store, time::Duration::hours(1), NOW, "test", None).unwrap();
        assert_eq!(purge_expired(&store, later).unwrap(), 1);
        assert_eq!(
            store
                .scan_prefix(Tree::ScepChallenges, b"", None, 10)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn concurrent_redemptions_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SledStore::open(&dir.path().join("db"), &Default::default()).unwrap());
        let c = create(store.as_ref(), time::Duration::hours(1), NOW, "test", None).unwrap();
        let winners: usize = (0..8)
            .map(|_| {
                let (store, challenge) = (Arc::clone(&store), c.challenge.clone());
                std::thread::spawn(move || {
                    let won = std::sync::atomic::AtomicBool::new(false);
                    store
                        .transaction(&|tx| {
                            won.store(
                                redeem(tx, &challenge, NOW)?.is_ok(),
                                std::sync::atomic::Ordering::SeqCst,
                            );
                            Ok(())
                        })
                        .unwrap();
                    won.load(std::sync::atomic::Ordering::SeqCst)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        assert_eq!(winners, 1);
    }
}
