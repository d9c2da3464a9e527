//! The APNs push certificate: the key and CSR an administrator takes to Apple's portal, the
//! MDM-vendor signature over that CSR, reading what Apple returns (PEM or PKCS#12), and the
//! topic the certificate is for.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_RSA_SHA256, RsaKeySize};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::crypto::{CaKeys, Digest};
use crate::{CertError, SecretPem};

/// OID of the `UID` attribute (RFC 4519) where Apple puts the push topic.
const UID: &str = "0.9.2342.19200300.100.1.1";
/// Every MDM push topic starts with this.
pub const TOPIC_PREFIX: &str = "com.apple.mgmt";

/// What an imported push certificate is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCertificateInfo {
    pub topic: String,
    pub subject: String,
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub sha256_fingerprint: String,
}

/// A push certificate with its key, checked to belong together and to be for an MDM topic.
pub struct PushIdentity {
    pub info: PushCertificateInfo,
    /// Leaf first.
    pub cert_chain_pem: String,
    pub key_pem: SecretPem,
}

/// A new key and certificate signing request for Apple's push certificates portal.
pub struct PushRequest {
    pub key_pem: SecretPem,
    pub csr_pem: String,
    pub csr_der: Vec<u8>,
}

/// Creates an RSA-2048 key and a CSR (Apple's portal requires RSA).
pub fn new_request(organization: &str, email: Option<&str>) -> Result<PushRequest, CertError> {
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
        .map_err(|e| CertError::KeyGeneration(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{organization} MDM push"));
    dn.push(DnType::OrganizationName, organization);
    if let Some(email) = email {
        dn.push(DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]), email);
    }
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| CertError::Issue(e.to_string()))?;
    Ok(PushRequest {
        key_pem: SecretPem::new(key.serialize_pem()),
        csr_pem: csr.pem().map_err(|e| CertError::Encode(e.to_string()))?,
        csr_der: csr.der().to_vec(),
    })
}

/// The MDM vendor's signature over the customer's CSR (DER): RSA PKCS#1 v1.5 with SHA-256, as
/// Apple's vendor signing flow expects.
pub fn vendor_signature(csr_der: &[u8], vendor_key_pem: &SecretPem) -> Result<Vec<u8>, CertError> {
    let key =
        PrivateKeyDer::from_pem_slice(vendor_key_pem.expose().as_bytes()).map_err(|e| CertError::Pem {
            what: "vendor private key",
            reason: e.to_string(),
        })?;
    let pkcs8 = match &key {
        PrivateKeyDer::Pkcs8(k) => Zeroizing::new(k.secret_pkcs8_der().to_vec()),
        _ => {
            return Err(CertError::Key(
                "the vendor key must be a PKCS#8 RSA key (`openssl pkcs8 -topk8 -nocrypt`)".into(),
            ));
        }
    };
    let keys = CaKeys::from_pkcs8(&pkcs8)?;
    if !keys.is_rsa() {
        return Err(CertError::Key("the vendor key must be RSA".into()));
    }
    keys.sign(Digest::Sha256, csr_der)
}

/// The push topic in a certificate's subject UID, if it has one.
pub fn topic_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    cert.subject()
        .iter_attributes()
        .find(|a| a.attr_type().to_id_string() == UID)
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
}

/// Checks a push certificate chain (PEM, leaf first) and its key: they must match and the leaf
/// must carry an MDM topic. Expiry is the caller's to judge (it knows the time).
pub fn identity_from_pem(cert_chain_pem: &str, key_pem: &SecretPem) -> Result<PushIdentity, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what: "push certificate",
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::Pem {
            what: "push certificate",
            reason: "no CERTIFICATE block found".into(),
        });
    };
    // Proves the key is the certificate's (and usable by rustls, which is what will use it).
    crate::certified_key(cert_chain_pem, key_pem)?;
    let topic = topic_of(leaf).ok_or_else(|| {
        CertError::Parse("the certificate has no UID attribute: it is not an APNs push certificate".into())
    })?;
    if !topic.starts_with(TOPIC_PREFIX) {
        return Err(CertError::Parse(format!(
            "the certificate's topic {topic:?} is not an MDM topic (it must start with {TOPIC_PREFIX})"
        )));
    }
    let info = crate::inspect_der(leaf)?;
    Ok(PushIdentity {
        info: PushCertificateInfo {
            topic,
            subject: info.subject,
            serial_hex: info.serial_hex,
            not_before: info.not_before,
            not_after: info.not_after,
            sha256_fingerprint: info.sha256_fingerprint,
        },
        cert_chain_pem: cert_chain_pem.to_owned(),
        key_pem: key_pem.clone(),
    })
}

/// Reads a PKCS#12 file (legacy 3DES/RC2 as exported by older Keychain Access, or modern
/// AES/PBES2) into a push identity.
pub fn identity_from_pkcs12(p12: &[u8], password: &str) -> Result<PushIdentity, CertError> {
    let store = p12_keystore::KeyStore::from_pkcs12(p12, password)
        .map_err(|e| CertError::Key(format!("cannot open the PKCS#12 file: {e}")))?;
    let Some((_, chain)) = store.private_key_chain() else {
        return Err(CertError::Key(
            "the PKCS#12 file holds no private key with its certificate".into(),
        ));
    };
    let key_pem = der::pem::encode_string("PRIVATE KEY", der::pem::LineEnding::LF, chain.key())
        .map_err(|e| CertError::Encode(e.to_string()))?;
    let mut cert_pem = String::new();
    for cert in chain.chain() {
        cert_pem.push_str(
            &der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, cert.as_der())
                .map_err(|e| CertError::Encode(e.to_string()))?,
        );
    }
    identity_from_pem(&cert_pem, &SecretPem::new(key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::openssl;

    /// A push-like certificate (UID topic, clientAuth) signed by a throwaway CA, made by openssl.
    fn push_cert(dir: &std::path::Path, topic: &str) -> (String, String) {
        let conf =
            "[ext]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n";
        std::fs::write(dir.join("ext.cnf"), conf).unwrap();
        let (ok, text) = openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=Test Apple CA",
                "-days",
                "2",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        assert!(ok, "{text}");
        let subj = format!("/UID={topic}/CN=APSP:test/C=US");
        let (ok, text) = openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", "push.key", "-out",
                "push.csr",
            ],
        );
        assert!(ok, "{text}");
        let (ok, text) = openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "push.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "365",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "ext",
                "-out",
                "push.pem",
            ],
        );
        assert!(ok, "{text}");
        (
            std::fs::read_to_string(dir.join("push.pem")).unwrap(),
            std::fs::read_to_string(dir.join("push.key")).unwrap(),
        )
    }

    #[test]
    fn pem_and_pkcs12_imports_read_the_topic() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (cert, key) = push_cert(d, "com.apple.mgmt.External.1111-2222");
        let id = identity_from_pem(&cert, &SecretPem::new(key.clone())).unwrap();
        assert_eq!(id.info.topic, "com.apple.mgmt.External.1111-2222");
        assert!(id.info.subject.contains("APSP:test"));
        // A key of another certificate is refused.
        let other = new_request("Org", None).unwrap();
        assert!(identity_from_pem(&cert, &other.key_pem).is_err());

        // Modern (AES, PBES2) and legacy (3DES/RC2) PKCS#12, as Keychain exports them.
        for legacy in [false, true] {
            let mut args = vec![
                "pkcs12",
                "-export",
                "-in",
                "push.pem",
                "-inkey",
                "push.key",
                "-passout",
                "pass:s3cret",
                "-out",
                "p.p12",
            ];
            if legacy {
                args.push("-legacy");
            }
            let (ok, text) = openssl(d, &args);
            assert!(ok, "{text}");
            let p12 = std::fs::read(d.join("p.p12")).unwrap();
            let id = identity_from_pkcs12(&p12, "s3cret").unwrap();
            assert_eq!(
                id.info.topic, "com.apple.mgmt.External.1111-2222",
                "legacy={legacy}"
            );
            assert!(identity_from_pkcs12(&p12, "wrong").is_err());
        }
        assert!(identity_from_pkcs12(b"garbage", "x").is_err());
    }

    #[test]
    fn a_certificate_without_an_mdm_topic_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = push_cert(dir.path(), "com.example.notmdm");
        let err = identity_from_pem(&cert, &SecretPem::new(key)).err().unwrap();
        assert!(err.to_string().contains("not an MDM topic"), "{err}");
        let tls = crate::CertificateAuthority::generate("t", OffsetDateTime::now_utc()).unwrap();
        assert_eq!(topic_of(tls.certificate_der()), None);
    }

    #[test]
    fn the_request_and_vendor_signature_verify_with_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let req = new_request("County Hospital", Some("it@hospital.example")).unwrap();
        std::fs::write(d.join("req.pem"), &req.csr_pem).unwrap();
        let (ok, text) = openssl(d, &["req", "-in", "req.pem", "-noout", "-verify", "-subject"]);
        assert!(ok, "{text}");
        assert!(text.contains("County Hospital"), "{text}");
        // The vendor signs the DER CSR; openssl verifies it with the vendor's public key.
        let vendor = new_request("Vendor", None).unwrap();
        let sig = vendor_signature(&req.csr_der, &vendor.key_pem).unwrap();
        std::fs::write(d.join("csr.der"), &req.csr_der).unwrap();
        std::fs::write(d.join("sig"), &sig).unwrap();
        std::fs::write(d.join("vendor.key"), vendor.key_pem.expose()).unwrap();
        let (ok, text) = openssl(d, &["pkey", "-in", "vendor.key", "-pubout", "-out", "vendor.pub"]);
        assert!(ok, "{text}");
        let (ok, text) = openssl(
            d,
            &[
                "dgst",
                "-sha256",
                "-verify",
                "vendor.pub",
                "-signature",
                "sig",
                "csr.der",
            ],
        );
        assert!(ok && text.contains("Verified OK"), "{text}");
    }
}
