//! The admin web console end to end in a real browser: `gatehouse up` (userspace tunnel, so
//! the VPN page has a live tunnel; HTTPS console on a free loopback port; MQTT off) on a
//! fresh data directory, and headless Chromium from Debian's package driven by
//! playwright-core (tests/console/e2e.mjs, run with node).
//!
//! This test sets the box up as first boot does: `gatehouse admin enrol-token` makes the
//! one-time enrolment token and `gatehouse console` the HTTPS certificate (printing its
//! SHA-256 fingerprint), before the hub starts. The browser script then checks that the
//! server presents that certificate and walks through the console as an installer and an
//! admin would: enrolment, login, people, cards, gates and a card read at the gate, a
//! live alert pop-up and its acknowledgement, a VPN peer, an operator account and what it
//! may not reach, the CSRF refusal and a form error. The steps are listed at the top of
//! e2e.mjs; it prints one line per step and saves a full-page screenshot of each main page
//! into `target/console-screenshots/` (a test artifact to look at), `failure.png` there
//! when a step fails.
//!
//! Needs `/usr/bin/chromium`, `node` and the script's node_modules (playwright-core):
//! `make deps` installs them. When one is missing the test fails saying so; it never skips.
//! .config/nextest.toml runs it alone (a browser on a 2-core machine).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support {
    pub mod site;
}

use std::fs;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::site::{free_port, strip_ansi, wait_for, GATEHOUSE};

/// The browser the script launches (Debian's chromium package).
const CHROMIUM: &str = "/usr/bin/chromium";
/// The longest the browser script may take (it needs well under a minute).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);
/// The longest `gatehouse up` may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

/// `<workspace>/target/console-screenshots` (the workspace is two levels up).
fn screenshot_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().and_then(Path::parent).unwrap();
    workspace.join("target/console-screenshots")
}

/// Fails (never skips) when the browser, node or the script's modules are missing.
fn require_browser_tools() {
    let how = "run `make deps` (it installs Debian's chromium, Node.js with npm, and \
               playwright-core into appliance/gatehouse/tests/console/node_modules)";
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: {how}");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "`node` cannot be run ({node:?}): {how}"
    );
    let pw = console_dir().join("node_modules/playwright-core/package.json");
    assert!(pw.exists(), "{} is missing: {how}", pw.display());
}

/// A free loopback UDP port (the tunnel's listen port).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first whitespace-separated word of `text` that `pick` accepts, with surrounding
/// punctuation (quotes, brackets, a trailing comma or full stop) removed.
fn find_word(text: &str, pick: impl Fn(&str) -> bool) -> Option<String> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .find(|w| pick(w))
        .map(str::to_owned)
}

/// The enrolment token as printed: base32 groups joined by dashes
/// (`XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`).
fn is_token(w: &str) -> bool {
    let groups: Vec<&str> = w.split('-').collect();
    groups.len() >= 5
        && groups.iter().all(|g| {
            (1..=8).contains(&g.len())
                && g.chars()
                    .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        })
}

/// A SHA-256 fingerprint as colon hex (32 pairs).
fn is_fingerprint(w: &str) -> bool {
    let pairs: Vec<&str> = w.split(':').collect();
    pairs.len() == 32
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The site: config and data directory in a tempdir.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    http: String,
    https: String,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let uapi = dir.path().join("wireguard");
        let config = dir.path().join("gatehouse.toml");
        let http = format!("127.0.0.1:{}", free_port());
        let https = format!("127.0.0.1:{}", free_port());
        let udp = free_udp_port();
        fs::write(
            &config,
            format!(
                "[general]\ndata_dir = \"{data}\"\n\n\
                 [tunnel]\ninterface = \"gh-console\"\nmode = \"userspace\"\n\
                 listen_port = {udp}\naddress = \"10.77.0.1/24\"\n\
                 public_endpoint = \"127.0.0.1:{udp}\"\nuapi_dir = \"{uapi}\"\n\
                 firewall = \"none\"\n\n\
                 [[tunnel.service]]\nname = \"console\"\nport = 443\ntarget = \"{https}\"\n\n\
                 [hub]\nhttp_listen = \"{http}\"\nhttps_listen = \"{https}\"\n\
                 gate_tcp_listen = \"\"\n\n\
                 [hub.mqtt]\nmode = \"off\"\n",
                data = data.display(),
                uapi = uapi.display(),
            ),
        )
        .unwrap();
        Site {
            dir,
            config,
            http,
            https,
        }
    }

    /// Runs the CLI; returns (success, stdout + stderr).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new(GATEHOUSE)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), strip_ansi(&text))
    }
}

/// A child process killed by its PID and reaped on drop, whatever happened.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// Print the output when the test fails (the browser script's is printed anyway).
    show_on_panic: bool,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name,
            child,
            log,
            show_on_panic: true,
        }
    }

    fn log_text(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Panics with the log if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.show_on_panic && std::thread::panicking() {
            eprintln!("---- output of {} ----\n{}", self.name, self.log_text());
        }
    }
}

#[test]
fn console_in_headless_chromium() {
    require_browser_tools();
    let site = Site::new();

    // First boot: the enrolment token and the certificate, before the hub starts.
    let (ok, out) = site.run(&["admin", "enrol-token"]);
    assert!(ok, "`gatehouse admin enrol-token` failed:\n{out}");
    let token = find_word(&out, is_token)
        .unwrap_or_else(|| panic!("no enrolment token in `gatehouse admin enrol-token`:\n{out}"));
    let (ok, out) = site.run(&["console"]);
    assert!(ok, "`gatehouse console` failed:\n{out}");
    let fingerprint = find_word(&out, is_fingerprint)
        .unwrap_or_else(|| panic!("no SHA-256 fingerprint in `gatehouse console`:\n{out}"));

    let mut up = Proc::spawn(
        "gatehouse up",
        Command::new(GATEHOUSE)
            .arg("--config")
            .arg(&site.config)
            .arg("up")
            .env("NO_COLOR", "1"),
        site.dir.path().join("up.log"),
    );
    wait_for("gatehouse up to listen", START_TIMEOUT, || {
        up.assert_running();
        let log = up.log_text();
        (log.contains("tunnel up")
            && log.contains("hub listening")
            && TcpStream::connect(&site.https).is_ok())
        .then_some(())
    });
    // The banner of `gatehouse up` repeats no token: the one made above is still live.
    let log = up.log_text();
    if let Some(other) = find_word(&log, is_token) {
        assert_eq!(other, token, "`gatehouse up` made another token:\n{log}");
    }

    let shots = screenshot_dir();
    let _ = fs::remove_dir_all(&shots);
    fs::create_dir_all(&shots).unwrap();
    let script = console_dir().join("e2e.mjs");
    let mut node = Proc::spawn(
        "node e2e.mjs",
        Command::new("node")
            .arg(&script)
            .current_dir(console_dir())
            .env("GATEHOUSE_URL", format!("https://{}/", site.https))
            .env("GATEHOUSE_HTTP_URL", format!("http://{}/", site.http))
            .env("GATEHOUSE_ENROL_TOKEN", &token)
            .env("GATEHOUSE_FINGERPRINT", &fingerprint)
            .env("GATEHOUSE_SCREENSHOTS", &shots)
            .env("GATEHOUSE_CHROMIUM", CHROMIUM),
        site.dir.path().join("e2e.log"),
    );
    node.show_on_panic = false;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = node.log_text();
    println!("{output}");
    println!("screenshots: {}", shots.display());
    up.assert_running();
    match status {
        Some(s) => assert!(
            s.success(),
            "the browser script failed ({s}); its output is above (and the output of \
             `gatehouse up` below), the screenshots (failure.png) in {}",
            shots.display()
        ),
        None => panic!(
            "the browser script did not finish within {SCRIPT_TIMEOUT:?}; its output is above"
        ),
    }
    // Every main page was looked at.
    for page in [
        "enrol",
        "login",
        "dashboard",
        "events",
        "event-detail",
        "people",
        "cards",
        "levels",
        "gates",
        "log",
        "vpn",
        "alerts",
        "admins",
        "phone-dashboard",
    ] {
        let png = shots.join(format!("{page}.png"));
        let size = fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "no screenshot {}", png.display());
    }
}
