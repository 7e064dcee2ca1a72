//! mosquitto's password file, written by us in mosquitto 2.0's own format.
//!
//! One line per user: `user:$7$<iterations>$<base64 salt>$<base64 hash>`, where the hash is
//! PBKDF2-HMAC-SHA512 of the password over the raw (decoded) salt, 64 bytes long, and
//! both fields use standard base64 with padding. This is what `mosquitto_passwd` of
//! mosquitto 2.0 writes (`src/password_mosq.c`: `SALT_LEN` 12, `PW_DEFAULT_ITERATIONS`
//! 101, hash type 7 = `pw_sha512_pbkdf2`); the unit tests below check an entry that
//! `mosquitto_passwd -c -b` 2.0.11 produced, and the integration tests check that a real
//! mosquitto accepts files written here.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{CryptoRng, RngCore};
use sha2::Sha512;

use crate::{BrokerError, Result};

/// Hash type 7 in mosquitto's password file: PBKDF2 with HMAC-SHA512.
const HASH_TYPE: &str = "7";
/// Salt length used by `mosquitto_passwd` (mosquitto `src/password_mosq.h`, `SALT_LEN`).
pub const SALT_LEN: usize = 12;
/// Hash length: the output size of SHA-512.
pub const HASH_LEN: usize = 64;
/// Iterations used by `mosquitto_passwd` 2.0 (`PW_DEFAULT_ITERATIONS`). Verification cost
/// is paid on every MQTT CONNECT, so we keep mosquitto's own choice.
pub const DEFAULT_ITERATIONS: u32 = 101;

/// Hashes `password` with `salt` into the part of a password line after `user:`.
pub fn hash_with_salt(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut hash = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut hash);
    format!(
        "${HASH_TYPE}${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    )
}

/// Hashes `password` with a fresh random salt into the part after `user:`.
pub fn hash_password<R: RngCore + CryptoRng>(password: &str, rng: &mut R) -> Result<String> {
    let mut salt = [0u8; SALT_LEN];
    rng.try_fill_bytes(&mut salt)?;
    Ok(hash_with_salt(password, &salt, DEFAULT_ITERATIONS))
}

/// One full password-file line (without the newline) for `username`.
pub fn password_line<R: RngCore + CryptoRng>(
    username: &str,
    password: &str,
    rng: &mut R,
) -> Result<String> {
    check_username(username)?;
    check_password(password)?;
    Ok(format!("{username}:{}", hash_password(password, rng)?))
}

/// Whether `password` matches the hash part (`$7$...`) of a password line, the way
/// mosquitto checks it. Anything not in the `$7$` format is a mismatch.
pub fn verify(encoded: &str, password: &str) -> bool {
    let mut fields = encoded.split('$');
    let (Some(""), Some(HASH_TYPE), Some(iterations), Some(salt), Some(hash), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(expected)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(hash),
    ) else {
        return false;
    };
    if iterations == 0 || expected.len() != HASH_LEN {
        return false;
    }
    let mut actual = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, iterations, &mut actual);
    // Constant-time comparison: fold the differences, then test once.
    actual
        .iter()
        .zip(&expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A user name must fit on a password-file line and an ACL `user` line unchanged.
pub(crate) fn check_username(username: &str) -> Result<()> {
    let reason = if username.is_empty() {
        Some("is empty")
    } else if username.len() > usize::from(u16::MAX) {
        Some("is longer than MQTT allows (65535 bytes)")
    } else if username.contains(':') {
        Some("contains ':' (the password file's separator)")
    } else if username.starts_with('#') {
        Some("starts with '#' (a comment in mosquitto's files)")
    } else if username
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        Some("contains whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BrokerError::invalid("user name", username, reason)),
        None => Ok(()),
    }
}

/// A password only has to be non-empty and fit in an MQTT CONNECT.
pub(crate) fn check_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(BrokerError::invalid("password", "", "is empty"));
    }
    if password.len() > usize::from(u16::MAX) {
        return Err(BrokerError::invalid(
            "password",
            "<redacted>",
            "is longer than MQTT allows (65535 bytes)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    /// Written by `mosquitto_passwd -c -b pw alice secret` (mosquitto 2.0.11, Debian 12).
    const FROM_MOSQUITTO_PASSWD: &str = "alice:$7$101$WrlQ+36BNyVg+ySD$izt/Oxg/xMu+8HgRRve2kvIBUTRqVsOFv2ciT8ThBvx3FguLbBry6DFVqZsb2z1aA4RqNcJmUtCt8G+jM9Owgg==";

    #[test]
    fn reproduces_mosquitto_passwd_entry() {
        let (user, encoded) = FROM_MOSQUITTO_PASSWD.split_once(':').unwrap();
        assert_eq!(user, "alice");
        let salt = STANDARD.decode("WrlQ+36BNyVg+ySD").unwrap();
        assert_eq!(salt.len(), SALT_LEN);
        assert_eq!(hash_with_salt("secret", &salt, 101), encoded);
        assert!(verify(encoded, "secret"));
        assert!(!verify(encoded, "Secret"));
    }

    #[test]
    fn fresh_lines_verify_and_differ() {
        let a = password_line("gate-1", "pw", &mut OsRng).unwrap();
        let b = password_line("gate-1", "pw", &mut OsRng).unwrap();
        assert_ne!(a, b, "salts are random");
        for line in [&a, &b] {
            let (user, encoded) = line.split_once(':').unwrap();
            assert_eq!(user, "gate-1");
            assert!(encoded.starts_with("$7$101$"));
            assert!(verify(encoded, "pw"));
            assert!(!verify(encoded, "pw2"));
        }
    }

    #[test]
    fn verify_rejects_malformed() {
        for bad in [
            "",
            "$6$101$abc$def",
            "$7$0$WrlQ+36BNyVg+ySD$AAAA",
            "$7$x$WrlQ+36BNyVg+ySD$AAAA",
            "$7$101$!!$AAAA",
            "$7$101$WrlQ+36BNyVg+ySD$AAAA",
            "$7$101$WrlQ+36BNyVg+ySD$AAAA$extra",
        ] {
            assert!(!verify(bad, "secret"), "{bad:?}");
        }
    }

    #[test]
    fn refuses_names_that_break_the_file() {
        for bad in ["", "a:b", "a b", "a\nb", "#x", "tab\there"] {
            assert!(password_line(bad, "pw", &mut OsRng).is_err(), "{bad:?}");
        }
        assert!(password_line("ok", "", &mut OsRng).is_err());
    }
}
