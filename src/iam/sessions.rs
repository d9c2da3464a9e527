//! Console sessions.
//!
//! A session token is 256 random bits, sent only as a `__Host-` cookie (Secure, HttpOnly,
//! SameSite=Strict); the store keys the session by the token's SHA-256, so a copy of the store
//! holds no usable session. Each session has its own CSRF token, an idle and an absolute
//! timeout, and the time its holder last proved their credentials (for actions that need a
//! fresh sign-in). A new session — never the one the browser arrived with — is made at every
//! sign-in and every change of privilege, so a planted cookie cannot be promoted.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::store::{Store, StoreError, StoreExt, Tree, decode, encode, scan_all};

pub const COOKIE: &str = "__Host-citadel_session";
/// The self-service portal's session cookie (end users, never administrators).
pub const PORTAL_COOKIE: &str = "__Host-citadel_portal";

/// Whose session: an administrator's (console, API) or an end user's (portal). A session of
/// one realm is never accepted by the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Realm {
    #[default]
    Admin,
    Portal,
}
/// `last_seen_at` is written at most this often: precise enough for an idle timeout counted in
/// minutes, without a store write per request.
const TOUCH_GRANULARITY: Duration = Duration::minutes(1);
/// Tokens longer than this are not looked up.
const MAX_TOKEN_CHARS: usize = 128;

/// A step the holder must finish before the session grants anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingStep {
    /// Set up TOTP (MFA is required and the account has none yet).
    MfaEnrolment,
    /// Replace a password someone else chose.
    PasswordChange,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Public identifier (for listing and revoking): a prefix of the token's hash.
    pub id: String,
    pub username: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    /// When the holder last entered their password (and code).
    #[serde(with = "time::serde::rfc3339")]
    pub authenticated_at: OffsetDateTime,
    pub source: Option<String>,
    pub user_agent: Option<String>,
    pub csrf_token: String,
    #[serde(default)]
    pub pending: Vec<PendingStep>,
    #[serde(default)]
    pub realm: Realm,
}

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub absolute: Duration,
    /// How recent a sign-in must be for destructive actions.
    pub fresh: Duration,
}

impl SessionPolicy {
    pub fn expires_at(&self, s: &SessionRecord) -> OffsetDateTime {
        (s.last_seen_at + self.idle).min(s.created_at + self.absolute)
    }

    pub fn fresh_until(&self, s: &SessionRecord) -> OffsetDateTime {
        s.authenticated_at + self.fresh
    }
}

/// A session as its holder sees it in the list of their sessions.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub source: Option<String>,
    pub user_agent: Option<String>,
    pub current: bool,
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase()
}

/// What the client receives once: the cookie value and the CSRF token.
#[derive(Debug)]
pub struct NewSession {
    pub token: String,
    pub record: SessionRecord,
}

pub struct SessionStart<'a> {
    pub username: &'a str,
    pub realm: Realm,
    /// When the sign-in this session continues began (a rotated session keeps its absolute
    /// timeout); `None` for a new sign-in.
    pub continues_from: Option<OffsetDateTime>,
    pub authenticated_at: OffsetDateTime,
    pub source: Option<String>,
    pub user_agent: Option<String>,
    pub pending: Vec<PendingStep>,
}

pub fn create(
    store: &dyn Store,
    start: SessionStart<'_>,
    now: OffsetDateTime,
) -> Result<NewSession, StoreError> {
    let token = random_token();
    let hash = digest(&token);
    let record = SessionRecord {
        id: hex::encode(&hash[..8]),
        username: start.username.to_owned(),
        created_at: start.continues_from.unwrap_or(now),
        last_seen_at: now,
        authenticated_at: start.authenticated_at,
        source: start.source,
        user_agent: start
            .user_agent
            .map(|ua| ua.chars().filter(|c| !c.is_control()).take(200).collect()),
        csrf_token: random_token(),
        pending: start.pending,
        realm: start.realm,
    };
    store.put_record(Tree::Sessions, &hash, &record)?;
    Ok(NewSession { token, record })
}

/// The live session for `token`, touched; expired sessions are deleted on sight.
pub fn lookup(
    store: &dyn Store,
    policy: &SessionPolicy,
    token: &str,
    now: OffsetDateTime,
) -> Result<Option<SessionRecord>, StoreError> {
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
        return Ok(None);
    }
    let hash = digest(token);
    let Some(mut record) = store.get_record::<SessionRecord>(Tree::Sessions, &hash)? else {
        return Ok(None);
    };
    if policy.expires_at(&record) <= now {
        store.delete(Tree::Sessions, &hash)?;
        return Ok(None);
    }
    if now - record.last_seen_at >= TOUCH_GRANULARITY {
        // Touch inside a transaction that re-reads the session: one ended meanwhile (sign-out,
        // revocation, rotation) stays ended.
        let touched = std::cell::Cell::new(false);
        store.transaction(&|txn| {
            touched.set(false);
            let Some(bytes) = txn.get(Tree::Sessions, &hash)? else {
                return Ok(());
            };
            let mut current: SessionRecord = decode(Tree::Sessions, &hash, &bytes)?;
            current.last_seen_at = now;
            txn.put(Tree::Sessions, &hash, &encode(&current)?)?;
            touched.set(true);
            Ok(())
        })?;
        if !touched.get() {
            return Ok(None);
        }
        record.last_seen_at = now;
    }
    Ok(Some(record))
}

/// Ends the session for `token`; returns it when it existed.
pub fn end(store: &dyn Store, token: &str) -> Result<Option<SessionRecord>, StoreError> {
    let hash = digest(token);
    let record = store.get_record::<SessionRecord>(Tree::Sessions, &hash)?;
    store.delete(Tree::Sessions, &hash)?;
    Ok(record)
}

/// Every session of `username` in `realm`, live or not yet swept. (An administrator and an
/// end user may share a name and still be two people.)
pub fn of_user(
    store: &dyn Store,
    username: &str,
    realm: Realm,
) -> Result<Vec<(Vec<u8>, SessionRecord)>, StoreError> {
    let mut out = Vec::new();
    for (key, value) in scan_all(store, Tree::Sessions, b"")? {
        let record: SessionRecord = decode(Tree::Sessions, &key, &value)?;
        if record.username == username && record.realm == realm {
            out.push((key, record));
        }
    }
    Ok(out)
}

/// Ends administrator `username`'s session with public id `id`; false when they have none such.
pub fn revoke(store: &dyn Store, username: &str, id: &str) -> Result<bool, StoreError> {
    for (key, record) in of_user(store, username, Realm::Admin)? {
        if record.id == id {
            store.delete(Tree::Sessions, &key)?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Ends every session of administrator `username` except `keep` (a public id); returns how
/// many ended.
pub fn revoke_all(store: &dyn Store, username: &str, keep: Option<&str>) -> Result<usize, StoreError> {
    let mut n = 0;
    for (key, record) in of_user(store, username, Realm::Admin)? {
        if keep != Some(record.id.as_str()) {
            store.delete(Tree::Sessions, &key)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Ends every session of `username` in `realm`; returns how many ended.
pub fn revoke_all_in(store: &dyn Store, username: &str, realm: Realm) -> Result<usize, StoreError> {
    let mut n = 0;
    for (key, _) in of_user(store, username, realm)? {
        store.delete(Tree::Sessions, &key)?;
        n += 1;
    }
    Ok(n)
}

/// Deletes expired sessions; run at sign-in so abandoned sessions do not pile up.
pub fn sweep(store: &dyn Store, policy: &SessionPolicy, now: OffsetDateTime) -> Result<usize, StoreError> {
    let mut n = 0;
    for (key, value) in scan_all(store, Tree::Sessions, b"")? {
        let expired = match decode::<SessionRecord>(Tree::Sessions, &key, &value) {
            Ok(record) => policy.expires_at(&record) <= now,
            // An unreadable session grants nothing; drop it.
            Err(_) => true,
        };
        if expired {
            store.delete(Tree::Sessions, &key)?;
            n += 1;
        }
    }
    Ok(n)
}

pub fn view(policy: &SessionPolicy, record: &SessionRecord, current_id: Option<&str>) -> SessionView {
    SessionView {
        id: record.id.clone(),
        created_at: record.created_at,
        last_seen_at: record.last_seen_at,
        expires_at: policy.expires_at(record),
        source: record.source.clone(),
        user_agent: record.user_agent.clone(),
        current: current_id == Some(record.id.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 09:00 UTC);
    const POLICY: SessionPolicy = SessionPolicy {
        idle: Duration::minutes(30),
        absolute: Duration::hours(12),
        fresh: Duration::minutes(5),
    };

    fn start(store: &MemoryStore, user: &str) -> NewSession {
        create(
            store,
            SessionStart {
                username: user,
                realm: Realm::Admin,
                continues_from: None,
                authenticated_at: NOW,
                source: Some("192.0.2.1".into()),
                user_agent: Some("test\nagent".into()),
                pending: vec![],
            },
            NOW,
        )
        .unwrap()
    }

    #[test]
    fn idle_and_absolute_timeouts() {
        let store = MemoryStore::new();
        let s = start(&store, "alice");
        assert_eq!(s.record.user_agent.as_deref(), Some("testagent"));
        // Only the hash of the token is stored.
        let raw = scan_all(&store, Tree::Sessions, b"").unwrap();
        assert!(!String::from_utf8_lossy(&raw[0].1).contains(&s.token));
        assert!(!String::from_utf8_lossy(&raw[0].0).contains(&s.token));
        // Activity every 20 minutes keeps it alive until the absolute limit.
        let mut t = NOW;
        while t + Duration::minutes(20) < NOW + Duration::hours(12) {
            t += Duration::minutes(20);
            assert!(lookup(&store, &POLICY, &s.token, t).unwrap().is_some(), "{t}");
        }
        assert!(
            lookup(&store, &POLICY, &s.token, NOW + Duration::hours(12))
                .unwrap()
                .is_none()
        );
        // Gone from the store once seen expired.
        assert!(scan_all(&store, Tree::Sessions, b"").unwrap().is_empty());

        let s = start(&store, "alice");
        assert!(
            lookup(&store, &POLICY, &s.token, NOW + Duration::minutes(31))
                .unwrap()
                .is_none()
        );
        assert!(lookup(&store, &POLICY, "nonsense", NOW).unwrap().is_none());
    }

    #[test]
    fn list_revoke_and_sweep() {
        let store = MemoryStore::new();
        let a1 = start(&store, "alice");
        let a2 = start(&store, "alice");
        let b = start(&store, "bob");
        assert_eq!(of_user(&store, "alice", Realm::Admin).unwrap().len(), 2);
        assert!(
            !revoke(&store, "alice", &b.record.id).unwrap(),
            "not hers to revoke"
        );
        assert!(revoke(&store, "alice", &a2.record.id).unwrap());
        assert!(lookup(&store, &POLICY, &a2.token, NOW).unwrap().is_none());
        start(&store, "alice");
        assert_eq!(revoke_all(&store, "alice", Some(&a1.record.id)).unwrap(), 1);
        assert!(lookup(&store, &POLICY, &a1.token, NOW).unwrap().is_some());
        assert_eq!(sweep(&store, &POLICY, NOW + Duration::hours(1)).unwrap(), 2);
        assert!(lookup(&store, &POLICY, &b.token, NOW).unwrap().is_none());
    }
}
