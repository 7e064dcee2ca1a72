//! The `gatehouse` command line as a user meets it: version, help, and the errors a user
//! can cause (a broken config file, bad peer arguments), each saying what is wrong.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

mod cli_support;

use cli_support::{gatehouse, stderr, write_config, GATEHOUSE, TUNNEL};

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

#[test]
fn peer_add_errors_are_clear_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TUNNEL);
    let ok = gatehouse(&config, &["peer", "add", "ada", "--role", "admin"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let store = dir.path().join("data").join("wg0.conf");
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
