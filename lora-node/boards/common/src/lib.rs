//! The board side of a sensor node, shared by the nRF52840 and STM32WL binaries: [`run`]
//! drives `lora_node_core::Node` with a lora-phy radio, embassy-time and the board's
//! [`Sensors`]; [`Provisioning`] is what `gatehouse sensor add` printed, compiled in
//! (`build_support.rs` turns the file named by `LORA_NODE_PROVISIONING` into constants).
//!
//! Radio settings follow the forwarder (appliance/lora `sx1262.rs`): explicit header, CRC
//! on, IQ not inverted, 8 preamble symbols, both directions on the node's channel.
#![no_std]
#![allow(async_fn_in_trait)]

pub mod sensors;

use embassy_futures::select::{select, Either};
use embassy_time::{Instant, Timer};
use lora_node_core::proto::{DevAddr, Key, Modulation};
use lora_node_core::{Action, Event, Node, NodeConfig, RadioParams, SensorKind, Storage};
use lora_phy::mod_params::{
    Bandwidth, CodingRate, ModulationParams, PacketParams, RadioError, RxMode, SpreadingFactor,
};
use lora_phy::mod_traits::RadioKind;
use lora_phy::{DelayNs, LoRa};

/// The node's identity and channel, as `gatehouse sensor add` prints them.
pub struct Provisioning {
    pub kind: &'static str,
    pub dev_addr: u32,
    pub key: [u8; 16],
    pub frequency_hz: u32,
    pub spreading_factor: u8,
    pub bandwidth_hz: u32,
    pub heartbeat_s: u16,
}

impl Provisioning {
    /// The core's configuration (default policy); an unknown kind is a door contact.
    pub fn config(&self) -> NodeConfig {
        let mut config = NodeConfig::new(
            DevAddr(self.dev_addr),
            Key(self.key),
            SensorKind::parse(self.kind).unwrap_or(SensorKind::Door),
            RadioParams {
                freq_hz: self.frequency_hz,
                modulation: Modulation::lora(self.spreading_factor, self.bandwidth_hz),
            },
        );
        config.heartbeat_s = self.heartbeat_s;
        config
    }
}

/// The board's sensors: GPIO inputs (and the battery ADC) read as data.
pub trait Sensors {
    /// Returns when an input may have changed (an edge on any sensor pin).
    async fn wait_change(&mut self);
    /// Reads every sensor (debounced by the caller's short wait) and feeds changes to the
    /// node with [`Node::input`].
    async fn sample<S: Storage>(&mut self, now_ms: u64, node: &mut Node<S>);
}

/// Debounce time between an edge and reading the pins.
pub const DEBOUNCE_MS: u64 = 20;
/// Transmit power (dBm): 14 dBm ERP is the EU868 limit of the 868.0-868.6 MHz band.
pub const TX_POWER_DBM: i32 = 14;

fn now_ms() -> u64 {
    Instant::now().as_millis()
}

fn lora_params<RK: RadioKind, DLY: DelayNs>(
    lora: &mut LoRa<RK, DLY>,
    freq_hz: u32,
    m: &Modulation,
) -> Result<(ModulationParams, PacketParams, PacketParams), RadioError> {
    let sf = match m.sf {
        7 => SpreadingFactor::_7,
        8 => SpreadingFactor::_8,
        9 => SpreadingFactor::_9,
        10 => SpreadingFactor::_10,
        11 => SpreadingFactor::_11,
        _ => SpreadingFactor::_12,
    };
    let bw = match m.bw_hz {
        250_000 => Bandwidth::_250KHz,
        500_000 => Bandwidth::_500KHz,
        _ => Bandwidth::_125KHz,
    };
    let cr = match m.cr {
        2 => CodingRate::_4_6,
        3 => CodingRate::_4_7,
        4 => CodingRate::_4_8,
        _ => CodingRate::_4_5,
    };
    let mp = lora.create_modulation_params(sf, bw, cr, freq_hz)?;
    let tx = lora.create_tx_packet_params(m.preamble, !m.explicit_header, m.crc, false, &mp)?;
    let rx =
        lora.create_rx_packet_params(m.preamble, !m.explicit_header, 255, m.crc, false, &mp)?;
    Ok((mp, tx, rx))
}

/// Runs the node forever: poll, transmit, listen in the receive window, sleep until the
/// next deadline or a sensor edge.
pub async fn run<RK, DLY, S, SN>(mut lora: LoRa<RK, DLY>, mut node: Node<S>, mut sensors: SN) -> !
where
    RK: RadioKind,
    DLY: DelayNs,
    S: Storage,
    SN: Sensors,
{
    let mut buf = [0u8; 255];
    sensors.sample(now_ms(), &mut node).await;
    loop {
        match node.poll(now_ms()) {
            Action::Transmit(tx) => {
                let sent = match lora_params(&mut lora, tx.freq_hz, &tx.modulation) {
                    Ok((mp, mut pp, _)) => {
                        match lora
                            .prepare_for_tx(&mp, &mut pp, TX_POWER_DBM, &tx.bytes)
                            .await
                        {
                            Ok(()) => lora.tx().await,
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(()) => node.tx_done(now_ms()),
                    Err(e) => {
                        defmt::warn!("transmit failed: {}", defmt::Debug2Format(&e));
                        node.tx_failed(now_ms());
                    }
                }
            }
            Action::Listen {
                freq_hz,
                modulation,
                until_ms,
            } => {
                let received = match lora_params(&mut lora, freq_hz, &modulation) {
                    Ok((mp, _, rp)) => {
                        match lora.prepare_for_rx(RxMode::Continuous, &mp, &rp).await {
                            Ok(()) => {
                                match select(
                                    lora.rx(&rp, &mut buf),
                                    Timer::at(Instant::from_millis(until_ms)),
                                )
                                .await
                                {
                                    Either::First(r) => Some(r),
                                    Either::Second(()) => None,
                                }
                            }
                            Err(e) => Some(Err(e)),
                        }
                    }
                    Err(e) => Some(Err(e)),
                };
                match received {
                    Some(Ok((len, status))) => {
                        let snr = status.snr.clamp(i16::from(i8::MIN), i16::from(i8::MAX)) as i8;
                        let bytes = buf.get(..usize::from(len)).unwrap_or(&[]);
                        if let Err(e) = node.received(now_ms(), bytes, status.rssi, snr) {
                            defmt::info!("downlink refused: {}", defmt::Display2Format(&e));
                        }
                    }
                    Some(Err(e)) => {
                        defmt::warn!("receive failed: {}", defmt::Debug2Format(&e));
                        Timer::at(Instant::from_millis(until_ms)).await;
                    }
                    None => {}
                }
                let _ = lora.enter_standby().await;
            }
            Action::Sleep { until_ms } => {
                let _ = lora.sleep(true).await;
                let until = Instant::from_millis(until_ms);
                if let Either::Second(()) = select(Timer::at(until), sensors.wait_change()).await {
                    Timer::after_millis(DEBOUNCE_MS).await;
                }
                sensors.sample(now_ms(), &mut node).await;
            }
        }
        while let Some(event) = node.event() {
            log_event(&event);
        }
    }
}

fn log_event(event: &Event) {
    match *event {
        Event::AlarmAcked {
            alarm_id, attempts, ..
        } => {
            defmt::info!(
                "alarm {} acknowledged after {} transmissions",
                alarm_id,
                attempts
            )
        }
        Event::AlarmGaveUp {
            alarm_id, attempts, ..
        } => {
            defmt::warn!(
                "alarm {} not acknowledged after {} transmissions: gave up",
                alarm_id,
                attempts
            )
        }
        Event::AlarmDropped { .. } => defmt::warn!("alarm queue full: oldest unsent alarm dropped"),
        Event::HeartbeatIntervalChanged { seconds } => {
            defmt::info!("heartbeat interval set to {} s by the hub", seconds)
        }
        Event::StorageFailed(_) => defmt::error!("storing the frame counter failed: not sending"),
        Event::CountersExhausted => {
            defmt::error!("frame counter exhausted: provision the node again")
        }
    }
}
