//! Forwarding the audit log to the site's SIEM: RFC 5424 messages over TCP (RFC 6587
//! octet-counting framing), optionally TLS (RFC 5425) verified against the site's CA.
//!
//! One task reads the log from a cursor kept in the store, sends what follows it, and moves
//! the cursor only after the write succeeded: every record reaches the collector at least once,
//! in order, across restarts and outages (the collector can drop duplicates by `seq`).
//! Signed checkpoints are forwarded the same way, so the SIEM holds what
//! `citadel audit verify --expect` needs.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::checkpoint::{self, Checkpoint};
use super::{Actor, AuditFilter, AuditLog, AuditRecord, Outcome};
use crate::store::{Store, StoreError, StoreExt, Tree};

/// The structured-data ID. 32473 is the enterprise number RFC 5612 reserves for
/// documentation; it stands until Citadel has its own.
pub const SD_ID: &str = "citadel@32473";
/// Facility 13: log audit.
const FACILITY: u8 = 13;
const BATCH: usize = 500;
const RECORDS_CURSOR: &[u8] = b"audit_syslog_cursor";
const CHECKPOINTS_CURSOR: &[u8] = b"audit_syslog_checkpoint_cursor";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where and how to forward.
#[derive(Debug, Clone)]
pub struct SyslogTarget {
    /// `host:port`.
    pub address: String,
    /// TLS with this client configuration (the site's CA), verifying `server_name`.
    pub tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
    /// The HOSTNAME field: this appliance's name.
    pub hostname: String,
}

/// How forwarding is going, for `/healthz`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyslogStatus {
    pub address: String,
    pub connected: bool,
    /// Last record sent.
    pub sent_through: u64,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
}

/// RFC 5424 PARAM-VALUE escaping: `"`, `\` and `]` get a backslash; control characters (which
/// would let a value fake a line in a line-based SIEM file) become spaces.
fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
}

/// PRINTUSASCII without spaces, at most `max` characters, or `-`.
fn header_field(value: &str, max: usize) -> String {
    let clean: String = value.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if clean.is_empty() { "-".to_owned() } else { clean }
}

/// RFC 5424 TIMESTAMP: UTC with at most six fractional digits.
fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

fn actor_text(actor: &Actor) -> String {
    match actor {
        Actor::Administrator(id) => format!("administrator:{id}"),
        Actor::ApiToken(id) => format!("api_token:{id}"),
        Actor::Device(id) => format!("device:{id}"),
        Actor::Bootstrap => "bootstrap".into(),
        Actor::Cli => "cli".into(),
        Actor::System => "system".into(),
        Actor::Anonymous => "anonymous".into(),
        Actor::User(id) => format!("user:{id}"),
    }
}

fn header(severity: u8, at: OffsetDateTime, hostname: &str, msgid: &str) -> String {
    format!(
        "<{}>1 {} {} citadel {} {} ",
        FACILITY * 8 + severity,
        timestamp(at),
        header_field(hostname, 255),
        std::process::id(),
        header_field(msgid, 32)
    )
}

/// One audit record as an RFC 5424 message: MSGID is the action, the structured data carries
/// the chain fields and who/what/outcome, MSG the record as JSON (re-checkable).
pub fn record_message(record: &AuditRecord, hostname: &str) -> String {
    let severity = match record.event.outcome {
        Outcome::Success => 6,
        Outcome::Denied => 4,
        Outcome::Failure => 3,
    };
    let mut out = header(severity, record.at, hostname, &record.event.action);
    let outcome = match record.event.outcome {
        Outcome::Success => "success",
        Outcome::Denied => "denied",
        Outcome::Failure => "failure",
    };
    let _ = write!(
        out,
        "[{SD_ID} seq=\"{}\" hash=\"{}\" prev=\"{}\" actor=\"",
        record.seq, record.hash, record.prev_hash
    );
    escape(&actor_text(&record.event.actor), &mut out);
    let _ = write!(out, "\" outcome=\"{outcome}\"");
    for (name, value) in [
        ("target", record.event.target.as_deref()),
        ("source", record.event.source.as_deref()),
    ] {
        if let Some(v) = value {
            let _ = write!(out, " {name}=\"");
            escape(v, &mut out);
            out.push('"');
        }
    }
    out.push_str("] ");
    out.push_str(&serde_json::to_string(record).unwrap_or_default());
    out
}

/// A signed checkpoint as an RFC 5424 message (MSGID `audit.checkpoint`).
pub fn checkpoint_message(c: &Checkpoint, hostname: &str) -> String {
    let mut out = header(5, c.at, hostname, "audit.checkpoint");
    let _ = write!(out, "[{SD_ID} seq=\"{}\" hash=\"{}\"] ", c.seq, c.hash);
    out.push_str(&serde_json::to_string(c).unwrap_or_default());
    out
}

/// RFC 6587 octet counting: `LEN SP MSG`.
fn frame(message: &str) -> Vec<u8> {
    let mut framed = format!("{} ", message.len()).into_bytes();
    framed.extend_from_slice(message.as_bytes());
    framed
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Whether the collector has closed the connection (it never sends anything, so anything
/// readable is its end of stream or an error).
async fn closed_by_peer(stream: &mut Box<dyn Stream>) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
        Err(_) => false,
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => false,
    }
}

async fn connect(target: &SyslogTarget) -> Result<Box<dyn Stream>, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target.address))
        .await
        .map_err(|_| format!("connecting to {} timed out", target.address))?
        .map_err(|e| format!("cannot connect to {}: {e}", target.address))?;
    let _ = tcp.set_nodelay(true);
    match &target.tls {
        None => Ok(Box::new(tcp)),
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_owned())?
                .map_err(|e| format!("TLS handshake with {}: {e}", target.address))?;
            Ok(Box::new(tls))
        }
    }
}

fn cursor(store: &dyn Store, key: &[u8]) -> Result<u64, StoreError> {
    Ok(store.get_record::<u64>(Tree::Meta, key)?.unwrap_or(0))
}

/// Resend at most this many records after a lost connection or a restart.
const RESEND_WINDOW: u64 = 10_000;
/// A connection that has lived this long and taken writes counts as working.
const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// Where forwarding stands: record and checkpoint sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Cursor {
    records: u64,
    checkpoints: u64,
}

/// What is waiting to be sent after `from`: records, then the checkpoints they cover.
fn pending(
    log: &AuditLog,
    store: &dyn Store,
    hostname: &str,
    from: Cursor,
) -> Result<(Vec<Vec<u8>>, Cursor), StoreError> {
    let records = log.list(&AuditFilter::default(), from.records, BATCH)?;
    let last_record = records.last().map_or(from.records, |r| r.seq);
    let mut frames: Vec<Vec<u8>> = records
        .iter()
        .map(|r| frame(&record_message(r, hostname)))
        .collect();
    let mut last_checkpoint = from.checkpoints;
    for c in checkpoint::list_after(store, from.checkpoints)? {
        // A checkpoint follows the records it covers.
        if c.seq > last_record {
            break;
        }
        last_checkpoint = c.seq;
        frames.push(frame(&checkpoint_message(&c, hostname)));
    }
    Ok((
        frames,
        Cursor {
            records: last_record,
            checkpoints: last_checkpoint,
        },
    ))
}

/// TCP syslog has no acknowledgements: what was written on a connection that then died may
/// never have arrived. Everything sent on the current connection (at most the last
/// `RESEND_WINDOW` records) is therefore sent again after a reconnect or a restart; the
/// collector can drop duplicates by `seq`.
fn resend_point(connected_at: Cursor, sent: Cursor) -> Cursor {
    Cursor {
        records: connected_at
            .records
            .max(sent.records.saturating_sub(RESEND_WINDOW)),
        checkpoints: connected_at.checkpoints,
    }
}

/// Runs until the process ends.
pub async fn forward(
    log: Arc<AuditLog>,
    store: Arc<dyn Store>,
    target: SyslogTarget,
    status: Arc<std::sync::Mutex<SyslogStatus>>,
    clock: crate::clock::SharedClock,
) {
    let set = |f: &dyn Fn(&mut SyslogStatus)| {
        if let Ok(mut s) = status.lock() {
            f(&mut s);
        }
    };
    // The persisted cursor is a resend point, never past what may have been lost.
    let s2 = Arc::clone(&store);
    let mut sent = tokio::task::spawn_blocking(move || -> Result<Cursor, StoreError> {
        Ok(Cursor {
            records: cursor(s2.as_ref(), RECORDS_CURSOR)?,
            checkpoints: cursor(s2.as_ref(), CHECKPOINTS_CURSOR)?,
        })
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    set(&|s| s.sent_through = sent.records);
    let mut connection: Option<(Box<dyn Stream>, std::time::Instant, Cursor)> = None;
    let backoff = std::cell::Cell::new(Duration::from_secs(1));
    // Every failure: recorded for /healthz, then a growing pause before the next try.
    let failing = |error: String| {
        let now = clock.now();
        set(&|s| {
            s.connected = false;
            s.last_error = Some(error.clone());
            s.failing_since.get_or_insert(now);
        });
        let pause = backoff.get();
        backoff.set((pause * 2).min(MAX_BACKOFF));
        tokio::time::sleep(pause)
    };
    loop {
        let lost = match connection.as_mut() {
            Some((stream, _, _)) => closed_by_peer(stream).await,
            None => false,
        };
        if lost {
            tracing::warn!(address = %target.address, "the syslog collector closed the connection");
            if let Some((_, _, connected_at)) = connection.take() {
                sent = resend_point(connected_at, sent);
            }
            failing("the collector closed the connection".to_owned()).await;
            continue;
        }
        let (l, s, h) = (Arc::clone(&log), Arc::clone(&store), target.hostname.clone());
        let from = sent;
        let batch = tokio::task::spawn_blocking(move || pending(&l, s.as_ref(), &h, from)).await;
        let (frames, through) = match batch {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit forwarding cannot read the log");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "audit forwarding task failed");
                tokio::time::sleep(MAX_BACKOFF).await;
                continue;
            }
        };
        if frames.is_empty() {
            // Woken by the next append, or after a while anyway (checkpoints, liveness).
            let _ = tokio::time::timeout(Duration::from_secs(5), log.appended.notified()).await;
            continue;
        }
        if connection.is_none() {
            match connect(&target).await {
                Ok(c) => {
                    tracing::info!(address = %target.address, "audit forwarding connected");
                    connection = Some((c, std::time::Instant::now(), sent));
                    set(&|s| s.connected = true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_secs = backoff.get().as_secs(), "audit forwarding cannot connect");
                    failing(e).await;
                    continue;
                }
            }
        }
        let Some((stream, opened, connected_at)) = connection.as_mut() else {
            continue;
        };
        let mut payload = Vec::with_capacity(frames.iter().map(Vec::len).sum());
        for f in &frames {
            payload.extend_from_slice(f);
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(&payload).await?;
            stream.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {
                sent = through;
                let resume = resend_point(*connected_at, sent);
                if opened.elapsed() >= HEALTHY_AFTER {
                    backoff.set(Duration::from_secs(1));
                    set(&|s| {
                        s.last_error = None;
                        s.failing_since = None;
                    });
                }
                set(&|s| s.sent_through = through.records);
                let store2 = Arc::clone(&store);
                let saved = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                    store2.put_record(Tree::Meta, RECORDS_CURSOR, &resume.records)?;
                    store2.put_record(Tree::Meta, CHECKPOINTS_CURSOR, &resume.checkpoints)
                })
                .await;
                if !matches!(saved, Ok(Ok(()))) {
                    // The cursor in memory goes on; after a restart more is sent again.
                    tracing::error!(
                        "audit forwarding cursor not saved; records may be sent again after a restart"
                    );
                    tokio::time::sleep(backoff.get()).await;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit forwarding lost its connection; resending");
                sent = resend_point(*connected_at, sent);
                connection = None;
                failing(e.to_string()).await;
            }
            Err(_) => {
                tracing::warn!("audit forwarding write timed out; reconnecting");
                sent = resend_point(*connected_at, sent);
                connection = None;
                set(&|s| s.connected = false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;
    use time::macros::datetime;

    #[test]
    fn messages_follow_rfc5424() {
        let record = AuditRecord {
            v: 1,
            seq: 7,
            at: datetime!(2026-12-06 10:11:12.123456789 UTC),
            event: AuditEvent::new(
                Actor::Administrator("o\"l]i\\via".into()),
                "device.action.erase",
                Outcome::Denied,
            )
            .target("ENR 1"),
            prev_hash: "a".repeat(64),
            hash: "b".repeat(64),
        };
        let m = record_message(&record, "mdm host");
        let pid = std::process::id();
        assert!(
            m.starts_with(&format!("<108>1 2026-12-06T10:11:12.123456Z mdmhost citadel {pid} device.action.erase [citadel@32473 seq=\"7\" hash=\"bbbb")),
            "{m}"
        );
        assert!(
            m.contains(r#"actor="administrator:o\"l\]i\\via" outcome="denied" target="ENR 1"] {"#),
            "{m}"
        );
        let json = m.split_once("] ").unwrap().1;
        assert_eq!(serde_json::from_str::<AuditRecord>(json).unwrap(), record);
        assert_eq!(frame("abc"), b"3 abc");
        assert_eq!(header_field(&"x".repeat(40), 32).len(), 32);
    }
}
