//! The `gatehouse` command line as a user meets it: version, help, and the errors a user
//! can cause (a broken config file, bad peer arguments), each saying what is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod cli_support;

use cli_support::{failed, gatehouse, stderr, stdout, write_config, GATEHOUSE, TUNNEL};

#[test]
fn version_and_help_name_every_subcommand() {
    let v = Command::new(GATEHOUSE).arg("--version").output().unwrap();
    assert!(v.status.success());
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
    let h = Command::new(GATEHOUSE).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&h.stdout);
    for sub in ["up", "tunnel", "hub", "wg", "peer"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help lacks {sub}:\n{help}"
        );
    }
    let p = Command::new(GATEHOUSE)
        .args(["peer", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&p.stdout);
    for sub in ["add", "list", "disable", "enable", "remove"] {
        assert!(help.contains(sub), "peer --help lacks {sub}:\n{help}");
    }
}

#[test]
fn broken_config_names_file_key_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen_prot = 51820\n", "listen_prot"),
        ("listen_port = \"fast\"\n", "listen_port"),
        ("mtu = 100\n", "mtu"),
        ("mode = \"kernel\"\n", "mode"),
    ];
    for (extra, key) in cases {
        let config = write_config(dir.path(), &format!("{TUNNEL}{extra}"));
        let o = gatehouse(&config, &["tunnel"]);
        assert_eq!(o.status.code(), Some(1), "{extra}");
        let e = stderr(&o);
        assert!(
            e.contains(&config.display().to_string()),
            "names the file: {e}"
        );
        assert!(e.contains(key), "names the key {key}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    std::fs::write(dir.path().join("gatehouse.toml"), "[tunnel\n").unwrap();
    let o = gatehouse(&dir.path().join("gatehouse.toml"), &["tunnel"]);
    assert_eq!(o.status.code(), Some(1));
    let missing = gatehouse(&dir.path().join("nope.toml"), &["tunnel"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("nope.toml"),
        "{}",
        stderr(&missing)
    );
}

/// What the tunnel's first start leaves in the data directory (the gateway's key file
/// and the peer store), without running it.
fn tunnel_ran_once(config: &Path) {
    let config = gatehouse_config::Config::load(config).unwrap();
    gatehouse_tunnel::service::prepare_gateway(&config, None).unwrap();
}

#[test]
fn peer_add_errors_are_clear_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TUNNEL);
    let store = dir.path().join("data").join("wg0.conf");
    // Before the tunnel first ran there is no gateway key to give clients: refused.
    let early = gatehouse(&config, &["peer", "add", "ada", "--role", "admin"]);
    failed(
        &early,
        "start `gatehouse tunnel`",
        "peer add before the tunnel",
    );
    assert!(stderr(&early).contains("wg0.conf"), "{}", stderr(&early));
    assert!(!store.exists() && !dir.path().join("data/wg0.key").exists());
    tunnel_ran_once(&config);
    let ok = gatehouse(&config, &["peer", "add", "ada", "--role", "admin"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let before = std::fs::read_to_string(&store).unwrap();

    let cases: [(&[&str], &str); 5] = [
        (&["peer", "add", "ada", "--role", "admin"], "exists already"),
        (&["peer", "add", "bob", "--role", "boss"], "boss"),
        (
            &["peer", "add", "bob", "--role", "admin", "--expires", "soon"],
            "--expires",
        ),
        (
            &[
                "peer",
                "add",
                "bob",
                "--role",
                "admin",
                "--public-key",
                "abc",
            ],
            "--public-key",
        ),
        (&["peer", "remove", "nobody"], "no peer named"),
    ];
    for (args, want) in cases {
        let o = gatehouse(&config, args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(
        std::fs::read_to_string(&store).unwrap(),
        before,
        "nothing half-saved"
    );

    let list = gatehouse(&config, &["peer", "list"]);
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(out.contains("ada") && out.contains("10.77.0.2"), "{out}");
}

/// Ends the child if the test fails before it did.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// On the box `gatehouse peer` and the console run as users that cannot read the
/// gateway's private key file. As root modes do not bite, so this takes the file away
/// instead: with a real tunnel running and its key file deleted, `peer add` works, its
/// client config carries the gateway's public key (from the store), the running tunnel
/// takes the peer, and keeps its key (writing the file again from memory).
#[test]
fn peer_add_never_needs_the_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uapi_dir = dir.path().join("wireguard");
    let config = write_config(
        dir.path(),
        &format!(
            "[tunnel]\nmode = \"userspace\"\ninterface = \"gh-cli\"\nlisten_port = {port}\n\
             public_endpoint = \"127.0.0.1:{port}\"\nuapi_dir = \"{}\"\nfirewall = \"none\"\n\
             [hub]\nhttp_listen = \"127.0.0.1:0\"\n",
            uapi_dir.display()
        ),
    );
    let socket = uapi_dir.join("gh-cli.sock");
    let key_file = dir.path().join("data/gh-cli.key");
    let store = dir.path().join("data/gh-cli.conf");
    let tunnel = Running(
        Command::new(GATEHOUSE)
            .arg("--config")
            .arg(&config)
            .arg("tunnel")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let gateway = loop {
        if let Ok(info) = gatehouse_tunnel::uapi::query(&socket) {
            break info.private_key.unwrap().public();
        }
        assert!(Instant::now() < deadline, "the tunnel never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        gatehouse_tunnel::gateway_key::load(&key_file)
            .unwrap()
            .public(),
        gateway
    );
    std::fs::remove_file(&key_file).unwrap();

    let o = gatehouse(
        &config,
        &["peer", "add", "ada", "--role", "admin", "--qr=false"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let client = stdout(&o);
    assert!(
        client.contains(&format!("PublicKey = {gateway}")),
        "{client}"
    );
    assert!(
        stderr(&o).contains(&format!(
            "applied to the running tunnel (pid {})",
            tunnel.0.id()
        )),
        "{}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&store).unwrap();
    assert!(!text.contains("PrivateKey"), "{text}");
    assert!(text.contains(&format!("# PublicKey = {gateway}")), "{text}");

    // The running tunnel took the peer and kept its own key.
    let peer_live = loop {
        let info = gatehouse_tunnel::uapi::query(&socket).unwrap();
        if !info.peers.is_empty() {
            break info;
        }
        assert!(Instant::now() < deadline, "the tunnel never took the peer");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(peer_live.private_key.unwrap().public(), gateway);
    assert_eq!(
        gatehouse_tunnel::gateway_key::load(&key_file)
            .unwrap()
            .public(),
        gateway
    );
}
