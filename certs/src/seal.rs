//! Sealing small secrets at rest (device UnlockTokens, bootstrap tokens) with the appliance's
//! data key: AES-256-GCM, a random 96-bit nonce per message, and associated data that binds a
//! sealed value to what it belongs to (so a value copied to another record does not open).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::CertError;

pub const DATA_KEY_LEN: usize = 32;

pub struct DataKey {
    key: LessSafeKey,
}

impl DataKey {
    /// A fresh random key and its bytes (for the caller to store in an owner-only file).
    pub fn generate() -> Result<(Self, Zeroizing<Vec<u8>>), CertError> {
        let mut bytes = Zeroizing::new(vec![0u8; DATA_KEY_LEN]);
        rand::Rng::fill(&mut rand::rng(), bytes.as_mut_slice());
        Ok((Self::from_bytes(&bytes)?, bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| CertError::Key("the data key must be 32 bytes".into()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// `nonce ‖ ciphertext ‖ tag`, hex.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<String, CertError> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context),
                &mut buf,
            )
            .map_err(|_| CertError::Key("sealing failed".into()))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(hex::encode(out))
    }

    /// The plaintext, or `None` when the value is not one this key sealed for `context`.
    pub fn open(&self, sealed: &str, context: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let bytes = hex::decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain = self.key.open_in_place(nonce, Aad::from(context), &mut buf).ok()?;
        Some(Zeroizing::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_in_context() {
        let (key, bytes) = DataKey::generate().unwrap();
        let sealed = key.seal(b"unlock token", b"device-1").unwrap();
        assert!(!sealed.contains(&hex::encode(b"unlock token")));
        assert_eq!(
            key.open(&sealed, b"device-1").unwrap().as_slice(),
            b"unlock token"
        );
        assert!(key.open(&sealed, b"device-2").is_none());
        let again = DataKey::from_bytes(&bytes).unwrap();
        assert_eq!(
            again.open(&sealed, b"device-1").unwrap().as_slice(),
            b"unlock token"
        );
        let (other, _) = DataKey::generate().unwrap();
        assert!(other.open(&sealed, b"device-1").is_none());
        for bad in ["", "zz", "00", &sealed[..sealed.len() - 2]] {
            assert!(key.open(bad, b"device-1").is_none());
        }
        assert_ne!(key.seal(b"x", b"c").unwrap(), key.seal(b"x", b"c").unwrap());
        assert!(DataKey::from_bytes(&[0u8; 16]).is_err());
    }
}
