//! [`FrameError`]: everything that can be wrong with bytes received on the LoRa link, or
//! with a frame about to be sealed. Each variant says what was wrong; its `Display` says
//! it in words a log reader can act on.

use core::fmt;

use crate::frame::{Dir, MType, MAX_FRAME_LEN, MIN_FRAME_LEN};

/// What was wrong with a frame or its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than a header and a MIC ([`MIN_FRAME_LEN`]).
    TooShort { len: usize },
    /// More bytes than the largest frame ([`MAX_FRAME_LEN`]).
    TooLong { len: usize },
    /// The high nibble of byte 0 is not a message type this crate knows.
    UnknownMType(u8),
    /// Flag bits other than "confirmed" are set in byte 0 (they are reserved, 0).
    ReservedFlags(u8),
    /// The "confirmed" flag does not match the message type: alarms are always
    /// confirmed, every other type never is.
    ConfirmedFlag { mtype: MType, confirmed: bool },
    /// The MIC does not match: wrong key, wrong direction, or altered bytes.
    BadMic,
    /// A message type sent in the direction it never travels (a `Downlink` going up, a
    /// `Report`/`Alarm`/`Heartbeat` going down).
    WrongDirection { mtype: MType, dir: Dir },
    /// The payload is not as long as its type (and, for reports, its count) says.
    PayloadLength { mtype: MType, len: usize },
    /// A report must carry 1 to [`MAX_READINGS`](crate::MAX_READINGS) readings.
    ReadingCount(usize),
    /// A report reading's quantity code this crate does not know.
    UnknownQuantity(u8),
    /// An alarm kind code this crate does not know.
    UnknownAlarmKind(u8),
    /// A downlink command code this crate does not know.
    UnknownCommand(u8),
    /// A boolean that is neither 0 nor 1, reserved bits that are set, or a value where
    /// the field must be 0 (e.g. `ack_fcnt` without the ack flag).
    InvalidField { field: &'static str, value: u32 },
    /// The output buffer handed to [`seal`](crate::seal) is too small.
    BufferTooSmall { needed: usize, got: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::TooShort { len } => write!(
                f,
                "frame too short: {len} bytes, a header and MIC need at least {MIN_FRAME_LEN}"
            ),
            FrameError::TooLong { len } => write!(
                f,
                "frame too long: {len} bytes, at most {MAX_FRAME_LEN} allowed"
            ),
            FrameError::UnknownMType(code) => write!(
                f,
                "unknown message type {code:#x} (known: 0x1 report, 0x2 alarm, 0x3 heartbeat, 0x4 downlink)"
            ),
            FrameError::ReservedFlags(flags) => write!(
                f,
                "reserved flag bits set in byte 0: {flags:#x} (only 0x1 = confirmed is defined)"
            ),
            FrameError::ConfirmedFlag { mtype, confirmed } => {
                if confirmed {
                    write!(f, "{mtype} frames are never confirmed (only alarms are)")
                } else {
                    write!(f, "{mtype} frames must be confirmed (alarms always are)")
                }
            }
            FrameError::BadMic => write!(
                f,
                "MIC mismatch: wrong key or direction, or the frame was altered"
            ),
            FrameError::WrongDirection { mtype, dir } => {
                write!(f, "{mtype} frames never travel {dir}")
            }
            FrameError::PayloadLength { mtype, len } => match mtype.payload_len() {
                Some(want) => write!(
                    f,
                    "{mtype} payload is {len} bytes, it must be exactly {want}"
                ),
                None => write!(
                    f,
                    "{mtype} payload is {len} bytes, it must be 1 + 5 per reading (6 to 41)"
                ),
            },
            FrameError::ReadingCount(n) => write!(
                f,
                "a report carries {n} readings, it must carry 1 to {}",
                crate::MAX_READINGS
            ),
            FrameError::UnknownQuantity(code) => {
                write!(f, "unknown report quantity {code} (known: 1 to 6)")
            }
            FrameError::UnknownAlarmKind(code) => {
                write!(f, "unknown alarm kind {code} (known: 1 to 6)")
            }
            FrameError::UnknownCommand(code) => {
                write!(f, "unknown downlink command {code} (known: 0 none, 1 set heartbeat interval)")
            }
            FrameError::InvalidField { field, value } => {
                write!(f, "invalid {field}: {value:#x}")
            }
            FrameError::BufferTooSmall { needed, got } => write!(
                f,
                "output buffer of {got} bytes, the frame needs {needed} (use MAX_FRAME_LEN)"
            ),
        }
    }
}

impl core::error::Error for FrameError {}
