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
//! - door event, tamper: queued for the `gate_events` table (kind `forced_open`,
//!   `tamper_on`, ...; a forced door and an opened enclosure are logged as warnings); no
//!   answer, as the protocol says;
//! - anything else (messages only the hub sends): `ErrorReply` Unsupported.
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
//! [`ReplayWindow`]: gatehouse_gate_proto::ReplayWindow

use crate::access::{
    AccessError, AccessService, GateAuth, OfflineReceipt, PendingDecision, Presented,
};
use crate::allow_list::AllowListReply;
use crate::drops::DropKind;
use gatehouse_gate_proto::{
    verify, Decision, ErrorCode, ErrorReply, Frame, Message, OfflineAck, Repr, MAX_FRAME_LEN,
};
use gatehouse_store::gate_events::GateEventKind;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

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
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Answer::Decision { .. } => "decision",
            Answer::Error { .. } => "error",
            Answer::Offline { .. } => "offline ack",
            Answer::AllowList { .. } => "allow-list",
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
            | Answer::AllowList { gate, .. } => gate.id,
        }
    }

    /// Whether the frame being answered was sealed with the gate's key.
    pub fn is_authentic(&self) -> bool {
        match self {
            Answer::Decision { .. } | Answer::Offline { .. } | Answer::AllowList { .. } => true,
            Answer::Error { authentic, .. } => *authentic,
        }
    }
}

/// Handles one frame whose length is already checked; returns the answer owed, if any.
pub fn handle(
    service: &AccessService,
    frame: &Frame<&[u8]>,
    peer: Peer,
    transport: &'static str,
) -> Option<Answer> {
    let drops = service.drops();
    let gate_id = frame.gate_id();
    let seq = frame.seq();
    let Some(gate) = service.gate(gate_id) else {
        drops.count(
            DropKind::UnknownGate,
            transport,
            &format_args!("{peer}: frame for unknown gate {gate_id}"),
        );
        return None;
    };
    let refuse = |kind, code, authentic, detail: &dyn std::fmt::Display| {
        drops.count(
            kind,
            transport,
            &format_args!("{peer}: gate {gate_id}: {detail}"),
        );
        Some(Answer::Error {
            gate: gate.clone(),
            seq,
            code,
            authentic,
        })
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
    match repr.message {
        Message::AccessRequest(req) => {
            match service.begin(gate_id, Some(seq), req.card.as_bytes(), now) {
                Ok(pending) => Some(Answer::Decision { gate, pending }),
                Err(e) => refuse(
                    DropKind::Malformed,
                    e.reply_code().unwrap_or(ErrorCode::Malformed),
                    true,
                    &e,
                ),
            }
        }
        Message::Heartbeat(_) => {
            service.heard_from(gate_id, now);
            None
        }
        Message::DoorEvent(e) => {
            service.record_event(gate_id, seq, e.time, GateEventKind::Door(e.kind), now);
            None
        }
        Message::Tamper(t) => {
            service.record_event(gate_id, seq, t.time, GateEventKind::Tamper(t.active), now);
            None
        }
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
                    Err(e) => return refuse(DropKind::Malformed, ErrorCode::Malformed, true, &e),
                }
            }
            Some(Answer::Offline {
                gate,
                seq,
                receipts,
            })
        }
        other => refuse(
            DropKind::Unsupported,
            ErrorCode::Unsupported,
            true,
            &format_args!(
                "{} messages are sent by the hub, not to it",
                msg_name(&other)
            ),
        ),
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
    }
}

/// Where [`resolve`] puts reply frames: one call per sealed frame, in the order owed.
pub trait ReplySink: Send {
    /// Takes one sealed frame (at most `MAX_FRAME_LEN` bytes).
    fn frame(&mut self, frame: &[u8]) -> impl Future<Output = ()> + Send;
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
