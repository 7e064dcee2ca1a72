//! The fuzz targets' check (appliance/alerts/fuzz) on stable: fixtures with bytes
//! changed, cut, spliced and repeated go through the webhook and Frigate parsers, which
//! must not panic and whose events must pass `NewEvent::validate` (every length within
//! `limits`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_alerts::frigate::{parse_frigate, FrigateOutcome, FrigateTopic};
use gatehouse_alerts::{limits, parse_webhook, NewEvent, SourceKind};
use time::macros::datetime;
use time::OffsetDateTime;

const NOW: OffsetDateTime = datetime!(2025-03-07 17:31 UTC);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fixtures(dir: &str) -> Vec<Vec<u8>> {
    let dir = format!("{}/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

/// Tokens that make mutations land on interesting values rather than noise.
const TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"1e999",
    b"-1",
    b"1741368600.5",
    b"\"\"",
    b"[]",
    b"{}",
    b"\"\\u0000\"",
    b"\"ftp://x\"",
    b"\"http://\"",
    b"\"end\"",
    b"\"alert\"",
    b"\"critical\"",
    b"\"\xff\"",
    b"\"x\xe2\x82\"",
    b"9223372036854775808",
    b"[[[[[[[[",
    b"\"alert.x\"",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        if d.is_empty() {
            break;
        }
        let i = rng.below(d.len());
        match rng.below(6) {
            0 => d[i] = rng.next() as u8,
            1 => d.truncate(i),
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let end = (i + rng.below(12)).min(d.len());
                d.splice(i..end, t.iter().copied());
            }
            3 => {
                // Repeat a slice (long strings, long lists).
                let end = (i + 1 + rng.below(16)).min(d.len());
                let piece = d[i..end].to_vec();
                for _ in 0..rng.below(200) {
                    d.splice(i..i, piece.iter().copied());
                }
            }
            4 => {
                // Splice in a piece of another seed.
                let other = &seeds[rng.below(seeds.len())];
                let j = rng.below(other.len());
                let end = (j + rng.below(64)).min(other.len());
                d.splice(i..i, other[j..end].iter().copied());
            }
            _ => {
                d.remove(i);
            }
        }
    }
    d
}

fn check(ev: &NewEvent) {
    ev.validate().unwrap_or_else(|e| panic!("{e}: {ev:?}"));
    assert!(ev.kind.len() <= limits::NAME);
    assert!(ev
        .message
        .as_ref()
        .is_none_or(|m| m.len() <= limits::MESSAGE));
    for u in [&ev.snapshot_url, &ev.clip_url].into_iter().flatten() {
        assert!(u.len() <= limits::URL && u.starts_with("http"));
    }
}

#[test]
fn webhook_parser_survives_mutated_bodies() {
    let seeds = fixtures("webhook");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let body = mutate(&mut rng, &seeds);
        if let Ok(ev) = parse_webhook(&body, "nvr-yard", SourceKind::Nvr, NOW) {
            check(&ev);
            parsed += 1;
        }
    }
    // Some mutations keep the body valid: the check above did run.
    assert!(parsed > 100, "{parsed}");
}

#[test]
fn frigate_parser_survives_mutated_payloads() {
    let seeds = fixtures("frigate");
    let mut rng = Rng(0xd1b5_4a32_d192_ed03);
    let (mut events, mut ignored) = (0, 0);
    for round in 0..20_000 {
        let payload = mutate(&mut rng, &seeds);
        let topic = if round % 2 == 0 {
            FrigateTopic::Events
        } else {
            FrigateTopic::Reviews
        };
        match parse_frigate(
            topic,
            &payload,
            "nvr-yard",
            Some("http://frigate:5000"),
            NOW,
        ) {
            Ok(FrigateOutcome::Event(ev)) => {
                check(&ev);
                events += 1;
            }
            Ok(FrigateOutcome::Ignored(_)) => ignored += 1,
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    assert!(events > 100 && ignored > 0, "{events} {ignored}");
}
