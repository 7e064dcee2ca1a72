//! LoRa sensor node on an nRF52840 + SX1262 (wiring: board.rs). Thin: the behaviour is
//! lora_node_core's `Node`, the loop is lora_node_board's `run`; this file only wires the
//! radio, the counter log in flash and the sensor pins together.
//!
//!     LORA_NODE_PROVISIONING=door-1.toml RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
//!         /usr/bin/cargo build --release
#![no_std]
#![no_main]

mod board;

use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_time::{Delay, Instant};
use embedded_hal_bus::spi::ExclusiveDevice;
use lora_node_board::sensors::GpioSensors;
use lora_node_core::{FlashLog, Node};
use lora_phy::iv::GenericSx126xInterfaceVariant;
use lora_phy::sx126x::{Config, Sx1262, Sx126x, TcxoCtrlVoltage};
use lora_phy::LoRa;

mod provisioning {
    include!(concat!(env!("OUT_DIR"), "/provisioning.rs"));
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let b = board::take(embassy_nrf::init(Default::default()));
    let Ok(spi) = ExclusiveDevice::new(b.spi, b.nss, Delay);
    let iv = match GenericSx126xInterfaceVariant::new(
        b.reset,
        b.dio1,
        b.busy,
        Some(b.rf_rx),
        Some(b.rf_tx),
    ) {
        Ok(iv) => iv,
        Err(e) => halt("radio interface", e),
    };
    let config = Config {
        chip: Sx1262,
        tcxo_ctrl: Some(TcxoCtrlVoltage::Ctrl1V7),
        use_dcdc: true,
        rx_boost: false,
    };
    let lora = match LoRa::new(Sx126x::new(spi, iv, config), false, Delay).await {
        Ok(lora) => lora,
        Err(e) => halt("SX1262 init", e),
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
    let sensors = GpioSensors::new(b.sensors, b.battery);
    lora_node_board::run(lora, node, sensors).await
}

/// A fault the node cannot work around: log it and reset after a pause (a field node
/// must come back by itself).
fn halt(what: &str, e: impl defmt::Format) -> ! {
    defmt::error!("{}: {}", what, e);
    cortex_m::asm::delay(64_000_000 * 10);
    cortex_m::peripheral::SCB::sys_reset()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    cortex_m::peripheral::SCB::sys_reset()
}
