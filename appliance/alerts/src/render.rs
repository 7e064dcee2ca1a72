//! Notification bodies, without I/O: what a webhook (Slack-compatible or plain JSON), an
//! e-mail (subject and text) and an ntfy push say about one [`Notification`].
//!
//! Promises:
//! - Every body carries the event id and the notification's idempotency key
//!   ([`NotificationKind::idempotency_key`]): JSON bodies as the top-level fields
//!   `event_id` and `idempotency_key`, the e-mail and ntfy texts as lines of their own.
//! - One headline for all of them ([`headline`]): `[CRITICAL] intrusion at driveway
//!   (nvr-yard)`, `[REMINDER 2] ...`, `[RESOLVED] ...`. It is a single line: control
//!   characters a source sent (CR, LF, TAB, ...) are replaced by spaces, so it is safe as an
//!   e-mail subject or an HTTP header value once non-ASCII is encoded.
//! - Text a source sent is escaped where the format gives it meaning (Slack's mrkdwn:
//!   `&`, `<`, `>`), and cut to the format's limits (Slack header text: 150 characters).
//! - Times are RFC 3339 in UTC.
//!
//! Sources for the formats: Slack's Block Kit reference (<https://api.slack.com/reference/block-kit/blocks>,
//! "formatting text for app surfaces" for escaping and `<!date^...>`), ntfy's publishing
//! docs (<https://docs.ntfy.sh/publish/>: priorities 1-5, tags, click).

use crate::model::{Notification, NotificationKind, Severity};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Slack: "Maximum length for the text in this field is 150 characters" (header block).
const SLACK_HEADER_MAX_CHARS: usize = 150;
/// Slack: a section's `text` is at most 3000 characters.
const SLACK_SECTION_MAX_CHARS: usize = 3000;

/// The name of a notification kind, as JSON bodies and the SSE `event:` field spell it.
pub fn kind_name(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::Firing => "firing",
        NotificationKind::Repeat(_) => "repeat",
        NotificationKind::Resolved => "resolved",
    }
}

/// The idempotency key of `n`: what the `Idempotency-Key` header and the body carry.
pub fn idempotency_key(n: &Notification) -> String {
    n.kind.idempotency_key(n.event.id)
}

/// One line saying what happened: `[TAG] kind at place (source)`.
///
/// The tag is the severity for a first notification (`[CRITICAL]`), `[REMINDER n]` for the
/// n-th repeat and `[RESOLVED]` when the event ended. The place is the zone, else the
/// camera, else the device; without any, ` at place` is left out.
pub fn headline(n: &Notification) -> String {
    let e = &n.event.new;
    let tag = match n.kind {
        NotificationKind::Firing => severity_tag(e.severity).to_string(),
        NotificationKind::Repeat(k) => format!("REMINDER {k}"),
        NotificationKind::Resolved => "RESOLVED".to_string(),
    };
    let place = e
        .zone
        .as_deref()
        .or(e.camera.as_deref())
        .or(e.device.as_deref());
    let line = match place {
        Some(p) => format!("[{tag}] {} at {p} ({})", e.kind, e.source),
        None => format!("[{tag}] {} ({})", e.kind, e.source),
    };
    one_line(&line)
}

/// A Slack incoming-webhook body: `text` (the fallback shown in notifications) and
/// `blocks` (a header, the message, the fields, buttons to the snapshot and clip, and a
/// context line with the ids), plus top-level `event_id` and `idempotency_key`.
pub fn slack_body(n: &Notification) -> Value {
    let ev = &n.event;
    let e = &ev.new;
    let head = headline(n);

    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": truncate_chars(&head, SLACK_HEADER_MAX_CHARS) },
    })];
    if let Some(m) = &e.message {
        blocks.push(json!({
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": truncate_chars(&slack_escape(m), SLACK_SECTION_MAX_CHARS),
            },
        }));
    }

    let mut fields = vec![
        slack_field("Severity", e.severity.as_str()),
        slack_field("Kind", &e.kind),
        slack_field("Source", &format!("{} ({})", e.source, e.source_kind)),
    ];
    for (label, value) in [
        ("Camera", &e.camera),
        ("Zone", &e.zone),
        ("Device", &e.device),
    ] {
        if let Some(v) = value {
            fields.push(slack_field(label, v));
        }
    }
    fields.push(json!({ "type": "mrkdwn", "text": format!("*Time*\n{}", slack_date(e.time)) }));
    if let (NotificationKind::Resolved, Some(ended)) = (n.kind, ev.ended_at) {
        fields.push(json!({ "type": "mrkdwn", "text": format!("*Ended*\n{}", slack_date(ended)) }));
    }
    if let Some(ack) = &ev.ack {
        fields.push(slack_field("Acknowledged by", &ack.by));
    }
    // At most 9 fields here; Slack allows 10 per section.
    blocks.push(json!({ "type": "section", "fields": fields }));

    let buttons: Vec<Value> = [("Snapshot", &e.snapshot_url), ("Clip", &e.clip_url)]
        .into_iter()
        .filter_map(|(label, url)| {
            url.as_ref().map(|u| {
                json!({
                    "type": "button",
                    "text": { "type": "plain_text", "text": label },
                    "url": u,
                })
            })
        })
        .collect();
    if !buttons.is_empty() {
        blocks.push(json!({ "type": "actions", "elements": buttons }));
    }

    let key = idempotency_key(n);
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": format!("event `{}` · key `{key}`", ev.id) }],
    }));

    let text = match &e.message {
        Some(m) => format!("{}: {}", slack_escape(&head), slack_escape(&one_line(m))),
        None => slack_escape(&head),
    };
    json!({
        "text": text,
        "blocks": blocks,
        "event_id": ev.id.to_string(),
        "idempotency_key": key,
    })
}

/// The notification as plain JSON (its serde form: `delivery`, `kind`, `event`) plus
/// `notification` ("firing" | "repeat" | "resolved"), `title` (the [`headline`]),
/// `event_id` and `idempotency_key`.
pub fn json_body(n: &Notification) -> Value {
    // Serialising the model cannot fail (no maps with non-string keys); should it ever,
    // the receiver still gets the ids.
    let mut v = serde_json::to_value(n).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("notification".into(), kind_name(n.kind).into());
        m.insert("title".into(), headline(n).into());
        m.insert("event_id".into(), n.event.id.to_string().into());
        m.insert("idempotency_key".into(), idempotency_key(n).into());
    }
    v
}

/// An e-mail's subject and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailContent {
    /// The [`headline`] (one line).
    pub subject: String,
    /// The headline, the message, one `Label: value` line per field, then the event id
    /// and idempotency key. Lines end in `\n` (the mailer converts to CRLF).
    pub text: String,
}

/// The e-mail for `n`.
pub fn email(n: &Notification) -> EmailContent {
    let ev = &n.event;
    let e = &ev.new;
    let subject = headline(n);

    let mut t = String::new();
    t.push_str(&subject);
    t.push_str("\n\n");
    match n.kind {
        NotificationKind::Firing => {}
        NotificationKind::Repeat(k) => {
            t.push_str(&format!("Reminder {k}: not acknowledged yet.\n\n"));
        }
        NotificationKind::Resolved => t.push_str("The event has ended.\n\n"),
    }
    if let Some(m) = &e.message {
        t.push_str(m);
        t.push_str("\n\n");
    }
    let mut fields: Vec<(&str, String)> = vec![
        ("Severity", e.severity.to_string()),
        ("Kind", e.kind.clone()),
        ("Source", format!("{} ({})", e.source, e.source_kind)),
    ];
    for (label, value) in [
        ("Camera", &e.camera),
        ("Zone", &e.zone),
        ("Device", &e.device),
    ] {
        if let Some(v) = value {
            fields.push((label, one_line(v)));
        }
    }
    fields.push(("Time", rfc3339(e.time)));
    fields.push(("Received", rfc3339(ev.received_at)));
    if let Some(ended) = ev.ended_at {
        fields.push(("Ended", rfc3339(ended)));
    }
    if let Some(ack) = &ev.ack {
        fields.push((
            "Acknowledged",
            format!("by {} at {}", ack.by, rfc3339(ack.at)),
        ));
    }
    for (label, url) in [("Snapshot", &e.snapshot_url), ("Clip", &e.clip_url)] {
        if let Some(u) = url {
            fields.push((label, one_line(u)));
        }
    }
    fields.push(("Event id", ev.id.to_string()));
    fields.push(("Idempotency key", idempotency_key(n)));
    let width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    for (label, value) in fields {
        t.push_str(&format!("{:<width$} {value}\n", format!("{label}:")));
    }
    EmailContent { subject, text: t }
}

/// An ntfy push: `POST <url>` with `body` and the Title / Priority / Tags / Click headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtfyMessage {
    /// The [`headline`].
    pub title: String,
    /// The message (or the kind), a details line, then `event <id> · key <key>`.
    pub body: String,
    /// 1 (min) to 5 (max): info 3, warning 4, critical 5; a resolution is 2 (low).
    pub priority: u8,
    /// An emoji short code first (rotating_light, warning, information_source,
    /// white_check_mark), then the kind and the source. No commas.
    pub tags: Vec<String>,
    /// What tapping the notification opens: the clip, else the snapshot.
    pub click: Option<String>,
}

/// The ntfy push for `n`.
pub fn ntfy(n: &Notification) -> NtfyMessage {
    let ev = &n.event;
    let e = &ev.new;
    let (priority, emoji) = match (n.kind, e.severity) {
        (NotificationKind::Resolved, _) => (2, "white_check_mark"),
        (_, Severity::Critical) => (5, "rotating_light"),
        (_, Severity::Warning) => (4, "warning"),
        (_, Severity::Info) => (3, "information_source"),
    };

    let mut lines = vec![e.message.clone().unwrap_or_else(|| e.kind.clone())];
    let details: Vec<String> = [
        ("camera", &e.camera),
        ("zone", &e.zone),
        ("device", &e.device),
    ]
    .into_iter()
    .filter_map(|(label, v)| v.as_ref().map(|v| format!("{label} {}", one_line(v))))
    .chain(std::iter::once(rfc3339(e.time)))
    .collect();
    lines.push(details.join(" · "));
    if let (NotificationKind::Resolved, Some(ended)) = (n.kind, ev.ended_at) {
        lines.push(format!("ended {}", rfc3339(ended)));
    }
    lines.push(format!("event {} · key {}", ev.id, idempotency_key(n)));

    NtfyMessage {
        title: headline(n),
        body: lines.join("\n"),
        priority,
        tags: [emoji, e.kind.as_str(), e.source.as_str()]
            .into_iter()
            .map(|t| one_line(t).replace(',', " "))
            .collect(),
        click: e.clip_url.clone().or_else(|| e.snapshot_url.clone()),
    }
}

fn severity_tag(s: Severity) -> &'static str {
    match s {
        Severity::Info => "INFO",
        Severity::Warning => "WARNING",
        Severity::Critical => "CRITICAL",
    }
}

/// `s` with every control character replaced by a space.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `max` characters of `s` (the last one an ellipsis if cut).
fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's mrkdwn: `&`, `<` and `>` are control characters and must be escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack_field(label: &str, value: &str) -> Value {
    json!({ "type": "mrkdwn", "text": format!("*{label}*\n{}", slack_escape(&one_line(value))) })
}

/// Slack shows `<!date^...>` in the reader's time zone, the text after `|` elsewhere.
fn slack_date(t: OffsetDateTime) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time_secs}}|{}>",
        t.unix_timestamp(),
        rfc3339(t)
    )
}

fn rfc3339(t: OffsetDateTime) -> String {
    let utc = t.to_offset(UtcOffset::UTC);
    // RFC 3339 cannot express years outside 0..=9999; say the unix time then.
    utc.format(&Rfc3339)
        .unwrap_or_else(|_| format!("@{}", utc.unix_timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Ack, Event, EventId, Lifecycle, NewEvent, SourceKind};

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(s).unwrap()
    }

    fn id() -> EventId {
        // 1_700_000_000_000 ms, random 1: 01HF7YAT00 + 0000000000000001.
        EventId::new(at(1_700_000_000), 1)
    }

    fn notification(kind: NotificationKind) -> Notification {
        Notification {
            delivery: 42,
            kind,
            event: Event {
                id: id(),
                seq: 7,
                new: NewEvent {
                    source: "nvr-yard".into(),
                    source_kind: SourceKind::Nvr,
                    kind: "intrusion".into(),
                    severity: Severity::Critical,
                    time: at(1_700_000_000),
                    camera: Some("front".into()),
                    zone: Some("driveway".into()),
                    device: None,
                    message: Some("Person in <driveway> & running".into()),
                    snapshot_url: Some("http://nvr/snap.jpg".into()),
                    clip_url: Some("http://nvr/clip.mp4".into()),
                    external_id: Some("f-1".into()),
                    lifecycle: Lifecycle::Active,
                },
                received_at: at(1_700_000_001),
                ended_at: None,
                grouped_into: None,
                ack: None,
            },
        }
    }

    const ID: &str = "01HF7YAT000000000000000001";

    #[test]
    fn the_fixture_id_is_what_the_tests_spell() {
        assert_eq!(id().to_string(), ID);
    }

    #[test]
    fn headlines() {
        let mut n = notification(NotificationKind::Firing);
        assert_eq!(headline(&n), "[CRITICAL] intrusion at driveway (nvr-yard)");
        n.kind = NotificationKind::Repeat(2);
        assert_eq!(
            headline(&n),
            "[REMINDER 2] intrusion at driveway (nvr-yard)"
        );
        n.kind = NotificationKind::Resolved;
        assert_eq!(headline(&n), "[RESOLVED] intrusion at driveway (nvr-yard)");

        n.kind = NotificationKind::Firing;
        n.event.new.zone = None;
        n.event.new.severity = Severity::Warning;
        assert_eq!(headline(&n), "[WARNING] intrusion at front (nvr-yard)");
        n.event.new.camera = None;
        n.event.new.device = Some("door-1".into());
        assert_eq!(headline(&n), "[WARNING] intrusion at door-1 (nvr-yard)");
        n.event.new.device = None;
        n.event.new.severity = Severity::Info;
        assert_eq!(headline(&n), "[INFO] intrusion (nvr-yard)");
    }

    #[test]
    fn headline_is_one_line_whatever_the_source_sent() {
        let mut n = notification(NotificationKind::Firing);
        n.event.new.zone = Some("drive\r\nBcc: x@evil\tway".into());
        assert_eq!(
            headline(&n),
            "[CRITICAL] intrusion at drive  Bcc: x@evil way (nvr-yard)"
        );
        assert_eq!(email(&n).subject, headline(&n));
        assert_eq!(ntfy(&n).title, headline(&n));
    }

    #[test]
    fn email_subject_and_text() {
        let n = notification(NotificationKind::Firing);
        let m = email(&n);
        assert_eq!(m.subject, "[CRITICAL] intrusion at driveway (nvr-yard)");
        let expected = format!(
            "[CRITICAL] intrusion at driveway (nvr-yard)\n\
             \n\
             Person in <driveway> & running\n\
             \n\
             Severity:        critical\n\
             Kind:            intrusion\n\
             Source:          nvr-yard (nvr)\n\
             Camera:          front\n\
             Zone:            driveway\n\
             Time:            2023-11-14T22:13:20Z\n\
             Received:        2023-11-14T22:13:21Z\n\
             Snapshot:        http://nvr/snap.jpg\n\
             Clip:            http://nvr/clip.mp4\n\
             Event id:        {ID}\n\
             Idempotency key: {ID}\n"
        );
        assert_eq!(m.text, expected);
    }

    #[test]
    fn email_for_a_reminder_and_a_resolution() {
        let n = notification(NotificationKind::Repeat(2));
        let m = email(&n);
        assert_eq!(m.subject, "[REMINDER 2] intrusion at driveway (nvr-yard)");
        assert!(m.text.contains("\n\nReminder 2: not acknowledged yet.\n\n"));
        assert!(m
            .text
            .ends_with(&format!("Idempotency key: {ID}:repeat:2\n")));

        let mut n = notification(NotificationKind::Resolved);
        n.event.ended_at = Some(at(1_700_000_060));
        n.event.ack = Some(Ack {
            by: "alice".into(),
            at: at(1_700_000_030),
            comment: None,
        });
        let m = email(&n);
        assert_eq!(m.subject, "[RESOLVED] intrusion at driveway (nvr-yard)");
        assert!(m.text.contains("The event has ended.\n"));
        assert!(m.text.contains("\nEnded:           2023-11-14T22:14:20Z\n"));
        assert!(m
            .text
            .contains("\nAcknowledged:    by alice at 2023-11-14T22:13:50Z\n"));
        assert!(m
            .text
            .ends_with(&format!("Idempotency key: {ID}:resolved\n")));
    }

    #[test]
    fn slack_body_shape() {
        let n = notification(NotificationKind::Firing);
        let expected = json!({
            "text": "[CRITICAL] intrusion at driveway (nvr-yard): Person in &lt;driveway&gt; &amp; running",
            "blocks": [
                { "type": "header",
                  "text": { "type": "plain_text", "text": "[CRITICAL] intrusion at driveway (nvr-yard)" } },
                { "type": "section",
                  "text": { "type": "mrkdwn", "text": "Person in &lt;driveway&gt; &amp; running" } },
                { "type": "section", "fields": [
                    { "type": "mrkdwn", "text": "*Severity*\ncritical" },
                    { "type": "mrkdwn", "text": "*Kind*\nintrusion" },
                    { "type": "mrkdwn", "text": "*Source*\nnvr-yard (nvr)" },
                    { "type": "mrkdwn", "text": "*Camera*\nfront" },
                    { "type": "mrkdwn", "text": "*Zone*\ndriveway" },
                    { "type": "mrkdwn",
                      "text": "*Time*\n<!date^1700000000^{date_short_pretty} {time_secs}|2023-11-14T22:13:20Z>" },
                ] },
                { "type": "actions", "elements": [
                    { "type": "button", "text": { "type": "plain_text", "text": "Snapshot" },
                      "url": "http://nvr/snap.jpg" },
                    { "type": "button", "text": { "type": "plain_text", "text": "Clip" },
                      "url": "http://nvr/clip.mp4" },
                ] },
                { "type": "context", "elements": [
                    { "type": "mrkdwn", "text": format!("event `{ID}` · key `{ID}`") },
                ] },
            ],
            "event_id": ID,
            "idempotency_key": ID,
        });
        assert_eq!(slack_body(&n), expected);
    }

    #[test]
    fn slack_body_without_optional_parts_and_with_a_long_header() {
        let mut n = notification(NotificationKind::Resolved);
        n.event.new.message = None;
        n.event.new.snapshot_url = None;
        n.event.new.clip_url = None;
        n.event.new.zone = Some("z".repeat(64));
        n.event.new.source = "s".repeat(64);
        n.event.ended_at = Some(at(1_700_000_060));
        let v = slack_body(&n);
        let blocks = v["blocks"].as_array().unwrap();
        let types: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["header", "section", "context"]);
        let header = blocks[0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), 150);
        assert!(header.starts_with("[RESOLVED] intrusion at zzz") && header.ends_with('…'));
        assert_eq!(v["text"], headline(&n));
        let fields = blocks[1]["fields"].as_array().unwrap();
        assert_eq!(
            fields.last().unwrap()["text"],
            "*Ended*\n<!date^1700000060^{date_short_pretty} {time_secs}|2023-11-14T22:14:20Z>"
        );
        assert_eq!(v["idempotency_key"], format!("{ID}:resolved"));
        assert_eq!(v["event_id"], ID);
    }

    #[test]
    fn json_body_is_the_notification_plus_ids() {
        let n = notification(NotificationKind::Repeat(3));
        let v = json_body(&n);
        assert_eq!(v["notification"], "repeat");
        assert_eq!(v["kind"], json!({ "kind": "repeat", "n": 3 }));
        assert_eq!(v["event_id"], ID);
        assert_eq!(v["idempotency_key"], format!("{ID}:repeat:3"));
        assert_eq!(v["title"], "[REMINDER 3] intrusion at driveway (nvr-yard)");
        assert_eq!(v["delivery"], 42);
        assert_eq!(v["event"]["id"], ID);
        assert_eq!(v["event"]["kind"], "intrusion");
        assert_eq!(v["event"]["time"], "2023-11-14T22:13:20Z");
        // The rest is the model's own serde form, which round-trips.
        let back: Notification = serde_json::from_value(v).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn ntfy_message() {
        let n = notification(NotificationKind::Firing);
        assert_eq!(
            ntfy(&n),
            NtfyMessage {
                title: "[CRITICAL] intrusion at driveway (nvr-yard)".into(),
                body: format!(
                    "Person in <driveway> & running\n\
                     camera front · zone driveway · 2023-11-14T22:13:20Z\n\
                     event {ID} · key {ID}"
                ),
                priority: 5,
                tags: vec![
                    "rotating_light".into(),
                    "intrusion".into(),
                    "nvr-yard".into()
                ],
                click: Some("http://nvr/clip.mp4".into()),
            }
        );
    }

    #[test]
    fn ntfy_priorities_and_resolution() {
        let mut n = notification(NotificationKind::Firing);
        n.event.new.severity = Severity::Warning;
        assert_eq!(
            (ntfy(&n).priority, ntfy(&n).tags[0].as_str()),
            (4, "warning")
        );
        n.event.new.severity = Severity::Info;
        n.event.new.clip_url = None;
        let m = ntfy(&n);
        assert_eq!((m.priority, m.tags[0].as_str()), (3, "information_source"));
        assert_eq!(m.click.as_deref(), Some("http://nvr/snap.jpg"));

        let mut n = notification(NotificationKind::Resolved);
        n.event.new.message = None;
        n.event.ended_at = Some(at(1_700_000_060));
        let m = ntfy(&n);
        assert_eq!((m.priority, m.tags[0].as_str()), (2, "white_check_mark"));
        assert_eq!(
            m.body,
            format!(
                "intrusion\n\
                 camera front · zone driveway · 2023-11-14T22:13:20Z\n\
                 ended 2023-11-14T22:14:20Z\n\
                 event {ID} · key {ID}:resolved"
            )
        );
        let n = notification(NotificationKind::Repeat(1));
        assert_eq!(ntfy(&n).priority, 5);
    }
}
