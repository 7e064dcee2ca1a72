//! The wiring of this board, as data: an STM32WLE5JC module (Seeed LoRa-E5 / LoRa-E5 mini)
//! with the SoC's own sub-GHz radio (an SX126x die on the internal SUBGHZSPI), its RF
//! switch on PA4/PA5 (high-power PA only), sensors on free GPIOs with EXTI lines.
//!
//! | signal | pin | notes |
//! |---|---|---|
//! | radio SPI | SUBGHZSPI | internal, DMA1 CH1/CH2; NSS, BUSY, IRQ, RESET in PWR/RCC |
//! | RF switch RX / TX | PA4 / PA5 | RX: PA4 high; TX (HP PA): PA5 high |
//! | door contact | PB3 (EXTI3) | high = open (reed opens), pull-up |
//! | tamper switch | PB4 (EXTI4) | high = enclosure open, pull-up |
//! | PIR output | PA9 (EXTI9_5) | high = motion, pull-down |
//! | panic button | PB13 (EXTI15_10) | low = pressed (the mini's BOOT button), pull-up |
//! | battery | none | not measured yet: heartbeats say external power |
//! | counter log | flash 0x0803F000..0x08040000 | two 2 KiB pages (memory.x) |

use embassy_stm32::exti::{self, ExtiInput};
use embassy_stm32::flash::{Blocking, Flash};
use embassy_stm32::gpio::{Level, Output, Pull, Speed};
use embassy_stm32::mode::Async;
use embassy_stm32::spi::Spi;
use embassy_stm32::{bind_interrupts, dma, interrupt, peripherals, Peripherals};
use lora_node_board::sensors::{Role, SensorPin};

use crate::radio;

bind_interrupts!(pub struct Irqs {
    SUBGHZ_RADIO => radio::InterruptHandler;
    DMA1_CHANNEL1 => dma::InterruptHandler<peripherals::DMA1_CH1>;
    DMA1_CHANNEL2 => dma::InterruptHandler<peripherals::DMA1_CH2>;
    EXTI3 => exti::InterruptHandler<interrupt::typelevel::EXTI3>;
    EXTI4 => exti::InterruptHandler<interrupt::typelevel::EXTI4>;
    EXTI9_5 => exti::InterruptHandler<interrupt::typelevel::EXTI9_5>;
    EXTI15_10 => exti::InterruptHandler<interrupt::typelevel::EXTI15_10>;
});

/// Flash offset (from 0x08000000) of the two-page counter log (see memory.x).
pub const COUNTER_LOG_BASE: u32 = 0x3F000;

/// The sensor pins: role and whether active high.
pub const SENSORS: [(Role, bool); 4] = [
    (Role::Contact, true),
    (Role::Tamper, true),
    (Role::Motion, true),
    (Role::Panic, false),
];

pub struct Board<'d> {
    pub spi: Spi<'d, Async, embassy_stm32::spi::mode::Master>,
    pub rf_rx: Output<'d>,
    pub rf_tx: Output<'d>,
    pub sensors: [SensorPin<ExtiInput<'d, Async>>; 4],
    pub flash: Flash<'d, Blocking>,
}

/// Takes the peripherals this board uses.
pub fn take(p: Peripherals) -> Board<'static> {
    let pin = |i: usize, pin| SensorPin {
        role: SENSORS[i].0,
        active_high: SENSORS[i].1,
        pin,
    };
    Board {
        spi: Spi::new_subghz(p.SUBGHZSPI, p.DMA1_CH1, p.DMA1_CH2, Irqs),
        rf_rx: Output::new(p.PA4, Level::Low, Speed::High),
        rf_tx: Output::new(p.PA5, Level::Low, Speed::High),
        sensors: [
            pin(0, ExtiInput::new(p.PB3, p.EXTI3, Pull::Up, Irqs)),
            pin(1, ExtiInput::new(p.PB4, p.EXTI4, Pull::Up, Irqs)),
            pin(2, ExtiInput::new(p.PA9, p.EXTI9, Pull::Down, Irqs)),
            pin(3, ExtiInput::new(p.PB13, p.EXTI13, Pull::Up, Irqs)),
        ],
        flash: Flash::new_blocking(p.FLASH),
    }
}
