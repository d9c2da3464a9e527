//! The appliance's PKI on disk: the root CA and the TLS server certificate in `<data>/pki`.
//!
//! Together with the `citadel-certs` crate this is the only code that sees private keys: it
//! reads and writes the key files (mode 0600, refused if looser) and hands keys on only
//! inside a rustls signing key.

pub mod push;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use citadel_certs::cms::ProfileSigner;
use citadel_certs::seal::DataKey;
use citadel_certs::{
    CertError, CertificateAuthority, CertificateInfo, RegistrationAuthority, SecretPem, ServerIdentity,
};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use crate::datadir::{self, DataDir, DataDirError};

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const ISSUING_CERT: &str = "issuing.crt";
const ISSUING_KEY: &str = "issuing.key";
const RA_CERT: &str = "ra.crt";
const RA_KEY: &str = "ra.key";
const SERVER_CERT: &str = "server.crt";
/// AES-256 key that seals device secrets at rest (UnlockToken, bootstrap token), hex.
const DATA_KEY: &str = "data.key";
/// The RA certificate is replaced this long before it expires. Devices fetch it afresh for
/// every enrollment (GetCACert), so replacing it strands nobody.
pub const RA_RENEW_WITHIN: time::Duration = time::Duration::days(30);
const SERVER_KEY: &str = "server.key";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("{context}: {source}")]
    Cert {
        context: String,
        #[source]
        source: CertError,
    },
    #[error(
        "the CA in {dir} is incomplete: {missing} is missing. Restore it from a backup; \
         generating a new CA would orphan every enrolled device"
    )]
    Incomplete { dir: String, missing: &'static str },
}

fn cert_err(context: impl Into<String>) -> impl FnOnce(CertError) -> PkiError {
    let context = context.into();
    move |source| PkiError::Cert { context, source }
}

/// Where the TLS server certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Issued and renewed by Citadel's own CA.
    Managed,
    /// Supplied by the operator (`server.tls_cert_file`); Citadel does not renew it.
    Operator { cert_file: PathBuf },
}

/// A TLS identity ready for rustls, with what an operator needs to know about it.
#[derive(Clone)]
pub struct ServerCertificate {
    pub certified_key: Arc<CertifiedKey>,
    pub info: CertificateInfo,
    pub source: TlsSource,
    /// The same identity, for signing enrollment profiles.
    pub profile_signer: Arc<ProfileSigner>,
}

/// What `ensure_server_certificate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Reused,
    Issued { reason: String },
}

pub struct Pki {
    dir: PathBuf,
    /// Names this installation in the subjects of the certificates it creates.
    label: String,
    /// RSA-3072 root: the trust anchor; signs the TLS certificate, the issuing CA and the RA.
    ca: CertificateAuthority,
    /// ECDSA P-256 issuing CA under the root: device certificates and the CRL.
    issuing: CertificateAuthority,
    /// RSA-2048 SCEP RA under the root: devices encrypt to it; it signs CertReps. Swapped in
    /// place when renewed.
    ra: RwLock<Arc<RegistrationAuthority>>,
    data_key: DataKey,
}

impl Pki {
    /// Loads the root and issuing CAs, creating what is missing (the root only on first
    /// start). Returns whether the root was created.
    pub fn load_or_create(
        data: &DataDir,
        label: &str,
        now: OffsetDateTime,
    ) -> Result<(Self, bool), PkiError> {
        let dir = data.pki_dir();
        data.ensure_subdir(&dir)?;
        let (ca, created) = load_or_create_pair(&dir, CA_CERT, CA_KEY, "root CA", || {
            CertificateAuthority::generate(label, now)
        })?;
        let (issuing, _) = load_or_create_pair(&dir, ISSUING_CERT, ISSUING_KEY, "issuing CA", || {
            ca.generate_issuing(label, now)
        })?;
        let ra = match reusable_registration_authority(&dir, &ca, now)? {
            Ok(ra) => ra,
            Err(reason) => {
                tracing::info!(%reason, "issuing a new SCEP RA certificate");
                create_registration_authority(&dir, &ca, label, now)?
            }
        };
        let data_key = load_or_create_data_key(&dir)?;
        let pki = Self {
            dir,
            label: label.to_owned(),
            ca,
            issuing,
            ra: RwLock::new(Arc::new(ra)),
            data_key,
        };
        Ok((pki, created))
    }

    /// Seals a device secret for storage; `context` (e.g. the enrollment ID) must be given
    /// again to open it.
    pub fn seal(&self, secret: &[u8], context: &str) -> Result<String, PkiError> {
        self.data_key
            .seal(secret, context.as_bytes())
            .map_err(cert_err("cannot seal a device secret"))
    }

    /// Opens what [`Pki::seal`] sealed for `context`; `None` if it was not.
    pub fn open(&self, sealed: &str, context: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        self.data_key.open(sealed, context.as_bytes())
    }

    /// The SCEP registration authority in use.
    pub fn registration_authority(&self) -> Arc<RegistrationAuthority> {
        match self.ra.read() {
            Ok(ra) => Arc::clone(&ra),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the RA certificate when it expires within [`RA_RENEW_WITHIN`] of `now`.
    pub fn refresh_registration_authority(&self, now: OffsetDateTime) -> Result<Renewal, PkiError> {
        let current = self.registration_authority();
        let info = current
            .info()
            .map_err(cert_err("cannot read the SCEP RA certificate"))?;
        if !info.expires_within(now, RA_RENEW_WITHIN) {
            return Ok(Renewal::Reused);
        }
        let reason = format!("it expires in {} days", info.days_left(now));
        let fresh = Arc::new(create_registration_authority(
            &self.dir,
            &self.ca,
            &self.label,
            now,
        )?);
        match self.ra.write() {
            Ok(mut slot) => *slot = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(Renewal::Issued { reason })
    }

    pub fn ca_certificate_pem(&self) -> &str {
        self.ca.certificate_pem()
    }

    /// The issuing CA for device certificates, the CRL and SCEP. Its key stays inside
    /// `CertificateAuthority`.
    pub fn issuing_ca(&self) -> &CertificateAuthority {
        &self.issuing
    }

    /// Issuing CA then root, PEM: what a relying party needs besides the root.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.issuing.certificate_pem(), self.ca.certificate_pem())
    }

    pub fn ca_certificate_der(&self) -> Vec<u8> {
        self.ca.certificate_der().to_vec()
    }

    pub fn ca_info(&self) -> Result<CertificateInfo, PkiError> {
        self.ca.info().map_err(cert_err("cannot read the CA certificate"))
    }

    /// Returns a server certificate for `identity`, reusing the one on disk unless it is
    /// missing, unreadable, not from this CA, missing a name, or expires within `renew_within`.
    pub fn ensure_server_certificate(
        &self,
        identity: &ServerIdentity,
        now: OffsetDateTime,
        renew_within: time::Duration,
    ) -> Result<(ServerCertificate, Renewal), PkiError> {
        let (cert_path, key_path) = (self.dir.join(SERVER_CERT), self.dir.join(SERVER_KEY));
        let reason =
            match self.reusable_server_certificate(&cert_path, &key_path, identity, now, renew_within)? {
                Ok(existing) => return Ok((existing, Renewal::Reused)),
                Err(reason) => reason,
            };
        let issued = self
            .ca
            .issue_server_certificate(identity, now)
            .map_err(cert_err("cannot issue the TLS server certificate"))?;
        datadir::write_file(&key_path, issued.key_pem.expose().as_bytes(), 0o600)?;
        datadir::write_file(&cert_path, issued.cert_pem.as_bytes(), 0o644)?;
        let cert = managed_certificate(&issued.cert_pem, &issued.key_pem, self.ca.certificate_pem())?;
        Ok((cert, Renewal::Issued { reason }))
    }

    /// `Ok(Ok(cert))` when the certificate on disk can stay, `Ok(Err(reason))` when not.
    fn reusable_server_certificate(
        &self,
        cert_path: &Path,
        key_path: &Path,
        identity: &ServerIdentity,
        now: OffsetDateTime,
        renew_within: time::Duration,
    ) -> Result<Result<ServerCertificate, String>, PkiError> {
        if !cert_path.exists() || !key_path.exists() {
            return Ok(Err("no server certificate yet".into()));
        }
        datadir::check_secret_file(key_path)?;
        let cert_pem = datadir::read_file(cert_path)?;
        let key_pem = SecretPem::new(datadir::read_file(key_path)?);
        let cert = match managed_certificate(&cert_pem, &key_pem, self.ca.certificate_pem()) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("the certificate on disk is unusable ({e})"))),
        };
        let first = identity
            .names()
            .first()
            .map(String::as_str)
            .unwrap_or("localhost");
        if !self.ca.verifies_server_certificate(&cert_pem, first, now) {
            return Ok(Err("the certificate on disk is not valid under this CA".into()));
        }
        if !identity.covered_by(&cert.info) {
            return Ok(Err("the host names changed".into()));
        }
        if cert.info.expires_within(now, renew_within) {
            return Ok(Err(format!("it expires in {} days", cert.info.days_left(now))));
        }
        Ok(Ok(cert))
    }
}

fn load_or_create_data_key(dir: &Path) -> Result<DataKey, PkiError> {
    let path = dir.join(DATA_KEY);
    if path.exists() {
        datadir::check_secret_file(&path)?;
        let hex_key = zeroize::Zeroizing::new(datadir::read_file(&path)?);
        let bytes = zeroize::Zeroizing::new(hex::decode(hex_key.trim()).unwrap_or_default());
        return DataKey::from_bytes(&bytes).map_err(cert_err(format!("cannot load {}", path.display())));
    }
    let (key, bytes) = DataKey::generate().map_err(cert_err("cannot create the data key"))?;
    let hex_key = zeroize::Zeroizing::new(hex::encode(bytes.as_slice()));
    datadir::write_file(&path, hex_key.as_bytes(), 0o600)?;
    Ok(key)
}

/// `Ok(Ok(ra))` when the RA on disk can stay, `Ok(Err(reason))` when a new one is needed.
/// Unsafe key permissions are an error, as for every key.
fn reusable_registration_authority(
    dir: &Path,
    root: &CertificateAuthority,
    now: OffsetDateTime,
) -> Result<Result<RegistrationAuthority, String>, PkiError> {
    let (cert, key) = (dir.join(RA_CERT), dir.join(RA_KEY));
    if !cert.exists() || !key.exists() {
        return Ok(Err("no SCEP RA certificate yet".into()));
    }
    datadir::check_secret_file(&key)?;
    let cert_pem = datadir::read_file(&cert)?;
    let key_pem = SecretPem::new(datadir::read_file(&key)?);
    let ra = match RegistrationAuthority::from_pem(&cert_pem, &key_pem) {
        Ok(ra) => ra,
        Err(e) => return Ok(Err(format!("the RA on disk is unusable ({e})"))),
    };
    if !root.signed(ra.certificate_der()) {
        return Ok(Err("the RA on disk was not issued by this root".into()));
    }
    match ra.info() {
        Ok(info) if info.expires_within(now, RA_RENEW_WITHIN) => {
            Ok(Err(format!("it expires in {} days", info.days_left(now))))
        }
        Ok(_) => Ok(Ok(ra)),
        Err(e) => Ok(Err(format!("the RA on disk is unreadable ({e})"))),
    }
}

fn create_registration_authority(
    dir: &Path,
    root: &CertificateAuthority,
    label: &str,
    now: OffsetDateTime,
) -> Result<RegistrationAuthority, PkiError> {
    let ra = root
        .issue_registration_authority(label, now)
        .map_err(cert_err("cannot issue the SCEP RA certificate"))?;
    datadir::write_file(&dir.join(RA_KEY), ra.private_key_pem().expose().as_bytes(), 0o600)?;
    datadir::write_file(&dir.join(RA_CERT), ra.certificate_pem().as_bytes(), 0o644)?;
    Ok(ra)
}

/// Loads a CA certificate and key pair from `dir`, or creates and persists it when both files
/// are absent. One file without the other is an error: re-creating would orphan devices.
fn load_or_create_pair(
    dir: &Path,
    cert_name: &'static str,
    key_name: &'static str,
    what: &str,
    create: impl FnOnce() -> Result<CertificateAuthority, CertError>,
) -> Result<(CertificateAuthority, bool), PkiError> {
    let (cert, key) = (dir.join(cert_name), dir.join(key_name));
    let incomplete = |missing| PkiError::Incomplete {
        dir: dir.display().to_string(),
        missing,
    };
    match (cert.exists(), key.exists()) {
        (false, false) => {
            let ca = create().map_err(cert_err(format!("cannot create the {what}")))?;
            // Key first: a certificate without its key is the worse half-state.
            datadir::write_file(&key, ca.private_key_pem().expose().as_bytes(), 0o600)?;
            datadir::write_file(&cert, ca.certificate_pem().as_bytes(), 0o644)?;
            Ok((ca, true))
        }
        (true, true) => {
            datadir::check_secret_file(&key)?;
            let cert_pem = datadir::read_file(&cert)?;
            let key_pem = SecretPem::new(datadir::read_file(&key)?);
            let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem)
                .map_err(cert_err(format!("cannot load the {what} from {}", dir.display())))?;
            Ok((ca, false))
        }
        (false, true) => Err(incomplete(cert_name)),
        (true, false) => Err(incomplete(key_name)),
    }
}

fn managed_certificate(
    cert_pem: &str,
    key_pem: &SecretPem,
    root_pem: &str,
) -> Result<ServerCertificate, PkiError> {
    // Profiles carry the root too, so a device can build the chain before trusting it.
    let chain = format!("{cert_pem}{root_pem}");
    Ok(ServerCertificate {
        certified_key: citadel_certs::certified_key(cert_pem, key_pem)
            .map_err(cert_err("server certificate"))?,
        info: citadel_certs::inspect_pem(cert_pem).map_err(cert_err("server certificate"))?,
        source: TlsSource::Managed,
        profile_signer: Arc::new(
            ProfileSigner::from_pem(&chain, key_pem).map_err(cert_err("profile signer"))?,
        ),
    })
}

/// Loads an operator-supplied certificate chain and key. The key file must not be readable by
/// others (group-readable is allowed: `ssl-cert`-style groups are common).
pub fn load_operator_certificate(cert_file: &Path, key_file: &Path) -> Result<ServerCertificate, PkiError> {
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(key_file)
            .map_err(|source| DataDirError::Io {
                action: "inspect",
                path: key_file.display().to_string(),
                source,
            })?
            .permissions(),
    );
    if mode & 0o007 != 0 {
        return Err(DataDirError::UnsafePermissions {
            what: "TLS key file",
            path: key_file.display().to_string(),
            mode: mode & 0o7777,
            fix: "640",
        }
        .into());
    }
    let cert_pem = datadir::read_file(cert_file)?;
    let key_pem = SecretPem::new(datadir::read_file(key_file)?);
    let context = format!(
        "TLS certificate {} with key {}",
        cert_file.display(),
        key_file.display()
    );
    Ok(ServerCertificate {
        certified_key: citadel_certs::certified_key(&cert_pem, &key_pem)
            .map_err(cert_err(context.clone()))?,
        info: citadel_certs::inspect_pem(&cert_pem).map_err(cert_err(context.clone()))?,
        profile_signer: Arc::new(ProfileSigner::from_pem(&cert_pem, &key_pem).map_err(cert_err(context))?),
        source: TlsSource::Operator {
            cert_file: cert_file.to_path_buf(),
        },
    })
}

/// The root certificate (public) as stored, without loading the key: for `citadel ca export`,
/// which must work while the server runs. With `chain`, the issuing CA comes first.
pub fn read_ca_certificate(data: &DataDir, chain: bool) -> Result<String, PkiError> {
    let names: &[&'static str] = if chain {
        &[ISSUING_CERT, CA_CERT]
    } else {
        &[CA_CERT]
    };
    let mut out = String::new();
    for name in names {
        let path = data.pki_dir().join(name);
        if !path.exists() {
            return Err(PkiError::Incomplete {
                dir: data.pki_dir().display().to_string(),
                missing: name,
            });
        }
        out.push_str(&datadir::read_file(&path)?);
    }
    Ok(out)
}

/// The host's names for the generated certificate: loopback, the machine's hostname and
/// whatever the operator configured. Unusable names are skipped with a warning.
pub fn server_identity(extra: &[String]) -> Result<ServerIdentity, PkiError> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if let Ok(host) = gethostname::gethostname().into_string() {
        match ServerIdentity::new([host.as_str()]) {
            Ok(_) => names.push(host),
            Err(e) => tracing::warn!(%host, error = %e, "machine hostname left out of the TLS certificate"),
        }
    }
    names.extend(extra.iter().cloned());
    ServerIdentity::new(names).map_err(cert_err("server.hostnames"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn setup() -> (tempfile::TempDir, DataDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dd = DataDir::prepare(&tmp.path().join("data")).unwrap();
        (tmp, dd)
    }

    #[test]
    fn creates_once_then_reuses() {
        let (_tmp, dd) = setup();
        let (pki, created) = Pki::load_or_create(&dd, "t", NOW).unwrap();
        assert!(created);
        for key in [CA_KEY, ISSUING_KEY, RA_KEY, DATA_KEY] {
            let mode = std::fs::metadata(dd.pki_dir().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        assert!(pki.issuing_ca().info().unwrap().is_ca);
        assert!(!pki.registration_authority().info().unwrap().is_ca);
        let sealed = pki.seal(b"unlock", "device-1").unwrap();
        let (again, created) = Pki::load_or_create(&dd, "t", NOW).unwrap();
        assert!(!created);
        assert_eq!(again.open(&sealed, "device-1").unwrap().as_slice(), b"unlock");
        assert_eq!(
            again.registration_authority().certificate_pem(),
            pki.registration_authority().certificate_pem()
        );
        assert_eq!(again.ca_certificate_pem(), pki.ca_certificate_pem());
        assert_eq!(again.chain_pem(), pki.chain_pem());
    }

    #[test]
    fn the_ra_is_replaced_before_it_expires_and_when_lost() {
        let (_tmp, dd) = setup();
        let (pki, _) = Pki::load_or_create(&dd, "t", NOW).unwrap();
        let first = pki.registration_authority().info().unwrap();
        assert_eq!(pki.refresh_registration_authority(NOW).unwrap(), Renewal::Reused);
        let late = first.not_after - time::Duration::days(29);
        let renewal = pki.refresh_registration_authority(late).unwrap();
        assert!(
            matches!(&renewal, Renewal::Issued { reason } if reason.contains("expires")),
            "{renewal:?}"
        );
        let second = pki.registration_authority().info().unwrap();
        assert!(second.not_after > first.not_after);
        // The renewed RA was persisted; losing its files only costs a new RA.
        let (again, _) = Pki::load_or_create(&dd, "t", late).unwrap();
        assert_eq!(
            again.registration_authority().info().unwrap().serial_hex,
            second.serial_hex
        );
        std::fs::remove_file(dd.pki_dir().join(RA_KEY)).unwrap();
        let (again, _) = Pki::load_or_create(&dd, "t", late).unwrap();
        assert_ne!(
            again.registration_authority().info().unwrap().serial_hex,
            second.serial_hex
        );
        // …but a readable RA key is refused like any other key.
        let key = dd.pki_dir().join(RA_KEY);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Pki::load_or_create(&dd, "t", late).is_err());
    }

    #[test]
    fn a_missing_key_is_not_silently_replaced() {
        let (_tmp, dd) = setup();
        Pki::load_or_create(&dd, "t", NOW).unwrap();
        std::fs::remove_file(dd.pki_dir().join(CA_KEY)).unwrap();
        let err = Pki::load_or_create(&dd, "t", NOW).err().unwrap();
        assert!(
            matches!(err, PkiError::Incomplete { missing: CA_KEY, .. }),
            "{err}"
        );
    }

    #[test]
    fn server_certificate_is_renewed_only_when_needed() {
        let (_tmp, dd) = setup();
        let (pki, _) = Pki::load_or_create(&dd, "t", NOW).unwrap();
        let id = ServerIdentity::new(["localhost", "127.0.0.1"]).unwrap();
        let window = time::Duration::days(30);
        let (first, r) = pki.ensure_server_certificate(&id, NOW, window).unwrap();
        assert!(matches!(r, Renewal::Issued { .. }));
        let (same, r) = pki
            .ensure_server_certificate(&id, NOW + time::Duration::days(300), window)
            .unwrap();
        assert_eq!(r, Renewal::Reused);
        assert_eq!(same.info.sha256_fingerprint, first.info.sha256_fingerprint);
        // 30 days before expiry it is replaced.
        let late = first.info.not_after - time::Duration::days(29);
        let (renewed, r) = pki.ensure_server_certificate(&id, late, window).unwrap();
        assert!(
            matches!(&r, Renewal::Issued { reason } if reason.contains("expires")),
            "{r:?}"
        );
        assert!(renewed.info.not_after > first.info.not_after);
        // A new host name forces a new certificate.
        let more = ServerIdentity::new(["localhost", "127.0.0.1", "mdm.example.org"]).unwrap();
        let (_, r) = pki.ensure_server_certificate(&more, late, window).unwrap();
        assert!(
            matches!(&r, Renewal::Issued { reason } if reason.contains("names")),
            "{r:?}"
        );
    }

    #[test]
    fn operator_key_must_not_be_world_readable() {
        let (_tmp, dd) = setup();
        let (pki, _) = Pki::load_or_create(&dd, "t", NOW).unwrap();
        let id = ServerIdentity::new(["localhost"]).unwrap();
        pki.ensure_server_certificate(&id, NOW, time::Duration::days(30))
            .unwrap();
        let (cert, key) = (dd.pki_dir().join(SERVER_CERT), dd.pki_dir().join(SERVER_KEY));
        let loaded = load_operator_certificate(&cert, &key).unwrap();
        assert!(matches!(loaded.source, TlsSource::Operator { .. }));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_operator_certificate(&cert, &key).is_err());
    }
}
