//! Gatehouse's WireGuard endpoint.
//!
//! boringtun's `noise::Tunn` does the protocol (handshakes, sessions, timers); everything
//! around it is ours: the peer table and allowed-IPs routing, roles, the two data planes
//! (a kernel TUN device, or an in-process smoltcp stack), the cross-platform UAPI socket
//! that `wg` talks to, and the peer store in WireGuard's own config format.

pub mod keys;

pub use keys::{Key, KeyError};
pub mod allowed_ips;
pub mod device;
pub mod policy;
pub mod dataplane;
pub mod netstack;
pub mod tun;
pub mod udp;
pub mod firewall;
