//! The access side end to end with real processes: `gatehouse hub` (with its embedded
//! mosquitto where MQTT is involved), `gate-sim` gates, and the CLI, on loopback.
//!
//! - [`hub_killed_under_load_loses_no_decision_a_gate_received`]: 10 gates at full speed
//!   over TCP, the hub SIGKILLed mid-load and restarted on the same data directory; every
//!   decision a gate received is in the access log, the database passes
//!   `PRAGMA integrity_check`, the offline decisions made meanwhile are uploaded once.
//! - [`no_raw_card_id_in_any_file_or_log`]: known cards (typed in hex, colon hex and
//!   decimal) and never-enrolled ones read over HTTP, TCP and MQTT and uploaded offline;
//!   no raw id, in any of its forms, in the database, its WAL, the hub's output (which
//!   carries mosquitto's log), the broker's files or the CLI's output.
//! - [`gate_with_another_gates_secret_is_refused_on_every_transport`]: a controller
//!   configured with gate 2's id but gate 1's secret gets no decision from the hub over
//!   HTTP, TCP or MQTT (whichever MQTT account it logs in with), nothing is logged for
//!   gate 2, and the refusal shows in the hub's log or the simulator's counters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support {
    pub mod site;
}

use gatehouse_gate_proto::Reason;
use gatehouse_store::{LogRow, LogSource};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::site::{
    hex, rows_by_gate, strip_ansi, unhex, wait_for, GateCreds, GateSim, Mqtt, Site, Summary,
};

// ---- crash under load ------------------------------------------------------------------

/// How long each gate reads cards.
const LOAD_S: u64 = 4;

#[test]
fn hub_killed_under_load_loses_no_decision_a_gate_received() {
    const GATES: usize = 10;
    let site = Site::new(Mqtt::Off);
    let gates = site.enrol("load", GATES, &["0x04a1b2c3d4e5f6", "0x0badcafe"]);
    let cards = ["04a1b2c3d4e5f6", "0badcafe", "04ffffffffff01"];
    let hub = site.start_hub();

    // One gate-sim per gate: gate-sim reports totals only, so a process per gate gives
    // the count of hub decisions each gate received. Each reads as fast as the hub
    // answers (one request at a time, as a controller does) for LOAD_S seconds, then
    // drains: waits for its offline log to be uploaded and acknowledged.
    let load = LOAD_S.to_string();
    let sims: Vec<(&GateCreds, GateSim)> = gates
        .iter()
        .map(|g| {
            let file = site.gates_file(&format!("gate-{}.toml", g.id), &[g.record()]);
            let cmd = site.sim(
                "tcp",
                &site.tcp,
                &file,
                &format!("state-{}.json", g.id),
                &cards,
                &[
                    "--duration",
                    &load,
                    "--rate",
                    "2000",
                    "--request-timeout-ms",
                    "300",
                    "--offline-ack-timeout-ms",
                    "500",
                    "--drain",
                    "20",
                ],
            );
            (g, site.spawn_sim(cmd))
        })
        .collect();
    let spawned = Instant::now();

    // Mid-load: a second into the load, once every gate has had decisions, the hub dies
    // without any shutdown.
    wait_for(
        "every gate to get 30 decisions",
        Duration::from_secs(20),
        || {
            let rows = site.log_rows();
            let by_gate = rows_by_gate(&rows, LogSource::Online);
            (by_gate.len() == GATES && by_gate.values().all(|r| r.len() >= 30)).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1).saturating_sub(spawned.elapsed()));
    hub.kill();
    let killed_after = spawned.elapsed();

    // The database as the crash left it (WAL included), before anything reopens it.
    assert_eq!(site.integrity_check(), "ok", "after SIGKILL");
    let at_crash = site.log_rows();
    let online_at_crash = rows_by_gate(&at_crash, LogSource::Online);
    assert!(
        at_crash.iter().all(|r| r.source == LogSource::Online),
        "no offline uploads yet"
    );

    // Restart once every gate's load is over: each had decisions before the kill, so its
    // load started before it and ends at most LOAD_S (and a request timeout) after it.
    // Every hub decision a gate counts was then made before the crash. The gates are
    // draining, and upload their offline logs to the new hub.
    let restart_at = killed_after + Duration::from_secs(LOAD_S) + Duration::from_secs(1);
    std::thread::sleep(restart_at.saturating_sub(spawned.elapsed()));
    let hub = site.start_hub();
    let summaries: Vec<(&GateCreds, Summary)> = sims
        .into_iter()
        .map(|(g, sim)| (g, sim.finish(Duration::from_secs(40))))
        .collect();
    let total_received: u64 = summaries.iter().map(|(_, s)| s.hub_decisions()).sum();
    println!(
        "killed after {killed_after:?}; {} rows at the crash, {total_received} hub decisions received",
        at_crash.len()
    );

    let after = site.log_rows();
    let online_after = rows_by_gate(&after, LogSource::Online);
    let offline_after = rows_by_gate(&after, LogSource::Offline);
    let mut uploaded = 0;
    for (g, s) in &summaries {
        let id = i64::from(g.id);
        let received = s.hub_decisions();
        // The kill was mid-load for this gate: it had hub decisions, then offline ones.
        assert!(received > 0 && s.n("offline") > 0, "gate {id}: {s:?}");
        assert_eq!(s.n("answered"), s.n("requests"), "gate {id}: {s:?}");
        let rows: &[&LogRow] = online_at_crash.get(&id).map_or(&[], Vec::as_slice);
        // Every decision the gate received is in the log. At most one more row: the
        // decision committed when the hub died, before it was written to the gate (a
        // gate has one request in flight).
        let n = rows.len() as u64;
        assert!(
            n >= received && n <= received + 1,
            "gate {id}: received {received} hub decisions, the log holds {n}: {s:?}"
        );
        let granted = rows
            .iter()
            .filter(|r| r.reason().is_some_and(Reason::is_allowed))
            .count() as u64;
        let denied = n - granted;
        assert!(
            (s.n("granted")..=s.n("granted") + 1).contains(&granted),
            "gate {id}: {granted} grants logged: {s:?}"
        );
        assert!(
            (s.n("denied")..=s.n("denied") + 1).contains(&denied),
            "gate {id}: {denied} denies logged: {s:?}"
        );
        // No hole: during its load the gate sends nothing but access requests (its
        // heartbeat and allow-list request went at link-up, the next are minutes away),
        // one after another, so the logged ones carry consecutive sequence numbers.
        let seqs: Vec<u64> = rows.iter().map(|r| r.gate_seq.unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "gate {id}: sequence numbers with a hole: {seqs:?}"
        );
        // The restarted hub recovered exactly these rows and made no decision of its own
        // for this gate (its load was over).
        let ids = |rows: &[&LogRow]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
        let recovered: &[&LogRow] = online_after.get(&id).map_or(&[], Vec::as_slice);
        assert_eq!(
            ids(recovered),
            ids(rows),
            "gate {id}: online rows after restart"
        );
        // Its offline decisions were all uploaded, acknowledged and stored once: those
        // its offline log still held (a full log pushes the oldest entries out).
        assert_eq!(s.n("offline_logged"), s.n("offline"), "gate {id}: {s:?}");
        assert_eq!(s.n("offline_pending"), 0, "gate {id}: {s:?}");
        let kept = s.n("offline") - s.n("offline_dropped");
        let offline = offline_after.get(&id).map_or(0, Vec::len) as u64;
        assert_eq!(offline, kept, "gate {id}: offline rows: {s:?}");
        uploaded += kept;
    }
    assert_eq!(
        after.len() as u64,
        at_crash.len() as u64 + uploaded,
        "nothing else was logged"
    );
    hub.stop();
    assert_eq!(site.integrity_check(), "ok", "after restart and clean stop");
}

// ---- no raw card id ---------------------------------------------------------------------

/// A card id as the reader sends it, and as typed on the CLI where it was.
struct RawId {
    bytes: Vec<u8>,
    typed: Option<&'static str>,
    enrolled: bool,
}

/// The bytes `gatehouse card add` makes of a typed id (its `--help`): `0x` hex, colon hex,
/// or a decimal number taken big-endian in at least 4 bytes.
fn typed_bytes(typed: &str) -> Vec<u8> {
    if let Some(h) = typed.strip_prefix("0x") {
        unhex(&h.to_lowercase())
    } else if typed.contains(':') {
        unhex(&typed.replace(':', "").to_lowercase())
    } else {
        let be = typed.parse::<u64>().unwrap().to_be_bytes();
        let first = be.iter().position(|b| *b != 0).unwrap_or(be.len());
        be[first.min(be.len() - 4)..].to_vec()
    }
}

fn raw_ids() -> Vec<RawId> {
    let typed = |t: &'static str, enrolled| RawId {
        bytes: typed_bytes(t),
        typed: Some(t),
        enrolled,
    };
    let read = |h: &str| RawId {
        bytes: unhex(h),
        typed: None,
        enrolled: false,
    };
    vec![
        typed("0x04A1B2C3D4E5F6", true),
        typed("8A:7B:6C:5D:4E", true),
        typed("2882400018", true),
        typed("81985529216486895", true),
        read("04c0ffee123456"),
        read("5eca1f0a1b"),
        // Never enrolled, but looked up with the CLI in decimal.
        typed("3141592653", false),
    ]
}

/// Every form a raw id could be written in: its bytes, hex in both cases, with and
/// without colons, decimal (big-endian, for ids of up to 8 bytes), and as typed.
fn forms(id: &RawId) -> Vec<(String, Vec<u8>)> {
    let lower = hex(&id.bytes);
    let upper = lower.to_uppercase();
    let colon = |h: &str| {
        h.as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":")
    };
    let mut f = vec![
        (format!("bytes {lower}"), id.bytes.clone()),
        (lower.clone(), lower.clone().into_bytes()),
        (upper.clone(), upper.clone().into_bytes()),
        (colon(&lower), colon(&lower).into_bytes()),
        (colon(&upper), colon(&upper).into_bytes()),
    ];
    if id.bytes.len() <= 8 {
        let mut be = [0u8; 8];
        be[8 - id.bytes.len()..].copy_from_slice(&id.bytes);
        let dec = u64::from_be_bytes(be).to_string();
        f.push((format!("decimal {dec}"), dec.into_bytes()));
    }
    if let Some(t) = id.typed {
        f.push((format!("typed {t}"), t.as_bytes().to_vec()));
    }
    f
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// Looks for every form of every raw id in the data directory (database, WAL, shared
/// memory, keys, the broker's files), the hub's output (with mosquitto's log) and `cli`;
/// panics listing what was found where.
fn assert_no_raw_id(site: &Site, ids: &[RawId], cli: &str, when: &str) {
    let mut places: Vec<(String, Vec<u8>)> = files_under(&site.data)
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    places.push(("the hub's output".into(), site.hub_logs().into_bytes()));
    places.push(("the CLI's output".into(), cli.as_bytes().to_vec()));
    let names: Vec<&str> = places.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in ["gatehouse.db", "passwd", "acl", "mosquitto.conf"] {
        assert!(
            names.iter().any(|n| n.ends_with(wanted)),
            "{when}: {wanted} not scanned: {names:?}"
        );
    }
    let mut found = Vec::new();
    for (place, bytes) in &places {
        for id in ids {
            for (form, needle) in forms(id) {
                if contains(bytes, &needle) {
                    found.push(format!("{form} in {place}"));
                }
            }
        }
    }
    assert!(found.is_empty(), "{when}: raw card ids found: {found:#?}");
}

#[test]
fn no_raw_card_id_in_any_file_or_log() {
    let site = Site::new(Mqtt::Embedded(0));
    let ids = raw_ids();
    let gates = site.enrol("door", 3, &[]);
    let mut cli = String::new();
    for id in ids.iter().filter(|i| i.enrolled) {
        let (ok, out, err) = site.run(&["card", "add", id.typed.unwrap(), "--person", "Sim"]);
        assert!(ok, "{out}{err}");
        cli += &(out + &err);
    }
    let records: Vec<String> = gates.iter().map(GateCreds::record).collect();
    let gates_file = site.gates_file("gates.toml", &records);
    let cards: Vec<String> = ids.iter().map(|i| hex(&i.bytes)).collect();
    let cards: Vec<&str> = cards.iter().map(String::as_str).collect();
    let enrolled = ids.iter().filter(|i| i.enrolled).count() as u64;
    let hub = site.start_hub();

    // Two rounds of every card on every gate, over each transport: the hub recognises
    // each enrolled card (also those typed in decimal) and no other.
    let reads = 2 * ids.len() as u64;
    for transport in ["http", "tcp", "mqtt"] {
        let s = site.run_sim(site.sim(
            transport,
            &site.addr(transport, &hub),
            &gates_file,
            "state.json",
            &cards,
            &["--requests", &reads.to_string(), "--rate", "50"],
        ));
        let n_gates = gates.len() as u64;
        assert_eq!(s.n("granted"), n_gates * 2 * enrolled, "{s:?}");
        assert_eq!(
            s.n("denied.unknown_card"),
            n_gates * 2 * (ids.len() as u64 - enrolled),
            "{s:?}"
        );
        assert_eq!(s.n("offline"), 0, "{s:?}");
    }
    let logged = 3 * 3 * reads;
    assert_eq!(site.wait_log_count(logged), logged);

    // The admin's view: cards, log, and cards found by their raw id (one that exists,
    // typed in decimal, and one that was read but never enrolled).
    for args in [
        &["card", "list"][..],
        &["log", "tail", "-n", "1000"],
        &["card", "disable", "--acc-id", "2882400018"],
        &["card", "enable", "--acc-id", "2882400018"],
    ] {
        let (ok, out, err) = site.run(args);
        assert!(ok, "{args:?}: {out}{err}");
        cli += &(out + &err);
    }
    let (ok, out, err) = site.run(&["card", "disable", "--acc-id", "3141592653"]);
    assert!(!ok && err.contains("no card is enrolled"), "{out}{err}");
    cli += &(out + &err);
    assert_no_raw_id(&site, &ids, &cli, "hub running");

    // Offline: the gates decide alone, then upload their logs, which carry raw ids, to
    // the restarted hub; it must keep only hashes of them.
    hub.kill();
    assert_no_raw_id(&site, &ids, &cli, "hub killed");
    let sim = site.spawn_sim(site.sim(
        "tcp",
        &site.tcp,
        &gates_file,
        "state.json",
        &cards,
        &["--duration", "2", "--rate", "5", "--drain", "8"],
    ));
    // Reads run from ~2 s (connect wait) to ~4 s; the hub is back during the drain.
    std::thread::sleep(Duration::from_millis(4500));
    let hub = site.start_hub();
    let s = sim.finish(Duration::from_secs(30));
    assert!(s.n("offline") >= 3 * ids.len() as u64, "{s:?}");
    assert_eq!(s.n("offline_pending"), 0, "{s:?}");
    let logged = logged + s.n("offline") + s.hub_decisions();
    assert_eq!(site.wait_log_count(logged), logged, "{s:?}");
    let (ok, out, err) = site.run(&["log", "tail", "-n", "1000"]);
    assert!(ok);
    cli += &(out + &err);
    assert_no_raw_id(&site, &ids, &cli, "after offline uploads");
    hub.stop();
    assert_no_raw_id(&site, &ids, &cli, "after a clean stop");
}

// ---- another gate's credentials -------------------------------------------------------

/// Who turns an impostor away.
#[derive(Debug, Clone, Copy)]
enum RefusedBy {
    /// The hub: its frames or requests fail authentication (counted, logged as a warning).
    Hub,
    /// The MQTT broker: the login is refused.
    Broker,
}

/// The new part of a hub's log since `from` bytes.
fn log_since(text: &str, from: usize) -> &str {
    text.get(from..).unwrap_or("")
}

/// Whether the hub logged a refusal of kind `kind` on `transport`.
fn refusal_logged(log: &str, transport: &str, kind: &str) -> bool {
    log.lines().any(|l| {
        l.contains("refused gate input")
            && (l.contains(&format!("transport={transport} "))
                || l.contains(&format!("transport=\"{transport}\"")))
            && l.contains(&format!("kind={kind}"))
    })
}

#[test]
fn gate_with_another_gates_secret_is_refused_on_every_transport() {
    let site = Site::new(Mqtt::Embedded(0));
    let gates = site.enrol("door", 2, &["0x04a1b2c3d4e5f6"]);
    let (g1, g2) = (&gates[0], &gates[1]);
    let cards = ["04a1b2c3d4e5f6", "04ffffffffff01"];
    let hub = site.start_hub();

    // Gate 2's controller set up with gate 1's secret, next to the real gate 1. Over MQTT
    // it may log in with gate 2's account as printed (the hub refuses its frames), with
    // gate 2's user and the password its firmware derives from the secret it holds, gate
    // 1's (the broker refuses the login), or with gate 1's whole account (mosquitto 2.0
    // acknowledges a v3.1.1 subscription its ACL denies, so the link comes up; the hub
    // refuses the frames, and an answer on gate 2's topic could not be read anyway).
    let (u1, p1) = (g1.mqtt_user.as_str(), g1.mqtt_password.as_str());
    let (u2, p2) = (g2.mqtt_user.as_str(), g2.mqtt_password.as_str());
    let cases = [
        ("http", "gate 1's secret", u2, p2, RefusedBy::Hub),
        ("tcp", "gate 1's secret", u2, p2, RefusedBy::Hub),
        ("mqtt", "gate 2's MQTT account", u2, p2, RefusedBy::Hub),
        (
            "mqtt",
            "gate 2's MQTT user, password from gate 1's secret",
            u2,
            p1,
            RefusedBy::Broker,
        ),
        ("mqtt", "gate 1's MQTT account", u1, p1, RefusedBy::Hub),
    ];
    const READS: u64 = 8;
    let mut gate1_rows = 0;
    for (i, (transport, case, user, password, refused_by)) in cases.into_iter().enumerate() {
        let what = format!("{transport}, {case}");
        let file = site.gates_file(
            &format!("gates-{i}.toml"),
            &[g1.record(), g1.record_as(g2.id, user, password)],
        );
        let log_before = hub.log_text().len();
        let s = site.run_sim(site.sim(
            transport,
            &site.addr(transport, &hub),
            &file,
            "state.json",
            &cards,
            &[
                "--requests",
                &READS.to_string(),
                "--rate",
                "3",
                "--request-timeout-ms",
                "300",
                "--drain",
                "1",
            ],
        ));
        // Gate 1 is served; every read of the impostor ends as an offline decision, and
        // none of its offline entries is accepted either.
        assert_eq!(s.n("answered"), 2 * READS, "{what}: {s:?}");
        assert_eq!(s.hub_decisions(), READS, "{what}: only gate 1's: {s:?}");
        assert_eq!(s.n("offline"), READS, "{what}: the impostor's: {s:?}");
        assert_eq!(
            s.n("offline_pending"),
            s.n("offline_logged"),
            "{what}: {s:?}"
        );
        gate1_rows += READS;
        assert_eq!(site.wait_log_count(gate1_rows), gate1_rows, "{what}");
        let rows = site.log_rows();
        let others: Vec<&LogRow> = rows.iter().filter(|r| r.gate != i64::from(g1.id)).collect();
        assert!(
            others.is_empty(),
            "{what}: rows for another gate: {others:?}"
        );
        // The refusal is visible: in the hub's log, or in the broker's and the gate's.
        let text = hub.log_text();
        let log = log_since(&text, log_before);
        match refused_by {
            RefusedBy::Hub => {
                assert!(refusal_logged(log, transport, "BadAuth"), "{what}:\n{log}");
                assert_eq!(s.n("mqtt_refused"), 0, "{what}: {s:?}");
            }
            RefusedBy::Broker => {
                assert!(s.n("mqtt_refused") > 0, "{what}: {s:?}");
                assert!(
                    mosquitto_lines(log).contains("not authorised"),
                    "{what}:\n{log}"
                );
            }
        }
        if transport == "http" {
            assert!(s.n("http.401") >= READS, "{what}: {s:?}");
        }
    }
    hub.stop();
}

/// mosquitto's lines in a hub log (forwarded with target `mosquitto`).
fn mosquitto_lines(log: &str) -> String {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("mosquitto:"))
        .collect::<Vec<_>>()
        .join("\n")
}
