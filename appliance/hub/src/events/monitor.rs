//! The hub's own watch over the box and its gates: events nobody sends, raised from what
//! the hub can see.
//!
//! | kind | severity | lifecycle | when |
//! |---|---|---|---|
//! | [`SYSTEM_STARTED`] `system.started` | info | instant | the hub started |
//! | [`SYSTEM_RESTARTED_AFTER_CRASH`] `system.restarted_after_crash` | warning | instant | the previous run did not shut down cleanly |
//! | [`SYSTEM_DISK_FULL`] `system.disk_full` | critical | active, then ended | the data partition is fuller than `hub.alerts.disk_full_percent` |
//! | [`SYSTEM_CLOCK_UNSYNCHRONISED`] `system.clock_unsynchronised` | warning | active, then ended | the kernel has said the clock is unsynchronised for [`CLOCK_GRACE`] |
//! | [`GATE_OFFLINE`] `gate.offline` | warning | active, then ended | a gate seen before has been silent `hub.alerts.gate_offline_s` |
//! | [`ACCESS_REPEATED_DENIES`] `access.repeated_denies` | warning | instant | [`DENY_THRESHOLD`] denies at one gate within [`DENY_WINDOW`] |
//!
//! The system events have source `system` (kind system); the gate ones the gate's name
//! (kind gate). All of them come in as [`Ingress::System`].
//!
//! How each is found, and what it promises:
//! - Started / crashed: a marker file ([`RUNNING_MARKER`] in the data directory) is
//!   written when the monitor starts and removed by [`Monitor::finish`] once the hub has
//!   shut down cleanly; finding it at start means the previous run ended otherwise
//!   (killed, crashed, power lost).
//! - Repeated denies: read from the access log (by id, every [`DENY_POLL`]), never on the
//!   decision path. Per gate, once [`DENY_THRESHOLD`] denies fall within [`DENY_WINDOW`]
//!   (by the log's decision times) one event is raised for that window, whose start
//!   names it (`denies:<gate>:<start ms>`); denies before the window ends count for
//!   nothing more. At start the log is read back over the last window (at most
//!   [`LOOKBACK_ROWS`] rows), so a burst cut by a restart is still seen.
//! - Gate offline: from the gates' `last_seen` in the store, which the access service
//!   writes at most every [`TOUCH_INTERVAL`](crate::access::TOUCH_INTERVAL), so it lags
//!   by up to [`LAST_SEEN_LAG`]: a gate is offline once its `last_seen` is older than the
//!   limit plus that lag (a gate that keeps talking is never called offline, whatever the
//!   limit). Checked every quarter of the limit (at least every second, at most every
//!   [`CHECK_EVERY`]). The episode is named by the last time the
//!   gate was seen (`offline:<gate>:<ms>`); when the gate is heard again (or is disabled
//!   or removed) the event ends, which sends a "resolved" notice.
//! - Disk full and clock unsynchronised: checked at start and every [`CHECK_EVERY`]
//!   (`statvfs(3)` of the data directory; `adjtimex(2)` read-only: `TIME_ERROR` or
//!   `STA_UNSYNC`). The clock must stay unsynchronised for [`CLOCK_GRACE`] first: after a
//!   boot, NTP takes a while to synchronise, which is no alarm.
//! - Episodes survive restarts: at start, the newest active event of each kind is taken
//!   as the open episode, so a condition still there is not raised twice and one that
//!   ended while the hub was down is ended.
//! - Every event carries an external id, and one not accepted (the store full, the hub
//!   stopping) is retried at the next tick, in order (at most [`MAX_PENDING`] wait; beyond
//!   that the oldest is dropped and logged): a retry that did reach the store folds.
//! - The tunnel's key: at start the hub makes sure the reserved source `tunnel` exists
//!   and writes its API key to [`TUNNEL_KEY_FILE`] (0640: on the box the tunnel runs as
//!   another user of the hub's group) in the data directory, where the tunnel reads it to
//!   post its events to the webhook. A key file that still matches is kept (its mode set
//!   to 0640 if it is not).
//!
//! The detectors ([`DenyWatch`], [`OfflineWatch`], [`ConditionWatch`], [`disk_full`],
//! [`clock_unsynchronised`]) are sans-IO: the time and the readings are passed in.

use super::{EventService, Ingress, StoreConn, SubmitError};
use crate::access::AccessService;
use crate::gate_frames::gate_source;
use gatehouse_access::model::GateId;
use gatehouse_alerts::model::{limits, Lifecycle, NewEvent, Severity, SourceKind};
use gatehouse_store::events::EventFilter;
use gatehouse_store::{LogFilter, Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

pub const SYSTEM_STARTED: &str = "system.started";
pub const SYSTEM_RESTARTED_AFTER_CRASH: &str = "system.restarted_after_crash";
pub const SYSTEM_DISK_FULL: &str = "system.disk_full";
pub const SYSTEM_CLOCK_UNSYNCHRONISED: &str = "system.clock_unsynchronised";
pub const GATE_OFFLINE: &str = "gate.offline";
pub const ACCESS_REPEATED_DENIES: &str = "access.repeated_denies";

/// Denies at one gate within [`DENY_WINDOW`] that raise an event.
pub const DENY_THRESHOLD: usize = 5;
/// The window of [`DENY_THRESHOLD`].
pub const DENY_WINDOW: Duration = Duration::from_secs(60);
/// How often the access log is read for denies.
pub const DENY_POLL: Duration = Duration::from_secs(1);
/// Access-log rows read back at start (and at most per poll).
pub const LOOKBACK_ROWS: u32 = 10_000;
/// How often the disk and the clock are checked (the first check is at start).
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// How long the kernel must report the clock unsynchronised before it is an alarm:
/// chrony and systemd-timesyncd synchronise within a few minutes of boot.
pub const CLOCK_GRACE: Duration = Duration::from_secs(10 * 60);
/// How far a gate's `last_seen` in the store may be behind the last frame heard from
/// it: the access service's touch interval and one refresher pass.
pub const LAST_SEEN_LAG: Duration =
    Duration::from_secs(crate::access::TOUCH_INTERVAL.as_secs() + 1);
/// Events waiting to be accepted, at most.
pub const MAX_PENDING: usize = 1024;
/// The file in the data directory that says a hub is running.
pub const RUNNING_MARKER: &str = "hub.running";
/// The file in the data directory that holds the tunnel source's API key.
pub use gatehouse_config::TUNNEL_EVENTS_KEY_FILE as TUNNEL_KEY_FILE;
/// The reserved source the tunnel posts its events as.
pub const TUNNEL_SOURCE: &str = "tunnel";

/// What the monitor watches for, and how closely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    pub deny_threshold: usize,
    pub deny_window: Duration,
    /// `None`: gates are not watched.
    pub gate_offline: Option<Duration>,
    /// Raise `system.disk_full` above this percentage.
    pub disk_full_percent: u8,
    pub check_every: Duration,
    pub clock_grace: Duration,
}

impl MonitorSettings {
    /// The settings of `[hub.alerts]` (`gate_offline_s`, `disk_full_percent`), and the
    /// defaults of this module for the rest.
    pub fn from_config(alerts: &gatehouse_config::Alerts) -> MonitorSettings {
        MonitorSettings {
            gate_offline: (alerts.gate_offline_s > 0)
                .then(|| Duration::from_secs(alerts.gate_offline_s)),
            disk_full_percent: alerts.disk_full_percent,
            ..MonitorSettings::default()
        }
    }

    /// How often gates are checked: a quarter of the limit, from 1 s to [`CHECK_EVERY`].
    fn offline_every(&self) -> Duration {
        self.gate_offline.map_or(self.check_every, |l| {
            (l / 4).clamp(Duration::from_secs(1), self.check_every)
        })
    }
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            deny_threshold: DENY_THRESHOLD,
            deny_window: DENY_WINDOW,
            gate_offline: Some(Duration::from_secs(300)),
            disk_full_percent: 90,
            check_every: CHECK_EVERY,
            clock_grace: CLOCK_GRACE,
        }
    }
}

fn span(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn unix_ms(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1_000_000
}

// ---- repeated denies ---------------------------------------------------------------

/// Denies at one gate that reached the threshold within the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyBurst {
    pub gate: GateId,
    /// The first deny of the window (names the event).
    pub window_start: OffsetDateTime,
    /// Denies known in the window when it was raised.
    pub count: usize,
}

#[derive(Debug, Default)]
struct GateDenies {
    /// Deny times, sorted, none before `quiet_until`.
    times: Vec<OffsetDateTime>,
    /// The end of the last window raised: denies before it count for nothing more.
    quiet_until: Option<OffsetDateTime>,
}

/// Finds [`DenyBurst`]s in a gate's denies, which may come out of time order (offline
/// uploads). Keeps at most `4 × threshold` (at least 16) recent times per gate.
#[derive(Debug)]
pub struct DenyWatch {
    threshold: usize,
    window: time::Duration,
    gates: HashMap<GateId, GateDenies>,
}

impl DenyWatch {
    pub fn new(threshold: usize, window: Duration) -> DenyWatch {
        DenyWatch {
            threshold: threshold.max(1),
            window: span(window),
            gates: HashMap::new(),
        }
    }

    /// A deny at `gate` decided at `at`; the burst it completes, if any.
    pub fn deny(&mut self, gate: GateId, at: OffsetDateTime) -> Option<DenyBurst> {
        let g = self.gates.entry(gate).or_default();
        if g.quiet_until.is_some_and(|q| at < q) {
            return None;
        }
        let pos = g.times.partition_point(|t| *t <= at);
        g.times.insert(pos, at);
        let keep = (self.threshold * 4).max(16);
        if g.times.len() > keep {
            let excess = g.times.len() - keep;
            g.times.drain(..excess);
        }
        let n = self.threshold;
        let start = (0..=g.times.len().checked_sub(n)?).find_map(|i| {
            let first = *g.times.get(i)?;
            let nth = *g.times.get(i + n - 1)?;
            (nth - first < self.window).then_some(first)
        })?;
        let end = start + self.window;
        let count = g.times.iter().filter(|t| **t >= start && **t < end).count();
        g.quiet_until = Some(end);
        g.times.retain(|t| *t >= end);
        Some(DenyBurst {
            gate,
            window_start: start,
            count,
        })
    }
}

// ---- gates offline -----------------------------------------------------------------

/// What the watch knows of a gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSeen {
    pub id: GateId,
    pub name: String,
    pub enabled: bool,
    pub last_seen: Option<OffsetDateTime>,
}

/// A gate went silent or was heard again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfflineChange {
    Offline {
        gate: GateId,
        name: String,
        /// When it was last seen.
        since: OffsetDateTime,
        external_id: String,
    },
    /// Heard again (or disabled, or removed): the episode ends.
    Back {
        gate: GateId,
        name: String,
        external_id: String,
    },
}

/// Gates seen before and silent for the limit, as episodes.
#[derive(Debug)]
pub struct OfflineWatch {
    limit: time::Duration,
    /// Gate -> (name, external id) of its open episode.
    open: HashMap<GateId, (String, String)>,
}

impl OfflineWatch {
    pub fn new(limit: Duration) -> OfflineWatch {
        OfflineWatch {
            limit: span(limit),
            open: HashMap::new(),
        }
    }

    /// The external id of the episode of `gate` that began when it was last seen at
    /// `since`.
    pub fn external_id(gate: GateId, since: OffsetDateTime) -> String {
        format!("offline:{gate}:{}", unix_ms(since))
    }

    /// Takes an episode left open by a previous run.
    pub fn resume(&mut self, gate: GateId, name: String, external_id: String) {
        self.open.insert(gate, (name, external_id));
    }

    /// Compares every gate's last sighting with `now`.
    pub fn check(&mut self, gates: &[GateSeen], now: OffsetDateTime) -> Vec<OfflineChange> {
        let mut changes = Vec::new();
        for g in gates {
            let silent_since = g
                .last_seen
                .filter(|seen| g.enabled && now - *seen >= self.limit);
            match (silent_since, self.open.contains_key(&g.id)) {
                (Some(since), false) => {
                    let external_id = Self::external_id(g.id, since);
                    self.open
                        .insert(g.id, (g.name.clone(), external_id.clone()));
                    changes.push(OfflineChange::Offline {
                        gate: g.id,
                        name: g.name.clone(),
                        since,
                        external_id,
                    });
                }
                (None, true) => {
                    if let Some((_, external_id)) = self.open.remove(&g.id) {
                        changes.push(OfflineChange::Back {
                            gate: g.id,
                            name: g.name.clone(),
                            external_id,
                        });
                    }
                }
                _ => {}
            }
        }
        let gone: Vec<GateId> = self
            .open
            .keys()
            .filter(|id| !gates.iter().any(|g| g.id == **id))
            .copied()
            .collect();
        for gate in gone {
            if let Some((name, external_id)) = self.open.remove(&gate) {
                changes.push(OfflineChange::Back {
                    gate,
                    name,
                    external_id,
                });
            }
        }
        changes
    }
}

// ---- conditions of the box ---------------------------------------------------------

/// A condition began (after its grace) or cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionChange {
    Raised {
        external_id: String,
        since: OffsetDateTime,
    },
    Cleared {
        external_id: String,
    },
}

/// A condition of the box (disk full, clock unsynchronised) as episodes: raised once it
/// has held for `grace`, cleared when it stops holding.
#[derive(Debug)]
pub struct ConditionWatch {
    prefix: &'static str,
    grace: time::Duration,
    holding_since: Option<OffsetDateTime>,
    open: Option<String>,
}

impl ConditionWatch {
    /// Episodes are named `<prefix>:<start ms>`.
    pub fn new(prefix: &'static str, grace: Duration) -> ConditionWatch {
        ConditionWatch {
            prefix,
            grace: span(grace),
            holding_since: None,
            open: None,
        }
    }

    /// Takes an episode left open by a previous run.
    pub fn resume(&mut self, external_id: String) {
        self.open = Some(external_id);
    }

    /// Whether the condition holds at `now`.
    pub fn observe(&mut self, holds: bool, now: OffsetDateTime) -> Option<ConditionChange> {
        if !holds {
            self.holding_since = None;
            return self
                .open
                .take()
                .map(|external_id| ConditionChange::Cleared { external_id });
        }
        let since = *self.holding_since.get_or_insert(now);
        if self.open.is_some() || now - since < self.grace {
            return None;
        }
        let external_id = format!("{}:{}", self.prefix, unix_ms(since));
        self.open = Some(external_id.clone());
        Some(ConditionChange::Raised { external_id, since })
    }
}

/// Blocks of a file system, as `statvfs(3)` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub blocks: u64,
    /// Free blocks (root's reserve included).
    pub free: u64,
    /// Free blocks an unprivileged user may use.
    pub available: u64,
}

impl DiskUsage {
    /// The percentage in use as `df` shows it: used / (used + available), rounded up.
    pub fn used_percent(&self) -> Option<u8> {
        let used = self.blocks.saturating_sub(self.free);
        let total = used.saturating_add(self.available);
        if total == 0 {
            return None;
        }
        let pct = (u128::from(used) * 100).div_ceil(u128::from(total));
        u8::try_from(pct).ok()
    }
}

/// Whether `usage` is above `threshold` percent.
pub fn disk_full(usage: &DiskUsage, threshold: u8) -> bool {
    usage.used_percent().is_some_and(|p| p > threshold)
}

/// `TIME_ERROR` (adjtimex(2) return value).
pub const TIME_ERROR: i32 = 5;
/// `STA_UNSYNC` (the `status` bit: "clock unsynchronized").
pub const STA_UNSYNC: i32 = 0x0040;

/// Whether `adjtimex(2)`'s answer (its return value and `status`) says the clock is not
/// synchronised.
pub fn clock_unsynchronised(state: i32, status: i32) -> bool {
    state == TIME_ERROR || status & STA_UNSYNC != 0
}

/// `statvfs(3)` of `path`.
#[allow(unsafe_code)]
#[allow(clippy::unnecessary_cast)] // the field types differ between targets
pub fn disk_usage(path: &Path) -> std::io::Result<DiskUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` is plain integers, for which all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string and `st` a valid, writable struct, both alive
    // for the call; statvfs keeps neither pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(DiskUsage {
        blocks: st.f_blocks as u64,
        free: st.f_bfree as u64,
        available: st.f_bavail as u64,
    })
}

/// `adjtimex(2)` without changing anything: (return value, `status`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn clock_state() -> std::io::Result<(i32, i32)> {
    // SAFETY: `timex` is plain integers, for which all zeroes is a valid value; `modes` 0
    // asks only to read.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, writable struct alive for the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((state, tx.status))
}

/// Elsewhere the clock's state is unknown: reported as synchronised.
#[cfg(not(target_os = "linux"))]
pub fn clock_state() -> std::io::Result<(i32, i32)> {
    Ok((0, 0))
}

// ---- the crash marker and the tunnel's key -----------------------------------------

/// Writes the running marker; returns what a previous run's marker said, if one was
/// left (that run did not shut down cleanly).
pub fn begin_run(data_dir: &Path, now: OffsetDateTime) -> std::io::Result<Option<String>> {
    let path = data_dir.join(RUNNING_MARKER);
    let previous = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let text = format!("pid {} started {}\n", std::process::id(), rfc3339(now));
    std::fs::write(&path, text)?;
    Ok(previous)
}

/// Removes the running marker: the hub shut down cleanly.
pub fn end_run(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(data_dir.join(RUNNING_MARKER)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Why the tunnel's key could not be handed over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelKeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Mode of [`TUNNEL_KEY_FILE`]: the hub writes it, the tunnel (same group) reads it.
pub const TUNNEL_KEY_MODE: u32 = 0o640;

/// Makes sure the reserved source `tunnel` exists and that [`TUNNEL_KEY_FILE`] holds its
/// key (written [`TUNNEL_KEY_MODE`], set explicitly whatever the umask, through a
/// temporary file and a rename). Returns whether a new key was written.
pub fn provide_tunnel_key(
    store: &Store,
    data_dir: &Path,
    now: OffsetDateTime,
) -> Result<bool, TunnelKeyError> {
    let path = data_dir.join(TUNNEL_KEY_FILE);
    let current = std::fs::read_to_string(&path).ok();
    let current = current.as_deref().map(str::trim).filter(|k| !k.is_empty());
    let (_, fresh) =
        store.ensure_internal_source(TUNNEL_SOURCE, SourceKind::Tunnel, current, now)?;
    let write_err = |source| TunnelKeyError::Write {
        path: path.clone(),
        source,
    };
    let Some(key) = fresh else {
        // Kept; one written 0600 by an older version is widened for the tunnel's user.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map_err(write_err)?
            .permissions()
            .mode();
        if mode & 0o777 != TUNNEL_KEY_MODE {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(TUNNEL_KEY_MODE))
                .map_err(write_err)?;
        }
        return Ok(false);
    };
    let tmp = data_dir.join(format!("{TUNNEL_KEY_FILE}.tmp"));
    {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write_err)?;
        f.set_permissions(std::fs::Permissions::from_mode(TUNNEL_KEY_MODE))
            .and_then(|()| f.write_all(format!("{}\n", key.expose()).as_bytes()))
            .and_then(|()| f.sync_all())
            .map_err(write_err)?;
    }
    std::fs::rename(&tmp, &path).map_err(write_err)?;
    Ok(true)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

// ---- the events ----------------------------------------------------------------------

fn system_event(
    kind: &str,
    severity: Severity,
    lifecycle: Lifecycle,
    external_id: String,
    message: String,
    now: OffsetDateTime,
) -> NewEvent {
    NewEvent {
        source: SourceKind::System.as_str().to_owned(),
        source_kind: SourceKind::System,
        kind: kind.to_owned(),
        severity,
        time: now,
        camera: None,
        zone: None,
        device: None,
        message: Some(message),
        snapshot_url: None,
        clip_url: None,
        external_id: Some(external_id),
        lifecycle,
    }
}

fn gate_event(
    gate: GateId,
    name: &str,
    kind: &str,
    lifecycle: Lifecycle,
    external_id: String,
    message: String,
    time: OffsetDateTime,
) -> NewEvent {
    let source =
        u32::try_from(gate).map_or_else(|_| format!("gate-{gate}"), |g| gate_source(g, name));
    NewEvent {
        source,
        source_kind: SourceKind::Gate,
        kind: kind.to_owned(),
        severity: Severity::Warning,
        time,
        camera: None,
        zone: None,
        device: None,
        message: Some(message),
        snapshot_url: None,
        clip_url: None,
        external_id: Some(external_id),
        lifecycle,
    }
}

/// The `system.started` event of a hub started at `now`.
pub fn started_event(now: OffsetDateTime) -> NewEvent {
    system_event(
        SYSTEM_STARTED,
        Severity::Info,
        Lifecycle::Instant,
        format!("started:{}", unix_ms(now)),
        format!("the hub started (gatehouse {})", env!("CARGO_PKG_VERSION")),
        now,
    )
}

/// The `system.restarted_after_crash` event; `previous`: what the previous run's marker
/// said.
pub fn crash_event(previous: &str, now: OffsetDateTime) -> NewEvent {
    let previous = gatehouse_alerts::model::clean_text(previous, 200);
    system_event(
        SYSTEM_RESTARTED_AFTER_CRASH,
        Severity::Warning,
        Lifecycle::Instant,
        format!("crash:{}", unix_ms(now)),
        format!(
            "the hub restarted after its previous run ({previous}) ended without a clean \
             shutdown: it crashed, was killed, or the box lost power"
        ),
        now,
    )
}

/// The event of a repeated-denies burst at gate `name`.
pub fn denies_event(
    burst: &DenyBurst,
    name: &str,
    window: Duration,
    now: OffsetDateTime,
) -> NewEvent {
    let plausible = burst.window_start.unix_timestamp() >= limits::EARLIEST_TIME
        && (burst.window_start - now).whole_seconds() <= limits::MAX_AHEAD;
    gate_event(
        burst.gate,
        name,
        ACCESS_REPEATED_DENIES,
        Lifecycle::Instant,
        format!("denies:{}:{}", burst.gate, unix_ms(burst.window_start)),
        format!(
            "{} denied card reads within {} s at gate {name:?} (#{})",
            burst.count,
            window.as_secs(),
            burst.gate
        ),
        if plausible { burst.window_start } else { now },
    )
}

/// The event of a gate offline change.
pub fn offline_event(change: &OfflineChange, limit: Duration, now: OffsetDateTime) -> NewEvent {
    match change {
        OfflineChange::Offline {
            gate,
            name,
            since,
            external_id,
        } => gate_event(
            *gate,
            name,
            GATE_OFFLINE,
            Lifecycle::Active,
            external_id.clone(),
            format!(
                "gate {name:?} (#{gate}) has not been heard from since {} (limit {} s)",
                rfc3339(*since),
                limit.as_secs()
            ),
            now,
        ),
        OfflineChange::Back {
            gate,
            name,
            external_id,
        } => gate_event(
            *gate,
            name,
            GATE_OFFLINE,
            Lifecycle::Ended,
            external_id.clone(),
            format!("gate {name:?} (#{gate}) is heard from again"),
            now,
        ),
    }
}

/// The event of a condition change of kind `kind` (disk full: critical; otherwise
/// warning); `what` describes the reading.
pub fn condition_event(
    kind: &str,
    change: &ConditionChange,
    what: &str,
    now: OffsetDateTime,
) -> NewEvent {
    let severity = if kind == SYSTEM_DISK_FULL {
        Severity::Critical
    } else {
        Severity::Warning
    };
    match change {
        ConditionChange::Raised { external_id, .. } => system_event(
            kind,
            severity,
            Lifecycle::Active,
            external_id.clone(),
            what.to_owned(),
            now,
        ),
        ConditionChange::Cleared { external_id } => system_event(
            kind,
            severity,
            Lifecycle::Ended,
            external_id.clone(),
            what.to_owned(),
            now,
        ),
    }
}

// ---- the task ------------------------------------------------------------------------

/// The running monitor (see [`spawn`]).
#[derive(Debug)]
pub struct Monitor {
    task: tokio::task::JoinHandle<()>,
    data_dir: PathBuf,
}

impl Monitor {
    /// Waits for the monitor to stop (after the hub's stop signal), then removes the
    /// running marker: call once the hub has shut down cleanly.
    pub async fn finish(self) {
        let _ = self.task.await;
        let dir = self.data_dir;
        let removed = tokio::task::spawn_blocking(move || end_run(&dir)).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(error = %e, "cannot remove the hub's running marker");
        }
    }
}

/// Starts the monitor: it writes the running marker, raises `system.started` (and
/// `system.restarted_after_crash`), hands the tunnel its key, then watches until `stop`
/// turns true.
pub fn spawn(
    data_dir: &Path,
    settings: MonitorSettings,
    events: EventService,
    access: AccessService,
    stop: watch::Receiver<bool>,
) -> Monitor {
    let watcher = Watcher {
        data_dir: data_dir.to_path_buf(),
        store: StoreConn::new(data_dir),
        denies: DenyWatch::new(settings.deny_threshold, settings.deny_window),
        offline: settings
            .gate_offline
            .map(|limit| OfflineWatch::new(limit + LAST_SEEN_LAG)),
        disk: ConditionWatch::new("disk_full", Duration::ZERO),
        clock: ConditionWatch::new("clock_unsynchronised", settings.clock_grace),
        settings,
        events,
        access,
        pending: VecDeque::new(),
        log_cursor: None,
    };
    Monitor {
        task: tokio::spawn(watcher.run(stop)),
        data_dir: data_dir.to_path_buf(),
    }
}

struct Watcher {
    data_dir: PathBuf,
    store: StoreConn,
    settings: MonitorSettings,
    events: EventService,
    access: AccessService,
    denies: DenyWatch,
    offline: Option<OfflineWatch>,
    disk: ConditionWatch,
    clock: ConditionWatch,
    /// Events not accepted yet, oldest first.
    pending: VecDeque<NewEvent>,
    /// The last access-log id read; `None` until the start's look-back is done.
    log_cursor: Option<i64>,
}

/// The open episode among `events` (newest first): the newest active one.
fn open_episode(
    events: Vec<gatehouse_alerts::model::Event>,
) -> Option<gatehouse_alerts::model::Event> {
    events
        .into_iter()
        .find(|e| e.new.lifecycle == Lifecycle::Active)
}

impl Watcher {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        self.start().await;
        let mut denies = tokio::time::interval(DENY_POLL);
        let mut checks = tokio::time::interval(self.settings.check_every);
        let mut gates = tokio::time::interval(self.settings.offline_every());
        for t in [&mut denies, &mut checks, &mut gates] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = crate::stopped(&mut stop) => break,
                _ = denies.tick() => self.poll_denies().await,
                _ = checks.tick() => self.check_box().await,
                _ = gates.tick() => self.check_gates().await,
            }
            self.flush().await;
        }
        self.flush().await;
    }

    fn queue(&mut self, event: NewEvent) {
        if self.pending.len() >= MAX_PENDING {
            if let Some(lost) = self.pending.pop_front() {
                tracing::error!(kind = %lost.kind, source = %lost.source,
                    "monitor event dropped: the event store has not accepted events for a while");
            }
        }
        self.pending.push_back(event);
    }

    /// Submits what is pending, in order, until one is not accepted.
    async fn flush(&mut self) {
        while let Some(event) = self.pending.front() {
            match self.events.submit(event.clone(), Ingress::System).await {
                Ok(_) => {}
                Err(SubmitError::Refused { field, reason }) => {
                    tracing::error!(kind = %event.kind, field, %reason, "monitor event refused");
                }
                Err(e) => {
                    tracing::warn!(kind = %event.kind, error = %e, "monitor event not accepted; retrying");
                    return;
                }
            }
            self.pending.pop_front();
        }
    }

    async fn start(&mut self) {
        let now = OffsetDateTime::now_utc();
        let dir = self.data_dir.clone();
        match tokio::task::spawn_blocking(move || begin_run(&dir, now)).await {
            Ok(Ok(previous)) => {
                self.queue(started_event(now));
                if let Some(p) = previous {
                    tracing::warn!(previous = %p, "the previous run did not shut down cleanly");
                    self.queue(crash_event(&p, now));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot write the hub's running marker");
                self.queue(started_event(now));
            }
            Err(e) => tracing::error!(error = %e, "running marker task failed"),
        }
        let dir = self.data_dir.clone();
        match self
            .store
            .call(move |s| Ok(provide_tunnel_key(s, &dir, now)))
            .await
        {
            Ok(Ok(true)) => tracing::info!(
                file = TUNNEL_KEY_FILE,
                "new API key for the tunnel's events written"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot hand the tunnel its events key; the tunnel's events will be refused")
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot hand the tunnel its events key; the tunnel's events will be refused")
            }
        }
        self.resume_episodes().await;
        self.flush().await;
    }

    /// Takes the episodes a previous run left open.
    async fn resume_episodes(&mut self) {
        let list = |kind: &str, source: Option<&str>| EventFilter {
            kind: Some(kind.to_owned()),
            source: source.map(str::to_owned),
            limit: 100,
            ..EventFilter::default()
        };
        let system = Some(SourceKind::System.as_str());
        let queries = (
            list(SYSTEM_DISK_FULL, system),
            list(SYSTEM_CLOCK_UNSYNCHRONISED, system),
            list(GATE_OFFLINE, None),
        );
        let found = self
            .store
            .call(move |s| {
                Ok((
                    open_episode(s.list_events(&queries.0)?),
                    open_episode(s.list_events(&queries.1)?),
                    s.list_events(&queries.2)?,
                ))
            })
            .await;
        let (disk, clock, offline) = match found {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the open episodes of the previous run");
                return;
            }
        };
        if let Some(id) = disk.and_then(|e| e.new.external_id) {
            self.disk.resume(id);
        }
        if let Some(id) = clock.and_then(|e| e.new.external_id) {
            self.clock.resume(id);
        }
        if let Some(watch) = &mut self.offline {
            let mut seen = std::collections::HashSet::new();
            // Newest first: the newest event of each gate decides.
            for e in offline {
                let Some(id) = e.new.external_id else {
                    continue;
                };
                let Some(gate) = id
                    .strip_prefix("offline:")
                    .and_then(|r| r.split(':').next())
                    .and_then(|g| g.parse::<GateId>().ok())
                else {
                    continue;
                };
                if seen.insert(gate) && e.new.lifecycle == Lifecycle::Active {
                    watch.resume(gate, e.new.source, id);
                }
            }
        }
    }

    fn gate_name(&self, gate: GateId) -> String {
        u32::try_from(gate)
            .ok()
            .and_then(|g| self.access.gate(g))
            .map_or_else(|| format!("gate-{gate}"), |g| g.name.clone())
    }

    async fn poll_denies(&mut self) {
        let now = OffsetDateTime::now_utc();
        let (cursor, since) = match self.log_cursor {
            Some(c) => (c, None),
            None => {
                let last = self.store.call(|s| s.log_tail(1)).await;
                match last {
                    Ok(rows) => (
                        rows.last()
                            .map_or(0, |r| r.id.saturating_sub(i64::from(LOOKBACK_ROWS))),
                        Some(now - span(self.settings.deny_window)),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the access log");
                        return;
                    }
                }
            }
        };
        let filter = LogFilter {
            after_id: Some(cursor),
            since,
            limit: LOOKBACK_ROWS,
            ..LogFilter::default()
        };
        let rows = match self.store.call(move |s| s.log_query(&filter)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the access log");
                return;
            }
        };
        // Without rows the look-back still ends; the cursor stays where it was.
        self.log_cursor = Some(rows.last().map_or(cursor, |r| r.id));
        for row in rows {
            if row.reason().is_none_or(|r| r.is_allowed()) {
                continue;
            }
            if let Some(burst) = self.denies.deny(row.gate, row.at) {
                let name = self.gate_name(burst.gate);
                tracing::warn!(gate = burst.gate, name = %name, count = burst.count, "repeated denies");
                let event = denies_event(&burst, &name, self.settings.deny_window, now);
                self.queue(event);
            }
        }
    }

    async fn check_gates(&mut self) {
        let Some(limit) = self.settings.gate_offline else {
            return;
        };
        let gates = match self.store.call(|s| s.list_gates()).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the gates");
                return;
            }
        };
        let seen: Vec<GateSeen> = gates
            .into_iter()
            .map(|g| GateSeen {
                id: g.gate.id,
                name: g.gate.name,
                enabled: g.gate.enabled,
                last_seen: g.last_seen,
            })
            .collect();
        let now = OffsetDateTime::now_utc();
        let Some(watch) = &mut self.offline else {
            return;
        };
        for change in watch.check(&seen, now) {
            match &change {
                OfflineChange::Offline { gate, name, .. } => {
                    tracing::warn!(gate, name = %name, "gate offline")
                }
                OfflineChange::Back { gate, name, .. } => {
                    tracing::info!(gate, name = %name, "gate back")
                }
            }
            let event = offline_event(&change, limit, now);
            self.queue(event);
        }
    }

    async fn check_box(&mut self) {
        let now = OffsetDateTime::now_utc();
        let dir = self.data_dir.clone();
        let readings = tokio::task::spawn_blocking(move || (disk_usage(&dir), clock_state())).await;
        let Ok((disk, clock)) = readings else {
            return;
        };
        match disk {
            Ok(usage) => {
                let limit = self.settings.disk_full_percent;
                let pct = usage.used_percent().unwrap_or(0);
                if let Some(change) = self.disk.observe(disk_full(&usage, limit), now) {
                    let what = match change {
                        ConditionChange::Raised { .. } => format!(
                            "the data partition ({}) is {pct}% full, above {limit}%; free \
                             space before the event store stops accepting events",
                            self.data_dir.display()
                        ),
                        ConditionChange::Cleared { .. } => format!(
                            "the data partition ({}) is {pct}% full again, at or below {limit}%",
                            self.data_dir.display()
                        ),
                    };
                    tracing::warn!(percent = pct, "{what}");
                    self.queue(condition_event(SYSTEM_DISK_FULL, &change, &what, now));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the data partition's usage"),
        }
        match clock {
            Ok((state, status)) => {
                let unsynced = clock_unsynchronised(state, status);
                if let Some(change) = self.clock.observe(unsynced, now) {
                    let what = match change {
                        ConditionChange::Raised { since, .. } => format!(
                            "the system clock has not been synchronised since {} (the kernel \
                             reports state {state}, status {status:#x}); check NTP (chrony or \
                             systemd-timesyncd) and the network path to its servers",
                            rfc3339(since)
                        ),
                        ConditionChange::Cleared { .. } => {
                            "the system clock is synchronised again".to_owned()
                        }
                    };
                    tracing::warn!("{what}");
                    self.queue(condition_event(
                        SYSTEM_CLOCK_UNSYNCHRONISED,
                        &change,
                        &what,
                        now,
                    ));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the clock's state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-03-02 10:00 UTC);

    fn at(secs: i64) -> OffsetDateTime {
        T0 + time::Duration::seconds(secs)
    }

    #[test]
    fn five_denies_within_a_minute_raise_once_per_window() {
        let mut w = DenyWatch::new(5, Duration::from_secs(60));
        // Four, then a fifth 59 s after the first: one burst, named by the first.
        for s in [0, 10, 20, 30] {
            assert_eq!(w.deny(7, at(s)), None);
        }
        let b = w.deny(7, at(59)).unwrap();
        assert_eq!(
            b,
            DenyBurst {
                gate: 7,
                window_start: at(0),
                count: 5
            }
        );
        // More denies in that window: nothing more.
        for s in [59, 59, 59, 59, 59] {
            assert_eq!(w.deny(7, at(s)), None);
        }
        // Another gate has its own count.
        assert_eq!(w.deny(8, at(1)), None);
        // After the window: a new one.
        for s in [60, 61, 62, 63] {
            assert_eq!(w.deny(7, at(s)), None);
        }
        assert_eq!(w.deny(7, at(64)).unwrap().window_start, at(60));

        // Spread thinner than the window: never.
        let mut slow = DenyWatch::new(5, Duration::from_secs(60));
        for i in 0..20 {
            assert_eq!(slow.deny(1, at(i * 15)), None, "deny {i}");
        }
    }

    #[test]
    fn denies_out_of_order_still_find_their_window() {
        // An offline upload arrives after later online denies.
        let mut w = DenyWatch::new(3, Duration::from_secs(60));
        assert_eq!(w.deny(1, at(1000)), None);
        assert_eq!(w.deny(1, at(10)), None);
        assert_eq!(w.deny(1, at(20)), None);
        let b = w.deny(1, at(15)).unwrap();
        assert_eq!((b.window_start, b.count), (at(10), 3));
        // The later one is kept for its own window.
        assert_eq!(w.deny(1, at(1001)), None);
        assert_eq!(w.deny(1, at(1002)).unwrap().window_start, at(1000));
    }

    fn gate(id: GateId, enabled: bool, last_seen: Option<i64>) -> GateSeen {
        GateSeen {
            id,
            name: format!("g{id}"),
            enabled,
            last_seen: last_seen.map(at),
        }
    }

    #[test]
    fn a_silent_gate_goes_offline_once_and_comes_back() {
        let mut w = OfflineWatch::new(Duration::from_secs(300));
        let never = gate(2, true, None);
        // Not yet silent long enough; a gate never seen is not watched.
        assert!(w
            .check(&[gate(1, true, Some(0)), never.clone()], at(299))
            .is_empty());
        let c = w.check(&[gate(1, true, Some(0)), never.clone()], at(300));
        assert_eq!(
            c,
            [OfflineChange::Offline {
                gate: 1,
                name: "g1".into(),
                since: at(0),
                external_id: OfflineWatch::external_id(1, at(0)),
            }]
        );
        assert!(
            w.check(&[gate(1, true, Some(0))], at(900)).is_empty(),
            "once"
        );
        // Heard again.
        let c = w.check(&[gate(1, true, Some(950))], at(960));
        assert_eq!(
            c,
            [OfflineChange::Back {
                gate: 1,
                name: "g1".into(),
                external_id: format!("offline:1:{}", unix_ms(at(0))),
            }]
        );
        // Silent again: a new episode, named by its own last sighting.
        let c = w.check(&[gate(1, true, Some(950))], at(1250));
        assert!(
            matches!(&c[..], [OfflineChange::Offline { since, .. }] if *since == at(950)),
            "{c:?}"
        );
        // Disabled or removed: the episode ends.
        let c = w.check(&[gate(1, false, Some(950))], at(1300));
        assert!(
            matches!(&c[..], [OfflineChange::Back { gate: 1, .. }]),
            "{c:?}"
        );
        let c = w.check(&[gate(1, true, Some(950))], at(1300));
        assert_eq!(c.len(), 1);
        let c = w.check(&[], at(1400));
        assert!(
            matches!(&c[..], [OfflineChange::Back { gate: 1, .. }]),
            "{c:?}"
        );

        // An episode left open by a previous run ends when the gate is back.
        let mut w = OfflineWatch::new(Duration::from_secs(300));
        w.resume(3, "g3".into(), "offline:3:5".into());
        assert!(
            w.check(&[gate(3, true, Some(0))], at(400)).is_empty(),
            "still offline"
        );
        let c = w.check(&[gate(3, true, Some(390))], at(400));
        assert_eq!(
            c,
            [OfflineChange::Back {
                gate: 3,
                name: "g3".into(),
                external_id: "offline:3:5".into()
            }]
        );
    }

    #[test]
    fn conditions_wait_their_grace_and_clear_once() {
        let mut disk = ConditionWatch::new("disk_full", Duration::ZERO);
        assert_eq!(disk.observe(false, at(0)), None);
        let raised = disk.observe(true, at(60)).unwrap();
        let id = format!("disk_full:{}", unix_ms(at(60)));
        assert_eq!(
            raised,
            ConditionChange::Raised {
                external_id: id.clone(),
                since: at(60)
            }
        );
        assert_eq!(disk.observe(true, at(120)), None, "once");
        assert_eq!(
            disk.observe(false, at(180)),
            Some(ConditionChange::Cleared { external_id: id })
        );
        assert_eq!(disk.observe(false, at(240)), None);

        let mut clock = ConditionWatch::new("clock", Duration::from_secs(600));
        assert_eq!(clock.observe(true, at(0)), None, "at boot");
        assert_eq!(clock.observe(true, at(540)), None);
        // Synchronised within the grace: nothing, and the grace starts over.
        assert_eq!(clock.observe(false, at(560)), None);
        assert_eq!(clock.observe(true, at(600)), None);
        assert_eq!(clock.observe(true, at(1199)), None);
        assert!(matches!(
            clock.observe(true, at(1200)),
            Some(ConditionChange::Raised { since, .. }) if since == at(600)
        ));

        // Left open by a previous run and over now: cleared at the first reading.
        let mut resumed = ConditionWatch::new("disk_full", Duration::ZERO);
        resumed.resume("disk_full:1".into());
        assert_eq!(
            resumed.observe(true, at(0)),
            None,
            "still full: nothing new"
        );
        assert_eq!(
            resumed.observe(false, at(60)),
            Some(ConditionChange::Cleared {
                external_id: "disk_full:1".into()
            })
        );
    }

    #[test]
    fn disk_usage_as_df_shows_it() {
        // 1000 blocks, 100 free of which 50 for root only: 900 used of 950 usable.
        let u = DiskUsage {
            blocks: 1000,
            free: 100,
            available: 50,
        };
        assert_eq!(u.used_percent(), Some(95));
        assert!(disk_full(&u, 90));
        assert!(!disk_full(&u, 95), "above, not at");
        let half = DiskUsage {
            blocks: 1000,
            free: 500,
            available: 500,
        };
        assert_eq!(half.used_percent(), Some(50));
        assert!(!disk_full(&half, 90));
        // Rounded up, like df.
        let u = DiskUsage {
            blocks: 1000,
            free: 99,
            available: 99,
        };
        assert_eq!(u.used_percent(), Some(91));
        assert_eq!(
            DiskUsage {
                blocks: 0,
                free: 0,
                available: 0
            }
            .used_percent(),
            None
        );
        // The real reading of a real directory is sane.
        let dir = tempfile::tempdir().unwrap();
        let real = disk_usage(dir.path()).unwrap();
        assert!(real.blocks > 0 && real.used_percent().is_some(), "{real:?}");
        assert!(disk_usage(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn clock_state_from_adjtimex() {
        const TIME_OK: i32 = 0;
        assert!(!clock_unsynchronised(TIME_OK, 0));
        assert!(!clock_unsynchronised(TIME_OK, 0x2001)); // STA_PLL | STA_NANO
        assert!(clock_unsynchronised(TIME_OK, STA_UNSYNC));
        assert!(clock_unsynchronised(TIME_ERROR, 0));
        #[cfg(target_os = "linux")]
        {
            assert_eq!(TIME_ERROR, libc::TIME_ERROR);
            assert_eq!(STA_UNSYNC, libc::STA_UNSYNC);
        }
        // The real call answers (whatever this machine's clock is doing).
        let (state, _) = clock_state().unwrap();
        assert!((0..=5).contains(&state), "{state}");
    }

    #[test]
    fn the_running_marker_tells_a_crash_from_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(begin_run(dir.path(), T0).unwrap(), None, "first start");
        end_run(dir.path()).unwrap();
        assert_eq!(
            begin_run(dir.path(), at(60)).unwrap(),
            None,
            "after a clean stop"
        );
        // No end_run: killed.
        let previous = begin_run(dir.path(), at(120)).unwrap().unwrap();
        assert!(previous.contains("2026-03-02T10:01:00Z"), "{previous}");
        let e = crash_event(&previous, at(120));
        assert_eq!(e.kind, SYSTEM_RESTARTED_AFTER_CRASH);
        assert_eq!(e.severity, Severity::Warning);
        e.validate().unwrap();
        end_run(dir.path()).unwrap();
        end_run(dir.path()).unwrap();
    }

    #[test]
    fn the_tunnel_key_file_follows_the_store() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(provide_tunnel_key(&store, dir.path(), T0).unwrap());
        let path = dir.path().join(TUNNEL_KEY_FILE);
        let key = std::fs::read_to_string(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o640,
            "the tunnel's user (same group) reads it"
        );
        let source = store.event_source_by_key(key.trim()).unwrap().unwrap();
        assert_eq!(
            (source.name.as_str(), source.kind),
            (TUNNEL_SOURCE, SourceKind::Tunnel)
        );
        // Still matching: kept, and one left 0600 by an older version is made 0640.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!provide_tunnel_key(&store, dir.path(), T0).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        // Lost: a new one.
        std::fs::remove_file(&path).unwrap();
        assert!(provide_tunnel_key(&store, dir.path(), T0).unwrap());
        let again = std::fs::read_to_string(&path).unwrap();
        assert_ne!(again, key);
        assert!(store.event_source_by_key(key.trim()).unwrap().is_none());
    }

    #[test]
    fn events_are_valid_and_named_for_folding() {
        let now = at(0);
        let b = DenyBurst {
            gate: 4,
            window_start: at(-30),
            count: 6,
        };
        let e = denies_event(&b, "front door", DENY_WINDOW, now);
        e.validate().unwrap();
        assert_eq!(e.kind, ACCESS_REPEATED_DENIES);
        assert_eq!(e.source, "front door");
        assert_eq!(e.source_kind, SourceKind::Gate);
        assert_eq!(e.time, at(-30));
        assert_eq!(
            e.external_id.as_deref(),
            Some(format!("denies:4:{}", unix_ms(at(-30))).as_str())
        );
        assert!(
            e.message.as_deref().unwrap().starts_with("6 denied"),
            "{e:?}"
        );
        // A gate clock before 2000: the time of detection.
        let old = DenyBurst {
            window_start: datetime!(1970-01-01 0:00 UTC),
            ..b
        };
        assert_eq!(denies_event(&old, "g", DENY_WINDOW, now).time, now);

        let s = started_event(now);
        s.validate().unwrap();
        assert_eq!((s.source.as_str(), s.severity), ("system", Severity::Info));

        let off = OfflineChange::Offline {
            gate: 2,
            name: "yard".into(),
            since: at(-400),
            external_id: "offline:2:1".into(),
        };
        let e = offline_event(&off, Duration::from_secs(300), now);
        e.validate().unwrap();
        assert_eq!(
            (e.lifecycle, e.severity),
            (Lifecycle::Active, Severity::Warning)
        );
        let back = OfflineChange::Back {
            gate: 2,
            name: "yard".into(),
            external_id: "offline:2:1".into(),
        };
        let e = offline_event(&back, Duration::from_secs(300), now);
        assert_eq!(
            (e.lifecycle, e.external_id.as_deref()),
            (Lifecycle::Ended, Some("offline:2:1"))
        );
        let raised = ConditionChange::Raised {
            external_id: "disk_full:1".into(),
            since: now,
        };
        let e = condition_event(SYSTEM_DISK_FULL, &raised, "full", now);
        e.validate().unwrap();
        assert_eq!(
            (e.severity, e.lifecycle),
            (Severity::Critical, Lifecycle::Active)
        );
        let e = condition_event(SYSTEM_CLOCK_UNSYNCHRONISED, &raised, "clock", now);
        assert_eq!(e.severity, Severity::Warning);
    }

    #[test]
    fn settings_follow_the_config() {
        let mut alerts = gatehouse_config::Alerts::default();
        let s = MonitorSettings::from_config(&alerts);
        assert_eq!(s.gate_offline, Some(Duration::from_secs(300)));
        assert_eq!(s.offline_every(), CHECK_EVERY);
        alerts.gate_offline_s = 0;
        alerts.disk_full_percent = 80;
        let s = MonitorSettings::from_config(&alerts);
        assert_eq!((s.gate_offline, s.disk_full_percent), (None, 80));
        alerts.gate_offline_s = 2;
        let s = MonitorSettings::from_config(&alerts);
        assert_eq!(s.offline_every(), Duration::from_secs(1));
    }
}
