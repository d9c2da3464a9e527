//! The device side of SCEP, as Apple devices do it: an RSA-2048 key, a CSR with the challenge,
//! a PKCSReq encrypted to the RA and signed by a throwaway self-signed certificate, then the
//! CertRep opened with the device key. Used by the fleet simulator (`citadel simulate`).

use cms::content_info::ContentInfo;
use cms::enveloped_data::{EnvelopedData, RecipientInfo};
use cms::signed_data::SignedData;
use der::asn1::OctetString;
use der::{Decode, Encode};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_RSA_SHA256, RsaKeySize};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{ContentCipher, FailInfo, attr_octets, attr_string, build};
use crate::crypto::{self, CaKeys, Digest};
use crate::{CertError, SecretPem, oids};

/// A device's RSA-2048 key, parsed once: it signs the SCEP request, opens the CertRep, and
/// then signs every check-in. Parsing an RSA key costs about as much as a signature, so a
/// simulated fleet shares these rather than re-reading PEM.
pub struct DeviceKey {
    key: KeyPair,
    keys: CaKeys,
}

impl DeviceKey {
    /// A new key, as Apple's SCEP payload asks devices to make.
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
            .map_err(|e| CertError::KeyGeneration(e.to_string()))?;
        Self::from_key_pair(key)
    }

    /// An existing key (PEM, PKCS#8).
    pub fn from_pem(pem: &SecretPem) -> Result<Self, CertError> {
        Self::from_key_pair(KeyPair::from_pem(pem.expose()).map_err(|e| CertError::Key(e.to_string()))?)
    }

    fn from_key_pair(key: KeyPair) -> Result<Self, CertError> {
        let keys = CaKeys::from_pkcs8(&Zeroizing::new(key.serialize_der()))?;
        if !keys.is_rsa() {
            return Err(CertError::Key("a device key must be RSA".into()));
        }
        Ok(Self { key, keys })
    }

    pub fn to_pem(&self) -> SecretPem {
        SecretPem::new(self.key.serialize_pem())
    }

    /// A self-signed certificate (DER) for this key: an identity outside any CA, for tests
    /// and benchmarks of signature checks.
    pub fn self_signed_certificate(&self, common_name: &str) -> Result<Vec<u8>, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        Ok(params
            .self_signed(&self.key)
            .map_err(|e| CertError::Issue(e.to_string()))?
            .der()
            .to_vec())
    }
}

/// A device's key with the certificate SCEP issued for it: what signs its `Mdm-Signature`.
pub struct DeviceIdentity {
    key: Arc<DeviceKey>,
    certificate: x509_cert::Certificate,
    signature_algorithm: spki::AlgorithmIdentifierOwned,
}

impl DeviceIdentity {
    /// `certificate_der` must be for `key`.
    pub fn new(key: Arc<DeviceKey>, certificate_der: &[u8]) -> Result<Self, CertError> {
        let certificate =
            x509_cert::Certificate::from_der(certificate_der).map_err(|e| CertError::Parse(e.to_string()))?;
        let spki = certificate.tbs_certificate().subject_public_key_info();
        if spki.subject_public_key.as_bytes() != Some(key.keys.public_key_bits().as_slice()) {
            return Err(CertError::KeyMismatch);
        }
        let signature_algorithm = key.keys.certificate_signature_algorithm()?;
        Ok(Self {
            key,
            certificate,
            signature_algorithm,
        })
    }

    /// The key and certificate as one PEM document, as TLS clients load an identity (mTLS).
    pub fn tls_identity_pem(&self) -> Result<SecretPem, CertError> {
        let der = self.certificate.to_der().map_err(enc_err)?;
        let cert = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der).map_err(enc_err)?;
        Ok(SecretPem::new(format!("{}{cert}", self.key.to_pem().expose())))
    }

    /// A detached CMS signature of `content` (SHA-256, signed attributes, the certificate
    /// included), as a device puts in the `Mdm-Signature` header after base64.
    pub fn sign_detached(&self, content: &[u8]) -> Result<Vec<u8>, CertError> {
        build::signed_data_as(
            &self.certificate,
            &[&self.certificate],
            Digest::Sha256,
            self.signature_algorithm.clone(),
            Vec::new(),
            content,
            false,
            |signed_attrs| self.key.keys.sign(Digest::Sha256, signed_attrs),
        )
    }
}

/// A device's key, its CSR (with the challenge) and the self-signed certificate that signs the
/// PKCSReq.
pub struct DeviceRequest {
    key: Arc<DeviceKey>,
    csr_der: Vec<u8>,
    self_signed: x509_cert::Certificate,
}

/// What a CertRep said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertRepOutcome {
    /// The issued certificate (DER) and the rest of the chain the server sent.
    Issued {
        certificate: Vec<u8>,
        chain: Vec<Vec<u8>>,
    },
    Failed(Option<FailInfo>),
    Pending,
}

fn enc_err(e: impl std::fmt::Display) -> CertError {
    CertError::Encode(e.to_string())
}

/// The certificates of a GetCACert answer (degenerate PKCS#7, or a single DER certificate), in
/// order: with an RA, the RA comes first.
pub fn ca_certificates(body: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    if let Ok(cert) = x509_cert::Certificate::from_der(body) {
        return Ok(vec![cert.to_der().map_err(enc_err)?]);
    }
    let ci = ContentInfo::from_der(body).map_err(|e| CertError::Parse(format!("GetCACert: {e}")))?;
    let sd: SignedData = ci
        .content
        .decode_as()
        .map_err(|e: der::Error| CertError::Parse(format!("GetCACert: {e}")))?;
    let mut out = Vec::new();
    for c in sd.certificates.iter().flat_map(|s| s.0.iter()) {
        if let cms::cert::CertificateChoices::Certificate(c) = c {
            out.push(c.to_der().map_err(enc_err)?);
        }
    }
    Ok(out)
}

impl DeviceRequest {
    /// A new RSA-2048 key and CSR for `common_name`, with `challenge` as challengePassword.
    pub fn new(common_name: &str, challenge: &str) -> Result<Self, CertError> {
        Self::with_key(common_name, challenge, Arc::new(DeviceKey::generate()?))
    }

    /// The same with an existing key: load tests reuse a pool of keys, because generating
    /// RSA keys would cost the simulator more than enrolment costs the server.
    pub fn with_key(
        common_name: &str,
        challenge: &str,
        device_key: Arc<DeviceKey>,
    ) -> Result<Self, CertError> {
        let key = &device_key.key;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        let challenge_value = der::asn1::PrintableStringRef::new(challenge)
            .map_err(enc_err)?
            .to_der()
            .map_err(enc_err)?;
        let attrs = vec![rcgen::Attribute {
            oid: &[1, 2, 840, 113549, 1, 9, 7],
            values: build::tlv(0x31, &challenge_value),
        }];
        let csr_der = params
            .serialize_request_with_attributes(key, attrs)
            .map_err(|e| CertError::Issue(e.to_string()))?
            .der()
            .to_vec();
        let mut self_params = CertificateParams::default();
        let mut self_dn = DistinguishedName::new();
        self_dn.push(DnType::CommonName, format!("SCEP requester {common_name}"));
        self_params.distinguished_name = self_dn;
        let self_der = self_params
            .self_signed(key)
            .map_err(|e| CertError::Issue(e.to_string()))?;
        let self_signed = x509_cert::Certificate::from_der(self_der.der()).map_err(enc_err)?;
        Ok(Self {
            key: device_key,
            csr_der,
            self_signed,
        })
    }

    /// The device's key, for it to use the issued certificate.
    pub fn key(&self) -> Arc<DeviceKey> {
        Arc::clone(&self.key)
    }

    /// The device's private key as PEM.
    pub fn key_pem(&self) -> SecretPem {
        self.key.to_pem()
    }

    /// A PKCSReq for the RA certificate `ra_der` (what GetCACert returned first), AES-256 and
    /// SHA-256.
    pub fn pkcs_req(&self, ra_der: &[u8], transaction_id: &str) -> Result<Vec<u8>, CertError> {
        let ra = x509_cert::Certificate::from_der(ra_der).map_err(|e| CertError::Parse(e.to_string()))?;
        let envelope = build::envelope(&ra, ContentCipher::Aes256Cbc, &self.csr_der)?;
        let nonce: [u8; 16] = rand::random();
        let attrs = vec![
            build::printable(oids::SCEP_MESSAGE_TYPE, "19")?,
            build::printable(oids::SCEP_TRANSACTION_ID, transaction_id)?,
            build::octets(oids::SCEP_SENDER_NONCE, &nonce)?,
        ];
        build::signed_data(
            &self.self_signed,
            &[&self.self_signed],
            Digest::Sha256,
            attrs,
            &envelope,
            |tbs| self.key.keys.sign(Digest::Sha256, tbs),
        )
    }

    /// Checks a CertRep's signature by the RA (`ra_der`) and opens it with the device key.
    pub fn open_cert_rep(&self, rep: &[u8], ra_der: &[u8]) -> Result<CertRepOutcome, CertError> {
        let bad = |why: &str| CertError::Parse(format!("CertRep: {why}"));
        let ci = ContentInfo::from_der(rep).map_err(|e: der::Error| bad(&e.to_string()))?;
        let sd: SignedData = ci
            .content
            .decode_as()
            .map_err(|e: der::Error| bad(&e.to_string()))?;
        let si = sd.signer_infos.0.iter().next().ok_or_else(|| bad("no signer"))?;
        let attrs = si
            .signed_attrs
            .as_ref()
            .ok_or_else(|| bad("no signed attributes"))?;
        let digest = Digest::from_oid(&si.digest_alg.oid).ok_or_else(|| bad("unknown digest"))?;
        let ra = x509_cert::Certificate::from_der(ra_der).map_err(|e: der::Error| bad(&e.to_string()))?;
        let ra_spki = crypto::to_der(ra.tbs_certificate().subject_public_key_info())?;
        crypto::verify(
            &ra_spki,
            &si.signature_algorithm.oid,
            Some(digest),
            &attrs.to_der().map_err(enc_err)?,
            si.signature.as_bytes(),
        )
        .map_err(&bad)?;
        let attrs = attrs.as_slice();
        match attr_string(attrs, oids::SCEP_PKI_STATUS).as_deref() {
            Some("0") => {}
            Some("3") => return Ok(CertRepOutcome::Pending),
            Some("2") => {
                let fail = attr_string(attrs, oids::SCEP_FAIL_INFO).and_then(|c| FailInfo::from_code(&c));
                return Ok(CertRepOutcome::Failed(fail));
            }
            _ => return Err(bad("no pkiStatus")),
        }
        let content: OctetString = sd
            .encap_content_info
            .econtent
            .as_ref()
            .ok_or_else(|| bad("no content"))?
            .decode_as()
            .map_err(|e: der::Error| bad(&e.to_string()))?;
        if attr_octets(attrs, oids::MESSAGE_DIGEST).as_deref()
            != Some(digest.hash(content.as_bytes()).as_slice())
        {
            return Err(bad("messageDigest does not match"));
        }
        let envelope =
            ContentInfo::from_der(content.as_bytes()).map_err(|e: der::Error| bad(&e.to_string()))?;
        let ed: EnvelopedData = envelope
            .content
            .decode_as()
            .map_err(|e: der::Error| bad(&e.to_string()))?;
        let Some(RecipientInfo::Ktri(ktri)) = ed.recip_infos.0.iter().next() else {
            return Err(bad("not encrypted to a key"));
        };
        let alg = &ed.encrypted_content.content_enc_alg;
        let cipher = ContentCipher::from_oid(&alg.oid).ok_or_else(|| bad("unknown cipher"))?;
        let iv: OctetString = alg
            .parameters
            .as_ref()
            .ok_or_else(|| bad("no IV"))?
            .decode_as()
            .map_err(|e: der::Error| bad(&e.to_string()))?;
        let cek = self
            .key
            .keys
            .unwrap_content_key(ktri.enc_key.as_bytes(), cipher.key_len())
            .ok_or_else(|| bad("device key cannot decrypt"))?;
        let ciphertext = ed
            .encrypted_content
            .encrypted_content
            .as_ref()
            .ok_or_else(|| bad("no encrypted content"))?;
        let p7 = cipher
            .decrypt(&cek, iv.as_bytes(), ciphertext.as_bytes())
            .ok_or_else(|| bad("the envelope does not decrypt with the device key"))?;
        let bundle = ContentInfo::from_der(&p7).map_err(|e: der::Error| bad(&e.to_string()))?;
        let certs: SignedData = bundle
            .content
            .decode_as()
            .map_err(|e: der::Error| bad(&e.to_string()))?;
        let mut ders = Vec::new();
        for c in certs.certificates.iter().flat_map(|s| s.0.iter()) {
            if let cms::cert::CertificateChoices::Certificate(c) = c {
                ders.push(c.to_der().map_err(enc_err)?);
            }
        }
        let mut ders = ders.into_iter();
        let certificate = ders.next().ok_or_else(|| bad("no certificate in the reply"))?;
        Ok(CertRepOutcome::Issued {
            certificate,
            chain: ders.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scep::{DecodeOptions, cert_rep_failure, cert_rep_success, decode_request};
    use crate::{CertificateAuthority, inspect_der};
    use time::OffsetDateTime;

    #[test]
    fn a_device_enrols_against_the_server_codec() {
        let now = OffsetDateTime::now_utc();
        let root = CertificateAuthority::generate("client-test", now).unwrap();
        let issuing = root.generate_issuing("client-test", now).unwrap();
        let ra = root.issue_registration_authority("client-test", now).unwrap();
        let device = DeviceRequest::new("sim-device-1", "CHALLENGE-1").unwrap();
        let msg = device.pkcs_req(ra.certificate_der(), "tx-sim-1").unwrap();

        let opts = DecodeOptions {
            allow_des: false,
            now,
        };
        let req = decode_request(&msg, &ra, &issuing, &opts).unwrap();
        assert_eq!(req.csr.challenge_password.as_deref(), Some("CHALLENGE-1"));
        assert_eq!(req.cipher, ContentCipher::Aes256Cbc);
        let issued = issuing
            .issue_device_certificate(&req.csr, time::Duration::days(1), now)
            .unwrap();
        let rep = cert_rep_success(&ra, &req.reply_to(), &[&issued.der, issuing.certificate_der()]).unwrap();
        match device.open_cert_rep(&rep, ra.certificate_der()).unwrap() {
            CertRepOutcome::Issued { certificate, chain } => {
                assert_eq!(certificate, issued.der);
                assert_eq!(chain, vec![issuing.certificate_der().to_vec()]);
                assert!(
                    inspect_der(&certificate)
                        .unwrap()
                        .subject
                        .contains("sim-device-1")
                );
            }
            other => panic!("{other:?}"),
        }
        // A reply signed by someone else is refused; a failure is reported as such.
        let other_ra = root.issue_registration_authority("other", now).unwrap();
        assert!(device.open_cert_rep(&rep, other_ra.certificate_der()).is_err());
        let failure = cert_rep_failure(&ra, &req.reply_to(), FailInfo::BadRequest).unwrap();
        assert_eq!(
            device.open_cert_rep(&failure, ra.certificate_der()).unwrap(),
            CertRepOutcome::Failed(Some(FailInfo::BadRequest))
        );
        // Another device cannot open this one's certificate.
        let stranger = DeviceRequest::new("sim-device-2", "x").unwrap();
        assert!(stranger.open_cert_rep(&rep, ra.certificate_der()).is_err());
        assert!(device.key_pem().expose().contains("PRIVATE KEY"));
    }

    #[test]
    fn device_identities_sign_what_the_server_verifies() {
        let key = Arc::new(DeviceKey::generate().unwrap());
        let cert = key.self_signed_certificate("device").unwrap();
        let identity = DeviceIdentity::new(Arc::clone(&key), &cert).unwrap();
        let sig = identity.sign_detached(b"<plist/>").unwrap();
        let by = crate::cms::verify_detached(&sig, b"<plist/>").unwrap();
        assert_eq!(by.certificate_der, cert);
        assert!(crate::cms::verify_detached(&sig, b"<plist></plist>").is_err());
        // A certificate for another key is refused; the PEM round trip keeps the key.
        let other = DeviceKey::from_pem(&DeviceKey::generate().unwrap().to_pem()).unwrap();
        assert!(matches!(
            DeviceIdentity::new(Arc::new(other), &cert),
            Err(CertError::KeyMismatch)
        ));
        let again = DeviceKey::from_pem(&key.to_pem()).unwrap();
        assert!(DeviceIdentity::new(Arc::new(again), &cert).is_ok());
    }
}
