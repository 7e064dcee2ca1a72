//! [`NodeConfig`]: what a node is told at provisioning (`gatehouse sensor add` prints it)
//! and the policy knobs of its behaviour, with the defaults the boards use.

use core::fmt;

use gatehouse_lora_proto::airtime::Modulation;
use gatehouse_lora_proto::duty::SubBand;
use gatehouse_lora_proto::{DevAddr, Key};

/// What the node senses: decides which readings its reports carry (every node reports
/// its battery too). Alarms come from the inputs themselves (see [`crate::Input`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorKind {
    /// Door/window contact: reports `contact`.
    Door,
    /// Passive infrared motion detector: reports `motion` (detections since the last report).
    Pir,
    /// Smoke detector: reports `smoke`.
    Smoke,
    /// Temperature (and humidity) sensor: reports `temperature` and `humidity`.
    Temp,
}

impl SensorKind {
    /// Parses the `--kind` names of `gatehouse sensor add`: door, pir, smoke, temp.
    pub fn parse(name: &str) -> Option<SensorKind> {
        match name {
            "door" => Some(SensorKind::Door),
            "pir" => Some(SensorKind::Pir),
            "smoke" => Some(SensorKind::Smoke),
            "temp" => Some(SensorKind::Temp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Door => "door",
            SensorKind::Pir => "pir",
            SensorKind::Smoke => "smoke",
            SensorKind::Temp => "temp",
        }
    }
}

/// The channel the node transmits on (and listens on for the hub's answer: ACKs come on
/// the uplink's frequency and spreading factor, see proto/lora `link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RadioParams {
    pub freq_hz: u32,
    pub modulation: Modulation,
}

/// A node's provisioning data and policy.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub dev_addr: DevAddr,
    pub key: Key,
    pub kind: SensorKind,
    /// Heartbeat interval in seconds (the hub's supervision expects one at least this
    /// often); the hub may change it with a downlink command. 1..=65535.
    pub heartbeat_s: u16,
    /// Periodic report interval in seconds; 0 = report on change only.
    pub report_s: u32,
    pub radio: RadioParams,
    /// Retransmissions of an unacknowledged alarm after its first transmission
    /// (default 8): at most `1 + alarm_retries` transmissions, then the node gives up.
    pub alarm_retries: u8,
    /// Backoff before the first retransmission; doubles per attempt (default 2 s).
    pub alarm_backoff_ms: u32,
    /// Cap of the doubling backoff (default 120 s).
    pub alarm_backoff_max_ms: u32,
    /// A temperature change of at least this many centi-degrees is reported at once
    /// (default 50 = 0.5 degC).
    pub temperature_delta: i32,
    /// Temperature alarm threshold in centi-degC (default 5_000 = 50 degC); the alarm
    /// ends 1 degC below it.
    pub temperature_high: i32,
    /// Battery below this (mV) sets the low-battery heartbeat flag (default 2400, the
    /// hub's `sensor.low_battery` threshold).
    pub low_battery_mv: u16,
}

/// Hysteresis of the temperature alarm: it ends this many centi-degrees below the threshold.
pub const TEMPERATURE_HYSTERESIS: i32 = 100;

impl NodeConfig {
    /// A configuration with the default policy (heartbeat 300 s, report 900 s, 8 alarm
    /// retries from 2 s doubling up to 120 s).
    pub fn new(dev_addr: DevAddr, key: Key, kind: SensorKind, radio: RadioParams) -> NodeConfig {
        NodeConfig {
            dev_addr,
            key,
            kind,
            heartbeat_s: 300,
            report_s: 900,
            radio,
            alarm_retries: 8,
            alarm_backoff_ms: 2_000,
            alarm_backoff_max_ms: 120_000,
            temperature_delta: 50,
            temperature_high: 5_000,
            low_battery_mv: 2_400,
        }
    }

    /// Checks what the node cannot work with; [`crate::Node::new`] calls it.
    pub fn validate(&self) -> Result<SubBand, ConfigError> {
        if self.heartbeat_s == 0 {
            return Err(ConfigError::HeartbeatInterval);
        }
        if self.alarm_backoff_ms == 0 || self.alarm_backoff_max_ms < self.alarm_backoff_ms {
            return Err(ConfigError::Backoff);
        }
        SubBand::of(self.radio.freq_hz).ok_or(ConfigError::Frequency(self.radio.freq_hz))
    }
}

/// A configuration the node refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The frequency lies in no EU868 sub-band with a duty-cycle rule.
    Frequency(u32),
    /// `heartbeat_s` is 0.
    HeartbeatInterval,
    /// `alarm_backoff_ms` is 0 or above `alarm_backoff_max_ms`.
    Backoff,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Frequency(hz) => write!(
                f,
                "frequency {hz} Hz is in no EU868 sub-band the node knows (use e.g. 868100000 or 869525000)"
            ),
            ConfigError::HeartbeatInterval => {
                f.write_str("heartbeat interval is 0 s: give it at least 1 s (default 300)")
            }
            ConfigError::Backoff => f.write_str(
                "alarm backoff must be at least 1 ms and not above its maximum",
            ),
        }
    }
}
