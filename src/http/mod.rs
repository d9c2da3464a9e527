//! The HTTPS surface: one rustls listener serving the appliance's endpoints and the console.

pub mod api;
pub mod audit_api;
mod auth_api;
pub mod console;
pub mod iam_api;
mod inventory_api;
pub mod mdm;
mod mdm_api;
pub mod middleware;
pub mod portal_api;
mod push_api;
pub mod reports_api;
pub mod scep;
pub mod tls;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::middleware::{Compress, DefaultHeaders, from_fn};
use actix_web::{App, HttpResponse, web};
use serde::Serialize;

use crate::clock::SharedClock;
use crate::mdm::MdmService;
use crate::mdm::identity::IdentityVerifier;
use crate::pki::{Pki, TlsSource};
use crate::push::PushService;
use crate::scep::ScepService;
use crate::store::{Store, read_version};
use tls::TlsState;

/// What every handler may use.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub tls: Arc<TlsState>,
    pub scep: Arc<ScepService>,
    pub pki: Arc<Pki>,
    pub mdm: Arc<MdmService>,
    pub identities: Arc<IdentityVerifier>,
    pub enrollment: Arc<EnrollmentSettings>,
    pub push: Arc<PushService>,
    pub audit: Arc<crate::audit::AuditLog>,
    pub iam: Arc<crate::iam::service::IamService>,
    /// LDAP / Active Directory sign-in, when configured.
    pub directory: Option<Arc<crate::iam::directory::Directory>>,
    /// How audit forwarding to syslog is going, when configured.
    pub syslog: Option<Arc<std::sync::Mutex<crate::audit::syslog::SyslogStatus>>>,
    /// What portal users may do.
    pub portal: crate::config::PortalSection,
    /// What `GET /api/v1/settings` shows.
    pub settings: Arc<reports_api::SettingsView>,
}

/// A blocking-pool task that could not run or panicked.
fn blocking_err(e: actix_web::error::BlockingError) -> crate::error::ApiError {
    crate::error::ApiError::Internal(e.to_string())
}

/// What enrollment profiles and links need from the configuration.
#[derive(Debug, Clone)]
pub struct EnrollmentSettings {
    pub public_url: String,
    pub organization: String,
    pub link_ttl: time::Duration,
    pub max_body_bytes: usize,
}

impl EnrollmentSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            public_url: config.public_url(),
            organization: config.mdm.organization.clone(),
            link_ttl: time::Duration::seconds(
                i64::try_from(config.mdm.enrollment_link_ttl_secs).unwrap_or(i64::MAX),
            ),
            max_body_bytes: config.mdm.max_body_bytes,
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig, max_scep_message_bytes: usize, max_mdm_body_bytes: usize) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/ca.pem", web::get().to(ca_pem))
        .route("/ca.crt", web::get().to(ca_der));
    scep::configure(cfg, max_scep_message_bytes);
    mdm::configure(cfg, max_mdm_body_bytes);
    api::configure(cfg, max_mdm_body_bytes);
    // Last: the console ends with a catch-all page.
    console::configure(cfg);
}

/// Builds the application for one worker.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let max = state.scep.options().max_message_bytes;
    let max_mdm = state.enrollment.max_body_bytes;
    App::new()
        .app_data(state)
        .wrap(Compress::default())
        .wrap(
            DefaultHeaders::new()
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .add((header::X_FRAME_OPTIONS, "DENY"))
                .add((header::REFERRER_POLICY, "no-referrer"))
                .add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000")),
        )
        .wrap(from_fn(middleware::request_context))
        .configure(|cfg| configure(cfg, max, max_mdm))
}

/// The application behind the owner-only admin socket (`<data>/admin.sock`).
pub fn admin_app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .wrap(from_fn(middleware::request_context))
        .configure(api::configure_admin_socket)
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    store: StoreHealth,
    tls: Option<TlsHealth>,
    console_assets: bool,
    push: crate::push::PushStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_forwarding: Option<ForwardingHealth>,
    /// Conditions an operator should fix that do not make the appliance unhealthy.
    warnings: Vec<String>,
}

/// Audit forwarding as `/healthz` (unauthenticated) shows it: no addresses, no error text.
#[derive(Serialize)]
struct ForwardingHealth {
    connected: bool,
    sent_through: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    failing_since: Option<time::OffsetDateTime>,
}

#[derive(Serialize)]
struct StoreHealth {
    backend: &'static str,
    status: &'static str,
    schema_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct TlsHealth {
    source: &'static str,
    subject: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: time::OffsetDateTime,
    days_left: i64,
}

/// `text` as a QR code (SVG, drawn here: the appliance is offline).
pub(crate) fn qr_svg(text: &str) -> Result<String, crate::error::ApiError> {
    Ok(qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| crate::error::ApiError::Internal(e.to_string()))?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build())
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    // The store is synchronous; keep it off the event loop.
    let version = web::block(move || read_version(store.as_ref())).await;
    let (store_ok, schema_version, error) = match version {
        Ok(Ok(v)) => (true, v, None),
        Ok(Err(e)) => (false, None, Some(e.to_string())),
        Err(e) => (false, None, Some(e.to_string())),
    };
    let now = state.clock.now();
    let push = state.push.status(now);
    let tls = state.tls.snapshot().map(|c| TlsHealth {
        source: match c.source {
            TlsSource::Managed => "managed",
            TlsSource::Operator { .. } => "operator",
        },
        subject: c.info.subject.clone(),
        expires_at: c.info.not_after,
        days_left: c.info.days_left(now),
    });
    let forwarding = state
        .syslog
        .as_ref()
        .and_then(|s| s.lock().ok().map(|s| s.clone()));
    let mut warnings = push.warnings.clone();
    if let Some(f) = &forwarding
        && let Some(since) = f.failing_since
        && now - since > time::Duration::minutes(5)
    {
        warnings.push(format!(
            "the audit log has not reached the syslog collector since {since} (the log says why)"
        ));
    }
    let audit_forwarding = forwarding.map(|f| ForwardingHealth {
        connected: f.connected,
        sent_through: f.sent_through,
        failing_since: f.failing_since,
    });
    let body = Health {
        status: if store_ok { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        store: StoreHealth {
            backend: state.store.backend(),
            status: if store_ok { "ok" } else { "error" },
            schema_version,
            error,
        },
        tls,
        console_assets: console::assets_embedded(),
        warnings,
        push,
        audit_forwarding,
    };
    if store_ok {
        HttpResponse::Ok().json(body)
    } else {
        tracing::error!(error = ?body.store.error, "health check: store unavailable");
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics (text format 0.0.4).
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let now = state.clock.now();
    let mut out = String::new();
    state.push.metrics.render(&mut out);
    tls::HANDSHAKES.render(&mut out);
    let status = state.push.status(now);
    out.push_str(
        "# HELP citadel_push_certificate_expiry_seconds Seconds until the APNs push certificate expires.\n\
         # TYPE citadel_push_certificate_expiry_seconds gauge\n",
    );
    if let Some(not_after) = status.not_after {
        out.push_str(&format!(
            "citadel_push_certificate_expiry_seconds {}\n",
            (not_after - now).whole_seconds()
        ));
    }
    out.push_str(&format!(
        "# TYPE citadel_push_pending gauge\ncitadel_push_pending {}\n",
        state.push.pending()
    ));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}

async fn ca_pem(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"citadel-ca.pem\"",
        ))
        .body(state.ca_pem.clone())
}

/// DER for iOS/macOS, which offer to install a profile for this content type.
async fn ca_der(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-x509-ca-cert")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"citadel-ca.crt\"",
        ))
        .body(state.ca_der.clone())
}
