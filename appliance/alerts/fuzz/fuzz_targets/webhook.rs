//! Arbitrary bytes through the event webhook's body parser
//! (`cargo +nightly fuzz run webhook` in appliance/alerts; seed corpus:
//! appliance/alerts/fixtures/webhook).
//!
//! Checks that nothing panics and that whatever parses is a valid event: every field
//! within `limits`, the kind well-formed, URLs http(s), the time within bounds. The same
//! check runs on stable over mutated fixtures in appliance/alerts/tests/pseudo_random.rs.

#![no_main]

use gatehouse_alerts::{limits, parse_webhook, SourceKind};
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    let now = OffsetDateTime::from_unix_timestamp(1_741_368_660).expect("a valid time");
    let Ok(ev) = parse_webhook(data, "nvr-yard", SourceKind::Nvr, now) else {
        return;
    };
    ev.validate().expect("a parsed event is valid");
    assert!(data.len() <= limits::WEBHOOK_BODY);
    assert!(ev.kind.len() <= limits::NAME);
    assert!(ev
        .message
        .as_ref()
        .is_none_or(|m| m.len() <= limits::MESSAGE));
    assert!(ev
        .external_id
        .as_ref()
        .is_none_or(|m| m.len() <= limits::EXTERNAL_ID));
    for u in [&ev.snapshot_url, &ev.clip_url].into_iter().flatten() {
        assert!(u.len() <= limits::URL);
    }
});
