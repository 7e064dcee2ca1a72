//! The console's API additions end to end over real HTTP on 127.0.0.1: a hub bound on
//! port 0 with a temporary data directory (the tunnel's peer store in it, no tunnel
//! running) and three admins (admin, operator, installer). Cards are presented the way a
//! gate presents them (`POST /api/v1/access/check` with the gate's key); events come in
//! through the webhook with a source's key.
//! What is asserted: the status' shape, peers added / disabled / enabled / removed with
//! their config and QR code, holidays, CSV exports (header, rows, neutralised formulas,
//! truncation), resolving an event, learn mode, and who may do what.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use std::time::Duration;

mod support;

use support::{Reply, Session, Setup, Site, ADMINS, ALICE_PW, IVAN_PW, OSCAR_PW};

/// How long a test waits for the hub's background work before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

impl Site {
    /// A hub with one admin of each role and the tunnel's files in its data directory
    /// (no tunnel runs).
    async fn start() -> Site {
        Setup::new()
            .with_admins(&ADMINS)
            .with_config(|c| {
                let dir = c.general.data_dir.clone();
                c.tunnel.peers_file = dir.join("wg0.conf");
                c.tunnel.private_key_file = dir.join("wg0.key");
                c.tunnel.uapi_dir = dir.join("run");
                c.tunnel.public_endpoint = "gate.example.net:51820".into();
            })
            .start()
            .await
    }

    /// What the tunnel's first start leaves in the data directory: the gateway's key file
    /// and the peer store with its public key. The hub never makes them.
    fn tunnel_ran_once(&self) {
        let mut config = support::config(self.dir.path());
        config.tunnel.peers_file = self.dir.path().join("wg0.conf");
        config.tunnel.private_key_file = self.dir.path().join("wg0.key");
        gatehouse_tunnel::service::prepare_gateway(&config, None).unwrap();
    }

    async fn get(&self, who: &Session, path: &str) -> Reply {
        self.send(Some(&who.token), "GET", path, None).await
    }

    async fn post(&self, who: &Session, path: &str, body: Value) -> Reply {
        self.send(Some(&who.token), "POST", path, Some(body)).await
    }

    /// A gate presents `acc_id` (hex): whether it was allowed.
    async fn present(&self, gate: i64, secret: &str, acc_id: &str) -> bool {
        let r = self
            .client
            .post(self.url("/api/v1/access/check"))
            .bearer_auth(secret)
            .json(&json!({"gate_id": gate, "acc_id": acc_id}))
            .send()
            .await
            .unwrap();
        let r = Reply::of(r).await;
        assert_eq!(r.status, 200, "{r:?}");
        r.json["allow"].as_bool().unwrap()
    }
}

/// Adds a gate; its id and secret.
async fn add_gate(site: &Site, token: &Session, name: &str) -> (i64, String) {
    let r = site
        .post(token, "/api/v1/gates", json!({"name": name}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    (
        r.json["id"].as_i64().unwrap(),
        r.json["provisioning"]["secret"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_has_every_part_and_every_role_may_read_it() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let ivan = site.login("ivan", IVAN_PW).await;
    let (gate, secret) = add_gate(&site, &alice, "front").await;
    add_gate(&site, &alice, "back").await;
    // The front gate is seen (it presents a card); the back gate never was.
    assert!(!site.present(gate, &secret, "0a0b0c0d").await);

    for who in [&alice, &oscar, &ivan] {
        let r = site.get(who, "/api/v1/status").await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    // `last_seen` is written by the access service's refresher, a moment later.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let r = loop {
        let r = site.get(&oscar, "/api/v1/status").await;
        let seen = r.json["gates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "front" && g["online"] == true);
        if seen {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "front never online: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let s = &r.json;
    let gates = s["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 2, "{s}");
    let front = gates.iter().find(|g| g["name"] == "front").unwrap();
    let back = gates.iter().find(|g| g["name"] == "back").unwrap();
    assert_eq!(front["zone"], "main");
    assert_eq!(front["enabled"], true);
    assert_eq!(front["online"], true, "{s}");
    assert!(front["last_seen"].is_string(), "{s}");
    assert_eq!(back["online"], false);
    assert_eq!(back["last_seen"], Value::Null);

    // No peer store yet and no tunnel: peers unavailable with the reason, not a failure.
    assert_eq!(s["peers"]["available"], false, "{s}");
    assert!(
        s["peers"]["error"].as_str().unwrap().contains("wg0.conf"),
        "{s}"
    );
    assert_eq!(s["peers"]["items"], json!([]));

    let services: Vec<(&str, bool, &str)> = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["ok"].as_bool().unwrap(),
                v["detail"].as_str().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = services.iter().map(|s| s.0).collect();
    assert_eq!(
        names,
        ["hub", "database", "mqtt", "tunnel", "alert_delivery"],
        "{s}"
    );
    let find = |n: &str| *services.iter().find(|s| s.0 == n).unwrap();
    assert!(find("hub").1 && find("database").1);
    assert!(find("mqtt").1 && find("mqtt").2.contains("off"), "{s}");
    assert!(!find("tunnel").1, "{s}");
    assert!(find("tunnel").2.contains("UAPI"), "{s}");
    assert_eq!(
        find("alert_delivery"),
        ("alert_delivery", true, "0 pending, 0 dead (gave up)")
    );
    // No sensors yet (tests/sensors_api.rs covers the block with sensors).
    assert_eq!(s["sensors"]["available"], true, "{s}");
    assert_eq!(s["sensors"]["total"], 0, "{s}");
    assert_eq!(s["events"]["pending_deliveries"], 0);
    assert!(s["events"]["unacknowledged"].as_u64().is_some(), "{s}");

    // Once a peer exists, the installer's status lists it (no tunnel: no live figures).
    site.tunnel_ran_once();
    let r = site
        .post(
            &ivan,
            "/api/v1/peers",
            json!({"name": "laptop", "role": "installer"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = site.get(&ivan, "/api/v1/status").await;
    assert_eq!(r.json["peers"]["available"], true, "{r:?}");
    assert_eq!(r.json["peers"]["error"], Value::Null);
    assert_eq!(r.json["peers"]["items"][0]["name"], "laptop");

    let r = site.send(None, "GET", "/api/v1/status", None).await;
    assert_eq!(r.status, 401, "{r:?}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_added_with_config_and_qr_then_disabled_enabled_removed() {
    let mut site = Site::start().await;
    site.tunnel_ran_once();
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let ivan = site.login("ivan", IVAN_PW).await;

    // Roles: the operator may neither list nor add peers; the installer may.
    let r = site.get(&oscar, "/api/v1/peers").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.error().contains("may not list VPN peers"), "{r:?}");
    let r = site
        .post(
            &oscar,
            "/api/v1/peers",
            json!({"name": "x", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.error().contains("operator role may not"), "{r:?}");

    let r = site
        .post(
            &ivan,
            "/api/v1/peers",
            json!({"name": "alice-laptop", "role": "admin", "expires": "2099-12-31"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let config = r.json["config"].as_str().unwrap();
    let address = r.json["peer"]["addresses"][0].as_str().unwrap();
    assert_eq!(address, "10.77.0.2/32", "{r:?}");
    assert!(config.contains(&format!("Address = {address}")), "{config}");
    assert!(config.contains("PrivateKey = "), "{config}");
    assert!(
        config.contains("Endpoint = gate.example.net:51820"),
        "{config}"
    );
    assert!(
        r.json["qr_svg"].as_str().unwrap().starts_with("<svg"),
        "{r:?}"
    );
    assert_eq!(r.json["filename"], "alice-laptop.conf");
    assert_eq!(r.json["private_key_included"], true);
    assert_eq!(r.json["applied"], "stored");
    let peer = &r.json["peer"];
    assert_eq!(peer["name"], "alice-laptop");
    assert_eq!(peer["role"], "admin");
    assert_eq!(peer["state"], "active");
    assert!(
        peer["expires"].as_str().unwrap().starts_with("2099-12-31"),
        "{peer}"
    );
    assert_eq!(peer["last_handshake"], Value::Null);
    assert_eq!(
        (peer["rx_bytes"].as_u64(), peer["tx_bytes"].as_u64()),
        (Some(0), Some(0))
    );

    // A peer with its own key: the config asks for the private key.
    let r = site
        .post(
            &alice,
            "/api/v1/peers",
            json!({"name": "phone", "role": "installer",
                   "public_key": "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(!r.json["config"].as_str().unwrap().contains("PrivateKey = "));
    assert_eq!(r.json["private_key_included"], false);
    assert_eq!(r.json["peer"]["addresses"][0], "10.77.0.3/32");

    // Refusals: taken name, taken key, bad fields.
    let r = site
        .post(
            &alice,
            "/api/v1/peers",
            json!({"name": "phone", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.error().contains("exists already"), "{r:?}");
    let r = site
        .post(
            &alice,
            "/api/v1/peers",
            json!({"name": "phone2", "role": "admin",
                   "public_key": "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="}),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    for (body, needle) in [
        (json!({"name": "p", "role": "operator"}), "`role` must be"),
        (
            json!({"name": "p", "role": "admin", "expires": "soon"}),
            "`expires`:",
        ),
        (
            json!({"name": "p", "role": "admin", "public_key": "nope"}),
            "`public_key`:",
        ),
        (json!({"name": "bad name!", "role": "admin"}), "name"),
        (json!({"role": "admin"}), "`name` is required"),
        (
            json!({"name": "p", "role": "admin", "colour": "red"}),
            "unknown field `colour`",
        ),
    ] {
        let r = site.post(&alice, "/api/v1/peers", body.clone()).await;
        assert_eq!(r.status, 400, "{body} -> {r:?}");
        assert!(r.error().contains(needle), "{body} -> {r:?}");
    }

    let r = site.get(&ivan, "/api/v1/peers").await;
    assert_eq!(r.status, 200, "{r:?}");
    let names: Vec<&str> = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice-laptop", "phone"]);

    let r = site
        .post(&ivan, "/api/v1/peers/phone/disable", json!({}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["peer"]["state"], "disabled");
    let r = site.get(&alice, "/api/v1/peers").await;
    assert_eq!(r.json[1]["state"], "disabled", "{r:?}");
    let r = site
        .post(&alice, "/api/v1/peers/phone/enable", json!({}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["peer"]["state"], "active");
    let r = site
        .post(&oscar, "/api/v1/peers/phone/disable", json!({}))
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = site
        .post(&alice, "/api/v1/peers/nobody/disable", json!({}))
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.error().contains("no VPN peer named \"nobody\""), "{r:?}");

    let r = site
        .send(Some(&oscar.token), "DELETE", "/api/v1/peers/phone", None)
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = site
        .send(Some(&ivan.token), "DELETE", "/api/v1/peers/phone", None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json,
        json!({"name": "phone", "removed": true, "applied": "stored"})
    );
    let r = site
        .send(Some(&ivan.token), "DELETE", "/api/v1/peers/phone", None)
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = site.get(&alice, "/api/v1/peers").await;
    assert_eq!(r.json.as_array().unwrap().len(), 1, "{r:?}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holidays_are_added_listed_and_removed() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;

    let r = site
        .post(
            &alice,
            "/api/v1/holidays",
            json!({"date": "2026-12-25", "name": "Christmas"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json, json!({"date": "2026-12-25", "name": "Christmas"}));
    let r = site
        .post(
            &alice,
            "/api/v1/holidays",
            json!({"date": "2026-01-01", "name": "New Year"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = site.get(&alice, "/api/v1/holidays").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json,
        json!([{"date": "2026-01-01", "name": "New Year"}, {"date": "2026-12-25", "name": "Christmas"}])
    );

    // Refusals.
    let r = site
        .post(
            &alice,
            "/api/v1/holidays",
            json!({"date": "2026-12-25", "name": "again"}),
        )
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert!(r.error().contains("2026-12-25"), "{r:?}");
    for (body, needle) in [
        (
            json!({"date": "25/12/2026", "name": "x"}),
            "`date` must be a date like",
        ),
        (json!({"date": "2026-02-30", "name": "x"}), "`date` must be"),
        (
            json!({"date": "2026-05-01", "name": "  "}),
            "`name` must not be empty",
        ),
        (json!({"name": "x"}), "`date` is required"),
    ] {
        let r = site.post(&alice, "/api/v1/holidays", body.clone()).await;
        assert_eq!(r.status, 400, "{body} -> {r:?}");
        assert!(r.error().contains(needle), "{body} -> {r:?}");
    }
    // The operator may not read levels or holidays.
    let r = site.get(&oscar, "/api/v1/holidays").await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = site
        .post(
            &oscar,
            "/api/v1/holidays",
            json!({"date": "2026-05-01", "name": "May Day"}),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");

    let r = site
        .send(
            Some(&alice.token),
            "DELETE",
            "/api/v1/holidays/2026-12-25",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json, json!({"date": "2026-12-25", "removed": true}));
    let r = site
        .send(
            Some(&alice.token),
            "DELETE",
            "/api/v1/holidays/2026-12-25",
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = site
        .send(Some(&alice.token), "DELETE", "/api/v1/holidays/xmas", None)
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = site.get(&alice, "/api/v1/holidays").await;
    assert_eq!(r.json, json!([{"date": "2026-01-01", "name": "New Year"}]));
    site.stop().await;
}

/// Parses our CSV (RFC 4180 with CRLF) into rows of cells.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    assert!(row.is_empty() && cell.is_empty(), "no final CRLF: {text:?}");
    rows
}

/// Sets up an NVR source; its API key.
async fn nvr(site: &Site, token: &Session) -> String {
    let r = site
        .post(token, "/api/v1/sources", json!({"name": "nvr-yard"}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json["api_key"].as_str().unwrap().to_owned()
}

async fn send_event(site: &Site, key: &str, event: Value) -> String {
    let r = site
        .send(Some(key), "POST", "/api/v1/events", Some(event))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_exports_of_events_and_the_access_log() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let ivan = site.login("ivan", IVAN_PW).await;
    let key = nvr(&site, &alice).await;
    let first = send_event(
        &site,
        &key,
        json!({"kind": "intrusion", "severity": "critical", "zone": "fence",
               "message": "=HYPERLINK(\"http://evil\",\"click\")"}),
    )
    .await;
    let second = send_event(
        &site,
        &key,
        json!({"kind": "person", "severity": "info", "camera": "yard, east", "message": "@SUM(1)"}),
    )
    .await;

    let r = site.get(&alice, "/api/v1/events.csv?source=nvr-yard").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let disposition = r.header("content-disposition").unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"events-"),
        "{disposition}"
    );
    assert_eq!(r.header("x-truncated"), None);
    let rows = parse_csv(&r.text);
    assert_eq!(rows.len(), 3, "{}", r.text);
    let header = &rows[0];
    assert_eq!(&header[..3], ["id", "seq", "received_at"]);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    // Newest first, as the JSON list.
    assert_eq!(rows[1][col("id")], second);
    assert_eq!(rows[2][col("id")], first);
    assert_eq!(
        rows[2][col("message")],
        "'=HYPERLINK(\"http://evil\",\"click\")"
    );
    assert_eq!(rows[1][col("message")], "'@SUM(1)");
    assert_eq!(rows[1][col("camera")], "yard, east");
    assert_eq!(rows[2][col("severity")], "critical");
    assert_eq!(rows[2][col("acked_by")], "");

    // The JSON list's filters, parsed by the same code.
    let r = site
        .get(
            &alice,
            "/api/v1/events.csv?severity=critical&source=nvr-yard",
        )
        .await;
    let rows = parse_csv(&r.text);
    assert_eq!(rows.len(), 2, "{}", r.text);
    assert_eq!(rows[1][col("id")], first);
    let r = site.get(&alice, "/api/v1/events.csv?severity=loud").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("`severity` must be"), "{r:?}");
    let r = site.get(&alice, "/api/v1/events.csv?colour=red").await;
    assert_eq!(r.status, 400, "{r:?}");
    // More rows match than asked for: the file says so and where to go on.
    let r = site.get(&alice, "/api/v1/events.csv?limit=1").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-truncated"), Some("true"));
    let rows = parse_csv(&r.text);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        r.header("x-next-before"),
        Some(rows[1][col("seq")].as_str())
    );
    let r = site.get(&alice, "/api/v1/events.csv?limit=0").await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = site.get(&ivan, "/api/v1/events.csv").await;
    assert_eq!(r.status, 403, "{r:?}");

    // The access log: a denied unknown card and a granted one.
    let (gate, secret) = add_gate(&site, &alice, "front").await;
    let r = site
        .post(&alice, "/api/v1/people", json!({"name": "-carol"}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = site
        .post(
            &alice,
            "/api/v1/levels",
            json!({"name": "staff", "gates": ["front"], "schedule": "always"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let level = r.json["id"].as_i64().unwrap();
    let r = site
        .post(
            &alice,
            &format!("/api/v1/levels/{level}/grant"),
            json!({"person": "-carol"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = site
        .post(
            &alice,
            "/api/v1/cards",
            json!({"acc_id": "0x01020304", "person": "-carol"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(!site.present(gate, &secret, "0a0b0c0d").await);
    assert!(site.present(gate, &secret, "01020304").await);

    let r = site.get(&alice, "/api/v1/access/log.csv").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment; filename=\"access-log-"));
    let rows = parse_csv(&r.text);
    assert_eq!(
        rows[0],
        [
            "id",
            "at",
            "gate",
            "gate_name",
            "person",
            "person_name",
            "card",
            "allowed",
            "reason",
            "source",
            "gate_seq"
        ]
    );
    assert_eq!(rows.len(), 3, "{}", r.text);
    assert_eq!(rows[1][3], "front");
    assert_eq!(
        (rows[1][7].as_str(), rows[1][8].as_str()),
        ("false", "unknown_card")
    );
    assert_eq!(rows[1][5], "");
    assert_eq!(
        (rows[2][7].as_str(), rows[2][8].as_str()),
        ("true", "granted")
    );
    // A name starting with '-' is neutralised too.
    assert_eq!(rows[2][5], "'-carol");
    // No card hash or raw id in the export.
    assert!(!r.text.contains("01020304") && !r.text.contains("0a0b0c0d"));
    let r = site
        .get(&alice, "/api/v1/access/log.csv?person=-carol")
        .await;
    assert_eq!(parse_csv(&r.text).len(), 2, "{}", r.text);
    let r = site.get(&alice, "/api/v1/access/log.csv?limit=1").await;
    assert_eq!(r.header("x-truncated"), Some("true"));
    let rows = parse_csv(&r.text);
    assert_eq!(rows.len(), 2);
    assert_eq!(r.header("x-next-after"), Some(rows[1][0].as_str()));
    let r = site
        .get(&alice, "/api/v1/access/log.csv?gate=nowhere")
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = site.get(&ivan, "/api/v1/access/log.csv").await;
    assert_eq!(r.status, 403, "{r:?}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_resolves_an_active_event() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let ivan = site.login("ivan", IVAN_PW).await;
    let key = nvr(&site, &alice).await;
    let id = send_event(
        &site,
        &key,
        json!({"kind": "person", "severity": "warning", "id": "f-1",
               "state": "active"}),
    )
    .await;
    let r = site.get(&alice, "/api/v1/status").await;
    let unacked = r.json["events"]["unacknowledged"].as_u64().unwrap();
    assert!(unacked >= 1, "{r:?}");

    let path = format!("/api/v1/events/{id}/resolve");
    let r = site.post(&ivan, &path, json!({})).await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = site
        .post(&oscar, &path, json!({"comment": "checked on camera"}))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["resolved"], true);
    assert_eq!(
        (r.json["ended_now"].as_bool(), r.json["acked_now"].as_bool()),
        (Some(true), Some(true))
    );
    let e = &r.json["event"];
    assert_eq!(e["lifecycle"], "ended");
    assert!(e["ended_at"].is_string(), "{e}");
    assert_eq!(e["ack"]["by"], "oscar");
    assert_eq!(e["ack"]["comment"], "checked on camera");

    // Again (an empty body is fine): nothing changes.
    let r = site.send(Some(&alice.token), "POST", &path, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (r.json["ended_now"].as_bool(), r.json["acked_now"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(r.json["event"]["ack"]["by"], "oscar");
    let r = site.get(&alice, &format!("/api/v1/events/{id}")).await;
    assert_eq!(r.json["lifecycle"], "ended", "{r:?}");
    let r = site.get(&alice, "/api/v1/status").await;
    assert_eq!(
        r.json["events"]["unacknowledged"].as_u64().unwrap(),
        unacked - 1
    );

    let r = site
        .post(
            &alice,
            "/api/v1/events/01ARZ3NDEKTSV4RRFFQ69G5FAV/resolve",
            json!({}),
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = site
        .post(&alice, "/api/v1/events/nope/resolve", json!({}))
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = site.post(&alice, &path, json!({"why": "x"})).await;
    assert_eq!(r.status, 400, "{r:?}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_mode_enrols_the_next_unknown_card() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let (gate, secret) = add_gate(&site, &alice, "front").await;
    let (other_gate, other_secret) = add_gate(&site, &alice, "back").await;
    let r = site
        .post(&alice, "/api/v1/people", json!({"name": "dave"}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let dave = r.json["id"].as_i64().unwrap();
    let r = site
        .post(
            &alice,
            "/api/v1/levels",
            json!({"name": "staff", "gates": ["front", "back"], "schedule": "always"}),
        )
        .await;
    let level = r.json["id"].as_i64().unwrap();
    let r = site
        .post(
            &alice,
            &format!("/api/v1/levels/{level}/grant"),
            json!({"person": dave}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    // Nobody presents a card: 408 saying what to do.
    let r = site
        .post(
            &alice,
            "/api/v1/cards/learn",
            json!({"gate": "front", "person": "dave", "wait_s": 1}),
        )
        .await;
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(
        r.error(),
        "no unknown card was presented at gate front within 1 s; present the card, then try again"
    );

    // Refusals before waiting.
    let r = site
        .post(
            &oscar,
            "/api/v1/cards/learn",
            json!({"gate": "front", "person": "dave"}),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    for (body, status, needle) in [
        (
            json!({"gate": "front", "person": "dave", "wait_s": 0}),
            400,
            "`wait_s` must be",
        ),
        (
            json!({"gate": "front", "person": "dave", "wait_s": 121}),
            400,
            "`wait_s` must be",
        ),
        (json!({"person": "dave"}), 400, "`gate` is required"),
        (json!({"gate": "nowhere", "person": "dave"}), 404, "nowhere"),
        (json!({"gate": "front", "person": "nobody"}), 404, "nobody"),
    ] {
        let r = site.post(&alice, "/api/v1/cards/learn", body.clone()).await;
        assert_eq!(r.status, status, "{body} -> {r:?}");
        assert!(r.error().contains(needle), "{body} -> {r:?}");
    }

    // Learn at the front gate; the card is presented (again and again, until learn mode
    // answers: the first presentation may come before it started looking) at the front
    // gate, while another unknown card at the back gate must not be taken.
    let token = alice.clone();
    let http = site.client.clone();
    let url = site.url("/api/v1/cards/learn");
    let learn = tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(token.token)
            .json(&json!({"gate": gate, "person": "dave", "label": "blue fob", "wait_s": 60}))
            .send()
            .await
            .unwrap();
        Reply::of(r).await
    });
    assert!(!site.present(other_gate, &other_secret, "bbbbbbbb").await);
    while !learn.is_finished() {
        site.present(gate, &secret, "c0ffee01").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = learn.await.unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json["person"], dave);
    assert_eq!(r.json["person_name"], "dave");
    assert_eq!(r.json["label"], "blue fob");
    assert_eq!(r.json["enabled"], true);
    assert!(!r.text.contains("c0ffee01"));

    // The card now opens the doors; the one at the back gate is still unknown.
    assert!(site.present(gate, &secret, "c0ffee01").await);
    assert!(site.present(other_gate, &other_secret, "c0ffee01").await);
    assert!(!site.present(other_gate, &other_secret, "bbbbbbbb").await);
    let r = site.get(&alice, "/api/v1/cards").await;
    assert_eq!(r.json.as_array().unwrap().len(), 1, "{r:?}");
    site.stop().await;
}
