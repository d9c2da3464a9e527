//! The typed inventory of one device, as its command results describe it.
//!
//! Field names say what they hold (`serial_number`, `os_version`, …) because they are the
//! admin API's JSON and the CSV export's column names. A field is `None` until the device has
//! reported it — or when privacy rules forbid collecting it.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The operating system family, from the model the device reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Ipados,
    Macos,
    Tvos,
    Visionos,
    Watchos,
    #[default]
    Unknown,
}

impl Platform {
    /// Reads the platform from `ProductName` (`iPhone15,2`, `Mac14,2`) or `Model`/`ModelName`.
    pub fn from_model(names: &[Option<&str>]) -> Self {
        for name in names.iter().flatten() {
            let platform = if name.starts_with("iPhone") || name.starts_with("iPod") {
                Self::Ios
            } else if name.starts_with("iPad") {
                Self::Ipados
            } else if name.starts_with("Mac") || name.starts_with("iMac") || name.starts_with("VirtualMac") {
                Self::Macos
            } else if name.starts_with("AppleTV") || name.starts_with("Apple TV") {
                Self::Tvos
            } else if name.starts_with("RealityDevice") || name.starts_with("Apple Vision") {
                Self::Visionos
            } else if name.starts_with("Watch") {
                Self::Watchos
            } else {
                continue;
            };
            return platform;
        }
        Self::Unknown
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ios => "ios",
            Self::Ipados => "ipados",
            Self::Macos => "macos",
            Self::Tvos => "tvos",
            Self::Visionos => "visionos",
            Self::Watchos => "watchos",
            Self::Unknown => "unknown",
        }
    }
}

/// Who owns the device, which decides what may be collected from it and done to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    #[default]
    Corporate,
    Personal,
}

impl Ownership {
    pub fn name(self) -> &'static str {
        match self {
            Self::Corporate => "corporate",
            Self::Personal => "personal",
        }
    }
}

/// Everything known about one device (its device channel's enrollment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeviceInventory {
    pub enrollment_id: String,
    pub platform: Platform,
    pub device_name: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub model_number: Option<String>,
    pub product_name: Option<String>,
    pub serial_number: Option<String>,
    pub udid: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
    pub iccid: Option<String>,
    pub phone_number: Option<String>,
    pub cellular_technology: Option<i64>,
    pub current_carrier_network: Option<String>,
    pub subscriber_carrier_network: Option<String>,
    pub is_roaming: Option<bool>,
    pub data_roaming_enabled: Option<bool>,
    pub voice_roaming_enabled: Option<bool>,
    pub personal_hotspot_enabled: Option<bool>,
    pub wifi_mac: Option<String>,
    pub bluetooth_mac: Option<String>,
    pub ethernet_macs: Vec<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub supplemental_build_version: Option<String>,
    /// 0.0 – 1.0.
    pub battery_level: Option<f64>,
    /// Decimal gigabytes, as the OS reports them.
    pub storage_capacity_gb: Option<f64>,
    pub storage_available_gb: Option<f64>,
    pub is_supervised: Option<bool>,
    pub activation_lock_enabled: Option<bool>,
    pub find_my_enabled: Option<bool>,
    pub lost_mode_enabled: Option<bool>,
    pub cloud_backup_enabled: Option<bool>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_cloud_backup_at: Option<OffsetDateTime>,
    pub is_apple_silicon: Option<bool>,
    pub host_name: Option<String>,
    pub local_host_name: Option<String>,
    pub time_zone: Option<String>,
    pub awaiting_configuration: Option<bool>,
    pub passcode_present: Option<bool>,
    pub passcode_compliant: Option<bool>,
    pub passcode_compliant_with_profiles: Option<bool>,
    /// `HardwareEncryptionCaps`: 1 block-level, 2 file-level (data protection), 3 both.
    pub hardware_encryption_caps: Option<i64>,
    /// Data at rest is protected: data protection on iOS (caps & 2 with a passcode), FileVault on
    /// macOS.
    pub storage_encrypted: Option<bool>,
    pub filevault_enabled: Option<bool>,
    pub firewall_enabled: Option<bool>,
    pub sip_enabled: Option<bool>,
    pub enrolled_via_dep: Option<bool>,
    pub user_approved_enrollment: Option<bool>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub information_updated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub security_updated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub apps_updated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub profiles_updated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub certificates_updated_at: Option<OffsetDateTime>,
}

/// One app on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledApp {
    pub bundle_id: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub short_version: Option<String>,
    /// App bundle plus data, bytes.
    pub size_bytes: Option<u64>,
    /// Installed by this MDM (from ManagedApplicationList or a managed-apps-only list).
    pub managed: bool,
}

/// One configuration profile on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledProfile {
    pub identifier: String,
    pub uuid: Option<String>,
    pub display_name: Option<String>,
    pub organization: Option<String>,
    pub is_managed: Option<bool>,
    pub is_encrypted: Option<bool>,
    pub removal_disallowed: Option<bool>,
}

/// One certificate in the device's keychain, as CertificateList reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledCertificate {
    pub common_name: Option<String>,
    pub is_identity: bool,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub serial_hex: Option<String>,
    pub sha256: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub not_after: Option<OffsetDateTime>,
}

/// Where a device in lost mode said it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationFix {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub latitude: f64,
    pub longitude: f64,
    /// Metres.
    pub horizontal_accuracy: Option<f64>,
    pub altitude: Option<f64>,
    pub speed: Option<f64>,
    /// When the device took the fix, if it said.
    pub timestamp: Option<String>,
}

/// A change in a tracked field between two reports (the device's history).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryChange {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}
