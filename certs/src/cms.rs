//! CMS (RFC 5652) for the Apple MDM protocol: checking the detached signature devices put in
//! the `Mdm-Signature` header, and signing configuration profiles.
//!
//! The SignedData parsing (DER or BER, long signer serials, signer lookup, signed-attribute
//! encodings) is the SCEP decoder's; only the policy differs.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, RsaKeyPair};
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Any, Decode, Encode, EncodingRules};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use zeroize::Zeroizing;

use crate::crypto::{self, CaKeys, Digest, KeyKind, VerifyAlg, VerifyingKeyCache};
use crate::scep::asn1::{CertificateChoices, SignedData};
use crate::scep::{build, content_info, find_certificate, signed_attr_candidates};
use crate::{CertError, SecretPem, oids};

/// Signatures (DER, after base64 decoding) larger than this are refused before parsing: a
/// device's is a certificate or two and a signature, well under 8 KiB.
pub const MAX_SIGNATURE_LEN: usize = 16 * 1024;

/// Who made a signature that verified. Nothing here is trusted yet: the caller checks
/// `certificate_der` against its CA (issuer, validity, revocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    /// DER of the certificate whose key made the signature.
    pub certificate_der: Vec<u8>,
    /// SHA-256 of `certificate_der`.
    pub certificate_sha256: [u8; 32],
    /// Its serial number, as [`crate::CertificateInfo::serial_hex`].
    pub serial_hex: String,
    /// Its validity period, as the certificate states it (nothing is checked against a clock).
    pub not_before: time::OffsetDateTime,
    pub not_after: time::OffsetDateTime,
    /// DER of the other certificates the signature carried (intermediates, usually).
    pub other_certificates: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    /// Not a detached SignedData this code can read (or missing a required part).
    #[error("malformed CMS signature: {0}")]
    Malformed(String),
    /// Readable, but made with an algorithm or key type that is not supported.
    #[error("unsupported CMS signature: {0}")]
    Unsupported(String),
    /// Well-formed, but not a signature of this content by the enclosed certificate's key.
    #[error("the CMS signature does not verify: {0}")]
    Invalid(String),
}

fn malformed(reason: impl Into<String>) -> CmsError {
    CmsError::Malformed(reason.into())
}

/// Verifies `signature`, a detached CMS SignedData in DER or BER (the `Mdm-Signature` header
/// after base64 decoding), over `content` (the exact request body).
///
/// Exactly one signer, whose certificate must be in the signature. With signed attributes,
/// contentType must be id-data, messageDigest the digest of `content`, and the signature
/// covers the attributes; without, it covers `content` itself. The certificate's chain and
/// validity are NOT checked here.
pub fn verify_detached(signature: &[u8], content: &[u8]) -> Result<SignedBy, CmsError> {
    detached(signature, content, None)
}

/// Checks detached signatures like [`verify_detached`] for a server that sees the same signers
/// again and again: the signers' parsed public keys are kept (a bounded number of them), so a
/// device's next request skips parsing its key. What is accepted is exactly the same.
pub struct DetachedVerifier {
    keys: VerifyingKeyCache,
    /// What the check reads of a signer's certificate, by the certificate's exact bytes: a
    /// device sends the same certificate with every request.
    signers: borrowed::SignerCache,
}

impl fmt::Debug for DetachedVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachedVerifier").finish_non_exhaustive()
    }
}

impl DetachedVerifier {
    /// Keeps up to `signers` parsed keys and the certificates they came in (about 2.5 KB
    /// each for RSA-2048).
    pub fn new(signers: usize) -> Self {
        Self {
            keys: VerifyingKeyCache::new(signers),
            signers: borrowed::SignerCache::new(signers),
        }
    }

    /// See [`verify_detached`]. A DER signature of the usual shape (one signer named by issuer
    /// and serial, its certificate in the set) is read in place — nothing decoded beyond what
    /// the check needs, nothing re-encoded; anything else, and any failure, takes the full
    /// decoder, whose verdict and error then stand.
    pub fn verify(&self, signature: &[u8], content: &[u8]) -> Result<SignedBy, CmsError> {
        if signature.len() <= MAX_SIGNATURE_LEN
            && let Some(signed) =
                borrowed::Detached::read(signature).and_then(|d| d.verify(content, &self.keys, &self.signers))
        {
            return Ok(signed);
        }
        detached(signature, content, Some(&self.keys))
    }
}

/// The common shape of an `Mdm-Signature`, read where it lies. Each function returns `None`
/// for anything it does not handle, so that the full decoder decides. Of the certificates only
/// the signer's serial number, issuer, validity and key are decoded: a certificate whose other
/// fields are malformed passes here, and is then not the certificate the caller issued (the
/// appliance compares its bytes with that one's).
mod borrowed {
    use der::asn1::AnyRef;
    use der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::time::Validity;

    use std::ops::Range;
    use std::sync::Arc;

    use super::{ObjectIdentifier, SignedBy, instant, signature_alg};
    use crate::crypto::{self, Digest, KeyKind, VerifyingKeyCache};
    use crate::oids;
    use crate::scep::asn1::LongSerials;
    use crate::scep::build;

    /// A detached SignedData with one signer, named by issuer and serial number.
    pub(super) struct Detached<'a> {
        /// Each certificate of the set, as its DER.
        certificates: Vec<&'a [u8]>,
        /// The signer's issuer (Name) and serial number (INTEGER), as their DER.
        sid_issuer: &'a [u8],
        sid_serial: &'a [u8],
        digest_alg: ObjectIdentifier,
        /// The content octets of the `[0] IMPLICIT` signed attributes.
        signed_attrs: Option<&'a [u8]>,
        signature_alg: ObjectIdentifier,
        signature: &'a [u8],
    }

    /// What the check reads from a certificate, each part as its DER.
    struct CertificateParts<'a> {
        serial: &'a [u8],
        issuer: &'a [u8],
        validity: Validity<LongSerials>,
        spki: &'a [u8],
    }

    /// What the check needs of a signer's certificate, with its parts as positions in it.
    pub(super) struct SignerFacts {
        serial: Range<usize>,
        issuer: Range<usize>,
        spki: Range<usize>,
        kind: KeyKind,
        serial_hex: String,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
        sha256: [u8; 32],
    }

    impl SignerFacts {
        fn read(der: &[u8]) -> Option<Self> {
            let parts = CertificateParts::read(der).ok()?;
            // Each part is a subslice of `der`: its position is its offset in it.
            let range = |part: &[u8]| {
                let start = (part.as_ptr() as usize).checked_sub(der.as_ptr() as usize)?;
                Some(start..start.checked_add(part.len())?)
            };
            Some(Self {
                serial: range(parts.serial)?,
                issuer: range(parts.issuer)?,
                spki: range(parts.spki)?,
                kind: crypto::key_kind(parts.spki),
                serial_hex: hex::encode(
                    SerialNumber::<LongSerials>::from_der(parts.serial)
                        .ok()?
                        .as_bytes(),
                ),
                not_before: instant(parts.validity.not_before).ok()?,
                not_after: instant(parts.validity.not_after).ok()?,
                sha256: crate::sha256(der),
            })
        }
    }

    /// [`SignerFacts`] by the certificate's exact DER, kept (bounded) once a signature made
    /// with its key has verified, so that made-up certificates cannot push real ones out.
    pub(super) struct SignerCache {
        facts: quick_cache::sync::Cache<Box<[u8]>, Arc<SignerFacts>>,
    }

    impl SignerCache {
        pub(super) fn new(capacity: usize) -> Self {
            Self {
                facts: quick_cache::sync::Cache::new(capacity.max(1)),
            }
        }

        /// The facts of `der`, and whether they came from the cache.
        fn facts(&self, der: &[u8]) -> Option<(Arc<SignerFacts>, bool)> {
            match self.facts.get(der) {
                Some(facts) => Some((facts, true)),
                None => SignerFacts::read(der).map(|facts| (Arc::new(facts), false)),
            }
        }

        #[cfg(test)]
        pub(super) fn len(&self) -> usize {
            self.facts.len()
        }
    }

    fn context(number: u32, constructed: bool) -> Tag {
        Tag::ContextSpecific {
            constructed,
            number: TagNumber(number),
        }
    }

    /// The OID of an AlgorithmIdentifier (its parameters are skipped).
    fn algorithm(r: &mut SliceReader<'_>) -> der::Result<ObjectIdentifier> {
        r.sequence(|r| -> der::Result<_> {
            let oid = r.decode()?;
            while !r.is_finished() {
                r.tlv_bytes()?;
            }
            Ok(oid)
        })
    }

    impl<'a> Detached<'a> {
        pub(super) fn read(der: &'a [u8]) -> Option<Self> {
            Self::parse(der).ok().flatten()
        }

        fn parse(der: &'a [u8]) -> der::Result<Option<Self>> {
            let mut r = SliceReader::new(der)?;
            let signed_data = r.sequence(|r| -> der::Result<_> {
                let content_type: ObjectIdentifier = r.decode()?;
                let explicit = AnyRef::decode(r)?;
                Ok(
                    (content_type == oids::ID_SIGNED_DATA && explicit.tag() == context(0, true))
                        .then_some(explicit.value()),
                )
            })?;
            r.finish()?;
            let Some(explicit) = signed_data else {
                return Ok(None);
            };
            let mut r = SliceReader::new(explicit)?;
            let parsed = r.sequence(|r| -> der::Result<_> {
                let _version: u8 = r.decode()?;
                let digest_algorithms = AnyRef::decode(r)?;
                if digest_algorithms.tag() != Tag::Set {
                    return Ok(None);
                }
                let mut algorithms = SliceReader::new(digest_algorithms.value())?;
                while !algorithms.is_finished() {
                    algorithm(&mut algorithms)?;
                }
                let detached_data = r.sequence(|r| -> der::Result<_> {
                    let econtent_type: ObjectIdentifier = r.decode()?;
                    Ok(econtent_type == oids::ID_DATA && r.is_finished())
                })?;
                let mut certificates = Vec::new();
                if Tag::peek(r)? == context(0, true) {
                    let set = AnyRef::decode(r)?;
                    let mut certs = SliceReader::new(set.value())?;
                    while !certs.is_finished() {
                        if Tag::peek(&certs)? != Tag::Sequence {
                            return Ok(None);
                        }
                        certificates.push(certs.tlv_bytes()?);
                    }
                }
                if Tag::peek(r)? == context(1, true) {
                    r.tlv_bytes()?;
                }
                let signer_infos = AnyRef::decode(r)?;
                if signer_infos.tag() != Tag::Set || !detached_data {
                    return Ok(None);
                }
                let mut signers = SliceReader::new(signer_infos.value())?;
                let signer = signers.sequence(|r| Self::signer(r, certificates))?;
                Ok(if signers.is_finished() { signer } else { None })
            })?;
            r.finish()?;
            Ok(parsed)
        }

        fn signer(r: &mut SliceReader<'a>, certificates: Vec<&'a [u8]>) -> der::Result<Option<Self>> {
            let _version: u8 = r.decode()?;
            if Tag::peek(r)? != Tag::Sequence {
                return Ok(None); // subjectKeyIdentifier
            }
            let (sid_issuer, sid_serial) =
                r.sequence(|r| der::Result::Ok((r.tlv_bytes()?, r.tlv_bytes()?)))?;
            let digest_alg = algorithm(r)?;
            let signed_attrs = if Tag::peek(r)? == context(0, true) {
                Some(AnyRef::decode(r)?.value())
            } else {
                None
            };
            let signature_alg = algorithm(r)?;
            let signature = AnyRef::decode(r)?;
            if signature.tag() != Tag::OctetString {
                return Ok(None);
            }
            if !r.is_finished() {
                if Tag::peek(r)? != context(1, true) {
                    return Ok(None);
                }
                r.tlv_bytes()?;
            }
            Ok(Some(Self {
                certificates,
                sid_issuer,
                sid_serial,
                digest_alg,
                signed_attrs,
                signature_alg,
                signature: signature.value(),
            }))
        }

        /// Checks the signature over `content`, as `verify_signer` does.
        pub(super) fn verify(
            &self,
            content: &[u8],
            keys: &VerifyingKeyCache,
            signers: &SignerCache,
        ) -> Option<SignedBy> {
            let (signer, (facts, cached)) = self.certificates.iter().find_map(|der| {
                let (facts, cached) = signers.facts(der)?;
                let named = der.get(facts.issuer.clone()) == Some(self.sid_issuer)
                    && der.get(facts.serial.clone()) == Some(self.sid_serial);
                named.then_some((*der, (facts, cached)))
            })?;
            let spki = signer.get(facts.spki.clone())?;
            let digest = Digest::from_oid(&self.digest_alg)?;
            let alg = signature_alg(&self.signature_alg, digest, facts.kind).ok()?;
            let signed = match self.signed_attrs {
                Some(attrs) => {
                    check_attributes(attrs, &digest.hash(content)).ok()??;
                    // Signed as a SET OF: the received encoding with its universal tag.
                    &build::tlv(0x31, attrs)
                }
                None => content,
            };
            keys.verify(spki, alg, signed, self.signature).ok()?;
            if !cached {
                signers.facts.insert(signer.into(), Arc::clone(&facts));
            }
            Some(SignedBy {
                certificate_der: signer.to_vec(),
                certificate_sha256: facts.sha256,
                serial_hex: facts.serial_hex.clone(),
                not_before: facts.not_before,
                not_after: facts.not_after,
                other_certificates: self
                    .certificates
                    .iter()
                    .filter(|der| **der != signer)
                    .map(|der| der.to_vec())
                    .collect(),
            })
        }
    }

    impl<'a> CertificateParts<'a> {
        fn read(der: &'a [u8]) -> der::Result<Self> {
            let mut r = SliceReader::new(der)?;
            let tbs = r.sequence(|r| -> der::Result<_> {
                let tbs = r.tlv_bytes()?;
                r.tlv_bytes()?; // signatureAlgorithm
                r.tlv_bytes()?; // signatureValue
                der::Result::Ok(tbs)
            })?;
            r.finish()?;
            let mut r = SliceReader::new(tbs)?;
            let parts = r.sequence(|r| -> der::Result<_> {
                if Tag::peek(r)? == context(0, true) {
                    r.tlv_bytes()?; // version
                }
                let serial = r.tlv_bytes()?;
                SerialNumber::<LongSerials>::from_der(serial)?;
                algorithm(r)?; // signature
                let issuer = r.tlv_bytes()?;
                let validity = r.decode()?;
                let subject = r.tlv_bytes()?;
                let spki = r.tlv_bytes()?;
                if [issuer, subject, spki]
                    .iter()
                    .any(|part| part.first() != Some(&0x30))
                {
                    return Err(Tag::Sequence.value_error().into());
                }
                while !r.is_finished() {
                    r.tlv_bytes()?; // unique identifiers, extensions
                }
                Ok(Self {
                    serial,
                    issuer,
                    validity,
                    spki,
                })
            })?;
            r.finish()?;
            Ok(parts)
        }
    }

    /// Exactly one contentType (id-data) and one messageDigest (`digest`), each one value.
    fn check_attributes(attrs: &[u8], digest: &[u8]) -> der::Result<Option<()>> {
        let mut r = SliceReader::new(attrs)?;
        let (mut content_type, mut message_digest) = (0, 0);
        while !r.is_finished() {
            let (oid, value, single) = r.sequence(|r| -> der::Result<_> {
                let oid: ObjectIdentifier = r.decode()?;
                let values = AnyRef::decode(r)?;
                if values.tag() != Tag::Set {
                    return Err(Tag::Set.value_error().into());
                }
                let mut values = SliceReader::new(values.value())?;
                let value = AnyRef::decode(&mut values)?;
                Ok((oid, value, values.is_finished()))
            })?;
            let good = match oid {
                oids::CONTENT_TYPE => {
                    content_type += 1;
                    value.tag() == Tag::ObjectIdentifier
                        && value.decode_as::<ObjectIdentifier>().ok() == Some(oids::ID_DATA)
                }
                oids::MESSAGE_DIGEST => {
                    message_digest += 1;
                    value.tag() == Tag::OctetString && value.value() == digest
                }
                _ => true,
            };
            if !good || !single {
                return Ok(None);
            }
        }
        Ok((content_type == 1 && message_digest == 1).then_some(()))
    }
}

fn detached(
    signature: &[u8],
    content: &[u8],
    keys: Option<&VerifyingKeyCache>,
) -> Result<SignedBy, CmsError> {
    if signature.len() > MAX_SIGNATURE_LEN {
        return Err(malformed(format!(
            "signature larger than {MAX_SIGNATURE_LEN} bytes"
        )));
    }
    let (sd, _) = signed_data(signature)?;
    if sd.encap_content_info.econtent.is_some() {
        return Err(malformed(
            "the signature is not detached: it carries its own content",
        ));
    }
    verify_signer(&sd, signature, content, keys)
}

/// Signed documents (profiles) larger than this are refused before parsing.
pub const MAX_SIGNED_DOCUMENT_LEN: usize = 4 * 1024 * 1024;

/// Verifies `signed`, a SignedData with its content attached (a signed `.mobileconfig`), and
/// returns the content with who signed it — what a device does before it shows a profile.
/// As with [`verify_detached`], the signer's chain is left to the caller.
pub fn verify_attached(signed: &[u8]) -> Result<(Vec<u8>, SignedBy), CmsError> {
    if signed.len() > MAX_SIGNED_DOCUMENT_LEN {
        return Err(malformed(format!(
            "signed document larger than {MAX_SIGNED_DOCUMENT_LEN} bytes"
        )));
    }
    let (sd, rules) = signed_data(signed)?;
    let content = sd
        .encap_content_info
        .econtent
        .as_ref()
        .and_then(|econtent| crate::scep::econtent_bytes(econtent, rules))
        .ok_or_else(|| malformed("the signed data carries no content"))?;
    let by = verify_signer(&sd, signed, &content, None)?;
    Ok((content, by))
}

fn signed_data(der: &[u8]) -> Result<(SignedData, EncodingRules), CmsError> {
    if der.is_empty() {
        return Err(malformed("empty signature"));
    }
    let (ci, rules) = content_info(der).map_err(|e| malformed(format!("not a CMS ContentInfo: {e}")))?;
    if ci.content_type != oids::ID_SIGNED_DATA {
        return Err(malformed(format!(
            "content type {} is not signedData",
            ci.content_type
        )));
    }
    let sd = ci
        .content
        .decode_as_encoding(rules)
        .map_err(|e| malformed(format!("not a SignedData: {e}")))?;
    Ok((sd, rules))
}

/// Checks the one signer of `sd` over `content`; `signature` is the whole encoding (some
/// signers' attribute order is recovered from it). `keys` keeps parsed signer keys.
fn verify_signer(
    sd: &SignedData,
    signature: &[u8],
    content: &[u8],
    keys: Option<&VerifyingKeyCache>,
) -> Result<SignedBy, CmsError> {
    let signer_count = sd.signer_infos.len();
    let (Some(si), 1) = (sd.signer_infos.iter().next(), signer_count) else {
        return Err(malformed(format!(
            "expected exactly one signer, found {signer_count}"
        )));
    };
    if sd.encap_content_info.econtent_type != oids::ID_DATA {
        return Err(malformed(format!(
            "the signed content type {} is not id-data",
            sd.encap_content_info.econtent_type
        )));
    }
    let signer = find_certificate(sd, &si.sid)
        .ok_or_else(|| malformed("the signer's certificate is not in the signature"))?;
    let digest = Digest::from_oid(&si.digest_alg.oid)
        .ok_or_else(|| CmsError::Unsupported(format!("digest algorithm {}", si.digest_alg.oid)))?;
    let spki = crypto::to_der(signer.tbs_certificate().subject_public_key_info())
        .map_err(|_| malformed("the signer's public key cannot be encoded"))?;
    let alg = signature_alg(&si.signature_algorithm.oid, digest, crypto::key_kind(&spki))?;
    let sig = si.signature.as_bytes();
    let verify = |msg: &[u8]| match keys {
        Some(keys) => keys.verify(&spki, alg, msg, sig).is_ok(),
        None => crypto::verify_with(&spki, alg, msg, sig).is_ok(),
    };

    match si.signed_attrs.as_ref() {
        Some(attrs) => {
            let attrs = attrs.as_slice();
            let content_type = single_value(attrs, oids::CONTENT_TYPE, "contentType")?;
            if content_type.decode_as::<ObjectIdentifier>().ok() != Some(oids::ID_DATA) {
                return Err(malformed("the contentType attribute is not id-data"));
            }
            let message_digest = single_value(attrs, oids::MESSAGE_DIGEST, "messageDigest")?
                .decode_as::<OctetString>()
                .map_err(|_| malformed("the messageDigest attribute is not an OCTET STRING"))?;
            if message_digest.as_bytes() != digest.hash(content).as_slice() {
                return Err(CmsError::Invalid(
                    "the body does not match the signed message digest".into(),
                ));
            }
            // The signature covers the DER SET OF; try the signer's order as well as the
            // sorted one (some signers do not sort).
            let mut candidates = signed_attr_candidates(attrs, signature).peekable();
            if candidates.peek().is_none() {
                return Err(malformed("the signed attributes cannot be re-encoded"));
            }
            if !candidates.any(|candidate| verify(&candidate)) {
                return Err(CmsError::Invalid(
                    "the signature over the signed attributes is not the certificate key's".into(),
                ));
            }
            signed_by(sd, signer)
        }
        None => {
            if !verify(content) {
                return Err(CmsError::Invalid(
                    "the signature over the body is not the certificate key's".into(),
                ));
            }
            signed_by(sd, signer)
        }
    }
}

/// The signature algorithm to verify with, refusing unknown ones up front (so that "does not
/// verify" means what it says). Some signers name only the key type.
fn signature_alg(oid: &ObjectIdentifier, digest: Digest, kind: KeyKind) -> Result<VerifyAlg, CmsError> {
    let rsa_key = match kind {
        KeyKind::Rsa { .. } => true,
        KeyKind::EcP256 | KeyKind::EcP384 => false,
        KeyKind::Other => {
            return Err(CmsError::Unsupported(
                "the signer's key is neither RSA nor ECDSA P-256/P-384".into(),
            ));
        }
    };
    let (oid, rsa_alg) = match (*oid, digest) {
        (oids::EC_PUBLIC_KEY, Digest::Sha256) => (oids::ECDSA_WITH_SHA256, false),
        (oids::EC_PUBLIC_KEY, Digest::Sha384) => (oids::ECDSA_WITH_SHA384, false),
        (
            oids::RSA_ENCRYPTION
            | oids::SHA1_WITH_RSA
            | oids::SHA256_WITH_RSA
            | oids::SHA384_WITH_RSA
            | oids::SHA512_WITH_RSA,
            _,
        ) => (*oid, true),
        (oids::ECDSA_WITH_SHA256 | oids::ECDSA_WITH_SHA384, _) => (*oid, false),
        _ => {
            return Err(CmsError::Unsupported(format!(
                "signature algorithm {oid} with {digest:?}"
            )));
        }
    };
    if rsa_alg != rsa_key {
        return Err(CmsError::Invalid(
            "the signer certificate's key is not of the signature's type".into(),
        ));
    }
    VerifyAlg::select(&oid, Some(digest), kind).map_err(|e| CmsError::Unsupported(e.into()))
}

/// The one value of the one attribute `oid`: a repeated attribute or several values would
/// leave it ambiguous what was signed.
fn single_value<'a>(attrs: &'a [Attribute], oid: ObjectIdentifier, name: &str) -> Result<&'a Any, CmsError> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    let (Some(attr), None) = (found.next(), found.next()) else {
        return Err(malformed(format!(
            "there must be exactly one {name} signed attribute"
        )));
    };
    let mut values = attr.values.iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value),
        _ => Err(malformed(format!(
            "the {name} attribute must have exactly one value"
        ))),
    }
}

fn signed_by(sd: &SignedData, signer: &crate::scep::asn1::Certificate) -> Result<SignedBy, CmsError> {
    let encode = |cert: &crate::scep::asn1::Certificate| {
        cert.to_der()
            .map_err(|e| malformed(format!("a certificate cannot be re-encoded: {e}")))
    };
    let certificate_der = encode(signer)?;
    let mut other_certificates = Vec::new();
    for choice in sd.certificates.iter().flat_map(|set| set.iter()) {
        if let CertificateChoices::Certificate(cert) = choice {
            let der = encode(cert)?;
            if der != certificate_der {
                other_certificates.push(der);
            }
        }
    }
    let validity = signer.tbs_certificate().validity();
    Ok(SignedBy {
        certificate_sha256: crate::sha256(&certificate_der),
        certificate_der,
        serial_hex: hex::encode(signer.tbs_certificate().serial_number().as_bytes()),
        not_before: instant(validity.not_before)?,
        not_after: instant(validity.not_after)?,
        other_certificates,
    })
}

fn instant(t: x509_cert::time::Time) -> Result<time::OffsetDateTime, CmsError> {
    i64::try_from(t.to_unix_duration().as_secs())
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or_else(|| malformed("the signer's validity is out of range"))
}

/// Signs configuration profiles (`.mobileconfig`) so that devices show them as verified: a
/// SignedData with the profile attached, SHA-256, and the whole chain included.
pub struct ProfileSigner {
    /// Leaf first.
    chain: Vec<x509_cert::Certificate>,
    keys: CaKeys,
    signature_algorithm: AlgorithmIdentifierOwned,
}

impl fmt::Debug for ProfileSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = self
            .chain
            .first()
            .map(|c| c.tbs_certificate().subject().to_string());
        f.debug_struct("ProfileSigner")
            .field("subject", &subject)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ProfileSigner {
    /// `chain_pem` is the signing certificate followed by its intermediates; `key_pem` its
    /// key (PKCS#8, PKCS#1 or SEC1; RSA or ECDSA P-256), checked to belong to the leaf.
    pub fn from_pem(chain_pem: &str, key_pem: &SecretPem) -> Result<Self, CertError> {
        let pem_err = |reason: String| CertError::Pem {
            what: "certificate chain",
            reason,
        };
        let ders = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(e.to_string()))?;
        if ders.is_empty() {
            return Err(pem_err("no CERTIFICATE block found".into()));
        }
        let chain = ders
            .iter()
            .map(|der| x509_cert::Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(|e| CertError::Pem {
            what: "private key",
            reason: e.to_string(),
        })?;
        let keys = CaKeys::from_pkcs8(&pkcs8(&key)?)?;
        let signature_algorithm = keys.certificate_signature_algorithm()?;

        // The leaf must carry this key's public half (whatever encoding the key came in).
        let leaf_key = chain.first().and_then(|leaf| {
            leaf.tbs_certificate()
                .subject_public_key_info()
                .subject_public_key
                .as_bytes()
        });
        if leaf_key != Some(keys.public_key_bits().as_slice()) {
            return Err(CertError::KeyMismatch);
        }

        Ok(Self {
            chain,
            keys,
            signature_algorithm,
        })
    }

    /// A DER ContentInfo(SignedData) holding `content` (eContent id-data), signed with SHA-256
    /// over the contentType and messageDigest attributes, with every chain certificate.
    pub fn sign(&self, content: &[u8]) -> Result<Vec<u8>, CertError> {
        self.signed_data(content, true)
    }

    /// The same signature with the content left out (detached), as Apple devices put in the
    /// `Mdm-Signature` header: what the fleet simulator and benchmarks sign with.
    pub fn sign_detached(&self, content: &[u8]) -> Result<Vec<u8>, CertError> {
        self.signed_data(content, false)
    }

    fn signed_data(&self, content: &[u8], attached: bool) -> Result<Vec<u8>, CertError> {
        let Some(leaf) = self.chain.first() else {
            return Err(CertError::Encode("no signing certificate".into()));
        };
        let certs: Vec<&x509_cert::Certificate> = self.chain.iter().collect();
        build::signed_data_as(
            leaf,
            &certs,
            Digest::Sha256,
            self.signature_algorithm.clone(),
            Vec::new(),
            content,
            attached,
            |signed_attrs| self.keys.sign(Digest::Sha256, signed_attrs),
        )
    }
}

/// The key as PKCS#8, which is what [`CaKeys`] loads (operators' keys are often PKCS#1 or SEC1).
fn pkcs8(key: &PrivateKeyDer<'_>) -> Result<Zeroizing<Vec<u8>>, CertError> {
    let unusable = |what: &str| CertError::Key(format!("not a usable {what} key"));
    match key {
        PrivateKeyDer::Pkcs8(k) => Ok(Zeroizing::new(k.secret_pkcs8_der().to_vec())),
        PrivateKeyDer::Pkcs1(k) => {
            let pair = RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(|_| unusable("RSA"))?;
            let der: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| unusable("RSA"))?;
            Ok(Zeroizing::new(der.as_ref().to_vec()))
        }
        PrivateKeyDer::Sec1(k) => {
            let pair =
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, k.secret_sec1_der())
                    .map_err(|_| unusable("ECDSA P-256"))?;
            let doc = pair.to_pkcs8v1().map_err(|_| unusable("ECDSA P-256"))?;
            Ok(Zeroizing::new(doc.as_ref().to_vec()))
        }
        _ => Err(CertError::Key("unsupported private key format".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use der::asn1::SetOfVec;
    use rand::{Rng, SeedableRng};
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
        PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, RsaKeySize, SerialNumber,
    };
    use time::{Duration, OffsetDateTime};

    use super::*;
    use crate::scep::asn1;
    use crate::test_support::openssl;
    use crate::{CertificateAuthority, ServerIdentity};

    /// A request body as a device sends it (CRLF included: the signature is over raw bytes).
    const BODY: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<plist version=\"1.0\"><dict>\
        <key>MessageType</key><string>Authenticate</string></dict></plist>\n";

    struct Signer {
        key_pem: String,
        cert_pem: String,
        cert_der: Vec<u8>,
    }

    /// The appliance's shape, at the real time (OpenSSL checks validity against the clock):
    /// an RSA root, the ECDSA issuing CA, and device certificates from the issuing CA.
    struct Pki {
        root: CertificateAuthority,
        issuing: CertificateAuthority,
        rsa: Signer,
        ec: Signer,
        /// Same issuer and serial as `rsa`, another RSA key.
        rsa_impostor: Signer,
        /// Same issuer and serial as `rsa`, an EC key.
        ec_impostor: Signer,
    }

    const RSA_SERIAL: &[u8] = &[0x11, 0x22, 0x33, 0x44];

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn device(issuing: &CertificateAuthority, key: KeyPair, cn: &str, serial: &[u8]) -> Signer {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.not_before = now() - Duration::days(1);
        params.not_after = now() + Duration::days(365);
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params.use_authority_key_identifier_extension = true;
        // Writes a subjectKeyIdentifier too (for `-keyid`).
        params.is_ca = IsCa::ExplicitNoCa;
        let issuer = Issuer::from_ca_cert_der(issuing.certificate_der(), issuing.rcgen_key()).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        Signer {
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
        }
    }

    fn rsa_key() -> KeyPair {
        KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap()
    }

    fn ec_key() -> KeyPair {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn pki() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| {
            let root = CertificateAuthority::generate("cms-test", now() - Duration::days(2)).unwrap();
            let issuing = root
                .generate_issuing("cms-test", now() - Duration::days(2))
                .unwrap();
            let rsa = device(&issuing, rsa_key(), "rsa device", RSA_SERIAL);
            let ec = device(&issuing, ec_key(), "ec device", &[0x55, 0x66]);
            let rsa_impostor = device(&issuing, rsa_key(), "rsa device", RSA_SERIAL);
            let ec_impostor = device(&issuing, ec_key(), "rsa device", RSA_SERIAL);
            Pki {
                root,
                issuing,
                rsa,
                ec,
                rsa_impostor,
                ec_impostor,
            }
        })
    }

    /// `openssl cms -sign` of `body` by `signer`, detached unless `extra` says otherwise.
    fn openssl_sign(signer: &Signer, body: &[u8], extra: &[&str]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("body.bin"), body).unwrap();
        std::fs::write(d.join("cert.pem"), &signer.cert_pem).unwrap();
        std::fs::write(d.join("key.pem"), &signer.key_pem).unwrap();
        std::fs::write(d.join("issuing.pem"), pki().issuing.certificate_pem()).unwrap();
        let mut args = vec![
            "cms", "-sign", "-binary", "-in", "body.bin", "-signer", "cert.pem", "-inkey", "key.pem",
            "-outform", "DER", "-out", "sig.der",
        ];
        args.extend_from_slice(extra);
        let (ok, out) = openssl(d, &args);
        assert!(ok, "openssl cms -sign {extra:?}: {out}");
        std::fs::read(d.join("sig.der")).unwrap()
    }

    /// `sig` re-encoded in DER with its certificate set replaced by `certs`.
    fn with_certificates(sig: &[u8], certs: &[&[u8]]) -> Vec<u8> {
        let (ci, rules) = content_info(sig).unwrap();
        let mut sd: SignedData = ci.content.decode_as_encoding(rules).unwrap();
        let mut set = SetOfVec::new();
        for cert in certs {
            set.insert(CertificateChoices::Certificate(
                asn1::Certificate::from_der(cert).unwrap(),
            ))
            .unwrap();
        }
        sd.certificates = Some(set);
        ::cms::content_info::ContentInfo {
            content_type: ci.content_type,
            content: Any::encode_from(&sd).unwrap(),
        }
        .to_der()
        .unwrap()
    }

    fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[at] ^= 0x01;
        out
    }

    #[test]
    fn openssl_detached_signatures_verify() {
        let p = pki();
        let cases: &[(&Signer, &[&str])] = &[
            (&p.rsa, &[]),
            (&p.rsa, &["-md", "sha1"]),
            (&p.rsa, &["-md", "sha256"]),
            (&p.rsa, &["-md", "sha384"]),
            (&p.rsa, &["-md", "sha512"]),
            (&p.rsa, &["-noattr"]),
            (&p.rsa, &["-noattr", "-md", "sha1"]),
            (&p.rsa, &["-keyid"]),
            (&p.ec, &[]),
            (&p.ec, &["-md", "sha384"]),
            (&p.ec, &["-noattr"]),
            (&p.ec, &["-keyid", "-noattr"]),
        ];
        for (signer, extra) in cases {
            let sig = openssl_sign(signer, BODY, extra);
            let by = verify_detached(&sig, BODY).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            assert_eq!(by.certificate_der, signer.cert_der, "{extra:?}");
            assert!(by.other_certificates.is_empty(), "{extra:?}");
            assert!(
                p.issuing.issued_and_valid(&by.certificate_der, now()),
                "{extra:?}"
            );

            let mut altered = BODY.to_vec();
            altered[BODY.len() / 2] ^= 0x20;
            for content in [&altered[..], &BODY[..BODY.len() - 1], b""] {
                assert!(
                    matches!(verify_detached(&sig, content), Err(CmsError::Invalid(_))),
                    "{extra:?}: altered content accepted"
                );
            }
        }
    }

    /// The in-place reader of `DetachedVerifier` gives what the full decoder gives, for every
    /// shape it takes; the shapes it leaves (a signer named by key identifier) go to the full
    /// decoder and verify the same. Negative cases: `the_key_keeping_verifier_decides_like_the_plain_one` and
    /// this test run through both paths.
    #[test]
    fn signatures_read_in_place_verify_as_the_full_decoder_verifies_them() {
        let p = pki();
        let serials: [&[u8]; 3] = [&[0x7f, 0xff], &[0x80, 0x00, 0x01], &[0xc3; 20]];
        let by_serial: Vec<Signer> = serials
            .iter()
            .map(|serial| device(&p.issuing, rsa_key(), "serial", serial))
            .collect();
        let mut cases: Vec<(&Signer, &[&str], bool)> = vec![
            (&p.rsa, &[], true),
            (&p.rsa, &["-md", "sha1"], true),
            (&p.rsa, &["-md", "sha512"], true),
            (&p.rsa, &["-noattr"], true),
            (&p.ec, &[], true),
            (&p.ec, &["-noattr"], true),
            (&p.rsa, &["-keyid"], false),
        ];
        cases.extend(by_serial.iter().map(|s| (s, &[][..], true)));
        let verifier = DetachedVerifier::new(8);
        for (signer, extra, in_place) in cases {
            let sig = openssl_sign(signer, BODY, extra);
            let full = verify_detached(&sig, BODY).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            let read = borrowed::Detached::read(&sig)
                .and_then(|d| d.verify(BODY, &verifier.keys, &verifier.signers));
            assert_eq!(read.as_ref(), in_place.then_some(&full), "{extra:?}");
            assert_eq!(verifier.verify(&sig, BODY).unwrap(), full, "{extra:?}");
            assert!(
                borrowed::Detached::read(&sig)
                    .and_then(|d| d.verify(b"other", &verifier.keys, &verifier.signers))
                    .is_none()
            );
        }
        // With the chain in the set, the signer is still found and the rest reported.
        let sig = openssl_sign(&p.rsa, BODY, &["-certfile", "issuing.pem"]);
        let full = verify_detached(&sig, BODY).unwrap();
        assert_eq!(full.other_certificates.len(), 1);
        let read =
            borrowed::Detached::read(&sig).and_then(|d| d.verify(BODY, &verifier.keys, &verifier.signers));
        assert_eq!(read, Some(full));
        // An attached signature, a BER one and trailing bytes are left to the full decoder.
        let attached = openssl_sign(&p.rsa, BODY, &["-nodetach"]);
        assert!(borrowed::Detached::read(&attached).is_none());
        assert!(borrowed::Detached::read(&indefinite(&sig)).is_none());
        let mut trailing = sig.clone();
        trailing.push(0);
        assert!(borrowed::Detached::read(&trailing).is_none());
        // Every truncation and every flipped byte, no panic: the same verdict either way,
        // except for flips inside the certificate's fields the reader does not decode — and
        // then the certificate it reports is not the one issued, which the caller refuses.
        let sig = openssl_sign(&p.rsa, BODY, &[]);
        let altered = (0..sig.len())
            .map(|n| sig[..n].to_vec())
            .chain((0..sig.len()).map(|i| flipped(&sig, i)));
        let mut only_in_place = 0;
        for bad in altered {
            match (verifier.verify(&bad, BODY), verify_detached(&bad, BODY)) {
                (Ok(read), Err(_)) => {
                    assert_ne!(read.certificate_der, p.rsa.cert_der);
                    only_in_place += 1;
                }
                (read, full) => assert_eq!(read.ok(), full.ok()),
            }
        }
        assert!(only_in_place < 100, "{only_in_place}");
    }

    /// The identity check looks a signer up by serial number in the registry, which is keyed
    /// as `inspect_der` reads it: the same hex whatever the serial's first bit (a DER INTEGER
    /// with it set gets a leading zero byte) and however long it is. Its validity period reads
    /// the same too (the command channel checks it from the certificate).
    #[test]
    fn the_signers_serial_and_validity_read_as_the_inspector_reads_them() {
        let p = pki();
        let serials: [&[u8]; 4] = [&[0x01], &[0x7f, 0xff], &[0x80, 0x00, 0x01], &[0xc3; 20]];
        for serial in serials {
            let signer = device(&p.issuing, ec_key(), "serial", serial);
            let by = verify_detached(&openssl_sign(&signer, BODY, &[]), BODY).unwrap();
            let info = crate::inspect_der(&signer.cert_der).unwrap();
            let inspected = info.serial_hex.clone();
            assert_eq!(by.serial_hex, inspected, "{serial:02x?}");
            assert_eq!((by.not_before, by.not_after), (info.not_before, info.not_after));
            assert_eq!(
                crate::serial_and_validity(&signer.cert_der).unwrap(),
                crate::SerialAndValidity {
                    serial_hex: inspected.clone(),
                    not_before: info.not_before,
                    not_after: info.not_after,
                },
                "{serial:02x?}"
            );
            // The serial asked for, with the sign byte DER needs when the first bit is set.
            let expected = if serial[0] & 0x80 != 0 {
                format!("00{}", hex::encode(serial))
            } else {
                hex::encode(serial)
            };
            assert_eq!(inspected, expected);
        }
        assert!(crate::serial_and_validity(b"not a certificate").is_err());
    }

    /// `der` (a ContentInfo(SignedData)) with indefinite lengths on its three outer levels,
    /// as streaming encoders write it.
    fn indefinite(der: &[u8]) -> Vec<u8> {
        let ci = ::cms::content_info::ContentInfo::from_der(der).unwrap();
        let mut out = vec![0x30, 0x80];
        out.extend(oids::ID_SIGNED_DATA.to_der().unwrap());
        out.extend([0xa0, 0x80, 0x30, 0x80]);
        out.extend_from_slice(ci.content.value());
        out.extend([0; 6]);
        out
    }

    #[test]
    fn ber_is_read() {
        let p = pki();
        for (signer, extra) in [(&p.rsa, &[][..]), (&p.ec, &["-noattr"][..])] {
            let ber = indefinite(&openssl_sign(signer, BODY, extra));
            let by = verify_detached(&ber, BODY).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
            assert_eq!(by.certificate_der, signer.cert_der);
            assert!(matches!(
                verify_detached(&ber, b"other"),
                Err(CmsError::Invalid(_))
            ));
        }
    }

    #[test]
    fn the_other_certificates_are_returned() {
        let p = pki();
        let sig = openssl_sign(&p.ec, BODY, &["-certfile", "issuing.pem"]);
        let by = verify_detached(&sig, BODY).unwrap();
        assert_eq!(by.certificate_der, p.ec.cert_der);
        assert_eq!(by.other_certificates, vec![p.issuing.certificate_der().to_vec()]);
    }

    #[test]
    fn a_swapped_certificate_is_refused() {
        let p = pki();
        for extra in [&[][..], &["-noattr"][..]] {
            let sig = openssl_sign(&p.rsa, BODY, extra);
            // The re-encoding itself changes nothing that matters.
            assert!(verify_detached(&with_certificates(&sig, &[&p.rsa.cert_der]), BODY).is_ok());
            for impostor in [&p.rsa_impostor, &p.ec_impostor] {
                let swapped = with_certificates(&sig, &[&impostor.cert_der]);
                let err = verify_detached(&swapped, BODY).unwrap_err();
                assert!(matches!(err, CmsError::Invalid(_)), "{extra:?}: {err}");
            }
            // A certificate that is not the signer's at all.
            let missing = with_certificates(&sig, &[&p.ec.cert_der]);
            assert!(matches!(
                verify_detached(&missing, BODY),
                Err(CmsError::Malformed(_))
            ));
        }
    }

    #[test]
    fn the_key_keeping_verifier_decides_like_the_plain_one() {
        let p = pki();
        // Room for two keys: the cases below use four (RSA, EC and both impostors), so keys
        // are evicted and parsed again along the way.
        let verifier = DetachedVerifier::new(2);
        let mut cases: Vec<(Vec<u8>, &[u8])> = Vec::new();
        for signer in [&p.rsa, &p.ec] {
            for extra in [&[][..], &["-noattr"][..], &["-md", "sha384"][..]] {
                let sig = openssl_sign(signer, BODY, extra);
                cases.push((flipped(&sig, sig.len() - 1), BODY));
                cases.push((sig.clone(), b"another body"));
                for impostor in [&p.rsa_impostor, &p.ec_impostor] {
                    cases.push((with_certificates(&sig, &[&impostor.cert_der]), BODY));
                }
                cases.push((sig, BODY));
            }
        }
        // Round two finds the signers' certificates (and keys) kept: the whole result agrees.
        let outcome = |r: Result<SignedBy, CmsError>| r.map_err(|e| std::mem::discriminant(&e));
        let mut accepted = 0;
        for round in 0..2 {
            for (sig, content) in &cases {
                let expected = outcome(verify_detached(sig, content));
                accepted += usize::from(expected.is_ok());
                assert_eq!(outcome(verifier.verify(sig, content)), expected, "round {round}");
            }
        }
        assert_eq!(accepted, 2 * 6, "every unaltered signature verifies");
        assert!(verifier.keys.len() <= 2 && verifier.signers.len() <= 2);
        // A key and its certificate are kept only once a signature made with it verified.
        let fresh = DetachedVerifier::new(2);
        let sig = openssl_sign(&p.rsa, BODY, &[]);
        assert!(fresh.verify(&flipped(&sig, sig.len() - 1), BODY).is_err());
        assert!(fresh.verify(&sig, b"another body").is_err());
        let impostor = with_certificates(&sig, &[&p.rsa_impostor.cert_der]);
        assert!(fresh.verify(&impostor, BODY).is_err());
        assert_eq!((fresh.keys.len(), fresh.signers.len()), (0, 0));
        assert!(fresh.verify(&sig, BODY).is_ok());
        assert_eq!((fresh.keys.len(), fresh.signers.len()), (1, 1));
        // Kept, the certificate vouches for nothing: another key's signature with it, another
        // body, or the impostor's certificate (same issuer and serial) in its place still fail.
        assert!(fresh.verify(&impostor, BODY).is_err());
        let by_impostor = openssl_sign(&p.rsa_impostor, BODY, &[]);
        assert!(
            fresh
                .verify(&with_certificates(&by_impostor, &[&p.rsa.cert_der]), BODY)
                .is_err()
        );
        assert!(fresh.verify(&sig, b"another body").is_err());
        assert!(fresh.verify(&flipped(&sig, sig.len() - 1), BODY).is_err());
        assert_eq!(
            fresh.verify(&sig, BODY).unwrap(),
            verify_detached(&sig, BODY).unwrap()
        );
    }

    #[test]
    fn an_attached_signature_is_refused() {
        let sig = openssl_sign(&pki().rsa, BODY, &["-nodetach"]);
        let err = verify_detached(&sig, BODY).unwrap_err();
        assert!(matches!(err, CmsError::Malformed(_)), "{err}");
        assert!(err.to_string().contains("not detached"), "{err}");
    }

    #[test]
    fn attached_content_is_read_and_checked() {
        // OpenSSL's attached signature (the oracle) and ours give back the content.
        let sig = openssl_sign(&pki().rsa, BODY, &["-nodetach"]);
        let (content, by) = verify_attached(&sig).unwrap();
        assert_eq!(content, BODY);
        assert_eq!(by.certificate_der, pki().rsa.cert_der);
        let signer =
            ProfileSigner::from_pem(&pki().ec.cert_pem, &SecretPem::new(pki().ec.key_pem.clone())).unwrap();
        assert_eq!(verify_attached(&signer.sign(BODY).unwrap()).unwrap().0, BODY);
        // A detached signature has nothing to give; a changed content byte does not verify.
        assert!(matches!(
            verify_attached(&openssl_sign(&pki().rsa, BODY, &[])),
            Err(CmsError::Malformed(_))
        ));
        let mut tampered = sig.clone();
        let at = tampered.windows(BODY.len()).position(|w| w == BODY).unwrap();
        tampered[at] ^= 1;
        assert!(matches!(verify_attached(&tampered), Err(CmsError::Invalid(_))));
        for cut in [0, 1, 10, sig.len() / 2, sig.len() - 1] {
            assert!(verify_attached(&sig[..cut]).is_err());
        }
    }

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        let good = openssl_sign(&pki().rsa, BODY, &[]);
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x30],
            vec![0x30, 0x00],
            vec![0x30, 0x80],
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06],
            vec![0x30, 0x89, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            b"MIIB not base64-decoded".to_vec(),
            vec![0u8; 64],
            vec![0u8; MAX_SIGNATURE_LEN + 1],
            [good.as_slice(), &vec![0u8; MAX_SIGNATURE_LEN]].concat(),
            [good.as_slice(), &[0]].concat(),
            // A degenerate SignedData (no signer at all).
            build::degenerate(&[&pki().rsa.cert_der]).unwrap(),
        ];
        for case in &cases {
            assert!(
                matches!(verify_detached(case, BODY), Err(CmsError::Malformed(_))),
                "{:02x?}",
                &case[..case.len().min(16)]
            );
        }
        for len in 0..good.len() {
            assert!(verify_detached(&good[..len], BODY).is_err(), "truncated to {len}");
        }
        for at in 0..good.len() {
            let _ = verify_detached(&flipped(&good, at), BODY);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(5652);
        for _ in 0..1000 {
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
            let _ = verify_detached(&m, BODY);
        }
    }

    #[test]
    fn a_flipped_signature_byte_is_refused() {
        let p = pki();
        for signer in [&p.rsa, &p.ec] {
            for extra in [&[][..], &["-noattr"][..]] {
                let sig = openssl_sign(signer, BODY, extra);
                // The signature value is the last element of a DER SignerInfo without
                // unsigned attributes: its last byte is the message's last byte.
                let err = verify_detached(&flipped(&sig, sig.len() - 1), BODY).unwrap_err();
                assert!(matches!(err, CmsError::Invalid(_)), "{extra:?}: {err}");
            }
        }
    }

    // ------------------------------------------------------------------ profile signing

    /// Checks `signed` with `openssl cms -verify` and `openssl smime -verify` against
    /// `root_pem`; returns whether both accepted it, and asserts they output `content`.
    fn openssl_verifies(signed: &[u8], root_pem: &str, content: &[u8]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("signed.der"), signed).unwrap();
        std::fs::write(d.join("root.pem"), root_pem).unwrap();
        let mut all = true;
        for tool in ["cms", "smime"] {
            let out_name = format!("{tool}.out");
            let (ok, text) = openssl(
                d,
                &[
                    tool,
                    "-verify",
                    "-binary",
                    "-inform",
                    "DER",
                    "-in",
                    "signed.der",
                    "-CAfile",
                    "root.pem",
                    "-purpose",
                    "any",
                    "-out",
                    &out_name,
                ],
            );
            if ok {
                assert_eq!(
                    std::fs::read(d.join(&out_name)).unwrap(),
                    content,
                    "{tool}: {text}"
                );
            }
            all &= ok;
        }
        all
    }

    const PROFILE: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \
        \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
        <plist version=\"1.0\"><dict><key>PayloadType</key><string>Configuration</string>\
        </dict></plist>\r\n";

    fn check_signed_profile(signer: &ProfileSigner, root_pem: &str, sig_alg: ObjectIdentifier, certs: usize) {
        let signed = signer.sign(PROFILE).unwrap();
        assert!(openssl_verifies(&signed, root_pem, PROFILE));

        let ci = ::cms::content_info::ContentInfo::from_der(&signed).unwrap();
        let sd: SignedData = ci.content.decode_as().unwrap();
        let econtent = sd.encap_content_info.econtent.as_ref().unwrap();
        assert_eq!(econtent.decode_as::<OctetString>().unwrap().as_bytes(), PROFILE);
        assert_eq!(sd.encap_content_info.econtent_type, oids::ID_DATA);
        assert_eq!(sd.certificates.as_ref().map(|c| c.len()), Some(certs));
        let si = sd.signer_infos.iter().next().unwrap();
        assert_eq!(si.digest_alg.oid, oids::SHA256);
        assert_eq!(si.signature_algorithm.oid, sig_alg);
        if sig_alg == oids::ECDSA_WITH_SHA256 {
            assert!(si.signature_algorithm.parameters.is_none());
        }

        // Tampering with the content or the signature is noticed.
        let at = signed.windows(PROFILE.len()).position(|w| w == PROFILE).unwrap();
        assert!(!openssl_verifies(&flipped(&signed, at + 60), root_pem, PROFILE));
        assert!(!openssl_verifies(
            &flipped(&signed, signed.len() - 1),
            root_pem,
            PROFILE
        ));
        // Attached, so not an Mdm-Signature.
        assert!(matches!(
            verify_detached(&signed, PROFILE),
            Err(CmsError::Malformed(_))
        ));

        // The detached form (an Mdm-Signature): ours and OpenSSL's verifiers accept it.
        let detached = signer.sign_detached(PROFILE).unwrap();
        assert!(!detached.windows(PROFILE.len()).any(|w| w == PROFILE));
        let by = verify_detached(&detached, PROFILE).unwrap();
        assert_eq!(by.certificate_der, signer.chain[0].to_der().unwrap());
        assert!(matches!(
            verify_detached(&detached, b"another body"),
            Err(CmsError::Invalid(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("sig.der"), &detached).unwrap();
        std::fs::write(d.join("body"), PROFILE).unwrap();
        std::fs::write(d.join("root.pem"), root_pem).unwrap();
        let (ok, text) = openssl(
            d,
            &[
                "cms", "-verify", "-binary", "-inform", "DER", "-in", "sig.der", "-content", "body",
                "-CAfile", "root.pem", "-purpose", "any", "-out", "out",
            ],
        );
        assert!(ok, "{text}");
    }

    #[test]
    fn profiles_signed_by_the_tls_identity_verify_with_openssl() {
        // The appliance's TLS certificate: ECDSA P-256 under the RSA root.
        let root = &pki().root;
        let identity = ServerIdentity::new(["mdm.example.test"]).unwrap();
        let tls = root.issue_server_certificate(&identity, now()).unwrap();
        let signer = ProfileSigner::from_pem(&tls.cert_pem, &tls.key_pem).unwrap();
        check_signed_profile(&signer, root.certificate_pem(), oids::ECDSA_WITH_SHA256, 1);
        assert!(format!("{signer:?}").contains("mdm.example.test"));
    }

    #[test]
    fn profiles_signed_by_an_rsa_leaf_carry_the_intermediate() {
        let p = pki();
        let chain = format!("{}{}", p.rsa.cert_pem, p.issuing.certificate_pem());
        let signer = ProfileSigner::from_pem(&chain, &SecretPem::new(p.rsa.key_pem.clone())).unwrap();
        check_signed_profile(&signer, p.root.certificate_pem(), oids::SHA256_WITH_RSA, 2);
        // Without the intermediate, OpenSSL cannot reach the root.
        let alone = ProfileSigner::from_pem(&p.rsa.cert_pem, &SecretPem::new(p.rsa.key_pem.clone())).unwrap();
        let signed = alone.sign(PROFILE).unwrap();
        assert!(!openssl_verifies(&signed, p.root.certificate_pem(), PROFILE));
    }

    #[test]
    fn profile_signer_keys_are_checked() {
        let p = pki();
        let key = |pem: &str| SecretPem::new(pem.to_owned());
        assert!(matches!(
            ProfileSigner::from_pem(&p.rsa.cert_pem, &key(&p.ec.key_pem)),
            Err(CertError::KeyMismatch)
        ));
        assert!(matches!(
            ProfileSigner::from_pem(&p.rsa.cert_pem, &key(&p.rsa_impostor.key_pem)),
            Err(CertError::KeyMismatch)
        ));
        // The leaf comes first.
        let reversed = format!("{}{}", p.issuing.certificate_pem(), p.rsa.cert_pem);
        assert!(ProfileSigner::from_pem(&reversed, &key(&p.rsa.key_pem)).is_err());
        assert!(matches!(
            ProfileSigner::from_pem("", &key(&p.rsa.key_pem)),
            Err(CertError::Pem { .. })
        ));
        assert!(ProfileSigner::from_pem(&p.rsa.cert_pem, &key("not a key")).is_err());
        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let p384_cert = device(&p.issuing, p384, "p384", &[0x77]);
        assert!(matches!(
            ProfileSigner::from_pem(&p384_cert.cert_pem, &key(&p384_cert.key_pem)),
            Err(CertError::Key(_))
        ));

        // Traditional key encodings (PKCS#1, SEC1), as operators' files often are.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("rsa.pem"), &p.rsa.key_pem).unwrap();
        std::fs::write(d.join("ec.pem"), &p.ec.key_pem).unwrap();
        let (ok, out) = openssl(d, &["rsa", "-in", "rsa.pem", "-traditional", "-out", "rsa1.pem"]);
        assert!(ok, "{out}");
        let (ok, out) = openssl(d, &["ec", "-in", "ec.pem", "-out", "sec1.pem"]);
        assert!(ok, "{out}");
        for (file, header, signer) in [
            ("rsa1.pem", "BEGIN RSA PRIVATE KEY", &p.rsa),
            ("sec1.pem", "BEGIN EC PRIVATE KEY", &p.ec),
        ] {
            let pem = std::fs::read_to_string(d.join(file)).unwrap();
            assert!(pem.contains(header), "{pem}");
            let chain = format!("{}{}", signer.cert_pem, p.issuing.certificate_pem());
            let profile_signer = ProfileSigner::from_pem(&chain, &key(&pem)).unwrap();
            let signed = profile_signer.sign(PROFILE).unwrap();
            assert!(
                openssl_verifies(&signed, p.root.certificate_pem(), PROFILE),
                "{file}"
            );
        }
    }
}
