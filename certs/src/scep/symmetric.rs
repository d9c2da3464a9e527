//! Content encryption of SCEP envelopes: DES, DES-EDE3 and AES in CBC mode with PKCS#7 padding.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{
    BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit,
};
use const_oid::ObjectIdentifier;

use crate::oids;

/// The content-encryption algorithm of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCipher {
    /// Single DES: broken, accepted only for compatibility (see `DecodeOptions::allow_des`).
    DesCbc,
    Des3Cbc,
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
}

impl ContentCipher {
    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            oids::DES_CBC => Some(Self::DesCbc),
            oids::DES_EDE3_CBC => Some(Self::Des3Cbc),
            oids::AES128_CBC => Some(Self::Aes128Cbc),
            oids::AES192_CBC => Some(Self::Aes192Cbc),
            oids::AES256_CBC => Some(Self::Aes256Cbc),
            _ => None,
        }
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            Self::DesCbc => oids::DES_CBC,
            Self::Des3Cbc => oids::DES_EDE3_CBC,
            Self::Aes128Cbc => oids::AES128_CBC,
            Self::Aes192Cbc => oids::AES192_CBC,
            Self::Aes256Cbc => oids::AES256_CBC,
        }
    }

    pub(crate) fn key_len(self) -> usize {
        match self {
            Self::DesCbc => 8,
            Self::Des3Cbc | Self::Aes192Cbc => 24,
            Self::Aes128Cbc => 16,
            Self::Aes256Cbc => 32,
        }
    }

    pub(crate) fn iv_len(self) -> usize {
        match self {
            Self::DesCbc | Self::Des3Cbc => 8,
            _ => 16,
        }
    }

    /// Decrypts and unpads; `None` on a wrong key/IV length, a ragged ciphertext or bad padding.
    pub(crate) fn decrypt(self, key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::DesCbc => decrypt::<des::Des>(key, iv, ciphertext),
            Self::Des3Cbc => decrypt::<des::TdesEde3>(key, iv, ciphertext),
            Self::Aes128Cbc => decrypt::<aes::Aes128>(key, iv, ciphertext),
            Self::Aes192Cbc => decrypt::<aes::Aes192>(key, iv, ciphertext),
            Self::Aes256Cbc => decrypt::<aes::Aes256>(key, iv, ciphertext),
        }
    }

    /// Pads and encrypts; `None` only on a wrong key/IV length.
    pub(crate) fn encrypt(self, key: &[u8], iv: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::DesCbc => encrypt::<des::Des>(key, iv, plaintext),
            Self::Des3Cbc => encrypt::<des::TdesEde3>(key, iv, plaintext),
            Self::Aes128Cbc => encrypt::<aes::Aes128>(key, iv, plaintext),
            Self::Aes192Cbc => encrypt::<aes::Aes192>(key, iv, plaintext),
            Self::Aes256Cbc => encrypt::<aes::Aes256>(key, iv, plaintext),
        }
    }
}

fn decrypt<C: BlockCipherDecrypt + KeyInit>(key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    cbc::Decryptor::<C>::new_from_slices(key, iv)
        .ok()?
        .decrypt_padded_vec::<Pkcs7>(ciphertext)
        .ok()
}

fn encrypt<C: BlockCipherEncrypt + KeyInit>(key: &[u8], iv: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    Some(
        cbc::Encryptor::<C>::new_from_slices(key, iv)
            .ok()?
            .encrypt_padded_vec::<Pkcs7>(plaintext),
    )
}
