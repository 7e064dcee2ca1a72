//! [`Sx1262Radio`]: an SX1262 driven from Linux userspace with lora-phy 3 (see
//! TOOLCHAIN.md, "SX1262 from Linux userspace").
//!
//! - SPI: `/dev/spidevB.C` through linux-embedded-hal's `SpidevBus`, opened with
//!   `SPI_NO_CS`; chip select is a GPIO line driven by embedded-hal-bus's
//!   `ExclusiveDevice`, as on the common Pi HATs (CS on GPIO 21). lora-phy wants an async
//!   `SpiDevice`: [`BlockingSpi`] runs the blocking one in place (an SX1262 command is one
//!   short ioctl, a few tens of microseconds at 2 MHz).
//! - RESET is a GPIO output; BUSY and DIO1 are GPIO inputs with async edge waits
//!   (gpiocdev-embedded-hal's tokio `InputPin`). DIO2 drives the RF switch by itself
//!   (lora-phy turns that on for the SX1262), DIO3 the TCXO at 1.7 V.
//! - The modem: explicit header, CRC on, 8 preamble symbols, coding rate 4/5, normal IQ
//!   both ways and the private sync word (0x12), as the lora-node firmware uses
//!   (`gatehouse_lora_proto::Modulation::lora`).
//! - The clock is this process's monotonic clock ([`MonotonicClock`]); `end_us` of a
//!   frame is read when lora-phy reports RxDone.
//!
//! Pins, SPI device and clock come from `[lora]` ([`open`]); the driver itself is generic
//! over the embedded-hal traits, so the tests run it against a fake SX1262.

use crate::radio::{MonotonicClock, Radio, RadioError, RxPacket, TxRequest, TxResult};
use embedded_hal::spi::{ErrorType, Operation};
use embedded_hal_async::delay::DelayNs;
use lora_phy::mod_params::{
    Bandwidth, CodingRate, ModulationParams, PacketParams, SpreadingFactor,
};
use lora_phy::mod_traits::InterfaceVariant;
use lora_phy::sx126x::{self, Sx1262, Sx126x, TcxoCtrlVoltage};
use lora_phy::{LoRa, RxMode};
use std::time::Duration;

/// Preamble symbols on this link (LoRaWAN's 8).
pub const PREAMBLE: u16 = 8;

/// An async [`embedded_hal_async::spi::SpiDevice`] over a blocking
/// [`embedded_hal::spi::SpiDevice`]: each transaction runs to completion when polled.
#[derive(Debug)]
pub struct BlockingSpi<D>(pub D);

impl<D: ErrorType> ErrorType for BlockingSpi<D> {
    type Error = D::Error;
}

impl<D: embedded_hal::spi::SpiDevice> embedded_hal_async::spi::SpiDevice for BlockingSpi<D> {
    async fn transaction(
        &mut self,
        operations: &mut [Operation<'_, u8>],
    ) -> Result<(), Self::Error> {
        self.0.transaction(operations)
    }
}

/// The channel and power of the radio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sx1262Settings {
    /// The listening channel.
    pub freq_hz: u32,
    pub sf: u8,
    pub bw_hz: u32,
    /// Transmit power, dBm.
    pub tx_power_dbm: i32,
}

fn phy_err(e: lora_phy::mod_params::RadioError) -> RadioError {
    RadioError::Sx1262(format!("{e:?}"))
}

fn spreading_factor(sf: u8) -> Result<SpreadingFactor, RadioError> {
    Ok(match sf {
        7 => SpreadingFactor::_7,
        8 => SpreadingFactor::_8,
        9 => SpreadingFactor::_9,
        10 => SpreadingFactor::_10,
        11 => SpreadingFactor::_11,
        12 => SpreadingFactor::_12,
        _ => {
            return Err(RadioError::Setup(format!(
                "spreading factor {sf} is not 7 to 12"
            )))
        }
    })
}

fn bandwidth(bw_hz: u32) -> Result<Bandwidth, RadioError> {
    Ok(match bw_hz {
        125_000 => Bandwidth::_125KHz,
        250_000 => Bandwidth::_250KHz,
        500_000 => Bandwidth::_500KHz,
        _ => {
            return Err(RadioError::Setup(format!(
                "bandwidth {bw_hz} Hz is not 125000, 250000 or 500000"
            )))
        }
    })
}

/// An SX1262 through lora-phy, listening continuously on one channel between
/// transmissions.
pub struct Sx1262Radio<SPI, IV, DLY>
where
    SPI: embedded_hal_async::spi::SpiDevice<u8>,
    IV: InterfaceVariant,
    DLY: DelayNs,
{
    lora: LoRa<Sx126x<SPI, IV, Sx1262>, DLY>,
    settings: Sx1262Settings,
    clock: MonotonicClock,
    /// Whether the chip is in continuous receive on the listening channel.
    listening: bool,
    buf: [u8; 255],
}

impl<SPI, IV, DLY> std::fmt::Debug for Sx1262Radio<SPI, IV, DLY>
where
    SPI: embedded_hal_async::spi::SpiDevice<u8>,
    IV: InterfaceVariant,
    DLY: DelayNs,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sx1262Radio")
            .field("settings", &self.settings)
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl<SPI, IV, DLY> Sx1262Radio<SPI, IV, DLY>
where
    SPI: embedded_hal_async::spi::SpiDevice<u8>,
    IV: InterfaceVariant,
    DLY: DelayNs,
{
    /// Resets and initialises the chip (LoRa mode, private sync word, TCXO on DIO3).
    pub async fn new(
        spi: SPI,
        iv: IV,
        delay: DLY,
        settings: Sx1262Settings,
    ) -> Result<Self, RadioError> {
        spreading_factor(settings.sf)?;
        bandwidth(settings.bw_hz)?;
        let config = sx126x::Config {
            chip: Sx1262,
            tcxo_ctrl: Some(TcxoCtrlVoltage::Ctrl1V7),
            use_dcdc: true,
            rx_boost: false,
        };
        let lora = LoRa::new(Sx126x::new(spi, iv, config), false, delay)
            .await
            .map_err(phy_err)?;
        Ok(Sx1262Radio {
            lora,
            settings,
            clock: MonotonicClock::default(),
            listening: false,
            buf: [0; 255],
        })
    }

    fn modulation(
        &mut self,
        freq_hz: u32,
        sf: u8,
        bw_hz: u32,
    ) -> Result<ModulationParams, RadioError> {
        self.lora
            .create_modulation_params(
                spreading_factor(sf)?,
                bandwidth(bw_hz)?,
                CodingRate::_4_5,
                freq_hz,
            )
            .map_err(phy_err)
    }

    fn rx_packet_params(&mut self, m: &ModulationParams) -> Result<PacketParams, RadioError> {
        self.lora
            .create_rx_packet_params(PREAMBLE, false, 255, true, false, m)
            .map_err(phy_err)
    }
}

impl<SPI, IV, DLY> Radio for Sx1262Radio<SPI, IV, DLY>
where
    SPI: embedded_hal_async::spi::SpiDevice<u8>,
    IV: InterfaceVariant,
    DLY: DelayNs,
{
    async fn receive(&mut self) -> Result<RxPacket, RadioError> {
        let s = self.settings;
        let m = self.modulation(s.freq_hz, s.sf, s.bw_hz)?;
        let p = self.rx_packet_params(&m)?;
        if !self.listening {
            self.lora
                .prepare_for_rx(RxMode::Continuous, &m, &p)
                .await
                .map_err(phy_err)?;
            self.listening = true;
        }
        let (len, status) = match self.lora.rx(&p, &mut self.buf).await {
            Ok(x) => x,
            Err(e) => {
                // Prepared again next time (a CRC error leaves continuous mode on, but
                // re-preparing is cheap and always right).
                self.listening = false;
                return Err(phy_err(e));
            }
        };
        let end_us = self.clock.now_us();
        Ok(RxPacket {
            bytes: self.buf[..usize::from(len)].to_vec(),
            rssi: status.rssi,
            snr: f32::from(status.snr),
            freq_hz: s.freq_hz,
            sf: s.sf,
            bw_hz: s.bw_hz,
            end_us,
        })
    }

    async fn transmit(&mut self, tx: &TxRequest) -> Result<TxResult, RadioError> {
        self.listening = false;
        let m = self.modulation(tx.freq_hz, tx.sf, tx.bw_hz)?;
        let mut p = self
            .lora
            .create_tx_packet_params(PREAMBLE, false, true, false, &m)
            .map_err(phy_err)?;
        self.lora
            .prepare_for_tx(&m, &mut p, self.settings.tx_power_dbm, &tx.bytes)
            .await
            .map_err(phy_err)?;
        let now = self.clock.now_us();
        if tx.at_us > now {
            tokio::time::sleep(Duration::from_micros(tx.at_us - now)).await;
        }
        let start_us = self.clock.now_us();
        self.lora.tx().await.map_err(phy_err)?;
        Ok(TxResult {
            start_us,
            airtime_us: tx.airtime_us,
        })
    }

    fn now_us(&self) -> u64 {
        self.clock.now_us()
    }
}

/// The SX1262 on the box: spidev + GPIO character device, as `[lora]` says.
pub type LinuxSx1262 = Sx1262Radio<
    BlockingSpi<
        embedded_hal_bus::spi::ExclusiveDevice<
            linux_embedded_hal::SpidevBus,
            gpiocdev_embedded_hal::OutputPin,
            linux_embedded_hal::Delay,
        >,
    >,
    lora_phy::iv::GenericSx126xInterfaceVariant<
        gpiocdev_embedded_hal::OutputPin,
        gpiocdev_embedded_hal::tokio::InputPin,
    >,
    linux_embedded_hal::Delay,
>;

/// Opens the SPI device and GPIO lines named in `[lora]` and initialises the chip.
/// Errors name the device or line and the config key to fix.
pub async fn open(cfg: &gatehouse_config::Lora) -> Result<LinuxSx1262, RadioError> {
    use embedded_hal::digital::PinState;
    use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
    let setup = |what: String| RadioError::Setup(what);
    let mut bus = linux_embedded_hal::SpidevBus::open(&cfg.spi).map_err(|e| {
        setup(format!(
            "cannot open the SPI device {} (lora.spi): {e}; is SPI enabled (dtparam=spi=on) and is this user in the spi group?",
            cfg.spi.display()
        ))
    })?;
    let options = SpidevOptions::new()
        .bits_per_word(8)
        .max_speed_hz(cfg.spi_hz)
        .mode(SpiModeFlags::SPI_MODE_0 | SpiModeFlags::SPI_NO_CS)
        .build();
    bus.configure(&options).map_err(|e| {
        setup(format!(
            "cannot configure {} (lora.spi) for mode 0 without kernel chip select at {} Hz: {e}",
            cfg.spi.display(),
            cfg.spi_hz
        ))
    })?;
    let chip = &cfg.gpio_chip;
    let line_err = |key: &str, line: u32, e: gpiocdev_embedded_hal::Error| {
        setup(format!(
            "cannot claim GPIO line {line} ({key}) on {}: {e}; check lora.gpio_chip and lora.{key}, and that this user is in the gpio group",
            chip.display()
        ))
    };
    let cs = gpiocdev_embedded_hal::OutputPin::new(chip, cfg.cs, PinState::High)
        .map_err(|e| line_err("cs", cfg.cs, e))?;
    let reset = gpiocdev_embedded_hal::OutputPin::new(chip, cfg.reset, PinState::High)
        .map_err(|e| line_err("reset", cfg.reset, e))?;
    let busy = gpiocdev_embedded_hal::tokio::InputPin::new(chip, cfg.busy)
        .map_err(|e| line_err("busy", cfg.busy, e))?;
    let dio1 = gpiocdev_embedded_hal::tokio::InputPin::new(chip, cfg.dio1)
        .map_err(|e| line_err("dio1", cfg.dio1, e))?;
    let device = embedded_hal_bus::spi::ExclusiveDevice::new(bus, cs, linux_embedded_hal::Delay)
        .map_err(|e| line_err("cs", cfg.cs, e))?;
    let iv = lora_phy::iv::GenericSx126xInterfaceVariant::new(reset, dio1, busy, None, None)
        .map_err(phy_err)?;
    Sx1262Radio::new(
        BlockingSpi(device),
        iv,
        linux_embedded_hal::Delay,
        Sx1262Settings {
            freq_hz: cfg.frequency_hz,
            sf: cfg.spreading_factor,
            bw_hz: cfg.bandwidth_hz,
            tx_power_dbm: i32::from(cfg.tx_power_dbm),
        },
    )
    .await
    .map_err(|e| match e {
        RadioError::Sx1262(detail) => setup(format!(
            "the SX1262 on {} did not initialise ({detail}); check the wiring and lora.reset/busy/dio1/cs",
            cfg.spi.display()
        )),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    //! A fake SX1262 behind the blocking SPI trait (so [`BlockingSpi`] is exercised too):
    //! it records every command and answers the status reads lora-phy makes.
    use super::*;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Default)]
    struct Chip {
        /// Every command written (opcode and parameters; payload writes appended).
        commands: Vec<Vec<u8>>,
        /// Bytes "on the air" for the next RxDone.
        incoming: Option<Vec<u8>>,
        /// IRQ flags lora-phy will read next.
        irq: u16,
    }

    #[derive(Debug, Clone, Default)]
    struct FakeSpi(Arc<Mutex<Chip>>);

    impl ErrorType for FakeSpi {
        type Error = Infallible;
    }

    impl embedded_hal::spi::SpiDevice for FakeSpi {
        fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
            let mut chip = self.0.lock().unwrap();
            let mut cmd: Vec<u8> = Vec::new();
            let mut reads = 0;
            for op in ops.iter_mut() {
                match op {
                    Operation::Write(w) => cmd.extend_from_slice(w),
                    Operation::Transfer(r, w) => {
                        cmd.extend_from_slice(w);
                        r.fill(0);
                    }
                    Operation::TransferInPlace(b) => {
                        cmd.extend_from_slice(b);
                        b.fill(0);
                    }
                    Operation::Read(r) => {
                        // Read 0 is the status byte for *_with_status commands.
                        let answer: Vec<u8> = match (cmd.first(), reads) {
                            (Some(0x12), 1) => chip.irq.to_be_bytes().to_vec(),
                            (Some(0x13), 1) => {
                                let len = chip.incoming.as_ref().map_or(0, Vec::len);
                                vec![u8::try_from(len).unwrap(), 0]
                            }
                            (Some(0x1E), _) => chip.incoming.take().unwrap_or_default(),
                            // rssi_pkt = -2 * RSSI, snr_pkt = 4 * SNR.
                            (Some(0x14), 1) => vec![160, 30, 160],
                            _ => vec![],
                        };
                        r.fill(0);
                        let n = answer.len().min(r.len());
                        r[..n].copy_from_slice(&answer[..n]);
                        reads += 1;
                    }
                    Operation::DelayNs(_) => {}
                }
            }
            match cmd.first() {
                // SetTx: the transmission is done at once.
                Some(0x83) => chip.irq = 0x0001,
                // SetRx: a frame arrives if one is waiting.
                Some(0x82) if chip.incoming.is_some() => chip.irq = 0x0002,
                // ClrIrqStatus.
                Some(0x02) => chip.irq = 0,
                _ => {}
            }
            chip.commands.push(cmd);
            Ok(())
        }
    }

    /// BUSY always low, DIO1 always high (lora-phy then reads the IRQ flags).
    #[derive(Debug)]
    struct Pin;

    impl embedded_hal::digital::ErrorType for Pin {
        type Error = Infallible;
    }

    impl embedded_hal::digital::OutputPin for Pin {
        fn set_low(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    impl embedded_hal_async::digital::Wait for Pin {
        async fn wait_for_high(&mut self) -> Result<(), Infallible> {
            tokio::task::yield_now().await;
            Ok(())
        }
        async fn wait_for_low(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
        async fn wait_for_rising_edge(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
        async fn wait_for_falling_edge(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
        async fn wait_for_any_edge(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
    }

    struct NoDelay;

    impl DelayNs for NoDelay {
        async fn delay_ns(&mut self, _ns: u32) {}
    }

    const SETTINGS: Sx1262Settings = Sx1262Settings {
        freq_hz: 868_100_000,
        sf: 7,
        bw_hz: 125_000,
        tx_power_dbm: 14,
    };

    async fn radio(
        spi: FakeSpi,
    ) -> Sx1262Radio<BlockingSpi<FakeSpi>, impl InterfaceVariant, NoDelay> {
        let iv =
            lora_phy::iv::GenericSx126xInterfaceVariant::new(Pin, Pin, Pin, None, None).unwrap();
        Sx1262Radio::new(BlockingSpi(spi), iv, NoDelay, SETTINGS)
            .await
            .unwrap()
    }

    fn frequency_command(freq_hz: u32) -> Vec<u8> {
        // SetRfFrequency (0x86): freq * 2^25 / 32 MHz rounded, big-endian (datasheet 13.4.1).
        let steps = (((u64::from(freq_hz) << 25) + 16_000_000) / 32_000_000) as u32;
        let mut c = vec![0x86];
        c.extend_from_slice(&steps.to_be_bytes());
        c
    }

    #[tokio::test]
    async fn initialises_transmits_and_receives() {
        let spi = FakeSpi::default();
        let mut radio = radio(spi.clone()).await;
        {
            let chip = spi.0.lock().unwrap();
            // Standby (0x80) and LoRa packet type (0x8A, 0x01) during initialisation.
            assert!(chip.commands.iter().any(|c| c.first() == Some(&0x80)));
            assert!(chip.commands.iter().any(|c| c[..] == [0x8A, 0x01]));
        }
        let frame = vec![0x21, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let at = radio.now_us() + 1_000;
        let done = radio
            .transmit(&TxRequest {
                at_us: at,
                freq_hz: 869_525_000,
                sf: 9,
                bw_hz: 125_000,
                bytes: frame.clone(),
                airtime_us: 123,
            })
            .await
            .unwrap();
        assert!(done.start_us >= at);
        assert_eq!(done.airtime_us, 123);
        {
            let chip = spi.0.lock().unwrap();
            let pos = |pred: &dyn Fn(&Vec<u8>) -> bool| chip.commands.iter().position(pred);
            let buffer = pos(&|c| c.first() == Some(&0x0E) && c.ends_with(&frame)).unwrap();
            let tx = pos(&|c| c.first() == Some(&0x83)).unwrap();
            let freq = pos(&|c| *c == frequency_command(869_525_000)).unwrap();
            assert!(freq < tx && buffer < tx, "{:?}", chip.commands);
        }
        spi.0.lock().unwrap().incoming = Some(vec![0x11, 9, 8, 7]);
        let p = radio.receive().await.unwrap();
        assert_eq!(p.bytes, [0x11, 9, 8, 7]);
        assert_eq!(p.rssi, -80);
        assert!((p.snr - 8.0).abs() < 1.0, "{}", p.snr);
        assert_eq!((p.freq_hz, p.sf, p.bw_hz), (868_100_000, 7, 125_000));
        let chip = spi.0.lock().unwrap();
        // Back on the listening channel for reception.
        assert!(chip
            .commands
            .iter()
            .any(|c| *c == frequency_command(868_100_000)));
    }

    #[tokio::test]
    async fn refuses_bad_settings() {
        let iv =
            lora_phy::iv::GenericSx126xInterfaceVariant::new(Pin, Pin, Pin, None, None).unwrap();
        let bad = Sx1262Settings { sf: 13, ..SETTINGS };
        let e = Sx1262Radio::new(BlockingSpi(FakeSpi::default()), iv, NoDelay, bad)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("spreading factor 13"), "{e}");
    }

    #[tokio::test]
    async fn open_names_the_missing_device() {
        let cfg = gatehouse_config::Lora {
            spi: "/nonexistent/spidev9.9".into(),
            ..gatehouse_config::Lora::default()
        };
        let e = open(&cfg).await.unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/spidev9.9") && e.contains("lora.spi"),
            "{e}"
        );
    }
}
