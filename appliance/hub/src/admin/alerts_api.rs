//! The admin API's events-and-alerts routes: event sources and their API keys, receivers
//! (with a "send test" that goes straight to the receiver), rules, silences, the events
//! themselves with their acknowledgement and delivery log. Each handler authenticates
//! ([`Caller`]), checks the role table ([`Caller::may`]), reads its body field by field
//! ([`Fields`]) and makes the same `gatehouse_store::Store` calls the CLI
//! (`gatehouse source|receiver|rule|silence|event`) makes.
//!
//! Promises:
//! - Secrets are never in a reply but once: a source's API key (and, for an NVR with an
//!   MQTT prefix, its broker password, derived from the key) in the answer to its
//!   creation or key rotation ([`SourceSetup`]). An e-mail receiver's password and an ntfy token are shown
//!   as `"password_set"` / `"token_set"`; a PATCH that omits them keeps them (`null`
//!   clears). Webhook and ntfy URLs (which often hold a secret in their path, like a
//!   Slack webhook's) are shown whole only to callers who may change receivers; others
//!   see the scheme and host.
//! - Every refusal names the field (as the body spells it, `matcher.kinds`) and what to
//!   do; a change is checked whole before anything is written.
//! - `POST /receivers/{id}/test` sends one notification of a made-up `alert.test` event
//!   through `gatehouse_notify::Sender` directly (not the outbox: nothing is stored) and
//!   answers with what happened.
//! - Times are shown in RFC 3339 in the site's offset; dates typed are site days.
//!   Durations are read as seconds (a number) or text (`"5m"`, see
//!   [`gatehouse_alerts::text`]) and shown both ways (`"group_window": "5m"`,
//!   `"group_window_s": 300`).
//!
//! Bodies, by route (`?` optional; "ref" is an id number or a name):
//! - `POST /sources`: `name`, `kind?` (`nvr` | `sensor`, default `nvr`), `mqtt_prefix?`
//!   (NVRs speaking Frigate's MQTT; checked against the gate link's topics and the other
//!   NVRs' prefixes), `base_url?`. `PATCH /sources/{id}`: `enabled`. The box's own
//!   sources (`tunnel`, `system`) can be disabled but not removed or re-keyed.
//! - `POST /receivers`: `name`, `enabled?`, `type` and its settings: `webhook`: `url`,
//!   `format?` (`slack` | `json`); `email`: `host`, `port`, `security` (`tls` |
//!   `starttls` | `none`), `from`, `to` (list, or comma-separated text), `username?`,
//!   `password?`; `ntfy`: `url`, `token?`. `PATCH /receivers/{id}`: `enabled` and any
//!   settings (merged onto the stored ones; a different `type` replaces them).
//! - `POST /rules`: `name`, `receivers` (refs), `matcher?` (`{"kinds", "sources",
//!   "zones": lists of patterns, "*" suffix for a prefix; "min_severity"}`), `active?`
//!   (the access levels' schedule text, or its JSON model; absent or `null` = always),
//!   `holidays?` (`closed` | `ignore`, with a text `active`), `group_window?`,
//!   `repeat_every?`, `enabled?`. `PATCH /rules/{id}`: any of those.
//! - `POST /silences`: `comment`, `matcher?`, `starts_at?` (default now), and `ends_at` or
//!   `duration`; the author is the caller.
//! - `GET /events?since=&until=&kind=&source=&severity=&acked=&q=&after=&before=&limit=`;
//!   `POST /events/{id}/ack`: `comment?` (the body may be empty).
//! - `GET /deliveries?event=&receiver=&delivery=&outcome=&after=&limit=`.

use super::api::{created, holidays_str, num_param, ok, only_params, opt_ts, path_id, ts, Ref};
use super::auth::{Action, Caller};
use super::{AdminApi, ApiError, Fields, Patch};
use crate::events::delivery::DeliverySettings;
use crate::mqtt::nvr_mqtt_credentials;
use crate::provisioning::{host_port, Listening};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use gatehouse_access::model::{HolidayRule, Schedule};
use gatehouse_access::text::{format_schedule, parse_bound, parse_schedule, Bound};
use gatehouse_alerts::model::{
    Event, EventId, Lifecycle, Matcher, ModelError, NewEvent, Notification, NotificationKind,
    Receiver, ReceiverConfig, ReceiverId, Rule, Severity, Silence, SmtpSecurity, SourceKind,
    WebhookFormat,
};
use gatehouse_alerts::render::kind_name;
use gatehouse_alerts::text::{format_duration, parse_duration, DURATION_FORMS};
use gatehouse_broker::acl::nvr_hub_topics;
use gatehouse_broker::{check_nvr_prefix, Topics};
use gatehouse_config::{Config, MqttMode};
use gatehouse_notify::Sender;
use gatehouse_store::events::{
    AckOutcome, ApiKey, DeliveryLogEntry, DeliveryLogFilter, DeliveryLogOutcome, DeliveryRecord,
    EventDetail, EventFilter, EventSource, NewRule, NewSilence, MAX_PAGE,
};
use gatehouse_store::{SiteKey, Store, StoreError};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};
use time::{OffsetDateTime, UtcOffset};

/// Default page of `GET /events` and the delivery log.
pub const DEFAULT_LIMIT: usize = 100;

/// Where sources send events (the webhook).
pub const WEBHOOK_PATH: &str = "/api/v1/events";

/// The kind of the event a receiver test sends (the gateway's own, `alert.` kinds).
pub const TEST_KIND: &str = "alert.test";

// ---- helpers -----------------------------------------------------------------------

pub(super) fn path_event(raw: &str) -> Result<EventId, ApiError> {
    raw.parse::<EventId>().map_err(|_| {
        ApiError::bad_request(
            "the event id in the path must be a ULID (26 characters, as `GET /api/v1/events` shows)",
        )
    })
}

/// A body that may be empty (read as `{}`): acknowledgements, tests, rotations.
pub(super) async fn optional_fields(body: Body) -> Result<Fields, ApiError> {
    let bytes = axum::body::to_bytes(body, super::MAX_BODY)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body must be at most {} bytes of JSON", super::MAX_BODY),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Fields::parse(b"{}");
    }
    Fields::parse(&bytes)
}

fn bool_param(q: &HashMap<String, String>, k: &str) -> Result<Option<bool>, ApiError> {
    match q.get(k).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_request(format!(
            "`{k}` must be true or false"
        ))),
    }
}

fn limit_param(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    let what = format!("a number from 1 to {MAX_PAGE}");
    let limit = num_param::<usize>(q, "limit", &what)?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("`limit` must be {what}")));
    }
    Ok(limit)
}

/// The JSON field for each field name the store's `Invalid` errors use.
const STORE_FIELDS: &[(&str, &str)] = &[
    ("source name", "name"),
    ("MQTT prefix", "mqtt_prefix"),
    ("base URL", "base_url"),
    ("receiver name", "name"),
    ("receiver", "type"),
    ("webhook URL", "url"),
    ("ntfy URL", "url"),
    ("ntfy token", "token"),
    ("SMTP host", "host"),
    ("SMTP port", "port"),
    ("SMTP credentials", "password"),
    ("e-mail from", "from"),
    ("e-mail to", "to"),
    ("rule name", "name"),
    ("matcher", "matcher"),
    ("matcher kinds", "matcher.kinds"),
    ("matcher sources", "matcher.sources"),
    ("matcher zones", "matcher.zones"),
    ("group window", "group_window"),
    ("repeat interval", "repeat_every"),
    ("rule receivers", "receivers"),
    ("silence", "ends_at"),
    ("silence author", "author"),
    ("silence comment", "comment"),
    ("acknowledgement comment", "comment"),
];

/// A store error as the API answers it: `Invalid` names the body's field, a conflict
/// (an MQTT prefix in use, a second console) is 409, a bad schedule is the rule's
/// `active`.
fn store_err(e: StoreError) -> ApiError {
    match &e {
        StoreError::Invalid { field, .. } => {
            match STORE_FIELDS.iter().find(|(store, _)| store == field) {
                Some((_, json)) => ApiError::bad_request(format!("`{json}`: {e}")),
                None => ApiError::bad_request(e.to_string()),
            }
        }
        StoreError::BadSchedule(_) => ApiError::bad_request(format!("`active`: {e}")),
        StoreError::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        _ => e.into(),
    }
}

/// A model check's error, naming the body's field (`matcher.kinds` for a matcher's).
fn model_err(e: ModelError) -> ApiError {
    match e {
        ModelError::Invalid { field, why } => {
            let field = match field {
                "kinds" | "sources" | "zones" => format!("matcher.{field}"),
                f => f.to_owned(),
            };
            ApiError::bad_request(format!("`{field}`: {why}"))
        }
        other => ApiError::bad_request(other.to_string()),
    }
}

fn receiver_id(s: &Store, r: &Ref) -> Result<ReceiverId, ApiError> {
    match r {
        Ref::Id(id) => s.receiver(*id).map(|r| r.id),
        Ref::Name(n) => s.receiver_by_name(n).map(|r| r.id),
    }
    .map_err(store_err)
}

/// A duration field: seconds (a number) or text (`"5m"`).
fn duration_value(field: &str, v: Value) -> Result<Duration, ApiError> {
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{field}` must be a whole number of seconds, or {DURATION_FORMS}"
            ))
        }),
        Value::String(s) => {
            parse_duration(&s).map_err(|e| ApiError::bad_request(format!("`{field}`: {e}")))
        }
        _ => Err(ApiError::bad_request(format!(
            "`{field}` must be a number of seconds, or {DURATION_FORMS}"
        ))),
    }
}

// ---- sources -----------------------------------------------------------------------

/// How a new source (or one whose key was just rotated) sends events: its API key (shown
/// this once), the webhook to post to, and for an NVR with an MQTT prefix where Frigate
/// publishes. `gatehouse source add` prints it; `POST /api/v1/sources` answers with it.
#[derive(Clone, Serialize)]
pub struct SourceSetup {
    pub api_key: String,
    pub webhook: WebhookSetup,
    /// For an NVR with an MQTT prefix; `None` otherwise.
    pub mqtt: Option<MqttSetup>,
}

/// The webhook a source posts events to.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookSetup {
    /// `POST` events here.
    pub url: String,
    /// The header to send: `Authorization: Bearer <api key>`.
    pub header: String,
    /// A complete example request.
    pub curl: String,
}

/// Where and as whom an NVR speaking Frigate's MQTT publishes (Frigate's `mqtt.host`,
/// `mqtt.port`, `mqtt.user`, `mqtt.password`, `mqtt.topic_prefix`).
#[derive(Clone, Serialize)]
pub struct MqttSetup {
    /// The broker's `host:port` (or a note where to find it); `None` when the hub's MQTT
    /// is off.
    pub broker: Option<String>,
    /// The NVR's broker account ([`crate::mqtt::nvr_mqtt_credentials`]): the broker has
    /// it while the source is an enabled NVR with an MQTT prefix.
    pub username: String,
    /// Derived from the API key: it changes when the key is rotated.
    pub password: String,
    /// Frigate's `mqtt.topic_prefix`.
    pub topic_prefix: String,
    /// What the hub reads: `<prefix>/events` and `<prefix>/reviews`.
    pub topics: Vec<String>,
}

impl fmt::Debug for MqttSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSetup")
            .field("broker", &self.broker)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("topic_prefix", &self.topic_prefix)
            .field("topics", &self.topics)
            .finish()
    }
}

impl fmt::Debug for SourceSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceSetup")
            .field("api_key", &"<redacted>")
            .field("webhook_url", &self.webhook.url)
            .field("mqtt", &self.mqtt)
            .finish()
    }
}

impl SourceSetup {
    /// For `source` with its new `key` (just made or rotated; `store` has its hash);
    /// `listening` says where a running hub is bound (its fields fall back to the
    /// configuration).
    pub fn new(
        config: &Config,
        listening: &Listening,
        store: &Store,
        site_key: &SiteKey,
        source: &EventSource,
        key: &ApiKey,
    ) -> Result<SourceSetup, StoreError> {
        let http = host_port(listening.http.unwrap_or(config.hub.http_listen));
        let url = format!("http://{http}{WEBHOOK_PATH}");
        let header = format!("Authorization: Bearer {}", key.expose());
        let curl = format!(
            "curl -sS -X POST {url} -H '{header}' -H 'Content-Type: application/json' \
             -d '{{\"kind\": \"intrusion\", \"severity\": \"critical\", \"zone\": \"yard\", \
             \"message\": \"test from {}\"}}'",
            source.name
        );
        let mqtt = match (&source.mqtt_prefix, source.kind) {
            (Some(prefix), SourceKind::Nvr) => {
                let (username, password) = nvr_mqtt_credentials(store, site_key, source.id)?;
                Some(MqttSetup {
                    broker: broker_address(config, listening),
                    username,
                    password,
                    topic_prefix: prefix.clone(),
                    topics: nvr_hub_topics(prefix).to_vec(),
                })
            }
            _ => None,
        };
        Ok(SourceSetup {
            api_key: key.expose().to_owned(),
            webhook: WebhookSetup { url, header, curl },
            mqtt,
        })
    }
}

/// Checks an NVR's MQTT prefix before it is registered: a topic name without wildcards
/// that overlaps neither the gate link's topics nor another NVR's prefix (the hub leaves
/// such a source out). The error says why, to follow "MQTT prefix: ".
pub fn check_mqtt_prefix(config: &Config, store: &Store, prefix: &str) -> Result<(), String> {
    let m = &config.hub.mqtt;
    let topics = Topics::new(&m.request_topic, &m.response_prefix)
        .map_err(|e| format!("the hub's MQTT topics ([hub.mqtt]) are invalid: {e}"))?;
    let sources = store.list_event_sources().map_err(|e| e.to_string())?;
    let others = sources
        .iter()
        .filter(|s| s.kind == SourceKind::Nvr)
        .filter_map(|s| s.mqtt_prefix.as_deref());
    check_nvr_prefix(prefix, &topics, others).map_err(|e| e.to_string())
}

/// Where an MQTT client on the LAN reaches the hub's broker (as gates are told).
fn broker_address(config: &Config, listening: &Listening) -> Option<String> {
    let mqtt = &config.hub.mqtt;
    match mqtt.mode {
        MqttMode::Off => None,
        MqttMode::Embedded => Some(
            match listening.mqtt.filter(|_| mqtt.listen.ip().is_loopback()) {
                Some(addr) => host_port(addr),
                None if mqtt.listen.port() == 0 => {
                    "the port the hub logs at start (hub.mqtt.listen has port 0)".to_owned()
                }
                None => host_port(mqtt.listen),
            },
        ),
        MqttMode::External => Some(mqtt.broker.clone()),
    }
}

/// Why a source cannot be removed or re-keyed, if it is one of the box's own (`tunnel`,
/// `system`: the hub hands their keys to its own processes at start). They can be
/// disabled.
pub fn refuse_internal(s: &EventSource, what: &str) -> Result<(), String> {
    if matches!(s.kind, SourceKind::Tunnel | SourceKind::System) {
        return Err(format!(
            "source {:?} is the box's own (the hub gives its key to its own processes): it \
             can be disabled, but not {what}",
            s.name
        ));
    }
    Ok(())
}

fn source_view(s: &EventSource, tz: UtcOffset) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "kind": s.kind.as_str(),
        "mqtt_prefix": s.mqtt_prefix,
        "base_url": s.base_url,
        "enabled": s.enabled,
        "created_at": ts(s.created_at, tz),
    })
}

fn with_setup(mut view: Value, setup: &SourceSetup) -> Result<Value, ApiError> {
    let setup = serde_json::to_value(setup).map_err(ApiError::internal)?;
    if let (Value::Object(v), Value::Object(s)) = (&mut view, setup) {
        v.extend(s);
    }
    Ok(view)
}

const SOURCE_KINDS: &str = "\"nvr\" or \"sensor\"";

/// `GET /api/v1/sources`.
pub async fn list_sources(
    State(api): State<AdminApi>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadSources)?;
    let tz = api.tz();
    let sources = api
        .store(|s, _| s.list_event_sources().map_err(store_err))
        .await?;
    ok(json!(sources
        .iter()
        .map(|x| source_view(x, tz))
        .collect::<Vec<_>>()))
}

/// `POST /api/v1/sources`: the source, its API key (this once) and how to use it.
pub async fn add_source(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeSources)?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "text: 1 to 64 letters, digits, '.', '_' or '-'")?;
    let kind = match f.opt::<String>("kind", SOURCE_KINDS)?.as_deref() {
        None | Some("nvr") => SourceKind::Nvr,
        Some("sensor") => SourceKind::Sensor,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`kind` must be {SOURCE_KINDS}"
            )))
        }
    };
    let mqtt_prefix: Option<String> = f.opt(
        "mqtt_prefix",
        "text: the NVR's MQTT topic prefix (Frigate's mqtt.topic_prefix, e.g. \"frigate\")",
    )?;
    let base_url: Option<String> = f.opt("base_url", "an http:// or https:// URL")?;
    f.finish(&["name", "kind", "mqtt_prefix", "base_url"])?;
    if mqtt_prefix.is_some() && kind != SourceKind::Nvr {
        return Err(ApiError::bad_request(
            "`mqtt_prefix` is for NVRs speaking Frigate's MQTT: use kind \"nvr\" or leave it out",
        ));
    }
    let now = api.now();
    let (source, setup) = api
        .store(move |s, api| {
            if let Some(p) = &mqtt_prefix {
                check_mqtt_prefix(api.config(), s, p)
                    .map_err(|why| ApiError::bad_request(format!("`mqtt_prefix`: {why}")))?;
            }
            let (source, key) = s
                .add_event_source(
                    &name,
                    kind,
                    mqtt_prefix.as_deref(),
                    base_url.as_deref(),
                    now,
                )
                .map_err(store_err)?;
            let setup = SourceSetup::new(
                api.config(),
                api.listening(),
                s,
                api.site_key(),
                &source,
                &key,
            )
            .map_err(store_err)?;
            Ok((source, setup))
        })
        .await?;
    tracing::info!(source = %source.name, kind = %source.kind, by = %caller.admin.name, "event source added");
    created(with_setup(source_view(&source, tz), &setup)?)
}

/// `PATCH /api/v1/sources/{id}`: `enabled`.
pub async fn patch_source(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeSources)?;
    let id = path_id(&id, "source")?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let enabled: bool = f.req("enabled", "true or false")?;
    f.finish(&["enabled"])?;
    let source = api
        .store(move |s, _| {
            s.set_event_source_enabled(id, enabled).map_err(store_err)?;
            s.event_source(id).map_err(store_err)
        })
        .await?;
    tracing::info!(source = %source.name, enabled, by = %caller.admin.name, "event source changed");
    ok(source_view(&source, tz))
}

/// `POST /api/v1/sources/{id}/rotate-key`: a new key (this once); the old one stops
/// working at once.
pub async fn rotate_source_key(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeSources)?;
    let id = path_id(&id, "source")?;
    optional_fields(body).await?.finish(&[])?;
    let tz = api.tz();
    let (source, setup) = api
        .store(move |s, api| {
            let source = s.event_source(id).map_err(store_err)?;
            refuse_internal(&source, "given a new key")
                .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
            let key = s.rotate_event_source_key(id).map_err(store_err)?;
            let setup = SourceSetup::new(
                api.config(),
                api.listening(),
                s,
                api.site_key(),
                &source,
                &key,
            )
            .map_err(store_err)?;
            Ok((source, setup))
        })
        .await?;
    tracing::info!(source = %source.name, by = %caller.admin.name, "event source key rotated");
    ok(with_setup(source_view(&source, tz), &setup)?)
}

/// `DELETE /api/v1/sources/{id}`: its key and prefix stop working; its events stay.
pub async fn remove_source(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeSources)?;
    let id = path_id(&id, "source")?;
    let name = api
        .store(move |s, _| {
            let source = s.event_source(id).map_err(store_err)?;
            refuse_internal(&source, "removed")
                .map_err(|why| ApiError::new(StatusCode::CONFLICT, why))?;
            s.remove_event_source(id).map_err(store_err)?;
            Ok(source.name)
        })
        .await?;
    tracing::info!(source = %name, by = %caller.admin.name, "event source removed");
    ok(json!({ "id": id, "name": name, "removed": true }))
}

// ---- receivers ---------------------------------------------------------------------

const RECEIVER_TYPES: &str = "\"webhook\", \"email\" or \"ntfy\"";

/// `scheme://host[:port]` of a URL, with `/…` standing for the rest if there is any.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "…".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest.get(..end).unwrap_or_default();
    // Credentials in the authority are a secret too.
    let host = host.rsplit('@').next().unwrap_or_default();
    if end < rest.len() {
        format!("{scheme}://{host}/…")
    } else {
        format!("{scheme}://{host}")
    }
}

/// A receiver without its secrets; URLs whole only if `full_urls`.
pub fn receiver_view(r: &Receiver, full_urls: bool) -> Value {
    let url = |u: &str| {
        if full_urls {
            u.to_owned()
        } else {
            redact_url(u)
        }
    };
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "enabled": r.enabled,
        "type": r.config.kind(),
    });
    let settings = match &r.config {
        ReceiverConfig::Console => json!({}),
        ReceiverConfig::Webhook { url: u, format } => json!({
            "url": url(u),
            "format": match format { WebhookFormat::Slack => "slack", WebhookFormat::Json => "json" },
        }),
        ReceiverConfig::Email {
            host,
            port,
            security,
            username,
            password,
            from,
            to,
        } => json!({
            "host": host,
            "port": port,
            "security": security_str(*security),
            "username": username,
            "password_set": password.is_some(),
            "from": from,
            "to": to,
        }),
        ReceiverConfig::Ntfy { url: u, token } => json!({
            "url": url(u),
            "token_set": token.is_some(),
        }),
    };
    if let (Value::Object(v), Value::Object(s)) = (&mut v, settings) {
        v.extend(s);
    }
    v
}

fn security_str(s: SmtpSecurity) -> &'static str {
    match s {
        SmtpSecurity::Tls => "tls",
        SmtpSecurity::Starttls => "starttls",
        SmtpSecurity::None => "none",
    }
}

/// The e-mail `to` field: a list of addresses or comma-separated text.
fn addresses(f: &mut Fields) -> Result<Vec<String>, ApiError> {
    const WHAT: &str = "a list of e-mail addresses (or one text, comma-separated)";
    match f.take("to") {
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.trim().to_owned()),
                _ => Err(ApiError::bad_request(format!("`to` must be {WHAT}"))),
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("`to` must be {WHAT}"))),
        None => Err(ApiError::bad_request(format!("`to` is required ({WHAT})"))),
    }
}

/// A receiver's settings from `type` and its fields; returns them and every field name a
/// receiver of that type takes (for [`Fields::finish`]).
fn receiver_config(f: &mut Fields) -> Result<(ReceiverConfig, &'static [&'static str]), ApiError> {
    let kind: String = f.req("type", RECEIVER_TYPES)?;
    match kind.as_str() {
        "webhook" => {
            let url: String = f.req("url", "the webhook's http:// or https:// URL")?;
            let format = match f.opt::<String>("format", "\"slack\" or \"json\"")?.as_deref() {
                None | Some("slack") => WebhookFormat::Slack,
                Some("json") => WebhookFormat::Json,
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "`format` must be \"slack\" (Slack-compatible) or \"json\" (the notification as JSON)",
                    ))
                }
            };
            Ok((
                ReceiverConfig::Webhook { url, format },
                &["name", "enabled", "type", "url", "format"],
            ))
        }
        "email" => {
            let host: String = f.req("host", "the SMTP server's host name or address")?;
            let port: u16 = f.req(
                "port",
                "the SMTP server's port: a number, like 465 (tls), 587 (starttls) or 25 (none)",
            )?;
            let security = match f
                .req::<String>("security", "\"tls\", \"starttls\" or \"none\"")?
                .as_str()
            {
                "tls" => SmtpSecurity::Tls,
                "starttls" => SmtpSecurity::Starttls,
                "none" => SmtpSecurity::None,
                _ => {
                    return Err(ApiError::bad_request(
                        "`security` must be \"tls\" (usually port 465), \"starttls\" (587) or \"none\" (a relay on a trusted network)",
                    ))
                }
            };
            let username: Option<String> = f.opt("username", "text")?;
            let password: Option<String> = f.opt("password", "text")?;
            let from: String = f.req("from", "the sender's e-mail address")?;
            let to = addresses(f)?;
            Ok((
                ReceiverConfig::Email {
                    host,
                    port,
                    security,
                    username,
                    password,
                    from,
                    to,
                },
                &[
                    "name", "enabled", "type", "host", "port", "security", "username", "password",
                    "from", "to",
                ],
            ))
        }
        "ntfy" => {
            let url: String = f.req(
                "url",
                "the ntfy server and topic, like \"https://ntfy.sh/site-alerts\"",
            )?;
            let token: Option<String> = f.opt("token", "text: an ntfy access token")?;
            Ok((
                ReceiverConfig::Ntfy { url, token },
                &["name", "enabled", "type", "url", "token"],
            ))
        }
        "console" => Err(ApiError::new(
            StatusCode::CONFLICT,
            "there is exactly one console receiver and it exists already; use its id in rules",
        )),
        _ => Err(ApiError::bad_request(format!(
            "`type` must be {RECEIVER_TYPES}"
        ))),
    }
}

/// `GET /api/v1/receivers`.
pub async fn list_receivers(
    State(api): State<AdminApi>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadAlerts)?;
    let full = caller.may(Action::ChangeAlerts).is_ok();
    let receivers = api
        .store(|s, _| s.list_receivers().map_err(store_err))
        .await?;
    ok(json!(receivers
        .iter()
        .map(|r| receiver_view(r, full))
        .collect::<Vec<_>>()))
}

/// `GET /api/v1/receivers/{id}`.
pub async fn get_receiver(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadAlerts)?;
    let full = caller.may(Action::ChangeAlerts).is_ok();
    let id = path_id(&id, "receiver")?;
    let r = api
        .store(move |s, _| s.receiver(id).map_err(store_err))
        .await?;
    ok(receiver_view(&r, full))
}

/// `POST /api/v1/receivers`.
pub async fn add_receiver(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAlerts)?;
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "text")?;
    let enabled: Option<bool> = f.opt("enabled", "true or false")?;
    let (config, known) = receiver_config(&mut f)?;
    f.finish(known)?;
    let r = api
        .store(move |s, _| {
            let id = s.add_receiver(&name, &config).map_err(store_err)?;
            if enabled == Some(false) {
                s.set_receiver_enabled(id, false).map_err(store_err)?;
            }
            s.receiver(id).map_err(store_err)
        })
        .await?;
    tracing::info!(receiver = %r.name, kind = r.config.kind(), by = %caller.admin.name, "receiver added");
    created(receiver_view(&r, true))
}

/// `PATCH /api/v1/receivers/{id}`: `enabled` and settings, merged onto the stored ones.
pub async fn patch_receiver(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAlerts)?;
    let id = path_id(&id, "receiver")?;
    let mut f = Fields::read(body).await?;
    let enabled: Option<bool> = f.opt("enabled", "true or false")?;
    if f.take("name").is_some() {
        return Err(ApiError::bad_request(
            "`name`: a receiver cannot be renamed; add one with the new name, point the rules \
             at it, then remove this one",
        ));
    }
    let changes = std::mem::take(&mut f.map);
    let r = api
        .store(move |s, _| {
            let current = s.receiver(id).map_err(store_err)?;
            if !changes.is_empty() {
                if matches!(current.config, ReceiverConfig::Console) {
                    return Err(ApiError::bad_request(
                        "the console receiver has no settings; only `enabled` can change",
                    ));
                }
                let config = merged_config(&current.config, changes)?;
                s.set_receiver_config(id, &config).map_err(store_err)?;
            }
            if let Some(e) = enabled.filter(|e| *e != current.enabled) {
                s.set_receiver_enabled(id, e).map_err(store_err)?;
            }
            s.receiver(id).map_err(store_err)
        })
        .await?;
    tracing::info!(receiver = %r.name, by = %caller.admin.name, "receiver changed");
    ok(receiver_view(&r, true))
}

/// `current` with `changes` applied: fields given replace the stored ones, `null`
/// removes one (a password, a token), a different `type` starts from nothing.
fn merged_config(
    current: &ReceiverConfig,
    changes: Map<String, Value>,
) -> Result<ReceiverConfig, ApiError> {
    let same_type = changes
        .get("type")
        .is_none_or(|t| t.as_str() == Some(current.kind()));
    let mut base = match serde_json::to_value(current) {
        Ok(Value::Object(m)) if same_type => m,
        Ok(_) => Map::new(),
        Err(e) => return Err(ApiError::internal(e)),
    };
    for (k, v) in changes {
        if v.is_null() {
            base.remove(&k);
        } else {
            base.insert(k, v);
        }
    }
    let mut f = Fields { map: base };
    let (config, known) = receiver_config(&mut f)?;
    f.finish(known)?;
    Ok(config)
}

/// `DELETE /api/v1/receivers/{id}`: refused while rules send to it or deliveries to it
/// are pending.
pub async fn remove_receiver(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAlerts)?;
    let id = path_id(&id, "receiver")?;
    let now = api.now();
    let name = api
        .store(move |s, _| {
            let r = s.receiver(id).map_err(store_err)?;
            s.remove_receiver(id, now).map_err(store_err)?;
            Ok(r.name)
        })
        .await?;
    tracing::info!(receiver = %name, by = %caller.admin.name, "receiver removed");
    ok(json!({ "id": id, "name": name, "removed": true }))
}

/// The notification a receiver test sends: a made-up info event of kind [`TEST_KIND`]
/// from the box, with a fresh id (so a receiver honouring idempotency keys shows every
/// test).
pub fn test_notification(
    receiver: &str,
    by: &str,
    now: OffsetDateTime,
    random: u128,
) -> Notification {
    let message = gatehouse_alerts::model::clean_text(
        &format!(
            "Test notification from Gatehouse to receiver {receiver:?}, sent by {by}. \
             No action is needed."
        ),
        gatehouse_alerts::model::limits::MESSAGE,
    );
    Notification {
        delivery: 0,
        kind: NotificationKind::Firing,
        event: Event {
            id: EventId::new(now, random),
            seq: 0,
            new: NewEvent {
                source: SourceKind::System.as_str().to_owned(),
                source_kind: SourceKind::System,
                kind: TEST_KIND.to_owned(),
                severity: Severity::Info,
                time: now,
                camera: None,
                zone: None,
                device: None,
                message: Some(message),
                snapshot_url: None,
                clip_url: None,
                external_id: None,
                lifecycle: Lifecycle::Instant,
            },
            received_at: now,
            ended_at: None,
            grouped_into: None,
            ack: None,
        },
    }
}

/// The sender a receiver test uses: the delivery workers' ([`DeliverySettings`], from
/// `[hub.alerts]`), so a test fails where a delivery would.
pub fn test_sender(config: &Config) -> Result<Sender, gatehouse_notify::SendError> {
    DeliverySettings::from_config(&config.hub.alerts).map(|d| d.sender)
}

/// `POST /api/v1/receivers/{id}/test`: one test notification, sent now; answers
/// `delivered`, the HTTP status and latency, or the failure.
pub async fn test_receiver(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAlerts)?;
    let id = path_id(&id, "receiver")?;
    optional_fields(body).await?.finish(&[])?;
    let r = api
        .store(move |s, _| s.receiver(id).map_err(store_err))
        .await?;
    if matches!(r.config, ReceiverConfig::Console) {
        return Err(ApiError::bad_request(
            "the console receiver is not sent to: its notifications appear in the console's \
             live feed (GET /api/v1/events/stream)",
        ));
    }
    let mut random = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut random)
        .map_err(|e| ApiError::internal(format!("no randomness from the OS: {e}")))?;
    let n = test_notification(
        &r.name,
        &caller.admin.name,
        api.now(),
        u128::from_le_bytes(random),
    );
    let sender = test_sender(api.config()).map_err(ApiError::internal)?;
    let started = Instant::now();
    let outcome = sender.send(&r.config, &n).await;
    let elapsed = started.elapsed();
    tracing::info!(receiver = %r.name, ok = outcome.is_ok(), by = %caller.admin.name, "receiver tested");
    ok(match outcome {
        Ok(sent) => json!({
            "receiver": r.id,
            "name": r.name,
            "event_id": n.event.id,
            "delivered": true,
            "http_status": sent.status,
            "latency_ms": u64::try_from(sent.latency.as_millis()).unwrap_or(u64::MAX),
        }),
        Err(e) => json!({
            "receiver": r.id,
            "name": r.name,
            "event_id": n.event.id,
            "delivered": false,
            "http_status": e.http_status(),
            "latency_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "failure": e.to_string(),
        }),
    })
}

// ---- rules -------------------------------------------------------------------------

/// A rule's fields as a body gives them (absent = keep, for PATCH).
struct RuleInput {
    name: Option<String>,
    matcher: Option<Matcher>,
    active: Patch<Schedule>,
    receivers: Option<Vec<Ref>>,
    group_window: Option<Duration>,
    repeat_every: Patch<Duration>,
    enabled: Option<bool>,
}

const RULE_FIELDS: [&str; 8] = [
    "name",
    "matcher",
    "active",
    "holidays",
    "receivers",
    "group_window",
    "repeat_every",
    "enabled",
];

const MATCHER_WHAT: &str = "an object with any of \"kinds\", \"sources\", \"zones\" (lists of \
     patterns; one ending in * matches by prefix) and \"min_severity\" (info, warning or \
     critical)";

/// A matcher object; every error names `matcher.<field>`.
fn matcher_value(v: Value) -> Result<Matcher, ApiError> {
    let Value::Object(map) = v else {
        return Err(ApiError::bad_request(format!(
            "`matcher` must be {MATCHER_WHAT}"
        )));
    };
    let mut f = Fields { map };
    let list = |f: &mut Fields, k: &str| -> Result<Vec<String>, ApiError> {
        f.opt::<Vec<String>>(k, "a list of patterns (texts)")
            .map_err(|_| {
                ApiError::bad_request(format!("`matcher.{k}` must be a list of patterns (texts)"))
            })
            .map(Option::unwrap_or_default)
    };
    let kinds = list(&mut f, "kinds")?;
    let sources = list(&mut f, "sources")?;
    let zones = list(&mut f, "zones")?;
    let min_severity = match f.take("min_severity") {
        None => Severity::Info,
        Some(Value::String(s)) => s.parse().map_err(|e: ModelError| {
            ApiError::bad_request(format!("`matcher.min_severity`: {e}"))
        })?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "`matcher.min_severity` must be \"info\", \"warning\" or \"critical\"",
            ))
        }
    };
    if let Some(k) = f.map.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown field `matcher.{k}`; expected `kinds`, `sources`, `zones`, `min_severity`"
        )));
    }
    let m = Matcher {
        kinds,
        sources,
        zones,
        min_severity,
    };
    m.validate().map_err(model_err)?;
    Ok(m)
}

const ACTIVE_WHAT: &str = "a schedule like \"mon-fri 08:00-18:00; sat 09:00-12:00\" (site \
     time), its JSON model, or null for always";

/// `active` and `holidays`: the rule's schedule.
fn active_field(f: &mut Fields) -> Result<Patch<Schedule>, ApiError> {
    let holidays: Option<String> = f.opt("holidays", "\"closed\" or \"ignore\"")?;
    let active = match f.map.remove("active") {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Clear,
        Some(Value::String(spec)) => {
            let rule = match holidays.as_deref() {
                None | Some("closed") => HolidayRule::Closed,
                Some("ignore") => HolidayRule::Ignore,
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "`holidays` must be \"closed\" (the rule does not apply on site holidays) or \"ignore\"",
                    ))
                }
            };
            Patch::Set(
                parse_schedule(&spec, rule)
                    .map_err(|e| ApiError::bad_request(format!("`active`: {e}")))?,
            )
        }
        Some(v @ Value::Object(_)) => {
            if holidays.is_some() {
                return Err(ApiError::bad_request(
                    "`holidays` goes inside the JSON schedule model, not beside it",
                ));
            }
            let s: Schedule = serde_json::from_value(v).map_err(|e| {
                ApiError::bad_request(format!(
                    "`active` is not a valid schedule model ({e}); expected {ACTIVE_WHAT}"
                ))
            })?;
            s.validate(None)
                .map_err(|e| ApiError::bad_request(format!("`active`: {e}")))?;
            Patch::Set(s)
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`active` must be {ACTIVE_WHAT}"
            )))
        }
    };
    if holidays.is_some() && !matches!(active, Patch::Set(_)) {
        return Err(ApiError::bad_request(
            "`holidays` needs a text `active` schedule beside it",
        ));
    }
    Ok(active)
}

fn rule_input(f: &mut Fields) -> Result<RuleInput, ApiError> {
    let name: Option<String> = f.opt("name", "text")?;
    let matcher = f.take("matcher").map(matcher_value).transpose()?;
    let active = active_field(f)?;
    let receivers = match f.take("receivers") {
        None => None,
        Some(Value::Array(items)) if !items.is_empty() => Some(
            items
                .into_iter()
                .map(|v| Ref::from_value("receivers", v, "receiver"))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(ApiError::bad_request(
                "`receivers` must be a non-empty list of receiver ids or names",
            ))
        }
    };
    let group_window = f
        .take("group_window")
        .map(|v| duration_value("group_window", v))
        .transpose()?;
    let repeat_every = match f.map.remove("repeat_every") {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Clear,
        Some(v) => Patch::Set(duration_value("repeat_every", v)?),
    };
    let enabled: Option<bool> = f.opt("enabled", "true or false")?;
    Ok(RuleInput {
        name,
        matcher,
        active,
        receivers,
        group_window,
        repeat_every,
        enabled,
    })
}

/// The rule `input` makes of `base` (a new rule when `None`), checked by the model's
/// rules.
fn build_rule(s: &Store, input: RuleInput, base: Option<&Rule>) -> Result<NewRule, ApiError> {
    let name = match (input.name, base) {
        (Some(n), _) => n,
        (None, Some(b)) => b.name.clone(),
        (None, None) => return Err(ApiError::bad_request("`name` is required (text)")),
    };
    let receivers = match (input.receivers, base) {
        (Some(refs), _) => refs
            .iter()
            .map(|r| receiver_id(s, r))
            .collect::<Result<Vec<_>, _>>()?,
        (None, Some(b)) => b.receivers.clone(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "`receivers` is required (a non-empty list of receiver ids or names)",
            ))
        }
    };
    let active = match input.active {
        Patch::Set(a) => Some(a),
        Patch::Clear => None,
        Patch::Keep => base.and_then(|b| b.active.clone()),
    };
    let repeat_every = match input.repeat_every {
        Patch::Set(d) => Some(d),
        Patch::Clear => None,
        Patch::Keep => base.and_then(|b| b.repeat_every),
    };
    let rule = NewRule {
        name,
        matcher: input
            .matcher
            .or_else(|| base.map(|b| b.matcher.clone()))
            .unwrap_or_default(),
        active,
        receivers,
        group_window: input
            .group_window
            .or(base.map(|b| b.group_window))
            .unwrap_or(Duration::ZERO),
        repeat_every,
    };
    Rule {
        id: base.map_or(0, |b| b.id),
        name: rule.name.clone(),
        enabled: true,
        matcher: rule.matcher.clone(),
        active: rule.active.clone(),
        receivers: rule.receivers.clone(),
        group_window: rule.group_window,
        repeat_every: rule.repeat_every,
    }
    .validate()
    .map_err(model_err)?;
    Ok(rule)
}

fn matcher_view(m: &Matcher) -> Value {
    json!({
        "kinds": m.kinds,
        "sources": m.sources,
        "zones": m.zones,
        "min_severity": m.min_severity.as_str(),
    })
}

/// A rule, its receivers named.
pub fn rule_view(r: &Rule, receivers: &HashMap<ReceiverId, String>) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "enabled": r.enabled,
        "matcher": matcher_view(&r.matcher),
        "active": r.active.as_ref().map(format_schedule),
        "holidays": r.active.as_ref().map(|s| holidays_str(&s.holidays)),
        "receivers": r.receivers.iter().map(|id| json!({
            "id": id,
            "name": receivers.get(id),
        })).collect::<Vec<_>>(),
        "group_window": format_duration(r.group_window),
        "group_window_s": r.group_window.as_secs(),
        "repeat_every": r.repeat_every.map(format_duration),
        "repeat_every_s": r.repeat_every.map(|d| d.as_secs()),
    })
}

fn receiver_names(s: &Store) -> Result<HashMap<ReceiverId, String>, ApiError> {
    Ok(s.list_receivers()
        .map_err(store_err)?
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect())
}

/// `GET /api/v1/rules`.
pub async fn list_rules(State(api): State<AdminApi>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(Action::ReadAlerts)?;
    let (rules, names) = api
        .store(|s, _| Ok((s.list_rules().map_err(store_err)?, receiver_names(s)?)))
        .await?;
    ok(json!(rules
        .iter()
        .map(|r| rule_view(r, &names))
        .collect::<Vec<_>>()))
}

/// `GET /api/v1/rules/{id}`.
pub async fn get_rule(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadAlerts)?;
    let id = path_id(&id, "rule")?;
    let (rule, names) = api
        .store(move |s, _| Ok((s.rule(id).map_err(store_err)?, receiver_names(s)?)))
        .await?;
    ok(rule_view(&rule, &names))
}

/// `POST /api/v1/rules`.
pub async fn add_rule(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAlerts)?;
    let mut f = Fields::read(body).await?;
    let input = rule_input(&mut f)?;
    f.finish(&RULE_FIELDS)?;
    let enabled = input.enabled;
    let (rule, names) = api
        .store(move |s, _| {
            let new = build_rule(s, input, None)?;
            let id = s.add_rule(&new).map_err(store_err)?;
            if enabled == Some(false) {
                s.set_rule_enabled(id, false).map_err(store_err)?;
            }
            Ok((s.rule(id).map_err(store_err)?, receiver_names(s)?))
        })
        .await?;
    tracing::info!(rule = %rule.name, by = %caller.admin.name, "alert rule added");
    created(rule_view(&rule, &names))
}

/// `PATCH /api/v1/rules/{id}`.
pub async fn patch_rule(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAlerts)?;
    let id = path_id(&id, "rule")?;
    let mut f = Fields::read(body).await?;
    let input = rule_input(&mut f)?;
    f.finish(&RULE_FIELDS)?;
    let enabled = input.enabled;
    let (rule, names) = api
        .store(move |s, _| {
            let current = s.rule(id).map_err(store_err)?;
            let new = build_rule(s, input, Some(&current))?;
            let unchanged = NewRule {
                name: current.name.clone(),
                matcher: current.matcher.clone(),
                active: current.active.clone(),
                receivers: current.receivers.clone(),
                group_window: current.group_window,
                repeat_every: current.repeat_every,
            };
            if new != unchanged {
                s.update_rule(id, &new).map_err(store_err)?;
            }
            if let Some(e) = enabled.filter(|e| *e != current.enabled) {
                s.set_rule_enabled(id, e).map_err(store_err)?;
            }
            Ok((s.rule(id).map_err(store_err)?, receiver_names(s)?))
        })
        .await?;
    tracing::info!(rule = %rule.name, by = %caller.admin.name, "alert rule changed");
    ok(rule_view(&rule, &names))
}

/// `DELETE /api/v1/rules/{id}`: the rule and its scheduled reminders; the deliveries it
/// caused stay.
pub async fn remove_rule(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAlerts)?;
    let id = path_id(&id, "rule")?;
    let name = api
        .store(move |s, _| {
            let r = s.rule(id).map_err(store_err)?;
            s.remove_rule(id).map_err(store_err)?;
            Ok(r.name)
        })
        .await?;
    tracing::info!(rule = %name, by = %caller.admin.name, "alert rule removed");
    ok(json!({ "id": id, "name": name, "removed": true }))
}

// ---- silences ----------------------------------------------------------------------

/// Whether a silence is `active` (in force), `pending` (starts later) or `expired`.
pub fn silence_state(s: &Silence, now: OffsetDateTime) -> &'static str {
    if s.in_force(now) {
        "active"
    } else if now < s.starts_at {
        "pending"
    } else {
        "expired"
    }
}

fn silence_view(s: &Silence, now: OffsetDateTime, tz: UtcOffset) -> Value {
    json!({
        "id": s.id,
        "matcher": matcher_view(&s.matcher),
        "starts_at": ts(s.starts_at, tz),
        "ends_at": ts(s.ends_at, tz),
        "author": s.author,
        "comment": s.comment,
        "state": silence_state(s, now),
    })
}

/// `GET /api/v1/silences?active=true`: all silences, or only those in force now.
pub async fn list_silences(
    State(api): State<AdminApi>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadAlerts)?;
    let q = only_params(q, &["active"])?;
    let active = bool_param(&q, "active")?.unwrap_or(false);
    let (now, tz) = (api.now(), api.tz());
    let silences = api
        .store(move |s, _| s.list_silences(active.then_some(now)).map_err(store_err))
        .await?;
    ok(json!(silences
        .iter()
        .map(|x| silence_view(x, now, tz))
        .collect::<Vec<_>>()))
}

const TIME_WHAT: &str = "a date like 2026-12-31 or an RFC 3339 time";

/// `POST /api/v1/silences`.
pub async fn add_silence(
    State(api): State<AdminApi>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAlerts)?;
    let (now, tz) = (api.now(), api.tz());
    let mut f = Fields::read(body).await?;
    let matcher = f
        .take("matcher")
        .map(matcher_value)
        .transpose()?
        .unwrap_or_default();
    let starts: Option<String> = f.opt("starts_at", TIME_WHAT)?;
    let ends: Option<String> = f.opt("ends_at", TIME_WHAT)?;
    let duration = f
        .take("duration")
        .map(|v| duration_value("duration", v))
        .transpose()?;
    let comment: String = f.req("comment", "text: why the alerts are silenced")?;
    f.finish(&["matcher", "starts_at", "ends_at", "duration", "comment"])?;
    let parse = |field: &str, s: &str, b: Bound| {
        parse_bound(s, b, tz).map_err(|e| ApiError::bad_request(format!("`{field}`: {e}")))
    };
    let starts_at = starts
        .map(|s| parse("starts_at", &s, Bound::From))
        .transpose()?
        .unwrap_or(now);
    let ends_at = match (ends, duration) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give `ends_at` or `duration`, not both",
            ))
        }
        (Some(e), None) => parse("ends_at", &e, Bound::Until)?,
        (None, Some(d)) => starts_at + d,
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "`ends_at` ({TIME_WHAT}) or `duration` ({DURATION_FORMS}) is required"
            )))
        }
    };
    let new = NewSilence {
        matcher,
        starts_at,
        ends_at,
        author: caller.admin.name.clone(),
        comment,
    };
    Silence {
        id: 0,
        matcher: new.matcher.clone(),
        starts_at,
        ends_at,
        author: new.author.clone(),
        comment: new.comment.clone(),
    }
    .validate()
    .map_err(model_err)?;
    let silence = api
        .store(move |s, _| {
            let id = s.add_silence(&new, now).map_err(store_err)?;
            s.silence(id).map_err(store_err)
        })
        .await?;
    tracing::info!(silence = silence.id, by = %caller.admin.name, "silence added");
    created(silence_view(&silence, now, tz))
}

/// `POST /api/v1/silences/{id}/expire`: ends it now.
pub async fn expire_silence(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeAlerts)?;
    let id = path_id(&id, "silence")?;
    optional_fields(body).await?.finish(&[])?;
    let (now, tz) = (api.now(), api.tz());
    let (expired, silence) = api
        .store(move |s, _| {
            let expired = s.expire_silence(id, now).map_err(store_err)?;
            Ok((expired, s.silence(id).map_err(store_err)?))
        })
        .await?;
    if expired {
        tracing::info!(silence = id, by = %caller.admin.name, "silence expired");
    }
    let mut view = silence_view(&silence, now, tz);
    if let Value::Object(m) = &mut view {
        m.insert("expired_now".into(), json!(expired));
        m.insert("already_ended".into(), json!(!expired));
    }
    ok(view)
}

// ---- events ------------------------------------------------------------------------

fn ack_view(a: &gatehouse_alerts::model::Ack, tz: UtcOffset) -> Value {
    json!({ "by": a.by, "at": ts(a.at, tz), "comment": a.comment })
}

/// An event as the API shows it.
pub fn event_view(e: &Event, tz: UtcOffset) -> Value {
    let n = &e.new;
    json!({
        "id": e.id,
        "seq": e.seq,
        "source": n.source,
        "source_kind": n.source_kind.as_str(),
        "kind": n.kind,
        "severity": n.severity.as_str(),
        "time": ts(n.time, tz),
        "received_at": ts(e.received_at, tz),
        "camera": n.camera,
        "zone": n.zone,
        "device": n.device,
        "message": n.message,
        "snapshot_url": n.snapshot_url,
        "clip_url": n.clip_url,
        "external_id": n.external_id,
        "lifecycle": n.lifecycle.as_str(),
        "ended_at": opt_ts(e.ended_at, tz),
        "grouped_into": e.grouped_into,
        "ack": e.ack.as_ref().map(|a| ack_view(a, tz)),
    })
}

fn repeat_n(k: NotificationKind) -> Option<u32> {
    match k {
        NotificationKind::Repeat(n) => Some(n),
        _ => None,
    }
}

fn delivery_view(d: &DeliveryRecord, tz: UtcOffset) -> Value {
    json!({
        "id": d.id,
        "receiver": d.receiver,
        "receiver_name": d.receiver_name,
        "rule": d.rule,
        "kind": kind_name(d.kind),
        "repeat_n": repeat_n(d.kind),
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": ts(d.next_attempt_at, tz),
        "created_at": ts(d.created_at, tz),
        "delivered_at": opt_ts(d.delivered_at, tz),
        "last_error": d.last_error,
    })
}

fn detail_view(d: &EventDetail, tz: UtcOffset) -> Value {
    let mut v = event_view(&d.event, tz);
    if let Value::Object(m) = &mut v {
        m.insert("silenced_by".into(), json!(d.silenced_by));
        m.insert(
            "deliveries".into(),
            json!(d
                .deliveries
                .iter()
                .map(|x| delivery_view(x, tz))
                .collect::<Vec<_>>()),
        );
    }
    v
}

fn attempt_view(l: &DeliveryLogEntry, tz: UtcOffset) -> Value {
    json!({
        "id": l.id,
        "delivery": l.delivery,
        "event": l.event,
        "receiver": l.receiver,
        "receiver_name": l.receiver_name,
        "kind": kind_name(l.kind),
        "repeat_n": repeat_n(l.kind),
        "attempt": l.attempt,
        "started_at": ts(l.started_at, tz),
        "latency_ms": u64::try_from(l.latency.as_millis()).unwrap_or(u64::MAX),
        "outcome": l.outcome.as_str(),
        "http_status": l.http_status,
        "error": l.error,
    })
}

pub(super) const EVENT_PARAMS: [&str; 10] = [
    "since", "until", "kind", "source", "severity", "acked", "q", "after", "before", "limit",
];

/// `GET /api/v1/events?...`: with `after`, the events after that `seq`, oldest first
/// (tailing); otherwise the newest first, before `before` if given. `next_after` and
/// `next_before` are the cursors of the next pages either way.
pub async fn list_events(
    State(api): State<AdminApi>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadEvents)?;
    let tz = api.tz();
    let q = only_params(q, &EVENT_PARAMS)?;
    let limit = limit_param(&q)?;
    let filter = event_filter(&q, tz, limit)?;
    let after = filter.after_seq;
    let before = filter.before_seq;
    let events = api
        .store(move |s, _| s.list_events(&filter).map_err(store_err))
        .await?;
    let seqs = || events.iter().map(|e| e.seq);
    ok(json!({
        "events": events.iter().map(|e| event_view(e, tz)).collect::<Vec<_>>(),
        "more": events.len() >= limit,
        "next_after": seqs().max().or(after),
        "next_before": seqs().min().or(before),
    }))
}

/// The events filter from `GET /events`' query parameters (all of [`EVENT_PARAMS`] but
/// `limit`, which the caller reads with its own bounds), as its CSV export takes them too.
pub(super) fn event_filter(
    q: &HashMap<String, String>,
    tz: UtcOffset,
    limit: usize,
) -> Result<EventFilter, ApiError> {
    let bound = |k: &str, b: Bound| {
        q.get(k)
            .map(|s| {
                parse_bound(s, b, tz).map_err(|e| ApiError::bad_request(format!("`{k}`: {e}")))
            })
            .transpose()
    };
    let severity_min = q
        .get("severity")
        .map(|s| {
            s.parse::<Severity>().map_err(|_| {
                ApiError::bad_request(
                    "`severity` must be info, warning or critical (the lowest to show)",
                )
            })
        })
        .transpose()?;
    Ok(EventFilter {
        after_seq: num_param(q, "after", "an event seq number")?,
        before_seq: num_param(q, "before", "an event seq number")?,
        since: bound("since", Bound::From)?,
        until: bound("until", Bound::Until)?,
        kind: q.get("kind").cloned(),
        source: q.get("source").cloned(),
        severity_min,
        acked: bool_param(q, "acked")?,
        text: q.get("q").cloned().filter(|t| !t.is_empty()),
        limit,
    })
}

/// `GET /api/v1/events/{id}`: the event with its silence and deliveries.
pub async fn event_detail(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadEvents)?;
    let id = path_event(&id)?;
    let tz = api.tz();
    let detail = api
        .store(move |s, _| s.event_detail(id).map_err(store_err))
        .await?;
    ok(detail_view(&detail, tz))
}

/// `POST /api/v1/events/{id}/ack {"comment"?}`: acknowledged by the caller; the first
/// acknowledgement stands, and the answer says whether this was it.
pub async fn ack_event(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::AckEvents)?;
    let id = path_event(&id)?;
    let mut f = optional_fields(body).await?;
    let comment: Option<String> = f.opt("comment", "text")?;
    f.finish(&["comment"])?;
    let (now, tz) = (api.now(), api.tz());
    let by = caller.admin.name.clone();
    let outcome = api
        .store(move |s, _| {
            s.ack_event(id, &by, comment.as_deref(), now)
                .map_err(store_err)
        })
        .await?;
    let (already, ack) = match &outcome {
        AckOutcome::Acked(a) => (false, a),
        AckOutcome::AlreadyAcked(a) => (true, a),
    };
    if !already {
        tracing::info!(event = %id, by = %caller.admin.name, "event acknowledged");
    }
    ok(json!({
        "id": id,
        "acked": true,
        "already_acked": already,
        "ack": ack_view(ack, tz),
    }))
}

/// The delivery log page for `filter`.
async fn log_page(api: &AdminApi, filter: DeliveryLogFilter) -> Result<Response, ApiError> {
    let tz = api.tz();
    let limit = filter.limit;
    let after = filter.after_id;
    let rows = api
        .store(move |s, _| {
            if let Some(e) = filter.event {
                s.event(e).map_err(store_err)?;
            }
            s.delivery_log(&filter).map_err(store_err)
        })
        .await?;
    ok(json!({
        "attempts": rows.iter().map(|r| attempt_view(r, tz)).collect::<Vec<_>>(),
        "more": rows.len() >= limit,
        "next_after": rows.iter().map(|r| r.id).max().or(after),
    }))
}

/// `GET /api/v1/events/{id}/deliveries?after=&limit=`: the event's delivery attempts.
pub async fn event_deliveries(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadEvents)?;
    let id = path_event(&id)?;
    let q = only_params(q, &["after", "limit"])?;
    let filter = DeliveryLogFilter {
        event: Some(id),
        after_id: num_param(&q, "after", "a delivery log id")?,
        limit: limit_param(&q)?,
        ..DeliveryLogFilter::default()
    };
    log_page(&api, filter).await
}

/// `GET /api/v1/deliveries?event=&receiver=&delivery=&outcome=&after=&limit=`: the
/// delivery log. With `after`, oldest first from there; otherwise newest first.
pub async fn delivery_log(
    State(api): State<AdminApi>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadEvents)?;
    let q = only_params(
        q,
        &["event", "receiver", "delivery", "outcome", "after", "limit"],
    )?;
    let event = q
        .get("event")
        .map(|e| {
            e.parse::<EventId>().map_err(|_| {
                ApiError::bad_request("`event` must be an event id (a ULID, 26 characters)")
            })
        })
        .transpose()?;
    let outcome = match q.get("outcome").map(String::as_str) {
        None => None,
        Some("delivered") => Some(DeliveryLogOutcome::Delivered),
        Some("failed") => Some(DeliveryLogOutcome::Failed),
        Some("dead") => Some(DeliveryLogOutcome::Dead),
        Some(_) => {
            return Err(ApiError::bad_request(
                "`outcome` must be delivered, failed or dead",
            ))
        }
    };
    let receiver = q.get("receiver").map(|r| Ref::from_param(r));
    let receiver = match receiver {
        None => None,
        Some(r) => Some(api.store(move |s, _| receiver_id(s, &r)).await?),
    };
    let filter = DeliveryLogFilter {
        delivery: num_param(&q, "delivery", "a delivery id")?,
        event,
        receiver,
        outcome,
        after_id: num_param(&q, "after", "a delivery log id")?,
        limit: limit_param(&q)?,
    };
    log_page(&api, filter).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn urls_are_cut_to_scheme_and_host() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("http://user:pw@ntfy.lan:8080/topic?x=1"),
            "http://ntfy.lan:8080/…"
        );
        assert_eq!(redact_url("https://ntfy.sh"), "https://ntfy.sh");
        assert_eq!(redact_url("nonsense"), "…");
    }

    #[test]
    fn store_errors_name_the_body_field() {
        let e = store_err(StoreError::Invalid {
            field: "webhook URL",
            reason: "must start with http://".into(),
        });
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.message().starts_with("`url`: "), "{}", e.message());
        let e = store_err(StoreError::Conflict {
            entity: gatehouse_store::Entity::EventSource,
            key: "x".into(),
            why: "prefix taken".into(),
        });
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let e = model_err(ModelError::Invalid {
            field: "kinds",
            why: "bad".into(),
        });
        assert_eq!(e.message(), "`matcher.kinds`: bad");
    }

    #[test]
    fn matchers_refuse_unknown_fields_and_bad_patterns() {
        let m = matcher_value(json!({"kinds": ["review.*"], "min_severity": "warning"})).unwrap();
        assert_eq!(m.kinds, vec!["review.*"]);
        assert_eq!(m.min_severity, Severity::Warning);
        for (v, want) in [
            (json!({"kind": ["x"]}), "unknown field `matcher.kind`"),
            (json!({"kinds": "x"}), "`matcher.kinds` must be a list"),
            (json!({"kinds": ["Bad Kind"]}), "`matcher.kinds`"),
            (json!({"min_severity": "urgent"}), "`matcher.min_severity`"),
            (json!(["x"]), "`matcher` must be an object"),
        ] {
            let e = matcher_value(v).unwrap_err();
            assert!(e.message().contains(want), "{}", e.message());
        }
    }

    #[test]
    fn receiver_patches_merge_and_keep_secrets() {
        let current = ReceiverConfig::Email {
            host: "smtp.lan".into(),
            port: 587,
            security: SmtpSecurity::Starttls,
            username: Some("u".into()),
            password: Some("pw".into()),
            from: "gh@site".into(),
            to: vec!["ops@site".into()],
        };
        let mut changes = Map::new();
        changes.insert("to".into(), json!("a@site, b@site"));
        match merged_config(&current, changes).unwrap() {
            ReceiverConfig::Email { password, to, .. } => {
                assert_eq!(password.as_deref(), Some("pw"));
                assert_eq!(to, vec!["a@site", "b@site"]);
            }
            other => panic!("{other:?}"),
        }
        // Another type starts from nothing: its required fields are asked for.
        let mut changes = Map::new();
        changes.insert("type".into(), json!("ntfy"));
        let e = merged_config(&current, changes).unwrap_err();
        assert!(e.message().contains("`url` is required"), "{}", e.message());
    }

    #[test]
    fn test_notifications_are_fresh_info_events_of_the_box() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let a = test_notification("ops", "alice", now, 1);
        let b = test_notification("ops", "alice", now, 2);
        assert_ne!(a.event.id, b.event.id);
        assert_eq!(a.event.new.kind, TEST_KIND);
        assert!(a.event.new.validate().is_ok());
        assert!(a.event.new.message.as_deref().unwrap().contains("alice"));
    }
}
