//! The gates' HTTP transport: `POST /api/v1/access/check` (the original design's access
//! check, JSON) and `POST /api/v1/gate/frames` (every message of the gate link, as binary
//! frames).
//!
//! # `POST /api/v1/access/check`
//!
//! Request: header `Authorization: Bearer <the gate's key as 64 hex digits>`, body the
//! gate link's [`AccessRequest`] in JSON, `{"acc_id": "<hex>", "gate_id": N}` with optional
//! `seq` and `time`. A `seq` other than 0 must be above every one the gate used before
//! (on any transport); 0 or absent is not replay-checked (the original design's body).
//!
//! Answer 200 `{"allow": bool, "reason": "granted", "relay_ms": n, "seq": n}`, sent only
//! once the decision is durably logged. Errors are `{"error": "..."}` saying what was
//! wrong and what to do: 400 malformed body, 401 missing or wrong key, 403 address not
//! allowed for the gate, 404 unknown gate, 409 replayed `seq`, 413 body over
//! [`MAX_BODY`], 503 the log could not store the decision (nothing was decided). A
//! disabled gate that authenticates gets a logged 200 deny with reason `unknown_gate`.
//!
//! # `POST /api/v1/gate/frames`
//!
//! So that an HTTP gate can do everything a TCP gate does (heartbeats, allow-list sync,
//! offline uploads, door and tamper events, and access requests too if it likes). Body
//! (`application/octet-stream`): one sealed binary frame exactly as on raw TCP
//! (length-prefixed; see `gatehouse_gate_proto::frame`), authenticated by its own tag: no
//! bearer key. It goes through the same per-frame logic as TCP and MQTT
//! ([`gate_frames`]), IP allow-list included. Answer 200 `application/octet-stream`: the
//! reply frames back to back, as TCP would carry them (an `ErrorReply` for a refused frame,
//! every chunk of an allow-list transfer, nothing for a heartbeat or an event, nothing for
//! a decision the log could not make durable), followed by a `RemoteOpen` frame for each
//! remote door open queued for the gate ([`crate::gate_commands`]): an HTTP gate only
//! ever asks, so the reply to its next accepted frame (typically its heartbeat) is how a
//! command reaches it. The JSON `access/check` reply carries no commands. Errors, in JSON as above: 400 a body that
//! is not exactly one frame (whatever its length field claims), 401 a tag that does not
//! verify with the gate's key, 404 unknown gate (there is no key to seal a reply with),
//! 413 a body over [`MAX_FRAME_LEN`] bytes.

use crate::access::{AccessError, AccessService, Presented};
use crate::drops::DropKind;
use crate::gate_frames::{self, Peer};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gatehouse_gate_proto::{AccessRequest, Frame, KEY_LEN, MAX_FRAME_LEN};
use std::net::SocketAddr;

/// Largest accepted request body (a request is under 150 bytes).
pub const MAX_BODY: usize = 4096;

/// The binary-frame endpoint.
pub const FRAMES_PATH: &str = "/api/v1/gate/frames";

const TRANSPORT: &str = "http";

#[derive(serde::Serialize)]
struct CheckReply {
    allow: bool,
    reason: &'static str,
    relay_ms: u32,
    seq: u32,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The gate routes, with the service as state.
pub fn routes(service: AccessService) -> Router {
    Router::new()
        .route("/api/v1/access/check", post(check))
        .route(FRAMES_PATH, post(frames))
        .with_state(service)
}

fn bearer_key(headers: &HeaderMap) -> Option<[u8; KEY_LEN]> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim().as_bytes();
    if token.len() != 2 * KEY_LEN {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (pair, out) in token.chunks_exact(2).zip(key.iter_mut()) {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        *out = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(key)
}

async fn check(
    State(service): State<AccessService>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let drops = service.drops();
    let Some(key) = bearer_key(&headers) else {
        drops.count(
            DropKind::BadAuth,
            TRANSPORT,
            &"missing or unreadable Authorization",
        );
        return error(
            StatusCode::UNAUTHORIZED,
            "send the gate's key as `Authorization: Bearer <64 hex digits>` (printed by `gatehouse gate add`)",
        );
    };
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            drops.count(DropKind::Oversize, TRANSPORT, &"body too large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body must be at most {MAX_BODY} bytes: one access request as JSON"),
            );
        }
    };
    let req: AccessRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            drops.count(DropKind::Malformed, TRANSPORT, &e);
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON like {{\"gate_id\": 7, \"acc_id\": \"04a1b2c3\"}} \
                     (acc_id: 1 to 32 bytes as hex): {e}"
                ),
            );
        }
    };
    let now = service.now();
    match service
        .check(
            req.gate_id,
            Presented::Key(&key),
            req.seq,
            req.card.as_bytes(),
            peer.ip(),
            now,
        )
        .await
    {
        Ok(d) => Json(CheckReply {
            allow: d.decision.is_allowed(),
            reason: d.decision.reason.as_str(),
            relay_ms: d.decision.relay_ms,
            seq: d.seq,
        })
        .into_response(),
        Err(e) => {
            let (status, kind) = match &e {
                AccessError::UnknownGate(_) => (StatusCode::NOT_FOUND, DropKind::UnknownGate),
                AccessError::BadKey(_) => (StatusCode::UNAUTHORIZED, DropKind::BadAuth),
                AccessError::IpRefused { .. } => (StatusCode::FORBIDDEN, DropKind::IpRefused),
                AccessError::Replayed { .. } => (StatusCode::CONFLICT, DropKind::Replayed),
                AccessError::Malformed(_) => (StatusCode::BAD_REQUEST, DropKind::Malformed),
                _ => (StatusCode::SERVICE_UNAVAILABLE, DropKind::NotDurable),
            };
            drops.count(kind, TRANSPORT, &e);
            error(status, e.to_string())
        }
    }
}

/// `POST /api/v1/gate/frames`: one sealed frame in, its replies out (see the module docs).
async fn frames(
    State(service): State<AccessService>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let drops = service.drops();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FRAME_LEN).await else {
        drops.count(DropKind::Oversize, TRANSPORT, &"frame body too large");
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body must be one frame of the gate link, at most {MAX_FRAME_LEN} bytes"),
        );
    };
    let frame = match Frame::new_checked(&bytes[..]) {
        Ok(f) => f,
        Err(e) => {
            // The body is within the limit: a length field saying otherwise is malformed.
            drops.count(
                DropKind::Malformed,
                TRANSPORT,
                &format_args!("{}: {e}", peer.ip()),
            );
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be exactly one sealed frame of the gate link as on raw TCP \
                     (length-prefixed, application/octet-stream): {e}"
                ),
            );
        }
    };
    let gate_id = frame.gate_id();
    if service.gate(gate_id).is_none() {
        drops.count(
            DropKind::UnknownGate,
            TRANSPORT,
            &format_args!("{}: frame for unknown gate {gate_id}", peer.ip()),
        );
        return error(
            StatusCode::NOT_FOUND,
            AccessError::UnknownGate(gate_id).to_string(),
        );
    }
    let mut out = Vec::new();
    let handled = gate_frames::handle(&service, &frame, Peer::Ip(peer.ip()), TRANSPORT);
    if let Some(answer) = &handled.answer {
        if !answer.is_authentic() {
            return error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "the frame's tag does not verify with gate {gate_id}'s key; seal frames \
                     with the secret `gatehouse gate add` printed for this gate"
                ),
            );
        }
    }
    for answer in handled.into_answers() {
        gate_frames::resolve(&mut out, answer, &service, TRANSPORT).await;
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_key_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_key(&h), None);
        let hex = "ab".repeat(32);
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {hex}").parse().unwrap(),
        );
        assert_eq!(bearer_key(&h), Some([0xab; 32]));
        h.insert(
            header::AUTHORIZATION,
            format!("bearer {}", hex.to_uppercase()).parse().unwrap(),
        );
        assert_eq!(bearer_key(&h), Some([0xab; 32]));
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {hex}").parse().unwrap(),
        );
        assert_eq!(bearer_key(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abcd".parse().unwrap());
        assert_eq!(bearer_key(&h), None);
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {}", "zz".repeat(32)).parse().unwrap(),
        );
        assert_eq!(bearer_key(&h), None);
    }
}
