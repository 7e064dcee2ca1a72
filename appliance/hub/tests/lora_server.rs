//! The LoRa network server end to end, with the real mosquitto (Debian package
//! `mosquitto`): the test plays the packet forwarder, publishing sealed frames on
//! `lora/up` as `gatehouse lora` would and reading the hub's ACKs on `lora/down`; the hub
//! runs in this process in external MQTT mode against a broker the test starts (its ACL
//! gives the hub's account `lora/#`).
//!
//! - [`alarms_are_acked_once_stored_and_bad_frames_are_counted`]: an alarm makes an event
//!   and an ACK (`tx_us = rx_us + RX1_DELAY_US`, opening with the sensor's key and
//!   acknowledging the alarm's fcnt); a retransmission (new fcnt, same alarm id) is ACKed
//!   and folds into the same event; the same bytes again (replay), a flipped bit, a wrong
//!   key, an unknown device and junk are dropped, counted, and get no ACK; the alarm's end
//!   ends the event; a low battery heartbeat raises `sensor.low_battery` once; a disabled
//!   sensor is refused.
//! - [`a_silent_sensor_goes_missing_and_comes_back`]: a sensor with a 1 s heartbeat that
//!   stops raises `sensor.missing`, which reaches a webhook receiver through a rule; heard
//!   again, the event ends and the receiver gets the "resolved" notice.
//! - [`a_sensor_provisioned_but_never_heard_goes_missing`]: a sensor added with a 1 s
//!   heartbeat that never sends raises `sensor.missing` counted from its provisioning
//!   ("never been heard since it was provisioned at ..."); a restart of the hub keeps the
//!   one episode open (no second event, no new clock); its first heartbeat ends it.
//!
//! Waits poll with a generous upper bound; nothing asserts on durations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use gatehouse_alerts::model::{Event, Lifecycle, Matcher, ReceiverConfig, Severity, WebhookFormat};
use gatehouse_broker::{Account, BrokerConfig, BrokerFiles, Mosquitto, Provisioning, Topics};
use gatehouse_config::MqttMode;
use gatehouse_hub::lora::{DownMessage, LoraCounters, LoraStats, UpMessage, DOWN_TOPIC, UP_TOPIC};
use gatehouse_lora_proto::link::RX1_DELAY_US;
use gatehouse_lora_proto::{
    open, seal, Alarm, AlarmKind, DevAddr, Dir, Frame, Heartbeat, Key, Payload, MAX_FRAME_LEN,
};
use gatehouse_store::events::{EventFilter, NewRule};
use gatehouse_store::sensors::{NewSensor, NewSensorCredentials, SensorKind};
use gatehouse_store::Store;
use gatehouse_testpeers::{Faults, WebhookReceiver};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, SubscribeReasonCode};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(30);
const HUB_USER: &str = "gatehouse-hub";
const HUB_PW: &str = "hub-password-for-the-lora-test";
const FREQ: u32 = 868_100_000;

/// The site's mosquitto: the hub's account may use the gate link's topics and `lora/#`.
fn broker(dir: &Path) -> Mosquitto {
    let provisioning =
        Provisioning::new(Account::new(HUB_USER, HUB_PW), Topics::default()).unwrap();
    let files = BrokerFiles::new(dir.join("broker"));
    let mut broker =
        Mosquitto::start(files.clone(), &provisioning, &BrokerConfig::loopback(0)).unwrap();
    std::fs::write(
        files.acl_file(),
        format!(
            "user {HUB_USER}\ntopic readwrite access/request\ntopic readwrite access/response/#\n\
             topic readwrite lora/#\n"
        ),
    )
    .unwrap();
    broker.reload().unwrap();
    broker
}

/// The forwarder's side of the broker: publishes uplinks, collects downlinks.
struct Forwarder {
    client: AsyncClient,
    down: mpsc::UnboundedReceiver<DownMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn connect(port: u16) -> Forwarder {
        Forwarder::connect_as(port, HUB_USER, HUB_PW).await
    }

    async fn connect_as(port: u16, user: &str, password: &str) -> Forwarder {
        let mut options = MqttOptions::new("test-forwarder", "127.0.0.1", port);
        options
            .set_credentials(user, password)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let (down_tx, down) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) if p.topic == DOWN_TOPIC => {
                        let msg: DownMessage = serde_json::from_slice(&p.payload).unwrap();
                        let _ = down_tx.send(msg);
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(a))) => {
                        let _ = sub_tx.send(a.return_codes);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client
            .subscribe(DOWN_TOPIC, QoS::AtLeastOnce)
            .await
            .unwrap();
        let codes = tokio::time::timeout(WAIT, sub_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            !codes.contains(&SubscribeReasonCode::Failure),
            "the broker refused lora/down"
        );
        Forwarder { client, down, task }
    }

    async fn up(&self, frame: &[u8], rx_us: u64) {
        self.publish(
            serde_json::to_vec(&UpMessage {
                frame: B64.encode(frame),
                rssi: Some(-87),
                snr: Some(7.5),
                freq_hz: FREQ,
                sf: 7,
                bw_hz: 125_000,
                rx_us,
                rx_at: Some(
                    OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap(),
                ),
            })
            .unwrap(),
        )
        .await;
    }

    async fn publish(&self, payload: Vec<u8>) {
        self.client
            .publish(UP_TOPIC, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// The next downlink.
    async fn next_down(&mut self) -> DownMessage {
        tokio::time::timeout(WAIT, self.down.recv())
            .await
            .expect("a downlink")
            .unwrap()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sealed(sensor: &NewSensorCredentials, fcnt: u32, payload: Payload) -> Vec<u8> {
    sealed_with(&Key(*sensor.key.expose()), sensor.dev_addr, fcnt, payload)
}

fn sealed_with(key: &Key, dev_addr: u32, fcnt: u32, payload: Payload) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = seal(
        &Frame::new(DevAddr(dev_addr), fcnt, payload),
        key,
        Dir::Up,
        &mut buf,
    )
    .unwrap();
    buf[..n].to_vec()
}

fn alarm(kind: AlarmKind, active: bool, alarm_id: u16) -> Payload {
    Payload::Alarm(Alarm {
        kind,
        active,
        alarm_id,
        value: 0,
    })
}

fn heartbeat(battery_mv: u16, interval_s: u16) -> Payload {
    Payload::Heartbeat(Heartbeat {
        battery_mv,
        flags: 0,
        reboots: 1,
        last_rssi: -95,
        last_snr: 4,
        interval_s,
    })
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_stats(
    counters: &LoraCounters,
    what: &str,
    f: impl Fn(&LoraStats) -> bool,
) -> LoraStats {
    wait_for(what, || {
        let s = counters.stats();
        f(&s).then_some(s)
    })
    .await
}

fn events_of(dir: &Path, source: &str) -> Vec<Event> {
    Store::open(dir)
        .unwrap()
        .list_events(&EventFilter {
            source: Some(source.into()),
            limit: 100,
            ..EventFilter::default()
        })
        .unwrap()
}

fn add(store: &Store, name: &str, kind: SensorKind, heartbeat_s: u32) -> NewSensorCredentials {
    store
        .add_sensor(
            &NewSensor {
                name: name.into(),
                kind,
                heartbeat_s,
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap()
}

/// A hub in external MQTT mode on `broker`, serving; its LoRa counters.
async fn start_hub(dir: &Path, broker: &Mosquitto) -> (support::Running, Arc<LoraCounters>) {
    let pw_file = dir.join("hub.password");
    std::fs::write(&pw_file, format!("{HUB_PW}\n")).unwrap();
    let mut config = support::config(dir);
    config.hub.mqtt.mode = MqttMode::External;
    config.hub.mqtt.broker = format!("127.0.0.1:{}", broker.port());
    config.hub.mqtt.username = HUB_USER.into();
    config.hub.mqtt.password_file = pw_file;
    config.hub.alerts.disk_full_percent = 100;
    let mut counters = None;
    let running = support::Running::start(&config, |hub| counters = hub.lora_counters()).await;
    (running, counters.expect("MQTT is on"))
}

/// Sends heartbeats of `probe` until the hub has taken one: then it is subscribed.
/// Returns the next free fcnt.
async fn wait_subscribed(
    fwd: &Forwarder,
    counters: &LoraCounters,
    probe: &NewSensorCredentials,
) -> u32 {
    let deadline = Instant::now() + WAIT;
    let mut fcnt = 1;
    loop {
        fwd.up(&sealed(probe, fcnt, heartbeat(3000, 300)), 1).await;
        fcnt += 1;
        for _ in 0..20 {
            if counters.stats().accepted > 0 {
                return fcnt;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(Instant::now() < deadline, "the hub never took lora/up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_acked_once_stored_and_bad_frames_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir).unwrap();
    let door = add(&store, "front-door", SensorKind::Door, 300);
    let pir = add(&store, "hall-pir", SensorKind::Pir, 300);
    let probe = add(&store, "probe", SensorKind::Temp, 300);
    let broker = broker(dir);
    let (mut hub, counters) = start_hub(dir, &broker).await;
    let mut fwd = Forwarder::connect(broker.port()).await;
    wait_subscribed(&fwd, &counters, &probe).await;
    let base = wait_stats(&counters, "the probe", |s| s.accepted > 0).await;

    // An alarm: one event, and an ACK for the node's receive window.
    let first = sealed(&door, 10, alarm(AlarmKind::DoorOpen, true, 1));
    fwd.up(&first, 5_000_000).await;
    let ack = fwd.next_down().await;
    assert_eq!(ack.tx_us, 5_000_000 + RX1_DELAY_US);
    assert_eq!((ack.freq_hz, ack.sf, ack.bw_hz), (FREQ, 7, 125_000));
    assert_eq!(ack.priority, "alarm");
    let key = Key(*door.key.expose());
    let down = open(&B64.decode(&ack.frame).unwrap(), &key, Dir::Down).unwrap();
    assert_eq!(down.dev_addr, DevAddr(door.dev_addr));
    let Payload::Downlink(d) = down.payload else {
        panic!("not a downlink: {down:?}")
    };
    assert_eq!(d.ack_fcnt, Some(10));
    let first_down_fcnt = down.fcnt;
    let events = events_of(dir, "front-door");
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.new.kind, "sensor.alarm.door_open");
    assert_eq!(e.new.severity, Severity::Warning);
    assert_eq!(e.new.lifecycle, Lifecycle::Active);
    assert_eq!(e.new.external_id.as_deref(), Some("alarm:1:10"));
    assert_eq!(e.new.device.as_deref(), Some("front-door"));

    // A retransmission (the node missed the ACK): a new fcnt, the same alarm. ACKed, no
    // second event.
    let again = sealed(&door, 11, alarm(AlarmKind::DoorOpen, true, 1));
    fwd.up(&again, 9_000_000).await;
    let ack = fwd.next_down().await;
    assert_eq!(ack.tx_us, 9_000_000 + RX1_DELAY_US);
    let down = open(&B64.decode(&ack.frame).unwrap(), &key, Dir::Down).unwrap();
    assert!(down.fcnt > first_down_fcnt, "downlink counters increase");
    assert!(matches!(down.payload, Payload::Downlink(d) if d.ack_fcnt == Some(11)));
    let events = events_of(dir, "front-door");
    assert_eq!(events.len(), 1, "{events:?}");
    let s = counters.stats();
    assert_eq!(
        (s.alarms, s.duplicate_alarms, s.acks_sent),
        (
            base.alarms + 2,
            base.duplicate_alarms + 1,
            base.acks_sent + 2
        )
    );

    // Refused, counted, never ACKed: the same bytes again, a flipped bit, a wrong key, an
    // unknown device, junk.
    fwd.up(&again, 12_000_000).await;
    let mut flipped = sealed(&door, 12, alarm(AlarmKind::DoorOpen, true, 2));
    flipped[10] ^= 0x01;
    fwd.up(&flipped, 13_000_000).await;
    let wrong_key = sealed_with(
        &Key([0x5a; 16]),
        door.dev_addr,
        13,
        alarm(AlarmKind::DoorOpen, true, 3),
    );
    fwd.up(&wrong_key, 14_000_000).await;
    let stranger = sealed_with(
        &Key([7; 16]),
        door.dev_addr ^ pir.dev_addr ^ probe.dev_addr ^ 0x55,
        1,
        alarm(AlarmKind::Smoke, true, 1),
    );
    fwd.up(&stranger, 15_000_000).await;
    fwd.publish(b"{not json".to_vec()).await;
    let s = wait_stats(&counters, "the refusals", |s| s.uplinks >= base.uplinks + 7).await;
    assert_eq!(s.replayed, base.replayed + 1);
    assert_eq!(s.forged, base.forged + 2);
    assert_eq!(s.malformed, base.malformed + 1);
    assert!(s.unknown_device > base.unknown_device, "{s:?}");
    assert_eq!(s.acks_sent, base.acks_sent + 2);

    // The alarm ends: its ACK is the next downlink (nothing was answered meanwhile), and
    // the event ends.
    fwd.up(
        &sealed(&door, 14, alarm(AlarmKind::DoorOpen, false, 1)),
        20_000_000,
    )
    .await;
    let ack = fwd.next_down().await;
    let down = open(&B64.decode(&ack.frame).unwrap(), &key, Dir::Down).unwrap();
    assert!(matches!(down.payload, Payload::Downlink(d) if d.ack_fcnt == Some(14)));
    let events = events_of(dir, "front-door");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].new.lifecycle, Lifecycle::Ended);

    // A heartbeat with a low battery raises sensor.low_battery once; the store keeps it.
    fwd.up(&sealed(&pir, 1, heartbeat(2300, 300)), 30_000_000)
        .await;
    fwd.up(&sealed(&pir, 2, heartbeat(2250, 300)), 40_000_000)
        .await;
    wait_stats(&counters, "two heartbeats", |s| {
        s.heartbeats >= base.heartbeats + 2
    })
    .await;
    let events = events_of(dir, "hall-pir");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].new.kind, "sensor.low_battery");
    assert_eq!(events[0].new.severity, Severity::Warning);
    let r = store.sensor(pir.id).unwrap();
    assert_eq!(
        (r.battery_mv, r.fcnt_up_last, r.last_rssi),
        (Some(2250), Some(2), Some(-87))
    );

    // A disabled sensor is refused.
    store.set_sensor_enabled(pir.id, false).unwrap();
    fwd.up(
        &sealed(&pir, 3, alarm(AlarmKind::Motion, true, 9)),
        50_000_000,
    )
    .await;
    wait_stats(&counters, "the disabled sensor's frame", |s| {
        s.disabled > base.disabled
    })
    .await;
    assert_eq!(store.sensor(pir.id).unwrap().fcnt_up_last, Some(2));
    assert_eq!(counters.stats().acks_sent, base.acks_sent + 3);

    // The counters are on /metrics.
    let text = reqwest::get(hub.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        format!(
            "gatehouse_lora_uplinks_total{{outcome=\"forged\"}} {}",
            base.forged + 2
        ),
        format!(
            "gatehouse_lora_uplinks_total{{outcome=\"replayed\"}} {}",
            base.replayed + 1
        ),
        format!("gatehouse_lora_acks_sent_total {}", base.acks_sent + 3),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    assert!(
        text.contains("gatehouse_sensor_last_seen_seconds{sensor=\"front-door\"}"),
        "{text}"
    );

    drop(fwd);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sensor_goes_missing_and_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir).unwrap();
    let probe = add(&store, "probe", SensorKind::Temp, 300);
    let receiver = WebhookReceiver::start(Faults::default()).await.unwrap();
    let hook = store
        .add_receiver(
            "ops",
            &ReceiverConfig::Webhook {
                url: receiver.url(),
                format: WebhookFormat::Json,
            },
        )
        .unwrap();
    store
        .add_rule(&NewRule {
            name: "missing sensors".into(),
            matcher: Matcher {
                kinds: vec!["sensor.missing".into()],
                ..Matcher::default()
            },
            active: None,
            receivers: vec![hook],
            group_window: Duration::ZERO,
            repeat_every: None,
        })
        .unwrap();
    let broker = broker(dir);
    let (mut hub, counters) = start_hub(dir, &broker).await;
    let fwd = Forwarder::connect(broker.port()).await;
    wait_subscribed(&fwd, &counters, &probe).await;

    // Added now (a sensor never heard is supervised from its provisioning: added before
    // the hub was up, it could go missing before its first heartbeat), heard once, then
    // silent.
    let quiet = add(&store, "quiet", SensorKind::Door, 1);
    fwd.up(&sealed(&quiet, 1, heartbeat(3000, 1)), 1).await;
    wait_for("the heartbeat", || {
        store.sensor(quiet.id).unwrap().last_seen
    })
    .await;
    let missing = wait_for("sensor.missing", || {
        events_of(dir, "quiet")
            .into_iter()
            .find(|e| e.new.kind == "sensor.missing")
    })
    .await;
    assert_eq!(missing.new.lifecycle, Lifecycle::Active);
    assert_eq!(missing.new.severity, Severity::Warning);
    assert!(store.sensor(quiet.id).unwrap().missing());
    let keys = receiver.wait_for_accepted(1, WAIT).await.unwrap();
    assert_eq!(keys.len(), 1);
    let req = &receiver.requests()[0];
    let body = String::from_utf8_lossy(&req.body);
    assert!(
        body.contains("sensor.missing") && body.contains("quiet"),
        "{body}"
    );

    // Heard again: the episode ends, the receiver is told.
    fwd.up(&sealed(&quiet, 2, heartbeat(3000, 1)), 2).await;
    let ended = wait_for("the end of sensor.missing", || {
        events_of(dir, "quiet")
            .into_iter()
            .find(|e| e.new.kind == "sensor.missing" && e.new.lifecycle == Lifecycle::Ended)
    })
    .await;
    assert_eq!(ended.id, missing.id);
    receiver.wait_for_accepted(2, WAIT).await.unwrap();

    drop(fwd);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_provisioned_but_never_heard_goes_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir).unwrap();
    let probe = add(&store, "probe", SensorKind::Temp, 300);
    let door = add(&store, "door-3", SensorKind::Door, 1);
    let created = store.sensor(door.id).unwrap().created;
    let broker = broker(dir);
    let (mut hub, counters) = start_hub(dir, &broker).await;
    let fwd = Forwarder::connect(broker.port()).await;
    wait_subscribed(&fwd, &counters, &probe).await;

    // Never heard: missing once 3 heartbeats and the grace have passed since it was
    // provisioned; the episode is named by the provisioning.
    let missing = wait_for("sensor.missing for the sensor never heard", || {
        events_of(dir, "door-3")
            .into_iter()
            .find(|e| e.new.kind == "sensor.missing")
    })
    .await;
    assert_eq!(missing.new.lifecycle, Lifecycle::Active);
    assert_eq!(missing.new.severity, Severity::Warning);
    assert_eq!(missing.new.device.as_deref(), Some("door-3"));
    let message = missing.new.message.clone().unwrap_or_default();
    assert!(
        message.contains("never been heard since it was provisioned at"),
        "{message}"
    );
    assert_eq!(
        missing.new.external_id.as_deref(),
        Some(format!("missing:{}", created.unix_timestamp_nanos() / 1_000_000).as_str())
    );
    let record = store.sensor(door.id).unwrap();
    assert_eq!(
        (record.missing_since, record.last_seen),
        (Some(created), None)
    );
    // Not before its window: 3 heartbeats of 1 s and the grace.
    assert!(
        missing.received_at - created >= time::Duration::seconds(5),
        "raised at {} for a sensor provisioned at {created}",
        missing.received_at
    );

    // A restart keeps the episode: still one event, still open, same start.
    hub.stop().await;
    let (mut hub, counters) = start_hub(dir, &broker).await;
    // Let the new hub's supervision look a few times (it checks every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = events_of(dir, "door-3");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].id, missing.id);
    assert_eq!(events[0].new.lifecycle, Lifecycle::Active);
    assert_eq!(events[0].ended_at, None);
    assert_eq!(store.sensor(door.id).unwrap().missing_since, Some(created));

    // Its first heartbeat ends the episode.
    fwd.up(&sealed(&door, 1, heartbeat(3000, 1)), 1).await;
    let ended = wait_for("the end of sensor.missing", || {
        events_of(dir, "door-3")
            .into_iter()
            .find(|e| e.new.kind == "sensor.missing" && e.new.lifecycle == Lifecycle::Ended)
    })
    .await;
    assert_eq!(ended.id, missing.id);
    assert!(ended.ended_at.is_some());
    assert!(counters.stats().heartbeats >= 1);
    let record = store.sensor(door.id).unwrap();
    assert!(record.last_seen.is_some());
    assert!(!record.missing());

    drop(fwd);
    hub.stop().await;
}

/// With the hub's own (embedded) mosquitto, the forwarder's account that the hub
/// provisions (`lora-forwarder`, its password in `<data_dir>/mqtt-lora.password`) reaches
/// the network server: an alarm is stored and ACKed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_carries_the_forwarders_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = Store::open(dir).unwrap();
    let smoke = add(&store, "kitchen-smoke", SensorKind::Smoke, 300);
    let probe = add(&store, "probe", SensorKind::Temp, 300);
    let mut config = support::config(dir);
    config.hub.mqtt.mode = MqttMode::Embedded;
    config.hub.mqtt.listen = support::loopback();
    config.hub.alerts.disk_full_percent = 100;
    config.lora.mode = gatehouse_config::LoraMode::Sim;
    let mut counters = None;
    let mut hub = support::Running::start(&config, |hub| counters = hub.lora_counters()).await;
    let counters = counters.expect("MQTT is on");
    let password = std::fs::read_to_string(config.lora.password_file(dir)).unwrap();
    let mut fwd = Forwarder::connect_as(
        hub.mqtt().port(),
        &config.lora.mqtt.username,
        password.trim(),
    )
    .await;
    wait_subscribed(&fwd, &counters, &probe).await;

    fwd.up(
        &sealed(&smoke, 1, alarm(AlarmKind::Smoke, true, 4)),
        7_000_000,
    )
    .await;
    let ack = fwd.next_down().await;
    assert_eq!(ack.tx_us, 7_000_000 + RX1_DELAY_US);
    let down = open(
        &B64.decode(&ack.frame).unwrap(),
        &Key(*smoke.key.expose()),
        Dir::Down,
    )
    .unwrap();
    assert!(matches!(down.payload, Payload::Downlink(d) if d.ack_fcnt == Some(1)));
    let events = events_of(dir, "kitchen-smoke");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].new.kind.as_str(), events[0].new.severity),
        ("sensor.alarm.smoke", Severity::Critical)
    );

    drop(fwd);
    hub.stop().await;
}
