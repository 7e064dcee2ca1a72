//! The frame of the LoRa link: a 9-byte header in the clear, the payload encrypted, and
//! an 8-byte MIC over both, with the node's own AES-128 key.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | mtype | flags |                dev_addr (bytes 1..5)          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  dev_addr     |                fcnt (bytes 5..9)              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  fcnt         |  encrypted payload (0 to 48 bytes) ...        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  MIC: the AES-128-CCM tag (8 bytes, over header and payload)  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! All integers are big-endian. Byte 0: the message type in the high nibble ([`MType`]:
//! 0x1 report, 0x2 alarm, 0x3 heartbeat, 0x4 downlink), flags in the low nibble (0x1 =
//! confirmed, set on alarms and only on alarms; other bits 0). `fcnt` is the node's uplink
//! counter on uplinks and the hub's downlink counter for that node on downlinks; both only
//! ever increase, so the receiver refuses any fcnt not above the highest it accepted.
//! A frame is [`MIN_FRAME_LEN`] (17) to [`MAX_FRAME_LEN`] (65) bytes.
//!
//! Encryption and MIC: AES-128-CCM (RFC 3610) with M = 8 (tag bytes), L = 2 (length
//! field bytes), so a 13-byte nonce:
//!
//! ```text
//! nonce = dev_addr (4) | fcnt (4) | dir (1: 0 up, 1 down) | byte 0 of the frame (1) | 0 0 0
//! AAD   = frame bytes 0..9 (the header is authenticated, not encrypted)
//! ```
//!
//! A (key, dev_addr, fcnt, dir) never repeats as long as counters only increase, so a
//! nonce is never reused. The direction in the nonce makes a frame sealed for one
//! direction fail the MIC in the other.
//!
//! Promises: [`peek`], [`open`] and [`seal`] never panic, whatever the bytes; [`open`]
//! checks the MIC before it believes anything past the length (the message type, flags and
//! payload are only interpreted once the MIC matched); every frame [`seal`] writes,
//! [`open`] returns unchanged.

use core::fmt;

use aes::Aes128;
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U8};
use ccm::Ccm;

use crate::payload::Payload;
use crate::FrameError;

/// Bytes before the payload: byte 0, dev_addr, fcnt.
pub const HEADER_LEN: usize = 9;
/// Bytes of the MIC (the CCM tag, M = 8).
pub const MIC_LEN: usize = 8;
/// The largest plaintext payload.
pub const MAX_PAYLOAD: usize = 48;
/// The smallest frame: header and MIC, no payload.
pub const MIN_FRAME_LEN: usize = HEADER_LEN + MIC_LEN;
/// The largest frame: 9 + 48 + 8 = 65 bytes.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD + MIC_LEN;
/// Bytes of the CCM nonce (15 - L with L = 2).
pub const NONCE_LEN: usize = 13;
/// The "confirmed" flag in the low nibble of byte 0.
pub const FLAG_CONFIRMED: u8 = 0x1;

/// AES-128-CCM with an 8-byte tag and a 13-byte nonce (L = 2).
type Cipher = Ccm<Aes128, U8, U13>;

/// A node's 32-bit address on the link (assigned by the hub at provisioning; picks the
/// key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct DevAddr(pub u32);

impl fmt::Display for DevAddr {
    /// Eight lower-case hex digits, as provisioning files print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A node's AES-128 key, shared by the node and the hub only (the forwarder never has it).
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 16]);

impl fmt::Debug for Key {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The message type (high nibble of byte 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MType {
    /// 0x1, node -> hub, unconfirmed.
    Report,
    /// 0x2, node -> hub, always confirmed.
    Alarm,
    /// 0x3, node -> hub, unconfirmed.
    Heartbeat,
    /// 0x4, hub -> node.
    Downlink,
}

impl MType {
    pub fn code(self) -> u8 {
        match self {
            MType::Report => 0x1,
            MType::Alarm => 0x2,
            MType::Heartbeat => 0x3,
            MType::Downlink => 0x4,
        }
    }

    pub fn from_code(code: u8) -> Result<MType, FrameError> {
        Ok(match code {
            0x1 => MType::Report,
            0x2 => MType::Alarm,
            0x3 => MType::Heartbeat,
            0x4 => MType::Downlink,
            other => return Err(FrameError::UnknownMType(other)),
        })
    }

    /// The direction this type travels.
    pub fn dir(self) -> Dir {
        match self {
            MType::Downlink => Dir::Down,
            MType::Report | MType::Alarm | MType::Heartbeat => Dir::Up,
        }
    }

    /// Whether frames of this type carry the confirmed flag (alarms always, others never).
    pub fn confirmed(self) -> bool {
        self == MType::Alarm
    }

    /// The fixed payload length, `None` for reports (1 + 5 per reading).
    pub fn payload_len(self) -> Option<usize> {
        match self {
            MType::Report => None,
            MType::Alarm => Some(crate::payload::ALARM_LEN),
            MType::Heartbeat => Some(crate::payload::HEARTBEAT_LEN),
            MType::Downlink => Some(crate::payload::DOWNLINK_LEN),
        }
    }

    /// Lower-case name: `report`, `alarm`, `heartbeat`, `downlink`.
    pub fn as_str(self) -> &'static str {
        match self {
            MType::Report => "report",
            MType::Alarm => "alarm",
            MType::Heartbeat => "heartbeat",
            MType::Downlink => "downlink",
        }
    }
}

impl fmt::Display for MType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which way a frame travels (part of the nonce).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Node -> hub (nonce byte 0).
    Up,
    /// Hub -> node (nonce byte 1).
    Down,
}

impl Dir {
    fn code(self) -> u8 {
        match self {
            Dir::Up => 0,
            Dir::Down => 1,
        }
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::Up => "up (node to hub)",
            Dir::Down => "down (hub to node)",
        })
    }
}

/// What [`peek`] reads without the key. Nothing in it is authenticated yet: use it only
/// to find the key, then [`open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub dev_addr: DevAddr,
    pub fcnt: u32,
    pub mtype: MType,
    pub confirmed: bool,
}

/// A frame in the clear: what [`seal`] takes and [`open`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub dev_addr: DevAddr,
    pub fcnt: u32,
    /// Must equal `payload.mtype().confirmed()`: true for alarms, false otherwise.
    pub confirmed: bool,
    pub payload: Payload,
}

impl Frame {
    /// A frame with the confirmed flag its payload's type calls for.
    pub fn new(dev_addr: DevAddr, fcnt: u32, payload: Payload) -> Frame {
        Frame {
            dev_addr,
            fcnt,
            confirmed: payload.mtype().confirmed(),
            payload,
        }
    }

    pub fn mtype(&self) -> MType {
        self.payload.mtype()
    }

    /// Bytes of the sealed frame.
    pub fn sealed_len(&self) -> usize {
        HEADER_LEN + self.payload.encoded_len() + MIC_LEN
    }

    /// The direction this frame travels (from its type).
    pub fn dir(&self) -> Dir {
        self.mtype().dir()
    }
}

/// Reads the header of a received frame without the key (the hub looks the key up by
/// `dev_addr`). Checks the length, the type and the flags; says nothing about
/// authenticity.
pub fn peek(bytes: &[u8]) -> Result<Header, FrameError> {
    let header = split(bytes)?.header;
    let mtype = MType::from_code(header[0] >> 4)?;
    let confirmed = flags(mtype, header[0])?;
    let (dev_addr, fcnt) = addr_fcnt(header);
    Ok(Header {
        dev_addr,
        fcnt,
        mtype,
        confirmed,
    })
}

/// Encodes, encrypts and authenticates `frame` into `out`; returns the frame's length.
/// `dir` must be the direction the frame's type travels (else
/// [`FrameError::WrongDirection`]); `out` needs [`Frame::sealed_len`] bytes
/// ([`MAX_FRAME_LEN`] always suffices).
pub fn seal(frame: &Frame, key: &Key, dir: Dir, out: &mut [u8]) -> Result<usize, FrameError> {
    let mtype = frame.mtype();
    if mtype.dir() != dir {
        return Err(FrameError::WrongDirection { mtype, dir });
    }
    if frame.confirmed != mtype.confirmed() {
        return Err(FrameError::ConfirmedFlag {
            mtype,
            confirmed: frame.confirmed,
        });
    }
    let len = frame.sealed_len();
    let got = out.len();
    let Some(out) = out.get_mut(..len) else {
        return Err(FrameError::BufferTooSmall { needed: len, got });
    };
    let mut header = [0u8; HEADER_LEN];
    header[0] = mtype.code() << 4 | if frame.confirmed { FLAG_CONFIRMED } else { 0 };
    header[1..5].copy_from_slice(&frame.dev_addr.0.to_be_bytes());
    header[5..9].copy_from_slice(&frame.fcnt.to_be_bytes());
    let (head, rest) = out.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&header);
    let (body, mic) = rest.split_at_mut(len - HEADER_LEN - MIC_LEN);
    frame.payload.encode(body)?;
    let nonce = nonce(&header, dir);
    let tag = cipher(key)
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce), &header, body)
        // Only fails for payloads longer than L = 2 allows (64 KiB); ours are <= 48.
        .map_err(|_| FrameError::PayloadLength {
            mtype,
            len: body.len(),
        })?;
    mic.copy_from_slice(&tag);
    Ok(len)
}

/// Checks the MIC of a received frame with `key` for direction `dir`, then decrypts and
/// parses it. Nothing past the length is believed before the MIC matched: a frame with a
/// wrong key, direction or any altered byte is [`FrameError::BadMic`].
pub fn open(bytes: &[u8], key: &Key, dir: Dir) -> Result<Frame, FrameError> {
    let Parts { header, body, mic } = split(bytes)?;
    let mut plain = [0u8; MAX_PAYLOAD];
    let Some(plain) = plain.get_mut(..body.len()) else {
        return Err(FrameError::TooLong { len: bytes.len() });
    };
    plain.copy_from_slice(body);
    let nonce = nonce(header, dir);
    cipher(key)
        .decrypt_in_place_detached(
            GenericArray::from_slice(&nonce),
            header,
            plain,
            GenericArray::from_slice(mic),
        )
        .map_err(|_| FrameError::BadMic)?;
    // Authentic from here on.
    let mtype = MType::from_code(header[0] >> 4)?;
    let confirmed = flags(mtype, header[0])?;
    if mtype.dir() != dir {
        return Err(FrameError::WrongDirection { mtype, dir });
    }
    let payload = Payload::decode(mtype, plain)?;
    let (dev_addr, fcnt) = addr_fcnt(header);
    Ok(Frame {
        dev_addr,
        fcnt,
        confirmed,
        payload,
    })
}

/// The three parts of a received frame.
struct Parts<'a> {
    header: &'a [u8; HEADER_LEN],
    body: &'a [u8],
    mic: &'a [u8],
}

/// Header, encrypted payload and MIC of a frame of acceptable length.
fn split(bytes: &[u8]) -> Result<Parts<'_>, FrameError> {
    let len = bytes.len();
    if len < MIN_FRAME_LEN {
        return Err(FrameError::TooShort { len });
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong { len });
    }
    let (header, rest) = bytes.split_at(HEADER_LEN);
    let (body, mic) = rest.split_at(rest.len() - MIC_LEN);
    let header: &[u8; HEADER_LEN] = header
        .try_into()
        .map_err(|_| FrameError::TooShort { len })?;
    Ok(Parts { header, body, mic })
}

/// The confirmed flag of byte 0, checked against the type and the reserved bits.
fn flags(mtype: MType, byte0: u8) -> Result<bool, FrameError> {
    let flags = byte0 & 0x0f;
    if flags & !FLAG_CONFIRMED != 0 {
        return Err(FrameError::ReservedFlags(flags));
    }
    let confirmed = flags == FLAG_CONFIRMED;
    if confirmed != mtype.confirmed() {
        return Err(FrameError::ConfirmedFlag { mtype, confirmed });
    }
    Ok(confirmed)
}

fn addr_fcnt(header: &[u8; HEADER_LEN]) -> (DevAddr, u32) {
    let [_, a0, a1, a2, a3, f0, f1, f2, f3] = *header;
    (
        DevAddr(u32::from_be_bytes([a0, a1, a2, a3])),
        u32::from_be_bytes([f0, f1, f2, f3]),
    )
}

/// dev_addr | fcnt | dir | byte 0 | 0 0 0.
fn nonce(header: &[u8; HEADER_LEN], dir: Dir) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&header[1..9]);
    n[8] = dir.code();
    n[9] = header[0];
    n
}

fn cipher(key: &Key) -> Cipher {
    Cipher::new(GenericArray::from_slice(&key.0))
}
