//! Admin API for inventory: a device's apps, profiles, certificates and change history, a
//! refresh on demand, and its ownership (which decides what may be collected).

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::api::{audit, authenticate, source, with_source};
use super::{AppState, blocking_err};
use crate::audit::{AuditEvent, Outcome};
use crate::error::ApiError;
use crate::inventory::index::DeviceFilter;
use crate::inventory::{self, InstalledApp, InstalledCertificate, InstalledProfile, List, Ownership};
use crate::mdm::MdmError;
use crate::mdm::actions::{self, Action, ActionParams};
use crate::mdm::enrollment::EnrollmentStatus;

/// Most history entries one request returns.
const MAX_HISTORY_PAGE: usize = 500;

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
    let queued = match web::block(move || mdm.refresh_inventory(&id2, now))
        .await
        .map_err(blocking_err)
        .and_then(|r| r.map_err(ApiError::from))
    {
        Ok(queued) => queued,
        Err(e) => {
            let event = AuditEvent::new(actor.actor.clone(), "device.inventory.refresh", e.audit_outcome())
                .target(id.as_str())
                .reason(e.to_string());
            audit(&state, with_source(event, &req)).await;
            return Err(e);
        }
    };
    tracing::info!(enrollment = %id, %actor, commands = queued, "inventory refresh requested");
    let event = AuditEvent::new(actor.actor.clone(), "device.inventory.refresh", Outcome::Success)
        .target(id.as_str())
        .reason(format!("{queued} commands queued"));
    audit(&state, with_source(event, &req)).await;
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
    if let Err(e) = web::block(move || mdm.set_ownership(&id2, ownership))
        .await
        .map_err(blocking_err)
        .and_then(|r| r.map_err(ApiError::from))
    {
        let event = AuditEvent::new(
            actor.actor.clone(),
            format!("device.ownership.{}", ownership.name()),
            e.audit_outcome(),
        )
        .target(id.as_str())
        .reason(e.to_string());
        audit(&state, with_source(event, &req)).await;
        return Err(e);
    }
    tracing::info!(enrollment = %id, %actor, ?ownership, %reason, "device ownership set");
    let event = AuditEvent::new(
        actor.actor.clone(),
        format!("device.ownership.{}", ownership.name()),
        Outcome::Success,
    )
    .target(id.as_str())
    .reason(reason);
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::Ok().json(OwnershipView {
        enrollment_id: id,
        ownership,
    }))
}

// ---------------------------------------------------------------- remote actions

fn parse_action(name: &str) -> Result<Action, ApiError> {
    Action::parse(name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown action {name:?}: lock, erase, clear_passcode, restart, shut_down, enable_lost_mode, locate, play_sound, disable_lost_mode"
        ))
    })
}

/// `POST /api/v1/devices/{id}/actions/{action}`: checks and queues one action.
pub async fn perform(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<ActionParams>,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let (id, action) = path.into_inner();
    let action = parse_action(&action)?;
    let (mdm, now, params) = (state.mdm.clone(), state.clock.now(), body.into_inner());
    let event = with_source(
        AuditEvent::new(
            actor.actor.clone(),
            format!("device.action.{}", action.name()),
            Outcome::Success,
        )
        .target(id.as_str()),
        &req,
    );
    let reason = params.reason.trim().to_owned();
    let performed = web::block(move || mdm.perform_action(&id, action, &params, &actor, None, now))
        .await
        .map_err(blocking_err)?
        .map_err(ApiError::from);
    match performed {
        Ok(taken) => {
            audit(&state, event.reason(reason)).await;
            if action == Action::Erase {
                // What a user asked for from the portal is done.
                let (store, id) = (state.store.clone(), taken.enrollment_id.clone());
                if let Ok(Err(e)) =
                    web::block(move || crate::portal::clear_erase_requests(store.as_ref(), &id)).await
                {
                    tracing::warn!(error = %e, "erase requests not cleared");
                }
            }
            Ok(HttpResponse::Accepted().json(taken))
        }
        Err(e) => {
            let mut event = event.reason(format!("{e}"));
            event.outcome = e.audit_outcome();
            audit(&state, event).await;
            Err(e)
        }
    }
}

pub async fn action_history(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_HISTORY_PAGE);
    let id = id.into_inner();
    let items = for_device(&state, id.clone(), move |store, id| {
        Ok(actions::history(store, id, limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(Items {
        enrollment_id: id,
        items,
    }))
}

/// Where a device in lost mode has reported itself (nothing outside lost mode).
pub async fn locations(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_HISTORY_PAGE);
    let id = id.into_inner();
    let items = for_device(&state, id.clone(), move |store, id| {
        Ok(inventory::locations(store, id, limit)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(Items {
        enrollment_id: id,
        items,
    }))
}

/// A bulk action: which devices (the list's filters) and what to send them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// The devices the list's filters match…
    #[serde(default)]
    filter: Option<DeviceFilter>,
    /// …or exactly these (a selection in the console); at most [`MAX_BULK_TARGETS`].
    #[serde(default)]
    targets: Option<Vec<String>>,
    params: ActionParams,
    /// Only answer how many devices the action would reach and why the others would not.
    #[serde(default)]
    dry_run: bool,
}

/// The most devices a bulk action may name one by one (larger sets go by filter); a body of
/// 400 enrollment IDs (up to 36 characters) stay within the API's 16 KiB JSON limit.
const MAX_BULK_TARGETS: usize = 400;

#[derive(Serialize)]
struct BulkAccepted {
    bulk_id: String,
    action: Action,
    /// Devices the filter matched.
    matched: usize,
    /// Devices the action will be sent to.
    eligible: usize,
    /// Devices left out, by the reason they were.
    skipped: BTreeMap<String, usize>,
    /// Devices queued per second.
    pace_per_second: usize,
}

/// What a bulk action would do (`dry_run`): nothing is queued or audited.
#[derive(Serialize)]
struct BulkPlan {
    action: Action,
    matched: usize,
    eligible: usize,
    skipped: BTreeMap<String, usize>,
}

/// Devices per step of a bulk action, and the pause between steps: a bulk restart of every
/// iPad must not wake the whole fleet in the same second.
const BULK_STEP: usize = 50;
const BULK_PAUSE: Duration = Duration::from_millis(500);

/// `POST /api/v1/devices/actions/{action}`: the action for every active device the filter
/// matches and the checks allow, queued at a steady pace in the background. Erasing needs
/// `params.confirm` set to `ERASE <n> DEVICES` for the eligible count the first answer gives.
pub async fn bulk(
    state: web::Data<AppState>,
    req: HttpRequest,
    action: web::Path<String>,
    body: web::Json<BulkRequest>,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let action = parse_action(&action.into_inner())?;
    let BulkRequest {
        filter,
        targets,
        params,
        dry_run,
    } = body.into_inner();
    let mut filter = match (filter, &targets) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("give a filter or targets, not both".into()));
        }
        (filter, _) => filter.unwrap_or_default(),
    };
    match &targets {
        Some(t) if t.is_empty() => return Err(ApiError::BadRequest("targets is empty".into())),
        Some(t) if t.len() > MAX_BULK_TARGETS => {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_BULK_TARGETS} targets; use a filter for more"
            )));
        }
        _ => {}
    }
    filter.status = Some(EnrollmentStatus::Active);
    let (mdm, now) = (state.mdm.clone(), state.clock.now());
    let plan_params = params.clone();
    let (eligible, skipped, matched) = web::block(move || -> Result<_, ApiError> {
        let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
        // Matched: what the filter found (active devices only), or every device named.
        let (ids, matched) = match targets {
            None => {
                let ids = mdm
                    .index()
                    .query(&filter, None, None, 0, usize::MAX, now)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?
                    .ids;
                let matched = ids.len();
                (ids, matched)
            }
            Some(mut targets) => {
                targets.sort();
                targets.dedup();
                let matched = targets.len();
                let mut active = Vec::with_capacity(targets.len());
                for id in targets {
                    match mdm.enrollment(&id)? {
                        Some(r) if r.status == EnrollmentStatus::Active => active.push(id),
                        _ => *skipped.entry("not an active enrollment".to_owned()).or_default() += 1,
                    }
                }
                (active, matched)
            }
        };
        let mut eligible = Vec::new();
        for id in &ids {
            let per_device = per_device_params(action, &plan_params, mdm.as_ref(), id)?;
            match mdm.check_action(id, action, &per_device) {
                Ok(()) => eligible.push(id.clone()),
                Err(MdmError::BadRequest(m)) => return Err(ApiError::BadRequest(m)),
                Err(MdmError::Store(e)) => return Err(ApiError::Store(e)),
                Err(e) => *skipped.entry(e.to_string()).or_default() += 1,
            }
        }
        Ok((eligible, skipped, matched))
    })
    .await
    .map_err(blocking_err)??;
    if dry_run {
        return Ok(HttpResponse::Ok().json(BulkPlan {
            action,
            matched,
            eligible: eligible.len(),
            skipped,
        }));
    }
    if action.is_destructive() {
        let expected = format!("ERASE {} DEVICES", eligible.len());
        if params.confirm.as_deref().map(str::trim) != Some(expected.as_str()) {
            return Err(ApiError::Conflict(format!(
                "this erases {} device(s); to go ahead send params.confirm = {expected:?}",
                eligible.len()
            )));
        }
    }
    let bulk_id = uuid::Uuid::new_v4().to_string();
    tracing::warn!(%bulk_id, %actor, ?action, matched, eligible = eligible.len(), reason = %params.reason, "bulk action started");
    let event = AuditEvent::new(
        actor.actor.clone(),
        format!("device.bulk_action.{}", action.name()),
        Outcome::Success,
    )
    .target(format!(
        "bulk:{bulk_id} ({} of {matched} matched)",
        eligible.len()
    ))
    .reason(params.reason.trim());
    audit(&state, with_source(event, &req)).await;
    let (audit_log, from) = (state.audit.clone(), source(&req));
    let accepted = BulkAccepted {
        bulk_id: bulk_id.clone(),
        action,
        matched,
        eligible: eligible.len(),
        skipped,
        pace_per_second: BULK_STEP * 1000 / usize::try_from(BULK_PAUSE.as_millis()).unwrap_or(1000).max(1),
    };
    let (mdm, clock) = (state.mdm.clone(), state.clock.clone());
    actix_web::rt::spawn(async move {
        let (mut queued, mut refused) = (0usize, 0usize);
        for step in eligible.chunks(BULK_STEP) {
            let (mdm, step, params, actor, bulk_id, now) = (
                mdm.clone(),
                step.to_vec(),
                params.clone(),
                actor.clone(),
                bulk_id.clone(),
                clock.now(),
            );
            let (audit_log, from) = (audit_log.clone(), from.clone());
            let outcome = web::block(move || {
                let mut ok = 0;
                for id in &step {
                    let per_device = match per_device_params(action, &params, mdm.as_ref(), id) {
                        Ok(p) => p,
                        Err(_) => continue,
                    };
                    let performed = mdm.perform_action(id, action, &per_device, &actor, Some(&bulk_id), now);
                    let mut event = AuditEvent::new(
                        actor.actor.clone(),
                        format!("device.action.{}", action.name()),
                        Outcome::Success,
                    )
                    .target(id.as_str())
                    .reason(format!("{} (bulk {bulk_id})", params.reason.trim()));
                    event.source = from.clone();
                    match performed {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            let e = ApiError::from(e);
                            event.outcome = e.audit_outcome();
                            event.reason = Some(format!("{e} (bulk {bulk_id})"));
                        }
                    }
                    if let Err(e) = audit_log.append(event, now) {
                        tracing::error!(enrollment = %id, error = %e, "audit record not written");
                    }
                }
                (ok, step.len() - ok)
            })
            .await;
            if let Ok((ok, no)) = outcome {
                queued += ok;
                refused += no;
            }
            tokio::time::sleep(BULK_PAUSE).await;
        }
        tracing::warn!(%bulk_id, ?action, queued, refused, "bulk action finished");
    });
    Ok(HttpResponse::Accepted().json(accepted))
}

/// A bulk erase was confirmed as a whole; each device's own check wants its serial typed.
fn per_device_params(
    action: Action,
    params: &ActionParams,
    mdm: &crate::mdm::MdmService,
    id: &str,
) -> Result<ActionParams, ApiError> {
    if !action.is_destructive() {
        return Ok(params.clone());
    }
    let serial = mdm
        .enrollment(id)?
        .map(|r| {
            inventory::get(mdm.store(), id)
                .ok()
                .flatten()
                .and_then(|i| i.serial_number)
                .unwrap_or(r.id)
        })
        .unwrap_or_default();
    Ok(ActionParams {
        confirm: Some(serial),
        ..params.clone()
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    stale_days: Option<u32>,
    expiring_days: Option<u32>,
}

/// `GET /api/v1/reports/fleet`: counts by platform, OS version, model, ownership and
/// compliance; devices not seen lately, identity certificates about to expire, devices without
/// a passcode or encryption.
pub async fn fleet_report(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let stale_days = query.stale_days.unwrap_or(30).min(3650);
    let expiring_days = query.expiring_days.unwrap_or(30).min(3650);
    let (mdm, now) = (state.mdm.clone(), state.clock.now());
    let report = web::block(move || mdm.index().report(now, stale_days, expiring_days))
        .await
        .map_err(blocking_err)?;
    Ok(HttpResponse::Ok().json(report))
}
