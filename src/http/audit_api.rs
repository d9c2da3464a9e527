//! The audit log over HTTP: `GET /api/v1/audit` (filtered, paged) and, on the admin socket,
//! `GET /audit/verify` for `citadel audit verify`. There is no route that changes the log.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::authenticate;
use time::OffsetDateTime;

use crate::audit::{self, AuditFilter, AuditRecord, Outcome};
use crate::error::ApiError;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

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
    limit: Option<usize>,
}

#[derive(Serialize)]
struct AuditPage {
    items: Vec<AuditRecord>,
    /// Pass as `after` for the next page; absent on the last one.
    next: Option<u64>,
}

fn blocking_err(e: actix_web::error::BlockingError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// `GET /api/v1/audit?action=device.action.&actor=…&target=…&outcome=denied&since=…&until=…`
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let AuditQuery {
        action,
        target,
        actor,
        outcome,
        since,
        until,
        after,
        limit,
    } = query.into_inner();
    let filter = AuditFilter {
        action,
        target,
        actor,
        outcome,
        since,
        until,
    };
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let log = state.audit.clone();
    let items = web::block(move || log.list(&filter, after.unwrap_or(0), limit))
        .await
        .map_err(blocking_err)??;
    let next = (items.len() == limit)
        .then(|| items.last().map(|r| r.seq))
        .flatten();
    Ok(HttpResponse::Ok().json(AuditPage { items, next }))
}

/// `GET /audit/verify` (admin socket): walks the whole chain.
pub async fn socket_verify(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let verification = web::block(move || audit::verify(store.as_ref()))
        .await
        .map_err(blocking_err)??;
    Ok(HttpResponse::Ok().json(verification))
}
