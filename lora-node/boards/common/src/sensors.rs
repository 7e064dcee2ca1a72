//! [`GpioSensors`]: the node's sensors as GPIO pins (and a battery reading), described by
//! data: which pin is which input and at which level it is active. Works with any pin
//! that implements the embedded-hal `InputPin` and the async `Wait` (embassy-nrf's `Input`
//! with `gpiote`, embassy-stm32's `ExtiInput`).

use embassy_futures::select::select_array;
use embedded_hal::digital::InputPin;
use embedded_hal_async::digital::Wait;
use lora_node_core::{Input, Node, Storage};

/// What a pin means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Door/window reed contact: active = open.
    Contact,
    /// Enclosure tamper switch: active = open.
    Tamper,
    /// PIR output: each activation is one detection.
    Motion,
    /// Smoke detector alarm output: active = smoke.
    Smoke,
    /// Panic button: each press raises an alarm.
    Panic,
}

/// One sensor pin: its role and whether it is active when high.
pub struct SensorPin<P> {
    pub role: Role,
    pub active_high: bool,
    pub pin: P,
}

/// A battery voltage source (the SoC's supply ADC).
pub trait Battery {
    async fn millivolts(&mut self) -> Option<u16>;
}

/// No battery measurement (a mains-powered board): heartbeats say external power.
pub struct NoBattery;

impl Battery for NoBattery {
    async fn millivolts(&mut self) -> Option<u16> {
        None
    }
}

/// How often the battery is measured.
pub const BATTERY_EVERY_MS: u64 = 60_000;

/// Up to `N` sensor pins and a battery.
pub struct GpioSensors<P, B, const N: usize> {
    pins: [SensorPin<P>; N],
    last: [Option<bool>; N],
    battery: B,
    battery_at: Option<u64>,
}

impl<P: InputPin + Wait, B: Battery, const N: usize> GpioSensors<P, B, N> {
    pub fn new(pins: [SensorPin<P>; N], battery: B) -> Self {
        GpioSensors {
            pins,
            last: [None; N],
            battery,
            battery_at: None,
        }
    }
}

impl<P: InputPin + Wait, B: Battery, const N: usize> crate::Sensors for GpioSensors<P, B, N> {
    async fn wait_change(&mut self) {
        let edges = self.pins.each_mut().map(|p| p.pin.wait_for_any_edge());
        let _ = select_array(edges).await;
    }

    async fn sample<S: Storage>(&mut self, now_ms: u64, node: &mut Node<S>) {
        for (p, last) in self.pins.iter_mut().zip(self.last.iter_mut()) {
            let Ok(high) = p.pin.is_high() else { continue };
            let active = high == p.active_high;
            let before = last.replace(active);
            if before == Some(active) {
                continue;
            }
            let input = match p.role {
                Role::Contact => Some(Input::Contact { open: active }),
                Role::Tamper => Some(Input::Tamper { open: active }),
                Role::Smoke => Some(Input::Smoke { detected: active }),
                // Edge-triggered: only the change to active counts, not the boot level.
                Role::Motion => (active && before.is_some()).then_some(Input::Motion),
                Role::Panic => (active && before.is_some()).then_some(Input::PanicButton),
            };
            if let Some(input) = input {
                node.input(now_ms, input);
            }
        }
        if self
            .battery_at
            .is_none_or(|t| now_ms >= t.saturating_add(BATTERY_EVERY_MS))
        {
            self.battery_at = Some(now_ms);
            match self.battery.millivolts().await {
                Some(mv) => node.input(now_ms, Input::Battery { mv }),
                None => node.input(now_ms, Input::ExternalPower { present: true }),
            }
        }
    }
}
