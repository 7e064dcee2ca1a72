//! The gate controller's logic, `no_std`, without an allocator and without I/O.
//!
//! [`GateCore`] is a state machine in the style of boringtun's `Tunn` and rustls: the board
//! (or the host simulator) feeds it what happened, with the current time, and drains what
//! to do with [`GateCore::poll_output`]:
//!
//! | input | method |
//! |---|---|
//! | a card was read | [`GateCore::card_read`] |
//! | bytes of one frame arrived from the hub | [`GateCore::frame_received`] |
//! | the door contact changed | [`GateCore::door_contact`] |
//! | the exit button was pressed | [`GateCore::exit_button`] |
//! | the tamper switch changed | [`GateCore::tamper`] |
//! | the transport connected / lost its connection | [`GateCore::link_up`] / [`GateCore::link_down`] |
//! | time passed | [`GateCore::tick`] (at the latest at [`GateCore::poll_at`]) |
//!
//! Outputs ([`Output`]): sealed frames to send to the hub, relay pulses, signals for the
//! LEDs and beeper, offline decisions to persist, acknowledgements of uploaded offline
//! entries. Time is only ever an argument ([`Now`]): tests move a fake clock.
//!
//! What the core promises:
//! - a card read becomes an [`AccessRequest`](gatehouse_gate_proto::AccessRequest) and,
//!   within [`GateConfig::request_timeout_ms`], a decision: the hub's if a valid one came,
//!   otherwise the allow-list's, which is logged for upload;
//! - a reply is believed only if its tag verifies with the gate's key and its `seq` is
//!   that of a request still waiting for an answer (see [`gate`] for why this is the
//!   replay protection of replies);
//! - offline entries leave the log only when the hub acknowledged them;
//! - nothing panics on any input; bounded queues drop the oldest item and count it
//!   ([`Stats`]).
#![cfg_attr(not(test), no_std)]

mod allow_list;
mod clock;
mod config;
pub mod gate;
mod offline_log;
mod output;

pub use allow_list::{AllowList, EntryScheme, HmacEntryScheme};
pub use clock::Now;
pub use config::GateConfig;
pub use gate::{GateCore, RxError, Stats};
pub use offline_log::OfflineLog;
pub use output::{Decided, Output, Signal, Transmit};

/// Re-exported so boards and simulators use the same version of the gate link.
pub use gatehouse_gate_proto as proto;
