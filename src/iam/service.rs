//! Sign-in, second factor, sessions and the management of administrators and roles.
//!
//! Synchronous: callers run it on the blocking pool (Argon2id costs tens of milliseconds on
//! purpose). Time is passed in.

use std::cell::RefCell;
use std::sync::Arc;

use time::OffsetDateTime;

use super::accounts::{self, Account, AccountSource, CustomRole, TotpState};
use super::password::{self, PasswordError};
use super::permissions::{BuiltinRole, PermissionSet};
use super::sessions::{self, NewSession, PendingStep, SessionPolicy, SessionRecord, SessionStart};
use super::throttle::{Attempt, LoginThrottle, ThrottlePolicy};
use super::totp::{self, TotpEnrolment, TotpError};
use super::{api_tokens, bootstrap};
use crate::store::{Store, StoreError, Tree, decode, encode};

#[derive(Debug, Clone)]
pub struct IamSettings {
    pub min_password_chars: usize,
    pub require_mfa: bool,
    pub sessions: SessionPolicy,
    pub throttle: ThrottlePolicy,
    /// Shown in authenticator apps next to the account name.
    pub issuer: String,
}

impl IamSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let a = &config.admin;
        let minutes = |m: u32| time::Duration::minutes(i64::from(m));
        Self {
            min_password_chars: a.password_min_chars,
            require_mfa: a.require_mfa,
            sessions: SessionPolicy {
                idle: minutes(a.session_idle_minutes),
                absolute: time::Duration::hours(i64::from(a.session_absolute_hours)),
                fresh: minutes(a.reauthenticate_minutes),
            },
            throttle: ThrottlePolicy {
                account_failures: a.lockout_failures,
                source_failures: a.lockout_source_failures,
                window: minutes(a.lockout_minutes),
                lockout: minutes(a.lockout_minutes),
            },
            issuer: format!("Citadel ({})", config.mdm.organization),
        }
    }
}

/// Why a sign-in failed. The client is told only that it failed; the audit log gets this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    UnknownAccount,
    Disabled,
    WrongPassword,
    MissingCode,
    WrongCode,
    WrongBootstrapSecret,
    /// The directory knows the person, but none of their groups maps to a role.
    NotAnAdministrator,
    /// The directory entry already belongs to an account of another name.
    DirectoryAlias,
}

impl FailureReason {
    pub fn text(self) -> &'static str {
        match self {
            FailureReason::UnknownAccount => "unknown account",
            FailureReason::Disabled => "account disabled",
            FailureReason::WrongPassword => "wrong password",
            FailureReason::MissingCode => "second factor missing",
            FailureReason::WrongCode => "wrong or reused second-factor code",
            FailureReason::WrongBootstrapSecret => "wrong bootstrap secret",
            FailureReason::NotAnAdministrator => "directory groups map to no role",
            FailureReason::DirectoryAlias => "directory entry already belongs to another account",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("invalid user name, password or code")]
    InvalidCredentials {
        reason: FailureReason,
        /// Set when this failure locked the account or the source address.
        locked_until: Option<OffsetDateTime>,
    },
    #[error("too many failed sign-ins; try again after {until}")]
    Throttled { until: OffsetDateTime },
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Totp(#[from] TotpError),
    #[error("the directory is unavailable: {0}")]
    DirectoryUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a sign-in comes from.
#[derive(Debug, Clone, Default)]
pub struct ClientContext {
    pub source: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug)]
pub struct SignedIn {
    pub account: Account,
    pub session: NewSession,
    pub used_recovery_code: bool,
    /// Changes the sign-in made to the account (directory provisioning, role from groups).
    pub changes: Vec<String>,
}

/// A new administrator, as an Owner describes them.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub username: String,
    pub display_name: String,
    pub role: String,
    /// Initial password; must be replaced at first sign-in.
    pub password: String,
}

/// Changes an Owner makes to an account; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct AccountPatch {
    pub display_name: Option<String>,
    pub role: Option<String>,
    pub disabled: Option<bool>,
}

/// Seals secrets kept in the store (TOTP secrets) with the appliance's data key, bound to a
/// context so a sealed value cannot be moved to another account.
pub trait Sealer: Send + Sync {
    fn seal(&self, secret: &[u8], context: &str) -> Result<String, String>;
    fn open(&self, sealed: &str, context: &str) -> Option<zeroize::Zeroizing<Vec<u8>>>;
}

impl Sealer for crate::pki::Pki {
    fn seal(&self, secret: &[u8], context: &str) -> Result<String, String> {
        crate::pki::Pki::seal(self, secret, context).map_err(|e| e.to_string())
    }

    fn open(&self, sealed: &str, context: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        crate::pki::Pki::open(self, sealed, context)
    }
}

fn totp_context(username: &str) -> String {
    format!("totp:{username}")
}

pub struct IamService {
    store: Arc<dyn Store>,
    sealer: Arc<dyn Sealer>,
    settings: IamSettings,
    throttle: LoginThrottle,
    verifications: tokio::sync::Semaphore,
    /// Serialises changes to administrators and roles, so checks such as "an enabled Owner
    /// remains" hold when the change is written.
    administration: std::sync::Mutex<()>,
}

impl IamService {
    pub fn new(store: Arc<dyn Store>, sealer: Arc<dyn Sealer>, settings: IamSettings) -> Self {
        let throttle = LoginThrottle::new(settings.throttle);
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self {
            store,
            sealer,
            settings,
            throttle,
            verifications: tokio::sync::Semaphore::new((2 * cores).clamp(2, 16)),
            administration: std::sync::Mutex::new(()),
        }
    }

    fn open_totp(&self, username: &str, state: &TotpState) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        self.sealer.open(&state.sealed_secret, &totp_context(username))
    }

    pub fn settings(&self) -> &IamSettings {
        &self.settings
    }

    fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Counts a sign-in attempt before its credentials are checked (see `throttle`), or
    /// refuses it while the name, the name from this address, or the address is locked.
    pub fn begin_attempt(
        &self,
        username: &str,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<Attempt, IamError> {
        self.throttle
            .begin(username, ctx.source.as_deref(), now)
            .map_err(|until| IamError::Throttled { until })
    }

    /// [`Self::begin_attempt`] for the self-service portal, counted apart from administrators.
    pub fn begin_portal_attempt(
        &self,
        username: &str,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<Attempt, IamError> {
        self.throttle
            .begin_in("portal|", username, ctx.source.as_deref(), now)
            .map_err(|until| IamError::Throttled { until })
    }

    /// The error for a failed attempt (already counted), naming any lock it caused.
    pub fn fail(&self, attempt: &Attempt, reason: FailureReason) -> IamError {
        IamError::InvalidCredentials {
            reason,
            locked_until: attempt.locks_until,
        }
    }

    /// Takes back an attempt that succeeded.
    pub fn attempt_succeeded(&self, attempt: &Attempt) {
        self.throttle.succeeded(attempt);
    }

    /// Takes back an attempt that decided nothing (the directory was unreachable).
    pub fn attempt_undecided(&self, attempt: &Attempt) {
        self.throttle.cancel(attempt);
    }

    /// Clears the lockouts of `username` (an operator's unlock).
    pub fn unlock(&self, username: &str) {
        self.throttle.unlock(&accounts::normalise_username(username));
    }

    /// A permit to run one password check (Argon2id or a directory bind). Checks are costly on
    /// purpose; bounding how many run at once keeps a flood of sign-ins from exhausting memory
    /// and the blocking pool. `None` when none freed up within a few seconds.
    pub async fn verification_permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(std::time::Duration::from_secs(5), self.verifications.acquire())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Reads, changes and writes one account atomically; `change` may abort with
    /// `StoreError::Aborted`.
    fn update_account(
        &self,
        username: &str,
        change: &dyn Fn(&mut Account) -> Result<(), StoreError>,
    ) -> Result<Account, IamError> {
        let out: RefCell<Option<Account>> = RefCell::new(None);
        self.store().transaction(&|txn| {
            let Some(bytes) = txn.get(Tree::Administrators, username.as_bytes())? else {
                *out.borrow_mut() = None;
                return Ok(());
            };
            let mut account: Account = decode(Tree::Administrators, username.as_bytes(), &bytes)?;
            change(&mut account)?;
            txn.put(Tree::Administrators, username.as_bytes(), &encode(&account)?)?;
            *out.borrow_mut() = Some(account);
            Ok(())
        })?;
        out.into_inner().ok_or(IamError::NotFound)
    }

    /// Password, then second factor. Consumes the TOTP step or recovery code used.
    fn check_credentials(
        &self,
        username: &str,
        password: &str,
        code: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(Account, bool), FailureReason> {
        let account = match accounts::get(self.store(), username) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                password::verify_nothing(password);
                return Err(FailureReason::UnknownAccount);
            }
        };
        let password_ok = match (&account.source, &account.password_hash) {
            (AccountSource::Local, Some(phc)) => password::verify(password, phc),
            _ => {
                password::verify_nothing(password);
                false
            }
        };
        if account.disabled {
            return Err(FailureReason::Disabled);
        }
        if !password_ok {
            return Err(FailureReason::WrongPassword);
        }
        if !account.mfa_enrolled() {
            return Ok((account, false));
        }
        let code = code
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(FailureReason::MissingCode)?;
        self.consume_second_factor(&account, code, now)
            .ok_or(FailureReason::WrongCode)
    }

    /// Accepts `code` as a TOTP code (never the same step twice) or a recovery code (used
    /// up); returns the account as written and whether a recovery code was used.
    fn consume_second_factor(
        &self,
        account: &Account,
        code: &str,
        now: OffsetDateTime,
    ) -> Option<(Account, bool)> {
        let totp_state = account.totp.as_ref()?;
        let secret = self.open_totp(&account.username, totp_state)?;
        if let Some(step) = totp::check(&secret, code, now, totp_state.last_step) {
            let updated = self.update_account(&account.username, &|a| {
                let Some(t) = a.totp.as_mut() else {
                    return Err(StoreError::Aborted("second factor removed".into()));
                };
                if t.last_step.is_some_and(|last| step <= last) {
                    return Err(StoreError::Aborted("code already used".into()));
                }
                t.last_step = Some(step);
                Ok(())
            });
            return updated.ok().map(|a| (a, false));
        }
        totp::match_recovery_code(&account.recovery_codes, code)?;
        let updated = self.update_account(&account.username, &|a| {
            let i = totp::match_recovery_code(&a.recovery_codes, code)
                .ok_or_else(|| StoreError::Aborted("recovery code already used".into()))?;
            a.recovery_codes.remove(i);
            Ok(())
        });
        updated.ok().map(|a| (a, true))
    }

    fn pending_steps(&self, account: &Account) -> Vec<PendingStep> {
        let mut steps = Vec::new();
        if self.settings.require_mfa && !account.mfa_enrolled() {
            steps.push(PendingStep::MfaEnrolment);
        }
        if account.must_change_password {
            steps.push(PendingStep::PasswordChange);
        }
        steps
    }

    fn start_session(
        &self,
        account: &Account,
        authenticated_at: OffsetDateTime,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<NewSession, StoreError> {
        self.session_from(account, authenticated_at, None, ctx, now)
    }

    fn session_from(
        &self,
        account: &Account,
        authenticated_at: OffsetDateTime,
        continues_from: Option<OffsetDateTime>,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<NewSession, StoreError> {
        self.open_session(
            SessionStart {
                username: &account.username,
                realm: sessions::Realm::Admin,
                continues_from,
                authenticated_at,
                source: ctx.source.clone(),
                user_agent: ctx.user_agent.clone(),
                pending: self.pending_steps(account),
            },
            now,
        )
    }

    /// Creates a session, first sweeping expired ones so abandoned sessions do not pile up.
    fn open_session(&self, start: SessionStart<'_>, now: OffsetDateTime) -> Result<NewSession, StoreError> {
        if let Err(e) = sessions::sweep(self.store(), &self.settings.sessions, now) {
            tracing::warn!(error = %e, "expired sessions not swept");
        }
        sessions::create(self.store(), start, now)
    }

    /// Signs in with user name, password and (when enrolled) a TOTP or recovery code.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        code: Option<&str>,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<SignedIn, IamError> {
        let (username, too_long) = typed_name(username);
        let attempt = self.begin_attempt(&username, ctx, now)?;
        if too_long {
            password::verify_nothing(password);
            return Err(self.fail(&attempt, FailureReason::UnknownAccount));
        }
        let (account, used_recovery_code) = self
            .check_credentials(&username, password, code, now)
            .map_err(|reason| self.fail(&attempt, reason))?;
        self.attempt_succeeded(&attempt);
        let account = self.update_account(&account.username, &|a| {
            a.last_login_at = Some(now);
            Ok(())
        })?;
        let session = self.start_session(&account, now, ctx, now)?;
        Ok(SignedIn {
            account,
            session,
            used_recovery_code,
            changes: Vec::new(),
        })
    }

    /// Whether `username` signs in with a password kept here (rather than by the directory).
    pub fn is_local(&self, username: &str) -> Result<bool, StoreError> {
        Ok(
            accounts::get(self.store(), &accounts::normalise_username(username))?
                .is_some_and(|a| a.source == AccountSource::Local),
        )
    }

    /// Finishes a sign-in whose password the directory accepted: creates or refreshes the
    /// account (role from the groups), then asks for the second factor like any other.
    /// A person whose groups no longer map to a role loses the role they had here.
    pub fn login_directory(
        &self,
        attempt: &Attempt,
        username: &str,
        user: &super::directory::DirectoryUser,
        code: Option<&str>,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<SignedIn, IamError> {
        let (username, too_long) = typed_name(username);
        if too_long || !accounts::valid_username(&username) {
            return Err(self.fail(attempt, FailureReason::UnknownAccount));
        }
        let Some(role) = user
            .role
            .clone()
            .filter(|r| matches!(accounts::role_permissions(self.store(), r), Ok(Some(_))))
        else {
            if let Some(r) = &user.role {
                tracing::error!(role = %r, "admin.directory.groups maps to a role that does not exist");
            }
            return Err(self.fail(attempt, FailureReason::NotAnAdministrator));
        };
        // One directory entry, one account: a second name for the same person (an alias the
        // user filter also matches) would be a second account with its own second factor.
        let alias = accounts::list(self.store())?.into_iter().find(|a| {
            a.username != username
                && matches!(&a.source, AccountSource::Directory { dn } if dn.eq_ignore_ascii_case(&user.dn))
        });
        if let Some(other) = alias {
            tracing::warn!(%username, holder = %other.username, "directory entry already belongs to another account");
            return Err(self.fail(attempt, FailureReason::DirectoryAlias));
        }
        let display_name: String = user
            .display_name
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        let fresh = Account {
            username: username.clone(),
            display_name: display_name.clone(),
            role: role.clone(),
            source: AccountSource::Directory { dn: user.dn.clone() },
            password_hash: None,
            totp: None,
            pending_totp: None,
            recovery_codes: Vec::new(),
            must_change_password: false,
            disabled: false,
            created_at: now,
            password_changed_at: None,
            last_login_at: Some(now),
        };
        let serial = self.serialise_administration();
        let out: RefCell<Option<(Account, Option<String>)>> = RefCell::new(None);
        let written = self.store().transaction(&|txn| {
            let key = username.as_bytes();
            let (account, before) = match txn.get(Tree::Administrators, key)? {
                Some(bytes) => {
                    let mut a: Account = decode(Tree::Administrators, key, &bytes)?;
                    if a.source == AccountSource::Local {
                        return Err(StoreError::Aborted("a local account has this name".into()));
                    }
                    // A name now held by another directory entry is another person: the old
                    // account (its second factor, its tokens) is not theirs to take over.
                    if let AccountSource::Directory { dn } = &a.source
                        && !dn.eq_ignore_ascii_case(&user.dn)
                    {
                        return Err(StoreError::Aborted(
                            "this name belonged to another directory entry; an Owner must remove the old account first".into(),
                        ));
                    }
                    let before = a.role.clone();
                    a.source = AccountSource::Directory { dn: user.dn.clone() };
                    a.display_name.clone_from(&display_name);
                    a.role.clone_from(&role);
                    (a, Some(before))
                }
                None => (fresh.clone(), None),
            };
            txn.put(Tree::Administrators, key, &encode(&account)?)?;
            *out.borrow_mut() = Some((account, before));
            Ok(())
        });
        match written {
            Ok(()) => {}
            Err(StoreError::Aborted(r)) => return Err(IamError::Conflict(r)),
            Err(e) => return Err(e.into()),
        }
        drop(serial);
        let (account, before) = out.into_inner().ok_or(IamError::NotFound)?;
        let mut changes = Vec::new();
        match before {
            None => changes.push(format!("provisioned from the directory as {role}")),
            Some(old) if old != role => {
                changes.push(format!(
                    "role {old:?} changed to {role} by the directory's groups"
                ));
                sessions::revoke_all(self.store(), &username, None)?;
            }
            Some(_) => {}
        }
        if account.disabled {
            return Err(self.fail(attempt, FailureReason::Disabled));
        }
        let (account, used_recovery_code) = if account.mfa_enrolled() {
            let code = code
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| self.fail(attempt, FailureReason::MissingCode))?;
            self.consume_second_factor(&account, code, now)
                .ok_or_else(|| self.fail(attempt, FailureReason::WrongCode))?
        } else {
            (account, false)
        };
        self.attempt_succeeded(attempt);
        let account = self.update_account(&account.username, &|a| {
            a.last_login_at = Some(now);
            Ok(())
        })?;
        let session = self.start_session(&account, now, ctx, now)?;
        Ok(SignedIn {
            account,
            session,
            used_recovery_code,
            changes,
        })
    }

    /// Portal sign-in with a local portal password. `Ok(None)` when there is no local portal
    /// user of that name (the caller may ask the directory); the attempt stays counted until
    /// the caller settles it.
    pub fn portal_login_local(
        &self,
        attempt: &Attempt,
        username: &str,
        password: &str,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<Option<NewSession>, IamError> {
        let Some(user) = crate::portal::get_user(self.store(), username)? else {
            return Ok(None);
        };
        let ok = password::verify(password, &user.password_hash);
        if user.disabled {
            return Err(self.fail(attempt, FailureReason::Disabled));
        }
        if !ok {
            return Err(self.fail(attempt, FailureReason::WrongPassword));
        }
        self.attempt_succeeded(attempt);
        Ok(Some(self.start_portal_session(username, ctx, now)?))
    }

    /// A portal session for `username` (whose password was checked here or by the directory).
    pub fn start_portal_session(
        &self,
        username: &str,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<NewSession, StoreError> {
        self.open_session(
            SessionStart {
                username,
                realm: sessions::Realm::Portal,
                continues_from: None,
                authenticated_at: now,
                source: ctx.source.clone(),
                user_agent: ctx.user_agent.clone(),
                pending: Vec::new(),
            },
            now,
        )
    }

    /// The live portal session for a cookie; a local portal user since disabled or removed
    /// loses it.
    pub fn portal_session(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(session) = sessions::lookup(self.store(), &self.settings.sessions, token, now)?
            .filter(|s| s.realm == sessions::Realm::Portal)
        else {
            return Ok(None);
        };
        if crate::portal::get_user(self.store(), &session.username)?.is_some_and(|u| u.disabled) {
            sessions::end(self.store(), token)?;
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Creates a local portal user (an end user without a directory account).
    pub fn create_portal_user(
        &self,
        username: &str,
        display_name: &str,
        new_password: &str,
        now: OffsetDateTime,
    ) -> Result<crate::portal::PortalUser, IamError> {
        let (username, display_name) = self.new_identity(username, display_name, new_password)?;
        if crate::portal::get_user(self.store(), &username)?.is_some() {
            return Err(IamError::Conflict(format!(
                "a portal user named {username} exists"
            )));
        }
        let user = crate::portal::PortalUser {
            username,
            display_name,
            password_hash: password::hash(new_password)?,
            created_at: now,
            disabled: false,
        };
        crate::portal::put_user(self.store(), &user)?;
        Ok(user)
    }

    /// Directory accounts that currently hold a role: what the periodic re-check looks at.
    pub fn directory_accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(accounts::list(self.store())?
            .into_iter()
            .filter(|a| matches!(a.source, AccountSource::Directory { .. }) && !a.role.is_empty())
            .map(|a| a.username)
            .collect())
    }

    /// Brings a directory account in line with what the directory says now (`user`, or
    /// `None` when it no longer has them): a new role from the groups, or none. Returns what
    /// changed, for the audit log.
    pub fn sync_directory_account(
        &self,
        username: &str,
        user: Option<&super::directory::DirectoryUser>,
    ) -> Result<Option<String>, IamError> {
        let _serial = self.serialise_administration();
        let Some(account) = accounts::get(self.store(), username)? else {
            return Ok(None);
        };
        // The same name for another directory entry is another person: the account's access
        // ends rather than passing to them.
        let same_person = match (&account.source, user) {
            (AccountSource::Directory { dn }, Some(u)) => dn.eq_ignore_ascii_case(&u.dn),
            _ => false,
        };
        let role = user
            .filter(|_| same_person)
            .and_then(|u| u.role.clone())
            .filter(|r| matches!(accounts::role_permissions(self.store(), r), Ok(Some(_))));
        let Some(role) = role else {
            return Ok(self
                .end_directory_access(username)?
                .map(|before| format!("the directory no longer grants a role; {before:?} removed")));
        };
        if account.role == role || account.source == AccountSource::Local {
            return Ok(None);
        }
        self.update_account(username, &|a| {
            a.role.clone_from(&role);
            Ok(())
        })?;
        sessions::revoke_all(self.store(), username, None)?;
        Ok(Some(format!(
            "role {:?} changed to {role} by the directory's groups",
            account.role
        )))
    }

    /// The directory no longer makes `username` an administrator (unknown there, or in no
    /// mapped group): a directory account keeps its record but loses its role — its sessions
    /// end and its API tokens grant nothing. Returns the role it had.
    pub fn directory_access_ended(&self, username: &str) -> Result<Option<String>, IamError> {
        let _serial = self.serialise_administration();
        self.end_directory_access(username)
    }

    /// [`Self::directory_access_ended`] with the administration lock already held.
    fn end_directory_access(&self, username: &str) -> Result<Option<String>, IamError> {
        let Some(account) = accounts::get(self.store(), username)? else {
            return Ok(None);
        };
        if account.source == AccountSource::Local || account.role.is_empty() {
            return Ok(None);
        }
        let before = account.role.clone();
        self.update_account(username, &|a| {
            a.role.clear();
            Ok(())
        })?;
        sessions::revoke_all(self.store(), username, None)?;
        tracing::warn!(%username, role = %before, "the directory no longer grants this administrator a role");
        Ok(Some(before))
    }

    /// Proves the session's holder is still at the keyboard: returns a new session (new
    /// token, freshly authenticated) and ends the old one.
    pub fn reauthenticate(
        &self,
        current: &SessionRecord,
        current_token: &str,
        password: &str,
        code: Option<&str>,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<SignedIn, IamError> {
        let username = current.username.clone();
        let attempt = self.begin_attempt(&username, ctx, now)?;
        let (account, used_recovery_code) = self
            .check_credentials(&username, password, code, now)
            .map_err(|reason| self.fail(&attempt, reason))?;
        self.attempt_succeeded(&attempt);
        sessions::end(self.store(), current_token)?;
        let session = self.start_session(&account, now, ctx, now)?;
        Ok(SignedIn {
            account,
            session,
            used_recovery_code,
            changes: Vec::new(),
        })
    }

    /// First start: the bootstrap secret creates the first Owner, once.
    pub fn setup(
        &self,
        secret: &str,
        username: &str,
        display_name: &str,
        new_password: &str,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<SignedIn, IamError> {
        let attempt = self.begin_attempt("", ctx, now)?;
        if !bootstrap::verify(self.store(), secret)? {
            return Err(self.fail(&attempt, FailureReason::WrongBootstrapSecret));
        }
        self.attempt_undecided(&attempt);
        let (username, display_name) = self.new_identity(username, display_name, new_password)?;
        let account = Account {
            username: username.clone(),
            display_name,
            role: BuiltinRole::Owner.name().to_owned(),
            source: AccountSource::Local,
            password_hash: Some(password::hash(new_password)?),
            totp: None,
            pending_totp: None,
            recovery_codes: Vec::new(),
            must_change_password: false,
            disabled: false,
            created_at: now,
            password_changed_at: Some(now),
            last_login_at: Some(now),
        };
        let encoded = encode(&account)?;
        let created = self.store().transaction(&|txn| {
            bootstrap::consume(txn, now)?;
            if txn.get(Tree::Administrators, username.as_bytes())?.is_some() {
                return Err(StoreError::Aborted("the account exists".into()));
            }
            txn.put(Tree::Administrators, username.as_bytes(), &encoded)
        });
        match created {
            Ok(()) => {}
            Err(StoreError::Aborted(reason)) => {
                return Err(IamError::Conflict(format!("set-up refused: {reason}")));
            }
            Err(e) => return Err(e.into()),
        }
        self.store().flush()?;
        let session = self.start_session(&account, now, ctx, now)?;
        Ok(SignedIn {
            account,
            session,
            used_recovery_code: false,
            changes: Vec::new(),
        })
    }

    /// The live session for a cookie, with its account and what it may do. A session whose
    /// account is gone or disabled is ended.
    pub fn session(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, Account, PermissionSet)>, StoreError> {
        let Some(session) = sessions::lookup(self.store(), &self.settings.sessions, token, now)?
            .filter(|s| s.realm == sessions::Realm::Admin)
        else {
            return Ok(None);
        };
        match accounts::get(self.store(), &session.username)? {
            Some(account) if !account.disabled => {
                let permissions = accounts::account_permissions(self.store(), &account)?;
                Ok(Some((session, account, permissions)))
            }
            _ => {
                sessions::end(self.store(), token)?;
                Ok(None)
            }
        }
    }

    pub fn logout(&self, token: &str) -> Result<Option<SessionRecord>, StoreError> {
        sessions::end(self.store(), token)
    }

    /// Starts (or restarts) TOTP enrolment: a new secret that replaces the current one only
    /// once confirmed with a code.
    pub fn begin_totp(&self, username: &str, now: OffsetDateTime) -> Result<TotpEnrolment, IamError> {
        let secret = totp::new_secret();
        let sealed = self
            .sealer
            .seal(&secret, &totp_context(username))
            .map_err(|e| IamError::Totp(TotpError::new(e)))?;
        self.update_account(username, &|a| {
            a.pending_totp = Some(TotpState {
                sealed_secret: sealed.clone(),
                confirmed: false,
                last_step: None,
                created_at: now,
            });
            Ok(())
        })?;
        Ok(totp::enrolment(&secret, username, &self.settings.issuer)?)
    }

    /// Confirms enrolment with a code from the new authenticator; returns fresh recovery
    /// codes (shown once; earlier ones stop working).
    pub fn confirm_totp(
        &self,
        username: &str,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, IamError> {
        let account = accounts::get(self.store(), username)?.ok_or(IamError::NotFound)?;
        let pending = account
            .pending_totp
            .as_ref()
            .ok_or_else(|| IamError::Conflict("no TOTP enrolment is in progress".into()))?;
        let secret = self
            .open_totp(username, pending)
            .ok_or_else(|| IamError::Conflict("the pending TOTP secret is unreadable; start again".into()))?;
        let step = totp::check(&secret, code, now, None).ok_or_else(|| {
            IamError::BadRequest("the code does not match; check the device's clock".into())
        })?;
        let (codes, hashes) = totp::new_recovery_codes();
        let expected = pending.sealed_secret.clone();
        self.update_account(username, &|a| {
            match a.pending_totp.take() {
                Some(p) if p.sealed_secret == expected => {
                    a.totp = Some(TotpState {
                        confirmed: true,
                        last_step: Some(step),
                        created_at: now,
                        ..p
                    });
                }
                _ => return Err(StoreError::Aborted("the enrolment changed meanwhile".into())),
            }
            a.recovery_codes = hashes.clone();
            Ok(())
        })
        .map_err(|e| match e {
            IamError::Store(StoreError::Aborted(r)) => IamError::Conflict(r),
            e => e,
        })?;
        // Sessions opened before (with the password alone) end: from now on every session has
        // shown this second factor.
        sessions::revoke_all(self.store(), username, None)?;
        Ok(codes)
    }

    /// Replaces the session after a step of signing in was finished (enrolment, password
    /// change): new token, same sign-in time, the remaining pending steps.
    pub fn rotate_session(
        &self,
        current: &SessionRecord,
        current_token: &str,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<NewSession, IamError> {
        let account = accounts::get(self.store(), &current.username)?.ok_or(IamError::NotFound)?;
        sessions::end(self.store(), current_token)?;
        Ok(self.session_from(
            &account,
            current.authenticated_at,
            Some(current.created_at),
            ctx,
            now,
        )?)
    }

    /// Changes one's own password (local accounts); ends one's other sessions.
    pub fn change_password(
        &self,
        session: &SessionRecord,
        current_password: &str,
        new_password: &str,
        ctx: &ClientContext,
        now: OffsetDateTime,
    ) -> Result<Account, IamError> {
        let username = session.username.clone();
        let attempt = self.begin_attempt(&username, ctx, now)?;
        let Some(account) = accounts::get(self.store(), &username)? else {
            self.attempt_undecided(&attempt);
            return Err(IamError::NotFound);
        };
        let Some(phc) = account
            .password_hash
            .as_ref()
            .filter(|_| account.source == AccountSource::Local)
        else {
            self.attempt_undecided(&attempt);
            return Err(IamError::Conflict(
                "this account's password is kept by the directory".into(),
            ));
        };
        if !password::verify(current_password, phc) {
            return Err(self.fail(&attempt, FailureReason::WrongPassword));
        }
        self.attempt_succeeded(&attempt);
        if current_password == new_password {
            return Err(IamError::BadRequest(
                "the new password must differ from the current one".into(),
            ));
        }
        password::check_policy(
            new_password,
            self.settings.min_password_chars,
            &[&username, &account.display_name],
        )?;
        let phc = password::hash(new_password)?;
        let account = self.update_account(&username, &|a| {
            a.password_hash = Some(phc.clone());
            a.must_change_password = false;
            a.password_changed_at = Some(now);
            Ok(())
        })?;
        sessions::revoke_all(self.store(), &username, Some(&session.id))?;
        Ok(account)
    }

    /// A new person's user name (normalised, checked), display name, and a password that
    /// passes the policy.
    fn new_identity(
        &self,
        username: &str,
        display_name: &str,
        new_password: &str,
    ) -> Result<(String, String), IamError> {
        let username = accounts::normalise_username(username);
        if !accounts::valid_username(&username) {
            return Err(IamError::BadRequest(
                "a user name is 1 to 64 lower-case letters, digits, '.', '_', '-' or '@'".into(),
            ));
        }
        let display_name = clean_display_name(display_name, &username)?;
        password::check_policy(
            new_password,
            self.settings.min_password_chars,
            &[&username, &display_name],
        )?;
        Ok((username, display_name))
    }

    // --- administration of accounts and roles (the handlers check permissions) ---

    fn require_role(&self, role: &str) -> Result<(), IamError> {
        match accounts::role_permissions(self.store(), role)? {
            Some(_) => Ok(()),
            None => Err(IamError::BadRequest(format!("unknown role {role:?}"))),
        }
    }

    pub fn create_account(&self, new: NewAccount, now: OffsetDateTime) -> Result<Account, IamError> {
        let _serial = self.serialise_administration();
        self.require_role(&new.role)?;
        let (username, display_name) = self.new_identity(&new.username, &new.display_name, &new.password)?;
        let account = Account {
            username: username.clone(),
            display_name,
            role: new.role,
            source: AccountSource::Local,
            password_hash: Some(password::hash(&new.password)?),
            totp: None,
            pending_totp: None,
            recovery_codes: Vec::new(),
            must_change_password: true,
            disabled: false,
            created_at: now,
            password_changed_at: Some(now),
            last_login_at: None,
        };
        let encoded = encode(&account)?;
        let created = self.store().transaction(&|txn| {
            if txn.get(Tree::Administrators, username.as_bytes())?.is_some() {
                return Err(StoreError::Aborted(format!(
                    "an administrator named {username} exists"
                )));
            }
            txn.put(Tree::Administrators, username.as_bytes(), &encoded)
        });
        match created {
            Ok(()) => Ok(account),
            Err(StoreError::Aborted(reason)) => Err(IamError::Conflict(reason)),
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses a change that would leave no enabled Owner.
    fn keep_an_owner(&self, username: &str, stays_owner: bool) -> Result<(), IamError> {
        if stays_owner {
            return Ok(());
        }
        let owner = BuiltinRole::Owner.name();
        let others = accounts::list(self.store())?
            .into_iter()
            .any(|a| a.username != username && a.role == owner && !a.disabled);
        if others {
            Ok(())
        } else {
            Err(IamError::Conflict(
                "this would leave no enabled Owner; make someone else Owner first".into(),
            ))
        }
    }

    pub fn update_account_by_admin(&self, username: &str, patch: AccountPatch) -> Result<Account, IamError> {
        let _serial = self.serialise_administration();
        let current = accounts::get(self.store(), username)?.ok_or(IamError::NotFound)?;
        if let Some(role) = &patch.role {
            self.require_role(role)?;
        }
        let display_name = patch
            .display_name
            .as_deref()
            .map(|d| clean_display_name(d, username))
            .transpose()?;
        let owner = BuiltinRole::Owner.name();
        let role_after = patch.role.clone().unwrap_or_else(|| current.role.clone());
        let disabled_after = patch.disabled.unwrap_or(current.disabled);
        if current.role == owner && !current.disabled {
            self.keep_an_owner(username, role_after == owner && !disabled_after)?;
        }
        // Only the fields the patch names are written, onto the record as it is now.
        let account = self.update_account(username, &|a| {
            if let Some(d) = &display_name {
                a.display_name.clone_from(d);
            }
            if let Some(r) = &patch.role {
                a.role.clone_from(r);
            }
            if let Some(d) = patch.disabled {
                a.disabled = d;
            }
            Ok(())
        })?;
        if account.disabled || account.role != current.role {
            // A changed role takes effect at once for API tokens; sessions are re-checked on
            // every request too, but a demotion or a disablement should also end them.
            sessions::revoke_all(self.store(), username, None)?;
        }
        Ok(account)
    }

    /// Holds the lock that serialises changes to administrators and roles.
    fn serialise_administration(&self) -> std::sync::MutexGuard<'_, ()> {
        self.administration
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn reset_password(
        &self,
        username: &str,
        new_password: &str,
        now: OffsetDateTime,
    ) -> Result<Account, IamError> {
        let _serial = self.serialise_administration();
        let current = accounts::get(self.store(), username)?.ok_or(IamError::NotFound)?;
        if current.source != AccountSource::Local {
            return Err(IamError::Conflict(
                "this account's password is kept by the directory".into(),
            ));
        }
        self.unlock(username);
        password::check_policy(
            new_password,
            self.settings.min_password_chars,
            &[username, &current.display_name],
        )?;
        let phc = password::hash(new_password)?;
        let account = self.update_account(username, &|a| {
            a.password_hash = Some(phc.clone());
            a.must_change_password = true;
            a.password_changed_at = Some(now);
            Ok(())
        })?;
        sessions::revoke_all(self.store(), username, None)?;
        Ok(account)
    }

    /// Removes an administrator's second factor (lost phone): they enrol again at next
    /// sign-in.
    pub fn reset_mfa(&self, username: &str) -> Result<Account, IamError> {
        let _serial = self.serialise_administration();
        let account = self.update_account(username, &|a| {
            a.totp = None;
            a.pending_totp = None;
            a.recovery_codes.clear();
            Ok(())
        })?;
        sessions::revoke_all(self.store(), username, None)?;
        Ok(account)
    }

    /// Removes an administrator; their sessions end and the API tokens they made are revoked
    /// (so a later account of the same name does not inherit them).
    pub fn delete_account(&self, username: &str, now: OffsetDateTime) -> Result<Account, IamError> {
        let _serial = self.serialise_administration();
        let current = accounts::get(self.store(), username)?.ok_or(IamError::NotFound)?;
        if current.role == BuiltinRole::Owner.name() && !current.disabled {
            self.keep_an_owner(username, false)?;
        }
        // Tokens first: if revoking fails, the account is still there and nothing is left
        // for a later account of the same name to inherit.
        for token in api_tokens::list(self.store())? {
            if token.revoked_at.is_none() && token.created_by.as_deref() == Some(username) {
                api_tokens::revoke(self.store(), &token.id, now).map_err(|e| match e {
                    api_tokens::ApiTokenError::Store(s) => IamError::Store(s),
                    other => IamError::Conflict(other.to_string()),
                })?;
            }
        }
        self.store().delete(Tree::Administrators, username.as_bytes())?;
        sessions::revoke_all(self.store(), username, None)?;
        Ok(current)
    }

    pub fn save_role(
        &self,
        name: &str,
        description: &str,
        permissions: PermissionSet,
        create: bool,
        now: OffsetDateTime,
    ) -> Result<CustomRole, IamError> {
        let _serial = self.serialise_administration();
        if !accounts::valid_role_name(name) {
            return Err(IamError::BadRequest(
                "a role name is 1 to 64 lower-case letters, digits, '_' or '-'".into(),
            ));
        }
        if BuiltinRole::parse(name).is_some() {
            return Err(IamError::Conflict(format!("{name} is a built-in role")));
        }
        if permissions.is_empty() {
            return Err(IamError::BadRequest(
                "a role needs at least one permission".into(),
            ));
        }
        let description: String = description
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let existing = accounts::get_role(self.store(), name)?;
        let role = match (existing, create) {
            (Some(_), true) => return Err(IamError::Conflict(format!("a role named {name} exists"))),
            (None, false) => return Err(IamError::NotFound),
            (Some(old), false) => CustomRole {
                description,
                permissions,
                updated_at: now,
                ..old
            },
            (None, true) => CustomRole {
                name: name.to_owned(),
                description,
                permissions,
                created_at: now,
                updated_at: now,
            },
        };
        self.store().put(Tree::Roles, name.as_bytes(), &encode(&role)?)?;
        Ok(role)
    }

    pub fn delete_role(&self, name: &str) -> Result<CustomRole, IamError> {
        let _serial = self.serialise_administration();
        let role = accounts::get_role(self.store(), name)?.ok_or(IamError::NotFound)?;
        let users: Vec<String> = accounts::list(self.store())?
            .into_iter()
            .filter(|a| a.role == name)
            .map(|a| a.username)
            .collect();
        if !users.is_empty() {
            return Err(IamError::Conflict(format!(
                "the role is held by {}; give them another role first",
                users.join(", ")
            )));
        }
        let tokens = api_tokens::list(self.store())?
            .into_iter()
            .filter(|t| t.revoked_at.is_none() && t.role.as_deref() == Some(name))
            .count();
        if tokens > 0 {
            return Err(IamError::Conflict(format!(
                "{tokens} API token(s) act with this role; revoke them first"
            )));
        }
        self.store().delete(Tree::Roles, name.as_bytes())?;
        Ok(role)
    }
}

/// The account name a sign-in names: trimmed, lower-case, without control characters, at
/// most 64 characters (and whether it was longer, which no account can be).
pub fn typed_name(typed: &str) -> (String, bool) {
    let clean: String = accounts::normalise_username(typed)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let too_long = clean.chars().count() > 64;
    (clean.chars().take(64).collect(), too_long)
}

fn clean_display_name(name: &str, username: &str) -> Result<String, IamError> {
    let name = name.trim();
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(IamError::BadRequest(
            "a display name is at most 100 printable characters".into(),
        ));
    }
    Ok(if name.is_empty() {
        username.to_owned()
    } else {
        name.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 09:00 UTC);
    const PASSWORD: &str = "violet tram orbits the quay";

    fn settings() -> IamSettings {
        IamSettings {
            min_password_chars: 12,
            require_mfa: true,
            sessions: SessionPolicy {
                idle: time::Duration::minutes(30),
                absolute: time::Duration::hours(12),
                fresh: time::Duration::minutes(5),
            },
            throttle: ThrottlePolicy {
                account_failures: 3,
                source_failures: 10,
                window: time::Duration::minutes(15),
                lockout: time::Duration::minutes(15),
            },
            issuer: "Citadel (Test)".into(),
        }
    }

    fn ctx() -> ClientContext {
        ClientContext {
            source: Some("192.0.2.9".into()),
            user_agent: None,
        }
    }

    struct TestSealer(citadel_certs::seal::DataKey);

    impl Sealer for TestSealer {
        fn seal(&self, secret: &[u8], context: &str) -> Result<String, String> {
            self.0.seal(secret, context.as_bytes()).map_err(|e| e.to_string())
        }
        fn open(&self, sealed: &str, context: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
            self.0.open(sealed, context.as_bytes())
        }
    }

    fn set_up() -> (IamService, String) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let sealer = Arc::new(TestSealer(citadel_certs::seal::DataKey::generate().unwrap().0));
        let secret = match bootstrap::ensure(store.as_ref(), None, NOW).unwrap() {
            bootstrap::BootstrapOutcome::Generated(s) => s,
            other => panic!("{other:?}"),
        };
        (IamService::new(store, sealer, settings()), secret)
    }

    fn enrol(iam: &IamService, user: &str, at: OffsetDateTime) -> (Vec<u8>, Vec<String>) {
        let e = iam.begin_totp(user, at).unwrap();
        assert!(e.otpauth_uri.contains(&e.secret));
        let secret = data_encoding::BASE32_NOPAD.decode(e.secret.as_bytes()).unwrap();
        let codes = iam
            .confirm_totp(user, &totp::code_at(&secret, at).unwrap(), at)
            .unwrap();
        (secret, codes)
    }

    #[test]
    fn bootstrap_creates_one_owner_who_must_enrol_mfa() {
        let (iam, secret) = set_up();
        assert!(matches!(
            iam.setup("wrong", "alice", "Alice", PASSWORD, &ctx(), NOW),
            Err(IamError::InvalidCredentials {
                reason: FailureReason::WrongBootstrapSecret,
                ..
            })
        ));
        assert!(matches!(
            iam.setup(&secret, "alice", "Alice", "password1234", &ctx(), NOW),
            Err(IamError::Password(_))
        ));
        let first = iam
            .setup(&secret, "Alice", "Alice", PASSWORD, &ctx(), NOW)
            .unwrap();
        assert_eq!(first.account.username, "alice");
        assert_eq!(first.account.role, "owner");
        assert_eq!(first.session.record.pending, vec![PendingStep::MfaEnrolment]);
        // The secret is void now.
        assert!(iam.setup(&secret, "mallory", "M", PASSWORD, &ctx(), NOW).is_err());
        assert_eq!(accounts::list(iam.store()).unwrap().len(), 1);
    }

    #[test]
    fn login_requires_the_second_factor_once_enrolled_and_never_accepts_a_code_twice() {
        let (iam, secret) = set_up();
        iam.setup(&secret, "alice", "", PASSWORD, &ctx(), NOW).unwrap();
        let (totp_secret, recovery) = enrol(&iam, "alice", NOW);
        assert_eq!(recovery.len(), totp::RECOVERY_CODES);
        let later = NOW + time::Duration::minutes(1);
        let code = totp::code_at(&totp_secret, later).unwrap();
        assert!(matches!(
            iam.login("alice", PASSWORD, None, &ctx(), later),
            Err(IamError::InvalidCredentials {
                reason: FailureReason::MissingCode,
                ..
            })
        ));
        let ok = iam.login("alice", PASSWORD, Some(&code), &ctx(), later).unwrap();
        assert!(ok.session.record.pending.is_empty());
        assert!(matches!(
            iam.login("alice", PASSWORD, Some(&code), &ctx(), later),
            Err(IamError::InvalidCredentials {
                reason: FailureReason::WrongCode,
                ..
            })
        ));
        // A recovery code works once.
        let r = iam
            .login("alice", PASSWORD, Some(&recovery[0]), &ctx(), later)
            .unwrap();
        assert!(r.used_recovery_code);
        assert_eq!(r.account.recovery_codes.len(), totp::RECOVERY_CODES - 1);
        assert!(
            iam.login("alice", PASSWORD, Some(&recovery[0]), &ctx(), later)
                .is_err()
        );
    }

    #[test]
    fn totp_secrets_are_sealed_to_their_account() {
        let (iam, secret) = set_up();
        iam.setup(&secret, "alice", "", PASSWORD, &ctx(), NOW).unwrap();
        let (totp_secret, _) = enrol(&iam, "alice", NOW);
        let stored = iam.store().get(Tree::Administrators, b"alice").unwrap().unwrap();
        let text = String::from_utf8_lossy(&stored);
        assert!(
            !text.contains(&data_encoding::BASE32_NOPAD.encode(&totp_secret)),
            "{text}"
        );
        // Moved to another account, the sealed secret no longer opens: no code is accepted.
        let mut alice = accounts::get(iam.store(), "alice").unwrap().unwrap();
        alice.username = "mallory".into();
        accounts::put(iam.store(), &alice).unwrap();
        let later = NOW + time::Duration::minutes(2);
        let code = totp::code_at(&totp_secret, later).unwrap();
        assert!(
            iam.login("mallory", PASSWORD, Some(&code), &ctx(), later)
                .is_err()
        );
        assert!(iam.login("alice", PASSWORD, Some(&code), &ctx(), later).is_ok());
    }

    #[test]
    fn lockout_after_repeated_failures_even_with_the_right_password() {
        let (iam, secret) = set_up();
        iam.setup(&secret, "alice", "", PASSWORD, &ctx(), NOW).unwrap();
        for _ in 0..2 {
            assert!(matches!(
                iam.login("alice", "wrong password!", None, &ctx(), NOW),
                Err(IamError::InvalidCredentials {
                    locked_until: None,
                    ..
                })
            ));
        }
        assert!(matches!(
            iam.login("alice", "wrong password!", None, &ctx(), NOW),
            Err(IamError::InvalidCredentials {
                locked_until: Some(_),
                ..
            })
        ));
        assert!(matches!(
            iam.login("alice", PASSWORD, None, &ctx(), NOW),
            Err(IamError::Throttled { .. })
        ));
        // Unknown names lock the same way, so lockouts reveal nothing.
        for _ in 0..3 {
            let _ = iam.login("nobody", "x", None, &ctx(), NOW);
        }
        assert!(matches!(
            iam.login("nobody", "x", None, &ctx(), NOW),
            Err(IamError::Throttled { .. })
        ));
        let after = NOW + time::Duration::minutes(16);
        assert!(iam.login("alice", PASSWORD, None, &ctx(), after).is_ok());
    }

    #[test]
    fn new_accounts_change_their_password_and_an_owner_always_remains() {
        let (iam, secret) = set_up();
        iam.setup(&secret, "alice", "", PASSWORD, &ctx(), NOW).unwrap();
        let bob = iam
            .create_account(
                NewAccount {
                    username: "bob".into(),
                    display_name: "Bob".into(),
                    role: "help_desk".into(),
                    password: "initial secret for bob 42".into(),
                },
                NOW,
            )
            .unwrap();
        assert!(bob.must_change_password);
        let s = iam
            .login("bob", "initial secret for bob 42", None, &ctx(), NOW)
            .unwrap();
        assert_eq!(
            s.session.record.pending,
            vec![PendingStep::MfaEnrolment, PendingStep::PasswordChange]
        );
        iam.change_password(
            &s.session.record,
            "initial secret for bob 42",
            "bob's own quiet harbour",
            &ctx(),
            NOW,
        )
        .unwrap();
        assert!(
            !accounts::get(iam.store(), "bob")
                .unwrap()
                .unwrap()
                .must_change_password
        );
        assert!(matches!(
            iam.update_account_by_admin(
                "alice",
                AccountPatch {
                    role: Some("auditor".into()),
                    ..Default::default()
                }
            ),
            Err(IamError::Conflict(_))
        ));
        assert!(matches!(
            iam.delete_account("alice", NOW),
            Err(IamError::Conflict(_))
        ));
        iam.update_account_by_admin(
            "bob",
            AccountPatch {
                role: Some("owner".into()),
                ..Default::default()
            },
        )
        .unwrap();
        iam.delete_account("alice", NOW).unwrap();
        assert!(matches!(
            iam.update_account_by_admin(
                "bob",
                AccountPatch {
                    role: Some("nonexistent".into()),
                    ..Default::default()
                }
            ),
            Err(IamError::BadRequest(_))
        ));
    }

    #[test]
    fn custom_roles_cannot_shadow_builtins_or_vanish_under_their_holders() {
        use crate::iam::permissions::Permission;
        let (iam, _) = set_up();
        let perms: PermissionSet = [Permission::DevicesRead, Permission::DevicesLock]
            .into_iter()
            .collect();
        assert!(matches!(
            iam.save_role("owner", "", perms.clone(), true, NOW),
            Err(IamError::Conflict(_))
        ));
        iam.save_role("night-shift", "Nights", perms.clone(), true, NOW)
            .unwrap();
        iam.create_account(
            NewAccount {
                username: "carol".into(),
                display_name: String::new(),
                role: "night-shift".into(),
                password: "carol keeps the night watch".into(),
            },
            NOW,
        )
        .unwrap();
        assert!(matches!(
            iam.delete_role("night-shift"),
            Err(IamError::Conflict(_))
        ));
        let carol = accounts::get(iam.store(), "carol").unwrap().unwrap();
        assert_eq!(accounts::account_permissions(iam.store(), &carol).unwrap(), perms);
    }
}
