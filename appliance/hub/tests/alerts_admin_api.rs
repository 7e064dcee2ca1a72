//! The admin API's events-and-alerts routes end to end over real HTTP on 127.0.0.1: a hub
//! bound on port 0 with a temporary data directory and three admins (admin, operator,
//! installer). Events come in the way a source sends them (the webhook, with the key the
//! API handed out); receiver tests go to the dev peers (`WebhookReceiver`, `SmtpSink`).
//! What is asserted: who may do what, CSRF on cookie sessions, refusals naming the field,
//! secrets never in a reply but the new API key once, and the outcomes in the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_alerts::model::ReceiverConfig;
use gatehouse_store::events::EventFilter;
use gatehouse_testpeers::{Faults, SmtpSink, WebhookReceiver};
use serde_json::{json, Value};
use std::time::Duration;

mod support;

use support::{
    call, next_ip, raw, Auth, Reply, Session, Setup, Site, ADMINS, ALICE_PW, IVAN_PW, OSCAR_PW,
};

/// How long a test waits for the hub's delivery workers before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

impl Site {
    /// A hub with one admin of each role, the admin API on a manual clock.
    async fn start() -> Site {
        Setup::new()
            .with_admins(&ADMINS)
            .with_config(|c| c.hub.alerts.request_timeout_ms = 5_000)
            .manual_clock()
            .start()
            .await
    }
}

async fn get(site: &Site, who: &Session, path: &str) -> Reply {
    call(site, Auth::Bearer(who), "GET", path, None).await
}

async fn post(site: &Site, who: &Session, path: &str, body: Value) -> Reply {
    call(site, Auth::Bearer(who), "POST", path, Some(body)).await
}

async fn patch(site: &Site, who: &Session, path: &str, body: Value) -> Reply {
    call(site, Auth::Bearer(who), "PATCH", path, Some(body)).await
}

async fn delete(site: &Site, who: &Session, path: &str) -> Reply {
    call(site, Auth::Bearer(who), "DELETE", path, None).await
}

/// Sends one event to the webhook with a source's key.
async fn send_event(site: &Site, key: &str, event: Value) -> Reply {
    raw(
        site.addr(),
        next_ip(),
        "POST",
        "/api/v1/events",
        &[("Authorization", format!("Bearer {key}"))],
        event.to_string().as_bytes(),
    )
    .await
}

/// Polls `GET path` until `done` holds for the reply.
async fn eventually(
    site: &Site,
    who: &Session,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = get(site, who, path).await;
        assert_eq!(r.status, 200, "{r:?}");
        if done(&r.json) {
            return r.json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting on {path}: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_hand_out_their_key_once_and_installers_manage_them() {
    let mut site = Site::start().await;
    let ivan = site.login("ivan", IVAN_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;

    // The installer adds an NVR; the answer has its key and how to use it.
    let r = post(
        &site,
        &ivan,
        "/api/v1/sources",
        json!({"name": "nvr-yard", "mqtt_prefix": "frigate", "base_url": "http://10.0.0.5:5000"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let key = r.json["api_key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 43, "{r:?}");
    let id = r.json["id"].as_i64().unwrap();
    assert_eq!(r.json["kind"], "nvr");
    assert_eq!(
        r.json["webhook"]["url"],
        format!("http://{}/api/v1/events", site.addr())
    );
    assert_eq!(
        r.json["webhook"]["header"],
        format!("Authorization: Bearer {key}")
    );
    assert!(r.json["webhook"]["curl"].as_str().unwrap().contains(&key));
    assert_eq!(
        r.json["mqtt"]["topics"],
        json!(["frigate/events", "frigate/reviews"])
    );
    // MQTT is off on this hub: no broker to name; the NVR's account is still shown.
    assert_eq!(r.json["mqtt"]["broker"], Value::Null);
    assert_eq!(r.json["mqtt"]["username"], "nvr-nvr-yard");
    let mqtt_password = r.json["mqtt"]["password"].as_str().unwrap().to_owned();
    assert_eq!(mqtt_password.len(), 64, "{r:?}");

    // The key works on the webhook.
    let sent = send_event(
        &site,
        &key,
        json!({"kind": "intrusion", "severity": "critical", "zone": "fence"}),
    )
    .await;
    assert_eq!(sent.status, 201, "{sent:?}");

    // Listing never shows a key.
    let list = get(&site, &ivan, "/api/v1/sources").await;
    assert_eq!(list.status, 200, "{list:?}");
    let nvr = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "nvr-yard")
        .unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!((&nvr["id"], &nvr["enabled"]), (&json!(id), &json!(true)));
    assert!(!list.text.contains(&key), "{list:?}");
    assert!(!list.text.contains(&mqtt_password), "{list:?}");
    assert!(list.json[0].get("api_key").is_none());

    // Rotation: a new key, the old one stops working at once.
    let r = post(
        &site,
        &ivan,
        &format!("/api/v1/sources/{id}/rotate-key"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let new_key = r.json["api_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_ne!(r.json["mqtt"]["password"], json!(mqtt_password), "{r:?}");
    {
        let store = site.store();
        assert!(store.event_source_by_key(&key).unwrap().is_none());
        assert_eq!(store.event_source_by_key(&new_key).unwrap().unwrap().id, id);
    }
    let r = call(
        &site,
        Auth::Bearer(&ivan),
        "POST",
        &format!("/api/v1/sources/{id}/rotate-key"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "an empty body is fine: {r:?}");

    // Disable, then remove.
    let r = patch(
        &site,
        &ivan,
        &format!("/api/v1/sources/{id}"),
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(
        (r.status, &r.json["enabled"]),
        (200, &json!(false)),
        "{r:?}"
    );
    assert!(!site.store().event_source(id).unwrap().enabled);

    // Refusals name the field.
    for (body, status, want) in [
        (json!({"name": "bad name!"}), 400, "`name`"),
        (json!({"name": "system"}), 400, "reserved"),
        (json!({"name": "x", "kind": "camera"}), 400, "`kind`"),
        (
            json!({"name": "x", "kind": "sensor", "mqtt_prefix": "p"}),
            400,
            "`mqtt_prefix`",
        ),
        (
            json!({"name": "x", "mqtt_prefix": "a/#"}),
            400,
            "`mqtt_prefix`",
        ),
        (
            json!({"name": "x", "base_url": "ftp://nvr"}),
            400,
            "`base_url`",
        ),
        (
            json!({"name": "x", "mqtt_prefix": "frigate"}),
            400,
            "another NVR's prefix",
        ),
        (
            json!({"name": "x", "mqtt_prefix": "access"}),
            400,
            "the gate link's topics",
        ),
        (json!({"name": "nvr-yard"}), 409, "already taken"),
        (json!({"name": "x", "nmae": 1}), 400, "unknown field `nmae`"),
        (json!({}), 400, "`name` is required"),
    ] {
        post(&site, &ivan, "/api/v1/sources", body)
            .await
            .refused(status, &[want]);
    }
    patch(
        &site,
        &ivan,
        "/api/v1/sources/999",
        json!({"enabled": true}),
    )
    .await
    .refused(404, &["no such event source"]);
    patch(
        &site,
        &ivan,
        "/api/v1/sources/abc",
        json!({"enabled": true}),
    )
    .await
    .refused(400, &["source id"]);

    // The operator may not see sources; the installer may not read events.
    get(&site, &oscar, "/api/v1/sources")
        .await
        .refused(403, &["operator role may not list event sources"]);
    get(&site, &ivan, "/api/v1/events")
        .await
        .refused(403, &["installer role may not read events"]);
    get(&site, &ivan, "/api/v1/rules")
        .await
        .refused(403, &["installer"]);

    // The tunnel's own source (the hub registers it at start) may be switched off, not
    // removed or re-keyed.
    let tunnel = site.store().event_source_by_name("tunnel").unwrap();
    assert_eq!(tunnel.kind.as_str(), "tunnel");
    delete(&site, &ivan, &format!("/api/v1/sources/{}", tunnel.id))
        .await
        .refused(409, &["the box's own", "not removed"]);
    post(
        &site,
        &ivan,
        &format!("/api/v1/sources/{}/rotate-key", tunnel.id),
        json!({}),
    )
    .await
    .refused(409, &["not given a new key"]);

    let r = delete(&site, &ivan, &format!("/api/v1/sources/{id}")).await;
    assert_eq!((r.status, &r.json["removed"]), (200, &json!(true)), "{r:?}");
    assert!(site.store().event_source_by_name("nvr-yard").is_err());
    // Its event stays.
    let kept = site
        .store()
        .list_events(&EventFilter {
            source: Some("nvr-yard".into()),
            ..EventFilter::default()
        })
        .unwrap();
    assert_eq!(kept.len(), 1);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_never_show_their_secrets_and_patches_keep_them() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;

    let r = post(
        &site,
        &alice,
        "/api/v1/receivers",
        json!({"name": "ops-mail", "type": "email", "host": "smtp.example.net", "port": 587,
               "security": "starttls", "username": "gatehouse", "password": "smtp-s3cret",
               "from": "Gatehouse <gh@example.net>", "to": "ops@example.net, boss@example.net"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(!r.text.contains("smtp-s3cret"), "{r:?}");
    assert_eq!(r.json["password_set"], true);
    assert_eq!(r.json["to"], json!(["ops@example.net", "boss@example.net"]));
    let mail = r.json["id"].as_i64().unwrap();
    let r = post(
        &site,
        &alice,
        "/api/v1/receivers",
        json!({"name": "push", "type": "ntfy", "url": "https://ntfy.example.net/site-alerts-x7",
               "token": "tk_s3cret"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json["token_set"], true);
    assert!(!r.text.contains("tk_s3cret"));
    let r = post(
        &site,
        &alice,
        "/api/v1/receivers",
        json!({"name": "slack", "type": "webhook",
               "url": "https://hooks.slack.example/services/T0/B0/hooksecret", "enabled": false}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        (&r.json["format"], &r.json["enabled"]),
        (&json!("slack"), &json!(false))
    );
    let slack = r.json["id"].as_i64().unwrap();

    // Nobody reads a password or token back; only those who may change receivers see
    // webhook URLs whole.
    let all = get(&site, &alice, "/api/v1/receivers").await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(
        all.json.as_array().unwrap().len(),
        4,
        "console + 3: {all:?}"
    );
    assert!(all.text.contains("hooksecret"));
    let seen = get(&site, &oscar, "/api/v1/receivers").await;
    assert_eq!(seen.status, 200, "{seen:?}");
    for secret in ["smtp-s3cret", "tk_s3cret"] {
        assert!(!all.text.contains(secret), "{secret} in {all:?}");
    }
    for secret in ["smtp-s3cret", "tk_s3cret", "hooksecret", "site-alerts-x7"] {
        assert!(!seen.text.contains(secret), "{secret} in {seen:?}");
    }
    let one = get(&site, &oscar, &format!("/api/v1/receivers/{slack}")).await;
    assert_eq!(one.json["url"], "https://hooks.slack.example/…", "{one:?}");

    // A PATCH that leaves the password out keeps it; other settings merge.
    let r = patch(
        &site,
        &alice,
        &format!("/api/v1/receivers/{mail}"),
        json!({"to": ["night@example.net"], "port": 465, "security": "tls"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["password_set"], true);
    match site.store().receiver(mail).unwrap().config {
        ReceiverConfig::Email {
            password, to, port, ..
        } => {
            assert_eq!(password.as_deref(), Some("smtp-s3cret"));
            assert_eq!(to, vec!["night@example.net"]);
            assert_eq!(port, 465);
        }
        other => panic!("{other:?}"),
    }
    // Clearing the password alone breaks the username/password pair: refused, kept.
    patch(
        &site,
        &alice,
        &format!("/api/v1/receivers/{mail}"),
        json!({"password": null}),
    )
    .await
    .refused(400, &["`password`", "both"]);
    let r = patch(
        &site,
        &alice,
        &format!("/api/v1/receivers/{mail}"),
        json!({"password": null, "username": null, "enabled": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (&r.json["password_set"], &r.json["enabled"]),
        (&json!(false), &json!(false))
    );

    // Refusals name the field.
    for (body, status, want) in [
        (
            json!({"name": "w", "type": "webhook", "url": "ftp://x"}),
            400,
            "`url`",
        ),
        (
            json!({"name": "w", "type": "webhook", "url": "https://x", "format": "xml"}),
            400,
            "`format`",
        ),
        (json!({"name": "w", "type": "pager"}), 400, "`type` must be"),
        (json!({"name": "w"}), 400, "`type` is required"),
        (
            json!({"name": "w", "type": "email", "host": "h", "port": 25, "security": "none",
                "to": ["a@b.c"]}),
            400,
            "`from` is required",
        ),
        (
            json!({"name": "w", "type": "email", "host": "h", "port": 25, "security": "none",
                "from": "a@b.c", "to": ["not an address"]}),
            400,
            "`to`",
        ),
        (
            json!({"name": "w", "type": "email", "host": "h", "port": 25, "security": "ssl",
                "from": "a@b.c", "to": ["a@b.c"]}),
            400,
            "`security`",
        ),
        (
            json!({"name": "w", "type": "ntfy", "url": "https://n/t", "password": "x"}),
            400,
            "unknown field `password`",
        ),
        (json!({"name": "w", "type": "console"}), 409, "console"),
        (
            json!({"name": "slack", "type": "webhook", "url": "https://x"}),
            409,
            "already taken",
        ),
    ] {
        post(&site, &alice, "/api/v1/receivers", body)
            .await
            .refused(status, &[want]);
    }
    patch(
        &site,
        &alice,
        &format!("/api/v1/receivers/{slack}"),
        json!({"name": "x"}),
    )
    .await
    .refused(400, &["`name`", "cannot be renamed"]);
    patch(
        &site,
        &alice,
        "/api/v1/receivers/1",
        json!({"url": "https://x"}),
    )
    .await
    .refused(400, &["console"]);

    // The operator reads but does not change; CSRF guards cookie sessions.
    post(
        &site,
        &oscar,
        "/api/v1/receivers",
        json!({"name": "x", "type": "ntfy", "url": "https://n/t"}),
    )
    .await
    .refused(403, &["operator role may not change alert rules"]);
    let body = json!({"name": "c", "type": "ntfy", "url": "https://n/t"});
    call(
        &site,
        Auth::Cookie(&alice, false),
        "POST",
        "/api/v1/receivers",
        Some(body.clone()),
    )
    .await
    .refused(403, &["X-CSRF-Token"]);
    let r = call(
        &site,
        Auth::Cookie(&alice, true),
        "POST",
        "/api/v1/receivers",
        Some(body),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");

    // A receiver a rule sends to cannot be removed; otherwise it can.
    let r = post(
        &site,
        &alice,
        "/api/v1/rules",
        json!({"name": "to slack", "receivers": ["slack"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    delete(&site, &alice, &format!("/api/v1/receivers/{slack}"))
        .await
        .refused(409, &["to slack"]);
    let r = delete(&site, &alice, &format!("/api/v1/receivers/{mail}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    get(&site, &alice, &format!("/api/v1/receivers/{mail}"))
        .await
        .refused(404, &["no such receiver"]);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_tests_reach_a_webhook_and_an_smtp_sink_and_report_failures() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let hook = WebhookReceiver::start(Faults::default()).await.unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let failing = WebhookReceiver::start(Faults {
        fail_ratio: 1.0,
        ..Faults::default()
    })
    .await
    .unwrap();

    let add = |body: Value| {
        let site = &site;
        let alice = &alice;
        async move {
            let r = post(site, alice, "/api/v1/receivers", body).await;
            assert_eq!(r.status, 201, "{r:?}");
            r.json["id"].as_i64().unwrap()
        }
    };
    let web =
        add(json!({"name": "hook", "type": "webhook", "url": hook.url(), "format": "json"})).await;
    let mail = add(json!({"name": "mail", "type": "email", "host": "127.0.0.1",
                          "port": sink.port(), "security": "none",
                          "from": "gh@site.test", "to": ["ops@site.test"]}))
    .await;
    let bad = add(json!({"name": "down", "type": "webhook", "url": failing.url()})).await;

    // Webhook: delivered, with the test event's id as the idempotency key.
    let r = post(
        &site,
        &alice,
        &format!("/api/v1/receivers/{web}/test"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (&r.json["delivered"], &r.json["http_status"]),
        (&json!(true), &json!(200)),
        "{r:?}"
    );
    assert!(r.json["latency_ms"].is_u64());
    let event_id = r.json["event_id"].as_str().unwrap().to_owned();
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].idempotency_key.as_deref(), Some(event_id.as_str()));
    let body = reqs[0].json.as_ref().unwrap();
    assert_eq!(body["event_id"], json!(event_id));
    assert!(body.to_string().contains("alert.test"), "{body}");
    // A second test is a new notification, not a duplicate.
    let r = post(
        &site,
        &alice,
        &format!("/api/v1/receivers/{web}/test"),
        json!({}),
    )
    .await;
    assert_eq!(r.json["delivered"], true, "{r:?}");
    assert_eq!(hook.counts().accepted, 2);
    // Nothing went through the outbox.
    assert!(site
        .store()
        .list_events(&EventFilter {
            kind: Some("alert.test".into()),
            ..EventFilter::default()
        })
        .unwrap()
        .is_empty());

    // E-mail: the sink has it, with the key header.
    let r = call(
        &site,
        Auth::Bearer(&alice),
        "POST",
        &format!("/api/v1/receivers/{mail}/test"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["delivered"], true, "{r:?}");
    let msgs = sink.wait_for(1, PATIENCE).await.unwrap();
    assert_eq!(msgs[0].to, vec!["ops@site.test"]);
    assert_eq!(
        msgs[0].idempotency_key.as_deref(),
        r.json["event_id"].as_str()
    );

    // A receiver that answers 500: the outcome says so (the request itself succeeded).
    let r = post(
        &site,
        &alice,
        &format!("/api/v1/receivers/{bad}/test"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (&r.json["delivered"], &r.json["http_status"]),
        (&json!(false), &json!(500)),
        "{r:?}"
    );
    assert!(r.json["failure"].as_str().unwrap().contains("500"), "{r:?}");
    assert!(r.json.get("error").is_none());

    // The console is not sent to; operators may not send tests; unknown ids are 404.
    post(&site, &alice, "/api/v1/receivers/1/test", json!({}))
        .await
        .refused(400, &["console"]);
    post(
        &site,
        &oscar,
        &format!("/api/v1/receivers/{web}/test"),
        json!({}),
    )
    .await
    .refused(403, &["operator"]);
    post(&site, &alice, "/api/v1/receivers/999/test", json!({}))
        .await
        .refused(404, &["no such receiver"]);
    post(
        &site,
        &alice,
        &format!("/api/v1/receivers/{web}/test"),
        json!({"x": 1}),
    )
    .await
    .refused(400, &["unknown field `x`"]);
    assert_eq!(hook.requests().len(), 2);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_read_by_operators_changed_by_admins_and_checked_field_by_field() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let r = post(
        &site,
        &alice,
        "/api/v1/receivers",
        json!({"name": "ops", "type": "ntfy", "url": "https://ntfy.example.net/ops"}),
    )
    .await;
    let ops = r.json["id"].as_i64().unwrap();

    let r = post(
        &site,
        &alice,
        "/api/v1/rules",
        json!({"name": "intrusions at night",
               "matcher": {"kinds": ["intrusion", "review.*"], "zones": ["fence"], "min_severity": "warning"},
               "receivers": ["ops", 1],
               "active": "mon-fri 18:00-24:00; sat,sun 00:00-24:00", "holidays": "ignore",
               "group_window": "5m", "repeat_every": 600}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json["id"].as_i64().unwrap();
    assert_eq!(r.json["enabled"], true);
    assert_eq!(
        r.json["matcher"],
        json!({"kinds": ["intrusion", "review.*"], "sources": [], "zones": ["fence"], "min_severity": "warning"})
    );
    assert_eq!(r.json["active"], "mon-fri 18:00-24:00; sat-sun 00:00-24:00");
    assert_eq!(r.json["holidays"], "ignore");
    assert_eq!(
        (&r.json["group_window"], &r.json["group_window_s"]),
        (&json!("5m"), &json!(300))
    );
    assert_eq!(
        (&r.json["repeat_every"], &r.json["repeat_every_s"]),
        (&json!("10m"), &json!(600))
    );
    assert_eq!(
        r.json["receivers"],
        json!([{"id": 1, "name": "console"}, {"id": ops, "name": "ops"}])
    );
    let stored = site.store().rule(id).unwrap();
    assert_eq!(stored.group_window, Duration::from_secs(300));
    assert_eq!(stored.repeat_every, Some(Duration::from_secs(600)));

    // The operator reads rules but changes none.
    let r = get(&site, &oscar, "/api/v1/rules").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json.as_array().unwrap().len(),
        2,
        "default rule + 1: {r:?}"
    );
    let r = get(&site, &oscar, &format!("/api/v1/rules/{id}")).await;
    assert_eq!(r.json["name"], "intrusions at night");
    patch(
        &site,
        &oscar,
        &format!("/api/v1/rules/{id}"),
        json!({"enabled": false}),
    )
    .await
    .refused(403, &["operator role may not change alert rules"]);
    delete(&site, &oscar, &format!("/api/v1/rules/{id}"))
        .await
        .refused(403, &["operator"]);
    call(
        &site,
        Auth::Cookie(&alice, false),
        "PATCH",
        &format!("/api/v1/rules/{id}"),
        Some(json!({"enabled": false})),
    )
    .await
    .refused(403, &["X-CSRF-Token"]);

    // PATCH changes what it names and keeps the rest.
    let r = patch(
        &site,
        &alice,
        &format!("/api/v1/rules/{id}"),
        json!({"enabled": false, "repeat_every": null, "active": null, "receivers": [ops]}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["enabled"], false);
    assert_eq!(
        (&r.json["repeat_every"], &r.json["active"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(r.json["group_window"], "5m");
    assert_eq!(r.json["matcher"]["zones"], json!(["fence"]));
    let stored = site.store().rule(id).unwrap();
    assert!(!stored.enabled);
    assert_eq!(stored.receivers, vec![ops]);
    assert_eq!(stored.active, None);

    // Refusals name the field.
    let base = || json!({"name": "r", "receivers": ["ops"]});
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    for (body, status, want) in [
        (
            with("matcher", json!({"kinds": ["Door Forced"]})),
            400,
            "`matcher.kinds`",
        ),
        (
            with("matcher", json!({"kinds": ["a*b"]})),
            400,
            "`matcher.kinds`",
        ),
        (
            with("matcher", json!({"zone": ["x"]})),
            400,
            "unknown field `matcher.zone`",
        ),
        (
            with("matcher", json!({"min_severity": "high"})),
            400,
            "`matcher.min_severity`",
        ),
        (with("group_window", json!("2d")), 400, "`group_window`"),
        (with("group_window", json!("soon")), 400, "`group_window`"),
        (with("repeat_every", json!(0)), 400, "`repeat_every`"),
        (with("active", json!("weekdays 9-5")), 400, "`active`"),
        (with("holidays", json!("closed")), 400, "`holidays`"),
        (with("receivers", json!([])), 400, "`receivers`"),
        (
            with("receivers", json!(["nobody"])),
            404,
            "no such receiver",
        ),
        (with("enabled", json!("yes")), 400, "`enabled`"),
        (with("colour", json!("red")), 400, "unknown field `colour`"),
        (json!({"name": "r"}), 400, "`receivers` is required"),
        (json!({"receivers": ["ops"]}), 400, "`name` is required"),
        (
            with("name", json!("intrusions at night")),
            409,
            "already taken",
        ),
    ] {
        post(&site, &alice, "/api/v1/rules", body)
            .await
            .refused(status, &[want]);
    }
    assert_eq!(
        site.store().list_rules().unwrap().len(),
        2,
        "nothing half-made"
    );
    get(&site, &alice, "/api/v1/rules/999")
        .await
        .refused(404, &["no such rule"]);

    let r = delete(&site, &alice, &format!("/api/v1/rules/{id}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(site.store().list_rules().unwrap().len(), 1);
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_are_authored_by_the_caller_listed_and_expired() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;

    let r = post(
        &site,
        &alice,
        "/api/v1/silences",
        json!({"matcher": {"sources": ["nvr-yard"], "zones": ["fence"]}, "duration": "2h",
               "comment": "fence repair", "author": "mallory"}),
    )
    .await;
    r.refused(400, &["unknown field `author`"]);
    let r = post(
        &site,
        &alice,
        "/api/v1/silences",
        json!({"matcher": {"sources": ["nvr-yard"], "zones": ["fence"]}, "duration": "2h",
               "comment": "fence repair"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        (&r.json["author"], &r.json["state"]),
        (&json!("alice"), &json!("active"))
    );
    let active = r.json["id"].as_i64().unwrap();
    let s = site.store().silence(active).unwrap();
    assert_eq!(s.ends_at - s.starts_at, time::Duration::hours(2));

    let r = post(
        &site,
        &alice,
        "/api/v1/silences",
        json!({"starts_at": "2099-01-01", "ends_at": "2099-01-02", "comment": "far away"}),
    )
    .await;
    assert_eq!(
        (r.status, &r.json["state"]),
        (201, &json!("pending")),
        "{r:?}"
    );

    let all = get(&site, &oscar, "/api/v1/silences").await;
    assert_eq!(all.json.as_array().unwrap().len(), 2, "{all:?}");
    let now = get(&site, &oscar, "/api/v1/silences?active=true").await;
    assert_eq!(now.json.as_array().unwrap().len(), 1, "{now:?}");
    assert_eq!(now.json[0]["id"], active);
    get(&site, &oscar, "/api/v1/silences?active=yes")
        .await
        .refused(400, &["`active`"]);

    for (body, want) in [
        (json!({"comment": "c"}), "`ends_at`"),
        (
            json!({"comment": "c", "duration": "1h", "ends_at": "2099-01-01"}),
            "not both",
        ),
        (json!({"duration": "1h"}), "`comment` is required"),
        (json!({"duration": "1h", "comment": "  "}), "`comment`"),
        (json!({"duration": "forever", "comment": "c"}), "`duration`"),
        (json!({"ends_at": "tomorrow", "comment": "c"}), "`ends_at`"),
        (
            json!({"starts_at": "2099-01-02", "ends_at": "2099-01-01", "comment": "c"}),
            "`ends_at`",
        ),
        (
            json!({"duration": "1h", "comment": "c", "matcher": {"kinds": ["BAD"]}}),
            "`matcher.kinds`",
        ),
    ] {
        post(&site, &alice, "/api/v1/silences", body)
            .await
            .refused(400, &[want]);
    }
    post(
        &site,
        &oscar,
        "/api/v1/silences",
        json!({"duration": "1h", "comment": "c"}),
    )
    .await
    .refused(403, &["operator"]);

    let r = post(
        &site,
        &alice,
        &format!("/api/v1/silences/{active}/expire"),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (&r.json["expired_now"], &r.json["state"]),
        (&json!(true), &json!("expired"))
    );
    let r = call(
        &site,
        Auth::Bearer(&alice),
        "POST",
        &format!("/api/v1/silences/{active}/expire"),
        None,
    )
    .await;
    assert_eq!(r.json["already_ended"], true, "{r:?}");
    post(&site, &alice, "/api/v1/silences/999/expire", json!({}))
        .await
        .refused(404, &["no such silence"]);
    let now = get(&site, &oscar, "/api/v1/silences?active=true").await;
    assert_eq!(now.json, json!([]));
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_filter_and_acknowledge_events_and_read_their_deliveries() {
    let mut site = Site::start().await;
    let alice = site.login("alice", ALICE_PW).await;
    let oscar = site.login("oscar", OSCAR_PW).await;
    let ivan = site.login("ivan", IVAN_PW).await;
    let hook = WebhookReceiver::start(Faults::default()).await.unwrap();

    let r = post(&site, &ivan, "/api/v1/sources", json!({"name": "nvr-yard"})).await;
    let key = r.json["api_key"].as_str().unwrap().to_owned();
    let r = post(
        &site,
        &alice,
        "/api/v1/receivers",
        json!({"name": "hook", "type": "webhook", "url": hook.url(), "format": "json"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = post(
        &site,
        &alice,
        "/api/v1/rules",
        json!({"name": "intrusions", "matcher": {"kinds": ["intrusion"]}, "receivers": ["hook"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");

    let mut ids = Vec::new();
    for (kind, severity, zone, message) in [
        ("intrusion", "critical", "fence", "person at the fence"),
        ("motion", "info", "yard", "cat"),
        ("fire", "critical", "shed", "smoke in the shed"),
    ] {
        let r = send_event(
            &site,
            &key,
            json!({"kind": kind, "severity": severity, "zone": zone, "message": message}),
        )
        .await;
        assert_eq!(r.status, 201, "{r:?}");
        ids.push(r.json["id"].as_str().unwrap().to_owned());
    }

    // Newest first; filters narrow. (The hub raises events of its own, from sources
    // "system" and "tunnel": the source filter leaves them out.)
    let r = get(&site, &oscar, "/api/v1/events?source=nvr-yard").await;
    assert_eq!(r.status, 200, "{r:?}");
    let listed: Vec<&str> = r.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]
    );
    assert_eq!(r.json["events"][0]["source"], "nvr-yard");
    assert_eq!(r.json["events"][0]["ack"], Value::Null);
    let first_seq = r.json["events"][2]["seq"].as_i64().unwrap();
    for (query, want) in [
        ("kind=intrusion", vec![0]),
        ("severity=critical", vec![2, 0]),
        ("q=SMOKE", vec![2]),
        ("source=nvr-yard&kind=moti*", vec![1]),
        ("source=other", vec![]),
        (&format!("after={first_seq}") as &str, vec![1, 2]),
        (&format!("before={}", first_seq + 2), vec![1, 0]),
        (
            "since=2000-01-01&until=2999-01-01&acked=false",
            vec![2, 1, 0],
        ),
        ("acked=true", vec![]),
    ] {
        let query = if query.contains("source=") {
            query.to_owned()
        } else {
            format!("{query}&source=nvr-yard")
        };
        let r = get(&site, &oscar, &format!("/api/v1/events?{query}")).await;
        assert_eq!(r.status, 200, "{query}: {r:?}");
        let got: Vec<&str> = r.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = want.iter().map(|i: &usize| ids[*i].as_str()).collect();
        assert_eq!(got, want, "{query}");
    }
    let r = get(&site, &oscar, "/api/v1/events?limit=1&source=nvr-yard").await;
    assert_eq!(
        (r.json["events"].as_array().unwrap().len(), &r.json["more"]),
        (1, &json!(true))
    );
    let next = r.json["next_before"].as_i64().unwrap();
    let r = get(
        &site,
        &oscar,
        &format!("/api/v1/events?limit=1&before={next}&source=nvr-yard"),
    )
    .await;
    assert_eq!(r.json["events"][0]["id"], json!(ids[1]));
    for (query, want) in [
        ("severity=urgent", "`severity`"),
        ("limit=0", "`limit`"),
        ("limit=5000", "`limit`"),
        ("after=x", "`after`"),
        ("acked=maybe", "`acked`"),
        ("since=yesterday", "`since`"),
        ("colour=red", "unknown query parameter `colour`"),
    ] {
        get(&site, &oscar, &format!("/api/v1/events?{query}"))
            .await
            .refused(400, &[want]);
    }

    // Detail: the intrusion went to the console (default rule) and to the hook.
    let detail = eventually(&site, &oscar, &format!("/api/v1/events/{}", ids[0]), |d| {
        d["deliveries"]
            .as_array()
            .is_some_and(|ds| ds.len() == 2 && ds.iter().all(|x| x["status"] == "delivered"))
    })
    .await;
    let mut receivers: Vec<&str> = detail["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["receiver_name"].as_str().unwrap())
        .collect();
    receivers.sort_unstable();
    assert_eq!(receivers, vec!["console", "hook"]);
    assert_eq!(detail["silenced_by"], Value::Null);
    assert_eq!(hook.accepted_keys(), vec![ids[0].clone()]);

    let r = get(
        &site,
        &oscar,
        &format!("/api/v1/events/{}/deliveries", ids[0]),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let attempts = r.json["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{r:?}");
    assert!(attempts
        .iter()
        .all(|a| a["outcome"] == "delivered" && a["event"] == json!(ids[0])));
    let hook_attempt = attempts
        .iter()
        .find(|a| a["receiver_name"] == "hook")
        .unwrap();
    assert_eq!(
        (&hook_attempt["http_status"], &hook_attempt["attempt"]),
        (&json!(200), &json!(1))
    );
    let r = get(
        &site,
        &oscar,
        &format!("/api/v1/deliveries?event={}&receiver=hook", ids[0]),
    )
    .await;
    assert_eq!(r.json["attempts"].as_array().unwrap().len(), 1, "{r:?}");
    let r = get(
        &site,
        &oscar,
        "/api/v1/deliveries?outcome=delivered&after=0",
    )
    .await;
    assert!(r.json["attempts"].as_array().unwrap().len() >= 3, "{r:?}");
    get(&site, &oscar, "/api/v1/deliveries?outcome=lost")
        .await
        .refused(400, &["`outcome`"]);
    get(&site, &oscar, "/api/v1/deliveries?event=nope")
        .await
        .refused(400, &["`event`"]);
    get(&site, &oscar, "/api/v1/events/not-an-id")
        .await
        .refused(400, &["ULID"]);
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    get(&site, &oscar, &format!("/api/v1/events/{unknown}"))
        .await
        .refused(404, &["no such event"]);
    get(
        &site,
        &oscar,
        &format!("/api/v1/events/{unknown}/deliveries"),
    )
    .await
    .refused(404, &["no such event"]);

    // Acknowledge: the operator may; a cookie session needs the CSRF header; the first
    // acknowledgement stands.
    let ack = format!("/api/v1/events/{}/ack", ids[2]);
    call(&site, Auth::Cookie(&oscar, false), "POST", &ack, None)
        .await
        .refused(403, &["X-CSRF-Token"]);
    let r = call(&site, Auth::Cookie(&oscar, true), "POST", &ack, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (&r.json["already_acked"], &r.json["ack"]["by"]),
        (&json!(false), &json!("oscar"))
    );
    assert_eq!(r.json["ack"]["comment"], Value::Null);
    let r = post(
        &site,
        &alice,
        &ack,
        json!({"comment": "fire brigade called"}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (&r.json["already_acked"], &r.json["ack"]["by"]),
        (&json!(true), &json!("oscar"))
    );
    post(
        &site,
        &alice,
        &format!("/api/v1/events/{}/ack", ids[1]),
        json!({"note": "x"}),
    )
    .await
    .refused(400, &["unknown field `note`"]);
    post(
        &site,
        &alice,
        &format!("/api/v1/events/{unknown}/ack"),
        json!({}),
    )
    .await
    .refused(404, &["no such event"]);
    post(
        &site,
        &ivan,
        &format!("/api/v1/events/{}/ack", ids[1]),
        json!({}),
    )
    .await
    .refused(403, &["installer role may not acknowledge events"]);
    let r = get(&site, &oscar, "/api/v1/events?acked=true").await;
    assert_eq!(r.json["events"][0]["id"], json!(ids[2]));
    assert_eq!(r.json["events"][0]["ack"]["by"], "oscar");
    let stored = site.store().event(ids[2].parse().unwrap()).unwrap();
    assert_eq!(stored.ack.unwrap().by, "oscar");
    assert!(site.store().reconcile().unwrap().is_consistent());
    site.stop().await;
}
