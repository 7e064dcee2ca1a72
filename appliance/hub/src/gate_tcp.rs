//! The gates' raw-TCP transport: binary frames of the gate link back to back on a
//! persistent connection (see `gatehouse_gate_proto::frame` for the layout).
//!
//! Per connection a reader cuts the stream with a [`FrameDecoder`] and handles each frame
//! in order: look up the gate by the header's `gate_id`, verify the tag with its key,
//! check its IP allow-list, parse, accept the sequence number ([`ReplayWindow`] per gate,
//! shared with the other transports), then
//! - access request: decide and submit the log entry; the answer is queued;
//! - heartbeat: note the gate as seen (no answer);
//! - anything else: `ErrorReply` Unsupported (door events, offline batches and
//!   allow-list sync are handled by later work).
//!
//! Pipelining: the reader never waits for an answer to be written. A writer task takes
//! queued answers in order, waits for each decision's log row to be durable, seals it
//! with the gate's key and writes everything that is ready in one `write`. At most
//! [`MAX_IN_FLIGHT`] answers wait per connection; beyond that the reader stops reading
//! (TCP back-pressure).
//!
//! Refusals: a frame for an unknown gate is counted and dropped (there is no key to seal a
//! reply with); a known gate's bad tag, disallowed address, malformed payload, replayed
//! number or unsupported type gets an `ErrorReply` sealed with its key and counted. A
//! length field below the minimum or above `MAX_FRAME_LEN` means the stream lost its
//! framing: counted, and the connection is closed. A decision the log could not make
//! durable gets no answer (the gate times out and falls back to its allow-list).
//!
//! [`ReplayWindow`]: gatehouse_gate_proto::ReplayWindow

use crate::access::{AccessError, AccessService, GateAuth, PendingDecision, Presented};
use crate::drops::DropKind;
use gatehouse_gate_proto::{
    verify, Decision, Error as ProtoError, ErrorCode, ErrorReply, Frame, FrameDecoder, Message,
    Repr, MAX_FRAME_LEN,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Most answers queued per connection before the reader pauses.
pub const MAX_IN_FLIGHT: usize = 256;

const TRANSPORT: &str = "tcp";

/// An answer, in the order the requests came.
enum Answer {
    Decision {
        gate: Arc<GateAuth>,
        pending: PendingDecision,
    },
    Error {
        gate: Arc<GateAuth>,
        seq: u32,
        code: ErrorCode,
    },
}

/// Accepts gate connections until `stop` turns true, then lets each connection finish
/// the answers it owes and returns.
pub async fn run(listener: TcpListener, service: AccessService, mut stop: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    let conn_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, peer, service.clone(), conn_stop.clone()));
                }
                Err(e) => {
                    // EMFILE and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "gate TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = crate::stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: AccessService,
    mut stop: watch::Receiver<bool>,
) {
    tracing::debug!(%peer, "gate connected");
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Answer>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(writer(wr, rx, service.clone()));
    let mut decoder = FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]);
    'read: loop {
        let n = tokio::select! {
            r = rd.read(decoder.spare_mut()) => match r {
                Ok(0) | Err(_) => break 'read,
                Ok(n) => n,
            },
            _ = crate::stopped(&mut stop) => break 'read,
        };
        decoder.commit(n);
        loop {
            let answer = match decoder.next_frame() {
                Ok(Some(frame)) => handle(&service, &frame, peer.ip()),
                Ok(None) => break,
                Err(e) => {
                    let kind = match e {
                        ProtoError::Oversize { .. } => DropKind::Oversize,
                        _ => DropKind::Malformed,
                    };
                    service
                        .drops()
                        .count(kind, TRANSPORT, &format_args!("{peer}: {e}; closing"));
                    break 'read;
                }
            };
            if let Some(a) = answer {
                if tx.send(a).await.is_err() {
                    break 'read; // the writer stopped: the peer is gone
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    tracing::debug!(%peer, "gate disconnected");
}

fn handle(service: &AccessService, frame: &Frame<&[u8]>, peer: IpAddr) -> Option<Answer> {
    let drops = service.drops();
    let gate_id = frame.gate_id();
    let seq = frame.seq();
    let Some(gate) = service.gate(gate_id) else {
        drops.count(
            DropKind::UnknownGate,
            TRANSPORT,
            &format_args!("{peer}: frame for unknown gate {gate_id}"),
        );
        return None;
    };
    let refuse = |kind, code, detail: &dyn std::fmt::Display| {
        drops.count(
            kind,
            TRANSPORT,
            &format_args!("{peer}: gate {gate_id}: {detail}"),
        );
        Some(Answer::Error {
            gate: gate.clone(),
            seq,
            code,
        })
    };
    if let Err(e) = verify(gate.key(), frame) {
        return refuse(DropKind::BadAuth, e.reply_code(), &e);
    }
    // The tag verified: the frame came from the holder of the key.
    if let Err(e) = service.authenticate(gate_id, Presented::Verified, peer) {
        return refuse(DropKind::IpRefused, ErrorCode::BadAuth, &e);
    }
    let repr = match Repr::parse(frame) {
        Ok(r) => r,
        Err(e) => {
            let kind = match e.reply_code() {
                ErrorCode::Unsupported => DropKind::Unsupported,
                ErrorCode::BadAuth => DropKind::BadAuth,
                _ => DropKind::Malformed,
            };
            return refuse(kind, e.reply_code(), &e);
        }
    };
    let now = service.now();
    if let Err(e) = service.accept_seq(gate_id, seq, now) {
        return refuse(DropKind::Replayed, ErrorCode::Replay, &e);
    }
    match repr.message {
        Message::AccessRequest(req) => {
            match service.begin(gate_id, Some(seq), req.card.as_bytes(), now) {
                Ok(pending) => Some(Answer::Decision { gate, pending }),
                Err(e) => refuse(
                    DropKind::Malformed,
                    e.reply_code().unwrap_or(ErrorCode::Malformed),
                    &e,
                ),
            }
        }
        Message::Heartbeat(_) => {
            service.heard_from(gate_id, now);
            None
        }
        other => refuse(
            DropKind::Unsupported,
            ErrorCode::Unsupported,
            &format_args!("{} messages are not handled over TCP yet", msg_name(&other)),
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

/// Seals `message` for `gate` onto the end of `out`.
fn emit(out: &mut Vec<u8>, gate: &GateAuth, message: Message) {
    let repr = Repr {
        gate_id: gate.id,
        message,
    };
    let start = out.len();
    out.resize(start + repr.buffer_len(), 0);
    let ok = out
        .get_mut(start..)
        .is_some_and(|buf| repr.emit_sealed(gate.key(), buf).is_ok());
    if !ok {
        // Every reply the hub builds fits; keep the stream well-framed regardless.
        out.truncate(start);
        tracing::error!(gate = gate.id, "could not encode a reply frame");
    }
}

async fn resolve(out: &mut Vec<u8>, answer: Answer, service: &AccessService) {
    match answer {
        Answer::Error { gate, seq, code } => {
            emit(out, &gate, Message::Error(ErrorReply { seq, code }));
        }
        Answer::Decision { gate, pending } => {
            let seq = pending.seq();
            match pending.committed().await {
                Ok(d) => emit(
                    out,
                    &gate,
                    Message::Decision(Decision {
                        seq,
                        reason: d.decision.reason,
                        relay_ms: u16::try_from(d.decision.relay_ms).unwrap_or(u16::MAX),
                    }),
                ),
                Err(e @ AccessError::Replayed { .. }) => {
                    service.drops().count(DropKind::Replayed, TRANSPORT, &e);
                    emit(
                        out,
                        &gate,
                        Message::Error(ErrorReply {
                            seq,
                            code: ErrorCode::Replay,
                        }),
                    );
                }
                Err(e) => {
                    // No answer: the gate times out and uses its allow-list.
                    service.drops().count(DropKind::NotDurable, TRANSPORT, &e);
                }
            }
        }
    }
}

async fn writer(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Answer>,
    service: AccessService,
) {
    let mut out = Vec::with_capacity(4096);
    let mut broken = false;
    while let Some(first) = rx.recv().await {
        resolve(&mut out, first, &service).await;
        // Batch whatever else is already queued into the same write.
        while out.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(next) => resolve(&mut out, next, &service).await,
                Err(_) => break,
            }
        }
        if !broken && !out.is_empty() && wr.write_all(&out).await.is_err() {
            // Keep draining so every queued decision still completes (and is logged).
            broken = true;
        }
        out.clear();
    }
    if !broken {
        let _ = wr.shutdown().await;
    }
}
