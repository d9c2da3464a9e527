//! The audit log over HTTP: `GET /api/v1/audit` (filtered, paged), the export, the signed
//! checkpoints and, on the admin socket, `GET /audit/verify` and `POST /audit/checkpoint` for
//! the CLI. There is no route that changes or removes records.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::api::authenticate;
use super::{AppState, blocking_err};
use time::OffsetDateTime;

use crate::audit::checkpoint::{Checkpoint, CheckpointError};
use crate::audit::{self, AuditFilter, AuditRecord, Outcome};
use crate::error::ApiError;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;
/// Records per chunk of an export.
const EXPORT_PAGE: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    action: Option<String>,
    target: Option<String>,
    actor: Option<String>,
    outcome: Option<Outcome>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<OffsetDateTime>,
    /// Records after this sequence number (the previous page's `next`).
    after: Option<u64>,
    /// Newest first: records before this sequence number (the previous page's `next`).
    before: Option<u64>,
    /// `oldest` (default) or `newest` first.
    order: Option<String>,
    limit: Option<usize>,
}

impl AuditQuery {
    fn into_parts(self) -> (AuditFilter, Option<u64>, Option<usize>) {
        let filter = AuditFilter {
            action: self.action,
            target: self.target,
            actor: self.actor,
            outcome: self.outcome,
            since: self.since,
            until: self.until,
        };
        (filter, self.after, self.limit)
    }
}

#[derive(Serialize)]
struct AuditPage {
    items: Vec<AuditRecord>,
    /// Pass as `after` (or, newest first, `before`) for the next page; absent on the last one.
    next: Option<u64>,
}

/// `GET /api/v1/audit?action=device.action.&actor=…&target=…&outcome=denied&since=…&until=…`
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let query = query.into_inner();
    let newest_first = match query.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "order is oldest or newest, not {other:?}"
            )));
        }
    };
    let before = query.before;
    if before.is_some() && !newest_first {
        return Err(ApiError::BadRequest("before goes with order=newest".into()));
    }
    let (filter, after, limit) = query.into_parts();
    if after.is_some() && newest_first {
        return Err(ApiError::BadRequest(
            "order=newest pages with before, not after".into(),
        ));
    }
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let log = state.audit.clone();
    let items = web::block(move || {
        if newest_first {
            log.list_newest(&filter, before, limit)
        } else {
            log.list(&filter, after.unwrap_or(0), limit)
        }
    })
    .await
    .map_err(blocking_err)??;
    let next = (items.len() == limit)
        .then(|| items.last().map(|r| r.seq))
        .flatten();
    Ok(HttpResponse::Ok().json(AuditPage { items, next }))
}

/// `GET /api/v1/audit/export`: every matching record as JSON lines (one record per line, oldest
/// first, hashes included so a copy can be checked against the chain), streamed in pages.
pub async fn export(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let (filter, after, limit) = query.into_inner().into_parts();
    if limit.is_some() {
        return Err(ApiError::BadRequest(
            "an export has every matching record: no limit (use after to resume)".into(),
        ));
    }
    tracing::info!(%actor, "audit log exported");
    let event = crate::audit::AuditEvent::new(actor.actor.clone(), "audit.export", Outcome::Success)
        .reason(format!("filter {}", req.query_string()));
    super::api::audit(&state, super::api::with_source(event, &req)).await;
    let log = state.audit.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, ApiError>>(4);
    std::thread::spawn(move || {
        let mut after = after.unwrap_or(0);
        loop {
            let page = match log.list(&filter, after, EXPORT_PAGE) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "audit export aborted");
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            let Some(last) = page.last().map(|r| r.seq) else {
                return;
            };
            let mut out = Vec::with_capacity(page.len() * 384);
            for record in &page {
                if serde_json::to_writer(&mut out, record).is_ok() {
                    out.push(b'\n');
                }
            }
            if tx.blocking_send(Ok(web::Bytes::from(out))).is_err() || page.len() < EXPORT_PAGE {
                return;
            }
            after = last;
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            "attachment; filename=\"citadel-audit.jsonl\"",
        ))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .streaming(super::mdm_api::tokio_stream_from(rx)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// `SEQ:HASH[,SEQ:HASH…]`: hashes kept outside the appliance the chain must still have.
    expect: Option<String>,
}

/// Parses `12:ab…,40:cd…`.
pub fn parse_expectations(text: &str) -> Result<Vec<(u64, String)>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (seq, hash) = pair
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("{pair:?} is not SEQ:HASH"))?;
            let seq = seq
                .parse::<u64>()
                .map_err(|_| format!("{seq:?} is not a sequence number"))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{hash:?} is not a hex SHA-256"));
            }
            Ok((seq, hash.to_ascii_lowercase()))
        })
        .collect()
}

/// `GET /audit/verify[?expect=SEQ:HASH,…]` (admin socket): walks the whole chain, checks every
/// signed checkpoint and the hashes kept elsewhere.
pub async fn socket_verify(
    state: web::Data<AppState>,
    query: web::Query<VerifyQuery>,
) -> Result<HttpResponse, ApiError> {
    let expected = parse_expectations(query.into_inner().expect.as_deref().unwrap_or_default())
        .map_err(ApiError::BadRequest)?;
    let store = state.store.clone();
    let verification = web::block(move || audit::verify_all(store.as_ref(), &expected))
        .await
        .map_err(blocking_err)??;
    Ok(HttpResponse::Ok().json(verification))
}

/// Signs the chain's head now (and from the periodic task); `None` when nothing changed since
/// the last checkpoint.
pub async fn make_checkpoint(state: &AppState) -> Result<Option<Checkpoint>, ApiError> {
    let signer = state
        .tls
        .snapshot()
        .ok_or_else(|| ApiError::Internal("no TLS identity to sign with".into()))?
        .profile_signer;
    let (log, now) = (state.audit.clone(), state.clock.now());
    web::block(move || log.checkpoint(signer.as_ref(), now))
        .await
        .map_err(blocking_err)?
        .map_err(|e| match e {
            CheckpointError::Store(s) => ApiError::Store(s),
            CheckpointError::Signing(m) => ApiError::Internal(m),
        })
}

/// `POST /audit/checkpoint` (admin socket): `citadel audit checkpoint`.
pub async fn socket_checkpoint(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let made = make_checkpoint(&state).await?;
    Ok(HttpResponse::Ok().json(made))
}

#[derive(Serialize)]
struct Checkpoints {
    /// The chain's current head, to keep elsewhere.
    head: Option<HeadView>,
    checkpoints: Vec<Checkpoint>,
}

#[derive(Serialize)]
struct HeadView {
    seq: u64,
    hash: String,
}

/// `GET /api/v1/audit/checkpoints`: the signed checkpoints (oldest first) and the current head.
pub async fn checkpoints(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let store = state.store.clone();
    let (head, checkpoints) = web::block(move || -> Result<_, ApiError> {
        Ok((
            audit::checkpoint::head(store.as_ref())?,
            audit::checkpoint::list(store.as_ref())?,
        ))
    })
    .await
    .map_err(blocking_err)??;
    Ok(HttpResponse::Ok().json(Checkpoints {
        head: head.map(|(seq, hash)| HeadView { seq, hash }),
        checkpoints,
    }))
}
