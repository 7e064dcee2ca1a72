//! Byte fixtures of every message type, the CCM known-answer test, and everything a frame
//! can be refused for.
//!
//! The fixture ciphertexts and MICs were computed independently with Python's
//! `cryptography` (OpenSSL's AES-CCM):
//!
//! ```python
//! from cryptography.hazmat.primitives.ciphers.aead import AESCCM
//! hdr = bytes([byte0]) + dev_addr.to_bytes(4, "big") + fcnt.to_bytes(4, "big")
//! nonce = hdr[1:9] + bytes([dir, byte0, 0, 0, 0])
//! frame = hdr + AESCCM(bytes(range(16)), tag_length=8).encrypt(nonce, plaintext, hdr)
//! ```
//!
//! The plaintexts are written out field by field below, from the layout in the payload
//! module docs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use ccm::aead::generic_array::GenericArray;
use ccm::aead::AeadInPlace;
use common::{ccm, hex, raw_seal, DEV, KEY};
use gatehouse_lora_proto::{
    heapless, open, peek, seal, Alarm, AlarmKind, Command, DevAddr, Dir, Downlink, Frame,
    FrameError, Header, Heartbeat, Key, MType, Payload, Quantity, Reading, Report, MAX_FRAME_LEN,
    MIN_FRAME_LEN,
};

fn report() -> Frame {
    let mut readings = heapless::Vec::new();
    readings
        .push(Reading {
            quantity: Quantity::Temperature,
            value: 2150,
        })
        .unwrap();
    readings
        .push(Reading {
            quantity: Quantity::Battery,
            value: 3012,
        })
        .unwrap();
    Frame::new(DEV, 1, Payload::Report(Report { readings }))
}

fn alarm() -> Frame {
    Frame::new(
        DEV,
        2,
        Payload::Alarm(Alarm {
            kind: AlarmKind::DoorOpen,
            active: true,
            alarm_id: 7,
            value: 0,
        }),
    )
}

fn heartbeat() -> Frame {
    Frame::new(
        DEV,
        3,
        Payload::Heartbeat(Heartbeat {
            battery_mv: 3012,
            flags: Heartbeat::FLAG_EXTERNAL_POWER,
            reboots: 3,
            last_rssi: -87,
            last_snr: 7,
            interval_s: 300,
        }),
    )
}

fn downlink() -> Frame {
    Frame::new(
        DEV,
        1,
        Payload::Downlink(Downlink {
            ack_fcnt: Some(2),
            command: Command::SetHeartbeatInterval { seconds: 600 },
        }),
    )
}

/// (frame, direction, plaintext, sealed bytes).
fn fixtures() -> Vec<(Frame, Dir, Vec<u8>, Vec<u8>)> {
    vec![
        (
            report(),
            Dir::Up,
            // n = 2 | temperature (3) 2150 | battery (6) 3012
            hex("02  03 00000866  06 00000bc4"),
            // byte0 0x10 (report, unconfirmed) | dev_addr | fcnt 1 | ciphertext (11) | MIC
            hex("10 26011bda 00000001 4b53966ea854c67c510621 bb2b8f44f344c9ae"),
        ),
        (
            alarm(),
            Dir::Up,
            // door_open (1) | active 1 | alarm_id 7 | value 0
            hex("01 01 0007 00000000"),
            // byte0 0x21 (alarm, confirmed) | dev_addr | fcnt 2 | ciphertext (8) | MIC
            hex("21 26011bda 00000002 4041910a64640174 c2ba1981ddba1b95"),
        ),
        (
            heartbeat(),
            Dir::Up,
            // 3012 mV | flags 0x2 external power | reboots 3 | rssi -87 | snr 7 | 300 s
            hex("0bc4 02 0003 ffa9 07 012c"),
            // byte0 0x30 | dev_addr | fcnt 3 | ciphertext (10) | MIC
            hex("30 26011bda 00000003 86a4f5d5b7fb78525f13 828f23a3e46bd3f2"),
        ),
        (
            downlink(),
            Dir::Down,
            // ack_fcnt 2 | flags 0x1 ack | command 1 set heartbeat interval | 600 s
            hex("00000002 01 01 0258"),
            // byte0 0x40 | dev_addr | fcnt 1 (hub's down counter) | ciphertext (8) | MIC
            hex("40 26011bda 00000001 44fc495b781278e9 3550974484c4ebfa"),
        ),
    ]
}

#[test]
fn every_message_type_seals_to_its_fixture_and_opens_back() {
    for (frame, dir, plain, sealed) in fixtures() {
        let mut enc = [0u8; 48];
        let n = frame.payload.encode(&mut enc).unwrap();
        assert_eq!(&enc[..n], &plain[..], "{frame:?} plaintext");
        assert_eq!(
            Payload::decode(frame.mtype(), &plain).unwrap(),
            frame.payload
        );

        let mut out = [0u8; MAX_FRAME_LEN];
        let len = seal(&frame, &KEY, dir, &mut out).unwrap();
        assert_eq!(len, frame.sealed_len());
        assert_eq!(&out[..len], &sealed[..], "{frame:?} sealed");
        assert_eq!(open(&sealed, &KEY, dir).unwrap(), frame);
        assert_eq!(
            peek(&sealed).unwrap(),
            Header {
                dev_addr: DEV,
                fcnt: frame.fcnt,
                mtype: frame.mtype(),
                confirmed: frame.mtype() == MType::Alarm,
            }
        );
    }
}

/// RFC 3610 section 8, packet vector #1, which is already M = 8, L = 2: the cipher
/// configuration the frames use.
#[test]
fn ccm_layer_matches_rfc3610_packet_vector_1() {
    let key = hex("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf");
    let nonce = hex("00000003020100a0a1a2a3a4a5");
    let aad = hex("0001020304050607");
    let mut data = hex("08090a0b0c0d0e0f101112131415161718191a1b1c1d1e");
    let cipher = ccm(&key);
    let tag = cipher
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce), &aad, &mut data)
        .unwrap();
    assert_eq!(data, hex("588c979a61c663d2f066d0c2c0f989806d5f6b61dac384"));
    assert_eq!(tag.to_vec(), hex("17e8d12cfdf926e0"));
}

#[test]
fn raw_seal_agrees_with_the_fixtures() {
    for (frame, dir, plain, sealed) in fixtures() {
        assert_eq!(raw_seal(sealed[0], frame.fcnt, dir, &plain), sealed);
    }
}

#[test]
fn any_altered_byte_fails_the_mic() {
    for (_, dir, _, sealed) in fixtures() {
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(
                    open(&bad, &KEY, dir),
                    Err(FrameError::BadMic),
                    "byte {i} bit {bit}"
                );
            }
        }
    }
}

#[test]
fn wrong_key_or_direction_fails_the_mic() {
    let other = Key([0x5a; 16]);
    for (_, dir, _, sealed) in fixtures() {
        assert_eq!(open(&sealed, &other, dir), Err(FrameError::BadMic));
        let flipped = if dir == Dir::Up { Dir::Down } else { Dir::Up };
        assert_eq!(open(&sealed, &KEY, flipped), Err(FrameError::BadMic));
    }
}

#[test]
fn a_type_sealed_in_the_wrong_direction_is_refused() {
    let mut out = [0u8; MAX_FRAME_LEN];
    assert_eq!(
        seal(&alarm(), &KEY, Dir::Down, &mut out),
        Err(FrameError::WrongDirection {
            mtype: MType::Alarm,
            dir: Dir::Down
        })
    );
    assert_eq!(
        seal(&downlink(), &KEY, Dir::Up, &mut out),
        Err(FrameError::WrongDirection {
            mtype: MType::Downlink,
            dir: Dir::Up
        })
    );
    // Even authentic (someone with the key sealed a downlink as an uplink): refused.
    let forged = raw_seal(0x40, 9, Dir::Up, &hex("00000002 01 00 0000"));
    assert_eq!(
        open(&forged, &KEY, Dir::Up),
        Err(FrameError::WrongDirection {
            mtype: MType::Downlink,
            dir: Dir::Up
        })
    );
    assert_eq!(
        FrameError::WrongDirection {
            mtype: MType::Downlink,
            dir: Dir::Up
        }
        .to_string(),
        "downlink frames never travel up (node to hub)"
    );
}

#[test]
fn truncated_and_oversize_frames_are_refused() {
    for (_, dir, _, sealed) in fixtures() {
        for len in 0..sealed.len() {
            let got = open(&sealed[..len], &KEY, dir);
            if len < MIN_FRAME_LEN {
                assert_eq!(got, Err(FrameError::TooShort { len }));
                assert_eq!(peek(&sealed[..len]), Err(FrameError::TooShort { len }));
            } else {
                assert_eq!(got, Err(FrameError::BadMic), "len {len}");
            }
        }
    }
    let long = vec![0x10; MAX_FRAME_LEN + 1];
    assert_eq!(
        open(&long, &KEY, Dir::Up),
        Err(FrameError::TooLong { len: 66 })
    );
    assert_eq!(peek(&long), Err(FrameError::TooLong { len: 66 }));
    assert_eq!(
        FrameError::TooShort { len: 3 }.to_string(),
        "frame too short: 3 bytes, a header and MIC need at least 17"
    );
}

#[test]
fn peek_refuses_unknown_types_and_flags_without_the_key() {
    let (_, _, _, sealed) = fixtures().remove(0);
    let with = |b0: u8| {
        let mut f = sealed.clone();
        f[0] = b0;
        peek(&f)
    };
    assert_eq!(with(0x00), Err(FrameError::UnknownMType(0)));
    assert_eq!(with(0x50), Err(FrameError::UnknownMType(5)));
    assert_eq!(with(0xf1), Err(FrameError::UnknownMType(0xf)));
    assert_eq!(with(0x12), Err(FrameError::ReservedFlags(0x2)));
    assert_eq!(
        with(0x11),
        Err(FrameError::ConfirmedFlag {
            mtype: MType::Report,
            confirmed: true
        })
    );
    assert_eq!(
        with(0x20),
        Err(FrameError::ConfirmedFlag {
            mtype: MType::Alarm,
            confirmed: false
        })
    );
    assert_eq!(
        FrameError::UnknownMType(5).to_string(),
        "unknown message type 0x5 (known: 0x1 report, 0x2 alarm, 0x3 heartbeat, 0x4 downlink)"
    );
}

#[test]
fn authentic_frames_with_bad_payloads_say_what_is_wrong() {
    let cases: Vec<(u8, Dir, &str, FrameError)> = vec![
        (0x50, Dir::Up, "", FrameError::UnknownMType(5)),
        (0x13, Dir::Up, "", FrameError::ReservedFlags(3)),
        (
            0x10,
            Dir::Up,
            "",
            FrameError::PayloadLength {
                mtype: MType::Report,
                len: 0,
            },
        ),
        (0x10, Dir::Up, "00", FrameError::ReadingCount(0)),
        (
            0x10,
            Dir::Up,
            "09 0100000000 0100000000 0100000000 0100000000 0100000000 0100000000 0100000000 0100000000 0100000000",
            FrameError::ReadingCount(9),
        ),
        (
            0x10,
            Dir::Up,
            "02 0300000866",
            FrameError::PayloadLength {
                mtype: MType::Report,
                len: 6,
            },
        ),
        (0x10, Dir::Up, "01 0700000001", FrameError::UnknownQuantity(7)),
        (
            0x21,
            Dir::Up,
            "01 01 0007 00000000 00",
            FrameError::PayloadLength {
                mtype: MType::Alarm,
                len: 9,
            },
        ),
        (0x21, Dir::Up, "00 01 0007 00000000", FrameError::UnknownAlarmKind(0)),
        (
            0x21,
            Dir::Up,
            "01 02 0007 00000000",
            FrameError::InvalidField {
                field: "alarm active",
                value: 2,
            },
        ),
        (
            0x30,
            Dir::Up,
            "0bc4 08 0003 ffa9 07 012c",
            FrameError::InvalidField {
                field: "heartbeat flags",
                value: 8,
            },
        ),
        (
            0x40,
            Dir::Down,
            "00000002 00 00 0000",
            FrameError::InvalidField {
                field: "downlink ack_fcnt without the ack flag",
                value: 2,
            },
        ),
        (
            0x40,
            Dir::Down,
            "00000002 03 00 0000",
            FrameError::InvalidField {
                field: "downlink flags",
                value: 3,
            },
        ),
        (0x40, Dir::Down, "00000000 00 02 0000", FrameError::UnknownCommand(2)),
        (
            0x40,
            Dir::Down,
            "00000000 00 00 0001",
            FrameError::InvalidField {
                field: "downlink arg of command 0",
                value: 1,
            },
        ),
    ];
    for (byte0, dir, plain, want) in cases {
        let frame = raw_seal(byte0, 5, dir, &hex(plain));
        assert_eq!(open(&frame, &KEY, dir), Err(want), "{byte0:#x} {plain}");
    }
    assert_eq!(
        FrameError::PayloadLength {
            mtype: MType::Alarm,
            len: 9
        }
        .to_string(),
        "alarm payload is 9 bytes, it must be exactly 8"
    );
}

#[test]
fn seal_refuses_what_open_would_refuse() {
    let mut out = [0u8; MAX_FRAME_LEN];
    let empty = Frame::new(DEV, 1, Payload::Report(Report::default()));
    assert_eq!(
        seal(&empty, &KEY, Dir::Up, &mut out),
        Err(FrameError::ReadingCount(0))
    );
    let mut unconfirmed = alarm();
    unconfirmed.confirmed = false;
    assert_eq!(
        seal(&unconfirmed, &KEY, Dir::Up, &mut out),
        Err(FrameError::ConfirmedFlag {
            mtype: MType::Alarm,
            confirmed: false
        })
    );
    assert_eq!(
        FrameError::ConfirmedFlag {
            mtype: MType::Alarm,
            confirmed: false
        }
        .to_string(),
        "alarm frames must be confirmed (alarms always are)"
    );
    let mut bad_flags = heartbeat();
    if let Payload::Heartbeat(h) = &mut bad_flags.payload {
        h.flags = 0x80;
    }
    assert_eq!(
        seal(&bad_flags, &KEY, Dir::Up, &mut out),
        Err(FrameError::InvalidField {
            field: "heartbeat flags",
            value: 0x80
        })
    );
    let mut small = [0u8; 20];
    assert_eq!(
        seal(&alarm(), &KEY, Dir::Up, &mut small),
        Err(FrameError::BufferTooSmall {
            needed: 25,
            got: 20
        })
    );
}

#[test]
fn a_full_report_fits_the_largest_frame() {
    let mut readings = heapless::Vec::new();
    for i in 0..8 {
        readings
            .push(Reading {
                quantity: Quantity::Motion,
                value: -i,
            })
            .unwrap();
    }
    let frame = Frame::new(DEV, u32::MAX, Payload::Report(Report { readings }));
    let mut out = [0u8; MAX_FRAME_LEN];
    let len = seal(&frame, &KEY, Dir::Up, &mut out).unwrap();
    assert_eq!(len, 9 + 41 + 8);
    assert_eq!(open(&out[..len], &KEY, Dir::Up).unwrap(), frame);
}

#[test]
fn names_for_events_and_logs() {
    assert_eq!(AlarmKind::TemperatureHigh.as_str(), "temperature_high");
    assert_eq!(AlarmKind::PanicButton.to_string(), "panic_button");
    assert_eq!(Quantity::Humidity.as_str(), "humidity");
    assert_eq!(DevAddr(0x1bda).to_string(), "00001bda");
    assert_eq!(format!("{:?}", KEY), "Key(..)");
    assert_eq!(Downlink::ack(42).ack_fcnt, Some(42));
}
