//! Admin API tokens: `Authorization: Bearer <token>`.
//!
//! A token is 256 random bits shown once at creation; the store keeps only its SHA-256, so a
//! copy of the store does not hand out admin access. Tokens are named, may expire, can be
//! revoked, and record when they were last used.
//!
//! A token is scoped to a role (and follows later changes to it) or to a list of permissions.
//! A token made by an administrator never grants more than that administrator can do now: it
//! stops working when they are disabled or removed, and narrows with their role.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::accounts;
use super::permissions::PermissionSet;
use crate::store::{Store, StoreError, StoreExt, Tree, decode, encode, scan_all};

/// Tokens start with this so that secret scanners and humans recognise them.
const PREFIX: &str = "citadel_";
/// Writing `last_used_at` on every request would turn each API read into a store write; once a
/// minute is precise enough for "when was this token last used".
const LAST_USED_GRANULARITY: time::Duration = time::Duration::minutes(1);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    /// Public identifier: the first 12 hex digits of the token's SHA-256.
    pub id: String,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
    /// The role the token acts with; `None` when scoped to `permissions`.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub permissions: Option<PermissionSet>,
    /// The administrator who made it; `None` for tokens made at the appliance's command line.
    #[serde(default)]
    pub created_by: Option<String>,
}

impl ApiTokenRecord {
    /// The scope in words, for logs and audit records: `role auditor`, `devices.read devices.lock`.
    pub fn scope_description(&self) -> String {
        match (&self.role, &self.permissions) {
            (Some(role), _) => format!("role {role}"),
            (None, Some(set)) => set.iter().map(|p| p.name()).collect::<Vec<_>>().join(" "),
            (None, None) => "no permissions".to_owned(),
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    Role(String),
    Permissions(PermissionSet),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    #[error("a token name must be 1 to 64 printable characters")]
    BadName,
    #[error("no API token with id {0}")]
    NotFound(String),
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("a token must be given at least one permission")]
    EmptyScope,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token; returns the secret (to show once) and its record.
pub fn create(
    store: &dyn Store,
    name: &str,
    scope: TokenScope,
    created_by: Option<&str>,
    ttl: Option<time::Duration>,
    now: OffsetDateTime,
) -> Result<(String, ApiTokenRecord), ApiTokenError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiTokenError::BadName);
    }
    let (role, permissions) = match scope {
        TokenScope::Role(role) => {
            if accounts::role_permissions(store, &role)?.is_none() {
                return Err(ApiTokenError::UnknownRole(role));
            }
            (Some(role), None)
        }
        TokenScope::Permissions(set) if set.is_empty() => return Err(ApiTokenError::EmptyScope),
        TokenScope::Permissions(set) => (None, Some(set)),
    };
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "{PREFIX}{}",
        data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase()
    );
    let hash = digest(&token);
    let record = ApiTokenRecord {
        id: hex::encode(&hash[..6]),
        name: name.to_owned(),
        created_at: now,
        expires_at: ttl.map(|t| now + t),
        last_used_at: None,
        revoked_at: None,
        role,
        permissions,
        created_by: created_by.map(str::to_owned),
    };
    store.put_record(Tree::ApiTokens, &hash, &record)?;
    Ok((token, record))
}

/// What `record` may do now: its scope, narrowed to its creator's current permissions.
pub fn effective_permissions(
    store: &dyn Store,
    record: &ApiTokenRecord,
) -> Result<PermissionSet, StoreError> {
    let scope = match (&record.role, &record.permissions) {
        (Some(role), _) => accounts::role_permissions(store, role)?.unwrap_or_default(),
        (None, Some(set)) => set.clone(),
        (None, None) => PermissionSet::none(),
    };
    let Some(creator) = &record.created_by else {
        return Ok(scope);
    };
    match accounts::get(store, creator)? {
        Some(account) => Ok(scope.intersection(&accounts::account_permissions(store, &account)?)),
        None => Ok(PermissionSet::none()),
    }
}

/// The token's record when it is known, unexpired and unrevoked at `now`.
pub fn verify(
    store: &dyn Store,
    token: &str,
    now: OffsetDateTime,
) -> Result<Option<ApiTokenRecord>, StoreError> {
    if !token.starts_with(PREFIX) || token.len() > 128 {
        return Ok(None);
    }
    let hash = digest(token);
    let Some(mut record) = store.get_record::<ApiTokenRecord>(Tree::ApiTokens, &hash)? else {
        return Ok(None);
    };
    if record.revoked_at.is_some() || record.expires_at.is_some_and(|e| e <= now) {
        return Ok(None);
    }
    let stale = record
        .last_used_at
        .is_none_or(|used| now - used >= LAST_USED_GRANULARITY);
    if stale {
        // Re-read inside the transaction and touch only `last_used_at`, so a revocation that
        // lands meanwhile is never written over.
        store.transaction(&|txn| {
            let Some(bytes) = txn.get(Tree::ApiTokens, &hash)? else {
                return Ok(());
            };
            let mut current: ApiTokenRecord = decode(Tree::ApiTokens, &hash, &bytes)?;
            current.last_used_at = Some(now);
            txn.put(Tree::ApiTokens, &hash, &encode(&current)?)
        })?;
        record.last_used_at = Some(now);
    }
    Ok(Some(record))
}

pub fn list(store: &dyn Store) -> Result<Vec<ApiTokenRecord>, StoreError> {
    let mut out = Vec::new();
    for (key, value) in scan_all(store, Tree::ApiTokens, b"")? {
        out.push(crate::store::decode::<ApiTokenRecord>(
            Tree::ApiTokens,
            &key,
            &value,
        )?);
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Revokes the token with public id `id`; revoking twice is not an error.
pub fn revoke(store: &dyn Store, id: &str, now: OffsetDateTime) -> Result<ApiTokenRecord, ApiTokenError> {
    for (key, value) in scan_all(store, Tree::ApiTokens, b"")? {
        let mut record = crate::store::decode::<ApiTokenRecord>(Tree::ApiTokens, &key, &value)?;
        if record.id == id {
            if record.revoked_at.is_none() {
                record.revoked_at = Some(now);
                store.put_record(Tree::ApiTokens, &key, &record)?;
            }
            return Ok(record);
        }
    }
    Err(ApiTokenError::NotFound(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn owner() -> TokenScope {
        TokenScope::Role("owner".into())
    }

    #[test]
    fn create_verify_expire_revoke() {
        let store = MemoryStore::new();
        let (token, record) =
            create(&store, "ci", owner(), None, Some(time::Duration::days(1)), NOW).unwrap();
        assert!(token.starts_with("citadel_"));
        assert_eq!(verify(&store, &token, NOW).unwrap().unwrap().id, record.id);
        assert_eq!(verify(&store, "citadel_nope", NOW).unwrap(), None);
        assert_eq!(verify(&store, &format!("{token}x"), NOW).unwrap(), None);
        // Only the hash is stored.
        let stored = scan_all(&store, Tree::ApiTokens, b"").unwrap();
        assert!(!String::from_utf8_lossy(&stored[0].1).contains(&token));
        assert_eq!(
            list(&store).unwrap()[0].last_used_at,
            Some(NOW),
            "last use recorded"
        );
        assert_eq!(
            verify(&store, &token, NOW + time::Duration::days(1)).unwrap(),
            None
        );
        let (other, rec2) = create(&store, "script", owner(), None, None, NOW).unwrap();
        revoke(&store, &rec2.id, NOW).unwrap();
        assert_eq!(verify(&store, &other, NOW).unwrap(), None);
        assert!(matches!(
            revoke(&store, "ffff", NOW),
            Err(ApiTokenError::NotFound(_))
        ));
        assert!(matches!(
            create(&store, " ", owner(), None, None, NOW),
            Err(ApiTokenError::BadName)
        ));
    }

    #[test]
    fn scopes_follow_roles_and_never_exceed_the_creator() {
        use crate::iam::accounts::{Account, AccountSource};
        use crate::iam::permissions::Permission;
        let store = MemoryStore::new();
        assert!(matches!(
            create(&store, "x", TokenScope::Role("nope".into()), None, None, NOW),
            Err(ApiTokenError::UnknownRole(_))
        ));
        assert!(matches!(
            create(
                &store,
                "x",
                TokenScope::Permissions(PermissionSet::none()),
                None,
                None,
                NOW
            ),
            Err(ApiTokenError::EmptyScope)
        ));
        let mut alice = Account {
            username: "alice".into(),
            display_name: "Alice".into(),
            role: "help_desk".into(),
            source: AccountSource::Local,
            password_hash: None,
            totp: None,
            pending_totp: None,
            recovery_codes: vec![],
            must_change_password: false,
            disabled: false,
            created_at: NOW,
            password_changed_at: None,
            last_login_at: None,
        };
        accounts::put(&store, &alice).unwrap();
        let wide: PermissionSet = [Permission::DevicesRead, Permission::DevicesErase]
            .into_iter()
            .collect();
        let (_, token) = create(
            &store,
            "x",
            TokenScope::Permissions(wide),
            Some("alice"),
            None,
            NOW,
        )
        .unwrap();
        let eff = effective_permissions(&store, &token).unwrap();
        assert!(eff.contains(Permission::DevicesRead));
        assert!(!eff.contains(Permission::DevicesErase), "help desk cannot erase");
        alice.disabled = true;
        accounts::put(&store, &alice).unwrap();
        assert!(effective_permissions(&store, &token).unwrap().is_empty());
        let (_, cli) = create(&store, "y", TokenScope::Role("auditor".into()), None, None, NOW).unwrap();
        assert_eq!(
            effective_permissions(&store, &cli).unwrap(),
            crate::iam::permissions::BuiltinRole::Auditor.permissions()
        );
    }
}
