//! The access-control CLI as an admin meets it, running the real binary against a tempdir
//! config: the whole enrolment flow, the errors a user can cause (each exits 1 with one
//! line naming the problem and saves nothing), the raw card id never leaving the command
//! line, and `log tail` over rows written by the store's own log writer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_gate_proto::Reason;
use gatehouse_store::{AccessLog, LogEntry, LogSource, Store};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

mod cli_support;

use cli_support::{contains, field, stderr, stdout, CliSite, GATEHOUSE, TUNNEL};

/// Written as typed on the card; it must appear nowhere but on our command lines.
const ACC_ID: &str = "0004123456";
/// The same card as the reader sends it.
const ACC_ID_BYTES: [u8; 4] = [0x00, 0x3e, 0xeb, 0x40];
const ACC_ID_HEX: &str = "0x04D2E3F4A5B6C7";

/// A config under a fresh tempdir, written the way tests/cli.rs writes its configs.
fn site() -> CliSite {
    CliSite::new(&format!(
        "{TUNNEL}[hub]\nhttp_listen = \"127.0.0.1:18080\"\ngate_tcp_listen = \"0.0.0.0:17300\"\n"
    ))
}

fn assert_no_raw_id(site: &CliSite, text: &str) {
    for needle in [
        ACC_ID,
        "4123456",
        "3eeb40",
        "3EEB40",
        "04d2e3f4a5b6c7",
        "04D2E3",
    ] {
        assert!(!text.contains(needle), "raw card id {needle} in: {text}");
    }
    for (path, bytes) in site.data_files() {
        for needle in [
            ACC_ID.as_bytes(),
            b"4123456".as_slice(),
            b"3eeb40".as_slice(),
            &ACC_ID_BYTES,
            &[0x04, 0xd2, 0xe3, 0xf4, 0xa5, 0xb6, 0xc7],
            b"04d2e3f4a5b6c7".as_slice(),
        ] {
            assert!(
                !contains(&bytes, needle),
                "raw card id {needle:?} in {}",
                path.display()
            );
        }
    }
}

#[test]
fn help_explains_every_access_command() {
    let h = Command::new(GATEHOUSE).arg("--help").output().unwrap();
    let help = stdout(&h);
    for sub in ["gate", "person", "level", "card", "log"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help lacks {sub}:\n{help}"
        );
    }
    let subs: [(&[&str], &[&str]); 5] = [
        (&["gate"], &["add", "list"]),
        (&["person"], &["add", "list"]),
        (&["level"], &["add", "grant", "list"]),
        (&["card"], &["add", "list", "disable", "enable", "remove"]),
        (&["log"], &["tail"]),
    ];
    for (cmd, leaves) in subs {
        let o = Command::new(GATEHOUSE)
            .args(cmd)
            .arg("--help")
            .output()
            .unwrap();
        let help = stdout(&o);
        for leaf in leaves {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(leaf))
                .unwrap_or_else(|| panic!("{cmd:?} --help lacks {leaf}:\n{help}"));
            assert!(
                line.trim_start().len() > leaf.len() + 10,
                "{cmd:?} {leaf} has no description: {line}"
            );
            let o = Command::new(GATEHOUSE)
                .args(cmd)
                .args([leaf, "--help"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{cmd:?} {leaf} --help");
        }
    }
    let card = Command::new(GATEHOUSE)
        .args(["card", "add", "--help"])
        .output()
        .unwrap();
    let help = stdout(&card);
    assert!(
        help.contains("decimal") && help.contains("0x"),
        "card add --help documents the ACC_ID forms:\n{help}"
    );
    let level = Command::new(GATEHOUSE)
        .args(["level", "add", "--help"])
        .output()
        .unwrap();
    assert!(stdout(&level).contains("mon-fri 08:00-18:00"));
}

#[test]
fn enrolment_flow_never_shows_or_stores_the_raw_card_id() {
    let s = site();

    // gate add: id, secret once, the HTTP check settings and the MQTT user.
    let out = s.ok(&["gate", "add", "front-door", "--allow-ip", "10.1.0.0/16"]);
    let id = field(&out, "gate id:");
    let secret = field(&out, "secret:");
    assert_eq!(secret.len(), 64, "{out}");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{out}");
    assert!(out.contains("shown only this once"), "{out}");
    assert!(
        out.contains("POST http://127.0.0.1:18080/api/v1/access/check"),
        "{out}"
    );
    assert!(
        out.contains(&format!("Authorization: Bearer {secret}")),
        "{out}"
    );
    assert_eq!(field(&out, "MQTT user:"), "gate-front-door");
    assert!(
        field(&out, "raw TCP:").starts_with("<this box's address>:17300"),
        "{out}"
    );
    let creds = Store::open(&s.data).unwrap().gate_credentials().unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].id.to_string(), id);
    let stored: String = creds[0]
        .secret
        .expose()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored, secret, "the printed secret is the gate's");
    let password = field(&out, "MQTT password:");
    assert_eq!(
        password.split_whitespace().next(),
        Some(gatehouse_hub::mqtt::gate_password(creds[0].secret.expose()).as_str()),
        "the MQTT password is the one the hub provisions: {out}"
    );
    assert_eq!(
        field(&out, "MQTT topics:"),
        format!("publish access/request, subscribe access/response/{id}")
    );

    s.ok(&[
        "gate",
        "add",
        "back-door",
        "--zone",
        "yard",
        "--direction",
        "out",
        "--relay-ms",
        "1500",
    ]);
    let gates = s.ok(&["gate", "list"]);
    assert!(!gates.contains(secret), "gate list shows no secret");
    let back = gates.lines().find(|l| l.contains("back-door")).unwrap();
    assert!(back.contains("yard") && back.contains("out") && back.contains("1500 ms"));
    let front = gates.lines().find(|l| l.contains("front-door")).unwrap();
    assert!(
        front.contains("main") && front.contains("10.1.0.0/16"),
        "{front}"
    );

    s.ok(&[
        "person",
        "add",
        "Ada Lovelace",
        "--valid-until",
        "2099-12-31",
    ]);
    s.ok(&["person", "add", "Bob"]);
    s.ok(&[
        "level",
        "add",
        "office",
        "--gates",
        "front-door,back-door",
        "--schedule",
        "mon-fri 08:00-18:00; sat 09:00-12:00",
    ]);
    let levels = s.ok(&["level", "list"]);
    assert!(
        levels.contains("front-door,back-door")
            && levels.contains("mon-fri 08:00-18:00; sat 09:00-12:00")
            && levels.contains("closed"),
        "{levels}"
    );
    let g = s.ok(&["level", "grant", "office", "--person", "Ada Lovelace"]);
    assert!(g.contains("now has"), "{g}");
    let g = s.ok(&["level", "grant", "office", "--person", "Ada Lovelace"]);
    assert!(g.contains("already had"), "{g}");
    let people = s.ok(&["person", "list"]);
    let ada = people.lines().find(|l| l.contains("Ada Lovelace")).unwrap();
    assert!(
        ada.contains("office") && ada.contains("through 2099-12-31"),
        "{ada}"
    );

    let mut shown = String::new();
    let add = s.ok(&[
        "card",
        "add",
        ACC_ID,
        "--person",
        "Ada Lovelace",
        "--label",
        "blue fob",
        "--valid-until",
        "2030-06-30",
    ]);
    assert!(add.contains("card #1"), "{add}");
    shown += &add;
    shown += &s.ok(&["card", "add", ACC_ID_HEX, "--person", "Bob", "--master"]);
    let list = s.ok(&["card", "list"]);
    shown += &list;
    let c1 = list.lines().find(|l| l.contains("blue fob")).unwrap();
    assert!(
        c1.contains("Ada Lovelace") && c1.contains("enabled") && c1.contains("through 2030-06-30"),
        "{c1}"
    );
    let c2 = list.lines().find(|l| l.contains("Bob")).unwrap();
    assert!(c2.contains("yes"), "master: {c2}");
    let only_bob = s.ok(&["card", "list", "--person", "Bob"]);
    assert!(!only_bob.contains("Ada"), "{only_bob}");

    // The store finds the card by the bytes the reader sends.
    let key = gatehouse_store::SiteKey::load_or_create(&s.data).unwrap();
    let store = Store::open(&s.data).unwrap();
    assert_eq!(
        store
            .find_card_by_acc_id(&key, &ACC_ID_BYTES)
            .unwrap()
            .unwrap()
            .id,
        1
    );

    shown += &s.ok(&["card", "disable", "1"]);
    assert!(!store.card(1).unwrap().enabled);
    shown += &s.ok(&["card", "enable", "--acc-id", ACC_ID]);
    assert!(store.card(1).unwrap().enabled);
    shown += &s.ok(&["card", "disable", "--acc-id", ACC_ID_HEX]);
    assert!(!store.card(2).unwrap().enabled);
    let list = s.ok(&["card", "list"]);
    shown += &list;
    assert!(
        list.lines()
            .find(|l| l.contains("Bob"))
            .unwrap()
            .contains("disabled"),
        "{list}"
    );
    drop(store);

    // Checkpoint the WAL so the main DB file holds everything, then look at every byte.
    let conn = Store::open(&s.data).unwrap();
    assert_eq!(conn.integrity_check().unwrap(), "ok");
    drop(conn);
    assert_no_raw_id(&s, &shown);
    assert!(!s.db_bytes().is_empty());

    shown = s.ok(&["card", "remove", "1"]);
    shown += &s.ok(&["card", "remove", "--acc-id", ACC_ID_HEX]);
    let list = s.ok(&["card", "list"]);
    assert_eq!(list.lines().count(), 1, "only the header is left: {list}");
    assert_no_raw_id(&s, &shown);
}

#[test]
fn user_errors_exit_1_name_the_problem_and_save_nothing() {
    let s = site();
    s.ok(&["gate", "add", "front-door"]);
    s.ok(&["person", "add", "Ada"]);
    s.ok(&[
        "level",
        "add",
        "office",
        "--gates",
        "front-door",
        "--schedule",
        "always",
    ]);
    s.ok(&["card", "add", ACC_ID, "--person", "Ada"]);
    // What the site holds, by name and setting (a failed `gate add --zone NEW` may create
    // and remove its zone again, so the store's revision counter can move).
    let state = || {
        let st = Store::open(&s.data).unwrap();
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            st.list_zones().unwrap(),
            st.list_gates().unwrap(),
            st.list_people().unwrap(),
            st.list_levels().unwrap(),
            st.list_cards(None).unwrap()
        )
    };
    let before = state();

    let cases: &[(&[&str], &str)] = &[
        // Names taken.
        (
            &["gate", "add", "front-door"],
            "gate name \"front-door\" is already taken",
        ),
        (
            &["gate", "add", "front-door", "--zone", "new-zone"],
            "already taken",
        ),
        (
            &["person", "add", "Ada"],
            "person name \"Ada\" is already taken",
        ),
        (
            &[
                "level",
                "add",
                "office",
                "--gates",
                "front-door",
                "--schedule",
                "always",
            ],
            "level name \"office\" is already taken",
        ),
        // Bad gate settings, including with a zone that would be new.
        (
            &["gate", "add", "side door", "--zone", "new-zone"],
            "may only contain letters",
        ),
        (
            &[
                "gate",
                "add",
                "side",
                "--zone",
                "new-zone",
                "--allow-ip",
                "10.0.0.300",
            ],
            "10.0.0.300",
        ),
        // Unknown things.
        (
            &["card", "add", "12345678", "--person", "Nobody"],
            "no such person: \"Nobody\"",
        ),
        (
            &["card", "list", "--person", "Nobody"],
            "no such person: \"Nobody\"",
        ),
        (
            &["level", "grant", "office", "--person", "Nobody"],
            "no such person: \"Nobody\"",
        ),
        (
            &["level", "grant", "nolevel", "--person", "Ada"],
            "no such level: \"nolevel\"",
        ),
        (
            &[
                "level",
                "add",
                "night",
                "--gates",
                "front-door,ghost",
                "--schedule",
                "always",
            ],
            "no such gate: \"ghost\"",
        ),
        (&["card", "disable", "99"], "no such card: 99"),
        (&["card", "enable", "99"], "no such card: 99"),
        (&["card", "remove", "99"], "no such card: 99"),
        (
            &["card", "remove", "--acc-id", "0x0102"],
            "no card is enrolled with that card id",
        ),
        // Bad dates.
        (
            &["person", "add", "Bob", "--valid-until", "soon"],
            "--valid-until",
        ),
        (
            &["person", "add", "Bob", "--valid-from", "2026-13-01"],
            "--valid-from",
        ),
        (
            &[
                "person",
                "add",
                "Bob",
                "--valid-from",
                "2026-02-01",
                "--valid-until",
                "2026-01-01",
            ],
            "not before",
        ),
        (
            &[
                "card",
                "add",
                "777777",
                "--person",
                "Ada",
                "--valid-until",
                "31/12/2026",
            ],
            "--valid-until",
        ),
        // Bad schedules.
        (
            &[
                "level",
                "add",
                "night",
                "--gates",
                "front-door",
                "--schedule",
                "mon-fri 22:00-06:00",
            ],
            "overnight shift is two windows",
        ),
        (
            &[
                "level",
                "add",
                "night",
                "--gates",
                "front-door",
                "--schedule",
                "weekdays 08:00-18:00",
            ],
            "unknown day \"weekdays\"",
        ),
        (
            &[
                "level",
                "add",
                "night",
                "--gates",
                "front-door",
                "--schedule",
                "mon 8-18",
            ],
            "HH:MM",
        ),
        // Cards.
        (
            &["card", "add", ACC_ID, "--person", "Ada"],
            "already enrolled (card #1)",
        ),
        (
            &["card", "add", "0x003EEB40", "--person", "Ada"],
            "already enrolled (card #1)",
        ),
        (
            &["card", "add", "deadbeef", "--person", "Ada"],
            "write it with 0x",
        ),
        (
            &["card", "add", "0xabc", "--person", "Ada"],
            "odd number of hex digits",
        ),
        (
            &[
                "card", "add", "55556666", "--person", "Ada", "--label", "fob 5555",
            ],
            "--label must not contain",
        ),
        (
            &[
                "card",
                "add",
                "0xcafe0102",
                "--person",
                "Ada",
                "--label",
                "CAFE0102",
            ],
            "must not contain",
        ),
    ];
    for (args, want) in cases {
        s.fails(args, want);
    }
    // Nothing was half-saved: no new zone, level or change of any kind.
    assert_eq!(state(), before);

    // Errors never echo a card id back.
    for args in [
        &["card", "add", "deadbeef", "--person", "Ada"][..],
        &["card", "remove", "--acc-id", "0x0102"][..],
        &[
            "card", "add", "55556666", "--person", "Ada", "--label", "x 5555",
        ][..],
    ] {
        let e = stderr(&s.run(args));
        assert!(
            !e.contains("deadbeef") && !e.contains("0102") && !e.contains("55556666"),
            "{e}"
        );
    }
}

#[test]
fn log_tail_prints_decisions_with_names() {
    let s = site();
    let o = s.run(&["log", "tail"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the access log is empty"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));

    s.ok(&["gate", "add", "front-door"]);
    s.ok(&["person", "add", "Ada"]);
    s.ok(&["card", "add", ACC_ID, "--person", "Ada"]);
    let store = Store::open(&s.data).unwrap();
    let gate = store.gate_by_name("front-door").unwrap().gate.id;
    let ada = store.person_by_name("Ada").unwrap().id;
    let at = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(); // 2026-01-01
    let log = AccessLog::start(&s.data).unwrap();
    let (tx, rx) = mpsc::channel();
    let entries = [
        (0, Some(1), Some(ada), Reason::Granted, LogSource::Online),
        (1, None, None, Reason::UnknownCard, LogSource::Online),
        (
            2,
            Some(1),
            Some(ada),
            Reason::OutsideSchedule,
            LogSource::Offline,
        ),
        (
            3,
            Some(1),
            Some(ada),
            Reason::OfflineGranted,
            LogSource::Offline,
        ),
    ];
    for (i, card, person, reason, source) in entries {
        let tx = tx.clone();
        log.submit(
            LogEntry {
                at: at + time::Duration::seconds(i),
                gate,
                card_hash: None,
                card,
                person,
                reason,
                source,
                gate_seq: Some(i as u64),
            },
            Box::new(move |r| tx.send(r.is_ok()).unwrap()),
        );
    }
    for _ in entries {
        assert!(rx.recv().unwrap());
    }
    log.shutdown();

    let out = s.ok(&["log", "tail"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "header and four rows: {out}");
    let want = [
        [
            "2026-01-01T00:00:00Z",
            "front-door",
            "Ada",
            "granted",
            "granted",
            "online",
        ],
        [
            "2026-01-01T00:00:01Z",
            "front-door",
            "-",
            "denied",
            "unknown_card",
            "online",
        ],
        [
            "2026-01-01T00:00:02Z",
            "front-door",
            "Ada",
            "denied",
            "outside_schedule",
            "offline",
        ],
        [
            "2026-01-01T00:00:03Z",
            "front-door",
            "Ada",
            "granted",
            "offline_granted",
            "offline",
        ],
    ];
    for (line, fields) in lines[1..].iter().zip(want) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        for f in fields {
            assert!(cols.contains(&f), "{f} missing in {line}");
        }
    }
    let two = s.ok(&["log", "tail", "-n", "2"]);
    assert_eq!(two.lines().count(), 3, "{two}");
    assert!(
        two.contains("outside_schedule") && !two.contains("unknown_card"),
        "{two}"
    );
}

/// Logs one decision through the store's group-commit writer and waits until it is durable.
fn log_one(data: &Path, gate: i64, reason: Reason) {
    let log = AccessLog::start(data).unwrap();
    let (tx, rx) = mpsc::channel();
    log.submit(
        LogEntry {
            at: OffsetDateTime::now_utc(),
            gate,
            card_hash: None,
            card: None,
            person: None,
            reason,
            source: LogSource::Online,
            gate_seq: None,
        },
        Box::new(move |r| tx.send(r.is_ok()).unwrap()),
    );
    assert!(rx.recv().unwrap());
    log.shutdown();
}

#[test]
fn log_tail_follow_prints_only_new_rows_with_n_0() {
    let s = site();
    s.ok(&["gate", "add", "g1"]);
    let gate = Store::open(&s.data)
        .unwrap()
        .gate_by_name("g1")
        .unwrap()
        .gate
        .id;
    log_one(&s.data, gate, Reason::AntiPassback);
    let mut child = s
        .command(&["log", "tail", "-n", "0", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (ltx, lrx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            if ltx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // The header comes once the follower has read the log; only then add the new row.
    let header = lrx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(header.starts_with("TIME"), "{header}");
    log_one(&s.data, gate, Reason::Disabled);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let found = loop {
        match lrx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("disabled") => break true,
            Ok(l) => seen.push(l),
            Err(_) => break false,
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(found, "no new row printed; saw {seen:?}");
    assert!(
        !seen.iter().any(|l| l.contains("anti_passback")),
        "-n 0 printed an old row: {seen:?}"
    );
}
