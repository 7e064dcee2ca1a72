//! The gate link's MQTT topics, the NVRs' topic prefixes, and the ACL file that confines
//! each gate and each NVR to its own topics.
//!
//! mosquitto's ACL file (`mosquitto.conf(5)`, `acl_file`): `user <name>` starts a block of
//! `topic [read|write|readwrite] <topic>` lines for that user; a user whose block exists
//! gets exactly those grants and nothing else. We write only `user` blocks (no lines
//! before the first `user`, which would apply to anonymous clients, and no `pattern`
//! lines, which would apply to everyone):
//!
//! ```text
//! user hub
//! topic readwrite access/request
//! topic readwrite access/response/#
//! topic read frigate/events
//! topic read frigate/reviews
//!
//! user gate-7
//! topic write access/request
//! topic read access/response/7
//!
//! user nvr-yard
//! topic readwrite frigate/#
//! ```
//!
//! An NVR speaking Frigate's MQTT publishes many topics under its prefix (events, reviews,
//! camera states, snapshots, availability) and subscribes to its own `.../set` topics, so
//! its account reads and writes `<prefix>/#`; the hub reads only `<prefix>/events` and
//! `<prefix>/reviews`. A prefix is a topic name without wildcards ([`check_nvr_prefix`])
//! that overlaps neither the gate link's topics nor another NVR's prefix: two topic
//! prefixes overlap when they are equal or one is the other followed by `/` and more
//! levels ([`prefixes_overlap`]), since `<prefix>/#` would then cover the other's topics.

use std::fmt::Write as _;

use crate::{BrokerError, Result};

/// Default topic gates publish their requests to.
pub const DEFAULT_REQUEST_TOPIC: &str = "access/request";
/// Default prefix of the topics the hub answers on: `<prefix>/<gate_id>`.
pub const DEFAULT_RESPONSE_PREFIX: &str = "access/response";
/// The LoRa link's topics between the packet forwarder and the hub (`lora/up`,
/// `lora/down`, `lora/tx`): both may read and write them.
pub const LORA_TOPICS: &str = "lora/#";

/// The gate link's topics: one request topic shared by all gates, one response topic per
/// gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    request: String,
    response_prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            request: DEFAULT_REQUEST_TOPIC.to_owned(),
            response_prefix: DEFAULT_RESPONSE_PREFIX.to_owned(),
        }
    }
}

impl Topics {
    /// Topics with a configured request topic and response prefix (the response topic of
    /// gate `n` is `<response_prefix>/<n>`). Wildcards, empty levels at the ends,
    /// control characters and surrounding whitespace are refused.
    pub fn new(request: &str, response_prefix: &str) -> Result<Self> {
        check_topic("request topic", request)?;
        check_topic("response topic prefix", response_prefix)?;
        Ok(Topics {
            request: request.to_owned(),
            response_prefix: response_prefix.to_owned(),
        })
    }

    /// The topic gates publish access requests to.
    pub fn request(&self) -> &str {
        &self.request
    }

    /// The prefix of the per-gate response topics.
    pub fn response_prefix(&self) -> &str {
        &self.response_prefix
    }

    /// The topic the hub answers gate `gate_id` on.
    pub fn response_topic(&self, gate_id: u32) -> String {
        format!("{}/{gate_id}", self.response_prefix)
    }

    /// A filter matching every gate's response topic (for the hub's own use).
    pub fn all_responses_filter(&self) -> String {
        format!("{}/#", self.response_prefix)
    }

    /// Whether an NVR prefix would overlap the request topic or the response topics.
    pub fn overlaps(&self, prefix: &str) -> bool {
        prefixes_overlap(prefix, &self.request) || prefixes_overlap(prefix, &self.response_prefix)
    }
}

/// Whether two topic prefixes overlap: equal, or one is the other followed by `/` and
/// more levels (so `a/#` covers `a/b`; `ab` and `a` do not overlap).
pub fn prefixes_overlap(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

/// Checks an NVR's MQTT topic prefix before it is put in the ACL: a topic name without
/// wildcards (see [`Topics::new`] for the rules), not overlapping the gate link's
/// `topics` nor any of `others` (the other NVRs' prefixes). The admin API and CLI call
/// this before they register a prefix; [`crate::Provisioning::add_nvr`] calls it again.
pub fn check_nvr_prefix<'a>(
    prefix: &str,
    topics: &Topics,
    others: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    check_topic("NVR topic prefix", prefix)?;
    if topics.overlaps(prefix) {
        return Err(BrokerError::Overlap {
            prefix: prefix.to_owned(),
            other: format!(
                "the gate link's topics ({} and {}/<gate id>)",
                topics.request(),
                topics.response_prefix()
            ),
        });
    }
    if let Some(other) = others.into_iter().find(|o| prefixes_overlap(prefix, o)) {
        return Err(BrokerError::Overlap {
            prefix: prefix.to_owned(),
            other: format!("another NVR's prefix {other:?}"),
        });
    }
    Ok(())
}

/// The topics of an NVR's prefix the hub subscribes to (Frigate's tracked-object events
/// and review items).
pub fn nvr_hub_topics(prefix: &str) -> [String; 2] {
    [format!("{prefix}/events"), format!("{prefix}/reviews")]
}

/// A topic name we are willing to put in an ACL line.
fn check_topic(what: &'static str, topic: &str) -> Result<()> {
    let reason = if topic.is_empty() {
        Some("is empty")
    } else if topic.len() > usize::from(u16::MAX) {
        Some("is longer than MQTT allows (65535 bytes)")
    } else if topic.contains(['+', '#']) {
        Some("contains an MQTT wildcard ('+' or '#')")
    } else if topic.starts_with('/') || topic.ends_with('/') {
        Some("starts or ends with '/'")
    } else if topic.starts_with('$') {
        Some("starts with '$' (reserved for the broker)")
    } else if topic.chars().any(char::is_control) {
        Some("contains control characters")
    } else if topic.trim() != topic {
        Some("has leading or trailing whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BrokerError::invalid(what, topic, reason)),
        None => Ok(()),
    }
}

/// Renders the ACL file for the hub's user, `(user, gate_id)` gate accounts and `(user,
/// prefix)` NVR accounts. User names and prefixes must already have been checked (see
/// [`crate::passwd`] and [`check_nvr_prefix`]).
pub(crate) fn render<'a>(
    topics: &Topics,
    hub_user: &str,
    gates: impl IntoIterator<Item = (&'a str, u32)>,
    nvrs: &[(&'a str, &'a str)],
    lora_forwarder: Option<&str>,
) -> String {
    let mut out = String::from(
        "# Generated by gatehouse (gatehouse-broker); rewritten on every change. Do not edit.\n\
         # A user listed here gets only the topics listed under it.\n\n",
    );
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "user {hub_user}\ntopic readwrite {}\ntopic readwrite {}\ntopic readwrite {LORA_TOPICS}\n",
        topics.request(),
        topics.all_responses_filter()
    );
    for (_, prefix) in nvrs {
        for topic in nvr_hub_topics(prefix) {
            let _ = writeln!(out, "topic read {topic}");
        }
    }
    for (user, gate_id) in gates {
        let _ = write!(
            out,
            "\nuser {user}\ntopic write {}\ntopic read {}\n",
            topics.request(),
            topics.response_topic(gate_id)
        );
    }
    for (user, prefix) in nvrs {
        let _ = write!(out, "\nuser {user}\ntopic readwrite {prefix}/#\n");
    }
    if let Some(user) = lora_forwarder {
        let _ = write!(out, "\nuser {user}\ntopic readwrite {LORA_TOPICS}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_block_per_user() {
        let acl = render(
            &Topics::default(),
            "hub",
            [("gate-7", 7), ("door", 9)],
            &[("nvr-yard", "frigate"), ("nvr-gate", "site/b/frigate")],
            Some("lora-forwarder"),
        );
        let body: Vec<&str> = acl.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "",
                "user hub",
                "topic readwrite access/request",
                "topic readwrite access/response/#",
                "topic readwrite lora/#",
                "topic read frigate/events",
                "topic read frigate/reviews",
                "topic read site/b/frigate/events",
                "topic read site/b/frigate/reviews",
                "",
                "user gate-7",
                "topic write access/request",
                "topic read access/response/7",
                "",
                "user door",
                "topic write access/request",
                "topic read access/response/9",
                "",
                "user nvr-yard",
                "topic readwrite frigate/#",
                "",
                "user nvr-gate",
                "topic readwrite site/b/frigate/#",
                "",
                "user lora-forwarder",
                "topic readwrite lora/#",
            ]
        );
    }

    #[test]
    fn custom_topics() {
        let t = Topics::new("site/a/req", "site/a/resp").unwrap();
        assert_eq!(t.response_topic(12), "site/a/resp/12");
        let acl = render(&t, "hub", [("gate-12", 12)], &[], None);
        assert!(acl.contains("topic write site/a/req\ntopic read site/a/resp/12\n"));
    }

    #[test]
    fn refuses_topics_that_widen_or_break_the_acl() {
        for bad in [
            "",
            "access/#",
            "access/+/x",
            "/access",
            "access/",
            "$SYS/x",
            "a\nuser x",
            " access",
        ] {
            assert!(Topics::new(bad, "ok").is_err(), "{bad:?}");
            assert!(Topics::new("ok", bad).is_err(), "{bad:?}");
        }
        assert!(Topics::new("with space/ok", "x/y").is_ok());
    }

    #[test]
    fn overlapping_prefixes() {
        assert!(prefixes_overlap("frigate", "frigate"));
        assert!(prefixes_overlap("frigate", "frigate/cam"));
        assert!(prefixes_overlap("frigate/cam", "frigate"));
        assert!(!prefixes_overlap("frigate", "frigate2"));
        assert!(!prefixes_overlap("site/a", "site/b"));
    }

    #[test]
    fn nvr_prefix_rules() {
        let t = Topics::default();
        assert!(check_nvr_prefix("frigate", &t, []).is_ok());
        assert!(check_nvr_prefix("site/a/frigate", &t, ["site/b/frigate"]).is_ok());
        // Wildcards, reserved or malformed.
        for bad in [
            "frigate/#",
            "+",
            "a/+/b",
            "$SYS",
            "/frigate",
            "frigate/",
            "a\nuser x",
        ] {
            assert!(check_nvr_prefix(bad, &t, []).is_err(), "{bad:?}");
        }
        // The gate link's topics, from above and below.
        for bad in [
            "access",
            "access/request",
            "access/request/x",
            "access/response/7",
        ] {
            let e = check_nvr_prefix(bad, &t, []).unwrap_err();
            assert!(e.to_string().contains("gate link"), "{bad:?}: {e}");
        }
        assert!(check_nvr_prefix("accesses", &t, []).is_ok());
        // Another NVR's.
        let e = check_nvr_prefix("frigate/a", &t, ["x", "frigate"]).unwrap_err();
        assert!(e.to_string().contains("\"frigate\""), "{e}");
        assert!(check_nvr_prefix("frigate", &t, ["frigate"]).is_err());
    }
}
