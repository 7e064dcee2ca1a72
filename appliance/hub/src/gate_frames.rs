//! What the binary transports (raw TCP, MQTT, and HTTP's `POST /api/v1/gate/frames`) do
//! with one sealed frame of the gate link, so all of them refuse, decide and answer the
//! same way.
//!
//! [`handle`]: look up the gate by the header's `gate_id`, verify the tag with its key,
//! check its IP allow-list, parse, accept the sequence number ([`ReplayWindow`] per gate,
//! shared by every transport), then
//! - access request: decide and submit the log entry; the [`Answer`] is returned;
//! - heartbeat: note the gate as seen (no answer; `last_seen` is written by the access
//!   service at most every 10 s per gate);
//! - offline batch: every entry submitted to the access log (source `offline`, keyed by
//!   the gate's `gate_seq`, so a re-upload is stored once); the `OfflineAck` goes out only
//!   when all of them are durable, and not at all if one is not (the gate uploads again);
//! - allow-list request: the answer is the request's `AllowListDelta` chunks, computed one
//!   at a time as they are sent (see [`crate::allow_list`]);
//! - door event, tamper: stored in the `gate_events` table (kind `forced_open`,
//!   `tamper_on`, ...; a forced door and an opened enclosure are logged as warnings); no
//!   reply frame, as the protocol says. The alarms among them are also raised as events
//!   ([`GateAlerts`], see below);
//! - anything else (messages only the hub sends): `ErrorReply` Unsupported.
//!
//! Every frame accepted from a gate (tag, address and sequence number all good) also
//! takes the remote door opens queued for that gate ([`crate::gate_commands`]), returned
//! in [`Handled::commands`] to go out after the frame's own answer on the same transport:
//! that is how an HTTP gate, which only ever asks, gets a command (in the reply to its
//! next heartbeat or other frame). [`Handled::accepted`] tells the transport which gate
//! it heard, so TCP can register the connection as the gate's push link and MQTT can note
//! the gate as listening.
//!
//! [`resolve`] turns an [`Answer`] into sealed reply frames handed one by one, in order,
//! to a [`ReplySink`] (a TCP connection, MQTT publishes, an HTTP body), waiting for a
//! decision's log row to be durable first; a decision the log could not make durable
//! gives no reply.
//!
//! Refusals are counted in [`crate::drops`]. A frame for an unknown gate gets no answer
//! (there is no key to seal one with), and neither does a frame whose tag does not verify
//! (a sealed reply would hand its forger authentic frames, and on MQTT would let anyone on
//! the broker make the hub publish on a gate's topic); [`Answer::is_authentic`] lets HTTP
//! say 401 instead. Every other refusal gets an `ErrorReply` sealed with the gate's key.
//!
//! # Alarms raised as events
//! Once the hub has set [`GateAlerts`] on the access service ([`raise_alarms_through`]),
//! a door forced open, a door held open and the tamper switch are also submitted to the
//! events pipeline (source: the gate's name, source kind `gate`, ingress `gate`):
//!
//! | gate event | event kind | severity | lifecycle |
//! |---|---|---|---|
//! | `forced_open` | [`DOOR_FORCED`] `door.forced` | critical | instant |
//! | `held_open` | [`DOOR_HELD_OPEN`] `door.held_open` | warning | instant |
//! | `tamper_on` | [`GATE_TAMPER`] `gate.tamper` | critical | active |
//! | `tamper_off` | the same event | | ended (a "resolved" notice) |
//!
//! Opened, closed and exit-button events are not alarms. The external id is
//! `gate:<gate_id>:<gate_seq>` of the frame (for a tamper episode: of its `tamper_on`
//! frame, which its `tamper_off` ends), so a frame that reaches the hub again (sent again
//! after a crash, or replayed past a replay window) folds into the event it raised: each
//! alarm is stored once. The event is submitted whether or not its `gate_events` row is
//! new, and first: the row is what resumes the replay window after a restart, so a crash
//! between the two leaves a frame the hub still accepts, and folds, rather than one it
//! refuses with the event lost. The row is then written at once (an access-service
//! refresh) rather than at the refresher's next pass, and only after both does the
//! transport go on (on HTTP: answer); should the row's write fail, the access service
//! keeps it queued and retries. An event the pipeline does not accept is counted
//! (`not_durable`) and logged, and the row still stored. With alarms raised, every door
//! and tamper event goes through [`resolve`] in its frame's order, so the rows keep the
//! order of the frames.
//!
//! [`ReplayWindow`]: gatehouse_gate_proto::ReplayWindow

use crate::access::{
    AccessError, AccessService, GateAuth, OfflineReceipt, PendingDecision, Presented,
};
use crate::allow_list::AllowListReply;
use crate::drops::DropKind;
use crate::events::{EventService, Ingress, StoreConn, SubmitError};
use crate::gate_commands::Command;
use gatehouse_alerts::model::{limits, Lifecycle, NewEvent, Severity, SourceKind};
use gatehouse_gate_proto::DoorEventKind;
use gatehouse_gate_proto::{
    verify, Decision, ErrorCode, ErrorReply, Frame, Message, OfflineAck, RemoteOpen, Repr,
    MAX_FRAME_LEN,
};
use gatehouse_store::events::EventFilter;
use gatehouse_store::gate_events::GateEventKind;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

/// The event kind of a door forced open.
pub const DOOR_FORCED: &str = "door.forced";
/// The event kind of a door held open too long.
pub const DOOR_HELD_OPEN: &str = "door.held_open";
/// The event kind of an opened enclosure (active until the switch closes).
pub const GATE_TAMPER: &str = "gate.tamper";

/// Where a frame came from, as far as the transport knows.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    /// The gate's own address (raw TCP).
    Ip(IpAddr),
    /// Relayed by the MQTT broker: the gate's address is unknown, so a gate with an IP
    /// allow-list is refused (fail closed) rather than let through unchecked.
    Broker,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Ip(ip) => ip.fmt(f),
            Peer::Broker => f.write_str("mqtt"),
        }
    }
}

/// An answer owed to a gate, in the order the requests came.
pub enum Answer {
    Decision {
        gate: Arc<GateAuth>,
        pending: PendingDecision,
    },
    Error {
        gate: Arc<GateAuth>,
        seq: u32,
        code: ErrorCode,
        /// The frame's tag verified with the gate's key.
        authentic: bool,
    },
    /// An offline batch whose entries were submitted to the log.
    Offline {
        gate: Arc<GateAuth>,
        seq: u32,
        receipts: Vec<OfflineReceipt>,
    },
    /// The chunks answering an allow-list request (one or more frames).
    AllowList {
        gate: Arc<GateAuth>,
        reply: AllowListReply,
    },
    /// Remote door opens for the gate (`RemoteOpen` frames, one each, in order; see
    /// [`crate::gate_commands`]).
    Commands {
        gate: Arc<GateAuth>,
        commands: Vec<Command>,
    },
    /// A door or tamper event to store (an alarm raised as an event first): no reply
    /// frame, but the transport goes on only once it is committed. Resolved in order, so
    /// the `gate_events` rows keep the order of the frames.
    GateEvent {
        gate: Arc<GateAuth>,
        alerts: Arc<GateAlerts>,
        event: GateEvent,
    },
}

/// A door or tamper event of a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateEvent {
    /// The frame's sequence number.
    pub seq: u32,
    /// The gate's clock, unix seconds.
    pub time: u32,
    pub kind: GateEventKind,
    /// When the hub received it.
    pub received: OffsetDateTime,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Answer::Decision { .. } => "decision",
            Answer::Error { .. } => "error",
            Answer::Offline { .. } => "offline ack",
            Answer::AllowList { .. } => "allow-list",
            Answer::GateEvent { .. } => "gate event",
            Answer::Commands { .. } => "commands",
        };
        f.debug_struct("Answer")
            .field("gate", &self.gate_id())
            .field("kind", &kind)
            .finish()
    }
}

impl Answer {
    /// The gate the answer goes to.
    pub fn gate_id(&self) -> u32 {
        match self {
            Answer::Decision { gate, .. }
            | Answer::Error { gate, .. }
            | Answer::Offline { gate, .. }
            | Answer::AllowList { gate, .. }
            | Answer::GateEvent { gate, .. }
            | Answer::Commands { gate, .. } => gate.id,
        }
    }

    /// Whether the frame being answered was sealed with the gate's key.
    pub fn is_authentic(&self) -> bool {
        match self {
            Answer::Decision { .. }
            | Answer::Offline { .. }
            | Answer::AllowList { .. }
            | Answer::GateEvent { .. }
            | Answer::Commands { .. } => true,
            Answer::Error { authentic, .. } => *authentic,
        }
    }
}

/// What one frame calls for.
#[derive(Debug, Default)]
pub struct Handled {
    /// The answer owed to the frame, if any.
    pub answer: Option<Answer>,
    /// Remote door opens queued for the gate, to send after the answer.
    pub commands: Option<Answer>,
    /// The gate whose frame was accepted (authentic, allowed, fresh).
    pub accepted: Option<u32>,
}

impl Handled {
    fn refused(answer: Option<Answer>) -> Handled {
        Handled {
            answer,
            ..Handled::default()
        }
    }

    /// The answer, then the commands.
    pub fn into_answers(self) -> impl Iterator<Item = Answer> {
        self.answer.into_iter().chain(self.commands)
    }
}

/// Handles one frame whose length is already checked: the answer owed, if any, and the
/// commands queued for its gate if it was accepted.
pub fn handle(
    service: &AccessService,
    frame: &Frame<&[u8]>,
    peer: Peer,
    transport: &'static str,
) -> Handled {
    let drops = service.drops();
    let gate_id = frame.gate_id();
    let Some(gate) = service.gate(gate_id) else {
        drops.count(
            DropKind::UnknownGate,
            transport,
            &format_args!("{peer}: frame for unknown gate {gate_id}"),
        );
        return Handled::default();
    };
    let (answer, accepted) = answer(service, &gate, frame, peer, transport);
    if !accepted {
        return Handled::refused(answer);
    }
    Handled {
        answer,
        commands: service.gate_commands().due(&gate),
        accepted: Some(gate_id),
    }
}

/// The answer owed to a frame of `gate`, and whether the frame was accepted.
fn answer(
    service: &AccessService,
    gate: &Arc<GateAuth>,
    frame: &Frame<&[u8]>,
    peer: Peer,
    transport: &'static str,
) -> (Option<Answer>, bool) {
    let gate = Arc::clone(gate);
    let drops = service.drops();
    let gate_id = frame.gate_id();
    let seq = frame.seq();
    let refuse = |kind, code, authentic, detail: &dyn std::fmt::Display| {
        drops.count(
            kind,
            transport,
            &format_args!("{peer}: gate {gate_id}: {detail}"),
        );
        (
            Some(Answer::Error {
                gate: gate.clone(),
                seq,
                code,
                authentic,
            }),
            false,
        )
    };
    if let Err(e) = verify(gate.key(), frame) {
        return refuse(DropKind::BadAuth, e.reply_code(), false, &e);
    }
    // The tag verified: the frame came from the holder of the key.
    let allowed = match peer {
        Peer::Ip(ip) => service
            .authenticate(gate_id, Presented::Verified, ip)
            .map(|_| ()),
        Peer::Broker if gate.has_ip_allow_list() => Err(AccessError::Malformed(
            "the gate has an IP allow-list, which cannot be checked for frames relayed by \
             the MQTT broker; use TCP or HTTP, or clear its allowed IPs"
                .into(),
        )),
        Peer::Broker => Ok(()),
    };
    if let Err(e) = allowed {
        return refuse(DropKind::IpRefused, ErrorCode::BadAuth, true, &e);
    }
    let repr = match Repr::parse(frame) {
        Ok(r) => r,
        Err(e) => {
            let kind = match e.reply_code() {
                ErrorCode::Unsupported => DropKind::Unsupported,
                ErrorCode::BadAuth => DropKind::BadAuth,
                _ => DropKind::Malformed,
            };
            return refuse(kind, e.reply_code(), true, &e);
        }
    };
    let now = service.now();
    if let Err(e) = service.accept_seq(gate_id, seq, now) {
        return refuse(DropKind::Replayed, ErrorCode::Replay, true, &e);
    }
    let answer = match repr.message {
        Message::AccessRequest(req) => {
            match service.begin(gate_id, Some(seq), req.card.as_bytes(), now) {
                Ok(pending) => Some(Answer::Decision { gate, pending }),
                Err(e) => {
                    refuse(
                        DropKind::Malformed,
                        e.reply_code().unwrap_or(ErrorCode::Malformed),
                        true,
                        &e,
                    )
                    .0
                }
            }
        }
        Message::Heartbeat(_) => {
            service.heard_from(gate_id, now);
            None
        }
        Message::DoorEvent(e) => {
            gate_event(service, gate, seq, e.time, GateEventKind::Door(e.kind), now)
        }
        Message::Tamper(t) => gate_event(
            service,
            gate,
            seq,
            t.time,
            GateEventKind::Tamper(t.active),
            now,
        ),
        Message::AllowListRequest(req) => Some(Answer::AllowList {
            reply: service.allow_list_reply(gate_id, &req),
            gate,
        }),
        Message::OfflineBatch(batch) => {
            let mut receipts = Vec::with_capacity(batch.entries.len());
            for entry in &batch.entries {
                match service.submit_offline(gate_id, entry) {
                    Ok(r) => receipts.push(r),
                    // The batch is refused whole; entries submitted before the bad
                    // one are stored, and count as duplicates if it comes again.
                    Err(e) => {
                        let refused = refuse(DropKind::Malformed, ErrorCode::Malformed, true, &e);
                        return (refused.0, true);
                    }
                }
            }
            Some(Answer::Offline {
                gate,
                seq,
                receipts,
            })
        }
        other => {
            refuse(
                DropKind::Unsupported,
                ErrorCode::Unsupported,
                true,
                &format_args!(
                    "{} messages are sent by the hub, not to it",
                    msg_name(&other)
                ),
            )
            .0
        }
    };
    // The frame's number was accepted: the gate spoke, whatever it said.
    (answer, true)
}

/// A door or tamper event: answered later ([`Answer::GateEvent`]: an alarm raised, then
/// the row stored) when the hub raises alarms; otherwise queued for the `gate_events`
/// table at once, with no answer.
fn gate_event(
    service: &AccessService,
    gate: Arc<GateAuth>,
    seq: u32,
    time: u32,
    kind: GateEventKind,
    received: OffsetDateTime,
) -> Option<Answer> {
    match service.gate_alerts() {
        Some(alerts) => Some(Answer::GateEvent {
            alerts: Arc::clone(alerts),
            event: GateEvent {
                seq,
                time,
                kind,
                received,
            },
            gate,
        }),
        None => {
            service.record_event(gate.id, seq, time, kind, received);
            None
        }
    }
}

/// Whether a gate event is raised as an event (see the module docs).
pub fn is_alarm(kind: GateEventKind) -> bool {
    matches!(
        kind,
        GateEventKind::Door(DoorEventKind::Forced | DoorEventKind::HeldOpen)
            | GateEventKind::Tamper(_)
    )
}

/// The external id of the event a gate's frame raises: `gate:<gate_id>:<gate_seq>`.
pub fn alarm_external_id(gate: u32, seq: u32) -> String {
    format!("gate:{gate}:{seq}")
}

/// The `source` of a gate's events: its name, or `gate-<id>` for a name an event cannot
/// carry (over [`limits::NAME`] bytes).
pub fn gate_source(gate: u32, name: &str) -> String {
    if !name.is_empty() && name.len() <= limits::NAME && !name.chars().any(char::is_control) {
        name.to_owned()
    } else {
        format!("gate-{gate}")
    }
}

/// The event `alarm` of gate `gate` (named `name`) raises, or `None` if it raises none.
/// `tamper_episode`: for a `tamper_off`, the external id of the episode it ends (without
/// one there is nothing to end). The gate's time is used when it is plausible (from 2000
/// to a day ahead of the hub's clock), else the time of receipt.
pub fn alarm_event(
    gate: u32,
    name: &str,
    alarm: &GateEvent,
    tamper_episode: Option<&str>,
) -> Option<NewEvent> {
    let label = format!("gate {name:?} (#{gate})");
    let (kind, severity, lifecycle, external_id, message) = match alarm.kind {
        GateEventKind::Door(DoorEventKind::Forced) => (
            DOOR_FORCED,
            Severity::Critical,
            Lifecycle::Instant,
            alarm_external_id(gate, alarm.seq),
            format!("door forced open at {label}"),
        ),
        GateEventKind::Door(DoorEventKind::HeldOpen) => (
            DOOR_HELD_OPEN,
            Severity::Warning,
            Lifecycle::Instant,
            alarm_external_id(gate, alarm.seq),
            format!("door held open too long at {label}"),
        ),
        GateEventKind::Tamper(true) => (
            GATE_TAMPER,
            Severity::Critical,
            Lifecycle::Active,
            alarm_external_id(gate, alarm.seq),
            format!("enclosure opened (tamper switch) at {label}"),
        ),
        GateEventKind::Tamper(false) => (
            GATE_TAMPER,
            Severity::Critical,
            Lifecycle::Ended,
            tamper_episode?.to_owned(),
            format!("enclosure closed again at {label}"),
        ),
        GateEventKind::Door(_) => return None,
    };
    let gate_time = OffsetDateTime::from_unix_timestamp(i64::from(alarm.time)).ok();
    let plausible = |t: &OffsetDateTime| {
        t.unix_timestamp() >= limits::EARLIEST_TIME
            && (*t - alarm.received).whole_seconds() <= limits::MAX_AHEAD
    };
    Some(NewEvent {
        source: gate_source(gate, name),
        source_kind: SourceKind::Gate,
        kind: kind.to_owned(),
        severity,
        time: gate_time.filter(plausible).unwrap_or(alarm.received),
        camera: None,
        zone: None,
        device: None,
        message: Some(message),
        snapshot_url: None,
        clip_url: None,
        external_id: Some(external_id),
        lifecycle,
    })
}

/// What raises the gates' alarms as events: the events pipeline, a store connection to
/// find an open tamper episode after a restart, and the episodes open now.
pub struct GateAlerts {
    events: EventService,
    store: StoreConn,
    /// Gate id -> the external id of its open "gate.tamper" event.
    tamper: Mutex<HashMap<u32, String>>,
}

impl std::fmt::Debug for GateAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateAlerts").finish_non_exhaustive()
    }
}

/// Makes `access` raise the gates' alarms through `events` (the hub does this once, when
/// it binds); `data_dir` holds the store.
pub fn raise_alarms_through(access: &AccessService, events: &EventService, data_dir: &Path) {
    let alerts = GateAlerts {
        events: events.clone(),
        store: StoreConn::new(data_dir),
        tamper: Mutex::new(HashMap::new()),
    };
    if !access.set_gate_alerts(Arc::new(alerts)) {
        tracing::warn!("gate alarms were already raised through another events pipeline");
    }
}

impl GateAlerts {
    fn episodes(&self) -> std::sync::MutexGuard<'_, HashMap<u32, String>> {
        // A map of ids: any state a panic leaves is still a valid map.
        self.tamper.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open tamper episode of `gate`: remembered, or (after a restart) the newest
    /// active "gate.tamper" event of its source in the store.
    async fn open_tamper(&self, gate: u32, source: &str) -> Option<String> {
        if let Some(id) = self.episodes().get(&gate) {
            return Some(id.clone());
        }
        let filter = EventFilter {
            kind: Some(GATE_TAMPER.to_owned()),
            source: Some(source.to_owned()),
            limit: 50,
            ..EventFilter::default()
        };
        let prefix = format!("gate:{gate}:");
        match self.store.call(move |s| s.list_events(&filter)).await {
            Ok(events) => events
                .into_iter()
                .find(|e| e.new.lifecycle == Lifecycle::Active)
                .and_then(|e| e.new.external_id)
                .filter(|id| id.starts_with(&prefix)),
            Err(e) => {
                tracing::warn!(gate, error = %e, "cannot look up the gate's open tamper event");
                None
            }
        }
    }

    /// Raises `alarm` of `gate` as an event; returns once it is committed. A `tamper_on`
    /// while another episode is open ends that one first (its `tamper_off` was lost).
    pub async fn raise(&self, gate: &GateAuth, alarm: &GateEvent) -> Result<(), SubmitError> {
        let source = gate_source(gate.id, &gate.name);
        let episode = match alarm.kind {
            GateEventKind::Tamper(false) => {
                let Some(open) = self.open_tamper(gate.id, &source).await else {
                    tracing::debug!(gate = gate.id, "tamper switch closed with no open episode");
                    return Ok(());
                };
                Some(open)
            }
            GateEventKind::Tamper(true) => {
                let id = alarm_external_id(gate.id, alarm.seq);
                let previous = self.episodes().get(&gate.id).cloned();
                if let Some(old) = previous.filter(|old| *old != id) {
                    let end = GateEvent {
                        kind: GateEventKind::Tamper(false),
                        ..*alarm
                    };
                    if let Some(e) = alarm_event(gate.id, &gate.name, &end, Some(&old)) {
                        self.events.submit(e, Ingress::Gate).await?;
                    }
                }
                None
            }
            _ => None,
        };
        let Some(event) = alarm_event(gate.id, &gate.name, alarm, episode.as_deref()) else {
            return Ok(());
        };
        let external = event.external_id.clone().unwrap_or_default();
        self.events.submit(event, Ingress::Gate).await?;
        match alarm.kind {
            GateEventKind::Tamper(true) => {
                self.episodes().insert(gate.id, external);
            }
            GateEventKind::Tamper(false) => {
                let mut open = self.episodes();
                if open.get(&gate.id) == Some(&external) {
                    open.remove(&gate.id);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn msg_name(m: &Message) -> &'static str {
    match m {
        Message::AccessRequest(_) => "access request",
        Message::Decision(_) => "decision",
        Message::DoorEvent(_) => "door event",
        Message::Tamper(_) => "tamper",
        Message::Heartbeat(_) => "heartbeat",
        Message::OfflineBatch(_) => "offline batch",
        Message::OfflineAck(_) => "offline ack",
        Message::AllowListRequest(_) => "allow-list request",
        Message::AllowListDelta(_) => "allow-list delta",
        Message::Error(_) => "error reply",
        Message::RemoteOpen(_) => "remote open",
    }
}

/// Where [`resolve`] puts reply frames: one call per sealed frame, in the order owed.
pub trait ReplySink: Send {
    /// Takes one sealed frame (at most `MAX_FRAME_LEN` bytes).
    fn frame(&mut self, frame: &[u8]) -> impl Future<Output = ()> + Send;

    /// Sends what it holds now and says whether every frame so far left (a command is
    /// delivered only then). By default frames leave as they are taken.
    fn sent(&mut self) -> impl Future<Output = bool> + Send {
        std::future::ready(true)
    }
}

/// Frames back to back, as on raw TCP (an HTTP body, a test).
impl ReplySink for Vec<u8> {
    async fn frame(&mut self, frame: &[u8]) {
        self.extend_from_slice(frame);
    }
}

/// Seals `message` for `gate` into `buf` (cleared first); `false` if it could not be
/// encoded (never expected: every reply the hub builds fits a frame).
fn seal(buf: &mut Vec<u8>, gate: &GateAuth, message: Message) -> bool {
    let repr = Repr {
        gate_id: gate.id,
        message,
    };
    buf.clear();
    buf.resize(repr.buffer_len().min(MAX_FRAME_LEN), 0);
    if repr.emit_sealed(gate.key(), buf).is_ok() {
        true
    } else {
        buf.clear();
        tracing::error!(gate = gate.id, "could not encode a reply frame");
        false
    }
}

/// Seals `message` for `gate` and hands it to `sink`.
pub async fn emit<S: ReplySink>(sink: &mut S, gate: &GateAuth, message: Message) {
    let mut buf = Vec::with_capacity(MAX_FRAME_LEN);
    if seal(&mut buf, gate, message) {
        sink.frame(&buf).await;
    }
}

/// Hands the sealed reply frames for `answer` to `sink` (none when a decision or offline
/// batch could not be made durable), waiting for log rows to be durable first.
pub async fn resolve<S: ReplySink>(
    sink: &mut S,
    answer: Answer,
    service: &AccessService,
    transport: &'static str,
) {
    match answer {
        Answer::Commands { gate, commands } => {
            let mut buf = Vec::with_capacity(MAX_FRAME_LEN);
            for command in commands {
                if command.expired() {
                    continue; // dropped: its ticket settles as expired
                }
                let open = RemoteOpen {
                    seq: command.id,
                    relay_ms: command.relay_ms,
                };
                if !seal(&mut buf, &gate, Message::RemoteOpen(open)) {
                    continue;
                }
                sink.frame(&buf).await;
                if sink.sent().await {
                    tracing::info!(
                        gate = gate.id,
                        request = command.id,
                        transport,
                        "remote open delivered"
                    );
                    command.delivered();
                } else {
                    service.gate_commands().requeue(gate.id, command);
                }
            }
        }
        Answer::Error {
            gate,
            seq,
            code,
            authentic,
        } => {
            // A forged or mis-keyed frame gets nothing: a reply sealed with the real gate's
            // key would only hand its forger authentic frames. The refusal is counted.
            if authentic {
                emit(sink, &gate, Message::Error(ErrorReply { seq, code })).await;
            }
        }
        Answer::AllowList { gate, reply } => {
            let mut buf = Vec::with_capacity(MAX_FRAME_LEN);
            for chunk in reply {
                if seal(&mut buf, &gate, Message::AllowListDelta(chunk)) {
                    sink.frame(&buf).await;
                }
            }
        }
        Answer::Offline {
            gate,
            seq,
            receipts,
        } => {
            let (mut accepted, mut duplicates) = (0u16, 0u16);
            for r in receipts {
                match r.stored().await {
                    Ok(true) => accepted = accepted.saturating_add(1),
                    Ok(false) => duplicates = duplicates.saturating_add(1),
                    Err(e) => {
                        // No acknowledgement: the gate keeps its entries and uploads again.
                        service.drops().count(DropKind::NotDurable, transport, &e);
                        return;
                    }
                }
            }
            emit(
                sink,
                &gate,
                Message::OfflineAck(OfflineAck {
                    seq,
                    accepted,
                    duplicates,
                }),
            )
            .await;
        }
        Answer::GateEvent {
            gate,
            alerts,
            event,
        } => {
            let alarm = is_alarm(event.kind);
            // An alarm's event first, then the gate_events row (see the module docs).
            if alarm {
                if let Err(e) = alerts.raise(&gate, &event).await {
                    service.drops().count(
                        DropKind::NotDurable,
                        transport,
                        &format_args!(
                            "gate {}: {} not stored as an event: {e}",
                            gate.id,
                            event.kind.name()
                        ),
                    );
                }
            }
            service.record_event(gate.id, event.seq, event.time, event.kind, event.received);
            // An alarm's row is written now rather than at the refresher's next pass.
            if alarm {
                if let Err(e) = service.refresh().await {
                    tracing::warn!(gate = gate.id, error = %e, "storing a gate event");
                }
            }
        }
        Answer::Decision { gate, pending } => {
            let seq = pending.seq();
            match pending.committed().await {
                Ok(d) => {
                    emit(
                        sink,
                        &gate,
                        Message::Decision(Decision {
                            seq,
                            reason: d.decision.reason,
                            relay_ms: u16::try_from(d.decision.relay_ms).unwrap_or(u16::MAX),
                        }),
                    )
                    .await
                }
                Err(e @ AccessError::Replayed { .. }) => {
                    service.drops().count(DropKind::Replayed, transport, &e);
                    emit(
                        sink,
                        &gate,
                        Message::Error(ErrorReply {
                            seq,
                            code: ErrorCode::Replay,
                        }),
                    )
                    .await;
                }
                Err(e) => {
                    // No answer: the gate times out and uses its allow-list.
                    service.drops().count(DropKind::NotDurable, transport, &e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const RECEIVED: OffsetDateTime = datetime!(2026-03-02 10:00 UTC);

    fn alarm(seq: u32, kind: GateEventKind) -> GateEvent {
        GateEvent {
            seq,
            time: 1_772_445_590, // 2026-03-02T09:59:50Z
            kind,
            received: RECEIVED,
        }
    }

    #[test]
    fn alarms_map_to_events() {
        use DoorEventKind::*;
        let forced =
            alarm_event(3, "front", &alarm(10, GateEventKind::Door(Forced)), None).unwrap();
        forced.validate().unwrap();
        assert_eq!(
            (
                forced.kind.as_str(),
                forced.severity,
                forced.lifecycle,
                forced.external_id.as_deref()
            ),
            (
                DOOR_FORCED,
                Severity::Critical,
                Lifecycle::Instant,
                Some("gate:3:10")
            )
        );
        assert_eq!(
            (forced.source.as_str(), forced.source_kind),
            ("front", SourceKind::Gate)
        );
        assert_eq!(
            forced.time,
            datetime!(2026-03-02 9:59:50 UTC),
            "the gate's clock"
        );

        let held =
            alarm_event(3, "front", &alarm(11, GateEventKind::Door(HeldOpen)), None).unwrap();
        assert_eq!(
            (held.kind.as_str(), held.severity),
            (DOOR_HELD_OPEN, Severity::Warning)
        );

        let on = alarm_event(3, "front", &alarm(12, GateEventKind::Tamper(true)), None).unwrap();
        assert_eq!(
            (on.kind.as_str(), on.lifecycle, on.external_id.as_deref()),
            (GATE_TAMPER, Lifecycle::Active, Some("gate:3:12"))
        );
        // The switch closing ends the episode it names; without one there is nothing.
        let off_alarm = alarm(13, GateEventKind::Tamper(false));
        let off = alarm_event(3, "front", &off_alarm, Some("gate:3:12")).unwrap();
        assert_eq!(
            (off.kind.as_str(), off.lifecycle, off.external_id.as_deref()),
            (GATE_TAMPER, Lifecycle::Ended, Some("gate:3:12"))
        );
        assert_eq!(alarm_event(3, "front", &off_alarm, None), None);

        for kind in [Opened, Closed, ExitButton, Unknown(9)] {
            assert!(!is_alarm(GateEventKind::Door(kind)));
            assert_eq!(
                alarm_event(3, "front", &alarm(14, GateEventKind::Door(kind)), None),
                None
            );
        }
        assert!(is_alarm(GateEventKind::Door(Forced)) && is_alarm(GateEventKind::Tamper(false)));

        // A gate whose clock was never set: the time of receipt.
        let unset = GateEvent {
            time: 5,
            ..alarm(15, GateEventKind::Door(Forced))
        };
        assert_eq!(
            alarm_event(3, "front", &unset, None).unwrap().time,
            RECEIVED
        );
        // A name an event cannot carry.
        assert_eq!(gate_source(3, &"x".repeat(65)), "gate-3");
        assert_eq!(gate_source(3, "front"), "front");
    }

    #[tokio::test]
    async fn an_alarm_raised_twice_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventService::open(dir.path(), time::UtcOffset::UTC).unwrap();
        let e = alarm_event(
            3,
            "front",
            &alarm(10, GateEventKind::Door(DoorEventKind::Forced)),
            None,
        )
        .unwrap();
        let first = events.submit(e.clone(), Ingress::Gate).await.unwrap();
        let again = events.submit(e, Ingress::Gate).await.unwrap();
        assert!(!first.duplicate && again.duplicate);
        assert_eq!(again.id, first.id);
        events.shutdown();
    }
}
