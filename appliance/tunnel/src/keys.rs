//! WireGuard keys: 32-byte Curve25519 keys in the two spellings WireGuard uses, base64 in
//! config files and client configs, lowercase hex on the UAPI socket
//! (<https://www.wireguard.com/xplatform/>).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use boringtun::x25519;
use std::fmt;
use std::str::FromStr;

/// A 32-byte key: private, public or preshared. `Debug` never prints the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error(
        "a WireGuard key is 44 characters of base64 (as `wg genkey` prints), found {0} characters"
    )]
    Base64Length(usize),
    #[error("a WireGuard key is base64 (as `wg genkey` prints); this is not valid base64")]
    Base64,
    #[error("a UAPI key is 64 lowercase hex digits")]
    Hex,
}

impl Key {
    /// A new random private key, clamped as Curve25519 wants.
    pub fn generate_private() -> Key {
        let secret = x25519::StaticSecret::random_from_rng(rand_core::OsRng);
        // x25519-dalek keeps the random bytes and clamps when it multiplies; clamp here so
        // the key reads back as it is used, as `wg genkey` writes it (RFC 7748 section 5).
        let mut k = secret.to_bytes();
        k[0] &= 248;
        k[31] = (k[31] & 127) | 64;
        Key(k)
    }

    /// A new random preshared key.
    pub fn generate_preshared() -> Key {
        let mut k = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut k);
        Key(k)
    }

    /// The public key of this private key.
    pub fn public(&self) -> Key {
        Key(x25519::PublicKey::from(&self.secret()).to_bytes())
    }

    pub fn secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }

    pub fn as_public(&self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 32]
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Result<Key, KeyError> {
        let s = s.trim();
        if s.len() != 44 {
            return Err(KeyError::Base64Length(s.len()));
        }
        let v = STANDARD.decode(s).map_err(|_| KeyError::Base64)?;
        let bytes: [u8; 32] = v.try_into().map_err(|_| KeyError::Base64)?;
        Ok(Key(bytes))
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    pub fn from_hex(s: &str) -> Result<Key, KeyError> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(KeyError::Hex);
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(KeyError::Hex)?;
            let lo = hex_val(pair[1]).ok_or(KeyError::Hex)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Key(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Base64, as in config files. Do not format private keys into logs.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl FromStr for Key {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Key::from_base64(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_private_keys_are_clamped() {
        for _ in 0..64 {
            let k = Key::generate_private();
            assert_eq!(k.0[0] & 7, 0);
            assert_eq!(k.0[31] & 0xc0, 0x40);
        }
    }

    #[test]
    fn base64_and_hex_round_trip() {
        let k = Key::generate_private();
        assert_eq!(Key::from_base64(&k.to_base64()).unwrap(), k);
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(k.to_hex().len(), 64);
    }

    #[test]
    fn public_key_matches_wg_pubkey() {
        // Fixture computed with `echo <priv> | wg pubkey`.
        let private = Key::from_base64("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=").unwrap();
        assert_eq!(
            private.public().to_base64(),
            "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
        );
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(Key::from_base64("abc"), Err(KeyError::Base64Length(3)));
        assert_eq!(
            Key::from_base64("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!="),
            Err(KeyError::Base64)
        );
        assert_eq!(Key::from_hex("zz"), Err(KeyError::Hex));
        assert_eq!(Key::from_hex(&"g".repeat(64)), Err(KeyError::Hex));
    }

    #[test]
    fn debug_hides_bytes() {
        assert_eq!(format!("{:?}", Key([7; 32])), "Key(..)");
    }
}
