//! Deterministic pseudo-random inputs through `peek`, `open` and the payload codec: nothing
//! panics, nothing altered opens, and whatever does open re-seals to the same bytes. (The
//! same checks run under cargo-fuzz in proto/lora/fuzz.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{hex, raw_seal, Rng, KEY};
use gatehouse_lora_proto::{
    open, peek, seal, Dir, FrameError, MType, Payload, MAX_FRAME_LEN, MAX_PAYLOAD,
};

const MTYPES: [MType; 4] = [
    MType::Report,
    MType::Alarm,
    MType::Heartbeat,
    MType::Downlink,
];

/// Plaintext that is often nearly valid: small counts and codes, 0/1 booleans.
fn plausible_plaintext(rng: &mut Rng, mtype: MType) -> Vec<u8> {
    let len = match (mtype.payload_len(), rng.below(4)) {
        (Some(n), 0..=2) => n,
        (None, 0..=2) => 1 + 5 * rng.below(9),
        _ => rng.below(MAX_PAYLOAD + 1),
    };
    let mut p: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    let small = |rng: &mut Rng| rng.below(8) as u8;
    match mtype {
        MType::Report => {
            let count = (p.len().saturating_sub(1) / 5) as u8;
            let lie = rng.below(8) == 0;
            if let Some(n) = p.first_mut() {
                *n = if lie { small(rng) + 1 } else { count };
            }
            for i in (1..p.len()).step_by(5) {
                p[i] = if rng.below(16) == 0 {
                    small(rng)
                } else {
                    1 + rng.below(6) as u8
                };
            }
        }
        MType::Alarm if p.len() >= 2 => {
            p[0] = small(rng);
            p[1] = rng.below(3) as u8;
        }
        MType::Heartbeat if p.len() >= 3 => p[2] = small(rng),
        MType::Downlink if p.len() >= 8 => {
            p[4] = rng.below(3) as u8;
            p[5] = rng.below(3) as u8;
            if rng.below(2) == 0 {
                p[0..4].fill(0);
                p[6..8].fill(0);
            }
        }
        _ => {}
    }
    p
}

#[test]
fn pseudo_random_payloads_decode_and_reencode_exactly() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut decoded = [0usize; 4];
    for round in 0..20_000 {
        let mtype = MTYPES[round % 4];
        let plain = plausible_plaintext(&mut rng, mtype);
        let Ok(payload) = Payload::decode(mtype, &plain) else {
            continue;
        };
        decoded[round % 4] += 1;
        assert_eq!(payload.mtype(), mtype);
        let mut out = [0u8; MAX_PAYLOAD];
        let n = payload.encode(&mut out).unwrap();
        assert_eq!(&out[..n], &plain[..], "{payload:?}");
    }
    for (mtype, n) in MTYPES.iter().zip(decoded) {
        assert!(
            n > 500,
            "only {n} {mtype} payloads decoded: the generator is too weak"
        );
    }
}

#[test]
fn authentic_frames_with_pseudo_random_payloads_open_and_reseal_exactly() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut opened = 0;
    for round in 0..5_000 {
        let mtype = MTYPES[round % 4];
        let dir = mtype.dir();
        let byte0 = if rng.below(10) == 0 {
            rng.byte()
        } else {
            mtype.code() << 4 | u8::from(mtype.confirmed())
        };
        let plain = plausible_plaintext(&mut rng, mtype);
        let fcnt = rng.next() as u32;
        let bytes = raw_seal(byte0, fcnt, dir, &plain);
        let header = peek(&bytes);
        match open(&bytes, &KEY, dir) {
            Ok(frame) => {
                opened += 1;
                assert_eq!(header.map(|h| h.fcnt), Ok(fcnt));
                let mut out = [0u8; MAX_FRAME_LEN];
                let n = seal(&frame, &KEY, dir, &mut out).unwrap();
                assert_eq!(&out[..n], &bytes[..], "{frame:?}");
            }
            Err(FrameError::BadMic) => panic!("an authentic frame failed the MIC: {bytes:02x?}"),
            Err(_) => {}
        }
    }
    assert!(opened > 1_000, "only {opened} frames opened");
}

#[test]
fn pseudo_random_garbage_and_mutations_never_panic_and_never_open() {
    let seeds = [
        hex("10 26011bda 00000001 4b53966ea854c67c510621 bb2b8f44f344c9ae"),
        hex("21 26011bda 00000002 4041910a64640174 c2ba1981ddba1b95"),
        hex("30 26011bda 00000003 86a4f5d5b7fb78525f13 828f23a3e46bd3f2"),
        hex("40 26011bda 00000001 44fc495b781278e9 3550974484c4ebfa"),
    ];
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for round in 0..20_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let data: Vec<u8> = match round % 3 {
            // Noise of any length up to a little past the largest frame.
            0 => (0..rng.below(MAX_FRAME_LEN + 8))
                .map(|_| rng.byte())
                .collect(),
            // A valid frame with a few bytes changed.
            1 => {
                let mut d = seed.clone();
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(d.len());
                    d[i] ^= 1 + rng.below(255) as u8;
                }
                d
            }
            // A valid frame cut short or extended.
            _ => {
                let mut d = seed.clone();
                if rng.below(2) == 0 {
                    d.truncate(d.len() - 1 - rng.below(d.len()));
                } else {
                    d.extend((0..1 + rng.below(8)).map(|_| rng.byte()));
                }
                d
            }
        };
        let _ = peek(&data);
        for dir in [Dir::Up, Dir::Down] {
            if let Ok(frame) = open(&data, &KEY, dir) {
                panic!("altered bytes {data:02x?} opened as {frame:?}");
            }
        }
    }
}
