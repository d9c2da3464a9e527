//! Command results → the typed inventory. Pure functions over the result plists: no store,
//! no clock (the caller passes `now`).
//!
//! Only keys that are present change a field: a DeviceInformation result holds just the
//! queried keys, so an absent key means "not asked", not "gone".

use plist::{Dictionary, Value};
use time::OffsetDateTime;

use super::record::{DeviceInventory, InstalledApp, InstalledCertificate, InstalledProfile, Ownership};

/// Longest string kept from a device (names, versions): more is noise or abuse.
const MAX_TEXT: usize = 256;
/// Most list entries kept per device (apps, profiles, certificates).
pub const MAX_ITEMS: usize = 5_000;

fn text(dict: &Dictionary, key: &str) -> Option<String> {
    dict.get(key)
        .and_then(Value::as_string)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(MAX_TEXT).collect())
}

fn boolean(dict: &Dictionary, key: &str) -> Option<bool> {
    dict.get(key).and_then(Value::as_boolean)
}

fn real(dict: &Dictionary, key: &str) -> Option<f64> {
    match dict.get(key)? {
        Value::Real(r) if r.is_finite() => Some(*r),
        Value::Integer(i) => i.as_signed().map(|i| i as f64),
        _ => None,
    }
}

fn integer(dict: &Dictionary, key: &str) -> Option<i64> {
    dict.get(key).and_then(Value::as_signed_integer)
}

fn date(dict: &Dictionary, key: &str) -> Option<OffsetDateTime> {
    let d = dict.get(key)?.as_date()?;
    Some(OffsetDateTime::from(std::time::SystemTime::from(d)))
}

/// Sets `field` when `value` is present (an absent key leaves what we knew).
fn set<T>(field: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *field = value;
    }
}

/// Applies a DeviceInformation result's `QueryResponses`.
pub fn apply_device_information(
    inv: &mut DeviceInventory,
    q: &Dictionary,
    ownership: Ownership,
    now: OffsetDateTime,
) {
    set(&mut inv.device_name, text(q, "DeviceName"));
    set(&mut inv.model, text(q, "Model"));
    set(&mut inv.model_name, text(q, "ModelName"));
    set(&mut inv.model_number, text(q, "ModelNumber"));
    set(&mut inv.product_name, text(q, "ProductName"));
    set(&mut inv.serial_number, text(q, "SerialNumber"));
    set(&mut inv.udid, text(q, "UDID"));
    set(&mut inv.imei, text(q, "IMEI"));
    set(&mut inv.meid, text(q, "MEID"));
    set(&mut inv.iccid, text(q, "ICCID"));
    set(&mut inv.cellular_technology, integer(q, "CellularTechnology"));
    set(&mut inv.current_carrier_network, text(q, "CurrentCarrierNetwork"));
    set(
        &mut inv.subscriber_carrier_network,
        text(q, "SubscriberCarrierNetwork"),
    );
    set(&mut inv.is_roaming, boolean(q, "IsRoaming"));
    set(&mut inv.data_roaming_enabled, boolean(q, "DataRoamingEnabled"));
    set(&mut inv.voice_roaming_enabled, boolean(q, "VoiceRoamingEnabled"));
    set(
        &mut inv.personal_hotspot_enabled,
        boolean(q, "PersonalHotspotEnabled"),
    );
    set(&mut inv.wifi_mac, text(q, "WiFiMAC"));
    set(&mut inv.bluetooth_mac, text(q, "BluetoothMAC"));
    match q.get("EthernetMAC") {
        Some(Value::String(s)) if !s.is_empty() => {
            inv.ethernet_macs = vec![s.chars().take(MAX_TEXT).collect()]
        }
        Some(Value::Array(a)) => {
            inv.ethernet_macs = a
                .iter()
                .filter_map(Value::as_string)
                .take(16)
                .map(|s| s.chars().take(MAX_TEXT).collect())
                .collect();
        }
        _ => {}
    }
    set(&mut inv.os_version, text(q, "OSVersion"));
    set(&mut inv.build_version, text(q, "BuildVersion"));
    set(
        &mut inv.supplemental_build_version,
        text(q, "SupplementalBuildVersion"),
    );
    set(
        &mut inv.battery_level,
        real(q, "BatteryLevel").filter(|b| (0.0..=1.0).contains(b)),
    );
    set(
        &mut inv.storage_capacity_gb,
        real(q, "DeviceCapacity").filter(|c| *c >= 0.0),
    );
    set(
        &mut inv.storage_available_gb,
        real(q, "AvailableDeviceCapacity").filter(|c| *c >= 0.0),
    );
    set(&mut inv.is_supervised, boolean(q, "IsSupervised"));
    set(
        &mut inv.activation_lock_enabled,
        boolean(q, "IsActivationLockEnabled"),
    );
    set(
        &mut inv.find_my_enabled,
        boolean(q, "IsDeviceLocatorServiceEnabled"),
    );
    set(&mut inv.lost_mode_enabled, boolean(q, "IsMDMLostModeEnabled"));
    set(&mut inv.cloud_backup_enabled, boolean(q, "IsCloudBackupEnabled"));
    set(&mut inv.last_cloud_backup_at, date(q, "LastCloudBackupDate"));
    set(&mut inv.is_apple_silicon, boolean(q, "IsAppleSilicon"));
    set(&mut inv.host_name, text(q, "HostName"));
    set(&mut inv.local_host_name, text(q, "LocalHostName"));
    set(&mut inv.time_zone, text(q, "TimeZone"));
    set(
        &mut inv.awaiting_configuration,
        boolean(q, "AwaitingConfiguration"),
    );
    set(
        &mut inv.sip_enabled,
        boolean(q, "SystemIntegrityProtectionEnabled"),
    );
    set(&mut inv.phone_number, text(q, "PhoneNumber"));
    enforce_privacy(inv, ownership);
    derive_encryption(inv);
    inv.information_updated_at = Some(now);
}

/// Applies a SecurityInfo result's `SecurityInfo` dictionary.
pub fn apply_security_info(inv: &mut DeviceInventory, s: &Dictionary, now: OffsetDateTime) {
    set(&mut inv.passcode_present, boolean(s, "PasscodePresent"));
    set(&mut inv.passcode_compliant, boolean(s, "PasscodeCompliant"));
    set(
        &mut inv.passcode_compliant_with_profiles,
        boolean(s, "PasscodeCompliantWithProfiles"),
    );
    set(
        &mut inv.hardware_encryption_caps,
        integer(s, "HardwareEncryptionCaps"),
    );
    set(&mut inv.filevault_enabled, boolean(s, "FDE_Enabled"));
    set(
        &mut inv.sip_enabled,
        boolean(s, "SystemIntegrityProtectionEnabled"),
    );
    if let Some(fw) = s.get("FirewallSettings").and_then(Value::as_dictionary) {
        set(&mut inv.firewall_enabled, boolean(fw, "FirewallEnabled"));
    }
    if let Some(ms) = s.get("ManagementStatus").and_then(Value::as_dictionary) {
        set(&mut inv.enrolled_via_dep, boolean(ms, "EnrolledViaDEP"));
        set(
            &mut inv.user_approved_enrollment,
            boolean(ms, "UserApprovedEnrollment"),
        );
    }
    derive_encryption(inv);
    inv.security_updated_at = Some(now);
}

/// Whether data at rest is protected: FileVault on a Mac; on iOS data protection, which needs
/// file-level hardware encryption *and* a passcode.
fn derive_encryption(inv: &mut DeviceInventory) {
    inv.storage_encrypted = match inv.platform {
        super::Platform::Macos => inv.filevault_enabled,
        _ => match (inv.hardware_encryption_caps, inv.passcode_present) {
            (Some(caps), Some(passcode)) => Some(caps & 2 != 0 && passcode),
            _ => None,
        },
    };
}

/// Clears what may not be kept for a personally owned device, whatever it sent.
pub fn enforce_privacy(inv: &mut DeviceInventory, ownership: Ownership) {
    if ownership == Ownership::Personal {
        inv.phone_number = None;
    }
}

/// Apps from an InstalledApplicationList result (`managed` when the list was managed-only).
pub fn installed_apps(result: &Dictionary, managed_only: bool) -> Vec<InstalledApp> {
    let Some(list) = result.get("InstalledApplicationList").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut apps: Vec<InstalledApp> = list
        .iter()
        .filter_map(Value::as_dictionary)
        .filter_map(|a| {
            let size = |k| a.get(k).and_then(Value::as_unsigned_integer);
            Some(InstalledApp {
                bundle_id: text(a, "Identifier")?,
                name: text(a, "Name"),
                version: text(a, "Version"),
                short_version: text(a, "ShortVersion"),
                size_bytes: match (size("BundleSize"), size("DynamicSize")) {
                    (None, None) => None,
                    (b, d) => Some(b.unwrap_or(0).saturating_add(d.unwrap_or(0))),
                },
                managed: managed_only,
            })
        })
        .take(MAX_ITEMS)
        .collect();
    apps.sort_by(|a, b| a.bundle_id.cmp(&b.bundle_id));
    apps.dedup_by(|a, b| a.bundle_id == b.bundle_id);
    apps
}

/// Bundle IDs from a ManagedApplicationList result (a dictionary keyed by bundle ID) whose
/// status says they are installed and managed.
pub fn managed_app_ids(result: &Dictionary) -> Vec<String> {
    let Some(list) = result
        .get("ManagedApplicationList")
        .and_then(Value::as_dictionary)
    else {
        return Vec::new();
    };
    list.iter()
        .filter(|(_, v)| {
            v.as_dictionary()
                .and_then(|d| d.get("Status"))
                .and_then(Value::as_string)
                .is_some_and(|s| s == "Managed" || s == "ManagedButUninstalled" || s == "UserInstalledApp")
        })
        .map(|(k, _)| k.chars().take(MAX_TEXT).collect())
        .take(MAX_ITEMS)
        .collect()
}

/// Profiles from a ProfileList result.
pub fn profiles(result: &Dictionary) -> Vec<InstalledProfile> {
    let Some(list) = result.get("ProfileList").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_dictionary)
        .filter_map(|p| {
            Some(InstalledProfile {
                identifier: text(p, "PayloadIdentifier")?,
                uuid: text(p, "PayloadUUID"),
                display_name: text(p, "PayloadDisplayName"),
                organization: text(p, "PayloadOrganization"),
                is_managed: boolean(p, "IsManaged"),
                is_encrypted: boolean(p, "IsEncrypted"),
                removal_disallowed: boolean(p, "PayloadRemovalDisallowed"),
            })
        })
        .take(MAX_ITEMS)
        .collect()
}

/// Certificates from a CertificateList result; each one's DER (`Data`) is read for its
/// subject, issuer and validity.
pub fn certificates(result: &Dictionary) -> Vec<InstalledCertificate> {
    let Some(list) = result.get("CertificateList").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_dictionary)
        .map(|c| {
            let info = c
                .get("Data")
                .and_then(Value::as_data)
                .and_then(|der| citadel_certs::inspect_der(der).ok());
            InstalledCertificate {
                common_name: text(c, "CommonName"),
                is_identity: boolean(c, "IsIdentity").unwrap_or(false),
                subject: info.as_ref().map(|i| i.subject.clone()),
                issuer: info.as_ref().map(|i| i.issuer.clone()),
                serial_hex: info.as_ref().map(|i| i.serial_hex.clone()),
                sha256: info.as_ref().map(|i| i.sha256_fingerprint.clone()),
                not_before: info.as_ref().map(|i| i.not_before),
                not_after: info.as_ref().map(|i| i.not_after),
            }
        })
        .take(MAX_ITEMS)
        .collect()
}

/// Fields whose changes go into the device's history, rendered as text.
pub fn tracked_fields(inv: &DeviceInventory) -> Vec<(&'static str, Option<String>)> {
    let b = |v: Option<bool>| v.map(|b| b.to_string());
    vec![
        ("device_name", inv.device_name.clone()),
        ("os_version", inv.os_version.clone()),
        ("build_version", inv.build_version.clone()),
        ("serial_number", inv.serial_number.clone()),
        ("phone_number", inv.phone_number.clone()),
        ("is_supervised", b(inv.is_supervised)),
        ("activation_lock_enabled", b(inv.activation_lock_enabled)),
        ("passcode_present", b(inv.passcode_present)),
        ("passcode_compliant", b(inv.passcode_compliant)),
        ("storage_encrypted", b(inv.storage_encrypted)),
        ("filevault_enabled", b(inv.filevault_enabled)),
        ("firewall_enabled", b(inv.firewall_enabled)),
        ("sip_enabled", b(inv.sip_enabled)),
        ("lost_mode_enabled", b(inv.lost_mode_enabled)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Platform;

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-28 12:00 UTC);

    fn dict(xml: &str) -> Dictionary {
        plist::from_bytes(xml.as_bytes()).unwrap()
    }

    #[test]
    fn device_information_fills_only_what_was_reported() {
        let mut inv = DeviceInventory {
            platform: Platform::Ios,
            device_name: Some("Ward 7 iPhone".into()),
            ..Default::default()
        };
        let q = dict(
            r#"<plist version="1.0"><dict>
            <key>OSVersion</key><string>18.1</string>
            <key>SerialNumber</key><string>F2LXK0QJHG7F</string>
            <key>BatteryLevel</key><real>0.82</real>
            <key>DeviceCapacity</key><real>128.0</real>
            <key>AvailableDeviceCapacity</key><integer>51</integer>
            <key>IsSupervised</key><true/>
            <key>PhoneNumber</key><string>+44 7700 900123</string>
            <key>EthernetMAC</key><array><string>a0:b1:c2:d3:e4:f5</string></array>
            <key>LastCloudBackupDate</key><date>2026-11-27T03:00:00Z</date>
            </dict></plist>"#,
        );
        apply_device_information(&mut inv, &q, Ownership::Corporate, NOW);
        assert_eq!(
            inv.device_name.as_deref(),
            Some("Ward 7 iPhone"),
            "not asked, so kept"
        );
        assert_eq!(inv.os_version.as_deref(), Some("18.1"));
        assert_eq!(inv.serial_number.as_deref(), Some("F2LXK0QJHG7F"));
        assert_eq!(inv.battery_level, Some(0.82));
        assert_eq!(inv.storage_capacity_gb, Some(128.0));
        assert_eq!(inv.storage_available_gb, Some(51.0));
        assert_eq!(inv.is_supervised, Some(true));
        assert_eq!(inv.phone_number.as_deref(), Some("+44 7700 900123"));
        assert_eq!(inv.ethernet_macs, vec!["a0:b1:c2:d3:e4:f5".to_owned()]);
        assert_eq!(
            inv.last_cloud_backup_at,
            Some(time::macros::datetime!(2026-11-27 03:00 UTC))
        );
        assert_eq!(inv.information_updated_at, Some(NOW));

        // A personal device's phone number is dropped even when the device sends it.
        apply_device_information(&mut inv, &q, Ownership::Personal, NOW);
        assert_eq!(inv.phone_number, None);

        // Nonsense values are ignored rather than stored.
        let bad = dict(
            r#"<plist version="1.0"><dict><key>BatteryLevel</key><real>7.5</real>
            <key>OSVersion</key><integer>18</integer></dict></plist>"#,
        );
        apply_device_information(&mut inv, &bad, Ownership::Corporate, NOW);
        assert_eq!(inv.battery_level, Some(0.82));
        assert_eq!(inv.os_version.as_deref(), Some("18.1"));
    }

    #[test]
    fn security_info_decides_encryption_per_platform() {
        let ios = dict(
            r#"<plist version="1.0"><dict><key>HardwareEncryptionCaps</key><integer>3</integer>
            <key>PasscodePresent</key><true/><key>PasscodeCompliant</key><true/></dict></plist>"#,
        );
        let mut inv = DeviceInventory {
            platform: Platform::Ios,
            ..Default::default()
        };
        apply_security_info(&mut inv, &ios, NOW);
        assert_eq!(inv.storage_encrypted, Some(true));
        let no_passcode =
            dict(r#"<plist version="1.0"><dict><key>PasscodePresent</key><false/></dict></plist>"#);
        apply_security_info(&mut inv, &no_passcode, NOW);
        assert_eq!(
            (inv.passcode_present, inv.storage_encrypted),
            (Some(false), Some(false))
        );

        let mac = dict(
            r#"<plist version="1.0"><dict><key>FDE_Enabled</key><false/>
            <key>SystemIntegrityProtectionEnabled</key><true/>
            <key>FirewallSettings</key><dict><key>FirewallEnabled</key><true/></dict>
            <key>ManagementStatus</key><dict><key>EnrolledViaDEP</key><false/>
            <key>UserApprovedEnrollment</key><true/></dict></dict></plist>"#,
        );
        let mut inv = DeviceInventory {
            platform: Platform::Macos,
            ..Default::default()
        };
        apply_security_info(&mut inv, &mac, NOW);
        assert_eq!(inv.filevault_enabled, Some(false));
        assert_eq!(inv.storage_encrypted, Some(false));
        assert_eq!(inv.firewall_enabled, Some(true));
        assert_eq!(inv.sip_enabled, Some(true));
        assert_eq!(inv.user_approved_enrollment, Some(true));
    }

    #[test]
    fn lists_are_read_bounded_and_deduplicated() {
        let apps = dict(
            r#"<plist version="1.0"><dict><key>InstalledApplicationList</key><array>
            <dict><key>Identifier</key><string>org.hospital.rota</string><key>Name</key><string>Rota</string>
              <key>ShortVersion</key><string>2.1</string><key>BundleSize</key><integer>1000</integer>
              <key>DynamicSize</key><integer>24</integer></dict>
            <dict><key>Identifier</key><string>com.apple.mobilesafari</string></dict>
            <dict><key>Identifier</key><string>org.hospital.rota</string></dict>
            <dict><key>Name</key><string>no identifier</string></dict>
            </array></dict></plist>"#,
        );
        let list = installed_apps(&apps, false);
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].bundle_id, "org.hospital.rota");
        assert_eq!(list[1].size_bytes, Some(1024));
        assert_eq!(list[0].size_bytes, None);

        let managed = dict(
            r#"<plist version="1.0"><dict><key>ManagedApplicationList</key><dict>
            <key>org.hospital.rota</key><dict><key>Status</key><string>Managed</string></dict>
            <key>com.example.failed</key><dict><key>Status</key><string>Failed</string></dict>
            </dict></dict></plist>"#,
        );
        assert_eq!(managed_app_ids(&managed), vec!["org.hospital.rota".to_owned()]);

        let profiles = profiles(&dict(
            r#"<plist version="1.0"><dict><key>ProfileList</key><array>
            <dict><key>PayloadIdentifier</key><string>org.hospital.wifi</string>
            <key>PayloadDisplayName</key><string>Wi-Fi</string><key>IsManaged</key><true/></dict>
            </array></dict></plist>"#,
        ));
        assert_eq!(profiles[0].identifier, "org.hospital.wifi");
        assert_eq!(profiles[0].is_managed, Some(true));
        assert!(certificates(&Dictionary::new()).is_empty());
    }
}
