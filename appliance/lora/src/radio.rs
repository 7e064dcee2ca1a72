//! What the forwarder needs from a radio: receive a frame, transmit one at a given time,
//! and a monotonic microsecond clock that both share ([`Radio`]).

use std::time::Instant;

/// A frame the radio received.
#[derive(Debug, Clone, PartialEq)]
pub struct RxPacket {
    pub bytes: Vec<u8>,
    /// Received signal strength, dBm.
    pub rssi: i16,
    /// Signal-to-noise ratio, dB.
    pub snr: f32,
    pub freq_hz: u32,
    pub sf: u8,
    pub bw_hz: u32,
    /// The radio's clock ([`Radio::now_us`]) at the end of reception, µs.
    pub end_us: u64,
}

/// A transmission the forwarder asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRequest {
    /// When to start, on the radio's clock, µs.
    pub at_us: u64,
    pub freq_hz: u32,
    pub sf: u8,
    pub bw_hz: u32,
    pub bytes: Vec<u8>,
    /// Time on air (computed by the forwarder from the modulation and length).
    pub airtime_us: u32,
}

/// What a transmission did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxResult {
    /// When it started, on the radio's clock, µs.
    pub start_us: u64,
    pub airtime_us: u32,
}

/// Why a radio operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RadioError {
    #[error("simulated air: {0}")]
    Air(#[source] std::io::Error),
    #[error("SX1262: {0}")]
    Sx1262(String),
    #[error("the radio stopped")]
    Closed,
    #[error("{0}")]
    Setup(String),
}

/// A half-duplex LoRa radio listening on one channel.
///
/// `receive` must be cancel-safe in the sense the forwarder needs: it is dropped when a
/// transmission is due, and called again afterwards; a frame arriving meanwhile may be
/// lost (the radio was about to transmit anyway).
#[allow(async_fn_in_trait)]
pub trait Radio {
    /// Waits for the next frame on the listening channel.
    async fn receive(&mut self) -> Result<RxPacket, RadioError>;
    /// Transmits `tx.bytes` at `tx.at_us` (now if that has passed), then listens again.
    async fn transmit(&mut self, tx: &TxRequest) -> Result<TxResult, RadioError>;
    /// The radio's monotonic clock, µs: `RxPacket::end_us` and `TxRequest::at_us` are on it.
    fn now_us(&self) -> u64;
}

/// A monotonic microsecond clock starting at 0 when made (for radios without a shared
/// clock of their own).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock(Instant::now())
    }
}

impl MonotonicClock {
    /// Microseconds since the clock was made.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}
