//! The services tell systemd what they do, as a `Type=notify` unit with `WatchdogSec` sees
//! it: the real `gatehouse` process with `NOTIFY_SOCKET` pointing at a datagram socket the
//! test binds (a path and an abstract name), `READY=1` once it serves, `WATCHDOG=1` every
//! half `WATCHDOG_USEC`, `STOPPING=1` on SIGTERM, then a clean exit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod cli_support;

use cli_support::{write_config, GATEHOUSE};

/// A userspace tunnel on a free UDP port, the hub on a free loopback port, no HTTPS, no
/// gate TCP, LoRa off; MQTT as `mqtt`.
fn config(dir: &Path, mqtt: &str) -> PathBuf {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = write_config(
        dir,
        &format!(
            "[tunnel]\nmode = \"userspace\"\ninterface = \"gh-notify\"\nlisten_port = {port}\n\
             address = \"10.77.0.1/24\"\npublic_endpoint = \"127.0.0.1:{port}\"\n\
             uapi_dir = \"{}\"\nfirewall = \"none\"\n\
             [hub]\nhttp_listen = \"127.0.0.1:0\"\nhttps_listen = \"\"\ngate_tcp_listen = \"\"\n\
             [hub.mqtt]\nmode = \"{mqtt}\"\nlisten = \"127.0.0.1:0\"\n[lora]\nmode = \"off\"\n",
            dir.join("wireguard").display()
        ),
    );
    std::fs::create_dir_all(dir.join("data")).unwrap();
    path
}

/// Kills the child if the test fails before it stopped it.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(config: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Service {
    let mut c = Command::new(GATEHOUSE);
    c.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    Service(c.spawn().unwrap())
}

/// The next datagram within `timeout`, or `None`.
fn recv(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 1024];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv: {e}"),
    }
}

fn sigterm_and_wait(s: &mut Service, log: &Path) {
    let pid = s.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = s.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SIGTERM: {}",
            log_text(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}: {}", log_text(log));
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// `gatehouse up` (tunnel, hub, and the hub's own mosquitto, which must not notify in our
/// name): ready once, pings at about half the watchdog time, stopping, exit 0.
#[test]
fn up_is_ready_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "embedded");
    let name = format!("gatehouse-notify-test-{}", std::process::id());
    let sock = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    let log = dir.path().join("up.log");
    let started = Instant::now();
    let mut up = spawn(
        &config,
        &["up"],
        &[
            ("NOTIFY_SOCKET", &format!("@{name}")),
            ("WATCHDOG_USEC", "1000000"),
        ],
        &log,
    );
    let ready = recv(&sock, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no READY=1 in 30 s: {}", log_text(&log)));
    assert_eq!(ready, "READY=1\nSTATUS=serving", "{}", log_text(&log));
    // Ready means serving: the hub's /healthz answers now (its port is in the log).
    let text = log_text(&log);
    assert!(text.contains("hub listening"), "{text}");
    eprintln!("ready after {:?}", started.elapsed());

    // WatchdogSec=1s: a ping from each service every 0.5 s.
    let window = Instant::now();
    let mut pings = 0;
    while window.elapsed() < Duration::from_secs(3) {
        match recv(&sock, Duration::from_millis(1500)) {
            Some(m) => {
                assert_eq!(m, "WATCHDOG=1", "{}", log_text(&log));
                pings += 1;
            }
            None => panic!("no WATCHDOG=1 for 1.5 s: {}", log_text(&log)),
        }
    }
    assert!((4..=20).contains(&pings), "{pings} pings in 3 s");

    sigterm_and_wait(&mut up, &log);
    // Pings already in flight may precede it; after STOPPING=1, nothing.
    let mut rest = Vec::new();
    while let Some(m) = recv(&sock, Duration::from_millis(300)) {
        rest.push(m);
    }
    let stop = rest.iter().position(|m| m == "STOPPING=1");
    let stop = stop.unwrap_or_else(|| panic!("no STOPPING=1 in {rest:?}"));
    assert!(rest[..stop].iter().all(|m| m == "WATCHDOG=1"), "{rest:?}");
    assert_eq!(stop + 1, rest.len(), "after STOPPING=1: {rest:?}");
}

/// `gatehouse hub` alone, a socket path, no watchdog: ready, no pings, stopping.
#[test]
fn hub_without_watchdog_is_ready_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "off");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let log = dir.path().join("hub.log");
    let mut hub = spawn(
        &config,
        &["hub"],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
        &log,
    );
    let ready = recv(&sock, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no READY=1 in 30 s: {}", log_text(&log)));
    assert_eq!(ready, "READY=1\nSTATUS=serving");
    assert_eq!(recv(&sock, Duration::from_millis(1500)), None);
    sigterm_and_wait(&mut hub, &log);
    assert_eq!(
        recv(&sock, Duration::from_secs(2)).as_deref(),
        Some("STOPPING=1")
    );
}

/// Without NOTIFY_SOCKET nothing changes, and `check-config` names what it checked.
#[test]
fn check_config_accepts_good_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "off");
    let o = Command::new(GATEHOUSE)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(": ok") && out.contains("mode userspace"),
        "{out}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[tunnel]\nmtu = 100\n").unwrap();
    let o = Command::new(GATEHOUSE)
        .arg("--config")
        .arg(&bad)
        .arg("check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("tunnel.mtu"), "{err}");
}
