//! LoRa field sensors (tables `sensors` and `sensor_alarms`, migration 6): the registry
//! of nodes with their keys, and what the hub's network server records of every uplink.
//!
//! Promises:
//! - A sensor's key (16 bytes from the OS's randomness, [`OsRng`]) and its address
//!   (`dev_addr`, random and unique) are made here; the key is returned once, by
//!   [`Store::add_sensor`], and afterwards only to the hub's uplink handling
//!   ([`Store::sensor_auth`]): no listing or record carries it.
//! - Frame counters only go forward: [`Store::record_uplink`] accepts a frame only if its
//!   counter is higher than the highest accepted before (`fcnt_up_last`), and records it
//!   in the same transaction as everything else the frame changes (last seen, signal,
//!   battery, readings, the alarm de-duplication, the downlink counter of its ACK). An
//!   equal or older counter is [`UplinkOutcome::Replayed`] and changes nothing; so is
//!   every frame of a disabled sensor ([`UplinkOutcome::Disabled`]).
//! - Alarm de-duplication: copies of one alarm (same sensor, node alarm number and
//!   active flag) heard within [`ALARM_DEDUP_WINDOW`] of the previous copy are
//!   duplicates; each alarm episode is named by the counter of its first copy
//!   ([`AlarmSeen::episode_fcnt`]), so a node that reuses an alarm number later (it
//!   wraps at 65536, or restarts after a reboot) raises a new event.
//! - Supervision's clock: [`SensorRecord::enabled_since`] is when the sensor was added,
//!   or last enabled after being disabled (migration 7); enabling a sensor that is already
//!   enabled leaves it alone.
//! - Times are unix milliseconds (UTC).

use crate::error::{is_unique_violation, Entity, StoreError};
use crate::store::{check_name, from_unix_ms, to_unix_ms, write_tx, Result, Store};
use rand_core::{OsRng, RngCore};
use rusqlite::{params, OptionalExtension};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

/// A sensor's id in the store.
pub type SensorId = i64;

/// Shortest heartbeat interval a sensor may be given.
pub const MIN_HEARTBEAT_S: u32 = 1;
/// Longest heartbeat interval (a day).
pub const MAX_HEARTBEAT_S: u32 = 86_400;
/// The heartbeat interval when none is given (five minutes).
pub const DEFAULT_HEARTBEAT_S: u32 = 300;
/// Copies of one alarm heard within this long of the previous copy are retransmissions.
/// A node retries a confirmed alarm at most 8 times with exponential backoff (the
/// lora-node core), well within it.
pub const ALARM_DEDUP_WINDOW: Duration = Duration::from_secs(3600);
/// Longest sensor name, in bytes (`A-Z a-z 0-9 . _ -`, like gate names: it is also the
/// event source name and goes in the provisioning file).
pub const MAX_SENSOR_NAME_LEN: usize = 64;

/// What a sensor is (serialized as its stored name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    /// A door or window contact.
    Door,
    /// A passive infrared motion detector.
    Pir,
    /// A smoke detector.
    Smoke,
    /// A temperature (and humidity) sensor.
    Temp,
}

impl SensorKind {
    pub const ALL: [SensorKind; 4] = [
        SensorKind::Door,
        SensorKind::Pir,
        SensorKind::Smoke,
        SensorKind::Temp,
    ];

    /// The stored name: `door`, `pir`, `smoke` or `temp`.
    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Door => "door",
            SensorKind::Pir => "pir",
            SensorKind::Smoke => "smoke",
            SensorKind::Temp => "temp",
        }
    }
}

impl fmt::Display for SensorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SensorKind {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<SensorKind> {
        SensorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                StoreError::invalid(
                    "sensor kind",
                    format!("{s:?} is not one of door, pir, smoke, temp"),
                )
            })
    }
}

/// A sensor's AES-128 key. `Debug` is redacted; [`SensorKey::expose`] gives the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SensorKey(pub(crate) [u8; 16]);

impl SensorKey {
    pub fn expose(&self) -> &[u8; 16] {
        &self.0
    }

    /// The key as 32 lowercase hex digits (the provisioning file's form).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SensorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SensorKey(<redacted>)")
    }
}

/// What [`Store::add_sensor`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSensor {
    /// 1..=64 characters of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    pub kind: SensorKind,
    /// [`MIN_HEARTBEAT_S`]..=[`MAX_HEARTBEAT_S`].
    pub heartbeat_s: u32,
}

/// A new sensor's identity, shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSensorCredentials {
    pub id: SensorId,
    pub dev_addr: u32,
    pub key: SensorKey,
}

/// A sensor as the registry shows it (never its key).
#[derive(Debug, Clone, PartialEq)]
pub struct SensorRecord {
    pub id: SensorId,
    pub name: String,
    pub kind: SensorKind,
    pub dev_addr: u32,
    pub enabled: bool,
    pub created: OffsetDateTime,
    /// When it was provisioned (`created`), or last enabled after being disabled: a sensor
    /// not heard since is supervised from then.
    pub enabled_since: OffsetDateTime,
    pub heartbeat_s: u32,
    /// The highest uplink counter accepted; `None` before the first frame.
    pub fcnt_up_last: Option<u32>,
    /// The last downlink counter used.
    pub fcnt_down: u32,
    /// Frames accepted.
    pub uplinks: u64,
    pub last_seen: Option<OffsetDateTime>,
    /// Signal of the last accepted uplink, as the radio heard it.
    pub last_rssi: Option<i16>,
    pub last_snr: Option<f64>,
    /// From the last heartbeat.
    pub battery_mv: Option<u16>,
    pub flags: Option<u8>,
    pub reboots: Option<u16>,
    /// How the node heard its last downlink (from its last heartbeat).
    pub down_rssi: Option<i16>,
    pub down_snr: Option<i8>,
    /// The last report's readings, by quantity name.
    pub readings: Vec<(String, i64)>,
    /// Set while a `sensor.missing` episode is open: when its silence began (its
    /// `last_seen`, or its `enabled_since` if not heard since).
    pub missing_since: Option<OffsetDateTime>,
}

impl SensorRecord {
    /// Whether a `sensor.missing` episode is open.
    pub fn missing(&self) -> bool {
        self.missing_since.is_some()
    }
}

/// What the hub needs to open a sensor's frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorAuth {
    pub id: SensorId,
    pub name: String,
    pub kind: SensorKind,
    pub dev_addr: u32,
    pub enabled: bool,
    pub key: SensorKey,
}

/// A heartbeat's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatInfo {
    pub battery_mv: u16,
    pub flags: u8,
    pub reboots: u16,
    pub down_rssi: i16,
    pub down_snr: i8,
}

/// What an authentic uplink said, as far as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Readings by quantity name.
    Report(Vec<(String, i64)>),
    Alarm {
        alarm_id: u16,
        active: bool,
    },
    Heartbeat(HeartbeatInfo),
}

/// An authentic uplink frame (its MIC checked by the hub) to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    pub sensor: SensorId,
    pub fcnt: u32,
    pub at: OffsetDateTime,
    pub rssi: Option<i16>,
    pub snr: Option<f64>,
    pub heard: Heard,
    /// Take the next downlink counter (the hub answers this frame).
    pub downlink: bool,
}

/// An alarm frame's place among the copies of its alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmSeen {
    /// A copy of an alarm taken within [`ALARM_DEDUP_WINDOW`].
    pub duplicate: bool,
    /// The counter of the first copy of the alarm episode this frame belongs to: for an
    /// alarm that ends (`active` false), the first copy of the alarm it ends if that is
    /// known, else its own first copy.
    pub episode_fcnt: u32,
}

/// What [`Store::record_uplink`] made of a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum UplinkOutcome {
    Accepted {
        /// The sensor after the frame (boxed: it is most of the enum's size).
        sensor: Box<SensorRecord>,
        /// Its last heartbeat's battery and flags before this frame (`None`: no
        /// heartbeat before).
        before: Option<(u16, u8)>,
        /// The downlink counter for the answer, if one was asked for.
        fcnt_down: Option<u32>,
        /// For an alarm frame.
        alarm: Option<AlarmSeen>,
    },
    /// The counter was not higher than `last`: nothing changed.
    Replayed { last: u32 },
    /// The sensor is disabled: nothing changed.
    Disabled,
    /// No such sensor (removed meanwhile).
    Unknown,
}

fn check_sensor_name(name: &str) -> Result<()> {
    check_name("sensor name", name)?;
    if name.len() > MAX_SENSOR_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(StoreError::invalid(
            "sensor name",
            format!("{name:?} must be 1 to {MAX_SENSOR_NAME_LEN} letters, digits, '.', '_' or '-'"),
        ));
    }
    Ok(())
}

/// Checks a heartbeat interval.
pub fn check_heartbeat_s(s: u32) -> Result<()> {
    if (MIN_HEARTBEAT_S..=MAX_HEARTBEAT_S).contains(&s) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "heartbeat",
            format!(
                "{s} s is out of range: give {MIN_HEARTBEAT_S} s to {MAX_HEARTBEAT_S} s (a day)"
            ),
        ))
    }
}

/// Reads a heartbeat interval as an admin types it: seconds (`300`, `300s`), minutes
/// (`5m`) or hours (`1h`), then checks it ([`check_heartbeat_s`]).
pub fn parse_heartbeat(text: &str) -> Result<u32> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let bad = || {
        StoreError::invalid(
            "heartbeat",
            format!("{text:?} is not an interval: write seconds (300 or 300s), minutes (5m) or hours (1h)"),
        )
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    let s = u32::try_from(n.saturating_mul(mult)).unwrap_or(u32::MAX);
    check_heartbeat_s(s)?;
    Ok(s)
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| StoreError::Config(format!("no randomness from the OS: {e}")))?;
    Ok(b)
}

const COLS: &str = "id, name, kind, dev_addr, enabled, created_ms, heartbeat_s, fcnt_up_last, \
     fcnt_down, uplinks, last_seen_ms, last_rssi, last_snr, battery_mv, flags, reboots, \
     down_rssi, down_snr, readings, missing_since_ms, \
     COALESCE(enabled_since_ms, created_ms) FROM sensors";

/// One row of [`COLS`], as SQLite gives it.
struct RawSensor {
    id: i64,
    name: String,
    kind: String,
    dev_addr: i64,
    enabled: bool,
    created_ms: i64,
    heartbeat_s: i64,
    fcnt_up_last: Option<i64>,
    fcnt_down: i64,
    uplinks: i64,
    last_seen_ms: Option<i64>,
    last_rssi: Option<i64>,
    last_snr: Option<f64>,
    battery_mv: Option<i64>,
    flags: Option<i64>,
    reboots: Option<i64>,
    down_rssi: Option<i64>,
    down_snr: Option<i64>,
    readings: Option<String>,
    missing_since_ms: Option<i64>,
    enabled_since_ms: i64,
}

fn raw_sensor(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawSensor> {
    Ok(RawSensor {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        dev_addr: r.get(3)?,
        enabled: r.get(4)?,
        created_ms: r.get(5)?,
        heartbeat_s: r.get(6)?,
        fcnt_up_last: r.get(7)?,
        fcnt_down: r.get(8)?,
        uplinks: r.get(9)?,
        last_seen_ms: r.get(10)?,
        last_rssi: r.get(11)?,
        last_snr: r.get(12)?,
        battery_mv: r.get(13)?,
        flags: r.get(14)?,
        reboots: r.get(15)?,
        down_rssi: r.get(16)?,
        down_snr: r.get(17)?,
        readings: r.get(18)?,
        missing_since_ms: r.get(19)?,
        enabled_since_ms: r.get(20)?,
    })
}

fn sensor_record(raw: RawSensor) -> Result<SensorRecord> {
    let id = raw.id;
    let corrupt = |what: &str| StoreError::Corrupt(format!("sensor {id}: {what}"));
    fn conv<T: TryFrom<i64>>(v: Option<i64>, e: impl Fn() -> StoreError) -> Result<Option<T>> {
        v.map(|v| T::try_from(v).map_err(|_| e())).transpose()
    }
    let readings = match raw.readings {
        Some(json) => {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&json).map_err(|_| corrupt("readings"))?;
            map.into_iter()
                .map(|(k, v)| {
                    v.as_i64()
                        .map(|v| (k, v))
                        .ok_or_else(|| corrupt("readings"))
                })
                .collect::<Result<Vec<_>>>()?
        }
        None => Vec::new(),
    };
    Ok(SensorRecord {
        id,
        name: raw.name,
        kind: raw.kind.parse().map_err(|_| corrupt("kind"))?,
        dev_addr: u32::try_from(raw.dev_addr).map_err(|_| corrupt("dev_addr"))?,
        enabled: raw.enabled,
        created: from_unix_ms(raw.created_ms)?,
        enabled_since: from_unix_ms(raw.enabled_since_ms)?,
        heartbeat_s: u32::try_from(raw.heartbeat_s).map_err(|_| corrupt("heartbeat_s"))?,
        fcnt_up_last: conv(raw.fcnt_up_last, || corrupt("fcnt_up_last"))?,
        fcnt_down: u32::try_from(raw.fcnt_down).map_err(|_| corrupt("fcnt_down"))?,
        uplinks: u64::try_from(raw.uplinks).map_err(|_| corrupt("uplinks"))?,
        last_seen: raw.last_seen_ms.map(from_unix_ms).transpose()?,
        last_rssi: conv(raw.last_rssi, || corrupt("last_rssi"))?,
        last_snr: raw.last_snr,
        battery_mv: conv(raw.battery_mv, || corrupt("battery_mv"))?,
        flags: conv(raw.flags, || corrupt("flags"))?,
        reboots: conv(raw.reboots, || corrupt("reboots"))?,
        down_rssi: conv(raw.down_rssi, || corrupt("down_rssi"))?,
        down_snr: conv(raw.down_snr, || corrupt("down_snr"))?,
        readings,
        missing_since: raw.missing_since_ms.map(from_unix_ms).transpose()?,
    })
}

fn readings_json(readings: &[(String, i64)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = readings
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The [`SensorRecord`] of `id` read on `conn` (inside a transaction or not).
fn read_sensor(conn: &rusqlite::Connection, id: SensorId) -> Result<Option<SensorRecord>> {
    let raw = conn
        .prepare_cached(&format!("SELECT {COLS} WHERE id = ?1"))?
        .query_row([id], raw_sensor)
        .optional()?;
    raw.map(sensor_record).transpose()
}

impl Store {
    /// Adds a sensor with a fresh random address and key, the key returned here and only
    /// here.
    pub fn add_sensor(&self, new: &NewSensor, at: OffsetDateTime) -> Result<NewSensorCredentials> {
        check_sensor_name(&new.name)?;
        check_heartbeat_s(new.heartbeat_s)?;
        let key = SensorKey(random_bytes::<16>()?);
        let tx = write_tx(self.conn())?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sensors WHERE name = ?1)",
            [&new.name],
            |r| r.get(0),
        )?;
        if taken {
            return Err(StoreError::NameTaken {
                entity: Entity::Sensor,
                name: new.name.clone(),
            });
        }
        // A random address; 0 and all-ones are avoided (they look like unset values on
        // a serial console). Collisions are retried; 2^32 addresses make them rare.
        let mut dev_addr = None;
        for _ in 0..16 {
            let a = u32::from_be_bytes(random_bytes::<4>()?);
            if a == 0 || a == u32::MAX {
                continue;
            }
            let used: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM sensors WHERE dev_addr = ?1)",
                [a],
                |r| r.get(0),
            )?;
            if !used {
                dev_addr = Some(a);
                break;
            }
        }
        let dev_addr = dev_addr.ok_or_else(|| {
            StoreError::Config("could not find a free sensor address; try again".into())
        })?;
        let inserted = tx.execute(
            "INSERT INTO sensors (name, kind, dev_addr, key, created_ms, heartbeat_s,
                                  enabled_since_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)",
            params![
                new.name,
                new.kind.as_str(),
                dev_addr,
                &key.0[..],
                to_unix_ms(at)?,
                new.heartbeat_s
            ],
        );
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::NameTaken {
                    entity: Entity::Sensor,
                    name: new.name.clone(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(NewSensorCredentials { id, dev_addr, key })
    }

    /// One sensor.
    pub fn sensor(&self, id: SensorId) -> Result<SensorRecord> {
        read_sensor(self.conn(), id)?.ok_or_else(|| StoreError::not_found(Entity::Sensor, id))
    }

    /// One sensor by name.
    pub fn sensor_by_name(&self, name: &str) -> Result<SensorRecord> {
        let raw = self
            .conn()
            .prepare_cached(&format!("SELECT {COLS} WHERE name = ?1"))?
            .query_row([name], raw_sensor)
            .optional()?;
        raw.map(sensor_record)
            .transpose()?
            .ok_or_else(|| StoreError::not_found(Entity::Sensor, format!("{name:?}")))
    }

    /// Every sensor, by id.
    pub fn list_sensors(&self) -> Result<Vec<SensorRecord>> {
        let mut st = self
            .conn()
            .prepare_cached(&format!("SELECT {COLS} ORDER BY id"))?;
        let raw = st
            .query_map([], raw_sensor)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raw.into_iter().map(sensor_record).collect()
    }

    /// The key and identity of the sensor with address `dev_addr`, for opening its frames.
    pub fn sensor_auth(&self, dev_addr: u32) -> Result<Option<SensorAuth>> {
        let row = self
            .conn()
            .prepare_cached("SELECT id, name, kind, enabled, key FROM sensors WHERE dev_addr = ?1")?
            .query_row([dev_addr], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })
            .optional()?;
        let Some((id, name, kind, enabled, key)) = row else {
            return Ok(None);
        };
        let key: [u8; 16] = key
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("sensor {id}: key length")))?;
        Ok(Some(SensorAuth {
            id,
            name,
            kind: kind
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("sensor {id}: kind")))?,
            dev_addr,
            enabled,
            key: SensorKey(key),
        }))
    }

    /// Enables or disables a sensor now ([`Store::set_sensor_enabled_at`]).
    pub fn set_sensor_enabled(&self, id: SensorId, enabled: bool) -> Result<()> {
        self.set_sensor_enabled_at(id, enabled, OffsetDateTime::now_utc())
    }

    /// Enables or disables a sensor at `at`. A disabled sensor's frames are refused and it
    /// is not supervised; enabling a disabled one restarts its supervision's clock
    /// ([`SensorRecord::enabled_since`] = `at`).
    pub fn set_sensor_enabled_at(
        &self,
        id: SensorId,
        enabled: bool,
        at: OffsetDateTime,
    ) -> Result<()> {
        // The right-hand sides see the row as it was: `enabled` is the old value.
        let n = self.conn().execute(
            "UPDATE sensors
             SET enabled_since_ms = CASE WHEN ?2 AND NOT enabled THEN ?3
                                         ELSE enabled_since_ms END,
                 enabled = ?2
             WHERE id = ?1",
            params![id, enabled, to_unix_ms(at)?],
        )?;
        if n == 0 {
            return Err(StoreError::not_found(Entity::Sensor, id));
        }
        Ok(())
    }

    /// Removes a sensor and its alarm history (its events stay).
    pub fn remove_sensor(&self, id: SensorId) -> Result<()> {
        let n = self
            .conn()
            .execute("DELETE FROM sensors WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(StoreError::not_found(Entity::Sensor, id));
        }
        Ok(())
    }

    /// Records an authentic uplink in one transaction: refused (nothing changed) unless
    /// the sensor exists, is enabled and the counter is higher than any accepted before;
    /// else the counter, last seen, signal, what the frame carried, the alarm
    /// de-duplication and (if asked) the next downlink counter.
    pub fn record_uplink(&self, up: &Uplink) -> Result<UplinkOutcome> {
        let at_ms = to_unix_ms(up.at)?;
        let tx = write_tx(self.conn())?;
        type Row = (bool, Option<i64>, Option<i64>, Option<i64>);
        let row: Option<Row> = tx
            .query_row(
                "SELECT enabled, fcnt_up_last, battery_mv, flags FROM sensors WHERE id = ?1",
                [up.sensor],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((enabled, last, battery_mv, flags)) = row else {
            return Ok(UplinkOutcome::Unknown);
        };
        if !enabled {
            return Ok(UplinkOutcome::Disabled);
        }
        if let Some(last) = last {
            if i64::from(up.fcnt) <= last {
                let last = u32::try_from(last).map_err(|_| {
                    StoreError::Corrupt(format!("sensor {}: fcnt_up_last", up.sensor))
                })?;
                return Ok(UplinkOutcome::Replayed { last });
            }
        }
        tx.execute(
            "UPDATE sensors SET fcnt_up_last = ?2, uplinks = uplinks + 1, last_seen_ms = ?3,
                 last_rssi = ?4, last_snr = ?5,
                 fcnt_down = fcnt_down + ?6
             WHERE id = ?1",
            params![
                up.sensor,
                up.fcnt,
                at_ms,
                up.rssi,
                up.snr,
                i64::from(up.downlink)
            ],
        )?;
        let mut alarm = None;
        match &up.heard {
            Heard::Report(readings) => {
                tx.execute(
                    "UPDATE sensors SET readings = ?2 WHERE id = ?1",
                    params![up.sensor, readings_json(readings)],
                )?;
            }
            Heard::Heartbeat(h) => {
                tx.execute(
                    "UPDATE sensors SET battery_mv = ?2, flags = ?3, reboots = ?4,
                         down_rssi = ?5, down_snr = ?6
                     WHERE id = ?1",
                    params![
                        up.sensor,
                        h.battery_mv,
                        h.flags,
                        h.reboots,
                        h.down_rssi,
                        h.down_snr
                    ],
                )?;
            }
            Heard::Alarm { alarm_id, active } => {
                let window = i64::try_from(ALARM_DEDUP_WINDOW.as_millis()).unwrap_or(i64::MAX);
                let seen: Option<(i64, i64)> = tx
                    .query_row(
                        "SELECT first_fcnt, last_ms FROM sensor_alarms
                         WHERE sensor_id = ?1 AND alarm_id = ?2 AND active = ?3",
                        params![up.sensor, alarm_id, active],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let (duplicate, first) = match seen {
                    Some((first, last_ms)) if at_ms.saturating_sub(last_ms) <= window => {
                        tx.execute(
                            "UPDATE sensor_alarms SET last_ms = ?4
                             WHERE sensor_id = ?1 AND alarm_id = ?2 AND active = ?3",
                            params![up.sensor, alarm_id, active, at_ms],
                        )?;
                        (true, first)
                    }
                    _ => {
                        tx.execute(
                            "INSERT OR REPLACE INTO sensor_alarms
                                 (sensor_id, alarm_id, active, first_fcnt, last_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![up.sensor, alarm_id, active, up.fcnt, at_ms],
                        )?;
                        (false, i64::from(up.fcnt))
                    }
                };
                let episode = if *active {
                    first
                } else {
                    // The alarm this one ends: its first copy, if it came before.
                    let started: Option<i64> = tx
                        .query_row(
                            "SELECT first_fcnt FROM sensor_alarms
                             WHERE sensor_id = ?1 AND alarm_id = ?2 AND active = 1",
                            params![up.sensor, alarm_id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    started.filter(|s| *s <= first).unwrap_or(first)
                };
                alarm = Some(AlarmSeen {
                    duplicate,
                    episode_fcnt: u32::try_from(episode).map_err(|_| {
                        StoreError::Corrupt(format!("sensor {}: alarm counter", up.sensor))
                    })?,
                });
            }
        }
        let sensor = read_sensor(&tx, up.sensor)?
            .ok_or_else(|| StoreError::not_found(Entity::Sensor, up.sensor))?;
        tx.commit()?;
        let before = match (battery_mv, flags) {
            (Some(mv), Some(f)) => Some((
                u16::try_from(mv).unwrap_or(u16::MAX),
                u8::try_from(f).unwrap_or(0),
            )),
            _ => None,
        };
        Ok(UplinkOutcome::Accepted {
            before,
            fcnt_down: up.downlink.then_some(sensor.fcnt_down),
            sensor: Box::new(sensor),
            alarm,
        })
    }

    /// Opens (`since` = when its silence began: the `last_seen`, or the `enabled_since`
    /// it is missing from) or closes (`None`) a sensor's `sensor.missing` episode, if it is
    /// still as `expected`; returns whether it changed.
    pub fn set_sensor_missing(
        &self,
        id: SensorId,
        expected: Option<OffsetDateTime>,
        since: Option<OffsetDateTime>,
    ) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE sensors SET missing_since_ms = ?3 WHERE id = ?1 AND missing_since_ms IS ?2",
            params![
                id,
                expected.map(to_unix_ms).transpose()?,
                since.map(to_unix_ms).transpose()?
            ],
        )?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn at(ms: i64) -> OffsetDateTime {
        from_unix_ms(1_800_000_000_000 + ms).unwrap()
    }

    fn new(name: &str) -> NewSensor {
        NewSensor {
            name: name.into(),
            kind: SensorKind::Door,
            heartbeat_s: 60,
        }
    }

    fn up(sensor: SensorId, fcnt: u32, ms: i64, heard: Heard) -> Uplink {
        Uplink {
            sensor,
            fcnt,
            at: at(ms),
            rssi: Some(-87),
            snr: Some(7.5),
            heard,
            downlink: false,
        }
    }

    fn hb(battery_mv: u16) -> Heard {
        Heard::Heartbeat(HeartbeatInfo {
            battery_mv,
            flags: 0,
            reboots: 2,
            down_rssi: -90,
            down_snr: 5,
        })
    }

    fn accepted(o: UplinkOutcome) -> (SensorRecord, Option<u32>, Option<AlarmSeen>) {
        match o {
            UplinkOutcome::Accepted {
                sensor,
                fcnt_down,
                alarm,
                ..
            } => (*sensor, fcnt_down, alarm),
            other => panic!("not accepted: {other:?}"),
        }
    }

    #[test]
    fn sensors_are_added_with_a_key_shown_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.add_sensor(&new("front-door"), at(0)).unwrap();
        let b = s
            .add_sensor(
                &NewSensor {
                    name: "hall-pir".into(),
                    kind: SensorKind::Pir,
                    heartbeat_s: 300,
                },
                at(1),
            )
            .unwrap();
        assert_ne!(a.dev_addr, b.dev_addr);
        assert_ne!(a.key, b.key);
        assert_eq!(format!("{:?}", a.key), "SensorKey(<redacted>)");
        assert_eq!(a.key.to_hex().len(), 32);

        let list = s.list_sensors().unwrap();
        assert_eq!(
            list.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["front-door", "hall-pir"]
        );
        let r = &list[0];
        assert_eq!(
            (r.kind, r.dev_addr, r.enabled, r.heartbeat_s, r.created),
            (SensorKind::Door, a.dev_addr, true, 60, at(0))
        );
        assert_eq!(
            (r.fcnt_up_last, r.last_seen, r.missing()),
            (None, None, false)
        );
        // The key is in no listing nor record.
        let shown = format!("{list:?}{:?}", s.sensor_by_name("front-door").unwrap());
        assert!(!shown.contains(&a.key.to_hex()));
        assert!(!shown.contains(&format!("{:?}", a.key.expose())));
        // The hub's lookup has it.
        let auth = s.sensor_auth(a.dev_addr).unwrap().unwrap();
        assert_eq!((auth.id, &auth.key), (a.id, &a.key));
        assert_eq!(s.sensor_auth(a.dev_addr ^ 1).unwrap(), None);

        let e = s.add_sensor(&new("front-door"), at(2)).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::NameTaken {
                    entity: Entity::Sensor,
                    ..
                }
            ),
            "{e}"
        );
        for bad in ["", "two words", &"x".repeat(65)] {
            let e = s.add_sensor(&new(bad), at(2)).unwrap_err();
            assert!(
                matches!(
                    e,
                    StoreError::Invalid {
                        field: "sensor name",
                        ..
                    }
                ),
                "{bad:?}: {e}"
            );
        }
        for bad in [0, MAX_HEARTBEAT_S + 1] {
            let n = NewSensor {
                heartbeat_s: bad,
                ..new("x")
            };
            let e = s.add_sensor(&n, at(2)).unwrap_err();
            assert!(
                matches!(
                    e,
                    StoreError::Invalid {
                        field: "heartbeat",
                        ..
                    }
                ),
                "{e}"
            );
        }
        assert!("garage"
            .parse::<SensorKind>()
            .unwrap_err()
            .to_string()
            .contains("door, pir"));

        s.remove_sensor(b.id).unwrap();
        assert!(matches!(
            s.remove_sensor(b.id).unwrap_err(),
            StoreError::NotFound {
                entity: Entity::Sensor,
                ..
            }
        ));
        assert_eq!(s.list_sensors().unwrap().len(), 1);
    }

    #[test]
    fn frame_counters_only_go_forward() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.add_sensor(&new("door"), at(0)).unwrap();
        // The first frame may carry any counter, 0 included.
        let (r, down, _) = accepted(s.record_uplink(&up(a.id, 0, 10, hb(3000))).unwrap());
        assert_eq!((r.fcnt_up_last, r.uplinks, down), (Some(0), 1, None));
        assert_eq!(
            (
                r.battery_mv,
                r.reboots,
                r.down_rssi,
                r.down_snr,
                r.last_rssi,
                r.last_snr
            ),
            (
                Some(3000),
                Some(2),
                Some(-90),
                Some(5),
                Some(-87),
                Some(7.5)
            )
        );
        assert_eq!(r.last_seen, Some(at(10)));
        // Equal and older counters are refused and change nothing.
        for fcnt in [0, 0] {
            assert_eq!(
                s.record_uplink(&up(a.id, fcnt, 20, hb(2000))).unwrap(),
                UplinkOutcome::Replayed { last: 0 }
            );
        }
        // The previous heartbeat's battery and flags come back with the next frame.
        let UplinkOutcome::Accepted {
            sensor: r, before, ..
        } = s.record_uplink(&up(a.id, 40, 30, hb(2900))).unwrap()
        else {
            panic!("not accepted")
        };
        assert_eq!((r.fcnt_up_last, r.battery_mv), (Some(40), Some(2900)));
        assert_eq!(before, Some((3000, 0)));
        for fcnt in [40, 39, 1] {
            assert_eq!(
                s.record_uplink(&up(a.id, fcnt, 40, hb(1))).unwrap(),
                UplinkOutcome::Replayed { last: 40 }
            );
        }
        let r = s.sensor(a.id).unwrap();
        assert_eq!(
            (r.fcnt_up_last, r.uplinks, r.battery_mv, r.last_seen),
            (Some(40), 2, Some(2900), Some(at(30)))
        );
        // Reports keep their readings; a downlink takes the next counter.
        let mut report = up(
            a.id,
            u32::MAX,
            50,
            Heard::Report(vec![("contact".into(), 1), ("battery".into(), 2950)]),
        );
        report.downlink = true;
        let (r, down, _) = accepted(s.record_uplink(&report).unwrap());
        assert_eq!(down, Some(1));
        assert_eq!(
            r.readings,
            vec![("battery".into(), 2950), ("contact".into(), 1)]
        );
        assert_eq!(
            s.record_uplink(&up(a.id, u32::MAX, 60, hb(1))).unwrap(),
            UplinkOutcome::Replayed { last: u32::MAX }
        );
        assert_eq!(
            s.record_uplink(&up(a.id + 100, 1, 60, hb(1))).unwrap(),
            UplinkOutcome::Unknown
        );
    }

    #[test]
    fn a_disabled_sensor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.add_sensor(&new("door"), at(0)).unwrap();
        accepted(s.record_uplink(&up(a.id, 1, 10, hb(3000))).unwrap());
        s.set_sensor_enabled(a.id, false).unwrap();
        assert_eq!(
            s.record_uplink(&up(a.id, 2, 20, hb(3000))).unwrap(),
            UplinkOutcome::Disabled
        );
        assert!(!s.sensor_auth(a.dev_addr).unwrap().unwrap().enabled);
        let r = s.sensor(a.id).unwrap();
        assert_eq!((r.enabled, r.fcnt_up_last, r.uplinks), (false, Some(1), 1));
        s.set_sensor_enabled(a.id, true).unwrap();
        accepted(s.record_uplink(&up(a.id, 2, 30, hb(3000))).unwrap());
        assert!(s.set_sensor_enabled(a.id + 1, true).is_err());
    }

    #[test]
    fn enabling_a_disabled_sensor_restarts_its_supervision_clock() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.add_sensor(&new("door"), at(0)).unwrap();
        assert_eq!(s.sensor(a.id).unwrap().enabled_since, at(0));
        // Enabling an enabled sensor, or disabling it, leaves the clock alone.
        s.set_sensor_enabled_at(a.id, true, at(10)).unwrap();
        assert_eq!(s.sensor(a.id).unwrap().enabled_since, at(0));
        s.set_sensor_enabled_at(a.id, false, at(20)).unwrap();
        assert_eq!(s.sensor(a.id).unwrap().enabled_since, at(0));
        s.set_sensor_enabled_at(a.id, false, at(25)).unwrap();
        // Enabled again: from then on.
        s.set_sensor_enabled_at(a.id, true, at(30)).unwrap();
        let r = s.sensor(a.id).unwrap();
        assert_eq!(
            (r.enabled, r.enabled_since, r.created),
            (true, at(30), at(0))
        );
        s.set_sensor_enabled_at(a.id, true, at(40)).unwrap();
        assert_eq!(s.sensor(a.id).unwrap().enabled_since, at(30));
        // It is on disk: another connection sees it.
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.sensor(a.id).unwrap().enabled_since, at(30));
        assert!(s.set_sensor_enabled_at(a.id + 1, true, at(50)).is_err());
    }

    #[test]
    fn sensors_from_before_migration_7_are_supervised_from_their_creation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = rusqlite::Connection::open(crate::schema::db_path(dir.path())).unwrap();
            for (i, sql) in crate::schema::MIGRATIONS[..6].iter().enumerate() {
                conn.execute_batch(sql).unwrap();
                conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                    .unwrap();
            }
            conn.execute(
                "INSERT INTO sensors (name, kind, dev_addr, key, created_ms, heartbeat_s)
                 VALUES ('old-door', 'door', 1234, ?1, ?2, 60)",
                params![&[7u8; 16][..], to_unix_ms(at(5)).unwrap()],
            )
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let r = s.sensor_by_name("old-door").unwrap();
        assert_eq!((r.created, r.enabled_since), (at(5), at(5)));
    }

    #[test]
    fn alarm_copies_fold_into_their_episode() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.add_sensor(&new("door"), at(0)).unwrap();
        let alarm = |fcnt, ms, alarm_id, active| {
            let (_, _, seen) = accepted(
                s.record_uplink(&up(a.id, fcnt, ms, Heard::Alarm { alarm_id, active }))
                    .unwrap(),
            );
            seen.unwrap()
        };
        let first = alarm(10, 0, 7, true);
        assert_eq!(
            first,
            AlarmSeen {
                duplicate: false,
                episode_fcnt: 10
            }
        );
        assert_eq!(
            alarm(11, 2_000, 7, true),
            AlarmSeen {
                duplicate: true,
                episode_fcnt: 10
            }
        );
        // Its end names the same episode; a copy of the end is a duplicate.
        assert_eq!(
            alarm(12, 5_000, 7, false),
            AlarmSeen {
                duplicate: false,
                episode_fcnt: 10
            }
        );
        assert_eq!(
            alarm(13, 6_000, 7, false),
            AlarmSeen {
                duplicate: true,
                episode_fcnt: 10
            }
        );
        // Another alarm number is another alarm.
        assert_eq!(
            alarm(14, 7_000, 8, true),
            AlarmSeen {
                duplicate: false,
                episode_fcnt: 14
            }
        );
        // The same number long after (wrapped, or the node restarted): a new episode.
        let later = 7_000 + i64::try_from(ALARM_DEDUP_WINDOW.as_millis()).unwrap() + 1;
        assert_eq!(
            alarm(20, later, 7, true),
            AlarmSeen {
                duplicate: false,
                episode_fcnt: 20
            }
        );
        assert_eq!(
            alarm(21, later + 1, 7, false),
            AlarmSeen {
                duplicate: false,
                episode_fcnt: 20
            }
        );
    }

    #[test]
    fn heartbeat_intervals_are_read_as_typed() {
        assert_eq!(parse_heartbeat("300").unwrap(), 300);
        assert_eq!(parse_heartbeat("45s").unwrap(), 45);
        assert_eq!(parse_heartbeat("5m").unwrap(), 300);
        assert_eq!(parse_heartbeat(" 1h ").unwrap(), 3600);
        for bad in [
            "",
            "m",
            "5 m",
            "5d",
            "-1",
            "0",
            "25h",
            "99999999999999999999",
        ] {
            let e = parse_heartbeat(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    StoreError::Invalid {
                        field: "heartbeat",
                        ..
                    }
                ),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn missing_episodes_open_and_close_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.add_sensor(&new("door"), at(0)).unwrap();
        assert!(s.set_sensor_missing(a.id, None, Some(at(5))).unwrap());
        assert!(
            !s.set_sensor_missing(a.id, None, Some(at(6))).unwrap(),
            "already open"
        );
        assert_eq!(s.sensor(a.id).unwrap().missing_since, Some(at(5)));
        assert!(
            !s.set_sensor_missing(a.id, Some(at(6)), None).unwrap(),
            "another episode"
        );
        assert!(s.set_sensor_missing(a.id, Some(at(5)), None).unwrap());
        assert!(!s.sensor(a.id).unwrap().missing());
    }
}
