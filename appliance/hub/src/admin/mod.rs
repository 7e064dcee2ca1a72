//! The admin JSON API under `/api/v1` (the web console is built on it): login sessions,
//! people, cards, levels, gates, zones, the access log and admins.
//!
//! - [`auth`]: login, logout, sessions (bearer token or cookie + CSRF header), the per-IP
//!   login throttle, the per-account lockout, and the role table ([`auth::permits`]).
//! - [`api`]: the resource routes.
//! - [`alerts_api`]: event sources, receivers, rules, silences, events and their
//!   acknowledgement and delivery log.
//! - [`console_api`]: what the web console adds: the status dashboard, VPN peers,
//!   holidays, CSV exports, resolving events, card learn mode.
//! - [`sensors_api`]: the LoRa sensor registry (add with provisioning, list, disable,
//!   enable, remove).
//! - [`password`]: argon2id hashing and the password rule (also used by the CLI).
//! - The text forms admins type (card ids, schedules, dates) are
//!   [`gatehouse_access::text`], shared with the CLI.
//!
//! Promises:
//! - Every route but `POST /api/v1/auth/login` and the first admin's enrolment
//!   (`/api/v1/auth/enrol`, a one-time token instead) needs a live session, and every route checks
//!   the caller's role through the one table in [`auth::permits`] before doing anything.
//! - Replies are JSON; every refusal is `{"error": "..."}` saying what was wrong and what to
//!   do: 400 names the field, 401 says to log in again, 403 names what the role may not do,
//!   404 names the missing thing, 409 the name taken, 413 the size limit, 423 a locked
//!   account, 429 the login throttle (with `Retry-After`).
//! - Request bodies are read up to [`MAX_BODY`] bytes and no further.
//! - A raw card id sent to `POST /api/v1/cards` is hashed with the site key and dropped: it
//!   is never stored, logged, or repeated in a reply or an error.
//! - Time comes from an injected [`Clock`], so tests move it instead of sleeping.

pub mod alerts_api;
pub mod api;
pub mod auth;
pub mod console_api;
pub mod door_api;
pub mod password;
pub mod sensors_api;

use crate::access::{AccessError, AccessService};
use crate::provisioning::Listening;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::Router;
use gatehouse_config::Config;
use gatehouse_store::{SiteKey, Store, StoreError};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use time::{OffsetDateTime, UtcOffset};

/// Largest accepted request body on the admin routes.
pub const MAX_BODY: usize = 64 * 1024;

/// The wall clock the admin API reads: session expiry, lockouts, the login throttle.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until told to move (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    pub fn new(at: SystemTime) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    pub fn set(&self, at: SystemTime) {
        *lock(&self.0) = at;
    }

    pub fn advance(&self, by: std::time::Duration) {
        let mut t = lock(&self.0);
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *lock(&self.0)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing guarded here is left half-changed by a panic in a way that matters more
    // than refusing every admin request would.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    /// Used only from blocking tasks.
    store: Mutex<Store>,
    site_key: SiteKey,
    /// The site's offset: dates typed and times shown.
    tz: UtcOffset,
    access: AccessService,
    throttle: Mutex<auth::LoginThrottle>,
    /// For the provisioning `POST /api/v1/gates` answers with.
    config: Config,
}

/// The admin API's state (cheap to clone).
#[derive(Clone)]
pub struct AdminApi {
    inner: Arc<Inner>,
    clock: Arc<dyn Clock>,
    /// Where the running hub listens (for new gates' provisioning).
    listening: Listening,
    /// The events pipeline, woken after changes made outside its writer (a resolve).
    events: Option<crate::events::EventService>,
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApi").finish_non_exhaustive()
    }
}

impl AdminApi {
    /// Opens the store and site key in `general.data_dir` (blocking; see
    /// [`AdminApi::open`]). `access` is told to reload after every change, so a change
    /// applies to the next gate request.
    pub fn open_blocking(config: &Config, access: AccessService) -> Result<AdminApi, AccessError> {
        let dir = &config.general.data_dir;
        let open_err = |source| AccessError::Open {
            dir: dir.clone(),
            source,
        };
        let store = Store::open(dir).map_err(open_err)?;
        let site_key = SiteKey::load_or_create(dir).map_err(open_err)?;
        let tz = UtcOffset::from_whole_seconds(config.hub.timezone_offset.seconds())
            .map_err(|e| AccessError::Malformed(format!("hub.timezone_offset: {e}")))?;
        Ok(AdminApi {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                site_key,
                tz,
                access,
                throttle: Mutex::new(auth::LoginThrottle::default()),
                config: config.clone(),
            }),
            clock: Arc::new(SystemClock),
            listening: Listening::default(),
            events: None,
        })
    }

    /// [`AdminApi::open_blocking`] on a blocking thread.
    pub async fn open(config: &Config, access: AccessService) -> Result<AdminApi, AccessError> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || AdminApi::open_blocking(&config, access))
            .await
            .map_err(|e| AccessError::Task(e.to_string()))?
    }

    /// Replaces the clock (tests).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// Tells the API where the hub listens once it is bound (ports picked for port 0),
    /// for the provisioning of gates it adds.
    pub fn set_listening(&mut self, listening: Listening) {
        self.listening = listening;
    }

    /// The current time (UTC).
    pub(crate) fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from(self.clock.now())
    }

    pub(crate) fn tz(&self) -> UtcOffset {
        self.inner.tz
    }

    pub(crate) fn site_key(&self) -> &SiteKey {
        &self.inner.site_key
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn listening(&self) -> &Listening {
        &self.listening
    }

    /// Gives the API the events pipeline, to wake its delivery workers and live feeds
    /// after a change made outside its writer.
    pub fn set_events(&mut self, events: crate::events::EventService) {
        self.events = Some(events);
    }

    /// Wakes the events pipeline's delivery workers and live feeds (if it was given).
    pub(crate) fn events_changed(&self) {
        if let Some(e) = &self.events {
            e.notify_committed();
        }
    }

    /// Runs `f` with the store on a blocking thread.
    pub(crate) async fn store<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Store, &AdminApi) -> Result<T, ApiError> + Send + 'static,
    {
        let api = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = lock(&api.inner.store);
            f(&store, &api)
        })
        .await
        .map_err(|e| ApiError::internal(format!("admin task failed: {e}")))?
    }

    /// Tells the access service to reload now (after a change to what it decides from).
    pub(crate) async fn changed(&self) {
        if let Err(e) = self.inner.access.refresh().await {
            tracing::warn!(error = %e, "cannot reload access data after an admin change; the refresher will retry");
        }
    }
}

/// The admin routes, with the API as state.
pub fn routes(api: AdminApi) -> Router {
    Router::new()
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/me", get(auth::me))
        .route(
            "/api/v1/auth/enrol",
            get(auth::enrol_status).post(auth::enrol),
        )
        .route(
            "/api/v1/people",
            get(api::list_people).post(api::add_person),
        )
        .route(
            "/api/v1/people/{id}",
            patch(api::patch_person).delete(api::remove_person),
        )
        .route("/api/v1/cards", get(api::list_cards).post(api::add_card))
        .route(
            "/api/v1/cards/{id}",
            patch(api::patch_card).delete(api::remove_card),
        )
        .route("/api/v1/levels", get(api::list_levels).post(api::add_level))
        .route("/api/v1/levels/{id}/grant", post(api::grant_level))
        .route("/api/v1/gates", get(api::list_gates).post(api::add_gate))
        .route("/api/v1/gates/{id}/open", post(door_api::open_gate))
        .route("/api/v1/access/opens", get(door_api::list_opens))
        .route("/api/v1/zones", get(api::list_zones).post(api::add_zone))
        .route("/api/v1/access/log", get(api::access_log))
        .route("/api/v1/admins", get(api::list_admins).post(api::add_admin))
        .route(
            "/api/v1/sources",
            get(alerts_api::list_sources).post(alerts_api::add_source),
        )
        .route(
            "/api/v1/sources/{id}",
            patch(alerts_api::patch_source).delete(alerts_api::remove_source),
        )
        .route(
            "/api/v1/sources/{id}/rotate-key",
            post(alerts_api::rotate_source_key),
        )
        .route(
            "/api/v1/receivers",
            get(alerts_api::list_receivers).post(alerts_api::add_receiver),
        )
        .route(
            "/api/v1/receivers/{id}",
            get(alerts_api::get_receiver)
                .patch(alerts_api::patch_receiver)
                .delete(alerts_api::remove_receiver),
        )
        .route(
            "/api/v1/receivers/{id}/test",
            post(alerts_api::test_receiver),
        )
        .route(
            "/api/v1/rules",
            get(alerts_api::list_rules).post(alerts_api::add_rule),
        )
        .route(
            "/api/v1/rules/{id}",
            get(alerts_api::get_rule)
                .patch(alerts_api::patch_rule)
                .delete(alerts_api::remove_rule),
        )
        .route(
            "/api/v1/silences",
            get(alerts_api::list_silences).post(alerts_api::add_silence),
        )
        .route(
            "/api/v1/silences/{id}/expire",
            post(alerts_api::expire_silence),
        )
        // The webhook (`POST /api/v1/events`) and the live feed (`/api/v1/events/stream`)
        // are the events pipeline's; these are the admin's reads and acknowledgement.
        .route("/api/v1/events", get(alerts_api::list_events))
        .route("/api/v1/events/{id}", get(alerts_api::event_detail))
        .route("/api/v1/events/{id}/ack", post(alerts_api::ack_event))
        .route(
            "/api/v1/events/{id}/deliveries",
            get(alerts_api::event_deliveries),
        )
        .route("/api/v1/deliveries", get(alerts_api::delivery_log))
        // The console's additions (console_api.rs).
        .route("/api/v1/status", get(console_api::status))
        .route(
            "/api/v1/peers",
            get(console_api::list_peers).post(console_api::add_peer),
        )
        .route("/api/v1/peers/{name}", delete(console_api::remove_peer))
        .route(
            "/api/v1/peers/{name}/disable",
            post(console_api::disable_peer),
        )
        .route(
            "/api/v1/peers/{name}/enable",
            post(console_api::enable_peer),
        )
        .route(
            "/api/v1/holidays",
            get(console_api::list_holidays).post(console_api::add_holiday),
        )
        .route(
            "/api/v1/holidays/{date}",
            delete(console_api::remove_holiday),
        )
        .route("/api/v1/events.csv", get(console_api::events_csv))
        .route("/api/v1/access/log.csv", get(console_api::access_log_csv))
        .route(
            "/api/v1/events/{id}/resolve",
            post(console_api::resolve_event),
        )
        .route("/api/v1/cards/learn", post(console_api::learn_card))
        .route(
            "/api/v1/sensors",
            get(sensors_api::list_sensors).post(sensors_api::add_sensor),
        )
        .route("/api/v1/sensors/{id}", delete(sensors_api::remove_sensor))
        .route(
            "/api/v1/sensors/{id}/disable",
            post(sensors_api::disable_sensor),
        )
        .route(
            "/api/v1/sensors/{id}/enable",
            post(sensors_api::enable_sensor),
        )
        .with_state(api)
}

// ---- errors ------------------------------------------------------------------------

/// A refusal: status and a message for the admin, as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A failure of ours: logged in full, answered with a generic 500.
    pub fn internal(detail: impl fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "admin API request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the hub could not complete the request; see its log",
        )
    }

    pub fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_s = Some(secs.max(1));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::NameTaken { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::CardExists { .. }
            | StoreError::InUse { .. }
            | StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::Invalid { .. } | StoreError::BadSchedule(_) => StatusCode::BAD_REQUEST,
            _ => return ApiError::internal(e),
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = reply(self.status, &serde_json::json!({ "error": self.message }));
        if let Some(s) = self.retry_after_s {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// A JSON reply that no cache keeps.
pub(crate) fn reply(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

// ---- request bodies ----------------------------------------------------------------

/// A JSON object body whose fields are taken one by one, so every error names its field.
/// Fields nobody took are refused by [`Fields::finish`] (a typo must not be ignored).
pub(crate) struct Fields {
    map: Map<String, Value>,
}

/// A field of a PATCH body: absent (keep), `null` (clear) or a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Patch<T> {
    Keep,
    Clear,
    Set(T),
}

impl Fields {
    /// Reads the body (at most [`MAX_BODY`] bytes) as a JSON object.
    pub(crate) async fn read(body: Body) -> Result<Fields, ApiError> {
        let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body must be at most {MAX_BODY} bytes of JSON"),
            )
        })?;
        Fields::parse(&bytes)
    }

    pub(crate) fn parse(bytes: &[u8]) -> Result<Fields, ApiError> {
        // serde_json's syntax errors give a position, never the text.
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Fields { map }),
            Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(format!(
                "the body is not valid JSON: {e}"
            ))),
        }
    }

    fn convert<T: DeserializeOwned>(name: &str, v: Value, what: &str) -> Result<T, ApiError> {
        serde_json::from_value(v)
            .map_err(|_| ApiError::bad_request(format!("`{name}` must be {what}")))
    }

    /// A required field; `what` describes the expected value for the error.
    pub(crate) fn req<T: DeserializeOwned>(
        &mut self,
        name: &str,
        what: &str,
    ) -> Result<T, ApiError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Err(ApiError::bad_request(format!(
                "`{name}` is required ({what})"
            ))),
            Some(v) => Fields::convert(name, v, what),
        }
    }

    /// An optional field (`null` counts as absent).
    pub(crate) fn opt<T: DeserializeOwned>(
        &mut self,
        name: &str,
        what: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Fields::convert(name, v, what).map(Some),
        }
    }

    /// A PATCH field.
    pub(crate) fn patch<T: DeserializeOwned>(
        &mut self,
        name: &str,
        what: &str,
    ) -> Result<Patch<T>, ApiError> {
        match self.map.remove(name) {
            None => Ok(Patch::Keep),
            Some(Value::Null) => Ok(Patch::Clear),
            Some(v) => Fields::convert(name, v, what).map(Patch::Set),
        }
    }

    /// A raw field for callers that read it themselves.
    pub(crate) fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    /// Refuses fields nobody asked for.
    pub(crate) fn finish(self, known: &[&str]) -> Result<(), ApiError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::bad_request(format!(
                "unknown field `{k}`; expected {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn fields_name_what_is_wrong() {
        let mut f = Fields::parse(br#"{"name": 5, "n": null, "x": true}"#).unwrap();
        let e = f.req::<String>("name", "text").unwrap_err();
        assert_eq!(e.message(), "`name` must be text");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(f.patch::<String>("n", "text").unwrap(), Patch::Clear);
        assert_eq!(f.patch::<String>("gone", "text").unwrap(), Patch::Keep);
        let e = f.req::<String>("missing", "a name").unwrap_err();
        assert_eq!(e.message(), "`missing` is required (a name)");
        let e = f.finish(&["name", "n"]).unwrap_err();
        assert_eq!(e.message(), "unknown field `x`; expected `name`, `n`");
        // Type errors never repeat the value.
        let mut f = Fields::parse(br#"{"acc_id": 4123456}"#).unwrap();
        let e = f.req::<String>("acc_id", "text").unwrap_err();
        assert!(!e.message().contains("4123456"));
        assert!(Fields::parse(b"[1]").is_err());
        let e = Fields::parse(b"{\"a\": 0004123456}").err().unwrap();
        assert!(!e.message().contains("4123456"), "{}", e.message());
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let e: ApiError = StoreError::AlreadyExists { what: "x".into() }.into();
        assert_eq!(e.status(), StatusCode::CONFLICT);
        let e: ApiError = StoreError::BadSchedule("x".into()).into();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e: ApiError = StoreError::LogClosed.into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message().contains("access log"));
    }
}
