//! The plaintext payloads of the LoRa link, one struct per message type, and their byte
//! encodings (what [`seal`](crate::seal) encrypts and [`open`](crate::open) decrypts).
//!
//! All integers are big-endian; booleans are 0 or 1; reserved bits are 0; a payload is
//! exactly as long as its fields (anything else is a [`FrameError`]).
//!
//! | mtype | payload | bytes |
//! |---|---|---|
//! | 0x1 [`Report`] | n u8 (1..=8), n * (quantity u8, value i32) | 1 + 5n |
//! | 0x2 [`Alarm`] | kind u8, active u8, alarm_id u16, value i32 | 8 |
//! | 0x3 [`Heartbeat`] | battery_mv u16, flags u8, reboots u16, last_rssi i16, last_snr i8, interval_s u16 | 10 |
//! | 0x4 [`Downlink`] | ack_fcnt u32 (0 = none), flags u8 (0x1 ack present), command u8, arg u16 | 8 |
//!
//! Codes: [`Quantity`] 1 contact (0 closed / 1 open), 2 motion (count), 3 temperature
//! (centi-degC), 4 smoke (0/1), 5 humidity (centi-percent), 6 battery (mV).
//! [`AlarmKind`] 1 door_open, 2 motion, 3 smoke, 4 temperature_high, 5 tamper,
//! 6 panic_button. [`Command`] 0 none (arg 0), 1 set heartbeat interval (arg = seconds).
//! Heartbeat flags: 0x1 tamper, 0x2 external power, 0x4 low battery.

use core::fmt;

use crate::frame::MType;
use crate::FrameError;

/// The most readings one report carries.
pub const MAX_READINGS: usize = 8;
/// Bytes of one report reading: quantity u8, value i32.
pub const READING_LEN: usize = 5;
/// Bytes of an [`Alarm`] payload.
pub const ALARM_LEN: usize = 8;
/// Bytes of a [`Heartbeat`] payload.
pub const HEARTBEAT_LEN: usize = 10;
/// Bytes of a [`Downlink`] payload.
pub const DOWNLINK_LEN: usize = 8;

/// The plaintext of a frame, by message type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Report(Report),
    Alarm(Alarm),
    Heartbeat(Heartbeat),
    Downlink(Downlink),
}

/// What a reading measures, and in which unit its `value` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// 0 closed, 1 open.
    Contact,
    /// Motion detections counted since the last report.
    Motion,
    /// Centi-degrees Celsius (2150 = 21.50 degC).
    Temperature,
    /// 0 clear, 1 smoke.
    Smoke,
    /// Centi-percent relative humidity (4520 = 45.20 %).
    Humidity,
    /// Battery voltage in millivolts.
    Battery,
}

/// One measurement in a [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub quantity: Quantity,
    pub value: i32,
}

/// Periodic or on-change measurements (unconfirmed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// 1 to [`MAX_READINGS`] readings.
    pub readings: heapless::Vec<Reading, MAX_READINGS>,
}

/// What raised an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmKind {
    DoorOpen,
    Motion,
    Smoke,
    TemperatureHigh,
    Tamper,
    PanicButton,
}

/// An alarm starting (`active`) or ending; always sent confirmed and retransmitted with a
/// new fcnt and the same `alarm_id` until the hub acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alarm {
    pub kind: AlarmKind,
    /// `true` when the alarm starts, `false` when it ends.
    pub active: bool,
    /// The node's alarm number: the same in every retransmission of one alarm.
    pub alarm_id: u16,
    /// The measurement that raised it (e.g. centi-degC for `TemperatureHigh`), else 0.
    pub value: i32,
}

/// The node's periodic sign of life (unconfirmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// Battery voltage in millivolts; 0 = not measured (no battery gauge).
    pub battery_mv: u16,
    /// [`Heartbeat::FLAG_TAMPER`] | [`Heartbeat::FLAG_EXTERNAL_POWER`] |
    /// [`Heartbeat::FLAG_LOW_BATTERY`]; other bits are reserved (0).
    pub flags: u8,
    /// Boots since the node was provisioned.
    pub reboots: u16,
    /// dBm of the last downlink it heard, 0 if none.
    pub last_rssi: i16,
    /// dB of the last downlink it heard, 0 if none.
    pub last_snr: i8,
    /// The node's heartbeat interval in seconds.
    pub interval_s: u16,
}

/// What the hub tells the node besides the acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Command {
    /// Code 0 (its arg is 0).
    #[default]
    None,
    /// Code 1: use this heartbeat interval from now on (arg, seconds).
    SetHeartbeatInterval { seconds: u16 },
}

/// Hub -> node: the acknowledgement of a confirmed uplink and/or a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Downlink {
    /// The uplink fcnt acknowledged, `None` if this downlink acknowledges nothing (on the
    /// wire: flag 0x1 set and the counter, or flag clear and 0).
    pub ack_fcnt: Option<u32>,
    pub command: Command,
}

impl Heartbeat {
    /// The node's tamper switch is open.
    pub const FLAG_TAMPER: u8 = 0x1;
    /// The node runs on external power.
    pub const FLAG_EXTERNAL_POWER: u8 = 0x2;
    /// The node considers its battery low.
    pub const FLAG_LOW_BATTERY: u8 = 0x4;
    const KNOWN_FLAGS: u8 = 0x7;

    pub fn tamper(&self) -> bool {
        self.flags & Self::FLAG_TAMPER != 0
    }

    pub fn external_power(&self) -> bool {
        self.flags & Self::FLAG_EXTERNAL_POWER != 0
    }

    pub fn low_battery(&self) -> bool {
        self.flags & Self::FLAG_LOW_BATTERY != 0
    }
}

impl Downlink {
    /// A plain acknowledgement of uplink `fcnt`.
    pub fn ack(fcnt: u32) -> Downlink {
        Downlink {
            ack_fcnt: Some(fcnt),
            command: Command::None,
        }
    }
}

impl Quantity {
    pub fn code(self) -> u8 {
        match self {
            Quantity::Contact => 1,
            Quantity::Motion => 2,
            Quantity::Temperature => 3,
            Quantity::Smoke => 4,
            Quantity::Humidity => 5,
            Quantity::Battery => 6,
        }
    }

    pub fn from_code(code: u8) -> Result<Quantity, FrameError> {
        Ok(match code {
            1 => Quantity::Contact,
            2 => Quantity::Motion,
            3 => Quantity::Temperature,
            4 => Quantity::Smoke,
            5 => Quantity::Humidity,
            6 => Quantity::Battery,
            other => return Err(FrameError::UnknownQuantity(other)),
        })
    }

    /// Lower-case name: `contact`, `motion`, `temperature`, `smoke`, `humidity`, `battery`.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantity::Contact => "contact",
            Quantity::Motion => "motion",
            Quantity::Temperature => "temperature",
            Quantity::Smoke => "smoke",
            Quantity::Humidity => "humidity",
            Quantity::Battery => "battery",
        }
    }
}

impl AlarmKind {
    pub fn code(self) -> u8 {
        match self {
            AlarmKind::DoorOpen => 1,
            AlarmKind::Motion => 2,
            AlarmKind::Smoke => 3,
            AlarmKind::TemperatureHigh => 4,
            AlarmKind::Tamper => 5,
            AlarmKind::PanicButton => 6,
        }
    }

    pub fn from_code(code: u8) -> Result<AlarmKind, FrameError> {
        Ok(match code {
            1 => AlarmKind::DoorOpen,
            2 => AlarmKind::Motion,
            3 => AlarmKind::Smoke,
            4 => AlarmKind::TemperatureHigh,
            5 => AlarmKind::Tamper,
            6 => AlarmKind::PanicButton,
            other => return Err(FrameError::UnknownAlarmKind(other)),
        })
    }

    /// Snake-case name, as in the event type `sensor.alarm.<kind>`: `door_open`,
    /// `motion`, `smoke`, `temperature_high`, `tamper`, `panic_button`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::DoorOpen => "door_open",
            AlarmKind::Motion => "motion",
            AlarmKind::Smoke => "smoke",
            AlarmKind::TemperatureHigh => "temperature_high",
            AlarmKind::Tamper => "tamper",
            AlarmKind::PanicButton => "panic_button",
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Payload {
    /// The message type this payload is sent as.
    pub fn mtype(&self) -> MType {
        match self {
            Payload::Report(_) => MType::Report,
            Payload::Alarm(_) => MType::Alarm,
            Payload::Heartbeat(_) => MType::Heartbeat,
            Payload::Downlink(_) => MType::Downlink,
        }
    }

    /// Bytes of the encoded payload.
    pub fn encoded_len(&self) -> usize {
        match self {
            Payload::Report(r) => 1 + READING_LEN * r.readings.len(),
            Payload::Alarm(_) => ALARM_LEN,
            Payload::Heartbeat(_) => HEARTBEAT_LEN,
            Payload::Downlink(_) => DOWNLINK_LEN,
        }
    }

    /// Writes the payload into `out` (at least [`Payload::encoded_len`] bytes) and returns
    /// its length. Refuses what [`Payload::decode`] would refuse, so that every sealed
    /// frame opens.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, FrameError> {
        let len = self.encoded_len();
        let got = out.len();
        let Some(out) = out.get_mut(..len) else {
            return Err(FrameError::BufferTooSmall { needed: len, got });
        };
        let mut w = Writer { out, at: 0 };
        match self {
            Payload::Report(r) => {
                let n = r.readings.len();
                if n == 0 {
                    return Err(FrameError::ReadingCount(n));
                }
                // n <= MAX_READINGS (the Vec's capacity) fits a u8.
                w.u8(n as u8);
                for reading in &r.readings {
                    w.u8(reading.quantity.code());
                    w.bytes(&reading.value.to_be_bytes());
                }
            }
            Payload::Alarm(a) => {
                w.u8(a.kind.code());
                w.u8(u8::from(a.active));
                w.bytes(&a.alarm_id.to_be_bytes());
                w.bytes(&a.value.to_be_bytes());
            }
            Payload::Heartbeat(h) => {
                if h.flags & !Heartbeat::KNOWN_FLAGS != 0 {
                    return Err(FrameError::InvalidField {
                        field: "heartbeat flags",
                        value: u32::from(h.flags),
                    });
                }
                w.bytes(&h.battery_mv.to_be_bytes());
                w.u8(h.flags);
                w.bytes(&h.reboots.to_be_bytes());
                w.bytes(&h.last_rssi.to_be_bytes());
                w.bytes(&h.last_snr.to_be_bytes());
                w.bytes(&h.interval_s.to_be_bytes());
            }
            Payload::Downlink(d) => {
                let (ack_fcnt, flags) = match d.ack_fcnt {
                    Some(fcnt) => (fcnt, 0x1),
                    None => (0, 0),
                };
                let (command, arg) = match d.command {
                    Command::None => (0, 0),
                    Command::SetHeartbeatInterval { seconds } => (1, seconds),
                };
                w.bytes(&ack_fcnt.to_be_bytes());
                w.u8(flags);
                w.u8(command);
                w.bytes(&arg.to_be_bytes());
            }
        }
        Ok(len)
    }

    /// Parses the plaintext payload of a frame of type `mtype`.
    pub fn decode(mtype: MType, bytes: &[u8]) -> Result<Payload, FrameError> {
        let bad_len = FrameError::PayloadLength {
            mtype,
            len: bytes.len(),
        };
        if let Some(want) = mtype.payload_len() {
            if bytes.len() != want {
                return Err(bad_len);
            }
        }
        let mut r = Reader { bytes, at: 0 };
        Ok(match mtype {
            MType::Report => {
                if bytes.is_empty() {
                    return Err(bad_len);
                }
                let n = usize::from(r.u8());
                if n == 0 || n > MAX_READINGS {
                    return Err(FrameError::ReadingCount(n));
                }
                if bytes.len() != 1 + READING_LEN * n {
                    return Err(bad_len);
                }
                let mut readings = heapless::Vec::new();
                for _ in 0..n {
                    let quantity = Quantity::from_code(r.u8())?;
                    let value = i32::from_be_bytes(r.array());
                    // At most MAX_READINGS pushes, checked above.
                    readings
                        .push(Reading { quantity, value })
                        .map_err(|_| FrameError::ReadingCount(n))?;
                }
                Payload::Report(Report { readings })
            }
            MType::Alarm => {
                let kind = AlarmKind::from_code(r.u8())?;
                let active = r.bool("alarm active")?;
                let alarm_id = u16::from_be_bytes(r.array());
                let value = i32::from_be_bytes(r.array());
                Payload::Alarm(Alarm {
                    kind,
                    active,
                    alarm_id,
                    value,
                })
            }
            MType::Heartbeat => {
                let battery_mv = u16::from_be_bytes(r.array());
                let flags = r.u8();
                if flags & !Heartbeat::KNOWN_FLAGS != 0 {
                    return Err(FrameError::InvalidField {
                        field: "heartbeat flags",
                        value: u32::from(flags),
                    });
                }
                Payload::Heartbeat(Heartbeat {
                    battery_mv,
                    flags,
                    reboots: u16::from_be_bytes(r.array()),
                    last_rssi: i16::from_be_bytes(r.array()),
                    last_snr: i8::from_be_bytes(r.array()),
                    interval_s: u16::from_be_bytes(r.array()),
                })
            }
            MType::Downlink => {
                let ack = u32::from_be_bytes(r.array());
                let flags = r.u8();
                let ack_fcnt = match flags {
                    0x1 => Some(ack),
                    0x0 if ack == 0 => None,
                    0x0 => {
                        return Err(FrameError::InvalidField {
                            field: "downlink ack_fcnt without the ack flag",
                            value: ack,
                        })
                    }
                    other => {
                        return Err(FrameError::InvalidField {
                            field: "downlink flags",
                            value: u32::from(other),
                        })
                    }
                };
                let code = r.u8();
                let arg = u16::from_be_bytes(r.array());
                let command = match code {
                    0 if arg == 0 => Command::None,
                    0 => {
                        return Err(FrameError::InvalidField {
                            field: "downlink arg of command 0",
                            value: u32::from(arg),
                        })
                    }
                    1 => Command::SetHeartbeatInterval { seconds: arg },
                    other => return Err(FrameError::UnknownCommand(other)),
                };
                Payload::Downlink(Downlink { ack_fcnt, command })
            }
        })
    }
}

/// Writes into a slice whose length was checked against the whole payload first.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    fn bytes(&mut self, v: &[u8]) {
        let end = self.at + v.len();
        if let Some(dst) = self.out.get_mut(self.at..end) {
            dst.copy_from_slice(v);
        }
        self.at = end;
    }
}

/// Reads from a slice whose length was checked first; out of range reads give zeros.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut v = [0u8; N];
        if let Some(src) = self.bytes.get(self.at..self.at + N) {
            v.copy_from_slice(src);
        }
        self.at += N;
        v
    }

    fn u8(&mut self) -> u8 {
        let [v] = self.array();
        v
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, FrameError> {
        match self.u8() {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(FrameError::InvalidField {
                field,
                value: u32::from(other),
            }),
        }
    }
}
