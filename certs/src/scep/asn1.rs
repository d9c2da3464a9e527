//! CMS structures (RFC 5652) as SCEP requesters use them: the `cms` crate's, except that
//! certificate serial numbers may be longer than RFC 5280's 20 octets.
//!
//! RFC 5280 binds CAs, not the throwaway self-signed certificates SCEP clients sign their
//! requests with: certmonger, for one, uses its 32-byte transaction ID as the serial. `cms`
//! hard-codes x509-cert's RFC 5280 profile, which refuses such serials, so the signer side of
//! a request (certificate set, signer identifier) and the recipient identifier of the reply's
//! envelope (which must carry that same serial: the client finds its recipient info by issuer
//! and serial) use these mirrors instead. Their encodings are the same as `cms`'s.

use std::cmp::Ordering;

use cms::cert::OtherCertificateFormat;
use cms::content_info::CmsVersion;
use cms::enveloped_data::EncryptedContentInfo;
use cms::revocation::RevocationInfoChoices;
use cms::signed_data::EncapsulatedContentInfo;
use der::asn1::{OctetString, SetOfVec};
use der::{Choice, Decode, DerOrd, Encode, Sequence, ValueOrd};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attributes;
use x509_cert::certificate::{CertificateInner, Profile};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

/// The longest serial number accepted, in octets of magnitude (one more for a sign octet).
pub(crate) const MAX_SERIAL_LEN: usize = 64;

/// x509-cert parsing profile: RFC 5280, except serial numbers of up to [`MAX_SERIAL_LEN`]
/// octets, and times re-encoded exactly as they were read (so that re-encoding a parsed
/// certificate gives back its bytes).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy, Default)]
pub(crate) struct LongSerials;

impl Profile for LongSerials {
    fn check_serial_number(serial: &SerialNumber<Self>) -> der::Result<()> {
        let bytes = serial.as_bytes();
        let magnitude = bytes.strip_prefix(&[0]).unwrap_or(bytes);
        if magnitude.len() > MAX_SERIAL_LEN {
            Err(der::ErrorKind::Overlength.into())
        } else {
            Ok(())
        }
    }

    fn time_encoding(time: Time) -> der::Result<Time> {
        Ok(time)
    }
}

/// A certificate whose serial may be up to [`MAX_SERIAL_LEN`] octets long.
pub(crate) type Certificate = CertificateInner<LongSerials>;

/// Orders values by their DER encoding (for `SET OF` and CHOICE types).
macro_rules! value_ord_by_encoding {
    ($($t:ty),+) => {$(
        impl ValueOrd for $t {
            fn value_cmp(&self, other: &Self) -> der::Result<Ordering> {
                self.to_der()?.der_cmp(&other.to_der()?)
            }
        }
    )+};
}

/// `IssuerAndSerialNumber ::= SEQUENCE { issuer Name, serialNumber CertificateSerialNumber }`
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct IssuerAndSerialNumber {
    pub issuer: Name,
    pub serial_number: SerialNumber<LongSerials>,
}

impl IssuerAndSerialNumber {
    /// The issuer and serial of `cert`, whatever profile it was parsed with.
    pub(crate) fn of<P: Profile>(cert: &CertificateInner<P>) -> der::Result<Self> {
        let tbs = cert.tbs_certificate();
        Ok(Self {
            issuer: tbs.issuer().clone(),
            serial_number: SerialNumber::from_der(&tbs.serial_number().to_der()?)?,
        })
    }
}

/// `SignerIdentifier ::= CHOICE { issuerAndSerialNumber, subjectKeyIdentifier [0] }`
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub(crate) enum SignerIdentifier {
    IssuerAndSerialNumber(IssuerAndSerialNumber),
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    SubjectKeyIdentifier(SubjectKeyIdentifier),
}

/// `SignerInfo` (RFC 5652 section 5.3).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct SignerInfo {
    pub version: CmsVersion,
    pub sid: SignerIdentifier,
    pub digest_alg: AlgorithmIdentifierOwned,
    #[asn1(
        context_specific = "0",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub signed_attrs: Option<Attributes>,
    pub signature_algorithm: AlgorithmIdentifierOwned,
    pub signature: OctetString,
    #[asn1(
        context_specific = "1",
        tag_mode = "IMPLICIT",
        constructed = "true",
        optional = "true"
    )]
    pub unsigned_attrs: Option<Attributes>,
}

/// `CertificateChoices` (RFC 5652 section 10.2.2), as far as `cms` supports them.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum CertificateChoices {
    Certificate(Certificate),
    #[asn1(context_specific = "3", tag_mode = "IMPLICIT", constructed = "true")]
    Other(OtherCertificateFormat),
}

/// `SignedData` (RFC 5652 section 5.1).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct SignedData {
    pub version: CmsVersion,
    pub digest_algorithms: SetOfVec<AlgorithmIdentifierOwned>,
    pub encap_content_info: EncapsulatedContentInfo,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub certificates: Option<SetOfVec<CertificateChoices>>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub crls: Option<RevocationInfoChoices>,
    pub signer_infos: SetOfVec<SignerInfo>,
}

/// `KeyTransRecipientInfo` (RFC 5652 section 6.2.1) with an issuerAndSerialNumber `rid`
/// (the untagged alternative of `RecipientIdentifier`, so encoded as is).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct KeyTransRecipientInfo {
    pub version: CmsVersion,
    pub rid: IssuerAndSerialNumber,
    pub key_enc_alg: AlgorithmIdentifierOwned,
    pub enc_key: OctetString,
}

/// `EnvelopedData` (RFC 5652 section 6.1) without originatorInfo and unprotectedAttrs, with
/// key-transport recipients (the untagged alternative of `RecipientInfo`). For encoding.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct EnvelopedData {
    pub version: CmsVersion,
    pub recip_infos: SetOfVec<KeyTransRecipientInfo>,
    pub encrypted_content: EncryptedContentInfo,
}

value_ord_by_encoding!(
    SignerIdentifier,
    SignerInfo,
    CertificateChoices,
    KeyTransRecipientInfo
);

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(bytes: &[u8]) -> der::Result<SerialNumber<LongSerials>> {
        let mut der = vec![0x02, u8::try_from(bytes.len()).unwrap()];
        der.extend_from_slice(bytes);
        SerialNumber::from_der(&der)
    }

    #[test]
    fn serials_up_to_64_octets_are_read() {
        assert!(serial(&[0x7f; 20]).is_ok());
        assert!(serial(&[0x7f; 32]).is_ok());
        assert!(serial(&[0x7f; 64]).is_ok());
        let mut signed = vec![0u8];
        signed.extend([0xff; 64]);
        assert!(serial(&signed).is_ok(), "64 octets with a sign octet");
        assert!(serial(&[0x7f; 65]).is_err());
        assert!(serial(&[0x7f; 120]).is_err());
        // Still an INTEGER in DER: no superfluous leading octets.
        assert!(serial(&[0x00, 0x01]).is_err());
    }
}
