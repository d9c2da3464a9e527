//! Admin API for push: the push certificate (`/api/v1/push-cert`) and explicit pushes
//! (`/api/v1/push`); the same certificate routes on the admin socket for the CLI.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::api::{audit, authenticate, source, with_source};
use super::{AppState, blocking_err};
use crate::audit::{Actor, AuditEvent, Outcome};
use crate::error::ApiError;
use crate::pki::push::{ImportSource, PushCertError, PushCertUpload};
use crate::push::PushError;

impl From<PushError> for ApiError {
    fn from(e: PushError) -> Self {
        match e {
            PushError::Certificate(PushCertError::TopicChanged { .. }) => ApiError::Conflict(e.to_string()),
            PushError::Certificate(
                PushCertError::Invalid(_) | PushCertError::Expired(_) | PushCertError::NoKey,
            ) => ApiError::BadRequest(e.to_string()),
            PushError::Store(s) => ApiError::Store(s),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

async fn import(
    state: web::Data<AppState>,
    upload: PushCertUpload,
    actor: Actor,
    label: &str,
    from: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let mut event = AuditEvent::new(actor, "push_certificate.import", Outcome::Success);
    event.source = from;
    let imported = match ImportSource::try_from(upload) {
        Ok(source) => {
            let push = state.push.clone();
            web::block(move || push.import(source))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(ApiError::from)
        }
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    };
    match imported {
        Ok(info) => {
            tracing::info!(actor = %label, topic = %info.topic, expires = %info.not_after, "push certificate imported");
            let event = event
                .target(info.topic.as_str())
                .reason(format!("expires {}", info.not_after));
            audit(&state, event).await;
            Ok(HttpResponse::Ok().json(state.push.status(state.clock.now())))
        }
        Err(e) => {
            event.outcome = e.audit_outcome();
            event.reason = Some(e.to_string());
            audit(&state, event).await;
            Err(e)
        }
    }
}

pub async fn api_get(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    Ok(HttpResponse::Ok().json(state.push.status(state.clock.now())))
}

pub async fn api_put(
    state: web::Data<AppState>,
    req: HttpRequest,
    upload: web::Json<PushCertUpload>,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let from = source(&req);
    import(state, upload.into_inner(), actor.actor.clone(), &actor, from).await
}

pub async fn socket_get(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.push.status(state.clock.now())))
}

pub async fn socket_put(
    state: web::Data<AppState>,
    upload: web::Json<PushCertUpload>,
) -> Result<HttpResponse, ApiError> {
    import(state, upload.into_inner(), Actor::Cli, "cli", None).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrRequest {
    /// Shown to Apple with the request (optional).
    email: Option<String>,
}

/// `POST /api/v1/push-cert/csr`: a certificate request (PEM) to upload to Apple's push
/// certificates portal; the certificate Apple returns is then uploaded with `PUT /push-cert`.
/// A new request replaces a pending one's key.
pub async fn api_csr(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    // No body is the same as `{}`; a body that is not the request is refused.
    let request: CsrRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CsrRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?
    };
    let email = request.email.filter(|e| !e.trim().is_empty());
    if email.as_ref().is_some_and(|e| e.len() > 254 || !e.contains('@')) {
        return Err(ApiError::BadRequest("email is not an address".into()));
    }
    let (push, organization) = (state.push.clone(), state.enrollment.organization.clone());
    let pem = web::block(move || push.create_request(&organization, email.as_deref()))
        .await
        .map_err(blocking_err)??;
    let event = AuditEvent::new(actor.actor.clone(), "push_cert.request", Outcome::Success)
        .reason("certificate request for Apple's push portal; its key stays on the appliance");
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CONTENT_TYPE, "application/pkcs10"))
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            "attachment; filename=\"citadel-push.csr\"",
        ))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .body(pem))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    targets: Vec<String>,
}

/// Wakes the given enrollments now (they then fetch their queued commands).
pub async fn api_push(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<PushRequest>,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let targets = body.into_inner().targets;
    if targets.is_empty() || targets.len() > 100_000 {
        return Err(ApiError::BadRequest("give 1 to 100000 targets".into()));
    }
    let n = targets.len();
    tracing::info!(%actor, targets = n, "explicit push requested");
    let event = AuditEvent::new(actor.actor.clone(), "push.request", Outcome::Success).target(if n == 1 {
        targets[0].clone()
    } else {
        format!("{n} devices")
    });
    audit(&state, with_source(event, &req)).await;
    state.push.request(targets);
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "requested": n })))
}
