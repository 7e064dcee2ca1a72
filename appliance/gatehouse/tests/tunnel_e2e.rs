//! The tunnel end to end, with the real parts: `gatehouse up` in a network namespace of
//! its own, remote admins as wireguard-go (configured with `wg`) in others, using the
//! client config `gatehouse peer add` prints. Needs root (namespaces, TUN devices, nft).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, SystemTime};
use support::*;

const GW_TUNNEL: &str = "10.77.0.1";
const MB: u64 = 1 << 20;

/// Adds a peer with the CLI and returns the client config it printed.
fn add_peer(lab: &Lab, config: &std::path::Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["peer", "add", name];
    args.extend_from_slice(extra);
    let conf = lab.gatehouse(config, &args);
    assert!(conf.starts_with("[Interface]\nPrivateKey = "), "{conf}");
    assert!(
        conf.contains(&format!("Endpoint = {GW_BRIDGE}:51820")),
        "{conf}"
    );
    conf
}

fn public_key_of(client_conf: &str) -> String {
    let private = client_conf
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .unwrap();
    let mut child = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn tun_mode_admin_ping_transfer_roaming_and_removal() {
    let (mut lab, g) = Lab::with_gateway("tun");
    let (gw, wg, config) = (g.ns, g.ifname, g.config);
    let alice = add_peer(&lab, &config, "alice", &["--role", "admin"]);
    let alice_key = public_key_of(&alice);
    let c1 = lab.add_client(1);
    let cif = lab.ifname("a");
    lab.wireguard_go_client(&c1, &cif, &alice);

    // Handshake, then ping both ways.
    lab.wait_ping(&c1, GW_TUNNEL);
    assert!(lab.ping(&c1, GW_TUNNEL, 5), "client -> gateway");
    assert!(lab.ping(&gw, "10.77.0.2", 5), "gateway -> client");
    let dump = lab.wg_dump(&gw, &wg);
    assert_eq!(dump.len(), 1);
    assert_eq!(dump[0].0, alice_key);
    assert!(
        dump[0].1.starts_with("10.99.0.11:"),
        "endpoint {}",
        dump[0].1
    );
    assert!(dump[0].2 > 0, "latest handshake is set");
    assert!(dump[0].3 > 0 && dump[0].4 > 0, "rx/tx counted");

    // The console (a service on the gateway) and the NVR (a LAN forward).
    assert_eq!(
        lab.http_get(&c1, "http://10.77.0.1/healthz").as_deref(),
        Some("ok")
    );
    lab.transfer(&c1, GW_TUNNEL, 554, 50 * MB, None);

    // The client's UDP port changes in the middle of a transfer (a NAT rebinding): the
    // gateway follows the authenticated source and the transfer completes intact.
    let before = lab.wg_dump(&gw, &wg)[0].1.clone();
    std::thread::scope(|s| {
        let t = s.spawn(|| lab.transfer(&c1, GW_TUNNEL, 554, 8 * MB, Some(4 * MB)));
        std::thread::sleep(Duration::from_millis(700));
        lab.exec(&c1, &["wg", "set", &cif, "listen-port", "41414"]);
        t.join().unwrap();
    });
    let after = lab.wg_dump(&gw, &wg)[0].1.clone();
    assert_ne!(before, after);
    assert_eq!(after, "10.99.0.11:41414");

    // `peer list` shows the live state.
    let list = lab.gatehouse(&config, &["peer", "list"]);
    assert!(list.contains("alice") && list.contains("admin"), "{list}");
    assert!(list.contains("10.99.0.11:41414"), "{list}");

    // Disabling keeps the peer in the store but out of the tunnel; enabling lets it back.
    lab.gatehouse(&config, &["peer", "disable", "alice"]);
    wait_for("the peer to be disabled", Duration::from_secs(10), || {
        lab.wg_dump(&gw, &wg).is_empty().then_some(())
    });
    assert!(
        !lab.ping(&c1, GW_TUNNEL, 2),
        "a disabled peer still gets through"
    );
    lab.gatehouse(&config, &["peer", "enable", "alice"]);
    lab.wait_ping(&c1, GW_TUNNEL);

    // Removing the peer cuts it off at once.
    lab.gatehouse(&config, &["peer", "remove", "alice"]);
    wait_for("the removal to apply", Duration::from_secs(10), || {
        lab.wg_dump(&gw, &wg).is_empty().then_some(())
    });
    assert!(
        !lab.ping(&c1, GW_TUNNEL, 2),
        "a removed peer still gets through"
    );
    assert!(!lab.ping(&gw, "10.77.0.2", 1));
}

#[test]
fn tun_mode_two_peers_roles_expiry_and_wg_set() {
    let (mut lab, g) = Lab::with_gateway("tun");
    let (gw, wg, config) = (g.ns, g.ifname, g.config);
    lab.tcp_sink(&gw, "0.0.0.0", 8081);

    let admin = add_peer(&lab, &config, "ada", &["--role", "admin"]);
    let installer = add_peer(&lab, &config, "ian", &["--role", "installer"]);
    let soon = SystemTime::now() + Duration::from_secs(12);
    let soon_text = rfc3339(soon);
    let temp = add_peer(
        &lab,
        &config,
        "tess",
        &["--role", "admin", "--expires", &soon_text],
    );
    let (c1, c2, c3) = (lab.add_client(1), lab.add_client(2), lab.add_client(3));
    let (i1, i2, i3) = (lab.ifname("a"), lab.ifname("b"), lab.ifname("c"));
    lab.wireguard_go_client(&c1, &i1, &admin);
    lab.wireguard_go_client(&c2, &i2, &installer);
    lab.wireguard_go_client(&c3, &i3, &temp);

    // Two peers at once, each with its own address.
    lab.wait_ping(&c1, GW_TUNNEL);
    lab.wait_ping(&c2, GW_TUNNEL);
    std::thread::scope(|s| {
        let a = s.spawn(|| lab.transfer(&c1, GW_TUNNEL, 554, 10 * MB, None));
        let b = s.spawn(|| lab.http_get(&c2, "http://10.77.0.1/healthz"));
        a.join().unwrap();
        assert_eq!(b.join().unwrap().as_deref(), Some("ok"));
    });
    assert!(lab.ping(&gw, "10.77.0.2", 2) && lab.ping(&gw, "10.77.0.3", 2));

    // Roles: the installer reaches the console but not the NVR; the admin reaches both.
    assert!(lab.http_get(&c2, "http://10.77.0.1/healthz").is_some());
    assert!(
        lab.connects(&c1, GW_TUNNEL, 554),
        "admin reaches the LAN forward"
    );
    assert!(
        !lab.connects(&c2, GW_TUNNEL, 554),
        "installer must not reach the LAN forward"
    );
    // No role reaches a port of the gateway that is not a service (a listener on 8081).
    assert!(!lab.connects(&c1, GW_TUNNEL, 8081));

    // The temporary admin works until its expiry, then is refused.
    lab.wait_ping(&c3, GW_TUNNEL);
    assert!(lab.connects(&c3, GW_TUNNEL, 554));
    wait_for("the expiry time", Duration::from_secs(30), || {
        (SystemTime::now() > soon + Duration::from_secs(1)).then_some(())
    });
    assert!(
        !lab.ping(&c3, GW_TUNNEL, 2),
        "an expired peer still gets through"
    );
    assert!(!lab.connects(&c3, GW_TUNNEL, 554));
    assert!(lab.ping(&c1, GW_TUNNEL, 1), "others are unaffected");

    // `wg set` against gatehouse's UAPI adds a peer live; it is kept in the peer store.
    let c4 = lab.add_client(4);
    let i4 = lab.ifname("d");
    let private = lab.exec(&c4, &["wg", "genkey"]);
    let private = private.trim();
    let public = public_key_of(&format!("PrivateKey = {private}\n"));
    lab.exec(
        &gw,
        &[
            "wg",
            "set",
            &wg,
            "peer",
            &public,
            "allowed-ips",
            "10.77.0.40/32",
        ],
    );
    let gw_public = lab.exec(&gw, &["wg", "show", &wg, "public-key"]);
    let manual = format!(
        "[Interface]\nPrivateKey = {private}\nAddress = 10.77.0.40/32\n\n[Peer]\n\
         PublicKey = {}\nEndpoint = {GW_BRIDGE}:51820\nAllowedIPs = 10.77.0.0/24\n",
        gw_public.trim()
    );
    lab.wireguard_go_client(&c4, &i4, &manual);
    lab.wait_ping(&c4, GW_TUNNEL);
    let store =
        std::fs::read_to_string(lab.dir.path().join("data").join(format!("{wg}.conf"))).unwrap();
    assert!(store.contains(&public), "wg set is written back:\n{store}");
    let dump = lab.wg_dump(&gw, &wg);
    let d = dump.iter().find(|d| d.0 == public).unwrap();
    assert!(d.2 > 0 && d.3 > 0, "handshake and traffic shown: {d:?}");
    // The store names the gateway only by its public key; the private key is in its own
    // 0600 file, the one the tunnel uses.
    assert!(!store.contains("PrivateKey"), "{store}");
    assert!(
        store.contains(&format!("# PublicKey = {}\n", gw_public.trim())),
        "{store}"
    );
    let key_file = lab.dir.path().join("data").join(format!("{wg}.key"));
    let live_private = lab.exec(&gw, &["wg", "show", &wg, "private-key"]);
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        live_private.trim()
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // `wg set ... remove` takes it away again.
    lab.exec(&gw, &["wg", "set", &wg, "peer", &public, "remove"]);
    assert!(!lab.ping(&c4, GW_TUNNEL, 2));

    // `wg set <if> private-key FILE` changes the gateway's key: the key file follows, and
    // the store's public key.
    let new_private = lab.exec(&gw, &["wg", "genkey"]);
    let new_file = lab.dir.path().join("new.key");
    std::fs::write(&new_file, &new_private).unwrap();
    lab.exec(
        &gw,
        &[
            "wg",
            "set",
            &wg,
            "private-key",
            &new_file.display().to_string(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        new_private.trim()
    );
    let new_public = lab.exec(&gw, &["wg", "show", &wg, "public-key"]);
    assert_ne!(new_public.trim(), gw_public.trim());
    let store =
        std::fs::read_to_string(lab.dir.path().join("data").join(format!("{wg}.conf"))).unwrap();
    assert!(
        store.contains(&format!("# PublicKey = {}\n", new_public.trim())),
        "{store}"
    );
    assert!(!store.contains("PrivateKey"), "{store}");
}

#[test]
fn userspace_mode_reaches_the_hub_through_smoltcp() {
    let (mut lab, g) = Lab::with_gateway("userspace");
    let (gw, wg, config, gateway) = (g.ns, g.ifname, g.config, g.proc);
    // No TUN device on the gateway side.
    let links = lab.exec(&gw, &["ip", "-o", "link"]);
    assert!(
        !links.contains(&wg),
        "userspace mode created a device:\n{links}"
    );

    let admin = add_peer(&lab, &config, "ada", &["--role", "admin"]);
    let installer = add_peer(&lab, &config, "ian", &["--role", "installer"]);
    let (c1, c2) = (lab.add_client(1), lab.add_client(2));
    let (i1, i2) = (lab.ifname("a"), lab.ifname("b"));
    lab.wireguard_go_client(&c1, &i1, &admin);
    lab.wireguard_go_client(&c2, &i2, &installer);

    lab.wait_ping(&c1, GW_TUNNEL);
    assert_eq!(
        lab.http_get(&c1, "http://10.77.0.1/healthz").as_deref(),
        Some("ok"),
        "the hub through smoltcp"
    );
    assert_eq!(
        lab.http_get(&c2, "http://10.77.0.1/healthz").as_deref(),
        Some("ok")
    );
    lab.transfer(&c1, GW_TUNNEL, 554, 20 * MB, None);
    assert!(
        !lab.connects(&c2, GW_TUNNEL, 554),
        "installer refused the forward"
    );
    assert!(!lab.connects(&c1, GW_TUNNEL, 9999), "no such service");
    // Garbage at the WireGuard port: dropped, counted, logged at a bounded rate; the
    // gateway keeps serving its peers.
    let script = xfer_script();
    let out = lab.exec(
        &c2,
        &["python3", &script, "garbage", GW_BRIDGE, "51820", "3000"],
    );
    assert_eq!(out.trim(), "sent");
    let gateway = lab.proc(gateway);
    assert!(gateway.is_running());
    let log = gateway.log.clone();
    wait_for("the drop log line", Duration::from_secs(25), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines()
            .find(|l| l.contains("dropped datagrams") && l.contains("malformed="))
            .map(str::to_owned)
    });
    assert!(lab.http_get(&c1, "http://10.77.0.1/healthz").is_some());

    // The UAPI works in userspace mode too.
    let dump = lab.wg_dump(&gw, &wg);
    assert_eq!(dump.len(), 2);
    assert!(dump.iter().all(|d| d.2 > 0));
}

/// wg-quick drives `gatehouse wg` as its userspace implementation on the client side,
/// with the client config used as is; the gateway is `gatehouse up` in TUN mode.
#[test]
fn wg_quick_drives_gatehouse_wg() {
    let (mut lab, g) = Lab::with_gateway("tun");
    let config = g.config;
    let conf = add_peer(&lab, &config, "wendy", &["--role", "installer"]);
    let c1 = lab.add_client(1);
    let cif = lab.ifname("q");
    lab.own_socket(&cif);
    let path = lab.dir.path().join(format!("{cif}.conf"));
    std::fs::write(&path, &conf).unwrap();
    let wrapper = lab.dir.path().join("gatehouse-wg");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec {GATEHOUSE} wg \"$@\"\n")).unwrap();
    run(&["chmod", "+x", wrapper.to_str().unwrap()]);
    let (ok, out) = try_run(&[
        "ip",
        "netns",
        "exec",
        &c1,
        "env",
        &format!("WG_QUICK_USERSPACE_IMPLEMENTATION={}", wrapper.display()),
        "wg-quick",
        "up",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "wg-quick up failed:\n{out}");
    assert!(
        out.contains("gatehouse-wg"),
        "used the userspace implementation:\n{out}"
    );
    lab.wait_ping(&c1, GW_TUNNEL);
    assert!(lab.http_get(&c1, "http://10.77.0.1/healthz").is_some());
    let shown = lab.exec(&c1, &["wg", "show", &cif]);
    assert!(shown.contains("latest handshake"), "{shown}");
    let (ok, out) = try_run(&[
        "ip",
        "netns",
        "exec",
        &c1,
        "wg-quick",
        "down",
        path.to_str().unwrap(),
    ]);
    assert!(ok, "wg-quick down failed:\n{out}");
    // The daemon leaves with its interface: the socket goes away.
    let sock = std::path::Path::new(UAPI_DIR).join(format!("{cif}.sock"));
    wait_for("gatehouse wg to exit", Duration::from_secs(10), || {
        (!sock.exists()).then_some(())
    });
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let out = run(&[
        "date",
        "-u",
        "-d",
        &format!("@{secs}"),
        "+%Y-%m-%dT%H:%M:%SZ",
    ]);
    out.trim().to_owned()
}
