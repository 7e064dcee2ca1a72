//! The gate link: what gate controllers and the hub say to each other, defined once and
//! used by both (the hub with `std`/`serde`, the gate firmware without, and without an
//! allocator).
//!
//! - [`message`]: one plain struct per message ([`AccessRequest`], [`Decision`], ...),
//!   which with the `serde` feature are also the JSON bodies of the HTTP transport.
//! - [`frame`]: the binary frame of the raw-TCP and MQTT transports ([`Frame`], [`Repr`]),
//!   with its byte layout.
//! - [`auth`]: the per-gate HMAC tag ([`seal`], [`verify`]) and [`ReplayWindow`].
//! - [`decoder`]: [`FrameDecoder`], which cuts a TCP stream into frames.
//!
//! Receiving a frame: `Frame::new_checked(bytes)?`, look up the key of
//! `frame.gate_id()`, `verify(&key, &frame)?`, `Repr::parse(&frame)?`, then the replay
//! check on the sender's side. Sending: `repr.emit_sealed(&key, &mut buf)?`. Every error
//! maps to the [`ErrorCode`] the peer gets ([`Error::reply_code`]).
#![cfg_attr(not(any(feature = "std", test)), no_std)]

pub mod auth;
mod card;
pub mod decoder;
mod error;
pub mod frame;
pub mod message;
mod reason;

pub use auth::{seal, verify, GateKey, ReplayWindow, KEY_LEN};
pub use card::{CardId, EntryHash};
pub use decoder::FrameDecoder;
pub use error::Error;
pub use frame::{Frame, MessageType, Repr, MAX_FRAME_LEN, MAX_PAYLOAD_LEN, MIN_FRAME_LEN};
/// The bounded collections the messages use, for building them.
pub use heapless;
pub use message::{
    AccessRequest, AllowListDelta, AllowListRequest, Decision, DoorEvent, DoorEventKind, ErrorCode,
    ErrorReply, Heartbeat, HeartbeatFlags, Message, OfflineAck, OfflineBatch, OfflineEntry,
    RemoteOpen, Tamper, MAX_DELTA_ENTRIES, MAX_OFFLINE_ENTRIES,
};
pub use reason::Reason;
