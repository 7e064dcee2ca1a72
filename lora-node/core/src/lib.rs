//! The LoRa sensor node's logic, `no_std`, without an allocator and without I/O.
//!
//! [`Node`] is a sans-IO state machine in the style of boringtun's `Tunn`: the board (an
//! nRF52840 or STM32WL binary, or the host simulator `lora-sim`) feeds it sensor changes
//! ([`Node::input`]) and radio outcomes ([`Node::tx_done`], [`Node::received`]) with the
//! current time, and asks [`Node::poll`] what to do: transmit a sealed frame, listen in the
//! receive window, or sleep until a time. [`node`]'s docs are the specification.
//!
//! The wire format, the airtime and the EU868 duty-cycle budget come from
//! `gatehouse-lora-proto` (re-exported as [`proto`]); the uplink frame counter and the
//! downlink replay floor survive reboots through the board's [`Storage`] ([`storage`]:
//! blocks of [`FCNT_SKIP`] and [`FCNT_DOWN_SKIP`] reserved ahead).
//!
//! The behaviour tests are in [`scenarios`] (feature `scenarios`): `cargo test` runs them
//! on the host and `lora-node/qemu-tests` runs the same functions on a Cortex-M4 under
//! QEMU.
#![cfg_attr(not(test), no_std)]

mod config;
pub mod flash_log;
pub mod node;
mod rng;
#[cfg(feature = "scenarios")]
pub mod scenarios;
pub mod storage;

pub use config::{ConfigError, NodeConfig, RadioParams, SensorKind, TEMPERATURE_HYSTERESIS};
pub use flash_log::FlashLog;
pub use node::{Action, Event, Input, Node, RxError, Stats, Transmit, MAX_ALARMS};
pub use storage::{MemStorage, Storage, StorageError, Stored, FCNT_DOWN_SKIP, FCNT_SKIP};

/// Re-exported so boards and the simulator use the same version of the link.
pub use gatehouse_lora_proto as proto;
