//! Admin API for inventory: a device's apps, profiles, certificates and change history, a
//! refresh on demand, and its ownership (which decides what may be collected).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::api::authenticate;
use crate::error::ApiError;
use crate::inventory::{self, InstalledApp, InstalledCertificate, InstalledProfile, List, Ownership};
use crate::mdm::MdmError;

/// Most history entries one request returns.
const MAX_HISTORY_PAGE: usize = 500;

fn blocking_err(e: actix_web::error::BlockingError) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Runs `f` on the blocking pool after checking that device `id` exists.
async fn for_device<T, F>(state: &web::Data<AppState>, id: String, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn crate::store::Store, &str) -> Result<T, ApiError> + Send + 'static,
{
    let (mdm, store) = (state.mdm.clone(), state.store.clone());
    web::block(move || -> Result<T, ApiError> {
        if mdm.enrollment(&id)?.is_none() {
            return Err(ApiError::NotFound);
        }
        f(store.as_ref(), &id)
    })
    .await
    .map_err(blocking_err)?
}

#[derive(Serialize)]
struct Items<T> {
    enrollment_id: String,
    items: Vec<T>,
}

async fn list_of<T>(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    which: List,
) -> Result<HttpResponse, ApiError>
where
    T: serde::de::DeserializeOwned + Serialize + Send + 'static,
{
    authenticate(&state, &req).await?;
    let id = id.into_inner();
    let items = for_device(&state, id.clone(), move |store, id| {
        Ok(inventory::list::<T>(store, id, which)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(Items {
        enrollment_id: id,
        items,
    }))
}

pub async fn apps(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    list_of::<InstalledApp>(state, req, id, List::Apps).await
}

pub async fn profiles(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    list_of::<InstalledProfile>(state, req, id, List::Profiles).await
}

pub async fn certificates(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    list_of::<InstalledCertificate>(state, req, id, List::Certificates).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

pub async fn history(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_HISTORY_PAGE);
    let id = id.into_inner();
    let items = for_device(&state, id.clone(), move |store, id| {
        Ok(inventory::history(store, id, limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(Items {
        enrollment_id: id,
        items,
    }))
}

#[derive(Serialize)]
struct Refreshed {
    enrollment_id: String,
    commands_queued: usize,
}

/// Asks the device for its whole inventory now.
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let id = id.into_inner();
    let (mdm, now) = (state.mdm.clone(), state.clock.now());
    let id2 = id.clone();
    let queued = web::block(move || mdm.refresh_inventory(&id2, now))
        .await
        .map_err(blocking_err)?
        .map_err(|e| match e {
            MdmError::NotFound(_) => ApiError::NotFound,
            MdmError::BadRequest(m) => ApiError::Conflict(m),
            other => other.into(),
        })?;
    tracing::info!(enrollment = %id, %actor, commands = queued, "inventory refresh requested");
    Ok(HttpResponse::Accepted().json(Refreshed {
        enrollment_id: id,
        commands_queued: queued,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnershipRequest {
    ownership: Ownership,
    /// Why (kept in the log beside who did it).
    reason: Option<String>,
}

#[derive(Serialize)]
struct OwnershipView {
    enrollment_id: String,
    ownership: Ownership,
}

/// Sets whether a device is corporate or personal. Personal devices are not asked for what the
/// privacy rules forbid from the next report on, and what was kept of those is removed now.
pub async fn set_ownership(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<OwnershipRequest>,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let OwnershipRequest { ownership, reason } = body.into_inner();
    let reason: String = reason.unwrap_or_default().chars().take(500).collect();
    let id = id.into_inner();
    let (mdm, id2) = (state.mdm.clone(), id.clone());
    web::block(move || mdm.set_ownership(&id2, ownership))
        .await
        .map_err(blocking_err)?
        .map_err(|e| match e {
            MdmError::NotFound(_) => ApiError::NotFound,
            other => other.into(),
        })?;
    tracing::info!(enrollment = %id, %actor, ?ownership, %reason, "device ownership set");
    Ok(HttpResponse::Ok().json(OwnershipView {
        enrollment_id: id,
        ownership,
    }))
}
