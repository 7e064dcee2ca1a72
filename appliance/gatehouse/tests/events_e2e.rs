//! The experiment, grown: the original sent about 100 events and found the alerts
//! matched the database 100%; this sends over 10,000 from mixed sources while the hub is
//! SIGKILLed twice, its MQTT broker is restarted once and the webhook receiver fails 20% of
//! the requests and stalls some, then checks that nothing was lost or doubled.
//!
//! Real processes on loopback, set up as an installer would: `gatehouse source|receiver|
//! rule` and `gatehouse gate add` on the site's data directory, `gatehouse hub` with MQTT
//! in external mode (it writes mosquitto's password and ACL files into its
//! `provision_dir`), a mosquitto the test runs on those files, `gate-sim` gates on the
//! hub's raw-TCP transport. In-process peers: a webhook receiver with fault injection and
//! an idempotency-key ledger, an SMTP sink, HTTP clients posting to the event webhook,
//! and NVRs publishing Frigate messages with the MQTT accounts `gatehouse source add`
//! printed.
//!
//! - Ways in: 8,400 webhook events from 8 concurrent clients on 4 sources (each event
//!   with its own id; every tenth sent `active`, then `ended`; a client retries the same
//!   body until it is answered 201 or 200, so a hub that died mid-request gets the event
//!   again and must fold it, and sends every fiftieth once more after its answer, as a
//!   sender whose answer was lost), 3,360 Frigate messages at QoS 1 from 2 NVRs (new /
//!   update / end for 1,400 objects and 200 reviews, interleaved), and forced doors from
//!   gate-sim (`--door-forced-every`): over 10,000 distinct events.
//! - Rules: everything -> the webhook receiver (plain JSON); critical -> e-mail; warning
//!   and above -> the console (the default rule).
//! - Faults: the hub SIGKILLed and restarted twice (the gates run between the kills, so
//!   that every forced door they report reaches a live hub), mosquitto restarted once (by
//!   SIGTERM, which saves the hub's persistent session), 20% of webhook deliveries
//!   answered 500, 2% stalled past the hub's request timeout (the receiver then handles
//!   them anyway: the duplicates an idempotency key exists for).
//! - Checks, once no delivery is pending: every event the test sent is stored once, with
//!   the severity and lifecycle it was sent with, under the id its sender was given; every
//!   stored event has exactly the notifications the rules call for (firing, and resolved
//!   if it ended) and all of them are delivered, none dead; `gatehouse event check`
//!   (the outbox and the delivery log reconcile) exits 0; the webhook receiver accepted
//!   each notification's idempotency key exactly once and no other; the SMTP sink has
//!   every critical notification's key; the database passes `PRAGMA integrity_check`.
//!
//! The counts are printed at the end with `eprintln!` (.config/nextest.toml has nextest
//! show this test's output when it passes, so `make test` prints them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support {
    pub mod broker;
    pub mod site;
}

use gatehouse_alerts::model::{Event, Lifecycle, NotificationKind, Severity, SourceKind};
use gatehouse_store::events::{DeliveryLogFilter, DeliveryLogOutcome, EventFilter, MAX_PAGE};
use gatehouse_store::Store;
use gatehouse_testpeers::{Faults, SmtpSink, WebhookReceiver};
use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::broker::Broker;
use support::site::{all_events, field, free_port, GateCreds, GateSim, Hub, Mqtt, Site, Summary};

// ---- the load --------------------------------------------------------------------------

/// Sources posting to the webhook: (name, `--kind`). Each has [`CLIENTS_PER_SOURCE`]
/// clients posting at once.
const WEBHOOK_SOURCES: [(&str, &str); 4] = [
    ("cam-yard", "nvr"),
    ("cam-dock", "nvr"),
    ("sensors-east", "sensor"),
    ("sensors-west", "sensor"),
];
const CLIENTS_PER_SOURCE: usize = 2;
const EVENTS_PER_CLIENT: usize = 1_050;
/// Every this many events of a client, one is sent `active` and ended [`END_AFTER`]
/// events later.
const ACTIVE_EVERY: usize = 10;
const END_AFTER: usize = 5;
/// Every this many events of a client, one is sent again once it was answered.
const AGAIN_EVERY: usize = 50;
/// NVRs speaking Frigate's MQTT: (source name, topic prefix).
const NVRS: [(&str, &str); 2] = [
    ("nvr-north", "frigate-north"),
    ("nvr-south", "frigate-south"),
];
const OBJECTS_PER_NVR: usize = 700;
const REVIEWS_PER_NVR: usize = 100;
/// How many Frigate objects are "in view" at once (their messages interleave).
const FRIGATE_CONCURRENT: usize = 16;
const GATES: usize = 4;
/// The card the gates read (enrolled: every read is a grant).
const CARD: &str = "04a1b2c3d4e5f6";
/// Each gate-sim run: seconds of card reads, and every how many reads the door is forced.
const SIM_SECONDS: &str = "6";
const SIM_RATE: &str = "4";
const FORCED_EVERY: &str = "2";
/// Over how long the webhook clients and the NVRs spread what they send.
const LOAD: Duration = Duration::from_secs(30);
/// How long the hub stays dead after each SIGKILL.
const DOWN: Duration = Duration::from_secs(1);
/// The longest the test waits for the deliveries to drain after the load.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(150);
/// The longest the test waits for the hub to take the first Frigate message.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(40);

/// The webhook receiver's faults: the 20% failures, and stalls three times the
/// hub's request timeout (`request_timeout_ms` in [`ALERTS_SECTION`]).
fn hook_faults() -> Faults {
    Faults {
        fail_ratio: 0.2,
        stall_ratio: 0.02,
        stall: Duration::from_millis(1_500),
        seed: 0x00e2_e4a1,
    }
}

/// `[hub.alerts]`: fast retries, and enough attempts that nothing dies of 20% failures.
const ALERTS_SECTION: &str = "[hub.alerts]\nretry_base_ms = 50\nretry_max_ms = 1000\n\
    max_attempts = 40\nrequest_timeout_ms = 500\nparallel_per_receiver = 8\ngate_offline_s = 0\n";

/// splitmix64 (Steele, Lea, Flood, OOPSLA 2014): the seeded choices of the load.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An event the test sent, as it must be stored.
#[derive(Debug, Clone)]
struct Sent {
    source: String,
    external_id: String,
    severity: Severity,
    lifecycle: Lifecycle,
}

/// One webhook request body, and whether it ends an event sent before.
#[derive(Debug, Clone)]
struct Post {
    external_id: String,
    body: String,
    ends: bool,
    /// Sent once more after it was answered, as by a sender whose answer was lost (a hub
    /// killed between its commit and its answer does that to some; these make sure).
    again: bool,
}

fn severity_of(n: usize) -> Severity {
    match n % 20 {
        0..=11 => Severity::Info,
        12..=17 => Severity::Warning,
        _ => Severity::Critical,
    }
}

/// Client `c` (of all clients, 0-based) of webhook source `source`: its requests in order,
/// and the events they make.
fn webhook_plan(source: &str, sensor: bool, c: usize) -> (Vec<Post>, Vec<Sent>) {
    const KINDS: [&str; 5] = [
        "intrusion",
        "line_crossing",
        "smoke",
        "loitering",
        "glass_break",
    ];
    const ZONES: [&str; 4] = ["fence", "dock", "lobby", "roof"];
    let mut posts = Vec::new();
    let mut sent = Vec::new();
    let mut ends: Vec<(usize, Post)> = Vec::new();
    for j in 0..EVENTS_PER_CLIENT {
        let external_id = format!("c{c}-{j:05}");
        let severity = severity_of(j * 7 + c);
        let active = j % ACTIVE_EVERY == 0;
        let mut body = json!({
            "kind": KINDS[(j + c) % KINDS.len()],
            "severity": severity.as_str(),
            "zone": ZONES[j % ZONES.len()],
            "message": format!("event {j} of client {c}"),
            "id": external_id,
            "source": source,
        });
        let place = if sensor { "device" } else { "camera" };
        body[place] = json!(format!("{place}-{}", j % 3));
        if active {
            body["state"] = json!("active");
            let mut end = body.clone();
            end["state"] = json!("ended");
            ends.push((
                j + END_AFTER,
                Post {
                    external_id: external_id.clone(),
                    body: end.to_string(),
                    ends: true,
                    again: false,
                },
            ));
        }
        posts.push(Post {
            external_id: external_id.clone(),
            body: body.to_string(),
            ends: false,
            again: j % AGAIN_EVERY == 7,
        });
        while ends.first().is_some_and(|(at, _)| *at <= j) {
            posts.push(ends.remove(0).1);
        }
        sent.push(Sent {
            source: source.to_owned(),
            external_id,
            severity,
            lifecycle: if active {
                Lifecycle::Ended
            } else {
                Lifecycle::Instant
            },
        });
    }
    posts.extend(ends.into_iter().map(|(_, p)| p));
    (posts, sent)
}

/// One MQTT message to publish.
#[derive(Debug, Clone)]
struct MqttMsg {
    topic: String,
    payload: Vec<u8>,
}

/// A Frigate `events` or `reviews` message (the fields `gatehouse_alerts::frigate` reads,
/// as Frigate 0.14 sends them).
fn frigate_message(prefix: &str, what: &str, ty: &str, after: &Value) -> MqttMsg {
    MqttMsg {
        topic: format!("{prefix}/{what}"),
        payload: json!({"type": ty, "before": after, "after": after})
            .to_string()
            .into_bytes(),
    }
}

fn frigate_object(id: &str, n: usize, start: f64, zone: Option<&str>, snapshot: bool) -> Value {
    const LABELS: [&str; 4] = ["person", "car", "dog", "bicycle"];
    let zones: Vec<&str> = zone.into_iter().collect();
    let camera = ["gate-cam", "yard-cam"][n % 2];
    let label = LABELS[n % LABELS.len()];
    json!({
        "id": id, "camera": camera, "label": label,
        "sub_label": null, "top_score": 0.82, "false_positive": false, "start_time": start,
        "end_time": null, "current_zones": zones, "entered_zones": zones,
        "has_snapshot": snapshot, "has_clip": false,
    })
}

/// NVR `n`'s Frigate messages: each object's and review's messages in order, the objects
/// interleaved as if [`FRIGATE_CONCURRENT`] were in view at once; and the events they make.
fn frigate_plan(n: usize, source: &str, prefix: &str, now: f64) -> (Vec<MqttMsg>, Vec<Sent>) {
    let mut scripts: Vec<Vec<MqttMsg>> = Vec::new();
    let mut sent = Vec::new();
    for k in 0..OBJECTS_PER_NVR {
        let id = format!("{:.6}-o{n}", now + k as f64 * 0.001);
        let start = now - 60.0 + k as f64 * 0.01;
        let mut msgs = vec![frigate_message(
            prefix,
            "events",
            "new",
            &frigate_object(&id, k, start, None, false),
        )];
        // A quarter are updated (a zone, a snapshot), three quarters end, one quarter stays
        // in view.
        if k % 4 == 0 {
            let after = frigate_object(&id, k, start, Some("driveway"), true);
            msgs.push(frigate_message(prefix, "events", "update", &after));
        }
        let ends = k % 4 != 3;
        if ends {
            let mut after = frigate_object(&id, k, start, Some("driveway"), true);
            after["end_time"] = json!(start + 4.0);
            msgs.push(frigate_message(prefix, "events", "end", &after));
        }
        scripts.push(msgs);
        sent.push(Sent {
            source: source.to_owned(),
            external_id: format!("event:{id}"),
            severity: Severity::Info,
            lifecycle: if ends {
                Lifecycle::Ended
            } else {
                Lifecycle::Active
            },
        });
    }
    for r in 0..REVIEWS_PER_NVR {
        let id = format!("{:.6}-r{n}", now + r as f64 * 0.001);
        let alert = r % 3 == 0;
        let start = now - 30.0 + r as f64 * 0.01;
        let review = |end: Option<f64>, zones: &[&str]| {
            json!({
                "id": id, "camera": "yard-cam", "start_time": start, "end_time": end,
                "severity": if alert { "alert" } else { "detection" },
                "data": {"detections": [format!("{start:.6}-d")], "objects": ["person"],
                         "sub_labels": [], "zones": zones, "audio": []},
            })
        };
        let mut msgs = vec![
            frigate_message(prefix, "reviews", "new", &review(None, &[])),
            frigate_message(prefix, "reviews", "update", &review(None, &["fence"])),
        ];
        let ends = r % 5 != 4;
        if ends {
            msgs.push(frigate_message(
                prefix,
                "reviews",
                "end",
                &review(Some(start + 9.0), &["fence"]),
            ));
        }
        scripts.push(msgs);
        sent.push(Sent {
            source: source.to_owned(),
            external_id: format!("review:{id}"),
            severity: if alert {
                Severity::Critical
            } else {
                Severity::Warning
            },
            lifecycle: if ends {
                Lifecycle::Ended
            } else {
                Lifecycle::Active
            },
        });
    }
    // Interleave: repeatedly the next message of one of the first FRIGATE_CONCURRENT
    // scripts still going, picked at random.
    let mut rng = Rng(0x5eed + n as u64);
    let mut waiting: std::collections::VecDeque<std::collections::VecDeque<MqttMsg>> =
        scripts.into_iter().map(Into::into).collect();
    let mut open: Vec<std::collections::VecDeque<MqttMsg>> = Vec::new();
    let mut out = Vec::new();
    loop {
        while open.len() < FRIGATE_CONCURRENT {
            match waiting.pop_front() {
                Some(s) => open.push(s),
                None => break,
            }
        }
        if open.is_empty() {
            break;
        }
        let i = rng.below(open.len());
        out.push(open[i].pop_front().unwrap());
        if open[i].is_empty() {
            open.swap_remove(i);
        }
    }
    (out, sent)
}

// ---- the clients -----------------------------------------------------------------------

/// How one webhook request ended (after as many tries as it took).
#[derive(Debug, Clone)]
struct PostOutcome {
    external_id: String,
    ends: bool,
    /// The deliberate second sending of an answered body.
    again: bool,
    status: u16,
    body: Value,
    tries: u32,
}

/// Posts `body` until it is answered 201 or 200 (after a connection error, a cut-off
/// answer or a 503, again after 50 ms); the answer and how many tries it took.
async fn post_until_answered(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    p: &Post,
) -> (u16, Value, u32) {
    let mut tries = 0;
    loop {
        tries += 1;
        let sent = http
            .post(url)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(p.body.clone())
            .send()
            .await;
        if let Ok(r) = sent {
            let status = r.status().as_u16();
            // A hub killed mid-answer: the body is cut off; try again.
            if let Ok(text) = r.text().await {
                match status {
                    200 | 201 => return (status, serde_json::from_str(&text).unwrap(), tries),
                    503 => {}
                    _ => panic!("POST {} answered {status}: {text}", p.external_id),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts `posts` in order, the i-th not before `start + i * spacing`, each until it is
/// answered (and those marked `again` once more). Counts answered new events in `done`.
async fn post_all(
    url: String,
    key: String,
    posts: Vec<Post>,
    start: tokio::time::Instant,
    spacing: Duration,
    done: Arc<AtomicUsize>,
) -> Vec<PostOutcome> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut out = Vec::with_capacity(posts.len());
    for (i, p) in posts.into_iter().enumerate() {
        tokio::time::sleep_until(start + spacing * i as u32).await;
        let rounds = if p.again { 2 } else { 1 };
        for round in 0..rounds {
            let (status, body, tries) = post_until_answered(&http, &url, &key, &p).await;
            if !p.ends && round == 0 {
                done.fetch_add(1, Ordering::Relaxed);
            }
            out.push(PostOutcome {
                external_id: p.external_id.clone(),
                ends: p.ends,
                again: round == 1,
                status,
                body,
                tries,
            });
        }
    }
    out
}

/// What an NVR's publisher saw.
#[derive(Debug, Default, Clone, Copy)]
struct PublishReport {
    /// Messages acknowledged by the broker (PUBACK).
    acked: usize,
    /// Times the connection was lost.
    disconnects: u32,
    /// Messages published again because the connection was lost before their PUBACK.
    republished: u32,
}

/// The publisher's progress on the current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    None,
    Queued,
    Sent(u16),
}

/// Publishes `msgs` at QoS 1 in order, one at a time, the i-th not before
/// `start + i * spacing`, each until the broker acknowledged it: a message whose PUBACK
/// was lost with the connection is published again on the next one (clean session).
async fn publish_all(
    broker: SocketAddr,
    client_id: String,
    (user, password): (String, String),
    msgs: Vec<MqttMsg>,
    start: tokio::time::Instant,
    spacing: Duration,
) -> PublishReport {
    let mut opts = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
    opts.set_credentials(user, password)
        .set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true);
    let (client, mut el) = AsyncClient::new(opts, 16);
    let mut report = PublishReport::default();
    let mut connected = false;
    let mut flight = InFlight::None;
    while report.acked < msgs.len() {
        if connected && flight == InFlight::None {
            tokio::time::sleep_until(start + spacing * report.acked as u32).await;
            let m = &msgs[report.acked];
            client
                .publish(&m.topic, QoS::AtLeastOnce, false, m.payload.clone())
                .await
                .unwrap();
            flight = InFlight::Queued;
        }
        match el.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                if flight != InFlight::None {
                    report.republished += 1;
                }
                flight = InFlight::None;
            }
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) if flight == InFlight::Queued => {
                flight = InFlight::Sent(pkid);
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(a))) if flight == InFlight::Sent(a.pkid) => {
                report.acked += 1;
                flight = InFlight::None;
            }
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) => {
                panic!("the broker refused the NVR's login ({code:?})")
            }
            Err(_) => {
                if connected {
                    report.disconnects += 1;
                }
                connected = false;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !matches!(
            el.poll().await,
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
    report
}

// ---- reading the store -----------------------------------------------------------------

/// The delivery log, by receiver name and outcome.
#[derive(Debug, Default)]
struct LogView {
    /// Receiver name -> keys of its delivered notifications (each once per log row).
    delivered: BTreeMap<String, Vec<String>>,
    /// Receiver name -> failed attempts.
    failed: BTreeMap<String, u64>,
    /// Receiver name -> dead deliveries.
    dead: BTreeMap<String, u64>,
}

fn delivery_log(store: &Store) -> LogView {
    let mut view = LogView::default();
    let mut after = 0;
    loop {
        let page = store
            .delivery_log(&DeliveryLogFilter {
                after_id: Some(after),
                limit: MAX_PAGE,
                ..DeliveryLogFilter::default()
            })
            .unwrap();
        let Some(last) = page.last() else {
            return view;
        };
        after = last.id;
        for row in page {
            let name = row.receiver_name.clone();
            match row.outcome {
                DeliveryLogOutcome::Delivered => view
                    .delivered
                    .entry(name)
                    .or_default()
                    .push(row.kind.idempotency_key(row.event)),
                DeliveryLogOutcome::Failed => *view.failed.entry(name).or_default() += 1,
                DeliveryLogOutcome::Dead => *view.dead.entry(name).or_default() += 1,
            }
        }
    }
}

/// The notifications the rules call for, by receiver name: every event to `hook`,
/// warning and above to `console`, critical to `mail`; `resolved` too for an ended event.
fn called_for(events: &[Event]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in events {
        assert!(
            e.grouped_into.is_none() && e.ack.is_none(),
            "no rule groups and nobody acknowledges: {e:?}"
        );
        let mut kinds = vec![NotificationKind::Firing];
        if e.new.lifecycle == Lifecycle::Ended {
            kinds.push(NotificationKind::Resolved);
        }
        let mut to = vec!["hook"];
        if e.new.severity >= Severity::Warning {
            to.push("console");
        }
        if e.new.severity == Severity::Critical {
            to.push("mail");
        }
        for r in to {
            let keys = out.entry(r.to_owned()).or_default();
            keys.extend(kinds.iter().map(|k| k.idempotency_key(e.id)));
        }
    }
    out
}

/// Pending deliveries (all receivers).
fn pending(store: &Store) -> u64 {
    store.queue_depth().unwrap().iter().map(|q| q.pending).sum()
}

fn count_kind(events: &[Event], kind: &str) -> usize {
    events.iter().filter(|e| e.new.kind == kind).count()
}

/// `door.forced` events stored so far.
fn forced_stored(store: &Store) -> usize {
    let mut n = 0;
    let mut after = 0;
    loop {
        let page = store
            .list_events(&EventFilter {
                after_seq: Some(after),
                kind: Some("door.forced".into()),
                limit: MAX_PAGE,
                ..EventFilter::default()
            })
            .unwrap();
        let Some(last) = page.last() else {
            return n;
        };
        after = last.seq;
        n += page.len();
    }
}

/// Waits until the store holds `n` forced-door events (door events get no answer: their
/// events are committed a moment after gate-sim sent them, which only the store shows).
fn wait_forced(store: &Store, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = forced_stored(store);
        if got == n {
            return;
        }
        assert!(
            got < n,
            "{got} forced-door events stored, gate-sim forced {n}"
        );
        assert!(
            Instant::now() < deadline,
            "{got} of {n} forced-door events stored"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- the test --------------------------------------------------------------------------

fn config_text(site: &Site, mqtt_port: u16) -> String {
    format!(
        "[general]\ndata_dir = \"{data}\"\n[hub]\nhttp_listen = \"{http}\"\nhttps_listen = \"\"\n\
         gate_tcp_listen = \"{tcp}\"\n[hub.mqtt]\nmode = \"external\"\n\
         broker = \"127.0.0.1:{mqtt_port}\"\npassword_file = \"{pw}\"\n\
         provision_dir = \"{prov}\"\n{ALERTS_SECTION}",
        data = site.data.display(),
        http = site.http,
        tcp = site.tcp,
        pw = site.path("mqtt-hub.password").display(),
        prov = site.path("broker").display(),
    )
}

/// One gate-sim run: the gates read the card and force their doors.
fn spawn_gates(site: &Site, gates_file: &std::path::Path) -> GateSim {
    site.spawn_sim(site.sim(
        "tcp",
        &site.tcp,
        gates_file,
        "gates-state.json",
        &[CARD],
        &[
            "--duration",
            SIM_SECONDS,
            "--rate",
            SIM_RATE,
            "--door-forced-every",
            FORCED_EVERY,
            "--request-timeout-ms",
            "1000",
            "--drain",
            "1",
        ],
    ))
}

/// Ends a gate-sim run; returns how many doors it forced, once their events are stored.
fn finish_gates(store: &Store, sim: GateSim, forced_before: usize) -> (usize, Summary) {
    let s = sim.finish(Duration::from_secs(40));
    assert_eq!(s.n("answered"), s.n("requests"), "{s:?}");
    let forced = forced_before + s.n("forced_opens") as usize;
    assert!(s.n("forced_opens") > 0, "{s:?}");
    wait_forced(store, forced);
    (forced, s)
}

#[test]
fn ten_thousand_events_under_faults_all_delivered_exactly_once() {
    let began = Instant::now();
    let site = Site::new(Mqtt::Off);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hook = rt.block_on(WebhookReceiver::start(hook_faults())).unwrap();
    let smtp = rt.block_on(SmtpSink::start()).unwrap();

    // The site: MQTT in external mode on a port the test's mosquitto will take.
    let mqtt_port = free_port();
    fs::write(
        site.path("mqtt-hub.password"),
        "hub-password-for-the-e2e-test\n",
    )
    .unwrap();
    fs::write(&site.config, config_text(&site, mqtt_port)).unwrap();
    let keys: Vec<String> = WEBHOOK_SOURCES
        .iter()
        .map(|(name, kind)| {
            let out = site.ok(&["source", "add", name, "--kind", kind]);
            field(&out, "API key:").to_owned()
        })
        .collect();
    let nvr_accounts: Vec<(String, String)> = NVRS
        .iter()
        .map(|(name, prefix)| {
            let out = site.ok(&[
                "source",
                "add",
                name,
                "--kind",
                "nvr",
                "--mqtt-prefix",
                prefix,
                "--base-url",
                &format!("http://{name}.lan:5000"),
            ]);
            let password = field(&out, "MQTT password:")
                .split_whitespace()
                .next()
                .unwrap();
            (field(&out, "MQTT user:").to_owned(), password.to_owned())
        })
        .collect();
    site.ok(&[
        "receiver",
        "add",
        "hook",
        "--webhook",
        &hook.url(),
        "--format",
        "json",
    ]);
    site.ok(&[
        "receiver",
        "add",
        "mail",
        "--email",
        "--smtp",
        &smtp.addr().to_string(),
        "--security",
        "none",
        "--from",
        "gatehouse@site.test",
        "--to",
        "alarms@site.test",
    ]);
    site.ok(&[
        "rule",
        "add",
        "everything",
        "--min-severity",
        "info",
        "--to",
        "hook",
    ]);
    site.ok(&[
        "rule",
        "add",
        "critical-mail",
        "--min-severity",
        "critical",
        "--to",
        "mail",
    ]);
    let rules = site.ok(&["rule", "list"]);
    assert!(
        rules.contains("console"),
        "the default console rule: {rules}"
    );
    let gates = site.enrol("door", GATES, &[&format!("0x{CARD}")]);
    let records: Vec<String> = gates.iter().map(GateCreds::record).collect();
    let gates_file = site.gates_file("gates.toml", &records);

    // The hub writes the broker's files; then the broker starts on them.
    let mut hub: Hub = site.start_hub();
    let mut broker = Broker::start(&site.path("broker"), mqtt_port);
    let store = Store::open(&site.data).unwrap();

    // The plan of everything sent.
    let mut sent: Vec<Sent> = Vec::new();
    let mut client_posts = Vec::new();
    for (s, (name, kind)) in WEBHOOK_SOURCES.iter().enumerate() {
        for k in 0..CLIENTS_PER_SOURCE {
            let c = s * CLIENTS_PER_SOURCE + k;
            let (posts, events) = webhook_plan(name, *kind == "sensor", c);
            sent.extend(events);
            client_posts.push((s, posts));
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let mut nvr_msgs = Vec::new();
    for (n, (name, prefix)) in NVRS.iter().enumerate() {
        let (msgs, events) = frigate_plan(n, name, prefix, now);
        sent.extend(events);
        nvr_msgs.push(msgs);
    }

    // The hub takes Frigate messages once it has subscribed (then its persistent session
    // keeps them while it is away): a first message per NVR, sent until it is stored.
    let subscribed = Instant::now();
    for (n, (name, prefix)) in NVRS.iter().enumerate() {
        let id = format!("probe-{n}");
        let probe = frigate_message(
            prefix,
            "events",
            "new",
            &frigate_object(&id, 0, now, None, false),
        );
        let external_id = format!("event:{id}");
        loop {
            let r = rt.block_on(publish_all(
                broker.addr(),
                format!("{name}-probe"),
                nvr_accounts[n].clone(),
                vec![probe.clone()],
                tokio::time::Instant::now(),
                Duration::ZERO,
            ));
            assert_eq!(r.acked, 1);
            let deadline = Instant::now() + Duration::from_secs(2);
            let stored = loop {
                let found = store
                    .list_events(&EventFilter {
                        source: Some((*name).to_owned()),
                        limit: 10,
                        ..EventFilter::default()
                    })
                    .unwrap()
                    .iter()
                    .any(|e| e.new.external_id.as_deref() == Some(external_id.as_str()));
                if found || Instant::now() > deadline {
                    break found;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            if stored {
                break;
            }
            assert!(
                subscribed.elapsed() < SUBSCRIBE_TIMEOUT,
                "the hub never took {name}'s Frigate message:\n{}\n{}",
                hub_tail(&site),
                broker.log_text()
            );
        }
        sent.push(Sent {
            source: (*name).to_owned(),
            external_id,
            severity: Severity::Info,
            lifecycle: Lifecycle::Active,
        });
    }
    eprintln!(
        "events_e2e: set up in {:.1?} (the hub took Frigate messages after {:.1?})",
        began.elapsed(),
        subscribed.elapsed()
    );

    // ---- the load, with the faults ----
    let load_began = Instant::now();
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let url = format!("http://{}/api/v1/events", site.http);
    let done = Arc::new(AtomicUsize::new(0));
    let posters: Vec<_> = client_posts
        .into_iter()
        .map(|(s, posts)| {
            let spacing = LOAD / posts.len() as u32;
            let task = rt.spawn(post_all(
                url.clone(),
                keys[s].clone(),
                posts,
                start,
                spacing,
                Arc::clone(&done),
            ));
            (s, task)
        })
        .collect();
    let publishers: Vec<_> = nvr_msgs
        .into_iter()
        .enumerate()
        .map(|(n, msgs)| {
            let spacing = LOAD / msgs.len() as u32;
            rt.spawn(publish_all(
                broker.addr(),
                format!("{}-frigate", NVRS[n].0),
                nvr_accounts[n].clone(),
                msgs,
                start,
                spacing,
            ))
        })
        .collect();
    let progress = |what: &str| {
        eprintln!(
            "events_e2e: {:>5.1}s {what}: {} webhook events answered, hook accepted {}",
            load_began.elapsed().as_secs_f64(),
            done.load(Ordering::Relaxed),
            hook.counts().accepted
        );
    };

    // Phase 1: gates run; then the hub is killed.
    let mut sims = Vec::new();
    let (forced, s) = finish_gates(&store, spawn_gates(&site, &gates_file), 0);
    sims.push(s);
    progress("SIGKILL hub");
    hub.kill();
    std::thread::sleep(DOWN);
    hub = site.start_hub();
    progress("hub restarted");

    // Phase 2: gates run; mosquitto is restarted meanwhile; then the hub is killed again.
    let sim = spawn_gates(&site, &gates_file);
    std::thread::sleep(Duration::from_secs(3));
    progress("restart mosquitto");
    broker.restart();
    progress("mosquitto restarted");
    let (forced, s) = finish_gates(&store, sim, forced);
    sims.push(s);
    progress("SIGKILL hub");
    hub.kill();
    std::thread::sleep(DOWN);
    hub = site.start_hub();
    progress("hub restarted");

    // Phase 3: gates run to the end of the load.
    let (forced, s) = finish_gates(&store, spawn_gates(&site, &gates_file), forced);
    sims.push(s);
    let outcomes: Vec<(&str, PostOutcome)> = posters
        .into_iter()
        .flat_map(|(s, h)| {
            let source = WEBHOOK_SOURCES[s].0;
            rt.block_on(h)
                .unwrap()
                .into_iter()
                .map(move |o| (source, o))
        })
        .collect();
    let published: Vec<PublishReport> = publishers
        .into_iter()
        .map(|h| rt.block_on(h).unwrap())
        .collect();
    progress("everything sent");
    let load_time = load_began.elapsed();

    // ---- drain: until every event sent is stored as sent and nothing is pending ----
    let expected: HashMap<(&str, &str), &Sent> = sent
        .iter()
        .map(|s| ((s.source.as_str(), s.external_id.as_str()), s))
        .collect();
    assert_eq!(
        expected.len(),
        sent.len(),
        "external ids are unique per source"
    );
    let drain_began = Instant::now();
    let mut last_line = Instant::now();
    let events = loop {
        let p = pending(&store);
        let mut missing = sent.len();
        if p == 0 {
            let events = all_events(&store);
            let stored_as_sent = events
                .iter()
                .filter(|e| {
                    let key = (
                        e.new.source.as_str(),
                        e.new.external_id.as_deref().unwrap_or(""),
                    );
                    expected
                        .get(&key)
                        .is_some_and(|s| s.lifecycle == e.new.lifecycle)
                })
                .count();
            missing = sent.len() - stored_as_sent;
            if missing == 0 && pending(&store) == 0 {
                break events;
            }
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            let by_receiver: Vec<String> = store
                .queue_depth()
                .unwrap()
                .iter()
                .map(|q| format!("{} {}", q.receiver_name, q.pending))
                .collect();
            eprintln!(
                "events_e2e: draining {:>5.1}s: pending [{}], hook accepted {} (duplicates {}), \
                 mails {}{}",
                drain_began.elapsed().as_secs_f64(),
                by_receiver.join(", "),
                hook.counts().accepted,
                hook.duplicates_seen(),
                smtp.messages().len(),
                if p == 0 {
                    format!(", {missing} events not yet stored as sent")
                } else {
                    String::new()
                }
            );
        }
        assert!(
            drain_began.elapsed() < DRAIN_TIMEOUT,
            "deliveries did not drain: {p} pending, {missing} events missing"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let drain_time = drain_began.elapsed();

    // ---- checks ----
    let by_key: HashMap<(&str, &str), &Event> = events
        .iter()
        .filter_map(|e| {
            let x = e.new.external_id.as_deref()?;
            Some(((e.new.source.as_str(), x), e))
        })
        .collect();
    // Every event sent is stored once, as it was sent.
    for s in &sent {
        let e = by_key
            .get(&(s.source.as_str(), s.external_id.as_str()))
            .unwrap_or_else(|| panic!("not stored: {s:?}"));
        assert_eq!(e.new.severity, s.severity, "{s:?}: {e:?}");
        assert_eq!(e.new.lifecycle, s.lifecycle, "{s:?}: {e:?}");
    }
    // The webhook senders: one 201 or 200 per event, with the stored event's id.
    let mut ids_given: HashMap<(&str, &str), String> = HashMap::new();
    let (mut created, mut duplicate_answers, mut updated, mut again) = (0, 0, 0, 0);
    for (source, o) in &outcomes {
        let id = o.body["id"].as_str().unwrap().to_owned();
        let stored = by_key[&(*source, o.external_id.as_str())];
        assert_eq!(id, stored.id.to_string(), "{o:?}");
        let dup = o.body["duplicate"] == json!(true);
        if o.again {
            assert!(
                o.status == 200 && dup,
                "an answered event sent again: {o:?}"
            );
            again += 1;
        } else if o.ends {
            assert_eq!(o.status, 200, "{o:?}");
            if o.body["updated"] == json!(true) {
                updated += 1;
            }
        } else {
            match (o.status, dup) {
                (201, false) => created += 1,
                (200, true) => duplicate_answers += 1,
                _ => panic!("a new event answered {o:?}"),
            }
            let old = ids_given.insert((*source, o.external_id.as_str()), id);
            assert!(old.is_none(), "{o:?} answered twice");
        }
    }
    let webhook_events = WEBHOOK_SOURCES.len() * CLIENTS_PER_SOURCE * EVENTS_PER_CLIENT;
    assert_eq!(ids_given.len(), webhook_events);
    assert_eq!(created + duplicate_answers, webhook_events);
    assert_eq!(again, webhook_events / AGAIN_EVERY);
    let distinct_ids: BTreeSet<&String> = ids_given.values().collect();
    assert_eq!(
        distinct_ids.len(),
        webhook_events,
        "one event per external id"
    );
    // Gates: each forced door once.
    assert_eq!(count_kind(&events, "door.forced"), forced);
    // Nothing else but the hub's own system events.
    let others: Vec<&Event> = events
        .iter()
        .filter(|e| {
            let key = (
                e.new.source.as_str(),
                e.new.external_id.as_deref().unwrap_or(""),
            );
            !expected.contains_key(&key) && e.new.kind != "door.forced"
        })
        .collect();
    assert!(
        others
            .iter()
            .all(|e| e.new.source_kind == SourceKind::System),
        "events nobody sent: {others:#?}"
    );
    assert!(
        others.iter().all(|e| e.new.kind != "alert.delivery_dead"),
        "a delivery died: {others:#?}"
    );
    assert!(events.len() >= 10_000, "{} events", events.len());

    // Every notification the rules call for is delivered, once, and no other.
    let wanted = called_for(&events);
    let log = delivery_log(&store);
    assert!(log.dead.is_empty(), "dead deliveries: {:?}", log.dead);
    for (receiver, keys) in &wanted {
        let got = log.delivered.get(receiver).cloned().unwrap_or_default();
        let got_set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(
            got.len(),
            got_set.len(),
            "{receiver}: a notification delivered twice"
        );
        assert_same_keys(&format!("delivered to {receiver}"), &got_set, keys);
    }
    assert_eq!(
        log.delivered.keys().collect::<Vec<_>>(),
        wanted.keys().collect::<Vec<_>>()
    );

    // The database and the delivery log reconcile.
    let (ok, check, err) = site.run(&["event", "check"]);
    assert!(ok, "gatehouse event check:\n{check}{err}");
    assert_eq!(site.integrity_check(), "ok");

    // The webhook receiver (honouring the key) shows each notification exactly once.
    let accepted = hook.accepted_keys();
    let accepted_set: BTreeSet<String> = accepted.iter().cloned().collect();
    assert_eq!(accepted.len(), accepted_set.len());
    assert_same_keys(
        "the webhook receiver's ledger",
        &accepted_set,
        &wanted["hook"],
    );
    let counts = hook.counts();
    assert_eq!(counts.without_key, 0);
    // The SMTP sink has every critical notification's key (a mail sent again after a
    // crash has the same key).
    let mails = smtp.messages();
    let mail_keys: BTreeSet<String> = mails
        .iter()
        .map(|m| m.idempotency_key.clone().expect("a mail without a key"))
        .collect();
    assert_same_keys("the SMTP sink's keys", &mail_keys, &wanted["mail"]);
    let critical_sent = sent
        .iter()
        .filter(|s| s.severity == Severity::Critical)
        .count();

    // ---- the counts ----
    let mut by_source: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for e in &events {
        *by_source
            .entry((e.new.source.clone(), e.new.source_kind.as_str()))
            .or_default() += 1;
    }
    let system: BTreeMap<&str, usize> = others.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(e.new.kind.as_str()).or_default() += 1;
        m
    });
    eprintln!("events_e2e: ==== counts ====");
    eprintln!(
        "events_e2e: {} events stored ({} sent by the test, {} forced doors, {} system: \
         {system:?})",
        events.len(),
        sent.len(),
        forced,
        others.len()
    );
    for ((source, kind), n) in &by_source {
        eprintln!("events_e2e:   {source:<14} {kind:<7} {n:>6}");
    }
    for (receiver, keys) in &log.delivered {
        eprintln!(
            "events_e2e: receiver {receiver:<8} {:>6} delivered, {:>5} failed attempts retried",
            keys.len(),
            log.failed.get(receiver).copied().unwrap_or(0)
        );
    }
    eprintln!(
        "events_e2e: webhook receiver: {} requests, {} keys accepted, {} duplicates seen (made \
         harmless by the key), {} answered 500, {} stalled",
        counts.requests, counts.accepted, counts.duplicates, counts.failed, counts.stalled
    );
    eprintln!(
        "events_e2e: SMTP sink: {} mails, {} distinct keys ({} resent), {critical_sent} \
         critical events sent",
        mails.len(),
        mail_keys.len(),
        mails.len() - mail_keys.len()
    );
    let tries: u32 = outcomes.iter().map(|(_, o)| o.tries).sum();
    eprintln!(
        "events_e2e: webhook clients: {} requests for {} bodies ({} retransmissions); new \
         events answered 201: {created}, 200 duplicate: {duplicate_answers}; ends answered \
         updated: {updated}; {again} answered events sent again, all answered 200 duplicate",
        tries,
        outcomes.len(),
        tries as usize - outcomes.len()
    );
    for ((name, _), r) in NVRS.iter().zip(&published) {
        eprintln!(
            "events_e2e: {name}: {} Frigate messages acknowledged by the broker, {} \
             disconnects, {} published again",
            r.acked, r.disconnects, r.republished
        );
    }
    let forced_runs: Vec<u64> = sims.iter().map(|s| s.n("forced_opens")).collect();
    eprintln!("events_e2e: gate-sim runs forced {forced_runs:?} doors");
    eprintln!(
        "events_e2e: faults: hub SIGKILLed 2 times, mosquitto restarted {} time(s)",
        broker.starts - 1
    );
    eprintln!("events_e2e: `gatehouse event check`:\n{}", check.trim_end());
    eprintln!(
        "events_e2e: wall time {:.1?} (load {:.1?}, drain {:.1?})",
        began.elapsed(),
        load_time,
        drain_time
    );
    hub.stop();
}

/// Asserts that `got` is `wanted`, naming a few of the keys missing or extra.
fn assert_same_keys(what: &str, got: &BTreeSet<String>, wanted: &BTreeSet<String>) {
    let missing: Vec<&String> = wanted.difference(got).take(10).collect();
    let extra: Vec<&String> = got.difference(wanted).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} keys, {} called for; missing {missing:?}, extra {extra:?}",
        got.len(),
        wanted.len()
    );
}

/// The end of the current hub log (for failure messages).
fn hub_tail(site: &Site) -> String {
    let logs = site.hub_logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
