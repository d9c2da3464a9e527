//! MDM command channel: next-command latency against fleet size, and in-process connect
//! round-trips per second.
//!
//! `cargo bench --bench mdm`
//!
//! Everything runs on the real sled store in a temporary directory and the real service code:
//! a device identity issued by the appliance's own CA, `Mdm-Signature` headers verified per
//! request, plists parsed, the queue updated. What is not here is TLS and HTTP; the over-the-
//! wire figure comes from the fleet simulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel::config::ScepSection;
use citadel::datadir::DataDir;
use citadel::mdm::enrollment::{EnrollmentKind, EnrollmentRecord, EnrollmentStatus};
use citadel::mdm::identity::IdentityVerifier;
use citadel::mdm::queue::{self, Sequence};
use citadel::mdm::{MdmOptions, MdmService};
use citadel::pki::Pki;
use citadel::scep::registry::{CertificateRecord, CertificateStatus, IssuedVia};
use citadel::scep::{ScepOptions, ScepService};
use citadel::store::{SledOptions, SledStore, Store, StoreExt, Tree};
use citadel_certs::SecretPem;
use citadel_certs::cms::ProfileSigner;
use citadel_certs::scep::CertificationRequest;
use plist::{Dictionary, Value};
use time::OffsetDateTime;

/// `BENCH_CACHE_MB` sets the store's page cache (default 64 MiB, the appliance's default).
fn open_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let mb: u64 = std::env::var("BENCH_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let opts = SledOptions {
        cache_capacity_bytes: mb * 1024 * 1024,
        flush_every_ms: 500,
    };
    Arc::new(SledStore::open(dir, &opts).unwrap())
}

fn record(id: &str, now: OffsetDateTime) -> EnrollmentRecord {
    EnrollmentRecord {
        status: EnrollmentStatus::Active,
        ..EnrollmentRecord::new(
            id.to_owned(),
            EnrollmentKind::Device,
            format!("{id}-cert"),
            String::new(),
            now,
        )
    }
}

fn command(request_type: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("RequestType".into(), Value::String(request_type.into()));
    d
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Latency of `queue::next` for random devices of a fleet of `devices`, each with two pending
/// commands and three answered ones in its history.
fn next_command_latency(
    devices: usize,
    now: OffsetDateTime,
    in_memory: bool,
) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = if in_memory {
        Arc::new(citadel::store::MemoryStore::new())
    } else {
        open_store(dir.path())
    };
    let seq = Sequence::default();
    let ids: Vec<String> = (0..devices).map(|i| format!("DEVICE-{i:08}")).collect();
    for chunk in ids.chunks(10_000) {
        for id in chunk {
            store
                .put_record(Tree::Enrollments, id.as_bytes(), &record(id, now))
                .unwrap();
        }
    }
    // History: three answered commands per device.
    for kind in ["ProfileList", "CertificateList", "SecurityInfo"] {
        let out = queue::enqueue(store.as_ref(), &seq, &ids, &command(kind), 100, "bench", now).unwrap();
        for id in &ids {
            queue::report(
                store.as_ref(),
                id,
                &out.command_uuid,
                queue::DeliveryStatus::Acknowledged,
                b"<plist/>",
                now,
            )
            .unwrap();
        }
    }
    for kind in ["DeviceInformation", "InstalledApplicationList"] {
        queue::enqueue(store.as_ref(), &seq, &ids, &command(kind), 100, "bench", now).unwrap();
    }
    // Measure the steady state, not the background flush of what was just written.
    store.flush().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Two passes over the same random devices: the first meets cold store pages, the second
    // shows the lookup itself.
    let mut samples = Vec::with_capacity(20_000);
    for _pass in 0..2 {
        samples.clear();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = &ids[(x % devices as u64) as usize];
            let t = Instant::now();
            let next = queue::next(store.as_ref(), id, false).unwrap();
            samples.push(t.elapsed());
            assert!(next.is_some());
        }
    }
    samples.sort();
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
    )
}

struct BenchDevice {
    udid: String,
    signer: ProfileSigner,
}

fn issue_device(
    pki: &Pki,
    store: &dyn Store,
    tmp: &std::path::Path,
    name: &str,
    now: OffsetDateTime,
) -> BenchDevice {
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
        ])
        .args([
            "-keyout",
            &format!("{name}.key"),
            "-outform",
            "DER",
            "-out",
            &format!("{name}.csr"),
        ])
        .current_dir(tmp)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csr =
        CertificationRequest::from_der(&std::fs::read(tmp.join(format!("{name}.csr"))).unwrap()).unwrap();
    let cert = pki
        .issuing_ca()
        .issue_device_certificate(&csr, time::Duration::days(730), now)
        .unwrap();
    let rec = CertificateRecord {
        serial: cert.info.serial_hex.clone(),
        subject: cert.info.subject.clone(),
        sha256_fingerprint: cert.info.sha256_fingerprint.clone(),
        not_before: cert.info.not_before,
        not_after: cert.info.not_after,
        issued_at: now,
        issued_via: IssuedVia::OneTimeChallenge,
        transaction_id: name.to_owned(),
        status: CertificateStatus::Active,
        assigned_user: None,
    };
    store
        .put_record(Tree::Certificates, rec.serial.as_bytes(), &rec)
        .unwrap();
    let key = std::fs::read_to_string(tmp.join(format!("{name}.key"))).unwrap();
    BenchDevice {
        udid: format!("UDID-{name}"),
        signer: ProfileSigner::from_pem(&cert.pem, &SecretPem::new(key)).unwrap(),
    }
}

fn xml(d: Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, &Value::Dictionary(d)).unwrap();
    out
}

fn message(pairs: &[(&str, Value)]) -> Vec<u8> {
    xml(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
}

fn main() {
    let now = OffsetDateTime::now_utc();
    println!("next-command latency (queue::next on sled, 20,000 random lookups, second pass)");
    // BENCH_FLEET=… shortens the run (e.g. for profiling the connect path).
    let fleet: usize = std::env::var("BENCH_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for (devices, in_memory) in [(1usize, false), (fleet, false), (1, true), (fleet, true)] {
        let started = Instant::now();
        let (p50, p99, p999) = next_command_latency(devices, now, in_memory);
        let engine = if in_memory { "memory" } else { "sled" };
        println!(
            "  {engine:>6} {devices:>7} enrollments: p50 {:>6.1} µs  p99 {:>6.1} µs  p99.9 {:>6.1} µs   (fleet built in {:.1} s)",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            p999.as_secs_f64() * 1e6,
            started.elapsed().as_secs_f64()
        );
    }

    // Connect round trips through the real service, with real signatures.
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::prepare(&tmp.path().join("data")).unwrap();
    let (pki, _) = Pki::load_or_create(&data, "bench", now).unwrap();
    let pki = Arc::new(pki);
    let store = open_store(&tmp.path().join("store"));
    let scep = Arc::new(ScepService::new(
        Arc::clone(&store),
        Arc::clone(&pki),
        ScepOptions::from(&ScepSection::default()),
    ));
    let mdm = Arc::new(MdmService::new(
        Arc::clone(&store),
        Arc::clone(&pki),
        scep,
        MdmOptions {
            user_authenticate: false,
            retention: time::Duration::days(30),
            inventory: citadel::inventory::schedule::InventorySchedule::default(),
            inventory_on_enrollment: false,
            enrollment_profile: "com.citadel.enroll.bench".into(),
        },
        None,
        None,
        Arc::new(citadel::inventory::index::DeviceIndex::default()),
    ));
    let verifier = Arc::new(IdentityVerifier::default());
    const COMMANDS: usize = 1500;
    let mut prepared = Vec::new();
    // Device 0 for the one-thread run, devices 1 and 2 for the two-thread run.
    for t in 0..3 {
        let dev = issue_device(&pki, store.as_ref(), tmp.path(), &format!("bench{t}"), now);
        let auth = message(&[
            ("MessageType", Value::String("Authenticate".into())),
            ("UDID", Value::String(dev.udid.clone())),
            ("Topic", Value::String("com.apple.mgmt.bench".into())),
        ]);
        let token = message(&[
            ("MessageType", Value::String("TokenUpdate".into())),
            ("UDID", Value::String(dev.udid.clone())),
            ("Topic", Value::String("com.apple.mgmt.bench".into())),
            ("Token", Value::Data(vec![7; 32])),
            ("PushMagic", Value::String("magic".into())),
        ]);
        for body in [auth, token] {
            let sig = data_encoding::BASE64.encode(&dev.signer.sign_detached(&body).unwrap());
            let id = verifier
                .authenticate(store.as_ref(), None, Some(&sig), &body, now)
                .unwrap();
            mdm.checkin(&id, &body, now).unwrap();
        }
        // Queue the commands, then sign every request the device will send, ahead of timing.
        let mut uuids = Vec::new();
        for _ in 0..COMMANDS {
            let out = mdm
                .enqueue(
                    std::slice::from_ref(&dev.udid),
                    &command("RestartDevice"),
                    100,
                    "bench",
                    now,
                )
                .unwrap();
            uuids.push(out.command_uuid);
        }
        let mut requests = Vec::with_capacity(COMMANDS + 1);
        let idle = message(&[
            ("UDID", Value::String(dev.udid.clone())),
            ("Status", Value::String("Idle".into())),
        ]);
        requests.push(idle);
        for u in &uuids {
            requests.push(message(&[
                ("UDID", Value::String(dev.udid.clone())),
                ("Status", Value::String("Acknowledged".into())),
                ("CommandUUID", Value::String(u.clone())),
            ]));
        }
        let signed: Vec<(Vec<u8>, String)> = requests
            .into_iter()
            .map(|b| {
                let s = data_encoding::BASE64.encode(&dev.signer.sign_detached(&b).unwrap());
                (b, s)
            })
            .collect();
        prepared.push(signed);
    }
    println!("connect requests through identity check + command channel (in-process, no TLS/HTTP)");
    let mut prepared = prepared.into_iter();
    for threads in [1usize, 2] {
        let work: Vec<_> = prepared.by_ref().take(threads).collect();
        let started = Instant::now();
        let handles: Vec<_> = work
            .into_iter()
            .map(|requests| {
                let mdm = Arc::clone(&mdm);
                let verifier = Arc::clone(&verifier);
                std::thread::spawn(move || {
                    let mut latencies = Vec::with_capacity(requests.len());
                    for (body, sig) in &requests {
                        let t = Instant::now();
                        let id = verifier.presented(None, Some(sig), body).unwrap();
                        let reply = mdm.connect(&id, body, now).unwrap();
                        latencies.push(t.elapsed());
                        std::hint::black_box(reply);
                    }
                    latencies
                })
            })
            .collect();
        let mut all: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let elapsed = started.elapsed();
        all.sort();
        println!(
            "  {threads} thread(s): {:>6.0} requests/s  p50 {:>5.0} µs  p99 {:>5.0} µs  ({} requests)",
            all.len() as f64 / elapsed.as_secs_f64(),
            percentile(&all, 0.5).as_secs_f64() * 1e6,
            percentile(&all, 0.99).as_secs_f64() * 1e6,
            all.len()
        );
    }
}
