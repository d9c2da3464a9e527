//! Second factor: TOTP (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps, one step of skew)
//! and single-use recovery codes.
//!
//! Time is passed in. A code is accepted at most once: the caller stores the step of the last
//! accepted code and passes it back, so a code seen over someone's shoulder cannot be replayed
//! within its window.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use totp_rs::{Algorithm, Builder, Totp};

/// 160-bit secrets, as RFC 4226 recommends.
const SECRET_BYTES: usize = 20;
pub const RECOVERY_CODES: usize = 10;

#[derive(Debug, thiserror::Error)]
#[error("TOTP: {0}")]
pub struct TotpError(String);

impl TotpError {
    pub fn new(message: String) -> Self {
        Self(message)
    }
}

/// What an administrator needs to add the account to an authenticator app.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TotpEnrolment {
    /// Base32, for typing in by hand.
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as a QR code (SVG; rendered here, no external service).
    pub qr_svg: String,
}

pub fn new_secret() -> Vec<u8> {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    bytes.to_vec()
}

fn totp(secret: &[u8], account: &str, issuer: &str) -> Result<Totp, TotpError> {
    // The otpauth label is "issuer:account"; neither part may contain a colon.
    let clean = |s: &str| s.replace(':', " ");
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .with_account_name(clean(account))
        .with_issuer(Some(clean(issuer)))
        .build()
        .map_err(|e| TotpError(e.to_string()))
}

pub fn enrolment(secret: &[u8], account: &str, issuer: &str) -> Result<TotpEnrolment, TotpError> {
    let totp = totp(secret, account, issuer)?;
    let otpauth_uri = totp.to_url().map_err(|e| TotpError(e.to_string()))?;
    let qr = qrcode::QrCode::new(otpauth_uri.as_bytes()).map_err(|e| TotpError(e.to_string()))?;
    let qr_svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Ok(TotpEnrolment {
        secret: data_encoding::BASE32_NOPAD.encode(secret),
        otpauth_uri,
        qr_svg,
    })
}

fn unix_seconds(now: OffsetDateTime) -> u64 {
    u64::try_from(now.unix_timestamp()).unwrap_or(0)
}

/// The step of `code` when it is valid at `now` and newer than `last_step`.
pub fn check(secret: &[u8], code: &str, now: OffsetDateTime, last_step: Option<u64>) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = totp(secret, "-", "-").ok()?;
    let step = totp.check(&code, unix_seconds(now))?;
    match last_step {
        Some(last) if step <= last => None,
        _ => Some(step),
    }
}

/// The code for `now`; for tests and the fleet simulator's administrators.
pub fn code_at(secret: &[u8], now: OffsetDateTime) -> Option<String> {
    Some(
        totp(secret, "-", "-")
            .ok()?
            .generate(unix_seconds(now))
            .to_string(),
    )
}

/// New recovery codes (shown once) and the hashes to keep.
pub fn new_recovery_codes() -> (Vec<String>, Vec<String>) {
    (0..RECOVERY_CODES)
        .map(|_| {
            // 80 bits: beyond guessing, and beyond brute force from a copy of the store.
            let bytes: [u8; 10] = rand::random();
            let text = data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase();
            let code = format!(
                "{}-{}-{}-{}",
                &text[..4],
                &text[4..8],
                &text[8..12],
                &text[12..16]
            );
            let hash = recovery_hash(&code);
            (code, hash)
        })
        .unzip()
}

fn recovery_hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex::encode(Sha256::digest(normal.as_bytes()))
}

/// The index of the stored hash `code` matches; the caller removes it (single use).
pub fn match_recovery_code(hashes: &[String], code: &str) -> Option<usize> {
    if code.len() > 64 {
        return None;
    }
    let given = recovery_hash(code);
    hashes
        .iter()
        .position(|h| bool::from(h.as_bytes().ct_eq(given.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn rfc6238_test_vector() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890": at 59 s the 8-digit code is
        // 94287082, so the 6-digit code is its last six digits.
        let secret = b"12345678901234567890";
        let at = OffsetDateTime::from_unix_timestamp(59).unwrap();
        assert_eq!(code_at(secret, at).unwrap(), "287082");
        let at = OffsetDateTime::from_unix_timestamp(1_111_111_109).unwrap();
        assert_eq!(code_at(secret, at).unwrap(), "081804");
    }

    #[test]
    fn codes_are_checked_against_the_injected_clock_and_never_twice() {
        let secret = new_secret();
        let now = datetime!(2026-12-06 10:00:00 UTC);
        let code = code_at(&secret, now).unwrap();
        let step = check(&secret, &code, now, None).expect("valid now");
        // One step of skew either way, as phones' clocks drift.
        assert!(check(&secret, &code, now + time::Duration::seconds(30), None).is_some());
        assert!(check(&secret, &code, now + time::Duration::seconds(90), None).is_none());
        // Replay of the same code is refused.
        assert_eq!(check(&secret, &code, now, Some(step)), None);
        let later = now + time::Duration::seconds(30);
        let next = code_at(&secret, later).unwrap();
        assert!(check(&secret, &next, later, Some(step)).is_some());
        assert_eq!(check(&secret, "12345", now, None), None);
        assert_eq!(check(&secret, "abcdef", now, None), None);
        assert!(check(&secret, &format!("{} {}", &code[..3], &code[3..]), now, None).is_some());
    }

    #[test]
    fn enrolment_carries_a_scannable_uri() {
        let e = enrolment(&new_secret(), "alice", "Ministry: IT").unwrap();
        assert!(e.otpauth_uri.starts_with("otpauth://totp/"), "{}", e.otpauth_uri);
        assert!(e.otpauth_uri.contains(&format!("secret={}", e.secret)));
        assert!(e.otpauth_uri.contains("alice"));
        assert!(e.qr_svg.contains("<svg"));
    }

    #[test]
    fn recovery_codes_match_once_forgivingly() {
        let (codes, hashes) = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(match_recovery_code(&hashes, &codes[3]), Some(3));
        assert_eq!(
            match_recovery_code(&hashes, &codes[3].to_uppercase().replace('-', " ")),
            Some(3)
        );
        assert_eq!(match_recovery_code(&hashes, "aaaaa-bbbbb"), None);
    }
}
