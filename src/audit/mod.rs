//! The audit log: one append-only, hash-chained record per administrative change, action,
//! login or security event.
//!
//! Each record carries the SHA-256 of the record before it, and its own hash covers its
//! sequence number, its content and that previous hash; the chain's head (last sequence and
//! hash) is written in the same store batch as the record. [`verify`] walks the chain and names
//! the first record that was edited, removed or reordered, and a head that no longer matches
//! the last record (the tail cut off). Nothing in the product deletes audit records.
//!
//! Appends are serialised by one lock per [`AuditLog`]; the appliance holds exactly one.

pub mod checkpoint;
pub mod syslog;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, StoreExt, Tree, WriteBatch, decode, encode};

/// Key of the chain's head in `Tree::Meta`.
const HEAD_KEY: &[u8] = b"audit_head";
/// The `prev_hash` of the first record.
const GENESIS: [u8; 32] = [0; 32];
/// Records read per page while verifying or listing.
const PAGE: usize = 1_000;

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// An administrator account (by user name).
    Administrator(String),
    /// An admin API token (by token ID).
    ApiToken(String),
    /// The one-time bootstrap secret, before administrators exist.
    Bootstrap,
    /// Someone at the appliance's command line (owner of the data directory).
    Cli,
    /// A device (by enrollment ID).
    Device(String),
    /// Someone not (yet) authenticated: a failed sign-in. What they typed is the target.
    Anonymous,
    /// An end user in the self-service portal (by user name).
    User(String),
    /// The appliance itself (schedules, start-up).
    System,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// Refused: not permitted, or failed authentication.
    Denied,
    /// Attempted and failed.
    Failure,
}

/// What happened, as the caller describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub actor: Actor,
    /// Dotted, stable name: `device.action.lock`, `api_token.create`, `login`, ….
    pub action: String,
    /// What it was done to (an enrollment ID, a token ID, a certificate serial…).
    pub target: Option<String>,
    /// Where it came from (the client's address), when there is one.
    pub source: Option<String>,
    pub outcome: Outcome,
    /// Why: the reason an administrator gave, or why it was refused.
    pub reason: Option<String>,
}

impl AuditEvent {
    pub fn new(actor: Actor, action: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            actor,
            action: action.into(),
            target: None,
            source: None,
            outcome,
            reason: None,
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Hashing format: 1 = RFC 8785 canonical JSON of the record without `hash` (see
    /// [`record_hash`]); absent (0) in records written before formats existed.
    #[serde(default, skip_serializing_if = "is_legacy")]
    pub v: u32,
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hex SHA-256 of the previous record (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over this record's other fields.
    pub hash: String,
}

/// The format new records are written in.
pub const RECORD_FORMAT: u32 = 1;

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_legacy(v: &u32) -> bool {
    *v == 0
}

/// The part of a format-0 record its hash covers (records from before formats existed).
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    event: &'a AuditEvent,
    prev_hash: &'a str,
}

fn legacy_digest(
    seq: u64,
    at: OffsetDateTime,
    event: &AuditEvent,
    prev_hash: &str,
) -> Result<String, StoreError> {
    let bytes = encode(&Hashed {
        seq,
        at,
        event,
        prev_hash,
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// RFC 8785 (JSON Canonicalization Scheme) for the values a record holds: object keys sorted,
/// no whitespace, strings escaped as JSON.stringify does (serde_json's escaping), integers.
fn canonical_json(value: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let enc = |e: serde_json::Error| StoreError::Encode(e.to_string());
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // Keys are ASCII here, where UTF-16 order (what RFC 8785 sorts by) is byte order.
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).map_err(enc)?;
                out.push(b':');
                if let Some(v) = map.get(k) {
                    canonical_json(v, out)?;
                }
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(v, out)?;
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other).map_err(enc)?,
    }
    Ok(())
}

/// The hash a record must carry. Format 1: hex SHA-256 of the RFC 8785 canonical JSON of the
/// record as exported, without its `hash` field — what anyone can recompute from an export
/// line (`json.dumps(record_without_hash, sort_keys=True, separators=(",", ":"),
/// ensure_ascii=False)` in Python).
pub fn record_hash(record: &AuditRecord) -> Result<String, StoreError> {
    if record.v == 0 {
        return legacy_digest(record.seq, record.at, &record.event, &record.prev_hash);
    }
    let mut value = serde_json::to_value(record).map_err(|e| StoreError::Encode(e.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        map.remove("hash");
    }
    let mut bytes = Vec::with_capacity(512);
    canonical_json(&value, &mut bytes)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    seq: u64,
    hash: String,
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn read_head(store: &dyn Store) -> Result<Option<Head>, StoreError> {
    store.get_record(Tree::Meta, HEAD_KEY)
}

/// The appliance's audit log.
pub struct AuditLog {
    store: Arc<dyn Store>,
    /// Woken after each append (the syslog forwarder waits on it).
    pub(crate) appended: tokio::sync::Notify,
    /// The chain's head as last written; the lock serialises appends.
    head: Mutex<Head>,
}

impl AuditLog {
    /// Opens the log, refusing a store whose head does not reach its last record: appending
    /// from a stale head would overwrite records (say, after a partial restore).
    pub fn open(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let head = read_head(store.as_ref())?.unwrap_or(Head {
            seq: 0,
            hash: hex::encode(GENESIS),
        });
        if let Some((k, _)) = store
            .scan_prefix(Tree::Audit, b"", Some(&key(head.seq)), 1)?
            .first()
        {
            return Err(StoreError::Corrupt {
                tree: Tree::Audit.name(),
                key: hex::encode(k),
                reason: format!(
                    "the audit log has records after its head (record {}); run `citadel audit verify`",
                    head.seq
                ),
            });
        }
        Ok(Self {
            store,
            appended: tokio::sync::Notify::new(),
            head: Mutex::new(head),
        })
    }

    /// Appends `event` at `at`; returns the record written. The event is also logged, so an
    /// operator tailing the log sees what the audit trail records.
    pub fn append(&self, event: AuditEvent, at: OffsetDateTime) -> Result<AuditRecord, StoreError> {
        // A panic elsewhere while holding the lock cannot have left the head ahead of the store
        // (it is updated only after a successful write), so a poisoned lock is safe to reuse.
        let mut head = self
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = head.seq + 1;
        let mut record = AuditRecord {
            v: RECORD_FORMAT,
            seq,
            at,
            event,
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        record.hash = record_hash(&record)?;
        let next = Head {
            seq,
            hash: record.hash.clone(),
        };
        let mut batch = WriteBatch::default();
        batch.put(Tree::Audit, key(seq), encode(&record)?);
        batch.put(Tree::Meta, HEAD_KEY, encode(&next)?);
        self.store.apply(batch)?;
        *head = next;
        drop(head);
        self.appended.notify_one();
        tracing::info!(
            target: "citadel::audit",
            seq,
            actor = ?record.event.actor,
            action = %record.event.action,
            target_id = record.event.target.as_deref().unwrap_or(""),
            outcome = ?record.event.outcome,
            "audit"
        );
        Ok(record)
    }

    /// Records after sequence number `after` (oldest first) that `filter` keeps, at most `limit`.
    pub fn list(
        &self,
        filter: &AuditFilter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        let mut cursor = key(after).to_vec();
        loop {
            let page = self.store.scan_prefix(Tree::Audit, b"", Some(&cursor), PAGE)?;
            let full = page.len() == PAGE;
            for (k, v) in &page {
                let record: AuditRecord = decode(Tree::Audit, k, v)?;
                if filter.keeps(&record) {
                    out.push(record);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            match page.last() {
                Some((k, _)) if full => cursor = k.clone(),
                _ => return Ok(out),
            }
        }
    }
}

impl AuditLog {
    /// Records before sequence number `before` (all when `None`), newest first, that `filter`
    /// keeps, at most `limit`: what a viewer shows first.
    pub fn list_newest(
        &self,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let head = read_head(self.store.as_ref())?.map_or(0, |h| h.seq);
        // Records run 1..=head; read them back in windows of PAGE.
        let mut end = before.map_or(head, |b| b.saturating_sub(1).min(head));
        let mut out = Vec::new();
        while end > 0 {
            let start = end.saturating_sub(PAGE as u64);
            let page = self
                .store
                .scan_prefix(Tree::Audit, b"", Some(&key(start)), PAGE)?;
            for (k, v) in page.iter().rev() {
                let record: AuditRecord = decode(Tree::Audit, k, v)?;
                if record.seq > end {
                    continue;
                }
                if filter.keeps(&record) {
                    out.push(record);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            end = start;
        }
        Ok(out)
    }
}

/// Which records [`AuditLog::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Action name, or a prefix ending in `.` (`device.action.`).
    pub action: Option<String>,
    pub target: Option<String>,
    /// An actor's ID (user name, token ID, enrollment ID), or `cli`, `bootstrap`, `system`.
    pub actor: Option<String>,
    pub outcome: Option<Outcome>,
    pub since: Option<OffsetDateTime>,
    /// Exclusive.
    pub until: Option<OffsetDateTime>,
}

impl AuditFilter {
    fn keeps(&self, r: &AuditRecord) -> bool {
        let e = &r.event;
        let actor_id = match &e.actor {
            Actor::Administrator(id) | Actor::ApiToken(id) | Actor::Device(id) | Actor::User(id) => {
                id.as_str()
            }
            // Actors without an ID are asked for by their kind.
            Actor::Bootstrap => "bootstrap",
            Actor::Anonymous => "anonymous",
            Actor::Cli => "cli",
            Actor::System => "system",
        };
        self.action.as_deref().is_none_or(|a| {
            if a.ends_with('.') {
                e.action.starts_with(a)
            } else {
                e.action == a
            }
        }) && self
            .target
            .as_deref()
            .is_none_or(|t| e.target.as_deref() == Some(t))
            && self.actor.as_deref().is_none_or(|a| actor_id == a)
            && self.outcome.is_none_or(|o| e.outcome == o)
            && self.since.is_none_or(|s| r.at >= s)
            && self.until.is_none_or(|u| r.at < u)
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Records that verified, in order, before the first problem.
    pub verified: u64,
    /// The first problem, if any.
    pub problem: Option<ChainProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChainProblem {
    #[error("record {seq} is missing (the chain jumps from {previous} to {seq_found})")]
    Missing { seq: u64, previous: u64, seq_found: u64 },
    #[error("record {seq} was altered: its content does not give its hash")]
    Altered { seq: u64 },
    #[error("record {seq} does not follow record {previous}: its previous hash differs")]
    Unlinked { seq: u64, previous: u64 },
    #[error("record {seq} cannot be read: {reason}")]
    Unreadable { seq: u64, reason: String },
    #[error("the chain ends at record {last} but its head says {head}: records were removed from the end")]
    Truncated { last: u64, head: u64 },
    #[error("the chain's head does not match its last record {last}")]
    HeadMismatch { last: u64 },
    #[error("the checkpoint signed for record {seq} does not hold: {reason}")]
    Checkpoint { seq: u64, reason: String },
    #[error("record {seq} is not the one expected: {reason}")]
    Unexpected { seq: u64, reason: String },
}

/// [`verify`], then every signed checkpoint, then the records whose hashes were kept elsewhere
/// (`expected`: sequence number and hex hash, e.g. from an exported checkpoint).
pub fn verify_all(store: &dyn Store, expected: &[(u64, String)]) -> Result<Verification, StoreError> {
    let chain = verify(store)?;
    if chain.problem.is_some() {
        return Ok(chain);
    }
    let fail = |problem| {
        Ok(Verification {
            verified: chain.verified,
            problem: Some(problem),
        })
    };
    for c in checkpoint::list(store)? {
        // A checkpoint past the head read at the start was signed during the walk: its
        // records are left for the next check, like records appended meanwhile.
        if c.seq > chain.verified {
            continue;
        }
        if let Some(reason) = checkpoint::check(store, &c)? {
            return fail(ChainProblem::Checkpoint { seq: c.seq, reason });
        }
    }
    for (seq, hash) in expected {
        let reason = match store.get_record::<AuditRecord>(Tree::Audit, &key(*seq))? {
            Some(r) if r.hash.eq_ignore_ascii_case(hash) => continue,
            Some(_) => "its hash differs from the one kept (the chain was rewritten)".to_owned(),
            None => "it does not exist".to_owned(),
        };
        return fail(ChainProblem::Unexpected { seq: *seq, reason });
    }
    Ok(chain)
}

/// Walks the chain from the first record to the head. The head is read first: records appended
/// while the walk runs lie beyond it and are left for the next check (an append writes its
/// record and the new head in one batch, so every record up to the head read is there).
pub fn verify(store: &dyn Store) -> Result<Verification, StoreError> {
    let head = read_head(store)?;
    let end = head.as_ref().map_or(0, |h| h.seq);
    let mut previous: u64 = 0;
    let mut prev_hash = hex::encode(GENESIS);
    let mut cursor: Option<Vec<u8>> = None;
    let fail = |verified: u64, problem: ChainProblem| {
        Ok(Verification {
            verified,
            problem: Some(problem),
        })
    };
    'walk: loop {
        let page = store.scan_prefix(Tree::Audit, b"", cursor.as_deref(), PAGE)?;
        let full = page.len() == PAGE;
        for (k, v) in &page {
            let seq = k
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(previous + 1);
            if head.is_none() {
                // Records without a head: the head was deleted or never restored.
                return fail(0, ChainProblem::HeadMismatch { last: 0 });
            }
            if seq > end {
                break 'walk;
            }
            let record: AuditRecord = match decode(Tree::Audit, k, v) {
                Ok(r) => r,
                Err(e) => {
                    return fail(
                        previous,
                        ChainProblem::Unreadable {
                            seq,
                            reason: e.to_string(),
                        },
                    );
                }
            };
            if seq != previous + 1 || record.seq != seq {
                return fail(
                    previous,
                    ChainProblem::Missing {
                        seq: previous + 1,
                        previous,
                        seq_found: seq,
                    },
                );
            }
            if record.prev_hash != prev_hash {
                return fail(previous, ChainProblem::Unlinked { seq, previous });
            }
            if record_hash(&record)? != record.hash {
                return fail(previous, ChainProblem::Altered { seq });
            }
            previous = seq;
            prev_hash = record.hash;
        }
        match page.last() {
            Some((k, _)) if full => cursor = Some(k.clone()),
            _ => break,
        }
    }
    if previous < end {
        return fail(
            previous,
            ChainProblem::Truncated {
                last: previous,
                head: end,
            },
        );
    }
    if head.is_some_and(|h| h.hash != prev_hash) {
        return fail(previous, ChainProblem::HeadMismatch { last: previous });
    }
    Ok(Verification {
        verified: previous,
        problem: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-12-05 09:00 UTC);

    fn log_with(n: u64) -> (Arc<dyn Store>, AuditLog) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let log = AuditLog::open(store.clone()).unwrap();
        for i in 0..n {
            let event = AuditEvent::new(
                Actor::Administrator(format!("admin{}", i % 3)),
                if i % 2 == 0 {
                    "device.action.lock"
                } else {
                    "api_token.create"
                },
                Outcome::Success,
            )
            .target(format!("T{i}"))
            .reason("lost on ward 7");
            log.append(event, T0 + time::Duration::minutes(i as i64)).unwrap();
        }
        (store, log)
    }

    fn record(store: &dyn Store, seq: u64) -> AuditRecord {
        store.get_record(Tree::Audit, &key(seq)).unwrap().unwrap()
    }

    #[test]
    fn an_untouched_chain_verifies_and_survives_reopening() {
        let (store, log) = log_with(2_345);
        assert_eq!(
            verify(store.as_ref()).unwrap(),
            Verification {
                verified: 2_345,
                problem: None
            }
        );
        drop(log);
        // A reopened log continues the same chain.
        let log = AuditLog::open(store.clone()).unwrap();
        let next = log
            .append(AuditEvent::new(Actor::System, "startup", Outcome::Success), T0)
            .unwrap();
        assert_eq!(next.seq, 2_346);
        assert_eq!(next.prev_hash, record(store.as_ref(), 2_345).hash);
        assert_eq!(verify(store.as_ref()).unwrap().problem, None);
        // An empty store verifies too.
        assert_eq!(verify(&MemoryStore::new()).unwrap().verified, 0);
    }

    #[test]
    fn every_kind_of_tampering_is_named() {
        // An edited field.
        let (store, _log) = log_with(20);
        let mut r = record(store.as_ref(), 7);
        r.event.reason = Some("routine".into());
        store.put_record(Tree::Audit, &key(7), &r).unwrap();
        let v = verify(store.as_ref()).unwrap();
        assert_eq!(
            (v.verified, v.problem),
            (6, Some(ChainProblem::Altered { seq: 7 }))
        );

        // An edited record whose hash was recomputed: the next one no longer links to it.
        let mut r = record(store.as_ref(), 7);
        r.hash = record_hash(&r).unwrap();
        store.put_record(Tree::Audit, &key(7), &r).unwrap();
        assert_eq!(
            verify(store.as_ref()).unwrap().problem,
            Some(ChainProblem::Unlinked { seq: 8, previous: 7 })
        );

        // A deleted record in the middle.
        let (store, _log) = log_with(20);
        store.delete(Tree::Audit, &key(12)).unwrap();
        assert_eq!(
            verify(store.as_ref()).unwrap().problem,
            Some(ChainProblem::Missing {
                seq: 12,
                previous: 11,
                seq_found: 13
            })
        );

        // The last records cut off.
        let (store, _log) = log_with(20);
        store.delete(Tree::Audit, &key(20)).unwrap();
        store.delete(Tree::Audit, &key(19)).unwrap();
        assert_eq!(
            verify(store.as_ref()).unwrap().problem,
            Some(ChainProblem::Truncated { last: 18, head: 20 })
        );

        // Garbage in place of a record.
        let (store, _log) = log_with(5);
        store.put(Tree::Audit, &key(3), b"{not json").unwrap();
        assert!(matches!(
            verify(store.as_ref()).unwrap().problem,
            Some(ChainProblem::Unreadable { seq: 3, .. })
        ));

        // Two records swapped (keys and all).
        let (store, _log) = log_with(5);
        let (a, b) = (record(store.as_ref(), 2), record(store.as_ref(), 3));
        store.put_record(Tree::Audit, &key(2), &b).unwrap();
        store.put_record(Tree::Audit, &key(3), &a).unwrap();
        assert!(verify(store.as_ref()).unwrap().problem.is_some());
    }

    #[test]
    fn records_beyond_the_head_are_left_to_the_next_check_and_stop_a_stale_log_opening() {
        // What a concurrent append looks like between verify's head read and its walk.
        let (store, log) = log_with(10);
        let mut late = record(store.as_ref(), 10);
        late.seq = 11;
        store.put_record(Tree::Audit, &key(11), &late).unwrap();
        assert_eq!(
            verify(store.as_ref()).unwrap(),
            Verification {
                verified: 10,
                problem: None
            }
        );
        drop(log);
        // A log whose head is behind its records would overwrite them: it does not open.
        assert!(matches!(
            AuditLog::open(store.clone()),
            Err(StoreError::Corrupt { .. })
        ));
        // Records without any head: named.
        let (store, _log) = log_with(3);
        store.delete(Tree::Meta, HEAD_KEY).unwrap();
        assert_eq!(
            verify(store.as_ref()).unwrap().problem,
            Some(ChainProblem::HeadMismatch { last: 0 })
        );
        assert!(AuditLog::open(store.clone()).is_err());
    }

    #[test]
    fn filters_select_by_action_prefix_actor_target_outcome_and_time() {
        let (_store, log) = log_with(30);
        log.append(
            AuditEvent::new(
                Actor::ApiToken("tok1".into()),
                "device.action.erase",
                Outcome::Denied,
            )
            .target("T99")
            .source("10.0.0.9"),
            T0 + time::Duration::hours(2),
        )
        .unwrap();
        let all = log.list(&AuditFilter::default(), 0, usize::MAX).unwrap();
        assert_eq!(all.len(), 31);
        let actions = AuditFilter {
            action: Some("device.action.".into()),
            ..AuditFilter::default()
        };
        assert_eq!(log.list(&actions, 0, usize::MAX).unwrap().len(), 16);
        let exact = AuditFilter {
            action: Some("device.action".into()),
            ..AuditFilter::default()
        };
        assert!(log.list(&exact, 0, usize::MAX).unwrap().is_empty());
        let denied = AuditFilter {
            outcome: Some(Outcome::Denied),
            actor: Some("tok1".into()),
            ..AuditFilter::default()
        };
        let got = log.list(&denied, 0, 10).unwrap();
        assert_eq!((got.len(), got[0].event.target.as_deref()), (1, Some("T99")));
        let window = AuditFilter {
            since: Some(T0 + time::Duration::minutes(10)),
            until: Some(T0 + time::Duration::minutes(20)),
            actor: Some("admin1".into()),
            ..AuditFilter::default()
        };
        let got = log.list(&window, 0, usize::MAX).unwrap();
        assert!(
            got.iter()
                .all(|r| r.event.actor == Actor::Administrator("admin1".into()))
        );
        // Minutes 10 to 19 written by admin1 (i % 3 == 1): 10, 13, 16 and 19.
        assert_eq!(got.len(), 4);
        // Paging: after a sequence number, at most `limit`.
        let page = log.list(&AuditFilter::default(), 25, 3).unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![26, 27, 28]);
    }

    struct BrokenSigner;

    impl checkpoint::CheckpointSigner for BrokenSigner {
        fn sign(&self, content: &[u8]) -> Result<Vec<u8>, String> {
            Ok(content.to_vec())
        }
    }

    #[test]
    fn checkpoints_cover_new_heads_only_and_bad_ones_are_named() {
        let (store, log) = log_with(3);
        let made = log.checkpoint(&BrokenSigner, T0).unwrap().unwrap();
        assert_eq!(made.seq, 3);
        assert!(
            log.checkpoint(&BrokenSigner, T0).unwrap().is_none(),
            "head unchanged"
        );
        let v = verify_all(store.as_ref(), &[]).unwrap();
        assert!(
            matches!(&v.problem, Some(ChainProblem::Checkpoint { seq: 3, reason }) if reason.contains("does not verify")),
            "{v:?}"
        );
    }

    #[test]
    fn expected_hashes_must_still_be_in_the_chain() {
        let (store, log) = log_with(3);
        let second = log.list(&AuditFilter::default(), 1, 1).unwrap()[0].clone();
        assert_eq!(
            verify_all(store.as_ref(), &[(2, second.hash.clone())])
                .unwrap()
                .problem,
            None
        );
        let v = verify_all(store.as_ref(), &[(2, "0".repeat(64))]).unwrap();
        assert!(
            matches!(v.problem, Some(ChainProblem::Unexpected { seq: 2, .. })),
            "{v:?}"
        );
        let v = verify_all(store.as_ref(), &[(9, second.hash)]).unwrap();
        assert!(
            matches!(v.problem, Some(ChainProblem::Unexpected { seq: 9, .. })),
            "{v:?}"
        );
    }

    #[test]
    fn format_1_hashes_the_canonical_json_and_format_0_records_still_verify() {
        let mut r = AuditRecord {
            v: 1,
            seq: 1,
            at: T0,
            event: AuditEvent::new(
                Actor::Administrator("zoë".into()),
                "device.action.lock",
                Outcome::Success,
            )
            .reason("line\nbreak \"quoted\""),
            prev_hash: hex::encode(GENESIS),
            hash: String::new(),
        };
        let json = serde_json::to_value(&r).unwrap();
        let mut canonical = Vec::new();
        let mut without = json.clone();
        without.as_object_mut().unwrap().remove("hash");
        canonical_json(&without, &mut canonical).unwrap();
        let text = String::from_utf8(canonical).unwrap();
        assert!(text.starts_with(r#"{"action":"device.action.lock","actor":{"id":"zoë","kind":"administrator"},"at":"2026-12-05T09:00:00Z","outcome":"success","prev_hash":"000"#), "{text}");
        assert!(text.contains(r#""reason":"line\nbreak \"quoted\"""#), "{text}");
        assert!(
            text.ends_with(r#","seq":1,"source":null,"target":null,"v":1}"#),
            "{text}"
        );
        r.hash = record_hash(&r).unwrap();
        assert_eq!(r.hash, hex::encode(Sha256::digest(text.as_bytes())));

        // A store written before formats existed (no `v`) keeps verifying.
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut old = r.clone();
        old.v = 0;
        old.hash = legacy_digest(old.seq, old.at, &old.event, &old.prev_hash).unwrap();
        let mut stored = serde_json::to_value(&old).unwrap();
        assert!(stored.get("v").is_none(), "format 0 is written without v");
        stored["hash"] = serde_json::Value::String(old.hash.clone());
        store
            .put(Tree::Audit, &key(1), &serde_json::to_vec(&stored).unwrap())
            .unwrap();
        store
            .put_record(
                Tree::Meta,
                HEAD_KEY,
                &Head {
                    seq: 1,
                    hash: old.hash.clone(),
                },
            )
            .unwrap();
        assert_eq!(verify(store.as_ref()).unwrap().problem, None);
        let log = AuditLog::open(store.clone()).unwrap();
        let next = log
            .append(AuditEvent::new(Actor::System, "x", Outcome::Success), T0)
            .unwrap();
        assert_eq!((next.v, next.prev_hash.as_str()), (1, old.hash.as_str()));
        assert_eq!(
            verify(store.as_ref()).unwrap(),
            Verification {
                verified: 2,
                problem: None
            }
        );
    }
}
