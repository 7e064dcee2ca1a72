//! Gatehouse's WireGuard endpoint.
//!
//! boringtun's `noise::Tunn` does the protocol (handshakes, sessions, timers); everything
//! around it is ours: the peer table and allowed-IPs routing, roles, the two data planes
//! (a kernel TUN device, or an in-process smoltcp stack), the cross-platform UAPI socket
//! that `wg` talks to, and the peer store in WireGuard's own config format.

pub mod keys;

pub use keys::{Key, KeyError};
pub mod admin;
pub mod allowed_ips;
pub mod client_config;
pub mod control;
pub mod dataplane;
pub mod device;
pub mod events;
pub mod firewall;
pub mod gateway_key;
pub mod netstack;
pub mod offload;
pub mod peer_store;
pub mod policy;
pub mod service;
#[cfg(any(test, feature = "fake-clock"))]
pub mod testing;
pub mod tun;
pub mod uapi;
pub mod udp;
pub mod wg_compat;
