//! The sensor registry in the admin API over real HTTP on 127.0.0.1, with one admin of
//! each role: who may list and change sensors, the key shown once (in the answer to the
//! add, with the provisioning TOML) and never after, bad input named, disable / enable /
//! remove by id or name, and the `sensors` block of `GET /api/v1/status`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

mod support;

use support::{Reply, Session, Setup, Site, ADMINS, ALICE_PW, IVAN_PW, OSCAR_PW};

async fn get(site: &Site, who: &Session, path: &str) -> Reply {
    site.send(Some(&who.token), "GET", path, None).await
}

async fn post(site: &Site, who: &Session, path: &str, body: Value) -> Reply {
    site.send(Some(&who.token), "POST", path, Some(body)).await
}

#[tokio::test]
async fn sensors_are_added_with_their_key_shown_once() {
    let site = Setup::new().with_admins(&ADMINS).start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let ivan = site.login("ivan", IVAN_PW).await;

    // The installer adds a sensor: the answer carries the provisioning, this once.
    let r = post(
        &site,
        &ivan,
        "/api/v1/sensors",
        json!({"name": "front-door", "kind": "door", "heartbeat": "2m"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let p = &r.json["provisioning"];
    let key = p["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    let dev_addr = r.json["dev_addr"].as_str().unwrap().to_owned();
    assert_eq!(p["dev_addr"], dev_addr.as_str());
    assert_eq!(
        (&p["name"], &p["kind"], &p["heartbeat_s"]),
        (&json!("front-door"), &json!("door"), &json!(120))
    );
    assert_eq!(
        (
            &p["frequency_hz"],
            &p["spreading_factor"],
            &p["bandwidth_hz"]
        ),
        (&json!(868_100_000), &json!(7), &json!(125_000))
    );
    let toml = p["toml"].as_str().unwrap();
    assert!(toml.starts_with("[[sensor]]\n"), "{toml}");
    assert!(toml.contains(&format!("key = \"{key}\"")), "{toml}");
    assert!(
        toml.contains(&format!("dev_addr = \"{dev_addr}\"")),
        "{toml}"
    );
    let id = r.json["id"].as_i64().unwrap();

    // The admin adds another with the default heartbeat.
    let r = post(
        &site,
        &alice,
        "/api/v1/sensors",
        json!({"name": "hall-pir", "kind": "pir"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json["heartbeat_s"], 300);

    // Every role reads the list; the key is never in it.
    for who in [&alice, &oscar, &ivan] {
        let r = get(&site, who, "/api/v1/sensors").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(!r.text.contains(&key), "the key is listed: {}", r.text);
        let names: Vec<&str> = r
            .json
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["front-door", "hall-pir"]);
    }
    let listed = &get(&site, &oscar, "/api/v1/sensors").await.json[0];
    assert_eq!(
        (
            &listed["enabled"],
            &listed["missing"],
            &listed["last_seen"],
            &listed["kind"]
        ),
        (&json!(true), &json!(false), &Value::Null, &json!("door"))
    );
    assert!(listed.get("provisioning").is_none() && listed.get("key").is_none());

    // The operator may not change sensors.
    post(
        &site,
        &oscar,
        "/api/v1/sensors",
        json!({"name": "x", "kind": "door"}),
    )
    .await
    .refused(403, &["sensors"]);
    post(
        &site,
        &oscar,
        "/api/v1/sensors/front-door/disable",
        json!({}),
    )
    .await
    .refused(403, &[]);
    site.send(
        Some(&oscar.token),
        "DELETE",
        "/api/v1/sensors/front-door",
        None,
    )
    .await
    .refused(403, &[]);

    // Bad input says what was wrong.
    post(
        &site,
        &ivan,
        "/api/v1/sensors",
        json!({"name": "front-door", "kind": "door"}),
    )
    .await
    .refused(409, &["front-door", "taken"]);
    post(
        &site,
        &ivan,
        "/api/v1/sensors",
        json!({"name": "garage", "kind": "garage"}),
    )
    .await
    .refused(400, &["kind", "door, pir, smoke, temp"]);
    post(
        &site,
        &ivan,
        "/api/v1/sensors",
        json!({"name": "garage", "kind": "door", "heartbeat": "5 days"}),
    )
    .await
    .refused(400, &["heartbeat", "5m"]);
    post(
        &site,
        &ivan,
        "/api/v1/sensors",
        json!({"name": "garage", "kind": "door", "heartbeat": 0}),
    )
    .await
    .refused(400, &["heartbeat"]);
    post(
        &site,
        &ivan,
        "/api/v1/sensors",
        json!({"name": "two words", "kind": "door"}),
    )
    .await
    .refused(400, &["sensor name"]);
    post(
        &site,
        &ivan,
        "/api/v1/sensors",
        json!({"name": "garage", "kind": "door", "colour": "red"}),
    )
    .await
    .refused(400, &["colour"]);

    // Disable and enable by name, remove by id.
    let r = post(
        &site,
        &ivan,
        "/api/v1/sensors/front-door/disable",
        json!({}),
    )
    .await;
    assert_eq!(
        (r.status, &r.json["enabled"]),
        (200, &json!(false)),
        "{r:?}"
    );
    assert!(!site.store().sensor(id).unwrap().enabled);
    let r = post(
        &site,
        &alice,
        &format!("/api/v1/sensors/{id}/enable"),
        json!({}),
    )
    .await;
    assert_eq!((r.status, &r.json["enabled"]), (200, &json!(true)), "{r:?}");
    post(&site, &ivan, "/api/v1/sensors/nope/enable", json!({}))
        .await
        .refused(404, &["sensor", "nope"]);

    // The status block counts them.
    let s = get(&site, &oscar, "/api/v1/status").await;
    assert_eq!(s.status, 200, "{s:?}");
    let block = &s.json["sensors"];
    assert_eq!(
        (
            &block["available"],
            &block["total"],
            &block["enabled"],
            &block["missing"]
        ),
        (&json!(true), &json!(2), &json!(2), &json!(0)),
        "{block}"
    );
    let item = &block["items"][0];
    assert_eq!(
        (
            &item["name"],
            &item["kind"],
            &item["last_seen"],
            &item["battery_mv"],
            &item["missing"]
        ),
        (
            &json!("front-door"),
            &json!("door"),
            &Value::Null,
            &Value::Null,
            &json!(false)
        )
    );

    let r = site
        .send(
            Some(&ivan.token),
            "DELETE",
            &format!("/api/v1/sensors/{id}"),
            None,
        )
        .await;
    assert_eq!((r.status, &r.json["removed"]), (200, &json!(true)), "{r:?}");
    let r = get(&site, &alice, "/api/v1/sensors").await;
    assert_eq!(r.json.as_array().unwrap().len(), 1);
    site.send(
        Some(&ivan.token),
        "DELETE",
        &format!("/api/v1/sensors/{id}"),
        None,
    )
    .await
    .refused(404, &["sensor"]);
}

#[tokio::test]
async fn the_status_block_shows_what_sensors_last_said() {
    use gatehouse_store::sensors::{Heard, HeartbeatInfo, NewSensor, SensorKind, Uplink};
    let site = Setup::new().with_admins(&ADMINS).start().await;
    let store = site.store();
    let now = time::OffsetDateTime::now_utc();
    let c = store
        .add_sensor(
            &NewSensor {
                name: "smoke-1".into(),
                kind: SensorKind::Smoke,
                heartbeat_s: 60,
            },
            now,
        )
        .unwrap();
    store
        .record_uplink(&Uplink {
            sensor: c.id,
            fcnt: 1,
            at: now,
            rssi: Some(-80),
            snr: Some(9.0),
            heard: Heard::Heartbeat(HeartbeatInfo {
                battery_mv: 2300,
                flags: 0,
                reboots: 0,
                down_rssi: 0,
                down_snr: 0,
            }),
            downlink: false,
        })
        .unwrap();
    store.set_sensor_missing(c.id, None, Some(now)).unwrap();
    let oscar = site.login("oscar", OSCAR_PW).await;
    let s = get(&site, &oscar, "/api/v1/status").await;
    let block = &s.json["sensors"];
    assert_eq!(
        (&block["total"], &block["missing"], &block["low_battery"]),
        (&json!(1), &json!(1), &json!(1)),
        "{block}"
    );
    let item = &block["items"][0];
    assert_eq!(
        (&item["battery_mv"], &item["missing"], &item["low_battery"]),
        (&json!(2300), &json!(true), &json!(true))
    );
    assert!(item["last_seen"].is_string(), "{item}");
}
