//! Building CMS structures: signed messages, envelopes, degenerate certificate bundles.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::EncryptedContentInfo;
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{Null, OctetString, SetOfVec};
use der::{Any, Tagged};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::certificate::{CertificateInner, Profile};
use zeroize::Zeroizing;

use super::asn1;
use super::symmetric::ContentCipher;
use crate::CertError;
use crate::crypto::{Digest, rsa_encrypt, to_der};
use crate::oids;

fn enc_err(e: der::Error) -> CertError {
    CertError::Encode(e.to_string())
}

pub(crate) fn alg_with_null(oid: const_oid::ObjectIdentifier) -> Result<AlgorithmIdentifierOwned, CertError> {
    Ok(AlgorithmIdentifierOwned {
        oid,
        parameters: Some(Any::encode_from(&Null).map_err(enc_err)?),
    })
}

/// An attribute with a single value.
pub(crate) fn attribute<T: Tagged + der::EncodeValue>(
    oid: const_oid::ObjectIdentifier,
    value: &T,
) -> Result<Attribute, CertError> {
    let mut values = SetOfVec::new();
    values
        .insert(Any::encode_from(value).map_err(enc_err)?)
        .map_err(enc_err)?;
    Ok(Attribute { oid, values })
}

pub(crate) fn printable(oid: const_oid::ObjectIdentifier, value: &str) -> Result<Attribute, CertError> {
    let s = der::asn1::PrintableStringRef::new(value).map_err(enc_err)?;
    attribute(oid, &s)
}

pub(crate) fn octets(oid: const_oid::ObjectIdentifier, value: &[u8]) -> Result<Attribute, CertError> {
    attribute(oid, &OctetString::new(value).map_err(enc_err)?)
}

pub(crate) fn issuer_and_serial(cert: &x509_cert::Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.tbs_certificate().issuer().clone(),
        serial_number: cert.tbs_certificate().serial_number().clone(),
    }
}

/// A DER TLV with a one-byte tag.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A ContentInfo(SignedData) signed by `signer_cert`'s RSA key through `sign`, over `content`
/// (eContentType id-data), with `attrs` plus contentType and messageDigest as signed attributes.
/// `certs` go into the certificates field.
pub(crate) fn signed_data(
    signer_cert: &x509_cert::Certificate,
    certs: &[&x509_cert::Certificate],
    digest: Digest,
    attrs: Vec<Attribute>,
    content: &[u8],
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, CertError>,
) -> Result<Vec<u8>, CertError> {
    // SCEP replies have always said plain rsaEncryption; clients accept it.
    let signature_algorithm = alg_with_null(oids::RSA_ENCRYPTION)?;
    signed_data_as(
        signer_cert,
        certs,
        digest,
        signature_algorithm,
        attrs,
        content,
        true,
        sign,
    )
}

/// [`signed_data`] with the signer info's signatureAlgorithm given (it must match the key
/// behind `sign`: ECDSA keys need ecdsa-with-SHA*).
#[allow(clippy::too_many_arguments)] // each is one field of the SignedData; a struct would only rename them
pub(crate) fn signed_data_as(
    signer_cert: &x509_cert::Certificate,
    certs: &[&x509_cert::Certificate],
    digest: Digest,
    signature_algorithm: AlgorithmIdentifierOwned,
    mut attrs: Vec<Attribute>,
    content: &[u8],
    attached: bool,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, CertError>,
) -> Result<Vec<u8>, CertError> {
    attrs.push(attribute(oids::CONTENT_TYPE, &oids::ID_DATA)?);
    attrs.push(octets(oids::MESSAGE_DIGEST, &digest.hash(content))?);
    let signed_attrs = SetOfVec::try_from(attrs).map_err(enc_err)?;
    let signature = sign(&to_der(&signed_attrs)?)?;
    let digest_alg = alg_with_null(digest.oid())?;
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(signer_cert)),
        digest_alg: digest_alg.clone(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm,
        signature: OctetString::new(signature).map_err(enc_err)?,
        unsigned_attrs: None,
    };
    let mut cert_set = SetOfVec::new();
    for cert in certs {
        cert_set
            .insert(CertificateChoices::Certificate((*cert).clone()))
            .map_err(enc_err)?;
    }
    let mut digest_algorithms = SetOfVec::new();
    digest_algorithms.insert(digest_alg).map_err(enc_err)?;
    let mut signer_infos = SetOfVec::new();
    signer_infos.insert(signer_info).map_err(enc_err)?;
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: oids::ID_DATA,
            econtent: if attached {
                Some(Any::encode_from(&OctetString::new(content).map_err(enc_err)?).map_err(enc_err)?)
            } else {
                None
            },
        },
        certificates: Some(CertificateSet(cert_set)),
        crls: None,
        signer_infos: SignerInfos(signer_infos),
    };
    let ci = ContentInfo {
        content_type: oids::ID_SIGNED_DATA,
        content: Any::encode_from(&sd).map_err(enc_err)?,
    };
    to_der(&ci)
}

/// A ContentInfo(EnvelopedData): `plaintext` encrypted with a fresh key under `cipher`, the
/// key transported to `recipient`'s RSA key (PKCS#1 v1.5). The recipient is identified by its
/// certificate's issuer and serial, as they are (serials longer than RFC 5280 allows included:
/// the client looks for exactly these).
pub(crate) fn envelope<P: Profile>(
    recipient: &CertificateInner<P>,
    cipher: ContentCipher,
    plaintext: &[u8],
) -> Result<Vec<u8>, CertError> {
    let mut key = Zeroizing::new(vec![0u8; cipher.key_len()]);
    let mut iv = vec![0u8; cipher.iv_len()];
    rand::Rng::fill(&mut rand::rng(), key.as_mut_slice());
    rand::Rng::fill(&mut rand::rng(), iv.as_mut_slice());
    let ciphertext = cipher
        .encrypt(&key, &iv, plaintext)
        .ok_or_else(|| CertError::Encode("content encryption failed".into()))?;
    let spki_der = to_der(recipient.tbs_certificate().subject_public_key_info())?;
    let encrypted_key = rsa_encrypt(&spki_der, &key)?;
    let ktri = asn1::KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: asn1::IssuerAndSerialNumber::of(recipient).map_err(enc_err)?,
        key_enc_alg: alg_with_null(oids::RSA_ENCRYPTION)?,
        enc_key: OctetString::new(encrypted_key).map_err(enc_err)?,
    };
    let mut recip_infos = SetOfVec::new();
    recip_infos.insert(ktri).map_err(enc_err)?;
    let ed = asn1::EnvelopedData {
        version: CmsVersion::V0,
        recip_infos,
        encrypted_content: EncryptedContentInfo {
            content_type: oids::ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: cipher.oid(),
                parameters: Some(Any::encode_from(&OctetString::new(iv).map_err(enc_err)?).map_err(enc_err)?),
            },
            encrypted_content: Some(OctetString::new(ciphertext).map_err(enc_err)?),
        },
    };
    let ci = ContentInfo {
        content_type: oids::ID_ENVELOPED_DATA,
        content: Any::encode_from(&ed).map_err(enc_err)?,
    };
    to_der(&ci)
}

/// A degenerate ContentInfo(SignedData) holding `certs` in the given order (not DER-sorted:
/// clients take the first certificate as theirs).
pub(crate) fn degenerate(certs: &[&[u8]]) -> Result<Vec<u8>, CertError> {
    let mut cert_bytes = Vec::new();
    for cert in certs {
        // Each must be one well-formed certificate.
        <x509_cert::Certificate as der::Decode>::from_der(cert)
            .map_err(|e| CertError::Parse(e.to_string()))?;
        cert_bytes.extend_from_slice(cert);
    }
    let version = tlv(0x02, &[1]);
    let digest_algorithms = tlv(0x31, &[]);
    let encap = tlv(0x30, &to_der(&oids::ID_DATA)?);
    let certificates = tlv(0xa0, &cert_bytes);
    let signer_infos = tlv(0x31, &[]);
    let sd = tlv(
        0x30,
        &[version, digest_algorithms, encap, certificates, signer_infos].concat(),
    );
    let content = tlv(0xa0, &sd);
    Ok(tlv(0x30, &[to_der(&oids::ID_SIGNED_DATA)?, content].concat()))
}
