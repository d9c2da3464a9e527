//! When devices report their inventory: once at their first TokenUpdate, then every interval,
//! each at its own offset within the interval (a hash of its ID) so that a fleet of 100,000
//! reports evenly around the clock instead of all at once.
//!
//! `InventoryDue` holds `due-ms \0 enrollment ID` (scanned in time order);
//! `InventorySchedule` holds each enrollment's current due key so it can be moved.

use plist::{Dictionary, Value};
use time::OffsetDateTime;

use super::{Ownership, Platform};
use crate::store::{Store, StoreError, Tree, WriteBatch};

/// The inventory schedule's settings.
#[derive(Debug, Clone, Copy)]
pub struct InventorySchedule {
    pub interval: time::Duration,
}

impl Default for InventorySchedule {
    fn default() -> Self {
        Self {
            interval: time::Duration::hours(24),
        }
    }
}

/// Priority of inventory commands: below an administrator's default (100), so an action
/// queued by a person is delivered first.
pub const INVENTORY_PRIORITY: u8 = 50;
/// Who the queue records as having created inventory commands.
pub const ACTOR: &str = "citadel:inventory";

/// DeviceInformation queries for every Apple platform.
const COMMON_QUERIES: &[&str] = &[
    "UDID",
    "DeviceName",
    "OSVersion",
    "BuildVersion",
    "SupplementalBuildVersion",
    "ModelName",
    "Model",
    "ModelNumber",
    "ProductName",
    "SerialNumber",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "BatteryLevel",
    "IsSupervised",
    "IsActivationLockEnabled",
    "WiFiMAC",
    "BluetoothMAC",
    "AwaitingConfiguration",
];

/// iOS / iPadOS only (from Apple's schema: `supportedOS`).
const IOS_QUERIES: &[&str] = &[
    "IMEI",
    "MEID",
    "ICCID",
    "CellularTechnology",
    "CurrentCarrierNetwork",
    "SubscriberCarrierNetwork",
    "IsRoaming",
    "DataRoamingEnabled",
    "VoiceRoamingEnabled",
    "PersonalHotspotEnabled",
    "IsDeviceLocatorServiceEnabled",
    "IsMDMLostModeEnabled",
    "IsCloudBackupEnabled",
    "LastCloudBackupDate",
    "TimeZone",
];

/// Corporate iOS devices only: the phone number is never asked of a personal device.
const IOS_CORPORATE_QUERIES: &[&str] = &["PhoneNumber"];

/// macOS only.
const MACOS_QUERIES: &[&str] = &[
    "EthernetMAC",
    "IsAppleSilicon",
    "SystemIntegrityProtectionEnabled",
    "HostName",
    "LocalHostName",
];

/// Keys Apple forbids for User Enrollment (the device would refuse the whole query).
const USER_ENROLLMENT_FORBIDDEN: &[&str] = &[
    "UDID",
    "SerialNumber",
    "IMEI",
    "MEID",
    "ICCID",
    "WiFiMAC",
    "BluetoothMAC",
    "IsActivationLockEnabled",
    "CurrentCarrierNetwork",
    "SubscriberCarrierNetwork",
    "IsRoaming",
    "DataRoamingEnabled",
    "VoiceRoamingEnabled",
    "PersonalHotspotEnabled",
    "IsMDMLostModeEnabled",
    "IsCloudBackupEnabled",
    "LastCloudBackupDate",
    "AwaitingConfiguration",
    "PhoneNumber",
];

/// The DeviceInformation queries for a device of `platform` and `ownership`.
pub fn queries(platform: Platform, ownership: Ownership, user_enrollment: bool) -> Vec<&'static str> {
    let mut q: Vec<&'static str> = COMMON_QUERIES.to_vec();
    let ios = matches!(platform, Platform::Ios | Platform::Ipados | Platform::Unknown);
    let mac = matches!(platform, Platform::Macos | Platform::Unknown);
    if ios {
        q.extend_from_slice(IOS_QUERIES);
        if ownership == Ownership::Corporate {
            q.extend_from_slice(IOS_CORPORATE_QUERIES);
        }
    }
    if mac {
        q.extend_from_slice(MACOS_QUERIES);
    }
    if user_enrollment {
        q.retain(|k| !USER_ENROLLMENT_FORBIDDEN.contains(k));
    }
    q
}

/// The inventory commands (the `Command` dictionaries) for one device.
pub fn commands(platform: Platform, ownership: Ownership, user_enrollment: bool) -> Vec<Dictionary> {
    let mut out = Vec::with_capacity(5);
    let mut info = Dictionary::new();
    info.insert("RequestType".into(), Value::String("DeviceInformation".into()));
    info.insert(
        "Queries".into(),
        Value::Array(
            queries(platform, ownership, user_enrollment)
                .into_iter()
                .map(|k| Value::String(k.into()))
                .collect(),
        ),
    );
    out.push(info);
    let simple = |request_type: &str| {
        let mut d = Dictionary::new();
        d.insert("RequestType".into(), Value::String(request_type.into()));
        d
    };
    out.push(simple("SecurityInfo"));
    let mut apps = simple("InstalledApplicationList");
    if ownership == Ownership::Personal {
        // Managed apps only: what the organisation installed, nothing of the owner's.
        apps.insert("ManagedAppsOnly".into(), Value::Boolean(true));
    }
    out.push(apps);
    if ownership == Ownership::Corporate {
        out.push(simple("ManagedApplicationList"));
    }
    out.push(simple("ProfileList"));
    out.push(simple("CertificateList"));
    out
}

/// Where in each interval this enrollment reports: a stable hash of its ID.
pub fn offset(enrollment: &str, interval: time::Duration) -> time::Duration {
    let digest = citadel_certs::sha256(enrollment.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let span = u64::try_from(interval.whole_seconds()).unwrap_or(1).max(1);
    time::Duration::seconds(i64::try_from(u64::from_be_bytes(first) % span).unwrap_or(0))
}

/// The next due time strictly after `now`: the enrollment's offset in the interval grid.
pub fn next_due(enrollment: &str, interval: time::Duration, now: OffsetDateTime) -> OffsetDateTime {
    let span = interval.whole_seconds().max(1);
    let off = offset(enrollment, interval).whole_seconds();
    let t = now.unix_timestamp();
    let base = t - (t - off).rem_euclid(span);
    let due = if base > t { base } else { base + span };
    OffsetDateTime::from_unix_timestamp(due).unwrap_or(now + interval)
}

fn millis(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn due_key(due_ms: u64, enrollment: &str) -> Vec<u8> {
    format!("{due_ms:020}\0{enrollment}").into_bytes()
}

/// Puts `enrollment` on the schedule at `due`, replacing where it was.
pub fn schedule_at(store: &dyn Store, enrollment: &str, due: OffsetDateTime) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    if let Some(old) = store.get(Tree::InventorySchedule, enrollment.as_bytes())? {
        batch.delete(Tree::InventoryDue, old);
    }
    let key = due_key(millis(due), enrollment);
    batch.put(Tree::InventoryDue, key.clone(), Vec::new());
    batch.put(Tree::InventorySchedule, enrollment.as_bytes().to_vec(), key);
    store.apply(batch)
}

pub fn unschedule(store: &dyn Store, enrollment: &str) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    if let Some(old) = store.get(Tree::InventorySchedule, enrollment.as_bytes())? {
        batch.delete(Tree::InventoryDue, old);
    }
    batch.delete(Tree::InventorySchedule, enrollment.as_bytes().to_vec());
    store.apply(batch)
}

/// When `enrollment` next reports, if it is scheduled.
pub fn due_at(store: &dyn Store, enrollment: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    let Some(key) = store.get(Tree::InventorySchedule, enrollment.as_bytes())? else {
        return Ok(None);
    };
    let ms = std::str::from_utf8(&key[..key.len().min(20)])
        .ok()
        .and_then(|s| s.parse::<i128>().ok());
    Ok(ms.and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()))
}

/// Up to `max` enrollments due at or before `now`, earliest first.
pub fn due(store: &dyn Store, now: OffsetDateTime, max: usize) -> Result<Vec<String>, StoreError> {
    let limit = due_key(millis(now), "\u{7f}");
    let mut out = Vec::new();
    for (k, _) in store.scan_prefix(Tree::InventoryDue, b"", None, max)? {
        if k > limit {
            break;
        }
        if let Some(pos) = k.iter().position(|b| *b == 0) {
            out.push(String::from_utf8_lossy(&k[pos + 1..]).into_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-28 12:00 UTC);

    #[test]
    fn query_sets_follow_platform_and_privacy() {
        let phone = queries(Platform::Ios, Ownership::Corporate, false);
        assert!(phone.contains(&"PhoneNumber") && phone.contains(&"IMEI"));
        assert!(!phone.contains(&"IsAppleSilicon"));
        let personal = queries(Platform::Ios, Ownership::Personal, false);
        assert!(!personal.contains(&"PhoneNumber"));
        let byod = queries(Platform::Ios, Ownership::Personal, true);
        assert!(!byod.contains(&"SerialNumber") && !byod.contains(&"UDID"));
        assert!(byod.contains(&"OSVersion"));
        let mac = queries(Platform::Macos, Ownership::Corporate, false);
        assert!(mac.contains(&"SystemIntegrityProtectionEnabled") && !mac.contains(&"IMEI"));

        let personal_cmds = commands(Platform::Ios, Ownership::Personal, true);
        let apps = personal_cmds
            .iter()
            .find(|c| c.get("RequestType").and_then(Value::as_string) == Some("InstalledApplicationList"))
            .unwrap();
        assert_eq!(apps.get("ManagedAppsOnly"), Some(&Value::Boolean(true)));
        for c in commands(Platform::Macos, Ownership::Corporate, false) {
            crate::mdm::schema::validate(&c).unwrap();
        }
        for c in personal_cmds {
            crate::mdm::schema::validate(&c).unwrap();
        }
    }

    #[test]
    fn offsets_spread_a_fleet_over_the_interval() {
        let day = time::Duration::hours(24);
        let mut per_hour = [0u32; 24];
        for i in 0..24_000 {
            let off = offset(&format!("device-{i}"), day);
            per_hour[usize::try_from(off.whole_hours()).unwrap()] += 1;
        }
        // 1,000 per hour on average; a fair hash keeps every hour within 15 %.
        assert!(per_hour.iter().all(|n| (850..=1150).contains(n)), "{per_hour:?}");

        let due = next_due("device-1", day, NOW);
        assert!(due > NOW && due <= NOW + day);
        assert_eq!(next_due("device-1", day, due), due + day, "the grid is stable");
    }

    #[test]
    fn due_devices_come_out_in_time_order_and_move() {
        let store = MemoryStore::new();
        schedule_at(&store, "b", NOW + time::Duration::minutes(5)).unwrap();
        schedule_at(&store, "a", NOW - time::Duration::minutes(5)).unwrap();
        schedule_at(&store, "c", NOW).unwrap();
        assert_eq!(
            due(&store, NOW, 10).unwrap(),
            vec!["a".to_owned(), "c".to_owned()]
        );
        schedule_at(&store, "a", NOW + time::Duration::hours(1)).unwrap();
        assert_eq!(due(&store, NOW, 10).unwrap(), vec!["c".to_owned()]);
        assert_eq!(due_at(&store, "a").unwrap(), Some(NOW + time::Duration::hours(1)));
        unschedule(&store, "c").unwrap();
        assert!(due(&store, NOW, 10).unwrap().is_empty());
        assert_eq!(due_at(&store, "c").unwrap(), None);
    }
}
