//! Signing in and out of the console: first set-up with the bootstrap secret, password + TOTP
//! sign-in, re-authentication for destructive actions, TOTP enrolment, password change, and
//! one's own sessions.
//!
//! The session travels only in a `__Host-` cookie (Secure, HttpOnly, SameSite=Strict); the CSRF
//! token is returned in the body, for the console to send back in `X-CSRF-Token`.

use std::sync::Arc;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::AppState;
use super::api::{audit, authenticate, source, with_source};
use crate::audit::{Actor, AuditEvent, Outcome};
use crate::error::ApiError;
use crate::iam::directory::DirectoryError;
use crate::iam::permissions::PermissionSet;
use crate::iam::service::{ClientContext, FailureReason, IamError, SignedIn, typed_name};
use crate::iam::sessions::{self, NewSession, PendingStep, SessionRecord};
use crate::iam::{Principal, accounts};

/// Maps the identity layer's errors to HTTP.
pub(super) fn iam_err(e: IamError, now: OffsetDateTime) -> ApiError {
    match e {
        IamError::InvalidCredentials { .. } => ApiError::InvalidCredentials,
        IamError::Throttled { until } => ApiError::TooManyRequests {
            message: format!("too many failed sign-ins; try again after {until}"),
            retry_after_secs: (until - now).whole_seconds(),
        },
        IamError::Password(p) => ApiError::BadRequest(p.to_string()),
        IamError::BadRequest(m) => ApiError::BadRequest(m),
        IamError::Conflict(m) => ApiError::Conflict(m),
        IamError::NotFound => ApiError::NotFound,
        IamError::Totp(t) => ApiError::Internal(t.to_string()),
        IamError::DirectoryUnavailable(m) => {
            ApiError::Unavailable(format!("the directory is unavailable: {m}"))
        }
        IamError::Store(s) => ApiError::Store(s),
    }
}

/// The audit record of a failed attempt, with why and whether it locked anything.
fn failure_event(actor: Actor, action: &str, e: &IamError) -> Option<AuditEvent> {
    let reason = match e {
        IamError::InvalidCredentials { reason, locked_until } => match locked_until {
            Some(until) => format!("{}; locked until {until}", reason.text()),
            None => reason.text().to_owned(),
        },
        IamError::Throttled { until } => format!("refused: locked until {until}"),
        IamError::DirectoryUnavailable(m) => {
            return Some(
                AuditEvent::new(actor, action, Outcome::Failure)
                    .reason(format!("directory unavailable: {m}")),
            );
        }
        _ => return None,
    };
    Some(AuditEvent::new(actor, action, Outcome::Denied).reason(reason))
}

fn context(req: &HttpRequest) -> ClientContext {
    ClientContext {
        source: source(req),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

fn session_cookie(token: &str) -> Cookie<'static> {
    // No Max-Age: the cookie ends with the browser; the server enforces idle and absolute
    // timeouts itself.
    Cookie::build(sessions::COOKIE, token.to_owned())
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .finish()
}

fn removal_cookie() -> Cookie<'static> {
    let mut c = session_cookie("");
    c.make_removal();
    c
}

/// What a client learns about its session.
#[derive(Serialize)]
struct SessionInfo {
    username: String,
    display_name: String,
    role: String,
    permissions: PermissionSet,
    session_id: String,
    csrf_token: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    /// Until when destructive actions need no new sign-in.
    #[serde(with = "time::serde::rfc3339")]
    fresh_until: OffsetDateTime,
    /// Steps to finish before the session grants anything.
    pending: Vec<PendingStep>,
    mfa_enrolled: bool,
    recovery_codes_left: usize,
}

fn session_info(
    state: &AppState,
    account: &accounts::Account,
    session: &SessionRecord,
    permissions: PermissionSet,
) -> SessionInfo {
    let policy = &state.iam.settings().sessions;
    SessionInfo {
        username: account.username.clone(),
        display_name: account.display_name.clone(),
        role: account.role.clone(),
        permissions,
        session_id: session.id.clone(),
        csrf_token: session.csrf_token.clone(),
        expires_at: policy.expires_at(session),
        fresh_until: policy.fresh_until(session),
        pending: session.pending.clone(),
        mfa_enrolled: account.mfa_enrolled(),
        recovery_codes_left: account.recovery_codes.len(),
    }
}

/// The account a session belongs to and what it may do now.
async fn account_and_permissions(
    state: &web::Data<AppState>,
    username: String,
) -> Result<(accounts::Account, PermissionSet), ApiError> {
    let store = state.store.clone();
    web::block(move || -> Result<_, ApiError> {
        let account = accounts::get(store.as_ref(), &username)?.ok_or(ApiError::Unauthorized)?;
        let permissions = accounts::account_permissions(store.as_ref(), &account)?;
        Ok((account, permissions))
    })
    .await
    .map_err(super::blocking_err)?
}

/// Answers a successful sign-in: the new session's cookie and what it grants.
async fn signed_in_response(state: &web::Data<AppState>, signed: SignedIn) -> Result<HttpResponse, ApiError> {
    let (store, account) = (state.store.clone(), signed.account.clone());
    let permissions = web::block(move || accounts::account_permissions(store.as_ref(), &account))
        .await
        .map_err(super::blocking_err)??;
    let info = session_info(state, &signed.account, &signed.session.record, permissions);
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&signed.session.token))
        .json(info))
}

/// The caller's console session (cookie token and record); API tokens have none.
async fn current_session(
    state: &web::Data<AppState>,
    req: &HttpRequest,
) -> Result<(String, SessionRecord), ApiError> {
    let token = req
        .cookie(sessions::COOKIE)
        .map(|c| c.value().to_owned())
        .ok_or_else(|| ApiError::Forbidden("this needs a console session, not an API token".into()))?;
    let (iam, now, t) = (state.iam.clone(), state.clock.now(), token.clone());
    let found = web::block(move || iam.session(&t, now))
        .await
        .map_err(super::blocking_err)??;
    let (record, _, _) = found.ok_or(ApiError::Unauthorized)?;
    Ok((token, record))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    bootstrap_secret: String,
    username: String,
    #[serde(default)]
    display_name: String,
    password: String,
}

/// `POST /api/v1/setup`: the bootstrap secret creates the first Owner (once), who is signed
/// in and must enrol TOTP before anything else.
pub async fn setup(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<SetupRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let Some(_permit) = state.iam.verification_permit().await else {
        return Err(busy());
    };
    let (iam, now, ctx) = (state.iam.clone(), state.clock.now(), context(&req));
    let result = web::block(move || {
        iam.setup(
            &body.bootstrap_secret,
            &body.username,
            &body.display_name,
            &body.password,
            &ctx,
            now,
        )
    })
    .await
    .map_err(super::blocking_err)?;
    match result {
        Ok(signed) => {
            tracing::info!(username = %signed.account.username, "first administrator created with the bootstrap secret");
            let event = AuditEvent::new(Actor::Bootstrap, "administrator.setup", Outcome::Success)
                .target(signed.account.username.as_str())
                .reason("first Owner created; the bootstrap secret is now void");
            audit(&state, with_source(event, &req)).await;
            signed_in_response(&state, signed).await
        }
        Err(e) => {
            if let Some(event) = failure_event(Actor::Bootstrap, "administrator.setup", &e) {
                audit(&state, with_source(event, &req)).await;
            }
            Err(iam_err(e, now))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
    /// TOTP code or a recovery code; needed once the account has enrolled TOTP.
    #[serde(default)]
    code: Option<String>,
}

/// `POST /api/v1/auth/login`. Always a new session: a cookie the browser arrived with is never
/// promoted (session fixation).
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest {
        username,
        password,
        code,
    } = body.into_inner();
    let typed = typed_name(&username).0;
    let now = state.clock.now();
    let result = sign_in(&state, &req, username, password, code).await?;
    match result {
        Ok(signed) => {
            tracing::info!(username = %signed.account.username, "administrator signed in");
            let reason = if signed.used_recovery_code {
                format!(
                    "with a recovery code ({} left)",
                    signed.account.recovery_codes.len()
                )
            } else if signed.account.mfa_enrolled() {
                "with password and TOTP".to_owned()
            } else {
                "with password; second factor not yet enrolled".to_owned()
            };
            let event = AuditEvent::new(
                Actor::Administrator(signed.account.username.clone()),
                "auth.login",
                Outcome::Success,
            )
            .target(signed.account.username.as_str())
            .reason(reason);
            audit(&state, with_source(event, &req)).await;
            signed_in_response(&state, signed).await
        }
        Err(e) => {
            tracing::warn!(username = %typed, error = %e, "sign-in refused");
            if let Some(event) = failure_event(Actor::Anonymous, "auth.login", &e) {
                audit(&state, with_source(event.target(typed.as_str()), &req)).await;
            }
            Err(iam_err(e, now))
        }
    }
}

/// Checks credentials — locally, or against the directory for anyone without a local
/// account when one is configured — and starts a session. At most a few checks run at once.
async fn sign_in(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    username: String,
    password: String,
    code: Option<String>,
) -> Result<Result<SignedIn, IamError>, ApiError> {
    let Some(_permit) = state.iam.verification_permit().await else {
        return Err(busy());
    };
    let (iam, now, ctx) = (state.iam.clone(), state.clock.now(), context(req));
    let directory = match &state.directory {
        Some(d) => {
            let (iam, u) = (iam.clone(), username.clone());
            let local = web::block(move || iam.is_local(&u))
                .await
                .map_err(super::blocking_err)??;
            (!local).then(|| Arc::clone(d))
        }
        None => None,
    };
    let Some(directory) = directory else {
        return web::block(move || iam.login(&username, &password, code.as_deref(), &ctx, now))
            .await
            .map_err(super::blocking_err);
    };
    let (name, too_long) = typed_name(&username);
    let attempt = match iam.begin_attempt(&name, &ctx, now) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    if too_long {
        // No account has such a name; and its 64-character prefix must not be taken for one.
        return Ok(Err(iam.fail(&attempt, FailureReason::UnknownAccount)));
    }
    let checked = directory.authenticate(&name, &password).await;
    let i2 = iam.clone();
    let (result, role_ended) = web::block(move || {
        let ended = |reason| -> Result<(Result<SignedIn, IamError>, Option<String>), IamError> {
            // The directory no longer makes this person an administrator: whatever role their
            // account had here goes too.
            let before = i2.directory_access_ended(&name)?;
            Ok((Err(i2.fail(&attempt, reason)), before))
        };
        let outcome = match checked {
            Ok(user) => match i2.login_directory(&attempt, &name, &user, code.as_deref(), &ctx, now) {
                Err(IamError::InvalidCredentials {
                    reason: FailureReason::NotAnAdministrator,
                    ..
                }) => ended(FailureReason::NotAnAdministrator),
                other => Ok((other, None)),
            },
            Err(DirectoryError::UnknownUser) => ended(FailureReason::UnknownAccount),
            Err(DirectoryError::WrongPassword) => {
                Ok((Err(i2.fail(&attempt, FailureReason::WrongPassword)), None))
            }
            Err(e @ (DirectoryError::Unavailable(_) | DirectoryError::Config(_))) => {
                tracing::error!(error = %e, "directory sign-in failed");
                i2.attempt_undecided(&attempt);
                Ok((Err(IamError::DirectoryUnavailable(e.to_string())), None))
            }
        };
        outcome.unwrap_or_else(|e| (Err(e), None))
    })
    .await
    .map_err(super::blocking_err)?;
    if let Some(role) = role_ended {
        let event = AuditEvent::new(Actor::System, "administrator.directory.revoke", Outcome::Success)
            .target(typed_name(&username).0)
            .reason(format!("the directory no longer grants a role; {role:?} removed"));
        audit(state, with_source(event, req)).await;
    }
    if let Ok(signed) = &result {
        for change in &signed.changes {
            let event = AuditEvent::new(Actor::System, "administrator.directory.sync", Outcome::Success)
                .target(signed.account.username.as_str())
                .reason(change.clone());
            audit(state, with_source(event, req)).await;
        }
    }
    Ok(result)
}

/// Answer when every password check slot stayed busy.
pub(super) fn busy() -> ApiError {
    ApiError::TooManyRequests {
        message: "too many sign-ins at once; try again in a moment".into(),
        retry_after_secs: 2,
    }
}

/// `POST /api/v1/auth/logout`: ends this session.
pub async fn logout(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let (token, record) = current_session(&state, &req).await?;
    let iam = state.iam.clone();
    web::block(move || iam.logout(&token))
        .await
        .map_err(super::blocking_err)??;
    let event =
        AuditEvent::new(principal.actor.clone(), "auth.logout", Outcome::Success).target(record.id.as_str());
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::NoContent().cookie(removal_cookie()).finish())
}

/// `GET /api/v1/auth/session`: who am I, what may I do, and the CSRF token (for a console
/// page that was reloaded).
pub async fn current(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let (token, _) = current_session(&state, &req).await?;
    let (iam, now) = (state.iam.clone(), state.clock.now());
    let found = web::block(move || iam.session(&token, now))
        .await
        .map_err(super::blocking_err)??;
    let (record, account, permissions) = found.ok_or(ApiError::Unauthorized)?;
    if principal.username() != Some(account.username.as_str()) {
        return Err(ApiError::Unauthorized);
    }
    Ok(HttpResponse::Ok().json(session_info(&state, &account, &record, permissions)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReauthRequest {
    password: String,
    #[serde(default)]
    code: Option<String>,
}

/// `POST /api/v1/auth/reauthenticate`: password (and code) again; a new, freshly authenticated
/// session replaces this one.
pub async fn reauthenticate(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ReauthRequest>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let (token, record) = current_session(&state, &req).await?;
    let ReauthRequest { password, code } = body.into_inner();
    let (iam, now, ctx) = (state.iam.clone(), state.clock.now(), context(&req));
    let (i2, u) = (iam.clone(), record.username.clone());
    let local = web::block(move || i2.is_local(&u))
        .await
        .map_err(super::blocking_err)??;
    let result = if local || state.directory.is_none() {
        let Some(_permit) = state.iam.verification_permit().await else {
            return Err(busy());
        };
        web::block(move || iam.reauthenticate(&record, &token, &password, code.as_deref(), &ctx, now))
            .await
            .map_err(super::blocking_err)?
    } else {
        // A directory account proves its password to the directory again; the new session
        // replaces this one.
        let signed = sign_in(&state, &req, record.username.clone(), password, code).await?;
        if signed.is_ok() {
            web::block(move || iam.logout(&token))
                .await
                .map_err(super::blocking_err)??;
        }
        signed
    };
    match result {
        Ok(signed) => {
            let event = AuditEvent::new(principal.actor.clone(), "auth.reauthenticate", Outcome::Success);
            audit(&state, with_source(event, &req)).await;
            signed_in_response(&state, signed).await
        }
        Err(e) => {
            if let Some(event) = failure_event(principal.actor.clone(), "auth.reauthenticate", &e) {
                audit(&state, with_source(event, &req)).await;
            }
            Err(iam_err(e, now))
        }
    }
}

/// Replaces the session after a sign-in step was finished, so the privilege change comes with
/// a new token.
async fn rotated(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    record: SessionRecord,
    token: String,
) -> Result<NewSession, ApiError> {
    let (iam, now, ctx) = (state.iam.clone(), state.clock.now(), context(req));
    web::block(move || iam.rotate_session(&record, &token, &ctx, now))
        .await
        .map_err(super::blocking_err)?
        .map_err(|e| iam_err(e, now))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// `POST /api/v1/auth/password`: changes one's own password; other sessions end.
pub async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let (token, record) = current_session(&state, &req).await?;
    let PasswordChange {
        current_password,
        new_password,
    } = body.into_inner();
    let Some(_permit) = state.iam.verification_permit().await else {
        return Err(busy());
    };
    let (iam, now, ctx, r2) = (
        state.iam.clone(),
        state.clock.now(),
        context(&req),
        record.clone(),
    );
    let result = web::block(move || iam.change_password(&r2, &current_password, &new_password, &ctx, now))
        .await
        .map_err(super::blocking_err)?;
    if let Err(e) = result {
        let event = failure_event(principal.actor.clone(), "auth.password.change", &e).unwrap_or_else(|| {
            AuditEvent::new(principal.actor.clone(), "auth.password.change", Outcome::Denied)
                .reason(e.to_string())
        });
        audit(&state, with_source(event, &req)).await;
        return Err(iam_err(e, now));
    }
    let event = AuditEvent::new(principal.actor.clone(), "auth.password.change", Outcome::Success)
        .reason("other sessions ended");
    audit(&state, with_source(event, &req)).await;
    let session = rotated(&state, &req, record, token).await?;
    respond_with_session(&state, session).await
}

async fn respond_with_session(
    state: &web::Data<AppState>,
    session: NewSession,
) -> Result<HttpResponse, ApiError> {
    let (account, permissions) = account_and_permissions(state, session.record.username.clone()).await?;
    let info = session_info(state, &account, &session.record, permissions);
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&session.token))
        .json(info))
}

/// `POST /api/v1/auth/totp`: a new TOTP secret to scan (otpauth URI and QR code). Replacing a
/// working second factor needs a fresh sign-in.
pub async fn begin_totp(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let (_, record) = current_session(&state, &req).await?;
    let now = state.clock.now();
    let (store, username) = (state.store.clone(), record.username.clone());
    let enrolled = web::block(move || accounts::get(store.as_ref(), &username))
        .await
        .map_err(super::blocking_err)??
        .is_some_and(|a| a.mfa_enrolled());
    if enrolled && record.pending.contains(&PendingStep::MfaEnrolment) {
        return Err(ApiError::Forbidden(
            "this session was opened before the second factor was set up; sign in again".into(),
        ));
    }
    if enrolled && state.iam.settings().sessions.fresh_until(&record) <= now {
        return Err(ApiError::Reauthenticate);
    }
    let (iam, username) = (state.iam.clone(), record.username.clone());
    let enrolment = web::block(move || iam.begin_totp(&username, now))
        .await
        .map_err(super::blocking_err)?
        .map_err(|e| iam_err(e, now))?;
    let event = AuditEvent::new(principal.actor.clone(), "auth.totp.begin", Outcome::Success);
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(enrolment))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    code: String,
}

#[derive(Serialize)]
struct TotpConfirmed {
    /// Shown once; each works once in place of a TOTP code.
    recovery_codes: Vec<String>,
    #[serde(flatten)]
    session: SessionInfo,
}

/// `POST /api/v1/auth/totp/confirm`: proves the authenticator works; returns recovery codes
/// and a new session without the enrolment step.
pub async fn confirm_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<TotpConfirm>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let (token, record) = current_session(&state, &req).await?;
    let (iam, now, username) = (state.iam.clone(), state.clock.now(), record.username.clone());
    let code = body.into_inner().code;
    let codes = match web::block(move || iam.confirm_totp(&username, &code, now))
        .await
        .map_err(super::blocking_err)?
    {
        Ok(codes) => codes,
        Err(e) => {
            let event = AuditEvent::new(principal.actor.clone(), "auth.totp.enrol", Outcome::Denied)
                .reason(e.to_string());
            audit(&state, with_source(event, &req)).await;
            return Err(iam_err(e, now));
        }
    };
    let event = AuditEvent::new(principal.actor.clone(), "auth.totp.enrol", Outcome::Success)
        .reason(format!("{} recovery codes issued", codes.len()));
    audit(&state, with_source(event, &req)).await;
    let session = rotated(&state, &req, record, token).await?;
    let (account, permissions) = account_and_permissions(&state, session.record.username.clone()).await?;
    let info = session_info(&state, &account, &session.record, permissions);
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&session.token))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(TotpConfirmed {
            recovery_codes: codes,
            session: info,
        }))
}

/// `GET /api/v1/auth/sessions`: one's own sessions.
pub async fn list_sessions(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = signed_in_user(&principal)?;
    let current = principal.session_id().map(str::to_owned);
    let (store, policy) = (state.store.clone(), state.iam.settings().sessions);
    let now = state.clock.now();
    let list = web::block(move || -> Result<Vec<sessions::SessionView>, ApiError> {
        Ok(
            sessions::of_user(store.as_ref(), &username, sessions::Realm::Admin)?
                .into_iter()
                .filter(|(_, r)| policy.expires_at(r) > now)
                .map(|(_, r)| sessions::view(&policy, &r, current.as_deref()))
                .collect(),
        )
    })
    .await
    .map_err(super::blocking_err)??;
    Ok(HttpResponse::Ok().json(list))
}

/// `DELETE /api/v1/auth/sessions/{id}`: ends one of one's own sessions.
pub async fn revoke_session(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = signed_in_user(&principal)?;
    let (store, id) = (state.store.clone(), id.into_inner());
    let id2 = id.clone();
    let found = web::block(move || sessions::revoke(store.as_ref(), &username, &id2))
        .await
        .map_err(super::blocking_err)??;
    if !found {
        return Err(ApiError::NotFound);
    }
    let event =
        AuditEvent::new(principal.actor.clone(), "auth.session.revoke", Outcome::Success).target(id.as_str());
    audit(&state, with_source(event, &req)).await;
    Ok(HttpResponse::NoContent().finish())
}

fn signed_in_user(principal: &Principal) -> Result<String, ApiError> {
    match principal.session_id() {
        Some(_) => principal
            .username()
            .map(str::to_owned)
            .ok_or(ApiError::Unauthorized),
        None => Err(ApiError::Forbidden(
            "this needs a console session, not an API token".into(),
        )),
    }
}
