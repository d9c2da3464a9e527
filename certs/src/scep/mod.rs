//! SCEP (RFC 8894) messages: decoding PKIOperation requests, building CertRep replies.
//!
//! Pure codecs: the caller decides policy (challenges, renewal registry, DES setting) and
//! passes `now`. Every parser path returns an error; nothing here panics on any input.

pub(crate) mod asn1;
pub(crate) mod build;
pub mod client;
mod csr;
mod symmetric;

use cms::content_info::ContentInfo;
use cms::enveloped_data::{EnvelopedData, RecipientIdentifier, RecipientInfo};
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Any, Decode, Encode, EncodingRules, Tag, Tagged};
use time::OffsetDateTime;
use x509_cert::attr::Attribute;

use self::asn1::{CertificateChoices, SignedData, SignerIdentifier, SignerInfo};
pub use self::csr::CertificationRequest;
pub use self::symmetric::ContentCipher;
pub use crate::crypto::Digest;
use crate::crypto::{self, KeyKind};
use crate::{CertError, CertificateAuthority, RegistrationAuthority, oids};

/// Body of the GetCACaps answer (`text/plain`), one capability per line.
///
/// SHA-1 is advertised because widespread clients use it; replies to SHA-1 requests are signed
/// with SHA-256 (see [`cert_rep_success`]).
pub const CA_CAPS: &str = "POSTPKIOperation\nSHA-1\nSHA-256\nSHA-512\nAES\nDES3\nSCEPStandard\nRenewal\n";

/// Content type of a PKIOperation reply (CertRep).
pub const PKI_MESSAGE_CONTENT_TYPE: &str = "application/x-pki-message";
/// Content type of GetCACert when it returns a single DER certificate.
pub const CA_CERT_CONTENT_TYPE: &str = "application/x-x509-ca-cert";
/// Content type of GetCACert when it returns a degenerate PKCS#7 (RA + CA).
pub const CA_RA_CERT_CONTENT_TYPE: &str = "application/x-x509-ca-ra-cert";

/// Requests larger than this are refused as malformed before any parsing.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

/// The SCEP messageType of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    PkcsReq,
    RenewalReq,
    CertPoll,
    GetCert,
    GetCrl,
}

impl MessageType {
    fn from_code(code: &str) -> Option<Self> {
        match code.trim() {
            "19" => Some(Self::PkcsReq),
            "17" => Some(Self::RenewalReq),
            "20" => Some(Self::CertPoll),
            "21" => Some(Self::GetCert),
            "22" => Some(Self::GetCrl),
            _ => None,
        }
    }
}

/// The failInfo of a CertRep FAILURE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    BadAlg,
    BadMessageCheck,
    BadRequest,
    BadTime,
    BadCertId,
}

impl FailInfo {
    fn code(self) -> &'static str {
        match self {
            Self::BadAlg => "0",
            Self::BadMessageCheck => "1",
            Self::BadRequest => "2",
            Self::BadTime => "3",
            Self::BadCertId => "4",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        match code.trim() {
            "0" => Some(Self::BadAlg),
            "1" => Some(Self::BadMessageCheck),
            "2" => Some(Self::BadRequest),
            "3" => Some(Self::BadTime),
            "4" => Some(Self::BadCertId),
            _ => None,
        }
    }
}

/// How to decode requests.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Accept single-DES envelopes (widespread Go clients use them). When false they are
    /// rejected with `BadAlg`.
    pub allow_des: bool,
    /// Used to check the validity of a RenewalReq's signer certificate.
    pub now: OffsetDateTime,
}

/// What is needed to answer a request with a CertRep (success or failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
    /// DER certificate that signed the request (the reply is enveloped to its key). Empty
    /// when the request carried none.
    pub signer_certificate: Vec<u8>,
    /// The request's digest (SHA-1 replies are signed with SHA-256).
    pub digest: Digest,
    /// The request's content cipher, once known.
    pub cipher: Option<ContentCipher>,
}

/// A request whose outer signature, signed attributes and envelope all checked out.
#[derive(Debug, Clone)]
pub struct ScepRequest {
    /// `PkcsReq` or `RenewalReq` (other types are answered with a BadRequest rejection).
    pub message_type: MessageType,
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
    pub cipher: ContentCipher,
    pub digest: Digest,
    /// DER: a self-signed throwaway for PKCSReq; the existing certificate for RenewalReq
    /// (already checked to be issued by this CA and valid at `now`; revocation is the
    /// caller's to check).
    pub signer_certificate: Vec<u8>,
    pub csr: CertificationRequest,
}

impl ScepRequest {
    pub fn reply_to(&self) -> ReplyTo {
        ReplyTo {
            transaction_id: self.transaction_id.clone(),
            sender_nonce: self.sender_nonce.clone(),
            signer_certificate: self.signer_certificate.clone(),
            digest: self.digest,
            cipher: Some(self.cipher),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a SCEP message at all (not DER / not SignedData / missing transactionID…): answer
    /// HTTP 400.
    #[error("malformed SCEP message: {0}")]
    Malformed(String),
    /// Identified but invalid: answer a CertRep FAILURE with `fail_info` to `reply_to`.
    #[error("SCEP request rejected ({fail_info:?}): {reason}")]
    Rejected {
        fail_info: FailInfo,
        reason: String,
        reply_to: ReplyTo,
    },
}

fn malformed(reason: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(reason.into())
}

/// Parses a ContentInfo, DER first, then BER (some clients stream indefinite lengths).
pub(crate) fn content_info(der: &[u8]) -> Result<(ContentInfo, EncodingRules), der::Error> {
    match ContentInfo::from_der(der) {
        Ok(ci) => Ok((ci, EncodingRules::Der)),
        Err(e) => ContentInfo::from_ber(der)
            .map(|ci| (ci, EncodingRules::Ber))
            .map_err(|_| e),
    }
}

fn attr_value(attrs: &[Attribute], oid: ObjectIdentifier) -> Option<&Any> {
    attrs
        .iter()
        .find(|a| a.oid == oid)
        .and_then(|a| a.values.iter().next())
}

fn attr_string(attrs: &[Attribute], oid: ObjectIdentifier) -> Option<String> {
    let value = attr_value(attrs, oid)?;
    match value.tag() {
        Tag::PrintableString | Tag::Utf8String | Tag::Ia5String => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        _ => None,
    }
}

fn attr_octets(attrs: &[Attribute], oid: ObjectIdentifier) -> Option<Vec<u8>> {
    let value = attr_value(attrs, oid)?;
    (value.tag() == Tag::OctetString).then(|| value.value().to_vec())
}

/// The certificate in the message's certificate set that `sid` names.
pub(crate) fn find_certificate<'a>(
    sd: &'a SignedData,
    sid: &SignerIdentifier,
) -> Option<&'a asn1::Certificate> {
    let certs = sd.certificates.as_ref()?;
    certs.iter().find_map(|choice| {
        let CertificateChoices::Certificate(cert) = choice else {
            return None;
        };
        let tbs = cert.tbs_certificate();
        let matches = match sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => {
                tbs.issuer() == &isn.issuer && tbs.serial_number() == &isn.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                matches!(tbs.get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>(),
                    Ok(Some((_, own))) if own == *ski)
            }
        };
        matches.then_some(cert)
    })
}

/// The encodings of the signed attributes that the signature may cover: as decoded (DER-sorted
/// for DER input), then — only if asked for, as it means searching the message — in the order
/// they appear in the message (some signers do not sort).
pub(crate) fn signed_attr_candidates<'a>(
    attrs: &[Attribute],
    message: &'a [u8],
) -> impl Iterator<Item = Vec<u8>> + 'a {
    let encoded: Option<Vec<Vec<u8>>> = attrs.iter().map(|a| a.to_der().ok()).collect();
    let sorted = encoded
        .as_ref()
        .map(|encoded| build::tlv(0x31, &encoded.concat()));
    let in_message_order = {
        let sorted = sorted.clone();
        std::iter::once_with(move || {
            let candidate = build::tlv(0x31, &in_message_order(&encoded?, message)?);
            (Some(&candidate) != sorted.as_ref()).then_some(candidate)
        })
        .flatten()
    };
    sorted.into_iter().chain(in_message_order)
}

/// The attribute encodings concatenated in the order they are found in `message`.
fn in_message_order(encoded: &[Vec<u8>], message: &[u8]) -> Option<Vec<u8>> {
    let mut positioned = Vec::with_capacity(encoded.len());
    for enc in encoded {
        let pos = message
            .windows(enc.len().max(1))
            .position(|w| w == enc.as_slice())?;
        positioned.push((pos, enc));
    }
    positioned.sort_by_key(|(pos, _)| *pos);
    Some(
        positioned
            .iter()
            .flat_map(|(_, enc)| enc.iter().copied())
            .collect(),
    )
}

/// The bytes of the eContent OCTET STRING. A BER constructed OCTET STRING (streaming
/// encoders send the content in chunks) arrives as the concatenated chunk encodings; SCEP
/// content is a ContentInfo (starting with a SEQUENCE tag), so content starting with an
/// OCTET STRING tag is such a chunk list and is reassembled.
pub(crate) fn econtent_bytes(econtent: &Any, rules: EncodingRules) -> Option<Vec<u8>> {
    let content: OctetString = econtent.decode_as_encoding(rules).ok()?;
    let bytes = content.as_bytes();
    if rules != EncodingRules::Ber || bytes.first() != Some(&0x04) {
        return Some(bytes.to_vec());
    }
    let mut reader = der::SliceReader::new_with_encoding_rules(bytes, EncodingRules::Ber).ok()?;
    let mut out = Vec::with_capacity(bytes.len());
    while !der::Reader::is_finished(&reader) {
        let chunk: OctetString = der::Decode::decode(&mut reader).ok()?;
        out.extend_from_slice(chunk.as_bytes());
    }
    Some(out)
}

/// Splits one definite-length TLV with a one-byte tag off the front of `bytes`:
/// (tag, content, rest).
fn split_tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let (len_bytes, rest) = (rest.get(..n)?, rest.get(n..)?);
            (
                len_bytes
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
                rest,
            )
        }
        _ => return None, // indefinite or absurd lengths are not rewritten
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// The concatenated chunks of a constructed OCTET STRING body (chunks may nest).
fn octet_chunks(mut body: &[u8], out: &mut Vec<u8>, depth: u8) -> Option<()> {
    if depth > 8 {
        return None;
    }
    while !body.is_empty() {
        let (tag, content, rest) = split_tlv(body)?;
        match tag {
            0x04 => out.extend_from_slice(content),
            0x24 => octet_chunks(content, out, depth + 1)?,
            _ => return None,
        }
        body = rest;
    }
    Some(())
}

/// Rebuilds an EnvelopedData (given its SEQUENCE body) with a constructed `[0]`
/// encryptedContent turned into the primitive `[0]` DER wants. `None` if nothing to fix.
fn flatten_encrypted_content(enveloped_body: &[u8]) -> Option<Vec<u8>> {
    let mut fields = Vec::new();
    let mut changed = false;
    let mut rest = enveloped_body;
    while !rest.is_empty() {
        let (tag, content, next) = split_tlv(rest)?;
        let whole = rest.get(..rest.len() - next.len())?;
        // encryptedContentInfo is the SEQUENCE that starts with an OBJECT IDENTIFIER.
        if tag == 0x30 && content.first() == Some(&0x06) {
            let (oid_tag, oid, after_oid) = split_tlv(content)?;
            let (alg_tag, alg, after_alg) = split_tlv(after_oid)?;
            let mut eci = build::tlv(oid_tag, oid);
            eci.extend(build::tlv(alg_tag, alg));
            if let Some((0xa0, chunks, tail)) = split_tlv(after_alg) {
                let mut flat = Vec::new();
                octet_chunks(chunks, &mut flat, 0)?;
                eci.extend(build::tlv(0x80, &flat));
                eci.extend_from_slice(tail);
                changed = true;
            } else {
                eci.extend_from_slice(after_alg);
            }
            fields.extend(build::tlv(0x30, &eci));
        } else {
            fields.extend_from_slice(whole);
        }
        rest = next;
    }
    changed.then(|| build::tlv(0x30, &fields))
}

/// The transaction header every reply needs.
struct Header {
    message_type: String,
    transaction_id: String,
    sender_nonce: Vec<u8>,
}

fn read_header(attrs: &[Attribute]) -> Result<Header, DecodeError> {
    let transaction_id = attr_string(attrs, oids::SCEP_TRANSACTION_ID)
        .ok_or_else(|| malformed("no transactionID attribute"))?;
    if transaction_id.is_empty()
        || transaction_id.len() > 256
        || transaction_id.chars().any(|c| c.is_control())
    {
        return Err(malformed("the transactionID is empty, too long or not printable"));
    }
    let message_type =
        attr_string(attrs, oids::SCEP_MESSAGE_TYPE).ok_or_else(|| malformed("no messageType attribute"))?;
    let sender_nonce =
        attr_octets(attrs, oids::SCEP_SENDER_NONCE).ok_or_else(|| malformed("no senderNonce attribute"))?;
    if sender_nonce.is_empty() || sender_nonce.len() > 64 {
        return Err(malformed("the senderNonce must be 1 to 64 bytes"));
    }
    Ok(Header {
        message_type,
        transaction_id,
        sender_nonce,
    })
}

/// Decodes and checks a PKIOperation message (PKCSReq or RenewalReq).
///
/// Parses the outer SignedData, verifies the signer info's signature over the signed
/// attributes with the signer certificate's key and the messageDigest, reads messageType /
/// transactionID / senderNonce, decrypts the EnvelopedData with the RA key (RSA key transport;
/// DES-CBC only when `opts.allow_des`, DES-EDE3-CBC, AES-128/192/256-CBC), parses the PKCS#10
/// request and verifies its self-signature. For PKCSReq the signer certificate's key must be
/// the request's; for RenewalReq the signer certificate must be issued by `issuer` and valid
/// at `opts.now`.
pub fn decode_request(
    der: &[u8],
    ra: &RegistrationAuthority,
    issuer: &CertificateAuthority,
    opts: &DecodeOptions,
) -> Result<ScepRequest, DecodeError> {
    decode(der, ra, issuer, opts, true)
}

/// [`decode_request`]; `same_key` off skips the PKCSReq signer-key rule (for tests of
/// fixtures whose signer key differs from the requested one).
pub(crate) fn decode(
    der: &[u8],
    ra: &RegistrationAuthority,
    issuer: &CertificateAuthority,
    opts: &DecodeOptions,
    same_key: bool,
) -> Result<ScepRequest, DecodeError> {
    if der.is_empty() {
        return Err(malformed("empty message"));
    }
    if der.len() > MAX_MESSAGE_LEN {
        return Err(malformed(format!("message larger than {MAX_MESSAGE_LEN} bytes")));
    }
    let (ci, rules) = content_info(der).map_err(|e| malformed(format!("not a CMS ContentInfo: {e}")))?;
    if ci.content_type != oids::ID_SIGNED_DATA {
        return Err(malformed(format!(
            "content type {} is not signedData",
            ci.content_type
        )));
    }
    let sd: SignedData = ci
        .content
        .decode_as_encoding(rules)
        .map_err(|e| malformed(format!("not a SignedData: {e}")))?;
    let mut signers = sd.signer_infos.iter();
    let (Some(si), None) = (signers.next(), signers.next()) else {
        return Err(malformed("a SCEP message has exactly one signer"));
    };
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or_else(|| malformed("the signer info has no signed attributes"))?;
    let header = read_header(attrs.as_slice())?;

    let signer = find_certificate(&sd, &si.sid);
    let digest = Digest::from_oid(&si.digest_alg.oid);
    let mut reply_to = ReplyTo {
        transaction_id: header.transaction_id,
        sender_nonce: header.sender_nonce,
        signer_certificate: signer.and_then(|c| c.to_der().ok()).unwrap_or_default(),
        digest: digest.unwrap_or(Digest::Sha256),
        cipher: None,
    };
    let checked = check(
        &sd,
        si,
        attrs.as_slice(),
        &header.message_type,
        signer,
        digest,
        der,
        rules,
        (ra, issuer),
        opts,
        same_key,
        &mut reply_to,
    );
    match checked {
        Ok((message_type, cipher, digest, csr)) => Ok(ScepRequest {
            message_type,
            transaction_id: reply_to.transaction_id,
            sender_nonce: reply_to.sender_nonce,
            cipher,
            digest,
            signer_certificate: reply_to.signer_certificate,
            csr,
        }),
        Err((fail_info, reason)) => Err(DecodeError::Rejected {
            fail_info,
            reason,
            reply_to,
        }),
    }
}

type Rejection = (FailInfo, String);

fn reject<T>(fail: FailInfo, reason: impl Into<String>) -> Result<T, Rejection> {
    Err((fail, reason.into()))
}

#[allow(clippy::too_many_arguments)]
fn check(
    sd: &SignedData,
    si: &SignerInfo,
    attrs: &[Attribute],
    message_type: &str,
    signer: Option<&asn1::Certificate>,
    digest: Option<Digest>,
    message: &[u8],
    rules: EncodingRules,
    (ra, issuer): (&RegistrationAuthority, &CertificateAuthority),
    opts: &DecodeOptions,
    same_key: bool,
    reply_to: &mut ReplyTo,
) -> Result<(MessageType, ContentCipher, Digest, CertificationRequest), Rejection> {
    use FailInfo::*;
    let message_type = match MessageType::from_code(message_type) {
        Some(t @ (MessageType::PkcsReq | MessageType::RenewalReq)) => t,
        Some(other) => return reject(BadRequest, format!("{other:?} is not supported")),
        None => return reject(BadRequest, format!("unknown messageType {message_type:?}")),
    };
    let Some(digest) = digest else {
        return reject(
            BadAlg,
            format!("unsupported digest algorithm {}", si.digest_alg.oid),
        );
    };
    let Some(signer) = signer else {
        return reject(BadMessageCheck, "the signer certificate is not in the message");
    };
    let signer_spki = crypto::to_der(signer.tbs_certificate().subject_public_key_info())
        .or_else(|_| reject(BadMessageCheck, "unreadable signer key"))?;
    if !matches!(crypto::key_kind(&signer_spki), KeyKind::Rsa { .. }) {
        return reject(
            BadAlg,
            "the requester's key must be RSA (the reply is encrypted to it)",
        );
    }

    // Content and messageDigest.
    if sd.encap_content_info.econtent_type != oids::ID_DATA {
        return reject(BadRequest, "the signed content is not id-data");
    }
    let Some(econtent) = sd.encap_content_info.econtent.as_ref() else {
        return reject(BadRequest, "the message has no content");
    };
    let Some(content) = econtent_bytes(econtent, rules) else {
        return reject(BadRequest, "the content is not an OCTET STRING");
    };
    let content = content.as_slice();
    if let Some(value) = attr_value(attrs, oids::CONTENT_TYPE)
        && value.decode_as::<ObjectIdentifier>().ok() != Some(oids::ID_DATA)
    {
        return reject(BadMessageCheck, "the contentType attribute is not id-data");
    }
    let Some(message_digest) = attr_octets(attrs, oids::MESSAGE_DIGEST) else {
        return reject(BadMessageCheck, "no messageDigest attribute");
    };
    if message_digest != digest.hash(content) {
        return reject(BadMessageCheck, "the messageDigest does not match the content");
    }

    // Signature over the signed attributes.
    let signature = si.signature.as_bytes();
    let verified = signed_attr_candidates(attrs, message).any(|candidate| {
        crypto::verify(
            &signer_spki,
            &si.signature_algorithm.oid,
            Some(digest),
            &candidate,
            signature,
        )
        .is_ok()
    });
    if !verified {
        return reject(BadMessageCheck, "the message signature does not verify");
    }

    if message_type == MessageType::RenewalReq {
        let signer_der = &reply_to.signer_certificate;
        if !issuer.issued_by_this_ca(signer_der) {
            return reject(
                BadCertId,
                "a renewal must be signed by a certificate this CA issued",
            );
        }
        if !issuer.issued_and_valid(signer_der, opts.now) {
            return reject(BadTime, "the certificate signing the renewal is not valid now");
        }
    }

    // Envelope.
    let (envelope, env_rules) =
        content_info(content).or_else(|_| reject(BadRequest, "the content is not a CMS ContentInfo"))?;
    if envelope.content_type != oids::ID_ENVELOPED_DATA {
        return reject(BadRequest, "the content is not an EnvelopedData");
    }
    // Go's pkcs7 (scepclient, many MDM clients) sends encryptedContent as a constructed [0]
    // holding OCTET STRING chunks: valid BER that the decoder does not take for an IMPLICIT
    // OCTET STRING, so such an envelope is rewritten in primitive form first.
    let ed: EnvelopedData = envelope
        .content
        .decode_as_encoding(env_rules)
        .or_else(|_| {
            let flattened = flatten_encrypted_content(envelope.content.value()).ok_or(())?;
            EnvelopedData::from_der(&flattened).map_err(|_| ())
        })
        .or_else(|_| reject(BadRequest, "unreadable EnvelopedData"))?;
    let enc = &ed.encrypted_content;
    let Some(cipher) = ContentCipher::from_oid(&enc.content_enc_alg.oid) else {
        return reject(
            BadAlg,
            format!("unsupported content cipher {}", enc.content_enc_alg.oid),
        );
    };
    reply_to.cipher = Some(cipher);
    if cipher == ContentCipher::DesCbc && !opts.allow_des {
        return reject(BadAlg, "single DES is not allowed");
    }
    let iv = enc
        .content_enc_alg
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<OctetString>().ok())
        .filter(|iv| iv.as_bytes().len() == cipher.iv_len())
        .ok_or(())
        .or_else(|_| reject(BadRequest, "missing or invalid IV"))?;
    let Some(ciphertext) = enc.encrypted_content.as_ref() else {
        return reject(BadRequest, "the envelope has no encrypted content");
    };
    let parsed_ra = ra.parsed();
    let ra_isn = build::issuer_and_serial(&parsed_ra.cert);
    let ktri = ed.recip_infos.0.iter().find_map(|ri| match ri {
        RecipientInfo::Ktri(k) => match &k.rid {
            RecipientIdentifier::IssuerAndSerialNumber(isn) if *isn == ra_isn => Some(k),
            RecipientIdentifier::SubjectKeyIdentifier(ski) if ski.0.as_bytes() == parsed_ra.key_id => Some(k),
            _ => None,
        },
        _ => None,
    });
    let Some(ktri) = ktri else {
        return reject(BadMessageCheck, "the envelope is not encrypted to this RA");
    };
    if ktri.key_enc_alg.oid != oids::RSA_ENCRYPTION {
        return reject(
            BadAlg,
            format!("unsupported key transport {}", ktri.key_enc_alg.oid),
        );
    }
    let Some(key) = ra
        .keys()
        .unwrap_content_key(ktri.enc_key.as_bytes(), cipher.key_len())
    else {
        return reject(BadAlg, "the RA key cannot decrypt");
    };
    let Some(plaintext) = cipher.decrypt(&key, iv.as_bytes(), ciphertext.as_bytes()) else {
        return reject(BadMessageCheck, "the envelope could not be decrypted");
    };

    // The request.
    let csr = CertificationRequest::parse(&plaintext).or_else(|p| match p {
        csr::CsrProblem::Unreadable(reason) => reject(BadRequest, reason),
        csr::CsrProblem::BadSignature => reject(BadMessageCheck, "the PKCS#10 signature does not verify"),
    })?;
    if same_key && message_type == MessageType::PkcsReq && csr.public_key_der != signer_spki {
        return reject(
            BadMessageCheck,
            "the signer certificate's key is not the requested key",
        );
    }
    Ok((message_type, cipher, digest, csr))
}

fn cert_rep(
    ra: &RegistrationAuthority,
    to: &ReplyTo,
    status: &str,
    fail: Option<FailInfo>,
    content: &[u8],
) -> Result<Vec<u8>, CertError> {
    let sender_nonce: [u8; 16] = rand::random();
    let mut attrs = vec![
        build::printable(oids::SCEP_MESSAGE_TYPE, "3")?,
        build::printable(oids::SCEP_PKI_STATUS, status)?,
        build::printable(oids::SCEP_TRANSACTION_ID, &to.transaction_id)?,
        build::octets(oids::SCEP_RECIPIENT_NONCE, &to.sender_nonce)?,
        build::octets(oids::SCEP_SENDER_NONCE, &sender_nonce)?,
    ];
    if let Some(fail) = fail {
        attrs.push(build::printable(oids::SCEP_FAIL_INFO, fail.code())?);
    }
    let digest = to.digest.for_signing();
    let ra_cert = &ra.parsed().cert;
    build::signed_data(ra_cert, &[ra_cert], digest, attrs, content, |tbs| {
        ra.keys().sign(digest, tbs)
    })
}

/// CertRep SUCCESS (pkiStatus 0): a degenerate PKCS#7 holding `certs` (issued certificate
/// first, then the chain), enveloped to the key of `to.signer_certificate` with `to.cipher`
/// (AES-256 if unknown), inside a SignedData signed by the RA with messageType CertRep,
/// transactionID, recipientNonce (= the request's senderNonce) and a fresh senderNonce. The
/// RA certificate is included. Signed with `to.digest`, except SHA-1, which is signed as
/// SHA-256 (aws-lc-rs does not create SHA-1 signatures).
pub fn cert_rep_success(
    ra: &RegistrationAuthority,
    to: &ReplyTo,
    certs: &[&[u8]],
) -> Result<Vec<u8>, CertError> {
    let recipient = asn1::Certificate::from_der(&to.signer_certificate)
        .map_err(|e| CertError::Parse(format!("the requester's certificate: {e}")))?;
    let inner = degenerate_pkcs7(certs)?;
    let envelope = build::envelope(&recipient, to.cipher.unwrap_or(ContentCipher::Aes256Cbc), &inner)?;
    cert_rep(ra, to, "0", None, &envelope)
}

/// CertRep FAILURE (pkiStatus 2) with `fail`; the content is empty.
pub fn cert_rep_failure(
    ra: &RegistrationAuthority,
    to: &ReplyTo,
    fail: FailInfo,
) -> Result<Vec<u8>, CertError> {
    cert_rep(ra, to, "2", Some(fail), &[])
}

/// A degenerate PKCS#7 SignedData holding only `certs` (DER), in the given order.
pub fn degenerate_pkcs7(certs: &[&[u8]]) -> Result<Vec<u8>, CertError> {
    build::degenerate(certs)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod ber_tests {
    use super::*;

    #[test]
    fn constructed_encrypted_content_is_flattened() {
        let oid = build::tlv(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01]);
        let alg = build::tlv(0x30, &build::tlv(0x06, &[0x2b, 0x0e, 0x03, 0x02, 0x07]));
        let mut chunks = build::tlv(0x04, b"abc");
        chunks.extend(build::tlv(0x24, &build::tlv(0x04, b"def")));
        let mut eci = oid.clone();
        eci.extend(alg.clone());
        eci.extend(build::tlv(0xa0, &chunks));
        let mut body = build::tlv(0x02, &[0]);
        body.extend(build::tlv(0x31, &[]));
        body.extend(build::tlv(0x30, &eci));
        let flat = flatten_encrypted_content(&body).unwrap();
        let mut want_eci = oid;
        want_eci.extend(alg);
        want_eci.extend(build::tlv(0x80, b"abcdef"));
        let mut want = build::tlv(0x02, &[0]);
        want.extend(build::tlv(0x31, &[]));
        want.extend(build::tlv(0x30, &want_eci));
        assert_eq!(flat, build::tlv(0x30, &want));
        // Already primitive: nothing to rewrite. Garbage: no panic, no result.
        assert!(flatten_encrypted_content(&want).is_none());
        assert!(flatten_encrypted_content(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(flatten_encrypted_content(&[0x30]).is_none());
    }
}
