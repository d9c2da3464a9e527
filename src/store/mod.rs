//! The appliance's persistent state, behind the [`Store`] trait.
//!
//! Only this module talks to the storage engine. Logic elsewhere sees named [`Tree`]s of
//! ordered byte keys, typed helpers in [`StoreExt`], atomic [`WriteBatch`]es and
//! read-modify-write [`Store::transaction`]s, so another backend can replace sled without
//! touching it. Every backend must pass `conformance::suite`.

mod memory;
mod schema;
mod sled_store;

#[cfg(test)]
pub(crate) mod conformance;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use memory::MemoryStore;
pub use schema::{
    CURRENT_SCHEMA_VERSION, MIGRATIONS, Migration, SchemaStatus, migrate, migrate_to_current, read_version,
};
pub use sled_store::{SledOptions, SledStore};

/// A named keyspace. Keys are ordered bytewise within a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// Appliance-wide records: schema version, bootstrap state.
    Meta,
    /// Reserved for the conformance suite and experiments; never holds product data.
    Scratch,
    /// One-time SCEP challenges, keyed by the SHA-256 of the challenge.
    ScepChallenges,
    /// Every certificate the CA issued, keyed by serial (lower-case hex).
    Certificates,
    /// The revoked ones among them: serial → when (RFC 3339). Small, so the command channel
    /// checks it on every request where the registry would be a read at a random place.
    RevokedCertificates,
    /// MDM enrollments (device and user channels), keyed by enrollment ID.
    Enrollments,
    /// MDM commands as queued, keyed by command UUID.
    Commands,
    /// Pending commands per enrollment: `enrollment ID \0 priority \0 sequence` → entry, so the
    /// next command is the first key under the enrollment's prefix.
    Queue,
    /// One delivery per command and target: `command UUID \0 enrollment ID` → status, result.
    Deliveries,
    /// Command history per enrollment: `enrollment ID \0 sequence` → command UUID.
    DeviceCommands,
    /// Answered deliveries by time, for retention: `answered-at ms \0 UUID \0 enrollment ID`.
    Answered,
    /// Admin API tokens, keyed by the SHA-256 of the token.
    ApiTokens,
    /// One-time enrollment links, keyed by the SHA-256 of the link token.
    EnrollmentLinks,
    /// Identity certificate SHA-256 (hex) → the device enrollment it is bound to.
    CertificateBindings,
    /// Push outcome per enrollment (kept apart from the enrollment record, which check-ins
    /// rewrite concurrently).
    PushState,
    /// Typed inventory per device enrollment (`inventory::DeviceInventory`).
    Inventory,
    /// Per-device lists: `enrollment ID \0 apps|profiles|certificates` → JSON array.
    InventoryLists,
    /// Inventory changes: `enrollment ID \0 micros \0 field` → change.
    InventoryHistory,
    /// When devices next report inventory: `due ms \0 enrollment ID` → empty.
    InventoryDue,
    /// Each enrollment's current key in `InventoryDue`.
    InventorySchedule,
    /// An administrator's ownership decision per device (corporate / personal).
    Ownership,
    /// Remote actions taken: `enrollment ID \0 micros` → who, what, why, which command.
    Actions,
    /// Locations reported in lost mode: `enrollment ID \0 micros` → fix. Cleared when lost
    /// mode ends.
    Locations,
    /// The audit log: big-endian sequence number → hash-chained record (`audit`). Append-only.
    Audit,
    /// Administrator accounts, keyed by user name.
    Administrators,
    /// Custom roles, keyed by name (the built-in roles live in code).
    Roles,
    /// Console sessions, keyed by the SHA-256 of the session token.
    Sessions,
    /// Signed statements of the audit chain's head: big-endian sequence number → checkpoint.
    AuditCheckpoints,
    /// End users of the self-service portal with a local password, keyed by user name.
    PortalUsers,
    /// The person a device belongs to: enrollment ID → user name.
    DeviceUsers,
    /// The same, the other way: `user name \0 enrollment ID` → empty.
    UserDevices,
    /// Erase requests from the portal: `enrollment ID \0 micros` → request.
    EraseRequests,
}

impl Tree {
    pub const ALL: [Tree; 32] = [
        Tree::Meta,
        Tree::Scratch,
        Tree::ScepChallenges,
        Tree::Certificates,
        Tree::RevokedCertificates,
        Tree::Enrollments,
        Tree::Commands,
        Tree::Queue,
        Tree::Deliveries,
        Tree::DeviceCommands,
        Tree::Answered,
        Tree::ApiTokens,
        Tree::EnrollmentLinks,
        Tree::CertificateBindings,
        Tree::PushState,
        Tree::Inventory,
        Tree::InventoryLists,
        Tree::InventoryHistory,
        Tree::InventoryDue,
        Tree::InventorySchedule,
        Tree::Ownership,
        Tree::Actions,
        Tree::Locations,
        Tree::Audit,
        Tree::Administrators,
        Tree::Roles,
        Tree::Sessions,
        Tree::AuditCheckpoints,
        Tree::PortalUsers,
        Tree::DeviceUsers,
        Tree::UserDevices,
        Tree::EraseRequests,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Scratch => "scratch",
            Tree::ScepChallenges => "scep_challenges",
            Tree::Certificates => "certificates",
            Tree::RevokedCertificates => "revoked_certificates",
            Tree::Enrollments => "enrollments",
            Tree::Commands => "commands",
            Tree::Queue => "queue",
            Tree::Deliveries => "deliveries",
            Tree::DeviceCommands => "device_commands",
            Tree::Answered => "answered",
            Tree::ApiTokens => "api_tokens",
            Tree::EnrollmentLinks => "enrollment_links",
            Tree::CertificateBindings => "certificate_bindings",
            Tree::PushState => "push_state",
            Tree::Inventory => "inventory",
            Tree::InventoryLists => "inventory_lists",
            Tree::InventoryHistory => "inventory_history",
            Tree::InventoryDue => "inventory_due",
            Tree::InventorySchedule => "inventory_schedule",
            Tree::Ownership => "ownership",
            Tree::Actions => "actions",
            Tree::Locations => "locations",
            Tree::Audit => "audit",
            Tree::Administrators => "administrators",
            Tree::Roles => "roles",
            Tree::Sessions => "sessions",
            Tree::AuditCheckpoints => "audit_checkpoints",
            Tree::PortalUsers => "portal_users",
            Tree::DeviceUsers => "device_users",
            Tree::UserDevices => "user_devices",
            Tree::EraseRequests => "erase_requests",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another process (is `citadel serve` already running?)")]
    Locked { path: String },
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("stored record {tree}/{key} is corrupt: {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error("could not encode a record: {0}")]
    Encode(String),
    #[error(
        "the store has schema version {found}, newer than this binary understands ({supported}); \
         run the newer citadel or restore a backup"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("no migration from schema version {from}")]
    NoMigration { from: u32 },
    #[error("transaction aborted: {0}")]
    Aborted(String),
}

/// One atomic write across any trees.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    ops: Vec<(Tree, Vec<u8>, Option<Vec<u8>>)>,
    may_linger: bool,
}

impl WriteBatch {
    /// Marks the batch as one of a stream (devices' answers during a fan-out): the engine may
    /// hold it a moment (2 ms for sled) to write it together with the next ones. Not for a
    /// batch written under a lock that every other writer of its kind waits on (the audit
    /// chain's): they would all wait out the moment in turn.
    pub fn may_linger(&mut self) {
        self.may_linger = true;
    }

    pub(crate) fn lingers(&self) -> bool {
        self.may_linger
    }

    pub fn put(&mut self, tree: Tree, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, tree: Tree, key: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn into_ops(self) -> Vec<(Tree, Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }

    /// Makes the same writes inside a transaction.
    pub fn write_to(&self, txn: &dyn Txn) -> TxResult {
        for (tree, key, value) in &self.ops {
            match value {
                Some(v) => txn.put(*tree, key, v)?,
                None => txn.delete(*tree, key)?,
            }
        }
        Ok(())
    }
}

/// The view a transaction closure gets. Reads see the transaction's own writes.
pub trait Txn {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError>;
}

/// Key/value pairs returned by a scan.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Outcome of a transaction closure. `Err` aborts and discards every write it made.
pub type TxResult = Result<(), StoreError>;

pub trait Store: Send + Sync {
    /// The engine's name, for `/healthz` and logs.
    fn backend(&self) -> &'static str;

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes a key; returns whether it existed.
    fn delete(&self, tree: Tree, key: &[u8]) -> Result<bool, StoreError>;

    /// Up to `limit` entries whose key starts with `prefix`, in key order, strictly after
    /// `after` when given (for paging).
    fn scan_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;

    /// Applies every write of the batch, or none.
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Runs `f` atomically and in isolation. The closure may be run more than once when it
    /// conflicts with a concurrent writer, so it must have no side effects of its own. It must
    /// reach the store only through `Txn`: an engine may lock the keyspace while it runs (sled
    /// does, and a plain read from inside the closure deadlocks).
    fn transaction(&self, f: &dyn Fn(&dyn Txn) -> TxResult) -> Result<(), StoreError>;

    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Runs `f` once against `store`, keeping its writes and applying them as one batch, with
/// `first` ahead of them (`f` does not see `first`), when it returns `Ok`; its reads see its
/// own writes. Nothing is written when `f` fails, `first` included. Unlike
/// [`Store::transaction`] nothing isolates it from other writers — callers serialise
/// conflicting read-modify-writes themselves — but it costs one batch, which the engine may
/// group with others, where a transaction locks the whole keyspace and (sled) writes its log
/// out twice on its own.
pub fn write_buffered(
    store: &dyn Store,
    first: &WriteBatch,
    f: &dyn Fn(&dyn Txn) -> TxResult,
) -> Result<(), StoreError> {
    let read = |tree: Tree, key: &[u8]| store.get(tree, key);
    let txn = StagedTxn::new(&read);
    f(&txn)?;
    let mut batch = first.clone();
    for ((tree, key), value) in txn.into_staged()? {
        match value {
            Some(v) => batch.put(tree, key, v),
            None => batch.delete(tree, key),
        }
    }
    store.apply(batch)
}

/// Writes staged in memory; `None` marks a deletion.
pub(crate) type StagedWrites = std::collections::BTreeMap<(Tree, Vec<u8>), Option<Vec<u8>>>;

type BaseRead<'a> = dyn Fn(Tree, &[u8]) -> Result<Option<Vec<u8>>, StoreError> + 'a;

/// A [`Txn`] that keeps its writes in memory over a base it reads from; the caller decides
/// what becomes of them.
pub(crate) struct StagedTxn<'a> {
    base: &'a BaseRead<'a>,
    staged: std::sync::Mutex<StagedWrites>,
}

impl<'a> StagedTxn<'a> {
    pub(crate) fn new(base: &'a BaseRead<'a>) -> Self {
        Self {
            base,
            staged: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn into_staged(self) -> Result<StagedWrites, StoreError> {
        self.staged
            .into_inner()
            .map_err(|_| StoreError::Engine("staged writes lock poisoned".into()))
    }

    fn staged(&self) -> Result<std::sync::MutexGuard<'_, StagedWrites>, StoreError> {
        self.staged
            .lock()
            .map_err(|_| StoreError::Engine("staged writes lock poisoned".into()))
    }
}

impl Txn for StagedTxn<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(staged) = self.staged()?.get(&(tree, key.to_vec())) {
            return Ok(staged.clone());
        }
        (self.base)(tree, key)
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.staged()?.insert((tree, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        self.staged()?.insert((tree, key.to_vec()), None);
        Ok(())
    }
}

/// Typed records on top of the byte interface. Values are JSON so a dump stays readable.
pub trait StoreExt {
    fn get_record<T: DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>, StoreError>;
    fn put_record<T: Serialize>(&self, tree: Tree, key: &[u8], value: &T) -> Result<(), StoreError>;
}

impl<S: Store + ?Sized> StoreExt for S {
    fn get_record<T: DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get(tree, key)?
            .map(|bytes| decode(tree, key, &bytes))
            .transpose()
    }

    fn put_record<T: Serialize>(&self, tree: Tree, key: &[u8], value: &T) -> Result<(), StoreError> {
        self.put(tree, key, &encode(value)?)
    }
}

/// Every entry under `prefix`, read page by page so no single scan holds the engine long.
pub fn scan_all(store: &dyn Store, tree: Tree, prefix: &[u8]) -> Result<Entries, StoreError> {
    const PAGE: usize = 1000;
    let mut out: Entries = Vec::new();
    loop {
        let after = out.last().map(|(k, _)| k.clone());
        let page = store.scan_prefix(tree, prefix, after.as_deref(), PAGE)?;
        let full = page.len() == PAGE;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(tree: Tree, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree: tree.name(),
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}
