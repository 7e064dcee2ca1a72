//! `GET /api/v1/events/stream`: the console's live feed, as Server-Sent Events (WHATWG
//! HTML, section 9.2 "Server-sent events").
//!
//! - Who: an admin session (bearer token or cookie) whose role may read events
//!   ([`Action::ReadEvents`]: admins and operators).
//! - What: every notification to the console receiver, in delivery-id order: `id:` the
//!   console delivery's id, `event:` `firing`, `repeat` or `resolved`, `data:` the
//!   notification as JSON ([`render::json_body`]).
//! - Resume: from the `Last-Event-ID` header (what a browser's `EventSource` sends when it
//!   reconnects), else `?after=<id>`; the client gets exactly what came after that id.
//!   Without either it gets only what comes next.
//! - The stream starts with `retry: 2000` (reconnect after 2 s), sends a keep-alive
//!   comment every [`KEEP_ALIVE`], wakes on every commit of the event writer (no polling),
//!   and ends when the hub stops (so the server can drain), when the session is no longer
//!   valid (checked again every [`SESSION_RECHECK`]: a logout, an expiry or a removed
//!   admin ends the stream within that time), or when the store cannot be read (the
//!   client reconnects and resumes).

use super::{EventService, StoreConn};
use crate::admin::auth::{Action, Caller};
use crate::admin::{AdminApi, ApiError};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use gatehouse_alerts::model::{DeliveryId, Notification};
use gatehouse_alerts::render;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::watch;

/// A comment line this often keeps proxies and browsers from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What the stream tells clients to wait before reconnecting.
pub const RECONNECT: Duration = Duration::from_millis(2000);
/// How often an open stream checks that its session is still valid.
pub const SESSION_RECHECK: Duration = Duration::from_secs(30);
/// Notifications read from the store at a time.
const PAGE: usize = 100;

#[derive(Clone)]
struct Feed {
    events: EventService,
    store: StoreConn,
    stop: watch::Receiver<bool>,
}

/// The stream route, with the admin API as state (for the session check).
pub(crate) fn routes(
    events: EventService,
    admin: AdminApi,
    store: StoreConn,
    stop: watch::Receiver<bool>,
) -> Router {
    Router::new()
        .route("/api/v1/events/stream", get(stream))
        .layer(Extension(Feed {
            events,
            store,
            stop,
        }))
        .with_state(admin)
}

#[derive(serde::Deserialize)]
struct Resume {
    after: Option<String>,
}

fn parse_id(what: &str, v: &str) -> Result<DeliveryId, ApiError> {
    v.trim()
        .parse::<DeliveryId>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} must be the id of the last message received (a number), not {:?}",
                gatehouse_alerts::model::clean_text(v, 40)
            ))
        })
}

async fn stream(
    State(api): State<AdminApi>,
    caller: Caller,
    Extension(feed): Extension<Feed>,
    Query(resume): Query<Resume>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadEvents)?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?"));
    let after = match (last_event_id, resume.after.as_deref()) {
        (Some(id), _) => parse_id("Last-Event-ID", id)?,
        (None, Some(a)) => parse_id("`after`", a)?,
        (None, None) => feed
            .store
            .call(|s| s.latest_console_delivery())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading the console feed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the event store cannot be read right now; reconnect in a moment",
                )
                .with_retry_after(2)
            })?,
    };
    tracing::debug!(admin = %caller.admin.name, after, "live feed opened");
    let mut committed = feed.events.committed();
    committed.mark_unchanged();
    let state = Stream {
        session: Session {
            api,
            headers: [header::AUTHORIZATION, header::COOKIE]
                .into_iter()
                .filter_map(|h| Some((h.clone(), headers.get(&h)?.clone())))
                .collect(),
            next_check: tokio::time::Instant::now() + SESSION_RECHECK,
        },
        store: feed.store.clone(),
        after,
        committed,
        stop: feed.stop.clone(),
        queue: VecDeque::new(),
        started: false,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        let next = s.next().await?;
        Some((Ok::<Event, Infallible>(next), s))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// One client's position in the feed.
struct Stream {
    store: StoreConn,
    /// The last delivery id sent (or resumed from).
    after: DeliveryId,
    committed: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    queue: VecDeque<Notification>,
    started: bool,
    session: Session,
}

/// What the stream needs to check its caller's session again.
struct Session {
    api: AdminApi,
    /// The request's `Authorization` and `Cookie` headers (its session).
    headers: HeaderMap,
    next_check: tokio::time::Instant,
}

impl Session {
    /// Whether the session still exists and may read events (checked at most every
    /// [`SESSION_RECHECK`]).
    async fn valid(&mut self) -> bool {
        if tokio::time::Instant::now() < self.next_check {
            return true;
        }
        self.next_check = tokio::time::Instant::now() + SESSION_RECHECK;
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        parts.headers = self.headers.clone();
        match Caller::from_request_parts(&mut parts, &self.api).await {
            Ok(c) => c.may(Action::ReadEvents).is_ok(),
            Err(_) => false,
        }
    }
}

impl Stream {
    /// The next message, or `None` to end the stream.
    async fn next(&mut self) -> Option<Event> {
        if !self.started {
            self.started = true;
            return Some(Event::default().retry(RECONNECT));
        }
        loop {
            if let Some(n) = self.queue.pop_front() {
                self.after = n.delivery;
                return Some(message(&n));
            }
            if *self.stop.borrow() || !self.session.valid().await {
                return None;
            }
            // Seen before reading: a commit after the read wakes the wait below.
            self.committed.mark_unchanged();
            let after = self.after;
            match self.store.call(move |s| s.console_feed(after, PAGE)).await {
                Ok(page) if !page.is_empty() => {
                    self.queue.extend(page);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the console feed; ending the stream (the client resumes)");
                    return None;
                }
            }
            tokio::select! {
                changed = self.committed.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = crate::stopped(&mut self.stop) => return None,
                _ = tokio::time::sleep_until(self.session.next_check) => {}
            }
        }
    }
}

fn message(n: &Notification) -> Event {
    Event::default()
        .id(n.delivery.to_string())
        .event(render::kind_name(n.kind))
        .data(render::json_body(n).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn resume_ids_are_checked() {
        assert_eq!(parse_id("Last-Event-ID", " 42 ").unwrap(), 42);
        let e = parse_id("Last-Event-ID", "-1").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.message().contains("Last-Event-ID"), "{}", e.message());
        assert!(parse_id("`after`", "abc").is_err());
    }
}
