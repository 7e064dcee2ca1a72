//! The access side's end-to-end harness: a site (config and data directory in a tempdir)
//! set up with the real `gatehouse` CLI the way an installer does it, `gatehouse hub` as a
//! child process (with its embedded mosquitto when asked), and the gate simulator
//! `gate-sim` (gate-fw/sim, built once per test binary) as child processes.
//!
//! Cleanup whatever the outcome: [`Hub`] and [`GateSim`] SIGKILL their process by PID and
//! reap it on drop; a hub's mosquitto (which the broker crate ties to the hub with
//! `PR_SET_PDEATHSIG`) is killed too if it outlived the hub; the tempdir goes with the
//! [`Site`], which tests declare first so that it is dropped last. Every wait is bounded
//! (well under nextest's 60 s slow-timeout), so a hung peer fails the test instead of
//! holding it.
//!
//! Used with `mod support { pub mod site; }` by the tests that need it (support/mod.rs is
//! the tunnel tests' network lab).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_store::events::{EventFilter, MAX_PAGE};
use gatehouse_store::log::MAX_QUERY_LIMIT;
use gatehouse_store::schema::db_path;
use gatehouse_store::{LogFilter, LogRow, LogSource, Store};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const GATEHOUSE: &str = env!("CARGO_BIN_EXE_gatehouse");
/// What the hub logs in these tests: its own info lines and mosquitto's log (forwarded by
/// the broker crate at debug level, target `mosquitto`).
pub const HUB_LOG_FILTER: &str = "info,mosquitto=debug";
/// Upper bound of every wait for a process to get ready or to finish.
pub const WAIT: Duration = Duration::from_secs(30);

/// Builds gate-sim once per test binary (its own workspace, gate-fw/) and returns its path.
pub fn gate_sim() -> &'static Path {
    static SIM: OnceLock<PathBuf> = OnceLock::new();
    SIM.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = repo.join("gate-fw/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "gate-sim", "--manifest-path"])
            .arg(&manifest)
            .status()
            .unwrap();
        assert!(st.success(), "building gate-sim failed");
        let bin = repo.join("gate-fw/target/debug/gate-sim");
        assert!(bin.exists(), "{}", bin.display());
        bin
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes ANSI colour sequences (tracing colours its fields even into a file).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "{s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// How the site's hub offers MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mqtt {
    Off,
    /// The hub's own mosquitto on this loopback port (0: mosquitto gets a free port, which
    /// the hub logs).
    Embedded(u16),
}

/// A gate as `gatehouse gate add` printed it.
#[derive(Debug, Clone)]
pub struct GateCreds {
    pub id: u32,
    pub name: String,
    pub secret: String,
    /// The site's card key and this gate's allow-list key, as printed.
    pub card_key: String,
    pub allow_list_key: String,
    pub mqtt_user: String,
    pub mqtt_password: String,
}

impl GateCreds {
    /// This gate's record in a gate-sim gates file, with the credentials as printed.
    pub fn record(&self) -> String {
        self.record_as(self.id, &self.mqtt_user, &self.mqtt_password)
    }

    /// A record with this gate's secret but another id and MQTT account (a controller
    /// configured with the wrong gate's credentials).
    pub fn record_as(&self, id: u32, mqtt_user: &str, mqtt_password: &str) -> String {
        format!(
            "[[gate]]\nid = {id}\nsecret = \"{}\"\ncard_key = \"{}\"\nallow_list_key = \"{}\"\n\
             name = \"{}\"\nmqtt_username = \"{mqtt_user}\"\nmqtt_password = \"{mqtt_password}\"\n\n",
            self.secret, self.card_key, self.allow_list_key, self.name
        )
    }
}

/// A site: config and data directory in a tempdir, listeners on free loopback ports.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
    /// hub.http_listen and hub.gate_tcp_listen, as HOST:PORT.
    pub http: String,
    pub tcp: String,
    pub mqtt: Mqtt,
    hubs: Cell<u32>,
    sims: Cell<u32>,
}

impl Site {
    pub fn new(mqtt: Mqtt) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("gatehouse.toml");
        let http = format!("127.0.0.1:{}", free_port());
        let tcp = format!("127.0.0.1:{}", free_port());
        let mqtt_section = match mqtt {
            Mqtt::Off => "[hub.mqtt]\nmode = \"off\"\n".to_owned(),
            Mqtt::Embedded(port) => {
                format!("[hub.mqtt]\nmode = \"embedded\"\nlisten = \"127.0.0.1:{port}\"\n")
            }
        };
        fs::write(
            &config,
            format!(
                "[general]\ndata_dir = \"{}\"\n[hub]\nhttp_listen = \"{http}\"\nhttps_listen = \"\"\n\
                 gate_tcp_listen = \"{tcp}\"\n{mqtt_section}",
                data.display()
            ),
        )
        .unwrap();
        Site {
            dir,
            config,
            data,
            http,
            tcp,
            mqtt,
            hubs: Cell::new(0),
            sims: Cell::new(0),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the CLI; returns (success, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let o = Command::new(GATEHOUSE)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "{args:?}: {out}{err}");
        out
    }

    /// `gatehouse gate add NAME`, its printed credentials.
    pub fn add_gate(&self, name: &str) -> GateCreds {
        let out = self.ok(&["gate", "add", name]);
        let mqtt = self.mqtt != Mqtt::Off;
        GateCreds {
            id: field(&out, "gate id:").parse().unwrap(),
            name: name.to_owned(),
            secret: field(&out, "secret:").to_owned(),
            // "<64 hex digits> (the site's, ...)"
            card_key: first_word(field(&out, "card_key:")).to_owned(),
            allow_list_key: first_word(field(&out, "allow_list_key:")).to_owned(),
            mqtt_user: if mqtt {
                field(&out, "MQTT user:").to_owned()
            } else {
                String::new()
            },
            // "<64 hex digits> (derived from the secret)"
            mqtt_password: if mqtt {
                first_word(field(&out, "MQTT password:")).to_owned()
            } else {
                String::new()
            },
        }
    }

    /// `n` gates named `<prefix>-<i>`, a person "Sim" with a level opening all of them at
    /// all times, and `cards` enrolled for them as typed (`0x...` hex or decimal).
    pub fn enrol(&self, prefix: &str, n: usize, cards: &[&str]) -> Vec<GateCreds> {
        let gates: Vec<GateCreds> = (0..n)
            .map(|i| self.add_gate(&format!("{prefix}-{i}")))
            .collect();
        let names: Vec<&str> = gates.iter().map(|g| g.name.as_str()).collect();
        self.ok(&["person", "add", "Sim"]);
        self.ok(&[
            "level",
            "add",
            "all",
            "--gates",
            &names.join(","),
            "--schedule",
            "always",
        ]);
        self.ok(&["level", "grant", "all", "--person", "Sim"]);
        for card in cards {
            self.ok(&["card", "add", card, "--person", "Sim"]);
        }
        gates
    }

    /// Writes a gates file from records; returns its path.
    pub fn gates_file(&self, name: &str, records: &[String]) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, records.concat()).unwrap();
        p
    }

    /// Starts `gatehouse hub` (output to its own `hub-<n>.log`) and waits until it serves:
    /// it logged "hub listening" (after the store, the listeners and, in embedded mode,
    /// mosquitto and the hub's subscription) and its HTTP and TCP ports accept.
    pub fn start_hub(&self) -> Hub {
        let n = self.hubs.get() + 1;
        self.hubs.set(n);
        let log = self.path(&format!("hub-{n}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(GATEHOUSE)
            .arg("--config")
            .arg(&self.config)
            .arg("hub")
            .env("GATEHOUSE_LOG", HUB_LOG_FILTER)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut hub = Hub {
            child,
            log,
            data: self.data.clone(),
            broker: None,
            mqtt: None,
            reaped: false,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = hub.child.try_wait().unwrap() {
                hub.reaped = true;
                panic!("the hub exited ({status}):\n{}", hub.log_text());
            }
            if hub.log_text().contains("hub listening")
                && TcpStream::connect(&self.http).is_ok()
                && TcpStream::connect(&self.tcp).is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the hub did not get ready:\n{}",
                hub.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.mqtt != Mqtt::Off {
            let text = hub.log_text();
            let ready = text
                .lines()
                .find(|l| l.contains("MQTT broker ready"))
                .unwrap_or_else(|| panic!("no \"MQTT broker ready\" line:\n{text}"));
            hub.broker = Some(log_value(ready, "pid").parse().unwrap());
            hub.mqtt = Some(log_value(ready, "gates_listen").to_owned());
        }
        hub
    }

    /// The address a gate-sim on `transport` dials.
    pub fn addr(&self, transport: &str, hub: &Hub) -> String {
        match transport {
            "http" => self.http.clone(),
            "tcp" => self.tcp.clone(),
            "mqtt" => hub.mqtt_addr().to_owned(),
            other => panic!("no transport {other}"),
        }
    }

    /// A gate-sim command: `transport` to `hub_addr`, the gates in `gates`, sequence
    /// numbers persisted in `state`, each gate cycling through `cards` (so that counts per
    /// card are exact), plus `extra` arguments.
    pub fn sim(
        &self,
        transport: &str,
        hub_addr: &str,
        gates: &Path,
        state: &str,
        cards: &[&str],
        extra: &[&str],
    ) -> Command {
        let mut c = Command::new(gate_sim());
        c.args(["--transport", transport, "--hub", hub_addr, "--gates"])
            .arg(gates)
            .arg("--state")
            .arg(self.path(state))
            .args(["--pick", "cycle"]);
        for card in cards {
            c.args(["--card", card]);
        }
        c.args(extra);
        c
    }

    /// Starts a gate-sim command, output to files in the site.
    pub fn spawn_sim(&self, mut cmd: Command) -> GateSim {
        let n = self.sims.get() + 1;
        self.sims.set(n);
        let out = self.path(&format!("sim-{n}.out"));
        let err = self.path(&format!("sim-{n}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        GateSim {
            child,
            out,
            err,
            reaped: false,
        }
    }

    /// Runs a gate-sim command to its end; its summary.
    pub fn run_sim(&self, cmd: Command) -> Summary {
        self.spawn_sim(cmd).finish(WAIT)
    }

    /// Every row of the access log, oldest first, read through the store.
    pub fn log_rows(&self) -> Vec<LogRow> {
        let store = Store::open(&self.data).unwrap();
        let mut rows: Vec<LogRow> = Vec::new();
        loop {
            let page = store
                .log_query(&LogFilter {
                    after_id: rows.last().map(|r| r.id),
                    limit: MAX_QUERY_LIMIT,
                    ..LogFilter::default()
                })
                .unwrap();
            if page.is_empty() {
                return rows;
            }
            rows.extend(page);
        }
    }

    pub fn log_count(&self) -> u64 {
        Store::open(&self.data).unwrap().log_count().unwrap()
    }

    /// Waits until the access log holds at least `n` rows (a gate may have its answer a
    /// moment before a reader sees the commit); returns the count.
    pub fn wait_log_count(&self, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = self.log_count();
            if c >= n || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `PRAGMA integrity_check` on the database as it is on disk (with its WAL), through
    /// a plain SQLite connection: no migration or store code runs first.
    pub fn integrity_check(&self) -> String {
        let conn = rusqlite::Connection::open_with_flags(
            db_path(&self.data),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap();
        let rows: Vec<String> = conn
            .prepare("PRAGMA integrity_check")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.join("\n")
    }

    /// Every hub log of this site, concatenated.
    pub fn hub_logs(&self) -> String {
        (1..=self.hubs.get())
            .map(|n| fs::read_to_string(self.path(&format!("hub-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The value printed after `label` by the CLI (`gate add`).
pub fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
}

fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or("")
}

/// The value of `key=value` in a (colour-stripped) log line.
pub fn log_value<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(pat.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// A running `gatehouse hub`; SIGKILLed by PID and reaped on drop, and its mosquitto with
/// it if that outlived it.
pub struct Hub {
    child: Child,
    log: PathBuf,
    data: PathBuf,
    broker: Option<u32>,
    mqtt: Option<String>,
    reaped: bool,
}

impl Hub {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its output so far, without colours.
    pub fn log_text(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Where gates reach the embedded broker, as the hub logged it ("MQTT broker ready
    /// ... gates_listen=HOST:PORT").
    pub fn mqtt_addr(&self) -> &str {
        self.mqtt.as_deref().expect("the hub runs no MQTT broker")
    }

    /// The embedded mosquitto's PID, as the hub logged it.
    pub fn broker_pid(&self) -> Option<u32> {
        self.broker
    }

    /// SIGKILL (a crash or power cut for the process: no shutdown code runs).
    pub fn kill(mut self) {
        self.sigkill();
        self.wait_broker_gone();
    }

    /// SIGTERM and a clean exit (answers owed sent, access log flushed, broker stopped).
    pub fn stop(mut self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = wait_for("the hub to stop on SIGTERM", WAIT, || {
            self.child.try_wait().unwrap()
        });
        self.reaped = true;
        assert!(
            status.success(),
            "hub exited {status}:\n{}",
            self.log_text()
        );
        self.wait_broker_gone();
    }

    fn sigkill(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// Waits (bounded) for the embedded mosquitto to end, as it must once the hub is gone.
    fn wait_broker_gone(&mut self) {
        if let Some(pid) = self.broker {
            wait_for(
                "mosquitto to end with the hub",
                Duration::from_secs(10),
                || (!alive_with(pid, &self.data)).then_some(()),
            );
            self.broker = None;
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.sigkill();
        if let Some(pid) = self.broker.take() {
            // The broker gets SIGTERM when the hub dies; give it a moment, then make sure.
            let deadline = Instant::now() + Duration::from_secs(3);
            while alive_with(pid, &self.data) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive_with(pid, &self.data) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- hub log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Whether process `pid` runs (not a zombie) with `dir` on its command line: the check
/// that a PID the hub logged still names the broker this site started.
pub fn alive_with(pid: u32, dir: &Path) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let dir = dir.to_string_lossy();
    !zombie && String::from_utf8_lossy(&cmdline).contains(dir.as_ref())
}

/// A running gate-sim; SIGKILLed by PID and reaped on drop.
pub struct GateSim {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    reaped: bool,
}

impl GateSim {
    /// Waits (at most `timeout`) for the run to end; asserts it succeeded; its summary.
    pub fn finish(mut self, timeout: Duration) -> Summary {
        let status: ExitStatus = wait_for("gate-sim to finish", timeout, || {
            self.child.try_wait().unwrap()
        });
        self.reaped = true;
        let out = fs::read_to_string(&self.out).unwrap_or_default();
        let err = fs::read_to_string(&self.err).unwrap_or_default();
        assert!(status.success(), "gate-sim exited {status}:\n{out}\n{err}");
        Summary::parse(&out)
    }
}

impl Drop for GateSim {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let out = fs::read_to_string(&self.out).unwrap_or_default();
            let err = fs::read_to_string(&self.err).unwrap_or_default();
            eprintln!("---- gate-sim {} ----\n{out}{err}", self.out.display());
        }
    }
}

/// gate-sim's summary line, `summary key=value ...`.
#[derive(Debug, Clone)]
pub struct Summary {
    pub line: String,
    fields: HashMap<String, String>,
}

impl Summary {
    pub fn parse(stdout: &str) -> Summary {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("summary "))
            .unwrap_or_else(|| panic!("no summary line in: {stdout}"))
            .to_owned();
        println!("{line}");
        let fields = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Summary { line, fields }
    }

    pub fn text(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }

    /// A count; 0 when the field is absent (gate-sim prints some only when non-zero).
    pub fn n(&self, key: &str) -> u64 {
        self.fields
            .get(key)
            .map_or(0, |v| v.parse().unwrap_or_else(|_| panic!("{key}={v}")))
    }

    /// Decisions the hub made and the gates received (online grants and denies).
    pub fn hub_decisions(&self) -> u64 {
        self.n("granted") + self.n("denied")
    }
}

/// Rows per gate id and source.
pub fn rows_by_gate(rows: &[LogRow], source: LogSource) -> BTreeMap<i64, Vec<&LogRow>> {
    let mut m: BTreeMap<i64, Vec<&LogRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.source == source) {
        m.entry(r.gate).or_default().push(r);
    }
    m
}

/// Every stored event, oldest first.
pub fn all_events(store: &Store) -> Vec<gatehouse_alerts::model::Event> {
    let mut out: Vec<gatehouse_alerts::model::Event> = Vec::new();
    loop {
        let page = store
            .list_events(&EventFilter {
                after_seq: Some(out.last().map_or(0, |e| e.seq)),
                limit: MAX_PAGE,
                ..EventFilter::default()
            })
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}
