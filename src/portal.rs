//! The end-user self-service portal's records: people with a local portal password (directory
//! users need none here), which devices belong to whom, and erase requests for administrators.
//! A device enrolled from a user's portal link is theirs because the SCEP challenge in its
//! profile — and so its certificate — names them (`scep::registry::CertificateRecord`).
//!
//! A portal user sees and acts on their own devices only; everything else answers "not found",
//! so the portal does not reveal which devices exist.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, StoreExt, Tree, decode, encode, scan_all};

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

/// Makes `username` (or nobody) the person `enrollment_id` belongs to; both directions are
/// written in one transaction, so concurrent changes cannot leave a stale owner behind.
pub fn set_device_user(
    store: &dyn Store,
    enrollment_id: &str,
    username: Option<&str>,
) -> Result<(), StoreError> {
    store.transaction(&|txn| {
        if let Some(previous) = txn.get(Tree::DeviceUsers, enrollment_id.as_bytes())? {
            let previous = String::from_utf8_lossy(&previous).into_owned();
            txn.delete(Tree::UserDevices, &user_device_key(&previous, enrollment_id))?;
        }
        match username {
            Some(user) => {
                txn.put(Tree::DeviceUsers, enrollment_id.as_bytes(), user.as_bytes())?;
                txn.put(Tree::UserDevices, &user_device_key(user, enrollment_id), &[])
            }
            None => txn.delete(Tree::DeviceUsers, enrollment_id.as_bytes()),
        }
    })
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

/// Whether `enrollment_id` belongs to `username` (the device's own record decides).
pub fn owns(store: &dyn Store, username: &str, enrollment_id: &str) -> Result<bool, StoreError> {
    Ok(device_user(store, enrollment_id)?.as_deref() == Some(username))
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

/// Erase requests are keyed `enrollment id, 0, time`: one device's are one prefix.
fn erase_prefix(enrollment_id: &str) -> Vec<u8> {
    let mut prefix = enrollment_id.as_bytes().to_vec();
    prefix.push(0);
    prefix
}

pub fn request_erase(store: &dyn Store, request: &EraseRequest) -> Result<(), StoreError> {
    let mut key = erase_prefix(&request.enrollment_id);
    let micros = request.requested_at.unix_timestamp_nanos() / 1_000;
    key.extend_from_slice(&u64::try_from(micros).unwrap_or(0).to_be_bytes());
    store.put(Tree::EraseRequests, &key, &encode(request)?)
}

/// Removes the erase requests for `enrollment_id` (erased, or dismissed); returns how many.
pub fn clear_erase_requests(store: &dyn Store, enrollment_id: &str) -> Result<usize, StoreError> {
    let mut n = 0;
    for (k, _) in scan_all(store, Tree::EraseRequests, &erase_prefix(enrollment_id))? {
        if store.delete(Tree::EraseRequests, &k)? {
            n += 1;
        }
    }
    Ok(n)
}

pub fn erase_requests(store: &dyn Store) -> Result<Vec<EraseRequest>, StoreError> {
    scan_all(store, Tree::EraseRequests, b"")?
        .iter()
        .map(|(k, v)| decode(Tree::EraseRequests, k, v))
        .collect()
}

/// The open erase requests for one device, oldest first.
pub fn erase_requests_for(store: &dyn Store, enrollment_id: &str) -> Result<Vec<EraseRequest>, StoreError> {
    scan_all(store, Tree::EraseRequests, &erase_prefix(enrollment_id))?
        .iter()
        .map(|(k, v)| decode(Tree::EraseRequests, k, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

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
    fn erase_requests_are_per_device() {
        let store = MemoryStore::new();
        let at = time::macros::datetime!(2026-12-01 10:00 UTC);
        for (id, minutes) in [("D1", 0), ("D10", 1), ("D1", 2)] {
            let request = EraseRequest {
                enrollment_id: id.to_owned(),
                username: "alice".to_owned(),
                reason: format!("lost at {minutes}"),
                requested_at: at + time::Duration::minutes(minutes),
            };
            request_erase(&store, &request).unwrap();
        }
        // "D1" is a prefix of "D10" but not of its key.
        let d1 = erase_requests_for(&store, "D1").unwrap();
        assert_eq!(
            d1.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>(),
            ["lost at 0", "lost at 2"]
        );
        assert_eq!(erase_requests(&store).unwrap().len(), 3);
        assert_eq!(clear_erase_requests(&store, "D1").unwrap(), 2);
        assert_eq!(erase_requests_for(&store, "D10").unwrap().len(), 1);
    }
}
