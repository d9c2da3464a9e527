//! SCEP tests: a small client built from the same CMS builders, real-client fixtures, and
//! OpenSSL as an independent oracle.

use std::path::{Path, PathBuf};

use crate::test_support::openssl;
use std::sync::OnceLock;

use cms::content_info::ContentInfo;
use cms::enveloped_data::{EnvelopedData, RecipientInfo};
use cms::signed_data::SignedData;
use der::asn1::OctetString;
use der::{Decode, Encode};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_RSA_SHA256, RsaKeySize};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::crypto::CaKeys;
use crate::{CertificateAuthority, RegistrationAuthority, SecretPem};

const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);
const VALIDITY: Duration = Duration::days(730);
const CHALLENGE: &str = "s3cret-challenge";

fn opts(allow_des: bool) -> DecodeOptions {
    DecodeOptions { allow_des, now: NOW }
}

/// The appliance's PKI shape, created at the real current time so OpenSSL accepts what it
/// signs without `-attime`: an RSA root, the ECDSA issuing CA and the RSA RA under it.
struct Pki {
    root: CertificateAuthority,
    issuing: CertificateAuthority,
    ra: RegistrationAuthority,
}

fn pki(label: &str, at: OffsetDateTime) -> Pki {
    let root = CertificateAuthority::generate(label, at).unwrap();
    let issuing = root.generate_issuing(label, at).unwrap();
    let ra = root.issue_registration_authority(label, at).unwrap();
    Pki { root, issuing, ra }
}

fn test_pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| pki("scep-test", OffsetDateTime::now_utc() - Duration::days(30)))
}

fn other_pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| pki("other", NOW - Duration::days(30)))
}

/// The issuing CA (ECDSA).
fn ca() -> &'static CertificateAuthority {
    &test_pki().issuing
}

/// The RA that requests are encrypted to and that signs replies (RSA).
fn ra() -> &'static RegistrationAuthority {
    &test_pki().ra
}

fn root() -> &'static CertificateAuthority {
    &test_pki().root
}

fn other_ca() -> &'static CertificateAuthority {
    &other_pki().issuing
}

/// A requester: an RSA key, a self-signed certificate for it and a CSR.
struct Client {
    key: KeyPair,
    cert_der: Vec<u8>,
    csr_der: Vec<u8>,
}

fn csr_for(key: &KeyPair, cn: &str, challenge: Option<&str>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Citadel Tests");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![rcgen::SanType::DnsName("device.example.org".try_into().unwrap())];
    let attrs = challenge
        .map(|c| {
            vec![rcgen::Attribute {
                oid: &[1, 2, 840, 113549, 1, 9, 7],
                values: build::tlv(
                    0x31,
                    &der::asn1::PrintableStringRef::new(c).unwrap().to_der().unwrap(),
                ),
            }]
        })
        .unwrap_or_default();
    params
        .serialize_request_with_attributes(key, attrs)
        .unwrap()
        .der()
        .to_vec()
}

fn new_client(cn: &str) -> Client {
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "SCEP SIGNER");
    params.distinguished_name = dn;
    params.not_before = NOW - Duration::days(400);
    params.not_after = NOW + Duration::days(400);
    let cert_der = params.self_signed(&key).unwrap().der().to_vec();
    let csr_der = csr_for(&key, cn, Some(CHALLENGE));
    Client {
        key,
        cert_der,
        csr_der,
    }
}

fn client() -> &'static Client {
    static C: OnceLock<Client> = OnceLock::new();
    C.get_or_init(|| new_client("device-1"))
}

fn client2() -> &'static Client {
    static C: OnceLock<Client> = OnceLock::new();
    C.get_or_init(|| new_client("device-2"))
}

/// What a client puts in a request.
struct Req<'a> {
    message_type: &'a str,
    digest: Digest,
    cipher: ContentCipher,
    csr: &'a [u8],
    signer_cert: &'a [u8],
    signer_key: &'a KeyPair,
    recipient: &'a RegistrationAuthority,
    corrupt_signature: bool,
    transaction_id: &'a str,
}

impl<'a> Req<'a> {
    fn pkcs(c: &'a Client) -> Self {
        Req {
            message_type: "19",
            digest: Digest::Sha256,
            cipher: ContentCipher::Aes128Cbc,
            csr: &c.csr_der,
            signer_cert: &c.cert_der,
            signer_key: &c.key,
            recipient: ra(),
            corrupt_signature: false,
            transaction_id: "tx-0001",
        }
    }

    fn build(&self) -> Vec<u8> {
        let recipient = x509_cert::Certificate::from_der(self.recipient.certificate_der()).unwrap();
        let envelope = build::envelope(&recipient, self.cipher, self.csr).unwrap();
        let signer = x509_cert::Certificate::from_der(self.signer_cert).unwrap();
        let attrs = vec![
            build::printable(oids::SCEP_MESSAGE_TYPE, self.message_type).unwrap(),
            build::printable(oids::SCEP_TRANSACTION_ID, self.transaction_id).unwrap(),
            build::octets(oids::SCEP_SENDER_NONCE, b"0123456789abcdef").unwrap(),
        ];
        build::signed_data(&signer, &[&signer], self.digest, attrs, &envelope, |tbs| {
            let mut sig = match self.digest {
                Digest::Sha1 => openssl_sign_sha1(self.signer_key, tbs),
                d => CaKeys::from_pkcs8(&self.signer_key.serialize_der())
                    .unwrap()
                    .sign(d, tbs)
                    .unwrap(),
            };
            if self.corrupt_signature {
                sig[10] ^= 0x01;
            }
            Ok(sig)
        })
        .unwrap()
    }
}

// ---------------------------------------------------------------- helpers

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn openssl_sign_sha1(key: &KeyPair, data: &[u8]) -> Vec<u8> {
    let dir = tmp();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("data"), data).unwrap();
    let (ok, text) = openssl(
        dir.path(),
        &["dgst", "-sha1", "-sign", "key.pem", "-out", "sig", "data"],
    );
    assert!(ok, "{text}");
    std::fs::read(dir.path().join("sig")).unwrap()
}

fn rejected(r: Result<ScepRequest, DecodeError>) -> (FailInfo, String, ReplyTo) {
    match r {
        Err(DecodeError::Rejected {
            fail_info,
            reason,
            reply_to,
        }) => (fail_info, reason, reply_to),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn fixture(path: &str) -> Option<Vec<u8>> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/")).join(path);
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!("skipping: fixture {} is not available", p.display());
            None
        }
    }
}

/// The signed attributes and content of a CertRep, after checking its signature by `ca`.
struct OpenedRep {
    attrs: Vec<x509_cert::attr::Attribute>,
    content: Vec<u8>,
    digest: Digest,
}

fn open_rep(ra: &RegistrationAuthority, rep: &[u8]) -> OpenedRep {
    let ci = ContentInfo::from_der(rep).unwrap();
    let sd: SignedData = ci.content.decode_as().unwrap();
    let si = sd.signer_infos.0.iter().next().unwrap();
    let attrs = si.signed_attrs.clone().unwrap();
    let digest = Digest::from_oid(&si.digest_alg.oid).unwrap();
    crypto::verify(
        &ra.parsed().spki_der,
        &si.signature_algorithm.oid,
        Some(digest),
        &attrs.to_der().unwrap(),
        si.signature.as_bytes(),
    )
    .unwrap();
    let content: OctetString = sd
        .encap_content_info
        .econtent
        .as_ref()
        .unwrap()
        .decode_as()
        .unwrap();
    assert_eq!(
        attr_octets(attrs.as_slice(), oids::MESSAGE_DIGEST).unwrap(),
        digest.hash(content.as_bytes())
    );
    assert!(sd.certificates.is_some());
    OpenedRep {
        attrs: attrs.into_vec(),
        content: content.as_bytes().to_vec(),
        digest,
    }
}

/// Decrypts a CertRep envelope with the requester's key; returns (cipher, degenerate PKCS#7).
fn open_envelope(client_key: &KeyPair, envelope: &[u8]) -> (ContentCipher, Vec<u8>) {
    use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
    let ci = ContentInfo::from_der(envelope).unwrap();
    assert_eq!(ci.content_type, oids::ID_ENVELOPED_DATA);
    let ed: EnvelopedData = ci.content.decode_as().unwrap();
    let RecipientInfo::Ktri(ktri) = ed.recip_infos.0.iter().next().unwrap() else {
        panic!("not key transport")
    };
    let key = Pkcs1PrivateDecryptingKey::new(
        PrivateDecryptingKey::from_pkcs8(&client_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let mut buf = vec![0u8; key.min_output_size()];
    let cek = key.decrypt(ktri.enc_key.as_bytes(), &mut buf).unwrap().to_vec();
    let alg = &ed.encrypted_content.content_enc_alg;
    let cipher = ContentCipher::from_oid(&alg.oid).unwrap();
    let iv: OctetString = alg.parameters.as_ref().unwrap().decode_as().unwrap();
    let plain = cipher
        .decrypt(
            &cek,
            iv.as_bytes(),
            ed.encrypted_content
                .encrypted_content
                .as_ref()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    (cipher, plain)
}

fn certs_in_degenerate(p7: &[u8]) -> Vec<Vec<u8>> {
    let ci = ContentInfo::from_der(p7).unwrap();
    let sd: SignedData = ci.content.decode_as().unwrap();
    sd.certificates
        .unwrap()
        .0
        .iter()
        .map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => c.to_der().unwrap(),
            _ => panic!("other certificate format"),
        })
        .collect()
}

fn attr_str(attrs: &[x509_cert::attr::Attribute], oid: ObjectIdentifier) -> Option<String> {
    attr_string(attrs, oid)
}

// ---------------------------------------------------------------- capabilities

#[test]
fn ca_caps_lists_what_clients_need() {
    for cap in [
        "POSTPKIOperation",
        "SHA-1",
        "SHA-256",
        "SHA-512",
        "AES",
        "DES3",
        "SCEPStandard",
        "Renewal",
    ] {
        assert!(CA_CAPS.lines().any(|l| l == cap), "{cap}");
    }
}

// ---------------------------------------------------------------- fixtures from real clients

/// The fixture CA (RSA) as issuer and as its own RA, as a single-certificate SCEP server is.
fn fixture_ca() -> Option<(RegistrationAuthority, CertificateAuthority)> {
    let key = fixture("scep/ca.key")?;
    let cert = String::from_utf8(fixture("scep/ca.pem")?).unwrap();
    let dir = tmp();
    std::fs::write(dir.path().join("ca.key"), key).unwrap();
    let (ok, text) = openssl(
        dir.path(),
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "ca.key", "-passin", "pass:", "-out", "ca8.pem",
        ],
    );
    assert!(ok, "{text}");
    let pkcs8 = std::fs::read_to_string(dir.path().join("ca8.pem")).unwrap();
    let key = SecretPem::new(pkcs8);
    Some((
        RegistrationAuthority::from_pem(&cert, &key).unwrap(),
        CertificateAuthority::from_pem(&cert, &key).unwrap(),
    ))
}

#[test]
fn decodes_a_real_pkcsreq() {
    let (Some((ra, ca)), Some(msg)) = (fixture_ca(), fixture("scep/PKCSReq.der")) else {
        return;
    };
    // The fixture CA expired in May 2026; decode at a time inside its validity.
    let opts = DecodeOptions {
        allow_des: false,
        now: datetime!(2025-01-01 0:00 UTC),
    };
    // Its signer certificate's key (2048 bits) is not the requested key (1024 bits), which
    // the decoder refuses after everything else has been checked…
    let (fail, reason, _) = rejected(decode_request(&msg, &ra, &ca, &opts));
    assert_eq!(fail, FailInfo::BadMessageCheck);
    assert!(reason.contains("not the requested key"), "{reason}");
    // …so look inside without that rule.
    let req = decode(&msg, &ra, &ca, &opts, false).unwrap();
    assert_eq!(req.message_type, MessageType::PkcsReq);
    assert_eq!(req.digest, Digest::Sha1);
    assert_eq!(req.cipher, ContentCipher::Des3Cbc);
    assert_eq!(req.transaction_id, "A13090761A30F66664F85D37433D2065E1112BA1");
    assert_eq!(req.sender_nonce, [0xAE, 0x7F, 0xE8, 0x81, 0x6C, 0xC6, 0xBE, 0xDD]);
    assert!(
        req.csr.subject.contains("com.apple.security.scep."),
        "{}",
        req.csr.subject
    );
    // This one carries no challengePassword (only an extensionRequest for keyUsage).
    assert_eq!(req.csr.challenge_password, None);
    assert_eq!(req.csr.public_key_sha256.len(), 64);
    let to = req.reply_to();
    assert_eq!(to.cipher, Some(ContentCipher::Des3Cbc));
    // Its 1024-bit key is too weak to certify.
    assert!(matches!(
        ca.issue_device_certificate(&req.csr, VALIDITY, datetime!(2025-01-01 0:00 UTC)),
        Err(CertError::Request(_))
    ));
    // The same message to another CA cannot be opened.
    let (fail, _, to) = rejected(decode_request(
        &msg,
        &other_pki().ra,
        ca_for_fixture_mismatch(),
        &opts,
    ));
    assert_eq!(fail, FailInfo::BadMessageCheck);
    assert_eq!(to.transaction_id, req.transaction_id);
}

fn ca_for_fixture_mismatch() -> &'static CertificateAuthority {
    other_ca()
}

#[test]
fn a_real_single_des_request_to_another_ca_is_rejected_with_its_transaction() {
    let Some(msg) = fixture("wire/mdmb-scep-pkcsreq.der") else {
        return;
    };
    // The signature checks out (SHA-1, Go client); only the envelope is not ours.
    let (fail, reason, to) = rejected(decode_request(&msg, ra(), ca(), &opts(true)));
    assert_eq!(fail, FailInfo::BadMessageCheck, "{reason}");
    assert!(reason.contains("not encrypted to this RA"), "{reason}");
    assert!(!to.transaction_id.is_empty());
    assert!(!to.sender_nonce.is_empty());
    assert!(!to.signer_certificate.is_empty());
    assert_eq!(to.digest, Digest::Sha1);
    assert_eq!(to.cipher, Some(ContentCipher::DesCbc));
    // With DES off, the algorithm is what is refused.
    let (fail, _, to2) = rejected(decode_request(&msg, ra(), ca(), &opts(false)));
    assert_eq!(fail, FailInfo::BadAlg);
    assert_eq!(to2.transaction_id, to.transaction_id);
    // A failure reply to it verifies.
    let rep = cert_rep_failure(ra(), &to, fail).unwrap();
    let opened = open_rep(ra(), &rep);
    assert_eq!(
        attr_str(&opened.attrs, oids::SCEP_TRANSACTION_ID).unwrap(),
        to.transaction_id
    );
}

#[test]
fn a_certrep_is_not_a_request() {
    let Some(msg) = fixture("scep/CertRep.der") else {
        return;
    };
    // A reply carries no senderNonce of its own kind: not a request at all.
    assert!(matches!(
        decode_request(&msg, ra(), ca(), &opts(true)),
        Err(DecodeError::Malformed(_))
    ));
}

// ---------------------------------------------------------------- round trips

#[test]
fn pkcsreq_round_trip_with_every_cipher() {
    let c = client();
    for cipher in [
        ContentCipher::DesCbc,
        ContentCipher::Des3Cbc,
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes192Cbc,
        ContentCipher::Aes256Cbc,
    ] {
        let msg = Req {
            cipher,
            ..Req::pkcs(c)
        }
        .build();
        let req = decode_request(&msg, ra(), ca(), &opts(true)).unwrap();
        assert_eq!(req.message_type, MessageType::PkcsReq);
        assert_eq!(req.cipher, cipher);
        assert_eq!(req.digest, Digest::Sha256);
        assert_eq!(req.transaction_id, "tx-0001");
        assert_eq!(req.sender_nonce, b"0123456789abcdef");
        assert_eq!(req.signer_certificate, c.cert_der);
        assert_eq!(req.csr.der, c.csr_der);
        assert_eq!(req.csr.challenge_password.as_deref(), Some(CHALLENGE));
        assert!(req.csr.subject.contains("CN=device-1"), "{}", req.csr.subject);

        // Reply and read the reply as the client.
        let issued = ca().issue_device_certificate(&req.csr, VALIDITY, NOW).unwrap();
        let ca_der = ca().certificate_der().to_vec();
        let rep = cert_rep_success(ra(), &req.reply_to(), &[&issued.der, &ca_der]).unwrap();
        let opened = open_rep(ra(), &rep);
        assert_eq!(opened.digest, Digest::Sha256);
        assert_eq!(
            attr_str(&opened.attrs, oids::SCEP_MESSAGE_TYPE).as_deref(),
            Some("3")
        );
        assert_eq!(
            attr_str(&opened.attrs, oids::SCEP_PKI_STATUS).as_deref(),
            Some("0")
        );
        assert_eq!(
            attr_str(&opened.attrs, oids::SCEP_TRANSACTION_ID).as_deref(),
            Some("tx-0001")
        );
        assert_eq!(
            attr_octets(&opened.attrs, oids::SCEP_RECIPIENT_NONCE).unwrap(),
            b"0123456789abcdef"
        );
        let nonce = attr_octets(&opened.attrs, oids::SCEP_SENDER_NONCE).unwrap();
        assert_eq!(nonce.len(), 16);
        assert_ne!(nonce, b"0123456789abcdef");
        let (used, p7) = open_envelope(&c.key, &opened.content);
        assert_eq!(used, cipher, "the reply uses the request's cipher");
        let certs = certs_in_degenerate(&p7);
        assert!(certs.contains(&issued.der));
        assert!(certs.contains(&ca_der));
    }
}

#[test]
fn single_des_is_refused_unless_allowed() {
    let msg = Req {
        cipher: ContentCipher::DesCbc,
        ..Req::pkcs(client())
    }
    .build();
    let (fail, _, to) = rejected(decode_request(&msg, ra(), ca(), &opts(false)));
    assert_eq!(fail, FailInfo::BadAlg);
    assert_eq!(to.cipher, Some(ContentCipher::DesCbc));
    assert_eq!(to.transaction_id, "tx-0001");
}

#[test]
fn sha1_and_sha512_requests() {
    for digest in [Digest::Sha1, Digest::Sha512, Digest::Sha384] {
        let msg = Req {
            digest,
            cipher: ContentCipher::Des3Cbc,
            ..Req::pkcs(client())
        }
        .build();
        let req = decode_request(&msg, ra(), ca(), &opts(false)).unwrap();
        assert_eq!(req.digest, digest);
        let rep = cert_rep_failure(ra(), &req.reply_to(), FailInfo::BadRequest).unwrap();
        let opened = open_rep(ra(), &rep);
        // SHA-1 is answered with SHA-256; others in kind.
        assert_eq!(opened.digest, digest.for_signing());
        assert_eq!(
            attr_str(&opened.attrs, oids::SCEP_PKI_STATUS).as_deref(),
            Some("2")
        );
        assert_eq!(
            attr_str(&opened.attrs, oids::SCEP_FAIL_INFO).as_deref(),
            Some("2")
        );
        assert!(opened.content.is_empty());
    }
}

#[test]
fn renewal_signed_by_an_issued_certificate() {
    let old = client();
    let issued = ca()
        .issue_device_certificate(
            &CertificationRequest::from_der(&old.csr_der).unwrap(),
            VALIDITY,
            NOW,
        )
        .unwrap();
    let new_key = client2();
    let msg = Req {
        message_type: "17",
        csr: &new_key.csr_der,
        signer_cert: &issued.der,
        signer_key: &old.key,
        ..Req::pkcs(old)
    }
    .build();
    let req = decode_request(&msg, ra(), ca(), &opts(false)).unwrap();
    assert_eq!(req.message_type, MessageType::RenewalReq);
    assert_eq!(req.signer_certificate, issued.der);
    assert_eq!(req.csr.der, new_key.csr_der);
    // The reply is enveloped to the old certificate's key.
    let renewed = ca().issue_device_certificate(&req.csr, VALIDITY, NOW).unwrap();
    let rep = cert_rep_success(ra(), &req.reply_to(), &[&renewed.der]).unwrap();
    let (_, p7) = open_envelope(&old.key, &open_rep(ra(), &rep).content);
    assert_eq!(certs_in_degenerate(&p7), vec![renewed.der.clone()]);

    // Expired by then.
    let later = DecodeOptions {
        allow_des: false,
        now: NOW + VALIDITY + Duration::days(1),
    };
    assert_eq!(
        rejected(decode_request(&msg, ra(), ca(), &later)).0,
        FailInfo::BadTime
    );

    // A renewal signed by a self-signed certificate, or one from another CA.
    let self_signed = Req {
        message_type: "17",
        ..Req::pkcs(old)
    }
    .build();
    assert_eq!(
        rejected(decode_request(&self_signed, ra(), ca(), &opts(false))).0,
        FailInfo::BadCertId
    );
    let foreign = other_ca()
        .issue_device_certificate(
            &CertificationRequest::from_der(&old.csr_der).unwrap(),
            VALIDITY,
            NOW,
        )
        .unwrap();
    let msg = Req {
        message_type: "17",
        signer_cert: &foreign.der,
        ..Req::pkcs(old)
    }
    .build();
    assert_eq!(
        rejected(decode_request(&msg, ra(), ca(), &opts(false))).0,
        FailInfo::BadCertId
    );
}

#[test]
fn pkcsreq_must_be_signed_by_the_requested_key() {
    let msg = Req {
        csr: &client2().csr_der,
        ..Req::pkcs(client())
    }
    .build();
    let (fail, reason, _) = rejected(decode_request(&msg, ra(), ca(), &opts(false)));
    assert_eq!(fail, FailInfo::BadMessageCheck, "{reason}");
}

#[test]
fn tampered_messages_fail_the_message_check() {
    let msg = Req {
        corrupt_signature: true,
        ..Req::pkcs(client())
    }
    .build();
    let (fail, reason, to) = rejected(decode_request(&msg, ra(), ca(), &opts(false)));
    assert_eq!(fail, FailInfo::BadMessageCheck);
    assert!(reason.contains("signature"), "{reason}");
    assert_eq!(to.transaction_id, "tx-0001");

    // Flip a byte inside the envelope's ciphertext: the messageDigest no longer matches.
    let mut msg = Req::pkcs(client()).build();
    let at = msg.len() / 3;
    msg[at] ^= 0x80;
    match decode_request(&msg, ra(), ca(), &opts(false)) {
        Err(DecodeError::Rejected { fail_info, .. }) => assert_eq!(fail_info, FailInfo::BadMessageCheck),
        Err(DecodeError::Malformed(_)) => {}
        Ok(_) => panic!("a tampered message was accepted"),
    }
}

#[test]
fn a_request_for_another_ca_is_rejected() {
    let msg = Req {
        recipient: &other_pki().ra,
        ..Req::pkcs(client())
    }
    .build();
    let (fail, _, to) = rejected(decode_request(&msg, ra(), ca(), &opts(false)));
    assert_eq!(fail, FailInfo::BadMessageCheck);
    assert_eq!(to.cipher, Some(ContentCipher::Aes128Cbc));
}

#[test]
fn unsupported_message_types_are_rejected() {
    for t in ["20", "21", "22", "3", "99"] {
        let msg = Req {
            message_type: t,
            ..Req::pkcs(client())
        }
        .build();
        assert_eq!(
            rejected(decode_request(&msg, ra(), ca(), &opts(false))).0,
            FailInfo::BadRequest,
            "{t}"
        );
    }
}

#[test]
fn envelope_content_that_is_not_a_csr_is_a_bad_request() {
    let msg = Req {
        csr: b"not a certification request",
        ..Req::pkcs(client())
    }
    .build();
    assert_eq!(
        rejected(decode_request(&msg, ra(), ca(), &opts(false))).0,
        FailInfo::BadRequest
    );
}

#[test]
fn garbage_is_malformed_and_never_panics() {
    let good = Req::pkcs(client()).build();
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"hello".to_vec(),
        vec![0x30],
        vec![0x30, 0x80],
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06],
        vec![0x30, 0x89, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0u8; MAX_MESSAGE_LEN + 1],
        good[..good.len() / 2].to_vec(),
        good[..good.len() - 1].to_vec(),
        [good.as_slice(), &[0]].concat(),
    ];
    for case in &cases {
        assert!(
            matches!(
                decode_request(case, ra(), ca(), &opts(true)),
                Err(DecodeError::Malformed(_))
            ),
            "{:?}",
            &case[..case.len().min(16)]
        );
    }
    // Every truncation and a sweep of single-byte corruptions: any error, no panic.
    for len in (0..good.len()).step_by(7) {
        assert!(decode_request(&good[..len], ra(), ca(), &opts(true)).is_err());
    }
    for at in (0..good.len()).step_by(3) {
        let mut m = good.clone();
        m[at] = m[at].wrapping_add(0x41);
        let _ = decode_request(&m, ra(), ca(), &opts(true));
    }
}

#[test]
fn random_mutations_never_panic() {
    use rand::{Rng, SeedableRng};
    let good = Req::pkcs(client()).build();
    let mut rng = rand::rngs::StdRng::seed_from_u64(8894);
    for _ in 0..400 {
        let mut m = good.clone();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..m.len());
            match rng.random_range(0..3) {
                0 => m[at] = rng.random(),
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, rng.random()),
            }
        }
        let _ = decode_request(&m, ra(), ca(), &opts(true));
    }
}

// ---------------------------------------------------------------- OpenSSL as the oracle

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// `openssl cms -decrypt` of `envelope.der` in `d` with `client.key`, as the recipient named
/// by the certificate `recip` (openssl matches it by issuer and serial).
fn cms_decrypt(d: &Path, recip: &str, out: &str) -> (bool, String) {
    let args = [
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        "envelope.der",
        "-inkey",
        "client.key",
        "-recip",
        recip,
        "-binary",
        "-out",
        out,
    ];
    openssl(d, &args)
}

/// `openssl cms -decrypt` opens `envelope.der` in `d` with `client.key` as the recipient
/// named by the certificate `recip`; the degenerate PKCS#7 inside must hold `leaf_pem` first,
/// and that leaf must verify against `ca.pem` (the root) for client authentication with the
/// intermediates the envelope delivers.
fn assert_envelope_holds_leaf_first(d: &Path, recip: &str, leaf_pem: &str) {
    let (ok, text) = cms_decrypt(d, recip, "certs.p7");
    assert!(ok, "{text}");
    let print = [
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        "certs.p7",
        "-print_certs",
        "-out",
        "chain.pem",
    ];
    let (ok, text) = openssl(d, &print);
    assert!(ok, "{text}");
    let chain = std::fs::read_to_string(d.join("chain.pem")).unwrap();
    let start = chain.find("-----BEGIN CERTIFICATE-----").unwrap();
    let end = chain.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let first = format!("{}\n", &chain[start..end]);
    assert_eq!(
        first.trim(),
        leaf_pem.trim(),
        "the issued certificate comes first"
    );
    write(d, "leaf.pem", &first);
    let (ok, text) = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-untrusted",
            "chain.pem",
            "-purpose",
            "sslclient",
            "leaf.pem",
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("leaf.pem: OK"), "{text}");
}

#[test]
fn openssl_verifies_and_decrypts_a_certrep() {
    let now = OffsetDateTime::now_utc();
    let c = client();
    let msg = Req {
        cipher: ContentCipher::Aes256Cbc,
        ..Req::pkcs(c)
    }
    .build();
    let req = decode_request(
        &msg,
        ra(),
        ca(),
        &DecodeOptions {
            allow_des: false,
            now,
        },
    )
    .unwrap();
    let issued = ca().issue_device_certificate(&req.csr, VALIDITY, now).unwrap();
    let ca_der = ca().certificate_der().to_vec();
    let rep = cert_rep_success(ra(), &req.reply_to(), &[&issued.der, &ca_der]).unwrap();

    let dir = tmp();
    let d = dir.path();
    write(d, "ca.pem", root().certificate_pem());
    write(d, "rep.der", &rep);
    write(d, "client.key", c.key.serialize_pem());
    write(d, "client.der", &c.cert_der);
    let (ok, text) = openssl(
        d,
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            "rep.der",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "any",
            "-binary",
            "-out",
            "envelope.der",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = openssl(
        d,
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            "client.der",
            "-out",
            "client.pem",
        ],
    );
    assert!(ok, "{text}");
    assert_envelope_holds_leaf_first(d, "client.pem", &issued.pem);

    // A failure reply verifies too.
    let fail = cert_rep_failure(ra(), &req.reply_to(), FailInfo::BadRequest).unwrap();
    write(d, "fail.der", &fail);
    let (ok, text) = openssl(
        d,
        &[
            "cms", "-verify", "-inform", "DER", "-in", "fail.der", "-CAfile", "ca.pem", "-purpose", "any",
            "-out", "empty",
        ],
    );
    assert!(ok, "{text}");
    // And OpenSSL reads the SCEP attributes.
    let (ok, text) = openssl(
        d,
        &["cms", "-cmsout", "-print", "-inform", "DER", "-in", "fail.der"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("2.16.840.1.113733.1.9.4"), "{text}");
}

#[test]
fn degenerate_pkcs7_keeps_the_order() {
    let issued = ca()
        .issue_device_certificate(
            &CertificationRequest::from_der(&client().csr_der).unwrap(),
            VALIDITY,
            NOW,
        )
        .unwrap();
    let ca_der = ca().certificate_der().to_vec();
    for order in [[&issued.der, &ca_der], [&ca_der, &issued.der]] {
        let p7 = degenerate_pkcs7(&[order[0], order[1]]).unwrap();
        let dir = tmp();
        write(dir.path(), "p7.der", &p7);
        let (ok, text) = openssl(
            dir.path(),
            &["pkcs7", "-inform", "DER", "-in", "p7.der", "-print_certs"],
        );
        assert!(ok, "{text}");
        let subjects: Vec<&str> = text.lines().filter(|l| l.starts_with("subject=")).collect();
        assert_eq!(subjects.len(), 2);
        let first_is_ca = subjects[0].contains("Citadel Device CA");
        assert_eq!(first_is_ca, order[0] == &ca_der, "{text}");
    }
    assert!(degenerate_pkcs7(&[b"junk"]).is_err());
    assert!(degenerate_pkcs7(&[]).is_ok());
}

/// Re-encodes a DER request the way streaming BER encoders do: indefinite lengths for the
/// ContentInfo, SignedData and eContent wrappers, the eContent OCTET STRING in chunks.
fn to_indefinite_ber(der: &[u8], chunked_content: bool) -> Vec<u8> {
    let ci = ContentInfo::from_der(der).unwrap();
    let sd: SignedData = ci.content.decode_as().unwrap();
    let mut inner = Vec::new();
    inner.extend(sd.version.to_der().unwrap());
    inner.extend(sd.digest_algorithms.to_der().unwrap());
    // encapContentInfo
    let content: OctetString = sd
        .encap_content_info
        .econtent
        .as_ref()
        .unwrap()
        .decode_as()
        .unwrap();
    let mut econtent = vec![0x30, 0x80];
    econtent.extend(sd.encap_content_info.econtent_type.to_der().unwrap());
    econtent.extend([0xa0, 0x80]);
    if chunked_content {
        econtent.extend([0x24, 0x80]);
        for chunk in content.as_bytes().chunks(100) {
            econtent.extend(OctetString::new(chunk).unwrap().to_der().unwrap());
        }
        econtent.extend([0, 0]);
    } else {
        econtent.extend(content.to_der().unwrap());
    }
    econtent.extend([0, 0, 0, 0]);
    inner.extend(econtent);
    let certs = sd.certificates.as_ref().unwrap().to_der().unwrap();
    // [0] IMPLICIT SET OF: replace the SET tag.
    let mut certs_tagged = certs.clone();
    certs_tagged[0] = 0xa0;
    inner.extend(certs_tagged);
    inner.extend(sd.signer_infos.to_der().unwrap());
    let mut out = vec![0x30, 0x80];
    out.extend(oids::ID_SIGNED_DATA.to_der().unwrap());
    out.extend([0xa0, 0x80, 0x30, 0x80]);
    out.extend(inner);
    out.extend([0, 0, 0, 0, 0, 0]);
    out
}

#[test]
fn indefinite_length_ber_requests_decode() {
    let der = Req::pkcs(client()).build();
    for chunked in [false, true] {
        let ber = to_indefinite_ber(&der, chunked);
        assert_ne!(ber, der);
        let req = decode_request(&ber, ra(), ca(), &opts(false))
            .unwrap_or_else(|e| panic!("chunked={chunked}: {e:?}"));
        assert_eq!(req.csr.der, client().csr_der);
    }
}

/// Not a test: `cargo test -p citadel-certs --release -- --ignored --nocapture enrollment_throughput`
/// prints enrollments per second on one core (decode + issue + CertRep).
#[test]
#[ignore]
fn enrollment_throughput() {
    let msg = Req::pkcs(client()).build();
    let ca_der = ca().certificate_der().to_vec();
    let n = 300;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let req = decode_request(&msg, ra(), ca(), &opts(false)).unwrap();
        let issued = ca().issue_device_certificate(&req.csr, VALIDITY, NOW).unwrap();
        cert_rep_success(ra(), &req.reply_to(), &[&issued.der, &ca_der]).unwrap();
    }
    let per_sec = f64::from(n) / start.elapsed().as_secs_f64();
    let start = std::time::Instant::now();
    for _ in 0..n {
        ca().keys().sign(Digest::Sha256, b"x").unwrap();
    }
    let sign_per_sec = f64::from(n) / start.elapsed().as_secs_f64();
    eprintln!("{per_sec:.0} enrollments/s on one core; {sign_per_sec:.0} CA RSA-3072 signatures/s");
}

#[test]
fn signatures_over_unsorted_attributes_are_found() {
    // Some signers do not sort the SET OF attributes before signing; the decoder also tries
    // the order in which the attributes appear in the message.
    let a = build::printable(oids::SCEP_TRANSACTION_ID, "a-much-longer-transaction-identifier").unwrap();
    let b = build::printable(oids::SCEP_MESSAGE_TYPE, "19").unwrap();
    let (a_der, b_der) = (a.to_der().unwrap(), b.to_der().unwrap());
    let unsorted = build::tlv(0x31, &[a_der.clone(), b_der.clone()].concat());
    let sorted = build::tlv(0x31, &[b_der, a_der].concat());
    let message = [b"prefix".as_slice(), &unsorted, b"suffix"].concat();
    let candidates: Vec<_> = signed_attr_candidates(&[b.clone(), a.clone()], &message).collect();
    assert_eq!(candidates, vec![sorted, unsorted]);
}

// ---------------------------------------------------------------- long signer serials

/// A self-signed certificate for `key` with serial `serial` (certmonger signs its requests
/// with one whose serial is its 32-byte transaction ID).
fn self_signed_with_serial(key: &KeyPair, serial: &[u8]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "certmonger-style signer");
    params.distinguished_name = dn;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(400);
    params.self_signed(key).unwrap().der().to_vec()
}

/// `msg` with its certificate set replaced by `cert_der` alone and its signer identifier by
/// that certificate's issuer and serial, copied raw (whatever their length). The signature
/// covers only the signed attributes, so it still verifies when `cert_der` has the key that
/// signed `msg`.
fn with_signer_certificate(msg: &[u8], cert_der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).unwrap();
    let ci = ContentInfo::from_der(msg).unwrap();
    let sd: SignedData = ci.content.decode_as().unwrap();
    let si = sd.signer_infos.0.iter().next().unwrap();
    let sid = build::tlv(
        0x30,
        &[cert.issuer().as_raw(), &build::tlv(0x02, cert.raw_serial())].concat(),
    );
    let mut signed_attrs = si.signed_attrs.as_ref().unwrap().to_der().unwrap();
    signed_attrs[0] = 0xa0; // [0] IMPLICIT SET OF
    let signer_info = build::tlv(
        0x30,
        &[
            si.version.to_der().unwrap(),
            sid,
            si.digest_alg.to_der().unwrap(),
            signed_attrs,
            si.signature_algorithm.to_der().unwrap(),
            si.signature.to_der().unwrap(),
        ]
        .concat(),
    );
    let signed_data = build::tlv(
        0x30,
        &[
            sd.version.to_der().unwrap(),
            sd.digest_algorithms.to_der().unwrap(),
            sd.encap_content_info.to_der().unwrap(),
            build::tlv(0xa0, cert_der),
            build::tlv(0x31, &signer_info),
        ]
        .concat(),
    );
    build::tlv(
        0x30,
        &[
            oids::ID_SIGNED_DATA.to_der().unwrap(),
            build::tlv(0xa0, &signed_data),
        ]
        .concat(),
    )
}

#[test]
fn a_pkcsreq_signed_with_a_32_byte_serial_is_decoded_and_answered() {
    let now = OffsetDateTime::now_utc();
    let c = client();
    // 32 octets with the high bit set: 33 on the wire, with the sign octet.
    let serial: Vec<u8> = (0u8..32).map(|i| 0xa5 ^ i).collect();
    let signer = self_signed_with_serial(&c.key, &serial);
    let msg = with_signer_certificate(
        &Req {
            cipher: ContentCipher::Aes256Cbc,
            ..Req::pkcs(c)
        }
        .build(),
        &signer,
    );
    let opts = DecodeOptions {
        allow_des: false,
        now,
    };
    let req = decode_request(&msg, ra(), ca(), &opts).unwrap();
    assert_eq!(req.message_type, MessageType::PkcsReq);
    assert_eq!(req.signer_certificate, signer, "kept byte for byte");
    assert_eq!(req.csr.der, c.csr_der);
    assert_eq!(req.transaction_id, "tx-0001");

    // Every check still applies: the requested key must be the signer's…
    let other_key = with_signer_certificate(
        &Req {
            csr: &client2().csr_der,
            ..Req::pkcs(c)
        }
        .build(),
        &signer,
    );
    let (fail, reason, to) = rejected(decode_request(&other_key, ra(), ca(), &opts));
    assert_eq!(fail, FailInfo::BadMessageCheck);
    assert!(reason.contains("not the requested key"), "{reason}");
    assert_eq!(to.signer_certificate, signer);
    // …the signature must be by the certificate's key…
    let foreign_signer = self_signed_with_serial(&client2().key, &serial);
    let (fail, reason, _) = rejected(decode_request(
        &with_signer_certificate(&Req::pkcs(c).build(), &foreign_signer),
        ra(),
        ca(),
        &opts,
    ));
    assert_eq!(fail, FailInfo::BadMessageCheck);
    assert!(reason.contains("signature"), "{reason}");
    // …and a renewal must be signed by a certificate this CA issued.
    let renewal = with_signer_certificate(
        &Req {
            message_type: "17",
            ..Req::pkcs(c)
        }
        .build(),
        &signer,
    );
    assert_eq!(
        rejected(decode_request(&renewal, ra(), ca(), &opts)).0,
        FailInfo::BadCertId
    );
    // A failure reply to it verifies.
    let fail = cert_rep_failure(ra(), &to, FailInfo::BadMessageCheck).unwrap();
    open_rep(ra(), &fail);

    // The reply's envelope names the recipient by that issuer and 32-byte serial: OpenSSL,
    // given the certificate, opens only a recipient info that matches it.
    let issued = ca().issue_device_certificate(&req.csr, VALIDITY, now).unwrap();
    let ca_der = ca().certificate_der().to_vec();
    let rep = cert_rep_success(ra(), &req.reply_to(), &[&issued.der, &ca_der]).unwrap();
    let opened = open_rep(ra(), &rep);
    let dir = tmp();
    let d = dir.path();
    write(d, "ca.pem", root().certificate_pem());
    write(d, "envelope.der", &opened.content);
    write(d, "client.key", c.key.serialize_pem());
    write(d, "signer.der", &signer);
    write(d, "short.der", &c.cert_der);
    for (der, pem) in [("signer.der", "signer.pem"), ("short.der", "short.pem")] {
        let (ok, text) = openssl(d, &["x509", "-inform", "DER", "-in", der, "-out", pem]);
        assert!(ok, "{text}");
    }
    let (ok, text) = openssl(d, &["x509", "-in", "signer.pem", "-noout", "-serial"]);
    assert!(ok, "{text}");
    assert!(text.contains(&hex::encode_upper(&serial)), "{text}");
    // Same key, another serial: no matching recipient.
    let (ok, text) = cms_decrypt(d, "short.pem", "wrong.p7");
    assert!(!ok, "{text}");
    assert_envelope_holds_leaf_first(d, "signer.pem", &issued.pem);
}

#[test]
fn absurdly_long_signer_serials_are_refused() {
    let c = client();
    for len in [65usize, 300] {
        let serial = vec![0x5a; len];
        let signer = self_signed_with_serial(&c.key, &serial);
        let msg = with_signer_certificate(&Req::pkcs(c).build(), &signer);
        assert!(
            matches!(
                decode_request(&msg, ra(), ca(), &opts(false)),
                Err(DecodeError::Malformed(_))
            ),
            "{len}"
        );
        // Nor is anything enveloped to such a certificate.
        let to = ReplyTo {
            transaction_id: "tx-0001".into(),
            sender_nonce: b"0123456789abcdef".to_vec(),
            signer_certificate: signer,
            digest: Digest::Sha256,
            cipher: None,
        };
        assert!(cert_rep_success(ra(), &to, &[ca().certificate_der()]).is_err());
    }
    // 64 octets is the limit.
    let signer = self_signed_with_serial(&c.key, &[0x5a; 64]);
    let msg = with_signer_certificate(&Req::pkcs(c).build(), &signer);
    assert_eq!(
        decode_request(&msg, ra(), ca(), &opts(false))
            .unwrap()
            .signer_certificate,
        signer
    );
}
