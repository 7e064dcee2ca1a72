//! Arbitrary bytes through the LoRa link's `peek` (`cargo +nightly fuzz run peek` in
//! proto/lora): never panics, and what it accepts is consistent with the bytes (length
//! in range, type and confirmed flag from byte 0, dev_addr and fcnt from bytes 1..9).

#![no_main]

use gatehouse_lora_proto::{peek, MAX_FRAME_LEN, MIN_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = peek(data) else {
        return;
    };
    assert!((MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&data.len()));
    assert_eq!(header.mtype.code(), data[0] >> 4);
    assert_eq!(header.confirmed, data[0] & 0x0f == 1);
    assert_eq!(header.confirmed, header.mtype.confirmed());
    assert_eq!(header.dev_addr.0.to_be_bytes(), data[1..5]);
    assert_eq!(header.fcnt.to_be_bytes(), data[5..9]);
});
