//! A mosquitto the test runs itself, the way the box's systemd runs it for a hub in
//! external MQTT mode: the hub writes the password and ACL files into its
//! `hub.mqtt.provision_dir`, and this broker reads them from there (the test writes its
//! `mosquitto.conf` beside them, rendered by `gatehouse_broker::BrokerConfig`).
//!
//! It is set up as `gatehouse_hub::mqtt` asks of an external broker: persistence on (a
//! `db/` directory beside the files), so that a restart with SIGTERM keeps the hub's
//! persistent session, its subscriptions and the QoS 1 messages queued for it; a
//! `message_size_limit` of the hub's [`BROKER_MESSAGE_LIMIT`]; `upgrade_outgoing_qos`; and
//! `max_queued_messages` raised so that what is queued while the hub is down is never cut
//! off.
//!
//! [`Broker`] kills (SIGKILL, by its PID) and reaps its process on drop, whatever the
//! outcome; its output goes to `mosquitto.log` in the directory, printed when the test
//! fails. Used with `mod support { pub mod broker; }`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_broker::{BrokerConfig, BrokerFiles, Persistence};
use gatehouse_hub::mqtt::{BROKER_MESSAGE_LIMIT, EMBEDDED_MAX_QUEUED};
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound of every wait for mosquitto to start, reload or stop.
const WAIT: Duration = Duration::from_secs(20);
/// Where Debian installs mosquitto.
const SBIN: [&str; 3] = [
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/sbin/mosquitto",
];

fn mosquitto_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("mosquitto"))
        .chain(SBIN.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("mosquitto is not installed (Debian package `mosquitto`)"))
}

/// Whether this process runs as root (mosquitto then needs `user root` to read the 0600
/// files the hub wrote).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

/// A mosquitto on `127.0.0.1:<port>` reading the password and ACL files in `dir`.
pub struct Broker {
    files: BrokerFiles,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: u32,
}

impl Broker {
    /// Writes `mosquitto.conf` in `dir` (which must already hold `passwd` and `acl`: start
    /// the hub first) and starts mosquitto on `port`; returns once it accepts connections.
    pub fn start(dir: &Path, port: u16) -> Broker {
        let files = BrokerFiles::new(dir);
        for f in [files.password_file(), files.acl_file()] {
            assert!(
                f.is_file(),
                "{} is missing: the hub writes it at start",
                f.display()
            );
        }
        let config = BrokerConfig {
            port,
            persistence: Persistence::Directory(dir.join("db")),
            max_queued_messages: Some(EMBEDDED_MAX_QUEUED),
            message_size_limit: Some(BROKER_MESSAGE_LIMIT),
            upgrade_outgoing_qos: true,
            user: is_root().then(|| "root".to_owned()),
            ..BrokerConfig::default()
        };
        fs::create_dir_all(dir.join("db")).unwrap();
        fs::write(files.conf(), config.render(&files).unwrap()).unwrap();
        let mut b = Broker {
            log: dir.join("mosquitto.log"),
            files,
            port,
            child: None,
            starts: 0,
        };
        b.launch();
        b
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything mosquitto wrote, over all its runs.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn count(&self, pat: &str) -> usize {
        self.log_text().matches(pat).count()
    }

    fn launch(&mut self) {
        let running_before = self.count(" running");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.files.conf())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("mosquitto exited ({status}):\n{}", self.log_text());
            }
            if self.count(" running") > running_before && TcpStream::connect(self.addr()).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not get ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("mosquitto is not running");
        let st = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} {pid}");
    }

    /// SIGHUP: mosquitto re-reads the password and ACL files; returns once it logged so.
    pub fn reload(&mut self) {
        let before = self.count("Reloading config.");
        self.signal("-HUP");
        let deadline = Instant::now() + WAIT;
        while self.count("Reloading config.") <= before {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not reload:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (mosquitto saves its persistence database and exits), then the same
    /// configuration on the same port again.
    pub fn restart(&mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                assert!(status.success(), "mosquitto exited {status} on SIGTERM");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not stop on SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = None;
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- mosquitto log ----\n{}", self.log_text());
        }
    }
}
