//! A virtual Apple device for the fleet simulator: a plausible, seeded identity and the answers
//! the real OS gives to MDM commands (only the queried keys, profiles that were really
//! installed, a location only in lost mode, NotNow now and then, errors for what it does not
//! know).

use plist::{Dictionary, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Iphone,
    Ipad,
    Mac,
}

impl Platform {
    pub fn name(self) -> &'static str {
        match self {
            Platform::Iphone => "iphone",
            Platform::Ipad => "ipad",
            Platform::Mac => "mac",
        }
    }
}

/// What a device is: stable for a given seed and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub platform: Platform,
    pub udid: String,
    pub serial_number: String,
    pub model: &'static str,
    pub model_name: &'static str,
    pub product_name: &'static str,
    pub device_name: String,
    pub os_version: &'static str,
    pub build_version: &'static str,
    pub imei: Option<String>,
}

const IPHONES: &[(&str, &str)] = &[
    ("iPhone15,2", "D73AP"),
    ("iPhone16,1", "D83AP"),
    ("iPhone17,3", "D47AP"),
];
const IPADS: &[(&str, &str)] = &[
    ("iPad13,1", "J307AP"),
    ("iPad14,3", "J617AP"),
    ("iPad16,3", "J717AP"),
];
const MACS: &[(&str, &str)] = &[
    ("Mac14,2", "J413AP"),
    ("Mac15,3", "J514cAP"),
    ("Mac16,1", "J604AP"),
];
const IOS: &[(&str, &str)] = &[("17.6.1", "21G93"), ("18.0.1", "22A3370"), ("18.1", "22B83")];
const MACOS: &[(&str, &str)] = &[("14.7", "23H124"), ("15.0.1", "24A348"), ("15.1", "24B83")];
const SERIAL_CHARS: &[u8] = b"0123456789CDFGHJKLMNPQRTVWXY";

impl Identity {
    /// The `index`-th device of a fleet seeded with `seed`.
    pub fn generate(seed: u64, index: u64, platform: Platform) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let pick = |rng: &mut StdRng, list: &'static [(&'static str, &'static str)]| {
            list[rng.random_range(0..list.len())]
        };
        let (model, product, model_name, os) = match platform {
            Platform::Iphone => {
                let (p, m) = pick(&mut rng, IPHONES);
                (m, p, "iPhone", pick(&mut rng, IOS))
            }
            Platform::Ipad => {
                let (p, m) = pick(&mut rng, IPADS);
                (m, p, "iPad", pick(&mut rng, IOS))
            }
            Platform::Mac => {
                let (p, m) = pick(&mut rng, MACS);
                (m, p, "MacBook Air", pick(&mut rng, MACOS))
            }
        };
        let serial: String = (0..10)
            .map(|_| SERIAL_CHARS[rng.random_range(0..SERIAL_CHARS.len())] as char)
            .collect();
        let udid = match platform {
            // Apple silicon Macs and recent iOS devices use 8-16 hex UDIDs; Intel Macs UUIDs.
            Platform::Mac => uuid::Builder::from_random_bytes(rng.random())
                .into_uuid()
                .to_string()
                .to_uppercase(),
            _ => format!("{:08X}-{:016X}", rng.random::<u32>(), rng.random::<u64>()),
        };
        let imei = (platform == Platform::Iphone).then(|| {
            let digits: String = (0..14)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect();
            format!("{digits}{}", luhn_digit(&digits))
        });
        Identity {
            platform,
            udid,
            device_name: format!("{model_name} {}", &serial[..4]),
            serial_number: serial,
            model,
            model_name,
            product_name: product,
            os_version: os.0,
            build_version: os.1,
            imei,
        }
    }

    /// The Authenticate check-in message.
    pub fn authenticate(&self, topic: &str) -> Dictionary {
        let mut d = Dictionary::new();
        let mut put = |k: &str, v: &str| {
            d.insert(k.to_owned(), Value::String(v.to_owned()));
        };
        put("MessageType", "Authenticate");
        put("Topic", topic);
        put("UDID", &self.udid);
        put("DeviceName", &self.device_name);
        put("Model", self.model);
        put("ModelName", self.model_name);
        put("ProductName", self.product_name);
        put("SerialNumber", &self.serial_number);
        put("OSVersion", self.os_version);
        put("BuildVersion", self.build_version);
        if let Some(imei) = &self.imei {
            put("IMEI", imei);
        }
        d
    }
}

fn luhn_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// A device's mutable state as commands change it. (A clone predicts an answer: it draws the
/// same random values the device itself would draw next.)
#[derive(Debug, Clone)]
pub struct Device {
    pub identity: Identity,
    rng: StdRng,
    /// Probability of answering NotNow to any command.
    not_now_rate: f64,
    /// Installed profiles: identifier → display name.
    profiles: Vec<(String, String)>,
    pub lost_mode: bool,
    pub locked: bool,
    /// Set by EraseDevice: the device then leaves the fleet.
    pub erased: bool,
    pub restarts: u32,
    /// Locations sent in answer to DeviceLocation.
    pub locations_reported: u32,
    /// Commands answered with anything but NotNow.
    pub commands_answered: u32,
    /// The MDM identity certificate (DER), listed by CertificateList.
    identity_certificate: Option<Vec<u8>>,
    /// The enrollment profile's identifier: RemoveProfile of it takes the device out of
    /// management (it then checks out).
    enrollment_profile: Option<String>,
    /// Set by RemoveProfile of the enrollment profile.
    pub retired: bool,
    /// Set by ClearPasscode.
    pub passcode_cleared: bool,
}

/// Apps on every simulated device: (bundle ID, name, installed by the MDM).
const APPS: &[(&str, &str, bool)] = &[
    ("com.apple.mobilesafari", "Safari", false),
    ("com.microsoft.Office.Outlook", "Outlook", true),
    ("com.spotify.client", "Spotify", false),
    ("org.hospital.rota", "Rota", true),
];

/// How the device answers one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `Acknowledged`, `NotNow`, `Error` or `CommandFormatError`.
    pub status: &'static str,
    /// Keys to add to the result besides Status / CommandUUID / UDID.
    pub body: Dictionary,
}

impl Device {
    pub fn new(identity: Identity, seed: u64, not_now_rate: f64) -> Self {
        let rng = StdRng::seed_from_u64(seed ^ 0x5EED ^ u64::from(identity.serial_number.len() as u32));
        Self {
            identity,
            rng,
            not_now_rate,
            profiles: Vec::new(),
            lost_mode: false,
            locked: false,
            erased: false,
            restarts: 0,
            locations_reported: 0,
            commands_answered: 0,
            identity_certificate: None,
            enrollment_profile: None,
            retired: false,
            passcode_cleared: false,
        }
    }

    /// Sets the identifier of the profile the device enrolled with.
    #[must_use]
    pub fn with_enrollment_profile(mut self, identifier: String) -> Self {
        self.enrollment_profile = Some(identifier);
        self
    }

    /// Sets the identity certificate the device lists in CertificateList.
    #[must_use]
    pub fn with_identity_certificate(mut self, der: Vec<u8>) -> Self {
        self.identity_certificate = Some(der);
        self
    }

    /// Identifiers of the profiles installed through InstallProfile, in installation order.
    pub fn profile_identifiers(&self) -> Vec<String> {
        self.profiles.iter().map(|(id, _)| id.clone()).collect()
    }

    /// The full result message for `command` (the plist the server sent).
    pub fn result_message(&mut self, command: &Dictionary) -> Dictionary {
        let uuid = command
            .get("CommandUUID")
            .and_then(Value::as_string)
            .unwrap_or_default()
            .to_owned();
        let inner = command
            .get("Command")
            .and_then(Value::as_dictionary)
            .cloned()
            .unwrap_or_default();
        let answer = self.answer(&inner);
        if answer.status != "NotNow" {
            self.commands_answered += 1;
        }
        let mut out = answer.body;
        out.insert("Status".into(), Value::String(answer.status.into()));
        out.insert("CommandUUID".into(), Value::String(uuid));
        out.insert("UDID".into(), Value::String(self.identity.udid.clone()));
        out
    }

    pub fn answer(&mut self, command: &Dictionary) -> Answer {
        let ok = |body: Dictionary| Answer {
            status: "Acknowledged",
            body,
        };
        let Some(request_type) = command.get("RequestType").and_then(Value::as_string) else {
            return Answer {
                status: "CommandFormatError",
                body: Dictionary::new(),
            };
        };
        if self.not_now_rate > 0.0 && self.rng.random_bool(self.not_now_rate.min(1.0)) {
            return Answer {
                status: "NotNow",
                body: Dictionary::new(),
            };
        }
        let mut body = Dictionary::new();
        match request_type {
            "DeviceInformation" => {
                let all = self.device_information();
                let mut responses = Dictionary::new();
                if let Some(Value::Array(queries)) = command.get("Queries") {
                    for q in queries.iter().filter_map(Value::as_string) {
                        if let Some(v) = all.get(q) {
                            responses.insert(q.to_owned(), v.clone());
                        }
                    }
                }
                body.insert("QueryResponses".into(), Value::Dictionary(responses));
                ok(body)
            }
            "SecurityInfo" => {
                let mut info = Dictionary::new();
                info.insert("PasscodePresent".into(), Value::Boolean(true));
                info.insert("PasscodeCompliant".into(), Value::Boolean(true));
                info.insert("HardwareEncryptionCaps".into(), Value::Integer(3.into()));
                if self.identity.platform == Platform::Mac {
                    info.insert("FDE_Enabled".into(), Value::Boolean(true));
                    info.insert("SystemIntegrityProtectionEnabled".into(), Value::Boolean(true));
                    let mut firewall = Dictionary::new();
                    firewall.insert("FirewallEnabled".into(), Value::Boolean(true));
                    info.insert("FirewallSettings".into(), Value::Dictionary(firewall));
                }
                let mut status = Dictionary::new();
                status.insert("EnrolledViaDEP".into(), Value::Boolean(false));
                status.insert("UserApprovedEnrollment".into(), Value::Boolean(true));
                info.insert("ManagementStatus".into(), Value::Dictionary(status));
                body.insert("SecurityInfo".into(), Value::Dictionary(info));
                ok(body)
            }
            "InstalledApplicationList" => {
                let managed_only = matches!(command.get("ManagedAppsOnly"), Some(Value::Boolean(true)));
                let apps = APPS
                    .iter()
                    .filter(|(_, _, managed)| *managed || !managed_only)
                    .map(|(id, name, _)| {
                        let mut a = Dictionary::new();
                        a.insert("Identifier".into(), Value::String((*id).into()));
                        a.insert("Name".into(), Value::String((*name).into()));
                        a.insert("ShortVersion".into(), Value::String("1.0".into()));
                        a.insert("Version".into(), Value::String("100".into()));
                        a.insert(
                            "BundleSize".into(),
                            Value::Integer((25_000_000 + id.len() as u64).into()),
                        );
                        Value::Dictionary(a)
                    })
                    .collect();
                body.insert("InstalledApplicationList".into(), Value::Array(apps));
                ok(body)
            }
            "ManagedApplicationList" => {
                // A dictionary keyed by bundle ID, as the OS answers.
                let list = APPS
                    .iter()
                    .filter(|(_, _, managed)| *managed)
                    .map(|(id, _, _)| {
                        let mut a = Dictionary::new();
                        a.insert("Status".into(), Value::String("Managed".into()));
                        a.insert("ManagementFlags".into(), Value::Integer(1.into()));
                        ((*id).to_owned(), Value::Dictionary(a))
                    })
                    .collect();
                body.insert("ManagedApplicationList".into(), Value::Dictionary(list));
                ok(body)
            }
            "ProfileList" => {
                let list = self
                    .profiles
                    .iter()
                    .map(|(id, name)| {
                        let mut p = Dictionary::new();
                        p.insert("PayloadIdentifier".into(), Value::String(id.clone()));
                        p.insert("PayloadDisplayName".into(), Value::String(name.clone()));
                        Value::Dictionary(p)
                    })
                    .collect();
                body.insert("ProfileList".into(), Value::Array(list));
                ok(body)
            }
            "InstallProfile" => {
                let Some(payload) = command.get("Payload").and_then(Value::as_data) else {
                    return Answer {
                        status: "Error",
                        body: error_chain(12005, "The profile payload is missing."),
                    };
                };
                let Ok(profile) = plist::from_bytes::<Dictionary>(payload) else {
                    return Answer {
                        status: "Error",
                        body: error_chain(1000, "The profile cannot be read."),
                    };
                };
                let id = profile
                    .get("PayloadIdentifier")
                    .and_then(Value::as_string)
                    .unwrap_or("unnamed")
                    .to_owned();
                let name = profile
                    .get("PayloadDisplayName")
                    .and_then(Value::as_string)
                    .unwrap_or(&id)
                    .to_owned();
                self.profiles.retain(|(i, _)| *i != id);
                self.profiles.push((id, name));
                ok(body)
            }
            "RemoveProfile" => {
                let id = command
                    .get("Identifier")
                    .and_then(Value::as_string)
                    .unwrap_or_default();
                if self.enrollment_profile.as_deref() == Some(id) {
                    // Management ends: managed profiles (and apps) go with it.
                    self.retired = true;
                    self.profiles.clear();
                    return ok(body);
                }
                let before = self.profiles.len();
                self.profiles.retain(|(i, _)| i != id);
                if self.profiles.len() == before {
                    return Answer {
                        status: "Error",
                        body: error_chain(89, "The profile is not installed."),
                    };
                }
                ok(body)
            }
            "CertificateList" => {
                let mut c = Dictionary::new();
                c.insert(
                    "CommonName".into(),
                    Value::String("Citadel device identity".into()),
                );
                c.insert("IsIdentity".into(), Value::Boolean(true));
                if let Some(der) = &self.identity_certificate {
                    c.insert("Data".into(), Value::Data(der.clone()));
                }
                body.insert("CertificateList".into(), Value::Array(vec![Value::Dictionary(c)]));
                ok(body)
            }
            "DeviceLock" => {
                self.locked = true;
                ok(body)
            }
            "ClearPasscode" if self.identity.platform != Platform::Mac => {
                // Only with the UnlockToken the device escrowed at TokenUpdate.
                if command
                    .get("UnlockToken")
                    .and_then(Value::as_data)
                    .is_none_or(<[u8]>::is_empty)
                {
                    return Answer {
                        status: "Error",
                        body: error_chain(12023, "The unlock token is missing or invalid."),
                    };
                }
                self.passcode_cleared = true;
                ok(body)
            }
            "RestartDevice" | "ShutDownDevice" => {
                self.restarts += 1;
                ok(body)
            }
            "EraseDevice" => {
                self.erased = true;
                ok(body)
            }
            "EnableLostMode" if self.identity.platform != Platform::Mac => {
                self.lost_mode = true;
                ok(body)
            }
            "DisableLostMode" if self.identity.platform != Platform::Mac => {
                self.lost_mode = false;
                ok(body)
            }
            "DeviceLocation" | "PlayLostModeSound" if self.identity.platform != Platform::Mac => {
                if !self.lost_mode {
                    return Answer {
                        status: "Error",
                        body: error_chain(12067, "The device is not in Lost Mode."),
                    };
                }
                if request_type == "DeviceLocation" {
                    body.insert(
                        "Latitude".into(),
                        Value::Real(51.5072 + self.rng.random_range(-0.01..0.01)),
                    );
                    body.insert(
                        "Longitude".into(),
                        Value::Real(-0.1276 + self.rng.random_range(-0.01..0.01)),
                    );
                    body.insert("HorizontalAccuracy".into(), Value::Real(12.0));
                    self.locations_reported += 1;
                }
                ok(body)
            }
            _ => Answer {
                status: "Error",
                body: error_chain(12021, "The command is not supported on this device."),
            },
        }
    }

    fn device_information(&mut self) -> Dictionary {
        let id = &self.identity;
        let mut d = Dictionary::new();
        let mut s = |k: &str, v: &str| {
            d.insert(k.to_owned(), Value::String(v.to_owned()));
        };
        s("DeviceName", &id.device_name);
        s("Model", id.model);
        s("ModelName", id.model_name);
        s("ProductName", id.product_name);
        s("SerialNumber", &id.serial_number);
        s("UDID", &id.udid);
        s("OSVersion", id.os_version);
        s("BuildVersion", id.build_version);
        if let Some(imei) = &id.imei {
            s("IMEI", imei);
        }
        d.insert(
            "BatteryLevel".into(),
            Value::Real(f64::from(self.rng.random_range(20..100u8)) / 100.0),
        );
        d.insert("DeviceCapacity".into(), Value::Real(128.0));
        d.insert(
            "AvailableDeviceCapacity".into(),
            Value::Real(f64::from(self.rng.random_range(10..100u8))),
        );
        d.insert("IsSupervised".into(), Value::Boolean(true));
        d.insert("IsActivationLockEnabled".into(), Value::Boolean(false));
        // MAC addresses and numbers derived from the serial, so they are stable per device.
        let digest = citadel_certs::sha256(id.serial_number.as_bytes());
        let mac = |salt: u8| {
            let mut b = [0u8; 6];
            b.copy_from_slice(&digest[usize::from(salt)..usize::from(salt) + 6]);
            b[0] = (b[0] & 0xFC) | 0x02; // locally administered, unicast
            b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
        };
        d.insert("WiFiMAC".into(), Value::String(mac(0)));
        d.insert("BluetoothMAC".into(), Value::String(mac(6)));
        match id.platform {
            Platform::Mac => {
                d.insert("SystemIntegrityProtectionEnabled".into(), Value::Boolean(true));
                d.insert("IsAppleSilicon".into(), Value::Boolean(true));
                d.insert("EthernetMAC".into(), Value::String(mac(12)));
                d.insert(
                    "HostName".into(),
                    Value::String(format!("mac-{}.local", id.serial_number.to_lowercase())),
                );
            }
            Platform::Iphone | Platform::Ipad => {
                d.insert("IsMDMLostModeEnabled".into(), Value::Boolean(self.lost_mode));
                d.insert("IsDeviceLocatorServiceEnabled".into(), Value::Boolean(true));
                d.insert("TimeZone".into(), Value::String("Europe/London".into()));
            }
        }
        if id.platform == Platform::Iphone {
            let n = u32::from_be_bytes([digest[20], digest[21], digest[22], digest[23]]) % 1_000_000;
            d.insert("PhoneNumber".into(), Value::String(format!("+44 7700 9{n:06}")));
            d.insert(
                "CurrentCarrierNetwork".into(),
                Value::String("Citadel Mobile".into()),
            );
            d.insert(
                "SubscriberCarrierNetwork".into(),
                Value::String("Citadel Mobile".into()),
            );
            d.insert("IsRoaming".into(), Value::Boolean(false));
            d.insert("DataRoamingEnabled".into(), Value::Boolean(false));
            d.insert("CellularTechnology".into(), Value::Integer(1.into()));
        }
        d
    }
}

fn error_chain(code: i64, text: &str) -> Dictionary {
    let mut e = Dictionary::new();
    e.insert("ErrorCode".into(), Value::Integer(code.into()));
    e.insert("ErrorDomain".into(), Value::String("MCMDMErrorDomain".into()));
    e.insert("LocalizedDescription".into(), Value::String(text.into()));
    let mut body = Dictionary::new();
    body.insert("ErrorChain".into(), Value::Array(vec![Value::Dictionary(e)]));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(request_type: &str, extra: &[(&str, Value)]) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("RequestType".into(), Value::String(request_type.into()));
        for (k, v) in extra {
            d.insert((*k).into(), v.clone());
        }
        d
    }

    #[test]
    fn identities_are_deterministic_and_plausible() {
        let a = Identity::generate(7, 42, Platform::Iphone);
        assert_eq!(a, Identity::generate(7, 42, Platform::Iphone));
        assert_ne!(a.udid, Identity::generate(7, 43, Platform::Iphone).udid);
        let imei = a.imei.clone().unwrap();
        assert_eq!(imei.len(), 15);
        assert_eq!(luhn_digit(&imei[..14]), imei[14..].parse::<u32>().unwrap());
        assert_eq!(luhn_digit("49015420323751"), 8, "a published IMEI check digit");
        let mac = Identity::generate(7, 1, Platform::Mac);
        assert!(mac.imei.is_none());
        assert_eq!(mac.udid.len(), 36);
        assert_eq!(
            mac.authenticate("t")["MessageType"].as_string(),
            Some("Authenticate")
        );
    }

    #[test]
    fn answers_follow_the_device_state() {
        let mut d = Device::new(Identity::generate(1, 1, Platform::Ipad), 1, 0.0);
        let info = d.answer(&cmd(
            "DeviceInformation",
            &[(
                "Queries",
                Value::Array(vec![
                    Value::String("OSVersion".into()),
                    Value::String("Nope".into()),
                ]),
            )],
        ));
        let responses = info.body["QueryResponses"].as_dictionary().unwrap();
        assert_eq!(responses.len(), 1, "only the queried keys it knows");
        assert!(responses.contains_key("OSVersion"));

        let mut profile = Dictionary::new();
        profile.insert(
            "PayloadIdentifier".into(),
            Value::String("org.hospital.wifi".into()),
        );
        let mut xml = Vec::new();
        plist::to_writer_xml(&mut xml, &Value::Dictionary(profile)).unwrap();
        assert_eq!(
            d.answer(&cmd("InstallProfile", &[("Payload", Value::Data(xml))]))
                .status,
            "Acknowledged"
        );
        let list = d.answer(&cmd("ProfileList", &[]));
        assert_eq!(list.body["ProfileList"].as_array().unwrap().len(), 1);
        let remove = |id: &str| cmd("RemoveProfile", &[("Identifier", Value::String(id.into()))]);
        assert_eq!(d.answer(&remove("org.hospital.wifi")).status, "Acknowledged");
        assert_eq!(d.answer(&remove("org.hospital.wifi")).status, "Error");

        // A location only in lost mode.
        assert_eq!(d.answer(&cmd("DeviceLocation", &[])).status, "Error");
        d.answer(&cmd("EnableLostMode", &[]));
        let loc = d.answer(&cmd("DeviceLocation", &[]));
        assert!(loc.body.contains_key("Latitude"));
        assert_eq!(d.answer(&cmd("EraseDevice", &[])).status, "Acknowledged");
        assert!(d.erased);
        assert_eq!(d.answer(&cmd("MakeCoffee", &[])).status, "Error");
        assert_eq!(d.answer(&Dictionary::new()).status, "CommandFormatError");

        let mut full = Dictionary::new();
        full.insert("CommandUUID".into(), Value::String("U-1".into()));
        full.insert("Command".into(), Value::Dictionary(cmd("DeviceLock", &[])));
        let msg = d.result_message(&full);
        assert_eq!(msg["Status"].as_string(), Some("Acknowledged"));
        assert_eq!(msg["CommandUUID"].as_string(), Some("U-1"));
        assert!(d.locked);
    }

    #[test]
    fn not_now_comes_at_the_configured_rate() {
        let mut d = Device::new(Identity::generate(3, 3, Platform::Mac), 3, 0.25);
        let not_now = (0..4000)
            .filter(|_| d.answer(&cmd("SecurityInfo", &[])).status == "NotNow")
            .count();
        assert!((800..1200).contains(&not_now), "{not_now}");
    }
}
