//! The end-user self-service portal's records: people with a local portal password (directory
//! users need none here), which devices belong to whom, the one-time assignments that tie a
//! device enrolled from the portal to its user, and erase requests for administrators.
//!
//! A portal user sees and acts on their own devices only; everything else answers "not found",
//! so the portal does not reveal which devices exist.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::inventory::record::Ownership;
use crate::store::{Store, StoreError, StoreExt, Tree, WriteBatch, decode, encode, scan_all};

/// Assignments from a portal enrollment profile stay valid this long (the device must enrol
/// within it).
pub const ASSIGNMENT_TTL: time::Duration = time::Duration::days(7);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalUser {
    pub username: String,
    pub display_name: String,
    /// PHC string (Argon2id).
    pub password_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default)]
    pub disabled: bool,
}

/// A portal user as the admin API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct PortalUserView {
    pub username: String,
    pub display_name: String,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl PortalUser {
    pub fn view(&self) -> PortalUserView {
        PortalUserView {
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            disabled: self.disabled,
            created_at: self.created_at,
        }
    }
}

pub fn get_user(store: &dyn Store, username: &str) -> Result<Option<PortalUser>, StoreError> {
    store.get_record(Tree::PortalUsers, username.as_bytes())
}

pub fn put_user(store: &dyn Store, user: &PortalUser) -> Result<(), StoreError> {
    store.put_record(Tree::PortalUsers, user.username.as_bytes(), user)
}

pub fn list_users(store: &dyn Store) -> Result<Vec<PortalUser>, StoreError> {
    scan_all(store, Tree::PortalUsers, b"")?
        .iter()
        .map(|(k, v)| decode(Tree::PortalUsers, k, v))
        .collect()
}

pub fn delete_user(store: &dyn Store, username: &str) -> Result<bool, StoreError> {
    store.delete(Tree::PortalUsers, username.as_bytes())
}

fn user_device_key(username: &str, enrollment_id: &str) -> Vec<u8> {
    let mut key = username.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(enrollment_id.as_bytes());
    key
}

/// The user a device belongs to.
pub fn device_user(store: &dyn Store, enrollment_id: &str) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(Tree::DeviceUsers, enrollment_id.as_bytes())?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Makes `username` (or nobody) the person `enrollment_id` belongs to.
pub fn set_device_user(
    store: &dyn Store,
    enrollment_id: &str,
    username: Option<&str>,
) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    if let Some(previous) = device_user(store, enrollment_id)? {
        batch.delete(Tree::UserDevices, user_device_key(&previous, enrollment_id));
    }
    match username {
        Some(user) => {
            batch.put(
                Tree::DeviceUsers,
                enrollment_id.as_bytes().to_vec(),
                user.as_bytes().to_vec(),
            );
            batch.put(
                Tree::UserDevices,
                user_device_key(user, enrollment_id),
                Vec::new(),
            );
        }
        None => batch.delete(Tree::DeviceUsers, enrollment_id.as_bytes().to_vec()),
    }
    store.apply(batch)
}

/// The devices that belong to `username`.
pub fn devices_of(store: &dyn Store, username: &str) -> Result<Vec<String>, StoreError> {
    let mut prefix = username.as_bytes().to_vec();
    prefix.push(0);
    Ok(scan_all(store, Tree::UserDevices, &prefix)?
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect())
}

/// Whether `enrollment_id` belongs to `username`.
pub fn owns(store: &dyn Store, username: &str, enrollment_id: &str) -> Result<bool, StoreError> {
    Ok(store
        .get(Tree::UserDevices, &user_device_key(username, enrollment_id))?
        .is_some())
}

/// Who a device enrolled with a portal profile belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub username: String,
    pub ownership: Ownership,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

fn tag_key(tag: &str) -> Vec<u8> {
    Sha256::digest(tag.as_bytes()).to_vec()
}

/// A one-time tag for a profile's check-in URL; only its hash is stored.
pub fn create_assignment(
    store: &dyn Store,
    username: &str,
    ownership: Ownership,
    now: OffsetDateTime,
) -> Result<String, StoreError> {
    let bytes: [u8; 20] = rand::random();
    let tag = data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase();
    let assignment = Assignment {
        username: username.to_owned(),
        ownership,
        expires_at: now + ASSIGNMENT_TTL,
    };
    store.put_record(Tree::PortalAssignments, &tag_key(&tag), &assignment)?;
    Ok(tag)
}

/// Takes the assignment for `tag` (once); `None` if unknown, used or expired.
pub fn take_assignment(
    store: &dyn Store,
    tag: &str,
    now: OffsetDateTime,
) -> Result<Option<Assignment>, StoreError> {
    if tag.is_empty() || tag.len() > 64 {
        return Ok(None);
    }
    let key = tag_key(tag);
    let taken = std::cell::RefCell::new(None);
    store.transaction(&|txn| {
        *taken.borrow_mut() = None;
        let Some(bytes) = txn.get(Tree::PortalAssignments, &key)? else {
            return Ok(());
        };
        txn.delete(Tree::PortalAssignments, &key)?;
        let assignment: Assignment = decode(Tree::PortalAssignments, &key, &bytes)?;
        if assignment.expires_at > now {
            *taken.borrow_mut() = Some(assignment);
        }
        Ok(())
    })?;
    Ok(taken.into_inner())
}

/// A user's request that their lost device be erased, for an administrator to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseRequest {
    pub enrollment_id: String,
    pub username: String,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
}

pub fn request_erase(store: &dyn Store, request: &EraseRequest) -> Result<(), StoreError> {
    let mut key = request.enrollment_id.as_bytes().to_vec();
    key.push(0);
    let micros = request.requested_at.unix_timestamp_nanos() / 1_000;
    key.extend_from_slice(&u64::try_from(micros).unwrap_or(0).to_be_bytes());
    store.put(Tree::EraseRequests, &key, &encode(request)?)
}

pub fn erase_requests(store: &dyn Store) -> Result<Vec<EraseRequest>, StoreError> {
    scan_all(store, Tree::EraseRequests, b"")?
        .iter()
        .map(|(k, v)| decode(Tree::EraseRequests, k, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-06 09:00 UTC);

    #[test]
    fn devices_follow_their_user_both_ways() {
        let store = MemoryStore::new();
        set_device_user(&store, "D1", Some("alice")).unwrap();
        set_device_user(&store, "D2", Some("alice")).unwrap();
        set_device_user(&store, "D3", Some("bob")).unwrap();
        assert_eq!(devices_of(&store, "alice").unwrap(), ["D1", "D2"]);
        assert!(owns(&store, "alice", "D1").unwrap());
        assert!(!owns(&store, "alice", "D3").unwrap());
        // "ali" is not a prefix match for "alice".
        assert!(devices_of(&store, "ali").unwrap().is_empty());
        set_device_user(&store, "D2", Some("bob")).unwrap();
        assert_eq!(devices_of(&store, "alice").unwrap(), ["D1"]);
        assert_eq!(device_user(&store, "D2").unwrap().as_deref(), Some("bob"));
        set_device_user(&store, "D1", None).unwrap();
        assert!(devices_of(&store, "alice").unwrap().is_empty());
    }

    #[test]
    fn assignments_are_taken_once_and_expire() {
        let store = MemoryStore::new();
        let tag = create_assignment(&store, "alice", Ownership::Personal, NOW).unwrap();
        let raw = scan_all(&store, Tree::PortalAssignments, b"").unwrap();
        assert!(
            !String::from_utf8_lossy(&raw[0].0).contains(&tag),
            "only the hash is kept"
        );
        assert_eq!(
            take_assignment(&store, &tag, NOW).unwrap().unwrap().username,
            "alice"
        );
        assert_eq!(take_assignment(&store, &tag, NOW).unwrap(), None);
        let late = create_assignment(&store, "bob", Ownership::Personal, NOW).unwrap();
        assert_eq!(
            take_assignment(&store, &late, NOW + ASSIGNMENT_TTL).unwrap(),
            None
        );
    }
}
