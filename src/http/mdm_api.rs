//! Admin API for MDM: enrollment profiles and links, commands, devices; and the API-token
//! routes of the admin socket.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::api::{audit, authenticate, with_source};
use super::mdm::{NO_TOPIC_WARNING, signed_profile};
use super::{AppState, blocking_err};
use crate::audit::{AuditEvent, Outcome};
use crate::error::ApiError;
use crate::inventory::index::{Compliance, DeviceFilter, QueryError};
use crate::inventory::{self, DeviceInventory, Ownership, Platform};
use crate::mdm::enrollment::{EnrollmentKind, EnrollmentRecord, EnrollmentStatus};
use crate::mdm::profile;
use crate::mdm::queue::{DEFAULT_PRIORITY, Delivery, DeliveryStatus};
use crate::mdm::schema;

const MAX_PAGE: usize = 1000;
const HISTORY: usize = 100;

// ---------------------------------------------------------------- enrollment

pub async fn enrollment_profile(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let response = signed_profile(&state, actor.label.clone(), None).await?;
    // Downloading a profile makes a one-time SCEP challenge: a device can enrol with it.
    let event = AuditEvent::new(actor.actor.clone(), "enrollment_profile.create", Outcome::Success)
        .reason("signed profile with a one-time SCEP challenge");
    audit(&state, with_source(event, &req)).await;
    Ok(response)
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
    /// The URL as a QR code (SVG) for a device's camera.
    qr_svg: String,
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
    let (token, link) = web::block(move || profile::create_link(store.as_ref(), ttl, &actor2, None, now))
        .await
        .map_err(blocking_err)??;
    tracing::info!(link = %link.id, %actor, expires_at = %link.expires_at, "enrollment link created");
    let event = AuditEvent::new(actor.actor.clone(), "enrollment_link.create", Outcome::Success)
        .target(link.id.as_str())
        .reason(format!("valid until {}", link.expires_at));
    audit(&state, with_source(event, &req)).await;
    let mut warnings = Vec::new();
    if !state.push.topic().1 {
        warnings.push("no push certificate is imported: enrolled devices cannot be woken until one is");
    }
    let url = format!("{}/enroll/{token}", state.enrollment.public_url);
    Ok(HttpResponse::Created().json(LinkCreated {
        id: link.id,
        qr_svg: super::qr_svg(&url)?,
        url,
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
    /// The caller's own UUID for the command (so that a retried request cannot queue it twice).
    #[serde(default)]
    command_uuid: Option<String>,
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
/// dictionary (or a whole command plist) with `?targets=a,b`. The server picks the command's
/// UUID unless the caller gives one (JSON `command_uuid`, or a whole plist's `CommandUUID`).
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
    let (targets, command, priority, chosen_uuid) = if content_type.starts_with("application/json") {
        let parsed: CommandRequest =
            serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
        let command =
            schema::command_from_json(&parsed.command).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        (parsed.targets, command, parsed.priority, parsed.command_uuid)
    } else if content_type.starts_with("application/x-apple-plist")
        || content_type.starts_with("application/xml")
    {
        let mut dict: Dictionary =
            plist::from_bytes(&body).map_err(|e| ApiError::BadRequest(format!("invalid plist: {e}")))?;
        let mut chosen_uuid = None;
        if let Some(Value::Dictionary(inner)) = dict.remove("Command") {
            chosen_uuid = match dict.remove("CommandUUID") {
                None => None,
                Some(Value::String(uuid)) => Some(uuid),
                Some(_) => return Err(ApiError::BadRequest("CommandUUID must be a string".into())),
            };
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
        (targets, dict, query.priority, chosen_uuid)
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
    // The command API must not be a way around the remote actions' permissions.
    if let Some(permission) = crate::iam::permissions::Permission::for_command(&request_type) {
        super::api::require(&state, &actor, &req, permission).await?;
    }
    let principal = actor.actor.clone();
    let target = match targets.as_slice() {
        [one] => one.clone(),
        many => format!("{} devices", many.len()),
    };
    let enqueued = web::block(move || {
        mdm.enqueue_as(
            chosen_uuid.as_deref(),
            &targets,
            &command,
            priority.unwrap_or(DEFAULT_PRIORITY),
            &actor,
            now,
        )
    })
    .await
    .map_err(blocking_err)?
    .map_err(ApiError::from);
    let mut event = with_source(
        AuditEvent::new(
            principal,
            format!("command.create.{request_type}"),
            Outcome::Success,
        )
        .target(target),
        &req,
    );
    let out = match enqueued {
        Ok(out) => {
            event.reason = Some(format!(
                "command {} queued for {}",
                out.command_uuid,
                out.queued.len()
            ));
            audit(&state, event).await;
            out
        }
        Err(e) => {
            event.outcome = e.audit_outcome();
            event.reason = Some(e.to_string());
            audit(&state, event).await;
            return Err(e);
        }
    };
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
    /// The device's answer as it sent it (XML plist), with the full result only.
    #[serde(skip_serializing_if = "Option::is_none")]
    result_plist: Option<String>,
}

/// How much of a device's answer a view carries.
#[derive(Clone, Copy)]
enum Answer {
    /// The status and error chain only (history lists).
    Summary,
    /// The whole answer, redacted for the reader (see [`redact`]).
    Full { reveal_location: bool },
}

impl DeliveryView {
    fn new(d: Delivery, answer: Answer) -> Self {
        let parsed = d
            .result
            .as_ref()
            .and_then(|raw| plist::from_bytes::<Dictionary>(&raw.bytes()).ok());
        let error_chain = parsed
            .as_ref()
            .and_then(|p| p.get("ErrorChain"))
            .map(schema::plist_to_json);
        let (result, result_plist) = match (answer, parsed) {
            (Answer::Full { reveal_location }, Some(p)) => {
                let shown = Value::Dictionary(crate::mdm::redact::redacted(p, reveal_location));
                (Some(schema::plist_to_json(&shown)), Some(xml_text_of(&shown)))
            }
            // Not a plist (a device's malformed answer): nothing a reader could safely see.
            _ => (None, None),
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
            result_plist,
        }
    }
}

fn xml_text_of(value: &Value) -> String {
    let mut out = Vec::new();
    match plist::to_writer_xml(&mut out, value) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => String::new(),
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
    /// The command exactly as devices receive it (XML plist).
    command_plist: String,
    targets: Vec<DeliveryView>,
}

pub async fn get_command(
    state: web::Data<AppState>,
    req: HttpRequest,
    uuid: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let reveal_location = principal
        .permissions
        .contains(crate::iam::permissions::Permission::DevicesLocate);
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
    // What a reader sees of the command: the PIN that unlocks a Mac, an UnlockToken or a
    // password are not for everyone who may read commands.
    let shown = plist::from_bytes::<Dictionary>(record.plist.as_bytes())
        .ok()
        .map(|d| crate::mdm::redact::redacted(d, reveal_location));
    let command = shown
        .as_ref()
        .and_then(|d| d.get("Command"))
        .map(schema::plist_to_json)
        .unwrap_or(serde_json::Value::Null);
    let command_plist = shown
        .map(|d| xml_text_of(&Value::Dictionary(d)))
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(CommandView {
        command_uuid: record.uuid,
        request_type: record.request_type,
        created_at: record.created_at,
        created_by: record.created_by,
        priority: record.priority,
        command,
        command_plist,
        targets: deliveries
            .into_iter()
            .map(|d| DeliveryView::new(d, Answer::Full { reveal_location }))
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

/// The device list's query string: filters (see [`DeviceFilter`]), order and page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceQuery {
    search: Option<String>,
    platform: Option<String>,
    os_min: Option<String>,
    os_below: Option<String>,
    ownership: Option<Ownership>,
    compliance: Option<Compliance>,
    not_seen_days: Option<u32>,
    supervised: Option<bool>,
    status: Option<EnrollmentStatus>,
    kind: Option<EnrollmentKind>,
    /// A field name, `-` first for descending (`-last_seen_at`).
    sort: Option<String>,
    /// Cursor for the default (ID) order: the `next` of the previous page.
    after: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
    /// For exports: `csv` or `json`.
    format: Option<String>,
}

impl DeviceQuery {
    fn filter(&self) -> DeviceFilter {
        DeviceFilter {
            search: self.search.clone(),
            platform: self.platform.clone(),
            os_min: self.os_min.clone(),
            os_below: self.os_below.clone(),
            ownership: self.ownership,
            compliance: self.compliance,
            not_seen_days: self.not_seen_days,
            supervised: self.supervised,
            status: self.status,
            kind: self.kind,
        }
    }
}

/// A device in the list: the enrollment with the inventory fields the list filters on.
#[derive(Serialize)]
pub(super) struct DeviceSummary {
    #[serde(flatten)]
    device: DeviceView,
    platform: Platform,
    pub(super) ownership: Ownership,
    compliance: Compliance,
    is_supervised: Option<bool>,
    passcode_present: Option<bool>,
    storage_encrypted: Option<bool>,
    battery_level: Option<f64>,
    storage_available_gb: Option<f64>,
}

impl DeviceSummary {
    fn new(record: EnrollmentRecord, inv: Option<DeviceInventory>, ownership: Ownership) -> Self {
        let platform = inventory::platform(&record, inv.as_ref());
        let compliance = Compliance::of(inv.as_ref());
        let mut device = DeviceView::from(record);
        let inv = inv.unwrap_or_default();
        // The latest report wins over what the device said at enrolment.
        for (field, reported) in [
            (&mut device.device_name, &inv.device_name),
            (&mut device.os_version, &inv.os_version),
            (&mut device.build_version, &inv.build_version),
            (&mut device.serial_number, &inv.serial_number),
            (&mut device.model_name, &inv.model_name),
        ] {
            if reported.is_some() {
                field.clone_from(reported);
            }
        }

        Self {
            device,
            platform,
            ownership,
            compliance,
            is_supervised: inv.is_supervised,
            passcode_present: inv.passcode_present,
            storage_encrypted: inv.storage_encrypted,
            battery_level: inv.battery_level,
            storage_available_gb: inv.storage_available_gb,
        }
    }

    pub(super) fn load(store: &dyn crate::store::Store, id: &str) -> Result<Option<Self>, ApiError> {
        let Some(record) = crate::mdm::enrollment::get(store, id)? else {
            return Ok(None);
        };
        let ownership = inventory::ownership(store, &record)?;
        Ok(Some(Self::new(record, inventory::get(store, id)?, ownership)))
    }
}

#[derive(Serialize)]
struct DevicePageView {
    items: Vec<DeviceSummary>,
    /// How many devices match the filters in all.
    total: usize,
    offset: usize,
    limit: usize,
    /// In the default order, the cursor for the next page (`after=`).
    next: Option<String>,
}

fn query_error(e: QueryError) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

pub async fn list_devices(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<DeviceQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let q = query.into_inner();
    if q.format.is_some() {
        return Err(ApiError::BadRequest(
            "format is for /api/v1/devices/export".into(),
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let offset = q.offset.unwrap_or(0);
    let (mdm, store, now) = (state.mdm.clone(), state.store.clone(), state.clock.now());
    let view = web::block(move || -> Result<DevicePageView, ApiError> {
        let filter = q.filter();
        let page = mdm
            .index()
            .query(&filter, q.sort.as_deref(), q.after.as_deref(), offset, limit, now)
            .map_err(query_error)?;
        let mut items = Vec::with_capacity(page.ids.len());
        for id in &page.ids {
            if let Some(item) = DeviceSummary::load(store.as_ref(), id)? {
                items.push(item);
            }
        }
        let default_order = q.sort.is_none();
        let more = match &q.after {
            Some(_) => page.ids.len() == limit,
            None => offset + page.ids.len() < page.total,
        };
        Ok(DevicePageView {
            next: (default_order && more)
                .then(|| page.ids.last().cloned())
                .flatten(),
            items,
            total: page.total,
            offset,
            limit,
        })
    })
    .await
    .map_err(blocking_err)??;
    Ok(HttpResponse::Ok().json(view))
}

/// Columns of the CSV export, in order.
const EXPORT_COLUMNS: &[&str] = &[
    "enrollment_id",
    "kind",
    "status",
    "platform",
    "ownership",
    "compliance",
    "device_name",
    "serial_number",
    "model_name",
    "product_name",
    "os_version",
    "build_version",
    "is_supervised",
    "passcode_present",
    "storage_encrypted",
    "battery_level",
    "storage_available_gb",
    "user_short_name",
    "enrolled_at",
    "last_seen_at",
];

/// Rows per chunk of an export: bounds its memory whatever the fleet size.
const EXPORT_CHUNK: usize = 500;

/// `GET /api/v1/devices/export?format=csv|json` with the list's filters and sort: every
/// matching device, streamed.
pub async fn export_devices(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<DeviceQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = authenticate(&state, &req).await?;
    let q = query.into_inner();
    let csv = match q.format.as_deref().unwrap_or("csv") {
        "csv" => true,
        "json" => false,
        other => return Err(ApiError::BadRequest(format!("format {other:?}: csv or json"))),
    };
    if q.after.is_some() || q.offset.is_some() || q.limit.is_some() {
        return Err(ApiError::BadRequest(
            "an export has every matching device: no paging".into(),
        ));
    }
    let (mdm, store, now) = (state.mdm.clone(), state.store.clone(), state.clock.now());
    let filter = q.filter();
    let sort = q.sort.clone();
    // The IDs first (checks the filter, so a bad one is a 400 rather than a broken stream).
    let ids = web::block(move || {
        mdm.index()
            .query(&filter, sort.as_deref(), None, 0, usize::MAX, now)
            .map(|p| p.ids)
    })
    .await
    .map_err(blocking_err)?
    .map_err(query_error)?;
    tracing::info!(%actor, devices = ids.len(), format = if csv { "csv" } else { "json" }, "device list exported");
    let event = AuditEvent::new(actor.actor.clone(), "device.export", Outcome::Success).reason(format!(
        "{} devices as {}; filter {}",
        ids.len(),
        if csv { "CSV" } else { "JSON" },
        req.query_string()
    ));
    audit(&state, with_source(event, &req)).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, ApiError>>(4);
    std::thread::spawn(move || {
        let head: Vec<u8> = if csv {
            format!("{}\r\n", EXPORT_COLUMNS.join(",")).into_bytes()
        } else {
            b"[".to_vec()
        };
        if tx.blocking_send(Ok(web::Bytes::from(head))).is_err() {
            return;
        }
        let mut first = true;
        for chunk in ids.chunks(EXPORT_CHUNK) {
            let mut out = Vec::with_capacity(chunk.len() * 256);
            for id in chunk {
                let item = match DeviceSummary::load(store.as_ref(), id) {
                    Ok(Some(item)) => item,
                    Ok(None) => continue, // unenrolled and deleted since the query
                    Err(e) => {
                        tracing::error!(error = %e, "device export aborted");
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                let Ok(value) = serde_json::to_value(&item) else {
                    continue;
                };
                if csv {
                    let cells: Vec<String> = EXPORT_COLUMNS.iter().map(|c| csv_cell(&value[*c])).collect();
                    out.extend_from_slice(cells.join(",").as_bytes());
                    out.extend_from_slice(b"\r\n");
                } else {
                    if !first {
                        out.push(b',');
                    }
                    out.extend_from_slice(value.to_string().as_bytes());
                }
                first = false;
            }
            if tx.blocking_send(Ok(web::Bytes::from(out))).is_err() {
                return; // the client went away
            }
        }
        if !csv {
            let _ = tx.blocking_send(Ok(web::Bytes::from_static(b"]")));
        }
    });
    let stream = tokio_stream_from(rx);
    let (content_type, name) = if csv {
        ("text/csv; charset=utf-8", "citadel-devices.csv")
    } else {
        ("application/json", "citadel-devices.json")
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(stream))
}

pub(super) fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<web::Bytes, ApiError>>,
) -> impl futures_util::Stream<Item = Result<web::Bytes, ApiError>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// One CSV cell (RFC 4180): quoted when it holds a comma, quote or line break; formula
/// characters defused so a spreadsheet does not run a device's name.
fn csv_cell(value: &serde_json::Value) -> String {
    let raw = match value {
        serde_json::Value::Null => return String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let raw = if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{raw}")
    } else {
        raw
    };
    if raw.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", raw.replace('"', "\"\""))
    } else {
        raw
    }
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
    device: DeviceSummary,
    pending_commands: usize,
    /// The typed inventory, once the device has reported (device channels only).
    inventory: Option<crate::inventory::DeviceInventory>,
    #[serde(with = "time::serde::rfc3339::option")]
    next_inventory_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_push: Option<crate::push::PushState>,
    commands: Vec<HistoryItem>,
    /// The remote actions: whether the caller may take them and whether this device can.
    actions: Vec<ActionAvailability>,
    /// The person the device belongs to in the self-service portal.
    assigned_user: Option<String>,
    /// What its user asked from the portal and an administrator has not yet decided.
    erase_requests: Vec<crate::portal::EraseRequest>,
}

#[derive(Serialize)]
struct ActionAvailability {
    action: crate::mdm::actions::Action,
    request_type: &'static str,
    /// The caller holds the action's permission.
    permitted: bool,
    /// Why the device cannot take it now (ownership's privacy rules, platform, state).
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<String>,
}

pub async fn get_device(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
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
        let device = DeviceSummary::new(record, inventory.clone(), ownership);
        let next_inventory_at = crate::inventory::schedule::due_at(store.as_ref(), &id)?;
        let commands = mdm
            .history(&id, HISTORY)?
            .into_iter()
            .map(|d| HistoryItem {
                command_uuid: d.uuid.clone(),
                request_type: d.request_type.clone(),
                delivery: DeliveryView::new(d, Answer::Summary),
            })
            .collect();
        let actions = mdm
            .action_availability(&id)?
            .into_iter()
            .map(|(action, unavailable)| ActionAvailability {
                action,
                request_type: action.request_type(),
                permitted: principal
                    .permissions
                    .contains(crate::iam::permissions::Permission::for_action(action)),
                unavailable,
            })
            .collect();
        let assigned_user = crate::portal::device_user(store.as_ref(), &id)?;
        let erase_requests = crate::portal::erase_requests_for(store.as_ref(), &id)?;
        Ok(Some(DeviceDetail {
            actions,
            assigned_user,
            erase_requests,
            device,
            pending_commands: pending,
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
