//! [`SimRadio`]: the forwarder's radio on the simulated air
//! (`gatehouse_lora_proto::air`), so it shares the air's clock and rules with the
//! simulated nodes.

use crate::radio::{Radio, RadioError, RxPacket, TxRequest, TxResult};
use gatehouse_lora_proto::air::AirClient;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the receiving thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// A radio on the simulated air, listening on one channel. A thread reads the air and
/// hands frames to [`Radio::receive`] (so receiving is cancel-safe: nothing is lost when
/// a `receive` is dropped).
#[derive(Debug)]
pub struct SimRadio {
    client: Arc<AirClient>,
    bw_hz: u32,
    frames: mpsc::UnboundedReceiver<RxPacket>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimRadio {
    /// Registers with the air at `air` to listen on `freq_hz`/`sf` (`bw_hz` is reported
    /// with each frame: the air has no bandwidths). Blocking (a loopback round trip, or
    /// a few seconds when the air does not answer).
    pub fn connect(
        air: SocketAddr,
        freq_hz: u32,
        sf: u8,
        bw_hz: u32,
    ) -> Result<SimRadio, RadioError> {
        let client = Arc::new(AirClient::connect(air, freq_hz, sf).map_err(RadioError::Air)?);
        let (tx, frames) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&client), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("lora-sim-rx".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match c.recv_timeout(POLL) {
                        Ok(Some(p)) => {
                            let packet = RxPacket {
                                bytes: p.bytes,
                                rssi: p.rssi,
                                snr: p.snr,
                                freq_hz: p.freq_hz,
                                sf: p.sf,
                                bw_hz,
                                end_us: p.end_us,
                            };
                            if tx.send(packet).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the simulated air");
                            std::thread::sleep(POLL);
                        }
                    }
                }
            })
            .map_err(RadioError::Air)?;
        Ok(SimRadio {
            client,
            bw_hz,
            frames,
            stop,
            thread: Some(thread),
        })
    }

    /// The bandwidth reported with received frames.
    pub fn bw_hz(&self) -> u32 {
        self.bw_hz
    }
}

impl Radio for SimRadio {
    async fn receive(&mut self) -> Result<RxPacket, RadioError> {
        self.frames.recv().await.ok_or(RadioError::Closed)
    }

    async fn transmit(&mut self, tx: &TxRequest) -> Result<TxResult, RadioError> {
        let start_us = tx.at_us.max(self.client.now_us());
        // The air starts it at `at_us` itself (or when it reads the datagram, if later).
        self.client
            .send_at(start_us, tx.freq_hz, tx.sf, &tx.bytes, tx.airtime_us)
            .map_err(RadioError::Air)?;
        // Half duplex: the radio is busy until the transmission ended.
        let end = start_us + u64::from(tx.airtime_us);
        let wait = end.saturating_sub(self.client.now_us());
        tokio::time::sleep(Duration::from_micros(wait)).await;
        Ok(TxResult {
            start_us,
            airtime_us: tx.airtime_us,
        })
    }

    fn now_us(&self) -> u64 {
        self.client.now_us()
    }
}

impl Drop for SimRadio {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
