//! Remote door open: an admin opens a gate's door from the console or the API, with a
//! reason, and the request is logged with the admin's name.
//!
//! - `POST /api/v1/gates/{id}/open` `{"reason": "..."}` (role action `OpenDoors`: admin and
//!   operator), `{id}` the gate's id or name. The request is stored first (table
//!   `remote_opens`, state `requested`), then handed to the gate as a `RemoteOpen` command
//!   sealed with its key ([`crate::gate_commands`]: pushed on its TCP connection or MQTT
//!   topic when live, else in the reply to its next frame, e.g. an HTTP gate's heartbeat).
//!   Answer 202 `{"request_id": n, "delivered": bool}`: `delivered` is true when the
//!   command was pushed on a live link and written before the answer (waited for at most
//!   [`PUSH_WAIT`]); false when the gate has no live link right now (the command waits
//!   [`EXPIRY`](crate::gate_commands::EXPIRY) for the gate's next frame). The stored state
//!   then moves to `delivered` (with its time) or `expired`. Errors: 400 reason missing,
//!   blank, over 200 characters or with control characters; 403 role; 404 no such gate;
//!   409 the gate is disabled.
//! - `GET /api/v1/access/opens` (role action `ReadLog`), the log of remote opens, newest
//!   first. Query: `gate` (id or name), `state` (`requested`, `delivered`, `expired`),
//!   `before` (a request id: older ones, for paging back), `limit` (1 to 1000, default
//!   100). Answer `{"rows": [{"id", "kind": "remote_open", "at", "gate", "gate_name",
//!   "admin", "reason", "relay_ms", "state", "delivered_at"}], "next_before": id|null,
//!   "more": bool}`; times are RFC 3339 in the site's offset, `delivered_at` null unless
//!   delivered. A request still `requested` long after its expiry (the hub restarted
//!   while it waited) is shown, and stored, as `expired`.

use super::api::{gate_id, num_param, only_params, ts, Ref};
use super::auth::{Action, Caller};
use super::{reply, AdminApi, ApiError, Fields};
use crate::gate_commands::Outcome;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use gatehouse_store::remote_opens::{
    check_reason, NewRemoteOpen, RemoteOpenFilter, RemoteOpenRow, RemoteOpenState, MAX_OPENS_LIMIT,
};
use gatehouse_store::StoreError;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long `POST .../open` waits for a command pushed on a live link to be written.
pub const PUSH_WAIT: Duration = Duration::from_secs(5);
/// Default page of `GET /api/v1/access/opens`.
pub const OPENS_DEFAULT_LIMIT: u32 = 100;
/// A request still `requested` this long after its expiry is an orphan of a restart.
const ORPHAN_MARGIN: Duration = Duration::from_secs(60);
/// Relay time when the gate's is 0 (gate-core's default).
const DEFAULT_RELAY_MS: u16 = 3_000;

fn reason_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid { field, reason } => {
            ApiError::bad_request(format!("`{field}` {reason}"))
        }
        other => other.into(),
    }
}

/// `POST /api/v1/gates/{id}/open`.
pub async fn open_gate(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(gate): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.may(Action::OpenDoors)?;
    let mut f = Fields::read(body).await?;
    let reason: String = f.req(
        "reason",
        "text: why the door is opened (1 to 200 characters, logged)",
    )?;
    f.finish(&["reason"])?;
    let reason = reason.trim().to_owned();
    check_reason(&reason).map_err(reason_error)?;
    let admin = caller.admin.name.clone();
    let at = api.now();
    let gate_ref = Ref::from_param(&gate);
    let (gate_id, gate_name, relay_ms, id) = api
        .store(move |s, _| {
            let id = gate_id(s, &gate_ref)?;
            let g = s.gate(id)?.gate;
            if !g.enabled {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "gate {:?} is disabled; enable it before opening its door remotely",
                        g.name
                    ),
                ));
            }
            let relay_ms = match u16::try_from(g.relay_ms) {
                Ok(0) => DEFAULT_RELAY_MS,
                Ok(ms) => ms,
                Err(_) => u16::MAX,
            };
            let request = NewRemoteOpen {
                at,
                gate: id,
                admin,
                reason,
                relay_ms,
            };
            let request_id = s.insert_remote_open(&request).map_err(reason_error)?;
            Ok((id, g.name, relay_ms, request_id))
        })
        .await?;
    let access = api.inner.access.clone();
    let auth = match u32::try_from(gate_id).ok().map(|g| (g, access.gate(g))) {
        Some((_, Some(auth))) => Some(auth),
        // Added a moment ago: not in the access snapshot yet.
        Some((g, None)) => {
            api.changed().await;
            access.gate(g)
        }
        None => None,
    };
    let Some(auth) = auth else {
        api.store(move |s, _| Ok(s.mark_remote_open_expired(id)?))
            .await?;
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "gate {gate_name:?} is not loaded by the gate transports yet; try again in a \
                 few seconds"
            ),
        ));
    };
    tracing::info!(
        gate = gate_id,
        request = id,
        admin = %caller.admin.name,
        "remote door open requested"
    );
    let commands = std::sync::Arc::clone(access.gate_commands());
    let ticket = commands.request(auth, id, relay_ms);
    let pushed = ticket.pushed;
    let (first_tx, first_rx) = oneshot::channel();
    let recorder = api.clone();
    tokio::spawn(async move {
        let outcome = commands.settle(ticket).await;
        let stored = recorder
            .store(move |s, _| {
                Ok(match outcome {
                    Outcome::Delivered(at) => s.mark_remote_open_delivered(id, at)?,
                    Outcome::Expired => s.mark_remote_open_expired(id)?,
                })
            })
            .await;
        match (&outcome, stored) {
            (_, Err(e)) => {
                tracing::warn!(
                    request = id,
                    error = e.message(),
                    "cannot log a remote open's outcome"
                )
            }
            (Outcome::Expired, Ok(_)) => tracing::warn!(
                gate = gate_id,
                request = id,
                "remote door open expired: the gate did not come within the expiry"
            ),
            (Outcome::Delivered(_), Ok(_)) => {}
        }
        let _ = first_tx.send(matches!(outcome, Outcome::Delivered(_)));
    });
    let delivered = pushed
        && matches!(
            tokio::time::timeout(PUSH_WAIT, first_rx).await,
            Ok(Ok(true))
        );
    Ok(reply(
        StatusCode::ACCEPTED,
        &json!({ "request_id": id, "delivered": delivered }),
    ))
}

fn open_view(
    r: &RemoteOpenRow,
    gates: &HashMap<i64, String>,
    tz: time::UtcOffset,
) -> serde_json::Value {
    json!({
        "id": r.id,
        "kind": "remote_open",
        "at": ts(r.at, tz),
        "gate": r.gate,
        "gate_name": gates.get(&r.gate),
        "admin": r.admin,
        "reason": r.reason,
        "relay_ms": r.relay_ms,
        "state": r.state.as_str(),
        "delivered_at": r.delivered_at.map(|t| ts(t, tz)),
    })
}

/// `GET /api/v1/access/opens`.
pub async fn list_opens(
    State(api): State<AdminApi>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.may(Action::ReadLog)?;
    let tz = api.tz();
    let q = only_params(q, &["gate", "state", "before", "limit"])?;
    let limit = num_param::<u32>(
        &q,
        "limit",
        &format!("a number from 1 to {MAX_OPENS_LIMIT}"),
    )?
    .unwrap_or(OPENS_DEFAULT_LIMIT);
    if !(1..=MAX_OPENS_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` must be a number from 1 to {MAX_OPENS_LIMIT}"
        )));
    }
    let before = num_param::<u32>(&q, "before", "a remote open's request id")?;
    let state = match q.get("state").map(String::as_str) {
        None => None,
        Some("requested") => Some(RemoteOpenState::Requested),
        Some("delivered") => Some(RemoteOpenState::Delivered),
        Some("expired") => Some(RemoteOpenState::Expired),
        Some(_) => {
            return Err(ApiError::bad_request(
                "`state` must be \"requested\", \"delivered\" or \"expired\"",
            ))
        }
    };
    let gate = q.get("gate").map(|g| Ref::from_param(g));
    let orphaned_before = api.now() - (api.inner.access.gate_commands().expiry() + ORPHAN_MARGIN);
    let (rows, gates) = api
        .store(move |s, _| {
            let gate = gate.as_ref().map(|g| gate_id(s, g)).transpose()?;
            let filter = RemoteOpenFilter {
                gate,
                state,
                before_id: before,
                limit,
            };
            let mut rows = s.remote_opens(&filter)?;
            for r in &mut rows {
                if r.state == RemoteOpenState::Requested
                    && r.at < orphaned_before
                    && s.mark_remote_open_expired(r.id)?
                {
                    r.state = RemoteOpenState::Expired;
                }
            }
            if state == Some(RemoteOpenState::Requested) {
                rows.retain(|r| r.state == RemoteOpenState::Requested);
            }
            let gates = s
                .list_gates()?
                .into_iter()
                .map(|g| (g.gate.id, g.gate.name))
                .collect::<HashMap<_, _>>();
            Ok((rows, gates))
        })
        .await?;
    let more = rows.len() >= limit as usize;
    let next_before = rows.last().map(|r| r.id).or(before);
    Ok(reply(
        StatusCode::OK,
        &json!({
            "rows": rows.iter().map(|r| open_view(r, &gates, tz)).collect::<Vec<_>>(),
            "next_before": next_before,
            "more": more,
        }),
    ))
}
