//! Issue 6 end to end: 200 simulated LoRa sensor nodes -> the simulated air with 10% loss
//! -> the forwarder (`gatehouse lora`, sim mode) -> the hub's embedded mosquitto -> the
//! hub's network server -> events and alerts.
//!
//! Real processes on loopback, set up as an installer would: `gatehouse receiver|rule` and
//! 200 × `gatehouse sensor add` on the site's data directory (their printed provisioning
//! TOML, concatenated, is the node simulator's input), `gatehouse hub` with its embedded
//! mosquitto, `gatehouse lora` on the air, and `lora-sim` (lora-node/sim: every node runs
//! the firmware's core, lora-node-core) on the same air. In-process: the air
//! (`gatehouse_lora_proto::air`, for its statistics) and a webhook receiver.
//!
//! - Load: every node heartbeats and reports; alarms are raised at random times (each
//!   confirmed, raise and end, retried with backoff until acknowledged); one node is
//!   silenced early; frames are replayed and forged with real nodes' addresses.
//! - Checks: every alarm a node sent was acknowledged (none given up, none pending) and
//!   is stored as a `sensor.alarm.*` event under `<sensor>:<alarm_id>`; the hub counted
//!   the replayed and forged frames (and no more than were sent) and accounted for every
//!   uplink; it counted no more reports and heartbeats than the nodes sent; the silenced
//!   node raised `sensor.missing` (not before its supervision window) and the webhook
//!   receiver got it; the forwarder's transmit log stays inside the EU868 duty cycle in
//!   every sliding hour, per sub-band (computed here from the log, by frequency).
//!
//! The figures are printed at the end (.config/nextest.toml shows them when it passes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support {
    pub mod lora;
    pub mod site;
}

use gatehouse_lora_proto::air::{Air, AirConfig};
use gatehouse_store::Store;
use gatehouse_testpeers::{Faults, WebhookReceiver};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};
use support::lora::{duty_by_band, lora_sim, metric, read_tx_log, scrape, Daemon};
use support::site::{all_events, free_port, Mqtt, Site};

/// Sensor nodes.
const NODES: usize = 200;
/// The node silenced early (its index) and its heartbeat interval: short, so that its
/// supervision window (3 heartbeats and the hub's grace) ends within the test. lora-sim
/// starts it with the run and silences it once the hub acknowledged its panic alarm. (A
/// sensor never heard is reported missing too, counted from its provisioning; the test
/// looks at the event for the silence after the node was heard.)
const SILENT: usize = 7;
/// The words of the hub's `sensor.missing` for a sensor never heard since provisioning.
const NEVER_HEARD: &str = "never been heard";
const SILENT_HEARTBEAT_S: u64 = 10;
/// Every other node's heartbeat interval.
const HEARTBEAT_S: u64 = 60;
/// Kinds, round robin.
const KINDS: [&str; 4] = ["door", "pir", "smoke", "temp"];
/// The channel: SF7 at 500 kHz on 868.3 MHz (inside 868.0-868.6 MHz, 1 % duty cycle):
/// 200 nodes booting within half a minute on one channel is a heavy pure-ALOHA load, and
/// the shortest airtime (about 17 ms a frame) keeps collisions to about half the frames.
const FREQ_HZ: u32 = 868_300_000;
const BW_HZ: u32 = 500_000;
/// The air's random loss.
const LOSS: f64 = 0.1;
/// lora-sim: seconds of load, and every how many seconds a node raises an alarm (each
/// node's first at a random time in its first interval, so about duration/every of them
/// raise one).
const SIM_SECONDS: &str = "25";
const ALARM_EVERY: &str = "120";
/// Retransmissions of an unacknowledged alarm: from 0.5 s doubling up to 4 s (plus the
/// firmware's jitter), so that the drain after the load is short.
const BACKOFF: [&str; 4] = [
    "--alarm-backoff-ms",
    "500",
    "--alarm-backoff-max-ms",
    "4000",
];
/// Nodes an acknowledged alarm frame of which is replayed, and nodes whose address a
/// forged frame carries, with the second of the run each is sent at: well after the load
/// (nodes booted until second 25 still report, heartbeat and end alarms for a while, and
/// on a busy channel most of these single frames collided: a run counted 0 of 3 forged),
/// one at a time (two at once would only collide with each other). The air's random loss
/// still takes some: each must be counted at least once.
const REPLAYED: [(usize, &str); 3] = [(11, "36"), (12, "38.4"), (13, "40.8")];
const FORGED: [(usize, &str); 5] = [
    (21, "37.2"),
    (22, "39.6"),
    (23, "42"),
    (24, "43.2"),
    (25, "44.4"),
];
/// The longest the test waits for lora-sim (its run, then the drain of alarms in flight).
const SIM_TIMEOUT: Duration = Duration::from_secs(150);

fn name(i: usize) -> String {
    format!("node-{i:03}")
}

/// `[hub.alerts]` with fast retries; `[lora]` in sim mode on the test's air.
fn extra_config(air: &str) -> String {
    format!(
        "[hub.alerts]\nretry_base_ms = 50\nretry_max_ms = 1000\nrequest_timeout_ms = 2000\n\
         gate_offline_s = 0\n\
         [lora]\nmode = \"sim\"\nair = \"{air}\"\nregion = \"EU868\"\nfrequency_hz = {FREQ_HZ}\n\
         spreading_factor = 7\nbandwidth_hz = {BW_HZ}\n"
    )
}

#[test]
fn two_hundred_nodes_through_air_forwarder_and_hub() {
    let began = Instant::now();
    // The embedded broker on a fixed port: `gatehouse lora` run on its own finds it there.
    let site = Site::new(Mqtt::Embedded(free_port()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let hook = rt
        .block_on(WebhookReceiver::start(Faults::default()))
        .unwrap();
    let air = Air::start(AirConfig {
        loss: LOSS,
        seed: 0x0104_ae2e,
        ..AirConfig::default()
    })
    .unwrap();
    let air_addr = air.addr().to_string();
    let mut config = fs::read_to_string(&site.config).unwrap();
    config.push_str(&extra_config(&air_addr));
    fs::write(&site.config, config).unwrap();

    // The alert path of a missing sensor: a rule sending sensor.missing to the receiver.
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
        "rule",
        "add",
        "missing-sensors",
        "--kind",
        "sensor.missing",
        "--to",
        "hook",
    ]);

    // 200 sensors, provisioned as an installer does; their printed TOML is lora-sim's input.
    let mut provisioning = String::new();
    for i in 0..NODES {
        let hb = if i == SILENT {
            SILENT_HEARTBEAT_S
        } else {
            HEARTBEAT_S
        };
        let out = site.ok(&[
            "sensor",
            "add",
            &name(i),
            "--kind",
            KINDS[i % KINDS.len()],
            "--heartbeat",
            &format!("{hb}s"),
        ]);
        provisioning.push_str(&out);
        provisioning.push('\n');
    }
    let sensors_file = site.path("sensors.toml");
    fs::write(&sensors_file, &provisioning).unwrap();
    let provisioned = began.elapsed();

    let hub = site.start_hub();
    let mut forwarder = Daemon::gatehouse(
        "gatehouse lora",
        &site.config,
        &["lora"],
        site.path("lora.log"),
    );
    forwarder.wait_log("LoRa forwarder subscribed");

    // The run.
    let summary_file = site.path("sim-summary.json");
    let mut cmd = Command::new(lora_sim());
    cmd.arg("--sensors")
        .arg(&sensors_file)
        .args(["--air", &air_addr, "--duration", SIM_SECONDS])
        .args(["--alarm-every", ALARM_EVERY, "--start-spread", SIM_SECONDS])
        .args(BACKOFF)
        .args(["--silence", &format!("{}@1", name(SILENT))])
        .arg("--json-summary")
        .arg(&summary_file);
    for (i, at) in REPLAYED {
        cmd.args(["--replay", &format!("{}@{at}", name(i))]);
    }
    for (i, at) in FORGED {
        cmd.args(["--forge", &format!("{}@{at}", name(i))]);
    }
    let sim_started = Instant::now();
    let sim_out = Daemon::spawn("lora-sim", cmd, site.path("lora-sim.log")).finish(SIM_TIMEOUT);
    let sim_elapsed = sim_started.elapsed();
    let summary: Value = serde_json::from_str(&fs::read_to_string(&summary_file).unwrap())
        .unwrap_or_else(|e| panic!("lora-sim's JSON summary: {e}\n{sim_out}"));
    let totals = &summary["totals"];
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"));

    // ---- every confirmed alarm was acknowledged -----------------------------------------
    assert!(n(totals, "alarms_sent") > 0, "no alarm was sent: {sim_out}");
    assert_eq!(n(totals, "alarms_gave_up"), 0, "alarms given up: {sim_out}");
    assert_eq!(
        n(totals, "alarms_pending"),
        0,
        "alarms unacknowledged: {sim_out}"
    );
    // The silenced node stops with whatever it had in flight (none if it was silenced
    // right after its panic alarm's ACK); every other alarm sent was acknowledged.
    assert_eq!(
        n(totals, "alarms_acked") + n(totals, "alarms_cut_off"),
        n(totals, "alarms_sent"),
        "{sim_out}"
    );

    // ---- ... and arrived as events ------------------------------------------------------
    // (sensor, alarm_id) of every alarm message (raise or end) acknowledged: each must be
    // an event `sensor.alarm.*` from that sensor with external id `alarm:<alarm_id>:<fcnt>`
    // (retransmissions fold into it). An alarm's end is sent under its raise's alarm_id
    // (lora-node-core), so the hub ends the raise's event with it.
    // Every alarm event must be one a node sent (acknowledged, or cut off by --silence
    // after the hub took it).
    let ids = |key: &str| -> BTreeSet<(String, String)> {
        let mut set = BTreeSet::new();
        for (node, r) in summary["per_node"].as_object().unwrap() {
            for id in r[key].as_array().unwrap() {
                let (alarm, _active) = id.as_str().unwrap().split_once(':').unwrap();
                set.insert((node.clone(), alarm.to_owned()));
            }
        }
        set
    };
    let (wanted, sent) = (ids("alarm_ids_acked"), ids("alarm_ids_sent"));
    let store = Store::open(&site.data).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (alarm_events, ended_events, events) = loop {
        let events = all_events(&store);
        let got: BTreeSet<(String, String)> = events
            .iter()
            .filter(|e| e.new.kind.starts_with("sensor.alarm."))
            .filter_map(|e| {
                let x = e.new.external_id.as_deref()?.strip_prefix("alarm:")?;
                Some((e.new.source.clone(), x.split(':').next()?.to_owned()))
            })
            .collect();
        let missing: Vec<&(String, String)> = wanted.difference(&got).collect();
        if missing.is_empty() {
            let ended = events
                .iter()
                .filter(|e| e.new.kind.starts_with("sensor.alarm.") && e.ended_at.is_some())
                .count();
            let unsent: Vec<&(String, String)> = got.difference(&sent).collect();
            assert!(unsent.is_empty(), "alarm events no node sent: {unsent:?}");
            break (got.len(), ended, events.len());
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged alarms have no event, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // ---- the silenced node goes missing, and the receiver hears of it --------------------
    let silent = name(SILENT);
    let missing_at = rt
        .block_on(async {
            let deadline = Instant::now() + Duration::from_secs(3 * SILENT_HEARTBEAT_S + 40);
            loop {
                let hit = hook.requests().into_iter().find(|r| {
                    let body = String::from_utf8_lossy(&r.body);
                    body.contains("sensor.missing")
                        && body.contains(&silent)
                        && !body.contains(NEVER_HEARD)
                });
                if let Some(r) = hit {
                    return Some(r.received_at);
                }
                if Instant::now() > deadline {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "no sensor.missing for {silent} reached the webhook receiver; requests: {:?}",
                hook.requests()
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .collect::<Vec<_>>()
            )
        });
    let events_now = all_events(&store);
    let missing: Vec<&gatehouse_alerts::model::Event> = events_now
        .iter()
        .filter(|e| e.new.kind == "sensor.missing")
        .collect();
    let silent_missing = missing
        .iter()
        .find(|e| {
            e.new.source == silent && !e.new.message.as_deref().unwrap_or("").contains(NEVER_HEARD)
        })
        .unwrap_or_else(|| panic!("no stored sensor.missing event for {silent}: {missing:?}"));
    // Not before its window: the hub may call it missing only after 3 heartbeat intervals
    // of silence since it last heard the node (or since it was added, if never).
    let silenced_ms = summary["per_node"][&silent]["silenced_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{silent} was not silenced: {sim_out}"));
    let record = store.sensor_by_name(&silent).unwrap();
    let quiet_from = record.last_seen.unwrap_or(record.created);
    let window = Duration::from_secs(3 * SILENT_HEARTBEAT_S);
    assert!(
        silent_missing.received_at - quiet_from >= window,
        "{silent} called missing at {} though last heard at {quiet_from} (window {window:?})",
        silent_missing.received_at
    );
    let missing_after = silent_missing.received_at - quiet_from;
    let others_missing: Vec<String> = missing
        .iter()
        .filter(|e| e.new.source != silent)
        .map(|e| e.new.source.clone())
        .collect();
    assert!(
        others_missing.is_empty(),
        "live sensors reported missing: {others_missing:?}"
    );

    // ---- the hub's counters -------------------------------------------------------------
    let m = scrape(&site.http);
    let c = |name: &str, labels: &[(&str, &str)]| metric(&m, name, labels) as u64;
    let uplinks = c("gatehouse_lora_uplinks_total", &[]);
    let outcome = |o: &str| c("gatehouse_lora_uplinks_total", &[("outcome", o)]);
    let (accepted, replayed, forged) =
        (outcome("accepted"), outcome("replayed"), outcome("forged"));
    let unknown = outcome("unknown_device");
    let frames = |t: &str| c("gatehouse_lora_frames_total", &[("type", t)]);
    let (reports, heartbeats) = (frames("report"), frames("heartbeat"));
    let alarm_frames = frames("alarm") + frames("alarm_duplicate");
    let acks = c("gatehouse_lora_acks_sent_total", &[]);
    assert_eq!(
        (
            outcome("malformed"),
            outcome("disabled"),
            outcome("store_failed"),
            outcome("overloaded")
        ),
        (0, 0, 0, 0),
        "{m}"
    );
    assert!(
        (1..=REPLAYED.len() as u64).contains(&replayed),
        "replayed frames counted: {replayed} of {} sent\n{m}",
        REPLAYED.len()
    );
    assert!(
        (1..=FORGED.len() as u64).contains(&forged),
        "forged frames counted: {forged} of {} sent\n{m}",
        FORGED.len()
    );
    assert_eq!(unknown, 0, "{m}");
    assert_eq!(uplinks, accepted + replayed + forged + unknown, "{m}");
    assert_eq!(
        accepted,
        reports + heartbeats + alarm_frames,
        "every accepted uplink is a report, heartbeat or alarm\n{m}"
    );
    assert!(reports <= n(totals, "reports") && reports > 0, "{m}");
    assert!(
        heartbeats <= n(totals, "heartbeats") && heartbeats > 0,
        "{m}"
    );
    assert!(alarm_frames <= n(totals, "alarm_frames"), "{m}");
    assert!(acks >= n(totals, "alarms_acked"), "{m}");
    assert_eq!(
        acks, alarm_frames,
        "every accepted alarm copy is acknowledged\n{m}"
    );
    // The store's per-sensor counts agree with the counters.
    let per_sensor: u64 = store
        .list_sensors()
        .unwrap()
        .iter()
        .map(|r| r.uplinks)
        .sum();
    assert_eq!(
        per_sensor, accepted,
        "sensors' uplink counts in the store vs {m}"
    );
    let stats = air.stats();
    assert!(uplinks <= stats.delivered, "{stats:?}");

    // ---- the duty cycle, from the transmit log --------------------------------------------
    let tx = read_tx_log(&site.data.join("lora-tx.log"));
    assert!(
        tx.len() as u64 <= acks,
        "the forwarder logged {} transmissions for {acks} ACKs",
        tx.len()
    );
    assert!(
        tx.len() as u64 >= n(totals, "alarms_acked"),
        "the forwarder logged {} transmissions for {} acknowledged alarms",
        tx.len(),
        n(totals, "alarms_acked")
    );
    let duty = duty_by_band(&tx);
    for (band, (count, total, max, limit)) in &duty {
        assert!(
            max <= limit,
            "sub-band {band}: {max} µs of airtime in one hour, the limit is {limit} µs ({count} transmissions)"
        );
        eprintln!(
            "lora_e2e: forwarder sub-band {band}: {count} transmissions, {:.2} s airtime, \
             busiest hour {:.2} s of {:.0} s allowed",
            *total as f64 / 1e6,
            *max as f64 / 1e6,
            *limit as f64 / 1e6
        );
    }
    drop(forwarder);
    drop(hub);

    eprintln!(
        "lora_e2e: {NODES} nodes, {} s load + drain = {:.1} s; provisioning {:.1} s; test {:.1} s",
        SIM_SECONDS,
        sim_elapsed.as_secs_f64(),
        provisioned.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    eprintln!(
        "lora_e2e: nodes sent {} frames ({:.1} s airtime): {} reports, {} heartbeats, {} alarm \
         frames for {} alarms ({} acked, {} given up, {} cut off by the silence); {} replays, \
         {} forgeries",
        n(totals, "frames"),
        n(totals, "airtime_us") as f64 / 1e6,
        n(totals, "reports"),
        n(totals, "heartbeats"),
        n(totals, "alarm_frames"),
        n(totals, "alarms_sent"),
        n(totals, "alarms_acked"),
        n(totals, "alarms_gave_up"),
        n(totals, "alarms_cut_off"),
        n(totals, "replays"),
        n(totals, "forgeries"),
    );
    eprintln!(
        "lora_e2e: air: {} transmissions, {} receptions delivered, {} collided, {} lost, {} deaf",
        stats.transmissions, stats.delivered, stats.collided, stats.lost, stats.deaf
    );
    eprintln!(
        "lora_e2e: hub: {uplinks} uplinks = {reports} reports + {heartbeats} heartbeats + \
         {alarm_frames} alarm frames + {replayed} replayed + {forged} forged + {unknown} unknown; \
         {acks} ACKs; {alarm_events} alarm events ({ended_events} ended) of {events} events"
    );
    eprintln!(
        "lora_e2e: {silent} silenced {silenced_ms} ms after its start; sensor.missing raised \
         {missing_after} after it was last heard (window {window:?} + grace), reached the \
         receiver at {missing_at:?}"
    );
}
