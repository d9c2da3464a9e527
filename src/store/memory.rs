//! An in-memory backend. It keeps the [`Store`] contract honest (the conformance suite runs
//! against it too) and serves tests that need no disk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Entries, StagedTxn, Store, StoreError, Tree, TxResult, Txn, WriteBatch};

type Map = BTreeMap<(Tree, Vec<u8>), Vec<u8>>;

#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<Map>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Map>, StoreError> {
        self.map
            .lock()
            .map_err(|_| StoreError::Engine("memory store lock poisoned".into()))
    }
}

impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.get(&(tree, key.to_vec())).cloned())
    }

    fn put(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.lock()?.insert((tree, key.to_vec()), value.to_vec());
        Ok(())
    }

    fn delete(&self, tree: Tree, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove(&(tree, key.to_vec())).is_some())
    }

    fn scan_prefix(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let map = self.lock()?;
        let start = (tree, prefix.to_vec());
        Ok(map
            .range(start..)
            .take_while(|((t, k), _)| *t == tree && k.starts_with(prefix))
            .filter(|((_, k), _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut map = self.lock()?;
        for (tree, key, value) in batch.into_ops() {
            match value {
                Some(v) => map.insert((tree, key), v),
                None => map.remove(&(tree, key)),
            };
        }
        Ok(())
    }

    fn transaction(&self, f: &dyn Fn(&dyn Txn) -> TxResult) -> Result<(), StoreError> {
        // Holding the lock for the whole closure serialises transactions: isolation for free.
        let mut map = self.lock()?;
        let staged = {
            let base = &*map;
            let read = |tree: Tree, key: &[u8]| Ok(base.get(&(tree, key.to_vec())).cloned());
            let txn = StagedTxn::new(&read);
            f(&txn)?;
            txn.into_staged()?
        };
        for (k, v) in staged {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_the_conformance_suite() {
        crate::store::conformance::suite(|| (super::MemoryStore::new(), ()));
    }
}
