//! Frigate's MQTT messages -> [`NewEvent`], so an existing Frigate NVR plugs in by
//! pointing it at the gateway's broker.
//!
//! Source: the Frigate documentation, "MQTT" (<https://docs.frigate.video/integrations/mqtt>),
//! versions 0.13 to 0.15:
//!
//! - `<prefix>/events`: one message per change of a tracked object,
//!   `{"type": "new"|"update"|"end", "before": {..}, "after": {"id", "camera", "label",
//!   "sub_label", "top_score", "false_positive", "start_time", "end_time",
//!   "current_zones", "entered_zones", "has_snapshot", "has_clip", ..}}`.
//! - `<prefix>/reviews` (0.14 on): one message per change of a review item,
//!   `{"type": .., "before": {..}, "after": {"id", "camera", "start_time", "end_time",
//!   "severity": "alert"|"detection", "data": {"detections", "objects", "sub_labels",
//!   "zones", "audio"}}}`.
//!
//! Mapping (only `after` is read; `before` is whatever it is):
//!
//! | | events | reviews |
//! |---|---|---|
//! | kind | `object.<label>` | `review.<first object, else first audio label, else "activity">` |
//! | severity | info | alert -> critical, detection -> warning, anything else -> info |
//! | external_id | `event:<id>` | `review:<id>` |
//! | zone | first of `entered_zones`, else of `current_zones` | first of `data.zones` |
//! | time | `start_time` (float unix seconds) | `start_time` |
//! | lifecycle | new, update -> active; end -> ended | the same |
//! | snapshot_url | `<base>/api/events/<id>/snapshot.jpg` if `has_snapshot` | `<base>/api/events/<first detection>/thumbnail.jpg` |
//! | clip_url | `<base>/api/events/<id>/clip.mp4` if `has_clip` | none |
//!
//! Labels are lower-cased and any character outside `[a-z0-9_.-]` becomes `_`, so a
//! kind is always valid; a review's `person-verified` object counts as `person`. The
//! source is always of kind [`SourceKind::Nvr`]. `<base>` is the source's `base_url`
//! (no URLs without one). Reviews get no clip: the review preview endpoint moved between
//! versions (0.14 `/api/review/<id>/preview.gif`, 0.15 `/api/review/<id>/preview`),
//! while the event thumbnail is served by every version.
//!
//! Fields Frigate adds between versions are ignored. Of the fields read, `type`,
//! `after.id`, `after.camera`, `after.start_time`, and `after.label` (events) or
//! `after.severity` (reviews) are required; the flags, zone lists and `data` lists
//! default to false / empty when absent; a field present with the wrong JSON type is an
//! error naming it (`after.start_time: expected a number, got a string`).
//!
//! An event still marked `false_positive` is not an error but
//! [`FrigateOutcome::Ignored`] (Frigate publishes objects only once they stop being
//! false positives, so it is rare).
//!
//! Promise: nothing here panics, and every [`NewEvent`] returned passes
//! [`NewEvent::validate`].

use crate::ingest::{type_name, IngestError};
use crate::model::{
    check_name, check_time, check_url, clean_text, limits, Lifecycle, ModelError, NewEvent,
    Severity, SourceKind,
};
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// Which Frigate topic a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrigateTopic {
    /// `<prefix>/events`: tracked objects.
    Events,
    /// `<prefix>/reviews`: review items (alerts and detections).
    Reviews,
}

impl FrigateTopic {
    /// The topic's last level: `events` or `reviews`.
    pub fn suffix(self) -> &'static str {
        match self {
            FrigateTopic::Events => "events",
            FrigateTopic::Reviews => "reviews",
        }
    }

    /// `<prefix>/events` or `<prefix>/reviews` -> the topic; anything else (including
    /// Frigate's many other topics under the prefix) -> `None`.
    pub fn of(prefix: &str, topic: &str) -> Option<FrigateTopic> {
        let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
        [FrigateTopic::Events, FrigateTopic::Reviews]
            .into_iter()
            .find(|t| t.suffix() == rest)
    }
}

/// What a Frigate message amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
// Returned once per message and matched at once, never stored in bulk: boxing the event
// would cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
pub enum FrigateOutcome {
    Event(NewEvent),
    /// A well-formed message that is deliberately not an event.
    Ignored(Ignored),
}

/// Why a well-formed Frigate message is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ignored {
    /// The tracked object is still marked `false_positive`.
    FalsePositive { id: String },
}

impl Ignored {
    /// A short stable label for counting (a metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            Ignored::FalsePositive { .. } => "false_positive",
        }
    }
}

/// Checks a Frigate source's `base_url` (what the CLI and store should accept):
/// `http(s)://host[:port][/path]` with no query or fragment. Links are built by
/// appending `/api/...` to it (a trailing `/` is dropped).
pub fn validate_base_url(base: &str) -> Result<(), ModelError> {
    let invalid = |why: String| ModelError::Invalid {
        field: "base_url",
        why,
    };
    check_url(base).map_err(invalid)?;
    if base.contains(['?', '#']) {
        return Err(invalid(format!(
            "{:?} has a query or fragment; give the server's address only (like http://frigate.lan:5000)",
            clean_text(base, 80)
        )));
    }
    // Room for "/api/events/<64-byte id>/snapshot.jpg".
    if base.len() > limits::URL - 100 {
        return Err(invalid(format!(
            "is {} bytes long; at most {} leaves room for the links built from it",
            base.len(),
            limits::URL - 100
        )));
    }
    Ok(())
}

/// Parses a message from `topic` of the Frigate source `source` (its registered name),
/// whose web address is `base_url` (for links), received at `now`.
pub fn parse_frigate(
    topic: FrigateTopic,
    payload: &[u8],
    source: &str,
    base_url: Option<&str>,
    now: OffsetDateTime,
) -> Result<FrigateOutcome, IngestError> {
    match topic {
        FrigateTopic::Events => parse_frigate_event(payload, source, base_url, now),
        FrigateTopic::Reviews => parse_frigate_review(payload, source, base_url, now),
    }
}

/// Parses a `<prefix>/events` message (see the module docs for the mapping).
pub fn parse_frigate_event(
    payload: &[u8],
    source: &str,
    base_url: Option<&str>,
    now: OffsetDateTime,
) -> Result<FrigateOutcome, IngestError> {
    let v = json(payload)?;
    let (lifecycle, after) = envelope(&v)?;
    let id = frigate_id(after, "id", "after.id")?;
    if bool_field(after, "false_positive", "after.false_positive")? {
        return Ok(FrigateOutcome::Ignored(Ignored::FalsePositive {
            id: id.to_owned(),
        }));
    }
    let camera = camera(after)?;
    let label = required_str(after, "label", "after.label")?;
    let kind = kind("object.", label, "after.label")?;
    let time = start_time(after, now)?;
    let sub_label = match after.get("sub_label") {
        // A string up to 0.13, `[name, score]` from 0.14; tolerated in any shape.
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str),
        _ => None,
    };
    let entered = str_list(after, "entered_zones", "after.entered_zones")?;
    let current = str_list(after, "current_zones", "after.current_zones")?;
    let zone = entered
        .first()
        .or(current.first())
        .map(|z| zone(z, "after.entered_zones"))
        .transpose()?;
    let has_snapshot = bool_field(after, "has_snapshot", "after.has_snapshot")?;
    let has_clip = bool_field(after, "has_clip", "after.has_clip")?;

    let mut what = clean_text(label, limits::NAME);
    if let Some(sub) = sub_label.filter(|s| !s.is_empty()) {
        what.push(' ');
        what.push_str(&clean_text(sub, limits::NAME));
    }
    let base = usable_base(base_url);
    let link = |file: &str| base.map(|b| format!("{b}/api/events/{id}/{file}"));
    Ok(FrigateOutcome::Event(finish(NewEvent {
        source: source.to_owned(),
        source_kind: SourceKind::Nvr,
        kind,
        severity: Severity::Info,
        time,
        message: Some(summary(&what, zone.as_deref(), &camera)),
        camera: Some(camera),
        zone,
        device: None,
        snapshot_url: if has_snapshot {
            link("snapshot.jpg")
        } else {
            None
        },
        clip_url: if has_clip { link("clip.mp4") } else { None },
        external_id: Some(format!("event:{id}")),
        lifecycle,
    })?))
}

/// Parses a `<prefix>/reviews` message (see the module docs for the mapping).
pub fn parse_frigate_review(
    payload: &[u8],
    source: &str,
    base_url: Option<&str>,
    now: OffsetDateTime,
) -> Result<FrigateOutcome, IngestError> {
    let v = json(payload)?;
    let (lifecycle, after) = envelope(&v)?;
    let id = frigate_id(after, "id", "after.id")?;
    let camera = camera(after)?;
    let time = start_time(after, now)?;
    let severity = match required_str(after, "severity", "after.severity")? {
        "alert" => Severity::Critical,
        "detection" => Severity::Warning,
        _ => Severity::Info,
    };
    let empty = Map::new();
    let data = match after.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(IngestError::field(
                "after.data",
                format!("expected an object, got {}", type_name(other)),
            ))
        }
    };
    let mut objects: Vec<&str> = Vec::new();
    for o in str_list(data, "objects", "after.data.objects")? {
        let o = o.strip_suffix("-verified").unwrap_or(o);
        if !objects.contains(&o) {
            objects.push(o);
        }
    }
    let audio = str_list(data, "audio", "after.data.audio")?;
    let sub_labels = str_list(data, "sub_labels", "after.data.sub_labels")?;
    let zones = str_list(data, "zones", "after.data.zones")?;
    let detections = str_list(data, "detections", "after.data.detections")?;

    let first = objects.first().or(audio.first()).copied();
    let kind = kind(
        "review.",
        first.unwrap_or("activity"),
        if objects.is_empty() {
            "after.data.audio"
        } else {
            "after.data.objects"
        },
    )?;
    let zone = zones
        .first()
        .map(|z| zone(z, "after.data.zones"))
        .transpose()?;

    let mut what = list(objects.iter().chain(&audio).copied());
    if what.is_empty() {
        what.push_str("activity");
    }
    if !sub_labels.is_empty() {
        what.push_str(&format!(" ({})", list(sub_labels.iter().copied())));
    }
    // The first detection's thumbnail: served for every tracked object by every version.
    let snapshot_url = usable_base(base_url).and_then(|b| {
        let det = detections.first().filter(|d| is_frigate_id(d))?;
        Some(format!("{b}/api/events/{det}/thumbnail.jpg"))
    });
    Ok(FrigateOutcome::Event(finish(NewEvent {
        source: source.to_owned(),
        source_kind: SourceKind::Nvr,
        kind,
        severity,
        time,
        message: Some(summary(&what, zone.as_deref(), &camera)),
        camera: Some(camera),
        zone,
        device: None,
        snapshot_url,
        clip_url: None,
        external_id: Some(format!("review:{id}")),
        lifecycle,
    })?))
}

/// The payload as JSON, within the size limit.
fn json(payload: &[u8]) -> Result<Value, IngestError> {
    if payload.len() > limits::FRIGATE_PAYLOAD {
        return Err(IngestError::TooLarge {
            size: payload.len(),
            limit: limits::FRIGATE_PAYLOAD,
        });
    }
    serde_json::from_slice(payload).map_err(|e| IngestError::from_json(&e))
}

/// The message's `type` (as a lifecycle) and its `after` object.
fn envelope(v: &Value) -> Result<(Lifecycle, &Map<String, Value>), IngestError> {
    let Value::Object(top) = v else {
        return Err(IngestError::Shape {
            detail: format!(
                "expected a JSON object with type, before and after, got {}",
                type_name(v)
            ),
        });
    };
    let lifecycle = match required_str(top, "type", "type")? {
        "new" | "update" => Lifecycle::Active,
        "end" => Lifecycle::Ended,
        other => {
            return Err(IngestError::field(
                "type",
                format!("{:?} is not one of new, update, end", clean_text(other, 80)),
            ))
        }
    };
    match top.get("after") {
        None | Some(Value::Null) => Err(IngestError::Missing { field: "after" }),
        Some(Value::Object(after)) => Ok((lifecycle, after)),
        Some(other) => Err(IngestError::field(
            "after",
            format!("expected an object, got {}", type_name(other)),
        )),
    }
}

fn finish(ev: NewEvent) -> Result<NewEvent, IngestError> {
    // Each field was checked as it was read; what is left is the source name (a store
    // invariant) and the message and URLs built here, all within limits by construction.
    ev.validate().map_err(|e| match e {
        ModelError::Invalid { field, why } => IngestError::Field { field, why },
        #[allow(unreachable_patterns)] // ModelError is non_exhaustive
        other => IngestError::field("source", other.to_string()),
    })?;
    Ok(ev)
}

/// `"<what> in <zone> (<camera>)"` or `"<what> (<camera>)"`, within the message limit.
fn summary(what: &str, zone: Option<&str>, camera: &str) -> String {
    let s = match zone {
        Some(z) => format!("{what} in {z} ({camera})"),
        None => format!("{what} ({camera})"),
    };
    clean_text(&s, limits::MESSAGE)
}

/// Up to five names joined by ", ", then "and N more".
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    let mut s = names
        .iter()
        .take(5)
        .map(|n| clean_text(n, limits::NAME))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 5 {
        s.push_str(&format!(" and {} more", names.len() - 5));
    }
    s
}

/// `prefix` + the label made a valid kind (lower case, other characters `_`).
fn kind(prefix: &str, label: &str, field: &'static str) -> Result<String, IngestError> {
    if label.is_empty() {
        return Err(IngestError::field(field, "is empty"));
    }
    let max = limits::NAME - prefix.len();
    if label.len() > max {
        return Err(IngestError::field(
            field,
            format!("is {} bytes long, over the limit of {max}", label.len()),
        ));
    }
    let mut kind = prefix.to_owned();
    kind.extend(label.chars().map(|c| {
        let c = c.to_ascii_lowercase();
        if matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-') {
            c
        } else {
            '_'
        }
    }));
    Ok(kind)
}

fn camera(after: &Map<String, Value>) -> Result<String, IngestError> {
    let c = required_str(after, "camera", "after.camera")?;
    check_name(c).map_err(|why| IngestError::field("after.camera", why))?;
    Ok(c.to_owned())
}

fn zone(z: &str, field: &'static str) -> Result<String, IngestError> {
    check_name(z).map_err(|why| IngestError::field(field, why))?;
    Ok(z.to_owned())
}

fn start_time(
    after: &Map<String, Value>,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, IngestError> {
    const FIELD: &str = "after.start_time";
    let v = after.get("start_time").filter(|v| !v.is_null());
    let v = v.ok_or(IngestError::Missing { field: FIELD })?;
    let secs = v.as_f64().ok_or_else(|| {
        IngestError::field(FIELD, format!("expected a number, got {}", type_name(v)))
    })?;
    // Microseconds (what Frigate's `time.time()` floats resolve; exact in an f64 until
    // 2255). `as` saturates (and is only reached for finite values); the range check
    // follows.
    let t = if secs.is_finite() {
        ((secs * 1e6).round() as i128)
            .checked_mul(1000)
            .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
    } else {
        None
    };
    let t =
        t.ok_or_else(|| IngestError::field(FIELD, format!("{v} is not a time in unix seconds")))?;
    check_time(t, now).map_err(|why| IngestError::field(FIELD, why))?;
    Ok(t)
}

/// Frigate ids (`1607123955.475377-mxklsc`) go into URL paths and external ids: 1 to 64
/// of `[A-Za-z0-9._-]`.
fn is_frigate_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= limits::NAME
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn frigate_id<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a str, IngestError> {
    let id = required_str(obj, key, field)?;
    if !is_frigate_id(id) {
        return Err(IngestError::field(
            field,
            format!(
                "{:?} is not a Frigate id: 1 to {} of letters, digits, '.', '_', '-'",
                clean_text(id, 80),
                limits::NAME
            ),
        ));
    }
    Ok(id)
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<&'a str, IngestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(IngestError::Missing { field }),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(IngestError::field(
            field,
            format!("expected a string, got {}", type_name(other)),
        )),
    }
}

/// A boolean flag; absent or null = false.
fn bool_field(
    obj: &Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<bool, IngestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(IngestError::field(
            field,
            format!("expected true or false, got {}", type_name(other)),
        )),
    }
}

/// A list of strings; absent or null = empty.
fn str_list<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &'static str,
) -> Result<Vec<&'a str>, IngestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    IngestError::field(
                        field,
                        format!("expected a list of strings, found {}", type_name(v)),
                    )
                })
            })
            .collect(),
        Some(other) => Err(IngestError::field(
            field,
            format!("expected a list of strings, got {}", type_name(other)),
        )),
    }
}

/// The base URL without its trailing `/`, if it is usable for links.
fn usable_base(base: Option<&str>) -> Option<&str> {
    base.filter(|b| validate_base_url(b).is_ok())
        .map(|b| b.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-03-07 17:31:00 UTC);
    const BASE: Option<&str> = Some("http://frigate.site.lan:5000/");

    fn event(payload: &[u8]) -> NewEvent {
        match parse_frigate(FrigateTopic::Events, payload, "nvr-yard", BASE, NOW).unwrap() {
            FrigateOutcome::Event(ev) => {
                ev.validate().unwrap();
                ev
            }
            other => panic!("{other:?}"),
        }
    }

    fn review(payload: &[u8]) -> NewEvent {
        match parse_frigate(FrigateTopic::Reviews, payload, "nvr-yard", BASE, NOW).unwrap() {
            FrigateOutcome::Event(ev) => {
                ev.validate().unwrap();
                ev
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn topics() {
        assert_eq!(
            FrigateTopic::of("frigate", "frigate/events"),
            Some(FrigateTopic::Events)
        );
        assert_eq!(
            FrigateTopic::of("nvr/yard", "nvr/yard/reviews"),
            Some(FrigateTopic::Reviews)
        );
        assert_eq!(FrigateTopic::of("frigate", "frigate/stats"), None);
        assert_eq!(FrigateTopic::of("frigate", "frigate/front/person"), None);
        assert_eq!(FrigateTopic::of("frigate", "frigate2/events"), None);
        assert_eq!(FrigateTopic::of("frigate", "frigateevents"), None);
    }

    #[test]
    fn event_new_update_end_fold_into_one_external_id() {
        let new = event(include_bytes!("../fixtures/frigate/event_new.json"));
        assert_eq!(
            new,
            NewEvent {
                source: "nvr-yard".into(),
                source_kind: SourceKind::Nvr,
                kind: "object.person".into(),
                severity: Severity::Info,
                time: datetime!(2025-03-07 17:30:00.123456 UTC),
                camera: Some("front_door".into()),
                zone: None,
                device: None,
                message: Some("person (front_door)".into()),
                snapshot_url: None,
                clip_url: None,
                external_id: Some("event:1741368600.123456-k3x9qa".into()),
                lifecycle: Lifecycle::Active,
            }
        );

        let update = event(include_bytes!("../fixtures/frigate/event_update.json"));
        assert_eq!(update.external_id, new.external_id);
        assert_eq!(update.time, new.time);
        assert_eq!(update.lifecycle, Lifecycle::Active);
        // First entered zone; the 0.14 `[name, score]` sub label.
        assert_eq!(update.zone.as_deref(), Some("driveway"));
        assert_eq!(
            update.message.as_deref(),
            Some("person Bob in driveway (front_door)")
        );
        assert_eq!(
            update.snapshot_url.as_deref(),
            Some("http://frigate.site.lan:5000/api/events/1741368600.123456-k3x9qa/snapshot.jpg")
        );
        assert_eq!(
            update.clip_url.as_deref(),
            Some("http://frigate.site.lan:5000/api/events/1741368600.123456-k3x9qa/clip.mp4")
        );

        let end = event(include_bytes!("../fixtures/frigate/event_end.json"));
        assert_eq!(end.external_id, new.external_id);
        assert_eq!(end.lifecycle, Lifecycle::Ended);
        assert_eq!(end.zone.as_deref(), Some("driveway"));
    }

    #[test]
    fn event_from_frigate_0_13() {
        let ev = event(include_bytes!("../fixtures/frigate/event_v013_update.json"));
        assert_eq!(ev.kind, "object.car");
        // No entered zone yet: the current one.
        assert_eq!(ev.zone.as_deref(), Some("street"));
        assert_eq!(
            ev.message.as_deref(),
            Some("car ABC123 in street (gate_cam)")
        );
        assert_eq!(ev.camera.as_deref(), Some("gate_cam"));
        assert_eq!(ev.time, datetime!(2025-03-07 17:31:40.0045 UTC));
    }

    #[test]
    fn false_positive_is_ignored_not_an_error() {
        let out = parse_frigate(
            FrigateTopic::Events,
            include_bytes!("../fixtures/frigate/event_false_positive.json"),
            "nvr-yard",
            BASE,
            NOW,
        )
        .unwrap();
        let FrigateOutcome::Ignored(why) = out else {
            panic!("{out:?}");
        };
        assert_eq!(
            why,
            Ignored::FalsePositive {
                id: "1741368655.700001-zz01ab".into()
            }
        );
        assert_eq!(why.reason(), "false_positive");
    }

    #[test]
    fn review_alert_is_critical() {
        let ev = review(include_bytes!("../fixtures/frigate/review_alert.json"));
        assert_eq!(
            ev,
            NewEvent {
                source: "nvr-yard".into(),
                source_kind: SourceKind::Nvr,
                kind: "review.person".into(),
                severity: Severity::Critical,
                time: datetime!(2025-03-07 17:30:00.310042 UTC),
                camera: Some("front_door".into()),
                zone: Some("driveway".into()),
                device: None,
                message: Some("person, car (Bob) in driveway (front_door)".into()),
                snapshot_url: Some(
                    "http://frigate.site.lan:5000/api/events/1741368600.123456-k3x9qa/thumbnail.jpg"
                        .into()
                ),
                clip_url: None,
                external_id: Some("review:1741368600.310042-w4e8hn".into()),
                lifecycle: Lifecycle::Active,
            }
        );
    }

    #[test]
    fn review_detection_is_warning_and_end_ends_it() {
        let ev = review(include_bytes!(
            "../fixtures/frigate/review_detection_end.json"
        ));
        assert_eq!(ev.severity, Severity::Warning);
        assert_eq!(ev.kind, "review.car");
        assert_eq!(ev.lifecycle, Lifecycle::Ended);
        assert_eq!(ev.zone, None);
        assert_eq!(ev.message.as_deref(), Some("car (front_door)"));
    }

    #[test]
    fn audio_only_review_is_named_by_its_sound() {
        let ev = review(include_bytes!("../fixtures/frigate/review_audio_new.json"));
        assert_eq!(ev.kind, "review.speech");
        assert_eq!(ev.message.as_deref(), Some("speech in porch (front_door)"));
        let bare = br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600,
            "severity":"significant_motion","data":{}}}"#;
        let ev = review(bare);
        assert_eq!(ev.kind, "review.activity");
        assert_eq!(ev.severity, Severity::Info);
        assert_eq!(ev.message.as_deref(), Some("activity (c)"));
        assert_eq!(ev.snapshot_url, None);
    }

    #[test]
    fn no_base_url_no_links_and_bad_base_urls_are_refused() {
        let p = include_bytes!("../fixtures/frigate/event_update.json");
        for base in [None, Some("ftp://x"), Some("http://x/?a=1"), Some("")] {
            let Ok(FrigateOutcome::Event(ev)) =
                parse_frigate(FrigateTopic::Events, p, "nvr-yard", base, NOW)
            else {
                panic!("{base:?}");
            };
            assert_eq!((ev.snapshot_url, ev.clip_url), (None, None), "{base:?}");
        }
        validate_base_url("https://nvr.lan:5000/frigate").unwrap();
        let e = validate_base_url("http://x/?a=1").unwrap_err().to_string();
        assert!(e.contains("invalid base_url") && e.contains("query"), "{e}");
    }

    #[test]
    fn labels_are_made_valid_kinds() {
        let p = br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600,
            "label":"Amazon Van"}}"#;
        assert_eq!(event(p).kind, "object.amazon_van");
    }

    /// Each bad payload (events or reviews), and a piece of text its error must contain.
    const BAD: &[(FrigateTopic, &[u8], &str)] = &[
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600,"label":"person""#,
            "not valid JSON (EOF while parsing",
        ),
        (FrigateTopic::Events, b"", "not valid JSON"),
        (FrigateTopic::Events, b"\xff\xfe{}", "not valid JSON"),
        (FrigateTopic::Events, b"[1,2]", "expected a JSON object with type, before and after, got an array"),
        (FrigateTopic::Events, br#"{"after":{}}"#, "field `type` is missing"),
        (
            FrigateTopic::Events,
            br#"{"type":"snapshot","after":{}}"#,
            "field `type`: \"snapshot\" is not one of new, update, end",
        ),
        (FrigateTopic::Events, br#"{"type":"new"}"#, "field `after` is missing"),
        (FrigateTopic::Events, br#"{"type":"new","after":[]}"#, "field `after`: expected an object, got an array"),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":"1741368600","label":"person"}}"#,
            "field `after.start_time`: expected a number, got a string",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","label":"person"}}"#,
            "field `after.start_time` is missing",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1e300,"label":"person"}}"#,
            "field `after.start_time`: 1e+300 is not a time in unix seconds",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":5,"label":"person"}}"#,
            "field `after.start_time`: 1970-01-01T00:00:05Z is before 2000",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1900000000,"label":"person"}}"#,
            "more than a day ahead of the gateway's clock",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":7,"camera":"c","start_time":1741368600,"label":"person"}}"#,
            "field `after.id`: expected a string, got a number (7)",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"../../x","camera":"c","start_time":1741368600,"label":"person"}}"#,
            "field `after.id`: \"../../x\" is not a Frigate id",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","start_time":1741368600,"label":"person"}}"#,
            "field `after.camera` is missing",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600}}"#,
            "field `after.label` is missing",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600,"label":"person","false_positive":"no"}}"#,
            "field `after.false_positive`: expected true or false, got a string",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600,"label":"person","entered_zones":"yard"}}"#,
            "field `after.entered_zones`: expected a list of strings, got a string",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600,"label":"person","current_zones":[1]}}"#,
            "field `after.current_zones`: expected a list of strings, found a number (1)",
        ),
        (
            FrigateTopic::Events,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"","start_time":1741368600,"label":"person"}}"#,
            "field `after.camera`: is empty",
        ),
        (
            FrigateTopic::Reviews,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600,"data":{}}}"#,
            "field `after.severity` is missing",
        ),
        (
            FrigateTopic::Reviews,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600,"severity":"alert","data":[]}}"#,
            "field `after.data`: expected an object, got an array",
        ),
        (
            FrigateTopic::Reviews,
            br#"{"type":"new","after":{"id":"1.2-a","camera":"c","start_time":1741368600,"severity":"alert","data":{"zones":[true]}}}"#,
            "field `after.data.zones`: expected a list of strings, found a boolean (true)",
        ),
    ];

    #[test]
    fn bad_payloads_are_refused_with_the_problem_named() {
        for (topic, payload, want) in BAD {
            let e = parse_frigate(*topic, payload, "nvr-yard", BASE, NOW)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(want),
                "payload {}\n  error {e}\n  wants {want}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn long_names_are_refused_by_field() {
        let p = format!(
            r#"{{"type":"new","after":{{"id":"1.2-a","camera":"c","start_time":1741368600,"label":"{}"}}}}"#,
            "l".repeat(58)
        );
        let e = parse_frigate(FrigateTopic::Events, p.as_bytes(), "n", None, NOW).unwrap_err();
        assert!(
            e.to_string()
                .contains("field `after.label`: is 58 bytes long, over the limit of 57"),
            "{e}"
        );
        let p = format!(
            r#"{{"type":"new","after":{{"id":"1.2-a","camera":"c","start_time":1741368600,"label":"person","entered_zones":["{}"]}}}}"#,
            "z".repeat(65)
        );
        let e = parse_frigate(FrigateTopic::Events, p.as_bytes(), "n", None, NOW).unwrap_err();
        assert!(
            e.to_string()
                .contains("field `after.entered_zones`: is 65 bytes long"),
            "{e}"
        );
    }

    #[test]
    fn oversize_payload_is_refused_before_parsing() {
        let mut p = include_bytes!("../fixtures/frigate/event_update.json").to_vec();
        p.resize(limits::FRIGATE_PAYLOAD + 1, b' ');
        let e = parse_frigate(FrigateTopic::Events, &p, "nvr-yard", BASE, NOW).unwrap_err();
        assert_eq!(
            e,
            IngestError::TooLarge {
                size: limits::FRIGATE_PAYLOAD + 1,
                limit: limits::FRIGATE_PAYLOAD
            }
        );
        // Just under the limit (trailing whitespace is valid JSON) parses.
        p.truncate(limits::FRIGATE_PAYLOAD);
        assert!(parse_frigate(FrigateTopic::Events, &p, "nvr-yard", BASE, NOW).is_ok());
    }

    #[test]
    fn long_lists_are_summarised_within_the_message_limit() {
        let objects: Vec<String> = (0..40).map(|i| format!("\"thing{i}\"")).collect();
        let p = format!(
            r#"{{"type":"new","after":{{"id":"1.2-a","camera":"c","start_time":1741368600,"severity":"alert","data":{{"objects":[{}]}}}}}}"#,
            objects.join(",")
        );
        let ev = review(p.as_bytes());
        assert_eq!(
            ev.message.as_deref(),
            Some("thing0, thing1, thing2, thing3, thing4 and 35 more (c)")
        );
    }
}
