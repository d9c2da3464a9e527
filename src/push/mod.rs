//! APNs push: the push certificate in service, and the engine that wakes devices.
//!
//! - The certificate is loaded at start-up and replaced in place on import (no restart); the
//!   topic of the first one is pinned (a different topic would strand enrolled devices).
//! - Pushes are requested by enrollment ID ([`PushService::request`]); requests for the same
//!   enrollment made before the sender gets to them collapse into one push.
//! - The sender streams them over one HTTP/2 connection (reqwest/hyper respect the server's
//!   stream limit) with bounded concurrency, retries 429/5xx with jittered exponential backoff,
//!   and stops behind a circuit breaker when Apple keeps failing or rejects the certificate.
//! - Outcomes are counted ([`PushMetrics`]) and recorded on each enrollment (`last_push`); an
//!   invalid token stops pushes to it until its next TokenUpdate.

mod sender;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use citadel_certs::push::{PushCertificateInfo, PushIdentity};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::config::{Config, UNCONFIGURED_TOPIC};
use crate::datadir::DataDir;
use crate::mdm::enrollment::EnrollmentRecord;
use crate::pki::push::{self as push_files, ImportSource, PushCertError};
use crate::store::{Store, StoreError, StoreExt, Tree, WriteBatch, decode, encode};
pub use sender::{Outcome, PushTarget, Sender, SenderOptions};

/// Push-certificate expiry thresholds (days) at which a warning is logged.
const WARN_DAYS: [i64; 4] = [30, 14, 7, 1];
/// Enrollments loaded and pushed per round; bounds memory during a fan-out.
const CHUNK: usize = 1000;

#[derive(Debug, Default)]
pub struct PushMetrics {
    pub requested: AtomicU64,
    pub delivered: AtomicU64,
    pub unregistered: AtomicU64,
    pub bad_device_token: AtomicU64,
    pub certificate_rejected: AtomicU64,
    pub rate_limited: AtomicU64,
    pub server_error: AtomicU64,
    pub transport_error: AtomicU64,
    pub circuit_open: AtomicU64,
    pub no_certificate: AtomicU64,
    pub retries: AtomicU64,
    pub other_rejected: AtomicU64,
}

impl PushMetrics {
    pub fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::Unregistered => &self.unregistered,
            Outcome::BadDeviceToken => &self.bad_device_token,
            Outcome::CertificateRejected(_) => &self.certificate_rejected,
            Outcome::RateLimited => &self.rate_limited,
            Outcome::ServerError(_) => &self.server_error,
            Outcome::Transport(_) => &self.transport_error,
            Outcome::CircuitOpen => &self.circuit_open,
            Outcome::NoCertificate => &self.no_certificate,
            Outcome::Rejected { .. } => &self.other_rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text lines.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP citadel_push_total APNs pushes by outcome.\n# TYPE citadel_push_total counter\n",
        );
        for (name, c) in [
            ("delivered", &self.delivered),
            ("unregistered", &self.unregistered),
            ("bad_device_token", &self.bad_device_token),
            ("certificate_rejected", &self.certificate_rejected),
            ("rate_limited", &self.rate_limited),
            ("server_error", &self.server_error),
            ("transport_error", &self.transport_error),
            ("circuit_open", &self.circuit_open),
            ("no_certificate", &self.no_certificate),
            ("other_rejected", &self.other_rejected),
        ] {
            out.push_str(&format!(
                "citadel_push_total{{outcome=\"{name}\"}} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# TYPE citadel_push_requested_total counter\ncitadel_push_requested_total {}\n\
             # TYPE citadel_push_retries_total counter\ncitadel_push_retries_total {}\n",
            self.requested.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed)
        ));
    }
}

/// What the API and `/healthz` show about the push certificate.
#[derive(Debug, Clone, Serialize)]
pub struct PushStatus {
    pub configured: bool,
    pub topic: String,
    /// Where the topic comes from: `certificate`, `config` (apple.topic) or `none`.
    pub topic_source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Certificate(#[from] PushCertError),
    #[error("cannot set up the APNs client: {0}")]
    Client(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct PushService {
    data: DataDir,
    store: Arc<dyn Store>,
    clock: SharedClock,
    config_topic: Option<String>,
    current: RwLock<Option<Arc<PushCertificateInfo>>>,
    sender: Sender,
    /// Enrollments waiting for a push, pushed in ID order: devices answer a push roughly in the
    /// order they get it, so a fan-out then reads and writes each tree in key order, mostly from
    /// pages the store has just cached, instead of all over it (BENCHMARKS.md, issue 6).
    pending: Mutex<BTreeSet<String>>,
    wake: Notify,
    pub metrics: Arc<PushMetrics>,
    warned_at_days: Mutex<Option<i64>>,
}

impl PushService {
    /// Loads the stored push certificate, if any, and prepares the sender.
    pub fn new(
        config: &Config,
        data: DataDir,
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> Result<Self, PushError> {
        let extra_roots = match &config.apns.ca_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                PushError::Client(format!("cannot read apns.ca_file {}: {e}", path.display()))
            })?),
            None => None,
        };
        let metrics = Arc::new(PushMetrics::default());
        let sender = Sender::new(
            SenderOptions {
                base_url: config.apns.base_url.trim_end_matches('/').to_owned(),
                proxy: config.apns.proxy.clone(),
                extra_roots_pem: extra_roots,
                expiration: time::Duration::seconds(
                    i64::try_from(config.apns.expiration_secs).unwrap_or(i64::MAX),
                ),
                concurrency: config.apns.concurrency,
            },
            Arc::clone(&metrics),
        );
        let service = Self {
            data,
            store,
            clock,
            config_topic: config.apple.topic.clone().filter(|t| !t.is_empty()),
            current: RwLock::new(None),
            sender,
            pending: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            metrics,
            warned_at_days: Mutex::new(None),
        };
        if let Some(identity) = push_files::load(&service.data).map_err(PushCertError::from)? {
            service.install(identity)?;
        }
        Ok(service)
    }

    fn install(&self, identity: PushIdentity) -> Result<PushCertificateInfo, PushError> {
        self.sender
            .install(&identity)
            .map_err(|e| PushError::Client(e.to_string()))?;
        let info = identity.info.clone();
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(Arc::new(info.clone()));
        }
        if let Ok(mut w) = self.warned_at_days.lock() {
            *w = None;
        }
        tracing::info!(topic = %info.topic, subject = %info.subject, expires = %info.not_after, "push certificate in service");
        Ok(info)
    }

    pub fn certificate(&self) -> Option<Arc<PushCertificateInfo>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// The topic enrollment profiles use, and whether devices can actually be woken.
    pub fn topic(&self) -> (String, bool) {
        match (self.certificate(), &self.config_topic) {
            (Some(c), _) => (c.topic.clone(), true),
            (None, Some(t)) => (t.clone(), false),
            (None, None) => (UNCONFIGURED_TOPIC.to_owned(), false),
        }
    }

    /// A new certificate request for Apple's push portal (PEM); its key waits, mode 0600, in
    /// the data directory for the certificate Apple returns.
    pub fn create_request(&self, organization: &str, email: Option<&str>) -> Result<String, PushError> {
        let (pem, _der) =
            push_files::create_request(&self.data, organization, email).map_err(PushCertError::from)?;
        Ok(pem)
    }

    /// Imports a push certificate (refusing a topic change) and puts it in service.
    pub fn import(&self, source: ImportSource) -> Result<PushCertificateInfo, PushError> {
        let now = self.clock.now();
        let pinned = match self.certificate() {
            Some(current) => Some(current.topic.clone()),
            // Before any certificate, enrolled devices carry the configured topic, if any.
            None if !self
                .store
                .scan_prefix(Tree::Enrollments, b"", None, 1)?
                .is_empty() =>
            {
                self.config_topic.clone()
            }
            None => None,
        };
        let identity = push_files::import(&self.data, source, pinned.as_deref(), now)?;
        self.install(identity)
    }

    pub fn status(&self, now: OffsetDateTime) -> PushStatus {
        let cert = self.certificate();
        let (topic, configured) = self.topic();
        let mut warnings = Vec::new();
        let days_left = cert.as_ref().map(|c| (c.not_after - now).whole_days());
        match (&cert, days_left) {
            (None, _) => warnings.push(
                "no push certificate: enrolled devices cannot be woken (citadel push-cert csr / import)".to_owned(),
            ),
            (Some(c), Some(d)) if d < 0 => {
                warnings.push(format!("the push certificate expired on {}: devices cannot be woken", c.not_after))
            }
            (Some(c), Some(d)) if d <= WARN_DAYS[0] => warnings.push(format!(
                "the push certificate expires in {d} day(s) ({}): renew it in Apple's portal, keeping the topic",
                c.not_after
            )),
            _ => {}
        }
        PushStatus {
            configured,
            topic,
            topic_source: if cert.is_some() {
                "certificate"
            } else if self.config_topic.is_some() {
                "config"
            } else {
                "none"
            },
            subject: cert.as_ref().map(|c| c.subject.clone()),
            serial: cert.as_ref().map(|c| c.serial_hex.clone()),
            not_after: cert.as_ref().map(|c| c.not_after),
            days_left,
            warnings,
        }
    }

    /// Logs the expiry warning once per threshold crossed (30, 14, 7, 1 days).
    pub fn warn_if_expiring(&self, now: OffsetDateTime) {
        let Some(cert) = self.certificate() else { return };
        let days = (cert.not_after - now).whole_days();
        let Some(threshold) = warning_threshold(days) else {
            return;
        };
        let Ok(mut warned) = self.warned_at_days.lock() else {
            return;
        };
        if warned.is_some_and(|w| w <= threshold) {
            return;
        }
        *warned = Some(threshold);
        if days <= 7 {
            tracing::error!(days_left = days, expires = %cert.not_after, topic = %cert.topic, "the APNs push certificate expires soon: renew it now (same topic)");
        } else {
            tracing::warn!(days_left = days, expires = %cert.not_after, topic = %cert.topic, "the APNs push certificate expires soon: renew it (same topic)");
        }
    }

    /// Asks for a push to each enrollment; duplicates pending together become one push.
    pub fn request<I: IntoIterator<Item = String>>(&self, ids: I) {
        let mut added = 0u64;
        if let Ok(mut pending) = self.pending.lock() {
            for id in ids {
                if pending.insert(id) {
                    added += 1;
                }
            }
        }
        if added > 0 {
            self.metrics.requested.fetch_add(added, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// Number of enrollments waiting for a push.
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// The next enrollments to push (at most [`CHUNK`]), lowest IDs first.
    fn next_chunk(&self) -> Vec<String> {
        match self.pending.lock() {
            Ok(mut p) => std::iter::from_fn(|| p.pop_first()).take(CHUNK).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The sender loop: waits for requests and pushes them, a chunk at a time.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            loop {
                let chunk = self.next_chunk();
                if chunk.is_empty() {
                    break;
                }
                if let Err(e) = self.push_chunk(chunk).await {
                    tracing::error!(error = %e, "push round failed");
                }
            }
        }
    }

    async fn push_chunk(self: &Arc<Self>, ids: Vec<String>) -> Result<(), PushError> {
        let store = Arc::clone(&self.store);
        let targets = tokio::task::spawn_blocking(move || load_targets(store.as_ref(), &ids))
            .await
            .map_err(|e| PushError::Client(e.to_string()))??;
        if targets.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let outcomes = self.sender.push_all(targets, now).await;
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || record_outcomes(store.as_ref(), &outcomes, now))
            .await
            .map_err(|e| PushError::Client(e.to_string()))??;
        Ok(())
    }

    /// Re-pushes, a slice at a time, enrollments not seen for `after`: the whole store is
    /// walked once per `period`, so the sweep's load is spread evenly.
    pub async fn sweep(self: Arc<Self>, after: time::Duration, period: std::time::Duration) {
        const TICKS: u32 = 1440;
        let tick = period / TICKS;
        let mut cursor: Option<Vec<u8>> = None;
        let mut per_tick = 100usize;
        let mut seen_this_pass = 0usize;
        let mut ticks = tokio::time::interval(tick);
        loop {
            ticks.tick().await;
            let (store, start, now) = (Arc::clone(&self.store), cursor.clone(), self.clock.now());
            let page = tokio::task::spawn_blocking(move || {
                store.scan_prefix(Tree::Enrollments, b"", start.as_deref(), per_tick)
            })
            .await;
            let Ok(Ok(page)) = page else { continue };
            seen_this_pass += page.len();
            if page.len() < per_tick {
                // End of a pass: size the next pass's slices from this one.
                cursor = None;
                per_tick = (seen_this_pass / TICKS as usize).max(100);
                seen_this_pass = 0;
            } else {
                cursor = page.last().map(|(k, _)| k.clone());
            }
            let stale: Vec<String> = page
                .iter()
                .filter_map(|(k, v)| decode::<EnrollmentRecord>(Tree::Enrollments, k, v).ok())
                .filter(|r| r.pushable() && now - r.last_seen_at >= after)
                .map(|r| r.id)
                .collect();
            if !stale.is_empty() {
                tracing::debug!(
                    count = stale.len(),
                    "sweep: re-pushing enrollments not seen recently"
                );
                self.request(stale);
            }
        }
    }
}

/// The smallest of [`WARN_DAYS`] that `days_left` has reached, if any.
fn warning_threshold(days_left: i64) -> Option<i64> {
    WARN_DAYS.iter().rev().find(|t| days_left <= **t).copied()
}

/// The latest push to an enrollment, and whether APNs declared its token invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PushState {
    #[serde(with = "time::serde::rfc3339")]
    pub last_push_at: OffsetDateTime,
    /// `delivered`, `unregistered`, `bad_device_token`, `certificate_rejected`, `failed`, …
    pub last_outcome: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// The device token APNs rejected (410 / BadDeviceToken): no pushes to it. A TokenUpdate
    /// brings a new token, which this no longer matches.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub invalid_token: Option<String>,
}

pub fn push_state(store: &dyn Store, enrollment: &str) -> Result<Option<PushState>, StoreError> {
    store.get_record(Tree::PushState, enrollment.as_bytes())
}

/// The "encoded request" an MDM vendor gives a customer for Apple's push certificates portal:
/// base64 of an XML plist holding the CSR (base64 DER), the vendor's signature over it
/// (base64) and the vendor's certificate chain up to Apple's root (PEM).
pub fn encoded_request(csr_der: &[u8], signature: &[u8], chain_pem: &str) -> Result<String, plist::Error> {
    let mut dict = plist::Dictionary::new();
    dict.insert(
        "PushCertRequestCSR".into(),
        plist::Value::String(data_encoding::BASE64.encode(csr_der)),
    );
    dict.insert(
        "PushCertCertificateChain".into(),
        plist::Value::String(chain_pem.to_owned()),
    );
    dict.insert(
        "PushCertSignature".into(),
        plist::Value::String(data_encoding::BASE64.encode(signature)),
    );
    let mut xml = Vec::new();
    plist::to_writer_xml(&mut xml, &plist::Value::Dictionary(dict))?;
    Ok(data_encoding::BASE64.encode(&xml))
}

fn load_targets(store: &dyn Store, ids: &[String]) -> Result<Vec<PushTarget>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(r) = store.get_record::<EnrollmentRecord>(Tree::Enrollments, id.as_bytes())? else {
            continue;
        };
        if !r.pushable() {
            continue;
        }
        let Some(p) = r.push else { continue };
        let invalid = push_state(store, id)?.and_then(|s| s.invalid_token);
        if invalid.as_deref() == Some(p.token_hex.as_str()) {
            continue;
        }
        out.push(PushTarget {
            enrollment_id: r.id,
            token_hex: p.token_hex,
            push_magic: p.push_magic,
        });
    }
    Ok(out)
}

fn record_outcomes(
    store: &dyn Store,
    outcomes: &[(PushTarget, Outcome)],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    for (target, outcome) in outcomes {
        let (name, reason) = outcome.describe();
        let invalid = matches!(outcome, Outcome::Unregistered | Outcome::BadDeviceToken);
        if invalid {
            tracing::info!(enrollment = %target.enrollment_id, outcome = name, "push token no longer valid; no pushes until the next TokenUpdate");
        }
        let state = PushState {
            last_push_at: now,
            last_outcome: name.to_owned(),
            reason,
            invalid_token: invalid.then(|| target.token_hex.clone()),
        };
        batch.put(
            Tree::PushState,
            target.enrollment_id.as_bytes().to_vec(),
            encode(&state)?,
        );
    }
    store.apply(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::MemoryStore;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn service(store: Arc<dyn Store>) -> (tempfile::TempDir, PushService) {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::prepare(&tmp.path().join("data")).unwrap();
        let clock: SharedClock = Arc::new(ManualClock::at(NOW));
        let svc = PushService::new(&Config::default(), data, store, clock).unwrap();
        (tmp, svc)
    }

    fn enrolled(id: &str, token: &str) -> EnrollmentRecord {
        super::tests_support::enrolled(id, token, NOW)
    }

    #[test]
    fn requests_for_one_enrollment_coalesce() {
        let (_tmp, svc) = service(Arc::new(MemoryStore::new()));
        for _ in 0..5 {
            svc.request(["dev-1".to_string()]);
        }
        svc.request(["dev-2".to_string(), "dev-1".to_string()]);
        assert_eq!(svc.pending(), 2);
        assert_eq!(svc.metrics.requested.load(Ordering::Relaxed), 2);
        // No certificate: nothing can be woken, and the status says so.
        let status = svc.status(NOW);
        assert!(!status.configured);
        assert_eq!(status.topic, UNCONFIGURED_TOPIC);
        assert!(status.warnings[0].contains("no push certificate"));
    }

    #[test]
    fn pushes_go_out_in_id_order_a_chunk_at_a_time() {
        let (_tmp, svc) = service(Arc::new(MemoryStore::new()));
        let ids: Vec<String> = (0..CHUNK + 10).rev().map(|i| format!("dev-{i:05}")).collect();
        svc.request(ids.iter().step_by(2).cloned());
        svc.request(ids.iter().skip(1).step_by(2).cloned());
        let first = svc.next_chunk();
        assert_eq!(first.len(), CHUNK);
        assert!(first.is_sorted(), "a chunk is in ID order");
        assert_eq!(first[0], "dev-00000");
        let rest = svc.next_chunk();
        assert_eq!(rest.len(), 10);
        assert!(first.last() < rest.first(), "later chunks continue the order");
        assert!(svc.next_chunk().is_empty());
        assert_eq!(svc.pending(), 0);
    }

    #[test]
    fn an_invalid_token_is_skipped_until_a_new_one_arrives() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        for (id, token) in [("a", "aa"), ("b", "bb")] {
            store
                .put_record(Tree::Enrollments, id.as_bytes(), &enrolled(id, token))
                .unwrap();
        }
        let ids = vec!["a".to_string(), "b".to_string(), "missing".to_string()];
        assert_eq!(load_targets(store.as_ref(), &ids).unwrap().len(), 2);
        let target = |id: &str, token: &str| PushTarget {
            enrollment_id: id.into(),
            token_hex: token.into(),
            push_magic: "magic".into(),
        };
        record_outcomes(
            store.as_ref(),
            &[
                (target("a", "aa"), Outcome::Unregistered),
                (target("b", "bb"), Outcome::Delivered),
            ],
            NOW,
        )
        .unwrap();
        let left = load_targets(store.as_ref(), &ids).unwrap();
        assert_eq!(
            left.iter().map(|t| t.enrollment_id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(
            push_state(store.as_ref(), "a").unwrap().unwrap().last_outcome,
            "unregistered"
        );
        assert_eq!(
            push_state(store.as_ref(), "b").unwrap().unwrap().last_outcome,
            "delivered"
        );
        // TokenUpdate brings a new token: pushable again.
        store
            .put_record(Tree::Enrollments, b"a", &enrolled("a", "a2"))
            .unwrap();
        assert_eq!(load_targets(store.as_ref(), &ids).unwrap().len(), 2);
    }

    #[test]
    fn expiry_warnings_fire_at_30_14_7_and_1_days() {
        let fired: Vec<Option<i64>> = [45, 30, 20, 14, 8, 7, 2, 1, 0, -3]
            .into_iter()
            .map(warning_threshold)
            .collect();
        assert_eq!(
            fired,
            [
                None,
                Some(30),
                Some(30),
                Some(14),
                Some(14),
                Some(7),
                Some(7),
                Some(1),
                Some(1),
                Some(1)
            ]
        );
    }

    #[test]
    fn the_encoded_vendor_request_is_a_base64_plist() {
        let encoded = encoded_request(b"CSR-DER", b"SIG", "-----BEGIN CERTIFICATE-----\n…").unwrap();
        let xml = data_encoding::BASE64.decode(encoded.as_bytes()).unwrap();
        let dict: plist::Dictionary = plist::from_bytes(&xml).unwrap();
        assert_eq!(
            dict["PushCertRequestCSR"].as_string(),
            Some(data_encoding::BASE64.encode(b"CSR-DER").as_str())
        );
        assert_eq!(dict["PushCertSignature"].as_string(), Some("U0lH"));
        assert!(
            dict["PushCertCertificateChain"]
                .as_string()
                .unwrap()
                .starts_with("-----BEGIN")
        );
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::MemoryStore;
    use time::macros::datetime;

    #[tokio::test]
    async fn the_sweep_re_pushes_only_enrollments_silent_for_a_day() {
        let now = datetime!(2026-11-28 12:00 UTC);
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        for (id, seen_hours_ago, active) in [
            ("old", 30, true),
            ("older", 72, true),
            ("fresh", 2, true),
            ("gone", 90, false),
        ] {
            let mut r = super::tests_support::enrolled(id, &format!("{id}-token"), now);
            r.last_seen_at = now - time::Duration::hours(seen_hours_ago);
            if !active {
                r.status = crate::mdm::enrollment::EnrollmentStatus::Unenrolled;
            }
            store.put_record(Tree::Enrollments, id.as_bytes(), &r).unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::prepare(&tmp.path().join("data")).unwrap();
        let clock: SharedClock = Arc::new(ManualClock::at(now));
        let svc = Arc::new(PushService::new(&Config::default(), data, store, clock).unwrap());
        // A whole pass every 1.44 s: one slice per millisecond.
        let sweep = tokio::spawn(
            Arc::clone(&svc).sweep(time::Duration::hours(24), std::time::Duration::from_millis(1440)),
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sweep.abort();
        assert_eq!(svc.next_chunk(), ["old", "older"]);
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::mdm::enrollment::{EnrollmentKind, EnrollmentStatus, PushInfo};

    pub fn enrolled(id: &str, token: &str, now: OffsetDateTime) -> EnrollmentRecord {
        EnrollmentRecord {
            status: EnrollmentStatus::Active,
            push: Some(PushInfo {
                token_hex: token.into(),
                push_magic: "magic".into(),
                topic: "com.apple.mgmt.x".into(),
            }),
            token_updated_at: Some(now),
            ..EnrollmentRecord::new(
                id.into(),
                EnrollmentKind::Device,
                String::new(),
                String::new(),
                now,
            )
        }
    }
}
