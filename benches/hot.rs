//! Criterion micro-benchmarks of what every device request passes through: plist parse and
//! serialise of check-in, result and command messages, the command queue (push, pop, ack) on
//! the memory and sled stores, and `Mdm-Signature` signing and verification.
//!
//! `cargo bench --bench hot` (add `-- --quick` for a fast pass).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use citadel::mdm::queue::{self, DeliveryStatus, Sequence};
use citadel::sim::device::{Device, Identity, Platform};
use citadel::store::{MemoryStore, SledOptions, SledStore, Store};
use citadel_certs::cms::{DetachedVerifier, verify_detached};
use citadel_certs::scep::client::{DeviceIdentity, DeviceKey};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use plist::{Dictionary, Value};
use time::OffsetDateTime;

fn xml(dict: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, &Value::Dictionary(dict.clone())).unwrap();
    out
}

fn device_information_command() -> Dictionary {
    let mut inner = Dictionary::new();
    inner.insert("RequestType".into(), Value::String("DeviceInformation".into()));
    inner.insert(
        "Queries".into(),
        Value::Array(
            [
                "DeviceName",
                "OSVersion",
                "SerialNumber",
                "Model",
                "BatteryLevel",
                "IMEI",
            ]
            .iter()
            .map(|q| Value::String((*q).into()))
            .collect(),
        ),
    );
    inner
}

fn plists(c: &mut Criterion) {
    let identity = Identity::generate(1, 1, Platform::Iphone);
    let authenticate = xml(&identity.authenticate("com.apple.mgmt.External.bench"));
    let mut full = Dictionary::new();
    full.insert(
        "CommandUUID".into(),
        Value::String("0F3C1F7E-2B5D-4A43-9A57-6B1C2D3E4F50".into()),
    );
    full.insert("Command".into(), Value::Dictionary(device_information_command()));
    let mut device = Device::new(identity, 1, 0.0);
    let result = xml(&device.result_message(&full));

    let mut g = c.benchmark_group("plist");
    g.throughput(Throughput::Bytes(authenticate.len() as u64));
    g.bench_function("parse Authenticate check-in", |b| {
        b.iter(|| plist::from_bytes::<Dictionary>(black_box(&authenticate)).unwrap())
    });
    g.throughput(Throughput::Bytes(result.len() as u64));
    g.bench_function("parse DeviceInformation result", |b| {
        b.iter(|| plist::from_bytes::<Dictionary>(black_box(&result)).unwrap())
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("serialise DeviceInformation command", |b| {
        b.iter(|| xml(black_box(&full)))
    });
    g.finish();
}

fn queue_round_trip(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let tmp = tempfile::tempdir().unwrap();
    let sled: Arc<dyn Store> = Arc::new(
        SledStore::open(
            tmp.path(),
            &SledOptions {
                cache_capacity_bytes: 64 * 1024 * 1024,
                flush_every_ms: 500,
            },
        )
        .unwrap(),
    );
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let command = device_information_command();
    let ack = b"<plist><dict><key>Status</key><string>Acknowledged</string></dict></plist>";
    let mut g = c.benchmark_group("queue");
    for (name, store) in [("memory", memory), ("sled", sled)] {
        let sequence = Sequence::default();
        let target = vec![format!("BENCH-{name}")];
        g.bench_function(format!("enqueue + next + sent + ack ({name})"), |b| {
            b.iter(|| {
                let out =
                    queue::enqueue(store.as_ref(), &sequence, &target, &command, 50, "bench", now).unwrap();
                let (uuid, _plist) = queue::next(store.as_ref(), &target[0], false).unwrap().unwrap();
                queue::mark_sent(store.as_ref(), &uuid, &target[0], now).unwrap();
                queue::report(
                    store.as_ref(),
                    &target[0],
                    &out.command_uuid,
                    DeliveryStatus::Acknowledged,
                    ack,
                    now,
                )
                .unwrap();
            })
        });
        g.bench_function(format!("next on an empty queue ({name})"), |b| {
            b.iter(|| queue::next(store.as_ref(), black_box(&target[0]), false).unwrap())
        });
    }
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let key = Arc::new(DeviceKey::generate().unwrap());
    let cert = key.self_signed_certificate("bench device").unwrap();
    let identity = DeviceIdentity::new(Arc::clone(&key), &cert).unwrap();
    let mut idle = Dictionary::new();
    idle.insert("Status".into(), Value::String("Idle".into()));
    idle.insert("UDID".into(), Value::String("00008110-000A1C2E3F40801E".into()));
    let body = xml(&idle);
    let signature = identity.sign_detached(&body).unwrap();
    let header = data_encoding::BASE64.encode(&signature);

    let mut g = c.benchmark_group("mdm-signature");
    g.bench_function("verify (base64 header, CMS, RSA-2048)", |b| {
        b.iter_batched(
            || header.clone(),
            |h| {
                let der = data_encoding::BASE64.decode(h.as_bytes()).unwrap();
                verify_detached(&der, black_box(&body)).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    let verifier = DetachedVerifier::new(16);
    g.bench_function("verify, signer's key kept (what the appliance does)", |b| {
        b.iter_batched(
            || header.clone(),
            |h| {
                let der = data_encoding::BASE64.decode(h.as_bytes()).unwrap();
                verifier.verify(&der, black_box(&body)).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sign (device side, RSA-2048)", |b| {
        b.iter(|| identity.sign_detached(black_box(&body)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, plists, queue_round_trip, signatures);
criterion_main!(benches);
