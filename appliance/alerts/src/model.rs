//! The event and alert model: what an event is, what a rule matches, where a
//! notification goes. Shared by the store (which persists it), the hub (which ingests
//! and delivers) and the CLI / admin API (which edit rules, receivers and silences).
//!
//! Promises:
//! - An [`EventId`] is a ULID: 48 bits of milliseconds then 80 random bits, 26 characters
//!   of Crockford base32 (<https://github.com/ulid/spec>). It is the event's stable public
//!   id and the idempotency key of its notifications.
//! - Every text field that comes from the network has a documented length limit
//!   ([`limits`]); [`NewEvent::validate`] enforces them, so the store never holds an
//!   unbounded string from outside.
//!
//! Conventions:
//! - A delivery given up after its attempt limit raises a system event of kind
//!   [`DELIVERY_DEAD_KIND`] ("alert.delivery_dead"), built by [`NewEvent::delivery_dead`].
//!   The receiver whose delivery died is named in the event's `device` as
//!   `receiver:<id>` ([`receiver_device`], read back by [`NewEvent::dead_receiver`]);
//!   the planner (`plan.rs`) never sends such an event to that receiver, and the hub
//!   never raises another one when a delivery of such an event dies.
//! - Kinds starting with `alert.` ([`RESERVED_KIND_PREFIX`]) are the gateway's own; the
//!   webhook refuses them from outside sources.

use gatehouse_access::model::Schedule;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

/// Length limits on what sources send (bytes of UTF-8).
pub mod limits {
    /// Source names, kinds, cameras, zones, devices.
    pub const NAME: usize = 64;
    /// The human-readable message.
    pub const MESSAGE: usize = 1024;
    /// Snapshot and clip URLs.
    pub const URL: usize = 2048;
    /// The source's own id for an event (a Frigate event id, an NVR's alarm id).
    pub const EXTERNAL_ID: usize = 128;
    /// A whole webhook body.
    pub const WEBHOOK_BODY: usize = 16 * 1024;
    /// A whole Frigate MQTT payload (they carry both `before` and `after`).
    pub const FRIGATE_PAYLOAD: usize = 64 * 1024;
    /// The earliest event time accepted: 2000-01-01T00:00:00Z (unix seconds). Earlier
    /// times come from a device whose clock was never set (it counts from 1970).
    pub const EARLIEST_TIME: i64 = 946_684_800;
    /// How far (seconds) an event's time may be ahead of the gateway's clock before it is
    /// refused as a wrong clock: one day.
    pub const MAX_AHEAD: i64 = 24 * 60 * 60;
}

/// The kind of the system event raised when a delivery is given up (dead-lettered).
pub const DELIVERY_DEAD_KIND: &str = "alert.delivery_dead";

/// Kinds starting with this are raised by the gateway itself, never by outside sources.
pub const RESERVED_KIND_PREFIX: &str = "alert.";

/// The `device` of a [`DELIVERY_DEAD_KIND`] event: `receiver:<id>`.
pub fn receiver_device(receiver: ReceiverId) -> String {
    format!("receiver:{receiver}")
}

/// Whether `kind` is a valid event kind: `[a-z0-9_.-]{1,64}`.
pub fn is_valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= limits::NAME
        && kind
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// An event's stable id (a ULID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub ulid::Ulid);

impl EventId {
    /// A new id for an event received at `now`; `random` supplies the 80 random bits.
    pub fn new(now: OffsetDateTime, random: u128) -> EventId {
        let ms = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        EventId(ulid::Ulid::from_parts(ms, random))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for EventId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<EventId, ModelError> {
        ulid::Ulid::from_string(s)
            .map(EventId)
            .map_err(|_| ModelError::Invalid {
                field: "event id",
                why: format!("{s:?} is not a ULID (26 characters of Crockford base32)"),
            })
    }
}

/// How urgent an event is. Ordered: `Info < Warning < Critical`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Severity, ModelError> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| ModelError::Invalid {
                field: "severity",
                why: format!("{s:?}: use info, warning or critical"),
            })
    }
}

/// What kind of thing raised an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An NVR or other outside system, through the webhook or Frigate's MQTT messages.
    Nvr,
    /// A gate controller (door forced, held open, tamper, repeated denies, offline).
    Gate,
    /// A LoRa field sensor.
    Sensor,
    /// The WireGuard tunnel (peer connected/disconnected, handshake failures).
    Tunnel,
    /// The box itself (service restarted, disk nearly full, clock unsynchronised,
    /// an alert delivery given up).
    System,
}

impl SourceKind {
    pub const ALL: [SourceKind; 5] = [
        SourceKind::Nvr,
        SourceKind::Gate,
        SourceKind::Sensor,
        SourceKind::Tunnel,
        SourceKind::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Nvr => "nvr",
            SourceKind::Gate => "gate",
            SourceKind::Sensor => "sensor",
            SourceKind::Tunnel => "tunnel",
            SourceKind::System => "system",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<SourceKind, ModelError> {
        SourceKind::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| ModelError::Invalid {
                field: "source kind",
                why: format!("{s:?}: use nvr, gate, sensor, tunnel or system"),
            })
    }
}

/// Where an event is in its life. One-shot events are `Instant`; Frigate's
/// new/update/end messages for one id fold into one event that goes `Active` -> `Ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Instant,
    Active,
    Ended,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Instant => "instant",
            Lifecycle::Active => "active",
            Lifecycle::Ended => "ended",
        }
    }
}

impl FromStr for Lifecycle {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Lifecycle, ModelError> {
        match s {
            "instant" => Ok(Lifecycle::Instant),
            "active" => Ok(Lifecycle::Active),
            "ended" => Ok(Lifecycle::Ended),
            _ => Err(ModelError::Invalid {
                field: "lifecycle",
                why: format!("{s:?}: use instant, active or ended"),
            }),
        }
    }
}

/// An event as a source reports it, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The source's registered name ("nvr-yard"), a gate's name, "tunnel" or "system".
    pub source: String,
    pub source_kind: SourceKind,
    /// What happened: `[a-z0-9_.-]{1,64}` ("intrusion", "fire", "door_forced",
    /// "review.person").
    pub kind: String,
    pub severity: Severity,
    /// When it happened, by the source's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub camera: Option<String>,
    pub zone: Option<String>,
    /// The sensor, reader or other device that raised it. For a [`DELIVERY_DEAD_KIND`]
    /// system event: `receiver:<id>`, the receiver whose delivery died (see
    /// [`NewEvent::delivery_dead`]).
    pub device: Option<String>,
    pub message: Option<String>,
    pub snapshot_url: Option<String>,
    pub clip_url: Option<String>,
    /// The source's own id. With it, a retransmitted event is recognised (same source and
    /// external id -> the same event) and lifecycle updates fold into one event.
    pub external_id: Option<String>,
    pub lifecycle: Lifecycle,
}

impl NewEvent {
    /// Checks what [`limits`] and the field docs promise: `source` is a name (1..=64
    /// bytes, no control characters), `kind` is `[a-z0-9_.-]{1,64}`, camera / zone /
    /// device are names, the message is at most 1024 bytes (no control characters but
    /// newline and tab), URLs are `http(s)://host...` within 2048 bytes, the external id is
    /// 1..=128 bytes, and the time is not before 2000 ([`limits::EARLIEST_TIME`]).
    /// The error names the field as this struct does (`external_id`, `snapshot_url`).
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = |field: &'static str| move |why: String| ModelError::Invalid { field, why };
        check_name(&self.source).map_err(invalid("source"))?;
        check_kind(&self.kind).map_err(invalid("kind"))?;
        for (field, value) in [
            ("camera", &self.camera),
            ("zone", &self.zone),
            ("device", &self.device),
        ] {
            if let Some(v) = value {
                check_name(v).map_err(invalid(field))?;
            }
        }
        if let Some(m) = &self.message {
            check_message(m).map_err(invalid("message"))?;
        }
        for (field, value) in [
            ("snapshot_url", &self.snapshot_url),
            ("clip_url", &self.clip_url),
        ] {
            if let Some(v) = value {
                check_url(v).map_err(invalid(field))?;
            }
        }
        if let Some(id) = &self.external_id {
            check_external_id(id).map_err(invalid("external_id"))?;
        }
        check_not_too_early(self.time).map_err(invalid("time"))?;
        Ok(())
    }

    /// The system event raised when delivery `delivery` of `event` to `receiver` is given
    /// up. Its `device` names the receiver (`receiver:<id>`, see [`receiver_device`]) so
    /// the planner keeps it away from that receiver; its external id is
    /// `delivery:<delivery>`, so raising it twice (after a crash) stores it once. Severity:
    /// the dead event's, but at least warning. `error` (the last attempt's) is cut to fit
    /// the message limit.
    pub fn delivery_dead(
        receiver: ReceiverId,
        receiver_name: &str,
        delivery: DeliveryId,
        event: EventId,
        event_severity: Severity,
        error: &str,
        now: OffsetDateTime,
    ) -> NewEvent {
        let message = format!(
            "delivery {delivery} of event {event} to receiver {receiver_name:?} was given up: {error}"
        );
        NewEvent {
            source: SourceKind::System.as_str().to_owned(),
            source_kind: SourceKind::System,
            kind: DELIVERY_DEAD_KIND.to_owned(),
            severity: event_severity.max(Severity::Warning),
            time: now,
            camera: None,
            zone: None,
            device: Some(receiver_device(receiver)),
            message: Some(clean_text(&message, limits::MESSAGE)),
            snapshot_url: None,
            clip_url: None,
            external_id: Some(format!("delivery:{delivery}")),
            lifecycle: Lifecycle::Instant,
        }
    }

    /// The receiver whose delivery died, if this is a [`DELIVERY_DEAD_KIND`] system event
    /// (see [`NewEvent::delivery_dead`]).
    pub fn dead_receiver(&self) -> Option<ReceiverId> {
        if self.source_kind != SourceKind::System || self.kind != DELIVERY_DEAD_KIND {
            return None;
        }
        self.device
            .as_deref()?
            .strip_prefix("receiver:")?
            .parse()
            .ok()
    }
}

/// `s` with control characters (but newline and tab) replaced by spaces, cut at a
/// character boundary to at most `limit` bytes (ending in "..." when cut).
pub fn clean_text(s: &str, limit: usize) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect();
    if cleaned.len() <= limit {
        return cleaned;
    }
    let room = limit.saturating_sub(3);
    let mut end = room;
    while end > 0 && !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = cleaned.get(..end).unwrap_or_default().to_owned();
    if limit >= 3 {
        out.push_str("...");
    }
    out
}

// The field checks, shared with the parsers (which name fields as their senders do).
// Each returns why the value is wrong, phrased to follow "field `x`: ".

fn check_len(s: &str, min: usize, max: usize) -> Result<(), String> {
    if s.len() < min {
        return Err("is empty; omit the field instead".to_owned());
    }
    if s.len() > max {
        return Err(format!(
            "is {} bytes long, over the limit of {max}; shorten it",
            s.len()
        ));
    }
    Ok(())
}

pub(crate) fn check_name(s: &str) -> Result<(), String> {
    check_len(s, 1, limits::NAME)?;
    if s.chars().any(char::is_control) {
        return Err(format!("{s:?} contains control characters"));
    }
    Ok(())
}

pub(crate) fn check_kind(s: &str) -> Result<(), String> {
    if is_valid_kind(s) {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a kind: use 1 to {} of a-z, 0-9, '_', '.', '-' (like \"intrusion\" or \"door.forced\")",
            clean_text(s, 80),
            limits::NAME
        ))
    }
}

pub(crate) fn check_message(s: &str) -> Result<(), String> {
    check_len(s, 0, limits::MESSAGE)?;
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("contains control characters other than newline and tab".to_owned());
    }
    Ok(())
}

pub(crate) fn check_url(s: &str) -> Result<(), String> {
    check_len(s, 1, limits::URL)?;
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        s.get(8..)
    } else if lower.starts_with("http://") {
        s.get(7..)
    } else {
        None
    };
    let Some(rest) = rest else {
        return Err(format!(
            "{:?} is not an http:// or https:// URL",
            clean_text(s, 80)
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{:?} has no host", clean_text(s, 80)));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("contains spaces or control characters; percent-encode them".to_owned());
    }
    Ok(())
}

pub(crate) fn check_external_id(s: &str) -> Result<(), String> {
    check_len(s, 1, limits::EXTERNAL_ID)?;
    if s.chars().any(char::is_control) {
        return Err("contains control characters".to_owned());
    }
    Ok(())
}

pub(crate) fn check_not_too_early(t: OffsetDateTime) -> Result<(), String> {
    if t.unix_timestamp() < limits::EARLIEST_TIME {
        return Err(format!(
            "{} is before 2000; the source's clock looks unset",
            rfc3339(t)
        ));
    }
    Ok(())
}

/// Checks `t` is within the sane bounds for an event received at `now`: not before 2000
/// and at most [`limits::MAX_AHEAD`] ahead of `now`.
pub(crate) fn check_time(t: OffsetDateTime, now: OffsetDateTime) -> Result<(), String> {
    check_not_too_early(t)?;
    if (t - now).whole_seconds() > limits::MAX_AHEAD {
        return Err(format!(
            "{} is more than a day ahead of the gateway's clock ({}); check the source's clock",
            rfc3339(t),
            rfc3339(now)
        ));
    }
    Ok(())
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    /// Insertion order in the store (monotonic; what lists page by).
    pub seq: i64,
    #[serde(flatten)]
    pub new: NewEvent,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Set when the event joined an earlier event's group (no notification of its own).
    pub grouped_into: Option<EventId>,
    pub ack: Option<Ack>,
}

/// An administrator's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub comment: Option<String>,
}

pub type RuleId = i64;
pub type ReceiverId = i64;
pub type SilenceId = i64;
pub type SourceId = i64;
pub type DeliveryId = i64;

/// What a rule or silence matches. Empty lists match anything; a pattern ending in `*`
/// matches by prefix ("review.*").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Matcher {
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub zones: Vec<String>,
    /// Events below this severity do not match.
    #[serde(default)]
    pub min_severity: Severity,
}

/// An alert rule: events it matches are notified to its receivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: RuleId,
    pub name: String,
    pub enabled: bool,
    pub matcher: Matcher,
    /// When the rule applies (site-local time, with the site's holidays); `None` = always.
    pub active: Option<Schedule>,
    pub receivers: Vec<ReceiverId>,
    /// Events with the same source, kind and zone within this window of the first one
    /// join its group and are not notified again. Zero = no grouping.
    #[serde(with = "duration_secs")]
    pub group_window: Duration,
    /// For critical events: notify again at this interval until acknowledged (or
    /// ended). `None` = once.
    #[serde(with = "duration_secs_option")]
    pub repeat_every: Option<Duration>,
}

/// A silence: matching events are stored but not notified while it is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: SilenceId,
    pub matcher: Matcher,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    pub author: String,
    pub comment: String,
}

/// How a webhook receiver formats its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Slack's incoming-webhook shape (`text` plus `blocks`); Mattermost and others accept it.
    Slack,
    /// The notification as plain JSON.
    Json,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Implicit TLS (usually port 465).
    Tls,
    /// Plain connection upgraded with STARTTLS, refused if the server does not offer it
    /// (usually port 587).
    Starttls,
    /// No TLS: only for a relay on loopback or a trusted LAN.
    None,
}

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReceiverConfig {
    /// The console's live feed (Server-Sent Events): delivered when committed.
    Console,
    Webhook {
        url: String,
        format: WebhookFormat,
    },
    Email {
        host: String,
        port: u16,
        security: SmtpSecurity,
        username: Option<String>,
        password: Option<String>,
        from: String,
        to: Vec<String>,
    },
    /// An ntfy-style push: `POST <url>` (server plus topic) with the message as the body
    /// and Title/Priority/Tags/Click headers.
    Ntfy {
        url: String,
        token: Option<String>,
    },
}

impl ReceiverConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiverConfig::Console => "console",
            ReceiverConfig::Webhook { .. } => "webhook",
            ReceiverConfig::Email { .. } => "email",
            ReceiverConfig::Ntfy { .. } => "ntfy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receiver {
    pub id: ReceiverId,
    pub name: String,
    pub enabled: bool,
    pub config: ReceiverConfig,
}

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "n")]
pub enum NotificationKind {
    /// The event happened.
    Firing,
    /// The n-th reminder of an unacknowledged critical event (n >= 1).
    Repeat(u32),
    /// The event ended.
    Resolved,
}

impl NotificationKind {
    /// The idempotency key of this notification of `event`: the event id for the first
    /// notification, suffixed for the later ones, so a receiver that honours the key
    /// shows each event once and each reminder / resolution once.
    pub fn idempotency_key(self, event: EventId) -> String {
        match self {
            NotificationKind::Firing => event.to_string(),
            NotificationKind::Repeat(n) => format!("{event}:repeat:{n}"),
            NotificationKind::Resolved => format!("{event}:resolved"),
        }
    }
}

/// One notification of one event to one receiver: what a delivery sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub delivery: DeliveryId,
    pub kind: NotificationKind,
    pub event: Event,
}

/// What a delivery's state is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    Delivered,
    /// Given up after the attempt limit (a system event says so).
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("invalid {field}: {why}")]
    Invalid { field: &'static str, why: String },
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

mod duration_secs_option {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_round_trips_and_orders_by_time() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let a = EventId::new(t0, u128::MAX);
        let b = EventId::new(t0 + time::Duration::milliseconds(1), 0);
        assert!(a < b);
        assert_eq!(a.to_string().len(), 26);
        assert_eq!(a.to_string().parse::<EventId>().unwrap(), a);
        assert!("not-a-ulid".parse::<EventId>().is_err());
    }

    #[test]
    fn idempotency_keys_differ_per_notification() {
        let id = EventId::new(OffsetDateTime::UNIX_EPOCH, 7);
        assert_eq!(NotificationKind::Firing.idempotency_key(id), id.to_string());
        assert_eq!(
            NotificationKind::Repeat(2).idempotency_key(id),
            format!("{id}:repeat:2")
        );
        assert_eq!(
            NotificationKind::Resolved.idempotency_key(id),
            format!("{id}:resolved")
        );
    }

    #[test]
    fn enums_parse_their_names_and_explain_bad_ones() {
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
        }
        for k in SourceKind::ALL {
            assert_eq!(k.as_str().parse::<SourceKind>().unwrap(), k);
        }
        let e = "urgent".parse::<Severity>().unwrap_err().to_string();
        assert!(e.contains("info, warning or critical"), "{e}");
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    }
}
