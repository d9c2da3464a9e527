//! The sled backend. All trees live in one sled tree, each under a one-byte prefix, so that a
//! [`WriteBatch`] spanning trees is a single atomic sled batch and transactions need no
//! multi-tree juggling.
//!
//! Batches are group-committed: sled writes its log buffer to disk, synchronously and twice,
//! for every atomic batch (it seals the buffer around the batch's recovery marker), so batches
//! that arrive while one is being applied are applied together as one sled batch. Each caller
//! still gets all-or-nothing for its own writes, in the order the batches arrived. An engine
//! error fails every batch of its group (as it would have failed each alone).

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

use super::{Entries, Store, StoreError, Tree, TxResult, Txn, WriteBatch};

#[derive(Debug, Clone)]
pub struct SledOptions {
    /// Page cache size. sled's memory grows with it, so it is set explicitly.
    pub cache_capacity_bytes: u64,
    /// Background flush interval; a clean shutdown flushes regardless.
    pub flush_every_ms: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 16 * 1024 * 1024,
            flush_every_ms: 500,
        }
    }
}

pub struct SledStore {
    db: sled::Db,
    data: sled::Tree,
    commits: GroupCommit,
}

/// Ends a group's turn even if applying it panicked: its callers get an error rather than
/// waiting forever, and the next group can go.
struct Settle<'a> {
    commits: &'a GroupCommit,
    outcome: &'a OnceLock<Result<(), String>>,
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        // Already set unless applying panicked.
        let _ = self
            .outcome
            .set(Err("the storage engine failed while applying this batch".into()));
        let mut state = self.commits.lock();
        state.applying = false;
        state.last_applied = Some(Instant::now());
        drop(state);
        self.commits.applied.notify_all();
    }
}

/// The batches waiting for the next sled batch, and whether a caller is applying one now.
struct GroupCommit {
    state: Mutex<GroupState>,
    applied: Condvar,
    /// How long a group of lingering batches waits for more to join when batches are arriving
    /// in a stream, as PostgreSQL's `commit_delay` does: each group costs sled two synchronous
    /// log writes, so a stream of single-batch groups costs two per batch (BENCHMARKS.md,
    /// issue 6). A batch arriving on its own — nothing applied within this long — never waits.
    linger: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            applied: Condvar::new(),
            linger: Duration::from_millis(2),
        }
    }
}

#[derive(Default)]
struct GroupState {
    /// Writes of the batches that arrived since the group in flight was taken, in order
    /// (`None`: no batch is waiting).
    pending: Option<sled::Batch>,
    /// Where the pending batches learn their outcome (`Err` carries the engine's message).
    outcome: Arc<OnceLock<Result<(), String>>>,
    /// A caller is applying a group: the next one waits for it rather than syncing alongside.
    applying: bool,
    /// When the last group was applied: batches arriving closer together than the linger
    /// are a stream.
    last_applied: Option<Instant>,
    /// Groups that waited for company.
    lingered: u64,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        // Nothing panics while holding it; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `ops` to the pending group and returns once that group is applied: by this caller
    /// when no group is in flight, else by whichever waiter finds the engine free first.
    fn commit(
        &self,
        ops: Vec<(Tree, Vec<u8>, Option<Vec<u8>>)>,
        may_linger: bool,
        apply: &dyn Fn(sled::Batch) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let pending = state.pending.get_or_insert_with(sled::Batch::default);
        for (tree, key, value) in ops {
            match value {
                Some(v) => pending.insert(full_key(tree, &key), v),
                None => pending.remove(full_key(tree, &key)),
            }
        }
        let mine = Arc::clone(&state.outcome);
        loop {
            if let Some(outcome) = mine.get() {
                return outcome.clone().map_err(StoreError::Engine);
            }
            if !state.applying {
                // Our group is the pending one (a taken group always gets its outcome).
                state.applying = true;
                if may_linger && state.last_applied.is_some_and(|at| at.elapsed() < self.linger) {
                    state.lingered += 1;
                    drop(state);
                    std::thread::sleep(self.linger);
                    state = self.lock();
                }
                let group = state.pending.take().unwrap_or_default();
                let outcome = std::mem::take(&mut state.outcome);
                drop(state);
                let settle = Settle {
                    commits: self,
                    outcome: &outcome,
                };
                let _ = outcome.set(apply(group));
                drop(settle);
                state = self.lock();
                continue;
            }
            state = self.applied.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn tree_prefix(tree: Tree) -> u8 {
    match tree {
        Tree::Meta => 1,
        Tree::Scratch => 2,
        Tree::ScepChallenges => 3,
        Tree::Certificates => 4,
        Tree::Enrollments => 5,
        Tree::Commands => 6,
        Tree::Queue => 7,
        Tree::Deliveries => 8,
        Tree::DeviceCommands => 9,
        Tree::Answered => 10,
        Tree::ApiTokens => 11,
        Tree::EnrollmentLinks => 12,
        Tree::CertificateBindings => 13,
        Tree::PushState => 14,
        Tree::Inventory => 15,
        Tree::InventoryLists => 16,
        Tree::InventoryHistory => 17,
        Tree::InventoryDue => 18,
        Tree::InventorySchedule => 19,
        Tree::Ownership => 20,
        Tree::Actions => 21,
        Tree::Locations => 22,
        Tree::Audit => 23,
        Tree::Administrators => 24,
        Tree::Roles => 25,
        Tree::Sessions => 26,
        Tree::AuditCheckpoints => 27,
        Tree::PortalUsers => 28,
        Tree::DeviceUsers => 29,
        Tree::UserDevices => 30,
        Tree::EraseRequests => 31,
        Tree::RevokedCertificates => 32,
    }
}

fn full_key(tree: Tree, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(tree_prefix(tree));
    k.extend_from_slice(key);
    k
}

fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl SledStore {
    pub fn open(path: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(Some(options.flush_every_ms))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => StoreError::Locked {
                    path: path.display().to_string(),
                },
                sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked {
                    path: path.display().to_string(),
                },
                other => engine(other),
            })?;
        let data = db.open_tree("citadel").map_err(engine)?;
        Ok(Self {
            db,
            data,
            commits: GroupCommit::default(),
        })
    }
}

struct SledTxn<'a> {
    tree: &'a TransactionalTree,
    // Set when sled reports a conflict, so the whole closure is retried whatever it returned.
    conflict: &'a Cell<bool>,
}

impl SledTxn<'_> {
    fn lift(&self, e: UnabortableTransactionError) -> StoreError {
        match e {
            UnabortableTransactionError::Conflict => {
                self.conflict.set(true);
                StoreError::Aborted("write conflict".into())
            }
            UnabortableTransactionError::Storage(e) => engine(e),
        }
    }
}

impl Txn for SledTxn<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tree
            .get(full_key(tree, key))
            .map(|v| v.map(|iv| iv.to_vec()))
            .map_err(|e| self.lift(e))
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree
            .insert(full_key(tree, key), value)
            .map(|_| ())
            .map_err(|e| self.lift(e))
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        self.tree
            .remove(full_key(tree, key))
            .map(|_| ())
            .map_err(|e| self.lift(e))
    }
}

impl Store for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .data
            .get(full_key(tree, key))
            .map_err(engine)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.data.insert(full_key(tree, key), value).map_err(engine)?;
        Ok(())
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.data.remove(full_key(tree, key)).map_err(engine)?.is_some())
    }

    fn scan_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let full_prefix = full_key(tree, prefix);
        let iter = match after {
            Some(after) => {
                let start = full_key(tree, after);
                self.data
                    .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            }
            None => self.data.range(full_prefix.clone()..),
        };
        let mut out = Vec::new();
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(engine)?;
            if !k.starts_with(&full_prefix) {
                break;
            }
            out.push((k[1..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let may_linger = batch.lingers();
        self.commits.commit(batch.into_ops(), may_linger, &|group| {
            self.data.apply_batch(group).map_err(|e| e.to_string())
        })
    }

    fn transaction(&self, f: &dyn Fn(&dyn Txn) -> TxResult) -> Result<(), StoreError> {
        let failure: RefCell<Option<StoreError>> = RefCell::new(None);
        let result = self.data.transaction(|tree| {
            let conflict = Cell::new(false);
            let outcome = f(&SledTxn {
                tree,
                conflict: &conflict,
            });
            if conflict.get() {
                return Err(ConflictableTransactionError::Conflict);
            }
            outcome.map_err(|e| {
                *failure.borrow_mut() = Some(e);
                ConflictableTransactionError::Abort(())
            })
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => Err(failure
                .into_inner()
                .unwrap_or_else(|| StoreError::Aborted("aborted".into()))),
            Err(TransactionError::Storage(e)) => Err(engine(e)),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_conformance_suite() {
        crate::store::conformance::suite(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(&dir.path().join("db"), &SledOptions::default()).unwrap();
            (store, dir)
        });
    }

    #[test]
    fn a_group_that_panics_fails_its_callers_and_the_next_group_goes_through() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let commits = Arc::new(GroupCommit::default());
        let write = |k: &str| vec![(Tree::Scratch, k.as_bytes().to_vec(), Some(b"v".to_vec()))];
        let leader = {
            let commits = Arc::clone(&commits);
            std::thread::spawn(move || {
                commits.commit(write("a"), false, &|_| {
                    // Panic only once another caller waits behind this group.
                    while commits.lock().pending.is_none() {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    panic!("storage engine bug");
                })
            })
        };
        let applied = AtomicUsize::new(0);
        // Whichever call leads first, "b" waits for or follows the panicking group.
        while !commits.lock().applying {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let waiter = commits.commit(write("b"), false, &|_| {
            applied.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert!(leader.join().is_err(), "the leader's own call panicked");
        assert!(waiter.is_ok(), "{waiter:?}");
        assert_eq!(applied.load(Ordering::SeqCst), 1);
        // And nothing is left stuck.
        commits.commit(write("c"), false, &|_| Ok(())).unwrap();
    }

    #[test]
    fn a_stream_of_lingering_batches_is_written_in_fewer_groups() {
        use std::sync::Arc;
        let commits = Arc::new(GroupCommit {
            linger: Duration::from_millis(300),
            ..GroupCommit::default()
        });
        let write = |k: &str| vec![(Tree::Scratch, k.as_bytes().to_vec(), Some(b"v".to_vec()))];
        let groups = Arc::new(Mutex::new(Vec::<usize>::new()));
        let record = |groups: &Arc<Mutex<Vec<usize>>>| {
            let groups = Arc::clone(groups);
            move |group: sled::Batch| {
                // sled's batch shows each insert as `Some(value)`: the number of writes grouped.
                groups
                    .lock()
                    .unwrap()
                    .push(format!("{group:?}").matches("Some").count());
                Ok(())
            }
        };
        // On its own a batch does not wait, lingering or not.
        commits.commit(write("alone"), true, &record(&groups)).unwrap();
        assert_eq!(commits.lock().lingered, 0);
        // Right after it, a lingering batch waits, and one arriving meanwhile joins its group.
        let leader = {
            let (commits, apply) = (Arc::clone(&commits), record(&groups));
            std::thread::spawn(move || commits.commit(write("first"), true, &apply))
        };
        let started = Instant::now();
        while commits.lock().lingered == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the second batch did not linger"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        commits.commit(write("second"), false, &record(&groups)).unwrap();
        leader.join().unwrap().unwrap();
        assert_eq!(*groups.lock().unwrap(), [1, 2]);
        // A batch that may not linger never waits, however busy the store.
        commits.commit(write("third"), false, &record(&groups)).unwrap();
        assert_eq!(commits.lock().lingered, 1);
    }

    #[test]
    fn survives_reopen_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = SledStore::open(&path, &SledOptions::default()).unwrap();
            store.put(Tree::Meta, b"k", b"v").unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(&path, &SledOptions::default()).unwrap();
        assert_eq!(store.get(Tree::Meta, b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_second_open_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let _first = SledStore::open(&path, &SledOptions::default()).unwrap();
        let second = SledStore::open(&path, &SledOptions::default());
        assert!(
            matches!(second, Err(StoreError::Locked { .. })),
            "{:?}",
            second.err()
        );
    }
}
