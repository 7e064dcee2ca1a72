//! Card ids and allow-list entries: the two kinds of opaque bytes the gate link carries.
//!
//! [`CardId`] is the raw id a reader returned (1 to 32 bytes), kept in a fixed array so
//! the firmware needs no allocator. Its `Debug` prints only the length, so a raw card id
//! never reaches a log by accident; [`CardId::hex`] is the explicit way to print it (the
//! JSON form uses the same lowercase hex, field `acc_id`).
//!
//! [`EntryHash`] is one allow-list entry: 16 opaque bytes that the hub computes from a
//! card id with a key derived per gate, and that the gate only compares.

use core::fmt;

use crate::Error;

/// A raw card id as read from the card: 1 to [`CardId::MAX_LEN`] bytes.
#[derive(Clone, Copy)]
pub struct CardId {
    len: u8,
    /// Bytes past `len` are always zero, so the derived-free comparisons below agree.
    bytes: [u8; CardId::MAX_LEN],
}

impl CardId {
    /// Longest card id the link carries (ISO/IEC 14443 UIDs are 4, 7 or 10 bytes; 32
    /// leaves room for readers that send longer credentials).
    pub const MAX_LEN: usize = 32;

    /// A card id from its bytes; fails unless there are 1 to [`Self::MAX_LEN`] of them.
    pub fn new(raw: &[u8]) -> Result<CardId, Error> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(Error::CardLength(raw.len()));
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes
            .get_mut(..raw.len())
            .ok_or(Error::CardLength(raw.len()))?
            .copy_from_slice(raw);
        Ok(CardId {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// A card id from hex (either case), two digits per byte.
    pub fn from_hex(hex: &str) -> Result<CardId, Error> {
        let mut bytes = [0u8; Self::MAX_LEN];
        let n = decode_hex(hex, &mut bytes)?;
        CardId::new(bytes.get(..n).ok_or(Error::BadHex)?)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Lowercase hex, for the JSON form and for places that deliberately show the id.
    pub fn hex(&self) -> impl fmt::Display + '_ {
        Hex(self.as_bytes())
    }
}

impl PartialEq for CardId {
    fn eq(&self, other: &CardId) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for CardId {}

impl core::hash::Hash for CardId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

/// Only the length: raw card ids stay out of logs.
impl fmt::Debug for CardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardId({} bytes)", self.len)
    }
}

/// One allow-list entry: a 16-byte keyed hash of a card id, opaque to this crate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryHash(pub [u8; EntryHash::LEN]);

impl EntryHash {
    pub const LEN: usize = 16;

    /// From exactly 32 hex digits (either case).
    pub fn from_hex(hex: &str) -> Result<EntryHash, Error> {
        let mut bytes = [0u8; Self::LEN];
        if decode_hex(hex, &mut bytes)? != Self::LEN {
            return Err(Error::BadHex);
        }
        Ok(EntryHash(bytes))
    }

    /// Lowercase hex.
    pub fn hex(&self) -> impl fmt::Display + '_ {
        Hex(&self.0)
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", Hex(&self.0))
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Decodes `hex` into the front of `out`; returns the number of bytes written.
fn decode_hex(hex: &str, out: &mut [u8]) -> Result<usize, Error> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) || digits.len() / 2 > out.len() {
        return Err(Error::BadHex);
    }
    for (pair, slot) in digits.chunks_exact(2).zip(out.iter_mut()) {
        let (hi, lo) = match pair {
            [hi, lo] => (nibble(*hi)?, nibble(*lo)?),
            _ => return Err(Error::BadHex),
        };
        *slot = (hi << 4) | lo;
    }
    Ok(digits.len() / 2)
}

fn nibble(c: u8) -> Result<u8, Error> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(Error::BadHex),
    }
}

#[cfg(feature = "serde")]
mod serde_impls {
    use super::{CardId, EntryHash};
    use core::fmt;
    use serde::de::{self, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    impl Serialize for CardId {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&self.hex())
        }
    }

    impl Serialize for EntryHash {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&self.hex())
        }
    }

    struct HexVisitor<T>(fn(&str) -> Result<T, crate::Error>, &'static str);

    impl<T> Visitor<'_> for HexVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.1)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(|e| E::custom(e))
        }
    }

    impl<'de> Deserialize<'de> for CardId {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(HexVisitor(
                CardId::from_hex,
                "a card id as 2 to 64 hex digits",
            ))
        }
    }

    impl<'de> Deserialize<'de> for EntryHash {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(HexVisitor(
                EntryHash::from_hex,
                "an allow-list entry as 32 hex digits",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn card_length_bounds() {
        assert_eq!(CardId::new(&[]), Err(Error::CardLength(0)));
        assert_eq!(CardId::new(&[0; 33]), Err(Error::CardLength(33)));
        assert_eq!(CardId::new(&[7; 32]).map(|c| c.as_bytes().len()), Ok(32));
    }

    #[test]
    fn card_hex_round_trip_and_debug_hides_the_id() {
        let card = CardId::from_hex("DEadBEef").unwrap();
        assert_eq!(card.as_bytes(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(format!("{}", card.hex()), "deadbeef");
        assert_eq!(format!("{card:?}"), "CardId(4 bytes)");
        assert_eq!(CardId::from_hex(""), Err(Error::CardLength(0)));
        assert_eq!(CardId::from_hex("abc"), Err(Error::BadHex));
        assert_eq!(CardId::from_hex("zz"), Err(Error::BadHex));
        assert_eq!(CardId::from_hex(&"00".repeat(33)), Err(Error::BadHex));
    }

    #[test]
    fn entry_hash_needs_exactly_16_bytes() {
        let hex = "000102030405060708090a0b0c0d0e0f";
        let e = EntryHash::from_hex(hex).unwrap();
        assert_eq!(e.0[15], 15);
        assert_eq!(format!("{}", e.hex()), hex);
        assert_eq!(EntryHash::from_hex("0001"), Err(Error::BadHex));
    }
}
