//! The offline allow-list: which cards this gate lets in while the hub is unreachable.
//!
//! The gate never holds card ids: the hub sends entries, 16-byte keyed hashes
//! ([`EntryHash`]), and the gate hashes the card it reads the same way and looks it up.
//! How a card becomes an entry is an [`EntryScheme`]; [`HmacEntryScheme`] is the hub's
//! (`gatehouse_store::site_key`, whose module docs hold the whole key scheme), in two
//! HMAC-SHA-256 stages (RFC 2104, FIPS 180-4):
//!
//! ```text
//! card hash = HMAC(card key, raw card bytes)          (what the hub's database stores)
//! entry     = HMAC(allow-list key, card hash)[..16]
//! ```
//!
//! The card key is the same for every gate; the allow-list key is this gate's own
//! (`SiteKey::gate_key(gate_id)` on the hub), so a stolen gate leaks only its own list.
//! The card bytes are the raw id as read ([`CardId::as_bytes`]), not its hex form.

use gatehouse_gate_proto::{CardId, EntryHash};
use heapless::Vec;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How a card id becomes an allow-list entry. Must be the hub's scheme exactly.
pub trait EntryScheme {
    fn entry(&self, card: &CardId) -> EntryHash;
}

/// The hub's scheme: `HMAC-SHA-256(allow_list_key, HMAC-SHA-256(card_key, card bytes))[..16]`.
#[derive(Clone)]
pub struct HmacEntryScheme {
    card_key: [u8; 32],
    allow_list_key: [u8; 32],
}

impl HmacEntryScheme {
    pub fn new(card_key: [u8; 32], allow_list_key: [u8; 32]) -> HmacEntryScheme {
        HmacEntryScheme {
            card_key,
            allow_list_key,
        }
    }
}

/// HMAC-SHA-256(key, data). HMAC accepts keys of any length, so `new_from_slice` cannot
/// fail; if it ever did, all zeros come back, which makes the entry one the hub never
/// sends (a 2^-128 collision), so the card is simply not found: fail closed.
fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) {
        mac.update(data);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

impl EntryScheme for HmacEntryScheme {
    fn entry(&self, card: &CardId) -> EntryHash {
        let card_hash = hmac_sha256(&self.card_key, card.as_bytes());
        let full = hmac_sha256(&self.allow_list_key, &card_hash);
        let mut out = [0u8; EntryHash::LEN];
        if let Some(head) = full.get(..EntryHash::LEN) {
            out.copy_from_slice(head);
        }
        EntryHash(out)
    }
}

/// Up to `N` entries, kept sorted for binary search (16 bytes each, no overhead: 2,048
/// entries are 32 KiB), and the version the hub gave them.
///
/// Version 0 means "nothing trustworthy": the list is empty, or a transfer was cut short
/// (see [`GateCore`](crate::GateCore)), and the next request asks for a full list.
#[derive(Debug, Clone)]
pub struct AllowList<const N: usize> {
    entries: Vec<EntryHash, N>,
    version: u32,
    /// Entries that did not fit since the last clear.
    overflowed: u32,
}

impl<const N: usize> Default for AllowList<N> {
    fn default() -> Self {
        AllowList::new()
    }
}

impl<const N: usize> AllowList<N> {
    pub const fn new() -> AllowList<N> {
        AllowList {
            entries: Vec::new(),
            version: 0,
            overflowed: 0,
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn set_version(&mut self, version: u32) {
        self.version = version;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub const fn capacity(&self) -> usize {
        N
    }

    /// Entries refused since the last [`AllowList::clear`] because the list was full (those
    /// cards are denied offline: size `N` for the site).
    pub fn overflowed(&self) -> u32 {
        self.overflowed
    }

    pub fn contains(&self, entry: &EntryHash) -> bool {
        self.entries.binary_search(entry).is_ok()
    }

    /// Adds an entry (no-op if present); counts it in [`AllowList::overflowed`] if full.
    pub fn insert(&mut self, entry: EntryHash) {
        if let Err(at) = self.entries.binary_search(&entry) {
            if self.entries.insert(at, entry).is_err() {
                self.overflowed = self.overflowed.saturating_add(1);
            }
        }
    }

    /// Removes an entry (no-op if absent).
    pub fn remove(&mut self, entry: &EntryHash) {
        if let Ok(at) = self.entries.binary_search(entry) {
            // `at` comes from the search over this same list, so it is in bounds.
            self.entries.remove(at);
        }
    }

    /// Empties the list and sets version 0.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.version = 0;
        self.overflowed = 0;
    }

    pub fn iter(&self) -> impl Iterator<Item = &EntryHash> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_scheme_is_two_truncated_hmac_sha256_stages() {
        // Computed independently (Python's hmac module): card key 32 x 0x07, allow-list key
        // 32 x 0x09, card de ad be ef; HMAC(alk, HMAC(ck, card))[..16].
        let scheme = HmacEntryScheme::new([7; 32], [9; 32]);
        let card = CardId::new(&[0xde, 0xad, 0xbe, 0xef]).unwrap();
        let expected = EntryHash::from_hex("3c3ad5e890724cd43d29484c6707a2a2").unwrap();
        assert_eq!(scheme.entry(&card), expected);
        let other = HmacEntryScheme::new([7; 32], [8; 32]).entry(&card);
        assert_ne!(other, expected, "per-gate keys give different entries");
        let other = HmacEntryScheme::new([6; 32], [9; 32]).entry(&card);
        assert_ne!(other, expected, "the card key is part of the entry");
    }

    /// The cross-check fixture shared with the hub (appliance/store/src/site_key.rs,
    /// `fixture_shared_with_gate_core`): site key 32 x 0x5a, gate 7, card 04a1b2c3d4e5f6.
    /// The keys are what the hub derives (and `gatehouse gate add` prints) for that gate.
    #[test]
    fn entry_matches_the_hubs_fixture() {
        let key = |hex: &str| -> [u8; 32] {
            let mut k = [0u8; 32];
            for (i, b) in k.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            }
            k
        };
        let card_key = key("f4e047f2f59e55a4473ea1ed70a5444e3f17de00bc1683bb969f45764dcd435f");
        let gate_key = key("e88991bd0db543ff7fcac2a98eb2052ca7ae665a3e0d6384affd2e76efa4bdf1");
        let card = CardId::from_hex("04a1b2c3d4e5f6").unwrap();
        assert_eq!(
            HmacEntryScheme::new(card_key, gate_key).entry(&card),
            EntryHash::from_hex("9b2c3f8a4b5a9bade5c3fa535a3aeeda").unwrap()
        );
    }

    #[test]
    fn sorted_set_operations_and_overflow() {
        let mut list = AllowList::<3>::new();
        for b in [5u8, 1, 3, 3] {
            list.insert(EntryHash([b; 16]));
        }
        assert_eq!(list.len(), 3);
        assert!(list.contains(&EntryHash([3; 16])));
        assert!(!list.contains(&EntryHash([2; 16])));
        list.insert(EntryHash([9; 16]));
        assert_eq!(list.overflowed(), 1);
        list.remove(&EntryHash([1; 16]));
        list.remove(&EntryHash([1; 16]));
        assert_eq!(list.len(), 2);
        let firsts: std::vec::Vec<u8> = list.iter().map(|e| e.0[0]).collect();
        assert_eq!(firsts, [3, 5]);
        list.set_version(4);
        list.clear();
        assert_eq!((list.len(), list.version(), list.overflowed()), (0, 0, 0));
    }
}
