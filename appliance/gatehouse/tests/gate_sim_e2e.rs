//! The gate simulator (gate-fw/sim, the firmware's own core) against the real hub: gates,
//! people, levels and cards made with the CLI, `gatehouse hub` running on free loopback
//! ports, and `gate-sim` with 10 gates x 50 reads over HTTP and over raw TCP; every read
//! is answered, grants and denies match the enrolled/unknown split, and the access log
//! holds exactly those decisions. Then the hub is SIGKILLed: the gates decide from their
//! (empty) allow-lists, so every decision is an offline deny; the hub comes back and the
//! gates upload their offline logs, each entry stored exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const GATEHOUSE: &str = env!("CARGO_BIN_EXE_gatehouse");
const GATES: usize = 10;
const READS: u64 = 50;
/// Enrolled for the person with the level on every gate.
const ENROLLED: [&str; 3] = ["04a1b2c3d4e5f6", "04a1b2c3d4e5f7", "0badcafe"];
/// Never enrolled.
const UNKNOWN: [&str; 2] = ["04ffffffffff01", "deadbeef"];

/// Builds gate-sim once (its own workspace, gate-fw/) and returns its path.
fn gate_sim() -> &'static Path {
    static SIM: OnceLock<PathBuf> = OnceLock::new();
    SIM.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = repo.join("gate-fw/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "gate-sim", "--manifest-path"])
            .arg(&manifest)
            .status()
            .unwrap();
        assert!(st.success(), "building gate-sim failed");
        let bin = repo.join("gate-fw/target/debug/gate-sim");
        assert!(bin.exists(), "{}", bin.display());
        bin
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running hub, SIGKILLed (by PID, through `Child::kill`) on drop.
struct Hub(Child);

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    http: String,
    tcp: String,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gatehouse.toml");
        let http = format!("127.0.0.1:{}", free_port());
        let tcp = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            &config,
            format!(
                "[general]\ndata_dir = \"{}\"\n[hub]\nhttp_listen = \"{http}\"\ngate_tcp_listen = \"{tcp}\"\n\
                 [hub.mqtt]\nlisten = \"127.0.0.1:0\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        Site {
            dir,
            config,
            http,
            tcp,
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = Command::new(GATEHOUSE)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn start_hub(&self) -> Hub {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("hub.log"))
            .unwrap();
        let child = Command::new(GATEHOUSE)
            .arg("--config")
            .arg(&self.config)
            .arg("hub")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let hub = Hub(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(TcpStream::connect(&self.http).is_ok() && TcpStream::connect(&self.tcp).is_ok()) {
            assert!(
                Instant::now() < deadline,
                "hub did not listen: {}",
                self.hub_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        hub
    }

    fn hub_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }

    /// Rows in the access log, counted by the store.
    fn log_count(&self) -> u64 {
        gatehouse_store::Store::open(&self.dir.path().join("data"))
            .unwrap()
            .log_count()
            .unwrap()
    }

    /// The newest rows of `log tail -n` (header excluded; it shows at most 500).
    fn log_rows(&self, n: u64) -> Vec<String> {
        self.ok(&["log", "tail", "-n", &n.to_string()])
            .lines()
            .filter(|l| l.ends_with("online") || l.ends_with("offline"))
            .map(str::to_owned)
            .collect()
    }

    fn sim(&self, transport: &str, extra: &[&str]) -> Command {
        let hub = if transport == "http" {
            &self.http
        } else {
            &self.tcp
        };
        let mut c = Command::new(gate_sim());
        c.args(["--transport", transport, "--hub", hub, "--gates"])
            .arg(self.dir.path().join("gates.toml"))
            .arg("--state")
            .arg(self.dir.path().join("sim-state.json"))
            .args(["--pick", "cycle"]);
        for card in ENROLLED.iter().chain(&UNKNOWN) {
            c.args(["--card", card]);
        }
        c.args(extra);
        c
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `key=value` fields of the simulator's summary line.
fn summary(o: &Output) -> HashMap<String, String> {
    assert!(o.status.success(), "gate-sim failed: {}", text(o));
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("summary "))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    println!("{line}");
    line.split_whitespace()
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn num(s: &HashMap<String, String>, key: &str) -> u64 {
    s.get(key).map_or(0, |v| v.parse().unwrap())
}

/// The value printed after `label` by `gate add`.
fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
}

/// 10 gates, a person with a level on all of them, the enrolled cards; writes gates.toml.
fn enrol(site: &Site) {
    let mut gates = String::new();
    let mut names = Vec::new();
    for i in 0..GATES {
        let name = format!("sim-{i}");
        let out = site.ok(&["gate", "add", &name]);
        gates += &format!(
            "[[gate]]\nid = {}\nsecret = \"{}\"\nname = \"{name}\"\n\n",
            field(&out, "gate id:"),
            field(&out, "secret:")
        );
        names.push(name);
    }
    std::fs::write(site.dir.path().join("gates.toml"), gates).unwrap();
    site.ok(&["person", "add", "Sim"]);
    site.ok(&[
        "level",
        "add",
        "all",
        "--gates",
        &names.join(","),
        "--schedule",
        "always",
    ]);
    site.ok(&["level", "grant", "all", "--person", "Sim"]);
    for card in ENROLLED {
        site.ok(&["card", "add", &format!("0x{card}"), "--person", "Sim"]);
    }
}

#[test]
fn gate_sim_over_http_and_tcp_then_offline() {
    let site = Site::new();
    enrol(&site);
    let hub = site.start_hub();

    // Each gate cycles through the 5 cards: 50 reads = 30 enrolled + 20 unknown.
    let total = GATES as u64 * READS;
    let granted = total * ENROLLED.len() as u64 / 5;
    let mut logged = 0;
    for transport in ["http", "tcp"] {
        let o = site
            .sim(
                transport,
                &["--requests", &READS.to_string(), "--rate", "200"],
            )
            .output()
            .unwrap();
        let s = summary(&o);
        assert_eq!(s["transport"], transport);
        assert_eq!(num(&s, "gates"), GATES as u64);
        assert_eq!(num(&s, "requests"), total, "{s:?}");
        assert_eq!(num(&s, "answered"), total, "every read answered: {s:?}");
        assert_eq!(num(&s, "granted"), granted, "{s:?}");
        assert_eq!(num(&s, "denied"), total - granted, "{s:?}");
        assert_eq!(num(&s, "denied.unknown_card"), total - granted, "{s:?}");
        assert_eq!(num(&s, "offline"), 0, "{s:?}");
        assert_eq!(num(&s, "timeouts"), 0, "{s:?}");
        assert_eq!(num(&s, "rx_dropped"), 0, "{s:?}");
        assert_eq!(num(&s, "http.409"), 0, "no replays across runs: {s:?}");
        logged += total;
        let deadline = Instant::now() + Duration::from_secs(5);
        while site.log_count() < logged && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(site.log_count(), logged, "log after {transport}");
        // This run's rows, as an admin reads them.
        let rows = site.log_rows(total);
        assert_eq!(rows.len() as u64, total, "log tail after {transport}");
        let granted_rows = rows.iter().filter(|r| r.contains(" granted ")).count() as u64;
        assert_eq!(granted_rows, granted, "log tail after {transport}");
        assert!(rows.iter().all(|r| r.ends_with("online")), "{rows:?}");
    }

    // Offline: SIGKILL the hub; the gates start with the link down and decide from their
    // allow-lists, which are empty (the hub has no allow-list sync yet), so all deny.
    drop(hub);
    let sim = site
        .sim("tcp", &["--duration", "3", "--rate", "10", "--drain", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reads run from ~2 s (connect wait) to ~5 s; the hub is back during the drain.
    std::thread::sleep(Duration::from_millis(5500));
    let _hub = site.start_hub();
    let o = sim.wait_with_output().unwrap();
    let s = summary(&o);
    let offline = num(&s, "offline");
    assert!(offline > 0, "{s:?}");
    assert_eq!(num(&s, "answered"), num(&s, "requests"), "{s:?}");
    assert_eq!(
        offline,
        num(&s, "requests"),
        "all reads were offline: {s:?}"
    );
    assert_eq!(
        num(&s, "offline_denied"),
        offline,
        "empty allow-list: {s:?}"
    );
    assert_eq!(num(&s, "offline_granted"), 0, "{s:?}");
    assert_eq!(num(&s, "offline_logged"), offline, "{s:?}");
    assert!(
        num(&s, "io_errors") > 0,
        "refused connections counted: {s:?}"
    );
    // The hub is back: every offline entry was uploaded, acknowledged, and stored once.
    assert_eq!(
        num(&s, "offline_pending"),
        0,
        "all uploaded and acknowledged: {s:?}"
    );
    assert_eq!(site.log_count(), logged + offline, "{s:?}");
    let offline_rows = site
        .log_rows(logged + offline)
        .iter()
        .filter(|r| r.ends_with("offline"))
        .count() as u64;
    assert_eq!(
        offline_rows, offline,
        "each offline decision logged exactly once"
    );
}
