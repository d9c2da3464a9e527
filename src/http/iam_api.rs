//! Administrators, roles, permissions and API tokens over the admin API, and API tokens on the
//! admin socket.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::api::{RouteTable, audit, authenticate, require, with_source};
use super::auth_api::iam_err;
use super::{AppState, blocking_err};
use crate::audit::{Actor, AuditEvent, Outcome};
use crate::error::ApiError;
use crate::iam::Principal;
use crate::iam::accounts::{self, AccountView};
use crate::iam::api_tokens::{self, ApiTokenError, ApiTokenRecord, TokenScope};
use crate::iam::permissions::{BuiltinRole, Permission, PermissionSet};
use crate::iam::service::{AccountPatch, NewAccount};

// ---------------------------------------------------------------- permissions and routes

#[derive(Serialize)]
struct PermissionView {
    name: &'static str,
    description: &'static str,
    needs_fresh_authentication: bool,
}

/// `GET /api/v1/permissions`: every permission, for building custom roles.
pub async fn permissions(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let list: Vec<PermissionView> = Permission::ALL
        .into_iter()
        .map(|p| PermissionView {
            name: p.name(),
            description: p.description(),
            needs_fresh_authentication: p.needs_fresh_authentication(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

/// `GET /api/v1/routes`: every API route and what it requires.
pub async fn routes(
    state: web::Data<AppState>,
    req: HttpRequest,
    table: web::Data<RouteTable>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    Ok(HttpResponse::Ok().json(&table.0))
}

// ---------------------------------------------------------------- administrators

/// Runs an identity-service call on the blocking pool and maps its error.
async fn iam_call<T: Send + 'static>(
    state: &web::Data<AppState>,
    f: impl FnOnce(&crate::iam::service::IamService) -> Result<T, crate::iam::service::IamError> + Send + 'static,
) -> Result<T, ApiError> {
    let (iam, now) = (state.iam.clone(), state.clock.now());
    web::block(move || f(&iam))
        .await
        .map_err(blocking_err)?
        .map_err(|e| iam_err(e, now))
}

/// Audits an administrative change, successful (with `why`) or refused.
async fn audited<T>(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    principal: &Principal,
    action: &str,
    target: &str,
    result: Result<(T, String), ApiError>,
) -> Result<T, ApiError> {
    let event = match &result {
        Ok((_, why)) => {
            AuditEvent::new(principal.actor.clone(), action, Outcome::Success).reason(why.clone())
        }
        Err(e) => AuditEvent::new(principal.actor.clone(), action, e.audit_outcome()).reason(e.to_string()),
    };
    audit(state, with_source(event.target(target), req)).await;
    result.map(|(value, _)| value)
}

/// The permissions of `role` (built-in or custom); unknown roles are a bad request.
async fn permissions_of(state: &web::Data<AppState>, role: &str) -> Result<PermissionSet, ApiError> {
    let (store, r) = (state.store.clone(), role.to_owned());
    web::block(move || accounts::role_permissions(store.as_ref(), &r))
        .await
        .map_err(blocking_err)??
        .ok_or_else(|| ApiError::BadRequest(format!("unknown role {role:?}")))
}

/// Nobody hands out, or acts on someone holding, more than they can do themselves: holding
/// `users.manage` does not make one an Owner.
fn within_reach(principal: &Principal, wanted: &PermissionSet, what: &str) -> Result<(), ApiError> {
    let missing = wanted.missing_from(&principal.permissions);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name()).collect();
    Err(ApiError::Forbidden(format!(
        "{what} needs permissions you do not have: {}",
        names.join(", ")
    )))
}

/// `principal` may hand out `role`.
async fn grantable(state: &web::Data<AppState>, principal: &Principal, role: &str) -> Result<(), ApiError> {
    let set = permissions_of(state, role).await?;
    within_reach(principal, &set, &format!("the role {role}"))
}

/// `principal` may change the account `username` (none more powerful than themselves).
async fn reachable(
    state: &web::Data<AppState>,
    principal: &Principal,
    username: &str,
) -> Result<(), ApiError> {
    let (store, u) = (state.store.clone(), username.to_owned());
    let account = web::block(move || accounts::get(store.as_ref(), &u))
        .await
        .map_err(blocking_err)??
        .ok_or(ApiError::NotFound)?;
    if account.role.is_empty() {
        return Ok(());
    }
    match permissions_of(state, &account.role).await {
        Ok(held) => within_reach(principal, &held, &format!("changing {username}")),
        // A role deleted since grants nothing, so it is within anyone's reach.
        Err(ApiError::BadRequest(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every administrator as the API shows them.
async fn account_views(state: &web::Data<AppState>) -> Result<Vec<AccountView>, ApiError> {
    let store = state.store.clone();
    Ok(web::block(move || accounts::list(store.as_ref()))
        .await
        .map_err(blocking_err)??
        .iter()
        .map(accounts::Account::view)
        .collect())
}

pub async fn list_users(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    Ok(HttpResponse::Ok().json(account_views(&state).await?))
}

pub async fn get_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    username: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let (store, username) = (state.store.clone(), username.into_inner());
    let account = web::block(move || accounts::get(store.as_ref(), &username))
        .await
        .map_err(blocking_err)??
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(account.view()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    username: String,
    #[serde(default)]
    display_name: String,
    role: String,
    /// Initial password, to be replaced at first sign-in.
    password: String,
}

pub async fn create_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let b = body.into_inner();
    let target = accounts::normalise_username(&b.username);
    let now = state.clock.now();
    let result = match grantable(&state, &principal, &b.role).await {
        Ok(()) => {
            let Some(_permit) = state.iam.verification_permit().await else {
                return Err(super::auth_api::busy());
            };
            let new = NewAccount {
                username: b.username,
                display_name: b.display_name,
                role: b.role,
                password: b.password,
            };
            iam_call(&state, move |iam| iam.create_account(new, now))
                .await
                .map(|a| {
                    let why = format!("role {}", a.role);
                    (a, why)
                })
        }
        Err(e) => Err(e),
    };
    let account = audited(&state, &req, &principal, "administrator.create", &target, result).await?;
    tracing::info!(username = %account.username, role = %account.role, by = %principal, "administrator created");
    Ok(HttpResponse::Created().json(account.view()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    display_name: Option<String>,
    role: Option<String>,
    disabled: Option<bool>,
}

pub async fn update_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    username: web::Path<String>,
    body: web::Json<UpdateUser>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = username.into_inner();
    let b = body.into_inner();
    let what = [
        b.role.as_ref().map(|r| format!("role {r}")),
        b.disabled.map(|d| {
            if d {
                "disabled".to_owned()
            } else {
                "enabled".to_owned()
            }
        }),
        b.display_name.as_ref().map(|d| format!("display name {d:?}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    let mut allowed = reachable(&state, &principal, &username).await;
    if allowed.is_ok()
        && let Some(role) = &b.role
    {
        allowed = if principal.username() == Some(username.as_str()) {
            Err(ApiError::Forbidden("nobody changes their own role".into()))
        } else {
            grantable(&state, &principal, role).await
        };
    }
    let result = match allowed {
        Ok(()) => {
            let patch = AccountPatch {
                display_name: b.display_name,
                role: b.role,
                disabled: b.disabled,
            };
            let u2 = username.clone();
            iam_call(&state, move |iam| iam.update_account_by_admin(&u2, patch))
                .await
                .map(|a| (a, what.clone()))
        }
        Err(e) => Err(e),
    };
    let account = audited(
        &state,
        &req,
        &principal,
        "administrator.update",
        &username,
        result,
    )
    .await?;
    tracing::info!(%username, change = %what, by = %principal, "administrator changed");
    Ok(HttpResponse::Ok().json(account.view()))
}

pub async fn delete_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    username: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = username.into_inner();
    let (u2, now) = (username.clone(), state.clock.now());
    let result = match reachable(&state, &principal, &username).await {
        Ok(()) => iam_call(&state, move |iam| iam.delete_account(&u2, now))
            .await
            .map(|a| {
                (
                    (),
                    format!("was {}; their sessions ended and API tokens revoked", a.role),
                )
            }),
        Err(e) => Err(e),
    };
    audited(
        &state,
        &req,
        &principal,
        "administrator.delete",
        &username,
        result,
    )
    .await?;
    tracing::info!(%username, by = %principal, "administrator removed");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    password: String,
}

pub async fn reset_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    username: web::Path<String>,
    body: web::Json<ResetPassword>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = username.into_inner();
    let (u2, password, now) = (username.clone(), body.into_inner().password, state.clock.now());
    let result = match reachable(&state, &principal, &username).await {
        Ok(()) => {
            let Some(_permit) = state.iam.verification_permit().await else {
                return Err(super::auth_api::busy());
            };
            iam_call(&state, move |iam| iam.reset_password(&u2, &password, now))
                .await
                .map(|a| (a, "to be changed at next sign-in; sessions ended".to_owned()))
        }
        Err(e) => Err(e),
    };
    let account = audited(
        &state,
        &req,
        &principal,
        "administrator.password.reset",
        &username,
        result,
    )
    .await?;
    Ok(HttpResponse::Ok().json(account.view()))
}

pub async fn reset_mfa(
    state: web::Data<AppState>,
    req: HttpRequest,
    username: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let username = username.into_inner();
    let u2 = username.clone();
    let result = match reachable(&state, &principal, &username).await {
        Ok(()) => iam_call(&state, move |iam| iam.reset_mfa(&u2))
            .await
            .map(|a| (a, "second factor removed; sessions ended".to_owned())),
        Err(e) => Err(e),
    };
    let account = audited(
        &state,
        &req,
        &principal,
        "administrator.mfa.reset",
        &username,
        result,
    )
    .await?;
    Ok(HttpResponse::Ok().json(account.view()))
}

// ---------------------------------------------------------------- roles

#[derive(Serialize)]
struct RoleView {
    name: String,
    description: String,
    permissions: PermissionSet,
    builtin: bool,
}

pub async fn list_roles(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    authenticate(&state, &req).await?;
    let store = state.store.clone();
    let custom = web::block(move || accounts::list_roles(store.as_ref()))
        .await
        .map_err(blocking_err)??;
    let list: Vec<RoleView> = BuiltinRole::ALL
        .into_iter()
        .map(|r| RoleView {
            name: r.name().to_owned(),
            description: r.description().to_owned(),
            permissions: r.permissions(),
            builtin: true,
        })
        .chain(custom.into_iter().map(|r| RoleView {
            name: r.name,
            description: r.description,
            permissions: r.permissions,
            builtin: false,
        }))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    name: Option<String>,
    #[serde(default)]
    description: String,
    permissions: Vec<String>,
}

fn parse_permissions(names: &[String]) -> Result<PermissionSet, ApiError> {
    names
        .iter()
        .map(|n| {
            Permission::parse(n).ok_or_else(|| ApiError::BadRequest(format!("unknown permission {n:?}")))
        })
        .collect()
}

/// The role `principal`'s own account holds, if any.
async fn own_role(state: &web::Data<AppState>, principal: &Principal) -> Result<Option<String>, ApiError> {
    let (store, me) = (state.store.clone(), principal.username().map(str::to_owned));
    web::block(move || -> Result<Option<String>, ApiError> {
        Ok(match me {
            Some(me) => accounts::get(store.as_ref(), &me)?.map(|a| a.role),
            None => None,
        })
    })
    .await
    .map_err(blocking_err)?
}

async fn save_role(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: String,
    body: RoleBody,
    create: bool,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let now = state.clock.now();
    let action = if create { "role.create" } else { "role.update" };
    let held = own_role(&state, &principal).await?;
    // Editing a role changes what its holders can do: both what it grants now and what it
    // will grant must be within the editor's reach.
    let current = if create {
        None
    } else {
        match permissions_of(&state, &name).await {
            Ok(set) => Some(set),
            Err(ApiError::BadRequest(_)) => None,
            Err(e) => return Err(e),
        }
    };
    let checked = parse_permissions(&body.permissions).and_then(|permissions| {
        if held.as_deref() == Some(name.as_str()) {
            return Err(ApiError::Forbidden("nobody changes the role they hold".into()));
        }
        if let Some(current) = &current {
            within_reach(&principal, current, "this role as it stands")?;
        }
        within_reach(&principal, &permissions, "this role")?;
        Ok(permissions)
    });
    let result = match checked {
        Ok(permissions) => {
            let (n, description) = (name.clone(), body.description);
            iam_call(&state, move |iam| {
                iam.save_role(&n, &description, permissions, create, now)
            })
            .await
            .map(|r| {
                let why = r
                    .permissions
                    .iter()
                    .map(Permission::name)
                    .collect::<Vec<_>>()
                    .join(" ");
                (r, why)
            })
        }
        Err(e) => Err(e),
    };
    let role = audited(&state, &req, &principal, action, &name, result).await?;
    let view = RoleView {
        name: role.name,
        description: role.description,
        permissions: role.permissions,
        builtin: false,
    };
    Ok(if create {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

pub async fn create_role(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<RoleBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::BadRequest("a role needs a name".into()))?;
    save_role(state, req, name, body, true).await
}

pub async fn update_role(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Json<RoleBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let name = name.into_inner();
    if body.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::BadRequest("a role cannot be renamed".into()));
    }
    save_role(state, req, name, body, false).await
}

pub async fn delete_role(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let name = name.into_inner();
    let n = name.clone();
    let result = iam_call(&state, move |iam| iam.delete_role(&n))
        .await
        .map(|r| ((), format!("had {} permissions", r.permissions.iter().count())));
    audited(&state, &req, &principal, "role.delete", &name, result).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---------------------------------------------------------------- API tokens

/// Longest token lifetime that can be asked for (ten years).
const MAX_TOKEN_TTL_DAYS: u32 = 3650;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    name: String,
    ttl_days: Option<u32>,
    /// The role the token acts with…
    role: Option<String>,
    /// …or the permissions it has.
    permissions: Option<Vec<String>>,
}

#[derive(Serialize)]
struct TokenCreated {
    token: String,
    #[serde(flatten)]
    record: ApiTokenRecord,
}

fn token_err(e: ApiTokenError) -> ApiError {
    match e {
        ApiTokenError::BadName | ApiTokenError::UnknownRole(_) | ApiTokenError::EmptyScope => {
            ApiError::BadRequest(e.to_string())
        }
        ApiTokenError::NotFound(_) => ApiError::NotFound,
        ApiTokenError::Store(s) => ApiError::Store(s),
    }
}

fn token_scope(role: Option<String>, permissions: Option<Vec<String>>) -> Result<TokenScope, ApiError> {
    match (role, permissions) {
        (Some(role), None) => Ok(TokenScope::Role(role)),
        (None, Some(names)) => Ok(TokenScope::Permissions(parse_permissions(&names)?)),
        _ => Err(ApiError::BadRequest(
            "give the token either a role or a list of permissions".into(),
        )),
    }
}

fn token_ttl(days: Option<u32>) -> Result<Option<time::Duration>, ApiError> {
    match days {
        Some(d) if d == 0 || d > MAX_TOKEN_TTL_DAYS => Err(ApiError::BadRequest(format!(
            "ttl_days must be between 1 and {MAX_TOKEN_TTL_DAYS}"
        ))),
        d => Ok(d.map(|d| time::Duration::days(i64::from(d)))),
    }
}

fn token_event(actor: Actor, action: &str, record: &ApiTokenRecord) -> AuditEvent {
    AuditEvent::new(actor, action, Outcome::Success)
        .target(record.id.as_str())
        .reason(format!("named {:?}; {}", record.name, record.scope_description()))
}

/// Whether `principal` may see and revoke `record`: their own tokens, or all with
/// `users.manage`.
fn may_manage(principal: &Principal, record: &ApiTokenRecord) -> bool {
    principal.permissions.contains(Permission::UsersManage)
        || (principal.username().is_some() && record.created_by.as_deref() == principal.username())
}

/// `POST /api/v1/api-tokens`: made by a signed-in administrator (not by another token, so a
/// leaked token cannot outlive its revocation through a child), never wider than its maker,
/// who must have signed in recently to give it a destructive permission.
pub async fn create_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let refuse = |e: ApiError| async {
        let event = AuditEvent::new(principal.actor.clone(), "api_token.create", Outcome::Denied)
            .reason(e.to_string());
        audit(&state, with_source(event, &req)).await;
        Err(e)
    };
    if principal.session_id().is_none() {
        return refuse(ApiError::Forbidden(
            "API tokens are made by a signed-in administrator or at the appliance's command line, not by other tokens".into(),
        ))
        .await;
    }
    let TokenRequest {
        name,
        ttl_days,
        role,
        permissions,
    } = body.into_inner();
    let scope = token_scope(role, permissions)?;
    let ttl = token_ttl(ttl_days)?;
    let wanted = match &scope {
        TokenScope::Role(role) => permissions_of(&state, role).await?,
        TokenScope::Permissions(set) => set.clone(),
    };
    if let Err(e) = within_reach(&principal, &wanted, "a token") {
        return refuse(e).await;
    }
    for p in wanted.iter().filter(|p| p.needs_fresh_authentication()) {
        require(&state, &principal, &req, p).await?;
    }
    let (store, now) = (state.store.clone(), state.clock.now());
    let created_by = principal.username().map(str::to_owned);
    let (token, record) =
        web::block(move || api_tokens::create(store.as_ref(), &name, scope, created_by.as_deref(), ttl, now))
            .await
            .map_err(blocking_err)?
            .map_err(token_err)?;
    tracing::info!(id = %record.id, name = %record.name, by = %principal, "API token created");
    audit(
        &state,
        with_source(
            token_event(principal.actor.clone(), "api_token.create", &record),
            &req,
        ),
    )
    .await;
    Ok(HttpResponse::Created()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(TokenCreated { token, record }))
}

pub async fn list_tokens(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let store = state.store.clone();
    let list: Vec<ApiTokenRecord> = web::block(move || api_tokens::list(store.as_ref()))
        .await
        .map_err(blocking_err)??
        .into_iter()
        .filter(|t| may_manage(&principal, t))
        .collect();
    Ok(HttpResponse::Ok().json(list))
}

pub async fn revoke_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = authenticate(&state, &req).await?;
    let (store, id, now) = (state.store.clone(), id.into_inner(), state.clock.now());
    let visible = {
        let (store, id) = (store.clone(), id.clone());
        web::block(move || api_tokens::list(store.as_ref()))
            .await
            .map_err(blocking_err)??
            .into_iter()
            .find(|t| t.id == id)
            .is_some_and(|t| may_manage(&principal, &t))
    };
    if !visible {
        let event = AuditEvent::new(principal.actor.clone(), "api_token.revoke", Outcome::Denied)
            .target(id.as_str())
            .reason("no such token among the caller's");
        audit(&state, with_source(event, &req)).await;
        return Err(ApiError::NotFound);
    }
    let record = web::block(move || api_tokens::revoke(store.as_ref(), &id, now))
        .await
        .map_err(blocking_err)?
        .map_err(token_err)?;
    tracing::info!(id = %record.id, name = %record.name, by = %principal, "API token revoked");
    audit(
        &state,
        with_source(
            token_event(principal.actor.clone(), "api_token.revoke", &record),
            &req,
        ),
    )
    .await;
    Ok(HttpResponse::Ok().json(record))
}

// ---------------------------------------------------------------- API tokens (admin socket)

pub async fn socket_create_token(
    state: web::Data<AppState>,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now();
    let store = state.store.clone();
    let TokenRequest {
        name,
        ttl_days,
        role,
        permissions,
    } = body.into_inner();
    let scope = token_scope(role, permissions)?;
    let ttl = token_ttl(ttl_days)?;
    let (token, record) =
        web::block(move || api_tokens::create(store.as_ref(), &name, scope, None, ttl, now))
            .await
            .map_err(blocking_err)?
            .map_err(token_err)?;
    tracing::info!(id = %record.id, name = %record.name, "API token created");
    audit(&state, token_event(Actor::Cli, "api_token.create", &record)).await;
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
    audit(&state, token_event(Actor::Cli, "api_token.revoke", &record)).await;
    Ok(HttpResponse::Ok().json(record))
}

// ---------------------------------------------------------------- administrators (admin socket)

/// A random password for a reset at the appliance's command line, shown once; the holder
/// must replace it at their next sign-in.
pub fn generated_password() -> String {
    let bytes: [u8; 15] = rand::random();
    let text = data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase();
    text.as_bytes()
        .chunks(6)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

#[derive(Serialize, Deserialize)]
pub struct PasswordReset {
    pub username: String,
    pub password: String,
}

pub async fn socket_list_admins(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(account_views(&state).await?))
}

pub async fn socket_reset_mfa(
    state: web::Data<AppState>,
    username: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let username = username.into_inner();
    let u2 = username.clone();
    let account = iam_call(&state, move |iam| iam.reset_mfa(&u2)).await?;
    state.iam.unlock(&username);
    tracing::warn!(%username, "second factor removed at the command line");
    let event =
        AuditEvent::new(Actor::Cli, "administrator.mfa.reset", Outcome::Success).target(username.as_str());
    audit(&state, event).await;
    Ok(HttpResponse::Ok().json(account.view()))
}

pub async fn socket_reset_password(
    state: web::Data<AppState>,
    username: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let username = username.into_inner();
    let (u2, password, now) = (username.clone(), generated_password(), state.clock.now());
    let p2 = password.clone();
    iam_call(&state, move |iam| iam.reset_password(&u2, &p2, now)).await?;
    tracing::warn!(%username, "password reset at the command line");
    let event = AuditEvent::new(Actor::Cli, "administrator.password.reset", Outcome::Success)
        .target(username.as_str());
    audit(&state, event).await;
    Ok(HttpResponse::Ok().json(PasswordReset { username, password }))
}

/// A change the directory re-check made.
#[derive(Serialize, Deserialize)]
pub struct DirectoryChange {
    pub username: String,
    pub change: String,
}

/// Asks the directory about every directory account that holds a role and applies what it
/// says (a new role, or none); each change is audited. Stops at the first sign that the
/// directory is unavailable, changing nothing for the rest.
pub async fn sync_directory(state: &web::Data<AppState>) -> Result<Vec<DirectoryChange>, ApiError> {
    let Some(directory) = state.directory.clone() else {
        return Err(ApiError::Conflict(
            "no directory is configured (admin.directory)".into(),
        ));
    };
    let iam = state.iam.clone();
    let names = web::block(move || iam.directory_accounts())
        .await
        .map_err(blocking_err)??;
    let mut changes = Vec::new();
    for name in names {
        let found = match directory.lookup(&name).await {
            Ok(user) => Some(user),
            Err(crate::iam::directory::DirectoryError::UnknownUser) => None,
            Err(e) => {
                tracing::warn!(error = %e, "directory unavailable; re-check stopped");
                return Err(ApiError::Unavailable("the directory is unavailable".into()));
            }
        };
        let n = name.clone();
        let change = iam_call(state, move |iam| iam.sync_directory_account(&n, found.as_ref())).await?;
        if let Some(change) = change {
            tracing::info!(username = %name, %change, "directory account re-checked");
            let event = AuditEvent::new(Actor::System, "administrator.directory.sync", Outcome::Success)
                .target(name.as_str())
                .reason(change.clone());
            audit(state, event).await;
            changes.push(DirectoryChange {
                username: name,
                change,
            });
        }
    }
    Ok(changes)
}

/// `POST /admins/directory-sync` (admin socket): `citadel admin sync-directory`.
pub async fn socket_sync_directory(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(sync_directory(&state).await?))
}
