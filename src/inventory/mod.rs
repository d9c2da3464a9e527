//! Inventory: what every device is and where it stands, kept as typed records built from the
//! results of the inventory commands (DeviceInformation, SecurityInfo, the app, profile and
//! certificate lists), with a history of changes and a schedule that spreads the fleet's
//! reports evenly over the interval.
//!
//! Records are written only from results to commands the server queued for that enrollment
//! (the queue checks that), so a device cannot push unsolicited inventory. Privacy rules per
//! ownership are enforced here, at collection, not in the API: what may not be kept is never
//! stored (see PRIVACY.md).

pub mod index;
pub mod parse;
pub mod record;
pub mod schedule;

use plist::{Dictionary, Value};
use serde::{Serialize, de::DeserializeOwned};
use time::OffsetDateTime;

pub use record::{
    DeviceInventory, InstalledApp, InstalledCertificate, InstalledProfile, InventoryChange, LocationFix,
    Ownership, Platform,
};

use crate::mdm::enrollment::{EnrollmentKind, EnrollmentRecord};
use crate::store::{Store, StoreError, StoreExt, Tree, decode, encode};

/// The per-device lists kept beside the inventory record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Apps,
    Profiles,
    Certificates,
}

impl List {
    fn key(self, enrollment: &str) -> Vec<u8> {
        let name = match self {
            Self::Apps => "apps",
            Self::Profiles => "profiles",
            Self::Certificates => "certificates",
        };
        format!("{enrollment}\0{name}").into_bytes()
    }
}

/// The commands whose acknowledged results feed the inventory.
pub const INVENTORY_REQUEST_TYPES: &[&str] = &[
    "DeviceInformation",
    "SecurityInfo",
    "InstalledApplicationList",
    "ManagedApplicationList",
    "ProfileList",
    "CertificateList",
    // Lost mode changes what the record says and whether locations are kept.
    "EnableLostMode",
    "DisableLostMode",
    "DeviceLocation",
];

/// The keys of a DeviceLocation answer that say where the device is.
pub const LOCATION_KEYS: &[&str] = &[
    "Latitude",
    "Longitude",
    "HorizontalAccuracy",
    "VerticalAccuracy",
    "Altitude",
    "Speed",
    "Course",
];

/// Where a device in lost mode has been: its fixes and its stored answers to DeviceLocation.
#[derive(Default)]
struct LostModeTrail {
    fixes: Vec<Vec<u8>>,
    answers: Vec<Vec<u8>>,
}

impl LostModeTrail {
    /// Read before the transaction that forgets them.
    fn read(store: &dyn Store, enrollment: &str) -> Result<Self, StoreError> {
        Ok(Self {
            fixes: crate::store::scan_all(store, Tree::Locations, format!("{enrollment}\0").as_bytes())?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
            answers: crate::mdm::queue::location_answers(store, enrollment)?,
        })
    }

    fn forget(&self, txn: &dyn crate::store::Txn) -> Result<(), StoreError> {
        for k in &self.fixes {
            txn.delete(Tree::Locations, k)?;
        }
        for k in &self.answers {
            crate::mdm::queue::strip_location(txn, k)?;
        }
        Ok(())
    }
}

/// Serialises, within this process, the read-modify-writes of one device's inventory records
/// (an answer ingested, lost mode ended, personal-device privacy applied): 64 locks, a device
/// always on the same one.
fn device_lock(enrollment: &str) -> std::sync::MutexGuard<'static, ()> {
    use std::hash::{Hash, Hasher};
    static LOCKS: [std::sync::Mutex<()>; 64] = [const { std::sync::Mutex::new(()) }; 64];
    let mut h = std::collections::hash_map::DefaultHasher::new();
    enrollment.hash(&mut h);
    let lock = &LOCKS[(h.finish() % 64) as usize];
    // The guarded data is the store, which a panic elsewhere does not leave half-written.
    lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ends lost mode in the record (the device left management, or became personal) and forgets
/// where it was, in one transaction.
pub fn end_lost_mode(store: &dyn Store, enrollment: &str) -> Result<(), StoreError> {
    let _device = device_lock(enrollment);
    let trail = LostModeTrail::read(store, enrollment)?;
    let key = enrollment.as_bytes();
    store.transaction(&|txn| {
        if let Some(bytes) = txn.get(Tree::Inventory, key)? {
            let mut inv: DeviceInventory = decode(Tree::Inventory, key, &bytes)?;
            if inv.lost_mode_enabled == Some(true) {
                inv.lost_mode_enabled = Some(false);
                put_json(txn, Tree::Inventory, key, &inv)?;
            }
        }
        trail.forget(txn)
    })
}

/// The locations a device reported during its current lost-mode period, newest first.
pub fn locations(store: &dyn Store, enrollment: &str, limit: usize) -> Result<Vec<LocationFix>, StoreError> {
    let prefix = format!("{enrollment}\0").into_bytes();
    let entries = crate::store::scan_all(store, Tree::Locations, &prefix)?;
    entries
        .iter()
        .rev()
        .take(limit)
        .map(|(k, v)| decode(Tree::Locations, k, v))
        .collect()
}

fn location_from(result: &Dictionary, now: OffsetDateTime) -> Option<LocationFix> {
    let real = |k: &str| match result.get(k)? {
        Value::Real(r) if r.is_finite() => Some(*r),
        Value::Integer(i) => i.as_signed().map(|i| i as f64),
        _ => None,
    };
    let latitude = real("Latitude").filter(|l| (-90.0..=90.0).contains(l))?;
    let longitude = real("Longitude").filter(|l| (-180.0..=180.0).contains(l))?;
    Some(LocationFix {
        at: now,
        latitude,
        longitude,
        horizontal_accuracy: real("HorizontalAccuracy"),
        altitude: real("Altitude"),
        speed: real("Speed"),
        timestamp: result
            .get("Timestamp")
            .and_then(Value::as_string)
            .map(|s| s.chars().take(64).collect()),
    })
}

/// Most history entries kept per device; older ones are dropped first.
pub const MAX_HISTORY: usize = 500;

/// The ownership of an enrollment: an administrator's setting when there is one, otherwise
/// personal for User Enrollment (BYOD by construction) and corporate for everything else.
pub fn ownership(store: &dyn Store, record: &EnrollmentRecord) -> Result<Ownership, StoreError> {
    let device_id = record.parent.as_deref().unwrap_or(&record.id);
    if let Some(set) = store.get_record::<Ownership>(Tree::Ownership, device_id.as_bytes())? {
        return Ok(set);
    }
    Ok(match record.kind {
        EnrollmentKind::UserEnrollment | EnrollmentKind::UserEnrollmentUser => Ownership::Personal,
        _ => Ownership::Corporate,
    })
}

/// Records an administrator's ownership decision for a device.
pub fn set_ownership(store: &dyn Store, device_id: &str, ownership: Ownership) -> Result<(), StoreError> {
    store.put_record(Tree::Ownership, device_id.as_bytes(), &ownership)
}

pub fn get(store: &dyn Store, enrollment: &str) -> Result<Option<DeviceInventory>, StoreError> {
    store.get_record(Tree::Inventory, enrollment.as_bytes())
}

pub fn list<T: DeserializeOwned>(
    store: &dyn Store,
    enrollment: &str,
    list: List,
) -> Result<Vec<T>, StoreError> {
    Ok(store
        .get_record::<Vec<T>>(Tree::InventoryLists, &list.key(enrollment))?
        .unwrap_or_default())
}

/// The device's history, newest first, at most `limit` entries.
pub fn history(
    store: &dyn Store,
    enrollment: &str,
    limit: usize,
) -> Result<Vec<InventoryChange>, StoreError> {
    let prefix = format!("{enrollment}\0").into_bytes();
    let entries = crate::store::scan_all(store, Tree::InventoryHistory, &prefix)?;
    let mut out = Vec::with_capacity(entries.len().min(limit));
    for (k, v) in entries.iter().rev().take(limit) {
        out.push(decode(Tree::InventoryHistory, k, v)?);
    }
    Ok(out)
}

/// The platform of an enrollment: the reported one, else read from the model it gave at
/// Authenticate.
pub fn platform(record: &EnrollmentRecord, inv: Option<&DeviceInventory>) -> Platform {
    match inv.map(|i| i.platform) {
        Some(p) if p != Platform::Unknown => p,
        _ => {
            let f = &record.facts;
            Platform::from_model(&[
                f.product_name.as_deref(),
                f.model.as_deref(),
                f.model_name.as_deref(),
            ])
        }
    }
}

/// A fresh record for an enrollment, seeded with what it said at Authenticate.
fn seeded(record: &EnrollmentRecord) -> DeviceInventory {
    let f = &record.facts;
    DeviceInventory {
        enrollment_id: record.id.clone(),
        platform: platform(record, None),
        device_name: f.device_name.clone(),
        model: f.model.clone(),
        model_name: f.model_name.clone(),
        product_name: f.product_name.clone(),
        serial_number: f.serial_number.clone(),
        udid: (record.kind == EnrollmentKind::Device).then(|| record.id.clone()),
        imei: f.imei.clone(),
        meid: f.meid.clone(),
        os_version: f.os_version.clone(),
        build_version: f.build_version.clone(),
        ..DeviceInventory::default()
    }
}

/// What ingesting a result did.
#[derive(Debug, PartialEq)]
pub enum Ingested {
    /// The record (or a list) changed; `changes` entries went into the history. Carries the
    /// record as written and the ownership it was judged by, so callers need not read them back.
    Updated {
        changes: usize,
        inventory: Box<DeviceInventory>,
        ownership: Ownership,
    },
    /// Not an inventory result, or refused by privacy rules.
    Ignored,
}

fn history_key(enrollment: &str, at: OffsetDateTime, field: &str) -> Vec<u8> {
    let micros = u64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(0);
    format!("{enrollment}\0{micros:020}\0{field}").into_bytes()
}

fn put_json<T: Serialize>(
    txn: &dyn crate::store::Txn,
    tree: Tree,
    key: &[u8],
    value: &T,
) -> Result<(), StoreError> {
    txn.put(tree, key, &encode(value)?)
}

/// Folds an acknowledged result of `request_type` (queued as `command`) into the device's
/// inventory, in one batch with its history entries and with `first` (the answer's own record):
/// one write per answer. `first` is written whatever becomes of the inventory — alone if the
/// inventory cannot be updated; the outer `Err` says that it could not be written, the inner
/// result is the inventory's.
pub fn ingest(
    store: &dyn Store,
    first: &crate::store::WriteBatch,
    record: &EnrollmentRecord,
    request_type: &str,
    command: Option<&Dictionary>,
    result: &Dictionary,
    now: OffsetDateTime,
) -> Result<Result<Ingested, StoreError>, StoreError> {
    // User channels report about their device: fold into the device's record.
    if record.kind.is_user_channel() {
        store.apply(first.clone())?;
        return Ok(Ok(Ingested::Ignored));
    }
    match update(store, first, record, request_type, command, result, now) {
        // Written, `first` with it.
        Ok(outcome) => {
            if matches!(outcome, Ingested::Updated { changes, .. } if changes > 0)
                && let Err(e) = trim_history(store, &record.id)
            {
                return Ok(Err(e));
            }
            Ok(Ok(outcome))
        }
        // Nothing was written: the answer goes alone.
        Err(e) => {
            store.apply(first.clone())?;
            Ok(Err(e))
        }
    }
}

/// The inventory part of [`ingest`], written with `first`; an `Err` means nothing was written.
fn update(
    store: &dyn Store,
    first: &crate::store::WriteBatch,
    record: &EnrollmentRecord,
    request_type: &str,
    command: Option<&Dictionary>,
    result: &Dictionary,
    now: OffsetDateTime,
) -> Result<Ingested, StoreError> {
    let id = record.id.as_str();
    let key = id.as_bytes();
    let outcome = std::cell::Cell::new(Ingested::Ignored);
    // Everything that decides what may be kept is read under the lock: an ownership change or
    // lost mode's end waits for it (`drop_forbidden`, `end_lost_mode`).
    let device = device_lock(id);
    let ownership = ownership(store, record)?;
    // Lost mode ends with DisableLostMode, or when a device in lost mode reports it off.
    let ends_lost_mode = request_type == "DisableLostMode"
        || (request_type == "DeviceInformation"
            && get(store, id)?.is_some_and(|inv| inv.lost_mode_enabled == Some(true)));
    let trail = if ends_lost_mode {
        LostModeTrail::read(store, id)?
    } else {
        LostModeTrail::default()
    };
    let fold = |txn: &dyn crate::store::Txn| -> crate::store::TxResult {
        let mut inv = match txn.get(Tree::Inventory, key)? {
            Some(bytes) => decode::<DeviceInventory>(Tree::Inventory, key, &bytes)?,
            None => seeded(record),
        };
        let before = parse::tracked_fields(&inv);
        let had_report = inv.information_updated_at.is_some() || inv.security_updated_at.is_some();
        match request_type {
            "DeviceInformation" => {
                let Some(q) = result.get("QueryResponses").and_then(Value::as_dictionary) else {
                    outcome.set(Ingested::Ignored);
                    return Ok(());
                };
                parse::apply_device_information(&mut inv, q, ownership, now);
                if inv.platform == Platform::Unknown {
                    inv.platform = Platform::from_model(&[inv.product_name.as_deref(), inv.model.as_deref()]);
                }
            }
            "SecurityInfo" => {
                let Some(s) = result.get("SecurityInfo").and_then(Value::as_dictionary) else {
                    outcome.set(Ingested::Ignored);
                    return Ok(());
                };
                parse::apply_security_info(&mut inv, s, now);
            }
            "InstalledApplicationList" => {
                let managed_only = command
                    .and_then(|c| c.get("ManagedAppsOnly"))
                    .and_then(Value::as_boolean)
                    .unwrap_or(false);
                if ownership == Ownership::Personal && !managed_only {
                    // Never keep a personal device's full app inventory, whoever asked.
                    tracing::warn!(enrollment = %id, "full app list from a personal device discarded");
                    outcome.set(Ingested::Ignored);
                    return Ok(());
                }
                let apps = parse::installed_apps(result, managed_only);
                put_json(txn, Tree::InventoryLists, &List::Apps.key(id), &apps)?;
                inv.apps_updated_at = Some(now);
            }
            "ManagedApplicationList" => {
                let managed = parse::managed_app_ids(result);
                let lkey = List::Apps.key(id);
                let mut apps: Vec<InstalledApp> = match txn.get(Tree::InventoryLists, &lkey)? {
                    Some(bytes) => decode(Tree::InventoryLists, &lkey, &bytes)?,
                    None => Vec::new(),
                };
                for app in &mut apps {
                    app.managed = managed.contains(&app.bundle_id);
                }
                put_json(txn, Tree::InventoryLists, &lkey, &apps)?;
            }
            "EnableLostMode" => inv.lost_mode_enabled = Some(true),
            "DisableLostMode" => inv.lost_mode_enabled = Some(false),
            "DeviceLocation" => {
                if ownership == Ownership::Personal || inv.lost_mode_enabled != Some(true) {
                    tracing::warn!(enrollment = %id, "location outside lost mode or from a personal device discarded");
                    outcome.set(Ingested::Ignored);
                    return Ok(());
                }
                let Some(fix) = location_from(result, now) else {
                    outcome.set(Ingested::Ignored);
                    return Ok(());
                };
                let micros = u64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(0);
                put_json(
                    txn,
                    Tree::Locations,
                    format!("{id}\0{micros:020}").as_bytes(),
                    &fix,
                )?;
            }
            "ProfileList" => {
                put_json(
                    txn,
                    Tree::InventoryLists,
                    &List::Profiles.key(id),
                    &parse::profiles(result),
                )?;
                inv.profiles_updated_at = Some(now);
            }
            "CertificateList" => {
                put_json(
                    txn,
                    Tree::InventoryLists,
                    &List::Certificates.key(id),
                    &parse::certificates(result),
                )?;
                inv.certificates_updated_at = Some(now);
            }
            _ => {
                outcome.set(Ingested::Ignored);
                return Ok(());
            }
        }
        let mut n = 0;
        if had_report {
            for ((field, from), (_, to)) in before.into_iter().zip(parse::tracked_fields(&inv)) {
                if from.is_some() && from != to {
                    let change = InventoryChange {
                        at: now,
                        field: field.to_owned(),
                        from,
                        to,
                    };
                    put_json(txn, Tree::InventoryHistory, &history_key(id, now, field), &change)?;
                    n += 1;
                }
            }
        }
        if inv.lost_mode_enabled != Some(true) {
            // Lost mode is over: so is the reason to keep where the device was.
            trail.forget(txn)?;
        }
        put_json(txn, Tree::Inventory, key, &inv)?;
        outcome.set(Ingested::Updated {
            changes: n,
            inventory: Box::new(inv),
            ownership,
        });
        Ok(())
    };
    if trail.fixes.is_empty() && trail.answers.is_empty() {
        // One batch, not a transaction: a device reports one answer at a time and the lock keeps
        // this process's other inventory writers out; a transaction would lock the whole store.
        crate::store::write_buffered(store, first, &fold)?;
    } else {
        // Ending lost mode rewrites stored answers that pruning may delete meanwhile: only a
        // transaction keeps a pruned one from being written back.
        store.transaction(&|txn| {
            first.write_to(txn)?;
            fold(txn)
        })?;
    }
    drop(device);
    Ok(outcome.replace(Ingested::Ignored))
}

fn trim_history(store: &dyn Store, enrollment: &str) -> Result<(), StoreError> {
    let prefix = format!("{enrollment}\0").into_bytes();
    let keys = store.scan_prefix(Tree::InventoryHistory, &prefix, None, MAX_HISTORY * 2)?;
    if keys.len() > MAX_HISTORY {
        let mut batch = crate::store::WriteBatch::default();
        for (k, _) in keys.iter().take(keys.len() - MAX_HISTORY) {
            batch.delete(Tree::InventoryHistory, k.clone());
        }
        store.apply(batch)?;
    }
    Ok(())
}

/// Removes what may not be kept for a personal device: its phone number and every app that
/// the organisation did not install.
pub fn drop_forbidden(store: &dyn Store, enrollment: &str) -> Result<(), StoreError> {
    // A personal device is never located.
    end_lost_mode(store, enrollment)?;
    let key = enrollment.as_bytes();
    let apps_key = List::Apps.key(enrollment);
    let device = device_lock(enrollment);
    store.transaction(&|txn| {
        if let Some(bytes) = txn.get(Tree::Inventory, key)? {
            let mut inv: DeviceInventory = decode(Tree::Inventory, key, &bytes)?;
            parse::enforce_privacy(&mut inv, Ownership::Personal);
            put_json(txn, Tree::Inventory, key, &inv)?;
        }
        if let Some(bytes) = txn.get(Tree::InventoryLists, &apps_key)? {
            let mut apps: Vec<InstalledApp> = decode(Tree::InventoryLists, &apps_key, &bytes)?;
            apps.retain(|a| a.managed);
            put_json(txn, Tree::InventoryLists, &apps_key, &apps)?;
        }
        Ok(())
    })?;
    drop(device);
    // History may hold the old phone number.
    let prefix = format!("{enrollment}\0").into_bytes();
    let mut batch = crate::store::WriteBatch::default();
    for (k, v) in crate::store::scan_all(store, Tree::InventoryHistory, &prefix)? {
        let change: InventoryChange = decode(Tree::InventoryHistory, &k, &v)?;
        if change.field == "phone_number" {
            batch.delete(Tree::InventoryHistory, k);
        }
    }
    store.apply(batch)
}

/// Removes everything inventory knows about an enrollment (after an erase or unenrolment the
/// record stays until the device is deleted; this is for deletion).
pub fn forget(store: &dyn Store, enrollment: &str) -> Result<(), StoreError> {
    let mut batch = crate::store::WriteBatch::default();
    batch.delete(Tree::Inventory, enrollment.as_bytes().to_vec());
    for l in [List::Apps, List::Profiles, List::Certificates] {
        batch.delete(Tree::InventoryLists, l.key(enrollment));
    }
    for (k, _) in crate::store::scan_all(
        store,
        Tree::InventoryHistory,
        format!("{enrollment}\0").as_bytes(),
    )? {
        batch.delete(Tree::InventoryHistory, k);
    }
    store.apply(batch)?;
    schedule::unschedule(store, enrollment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, WriteBatch};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 12:00 UTC);

    fn device_information(name: &str) -> Dictionary {
        let mut q = Dictionary::new();
        q.insert("DeviceName".into(), Value::String(name.into()));
        q.insert("OSVersion".into(), Value::String("18.1".into()));
        let mut result = Dictionary::new();
        result.insert("QueryResponses".into(), Value::Dictionary(q));
        result
    }

    fn answer(key: &str) -> WriteBatch {
        let mut batch = WriteBatch::default();
        batch.put(Tree::Scratch, key.as_bytes().to_vec(), b"answered".to_vec());
        batch
    }

    #[test]
    fn an_answer_is_written_with_what_it_changes_and_survives_an_inventory_that_cannot_be() {
        let store = MemoryStore::new();
        let record = EnrollmentRecord::new(
            "DEV-1".into(),
            EnrollmentKind::Device,
            "ab".repeat(32),
            "01".into(),
            NOW,
        );
        let ingested = ingest(
            &store,
            &answer("first"),
            &record,
            "DeviceInformation",
            None,
            &device_information("Ward 17 iPad"),
            NOW,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(ingested, Ingested::Updated { .. }));
        assert!(store.get(Tree::Scratch, b"first").unwrap().is_some());
        let inv = get(&store, "DEV-1").unwrap().unwrap();
        assert_eq!(inv.device_name.as_deref(), Some("Ward 17 iPad"));

        // A stored inventory that cannot be read: the inventory is left as it is and reported,
        // the answer is stored all the same.
        store.put(Tree::Inventory, b"DEV-1", b"not json").unwrap();
        let inventory = ingest(
            &store,
            &answer("second"),
            &record,
            "DeviceInformation",
            None,
            &device_information("Ward 18 iPad"),
            NOW,
        )
        .unwrap();
        assert!(
            matches!(inventory, Err(StoreError::Corrupt { .. })),
            "{inventory:?}"
        );
        assert!(store.get(Tree::Scratch, b"second").unwrap().is_some());
        assert_eq!(
            store.get(Tree::Inventory, b"DEV-1").unwrap().as_deref(),
            Some(&b"not json"[..])
        );

        // An answer whose type is not inventory is still stored.
        store.delete(Tree::Inventory, b"DEV-1").unwrap();
        let ignored = ingest(
            &store,
            &answer("third"),
            &record,
            "RestartDevice",
            None,
            &Dictionary::new(),
            NOW,
        )
        .unwrap()
        .unwrap();
        assert!(matches!(ignored, Ingested::Ignored));
        assert!(store.get(Tree::Scratch, b"third").unwrap().is_some());
    }
}
