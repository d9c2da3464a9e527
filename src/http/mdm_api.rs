//! Admin API for MDM: enrollment profiles and links, commands, devices; and the API-token
//! routes of the admin socket.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::AppState;
use super::api::authenticate;
use super::mdm::{NO_TOPIC_WARNING, signed_profile};
use crate::error::ApiError;
use crate::iam::api_tokens::{self, ApiTokenError};
use crate::mdm::enrollment::{EnrollmentKind, EnrollmentRecord, EnrollmentStatus};
use crate::mdm::profile;
use crate::mdm::queue::{DEFAULT_PRIORITY, Delivery, DeliveryStatus};
use crate::mdm::schema;

const MAX_PAGE: usize = 1000;
const HISTORY: usize = 100;

fn blocking_err(e: actix_web::error::BlockingError) -> ApiError {
    ApiError::Internal(e.to_string())
}

// ---------------------------------------------------------------- enrollment

pub async fn enrollment_profile(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    signed_profile(&state, actor).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    ttl_secs: Option<u64>,
}

#[derive(Serialize)]
struct LinkCreated {
    id: String,
    url: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    warnings: Vec<&'static str>,
}

pub async fn create_link(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Option<web::Json<LinkRequest>>,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let ttl = match body.and_then(|b| b.ttl_secs) {
        None => state.enrollment.link_ttl,
        Some(s) if (60..=30 * 24 * 3600).contains(&s) => {
            time::Duration::seconds(i64::try_from(s).unwrap_or(60))
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "ttl_secs must be between 60 and 2592000".into(),
            ));
        }
    };
    let now = state.clock.now();
    let store = state.store.clone();
    let actor2 = actor.clone();
    let (token, link) = web::block(move || profile::create_link(store.as_ref(), ttl, &actor2, now))
        .await
        .map_err(blocking_err)??;
    tracing::info!(link = %link.id, %actor, expires_at = %link.expires_at, "enrollment link created");
    let mut warnings = Vec::new();
    if !state.push.topic().1 {
        warnings.push("no push certificate is imported: enrolled devices cannot be woken until one is");
    }
    Ok(HttpResponse::Created().json(LinkCreated {
        id: link.id,
        url: format!("{}/enroll/{token}", state.enrollment.public_url),
        expires_at: link.expires_at,
        warnings,
    }))
}

// ---------------------------------------------------------------- commands

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRequest {
    targets: Vec<String>,
    command: serde_json::Value,
    #[serde(default)]
    priority: Option<u8>,
}

#[derive(Debug, Deserialize)]
pub struct CommandQuery {
    /// For plist bodies: comma-separated enrollment IDs.
    targets: Option<String>,
    priority: Option<u8>,
}

#[derive(Serialize)]
struct Coalesced {
    target: String,
    command_uuid: String,
}

#[derive(Serialize)]
struct CommandCreated {
    command_uuid: String,
    request_type: String,
    queued: usize,
    coalesced: Vec<Coalesced>,
}

/// Queues a command: JSON `{"targets": [...], "command": {"RequestType": ...}, "priority": n}`,
/// or a plist body (`application/x-apple-plist` or `application/xml`) holding the `Command`
/// dictionary (or a whole command plist) with `?targets=a,b`.
pub async fn create_command(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<CommandQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (targets, command, priority) = if content_type.starts_with("application/json") {
        let parsed: CommandRequest =
            serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
        let command =
            schema::command_from_json(&parsed.command).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        (parsed.targets, command, parsed.priority)
    } else if content_type.starts_with("application/x-apple-plist")
        || content_type.starts_with("application/xml")
    {
        let mut dict: Dictionary =
            plist::from_bytes(&body).map_err(|e| ApiError::BadRequest(format!("invalid plist: {e}")))?;
        if let Some(Value::Dictionary(inner)) = dict.remove("Command") {
            dict = inner;
        }
        let targets = query
            .targets
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        (targets, dict, query.priority)
    } else {
        return Err(ApiError::BadRequest(
            "send application/json, or a plist as application/x-apple-plist".into(),
        ));
    };
    if targets.len() > 100_000 {
        return Err(ApiError::BadRequest("at most 100000 targets per command".into()));
    }
    let now = state.clock.now();
    let mdm = state.mdm.clone();
    let request_type = command
        .get("RequestType")
        .and_then(Value::as_string)
        .unwrap_or_default()
        .to_owned();
    let out = web::block(move || {
        mdm.enqueue(
            &targets,
            &command,
            priority.unwrap_or(DEFAULT_PRIORITY),
            &actor,
            now,
        )
    })
    .await
    .map_err(blocking_err)??;
    let mut res = HttpResponse::Created();
    if !state.push.topic().1 {
        res.insert_header((header::WARNING, NO_TOPIC_WARNING));
    }
    Ok(res.json(CommandCreated {
        command_uuid: out.command_uuid,
        request_type,
        queued: out.queued.len(),
        coalesced: out
            .coalesced
            .into_iter()
            .map(|(target, command_uuid)| Coalesced { target, command_uuid })
            .collect(),
    }))
}

#[derive(Serialize)]
struct DeliveryView {
    enrollment_id: String,
    status: DeliveryStatus,
    #[serde(with = "time::serde::rfc3339")]
    queued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    sent_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    answered_at: Option<OffsetDateTime>,
    not_now_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_chain: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
}

impl DeliveryView {
    fn new(d: Delivery, with_result: bool) -> Self {
        let parsed = d
            .result
            .as_ref()
            .and_then(|raw| plist::from_bytes::<Dictionary>(&raw.bytes()).ok());
        let error_chain = parsed
            .as_ref()
            .and_then(|p| p.get("ErrorChain"))
            .map(schema::plist_to_json);
        let result = if with_result {
            parsed.map(|p| schema::plist_to_json(&Value::Dictionary(p)))
        } else {
            None
        };
        Self {
            enrollment_id: d.enrollment_id,
            status: d.status,
            queued_at: d.queued_at,
            sent_at: d.sent_at,
            answered_at: d.answered_at,
            not_now_count: d.not_now_count,
            error_chain,
            result,
        }
    }
}

#[derive(Serialize)]
struct CommandView {
    command_uuid: String,
    request_type: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    created_by: String,
    priority: u8,
    command: serde_json::Value,
    targets: Vec<DeliveryView>,
}

pub async fn get_command(
    state: web::Data<AppState>,
    req: HttpRequest,
    uuid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let uuid = uuid.into_inner().to_uppercase();
    if uuid.len() > 64 {
        return Err(ApiError::NotFound);
    }
    let mdm = state.mdm.clone();
    let found = web::block(move || mdm.command(&uuid))
        .await
        .map_err(blocking_err)??;
    let Some((record, deliveries)) = found else {
        return Err(ApiError::NotFound);
    };
    let command = plist::from_bytes::<Dictionary>(record.plist.as_bytes())
        .ok()
        .and_then(|mut d| d.remove("Command"))
        .map(|c| schema::plist_to_json(&c))
        .unwrap_or(serde_json::Value::Null);
    Ok(HttpResponse::Ok().json(CommandView {
        command_uuid: record.uuid,
        request_type: record.request_type,
        created_at: record.created_at,
        created_by: record.created_by,
        priority: record.priority,
        command,
        targets: deliveries
            .into_iter()
            .map(|d| DeliveryView::new(d, true))
            .collect(),
    }))
}

// ---------------------------------------------------------------- devices

/// A device (enrollment) as the API shows it: no push secrets, no sealed tokens.
#[derive(Serialize)]
struct DeviceView {
    enrollment_id: String,
    kind: EnrollmentKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_id: Option<String>,
    status: EnrollmentStatus,
    pushable: bool,
    device_name: Option<String>,
    serial_number: Option<String>,
    model: Option<String>,
    model_name: Option<String>,
    product_name: Option<String>,
    os_version: Option<String>,
    build_version: Option<String>,
    imei: Option<String>,
    meid: Option<String>,
    user_short_name: Option<String>,
    user_long_name: Option<String>,
    awaiting_configuration: bool,
    bootstrap_token_escrowed: bool,
    identity_certificate_serial: String,
    #[serde(with = "time::serde::rfc3339")]
    enrolled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    token_updated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    unenrolled_at: Option<OffsetDateTime>,
}

impl From<EnrollmentRecord> for DeviceView {
    fn from(r: EnrollmentRecord) -> Self {
        let pushable = r.pushable();
        let f = r.facts;
        Self {
            enrollment_id: r.id,
            kind: r.kind,
            parent_id: r.parent,
            status: r.status,
            pushable,
            device_name: f.device_name,
            serial_number: f.serial_number,
            model: f.model,
            model_name: f.model_name,
            product_name: f.product_name,
            os_version: f.os_version,
            build_version: f.build_version,
            imei: f.imei,
            meid: f.meid,
            user_short_name: r.user_short_name,
            user_long_name: r.user_long_name,
            awaiting_configuration: r.awaiting_configuration,
            bootstrap_token_escrowed: r.bootstrap_token_sealed.is_some(),
            identity_certificate_serial: r.certificate_serial,
            enrolled_at: r.enrolled_at,
            last_seen_at: r.last_seen_at,
            token_updated_at: r.token_updated_at,
            unenrolled_at: r.unenrolled_at,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    /// Text to find in the ID, name, serial number, model or user.
    search: Option<String>,
    status: Option<EnrollmentStatus>,
    /// Cursor: the `next` of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct DevicePageView {
    items: Vec<DeviceView>,
    next: Option<String>,
}

pub async fn list_devices(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<DeviceQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let q = query.into_inner();
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let mdm = state.mdm.clone();
    let page = web::block(move || mdm.list(q.search.as_deref(), q.status, q.after.as_deref(), limit))
        .await
        .map_err(blocking_err)??;
    Ok(HttpResponse::Ok().json(DevicePageView {
        items: page.items.into_iter().map(DeviceView::from).collect(),
        next: page.next,
    }))
}

#[derive(Serialize)]
struct HistoryItem {
    command_uuid: String,
    request_type: String,
    #[serde(flatten)]
    delivery: DeliveryView,
}

#[derive(Serialize)]
struct DeviceDetail {
    #[serde(flatten)]
    device: DeviceView,
    pending_commands: usize,
    ownership: crate::inventory::Ownership,
    /// The typed inventory, once the device has reported (device channels only).
    inventory: Option<crate::inventory::DeviceInventory>,
    #[serde(with = "time::serde::rfc3339::option")]
    next_inventory_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_push: Option<crate::push::PushState>,
    commands: Vec<HistoryItem>,
}

pub async fn get_device(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let id = id.into_inner();
    let (mdm, store) = (state.mdm.clone(), state.store.clone());
    let found = web::block(move || -> Result<Option<DeviceDetail>, ApiError> {
        let Some(record) = mdm.enrollment(&id)? else {
            return Ok(None);
        };
        let pending = mdm.pending(&id)?;
        let last_push = crate::push::push_state(store.as_ref(), &id)?;
        let ownership = crate::inventory::ownership(store.as_ref(), &record)?;
        let inventory = crate::inventory::get(store.as_ref(), &id)?;
        let next_inventory_at = crate::inventory::schedule::due_at(store.as_ref(), &id)?;
        let commands = mdm
            .history(&id, HISTORY)?
            .into_iter()
            .map(|d| HistoryItem {
                command_uuid: d.uuid.clone(),
                request_type: d.request_type.clone(),
                delivery: DeliveryView::new(d, false),
            })
            .collect();
        Ok(Some(DeviceDetail {
            device: record.into(),
            pending_commands: pending,
            ownership,
            inventory,
            next_inventory_at,
            last_push,
            commands,
        }))
    })
    .await
    .map_err(blocking_err)??;
    found
        .map(|d| HttpResponse::Ok().json(d))
        .ok_or(ApiError::NotFound)
}

// ---------------------------------------------------------------- API tokens (admin socket)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    name: String,
    ttl_days: Option<u32>,
}

#[derive(Serialize)]
struct TokenCreated {
    token: String,
    #[serde(flatten)]
    record: api_tokens::ApiTokenRecord,
}

fn token_err(e: ApiTokenError) -> ApiError {
    match e {
        ApiTokenError::BadName => ApiError::BadRequest(e.to_string()),
        ApiTokenError::NotFound(_) => ApiError::NotFound,
        ApiTokenError::Store(s) => ApiError::Store(s),
    }
}

pub async fn socket_create_token(
    state: web::Data<AppState>,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let store = state.store.clone();
    let TokenRequest { name, ttl_days } = body.into_inner();
    let ttl = ttl_days.map(|d| time::Duration::days(i64::from(d)));
    let (token, record) = web::block(move || api_tokens::create(store.as_ref(), &name, ttl, now))
        .await
        .map_err(blocking_err)?
        .map_err(token_err)?;
    tracing::info!(id = %record.id, name = %record.name, "API token created");
    Ok(HttpResponse::Created().json(TokenCreated { token, record }))
}

pub async fn socket_list_tokens(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let list = web::block(move || api_tokens::list(store.as_ref()))
        .await
        .map_err(blocking_err)??;
    Ok(HttpResponse::Ok().json(list))
}

pub async fn socket_revoke_token(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let store = state.store.clone();
    let id = id.into_inner();
    let record = web::block(move || api_tokens::revoke(store.as_ref(), &id, now))
        .await
        .map_err(blocking_err)?
        .map_err(token_err)?;
    tracing::info!(id = %record.id, name = %record.name, "API token revoked");
    Ok(HttpResponse::Ok().json(record))
}
