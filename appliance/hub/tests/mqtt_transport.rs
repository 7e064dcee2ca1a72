//! The gates' MQTT transport end to end with the real mosquitto (Debian package
//! `mosquitto`), in embedded mode: every test starts a hub whose own broker listens on a
//! free loopback port, with a store in a temporary data directory. Gates are rumqttc
//! clients using the credentials the hub provisions (store `mqtt_username`, password
//! derived from the gate's secret). Waits are bounded; nothing asserts on durations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_access::model::{HolidayRule, Schedule, Validity, Window};
use gatehouse_config::MqttMode;
use gatehouse_gate_proto::{
    verify, AccessRequest, CardId, ErrorCode, Frame, GateKey, Message, Reason, Repr,
};
use gatehouse_hub::mqtt::gate_password;
use gatehouse_store::{LogFilter, NewCard, SiteKey, Store};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, Publish, QoS};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod support;

use support::{Running, TestGate};

const GRANTED: &str = "a1b2c3d4e5f60718293a";
const UNKNOWN: &str = "d1b2c3d4e5f60718293d";

/// Upper bound of every wait for something that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched, after delivery was shown to work.
const QUIET: Duration = Duration::from_millis(700);

impl TestGate {
    fn password(&self) -> String {
        gate_password(&self.key)
    }
}

fn add_gate(store: &Store, name: &str) -> TestGate {
    let zone = match store.zone_by_name("lobby") {
        Ok(z) => z.id,
        Err(_) => store.add_zone("lobby", false).unwrap(),
    };
    let gate = support::add_gate(store, zone, name, None);
    let level = store.level_by_name("staff").unwrap().id;
    store.add_level_gate(level, i64::from(gate.id)).unwrap();
    gate
}

/// Two gates, a level granting both at all times, one card in it.
fn setup(dir: &Path) -> (TestGate, TestGate) {
    let store = Store::open(dir).unwrap();
    let site_key = SiteKey::load_or_create(dir).unwrap();
    let always = Schedule {
        weekly: std::array::from_fn(|_| {
            vec![Window {
                start: 0,
                end: 1440,
            }]
        }),
        holidays: HolidayRule::Ignore,
    };
    let staff = store.add_level("staff", &always).unwrap();
    let a = add_gate(&store, "front");
    let b = add_gate(&store, "back");
    let alice = store.add_person("alice", Validity::default()).unwrap();
    store.grant_level(alice, staff).unwrap();
    store
        .add_card(
            &site_key,
            CardId::from_hex(GRANTED).unwrap().as_bytes(),
            &NewCard {
                person: alice,
                ..NewCard::default()
            },
        )
        .unwrap();
    (a, b)
}

/// A hub on `dir` with its embedded MQTT broker on, serving until [`Running::stop`].
async fn start(dir: &Path) -> Running {
    let mut config = support::config(dir);
    config.hub.mqtt.mode = MqttMode::Embedded;
    config.hub.mqtt.listen = support::loopback();
    Running::start(&config, |_| {}).await
}

/// A gate's MQTT connection, its event loop driven by a task.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Packet, String>>,
}

static CLIENT_N: AtomicU32 = AtomicU32::new(0);

impl Client {
    /// Connects; `Err` with the broker's refusal.
    async fn connect(addr: SocketAddr, user: &str, password: &str) -> Result<Client, String> {
        let n = CLIENT_N.fetch_add(1, Ordering::Relaxed);
        let mut options = MqttOptions::new(
            format!("test-{user}-{n}"),
            addr.ip().to_string(),
            addr.port(),
        );
        options
            .set_credentials(user, password)
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(Ok(p)).is_err() {
                            break;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        // Stop at the first error instead of letting rumqttc reconnect.
                        let _ = tx.send(Err(e.to_string()));
                        break;
                    }
                }
            }
        });
        let mut c = Client { client, events };
        match c.next(WAIT).await {
            Some(Ok(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => Ok(c),
            other => Err(format!("{other:?}")),
        }
    }

    async fn next(&mut self, within: Duration) -> Option<Result<Packet, String>> {
        tokio::time::timeout(within, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match self.next(WAIT).await {
                Some(Ok(Packet::SubAck(_))) => return,
                Some(Ok(_)) => {}
                other => panic!("no SUBACK for {filter}: {other:?}"),
            }
        }
    }

    async fn publish(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// The next message delivered to this client within `within`.
    async fn message(&mut self, within: Duration) -> Option<Publish> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Ok(Packet::Publish(p))) => return Some(p),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed: {e}"),
                None => return None,
            }
        }
    }
}

fn request(key: &GateKey, gate: u32, seq: u32, acc: &str) -> Vec<u8> {
    let repr = Repr {
        gate_id: gate,
        message: Message::AccessRequest(AccessRequest {
            gate_id: gate,
            seq,
            time: 0,
            card: CardId::from_hex(acc).unwrap(),
        }),
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit_sealed(key, &mut buf).unwrap();
    buf
}

/// Checks the reply's tag with the gate's key and returns its message.
fn open_reply(gate: &TestGate, p: &Publish) -> Message {
    assert_eq!(p.topic, format!("access/response/{}", gate.id));
    let frame = Frame::new_checked(&p.payload[..]).unwrap();
    verify(&gate.key, &frame).expect("reply sealed with the gate's key");
    let repr = Repr::parse(&frame).unwrap();
    assert_eq!(repr.gate_id, gate.id);
    repr.message
}

async fn connect_gate(addr: SocketAddr, gate: &TestGate) -> Client {
    let mut c = Client::connect(addr, &gate.username, &gate.password())
        .await
        .unwrap_or_else(|e| panic!("gate {} cannot connect: {e}", gate.username));
    c.subscribe(&format!("access/response/{}", gate.id)).await;
    c
}

/// Sends a request and returns the reply message.
async fn ask(c: &mut Client, gate: &TestGate, seq: u32, acc: &str) -> Message {
    c.publish("access/request", request(&gate.key, gate.id, seq, acc))
        .await;
    let p = c.message(WAIT).await.expect("an answer from the hub");
    open_reply(gate, &p)
}

fn log_seqs(dir: &Path, gate: u32) -> Vec<(Option<u64>, Option<Reason>)> {
    let store = Store::open(dir).unwrap();
    let rows = store
        .log_query(&LogFilter {
            gate: Some(i64::from(gate)),
            limit: 100,
            ..LogFilter::default()
        })
        .unwrap();
    rows.iter().map(|r| (r.gate_seq, r.reason())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_gets_sealed_decisions_on_its_topic_and_they_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let mut gate = connect_gate(hub.mqtt(), &a).await;

    match ask(&mut gate, &a, 1, GRANTED).await {
        Message::Decision(d) => {
            assert_eq!(d.seq, 1);
            assert_eq!(d.reason, Reason::Granted);
            assert_eq!(d.relay_ms, 1500);
        }
        other => panic!("expected a decision, got {other:?}"),
    }
    match ask(&mut gate, &a, 2, UNKNOWN).await {
        Message::Decision(d) => {
            assert_eq!(d.seq, 2);
            assert_ne!(d.reason, Reason::Granted);
        }
        other => panic!("expected a decision, got {other:?}"),
    }
    // Answered only after the row was durable: both are in the log now.
    let rows = log_seqs(dir.path(), a.id);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.contains(&(Some(1), Some(Reason::Granted))), "{rows:?}");

    let addr = hub.mqtt();
    hub.stop().await;
    // The embedded broker went with the hub.
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "mosquitto still listens on {addr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_frame_is_refused_and_not_logged_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let mut gate = connect_gate(hub.mqtt(), &a).await;
    assert!(matches!(
        ask(&mut gate, &a, 7, GRANTED).await,
        Message::Decision(_)
    ));
    // The very same bytes again, then an older number.
    for seq in [7, 3] {
        match ask(&mut gate, &a, seq, GRANTED).await {
            Message::Error(e) => {
                assert_eq!(e.code, ErrorCode::Replay);
                assert_eq!(e.seq, seq);
            }
            other => panic!("expected a replay error, got {other:?}"),
        }
    }
    assert_eq!(hub.access.drops().stats().replayed, 2);
    assert_eq!(
        log_seqs(dir.path(), a.id),
        [(Some(7), Some(Reason::Granted))]
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_cannot_read_another_gates_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let mut gate_a = connect_gate(hub.mqtt(), &a).await;
    let mut gate_b = connect_gate(hub.mqtt(), &b).await;
    // B's own answers reach it.
    assert!(matches!(
        ask(&mut gate_b, &b, 1, GRANTED).await,
        Message::Decision(_)
    ));
    // B also asks for A's topic and for every response topic.
    gate_b
        .client
        .subscribe(format!("access/response/{}", a.id), QoS::AtLeastOnce)
        .await
        .unwrap();
    gate_b
        .client
        .subscribe("access/response/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    // A is answered (so the hub did publish on A's topic) ...
    assert!(matches!(
        ask(&mut gate_a, &a, 1, GRANTED).await,
        Message::Decision(_)
    ));
    // ... and none of it reaches B.
    if let Some(p) = gate_b.message(QUIET).await {
        panic!("gate B received a message on {}", p.topic);
    }
    // Nor may B read the request topic (other gates' card reads).
    let mut spy = Client::connect(hub.mqtt(), &b.username, &b.password())
        .await
        .unwrap();
    spy.subscribe("access/request").await;
    gate_a
        .publish("access/request", request(&a.key, a.id, 2, GRANTED))
        .await;
    assert!(gate_a.message(WAIT).await.is_some());
    assert!(spy.message(QUIET).await.is_none());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_sealed_with_another_gates_key_is_refused_and_logged_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = setup(dir.path());
    let mut hub = start(dir.path()).await;
    let mut gate_a = connect_gate(hub.mqtt(), &a).await;
    let mut gate_b = connect_gate(hub.mqtt(), &b).await;
    // B, holding its own key, claims to be A.
    gate_b
        .publish("access/request", request(&b.key, a.id, 1, GRANTED))
        .await;
    let deadline = Instant::now() + WAIT;
    while hub.access.drops().stats().bad_auth == 0 {
        assert!(
            Instant::now() < deadline,
            "the forged frame was not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Garbage is counted too, and answered to nobody.
    gate_b.publish("access/request", vec![0u8; 5]).await;
    while hub.access.drops().stats().malformed == 0 {
        assert!(Instant::now() < deadline, "the garbage was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gate_a.message(QUIET).await.is_none());
    assert!(gate_b.message(QUIET).await.is_none());
    assert!(log_seqs(dir.path(), a.id).is_empty());
    assert!(log_seqs(dir.path(), b.id).is_empty());
    // A's real frame with the same sequence number is still accepted: the forgery
    // consumed nothing.
    assert!(matches!(
        ask(&mut gate_a, &a, 1, GRANTED).await,
        Message::Decision(_)
    ));
    assert_eq!(log_seqs(dir.path(), a.id).len(), 1);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_added_while_running_connects_after_reprovisioning() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let mut hub = start(dir.path()).await;
    let c = {
        let store = Store::open(dir.path()).unwrap();
        add_gate(&store, "side")
    };
    let deadline = Instant::now() + WAIT;
    let mut gate = loop {
        match Client::connect(hub.mqtt(), &c.username, &c.password()).await {
            Ok(client) => break client,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "new gate still refused by the broker: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    gate.subscribe(&format!("access/response/{}", c.id)).await;
    // The gate and its level grant are two transactions: the broker may know the gate
    // before the engine's next refresh has the grant. Ask again until it has.
    let mut seq = 1;
    loop {
        match ask(&mut gate, &c, seq, GRANTED).await {
            Message::Decision(d) if d.reason == Reason::Granted => break,
            Message::Decision(d) => assert!(
                d.reason == Reason::GateNotInLevel && Instant::now() < deadline,
                "expected a grant, got {:?}",
                d.reason
            ),
            other => panic!("expected a decision, got {other:?}"),
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A wrong password is still refused.
    assert!(Client::connect(hub.mqtt(), &c.username, "wrong")
        .await
        .is_err());
    hub.stop().await;
}
