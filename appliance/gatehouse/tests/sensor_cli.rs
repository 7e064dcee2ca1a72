//! `gatehouse sensor` as an installer meets it, running the real binary against a tempdir
//! config: `add` prints the provisioning TOML (the channel from `[lora]`, the key shown
//! once), `list` never shows the key, `disable` / `enable` / `remove`, and the errors a user
//! can cause (exit 1, one line naming the problem, nothing saved).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cli_support;

use cli_support::CliSite;
use gatehouse_store::Store;

fn site() -> CliSite {
    CliSite::new("[lora]\nfrequency_hz = 869525000\nspreading_factor = 9\n")
}

/// Exits non-zero naming `want` (the shared `CliSite::fails` asks exit 1 and one line too).
fn fails(site: &CliSite, args: &[&str], want: &str) {
    let o = site.run(args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{args:?}: {e}");
    assert!(e.contains(want), "{args:?}: wanted {want:?} in {e:?}");
    assert!(!e.contains("panicked"), "{e}");
}

/// The value of `key = ...` in a TOML block (strings unquoted).
fn field<'a>(toml: &'a str, key: &str) -> &'a str {
    toml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {toml}"))
        .trim_matches('"')
}

#[test]
fn sensors_are_added_listed_and_retired_from_the_shell() {
    let site = site();
    let out = site.ok(&[
        "sensor",
        "add",
        "front-door",
        "--kind",
        "door",
        "--heartbeat",
        "2m",
    ]);
    assert!(out.starts_with("[[sensor]]\n"), "{out}");
    assert_eq!(field(&out, "name"), "front-door");
    assert_eq!(field(&out, "kind"), "door");
    assert_eq!(field(&out, "heartbeat_s"), "120");
    assert_eq!(field(&out, "frequency_hz"), "869525000");
    assert_eq!(field(&out, "spreading_factor"), "9");
    assert_eq!(field(&out, "bandwidth_hz"), "125000");
    let key = field(&out, "key").to_owned();
    let dev_addr = u32::from_str_radix(field(&out, "dev_addr"), 16).unwrap();
    assert_eq!(key.len(), 32);
    let store = Store::open(&site.data).unwrap();
    let auth = store.sensor_auth(dev_addr).unwrap().unwrap();
    let stored: String = auth
        .key
        .expose()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored, key);

    // Default heartbeat: five minutes.
    let out = site.ok(&["sensor", "add", "hall-pir", "--kind", "pir"]);
    assert_eq!(field(&out, "heartbeat_s"), "300");

    let list = site.ok(&["sensor", "list"]);
    assert!(!list.contains(&key), "{list}");
    assert!(
        list.contains("front-door") && list.contains("hall-pir"),
        "{list}"
    );
    assert!(list.contains(&format!("{dev_addr:08x}")), "{list}");
    assert!(list.contains("never"), "{list}");

    site.ok(&["sensor", "disable", "front-door"]);
    assert!(!store.sensor_by_name("front-door").unwrap().enabled);
    assert!(site.ok(&["sensor", "list"]).contains("disabled"));
    site.ok(&["sensor", "enable", "front-door"]);
    assert!(store.sensor_by_name("front-door").unwrap().enabled);
    site.ok(&["sensor", "remove", "hall-pir"]);
    assert_eq!(store.list_sensors().unwrap().len(), 1);

    fails(
        &site,
        &["sensor", "add", "front-door", "--kind", "door"],
        "already taken",
    );
    fails(
        &site,
        &["sensor", "add", "garage", "--kind", "garage"],
        "door, pir, smoke, temp",
    );
    fails(
        &site,
        &[
            "sensor",
            "add",
            "garage",
            "--kind",
            "door",
            "--heartbeat",
            "5 days",
        ],
        "5m",
    );
    fails(&site, &["sensor", "remove", "nope"], "no such sensor");
    assert_eq!(store.list_sensors().unwrap().len(), 1);
}
