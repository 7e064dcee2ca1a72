//! The events pipeline's metrics, and `GET /metrics` in the Prometheus text exposition
//! format, version 0.0.4 ("Exposition formats", <https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>):
//! `# HELP` and `# TYPE` lines, then one `name{label="value",...} number` line per
//! series; label values escape `\`, `"` and newline as `\\`, `\"` and `\n`; HELP text
//! escapes `\` and newline; a histogram is cumulative `_bucket{le="..."}` series ending in
//! `le="+Inf"`, then `_sum` and `_count`.
//!
//! What is exported:
//! - `gatehouse_events_in_total{ingress,source_kind,outcome}`: events accepted since the
//!   hub started (`new`, `duplicate`: a retransmission, `updated`: a lifecycle update).
//! - `gatehouse_events_rejected_total{ingress,reason}`: events refused, by why.
//! - `gatehouse_deliveries_total{receiver,status}`: the outbox by receiver and status,
//!   read from the store at each scrape (the durable truth, across restarts).
//! - `gatehouse_delivery_queue_depth{receiver}`: pending deliveries per live receiver.
//! - `gatehouse_delivery_attempts_total{receiver,outcome}` and
//!   `gatehouse_delivery_latency_seconds{receiver}` (a histogram): attempts since start.
//! - `gatehouse_gate_input_dropped_total{reason}`: what the gate transports refused
//!   ([`crate::drops`]).
//! - The LoRa network server's counters, when it runs ([`crate::lora::LoraCounters::render`]).
//!
//! Receivers are labelled by name (a removed receiver's history and a new one of the same
//! name add up). Who may scrape: callers on loopback, or an admin or operator session.

use super::{Accepted, Ingress, StoreCallError, StoreConn};
use crate::access::AccessService;
use crate::admin::auth::{Action, Caller};
use crate::admin::{AdminApi, ApiError};
use crate::drops::DropStats;
use crate::events::EventService;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use gatehouse_alerts::model::SourceKind;
use gatehouse_store::events::{DeliveryCount, IngestOutcome, QueueDepth};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The exposition format's media type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the delivery latency histogram's buckets: from a loopback
/// answer to the default request timeout (10 s) and beyond.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What became of an accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InOutcome {
    New,
    /// A retransmission that changed nothing.
    Duplicate,
    /// A lifecycle update folded into a stored event.
    Updated,
}

impl InOutcome {
    pub fn of(a: &Accepted) -> InOutcome {
        match a.outcome {
            IngestOutcome::New { .. } => InOutcome::New,
            _ if a.duplicate => InOutcome::Duplicate,
            _ => InOutcome::Updated,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InOutcome::New => "new",
            InOutcome::Duplicate => "duplicate",
            InOutcome::Updated => "updated",
        }
    }
}

/// How one delivery attempt ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttemptResult {
    Delivered,
    /// Failed; another attempt is scheduled.
    Failed,
    /// Failed for the last time.
    Dead,
}

impl AttemptResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Failed => "failed",
            AttemptResult::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bucket of [`LATENCY_BUCKETS`] (not cumulative), then the overflow.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += secs;
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Debug, Default)]
struct Counters {
    events_in: BTreeMap<(Ingress, &'static str, InOutcome), u64>,
    rejected: BTreeMap<(Ingress, &'static str), u64>,
    attempts: BTreeMap<(String, AttemptResult), u64>,
    latency: BTreeMap<String, Histogram>,
}

/// The pipeline's in-memory counters (since the hub started). Cheap to update: one
/// uncontended lock per event or attempt, never held across an `.await`.
#[derive(Debug, Default)]
pub struct EventMetrics {
    counters: Mutex<Counters>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters stay meaningful after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventMetrics {
    pub fn count_in(&self, ingress: Ingress, source_kind: SourceKind, outcome: InOutcome) {
        *lock(&self.counters)
            .events_in
            .entry((ingress, source_kind.as_str(), outcome))
            .or_default() += 1;
    }

    /// Counts an event refused for `reason` (a short stable label).
    pub fn count_rejected(&self, ingress: Ingress, reason: &'static str) {
        *lock(&self.counters)
            .rejected
            .entry((ingress, reason))
            .or_default() += 1;
    }

    /// Counts one recorded delivery attempt to `receiver` (its name) and its latency.
    pub fn count_attempt(&self, receiver: &str, result: AttemptResult, latency: Duration) {
        let mut c = lock(&self.counters);
        *c.attempts.entry((receiver.to_owned(), result)).or_default() += 1;
        c.latency
            .entry(receiver.to_owned())
            .or_default()
            .observe(latency.as_secs_f64());
    }

    /// Events accepted so far with these labels.
    pub fn events_in(&self, ingress: Ingress, source_kind: SourceKind, outcome: InOutcome) -> u64 {
        lock(&self.counters)
            .events_in
            .get(&(ingress, source_kind.as_str(), outcome))
            .copied()
            .unwrap_or(0)
    }

    /// Events refused so far with these labels.
    pub fn rejected(&self, ingress: Ingress, reason: &str) -> u64 {
        lock(&self.counters)
            .rejected
            .iter()
            .filter(|((i, r), _)| *i == ingress && *r == reason)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Attempts to `receiver` recorded so far with this result.
    pub fn attempts(&self, receiver: &str, result: AttemptResult) -> u64 {
        lock(&self.counters)
            .attempts
            .get(&(receiver.to_owned(), result))
            .copied()
            .unwrap_or(0)
    }

    /// The exposition text: these counters, the store's `durable` counts and the gate
    /// transports' `drops`.
    pub fn render(&self, durable: &DurableCounts, drops: Option<DropStats>) -> String {
        let c = lock(&self.counters);
        let mut out = Exposition::default();

        out.family(
            "gatehouse_events_in_total",
            "counter",
            "Events accepted since the hub started, by way in, source kind and outcome.",
        );
        for ((ingress, kind, outcome), n) in &c.events_in {
            out.sample(
                "gatehouse_events_in_total",
                &[
                    ("ingress", ingress.as_str()),
                    ("source_kind", kind),
                    ("outcome", outcome.as_str()),
                ],
                *n as f64,
            );
        }

        out.family(
            "gatehouse_events_rejected_total",
            "counter",
            "Events refused since the hub started, by way in and reason.",
        );
        for ((ingress, reason), n) in &c.rejected {
            out.sample(
                "gatehouse_events_rejected_total",
                &[("ingress", ingress.as_str()), ("reason", reason)],
                *n as f64,
            );
        }

        out.family(
            "gatehouse_deliveries_total",
            "gauge",
            "Deliveries in the outbox by receiver and status (from the database).",
        );
        let mut by_status: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for d in &durable.deliveries {
            *by_status
                .entry((d.receiver_name.as_str(), d.status.as_str()))
                .or_default() += d.count;
        }
        for ((receiver, status), n) in &by_status {
            out.sample(
                "gatehouse_deliveries_total",
                &[("receiver", receiver), ("status", status)],
                *n as f64,
            );
        }

        out.family(
            "gatehouse_delivery_queue_depth",
            "gauge",
            "Pending deliveries per live receiver.",
        );
        let mut depth: BTreeMap<&str, u64> = BTreeMap::new();
        for q in &durable.queue {
            *depth.entry(q.receiver_name.as_str()).or_default() += q.pending;
        }
        for (receiver, n) in &depth {
            out.sample(
                "gatehouse_delivery_queue_depth",
                &[("receiver", receiver)],
                *n as f64,
            );
        }

        out.family(
            "gatehouse_delivery_attempts_total",
            "counter",
            "Delivery attempts since the hub started, by receiver and outcome.",
        );
        for ((receiver, result), n) in &c.attempts {
            out.sample(
                "gatehouse_delivery_attempts_total",
                &[("receiver", receiver), ("outcome", result.as_str())],
                *n as f64,
            );
        }

        out.family(
            "gatehouse_delivery_latency_seconds",
            "histogram",
            "Time from the start of a delivery attempt to the receiver's answer or failure.",
        );
        for (receiver, h) in &c.latency {
            let mut cumulative = 0u64;
            for (bound, n) in LATENCY_BUCKETS.iter().zip(h.counts.iter()) {
                cumulative += n;
                out.sample(
                    "gatehouse_delivery_latency_seconds_bucket",
                    &[("receiver", receiver), ("le", &format_float(*bound))],
                    cumulative as f64,
                );
            }
            out.sample(
                "gatehouse_delivery_latency_seconds_bucket",
                &[("receiver", receiver), ("le", "+Inf")],
                h.count() as f64,
            );
            out.sample(
                "gatehouse_delivery_latency_seconds_sum",
                &[("receiver", receiver)],
                h.sum,
            );
            out.sample(
                "gatehouse_delivery_latency_seconds_count",
                &[("receiver", receiver)],
                h.count() as f64,
            );
        }

        if let Some(d) = drops {
            out.family(
                "gatehouse_gate_input_dropped_total",
                "counter",
                "Gate requests and frames refused or dropped since the hub started, by reason.",
            );
            for (reason, n) in [
                ("unknown_gate", d.unknown_gate),
                ("bad_auth", d.bad_auth),
                ("ip_refused", d.ip_refused),
                ("replayed", d.replayed),
                ("malformed", d.malformed),
                ("oversize", d.oversize),
                ("unsupported", d.unsupported),
                ("not_durable", d.not_durable),
            ] {
                out.sample(
                    "gatehouse_gate_input_dropped_total",
                    &[("reason", reason)],
                    n as f64,
                );
            }
        }
        out.text
    }
}

/// What `/metrics` reads from the store at each scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableCounts {
    pub deliveries: Vec<DeliveryCount>,
    pub queue: Vec<QueueDepth>,
}

/// Text being written in the exposition format.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(k);
                self.text.push_str("=\"");
                push_label_value(&mut self.text, v);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&format_float(value));
        self.text.push('\n');
    }
}

/// A label value escaped as the format requires.
fn push_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value: integers without a fraction, `+Inf`/`-Inf`/`NaN` as the format spells
/// them.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

// ---- the route -----------------------------------------------------------------------

#[derive(Clone)]
struct Scrape {
    events: EventService,
    access: AccessService,
    store: StoreConn,
}

/// `GET /metrics`, with the admin API as state (for the session check).
pub(crate) fn routes(
    events: EventService,
    admin: AdminApi,
    access: AccessService,
    store: StoreConn,
) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .layer(Extension(Scrape {
            events,
            access,
            store,
        }))
        .with_state(admin)
}

async fn scrape(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(s): Extension<Scrape>,
    lora: Option<Extension<std::sync::Arc<crate::lora::LoraCounters>>>,
    caller: Result<Caller, ApiError>,
) -> Response {
    if !peer.ip().to_canonical().is_loopback() {
        let allowed = caller.and_then(|c| c.may(Action::ReadEvents));
        if let Err(e) = allowed {
            if e.status() == StatusCode::UNAUTHORIZED {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "/metrics is for scrapers on the box itself (loopback) or an admin or \
                     operator session: send `Authorization: Bearer <session token>` (POST \
                     /api/v1/auth/login)",
                )
                .into_response();
            }
            return e.into_response();
        }
    }
    let durable = s
        .store
        .call(|st| {
            Ok(DurableCounts {
                deliveries: st.delivery_counts()?,
                queue: st.queue_depth()?,
            })
        })
        .await;
    let durable = match durable {
        Ok(d) => d,
        Err(e) => return unavailable(&e),
    };
    let mut text = s
        .events
        .metrics()
        .render(&durable, Some(s.access.drops().stats()));
    // The LoRa network server's counters, when it runs (crate::lora).
    if let Some(Extension(lora)) = lora {
        text.push_str(&lora.render());
    }
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn unavailable(e: &StoreCallError) -> Response {
    tracing::error!(error = %e, "reading delivery counts for /metrics");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the event store cannot be read right now; scrape again later",
    )
    .with_retry_after(5)
    .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use gatehouse_alerts::model::DeliveryStatus;

    #[test]
    fn exposition_escapes_labels_and_accumulates_buckets() {
        let m = EventMetrics::default();
        m.count_in(Ingress::Webhook, SourceKind::Nvr, InOutcome::New);
        m.count_in(Ingress::Webhook, SourceKind::Nvr, InOutcome::New);
        m.count_rejected(Ingress::Webhook, "unknown_key");
        m.count_attempt(
            "ops \"hook\"\\\n",
            AttemptResult::Delivered,
            Duration::from_millis(3),
        );
        m.count_attempt(
            "ops \"hook\"\\\n",
            AttemptResult::Failed,
            Duration::from_secs(60),
        );
        let durable = DurableCounts {
            deliveries: vec![
                DeliveryCount {
                    receiver: 2,
                    receiver_name: "a".into(),
                    status: DeliveryStatus::Delivered,
                    count: 3,
                },
                // A removed receiver whose name was taken again: summed.
                DeliveryCount {
                    receiver: 5,
                    receiver_name: "a".into(),
                    status: DeliveryStatus::Delivered,
                    count: 4,
                },
            ],
            queue: vec![QueueDepth {
                receiver: 5,
                receiver_name: "a".into(),
                pending: 1,
                oldest_pending: None,
            }],
        };
        let text = m.render(&durable, Some(DropStats::default()));
        for line in [
            "# TYPE gatehouse_events_in_total counter",
            "gatehouse_events_in_total{ingress=\"webhook\",source_kind=\"nvr\",outcome=\"new\"} 2",
            "gatehouse_events_rejected_total{ingress=\"webhook\",reason=\"unknown_key\"} 1",
            "gatehouse_deliveries_total{receiver=\"a\",status=\"delivered\"} 7",
            "gatehouse_delivery_queue_depth{receiver=\"a\"} 1",
            "gatehouse_delivery_attempts_total{receiver=\"ops \\\"hook\\\"\\\\\\n\",outcome=\"failed\"} 1",
            "gatehouse_delivery_latency_seconds_bucket{receiver=\"ops \\\"hook\\\"\\\\\\n\",le=\"0.005\"} 1",
            "gatehouse_delivery_latency_seconds_bucket{receiver=\"ops \\\"hook\\\"\\\\\\n\",le=\"30\"} 1",
            "gatehouse_delivery_latency_seconds_bucket{receiver=\"ops \\\"hook\\\"\\\\\\n\",le=\"+Inf\"} 2",
            "gatehouse_delivery_latency_seconds_count{receiver=\"ops \\\"hook\\\"\\\\\\n\"} 2",
            "# TYPE gatehouse_delivery_latency_seconds histogram",
            "gatehouse_gate_input_dropped_total{reason=\"bad_auth\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{...} value` with a number for the value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(
                value == "+Inf" || value.parse::<f64>().is_ok(),
                "bad value in {l:?}"
            );
        }
        assert_eq!(
            m.events_in(Ingress::Webhook, SourceKind::Nvr, InOutcome::New),
            2
        );
        assert_eq!(m.rejected(Ingress::Webhook, "unknown_key"), 1);
    }

    #[tokio::test]
    async fn only_loopback_or_a_session_may_scrape() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventService::open(dir.path(), time::UtcOffset::UTC).unwrap();
        let access = AccessService::open(dir.path(), time::UtcOffset::UTC)
            .await
            .unwrap();
        let s = Scrape {
            events: events.clone(),
            access: access.clone(),
            store: StoreConn::new(dir.path()),
        };
        let no_session = || Err(ApiError::new(StatusCode::UNAUTHORIZED, "no session"));
        for (peer, status) in [
            ("192.0.2.7:4000", StatusCode::UNAUTHORIZED),
            ("[2001:db8::1]:4000", StatusCode::UNAUTHORIZED),
            ("127.0.0.1:4000", StatusCode::OK),
            ("127.3.2.1:4000", StatusCode::OK),
            ("[::1]:4000", StatusCode::OK),
            ("[::ffff:127.0.0.1]:4000", StatusCode::OK),
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            let r = scrape(ConnectInfo(peer), Extension(s.clone()), None, no_session()).await;
            assert_eq!(r.status(), status, "{peer}");
            let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            let text = String::from_utf8(body.to_vec()).unwrap();
            if status == StatusCode::OK {
                assert!(
                    text.contains("# TYPE gatehouse_deliveries_total gauge"),
                    "{text}"
                );
            } else {
                assert!(
                    text.contains("loopback") && text.contains("session"),
                    "{text}"
                );
            }
        }
        tokio::task::spawn_blocking(move || {
            events.shutdown();
            access.shutdown();
        })
        .await
        .unwrap();
    }

    #[test]
    fn floats_are_spelled_as_the_format_wants() {
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(0.25), "0.25");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }
}
