//! APNs fan-out: pushes per second to the built-in APNs stand-in over one HTTP/2 connection,
//! and the time to wake 100,000 enrolled devices, with the process's memory sampled during
//! the fan-out.
//!
//! `cargo bench --bench push`   (BENCH_DEVICES=… changes the fleet size)
//!
//! Everything is the product's code: enrollments in the sled store, `PushService` loading them
//! a chunk at a time, the reqwest/hyper HTTP/2 client with the push certificate as client
//! identity, and `sim::apns` (which requires and checks that certificate) on loopback. The
//! stand-in answers at once, so this measures Citadel's side; Apple's latency is not in it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel::clock::{SharedClock, SystemClock};
use citadel::config::Config;
use citadel::datadir::DataDir;
use citadel::mdm::enrollment::{EnrollmentKind, EnrollmentRecord, EnrollmentStatus, PushInfo};
use citadel::pki::push::ImportSource;
use citadel::push::PushService;
use citadel::sim::apns::{self, MockApnsConfig};
use citadel::store::{SledOptions, SledStore, Store, StoreExt, Tree};
use citadel_certs::{CertificateAuthority, SecretPem, ServerIdentity};
use time::OffsetDateTime;

const TOPIC: &str = "com.apple.mgmt.External.bench";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn device(i: usize, now: OffsetDateTime) -> EnrollmentRecord {
    EnrollmentRecord {
        status: EnrollmentStatus::Active,
        push: Some(PushInfo {
            token_hex: format!("{i:064x}"),
            push_magic: format!("magic-{i}"),
            topic: TOPIC.into(),
        }),
        token_updated_at: Some(now),
        ..EnrollmentRecord::new(
            format!("DEVICE-{i:08}"),
            EnrollmentKind::Device,
            String::new(),
            String::new(),
            now,
        )
    }
}

fn main() {
    let devices: usize = std::env::var("BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let now = OffsetDateTime::now_utc();

    // "Apple": a CA for push certificates, and a push certificate for our topic.
    std::fs::write(
        dir.join("ext.cnf"),
        "[ext]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=Bench Apple",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=x", "-keyout", "push.key", "-out",
            "push.csr",
        ],
    );
    let subj = format!("/UID={TOPIC}/CN=APSP:bench");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "push.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-subj",
            &subj,
            "-extfile",
            "ext.cnf",
            "-extensions",
            "ext",
            "-out",
            "push.pem",
        ],
    );
    let tls_ca = CertificateAuthority::generate("bench-apns", now).unwrap();
    let tls = tls_ca
        .issue_server_certificate(&ServerIdentity::new(["localhost"]).unwrap(), now)
        .unwrap();
    std::fs::write(dir.join("server-ca.pem"), tls_ca.certificate_pem()).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut mock_config = MockApnsConfig::new("127.0.0.1:0".parse().unwrap(), tls.cert_pem, tls.key_pem);
        mock_config.client_ca_pem = Some(std::fs::read_to_string(dir.join("ca.pem")).unwrap());
        let mock = apns::start(mock_config).await.unwrap();
        mock.set_count_only(true);

        let data = DataDir::prepare(&dir.join("data")).unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SledStore::open(
                &dir.join("store"),
                &SledOptions {
                    cache_capacity_bytes: 64 * 1024 * 1024,
                    flush_every_ms: 500,
                },
            )
            .unwrap(),
        );
        let mut config = Config::default();
        config.apns.base_url = mock.base_url();
        config.apns.ca_file = Some(dir.join("server-ca.pem"));
        let clock: SharedClock = Arc::new(SystemClock);
        let push = Arc::new(PushService::new(&config, data, Arc::clone(&store), clock).unwrap());
        push.import(ImportSource::Pem {
            cert_pem: std::fs::read_to_string(dir.join("push.pem")).unwrap(),
            key_pem: Some(SecretPem::new(
                std::fs::read_to_string(dir.join("push.key")).unwrap(),
            )),
        })
        .unwrap();
        let started = Instant::now();
        let ids: Vec<String> = (0..devices)
            .map(|i| {
                let d = device(i, now);
                store.put_record(Tree::Enrollments, d.id.as_bytes(), &d).unwrap();
                d.id
            })
            .collect();
        println!(
            "fleet: {devices} enrollments written in {:.1} s; concurrency {} streams",
            started.elapsed().as_secs_f64(),
            config.apns.concurrency
        );
        tokio::spawn(Arc::clone(&push).run());

        // Warm-up: connection set-up and page cache.
        push.request(ids.iter().take(2000).cloned());
        assert!(mock.wait_for_count(2000, Duration::from_secs(60)).await);

        // Two full fan-outs: the second shows whether memory keeps growing with the work done
        // (it must not: the first also fills the store's page cache and the allocator's pools).
        for round in 1..=2 {
            let rss_before = rss_kib();
            let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
            let sampler = {
                let p = Arc::clone(&peak);
                tokio::spawn(async move {
                    loop {
                        p.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            };
            let base = mock.count();
            let started = Instant::now();
            push.request(ids.iter().cloned());
            assert!(
                mock.wait_for_count(base + devices, Duration::from_secs(600))
                    .await,
                "not all pushes arrived"
            );
            let elapsed = started.elapsed();
            sampler.abort();
            println!(
                "round {round}: {devices} pushes in {:.2} s = {:.0} pushes/s over {} TCP connection(s); \
                 RSS {:.1} MiB before, peak {:.1} MiB (process incl. the stand-in)",
                elapsed.as_secs_f64(),
                devices as f64 / elapsed.as_secs_f64(),
                mock.connections(),
                rss_before as f64 / 1024.0,
                peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0,
            );
        }
        println!(
            "delivered {} of {} requested (incl. 2,000 warm-up)",
            push.metrics.delivered.load(std::sync::atomic::Ordering::Relaxed),
            push.metrics.requested.load(std::sync::atomic::Ordering::Relaxed)
        );
    });
}
