//! `gatehouse lora` as a user meets it: the simulated air as its own process, and the
//! forwarder's errors when it cannot run (each saying what to do).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_lora_proto::air::AirClient;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod cli_support;

use cli_support::{gatehouse, stderr, write_config, GATEHOUSE};

fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = write_config(dir, extra);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    path
}

fn run(config: &Path, args: &[&str]) -> (bool, String) {
    let o = gatehouse(config, args);
    (o.status.success(), stderr(&o))
}

#[test]
fn forwarder_says_why_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = run(&config(dir.path(), ""), &["lora"]);
    assert!(!ok);
    assert!(err.contains("lora.mode") && err.contains("sim"), "{err}");

    let c = config(
        dir.path(),
        "[lora]\nmode = \"sim\"\n[lora.mqtt]\nbroker = \"127.0.0.1:1\"\n",
    );
    let (ok, err) = run(&c, &["lora"]);
    assert!(!ok);
    assert!(
        err.contains("mqtt-lora.password") && err.contains("start the hub first"),
        "{err}"
    );

    let c = config(dir.path(), "[lora]\nspreading_factor = 13\n");
    let (ok, err) = run(&c, &["lora"]);
    assert!(!ok);
    assert!(err.contains("lora.spreading_factor"), "{err}");
}

#[test]
fn air_runs_as_its_own_process_until_stopped() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(GATEHOUSE)
        .args(["lora", "air", "--listen", &listen, "--loss", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listen.parse().unwrap();
    // The first connection waits (and retries) until the process listens.
    let a = (0..20)
        .find_map(|_| AirClient::connect(addr, 868_100_000, 7).ok())
        .expect("the air never answered");
    let b = AirClient::connect(addr, 868_100_000, 7).unwrap();
    a.send(b"hello", 10_000).unwrap();
    let p = b.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    assert_eq!(p.bytes, b"hello");
    // SIGTERM: it stops cleanly and reports what it did.
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("listening on {listen}")), "{err}");
    assert!(err.contains("1 transmissions, 1 delivered"), "{err}");
}
