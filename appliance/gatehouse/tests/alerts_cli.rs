//! `gatehouse source|receiver|rule|silence|event ...` as an admin meets them on the box's
//! shell: the real binary against a tempdir config. Each command's happy path is checked
//! against the store, each error a user can cause exits 1 with one line naming the flag,
//! secrets are printed only where promised (a source's key and MQTT password when made or
//! rotated), and receiver tests reach the dev peers (`WebhookReceiver`, `SmtpSink`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_alerts::model::{EventId, Lifecycle, NewEvent, ReceiverConfig, Severity, SourceKind};
use gatehouse_store::events::{IngestItem, PlannedDelivery};
use gatehouse_store::schema::db_path;
use gatehouse_testpeers::{Faults, SmtpSink, WebhookReceiver};
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use time::OffsetDateTime;

mod cli_support;

use cli_support::{contains, field, stderr, stdout, CliSite, TUNNEL};

fn site() -> CliSite {
    CliSite::new(&format!(
        "{TUNNEL}[hub]\nhttp_listen = \"127.0.0.1:18080\"\n"
    ))
    .run_as("carol")
}

/// Runs the CLI off the async runtime (the peers it talks to run on it).
async fn run_async(site: &CliSite, args: &[&str]) -> Output {
    let mut command = site.command(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[test]
fn sources_print_their_key_once_and_manage_it() {
    let site = site();
    let out = site.ok(&[
        "source",
        "add",
        "nvr-yard",
        "--mqtt-prefix",
        "frigate",
        "--base-url",
        "http://10.0.0.5:5000",
    ]);
    assert!(
        out.contains("source \"nvr-yard\" added (id 1, kind nvr)"),
        "{out}"
    );
    let key = field(&out, "API key:").to_owned();
    assert_eq!(key.len(), 43, "{out}");
    assert_eq!(
        field(&out, "webhook:"),
        "POST http://127.0.0.1:18080/api/v1/events"
    );
    assert!(
        out.contains(&format!("Authorization: Bearer {key}")),
        "{out}"
    );
    let curl = field(&out, "try it:");
    assert!(curl.starts_with("curl ") && curl.contains(&key), "{out}");
    assert_eq!(field(&out, "MQTT broker:"), "127.0.0.1:1883");
    assert_eq!(field(&out, "MQTT user:"), "nvr-nvr-yard");
    let mqtt_password = field(&out, "MQTT password:")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(mqtt_password.len(), 64, "{out}");
    assert!(field(&out, "MQTT topics:").starts_with("frigate/events, frigate/reviews"));
    {
        let store = site.store();
        assert_eq!(
            store.event_source_by_key(&key).unwrap().unwrap().name,
            "nvr-yard"
        );
    }
    // Only its hash is kept.
    assert!(!contains(&site.disk(), key.as_bytes()));

    let list = site.ok(&["source", "list"]);
    assert!(list.contains("nvr-yard") && list.contains("frigate") && list.contains("enabled"));
    assert!(list.contains("http://10.0.0.5:5000"), "{list}");
    assert!(
        !list.contains(&key) && !list.contains(&mqtt_password),
        "{list}"
    );

    // A new key; the old one stops working.
    let out = site.ok(&["source", "rotate-key", "nvr-yard"]);
    let new_key = field(&out, "API key:").to_owned();
    assert_ne!(new_key, key);
    assert!(
        !out.contains(&mqtt_password),
        "the MQTT password follows the key: {out}"
    );
    {
        let store = site.store();
        assert!(store.event_source_by_key(&key).unwrap().is_none());
        assert!(store.event_source_by_key(&new_key).unwrap().is_some());
    }

    let out = site.ok(&["source", "disable", "nvr-yard"]);
    assert!(out.contains("disabled"), "{out}");
    assert!(!site.store().event_source(1).unwrap().enabled);
    assert!(site.ok(&["source", "list"]).contains("disabled"));
    site.ok(&["source", "enable", "1"]);
    assert!(site.store().event_source(1).unwrap().enabled);

    // A sensor gateway: no MQTT part.
    let out = site.ok(&["source", "add", "lora-gw", "--kind", "sensor"]);
    assert!(!out.contains("MQTT"), "{out}");

    site.fails(&["source", "add", "bad name"], "invalid source name");
    site.fails(&["source", "add", "system"], "reserved");
    site.fails(&["source", "add", "nvr-yard"], "already taken");
    site.fails(
        &[
            "source",
            "add",
            "x",
            "--kind",
            "sensor",
            "--mqtt-prefix",
            "p",
        ],
        "--mqtt-prefix is for NVRs",
    );
    site.fails(
        &["source", "add", "x", "--mqtt-prefix", "frigate"],
        "--mqtt-prefix: NVR topic prefix \"frigate\" overlaps another NVR's prefix",
    );
    site.fails(
        &["source", "add", "x", "--mqtt-prefix", "access"],
        "overlaps the gate link's topics",
    );
    site.fails(
        &["source", "add", "x", "--base-url", "ftp://nvr"],
        "base URL",
    );
    site.fails(
        &["source", "disable", "nobody"],
        "no source is named \"nobody\"",
    );
    assert_eq!(site.store().list_event_sources().unwrap().len(), 2);

    // The tunnel's own source (the hub registers it at start): off, but not removed or
    // re-keyed.
    site.store()
        .ensure_internal_source(
            "tunnel",
            SourceKind::Tunnel,
            None,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    site.fails(&["source", "remove", "tunnel"], "is the box's own");
    site.fails(&["source", "rotate-key", "tunnel"], "not given a new key");
    site.ok(&["source", "disable", "tunnel"]);
    assert!(!site.store().event_source_by_name("tunnel").unwrap().enabled);

    let out = site.ok(&["source", "remove", "nvr-yard"]);
    assert!(out.contains("removed"), "{out}");
    assert!(site.store().event_source_by_name("nvr-yard").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_are_added_listed_without_secrets_tested_and_removed() {
    let site = site();
    let hook = WebhookReceiver::start(Faults::default()).await.unwrap();
    let down = WebhookReceiver::start(Faults {
        fail_ratio: 1.0,
        ..Faults::default()
    })
    .await
    .unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let password = site.file("smtp.pw", "smtp-s3cret\n").display().to_string();
    let token = site.file("ntfy.token", "tk_s3cret\n").display().to_string();
    let smtp = format!("127.0.0.1:{}", sink.port());
    let hook_url = hook.url();
    let down_url = down.url();

    let out = site.ok(&[
        "receiver",
        "add",
        "hook",
        "--webhook",
        &hook_url,
        "--format",
        "json",
    ]);
    assert!(out.contains("receiver \"hook\" added"), "{out}");
    assert!(out.contains("gatehouse receiver test hook"), "{out}");
    site.ok(&["receiver", "add", "down", "--webhook", &down_url]);
    site.ok(&[
        "receiver",
        "add",
        "mail",
        "--email",
        "--smtp",
        &smtp,
        "--security",
        "none",
        "--from",
        "gh@site.test",
        "--to",
        "ops@site.test,boss@site.test",
    ]);
    site.ok(&[
        "receiver",
        "add",
        "relay",
        "--email",
        "--smtp",
        "smtp.example.net:587",
        "--security",
        "starttls",
        "--from",
        "gh@site.test",
        "--to",
        "ops@site.test",
        "--username",
        "gatehouse",
        "--password-file",
        &password,
    ]);
    site.ok(&[
        "receiver",
        "add",
        "push",
        "--ntfy",
        "https://ntfy.example.net/topic-x7",
        "--token-file",
        &token,
    ]);
    {
        let store = site.store();
        match store.receiver_by_name("relay").unwrap().config {
            ReceiverConfig::Email {
                username,
                password,
                port,
                ..
            } => {
                assert_eq!(username.as_deref(), Some("gatehouse"));
                assert_eq!(password.as_deref(), Some("smtp-s3cret"));
                assert_eq!(port, 587);
            }
            other => panic!("{other:?}"),
        }
        match store.receiver_by_name("mail").unwrap().config {
            ReceiverConfig::Email { to, .. } => {
                assert_eq!(to, vec!["ops@site.test", "boss@site.test"])
            }
            other => panic!("{other:?}"),
        }
        match store.receiver_by_name("push").unwrap().config {
            ReceiverConfig::Ntfy { token, .. } => assert_eq!(token.as_deref(), Some("tk_s3cret")),
            other => panic!("{other:?}"),
        }
    }

    let list = site.ok(&["receiver", "list"]);
    for name in ["console", "hook", "down", "mail", "relay", "push"] {
        assert!(list.contains(name), "{name}: {list}");
    }
    assert!(
        list.contains("(password set)") && list.contains("(token set)"),
        "{list}"
    );
    for secret in ["smtp-s3cret", "tk_s3cret", "topic-x7", "/hook"] {
        assert!(!list.contains(secret), "{secret} in {list}");
    }

    // Tests go straight to the receiver.
    let o = run_async(&site, &["receiver", "test", "hook"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("test notification delivered to \"hook\""),
        "{out}"
    );
    assert!(out.contains("HTTP 200"), "{out}");
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 1);
    let key = reqs[0].idempotency_key.clone().unwrap();
    assert!(out.contains(&key), "the event id is the key: {out}");
    assert!(reqs[0]
        .json
        .as_ref()
        .unwrap()
        .to_string()
        .contains("alert.test"));

    let o = run_async(&site, &["receiver", "test", "mail"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let msgs = sink.wait_for(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(msgs[0].to, vec!["ops@site.test", "boss@site.test"]);
    assert!(msgs[0].idempotency_key.is_some());

    let o = run_async(&site, &["receiver", "test", "down"]).await;
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("test notification to \"down\" failed") && e.contains("500"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    site.fails(
        &["receiver", "test", "console"],
        "console receiver is not sent to",
    );
    // Nothing went through the outbox.
    assert_eq!(site.store().reconcile().unwrap().events, 0);

    for (args, want) in [
        (
            vec!["receiver", "add", "x"],
            "give exactly one of --webhook URL, --email or --ntfy URL",
        ),
        (
            vec![
                "receiver",
                "add",
                "x",
                "--webhook",
                "https://a",
                "--ntfy",
                "https://b",
            ],
            "exactly one",
        ),
        (
            vec!["receiver", "add", "x", "--webhook", "ftp://a"],
            "--webhook: invalid webhook URL",
        ),
        (
            vec![
                "receiver",
                "add",
                "x",
                "--ntfy",
                "https://n/t",
                "--format",
                "json",
            ],
            "--format is for --webhook",
        ),
        (
            vec![
                "receiver",
                "add",
                "x",
                "--webhook",
                "https://a",
                "--to",
                "a@b.c",
            ],
            "are for --email",
        ),
        (
            vec!["receiver", "add", "x", "--email"],
            "--email needs --smtp HOST:PORT",
        ),
        (
            vec!["receiver", "add", "x", "--email", "--smtp", "nohost"],
            "--smtp: \"nohost\" is not HOST:PORT",
        ),
        (
            vec!["receiver", "add", "x", "--email", "--smtp", "h:25"],
            "--email needs --security",
        ),
        (
            vec![
                "receiver",
                "add",
                "x",
                "--email",
                "--smtp",
                "h:25",
                "--security",
                "none",
            ],
            "--email needs --from",
        ),
        (
            vec![
                "receiver",
                "add",
                "x",
                "--email",
                "--smtp",
                "h:25",
                "--security",
                "none",
                "--from",
                "a@b.c",
            ],
            "--email needs --to",
        ),
        (
            vec![
                "receiver",
                "add",
                "x",
                "--email",
                "--smtp",
                "h:25",
                "--security",
                "none",
                "--from",
                "nobody",
                "--to",
                "a@b.c",
            ],
            "--from: invalid e-mail from",
        ),
        (
            vec![
                "receiver",
                "add",
                "x",
                "--email",
                "--smtp",
                "h:25",
                "--security",
                "none",
                "--from",
                "a@b.c",
                "--to",
                "a@b.c",
                "--username",
                "u",
            ],
            "--username and --password-file together",
        ),
        (
            vec![
                "receiver",
                "add",
                "x",
                "--ntfy",
                "https://n/t",
                "--token-file",
                "/nonexistent/token",
            ],
            "cannot read the token file",
        ),
        (
            vec!["receiver", "add", "hook", "--webhook", "https://a"],
            "already taken",
        ),
        (
            vec!["receiver", "disable", "nobody"],
            "no receiver is named \"nobody\"",
        ),
    ] {
        site.fails(&args, want);
    }
    assert_eq!(
        site.store().list_receivers().unwrap().len(),
        6,
        "nothing half-made"
    );

    site.ok(&["receiver", "disable", "hook"]);
    assert!(!site.store().receiver_by_name("hook").unwrap().enabled);
    assert!(site.ok(&["receiver", "list"]).contains("disabled"));
    site.ok(&["receiver", "enable", "hook"]);
    assert!(site.store().receiver_by_name("hook").unwrap().enabled);
    site.ok(&["rule", "add", "to-hook", "--to", "hook"]);
    site.fails(
        &["receiver", "remove", "hook"],
        "still used by rule(s) \"to-hook\"",
    );
    site.fails(&["receiver", "remove", "console"], "cannot be removed");
    let out = site.ok(&["receiver", "remove", "push"]);
    assert!(out.contains("removed"), "{out}");
    assert!(site.store().receiver_by_name("push").is_err());
}

#[test]
fn rules_are_added_listed_switched_and_removed() {
    let site = site();
    site.ok(&[
        "receiver",
        "add",
        "hook",
        "--webhook",
        "https://hooks.example.net/x",
    ]);
    let out = site.ok(&[
        "rule",
        "add",
        "night",
        "--kind",
        "intrusion",
        "--kind",
        "review.*",
        "--zone",
        "fence",
        "--min-severity",
        "warning",
        "--to",
        "console,hook",
        "--group",
        "5m",
        "--repeat",
        "10m",
        "--active",
        "mon-fri 18:00-24:00",
        "--holidays",
        "ignore",
    ]);
    assert!(out.contains("rule \"night\" added (id 2)"), "{out}");
    assert!(
        out.contains("kind=intrusion,review.* zone=fence >=warning -> console,hook"),
        "{out}"
    );
    let r = site.store().rule_by_name("night").unwrap();
    assert_eq!(r.matcher.kinds, vec!["intrusion", "review.*"]);
    assert_eq!(r.matcher.min_severity, Severity::Warning);
    assert_eq!(r.receivers.len(), 2);
    assert_eq!(r.group_window, Duration::from_secs(300));
    assert_eq!(r.repeat_every, Some(Duration::from_secs(600)));
    assert!(r.active.is_some());

    let list = site.ok(&["rule", "list"]);
    let line = list.lines().find(|l| l.contains("night")).unwrap();
    for part in [
        "enabled",
        "console,hook",
        "5m",
        "10m",
        "mon-fri 18:00-24:00 (holidays ignore)",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    assert!(
        list.contains("console: warning and above"),
        "the default rule: {list}"
    );

    for (args, want) in [
        (vec!["rule", "add", "r"], "--to RECEIVER is required"),
        (
            vec!["rule", "add", "r", "--to", "nobody"],
            "no receiver is named \"nobody\"",
        ),
        (
            vec!["rule", "add", "r", "--to", "hook", "--kind", "Door Forced"],
            "--kind:",
        ),
        (
            vec!["rule", "add", "r", "--to", "hook", "--kind", "a*b"],
            "--kind:",
        ),
        (
            vec!["rule", "add", "r", "--to", "hook", "--group", "2d"],
            "--group:",
        ),
        (
            vec!["rule", "add", "r", "--to", "hook", "--group", "soon"],
            "--group: \"soon\" is not a duration",
        ),
        (
            vec!["rule", "add", "r", "--to", "hook", "--repeat", "0"],
            "--repeat: must be at least 1s",
        ),
        (
            vec!["rule", "add", "r", "--to", "hook", "--active", "weekdays"],
            "--active:",
        ),
        (
            vec!["rule", "add", "r", "--to", "hook", "--holidays", "ignore"],
            "--holidays goes with --active",
        ),
        (
            vec!["rule", "add", "night", "--to", "hook"],
            "already taken",
        ),
        (
            vec!["rule", "disable", "nobody"],
            "no rule is named \"nobody\"",
        ),
    ] {
        site.fails(&args, want);
    }
    assert_eq!(
        site.store().list_rules().unwrap().len(),
        2,
        "nothing half-made"
    );

    site.ok(&["rule", "disable", "night"]);
    assert!(!site.store().rule_by_name("night").unwrap().enabled);
    site.ok(&["rule", "enable", "2"]);
    assert!(site.store().rule_by_name("night").unwrap().enabled);
    let out = site.ok(&["rule", "remove", "night"]);
    assert!(out.contains("removed"), "{out}");
    assert_eq!(site.store().list_rules().unwrap().len(), 1);
}

#[test]
fn silences_are_added_listed_and_expired() {
    let site = site();
    let out = site.ok(&[
        "silence",
        "add",
        "--source",
        "nvr-yard",
        "--zone",
        "fence",
        "--for",
        "2h",
        "--comment",
        "fence repair",
    ]);
    assert!(
        out.contains("silence 1 added: source=nvr-yard zone=fence"),
        "{out}"
    );
    assert!(
        out.contains("(by carol)"),
        "the shell's user is the author: {out}"
    );
    let s = site.store().silence(1).unwrap();
    assert_eq!(s.ends_at - s.starts_at, time::Duration::hours(2));
    assert_eq!(
        (s.author.as_str(), s.comment.as_str()),
        ("carol", "fence repair")
    );

    let out = site.ok(&[
        "silence",
        "add",
        "--kind",
        "motion",
        "--starts",
        "2099-01-01",
        "--until",
        "2099-01-02",
        "--comment",
        "far away",
        "--author",
        "bob",
    ]);
    assert!(
        out.contains("silence 2 added") && out.contains("(by bob)"),
        "{out}"
    );

    let list = site.ok(&["silence", "list"]);
    assert!(
        list.contains("active") && list.contains("fence repair"),
        "{list}"
    );
    assert!(
        list.contains("pending") && list.contains("far away"),
        "{list}"
    );

    for (args, want) in [
        (
            vec!["silence", "add", "--for", "1h"],
            "--comment is required",
        ),
        (
            vec!["silence", "add", "--comment", "c"],
            "give --for DURATION (like 2h) or --until TIME",
        ),
        (
            vec![
                "silence",
                "add",
                "--comment",
                "c",
                "--for",
                "1h",
                "--until",
                "2099-01-01",
            ],
            "not both",
        ),
        (
            vec!["silence", "add", "--comment", "c", "--for", "forever"],
            "--for: \"forever\" is not a duration",
        ),
        (
            vec!["silence", "add", "--comment", "c", "--until", "tomorrow"],
            "--until:",
        ),
        (
            vec![
                "silence",
                "add",
                "--comment",
                "c",
                "--starts",
                "2099-01-02",
                "--until",
                "2099-01-01",
            ],
            "would end",
        ),
        (
            vec![
                "silence",
                "add",
                "--comment",
                "c",
                "--for",
                "1h",
                "--kind",
                "BAD",
            ],
            "--kind:",
        ),
        (vec!["silence", "expire", "99"], "no silence has the id 99"),
    ] {
        site.fails(&args, want);
    }
    assert_eq!(
        site.store().list_silences(None).unwrap().len(),
        2,
        "nothing half-made"
    );

    let out = site.ok(&["silence", "expire", "1"]);
    assert_eq!(out.trim(), "silence 1 expired");
    let out = site.ok(&["silence", "expire", "1"]);
    assert_eq!(out.trim(), "silence 1 had already ended");
    assert!(!site.ok(&["silence", "list"]).contains("fence repair"));
    let all = site.ok(&["silence", "list", "--all"]);
    assert!(
        all.contains("expired") && all.contains("fence repair"),
        "{all}"
    );
}

/// Stores events as the hub's writer would: each with a console notification from the
/// default rule (delivered when committed).
fn ingest(site: &CliSite, events: &[(&str, Severity, &str, &str)]) -> Vec<EventId> {
    let store = site.store();
    let console = store.console_receiver_id().unwrap().unwrap();
    let now = OffsetDateTime::now_utc();
    let items: Vec<IngestItem> = events
        .iter()
        .enumerate()
        .map(|(i, (kind, severity, zone, message))| IngestItem {
            id: EventId::new(now, i as u128 + 1),
            event: NewEvent {
                source: "nvr-yard".into(),
                source_kind: SourceKind::Nvr,
                kind: (*kind).into(),
                severity: *severity,
                time: now,
                camera: None,
                zone: Some((*zone).into()),
                device: None,
                message: Some((*message).into()),
                snapshot_url: None,
                clip_url: None,
                external_id: None,
                lifecycle: Lifecycle::Instant,
            },
            deliveries: vec![PlannedDelivery {
                receiver: console,
                rule: 1,
                group_window: Duration::ZERO,
                repeat_every: None,
            }],
            silenced_by: None,
        })
        .collect();
    store.ingest_events(&items, now).unwrap();
    items.into_iter().map(|i| i.id).collect()
}

#[test]
fn events_are_listed_shown_acknowledged_and_checked() {
    let site = site();
    // The database exists once any command opened it.
    site.ok(&["event", "list"]);
    let ids = ingest(
        &site,
        &[
            (
                "intrusion",
                Severity::Critical,
                "fence",
                "person at the fence",
            ),
            ("motion", Severity::Info, "yard", "cat"),
            ("fire", Severity::Critical, "shed", "smoke in\nthe shed"),
        ],
    );

    let list = site.ok(&["event", "list"]);
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{list}");
    assert!(
        rows[0].contains(&ids[2].to_string()) && rows[0].contains("fire"),
        "newest first: {list}"
    );
    assert!(
        rows[0].contains("smoke in the shed"),
        "one line per event: {list}"
    );
    assert!(
        rows[2].contains("intrusion") && rows[2].contains("fence"),
        "{list}"
    );
    let only = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["event", "list", "--json"];
        a.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&site.ok(&a)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let id = |i: usize| ids[i].to_string();
    assert_eq!(only(&[]), vec![id(2), id(1), id(0)]);
    assert_eq!(only(&["--kind", "fire"]), vec![id(2)]);
    assert_eq!(only(&["--severity", "critical"]), vec![id(2), id(0)]);
    assert_eq!(only(&["-q", "cat"]), vec![id(1)]);
    assert_eq!(only(&["--source", "other"]), Vec::<String>::new());
    assert_eq!(only(&["--after", "1"]), vec![id(1), id(2)]);
    assert_eq!(only(&["-n", "1"]), vec![id(2)]);
    assert_eq!(
        only(&["--since", "2000-01-01", "--unacked"]),
        vec![id(2), id(1), id(0)]
    );

    let show = site.ok(&["event", "show", "1"]);
    assert!(
        show.contains(&id(0)) && show.contains("person at the fence"),
        "{show}"
    );
    assert!(
        show.contains("deliveries:") && show.contains("console"),
        "{show}"
    );
    assert!(show.contains("delivered"), "{show}");
    assert!(show.contains("acknowledged  no"), "{show}");
    let by_id = site.ok(&["event", "show", &id(0)]);
    assert_eq!(by_id, show);
    let json: serde_json::Value =
        serde_json::from_str(&site.ok(&["event", "show", &id(2), "--json"])).unwrap();
    assert_eq!(json["kind"], "fire");
    assert_eq!(json["deliveries"][0]["status"], "delivered");

    let out = site.ok(&[
        "event",
        "ack",
        &id(2),
        "--comment",
        "fire brigade called",
        "--by",
        "oscar",
    ]);
    assert!(
        out.contains(&format!("event {} acknowledged by oscar", id(2))),
        "{out}"
    );
    let out = site.ok(&["event", "ack", "3"]);
    assert!(
        out.contains("was already acknowledged by oscar") && out.contains("fire brigade called"),
        "{out}"
    );
    let out = site.ok(&["event", "ack", "2"]);
    assert!(
        out.contains("acknowledged by carol"),
        "the shell's user: {out}"
    );
    assert_eq!(only(&["--acked"]), vec![id(2), id(1)]);
    assert_eq!(site.store().event(ids[2]).unwrap().ack.unwrap().by, "oscar");

    for (args, want) in [
        (vec!["event", "show", "nope"], "\"nope\" is not an event id"),
        (
            vec!["event", "show", "999"],
            "no event has the seq number 999",
        ),
        (
            vec!["event", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV"],
            "no event has the id",
        ),
        (
            vec!["event", "ack", "999"],
            "no event has the seq number 999",
        ),
        (
            vec!["event", "list", "-n", "0"],
            "--limit must be 1 to 1000",
        ),
        (vec!["event", "list", "--since", "yesterday"], "--since:"),
    ] {
        site.fails(&args, want);
    }

    let out = site.ok(&["event", "check"]);
    assert!(
        out.contains("events                             3"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("consistent"), "{out}");
    // A delivery whose attempts the log does not hold: check says so and exits 1.
    let db = rusqlite::Connection::open(db_path(Path::new(&site.data))).unwrap();
    db.execute("UPDATE deliveries SET attempts = 2 WHERE id = 1", [])
        .unwrap();
    drop(db);
    let o = site.run(&["event", "check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("INCONSISTENT"), "{}", stdout(&o));
    assert!(stderr(&o).contains("do not reconcile"), "{}", stderr(&o));
}
