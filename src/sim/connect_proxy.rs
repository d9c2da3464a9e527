//! A minimal HTTPS forward proxy: `CONNECT host:port`, optionally behind Basic
//! `Proxy-Authorization`, then bytes both ways. It records every CONNECT it is asked for, so a
//! test can show that traffic (e.g. to APNs) really went through a proxy.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Longest request head read before answering 431.
const MAX_HEAD: usize = 8 * 1024;
/// A client that connects and sends nothing must not hold a task forever.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused client gets to finish sending before the socket is closed.
const LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone)]
pub struct ConnectProxyConfig {
    /// Port 0 picks a free port; `ConnectProxy::addr` tells which.
    pub listen: SocketAddr,
    /// When set, `Proxy-Authorization: Basic` with these is required (407 otherwise).
    pub credentials: Option<ProxyCredentials>,
}

/// One CONNECT request and how it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// `host:port` as the client asked for it.
    pub target: String,
    /// Whether a `Proxy-Authorization` header was present (right or wrong).
    pub authorization_presented: bool,
    /// 200 when the tunnel was opened; 407, 502, ... otherwise.
    pub status: u16,
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<ConnectRequest>>,
    tunnels: AtomicUsize,
}

impl Shared {
    fn record(&self, request: ConnectRequest) {
        lock(&self.requests).push(request);
    }
}

/// A running proxy. Stops, closing its tunnels, when dropped.
pub struct ConnectProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// A proxy without authentication.
pub async fn start(listen: SocketAddr) -> Result<ConnectProxy, io::Error> {
    start_with(ConnectProxyConfig {
        listen,
        credentials: None,
    })
    .await
}

pub async fn start_with(config: ConnectProxyConfig) -> Result<ConnectProxy, io::Error> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::default());
    let expected = config.credentials.map(|c| {
        let pair = format!("{}:{}", c.username, c.password);
        format!("Basic {}", data_encoding::BASE64.encode(pair.as_bytes()))
    });
    let task = tokio::spawn(accept_loop(listener, Arc::new(expected), Arc::clone(&shared)));
    Ok(ConnectProxy {
        addr,
        shared,
        task: Some(task),
    })
}

impl ConnectProxy {
    /// A proxy requiring `username` / `password`.
    pub async fn with_credentials(
        listen: SocketAddr,
        username: &str,
        password: &str,
    ) -> Result<Self, io::Error> {
        start_with(ConnectProxyConfig {
            listen,
            credentials: Some(ProxyCredentials {
                username: username.to_owned(),
                password: password.to_owned(),
            }),
        })
        .await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (the proxy speaks plain HTTP; the tunnel carries TLS).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// A snapshot of the CONNECT requests received, in order.
    pub fn requests(&self) -> Vec<ConnectRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Tunnels opened so far.
    pub fn tunnels(&self) -> usize {
        self.shared.tunnels.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every tunnel; the port is free on return.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, expected: Arc<Option<String>>, shared: Arc<Shared>) {
    // Owning the connection tasks here means aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(serve(client, Arc::clone(&expected), Arc::clone(&shared)));
                }
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "CONNECT proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(mut client: TcpStream, expected: Arc<Option<String>>, shared: Arc<Shared>) {
    if let Err(error) = tunnel(&mut client, expected.as_ref().as_deref(), &shared).await {
        tracing::debug!(%error, "CONNECT proxy: connection ended with an error");
    }
}

/// Why a request head could not be used, as the status line to answer with.
enum HeadError {
    TooLarge,
    Malformed,
    NotConnect,
}

async fn tunnel(client: &mut TcpStream, expected: Option<&str>, shared: &Shared) -> io::Result<()> {
    let Ok(read) = tokio::time::timeout(HEAD_TIMEOUT, read_head(client)).await else {
        return Ok(());
    };
    let Some((head, early_data)) = read? else {
        return Ok(());
    };
    let (target, authorization) = match parse_head(&head) {
        Ok(parsed) => parsed,
        Err(HeadError::TooLarge) => return answer(client, "431 Request Header Fields Too Large", "").await,
        Err(HeadError::Malformed) => return answer(client, "400 Bad Request", "").await,
        Err(HeadError::NotConnect) => return answer(client, "405 Method Not Allowed", "").await,
    };
    let mut record = ConnectRequest {
        target: target.clone(),
        authorization_presented: authorization.is_some(),
        status: 407,
    };
    if let Some(expected) = expected
        && authorization.as_deref().map(str::trim) != Some(expected)
    {
        shared.record(record);
        let challenge = "Proxy-Authenticate: Basic realm=\"citadel-sim\"\r\n";
        return answer(client, "407 Proxy Authentication Required", challenge).await;
    }
    let mut upstream = match tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(target.as_str())).await
    {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            tracing::debug!(%target, %error, "CONNECT proxy: upstream refused");
            record.status = 502;
            shared.record(record);
            return answer(client, "502 Bad Gateway", "").await;
        }
        Err(_) => {
            record.status = 504;
            shared.record(record);
            return answer(client, "504 Gateway Timeout", "").await;
        }
    };
    let _ = upstream.set_nodelay(true);
    record.status = 200;
    shared.record(record);
    shared.tunnels.fetch_add(1, Ordering::SeqCst);
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    // A client may send its first tunnel bytes without waiting for our answer.
    if !early_data.is_empty() {
        upstream.write_all(&early_data).await?;
    }
    tokio::io::copy_bidirectional(client, &mut upstream).await?;
    Ok(())
}

/// Answers and closes. The unread rest of the request is drained first: closing a socket with
/// unread input sends a reset, which can destroy the answer before the client reads it.
async fn answer(client: &mut TcpStream, status: &str, headers: &str) -> io::Result<()> {
    let response = format!("HTTP/1.1 {status}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await?;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}

/// Reads up to the blank line ending the head. Returns the head (possibly cut just past
/// `MAX_HEAD` bytes, which `parse_head` refuses) and whatever followed it; `None` when the
/// client hung up first.
async fn read_head(client: &mut TcpStream) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_head_end(&buffer) {
            let rest = buffer.split_off(end);
            return Ok(Some((buffer, rest)));
        }
        if buffer.len() > MAX_HEAD {
            return Ok(Some((buffer, Vec::new())));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// The index just past `\r\n\r\n`.
fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The CONNECT target and the `Proxy-Authorization` value, if any.
fn parse_head(head: &[u8]) -> Result<(String, Option<String>), HeadError> {
    if head.len() > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_| HeadError::Malformed)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(HeadError::Malformed);
    }
    if method != "CONNECT" {
        return Err(HeadError::NotConnect);
    }
    // Authority form only: host:port with a numeric port.
    let valid_target = target
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid_target {
        return Err(HeadError::Malformed);
    }
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim().to_owned());
    Ok((target.to_owned(), authorization))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::apns::testing::{client_builder, push, start_mock};

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[tokio::test]
    async fn pushes_arrive_through_the_tunnel() {
        let mock = start_mock(100).await;
        let proxy = start(localhost()).await.unwrap();
        let client = client_builder(true)
            .proxy(reqwest::Proxy::https(proxy.url()).unwrap())
            .build()
            .unwrap();
        for i in 0..3 {
            let response = push(&client, &mock.base_url(), "00ff", &format!("m{i}"))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }

        assert_eq!(mock.count(), 3);
        assert_eq!(mock.connections(), 1);
        assert_eq!(proxy.tunnels(), 1);
        let target = format!("localhost:{}", mock.addr().port());
        assert_eq!(
            proxy.requests(),
            [ConnectRequest {
                target,
                authorization_presented: false,
                status: 200
            }]
        );
    }

    #[tokio::test]
    async fn credentials_are_required_when_configured() {
        let mock = start_mock(100).await;
        let proxy = ConnectProxy::with_credentials(localhost(), "user", "p@ss")
            .await
            .unwrap();

        let anonymous = client_builder(true)
            .proxy(reqwest::Proxy::https(proxy.url()).unwrap())
            .build()
            .unwrap();
        assert!(push(&anonymous, &mock.base_url(), "00ff", "m").await.is_err());

        let wrong = client_builder(true)
            .proxy(
                reqwest::Proxy::https(proxy.url())
                    .unwrap()
                    .basic_auth("user", "nope"),
            )
            .build()
            .unwrap();
        assert!(push(&wrong, &mock.base_url(), "00ff", "m").await.is_err());
        assert_eq!(proxy.tunnels(), 0);
        assert_eq!(mock.count(), 0);

        let url = format!("http://user:p%40ss@127.0.0.1:{}", proxy.addr().port());
        let authorized = client_builder(true)
            .proxy(reqwest::Proxy::https(url).unwrap())
            .build()
            .unwrap();
        let response = push(&authorized, &mock.base_url(), "00ff", "m").await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(proxy.tunnels(), 1);
        assert_eq!(mock.count(), 1);

        let seen: Vec<(bool, u16)> = proxy
            .requests()
            .iter()
            .map(|r| (r.authorization_presented, r.status))
            .collect();
        assert_eq!(seen, [(false, 407), (true, 407), (true, 200)]);
    }

    /// Sends `request` raw and returns the status line.
    async fn raw(proxy: &ConnectProxy, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).into_owned();
        text.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn bad_requests_are_answered_and_the_proxy_survives() {
        let proxy = start(localhost()).await.unwrap();
        assert_eq!(
            raw(
                &proxy,
                b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
            )
            .await,
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(
            raw(&proxy, b"CONNECT nowhere HTTP/1.1\r\n\r\n").await,
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(raw(&proxy, b"\xff\xfe\r\n\r\n").await, "HTTP/1.1 400 Bad Request");
        let huge = format!("CONNECT a:1 HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(
            raw(&proxy, huge.as_bytes()).await,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );

        // A port nothing listens on.
        let closed = TcpListener::bind(localhost()).await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let request = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");
        assert_eq!(raw(&proxy, request.as_bytes()).await, "HTTP/1.1 502 Bad Gateway");
        assert_eq!(proxy.requests().last().map(|r| r.status), Some(502));

        // A client that hangs up mid-head.
        drop(TcpStream::connect(proxy.addr()).await.unwrap());
        assert_eq!(proxy.tunnels(), 0);
    }

    #[tokio::test]
    async fn bytes_sent_with_the_head_reach_upstream() {
        let upstream = TcpListener::bind(localhost()).await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let echo = tokio::spawn(async move {
            let (mut socket, _) = upstream.accept().await.unwrap();
            let mut buffer = [0u8; 5];
            socket.read_exact(&mut buffer).await.unwrap();
            socket.write_all(&buffer).await.unwrap();
        });
        let proxy = start(localhost()).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let request = format!("CONNECT {upstream_addr} HTTP/1.1\r\nHost: {upstream_addr}\r\n\r\nhello");
        stream.write_all(request.as_bytes()).await.unwrap();
        let expected = b"HTTP/1.1 200 Connection established\r\n\r\nhello";
        let mut response = vec![0u8; expected.len()];
        stream.read_exact(&mut response).await.unwrap();
        assert_eq!(response, expected);
        echo.await.unwrap();
        assert_eq!(proxy.tunnels(), 1);

        let addr = proxy.addr();
        proxy.shutdown().await;
        TcpListener::bind(addr).await.unwrap();
    }
}
