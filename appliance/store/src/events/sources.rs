//! Event sources: the outside systems (NVRs, sensor gateways) allowed to send events, each
//! with its own API key for the webhook and, for an NVR speaking Frigate's MQTT, its own
//! topic prefix.
//!
//! Promises:
//! - A key is 32 random bytes from the OS, written as base64url without padding (43
//!   characters); it is returned once ([`Store::add_event_source`],
//!   [`Store::rotate_event_source_key`]) and stored only as SHA-256 of its text
//!   ([`api_key_hash`]), so a copy of the database does not let anyone send events.
//!   [`Store::event_source_by_key`] looks the hash up (no secret is compared in Rust).
//! - Names are 1 to 64 characters of `A-Z a-z 0-9 . _ -` (they are the `source` of the
//!   events); `system` and `tunnel` are the box's own and cannot be registered.
//! - An MQTT prefix belongs to one source.
//! - The box's own sources (`system`, `tunnel`) exist only through
//!   [`Store::ensure_internal_source`], which the hub calls at start to hand its own
//!   processes (the tunnel) a key for the webhook.

use super::{parse_source_kind, write_tx};
use crate::error::{is_unique_violation, Entity, StoreError};
use crate::store::{from_unix_ms, to_unix_ms, Result, Store};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatehouse_alerts::model::{limits, SourceId, SourceKind};
use rand_core::{OsRng, RngCore};
use rusqlite::{params, OptionalExtension, Row};
use sha2::{Digest, Sha256};
use std::fmt;
use time::OffsetDateTime;

/// Source names the box uses for its own events.
const RESERVED_NAMES: [&str; 2] = ["system", "tunnel"];

/// A registered source (no key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource {
    pub id: SourceId,
    /// What its events carry as `source`.
    pub name: String,
    pub kind: SourceKind,
    /// Frigate's `mqtt.topic_prefix` for this NVR (`frigate` by default): its messages
    /// arrive on `<prefix>/events` and `<prefix>/reviews`.
    pub mqtt_prefix: Option<String>,
    /// Where snapshot and clip paths of this source resolve (an NVR's web address).
    pub base_url: Option<String>,
    /// A disabled source's key and prefix are still found; the hub refuses its events.
    pub enabled: bool,
    pub created_at: OffsetDateTime,
}

/// A source's API key. `Debug` is redacted; [`ApiKey::expose`] gives the text to show
/// the admin once.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key as the source sends it (base64url, 43 characters).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn generate() -> Result<ApiKey> {
        let mut bytes = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| StoreError::Config(format!("no randomness from the OS: {e}")))?;
        Ok(ApiKey(URL_SAFE_NO_PAD.encode(bytes)))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// SHA-256 of an API key's text: the only form of it the database holds.
pub fn api_key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn check_source_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > limits::NAME {
        return Err(StoreError::invalid(
            "source name",
            format!("must be 1 to {} characters", limits::NAME),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(StoreError::invalid(
            "source name",
            format!("{name:?} may only contain letters, digits, '.', '_' and '-'"),
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(StoreError::invalid(
            "source name",
            format!("{name:?} is reserved for the box's own events"),
        ));
    }
    Ok(())
}

/// An MQTT topic prefix: 1 to 64 characters, no wildcards (`+`, `#`), no spaces or control
/// characters, not starting or ending with `/` (MQTT 3.1.1, section 4.7).
fn check_mqtt_prefix(prefix: &str) -> Result<()> {
    let bad = |why: &str| StoreError::invalid("MQTT prefix", format!("{prefix:?} {why}"));
    if prefix.is_empty() || prefix.len() > limits::NAME {
        return Err(bad(&format!("must be 1 to {} characters", limits::NAME)));
    }
    if prefix.contains(['+', '#']) {
        return Err(bad("must not contain the wildcards '+' or '#'"));
    }
    if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    if prefix.starts_with('/') || prefix.ends_with('/') {
        return Err(bad("must not start or end with '/'"));
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host, without spaces or control characters, at
/// most [`limits::URL`] bytes. Not a full RFC 3986 parse: enough to catch a typo before
/// the first delivery does.
pub(super) fn check_http_url(field: &'static str, url: &str) -> Result<()> {
    let bad = |why: &str| StoreError::invalid(field, format!("{url:?} {why}"));
    if url.len() > limits::URL {
        return Err(bad(&format!("is longer than {} bytes", limits::URL)));
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(bad("has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    Ok(())
}

const SOURCE_COLS: &str = "id, name, kind, mqtt_prefix, base_url, enabled, created_at";

type SourceRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    bool,
    i64,
);

fn source_row(r: &Row<'_>) -> rusqlite::Result<SourceRow> {
    SourceRow::try_from(r)
}

fn event_source(row: SourceRow) -> Result<EventSource> {
    let (id, name, kind, mqtt_prefix, base_url, enabled, created_at) = row;
    Ok(EventSource {
        id,
        name,
        kind: parse_source_kind(&kind)?,
        mqtt_prefix,
        base_url,
        enabled,
        created_at: from_unix_ms(created_at)?,
    })
}

impl Store {
    /// Registers a source and returns it with its API key (shown here and only here). A
    /// taken name is [`StoreError::NameTaken`]; a prefix used by another source is
    /// [`StoreError::Conflict`].
    pub fn add_event_source(
        &self,
        name: &str,
        kind: SourceKind,
        mqtt_prefix: Option<&str>,
        base_url: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(EventSource, ApiKey)> {
        check_source_name(name)?;
        if let Some(p) = mqtt_prefix {
            check_mqtt_prefix(p)?;
        }
        if let Some(u) = base_url {
            check_http_url("base URL", u)?;
        }
        let key = ApiKey::generate()?;
        let hash = api_key_hash(key.expose());
        let tx = write_tx(self.conn())?;
        let taken: Option<String> = tx
            .query_row(
                "SELECT name FROM event_sources WHERE name = ?1 OR mqtt_prefix = ?2",
                params![name, mqtt_prefix],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(existing) = taken {
            return Err(if existing == name {
                StoreError::NameTaken {
                    entity: Entity::EventSource,
                    name: name.to_string(),
                }
            } else {
                StoreError::Conflict {
                    entity: Entity::EventSource,
                    key: format!("{name:?}"),
                    why: format!(
                        "MQTT prefix {:?} is already used by source {existing:?}",
                        mqtt_prefix.unwrap_or_default()
                    ),
                }
            });
        }
        tx.execute(
            "INSERT INTO event_sources (name, kind, key_hash, mqtt_prefix, base_url, enabled, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
            params![name, kind.as_str(), &hash[..], mqtt_prefix, base_url, to_unix_ms(now)?],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok((self.event_source(id)?, key))
    }

    /// One source by id.
    pub fn event_source(&self, id: SourceId) -> Result<EventSource> {
        let sql = format!("SELECT {SOURCE_COLS} FROM event_sources WHERE id = ?1");
        let row = self.conn().query_row(&sql, [id], source_row).optional()?;
        row.map(event_source)
            .transpose()?
            .ok_or_else(|| StoreError::not_found(Entity::EventSource, id))
    }

    /// The source called `name`.
    pub fn event_source_by_name(&self, name: &str) -> Result<EventSource> {
        let sql = format!("SELECT {SOURCE_COLS} FROM event_sources WHERE name = ?1");
        let row = self.conn().query_row(&sql, [name], source_row).optional()?;
        row.map(event_source)
            .transpose()?
            .ok_or_else(|| StoreError::not_found(Entity::EventSource, format!("{name:?}")))
    }

    /// The source whose key is `key`, enabled or not (the caller refuses a disabled one
    /// with its own message). Looked up by the key's hash.
    pub fn event_source_by_key(&self, key: &str) -> Result<Option<EventSource>> {
        let hash = api_key_hash(key);
        let sql = format!("SELECT {SOURCE_COLS} FROM event_sources WHERE key_hash = ?1");
        let row = self
            .conn()
            .query_row(&sql, [&hash[..]], source_row)
            .optional()?;
        row.map(event_source).transpose()
    }

    /// SHA-256 of the source's current API key ([`api_key_hash`]); it changes when the
    /// key is rotated. The hub derives an NVR's MQTT password from it.
    pub fn event_source_key_hash(&self, id: SourceId) -> Result<[u8; 32]> {
        let hash: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT key_hash FROM event_sources WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        let hash = hash.ok_or_else(|| StoreError::not_found(Entity::EventSource, id))?;
        <[u8; 32]>::try_from(hash.as_slice())
            .map_err(|_| StoreError::Config(format!("event source {id}: key hash is not 32 bytes")))
    }

    /// Every source, by id.
    pub fn list_event_sources(&self) -> Result<Vec<EventSource>> {
        let sql = format!("SELECT {SOURCE_COLS} FROM event_sources ORDER BY id");
        let mut st = self.conn().prepare(&sql)?;
        let rows = st
            .query_map([], source_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(event_source).collect()
    }

    /// The enabled NVR sources with an MQTT prefix: what the hub subscribes to.
    pub fn nvr_mqtt_prefixes(&self) -> Result<Vec<EventSource>> {
        let sql = format!(
            "SELECT {SOURCE_COLS} FROM event_sources
             WHERE kind = 'nvr' AND enabled = 1 AND mqtt_prefix IS NOT NULL ORDER BY id"
        );
        let mut st = self.conn().prepare(&sql)?;
        let rows = st
            .query_map([], source_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(event_source).collect()
    }

    /// Enables or disables a source; the hub refuses a disabled source's events (its
    /// key and prefix are still recognised, so the refusal can say why).
    pub fn set_event_source_enabled(&self, id: SourceId, enabled: bool) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE event_sources SET enabled = ?2 WHERE id = ?1",
            params![id, enabled],
        )?;
        if n == 0 {
            return Err(StoreError::not_found(Entity::EventSource, id));
        }
        Ok(())
    }

    /// Replaces a source's key with a fresh one, returned here and only here; the old key
    /// stops working at once.
    pub fn rotate_event_source_key(&self, id: SourceId) -> Result<ApiKey> {
        let key = ApiKey::generate()?;
        let n = match self.conn().execute(
            "UPDATE event_sources SET key_hash = ?2 WHERE id = ?1",
            params![id, &api_key_hash(key.expose())[..]],
        ) {
            Ok(n) => n,
            // 256 random bits colliding with another source's key: report, do not retry.
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Config("a new API key collided".into()))
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(StoreError::not_found(Entity::EventSource, id));
        }
        Ok(key)
    }

    /// Makes sure one of the box's own sources (`system` or `tunnel`, which
    /// [`Store::add_event_source`] refuses) exists with kind `kind` and that `key` is its
    /// API key: `None` (nothing in hand) or a key that is not the source's gets a fresh
    /// key, returned here and only here; a key that still matches returns `None` and
    /// changes nothing. A created source is enabled; an existing one keeps its enabled
    /// flag (an admin may have turned it off). Any other name is [`StoreError::Invalid`].
    pub fn ensure_internal_source(
        &self,
        name: &str,
        kind: SourceKind,
        key: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(EventSource, Option<ApiKey>)> {
        if !RESERVED_NAMES.contains(&name) {
            return Err(StoreError::invalid(
                "source name",
                format!(
                    "{name:?} is not one of the box's own sources ({}); register it with \
                     `gatehouse source add`",
                    RESERVED_NAMES.join(", ")
                ),
            ));
        }
        let tx = write_tx(self.conn())?;
        let existing: Option<(i64, Vec<u8>, String)> = tx
            .query_row(
                "SELECT id, key_hash, kind FROM event_sources WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (id, fresh) = match existing {
            Some((id, hash, stored_kind)) => {
                let matches = key.is_some_and(|k| hash.as_slice() == api_key_hash(k).as_slice());
                if matches && stored_kind == kind.as_str() {
                    return Ok((self.event_source(id)?, None));
                }
                let fresh = (!matches).then(ApiKey::generate).transpose()?;
                let hash = fresh
                    .as_ref()
                    .map_or(hash, |k| api_key_hash(k.expose()).to_vec());
                tx.execute(
                    "UPDATE event_sources SET key_hash = ?2, kind = ?3 WHERE id = ?1",
                    params![id, hash, kind.as_str()],
                )?;
                (id, fresh)
            }
            None => {
                let fresh = ApiKey::generate()?;
                tx.execute(
                    "INSERT INTO event_sources (name, kind, key_hash, enabled, created_at)
                     VALUES (?1, ?2, ?3, 1, ?4)",
                    params![
                        name,
                        kind.as_str(),
                        &api_key_hash(fresh.expose())[..],
                        to_unix_ms(now)?
                    ],
                )?;
                (tx.last_insert_rowid(), Some(fresh))
            }
        };
        tx.commit()?;
        Ok((self.event_source(id)?, fresh))
    }

    /// Removes a source: its key and MQTT prefix stop working. Its events stay (they carry
    /// the source's name, not its id).
    pub fn remove_event_source(&self, id: SourceId) -> Result<()> {
        if self
            .conn()
            .execute("DELETE FROM event_sources WHERE id = ?1", [id])?
            == 0
        {
            return Err(StoreError::not_found(Entity::EventSource, id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-03-02 10:00 UTC);

    #[test]
    fn the_boxs_own_sources_get_keys_only_through_ensure_internal_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Admins cannot take the reserved names.
        let e = store
            .add_event_source("tunnel", SourceKind::Tunnel, None, None, T0)
            .unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");

        // First start: created, enabled, with a fresh key the webhook recognises.
        let (src, key) = store
            .ensure_internal_source("tunnel", SourceKind::Tunnel, None, T0)
            .unwrap();
        let key = key.unwrap();
        assert_eq!(
            (src.name.as_str(), src.kind, src.enabled),
            ("tunnel", SourceKind::Tunnel, true)
        );
        assert_eq!(
            store.event_source_by_key(key.expose()).unwrap().unwrap().id,
            src.id
        );
        // The key in hand still matches: nothing changes.
        let (again, none) = store
            .ensure_internal_source("tunnel", SourceKind::Tunnel, Some(key.expose()), T0)
            .unwrap();
        assert_eq!((again.id, none), (src.id, None));
        // A lost or wrong key: a new one replaces it; the old one stops working. An
        // admin's "disabled" stays.
        store.set_event_source_enabled(src.id, false).unwrap();
        let (rotated, new_key) = store
            .ensure_internal_source("tunnel", SourceKind::Tunnel, Some("not-the-key"), T0)
            .unwrap();
        let new_key = new_key.unwrap();
        assert_eq!(rotated.id, src.id);
        assert!(!rotated.enabled);
        assert_ne!(new_key, key);
        assert!(store.event_source_by_key(key.expose()).unwrap().is_none());
        assert_eq!(
            store
                .event_source_by_key(new_key.expose())
                .unwrap()
                .unwrap()
                .name,
            "tunnel"
        );
        assert_eq!(store.list_event_sources().unwrap().len(), 1);

        // Only the reserved names.
        let e = store
            .ensure_internal_source("nvr-yard", SourceKind::Nvr, None, T0)
            .unwrap_err();
        assert!(e.to_string().contains("gatehouse source add"), "{e}");
    }
}
