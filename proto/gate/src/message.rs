//! The messages of the gate link, one plain struct each. The same structs are the JSON
//! bodies of the HTTP transport (with the `serde` feature) and, through
//! [`Repr`](crate::Repr), the payloads of binary frames on raw TCP and MQTT.
//!
//! Direction and pairing (`seq` is the gate's sequence number and replies echo it, except
//! in the one command the hub starts, [`RemoteOpen`]):
//!
//! | gate -> hub | hub -> gate |
//! |---|---|
//! | [`AccessRequest`] | [`Decision`] |
//! | [`OfflineBatch`] | [`OfflineAck`] |
//! | [`AllowListRequest`] | one or more [`AllowListDelta`] |
//! | [`DoorEvent`], [`Tamper`], [`Heartbeat`] | (none) |
//! | any request the hub refuses | [`ErrorReply`] |
//! | (none: the gate reports the door's `Opened` as usual) | [`RemoteOpen`] |
//!
//! # Commands from the hub
//! [`RemoteOpen`] is the hub's own message, not a reply: its `seq` is the hub's command
//! number for the gate (the hub's durable, strictly increasing request id), a counter
//! separate from the gate's. The gate keeps a [`ReplayWindow`](crate::ReplayWindow) of
//! command numbers (persisted like its own `seq`) and acts on a command only if its tag
//! verifies with the gate's key and its number is above every command number it accepted
//! before; a recorded command played again is refused. The hub's replies are unaffected.
//!
//! Times are unix seconds by the gate's clock. Code enums keep an `Unknown(n)` variant so
//! a newer peer's codes parse and re-emit unchanged.

use heapless::Vec;

use crate::{CardId, EntryHash, Reason};

/// Most [`OfflineEntry`]s in one [`OfflineBatch`] (16 * 42 bytes fits one frame).
pub const MAX_OFFLINE_ENTRIES: usize = 16;
/// Most adds, and most removes, in one [`AllowListDelta`] chunk (2 * 30 * 16 bytes fits one
/// frame).
pub const MAX_DELTA_ENTRIES: usize = 30;

/// A card was presented. HTTP: `POST /api/v1/access/check` with
/// `{"gate_id": 7, "acc_id": "deadbeef", "seq": 1, "time": 1694498816}`; `seq` and
/// `time` may be left out (they default to 0) as in the original design's
/// `{"acc_id", "gate_id"}` body. In a binary frame, `gate_id` and `seq` are the header's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AccessRequest {
    pub gate_id: u32,
    #[cfg_attr(feature = "serde", serde(default))]
    pub seq: u32,
    #[cfg_attr(feature = "serde", serde(default))]
    pub time: u32,
    #[cfg_attr(feature = "serde", serde(rename = "acc_id"))]
    pub card: CardId,
}

/// The hub's answer to an [`AccessRequest`]: allowed or not (see [`Reason::is_allowed`]),
/// and how long to pulse the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Decision {
    /// The request's `seq`.
    pub seq: u32,
    pub reason: Reason,
    pub relay_ms: u16,
}

/// What the door contact or exit button did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum DoorEventKind {
    Opened,
    Closed,
    /// Open longer than the gate's held-open time.
    HeldOpen,
    /// Opened without a grant or the exit button.
    Forced,
    ExitButton,
    Unknown(u8),
}

impl DoorEventKind {
    pub fn from_code(code: u8) -> DoorEventKind {
        match code {
            0 => DoorEventKind::Opened,
            1 => DoorEventKind::Closed,
            2 => DoorEventKind::HeldOpen,
            3 => DoorEventKind::Forced,
            4 => DoorEventKind::ExitButton,
            n => DoorEventKind::Unknown(n),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            DoorEventKind::Opened => 0,
            DoorEventKind::Closed => 1,
            DoorEventKind::HeldOpen => 2,
            DoorEventKind::Forced => 3,
            DoorEventKind::ExitButton => 4,
            DoorEventKind::Unknown(n) => n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DoorEvent {
    pub seq: u32,
    pub time: u32,
    pub kind: DoorEventKind,
}

/// The tamper switch changed: `active` is true while the enclosure is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Tamper {
    pub seq: u32,
    pub time: u32,
    pub active: bool,
}

/// Status bits of a [`Heartbeat`]. Bits this crate does not name are kept as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct HeartbeatFlags(pub u8);

impl HeartbeatFlags {
    pub const DOOR_CLOSED: u8 = 0x01;
    pub const TAMPER: u8 = 0x02;
    pub const ON_MAINS: u8 = 0x04;

    pub fn new(door_closed: bool, tamper: bool, on_mains: bool) -> HeartbeatFlags {
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        HeartbeatFlags(
            bit(door_closed, Self::DOOR_CLOSED)
                | bit(tamper, Self::TAMPER)
                | bit(on_mains, Self::ON_MAINS),
        )
    }

    pub fn door_closed(self) -> bool {
        self.0 & Self::DOOR_CLOSED != 0
    }

    pub fn tamper(self) -> bool {
        self.0 & Self::TAMPER != 0
    }

    pub fn on_mains(self) -> bool {
        self.0 & Self::ON_MAINS != 0
    }
}

/// Sent periodically so the hub can supervise the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Heartbeat {
    pub seq: u32,
    pub time: u32,
    /// The allow-list version the gate holds.
    pub allowlist_version: u32,
    /// Offline decisions not yet acknowledged by the hub.
    pub offline_pending: u16,
    pub flags: HeartbeatFlags,
}

/// One decision the gate took alone, from its allow-list, while the hub was unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OfflineEntry {
    /// The seq the gate gave this decision; unique per gate, it is the idempotency key:
    /// the hub stores an entry once however often it is uploaded.
    pub gate_seq: u32,
    pub time: u32,
    #[cfg_attr(feature = "serde", serde(rename = "acc_id"))]
    pub card: CardId,
    pub reason: Reason,
}

/// Offline decisions uploaded once the hub is back. The gate drops entries only after an
/// [`OfflineAck`] with the batch's `seq`; re-uploading a batch is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OfflineBatch {
    pub seq: u32,
    pub entries: Vec<OfflineEntry, MAX_OFFLINE_ENTRIES>,
}

/// The hub stored every entry of the batch `seq`: `accepted` new ones, `duplicates` it
/// already had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct OfflineAck {
    pub seq: u32,
    pub accepted: u16,
    pub duplicates: u16,
}

/// "I hold allow-list version `have_version`; send what changed" (0: I hold nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AllowListRequest {
    pub seq: u32,
    pub have_version: u32,
}

/// One chunk of allow-list changes taking the gate from `from_version` to `to_version`.
///
/// A change bigger than one frame comes as several chunks answering the same request (same
/// `seq`, `from_version` and `to_version`); all but the last have `more` set. `full` (on
/// every chunk of a full transfer) means the gate clears its list before the first chunk.
/// The gate applies removes then adds of each chunk and adopts `to_version` only after the
/// chunk without `more`; adds and removes are set operations, so applying a chunk twice
/// changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AllowListDelta {
    pub seq: u32,
    pub from_version: u32,
    pub to_version: u32,
    pub full: bool,
    pub adds: Vec<EntryHash, MAX_DELTA_ENTRIES>,
    pub removes: Vec<EntryHash, MAX_DELTA_ENTRIES>,
    pub more: bool,
}

/// Why the hub refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ErrorCode {
    /// The gate id is not known to the hub, or disabled.
    UnknownGate,
    /// Wrong tag, API key or credentials.
    BadAuth,
    /// The sequence number was not above the last one accepted.
    Replay,
    /// The frame or body could not be parsed.
    Malformed,
    /// Bigger than the hub accepts.
    Oversize,
    /// A protocol version or message type the hub does not handle.
    Unsupported,
    Unknown(u8),
}

impl ErrorCode {
    pub fn from_code(code: u8) -> ErrorCode {
        match code {
            1 => ErrorCode::UnknownGate,
            2 => ErrorCode::BadAuth,
            3 => ErrorCode::Replay,
            4 => ErrorCode::Malformed,
            5 => ErrorCode::Oversize,
            6 => ErrorCode::Unsupported,
            n => ErrorCode::Unknown(n),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            ErrorCode::UnknownGate => 1,
            ErrorCode::BadAuth => 2,
            ErrorCode::Replay => 3,
            ErrorCode::Malformed => 4,
            ErrorCode::Oversize => 5,
            ErrorCode::Unsupported => 6,
            ErrorCode::Unknown(n) => n,
        }
    }
}

/// The hub's refusal of the gate's request `seq` (0 if the request's seq could not be
/// read). Sealed with the gate's key when the hub has one; otherwise (unknown gate) its
/// tag cannot verify, and the gate may only log it, never act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ErrorReply {
    pub seq: u32,
    pub code: ErrorCode,
}

/// The hub asks the gate to pulse its door relay for `relay_ms` (an admin's remote
/// door open). `seq` is the hub's command number, not the gate's (see the module docs);
/// the admin's name and reason stay on the hub. The gate pulses the relay and allows one
/// opening, as for a grant, and reports the door as usual. No reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RemoteOpen {
    /// The hub's command number (its request id), strictly increasing per gate.
    pub seq: u32,
    pub relay_ms: u16,
}

/// Any one message of the gate link.
///
/// About 1 KB, like the frame it comes from: the list-carrying variants hold their entries
/// inline because the firmware has no allocator to box them. Hold one at a time, or box it
/// on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Message {
    AccessRequest(AccessRequest),
    Decision(Decision),
    DoorEvent(DoorEvent),
    Tamper(Tamper),
    Heartbeat(Heartbeat),
    OfflineBatch(OfflineBatch),
    OfflineAck(OfflineAck),
    AllowListRequest(AllowListRequest),
    AllowListDelta(AllowListDelta),
    Error(ErrorReply),
    RemoteOpen(RemoteOpen),
}

impl Message {
    /// The gate's sequence number this message carries or answers (for a [`RemoteOpen`]:
    /// the hub's command number).
    pub fn seq(&self) -> u32 {
        match self {
            Message::AccessRequest(m) => m.seq,
            Message::Decision(m) => m.seq,
            Message::DoorEvent(m) => m.seq,
            Message::Tamper(m) => m.seq,
            Message::Heartbeat(m) => m.seq,
            Message::OfflineBatch(m) => m.seq,
            Message::OfflineAck(m) => m.seq,
            Message::AllowListRequest(m) => m.seq,
            Message::AllowListDelta(m) => m.seq,
            Message::Error(m) => m.seq,
            Message::RemoteOpen(m) => m.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_including_unknown() {
        for n in 0..=u8::MAX {
            assert_eq!(DoorEventKind::from_code(n).code(), n);
            assert_eq!(ErrorCode::from_code(n).code(), n);
        }
        assert_eq!(DoorEventKind::from_code(3), DoorEventKind::Forced);
        assert_eq!(ErrorCode::from_code(3), ErrorCode::Replay);
        assert_eq!(ErrorCode::from_code(0), ErrorCode::Unknown(0));
    }

    #[test]
    fn heartbeat_flags() {
        let f = HeartbeatFlags::new(true, false, true);
        assert_eq!(f.0, 0x05);
        assert!(f.door_closed() && !f.tamper() && f.on_mains());
    }

    /// The HTTP transport's JSON bodies.
    #[cfg(feature = "serde")]
    mod json {
        use super::*;
        use serde::de::DeserializeOwned;
        use serde::Serialize;
        use serde_json::{from_str, from_value, json, to_value, Value};

        fn round_trip<T>(message: &T, expected: Value)
        where
            T: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug,
        {
            let value = to_value(message).unwrap();
            assert_eq!(value, expected);
            assert_eq!(&from_value::<T>(value).unwrap(), message);
        }

        fn card(hex: &str) -> CardId {
            CardId::from_hex(hex).unwrap()
        }

        #[test]
        fn access_request_is_the_original_designs_body() {
            let req = AccessRequest {
                gate_id: 7,
                seq: 1,
                time: 1_694_498_816,
                card: card("04a1b2c3d4e5f6"),
            };
            round_trip(
                &req,
                json!({"gate_id": 7, "seq": 1, "time": 1_694_498_816, "acc_id": "04a1b2c3d4e5f6"}),
            );
            // seq and time may be left out; hex in either case is accepted.
            let bare: AccessRequest = from_str(r#"{"acc_id": "DEADBEEF", "gate_id": 3}"#).unwrap();
            assert_eq!(bare.card.as_bytes(), &[0xde, 0xad, 0xbe, 0xef]);
            assert_eq!((bare.gate_id, bare.seq, bare.time), (3, 0, 0));
            for bad in [
                r#"{"acc_id": "", "gate_id": 3}"#,
                r#"{"acc_id": "abc", "gate_id": 3}"#,
                r#"{"acc_id": "zz", "gate_id": 3}"#,
                r#"{"acc_id": 1234, "gate_id": 3}"#,
                r#"{"gate_id": 3}"#,
            ] {
                assert!(from_str::<AccessRequest>(bad).is_err(), "{bad}");
            }
            let long = std::format!(r#"{{"acc_id": "{}", "gate_id": 3}}"#, "00".repeat(33));
            assert!(from_str::<AccessRequest>(&long).is_err());
        }

        #[test]
        fn every_message_round_trips() {
            round_trip(
                &Decision {
                    seq: 1,
                    reason: Reason::OutsideSchedule,
                    relay_ms: 0,
                },
                json!({"seq": 1, "reason": "outside_schedule", "relay_ms": 0}),
            );
            round_trip(
                &DoorEvent {
                    seq: 2,
                    time: 10,
                    kind: DoorEventKind::HeldOpen,
                },
                json!({"seq": 2, "time": 10, "kind": "held_open"}),
            );
            round_trip(
                &DoorEvent {
                    seq: 2,
                    time: 10,
                    kind: DoorEventKind::Unknown(9),
                },
                json!({"seq": 2, "time": 10, "kind": {"unknown": 9}}),
            );
            round_trip(
                &Tamper {
                    seq: 3,
                    time: 11,
                    active: true,
                },
                json!({"seq": 3, "time": 11, "active": true}),
            );
            round_trip(
                &Heartbeat {
                    seq: 4,
                    time: 12,
                    allowlist_version: 42,
                    offline_pending: 3,
                    flags: HeartbeatFlags::new(true, true, false),
                },
                json!({"seq": 4, "time": 12, "allowlist_version": 42,
                       "offline_pending": 3, "flags": 3}),
            );
            let entry = OfflineEntry {
                gate_seq: 900,
                time: 13,
                card: card("0102"),
                reason: Reason::OfflineGranted,
            };
            round_trip(
                &OfflineBatch {
                    seq: 5,
                    entries: heapless::Vec::from_slice(&[entry]).unwrap(),
                },
                json!({"seq": 5, "entries": [
                    {"gate_seq": 900, "time": 13, "acc_id": "0102", "reason": "offline_granted"}
                ]}),
            );
            round_trip(
                &OfflineAck {
                    seq: 5,
                    accepted: 1,
                    duplicates: 0,
                },
                json!({"seq": 5, "accepted": 1, "duplicates": 0}),
            );
            round_trip(
                &AllowListRequest {
                    seq: 6,
                    have_version: 0,
                },
                json!({"seq": 6, "have_version": 0}),
            );
            round_trip(
                &AllowListDelta {
                    seq: 6,
                    from_version: 0,
                    to_version: 1,
                    full: true,
                    adds: heapless::Vec::from_slice(&[EntryHash([0xab; 16])]).unwrap(),
                    removes: heapless::Vec::new(),
                    more: false,
                },
                json!({"seq": 6, "from_version": 0, "to_version": 1, "full": true,
                       "adds": ["abababababababababababababababab"], "removes": [],
                       "more": false}),
            );
            round_trip(
                &ErrorReply {
                    seq: 7,
                    code: ErrorCode::BadAuth,
                },
                json!({"seq": 7, "code": "bad_auth"}),
            );
            round_trip(
                &RemoteOpen {
                    seq: 40,
                    relay_ms: 3000,
                },
                json!({"seq": 40, "relay_ms": 3000}),
            );
            assert!(from_str::<RemoteOpen>(r#"{"seq": 1, "relay_ms": 70000}"#).is_err());
        }

        #[test]
        fn oversize_lists_are_refused() {
            let entry = json!({"gate_seq": 1, "time": 1, "acc_id": "01", "reason": "granted"});
            let batch = json!({"seq": 1, "entries": std::vec![entry; MAX_OFFLINE_ENTRIES + 1]});
            assert!(from_value::<OfflineBatch>(batch).is_err());
        }
    }
}
