//! Object identifiers used by the SCEP and issuance code.

use const_oid::ObjectIdentifier as Oid;

// CMS content types (RFC 5652).
pub(crate) const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
pub(crate) const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
pub(crate) const ID_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");

// CMS / PKCS#9 attributes.
pub(crate) const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
pub(crate) const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");

// SCEP attributes (RFC 8894 section 3.2.1).
pub(crate) const SCEP_MESSAGE_TYPE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.2");
pub(crate) const SCEP_PKI_STATUS: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.3");
pub(crate) const SCEP_FAIL_INFO: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.4");
pub(crate) const SCEP_SENDER_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.5");
pub(crate) const SCEP_RECIPIENT_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.6");
pub(crate) const SCEP_TRANSACTION_ID: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.7");

// Digests.
pub(crate) const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
pub(crate) const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(crate) const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");

// Public keys and signatures.
pub(crate) const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const SHA1_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
pub(crate) const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub(crate) const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub(crate) const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub(crate) const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub(crate) const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
pub(crate) const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub(crate) const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");

// Content encryption.
pub(crate) const DES_CBC: Oid = Oid::new_unwrap("1.3.14.3.2.7");
pub(crate) const DES_EDE3_CBC: Oid = Oid::new_unwrap("1.2.840.113549.3.7");
pub(crate) const AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
pub(crate) const AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
pub(crate) const AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");

// Certificate extensions.
pub(crate) const EXT_SUBJECT_KEY_ID: Oid = Oid::new_unwrap("2.5.29.14");
pub(crate) const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
pub(crate) const EXT_SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
pub(crate) const EXT_BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
pub(crate) const EXT_AUTHORITY_KEY_ID: Oid = Oid::new_unwrap("2.5.29.35");
pub(crate) const EXT_EXTENDED_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
pub(crate) const KP_CLIENT_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.2");
