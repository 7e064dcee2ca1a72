//! Duty-cycle budgets with a fake clock: 1 % of an hour is 36 s per band, normal traffic
//! stops at 80 % of it, alarms may use the rest, and the window slides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Rng;
use gatehouse_lora_proto::duty::{HOUR_MS, NORMAL_SHARE_PERCENT};
use gatehouse_lora_proto::{DutyBudget, Priority, SubBand};

const SECOND_US: u32 = 1_000_000;

#[test]
fn frequencies_map_to_their_sub_bands() {
    let cases = [
        (862_999_999, None),
        (863_000_000, Some(SubBand::G863_0)),
        (867_100_000, Some(SubBand::G865_0)),
        (868_100_000, Some(SubBand::G868_0)),
        (868_300_000, Some(SubBand::G868_0)),
        (868_500_000, Some(SubBand::G868_0)),
        (868_600_000, None),
        (868_800_000, Some(SubBand::G868_7)),
        (869_300_000, None),
        (869_525_000, Some(SubBand::G869_4)),
        (869_650_000, None),
        (869_850_000, Some(SubBand::G869_7)),
        (870_000_000, None),
        (915_000_000, None),
    ];
    for (freq, band) in cases {
        assert_eq!(SubBand::of(freq), band, "{freq} Hz");
    }
    assert_eq!(SubBand::G868_0.budget_us(), 36_000_000);
    assert_eq!(SubBand::G869_4.budget_us(), 360_000_000);
    assert_eq!(SubBand::G868_7.budget_us(), 3_600_000);
    assert_eq!(SubBand::G868_0.limit_us(Priority::Normal), 28_800_000);
    assert_eq!(SubBand::G869_4.to_string(), "869.4-869.65");
}

#[test]
fn one_percent_is_36_seconds_and_normal_traffic_keeps_the_alarm_reserve() {
    let band = SubBand::G868_0;
    let mut budget: DutyBudget = DutyBudget::new();
    let mut now = 0;
    let mut normal = 0;
    while budget.try_send(now, band, SECOND_US, Priority::Normal) {
        normal += 1;
        now += 1_000;
    }
    assert_eq!(normal, 28, "80 % of 36 s in 1 s frames");
    assert_eq!(budget.used_us(now, band), 28_000_000);
    let mut alarms = 0;
    while budget.try_send(now, band, SECOND_US, Priority::Alarm) {
        alarms += 1;
        now += 1_000;
    }
    assert_eq!(alarms, 8, "the reserve: the remaining 20 %");
    assert_eq!(budget.used_us(now, band), 36_000_000);
    assert!(!budget.can_send(now, band, 1, Priority::Alarm));
    // Other bands are untouched.
    assert!(budget.can_send(now, SubBand::G869_4, SECOND_US, Priority::Normal));
    assert!(budget.can_send(now, SubBand::G868_7, 3_600_000, Priority::Alarm));
    assert!(!budget.can_send(now, SubBand::G868_7, 3_600_001, Priority::Alarm));
}

#[test]
fn the_window_slides() {
    let band = SubBand::G868_0;
    let mut budget: DutyBudget = DutyBudget::new();
    let t0 = 10_000;
    budget.record(t0, band, 20 * SECOND_US);
    budget.record(t0 + 60_000, band, 16 * SECOND_US);
    assert!(!budget.can_send(t0 + 60_000, band, 1, Priority::Alarm));
    // One millisecond before the first transmission leaves the hour: still full.
    assert!(!budget.can_send(t0 + HOUR_MS - 1, band, 1, Priority::Alarm));
    assert_eq!(
        budget.wait_ms(t0 + HOUR_MS - 1, band, 1, Priority::Alarm),
        Some(1)
    );
    // As it leaves, its 20 s come back.
    assert_eq!(budget.used_us(t0 + HOUR_MS, band), 16_000_000);
    assert!(budget.can_send(t0 + HOUR_MS, band, 20 * SECOND_US, Priority::Alarm));
    assert!(!budget.can_send(t0 + HOUR_MS, band, 20 * SECOND_US + 1, Priority::Alarm));
    // Normal traffic: 28.8 s - 16 s = 12.8 s left.
    assert!(budget.can_send(t0 + HOUR_MS, band, 12_800_000, Priority::Normal));
    assert!(!budget.can_send(t0 + HOUR_MS, band, 12_800_001, Priority::Normal));
    assert_eq!(budget.used_us(t0 + 60_000 + HOUR_MS, band), 0);
}

#[test]
fn wait_ms_says_when_a_transmission_fits() {
    let band = SubBand::G868_0;
    let mut budget: DutyBudget = DutyBudget::new();
    assert_eq!(
        budget.wait_ms(0, band, SECOND_US, Priority::Normal),
        Some(0)
    );
    for i in 0..36 {
        budget.record(i * 1_000, band, SECOND_US);
    }
    let now = 100_000;
    // Alarm: needs 1 s back, the first frame (t = 0) expires at HOUR_MS.
    assert_eq!(
        budget.wait_ms(now, band, SECOND_US, Priority::Alarm),
        Some(HOUR_MS - now)
    );
    // Normal: used must drop to 27.8 s, i.e. 9 frames expire (the 9th at 8 s).
    assert_eq!(
        budget.wait_ms(now, band, SECOND_US, Priority::Normal),
        Some(8_000 + HOUR_MS - now)
    );
    let wait = budget
        .wait_ms(now, band, SECOND_US, Priority::Normal)
        .unwrap();
    assert!(!budget.can_send(now + wait - 1, band, SECOND_US, Priority::Normal));
    assert!(budget.can_send(now + wait, band, SECOND_US, Priority::Normal));
    // Longer than the whole limit: never.
    assert_eq!(
        budget.wait_ms(now, band, 36 * SECOND_US + 1, Priority::Alarm),
        None
    );
    assert_eq!(
        budget.wait_ms(now, band, 28_800_001, Priority::Normal),
        None
    );
}

#[test]
fn a_clock_that_steps_back_frees_nothing() {
    let band = SubBand::G868_0;
    let mut budget: DutyBudget = DutyBudget::new();
    budget.record(HOUR_MS * 5, band, 36 * SECOND_US);
    assert!(!budget.can_send(0, band, 1, Priority::Alarm));
    budget.record(1_000, band, 0);
    assert_eq!(budget.used_us(HOUR_MS * 5 + 1, band), 36_000_000);
}

/// Random traffic through budgets of several ring sizes, checked against the complete
/// log of what they let through: in every window of one hour the airtime started per band
/// stays within the limit, and a small ring is never looser than the whole log.
#[test]
fn random_traffic_never_exceeds_the_limit_in_any_sliding_hour() {
    fn run<const N: usize>(seed: u64) -> usize {
        let mut rng = Rng(seed);
        let mut budget: DutyBudget<N> = DutyBudget::new();
        let mut log: Vec<(u64, SubBand, u32, Priority)> = Vec::new();
        let bands = [SubBand::G868_0, SubBand::G869_4, SubBand::G868_7];
        let mut now = 0u64;
        for _ in 0..4_000 {
            now += rng.below(20_000) as u64;
            let band = bands[rng.below(bands.len())];
            let airtime = 40_000 + rng.below(1_500_000) as u32;
            let priority = if rng.below(4) == 0 {
                Priority::Alarm
            } else {
                Priority::Normal
            };
            let true_used: u64 = log
                .iter()
                .filter(|(at, b, _, _)| *b == band && now < at + HOUR_MS)
                .map(|(_, _, a, _)| u64::from(*a))
                .sum();
            assert!(
                budget.used_us(now, band) >= true_used,
                "ring looser than the log"
            );
            if budget.try_send(now, band, airtime, priority) {
                log.push((now, band, airtime, priority));
            }
        }
        // Every window that starts at a transmission (the worst windows do).
        for &(start, band, _, _) in &log {
            let in_window = log
                .iter()
                .filter(|(at, b, _, _)| *b == band && (start..start + HOUR_MS).contains(at));
            let total: u64 = in_window.clone().map(|(_, _, a, _)| u64::from(*a)).sum();
            let normal: u64 = in_window
                .filter(|(_, _, _, p)| *p == Priority::Normal)
                .map(|(_, _, a, _)| u64::from(*a))
                .sum();
            assert!(total <= band.budget_us(), "{band}: {total} us in an hour");
            assert!(
                normal <= band.budget_us() * NORMAL_SHARE_PERCENT / 100,
                "{band}: {normal} us of normal traffic in an hour"
            );
        }
        log.len()
    }
    for seed in [1, 2, 3] {
        let full = run::<4096>(seed);
        let small = run::<8>(seed);
        let mid = run::<64>(seed);
        assert!(full > 500, "only {full} transmissions let through");
        assert!(small <= full && mid <= full);
        assert!(
            small > 100,
            "a small ring still lets traffic through: {small}"
        );
    }
}
