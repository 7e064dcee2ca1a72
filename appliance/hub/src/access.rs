//! The access service: what every gate transport (HTTP, raw TCP, MQTT) calls to turn
//! "this card at this gate" into a logged decision.
//!
//! [`AccessService`] holds the decision engine built from a store snapshot, the gates'
//! credentials, one [`ReplayWindow`] per gate, the group-commit [`AccessLog`], the
//! offline allow-lists ([`AllowLists`]) and the gates' door and tamper events on their way
//! to the store.
//!
//! Promises:
//! - A decision is returned ([`PendingDecision::committed`]) only after its access-log row
//!   is durable; if the log cannot commit, the caller gets [`AccessError::NotDurable`] and
//!   must not answer the gate with a decision (the gate then falls back to its allow-list).
//! - The raw card id is hashed with the site key at once and never stored or logged.
//! - Gate keys are compared in constant time and never logged.
//! - Engine and credentials follow the database: [`AccessService::refresh`] reloads them
//!   when `store.revision()` moved; [`AccessService::spawn_refresher`] calls it every
//!   [`REFRESH_INTERVAL`], so an admin's change applies within about 200 ms.
//! - Replay windows resume, at start, from the highest online `gate_seq` in the access log
//!   and in the gate events for each gate (one indexed query each when the service opens).
//!   Besides, the log stores a `(gate, online, gate_seq)` only once, so a replayed number
//!   that slipped past the window is still refused ([`AccessError::Replayed`]) instead of
//!   answered.
//! - A gate's `last_seen` is written at most every [`TOUCH_INTERVAL`] per gate, by the
//!   refresher, never on the request path. Door and tamper events are queued
//!   ([`AccessService::record_event`]) and written by the refresher too, in one
//!   transaction per pass, each `(gate, gate_seq)` once; at most [`MAX_QUEUED_EVENTS`]
//!   wait (beyond that they are dropped and counted, with an error logged).
//! - The allow-lists follow the same reloads as the engine, and are recomputed for the
//!   passage of time every [`RETIME_INTERVAL`](crate::allow_list::RETIME_INTERVAL)
//!   seconds; an allow-list reply is computed from the index it started on, outside every
//!   lock the decisions take.

use crate::allow_list::{AllowListIndex, AllowListReply, AllowLists};
use crate::drops::DropCounters;
use gatehouse_access::model::GateId;
use gatehouse_access::{AccessDecision, AccessEngine};
use gatehouse_gate_proto::{AllowListRequest, CardId, ErrorCode, GateKey, ReplayWindow};
use gatehouse_store::gate_events::{GateEventKind, NewGateEvent};
use gatehouse_store::{AccessLog, LogEntry, LogOutcome, LogSource, SiteKey, Store, StoreError};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use time::{OffsetDateTime, UtcOffset};

/// How often the refresher compares `store.revision()` with the loaded one.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// Least time between two `last_seen` writes for one gate.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(10);

/// Most door and tamper events waiting for the refresher to store them.
pub const MAX_QUEUED_EVENTS: usize = 4096;

/// Why a request got no decision.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    #[error("gate {0} is not known to this hub; check gate_id against `gatehouse gate list`")]
    UnknownGate(u32),
    #[error("wrong key for gate {0}; use the key printed by `gatehouse gate add` (or the last rotation)")]
    BadKey(u32),
    #[error("gate {gate} may not connect from {ip}; add the address to the gate's allowed IPs or connect from an allowed one")]
    IpRefused { gate: u32, ip: IpAddr },
    #[error("sequence number {seq} of gate {gate} was already used (highest accepted {highest}); send a higher one")]
    Replayed { gate: u32, seq: u32, highest: u32 },
    #[error("{0}")]
    Malformed(String),
    #[error("the access log could not store the decision ({0}); nothing was decided, retry later")]
    NotDurable(#[source] StoreError),
    #[error("cannot open the access store in {dir}: {source}")]
    Open {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("the access service's background work failed: {0}")]
    Task(String),
}

impl AccessError {
    /// The binary transports' reply code; `None` when no reply may be sent (the gate must
    /// time out and fall back to its allow-list).
    pub fn reply_code(&self) -> Option<ErrorCode> {
        match self {
            AccessError::UnknownGate(_) => Some(ErrorCode::UnknownGate),
            AccessError::BadKey(_) | AccessError::IpRefused { .. } => Some(ErrorCode::BadAuth),
            AccessError::Replayed { .. } => Some(ErrorCode::Replay),
            AccessError::Malformed(_) => Some(ErrorCode::Malformed),
            AccessError::NotDurable(_) | AccessError::Open { .. } | AccessError::Task(_) => None,
        }
    }
}

/// One address or subnet of a gate's IP allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpNet {
            addr: addr.to_canonical(),
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// What the hub knows to authenticate one gate.
pub struct GateAuth {
    pub id: u32,
    pub name: String,
    pub enabled: bool,
    /// The gate's MQTT user name (its broker account).
    pub mqtt_username: String,
    key: GateKey,
    /// `None`: any address.
    allowed: Option<Vec<IpNet>>,
}

impl fmt::Debug for GateAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateAuth")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("mqtt_username", &self.mqtt_username)
            .field("key", &"<redacted>")
            .field("allowed", &self.allowed)
            .finish()
    }
}

/// Constant-time equality of two byte strings of the same length (the length is public).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl GateAuth {
    /// An enabled gate with an all-zero key and no IP allow-list (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(id: u32) -> GateAuth {
        GateAuth {
            id,
            name: format!("gate-{id}"),
            enabled: true,
            mqtt_username: format!("gate-{id}"),
            key: [0; 32],
            allowed: None,
        }
    }

    /// The gate's own 32-byte key, for sealing and verifying binary frames.
    pub fn key(&self) -> &GateKey {
        &self.key
    }

    /// Whether `presented` is this gate's key (constant time).
    pub fn key_matches(&self, presented: &[u8]) -> bool {
        ct_eq(&self.key, presented)
    }

    /// Whether the gate has an IP allow-list (`false`: any address).
    pub fn has_ip_allow_list(&self) -> bool {
        self.allowed.is_some()
    }

    /// Whether the gate may connect from `ip` (its optional allow-list).
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(ip)))
    }
}

/// How the caller proves it speaks for the gate.
#[derive(Clone, Copy)]
pub enum Presented<'a> {
    /// A key to compare with the gate's (the HTTP bearer key).
    Key(&'a [u8]),
    /// The transport already verified a tag made with the gate's key.
    Verified,
}

/// A decision that was made and submitted to the access log.
#[derive(Debug)]
pub struct PendingDecision {
    gate: u32,
    seq: u32,
    decision: AccessDecision,
    committed: tokio::sync::oneshot::Receiver<Result<LogOutcome, StoreError>>,
}

/// An offline entry submitted to the access log; [`OfflineReceipt::stored`] waits for it.
#[derive(Debug)]
pub struct OfflineReceipt(tokio::sync::oneshot::Receiver<Result<LogOutcome, StoreError>>);

impl OfflineReceipt {
    /// Whether the entry is durable: newly (true) or from an earlier upload (false).
    pub async fn stored(self) -> Result<bool, AccessError> {
        match self.0.await {
            Ok(Ok(LogOutcome::Inserted(_))) => Ok(true),
            Ok(Ok(LogOutcome::Duplicate)) => Ok(false),
            Ok(Err(e)) => Err(AccessError::NotDurable(e)),
            Err(_) => Err(AccessError::NotDurable(StoreError::LogClosed)),
        }
    }
}

/// A decision whose log row is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    pub decision: AccessDecision,
    /// The sequence number the request carried (0 when it had none).
    pub seq: u32,
    /// The access-log row id.
    pub log_id: i64,
}

impl PendingDecision {
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// Waits until the decision's log row is durable.
    pub async fn committed(self) -> Result<Decided, AccessError> {
        match self.committed.await {
            Ok(Ok(LogOutcome::Inserted(log_id))) => Ok(Decided {
                decision: self.decision,
                seq: self.seq,
                log_id,
            }),
            Ok(Ok(LogOutcome::Duplicate)) => Err(AccessError::Replayed {
                gate: self.gate,
                seq: self.seq,
                highest: self.seq,
            }),
            Ok(Err(e)) => Err(AccessError::NotDurable(e)),
            Err(_) => Err(AccessError::NotDurable(StoreError::LogClosed)),
        }
    }
}

struct State {
    revision: u64,
    engine: AccessEngine,
    gates: HashMap<u32, Arc<GateAuth>>,
    windows: HashMap<u32, ReplayWindow>,
    /// Gates heard from since their `last_seen` was last written.
    seen: HashMap<u32, OffsetDateTime>,
    touched: HashMap<u32, std::time::Instant>,
    /// Door and tamper events not yet written.
    events: Vec<NewGateEvent>,
    /// Events dropped because the queue was full.
    events_dropped: u64,
}

struct Inner {
    data_dir: PathBuf,
    site_key: SiteKey,
    log: AccessLog,
    offset: UtcOffset,
    /// Used only from blocking tasks (refresh, touches).
    store: Mutex<Store>,
    state: Mutex<State>,
    allow_lists: AllowLists,
    drops: DropCounters,
    /// Where door and tamper alarms are raised as events (set once by the hub).
    gate_alerts: std::sync::OnceLock<Arc<crate::gate_frames::GateAlerts>>,
    /// Remote door opens on their way to gates (see [`crate::gate_commands`]).
    commands: Arc<crate::gate_commands::GateCommands>,
}

/// The hub's access decisions, shared by every transport (cheap to clone).
#[derive(Clone)]
pub struct AccessService {
    inner: Arc<Inner>,
}

impl fmt::Debug for AccessService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessService")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-updated in a way that
    // matters more than stopping access control would.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// glibc's initial mmap and trim thresholds, which [`keep_big_blocks_mapped`] makes fixed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_THRESHOLD: libc::c_int = 128 * 1024;

/// Keeps glibc from holding on to the memory of replaced snapshots (with
/// [`release_free_memory`] after each reload).
///
/// A reload builds the new snapshot (6.4 MB for 100,000 cards) and a few MB of scratch on
/// a blocking thread, then frees the old snapshot and the scratch. By default glibc raises
/// its mmap threshold to the largest block freed so far (up to 32 MB) and its trim
/// threshold to twice that, so from the first reload on such blocks come from per-thread
/// malloc arenas, and once freed up to twice their size stays resident in each arena.
/// With both thresholds fixed at their initial 128 KiB, every block of 128 KiB or more has
/// its own mapping, returned to the kernel when freed. The price is an mmap and munmap per
/// such block; none is made on the decision path.
///
/// Measured with 100,000 cards and 1,000,000 log rows, RSS after five reloads (one a
/// second) against 28 MB after start, three runs each: 52-68 MB with neither this nor
/// [`release_free_memory`]; 28-40 MB with one of them; 26.5-27 MB with both (peak during
/// the reloads 36-39 MB).
///
/// Process-wide; the access service sets it when it opens, before loading its snapshot.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_big_blocks_mapped() {
    for param in [libc::M_MMAP_THRESHOLD, libc::M_TRIM_THRESHOLD] {
        // SAFETY: mallopt takes two integers and only changes glibc's allocation
        // parameters, under its own lock; any thread may call it at any time.
        if unsafe { libc::mallopt(param, MALLOC_THRESHOLD) } != 1 {
            tracing::debug!(
                param,
                "glibc refused a malloc threshold; memory of reloads may stay resident"
            );
        }
    }
}

/// Returns the free pages inside glibc's arenas to the kernel, after a reload.
///
/// What is left after [`keep_big_blocks_mapped`]: the small blocks a reload frees, SQLite's
/// page cache above all (about 2 MB, dropped and read again on each reload, on whichever
/// blocking thread runs it, so in another arena each time), stay resident as free chunks
/// between live ones, which only `malloc_trim` hands back. Runs only after a reload, on the
/// refresher's blocking thread, with no lock held; it took 0.06 to 0.4 ms.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim takes an integer and works on glibc's own arenas under their
    // locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// Other allocators return big blocks their own way.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_big_blocks_mapped() {}

fn load_gates(store: &Store) -> Result<HashMap<u32, Arc<GateAuth>>, StoreError> {
    let mut gates = HashMap::new();
    for c in store.gate_credentials()? {
        let Ok(id) = u32::try_from(c.id) else {
            tracing::warn!(
                gate = c.id,
                "gate id above 2^32 cannot be addressed by gates; skipped"
            );
            continue;
        };
        let allowed = c.allowed_ips.map(|ips| {
            ips.iter()
                .filter_map(|s| {
                    let net = IpNet::parse(s);
                    if net.is_none() {
                        tracing::warn!(gate = id, entry = %s, "unreadable allowed IP ignored");
                    }
                    net
                })
                .collect()
        });
        gates.insert(
            id,
            Arc::new(GateAuth {
                id,
                name: c.name,
                enabled: c.enabled,
                mqtt_username: c.mqtt_username,
                key: *c.secret.expose(),
                allowed,
            }),
        );
    }
    Ok(gates)
}

/// Replay windows resumed from the highest `gate_seq` per gate in the log (online) and in
/// the gate events.
fn highest_seqs(store: &Store) -> Result<HashMap<u32, ReplayWindow>, StoreError> {
    let mut highest: HashMap<u32, u32> = HashMap::new();
    let seqs = store
        .highest_online_seqs()?
        .into_iter()
        .chain(store.highest_event_seqs()?)
        .filter_map(|(g, s)| Some((u32::try_from(g).ok()?, u32::try_from(s).ok()?)));
    for (g, s) in seqs {
        let h = highest.entry(g).or_insert(s);
        *h = (*h).max(s);
    }
    Ok(highest
        .into_iter()
        .map(|(g, s)| (g, ReplayWindow::resume(s)))
        .collect())
}

impl AccessService {
    /// Opens the store in `data_dir` (creating the site key on first start), loads the
    /// engine and credentials, resumes replay windows from the log and starts the log
    /// writer. Blocking: call from a blocking context or through [`AccessService::open`].
    pub fn open_blocking(data_dir: &Path, offset: UtcOffset) -> Result<AccessService, AccessError> {
        let open_err = |source| AccessError::Open {
            dir: data_dir.to_path_buf(),
            source,
        };
        keep_big_blocks_mapped();
        let store = Store::open(data_dir).map_err(open_err)?;
        let site_key = SiteKey::load_or_create(data_dir).map_err(open_err)?;
        let (revision, snapshot) = store.revisioned_decision_snapshot().map_err(open_err)?;
        let snapshot = Arc::new(snapshot);
        let gates = load_gates(&store).map_err(open_err)?;
        let windows = highest_seqs(&store).map_err(open_err)?;
        let allow_lists = AllowLists::open(&store, revision, &snapshot, OffsetDateTime::now_utc())
            .map_err(open_err)?;
        let log = AccessLog::start(data_dir).map_err(open_err)?;
        tracing::info!(
            gates = gates.len(),
            cards = snapshot.cards().len(),
            revision,
            "access service ready"
        );
        Ok(AccessService {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                site_key,
                log,
                offset,
                store: Mutex::new(store),
                state: Mutex::new(State {
                    revision,
                    engine: AccessEngine::new(snapshot),
                    gates,
                    windows,
                    seen: HashMap::new(),
                    touched: HashMap::new(),
                    events: Vec::new(),
                    events_dropped: 0,
                }),
                allow_lists,
                drops: DropCounters::default(),
                gate_alerts: std::sync::OnceLock::new(),
                commands: Arc::default(),
            }),
        })
    }

    /// [`AccessService::open_blocking`] on a blocking thread.
    pub async fn open(data_dir: &Path, offset: UtcOffset) -> Result<AccessService, AccessError> {
        let dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || AccessService::open_blocking(&dir, offset))
            .await
            .map_err(|e| AccessError::Task(e.to_string()))?
    }

    /// The current time in the site's UTC offset (schedules are local).
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc().to_offset(self.inner.offset)
    }

    /// Refusal counters shared by the transports.
    pub fn drops(&self) -> &DropCounters {
        &self.inner.drops
    }

    /// Raises the gates' door and tamper alarms through `alerts` from now on (see
    /// [`crate::gate_frames`]); `false` if that was set already.
    pub fn set_gate_alerts(&self, alerts: Arc<crate::gate_frames::GateAlerts>) -> bool {
        self.inner.gate_alerts.set(alerts).is_ok()
    }

    /// Where door and tamper alarms are raised, if the hub set it.
    pub fn gate_alerts(&self) -> Option<&Arc<crate::gate_frames::GateAlerts>> {
        self.inner.gate_alerts.get()
    }

    /// The commands on their way to gates, and the links they are pushed on.
    pub fn gate_commands(&self) -> &Arc<crate::gate_commands::GateCommands> {
        &self.inner.commands
    }

    /// The gate's credentials, if it is known.
    pub fn gate(&self, gate_id: u32) -> Option<Arc<GateAuth>> {
        lock(&self.inner.state).gates.get(&gate_id).cloned()
    }

    /// Every known gate's credentials, by id.
    pub fn gates(&self) -> Vec<Arc<GateAuth>> {
        let mut gates: Vec<_> = lock(&self.inner.state).gates.values().cloned().collect();
        gates.sort_by_key(|g| g.id);
        gates
    }

    /// The store revision the engine and credentials were loaded from.
    pub fn revision(&self) -> u64 {
        lock(&self.inner.state).revision
    }

    /// Looks up the gate and checks that the caller speaks for it from an allowed address.
    pub fn authenticate(
        &self,
        gate_id: u32,
        presented: Presented<'_>,
        peer: IpAddr,
    ) -> Result<Arc<GateAuth>, AccessError> {
        let gate = self
            .gate(gate_id)
            .ok_or(AccessError::UnknownGate(gate_id))?;
        if let Presented::Key(k) = presented {
            if !gate.key_matches(k) {
                return Err(AccessError::BadKey(gate_id));
            }
        }
        if !gate.ip_allowed(peer) {
            return Err(AccessError::IpRefused {
                gate: gate_id,
                ip: peer,
            });
        }
        Ok(gate)
    }

    /// Accepts `seq` from an authenticated gate if it is above every number accepted so
    /// far (for any message type, on any transport), and notes the gate as heard from.
    pub fn accept_seq(&self, gate: u32, seq: u32, now: OffsetDateTime) -> Result<(), AccessError> {
        let mut st = lock(&self.inner.state);
        let window = st.windows.entry(gate).or_default();
        window.accept(seq).map_err(|_| AccessError::Replayed {
            gate,
            seq,
            highest: window.highest().unwrap_or(0),
        })?;
        st.seen.insert(gate, now);
        Ok(())
    }

    /// Notes that an authenticated gate was heard from (its `last_seen`).
    pub fn heard_from(&self, gate: u32, now: OffsetDateTime) {
        lock(&self.inner.state).seen.insert(gate, now);
    }

    /// Queues a door or tamper event of an authenticated gate for the store (`seq` must
    /// have passed [`AccessService::accept_seq`]; `time` is the gate's unix seconds). A
    /// door forced open and an opened enclosure are also logged as warnings at once.
    pub fn record_event(
        &self,
        gate: u32,
        seq: u32,
        time: u32,
        kind: GateEventKind,
        now: OffsetDateTime,
    ) {
        if kind.is_alarm() {
            let name = self
                .gate(gate)
                .map_or_else(|| format!("#{gate}"), |g| g.name.clone());
            tracing::warn!(gate, name = %name, kind = %kind.name(), gate_time = time, "gate alarm");
        }
        let at = OffsetDateTime::from_unix_timestamp(i64::from(time)).unwrap_or(now);
        let mut st = lock(&self.inner.state);
        if st.events.len() >= MAX_QUEUED_EVENTS {
            st.events_dropped += 1;
            tracing::error!(
                gate,
                kind = %kind.name(),
                dropped = st.events_dropped,
                "gate event dropped: the store is not keeping up"
            );
            return;
        }
        st.events.push(NewGateEvent {
            at,
            received: now,
            gate: GateId::from(gate),
            kind,
            gate_seq: seq,
        });
    }

    /// The current allow-list index (version, membership), for diagnostics and tests.
    pub fn allow_lists(&self) -> Arc<AllowListIndex> {
        self.inner.allow_lists.index()
    }

    /// The chunks answering an authenticated gate's allow-list request, computed lazily
    /// from the current index (no lock is held while they are computed).
    pub fn allow_list_reply(&self, gate: u32, request: &AllowListRequest) -> AllowListReply {
        let key = self.inner.site_key.gate_key(GateId::from(gate));
        self.inner.allow_lists.index().reply(gate, &key, request)
    }

    /// Decides for an authenticated gate and submits the log entry; await
    /// [`PendingDecision::committed`] before answering. `seq` is logged as the gate's
    /// sequence number when given (it must have passed [`AccessService::accept_seq`]).
    /// Calls made in order are logged in order.
    pub fn begin(
        &self,
        gate: u32,
        seq: Option<u32>,
        card: &[u8],
        now: OffsetDateTime,
    ) -> Result<PendingDecision, AccessError> {
        let card = CardId::new(card).map_err(|e| AccessError::Malformed(e.to_string()))?;
        let hash = self.inner.site_key.card_hash(card.as_bytes());
        let decision = {
            let mut st = lock(&self.inner.state);
            st.seen.insert(gate, now);
            st.engine.decide(GateId::from(gate), &hash, now)
        };
        let entry = LogEntry {
            at: now,
            gate: GateId::from(gate),
            card_hash: Some(hash),
            card: decision.card,
            person: decision.person,
            reason: decision.reason,
            source: LogSource::Online,
            gate_seq: seq.map(u64::from),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.log.submit(
            entry,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        Ok(PendingDecision {
            gate,
            seq: seq.unwrap_or(0),
            decision,
            committed: rx,
        })
    }

    /// Submits one decision a gate made from its allow-list while the hub was unreachable
    /// (an `OfflineBatch` entry). Stored with source `offline` and the gate's `gate_seq`,
    /// so an upload repeated after a lost acknowledgement is stored once
    /// ([`LogOutcome::Duplicate`]). The gate's own reason is kept; only the two offline
    /// reasons are accepted. Await the receiver before acknowledging.
    pub fn submit_offline(
        &self,
        gate: u32,
        entry: &gatehouse_gate_proto::OfflineEntry,
    ) -> Result<OfflineReceipt, AccessError> {
        use gatehouse_gate_proto::Reason;
        if !matches!(entry.reason, Reason::OfflineGranted | Reason::OfflineDenied) {
            return Err(AccessError::Malformed(format!(
                "offline entry {} of gate {gate} has reason {}; only offline_granted and \
                 offline_denied are uploaded",
                entry.gate_seq,
                entry.reason.as_str()
            )));
        }
        let at = OffsetDateTime::from_unix_timestamp(i64::from(entry.time))
            .map_err(|e| AccessError::Malformed(format!("offline entry time: {e}")))?;
        let hash = self.inner.site_key.card_hash(entry.card.as_bytes());
        let (card, person) = {
            let st = lock(&self.inner.state);
            st.engine
                .snapshot()
                .card(&hash)
                .map_or((None, None), |c| (Some(c.id()), Some(c.person())))
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.log.submit(
            LogEntry {
                at,
                gate: GateId::from(gate),
                card_hash: Some(hash),
                card,
                person,
                reason: entry.reason,
                source: LogSource::Offline,
                gate_seq: Some(u64::from(entry.gate_seq)),
            },
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        Ok(OfflineReceipt(rx))
    }

    /// The whole of one request: authenticate, check the sequence number (when not 0),
    /// decide, and wait for the log row to be durable.
    pub async fn check(
        &self,
        gate_id: u32,
        presented: Presented<'_>,
        seq: u32,
        card: &[u8],
        peer: IpAddr,
        now: OffsetDateTime,
    ) -> Result<Decided, AccessError> {
        let gate = self.authenticate(gate_id, presented, peer)?;
        let seq = (seq != 0).then_some(seq);
        if let Some(s) = seq {
            self.accept_seq(gate.id, s, now)?;
        }
        self.begin(gate.id, seq, card, now)?.committed().await
    }

    /// Reloads engine and credentials if the database changed since they were loaded,
    /// and writes pending `last_seen` times. Returns whether anything was reloaded.
    pub async fn refresh(&self) -> Result<bool, AccessError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.refresh_blocking())
            .await
            .map_err(|e| AccessError::Task(e.to_string()))?
    }

    fn refresh_blocking(&self) -> Result<bool, AccessError> {
        let err = |source| AccessError::Open {
            dir: self.inner.data_dir.clone(),
            source,
        };
        let store = lock(&self.inner.store);
        self.write_touches(&store);
        self.write_events(&store);
        let now = OffsetDateTime::now_utc();
        let (known, current) = {
            let st = lock(&self.inner.state);
            (st.revision, Arc::clone(st.engine.snapshot()))
        };
        let lists = &self.inner.allow_lists;
        let revision = store.revision().map_err(err)?;
        if revision == known && lists.revision() == known {
            lists.retime_if_due(&store, now).map_err(err)?;
            return Ok(false);
        }
        // The engine's snapshot when only the allow-lists are behind (their version failed
        // to persist last time), so that both keep sharing one copy.
        let (revision, snapshot) = if revision == known {
            (known, current)
        } else {
            drop(current);
            let (revision, snapshot) = store.revisioned_decision_snapshot().map_err(err)?;
            (revision, Arc::new(snapshot))
        };
        // The allow-lists first (they only read the snapshot); a failure to persist their
        // version leaves them on the old revision, retried on the next pass.
        let listed = if lists.revision() == revision {
            Ok(false)
        } else {
            lists.rebuild(&store, revision, &snapshot, now)
        };
        if revision != known {
            let gates = load_gates(&store).map_err(err)?;
            drop(store);
            let (previous, previous_gates) = {
                let mut st = lock(&self.inner.state);
                st.revision = revision;
                (
                    st.engine.replace(snapshot),
                    std::mem::replace(&mut st.gates, gates),
                )
            };
            // Freed here, not under the lock the decisions take; the old snapshot goes as
            // soon as no allow-list reply still walks it.
            drop((previous, previous_gates));
            release_free_memory();
            tracing::info!(revision, "access data reloaded");
        }
        listed.map_err(err)?;
        Ok(true)
    }

    fn write_events(&self, store: &Store) {
        let events = std::mem::take(&mut lock(&self.inner.state).events);
        if events.is_empty() {
            return;
        }
        match store.insert_gate_events(&events) {
            Ok(n) => tracing::debug!(stored = n, received = events.len(), "gate events stored"),
            Err(e) => {
                tracing::error!(error = %e, "cannot store gate events; retrying");
                let mut st = lock(&self.inner.state);
                let room = MAX_QUEUED_EVENTS.saturating_sub(st.events.len());
                let lost = events.len().saturating_sub(room);
                st.events_dropped += lost as u64;
                let mut keep: Vec<NewGateEvent> = events.into_iter().take(room).collect();
                keep.append(&mut st.events);
                st.events = keep;
            }
        }
    }

    fn write_touches(&self, store: &Store) {
        let due: Vec<(u32, OffsetDateTime)> = {
            let mut st = lock(&self.inner.state);
            let now = std::time::Instant::now();
            let due: Vec<_> = st
                .seen
                .iter()
                .filter(|(g, _)| {
                    st.touched
                        .get(g)
                        .is_none_or(|t| now.duration_since(*t) >= TOUCH_INTERVAL)
                })
                .map(|(g, at)| (*g, *at))
                .collect();
            for (g, _) in &due {
                st.seen.remove(g);
                st.touched.insert(*g, now);
            }
            due
        };
        let due: Vec<(GateId, OffsetDateTime)> = due
            .into_iter()
            .map(|(g, at)| (GateId::from(g), at))
            .collect();
        if let Err(e) = store.touch_gates(&due) {
            tracing::debug!(gates = due.len(), error = %e, "cannot record last_seen");
        }
    }

    /// Calls [`AccessService::refresh`] every [`REFRESH_INTERVAL`] until `stop` turns true
    /// or the service is dropped.
    pub fn spawn_refresher(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = crate::stopped(&mut stop) => break,
                }
                let Some(inner) = weak.upgrade() else { break };
                let service = AccessService { inner };
                match service.refresh().await {
                    Ok(_) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "cannot refresh access data; deciding from the last loaded data");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// Writes every pending `last_seen` and gate event and stops the log writer (after writing what is
    /// queued). Later decisions fail with [`AccessError::NotDurable`].
    pub fn shutdown(&self) {
        {
            let mut st = lock(&self.inner.state);
            st.touched.clear();
        }
        let store = lock(&self.inner.store);
        self.write_touches(&store);
        self.write_events(&store);
        drop(store);
        self.inner.log.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_nets_match_addresses_and_prefixes() {
        let n = IpNet::parse("192.168.1.0/24").unwrap();
        assert!(n.contains("192.168.1.77".parse().unwrap()));
        assert!(n.contains("::ffff:192.168.1.77".parse().unwrap()));
        assert!(!n.contains("192.168.2.1".parse().unwrap()));
        let h = IpNet::parse("10.0.0.5").unwrap();
        assert!(h.contains("10.0.0.5".parse().unwrap()));
        assert!(!h.contains("10.0.0.6".parse().unwrap()));
        let any = IpNet::parse("0.0.0.0/0").unwrap();
        assert!(any.contains("1.2.3.4".parse().unwrap()));
        let v6 = IpNet::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(IpNet::parse("10.0.0.0/33"), None);
        assert_eq!(IpNet::parse("nope"), None);
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
