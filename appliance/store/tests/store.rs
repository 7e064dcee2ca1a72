//! The store against real database files in a temporary directory: migrations, every CRUD
//! error, snapshots, and that no raw card id reaches the disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_access::model::{Direction, HolidayRule, Schedule, Validity, Window};
use gatehouse_gate_proto::Reason;
use gatehouse_store::schema::{current_version, db_path};
use gatehouse_store::{
    AccessLog, Entity, LogEntry, LogFilter, LogOutcome, LogSource, NewCard, NewGate, SiteKey,
    Store, StoreError,
};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc;
use time::macros::{date, datetime};

fn office_hours() -> Schedule {
    let day = vec![Window {
        start: 8 * 60,
        end: 18 * 60,
    }];
    Schedule {
        weekly: [
            day.clone(),
            day.clone(),
            day.clone(),
            day.clone(),
            day,
            vec![],
            vec![],
        ],
        holidays: HolidayRule::Closed,
    }
}

fn gate(name: &str, zone: i64) -> NewGate {
    NewGate {
        name: name.into(),
        zone,
        direction: Direction::In,
        relay_ms: 3000,
        allowed_ips: None,
        mqtt_username: None,
    }
}

fn log_sync(log: &AccessLog, e: LogEntry) -> Result<LogOutcome, StoreError> {
    let (tx, rx) = mpsc::channel();
    log.submit(
        e,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap()
}

#[test]
fn migrates_from_empty_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.schema_version().unwrap(), current_version());
    assert_eq!(s.revision().unwrap(), 0);
    s.add_zone("Main", false).unwrap();
    assert_eq!(s.revision().unwrap(), 1);
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.schema_version().unwrap(), current_version());
    assert_eq!(s.list_zones().unwrap().len(), 1);
    assert_eq!(s.integrity_check().unwrap(), "ok");
    let mode = std::fs::metadata(db_path(dir.path()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let jm: String = rusqlite::Connection::open(db_path(dir.path()))
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jm, "wal");
}

#[test]
fn refuses_a_database_from_the_future() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let future = current_version() + 1;
    rusqlite::Connection::open(db_path(dir.path()))
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {future}"))
        .unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(e, StoreError::TooNew { found, supported } if found == future && supported == current_version()),
        "{e}"
    );
    assert!(e.to_string().contains("newer release"), "{e}");
    assert!(matches!(
        AccessLog::start(dir.path()),
        Err(StoreError::TooNew { .. })
    ));
}

#[test]
fn crud_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let key = SiteKey::load_or_create(dir.path()).unwrap();
    let s = Store::open(dir.path()).unwrap();

    // Zones.
    let z = s.add_zone("Main", true).unwrap();
    assert!(matches!(
        s.add_zone("Main", false),
        Err(StoreError::NameTaken {
            entity: Entity::Zone,
            ..
        })
    ));
    assert!(matches!(
        s.add_zone("  ", false),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        s.zone_by_name("nope"),
        Err(StoreError::NotFound {
            entity: Entity::Zone,
            ..
        })
    ));
    assert!(matches!(
        s.set_zone_anti_passback(999, true),
        Err(StoreError::NotFound {
            entity: Entity::Zone,
            ..
        })
    ));
    assert_eq!(s.zone_by_name("Main").unwrap().id, z);

    // Gates.
    let creds = s.add_gate(&gate("front-door", z)).unwrap();
    assert_eq!(creds.mqtt_username, "gate-front-door");
    assert_eq!(format!("{:?}", creds.secret), "GateSecret(<redacted>)");
    let e = s.add_gate(&gate("front-door", z)).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::NameTaken {
                entity: Entity::Gate,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.to_string(), "gate name \"front-door\" is already taken");
    assert!(matches!(
        s.add_gate(&gate("side", 999)),
        Err(StoreError::NotFound {
            entity: Entity::Zone,
            ..
        })
    ));
    assert!(matches!(
        s.add_gate(&gate("bad name", z)),
        Err(StoreError::Invalid { .. })
    ));
    let mut g = gate("ip-gate", z);
    g.allowed_ips = Some(vec!["10.0.0.0/24".into(), "fd00::1".into()]);
    let g2 = s.add_gate(&g).unwrap();
    g.name = "ip-gate-2".into();
    g.allowed_ips = Some(vec!["10.0.0.0/33".into()]);
    assert!(matches!(s.add_gate(&g), Err(StoreError::Invalid { .. })));
    g.allowed_ips = Some(vec!["not-an-ip".into()]);
    assert!(matches!(s.add_gate(&g), Err(StoreError::Invalid { .. })));
    assert_eq!(
        s.gate(g2.id).unwrap().allowed_ips,
        Some(vec!["10.0.0.0/24".to_string(), "fd00::1".to_string()])
    );
    let creds_list = s.gate_credentials().unwrap();
    assert_eq!(creds_list.len(), 2);
    assert_eq!(creds_list[0].secret, creds.secret);
    assert_ne!(creds_list[1].secret, creds.secret);
    let rotated = s.rotate_gate_secret(creds.id).unwrap();
    assert_ne!(rotated, creds.secret);
    let rev = s.revision().unwrap();
    // Several gates in one transaction; an unknown id is skipped.
    s.touch_gates(&[
        (creds.id, datetime!(2025-01-01 12:00 UTC)),
        (9999, datetime!(2025-01-01 12:00 UTC)),
    ])
    .unwrap();
    assert_eq!(
        s.revision().unwrap(),
        rev,
        "heartbeats do not bump the revision"
    );
    assert_eq!(
        s.gate(creds.id).unwrap().last_seen,
        Some(datetime!(2025-01-01 12:00 UTC))
    );
    s.set_gate_enabled(creds.id, false).unwrap();
    assert!(!s.gate_by_name("front-door").unwrap().gate.enabled);
    assert!(s.revision().unwrap() > rev);
    assert!(matches!(
        s.set_gate_enabled(999, true),
        Err(StoreError::NotFound {
            entity: Entity::Gate,
            ..
        })
    ));
    assert!(matches!(s.remove_zone(z), Err(StoreError::InUse { .. })));
    assert!(matches!(
        s.gate_by_name("nope"),
        Err(StoreError::NotFound {
            entity: Entity::Gate,
            ..
        })
    ));

    // People.
    let alice = s.add_person("Alice", Validity::default()).unwrap();
    assert!(matches!(
        s.add_person("Alice", Validity::default()),
        Err(StoreError::NameTaken {
            entity: Entity::Person,
            ..
        })
    ));
    let bad = Validity {
        from: Some(datetime!(2025-02-01 0:00 UTC)),
        until: Some(datetime!(2025-01-01 0:00 UTC)),
    };
    assert!(matches!(
        s.add_person("Bob", bad),
        Err(StoreError::Invalid { .. })
    ));
    let e = s.person(999).unwrap_err();
    assert_eq!(e.to_string(), "no such person: 999");
    s.set_person_enabled(alice, false).unwrap();
    assert!(!s.person(alice).unwrap().enabled);
    assert!(matches!(
        s.set_person_enabled(999, false),
        Err(StoreError::NotFound {
            entity: Entity::Person,
            ..
        })
    ));

    // Cards.
    let c = s
        .add_card(
            &key,
            b"0004123456",
            &NewCard {
                person: alice,
                label: Some("blue fob".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        s.add_card(&key, b"0004123456", &NewCard { person: alice, ..Default::default() }),
        Err(StoreError::CardExists { existing }) if existing == c
    ));
    assert!(matches!(
        s.add_card(
            &key,
            b"777",
            &NewCard {
                person: 999,
                ..Default::default()
            }
        ),
        Err(StoreError::NotFound {
            entity: Entity::Person,
            ..
        })
    ));
    assert!(matches!(
        s.add_card(
            &key,
            b"0004123457",
            &NewCard {
                person: alice,
                label: Some("ends 3457".into()),
                ..Default::default()
            }
        ),
        Err(StoreError::Invalid {
            field: "card label",
            ..
        })
    ));
    assert!(matches!(
        s.add_card(
            &key,
            b"",
            &NewCard {
                person: alice,
                ..Default::default()
            }
        ),
        Err(StoreError::Invalid { .. })
    ));
    let found = s.find_card_by_acc_id(&key, b"0004123456").unwrap().unwrap();
    assert_eq!(found.id, c);
    assert_eq!(found.hash, key.card_hash(b"0004123456"));
    assert_eq!(found.label.as_deref(), Some("blue fob"));
    assert!(s.find_card_by_acc_id(&key, b"nope").unwrap().is_none());
    s.set_card_enabled(c, false).unwrap();
    assert!(!s.card(c).unwrap().enabled);
    assert!(matches!(
        s.set_card_enabled(999, false),
        Err(StoreError::NotFound {
            entity: Entity::Card,
            ..
        })
    ));
    assert_eq!(s.list_cards(Some(alice)).unwrap().len(), 1);
    assert!(matches!(
        s.list_cards(Some(999)),
        Err(StoreError::NotFound {
            entity: Entity::Person,
            ..
        })
    ));

    // Levels and grants.
    let lvl = s.add_level("Staff", &office_hours()).unwrap();
    assert!(matches!(
        s.add_level("Staff", &office_hours()),
        Err(StoreError::NameTaken {
            entity: Entity::Level,
            ..
        })
    ));
    let mut bad = office_hours();
    bad.weekly[2] = vec![Window {
        start: 600,
        end: 500,
    }];
    let e = s.add_level("Bad", &bad).unwrap_err();
    assert!(matches!(e, StoreError::BadSchedule(_)), "{e}");
    assert!(e.to_string().contains("wednesday"), "{e}");
    bad.weekly[2] = vec![Window {
        start: 0,
        end: 1441,
    }];
    assert!(matches!(
        s.add_level("Bad", &bad),
        Err(StoreError::BadSchedule(_))
    ));
    bad = office_hours();
    bad.holidays = HolidayRule::Windows(vec![Window { start: 5, end: 5 }]);
    assert!(matches!(
        s.set_level_schedule(lvl, &bad),
        Err(StoreError::BadSchedule(_))
    ));
    assert!(s.add_level_gate(lvl, creds.id).unwrap());
    assert!(!s.add_level_gate(lvl, creds.id).unwrap());
    assert!(matches!(
        s.add_level_gate(lvl, 999),
        Err(StoreError::NotFound {
            entity: Entity::Gate,
            ..
        })
    ));
    assert!(matches!(
        s.add_level_gate(999, creds.id),
        Err(StoreError::NotFound {
            entity: Entity::Level,
            ..
        })
    ));
    assert!(s.grant_level(alice, lvl).unwrap());
    assert!(!s.grant_level(alice, lvl).unwrap());
    assert!(matches!(
        s.grant_level(alice, 999),
        Err(StoreError::NotFound {
            entity: Entity::Level,
            ..
        })
    ));
    assert!(matches!(
        s.grant_level(999, lvl),
        Err(StoreError::NotFound {
            entity: Entity::Person,
            ..
        })
    ));
    assert_eq!(s.person(alice).unwrap().levels, vec![lvl]);
    assert_eq!(s.level_by_name("Staff").unwrap().gates, vec![creds.id]);
    assert!(s.revoke_level(alice, lvl).unwrap());
    assert!(!s.revoke_level(alice, lvl).unwrap());
    assert!(matches!(
        s.level_by_name("nope"),
        Err(StoreError::NotFound {
            entity: Entity::Level,
            ..
        })
    ));

    // Holidays.
    s.add_holiday(date!(2025 - 12 - 25), "Christmas").unwrap();
    let e = s.add_holiday(date!(2025 - 12 - 25), "again").unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    assert_eq!(e.to_string(), "a holiday on 2025-12-25 already exists");
    assert!(matches!(
        s.remove_holiday(date!(2025 - 01 - 01)),
        Err(StoreError::NotFound {
            entity: Entity::Holiday,
            ..
        })
    ));
    assert_eq!(s.list_holidays().unwrap()[0].name, "Christmas");

    // Settings.
    assert_eq!(s.setting("site.name").unwrap(), None);
    s.set_setting("site.name", "Depot").unwrap();
    s.set_setting("site.name", "Depot 2").unwrap();
    assert_eq!(s.setting("site.name").unwrap().as_deref(), Some("Depot 2"));

    // Removing a person removes their cards; log rows keep their ids.
    let log = AccessLog::start(dir.path()).unwrap();
    let out = log_sync(
        &log,
        LogEntry {
            at: datetime!(2025-03-03 9:00 UTC),
            gate: creds.id,
            card_hash: Some(found.hash),
            card: Some(c),
            person: Some(alice),
            reason: Reason::Disabled,
            source: LogSource::Online,
            gate_seq: Some(1),
        },
    )
    .unwrap();
    let LogOutcome::Inserted(log_id) = out else {
        panic!("{out:?}")
    };
    s.grant_level(alice, lvl).unwrap();
    s.remove_person(alice).unwrap();
    assert!(matches!(
        s.card(c),
        Err(StoreError::NotFound {
            entity: Entity::Card,
            ..
        })
    ));
    assert!(s.list_cards(None).unwrap().is_empty());
    assert!(matches!(
        s.remove_person(alice),
        Err(StoreError::NotFound {
            entity: Entity::Person,
            ..
        })
    ));
    s.remove_gate(creds.id).unwrap();
    let rows = s.log_tail(10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, log_id);
    assert_eq!(rows[0].person, Some(alice));
    assert_eq!(rows[0].card, Some(c));
    assert_eq!(rows[0].gate, creds.id);
    assert_eq!(rows[0].reason(), Some(Reason::Disabled));
    assert!(s.level(lvl).unwrap().gates.is_empty());
    s.remove_level(lvl).unwrap();
    assert!(matches!(
        s.remove_level(lvl),
        Err(StoreError::NotFound {
            entity: Entity::Level,
            ..
        })
    ));
    s.remove_gate(g2.id).unwrap();
    s.remove_zone(z).unwrap();
    assert!(matches!(
        s.remove_zone(z),
        Err(StoreError::NotFound {
            entity: Entity::Zone,
            ..
        })
    ));
    log.shutdown();
    assert_eq!(s.integrity_check().unwrap(), "ok");
}

#[test]
fn snapshot_contents() {
    let dir = tempfile::tempdir().unwrap();
    let key = SiteKey::load_or_create(dir.path()).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.snapshot().unwrap(), Default::default());

    let z = s.add_zone("Main", true).unwrap();
    let g_in = s.add_gate(&gate("in", z)).unwrap().id;
    let mut out = gate("out", z);
    out.direction = Direction::Out;
    out.relay_ms = 500;
    let g_out = s.add_gate(&out).unwrap().id;
    let validity = Validity {
        from: Some(datetime!(2025-01-01 0:00 UTC)),
        until: Some(datetime!(2026-01-01 0:00 UTC)),
    };
    let p = s.add_person("Alice", validity).unwrap();
    let q = s.add_person("Bob", Validity::default()).unwrap();
    s.set_person_enabled(q, false).unwrap();
    let lvl = s.add_level("Staff", &office_hours()).unwrap();
    s.add_level_gate(lvl, g_in).unwrap();
    s.add_level_gate(lvl, g_out).unwrap();
    s.grant_level(p, lvl).unwrap();
    let c1 = s
        .add_card(
            &key,
            b"card-1",
            &NewCard {
                person: p,
                ..Default::default()
            },
        )
        .unwrap();
    let c2 = s
        .add_card(
            &key,
            b"card-2",
            &NewCard {
                person: q,
                master: true,
                validity,
                label: None,
            },
        )
        .unwrap();
    s.add_holiday(date!(2025 - 12 - 25), "Christmas").unwrap();
    s.add_holiday(date!(2025 - 01 - 01), "New year").unwrap();

    let rev = s.revision().unwrap();
    let (rev2, snap) = s.revisioned_snapshot().unwrap();
    assert_eq!(rev, rev2);
    assert_eq!(snap.zones[&z].name, "Main");
    assert!(snap.zones[&z].anti_passback);
    assert_eq!(snap.gates.len(), 2);
    assert_eq!(snap.gates[&g_out].direction, Direction::Out);
    assert_eq!(snap.gates[&g_out].relay_ms, 500);
    assert_eq!(snap.gates[&g_in].zone, z);
    assert_eq!(snap.people[&p].validity, validity);
    assert_eq!(snap.people[&p].levels, vec![lvl]);
    assert!(!snap.people[&q].enabled);
    assert!(snap.people[&q].levels.is_empty());
    assert_eq!(snap.levels[&lvl].schedule, office_hours());
    assert_eq!(snap.levels[&lvl].gates, vec![g_in, g_out]);
    let card1 = &snap.cards[&key.card_hash(b"card-1")];
    assert_eq!((card1.id, card1.person, card1.master), (c1, p, false));
    let card2 = &snap.cards[&key.card_hash(b"card-2")];
    assert_eq!((card2.id, card2.person, card2.master), (c2, q, true));
    assert_eq!(card2.validity, validity);
    assert_eq!(
        snap.holidays,
        vec![date!(2025 - 01 - 01), date!(2025 - 12 - 25)]
    );
    assert_eq!(s.list_people().unwrap().len(), 2);
    assert_eq!(s.list_levels().unwrap()[0], snap.levels[&lvl]);

    // Any access change moves the revision.
    s.set_card_enabled(c1, false).unwrap();
    assert!(s.revision().unwrap() > rev);
    assert!(!s.snapshot().unwrap().cards[&key.card_hash(b"card-1")].enabled);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn assert_absent(path: &Path, needles: &[&[u8]]) {
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    for n in needles {
        assert!(
            !contains(&bytes, n),
            "{} contains the raw card id",
            path.display()
        );
    }
}

#[test]
fn raw_card_ids_never_reach_the_disk() {
    const ACC: &[u8] = b"ACCID-9f3c71e2b8d4-RAW";
    let hex: String = ACC.iter().map(|b| format!("{b:02x}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let key = SiteKey::load_or_create(dir.path()).unwrap();
    let s = Store::open(dir.path()).unwrap();
    let z = s.add_zone("Main", false).unwrap();
    let g = s.add_gate(&gate("door", z)).unwrap().id;
    let p = s.add_person("Alice", Validity::default()).unwrap();
    let c = s
        .add_card(
            &key,
            ACC,
            &NewCard {
                person: p,
                label: Some("badge".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let mut other = ACC.to_vec();
    other.extend_from_slice(b"-2");
    s.add_card(
        &key,
        &other,
        &NewCard {
            person: p,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.find_card_by_acc_id(&key, ACC).unwrap().is_some());
    let log = AccessLog::start(dir.path()).unwrap();
    for seq in 0..50u64 {
        let r = log_sync(
            &log,
            LogEntry {
                at: datetime!(2025-03-03 9:00 UTC),
                gate: g,
                card_hash: Some(key.card_hash(ACC)),
                card: Some(c),
                person: Some(p),
                reason: Reason::Granted,
                source: if seq % 2 == 0 {
                    LogSource::Online
                } else {
                    LogSource::Offline
                },
                gate_seq: Some(seq),
            },
        )
        .unwrap();
        assert!(matches!(r, LogOutcome::Inserted(_)));
    }
    let db = db_path(dir.path());
    let wal = dir.path().join("gatehouse.db-wal");
    assert!(wal.exists(), "WAL present while open");
    let needles: [&[u8]; 2] = [ACC, hex.as_bytes()];
    for f in [&db, &wal, &dir.path().join("site.key")] {
        assert_absent(f, &needles);
    }
    log.shutdown();
    drop(s);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        assert_absent(&entry.unwrap().path(), &needles);
    }
    assert_eq!(Store::open(dir.path()).unwrap().log_count().unwrap(), 50);
}

#[test]
fn log_queries_filter_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let log = AccessLog::start(dir.path()).unwrap();
    for i in 0..30i64 {
        log_sync(
            &log,
            LogEntry {
                at: datetime!(2025-03-03 9:00:00.123 UTC),
                gate: i % 3,
                card_hash: None,
                card: None,
                person: None,
                reason: if i % 2 == 0 {
                    Reason::Granted
                } else {
                    Reason::UnknownCard
                },
                source: LogSource::Online,
                gate_seq: None,
            },
        )
        .unwrap();
    }
    let tail = s.log_tail(5).unwrap();
    assert_eq!(tail.len(), 5);
    assert!(tail.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(tail[0].at, datetime!(2025-03-03 9:00:00.123 UTC));
    let rows = s
        .log_query(&LogFilter {
            gate: Some(1),
            reason: Some(Reason::UnknownCard),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows
        .iter()
        .all(|r| r.gate == 1 && r.reason() == Some(Reason::UnknownCard)));
    let page1 = s
        .log_query(&LogFilter {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    let page2 = s
        .log_query(&LogFilter {
            after_id: Some(page1[9].id),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page1.len() + page2.len(), 30);
    assert!(page2[0].id > page1[9].id);
}
