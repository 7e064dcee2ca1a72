//! The SQL schema and its migrations: the one place in Gatehouse that knows table and
//! column names.
//!
//! Promises:
//! - Migrations are an append-only, ordered list. Migration `n` (1-based) moves the
//!   database from `PRAGMA user_version = n - 1` to `n`, inside one transaction together
//!   with the version bump, so a crash leaves the database at a whole version.
//! - A shipped migration is never edited; changes come as a new migration at the end.
//! - A database whose version is newer than [`MIGRATIONS`] knows is refused
//!   ([`StoreError::TooNew`]), never written.
//! - Every connection is opened the same way ([`open_connection`]): WAL, `synchronous=FULL`
//!   (a commit survives power loss once it returns; SQLite docs, "PRAGMA synchronous"),
//!   foreign keys on, a busy timeout.
//!
//! Units: validity bounds are unix seconds (UTC); access-log times, `last_seen` and every
//! time in the events tables (migration 4) and in `remote_opens` (migration 5) are unix
//! milliseconds (UTC), as are the sensors' times (migrations 6 and 7); holiday dates are
//! ISO `YYYY-MM-DD` text (site-local dates).

use crate::error::StoreError;
use rusqlite::Connection;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "gatehouse.db";

/// How long a connection waits for another connection's lock before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Version 1: the access side. Every change to a table the access engine decides from
/// bumps `revision.value` (through the triggers below), so the hub can poll one integer
/// and rebuild its in-memory snapshot only when something changed.
const V1_ACCESS: &str = r#"
CREATE TABLE revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE zones (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    anti_passback INTEGER NOT NULL DEFAULT 0 CHECK (anti_passback IN (0, 1))
);

CREATE TABLE gates (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    zone_id       INTEGER NOT NULL REFERENCES zones(id) ON DELETE RESTRICT,
    direction     TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    enabled       INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    relay_ms      INTEGER NOT NULL CHECK (relay_ms >= 0),
    -- The gate's own key (32 random bytes, generated here); authenticates the gate link.
    secret        BLOB NOT NULL CHECK (length(secret) = 32),
    -- JSON array of addresses / CIDR prefixes the gate may connect from; NULL = any.
    allowed_ips   TEXT,
    mqtt_username TEXT NOT NULL UNIQUE,
    -- Unix milliseconds; NULL = never seen. Not part of the revision (heartbeats).
    last_seen     INTEGER
);
CREATE INDEX gates_zone ON gates(zone_id);

CREATE TABLE people (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    valid_from  INTEGER,
    valid_until INTEGER
);

-- Cards exist only as HMAC-SHA-256(card key, acc_id), the card key being derived from
-- the site key (see site_key.rs). No column holds any part of the raw card id; `label`
-- is free text chosen by the admin and checked not to contain it.
CREATE TABLE cards (
    id          INTEGER PRIMARY KEY,
    hash        BLOB NOT NULL UNIQUE CHECK (length(hash) = 32),
    person_id   INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    master      INTEGER NOT NULL DEFAULT 0 CHECK (master IN (0, 1)),
    valid_from  INTEGER,
    valid_until INTEGER,
    label       TEXT
);
CREATE INDEX cards_person ON cards(person_id);

-- `schedule` is the JSON form of gatehouse_access::model::Schedule.
CREATE TABLE levels (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    schedule TEXT NOT NULL
);

CREATE TABLE level_gates (
    level_id INTEGER NOT NULL REFERENCES levels(id) ON DELETE CASCADE,
    gate_id  INTEGER NOT NULL REFERENCES gates(id) ON DELETE CASCADE,
    PRIMARY KEY (level_id, gate_id)
) WITHOUT ROWID;
CREATE INDEX level_gates_gate ON level_gates(gate_id);

CREATE TABLE person_levels (
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    level_id  INTEGER NOT NULL REFERENCES levels(id) ON DELETE CASCADE,
    PRIMARY KEY (person_id, level_id)
) WITHOUT ROWID;
CREATE INDEX person_levels_level ON person_levels(level_id);

CREATE TABLE holidays (
    id   INTEGER PRIMARY KEY,
    date TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT ''
);

-- Every access decision. No foreign keys on purpose: removing a person, card or gate
-- keeps the history (rows keep the ids). `reason` is gatehouse_gate_proto::Reason's
-- stable code. `gate_seq` is the gate's own sequence number (NULL when the transport has
-- none); UNIQUE(gate_id, source, gate_seq) makes offline uploads idempotent.
CREATE TABLE access_log (
    id        INTEGER PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    gate_id   INTEGER NOT NULL,
    card_hash BLOB CHECK (card_hash IS NULL OR length(card_hash) = 32),
    card_id   INTEGER,
    person_id INTEGER,
    reason    INTEGER NOT NULL CHECK (reason BETWEEN 0 AND 255),
    source    TEXT NOT NULL CHECK (source IN ('online', 'offline')),
    gate_seq  INTEGER,
    UNIQUE (gate_id, source, gate_seq)
);

CREATE TRIGGER zones_ins AFTER INSERT ON zones BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER zones_upd AFTER UPDATE ON zones BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER zones_del AFTER DELETE ON zones BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER gates_ins AFTER INSERT ON gates BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER gates_upd AFTER UPDATE OF name, zone_id, direction, enabled, relay_ms, secret, allowed_ips, mqtt_username ON gates
    BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER gates_del AFTER DELETE ON gates BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER people_ins AFTER INSERT ON people BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER people_upd AFTER UPDATE ON people BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER people_del AFTER DELETE ON people BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER cards_ins AFTER INSERT ON cards BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER cards_upd AFTER UPDATE ON cards BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER cards_del AFTER DELETE ON cards BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER levels_ins AFTER INSERT ON levels BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER levels_upd AFTER UPDATE ON levels BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER levels_del AFTER DELETE ON levels BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER level_gates_ins AFTER INSERT ON level_gates BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER level_gates_upd AFTER UPDATE ON level_gates BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER level_gates_del AFTER DELETE ON level_gates BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER person_levels_ins AFTER INSERT ON person_levels BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER person_levels_upd AFTER UPDATE ON person_levels BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER person_levels_del AFTER DELETE ON person_levels BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER holidays_ins AFTER INSERT ON holidays BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER holidays_upd AFTER UPDATE ON holidays BEGIN UPDATE revision SET value = value + 1; END;
CREATE TRIGGER holidays_del AFTER DELETE ON holidays BEGIN UPDATE revision SET value = value + 1; END;

-- Room for later migrations (each its own entry in MIGRATIONS, never here):
--   events     (NVR / gate / sensor events) and the alert outbox + delivery log,
--              written in one transaction with their event;
--   sensors    (LoRa devices, their keys and frame counters);
--   receivers, alert rules, WireGuard peers.
"#;

/// Version 2: console and API administrators and their sessions. Passwords are argon2id
/// PHC strings; session tokens are stored only as SHA-256 of the token, so a copy of the
/// database does not let anyone log in. Not part of the access revision (the engine does
/// not read them).
const V2_ADMINS: &str = r#"
CREATE TABLE admins (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'installer')),
    -- argon2id in PHC string form ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    password_hash   TEXT NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_ms      INTEGER NOT NULL,
    -- Consecutive failed logins and the lockout they caused (unix ms; NULL = not locked).
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until_ms INTEGER
);

CREATE TABLE admin_sessions (
    -- SHA-256 of the bearer token / session cookie value.
    token_hash   BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
    admin_id     INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX admin_sessions_admin ON admin_sessions(admin_id);
"#;

/// Version 3: door and tamper events reported by gates, kept until the events pipeline
/// takes them over. `gate_seq` is the gate's sequence number: UNIQUE(gate_id, gate_seq)
/// makes a re-sent event a no-op. `kind` is the stable snake_case name of the event
/// (`forced_open`, `held_open`, `closed`, `exit_button`, `tamper_on`, `tamper_off`, ...).
const V3_GATE_EVENTS: &str = r#"
CREATE TABLE gate_events (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    gate_id     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    gate_seq    INTEGER NOT NULL,
    UNIQUE (gate_id, gate_seq)
);
CREATE INDEX gate_events_at ON gate_events(at_ms);
"#;

/// Version 4: events and alerts (issue 4; appliance/store/src/events.rs is the API).
///
/// - `event_sources`: outside systems allowed to send events; `key_hash` is SHA-256 of the
///   API key's text (the key itself is shown once and never stored).
/// - `events`: every event, `seq` its insertion order (AUTOINCREMENT: never reused), `id`
///   its ULID. `severity` is 0 info, 1 warning, 2 critical (so filters compare numbers).
///   `source` is a name, not a foreign key: gates, "system" and "tunnel" raise events
///   without a registered source, and removing a source keeps its events. A partial
///   UNIQUE index on `(source, external_id)` identifies an event by the source's own id.
///   `events_group` serves the grouping query and any query by source.
/// - `receivers`: `config` is the JSON of `gatehouse_alerts::ReceiverConfig`; `kind` is
///   derived from it. Receivers are never deleted while anything refers to them: removing
///   one sets `removed_at` (a tombstone that keeps its deliveries and log rows readable and
///   frees the name). At most one live console receiver; "console" exists from here on.
/// - `rules` + `rule_receivers`: `matcher` is the JSON of `Matcher`, `active` of
///   `Schedule` (NULL = always). Default rule: "console: warning and above".
/// - `silences`: expired by moving `ends_at`, never deleted.
/// - `deliveries`: the outbox, one row per (event, receiver, kind, repeat number), written
///   in the event's transaction. `id` (AUTOINCREMENT) is also the console feed's SSE id.
///   Deleting a rule keeps its deliveries (`rule_id` NULL; rules are deleted rarely, so
///   no index on `rule_id` is kept for that scan).
/// - `delivery_log`: one row per attempt, appended in the transaction that updates the
///   delivery; UNIQUE(delivery_id, attempt).
/// - `repeats`: reminders of unacknowledged events, per (event, rule); the interval is
///   the rule's current `repeat_every_s`.
/// - `alert_revision`: bumped by every change to receivers, rules, silences, holidays and
///   event sources, so the hub rebuilds its alert planner and re-reads its NVR sources
///   only when something changed.
///
/// Times are unix milliseconds; `group_window_s` and `repeat_every_s` are seconds.
const V4_EVENTS: &str = r#"
CREATE TABLE alert_revision (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO alert_revision (id, value) VALUES (1, 0);

CREATE TABLE event_sources (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('nvr', 'gate', 'sensor', 'tunnel', 'system')),
    key_hash    BLOB NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    mqtt_prefix TEXT UNIQUE,
    base_url    TEXT,
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at  INTEGER NOT NULL
);

CREATE TABLE receivers (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    config     TEXT NOT NULL CHECK (json_valid(config)),
    kind       TEXT NOT NULL GENERATED ALWAYS AS (json_extract(config, '$.type')) VIRTUAL
               CHECK (kind IN ('console', 'webhook', 'email', 'ntfy')),
    removed_at INTEGER
);
CREATE UNIQUE INDEX receivers_name ON receivers(name) WHERE removed_at IS NULL;
CREATE UNIQUE INDEX receivers_one_console ON receivers(kind)
    WHERE kind = 'console' AND removed_at IS NULL;
INSERT INTO receivers (id, name, enabled, config) VALUES (1, 'console', 1, '{"type":"console"}');

CREATE TABLE rules (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    enabled        INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    matcher        TEXT NOT NULL CHECK (json_valid(matcher)),
    active         TEXT CHECK (active IS NULL OR json_valid(active)),
    group_window_s INTEGER NOT NULL DEFAULT 0 CHECK (group_window_s >= 0),
    repeat_every_s INTEGER CHECK (repeat_every_s IS NULL OR repeat_every_s > 0)
);
CREATE TABLE rule_receivers (
    rule_id     INTEGER NOT NULL REFERENCES rules(id) ON DELETE CASCADE,
    receiver_id INTEGER NOT NULL REFERENCES receivers(id) ON DELETE RESTRICT,
    PRIMARY KEY (rule_id, receiver_id)
) WITHOUT ROWID;
CREATE INDEX rule_receivers_receiver ON rule_receivers(receiver_id);
INSERT INTO rules (id, name, enabled, matcher, active, group_window_s, repeat_every_s)
    VALUES (1, 'console: warning and above', 1,
            '{"kinds":[],"sources":[],"zones":[],"min_severity":"warning"}', NULL, 0, NULL);
INSERT INTO rule_receivers (rule_id, receiver_id) VALUES (1, 1);

CREATE TABLE silences (
    id         INTEGER PRIMARY KEY,
    matcher    TEXT NOT NULL CHECK (json_valid(matcher)),
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL CHECK (ends_at >= starts_at),
    author     TEXT NOT NULL,
    comment    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX silences_ends ON silences(ends_at);

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE CHECK (length(id) = 26),
    source       TEXT NOT NULL,
    source_kind  TEXT NOT NULL CHECK (source_kind IN ('nvr', 'gate', 'sensor', 'tunnel', 'system')),
    kind         TEXT NOT NULL,
    severity     INTEGER NOT NULL CHECK (severity IN (0, 1, 2)),
    occurred_at  INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    camera       TEXT,
    zone         TEXT,
    device       TEXT,
    message      TEXT,
    snapshot_url TEXT,
    clip_url     TEXT,
    external_id  TEXT,
    lifecycle    TEXT NOT NULL CHECK (lifecycle IN ('instant', 'active', 'ended')),
    ended_at     INTEGER,
    grouped_into TEXT REFERENCES events(id) ON DELETE SET NULL,
    silenced_by  INTEGER REFERENCES silences(id) ON DELETE SET NULL,
    acked_by     TEXT,
    acked_at     INTEGER,
    ack_comment  TEXT
);
CREATE UNIQUE INDEX events_external ON events(source, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX events_received ON events(received_at);
CREATE INDEX events_kind ON events(kind);
CREATE INDEX events_group ON events(source, kind, zone, received_at);
CREATE INDEX events_grouped_into ON events(grouped_into) WHERE grouped_into IS NOT NULL;

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq       INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    receiver_id     INTEGER NOT NULL REFERENCES receivers(id) ON DELETE RESTRICT,
    rule_id         INTEGER REFERENCES rules(id) ON DELETE SET NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('firing', 'repeat', 'resolved')),
    repeat_n        INTEGER NOT NULL DEFAULT 0 CHECK (repeat_n >= 0),
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    last_error      TEXT,
    UNIQUE (event_seq, receiver_id, kind, repeat_n)
);
CREATE INDEX deliveries_due ON deliveries(receiver_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_receiver_status ON deliveries(receiver_id, status);

CREATE TABLE delivery_log (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL CHECK (attempt >= 1),
    started_at  INTEGER NOT NULL,
    latency_ms  INTEGER NOT NULL CHECK (latency_ms >= 0),
    outcome     TEXT NOT NULL CHECK (outcome IN ('delivered', 'failed', 'dead')),
    http_status INTEGER CHECK (http_status IS NULL OR http_status BETWEEN 100 AND 999),
    error       TEXT,
    UNIQUE (delivery_id, attempt)
);

CREATE TABLE repeats (
    event_seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    rule_id   INTEGER NOT NULL REFERENCES rules(id) ON DELETE CASCADE,
    next_at   INTEGER NOT NULL,
    count     INTEGER NOT NULL DEFAULT 0 CHECK (count >= 0),
    PRIMARY KEY (event_seq, rule_id)
) WITHOUT ROWID;
CREATE INDEX repeats_due ON repeats(next_at);

CREATE TRIGGER alert_rev_receivers_ins AFTER INSERT ON receivers BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_receivers_upd AFTER UPDATE ON receivers BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_receivers_del AFTER DELETE ON receivers BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_rules_ins AFTER INSERT ON rules BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_rules_upd AFTER UPDATE ON rules BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_rules_del AFTER DELETE ON rules BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_rule_receivers_ins AFTER INSERT ON rule_receivers BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_rule_receivers_upd AFTER UPDATE ON rule_receivers BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_rule_receivers_del AFTER DELETE ON rule_receivers BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_silences_ins AFTER INSERT ON silences BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_silences_upd AFTER UPDATE ON silences BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_silences_del AFTER DELETE ON silences BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_holidays_ins AFTER INSERT ON holidays BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_holidays_upd AFTER UPDATE ON holidays BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_holidays_del AFTER DELETE ON holidays BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_sources_ins AFTER INSERT ON event_sources BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_sources_upd AFTER UPDATE ON event_sources BEGIN UPDATE alert_revision SET value = value + 1; END;
CREATE TRIGGER alert_rev_sources_del AFTER DELETE ON event_sources BEGIN UPDATE alert_revision SET value = value + 1; END;
"#;

/// Version 5: remote door opens (issue 5; appliance/store/src/remote_opens.rs is the API).
///
/// One row per admin's request to open a gate's door from the console, API or CLI. `id`
/// (AUTOINCREMENT: strictly increasing, never reused) is also the hub's command number
/// in the gate link's `RemoteOpen` frame, which the gate replay-checks, so it must never
/// go back. `admin` is the name of the admin who asked (text, so removing the account
/// keeps the history), `reason` what they typed. `state` goes `requested` -> `delivered`
/// (handed to the gate's link; `delivered_at_ms` set) or `requested` -> `expired` (not
/// delivered in time), never back. No foreign key on `gate_id`, as in `access_log`.
const V5_REMOTE_OPENS: &str = r#"
CREATE TABLE remote_opens (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms           INTEGER NOT NULL,
    gate_id         INTEGER NOT NULL,
    admin           TEXT NOT NULL,
    reason          TEXT NOT NULL,
    relay_ms        INTEGER NOT NULL CHECK (relay_ms BETWEEN 0 AND 65535),
    state           TEXT NOT NULL DEFAULT 'requested'
                    CHECK (state IN ('requested', 'delivered', 'expired')),
    delivered_at_ms INTEGER,
    CHECK ((state = 'delivered') = (delivered_at_ms IS NOT NULL))
);
CREATE INDEX remote_opens_gate ON remote_opens(gate_id, id);
"#;

/// Version 6: LoRa field sensors (issue 6; appliance/store/src/sensors.rs is the API).
///
/// - `sensors`: one row per node. `dev_addr` is the 32-bit address in every frame's
///   header (random, unique); `key` the node's AES-128 key (16 random bytes, generated
///   here, shown once when the sensor is added and never read back out but by the hub's
///   uplink handling). `fcnt_up_last` is the highest uplink frame counter accepted (NULL:
///   none yet); a frame is accepted only with a higher one, so counters never go back.
///   `fcnt_down` is the last downlink counter used. `heartbeat_s` is the interval the
///   node is expected to send heartbeats at; `missing_since_ms` is set (to the
///   `last_seen_ms` it was missing from) while a `sensor.missing` episode is open.
///   The other columns are what was last heard: signal of the last uplink as the radio
///   heard it (`last_rssi` dBm, `last_snr` dB), the last heartbeat's contents
///   (`battery_mv`, `flags`, `reboots`, `down_rssi`/`down_snr`: how the node heard its
///   last downlink) and the last report's readings (`readings`: a JSON object of
///   quantity name -> value). `uplinks` counts accepted frames.
/// - `sensor_alarms`: the alarms already taken, by (sensor, the node's alarm number,
///   active), for the de-duplication of retransmissions: `first_fcnt` is the counter of
///   the first copy (part of the event's external id, so an alarm number the node reuses
///   later — it wraps, or restarts with the node — makes a new event), `last_ms` when a
///   copy was last heard.
const V6_SENSORS: &str = r#"
CREATE TABLE sensors (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL CHECK (kind IN ('door', 'pir', 'smoke', 'temp')),
    dev_addr         INTEGER NOT NULL UNIQUE CHECK (dev_addr BETWEEN 0 AND 4294967295),
    key              BLOB NOT NULL CHECK (length(key) = 16),
    enabled          INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_ms       INTEGER NOT NULL,
    heartbeat_s      INTEGER NOT NULL CHECK (heartbeat_s BETWEEN 1 AND 86400),
    fcnt_up_last     INTEGER CHECK (fcnt_up_last BETWEEN 0 AND 4294967295),
    fcnt_down        INTEGER NOT NULL DEFAULT 0 CHECK (fcnt_down BETWEEN 0 AND 4294967295),
    uplinks          INTEGER NOT NULL DEFAULT 0,
    last_seen_ms     INTEGER,
    last_rssi        INTEGER,
    last_snr         REAL,
    battery_mv       INTEGER,
    flags            INTEGER,
    reboots          INTEGER,
    down_rssi        INTEGER,
    down_snr         INTEGER,
    readings         TEXT,
    missing_since_ms INTEGER
);

CREATE TABLE sensor_alarms (
    sensor_id  INTEGER NOT NULL REFERENCES sensors(id) ON DELETE CASCADE,
    alarm_id   INTEGER NOT NULL CHECK (alarm_id BETWEEN 0 AND 65535),
    active     INTEGER NOT NULL CHECK (active IN (0, 1)),
    first_fcnt INTEGER NOT NULL,
    last_ms    INTEGER NOT NULL,
    PRIMARY KEY (sensor_id, alarm_id, active)
) WITHOUT ROWID;
"#;

/// Version 7: when each sensor's supervision clock last started, so that a sensor
/// provisioned (or enabled again) but never heard is reported missing too.
///
/// `sensors.enabled_since_ms` is when the sensor was added, or last enabled after being
/// disabled (unix milliseconds); it never changes otherwise. A sensor not heard since
/// that moment is missing once it has been silent that long (`missing_since_ms` is then
/// set to it). Existing rows take their `created_ms`. NULL is never written; readers
/// fall back to `created_ms` all the same.
const V7_SENSOR_ENABLED_SINCE: &str = r#"
ALTER TABLE sensors ADD COLUMN enabled_since_ms INTEGER;
UPDATE sensors SET enabled_since_ms = created_ms;
"#;

/// The ordered migrations; index `i` takes the database to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    V1_ACCESS,
    V2_ADMINS,
    V3_GATE_EVENTS,
    V4_EVENTS,
    V5_REMOTE_OPENS,
    V6_SENSORS,
    V7_SENSOR_ENABLED_SINCE,
];

/// The schema version this code reads and writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Creates `dir` (0700) if it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// The database path for a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Opens (creating 0600 if missing) the database in `data_dir`, configures the connection
/// and brings the schema up to date.
pub(crate) fn open_connection(data_dir: &Path) -> Result<Connection, StoreError> {
    ensure_dir(data_dir)?;
    let path = db_path(data_dir);
    // Create the file ourselves so it is born 0600; SQLite gives its -wal and -shm files
    // the database file's permissions.
    let io = |source| StoreError::Io {
        path: path.clone(),
        source,
    };
    // Never open the database file with std while this process may hold SQLite
    // connections to it: closing *any* descriptor of a file drops *all* of the process's
    // POSIX locks on it (fcntl(2)), including SQLite's. Another process closing its
    // connection would then believe it is the last one, checkpoint and delete the WAL
    // under our open connections, and later commits would be invisible to everyone else.
    // So: stat and chmod by path, and open only to create a file that does not exist yet.
    match std::fs::metadata(&path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => {}
                // Created by another opener meanwhile: fine.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        Err(e) => return Err(io(e)),
    }

    let mut conn = Connection::open(&path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode returns the resulting mode as a row.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Config(format!(
            "could not switch {} to WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Applies every migration the database lacks, one transaction each.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = current_version();
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > supported {
            return Err(StoreError::TooNew { found, supported });
        }
        if found == supported {
            return Ok(());
        }
        let Some(sql) = usize::try_from(found).ok().and_then(|i| MIGRATIONS.get(i)) else {
            return Err(StoreError::Corrupt(format!(
                "database reports schema version {found}"
            )));
        };
        tx.execute_batch(sql)?;
        // user_version lives in the database header and changes with the transaction.
        tx.execute_batch(&format!("PRAGMA user_version = {}", found + 1))?;
        tx.commit()?;
        tracing::info!(version = found + 1, "database migrated");
    }
}
