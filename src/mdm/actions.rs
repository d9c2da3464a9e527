//! Remote actions on a device — lock, erase, clear passcode, restart, shut down, and lost mode
//! (enable, locate, play sound, disable) — each checked against what the device's platform
//! supports, its state and the privacy rules of its ownership before a command is queued.
//!
//! Pure: the checks and the command dictionaries. The service queues, records and audits.

use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

use time::OffsetDateTime;

use crate::inventory::{DeviceInventory, Ownership, Platform};
use crate::store::{Store, StoreError, StoreExt, Tree, decode};

/// Priority of action commands: ahead of anything an administrator or the inventory queued.
pub const ACTION_PRIORITY: u8 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Lock,
    Erase,
    ClearPasscode,
    Restart,
    ShutDown,
    EnableLostMode,
    Locate,
    PlaySound,
    DisableLostMode,
    /// Removes the enrollment profile: the device leaves management, and the OS removes the
    /// managed apps, their data and the managed profiles — the user's own data stays.
    Retire,
}

impl Action {
    /// Every action, in the order the console shows them.
    pub const ALL: [Action; 10] = [
        Action::Lock,
        Action::EnableLostMode,
        Action::DisableLostMode,
        Action::Locate,
        Action::PlaySound,
        Action::Restart,
        Action::ShutDown,
        Action::ClearPasscode,
        Action::Retire,
        Action::Erase,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

    /// The name [`Action::parse`] takes (`clear_passcode`).
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => name,
            _ => format!("{self:?}"),
        }
    }

    pub fn request_type(self) -> &'static str {
        match self {
            Self::Lock => "DeviceLock",
            Self::Erase => "EraseDevice",
            Self::ClearPasscode => "ClearPasscode",
            Self::Restart => "RestartDevice",
            Self::ShutDown => "ShutDownDevice",
            Self::EnableLostMode => "EnableLostMode",
            Self::Locate => "DeviceLocation",
            Self::PlaySound => "PlayLostModeSound",
            Self::DisableLostMode => "DisableLostMode",
            Self::Retire => "RemoveProfile",
        }
    }

    /// Destroys data or takes the device from its user: needs a typed confirmation.
    pub fn is_destructive(self) -> bool {
        matches!(self, Self::Erase)
    }
}

/// What the administrator sends with an action.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionParams {
    /// Why (required; kept with the action record).
    pub reason: String,
    /// Lock / lost mode: shown on the screen.
    pub message: Option<String>,
    /// Lock / lost mode: a number to call, shown on the screen.
    pub phone_number: Option<String>,
    /// Lost mode: a footnote on the lock screen.
    pub footnote: Option<String>,
    /// macOS lock and erase: the six-digit PIN that unlocks the Mac afterwards.
    pub pin: Option<String>,
    /// Erase: iOS keeps the eSIM data plan.
    pub preserve_data_plan: Option<bool>,
    /// Erase: iOS disables Quick Start proximity setup after the wipe.
    pub disallow_proximity_setup: Option<bool>,
    /// Erase: the device's serial number (or enrollment ID when it has none), typed.
    pub confirm: Option<String>,
}

/// Why an action was not queued for a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Forbidden for this device by the privacy rules of its ownership.
    #[error("{0}")]
    Privacy(&'static str),
    /// The platform or the device's state does not allow it.
    #[error("{0}")]
    Precondition(String),
    /// The request itself is incomplete or wrong.
    #[error("{0}")]
    Invalid(String),
}

/// What the checks need to know about the device.
pub struct Target<'a> {
    pub enrollment_id: &'a str,
    pub platform: Platform,
    pub ownership: Ownership,
    pub inventory: Option<&'a DeviceInventory>,
    pub unlock_token_escrowed: bool,
}

fn is_ios(p: Platform) -> bool {
    matches!(p, Platform::Ios | Platform::Ipados)
}

fn pin_ok(pin: &str) -> bool {
    pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit())
}

const MAX_TEXT: usize = 500;

/// Checks `action` for `target` with `params`; `Ok` means the command may be queued.
pub fn check(action: Action, params: &ActionParams, target: &Target<'_>) -> Result<(), Refusal> {
    if params.reason.trim().chars().count() < 3 {
        return Err(Refusal::Invalid(
            "a reason (at least 3 characters) is required".into(),
        ));
    }
    for (name, value) in [
        ("reason", &Some(params.reason.clone())),
        ("message", &params.message),
        ("phone_number", &params.phone_number),
        ("footnote", &params.footnote),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > MAX_TEXT) {
            return Err(Refusal::Invalid(format!(
                "{name} is longer than {MAX_TEXT} characters"
            )));
        }
    }
    let inv = target.inventory;
    let supervised = inv.and_then(|i| i.is_supervised) == Some(true);
    let lost = inv.and_then(|i| i.lost_mode_enabled) == Some(true);
    let p = target.platform;
    let personal = target.ownership == Ownership::Personal;
    match action {
        Action::Lock => {
            if p == Platform::Macos && !params.pin.as_deref().is_some_and(pin_ok) {
                return Err(Refusal::Invalid("locking a Mac needs a six-digit pin".into()));
            }
        }
        Action::Erase => {
            if personal {
                return Err(Refusal::Privacy(
                    "this is a personal device: it cannot be erased, only its managed apps and data removed",
                ));
            }
            let expected = inv
                .and_then(|i| i.serial_number.as_deref())
                .unwrap_or(target.enrollment_id);
            if params.confirm.as_deref().map(str::trim) != Some(expected) {
                return Err(Refusal::Invalid(format!(
                    "erasing needs confirm set to the device's serial number ({expected})"
                )));
            }
            let apple_silicon = inv.and_then(|i| i.is_apple_silicon) == Some(true);
            if p == Platform::Macos && !apple_silicon && !params.pin.as_deref().is_some_and(pin_ok) {
                return Err(Refusal::Invalid(
                    "erasing an Intel Mac needs a six-digit pin".into(),
                ));
            }
            if p == Platform::Macos
                && (params.preserve_data_plan.is_some() || params.disallow_proximity_setup.is_some())
            {
                return Err(Refusal::Invalid(
                    "preserve_data_plan and disallow_proximity_setup are for iOS and iPadOS".into(),
                ));
            }
        }
        Action::ClearPasscode => {
            if !is_ios(p) {
                return Err(Refusal::Precondition(
                    "clearing the passcode is for iOS and iPadOS".into(),
                ));
            }
            if !target.unlock_token_escrowed {
                return Err(Refusal::Precondition(
                    "the device has not escrowed an UnlockToken, so its passcode cannot be cleared".into(),
                ));
            }
        }
        Action::Restart | Action::ShutDown => {
            if is_ios(p) && !supervised {
                return Err(Refusal::Precondition(
                    "restarting or shutting down an iPhone or iPad needs it to be supervised".into(),
                ));
            }
            if !is_ios(p) && p != Platform::Macos && p != Platform::Tvos {
                return Err(Refusal::Precondition(format!("not supported on {}", p.name())));
            }
        }
        Action::Retire => {}
        Action::EnableLostMode | Action::Locate | Action::PlaySound | Action::DisableLostMode => {
            if personal && matches!(action, Action::Locate | Action::EnableLostMode) {
                return Err(Refusal::Privacy("this is a personal device: it is never located"));
            }
            if !is_ios(p) || !supervised {
                return Err(Refusal::Precondition(
                    "lost mode is for supervised iPhones and iPads".into(),
                ));
            }
            if action == Action::EnableLostMode && params.message.is_none() && params.phone_number.is_none() {
                return Err(Refusal::Invalid(
                    "lost mode needs a message or a phone number".into(),
                ));
            }
            if matches!(action, Action::Locate | Action::PlaySound) && !lost {
                return Err(Refusal::Precondition(
                    "the device is not in lost mode: it is located only while it is".into(),
                ));
            }
        }
    }
    if params.pin.is_some() && !matches!(action, Action::Lock | Action::Erase) {
        return Err(Refusal::Invalid("pin is for lock and erase".into()));
    }
    if params.pin.as_deref().is_some_and(|pin| !pin_ok(pin)) {
        return Err(Refusal::Invalid("pin must be six digits".into()));
    }
    Ok(())
}

/// The `Command` dictionary for a checked action. `unlock_token` is the device's escrowed
/// token, needed only by ClearPasscode; `enrollment_profile` the identifier of the profile that
/// enrolled it, needed only by Retire.
pub fn command(
    action: Action,
    params: &ActionParams,
    unlock_token: Option<&[u8]>,
    enrollment_profile: &str,
) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("RequestType".into(), Value::String(action.request_type().into()));
    let mut text = |key: &str, v: &Option<String>| {
        if let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            d.insert(key.into(), Value::String(v.into()));
        }
    };
    match action {
        Action::Lock => {
            text("Message", &params.message);
            text("PhoneNumber", &params.phone_number);
            text("PIN", &params.pin);
        }
        Action::Erase => {
            text("PIN", &params.pin);
            if let Some(b) = params.preserve_data_plan {
                d.insert("PreserveDataPlan".into(), Value::Boolean(b));
            }
            if let Some(b) = params.disallow_proximity_setup {
                d.insert("DisallowProximitySetup".into(), Value::Boolean(b));
            }
        }
        Action::EnableLostMode => {
            text("Message", &params.message);
            text("PhoneNumber", &params.phone_number);
            text("Footnote", &params.footnote);
        }
        Action::ClearPasscode => {
            if let Some(token) = unlock_token {
                d.insert("UnlockToken".into(), Value::Data(token.to_vec()));
            }
        }
        Action::Retire => {
            d.insert("Identifier".into(), Value::String(enrollment_profile.into()));
        }
        Action::Restart | Action::ShutDown | Action::Locate | Action::PlaySound | Action::DisableLostMode => {
        }
    }
    d
}

/// One action taken: who, what, on which device, when, why, and the command it queued. The
/// PIN and the unlock token are never kept here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: Action,
    pub enrollment_id: String,
    pub reason: String,
    pub command_uuid: String,
    /// Set when the action was part of a bulk action.
    pub bulk_id: Option<String>,
}

fn record_key(enrollment: &str, at: OffsetDateTime) -> Vec<u8> {
    let micros = u64::try_from(at.unix_timestamp_nanos() / 1000).unwrap_or(0);
    format!("{enrollment}\0{micros:020}").into_bytes()
}

pub fn record(store: &dyn Store, r: &ActionRecord) -> Result<(), StoreError> {
    store.put_record(Tree::Actions, &record_key(&r.enrollment_id, r.at), r)
}

/// A device's actions, newest first.
pub fn history(store: &dyn Store, enrollment: &str, limit: usize) -> Result<Vec<ActionRecord>, StoreError> {
    let prefix = format!("{enrollment}\0").into_bytes();
    let entries = crate::store::scan_all(store, Tree::Actions, &prefix)?;
    entries
        .iter()
        .rev()
        .take(limit)
        .map(|(k, v)| decode(Tree::Actions, k, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(reason: &str) -> ActionParams {
        ActionParams {
            reason: reason.into(),
            ..ActionParams::default()
        }
    }

    fn target(platform: Platform, ownership: Ownership, inv: &DeviceInventory) -> Target<'_> {
        Target {
            enrollment_id: "UDID-1",
            platform,
            ownership,
            inventory: Some(inv),
            unlock_token_escrowed: true,
        }
    }

    #[test]
    fn every_action_has_its_preconditions() {
        let supervised_phone = DeviceInventory {
            platform: Platform::Ios,
            is_supervised: Some(true),
            serial_number: Some("F2LXK0QJHG7F".into()),
            ..Default::default()
        };
        let corp = target(Platform::Ios, Ownership::Corporate, &supervised_phone);
        let why = params("lost on ward 7");
        assert!(matches!(
            check(Action::Lock, &params(""), &corp),
            Err(Refusal::Invalid(_))
        ));
        check(Action::Lock, &why, &corp).unwrap();
        check(Action::Restart, &why, &corp).unwrap();
        check(Action::ClearPasscode, &why, &corp).unwrap();

        // Erase needs the serial typed back.
        assert!(matches!(
            check(Action::Erase, &why, &corp),
            Err(Refusal::Invalid(_))
        ));
        let confirmed = ActionParams {
            confirm: Some("F2LXK0QJHG7F".into()),
            preserve_data_plan: Some(true),
            ..why.clone()
        };
        check(Action::Erase, &confirmed, &corp).unwrap();
        let erase = command(Action::Erase, &confirmed, None, "p");
        assert_eq!(erase.get("PreserveDataPlan"), Some(&Value::Boolean(true)));
        crate::mdm::schema::validate(&erase).unwrap();

        // Lost mode: a message first; locating only while lost.
        assert!(matches!(
            check(Action::EnableLostMode, &why, &corp),
            Err(Refusal::Invalid(_))
        ));
        let lost_params = ActionParams {
            message: Some("Please call the ward".into()),
            ..why.clone()
        };
        check(Action::EnableLostMode, &lost_params, &corp).unwrap();
        assert!(matches!(
            check(Action::Locate, &why, &corp),
            Err(Refusal::Precondition(_))
        ));
        let lost_phone = DeviceInventory {
            lost_mode_enabled: Some(true),
            ..supervised_phone.clone()
        };
        check(
            Action::Locate,
            &why,
            &target(Platform::Ios, Ownership::Corporate, &lost_phone),
        )
        .unwrap();

        // Personal: never located, never erased.
        let personal = target(Platform::Ios, Ownership::Personal, &lost_phone);
        assert!(matches!(
            check(Action::Locate, &why, &personal),
            Err(Refusal::Privacy(_))
        ));
        assert!(matches!(
            check(Action::Erase, &confirmed, &personal),
            Err(Refusal::Privacy(_))
        ));
        check(Action::Lock, &why, &personal).unwrap();

        // Unsupervised iPads cannot be restarted; Macs need a PIN to be locked.
        let ipad = DeviceInventory {
            is_supervised: Some(false),
            ..Default::default()
        };
        assert!(matches!(
            check(
                Action::Restart,
                &why,
                &target(Platform::Ipados, Ownership::Corporate, &ipad)
            ),
            Err(Refusal::Precondition(_))
        ));
        let mac = DeviceInventory::default();
        let mac_t = target(Platform::Macos, Ownership::Corporate, &mac);
        assert!(matches!(
            check(Action::Lock, &why, &mac_t),
            Err(Refusal::Invalid(_))
        ));
        let with_pin = ActionParams {
            pin: Some("123456".into()),
            message: Some("Returned to IT".into()),
            ..why.clone()
        };
        check(Action::Lock, &with_pin, &mac_t).unwrap();
        let lock = command(Action::Lock, &with_pin, None, "p");
        assert_eq!(lock.get("PIN"), Some(&Value::String("123456".into())));
        crate::mdm::schema::validate(&lock).unwrap();
        assert!(matches!(
            check(Action::ClearPasscode, &why, &mac_t),
            Err(Refusal::Precondition(_))
        ));
        // Erasing an Intel Mac needs a PIN; an Apple silicon Mac does not, and iOS-only
        // options are refused.
        let mac_serial = ActionParams {
            confirm: Some("UDID-1".into()),
            ..why.clone()
        };
        assert!(matches!(
            check(Action::Erase, &mac_serial, &mac_t),
            Err(Refusal::Invalid(_))
        ));
        let mac_pin = ActionParams {
            pin: Some("654321".into()),
            ..mac_serial.clone()
        };
        check(Action::Erase, &mac_pin, &mac_t).unwrap();
        let silicon = DeviceInventory {
            is_apple_silicon: Some(true),
            ..Default::default()
        };
        let silicon_t = target(Platform::Macos, Ownership::Corporate, &silicon);
        check(Action::Erase, &mac_serial, &silicon_t).unwrap();
        let ios_only = ActionParams {
            preserve_data_plan: Some(true),
            ..mac_serial.clone()
        };
        assert!(matches!(
            check(Action::Erase, &ios_only, &silicon_t),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            check(Action::EnableLostMode, &lost_params, &mac_t),
            Err(Refusal::Precondition(_))
        ));
        let bad_pin = ActionParams {
            pin: Some("12ab56".into()),
            ..why
        };
        assert!(matches!(
            check(Action::Lock, &bad_pin, &mac_t),
            Err(Refusal::Invalid(_))
        ));
        for a in [
            "lock",
            "erase",
            "clear_passcode",
            "restart",
            "shut_down",
            "enable_lost_mode",
            "locate",
            "play_sound",
            "disable_lost_mode",
            "retire",
        ] {
            let action = Action::parse(a).unwrap();
            crate::mdm::schema::validate(&command(
                action,
                &params("x"),
                Some(b"token"),
                "com.citadel.enroll.x",
            ))
            .unwrap();
        }
        assert_eq!(Action::parse("self_destruct"), None);
    }
}
