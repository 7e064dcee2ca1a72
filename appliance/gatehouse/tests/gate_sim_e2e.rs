//! The gate simulator (gate-fw/sim, the firmware's own core) against the real hub: gates,
//! people, levels and cards made with the CLI, `gatehouse hub` running on free loopback
//! ports with its embedded mosquitto (the real broker, on the port it picked, which the
//! test reads from the hub's log as an installer would), and `gate-sim` with 10 gates x 50
//! reads over HTTP, raw TCP and MQTT. Over MQTT each gate logs in with the user and
//! password `gatehouse gate add` printed for it. Every read is answered, grants and denies
//! match the enrolled/unknown split, and the access log holds exactly those decisions.
//!
//! Then the hub is SIGKILLed (its mosquitto must end with it): the gates decide from their
//! allow-lists synced while the hub was up (enrolled cards granted, unknown ones denied);
//! the hub comes back and the gates upload their offline logs, each entry stored exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support {
    pub mod site;
}

use std::time::Duration;
use support::site::{log_value, GateCreds, Mqtt, Site};

const GATES: usize = 10;
const READS: u64 = 50;
/// Enrolled for the person with the level on every gate.
const ENROLLED: [&str; 3] = ["04a1b2c3d4e5f6", "04a1b2c3d4e5f7", "0badcafe"];
/// Never enrolled.
const UNKNOWN: [&str; 2] = ["04ffffffffff01", "deadbeef"];

/// The newest rows of `log tail -n` as an admin reads them (header excluded).
fn log_tail(site: &Site, n: u64) -> Vec<String> {
    site.ok(&["log", "tail", "-n", &n.to_string()])
        .lines()
        .filter(|l| l.ends_with("online") || l.ends_with("offline"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn gate_sim_over_http_tcp_and_mqtt_then_offline() {
    let site = Site::new(Mqtt::Embedded(0));
    let typed: Vec<String> = ENROLLED.iter().map(|c| format!("0x{c}")).collect();
    let typed: Vec<&str> = typed.iter().map(String::as_str).collect();
    let gates = site.enrol("sim", GATES, &typed);
    let records: Vec<String> = gates.iter().map(GateCreds::record).collect();
    let gates_file = site.gates_file("gates.toml", &records);
    let cards: Vec<&str> = ENROLLED.iter().chain(&UNKNOWN).copied().collect();
    let hub = site.start_hub();
    let text = hub.log_text();
    let ready = text
        .lines()
        .find(|l| l.contains("MQTT broker ready"))
        .unwrap();
    assert_eq!(
        log_value(ready, "gates"),
        GATES.to_string(),
        "every gate has a broker account: {ready}"
    );

    // Each gate cycles through the 5 cards: 50 reads = 30 enrolled + 20 unknown.
    let total = GATES as u64 * READS;
    let granted = total * ENROLLED.len() as u64 / 5;
    let mut logged = 0;
    for transport in ["http", "tcp", "mqtt"] {
        let s = site.run_sim(site.sim(
            transport,
            &site.addr(transport, &hub),
            &gates_file,
            "sim-state.json",
            &cards,
            &["--requests", &READS.to_string(), "--rate", "200"],
        ));
        assert_eq!(s.text("transport"), transport);
        assert_eq!(s.n("gates"), GATES as u64);
        assert_eq!(s.n("requests"), total, "{s:?}");
        assert_eq!(s.n("answered"), total, "every read answered: {s:?}");
        assert_eq!(s.n("granted"), granted, "{s:?}");
        assert_eq!(s.n("denied"), total - granted, "{s:?}");
        assert_eq!(s.n("denied.unknown_card"), total - granted, "{s:?}");
        assert_eq!(s.n("offline"), 0, "{s:?}");
        assert_eq!(s.n("timeouts"), 0, "{s:?}");
        assert_eq!(s.n("rx_dropped"), 0, "{s:?}");
        assert_eq!(s.n("io_errors"), 0, "{s:?}");
        assert_eq!(s.n("mqtt_refused"), 0, "broker accepted every gate: {s:?}");
        assert_eq!(s.n("http.409"), 0, "no replays across runs: {s:?}");
        logged += total;
        assert_eq!(site.wait_log_count(logged), logged, "log after {transport}");
        // This run's rows, as an admin reads them.
        let rows = log_tail(&site, total);
        assert_eq!(rows.len() as u64, total, "log tail after {transport}");
        let granted_rows = rows.iter().filter(|r| r.contains(" granted ")).count() as u64;
        assert_eq!(granted_rows, granted, "log tail after {transport}");
        assert!(rows.iter().all(|r| r.ends_with("online")), "{rows:?}");
    }

    // Offline: SIGKILL the hub (kill() also waits for its mosquitto to end: the broker
    // must not outlive the hub). The gates start with the link down and decide from their
    // allow-lists.
    let broker = hub.broker_pid().unwrap();
    hub.kill();
    assert!(!support::site::alive_with(broker, &site.data));
    let sim = site.spawn_sim(site.sim(
        "tcp",
        &site.tcp,
        &gates_file,
        "sim-state.json",
        &cards,
        &["--duration", "3", "--rate", "10", "--drain", "3"],
    ));
    // Reads run from ~2 s (connect wait) to ~5 s; the hub is back during the drain.
    std::thread::sleep(Duration::from_millis(5500));
    let _hub = site.start_hub();
    let s = sim.finish(Duration::from_secs(30));
    let offline = s.n("offline");
    assert!(offline > 0, "{s:?}");
    assert_eq!(s.n("answered"), s.n("requests"), "{s:?}");
    assert_eq!(offline, s.n("requests"), "all reads were offline: {s:?}");
    assert_eq!(
        s.n("offline_granted") + s.n("offline_denied"),
        offline,
        "{s:?}"
    );
    // The allow-lists synced while the hub was up: enrolled cards pass offline, unknown
    // ones do not (each gate cycles through 3 enrolled and 2 unknown cards).
    assert!(
        s.n("offline_granted") > 0,
        "enrolled cards granted offline: {s:?}"
    );
    assert!(
        s.n("offline_denied") > 0,
        "unknown cards denied offline: {s:?}"
    );
    assert!(
        s.n("offline_granted") >= s.n("offline_denied"),
        "3 of every 5 reads are enrolled cards: {s:?}"
    );
    assert_eq!(s.n("offline_logged"), offline, "{s:?}");
    assert!(s.n("io_errors") > 0, "refused connections counted: {s:?}");
    // The hub is back: every offline entry was uploaded, acknowledged, and stored once.
    assert_eq!(
        s.n("offline_pending"),
        0,
        "all uploaded and acknowledged: {s:?}"
    );
    assert_eq!(site.log_count(), logged + offline, "{s:?}");
    let rows = log_tail(&site, logged + offline);
    let offline_rows: Vec<&String> = rows.iter().filter(|r| r.ends_with("offline")).collect();
    assert_eq!(
        offline_rows.len() as u64,
        offline,
        "each offline decision logged exactly once"
    );
    let granted_offline = offline_rows
        .iter()
        .filter(|r| r.contains(" granted "))
        .count();
    assert_eq!(
        granted_offline as u64,
        s.n("offline_granted"),
        "{offline_rows:?}"
    );
}
