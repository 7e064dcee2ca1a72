//! Table-driven tests of the decision engine. One fixture site (local offset +02:00), each
//! row tweaking it and asking one question; sequences for anti-passback. Fixed dates:
//! the week of Monday 2025-03-03, and the holiday Thursday 2025-12-25 (with Thursday
//! 2025-12-18 as an ordinary Thursday).

use super::*;
use crate::decision_snapshot::DecisionSnapshot;
use crate::model::{
    Card, Gate, HolidayRule, Level, ModelError, Person, Schedule, Snapshot, Validity, Window, Zone,
};
use time::macros::{date, datetime, offset};
use time::Weekday;

// ---- fixture ---------------------------------------------------------------------------

const LOBBY: ZoneId = 1; // no anti-passback
const SERVER_ROOM: ZoneId = 2; // anti-passback

const FRONT_IN: GateId = 10;
const FRONT_OUT: GateId = 11;
const SERVER_IN: GateId = 20;
const SERVER_OUT: GateId = 21;
const DOCK: GateId = 30; // enabled, in no level
const OLD_DOOR: GateId = 31; // disabled, in the office level
const NO_GATE: GateId = 99;

const OFFICE: LevelId = 100; // front gates + old door, Mon-Fri 08-18, Sat 09-12; holidays Closed
const SERVER: LevelId = 101; // server gates, Mon-Fri 07-19; holidays 10-14 only
const NIGHT: LevelId = 102; // front gates, every day 22-24 and 00-06; holidays Ignore

const ALICE: u8 = 1; // office + server
const BOB: u8 = 2; // office
const NINA: u8 = 3; // night
const GUS: u8 = 4; // guard: no levels, master card
const MAX: u8 = 5; // office + night
const NOBODY: u8 = 9; // no such card

use crate::model::LevelId;

fn card(n: u8) -> CardHash {
    CardHash([n; 32])
}

fn hm(h: u16, m: u16) -> u16 {
    h * 60 + m
}

fn win(start: u16, end: u16) -> Window {
    Window { start, end }
}

fn gate(id: GateId, zone: ZoneId, direction: Direction, enabled: bool, relay_ms: u32) -> Gate {
    Gate {
        id,
        name: format!("gate {id}"),
        zone,
        direction,
        enabled,
        relay_ms,
    }
}

fn level(
    id: LevelId,
    gates: Vec<GateId>,
    weekly: [Vec<Window>; 7],
    holidays: HolidayRule,
) -> Level {
    Level {
        id,
        name: format!("level {id}"),
        gates,
        schedule: Schedule { weekly, holidays },
    }
}

fn fixture() -> Snapshot {
    let mut s = Snapshot::default();
    for (id, anti_passback) in [(LOBBY, false), (SERVER_ROOM, true)] {
        s.zones.insert(
            id,
            Zone {
                id,
                name: format!("zone {id}"),
                anti_passback,
            },
        );
    }
    for g in [
        gate(FRONT_IN, LOBBY, Direction::In, true, 3000),
        gate(FRONT_OUT, LOBBY, Direction::Out, true, 3000),
        gate(SERVER_IN, SERVER_ROOM, Direction::In, true, 1500),
        gate(SERVER_OUT, SERVER_ROOM, Direction::Out, true, 1500),
        gate(DOCK, LOBBY, Direction::In, true, 2000),
        gate(OLD_DOOR, LOBBY, Direction::In, false, 3000),
    ] {
        s.gates.insert(g.id, g);
    }
    let office_day = || vec![win(hm(8, 0), hm(18, 0))];
    let server_day = || vec![win(hm(7, 0), hm(19, 0))];
    let night = || vec![win(0, hm(6, 0)), win(hm(22, 0), hm(24, 0))];
    for l in [
        level(
            OFFICE,
            vec![FRONT_IN, FRONT_OUT, OLD_DOOR],
            [
                office_day(),
                office_day(),
                office_day(),
                office_day(),
                office_day(),
                vec![win(hm(9, 0), hm(12, 0))],
                vec![],
            ],
            HolidayRule::Closed,
        ),
        level(
            SERVER,
            vec![SERVER_IN, SERVER_OUT],
            [
                server_day(),
                server_day(),
                server_day(),
                server_day(),
                server_day(),
                vec![],
                vec![],
            ],
            HolidayRule::Windows(vec![win(hm(10, 0), hm(14, 0))]),
        ),
        level(
            NIGHT,
            vec![FRONT_IN, FRONT_OUT],
            [
                night(),
                night(),
                night(),
                night(),
                night(),
                night(),
                night(),
            ],
            HolidayRule::Ignore,
        ),
    ] {
        s.levels.insert(l.id, l);
    }
    for (n, levels) in [
        (ALICE, vec![OFFICE, SERVER]),
        (BOB, vec![OFFICE]),
        (NINA, vec![NIGHT]),
        (GUS, vec![]),
        (MAX, vec![OFFICE, NIGHT]),
    ] {
        let id = PersonId::from(n);
        s.people.insert(
            id,
            Person {
                id,
                name: format!("person {n}"),
                enabled: true,
                validity: Validity::default(),
                levels,
            },
        );
        s.cards.insert(
            card(n),
            Card {
                id: CardId::from(n),
                hash: card(n),
                person: id,
                enabled: true,
                validity: Validity::default(),
                master: n == GUS,
            },
        );
    }
    s.holidays = vec![date!(2025 - 12 - 25)];
    s
}

fn card_mut(s: &mut Snapshot, n: u8) -> &mut Card {
    s.cards.get_mut(&card(n)).unwrap()
}

fn person_mut(s: &mut Snapshot, n: u8) -> &mut Person {
    s.people.get_mut(&PersonId::from(n)).unwrap()
}

fn level_mut(s: &mut Snapshot, id: LevelId) -> &mut Level {
    s.levels.get_mut(&id).unwrap()
}

fn none(_: &mut Snapshot) {}

#[test]
fn fixture_is_valid_and_dates_are_the_weekdays_the_tables_assume() {
    assert_eq!(fixture().validate(), Ok(()));
    assert_eq!(date!(2025 - 03 - 03).weekday(), Weekday::Monday);
    assert_eq!(date!(2025 - 03 - 09).weekday(), Weekday::Sunday);
    assert_eq!(date!(2025 - 12 - 18).weekday(), Weekday::Thursday);
    assert_eq!(date!(2025 - 12 - 25).weekday(), Weekday::Thursday);
}

// ---- single decisions ------------------------------------------------------------------

struct Row {
    name: &'static str,
    tweak: fn(&mut Snapshot),
    gate: GateId,
    card: u8,
    at: OffsetDateTime,
    expect: Reason,
}

fn row(
    name: &'static str,
    tweak: fn(&mut Snapshot),
    gate: GateId,
    card: u8,
    at: OffsetDateTime,
    expect: Reason,
) -> Row {
    Row {
        name,
        tweak,
        gate,
        card,
        at,
        expect,
    }
}

/// Runs every row on a fresh engine, checks the reason and the decision's other fields,
/// and reports all failures at once.
fn run(rows: &[Row]) {
    let mut failures = Vec::new();
    for r in rows {
        let mut snapshot = fixture();
        (r.tweak)(&mut snapshot);
        let expected_relay = snapshot.gates.get(&r.gate).map_or(0, |g| g.relay_ms);
        let known_card = snapshot
            .cards
            .get(&card(r.card))
            .filter(|c| c.hash == card(r.card))
            .map(|c| c.id);
        let mut engine = AccessEngine::new(DecisionSnapshot::from(snapshot));
        let d = engine.decide(r.gate, &card(r.card), r.at);
        if d.reason != r.expect {
            failures.push(format!(
                "{}: got {:?}, want {:?}",
                r.name, d.reason, r.expect
            ));
            continue;
        }
        let relay = if d.is_allowed() { expected_relay } else { 0 };
        if d.relay_ms != relay || d.gate != r.gate {
            failures.push(format!("{}: bad decision fields {d:?}", r.name));
        }
        if d.reason != Reason::UnknownGate && d.card != known_card {
            failures.push(format!(
                "{}: card {:?}, want {known_card:?}",
                r.name, d.card
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gates_and_cards() {
    let mon10 = datetime!(2025-03-03 10:00 +2);
    run(&[
        row(
            "granted baseline",
            none,
            FRONT_IN,
            BOB,
            mon10,
            Reason::Granted,
        ),
        row(
            "unknown gate",
            none,
            NO_GATE,
            BOB,
            mon10,
            Reason::UnknownGate,
        ),
        row(
            "disabled gate (even in level)",
            none,
            OLD_DOOR,
            BOB,
            mon10,
            Reason::UnknownGate,
        ),
        row(
            "unknown gate before unknown card",
            none,
            NO_GATE,
            NOBODY,
            mon10,
            Reason::UnknownGate,
        ),
        row(
            "unknown card",
            none,
            FRONT_IN,
            NOBODY,
            mon10,
            Reason::UnknownCard,
        ),
        row(
            "gate naming an unknown zone",
            |s| s.gates.get_mut(&FRONT_IN).unwrap().zone = 77,
            FRONT_IN,
            BOB,
            mon10,
            Reason::UnknownGate,
        ),
        row(
            "card naming an unknown person",
            |s| card_mut(s, BOB).person = 77,
            FRONT_IN,
            BOB,
            mon10,
            Reason::UnknownCard,
        ),
        row(
            "card filed under a hash that is not its own",
            |s| {
                let c = s.cards.remove(&card(BOB)).unwrap();
                s.cards.insert(card(8), c);
            },
            FRONT_IN,
            8,
            mon10,
            Reason::UnknownCard,
        ),
        row(
            "disabled card",
            |s| card_mut(s, BOB).enabled = false,
            FRONT_IN,
            BOB,
            mon10,
            Reason::Disabled,
        ),
        row(
            "disabled person",
            |s| person_mut(s, BOB).enabled = false,
            FRONT_IN,
            BOB,
            mon10,
            Reason::Disabled,
        ),
        row(
            "disabled before not-yet-valid",
            |s| {
                let c = card_mut(s, BOB);
                c.enabled = false;
                c.validity.from = Some(datetime!(2030-01-01 00:00 UTC));
            },
            FRONT_IN,
            BOB,
            mon10,
            Reason::Disabled,
        ),
        row(
            "disabled master card",
            |s| card_mut(s, GUS).enabled = false,
            FRONT_IN,
            GUS,
            mon10,
            Reason::Disabled,
        ),
        row(
            "master of a disabled person",
            |s| person_mut(s, GUS).enabled = false,
            FRONT_IN,
            GUS,
            mon10,
            Reason::Disabled,
        ),
    ]);
}

#[test]
fn validity_boundaries() {
    fn card_from(s: &mut Snapshot) {
        card_mut(s, BOB).validity.from = Some(datetime!(2025-03-03 10:00 +2));
    }
    fn card_until(s: &mut Snapshot) {
        card_mut(s, BOB).validity.until = Some(datetime!(2025-03-03 10:00 +2));
    }
    fn person_from(s: &mut Snapshot) {
        person_mut(s, BOB).validity.from = Some(datetime!(2025-03-03 10:00 +2));
    }
    fn person_until(s: &mut Snapshot) {
        person_mut(s, BOB).validity.until = Some(datetime!(2025-03-03 10:00 +2));
    }
    let at = datetime!(2025-03-03 10:00 +2);
    let just_before = datetime!(2025-03-03 09:59:59.999_999_999 +2);
    run(&[
        row(
            "card from: exactly at from",
            card_from,
            FRONT_IN,
            BOB,
            at,
            Reason::Granted,
        ),
        row(
            "card from: 1 ns before",
            card_from,
            FRONT_IN,
            BOB,
            just_before,
            Reason::NotYetValid,
        ),
        row(
            "card until: exactly at until",
            card_until,
            FRONT_IN,
            BOB,
            at,
            Reason::Expired,
        ),
        row(
            "card until: 1 ns before",
            card_until,
            FRONT_IN,
            BOB,
            just_before,
            Reason::Granted,
        ),
        row(
            "person from: exactly at from",
            person_from,
            FRONT_IN,
            BOB,
            at,
            Reason::Granted,
        ),
        row(
            "person from: 1 ns before",
            person_from,
            FRONT_IN,
            BOB,
            just_before,
            Reason::NotYetValid,
        ),
        row(
            "person until: exactly at until",
            person_until,
            FRONT_IN,
            BOB,
            at,
            Reason::Expired,
        ),
        row(
            "person until: 1 ns before",
            person_until,
            FRONT_IN,
            BOB,
            just_before,
            Reason::Granted,
        ),
        row(
            "from given in UTC, same instant as local now",
            |s| card_mut(s, BOB).validity.from = Some(datetime!(2025-03-03 08:00 UTC)),
            FRONT_IN,
            BOB,
            at,
            Reason::Granted,
        ),
        row(
            "from given in UTC, one minute after local now",
            |s| card_mut(s, BOB).validity.from = Some(datetime!(2025-03-03 08:01 UTC)),
            FRONT_IN,
            BOB,
            at,
            Reason::NotYetValid,
        ),
        row(
            "not-yet-valid card before expired person",
            |s| {
                card_mut(s, BOB).validity.from = Some(datetime!(2026-01-01 00:00 +2));
                person_mut(s, BOB).validity.until = Some(datetime!(2025-01-01 00:00 +2));
            },
            FRONT_IN,
            BOB,
            at,
            Reason::NotYetValid,
        ),
        row(
            "expired before schedule",
            |s| card_mut(s, BOB).validity.until = Some(datetime!(2025-01-01 00:00 +2)),
            FRONT_IN,
            BOB,
            datetime!(2025-03-09 03:00 +2),
            Reason::Expired,
        ),
        row(
            "expired master card",
            |s| card_mut(s, GUS).validity.until = Some(datetime!(2025-01-01 00:00 +2)),
            FRONT_IN,
            GUS,
            at,
            Reason::Expired,
        ),
        row(
            "master of a not-yet-valid person",
            |s| person_mut(s, GUS).validity.from = Some(datetime!(2026-01-01 00:00 +2)),
            FRONT_IN,
            GUS,
            at,
            Reason::NotYetValid,
        ),
    ]);
}

#[test]
fn master_cards_and_levels() {
    let mon10 = datetime!(2025-03-03 10:00 +2);
    let sun3 = datetime!(2025-03-09 03:00 +2);
    let xmas = datetime!(2025-12-25 12:00 +2);
    run(&[
        row(
            "master with no levels, Sunday night",
            none,
            FRONT_IN,
            GUS,
            sun3,
            Reason::GrantedMaster,
        ),
        row(
            "master at a gate in no level",
            none,
            DOCK,
            GUS,
            mon10,
            Reason::GrantedMaster,
        ),
        row(
            "master on a holiday",
            none,
            SERVER_IN,
            GUS,
            xmas,
            Reason::GrantedMaster,
        ),
        row(
            "master at a disabled gate",
            none,
            OLD_DOOR,
            GUS,
            mon10,
            Reason::UnknownGate,
        ),
        row(
            "gate in another person's level",
            none,
            SERVER_IN,
            BOB,
            mon10,
            Reason::GateNotInLevel,
        ),
        row(
            "gate in no level",
            none,
            DOCK,
            BOB,
            mon10,
            Reason::GateNotInLevel,
        ),
        row(
            "not in level before schedule",
            none,
            SERVER_IN,
            BOB,
            sun3,
            Reason::GateNotInLevel,
        ),
        row(
            "second level grants the gate",
            none,
            SERVER_IN,
            ALICE,
            mon10,
            Reason::Granted,
        ),
        row(
            "person naming an unknown level",
            |s| person_mut(s, BOB).levels = vec![999],
            FRONT_IN,
            BOB,
            mon10,
            Reason::GateNotInLevel,
        ),
        row(
            "unknown level alongside a good one",
            |s| person_mut(s, BOB).levels = vec![999, OFFICE],
            FRONT_IN,
            BOB,
            mon10,
            Reason::Granted,
        ),
        row(
            "level no longer includes the gate",
            |s| level_mut(s, OFFICE).gates = vec![FRONT_OUT],
            FRONT_IN,
            BOB,
            mon10,
            Reason::GateNotInLevel,
        ),
        row(
            "level naming an unknown gate is harmless",
            |s| level_mut(s, OFFICE).gates.push(NO_GATE),
            FRONT_IN,
            BOB,
            mon10,
            Reason::Granted,
        ),
        row(
            "person with no levels",
            |s| person_mut(s, BOB).levels.clear(),
            FRONT_IN,
            BOB,
            mon10,
            Reason::GateNotInLevel,
        ),
    ]);
}

#[test]
fn weekly_schedules() {
    run(&[
        // Office, Monday to Friday 08:00-18:00.
        row(
            "Mon 07:59",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-03 07:59:59 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "Mon 08:00",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-03 08:00 +2),
            Reason::Granted,
        ),
        row(
            "Wed 12:00",
            none,
            FRONT_OUT,
            BOB,
            datetime!(2025-03-05 12:00 +2),
            Reason::Granted,
        ),
        row(
            "Fri 17:59:59",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-07 17:59:59 +2),
            Reason::Granted,
        ),
        row(
            "Fri 18:00",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-07 18:00 +2),
            Reason::OutsideSchedule,
        ),
        // Office, Saturday 09:00-12:00; closed Sunday.
        row(
            "Sat 08:59",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-08 08:59 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "Sat 09:00",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-08 09:00 +2),
            Reason::Granted,
        ),
        row(
            "Sat 11:59",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-08 11:59:59 +2),
            Reason::Granted,
        ),
        row(
            "Sat 12:00",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-08 12:00 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "Sun 12:00",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-09 12:00 +2),
            Reason::OutsideSchedule,
        ),
        // Server, weekdays 07:00-19:00 (a different window per level).
        row(
            "server Mon 07:00",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-03-03 07:00 +2),
            Reason::Granted,
        ),
        row(
            "server Mon 18:59",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-03-03 18:59 +2),
            Reason::Granted,
        ),
        row(
            "server Mon 19:00",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-03-03 19:00 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "server Sat 10:00",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-03-08 10:00 +2),
            Reason::OutsideSchedule,
        ),
        // Night shift: two windows, 22:00-24:00 and 00:00-06:00.
        row(
            "night Mon 05:59",
            none,
            FRONT_IN,
            NINA,
            datetime!(2025-03-03 05:59 +2),
            Reason::Granted,
        ),
        row(
            "night Mon 06:00",
            none,
            FRONT_IN,
            NINA,
            datetime!(2025-03-03 06:00 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "night Mon 21:59",
            none,
            FRONT_IN,
            NINA,
            datetime!(2025-03-03 21:59:59 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "night Mon 22:00",
            none,
            FRONT_IN,
            NINA,
            datetime!(2025-03-03 22:00 +2),
            Reason::Granted,
        ),
        row(
            "night Mon 23:59:59",
            none,
            FRONT_IN,
            NINA,
            datetime!(2025-03-03 23:59:59.999 +2),
            Reason::Granted,
        ),
        row(
            "night Tue 00:00",
            none,
            FRONT_IN,
            NINA,
            datetime!(2025-03-04 00:00 +2),
            Reason::Granted,
        ),
        row(
            "night Sun 03:00",
            none,
            FRONT_OUT,
            NINA,
            datetime!(2025-03-09 03:00 +2),
            Reason::Granted,
        ),
        // Union of levels: office + night.
        row(
            "union: office hours",
            none,
            FRONT_IN,
            MAX,
            datetime!(2025-03-03 12:00 +2),
            Reason::Granted,
        ),
        row(
            "union: night hours",
            none,
            FRONT_IN,
            MAX,
            datetime!(2025-03-03 23:00 +2),
            Reason::Granted,
        ),
        row(
            "union: neither",
            none,
            FRONT_IN,
            MAX,
            datetime!(2025-03-03 20:00 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "union: Sunday noon",
            none,
            FRONT_IN,
            MAX,
            datetime!(2025-03-09 12:00 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "union: Sunday 02:00",
            none,
            FRONT_IN,
            MAX,
            datetime!(2025-03-09 02:00 +2),
            Reason::Granted,
        ),
        // Invalid data never panics and never grants.
        row(
            "reversed window matches nothing",
            |s| level_mut(s, OFFICE).schedule.weekly[0] = vec![win(600, 500)],
            FRONT_IN,
            BOB,
            datetime!(2025-03-03 09:00 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "window ending past midnight is cut at midnight",
            |s| level_mut(s, OFFICE).schedule.weekly[0] = vec![win(hm(20, 0), 2000)],
            FRONT_IN,
            BOB,
            datetime!(2025-03-03 23:59 +2),
            Reason::Granted,
        ),
        row(
            "window ending past midnight does not spill into Tuesday",
            |s| level_mut(s, OFFICE).schedule.weekly[0] = vec![win(hm(20, 0), 2000)],
            FRONT_IN,
            BOB,
            datetime!(2025-03-04 00:30 +2),
            Reason::OutsideSchedule,
        ),
    ]);
}

#[test]
fn holidays() {
    run(&[
        row(
            "ordinary Thursday",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-12-18 10:00 +2),
            Reason::Granted,
        ),
        // Closed.
        row(
            "Closed: holiday in office hours",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-12-25 10:00 +2),
            Reason::Holiday,
        ),
        row(
            "Closed: holiday at night",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-12-25 03:00 +2),
            Reason::Holiday,
        ),
        row(
            "Closed: day after",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-12-26 10:00 +2),
            Reason::Granted,
        ),
        row(
            "Closed: holidays removed",
            |s| s.holidays.clear(),
            FRONT_IN,
            BOB,
            datetime!(2025-12-25 10:00 +2),
            Reason::Granted,
        ),
        row(
            "holiday listed twice and unsorted",
            |s| {
                s.holidays = vec![
                    date!(2026 - 01 - 01),
                    date!(2025 - 12 - 25),
                    date!(2025 - 01 - 01),
                    date!(2025 - 12 - 25),
                ]
            },
            FRONT_IN,
            BOB,
            datetime!(2025-12-25 10:00 +2),
            Reason::Holiday,
        ),
        // Windows (server: 10:00-14:00 on holidays instead of 07:00-19:00).
        row(
            "Windows: 09:59",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-12-25 09:59 +2),
            Reason::Holiday,
        ),
        row(
            "Windows: 10:00",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-12-25 10:00 +2),
            Reason::Granted,
        ),
        row(
            "Windows: 13:59",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-12-25 13:59 +2),
            Reason::Granted,
        ),
        row(
            "Windows: 14:00",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-12-25 14:00 +2),
            Reason::Holiday,
        ),
        row(
            "Windows: ordinary Thursday 08:00",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-12-18 08:00 +2),
            Reason::Granted,
        ),
        row(
            "Windows: holiday on a Saturday opens a closed day",
            |s| s.holidays.push(date!(2025 - 03 - 08)),
            SERVER_IN,
            ALICE,
            datetime!(2025-03-08 11:00 +2),
            Reason::Granted,
        ),
        // Ignore (night: the usual windows).
        row(
            "Ignore: inside usual window",
            none,
            FRONT_IN,
            NINA,
            datetime!(2025-12-25 23:00 +2),
            Reason::Granted,
        ),
        row(
            "Ignore: outside usual window",
            none,
            FRONT_IN,
            NINA,
            datetime!(2025-12-25 12:00 +2),
            Reason::OutsideSchedule,
        ),
        // Several levels on a holiday.
        row(
            "Closed + Ignore, night hours",
            none,
            FRONT_IN,
            MAX,
            datetime!(2025-12-25 23:30 +2),
            Reason::Granted,
        ),
        row(
            "Closed + Ignore, office hours",
            none,
            FRONT_IN,
            MAX,
            datetime!(2025-12-25 12:00 +2),
            Reason::OutsideSchedule,
        ),
        row(
            "Closed + Windows, neither open",
            |s| {
                level_mut(s, SERVER).gates.push(FRONT_IN);
            },
            FRONT_IN,
            ALICE,
            datetime!(2025-12-25 16:00 +2),
            Reason::Holiday,
        ),
        row(
            "Closed + Windows, holiday window open",
            |s| {
                level_mut(s, SERVER).gates.push(FRONT_IN);
            },
            FRONT_IN,
            ALICE,
            datetime!(2025-12-25 11:00 +2),
            Reason::Granted,
        ),
    ]);
}

#[test]
fn local_offsets() {
    run(&[
        // Friday 17:30 UTC: inside office hours in UTC, 19:30 at +02:00.
        row(
            "UTC site, Fri 17:30",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-07 17:30 UTC),
            Reason::Granted,
        ),
        row(
            "+02:00 site, same instant is Fri 19:30",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-07 17:30 UTC).to_offset(offset!(+2)),
            Reason::OutsideSchedule,
        ),
        // Sunday 18:00 UTC is Monday 08:00 at +14:00.
        row(
            "UTC site, Sun 18:00",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-03-09 18:00 UTC),
            Reason::OutsideSchedule,
        ),
        row(
            "+14:00 site, same instant is Mon 08:00",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-03-09 18:00 UTC).to_offset(offset!(+14)),
            Reason::Granted,
        ),
        // Friday 23:30 UTC is Saturday 10:30 at +11:00 (office Saturday window).
        row(
            "+11:00 site, Fri 23:30 UTC is Sat 10:30",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-03-07 23:30 UTC).to_offset(offset!(+11)),
            Reason::Granted,
        ),
        // Monday 06:30 UTC is Sunday 20:30 at -10:00.
        row(
            "-10:00 site, Mon 06:30 UTC is Sunday",
            none,
            SERVER_IN,
            ALICE,
            datetime!(2025-03-10 06:30 UTC).to_offset(offset!(-10)),
            Reason::OutsideSchedule,
        ),
        // The holiday is a local date.
        row(
            "UTC site, Dec 24 23:30 is no holiday",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-12-24 23:30 UTC),
            Reason::OutsideSchedule,
        ),
        row(
            "+02:00 site, same instant is Dec 25 01:30",
            none,
            FRONT_IN,
            BOB,
            datetime!(2025-12-24 23:30 UTC).to_offset(offset!(+2)),
            Reason::Holiday,
        ),
    ]);
}

// ---- anti-passback sequences -----------------------------------------------------------

struct Sequence {
    name: &'static str,
    tweak: fn(&mut Snapshot),
    steps: Vec<(GateId, u8, OffsetDateTime, Reason)>,
}

#[test]
fn anti_passback_sequences() {
    let t = |m: u8| datetime!(2025-03-03 10:00 +2) + Duration::minutes(i64::from(m));
    let evening = datetime!(2025-03-03 20:00 +2);
    let sequences = vec![
        Sequence {
            name: "in, in again, out, out again, in",
            tweak: none,
            steps: vec![
                (SERVER_IN, ALICE, t(0), Reason::Granted),
                (SERVER_IN, ALICE, t(1), Reason::AntiPassback),
                (SERVER_OUT, ALICE, t(2), Reason::Granted),
                (SERVER_OUT, ALICE, t(3), Reason::AntiPassback),
                (SERVER_IN, ALICE, t(4), Reason::Granted),
            ],
        },
        Sequence {
            name: "first-ever passage may be an exit",
            tweak: none,
            steps: vec![
                (SERVER_OUT, ALICE, t(0), Reason::Granted),
                (SERVER_OUT, ALICE, t(1), Reason::AntiPassback),
                (SERVER_IN, ALICE, t(2), Reason::Granted),
            ],
        },
        Sequence {
            name: "a schedule deny does not change state",
            tweak: none,
            steps: vec![
                (SERVER_IN, ALICE, t(0), Reason::Granted),
                (SERVER_OUT, ALICE, evening, Reason::OutsideSchedule),
                (SERVER_IN, ALICE, t(2), Reason::AntiPassback),
                (SERVER_OUT, ALICE, t(3), Reason::Granted),
            ],
        },
        Sequence {
            name: "an anti-passback deny does not change state",
            tweak: none,
            steps: vec![
                (SERVER_OUT, ALICE, t(0), Reason::Granted),
                (SERVER_OUT, ALICE, t(1), Reason::AntiPassback),
                (SERVER_OUT, ALICE, t(2), Reason::AntiPassback),
                (SERVER_IN, ALICE, t(3), Reason::Granted),
            ],
        },
        Sequence {
            name: "state is per person",
            tweak: |s| person_mut(s, BOB).levels.push(SERVER),
            steps: vec![
                (SERVER_IN, ALICE, t(0), Reason::Granted),
                (SERVER_IN, BOB, t(1), Reason::Granted),
                (SERVER_IN, ALICE, t(2), Reason::AntiPassback),
                (SERVER_OUT, BOB, t(3), Reason::Granted),
                (SERVER_IN, BOB, t(4), Reason::Granted),
                (SERVER_IN, ALICE, t(5), Reason::AntiPassback),
            ],
        },
        Sequence {
            name: "state is per person, not per card",
            tweak: |s| {
                let mut second = s.cards.get(&card(ALICE)).unwrap().clone();
                second.id = 7;
                second.hash = card(7);
                s.cards.insert(card(7), second);
            },
            steps: vec![
                (SERVER_IN, ALICE, t(0), Reason::Granted),
                (SERVER_IN, 7, t(1), Reason::AntiPassback),
                (SERVER_OUT, 7, t(2), Reason::Granted),
                (SERVER_IN, ALICE, t(3), Reason::Granted),
            ],
        },
        Sequence {
            name: "zone without anti-passback",
            tweak: none,
            steps: vec![
                (FRONT_IN, BOB, t(0), Reason::Granted),
                (FRONT_IN, BOB, t(1), Reason::Granted),
                (FRONT_OUT, BOB, t(2), Reason::Granted),
                (FRONT_OUT, BOB, t(3), Reason::Granted),
            ],
        },
        Sequence {
            name: "passages in another zone do not count",
            tweak: none,
            steps: vec![
                (FRONT_IN, ALICE, t(0), Reason::Granted),
                (SERVER_IN, ALICE, t(1), Reason::Granted),
                (FRONT_OUT, ALICE, t(2), Reason::Granted),
                (SERVER_IN, ALICE, t(3), Reason::AntiPassback),
            ],
        },
        Sequence {
            name: "anti-passback switched off for the zone",
            tweak: |s| s.zones.get_mut(&SERVER_ROOM).unwrap().anti_passback = false,
            steps: vec![
                (SERVER_IN, ALICE, t(0), Reason::Granted),
                (SERVER_IN, ALICE, t(1), Reason::Granted),
            ],
        },
        Sequence {
            name: "masters bypass anti-passback",
            tweak: none,
            steps: vec![
                (SERVER_IN, GUS, t(0), Reason::GrantedMaster),
                (SERVER_IN, GUS, t(1), Reason::GrantedMaster),
                (SERVER_OUT, GUS, t(2), Reason::GrantedMaster),
                (SERVER_OUT, GUS, t(3), Reason::GrantedMaster),
            ],
        },
        Sequence {
            name: "a master grant is recorded for the person's other cards",
            tweak: |s| {
                person_mut(s, GUS).levels.push(SERVER);
                let mut plain = s.cards.get(&card(GUS)).unwrap().clone();
                plain.id = 8;
                plain.hash = card(8);
                plain.master = false;
                s.cards.insert(card(8), plain);
            },
            steps: vec![
                (SERVER_IN, GUS, t(0), Reason::GrantedMaster),
                (SERVER_IN, 8, t(1), Reason::AntiPassback),
                (SERVER_OUT, 8, t(2), Reason::Granted),
            ],
        },
    ];
    let mut failures = Vec::new();
    for seq in &sequences {
        let mut snapshot = fixture();
        (seq.tweak)(&mut snapshot);
        let mut engine = AccessEngine::new(DecisionSnapshot::from(snapshot));
        for (i, (gate, n, at, expect)) in seq.steps.iter().enumerate() {
            let got = engine.decide(*gate, &card(*n), *at).reason;
            if got != *expect {
                failures.push(format!(
                    "{} step {i}: got {got:?}, want {expect:?}",
                    seq.name
                ));
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} sequences failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn presence_is_recorded_only_in_anti_passback_zones() {
    let at = datetime!(2025-03-03 10:00 +2);
    let alice = PersonId::from(ALICE);
    let mut engine = AccessEngine::new(DecisionSnapshot::from(fixture()));
    assert_eq!(engine.presence(SERVER_ROOM, alice), None);
    assert!(engine.decide(SERVER_IN, &card(ALICE), at).is_allowed());
    assert_eq!(engine.presence(SERVER_ROOM, alice), Some(Presence::Inside));
    assert!(engine.decide(SERVER_OUT, &card(ALICE), at).is_allowed());
    assert_eq!(engine.presence(SERVER_ROOM, alice), Some(Presence::Outside));
    assert!(engine.decide(FRONT_IN, &card(ALICE), at).is_allowed());
    assert_eq!(engine.presence(LOBBY, alice), None);
}

#[test]
fn forget_presence_lets_the_person_pass_again() {
    let at = datetime!(2025-03-03 10:00 +2);
    let mut engine = AccessEngine::new(DecisionSnapshot::from(fixture()));
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::Granted
    );
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::AntiPassback
    );
    engine.forget_presence(PersonId::from(ALICE));
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::Granted
    );
}

// ---- replace ---------------------------------------------------------------------------

#[test]
fn replace_keeps_state_for_people_still_present() {
    let at = datetime!(2025-03-03 10:00 +2);
    let mut engine = AccessEngine::new(DecisionSnapshot::from(fixture()));
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::Granted
    );
    let mut refreshed = fixture();
    person_mut(&mut refreshed, ALICE).name = "Alice (renamed)".into();
    engine.replace(DecisionSnapshot::from(refreshed));
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::AntiPassback
    );
    assert_eq!(
        engine.decide(SERVER_OUT, &card(ALICE), at).reason,
        Reason::Granted
    );
}

#[test]
fn replace_forgets_people_who_left_the_snapshot() {
    let at = datetime!(2025-03-03 10:00 +2);
    let mut engine = AccessEngine::new(DecisionSnapshot::from(fixture()));
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::Granted
    );
    let mut without_alice = fixture();
    without_alice.people.remove(&PersonId::from(ALICE));
    without_alice.cards.remove(&card(ALICE));
    engine.replace(DecisionSnapshot::from(without_alice));
    assert_eq!(engine.presence(SERVER_ROOM, PersonId::from(ALICE)), None);
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::UnknownCard
    );
    engine.replace(DecisionSnapshot::from(fixture()));
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::Granted
    );
}

#[test]
fn replace_forgets_zones_whose_anti_passback_was_switched_off() {
    let at = datetime!(2025-03-03 10:00 +2);
    let mut engine = AccessEngine::new(DecisionSnapshot::from(fixture()));
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::Granted
    );
    let mut off = fixture();
    off.zones.get_mut(&SERVER_ROOM).unwrap().anti_passback = false;
    engine.replace(DecisionSnapshot::from(off));
    assert_eq!(engine.presence(SERVER_ROOM, PersonId::from(ALICE)), None);
    engine.replace(DecisionSnapshot::from(fixture()));
    // Back on: unknown state, so one more entry is allowed.
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::Granted
    );
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::AntiPassback
    );
}

#[test]
fn replace_refreshes_the_data_decisions_use() {
    let at = datetime!(2025-03-03 10:00 +2);
    let mut engine = AccessEngine::new(DecisionSnapshot::from(fixture()));
    assert_eq!(
        engine.decide(FRONT_IN, &card(BOB), at).reason,
        Reason::Granted
    );
    assert_eq!(
        engine.decide(FRONT_IN, &card(NOBODY), at).reason,
        Reason::UnknownCard
    );

    let mut next = fixture();
    card_mut(&mut next, BOB).enabled = false;
    let mut new_card = next.cards.get(&card(NINA)).unwrap().clone();
    new_card.id = 9;
    new_card.hash = card(NOBODY);
    person_mut(&mut next, NINA).levels.push(OFFICE);
    next.cards.insert(card(NOBODY), new_card);
    next.holidays.push(date!(2025 - 03 - 03));
    engine.replace(DecisionSnapshot::from(next));

    assert_eq!(
        engine.decide(FRONT_IN, &card(BOB), at).reason,
        Reason::Disabled
    );
    let d = engine.decide(FRONT_IN, &card(NOBODY), at);
    // Monday is now a holiday; Nina's night level ignores holidays, office is closed.
    assert_eq!(d.reason, Reason::OutsideSchedule);
    assert_eq!((d.card, d.person), (Some(9), Some(PersonId::from(NINA))));
    assert_eq!(
        engine
            .decide(FRONT_IN, &card(NOBODY), datetime!(2025-03-03 23:00 +2))
            .reason,
        Reason::Granted
    );
}

// ---- allow lists -----------------------------------------------------------------------

#[test]
fn allow_lists() {
    struct Case {
        name: &'static str,
        tweak: fn(&mut Snapshot),
        gate: GateId,
        from: OffsetDateTime,
        until: OffsetDateTime,
        expect: Vec<u8>,
    }
    let case = |name, tweak, gate, from, until, expect| Case {
        name,
        tweak,
        gate,
        from,
        until,
        expect,
    };
    let mon = datetime!(2025-03-03 00:00 +2);
    let tue = datetime!(2025-03-04 00:00 +2);
    let cases = [
        case(
            "front door, whole Monday",
            none as fn(&mut Snapshot),
            FRONT_IN,
            mon,
            tue,
            vec![ALICE, BOB, NINA, GUS, MAX],
        ),
        case(
            "server door, whole Monday",
            none,
            SERVER_IN,
            mon,
            tue,
            vec![ALICE, GUS],
        ),
        case("dock: masters only", none, DOCK, mon, tue, vec![GUS]),
        case("disabled gate", none, OLD_DOOR, mon, tue, vec![]),
        case("unknown gate", none, NO_GATE, mon, tue, vec![]),
        case("empty range", none, FRONT_IN, tue, tue, vec![]),
        case("reversed range", none, FRONT_IN, tue, mon, vec![]),
        case(
            "Sunday 08:00-22:00 (until exclusive)",
            none,
            FRONT_IN,
            datetime!(2025-03-09 08:00 +2),
            datetime!(2025-03-09 22:00 +2),
            vec![GUS],
        ),
        case(
            "Sunday 08:00-22:01",
            none,
            FRONT_IN,
            datetime!(2025-03-09 08:00 +2),
            datetime!(2025-03-09 22:01 +2),
            vec![NINA, GUS, MAX],
        ),
        case(
            "Monday 18:00-22:00 fits no window",
            none,
            FRONT_IN,
            datetime!(2025-03-03 18:00 +2),
            datetime!(2025-03-03 22:00 +2),
            vec![GUS],
        ),
        case(
            "Sunday 07:00 to Monday 08:01 spans two days",
            |s| person_mut(s, NINA).enabled = false,
            FRONT_IN,
            datetime!(2025-03-09 07:00 +2),
            datetime!(2025-03-10 08:01 +2),
            vec![ALICE, BOB, GUS, MAX],
        ),
        case(
            "holiday: office Closed, night Ignore",
            none,
            FRONT_IN,
            datetime!(2025-12-25 00:00 +2),
            datetime!(2025-12-26 00:00 +2),
            vec![NINA, GUS, MAX],
        ),
        case(
            "holiday: server Windows 10-14, asked 14:00-19:00",
            none,
            SERVER_IN,
            datetime!(2025-12-25 14:00 +2),
            datetime!(2025-12-25 19:00 +2),
            vec![GUS],
        ),
        case(
            "holiday: server Windows 10-14, asked 13:00-19:00",
            none,
            SERVER_IN,
            datetime!(2025-12-25 13:00 +2),
            datetime!(2025-12-25 19:00 +2),
            vec![ALICE, GUS],
        ),
        case(
            "card expiring as the window opens",
            |s| card_mut(s, BOB).validity.until = Some(datetime!(2025-03-03 08:00 +2)),
            FRONT_IN,
            mon,
            tue,
            vec![ALICE, NINA, GUS, MAX],
        ),
        case(
            "card expiring a minute into the window",
            |s| card_mut(s, BOB).validity.until = Some(datetime!(2025-03-03 08:01 +2)),
            FRONT_IN,
            mon,
            tue,
            vec![ALICE, BOB, NINA, GUS, MAX],
        ),
        case(
            "person valid only from tomorrow",
            |s| person_mut(s, BOB).validity.from = Some(datetime!(2025-03-04 00:00 +2)),
            FRONT_IN,
            mon,
            tue,
            vec![ALICE, NINA, GUS, MAX],
        ),
        case(
            "disabled card and disabled person",
            |s| {
                card_mut(s, BOB).enabled = false;
                person_mut(s, GUS).enabled = false;
            },
            FRONT_IN,
            mon,
            tue,
            vec![ALICE, NINA, MAX],
        ),
        case(
            "dangling person is left out",
            |s| card_mut(s, BOB).person = 77,
            FRONT_IN,
            mon,
            tue,
            vec![ALICE, NINA, GUS, MAX],
        ),
        case(
            "local days follow from's offset: Sunday 22:00-23:00 UTC",
            |s| person_mut(s, NINA).enabled = false,
            SERVER_IN,
            datetime!(2025-03-09 22:00 UTC),
            datetime!(2025-03-09 23:00 UTC),
            vec![GUS],
        ),
        case(
            "local days follow from's offset: same range at +14:00 is Monday noon",
            |s| person_mut(s, NINA).enabled = false,
            SERVER_IN,
            datetime!(2025-03-09 22:00 UTC).to_offset(offset!(+14)),
            datetime!(2025-03-09 23:00 UTC),
            vec![ALICE, GUS],
        ),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let mut snapshot = fixture();
        (c.tweak)(&mut snapshot);
        let engine = AccessEngine::new(DecisionSnapshot::from(snapshot));
        let got = engine.allow_list(c.gate, c.from, c.until);
        let want: Vec<CardHash> = c.expect.iter().map(|n| card(*n)).collect();
        if got != want {
            let got: Vec<u8> = got.iter().map(|h| h.0[0]).collect();
            failures.push(format!("{}: got {got:?}, want {:?}", c.name, c.expect));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn allow_list_ignores_anti_passback() {
    let at = datetime!(2025-03-03 10:00 +2);
    let mut engine = AccessEngine::new(DecisionSnapshot::from(fixture()));
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::Granted
    );
    assert_eq!(
        engine.decide(SERVER_IN, &card(ALICE), at).reason,
        Reason::AntiPassback
    );
    let list = engine.allow_list(SERVER_IN, at, at + Duration::hours(1));
    assert_eq!(list, vec![card(ALICE), card(GUS)]);
}

// ---- validate --------------------------------------------------------------------------

#[test]
fn validate() {
    type Tweak = fn(&mut Snapshot);
    let cases: [(&str, Tweak, Result<(), ModelError>); 12] = [
        ("fixture", none, Ok(())),
        (
            "window ending exactly at midnight is fine",
            |s| level_mut(s, OFFICE).schedule.weekly[6] = vec![win(hm(23, 0), 1440)],
            Ok(()),
        ),
        (
            "empty window",
            |s| level_mut(s, OFFICE).schedule.weekly[0] = vec![win(480, 480)],
            Err(ModelError::EmptyWindow {
                level: Some(OFFICE),
                day: "monday",
                start: 480,
                end: 480,
            }),
        ),
        (
            "reversed window (an overnight shift in one window)",
            |s| level_mut(s, NIGHT).schedule.weekly[4] = vec![win(hm(22, 0), hm(6, 0))],
            Err(ModelError::EmptyWindow {
                level: Some(NIGHT),
                day: "friday",
                start: hm(22, 0),
                end: hm(6, 0),
            }),
        ),
        (
            "window past midnight",
            |s| level_mut(s, NIGHT).schedule.weekly[6].push(win(hm(23, 0), 1441)),
            Err(ModelError::WindowPastMidnight {
                level: Some(NIGHT),
                day: "sunday",
                end: 1441,
            }),
        ),
        (
            "bad holiday window",
            |s| level_mut(s, SERVER).schedule.holidays = HolidayRule::Windows(vec![win(700, 600)]),
            Err(ModelError::EmptyWindow {
                level: Some(SERVER),
                day: "holiday",
                start: 700,
                end: 600,
            }),
        ),
        (
            "level naming an unknown gate",
            |s| level_mut(s, SERVER).gates.push(NO_GATE),
            Err(ModelError::LevelUnknownGate {
                level: SERVER,
                gate: NO_GATE,
            }),
        ),
        (
            "card naming an unknown person",
            |s| card_mut(s, BOB).person = 77,
            Err(ModelError::CardUnknownPerson {
                card: CardId::from(BOB),
                person: 77,
            }),
        ),
        (
            "gate naming an unknown zone",
            |s| s.gates.get_mut(&DOCK).unwrap().zone = 77,
            Err(ModelError::GateUnknownZone {
                gate: DOCK,
                zone: 77,
            }),
        ),
        (
            "person naming an unknown level",
            |s| person_mut(s, MAX).levels.push(999),
            Err(ModelError::PersonUnknownLevel {
                person: PersonId::from(MAX),
                level: 999,
            }),
        ),
        (
            "gate keyed under another id",
            |s| {
                let g = s.gates.remove(&DOCK).unwrap();
                s.gates.insert(32, g);
            },
            Err(ModelError::KeyMismatch {
                table: "gates",
                key: "32".into(),
                id: "30".into(),
            }),
        ),
        (
            "first error in id order wins",
            |s| {
                card_mut(s, BOB).person = 77;
                card_mut(s, ALICE).person = 78;
            },
            Err(ModelError::CardUnknownPerson {
                card: CardId::from(ALICE),
                person: 78,
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (name, tweak, expect) in cases {
        let mut snapshot = fixture();
        tweak(&mut snapshot);
        let got = snapshot.validate();
        if got != expect {
            failures.push(format!("{name}: got {got:?}, want {expect:?}"));
        }
        // Whatever validate says, deciding on the snapshot never panics.
        let mut engine = AccessEngine::new(DecisionSnapshot::from(snapshot));
        for g in [FRONT_IN, SERVER_IN, DOCK, 32] {
            for n in [ALICE, BOB, GUS, MAX] {
                engine.decide(g, &card(n), datetime!(2025-03-03 10:00 +2));
            }
            engine.allow_list(
                g,
                datetime!(2025-03-03 00:00 +2),
                datetime!(2025-03-05 00:00 +2),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn model_errors_read_well() {
    let e = ModelError::WindowPastMidnight {
        level: Some(5),
        day: "sunday",
        end: 1500,
    };
    assert_eq!(
        e.to_string(),
        "level 5: sunday window ends at minute 1500, after midnight (1440); split overnight windows in two"
    );
}
