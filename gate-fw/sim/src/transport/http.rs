//! HTTP, on one keep-alive connection per gate (HTTP/1.1, written by hand: two request
//! shapes, two answer shapes, no extra dependency):
//!
//! - access requests take the access check of the original design,
//!   `POST /api/v1/access/check` with the gate's key as
//!   `Authorization: Bearer <64 hex digits>` and the body
//!   `{"acc_id": "<hex>", "gate_id": N, "seq": N, "time": T}`;
//! - every other frame (heartbeats, allow-list requests, offline batches, door and tamper
//!   events) goes as it is to `POST /api/v1/gate/frames`: the body is the sealed binary
//!   frame exactly as on raw TCP (`application/octet-stream`), authenticated by its own
//!   tag, and a 200 answer's body is the hub's reply frames back to back (empty when the
//!   message has no reply), each handed to the core as received. So an HTTP gate syncs
//!   its allow-list and uploads its offline log like a TCP gate. Another status (400 or
//!   413: the hub could not read the frame) is counted and nothing reaches the core.
//!
//! **How the core gets an access check's answer.** The core acts only on sealed frames.
//! The JSON answer has no tag of its own (its authenticity is the connection's, TLS on a
//! real site), so this adapter, which holds the gate's key like the board does, rebuilds
//! it as the frame the hub would have sent over TCP and seals it with that key:
//! - 200 `{"allow", "reason", "relay_ms", "seq"}` -> `Decision{seq, reason, relay_ms}`;
//!   a reason name this build does not know becomes an unknown reason code, which the core
//!   treats as a deny (fail closed);
//! - 400/401/403/404/409/413 -> `ErrorReply` Malformed/BadAuth/BadAuth/UnknownGate/
//!   Replay/Oversize, which the core decides offline at once;
//! - 503 (the hub could not log the decision) and any other status -> no answer: the core
//!   times out and uses its allow-list, as with the TCP hub's missing answer.
//!
//! Requests go one at a time, in the order the core sent them, so the hub sees the gate's
//! sequence numbers increasing on both paths.
//!
//! The link is up while the hub accepts connections: a failed request (after one retry on
//! a fresh connection, for a keep-alive connection the server closed) takes it down, and
//! it comes back when a connection succeeds again.

use super::{LinkEvent, RECONNECT};
use crate::gates_file::GateSpec;
use gatehouse_gate_proto::frame::LENGTH_FIELD_LEN;
use gatehouse_gate_proto::{
    seal, AccessRequest, Decision, ErrorCode, ErrorReply, Frame, Message, Reason, Repr,
    MAX_FRAME_LEN,
};
use std::fmt::Write as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

pub const PATH: &str = "/api/v1/access/check";
/// Where every frame other than an access request goes.
pub const FRAMES_PATH: &str = "/api/v1/gate/frames";
/// The longest answer header + body accepted: a full allow-list of the core's default
/// 2,048 entries is 69 frames (about 70 KB); this leaves room for much bigger lists.
const MAX_ANSWER: usize = 8 * 1024 * 1024;

/// What one of the core's frames becomes.
enum Outgoing {
    /// An access check, answered in JSON.
    Check(AccessRequest),
    /// Any other message, carried as the frame itself.
    Frame,
}

#[derive(serde::Deserialize)]
struct CheckReply {
    #[allow(dead_code)]
    allow: bool,
    reason: String,
    relay_ms: u32,
    seq: u32,
}

pub async fn run(
    addr: String,
    gate: GateSpec,
    mut out: UnboundedReceiver<Vec<u8>>,
    events: UnboundedSender<LinkEvent>,
) {
    let bearer: String = gate.key.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    loop {
        // Link down: connect until the hub accepts.
        let mut conn = match TcpStream::connect(&addr).await {
            Ok(c) => c,
            Err(_) => {
                if events.send(LinkEvent::IoError).is_err() {
                    return;
                }
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        while out.try_recv().is_ok() {}
        if events.send(LinkEvent::Up).is_err() {
            return;
        }
        // Link up: one request at a time.
        loop {
            let Some(bytes) = out.recv().await else {
                return;
            };
            let (outgoing, request) = match classify(&bytes) {
                Some(req) => (Outgoing::Check(req), build_request(&addr, &bearer, &req)),
                None => (Outgoing::Frame, build_frames_request(&addr, &bytes)),
            };
            let answer = match exchange(&mut conn, &request).await {
                Ok(a) => Ok(a),
                // A keep-alive connection the server closed: one fresh try.
                Err(_) => match TcpStream::connect(&addr).await {
                    Ok(c) => {
                        conn = c;
                        let _ = conn.set_nodelay(true);
                        exchange(&mut conn, &request).await
                    }
                    Err(e) => Err(e),
                },
            };
            match answer {
                Ok((status, body)) => {
                    if status != 200 && events.send(LinkEvent::HttpStatus(status)).is_err() {
                        return;
                    }
                    let frames = match &outgoing {
                        Outgoing::Check(req) => answer_frame(&gate, req, status, &body)
                            .into_iter()
                            .collect(),
                        Outgoing::Frame if status == 200 => split_frames(&body),
                        Outgoing::Frame => Vec::new(),
                    };
                    for frame in frames {
                        if events.send(LinkEvent::Frame(frame)).is_err() {
                            return;
                        }
                    }
                }
                Err(_) => {
                    let _ = events.send(LinkEvent::IoError);
                    if events.send(LinkEvent::Down).is_err() {
                        return;
                    }
                    tokio::time::sleep(RECONNECT).await;
                    break;
                }
            }
        }
    }
}

/// The access request in one of the core's frames; `None` for every other frame (carried
/// as it is).
fn classify(bytes: &[u8]) -> Option<AccessRequest> {
    let frame = Frame::new_checked(bytes).ok()?;
    match Repr::parse(&frame) {
        Ok(Repr {
            message: Message::AccessRequest(r),
            ..
        }) => Some(r),
        _ => None,
    }
}

/// `POST /api/v1/gate/frames` with one sealed frame as the body.
pub fn build_frames_request(host: &str, frame: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {FRAMES_PATH} HTTP/1.1\r\nHost: {host}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        frame.len()
    )
    .into_bytes();
    request.extend_from_slice(frame);
    request
}

/// Cuts a frames answer's body into its frames by their length fields. A length that
/// runs past the body ends the cut (what came before is kept; the core checks each frame).
pub fn split_frames(body: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut rest = body;
    while let Some(len) = rest
        .get(..LENGTH_FIELD_LEN)
        .and_then(|b| <[u8; LENGTH_FIELD_LEN]>::try_from(b).ok())
        .map(|b| usize::from(u16::from_be_bytes(b)) + LENGTH_FIELD_LEN)
    {
        let Some(frame) = rest.get(..len) else { break };
        frames.push(frame.to_vec());
        rest = rest.get(len..).unwrap_or_default();
    }
    frames
}

pub fn build_request(host: &str, bearer: &str, req: &AccessRequest) -> Vec<u8> {
    let card: String = req.card.as_bytes().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let body = format!(
        "{{\"acc_id\":\"{card}\",\"gate_id\":{},\"seq\":{},\"time\":{}}}",
        req.gate_id, req.seq, req.time
    );
    format!(
        "POST {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes one request and reads one answer: (status, body).
async fn exchange(conn: &mut TcpStream, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    conn.write_all(request).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(parsed) = parse_answer(&buf)? {
            return Ok(parsed);
        }
        if buf.len() > MAX_ANSWER {
            return Err(std::io::Error::other("answer too long"));
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// A complete HTTP/1.1 answer with a Content-Length body, `None` if more bytes are needed.
pub fn parse_answer(buf: &[u8]) -> std::io::Result<Option<(u16, Vec<u8>)>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| bad("answer header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("bad content-length"))?;
            } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked answers are not supported"));
            }
        }
    }
    let body_start = end + 4;
    match buf.get(body_start..body_start + length) {
        Some(body) => Ok(Some((status, body.to_vec()))),
        None => Ok(None),
    }
}

/// The frame the core gets for an HTTP answer (see the module documentation).
pub fn answer_frame(
    gate: &GateSpec,
    req: &AccessRequest,
    status: u16,
    body: &[u8],
) -> Option<Vec<u8>> {
    let message = match status {
        200 => {
            let reply: CheckReply = serde_json::from_slice(body).ok()?;
            let relay_ms = u16::try_from(reply.relay_ms).unwrap_or(u16::MAX);
            match Reason::ALL.into_iter().find(|r| r.as_str() == reply.reason) {
                Some(reason) => Message::Decision(Decision {
                    seq: reply.seq,
                    reason,
                    relay_ms,
                }),
                None => return unknown_reason_frame(gate, reply.seq, relay_ms),
            }
        }
        400 | 401 | 403 | 404 | 409 | 413 => Message::Error(ErrorReply {
            seq: req.seq,
            code: match status {
                400 => ErrorCode::Malformed,
                404 => ErrorCode::UnknownGate,
                409 => ErrorCode::Replay,
                413 => ErrorCode::Oversize,
                _ => ErrorCode::BadAuth,
            },
        }),
        _ => return None,
    };
    seal_message(gate, message)
}

fn seal_message(gate: &GateSpec, message: Message) -> Option<Vec<u8>> {
    let repr = Repr {
        gate_id: gate.id,
        message,
    };
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let len = repr.emit_sealed(&gate.key, &mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// A decision whose reason code no build knows (0xff), sealed: the core denies.
fn unknown_reason_frame(gate: &GateSpec, seq: u32, relay_ms: u16) -> Option<Vec<u8>> {
    let mut buf = seal_message(
        gate,
        Message::Decision(Decision {
            seq,
            reason: Reason::UnknownCard,
            relay_ms,
        }),
    )?;
    {
        let mut frame = Frame::new_checked(&mut buf[..]).ok()?;
        *frame.payload_mut().first_mut()? = 0xff;
    }
    seal(&gate.key, &mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_gate_proto::{verify, CardId};

    fn gate() -> GateSpec {
        GateSpec {
            id: 4,
            name: None,
            key: [7; 32],
            card_key: [0; 32],
            allow_list_key: [0; 32],
            mqtt_username: "gate-4".into(),
            mqtt_password: None,
        }
    }

    fn req() -> AccessRequest {
        AccessRequest {
            gate_id: 4,
            seq: 9,
            time: 100,
            card: CardId::new(&[0x04, 0xa1]).unwrap(),
        }
    }

    fn parsed(bytes: &[u8]) -> Message {
        let f = Frame::new_checked(bytes).unwrap();
        verify(&gate().key, &f).unwrap();
        Repr::parse(&f).unwrap().message
    }

    #[test]
    fn request_shape() {
        let r = String::from_utf8(build_request("h:1", "ab", &req())).unwrap();
        assert!(
            r.starts_with("POST /api/v1/access/check HTTP/1.1\r\n"),
            "{r}"
        );
        assert!(r.contains("Authorization: Bearer ab\r\n"), "{r}");
        assert!(
            r.ends_with(r#"{"acc_id":"04a1","gate_id":4,"seq":9,"time":100}"#),
            "{r}"
        );
        let len = r.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(r.contains(&format!("Content-Length: {len}\r\n")), "{r}");
    }

    #[test]
    fn other_frames_go_as_they_are_and_replies_are_cut_by_length() {
        let hb = seal_message(
            &gate(),
            Message::Heartbeat(gatehouse_gate_proto::Heartbeat {
                seq: 3,
                time: 1,
                allowlist_version: 0,
                offline_pending: 0,
                flags: gatehouse_gate_proto::HeartbeatFlags::new(true, false, true),
            }),
        )
        .unwrap();
        assert!(classify(&hb).is_none());
        let req_frame = seal_message(&gate(), Message::AccessRequest(req())).unwrap();
        assert_eq!(classify(&req_frame), Some(req()));

        let r = build_frames_request("h:1", &hb);
        let head = format!(
            "POST /api/v1/gate/frames HTTP/1.1\r\nHost: h:1\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            hb.len()
        );
        assert_eq!(&r[..head.len()], head.as_bytes());
        assert_eq!(&r[head.len()..], &hb[..]);

        let error = seal_message(
            &gate(),
            Message::Error(ErrorReply {
                seq: 3,
                code: ErrorCode::Replay,
            }),
        )
        .unwrap();
        let mut body = hb.clone();
        body.extend_from_slice(&error);
        assert_eq!(split_frames(&body), vec![hb.clone(), error.clone()]);
        assert!(split_frames(&[]).is_empty());
        // A cut-short last frame is left out.
        body.truncate(body.len() - 1);
        assert_eq!(split_frames(&body), vec![hb]);
    }

    #[test]
    fn answers_parse_in_pieces() {
        let a =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..a.len() {
            assert_eq!(parse_answer(&a[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(parse_answer(a).unwrap(), Some((200, b"hello".to_vec())));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn answers_become_sealed_frames() {
        let body = br#"{"allow":true,"reason":"granted","relay_ms":3000,"seq":9}"#;
        let m = parsed(&answer_frame(&gate(), &req(), 200, body).unwrap());
        assert_eq!(
            m,
            Message::Decision(Decision {
                seq: 9,
                reason: Reason::Granted,
                relay_ms: 3000
            })
        );
        let body = br#"{"allow":false,"reason":"unknown_card","relay_ms":0,"seq":9}"#;
        let m = parsed(&answer_frame(&gate(), &req(), 200, body).unwrap());
        assert!(matches!(
            m,
            Message::Decision(Decision {
                reason: Reason::UnknownCard,
                ..
            })
        ));

        let m = parsed(&answer_frame(&gate(), &req(), 409, b"{}").unwrap());
        assert_eq!(
            m,
            Message::Error(ErrorReply {
                seq: 9,
                code: ErrorCode::Replay
            })
        );
        let m = parsed(&answer_frame(&gate(), &req(), 401, b"{}").unwrap());
        assert_eq!(
            m,
            Message::Error(ErrorReply {
                seq: 9,
                code: ErrorCode::BadAuth
            })
        );
        assert_eq!(answer_frame(&gate(), &req(), 503, b"{}"), None);
        assert_eq!(answer_frame(&gate(), &req(), 200, b"not json"), None);

        // An unknown reason name: sealed, but its code parses as unknown (a deny in the core).
        let body = br#"{"allow":true,"reason":"new_reason","relay_ms":1,"seq":9}"#;
        let bytes = answer_frame(&gate(), &req(), 200, body).unwrap();
        let f = Frame::new_checked(&bytes[..]).unwrap();
        verify(&gate().key, &f).unwrap();
        assert!(Repr::parse(&f).is_err());
    }
}
