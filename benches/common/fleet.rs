//! A synthetic fleet for the benchmarks: the device list (`devices`) and the console
//! (`console`) measure over the same devices.

use citadel::inventory::{DeviceInventory, Platform};
use citadel::mdm::enrollment::{DeviceFacts, EnrollmentKind, EnrollmentRecord, EnrollmentStatus};
use citadel::store::{Store, StoreExt, Tree};
use time::OffsetDateTime;

/// Writes `n` enrolled devices with inventories, a plausible mix, seen in the days before `now`.
pub fn fill(store: &dyn Store, n: usize, now: OffsetDateTime) {
    for i in 0..n {
        let (platform, model, product) = [
            (Platform::Ios, "iPhone", "iPhone16,1"),
            (Platform::Ios, "iPhone", "iPhone15,2"),
            (Platform::Ipados, "iPad", "iPad14,3"),
            (Platform::Macos, "MacBook Air", "Mac15,3"),
        ][i % 4];
        let id = format!(
            "{:08X}-{:016X}",
            i as u32 ^ 0x5A5A_5A5A,
            (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        );
        let mut record = EnrollmentRecord::new(
            id.clone(),
            EnrollmentKind::Device,
            format!("{i:064x}"),
            format!("{i:032x}"),
            now - time::Duration::days((i % 400) as i64),
        );
        record.status = EnrollmentStatus::Active;
        record.last_seen_at = now - time::Duration::minutes((i * 7 % 100_000) as i64);
        record.user_short_name = Some(format!("user{}", i % 5000));
        record.facts = DeviceFacts {
            device_name: Some(format!("Ward {} {model} {i}", i % 40)),
            serial_number: Some(format!("C{:010}", i * 7919 % 10_000_000_000)),
            model_name: Some(model.into()),
            product_name: Some(product.into()),
            os_version: Some(["17.6.1", "18.0.1", "18.1", "15.1"][i % 4].into()),
            ..DeviceFacts::default()
        };
        let inventory = DeviceInventory {
            enrollment_id: id.clone(),
            platform,
            passcode_present: Some(i % 23 != 0),
            passcode_compliant: Some(true),
            storage_encrypted: Some(i % 23 != 0),
            is_supervised: Some(i % 3 != 0),
            security_updated_at: Some(now),
            ..DeviceInventory::default()
        };
        store
            .put_record(Tree::Enrollments, id.as_bytes(), &record)
            .unwrap();
        store
            .put_record(Tree::Inventory, id.as_bytes(), &inventory)
            .unwrap();
    }
}
