//! PKCS#10 certification requests.

use const_oid::ObjectIdentifier;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::prelude::FromDer;

use crate::CertError;
use crate::crypto::{self, Digest};

/// A PKCS#10 request (from inside a SCEP envelope) whose self-signature verified.
///
/// `Debug` redacts the challenge password.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificationRequest {
    /// The request as received.
    pub der: Vec<u8>,
    /// The requested subject, RFC 4514-ish (`CN=…, O=…`), for display and logs.
    pub subject: String,
    /// The challengePassword attribute, when present.
    pub challenge_password: Option<String>,
    /// Lower-case hex SHA-256 of the SubjectPublicKeyInfo DER.
    pub public_key_sha256: String,
    /// The SubjectPublicKeyInfo DER.
    pub public_key_der: Vec<u8>,
}

impl std::fmt::Debug for CertificationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificationRequest")
            .field("subject", &self.subject)
            .field(
                "challenge_password",
                &self.challenge_password.as_ref().map(|_| "<redacted>"),
            )
            .field("public_key_sha256", &self.public_key_sha256)
            .field("der_len", &self.der.len())
            .finish()
    }
}

/// Why a request was refused: whether it could not be read, or its signature did not verify.
pub(crate) enum CsrProblem {
    Unreadable(String),
    BadSignature,
}

impl CertificationRequest {
    /// Parses a DER PKCS#10 request and verifies its self-signature (RSA PKCS#1 v1.5 with
    /// SHA-1/256/384/512, or ECDSA P-256/P-384 with SHA-256/384).
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        Self::parse(der).map_err(|p| match p {
            CsrProblem::Unreadable(reason) => CertError::Request(reason),
            CsrProblem::BadSignature => CertError::Request("the request's signature does not verify".into()),
        })
    }

    pub(crate) fn parse(der: &[u8]) -> Result<Self, CsrProblem> {
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|e| CsrProblem::Unreadable(format!("not a PKCS#10 request: {e}")))?;
        if !rest.is_empty() {
            return Err(CsrProblem::Unreadable(
                "trailing bytes after the PKCS#10 request".into(),
            ));
        }
        let info = &csr.certification_request_info;
        let spki = info.subject_pki.raw;
        let alg = ObjectIdentifier::from_bytes(csr.signature_algorithm.algorithm.as_bytes())
            .map_err(|_| CsrProblem::Unreadable("invalid signature algorithm".into()))?;
        crypto::verify(spki, &alg, None, info.raw, &csr.signature_value.data)
            .map_err(|_| CsrProblem::BadSignature)?;
        let mut challenge_password = None;
        for attr in info.iter_attributes() {
            if let ParsedCriAttribute::ChallengePassword(p) = attr.parsed_attribute() {
                challenge_password = Some(p.0.clone());
            }
        }
        Ok(Self {
            der: der.to_vec(),
            subject: info.subject.to_string(),
            challenge_password,
            public_key_sha256: hex::encode(Digest::Sha256.hash(spki)),
            public_key_der: spki.to_vec(),
        })
    }
}
