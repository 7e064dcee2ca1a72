//! Admin passwords: the length rule, argon2id hashing into PHC strings, and verification.
//!
//! Promises:
//! - Hashes are argon2id (RFC 9106) with the OWASP Password Storage Cheat Sheet's first
//!   recommended parameters, m = 19 MiB, t = 2, p = 1, and a fresh 16-byte random salt.
//! - Verification reads the parameters from the stored PHC string, so raising them later
//!   keeps older hashes working.
//! - Hashing and verifying take tens of milliseconds of CPU on purpose: async callers run
//!   them on a blocking thread ([`verify_blocking`]).
//! - [`verify_unknown`] spends the same work on a fixed dummy hash, so a login for a name
//!   that does not exist takes as long as one with a wrong password.
//! - No function here logs or returns the password.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::OsRng;
use std::sync::OnceLock;

/// Shortest accepted password, in characters (NIST SP 800-63B asks for at least 8; the
/// box is reachable by every WireGuard peer, so we ask for more).
pub const MIN_PASSWORD_LEN: usize = 12;

/// Longest accepted password, in bytes: argon2 takes any length, but an unbounded input
/// is an easy way to make the hub work hard.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// argon2id memory cost in KiB (OWASP Password Storage Cheat Sheet: m=19456, t=2, p=1).
pub const M_COST_KIB: u32 = 19_456;
/// argon2id passes over memory.
pub const T_COST: u32 = 2;
/// argon2id lanes.
pub const P_COST: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    #[error("the password is too short: use at least {MIN_PASSWORD_LEN} characters (a few unrelated words make a good one)")]
    TooShort,
    #[error("the password is too long: at most {MAX_PASSWORD_LEN} bytes")]
    TooLong,
    #[error("the password must not start or end with whitespace (it is easy to mistype)")]
    Whitespace,
    #[error("the password must not contain control characters")]
    Control,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Checks a new password against the rules above.
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(PasswordError::TooShort);
    }
    if password.trim() != password {
        return Err(PasswordError::Whitespace);
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordError::Control);
    }
    Ok(())
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks the policy and hashes: the argon2id PHC string to store. Blocking (CPU).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    check_policy(password)?;
    hash_unchecked(password)
}

fn hash_unchecked(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string. An unreadable stored hash never
/// matches. Blocking (CPU).
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_PASSWORD_LEN {
        // Still spend the work, so a long password is not a timing oracle.
        return verify_unknown(password);
    }
    match matches(password, phc) {
        Ok(ok) => ok,
        Err(e) => {
            tracing::error!(error = %e, "a stored admin password hash is unreadable");
            false
        }
    }
}

/// Spends the work of one verification and returns false: for unknown or disabled names.
pub fn verify_unknown(password: &str) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_unchecked("gatehouse dummy password").ok());
    if let Some(d) = dummy {
        let cut = password.len().min(MAX_PASSWORD_LEN);
        let _ = matches(password.get(..cut).unwrap_or(""), d);
    }
    false
}

fn matches(password: &str, phc: &str) -> Result<bool, PasswordError> {
    let hash = PasswordHash::new(phc).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hasher()?
        .verify_password(password.as_bytes(), &hash)
        .is_ok())
}

/// [`verify`] (`Some(phc)`) or [`verify_unknown`] (`None`) on a blocking thread.
pub async fn verify_blocking(password: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match phc {
        Some(phc) => verify(&password, &phc),
        None => verify_unknown(&password),
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn policy_names_the_rule() {
        assert_eq!(check_policy("short"), Err(PasswordError::TooShort));
        assert_eq!(check_policy("elevenchars"), Err(PasswordError::TooShort));
        assert!(check_policy("twelve chars").is_ok());
        // Characters, not bytes.
        assert_eq!(check_policy("ééééééééééé"), Err(PasswordError::TooShort));
        assert_eq!(
            check_policy(" twelve chars"),
            Err(PasswordError::Whitespace)
        );
        assert_eq!(check_policy("twelve\tchars!"), Err(PasswordError::Control));
        assert_eq!(
            check_policy(&"x".repeat(MAX_PASSWORD_LEN + 1)),
            Err(PasswordError::TooLong)
        );
        assert!(PasswordError::TooShort.to_string().contains("at least 12"));
    }

    #[test]
    fn hashes_are_argon2id_phc_and_verify() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterY", &phc));
        assert!(!verify("correct horse battery", "not a hash"));
        // Salted: the same password hashes differently.
        assert_ne!(phc, hash_password("correct horse battery").unwrap());
        assert!(hash_password("too short").is_err());
        assert!(!verify_unknown("anything at all"));
    }
}
