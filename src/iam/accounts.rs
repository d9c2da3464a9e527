//! Administrator accounts and custom roles, as stored.
//!
//! An account is local (Argon2id password) or from the directory (LDAP bind; no password
//! here). Either way the second factor is Citadel's own TOTP. The record holds secrets (the
//! password hash, the TOTP secret, recovery-code hashes); what the API shows is
//! [`AccountView`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::permissions::{BuiltinRole, PermissionSet};
use crate::store::{Store, StoreError, StoreExt, Tree, decode, scan_all};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AccountSource {
    Local,
    /// Provisioned at first directory sign-in; the role follows the directory's groups.
    Directory {
        dn: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpState {
    /// The secret, sealed with the appliance's data key for this account (`Pki::seal`): a copy
    /// of the store does not hand out second factors.
    pub sealed_secret: String,
    /// False until the administrator has proven the authenticator works with one code.
    pub confirmed: bool,
    /// Step of the last accepted code; a code is never accepted twice.
    #[serde(default)]
    pub last_step: Option<u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub display_name: String,
    /// A built-in role's name or a custom role's.
    pub role: String,
    pub source: AccountSource,
    /// PHC string; `None` for directory accounts.
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub totp: Option<TotpState>,
    /// A TOTP secret being set up; replaces `totp` once confirmed with a code.
    #[serde(default)]
    pub pending_totp: Option<TotpState>,
    /// SHA-256 of each unused recovery code.
    #[serde(default)]
    pub recovery_codes: Vec<String>,
    /// Set when someone else chose the password (creation, reset): the next sign-in must
    /// replace it before doing anything else.
    #[serde(default)]
    pub must_change_password: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub password_changed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_login_at: Option<OffsetDateTime>,
}

impl Account {
    pub fn mfa_enrolled(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.confirmed)
    }

    pub fn view(&self) -> AccountView {
        AccountView {
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            role: self.role.clone(),
            source: match &self.source {
                AccountSource::Local => "local",
                AccountSource::Directory { .. } => "directory",
            },
            mfa_enrolled: self.mfa_enrolled(),
            recovery_codes_left: self.recovery_codes.len(),
            must_change_password: self.must_change_password,
            disabled: self.disabled,
            created_at: self.created_at,
            password_changed_at: self.password_changed_at,
            last_login_at: self.last_login_at,
        }
    }
}

/// An account as the API shows it: no hashes, no secrets.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub source: &'static str,
    pub mfa_enrolled: bool,
    pub recovery_codes_left: usize,
    pub must_change_password: bool,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub password_changed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
}

/// A role built by the site from permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRole {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: PermissionSet,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// User names: what directories and people use, minus anything that would need escaping in
/// a URL path, a log line or an otpauth label.
pub fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        && !name.starts_with(['.', '-'])
}

pub fn valid_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// Folds what people type into the stored form (`Alice ` → `alice`).
pub fn normalise_username(name: &str) -> String {
    name.trim().to_lowercase()
}

pub fn get(store: &dyn Store, username: &str) -> Result<Option<Account>, StoreError> {
    store.get_record(Tree::Administrators, username.as_bytes())
}

pub fn put(store: &dyn Store, account: &Account) -> Result<(), StoreError> {
    store.put_record(Tree::Administrators, account.username.as_bytes(), account)
}

pub fn list(store: &dyn Store) -> Result<Vec<Account>, StoreError> {
    scan_all(store, Tree::Administrators, b"")?
        .into_iter()
        .map(|(k, v)| decode(Tree::Administrators, &k, &v))
        .collect()
}

pub fn any_exist(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(!store.scan_prefix(Tree::Administrators, b"", None, 1)?.is_empty())
}

pub fn get_role(store: &dyn Store, name: &str) -> Result<Option<CustomRole>, StoreError> {
    store.get_record(Tree::Roles, name.as_bytes())
}

pub fn list_roles(store: &dyn Store) -> Result<Vec<CustomRole>, StoreError> {
    scan_all(store, Tree::Roles, b"")?
        .into_iter()
        .map(|(k, v)| decode(Tree::Roles, &k, &v))
        .collect()
}

/// The permissions of the role called `name`, built-in or custom; `None` for an unknown role
/// (which grants nothing).
pub fn role_permissions(store: &dyn Store, name: &str) -> Result<Option<PermissionSet>, StoreError> {
    if let Some(builtin) = BuiltinRole::parse(name) {
        return Ok(Some(builtin.permissions()));
    }
    Ok(get_role(store, name)?.map(|r| r.permissions))
}

/// What an account may do now: nothing when disabled.
pub fn account_permissions(store: &dyn Store, account: &Account) -> Result<PermissionSet, StoreError> {
    if account.disabled {
        return Ok(PermissionSet::none());
    }
    Ok(role_permissions(store, &account.role)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_role_names() {
        for ok in ["alice", "a.b-c_d", "j.doe@example.org", "x1"] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in ["", "Alice", "a b", "a/b", "a:b", ".hidden", "-x", &"a".repeat(65)] {
            assert!(!valid_username(bad), "{bad}");
        }
        assert_eq!(normalise_username("  Alice "), "alice");
        assert!(valid_role_name("night-shift_2"));
        assert!(!valid_role_name("Night shift"));
    }
}
