use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize, SanType, SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::aws_lc_rs;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

use zeroize::Zeroizing;

use crate::crypto::CaKeys;
use crate::inspect::{CertificateInfo, inspect_der, pem_to_der};
use crate::{CertError, SecretPem};

/// The root CA lives ten years; re-keying a fleet's trust anchor is an event, not a chore.
pub const CA_VALIDITY: Duration = Duration::days(3652);
/// Apple platforms reject TLS server certificates valid for more than 398 days.
pub const SERVER_CERT_VALIDITY: Duration = Duration::days(397);
/// The issuing CA is rotated well within the root's life.
pub const ISSUING_CA_VALIDITY: Duration = Duration::days(5 * 365);
/// The SCEP RA certificate; re-issued by the appliance when it nears expiry.
pub const RA_VALIDITY: Duration = Duration::days(2 * 365);
/// Certificates start slightly in the past so devices with a skewed clock accept them.
pub(crate) const BACKDATE: Duration = Duration::hours(1);

/// A certificate authority: the RSA-3072 root (self-signed) or the ECDSA P-256 issuing CA
/// under it, with its key.
pub struct CertificateAuthority {
    key: KeyPair,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// The same key loaded once into aws-lc-rs (SCEP decryption and signatures, issuance).
    keys: CaKeys,
    /// The parsed CA certificate and what issuance and SCEP need from it.
    parsed: ParsedCa,
}

/// What the SCEP and issuance paths need from the CA certificate, parsed once.
pub(crate) struct ParsedCa {
    pub(crate) cert: x509_cert::Certificate,
    /// DER SubjectPublicKeyInfo of the CA.
    pub(crate) spki_der: Vec<u8>,
    /// The CA's key identifier (its subjectKeyIdentifier, or SHA-1 of the key).
    pub(crate) key_id: Vec<u8>,
    pub(crate) not_after: OffsetDateTime,
}

impl ParsedCa {
    fn new(cert_der: &[u8]) -> Result<Self, CertError> {
        use der::{Decode, Encode};
        use x509_cert::ext::pkix::SubjectKeyIdentifier;
        let cert = x509_cert::Certificate::from_der(cert_der).map_err(|e| CertError::Parse(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let spki_der = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|e| CertError::Parse(e.to_string()))?;
        let key_id = match tbs.get_extension::<SubjectKeyIdentifier>() {
            Ok(Some((_, ski))) => ski.0.as_bytes().to_vec(),
            _ => {
                crate::crypto::Digest::Sha1.hash(tbs.subject_public_key_info().subject_public_key.raw_bytes())
            }
        };
        let not_after = inspect_der(cert_der)?.not_after;
        Ok(Self {
            cert,
            spki_der,
            key_id,
            not_after,
        })
    }
}

/// A certificate and its freshly generated private key.
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: SecretPem,
}

/// The names a TLS server certificate is issued for: DNS names and IP addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    names: Vec<String>,
}

impl ServerIdentity {
    /// Validates and de-duplicates the names (case-insensitively), keeping their order.
    pub fn new<I, S>(names: I) -> Result<Self, CertError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let name = name.as_ref().trim().to_ascii_lowercase();
            validate_server_name(&name)?;
            if !out.contains(&name) {
                out.push(name);
            }
        }
        if out.is_empty() {
            return Err(CertError::ServerName {
                name: String::new(),
                reason: "at least one name is needed".into(),
            });
        }
        Ok(Self { names: out })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// True when every name here is in the certificate's subjectAltName.
    pub fn covered_by(&self, info: &CertificateInfo) -> bool {
        self.names
            .iter()
            .all(|n| info.subject_alt_names.iter().any(|s| s.eq_ignore_ascii_case(n)))
    }
}

fn validate_server_name(name: &str) -> Result<(), CertError> {
    let bad = |reason: &str| {
        Err(CertError::ServerName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if name.is_empty() || name.len() > 253 {
        return bad("a DNS name must be 1 to 253 characters long");
    }
    for (i, label) in name.split('.').enumerate() {
        let wildcard = i == 0 && label == "*";
        let well_formed = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !(wildcard || well_formed) {
            return bad("each label must be 1 to 63 letters, digits or inner hyphens");
        }
    }
    Ok(())
}

/// 128 random bits, positive and without a leading zero octet, as RFC 5280 wants.
pub(crate) fn random_serial_bytes() -> [u8; 16] {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    bytes
}

fn random_serial() -> SerialNumber {
    SerialNumber::from_slice(&random_serial_bytes())
}

fn issue_err(e: rcgen::Error) -> CertError {
    CertError::Issue(e.to_string())
}

impl CertificateAuthority {
    /// Creates a new root CA. `label` names the installation (e.g. the host name) so that an
    /// administrator can tell two appliances' roots apart in a trust store.
    pub fn generate(label: &str, now: OffsetDateTime) -> Result<Self, CertError> {
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072)
            .map_err(|e| CertError::KeyGeneration(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Citadel");
        dn.push(DnType::CommonName, format!("Citadel Root CA ({label})"));
        params.distinguished_name = dn;
        // One level below the root: the issuing CA that devices deal with.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(issue_err)?;
        Self::assemble(key, cert.pem(), cert.der().clone())
    }

    /// Creates the issuing CA under this root: an ECDSA P-256 key that issues device
    /// certificates and signs CRLs. Its signatures cost a few percent of an RSA one, which is
    /// what lets one appliance absorb an enrollment burst; devices encrypt their SCEP requests
    /// to the separate RSA [`RegistrationAuthority`] instead. Valid for
    /// [`ISSUING_CA_VALIDITY`], never beyond the root.
    pub fn generate_issuing(&self, label: &str, now: OffsetDateTime) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CertError::KeyGeneration(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Citadel");
        dn.push(DnType::CommonName, format!("Citadel Device CA ({label})"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = std::cmp::min(now + ISSUING_CA_VALIDITY, self.parsed.not_after);
        params.serial_number = Some(random_serial());
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(issue_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(issue_err)?;
        Self::assemble(key, cert.pem(), cert.der().clone())
    }

    /// Issues the SCEP registration authority certificate under this root: an RSA-2048 key
    /// (Apple's SCEP payload encrypts only to RSA) that devices encrypt their requests to and
    /// that signs CertReps. An end entity, not a CA, valid for [`RA_VALIDITY`] (never beyond
    /// the root).
    pub fn issue_registration_authority(
        &self,
        label: &str,
        now: OffsetDateTime,
    ) -> Result<RegistrationAuthority, CertError> {
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
            .map_err(|e| CertError::KeyGeneration(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Citadel");
        dn.push(DnType::CommonName, format!("Citadel SCEP RA ({label})"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = std::cmp::min(now + RA_VALIDITY, self.parsed.not_after);
        params.serial_number = Some(random_serial());
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(issue_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(issue_err)?;
        RegistrationAuthority::assemble(key, cert.pem(), cert.der().clone())
    }

    /// True when `der` carries a signature of this CA's key and names it as issuer (validity
    /// and CA flags not checked): used to tell whether a stored RA belongs to this root.
    pub fn signed(&self, der: &[u8]) -> bool {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            return false;
        };
        let Ok(subject) = crate::crypto::to_der(self.parsed.cert.tbs_certificate().subject()) else {
            return false;
        };
        if cert.issuer().as_raw() != subject.as_slice() {
            return false;
        }
        let Ok(alg) = const_oid::ObjectIdentifier::from_bytes(cert.signature_algorithm.algorithm.as_bytes())
        else {
            return false;
        };
        crate::crypto::verify(
            &self.parsed.spki_der,
            &alg,
            None,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        )
        .is_ok()
    }

    fn assemble(
        key: KeyPair,
        cert_pem: String,
        cert_der: CertificateDer<'static>,
    ) -> Result<Self, CertError> {
        let keys = CaKeys::from_pkcs8(&Zeroizing::new(key.serialize_der()))?;
        let parsed = ParsedCa::new(&cert_der)?;
        Ok(Self {
            key,
            cert_pem,
            cert_der,
            keys,
            parsed,
        })
    }

    /// Loads a CA persisted earlier, checking that the key belongs to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &SecretPem) -> Result<Self, CertError> {
        let cert_der = pem_to_der(cert_pem)?;
        let key = KeyPair::from_pem(key_pem.expose()).map_err(|e| CertError::Key(e.to_string()))?;
        let info = inspect_der(&cert_der)?;
        if !info.is_ca {
            return Err(CertError::Parse(
                "the CA certificate is not marked as a CA".into(),
            ));
        }
        let ca = Self::assemble(key, cert_pem.to_owned(), cert_der)?;
        ca.check_key_matches()?;
        Ok(ca)
    }

    fn check_key_matches(&self) -> Result<(), CertError> {
        check_key_matches(&self.key, &self.cert_der)
    }

    pub(crate) fn keys(&self) -> &CaKeys {
        &self.keys
    }

    pub(crate) fn parsed(&self) -> &ParsedCa {
        &self.parsed
    }

    pub(crate) fn rcgen_key(&self) -> &KeyPair {
        &self.key
    }

    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn info(&self) -> Result<CertificateInfo, CertError> {
        inspect_der(&self.cert_der)
    }

    /// The private key, for the caller to store in an owner-only file.
    pub fn private_key_pem(&self) -> SecretPem {
        SecretPem::new(self.key.serialize_pem())
    }

    /// Issues a TLS server certificate (ECDSA P-256) for `identity`, valid for
    /// [`SERVER_CERT_VALIDITY`] (capped at the CA's own expiry).
    pub fn issue_server_certificate(
        &self,
        identity: &ServerIdentity,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CertError::KeyGeneration(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Citadel");
        if let Some(first) = identity.names().first() {
            dn.push(DnType::CommonName, first.clone());
        }
        params.distinguished_name = dn;
        params.subject_alt_names = identity
            .names()
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name.clone().try_into().map(SanType::DnsName).map_err(issue_err),
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        let ca_expiry = self.info()?.not_after;
        params.not_after = std::cmp::min(now + SERVER_CERT_VALIDITY, ca_expiry);
        params.serial_number = Some(random_serial());

        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(issue_err)?;
        let cert = params.signed_by(&key, &issuer).map_err(issue_err)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: SecretPem::new(key.serialize_pem()),
        })
    }

    /// True when `leaf_pem` is a currently valid server certificate issued by this CA for
    /// `name` at `now`.
    pub fn verifies_server_certificate(&self, leaf_pem: &str, name: &str, now: OffsetDateTime) -> bool {
        let Ok(leaf) = pem_to_der(leaf_pem) else {
            return false;
        };
        let mut roots = rustls::RootCertStore::empty();
        if roots.add(self.cert_der.clone()).is_err() {
            return false;
        }
        let provider = Arc::new(aws_lc_rs::default_provider());
        let Ok(verifier) = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()
        else {
            return false;
        };
        let Ok(server_name) = ServerName::try_from(name.to_owned()) else {
            return false;
        };
        let Ok(secs) = u64::try_from(now.unix_timestamp()) else {
            return false;
        };
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &server_name,
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            )
            .is_ok()
    }
}

fn check_key_matches(key: &KeyPair, cert_der: &CertificateDer<'static>) -> Result<(), CertError> {
    let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| CertError::Key(e.to_string()))?;
    let signer = aws_lc_rs::sign::any_supported_type(&key_der).map_err(|e| CertError::Key(e.to_string()))?;
    CertifiedKey::new(vec![cert_der.clone()], signer)
        .keys_match()
        .map_err(|_| CertError::KeyMismatch)
}

/// The SCEP registration authority: the RSA certificate and key that devices encrypt their
/// requests to and that sign the CertRep replies. Issued by the root (so that GetCACert's
/// RA + root is a complete chain of RSA certificates every client can encrypt to).
pub struct RegistrationAuthority {
    key: KeyPair,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    keys: CaKeys,
    parsed: ParsedCa,
}

impl RegistrationAuthority {
    fn assemble(
        key: KeyPair,
        cert_pem: String,
        cert_der: CertificateDer<'static>,
    ) -> Result<Self, CertError> {
        let keys = CaKeys::from_pkcs8(&Zeroizing::new(key.serialize_der()))?;
        if !keys.is_rsa() {
            return Err(CertError::Key(
                "the SCEP RA key must be RSA: devices encrypt their requests to it".into(),
            ));
        }
        let parsed = ParsedCa::new(&cert_der)?;
        Ok(Self {
            key,
            cert_pem,
            cert_der,
            keys,
            parsed,
        })
    }

    /// Loads an RA persisted earlier (or an RSA CA acting as its own RA), checking that the
    /// key is RSA and belongs to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &SecretPem) -> Result<Self, CertError> {
        let cert_der = pem_to_der(cert_pem)?;
        let key = KeyPair::from_pem(key_pem.expose()).map_err(|e| CertError::Key(e.to_string()))?;
        check_key_matches(&key, &cert_der)?;
        Self::assemble(key, cert_pem.to_owned(), cert_der)
    }

    pub(crate) fn keys(&self) -> &CaKeys {
        &self.keys
    }

    pub(crate) fn parsed(&self) -> &ParsedCa {
        &self.parsed
    }

    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn info(&self) -> Result<CertificateInfo, CertError> {
        inspect_der(&self.cert_der)
    }

    /// The private key, for the caller to store in an owner-only file.
    pub fn private_key_pem(&self) -> SecretPem {
        SecretPem::new(self.key.serialize_pem())
    }
}

/// Builds the rustls signing identity from a PEM certificate chain (leaf first) and its key,
/// checking that the key belongs to the leaf.
pub fn certified_key(chain_pem: &str, key_pem: &SecretPem) -> Result<Arc<CertifiedKey>, CertError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what: "certificate chain",
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::Pem {
            what: "certificate chain",
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(|e| CertError::Pem {
        what: "private key",
        reason: e.to_string(),
    })?;
    let signer = aws_lc_rs::sign::any_supported_type(&key).map_err(|e| CertError::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| CertError::KeyMismatch)?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate("test", NOW).unwrap()
    }

    #[test]
    fn root_is_a_ten_year_rsa_ca() {
        let ca = ca();
        let info = ca.info().unwrap();
        assert!(info.is_ca);
        assert!(info.subject.contains("Citadel Root CA (test)"));
        assert_eq!(info.subject, info.issuer);
        assert_eq!(info.not_after, NOW + CA_VALIDITY);
        assert!(
            ca.private_key_pem()
                .expose()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }

    #[test]
    fn round_trips_through_pem() {
        let ca = ca();
        let again = CertificateAuthority::from_pem(ca.certificate_pem(), &ca.private_key_pem()).unwrap();
        assert_eq!(again.certificate_der(), ca.certificate_der());
    }

    #[test]
    fn refuses_a_key_that_is_not_the_cas() {
        let a = ca();
        let b = ca();
        let err = CertificateAuthority::from_pem(a.certificate_pem(), &b.private_key_pem()).err();
        assert!(matches!(err, Some(CertError::KeyMismatch)), "{err:?}");
    }

    #[test]
    fn server_certificate_chains_to_the_root_for_every_name() {
        let ca = ca();
        let id = ServerIdentity::new(["localhost", "127.0.0.1", "mdm.example.org"]).unwrap();
        let issued = ca.issue_server_certificate(&id, NOW).unwrap();
        for name in id.names() {
            assert!(
                ca.verifies_server_certificate(&issued.cert_pem, name, NOW),
                "{name}"
            );
        }
        assert!(!ca.verifies_server_certificate(&issued.cert_pem, "other.example.org", NOW));
        let info = crate::inspect_pem(&issued.cert_pem).unwrap();
        assert!(!info.is_ca);
        assert!(id.covered_by(&info));
        assert_eq!(info.not_after, NOW + SERVER_CERT_VALIDITY);
        // Expired certificates do not verify.
        let later = NOW + SERVER_CERT_VALIDITY + Duration::days(1);
        assert!(!ca.verifies_server_certificate(&issued.cert_pem, "localhost", later));
        // A certificate from another CA does not verify.
        assert!(
            !super::CertificateAuthority::generate("other", NOW)
                .unwrap()
                .verifies_server_certificate(&issued.cert_pem, "localhost", NOW)
        );
        certified_key(&issued.cert_pem, &issued.key_pem).unwrap();
    }

    #[test]
    fn expiry_window() {
        let ca = ca();
        let id = ServerIdentity::new(["localhost"]).unwrap();
        let info = crate::inspect_pem(&ca.issue_server_certificate(&id, NOW).unwrap().cert_pem).unwrap();
        assert!(!info.expires_within(NOW, Duration::days(30)));
        let near = NOW + SERVER_CERT_VALIDITY - Duration::days(29);
        assert!(info.expires_within(near, Duration::days(30)));
        assert_eq!(info.days_left(NOW), 397);
    }

    #[test]
    fn server_names_are_validated() {
        assert!(ServerIdentity::new(["bad name"]).is_err());
        assert!(ServerIdentity::new(["-x.example"]).is_err());
        assert!(ServerIdentity::new(Vec::<String>::new()).is_err());
        let id = ServerIdentity::new(["LocalHost", "localhost", "::1", "*.example.org"]).unwrap();
        assert_eq!(id.names(), ["localhost", "::1", "*.example.org"]);
    }

    #[test]
    fn issuing_ca_is_an_ecdsa_ca_under_the_root() {
        let root = ca();
        let issuing = root.generate_issuing("test", NOW).unwrap();
        let info = issuing.info().unwrap();
        assert!(info.is_ca);
        assert_eq!(info.issuer, root.info().unwrap().subject);
        assert!(info.subject.contains("Citadel Device CA (test)"));
        assert_eq!(info.not_after, NOW + ISSUING_CA_VALIDITY);
        assert_eq!(
            issuing.parsed().spki_der.len(),
            91,
            "ECDSA P-256 SubjectPublicKeyInfo"
        );
        assert!(!issuing.keys().is_rsa());
        let again =
            CertificateAuthority::from_pem(issuing.certificate_pem(), &issuing.private_key_pem()).unwrap();
        assert_eq!(again.certificate_der(), issuing.certificate_der());
        // openssl accepts the chain: the root allows one CA below it.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), root.certificate_pem()).unwrap();
        std::fs::write(dir.path().join("issuing.pem"), issuing.certificate_pem()).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "verify",
                "-attime",
                &NOW.unix_timestamp().to_string(),
                "-CAfile",
                "root.pem",
                "issuing.pem",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn registration_authority_is_an_rsa_end_entity_under_the_root() {
        let root = ca();
        let ra = root.issue_registration_authority("test", NOW).unwrap();
        let info = ra.info().unwrap();
        assert!(!info.is_ca);
        assert_eq!(info.issuer, root.info().unwrap().subject);
        assert!(info.subject.contains("Citadel SCEP RA (test)"));
        assert_eq!(info.not_after, NOW + RA_VALIDITY);
        assert_eq!(ra.parsed().spki_der.len(), 294, "RSA-2048 SubjectPublicKeyInfo");
        assert!(root.signed(ra.certificate_der()));
        assert!(
            !root
                .generate_issuing("x", NOW)
                .unwrap()
                .signed(ra.certificate_der())
        );
        let again = RegistrationAuthority::from_pem(ra.certificate_pem(), &ra.private_key_pem()).unwrap();
        assert_eq!(again.certificate_der(), ra.certificate_der());
        // An EC key cannot be an RA; a key of another certificate is refused.
        let issuing = root.generate_issuing("test", NOW).unwrap();
        assert!(
            RegistrationAuthority::from_pem(issuing.certificate_pem(), &issuing.private_key_pem()).is_err()
        );
        assert!(matches!(
            RegistrationAuthority::from_pem(ra.certificate_pem(), &root.private_key_pem()),
            Err(CertError::KeyMismatch)
        ));
        // openssl: the RA chains to the root and may encrypt and sign.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), root.certificate_pem()).unwrap();
        std::fs::write(dir.path().join("ra.pem"), ra.certificate_pem()).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "verify",
                "-attime",
                &NOW.unix_timestamp().to_string(),
                "-CAfile",
                "root.pem",
                "ra.pem",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = std::process::Command::new("openssl")
            .args(["x509", "-in", "ra.pem", "-noout", "-ext", "keyUsage"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("Digital Signature, Key Encipherment"), "{text}");
    }

    #[test]
    fn certified_key_rejects_a_foreign_key() {
        let ca = ca();
        let id = ServerIdentity::new(["localhost"]).unwrap();
        let a = ca.issue_server_certificate(&id, NOW).unwrap();
        let b = ca.issue_server_certificate(&id, NOW).unwrap();
        assert!(matches!(
            certified_key(&a.cert_pem, &b.key_pem),
            Err(CertError::KeyMismatch)
        ));
        assert!(certified_key("garbage", &a.key_pem).is_err());
    }
}
