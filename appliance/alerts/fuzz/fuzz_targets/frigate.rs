//! Arbitrary bytes through the Frigate `events` and `reviews` parsers
//! (`cargo +nightly fuzz run frigate` in appliance/alerts; seed corpus:
//! appliance/alerts/fixtures/frigate).
//!
//! Checks that nothing panics and that whatever parses is a valid event (every field
//! within `limits`, links built under the base URL). The same check runs on stable over
//! mutated fixtures in appliance/alerts/tests/pseudo_random.rs.

#![no_main]

use gatehouse_alerts::frigate::{parse_frigate, FrigateOutcome, FrigateTopic};
use gatehouse_alerts::limits;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

const BASE: &str = "http://frigate.site.lan:5000";

fuzz_target!(|data: &[u8]| {
    let now = OffsetDateTime::from_unix_timestamp(1_741_368_660).expect("a valid time");
    for topic in [FrigateTopic::Events, FrigateTopic::Reviews] {
        let Ok(FrigateOutcome::Event(ev)) = parse_frigate(topic, data, "nvr-yard", Some(BASE), now)
        else {
            continue;
        };
        ev.validate().expect("a parsed event is valid");
        assert!(data.len() <= limits::FRIGATE_PAYLOAD);
        assert!(ev.kind.len() <= limits::NAME);
        assert!(ev
            .message
            .as_ref()
            .is_none_or(|m| m.len() <= limits::MESSAGE));
        for u in [&ev.snapshot_url, &ev.clip_url].into_iter().flatten() {
            assert!(u.len() <= limits::URL && u.starts_with(BASE));
        }
    }
});
