//! The device list over 100,000 devices: building the in-memory index from the store, and the
//! queries the console and the API run (default page, search, filters with a sort, the fleet
//! report). Target (issue 7): every list answer under 50 ms.
//!
//! `cargo bench --bench devices` (add `-- --quick` for a fast pass). `DEVICES=n` changes the
//! fleet size.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use citadel::inventory::index::{Compliance, DeviceFilter, DeviceIndex};
use citadel::inventory::{DeviceInventory, Platform};
use citadel::mdm::enrollment::{DeviceFacts, EnrollmentKind, EnrollmentRecord, EnrollmentStatus};
use citadel::store::{MemoryStore, StoreExt, Tree};
use criterion::{Criterion, criterion_group, criterion_main};
use time::OffsetDateTime;

const NOW: OffsetDateTime = time::macros::datetime!(2026-11-28 12:00 UTC);

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A store holding `n` enrolled devices with inventories, a plausible mix.
fn fleet(n: usize) -> MemoryStore {
    let store = MemoryStore::new();
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
            NOW - time::Duration::days((i % 400) as i64),
        );
        record.status = EnrollmentStatus::Active;
        record.last_seen_at = NOW - time::Duration::minutes((i * 7 % 100_000) as i64);
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
            security_updated_at: Some(NOW),
            ..DeviceInventory::default()
        };
        store
            .put_record(Tree::Enrollments, id.as_bytes(), &record)
            .unwrap();
        store
            .put_record(Tree::Inventory, id.as_bytes(), &inventory)
            .unwrap();
    }
    store
}

fn devices(c: &mut Criterion) {
    let n: usize = std::env::var("DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let store = fleet(n);
    let before = rss_kib();
    let started = Instant::now();
    let index = DeviceIndex::load(&store).unwrap();
    eprintln!(
        "index of {} devices built in {:.0} ms, {} MiB more resident",
        index.len(),
        started.elapsed().as_secs_f64() * 1000.0,
        rss_kib().saturating_sub(before) / 1024
    );
    let mut g = c.benchmark_group(format!("device list, {n} devices"));
    g.bench_function("first page (100), default order", |b| {
        b.iter(|| {
            black_box(
                index
                    .query(&DeviceFilter::default(), None, None, 0, 100, NOW)
                    .unwrap(),
            )
        })
    });
    let search = DeviceFilter {
        search: Some("ward 17".into()),
        ..DeviceFilter::default()
    };
    g.bench_function("search 'ward 17', first page", |b| {
        b.iter(|| black_box(index.query(&search, None, None, 0, 100, NOW).unwrap()))
    });
    let filtered = DeviceFilter {
        platform: Some("ios,ipados".into()),
        os_below: Some("18.1".into()),
        compliance: Some(Compliance::Compliant),
        supervised: Some(true),
        ..DeviceFilter::default()
    };
    g.bench_function("4 filters, sorted by -last_seen_at, page 10", |b| {
        b.iter(|| {
            black_box(
                index
                    .query(&filtered, Some("-last_seen_at"), None, 900, 100, NOW)
                    .unwrap(),
            )
        })
    });
    g.bench_function("everything sorted by os_version, last page", |b| {
        b.iter(|| {
            black_box(
                index
                    .query(
                        &DeviceFilter::default(),
                        Some("os_version"),
                        None,
                        n - 100,
                        100,
                        NOW,
                    )
                    .unwrap(),
            )
        })
    });
    g.bench_function("fleet report", |b| {
        b.iter(|| black_box(index.report(NOW, 30, 30)))
    });
    g.finish();
}

criterion_group!(benches, devices);
criterion_main!(benches);
