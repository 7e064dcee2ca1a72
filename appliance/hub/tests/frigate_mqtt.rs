//! Frigate over MQTT end to end, with the real mosquitto (Debian package `mosquitto`):
//! NVRs are rumqttc clients logging in with the account the hub derives for their event
//! source, publishing Frigate's `events` and `reviews` payloads.
//!
//! - [`frigate_messages_fold_into_events_and_notify_the_console`]: embedded mode; an NVR
//!   source added while the hub runs gets its account and subscriptions; a tracked
//!   object's new/update/end and a review's new/update/end become one event each, ended,
//!   with the right severity, camera and zone; the console feed has the review's firing
//!   and resolved notifications; bad payloads (not JSON, wrong types, oversize) are
//!   counted and the next good message still commits.
//! - [`nvr_accounts_reach_only_their_own_prefix`]: embedded mode; an NVR cannot publish on
//!   the gates' request topic nor read the hub's answers, and a second NVR cannot publish
//!   under the first one's prefix.
//! - [`nothing_is_lost_while_the_hub_is_down`]: the real `gatehouse hub` binary as a child
//!   process, in external mode against a mosquitto this test runs; a burst of 1000 the
//!   hub is working through when it is SIGKILLed and 200 more published while it is down
//!   all arrive, once each, when it starts again.
//! - [`embedded_broker_keeps_what_it_acknowledged_when_the_hub_dies`]: the binary in
//!   embedded mode, SIGKILLed in the middle of a burst (its mosquitto gets SIGTERM and
//!   saves its persistence database): after the restart every message the broker had
//!   acknowledged to the NVR is stored, once.
//!
//! The binary tests build `gatehouse` once per test binary (`cargo build -p gatehouse`
//! into this target directory).
//!
//! Waits are bounded; nothing asserts on durations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_alerts::model::{Lifecycle, NotificationKind, Severity, SourceKind};
use gatehouse_broker::{
    Account, BrokerConfig, BrokerFiles, Mosquitto, NvrAccount, Persistence, Provisioning, Topics,
};
use gatehouse_config::MqttMode;
use gatehouse_hub::events::frigate::FrigateCounters;
use gatehouse_hub::mqtt::nvr_mqtt_credentials;
use gatehouse_store::events::EventFilter;
use gatehouse_store::{SiteKey, Store};
use rumqttc::{Client, ConnectReturnCode, Event, MqttOptions, Packet, Publish, QoS};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

mod support;

use support::Running;

/// Upper bound of every wait for something that should happen.
const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing arrives" is watched, after delivery was shown to work.
const QUIET: Duration = Duration::from_millis(700);

// ---- payloads -------------------------------------------------------------------------

fn now_s() -> f64 {
    OffsetDateTime::now_utc().unix_timestamp() as f64
}

/// A `<prefix>/events` message about tracked object `id`.
fn object(id: &str, kind: &str, zones: &[&str], snapshot: bool) -> String {
    let after = serde_json::json!({
        "id": id, "camera": "driveway", "label": "person", "sub_label": null,
        "top_score": 0.82, "false_positive": false, "start_time": now_s(),
        "end_time": if kind == "end" { serde_json::json!(now_s()) } else { serde_json::Value::Null },
        "current_zones": zones, "entered_zones": zones,
        "has_snapshot": snapshot, "has_clip": false,
    });
    serde_json::json!({"type": kind, "before": after, "after": after}).to_string()
}

/// A `<prefix>/reviews` message about review item `id`.
fn review(id: &str, kind: &str, severity: &str) -> String {
    let after = serde_json::json!({
        "id": id, "camera": "gate", "start_time": now_s(),
        "end_time": if kind == "end" { serde_json::json!(now_s()) } else { serde_json::Value::Null },
        "severity": severity,
        "data": {"detections": ["1718000000.1-abc"], "objects": ["person"],
                 "sub_labels": [], "zones": ["entrance"], "audio": []},
    });
    serde_json::json!({"type": kind, "before": after, "after": after}).to_string()
}

// ---- an MQTT test client ---------------------------------------------------------------

/// A connected rumqttc sync client whose connection is driven by its own thread.
struct TestClient {
    client: Client,
    events: mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    /// Messages that arrived while waiting for something else.
    pending: std::collections::VecDeque<Publish>,
}

impl TestClient {
    fn connect(port: u16, id: &str, user: &str, password: &str) -> Result<Self, String> {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options
            .set_credentials(user, password)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(4 << 20, 4 << 20)
            .set_inflight(1000);
        let (client, mut connection) = Client::new(options, 512);
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for event in connection.iter() {
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    break;
                }
            }
        });
        let mut c = TestClient {
            client,
            events,
            pending: Default::default(),
        };
        loop {
            match c.next(WAIT) {
                Some(Ok(Packet::ConnAck(a))) if a.code == ConnectReturnCode::Success => {
                    return Ok(c)
                }
                Some(Ok(Packet::ConnAck(a))) => return Err(format!("{:?}", a.code)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err("no CONNACK".into()),
            }
        }
    }

    /// Connects, retrying while the account is not provisioned yet.
    fn connect_when_provisioned(port: u16, id: &str, user: &str, password: &str) -> Self {
        let deadline = Instant::now() + WAIT;
        loop {
            match Self::connect(port, id, user, password) {
                Ok(c) => return c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{user} cannot log in: {e}"),
            }
        }
    }

    /// The next incoming packet other than a message (kept for [`TestClient::message`]),
    /// or connection error, within `within`.
    fn next(&mut self, within: Duration) -> Option<Result<Packet, String>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.pending.push_back(p),
                Ok(Ok(Event::Incoming(p))) => return Some(Ok(p)),
                Ok(Ok(Event::Outgoing(_))) => {}
                Ok(Err(e)) => return Some(Err(e.to_string())),
                Err(_) => return None,
            }
        }
    }

    /// Publishes every message at QoS 1 and waits until the broker acknowledged them all
    /// (mosquitto acknowledges a publish its ACL drops too).
    fn publish_all(&mut self, messages: &[(&str, Vec<u8>)]) {
        for (topic, payload) in messages {
            self.client
                .publish(*topic, QoS::AtLeastOnce, false, payload.clone())
                .unwrap();
        }
        let mut acked = 0;
        while acked < messages.len() {
            match self.next(WAIT) {
                Some(Ok(Packet::PubAck(_))) => acked += 1,
                Some(Ok(_)) => {}
                other => panic!(
                    "waiting for PUBACKs ({acked}/{}): {other:?}",
                    messages.len()
                ),
            }
        }
    }

    fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish_all(&[(topic, payload.into())]);
    }

    fn subscribe(&mut self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        loop {
            match self.next(WAIT) {
                Some(Ok(Packet::SubAck(_))) => return,
                Some(Ok(_)) => {}
                other => panic!("no SUBACK for {filter}: {other:?}"),
            }
        }
    }

    /// The next message within `within`, if any.
    fn message(&mut self, within: Duration) -> Option<Publish> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Some(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection failed: {e}"),
                None => return self.pending.pop_front(),
            }
        }
    }
}

// ---- helpers ---------------------------------------------------------------------------

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every event of `source`, by external id.
fn events_by_external_id(
    store: &Store,
    source: &str,
) -> BTreeMap<String, Vec<gatehouse_alerts::model::Event>> {
    let mut by_id: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store
            .list_events(&EventFilter {
                source: Some(source.to_owned()),
                after_seq: Some(after),
                limit: 1000,
                ..EventFilter::default()
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page {
            by_id
                .entry(e.new.external_id.clone().unwrap_or_default())
                .or_default()
                .push(e);
        }
    }
    by_id
}

/// Publishes probes on `<prefix>/reviews` until one is stored: then the hub is
/// subscribed to `prefix`. Returns the probes' external ids.
fn wait_subscribed(nvr: &mut TestClient, store: &Store, source: &str, prefix: &str) -> Vec<String> {
    let topic = format!("{prefix}/reviews");
    let mut probes = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let id = format!("probe-{}", probes.len());
        nvr.publish(&topic, review(&id, "new", "detection"));
        probes.push(format!("review:{id}"));
        let stored = std::iter::repeat_n((), 10).any(|()| {
            let events = events_by_external_id(store, source);
            if probes.iter().any(|p| events.contains_key(p)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
            false
        });
        if stored {
            return probes;
        }
        assert!(Instant::now() < deadline, "the hub never took {topic}");
    }
}

/// A hub in this process (embedded mode), served on its own runtime until dropped.
struct EmbeddedHub {
    runtime: tokio::runtime::Runtime,
    hub: Running,
    mqtt_port: u16,
    frigate: Arc<FrigateCounters>,
    access: gatehouse_hub::access::AccessService,
}

impl EmbeddedHub {
    fn start(dir: &Path) -> EmbeddedHub {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut config = support::config(dir);
        config.hub.mqtt.mode = MqttMode::Embedded;
        config.hub.mqtt.listen = support::loopback();
        let mut frigate = None;
        let hub = runtime.block_on(Running::start(&config, |hub| {
            frigate = hub.frigate_counters();
        }));
        EmbeddedHub {
            mqtt_port: hub.mqtt().port(),
            frigate: frigate.unwrap(),
            access: hub.access.clone(),
            hub,
            runtime,
        }
    }
}

impl Drop for EmbeddedHub {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.hub.try_stop());
    }
}

/// Registers NVR source `name` under `prefix`; returns its MQTT user name and password,
/// as the admin is shown them.
fn add_nvr(dir: &Path, store: &Store, name: &str, prefix: &str) -> (String, String) {
    let (s, _key) = store
        .add_event_source(
            name,
            SourceKind::Nvr,
            Some(prefix),
            Some("http://nvr.lan:5000"),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    let site_key = SiteKey::load_or_create(dir).unwrap();
    nvr_mqtt_credentials(store, &site_key, s.id).unwrap()
}

// ---- embedded mode ---------------------------------------------------------------------

#[test]
fn frigate_messages_fold_into_events_and_notify_the_console() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir).unwrap();
    let hub = EmbeddedHub::start(dir);
    // Added while the hub runs: it provisions the account and subscribes.
    let (user, password) = add_nvr(dir, &store, "yard", "frigate");
    assert_eq!(user, "nvr-yard");
    let mut nvr = TestClient::connect_when_provisioned(hub.mqtt_port, "frigate", &user, &password);
    let probes = wait_subscribed(&mut nvr, &store, "yard", "frigate");

    // A tracked object: new, update (enters a zone, has a snapshot), end. A review item:
    // new as a detection, raised to an alert, ended.
    let obj = "1718000001.5-p1";
    let rev = "1718000002.5-r1";
    nvr.publish_all(&[
        ("frigate/events", object(obj, "new", &[], false).into()),
        ("frigate/reviews", review(rev, "new", "detection").into()),
        (
            "frigate/events",
            object(obj, "update", &["porch"], true).into(),
        ),
        ("frigate/reviews", review(rev, "update", "alert").into()),
        (
            "frigate/events",
            object(obj, "end", &["porch"], true).into(),
        ),
        ("frigate/reviews", review(rev, "end", "alert").into()),
    ]);
    // Bad payloads, then one good message: it still commits.
    let oversize = format!(
        "{{\"pad\":\"{}\"}}",
        "x".repeat(gatehouse_alerts::model::limits::FRIGATE_PAYLOAD)
    );
    let wrong_types = r#"{"type":"new","after":{"id":"1.2-w","camera":"gate","label":"person","start_time":"noon"}}"#;
    nvr.publish_all(&[
        ("frigate/events", b"{not json".to_vec()),
        ("frigate/events", wrong_types.as_bytes().to_vec()),
        ("frigate/reviews", b"[1,2,3]".to_vec()),
        ("frigate/reviews", oversize.into_bytes()),
        (
            "frigate/events",
            object("1718000003.5-after", "new", &[], false).into(),
        ),
    ]);

    // Messages about different Frigate ids commit in any order (each is submitted on its
    // own task; only one id's messages keep their order): wait for all three.
    let events = wait_for("the good message after the bad ones, and both ends", || {
        let e = events_by_external_id(&store, "yard");
        let ended = |k: &str| {
            e.get(k)
                .is_some_and(|v| v.iter().all(|ev| ev.new.lifecycle == Lifecycle::Ended))
        };
        (e.contains_key("event:1718000003.5-after")
            && ended(&format!("event:{obj}"))
            && ended(&format!("review:{rev}")))
        .then_some(e)
    });
    // One event per Frigate id, whatever the number of messages.
    assert!(events.values().all(|v| v.len() == 1), "{events:#?}");
    let (probed, others): (Vec<&String>, Vec<&String>) =
        events.keys().partition(|k| k.contains("probe-"));
    assert!(probed.iter().all(|p| probes.contains(p)), "{probed:?}");
    let mut expected = [
        format!("event:{obj}"),
        format!("review:{rev}"),
        "event:1718000003.5-after".to_owned(),
    ];
    expected.sort();
    assert_eq!(others, expected.iter().collect::<Vec<_>>());

    let o = &events[&format!("event:{obj}")][0];
    assert_eq!(o.new.lifecycle, Lifecycle::Ended);
    assert!(o.ended_at.is_some());
    assert_eq!(o.new.kind, "object.person");
    assert_eq!(o.new.severity, Severity::Info);
    assert_eq!(o.new.camera.as_deref(), Some("driveway"));
    assert_eq!(o.new.zone.as_deref(), Some("porch"), "filled by the update");
    assert_eq!(
        o.new.snapshot_url.as_deref(),
        Some(format!("http://nvr.lan:5000/api/events/{obj}/snapshot.jpg").as_str())
    );
    let r = &events[&format!("review:{rev}")][0];
    assert_eq!(r.new.lifecycle, Lifecycle::Ended);
    assert_eq!(r.new.kind, "review.person");
    assert_eq!(r.new.severity, Severity::Critical, "raised by the update");
    assert_eq!(r.new.camera.as_deref(), Some("gate"));
    assert_eq!(r.new.zone.as_deref(), Some("entrance"));

    // The console (rule "warning and above") got the review's firing and resolved
    // notifications; the object event (info) none.
    let feed = store.console_feed(0, 1000).unwrap();
    let of = |id| {
        feed.iter()
            .filter(|n| n.event.id == id)
            .map(|n| n.kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of(r.id),
        [NotificationKind::Firing, NotificationKind::Resolved]
    );
    assert!(of(o.id).is_empty());

    // Counted: the probes that arrived (those before the subscription did not), the six
    // lifecycle messages and the good one after the bad ones committed; five received
    // besides.
    let probes_in = events.keys().filter(|k| k.contains("probe-")).count() as u64;
    let s = wait_for("the counters to settle", || {
        let s = hub.frigate.stats();
        (s.committed == probes_in + 7).then_some(s)
    });
    assert_eq!(s.received, probes_in + 11);
    assert_eq!(
        s.invalid,
        BTreeMap::from([
            ("field", 1),
            ("not_json", 1),
            ("shape", 1),
            ("too_large", 1)
        ])
    );
    assert_eq!(s.dropped(), 4);
    assert_eq!(s.store_errors, 0);
    drop(nvr);
}

#[test]
fn nvr_accounts_reach_only_their_own_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir).unwrap();
    let (user_a, pw_a) = add_nvr(dir, &store, "yard", "frigate");
    let (user_b, pw_b) = add_nvr(dir, &store, "lot", "site/lot");
    let hub = EmbeddedHub::start(dir);
    let port = hub.mqtt_port;
    let hub_pw = std::fs::read_to_string(dir.join("mqtt-hub.password")).unwrap();
    // The hub's own account, as a second client: sees what gates would get.
    let mut watcher =
        TestClient::connect(port, "test-watcher", "gatehouse-hub", hub_pw.trim()).unwrap();
    watcher.subscribe("access/response/#");
    let mut a = TestClient::connect(port, "frigate-a", &user_a, &pw_a).unwrap();
    let mut b = TestClient::connect(port, "frigate-b", &user_b, &pw_b).unwrap();
    wait_subscribed(&mut a, &store, "yard", "frigate");
    wait_subscribed(&mut b, &store, "lot", "site/lot");
    let drops_before = hub.access.drops().stats();

    // NVR a: may not pose as a gate nor read the hub's answers.
    a.subscribe("access/response/#");
    a.publish("access/request", b"not a frame".to_vec());
    // NVR b: may not publish under a's prefix.
    b.publish(
        "frigate/reviews",
        review("1718000009.1-forged", "new", "alert"),
    );
    // The watcher, as the hub, publishes an answer: delivered to it, not to the NVR.
    watcher.publish("access/response/1", b"allow".to_vec());
    assert_eq!(
        watcher
            .message(WAIT)
            .expect("the hub's account reads answers")
            .topic,
        "access/response/1"
    );
    // Sync point: a message each NVR may send, after the refused ones.
    a.publish(
        "frigate/events",
        object("1718000009.2-ok", "new", &[], false),
    );
    b.publish(
        "site/lot/reviews",
        review("1718000009.3-ok", "new", "alert"),
    );
    wait_for("both NVRs' own messages", || {
        (events_by_external_id(&store, "yard").contains_key("event:1718000009.2-ok")
            && events_by_external_id(&store, "lot").contains_key("review:1718000009.3-ok"))
        .then_some(())
    });
    let forged = "review:1718000009.1-forged";
    assert!(!events_by_external_id(&store, "yard").contains_key(forged));
    assert!(!events_by_external_id(&store, "lot").contains_key(forged));
    assert_eq!(
        hub.access.drops().stats(),
        drops_before,
        "the NVR's request reached the hub"
    );
    assert!(a.message(QUIET).is_none(), "the NVR read a gate's answer");
    assert_eq!(hub.frigate.stats().unknown_topic, 0);
}

// ---- the real binary, SIGKILLed ---------------------------------------------------------

/// `gatehouse` (the binary crate), built once per test binary in this target directory.
fn gatehouse_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // <target>/<profile>/deps/frigate_mqtt-<hash>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let profile = profile_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let profile_arg = if profile == "debug" {
            "dev"
        } else {
            profile.as_str()
        };
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "gatehouse", "--bin", "gatehouse"])
            .args(["--profile", profile_arg, "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .unwrap();
        assert!(st.success(), "building gatehouse failed");
        let bin = profile_dir.join("gatehouse");
        assert!(bin.exists(), "{}", bin.display());
        bin
    })
}

/// `gatehouse hub` as a child process; SIGKILLed and reaped on drop.
struct HubProcess {
    child: Child,
    log: PathBuf,
}

impl HubProcess {
    fn start(config: &Path, log: PathBuf) -> HubProcess {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(gatehouse_binary())
            .arg("--config")
            .arg(config)
            .arg("hub")
            .env("GATEHOUSE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut hub = HubProcess { child, log };
        wait_for("the hub to listen", || {
            if let Some(status) = hub.child.try_wait().unwrap() {
                panic!("the hub exited ({status}):\n{}", hub.log_text());
            }
            hub.log_text().contains("hub listening").then_some(())
        });
        hub
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- hub log ----\n{}", self.log_text());
        }
    }
}

#[test]
fn nothing_is_lost_while_the_hub_is_down() {
    let guard = tempfile::tempdir().unwrap();
    let data = &guard.path().join("data");
    let store = Store::open(data).unwrap();
    let (nvr_user, nvr_pw) = add_nvr(data, &store, "yard", "frigate");

    // The site's own mosquitto, set up as the hub's module docs ask of an external one.
    let hub_pw = "hub-secret-password";
    let pw_file = guard.path().join("hub.password");
    std::fs::write(&pw_file, format!("{hub_pw}\n")).unwrap();
    let mut provisioning =
        Provisioning::new(Account::new("gatehouse-hub", hub_pw), Topics::default()).unwrap();
    provisioning
        .add_nvr(NvrAccount::new("frigate", Account::new(&nvr_user, &nvr_pw)))
        .unwrap();
    let broker = Mosquitto::start(
        BrokerFiles::new(guard.path().join("broker")),
        &provisioning,
        &BrokerConfig {
            persistence: Persistence::Directory(guard.path().join("broker-db")),
            max_queued_messages: Some(10_000),
            message_size_limit: Some(gatehouse_hub::mqtt::BROKER_MESSAGE_LIMIT),
            upgrade_outgoing_qos: true,
            ..BrokerConfig::loopback(0)
        },
    )
    .unwrap();
    let config = guard.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[general]\ndata_dir = \"{}\"\n[hub]\nhttp_listen = \"127.0.0.1:{}\"\nhttps_listen = \"\"\n\
             gate_tcp_listen = \"\"\n[hub.mqtt]\nmode = \"external\"\n\
             broker = \"127.0.0.1:{}\"\npassword_file = \"{}\"\n",
            data.display(),
            free_port(),
            broker.port(),
            pw_file.display()
        ),
    )
    .unwrap();

    let mut hub = HubProcess::start(&config, guard.path().join("hub-1.log"));
    let mut nvr = TestClient::connect(broker.port(), "frigate", &nvr_user, &nvr_pw).unwrap();
    let probes = wait_subscribed(&mut nvr, &store, "yard", "frigate");

    // A burst the hub is busy with when it dies (killed once it stored one of them),
    // then 200 while it is down.
    let burst: Vec<(&str, Vec<u8>)> = (0..1000)
        .map(|i| {
            let id = format!("1718000100.{i}-burst");
            ("frigate/reviews", review(&id, "new", "alert").into_bytes())
        })
        .collect();
    for (topic, payload) in &burst {
        nvr.client
            .publish(*topic, QoS::AtLeastOnce, false, payload.clone())
            .unwrap();
    }
    wait_for("the hub to store some of the burst", || {
        let e = events_by_external_id(&store, "yard");
        e.keys().any(|k| k.ends_with("-burst")).then_some(())
    });
    hub.kill();
    let mut acked = 0;
    while acked < burst.len() {
        match nvr.next(WAIT) {
            Some(Ok(Packet::PubAck(_))) => acked += 1,
            Some(Ok(_)) => {}
            other => panic!("burst PUBACKs ({acked}): {other:?}"),
        }
    }
    let at_kill = events_by_external_id(&store, "yard").len() - probes.len();
    let down: Vec<(&str, Vec<u8>)> = (0..200)
        .map(|i| {
            let id = format!("1718000200.{i}-down");
            let payload = if i % 2 == 0 {
                review(&id, "new", "detection")
            } else {
                object(&id, "new", &["yard"], false)
            };
            let topic = if i % 2 == 0 {
                "frigate/reviews"
            } else {
                "frigate/events"
            };
            (topic, payload.into_bytes())
        })
        .collect();
    nvr.publish_all(&down);
    assert_eq!(
        events_by_external_id(&store, "yard").len() - probes.len(),
        at_kill,
        "nothing is stored while the hub is down"
    );

    let _hub = HubProcess::start(&config, guard.path().join("hub-2.log"));
    let expected = probes.len() + burst.len() + down.len();
    let events = wait_for("every message to be stored", || {
        let e = events_by_external_id(&store, "yard");
        (e.len() >= expected).then_some(e)
    });
    println!(
        "{} events stored before the kill (of {} in the burst), {} after the restart",
        at_kill,
        burst.len(),
        expected - probes.len() - at_kill
    );
    assert_eq!(events.len(), expected);
    assert!(
        events.values().all(|v| v.len() == 1),
        "an event stored twice"
    );
    for i in 0..burst.len() {
        assert!(events.contains_key(&format!("review:1718000100.{i}-burst")));
    }
    for i in 0..200 {
        let kind = if i % 2 == 0 { "review" } else { "event" };
        assert!(
            events.contains_key(&format!("{kind}:1718000200.{i}-down")),
            "{kind} {i} lost"
        );
    }
    drop(nvr);
    drop(broker);
}

#[test]
fn embedded_broker_keeps_what_it_acknowledged_when_the_hub_dies() {
    let guard = tempfile::tempdir().unwrap();
    let data = &guard.path().join("data");
    let store = Store::open(data).unwrap();
    let (nvr_user, nvr_pw) = add_nvr(data, &store, "yard", "frigate");
    // A fixed port: the NVR finds the broker again after the restart.
    let port = free_port();
    let config = guard.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[general]\ndata_dir = \"{}\"\n[hub]\nhttp_listen = \"127.0.0.1:{}\"\nhttps_listen = \"\"\n\
             gate_tcp_listen = \"\"\n[hub.mqtt]\nmode = \"embedded\"\n\
             listen = \"127.0.0.1:{port}\"\n",
            data.display(),
            free_port(),
        ),
    )
    .unwrap();
    let mut hub = HubProcess::start(&config, guard.path().join("hub-1.log"));
    let mut nvr = TestClient::connect(port, "frigate", &nvr_user, &nvr_pw).unwrap();
    let probes = wait_subscribed(&mut nvr, &store, "yard", "frigate");

    // The hub dies (and its broker with it, by SIGTERM) in the middle of a burst.
    const BURST: usize = 300;
    for i in 0..BURST {
        let id = format!("1718000300.{i}-burst");
        nvr.client
            .publish(
                "frigate/reviews",
                QoS::AtLeastOnce,
                false,
                review(&id, "new", "alert"),
            )
            .unwrap();
    }
    wait_for("the hub to store some of the burst", || {
        let e = events_by_external_id(&store, "yard");
        e.keys().any(|k| k.ends_with("-burst")).then_some(())
    });
    hub.kill();
    // What the broker acknowledged before it went: rumqttc numbers publishes 1, 2, ... in
    // order (below its in-flight limit), the probes first.
    let mut acked = Vec::new();
    while let Some(Ok(packet)) = nvr.next(WAIT) {
        if let Packet::PubAck(a) = packet {
            if let Some(i) = usize::from(a.pkid).checked_sub(probes.len() + 1) {
                acked.push(i);
            }
        }
    }
    drop(nvr);
    let at_kill = events_by_external_id(&store, "yard").len() - probes.len();
    // The old broker saved its database and closed its port.
    wait_for("the old broker to exit", || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });

    let _hub = HubProcess::start(&config, guard.path().join("hub-2.log"));
    let want: Vec<String> = acked
        .iter()
        .map(|i| format!("review:1718000300.{i}-burst"))
        .collect();
    let deadline = Instant::now() + WAIT;
    let events = loop {
        let e = events_by_external_id(&store, "yard");
        let missing: Vec<&String> = want.iter().filter(|k| !e.contains_key(*k)).collect();
        if missing.is_empty() {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged messages missing ({at_kill} stored at the kill), such as {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "{} of {BURST} acknowledged by the broker, {at_kill} stored before the kill, {} after",
        acked.len(),
        events.len() - probes.len()
    );
    assert!(events.values().all(|v| v.len() == 1));
}
