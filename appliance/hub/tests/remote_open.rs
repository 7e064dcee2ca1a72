//! Remote door open end to end over real sockets on 127.0.0.1: an admin's
//! `POST /api/v1/gates/{id}/open` reaches a gate as a `RemoteOpen` frame sealed with its
//! key on each transport (pushed on a TCP connection, published on an MQTT gate's response
//! topic through the real mosquitto, in the reply to an HTTP gate's next heartbeat), and
//! `GET /api/v1/access/opens` shows the request going from `requested` to `delivered`, or
//! to `expired` when the gate never comes. Roles: an operator may open, an installer may
//! not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_config::MqttMode;
use gatehouse_gate_proto::{
    verify, AllowListRequest, Frame, Heartbeat, HeartbeatFlags, Message, RemoteOpen, Repr,
    MAX_FRAME_LEN,
};
use gatehouse_hub::mqtt::gate_password;
use gatehouse_store::Store;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

mod support;

use support::{Session, Setup, TestGate, IVAN, IVAN_PW, OSCAR, OSCAR_PW};

/// Upper bound on waiting for something that is expected to happen (never a pass/fail
/// threshold on timing: a slow machine only makes the test slower).
const WAIT: Duration = Duration::from_secs(20);

struct Site {
    base: support::Site,
    front: TestGate,
    back: TestGate,
}

/// Adds gate `name`, disabled unless `enabled`.
fn add_gate(store: &Store, zone: i64, name: &str, enabled: bool) -> TestGate {
    let gate = support::add_gate(store, zone, name, None);
    if !enabled {
        store.set_gate_enabled(i64::from(gate.id), false).unwrap();
    }
    gate
}

impl Site {
    /// A hub with HTTP and TCP gate transports (and the embedded MQTT broker if `mqtt`),
    /// gates "front", "back" and "shut" (disabled), an operator and an installer;
    /// commands expire after `expiry`.
    async fn start(mqtt: bool, expiry: Option<Duration>) -> Site {
        let setup = Setup::new().with_admins(&[OSCAR, IVAN]).with_config(|c| {
            c.hub.gate_tcp_listen = Some(support::loopback());
            if mqtt {
                c.hub.mqtt.mode = MqttMode::Embedded;
                c.hub.mqtt.listen = support::loopback();
            }
        });
        let (front, back) = {
            let store = setup.store();
            let zone = store.add_zone("lobby", false).unwrap();
            let front = add_gate(&store, zone, "front", true);
            let back = add_gate(&store, zone, "back", true);
            add_gate(&store, zone, "shut", false);
            (front, back)
        };
        let base = setup
            .start_with(|hub| {
                if let Some(e) = expiry {
                    hub.access().gate_commands().set_expiry(e);
                }
            })
            .await;
        Site { base, front, back }
    }

    async fn stop(mut self) {
        self.base.stop().await;
    }

    fn url(&self, path: &str) -> String {
        self.base.url(path)
    }

    /// Logs in; returns the session.
    async fn login(&self, name: &str, password: &str) -> Session {
        self.base.login(name, password).await
    }

    async fn call(
        &self,
        token: &Session,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let r = self.base.send(Some(&token.token), method, path, body).await;
        (r.status, r.json)
    }

    /// Opens gate `gate` (id or name) with `reason`: (status, reply).
    async fn open(&self, token: &Session, gate: &str, reason: &str) -> (u16, Value) {
        self.call(
            token,
            "POST",
            &format!("/api/v1/gates/{gate}/open"),
            Some(json!({ "reason": reason })),
        )
        .await
    }

    /// The remote-open log row of request `id`.
    async fn open_row(&self, token: &Session, id: u64) -> Value {
        let (status, r) = self.call(token, "GET", "/api/v1/access/opens", None).await;
        assert_eq!(status, 200, "{r}");
        r["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["id"] == id)
            .unwrap_or_else(|| panic!("request {id} not in {r}"))
            .clone()
    }

    /// Waits until request `id` is in `state`; returns its row.
    async fn wait_state(&self, token: &Session, id: u64, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let row = self.open_row(token, id).await;
            if row["state"] == state {
                return row;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "request {id} never became {state}: {row}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One frame over `POST /api/v1/gate/frames`; the reply frames.
    async fn http_frame(&self, frame: Vec<u8>) -> Vec<Vec<u8>> {
        let r = self
            .base
            .client
            .post(self.url("/api/v1/gate/frames"))
            .header("content-type", "application/octet-stream")
            .body(frame)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        split_frames(&r.bytes().await.unwrap())
    }
}

fn sealed(gate: &TestGate, message: Message) -> Vec<u8> {
    let repr = Repr {
        gate_id: gate.id,
        message,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit_sealed(&gate.key, &mut buf).unwrap();
    buf
}

fn heartbeat(gate: &TestGate, seq: u32) -> Vec<u8> {
    sealed(
        gate,
        Message::Heartbeat(Heartbeat {
            seq,
            time: 1_800_000_000,
            allowlist_version: 0,
            offline_pending: 0,
            flags: HeartbeatFlags::new(true, false, true),
        }),
    )
}

fn allow_list_request(gate: &TestGate, seq: u32) -> Vec<u8> {
    sealed(
        gate,
        Message::AllowListRequest(AllowListRequest {
            seq,
            have_version: 0,
        }),
    )
}

/// Frames back to back, cut by their length fields.
fn split_frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]])) + 2;
        out.push(bytes[..len].to_vec());
        bytes = &bytes[len..];
    }
    assert!(bytes.is_empty(), "a partial frame");
    out
}

/// Verifies a frame with the gate's key and parses it.
fn open_frame(gate: &TestGate, bytes: &[u8]) -> Message {
    let frame = Frame::new_checked(bytes).unwrap();
    assert_eq!(frame.gate_id(), gate.id);
    verify(&gate.key, &frame).expect("sealed with the gate's key");
    Repr::parse(&frame).unwrap().message
}

fn remote_opens(gate: &TestGate, frames: &[Vec<u8>]) -> Vec<RemoteOpen> {
    frames
        .iter()
        .filter_map(|f| match open_frame(gate, f) {
            Message::RemoteOpen(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn request_id(reply: &Value) -> u64 {
    reply["request_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no request_id in {reply}"))
}

/// A gate on the raw-TCP transport.
struct TcpGate {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl TcpGate {
    async fn connect(addr: SocketAddr) -> TcpGate {
        TcpGate {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).await.unwrap();
    }

    async fn next_frame(&mut self) -> Vec<u8> {
        loop {
            if self.buf.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]])) + 2;
                if self.buf.len() >= len {
                    return self.buf.drain(..len).collect();
                }
            }
            let mut chunk = [0u8; MAX_FRAME_LEN];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a frame from the hub")
                .unwrap();
            assert!(n > 0, "the hub closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends an allow-list request and reads its answer to the last chunk: once it came,
    /// the hub has handled the frame (and registered the connection).
    async fn sync(&mut self, gate: &TestGate, seq: u32) {
        self.send(&allow_list_request(gate, seq)).await;
        loop {
            match open_frame(gate, &self.next_frame().await) {
                Message::AllowListDelta(d) if !d.more => return,
                Message::AllowListDelta(_) => {}
                other => panic!("expected the allow-list answer, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_tcp_gate_gets_the_command_pushed_and_the_log_shows_it_delivered() {
    let site = Site::start(false, None).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let mut gate = TcpGate::connect(site.base.hub.tcp()).await;
    gate.sync(&site.front, 1).await;

    let (status, reply) = site.open(&oscar, "front", "courier at the gate").await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["delivered"], true, "pushed on the live connection");
    let id = request_id(&reply);
    let frame = gate.next_frame().await;
    assert_eq!(
        open_frame(&site.front, &frame),
        Message::RemoteOpen(RemoteOpen {
            seq: u32::try_from(id).unwrap(),
            relay_ms: 1500,
        })
    );
    let row = site.open_row(&oscar, id).await;
    assert_eq!(row["kind"], "remote_open");
    assert_eq!(row["state"], "delivered");
    assert_eq!(row["admin"], "oscar");
    assert_eq!(row["reason"], "courier at the gate");
    assert_eq!(row["gate"], site.front.id);
    assert_eq!(row["gate_name"], "front");
    assert!(row["delivered_at"].is_string(), "{row}");

    // The next one has a higher command number; by id works as well as by name. The
    // other gate's connection gets nothing.
    let mut other = TcpGate::connect(site.base.hub.tcp()).await;
    other.sync(&site.back, 1).await;
    let (status, reply) = site
        .open(&oscar, &site.front.id.to_string(), "second delivery")
        .await;
    assert_eq!((status, &reply["delivered"]), (202, &json!(true)));
    let second = request_id(&reply);
    assert!(second > id);
    let Message::RemoteOpen(o) = open_frame(&site.front, &gate.next_frame().await) else {
        panic!("not a remote open");
    };
    assert_eq!(u64::from(o.seq), second);
    other.sync(&site.back, 2).await; // only the allow-list answer is waiting there

    // Once the connection is gone the gate has no live link: queued, not delivered.
    drop(gate);
    let deadline = tokio::time::Instant::now() + WAIT;
    let third = loop {
        let (status, reply) = site.open(&oscar, "front", "after disconnect").await;
        assert_eq!(status, 202);
        if reply["delivered"] == false {
            break request_id(&reply);
        }
        // The hub may not have seen the close yet; that one went out on a dead socket
        // or was written before the close: either way it is settled.
        assert!(
            tokio::time::Instant::now() < deadline,
            "still delivered: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(site.open_row(&oscar, third).await["state"], "requested");
    // It goes out on the gate's next connection, after the answer to its first frame.
    let mut again = TcpGate::connect(site.base.hub.tcp()).await;
    again.sync(&site.front, 3).await;
    loop {
        // (An earlier try whose write failed would have been queued first.)
        let Message::RemoteOpen(o) = open_frame(&site.front, &again.next_frame().await) else {
            panic!("not a remote open");
        };
        assert!(u64::from(o.seq) <= third);
        if u64::from(o.seq) == third {
            break;
        }
    }
    site.wait_state(&oscar, third, "delivered").await;
    site.stop().await;
}

#[tokio::test]
async fn an_http_gate_gets_the_command_in_the_reply_to_its_next_heartbeat() {
    let site = Site::start(false, None).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    // Nothing is owed yet: a heartbeat's reply is empty.
    assert!(site.http_frame(heartbeat(&site.back, 1)).await.is_empty());

    let (status, reply) = site.open(&oscar, "back", "delivery van").await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["delivered"], false, "an HTTP gate has no live link");
    let id = request_id(&reply);
    assert_eq!(site.open_row(&oscar, id).await["state"], "requested");

    let frames = site.http_frame(heartbeat(&site.back, 2)).await;
    assert_eq!(
        remote_opens(&site.back, &frames),
        [RemoteOpen {
            seq: u32::try_from(id).unwrap(),
            relay_ms: 1500
        }]
    );
    let row = site.wait_state(&oscar, id, "delivered").await;
    assert_eq!(
        (&row["admin"], &row["reason"]),
        (&json!("oscar"), &json!("delivery van"))
    );
    // Delivered once: the next heartbeat's reply is empty again.
    assert!(site.http_frame(heartbeat(&site.back, 3)).await.is_empty());
    // A replayed heartbeat is refused and carries no command.
    let (status, reply) = site.open(&oscar, "back", "again").await;
    assert_eq!(status, 202);
    let frames = site.http_frame(heartbeat(&site.back, 3)).await;
    assert!(
        remote_opens(&site.back, &frames).is_empty(),
        "replayed frame got a command"
    );
    assert_eq!(
        site.open_row(&oscar, request_id(&reply)).await["state"],
        "requested"
    );
    site.stop().await;
}

/// A gate's MQTT connection.
struct MqttGate {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Packet>,
}

impl MqttGate {
    async fn connect(addr: SocketAddr, gate: &TestGate) -> MqttGate {
        let mut options = MqttOptions::new(
            format!("test-{}", gate.username),
            addr.ip().to_string(),
            addr.port(),
        );
        options
            .set_credentials(&gate.username, gate_password(&gate.key))
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(ev) = eventloop.poll().await {
                if let Event::Incoming(p) = ev {
                    if tx.send(p).is_err() {
                        break;
                    }
                }
            }
        });
        let mut g = MqttGate { client, events };
        g.client
            .subscribe(format!("access/response/{}", gate.id), QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let Packet::SubAck(_) = g.next().await {
                return g;
            }
        }
    }

    async fn next(&mut self) -> Packet {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("a packet from the broker")
            .expect("the connection is up")
    }

    async fn message(&mut self, gate: &TestGate) -> Message {
        loop {
            if let Packet::Publish(p) = self.next().await {
                assert_eq!(p.topic, format!("access/response/{}", gate.id));
                return open_frame(gate, &p.payload);
            }
        }
    }
}

#[tokio::test]
async fn an_mqtt_gate_gets_the_command_published_on_its_topic() {
    let site = Site::start(true, None).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let mut gate = MqttGate::connect(site.base.hub.mqtt(), &site.front).await;
    // The gate speaks (an allow-list request) and gets its answer: the hub heard it.
    gate.client
        .publish(
            "access/request",
            QoS::AtLeastOnce,
            false,
            allow_list_request(&site.front, 1),
        )
        .await
        .unwrap();
    loop {
        match gate.message(&site.front).await {
            Message::AllowListDelta(d) if !d.more => break,
            Message::AllowListDelta(_) => {}
            other => panic!("expected the allow-list answer, got {other:?}"),
        }
    }
    let (status, reply) = site.open(&oscar, "front", "fire drill").await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["delivered"], true, "published on the gate's topic");
    let id = request_id(&reply);
    assert_eq!(
        gate.message(&site.front).await,
        Message::RemoteOpen(RemoteOpen {
            seq: u32::try_from(id).unwrap(),
            relay_ms: 1500,
        })
    );
    assert_eq!(site.open_row(&oscar, id).await["state"], "delivered");
    site.stop().await;
}

#[tokio::test]
async fn a_command_for_a_gate_that_never_comes_expires() {
    let site = Site::start(false, Some(Duration::from_millis(300))).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let (status, reply) = site.open(&oscar, "front", "nobody there").await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["delivered"], false);
    let id = request_id(&reply);
    let row = site.wait_state(&oscar, id, "expired").await;
    assert!(row["delivered_at"].is_null(), "{row}");
    // The gate coming later does not get it: a door never opens late.
    let mut gate = TcpGate::connect(site.base.hub.tcp()).await;
    gate.sync(&site.front, 1).await;
    let frames = site.http_frame(heartbeat(&site.front, 2)).await;
    assert!(remote_opens(&site.front, &frames).is_empty());
    assert_eq!(site.open_row(&oscar, id).await["state"], "expired");
    // Filtered by state and gate.
    let (_, r) = site
        .call(
            &oscar,
            "GET",
            "/api/v1/access/opens?state=expired&gate=front",
            None,
        )
        .await;
    assert_eq!(r["rows"].as_array().unwrap().len(), 1, "{r}");
    let (_, r) = site
        .call(&oscar, "GET", "/api/v1/access/opens?gate=back", None)
        .await;
    assert!(r["rows"].as_array().unwrap().is_empty(), "{r}");
    site.stop().await;
}

#[tokio::test]
async fn an_operator_may_open_an_installer_may_not_and_bad_requests_say_why() {
    let site = Site::start(false, None).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let ivan = site.login("ivan", IVAN_PW).await;

    let (status, reply) = site.open(&ivan, "front", "let me in").await;
    assert_eq!(status, 403, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("open doors"),
        "{reply}"
    );
    let (status, _) = site.call(&ivan, "GET", "/api/v1/access/opens", None).await;
    assert_eq!(status, 403, "an installer reads no logs");
    // Nothing was logged for the refused request.
    let (_, r) = site.call(&oscar, "GET", "/api/v1/access/opens", None).await;
    assert!(r["rows"].as_array().unwrap().is_empty(), "{r}");

    let (status, reply) = site
        .call(&oscar, "POST", "/api/v1/gates/front/open", Some(json!({})))
        .await;
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("`reason`"),
        "{reply}"
    );
    let (status, reply) = site.open(&oscar, "front", "   ").await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = site.open(&oscar, "front", &"x".repeat(201)).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("200"), "{reply}");
    let (status, reply) = site
        .call(
            &oscar,
            "POST",
            "/api/v1/gates/front/open",
            Some(json!({"reason": "ok", "relay_ms": 5})),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = site.open(&oscar, "nowhere", "lost").await;
    assert_eq!(status, 404, "{reply}");
    let (status, reply) = site.open(&oscar, "shut", "closed for works").await;
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("disabled"),
        "{reply}"
    );
    let (_, r) = site.call(&oscar, "GET", "/api/v1/access/opens", None).await;
    assert!(
        r["rows"].as_array().unwrap().is_empty(),
        "refusals are not logged: {r}"
    );

    let (status, reply) = site.open(&oscar, "front", "operator may").await;
    assert_eq!(status, 202, "{reply}");
    site.stop().await;
}
