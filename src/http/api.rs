//! The JSON admin API (`/api/v1`) and the same operations on the owner-only admin socket that
//! the CLI uses while the server runs.
//!
//! Until administrators exist (the IAM work), the API accepts API tokens (`citadel api-token
//! create`) and the one-time bootstrap secret as bearer tokens.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{AppState, audit_api, inventory_api, mdm_api, push_api};
use crate::audit::{Actor, AuditEvent, Outcome};
use crate::error::ApiError;
use crate::iam::{api_tokens, bootstrap};
use crate::scep::registry::RevokeOutcome;

/// Longest challenge lifetime an administrator may ask for.
const MAX_CHALLENGE_TTL_SECS: u64 = 30 * 24 * 3600;

pub fn configure(cfg: &mut web::ServiceConfig, max_command_bytes: usize) {
    cfg.service(
        web::scope("/api/v1")
            .app_data(
                web::JsonConfig::default()
                    .limit(16 * 1024)
                    .error_handler(json_error),
            )
            .app_data(web::PayloadConfig::new(max_command_bytes))
            .route("/scep/challenges", web::post().to(api_create_challenge))
            .route("/enrollment/profile", web::get().to(mdm_api::enrollment_profile))
            .route("/enrollment/links", web::post().to(mdm_api::create_link))
            .route("/commands", web::post().to(mdm_api::create_command))
            .route("/commands/{uuid}", web::get().to(mdm_api::get_command))
            .route("/devices", web::get().to(mdm_api::list_devices))
            .route("/devices/export", web::get().to(mdm_api::export_devices))
            .route("/reports/fleet", web::get().to(inventory_api::fleet_report))
            .route("/devices/actions/{action}", web::post().to(inventory_api::bulk))
            .route(
                "/devices/{id}/actions/{action}",
                web::post().to(inventory_api::perform),
            )
            .route(
                "/devices/{id}/actions",
                web::get().to(inventory_api::action_history),
            )
            .route("/devices/{id}/locations", web::get().to(inventory_api::locations))
            .route("/devices/{id}", web::get().to(mdm_api::get_device))
            .route("/devices/{id}/apps", web::get().to(inventory_api::apps))
            .route("/devices/{id}/profiles", web::get().to(inventory_api::profiles))
            .route(
                "/devices/{id}/certificates",
                web::get().to(inventory_api::certificates),
            )
            .route("/devices/{id}/history", web::get().to(inventory_api::history))
            .route("/devices/{id}/inventory", web::post().to(inventory_api::refresh))
            .route(
                "/devices/{id}/ownership",
                web::put().to(inventory_api::set_ownership),
            )
            .route("/push-cert", web::get().to(push_api::api_get))
            .route("/push-cert", web::put().to(push_api::api_put))
            .route("/push", web::post().to(push_api::api_push))
            .route("/audit", web::get().to(audit_api::list))
            .route("/audit/export", web::get().to(audit_api::export))
            .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::NotFound) })),
    );
}

/// Routes of the admin socket: reachable only by the data directory's owner.
pub fn configure_admin_socket(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(16 * 1024)
            .error_handler(json_error),
    )
    .route("/scep/challenges", web::post().to(socket_create_challenge))
    .route("/push-cert", web::get().to(push_api::socket_get))
    .route("/push-cert", web::put().to(push_api::socket_put))
    .route("/api-tokens", web::post().to(mdm_api::socket_create_token))
    .route("/api-tokens", web::get().to(mdm_api::socket_list_tokens))
    .route(
        "/api-tokens/{id}/revoke",
        web::post().to(mdm_api::socket_revoke_token),
    )
    .route("/ca/certificates", web::get().to(list_certificates))
    .route("/audit/verify", web::get().to(audit_api::socket_verify))
    .route(
        "/ca/certificates/{serial}/revoke",
        web::post().to(revoke_certificate),
    );
}

fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(err.to_string()).into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// Lifetime in seconds; default `scep.challenge_ttl_secs`.
    ttl_secs: Option<u64>,
}

/// Who an admin API request acts as: the audit log's actor and the label used in logs and
/// records (`api-token:ID (name)`). Dereferences to the label.
#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    pub label: String,
}

impl std::ops::Deref for Principal {
    type Target = str;
    fn deref(&self) -> &str {
        &self.label
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// The client's address, for the audit log's "from where".
pub(super) fn source(req: &HttpRequest) -> Option<String> {
    req.peer_addr().map(|a| a.ip().to_string())
}

/// `event` with the request's client address as its source.
pub(super) fn with_source(mut event: AuditEvent, req: &HttpRequest) -> AuditEvent {
    event.source = source(req);
    event
}

/// Appends to the audit log. The change it records has already happened, so a failure to
/// record it is logged as an error rather than undoing or failing the request.
pub(super) async fn audit(state: &web::Data<AppState>, event: AuditEvent) {
    let (log, now) = (state.audit.clone(), state.clock.now());
    let action = event.action.clone();
    let outcome = web::block(move || log.append(event, now)).await;
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(%action, error = %e, "audit record not written"),
        Err(e) => tracing::error!(%action, error = %e, "audit record not written"),
    }
}

/// Checks the bearer token (an API token, or the bootstrap secret until administrators
/// exist) and returns who is acting, for logs and records.
pub(super) async fn authenticate(
    state: &web::Data<AppState>,
    req: &HttpRequest,
) -> Result<Principal, ApiError> {
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or(ApiError::Unauthorized)?;
    let store = state.store.clone();
    let now = state.clock.now();
    let principal = web::block(move || -> Result<Option<Principal>, ApiError> {
        if let Some(record) = api_tokens::verify(store.as_ref(), &token, now)? {
            return Ok(Some(Principal {
                label: format!("api-token:{} ({})", record.id, record.name),
                actor: Actor::ApiToken(record.id),
            }));
        }
        Ok(bootstrap::verify(store.as_ref(), &token)?.then(|| Principal {
            actor: Actor::Bootstrap,
            label: "bootstrap".to_owned(),
        }))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    principal.ok_or(ApiError::Unauthorized)
}

async fn create_challenge(
    state: web::Data<AppState>,
    body: Option<web::Json<ChallengeRequest>>,
    actor: &'static str,
    audited: AuditEvent,
) -> Result<HttpResponse, ApiError> {
    let ttl_secs = body.and_then(|b| b.ttl_secs);
    if let Some(ttl) = ttl_secs
        && !(1..=MAX_CHALLENGE_TTL_SECS).contains(&ttl)
    {
        return Err(ApiError::BadRequest(format!(
            "ttl_secs must be between 1 and {MAX_CHALLENGE_TTL_SECS}"
        )));
    }
    let ttl = ttl_secs.map(|s| time::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)));
    let now = state.clock.now();
    let scep = state.scep.clone();
    let created = web::block(move || scep.create_challenge(ttl, now, actor))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    // The challenge is a secret: the record says only that one was made, and until when.
    audit(
        &state,
        audited.reason(format!("valid until {}", created.expires_at)),
    )
    .await;
    Ok(HttpResponse::Created().json(created))
}

async fn api_create_challenge(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Option<web::Json<ChallengeRequest>>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let event = with_source(
        AuditEvent::new(principal.actor, "scep_challenge.create", Outcome::Success),
        &req,
    );
    create_challenge(state, body, "api", event).await
}

async fn socket_create_challenge(
    state: web::Data<AppState>,
    body: Option<web::Json<ChallengeRequest>>,
) -> Result<HttpResponse, ApiError> {
    let event = AuditEvent::new(Actor::Cli, "scep_challenge.create", Outcome::Success);
    create_challenge(state, body, "cli", event).await
}

async fn list_certificates(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let scep = state.scep.clone();
    let list = web::block(move || scep.certificates())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(list))
}

async fn revoke_certificate(
    state: web::Data<AppState>,
    serial: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let scep = state.scep.clone();
    let serial = serial.into_inner();
    let outcome = web::block(move || scep.revoke(&serial, now))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match outcome {
        RevokeOutcome::Revoked(r) => {
            let event = AuditEvent::new(Actor::Cli, "certificate.revoke", Outcome::Success)
                .target(r.serial.as_str())
                .reason(r.subject.clone());
            audit(&state, event).await;
            Ok(HttpResponse::Ok().json(r))
        }
        RevokeOutcome::AlreadyRevoked(r) => Ok(HttpResponse::Ok().json(r)),
        RevokeOutcome::Unknown => Err(ApiError::NotFound),
    }
}
