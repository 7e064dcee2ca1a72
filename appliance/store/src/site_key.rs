//! The site key: 32 random bytes generated on the box at first start, kept in
//! `<data_dir>/site.key` (0600), from which every card hash and every gate's allow-list key
//! is derived.
//!
//! Promises:
//! - The file is created atomically: the key is written and fsynced under a temporary name
//!   and then hard-linked into place, so concurrent first starts agree on one key and a
//!   crash never leaves a short key file.
//! - The key and everything derived from it never appear in `Debug` output or logs.
//! - The raw acc_id is used only as HMAC input and never kept.
//!
//! # Key scheme
//!
//! Every MAC is HMAC-SHA-256 (RFC 2104 over FIPS 180-4); `S` is the site key.
//!
//! | name | value | who holds it |
//! |---|---|---|
//! | card key | `HMAC(S, "gatehouse card key v1")` | the hub, and every gate |
//! | card hash | `HMAC(card key, acc_id)`: the `cards.hash` column | the hub's database |
//! | gate key of gate `g` | `HMAC(S, "gatehouse gate allow-list v1" \|\| g as u64 big-endian)` | the hub, and gate `g` only |
//! | allow-list entry | `HMAC(gate key, card hash)[..16]` | gate `g`'s offline list |
//! | NVR MQTT key | `HMAC(S, "gatehouse nvr mqtt key v1")` | the hub only (it derives the NVRs' MQTT passwords, see `gatehouse_hub::mqtt`) |
//!
//! So the hub computes every gate's allow-list from the database alone ([`allow_list_entry`]
//! of the stored hash), never needing a raw card id, and a gate computes the same entry
//! from the card it reads (`HMAC(gate key, HMAC(card key, raw bytes))[..16]`, gate-core's
//! `HmacEntryScheme`).
//!
//! What a theft costs:
//! - A stolen gate leaks its own list only: another gate's entries need another gate key,
//!   and entries are keyed hashes, not card ids.
//! - Every gate holds the card key. A stolen gate **together with** a stolen database (the
//!   `cards.hash` column) lets an attacker test candidate card numbers offline (compute
//!   `HMAC(card key, candidate)` and look it up); card numbers are short and often
//!   sequential, so that search is cheap. A stolen database alone, or a stolen gate alone,
//!   does not allow it. This is the price of gates computing entries without the hub: keep
//!   backups of the database as secret as the site key.
//! - The site key itself never leaves the box.

use crate::error::StoreError;
use gatehouse_access::model::{CardHash, GateId};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// The key file's name inside the data directory.
pub const SITE_KEY_FILE: &str = "site.key";

/// Key length in bytes (the HMAC-SHA-256 block-size-independent recommendation: at least
/// the output length, RFC 2104 section 3).
pub const SITE_KEY_LEN: usize = 32;

/// Domain separator for per-gate allow-list keys. Changing it invalidates every gate's list.
const GATE_KEY_CONTEXT: &[u8] = b"gatehouse gate allow-list v1";

/// Domain separator of the card key. Changing it invalidates every enrolled card.
const CARD_KEY_CONTEXT: &[u8] = b"gatehouse card key v1";

/// Domain separator of the NVR MQTT key. Changing it changes every NVR's MQTT password.
const NVR_MQTT_KEY_CONTEXT: &[u8] = b"gatehouse nvr mqtt key v1";

/// Length of the card key and of a gate key.
pub const DERIVED_KEY_LEN: usize = 32;

/// Length of one offline allow-list entry: HMAC-SHA-256 truncated to 128 bits
/// (truncation to at least half the output is allowed by RFC 2104 section 5).
pub const ALLOW_LIST_ENTRY_LEN: usize = 16;

/// The site's secret hashing key (and the card key derived from it, kept to spare one HMAC
/// per decision).
#[derive(Clone)]
pub struct SiteKey {
    key: [u8; SITE_KEY_LEN],
    card_key: [u8; DERIVED_KEY_LEN],
}

impl fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SiteKey(<redacted>)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_key_length(),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_key_length() -> HmacSha256 {
    // Invariant: `Hmac::new_from_slice` only fails for fixed-key-size MACs; HMAC takes
    // any key length. Keep a total function anyway: hash under the empty key.
    <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default())
}

impl SiteKey {
    /// Loads `<data_dir>/site.key`, creating it (0600, random) if it does not exist.
    pub fn load_or_create(data_dir: &Path) -> Result<SiteKey, StoreError> {
        crate::schema::ensure_dir(data_dir)?;
        let path = data_dir.join(SITE_KEY_FILE);
        match Self::load(&path) {
            Ok(k) => return Ok(k),
            Err(StoreError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }

        let mut key = [0u8; SITE_KEY_LEN];
        OsRng
            .try_fill_bytes(&mut key)
            .map_err(|e| StoreError::SiteKey(format!("no randomness from the OS: {e}")))?;

        let tmp = data_dir.join(format!(
            ".{SITE_KEY_FILE}.{}.{:016x}",
            std::process::id(),
            OsRng.next_u64()
        ));
        let io_tmp = |source| StoreError::Io {
            path: tmp.clone(),
            source,
        };
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_tmp)?;
            f.write_all(&key).map_err(io_tmp)?;
            f.sync_all().map_err(io_tmp)?;
        }
        // link() fails if the name exists: whoever links first wins, everyone reads theirs.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Ok(dir) = fs::File::open(data_dir) {
                    let _ = dir.sync_all();
                }
                tracing::info!(path = %path.display(), "generated a new site key");
                Ok(SiteKey::from_bytes(key))
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::load(&path),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn load(path: &Path) -> Result<SiteKey, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = fs::File::open(path).map_err(io)?;
        let meta = f.metadata().map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "site key was readable by others; setting 0600");
            f.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        let mut buf = Vec::with_capacity(SITE_KEY_LEN + 1);
        Read::by_ref(&mut f)
            .take(SITE_KEY_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(io)?;
        let key: [u8; SITE_KEY_LEN] = buf.as_slice().try_into().map_err(|_| {
            StoreError::SiteKey(format!(
                "{} is not {SITE_KEY_LEN} bytes long; refusing to use it (restore it from backup: \
                 every enrolled card depends on it)",
                path.display()
            ))
        })?;
        Ok(SiteKey::from_bytes(key))
    }

    /// A key from bytes (tests, restores).
    pub fn from_bytes(key: [u8; SITE_KEY_LEN]) -> SiteKey {
        SiteKey {
            key,
            card_key: hmac(&key, &[CARD_KEY_CONTEXT]),
        }
    }

    /// The card key, HMAC-SHA-256(site key, "gatehouse card key v1"): the key of every card
    /// hash. Every gate is given it (see the module docs for what that costs).
    pub fn card_key(&self) -> [u8; DERIVED_KEY_LEN] {
        self.card_key
    }

    /// HMAC-SHA-256(card key, acc_id): how a card is stored and looked up.
    pub fn card_hash(&self, acc_id: &[u8]) -> CardHash {
        CardHash(hmac(&self.card_key, &[acc_id]))
    }

    /// The gate's allow-list key: HMAC-SHA-256(site key, "gatehouse gate allow-list v1" ||
    /// gate_id as 8 bytes big-endian). Given to that gate only, so a stolen gate leaks only
    /// its own list.
    pub fn gate_key(&self, gate_id: GateId) -> [u8; DERIVED_KEY_LEN] {
        hmac(&self.key, &[GATE_KEY_CONTEXT, &gate_id.to_be_bytes()])
    }

    /// The key of the NVRs' MQTT passwords: HMAC-SHA-256(site key, "gatehouse nvr mqtt
    /// key v1"). It never leaves the box (the NVRs get only what is derived from it).
    pub fn nvr_mqtt_key(&self) -> [u8; DERIVED_KEY_LEN] {
        hmac(&self.key, &[NVR_MQTT_KEY_CONTEXT])
    }
}

/// One offline allow-list entry: HMAC-SHA-256(gate key, card hash) truncated to 16 bytes.
/// The hub computes it from the stored hash; the gate computes the same from the card it
/// reads (hashing it with the card key first) and looks it up in its list.
pub fn allow_list_entry(
    gate_key: &[u8; DERIVED_KEY_LEN],
    card_hash: &CardHash,
) -> [u8; ALLOW_LIST_ENTRY_LEN] {
    let full = hmac(gate_key, &[&card_hash.0]);
    let mut out = [0u8; ALLOW_LIST_ENTRY_LEN];
    out.copy_from_slice(&full[..ALLOW_LIST_ENTRY_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = SiteKey::load_or_create(dir.path()).unwrap();
        let b = SiteKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(a.card_key, b.card_key);
        let meta = fs::metadata(dir.path().join(SITE_KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn debug_is_redacted() {
        let k = SiteKey::from_bytes([0xAB; 32]);
        let s = format!("{k:?}");
        assert_eq!(s, "SiteKey(<redacted>)");
        assert!(!s.contains("171"));
    }

    #[test]
    fn short_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SITE_KEY_FILE), [1u8; 31]).unwrap();
        let e = SiteKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::SiteKey(_)), "{e}");
        fs::write(dir.path().join(SITE_KEY_FILE), [1u8; 33]).unwrap();
        assert!(matches!(
            SiteKey::load_or_create(dir.path()),
            Err(StoreError::SiteKey(_))
        ));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2 (key "Jefe"), used through the same helper.
        let mac = hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn derivations_are_distinct_and_stable() {
        let k = SiteKey::from_bytes([7; 32]);
        assert_eq!(k.card_hash(b"123"), k.card_hash(b"123"));
        assert_ne!(k.card_hash(b"123"), k.card_hash(b"124"));
        assert_ne!(k.gate_key(1), k.gate_key(2));
        assert_ne!(k.card_key(), k.gate_key(0));
        // The card hash is keyed with the card key, not with the site key itself.
        assert_eq!(k.card_hash(b"123").0, hmac(&k.card_key(), &[b"123"]));
        assert_ne!(k.card_hash(b"123").0, hmac(&[7; 32], &[b"123"]));
        let g1 = k.gate_key(1);
        let g2 = k.gate_key(2);
        let h = k.card_hash(b"123");
        assert_ne!(allow_list_entry(&g1, &h), allow_list_entry(&g2, &h));
        assert_eq!(allow_list_entry(&g1, &h), allow_list_entry(&g1, &h));
        assert_eq!(&allow_list_entry(&g1, &h)[..], &hmac(&g1, &[&h.0])[..16]);
    }

    /// The cross-check fixture shared with gate-core (gate-fw/core/src/allow_list.rs,
    /// `entry_matches_the_hubs_fixture`): site key 32 x 0x5a, gate 7, card 04a1b2c3d4e5f6.
    /// The expected values were computed independently (Python's hmac module).
    #[test]
    fn fixture_shared_with_gate_core() {
        let k = SiteKey::from_bytes([0x5a; 32]);
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(&k.card_key()),
            "f4e047f2f59e55a4473ea1ed70a5444e3f17de00bc1683bb969f45764dcd435f"
        );
        assert_eq!(
            hex(&k.gate_key(7)),
            "e88991bd0db543ff7fcac2a98eb2052ca7ae665a3e0d6384affd2e76efa4bdf1"
        );
        let card = [0x04, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6];
        let hash = k.card_hash(&card);
        assert_eq!(
            hex(&hash.0),
            "5b49521615af15df37d85e82f8774a709a701168875e52489aacf54383d4854f"
        );
        assert_eq!(
            hex(&allow_list_entry(&k.gate_key(7), &hash)),
            "9b2c3f8a4b5a9bade5c3fa535a3aeeda"
        );
    }
}
