//! End-to-end tests against the real mosquitto (Debian package `mosquitto`), with rumqttc
//! as the client the hub and the gate simulator use. Every test starts its own broker on
//! a free loopback port; `Mosquitto`'s Drop kills it whatever the outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use gatehouse_broker::{
    Account, BrokerConfig, BrokerError, BrokerFiles, GateAccount, Mosquitto, MosquittoOptions,
    NvrAccount, Persistence, Provisioning, Topics,
};
use rumqttc::{Client, ConnectReturnCode, Event, MqttOptions, Packet, Publish, QoS};

/// rumqttc's error is large; boxed so helper results stay small.
type ConnError = Box<rumqttc::ConnectionError>;

const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for, after delivery was shown to work.
const QUIET: Duration = Duration::from_millis(700);

struct Site {
    _dir: tempfile::TempDir,
    provisioning: Provisioning,
    broker: Mosquitto,
}

fn site(gates: &[u32]) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let mut provisioning =
        Provisioning::new(Account::new("hub", "hub-secret"), Topics::default()).unwrap();
    for &id in gates {
        provisioning
            .add_gate(GateAccount::new(id, format!("pw-{id}")))
            .unwrap();
    }
    let broker = Mosquitto::start(
        BrokerFiles::new(dir.path().join("broker")),
        &provisioning,
        &BrokerConfig::loopback(0),
    )
    .unwrap();
    Site {
        _dir: dir,
        provisioning,
        broker,
    }
}

/// A connected rumqttc sync client whose connection is driven by its own thread.
struct TestClient {
    client: Client,
    events: mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
}

impl TestClient {
    fn connect(port: u16, user: &str, password: &str) -> Result<Self, ConnError> {
        Self::connect_session(port, user, password, true).map(|(c, _)| c)
    }

    /// Connects with client id `test-<user>` and the given clean-session flag; returns the
    /// client and whether the broker resumed a stored session.
    fn connect_session(
        port: u16,
        user: &str,
        password: &str,
        clean: bool,
    ) -> Result<(Self, bool), ConnError> {
        let mut options = MqttOptions::new(format!("test-{user}"), "127.0.0.1", port);
        options
            .set_credentials(user, password)
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(clean);
        let (client, mut connection) = Client::new(options, 16);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for event in connection.iter() {
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    // Stop after the first error instead of letting rumqttc reconnect.
                    break;
                }
            }
        });
        let mut c = TestClient { client, events };
        match c.next_packet(WAIT)? {
            Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {
                Ok((c, ack.session_present))
            }
            other => panic!("expected a CONNACK, got {other:?}"),
        }
    }

    /// Sends DISCONNECT and waits until the connection is closed.
    fn close(self) {
        self.client.disconnect().unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("the connection did not close"),
            }
        }
    }

    /// The next incoming packet, `Ok(None)` on timeout.
    fn next_packet(&mut self, within: Duration) -> Result<Option<Packet>, ConnError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(Event::Incoming(packet))) => return Ok(Some(packet)),
                Ok(Ok(Event::Outgoing(_))) => {}
                Ok(Err(e)) => return Err(Box::new(e)),
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("connection thread ended"),
            }
        }
    }

    /// Subscribes and returns the broker's SUBACK return codes.
    fn subscribe(&mut self, filter: &str) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        loop {
            match self.next_packet(WAIT).unwrap() {
                Some(Packet::SubAck(ack)) => return ack.return_codes,
                Some(_) => {}
                None => panic!("no SUBACK for {filter}"),
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK (mosquitto acknowledges a publish it
    /// drops for ACL reasons too, as MQTT 3.1.1 has no way to refuse it).
    fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
            .unwrap();
        loop {
            match self.next_packet(WAIT).unwrap() {
                Some(Packet::PubAck(_)) => return,
                Some(_) => {}
                None => panic!("no PUBACK for {topic}"),
            }
        }
    }

    /// The next message received within `within`, if any.
    fn message(&mut self, within: Duration) -> Option<Publish> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_packet(left).unwrap() {
                Some(Packet::Publish(p)) => return Some(p),
                Some(_) => {}
                None => return None,
            }
        }
    }
}

fn connect(site: &Site, user: &str, password: &str) -> TestClient {
    TestClient::connect(site.broker.port(), user, password)
        .unwrap_or_else(|e| panic!("{user} refused: {e}\n{}", site.broker.stderr_tail()))
}

fn is_refused(result: Result<TestClient, ConnError>) -> bool {
    matches!(
        result.map_err(|e| *e),
        Err(rumqttc::ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
        ))
    )
}

#[test]
fn gate_requests_and_receives_its_own_response() {
    let site = site(&[7]);
    let mut hub = connect(&site, "hub", "hub-secret");
    hub.subscribe("access/request");
    let mut gate = connect(&site, "gate-7", "pw-7");
    gate.subscribe("access/response/7");

    gate.publish("access/request", b"card 42");
    let request = hub.message(WAIT).expect("hub got the request");
    assert_eq!(request.topic, "access/request");
    assert_eq!(&request.payload[..], b"card 42");

    hub.publish("access/response/7", b"allow");
    let response = gate.message(WAIT).expect("gate got its response");
    assert_eq!(response.topic, "access/response/7");
    assert_eq!(&response.payload[..], b"allow");
}

#[test]
fn gate_never_receives_another_gates_responses() {
    let site = site(&[1, 2]);
    let mut hub = connect(&site, "hub", "hub-secret");
    let mut gate1 = connect(&site, "gate-1", "pw-1");
    gate1.subscribe("access/response/1");
    // MQTT 3.1.1 lets the broker accept this subscription (or fail it with 0x80); either
    // way nothing of gate 2's may arrive.
    gate1.subscribe("access/response/2");
    gate1.subscribe("access/response/#");
    gate1.subscribe("access/request");

    // Delivery works on its own topic...
    hub.publish("access/response/1", b"for 1");
    let own = gate1.message(WAIT).expect("own response delivered");
    assert_eq!(own.topic, "access/response/1");
    // ...but not on gate 2's, nor on other gates' requests.
    hub.publish("access/response/2", b"for 2");
    let mut gate2 = connect(&site, "gate-2", "pw-2");
    gate2.publish("access/request", b"from 2");
    assert!(
        gate1.message(QUIET).is_none(),
        "gate 1 received another gate's traffic"
    );
}

#[test]
fn gate_cannot_forge_responses_or_publish_elsewhere() {
    let site = site(&[1, 2]);
    let mut hub = connect(&site, "hub", "hub-secret");
    hub.subscribe("#");
    let mut gate2 = connect(&site, "gate-2", "pw-2");
    gate2.subscribe("access/response/2");
    let mut gate1 = connect(&site, "gate-1", "pw-1");

    gate1.publish("access/response/2", b"forged allow");
    gate1.publish("access/other", b"x");
    gate1.publish("access/request", b"real");
    let seen = hub.message(WAIT).expect("the real request arrives");
    assert_eq!(seen.topic, "access/request");
    assert_eq!(&seen.payload[..], b"real");
    assert!(hub.message(QUIET).is_none());
    assert!(gate2.message(QUIET).is_none(), "forged response delivered");
}

#[test]
fn wrong_password_and_unknown_user_are_refused() {
    let site = site(&[3]);
    let port = site.broker.port();
    assert!(is_refused(TestClient::connect(port, "gate-3", "pw-4")));
    assert!(is_refused(TestClient::connect(port, "hub", "pw-3")));
    assert!(is_refused(TestClient::connect(port, "gate-9", "pw-9")));
    // And the right one still works.
    connect(&site, "gate-3", "pw-3");
}

#[test]
fn reload_admits_new_gates_and_drops_removed_ones_without_restart() {
    let mut site = site(&[1]);
    let pid = site.broker.pid();
    let port = site.broker.port();
    assert!(is_refused(TestClient::connect(port, "gate-5", "pw-5")));

    site.provisioning
        .add_gate(GateAccount::new(5, "pw-5"))
        .unwrap();
    assert!(site.provisioning.remove_gate(1));
    site.broker.reprovision(&site.provisioning).unwrap();
    assert_eq!(site.broker.pid(), pid);

    let mut hub = connect(&site, "hub", "hub-secret");
    hub.subscribe("access/request");
    let mut gate5 = connect(&site, "gate-5", "pw-5");
    gate5.subscribe("access/response/5");
    gate5.publish("access/request", b"new gate");
    assert_eq!(
        &hub.message(WAIT).expect("request").payload[..],
        b"new gate"
    );
    hub.publish("access/response/5", b"allow");
    assert_eq!(
        &gate5.message(WAIT).expect("response").payload[..],
        b"allow"
    );
    assert!(is_refused(TestClient::connect(port, "gate-1", "pw-1")));
    assert_eq!(site.broker.pid(), pid, "same broker process");
}

#[test]
fn hub_sees_requests_from_every_gate() {
    let site = site(&[1, 2, 3]);
    let mut hub = connect(&site, "hub", "hub-secret");
    hub.subscribe("access/request");
    for id in [1, 2, 3] {
        let mut gate = connect(&site, &format!("gate-{id}"), &format!("pw-{id}"));
        gate.publish("access/request", format!("from {id}").as_bytes());
    }
    let mut got: Vec<String> = (0..3)
        .map(|_| {
            let m = hub.message(WAIT).expect("a request");
            String::from_utf8(m.payload.to_vec()).unwrap()
        })
        .collect();
    got.sort();
    assert_eq!(got, ["from 1", "from 2", "from 3"]);
}

#[test]
fn custom_topics_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::new("site/a/req", "site/a/resp").unwrap();
    let mut provisioning = Provisioning::new(Account::new("hub", "h"), topics).unwrap();
    provisioning.add_gate(GateAccount::new(4, "g")).unwrap();
    let broker = Mosquitto::start(
        BrokerFiles::new(dir.path().to_path_buf()),
        &provisioning,
        &BrokerConfig::loopback(0),
    )
    .unwrap();
    let mut hub = TestClient::connect(broker.port(), "hub", "h").unwrap();
    hub.subscribe("site/a/req");
    hub.subscribe("access/request");
    let mut gate = TestClient::connect(broker.port(), "gate-4", "g").unwrap();
    gate.subscribe("site/a/resp/4");
    gate.publish("access/request", b"default topic is not granted");
    gate.publish("site/a/req", b"ok");
    assert_eq!(&hub.message(WAIT).expect("request").payload[..], b"ok");
    assert!(hub.message(QUIET).is_none());
    hub.publish("site/a/resp/4", b"allow");
    assert_eq!(&gate.message(WAIT).expect("response").payload[..], b"allow");
}

#[test]
fn two_brokers_get_different_free_ports_and_stop_cleanly() {
    let a = site(&[1]);
    let b = site(&[1]);
    assert_ne!(a.broker.port(), b.broker.port());
    let pid = a.broker.pid();
    let status = a.broker.stop().unwrap();
    assert!(status.success() || status.code().is_some(), "{status}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "reaped"
    );
    connect(&b, "gate-1", "pw-1");
}

#[test]
fn drop_kills_and_reaps_the_broker() {
    let s = site(&[]);
    let pid = s.broker.pid();
    let port = s.broker.port();
    drop(s);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn taken_port_fails_with_mosquittos_own_words() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let provisioning = Provisioning::new(Account::new("hub", "h"), Topics::default()).unwrap();
    let err = Mosquitto::start(
        BrokerFiles::new(dir.path().to_path_buf()),
        &provisioning,
        &BrokerConfig::loopback(port),
    )
    .unwrap_err();
    match &err {
        BrokerError::Exited { stderr, .. } => {
            assert!(stderr.contains("Address already in use"), "{err}")
        }
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn missing_binary_names_the_debian_package() {
    let dir = tempfile::tempdir().unwrap();
    let provisioning = Provisioning::new(Account::new("hub", "h"), Topics::default()).unwrap();
    let options = MosquittoOptions {
        binary: "/nonexistent/mosquitto".into(),
        ..MosquittoOptions::default()
    };
    let err = Mosquitto::start_with(
        BrokerFiles::new(dir.path().to_path_buf()),
        &provisioning,
        &BrokerConfig::loopback(0),
        &options,
    )
    .unwrap_err();
    assert!(matches!(err, BrokerError::MosquittoMissing { .. }));
    assert!(err.to_string().contains("Debian package `mosquitto`"));
}

#[test]
fn persistence_directory_is_created_and_saved_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/mosquitto-db");
    let provisioning = Provisioning::new(Account::new("hub", "h"), Topics::default()).unwrap();
    let config = BrokerConfig {
        persistence: Persistence::Directory(db.clone()),
        ..BrokerConfig::loopback(0)
    };
    let broker = Mosquitto::start(
        BrokerFiles::new(dir.path().join("broker")),
        &provisioning,
        &config,
    )
    .unwrap();
    let mut hub = TestClient::connect(broker.port(), "hub", "h").unwrap();
    hub.client
        .publish(
            "access/request",
            QoS::AtLeastOnce,
            true,
            b"retained".to_vec(),
        )
        .unwrap();
    assert!(hub.next_packet(WAIT).unwrap().is_some());
    drop(hub);
    assert!(broker.stop().unwrap().success());
    assert!(
        db.join("mosquitto.db").is_file(),
        "SIGTERM saves the database"
    );
}

/// The hub, gate 1, and two NVRs: `nvr-a` under `frigate`, `nvr-b` under `site/b`.
fn nvr_site(persistence: Persistence) -> (Provisioning, BrokerConfig) {
    let mut provisioning =
        Provisioning::new(Account::new("hub", "hub-secret"), Topics::default()).unwrap();
    provisioning.add_gate(GateAccount::new(1, "pw-1")).unwrap();
    provisioning
        .add_nvr(NvrAccount::new("frigate", Account::new("nvr-a", "pw-a")))
        .unwrap();
    provisioning
        .add_nvr(NvrAccount::new("site/b", Account::new("nvr-b", "pw-b")))
        .unwrap();
    let config = BrokerConfig {
        persistence,
        ..BrokerConfig::loopback(0)
    };
    (provisioning, config)
}

#[test]
fn nvr_reaches_only_its_own_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (provisioning, config) = nvr_site(Persistence::Off);
    let broker = Mosquitto::start(
        BrokerFiles::new(dir.path().join("broker")),
        &provisioning,
        &config,
    )
    .unwrap();
    let port = broker.port();
    let mut hub = TestClient::connect(port, "hub", "hub-secret").unwrap();
    hub.subscribe("frigate/events");
    hub.subscribe("site/b/reviews");
    hub.subscribe("access/request");
    let mut a = TestClient::connect(port, "nvr-a", "pw-a").unwrap();
    // Frigate listens to its own set topics.
    a.subscribe("frigate/+/detect/set");
    a.subscribe("access/response/#");
    let mut b = TestClient::connect(port, "nvr-b", "pw-b").unwrap();

    // Another NVR's prefix, the gate link, and the hub's answers are out of reach.
    b.publish("frigate/events", b"forged by b");
    a.publish("access/request", b"nvr posing as a gate");
    hub.publish("access/response/1", b"allow");
    // Its own prefix is not.
    a.publish("frigate/cam/person/snapshot", b"jpeg");
    a.publish("frigate/events", b"a's event");
    let got = hub.message(WAIT).expect("the NVR's event");
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("frigate/events", &b"a's event"[..])
    );
    assert!(hub.message(QUIET).is_none(), "the hub got more");
    b.publish("site/b/reviews", b"b's review");
    let got = hub.message(WAIT).expect("the other NVR's review");
    assert_eq!(got.topic, "site/b/reviews");
    hub.publish("frigate/cam/detect/set", b"ON");
    assert!(
        a.message(QUIET).is_none(),
        "the hub may not write to an NVR's topics"
    );
    // (Not `publish`, which skips what arrives before the PUBACK.)
    a.client
        .publish(
            "frigate/cam/detect/set",
            QoS::AtLeastOnce,
            false,
            b"OFF".to_vec(),
        )
        .unwrap();
    let set = a.message(WAIT).expect("the NVR reads its own set topics");
    assert_eq!(&set.payload[..], b"OFF");
    assert!(
        a.message(QUIET).is_none(),
        "the NVR got the gate link's traffic"
    );
}

#[test]
fn persistent_session_keeps_queued_messages_across_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let (provisioning, mut config) = nvr_site(Persistence::Directory(db));
    config.upgrade_outgoing_qos = true;
    let files = BrokerFiles::new(dir.path().join("broker"));
    let broker = Mosquitto::start(files.clone(), &provisioning, &config).unwrap();

    let (mut hub, resumed) =
        TestClient::connect_session(broker.port(), "hub", "hub-secret", false).unwrap();
    assert!(!resumed, "a first session");
    hub.subscribe("frigate/events");
    hub.close();
    let mut nvr = TestClient::connect(broker.port(), "nvr-a", "pw-a").unwrap();
    // Frigate publishes at QoS 0: upgraded to the hub's QoS 1, it is queued too.
    nvr.client
        .publish("frigate/events", QoS::AtMostOnce, false, b"q0".to_vec())
        .unwrap();
    for i in 0..5 {
        nvr.publish("frigate/events", format!("m{i}").as_bytes());
    }
    drop(nvr);
    assert!(broker.stop().unwrap().success());

    let broker = Mosquitto::start(files, &provisioning, &config).unwrap();
    let (mut hub, resumed) =
        TestClient::connect_session(broker.port(), "hub", "hub-secret", false).unwrap();
    assert!(resumed, "the session survived the restart");
    let got: Vec<String> = (0..6)
        .map(|_| {
            let m = hub.message(WAIT).expect("a queued message");
            assert_eq!(m.qos, QoS::AtLeastOnce);
            String::from_utf8(m.payload.to_vec()).unwrap()
        })
        .collect();
    assert_eq!(got, ["q0", "m0", "m1", "m2", "m3", "m4"]);
}
