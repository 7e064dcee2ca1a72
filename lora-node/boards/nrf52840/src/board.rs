//! The wiring of this board, as data: nRF52840-DK with a Semtech SX1262MB2xAS shield on
//! its Arduino header (the pin choice of embassy's nRF52840 LoRa examples), sensors on the
//! DK's button pins (pull-up, switch to ground).
//!
//! | signal | pin | notes |
//! |---|---|---|
//! | SX1262 SCK / MISO / MOSI | P1.11 / P1.13 / P1.12 | SPIM3, 8 MHz |
//! | SX1262 NSS | P1.10 | chip select, GPIO |
//! | SX1262 RESET | P1.06 | |
//! | SX1262 BUSY | P1.14 | input |
//! | SX1262 DIO1 | P1.15 | IRQ, input pull-down |
//! | RF switch RX / TX | P1.05 / P1.07 | shield's antenna switch |
//! | door contact | P0.11 | high = open (reed opens) |
//! | tamper switch | P0.12 | high = enclosure open |
//! | PIR output | P0.24 | high = motion |
//! | panic button | P0.25 | low = pressed |
//! | battery | SAADC VDD | internal, gain 1/6, 0.6 V reference |
//! | counter log | flash 0xFE000..0x100000 | two 4 KiB NVMC pages (memory.x) |

use embassy_nrf::gpio::{Input, Level, Output, OutputDrive, Pull};
use embassy_nrf::nvmc::Nvmc;
use embassy_nrf::saadc::{self, ChannelConfig, Saadc};
use embassy_nrf::spim::{self, Spim};
use embassy_nrf::{bind_interrupts, peripherals, Peripherals};
use lora_node_board::sensors::{Battery, Role, SensorPin};

bind_interrupts!(pub struct Irqs {
    SPIM3 => spim::InterruptHandler<peripherals::SPI3>;
    SAADC => saadc::InterruptHandler;
});

/// Flash offset of the two-page counter log (see memory.x).
pub const COUNTER_LOG_BASE: u32 = 0xFE000;

/// The sensor pins: role, active level, pin.
pub const SENSORS: [(Role, bool); 4] = [
    (Role::Contact, true),
    (Role::Tamper, true),
    (Role::Motion, true),
    (Role::Panic, false),
];

pub struct Board<'d> {
    pub spi: Spim<'d>,
    pub nss: Output<'d>,
    pub reset: Output<'d>,
    pub busy: Input<'d>,
    pub dio1: Input<'d>,
    pub rf_rx: Output<'d>,
    pub rf_tx: Output<'d>,
    pub sensors: [SensorPin<Input<'d>>; 4],
    pub battery: VddBattery<'d>,
    pub flash: Nvmc<'d>,
}

/// Takes the peripherals this board uses.
pub fn take(p: Peripherals) -> Board<'static> {
    let mut spi_config = spim::Config::default();
    spi_config.frequency = spim::Frequency::M8;
    let pin = |i: usize, pin| SensorPin {
        role: SENSORS[i].0,
        active_high: SENSORS[i].1,
        pin,
    };
    Board {
        spi: Spim::new(p.SPI3, Irqs, p.P1_11, p.P1_13, p.P1_12, spi_config),
        nss: Output::new(p.P1_10, Level::High, OutputDrive::Standard),
        reset: Output::new(p.P1_06, Level::High, OutputDrive::Standard),
        busy: Input::new(p.P1_14, Pull::None),
        dio1: Input::new(p.P1_15, Pull::Down),
        rf_rx: Output::new(p.P1_05, Level::Low, OutputDrive::Standard),
        rf_tx: Output::new(p.P1_07, Level::Low, OutputDrive::Standard),
        sensors: [
            pin(0, Input::new(p.P0_11, Pull::Up)),
            pin(1, Input::new(p.P0_12, Pull::Up)),
            pin(2, Input::new(p.P0_24, Pull::Down)),
            pin(3, Input::new(p.P0_25, Pull::Up)),
        ],
        battery: VddBattery(Saadc::new(
            p.SAADC,
            Irqs,
            saadc::Config::default(),
            [ChannelConfig::single_ended(saadc::VddInput)],
        )),
        flash: Nvmc::new(p.NVMC),
    }
}

/// The supply voltage through the SAADC (12 bit, gain 1/6 of 0.6 V: full scale 3.6 V).
pub struct VddBattery<'d>(Saadc<'d, 1>);

impl Battery for VddBattery<'_> {
    async fn millivolts(&mut self) -> Option<u16> {
        let mut buf = [0i16; 1];
        self.0.sample(&mut buf).await;
        let raw = u32::try_from(buf[0].max(0)).ok()?;
        u16::try_from(raw * 3_600 / 4_096).ok()
    }
}
