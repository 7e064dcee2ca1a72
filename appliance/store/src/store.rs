//! [`Store`]: the hub's handle on its database for everything except the access-log
//! writer: opening and migrating, the `revision` counter, settings, and the access-side
//! CRUD used by the CLI and the admin API.
//!
//! Promises:
//! - Every mutation is one transaction; a failed call changes nothing.
//! - Failures come back as [`StoreError`] variants that say what is wrong (name taken, no
//!   such person, bad schedule, ...), never as a bare SQLite message when the cause is
//!   known.
//! - Cards are stored and looked up only by [`SiteKey::card_hash`]; the raw acc_id passes
//!   through [`Store::add_card`] / [`Store::find_card_by_acc_id`] as HMAC input only.
//! - Validity bounds are stored to whole seconds (UTC).

use crate::error::{is_unique_violation, Entity, StoreError};
use crate::schema;
use crate::site_key::SiteKey;
use gatehouse_access::model::{
    CardHash, CardId, Direction, Gate, GateId, Level, LevelId, Person, PersonId, Schedule,
    Validity, Zone, ZoneId,
};
use rand_core::{OsRng, RngCore};
use rusqlite::{params, Connection, OptionalExtension};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Date, OffsetDateTime};

/// Longest accepted name for zones, people and levels (characters).
pub const MAX_NAME_LEN: usize = 128;

/// Longest accepted gate name; gate names also appear in MQTT usernames.
pub const MAX_GATE_NAME_LEN: usize = 64;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The hub's database handle. One connection; not `Sync` — wrap it in a mutex or give each
/// thread its own (`Store::open` is cheap after the first).
pub struct Store {
    conn: Connection,
    data_dir: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// A gate's link key. `Debug` is redacted; [`GateSecret::expose`] gives the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct GateSecret(pub(crate) [u8; 32]);

impl GateSecret {
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for GateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GateSecret(<redacted>)")
    }
}

/// What [`Store::add_gate`] needs.
#[derive(Debug, Clone)]
pub struct NewGate {
    /// 1..=64 characters of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    pub zone: ZoneId,
    pub direction: Direction,
    pub relay_ms: u32,
    /// Addresses or CIDR prefixes the gate may connect from; `None` = anywhere.
    pub allowed_ips: Option<Vec<String>>,
    /// Defaults to `gate-<name>`.
    pub mqtt_username: Option<String>,
}

/// Returned once by [`Store::add_gate`]: everything the installer types into the gate.
#[derive(Debug, Clone)]
pub struct NewGateCredentials {
    pub id: GateId,
    pub secret: GateSecret,
    pub mqtt_username: String,
}

/// A gate as the admin sees it (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRecord {
    pub gate: Gate,
    pub allowed_ips: Option<Vec<String>>,
    pub mqtt_username: String,
    pub last_seen: Option<OffsetDateTime>,
}

/// What the hub's transports need to authenticate a gate.
#[derive(Debug, Clone)]
pub struct GateCredentials {
    pub id: GateId,
    pub name: String,
    pub enabled: bool,
    pub secret: GateSecret,
    pub allowed_ips: Option<Vec<String>>,
    pub mqtt_username: String,
}

/// What [`Store::add_card`] needs besides the raw card id.
#[derive(Debug, Clone, Default)]
pub struct NewCard {
    pub person: PersonId,
    pub master: bool,
    pub validity: Validity,
    /// Free text ("blue fob", "spare #3"). Must not contain the card id.
    pub label: Option<String>,
}

/// A stored card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    pub id: CardId,
    pub hash: CardHash,
    pub person: PersonId,
    pub enabled: bool,
    pub master: bool,
    pub validity: Validity,
    pub label: Option<String>,
}

/// A site holiday (a local date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holiday {
    pub date: Date,
    pub name: String,
}

const DATE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// A transaction that takes the write lock at once (`BEGIN IMMEDIATE`). A deferred one
/// that reads and then writes fails with `SQLITE_BUSY` at once, whatever the busy
/// timeout, when another connection committed in between (SQLite docs, "Transaction":
/// "BEGIN IMMEDIATE"); every transaction that writes uses this one.
pub(crate) fn write_tx(conn: &Connection) -> Result<rusqlite::Transaction<'_>> {
    Ok(rusqlite::Transaction::new_unchecked(
        conn,
        rusqlite::TransactionBehavior::Immediate,
    )?)
}

pub(crate) fn format_date(d: Date) -> Result<String> {
    d.format(DATE_FORMAT)
        .map_err(|e| StoreError::invalid("date", e.to_string()))
}

pub(crate) fn parse_date(s: &str) -> Result<Date> {
    Date::parse(s, DATE_FORMAT).map_err(|e| StoreError::Corrupt(format!("holiday date {s:?}: {e}")))
}

pub(crate) fn to_unix_s(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

pub(crate) fn from_unix_s(s: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(s)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {s}: {e}")))
}

pub(crate) fn to_unix_ms(t: OffsetDateTime) -> Result<i64> {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| StoreError::invalid("time", "out of range"))
}

pub(crate) fn from_unix_ms(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {ms} ms: {e}")))
}

pub(crate) fn validity_from_cols(from: Option<i64>, until: Option<i64>) -> Result<Validity> {
    Ok(Validity {
        from: from.map(from_unix_s).transpose()?,
        until: until.map(from_unix_s).transpose()?,
    })
}

fn validity_cols(v: &Validity) -> Result<(Option<i64>, Option<i64>)> {
    if let (Some(f), Some(u)) = (v.from, v.until) {
        if f > u {
            return Err(StoreError::invalid(
                "validity",
                format!("starts ({f}) after it ends ({u})"),
            ));
        }
    }
    Ok((v.from.map(to_unix_s), v.until.map(to_unix_s)))
}

pub(crate) fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::In => "in",
        Direction::Out => "out",
    }
}

pub(crate) fn parse_direction(s: &str) -> Result<Direction> {
    match s {
        "in" => Ok(Direction::In),
        "out" => Ok(Direction::Out),
        other => Err(StoreError::Corrupt(format!("gate direction {other:?}"))),
    }
}

pub(crate) fn parse_schedule(level: LevelId, json: &str) -> Result<Schedule> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("schedule of level {level}: {e}")))
}

pub(crate) fn parse_ips(json: Option<String>) -> Result<Option<Vec<String>>> {
    json.map(|j| {
        serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(format!("allowed_ips: {e}")))
    })
    .transpose()
}

pub(crate) fn check_name(field: &'static str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if name.trim() != name {
        return Err(StoreError::invalid(
            field,
            "must not start or end with whitespace",
        ));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(StoreError::invalid(
            field,
            format!("longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::invalid(field, "contains control characters"));
    }
    Ok(())
}

fn check_gate_name(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_GATE_NAME_LEN {
        return Err(StoreError::invalid(
            field,
            format!("must be 1 to {MAX_GATE_NAME_LEN} characters"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(StoreError::invalid(
            field,
            format!("{name:?} may only contain letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(())
}

fn check_ips(ips: &[String]) -> Result<()> {
    for entry in ips {
        let (addr, prefix) = match entry.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (entry.as_str(), None),
        };
        let bad = || {
            StoreError::invalid(
                "allowed IP",
                format!("{entry:?} is not an address or address/prefix"),
            )
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        if let Some(p) = prefix {
            let p: u8 = p.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if p > max {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// Checks a schedule before saving it, by the model's one definition of a valid schedule
/// ([`Schedule::validate`]).
pub fn validate_schedule(s: &Schedule) -> Result<()> {
    s.validate(None)
        .map_err(|e| StoreError::BadSchedule(e.to_string()))
}

fn random_secret() -> Result<GateSecret> {
    let mut s = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut s)
        .map_err(|e| StoreError::Config(format!("no randomness from the OS: {e}")))?;
    Ok(GateSecret(s))
}

/// id, name, enabled, valid_from, valid_until.
type PersonRow = (i64, String, bool, Option<i64>, Option<i64>);

type CardRow = (
    i64,
    Vec<u8>,
    i64,
    bool,
    bool,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

const CARD_COLS: &str = "id, hash, person_id, enabled, master, valid_from, valid_until, label";

/// A zone from `id, name, anti_passback`.
fn zone_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Zone> {
    Ok(Zone {
        id: r.get(0)?,
        name: r.get(1)?,
        anti_passback: r.get(2)?,
    })
}

/// Reads one row of the columns above (rusqlite converts a row into a tuple).
fn card_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CardRow> {
    CardRow::try_from(r)
}

pub(crate) fn card_hash_from_blob(b: &[u8]) -> Result<CardHash> {
    let arr: [u8; 32] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("card hash of {} bytes", b.len())))?;
    Ok(CardHash(arr))
}

fn card_record(row: CardRow) -> Result<CardRecord> {
    let (id, hash, person, enabled, master, from, until, label) = row;
    Ok(CardRecord {
        id,
        hash: card_hash_from_blob(&hash)?,
        person,
        enabled,
        master,
        validity: validity_from_cols(from, until)?,
        label,
    })
}

type GateRow = (
    i64,
    String,
    i64,
    String,
    bool,
    i64,
    Option<String>,
    String,
    Option<i64>,
);

const GATE_COLS: &str =
    "id, name, zone_id, direction, enabled, relay_ms, allowed_ips, mqtt_username, last_seen";

/// Reads one row of the columns above (rusqlite converts a row into a tuple).
fn gate_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GateRow> {
    GateRow::try_from(r)
}

pub(crate) fn relay_ms_from_col(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("relay_ms {v}")))
}

fn gate_record(row: GateRow) -> Result<GateRecord> {
    let (id, name, zone, direction, enabled, relay_ms, ips, mqtt_username, last_seen) = row;
    Ok(GateRecord {
        gate: Gate {
            id,
            name,
            zone,
            direction: parse_direction(&direction)?,
            enabled,
            relay_ms: relay_ms_from_col(relay_ms)?,
        },
        allowed_ips: parse_ips(ips)?,
        mqtt_username,
        last_seen: last_seen.map(from_unix_ms).transpose()?,
    })
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/gatehouse.db` and migrates it to the current
    /// schema. Refuses a database written by a newer release.
    pub fn open(data_dir: &Path) -> Result<Store> {
        let conn = schema::open_connection(data_dir)?;
        Ok(Store {
            conn,
            data_dir: data_dir.to_path_buf(),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// A counter bumped by every change to the access tables (not by the access log or a
    /// gate's `last_seen`). Read it before [`Store::snapshot`]; if it moved since, rebuild.
    pub fn revision(&self) -> Result<u64> {
        let v: i64 = self
            .conn
            .query_row("SELECT value FROM revision WHERE id = 1", [], |r| r.get(0))?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("revision {v}")))
    }

    /// Runs `PRAGMA integrity_check` and returns its first line (`"ok"` when healthy).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    // ---- settings ------------------------------------------------------------------

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    pub fn remove_setting(&self, key: &str) -> Result<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM settings WHERE key = ?1", [key])?
            > 0)
    }

    // ---- helpers -------------------------------------------------------------------

    fn exists(&self, table: &'static str, id: i64) -> Result<bool> {
        let sql = format!("SELECT 1 FROM {table} WHERE id = ?1");
        Ok(self
            .conn
            .query_row(&sql, [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn require(&self, entity: Entity, table: &'static str, id: i64) -> Result<()> {
        if self.exists(table, id)? {
            Ok(())
        } else {
            Err(StoreError::not_found(entity, id))
        }
    }

    /// Runs an `UPDATE`/`DELETE` by id; zero rows means no such thing.
    fn change_by_id(
        &self,
        entity: Entity,
        sql: &str,
        params: impl rusqlite::Params,
        id: i64,
    ) -> Result<()> {
        if self.conn.execute(sql, params)? == 0 {
            Err(StoreError::not_found(entity, id))
        } else {
            Ok(())
        }
    }

    fn insert_named(
        &self,
        entity: Entity,
        name: &str,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<i64> {
        match self.conn.execute(sql, params) {
            Ok(_) => Ok(self.conn.last_insert_rowid()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::NameTaken {
                entity,
                name: name.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The id of the zone, person or level called `name`.
    fn id_by_name(&self, entity: Entity, name: &str) -> Result<i64> {
        let sql = format!("SELECT id FROM {} WHERE name = ?1", entity.table());
        self.conn
            .query_row(&sql, [name], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::not_found(entity, format!("{name:?}")))
    }

    /// Renames a zone, person or level; a name in use is [`StoreError::NameTaken`].
    fn rename(&self, entity: Entity, id: i64, name: &str) -> Result<()> {
        let field = match entity {
            Entity::Zone => "zone name",
            Entity::Person => "person name",
            Entity::Level => "level name",
            _ => "name",
        };
        check_name(field, name)?;
        let sql = format!("UPDATE {} SET name = ?2 WHERE id = ?1", entity.table());
        match self.conn.execute(&sql, params![id, name]) {
            Ok(0) => Err(StoreError::not_found(entity, id)),
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::NameTaken {
                entity,
                name: name.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    // ---- zones ---------------------------------------------------------------------

    pub fn add_zone(&self, name: &str, anti_passback: bool) -> Result<ZoneId> {
        check_name("zone name", name)?;
        self.insert_named(
            Entity::Zone,
            name,
            "INSERT INTO zones (name, anti_passback) VALUES (?1, ?2)",
            params![name, anti_passback],
        )
    }

    pub fn zone(&self, id: ZoneId) -> Result<Zone> {
        self.conn
            .query_row(
                "SELECT id, name, anti_passback FROM zones WHERE id = ?1",
                [id],
                zone_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::not_found(Entity::Zone, id))
    }

    pub fn zone_by_name(&self, name: &str) -> Result<Zone> {
        self.zone(self.id_by_name(Entity::Zone, name)?)
    }

    pub fn list_zones(&self) -> Result<Vec<Zone>> {
        let mut st = self
            .conn
            .prepare("SELECT id, name, anti_passback FROM zones ORDER BY id")?;
        let rows = st.query_map([], zone_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn rename_zone(&self, id: ZoneId, name: &str) -> Result<()> {
        self.rename(Entity::Zone, id, name)
    }

    pub fn set_zone_anti_passback(&self, id: ZoneId, on: bool) -> Result<()> {
        self.change_by_id(
            Entity::Zone,
            "UPDATE zones SET anti_passback = ?2 WHERE id = ?1",
            params![id, on],
            id,
        )
    }

    /// Removes a zone; refused while gates are in it.
    pub fn remove_zone(&self, id: ZoneId) -> Result<()> {
        let tx = write_tx(&self.conn)?;
        self.require(Entity::Zone, "zones", id)?;
        let gates: i64 =
            tx.query_row("SELECT count(*) FROM gates WHERE zone_id = ?1", [id], |r| {
                r.get(0)
            })?;
        if gates > 0 {
            return Err(StoreError::InUse {
                entity: Entity::Zone,
                key: id.to_string(),
                by: format!("{gates} gate(s)"),
            });
        }
        tx.execute("DELETE FROM zones WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    // ---- gates ---------------------------------------------------------------------

    /// Adds a gate with a fresh random secret, returned here and only here.
    pub fn add_gate(&self, new: &NewGate) -> Result<NewGateCredentials> {
        check_gate_name("gate name", &new.name)?;
        if let Some(ips) = &new.allowed_ips {
            check_ips(ips)?;
        }
        let mqtt_username = match &new.mqtt_username {
            Some(u) => {
                check_gate_name("MQTT username", u)?;
                u.clone()
            }
            None => format!("gate-{}", new.name),
        };
        let ips_json = new
            .allowed_ips
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::invalid("allowed IPs", e.to_string()))?;
        let secret = random_secret()?;

        let tx = write_tx(&self.conn)?;
        self.require(Entity::Zone, "zones", new.zone)?;
        let taken: Option<String> = tx
            .query_row(
                "SELECT name FROM gates WHERE name = ?1 OR mqtt_username = ?2",
                params![new.name, mqtt_username],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(existing) = taken {
            return Err(if existing == new.name {
                StoreError::NameTaken {
                    entity: Entity::Gate,
                    name: new.name.clone(),
                }
            } else {
                StoreError::invalid(
                    "MQTT username",
                    format!("{mqtt_username:?} is already used by gate {existing:?}"),
                )
            });
        }
        tx.execute(
            "INSERT INTO gates (name, zone_id, direction, enabled, relay_ms, secret, allowed_ips, mqtt_username)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7)",
            params![
                new.name,
                new.zone,
                direction_str(new.direction),
                new.relay_ms,
                &secret.0[..],
                ips_json,
                mqtt_username
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(NewGateCredentials {
            id,
            secret,
            mqtt_username,
        })
    }

    pub fn gate(&self, id: GateId) -> Result<GateRecord> {
        let sql = format!("SELECT {GATE_COLS} FROM gates WHERE id = ?1");
        let row = self.conn.query_row(&sql, [id], gate_row).optional()?;
        row.map(gate_record)
            .transpose()?
            .ok_or_else(|| StoreError::not_found(Entity::Gate, id))
    }

    pub fn gate_by_name(&self, name: &str) -> Result<GateRecord> {
        let sql = format!("SELECT {GATE_COLS} FROM gates WHERE name = ?1");
        let row = self.conn.query_row(&sql, [name], gate_row).optional()?;
        row.map(gate_record)
            .transpose()?
            .ok_or_else(|| StoreError::not_found(Entity::Gate, format!("{name:?}")))
    }

    pub fn list_gates(&self) -> Result<Vec<GateRecord>> {
        let sql = format!("SELECT {GATE_COLS} FROM gates ORDER BY id");
        let mut st = self.conn.prepare(&sql)?;
        let rows = st
            .query_map([], gate_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(gate_record).collect()
    }

    /// Every gate's credentials, for the transports' authentication tables.
    pub fn gate_credentials(&self) -> Result<Vec<GateCredentials>> {
        let mut st = self.conn.prepare(
            "SELECT id, name, enabled, secret, allowed_ips, mqtt_username FROM gates ORDER BY id",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, name, enabled, secret, ips, mqtt_username)| {
                let secret: [u8; 32] = secret.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt(format!("secret of gate {id} has the wrong length"))
                })?;
                Ok(GateCredentials {
                    id,
                    name,
                    enabled,
                    secret: GateSecret(secret),
                    allowed_ips: parse_ips(ips)?,
                    mqtt_username,
                })
            })
            .collect()
    }

    /// Replaces a gate's secret with a fresh one, returned here and only here.
    pub fn rotate_gate_secret(&self, id: GateId) -> Result<GateSecret> {
        let secret = random_secret()?;
        self.change_by_id(
            Entity::Gate,
            "UPDATE gates SET secret = ?2 WHERE id = ?1",
            params![id, &secret.0[..]],
            id,
        )?;
        Ok(secret)
    }

    pub fn set_gate_enabled(&self, id: GateId, enabled: bool) -> Result<()> {
        self.change_by_id(
            Entity::Gate,
            "UPDATE gates SET enabled = ?2 WHERE id = ?1",
            params![id, enabled],
            id,
        )
    }

    pub fn set_gate_relay_ms(&self, id: GateId, relay_ms: u32) -> Result<()> {
        self.change_by_id(
            Entity::Gate,
            "UPDATE gates SET relay_ms = ?2 WHERE id = ?1",
            params![id, relay_ms],
            id,
        )
    }

    pub fn set_gate_allowed_ips(&self, id: GateId, ips: Option<&[String]>) -> Result<()> {
        if let Some(ips) = ips {
            check_ips(ips)?;
        }
        let json = ips
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::invalid("allowed IPs", e.to_string()))?;
        self.change_by_id(
            Entity::Gate,
            "UPDATE gates SET allowed_ips = ?2 WHERE id = ?1",
            params![id, json],
            id,
        )
    }

    /// Records when each gate was last heard from, all in one transaction (one fsync, one
    /// short write lock, so the access log's writer is not kept waiting once per gate).
    /// Unknown gate ids are skipped. Does not bump the revision.
    pub fn touch_gates(&self, seen: &[(GateId, OffsetDateTime)]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let tx = write_tx(&self.conn)?;
        {
            let mut stmt = tx.prepare_cached("UPDATE gates SET last_seen = ?2 WHERE id = ?1")?;
            for (id, at) in seen {
                stmt.execute(params![id, to_unix_ms(*at)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes a gate (and its level memberships). Its log rows stay.
    pub fn remove_gate(&self, id: GateId) -> Result<()> {
        self.change_by_id(Entity::Gate, "DELETE FROM gates WHERE id = ?1", [id], id)
    }

    // ---- people --------------------------------------------------------------------

    pub fn add_person(&self, name: &str, validity: Validity) -> Result<PersonId> {
        check_name("person name", name)?;
        let (from, until) = validity_cols(&validity)?;
        self.insert_named(
            Entity::Person,
            name,
            "INSERT INTO people (name, enabled, valid_from, valid_until) VALUES (?1, 1, ?2, ?3)",
            params![name, from, until],
        )
    }

    pub fn person(&self, id: PersonId) -> Result<Person> {
        let row: Option<PersonRow> = self
            .conn
            .query_row(
                "SELECT id, name, enabled, valid_from, valid_until FROM people WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((id, name, enabled, from, until)) = row else {
            return Err(StoreError::not_found(Entity::Person, id));
        };
        let mut st = self.conn.prepare_cached(
            "SELECT level_id FROM person_levels WHERE person_id = ?1 ORDER BY level_id",
        )?;
        let levels = st
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<LevelId>>>()?;
        Ok(Person {
            id,
            name,
            enabled,
            validity: validity_from_cols(from, until)?,
            levels,
        })
    }

    pub fn person_by_name(&self, name: &str) -> Result<Person> {
        self.person(self.id_by_name(Entity::Person, name)?)
    }

    pub fn list_people(&self) -> Result<Vec<Person>> {
        let mut people: Vec<Person> = crate::snapshot::load_people(&self.conn)?
            .into_values()
            .collect();
        people.sort_by_key(|p| p.id);
        Ok(people)
    }

    pub fn rename_person(&self, id: PersonId, name: &str) -> Result<()> {
        self.rename(Entity::Person, id, name)
    }

    pub fn set_person_enabled(&self, id: PersonId, enabled: bool) -> Result<()> {
        self.change_by_id(
            Entity::Person,
            "UPDATE people SET enabled = ?2 WHERE id = ?1",
            params![id, enabled],
            id,
        )
    }

    pub fn set_person_validity(&self, id: PersonId, validity: Validity) -> Result<()> {
        let (from, until) = validity_cols(&validity)?;
        self.change_by_id(
            Entity::Person,
            "UPDATE people SET valid_from = ?2, valid_until = ?3 WHERE id = ?1",
            params![id, from, until],
            id,
        )
    }

    /// Removes a person, their cards and their grants. Log rows keep the ids.
    pub fn remove_person(&self, id: PersonId) -> Result<()> {
        self.change_by_id(Entity::Person, "DELETE FROM people WHERE id = ?1", [id], id)
    }

    // ---- cards ---------------------------------------------------------------------

    /// Enrols a card. Only `key.card_hash(acc_id)` is stored.
    pub fn add_card(&self, key: &SiteKey, acc_id: &[u8], new: &NewCard) -> Result<CardId> {
        if acc_id.is_empty() {
            return Err(StoreError::invalid("card id", "must not be empty"));
        }
        if let Some(label) = &new.label {
            check_label(label, acc_id)?;
        }
        self.insert_card(&key.card_hash(acc_id), new)
    }

    /// Enrols a card known only by its hash (learn mode: the hash an unknown card left in
    /// the access log). The same checks as [`Store::add_card`], except that a label
    /// cannot be checked against a card id nobody typed; refused with
    /// [`StoreError::CardExists`] if the card was enrolled meanwhile.
    pub fn add_card_by_hash(&self, hash: &CardHash, new: &NewCard) -> Result<CardId> {
        if let Some(label) = &new.label {
            check_label(label, &[])?;
        }
        self.insert_card(hash, new)
    }

    /// The one insert of a card, in one transaction: the person must exist and the hash
    /// must be new.
    fn insert_card(&self, hash: &CardHash, new: &NewCard) -> Result<CardId> {
        let (from, until) = validity_cols(&new.validity)?;
        let tx = write_tx(&self.conn)?;
        self.require(Entity::Person, "people", new.person)?;
        let existing: Option<i64> = tx
            .query_row("SELECT id FROM cards WHERE hash = ?1", [&hash.0[..]], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(existing) = existing {
            return Err(StoreError::CardExists { existing });
        }
        tx.execute(
            "INSERT INTO cards (hash, person_id, enabled, master, valid_from, valid_until, label)
             VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)",
            params![&hash.0[..], new.person, new.master, from, until, new.label],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Looks a card up by the raw id read from it (hashed here, never stored).
    pub fn find_card_by_acc_id(&self, key: &SiteKey, acc_id: &[u8]) -> Result<Option<CardRecord>> {
        self.find_card_by_hash(&key.card_hash(acc_id))
    }

    pub fn find_card_by_hash(&self, hash: &CardHash) -> Result<Option<CardRecord>> {
        let sql = format!("SELECT {CARD_COLS} FROM cards WHERE hash = ?1");
        let row = self
            .conn
            .query_row(&sql, [&hash.0[..]], card_row)
            .optional()?;
        row.map(card_record).transpose()
    }

    pub fn card(&self, id: CardId) -> Result<CardRecord> {
        let sql = format!("SELECT {CARD_COLS} FROM cards WHERE id = ?1");
        let row = self.conn.query_row(&sql, [id], card_row).optional()?;
        row.map(card_record)
            .transpose()?
            .ok_or_else(|| StoreError::not_found(Entity::Card, id))
    }

    /// All cards, or one person's.
    pub fn list_cards(&self, person: Option<PersonId>) -> Result<Vec<CardRecord>> {
        let rows = match person {
            Some(p) => {
                self.require(Entity::Person, "people", p)?;
                let sql = format!("SELECT {CARD_COLS} FROM cards WHERE person_id = ?1 ORDER BY id");
                let mut st = self.conn.prepare(&sql)?;
                let rows = st
                    .query_map([p], card_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            }
            None => {
                let sql = format!("SELECT {CARD_COLS} FROM cards ORDER BY id");
                let mut st = self.conn.prepare(&sql)?;
                let rows = st
                    .query_map([], card_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            }
        };
        rows.into_iter().map(card_record).collect()
    }

    pub fn set_card_enabled(&self, id: CardId, enabled: bool) -> Result<()> {
        self.change_by_id(
            Entity::Card,
            "UPDATE cards SET enabled = ?2 WHERE id = ?1",
            params![id, enabled],
            id,
        )
    }

    pub fn set_card_master(&self, id: CardId, master: bool) -> Result<()> {
        self.change_by_id(
            Entity::Card,
            "UPDATE cards SET master = ?2 WHERE id = ?1",
            params![id, master],
            id,
        )
    }

    pub fn set_card_validity(&self, id: CardId, validity: Validity) -> Result<()> {
        let (from, until) = validity_cols(&validity)?;
        self.change_by_id(
            Entity::Card,
            "UPDATE cards SET valid_from = ?2, valid_until = ?3 WHERE id = ?1",
            params![id, from, until],
            id,
        )
    }

    pub fn remove_card(&self, id: CardId) -> Result<()> {
        self.change_by_id(Entity::Card, "DELETE FROM cards WHERE id = ?1", [id], id)
    }

    // ---- levels --------------------------------------------------------------------

    pub fn add_level(&self, name: &str, schedule: &Schedule) -> Result<LevelId> {
        check_name("level name", name)?;
        validate_schedule(schedule)?;
        let json =
            serde_json::to_string(schedule).map_err(|e| StoreError::BadSchedule(e.to_string()))?;
        self.insert_named(
            Entity::Level,
            name,
            "INSERT INTO levels (name, schedule) VALUES (?1, ?2)",
            params![name, json],
        )
    }

    pub fn level(&self, id: LevelId) -> Result<Level> {
        let row: Option<(i64, String, String)> = self
            .conn
            .query_row(
                "SELECT id, name, schedule FROM levels WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, name, schedule)) = row else {
            return Err(StoreError::not_found(Entity::Level, id));
        };
        let mut st = self.conn.prepare_cached(
            "SELECT gate_id FROM level_gates WHERE level_id = ?1 ORDER BY gate_id",
        )?;
        let gates = st
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<GateId>>>()?;
        Ok(Level {
            id,
            name,
            gates,
            schedule: parse_schedule(id, &schedule)?,
        })
    }

    pub fn level_by_name(&self, name: &str) -> Result<Level> {
        self.level(self.id_by_name(Entity::Level, name)?)
    }

    pub fn list_levels(&self) -> Result<Vec<Level>> {
        let mut levels: Vec<Level> = crate::snapshot::load_levels(&self.conn)?
            .into_values()
            .collect();
        levels.sort_by_key(|l| l.id);
        Ok(levels)
    }

    pub fn rename_level(&self, id: LevelId, name: &str) -> Result<()> {
        self.rename(Entity::Level, id, name)
    }

    pub fn set_level_schedule(&self, id: LevelId, schedule: &Schedule) -> Result<()> {
        validate_schedule(schedule)?;
        let json =
            serde_json::to_string(schedule).map_err(|e| StoreError::BadSchedule(e.to_string()))?;
        self.change_by_id(
            Entity::Level,
            "UPDATE levels SET schedule = ?2 WHERE id = ?1",
            params![id, json],
            id,
        )
    }

    /// Adds a gate to a level. Returns false if it was already there.
    pub fn add_level_gate(&self, level: LevelId, gate: GateId) -> Result<bool> {
        let tx = write_tx(&self.conn)?;
        self.require(Entity::Level, "levels", level)?;
        self.require(Entity::Gate, "gates", gate)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO level_gates (level_id, gate_id) VALUES (?1, ?2)",
            params![level, gate],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Removes a gate from a level. Returns false if it was not there.
    pub fn remove_level_gate(&self, level: LevelId, gate: GateId) -> Result<bool> {
        self.require(Entity::Level, "levels", level)?;
        self.require(Entity::Gate, "gates", gate)?;
        Ok(self.conn.execute(
            "DELETE FROM level_gates WHERE level_id = ?1 AND gate_id = ?2",
            params![level, gate],
        )? > 0)
    }

    /// Removes a level and every grant of it.
    pub fn remove_level(&self, id: LevelId) -> Result<()> {
        self.change_by_id(Entity::Level, "DELETE FROM levels WHERE id = ?1", [id], id)
    }

    // ---- grants --------------------------------------------------------------------

    /// Grants a level to a person. Returns false if already granted.
    pub fn grant_level(&self, person: PersonId, level: LevelId) -> Result<bool> {
        let tx = write_tx(&self.conn)?;
        self.require(Entity::Person, "people", person)?;
        self.require(Entity::Level, "levels", level)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO person_levels (person_id, level_id) VALUES (?1, ?2)",
            params![person, level],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Revokes a level from a person. Returns false if it was not granted.
    pub fn revoke_level(&self, person: PersonId, level: LevelId) -> Result<bool> {
        self.require(Entity::Person, "people", person)?;
        self.require(Entity::Level, "levels", level)?;
        Ok(self.conn.execute(
            "DELETE FROM person_levels WHERE person_id = ?1 AND level_id = ?2",
            params![person, level],
        )? > 0)
    }

    // ---- holidays ------------------------------------------------------------------

    pub fn add_holiday(&self, date: Date, name: &str) -> Result<()> {
        if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(StoreError::invalid(
                "holiday name",
                format!("at most {MAX_NAME_LEN} printable characters"),
            ));
        }
        let d = format_date(date)?;
        match self.conn.execute(
            "INSERT INTO holidays (date, name) VALUES (?1, ?2)",
            params![d, name],
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
                what: format!("a holiday on {d}"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub fn remove_holiday(&self, date: Date) -> Result<()> {
        let d = format_date(date)?;
        if self
            .conn
            .execute("DELETE FROM holidays WHERE date = ?1", [&d])?
            == 0
        {
            return Err(StoreError::not_found(Entity::Holiday, d));
        }
        Ok(())
    }

    pub fn list_holidays(&self) -> Result<Vec<Holiday>> {
        let mut st = self
            .conn
            .prepare("SELECT date, name FROM holidays ORDER BY date")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(d, name)| {
                Ok(Holiday {
                    date: parse_date(&d)?,
                    name,
                })
            })
            .collect()
    }
}

/// A card label must not carry the card id: refuse labels containing it as text, in hex,
/// or (for ids of four or more digits) any four-digit run of it.
fn check_label(label: &str, acc_id: &[u8]) -> Result<()> {
    if label.chars().count() > MAX_NAME_LEN || label.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "card label",
            format!("at most {MAX_NAME_LEN} printable characters"),
        ));
    }
    let lower = label.to_ascii_lowercase();
    let hex: String = acc_id.iter().map(|b| format!("{b:02x}")).collect();
    let leaks = |needle: &str| !needle.is_empty() && lower.contains(&needle.to_ascii_lowercase());
    let text = std::str::from_utf8(acc_id).ok();
    let mut leak = leaks(&hex) || text.is_some_and(leaks);
    if let Some(t) = text {
        let digits: Vec<char> = t.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 4 {
            leak |= digits
                .windows(4)
                .any(|w| leaks(&w.iter().collect::<String>()));
        }
    }
    if leak {
        return Err(StoreError::invalid(
            "card label",
            "must not contain any part of the card id",
        ));
    }
    Ok(())
}
