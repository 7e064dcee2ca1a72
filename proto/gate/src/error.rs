//! [`Error`]: everything that can be wrong with bytes received on the gate link, or with a
//! message about to be sent. Each variant says what was wrong; [`Error::reply_code`] maps
//! it to the [`ErrorCode`] the peer is told.

use core::fmt;

use crate::frame::MessageType;
use crate::message::ErrorCode;

/// What was wrong with a frame, a payload, a card id or a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the frame (or its length field) needs.
    Truncated { needed: usize, got: usize },
    /// More bytes than the frame's length field covers.
    TrailingBytes { frame_len: usize, got: usize },
    /// The length field announces less than a header and a tag.
    LengthTooSmall { length: u16 },
    /// The frame is longer than [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN) or than the
    /// decoder's buffer.
    Oversize { frame_len: usize, max: usize },
    /// A protocol version this crate does not speak.
    UnsupportedVersion(u8),
    /// A message type this crate does not know.
    UnknownType(u8),
    /// The payload's length does not match what its message type and counts say.
    PayloadLength { msg_type: MessageType, len: usize },
    /// A card id must be 1 to [`CardId::MAX_LEN`](crate::CardId::MAX_LEN) bytes.
    CardLength(usize),
    /// More list entries than one frame may carry.
    TooManyEntries { count: usize, max: usize },
    /// A reason code this crate does not know (a gate must treat it as a deny).
    UnknownReason(u8),
    /// A boolean that is neither 0 nor 1, or reserved bits that are set.
    InvalidField { field: &'static str, value: u8 },
    /// The authentication tag does not match.
    BadTag,
    /// The buffer handed to `emit`/`seal` is not the size of the frame.
    BufferSize { needed: usize, got: usize },
    /// An access request's `gate_id` differs from the frame header's.
    GateIdMismatch { header: u32, message: u32 },
    /// A sequence number not above the highest one already accepted.
    Replayed { seq: u32, highest: u32 },
    /// A card id or allow-list entry that is not a hex string of the right length.
    BadHex,
}

impl Error {
    /// The code to put in the [`ErrorReply`](crate::ErrorReply) that answers this error.
    pub fn reply_code(&self) -> ErrorCode {
        match self {
            Error::Oversize { .. } => ErrorCode::Oversize,
            Error::UnsupportedVersion(_) | Error::UnknownType(_) => ErrorCode::Unsupported,
            Error::BadTag | Error::GateIdMismatch { .. } => ErrorCode::BadAuth,
            Error::Replayed { .. } => ErrorCode::Replay,
            Error::Truncated { .. }
            | Error::TrailingBytes { .. }
            | Error::LengthTooSmall { .. }
            | Error::PayloadLength { .. }
            | Error::CardLength(_)
            | Error::TooManyEntries { .. }
            | Error::UnknownReason(_)
            | Error::InvalidField { .. }
            | Error::BufferSize { .. }
            | Error::BadHex => ErrorCode::Malformed,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { needed, got } => {
                write!(f, "truncated frame: {got} bytes, at least {needed} needed")
            }
            Error::TrailingBytes { frame_len, got } => write!(
                f,
                "{got} bytes given but the length field covers a {frame_len}-byte frame"
            ),
            Error::LengthTooSmall { length } => write!(
                f,
                "length field {length} is below the {} bytes of header and tag",
                crate::frame::MIN_FRAME_LEN - crate::frame::LENGTH_FIELD_LEN
            ),
            Error::Oversize { frame_len, max } => {
                write!(f, "frame of {frame_len} bytes exceeds the {max}-byte limit")
            }
            Error::UnsupportedVersion(v) => write!(
                f,
                "unsupported protocol version {v} (this side speaks {})",
                crate::frame::VERSION
            ),
            Error::UnknownType(t) => write!(f, "unknown message type {t:#04x}"),
            Error::PayloadLength { msg_type, len } => write!(
                f,
                "a {} payload cannot be {len} bytes long",
                msg_type.name()
            ),
            Error::CardLength(n) => write!(
                f,
                "card id must be 1 to {} bytes, not {n}",
                crate::CardId::MAX_LEN
            ),
            Error::TooManyEntries { count, max } => {
                write!(f, "{count} entries in one frame, at most {max} allowed")
            }
            Error::UnknownReason(code) => {
                write!(f, "unknown reason code {code} (treat as deny)")
            }
            Error::InvalidField { field, value } => {
                write!(f, "field `{field}` has invalid value {value:#04x}")
            }
            Error::BadTag => {
                f.write_str("authentication tag does not match: wrong gate key or altered frame")
            }
            Error::BufferSize { needed, got } => {
                write!(f, "buffer of {got} bytes for a {needed}-byte frame")
            }
            Error::GateIdMismatch { header, message } => write!(
                f,
                "access request names gate {message} but the frame is for gate {header}"
            ),
            Error::Replayed { seq, highest } => write!(
                f,
                "sequence number {seq} replayed or out of order (highest accepted {highest})"
            ),
            Error::BadHex => f.write_str("not a hex string of the expected length"),
        }
    }
}

impl core::error::Error for Error {}
