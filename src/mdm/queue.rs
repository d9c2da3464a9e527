//! The command queue.
//!
//! Layout (all keys bytewise-ordered, see `store::Tree`):
//! - `Commands`: `uuid` → the command as queued (full plist, once, however many targets);
//! - `Queue`: `enrollment \0 (255 − priority) sequence` → pending entry: the next command is
//!   the first key under the enrollment's prefix, whatever the fleet size or history;
//! - `Deliveries`: `uuid \0 enrollment` → status, timestamps, raw result;
//! - `DeviceCommands`: `enrollment \0 sequence` → uuid: a device's history, newest last;
//! - `Answered`: `answered-at ms \0 uuid \0 enrollment`: the retention index.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, StoreExt, Tree, WriteBatch, decode, encode};

/// Default priority of a command; higher is delivered first.
pub const DEFAULT_PRIORITY: u8 = 100;
/// Inventory queries: a second identical one for a device that already has one pending is not
/// queued again (the pending one will answer it).
const COALESCED_TYPES: &[&str] = &[
    "DeviceInformation",
    "SecurityInfo",
    "InstalledApplicationList",
    "ManagedApplicationList",
    "ProfileList",
    "CertificateList",
    "ProvisioningProfileList",
    "AvailableOSUpdates",
];

/// Strictly increasing sequence numbers for queue order: microseconds since the epoch, bumped
/// when two commands land in the same microsecond, so order survives a restart. Also counts
/// the writes that added queue entries, each once applied ([`EmptyQueues`]): entries are
/// only ever added by [`enqueue_as`] with the service's one `Sequence` (re-queuing a NotNow
/// rewrites an entry in place).
#[derive(Debug, Default)]
pub struct Sequence {
    last: Mutex<u64>,
    growth: AtomicU64,
}

impl Sequence {
    pub fn next(&self, now: OffsetDateTime) -> u64 {
        let micros = u64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(0);
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *last = std::cmp::max(*last + 1, micros);
        *last
    }
}

/// A device result body as received: XML kept as text, binary plists as base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "format", content = "data")]
pub enum RawPlist {
    Xml(String),
    Binary(String),
}

impl RawPlist {
    pub fn from_body(body: &[u8]) -> Self {
        match std::str::from_utf8(body) {
            Ok(text) if !body.starts_with(b"bplist") => Self::Xml(text.to_owned()),
            _ => Self::Binary(data_encoding::BASE64.encode(body)),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Xml(s) => s.as_bytes().to_vec(),
            Self::Binary(b) => data_encoding::BASE64.decode(b.as_bytes()).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub uuid: String,
    pub request_type: String,
    /// The full command plist (`Command` + `CommandUUID`) as sent to devices, XML.
    pub plist: String,
    pub priority: u8,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    pub targets: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct QueueEntry {
    uuid: String,
    request_type: String,
    /// SHA-256 of the command's content without its UUID, to coalesce duplicates.
    content_sha256: String,
    /// Answered NotNow: skipped for the rest of the session (until the next Idle).
    #[serde(default)]
    not_now: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Queued,
    Sent,
    NotNow,
    Acknowledged,
    Error,
    CommandFormatError,
    /// Dropped unanswered because the enrollment was reset (Authenticate) or ended (CheckOut).
    Cancelled,
}

impl DeliveryStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Acknowledged | Self::Error | Self::CommandFormatError | Self::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub uuid: String,
    pub enrollment_id: String,
    pub request_type: String,
    pub status: DeliveryStatus,
    pub priority: u8,
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub queued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub sent_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub answered_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub not_now_count: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<RawPlist>,
}

fn queue_prefix(enrollment: &str) -> Vec<u8> {
    let mut k = enrollment.as_bytes().to_vec();
    k.push(0);
    k
}

fn queue_key(enrollment: &str, priority: u8, sequence: u64) -> Vec<u8> {
    let mut k = queue_prefix(enrollment);
    k.push(u8::MAX - priority);
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

fn delivery_key(uuid: &str, enrollment: &str) -> Vec<u8> {
    let mut k = uuid.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(enrollment.as_bytes());
    k
}

fn history_key(enrollment: &str, sequence: u64) -> Vec<u8> {
    let mut k = queue_prefix(enrollment);
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

fn answered_key(at: OffsetDateTime, uuid: &str, enrollment: &str) -> Vec<u8> {
    let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let mut k = ms.to_be_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&delivery_key(uuid, enrollment));
    k
}

fn content_digest(command: &Dictionary) -> Result<String, StoreError> {
    let mut xml = Vec::new();
    plist::to_writer_xml(&mut xml, &Value::Dictionary(command.clone()))
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(&xml)))
}

/// What enqueueing did for each target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub command_uuid: String,
    pub queued: Vec<String>,
    /// Targets that already had the same inventory query pending, with its UUID.
    pub coalesced: Vec<(String, String)>,
}

/// Targets written per store batch by [`enqueue`].
const ENQUEUE_BATCH_TARGETS: usize = 1_000;

/// Queues `command` (the inner `Command` dictionary, already validated) for `targets` under a
/// new UUID.
pub fn enqueue(
    store: &dyn Store,
    sequence: &Sequence,
    targets: &[String],
    command: &Dictionary,
    priority: u8,
    created_by: &str,
    now: OffsetDateTime,
) -> Result<Enqueued, StoreError> {
    let uuid = uuid::Uuid::new_v4().to_string().to_uppercase();
    enqueue_as(
        store, sequence, &uuid, targets, command, priority, created_by, now,
    )
}

/// [`enqueue`] under `uuid` (canonical: upper-case, hyphenated), which must not name a command
/// the store still holds: `StoreError::Aborted` if it does, and nothing is written.
#[allow(clippy::too_many_arguments)]
pub fn enqueue_as(
    store: &dyn Store,
    sequence: &Sequence,
    uuid: &str,
    targets: &[String],
    command: &Dictionary,
    priority: u8,
    created_by: &str,
    now: OffsetDateTime,
) -> Result<Enqueued, StoreError> {
    let request_type = command
        .get("RequestType")
        .and_then(Value::as_string)
        .unwrap_or_default()
        .to_owned();
    let uuid = uuid.to_owned();
    let mut full = Dictionary::new();
    full.insert("Command".into(), Value::Dictionary(command.clone()));
    full.insert("CommandUUID".into(), Value::String(uuid.clone()));
    let mut xml = Vec::new();
    plist::to_writer_xml(&mut xml, &Value::Dictionary(full))
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    let content_sha256 = content_digest(command)?;
    let coalescible = COALESCED_TYPES.contains(&request_type.as_str());

    let mut out = Enqueued {
        command_uuid: uuid.clone(),
        queued: Vec::new(),
        coalesced: Vec::new(),
    };
    // The command is written before any target can fetch it, and its target count corrected
    // once the coalescing is known. Targets go in bounded batches: one batch for a 100,000-device
    // fan-out held every entry in memory at once (2 GB). Each target's three entries stay atomic.
    let mut record = CommandRecord {
        uuid: uuid.clone(),
        request_type: request_type.clone(),
        plist: String::from_utf8_lossy(&xml).into_owned(),
        priority,
        created_at: now,
        created_by: created_by.to_owned(),
        targets: targets.len(),
    };
    // Claimed atomically: two callers choosing the same UUID must not share one command.
    let encoded = encode(&record)?;
    store.transaction(&|txn| {
        if txn.get(Tree::Commands, uuid.as_bytes())?.is_some() {
            return Err(StoreError::Aborted(format!(
                "a command with UUID {uuid} already exists"
            )));
        }
        txn.put(Tree::Commands, uuid.as_bytes(), &encoded)
    })?;
    for chunk in targets.chunks(ENQUEUE_BATCH_TARGETS) {
        let mut batch = WriteBatch::default();
        for target in chunk {
            if coalescible && let Some(existing) = pending_duplicate(store, target, &content_sha256)? {
                out.coalesced.push((target.clone(), existing));
                continue;
            }
            let seq = sequence.next(now);
            let entry = QueueEntry {
                uuid: uuid.clone(),
                request_type: request_type.clone(),
                content_sha256: content_sha256.clone(),
                not_now: false,
            };
            batch.put(Tree::Queue, queue_key(target, priority, seq), encode(&entry)?);
            let delivery = Delivery {
                uuid: uuid.clone(),
                enrollment_id: target.clone(),
                request_type: request_type.clone(),
                status: DeliveryStatus::Queued,
                priority,
                sequence: seq,
                queued_at: now,
                sent_at: None,
                answered_at: None,
                not_now_count: 0,
                result: None,
            };
            batch.put(Tree::Deliveries, delivery_key(&uuid, target), encode(&delivery)?);
            batch.put(
                Tree::DeviceCommands,
                history_key(target, seq),
                uuid.as_bytes().to_vec(),
            );
            out.queued.push(target.clone());
        }
        let applied = store.apply(batch);
        // After the write, whatever its outcome: see `EmptyQueues`.
        sequence.growth.fetch_add(1, Ordering::SeqCst);
        applied?;
    }
    if out.queued.is_empty() {
        store.delete(Tree::Commands, uuid.as_bytes())?;
    } else if out.queued.len() != record.targets {
        record.targets = out.queued.len();
        store.put(Tree::Commands, uuid.as_bytes(), &encode(&record)?)?;
    }
    Ok(out)
}

fn pending_duplicate(
    store: &dyn Store,
    target: &str,
    content_sha256: &str,
) -> Result<Option<String>, StoreError> {
    let prefix = queue_prefix(target);
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan_prefix(Tree::Queue, &prefix, after.as_deref(), 64)?;
        for (k, v) in &page {
            let entry: QueueEntry = decode(Tree::Queue, k, v)?;
            if entry.content_sha256 == content_sha256 {
                return Ok(Some(entry.uuid));
            }
        }
        if page.len() < 64 {
            return Ok(None);
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}

/// A command to send: its UUID and its full plist.
pub type NextCommand = (String, Vec<u8>);

/// The queues found empty, each with the [`Sequence`]'s count of additions read before the
/// scan that found it so: most Idles find nothing to do, and a scan of an empty range costs
/// the store a page-sized copy (BENCHMARKS.md, issue 6). A queue is taken to be empty without
/// a scan only while no entry has been added anywhere since. An addition that lands during a
/// scan is counted after it is written, so the count read before that scan differs from the
/// count any later Idle reads once the enqueue has returned — and devices are pushed only
/// then. Bounded; deletions need no bookkeeping (they cannot make an empty queue non-empty).
pub struct EmptyQueues {
    seen: quick_cache::sync::Cache<String, u64>,
}

impl std::fmt::Debug for EmptyQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmptyQueues")
            .field("len", &self.seen.len())
            .finish()
    }
}

impl EmptyQueues {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// [`next`], without reading the store for a queue known to be empty.
    pub fn next(
        &self,
        store: &dyn Store,
        sequence: &Sequence,
        enrollment: &str,
        skip_not_now: bool,
    ) -> Result<Option<NextCommand>, StoreError> {
        let growth = sequence.growth.load(Ordering::SeqCst);
        if self.seen.get(enrollment) == Some(growth) {
            return Ok(None);
        }
        let (next, empty) = next_scanned(store, enrollment, skip_not_now)?;
        if empty {
            self.seen.insert(enrollment.to_owned(), growth);
        }
        Ok(next)
    }
}

/// The next command for `enrollment`: the first queued one, or with `skip_not_now` the first
/// not answered NotNow in this session. Returns its full plist.
pub fn next(
    store: &dyn Store,
    enrollment: &str,
    skip_not_now: bool,
) -> Result<Option<NextCommand>, StoreError> {
    next_scanned(store, enrollment, skip_not_now).map(|(next, _)| next)
}

/// [`next`], and whether the scan found the queue empty (no entry at all, NotNow or not).
fn next_scanned(
    store: &dyn Store,
    enrollment: &str,
    skip_not_now: bool,
) -> Result<(Option<NextCommand>, bool), StoreError> {
    let prefix = queue_prefix(enrollment);
    let mut after: Option<Vec<u8>> = None;
    let mut empty = true;
    loop {
        let page = store.scan_prefix(Tree::Queue, &prefix, after.as_deref(), 16)?;
        empty &= page.is_empty();
        for (k, v) in &page {
            let entry: QueueEntry = decode(Tree::Queue, k, v)?;
            if skip_not_now && entry.not_now {
                continue;
            }
            let Some(record) = store.get_record::<CommandRecord>(Tree::Commands, entry.uuid.as_bytes())?
            else {
                // A queue entry without its command cannot be delivered; drop it.
                tracing::warn!(enrollment, uuid = %entry.uuid, "queued command has no record; dropped");
                store.delete(Tree::Queue, k)?;
                continue;
            };
            return Ok((Some((entry.uuid, record.plist.into_bytes())), false));
        }
        if page.len() < 16 {
            return Ok((None, empty));
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}

pub fn delivery(store: &dyn Store, uuid: &str, enrollment: &str) -> Result<Option<Delivery>, StoreError> {
    store.get_record(Tree::Deliveries, &delivery_key(uuid, enrollment))
}

/// Records that the command went out to the device.
pub fn mark_sent(
    store: &dyn Store,
    uuid: &str,
    enrollment: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let key = delivery_key(uuid, enrollment);
    if let Some(mut d) = store.get_record::<Delivery>(Tree::Deliveries, &key)?
        && !d.status.is_final()
    {
        d.status = DeliveryStatus::Sent;
        d.sent_at = Some(now);
        store.put_record(Tree::Deliveries, &key, &d)?;
    }
    Ok(())
}

/// What a device's report on a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Stored; `request_type` is the answered command's.
    Recorded { request_type: String },
    /// The UUID is not a pending command of this enrollment (another device's, or already
    /// answered): nothing changed.
    NotPending,
}

/// Records a device's answer for one of its own pending commands, on its own (see
/// [`prepare_report`]).
pub fn report(
    store: &dyn Store,
    enrollment: &str,
    uuid: &str,
    status: DeliveryStatus,
    raw: &[u8],
    now: OffsetDateTime,
) -> Result<ReportOutcome, StoreError> {
    let (outcome, batch) = prepare_report(store, enrollment, uuid, status, raw, now)?;
    store.apply(batch)?;
    Ok(outcome)
}

/// Records a device's answer (`Acknowledged`, `Error`, `CommandFormatError` or `NotNow`) for
/// one of its own pending commands — as the batch that does it (empty when nothing is pending),
/// so the caller writes it together with what the answer changes elsewhere.
pub fn prepare_report(
    store: &dyn Store,
    enrollment: &str,
    uuid: &str,
    status: DeliveryStatus,
    raw: &[u8],
    now: OffsetDateTime,
) -> Result<(ReportOutcome, WriteBatch), StoreError> {
    let not_pending = || Ok((ReportOutcome::NotPending, WriteBatch::default()));
    let dkey = delivery_key(uuid, enrollment);
    let Some(mut d) = store.get_record::<Delivery>(Tree::Deliveries, &dkey)? else {
        return not_pending();
    };
    if d.status.is_final() {
        return not_pending();
    }
    let qkey = queue_key(enrollment, d.priority, d.sequence);
    let mut batch = WriteBatch::default();
    // Answers come in streams (a fan-out's thousands): written a few at a time, not one by one.
    batch.may_linger();
    if status == DeliveryStatus::NotNow {
        let Some(mut entry) = store.get_record::<QueueEntry>(Tree::Queue, &qkey)? else {
            return not_pending();
        };
        entry.not_now = true;
        batch.put(Tree::Queue, qkey, encode(&entry)?);
        d.not_now_count = d.not_now_count.saturating_add(1);
    } else {
        batch.delete(Tree::Queue, qkey);
        batch.put(Tree::Answered, answered_key(now, uuid, enrollment), Vec::new());
        d.answered_at = Some(now);
    }
    d.status = status;
    d.result = Some(RawPlist::from_body(raw));
    batch.put(Tree::Deliveries, dkey, encode(&d)?);
    Ok((
        ReportOutcome::Recorded {
            request_type: d.request_type,
        },
        batch,
    ))
}

/// Clears everything pending for `enrollment` (its deliveries become `Cancelled`). Returns how
/// many commands were dropped.
pub fn clear(store: &dyn Store, enrollment: &str, now: OffsetDateTime) -> Result<usize, StoreError> {
    let prefix = queue_prefix(enrollment);
    let mut cleared = 0;
    loop {
        let page = store.scan_prefix(Tree::Queue, &prefix, None, 256)?;
        if page.is_empty() {
            return Ok(cleared);
        }
        let mut batch = WriteBatch::default();
        for (k, v) in &page {
            let entry: QueueEntry = decode(Tree::Queue, k, v)?;
            batch.delete(Tree::Queue, k.clone());
            let dkey = delivery_key(&entry.uuid, enrollment);
            if let Some(mut d) = store.get_record::<Delivery>(Tree::Deliveries, &dkey)? {
                d.status = DeliveryStatus::Cancelled;
                d.answered_at = Some(now);
                batch.put(Tree::Deliveries, dkey, encode(&d)?);
                batch.put(
                    Tree::Answered,
                    answered_key(now, &entry.uuid, enrollment),
                    Vec::new(),
                );
            }
            cleared += 1;
        }
        store.apply(batch)?;
    }
}

/// Number of commands pending for `enrollment`.
pub fn pending_count(store: &dyn Store, enrollment: &str) -> Result<usize, StoreError> {
    Ok(crate::store::scan_all(store, Tree::Queue, &queue_prefix(enrollment))?.len())
}

pub fn command(store: &dyn Store, uuid: &str) -> Result<Option<CommandRecord>, StoreError> {
    store.get_record(Tree::Commands, uuid.as_bytes())
}

/// Every delivery of command `uuid`, by enrollment ID.
pub fn deliveries(
    store: &dyn Store,
    uuid: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let prefix = delivery_key(uuid, "");
    let after_key = after.map(|a| delivery_key(uuid, a));
    store
        .scan_prefix(Tree::Deliveries, &prefix, after_key.as_deref(), limit)?
        .iter()
        .map(|(k, v)| decode(Tree::Deliveries, k, v))
        .collect()
}

/// The newest `limit` commands of `enrollment`, newest first.
pub fn history(store: &dyn Store, enrollment: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
    // The history index is oldest-first; a device's history is bounded by retention.
    let entries = crate::store::scan_all(store, Tree::DeviceCommands, &queue_prefix(enrollment))?;
    let mut out = Vec::new();
    for (_, uuid) in entries.iter().rev().take(limit) {
        let uuid = String::from_utf8_lossy(uuid);
        if let Some(d) = delivery(store, &uuid, enrollment)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// The delivery keys of `enrollment`'s answered DeviceLocation commands (read before a
/// transaction that strips them with [`strip_location`]).
pub fn location_answers(store: &dyn Store, enrollment: &str) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut keys = Vec::new();
    for (_, uuid) in crate::store::scan_all(store, Tree::DeviceCommands, &queue_prefix(enrollment))? {
        let key = delivery_key(&String::from_utf8_lossy(&uuid), enrollment);
        if let Some(d) = store.get_record::<Delivery>(Tree::Deliveries, &key)?
            && d.request_type == "DeviceLocation"
            && d.result.is_some()
        {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Removes the position from one stored answer to DeviceLocation, inside `txn` (a delivery
/// pruned meanwhile stays gone).
pub fn strip_location(txn: &dyn crate::store::Txn, key: &[u8]) -> Result<(), StoreError> {
    let Some(bytes) = txn.get(Tree::Deliveries, key)? else {
        return Ok(());
    };
    let mut d: Delivery = decode(Tree::Deliveries, key, &bytes)?;
    let Some(mut answer) = d
        .result
        .as_ref()
        .and_then(|raw| plist::from_bytes::<Dictionary>(&raw.bytes()).ok())
    else {
        return Ok(());
    };
    let before = answer.len();
    for k in crate::inventory::LOCATION_KEYS {
        answer.remove(k);
    }
    if answer.len() == before {
        return Ok(());
    }
    let mut xml = Vec::new();
    plist::to_writer_xml(&mut xml, &Value::Dictionary(answer))
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    d.result = Some(RawPlist::from_body(&xml));
    txn.put(Tree::Deliveries, key, &encode(&d)?)
}

/// Deletes deliveries answered before `cutoff` (and commands left without deliveries).
/// Returns how many deliveries were pruned.
pub fn prune(store: &dyn Store, cutoff: OffsetDateTime, max: usize) -> Result<usize, StoreError> {
    let cutoff_ms = u64::try_from(cutoff.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let page = store.scan_prefix(Tree::Answered, b"", None, max)?;
    let mut pruned = 0;
    let mut batch = WriteBatch::default();
    let mut touched: Vec<String> = Vec::new();
    for (k, _) in &page {
        let Some(ms) = k
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
        else {
            batch.delete(Tree::Answered, k.clone());
            continue;
        };
        if ms >= cutoff_ms {
            break;
        }
        batch.delete(Tree::Answered, k.clone());
        let dkey = k.get(9..).unwrap_or_default().to_vec();
        if let Some(d) = store.get_record::<Delivery>(Tree::Deliveries, &dkey)? {
            batch.delete(Tree::DeviceCommands, history_key(&d.enrollment_id, d.sequence));
            if !touched.contains(&d.uuid) {
                touched.push(d.uuid.clone());
            }
        }
        batch.delete(Tree::Deliveries, dkey);
        pruned += 1;
    }
    store.apply(batch)?;
    for uuid in touched {
        if store
            .scan_prefix(Tree::Deliveries, &delivery_key(&uuid, ""), None, 1)?
            .is_empty()
        {
            store.delete(Tree::Commands, uuid.as_bytes())?;
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::MemoryStore;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn cmd(request_type: &str) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("RequestType".into(), Value::String(request_type.into()));
        d
    }

    fn uuid_of(plist_bytes: &[u8]) -> String {
        let v: Dictionary = plist::from_bytes(plist_bytes).unwrap();
        v.get("CommandUUID").unwrap().as_string().unwrap().to_owned()
    }

    #[test]
    fn order_priority_not_now_and_acknowledgement() {
        let store = MemoryStore::new();
        let seq = Sequence::default();
        let t = vec!["dev-1".to_string()];
        let a = enqueue(
            &store,
            &seq,
            &t,
            &cmd("DeviceLock"),
            DEFAULT_PRIORITY,
            "test",
            NOW,
        )
        .unwrap();
        let b = enqueue(
            &store,
            &seq,
            &t,
            &cmd("RestartDevice"),
            DEFAULT_PRIORITY,
            "test",
            NOW,
        )
        .unwrap();
        let urgent = enqueue(&store, &seq, &t, &cmd("EraseDevice"), 200, "test", NOW).unwrap();
        let other = enqueue(
            &store,
            &seq,
            &["dev-10".to_string()],
            &cmd("ProfileList"),
            255,
            "t",
            NOW,
        )
        .unwrap();
        // Priority first, then enqueue order; another device's queue (a longer ID with the same
        // prefix) never leaks in.
        let (u, _) = next(&store, "dev-1", false).unwrap().unwrap();
        assert_eq!(u, urgent.command_uuid);
        report(
            &store,
            "dev-1",
            &u,
            DeliveryStatus::Acknowledged,
            b"<plist/>",
            NOW,
        )
        .unwrap();
        let (u, body) = next(&store, "dev-1", false).unwrap().unwrap();
        assert_eq!(u, a.command_uuid);
        assert_eq!(uuid_of(&body), a.command_uuid);
        // NotNow: skipped for the rest of the session, delivered again on the next.
        report(&store, "dev-1", &u, DeliveryStatus::NotNow, b"<plist/>", NOW).unwrap();
        assert_eq!(next(&store, "dev-1", true).unwrap().unwrap().0, b.command_uuid);
        assert_eq!(next(&store, "dev-1", false).unwrap().unwrap().0, a.command_uuid);
        // A device cannot answer another device's command.
        assert_eq!(
            report(
                &store,
                "dev-1",
                &other.command_uuid,
                DeliveryStatus::Acknowledged,
                b"",
                NOW
            )
            .unwrap(),
            ReportOutcome::NotPending
        );
        assert_eq!(pending_count(&store, "dev-10").unwrap(), 1);
        // Answered twice: the second is not pending.
        report(
            &store,
            "dev-1",
            &b.command_uuid,
            DeliveryStatus::Error,
            b"<x/>",
            NOW,
        )
        .unwrap();
        assert_eq!(
            report(
                &store,
                "dev-1",
                &b.command_uuid,
                DeliveryStatus::Acknowledged,
                b"",
                NOW
            )
            .unwrap(),
            ReportOutcome::NotPending
        );
        let d = delivery(&store, &b.command_uuid, "dev-1").unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Error);
        assert_eq!(d.result, Some(RawPlist::Xml("<x/>".into())));
        assert_eq!(history(&store, "dev-1", 10).unwrap().len(), 3);
    }

    #[test]
    fn an_empty_queue_is_read_again_only_once_something_was_queued() {
        let store = MemoryStore::new();
        let seq = Sequence::default();
        let empty = EmptyQueues::new(8);
        let one = |id: &str| vec![id.to_owned()];
        assert_eq!(empty.next(&store, &seq, "dev-1", false).unwrap(), None);
        // An entry that appears without `enqueue_as` (here: dev-2's, copied under dev-1's key)
        // is not seen: the queue is remembered empty and not read...
        let copied_command = enqueue(
            &store,
            &seq,
            &one("dev-2"),
            &cmd("DeviceLock"),
            DEFAULT_PRIORITY,
            "t",
            NOW,
        )
        .unwrap();
        assert_eq!(empty.next(&store, &seq, "dev-1", false).unwrap(), None);
        let (k, v) = store
            .scan_prefix(Tree::Queue, &queue_prefix("dev-2"), None, 1)
            .unwrap()
            .remove(0);
        let copied = [queue_prefix("dev-1"), k[queue_prefix("dev-2").len()..].to_vec()].concat();
        store.put(Tree::Queue, &copied, &v).unwrap();
        assert!(next(&store, "dev-1", false).unwrap().is_some());
        assert_eq!(empty.next(&store, &seq, "dev-1", false).unwrap(), None);
        assert_eq!(empty.next(&store, &seq, "dev-1", true).unwrap(), None);
        // ...until anything is queued, for any device.
        enqueue(
            &store,
            &seq,
            &one("dev-3"),
            &cmd("RestartDevice"),
            DEFAULT_PRIORITY,
            "t",
            NOW,
        )
        .unwrap();
        let (uuid, _) = empty.next(&store, &seq, "dev-1", false).unwrap().unwrap();
        assert_eq!(uuid, copied_command.command_uuid);
        store.delete(Tree::Queue, &copied).unwrap();

        // A queue holding only a NotNow is not empty: it is read on the next Idle.
        let lock = enqueue(
            &store,
            &seq,
            &one("dev-4"),
            &cmd("DeviceLock"),
            DEFAULT_PRIORITY,
            "t",
            NOW,
        )
        .unwrap();
        report(
            &store,
            "dev-4",
            &lock.command_uuid,
            DeliveryStatus::NotNow,
            b"<plist/>",
            NOW,
        )
        .unwrap();
        assert_eq!(empty.next(&store, &seq, "dev-4", true).unwrap(), None);
        assert_eq!(
            empty.next(&store, &seq, "dev-4", false).unwrap().unwrap().0,
            lock.command_uuid
        );
        // Answered, the queue is empty again, and remembered so.
        report(
            &store,
            "dev-4",
            &lock.command_uuid,
            DeliveryStatus::Acknowledged,
            b"<plist/>",
            NOW,
        )
        .unwrap();
        assert_eq!(empty.next(&store, &seq, "dev-4", false).unwrap(), None);
        store
            .put(Tree::Queue, &[queue_prefix("dev-4"), b"x".to_vec()].concat(), &v)
            .unwrap();
        assert_eq!(empty.next(&store, &seq, "dev-4", false).unwrap(), None);
    }

    #[test]
    fn inventory_queries_are_coalesced_per_device() {
        let store = MemoryStore::new();
        let seq = Sequence::default();
        let first = enqueue(&store, &seq, &["d1".into()], &cmd("SecurityInfo"), 100, "t", NOW).unwrap();
        let second = enqueue(
            &store,
            &seq,
            &["d1".into(), "d2".into()],
            &cmd("SecurityInfo"),
            100,
            "t",
            NOW,
        )
        .unwrap();
        assert_eq!(second.queued, vec!["d2".to_string()]);
        assert_eq!(
            second.coalesced,
            vec![("d1".to_string(), first.command_uuid.clone())]
        );
        // Not coalesced: actions, and inventory queries that differ.
        let lock = enqueue(&store, &seq, &["d1".into()], &cmd("DeviceLock"), 100, "t", NOW).unwrap();
        let lock2 = enqueue(&store, &seq, &["d1".into()], &cmd("DeviceLock"), 100, "t", NOW).unwrap();
        assert_eq!((lock.queued.len(), lock2.queued.len()), (1, 1));
        let mut q = cmd("SecurityInfo");
        q.insert("Extra".into(), Value::Boolean(true));
        assert_eq!(
            enqueue(&store, &seq, &["d1".into()], &q, 100, "t", NOW)
                .unwrap()
                .queued
                .len(),
            1
        );
    }

    #[test]
    fn a_fan_out_larger_than_one_batch_queues_every_target_once() {
        let store = MemoryStore::new();
        let seq = Sequence::default();
        let n = ENQUEUE_BATCH_TARGETS * 2 + 7;
        let targets: Vec<String> = (0..n).map(|i| format!("dev-{i:05}")).collect();
        // One target in the second batch already has the query pending.
        let early = enqueue(
            &store,
            &seq,
            std::slice::from_ref(&targets[ENQUEUE_BATCH_TARGETS + 3]),
            &cmd("SecurityInfo"),
            100,
            "t",
            NOW,
        )
        .unwrap();
        let out = enqueue(&store, &seq, &targets, &cmd("SecurityInfo"), 100, "t", NOW).unwrap();
        assert_eq!((out.queued.len(), out.coalesced.len()), (n - 1, 1));
        assert_eq!(out.coalesced[0].1, early.command_uuid);
        let record = command(&store, &out.command_uuid).unwrap().unwrap();
        assert_eq!(record.targets, n - 1);
        for t in [&targets[0], &targets[ENQUEUE_BATCH_TARGETS], &targets[n - 1]] {
            assert_eq!(pending_count(&store, t).unwrap(), 1, "{t}");
        }
        // Everything coalesced: no command record is left behind.
        let again = enqueue(&store, &seq, &targets[..3], &cmd("SecurityInfo"), 100, "t", NOW).unwrap();
        assert!(again.queued.is_empty());
        assert!(command(&store, &again.command_uuid).unwrap().is_none());
    }

    #[test]
    fn clear_and_prune() {
        let store = MemoryStore::new();
        let seq = Sequence::default();
        let a = enqueue(&store, &seq, &["d1".into()], &cmd("DeviceLock"), 100, "t", NOW).unwrap();
        let b = enqueue(
            &store,
            &seq,
            &["d1".into(), "d2".into()],
            &cmd("RestartDevice"),
            100,
            "t",
            NOW,
        )
        .unwrap();
        report(
            &store,
            "d1",
            &a.command_uuid,
            DeliveryStatus::Acknowledged,
            b"",
            NOW,
        )
        .unwrap();
        assert_eq!(clear(&store, "d1", NOW).unwrap(), 1);
        assert_eq!(next(&store, "d1", false).unwrap(), None);
        assert_eq!(
            delivery(&store, &b.command_uuid, "d1").unwrap().unwrap().status,
            DeliveryStatus::Cancelled
        );
        // Nothing is old enough yet.
        assert_eq!(prune(&store, NOW, 100).unwrap(), 0);
        let later = NOW + time::Duration::days(31);
        assert_eq!(prune(&store, later, 100).unwrap(), 2);
        assert!(command(&store, &a.command_uuid).unwrap().is_none());
        // b still has a pending delivery on d2: kept.
        assert!(command(&store, &b.command_uuid).unwrap().is_some());
        assert_eq!(history(&store, "d1", 10).unwrap().len(), 0);
        assert_eq!(next(&store, "d2", false).unwrap().unwrap().0, b.command_uuid);
    }

    #[test]
    fn sequence_is_strictly_increasing() {
        let s = Sequence::default();
        let a = s.next(NOW);
        let b = s.next(NOW);
        let c = s.next(NOW - time::Duration::hours(1));
        assert!(a < b && b < c);
    }
}
