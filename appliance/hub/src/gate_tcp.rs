//! The gates' raw-TCP transport: binary frames of the gate link back to back on a
//! persistent connection (see `gatehouse_gate_proto::frame` for the layout).
//!
//! Per connection a reader cuts the stream with a [`FrameDecoder`] and handles each frame
//! in order with [`gate_frames::handle`] (verify, IP allow-list, parse, replay window,
//! decide; shared with the MQTT transport).
//!
//! Pipelining: the reader never waits for an answer to be written. A writer task takes
//! queued answers in order, waits for each decision's log row to be durable, seals it
//! with the gate's key and writes everything that is ready in one `write` (flushing every
//! [`WRITE_BATCH`] bytes, so a long allow-list transfer streams out chunk by chunk instead
//! of piling up in memory). At most [`MAX_IN_FLIGHT`] answers wait per connection; beyond
//! that the reader stops reading (TCP back-pressure).
//!
//! Commands: once a gate's frame is accepted on a connection, the connection is that
//! gate's push link for remote door opens ([`crate::gate_commands`]) until it closes: a
//! command joins the queue of answers and is written in order with them (flushed at
//! once, and reported delivered only once the write succeeded). Commands queued while
//! the gate had no link follow the answer to its next frame.
//!
//! Refusals: a frame for an unknown gate or with a tag that does not verify is counted and
//! dropped (no key to seal a reply with, or a forger to whom a sealed reply would hand
//! authentic frames); a known gate's disallowed address, malformed payload, replayed
//! number or unsupported type gets an `ErrorReply` sealed with its key and counted. A
//! length field below the minimum or above `MAX_FRAME_LEN` means the stream lost its
//! framing: counted, and the connection is closed. A decision the log could not make
//! durable gets no answer (the gate times out and falls back to its allow-list).

use crate::access::AccessService;
use crate::drops::DropKind;
use crate::gate_commands::TcpLinkGuard;
use crate::gate_frames::{self, Answer, Peer, ReplySink};
use gatehouse_gate_proto::{Error as ProtoError, FrameDecoder, MAX_FRAME_LEN};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Most answers queued per connection before the reader pauses.
pub const MAX_IN_FLIGHT: usize = 256;

/// Reply bytes gathered before they are written.
pub const WRITE_BATCH: usize = 64 * 1024;

const TRANSPORT: &str = "tcp";

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
    // The gates heard on this connection: its push links, removed when it ends.
    let mut links: Vec<(u32, TcpLinkGuard)> = Vec::new();
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
            let handled = match decoder.next_frame() {
                Ok(Some(frame)) => {
                    gate_frames::handle(&service, &frame, Peer::Ip(peer.ip()), TRANSPORT)
                }
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
            if let Some(gate) = handled.accepted {
                if !links.iter().any(|(g, _)| *g == gate) {
                    links.push((gate, service.gate_commands().tcp_link(gate, &tx)));
                }
            }
            for a in handled.into_answers() {
                if tx.send(a).await.is_err() {
                    break 'read; // the writer stopped: the peer is gone
                }
            }
        }
    }
    drop(links);
    drop(tx);
    let _ = writer.await;
    tracing::debug!(%peer, "gate disconnected");
}

/// The connection's write half, gathering frames into one write.
struct Outbound {
    wr: tokio::net::tcp::OwnedWriteHalf,
    buf: Vec<u8>,
    /// A write failed: the peer is gone; frames are dropped from now on.
    broken: bool,
}

impl Outbound {
    async fn flush(&mut self) {
        if !self.broken && !self.buf.is_empty() && self.wr.write_all(&self.buf).await.is_err() {
            // Keep draining so every queued decision still completes (and is logged).
            self.broken = true;
        }
        self.buf.clear();
    }
}

impl ReplySink for Outbound {
    async fn frame(&mut self, frame: &[u8]) {
        if self.broken {
            return;
        }
        self.buf.extend_from_slice(frame);
        if self.buf.len() >= WRITE_BATCH {
            self.flush().await;
        }
    }

    async fn sent(&mut self) -> bool {
        self.flush().await;
        !self.broken
    }
}

async fn writer(
    wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Answer>,
    service: AccessService,
) {
    let mut out = Outbound {
        wr,
        buf: Vec::with_capacity(4096),
        broken: false,
    };
    while let Some(first) = rx.recv().await {
        gate_frames::resolve(&mut out, first, &service, TRANSPORT).await;
        // Batch whatever else is already queued into the same write.
        while out.buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(next) => gate_frames::resolve(&mut out, next, &service, TRANSPORT).await,
                Err(_) => break,
            }
        }
        out.flush().await;
    }
    if !out.broken {
        let _ = out.wr.shutdown().await;
    }
}
