use std::fmt;

use zeroize::Zeroizing;

/// A PEM-encoded private key. Wiped from memory when dropped; never printed by `Debug`.
#[derive(Clone)]
pub struct SecretPem(Zeroizing<String>);

impl SecretPem {
    /// Wraps PEM text read from a key file.
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    /// The PEM text, for writing to an owner-only key file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}
