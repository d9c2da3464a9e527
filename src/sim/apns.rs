//! An APNs-compatible HTTP/2 endpoint for MDM pushes: TLS with ALPN `h2` only, optionally
//! requiring a client certificate (as APNs does for certificate-based providers), answering
//! `POST /3/device/<token>` the way Apple does and recording every push it receives.
//!
//! Outcomes can be scripted per device token (`set_response`) or for all of them
//! (`set_default_response`), and a latency can be added (`set_delay`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;
use std::time::{Duration, Instant};

use citadel_certs::SecretPem;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// APNs refuses MDM payloads above 4 KiB with 413.
const MAX_PAYLOAD: usize = 4096;
/// A client that connects and never finishes its handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEVICE_PATH: &str = "/3/device/";

/// How to run the mock.
#[derive(Debug, Clone)]
pub struct MockApnsConfig {
    /// Port 0 picks a free port; `MockApns::addr` tells which.
    pub listen: SocketAddr,
    /// Leaf first; tests put `localhost` in it, as `base_url` uses that name.
    pub server_cert_chain_pem: String,
    pub server_key_pem: SecretPem,
    /// When set, a client certificate chaining to one of these CAs is required (the handshake
    /// fails without one); when `None`, no client certificate is requested.
    pub client_ca_pem: Option<String>,
    /// Advertised in the HTTP/2 SETTINGS frame (APNs uses 1000 once a connection is up).
    pub max_concurrent_streams: u32,
    /// Receives the (lower-case) token of every push answered 200: how the fleet simulator
    /// wakes the device it was meant for.
    pub forward: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl MockApnsConfig {
    /// No client certificate required, 1000 concurrent streams.
    pub fn new(listen: SocketAddr, server_cert_chain_pem: String, server_key_pem: SecretPem) -> Self {
        Self {
            listen,
            server_cert_chain_pem,
            server_key_pem,
            client_ca_pem: None,
            max_concurrent_streams: 1000,
            forward: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MockApnsError {
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server certificate or key is not usable: {0}")]
    Certificate(#[from] citadel_certs::CertError),
    #[error("the client CA is not usable: {0}")]
    ClientCa(String),
    #[error("could not build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What the mock answers to a well-formed push.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MockResponse {
    /// 200 with an `apns-id` header and an empty body.
    #[default]
    Ok,
    /// `status` with APNs' JSON error body: `{"reason": ..., "timestamp": ...}` (the
    /// timestamp, in milliseconds since the epoch, only when given, as for 410 Unregistered).
    Error {
        status: u16,
        reason: String,
        timestamp_ms: Option<u64>,
    },
}

impl MockResponse {
    pub fn error(status: u16, reason: impl Into<String>) -> Self {
        Self::Error {
            status,
            reason: reason.into(),
            timestamp_ms: None,
        }
    }

    /// 410 Unregistered: the device token is no longer valid since `timestamp_ms`.
    pub fn unregistered(timestamp_ms: u64) -> Self {
        Self::Error {
            status: 410,
            reason: "Unregistered".into(),
            timestamp_ms: Some(timestamp_ms),
        }
    }
}

/// One request to `/3/device/<token>`, as received, with the status it was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// The token from the path, as sent.
    pub token: String,
    pub topic: Option<String>,
    pub push_type: Option<String>,
    pub priority: Option<String>,
    pub expiration: Option<String>,
    /// The `apns-id` the provider sent, if any.
    pub apns_id: Option<String>,
    /// The `mdm` value of a valid `{"mdm": "<magic>"}` body.
    pub magic: Option<String>,
    pub body: Vec<u8>,
    /// Lower-case hex SHA-256 of the client certificate's DER.
    pub client_cert_sha256: Option<String>,
    /// The client certificate's subject UID (the push topic in Apple's MDM push certificates).
    pub client_cert_uid: Option<String>,
    pub client_cert_der: Option<Vec<u8>>,
    /// Index of the TCP connection it arrived on (0 for the first accepted).
    pub connection: usize,
    pub status: u16,
    pub received_at: Instant,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<PushRequest>>,
    count_only: std::sync::atomic::AtomicBool,
    counted: AtomicUsize,
    script: Mutex<Script>,
    connections: AtomicUsize,
    recorded: Notify,
    forward: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

#[derive(Default)]
struct Script {
    default: MockResponse,
    per_token: HashMap<String, MockResponse>,
    delay: Duration,
}

/// A running mock APNs. Stops when dropped.
pub struct MockApns {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// Binds `config.listen` and serves on a spawned task.
pub async fn start(config: MockApnsConfig) -> Result<MockApns, MockApnsError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&config)?));
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| MockApnsError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| MockApnsError::Bind {
        addr: config.listen,
        source,
    })?;
    let shared = Arc::new(Shared {
        forward: config.forward.clone(),
        ..Shared::default()
    });
    let task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        Arc::clone(&shared),
        config.max_concurrent_streams,
    ));
    Ok(MockApns {
        addr,
        shared,
        task: Some(task),
    })
}

impl MockApns {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// A snapshot of the requests recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<PushRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.shared.requests).len() + self.shared.counted.load(Ordering::SeqCst)
    }

    /// Load runs: count requests without keeping them, so the mock's memory stays flat.
    pub fn set_count_only(&self, on: bool) {
        self.shared.count_only.store(on, Ordering::Relaxed);
    }

    /// TCP connections accepted so far (including ones whose handshake failed).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Forgets the recorded requests; scripted responses and the delay stay.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Scripts the answer for one device token (compared case-insensitively).
    pub fn set_response(&self, token_hex: &str, response: MockResponse) {
        lock(&self.shared.script)
            .per_token
            .insert(token_hex.to_ascii_lowercase(), response);
    }

    /// Scripts the answer for every token without its own.
    pub fn set_default_response(&self, response: MockResponse) {
        lock(&self.shared.script).default = response;
    }

    /// Drops all scripted answers: every push gets 200 again.
    pub fn reset_responses(&self) {
        let mut script = lock(&self.shared.script);
        script.per_token.clear();
        script.default = MockResponse::Ok;
    }

    /// Latency added before each answer to a device request.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.shared.script).delay = delay;
    }

    /// Waits until at least `n` requests are recorded; false when `timeout` passes first.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check so that a record in between is not missed.
            let notified = self.shared.recorded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count() >= n;
            }
        }
    }

    /// Stops accepting and closes every open connection; the port is free on return.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for MockApns {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn tls_config(config: &MockApnsConfig) -> Result<rustls::ServerConfig, MockApnsError> {
    let certified = citadel_certs::certified_key(&config.server_cert_chain_pem, &config.server_key_pem)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &config.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let der = der.map_err(|e| MockApnsError::ClientCa(e.to_string()))?;
                roots
                    .add(der)
                    .map_err(|e| MockApnsError::ClientCa(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(MockApnsError::ClientCa("no CERTIFICATE block found".into()));
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| MockApnsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tls)
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>, max_streams: u32) {
    // Owning the connection tasks here means aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let id = shared.connections.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve_connection(
                        tcp,
                        acceptor.clone(),
                        Arc::clone(&shared),
                        max_streams,
                        id,
                    ));
                }
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "mock APNs: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// What a connection's client certificate says, shared by all its streams.
struct Peer {
    connection: usize,
    cert_sha256: Option<String>,
    cert_uid: Option<String>,
    cert_der: Option<Vec<u8>>,
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    max_streams: u32,
    id: usize,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(connection = id, %error, "mock APNs: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(connection = id, "mock APNs: TLS handshake timed out");
            return;
        }
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let peer = Arc::new(Peer {
        connection: id,
        cert_sha256: leaf.map(|der| hex::encode(Sha256::digest(der))),
        cert_uid: leaf.and_then(|der| subject_uid(der)),
        cert_der: leaf.map(|der| der.to_vec()),
    });
    let service = service_fn(move |req| handle(req, Arc::clone(&shared), Arc::clone(&peer)));
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(max_streams)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(connection = id, %error, "mock APNs: connection ended with an error");
    }
}

type Reply = Response<Full<Bytes>>;

async fn handle(req: Request<Incoming>, shared: Arc<Shared>, peer: Arc<Peer>) -> Result<Reply, Infallible> {
    let Some(token) = req.uri().path().strip_prefix(DEVICE_PATH).map(str::to_owned) else {
        return Ok(reply(StatusCode::NOT_FOUND, None, Some(("BadPath", None))));
    };
    if token.is_empty() || token.contains('/') {
        return Ok(reply(StatusCode::NOT_FOUND, None, Some(("BadPath", None))));
    }
    if req.method() != Method::POST {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            Some(("MethodNotAllowed", None)),
        ));
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let topic = header("apns-topic");
    let push_type = header("apns-push-type");
    let priority = header("apns-priority");
    let expiration = header("apns-expiration");
    let apns_id = header("apns-id");

    let (body, too_large) = match Limited::new(req.into_body(), MAX_PAYLOAD).collect().await {
        Ok(collected) => (collected.to_bytes(), false),
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            (Bytes::new(), true)
        }
        Err(error) => {
            // The stream was reset or the connection died; nobody will read an answer.
            tracing::debug!(connection = peer.connection, %error, "mock APNs: request body lost");
            return Ok(reply(StatusCode::BAD_REQUEST, None, Some(("BadPayload", None))));
        }
    };
    let magic = mdm_magic(&body);

    // APNs checks the request before it looks at the device, so these win over a script.
    let refusal = if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some((StatusCode::BAD_REQUEST, "BadDeviceToken"))
    } else if apns_id
        .as_deref()
        .is_some_and(|id| uuid::Uuid::parse_str(id).is_err())
    {
        Some((StatusCode::BAD_REQUEST, "BadMessageId"))
    } else if priority
        .as_deref()
        .is_some_and(|p| !matches!(p, "1" | "5" | "10"))
    {
        Some((StatusCode::BAD_REQUEST, "BadPriority"))
    } else if expiration.as_deref().is_some_and(|e| e.parse::<u64>().is_err()) {
        Some((StatusCode::BAD_REQUEST, "BadExpirationDate"))
    } else if too_large {
        Some((StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"))
    } else if body.is_empty() {
        Some((StatusCode::BAD_REQUEST, "PayloadEmpty"))
    } else if magic.is_none() {
        Some((StatusCode::BAD_REQUEST, "BadPayload"))
    } else {
        None
    };
    let (outcome, delay) = {
        let script = lock(&shared.script);
        let outcome = match refusal {
            Some((status, reason)) => MockResponse::error(status.as_u16(), reason),
            None => script
                .per_token
                .get(&token.to_ascii_lowercase())
                .unwrap_or(&script.default)
                .clone(),
        };
        (outcome, script.delay)
    };
    let response_id = apns_id
        .clone()
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let response = match &outcome {
        MockResponse::Ok => reply(StatusCode::OK, Some(&response_id), None),
        MockResponse::Error {
            status,
            reason,
            timestamp_ms,
        } => reply(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Some(&response_id),
            Some((reason, *timestamp_ms)),
        ),
    };

    if let (Some(forward), true) = (&shared.forward, response.status() == StatusCode::OK) {
        // The receiver is gone only when the simulator is shutting down.
        let _ = forward.send(token.to_ascii_lowercase());
    }
    if shared.count_only.load(Ordering::Relaxed) {
        shared.counted.fetch_add(1, Ordering::SeqCst);
    } else {
        lock(&shared.requests).push(PushRequest {
            token,
            topic,
            push_type,
            priority,
            expiration,
            apns_id,
            magic,
            body: body.to_vec(),
            client_cert_sha256: peer.cert_sha256.clone(),
            client_cert_uid: peer.cert_uid.clone(),
            client_cert_der: peer.cert_der.clone(),
            connection: peer.connection,
            status: response.status().as_u16(),
            received_at: Instant::now(),
        });
    }
    shared.recorded.notify_waiters();

    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    Ok(response)
}

/// The `mdm` string of an MDM push payload, `{"mdm": "<PushMagic>"}`.
fn mdm_magic(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("mdm")?.as_str().map(str::to_owned)
}

/// A response as APNs renders it: `apns-id` header, JSON body with the reason on errors.
fn reply(status: StatusCode, apns_id: Option<&str>, error: Option<(&str, Option<u64>)>) -> Reply {
    let body = match error {
        None => Bytes::new(),
        Some((reason, None)) => Bytes::from(serde_json::json!({ "reason": reason }).to_string()),
        Some((reason, Some(timestamp))) => {
            Bytes::from(serde_json::json!({ "reason": reason, "timestamp": timestamp }).to_string())
        }
    };
    let json = !body.is_empty();
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Some(id) = apns_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert("apns-id", id);
    }
    if json {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

/// OID 0.9.2342.19200300.100.1.1 (userId, "UID"), DER-encoded.
const UID_OID: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01];

/// The subject's UID attribute. A few lines of DER walking instead of a full X.509 parser,
/// which the root crate does not depend on; anything unexpected yields `None`.
fn subject_uid(cert_der: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    let (SEQUENCE, certificate, _) = der_next(cert_der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_next(certificate)? else {
        return None;
    };
    let (tag, _, mut rest) = der_next(tbs)?;
    // [0] version is optional; then serial, signature, issuer, validity, subject.
    let skip = if tag == 0xa0 { 4 } else { 3 };
    for _ in 0..skip {
        rest = der_next(rest)?.2;
    }
    let (SEQUENCE, mut rdns, _) = der_next(rest)? else {
        return None;
    };
    while !rdns.is_empty() {
        let (tag, mut attributes, next) = der_next(rdns)?;
        rdns = next;
        if tag != SET {
            return None;
        }
        while !attributes.is_empty() {
            let (_, attribute, next) = der_next(attributes)?;
            attributes = next;
            let (oid_tag, oid, value) = der_next(attribute)?;
            if oid_tag == 0x06 && oid == UID_OID {
                let (string_tag, text, _) = der_next(value)?;
                // UTF8String, PrintableString, T61String, IA5String.
                return match string_tag {
                    0x0c | 0x13 | 0x14 | 0x16 => String::from_utf8(text.to_vec()).ok(),
                    _ => None,
                };
            }
        }
    }
    None
}

/// One DER element: (tag, contents, what follows). Only low tag numbers, definite lengths.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
            rest,
        )
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// Certificates for tests of the mock and of code that talks to it.
#[cfg(test)]
pub(crate) mod testing {
    use std::process::Command;
    use std::sync::OnceLock;

    use citadel_certs::{CertificateAuthority, SecretPem, ServerIdentity};

    pub(crate) const TOPIC: &str = "com.apple.mgmt.External.test";

    pub(crate) struct TestPki {
        /// Signs the server certificate; what clients trust.
        pub server_ca_pem: String,
        pub server_chain_pem: String,
        pub server_key_pem: SecretPem,
        /// The "Apple" CA the mock trusts for push certificates.
        pub client_ca_pem: String,
        /// Key and certificate, for `reqwest::Identity::from_pem`.
        pub client_identity_pem: String,
        pub client_cert_pem: String,
    }

    /// Generated once per test binary: the RSA root is slow to make.
    pub(crate) fn pki() -> &'static TestPki {
        static PKI: OnceLock<TestPki> = OnceLock::new();
        PKI.get_or_init(make_pki)
    }

    fn make_pki() -> TestPki {
        let now = time::OffsetDateTime::now_utc();
        let ca = CertificateAuthority::generate("sim test", now).unwrap();
        let server = ca
            .issue_server_certificate(&ServerIdentity::new(["localhost"]).unwrap(), now)
            .unwrap();

        // rcgen is not a dependency here and issuing a clientAuth certificate needs a CSR,
        // so the push certificate comes from openssl.
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        run(&[
            &["req", "-x509", "-days", "2", "-subj", "/CN=Test Push CA"][..],
            &ec_key,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat());
        let subject = format!("/UID={TOPIC}/CN=APSP:test");
        run(&[
            &["req", "-new", "-subj", subject.as_str()][..],
            &ec_key,
            &["-keyout", "client.key", "-out", "client.csr"],
        ]
        .concat());
        std::fs::write(
            dir.path().join("ext.cnf"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        let client_cert_pem = read("client.pem");
        TestPki {
            server_ca_pem: ca.certificate_pem().to_owned(),
            server_chain_pem: server.cert_pem,
            server_key_pem: server.key_pem,
            client_ca_pem: read("ca.pem"),
            client_identity_pem: format!("{}{}", read("client.key"), client_cert_pem),
            client_cert_pem,
        }
    }

    /// A mock on 127.0.0.1 requiring the test push certificate.
    pub(crate) async fn start_mock(max_concurrent_streams: u32) -> super::MockApns {
        let pki = pki();
        super::start(super::MockApnsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            server_cert_chain_pem: pki.server_chain_pem.clone(),
            server_key_pem: pki.server_key_pem.clone(),
            client_ca_pem: Some(pki.client_ca_pem.clone()),
            max_concurrent_streams,
            forward: None,
        })
        .await
        .unwrap()
    }

    /// An HTTP/2 client trusting the test server CA, with the push certificate when asked.
    pub(crate) fn client_builder(with_identity: bool) -> reqwest::ClientBuilder {
        let pki = pki();
        let mut builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .tls_certs_only([reqwest::Certificate::from_pem(pki.server_ca_pem.as_bytes()).unwrap()])
            .timeout(std::time::Duration::from_secs(20));
        if with_identity {
            builder =
                builder.identity(reqwest::Identity::from_pem(pki.client_identity_pem.as_bytes()).unwrap());
        }
        builder
    }

    /// Sends an MDM push the way the appliance does.
    pub(crate) async fn push(
        client: &reqwest::Client,
        base_url: &str,
        token: &str,
        magic: &str,
    ) -> reqwest::Result<reqwest::Response> {
        client
            .post(format!("{base_url}/3/device/{token}"))
            .header("apns-topic", TOPIC)
            .header("apns-push-type", "mdm")
            .header("apns-priority", "10")
            .header("apns-expiration", "0")
            .header("content-type", "application/json")
            .body(serde_json::json!({ "mdm": magic }).to_string())
            .send()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{TOPIC, client_builder, pki, push, start_mock};
    use super::*;

    fn client() -> reqwest::Client {
        client_builder(true).no_proxy().build().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_concurrent_pushes_share_one_connection() {
        let mock = start_mock(10).await;
        let client = client();
        let base = mock.base_url();
        // The first push opens the connection; racing 50 requests against a client with none
        // open may let the pool dial twice before the first handshake completes.
        push(&client, &base, &format!("{:064x}", 0), "magic-0")
            .await
            .unwrap();
        let mut pushes = tokio::task::JoinSet::new();
        for i in 1..50 {
            let (client, base) = (client.clone(), base.clone());
            pushes.spawn(async move {
                let token = format!("{i:064x}");
                let response = push(&client, &base, &token, &format!("magic-{i}")).await.unwrap();
                assert_eq!(response.status(), 200);
                assert_eq!(response.version(), reqwest::Version::HTTP_2);
                let id = response.headers().get("apns-id").unwrap().to_str().unwrap();
                assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
            });
        }
        while let Some(done) = pushes.join_next().await {
            done.unwrap();
        }

        assert_eq!(mock.connections(), 1);
        assert_eq!(mock.count(), 50);
        let client_sha256 = citadel_certs::inspect_pem(&pki().client_cert_pem)
            .unwrap()
            .sha256_fingerprint;
        let mut requests = mock.requests();
        requests.sort_by(|a, b| a.token.cmp(&b.token));
        for (i, request) in requests.iter().enumerate() {
            assert_eq!(request.token, format!("{i:064x}"));
            assert_eq!(request.magic.as_deref(), Some(format!("magic-{i}").as_str()));
            assert_eq!(request.topic.as_deref(), Some(TOPIC));
            assert_eq!(request.push_type.as_deref(), Some("mdm"));
            assert_eq!(request.priority.as_deref(), Some("10"));
            assert_eq!(request.expiration.as_deref(), Some("0"));
            assert_eq!(request.client_cert_uid.as_deref(), Some(TOPIC));
            assert_eq!(
                request.client_cert_sha256.as_deref(),
                Some(client_sha256.as_str())
            );
            assert_eq!(request.connection, 0);
            assert_eq!(request.status, 200);
        }

        mock.clear();
        assert_eq!(mock.count(), 0);
    }

    #[tokio::test]
    async fn scripted_errors_are_rendered_like_apns() {
        let mock = start_mock(100).await;
        let client = client();
        let gone = "aa".repeat(32);
        let bad = "BB".repeat(32);
        mock.set_response(&gone, MockResponse::unregistered(1_700_000_000_000));
        mock.set_response(
            &bad.to_ascii_lowercase(),
            MockResponse::error(400, "BadDeviceToken"),
        );

        let response = push(&client, &mock.base_url(), &gone, "m").await.unwrap();
        assert_eq!(response.status(), 410);
        assert!(response.headers().contains_key("apns-id"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"reason": "Unregistered", "timestamp": 1_700_000_000_000u64})
        );

        let response = push(&client, &mock.base_url(), &bad, "m").await.unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"reason": "BadDeviceToken"}));

        // Others still succeed; the provider's apns-id is echoed.
        let id = "eabeae54-14a8-11e5-b60b-1697f925ec7b";
        let response = client
            .post(format!("{}/3/device/{}", mock.base_url(), "cc".repeat(32)))
            .header("apns-id", id)
            .body(r#"{"mdm":"x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["apns-id"], id);

        mock.set_default_response(MockResponse::error(503, "ServiceUnavailable"));
        let response = push(&client, &mock.base_url(), &"dd".repeat(32), "m")
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        mock.reset_responses();
        let response = push(&client, &mock.base_url(), &gone, "m").await.unwrap();
        assert_eq!(response.status(), 200);

        let statuses: Vec<u16> = mock.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [410, 400, 200, 503, 200]);
    }

    #[tokio::test]
    async fn requests_apns_would_refuse_are_refused() {
        let mock = start_mock(100).await;
        let client = client();
        let base = mock.base_url();
        let reason = |response: reqwest::Response| async move {
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["reason"].as_str().unwrap().to_owned())
        };

        let wrong_path = client
            .post(format!("{base}/3/devices/00"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(reason(wrong_path).await, (404, "BadPath".to_owned()));
        let root = client.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(reason(root).await, (404, "BadPath".to_owned()));
        let get = client.get(format!("{base}/3/device/00ff")).send().await.unwrap();
        assert_eq!(reason(get).await, (405, "MethodNotAllowed".to_owned()));

        let post = |token: &str, body: &'static str| {
            client.post(format!("{base}/3/device/{token}")).body(body).send()
        };
        assert_eq!(
            reason(post("00ff", "").await.unwrap()).await,
            (400, "PayloadEmpty".to_owned())
        );
        assert_eq!(
            reason(post("00ff", "{}").await.unwrap()).await,
            (400, "BadPayload".to_owned())
        );
        assert_eq!(
            reason(post("00ff", "mdm").await.unwrap()).await,
            (400, "BadPayload".to_owned())
        );
        assert_eq!(
            reason(post("xyz", r#"{"mdm":"m"}"#).await.unwrap()).await,
            (400, "BadDeviceToken".to_owned())
        );
        let big = client
            .post(format!("{base}/3/device/00ff"))
            .body(format!(r#"{{"mdm":"{}"}}"#, "a".repeat(5000)))
            .send()
            .await
            .unwrap();
        assert_eq!(reason(big).await, (413, "PayloadTooLarge".to_owned()));
        let bad_priority = client
            .post(format!("{base}/3/device/00ff"))
            .header("apns-priority", "7")
            .body(r#"{"mdm":"m"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(reason(bad_priority).await, (400, "BadPriority".to_owned()));

        // Only requests to a device path are recorded.
        let recorded: Vec<(String, u16)> = mock.requests().into_iter().map(|r| (r.token, r.status)).collect();
        let expected = [
            ("00ff", 400),
            ("00ff", 400),
            ("00ff", 400),
            ("xyz", 400),
            ("00ff", 413),
            ("00ff", 400),
        ];
        assert_eq!(recorded, expected.map(|(t, s)| (t.to_owned(), s)));
        assert_eq!(mock.connections(), 1);
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused_when_one_is_required() {
        let mock = start_mock(100).await;
        let anonymous = client_builder(false).no_proxy().build().unwrap();
        assert!(push(&anonymous, &mock.base_url(), "00ff", "m").await.is_err());
        assert_eq!(mock.count(), 0);

        // The server survives the failed handshake.
        let response = push(&client(), &mock.base_url(), "00ff", "m").await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(mock.connections(), 2);
    }

    #[tokio::test]
    async fn without_a_client_ca_no_certificate_is_needed() {
        let pki = pki();
        let config = MockApnsConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            pki.server_chain_pem.clone(),
            pki.server_key_pem.clone(),
        );
        let mock = start(config).await.unwrap();
        let anonymous = client_builder(false).no_proxy().build().unwrap();
        let response = push(&anonymous, &mock.base_url(), "00ff", "m").await.unwrap();
        assert_eq!(response.status(), 200);
        let request = &mock.requests()[0];
        assert_eq!(request.client_cert_sha256, None);
        assert_eq!(request.client_cert_uid, None);
    }

    #[tokio::test]
    async fn delay_holds_answers_and_shutdown_frees_the_port() {
        let mock = start_mock(100).await;
        mock.set_delay(Duration::from_millis(300));
        let client = client();
        let started = Instant::now();
        let sent = tokio::spawn({
            let (client, base) = (client.clone(), mock.base_url());
            async move { push(&client, &base, "00ff", "m").await.unwrap().status() }
        });
        assert!(mock.wait_for_count(1, Duration::from_secs(10)).await);
        assert_eq!(sent.await.unwrap(), 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(!mock.wait_for_count(2, Duration::from_millis(50)).await);

        let addr = mock.addr();
        mock.shutdown().await;
        assert!(
            push(
                &client,
                &format!("https://localhost:{}", addr.port()),
                "00ff",
                "m"
            )
            .await
            .is_err()
        );
        tokio::net::TcpListener::bind(addr).await.unwrap();
    }

    #[test]
    fn bad_configuration_is_an_error() {
        let pki = pki();
        let mut config = MockApnsConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            pki.server_chain_pem.clone(),
            pki.server_key_pem.clone(),
        );
        config.client_ca_pem = Some("not a certificate".into());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(matches!(
            runtime.block_on(start(config.clone())),
            Err(MockApnsError::ClientCa(_))
        ));
        config.client_ca_pem = None;
        config.server_key_pem = SecretPem::new(pki.client_identity_pem.clone());
        assert!(matches!(
            runtime.block_on(start(config)),
            Err(MockApnsError::Certificate(_))
        ));
    }

    #[test]
    fn subject_uid_is_read_and_garbage_is_not() {
        let der = citadel_certs::pem_to_der(&pki().client_cert_pem).unwrap();
        assert_eq!(subject_uid(&der).as_deref(), Some(TOPIC));
        let server = citadel_certs::pem_to_der(&pki().server_chain_pem).unwrap();
        assert_eq!(subject_uid(&server), None);
        for len in 0..der.len() {
            let _ = subject_uid(&der[..len]);
        }
        assert_eq!(subject_uid(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
