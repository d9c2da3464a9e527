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
use citadel::store::MemoryStore;
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "common/fleet.rs"]
mod synthetic;
use synthetic::fill;
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
    fill(&store, n, NOW);
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
        b.iter(|| black_box(index.fresh_report(NOW, 30, 30)))
    });
    g.finish();
}

criterion_group!(benches, devices);
criterion_main!(benches);
