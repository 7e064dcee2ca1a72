//! The admin API's additions for the web console: the status dashboard, the tunnel's
//! peers, holidays, CSV exports of the events and the access log, resolving an event, and
//! card learn mode. Each handler authenticates ([`Caller`]), checks the role table
//! ([`Caller::may`]) and reads its body field by field (`Fields`), like the rest of the
//! API.
//!
//! Routes (`?` optional; "ref" is an id number or a name):
//! - `GET /status`: gates (online = seen within `hub.alerts.gate_offline_s`, 300 s when
//!   that is 0), the tunnel's peers, services (hub, database, MQTT broker, tunnel, alert
//!   delivery), sensors, event counts. A part that cannot be read says so inside the
//!   answer (`peers.available = false` with the error, a service with `ok = false`)
//!   rather than failing the whole status.
//! - `GET /peers`, `POST /peers {"name", "role": "admin"|"installer", "expires"?,
//!   "public_key"?}`, `POST /peers/{name}/disable`, `POST /peers/{name}/enable`,
//!   `DELETE /peers/{name}`: what `gatehouse peer` does, through the same functions
//!   ([`gatehouse_tunnel::admin`]): the peer store file, then SIGHUP to a running tunnel
//!   (`"applied": "live"`; `"stored"` when none runs or it cannot be signalled: the
//!   change applies when it next starts). The new peer's private key is generated here
//!   and exists only in the answer to `POST /peers` (its config text and QR code).
//! - `GET /holidays`, `POST /holidays {"date", "name"}`, `DELETE /holidays/{date}`: site
//!   holidays (dates like `2026-12-25`), which the levels' schedules and alert rules
//!   use.
//! - `GET /events.csv` and `GET /access/log.csv`: the same query parameters as the JSON
//!   lists (parsed by the same code: `alerts_api::event_filter`,
//!   `api::LogQuery`), `limit` up to [`CSV_MAX_ROWS`] (the default). The rows
//!   are in the JSON lists' order. When more rows match than the file holds, the reply
//!   has `X-Truncated: true` and the cursor to continue from (`X-Next-After` or
//!   `X-Next-Before`, as the JSON list's `next_after` / `next_before`). Cells follow RFC
//!   4180 (CRLF, quotes doubled); a cell starting with `=`, `+`, `-`, `@`, tab or CR gets
//!   a leading `'` so that spreadsheets do not run it as a formula (OWASP, "CSV
//!   Injection").
//! - `POST /events/{id}/resolve {"comment"?}`: ends the event now (if it has not ended)
//!   with `resolved` notifications, and acknowledges it for the caller (if nobody has):
//!   [`gatehouse_store::Store::resolve_event`].
//! - `POST /cards/learn {"gate", "person", "label"?, "wait_s"?}`: waits up to `wait_s`
//!   (1 to [`LEARN_MAX_WAIT_S`], default [`LEARN_DEFAULT_WAIT_S`]) for the first
//!   unknown-card deny at that gate decided after the request (the access log, read
//!   every [`LEARN_POLL`]), and enrols that card hash for the person (201, the card);
//!   408 when no card came in time; 409 when the card was enrolled meanwhile. The raw
//!   card id is never known here: only the keyed hash the log keeps.

use super::alerts_api::{event_filter, event_view, optional_fields, path_event, EVENT_PARAMS};
use super::api::{
    card_view, created, gate_id, log_view, names, num_param, ok, only_params, opt_ts, people_names,
    person_id, LogQuery, Ref,
};
use super::auth::{Action, Caller};
use super::{AdminApi, ApiError, Fields};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gatehouse_access::model::Validity;
use gatehouse_alerts::model::DeliveryStatus;
use gatehouse_config::{Config, MqttMode, Role};
use gatehouse_gate_proto::Reason;
use gatehouse_store::events::MAX_PAGE;
use gatehouse_store::log::MAX_QUERY_LIMIT;
use gatehouse_store::{LogFilter, LogSource, NewCard, Store, StoreError};
use gatehouse_tunnel::admin::{AdminError, Applied, NewPeer, PeerRow};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

/// The most rows one CSV export holds (and its default `limit`).
pub const CSV_MAX_ROWS: usize = 100_000;

/// Learn mode's longest and default wait.
pub const LEARN_MAX_WAIT_S: u64 = 120;
pub const LEARN_DEFAULT_WAIT_S: u64 = 60;
/// How often learn mode reads the access log.
pub const LEARN_POLL: Duration = Duration::from_millis(250);

/// A gate counts as online when seen within this long, if `hub.alerts.gate_offline_s`
/// is 0 (the offline alarm off).
pub const DEFAULT_ONLINE_S: u64 = 300;

/// How long the status waits for the MQTT broker to accept a connection.
const BROKER_PROBE: Duration = Duration::from_secs(1);

/// Pending deliveries older than this mark alert delivery as not ok on the dashboard.
const STALE_PENDING: time::Duration = time::Duration::minutes(15);

/// The QR code's shown size in the console.
const QR_SIZE_PX: u32 = 280;

// ---- helpers -----------------------------------------------------------------------

/// Runs blocking work (files, sockets) off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("admin task failed: {e}")))
}

fn service(name: &str, ok: bool, detail: impl Into<String>) -> Value {
    json!({ "name": name, "ok": ok, "detail": detail.into() })
}

// ---- status ------------------------------------------------------------------------

/// What the status reads from the database in one go.
struct DbStatus {
    schema_version: i64,
    gates: Vec<Value>,
    unacknowledged: u64,
    pending: u64,
    dead: u64,
    oldest_pending: Option<OffsetDateTime>,
}

fn db_status(
    s: &Store,
    now: OffsetDateTime,
    online_within: time::Duration,
    tz: UtcOffset,
) -> Result<DbStatus, StoreError> {
    let schema_version = s.schema_version()?;
    let zones = names(s.list_zones()?, |z| (z.id, z.name));
    let gates = s
        .list_gates()?
        .iter()
        .map(|g| {
            let online = g.last_seen.is_some_and(|t| now - t <= online_within);
            json!({
                "id": g.gate.id,
                "name": g.gate.name,
                "zone": zones.get(&g.gate.zone),
                "zone_id": g.gate.zone,
                "enabled": g.gate.enabled,
                "online": online,
                "last_seen": opt_ts(g.last_seen, tz),
            })
        })
        .collect();
    let (mut pending, mut dead) = (0, 0);
    for c in s.delivery_counts()? {
        match c.status {
            DeliveryStatus::Pending => pending += c.count,
            DeliveryStatus::Dead => dead += c.count,
            _ => {}
        }
    }
    let oldest_pending = s
        .queue_depth()?
        .into_iter()
        .filter_map(|q| q.oldest_pending)
        .min();
    Ok(DbStatus {
        schema_version,
        gates,
        unacknowledged: s.unacknowledged_event_count()?,
        pending,
        dead,
        oldest_pending,
    })
}

/// The tunnel's answer on its UAPI socket, and the peers (store + live figures).
struct TunnelStatus {
    uapi: Result<usize, String>,
    peers: Result<Vec<PeerRow>, String>,
}

fn tunnel_status(config: &Config) -> TunnelStatus {
    let socket = config.uapi_socket();
    let uapi = gatehouse_tunnel::uapi::query(&socket)
        .map(|d| d.peers.len())
        .map_err(|e| e.to_string());
    let peers = gatehouse_tunnel::admin::list_peers(config).map_err(|e| e.to_string());
    TunnelStatus { uapi, peers }
}

/// Whether the MQTT broker accepts a TCP connection (the hub's own session state is not
/// shared with the API; this says whether gates can reach the broker at all).
async fn broker_service(config: &Config, api: &AdminApi) -> Value {
    let mqtt = &config.hub.mqtt;
    let (mode, addr) = match mqtt.mode {
        MqttMode::Off => {
            return service(
                "mqtt",
                true,
                "the MQTT transport is off (hub.mqtt.mode = \"off\")",
            )
        }
        MqttMode::Embedded => ("embedded", api.listening().mqtt),
        MqttMode::External => (
            "external",
            api.listening().mqtt.or_else(|| mqtt.broker.parse().ok()),
        ),
    };
    let Some(addr) = addr else {
        return service(
            "mqtt",
            true,
            format!(
                "{mode} broker {}; not probed (no address to connect to)",
                mqtt.broker
            ),
        );
    };
    match tokio::time::timeout(BROKER_PROBE, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => service(
            "mqtt",
            true,
            format!("{mode} broker at {addr} accepts connections"),
        ),
        Ok(Err(e)) => service(
            "mqtt",
            false,
            format!("{mode} broker at {addr} does not accept connections: {e}"),
        ),
        Err(_) => service(
            "mqtt",
            false,
            format!(
                "{mode} broker at {addr} did not answer within {} s",
                BROKER_PROBE.as_secs()
            ),
        ),
    }
}

/// `GET /api/v1/status`.
pub async fn status(State(api): State<AdminApi>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(Action::ReadStatus)?;
    let (now, tz) = (api.now(), api.tz());
    let config = api.config().clone();
    let online_s = match config.hub.alerts.gate_offline_s {
        0 => DEFAULT_ONLINE_S,
        s => s,
    };
    let online_within = time::Duration::seconds(i64::try_from(online_s).unwrap_or(i64::MAX));
    let db = api
        .store(move |s, _| Ok(db_status(s, now, online_within, tz)))
        .await?;
    let tunnel_config = config.clone();
    let tunnel = blocking(move || tunnel_status(&tunnel_config)).await?;
    let broker = broker_service(&config, &api).await;

    let mut services = vec![service(
        "hub",
        true,
        format!("version {}", env!("CARGO_PKG_VERSION")),
    )];
    let (gates, unacknowledged, pending) = match &db {
        Ok(d) => {
            services.push(service(
                "database",
                true,
                format!("schema version {}", d.schema_version),
            ));
            (json!(d.gates), json!(d.unacknowledged), json!(d.pending))
        }
        Err(e) => {
            tracing::error!(error = %e, "status: the database cannot be read");
            services.push(service("database", false, format!("cannot be read: {e}")));
            (json!([]), Value::Null, Value::Null)
        }
    };
    services.push(broker);
    services.push(match &tunnel.uapi {
        Ok(n) => service(
            "tunnel",
            true,
            format!(
                "running, {n} peer{} configured",
                if *n == 1 { "" } else { "s" }
            ),
        ),
        Err(e) => service(
            "tunnel",
            false,
            format!("not reachable on its UAPI socket: {e}"),
        ),
    });
    if let Ok(d) = &db {
        let stale = d.oldest_pending.is_some_and(|t| now - t > STALE_PENDING);
        let mut detail = format!("{} pending, {} dead (gave up)", d.pending, d.dead);
        if stale {
            detail.push_str(&format!(
                "; some have waited more than {} minutes: check the receivers",
                STALE_PENDING.whole_minutes()
            ));
        }
        services.push(service("alert_delivery", !stale, detail));
    }
    let peers = match &tunnel.peers {
        Ok(rows) => json!({
            "available": true,
            "error": null,
            "items": rows.iter().map(|r| peer_view(r, tz)).collect::<Vec<_>>(),
        }),
        Err(e) => json!({ "available": false, "error": e, "items": [] }),
    };
    let sensors = super::sensors_api::status_block(&api).await;
    ok(json!({
        "gates": gates,
        "peers": peers,
        "services": services,
        "sensors": sensors,
        "events": { "unacknowledged": unacknowledged, "pending_deliveries": pending },
    }))
}

// ---- peers -------------------------------------------------------------------------

fn peer_view(p: &PeerRow, tz: UtcOffset) -> Value {
    json!({
        "name": p.name,
        "role": p.role.as_str(),
        "state": p.state,
        "addresses": p.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "endpoint": p.endpoint,
        "last_handshake": opt_ts(p.last_handshake.map(OffsetDateTime::from), tz),
        "rx_bytes": p.rx_bytes,
        "tx_bytes": p.tx_bytes,
        "expires": opt_ts(p.expires, tz),
    })
}

fn applied_str(a: Applied) -> &'static str {
    match a {
        Applied::Live(_) => "live",
        Applied::Stored => "stored",
    }
}

/// The answer for a peer admin error; the CLI's flag names become the body's fields.
fn peer_err(e: AdminError) -> ApiError {
    match e {
        AdminError::Invalid(m) => ApiError::bad_request(
            m.replace("--expires:", "`expires`:")
                .replace("--public-key:", "`public_key`:"),
        ),
        AdminError::NoSuchPeer(name) => ApiError::not_found(format!(
            "no VPN peer named {name:?}; GET /api/v1/peers lists them"
        )),
        e @ (AdminError::NameTaken(_) | AdminError::KeyTaken(_) | AdminError::Full(_)) => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        AdminError::Store(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the tunnel's peer store cannot be used: {e}"),
        ),
        e => ApiError::internal(e),
    }
}

async fn peer_rows(config: Config) -> Result<Vec<PeerRow>, ApiError> {
    blocking(move || gatehouse_tunnel::admin::list_peers(&config))
        .await?
        .map_err(peer_err)
}

/// `GET /api/v1/peers`.
pub async fn list_peers(State(api): State<AdminApi>, caller: Caller) -> Result<Response, ApiError> {
    caller.may(Action::ReadPeers)?;
    let tz = api.tz();
    let rows = peer_rows(api.config().clone()).await?;
    ok(json!(rows
        .iter()
        .map(|r| peer_view(r, tz))
        .collect::<Vec<_>>()))
}

/// `POST /api/v1/peers`: 201 with the peer, its wg-quick config (with its private key
/// unless a public key was given), that config as an SVG QR code, and a file name.
pub async fn add_peer(
    State(api): State<AdminApi>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangePeers)?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let name: String = f.req("name", "text: 1 to 32 letters, digits, '.', '_' or '-'")?;
    let role: String = f.req("role", "\"admin\" or \"installer\"")?;
    let expires: Option<String> = f.opt("expires", "a date like 2026-12-31")?;
    let public_key: Option<String> = f.opt("public_key", "a WireGuard public key (base64)")?;
    f.finish(&["name", "role", "expires", "public_key"])?;
    let role: Role = role
        .parse()
        .map_err(|_| ApiError::bad_request("`role` must be \"admin\" or \"installer\""))?;
    let new = NewPeer {
        name: name.clone(),
        role,
        expires,
        public_key,
    };
    let config = api.config().clone();
    let added = blocking(move || gatehouse_tunnel::admin::add_peer(&config, &new))
        .await?
        .map_err(peer_err)?;
    let text = added.client.to_text();
    let qr_svg = match added.client.to_svg_qr(QR_SIZE_PX) {
        Ok(svg) => Value::String(svg),
        Err(e) => {
            tracing::warn!(peer = %name, error = %e, "no QR code for the new peer's config");
            Value::Null
        }
    };
    let rows = peer_rows(api.config().clone()).await?;
    let peer = rows
        .iter()
        .find(|r| r.name == name)
        .map(|r| peer_view(r, tz))
        .ok_or_else(|| ApiError::internal(format!("the new peer {name:?} is not in the store")))?;
    tracing::info!(peer = %name, %role, by = %caller.admin.name, applied = applied_str(added.applied), "VPN peer added");
    created(json!({
        "peer": peer,
        "config": text,
        "qr_svg": qr_svg,
        "filename": format!("{name}.conf"),
        "private_key_included": added.client.private_key.is_some(),
        "applied": applied_str(added.applied),
    }))
}

async fn set_peer_disabled(
    api: AdminApi,
    caller: Caller,
    name: String,
    disabled: bool,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangePeers)?;
    let tz = api.tz();
    let config = api.config().clone();
    let target = name.clone();
    let applied =
        blocking(move || gatehouse_tunnel::admin::set_disabled(&config, &target, disabled))
            .await?
            .map_err(peer_err)?;
    let rows = peer_rows(api.config().clone()).await?;
    let peer = rows
        .iter()
        .find(|r| r.name == name)
        .map(|r| peer_view(r, tz))
        .ok_or_else(|| peer_err(AdminError::NoSuchPeer(name.clone())))?;
    tracing::info!(peer = %name, disabled, by = %caller.admin.name, "VPN peer changed");
    ok(json!({ "peer": peer, "applied": applied_str(applied) }))
}

/// `POST /api/v1/peers/{name}/disable`.
pub async fn disable_peer(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_peer_disabled(api, caller, name, true).await
}

/// `POST /api/v1/peers/{name}/enable`.
pub async fn enable_peer(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_peer_disabled(api, caller, name, false).await
}

/// `DELETE /api/v1/peers/{name}`.
pub async fn remove_peer(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangePeers)?;
    let config = api.config().clone();
    let target = name.clone();
    let applied = blocking(move || gatehouse_tunnel::admin::remove_peer(&config, &target))
        .await?
        .map_err(peer_err)?;
    tracing::info!(peer = %name, by = %caller.admin.name, "VPN peer removed");
    ok(json!({ "name": name, "removed": true, "applied": applied_str(applied) }))
}

// ---- holidays ----------------------------------------------------------------------

const DATE_WHAT: &str = "a date like 2026-12-25";

fn parse_date(field: &str, s: &str) -> Result<Date, ApiError> {
    Date::parse(s.trim(), format_description!("[year]-[month]-[day]"))
        .map_err(|_| ApiError::bad_request(format!("`{field}` must be {DATE_WHAT}")))
}

fn date_str(d: Date) -> String {
    d.format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_else(|_| d.to_string())
}

/// `GET /api/v1/holidays`: by date.
pub async fn list_holidays(
    State(api): State<AdminApi>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadLevels)?;
    let holidays = api.store(|s, _| Ok(s.list_holidays()?)).await?;
    ok(json!(holidays
        .iter()
        .map(|h| json!({ "date": date_str(h.date), "name": h.name }))
        .collect::<Vec<_>>()))
}

/// `POST /api/v1/holidays {"date", "name"}`.
pub async fn add_holiday(
    State(api): State<AdminApi>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeLevels)?;
    let mut f = Fields::read(body).await?;
    let date: String = f.req("date", DATE_WHAT)?;
    let name: String = f.req("name", "text")?;
    f.finish(&["date", "name"])?;
    let date = parse_date("date", &date)?;
    let name = name.trim().to_owned();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "`name` must not be empty (e.g. \"Christmas\")",
        ));
    }
    let stored = name.clone();
    api.store(move |s, _| Ok(s.add_holiday(date, &stored)?))
        .await?;
    api.changed().await;
    created(json!({ "date": date_str(date), "name": name }))
}

/// `DELETE /api/v1/holidays/{date}`.
pub async fn remove_holiday(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(date): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeLevels)?;
    let date = Date::parse(date.trim(), format_description!("[year]-[month]-[day]"))
        .map_err(|_| ApiError::bad_request(format!("the date in the path must be {DATE_WHAT}")))?;
    api.store(move |s, _| Ok(s.remove_holiday(date)?)).await?;
    api.changed().await;
    ok(json!({ "date": date_str(date), "removed": true }))
}

// ---- CSV ---------------------------------------------------------------------------

/// One CSV cell (RFC 4180), neutralised against formula injection.
fn csv_cell(out: &mut String, cell: &str) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || cell.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

fn csv_line<'a>(out: &mut String, cells: impl IntoIterator<Item = &'a str>) {
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, cell);
    }
    out.push_str("\r\n");
}

/// A JSON view's value as a cell: text as is, numbers and booleans written out, null
/// empty.
fn cell_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A CSV of `views` with one column per `(header, JSON pointer)`.
fn csv_of(columns: &[(&str, &str)], views: &[Value]) -> String {
    let mut out = String::with_capacity(64 * (views.len() + 1));
    csv_line(&mut out, columns.iter().map(|(h, _)| *h));
    for v in views {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, ptr)| cell_text(v.pointer(ptr)))
            .collect();
        csv_line(&mut out, cells.iter().map(String::as_str));
    }
    out
}

/// The reply: the CSV as a download, with the truncation headers when `next` is set.
fn csv_reply(body: String, filename: &str, next: Option<(&'static str, i64)>) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some((name, cursor)) = next {
        h.insert("x-truncated", HeaderValue::from_static("true"));
        h.insert(name, HeaderValue::from(cursor));
    }
    r
}

/// `limit` of a CSV export: 1 to [`CSV_MAX_ROWS`], that if absent.
fn csv_limit(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    let what = format!("a number from 1 to {CSV_MAX_ROWS}");
    let limit = num_param::<usize>(q, "limit", &what)?.unwrap_or(CSV_MAX_ROWS);
    if !(1..=CSV_MAX_ROWS).contains(&limit) {
        return Err(ApiError::bad_request(format!("`limit` must be {what}")));
    }
    Ok(limit)
}

fn today(api: &AdminApi) -> String {
    let now = api.now();
    date_str(now.checked_to_offset(api.tz()).unwrap_or(now).date())
}

const EVENT_COLUMNS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("seq", "/seq"),
    ("received_at", "/received_at"),
    ("time", "/time"),
    ("source", "/source"),
    ("source_kind", "/source_kind"),
    ("kind", "/kind"),
    ("severity", "/severity"),
    ("lifecycle", "/lifecycle"),
    ("ended_at", "/ended_at"),
    ("camera", "/camera"),
    ("zone", "/zone"),
    ("device", "/device"),
    ("message", "/message"),
    ("snapshot_url", "/snapshot_url"),
    ("clip_url", "/clip_url"),
    ("grouped_into", "/grouped_into"),
    ("acked_by", "/ack/by"),
    ("acked_at", "/ack/at"),
    ("ack_comment", "/ack/comment"),
];

/// `GET /api/v1/events.csv?...`: as `GET /api/v1/events` (newest first; with `after`,
/// oldest first from there).
pub async fn events_csv(
    State(api): State<AdminApi>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadEvents)?;
    let tz = api.tz();
    let q = only_params(q, &EVENT_PARAMS)?;
    let limit = csv_limit(&q)?;
    let mut filter = event_filter(&q, tz, MAX_PAGE)?;
    let forward = filter.after_seq.is_some();
    let mut events = Vec::new();
    // One more than asked for tells whether the file is complete.
    while events.len() <= limit {
        let page_filter = filter.clone();
        let page = api
            .store(move |s, _| Ok(s.list_events(&page_filter)?))
            .await?;
        let full = page.len() >= MAX_PAGE;
        match (forward, page.last()) {
            (true, Some(e)) => filter.after_seq = Some(e.seq),
            (false, Some(e)) => filter.before_seq = Some(e.seq),
            (_, None) => {}
        }
        events.extend(page);
        if !full {
            break;
        }
    }
    let next = if events.len() > limit {
        events.truncate(limit);
        events.last().map(|e| {
            if forward {
                ("x-next-after", e.seq)
            } else {
                ("x-next-before", e.seq)
            }
        })
    } else {
        None
    };
    let views: Vec<Value> = events.iter().map(|e| event_view(e, tz)).collect();
    Ok(csv_reply(
        csv_of(EVENT_COLUMNS, &views),
        &format!("events-{}.csv", today(&api)),
        next,
    ))
}

const LOG_COLUMNS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("at", "/at"),
    ("gate", "/gate"),
    ("gate_name", "/gate_name"),
    ("person", "/person"),
    ("person_name", "/person_name"),
    ("card", "/card"),
    ("allowed", "/allowed"),
    ("reason", "/reason"),
    ("source", "/source"),
    ("gate_seq", "/gate_seq"),
];

/// `GET /api/v1/access/log.csv?...`: as `GET /api/v1/access/log` (oldest first).
pub async fn access_log_csv(
    State(api): State<AdminApi>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadLog)?;
    let tz = api.tz();
    let max = u32::try_from(CSV_MAX_ROWS).unwrap_or(u32::MAX);
    let query = LogQuery::parse(q, tz, max, max)?;
    let limit = query.limit as usize;
    let mut after = query.after;
    let mut rows = Vec::new();
    while rows.len() <= limit {
        let page_query = query.clone();
        let page = api
            .store(move |s, _| Ok(s.log_query(&page_query.filter(s, after, MAX_QUERY_LIMIT)?)?))
            .await?;
        let full = page.len() >= MAX_QUERY_LIMIT as usize;
        if let Some(r) = page.last() {
            after = Some(r.id);
        }
        rows.extend(page);
        if !full {
            break;
        }
    }
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| ("x-next-after", r.id))
    } else {
        None
    };
    let (gates, people) = api
        .store(|s, _| {
            let gates = names(s.list_gates()?, |g| (g.gate.id, g.gate.name));
            Ok((gates, people_names(s)?))
        })
        .await?;
    let views: Vec<Value> = rows
        .iter()
        .map(|r| log_view(r, &gates, &people, tz))
        .collect();
    Ok(csv_reply(
        csv_of(LOG_COLUMNS, &views),
        &format!("access-log-{}.csv", today(&api)),
        next,
    ))
}

// ---- resolve -----------------------------------------------------------------------

/// `POST /api/v1/events/{id}/resolve {"comment"?}` (the body may be empty).
pub async fn resolve_event(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    caller.may(Action::AckEvents)?;
    let id = path_event(&id)?;
    let mut f = optional_fields(body).await?;
    let comment: Option<String> = f.opt("comment", "text")?;
    f.finish(&["comment"])?;
    let limit = gatehouse_alerts::model::limits::MESSAGE;
    if comment.as_ref().is_some_and(|c| c.len() > limit) {
        return Err(ApiError::bad_request(format!(
            "`comment` must be at most {limit} bytes"
        )));
    }
    let (now, tz) = (api.now(), api.tz());
    let by = caller.admin.name.clone();
    let out = api
        .store(move |s, _| Ok(s.resolve_event(id, &by, comment.as_deref(), now)?))
        .await?;
    if out.resolved_deliveries > 0 {
        api.events_changed();
    }
    if out.ended_now || out.acked_now {
        tracing::info!(event = %id, by = %caller.admin.name, ended_now = out.ended_now, "event resolved");
    }
    ok(json!({
        "id": id,
        "resolved": true,
        "ended_now": out.ended_now,
        "acked_now": out.acked_now,
        "event": event_view(&out.event, tz),
    }))
}

// ---- learn mode --------------------------------------------------------------------

fn req_ref(f: &mut Fields, field: &str, what: &str) -> Result<Ref, ApiError> {
    match f.take(field) {
        Some(v) => Ref::from_value(field, v, what),
        None => Err(ApiError::bad_request(format!(
            "`{field}` is required (the {what}'s id or name)"
        ))),
    }
}

/// What one look at the access log found.
enum Learned {
    /// Enrolled as this card.
    Card(Value),
    /// Nothing yet; look again after this row id.
    Waiting(i64),
}

/// Reads the unknown-card denies at `gate` after row `after` and enrols the first one
/// decided online (an offline upload may be older than the request).
fn learn_step(
    s: &Store,
    gate: i64,
    after: i64,
    new: &NewCard,
    tz: UtcOffset,
) -> Result<Learned, ApiError> {
    let rows = s.log_query(&LogFilter {
        after_id: Some(after),
        gate: Some(gate),
        reason: Some(Reason::UnknownCard),
        limit: 100,
        ..LogFilter::default()
    })?;
    let mut cursor = after;
    for r in rows {
        cursor = r.id;
        let (LogSource::Online, Some(hash)) = (r.source, r.card_hash) else {
            continue;
        };
        let id = match s.add_card_by_hash(&hash, new) {
            Ok(id) => id,
            Err(StoreError::CardExists { existing }) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "the card presented was enrolled meanwhile as card {existing}; \
                         present another card, then try again"
                    ),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let card = s.card(id)?;
        return Ok(Learned::Card(card_view(&card, &people_names(s)?, tz)));
    }
    Ok(Learned::Waiting(cursor))
}

/// `POST /api/v1/cards/learn {"gate", "person", "label"?, "wait_s"?}`.
pub async fn learn_card(
    State(api): State<AdminApi>,
    caller: Caller,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    caller.may(Action::ChangeCards)?;
    let tz = api.tz();
    let mut f = Fields::read(body).await?;
    let gate = req_ref(&mut f, "gate", "gate")?;
    let person = req_ref(&mut f, "person", "person")?;
    let label: Option<String> = f.opt("label", "text")?;
    let wait_what = format!("a number of seconds from 1 to {LEARN_MAX_WAIT_S}");
    let wait_s: u64 = f.opt("wait_s", &wait_what)?.unwrap_or(LEARN_DEFAULT_WAIT_S);
    f.finish(&["gate", "person", "label", "wait_s"])?;
    if !(1..=LEARN_MAX_WAIT_S).contains(&wait_s) {
        return Err(ApiError::bad_request(format!(
            "`wait_s` must be {wait_what}"
        )));
    }
    // Resolve both first (404s), and where the log ends now.
    let (gate_id, gate_name, person_id, mut after) = api
        .store(move |s, _| {
            let g = gate_id(s, &gate)?;
            let p = person_id(s, &person)?;
            let last = s.log_tail(1)?.last().map_or(0, |r| r.id);
            Ok((g, s.gate(g)?.gate.name, p, last))
        })
        .await?;
    let new = NewCard {
        person: person_id,
        master: false,
        validity: Validity::default(),
        label,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s);
    loop {
        let step_new = new.clone();
        let step = api
            .store(move |s, _| learn_step(s, gate_id, after, &step_new, tz))
            .await?;
        match step {
            Learned::Card(card) => {
                api.changed().await;
                tracing::info!(card = %card["id"], person = person_id, gate = %gate_name, by = %caller.admin.name, "card enrolled by learn mode");
                return created(card);
            }
            Learned::Waiting(cursor) => after = cursor,
        }
        if tokio::time::Instant::now() + LEARN_POLL > deadline {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "no unknown card was presented at gate {gate_name} within {wait_s} s; \
                     present the card, then try again"
                ),
            ));
        }
        tokio::time::sleep(LEARN_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn line(cells: &[&str]) -> String {
        let mut out = String::new();
        csv_line(&mut out, cells.iter().copied());
        out
    }

    #[test]
    fn csv_quotes_and_neutralises_formulas() {
        assert_eq!(line(&["a", "b c", ""]), "a,b c,\r\n");
        assert_eq!(
            line(&["x,y", "say \"hi\"", "two\nlines"]),
            "\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n"
        );
        for f in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            let l = line(&[f]);
            assert!(l.starts_with("\"'"), "{f:?} -> {l:?}");
        }
        assert_eq!(
            line(&["=HYPERLINK(\"x\")"]),
            "\"'=HYPERLINK(\"\"x\"\")\"\r\n"
        );
        // Only the first character matters.
        assert_eq!(line(&["a=b"]), "a=b\r\n");
    }

    #[test]
    fn csv_columns_follow_json_pointers() {
        let views = vec![
            json!({"id": 1, "ack": {"by": "alice"}, "ok": true, "none": null}),
            json!({"id": 2, "ack": null, "ok": false}),
        ];
        let cols = [
            ("id", "/id"),
            ("acked_by", "/ack/by"),
            ("ok", "/ok"),
            ("none", "/none"),
        ];
        assert_eq!(
            csv_of(&cols, &views),
            "id,acked_by,ok,none\r\n1,alice,true,\r\n2,,false,\r\n"
        );
    }
}
