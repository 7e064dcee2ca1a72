//! Time-on-air fixtures. Expected values worked by hand from the Semtech AN1200.13 formula
//! (the steps are in each comment) and matching the well-known LoRaWAN airtime tables
//! (e.g. SF7/125 kHz 20 B = 56.6 ms, SF12/125 kHz 20 B = 1318.9 ms): 8 preamble symbols,
//! explicit header, CRC on, coding rate 4/5 unless said otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_lora_proto::{Modulation, MAX_FRAME_LEN};

#[test]
fn airtime_matches_hand_worked_values() {
    let cases: &[(u8, u32, usize, u32)] = &[
        // ceil((160-28+28+16)/28) = 7 -> 8+35 = 43 sym + 12.25 = 55.25 * 1.024 ms
        (7, 125_000, 20, 56_576),
        // 0 B: ceil(16/28) = 1 -> 13 + 12.25 = 25.25 * 1.024
        (7, 125_000, 0, 25_856),
        // 13 B (a LoRaWAN empty frame): ceil(120/28) = 5 -> 33 + 12.25 = 45.25 * 1.024
        (7, 125_000, 13, 46_336),
        // SF8: ceil(172/32) = 6 -> 38 + 12.25 = 50.25 * 2.048
        (8, 125_000, 20, 102_912),
        // SF9: ceil(168/36) = 5 -> 33 + 12.25 = 45.25 * 4.096
        (9, 125_000, 20, 185_344),
        // SF10: ceil(164/40) = 5 -> 45.25 * 8.192
        (10, 125_000, 20, 370_688),
        // SF11, low data rate optimisation: ceil(160/36) = 5 -> 45.25 * 16.384
        (11, 125_000, 20, 741_376),
        // SF12, LDRO: ceil(156/40) = 4 -> 28 + 12.25 = 40.25 * 32.768
        (12, 125_000, 20, 1_318_912),
        // SF12, 64 B: ceil(508/40) = 13 -> 73 + 12.25 = 85.25 * 32.768
        (12, 125_000, 64, 2_793_472),
        // The largest link frame (65 B) at SF12: ceil(516/40) = 13, the same
        (12, 125_000, MAX_FRAME_LEN, 2_793_472),
        // SF7 at 250 kHz: half of 56.576 ms
        (7, 250_000, 20, 28_288),
        // SF12 at 250 kHz has 16.384 ms symbols: LDRO on, as SF11/125k
        (12, 250_000, 20, 659_456),
        // SF12 at 500 kHz: 8.192 ms symbols, no LDRO: ceil(156/48) = 4 -> 40.25 * 8.192
        (12, 500_000, 20, 329_728),
    ];
    for &(sf, bw, len, want) in cases {
        let m = Modulation::lora(sf, bw);
        assert_eq!(m.airtime_us(len), want, "SF{sf} {bw} Hz {len} B");
    }
}

#[test]
fn header_crc_and_coding_rate_count() {
    let base = Modulation::lora(7, 125_000);
    // Implicit header, no CRC: ceil((160-28+28-20)/28) = 5 -> 33 + 12.25 = 45.25 sym.
    let bare = Modulation {
        explicit_header: false,
        crc: false,
        ..base
    };
    assert_eq!(bare.airtime_us(20), 46_336);
    // Coding rate 4/8: 7 blocks * 8 + 8 = 64 + 12.25 = 76.25 sym.
    assert_eq!(Modulation { cr: 4, ..base }.airtime_us(20), 78_080);
    // 16 preamble symbols: 8 more.
    assert_eq!(
        Modulation {
            preamble: 16,
            ..base
        }
        .airtime_us(20),
        56_576 + 8 * 1024
    );
    assert_eq!(Modulation::default(), base);
    assert_eq!(base.symbol_us(), 1024);
}

#[test]
fn airtime_grows_with_length_and_spreading_factor() {
    for sf in 7..=12 {
        let m = Modulation::lora(sf, 125_000);
        for len in 0..MAX_FRAME_LEN {
            assert!(m.airtime_us(len) <= m.airtime_us(len + 1));
        }
        if sf < 12 {
            let next = Modulation::lora(sf + 1, 125_000);
            assert!(m.airtime_us(20) < next.airtime_us(20));
        }
    }
}
