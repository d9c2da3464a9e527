//! Sending MDM wake-ups to APNs over HTTP/2.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use citadel_certs::push::PushIdentity;
use futures_util::StreamExt;
use time::OffsetDateTime;

use super::PushMetrics;

/// Attempts per push for transient failures (429, 5xx, connection trouble).
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Consecutive failed pushes (after retries) that open the circuit.
const BREAKER_THRESHOLD: u32 = 20;
const BREAKER_FIRST_COOLDOWN: Duration = Duration::from_secs(30);
const BREAKER_MAX_COOLDOWN: Duration = Duration::from_secs(600);
/// After Apple rejects the certificate, wait this long (or for a new certificate).
const CERTIFICATE_COOLDOWN: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// `https://api.push.apple.com`, no trailing slash.
    pub base_url: String,
    pub proxy: Option<String>,
    pub extra_roots_pem: Option<String>,
    pub expiration: time::Duration,
    pub concurrency: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub enrollment_id: String,
    pub token_hex: String,
    pub push_magic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// 410: the token is no longer valid for the topic.
    Unregistered,
    /// 400 BadDeviceToken.
    BadDeviceToken,
    /// 403: Apple refused the push certificate.
    CertificateRejected(String),
    RateLimited,
    ServerError(u16),
    Transport(String),
    /// Not attempted: the circuit breaker is open.
    CircuitOpen,
    /// Not attempted: no push certificate is installed.
    NoCertificate,
    /// Any other refusal (4xx with a reason).
    Rejected {
        status: u16,
        reason: String,
    },
}

impl Outcome {
    /// A short name and the detail, for the per-enrollment record.
    pub fn describe(&self) -> (&'static str, Option<String>) {
        match self {
            Outcome::Delivered => ("delivered", None),
            Outcome::Unregistered => ("unregistered", None),
            Outcome::BadDeviceToken => ("bad_device_token", None),
            Outcome::CertificateRejected(r) => ("certificate_rejected", Some(r.clone())),
            Outcome::RateLimited => ("rate_limited", None),
            Outcome::ServerError(s) => ("server_error", Some(s.to_string())),
            Outcome::Transport(e) => ("transport_error", Some(e.clone())),
            Outcome::CircuitOpen => ("circuit_open", None),
            Outcome::NoCertificate => ("no_certificate", None),
            Outcome::Rejected { status, reason } => ("rejected", Some(format!("{status} {reason}"))),
        }
    }

    fn transient(&self) -> bool {
        matches!(
            self,
            Outcome::RateLimited | Outcome::ServerError(_) | Outcome::Transport(_)
        )
    }
}

struct Active {
    http: reqwest::Client,
    topic: String,
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    cooldown: Option<Duration>,
}

pub struct Sender {
    options: SenderOptions,
    active: RwLock<Option<Arc<Active>>>,
    breaker: Mutex<Breaker>,
    metrics: Arc<PushMetrics>,
}

#[derive(serde::Deserialize)]
struct ApnsError {
    reason: Option<String>,
}

impl Sender {
    pub fn new(options: SenderOptions, metrics: Arc<PushMetrics>) -> Self {
        Self {
            options,
            active: RwLock::new(None),
            breaker: Mutex::new(Breaker::default()),
            metrics,
        }
    }

    /// Builds the HTTP/2 client for `identity` and puts it in service; in-flight pushes finish
    /// on the old one. A new certificate also closes the circuit.
    pub fn install(&self, identity: &PushIdentity) -> Result<(), reqwest::Error> {
        let mut pem = identity.cert_chain_pem.clone();
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(identity.key_pem.expose());
        let mut builder = reqwest::Client::builder()
            .identity(reqwest::Identity::from_pem(pem.as_bytes())?)
            .http2_prior_knowledge()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .http2_keep_alive_interval(Duration::from_secs(600))
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(None);
        if let Some(roots) = &self.options.extra_roots_pem {
            builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(roots.as_bytes())?);
        }
        builder = match &self.options.proxy {
            Some(proxy) => builder.proxy(reqwest::Proxy::https(proxy)?),
            // Only the configured proxy: an HTTPS_PROXY in the service's environment must not
            // silently reroute pushes.
            None => builder.no_proxy(),
        };
        let active = Arc::new(Active {
            http: builder.build()?,
            topic: identity.info.topic.clone(),
        });
        if let Ok(mut slot) = self.active.write() {
            *slot = Some(active);
        }
        if let Ok(mut b) = self.breaker.lock() {
            *b = Breaker::default();
        }
        Ok(())
    }

    fn circuit_open(&self) -> bool {
        let Ok(mut b) = self.breaker.lock() else {
            return false;
        };
        match b.open_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                b.open_until = None;
                false
            }
            None => false,
        }
    }

    fn settle(&self, outcome: &Outcome) {
        let Ok(mut b) = self.breaker.lock() else { return };
        match outcome {
            Outcome::Delivered
            | Outcome::Unregistered
            | Outcome::BadDeviceToken
            | Outcome::Rejected { .. } => {
                b.consecutive_failures = 0;
                b.cooldown = None;
            }
            Outcome::CertificateRejected(reason) => {
                if b.open_until.is_none() {
                    tracing::error!(%reason, "APNs rejected the push certificate: pushes stop until a new certificate is imported (or for an hour)");
                }
                b.open_until = Some(Instant::now() + CERTIFICATE_COOLDOWN);
            }
            o if o.transient() => {
                b.consecutive_failures += 1;
                if b.consecutive_failures >= BREAKER_THRESHOLD && b.open_until.is_none() {
                    let cooldown = b
                        .cooldown
                        .map_or(BREAKER_FIRST_COOLDOWN, |c| (c * 2).min(BREAKER_MAX_COOLDOWN));
                    b.cooldown = Some(cooldown);
                    b.open_until = Some(Instant::now() + cooldown);
                    b.consecutive_failures = 0;
                    tracing::error!(
                        cooldown_secs = cooldown.as_secs(),
                        "APNs keeps failing: pausing pushes (circuit open)"
                    );
                }
            }
            _ => {}
        }
    }

    /// Pushes to every target, `concurrency` at a time; returns each target's outcome.
    pub async fn push_all(
        &self,
        targets: Vec<PushTarget>,
        now: OffsetDateTime,
    ) -> Vec<(PushTarget, Outcome)> {
        let active = self.active.read().ok().and_then(|a| a.clone());
        let expiration = (now + self.options.expiration).unix_timestamp().to_string();
        futures_util::stream::iter(targets)
            .map(|target| {
                let (active, expiration) = (active.clone(), expiration.clone());
                async move {
                    let outcome = match &active {
                        None => Outcome::NoCertificate,
                        Some(a) => self.push_with_retries(a, &target, &expiration).await,
                    };
                    self.metrics.count(&outcome);
                    (target, outcome)
                }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await
    }

    async fn push_with_retries(&self, active: &Active, target: &PushTarget, expiration: &str) -> Outcome {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            if self.circuit_open() {
                return Outcome::CircuitOpen;
            }
            let outcome = self.push_once(active, target, expiration).await;
            if !outcome.transient() || attempt >= ATTEMPTS {
                self.settle(&outcome);
                return outcome;
            }
            self.metrics.retries.fetch_add(1, Ordering::Relaxed);
            // Full jitter: a thundering herd of retries must not hit Apple in lockstep.
            let jittered = backoff.mul_f64(0.5 + rand::random::<f64>());
            tokio::time::sleep(jittered).await;
            backoff *= 4;
            attempt += 1;
        }
    }

    async fn push_once(&self, active: &Active, target: &PushTarget, expiration: &str) -> Outcome {
        let url = format!("{}/3/device/{}", self.options.base_url, target.token_hex);
        let body = serde_json::json!({ "mdm": target.push_magic }).to_string();
        let sent = active
            .http
            .post(url)
            .header("apns-topic", &active.topic)
            .header("apns-push-type", "mdm")
            .header("apns-priority", "10")
            .header("apns-expiration", expiration)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Transport(error_chain(&e)),
        };
        let status = response.status().as_u16();
        if status == 200 {
            return Outcome::Delivered;
        }
        let reason = response
            .json::<ApnsError>()
            .await
            .ok()
            .and_then(|e| e.reason)
            .unwrap_or_default();
        match (status, reason.as_str()) {
            (410, _) => Outcome::Unregistered,
            (400, "BadDeviceToken") => Outcome::BadDeviceToken,
            (403, _) => Outcome::CertificateRejected(reason),
            (429, _) => Outcome::RateLimited,
            (500..=599, _) => Outcome::ServerError(status),
            _ => Outcome::Rejected { status, reason },
        }
    }
}

/// The error and its causes on one line (hyper hides h2 GOAWAY reasons in the chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::apns::MockResponse;
    use crate::sim::apns::testing::{pki, start_mock};

    fn sender(base_url: String) -> (Sender, Arc<PushMetrics>) {
        let metrics = Arc::new(PushMetrics::default());
        let p = pki();
        let key = p.client_identity_pem.replace(&p.client_cert_pem, "");
        let identity =
            citadel_certs::push::identity_from_pem(&p.client_cert_pem, &citadel_certs::SecretPem::new(key))
                .unwrap();
        let s = Sender::new(
            SenderOptions {
                base_url,
                proxy: None,
                extra_roots_pem: Some(p.server_ca_pem.clone()),
                expiration: time::Duration::days(1),
                concurrency: 50,
            },
            Arc::clone(&metrics),
        );
        s.install(&identity).unwrap();
        (s, metrics)
    }

    fn targets(n: usize) -> Vec<PushTarget> {
        (0..n)
            .map(|i| PushTarget {
                enrollment_id: format!("d{i}"),
                token_hex: format!("{i:064x}"),
                push_magic: format!("m{i}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_the_circuit_opens() {
        let mock = start_mock(100).await;
        let (sender, metrics) = sender(mock.base_url());
        let now = OffsetDateTime::now_utc();

        // 503 until Apple recovers 150 ms later: the push is retried and gets through.
        mock.set_default_response(MockResponse::error(503, "ServiceUnavailable"));
        let recovery = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            mock.reset_responses();
        };
        let (out, ()) = tokio::join!(sender.push_all(targets(1), now), recovery);
        assert_eq!(out[0].1, Outcome::Delivered);
        let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses.first(), Some(&503));
        assert_eq!(statuses.last(), Some(&200));
        assert!(statuses.len() >= 2);

        // A lasting 429: every push tries ATTEMPTS times, then counts as failed; enough
        // consecutive failures open the circuit, and later pushes are not attempted.
        mock.clear();
        mock.set_default_response(MockResponse::error(429, "TooManyRequests"));
        let out = sender.push_all(targets(BREAKER_THRESHOLD as usize), now).await;
        assert!(out.iter().all(|(_, o)| *o == Outcome::RateLimited), "{out:?}");
        assert_eq!(mock.count(), BREAKER_THRESHOLD as usize * ATTEMPTS as usize);
        assert!(metrics.retries.load(Ordering::Relaxed) >= u64::from(BREAKER_THRESHOLD * (ATTEMPTS - 1)));
        let out = sender.push_all(targets(3), now).await;
        assert!(out.iter().all(|(_, o)| *o == Outcome::CircuitOpen), "{out:?}");
        assert_eq!(
            mock.count(),
            BREAKER_THRESHOLD as usize * ATTEMPTS as usize,
            "nothing sent while open"
        );

        // Permanent answers are not retried.
        mock.reset_responses();
        mock.clear();
        let (sender, _) = self::sender(mock.base_url());
        mock.set_response(&format!("{:064x}", 0), MockResponse::unregistered(1));
        mock.set_response(&format!("{:064x}", 1), MockResponse::error(400, "BadDeviceToken"));
        mock.set_response(
            &format!("{:064x}", 2),
            MockResponse::error(400, "TopicDisallowed"),
        );
        let mut out = sender.push_all(targets(4), now).await;
        out.sort_by(|a, b| a.0.enrollment_id.cmp(&b.0.enrollment_id));
        let outcomes: Vec<Outcome> = out.into_iter().map(|(_, o)| o).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Unregistered,
                Outcome::BadDeviceToken,
                Outcome::Rejected {
                    status: 400,
                    reason: "TopicDisallowed".into()
                },
                Outcome::Delivered
            ]
        );
        assert_eq!(mock.count(), 4, "one attempt each");
    }
}
