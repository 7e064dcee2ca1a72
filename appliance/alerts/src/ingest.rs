//! The event webhook's body (`POST /api/v1/events`) -> [`NewEvent`], with errors that
//! tell the sender what was wrong and what to do.
//!
//! The body is one JSON object:
//!
//! ```json
//! {"kind": "intrusion", "severity": "critical", "time": "2025-03-07T17:30:00Z",
//!  "camera": "yard-east", "zone": "fence", "device": "pir-3", "message": "fence cut",
//!  "snapshot_url": "https://nvr/s.jpg", "clip_url": "https://nvr/c.mp4",
//!  "id": "alarm-81723", "state": "active", "source": "nvr-yard"}
//! ```
//!
//! - `kind` and `severity` are required; the rest is optional (`null` = absent).
//! - `time` is RFC 3339 and defaults to the time of receipt; it must not be before 2000
//!   nor more than a day ahead of the gateway's clock ([`limits::EARLIEST_TIME`],
//!   [`limits::MAX_AHEAD`]).
//! - `id` is the source's own id: the event's `external_id`, so a retransmission is
//!   recognised and `state` updates fold into one event.
//! - `state` is `active` or `ended`; absent = a one-off (instant) event.
//! - `source`, if present, must be the name of the source the API key belongs to (the
//!   key decides the source; the field only guards against a misconfigured sender).
//! - Unknown fields, duplicate fields, kinds starting with `alert.` (the gateway's own)
//!   and anything over [`limits`] are refused.
//!
//! Promise: [`parse_webhook`] never panics, and whatever it returns passes
//! [`NewEvent::validate`].

use crate::model::{
    self, check_external_id, check_kind, check_message, check_name, check_time, check_url,
    clean_text, limits, Lifecycle, NewEvent, Severity, SourceKind,
};
use serde::Deserialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Why an event (webhook body or Frigate message) was refused. The `Display` text is
/// what the sender gets back: what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("body is {size} bytes, over the limit of {limit}; send one event per request and shorten its message")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not valid JSON ({detail}); send one JSON object")]
    NotJson { detail: String },
    /// Valid JSON of the wrong shape: not an object, an unknown or duplicate field.
    #[error("body is not an event ({detail})")]
    Shape { detail: String },
    #[error("field `{field}` is missing; it is required")]
    Missing { field: &'static str },
    #[error("field `{field}`: {why}")]
    Field { field: &'static str, why: String },
    #[error("field `source`: {claimed:?} is not the source this API key belongs to ({authenticated:?}); send {authenticated:?} or omit the field")]
    SourceMismatch {
        claimed: String,
        authenticated: String,
    },
}

impl IngestError {
    /// A short stable label for counting refusals (a metrics label): `too_large`,
    /// `not_json`, `shape`, `missing`, `field`, `source_mismatch`.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::TooLarge { .. } => "too_large",
            IngestError::NotJson { .. } => "not_json",
            IngestError::Shape { .. } => "shape",
            IngestError::Missing { .. } => "missing",
            IngestError::Field { .. } => "field",
            IngestError::SourceMismatch { .. } => "source_mismatch",
        }
    }

    pub(crate) fn field(field: &'static str, why: impl Into<String>) -> IngestError {
        IngestError::Field {
            field,
            why: why.into(),
        }
    }

    /// Maps a `serde_json` error: syntax and truncation are "not JSON", the rest "shape".
    pub(crate) fn from_json(e: &serde_json::Error) -> IngestError {
        let detail = e.to_string();
        match e.classify() {
            serde_json::error::Category::Data => IngestError::Shape { detail },
            _ => IngestError::NotJson { detail },
        }
    }
}

/// The body as sent; every field a raw JSON value so that a wrong type is reported with
/// the field's name (serde's own messages do not name it).
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object with the fields kind, severity and optionally time, camera, zone, device, message, snapshot_url, clip_url, id, state, source"
)]
struct Body {
    kind: Option<Value>,
    severity: Option<Value>,
    time: Option<Value>,
    camera: Option<Value>,
    zone: Option<Value>,
    device: Option<Value>,
    message: Option<Value>,
    snapshot_url: Option<Value>,
    clip_url: Option<Value>,
    id: Option<Value>,
    state: Option<Value>,
    source: Option<Value>,
}

/// Parses and checks a webhook body from the authenticated source `source` (its
/// registered name) of kind `source_kind`, received at `now`.
pub fn parse_webhook(
    body: &[u8],
    source: &str,
    source_kind: SourceKind,
    now: OffsetDateTime,
) -> Result<NewEvent, IngestError> {
    if body.len() > limits::WEBHOOK_BODY {
        return Err(IngestError::TooLarge {
            size: body.len(),
            limit: limits::WEBHOOK_BODY,
        });
    }
    let b: Body = serde_json::from_slice(body).map_err(|e| IngestError::from_json(&e))?;

    if let Some(claimed) = string("source", b.source)? {
        if claimed != source {
            return Err(IngestError::SourceMismatch {
                claimed: clean_text(&claimed, limits::NAME),
                authenticated: source.to_owned(),
            });
        }
    }

    let kind = string("kind", b.kind)?.ok_or(IngestError::Missing { field: "kind" })?;
    check_kind(&kind).map_err(|why| IngestError::field("kind", why))?;
    if kind.starts_with(model::RESERVED_KIND_PREFIX) {
        return Err(IngestError::field(
            "kind",
            format!(
                "{kind:?}: kinds starting with {:?} are reserved for the gateway's own events; pick another",
                model::RESERVED_KIND_PREFIX
            ),
        ));
    }

    let severity =
        string("severity", b.severity)?.ok_or(IngestError::Missing { field: "severity" })?;
    let severity = Severity::ALL
        .into_iter()
        .find(|s| s.as_str() == severity)
        .ok_or_else(|| {
            IngestError::field(
                "severity",
                format!(
                    "{:?} is not one of info, warning, critical",
                    clean_text(&severity, 80)
                ),
            )
        })?;

    let time = match string("time", b.time)? {
        None => now,
        Some(t) => OffsetDateTime::parse(&t, &Rfc3339).map_err(|_| {
            IngestError::field(
                "time",
                format!(
                    "{:?} is not an RFC 3339 time (like \"2025-03-07T17:30:00Z\" or \"2025-03-07T18:30:00+01:00\"); omit it to use the time of receipt",
                    clean_text(&t, 80)
                ),
            )
        })?,
    };
    check_time(time, now).map_err(|why| IngestError::field("time", why))?;

    let lifecycle = match string("state", b.state)?.as_deref() {
        None => Lifecycle::Instant,
        Some("active") => Lifecycle::Active,
        Some("ended") => Lifecycle::Ended,
        Some(other) => {
            return Err(IngestError::field(
                "state",
                format!(
                    "{:?} is not one of active, ended (omit it for a one-off event)",
                    clean_text(other, 80)
                ),
            ))
        }
    };

    let name = |field: &'static str, v: Option<Value>| -> Result<Option<String>, IngestError> {
        let s = string(field, v)?;
        if let Some(s) = &s {
            check_name(s).map_err(|why| IngestError::field(field, why))?;
        }
        Ok(s)
    };
    let camera = name("camera", b.camera)?;
    let zone = name("zone", b.zone)?;
    let device = name("device", b.device)?;

    let message = string("message", b.message)?;
    if let Some(m) = &message {
        check_message(m).map_err(|why| IngestError::field("message", why))?;
    }
    let url = |field: &'static str, v: Option<Value>| -> Result<Option<String>, IngestError> {
        let s = string(field, v)?;
        if let Some(s) = &s {
            check_url(s).map_err(|why| IngestError::field(field, why))?;
        }
        Ok(s)
    };
    let snapshot_url = url("snapshot_url", b.snapshot_url)?;
    let clip_url = url("clip_url", b.clip_url)?;
    let external_id = string("id", b.id)?;
    if let Some(id) = &external_id {
        check_external_id(id).map_err(|why| IngestError::field("id", why))?;
    }
    if lifecycle != Lifecycle::Instant && external_id.is_none() {
        return Err(IngestError::field(
            "state",
            "needs an `id`: the source's own id for the event, so its updates and end fold into it",
        ));
    }

    let ev = NewEvent {
        source: source.to_owned(),
        source_kind,
        kind,
        severity,
        time,
        camera,
        zone,
        device,
        message,
        snapshot_url,
        clip_url,
        external_id,
        lifecycle,
    };
    // Everything was checked field by field above; this catches a source name that is
    // itself invalid (a store invariant) rather than blaming the sender's body for it.
    ev.validate().map_err(|e| IngestError::Field {
        field: "source",
        why: e.to_string(),
    })?;
    Ok(ev)
}

/// The JSON type of `v`, as an error names it.
pub(crate) fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A field that must be a string if present (`null` = absent).
fn string(field: &'static str, v: Option<Value>) -> Result<Option<String>, IngestError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(IngestError::field(
            field,
            format!("expected a string, got {}", type_name(&other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-03-07 17:30:00 UTC);

    fn parse(body: &[u8]) -> Result<NewEvent, IngestError> {
        parse_webhook(body, "nvr-yard", SourceKind::Nvr, NOW)
    }

    fn err(body: &[u8]) -> String {
        parse(body).unwrap_err().to_string()
    }

    #[test]
    fn full_body_parses_to_every_field() {
        let ev = parse(include_bytes!("../fixtures/webhook/full.json")).unwrap();
        assert_eq!(
            ev,
            NewEvent {
                source: "nvr-yard".into(),
                source_kind: SourceKind::Nvr,
                kind: "intrusion".into(),
                severity: Severity::Critical,
                time: datetime!(2025-03-07 18:29:58.250 +01:00),
                camera: Some("yard-east".into()),
                zone: Some("fence".into()),
                device: Some("pir-3".into()),
                message: Some("Line crossing on the east fence\nperson, 0.91".into()),
                snapshot_url: Some("https://nvr.site.lan/api/alarms/81723/snapshot.jpg".into()),
                clip_url: Some("http://nvr.site.lan:8080/clips/81723.mp4".into()),
                external_id: Some("alarm-81723".into()),
                lifecycle: Lifecycle::Active,
            }
        );
        ev.validate().unwrap();
    }

    #[test]
    fn minimal_body_defaults_time_to_now_and_is_instant() {
        let ev = parse(include_bytes!("../fixtures/webhook/minimal.json")).unwrap();
        assert_eq!(ev.kind, "fire");
        assert_eq!(ev.severity, Severity::Warning);
        assert_eq!(ev.time, NOW);
        assert_eq!(ev.lifecycle, Lifecycle::Instant);
        assert_eq!(ev.external_id, None);
        assert_eq!(ev.camera, None);
    }

    #[test]
    fn nulls_are_absent_and_matching_source_is_fine() {
        let ev = parse(
            br#"{"kind":"emergency","severity":"info","camera":null,"time":null,"source":"nvr-yard"}"#,
        )
        .unwrap();
        assert_eq!(ev.camera, None);
        assert_eq!(ev.time, NOW);
    }

    #[test]
    fn ended_state_with_id() {
        let ev = parse(br#"{"kind":"intrusion","severity":"critical","id":"a1","state":"ended"}"#)
            .unwrap();
        assert_eq!(ev.lifecycle, Lifecycle::Ended);
    }

    /// Each bad body, and a piece of text its error must contain.
    const BAD: &[(&[u8], &str)] = &[
        (
            br#"{"kind":"intrusion","severity":"urgent"}"#,
            "field `severity`: \"urgent\" is not one of info, warning, critical",
        ),
        (br#"{"severity":"info"}"#, "field `kind` is missing"),
        (br#"{"kind":"fire"}"#, "field `severity` is missing"),
        (
            br#"{"kind":"Intrusion!","severity":"info"}"#,
            "field `kind`: \"Intrusion!\" is not a kind",
        ),
        (
            br#"{"kind":"alert.delivery_dead","severity":"info"}"#,
            "reserved for the gateway's own events",
        ),
        (
            br#"{"kind":"fire","severity":3}"#,
            "field `severity`: expected a string, got a number (3)",
        ),
        (
            br#"{"kind":"fire","severity":"info","camera":["a"]}"#,
            "field `camera`: expected a string, got an array",
        ),
        (
            br#"{"kind":"fire","severity":"info","colour":"red"}"#,
            "unknown field `colour`",
        ),
        (
            br#"{"kind":"fire","kind":"flood","severity":"info"}"#,
            "duplicate field `kind`",
        ),
        (br#"{"kind":"fire","severity":"info""#, "not valid JSON"),
        (br#"{"kind":"fire",,}"#, "not valid JSON"),
        (b"", "not valid JSON"),
        (br#"[{"kind":"fire","severity":"info"}]"#, "not an event"),
        (br#""fire""#, "a JSON object with the fields kind, severity"),
        (
            br#"{"kind":"fire","severity":"info","time":"yesterday"}"#,
            "field `time`: \"yesterday\" is not an RFC 3339 time",
        ),
        (
            br#"{"kind":"fire","severity":"info","time":"1970-01-01T00:00:05Z"}"#,
            "field `time`: 1970-01-01T00:00:05Z is before 2000; the source's clock looks unset",
        ),
        (
            br#"{"kind":"fire","severity":"info","time":"2025-03-09T00:00:00Z"}"#,
            "more than a day ahead of the gateway's clock",
        ),
        (
            br#"{"kind":"fire","severity":"info","snapshot_url":"ftp://nvr/s.jpg"}"#,
            "field `snapshot_url`: \"ftp://nvr/s.jpg\" is not an http:// or https:// URL",
        ),
        (
            br#"{"kind":"fire","severity":"info","clip_url":"javascript:alert(1)"}"#,
            "field `clip_url`",
        ),
        (
            br#"{"kind":"fire","severity":"info","clip_url":"https:///x"}"#,
            "has no host",
        ),
        (
            br#"{"kind":"fire","severity":"info","state":"open","id":"x"}"#,
            "field `state`: \"open\" is not one of active, ended",
        ),
        (
            br#"{"kind":"fire","severity":"info","state":"active"}"#,
            "field `state`: needs an `id`",
        ),
        (
            br#"{"kind":"fire","severity":"info","source":"nvr-gate"}"#,
            "field `source`: \"nvr-gate\" is not the source this API key belongs to (\"nvr-yard\")",
        ),
        (
            br#"{"kind":"fire","severity":"info","zone":""}"#,
            "field `zone`: is empty; omit the field instead",
        ),
        (
            br#"{"kind":"fire","severity":"info","device":"a\u0007b"}"#,
            "field `device`: \"a\\u{7}b\" contains control characters",
        ),
    ];

    #[test]
    fn bad_bodies_are_refused_with_the_problem_named() {
        for (body, want) in BAD {
            let e = err(body);
            assert!(
                e.contains(want),
                "body {}\n  error {e}\n  wants {want}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn lengths_are_limited_per_field() {
        let long = |n: usize| "x".repeat(n);
        let body = format!(
            r#"{{"kind":"fire","severity":"info","camera":"{}"}}"#,
            long(65)
        );
        let e = err(body.as_bytes());
        assert!(
            e.contains("field `camera`: is 65 bytes long, over the limit of 64"),
            "{e}"
        );
        let body = format!(
            r#"{{"kind":"fire","severity":"info","camera":"{}"}}"#,
            long(64)
        );
        assert!(parse(body.as_bytes()).is_ok());

        let body = format!(
            r#"{{"kind":"fire","severity":"info","message":"{}"}}"#,
            long(1025)
        );
        assert!(err(body.as_bytes()).contains("field `message`: is 1025 bytes long"));
        let body = format!(
            r#"{{"kind":"fire","severity":"info","id":"{}"}}"#,
            long(129)
        );
        assert!(err(body.as_bytes()).contains("field `id`: is 129 bytes long"));
        let body = format!(
            r#"{{"kind":"fire","severity":"info","snapshot_url":"https://{}"}}"#,
            long(2041)
        );
        assert!(err(body.as_bytes()).contains("field `snapshot_url`: is 2049 bytes long"));
        let body = format!(r#"{{"kind":"{}","severity":"info"}}"#, long(65));
        assert!(err(body.as_bytes()).contains("field `kind`"));
    }

    #[test]
    fn oversize_body_is_refused_before_parsing() {
        let mut body = br#"{"kind":"fire","severity":"info","message":""#.to_vec();
        body.resize(limits::WEBHOOK_BODY + 1, b' ');
        let e = parse(&body).unwrap_err();
        assert_eq!(
            e,
            IngestError::TooLarge {
                size: limits::WEBHOOK_BODY + 1,
                limit: limits::WEBHOOK_BODY
            }
        );
        assert!(e.to_string().contains("over the limit of 16384"), "{e}");
        assert_eq!(e.reason(), "too_large");
    }

    #[test]
    fn an_invalid_registered_source_name_is_not_blamed_on_the_body() {
        let e = parse_webhook(
            br#"{"kind":"fire","severity":"info"}"#,
            "",
            SourceKind::Nvr,
            NOW,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("field `source`"), "{e}");
    }
}
