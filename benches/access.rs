//! Criterion benchmarks of identity and access: what a sign-in costs (Argon2id, the password
//! policy, TOTP) and what every admin API request adds (session or token lookup on the real
//! store, the permission check).
//!
//! `cargo bench --bench access` (add `-- --quick` for a fast pass).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use citadel::iam::permissions::{BuiltinRole, Permission};
use citadel::iam::sessions::{self, SessionPolicy, SessionStart};
use citadel::iam::{Principal, Via, api_tokens, password, totp};
use citadel::store::{SledOptions, SledStore};
use criterion::{Criterion, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};

fn sign_in(c: &mut Criterion) {
    let mut g = c.benchmark_group("sign_in");
    g.sample_size(20);
    let phc = password::hash("violet tram orbits the quay").unwrap();
    g.bench_function("argon2id_verify", |b| {
        b.iter(|| password::verify(black_box("violet tram orbits the quay"), &phc))
    });
    g.bench_function("argon2id_hash", |b| {
        b.iter(|| password::hash(black_box("violet tram orbits the quay")).unwrap())
    });
    g.bench_function("password_policy_zxcvbn", |b| {
        b.iter(|| password::check_policy(black_box("violet tram orbits the quay"), 12, &["alice"]))
    });
    let secret = totp::new_secret();
    let now = OffsetDateTime::now_utc();
    let code = totp::code_at(&secret, now).unwrap();
    g.bench_function("totp_check", |b| {
        b.iter(|| totp::check(&secret, black_box(&code), now, None))
    });
    g.finish();
}

fn per_request(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), &SledOptions::default()).unwrap();
    let now = OffsetDateTime::now_utc();
    let policy = SessionPolicy {
        idle: Duration::minutes(30),
        absolute: Duration::hours(12),
        fresh: Duration::minutes(5),
    };
    let session = sessions::create(
        &store,
        SessionStart {
            username: "alice",
            realm: sessions::Realm::Admin,
            continues_from: None,
            authenticated_at: now,
            source: None,
            user_agent: None,
            pending: vec![],
        },
        now,
    )
    .unwrap();
    let (token, record) = api_tokens::create(
        &store,
        "bench",
        api_tokens::TokenScope::Role("administrator".into()),
        None,
        None,
        now,
    )
    .unwrap();
    let mut g = c.benchmark_group("per_request");
    g.bench_function("session_lookup_sled", |b| {
        b.iter(|| sessions::lookup(&store, &policy, black_box(&session.token), now).unwrap())
    });
    g.bench_function("api_token_verify_and_scope_sled", |b| {
        b.iter(|| {
            let r = api_tokens::verify(&store, black_box(&token), now)
                .unwrap()
                .unwrap();
            api_tokens::effective_permissions(&store, &r).unwrap()
        })
    });
    let principal = Principal {
        actor: citadel::audit::Actor::ApiToken(record.id.clone()),
        label: "bench".into(),
        permissions: BuiltinRole::Administrator.permissions(),
        via: Via::ApiToken {
            id: record.id,
            created_by: None,
        },
    };
    g.bench_function("permission_check", |b| {
        b.iter(|| principal.require(black_box(Permission::DevicesErase), now))
    });
    g.finish();
}

/// One audit record appended (hash over canonical JSON, record and head in one batch) on
/// sled: what every audited change and every enrolment adds.
fn audit_append(c: &mut Criterion) {
    use citadel::audit::{Actor, AuditEvent, AuditLog, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn citadel::store::Store> =
        std::sync::Arc::new(SledStore::open(dir.path(), &SledOptions::default()).unwrap());
    let log = AuditLog::open(store).unwrap();
    let now = OffsetDateTime::now_utc();
    c.bench_function("audit_append_sled", |b| {
        b.iter(|| {
            let event = AuditEvent::new(
                Actor::Device("0000-AAAA".into()),
                "device.enroll",
                Outcome::Success,
            )
            .target("0000-AAAA")
            .reason("Device iPhone15,2 serial F2LXK0000000 OS 18.1");
            log.append(black_box(event), now).unwrap()
        })
    });
}

criterion_group!(benches, sign_in, per_request, audit_append);
criterion_main!(benches);
