//! What people and other systems may see of a command or a device's answer: secrets
//! replaced, locations kept for those who may locate devices, embedded data described. Used by
//! the command API (per reader) and the webhook (never locations).

use plist::{Dictionary, Value};

/// Keys whose values are secrets wherever they appear in a command or an answer (compared
/// without case; see [`is_secret`] for the endings that count too).
const SECRET_KEYS: &[&str] = &[
    "pin",
    "unlocktoken",
    "activationlockbypasscode",
    "bootstraptoken",
    "recoverykey",
    "personalrecoverykey",
];

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEYS.contains(&key.as_str())
        || ["password", "passcode", "secret", "token", "apikey", "privatekey"]
            .iter()
            .any(|end| key.ends_with(end))
}

/// What a reader of commands may see of a command or an answer: secrets replaced by
/// `<redacted>` at any depth, locations hidden unless `reveal_location`, and embedded data (a
/// profile can carry a Wi-Fi key or a certificate's password) described rather than shown.
pub fn redact(value: &mut Value, reveal_location: bool) {
    match value {
        Value::Data(bytes) => *value = Value::String(data_description(bytes)),
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, reveal_location)),
        Value::Dictionary(d) => {
            for (key, v) in d.iter_mut() {
                if is_secret(key) {
                    *v = Value::String("<redacted>".into());
                } else if key == "Configuration"
                    && let Value::Dictionary(settings) = v
                {
                    // A managed app's configuration: its keys are the app's own (API keys,
                    // client secrets under any name).
                    *v = Value::String(format!("<app configuration, {} keys, not shown>", settings.len()));
                } else if !reveal_location && crate::inventory::LOCATION_KEYS.contains(&key.as_str()) {
                    *v = Value::String("<hidden: needs devices.locate>".into());
                } else {
                    redact(v, reveal_location);
                }
            }
        }
        _ => {}
    }
}

/// A stored plist as a reader may see it (see [`redact`]).
pub fn redacted(plist: Dictionary, reveal_location: bool) -> Dictionary {
    let mut value = Value::Dictionary(plist);
    redact(&mut value, reveal_location);
    value.into_dictionary().unwrap_or_default()
}

fn data_description(bytes: &[u8]) -> String {
    let size = bytes.len();
    let Ok(profile) = plist::from_bytes::<Dictionary>(bytes) else {
        // Signed profiles (CMS) and certificates: opaque here.
        return format!("<{size} bytes, not shown>");
    };
    let text = |k: &str| {
        profile
            .get(k)
            .and_then(Value::as_string)
            .unwrap_or("?")
            .to_owned()
    };
    let types: Vec<&str> = profile
        .get("PayloadContent")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|p| p.as_dictionary()?.get("PayloadType")?.as_string())
                .collect()
        })
        .unwrap_or_default();
    format!(
        "<profile {} ({}), payloads: {}; {size} bytes, contents not shown>",
        text("PayloadIdentifier"),
        text("PayloadDisplayName"),
        if types.is_empty() {
            "none".to_owned()
        } else {
            types.join(", ")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml_text_of(value: &Value) -> String {
        let mut out = Vec::new();
        plist::to_writer_xml(&mut out, value).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn secrets_in_commands_are_not_shown() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Command</key><dict><key>RequestType</key><string>DeviceLock</string>
<key>PIN</key><string>482913</string><key>Message</key><string>Call IT</string></dict>
<key>CommandUUID</key><string>A</string></dict></plist>"#;
        let parsed = plist::from_bytes::<Dictionary>(xml.as_bytes()).unwrap_or_default();
        let shown = xml_text_of(&Value::Dictionary(redacted(parsed, false)));
        assert!(!shown.contains("482913"), "{shown}");
        assert!(shown.contains("<string>&lt;redacted&gt;</string>"), "{shown}");
        assert!(shown.contains("Call IT"), "{shown}");
    }

    #[test]
    fn profiles_in_commands_are_described_not_shown() {
        let profile = r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>PayloadIdentifier</key><string>org.example.wifi</string>
<key>PayloadDisplayName</key><string>Ward Wi-Fi</string><key>PayloadContent</key><array>
<dict><key>PayloadType</key><string>com.apple.wifi.managed</string><key>Password</key><string>s3cret-psk</string></dict>
</array></dict></plist>"#;
        let mut command = Dictionary::new();
        command.insert("RequestType".into(), Value::String("InstallProfile".into()));
        command.insert("Payload".into(), Value::Data(profile.as_bytes().to_vec()));
        let mut plist = Dictionary::new();
        plist.insert("Command".into(), Value::Dictionary(command));
        let shown = xml_text_of(&Value::Dictionary(redacted(plist, true)));
        assert!(!shown.contains("s3cret-psk"), "{shown}");
        assert!(!shown.contains("<data>"), "{shown}");
        assert!(
            shown.contains("org.example.wifi (Ward Wi-Fi), payloads: com.apple.wifi.managed;"),
            "{shown}"
        );
        assert!(data_description(b"\x30\x82\x01").starts_with("<3 bytes"));
    }

    #[test]
    fn nested_secrets_and_locations_are_not_shown() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Command</key><dict><key>RequestType</key><string>RotateFileVaultKey</string>
<key>FileVaultUnlock</key><dict><key>Password</key><string>hunter2-vault</string></dict>
<key>PrivateKeyExportPassword</key><string>export-me</string>
<key>Items</key><array><dict><key>ActivationLockBypassCode</key><string>BYPASS-1</string></dict></array>
</dict></dict></plist>"#;
        let parsed = plist::from_bytes::<Dictionary>(xml.as_bytes()).unwrap_or_default();
        let shown = xml_text_of(&Value::Dictionary(redacted(parsed, true)));
        for secret in ["hunter2-vault", "export-me", "BYPASS-1"] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
        assert!(shown.contains("RotateFileVaultKey"), "{shown}");

        let answer = r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Status</key><string>Acknowledged</string>
<key>Latitude</key><real>51.5072</real><key>Longitude</key><real>-0.1276</real>
<key>Timestamp</key><string>2026-12-06T10:00:00Z</string></dict></plist>"#;
        let parsed = plist::from_bytes::<Dictionary>(answer.as_bytes()).unwrap_or_default();
        let hidden = xml_text_of(&Value::Dictionary(redacted(parsed.clone(), false)));
        assert!(
            !hidden.contains("51.5072") && !hidden.contains("-0.1276"),
            "{hidden}"
        );
        assert!(hidden.contains("Acknowledged"), "{hidden}");
        let revealed = xml_text_of(&Value::Dictionary(redacted(parsed, true)));
        assert!(revealed.contains("51.5072"), "{revealed}");
    }

    #[test]
    fn app_configurations_and_named_secrets_are_not_shown() {
        let mut config = Dictionary::new();
        config.insert("serverURL".into(), Value::String("https://ehr.example".into()));
        config.insert("apiKey".into(), Value::String("k-123".into()));
        let mut command = Dictionary::new();
        command.insert("RequestType".into(), Value::String("InstallApplication".into()));
        command.insert("Configuration".into(), Value::Dictionary(config));
        command.insert("ClientSecret".into(), Value::String("s-456".into()));
        command.insert("AuthToken".into(), Value::String("t-789".into()));
        let mut plist = Dictionary::new();
        plist.insert("Command".into(), Value::Dictionary(command));
        let shown = xml_text_of(&Value::Dictionary(redacted(plist, true)));
        for secret in ["k-123", "s-456", "t-789", "ehr.example"] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
        assert!(shown.contains("app configuration, 2 keys, not shown"), "{shown}");
    }
}
