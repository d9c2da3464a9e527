//! Signed checkpoints of the audit chain.
//!
//! A checkpoint is the appliance's signed statement "at time T the chain's record N had hash
//! H": a small JSON document in a CMS SignedData (attached, signed with the appliance's TLS
//! identity, certificates included), so anyone holding the CA certificate can check it with
//! `openssl cms -verify`. Checkpoints are kept in the store, listed by the API and (with the
//! records) forwarded to syslog; a copy held elsewhere is what exposes a chain rewritten whole
//! by someone with write access to the data directory — `citadel audit verify --expect N:H`
//! checks the chain against such a copy.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{AuditLog, AuditRecord, Head, key, read_head};
use crate::store::{Store, StoreError, StoreExt, Tree, decode, scan_all};

/// The statement's format name; a new format gets a new name.
pub const FORMAT: &str = "citadel-audit-checkpoint/1";

/// What a checkpoint asserts. Serialised as JSON with these fields in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub format: String,
    pub seq: u64,
    /// Hex SHA-256 of record `seq`.
    pub hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A stored checkpoint: the statement and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Base64 DER CMS SignedData holding the statement's JSON.
    pub signed: String,
}

/// Signs a statement; implemented with the appliance's TLS identity (`certs::cms`).
pub trait CheckpointSigner: Send + Sync {
    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String>;
}

impl CheckpointSigner for citadel_certs::cms::ProfileSigner {
    fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
        citadel_certs::cms::ProfileSigner::sign(self, content).map_err(|e| e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot sign the checkpoint: {0}")]
    Signing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Key in `Tree::Meta` of the newest checkpoint's sequence number (so finding it needs no
/// scan of every checkpoint).
const LAST_KEY: &[u8] = b"audit_checkpoint_last";

fn last_seq(store: &dyn Store) -> Result<u64, StoreError> {
    Ok(store.get_record::<u64>(Tree::Meta, LAST_KEY)?.unwrap_or(0))
}

/// Checkpoints after sequence number `after`, oldest first (at most a page).
pub fn list_after(store: &dyn Store, after: u64) -> Result<Vec<Checkpoint>, StoreError> {
    store
        .scan_prefix(Tree::AuditCheckpoints, b"", Some(&key(after)), 100)?
        .iter()
        .map(|(k, v)| decode(Tree::AuditCheckpoints, k, v))
        .collect()
}

impl AuditLog {
    /// Signs the chain's current head, unless the newest checkpoint already covers it (or the
    /// log is empty). Returns the new checkpoint.
    pub fn checkpoint(
        &self,
        signer: &dyn CheckpointSigner,
        now: OffsetDateTime,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        // Holding the append lock keeps the head still while it is signed and stored.
        let head = self
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Head { seq, hash } = head.clone();
        if seq == 0 || last_seq(self.store.as_ref())? >= seq {
            return Ok(None);
        }
        let statement = Statement {
            format: FORMAT.to_owned(),
            seq,
            hash: hash.clone(),
            at: now,
        };
        let content = serde_json::to_vec(&statement).map_err(|e| CheckpointError::Signing(e.to_string()))?;
        let signed = signer.sign(&content).map_err(CheckpointError::Signing)?;
        let checkpoint = Checkpoint {
            seq,
            hash,
            at: now,
            signed: data_encoding::BASE64.encode(&signed),
        };
        let mut batch = crate::store::WriteBatch::default();
        batch.put(
            Tree::AuditCheckpoints,
            key(seq),
            crate::store::encode(&checkpoint)?,
        );
        batch.put(Tree::Meta, LAST_KEY, crate::store::encode(&seq)?);
        self.store.apply(batch)?;
        drop(head);
        tracing::info!(target: "citadel::audit", seq, hash = %checkpoint.hash, "audit checkpoint signed");
        Ok(Some(checkpoint))
    }
}

/// Every checkpoint, oldest first.
pub fn list(store: &dyn Store) -> Result<Vec<Checkpoint>, StoreError> {
    scan_all(store, Tree::AuditCheckpoints, b"")?
        .iter()
        .map(|(k, v)| decode(Tree::AuditCheckpoints, k, v))
        .collect()
}

/// Why a checkpoint does not hold.
pub(super) fn check(store: &dyn Store, checkpoint: &Checkpoint) -> Result<Option<String>, StoreError> {
    let Ok(der) = data_encoding::BASE64.decode(checkpoint.signed.as_bytes()) else {
        return Ok(Some("its signature is not base64".into()));
    };
    let content = match citadel_certs::cms::verify_attached(&der) {
        Ok((content, _)) => content,
        Err(e) => return Ok(Some(format!("its signature does not verify: {e}"))),
    };
    let Ok(statement) = serde_json::from_slice::<Statement>(&content) else {
        return Ok(Some("its signed statement is unreadable".into()));
    };
    if statement.seq != checkpoint.seq || statement.hash != checkpoint.hash || statement.format != FORMAT {
        return Ok(Some("its signed statement differs from the stored one".into()));
    }
    match store.get_record::<AuditRecord>(Tree::Audit, &key(checkpoint.seq))? {
        Some(record) if record.hash == checkpoint.hash => Ok(None),
        Some(_) => Ok(Some(format!(
            "record {} no longer has the hash signed at {}: the chain was rewritten",
            checkpoint.seq, checkpoint.at
        ))),
        None => Ok(Some(format!("record {} is gone", checkpoint.seq))),
    }
}

/// The chain's current head (sequence, hash), for exports and operators to keep elsewhere.
pub fn head(store: &dyn Store) -> Result<Option<(u64, String)>, StoreError> {
    Ok(read_head(store)?.map(|h| (h.seq, h.hash)))
}
