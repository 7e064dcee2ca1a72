//! Arbitrary bytes through the LoRa link's `open` (`cargo +nightly fuzz run open` in
//! proto/lora).
//!
//! Random bytes essentially never carry a valid MIC, so the target spends the first input
//! byte choosing a message type and seals the rest as that type's plaintext with the
//! fuzzer's key (the way a node with the key would), then opens it: the payload parser
//! sees every plaintext the fuzzer invents. Checks that nothing panics, that the raw
//! input opens to nothing, and that whatever opens re-seals to the same bytes. The same
//! checks run on stable over pseudo-random inputs in proto/lora/tests/mutation.rs.

#![no_main]

use gatehouse_lora_proto::{open, peek, seal, Dir, Key, MType, Payload, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

const KEY: Key = Key([0x5a; 16]);

fuzz_target!(|data: &[u8]| {
    // The raw bytes as a received frame, both directions.
    let _ = peek(data);
    for dir in [Dir::Up, Dir::Down] {
        if let Ok(frame) = open(data, &KEY, dir) {
            // Only a forgery of a 64-bit MIC gets here.
            panic!("unauthenticated bytes opened: {frame:?}");
        }
    }

    // The rest as plaintext of a chosen type: decode, and if it decodes, seal, open and
    // compare.
    let Some((&choice, plain)) = data.split_first() else {
        return;
    };
    let mtype = match choice % 4 {
        0 => MType::Report,
        1 => MType::Alarm,
        2 => MType::Heartbeat,
        _ => MType::Downlink,
    };
    let Ok(payload) = Payload::decode(mtype, plain) else {
        return;
    };
    let mut enc = [0u8; 64];
    let n = payload
        .encode(&mut enc)
        .expect("a decoded payload re-encodes");
    assert_eq!(&enc[..n], plain, "{payload:?}");
    let frame = gatehouse_lora_proto::Frame::new(
        gatehouse_lora_proto::DevAddr(u32::from(choice)),
        u32::from(choice) << 8,
        payload,
    );
    let dir = mtype.dir();
    let mut out = [0u8; MAX_FRAME_LEN];
    let len = seal(&frame, &KEY, dir, &mut out).expect("a decoded payload seals");
    assert_eq!(
        open(&out[..len], &KEY, dir).expect("a sealed frame opens"),
        frame
    );
    let header = peek(&out[..len]).expect("a sealed frame peeks");
    assert_eq!(
        (header.dev_addr, header.fcnt, header.mtype),
        (frame.dev_addr, frame.fcnt, mtype)
    );
});
