//! The JSON admin API (`/api/v1`) and the same operations on the owner-only admin socket that
//! the CLI uses while the server runs.
//!
//! Every API route declares what it needs ([`Required`]) where it is registered; a guard on
//! each route authenticates the caller (API token or console session, with its CSRF token),
//! checks that requirement and audits refusals before any handler or body parsing runs. The
//! same declarations are served at `GET /api/v1/routes`, which the permission-matrix test walks.

use std::rc::Rc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::{Next, from_fn};
use actix_web::{FromRequest, Handler, HttpMessage, HttpRequest, HttpResponse, Resource, Responder, web};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{
    AppState, audit_api, auth_api, iam_api, inventory_api, mdm_api, portal_api, push_api, reports_api,
};
use crate::audit::{Actor, AuditEvent, Outcome};
use crate::error::ApiError;
use crate::iam::permissions::Permission;
use crate::iam::{AccessDenied, Principal, Via, api_tokens, sessions};
use crate::mdm::actions::Action;
use crate::scep::registry::RevokeOutcome;

/// Longest challenge lifetime an administrator may ask for.
const MAX_CHALLENGE_TTL_SECS: u64 = 30 * 24 * 3600;
/// The header a console session sends its CSRF token in on every state-changing request.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// Anyone (sign-in, first set-up).
    Public,
    /// Any signed-in caller, even one still finishing sign-in (MFA enrolment, new password).
    SignedIn,
    Permission(Permission),
    /// The permission of the remote action named by the `{action}` path segment.
    DeviceAction,
    /// An end user signed in to the self-service portal (its own cookie; never an
    /// administrator's session or token).
    Portal,
}

impl Serialize for Required {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Required::Public => s.serialize_str("public"),
            Required::SignedIn => s.serialize_str("signed_in"),
            Required::Permission(p) => s.serialize_str(p.name()),
            Required::DeviceAction => s.serialize_str("device_action"),
            Required::Portal => s.serialize_str("portal"),
        }
    }
}

/// One registered API route, as `GET /api/v1/routes` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteInfo {
    pub method: String,
    pub path: String,
    pub required: Required,
}

/// The routes of one path, each with its requirement; registered through [`ApiRoutes`].
struct ApiResource {
    path: &'static str,
    resource: Resource,
    requirements: Vec<(Method, Required)>,
}

impl ApiResource {
    fn new(path: &'static str) -> Self {
        Self {
            path,
            resource: web::resource(path),
            requirements: Vec::new(),
        }
    }

    fn on<F, Args>(mut self, method: Method, required: Required, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::method(method.clone()).to(handler));
        self.requirements.push((method, required));
        self
    }

    fn get<F, Args>(self, required: Required, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::GET, required, handler)
    }

    fn post<F, Args>(self, required: Required, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::POST, required, handler)
    }

    fn put<F, Args>(self, required: Required, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::PUT, required, handler)
    }

    fn patch<F, Args>(self, required: Required, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::PATCH, required, handler)
    }

    fn delete<F, Args>(self, required: Required, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.on(Method::DELETE, required, handler)
    }
}

/// Collects resources and their declared requirements.
struct ApiRoutes {
    prefix: &'static str,
    table: Vec<RouteInfo>,
}

impl ApiRoutes {
    fn add(&mut self, cfg: &mut web::ServiceConfig, r: ApiResource) {
        for (method, required) in &r.requirements {
            self.table.push(RouteInfo {
                method: method.to_string(),
                path: format!("{}{}", self.prefix, r.path),
                required: *required,
            });
        }
        let requirements = Rc::new(r.requirements);
        let guarded = r
            .resource
            .wrap(from_fn(move |req: ServiceRequest, next: Next<BoxBody>| {
                let requirements = requirements.clone();
                async move { guard(req, next, &requirements).await }
            }));
        cfg.service(guarded);
    }
}

/// Authenticates and authorises a request before its handler (and its body) is touched.
async fn guard(
    req: ServiceRequest,
    next: Next<BoxBody>,
    requirements: &[(Method, Required)],
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let required = requirements
        .iter()
        .find(|(m, _)| m == req.method())
        .map(|(_, r)| *r);
    let Some(required) = required else {
        // No route for this method: let the resource answer 405.
        return next.call(req).await;
    };
    if required == Required::Public {
        return next.call(req).await;
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(ApiError::Internal("application state missing".into()).into());
    };
    if required == Required::Portal {
        let principal = identify_portal(&state, req.request()).await?;
        req.extensions_mut().insert(principal);
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let principal = identify(&state, req.request()).await?;
    let needed = match required {
        Required::Public | Required::SignedIn | Required::Portal => None,
        Required::Permission(p) => Some(p),
        Required::DeviceAction => Some(
            req.match_info()
                .get("action")
                .and_then(Action::parse)
                .map(Permission::for_action)
                // An unknown action is answered by the handler (400) to anyone who can read.
                .unwrap_or(Permission::DevicesRead),
        ),
    };
    if let Some(permission) = needed
        && let Err(denied) = principal.require(permission, state.clock.now())
    {
        refuse(&state, &principal, req.request(), &denied).await;
        return Err(access_error(denied).into());
    }
    req.extensions_mut().insert(principal);
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

/// The error a refusal is answered with.
pub(super) fn access_error(denied: AccessDenied) -> ApiError {
    match denied {
        AccessDenied::Reauthenticate => ApiError::Reauthenticate,
        other => ApiError::Forbidden(other.to_string()),
    }
}

/// Records a refused request in the audit log.
pub(super) async fn refuse(
    state: &web::Data<AppState>,
    principal: &Principal,
    req: &HttpRequest,
    denied: &AccessDenied,
) {
    tracing::warn!(principal = %principal, method = %req.method(), path = %req.path(), reason = %denied, "request refused");
    let event = AuditEvent::new(principal.actor.clone(), "access.denied", Outcome::Denied)
        .target(format!("{} {}", req.method(), req.path()))
        .reason(denied.to_string());
    audit(state, with_source(event, req)).await;
}

/// The CSRF check of a cookie session: anything but GET/HEAD carries the session's token.
fn csrf_ok(req: &HttpRequest, expected: &str) -> bool {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return true;
    }
    let given = req
        .headers()
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    bool::from(given.ct_eq(expected.as_bytes()))
}

/// An end user of the portal: the portal cookie (and CSRF header); nothing else.
async fn identify_portal(state: &web::Data<AppState>, req: &HttpRequest) -> Result<Principal, ApiError> {
    if !state.portal.enabled {
        return Err(ApiError::NotFound);
    }
    let token = req
        .cookie(sessions::PORTAL_COOKIE)
        .map(|c| c.value().to_owned())
        .ok_or(ApiError::Unauthorized)?;
    let (iam, now) = (state.iam.clone(), state.clock.now());
    let session = web::block(move || iam.portal_session(&token, now))
        .await
        .map_err(super::blocking_err)??
        .ok_or(ApiError::Unauthorized)?;
    let principal = Principal {
        actor: Actor::User(session.username.clone()),
        label: format!("user:{}", session.username),
        permissions: crate::iam::permissions::PermissionSet::none(),
        via: Via::Portal {
            id: session.id,
            username: session.username,
        },
    };
    if !csrf_ok(req, &session.csrf_token) {
        refuse(state, &principal, req, &AccessDenied::Csrf).await;
        return Err(ApiError::Forbidden(
            "missing or wrong CSRF token (send the session's token in X-CSRF-Token)".into(),
        ));
    }
    Ok(principal)
}

/// Who is calling: an API token (`Authorization: Bearer`) or a console session (cookie, plus
/// the CSRF header on anything but GET/HEAD).
async fn identify(state: &web::Data<AppState>, req: &HttpRequest) -> Result<Principal, ApiError> {
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let cookie = req.cookie(sessions::COOKIE).map(|c| c.value().to_owned());
    if bearer.is_some() && cookie.is_some() {
        // One caller, one credential: a token must not lend its lack of CSRF checking to a
        // cookie's session.
        return Err(ApiError::BadRequest(
            "send either a bearer token or a session cookie, not both".into(),
        ));
    }
    let now = state.clock.now();
    let (store, iam) = (state.store.clone(), state.iam.clone());
    let fresh = iam.settings().sessions;
    let found = web::block(move || -> Result<Option<(Principal, Option<String>)>, ApiError> {
        if let Some(token) = bearer {
            let Some(record) = api_tokens::verify(store.as_ref(), &token, now)? else {
                return Ok(None);
            };
            let permissions = api_tokens::effective_permissions(store.as_ref(), &record)?;
            return Ok(Some((
                Principal {
                    label: format!("api-token:{} ({})", record.id, record.name),
                    actor: Actor::ApiToken(record.id.clone()),
                    permissions,
                    via: Via::ApiToken {
                        id: record.id,
                        created_by: record.created_by,
                    },
                },
                None,
            )));
        }
        let Some(token) = cookie else { return Ok(None) };
        let Some((session, account, permissions)) = iam.session(&token, now)? else {
            return Ok(None);
        };
        Ok(Some((
            Principal {
                label: format!("admin:{}", account.username),
                actor: Actor::Administrator(account.username.clone()),
                permissions,
                via: Via::Session {
                    fresh_until: fresh.fresh_until(&session),
                    id: session.id,
                    username: account.username,
                    pending: session.pending,
                },
            },
            Some(session.csrf_token),
        )))
    })
    .await
    .map_err(super::blocking_err)??;
    let (principal, csrf) = found.ok_or(ApiError::Unauthorized)?;
    if let Some(expected) = csrf
        && !csrf_ok(req, &expected)
    {
        refuse(state, &principal, req, &AccessDenied::Csrf).await;
        return Err(ApiError::Forbidden(
            "missing or wrong CSRF token (send the session's token in X-CSRF-Token)".into(),
        ));
    }
    Ok(principal)
}

pub fn configure(cfg: &mut web::ServiceConfig, max_command_bytes: usize) {
    use Permission as P;
    use Required::{DeviceAction, Portal, Public, SignedIn};
    let perm = Required::Permission;
    let mut routes = ApiRoutes {
        prefix: "/api/v1",
        table: Vec::new(),
    };
    let table = std::cell::RefCell::new(Vec::new());
    cfg.service(
        web::scope("/api/v1")
            .app_data(
                web::JsonConfig::default()
                    .limit(16 * 1024)
                    .error_handler(json_error),
            )
            .app_data(web::PayloadConfig::new(max_command_bytes))
            .configure(|cfg| {
                let r = &mut routes;
                // Signing in.
                r.add(cfg, ApiResource::new("/setup").post(Public, auth_api::setup));
                r.add(cfg, ApiResource::new("/auth/login").post(Public, auth_api::login));
                r.add(
                    cfg,
                    ApiResource::new("/auth/logout").post(SignedIn, auth_api::logout),
                );
                r.add(
                    cfg,
                    ApiResource::new("/auth/session").get(SignedIn, auth_api::current),
                );
                r.add(
                    cfg,
                    ApiResource::new("/auth/reauthenticate").post(SignedIn, auth_api::reauthenticate),
                );
                r.add(
                    cfg,
                    ApiResource::new("/auth/password").post(SignedIn, auth_api::change_password),
                );
                r.add(
                    cfg,
                    ApiResource::new("/auth/totp").post(SignedIn, auth_api::begin_totp),
                );
                r.add(
                    cfg,
                    ApiResource::new("/auth/totp/confirm").post(SignedIn, auth_api::confirm_totp),
                );
                r.add(
                    cfg,
                    ApiResource::new("/auth/sessions").get(SignedIn, auth_api::list_sessions),
                );
                r.add(
                    cfg,
                    ApiResource::new("/auth/sessions/{id}").delete(SignedIn, auth_api::revoke_session),
                );
                // The self-service portal (end users).
                r.add(
                    cfg,
                    ApiResource::new("/portal/login").post(Public, portal_api::login),
                );
                r.add(
                    cfg,
                    ApiResource::new("/portal/logout").post(Portal, portal_api::logout),
                );
                r.add(cfg, ApiResource::new("/portal/me").get(Portal, portal_api::me));
                r.add(
                    cfg,
                    ApiResource::new("/portal/privacy").get(Portal, portal_api::privacy),
                );
                r.add(
                    cfg,
                    ApiResource::new("/portal/enrollment-link").post(Portal, portal_api::enrollment_link),
                );
                r.add(
                    cfg,
                    ApiResource::new("/portal/devices/{id}/{action}").post(Portal, portal_api::act),
                );
                r.add(
                    cfg,
                    ApiResource::new("/portal-users")
                        .get(perm(P::UsersRead), portal_api::list_users)
                        .post(perm(P::UsersManage), portal_api::create_user),
                );
                r.add(
                    cfg,
                    ApiResource::new("/portal-users/{username}")
                        .delete(perm(P::UsersManage), portal_api::delete_user),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/user")
                        .put(perm(P::DevicesManage), portal_api::assign_device),
                );
                r.add(
                    cfg,
                    ApiResource::new("/erase-requests").get(perm(P::DevicesRead), portal_api::erase_requests),
                );
                r.add(
                    cfg,
                    ApiResource::new("/erase-requests/{id}")
                        .delete(perm(P::DevicesErase), portal_api::dismiss_erase_requests),
                );
                r.add(
                    cfg,
                    ApiResource::new("/permissions").get(SignedIn, iam_api::permissions),
                );
                r.add(cfg, ApiResource::new("/routes").get(SignedIn, iam_api::routes));
                // Administrators, roles, tokens.
                r.add(
                    cfg,
                    ApiResource::new("/users")
                        .get(perm(P::UsersRead), iam_api::list_users)
                        .post(perm(P::UsersManage), iam_api::create_user),
                );
                r.add(
                    cfg,
                    ApiResource::new("/users/{username}")
                        .get(perm(P::UsersRead), iam_api::get_user)
                        .patch(perm(P::UsersManage), iam_api::update_user)
                        .delete(perm(P::UsersManage), iam_api::delete_user),
                );
                r.add(
                    cfg,
                    ApiResource::new("/users/{username}/password")
                        .post(perm(P::UsersManage), iam_api::reset_password),
                );
                r.add(
                    cfg,
                    ApiResource::new("/users/{username}/mfa/reset")
                        .post(perm(P::UsersManage), iam_api::reset_mfa),
                );
                r.add(
                    cfg,
                    ApiResource::new("/roles")
                        .get(perm(P::UsersRead), iam_api::list_roles)
                        .post(perm(P::UsersManage), iam_api::create_role),
                );
                r.add(
                    cfg,
                    ApiResource::new("/roles/{name}")
                        .put(perm(P::UsersManage), iam_api::update_role)
                        .delete(perm(P::UsersManage), iam_api::delete_role),
                );
                r.add(
                    cfg,
                    ApiResource::new("/api-tokens")
                        .get(perm(P::ApiTokensManage), iam_api::list_tokens)
                        .post(perm(P::ApiTokensManage), iam_api::create_token),
                );
                r.add(
                    cfg,
                    ApiResource::new("/api-tokens/{id}/revoke")
                        .post(perm(P::ApiTokensManage), iam_api::revoke_token),
                );
                // Enrollment.
                r.add(
                    cfg,
                    ApiResource::new("/scep/challenges")
                        .post(perm(P::EnrollmentManage), api_create_challenge),
                );
                r.add(
                    cfg,
                    ApiResource::new("/enrollment/profile")
                        .get(perm(P::EnrollmentManage), mdm_api::enrollment_profile),
                );
                r.add(
                    cfg,
                    ApiResource::new("/enrollment/links")
                        .post(perm(P::EnrollmentManage), mdm_api::create_link),
                );
                // Commands and devices.
                r.add(
                    cfg,
                    ApiResource::new("/commands").post(perm(P::CommandsSend), mdm_api::create_command),
                );
                r.add(
                    cfg,
                    ApiResource::new("/commands/catalog").get(perm(P::CommandsRead), reports_api::catalog),
                );
                r.add(
                    cfg,
                    ApiResource::new("/commands/{uuid}").get(perm(P::CommandsRead), mdm_api::get_command),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices").get(perm(P::DevicesRead), mdm_api::list_devices),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/export").get(perm(P::DevicesRead), mdm_api::export_devices),
                );
                r.add(
                    cfg,
                    ApiResource::new("/reports/fleet").get(perm(P::DevicesRead), inventory_api::fleet_report),
                );
                r.add(
                    cfg,
                    ApiResource::new("/reports/fleet/{chart}")
                        .get(perm(P::DevicesRead), reports_api::fleet_chart),
                );
                r.add(
                    cfg,
                    ApiResource::new("/status").get(SignedIn, reports_api::status),
                );
                r.add(
                    cfg,
                    ApiResource::new("/settings").get(perm(P::SettingsRead), reports_api::settings),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/actions/{action}").post(DeviceAction, inventory_api::bulk),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/actions/{action}")
                        .post(DeviceAction, inventory_api::perform),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/actions")
                        .get(perm(P::DevicesRead), inventory_api::action_history),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/locations")
                        .get(perm(P::DevicesLocate), inventory_api::locations),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}").get(perm(P::DevicesRead), mdm_api::get_device),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/apps").get(perm(P::DevicesRead), inventory_api::apps),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/profiles")
                        .get(perm(P::DevicesRead), inventory_api::profiles),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/certificates")
                        .get(perm(P::DevicesRead), inventory_api::certificates),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/history")
                        .get(perm(P::DevicesRead), inventory_api::history),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/inventory")
                        .post(perm(P::DevicesManage), inventory_api::refresh),
                );
                r.add(
                    cfg,
                    ApiResource::new("/devices/{id}/ownership")
                        .put(perm(P::DevicesManage), inventory_api::set_ownership),
                );
                // Settings, push, audit.
                r.add(
                    cfg,
                    ApiResource::new("/push-cert")
                        .get(perm(P::SettingsRead), push_api::api_get)
                        .put(perm(P::SettingsManage), push_api::api_put),
                );
                r.add(
                    cfg,
                    ApiResource::new("/push-cert/csr").post(perm(P::SettingsManage), push_api::api_csr),
                );
                r.add(
                    cfg,
                    ApiResource::new("/push").post(perm(P::PushSend), push_api::api_push),
                );
                r.add(
                    cfg,
                    ApiResource::new("/audit").get(perm(P::AuditRead), audit_api::list),
                );
                r.add(
                    cfg,
                    ApiResource::new("/audit/export").get(perm(P::AuditRead), audit_api::export),
                );
                r.add(
                    cfg,
                    ApiResource::new("/audit/checkpoints").get(perm(P::AuditRead), audit_api::checkpoints),
                );
                *table.borrow_mut() = std::mem::take(&mut r.table);
            })
            .app_data(web::Data::new(RouteTable(table.take())))
            .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::NotFound) })),
    );
}

/// Every API route and what it requires.
pub struct RouteTable(pub Vec<RouteInfo>);

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
    .route("/api-tokens", web::post().to(iam_api::socket_create_token))
    .route("/api-tokens", web::get().to(iam_api::socket_list_tokens))
    .route(
        "/api-tokens/{id}/revoke",
        web::post().to(iam_api::socket_revoke_token),
    )
    .route("/admins", web::get().to(iam_api::socket_list_admins))
    .route(
        "/admins/directory-sync",
        web::post().to(iam_api::socket_sync_directory),
    )
    .route(
        "/admins/{username}/mfa/reset",
        web::post().to(iam_api::socket_reset_mfa),
    )
    .route(
        "/admins/{username}/password/reset",
        web::post().to(iam_api::socket_reset_password),
    )
    .route("/ca/certificates", web::get().to(list_certificates))
    .route("/audit/verify", web::get().to(audit_api::socket_verify))
    .route("/audit/checkpoint", web::post().to(audit_api::socket_checkpoint))
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

/// The caller of an API route, as its guard authenticated and authorised it. Handlers call
/// this first; a route registered without a guard has no caller and is refused.
pub(super) async fn authenticate(
    _state: &web::Data<AppState>,
    req: &HttpRequest,
) -> Result<Principal, ApiError> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or(ApiError::Unauthorized)
}

/// Checks a permission that depends on the request's content (e.g. the command type), and
/// audits a refusal.
pub(super) async fn require(
    state: &web::Data<AppState>,
    principal: &Principal,
    req: &HttpRequest,
    permission: Permission,
) -> Result<(), ApiError> {
    match principal.require(permission, state.clock.now()) {
        Ok(()) => Ok(()),
        Err(denied) => {
            refuse(state, principal, req, &denied).await;
            Err(access_error(denied))
        }
    }
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
