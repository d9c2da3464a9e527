//! Apple's MDM command schema: the command table and typed builders generated from Apple's
//! `device-management` YAML (`generated.rs`, by `installer/schema-gen`), and the checks that keep
//! a hand-written command from reaching a device with a typo in it.
//!
//! This file must not use `crate::` paths: `installer/schema-gen` compiles it on its own to run
//! these tests without building the appliance.

mod generated;
pub use generated::*;

use data_encoding::BASE64;

/// How a payload or key relates to an enrollment feature (shared iPad, user enrollment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Usable with or without the feature.
    Allowed,
    /// Usable only with the feature.
    Required,
    /// Not usable with the feature.
    Forbidden,
    /// Accepted but without effect under the feature.
    Ignored,
}

/// Shared iPad facts for a command on iOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedIpad {
    pub mode: Mode,
    pub device_channel: Option<bool>,
    pub user_channel: Option<bool>,
}

/// What the schema says about one command on one platform. `None` means the schema is silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsSupport {
    /// First OS version with the command; `None` when the platform does not support it.
    pub introduced: Option<&'static str>,
    pub deprecated: Option<&'static str>,
    pub removed: Option<&'static str>,
    /// The MDM access right the enrollment profile must grant.
    pub access_rights: Option<&'static str>,
    pub device_channel: Option<bool>,
    pub user_channel: Option<bool>,
    /// Only supervised devices accept the command.
    pub supervised: bool,
    /// Only devices enrolled through Automated Device Enrollment accept the command.
    pub requires_dep: bool,
    pub user_enrollment: Option<Mode>,
    pub shared_ipad: Option<SharedIpad>,
}

impl OsSupport {
    pub const UNSUPPORTED: OsSupport = OsSupport {
        introduced: None,
        deprecated: None,
        removed: None,
        access_rights: None,
        device_channel: None,
        user_channel: None,
        supervised: false,
        requires_dep: false,
        user_enrollment: None,
        shared_ipad: None,
    };

    pub fn is_supported(&self) -> bool {
        self.introduced.is_some()
    }
}

/// The platforms the schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Ios,
    MacOs,
    TvOs,
    VisionOs,
    WatchOs,
}

/// One MDM command: its request type, per-platform support and request keys.
#[derive(Debug)]
pub struct CommandSpec {
    pub request_type: &'static str,
    pub title: &'static str,
    pub ios: OsSupport,
    pub macos: OsSupport,
    pub tvos: OsSupport,
    pub visionos: OsSupport,
    pub watchos: OsSupport,
    /// The keys of the `Command` dictionary besides `RequestType`.
    pub keys: &'static [KeySpec],
}

impl CommandSpec {
    pub fn support(&self, platform: Platform) -> &OsSupport {
        match platform {
            Platform::Ios => &self.ios,
            Platform::MacOs => &self.macos,
            Platform::TvOs => &self.tvos,
            Platform::VisionOs => &self.visionos,
            Platform::WatchOs => &self.watchos,
        }
    }

    pub fn key(&self, name: &str) -> Option<&'static KeySpec> {
        self.keys.iter().find(|key| key.name == name)
    }
}

/// One key of a command (or of a nested dictionary, or an array's element).
#[derive(Debug)]
pub struct KeySpec {
    /// Apple's key name, exactly as sent.
    pub name: &'static str,
    pub ty: KeyType,
    pub required: bool,
    /// The only values accepted, rendered as strings (integers in decimal); empty: any value.
    pub allowed: &'static [&'static str],
    /// The value the device assumes when the key is absent, rendered as a string.
    pub default: Option<&'static str>,
}

#[derive(Debug, Clone, Copy)]
pub enum KeyType {
    String,
    Integer,
    Real,
    Boolean,
    Date,
    Data,
    /// Every element matches this spec (its name is the schema's item name).
    Array(&'static KeySpec),
    /// A dictionary with exactly these keys.
    Dictionary(&'static [KeySpec]),
    /// One of these dictionary shapes, told apart by their fixed keys (Settings' `Item`).
    OneOf(&'static [KeySpec]),
    /// A dictionary with free-form keys and values (app configurations, manifests).
    AnyDictionary,
    Any,
}

impl KeyType {
    fn describe(&self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::Integer => "integer",
            KeyType::Real => "real number",
            KeyType::Boolean => "boolean",
            KeyType::Date => "date",
            KeyType::Data => "data",
            KeyType::Array(_) => "array",
            KeyType::Dictionary(_) | KeyType::OneOf(_) | KeyType::AnyDictionary => "dictionary",
            KeyType::Any => "any value",
        }
    }
}

/// A typed command builder generated from the schema.
pub trait MdmCommand {
    const REQUEST_TYPE: &'static str;

    /// The inner `Command` dictionary: `RequestType` and the keys that are set.
    fn to_command(&self) -> plist::Dictionary;
}

/// Why a command was refused. Every message starts with the key path it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("a command must be a JSON object with Apple's key names")]
    NotAnObject,
    #[error("RequestType: missing; every command names its request type")]
    MissingRequestType,
    #[error("RequestType: unknown command {0:?}")]
    UnknownRequestType(String),
    #[error("{path}: required key missing")]
    MissingKey { path: String },
    #[error("{path}: unknown key (Apple's key names are case-sensitive)")]
    UnknownKey { path: String },
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        path: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{path}: {value:?} is not one of: {allowed}")]
    NotAllowed {
        path: String,
        value: String,
        allowed: String,
    },
    #[error("{path}: matches none of the item shapes {variants}")]
    NoVariant { path: String, variants: String },
    #[error("{path}: expected standard base64 data")]
    InvalidBase64 { path: String },
    #[error("{path}: {value:?} is not an RFC 3339 date such as 2025-01-31T12:00:00Z")]
    InvalidDate { path: String, value: String },
    #[error("{path}: null is not allowed; leave the key out instead")]
    Null { path: String },
}

/// The schema for a request type.
pub fn spec(request_type: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .binary_search_by(|command| command.request_type.cmp(request_type))
        .ok()
        .and_then(|index| COMMANDS.get(index))
}

/// Checks an inner `Command` dictionary against the schema of its `RequestType`.
pub fn validate(command: &plist::Dictionary) -> Result<&'static CommandSpec, SchemaError> {
    let request_type = match command.get("RequestType") {
        None => return Err(SchemaError::MissingRequestType),
        Some(plist::Value::String(request_type)) => request_type,
        Some(other) => {
            return Err(SchemaError::WrongType {
                path: "RequestType".into(),
                expected: "string",
                found: plist_kind(other),
            });
        }
    };
    let spec = spec(request_type).ok_or_else(|| SchemaError::UnknownRequestType(request_type.clone()))?;
    check_dictionary(spec.keys, command, "", true)?;
    Ok(spec)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn check_dictionary(
    keys: &'static [KeySpec],
    dict: &plist::Dictionary,
    path: &str,
    top_level: bool,
) -> Result<(), SchemaError> {
    // Present keys first: a misspelt required key reads better as "unknown" than as "missing".
    for (name, value) in dict {
        if top_level && name == "RequestType" {
            continue;
        }
        let path = join(path, name);
        let key = keys
            .iter()
            .find(|key| key.name == name)
            .ok_or_else(|| SchemaError::UnknownKey { path: path.clone() })?;
        check_value(key, value, &path)?;
    }
    match keys
        .iter()
        .find(|key| key.required && !dict.contains_key(key.name))
    {
        Some(missing) => Err(SchemaError::MissingKey {
            path: join(path, missing.name),
        }),
        None => Ok(()),
    }
}

fn check_value(key: &'static KeySpec, value: &plist::Value, path: &str) -> Result<(), SchemaError> {
    use plist::Value as V;
    match (key.ty, value) {
        (KeyType::String, V::String(_))
        | (KeyType::Integer, V::Integer(_))
        | (KeyType::Real, V::Integer(_) | V::Real(_))
        | (KeyType::Boolean, V::Boolean(_)) => check_allowed(key, plist_scalar(value), path),
        (KeyType::Date, V::Date(_))
        | (KeyType::Data, V::Data(_))
        | (KeyType::AnyDictionary, V::Dictionary(_))
        | (KeyType::Any, _) => Ok(()),
        (KeyType::Array(element), V::Array(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_value(element, item, &format!("{path}[{index}]"))),
        (KeyType::Dictionary(keys), V::Dictionary(dict)) => check_dictionary(keys, dict, path, false),
        (KeyType::OneOf(variants), V::Dictionary(dict)) => {
            let variant = pick_variant(variants, path, |name| dict.get(name).and_then(plist_scalar))?;
            check_value(variant, value, path)
        }
        (ty, other) => Err(SchemaError::WrongType {
            path: path.into(),
            expected: ty.describe(),
            found: plist_kind(other),
        }),
    }
}

fn check_allowed(key: &KeySpec, rendered: Option<String>, path: &str) -> Result<(), SchemaError> {
    match rendered {
        Some(value) if !key.allowed.is_empty() && !key.allowed.contains(&value.as_str()) => {
            Err(SchemaError::NotAllowed {
                path: path.into(),
                value,
                allowed: key.allowed.join(", "),
            })
        }
        _ => Ok(()),
    }
}

/// The fixed keys of a variant: required keys with exactly one allowed value.
fn fixed_keys(variant: &KeySpec) -> impl Iterator<Item = (&'static str, &'static str)> {
    let keys: &'static [KeySpec] = match variant.ty {
        KeyType::Dictionary(keys) => keys,
        _ => &[],
    };
    keys.iter()
        .filter(|key| key.required)
        .filter_map(|key| match key.allowed {
            [only] => Some((key.name, *only)),
            _ => None,
        })
}

/// Chooses the item shape whose fixed keys all match; `lookup` renders a key's scalar value.
fn pick_variant(
    variants: &'static [KeySpec],
    path: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<&'static KeySpec, SchemaError> {
    for variant in variants {
        let mut fixed = fixed_keys(variant).peekable();
        if fixed.peek().is_some() && fixed.all(|(name, value)| lookup(name).as_deref() == Some(value)) {
            return Ok(variant);
        }
    }
    // When every shape is told apart by the same key (Settings' `Item`), name that key.
    let discriminators: Vec<_> = variants
        .iter()
        .filter_map(|variant| fixed_keys(variant).next())
        .collect();
    if let Some((name, _)) = discriminators.first()
        && discriminators.len() == variants.len()
        && discriminators.iter().all(|(other, _)| other == name)
    {
        let path = join(path, name);
        return Err(match lookup(name) {
            None => SchemaError::MissingKey { path },
            Some(value) => {
                let allowed: Vec<_> = discriminators.iter().map(|(_, value)| *value).collect();
                SchemaError::NotAllowed {
                    path,
                    value,
                    allowed: allowed.join(", "),
                }
            }
        });
    }
    let names: Vec<_> = variants.iter().map(|variant| variant.name).collect();
    Err(SchemaError::NoVariant {
        path: path.into(),
        variants: names.join(", "),
    })
}

fn plist_scalar(value: &plist::Value) -> Option<String> {
    match value {
        plist::Value::String(s) => Some(s.clone()),
        plist::Value::Integer(i) => Some(i.to_string()),
        plist::Value::Real(r) => Some(r.to_string()),
        plist::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn plist_kind(value: &plist::Value) -> &'static str {
    match value {
        plist::Value::String(_) => "string",
        plist::Value::Integer(_) => "integer",
        plist::Value::Real(_) => "real number",
        plist::Value::Boolean(_) => "boolean",
        plist::Value::Date(_) => "date",
        plist::Value::Data(_) => "data",
        plist::Value::Array(_) => "array",
        plist::Value::Dictionary(_) => "dictionary",
        plist::Value::Uid(_) => "uid",
        _ => "unknown value",
    }
}

/// Converts an admin's JSON command (Apple's key names, with `RequestType`) into the inner
/// `Command` dictionary, guided by the schema, and validates it.
pub fn command_from_json(value: &serde_json::Value) -> Result<plist::Dictionary, SchemaError> {
    let object = value.as_object().ok_or(SchemaError::NotAnObject)?;
    let request_type = match object.get("RequestType") {
        None => return Err(SchemaError::MissingRequestType),
        Some(serde_json::Value::String(request_type)) => request_type,
        Some(other) => {
            return Err(SchemaError::WrongType {
                path: "RequestType".into(),
                expected: "string",
                found: json_kind(other),
            });
        }
    };
    let spec = spec(request_type).ok_or_else(|| SchemaError::UnknownRequestType(request_type.clone()))?;
    let mut command = plist::Dictionary::new();
    command.insert("RequestType".into(), plist::Value::String(request_type.clone()));
    for (name, value) in object {
        if name != "RequestType" {
            let key = spec
                .key(name)
                .ok_or_else(|| SchemaError::UnknownKey { path: name.clone() })?;
            command.insert(name.clone(), from_json(key, value, name)?);
        }
    }
    validate(&command)?;
    Ok(command)
}

fn from_json(
    key: &'static KeySpec,
    value: &serde_json::Value,
    path: &str,
) -> Result<plist::Value, SchemaError> {
    use serde_json::Value as J;
    Ok(match (key.ty, value) {
        (_, J::Null) => return Err(SchemaError::Null { path: path.into() }),
        (KeyType::String, J::String(s)) => plist::Value::String(s.clone()),
        (KeyType::Integer, J::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => plist::Value::Integer(i.into()),
            (None, Some(u)) => plist::Value::Integer(u.into()),
            (None, None) => {
                return Err(SchemaError::WrongType {
                    path: path.into(),
                    expected: "integer",
                    found: "number with a fraction",
                });
            }
        },
        // serde_json keeps every number as f64 too, so this cannot miss.
        (KeyType::Real, J::Number(n)) => plist::Value::Real(n.as_f64().unwrap_or(f64::NAN)),
        (KeyType::Boolean, J::Bool(b)) => plist::Value::Boolean(*b),
        (KeyType::Date, J::String(s)) => plist::Value::Date(plist::Date::from_xml_format(s).map_err(
            |_| SchemaError::InvalidDate {
                path: path.into(),
                value: s.clone(),
            },
        )?),
        (KeyType::Data, J::String(s)) => plist::Value::Data(
            BASE64
                .decode(s.as_bytes())
                .map_err(|_| SchemaError::InvalidBase64 { path: path.into() })?,
        ),
        (KeyType::Array(element), J::Array(items)) => plist::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(index, item)| from_json(element, item, &format!("{path}[{index}]")))
                .collect::<Result<_, _>>()?,
        ),
        (KeyType::Dictionary(keys), J::Object(object)) => {
            let mut dict = plist::Dictionary::new();
            for (name, value) in object {
                let path = join(path, name);
                let key = keys.iter().find(|key| key.name == name);
                let key = key.ok_or_else(|| SchemaError::UnknownKey { path: path.clone() })?;
                dict.insert(name.clone(), from_json(key, value, &path)?);
            }
            plist::Value::Dictionary(dict)
        }
        (KeyType::OneOf(variants), J::Object(object)) => {
            let variant = pick_variant(variants, path, |name| object.get(name).and_then(json_scalar))?;
            return from_json(variant, value, path);
        }
        (KeyType::AnyDictionary, J::Object(_)) | (KeyType::Any, _) => natural_plist(value, path)?,
        (ty, other) => {
            return Err(SchemaError::WrongType {
                path: path.into(),
                expected: ty.describe(),
                found: json_kind(other),
            });
        }
    })
}

/// The plist value a JSON value most plainly stands for (free-form keys have no schema to follow).
fn natural_plist(value: &serde_json::Value, path: &str) -> Result<plist::Value, SchemaError> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => return Err(SchemaError::Null { path: path.into() }),
        J::Bool(b) => plist::Value::Boolean(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => plist::Value::Integer(i.into()),
            (None, Some(u)) => plist::Value::Integer(u.into()),
            (None, None) => plist::Value::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => plist::Value::String(s.clone()),
        J::Array(items) => plist::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(index, item)| natural_plist(item, &format!("{path}[{index}]")))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(object) => {
            let mut dict = plist::Dictionary::new();
            for (name, value) in object {
                dict.insert(name.clone(), natural_plist(value, &join(path, name))?);
            }
            plist::Value::Dictionary(dict)
        }
    })
}

fn json_scalar(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// A device's plist result as JSON for the API: data as standard base64, dates as RFC 3339.
pub fn plist_to_json(value: &plist::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        plist::Value::Array(items) => J::Array(items.iter().map(plist_to_json).collect()),
        plist::Value::Dictionary(dict) => J::Object(
            dict.iter()
                .map(|(key, value)| (key.clone(), plist_to_json(value)))
                .collect(),
        ),
        plist::Value::Boolean(b) => J::Bool(*b),
        plist::Value::Data(bytes) => J::String(BASE64.encode(bytes)),
        plist::Value::Date(date) => J::String(date.to_xml_format()),
        // NaN and infinities have no JSON form.
        plist::Value::Real(r) => serde_json::Number::from_f64(*r).map_or(J::Null, J::Number),
        plist::Value::Integer(i) => match (i.as_signed(), i.as_unsigned()) {
            (Some(i), _) => J::from(i),
            (None, Some(u)) => J::from(u),
            (None, None) => J::Null,
        },
        plist::Value::String(s) => J::String(s.clone()),
        plist::Value::Uid(uid) => J::from(uid.get()),
        _ => J::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Builds, validates against its own spec, and returns the command dictionary.
    fn built<C: MdmCommand>(command: C) -> plist::Dictionary {
        let dict = command.to_command();
        let spec = validate(&dict).unwrap_or_else(|error| panic!("{}: {error}", C::REQUEST_TYPE));
        assert_eq!(spec.request_type, C::REQUEST_TYPE);
        assert_eq!(
            dict.get("RequestType").and_then(plist::Value::as_string),
            Some(C::REQUEST_TYPE)
        );
        dict
    }

    fn error(value: serde_json::Value) -> String {
        command_from_json(&value).unwrap_err().to_string()
    }

    #[test]
    fn spec_finds_every_command_and_nothing_else() {
        assert!(COMMANDS.len() >= 60, "{} commands", COMMANDS.len());
        assert!(
            COMMANDS
                .windows(2)
                .all(|pair| pair[0].request_type < pair[1].request_type)
        );
        for command in COMMANDS {
            assert!(std::ptr::eq(spec(command.request_type).unwrap(), command));
        }
        let info = spec("DeviceInformation").unwrap();
        assert!(info.ios.is_supported() && info.support(Platform::MacOs).is_supported());
        assert!(info.key("Queries").unwrap().required);
        assert!(spec("deviceinformation").is_none());
        assert!(spec("NoSuchCommand").is_none());
    }

    #[test]
    fn every_listed_builder_validates_against_its_spec() {
        let info = built(DeviceInformation {
            queries: vec!["UDID".into(), "OSVersion".into()],
            ..Default::default()
        });
        assert_eq!(
            info.get("Queries").and_then(|q| q.as_array()).map(Vec::len),
            Some(2)
        );
        built(SecurityInfo::default());
        built(InstalledApplicationList {
            identifiers: Some(vec!["com.example.app".into()]),
            managed_apps_only: Some(true),
            items: Some(vec!["Identifier".into(), "ShortVersion".into()]),
        });
        built(ManagedApplicationList {
            identifiers: Some(vec!["com.example.app".into()]),
        });
        built(ProfileList {
            managed_only: Some(true),
        });
        built(CertificateList::default());
        let profile = built(InstallProfile {
            payload: b"<plist/>".to_vec(),
        });
        assert_eq!(
            profile.get("Payload"),
            Some(&plist::Value::Data(b"<plist/>".to_vec()))
        );
        built(RemoveProfile {
            identifier: "com.example.wifi".into(),
        });
        let lock = built(DeviceLock {
            message: Some("Call IT".into()),
            pin: Some("123456".into()),
            ..Default::default()
        });
        assert_eq!(lock.get("PIN").and_then(plist::Value::as_string), Some("123456"));
        assert!(lock.get("PhoneNumber").is_none());
        built(EraseDevice {
            obliteration_behavior: Some("DoNotObliterate".into()),
            return_to_service: Some(EraseDeviceReturnToService {
                enabled: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        built(ClearPasscode {
            unlock_token: vec![1, 2, 3],
        });
        built(RestartDevice {
            notify_user: Some(true),
            ..Default::default()
        });
        built(ShutDownDevice::default());
        built(EnableLostMode {
            message: Some("Lost".into()),
            ..Default::default()
        });
        built(DisableLostMode::default());
        built(DeviceLocation::default());
        built(PlayLostModeSound::default());
        let install = built(InstallApplication {
            i_tunes_store_id: Some(361309726),
            management_flags: Some(1),
            options: Some(InstallApplicationOptions {
                purchase_method: Some(1),
            }),
            configuration: Some(plist::Dictionary::from_iter([(
                "Server",
                plist::Value::from("x"),
            )])),
            ..Default::default()
        });
        assert!(install.contains_key("iTunesStoreID") && install.contains_key("Options"));
        built(RemoveApplication {
            identifier: "com.example.app".into(),
        });
        let settings = built(Settings {
            settings: vec![
                SettingsItem::DeviceName(SettingsDeviceName {
                    device_name: "Lab 1".into(),
                }),
                SettingsItem::Bluetooth(SettingsBluetooth { enabled: false }),
                SettingsItem::Wallpaper(SettingsWallpaper {
                    image: vec![0xff],
                    r#where: 3,
                }),
            ],
        });
        let items = settings.get("Settings").and_then(|s| s.as_array()).unwrap();
        let first = items[0].as_dictionary().unwrap();
        assert_eq!(
            first.get("Item").and_then(plist::Value::as_string),
            Some("DeviceName")
        );
        // Fixed values are written by the builder, not asked for.
        let media = built(InstallMedia {
            media_url: Some("https://example.com/a.pdf".into()),
            ..Default::default()
        });
        assert_eq!(
            media.get("MediaType").and_then(plist::Value::as_string),
            Some("Book")
        );
        built(ScheduleOSUpdate {
            updates: vec![ScheduleOSUpdateUpdatesItem {
                install_action: "InstallASAP".into(),
                ..Default::default()
            }],
        });
    }

    #[test]
    fn validate_names_the_key_path_that_is_wrong() {
        let missing = error(json!({"RequestType": "DeviceInformation"}));
        assert_eq!(missing, "Queries: required key missing");
        let unknown = error(json!({"RequestType": "DeviceInformation", "Queries": [], "Querys": []}));
        assert!(unknown.starts_with("Querys: unknown key"), "{unknown}");

        let mut info = DeviceInformation {
            queries: vec!["UDID".into(), "Model".into()],
            ..Default::default()
        }
        .to_command();
        if let Some(plist::Value::Array(queries)) = info.get_mut("Queries") {
            queries.push(plist::Value::Integer(3.into()));
        }
        assert_eq!(
            validate(&info).unwrap_err().to_string(),
            "Queries[2]: expected string, found integer"
        );

        let erase = error(json!({"RequestType": "EraseDevice", "ObliterationBehavior": "Sometimes"}));
        assert!(
            erase.starts_with("ObliterationBehavior: \"Sometimes\" is not one of: Default,"),
            "{erase}"
        );
        let query = error(json!({"RequestType": "DeviceInformation", "Queries": ["UDID", "Colour"]}));
        assert!(
            query.starts_with("Queries[1]: \"Colour\" is not one of"),
            "{query}"
        );
        let item = error(json!({"RequestType": "Settings", "Settings": [
            {"Item": "Bluetooth", "Enabled": true}, {"Item": "Bluetoth", "Enabled": true}]}));
        assert!(
            item.starts_with("Settings[1].Item: \"Bluetoth\" is not one of: Wallpaper,"),
            "{item}"
        );
        let enabled =
            error(json!({"RequestType": "Settings", "Settings": [{"Item": "Bluetooth", "Enabled": 1}]}));
        assert_eq!(enabled, "Settings[0].Enabled: expected boolean, found number");
        let nested = error(json!({"RequestType": "ScheduleOSUpdate", "Updates": [{"ProductKey": "x"}]}));
        assert_eq!(nested, "Updates[0].InstallAction: required key missing");
        let option = error(json!({"RequestType": "InstallApplication", "Options": {"PurchaseMethod": 2}}));
        assert_eq!(option, "Options.PurchaseMethod: \"2\" is not one of: 0, 1");

        assert_eq!(
            error(json!({"Queries": []})),
            "RequestType: missing; every command names its request type"
        );
        assert_eq!(
            error(json!({"RequestType": "Reboot"})),
            "RequestType: unknown command \"Reboot\""
        );
        assert_eq!(
            error(json!(["DeviceInformation"])),
            SchemaError::NotAnObject.to_string()
        );
        let mut typed = plist::Dictionary::new();
        typed.insert("RequestType".into(), plist::Value::Integer(1.into()));
        assert_eq!(
            validate(&typed).unwrap_err().to_string(),
            "RequestType: expected string, found integer"
        );
    }

    #[test]
    fn json_commands_become_the_plist_the_device_expects() {
        let info =
            command_from_json(&json!({"RequestType": "DeviceInformation", "Queries": ["UDID", "Model"]}));
        assert_eq!(
            info.unwrap(),
            DeviceInformation {
                queries: vec!["UDID".into(), "Model".into()],
                ..Default::default()
            }
            .to_command()
        );

        let profile = command_from_json(&json!({"RequestType": "InstallProfile", "Payload": "PHBsaXN0Lz4="}));
        assert_eq!(
            profile.unwrap().get("Payload"),
            Some(&plist::Value::Data(b"<plist/>".to_vec()))
        );
        let bad = error(json!({"RequestType": "InstallProfile", "Payload": "not base64!"}));
        assert_eq!(bad, "Payload: expected standard base64 data");

        let lost = command_from_json(&json!({
            "RequestType": "EnableLostMode", "Message": "Please return", "PhoneNumber": "+1 555 0100",
        }))
        .unwrap();
        let expected = EnableLostMode {
            message: Some("Please return".into()),
            phone_number: Some("+1 555 0100".into()),
            footnote: None,
        };
        assert_eq!(lost, expected.to_command());
        let null = error(json!({"RequestType": "EnableLostMode", "Footnote": null}));
        assert_eq!(null, "Footnote: null is not allowed; leave the key out instead");

        let install = command_from_json(&json!({
            "RequestType": "InstallApplication", "iTunesStoreID": 361309726, "ManagementFlags": 1,
            "Configuration": {"Server": "mdm.example.com", "Port": 443, "Ratio": 0.5, "Tags": ["a"]},
        }))
        .unwrap();
        assert_eq!(
            install.get("iTunesStoreID"),
            Some(&plist::Value::Integer(361309726.into()))
        );
        let configuration = install
            .get("Configuration")
            .and_then(|c| c.as_dictionary())
            .unwrap();
        assert_eq!(
            configuration.get("Port"),
            Some(&plist::Value::Integer(443.into()))
        );
        assert_eq!(configuration.get("Ratio"), Some(&plist::Value::Real(0.5)));
        let fraction = error(json!({"RequestType": "InstallApplication", "ManagementFlags": 1.5}));
        assert_eq!(
            fraction,
            "ManagementFlags: expected integer, found number with a fraction"
        );
        let unknown = error(json!({"RequestType": "InstallApplication", "Options": {"Purchase": 1}}));
        assert!(unknown.starts_with("Options.Purchase: unknown key"), "{unknown}");

        let settings = command_from_json(&json!({"RequestType": "Settings", "Settings": [
            {"Item": "DeviceName", "DeviceName": "Lab 1"}, {"Item": "Wallpaper", "Image": "/w==", "Where": 1}]}));
        let expected = Settings {
            settings: vec![
                SettingsItem::DeviceName(SettingsDeviceName {
                    device_name: "Lab 1".into(),
                }),
                SettingsItem::Wallpaper(SettingsWallpaper {
                    image: vec![0xff],
                    r#where: 1,
                }),
            ],
        };
        assert_eq!(settings.unwrap(), expected.to_command());
    }

    #[test]
    fn plist_results_become_json() {
        let date = plist::Date::from_xml_format("2025-01-31T12:00:00Z").unwrap();
        let result = plist::Value::Dictionary(plist::Dictionary::from_iter([
            ("Data", plist::Value::Data(vec![1, 2, 3])),
            ("Date", plist::Value::Date(date)),
            ("Big", plist::Value::Integer(u64::MAX.into())),
            ("Negative", plist::Value::Integer((-5).into())),
            ("Real", plist::Value::Real(1.5)),
            ("Uid", plist::Value::Uid(plist::Uid::new(7))),
            (
                "List",
                plist::Value::Array(vec![plist::Value::Boolean(true), plist::Value::from("x")]),
            ),
        ]));
        assert_eq!(
            plist_to_json(&result),
            json!({"Data": "AQID", "Date": "2025-01-31T12:00:00Z", "Big": u64::MAX, "Negative": -5,
                   "Real": 1.5, "Uid": 7, "List": [true, "x"]})
        );
        assert_eq!(
            plist_to_json(&plist::Value::Real(f64::NAN)),
            serde_json::Value::Null
        );
    }

    /// Apple's schema checkout, found beside the repository (as on the build machines).
    fn apple_schema() -> Option<std::path::PathBuf> {
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        here.ancestors()
            .map(|dir| dir.join("shared/apple-device-management"))
            .find(|dir| dir.is_dir())
    }

    #[test]
    fn example_requests_in_the_schema_validate() {
        let Some(root) = apple_schema() else {
            eprintln!("skipped: Apple's device-management schema is not beside the repository");
            return;
        };
        let mut pending = vec![root];
        let mut checked = 0;
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|ext| ext == "plist") {
                    let value = plist::Value::from_file(&path).unwrap();
                    let Some(dict) = value.as_dictionary() else {
                        continue;
                    };
                    // A full request wraps the command; a bare command carries RequestType itself.
                    let command = dict
                        .get("Command")
                        .and_then(plist::Value::as_dictionary)
                        .unwrap_or(dict);
                    if command.contains_key("RequestType") {
                        validate(command).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                        checked += 1;
                    }
                }
            }
        }
        eprintln!("validated {checked} example request plists");
    }
}
