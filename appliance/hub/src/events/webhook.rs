//! `POST /api/v1/events`: the event webhook for NVRs and other outside systems.
//!
//! A request carries its source's API key (`Authorization: Bearer <key>` or
//! `X-Api-Key: <key>`; the key comes from `gatehouse source add`) and one event as JSON
//! ([`gatehouse_alerts::ingest`] documents the body). Answers, all JSON:
//!
//! | status | body | when |
//! |---|---|---|
//! | 201 | `{"id", "seq"}` | a new event, committed with its deliveries |
//! | 200 | `{"id", "seq", "duplicate": true}` | a retransmission (same source and `id`) |
//! | 200 | `{"id", "seq", "updated": true}` | a lifecycle update folded into the event |
//! | 400 | `{"error"}` | the body is not a valid event; the text says what to fix |
//! | 401 | `{"error"}` | no key, or a key no source has |
//! | 403 | `{"error"}` | the source is disabled |
//! | 413 | `{"error"}` | the body is over [`limits::WEBHOOK_BODY`] bytes |
//! | 503 | `{"error"}` + `Retry-After` | the store cannot commit, or the hub is stopping |
//!
//! Promises:
//! - Accepted = committed: 201 (or 200) only once the event is in the database.
//! - The body is read only after the key is checked, and never beyond the limit (a
//!   `Content-Length` over it is refused before reading).
//! - A source's key is looked up by its hash ([`Store::event_source_by_key`]); the answer
//!   is cached at most [`SOURCE_CACHE_TTL`], so a disabled or removed source is refused
//!   within that time. The key itself is not kept, logged or repeated.
//! - Every refusal is counted in the metrics (`events_rejected_total`) by reason.
//!
//! [`Store::event_source_by_key`]: gatehouse_store::Store::event_source_by_key

use super::{EventService, Ingress, StoreConn, SubmitError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use gatehouse_alerts::ingest::parse_webhook;
use gatehouse_alerts::model::limits;
use gatehouse_store::events::{api_key_hash, EventSource};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How long a key lookup is trusted before the store is asked again.
pub const SOURCE_CACHE_TTL: Duration = Duration::from_secs(2);
/// Keys remembered at most (then the cache starts over).
const SOURCE_CACHE_MAX: usize = 1024;
/// What `Retry-After` says when the store or the hub cannot take the event now.
const RETRY_AFTER_S: u64 = 5;
/// The header a sender may use instead of `Authorization: Bearer`.
pub const API_KEY_HEADER: &str = "x-api-key";

#[derive(Clone)]
struct Webhook {
    events: EventService,
    store: StoreConn,
    cache: Arc<Mutex<SourceCache>>,
}

/// Key hash -> its source and when it was looked up.
type SourceCache = HashMap<[u8; 32], (EventSource, Instant)>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A cache: any state it is left in after a panic is still a valid cache.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The webhook route.
pub(crate) fn routes(events: EventService, store: StoreConn) -> Router {
    Router::new()
        .route("/api/v1/events", post(receive))
        .with_state(Webhook {
            events,
            store,
            cache: Arc::new(Mutex::new(HashMap::new())),
        })
}

/// A refusal: its status, the text for the sender, and the metrics reason.
struct Refusal {
    status: StatusCode,
    message: String,
    reason: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            reason,
        }
    }

    fn into_response(self, events: &EventService, counted: bool) -> Response {
        if !counted {
            events
                .metrics()
                .count_rejected(Ingress::Webhook, self.reason);
        }
        let mut r = json_reply(self.status, &json!({ "error": self.message }));
        match self.status {
            StatusCode::UNAUTHORIZED => {
                // RFC 6750 section 3: a 401 names the scheme it wants.
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"gatehouse events\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
            }
            _ => {}
        }
        r
    }
}

fn json_reply(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const HOW_TO_GET_A_KEY: &str = "an admin creates a source and its key on the box with \
    `gatehouse source add NAME` (or rotates a lost one)";

/// The key the request presents, if any.
fn presented_key(headers: &HeaderMap) -> Result<&str, Refusal> {
    let no_key = |why: &str| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "no_key",
            format!(
                "{why}: send the source's API key as `Authorization: Bearer <key>` or \
                 `X-Api-Key: <key>`; {HOW_TO_GET_A_KEY}"
            ),
        )
    };
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| no_key("the Authorization header is not text"))?;
        return match v.split_once(' ') {
            Some((scheme, key))
                if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() =>
            {
                Ok(key.trim())
            }
            _ => Err(no_key("the Authorization header is not `Bearer <key>`")),
        };
    }
    match headers.get(API_KEY_HEADER) {
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() => Ok(k.trim()),
            _ => Err(no_key("the X-Api-Key header is empty or not text")),
        },
        None => Err(no_key("this needs an API key")),
    }
}

impl Webhook {
    /// The source whose key is `key`, from the cache if looked up within the TTL.
    async fn source(&self, key: &str) -> Result<Option<EventSource>, Refusal> {
        let hash = api_key_hash(key);
        if let Some((source, at)) = lock(&self.cache).get(&hash) {
            if at.elapsed() < SOURCE_CACHE_TTL {
                return Ok(Some(source.clone()));
            }
        }
        let key = key.to_owned();
        let found = self
            .store
            .call(move |s| s.event_source_by_key(&key))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "looking up an event source's key");
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store",
                    "the event store cannot be read right now; retry later",
                )
            })?;
        // Unknown keys are not remembered: guessing keys cannot push real ones out.
        if let Some(source) = &found {
            let mut cache = lock(&self.cache);
            if cache.len() >= SOURCE_CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash, (source.clone(), Instant::now()));
        }
        Ok(found)
    }
}

async fn receive(State(w): State<Webhook>, headers: HeaderMap, body: Body) -> Response {
    match accept(&w, &headers, body).await {
        Ok(r) => r,
        Err((refusal, counted)) => refusal.into_response(&w.events, counted),
    }
}

/// The refusal, and whether it was already counted (by [`EventService::submit`]).
type Refused = (Refusal, bool);

async fn accept(w: &Webhook, headers: &HeaderMap, body: Body) -> Result<Response, Refused> {
    let key = presented_key(headers).map_err(|r| (r, false))?;
    let source = w.source(key).await.map_err(|r| (r, false))?;
    let Some(source) = source else {
        return Err((
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unknown_key",
                format!(
                    "no event source has this API key (it may have been rotated or the \
                     source removed); {HOW_TO_GET_A_KEY}"
                ),
            ),
            false,
        ));
    };
    if !source.enabled {
        return Err((
            Refusal::new(
                StatusCode::FORBIDDEN,
                "disabled_source",
                format!(
                    "event source {:?} is disabled; an admin enables it with `gatehouse \
                     source enable {}`",
                    source.name, source.name
                ),
            ),
            false,
        ));
    }
    let limit = limits::WEBHOOK_BODY;
    let too_large = |size: Option<u64>| {
        let size = size.map_or_else(|| "more than".to_owned(), |s| format!("{s} bytes,"));
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "body is {size} over the limit of {limit} bytes; send one event per request \
                 and shorten its message"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err((too_large(declared), false));
    }
    let mut bytes = Vec::with_capacity(declared.map_or(1024, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            (
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    "the body could not be read to its end; send it again",
                ),
                false,
            )
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err((too_large(None), false));
        }
        bytes.extend_from_slice(&chunk);
    }
    let now = OffsetDateTime::now_utc();
    let event = parse_webhook(&bytes, &source.name, source.kind, now).map_err(|e| {
        (
            Refusal::new(StatusCode::BAD_REQUEST, e.reason(), e.to_string()),
            false,
        )
    })?;
    match w.events.submit(event, Ingress::Webhook).await {
        Ok(a) if a.duplicate => Ok(json_reply(
            StatusCode::OK,
            &json!({ "id": a.id.to_string(), "seq": a.seq, "duplicate": true }),
        )),
        Ok(a)
            if matches!(
                a.outcome,
                gatehouse_store::events::IngestOutcome::New { .. }
            ) =>
        {
            Ok(json_reply(
                StatusCode::CREATED,
                &json!({ "id": a.id.to_string(), "seq": a.seq }),
            ))
        }
        Ok(a) => Ok(json_reply(
            StatusCode::OK,
            &json!({ "id": a.id.to_string(), "seq": a.seq, "updated": true }),
        )),
        Err(e) => {
            let status = match e {
                SubmitError::Refused { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let message = match &e {
                SubmitError::Refused { field, reason } => format!("field `{field}`: {reason}"),
                other => other.to_string(),
            };
            Err((Refusal::new(status, e.reason(), message), true))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[tokio::test]
    async fn a_stopping_hub_answers_503_with_retry_after() {
        use gatehouse_alerts::model::SourceKind;
        let dir = tempfile::tempdir().unwrap();
        let store = gatehouse_store::Store::open(dir.path()).unwrap();
        let (_, key) = store
            .add_event_source(
                "nvr",
                SourceKind::Nvr,
                None,
                None,
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        let events = EventService::open(dir.path(), time::UtcOffset::UTC).unwrap();
        events.shutdown();
        let app = routes(events.clone(), StoreConn::new(dir.path()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/events"))
            .bearer_auth(key.expose())
            .body(r#"{"kind": "intrusion", "severity": "info"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
        let v: serde_json::Value = r.json().await.unwrap();
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("shutting down") && e.contains("retry"), "{e}");
        assert_eq!(events.metrics().rejected(Ingress::Webhook, "closed"), 1);
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer abc")])).ok(),
            Some("abc")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer  abc ")])).ok(),
            Some("abc")
        );
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "k1")])).ok(),
            Some("k1")
        );
        for bad in [
            headers(&[]),
            headers(&[("authorization", "Basic dXNlcjpwdw==")]),
            headers(&[("authorization", "Bearer ")]),
            headers(&[("x-api-key", " ")]),
        ] {
            let r = presented_key(&bad).err().unwrap();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            assert!(r.message.contains("gatehouse source add"), "{}", r.message);
        }
    }
}
