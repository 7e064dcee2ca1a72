//! The JSON messages between the forwarder and the hub (the topic contract of
//! .design/issue6.md, "MQTT topics"): [`Uplink`] on [`UP_TOPIC`], [`DownlinkRequest`] on
//! [`DOWN_TOPIC`], [`TxStatus`] on [`TX_TOPIC`]. Frames travel as standard base64 (RFC
//! 4648 section 4, with padding).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use gatehouse_lora_proto::Priority;
use serde::{Deserialize, Serialize};

/// Frames the forwarder received (forwarder -> hub, QoS 1).
pub const UP_TOPIC: &str = "lora/up";
/// Frames the hub wants transmitted (hub -> forwarder, QoS 1).
pub const DOWN_TOPIC: &str = "lora/down";
/// What became of each downlink (forwarder -> hub, QoS 0).
pub const TX_TOPIC: &str = "lora/tx";

/// One received frame, as published on `lora/up`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uplink {
    /// The frame, base64.
    pub frame: String,
    /// dBm.
    pub rssi: i16,
    /// dB.
    pub snr: f32,
    pub freq_hz: u32,
    pub sf: u8,
    pub bw_hz: u32,
    /// The forwarder's monotonic time at the end of reception, µs (a downlink's `tx_us`
    /// is counted from it).
    pub rx_us: u64,
    /// Wall-clock time of reception, RFC 3339.
    pub rx_at: String,
}

/// A downlink to transmit, as received on `lora/down`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownlinkRequest {
    /// The frame, base64.
    pub frame: String,
    pub freq_hz: u32,
    pub sf: u8,
    pub bw_hz: u32,
    /// When to transmit, on the forwarder's clock (the uplink's `rx_us` +
    /// `RX1_DELAY_US`), µs.
    pub tx_us: u64,
    pub priority: PriorityName,
    /// The hub's id of this downlink, echoed in its [`TxStatus`].
    pub id: String,
}

/// `"alarm"` or `"normal"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorityName {
    Alarm,
    Normal,
}

impl From<PriorityName> for Priority {
    fn from(p: PriorityName) -> Priority {
        match p {
            PriorityName::Alarm => Priority::Alarm,
            PriorityName::Normal => Priority::Normal,
        }
    }
}

/// What became of a downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Transmitted.
    Sent,
    /// Its `tx_us` had passed (or was too close to prepare the radio).
    TooLate,
    /// Transmitting it would exceed its sub-band's duty-cycle budget for its priority.
    DutyCycle,
    /// It would overlap another transmission (an alarm's takes precedence).
    Busy,
    /// The request was malformed (bad base64, a frequency outside every sub-band, an
    /// unsupported spreading factor or bandwidth, a frame too long): never transmitted.
    Invalid,
}

impl Status {
    /// The JSON name (`"sent"`, `"too_late"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::TooLate => "too_late",
            Status::DutyCycle => "duty_cycle",
            Status::Busy => "busy",
            Status::Invalid => "invalid",
        }
    }
}

/// The answer to a downlink, on `lora/tx`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxStatus {
    pub id: String,
    pub status: Status,
    /// Its time on air, µs (0 when it could not be computed).
    pub airtime_us: u32,
}

/// Standard base64 of `bytes`.
pub fn encode_frame(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The bytes of a base64 frame, `None` if it is not valid base64.
pub fn decode_frame(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_the_contract() {
        let up = Uplink {
            frame: encode_frame(&[1, 2, 3]),
            rssi: -87,
            snr: 7.5,
            freq_hz: 868_100_000,
            sf: 7,
            bw_hz: 125_000,
            rx_us: 42,
            rx_at: "2026-01-01T00:00:00Z".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&up).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"frame": "AQID", "rssi": -87, "snr": 7.5, "freq_hz": 868100000,
                "sf": 7, "bw_hz": 125000, "rx_us": 42, "rx_at": "2026-01-01T00:00:00Z"})
        );
        let down: DownlinkRequest = serde_json::from_str(
            r#"{"frame": "AQID", "freq_hz": 869525000, "sf": 9, "bw_hz": 125000,
                "tx_us": 1000000, "priority": "alarm", "id": "d-1"}"#,
        )
        .unwrap();
        assert_eq!(down.priority, PriorityName::Alarm);
        assert_eq!(decode_frame(&down.frame).unwrap(), [1, 2, 3]);
        let st = TxStatus {
            id: "d-1".into(),
            status: Status::TooLate,
            airtime_us: 5,
        };
        assert_eq!(
            serde_json::to_value(&st).unwrap(),
            serde_json::json!({"id": "d-1", "status": "too_late", "airtime_us": 5})
        );
        for s in [
            Status::Sent,
            Status::TooLate,
            Status::DutyCycle,
            Status::Busy,
            Status::Invalid,
        ] {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
        assert!(decode_frame("not base64!").is_none());
    }
}
