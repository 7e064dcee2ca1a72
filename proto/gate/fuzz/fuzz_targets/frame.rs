//! Arbitrary bytes through the gate link's frame parser and stream decoder
//! (`cargo +nightly fuzz run frame` in proto/gate).
//!
//! Checks that nothing panics, and that whatever parses re-emits to the same bytes (the
//! tag aside: emit leaves it zero for `seal`), whose sealed form then verifies and parses
//! to the same `Repr`. The same check runs on stable over pseudo-random inputs in
//! `frame::tests::pseudo_random_inputs_parse_and_reemit_exactly`.

#![no_main]

use gatehouse_gate_proto::frame::TAG_LEN;
use gatehouse_gate_proto::{seal, verify, Frame, FrameDecoder, Repr, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [0x5a; 32];

fn check(data: &[u8]) {
    let Ok(frame) = Frame::new_checked(data) else {
        return;
    };
    let _ = verify(&KEY, &frame);
    let Ok(repr) = Repr::parse(&frame) else {
        return;
    };
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Frame::new_unchecked(&mut out[..]))
        .expect("a parsed frame re-emits");
    let body = data.len() - TAG_LEN;
    assert_eq!(out[..body], data[..body], "{repr:?}");
    seal(&KEY, &mut out).expect("an emitted frame seals");
    let again = Frame::new_checked(&out[..]).expect("an emitted frame is whole");
    verify(&KEY, &again).expect("a sealed frame verifies");
    assert_eq!(Repr::parse(&again).expect("re-parses"), repr);
}

fuzz_target!(|data: &[u8]| {
    check(data);

    // The same bytes as a TCP stream, fed in uneven pieces.
    let mut decoder = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
    let mut rest = data;
    let mut step = 1;
    'stream: while !rest.is_empty() {
        let piece = &rest[..step.min(rest.len())];
        let taken = decoder.feed(piece);
        rest = &rest[taken..];
        step = step % 97 + 13;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => check(frame.into_inner()),
                Ok(None) => break,
                Err(_) => break 'stream,
            }
        }
    }
});
