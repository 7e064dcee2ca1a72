//! The transports between a simulated gate and the hub. Each runs as its own task: it
//! takes the core's sealed frames from a channel and reports [`LinkEvent`]s (link up or
//! down, one received frame, an error to count). Reconnection is the transport's job
//! (every [`RECONNECT`]); the gate's core only hears `Up` and `Down`.
//!
//! - [`tcp`]: one persistent connection per gate, frames back to back, cut with a
//!   `FrameDecoder`.
//! - [`http`]: on a keep-alive connection, `POST /api/v1/access/check` per access request
//!   (the JSON answer is turned back into a sealed frame for the core) and
//!   `POST /api/v1/gate/frames` for every other frame (sealed frames both ways; see the
//!   module).
//! - [`mqtt`]: rumqttc, one client per gate with the gate's own credentials; one frame
//!   per payload.

pub mod http;
pub mod mqtt;
pub mod tcp;

use crate::args::{SimConfig, Transport};
use crate::gates_file::GateSpec;
use gatehouse_gate_proto::MessageType;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

/// Pause between connection attempts while the hub is unreachable.
pub const RECONNECT: Duration = Duration::from_millis(500);

/// What a transport tells its gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Up,
    Down,
    /// One frame from the hub, as received (or, for HTTP, as rebuilt from the answer).
    Frame(Vec<u8>),
    /// A connection attempt or an established connection failed.
    IoError,
    /// The hub answered with an HTTP error status.
    HttpStatus(u16),
    /// The MQTT broker refused a subscription or the connection.
    MqttRefused,
    /// A message this transport cannot carry (none does today: HTTP carries every frame
    /// through `/api/v1/gate/frames`).
    NotCarried(MessageType),
}

/// A running transport: frames go into `out`; the task ends when `out` is dropped (or is
/// aborted).
pub struct Link {
    pub out: UnboundedSender<Vec<u8>>,
    pub events: UnboundedReceiver<LinkEvent>,
    pub task: JoinHandle<()>,
}

/// Starts the configured transport for one gate.
pub fn spawn(config: &Arc<SimConfig>, gate: &GateSpec) -> Link {
    let (out, out_rx) = unbounded_channel();
    let (events_tx, events) = unbounded_channel();
    let task = match config.transport {
        Transport::Tcp => tokio::spawn(tcp::run(config.hub.clone(), out_rx, events_tx)),
        Transport::Http => tokio::spawn(http::run(
            config.hub.clone(),
            gate.clone(),
            out_rx,
            events_tx,
        )),
        Transport::Mqtt => tokio::spawn(mqtt::run(
            Arc::clone(config),
            gate.clone(),
            out_rx,
            events_tx,
        )),
    };
    Link { out, events, task }
}
