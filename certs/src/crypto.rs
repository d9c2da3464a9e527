//! The CA's cached private-key operations (aws-lc-rs) and signature verification helpers.
//!
//! Private-key operations on untrusted input go through aws-lc-rs only: its PKCS#1 v1.5
//! decryption is constant-time (the `rsa` 0.9 crate is not: RUSTSEC-2023-0071).

use aws_lc_rs::rsa::{
    Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use std::sync::Arc;

use aws_lc_rs::signature::{
    self, EcdsaKeyPair, ParsedPublicKey, RsaKeyPair, UnparsedPublicKey, VerificationAlgorithm,
};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoRef};
use zeroize::Zeroizing;

use crate::CertError;
use crate::oids;

/// A message digest algorithm (for CMS signatures and the SCEP messageDigest attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            oids::SHA1 => Some(Self::Sha1),
            oids::SHA256 => Some(Self::Sha256),
            oids::SHA384 => Some(Self::Sha384),
            oids::SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Sha1 => oids::SHA1,
            Self::Sha256 => oids::SHA256,
            Self::Sha384 => oids::SHA384,
            Self::Sha512 => oids::SHA512,
        }
    }

    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Self::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &aws_lc_rs::digest::SHA256,
            Self::Sha384 => &aws_lc_rs::digest::SHA384,
            Self::Sha512 => &aws_lc_rs::digest::SHA512,
        };
        aws_lc_rs::digest::digest(alg, data).as_ref().to_vec()
    }

    /// The digest this crate signs with when asked for `self`: aws-lc-rs refuses to create
    /// SHA-1 signatures, so SHA-1 becomes SHA-256 (every SCEP client verifies SHA-256).
    pub(crate) fn for_signing(self) -> Self {
        match self {
            Self::Sha1 => Self::Sha256,
            other => other,
        }
    }

    fn rsa_verification(self) -> &'static signature::RsaParameters {
        match self {
            Self::Sha1 => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            Self::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Sha512 => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
        }
    }
}

/// What kind of public key a SubjectPublicKeyInfo holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa { bits: usize },
    EcP256,
    EcP384,
    Other,
}

pub(crate) fn key_kind(spki_der: &[u8]) -> KeyKind {
    let Ok(spki) = SubjectPublicKeyInfoRef::from_der(spki_der) else {
        return KeyKind::Other;
    };
    match spki.algorithm.oid {
        oids::RSA_ENCRYPTION => rsa_bits(spki_der).map_or(KeyKind::Other, |bits| KeyKind::Rsa { bits }),
        oids::EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve {
                Some(oids::SECP256R1) => KeyKind::EcP256,
                Some(oids::SECP384R1) => KeyKind::EcP384,
                _ => KeyKind::Other,
            }
        }
        _ => KeyKind::Other,
    }
}

/// The size of an RSA modulus in bits (aws-lc-rs refuses to load keys under 2048 bits, so
/// this reads the key itself).
fn rsa_bits(spki_der: &[u8]) -> Option<usize> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    let PublicKey::RSA(rsa) = spki.parsed().ok()? else {
        return None;
    };
    let start = rsa.modulus.iter().position(|b| *b != 0)?;
    let modulus = rsa.modulus.get(start..)?;
    let first = modulus.first()?;
    Some(8 * modulus.len() - first.leading_zeros() as usize)
}

/// A signature algorithm together with the key type it is checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum VerifyAlg {
    Rsa(Digest),
    EcP256(Digest),
    EcP384(Digest),
}

impl VerifyAlg {
    /// The algorithm for `sig_alg` (the OID in the structure) and a key of `kind`; `digest` is
    /// used when the OID names only the key type (CMS signer infos often say plain
    /// `rsaEncryption`).
    pub(crate) fn select(
        sig_alg: &ObjectIdentifier,
        digest: Option<Digest>,
        kind: KeyKind,
    ) -> Result<Self, &'static str> {
        Ok(match (*sig_alg, kind) {
            (oids::RSA_ENCRYPTION, KeyKind::Rsa { .. }) => {
                Self::Rsa(digest.ok_or("no digest algorithm for the signature")?)
            }
            (oids::SHA1_WITH_RSA, KeyKind::Rsa { .. }) => Self::Rsa(Digest::Sha1),
            (oids::SHA256_WITH_RSA, KeyKind::Rsa { .. }) => Self::Rsa(Digest::Sha256),
            (oids::SHA384_WITH_RSA, KeyKind::Rsa { .. }) => Self::Rsa(Digest::Sha384),
            (oids::SHA512_WITH_RSA, KeyKind::Rsa { .. }) => Self::Rsa(Digest::Sha512),
            (oids::ECDSA_WITH_SHA256, KeyKind::EcP256) => Self::EcP256(Digest::Sha256),
            (oids::ECDSA_WITH_SHA384, KeyKind::EcP256) => Self::EcP256(Digest::Sha384),
            (oids::ECDSA_WITH_SHA256, KeyKind::EcP384) => Self::EcP384(Digest::Sha256),
            (oids::ECDSA_WITH_SHA384, KeyKind::EcP384) => Self::EcP384(Digest::Sha384),
            _ => return Err("unsupported signature algorithm or key type"),
        })
    }

    fn parameters(self) -> Result<&'static dyn VerificationAlgorithm, &'static str> {
        Ok(match self {
            Self::Rsa(digest) => digest.rsa_verification(),
            Self::EcP256(Digest::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EcP256(Digest::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
            Self::EcP384(Digest::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
            Self::EcP384(Digest::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
            Self::EcP256(_) | Self::EcP384(_) => return Err("unsupported ECDSA digest"),
        })
    }
}

/// Verifies `sig` over `msg` with the key in `spki_der`.
///
/// `sig_alg` is the signature algorithm OID from the structure; `digest` is used when the OID
/// names only the key type (CMS signer infos often say plain `rsaEncryption`).
pub(crate) fn verify(
    spki_der: &[u8],
    sig_alg: &ObjectIdentifier,
    digest: Option<Digest>,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), &'static str> {
    verify_with(
        spki_der,
        VerifyAlg::select(sig_alg, digest, key_kind(spki_der))?,
        msg,
        sig,
    )
}

/// [`verify`] with the algorithm already chosen.
pub(crate) fn verify_with(
    spki_der: &[u8],
    alg: VerifyAlg,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), &'static str> {
    UnparsedPublicKey::new(alg.parameters()?, spki_der)
        .verify(msg, sig)
        .map_err(|_| "the signature does not verify")
}

/// Public keys already parsed for verification: a device signs every request with the same
/// key, so its next request skips parsing it and setting up its Montgomery context. Bounded
/// (S3-FIFO eviction): it holds the devices talking now, not the fleet — about 1.5 KB per
/// RSA-2048 key. A key is kept only after a signature made with it verified.
pub(crate) struct VerifyingKeyCache {
    keys: quick_cache::sync::Cache<(VerifyAlg, Box<[u8]>), Arc<ParsedPublicKey>>,
}

impl VerifyingKeyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            keys: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// Like [`verify`], with the key looked up (or parsed and kept) by its exact encoding.
    pub(crate) fn verify(
        &self,
        spki_der: &[u8],
        alg: VerifyAlg,
        msg: &[u8],
        sig: &[u8],
    ) -> Result<(), &'static str> {
        let id = (alg, Box::<[u8]>::from(spki_der));
        if let Some(key) = self.keys.get(&id) {
            return key
                .verify_sig(msg, sig)
                .map_err(|_| "the signature does not verify");
        }
        let key = ParsedPublicKey::new(alg.parameters()?, spki_der)
            .map_err(|_| "the public key cannot be used for this signature")?;
        key.verify_sig(msg, sig)
            .map_err(|_| "the signature does not verify")?;
        // Kept only once it has verified something: a stream of made-up keys cannot push the
        // devices' keys out.
        self.keys.insert(id, Arc::new(key));
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// Encrypts `plaintext` (a content-encryption key) to an RSA public key with PKCS#1 v1.5.
pub(crate) fn rsa_encrypt(spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CertError> {
    let unusable = || CertError::Key("the recipient's key is not a usable RSA key".into());
    let key = PublicEncryptingKey::from_der(spki_der).map_err(|_| unusable())?;
    let key = Pkcs1PublicEncryptingKey::new(key).map_err(|_| unusable())?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let len = key
        .encrypt(plaintext, &mut out)
        .map_err(|_| CertError::Key("RSA encryption failed".into()))?
        .len();
    out.truncate(len);
    Ok(out)
}

/// A CA or RA private key, loaded once into aws-lc-rs for signing (and, for RSA, decryption).
pub(crate) enum CaKeys {
    Rsa {
        signer: RsaKeyPair,
        decrypter: Pkcs1PrivateDecryptingKey,
    },
    /// ECDSA P-256: an issuing CA's signatures cost a fraction of RSA's, and devices only
    /// ever encrypt to the (RSA) RA.
    EcP256(EcdsaKeyPair),
}

impl CaKeys {
    pub(crate) fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, CertError> {
        if let Ok(signer) = RsaKeyPair::from_pkcs8(pkcs8) {
            let decrypter = PrivateDecryptingKey::from_pkcs8(pkcs8)
                .map_err(|e| CertError::Key(e.to_string()))
                .and_then(|k| {
                    Pkcs1PrivateDecryptingKey::new(k).map_err(|_| CertError::Key("not an RSA key".into()))
                })?;
            return Ok(Self::Rsa { signer, decrypter });
        }
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8)
            .map(Self::EcP256)
            .map_err(|_| CertError::Key("the key is neither RSA nor ECDSA P-256".into()))
    }

    /// The bits of the subjectPublicKey a certificate for this key carries: the PKCS#1
    /// RSAPublicKey, or the uncompressed EC point.
    pub(crate) fn public_key_bits(&self) -> Vec<u8> {
        use aws_lc_rs::signature::KeyPair;
        match self {
            Self::Rsa { signer, .. } => signer.public_key().as_ref().to_vec(),
            Self::EcP256(key) => key.public_key().as_ref().to_vec(),
        }
    }

    pub(crate) fn is_rsa(&self) -> bool {
        matches!(self, Self::Rsa { .. })
    }

    /// The X.509 signatureAlgorithm for certificates and CRLs this key signs with SHA-256.
    pub(crate) fn certificate_signature_algorithm(&self) -> Result<AlgorithmIdentifierOwned, CertError> {
        Ok(match self {
            Self::Rsa { .. } => crate::scep::build::alg_with_null(oids::SHA256_WITH_RSA)?,
            // RFC 5758: the parameters of ecdsa-with-SHA256 are absent.
            Self::EcP256(_) => AlgorithmIdentifierOwned {
                oid: oids::ECDSA_WITH_SHA256,
                parameters: None,
            },
        })
    }

    /// Signature over `msg` with `digest`: RSA PKCS#1 v1.5 (SHA-1 is signed as SHA-256; see
    /// [`Digest::for_signing`]) or, for an EC key, ECDSA P-256 with SHA-256 (ASN.1 form).
    pub(crate) fn sign(&self, digest: Digest, msg: &[u8]) -> Result<Vec<u8>, CertError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Self::Rsa { signer, .. } => {
                let encoding = match digest.for_signing() {
                    Digest::Sha384 => &signature::RSA_PKCS1_SHA384,
                    Digest::Sha512 => &signature::RSA_PKCS1_SHA512,
                    Digest::Sha1 | Digest::Sha256 => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0u8; signer.public_modulus_len()];
                signer
                    .sign(encoding, &rng, msg, &mut sig)
                    .map_err(|_| CertError::Key("RSA signing failed".into()))?;
                Ok(sig)
            }
            Self::EcP256(key) => key
                .sign(&rng, msg)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| CertError::Key("ECDSA signing failed".into())),
        }
    }

    /// Unwraps a content-encryption key of exactly `key_len` bytes (RSA keys only; `None` for
    /// an EC key, which nobody can encrypt to).
    ///
    /// Implicit rejection: when the RSA block does not decrypt, has bad padding or the wrong
    /// length, a random key is returned instead of an error, so that what happens next
    /// (content decryption failing) does not tell a padding-oracle attacker anything.
    pub(crate) fn unwrap_content_key(&self, encrypted: &[u8], key_len: usize) -> Option<Zeroizing<Vec<u8>>> {
        let Self::Rsa { decrypter, .. } = self else {
            return None;
        };
        let mut buf = Zeroizing::new(vec![0u8; decrypter.min_output_size()]);
        let mut random = Zeroizing::new(vec![0u8; key_len]);
        rand::Rng::fill(&mut rand::rng(), random.as_mut_slice());
        Some(match decrypter.decrypt(encrypted, &mut buf) {
            Ok(plain) if plain.len() == key_len => Zeroizing::new(plain.to_vec()),
            _ => random,
        })
    }
}

/// Re-encodes a value to DER, mapping the error.
pub(crate) fn to_der<T: Encode>(value: &T) -> Result<Vec<u8>, CertError> {
    value.to_der().map_err(|e| CertError::Encode(e.to_string()))
}
