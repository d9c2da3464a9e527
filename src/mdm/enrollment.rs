//! Enrollments: who a check-in message speaks for, and what we know about it.
//!
//! IDs (see DESIGN.md §5): device channel = UDID; macOS user channel = `UDID:UserID`; User
//! Enrollment = `EnrollmentID` (its user channel `EnrollmentID:EnrollmentUserID`); Shared iPad
//! user = `UDID:UserShortName`. A user channel's parent is its device.

use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, StoreExt, Tree};

/// The `UserID` Shared iPad reports for its temporary session user: not a real user, so the
/// short name identifies the channel instead.
const SHARED_IPAD_GUEST_ID: &str = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF";
/// Longest ID part accepted; Apple's are UUIDs or short names.
const MAX_ID_PART: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentKind {
    Device,
    /// macOS user channel (`UDID:UserID`).
    UserChannel,
    /// Account-driven or profile-based User Enrollment (BYOD): the device has no UDID for us.
    UserEnrollment,
    /// The user channel of a User Enrollment.
    UserEnrollmentUser,
    /// A Shared iPad user (`UDID:UserShortName`).
    SharedIpadUser,
}

impl EnrollmentKind {
    pub fn is_user_channel(self) -> bool {
        matches!(
            self,
            Self::UserChannel | Self::UserEnrollmentUser | Self::SharedIpadUser
        )
    }
}

/// Who a message speaks for, derived from its identifying keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRef {
    pub id: String,
    pub kind: EnrollmentKind,
    /// The device channel's ID for a user channel.
    pub parent: Option<String>,
}

impl EnrollmentRef {
    /// The device channel this reference belongs to (itself for a device channel).
    pub fn device(&self) -> EnrollmentRef {
        match &self.parent {
            Some(parent) => EnrollmentRef {
                id: parent.clone(),
                kind: if self.kind == EnrollmentKind::UserEnrollmentUser {
                    EnrollmentKind::UserEnrollment
                } else {
                    EnrollmentKind::Device
                },
                parent: None,
            },
            None => self.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("the message names no device (neither UDID nor EnrollmentID)")]
    Missing,
    #[error("{0} is not a plausible identifier")]
    Invalid(&'static str),
}

fn part<'a>(dict: &'a Dictionary, key: &'static str) -> Result<Option<&'a str>, IdError> {
    match dict.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s))
            if s.len() <= MAX_ID_PART && s.chars().all(|c| c.is_ascii_graphic() && c != ':') =>
        {
            Ok(Some(s.as_str()))
        }
        Some(_) => Err(IdError::Invalid(key)),
    }
}

/// Resolves the enrollment a check-in or connect message belongs to.
pub fn resolve(dict: &Dictionary) -> Result<EnrollmentRef, IdError> {
    let udid = part(dict, "UDID")?;
    let enrollment_id = part(dict, "EnrollmentID")?;
    let user_id = part(dict, "UserID")?;
    let short_name = part(dict, "UserShortName")?;
    let enrollment_user = part(dict, "EnrollmentUserID")?;
    let channel = |parent: &str, user: &str, kind| EnrollmentRef {
        id: format!("{parent}:{user}"),
        kind,
        parent: Some(parent.to_owned()),
    };
    match (udid, enrollment_id) {
        (Some(udid), _) => Ok(match (user_id, short_name) {
            (Some(uid), _) if !uid.eq_ignore_ascii_case(SHARED_IPAD_GUEST_ID) => {
                channel(udid, uid, EnrollmentKind::UserChannel)
            }
            (_, Some(name)) => channel(udid, name, EnrollmentKind::SharedIpadUser),
            _ => EnrollmentRef {
                id: udid.to_owned(),
                kind: EnrollmentKind::Device,
                parent: None,
            },
        }),
        (None, Some(eid)) => Ok(match enrollment_user {
            Some(user) => channel(eid, user, EnrollmentKind::UserEnrollmentUser),
            None => EnrollmentRef {
                id: eid.to_owned(),
                kind: EnrollmentKind::UserEnrollment,
                parent: None,
            },
        }),
        (None, None) => Err(IdError::Missing),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentStatus {
    /// Authenticate seen; not pushable until the first TokenUpdate.
    Authenticated,
    /// TokenUpdate seen: pushable, receives commands.
    Active,
    /// CheckOut seen (or an administrator removed it); its identity certificate is revoked.
    Unenrolled,
}

/// What the device told us at Authenticate (all optional: only some platforms send each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meid: Option<String>,
}

impl DeviceFacts {
    pub fn from_authenticate(dict: &Dictionary) -> Self {
        let s = |k: &str| {
            dict.get(k)
                .and_then(Value::as_string)
                .map(|v| v.chars().take(256).collect::<String>())
        };
        Self {
            device_name: s("DeviceName"),
            model: s("Model"),
            model_name: s("ModelName"),
            product_name: s("ProductName"),
            serial_number: s("SerialNumber"),
            os_version: s("OSVersion"),
            build_version: s("BuildVersion"),
            imei: s("IMEI"),
            meid: s("MEID"),
        }
    }
}

/// Push credentials from TokenUpdate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushInfo {
    /// The APNs device token, hex.
    pub token_hex: String,
    pub push_magic: String,
    pub topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    pub id: String,
    pub kind: EnrollmentKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub status: EnrollmentStatus,
    /// SHA-256 (hex) of the identity certificate bound at Authenticate (for a user channel:
    /// its device's).
    pub certificate_sha256: String,
    pub certificate_serial: String,
    pub facts: DeviceFacts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushInfo>,
    /// The device's UnlockToken (clears a passcode), sealed with the appliance's data key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlock_token_sealed: Option<String>,
    /// The macOS bootstrap token, sealed with the appliance's data key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_token_sealed: Option<String>,
    #[serde(default)]
    pub awaiting_configuration: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_short_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_long_name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub token_updated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub unenrolled_at: Option<OffsetDateTime>,
}

impl EnrollmentRecord {
    /// A new enrollment, `Authenticated` and bound to the given identity certificate; what
    /// later check-ins tell (push token, user, tokens) starts empty.
    pub fn new(
        id: String,
        kind: EnrollmentKind,
        certificate_sha256: String,
        certificate_serial: String,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            kind,
            parent: None,
            status: EnrollmentStatus::Authenticated,
            certificate_sha256,
            certificate_serial,
            facts: DeviceFacts::default(),
            push: None,
            unlock_token_sealed: None,
            bootstrap_token_sealed: None,
            awaiting_configuration: false,
            user_short_name: None,
            user_long_name: None,
            enrolled_at: now,
            last_seen_at: now,
            token_updated_at: None,
            unenrolled_at: None,
        }
    }

    pub fn pushable(&self) -> bool {
        self.status == EnrollmentStatus::Active && self.push.is_some()
    }
}

pub fn get(store: &dyn Store, id: &str) -> Result<Option<EnrollmentRecord>, StoreError> {
    store.get_record(Tree::Enrollments, id.as_bytes())
}

/// What the command channel reads of an enrollment on every request: the same record,
/// decoded without building the rest (facts, push details, sealed tokens).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChannelView {
    pub id: String,
    pub status: EnrollmentStatus,
    pub certificate_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
}

impl From<&EnrollmentRecord> for ChannelView {
    fn from(r: &EnrollmentRecord) -> Self {
        Self {
            id: r.id.clone(),
            status: r.status,
            certificate_sha256: r.certificate_sha256.clone(),
            last_seen_at: r.last_seen_at,
        }
    }
}

pub fn channel_view(store: &dyn Store, id: &str) -> Result<Option<ChannelView>, StoreError> {
    store.get_record(Tree::Enrollments, id.as_bytes())
}

pub fn put(store: &dyn Store, record: &EnrollmentRecord) -> Result<(), StoreError> {
    store.put_record(Tree::Enrollments, record.id.as_bytes(), record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(pairs: &[(&str, &str)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect()
    }

    #[test]
    fn enrollment_ids_follow_the_channel() {
        let udid = "9CE99981-2400-4A17-AC8C-603C589A6184";
        let r = resolve(&dict(&[("UDID", udid)])).unwrap();
        assert_eq!(
            (r.id.as_str(), r.kind, r.parent),
            (udid, EnrollmentKind::Device, None)
        );

        let r = resolve(&dict(&[
            ("UDID", udid),
            ("UserID", "U-1"),
            ("UserShortName", "ann"),
        ]))
        .unwrap();
        assert_eq!(r.id, format!("{udid}:U-1"));
        assert_eq!(r.kind, EnrollmentKind::UserChannel);
        assert_eq!(r.parent.as_deref(), Some(udid));

        let guest = resolve(&dict(&[
            ("UDID", udid),
            ("UserID", SHARED_IPAD_GUEST_ID),
            ("UserShortName", "pupil7"),
        ]))
        .unwrap();
        assert_eq!(guest.id, format!("{udid}:pupil7"));
        assert_eq!(guest.kind, EnrollmentKind::SharedIpadUser);

        let ue = resolve(&dict(&[("EnrollmentID", "E-42")])).unwrap();
        assert_eq!(
            (ue.id.as_str(), ue.kind),
            ("E-42", EnrollmentKind::UserEnrollment)
        );
        let ueu = resolve(&dict(&[("EnrollmentID", "E-42"), ("EnrollmentUserID", "EU-1")])).unwrap();
        assert_eq!(ueu.id, "E-42:EU-1");
        assert_eq!(ueu.kind, EnrollmentKind::UserEnrollmentUser);
        assert_eq!(ueu.parent.as_deref(), Some("E-42"));

        assert_eq!(resolve(&Dictionary::new()), Err(IdError::Missing));
        assert_eq!(resolve(&dict(&[("UDID", "a:b")])), Err(IdError::Invalid("UDID")));
        assert_eq!(
            resolve(&dict(&[("UDID", &"x".repeat(500))])),
            Err(IdError::Invalid("UDID"))
        );
        let mut d = Dictionary::new();
        d.insert("UDID".into(), Value::Integer(5.into()));
        assert_eq!(resolve(&d), Err(IdError::Invalid("UDID")));
    }
}
