//! [`Output`]: what the core asks the board to do.

use gatehouse_gate_proto::{MessageType, OfflineEntry, Reason, MAX_FRAME_LEN};
use heapless::Vec;

/// One thing to do, drained with [`GateCore::poll_output`](crate::GateCore::poll_output).
///
/// About 1 KiB because of the frame it may carry: there is no allocator to box it, and
/// only one is held at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Send this sealed frame to the hub (raw TCP: as is; MQTT: as one payload).
    Transmit(Transmit),
    /// Energise the door relay for `open_ms`, then release it (the board times the pulse).
    Relay { open_ms: u16 },
    /// Show the reader's LED / beeper state.
    Signal(Signal),
    /// An access decision was taken (for the board's own log or display).
    Decided(Decided),
    /// An offline decision was appended to the log: persist it if the board keeps the log
    /// across reboots (restore it with [`GateCore::restore_offline`](crate::GateCore::restore_offline)).
    LogOffline(OfflineEntry),
    /// The hub stored every offline entry up to this `gate_seq`: the board may forget them.
    OfflineAcked { up_to_gate_seq: u32 },
}

/// A sealed frame for the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub msg_type: MessageType,
    pub seq: u32,
    pub bytes: Vec<u8, MAX_FRAME_LEN>,
}

/// Reader feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// A card was read and the gate waits for the hub.
    Waiting,
    Granted,
    Denied,
}

/// The outcome of one card read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// The request's sequence number (the offline entry's `gate_seq` when offline).
    pub seq: u32,
    pub allowed: bool,
    /// `None` when the hub sent an authenticated reason code this gate does not know,
    /// which is a deny (fail closed).
    pub reason: Option<Reason>,
    /// Decided by the gate from its allow-list.
    pub offline: bool,
}
