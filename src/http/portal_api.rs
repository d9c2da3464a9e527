//! The end-user self-service portal's API (`/api/v1/portal/…`) and the administrators' side of
//! it (portal users, who a device belongs to, erase requests).
//!
//! End users sign in with their directory password (when a directory is configured) or a local
//! portal password, get their own `__Host-citadel_portal` cookie, see their own devices only,
//! enrol a new one with a personal one-time link, and — as `[portal]` allows — lock it, locate
//! a corporate one, or ask for it to be erased. A device that is not theirs is "not found".

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::api::{audit, authenticate, source, with_source};
use super::auth_api::iam_err;
use super::mdm_api::DeviceSummary;
use super::{AppState, blocking_err};
use crate::audit::{Actor, AuditEvent, Outcome};
use crate::error::ApiError;
use crate::iam::directory::DirectoryError;
use crate::iam::service::{ClientContext, FailureReason, IamError, typed_name};
use crate::iam::{Principal, sessions};
use crate::inventory::record::Ownership;
use crate::mdm::actions::{Action, ActionParams};
use crate::portal;

fn portal_cookie(token: &str) -> Cookie<'static> {
    Cookie::build(sessions::PORTAL_COOKIE, token.to_owned())
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .finish()
}

fn user_of(principal: &Principal) -> Result<String, ApiError> {
    principal
        .portal_user()
        .map(str::to_owned)
        .ok_or(ApiError::Unauthorized)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalLogin {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct PortalSession {
    username: String,
    csrf_token: String,
}

/// `POST /api/v1/portal/login`: a local portal password, or the directory's.
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<PortalLogin>,
) -> Result<HttpResponse, ApiError> {
    if !state.portal.enabled {
        return Err(ApiError::NotFound);
    }
    let PortalLogin { username, password } = body.into_inner();
    let (name, too_long) = typed_name(&username);
    let Some(_permit) = state.iam.verification_permit().await else {
        return Err(super::auth_api::busy());
    };
    let (iam, now) = (state.iam.clone(), state.clock.now());
    let ctx = ClientContext {
        source: source(&req),
        user_agent: None,
    };
    // End users are counted apart from administrators (names and addresses alike).
    let (i2, k2, c2) = (iam.clone(), name.clone(), ctx.clone());
    let attempt = match web::block(move || i2.begin_portal_attempt(&k2, &c2, now))
        .await
        .map_err(blocking_err)?
    {
        Ok(a) => a,
        Err(e) => return refused(&state, &req, &name, e, now).await,
    };
    let local = if too_long {
        Err(iam.fail(&attempt, FailureReason::UnknownAccount))
    } else {
        let (i2, a2, n2, p2, c2) = (
            iam.clone(),
            attempt.clone(),
            name.clone(),
            password.clone(),
            ctx.clone(),
        );
        web::block(move || i2.portal_login_local(&a2, &n2, &p2, &c2, now))
            .await
            .map_err(blocking_err)?
    };
    let session = match local {
        Ok(Some(session)) => session,
        Err(e) => return refused(&state, &req, &name, e, now).await,
        Ok(None) => {
            let outcome = match &state.directory {
                Some(directory) => directory.authenticate(&name, &password).await,
                None => {
                    crate::iam::password::verify_nothing(&password);
                    Err(DirectoryError::UnknownUser)
                }
            };
            let failure = match outcome {
                Ok(_) => None,
                Err(DirectoryError::UnknownUser) => Some(iam.fail(&attempt, FailureReason::UnknownAccount)),
                Err(DirectoryError::WrongPassword) => Some(iam.fail(&attempt, FailureReason::WrongPassword)),
                Err(e) => {
                    tracing::error!(error = %e, "portal sign-in: directory unavailable");
                    iam.attempt_undecided(&attempt);
                    Some(IamError::DirectoryUnavailable(e.to_string()))
                }
            };
            if let Some(e) = failure {
                return refused(&state, &req, &name, e, now).await;
            }
            iam.attempt_succeeded(&attempt);
            let (i2, n2) = (iam.clone(), name.clone());
            web::block(move || i2.start_portal_session(&n2, &ctx, now))
                .await
                .map_err(blocking_err)??
        }
    };
    let event =
        AuditEvent::new(Actor::User(name.clone()), "portal.login", Outcome::Success).target(name.as_str());
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::Ok()
        .cookie(portal_cookie(&session.token))
        .json(PortalSession {
            username: name,
            csrf_token: session.record.csrf_token,
        }))
}

async fn refused(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    name: &str,
    e: IamError,
    now: time::OffsetDateTime,
) -> Result<HttpResponse, ApiError> {
    let (outcome, reason) = match &e {
        IamError::InvalidCredentials { reason, locked_until } => (
            Outcome::Denied,
            match locked_until {
                Some(until) => format!("{}; locked until {until}", reason.text()),
                None => reason.text().to_owned(),
            },
        ),
        IamError::Throttled { until } => (Outcome::Denied, format!("refused: locked until {until}")),
        other => (Outcome::Failure, other.to_string()),
    };
    let event = AuditEvent::new(Actor::Anonymous, "portal.login", outcome)
        .target(name)
        .reason(reason);
    audit(state, with_source(event, req)).await;
    Err(iam_err(e, now))
}

/// `POST /api/v1/portal/logout`.
pub async fn logout(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let event = AuditEvent::new(principal.actor.clone(), "portal.logout", Outcome::Success);
    audit(&state, with_source(event, &req)).await;
    if let Some(token) = req.cookie(sessions::PORTAL_COOKIE).map(|c| c.value().to_owned()) {
        let iam = state.iam.clone();
        web::block(move || iam.logout(&token))
            .await
            .map_err(blocking_err)??;
    }
    let mut removal = portal_cookie("");
    removal.make_removal();
    Ok(HttpResponse::NoContent().cookie(removal).finish())
}

/// What the portal lets a user do to one of their devices.
#[derive(Serialize)]
struct Allowed {
    lock: bool,
    /// Lost mode and locate: corporate devices only.
    locate: bool,
    request_erase: bool,
}

#[derive(Serialize)]
struct MyDevice {
    #[serde(flatten)]
    device: DeviceSummary,
    allowed: Allowed,
    /// The device is in lost mode (so the portal offers "found" rather than "lost").
    lost_mode: bool,
    /// Where it last said it was, while in lost mode (corporate devices only, like locate).
    last_location: Option<crate::inventory::LocationFix>,
}

#[derive(Serialize)]
struct Me {
    username: String,
    /// The session's CSRF token (a reloaded page has lost the one sign-in returned).
    csrf_token: String,
    devices: Vec<MyDevice>,
}

/// `GET /api/v1/portal/me`: the user and their devices, each with its compliance and what
/// they may do to it.
pub async fn me(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = user_of(&principal)?;
    let token = req
        .cookie(sessions::PORTAL_COOKIE)
        .map(|c| c.value().to_owned())
        .ok_or(ApiError::Unauthorized)?;
    let (iam, now) = (state.iam.clone(), state.clock.now());
    let csrf_token = web::block(move || iam.portal_session(&token, now))
        .await
        .map_err(blocking_err)??
        .ok_or(ApiError::Unauthorized)?
        .csrf_token;
    let (store, u, settings) = (state.store.clone(), username.clone(), state.portal.clone());
    let devices = web::block(move || -> Result<Vec<MyDevice>, ApiError> {
        let mut out = Vec::new();
        for id in portal::devices_of(store.as_ref(), &u)? {
            if let Some(device) = DeviceSummary::load(store.as_ref(), &id)? {
                let locate = settings.allow_locate && device.ownership == Ownership::Corporate;
                let lost_mode = crate::inventory::get(store.as_ref(), &id)?
                    .and_then(|inv| inv.lost_mode_enabled)
                    == Some(true);
                // Locations are kept only while in lost mode; the privacy rules decide here too.
                let last_location = if locate && lost_mode {
                    crate::inventory::locations(store.as_ref(), &id, 1)?.pop()
                } else {
                    None
                };
                out.push(MyDevice {
                    allowed: Allowed {
                        lock: settings.allow_lock,
                        locate,
                        request_erase: settings.allow_erase_request,
                    },
                    device,
                    lost_mode,
                    last_location,
                });
            }
        }
        Ok(out)
    })
    .await
    .map_err(blocking_err)??;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(Me {
            username,
            csrf_token,
            devices,
        }))
}

#[derive(Serialize)]
struct PrivacyRule {
    information: &'static str,
    corporate: &'static str,
    personal: &'static str,
}

/// What the organisation can and cannot see, per kind of device — the rules the appliance
/// enforces when data arrives (PRIVACY.md says the same at length).
const PRIVACY_RULES: &[PrivacyRule] = &[
    PrivacyRule {
        information: "Model, OS version, device name, battery, storage",
        corporate: "yes",
        personal: "yes",
    },
    PrivacyRule {
        information: "Serial number and hardware identifiers",
        corporate: "yes",
        personal: "yes (not with User Enrollment)",
    },
    PrivacyRule {
        information: "Phone number",
        corporate: "yes",
        personal: "no: never asked, and dropped if sent",
    },
    PrivacyRule {
        information: "Passcode set, encryption, firewall",
        corporate: "yes",
        personal: "yes",
    },
    PrivacyRule {
        information: "Installed apps",
        corporate: "all apps",
        personal: "only apps the organisation installed",
    },
    PrivacyRule {
        information: "Location",
        corporate: "only while the device is in lost mode, which shows on its screen",
        personal: "never",
    },
    PrivacyRule {
        information: "Messages, photos, e-mail, files, browsing history",
        corporate: "never (the MDM protocol offers no way to see them)",
        personal: "never",
    },
];

/// `GET /api/v1/portal/privacy`.
pub async fn privacy(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    Ok(HttpResponse::Ok().json(PRIVACY_RULES))
}

/// Unused enrollment links one portal user may hold at once.
const MAX_OPEN_LINKS: usize = 5;

#[derive(Serialize)]
struct PersonalLink {
    url: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: time::OffsetDateTime,
    /// The URL as a QR code (SVG), to open on the device.
    qr_svg: String,
}

/// `POST /api/v1/portal/enrollment-link`: a one-time link for the user's own new device; the
/// device it enrols is theirs, and personal.
pub async fn enrollment_link(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = user_of(&principal)?;
    let (store, now, ttl) = (state.store.clone(), state.clock.now(), state.enrollment.link_ttl);
    let u = username.clone();
    let (token, link) = web::block(move || -> Result<_, ApiError> {
        // Each link can mint a SCEP challenge: a person holds a few at a time, not thousands.
        if crate::mdm::profile::open_links_of(store.as_ref(), &u, now)? >= MAX_OPEN_LINKS {
            return Err(ApiError::Conflict(format!(
                "you already have {MAX_OPEN_LINKS} unused enrollment links; use one or wait for them to expire"
            )));
        }
        Ok(crate::mdm::profile::create_link(
            store.as_ref(),
            ttl,
            &format!("portal:{u}"),
            Some(&u),
            now,
        )?)
    })
    .await
    .map_err(blocking_err)??;
    let url = format!("{}/enroll/{token}", state.enrollment.public_url);
    let qr_svg = super::qr_svg(&url)?;
    let event = AuditEvent::new(
        principal.actor.clone(),
        "enrollment_link.create",
        Outcome::Success,
    )
    .target(link.id.as_str())
    .reason("personal device, from the portal");
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(PersonalLink {
            url,
            expires_at: link.expires_at,
            qr_svg,
        }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalAction {
    /// Lock / lost mode: shown on the screen.
    message: Option<String>,
    /// Lock / lost mode: a number to call.
    phone_number: Option<String>,
    /// Lock a Mac: the six-digit PIN that unlocks it afterwards.
    pin: Option<String>,
    /// Erase request: what happened.
    reason: Option<String>,
}

/// `POST /api/v1/portal/devices/{id}/{lock|lost_mode|found|locate|request_erase}` on one's
/// own device (`found` ends lost mode).
pub async fn act(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<PortalAction>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = user_of(&principal)?;
    let (id, what) = path.into_inner();
    if !matches!(
        what.as_str(),
        "lock" | "lost_mode" | "found" | "locate" | "request_erase"
    ) || id.len() > 128
    {
        return Err(ApiError::NotFound);
    }
    let body = body.into_inner();
    let (store, u, i2) = (state.store.clone(), username.clone(), id.clone());
    let mine = web::block(move || portal::owns(store.as_ref(), &u, &i2))
        .await
        .map_err(blocking_err)??;
    if !mine {
        // Someone else's device, or none: the same answer.
        let event = AuditEvent::new(principal.actor.clone(), format!("portal.{what}"), Outcome::Denied)
            .target(id.as_str())
            .reason("not one of the user's devices");
        audit(&state, with_source(event, &req)).await;
        return Err(ApiError::NotFound);
    }
    let settings = &state.portal;
    let action = match what.as_str() {
        "lock" if settings.allow_lock => Action::Lock,
        "lost_mode" if settings.allow_locate => Action::EnableLostMode,
        "found" if settings.allow_locate => Action::DisableLostMode,
        "locate" if settings.allow_locate => Action::Locate,
        "request_erase" if settings.allow_erase_request => {
            let reason: String = body.reason.unwrap_or_default().chars().take(500).collect();
            if reason.trim().is_empty() {
                return Err(ApiError::BadRequest(
                    "say what happened to the device (reason)".into(),
                ));
            }
            let request = portal::EraseRequest {
                enrollment_id: id.clone(),
                username: username.clone(),
                reason: reason.clone(),
                requested_at: state.clock.now(),
            };
            let store = state.store.clone();
            web::block(move || portal::request_erase(store.as_ref(), &request))
                .await
                .map_err(blocking_err)??;
            tracing::warn!(enrollment = %id, user = %username, "erase requested from the portal");
            let event = AuditEvent::new(principal.actor.clone(), "portal.request_erase", Outcome::Success)
                .target(id.as_str())
                .reason(reason);
            audit(&state, with_source(event, &req)).await;
            return Ok(HttpResponse::Accepted().json(serde_json::json!({ "requested": true })));
        }
        _ => {
            let e = ApiError::Forbidden("your organisation does not allow this from the portal".into());
            let event = AuditEvent::new(principal.actor.clone(), format!("portal.{what}"), Outcome::Denied)
                .target(id.as_str())
                .reason(e.to_string());
            audit(&state, with_source(event, &req)).await;
            return Err(e);
        }
    };
    let params = ActionParams {
        reason: format!("requested by {username} in the self-service portal"),
        message: body.message,
        phone_number: body.phone_number,
        pin: body.pin,
        ..ActionParams::default()
    };
    let (mdm, now, label, i2) = (
        state.mdm.clone(),
        state.clock.now(),
        principal.label.clone(),
        id.clone(),
    );
    let performed = web::block(move || mdm.perform_action(&i2, action, &params, &label, None, now))
        .await
        .map_err(blocking_err)?
        .map_err(ApiError::from);
    let event = AuditEvent::new(
        principal.actor.clone(),
        format!("device.action.{}", action.name()),
        Outcome::Success,
    )
    .target(id.as_str());
    match performed {
        Ok(taken) => {
            audit(
                &state,
                with_source(event.reason("from the self-service portal"), &req),
            )
            .await;
            Ok(HttpResponse::Accepted().json(taken))
        }
        Err(e) => {
            let mut event = event.reason(e.to_string());
            event.outcome = e.audit_outcome();
            audit(&state, with_source(event, &req)).await;
            Err(e)
        }
    }
}

// ---------------------------------------------------------------- administrators' side

pub async fn list_users(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let store = state.store.clone();
    let list: Vec<portal::PortalUserView> = web::block(move || portal::list_users(store.as_ref()))
        .await
        .map_err(blocking_err)??
        .iter()
        .map(portal::PortalUser::view)
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPortalUser {
    username: String,
    #[serde(default)]
    display_name: String,
    password: String,
}

pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<NewPortalUser>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let b = body.into_inner();
    let Some(_permit) = state.iam.verification_permit().await else {
        return Err(super::auth_api::busy());
    };
    let (iam, now) = (state.iam.clone(), state.clock.now());
    let target = b.username.clone();
    let result = web::block(move || iam.create_portal_user(&b.username, &b.display_name, &b.password, now))
        .await
        .map_err(blocking_err)?
        .map_err(|e| iam_err(e, now));
    let event = match &result {
        Ok(u) => AuditEvent::new(principal.actor.clone(), "portal_user.create", Outcome::Success)
            .target(u.username.as_str()),
        Err(e) => AuditEvent::new(principal.actor.clone(), "portal_user.create", e.audit_outcome())
            .target(target.as_str())
            .reason(e.to_string()),
    };
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::Created().json(result?.view()))
}

pub async fn delete_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    username: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = crate::iam::accounts::normalise_username(&username.into_inner());
    let (store, u) = (state.store.clone(), username.clone());
    let removed = web::block(move || -> Result<bool, ApiError> {
        let removed = portal::delete_user(store.as_ref(), &u)?;
        // Their devices belong to nobody now: a later user of the same name inherits nothing.
        for id in portal::devices_of(store.as_ref(), &u)? {
            portal::set_device_user(store.as_ref(), &id, None)?;
        }
        // Their portal sessions end with them.
        sessions::revoke_all_in(store.as_ref(), &u, sessions::Realm::Portal)?;
        Ok(removed)
    })
    .await
    .map_err(blocking_err)??;
    if !removed {
        return Err(ApiError::NotFound);
    }
    let event = AuditEvent::new(principal.actor.clone(), "portal_user.delete", Outcome::Success)
        .target(username.as_str());
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceUser {
    /// The person the device belongs to; `null` for nobody.
    username: Option<String>,
}

/// `PUT /api/v1/devices/{id}/user`: who a device belongs to (what the portal shows them).
pub async fn assign_device(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<DeviceUser>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let id = id.into_inner();
    let username = body
        .into_inner()
        .username
        .map(|u| crate::iam::accounts::normalise_username(&u));
    if let Some(u) = &username
        && !crate::iam::accounts::valid_username(u)
    {
        return Err(ApiError::BadRequest("not a valid user name".into()));
    }
    // The portal lets a corporate device's user put it in lost mode and see where it is:
    // handing such a device to someone (oneself included) is a way to locate it.
    let may_locate = principal
        .permissions
        .contains(crate::iam::permissions::Permission::DevicesLocate);
    let portal_locates = state.portal.allow_locate;
    let (store, i2, u2) = (state.store.clone(), id.clone(), username.clone());
    let assigned = web::block(move || -> Result<(), ApiError> {
        let Some(record) = crate::mdm::enrollment::get(store.as_ref(), &i2)? else {
            return Err(ApiError::NotFound);
        };
        let lost = crate::inventory::get(store.as_ref(), &i2)?.and_then(|inv| inv.lost_mode_enabled) == Some(true);
        let corporate = crate::inventory::ownership(store.as_ref(), &record)? == Ownership::Corporate;
        if u2.is_some() && !may_locate && (lost || (portal_locates && corporate)) {
            return Err(ApiError::Forbidden(
                "its user could see where this device is (lost mode, or locating it from the portal): assigning it needs devices.locate".into(),
            ));
        }
        Ok(portal::set_device_user(store.as_ref(), &i2, u2.as_deref())?)
    })
    .await
    .map_err(blocking_err)?;
    if let Err(e) = assigned {
        let event = AuditEvent::new(principal.actor.clone(), "device.assign", e.audit_outcome())
            .target(id.as_str())
            .reason(e.to_string());
        audit(&state, with_source(event, &req)).await;
        return Err(e);
    }
    let event = AuditEvent::new(principal.actor.clone(), "device.assign", Outcome::Success)
        .target(id.as_str())
        .reason(match &username {
            Some(u) => format!("belongs to {u}"),
            None => "belongs to nobody".to_owned(),
        });
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "enrollment_id": id, "username": username })))
}

/// `GET /api/v1/erase-requests`: what users asked to have erased, oldest first.
pub async fn erase_requests(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let store = state.store.clone();
    let list = web::block(move || portal::erase_requests(store.as_ref()))
        .await
        .map_err(blocking_err)??;
    Ok(HttpResponse::Ok().json(list))
}

/// `DELETE /api/v1/erase-requests/{id}`: an administrator dismisses the requests for a device
/// (erasing it clears them too).
pub async fn dismiss_erase_requests(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let id = id.into_inner();
    let (store, i2) = (state.store.clone(), id.clone());
    let removed = web::block(move || portal::clear_erase_requests(store.as_ref(), &i2))
        .await
        .map_err(blocking_err)??;
    if removed == 0 {
        return Err(ApiError::NotFound);
    }
    let event = AuditEvent::new(
        principal.actor.clone(),
        "portal.erase_request.dismiss",
        Outcome::Success,
    )
    .target(id.as_str())
    .reason(format!("{removed} request(s)"));
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::NoContent().finish())
}
