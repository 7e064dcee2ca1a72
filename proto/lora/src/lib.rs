//! The LoRa link: what battery sensor nodes and the hub say to each other through the
//! packet forwarder, defined once and used by both (the hub and the forwarder on the host,
//! the node firmware without `std` and without an allocator).
//!
//! - [`frame`]: the frame ([`Frame`], byte layout in its docs), sealed with the node's
//!   AES-128 key ([`seal`]), opened and checked ([`open`]), or its header read without the
//!   key ([`peek`]).
//! - [`payload`]: the four messages ([`Report`], [`Alarm`], [`Heartbeat`], [`Downlink`])
//!   and their encodings.
//! - [`link`]: the receive-window timing ([`link::RX1_DELAY_US`], [`link::RX_WINDOW_US`]).
//! - [`airtime`]: time on air of a frame ([`Modulation::airtime_us`]).
//! - [`duty`]: EU868 sub-bands and their duty-cycle limits ([`SubBand`]), and the sliding
//!   hour budget every transmitter keeps ([`DutyBudget`]).
//! - `air` (feature `air`, std): the simulated radio for tests and the node simulator.
//!
//! Receiving: `peek(bytes)?` -> key of `header.dev_addr` -> `open(bytes, &key, Dir::Up)?`
//! -> fcnt above the highest accepted. Sending: `seal(&frame, &key, dir, &mut buf)?`.
//! Nothing here panics on any input.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

#[cfg(feature = "air")]
pub mod air;
pub mod airtime;
pub mod duty;
mod error;
pub mod frame;
pub mod link;
pub mod payload;

pub use airtime::{Modulation, ModulationError};
pub use duty::{DutyBudget, Priority, SubBand};
pub use error::FrameError;
pub use frame::{
    open, peek, seal, DevAddr, Dir, Frame, Header, Key, MType, MAX_FRAME_LEN, MAX_PAYLOAD, MIC_LEN,
    MIN_FRAME_LEN,
};
/// The bounded collections the messages use, for building them.
pub use heapless;
pub use payload::{
    Alarm, AlarmKind, Command, Downlink, Heartbeat, Payload, Quantity, Reading, Report,
    MAX_READINGS,
};
