//! The schema-version record and the migration hook.
//!
//! A store carries the version of the layout it was written with under `meta/schema_version`.
//! Opening runs, in order, every migration from the stored version up to
//! [`CURRENT_SCHEMA_VERSION`]; a store newer than this binary is refused rather than misread.

use super::{Store, StoreError, Tree};

pub const CURRENT_SCHEMA_VERSION: u32 = 2;
const KEY: &[u8] = b"schema_version";

/// Moves a store from version `from` to `from + 1`.
pub struct Migration {
    pub from: u32,
    pub description: &'static str,
    pub run: fn(&dyn Store) -> Result<(), StoreError>,
}

/// Migrations in order. Version 1 is the first layout.
pub const MIGRATIONS: &[Migration] = &[Migration {
    from: 1,
    description: "list revoked certificates apart from the registry",
    run: crate::scep::registry::list_revocations,
}];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaStatus {
    /// A new, empty store was stamped with the current version.
    Created,
    /// The store was already current.
    Current,
    /// Migrations ran from the given version.
    Migrated { from: u32 },
}

pub fn read_version(store: &dyn Store) -> Result<Option<u32>, StoreError> {
    match store.get(Tree::Meta, KEY)? {
        None => Ok(None),
        Some(bytes) => {
            let arr: [u8; 4] = bytes.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                tree: Tree::Meta.name(),
                key: "schema_version".into(),
                reason: format!("expected 4 bytes, found {}", bytes.len()),
            })?;
            Ok(Some(u32::from_be_bytes(arr)))
        }
    }
}

/// Brings `store` to `target` using `migrations`. Each step writes its new version only
/// after its migration succeeded, so an interrupted upgrade resumes where it stopped.
pub fn migrate(store: &dyn Store, migrations: &[Migration], target: u32) -> Result<SchemaStatus, StoreError> {
    let Some(mut version) = read_version(store)? else {
        store.put(Tree::Meta, KEY, &target.to_be_bytes())?;
        store.flush()?;
        return Ok(SchemaStatus::Created);
    };
    if version > target {
        return Err(StoreError::TooNew {
            found: version,
            supported: target,
        });
    }
    if version == target {
        return Ok(SchemaStatus::Current);
    }
    let from = version;
    while version < target {
        let step = migrations
            .iter()
            .find(|m| m.from == version)
            .ok_or(StoreError::NoMigration { from: version })?;
        tracing::info!(
            from = version,
            to = version + 1,
            what = step.description,
            "migrating store"
        );
        (step.run)(store)?;
        version += 1;
        store.put(Tree::Meta, KEY, &version.to_be_bytes())?;
        store.flush()?;
    }
    Ok(SchemaStatus::Migrated { from })
}

/// Brings a store opened by this binary to the current version.
pub fn migrate_to_current(store: &dyn Store) -> Result<SchemaStatus, StoreError> {
    migrate(store, MIGRATIONS, CURRENT_SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn add_marker(store: &dyn Store) -> Result<(), StoreError> {
        store.put(Tree::Scratch, b"migrated", b"yes")
    }

    const STEPS: &[Migration] = &[
        Migration {
            from: 1,
            description: "add marker",
            run: add_marker,
        },
        Migration {
            from: 2,
            description: "no-op",
            run: |_| Ok(()),
        },
    ];

    #[test]
    fn stamps_a_fresh_store() {
        let store = MemoryStore::new();
        assert_eq!(migrate(&store, STEPS, 3).unwrap(), SchemaStatus::Created);
        assert_eq!(read_version(&store).unwrap(), Some(3));
        assert_eq!(store.get(Tree::Scratch, b"migrated").unwrap(), None);
    }

    #[test]
    fn runs_each_step_in_order() {
        let store = MemoryStore::new();
        migrate(&store, STEPS, 1).unwrap();
        assert_eq!(
            migrate(&store, STEPS, 3).unwrap(),
            SchemaStatus::Migrated { from: 1 }
        );
        assert_eq!(read_version(&store).unwrap(), Some(3));
        assert_eq!(
            store.get(Tree::Scratch, b"migrated").unwrap().as_deref(),
            Some(&b"yes"[..])
        );
        assert_eq!(migrate(&store, STEPS, 3).unwrap(), SchemaStatus::Current);
    }

    #[test]
    fn refuses_a_newer_store_and_a_gap() {
        let store = MemoryStore::new();
        migrate(&store, STEPS, 3).unwrap();
        assert!(matches!(
            migrate(&store, STEPS, 2),
            Err(StoreError::TooNew {
                found: 3,
                supported: 2
            })
        ));
        let gap = MemoryStore::new();
        migrate(&gap, &[], 1).unwrap();
        assert!(matches!(
            migrate(&gap, &[], 2),
            Err(StoreError::NoMigration { from: 1 })
        ));
    }

    #[test]
    fn refuses_a_corrupt_version_record() {
        let store = MemoryStore::new();
        store.put(Tree::Meta, KEY, b"x").unwrap();
        assert!(matches!(read_version(&store), Err(StoreError::Corrupt { .. })));
    }
}
