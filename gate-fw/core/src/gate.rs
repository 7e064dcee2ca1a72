//! [`GateCore`]: the gate controller's state machine.
//!
//! # Sequence numbers
//! Every message the gate sends gets the next number of one counter ([`GateCore::seq`] is
//! the last one used), in the order the frames leave [`GateCore::poll_output`], because the
//! hub accepts only strictly increasing numbers per gate. An offline decision also takes a
//! number (its `gate_seq`, the hub's idempotency key for the upload) even though no frame
//! carries it. The board persists the counter and calls [`GateCore::resume`] at boot, for
//! example by reserving blocks of numbers in flash so that it writes rarely.
//!
//! # Replies and replay protection
//! A frame from the hub is acted on only if it is for this gate, its tag verifies with
//! the gate's key, and its `seq` is that of a request still waiting for an answer: the
//! access request in flight (a [`Decision`]), the offline batch in flight (an
//! [`OfflineAck`]) or the allow-list request in flight (its [`AllowListDelta`] chunks).
//! The reply consumes the request (a delta transfer at its last chunk), and request
//! numbers are never reused, so a recorded reply played again finds nothing to answer and
//! is dropped ([`RxError::Unmatched`]). That is a stricter check than a
//! [`ReplayWindow`](gatehouse_gate_proto::ReplayWindow), which would also have to let the
//! several chunks of one delta (same `seq`) through.
//!
//! # Commands from the hub
//! A [`RemoteOpen`] is the hub's own command (an admin's remote door open), not a reply:
//! its `seq` is the hub's command number for this gate, a counter apart from the gate's.
//! The gate acts on it only if its tag verifies and its number is above every command
//! number accepted before ([`GateCore::command_seq`], a [`ReplayWindow`] the board
//! persists like [`GateCore::seq`] and restores with [`GateCore::resume_commands`]); a
//! command played again is refused ([`RxError::Replayed`]). An accepted one pulses the
//! relay for its `relay_ms` ([`GateConfig::relay_ms`] if 0) and allows one opening, as a
//! grant does, so the door reports `Opened` as usual. It is counted in
//! [`Stats::remote_opens`]; nothing is sent back.
//!
//! # Decisions
//! A card read while the link is up sends an [`AccessRequest`] and waits
//! [`GateConfig::request_timeout_ms`]. A hub [`Decision`] settles it (an authenticated
//! decision with an unknown reason code is a deny). A timeout, an [`ErrorReply`] for the
//! request, or the link going down settles it from the allow-list instead, as
//! `OfflineGranted`/`OfflineDenied`, appended to the offline log. While the link is down a
//! card is decided from the allow-list at once. Reads while a request is waiting are
//! ignored (counted in [`Stats::reads_ignored`]): a card held on the reader repeats.
//!
//! # Door
//! A grant (hub or offline) and the exit button pulse the relay and allow one opening
//! until the pulse ends plus [`GateConfig::door_grace_ms`]. An opening in that window is
//! reported as `Opened`, any other as `Forced`; closing as `Closed`. A door still open
//! [`GateConfig::held_open_ms`] after it opened, by a grant or forced, is reported once as
//! `HeldOpen`. The first contact report after boot only sets the state. Door and tamper
//! events raised while the link is down wait in the outbox (16 messages; when full the
//! oldest is dropped and counted) and go out first when it comes back.
//!
//! # Offline log upload
//! While the link is up and the log is not empty, the oldest entries (up to 16) go out as
//! an [`OfflineBatch`]; they leave the log only on the [`OfflineAck`] with that batch's
//! `seq`. Without an ack within [`GateConfig::offline_ack_timeout_ms`] (or after the link
//! went down) the same entries go out again in a new batch: same `gate_seq`s, so the hub
//! stores each once.
//!
//! # Allow-list sync
//! At every link-up and every [`GateConfig::allow_list_refresh_ms`] the gate sends an
//! [`AllowListRequest`] with its version. The answer's chunks are applied as they come
//! (removes, then adds); the version becomes `to_version` after the last chunk. A `full`
//! transfer clears the list first. An incremental delta whose `from_version` is not the
//! gate's version is ignored and a full list requested (`have_version` 0). While a
//! multi-chunk transfer is under way the version is 0, so one cut short is followed by a
//! full transfer rather than by a delta against a half-applied list.

use core::fmt;

use gatehouse_gate_proto::{
    verify, AccessRequest, AllowListDelta, AllowListRequest, CardId, Decision, DoorEvent,
    DoorEventKind, EntryHash, Error, ErrorCode, ErrorReply, Frame, Heartbeat, HeartbeatFlags,
    Message, MessageType, OfflineAck, OfflineBatch, OfflineEntry, Reason, RemoteOpen, ReplayWindow,
    Repr, Tamper, MAX_FRAME_LEN,
};
use heapless::{Deque, Vec};

use crate::allow_list::{AllowList, EntryScheme, HmacEntryScheme};
use crate::clock::Now;
use crate::config::GateConfig;
use crate::offline_log::OfflineLog;
use crate::output::{Decided, Output, Signal, Transmit};

/// Messages waiting for [`GateCore::poll_output`] while the link is up (or, for door and
/// tamper events, for the link to come up).
const OUTBOX_LEN: usize = 16;
/// Local outputs (relay, signals, log records) waiting to be drained.
const LOCAL_LEN: usize = 16;

/// Why a received frame was not acted on. Each is also counted in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RxError {
    /// Not a well-formed frame or payload.
    Malformed(Error),
    /// A frame for another gate.
    WrongGate { gate_id: u32 },
    /// The tag does not verify with this gate's key.
    BadTag,
    /// A reply whose `seq` answers no request in flight: late, replayed or forged.
    Unmatched { msg_type: MessageType, seq: u32 },
    /// A message type the hub does not send to gates.
    Unexpected(MessageType),
    /// An incremental allow-list delta from another version than the gate's; a full list
    /// was requested.
    StaleDelta {
        from_version: u32,
        have_version: u32,
    },
    /// A delta chunk that does not continue the transfer under way; a full list was
    /// requested.
    InconsistentDelta,
    /// The hub refused the request `seq` (handled: an access request was decided offline).
    Refused { seq: u32, code: ErrorCode },
    /// A hub command whose number is not above the highest accepted: played again.
    Replayed { seq: u32, highest: u32 },
}

impl fmt::Display for RxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RxError::Malformed(e) => write!(f, "malformed frame: {e}"),
            RxError::WrongGate { gate_id } => write!(f, "frame for gate {gate_id}, not this one"),
            RxError::BadTag => f.write_str("authentication tag does not verify"),
            RxError::Unmatched { msg_type, seq } => write!(
                f,
                "{} for seq {seq}, which no request in flight has",
                msg_type.name()
            ),
            RxError::Unexpected(t) => write!(f, "the hub does not send a {}", t.name()),
            RxError::StaleDelta {
                from_version,
                have_version,
            } => write!(
                f,
                "allow-list delta from version {from_version}, gate has {have_version}; \
                 full list requested"
            ),
            RxError::InconsistentDelta => {
                f.write_str("allow-list chunk does not continue the transfer; full list requested")
            }
            RxError::Refused { seq, code } => write!(f, "hub refused request {seq}: {code:?}"),
            RxError::Replayed { seq, highest } => write!(
                f,
                "hub command {seq} is not above the highest accepted ({highest}): replayed"
            ),
        }
    }
}

impl core::error::Error for RxError {}

/// Counters for diagnostics (the board may log or expose them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub malformed: u32,
    pub wrong_gate: u32,
    pub bad_tag: u32,
    pub unmatched: u32,
    pub unexpected: u32,
    pub error_replies: u32,
    pub last_error: Option<ErrorCode>,
    pub stale_deltas: u32,
    /// Access requests the hub did not answer in time.
    pub timeouts: u32,
    pub reads_ignored: u32,
    /// Outgoing messages dropped because the outbox was full.
    pub outbox_dropped: u32,
    /// Local outputs dropped because the board did not drain them.
    pub local_dropped: u32,
    /// Frames that could not be built (never expected: every message fits a frame).
    pub emit_failed: u32,
    /// Remote opens carried out (the relay pulsed).
    pub remote_opens: u32,
    /// Hub commands refused as replayed.
    pub replayed: u32,
}

#[derive(Debug, Clone, Copy)]
struct PendingRequest {
    seq: u32,
    card: CardId,
    deadline: u64,
}

#[derive(Debug, Clone, Copy)]
struct BatchInFlight {
    seq: u32,
    /// `gate_seq` of its last entry.
    end: u32,
    resend_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkHeader {
    from_version: u32,
    to_version: u32,
    full: bool,
}

#[derive(Debug, Clone, Copy)]
struct AllowListSync {
    seq: u32,
    /// Set after the first chunk of a multi-chunk transfer.
    transfer: Option<ChunkHeader>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Door {
    /// `None` until the first report.
    closed: Option<bool>,
    opened_at: Option<u64>,
    held_reported: bool,
    /// One opening is allowed until then (after a grant or the exit button).
    authorized_until: Option<u64>,
}

/// A message with its sequence number, waiting to be framed.
#[derive(Debug, Clone, Copy)]
enum Outgoing {
    Request { seq: u32, time: u32, card: CardId },
    Door(DoorEvent),
    Tamper(Tamper),
    Heartbeat(Heartbeat),
    Batch { seq: u32, end: u32 },
    AllowListRequest(AllowListRequest),
}

impl Outgoing {
    /// Events are kept across a link outage; everything else is rebuilt when it returns.
    fn survives_link_down(&self) -> bool {
        matches!(self, Outgoing::Door(_) | Outgoing::Tamper(_))
    }
}

/// Outputs other than frames (kept small: frames are built only when drained).
#[derive(Debug, Clone, Copy)]
enum Local {
    Relay(u16),
    Signal(Signal),
    Decided(Decided),
    LogOffline(OfflineEntry),
    OfflineAcked(u32),
}

impl From<Local> for Output {
    fn from(local: Local) -> Output {
        match local {
            Local::Relay(open_ms) => Output::Relay { open_ms },
            Local::Signal(s) => Output::Signal(s),
            Local::Decided(d) => Output::Decided(d),
            Local::LogOffline(e) => Output::LogOffline(e),
            Local::OfflineAcked(up_to_gate_seq) => Output::OfflineAcked { up_to_gate_seq },
        }
    }
}

/// The gate controller: see the [module documentation](self) for its behaviour.
///
/// `ALLOW` is the allow-list capacity (16 bytes per entry), `LOG` the offline log's (about
/// 48 bytes per entry); the defaults take about 45 KiB, so a board keeps the core in a
/// `static` (e.g. `StaticCell`) rather than on a task's stack.
pub struct GateCore<S = HmacEntryScheme, const ALLOW: usize = 2048, const LOG: usize = 256> {
    config: GateConfig,
    scheme: S,
    seq: u32,
    /// The hub's command numbers accepted so far.
    commands: ReplayWindow,
    link_up: bool,
    tamper: bool,
    door: Door,
    pending: Option<PendingRequest>,
    batch: Option<BatchInFlight>,
    sync: Option<AllowListSync>,
    allow_list: AllowList<ALLOW>,
    log: OfflineLog<LOG>,
    next_heartbeat: Option<u64>,
    next_refresh: Option<u64>,
    outbox: Deque<Outgoing, OUTBOX_LEN>,
    local: Deque<Local, LOCAL_LEN>,
    stats: Stats,
}

impl GateCore {
    /// A gate with the hub's entry scheme and the default capacities. The link starts
    /// down: call [`GateCore::link_up`] once the transport is connected.
    pub fn new(config: GateConfig) -> GateCore {
        let scheme = HmacEntryScheme::new(config.card_key, config.allow_list_key);
        GateCore::with_scheme(config, scheme)
    }
}

impl<S: EntryScheme, const ALLOW: usize, const LOG: usize> GateCore<S, ALLOW, LOG> {
    /// A gate with another entry scheme or other capacities
    /// (`GateCore::<_, 4096, 64>::with_scheme(config, scheme)`).
    pub fn with_scheme(config: GateConfig, scheme: S) -> GateCore<S, ALLOW, LOG> {
        GateCore {
            config,
            scheme,
            seq: 0,
            commands: ReplayWindow::new(),
            link_up: false,
            tamper: false,
            door: Door::default(),
            pending: None,
            batch: None,
            sync: None,
            allow_list: AllowList::new(),
            log: OfflineLog::new(),
            next_heartbeat: None,
            next_refresh: None,
            outbox: Deque::new(),
            local: Deque::new(),
            stats: Stats::default(),
        }
    }

    // ----- state for the board -----

    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    /// The last sequence number used (0: none yet). Persist it.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// Continues numbering after `seq`, restored from storage (never goes back).
    pub fn resume(&mut self, seq: u32) {
        self.seq = self.seq.max(seq);
    }

    /// The highest hub command number accepted (`None`: none yet). Persist it with
    /// [`GateCore::seq`]: a gate that forgets it accepts any recorded command once more.
    pub fn command_seq(&self) -> Option<u32> {
        self.commands.highest()
    }

    /// Continues after hub command number `highest`, restored from storage (never goes
    /// back).
    pub fn resume_commands(&mut self, highest: u32) {
        if self.commands.highest().is_none_or(|h| h < highest) {
            self.commands = ReplayWindow::resume(highest);
        }
    }

    pub fn is_link_up(&self) -> bool {
        self.link_up
    }

    pub fn allow_list(&self) -> &AllowList<ALLOW> {
        &self.allow_list
    }

    pub fn offline_log(&self) -> &OfflineLog<LOG> {
        &self.log
    }

    /// Puts back an allow-list persisted before a reboot (what [`GateCore::allow_list`]
    /// held: its version and entries), so the gate can decide offline from its first read
    /// even if the hub is unreachable at boot. Replaces the current list. If the entries do
    /// not all fit, the list is kept but marked version 0, so the next sync is a full one.
    pub fn restore_allow_list<'a>(
        &mut self,
        version: u32,
        entries: impl IntoIterator<Item = &'a EntryHash>,
    ) {
        self.allow_list.clear();
        for e in entries {
            self.allow_list.insert(*e);
        }
        let whole = self.allow_list.overflowed() == 0;
        self.allow_list.set_version(if whole { version } else { 0 });
    }

    /// Puts back an offline entry persisted before a reboot (oldest first).
    pub fn restore_offline(&mut self, entry: OfflineEntry) {
        self.resume(entry.gate_seq);
        self.log.push(entry);
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether an access request is waiting for the hub.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// When [`GateCore::tick`] must be called next at the latest (monotonic ms), if any
    /// timer runs.
    pub fn poll_at(&self) -> Option<u64> {
        let held = match (self.door.opened_at, self.door.held_reported) {
            (Some(t), false) => Some(t.saturating_add(u64::from(self.config.held_open_ms))),
            _ => None,
        };
        [
            self.pending.map(|p| p.deadline),
            held,
            self.next_heartbeat,
            self.batch.map(|b| b.resend_at),
            self.next_refresh,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- inputs -----

    /// A card was read.
    pub fn card_read(&mut self, card: CardId, now: Now) {
        self.advance(now);
        if self.pending.is_some() {
            self.stats.reads_ignored = self.stats.reads_ignored.saturating_add(1);
        } else {
            let seq = self.next_seq();
            if self.link_up {
                self.pending = Some(PendingRequest {
                    seq,
                    card,
                    deadline: deadline(now.ms, self.config.request_timeout_ms),
                });
                self.send(Outgoing::Request {
                    seq,
                    time: now.unix,
                    card,
                });
                self.local(Local::Signal(Signal::Waiting));
            } else {
                self.decide_offline(seq, card, now);
            }
        }
        self.service(now);
    }

    /// One frame arrived from the hub (raw TCP: one frame from a `FrameDecoder`; MQTT: one
    /// payload). On error nothing was acted on, except as [`RxError::Refused`] says.
    pub fn frame_received(&mut self, bytes: &[u8], now: Now) -> Result<(), RxError> {
        self.advance(now);
        let result = self.handle_frame(bytes, now);
        if let Err(e) = &result {
            let s = &mut self.stats;
            let counter = match e {
                RxError::Malformed(_) => &mut s.malformed,
                RxError::WrongGate { .. } => &mut s.wrong_gate,
                RxError::BadTag => &mut s.bad_tag,
                RxError::Unmatched { .. } => &mut s.unmatched,
                RxError::Unexpected(_) => &mut s.unexpected,
                RxError::StaleDelta { .. } | RxError::InconsistentDelta => &mut s.stale_deltas,
                RxError::Refused { .. } => &mut s.error_replies,
                RxError::Replayed { .. } => &mut s.replayed,
            };
            *counter = counter.saturating_add(1);
        }
        self.service(now);
        result
    }

    /// The door contact reads closed (`true`) or open.
    pub fn door_contact(&mut self, closed: bool, now: Now) {
        self.advance(now);
        let previous = self.door.closed.replace(closed);
        match (previous, closed) {
            (None, false) => {
                self.door.opened_at = Some(now.ms);
                self.door.held_reported = false;
            }
            (Some(true), false) => {
                let authorized = self
                    .door
                    .authorized_until
                    .take()
                    .is_some_and(|until| now.ms <= until);
                self.door.opened_at = Some(now.ms);
                self.door.held_reported = false;
                let kind = if authorized {
                    DoorEventKind::Opened
                } else {
                    DoorEventKind::Forced
                };
                self.door_event(kind, now);
            }
            (Some(false), true) => {
                self.door.opened_at = None;
                self.door_event(DoorEventKind::Closed, now);
            }
            _ => {}
        }
        self.service(now);
    }

    /// The exit button was pressed: pulse the relay and report it.
    pub fn exit_button(&mut self, now: Now) {
        self.advance(now);
        self.door_event(DoorEventKind::ExitButton, now);
        self.pulse(self.config.relay_ms, now);
        self.service(now);
    }

    /// The tamper switch reads active (enclosure open) or not; reported on change.
    pub fn tamper(&mut self, active: bool, now: Now) {
        self.advance(now);
        if active != self.tamper {
            self.tamper = active;
            let seq = self.next_seq();
            self.send(Outgoing::Tamper(Tamper {
                seq,
                time: now.unix,
                active,
            }));
        }
        self.service(now);
    }

    /// The transport is connected: heartbeat, allow-list request, offline upload.
    pub fn link_up(&mut self, now: Now) {
        self.advance(now);
        if !self.link_up {
            self.link_up = true;
            self.send_heartbeat(now);
            self.request_allow_list(self.allow_list.version(), now);
        }
        self.service(now);
    }

    /// The transport lost its connection: a waiting request is decided offline now.
    pub fn link_down(&mut self, now: Now) {
        self.advance(now);
        if self.link_up {
            self.link_up = false;
            if let Some(p) = self.pending.take() {
                self.decide_offline(p.seq, p.card, now);
            }
            self.batch = None;
            self.sync = None;
            self.next_heartbeat = None;
            self.next_refresh = None;
            self.outbox.retain(Outgoing::survives_link_down);
        }
        self.service(now);
    }

    /// Time passed: fire due timers.
    pub fn tick(&mut self, now: Now) {
        self.advance(now);
        self.service(now);
    }

    // ----- output -----

    /// The next thing to do, until `None`. Call after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(local) = self.local.pop_front() {
            return Some(local.into());
        }
        if !self.link_up {
            return None;
        }
        while let Some(out) = self.outbox.pop_front() {
            match self.frame(out) {
                Ok(t) => return Some(Output::Transmit(t)),
                Err(_) => self.stats.emit_failed = self.stats.emit_failed.saturating_add(1),
            }
        }
        None
    }

    // ----- internals -----

    fn next_seq(&mut self) -> u32 {
        // At u32::MAX the gate needs a new key (the hub refuses repeats); see ReplayWindow.
        self.seq = self.seq.saturating_add(1);
        self.seq
    }

    fn send(&mut self, out: Outgoing) {
        if self.outbox.is_full() {
            self.outbox.pop_front();
            self.stats.outbox_dropped = self.stats.outbox_dropped.saturating_add(1);
        }
        if self.outbox.push_back(out).is_err() {
            self.stats.outbox_dropped = self.stats.outbox_dropped.saturating_add(1);
        }
    }

    fn local(&mut self, local: Local) {
        if self.local.is_full() {
            self.local.pop_front();
            self.stats.local_dropped = self.stats.local_dropped.saturating_add(1);
        }
        if self.local.push_back(local).is_err() {
            self.stats.local_dropped = self.stats.local_dropped.saturating_add(1);
        }
    }

    fn door_event(&mut self, kind: DoorEventKind, now: Now) {
        let seq = self.next_seq();
        self.send(Outgoing::Door(DoorEvent {
            seq,
            time: now.unix,
            kind,
        }));
    }

    fn pulse(&mut self, open_ms: u16, now: Now) {
        self.local(Local::Relay(open_ms));
        let until = now
            .ms
            .saturating_add(u64::from(open_ms))
            .saturating_add(u64::from(self.config.door_grace_ms));
        self.door.authorized_until = Some(until);
    }

    fn settle(&mut self, decided: Decided, relay_ms: u16, now: Now) {
        self.local(Local::Decided(decided));
        if decided.allowed {
            self.local(Local::Signal(Signal::Granted));
            let open_ms = if relay_ms == 0 {
                self.config.relay_ms
            } else {
                relay_ms
            };
            self.pulse(open_ms, now);
        } else {
            self.local(Local::Signal(Signal::Denied));
        }
    }

    fn decide_offline(&mut self, seq: u32, card: CardId, now: Now) {
        let allowed = self.allow_list.contains(&self.scheme.entry(&card));
        let reason = if allowed {
            Reason::OfflineGranted
        } else {
            Reason::OfflineDenied
        };
        let entry = OfflineEntry {
            gate_seq: seq,
            time: now.unix,
            card,
            reason,
        };
        self.log.push(entry);
        self.local(Local::LogOffline(entry));
        let decided = Decided {
            seq,
            allowed,
            reason: Some(reason),
            offline: true,
        };
        self.settle(decided, self.config.relay_ms, now);
    }

    fn send_heartbeat(&mut self, now: Now) {
        let seq = self.next_seq();
        let flags = HeartbeatFlags::new(
            self.door.closed.unwrap_or(true),
            self.tamper,
            self.config.on_mains,
        );
        self.send(Outgoing::Heartbeat(Heartbeat {
            seq,
            time: now.unix,
            allowlist_version: self.allow_list.version(),
            offline_pending: u16::try_from(self.log.len()).unwrap_or(u16::MAX),
            flags,
        }));
        self.next_heartbeat = Some(deadline(now.ms, self.config.heartbeat_interval_ms));
    }

    fn request_allow_list(&mut self, have_version: u32, now: Now) {
        if !self.link_up {
            return;
        }
        let seq = self.next_seq();
        self.sync = Some(AllowListSync {
            seq,
            transfer: None,
        });
        self.send(Outgoing::AllowListRequest(AllowListRequest {
            seq,
            have_version,
        }));
        self.next_refresh = Some(deadline(now.ms, self.config.allow_list_refresh_ms));
    }

    /// Fires the timers that are due at `now`.
    fn advance(&mut self, now: Now) {
        if let Some(p) = self.pending {
            if now.ms >= p.deadline {
                self.pending = None;
                self.stats.timeouts = self.stats.timeouts.saturating_add(1);
                self.decide_offline(p.seq, p.card, now);
            }
        }
        if let (Some(opened), false) = (self.door.opened_at, self.door.held_reported) {
            if now.ms >= opened.saturating_add(u64::from(self.config.held_open_ms)) {
                self.door.held_reported = true;
                self.door_event(DoorEventKind::HeldOpen, now);
            }
        }
        if self.link_up {
            if self.next_heartbeat.is_some_and(|t| now.ms >= t) {
                self.send_heartbeat(now);
            }
            if self.batch.is_some_and(|b| now.ms >= b.resend_at) {
                self.batch = None; // `service` sends the same entries again
            }
            if self.next_refresh.is_some_and(|t| now.ms >= t) {
                self.request_allow_list(self.allow_list.version(), now);
            }
        }
    }

    /// Starts what the state calls for: the next offline batch.
    fn service(&mut self, now: Now) {
        if !self.link_up || self.batch.is_some() {
            return;
        }
        if let Some(end) = self.log.next_batch_end() {
            let seq = self.next_seq();
            self.send(Outgoing::Batch { seq, end });
            self.batch = Some(BatchInFlight {
                seq,
                end,
                resend_at: deadline(now.ms, self.config.offline_ack_timeout_ms),
            });
        }
    }

    fn frame(&self, out: Outgoing) -> Result<Transmit, Error> {
        let message = match out {
            Outgoing::Request { seq, time, card } => Message::AccessRequest(AccessRequest {
                gate_id: self.config.gate_id,
                seq,
                time,
                card,
            }),
            Outgoing::Door(m) => Message::DoorEvent(m),
            Outgoing::Tamper(m) => Message::Tamper(m),
            Outgoing::Heartbeat(m) => Message::Heartbeat(m),
            Outgoing::Batch { seq, end } => Message::OfflineBatch(OfflineBatch {
                seq,
                entries: self.log.batch_up_to(end),
            }),
            Outgoing::AllowListRequest(m) => Message::AllowListRequest(m),
        };
        let seq = message.seq();
        let repr = Repr {
            gate_id: self.config.gate_id,
            message,
        };
        let mut buf = [0u8; MAX_FRAME_LEN];
        let len = repr.emit_sealed(&self.config.key, &mut buf)?;
        let bytes =
            buf.get(..len)
                .and_then(|b| Vec::from_slice(b).ok())
                .ok_or(Error::BufferSize {
                    needed: len,
                    got: MAX_FRAME_LEN,
                })?;
        let msg_type = Frame::new_unchecked(&bytes[..]).msg_type();
        Ok(Transmit {
            msg_type,
            seq,
            bytes,
        })
    }

    fn handle_frame(&mut self, bytes: &[u8], now: Now) -> Result<(), RxError> {
        let frame = Frame::new_checked(bytes).map_err(RxError::Malformed)?;
        if frame.gate_id() != self.config.gate_id {
            return Err(RxError::WrongGate {
                gate_id: frame.gate_id(),
            });
        }
        verify(&self.config.key, &frame).map_err(|_| RxError::BadTag)?;
        let (msg_type, seq) = (frame.msg_type(), frame.seq());
        let repr = match Repr::parse(&frame) {
            Ok(repr) => repr,
            Err(Error::UnknownReason(_)) if msg_type == MessageType::Decision => {
                // Authenticated but with a reason this gate does not know: a deny.
                let p = self.take_pending(seq, msg_type)?;
                let decided = Decided {
                    seq: p.seq,
                    allowed: false,
                    reason: None,
                    offline: false,
                };
                self.settle(decided, 0, now);
                return Ok(());
            }
            Err(e) => return Err(RxError::Malformed(e)),
        };
        match repr.message {
            Message::Decision(d) => self.on_decision(d, now),
            Message::OfflineAck(a) => self.on_offline_ack(a),
            Message::AllowListDelta(d) => self.on_delta(&d, now),
            Message::Error(e) => self.on_error_reply(e, now),
            Message::RemoteOpen(c) => self.on_remote_open(c, now),
            _ => Err(RxError::Unexpected(msg_type)),
        }
    }

    fn take_pending(&mut self, seq: u32, msg_type: MessageType) -> Result<PendingRequest, RxError> {
        match self.pending {
            Some(p) if p.seq == seq => {
                self.pending = None;
                Ok(p)
            }
            _ => Err(RxError::Unmatched { msg_type, seq }),
        }
    }

    fn on_decision(&mut self, d: Decision, now: Now) -> Result<(), RxError> {
        let p = self.take_pending(d.seq, MessageType::Decision)?;
        let decided = Decided {
            seq: p.seq,
            allowed: d.reason.is_allowed(),
            reason: Some(d.reason),
            offline: false,
        };
        self.settle(decided, d.relay_ms, now);
        Ok(())
    }

    fn on_remote_open(&mut self, c: RemoteOpen, now: Now) -> Result<(), RxError> {
        self.commands.accept(c.seq).map_err(|_| RxError::Replayed {
            seq: c.seq,
            highest: self.commands.highest().unwrap_or(0),
        })?;
        self.stats.remote_opens = self.stats.remote_opens.saturating_add(1);
        let open_ms = if c.relay_ms == 0 {
            self.config.relay_ms
        } else {
            c.relay_ms
        };
        self.pulse(open_ms, now);
        Ok(())
    }

    fn on_offline_ack(&mut self, a: OfflineAck) -> Result<(), RxError> {
        match self.batch {
            Some(b) if b.seq == a.seq => {
                self.batch = None;
                self.log.acknowledge(b.end);
                self.local(Local::OfflineAcked(b.end));
                Ok(())
            }
            _ => Err(RxError::Unmatched {
                msg_type: MessageType::OfflineAck,
                seq: a.seq,
            }),
        }
    }

    fn on_error_reply(&mut self, e: ErrorReply, now: Now) -> Result<(), RxError> {
        let refused = RxError::Refused {
            seq: e.seq,
            code: e.code,
        };
        if self.pending.is_some_and(|p| p.seq == e.seq) {
            if let Some(p) = self.pending.take() {
                self.decide_offline(p.seq, p.card, now);
            }
        } else if self.batch.is_some_and(|b| b.seq == e.seq) {
            // Left in flight: resent after the ack timeout, not in a tight loop.
        } else if self.sync.is_some_and(|s| s.seq == e.seq) {
            self.sync = None;
        } else {
            return Err(RxError::Unmatched {
                msg_type: MessageType::Error,
                seq: e.seq,
            });
        }
        self.stats.last_error = Some(e.code);
        Err(refused)
    }

    fn on_delta(&mut self, d: &AllowListDelta, now: Now) -> Result<(), RxError> {
        let Some(sync) = self.sync.filter(|s| s.seq == d.seq) else {
            return Err(RxError::Unmatched {
                msg_type: MessageType::AllowListDelta,
                seq: d.seq,
            });
        };
        let header = ChunkHeader {
            from_version: d.from_version,
            to_version: d.to_version,
            full: d.full,
        };
        match sync.transfer {
            None => {
                let have_version = self.allow_list.version();
                if !d.full && d.from_version != have_version {
                    self.request_allow_list(0, now);
                    return Err(RxError::StaleDelta {
                        from_version: d.from_version,
                        have_version,
                    });
                }
                if d.full {
                    self.allow_list.clear();
                }
            }
            Some(started) if started != header => {
                self.allow_list.set_version(0);
                self.request_allow_list(0, now);
                return Err(RxError::InconsistentDelta);
            }
            Some(_) => {}
        }
        for e in &d.removes {
            self.allow_list.remove(e);
        }
        for e in &d.adds {
            self.allow_list.insert(*e);
        }
        if d.more {
            self.allow_list.set_version(0);
            self.sync = Some(AllowListSync {
                seq: sync.seq,
                transfer: Some(header),
            });
        } else {
            self.allow_list.set_version(d.to_version);
            self.sync = None;
        }
        Ok(())
    }
}

fn deadline(now_ms: u64, after_ms: u32) -> u64 {
    now_ms.saturating_add(u64::from(after_ms))
}
