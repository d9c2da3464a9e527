//! Device identity certificates (issued over SCEP), their verification, and the CRL.

use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, UtcTime};
use der::{Decode, Sequence};
use rcgen::{CertificateRevocationListParams, Issuer, KeyIdMethod, RevokedCertParams, SerialNumber};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use time::{Duration, OffsetDateTime};
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, Extensions};
use x509_cert::name::Name;
use x509_cert::time::{Time, Validity};
use x509_parser::extensions::{GeneralName as ParsedGeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authority::{BACKDATE, random_serial_bytes};
use crate::crypto::{self, Digest, KeyKind, to_der};
use crate::inspect::{CertificateInfo, inspect_der};
use crate::scep::CertificationRequest;
use crate::{CertError, CertificateAuthority, oids};

/// Limits on what a device may ask to have in its certificate.
const MAX_SUBJECT_LEN: usize = 1024;
const MAX_SANS: usize = 20;
const MAX_SAN_LEN: usize = 256;

/// An identity certificate issued to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    pub der: Vec<u8>,
    pub pem: String,
    pub info: CertificateInfo,
}

/// RFC 5280 TBSCertificate, with exactly the fields this CA writes.
#[derive(Sequence)]
struct TbsCertificate {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: Version,
    serial_number: x509_cert::serial_number::SerialNumber,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: Validity,
    subject: Name,
    subject_public_key_info: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    extensions: Option<Extensions>,
}

#[derive(Sequence)]
struct Certificate {
    tbs_certificate: TbsCertificate,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

fn request_err(reason: impl Into<String>) -> CertError {
    CertError::Request(reason.into())
}

fn enc_err(e: der::Error) -> CertError {
    CertError::Encode(e.to_string())
}

fn x509_time(t: OffsetDateTime) -> Result<Time, CertError> {
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| request_err("time before 1970"))?;
    let d = std::time::Duration::from_secs(secs);
    if t.year() < 2050 {
        UtcTime::from_unix_duration(d).map(Time::UtcTime).map_err(enc_err)
    } else {
        GeneralizedTime::from_unix_duration(d)
            .map(Time::GeneralTime)
            .map_err(enc_err)
    }
}

fn extension<T: der::Encode>(
    oid: const_oid::ObjectIdentifier,
    critical: bool,
    value: &T,
) -> Result<Extension, CertError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(to_der(value)?).map_err(enc_err)?,
    })
}

fn printable_text(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// The subject and SANs a device may have, checked.
struct Requested {
    subject: Name,
    subject_empty: bool,
    sans: Vec<GeneralName>,
    spki: SubjectPublicKeyInfoOwned,
    key: KeyKind,
}

fn sanitise(csr: &CertificationRequest) -> Result<Requested, CertError> {
    use x509_parser::certification_request::X509CertificationRequest;
    let (_, parsed) = X509CertificationRequest::from_der(&csr.der)
        .map_err(|e| request_err(format!("not a PKCS#10 request: {e}")))?;
    let info = &parsed.certification_request_info;

    let subject_raw = info.subject.as_raw();
    if subject_raw.len() > MAX_SUBJECT_LEN {
        return Err(request_err(format!(
            "the subject is longer than {MAX_SUBJECT_LEN} bytes"
        )));
    }
    for attr in info.subject.iter_attributes() {
        let value = attr
            .as_str()
            .map_err(|_| request_err("a subject attribute is not a printable, UTF-8 or IA5 string"))?;
        if !printable_text(value) {
            return Err(request_err("a subject attribute contains control characters"));
        }
    }
    let subject = Name::from_der(subject_raw).map_err(|e| request_err(format!("unreadable subject: {e}")))?;

    let mut sans = Vec::new();
    if let Some(extensions) = parsed.requested_extensions() {
        for ext in extensions {
            let ParsedExtension::SubjectAlternativeName(san) = ext else {
                continue;
            };
            for name in &san.general_names {
                let (text, make): (&str, fn(Ia5String) -> GeneralName) = match name {
                    ParsedGeneralName::DNSName(s) => (s, GeneralName::DnsName),
                    ParsedGeneralName::RFC822Name(s) => (s, GeneralName::Rfc822Name),
                    ParsedGeneralName::URI(s) => (s, GeneralName::UniformResourceIdentifier),
                    _ => continue,
                };
                if text.is_empty() || text.len() > MAX_SAN_LEN || !printable_text(text) {
                    return Err(request_err(format!(
                        "a subject alternative name is empty, longer than {MAX_SAN_LEN} bytes or not printable"
                    )));
                }
                let ia5 = Ia5String::new(text)
                    .map_err(|_| request_err("a subject alternative name is not ASCII"))?;
                sans.push(make(ia5));
                if sans.len() > MAX_SANS {
                    return Err(request_err(format!(
                        "more than {MAX_SANS} subject alternative names"
                    )));
                }
            }
        }
    }
    let subject_empty = info.subject.iter_attributes().next().is_none();
    if subject_empty && sans.is_empty() {
        return Err(request_err(
            "the request names neither a subject nor an alternative name",
        ));
    }

    let spki_der = info.subject_pki.raw;
    let key = crypto::key_kind(spki_der);
    match key {
        KeyKind::Rsa { bits } if (2048..=8192).contains(&bits) => {}
        KeyKind::EcP256 | KeyKind::EcP384 => {}
        KeyKind::Rsa { bits } => {
            return Err(request_err(format!("an RSA key of {bits} bits is not accepted")));
        }
        KeyKind::Other => {
            return Err(request_err(
                "the key must be RSA (2048 bits or more) or EC P-256/P-384",
            ));
        }
    }
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(|e| request_err(e.to_string()))?;
    Ok(Requested {
        subject,
        subject_empty,
        sans,
        spki,
        key,
    })
}

impl CertificateAuthority {
    /// Issues a device identity certificate for `csr`: its subject and SANs (DNS, e-mail, URI;
    /// others dropped), sanitised; a random 128-bit serial; EKU clientAuth; KU digitalSignature
    /// (+ keyEncipherment for RSA keys); valid from `now` − 1 h to `now + validity`, capped at
    /// the CA's expiry. The key must be RSA ≥ 2048 bits or EC P-256/P-384.
    pub fn issue_device_certificate(
        &self,
        csr: &CertificationRequest,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<DeviceCertificate, CertError> {
        let req = sanitise(csr)?;
        let ca = self.parsed();
        let not_before = now - BACKDATE;
        let not_after = std::cmp::min(now + validity, ca.not_after);
        if not_after <= now {
            return Err(CertError::Issue("the CA certificate has expired".into()));
        }

        let serial = x509_cert::serial_number::SerialNumber::new(&random_serial_bytes()).map_err(enc_err)?;
        let sig_alg = self.keys().certificate_signature_algorithm()?;
        let usages = match req.key {
            KeyKind::Rsa { .. } => KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment,
            _ => KeyUsages::DigitalSignature.into(),
        };
        let key_id = Digest::Sha1.hash(req.spki.subject_public_key.raw_bytes());
        let mut extensions = vec![
            extension(
                oids::EXT_BASIC_CONSTRAINTS,
                true,
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
            )?,
            extension(oids::EXT_KEY_USAGE, true, &KeyUsage(usages))?,
            extension(
                oids::EXT_EXTENDED_KEY_USAGE,
                false,
                &ExtendedKeyUsage(vec![oids::KP_CLIENT_AUTH]),
            )?,
            extension(
                oids::EXT_SUBJECT_KEY_ID,
                false,
                &SubjectKeyIdentifier(OctetString::new(key_id).map_err(enc_err)?),
            )?,
            extension(
                oids::EXT_AUTHORITY_KEY_ID,
                false,
                &AuthorityKeyIdentifier {
                    key_identifier: Some(OctetString::new(ca.key_id.clone()).map_err(enc_err)?),
                    authority_cert_issuer: None,
                    authority_cert_serial_number: None,
                },
            )?,
        ];
        if !req.sans.is_empty() {
            // Critical when the subject is empty (RFC 5280 section 4.2.1.6).
            extensions.push(extension(
                oids::EXT_SUBJECT_ALT_NAME,
                req.subject_empty,
                &SubjectAltName(req.sans),
            )?);
        }
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: serial,
            signature: sig_alg.clone(),
            issuer: ca.cert.tbs_certificate().subject().clone(),
            validity: Validity::new(x509_time(not_before)?, x509_time(not_after)?),
            subject: req.subject,
            subject_public_key_info: req.spki,
            extensions: Some(extensions),
        };
        let tbs_der = to_der(&tbs)?;
        let signature = self.keys().sign(Digest::Sha256, &tbs_der)?;
        let cert = Certificate {
            tbs_certificate: tbs,
            signature_algorithm: sig_alg,
            signature: BitString::from_bytes(&signature).map_err(enc_err)?,
        };
        let der = to_der(&cert)?;
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der)
            .map_err(|e| CertError::Encode(e.to_string()))?;
        let info = inspect_der(&der)?;
        Ok(DeviceCertificate { der, pem, info })
    }

    /// True when `der` is an end-entity certificate whose signature verifies with this CA's key
    /// and whose issuer is this CA (validity not checked).
    pub(crate) fn issued_by_this_ca(&self, der: &[u8]) -> bool {
        self.parse_issued(der).is_some()
    }

    fn parse_issued<'a>(&self, der: &'a [u8]) -> Option<X509Certificate<'a>> {
        let (rest, cert) = X509Certificate::from_der(der).ok()?;
        if !rest.is_empty() || cert.is_ca() {
            return None;
        }
        let ca = self.parsed();
        let ca_subject = to_der(ca.cert.tbs_certificate().subject()).ok()?;
        if cert.issuer().as_raw() != ca_subject.as_slice() {
            return None;
        }
        let alg =
            const_oid::ObjectIdentifier::from_bytes(cert.signature_algorithm.algorithm.as_bytes()).ok()?;
        crypto::verify(
            &ca.spki_der,
            &alg,
            None,
            cert.tbs_certificate.as_ref(),
            &cert.signature_value.data,
        )
        .ok()?;
        Some(cert)
    }

    /// True when `der` is an end-entity certificate issued by this CA (its signature verifies
    /// with the CA key) and valid at `now`. Revocation is the caller's to check.
    pub fn issued_and_valid(&self, der: &[u8], now: OffsetDateTime) -> bool {
        let Some(cert) = self.parse_issued(der) else {
            return false;
        };
        let validity = cert.validity();
        validity.not_before.to_datetime() <= now && now <= validity.not_after.to_datetime()
    }

    /// A DER X.509 v2 CRL signed by the CA, listing `revoked` (serial as hex as in
    /// [`CertificateInfo::serial_hex`]; colons and case are ignored) with their revocation
    /// times, with a crlNumber and this/next update.
    pub fn crl(
        &self,
        revoked: &[(String, OffsetDateTime)],
        crl_number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<Vec<u8>, CertError> {
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for (serial_hex, time) in revoked {
            let cleaned: String = serial_hex.chars().filter(|c| *c != ':').collect();
            let bytes = hex::decode(&cleaned)
                .ok()
                .filter(|b| !b.is_empty() && b.len() <= 21)
                .ok_or_else(|| CertError::Issue(format!("invalid serial number {serial_hex:?}")))?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: *time,
                reason_code: None,
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.parsed().key_id.clone()),
        };
        let issuer = Issuer::from_ca_cert_der(self.certificate_der(), self.rcgen_key())
            .map_err(|e| CertError::Issue(e.to_string()))?;
        let crl = params
            .signed_by(&issuer)
            .map_err(|e| CertError::Issue(e.to_string()))?;
        Ok(crl.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::openssl;
    use std::sync::OnceLock;

    use rcgen::{
        CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256,
        PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, RsaKeySize, SanType,
    };

    use super::*;

    fn now() -> OffsetDateTime {
        // Real time, so that OpenSSL accepts the certificates without -attime.
        OffsetDateTime::now_utc()
    }

    const VALIDITY: Duration = Duration::days(730);

    fn ca() -> &'static CertificateAuthority {
        static CA: OnceLock<CertificateAuthority> = OnceLock::new();
        CA.get_or_init(|| CertificateAuthority::generate("device-test", now() - Duration::days(1)).unwrap())
    }

    fn rsa_key() -> &'static KeyPair {
        static K: OnceLock<KeyPair> = OnceLock::new();
        K.get_or_init(|| KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap())
    }

    fn csr(key: &KeyPair, dn: &[(DnType, &str)], sans: Vec<SanType>) -> CertificationRequest {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        for (t, v) in dn {
            name.push(t.clone(), *v);
        }
        params.distinguished_name = name;
        params.subject_alt_names = sans;
        let der = params.serialize_request(key).unwrap().der().to_vec();
        CertificationRequest::from_der(&der).unwrap()
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    #[test]
    fn device_certificate_profile() {
        let now = now();
        let req = csr(
            rsa_key(),
            &[
                (DnType::CommonName, "device-1"),
                (DnType::OrganizationName, "Citadel Tests"),
            ],
            vec![
                dns("device.example.org"),
                SanType::Rfc822Name("it@example.org".try_into().unwrap()),
                SanType::URI("urn:uuid:1234".try_into().unwrap()),
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
            ],
        );
        let cert = ca().issue_device_certificate(&req, VALIDITY, now).unwrap();
        let info = &cert.info;
        assert_eq!(info.serial_hex.len(), 32);
        assert!(
            info.serial_hex
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(info.not_after.unix_timestamp(), (now + VALIDITY).unix_timestamp());
        assert_eq!(
            info.not_before.unix_timestamp(),
            (now - Duration::hours(1)).unix_timestamp()
        );
        assert!(!info.is_ca);
        assert_eq!(info.issuer, ca().info().unwrap().subject);
        assert_eq!(info.subject_alt_names, ["device.example.org"]);
        assert!(cert.pem.starts_with("-----BEGIN CERTIFICATE-----\n"));

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("ca.pem"), ca().certificate_pem()).unwrap();
        std::fs::write(d.join("leaf.pem"), &cert.pem).unwrap();
        let (ok, text) = openssl(
            d,
            &["verify", "-CAfile", "ca.pem", "-purpose", "sslclient", "leaf.pem"],
        );
        assert!(ok, "{text}");
        let (ok, text) = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
        assert!(ok, "{text}");
        for expected in [
            "Subject: CN = device-1, O = Citadel Tests",
            "TLS Web Client Authentication",
            "Digital Signature, Key Encipherment",
            "CA:FALSE",
            "DNS:device.example.org",
            "email:it@example.org",
            "URI:urn:uuid:1234",
            "X509v3 Subject Key Identifier",
            "X509v3 Authority Key Identifier",
            "sha256WithRSAEncryption",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
        assert!(!text.contains("10.0.0.1"), "IP SANs are dropped");
        assert!(ca().issued_and_valid(&cert.der, now));
    }

    #[test]
    fn ec_keys_get_digital_signature_only() {
        for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384] {
            let key = KeyPair::generate_for(alg).unwrap();
            let req = csr(&key, &[(DnType::CommonName, "ec-device")], vec![]);
            let cert = ca().issue_device_certificate(&req, VALIDITY, now()).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("leaf.pem"), &cert.pem).unwrap();
            let (ok, text) = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
            assert!(ok, "{text}");
            assert!(
                text.contains("Digital Signature\n") || text.contains("Digital Signature\r\n"),
                "{text}"
            );
            assert!(!text.contains("Key Encipherment"), "{text}");
        }
    }

    #[test]
    fn validity_is_capped_at_the_ca_expiry() {
        let req = csr(rsa_key(), &[(DnType::CommonName, "long")], vec![]);
        let cert = ca()
            .issue_device_certificate(&req, Duration::days(365 * 50), now())
            .unwrap();
        assert_eq!(cert.info.not_after, ca().info().unwrap().not_after);
        // After the CA expired, nothing is issued.
        let late = ca().info().unwrap().not_after + Duration::days(1);
        assert!(ca().issue_device_certificate(&req, VALIDITY, late).is_err());
    }

    #[test]
    fn absurd_requests_are_refused() {
        let key = rsa_key();
        let long = "x".repeat(1100);
        let refused = [
            csr(key, &[(DnType::CommonName, long.as_str())], vec![]),
            csr(key, &[(DnType::CommonName, "bell\u{7}")], vec![]),
            csr(
                key,
                &[(DnType::CommonName, "many")],
                (0..21).map(|i| dns(&format!("d{i}.example.org"))).collect(),
            ),
            csr(
                key,
                &[(DnType::CommonName, "long-san")],
                vec![dns(&format!("{}.example.org", "a".repeat(250)))],
            ),
            csr(key, &[], vec![]),
        ];
        for req in &refused {
            assert!(
                matches!(
                    ca().issue_device_certificate(req, VALIDITY, now()),
                    Err(CertError::Request(_))
                ),
                "{req:?}"
            );
        }
        // Twenty names are fine, and so is a subject-less request with a name (SAN critical).
        let twenty = csr(
            key,
            &[(DnType::CommonName, "twenty")],
            (0..20).map(|i| dns(&format!("d{i}.example.org"))).collect(),
        );
        assert_eq!(
            ca().issue_device_certificate(&twenty, VALIDITY, now())
                .unwrap()
                .info
                .subject_alt_names
                .len(),
            20
        );
        let nameless = csr(key, &[], vec![dns("only.example.org")]);
        ca().issue_device_certificate(&nameless, VALIDITY, now()).unwrap();
    }

    #[test]
    fn openssl_requests_and_weak_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (bits, accepted) in [("1024", false), ("2048", true)] {
            let newkey = format!("rsa:{bits}");
            let request = [
                "req",
                "-new",
                "-newkey",
                &newkey,
                "-nodes",
                "-keyout",
                "k.pem",
                "-subj",
                "/CN=openssl-device/O=Example",
                "-addext",
                "subjectAltName=DNS:o.example.org",
                "-outform",
                "DER",
                "-out",
                "req.der",
            ];
            let (ok, text) = openssl(
                d,
                &[&request[..], &["-passout", "pass:", "-config", "/dev/null"]].concat(),
            );
            if !ok {
                // Older OpenSSL without a usable -config /dev/null: try the default configuration.
                let (ok2, text2) = openssl(d, &request);
                assert!(ok2, "{text}\n{text2}");
            }
            let der = std::fs::read(d.join("req.der")).unwrap();
            let req = CertificationRequest::from_der(&der).unwrap();
            assert!(req.subject.contains("CN=openssl-device"), "{}", req.subject);
            let issued = ca().issue_device_certificate(&req, VALIDITY, now());
            assert_eq!(issued.is_ok(), accepted, "{bits}: {issued:?}");
        }
        // A tampered request does not verify.
        let mut der = std::fs::read(d.join("req.der")).unwrap();
        let n = der.len();
        der[n - 5] ^= 1;
        assert!(CertificationRequest::from_der(&der).is_err());
        assert!(CertificationRequest::from_der(b"").is_err());
    }

    #[test]
    fn issued_and_valid_checks_issuer_signature_and_time() {
        let now = now();
        let req = csr(rsa_key(), &[(DnType::CommonName, "v")], vec![]);
        let cert = ca().issue_device_certificate(&req, VALIDITY, now).unwrap();
        assert!(ca().issued_and_valid(&cert.der, now));
        assert!(!ca().issued_and_valid(&cert.der, now + VALIDITY + Duration::days(1)));
        assert!(!ca().issued_and_valid(&cert.der, now - Duration::days(1)));
        assert!(!ca().issued_and_valid(b"garbage", now));
        assert!(!ca().issued_and_valid(&[], now));
        assert!(!ca().issued_and_valid(&[&cert.der[..], &[0]].concat(), now));
        // The CA's own certificate is not an issued end-entity certificate.
        assert!(!ca().issued_and_valid(ca().certificate_der(), now));
        // A certificate with the same issuer name but another key's signature.
        let other = CertificateAuthority::generate("device-test", now - Duration::days(1)).unwrap();
        let foreign = other.issue_device_certificate(&req, VALIDITY, now).unwrap();
        assert!(!ca().issued_and_valid(&foreign.der, now));
        // A tampered signature.
        let mut bad = cert.der.clone();
        let n = bad.len();
        bad[n - 3] ^= 1;
        assert!(!ca().issued_and_valid(&bad, now));
    }

    #[test]
    fn crl_lists_revoked_serials() {
        let now = now();
        let req = csr(rsa_key(), &[(DnType::CommonName, "revoked")], vec![]);
        let revoked = ca().issue_device_certificate(&req, VALIDITY, now).unwrap();
        let kept = ca().issue_device_certificate(&req, VALIDITY, now).unwrap();
        let crl = ca()
            .crl(
                &[(revoked.info.serial_hex.clone(), now - Duration::minutes(5))],
                7,
                now - Duration::minutes(1),
                now + Duration::days(7),
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("crl.der"), &crl).unwrap();
        std::fs::write(d.join("ca.pem"), ca().certificate_pem()).unwrap();
        std::fs::write(d.join("revoked.pem"), &revoked.pem).unwrap();
        std::fs::write(d.join("kept.pem"), &kept.pem).unwrap();
        let (ok, text) = openssl(
            d,
            &[
                "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text", "-CAfile", "ca.pem",
            ],
        );
        assert!(ok, "{text}");
        assert!(text.contains("verify OK"), "{text}");
        assert!(text.contains("Version 2"), "{text}");
        assert!(text.contains(&revoked.info.serial_hex.to_uppercase()), "{text}");
        assert!(!text.contains(&kept.info.serial_hex.to_uppercase()), "{text}");
        assert!(text.contains("X509v3 CRL Number"), "{text}");
        let (ok, text) = openssl(d, &["crl", "-inform", "DER", "-in", "crl.der", "-out", "crl.pem"]);
        assert!(ok, "{text}");
        let (ok, text) = openssl(
            d,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca.pem",
                "-CRLfile",
                "crl.pem",
                "revoked.pem",
            ],
        );
        assert!(!ok && text.contains("revoked"), "{text}");
        let (ok, text) = openssl(
            d,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca.pem",
                "-CRLfile",
                "crl.pem",
                "kept.pem",
            ],
        );
        assert!(ok, "{text}");

        // Colon-separated and upper-case serials are accepted; junk is not.
        let colons = revoked
            .info
            .serial_hex
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert!(
            ca().crl(&[(colons, now)], 8, now, now + Duration::days(1))
                .is_ok()
        );
        assert!(
            ca().crl(&[("zz".into(), now)], 8, now, now + Duration::days(1))
                .is_err()
        );
        assert!(
            ca().crl(&[(String::new(), now)], 8, now, now + Duration::days(1))
                .is_err()
        );
        assert!(ca().crl(&[], 9, now, now + Duration::days(1)).is_ok());
    }
}
