//! The fleet simulator behind `citadel simulate`: virtual Apple devices that enrol and run MDM
//! sessions over the real network protocol — profile download, SCEP, signed (or mTLS)
//! check-ins, `/mdm/connect` sessions woken by push or by polling — and the measurements taken
//! while they do. Nothing here reads the appliance's store: it can drive a remote appliance.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use citadel_certs::cms::verify_attached;
use citadel_certs::scep::client::{
    CertRepOutcome, DeviceIdentity, DeviceKey, DeviceRequest, ca_certificates,
};
use citadel_certs::{CertificateAuthority, SecretPem, ServerIdentity};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use plist::{Dictionary, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};

use super::apns::{self, MockApns, MockApnsConfig, MockResponse};
use super::device::{Device, Identity, Platform};
use super::{lock, read, write};
use crate::clock::SharedClock;

/// How long a device waits before it reconnects after answering NotNow (real devices come back
/// when the condition that made them refuse has passed).
const NOT_NOW_RETRY: Duration = Duration::from_secs(2);

/// How devices prove who they are on `/mdm/checkin` and `/mdm/connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A detached CMS signature of each body in the `Mdm-Signature` header.
    Signature,
    /// The SCEP identity as TLS client certificate.
    MutualTls,
}

impl FromStr for AuthMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "signature" => Ok(Self::Signature),
            "mtls" => Ok(Self::MutualTls),
            other => Err(format!("unknown auth mode {other:?} (signature or mtls)")),
        }
    }
}

/// Where each device gets its enrollment profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileSource {
    /// `GET /api/v1/enrollment/profile` with the admin API token.
    ApiToken,
    /// A one-time link made with the API token, then downloaded without it (as an end user).
    Link,
}

impl FromStr for ProfileSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "api" => Ok(Self::ApiToken),
            "link" => Ok(Self::Link),
            other => Err(format!("unknown profile source {other:?} (api or link)")),
        }
    }
}

/// The share of each platform in the fleet, e.g. `iphone=60,ipad=20,mac=20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub iphone: u32,
    pub ipad: u32,
    pub mac: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            iphone: 60,
            ipad: 20,
            mac: 20,
        }
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut mix = Mix {
            iphone: 0,
            ipad: 0,
            mac: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not platform=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{weight:?} is not a whole number"))?;
            match name.trim() {
                "iphone" => mix.iphone = weight,
                "ipad" => mix.ipad = weight,
                "mac" => mix.mac = weight,
                other => return Err(format!("unknown platform {other:?} (iphone, ipad or mac)")),
            }
        }
        if mix.iphone.saturating_add(mix.ipad).saturating_add(mix.mac) == 0 {
            return Err("the mix must give at least one platform a weight".into());
        }
        Ok(mix)
    }
}

impl Mix {
    /// Platforms for `n` devices, interleaved in proportion (smooth weighted round robin), so
    /// that a small fleet has every platform too.
    pub fn assign(&self, n: usize) -> Vec<Platform> {
        let weights = [
            (Platform::Iphone, i64::from(self.iphone)),
            (Platform::Ipad, i64::from(self.ipad)),
            (Platform::Mac, i64::from(self.mac)),
        ];
        let total: i64 = weights.iter().map(|w| w.1).sum();
        let mut current = [0i64; 3];
        (0..n)
            .map(|_| {
                let mut best = 0;
                for (i, (_, w)) in weights.iter().enumerate() {
                    current[i] += w;
                    if current[i] > current[best] {
                        best = i;
                    }
                }
                current[best] -= total;
                weights[best].0
            })
            .collect()
    }
}

/// Everything `citadel simulate` is told.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Base URL of the appliance's API, e.g. `https://mdm.example.org:8443`.
    pub server: String,
    /// Trust anchors for the appliance's TLS certificate (PEM).
    pub ca_pem: String,
    pub api_token: String,
    pub devices: usize,
    /// Devices enrolling, or sessions running, at the same time.
    pub concurrency: usize,
    pub mix: Mix,
    pub not_now_rate: f64,
    pub seed: u64,
    pub auth: AuthMode,
    pub profile_source: ProfileSource,
    /// Reuse this many RSA keys across devices instead of one new key each (0): generating
    /// keys costs the simulator more than enrolment costs the server.
    pub key_pool: usize,
    /// Sign each device's Idle once and replay it, so that a load test measures the server
    /// rather than the simulator's RSA signing.
    pub replay: bool,
    pub request_timeout: Duration,
}

impl FleetOptions {
    pub fn new(server: impl Into<String>, ca_pem: impl Into<String>, api_token: impl Into<String>) -> Self {
        Self {
            server: server.into().trim_end_matches('/').to_owned(),
            ca_pem: ca_pem.into(),
            api_token: api_token.into(),
            devices: 10,
            concurrency: 8,
            mix: Mix::default(),
            not_now_rate: 0.0,
            seed: 1,
            auth: AuthMode::Signature,
            profile_source: ProfileSource::ApiToken,
            key_pool: 0,
            replay: false,
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid option: {0}")]
    Options(String),
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
    #[error("the push listener cannot start: {0}")]
    Push(#[from] apns::MockApnsError),
    #[error("{0}")]
    Certificate(#[from] citadel_certs::CertError),
    #[error("the appliance refused: {0}")]
    Api(String),
}

/// A device that has authenticated, with its TokenUpdate ready to send.
struct Authenticated {
    device: SimDevice,
    token_update: SignedMessage,
    checkin_url: String,
}

/// A request as a device sends it: a plist body and, in signature mode, its signature.
#[derive(Clone)]
struct SignedMessage {
    body: Vec<u8>,
    signature: Option<String>,
}

enum Credentials {
    Signature(Box<DeviceIdentity>),
    MutualTls,
}

/// One enrolled virtual device.
struct SimDevice {
    udid: String,
    token_hex: String,
    connect_url: String,
    checkin_url: String,
    topic: String,
    /// Set once the device has told the server it left (CheckOut).
    checked_out: AtomicBool,
    client: reqwest::Client,
    credentials: Credentials,
    idle: Option<SignedMessage>,
    /// An answer signed before its command was queued (`--replay` with `--command`): sent
    /// instead of signing anew when the answer to the command that arrives is the same bytes.
    presigned: Mutex<Option<SignedMessage>>,
    state: Mutex<Device>,
    busy: AtomicBool,
    again: AtomicBool,
    gone: AtomicBool,
}

/// What a device looks like from outside at the end: what it did, for tests to compare with
/// what the appliance says.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceState {
    pub udid: String,
    pub serial_number: String,
    pub platform: &'static str,
    pub profiles: Vec<String>,
    pub locked: bool,
    pub lost_mode: bool,
    pub erased: bool,
    /// Its enrollment profile was removed; it checked out.
    pub retired: bool,
    pub passcode_cleared: bool,
    pub restarts: u32,
    pub locations_reported: u32,
    pub commands_answered: u32,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Default)]
struct Stats {
    roundtrips: AtomicU64,
    sessions: AtomicU64,
    pushes: AtomicU64,
    presigned_sent: AtomicU64,
    request_latency: Mutex<Option<Histogram<u64>>>,
    command_latency: Mutex<Option<Histogram<u64>>>,
    answers: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn record(slot: &Mutex<Option<Histogram<u64>>>, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut h = lock(slot);
        if h.is_none() {
            // 1 µs to 10 min at 3 significant digits (constant bounds: this does not fail).
            *h = Histogram::new_with_bounds(1, 600_000_000, 3).ok();
        }
        if let Some(h) = h.as_mut() {
            // Values beyond the bounds are clamped rather than lost.
            h.saturating_record(micros);
        }
    }

    fn error(&self, kind: impl Into<String>) {
        let kind = kind.into();
        tracing::debug!(%kind, "simulated device error");
        *lock(&self.errors).entry(kind).or_default() += 1;
    }

    fn percentiles(slot: &Mutex<Option<Histogram<u64>>>) -> Percentiles {
        lock(slot).as_ref().map(Percentiles::of).unwrap_or_default()
    }

    fn reset_latency(&self) {
        *lock(&self.request_latency) = None;
        self.roundtrips.store(0, Ordering::Relaxed);
    }

    fn roundtrips(&self) -> u64 {
        self.roundtrips.load(Ordering::Relaxed)
    }
}

/// Commands the simulator queued itself: when, and how many devices have given a final
/// answer, so that enqueue → ack latency and fan-out completion can be measured.
#[derive(Default)]
struct Tracked {
    commands: Mutex<HashMap<String, TrackedCommand>>,
    /// Acknowledgements of commands not tracked yet, kept only while an `enqueue` is waiting
    /// for the API's reply (a polling device can fetch and answer a command before that reply
    /// names it): the number of such enqueues, and the counts by UUID.
    early: Mutex<(usize, HashMap<String, usize>)>,
    changed: Notify,
}

struct TrackedCommand {
    enqueued_at: Instant,
    targets: usize,
    answered: usize,
}

/// The devices enrolled so far, and by push token (how a push finds its device).
#[derive(Default)]
struct Enrolled {
    devices: Vec<Arc<SimDevice>>,
    by_token: HashMap<String, Arc<SimDevice>>,
}

/// A fleet of virtual devices against one appliance.
pub struct Fleet {
    options: FleetOptions,
    http: reqwest::Client,
    enrolled: RwLock<Enrolled>,
    stats: Stats,
    tracked: Tracked,
    limiter: Semaphore,
    keys: Vec<Arc<DeviceKey>>,
    next_key: AtomicUsize,
    push: Mutex<Option<MockApns>>,
    stopping: AtomicBool,
    /// Certificate validity and the time a wiped device's push token became invalid.
    clock: SharedClock,
    /// Devices to run a session for (woken by push or by a NotNow retry); read by one
    /// dispatcher task started with the first phase that needs it.
    wake: tokio::sync::mpsc::UnboundedSender<Arc<SimDevice>>,
    woken: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Arc<SimDevice>>>>,
}

/// The outcome of enrolling.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct EnrolPhase {
    pub attempted: usize,
    pub enrolled: usize,
    pub seconds: f64,
    pub per_second: f64,
}

/// The outcome of a session phase.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SessionPhase {
    pub roundtrips: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub latency: Percentiles,
}

/// The longest stretch [`Fleet::hammer_beside_ceiling`] drives one side before the other.
const CEILING_SLICE: Duration = Duration::from_secs(3);

/// Slices of one side of [`Fleet::hammer_beside_ceiling`], added up.
#[derive(Default)]
struct PhaseTotal {
    roundtrips: u64,
    seconds: f64,
    latency: Option<Histogram<u64>>,
}

impl PhaseTotal {
    fn add(&mut self, slice: &SessionPhase, latency: Option<Histogram<u64>>) {
        self.roundtrips += slice.roundtrips;
        self.seconds += slice.seconds;
        match (&mut self.latency, latency) {
            (Some(total), Some(more)) => {
                // Same bounds on both sides (`Stats::record`): adding cannot fail.
                let _ = total.add(&more);
            }
            (total @ None, more) => *total = more,
            (Some(_), None) => {}
        }
    }

    fn phase(self) -> SessionPhase {
        SessionPhase {
            roundtrips: self.roundtrips,
            seconds: self.seconds,
            per_second: self.roundtrips as f64 / self.seconds.max(1e-9),
            latency: self.latency.as_ref().map(Percentiles::of).unwrap_or_default(),
        }
    }
}

fn https_client(
    ca_pem: &str,
    timeout: Duration,
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, SimError> {
    let roots = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
        .map_err(|e| SimError::Client(format!("the CA file is not PEM certificates: {e}")))?;
    if roots.is_empty() {
        return Err(SimError::Client("the CA file holds no certificate".into()));
    }
    // HTTP/1.1 with keep-alive: each device (or pooled connection) is one TLS connection, as
    // real devices are, instead of all traffic multiplexed on one HTTP/2 connection.
    let mut builder = reqwest::Client::builder()
        .tls_certs_only(roots)
        .http1_only()
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("citadel-simulator/", env!("CARGO_PKG_VERSION")));
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| SimError::Client(e.to_string()))
}

fn xml(dict: Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a Dictionary of plain values into a Vec cannot fail.
    if plist::to_writer_xml(&mut out, &Value::Dictionary(dict)).is_err() {
        out.clear();
    }
    out
}

/// The parts of an enrollment profile a device acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentProfile {
    /// The profile's `PayloadIdentifier`: removing it unenrolls the device.
    pub identifier: String,
    pub scep_url: String,
    pub challenge: String,
    pub common_name: String,
    pub server_url: String,
    pub checkin_url: String,
    pub topic: String,
    pub sign_message: bool,
}

impl EnrollmentProfile {
    /// Reads the (already verified and unwrapped) profile plist.
    pub fn parse(content: &[u8]) -> Result<Self, String> {
        let top: Dictionary = plist::from_bytes(content).map_err(|e| format!("not a plist: {e}"))?;
        let payloads = top
            .get("PayloadContent")
            .and_then(Value::as_array)
            .ok_or("no PayloadContent array")?;
        let of_type = |t: &str| {
            payloads
                .iter()
                .filter_map(Value::as_dictionary)
                .find(|p| p.get("PayloadType").and_then(Value::as_string) == Some(t))
        };
        let scep = of_type("com.apple.security.scep")
            .and_then(|p| p.get("PayloadContent"))
            .and_then(Value::as_dictionary)
            .ok_or("no SCEP payload")?;
        let mdm = of_type("com.apple.mdm").ok_or("no MDM payload")?;
        let string = |d: &Dictionary, k: &str| {
            d.get(k)
                .and_then(Value::as_string)
                .map(str::to_owned)
                .ok_or_else(|| format!("{k} is missing"))
        };
        // Subject is an array of RDNs, each an array of [type, value] pairs.
        let common_name = scep
            .get("Subject")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_array)
            .find(|pair| pair.first().and_then(Value::as_string) == Some("CN"))
            .and_then(|pair| pair.get(1).and_then(Value::as_string))
            .unwrap_or("device")
            .to_owned();
        let server_url = string(mdm, "ServerURL")?;
        Ok(Self {
            identifier: string(&top, "PayloadIdentifier")?,
            scep_url: string(scep, "URL")?,
            challenge: string(scep, "Challenge")?,
            common_name,
            checkin_url: mdm
                .get("CheckInURL")
                .and_then(Value::as_string)
                .map_or_else(|| server_url.clone(), str::to_owned),
            server_url,
            topic: string(mdm, "Topic")?,
            sign_message: mdm
                .get("SignMessage")
                .and_then(Value::as_boolean)
                .unwrap_or(false),
        })
    }
}

/// Short, stable names for failures, so that the report can count them by kind.
fn http_kind(step: &str, e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else if let Some(status) = e.status() {
        format!("HTTP {}", status.as_u16())
    } else if e.is_body() || e.is_decode() {
        "response body".to_owned()
    } else {
        // The innermost cause says what happened (reset, closed, TLS alert...).
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        format!("request failed ({cause})")
    };
    format!("{step}: {what}")
}

async fn send_mdm(
    client: &reqwest::Client,
    url: &str,
    message: &SignedMessage,
) -> Result<(u16, Vec<u8>), reqwest::Error> {
    let mut request = client
        .put(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-apple-aspen-mdm")
        .body(message.body.clone());
    if let Some(signature) = &message.signature {
        request = request.header("Mdm-Signature", signature);
    }
    let response = request.send_resending().await?;
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    Ok((status, body.to_vec()))
}

/// A request written to a kept-alive connection just as the server closed it for idleness
/// gets no answer at all; a device sends it once more on a fresh connection (the server had
/// not read it; a result it had read would be recorded once anyway).
trait SendResending {
    async fn send_resending(self) -> Result<reqwest::Response, reqwest::Error>;
}

impl SendResending for reqwest::RequestBuilder {
    async fn send_resending(self) -> Result<reqwest::Response, reqwest::Error> {
        let again = self.try_clone();
        match (self.send().await, again) {
            (Err(e), Some(again)) if closed_before_answer(&e) => again.send().await,
            (result, _) => result,
        }
    }
}

/// The connection closed before any answer began (hyper's "incomplete message").
fn closed_before_answer(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

impl Fleet {
    pub fn new(options: FleetOptions, clock: SharedClock) -> Result<Arc<Self>, SimError> {
        if options.devices == 0 {
            return Err(SimError::Options("--devices must be at least 1".into()));
        }
        if options.concurrency == 0 {
            return Err(SimError::Options("--concurrency must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&options.not_now_rate) {
            return Err(SimError::Options("--notnow-rate is a probability, 0 to 1".into()));
        }
        if !options.server.starts_with("https://") {
            return Err(SimError::Options("--server must be an https:// URL".into()));
        }
        let http = https_client(&options.ca_pem, options.request_timeout, None)?;
        // Key generation is slow (tens of ms a key): use every core.
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let per_thread = options.key_pool.div_ceil(threads.max(1));
        let keys = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let n = per_thread.min(options.key_pool.saturating_sub(t * per_thread));
                    scope.spawn(move || {
                        (0..n)
                            .map(|_| DeviceKey::generate().map(Arc::new))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            let mut keys = Vec::with_capacity(options.key_pool);
            for worker in workers {
                match worker.join() {
                    Ok(generated) => keys.extend(generated?),
                    Err(_) => return Err(SimError::Options("key generation failed".into())),
                }
            }
            Ok(keys)
        })?;
        let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            wake,
            woken: Mutex::new(Some(woken)),
            clock,
            limiter: Semaphore::new(options.concurrency),
            options,
            http,
            enrolled: RwLock::new(Enrolled::default()),
            stats: Stats::default(),
            tracked: Tracked::default(),
            keys,
            next_key: AtomicUsize::new(0),
            push: Mutex::new(None),
            stopping: AtomicBool::new(false),
        }))
    }

    /// Starts the APNs-compatible endpoint the appliance pushes to (`apns.base_url`); each
    /// push wakes the device it names. `tls` is its certificate chain and key; without one, a
    /// throwaway CA is made and its certificate returned for the appliance's `apns.ca_file`.
    /// Returns the bound address and the CA PEM to trust.
    pub async fn listen_for_pushes(
        self: &Arc<Self>,
        listen: SocketAddr,
        tls: Option<(String, SecretPem)>,
    ) -> Result<(SocketAddr, Option<String>), SimError> {
        let now = self.clock.now();
        let (chain, key, ca) = match tls {
            Some((chain, key)) => (chain, key, None),
            None => {
                let ca = CertificateAuthority::generate("citadel simulator push", now)?;
                let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
                if !listen.ip().is_unspecified() {
                    names.push(listen.ip().to_string());
                }
                let issued = ca.issue_server_certificate(&ServerIdentity::new(names)?, now)?;
                (
                    issued.cert_pem,
                    issued.key_pem,
                    Some(ca.certificate_pem().to_owned()),
                )
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut config = MockApnsConfig::new(listen, chain, key);
        config.forward = Some(tx);
        let mock = apns::start(config).await?;
        mock.set_count_only(true);
        let addr = mock.addr();
        *lock(&self.push) = Some(mock);
        let fleet = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(token) = rx.recv().await {
                fleet.stats.pushes.fetch_add(1, Ordering::Relaxed);
                let device = read(&fleet.enrolled).by_token.get(&token).cloned();
                match device {
                    // The dispatcher is gone only when the fleet is shutting down.
                    Some(device) => {
                        let _ = fleet.wake.send(device);
                    }
                    None => fleet.stats.error("push: unknown device token"),
                }
            }
        });
        self.start_dispatcher();
        Ok((addr, ca))
    }

    /// Starts the task that runs a session for each woken device (once).
    fn start_dispatcher(self: &Arc<Self>) {
        let Some(mut woken) = lock(&self.woken).take() else {
            return;
        };
        let fleet = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(device) = woken.recv().await {
                let Some(fleet) = fleet.upgrade() else {
                    break;
                };
                tokio::spawn(async move { fleet.session(&device).await });
            }
        });
    }

    fn device_key(&self) -> Option<Arc<DeviceKey>> {
        if self.keys.is_empty() {
            return None;
        }
        let i = self.next_key.fetch_add(1, Ordering::Relaxed) % self.keys.len();
        Some(Arc::clone(&self.keys[i]))
    }

    /// Enrols devices `0..devices`, `concurrency` at a time; calls `progress` after each.
    pub async fn enrol_all(self: &Arc<Self>, progress: impl Fn(bool) + Send + Sync) -> EnrolPhase {
        self.start_dispatcher();
        let platforms = self.options.mix.assign(self.options.devices);
        let started = Instant::now();
        // Each enrolment is its own task, so that the signing and key work spreads over the
        // runtime's threads instead of running inside this one.
        let enrolled = futures_util::stream::iter(platforms.into_iter().enumerate())
            .map(|(index, platform)| {
                let fleet = Arc::clone(self);
                let task = tokio::spawn(async move {
                    let enrolled = match fleet.enrol(index as u64, platform).await {
                        Ok(authenticated) => fleet.finish_enrolment(authenticated).await,
                        Err(kind) => Err(kind),
                    };
                    match enrolled {
                        Ok(()) => true,
                        Err(kind) => {
                            fleet.stats.error(kind);
                            false
                        }
                    }
                });
                async move { task.await.unwrap_or(false) }
            })
            .buffer_unordered(self.options.concurrency)
            .fold(0usize, |n, ok| {
                progress(ok);
                async move { n + usize::from(ok) }
            })
            .await;
        let seconds = started.elapsed().as_secs_f64();
        EnrolPhase {
            attempted: self.options.devices,
            enrolled,
            seconds,
            per_second: enrolled as f64 / seconds.max(1e-9),
        }
    }

    /// One device's enrolment up to its TokenUpdate: profile, SCEP, Authenticate. Errors are a
    /// kind.
    async fn enrol(self: &Arc<Self>, index: u64, platform: Platform) -> Result<Authenticated, String> {
        let options = &self.options;
        let identity = Identity::generate(options.seed, index, platform);
        let mut rng = StdRng::seed_from_u64(options.seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));

        let signed_profile = self.download_profile().await?;
        let (content, _) = verify_attached(&signed_profile).map_err(|e| format!("profile: {e}"))?;
        let profile = EnrollmentProfile::parse(&content).map_err(|e| format!("profile: {e}"))?;

        let ca_body = self
            .http
            .get(format!("{}?operation=GetCACert", profile.scep_url))
            .send_resending()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| http_kind("scep GetCACert", &e))?
            .bytes()
            .await
            .map_err(|e| http_kind("scep GetCACert", &e))?;
        let ca_certs = ca_certificates(&ca_body).map_err(|e| format!("scep GetCACert: {e}"))?;
        let ra = ca_certs
            .first()
            .cloned()
            .ok_or("scep GetCACert: no certificate")?;
        let pooled = self.device_key();
        let (cn, challenge) = (profile.common_name.clone(), profile.challenge.clone());
        let transaction = format!("sim-{}-{index}", options.seed);
        let ra_for_request = ra.clone();
        let (request, message) = tokio::task::spawn_blocking(move || {
            let key = match pooled {
                Some(key) => key,
                None => Arc::new(DeviceKey::generate()?),
            };
            let request = DeviceRequest::with_key(&cn, &challenge, key)?;
            let message = request.pkcs_req(&ra_for_request, &transaction)?;
            Ok::<_, citadel_certs::CertError>((request, message))
        })
        .await
        .map_err(|e| format!("scep: {e}"))?
        .map_err(|e| format!("scep request: {e}"))?;
        let rep = self
            .http
            .post(format!("{}?operation=PKIOperation", profile.scep_url))
            .header(reqwest::header::CONTENT_TYPE, "application/x-pki-message")
            .body(message)
            .send_resending()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| http_kind("scep PKIOperation", &e))?
            .bytes()
            .await
            .map_err(|e| http_kind("scep PKIOperation", &e))?;
        let certificate = match request.open_cert_rep(&rep, &ra) {
            Ok(CertRepOutcome::Issued { certificate, .. }) => certificate,
            Ok(CertRepOutcome::Failed(info)) => return Err(format!("scep: refused ({info:?})")),
            Ok(CertRepOutcome::Pending) => return Err("scep: pending".into()),
            Err(e) => return Err(format!("scep CertRep: {e}")),
        };
        let signer =
            DeviceIdentity::new(request.key(), &certificate).map_err(|e| format!("identity: {e}"))?;
        let (client, credentials) = match options.auth {
            AuthMode::Signature => (self.http.clone(), Credentials::Signature(Box::new(signer))),
            AuthMode::MutualTls => {
                let pem = signer.tls_identity_pem().map_err(|e| format!("identity: {e}"))?;
                let tls = reqwest::Identity::from_pem(pem.expose().as_bytes())
                    .map_err(|e| format!("identity: {e}"))?;
                let client = https_client(&options.ca_pem, options.request_timeout, Some(tls))
                    .map_err(|e| e.to_string())?;
                (client, Credentials::MutualTls)
            }
        };
        let token: [u8; 32] = rng.random();
        let mut device = SimDevice {
            udid: identity.udid.clone(),
            token_hex: hex::encode(token),
            connect_url: profile.server_url.clone(),
            checkin_url: profile.checkin_url.clone(),
            topic: profile.topic.clone(),
            checked_out: AtomicBool::new(false),
            client,
            credentials,
            idle: None,
            presigned: Mutex::new(None),
            state: Mutex::new(
                Device::new(identity.clone(), options.seed ^ index, options.not_now_rate)
                    .with_identity_certificate(certificate.clone())
                    .with_enrollment_profile(profile.identifier.clone()),
            ),
            busy: AtomicBool::new(false),
            again: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        };

        let authenticate = device.sign(identity.authenticate(&profile.topic))?;
        self.checkin(&device, &profile.checkin_url, &authenticate, "Authenticate")
            .await?;
        let mut update = Dictionary::new();
        update.insert("MessageType".into(), Value::String("TokenUpdate".into()));
        update.insert("Topic".into(), Value::String(profile.topic.clone()));
        update.insert("UDID".into(), Value::String(identity.udid.clone()));
        update.insert("Token".into(), Value::Data(token.to_vec()));
        update.insert(
            "PushMagic".into(),
            Value::String(
                uuid::Builder::from_random_bytes(rng.random())
                    .into_uuid()
                    .to_string()
                    .to_uppercase(),
            ),
        );
        if platform != Platform::Mac {
            let unlock: [u8; 32] = rng.random();
            update.insert("UnlockToken".into(), Value::Data(unlock.to_vec()));
        }
        update.insert("AwaitingConfiguration".into(), Value::Boolean(false));
        let token_update = device.sign(update)?;
        if options.replay {
            device.idle = Some(device.sign(device.idle_status())?);
        }
        Ok(Authenticated {
            device,
            token_update,
            checkin_url: profile.checkin_url.clone(),
        })
    }

    /// Sends the device's TokenUpdate. It is registered for pushes first, as a real device
    /// has its token before it tells the server: the server may push at once (inventory).
    async fn finish_enrolment(self: &Arc<Self>, authenticated: Authenticated) -> Result<(), String> {
        let Authenticated {
            device,
            token_update,
            checkin_url,
        } = authenticated;
        let device = Arc::new(device);
        write(&self.enrolled)
            .by_token
            .insert(device.token_hex.clone(), Arc::clone(&device));
        match self
            .checkin(&device, &checkin_url, &token_update, "TokenUpdate")
            .await
        {
            Ok(()) => {
                write(&self.enrolled).devices.push(device);
                Ok(())
            }
            Err(kind) => {
                write(&self.enrolled).by_token.remove(&device.token_hex);
                Err(kind)
            }
        }
    }

    async fn download_profile(&self) -> Result<Vec<u8>, String> {
        let options = &self.options;
        let url = match options.profile_source {
            ProfileSource::ApiToken => format!("{}/api/v1/enrollment/profile", options.server),
            ProfileSource::Link => {
                #[derive(serde::Deserialize)]
                struct Link {
                    url: String,
                }
                let link: Link = self
                    .http
                    .post(format!("{}/api/v1/enrollment/links", options.server))
                    .bearer_auth(&options.api_token)
                    .json(&serde_json::json!({}))
                    .send_resending()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| http_kind("enrollment link", &e))?
                    .json()
                    .await
                    .map_err(|e| http_kind("enrollment link", &e))?;
                link.url
            }
        };
        let mut request = self.http.get(url);
        if options.profile_source == ProfileSource::ApiToken {
            request = request.bearer_auth(&options.api_token);
        }
        let body = request
            .send_resending()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| http_kind("profile", &e))?
            .bytes()
            .await
            .map_err(|e| http_kind("profile", &e))?;
        Ok(body.to_vec())
    }

    async fn checkin(
        &self,
        device: &SimDevice,
        url: &str,
        message: &SignedMessage,
        what: &str,
    ) -> Result<(), String> {
        let started = Instant::now();
        let (status, _) = send_mdm(&device.client, url, message)
            .await
            .map_err(|e| http_kind(&format!("checkin {what}"), &e))?;
        Stats::record(&self.stats.request_latency, started.elapsed());
        if status != 200 {
            return Err(format!("checkin {what}: HTTP {status}"));
        }
        Ok(())
    }

    /// Runs sessions for `device` until it has nothing more to do; a wake-up that arrives
    /// while a session runs makes it run another one afterwards.
    /// What a device does when its enrollment profile is removed (CheckOutWhenRemoved).
    async fn check_out(&self, device: &SimDevice) {
        let sent = match device.sign(device.check_out_message()) {
            Ok(message) => {
                self.checkin(device, &device.checkin_url, &message, "CheckOut")
                    .await
            }
            Err(kind) => Err(kind),
        };
        if let Err(kind) = sent {
            self.stats.error(kind);
        }
    }

    async fn session(self: &Arc<Self>, device: &Arc<SimDevice>) {
        // Ask first, then try to run: whoever holds `busy` then sees the request. (Setting
        // `again` only after finding the device busy lost a wake-up that landed between the
        // running session's last check and its release.)
        device.again.store(true, Ordering::SeqCst);
        if device.busy.swap(true, Ordering::SeqCst) {
            return;
        }
        loop {
            let not_now = {
                let Ok(_permit) = self.limiter.acquire().await else {
                    device.busy.store(false, Ordering::SeqCst);
                    break;
                };
                device.again.store(false, Ordering::SeqCst);
                self.one_session(device, &device.connect_url, true).await
            };
            if not_now && !self.stopping.load(Ordering::Relaxed) {
                let wake = self.wake.clone();
                let device = Arc::clone(device);
                tokio::spawn(async move {
                    tokio::time::sleep(NOT_NOW_RETRY).await;
                    let _ = wake.send(device);
                });
            }
            device.busy.store(false, Ordering::SeqCst);
            let retired = lock(&device.state).retired;
            if retired && !device.checked_out.swap(true, Ordering::AcqRel) {
                self.check_out(device).await;
            }
            if device.gone.load(Ordering::Acquire)
                || !device.again.load(Ordering::SeqCst)
                || device.busy.swap(true, Ordering::SeqCst)
            {
                break;
            }
        }
    }

    /// Idle, then answer each command until the server has none left. Returns whether the
    /// device answered NotNow to anything (and so should come back).
    async fn one_session(&self, device: &SimDevice, url: &str, answer: bool) -> bool {
        if device.gone.load(Ordering::Acquire) {
            return false;
        }
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        let mut message = match &device.idle {
            Some(idle) => idle.clone(),
            None => match device.sign(device.idle_status()) {
                Ok(m) => m,
                Err(kind) => {
                    self.stats.error(kind);
                    return false;
                }
            },
        };
        let mut not_now = false;
        let mut acked: Option<String> = None;
        loop {
            let started = Instant::now();
            let result = send_mdm(&device.client, url, &message).await;
            Stats::record(&self.stats.request_latency, started.elapsed());
            self.stats.roundtrips.fetch_add(1, Ordering::Relaxed);
            let body = match result {
                Ok((200, body)) => body,
                Ok((status, _)) => {
                    self.stats.error(format!("connect: HTTP {status}"));
                    return not_now;
                }
                Err(e) => {
                    self.stats.error(http_kind("connect", &e));
                    return not_now;
                }
            };
            if let Some(uuid) = acked.take() {
                self.acknowledged(&uuid);
            }
            if device.gone.load(Ordering::Acquire) {
                // The EraseDevice acknowledgement went out; the device wipes itself now.
                return false;
            }
            if body.is_empty() || !answer {
                return not_now;
            }
            let Ok(command) = plist::from_bytes::<Dictionary>(&body) else {
                self.stats
                    .error("connect: the server sent a command that is not a plist");
                return not_now;
            };
            let (result, status, erased) = {
                let mut state = lock(&device.state);
                let result = state.result_message(&command);
                let status = result
                    .get("Status")
                    .and_then(Value::as_string)
                    .unwrap_or_default()
                    .to_owned();
                (result, status, state.erased || state.retired)
            };
            let status: &'static str = match status.as_str() {
                "Acknowledged" => "Acknowledged",
                "NotNow" => "NotNow",
                "Error" => "Error",
                _ => "CommandFormatError",
            };
            *lock(&self.stats.answers).entry(status).or_default() += 1;
            if status == "NotNow" {
                not_now = true;
            } else if let Some(uuid) = command.get("CommandUUID").and_then(Value::as_string) {
                acked = Some(uuid.to_owned());
            }
            if erased {
                device.gone.store(true, Ordering::Release);
                if let Some(push) = lock(&self.push).as_ref() {
                    let now_ms = u64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000)
                        .unwrap_or_default();
                    push.set_response(&device.token_hex, MockResponse::unregistered(now_ms));
                }
            }
            let body = xml(result);
            let presigned = lock(&device.presigned).take_if(|m| m.body == body);
            message = match presigned {
                Some(m) => {
                    self.stats.presigned_sent.fetch_add(1, Ordering::Relaxed);
                    m
                }
                None => match device.sign_body(body) {
                    Ok(m) => m,
                    Err(kind) => {
                        self.stats.error(kind);
                        return not_now;
                    }
                },
            };
        }
    }

    /// Chooses a UUID for `command` (the API's JSON form) and signs every signing device's
    /// answer to it in advance (returns the UUID and how many were signed), as `--replay`
    /// does for Idle, so that a fan-out measures the server rather than the simulator's RSA.
    /// Queue it with [`Fleet::enqueue`] under that UUID. A device whose answer turns out
    /// different (another command came first) signs anew.
    pub async fn presign_answers(&self, command: &serde_json::Value) -> Result<(String, usize), SimError> {
        let uuid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
        let inner: Value = serde_json::from_value(command.clone())
            .map_err(|e| SimError::Options(format!("the command is not plist-shaped: {e}")))?;
        let mut full = Dictionary::new();
        full.insert("Command".into(), inner);
        full.insert("CommandUUID".into(), Value::String(uuid.clone()));
        let full = Arc::new(full);
        let devices: Vec<Arc<SimDevice>> = self
            .live_devices()
            .into_iter()
            .filter(|d| matches!(d.credentials, Credentials::Signature(_)))
            .collect();
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        let chunk = devices.len().div_ceil(workers).max(1);
        let tasks: Vec<_> = devices
            .chunks(chunk)
            .map(|part| {
                let (part, full) = (part.to_vec(), Arc::clone(&full));
                tokio::task::spawn_blocking(move || {
                    for device in part {
                        // A clone answers as the device will: same state, same random draws.
                        let answer = lock(&device.state).clone().result_message(&full);
                        let signed = device.sign(answer)?;
                        *lock(&device.presigned) = Some(signed);
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        for task in tasks {
            task.await
                .map_err(|e| SimError::Options(format!("signing answers: {e}")))?
                .map_err(SimError::Options)?;
        }
        Ok((uuid, devices.len()))
    }

    fn acknowledged(&self, uuid: &str) {
        let mut commands = lock(&self.tracked.commands);
        if let Some(tracked) = commands.get_mut(uuid) {
            tracked.answered += 1;
            Stats::record(&self.stats.command_latency, tracked.enqueued_at.elapsed());
            drop(commands);
            self.tracked.changed.notify_waiters();
        } else {
            // Counted when `enqueue` learns the UUID (same lock order: commands, then early).
            let mut early = lock(&self.tracked.early);
            if early.0 > 0 {
                *early.1.entry(uuid.to_owned()).or_default() += 1;
            }
        }
    }

    /// Queues `command` (the API's JSON form) for `targets` (all enrolled devices when
    /// `None`) through the admin API, under `uuid` if given, and tracks its answers. Returns
    /// the command UUID.
    pub async fn enqueue(
        &self,
        command: serde_json::Value,
        targets: Option<Vec<String>>,
        uuid: Option<&str>,
    ) -> Result<String, SimError> {
        let targets = targets.unwrap_or_else(|| self.enrollment_ids());
        #[derive(serde::Deserialize)]
        struct Created {
            command_uuid: String,
            queued: usize,
        }
        let mut request = serde_json::json!({"targets": targets, "command": command});
        if let Some(uuid) = uuid {
            request["command_uuid"] = uuid.into();
        }
        let started = Instant::now();
        lock(&self.tracked.early).0 += 1;
        let sent = async {
            let response = self
                .http
                .post(format!("{}/api/v1/commands", self.options.server))
                .bearer_auth(&self.options.api_token)
                .json(&request)
                .send()
                .await
                .map_err(|e| SimError::Api(e.to_string()))?;
            let status = response.status();
            let text = response.text().await.map_err(|e| SimError::Api(e.to_string()))?;
            if !status.is_success() {
                return Err(SimError::Api(format!("HTTP {}: {text}", status.as_u16())));
            }
            serde_json::from_str::<Created>(&text).map_err(|e| SimError::Api(e.to_string()))
        }
        .await;
        let created = match sent {
            Ok(c) => c,
            Err(e) => {
                let mut early = lock(&self.tracked.early);
                early.0 = early.0.saturating_sub(1);
                if early.0 == 0 {
                    early.1.clear();
                }
                return Err(e);
            }
        };
        let mut commands = lock(&self.tracked.commands);
        // Devices may have answered already (under the commands lock, no answer can slip
        // between taking these and tracking the command).
        let early = {
            let mut early = lock(&self.tracked.early);
            let n = early.1.remove(&created.command_uuid).unwrap_or(0);
            early.0 = early.0.saturating_sub(1);
            if early.0 == 0 {
                early.1.clear();
            }
            n
        };
        for _ in 0..early {
            Stats::record(&self.stats.command_latency, started.elapsed());
        }
        commands.insert(
            created.command_uuid.clone(),
            TrackedCommand {
                enqueued_at: started,
                targets: created.queued,
                answered: early,
            },
        );
        drop(commands);
        self.tracked.changed.notify_waiters();
        Ok(created.command_uuid)
    }

    /// Waits until every target of `uuid` has given a final answer, or `timeout`. Returns the
    /// number that did.
    pub async fn wait_answered(&self, uuid: &str, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.tracked.changed.notified();
            let (answered, targets) = lock(&self.tracked.commands)
                .get(uuid)
                .map_or((0, 0), |t| (t.answered, t.targets));
            if answered >= targets {
                return answered;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return answered;
            }
        }
    }

    /// One session for every device still in the fleet, `concurrency` at a time (a poll).
    pub async fn poll_all(self: &Arc<Self>) {
        let devices = self.live_devices();
        futures_util::stream::iter(devices)
            .for_each_concurrent(self.options.concurrency, |device| {
                let fleet = Arc::clone(self);
                let task = tokio::spawn(async move { fleet.session(&device).await });
                async move {
                    let _ = task.await;
                }
            })
            .await;
    }

    /// Every device polls every `interval` (spread evenly) until `duration` has passed.
    pub async fn poll_for(self: &Arc<Self>, interval: Duration, duration: Duration) {
        let devices = self.live_devices();
        let n = devices.len().max(1) as u32;
        let deadline = tokio::time::Instant::now() + duration;
        let tasks: Vec<_> = devices
            .into_iter()
            .enumerate()
            .map(|(i, device)| {
                let fleet = Arc::clone(self);
                let offset = interval / n * u32::try_from(i).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    let mut next = tokio::time::Instant::now() + offset;
                    while next < deadline
                        && !device.gone.load(Ordering::Acquire)
                        && !fleet.stopping.load(Ordering::Relaxed)
                    {
                        tokio::time::sleep_until(next).await;
                        fleet.session(&device).await;
                        next += interval;
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Closed-loop load: `concurrency` workers run sessions back to back, round robin over
    /// the fleet, for `duration`. With `ceiling_url`, the same messages go to that trivial
    /// endpoint instead (answers are not read): the ceiling of the stack.
    pub async fn hammer(self: &Arc<Self>, duration: Duration, ceiling_url: Option<&str>) -> SessionPhase {
        self.stats.reset_latency();
        let devices = Arc::new(self.live_devices());
        if devices.is_empty() {
            return SessionPhase {
                roundtrips: 0,
                seconds: 0.0,
                per_second: 0.0,
                latency: Percentiles::default(),
            };
        }
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let deadline = started + duration;
        let workers: Vec<_> = (0..self.options.concurrency)
            .map(|_| {
                let (fleet, devices, next) = (Arc::clone(self), Arc::clone(&devices), Arc::clone(&next));
                let url = ceiling_url.map(str::to_owned);
                tokio::spawn(async move {
                    while Instant::now() < deadline && !fleet.stopping.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed) % devices.len();
                        let device = &devices[i];
                        if device.busy.swap(true, Ordering::AcqRel) {
                            continue;
                        }
                        match &url {
                            Some(url) => fleet.one_session(device, url, false).await,
                            None => fleet.one_session(device, &device.connect_url, true).await,
                        };
                        device.busy.store(false, Ordering::Release);
                    }
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let roundtrips = self.stats.roundtrips.load(Ordering::Relaxed);
        SessionPhase {
            roundtrips,
            seconds,
            per_second: roundtrips as f64 / seconds.max(1e-9),
            latency: Stats::percentiles(&self.stats.request_latency),
        }
    }

    /// Closed-loop load against the appliance and the same against the ceiling at
    /// `ceiling_url`, in alternating slices of at most [`CEILING_SLICE`] until each has had
    /// `duration`: on a shared machine other work comes and goes within seconds, and both
    /// sides should meet the same. Returns the appliance's phase and the ceiling's.
    pub async fn hammer_beside_ceiling(
        self: &Arc<Self>,
        duration: Duration,
        ceiling_url: &str,
    ) -> (SessionPhase, SessionPhase) {
        let mut sides = [PhaseTotal::default(), PhaseTotal::default()];
        let mut left = duration;
        while !left.is_zero() && !self.stopping.load(Ordering::Relaxed) {
            let slice = left.min(CEILING_SLICE);
            for (side, url) in sides.iter_mut().zip([None, Some(ceiling_url)]) {
                let phase = self.hammer(slice, url).await;
                side.add(&phase, lock(&self.stats.request_latency).take());
            }
            left = left.saturating_sub(slice);
        }
        let [appliance, ceiling] = sides.map(PhaseTotal::phase);
        (appliance, ceiling)
    }

    fn live_devices(&self) -> Vec<Arc<SimDevice>> {
        read(&self.enrolled)
            .devices
            .iter()
            .filter(|d| !d.gone.load(Ordering::Acquire))
            .cloned()
            .collect()
    }

    /// Enrollment IDs (UDIDs) of the devices still in the fleet.
    pub fn enrollment_ids(&self) -> Vec<String> {
        self.live_devices().iter().map(|d| d.udid.clone()).collect()
    }

    /// Starts counting round trips and request latency afresh (enrolment is over).
    pub fn start_session_phase(&self) {
        self.stats.reset_latency();
    }

    /// Round trips on `/mdm/connect` since the session phase began.
    pub fn roundtrips(&self) -> u64 {
        self.stats.roundtrips()
    }

    /// Ends the run: no more NotNow retries, polls or load-loop sessions.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Waits until `duration` has passed or [`Fleet::stop`] was called.
    pub async fn wait_or_stop(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline && !self.stopping.load(Ordering::Relaxed) {
            tokio::time::sleep(
                Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }

    /// Each device as it stands, in enrolment order of index.
    pub fn device_states(&self) -> Vec<DeviceState> {
        let mut states: Vec<DeviceState> = read(&self.enrolled)
            .devices
            .iter()
            .map(|d| {
                let s = lock(&d.state);
                DeviceState {
                    udid: d.udid.clone(),
                    serial_number: s.identity.serial_number.clone(),
                    platform: s.identity.platform.name(),
                    profiles: s.profile_identifiers(),
                    locked: s.locked,
                    lost_mode: s.lost_mode,
                    erased: s.erased,
                    retired: s.retired,
                    passcode_cleared: s.passcode_cleared,
                    restarts: s.restarts,
                    locations_reported: s.locations_reported,
                    commands_answered: s.commands_answered,
                }
            })
            .collect();
        states.sort_by(|a, b| a.udid.cmp(&b.udid));
        states
    }

    /// Counters so far: answers by status, errors by kind, pushes, sessions, latencies.
    pub fn counters(&self) -> Counters {
        Counters {
            sessions: self.stats.sessions.load(Ordering::Relaxed),
            pushes_received: self.stats.pushes.load(Ordering::Relaxed),
            presigned_sent: self.stats.presigned_sent.load(Ordering::Relaxed),
            answers: lock(&self.stats.answers)
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            errors: lock(&self.stats.errors).clone(),
            command_latency: Stats::percentiles(&self.stats.command_latency),
            request_latency: Stats::percentiles(&self.stats.request_latency),
            erased: read(&self.enrolled)
                .devices
                .iter()
                .filter(|d| d.gone.load(Ordering::Acquire))
                .count(),
        }
    }

    /// Stops the push listener.
    pub async fn shutdown(&self) {
        self.stop();
        let push = lock(&self.push).take();
        if let Some(push) = push {
            push.shutdown().await;
        }
    }
}

/// Totals across the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Counters {
    pub sessions: u64,
    pub pushes_received: u64,
    /// Answers sent as signed in advance by [`Fleet::presign_answers`].
    pub presigned_sent: u64,
    /// Command answers by status (Acknowledged, NotNow, Error, CommandFormatError).
    pub answers: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Enqueue (by this simulator) → acknowledgement.
    pub command_latency: Percentiles,
    pub request_latency: Percentiles,
    pub erased: usize,
}

impl SimDevice {
    fn check_out_message(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), Value::String("CheckOut".into()));
        d.insert("UDID".into(), Value::String(self.udid.clone()));
        d.insert("Topic".into(), Value::String(self.topic.clone()));
        d
    }

    fn idle_status(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("Status".into(), Value::String("Idle".into()));
        d.insert("UDID".into(), Value::String(self.udid.clone()));
        d
    }

    fn sign(&self, message: Dictionary) -> Result<SignedMessage, String> {
        self.sign_body(xml(message))
    }

    fn sign_body(&self, body: Vec<u8>) -> Result<SignedMessage, String> {
        let signature = match &self.credentials {
            Credentials::Signature(signer) => Some(
                signer
                    .sign_detached(&body)
                    .map(|der| data_encoding::BASE64.encode(&der))
                    .map_err(|e| format!("signing: {e}"))?,
            ),
            Credentials::MutualTls => None,
        };
        Ok(SignedMessage { body, signature })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain-HTTP server on `listener` that reads each connection's request and closes the
    /// first `silent` connections without a word, then answers 200 "ok"; it returns how many
    /// connections it saw (once it answered, or when none came for 2 s).
    async fn silent_then_answer(listener: tokio::net::TcpListener, silent: usize) -> usize {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut seen = 0;
        let wait = Duration::from_secs(2);
        while let Ok(Ok((mut conn, _))) = tokio::time::timeout(wait, listener.accept()).await {
            let mut buf = vec![0; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"PUT /mdm/connect"));
            seen += 1;
            if seen > silent {
                conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                break;
            }
        }
        seen
    }

    /// `send_mdm` to a [`silent_then_answer`] server; what it got, and the connections seen.
    async fn send_to_silent(silent: usize) -> (Result<(u16, Vec<u8>), reqwest::Error>, usize) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mdm/connect", listener.local_addr().unwrap());
        let server = tokio::spawn(silent_then_answer(listener, silent));
        let message = SignedMessage {
            body: b"<plist/>".to_vec(),
            signature: None,
        };
        let sent = send_mdm(&reqwest::Client::new(), &url, &message).await;
        (sent, server.await.unwrap())
    }

    /// A connection closed with no answer (a server's idle timeout racing the request) costs
    /// one resend, not the device's session; a second silent close is reported.
    #[tokio::test]
    async fn a_request_closed_before_any_answer_is_sent_once_more() {
        let (sent, seen) = send_to_silent(1).await;
        assert_eq!(sent.unwrap(), (200, b"ok".to_vec()));
        assert_eq!(seen, 2);
    }

    #[tokio::test]
    async fn a_second_close_without_an_answer_is_an_error() {
        let (sent, seen) = send_to_silent(usize::MAX).await;
        let e = sent.unwrap_err();
        assert_eq!(seen, 2, "sent twice, then given up");
        assert!(closed_before_answer(&e), "{e:?}");
        assert_eq!(
            http_kind("connect", &e),
            "connect: request failed (connection closed before message completed)"
        );
    }

    #[test]
    fn mixes_parse_and_interleave() {
        let mix: Mix = "iphone=60,ipad=20,mac=20".parse().unwrap();
        assert_eq!(mix, Mix::default());
        let platforms = mix.assign(10);
        let count = |p| platforms.iter().filter(|x| **x == p).count();
        assert_eq!(
            (
                count(Platform::Iphone),
                count(Platform::Ipad),
                count(Platform::Mac)
            ),
            (6, 2, 2)
        );
        // Every platform shows up early, not after all the iPhones.
        assert!(platforms[..5].contains(&Platform::Mac) && platforms[..5].contains(&Platform::Ipad));
        let only_macs: Mix = "mac=1".parse().unwrap();
        assert!(only_macs.assign(3).iter().all(|p| *p == Platform::Mac));
        for bad in ["", "iphone=0", "android=5", "iphone", "iphone=x"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn profiles_are_read_like_a_device_reads_them() {
        let xml = crate::mdm::profile::build(&crate::mdm::profile::ProfileParams {
            base_url: "https://mdm.example.org",
            topic: "com.apple.mgmt.External.x",
            organization: "Ministry",
            root_der: b"DER",
            challenge: "CHALLENGE",
        })
        .unwrap();
        let p = EnrollmentProfile::parse(&xml).unwrap();
        assert_eq!(p.scep_url, "https://mdm.example.org/scep");
        assert_eq!(p.challenge, "CHALLENGE");
        assert_eq!(p.server_url, "https://mdm.example.org/mdm/connect");
        assert_eq!(p.checkin_url, "https://mdm.example.org/mdm/checkin");
        assert_eq!(p.topic, "com.apple.mgmt.External.x");
        assert_eq!(p.common_name, "Citadel device identity");
        assert!(p.sign_message);
        assert!(EnrollmentProfile::parse(b"<plist><dict/></plist>").is_err());
        assert!(EnrollmentProfile::parse(b"garbage").is_err());
    }

    fn clock() -> SharedClock {
        Arc::new(crate::clock::SystemClock)
    }

    #[test]
    fn options_are_checked() {
        let mut o = FleetOptions::new("https://x", "", "t");
        assert!(matches!(Fleet::new(o.clone(), clock()), Err(SimError::Client(_))));
        o.devices = 0;
        assert!(matches!(
            Fleet::new(o.clone(), clock()),
            Err(SimError::Options(_))
        ));
        o.devices = 1;
        o.not_now_rate = 2.0;
        assert!(matches!(
            Fleet::new(o.clone(), clock()),
            Err(SimError::Options(_))
        ));
        o.not_now_rate = 0.0;
        o.server = "http://x".into();
        assert!(matches!(Fleet::new(o, clock()), Err(SimError::Options(_))));
    }
}
