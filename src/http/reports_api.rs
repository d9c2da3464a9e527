//! What the console's dashboard and command forms read, on the public API like everything
//! else: the appliance's certificate lifetimes (`/status`), fleet charts drawn here as SVG
//! (the appliance is offline: no chart library or CDN in the browser), and Apple's command
//! schema as data (`/commands/catalog`) to build forms from.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::authenticate;
use super::{AppState, blocking_err};
use crate::error::ApiError;
use crate::iam::permissions::Permission;
use crate::mdm::schema::{self, KeySpec, KeyType, OsSupport};

/// A certificate the appliance depends on, and how long it has.
#[derive(Serialize)]
struct CertificateLife {
    subject: String,
    #[serde(with = "time::serde::rfc3339")]
    not_after: time::OffsetDateTime,
    days_left: i64,
}

#[derive(Serialize)]
struct ApplianceStatus {
    version: &'static str,
    push: crate::push::PushStatus,
    ca: Option<CertificateLife>,
    tls: Option<CertificateLife>,
}

/// `GET /api/v1/status`: lifetimes of the push certificate, the CA and the server's TLS
/// certificate, for the banners every signed-in administrator should see.
pub async fn status(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let now = state.clock.now();
    let life = |subject: String, not_after: time::OffsetDateTime| CertificateLife {
        subject,
        not_after,
        days_left: (not_after - now).whole_days(),
    };
    let ca = state.pki.ca_info().ok().map(|c| life(c.subject, c.not_after));
    let tls = state
        .tls
        .snapshot()
        .map(|c| life(c.info.subject.clone(), c.info.not_after));
    Ok(HttpResponse::Ok().json(ApplianceStatus {
        version: env!("CARGO_PKG_VERSION"),
        push: state.push.status(now),
        ca,
        tls,
    }))
}

/// The settings an administrator reads in the console: what `citadel.toml` (and the
/// environment) set, without secrets — a secret shows only whether it is set, and a proxy
/// URL loses its user name and password.
#[derive(Debug, Clone, Serialize)]
pub struct SettingsView {
    scep: Value,
    mdm: Value,
    apns: Value,
    webhook: Value,
    sessions: Value,
    directory: Value,
    audit_forwarding: Value,
    portal: Value,
}

/// `scheme://user:pass@host…` → `scheme://host…` (the user part ends at the authority's last
/// `@`, as HTTP clients read it).
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparsable>".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{tail}")
}

/// Only `scheme://host[:port]`: a webhook's path or query often carries its token.
fn origin_only(url: &str) -> String {
    let shown = without_credentials(url);
    match shown.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            format!("{scheme}://{}", &rest[..end])
        }
        None => shown,
    }
}

impl SettingsView {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            scep: json!({
                "static_challenge_set": c.scep.static_challenge.is_some() || c.scep.static_challenge_file.is_some(),
                "challenge_ttl_secs": c.scep.challenge_ttl_secs,
                "certificate_validity_days": c.scep.certificate_validity_days,
                "allow_legacy_des": c.scep.allow_legacy_des,
                "max_message_bytes": c.scep.max_message_bytes,
            }),
            mdm: json!({
                "organization": c.mdm.organization,
                "enrollment_link_ttl_secs": c.mdm.enrollment_link_ttl_secs,
                "inventory_interval_hours": c.mdm.inventory_interval_hours,
                "inventory_on_enrollment": c.mdm.inventory_on_enrollment,
                "retention_days": c.mdm.retention_days,
            }),
            apns: json!({
                "base_url": c.apns.base_url,
                "proxy": c.apns.proxy.as_deref().map(without_credentials),
                "expiration_secs": c.apns.expiration_secs,
                "concurrency": c.apns.concurrency,
            }),
            webhook: json!({
                "url": c.webhook.url.as_deref().map(origin_only),
                "secret_set": c.webhook.secret.is_some() || c.webhook.secret_file.is_some(),
            }),
            sessions: json!({
                "require_mfa": c.admin.require_mfa,
                "password_min_chars": c.admin.password_min_chars,
                "session_idle_minutes": c.admin.session_idle_minutes,
                "session_absolute_hours": c.admin.session_absolute_hours,
                "reauthenticate_minutes": c.admin.reauthenticate_minutes,
                "lockout_failures": c.admin.lockout_failures,
                "lockout_minutes": c.admin.lockout_minutes,
            }),
            directory: json!({ "configured": c.admin.directory.is_some() }),
            audit_forwarding: json!({
                "checkpoint_minutes": c.audit.checkpoint_minutes,
                "syslog": c.audit.syslog.as_ref().map(|s| json!({ "address": s.address, "tls": s.tls })),
            }),
            portal: json!({
                "enabled": c.portal.enabled,
                "allow_lock": c.portal.allow_lock,
                "allow_locate": c.portal.allow_locate,
                "allow_erase_request": c.portal.allow_erase_request,
            }),
        }
    }
}

/// `GET /api/v1/settings`: the effective settings, read-only (they change in `citadel.toml`).
pub async fn settings(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    Ok(HttpResponse::Ok().json(state.settings.as_ref()))
}

#[derive(Deserialize)]
pub struct ChartQuery {
    stale_days: Option<u32>,
}

/// `GET /api/v1/reports/fleet/{chart}.svg` with `chart` one of `platforms`, `os_versions`,
/// `compliance`, `ownership`, `models`: a bar chart of the fleet report's counts.
pub async fn fleet_chart(
    state: web::Data<AppState>,
    req: HttpRequest,
    chart: web::Path<String>,
    query: web::Query<ChartQuery>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let chart = chart.into_inner();
    let name = chart.strip_suffix(".svg").unwrap_or(&chart).to_owned();
    let title = match name.as_str() {
        "platforms" => "Devices by platform",
        "os_versions" => "Devices by OS version",
        "compliance" => "Devices by compliance",
        "ownership" => "Devices by ownership",
        "models" => "Devices by model",
        _ => return Err(ApiError::NotFound),
    };
    let stale_days = query.stale_days.unwrap_or(30).min(3650);
    let (mdm, now) = (state.mdm.clone(), state.clock.now());
    let report = web::block(move || mdm.index().report(now, stale_days, 30))
        .await
        .map_err(blocking_err)?;
    let counts = match name.as_str() {
        "platforms" => &report.by_platform,
        "os_versions" => &report.by_os_version,
        "compliance" => &report.by_compliance,
        "ownership" => &report.by_ownership,
        _ => &report.by_model,
    };
    let bars: Vec<(String, usize)> = counts.iter().map(|(k, n)| (k.clone(), *n)).collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "image/svg+xml"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // An SVG opened on its own is a document: it may run nothing and load nothing.
        .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'"))
        .body(bar_chart(title, bars)))
}

/// Bars drawn at most; the rest are summed into one "other" bar.
const MAX_BARS: usize = 10;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart, largest first, labelled with the counts (readable without colour;
/// the title and a description make it an accessible image).
pub fn bar_chart(title: &str, mut bars: Vec<(String, usize)>) -> String {
    bars.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if bars.len() > MAX_BARS {
        let other: usize = bars.drain(MAX_BARS - 1..).map(|(_, n)| n).sum();
        bars.push(("other".into(), other));
    }
    let (width, row, label_w, value_w) = (560usize, 28usize, 170usize, 80usize);
    let height = row * bars.len().max(1) + 8;
    let max = bars.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let total: usize = bars.iter().map(|(_, n)| n).sum();
    let description = if bars.is_empty() {
        "No devices yet.".to_owned()
    } else {
        bars.iter()
            .map(|(l, n)| format!("{l}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-labelledby="t d" font-family="system-ui, sans-serif" font-size="13"><title id="t">{}</title><desc id="d">{} ({total} in all)</desc>"#,
        escape(title),
        escape(&description)
    );
    if bars.is_empty() {
        svg.push_str(r##"<text x="8" y="20" fill="#5a6675">No devices yet</text>"##);
    }
    let bar_space = width - label_w - value_w;
    for (i, (label, n)) in bars.iter().enumerate() {
        let y = i * row + 4;
        let w = (n * bar_space).div_ceil(max).max(usize::from(*n > 0));
        let shown: String = label.chars().take(24).collect();
        svg.push_str(&format!(
            r##"<text x="{}" y="{}" text-anchor="end" fill="#1b2430">{}</text><rect x="{label_w}" y="{y}" width="{w}" height="{}" rx="3" fill="#1d4ed8"/><text x="{}" y="{}" fill="#1b2430">{n}</text>"##,
            label_w - 8,
            y + 18,
            escape(&shown),
            row - 8,
            label_w + w + 6,
            y + 18,
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn support_json(s: &OsSupport) -> Value {
    if !s.is_supported() {
        return Value::Null;
    }
    json!({
        "introduced": s.introduced,
        "deprecated": s.deprecated,
        "removed": s.removed,
        "supervised": s.supervised,
        "requires_dep": s.requires_dep,
        "device_channel": s.device_channel,
        "user_channel": s.user_channel,
    })
}

fn key_json(k: &KeySpec) -> Value {
    let mut v = json!({
        "name": k.name,
        "required": k.required,
        "allowed": k.allowed,
        "default": k.default,
    });
    let (ty, extra) = match k.ty {
        KeyType::String => ("string", None),
        KeyType::Integer => ("integer", None),
        KeyType::Real => ("real", None),
        KeyType::Boolean => ("boolean", None),
        KeyType::Date => ("date", None),
        KeyType::Data => ("data", None),
        KeyType::Array(item) => ("array", Some(("item", key_json(item)))),
        KeyType::Dictionary(keys) => (
            "dictionary",
            Some(("keys", Value::Array(keys.iter().map(key_json).collect()))),
        ),
        KeyType::OneOf(shapes) => (
            "one_of",
            Some(("shapes", Value::Array(shapes.iter().map(key_json).collect()))),
        ),
        KeyType::AnyDictionary => ("any_dictionary", None),
        KeyType::Any => ("any", None),
    };
    v["type"] = Value::from(ty);
    if let Some((field, value)) = extra {
        v[field] = value;
    }
    v
}

/// `GET /api/v1/commands/catalog`: every command of Apple's schema with its keys (type,
/// required, allowed values, default), per-OS support, and the permission sending it needs.
pub async fn catalog(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let commands: Vec<Value> = schema::COMMANDS
        .iter()
        .map(|c| {
            let permission = Permission::for_command(c.request_type).unwrap_or(Permission::CommandsSend);
            json!({
                "request_type": c.request_type,
                "title": c.title,
                "permission": permission.name(),
                "platforms": {
                    "ios": support_json(&c.ios),
                    "macos": support_json(&c.macos),
                    "tvos": support_json(&c.tvos),
                    "visionos": support_json(&c.visionos),
                    "watchos": support_json(&c.watchos),
                },
                "keys": c.keys.iter().map(key_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"))
        .json(json!({ "commands": commands })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_leave_out_secrets_and_proxy_credentials() {
        assert_eq!(
            without_credentials("http://u:p@proxy.dmz:3128"),
            "http://proxy.dmz:3128"
        );
        assert_eq!(
            without_credentials("https://siem.example/hook"),
            "https://siem.example/hook"
        );
        assert_eq!(without_credentials("https://h/x@y"), "https://h/x@y");
        assert_eq!(
            without_credentials("http://alice:p@ss@proxy:3128"),
            "http://proxy:3128"
        );
        assert_eq!(
            origin_only("https://u:p@hooks.example:8443/services/T/B/XXXX?k=1"),
            "https://hooks.example:8443"
        );
        let mut c = crate::config::Config::default();
        c.apns.proxy = Some("http://alice:s3cret@proxy:3128".into());
        let shown = serde_json::to_string(&SettingsView::from_config(&c)).unwrap_or_default();
        assert!(
            !shown.contains("s3cret") && shown.contains("http://proxy:3128"),
            "{shown}"
        );
    }

    #[test]
    fn charts_escape_labels_sort_and_fold_the_tail() {
        let bars = (0..14).map(|i| (format!("v<{i}>"), i + 1)).collect();
        let svg = bar_chart("A & B", bars);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<title id=\"t\">A &amp; B</title>"));
        assert!(!svg.contains("v<"));
        assert!(svg.contains("v&lt;13&gt;"));
        // 9 largest + other (1+2+3+4+5 = 15).
        assert_eq!(svg.matches("<rect").count(), MAX_BARS);
        assert!(svg.contains(">other</text>"));
        assert!(svg.contains(">15</text>"));
        let first = svg.find("v&lt;13&gt;").unwrap_or(usize::MAX);
        let later = svg.find("v&lt;12&gt;").unwrap_or(0);
        assert!(first < later);
        assert!(bar_chart("Empty", Vec::new()).contains("No devices yet"));
    }

    #[test]
    fn the_catalog_describes_nested_keys() {
        let lock = schema::COMMANDS
            .iter()
            .find(|c| c.request_type == "DeviceLock")
            .map(|c| c.keys.iter().map(key_json).collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(lock.iter().any(|k| k["name"] == "PIN" && k["type"] == "string"));
        let settings = schema::COMMANDS
            .iter()
            .find(|c| c.request_type == "Settings")
            .map(|c| c.keys.iter().map(key_json).collect::<Vec<_>>())
            .unwrap_or_default();
        assert_eq!(settings.first().map(|k| k["type"].clone()), Some(json!("array")));
    }
}
