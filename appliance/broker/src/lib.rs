//! Provisioning and running the local mosquitto, the MQTT broker of the gate link and of
//! the NVRs' Frigate messages.
//!
//! The hub owns the broker's security files: it writes the password file (in mosquitto's
//! own `$7$` PBKDF2-SHA512 format, see [`passwd`]), an ACL that lets each gate and each
//! NVR reach only its own topics (see [`acl`]), and `mosquitto.conf` (see [`conf`]), all through one
//! [`Provisioning`]. [`Mosquitto`] runs the real broker as a child process for `make run`
//! and for tests: on a free loopback port, ready when it accepts connections, reloaded
//! with SIGHUP when gates are added or removed, killed and reaped when dropped.
//!
//! Promises:
//! - every file is written atomically (temporary file, fsync, rename) with mode 0600;
//! - names and topics that would change the meaning of a generated file (newlines,
//!   `:` in user names, MQTT wildcards in topics) are refused, never written;
//! - a gate account's ACL grants exactly: write on the request topic, read on its own
//!   response topic; nothing else (mosquitto grants a user with ACL lines only those);
//! - an NVR account's ACL grants exactly read and write on `<its prefix>/#`; the hub reads
//!   `<prefix>/events` and `<prefix>/reviews` of every NVR; prefixes never overlap each
//!   other or the gate link's topics.

pub mod acl;
pub mod conf;
mod error;
mod os;
pub mod passwd;
mod provision;
mod runner;

pub use acl::{check_nvr_prefix, Topics};
pub use conf::{BrokerConfig, Persistence};
pub use error::BrokerError;
pub use provision::{random_password, Account, BrokerFiles, GateAccount, NvrAccount, Provisioning};
pub use runner::{Mosquitto, MosquittoOptions};

/// Result alias for this crate.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
