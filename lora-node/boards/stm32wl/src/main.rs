//! LoRa sensor node on an STM32WLE5 with its built-in sub-GHz radio (wiring: board.rs).
//! Thin: the behaviour is lora_node_core's `Node`, the loop is lora_node_board's `run`;
//! this file wires the radio, the counter log in flash and the sensor pins together.
//!
//!     LORA_NODE_PROVISIONING=door-1.toml RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
//!         /usr/bin/cargo build --release
#![no_std]
#![no_main]

mod board;
mod radio;

use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_stm32::rcc::{mux, Hse, HseMode, Pll, PllMul, PllPreDiv, PllRDiv, PllSource, Sysclk};
use embassy_stm32::time::Hertz;
use embassy_time::{Delay, Instant};
use lora_node_board::sensors::{GpioSensors, NoBattery};
use lora_node_core::{FlashLog, Node};
use lora_phy::sx126x::{Config, Stm32wl, Sx126x, TcxoCtrlVoltage};
use lora_phy::LoRa;

mod provisioning {
    include!(concat!(env!("OUT_DIR"), "/provisioning.rs"));
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    // 32 MHz TCXO (HSE bypass, powered by PB0-VDDTCXO) -> PLL -> 48 MHz system clock.
    let mut config = embassy_stm32::Config::default();
    config.rcc.hse = Some(Hse {
        freq: Hertz(32_000_000),
        mode: HseMode::Bypass,
        prescaler: embassy_stm32::rcc::HsePrescaler::DIV1,
    });
    config.rcc.sys = Sysclk::PLL1_R;
    config.rcc.pll = Some(Pll {
        source: PllSource::HSE,
        prediv: PllPreDiv::DIV2,
        mul: PllMul::MUL6,
        divp: None,
        divq: None,
        divr: Some(PllRDiv::DIV2),
    });
    config.rcc.mux.rngsel = mux::Rngsel::MSI;
    let b = board::take(embassy_stm32::init(config));

    let iv = radio::SubGhzVariant {
        rf_rx: b.rf_rx,
        rf_tx: b.rf_tx,
    };
    let chip = Config {
        chip: Stm32wl {
            use_high_power_pa: true,
        },
        tcxo_ctrl: Some(TcxoCtrlVoltage::Ctrl1V7),
        use_dcdc: true,
        rx_boost: true,
    };
    let lora = match LoRa::new(Sx126x::new(radio::SubGhzSpi(b.spi), iv, chip), false, Delay).await {
        Ok(lora) => lora,
        Err(e) => halt("radio init", e),
    };
    let storage = FlashLog::new(b.flash, board::COUNTER_LOG_BASE);
    let node = match Node::new(
        provisioning::PROVISIONING.config(),
        storage,
        Instant::now().as_millis(),
    ) {
        Ok(node) => node,
        Err(e) => halt("provisioning", defmt::Display2Format(&e)),
    };
    let sensors = GpioSensors::new(b.sensors, NoBattery);
    lora_node_board::run(lora, node, sensors).await
}

/// A fault the node cannot work around: log it and reset after a pause (a field node
/// must come back by itself).
fn halt(what: &str, e: impl defmt::Format) -> ! {
    defmt::error!("{}: {}", what, e);
    cortex_m::asm::delay(48_000_000 * 10);
    cortex_m::peripheral::SCB::sys_reset()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    cortex_m::peripheral::SCB::sys_reset()
}
