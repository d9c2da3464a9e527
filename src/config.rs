//! Configuration, layered: built-in defaults → TOML file → `CITADEL_*` environment variables →
//! command-line flags. Unknown keys are errors that name the key and where it came from.
//!
//! Environment variables map to keys with `__` between sections:
//! `CITADEL_SERVER__LISTEN=0.0.0.0:9443` sets `server.listen`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Where the TOML file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/citadel/citadel.toml";
/// `CITADEL_*` variables that belong to the command line, not to the configuration.
const CLI_ENV_VARS: &[&str] = &["config", "url", "ca"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store, keys and certificates live.
    pub data_dir: PathBuf,
    pub server: ServerSection,
    pub log: LogSection,
    pub store: StoreSection,
    pub admin: AdminSection,
    pub scep: ScepSection,
    pub mdm: MdmSection,
    pub apple: AppleSection,
    pub apns: ApnsSection,
    pub webhook: WebhookSection,
    pub audit: AuditSection,
    pub portal: PortalSection,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: SocketAddr,
    /// Extra names (DNS or IP) for the generated TLS certificate, e.g. the name devices use.
    pub hostnames: Vec<String>,
    /// Operator-supplied TLS certificate chain (PEM, leaf first). With `tls_key_file`, replaces
    /// the certificate Citadel issues itself.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Renew the generated server certificate when it has fewer days left than this.
    pub tls_renew_days: u32,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout_secs: u64,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// The URL devices reach this appliance at (`https://host:port`), written into enrollment
    /// profiles. Default: `https://<first of hostnames, else this machine's name>:<listen port>`.
    pub public_url: Option<String>,
    /// Ask TLS clients for a certificate from our device CA (`optional`), so devices may
    /// authenticate by mTLS as well as by `Mdm-Signature`; `off` never asks.
    pub client_certificates: ClientCertificates,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificates {
    Optional,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MdmSection {
    /// Organisation name shown in enrollment profiles and certificate subjects.
    pub organization: String,
    /// Accept macOS user-channel UserAuthenticate (no password challenge) instead of 410.
    pub user_authenticate: bool,
    /// Days answered commands and their results are kept.
    pub retention_days: u32,
    /// Largest check-in or command-result body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Lifetime of a one-time enrollment link.
    pub enrollment_link_ttl_secs: u64,
    /// Hours between a device's inventory reports (each device at its own offset).
    pub inventory_interval_hours: u32,
    /// Queue the inventory commands when a device first checks in with a push token.
    pub inventory_on_enrollment: bool,
}

impl Default for MdmSection {
    fn default() -> Self {
        Self {
            organization: "Citadel".into(),
            user_authenticate: false,
            retention_days: 30,
            max_body_bytes: 4 * 1024 * 1024,
            enrollment_link_ttl_secs: 7 * 24 * 3600,
            inventory_interval_hours: 24,
            inventory_on_enrollment: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AppleSection {
    /// The APNs push topic (`com.apple.mgmt.…`) until a push certificate is imported. Without
    /// it, profiles carry a placeholder topic and devices cannot be woken.
    pub topic: Option<String>,
}

/// Placeholder topic for profiles when none is configured.
pub const UNCONFIGURED_TOPIC: &str = "com.apple.mgmt.citadel.unconfigured";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApnsSection {
    /// Apple's production push endpoint; the sandbox is `https://api.sandbox.push.apple.com`.
    pub base_url: String,
    /// HTTPS proxy (CONNECT) to reach Apple through, e.g. `http://user:pass@proxy.dmz:3128`.
    pub proxy: Option<String>,
    /// Extra trust anchors (PEM) for the push endpoint, besides the system's (for a TLS-
    /// inspecting proxy or a test endpoint).
    pub ca_file: Option<PathBuf>,
    /// How long Apple keeps trying to deliver a push (`apns-expiration`), in seconds.
    pub expiration_secs: u64,
    /// Pushes in flight at once (HTTP/2 streams; Apple's per-connection limit also applies).
    pub concurrency: usize,
    /// Re-push enrollments not seen for this many hours; 0 turns the sweep off.
    pub sweep_after_hours: u32,
}

impl Default for ApnsSection {
    fn default() -> Self {
        Self {
            base_url: "https://api.push.apple.com".into(),
            proxy: None,
            ca_file: None,
            expiration_secs: 3 * 24 * 3600,
            concurrency: 500,
            sweep_after_hours: 24,
        }
    }
}

/// What end users may do to their own devices in the self-service portal (`/portal`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PortalSection {
    pub enabled: bool,
    /// Lock one's own device.
    pub allow_lock: bool,
    /// Put one's own corporate device in lost mode and locate it (personal devices never).
    pub allow_locate: bool,
    /// Ask the administrators to erase one's own device.
    pub allow_erase_request: bool,
}

impl Default for PortalSection {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_lock: true,
            allow_locate: true,
            allow_erase_request: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// How often the chain's head is signed (when it moved). 0 turns periodic checkpoints off.
    pub checkpoint_minutes: u32,
    /// Forward every record (and checkpoint) to the site's SIEM.
    pub syslog: Option<SyslogSection>,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            checkpoint_minutes: 60,
            syslog: None,
        }
    }
}

/// RFC 5424 over TCP (octet-counted), with TLS (RFC 5425) unless `tls = false`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyslogSection {
    /// `host:port` of the collector, e.g. `siem.example.org:6514`.
    pub address: String,
    #[serde(default = "default_true")]
    pub tls: bool,
    /// PEM file of the CA(s) that issued the collector's certificate (with `tls`).
    pub ca_file: Option<PathBuf>,
    /// The name the collector's certificate carries; default: the host part of `address`.
    pub server_name: Option<String>,
    /// HOSTNAME in each message; default: this machine's name.
    pub hostname: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSection {
    /// Where check-in events and command results are POSTed (JSON). Off when unset.
    pub url: Option<String>,
    /// HMAC-SHA256 key for the `X-Citadel-Signature` header.
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,citadel=debug`. `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Memory for the storage engine's page cache.
    pub cache_capacity_mb: u64,
    /// Background flush interval. A clean shutdown always flushes.
    pub flush_every_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Pre-set one-time secret for the first administrator (for scripted installs). When
    /// unset, Citadel generates one on first start and prints it once.
    pub bootstrap_secret: Option<Secret>,
    pub bootstrap_secret_file: Option<PathBuf>,
    /// Shortest password accepted (guessable passwords are refused at any length).
    pub password_min_chars: usize,
    /// Every administrator must use TOTP. Turn off only where a directory enforces MFA.
    pub require_mfa: bool,
    /// A console session ends after this long without a request…
    pub session_idle_minutes: u32,
    /// …and this long after sign-in whatever happens.
    pub session_absolute_hours: u32,
    /// Destructive actions (erase, clear passcode, retire, settings, administrators) need a
    /// sign-in at most this old.
    pub reauthenticate_minutes: u32,
    /// Failed sign-ins per account name, within `lockout_minutes`, before it is locked for
    /// `lockout_minutes`.
    pub lockout_failures: u32,
    /// Failed sign-ins per source address before that address is locked out.
    pub lockout_source_failures: u32,
    pub lockout_minutes: u32,
    /// Sign-in against the site's LDAP directory or Active Directory.
    pub directory: Option<DirectorySection>,
}

/// LDAP / Active Directory sign-in. Passwords are checked by binding as the user over TLS
/// (`ldaps://`, or `ldap://` with StartTLS) verified against the site's CA; the role comes
/// from the user's groups, the first matching entry of `groups` winning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectorySection {
    /// `ldaps://dc1.example.org` or `ldap://dc1.example.org` with `starttls = true`.
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA(s) that issued the directory server's certificate.
    pub ca_file: PathBuf,
    /// The service account that looks users up.
    pub bind_dn: String,
    pub bind_password: Option<Secret>,
    pub bind_password_file: Option<PathBuf>,
    pub user_base: String,
    /// `{username}` is replaced by the escaped user name. Active Directory:
    /// `(&(objectClass=user)(sAMAccountName={username}))`.
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    pub group_base: String,
    /// `{dn}` is replaced by the escaped user DN. Active Directory with nested groups:
    /// `(member:1.2.840.113556.1.4.1941:={dn})`.
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// The attribute holding a person's name (Active Directory: `displayName`).
    #[serde(default = "default_display_name_attribute")]
    pub display_name_attribute: String,
    #[serde(default = "default_directory_timeout")]
    pub timeout_secs: u64,
    /// Group DN → role; members of none of them cannot sign in.
    pub groups: Vec<DirectoryGroup>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectoryGroup {
    pub group: String,
    pub role: String,
}

fn default_user_filter() -> String {
    "(&(objectClass=inetOrgPerson)(uid={username}))".into()
}

fn default_group_filter() -> String {
    "(&(objectClass=groupOfNames)(member={dn}))".into()
}

fn default_display_name_attribute() -> String {
    "cn".into()
}

fn default_directory_timeout() -> u64 {
    5
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            bootstrap_secret: None,
            bootstrap_secret_file: None,
            password_min_chars: 12,
            require_mfa: true,
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            reauthenticate_minutes: 5,
            lockout_failures: 5,
            lockout_source_failures: 20,
            lockout_minutes: 15,
            directory: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScepSection {
    /// A fixed challenge password every device may use. Off by default: one-time challenges
    /// (`citadel scep challenge`) are safer.
    pub static_challenge: Option<Secret>,
    pub static_challenge_file: Option<PathBuf>,
    /// How long a one-time challenge stays valid unless its creator asks otherwise.
    pub challenge_ttl_secs: u64,
    /// Validity of issued device identity certificates.
    pub certificate_validity_days: u32,
    /// Accept single-DES envelopes (many SCEP clients still send them). Each use is logged.
    pub allow_legacy_des: bool,
    /// Largest PKIOperation message accepted, in bytes.
    pub max_message_bytes: usize,
}

impl Default for ScepSection {
    fn default() -> Self {
        Self {
            static_challenge: None,
            static_challenge_file: None,
            challenge_ttl_secs: 3600,
            certificate_validity_days: 730,
            allow_legacy_des: true,
            max_message_bytes: 64 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./citadel-data"),
            server: ServerSection::default(),
            log: LogSection::default(),
            store: StoreSection::default(),
            admin: AdminSection::default(),
            scep: ScepSection::default(),
            mdm: MdmSection::default(),
            apple: AppleSection::default(),
            apns: ApnsSection::default(),
            webhook: WebhookSection::default(),
            audit: AuditSection::default(),
            portal: PortalSection::default(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            hostnames: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_renew_days: 30,
            shutdown_timeout_secs: 10,
            workers: 0,
            public_url: None,
            client_certificates: ClientCertificates::Optional,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            // sled holds about twice this once full. 16 MiB keeps 100,000 devices under
            // 200 MB, and a fan-out, which walks the trees in key order, was no slower for it
            // (BENCHMARKS.md, issue 6).
            cache_capacity_mb: 16,
            flush_every_ms: 500,
        }
    }
}

/// A secret value. Serialises as `<redacted>` so printing a config never leaks it.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("cannot read {what} from {path}: {source}")]
    ReadSecret {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Values given on the command line; they override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

/// Where the configuration file is, if any: `--config`, else the default path if present.
pub fn config_file(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    match explicit {
        Some(p) if p.is_file() => Ok(Some(p.to_path_buf())),
        Some(p) => Err(ConfigError::MissingFile(p.to_path_buf())),
        None => {
            let default = Path::new(DEFAULT_CONFIG_PATH);
            Ok(default.is_file().then(|| default.to_path_buf()))
        }
    }
}

/// Loads the effective configuration from every layer and validates it.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment = figment.merge(Env::prefixed("CITADEL_").ignore(CLI_ENV_VARS).split("__"));
    if let Some(dir) = &overrides.data_dir {
        figment = figment.merge(Serialized::default("data_dir", dir));
    }
    if let Some(listen) = overrides.listen {
        figment = figment.merge(Serialized::default("server.listen", listen.to_string()));
    }
    let mut config: Config = figment.extract().map_err(|e| ConfigError::Invalid(describe(e)))?;
    config.resolve_secret_files()?;
    config.validate()?;
    Ok(config)
}

/// figment's messages name the key; add where the offending value came from.
fn describe(errors: figment::Error) -> String {
    errors
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(src) => format!(" (from {src})"),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            let kind = e.kind.to_string();
            if key.is_empty() {
                format!("{kind}{source}")
            } else {
                format!("{kind} at key `{key}`{source}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fills `value` from `file` (`<key>_file`); giving both is an error.
fn resolve_secret(
    value: &mut Option<Secret>,
    file: &mut Option<PathBuf>,
    key: &'static str,
) -> Result<(), ConfigError> {
    let Some(path) = file.as_ref() else { return Ok(()) };
    if value.is_some() {
        return Err(ConfigError::Invalid(format!(
            "set either {key} or {key}_file, not both"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadSecret {
        what: key,
        path: path.clone(),
        source,
    })?;
    *value = Some(Secret::new(text.trim().to_owned()));
    Ok(())
}

impl Config {
    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(d) = self.admin.directory.as_mut() {
            resolve_secret(
                &mut d.bind_password,
                &mut d.bind_password_file,
                "admin.directory.bind_password",
            )?;
        }
        resolve_secret(
            &mut self.admin.bootstrap_secret,
            &mut self.admin.bootstrap_secret_file,
            "admin.bootstrap_secret",
        )?;
        resolve_secret(
            &mut self.scep.static_challenge,
            &mut self.scep.static_challenge_file,
            "scep.static_challenge",
        )?;
        resolve_secret(
            &mut self.webhook.secret,
            &mut self.webhook.secret_file,
            "webhook.secret",
        )
    }

    /// The base URL written into enrollment profiles (no trailing slash).
    pub fn public_url(&self) -> String {
        if let Some(url) = &self.server.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let host = self.server.hostnames.first().cloned().unwrap_or_else(|| {
            gethostname::gethostname()
                .into_string()
                .unwrap_or_else(|_| "localhost".into())
        });
        let host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]")
        } else {
            host
        };
        format!("https://{host}:{}", self.server.listen.port())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty".into());
        }
        match (&self.server.tls_cert_file, &self.server.tls_key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return invalid("server.tls_cert_file and server.tls_key_file must be set together".into());
            }
            _ => {}
        }
        if self.server.tls_renew_days == 0 || self.server.tls_renew_days > 180 {
            return invalid(format!(
                "server.tls_renew_days must be between 1 and 180, not {}",
                self.server.tls_renew_days
            ));
        }
        if self.log.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return invalid(format!("log.level {:?} is not a valid filter", self.log.level));
        }
        if let Some(secret) = &self.admin.bootstrap_secret
            && secret.expose().len() < 16
        {
            return invalid("admin.bootstrap_secret must be at least 16 characters".into());
        }
        let a = &self.admin;
        if !(8..=128).contains(&a.password_min_chars) {
            return invalid("admin.password_min_chars must be between 8 and 128".into());
        }
        if a.session_idle_minutes == 0
            || a.session_absolute_hours == 0
            || a.reauthenticate_minutes == 0
            || a.lockout_failures == 0
            || a.lockout_source_failures == 0
            || a.lockout_minutes == 0
        {
            return invalid("admin session, re-authentication and lockout settings must be positive".into());
        }
        if u64::from(a.session_idle_minutes) > u64::from(a.session_absolute_hours) * 60 {
            return invalid("admin.session_idle_minutes must not exceed admin.session_absolute_hours".into());
        }
        if let Some(s) = &self.audit.syslog {
            if !s.address.contains(':') {
                return invalid("audit.syslog.address must be host:port".into());
            }
            if s.tls && s.ca_file.is_none() {
                return invalid(
                    "audit.syslog.ca_file is required with tls (the collector's CA); or set tls = false on a trusted network".into(),
                );
            }
        }
        if let Some(d) = &a.directory {
            let secure = d.url.starts_with("ldaps://") || (d.url.starts_with("ldap://") && d.starttls);
            if !secure {
                return invalid(
                    "admin.directory.url must be ldaps://, or ldap:// with starttls = true: passwords never cross the network in clear".into(),
                );
            }
            if d.url.starts_with("ldaps://") && d.starttls {
                return invalid("admin.directory: starttls is for ldap:// URLs only".into());
            }
            if d.bind_password.is_none() {
                return invalid("admin.directory needs bind_password or bind_password_file".into());
            }
            if !d.user_filter.contains("{username}") || !d.group_filter.contains("{dn}") {
                return invalid(
                    "admin.directory.user_filter needs {username} and group_filter needs {dn}".into(),
                );
            }
            if d.groups.is_empty() {
                return invalid("admin.directory.groups must map at least one group to a role".into());
            }
            if !(1..=60).contains(&d.timeout_secs) {
                return invalid("admin.directory.timeout_secs must be between 1 and 60".into());
            }
        }
        if let Some(secret) = &self.scep.static_challenge
            && secret.expose().len() < 8
        {
            return invalid("scep.static_challenge must be at least 8 characters".into());
        }
        if self.scep.challenge_ttl_secs == 0 || self.scep.certificate_validity_days == 0 {
            return invalid(
                "scep.challenge_ttl_secs and scep.certificate_validity_days must be positive".into(),
            );
        }
        if !(4096..=1024 * 1024).contains(&self.scep.max_message_bytes) {
            return invalid("scep.max_message_bytes must be between 4096 and 1048576".into());
        }
        if self.store.cache_capacity_mb == 0 {
            return invalid("store.cache_capacity_mb must be at least 1".into());
        }
        if let Some(url) = &self.server.public_url
            && (!url.starts_with("https://")
                || url.len() <= "https://".len()
                || url.contains(char::is_whitespace))
        {
            return invalid(format!("server.public_url {url:?} must be an https:// URL"));
        }
        if let Some(topic) = &self.apple.topic
            && !topic.is_empty()
            && !topic.starts_with("com.apple.mgmt.")
        {
            return invalid(format!("apple.topic {topic:?} must start with com.apple.mgmt."));
        }
        if !(64 * 1024..=64 * 1024 * 1024).contains(&self.mdm.max_body_bytes) {
            return invalid("mdm.max_body_bytes must be between 65536 and 67108864".into());
        }
        if self.mdm.retention_days == 0 || self.mdm.enrollment_link_ttl_secs == 0 {
            return invalid("mdm.retention_days and mdm.enrollment_link_ttl_secs must be positive".into());
        }
        if !(1..=720).contains(&self.mdm.inventory_interval_hours) {
            return invalid("mdm.inventory_interval_hours must be between 1 and 720".into());
        }
        if !self.apns.base_url.starts_with("https://") {
            return invalid(format!(
                "apns.base_url {:?} must be an https:// URL",
                self.apns.base_url
            ));
        }
        if let Some(proxy) = &self.apns.proxy
            && !(proxy.starts_with("http://") || proxy.starts_with("https://"))
        {
            return invalid("apns.proxy must be an http:// or https:// URL".into());
        }
        if !(1..=10_000).contains(&self.apns.concurrency) {
            return invalid("apns.concurrency must be between 1 and 10000".into());
        }
        match (&self.webhook.url, &self.webhook.secret) {
            (Some(url), _) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                return invalid(format!("webhook.url {url:?} must be an http(s):// URL"));
            }
            (Some(_), None) => {
                return invalid("webhook.url needs webhook.secret (or webhook.secret_file)".into());
            }
            _ => {}
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
mod tests {
    use super::*;
    use figment::Jail;

    // Every test runs in a Jail: it serialises tests that touch the process environment.
    fn load_in(jail: &Jail, file: Option<&str>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let path = file.map(|f| jail.directory().join(f));
        load(path.as_deref(), overrides)
    }

    #[test]
    fn defaults_are_safe_and_complete() {
        Jail::expect_with(|jail| {
            let c = load_in(jail, None, &Overrides::default()).unwrap();
            assert_eq!(c, Config::default());
            assert_eq!(c.server.listen.to_string(), "0.0.0.0:8443");
            assert_eq!(c.data_dir, PathBuf::from("./citadel-data"));
            Ok(())
        });
    }

    #[test]
    fn the_example_file_loads_and_documents_the_defaults() {
        Jail::expect_with(|_jail| {
            let example = Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/installer/citadel.toml.example"
            ));
            let c = load(Some(example), &Overrides::default()).unwrap();
            assert_eq!(c, Config::default());
            Ok(())
        });
    }

    #[test]
    fn layers_apply_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "data_dir = \"/from/file\"\n[server]\nlisten = \"127.0.0.1:1000\"\nhostnames = [\"mdm.example.org\"]\n[log]\nformat = \"json\"\n",
            )?;
            jail.set_env("CITADEL_SERVER__LISTEN", "127.0.0.1:2000");
            jail.set_env("OTHER", "x");
            let c = load_in(jail, Some("c.toml"), &Overrides::default()).unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/from/file"));
            assert_eq!(c.server.listen.to_string(), "127.0.0.1:2000");
            assert_eq!(c.server.hostnames, vec!["mdm.example.org".to_string()]);
            assert_eq!(c.log.format, LogFormat::Json);
            let o = Overrides {
                listen: Some("127.0.0.1:3000".parse().unwrap()),
                data_dir: Some("/from/flag".into()),
            };
            let c = load_in(jail, Some("c.toml"), &o).unwrap();
            assert_eq!(c.server.listen.to_string(), "127.0.0.1:3000");
            assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
            Ok(())
        });
    }

    #[test]
    fn env_values_are_typed() {
        Jail::expect_with(|jail| {
            jail.set_env("CITADEL_SERVER__WORKERS", "3");
            jail.set_env("CITADEL_SERVER__HOSTNAMES", "[a.example, b.example]");
            jail.set_env("CITADEL_CONFIG", "/belongs/to/the/cli");
            let c = load_in(jail, None, &Overrides::default()).unwrap();
            assert_eq!(c.server.workers, 3);
            assert_eq!(
                c.server.hostnames,
                vec!["a.example".to_string(), "b.example".to_string()]
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n")?;
            let err = load_in(jail, Some("c.toml"), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen_port"), "{err}");
            assert!(err.contains("c.toml"), "{err}");
            jail.create_file("ok.toml", "")?;
            jail.set_env("CITADEL_BOGUS_KEY", "1");
            let err = load_in(jail, Some("ok.toml"), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("bogus_key"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn secrets_come_from_files_and_are_redacted() {
        Jail::expect_with(|jail| {
            jail.create_file("secret", "correct horse battery staple\n")?;
            let secret = jail.directory().join("secret");
            jail.create_file(
                "c.toml",
                &format!("[admin]\nbootstrap_secret_file = {secret:?}\n"),
            )?;
            let c = load_in(jail, Some("c.toml"), &Overrides::default()).unwrap();
            assert_eq!(
                c.admin.bootstrap_secret.as_ref().map(Secret::expose),
                Some("correct horse battery staple")
            );
            let shown = c.to_redacted_toml();
            assert!(shown.contains("<redacted>"), "{shown}");
            assert!(!shown.contains("horse"), "{shown}");
            assert!(!format!("{c:?}").contains("horse"));
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_explained() {
        Jail::expect_with(|jail| {
            jail.create_file("half.toml", "[server]\ntls_cert_file = \"/x.pem\"\n")?;
            let err = load_in(jail, Some("half.toml"), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("tls_key_file"), "{err}");
            jail.create_file("addr.toml", "[server]\nlisten = \"not an address\"\n")?;
            let err = load_in(jail, Some("addr.toml"), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.listen"), "{err}");
            assert!(matches!(
                config_file(Some(Path::new("/nonexistent.toml"))),
                Err(ConfigError::MissingFile(_))
            ));
            Ok(())
        });
    }
}
