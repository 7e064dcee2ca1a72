//! The offline allow-list: which cards this gate lets in while the hub is unreachable.
//!
//! The gate never holds card ids: the hub sends entries, 16-byte keyed hashes of card ids
//! ([`EntryHash`]), and the gate hashes the card it reads the same way and looks it up.
//! How a card becomes an entry is an [`EntryScheme`]; [`HmacEntryScheme`] is the hub's
//! (`gatehouse_store::allow_list_entry`): the first 16 bytes of
//! HMAC-SHA-256(allow-list key, raw card bytes) (RFC 2104, FIPS 180-4), with the per-gate
//! allow-list key `SiteKey::gate_key(gate_id)`, so a stolen gate leaks only its own list.
//! The card bytes are the raw id as read ([`CardId::as_bytes`]), not its hex form.

use gatehouse_gate_proto::{CardId, EntryHash};
use heapless::Vec;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How a card id becomes an allow-list entry. Must be the hub's scheme exactly.
pub trait EntryScheme {
    fn entry(&self, card: &CardId) -> EntryHash;
}

/// The hub's scheme: `HMAC-SHA-256(allow_list_key, card bytes)[..16]`.
#[derive(Clone)]
pub struct HmacEntryScheme {
    key: [u8; 32],
}

impl HmacEntryScheme {
    pub fn new(allow_list_key: [u8; 32]) -> HmacEntryScheme {
        HmacEntryScheme {
            key: allow_list_key,
        }
    }
}

impl EntryScheme for HmacEntryScheme {
    fn entry(&self, card: &CardId) -> EntryHash {
        let mut out = [0u8; EntryHash::LEN];
        // HMAC accepts keys of any length, so new_from_slice cannot fail; if it ever did,
        // the all-zero entry is returned, which the hub never sends (it would be a 2^-128
        // collision), so the card is simply not found: fail closed.
        if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            mac.update(card.as_bytes());
            let full = mac.finalize().into_bytes();
            if let Some(head) = full.get(..EntryHash::LEN) {
                out.copy_from_slice(head);
            }
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
    fn hmac_scheme_is_truncated_hmac_sha256_of_the_raw_card_bytes() {
        // Computed independently: `printf '\xde\xad\xbe\xef' | openssl dgst -sha256 -mac
        // HMAC -macopt hexkey:0707...07` (32 bytes of 0x07), first 16 bytes.
        let scheme = HmacEntryScheme::new([7; 32]);
        let card = CardId::new(&[0xde, 0xad, 0xbe, 0xef]).unwrap();
        let expected = EntryHash::from_hex("bc42a2dbc87d2a5c8dfcb61824bd45e4").unwrap();
        assert_eq!(scheme.entry(&card), expected);
        let other = HmacEntryScheme::new([8; 32]).entry(&card);
        assert_ne!(other, expected, "per-gate keys give different entries");
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
