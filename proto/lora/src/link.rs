//! Timing of the link shared by the node, the forwarder and the hub.
//!
//! After every uplink the node opens one receive window (class A style, a single RX1):
//! it starts [`RX1_DELAY_US`] after the end of the uplink, on the uplink's frequency and
//! spreading factor, and stays open for [`RX_WINDOW_US`]. The hub answers a confirmed
//! uplink by asking the forwarder to transmit at `rx_us + RX1_DELAY_US`, where `rx_us` is
//! the forwarder's clock at the end of reception.

/// Microseconds from the end of an uplink to the start of the node's receive window
/// (1 s, as LoRaWAN's RECEIVE_DELAY1 default).
pub const RX1_DELAY_US: u64 = 1_000_000;

/// Microseconds the node listens for the start of a downlink (preamble) in its window
/// (200 ms: room for the forwarder's clock jitter in the simulation).
pub const RX_WINDOW_US: u64 = 200_000;
