//! Administrator passwords: Argon2id hashes (PHC strings) and the password policy.
//!
//! The policy is length plus an estimate of how guessable the password is (zxcvbn, which ships
//! frequency lists of common and breached passwords, names and words), so "Password123!" is
//! refused however many character classes it has.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Longest password accepted. Hashing cost grows with length; nobody types more than this.
pub const MAX_PASSWORD_CHARS: usize = 256;
/// The guessability check looks at this many characters; beyond it a password is long enough.
const STRENGTH_CHECK_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must have at least {0} characters")]
    TooShort(usize),
    #[error("the password must have at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    #[error("the password is too easy to guess{0}")]
    TooWeak(String),
    #[error("the password hash could not be computed: {0}")]
    Hashing(String),
}

/// Argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks `password` against the policy. `context` holds words the password must not be built
/// from (the user name, the display name, the product's name).
pub fn check_policy(password: &str, min_chars: usize, context: &[&str]) -> Result<(), PasswordError> {
    let chars = password.chars().count();
    if chars < min_chars {
        return Err(PasswordError::TooShort(min_chars));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordError::TooLong);
    }
    let checked: String = password.chars().take(STRENGTH_CHECK_CHARS).collect();
    let mut inputs: Vec<&str> = context.iter().copied().filter(|w| !w.is_empty()).collect();
    inputs.extend(["citadel", "mdm", "admin", "administrator"]);
    let estimate = zxcvbn::zxcvbn(&checked, &inputs);
    if (estimate.score() as u8) < 3 {
        let hint = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        return Err(PasswordError::TooWeak(hint));
    }
    Ok(())
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for `password`.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Hashing(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// Whether `password` matches the stored PHC string. An unparseable hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.chars().count() > MAX_PASSWORD_CHARS {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Spends the time a verification would, for sign-ins naming no account, so response times do
/// not tell which user names exist.
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("no account has this password").unwrap_or_default());
    let _ = verify(password, phc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("correct horse battery staple").unwrap();
        let b = hash("correct horse battery staple").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse battery staple", &a));
        assert!(!verify("correct horse battery stapler", &a));
        assert!(!verify("anything", "not a phc string"));
        assert!(!verify(&"x".repeat(MAX_PASSWORD_CHARS + 1), &a));
    }

    #[test]
    fn policy_refuses_short_common_and_personal_passwords() {
        assert_eq!(check_policy("short", 12, &[]), Err(PasswordError::TooShort(12)));
        assert_eq!(
            check_policy(&"a".repeat(MAX_PASSWORD_CHARS + 1), 12, &[]),
            Err(PasswordError::TooLong)
        );
        for weak in [
            "password1234",
            "Password123!",
            "qwertyuiop123",
            "aaaaaaaaaaaaaaaa",
        ] {
            assert!(
                matches!(check_policy(weak, 12, &[]), Err(PasswordError::TooWeak(_))),
                "{weak}"
            );
        }
        assert!(matches!(
            check_policy("margaret.hamilton1936", 12, &["margaret.hamilton"]),
            Err(PasswordError::TooWeak(_))
        ));
        assert_eq!(
            check_policy("violet tram orbits the quay", 12, &["alice"]),
            Ok(())
        );
    }
}
