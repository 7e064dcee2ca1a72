//! Events raised inside the box, end to end against a real hub on loopback: gates' door
//! and tamper alarms over the raw-TCP and HTTP frame transports (and from the real gate
//! simulator), repeated denies read from the access log, gates going offline and coming
//! back, the crash marker, and the tunnel's key for the webhook. Waits poll the store
//! with a generous upper bound; nothing sleeps to assert.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_access::model::{HolidayRule, Schedule, Validity, Window};
use gatehouse_alerts::model::{Event, Lifecycle, NotificationKind, Severity, SourceKind};
use gatehouse_config::Config;
use gatehouse_gate_proto::{
    verify, AccessRequest, CardId, DoorEvent, DoorEventKind, ErrorCode, ErrorReply, FrameDecoder,
    GateKey, Heartbeat, HeartbeatFlags, Message, Reason, Repr, Tamper, MAX_FRAME_LEN,
};
use gatehouse_hub::events::metrics::InOutcome;
use gatehouse_hub::events::monitor::{
    ACCESS_REPEATED_DENIES, GATE_OFFLINE, RUNNING_MARKER, SYSTEM_RESTARTED_AFTER_CRASH,
    SYSTEM_STARTED, TUNNEL_KEY_FILE,
};
use gatehouse_hub::events::Ingress;
use gatehouse_hub::gate_frames::{DOOR_FORCED, DOOR_HELD_OPEN, GATE_TAMPER};
use gatehouse_store::events::EventFilter;
use gatehouse_store::gate_events::GateEventFilter;
use gatehouse_store::{NewCard, SiteKey, Store};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

use support::Running;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(30);
const GRANTED: &str = "a1b2c3d4e5f60718293a";
const UNKNOWN: &str = "d1b2c3d4e5f60718293d";

struct Site {
    front: u32,
    front_key: GateKey,
    back: u32,
    back_key: GateKey,
}

fn setup(dir: &Path) -> Site {
    let store = Store::open(dir).unwrap();
    let key = SiteKey::load_or_create(dir).unwrap();
    let zone = store.add_zone("lobby", false).unwrap();
    let gate = |name: &str| {
        let g = support::add_gate(&store, zone, name, None);
        (g.id, g.key)
    };
    let (front, front_key) = gate("front");
    let (back, back_key) = gate("back");
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
    store.add_level_gate(staff, i64::from(front)).unwrap();
    store.add_level_gate(staff, i64::from(back)).unwrap();
    let alice = store.add_person("alice", Validity::default()).unwrap();
    store.grant_level(alice, staff).unwrap();
    store
        .add_card(
            &key,
            CardId::from_hex(GRANTED).unwrap().as_bytes(),
            &NewCard {
                person: alice,
                master: false,
                validity: Validity::default(),
                label: None,
            },
        )
        .unwrap();
    Site {
        front,
        front_key,
        back,
        back_key,
    }
}

/// A hub on `dir` with the gates' TCP transport on, serving until [`Running::stop`].
async fn start(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut config = support::config(dir);
    config.hub.gate_tcp_listen = Some(support::loopback());
    tweak(&mut config);
    Running::start(&config, |_| {}).await
}

fn frame(key: &GateKey, gate: u32, message: Message) -> Vec<u8> {
    let repr = Repr {
        gate_id: gate,
        message,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit_sealed(key, &mut buf).unwrap();
    buf
}

/// The gates' clock in these tests: a minute behind the hub's.
fn gate_time() -> u32 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp() - 60;
    u32::try_from(now).unwrap()
}

fn door(key: &GateKey, gate: u32, seq: u32, kind: DoorEventKind) -> Vec<u8> {
    frame(
        key,
        gate,
        Message::DoorEvent(DoorEvent {
            seq,
            time: gate_time(),
            kind,
        }),
    )
}

fn tamper(key: &GateKey, gate: u32, seq: u32, active: bool) -> Vec<u8> {
    frame(
        key,
        gate,
        Message::Tamper(Tamper {
            seq,
            time: gate_time(),
            active,
        }),
    )
}

fn request(key: &GateKey, gate: u32, seq: u32, acc: &str) -> Vec<u8> {
    frame(
        key,
        gate,
        Message::AccessRequest(AccessRequest {
            gate_id: gate,
            seq,
            time: 0,
            card: CardId::from_hex(acc).unwrap(),
        }),
    )
}

fn heartbeat(key: &GateKey, gate: u32, seq: u32) -> Vec<u8> {
    frame(
        key,
        gate,
        Message::Heartbeat(Heartbeat {
            seq,
            time: 0,
            allowlist_version: 0,
            offline_pending: 0,
            flags: HeartbeatFlags::new(true, false, true),
        }),
    )
}

/// A gate on the raw-TCP transport.
struct GateConn {
    stream: TcpStream,
    decoder: FrameDecoder<Vec<u8>>,
    key: GateKey,
    gate: u32,
}

impl GateConn {
    async fn connect(addr: SocketAddr, gate: u32, key: GateKey) -> GateConn {
        GateConn {
            stream: TcpStream::connect(addr).await.unwrap(),
            decoder: FrameDecoder::new(vec![0u8; MAX_FRAME_LEN]),
            key,
            gate,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn next(&mut self) -> Message {
        loop {
            if let Some(f) = self.decoder.next_frame().unwrap() {
                verify(&self.key, &f).expect("reply sealed with the gate's key");
                return Repr::parse(&f).unwrap().message;
            }
            let got = tokio::time::timeout(WAIT, self.stream.read(self.decoder.spare_mut()))
                .await
                .expect("a reply in time")
                .unwrap();
            assert!(got > 0, "connection closed");
            self.decoder.commit(got);
        }
    }

    /// Sends an access request and returns the decision's reason.
    async fn decide(&mut self, seq: u32, acc: &str) -> Reason {
        self.send(&request(&self.key, self.gate, seq, acc)).await;
        match self.next().await {
            Message::Decision(d) if d.seq == seq => d.reason,
            other => panic!("no decision for {seq}: {other:?}"),
        }
    }
}

/// `POST /api/v1/gate/frames`: the status and the raw answer body.
async fn post_frame(addr: SocketAddr, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /api/v1/gate/frames HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, resp[end + 4..].to_vec())
}

/// The events of `kind` (and `source`), oldest first.
fn events_of(dir: &Path, kind: &str, source: Option<&str>) -> Vec<Event> {
    let store = Store::open(dir).unwrap();
    let mut events = store
        .list_events(&EventFilter {
            kind: Some(kind.to_owned()),
            source: source.map(str::to_owned),
            limit: 1000,
            ..EventFilter::default()
        })
        .unwrap();
    events.reverse();
    events
}

/// Polls `f` until it returns something, for at most [`WAIT`].
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds_of(dir: &Path, gate: u32) -> Vec<(u64, String)> {
    let store = Store::open(dir).unwrap();
    let mut rows = store
        .gate_events(&GateEventFilter {
            gate: Some(i64::from(gate)),
            limit: 100,
        })
        .unwrap();
    rows.sort_by_key(|r| r.gate_seq);
    rows.into_iter().map(|r| (r.gate_seq, r.kind)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn door_and_tamper_alarms_become_events_once_with_their_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path(), |_| {}).await;
    let (k, g) = (site.front_key, site.front);
    let mut gate = GateConn::connect(hub.tcp(), g, k).await;
    gate.send(&door(&k, g, 10, DoorEventKind::Forced)).await;
    gate.send(&door(&k, g, 11, DoorEventKind::HeldOpen)).await;
    gate.send(&door(&k, g, 12, DoorEventKind::Opened)).await;
    gate.send(&door(&k, g, 13, DoorEventKind::Closed)).await;
    gate.send(&tamper(&k, g, 14, true)).await;
    gate.send(&tamper(&k, g, 15, false)).await;
    // The same forced-door frame again: refused by the replay window.
    gate.send(&door(&k, g, 10, DoorEventKind::Forced)).await;
    assert_eq!(
        gate.next().await,
        Message::Error(ErrorReply {
            seq: 10,
            code: ErrorCode::Replay
        })
    );
    // Answers come in order: by this decision every event before it is committed, in
    // the events and in the gate_events table.
    assert_eq!(gate.decide(16, GRANTED).await, Reason::Granted);
    let front = Some("front");
    let forced = events_of(dir.path(), DOOR_FORCED, front);
    assert_eq!(forced.len(), 1, "{forced:?}");
    let f = &forced[0].new;
    assert_eq!(
        (
            f.severity,
            f.lifecycle,
            f.source_kind,
            f.external_id.as_deref()
        ),
        (
            Severity::Critical,
            Lifecycle::Instant,
            SourceKind::Gate,
            Some(format!("gate:{g}:10").as_str())
        )
    );
    let ahead = time::OffsetDateTime::now_utc() - f.time;
    assert!(ahead.whole_seconds() >= 60, "the gate's clock: {}", f.time);
    let held = events_of(dir.path(), DOOR_HELD_OPEN, front);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].new.severity, Severity::Warning);
    let tampered = events_of(dir.path(), GATE_TAMPER, front);
    assert_eq!(tampered.len(), 1, "on and off are one event: {tampered:?}");
    let t = &tampered[0];
    assert_eq!(
        (
            t.new.severity,
            t.new.lifecycle,
            t.new.external_id.as_deref()
        ),
        (
            Severity::Critical,
            Lifecycle::Ended,
            Some(format!("gate:{g}:14").as_str())
        )
    );
    assert!(t.ended_at.is_some());
    // Opened and closed are not events. The default rule sent the alarms to the console,
    // and the tamper episode's end a resolved notice.
    let store = Store::open(dir.path()).unwrap();
    let all = store.list_events(&EventFilter::default()).unwrap();
    let gate_events: Vec<_> = all.iter().filter(|e| e.new.source == "front").collect();
    assert_eq!(gate_events.len(), 3, "{gate_events:?}");
    let notices: Vec<NotificationKind> = store
        .event_detail(t.id)
        .unwrap()
        .deliveries
        .iter()
        .map(|d| d.kind)
        .collect();
    assert_eq!(
        notices,
        [NotificationKind::Firing, NotificationKind::Resolved]
    );
    assert_eq!(
        kinds_of(dir.path(), g),
        [
            (10, "forced_open".to_owned()),
            (11, "held_open".to_owned()),
            (12, "opened".to_owned()),
            (13, "closed".to_owned()),
            (14, "tamper_on".to_owned()),
            (15, "tamper_off".to_owned()),
        ]
    );
    assert_eq!(
        hub.events
            .metrics()
            .events_in(Ingress::Gate, SourceKind::Gate, InOutcome::New),
        3,
        "forced, held open, tamper on"
    );
    assert_eq!(
        hub.events
            .metrics()
            .events_in(Ingress::Gate, SourceKind::Gate, InOutcome::Updated),
        1,
        "tamper off ends the episode"
    );

    // Over HTTP the answer comes once the event is committed.
    let (kb, b) = (site.back_key, site.back);
    let (status, body) = post_frame(hub.http, &door(&kb, b, 3, DoorEventKind::Forced)).await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(events_of(dir.path(), DOOR_FORCED, Some("back")).len(), 1);
    let (status, _) = post_frame(hub.http, &door(&kb, b, 3, DoorEventKind::Forced)).await;
    assert_eq!(status, 200, "the replay refusal, sealed");
    assert_eq!(events_of(dir.path(), DOOR_FORCED, Some("back")).len(), 1);
    drop(gate);
    hub.stop().await;

    // A tamper episode open across a restart is still ended by its tamper_off.
    let mut hub = start(dir.path(), |_| {}).await;
    let mut gate = GateConn::connect(hub.tcp(), g, k).await;
    gate.send(&tamper(&k, g, 20, true)).await;
    assert_eq!(gate.decide(21, GRANTED).await, Reason::Granted);
    drop(gate);
    hub.stop().await;
    let mut hub = start(dir.path(), |_| {}).await;
    let mut gate = GateConn::connect(hub.tcp(), g, k).await;
    gate.send(&tamper(&k, g, 22, false)).await;
    assert_eq!(gate.decide(23, GRANTED).await, Reason::Granted);
    let tampered = events_of(dir.path(), GATE_TAMPER, front);
    assert_eq!(tampered.len(), 2, "{tampered:?}");
    assert_eq!(
        tampered[1].new.external_id.as_deref(),
        Some(format!("gate:{g}:20").as_str())
    );
    assert_eq!(tampered[1].new.lifecycle, Lifecycle::Ended);
    drop(gate);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_denies_raise_one_event_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path(), |_| {}).await;
    let (k, g) = (site.front_key, site.front);
    let mut gate = GateConn::connect(hub.tcp(), g, k).await;
    // Four denies and a grant: not yet.
    for seq in 1..=4 {
        assert_eq!(gate.decide(seq, UNKNOWN).await, Reason::UnknownCard);
    }
    assert_eq!(gate.decide(5, GRANTED).await, Reason::Granted);
    // The fifth deny within the minute, and more.
    for seq in 6..=9 {
        assert_eq!(gate.decide(seq, UNKNOWN).await, Reason::UnknownCard);
    }
    let found = wait_for("the repeated-denies event", || {
        let e = events_of(dir.path(), ACCESS_REPEATED_DENIES, Some("front"));
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    let e = &found[0].new;
    assert_eq!(
        (e.severity, e.source_kind, e.lifecycle),
        (Severity::Warning, SourceKind::Gate, Lifecycle::Instant)
    );
    assert!(
        e.external_id
            .as_deref()
            .unwrap()
            .starts_with(&format!("denies:{g}:")),
        "{e:?}"
    );
    drop(gate);
    hub.stop().await;

    // A restart reads the last minute of the log again: the same window, the same event.
    let mut hub = start(dir.path(), |_| {}).await;
    let events = hub.events.clone();
    wait_for("the burst seen again after the restart", || {
        (events
            .metrics()
            .events_in(Ingress::System, SourceKind::Gate, InOutcome::Duplicate)
            > 0)
        .then_some(())
    })
    .await;
    hub.stop().await;
    let found = events_of(dir.path(), ACCESS_REPEATED_DENIES, None);
    assert_eq!(found.len(), 1, "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_marker_raises_restarted_after_crash() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let marker = dir.path().join(RUNNING_MARKER);
    // A clean run: started, no crash; the marker is there while it runs, gone after.
    let mut hub = start(dir.path(), |_| {}).await;
    wait_for("system.started", || {
        (events_of(dir.path(), SYSTEM_STARTED, Some("system")).len() == 1).then_some(())
    })
    .await;
    assert!(marker.exists());
    hub.stop().await;
    assert!(!marker.exists());
    let mut hub = start(dir.path(), |_| {}).await;
    wait_for("the second system.started", || {
        (events_of(dir.path(), SYSTEM_STARTED, Some("system")).len() == 2).then_some(())
    })
    .await;
    hub.stop().await;
    assert!(events_of(dir.path(), SYSTEM_RESTARTED_AFTER_CRASH, None).is_empty());

    // The marker left behind, as a killed hub leaves it.
    std::fs::write(&marker, "pid 4242 started 2026-03-02T10:00:00Z\n").unwrap();
    let mut hub = start(dir.path(), |_| {}).await;
    let crashed = wait_for("system.restarted_after_crash", || {
        let e = events_of(dir.path(), SYSTEM_RESTARTED_AFTER_CRASH, Some("system"));
        (!e.is_empty()).then_some(e)
    })
    .await;
    hub.stop().await;
    assert_eq!(crashed.len(), 1);
    let e = &crashed[0].new;
    assert_eq!(
        (e.severity, e.source_kind),
        (Severity::Warning, SourceKind::System)
    );
    assert!(e.message.as_deref().unwrap().contains("pid 4242"), "{e:?}");
    assert_eq!(events_of(dir.path(), SYSTEM_STARTED, None).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_gate_goes_offline_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path(), |c| c.hub.alerts.gate_offline_s = 1).await;
    let (k, g) = (site.front_key, site.front);
    let mut gate = GateConn::connect(hub.tcp(), g, k).await;
    gate.send(&heartbeat(&k, g, 1)).await;
    let offline = wait_for("gate.offline", || {
        let e = events_of(dir.path(), GATE_OFFLINE, Some("front"));
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(offline[0].new.lifecycle, Lifecycle::Active);
    assert_eq!(offline[0].new.severity, Severity::Warning);
    // The gate that never spoke is not watched.
    assert!(events_of(dir.path(), GATE_OFFLINE, Some("back")).is_empty());
    // Heard again: the episode ends. (Offline means silent for the limit plus the lag of
    // the stored last_seen, written at most every 10 s per gate; keep talking until the
    // hub has noticed.)
    let mut seq = 2;
    let ended = loop {
        gate.send(&heartbeat(&k, g, seq)).await;
        seq += 1;
        let e = events_of(dir.path(), GATE_OFFLINE, Some("front"));
        if e[0].new.lifecycle == Lifecycle::Ended {
            break e;
        }
        assert!(seq < 600, "the gate was never seen back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ended[0].ended_at.is_some());
    drop(gate);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tunnel_posts_with_the_key_the_hub_wrote() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let mut hub = start(dir.path(), |_| {}).await;
    let path = dir.path().join(TUNNEL_KEY_FILE);
    let key = wait_for("the tunnel's key file", || {
        std::fs::read_to_string(&path).ok()
    })
    .await;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        http.post(format!("http://{}/api/v1/events", hub.http))
            .bearer_auth(key.trim())
            .json(&body)
            .send()
    };
    let r = post(serde_json::json!({
        "kind": "tunnel.peer_connected", "severity": "info", "id": "peer:abc:1",
        "device": "alice", "message": "peer alice connected"
    }))
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let again = post(serde_json::json!({
        "kind": "tunnel.peer_connected", "severity": "info", "id": "peer:abc:1"
    }))
    .await
    .unwrap();
    assert_eq!(again.status(), 200);
    let e = events_of(dir.path(), "tunnel.peer_connected", Some("tunnel"));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].new.source_kind, SourceKind::Tunnel);
    hub.stop().await;
    // The next start keeps a key that still matches.
    let mut hub = start(dir.path(), |_| {}).await;
    wait_for("system.started", || {
        (events_of(dir.path(), SYSTEM_STARTED, None).len() == 2).then_some(())
    })
    .await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), key);
    hub.stop().await;
}

/// Builds gate-sim (its own workspace, gate-fw/) once and returns its path.
fn gate_sim() -> std::path::PathBuf {
    static SIM: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    SIM.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", "gate-sim", "--manifest-path"])
            .arg(repo.join("gate-fw/Cargo.toml"))
            .status()
            .unwrap();
        assert!(st.success(), "building gate-sim failed");
        repo.join("gate-fw/target/debug/gate-sim")
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_simulator_forces_doors_that_become_events() {
    let dir = tempfile::tempdir().unwrap();
    let site = setup(dir.path());
    let mut hub = start(dir.path(), |_| {}).await;
    let hex = |k: &GateKey| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let gates = dir.path().join("gates.toml");
    std::fs::write(
        &gates,
        format!(
            "[[gate]]\nid = {}\nsecret = \"{}\"\n\n[[gate]]\nid = {}\nsecret = \"{}\"\n",
            site.front,
            hex(&site.front_key),
            site.back,
            hex(&site.back_key)
        ),
    )
    .unwrap();
    let sim = gate_sim();
    let tcp = hub.tcp().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(sim)
            .args(["--transport", "tcp", "--hub", &tcp, "--gates"])
            .arg(&gates)
            .args(["--card", GRANTED, "--requests", "6", "--rate", "50"])
            .args(["--door-forced-every", "3"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("granted=12 ") && text.contains("forced_opens=4"),
        "{text}"
    );
    // Reads 3 and 6 of each gate forced its door; the last decision came after them.
    for name in ["front", "back"] {
        let forced = events_of(dir.path(), DOOR_FORCED, Some(name));
        assert_eq!(forced.len(), 2, "{name}: {forced:?}");
        assert!(forced.iter().all(|e| e.new.severity == Severity::Critical));
    }
    hub.stop().await;
}
