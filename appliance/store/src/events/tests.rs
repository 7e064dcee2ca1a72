//! The events tables against real database files: migration, configuration checks, the
//! ingest rules (dedup, folding, grouping, silences), the outbox, repeats, the console
//! feed and reconciliation.

use super::*;
use crate::error::Entity;
use crate::schema::{self, MIGRATIONS};
use crate::store::Store;
use gatehouse_alerts::model::{
    DeliveryId, DeliveryStatus, Matcher, NotificationKind, ReceiverConfig, ReceiverId, Rule,
    Severity, SmtpSecurity, SourceKind, WebhookFormat,
};
use std::sync::atomic::{AtomicU64, Ordering};
use time::macros::{date, datetime};
use time::OffsetDateTime;

const T0: OffsetDateTime = datetime!(2026-03-02 10:00 UTC);

fn at(secs: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(secs)
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

/// A fresh event id for every call.
fn new_id() -> EventId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    EventId::new(T0, u128::from(NEXT.fetch_add(1, Ordering::Relaxed)))
}

fn event(source: &str, kind: &str, severity: Severity, zone: Option<&str>) -> NewEvent {
    NewEvent {
        source: source.into(),
        source_kind: SourceKind::Nvr,
        kind: kind.into(),
        severity,
        time: T0,
        camera: Some("cam-1".into()),
        zone: zone.map(str::to_string),
        device: None,
        message: Some(format!("{kind} seen")),
        snapshot_url: None,
        clip_url: None,
        external_id: None,
        lifecycle: Lifecycle::Instant,
    }
}

fn frigate(external: &str, severity: Severity, lifecycle: Lifecycle) -> NewEvent {
    NewEvent {
        external_id: Some(external.into()),
        lifecycle,
        ..event("nvr-yard", "person", severity, Some("driveway"))
    }
}

/// Every receiver of `rule`, as the hub's planner would plan it.
fn plan(rule: &Rule) -> Vec<PlannedDelivery> {
    rule.receivers
        .iter()
        .map(|&receiver| PlannedDelivery {
            receiver,
            rule: rule.id,
            group_window: rule.group_window,
            repeat_every: rule.repeat_every,
        })
        .collect()
}

fn item(event: NewEvent, rule: Option<&Rule>) -> IngestItem {
    IngestItem {
        id: new_id(),
        event,
        deliveries: rule.map(plan).unwrap_or_default(),
        silenced_by: None,
    }
}

fn ingest_one(s: &Store, item: IngestItem, now: OffsetDateTime) -> IngestOutcome {
    let mut out = s.ingest_events(&[item], now).unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn webhook(s: &Store, name: &str) -> ReceiverId {
    s.add_receiver(
        name,
        &ReceiverConfig::Webhook {
            url: format!("http://127.0.0.1:9/{name}"),
            format: WebhookFormat::Json,
        },
    )
    .unwrap()
}

/// A rule sending everything to the console and `receivers`.
fn rule(s: &Store, name: &str, receivers: &[ReceiverId], window: u64, repeat: Option<u64>) -> Rule {
    let console = s.console_receiver_id().unwrap().unwrap();
    let mut all = vec![console];
    all.extend_from_slice(receivers);
    let id = s
        .add_rule(&NewRule {
            name: name.into(),
            matcher: Matcher::default(),
            active: None,
            receivers: all,
            group_window: Duration::from_secs(window),
            repeat_every: repeat.map(Duration::from_secs),
        })
        .unwrap();
    s.rule(id).unwrap()
}

fn deliveries_of(s: &Store, id: EventId) -> Vec<(String, NotificationKind, DeliveryStatus)> {
    s.event_detail(id)
        .unwrap()
        .deliveries
        .into_iter()
        .map(|d| (d.receiver_name, d.kind, d.status))
        .collect()
}

fn new_of(o: &IngestOutcome) -> (EventId, usize, Option<EventId>) {
    match o {
        IngestOutcome::New {
            id,
            deliveries,
            grouped_into,
            ..
        } => (*id, *deliveries, *grouped_into),
        other => panic!("expected a new event, got {other:?}"),
    }
}

fn delivered(s: &Store, delivery: DeliveryId, when: OffsetDateTime) -> DeliveryStatus {
    s.record_attempt(
        delivery,
        &AttemptRecord {
            started_at: when,
            latency: Duration::from_millis(12),
            http_status: Some(200),
            outcome: AttemptOutcome::Delivered,
        },
    )
    .unwrap()
}

fn failed(
    s: &Store,
    delivery: DeliveryId,
    when: OffsetDateTime,
    next: Option<OffsetDateTime>,
) -> DeliveryStatus {
    s.record_attempt(
        delivery,
        &AttemptRecord {
            started_at: when,
            latency: Duration::from_millis(5),
            http_status: Some(503),
            outcome: AttemptOutcome::Failed {
                error: "HTTP 503".into(),
                next_attempt_at: next,
            },
        },
    )
    .unwrap()
}

#[test]
fn migration_from_v3_keeps_data_and_adds_the_console_defaults() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(schema::db_path(dir.path())).unwrap();
        for (i, sql) in MIGRATIONS[..3].iter().enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO zones (name) VALUES ('Main');
             INSERT INTO holidays (date, name) VALUES ('2026-12-25', 'Christmas');
             INSERT INTO gate_events (at_ms, received_ms, gate_id, kind, gate_seq)
                 VALUES (1, 2, 7, 'forced_open', 1);",
        )
        .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        s.schema_version().unwrap(),
        crate::schema::current_version()
    );
    assert_eq!(s.list_zones().unwrap()[0].name, "Main");
    assert_eq!(s.highest_event_seqs().unwrap(), [(7, 1)]);
    let receivers = s.list_receivers().unwrap();
    assert_eq!(receivers.len(), 1);
    assert_eq!(
        (
            receivers[0].name.as_str(),
            &receivers[0].config,
            receivers[0].enabled
        ),
        ("console", &ReceiverConfig::Console, true)
    );
    let rules = s.list_rules().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].name, "console: warning and above");
    assert_eq!(rules[0].matcher.min_severity, Severity::Warning);
    assert_eq!(rules[0].receivers, [receivers[0].id]);
    assert_eq!(
        (rules[0].group_window, rules[0].repeat_every),
        (Duration::ZERO, None)
    );
    let config = s.load_alert_config(T0).unwrap();
    assert_eq!(config.holidays, [date!(2026 - 12 - 25)]);
    assert_eq!((config.rules.len(), config.receivers.len()), (1, 1));
    assert_eq!(s.integrity_check().unwrap(), "ok");
    let fk_problems: i64 = s
        .conn()
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk_problems, 0);
    // Holidays move the alert revision too (the planner's schedules use them).
    let rev = s.alert_config_revision().unwrap();
    s.add_holiday(date!(2026 - 01 - 01), "New Year").unwrap();
    assert_eq!(s.alert_config_revision().unwrap(), rev + 1);
}

#[test]
fn sources_have_one_time_keys_stored_as_hashes() {
    let (_d, s) = store();
    let (nvr, key) = s
        .add_event_source(
            "nvr-yard",
            SourceKind::Nvr,
            Some("frigate"),
            Some("http://10.0.0.5:5000"),
            T0,
        )
        .unwrap();
    assert_eq!(key.expose().len(), 43);
    assert!(!format!("{key:?}").contains(key.expose()));
    assert_eq!(
        (nvr.name.as_str(), nvr.kind, nvr.enabled, nvr.created_at),
        ("nvr-yard", SourceKind::Nvr, true, T0)
    );
    assert_eq!(
        s.event_source_by_key(key.expose()).unwrap(),
        Some(nvr.clone())
    );
    assert_eq!(s.event_source_by_key("wrong").unwrap(), None);
    let stored: Vec<u8> = s
        .conn()
        .query_row("SELECT key_hash FROM event_sources", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, api_key_hash(key.expose()));

    match s.add_event_source("nvr-yard", SourceKind::Nvr, None, None, T0) {
        Err(e @ StoreError::NameTaken { .. }) => {
            assert!(matches!(
                e,
                StoreError::NameTaken {
                    entity: Entity::EventSource,
                    ..
                }
            ));
            assert_eq!(
                e.to_string(),
                "event source name \"nvr-yard\" is already taken"
            );
        }
        other => panic!("{other:?}"),
    }
    match s.add_event_source("nvr-gate", SourceKind::Nvr, Some("frigate"), None, T0) {
        Err(e @ StoreError::Conflict { .. }) => {
            assert!(e.to_string().contains("MQTT prefix \"frigate\""), "{e}")
        }
        other => panic!("{other:?}"),
    }
    for (name, prefix, url, field) in [
        ("system", None, None, "source name"),
        ("bad name", None, None, "source name"),
        ("nvr-2", Some("frigate/#"), None, "MQTT prefix"),
        ("nvr-2", Some("/frigate"), None, "MQTT prefix"),
        ("nvr-2", None, Some("ftp://nvr"), "base URL"),
    ] {
        match s.add_event_source(name, SourceKind::Nvr, prefix, url, T0) {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }

    let (sensor, _) = s
        .add_event_source("lora-gw", SourceKind::Sensor, None, None, T0)
        .unwrap();
    let (nvr2, _) = s
        .add_event_source("nvr-gate", SourceKind::Nvr, Some("frigate-gate"), None, T0)
        .unwrap();
    let names = |v: Vec<EventSource>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(
        names(s.nvr_mqtt_prefixes().unwrap()),
        ["nvr-yard", "nvr-gate"]
    );
    s.set_event_source_enabled(nvr2.id, false).unwrap();
    assert_eq!(names(s.nvr_mqtt_prefixes().unwrap()), ["nvr-yard"]);
    assert!(!s.event_source_by_name("nvr-gate").unwrap().enabled);

    let new_key = s.rotate_event_source_key(nvr.id).unwrap();
    assert_eq!(s.event_source_by_key(key.expose()).unwrap(), None);
    assert_eq!(
        s.event_source_by_key(new_key.expose()).unwrap().unwrap().id,
        nvr.id
    );
    s.remove_event_source(sensor.id).unwrap();
    assert!(matches!(
        s.remove_event_source(sensor.id),
        Err(StoreError::NotFound {
            entity: Entity::EventSource,
            ..
        })
    ));
    assert_eq!(
        names(s.list_event_sources().unwrap()),
        ["nvr-yard", "nvr-gate"]
    );
}

#[test]
fn receivers_and_rules_are_checked_and_history_is_kept() {
    let (_d, s) = store();
    let rev0 = s.alert_config_revision().unwrap();
    let bad = |config: ReceiverConfig, field: &str| match s.add_receiver("x", &config) {
        Err(StoreError::Invalid { field: f, reason }) => {
            assert_eq!(f, field, "{reason}");
        }
        other => panic!("{field}: {other:?}"),
    };
    bad(
        ReceiverConfig::Webhook {
            url: "hooks.slack.com/x".into(),
            format: WebhookFormat::Slack,
        },
        "webhook URL",
    );
    bad(
        ReceiverConfig::Ntfy {
            url: "https://".into(),
            token: None,
        },
        "ntfy URL",
    );
    let email = |from: &str, to: Vec<&str>| ReceiverConfig::Email {
        host: "smtp.example.com".into(),
        port: 587,
        security: SmtpSecurity::Starttls,
        username: None,
        password: None,
        from: from.into(),
        to: to.into_iter().map(str::to_string).collect(),
    };
    bad(email("gatehouse@example.com", vec![]), "e-mail to");
    bad(
        email("gatehouse@example.com", vec!["ops at example"]),
        "e-mail to",
    );
    bad(email("nobody", vec!["ops@example.com"]), "e-mail from");
    let mail = s
        .add_receiver(
            "ops-mail",
            &email("Gatehouse <gatehouse@example.com>", vec!["ops@example.com"]),
        )
        .unwrap();
    assert!(matches!(
        s.add_receiver("ops-mail", &email("a@b", vec!["c@d"])),
        Err(StoreError::NameTaken {
            entity: Entity::Receiver,
            ..
        })
    ));
    assert!(matches!(
        s.add_receiver("console-2", &ReceiverConfig::Console),
        Err(StoreError::Conflict {
            entity: Entity::Receiver,
            ..
        })
    ));
    assert!(matches!(
        s.set_receiver_config(mail, &ReceiverConfig::Console),
        Err(StoreError::Conflict { .. })
    ));
    let hook = webhook(&s, "slack");

    let new_rule = |receivers: Vec<ReceiverId>| NewRule {
        name: "intrusions".into(),
        matcher: Matcher {
            kinds: vec!["intrusion".into(), "review.*".into()],
            min_severity: Severity::Warning,
            ..Matcher::default()
        },
        active: None,
        receivers,
        group_window: Duration::from_secs(60),
        repeat_every: Some(Duration::from_secs(300)),
    };
    assert!(matches!(
        s.add_rule(&new_rule(vec![hook, 999])),
        Err(StoreError::NotFound {
            entity: Entity::Receiver,
            ..
        })
    ));
    assert!(matches!(
        s.add_rule(&new_rule(vec![])),
        Err(StoreError::Invalid {
            field: "rule receivers",
            ..
        })
    ));
    assert!(matches!(
        s.add_rule(&NewRule {
            group_window: Duration::from_millis(1500),
            ..new_rule(vec![hook])
        }),
        Err(StoreError::Invalid {
            field: "group window",
            ..
        })
    ));
    let r = s.add_rule(&new_rule(vec![hook, mail, hook])).unwrap();
    let got = s.rule(r).unwrap();
    assert_eq!(got.receivers, [mail, hook]);
    assert_eq!(got.repeat_every, Some(Duration::from_secs(300)));
    assert_eq!(s.rule_by_name("intrusions").unwrap().id, r);
    assert!(matches!(
        s.add_rule(&new_rule(vec![hook])),
        Err(StoreError::NameTaken {
            entity: Entity::Rule,
            ..
        })
    ));
    s.update_rule(
        r,
        &NewRule {
            repeat_every: None,
            ..new_rule(vec![hook])
        },
    )
    .unwrap();
    let got = s.rule(r).unwrap();
    assert_eq!(
        (got.receivers.as_slice(), got.repeat_every),
        (&[hook][..], None)
    );
    assert!(s.alert_config_revision().unwrap() > rev0);

    // The console stays; a receiver a rule sends to is refused; one with pending
    // deliveries is refused; otherwise it becomes a tombstone.
    let console = s.console_receiver_id().unwrap().unwrap();
    assert!(matches!(
        s.remove_receiver(console, T0),
        Err(StoreError::Conflict { .. })
    ));
    match s.remove_receiver(hook, T0) {
        Err(e @ StoreError::InUse { .. }) => assert!(e.to_string().contains("intrusions"), "{e}"),
        other => panic!("{other:?}"),
    }
    let default_rule = s.list_rules().unwrap()[0].clone();
    let lone = s
        .add_rule(&NewRule {
            name: "mail everything".into(),
            matcher: Matcher::default(),
            active: None,
            receivers: vec![mail],
            group_window: Duration::ZERO,
            repeat_every: None,
        })
        .unwrap();
    let lone = s.rule(lone).unwrap();
    let (id, n, _) = new_of(&ingest_one(
        &s,
        item(
            event("nvr-yard", "intrusion", Severity::Info, None),
            Some(&lone),
        ),
        T0,
    ));
    assert_eq!(n, 1);
    s.remove_rule(lone.id).unwrap();
    match s.remove_receiver(mail, T0) {
        Err(e @ StoreError::InUse { .. }) => {
            assert!(e.to_string().contains("1 pending deliveries"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let d = s.event_detail(id).unwrap().deliveries[0].clone();
    assert_eq!(d.rule, None, "removing a rule keeps its deliveries");
    assert_eq!(failed(&s, d.id, T0, None), DeliveryStatus::Dead);
    s.remove_receiver(mail, at(1)).unwrap();
    assert!(matches!(s.receiver(mail), Err(StoreError::NotFound { .. })));
    assert_eq!(
        deliveries_of(&s, id)[0].0,
        "ops-mail",
        "history keeps the name"
    );
    let again = s
        .add_receiver("ops-mail", &email("a@example.com", vec!["b@example.com"]))
        .unwrap();
    assert_ne!(again, mail);
    assert_eq!(
        s.list_receivers()
            .unwrap()
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["console", "slack", "ops-mail"]
    );
    s.set_receiver_enabled(hook, false).unwrap();
    s.set_rule_enabled(default_rule.id, false).unwrap();
    let config = s.load_alert_config(T0).unwrap();
    assert_eq!(
        config.rules.iter().map(|r| r.id).collect::<Vec<_>>(),
        [r],
        "only enabled rules"
    );
    assert_eq!(
        config.receivers.iter().map(|r| r.id).collect::<Vec<_>>(),
        [console, again],
        "only enabled receivers"
    );
}

#[test]
fn silences_list_by_time_and_expire() {
    let (_d, s) = store();
    let new = |from: i64, to: i64| NewSilence {
        matcher: Matcher {
            zones: vec!["driveway".into()],
            ..Matcher::default()
        },
        starts_at: at(from),
        ends_at: at(to),
        author: "alice".into(),
        comment: "roadworks".into(),
    };
    assert!(matches!(
        s.add_silence(&new(10, 10), T0),
        Err(StoreError::Invalid {
            field: "silence",
            ..
        })
    ));
    assert!(matches!(
        s.add_silence(
            &NewSilence {
                author: " ".into(),
                ..new(0, 10)
            },
            T0
        ),
        Err(StoreError::Invalid {
            field: "silence author",
            ..
        })
    ));
    let now = s.add_silence(&new(0, 3600), T0).unwrap();
    let later = s.add_silence(&new(7200, 9000), T0).unwrap();
    let ids = |v: Vec<gatehouse_alerts::model::Silence>| v.iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_silences(None).unwrap()), [now, later]);
    assert_eq!(ids(s.list_silences(Some(at(60))).unwrap()), [now]);
    assert_eq!(ids(s.list_silences(Some(at(7200))).unwrap()), [later]);
    assert_eq!(
        ids(s.load_alert_config(at(60)).unwrap().silences),
        [now, later]
    );
    assert!(s.expire_silence(now, at(120)).unwrap());
    assert!(!s.expire_silence(now, at(130)).unwrap());
    assert_eq!(s.silence(now).unwrap().ends_at, at(120));
    // Expiring one that has not started ends it before it starts.
    assert!(s.expire_silence(later, at(130)).unwrap());
    let l = s.silence(later).unwrap();
    assert_eq!(l.ends_at, l.starts_at);
    assert!(s.list_silences(Some(at(7200))).unwrap().is_empty());
    assert!(s.load_alert_config(at(200)).unwrap().silences.is_empty());
    assert!(matches!(
        s.expire_silence(999, T0),
        Err(StoreError::NotFound {
            entity: Entity::Silence,
            ..
        })
    ));
}

#[test]
fn ingest_dedups_folds_and_resolves_an_ended_event() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let all = rule(&s, "all", &[hook], 0, None);

    let first = item(
        frigate("fr-1", Severity::Info, Lifecycle::Active),
        Some(&all),
    );
    let (id, n, grouped) = new_of(&ingest_one(&s, first.clone(), T0));
    assert_eq!((id, n, grouped), (first.id, 2, None));
    assert_eq!(
        deliveries_of(&s, id),
        [
            (
                "console".into(),
                NotificationKind::Firing,
                DeliveryStatus::Delivered
            ),
            (
                "hook".into(),
                NotificationKind::Firing,
                DeliveryStatus::Pending
            ),
        ]
    );
    let stored = s.event(id).unwrap();
    assert_eq!(
        (stored.received_at, stored.new.lifecycle),
        (T0, Lifecycle::Active)
    );

    // A retransmission: same event, nothing changes, nothing new is sent.
    let again = item(
        frigate("fr-1", Severity::Info, Lifecycle::Active),
        Some(&all),
    );
    let seq = stored.seq;
    assert_eq!(
        ingest_one(&s, again, at(1)),
        IngestOutcome::Existing {
            id,
            seq,
            changed: false,
            deliveries: 0,
            resolved_deliveries: 0
        }
    );

    // An update: severity rises, a missing URL is filled.
    let mut update = frigate("fr-1", Severity::Critical, Lifecycle::Active);
    update.snapshot_url = Some("http://nvr/snap/1.jpg".into());
    update.zone = Some("garden".into());
    assert!(matches!(
        ingest_one(&s, item(update, Some(&all)), at(2)),
        IngestOutcome::Existing {
            changed: true,
            deliveries: 0,
            ..
        }
    ));
    // Another: a lower severity and a different URL change nothing.
    let mut lower = frigate("fr-1", Severity::Warning, Lifecycle::Active);
    lower.snapshot_url = Some("http://nvr/snap/2.jpg".into());
    assert!(matches!(
        ingest_one(&s, item(lower, Some(&all)), at(3)),
        IngestOutcome::Existing { changed: false, .. }
    ));
    let e = s.event(id).unwrap();
    assert_eq!(e.new.severity, Severity::Critical);
    assert_eq!(e.new.snapshot_url.as_deref(), Some("http://nvr/snap/1.jpg"));
    assert_eq!(
        e.new.zone.as_deref(),
        Some("driveway"),
        "filled, never overwritten"
    );

    // The end: lifecycle, ended_at, and a resolved notice to each receiver that fired.
    let mut end = frigate("fr-1", Severity::Info, Lifecycle::Ended);
    end.time = at(30);
    assert!(matches!(
        ingest_one(&s, item(end.clone(), Some(&all)), at(31)),
        IngestOutcome::Existing {
            changed: true,
            resolved_deliveries: 2,
            deliveries: 0,
            ..
        }
    ));
    let e = s.event(id).unwrap();
    assert_eq!(
        (e.new.lifecycle, e.ended_at),
        (Lifecycle::Ended, Some(at(30)))
    );
    assert_eq!(
        deliveries_of(&s, id)[2..],
        [
            (
                "console".into(),
                NotificationKind::Resolved,
                DeliveryStatus::Delivered
            ),
            (
                "hook".into(),
                NotificationKind::Resolved,
                DeliveryStatus::Pending
            ),
        ]
    );
    // The end again: nothing more.
    assert!(matches!(
        ingest_one(&s, item(end, Some(&all)), at(32)),
        IngestOutcome::Existing {
            changed: false,
            resolved_deliveries: 0,
            ..
        }
    ));
    // The same external id from another source is another event.
    let other = item(
        NewEvent {
            source: "nvr-gate".into(),
            ..frigate("fr-1", Severity::Info, Lifecycle::Active)
        },
        None,
    );
    assert!(matches!(
        ingest_one(&s, other, at(33)),
        IngestOutcome::New { .. }
    ));
    assert!(s.reconcile().unwrap().is_consistent());
}

#[test]
fn a_batch_folds_repeated_external_ids_and_refuses_only_bad_items() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let all = rule(&s, "all", &[hook], 0, None);
    let mut too_long = event("nvr-yard", "intrusion", Severity::Info, None);
    too_long.message = Some("x".repeat(gatehouse_alerts::model::limits::MESSAGE + 1));
    let first = item(
        frigate("fr-9", Severity::Warning, Lifecycle::Active),
        Some(&all),
    );
    let reused_id = IngestItem {
        id: first.id,
        ..item(event("nvr-yard", "intrusion", Severity::Info, None), None)
    };
    let batch = vec![
        first.clone(),
        item(
            frigate("fr-9", Severity::Critical, Lifecycle::Active),
            Some(&all),
        ),
        item(too_long, Some(&all)),
        item(
            event("nvr-yard", "Bad Kind", Severity::Info, None),
            Some(&all),
        ),
        item(
            frigate("fr-9", Severity::Info, Lifecycle::Ended),
            Some(&all),
        ),
        reused_id,
        item(
            event("gate-1", "door_forced", Severity::Critical, None),
            Some(&all),
        ),
    ];
    let out = s.ingest_events(&batch, T0).unwrap();
    assert!(matches!(out[0], IngestOutcome::New { deliveries: 2, .. }));
    assert!(matches!(out[1], IngestOutcome::Existing { id, changed: true, .. } if id == first.id));
    assert!(matches!(
        out[2],
        IngestOutcome::Refused {
            field: "message",
            ..
        }
    ));
    assert!(matches!(
        out[3],
        IngestOutcome::Refused { field: "kind", .. }
    ));
    assert!(matches!(
        out[4],
        IngestOutcome::Existing {
            resolved_deliveries: 2,
            ..
        }
    ));
    assert!(matches!(
        out[5],
        IngestOutcome::Refused {
            field: "event id",
            ..
        }
    ));
    assert!(matches!(out[6], IngestOutcome::New { deliveries: 2, .. }));
    let all_events = s.list_events(&EventFilter::default()).unwrap();
    assert_eq!(all_events.len(), 2);
    assert_eq!(all_events[1].new.severity, Severity::Critical);
    assert_eq!(all_events[1].new.lifecycle, Lifecycle::Ended);
}

#[test]
fn an_update_that_raises_severity_into_a_rule_notifies_once() {
    let (_d, s) = store();
    let default_rule = s.list_rules().unwrap()[0].clone(); // warning and above
    let (id, n, _) = new_of(&ingest_one(
        &s,
        item(frigate("fr-2", Severity::Info, Lifecycle::Active), None),
        T0,
    ));
    assert_eq!(n, 0);
    for t in [1, 2] {
        let out = ingest_one(
            &s,
            item(
                frigate("fr-2", Severity::Warning, Lifecycle::Active),
                Some(&default_rule),
            ),
            at(t),
        );
        let expected = if t == 1 { 1 } else { 0 };
        assert!(
            matches!(out, IngestOutcome::Existing { deliveries, .. } if deliveries == expected),
            "{out:?}"
        );
    }
    assert_eq!(deliveries_of(&s, id).len(), 1);
    // An event that arrives already ended fires and resolves at once.
    let (ended, n, _) = new_of(&ingest_one(
        &s,
        item(
            frigate("fr-3", Severity::Warning, Lifecycle::Ended),
            Some(&default_rule),
        ),
        at(3),
    ));
    assert_eq!(n, 2);
    assert_eq!(
        deliveries_of(&s, ended)
            .into_iter()
            .map(|d| d.1)
            .collect::<Vec<_>>(),
        [NotificationKind::Firing, NotificationKind::Resolved]
    );
    assert!(s.reconcile().unwrap().is_consistent());
}

#[test]
fn grouping_inside_and_outside_the_window() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let grouped = rule(&s, "grouped", &[hook], 60, None);
    let ev = |zone: Option<&str>| {
        item(
            event("nvr-yard", "intrusion", Severity::Warning, zone),
            Some(&grouped),
        )
    };

    let (a, n, g) = new_of(&ingest_one(&s, ev(Some("driveway")), T0));
    assert_eq!((n, g), (2, None));
    // Inside the window: joins a, no delivery of its own.
    let (b, n, g) = new_of(&ingest_one(&s, ev(Some("driveway")), at(30)));
    assert_eq!((n, g), (0, Some(a)));
    assert_eq!(s.event(b).unwrap().grouped_into, Some(a));
    assert!(deliveries_of(&s, b).is_empty());
    // Another zone, another kind, another source: their own groups.
    assert_eq!(new_of(&ingest_one(&s, ev(Some("garden")), at(31))).1, 2);
    let other_kind = item(
        event("nvr-yard", "fire", Severity::Warning, Some("driveway")),
        Some(&grouped),
    );
    assert_eq!(new_of(&ingest_one(&s, other_kind, at(32))).1, 2);
    // No zone groups with no zone.
    let (nz, _, _) = new_of(&ingest_one(&s, ev(None), at(33)));
    assert_eq!(new_of(&ingest_one(&s, ev(None), at(34))).2, Some(nz));
    // Outside a's window (measured from a): a new head, and later ones join it.
    let (d, n, g) = new_of(&ingest_one(&s, ev(Some("driveway")), at(61)));
    assert_eq!((n, g), (2, None));
    assert_eq!(
        new_of(&ingest_one(&s, ev(Some("driveway")), at(90))).2,
        Some(d)
    );
    // In one batch, too.
    let out = s
        .ingest_events(&[ev(Some("shed")), ev(Some("shed"))], at(200))
        .unwrap();
    let head = new_of(&out[0]).0;
    assert_eq!(new_of(&out[1]).2, Some(head));
    // A rule without a window does not group.
    let plain = rule(&s, "plain", &[], 0, None);
    let p = || {
        item(
            event("nvr-yard", "smoke", Severity::Warning, None),
            Some(&plain),
        )
    };
    assert_eq!(new_of(&ingest_one(&s, p(), at(300))).1, 1);
    assert_eq!(new_of(&ingest_one(&s, p(), at(301))).1, 1);
}

#[test]
fn a_silenced_event_is_stored_without_deliveries() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let all = rule(&s, "all", &[hook], 0, Some(60));
    let silence = s
        .add_silence(
            &NewSilence {
                matcher: Matcher::default(),
                starts_at: T0,
                ends_at: at(3600),
                author: "alice".into(),
                comment: "maintenance".into(),
            },
            T0,
        )
        .unwrap();
    let mut it = item(
        event("nvr-yard", "intrusion", Severity::Critical, None),
        Some(&all),
    );
    it.silenced_by = Some(silence);
    let (id, n, _) = new_of(&ingest_one(&s, it, at(1)));
    assert_eq!(n, 0);
    let detail = s.event_detail(id).unwrap();
    assert_eq!(detail.silenced_by, Some(silence));
    assert!(detail.deliveries.is_empty());
    assert_eq!(s.next_repeat_at().unwrap(), None);
}

#[test]
fn deliveries_go_only_to_enabled_receivers_of_enabled_rules() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let all = rule(&s, "all", &[hook], 0, None);
    s.set_receiver_enabled(hook, false).unwrap();
    let (id, n, _) = new_of(&ingest_one(
        &s,
        item(
            event("nvr-yard", "intrusion", Severity::Info, None),
            Some(&all),
        ),
        T0,
    ));
    assert_eq!(n, 1);
    assert_eq!(deliveries_of(&s, id)[0].0, "console");
    s.set_rule_enabled(all.id, false).unwrap();
    let (_, n, _) = new_of(&ingest_one(
        &s,
        item(
            event("nvr-yard", "intrusion", Severity::Info, None),
            Some(&all),
        ),
        T0,
    ));
    assert_eq!(n, 0);
}

#[test]
fn the_outbox_retries_delivers_and_gives_up() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let all = rule(&s, "all", &[hook], 0, None);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            new_of(&ingest_one(
                &s,
                item(
                    event("nvr-yard", "intrusion", Severity::Info, None),
                    Some(&all),
                ),
                T0,
            ))
            .0,
        );
    }
    // Console deliveries are delivered at once; the webhook's wait, in id order.
    let due = s.due_deliveries(hook, T0, 10, &[]).unwrap();
    assert_eq!(due.iter().map(|n| n.event.id).collect::<Vec<_>>(), ids);
    assert!(due.iter().all(|n| n.kind == NotificationKind::Firing));
    let [d1, d2, d3] = [due[0].delivery, due[1].delivery, due[2].delivery];
    assert_eq!(
        s.due_deliveries(hook, T0, 1, &[d1])
            .unwrap()
            .iter()
            .map(|n| n.delivery)
            .collect::<Vec<_>>(),
        [d2]
    );
    assert_eq!(s.next_due_at(hook, &[]).unwrap(), Some(T0));
    assert_eq!(s.next_due_at(hook, &[d1, d2, d3]).unwrap(), None);
    assert!(s
        .due_deliveries(hook, T0 - time::Duration::SECOND, 10, &[])
        .unwrap()
        .is_empty());

    // d1: fails once, then is delivered.
    assert_eq!(failed(&s, d1, T0, Some(at(10))), DeliveryStatus::Pending);
    assert_eq!(
        s.due_deliveries(hook, at(5), 10, &[])
            .unwrap()
            .iter()
            .map(|n| n.delivery)
            .collect::<Vec<_>>(),
        [d2, d3]
    );
    assert_eq!(s.next_due_at(hook, &[d2, d3]).unwrap(), Some(at(10)));
    assert_eq!(delivered(&s, d1, at(10)), DeliveryStatus::Delivered);
    // A second report for it is refused, so the log keeps one success.
    assert!(matches!(
        s.record_attempt(
            d1,
            &AttemptRecord {
                started_at: at(11),
                latency: Duration::ZERO,
                http_status: None,
                outcome: AttemptOutcome::Delivered
            }
        ),
        Err(StoreError::Conflict {
            entity: Entity::Delivery,
            ..
        })
    ));
    assert!(matches!(
        s.record_attempt(
            999,
            &AttemptRecord {
                started_at: at(11),
                latency: Duration::ZERO,
                http_status: None,
                outcome: AttemptOutcome::Delivered
            }
        ),
        Err(StoreError::NotFound {
            entity: Entity::Delivery,
            ..
        })
    ));
    // d2: fails until it is dead.
    assert_eq!(failed(&s, d2, T0, Some(at(1))), DeliveryStatus::Pending);
    assert_eq!(failed(&s, d2, at(1), None), DeliveryStatus::Dead);
    // d3 stays pending.

    let log = s
        .delivery_log(&DeliveryLogFilter {
            after_id: Some(0),
            receiver: Some(hook),
            ..DeliveryLogFilter::default()
        })
        .unwrap();
    let seen: Vec<(DeliveryId, u32, DeliveryLogOutcome, Option<u16>)> = log
        .iter()
        .map(|l| (l.delivery, l.attempt, l.outcome, l.http_status))
        .collect();
    assert_eq!(
        seen,
        [
            (d1, 1, DeliveryLogOutcome::Failed, Some(503)),
            (d1, 2, DeliveryLogOutcome::Delivered, Some(200)),
            (d2, 1, DeliveryLogOutcome::Failed, Some(503)),
            (d2, 2, DeliveryLogOutcome::Dead, Some(503)),
        ]
    );
    assert_eq!(log[1].latency, Duration::from_millis(12));
    assert_eq!(log[1].event, ids[0]);
    let d1_detail = &s.event_detail(ids[0]).unwrap().deliveries[1];
    assert_eq!(
        (
            d1_detail.attempts,
            d1_detail.delivered_at,
            d1_detail.last_error.as_deref()
        ),
        (2, Some(at(10) + time::Duration::milliseconds(12)), None)
    );
    let d2_detail = &s.event_detail(ids[1]).unwrap().deliveries[1];
    assert_eq!(d2_detail.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        s.delivery_log(&DeliveryLogFilter {
            event: Some(ids[1]),
            outcome: Some(DeliveryLogOutcome::Dead),
            ..DeliveryLogFilter::default()
        })
        .unwrap()
        .len(),
        1
    );

    let counts: Vec<(String, DeliveryStatus, u64)> = s
        .delivery_counts()
        .unwrap()
        .into_iter()
        .map(|c| (c.receiver_name, c.status, c.count))
        .collect();
    assert_eq!(
        counts,
        [
            ("console".into(), DeliveryStatus::Delivered, 3),
            ("hook".into(), DeliveryStatus::Dead, 1),
            ("hook".into(), DeliveryStatus::Delivered, 1),
            ("hook".into(), DeliveryStatus::Pending, 1),
        ]
    );
    let depth: Vec<(String, u64)> = s
        .queue_depth()
        .unwrap()
        .into_iter()
        .map(|q| (q.receiver_name, q.pending))
        .collect();
    assert_eq!(depth, [("console".into(), 0), ("hook".into(), 1)]);
    assert_eq!(
        s.event_counts_by_source_kind().unwrap(),
        [(SourceKind::Nvr, 3)]
    );
    let r = s.reconcile().unwrap();
    assert!(r.is_consistent(), "{r}");
    assert_eq!(
        (
            r.events,
            r.pending,
            r.delivered,
            r.dead,
            r.log_rows,
            r.attempts
        ),
        (3, 1, 4, 1, 7, 7)
    );
}

#[test]
fn repeats_until_acknowledged_and_the_console_feed_resumes() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let critical = rule(&s, "critical", &[hook], 0, Some(60));
    assert_eq!(s.latest_console_delivery().unwrap(), 0);
    let (id, _, _) = new_of(&ingest_one(
        &s,
        item(
            event("gate-1", "door_forced", Severity::Critical, None),
            Some(&critical),
        ),
        T0,
    ));
    assert_eq!(s.next_repeat_at().unwrap(), Some(at(60)));
    assert_eq!(s.enqueue_due_repeats(at(59)).unwrap(), 0);
    assert_eq!(s.enqueue_due_repeats(at(60)).unwrap(), 2);
    assert_eq!(
        s.enqueue_due_repeats(at(60)).unwrap(),
        0,
        "once per interval"
    );
    assert_eq!(s.next_repeat_at().unwrap(), Some(at(120)));
    // A late scheduler sends one reminder, not the missed ones.
    assert_eq!(s.enqueue_due_repeats(at(500)).unwrap(), 2);
    assert_eq!(s.next_repeat_at().unwrap(), Some(at(560)));
    let kinds: Vec<NotificationKind> = s
        .due_deliveries(hook, at(500), 10, &[])
        .unwrap()
        .iter()
        .map(|n| n.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            NotificationKind::Firing,
            NotificationKind::Repeat(1),
            NotificationKind::Repeat(2)
        ]
    );

    match s
        .ack_event(id, "alice", Some("on my way"), at(510))
        .unwrap()
    {
        AckOutcome::Acked(a) => assert_eq!((a.by.as_str(), a.at), ("alice", at(510))),
        other => panic!("{other:?}"),
    }
    match s.ack_event(id, "bob", None, at(520)).unwrap() {
        AckOutcome::AlreadyAcked(a) => {
            assert_eq!(
                (a.by.as_str(), a.comment.as_deref()),
                ("alice", Some("on my way"))
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.ack_event(id, "", None, at(520)),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        s.ack_event(new_id(), "alice", None, at(520)),
        Err(StoreError::NotFound {
            entity: Entity::Event,
            ..
        })
    ));
    assert_eq!(s.event(id).unwrap().ack.unwrap().by, "alice");
    assert_eq!(s.next_repeat_at().unwrap(), None);
    assert_eq!(s.enqueue_due_repeats(at(10_000)).unwrap(), 0);

    // The console feed: everything the console got, in id order, resumable.
    let feed = s.console_feed(0, 100).unwrap();
    assert_eq!(
        feed.iter().map(|n| n.kind).collect::<Vec<_>>(),
        [
            NotificationKind::Firing,
            NotificationKind::Repeat(1),
            NotificationKind::Repeat(2)
        ]
    );
    assert!(feed.iter().all(|n| n.event.id == id));
    assert_eq!(s.latest_console_delivery().unwrap(), feed[2].delivery);
    let resumed = s.console_feed(feed[0].delivery, 100).unwrap();
    assert_eq!(resumed, feed[1..]);
    assert_eq!(s.console_feed(feed[0].delivery, 1).unwrap(), feed[1..2]);
    assert!(s.console_feed(feed[2].delivery, 100).unwrap().is_empty());

    // An end stops repeats too; a disabled rule's schedule is dropped when due.
    let (ended, _, _) = new_of(&ingest_one(
        &s,
        item(
            frigate("fr-r", Severity::Critical, Lifecycle::Active),
            Some(&critical),
        ),
        at(600),
    ));
    assert_eq!(s.next_repeat_at().unwrap(), Some(at(660)));
    ingest_one(
        &s,
        item(
            frigate("fr-r", Severity::Critical, Lifecycle::Ended),
            Some(&critical),
        ),
        at(610),
    );
    assert_eq!(s.next_repeat_at().unwrap(), None);
    assert_eq!(s.event(ended).unwrap().new.lifecycle, Lifecycle::Ended);
    ingest_one(
        &s,
        item(
            event("gate-1", "tamper", Severity::Critical, None),
            Some(&critical),
        ),
        at(700),
    );
    s.set_rule_enabled(critical.id, false).unwrap();
    assert_eq!(s.enqueue_due_repeats(at(760)).unwrap(), 0);
    assert_eq!(s.next_repeat_at().unwrap(), None);
    assert!(s.reconcile().unwrap().is_consistent());
}

#[test]
fn list_events_filters_and_pages() {
    let (_d, s) = store();
    let mut items = Vec::new();
    for (i, (kind, sev, zone)) in [
        ("review.person", Severity::Warning, "driveway"),
        ("review.car", Severity::Info, "garden"),
        ("intrusion", Severity::Critical, "100%_zone"),
        ("fire", Severity::Critical, "kitchen"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = event(
            if i < 2 { "nvr-yard" } else { "nvr-gate" },
            kind,
            sev,
            Some(zone),
        );
        e.message = Some(format!("Message {i}"));
        items.push(item(e, None));
    }
    for (i, it) in items.iter().enumerate() {
        ingest_one(&s, it.clone(), at(i64::try_from(i).unwrap() * 10));
    }
    s.ack_event(items[3].id, "alice", None, at(100)).unwrap();
    let ids = |f: EventFilter| {
        s.list_events(&f)
            .unwrap()
            .iter()
            .map(|e| items.iter().position(|i| i.id == e.id).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(EventFilter::default()), [3, 2, 1, 0], "newest first");
    let seq0 = s.event(items[0].id).unwrap().seq;
    assert_eq!(
        ids(EventFilter {
            after_seq: Some(seq0),
            ..EventFilter::default()
        }),
        [1, 2, 3],
        "after: oldest first"
    );
    assert_eq!(
        ids(EventFilter {
            before_seq: Some(seq0 + 2),
            limit: 1,
            ..EventFilter::default()
        }),
        [1]
    );
    assert_eq!(
        ids(EventFilter {
            kind: Some("review.*".into()),
            ..EventFilter::default()
        }),
        [1, 0]
    );
    assert_eq!(
        ids(EventFilter {
            kind: Some("review".into()),
            ..EventFilter::default()
        }),
        Vec::<usize>::new()
    );
    assert_eq!(
        ids(EventFilter {
            severity_min: Some(Severity::Warning),
            source: Some("nvr-yard".into()),
            ..EventFilter::default()
        }),
        [0]
    );
    assert_eq!(
        ids(EventFilter {
            acked: Some(true),
            ..EventFilter::default()
        }),
        [3]
    );
    assert_eq!(
        ids(EventFilter {
            acked: Some(false),
            since: Some(at(10)),
            until: Some(at(30)),
            ..EventFilter::default()
        }),
        [2, 1]
    );
    // Text search: case-insensitive, and LIKE's wildcards match only themselves.
    assert_eq!(
        ids(EventFilter {
            text: Some("message 2".into()),
            ..EventFilter::default()
        }),
        [2]
    );
    assert_eq!(
        ids(EventFilter {
            text: Some("0%_".into()),
            ..EventFilter::default()
        }),
        [2]
    );
    assert_eq!(
        ids(EventFilter {
            text: Some("%".into()),
            ..EventFilter::default()
        }),
        [2]
    );
    assert!(matches!(
        s.event(new_id()),
        Err(StoreError::NotFound {
            entity: Entity::Event,
            ..
        })
    ));
}

#[test]
fn reconcile_finds_what_does_not_add_up() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let all = rule(&s, "all", &[hook], 0, None);
    for _ in 0..4 {
        ingest_one(
            &s,
            item(
                event("nvr-yard", "intrusion", Severity::Info, None),
                Some(&all),
            ),
            T0,
        );
    }
    let due = s.due_deliveries(hook, T0, 10, &[]).unwrap();
    delivered(&s, due[0].delivery, T0);
    failed(&s, due[1].delivery, T0, None);
    let ok = s.reconcile().unwrap();
    assert!(ok.is_consistent(), "{ok}");
    assert!(ok.to_string().ends_with("consistent"));
    // Break it the ways a bug could.
    s.conn()
        .execute_batch(&format!(
            "UPDATE deliveries SET status = 'delivered', attempts = 1 WHERE id = {};
             DELETE FROM delivery_log WHERE delivery_id = {} AND outcome = 'dead';
             INSERT INTO delivery_log (delivery_id, attempt, started_at, latency_ms, outcome)
                 VALUES ({}, 2, 0, 0, 'delivered');",
            due[2].delivery, due[1].delivery, due[0].delivery
        ))
        .unwrap();
    let bad = s.reconcile().unwrap();
    assert!(!bad.is_consistent());
    assert_eq!(bad.delivered_without_one_success_row, 2, "{bad}");
    assert_eq!(bad.dead_without_one_dead_row, 1, "{bad}");
    assert_eq!(bad.attempts_not_logged, 3, "{bad}");
    assert!(bad.to_string().ends_with("INCONSISTENT"));
}

#[test]
fn hot_queries_use_their_indexes() {
    let (_d, s) = store();
    let plan = |sql: &str| -> String {
        let mut st = s
            .conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = st
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap();
        rows.join("; ")
    };
    let group = plan(
        "SELECT e.id FROM events e
         WHERE e.source = 'a' AND e.kind = 'b' AND e.zone IS NULL
           AND e.received_at >= 0 AND e.seq < 10 AND e.grouped_into IS NULL
           AND EXISTS (SELECT 1 FROM deliveries d
                       WHERE d.event_seq = e.seq AND d.rule_id = 1 AND d.kind = 'firing')
         ORDER BY e.received_at DESC, e.seq DESC LIMIT 1",
    );
    assert!(group.contains("USING INDEX events_group"), "{group}");
    let due = plan(
        "SELECT d.id FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.receiver_id = 2 AND d.status = 'pending' AND d.next_attempt_at <= 5
         ORDER BY d.id LIMIT 10",
    );
    assert!(due.contains("deliveries_due"), "{due}");
    let external = plan("SELECT seq FROM events WHERE source = 'a' AND external_id = 'x'");
    assert!(external.contains("events_external"), "{external}");
    let feed = plan(
        "SELECT d.id FROM deliveries d WHERE d.receiver_id = 1 AND d.status = 'delivered'
         AND d.id > 5 ORDER BY d.id LIMIT 10",
    );
    assert!(feed.contains("deliveries_receiver_status"), "{feed}");
    assert!(!feed.contains("TEMP B-TREE"), "{feed}");
}

#[test]
fn dead_deliveries_without_their_event_are_found_until_it_is_stored() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let all = rule(&s, "all", &[hook], 0, None);
    let (id, _, _) = new_of(&ingest_one(
        &s,
        item(
            event("nvr-yard", "intrusion", Severity::Warning, None),
            Some(&all),
        ),
        T0,
    ));
    let due = s.due_deliveries(hook, T0, 10, &[]).unwrap();
    let d = due[0].delivery;
    assert!(s.dead_deliveries_without_event(10).unwrap().is_empty());
    assert_eq!(failed(&s, d, T0, None), DeliveryStatus::Dead);
    // The hub died before raising the event: the next start finds it.
    let missed = s.dead_deliveries_without_event(10).unwrap();
    assert_eq!(missed.len(), 1);
    assert_eq!(
        (missed[0].delivery, missed[0].receiver, missed[0].event),
        (d, hook, id)
    );
    assert_eq!(missed[0].receiver_name, "hook");
    assert_eq!(missed[0].severity, Severity::Warning);
    assert_eq!(missed[0].error, "HTTP 503");
    let dead = NewEvent::delivery_dead(hook, "hook", d, id, Severity::Warning, "HTTP 503", at(1));
    ingest_one(&s, item(dead, None), at(1));
    assert!(s.dead_deliveries_without_event(10).unwrap().is_empty());
}

#[test]
fn an_admin_resolves_an_active_event_once() {
    let (_d, s) = store();
    let hook = webhook(&s, "hook");
    let r = rule(&s, "all", &[hook], 0, Some(60));
    let (id, _, _) = new_of(&ingest_one(
        &s,
        item(
            frigate("f-1", Severity::Critical, Lifecycle::Active),
            Some(&r),
        ),
        T0,
    ));
    assert_eq!(s.unacknowledged_event_count().unwrap(), 1);
    assert!(s.next_repeat_at().unwrap().is_some());

    let out = s.resolve_event(id, "alice", None, at(30)).unwrap();
    assert!(out.ended_now && out.acked_now, "{out:?}");
    // Console and hook had a firing notification: both get a resolved one.
    assert_eq!(out.resolved_deliveries, 2);
    assert_eq!(out.event.new.lifecycle, Lifecycle::Ended);
    assert_eq!(out.event.ended_at, Some(at(30)));
    let ack = out.event.ack.unwrap();
    assert_eq!((ack.by.as_str(), ack.at), ("alice", at(30)));
    assert_eq!(s.next_repeat_at().unwrap(), None);
    assert_eq!(s.unacknowledged_event_count().unwrap(), 0);
    let resolved = deliveries_of(&s, id)
        .into_iter()
        .filter(|(_, k, _)| *k == NotificationKind::Resolved)
        .count();
    assert_eq!(resolved, 2);

    // Again: nothing changes, nothing more is sent.
    let again = s.resolve_event(id, "bob", Some("me too"), at(40)).unwrap();
    assert!(!again.ended_now && !again.acked_now, "{again:?}");
    assert_eq!(again.resolved_deliveries, 0);
    assert_eq!(again.event.ack.unwrap().by, "alice");
    assert!(s.reconcile().unwrap().events == 1);

    // An acknowledged instant event: ended now, the first ack stands.
    let (id2, _, _) = new_of(&ingest_one(
        &s,
        item(
            event("gate-1", "door_forced", Severity::Warning, None),
            Some(&r),
        ),
        T0,
    ));
    s.ack_event(id2, "carol", None, at(1)).unwrap();
    let out = s.resolve_event(id2, "alice", None, at(2)).unwrap();
    assert!(out.ended_now && !out.acked_now, "{out:?}");
    assert_eq!(out.event.ack.unwrap().by, "carol");

    assert!(matches!(
        s.resolve_event(new_id(), "alice", None, at(3)),
        Err(StoreError::NotFound {
            entity: Entity::Event,
            ..
        })
    ));
    assert!(matches!(
        s.resolve_event(id, " ", None, at(3)),
        Err(StoreError::Invalid { .. })
    ));
}
