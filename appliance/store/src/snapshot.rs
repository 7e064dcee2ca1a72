//! Reading the access tables as a whole: the full [`Snapshot`] (names included), and the
//! compact [`DecisionSnapshot`] the hub's access engine keeps in memory, streamed from the
//! rows without building the full one first.
//!
//! Promises: a snapshot is read inside one read transaction, so it is consistent with
//! itself and with the revision returned beside it by [`Store::revisioned_snapshot`] and
//! [`Store::revisioned_decision_snapshot`].

use crate::error::StoreError;
use crate::store::{
    card_hash_from_blob, parse_date, parse_direction, parse_schedule, relay_ms_from_col,
    validity_from_cols, Result, Store,
};
use gatehouse_access::model::{
    Card, Gate, GateId, Level, LevelId, Person, PersonId, Snapshot, Validity, Zone, ZoneId,
};
use gatehouse_access::{DecisionSnapshot, DecisionSnapshotBuilder};
use rusqlite::Connection;
use std::collections::HashMap;
use time::Date;

pub(crate) fn load_people(conn: &Connection) -> Result<HashMap<PersonId, Person>> {
    let mut st = conn.prepare("SELECT id, name, enabled, valid_from, valid_until FROM people")?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut people = HashMap::with_capacity(rows.len());
    for (id, name, enabled, from, until) in rows {
        people.insert(
            id,
            Person {
                id,
                name,
                enabled,
                validity: validity_from_cols(from, until)?,
                levels: Vec::new(),
            },
        );
    }
    let mut st =
        conn.prepare("SELECT person_id, level_id FROM person_levels ORDER BY person_id, level_id")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let (p, l): (PersonId, LevelId) = (r.get(0)?, r.get(1)?);
        if let Some(person) = people.get_mut(&p) {
            person.levels.push(l);
        }
    }
    Ok(people)
}

pub(crate) fn load_levels(conn: &Connection) -> Result<HashMap<LevelId, Level>> {
    let mut st = conn.prepare("SELECT id, name, schedule FROM levels")?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut levels = HashMap::with_capacity(rows.len());
    for (id, name, schedule) in rows {
        levels.insert(
            id,
            Level {
                id,
                name,
                gates: Vec::new(),
                schedule: parse_schedule(id, &schedule)?,
            },
        );
    }
    let mut st =
        conn.prepare("SELECT level_id, gate_id FROM level_gates ORDER BY level_id, gate_id")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let (l, g): (LevelId, GateId) = (r.get(0)?, r.get(1)?);
        if let Some(level) = levels.get_mut(&l) {
            level.gates.push(g);
        }
    }
    Ok(levels)
}

fn load_zones(conn: &Connection) -> Result<HashMap<ZoneId, Zone>> {
    let mut zones = HashMap::new();
    let mut st = conn.prepare("SELECT id, name, anti_passback FROM zones")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let z = Zone {
            id: r.get(0)?,
            name: r.get(1)?,
            anti_passback: r.get(2)?,
        };
        zones.insert(z.id, z);
    }
    Ok(zones)
}

fn load_gates(conn: &Connection) -> Result<HashMap<GateId, Gate>> {
    let mut gates = HashMap::new();
    let mut st =
        conn.prepare("SELECT id, name, zone_id, direction, enabled, relay_ms FROM gates")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let direction: String = r.get(3)?;
        let g = Gate {
            id: r.get(0)?,
            name: r.get(1)?,
            zone: r.get(2)?,
            direction: parse_direction(&direction)?,
            enabled: r.get(4)?,
            relay_ms: relay_ms_from_col(r.get(5)?)?,
        };
        gates.insert(g.id, g);
    }
    Ok(gates)
}

fn load_holidays(conn: &Connection) -> Result<Vec<Date>> {
    let mut holidays = Vec::new();
    let mut st = conn.prepare("SELECT date FROM holidays ORDER BY date")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let d: String = r.get(0)?;
        holidays.push(parse_date(&d)?);
    }
    Ok(holidays)
}

/// Calls `each` with every card, read one row at a time.
fn for_each_card(conn: &Connection, mut each: impl FnMut(Card)) -> Result<()> {
    let mut st = conn.prepare(
        "SELECT id, hash, person_id, enabled, master, valid_from, valid_until FROM cards",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let hash = r
            .get_ref(1)?
            .as_blob()
            .map_err(|e| StoreError::Corrupt(format!("card hash: {e}")))?;
        each(Card {
            id: r.get(0)?,
            hash: card_hash_from_blob(hash)?,
            person: r.get(2)?,
            enabled: r.get(3)?,
            master: r.get(4)?,
            validity: validity_from_cols(r.get(5)?, r.get(6)?)?,
        });
    }
    Ok(())
}

fn load(conn: &Connection) -> Result<Snapshot> {
    let mut cards = HashMap::new();
    for_each_card(conn, |c| {
        cards.insert(c.hash, c);
    })?;
    Ok(Snapshot {
        people: load_people(conn)?,
        cards,
        gates: load_gates(conn)?,
        zones: load_zones(conn)?,
        levels: load_levels(conn)?,
        holidays: load_holidays(conn)?,
    })
}

/// The same data as [`load`], streamed into a [`DecisionSnapshotBuilder`]: no names, no
/// per-person allocation, the big `Vec`s sized from the row counts up front.
fn load_decision(conn: &Connection) -> Result<DecisionSnapshot> {
    let mut b = DecisionSnapshotBuilder::new();
    for (id, zone) in &load_zones(conn)? {
        b.zone(*id, zone);
    }
    for (id, gate) in &load_gates(conn)? {
        b.gate(*id, gate);
    }
    for (id, level) in &load_levels(conn)? {
        b.level(*id, level);
    }
    for date in load_holidays(conn)? {
        b.holiday(date);
    }
    let (people, cards): (i64, i64) = conn.query_row(
        "SELECT (SELECT count(*) FROM people), (SELECT count(*) FROM cards)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    b.reserve(
        usize::try_from(people).unwrap_or(0),
        usize::try_from(cards).unwrap_or(0),
    );

    // One row per (person, level), people in id order, so each person's levels are
    // consecutive.
    let mut st = conn.prepare(
        "SELECT p.id, p.enabled, p.valid_from, p.valid_until, pl.level_id
         FROM people p LEFT JOIN person_levels pl ON pl.person_id = p.id
         ORDER BY p.id, pl.level_id",
    )?;
    let mut rows = st.query([])?;
    let mut current: Option<(PersonId, bool, Validity)> = None;
    let mut levels: Vec<LevelId> = Vec::new();
    while let Some(r) = rows.next()? {
        let id: PersonId = r.get(0)?;
        if current.is_some_and(|(c, _, _)| c != id) {
            if let Some((c, enabled, validity)) = current.take() {
                b.person(c, enabled, validity, &levels);
            }
            levels.clear();
        }
        if current.is_none() {
            current = Some((id, r.get(1)?, validity_from_cols(r.get(2)?, r.get(3)?)?));
        }
        if let Some(level) = r.get::<_, Option<LevelId>>(4)? {
            levels.push(level);
        }
    }
    if let Some((c, enabled, validity)) = current {
        b.person(c, enabled, validity, &levels);
    }
    drop(rows);
    drop(st);

    for_each_card(conn, |c| b.card(&c))?;
    Ok(b.build())
}

impl Store {
    /// The access data in full (names included), as [`Snapshot`].
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(self.revisioned_snapshot()?.1)
    }

    /// The access data in full and the revision it corresponds to, read in one
    /// transaction.
    pub fn revisioned_snapshot(&self) -> Result<(u64, Snapshot)> {
        self.revisioned(load)
    }

    /// What the access engine decides from, and the revision it corresponds to, read in
    /// one transaction. Equal to `DecisionSnapshot::from(&snapshot)` for the
    /// [`Store::revisioned_snapshot`] of the same revision, without ever holding the names.
    pub fn revisioned_decision_snapshot(&self) -> Result<(u64, DecisionSnapshot)> {
        self.revisioned(load_decision)
    }

    fn revisioned<T>(&self, load: impl FnOnce(&Connection) -> Result<T>) -> Result<(u64, T)> {
        let tx = self.conn().unchecked_transaction()?;
        let rev: i64 = tx.query_row("SELECT value FROM revision WHERE id = 1", [], |r| r.get(0))?;
        let rev = u64::try_from(rev).map_err(|_| StoreError::Corrupt(format!("revision {rev}")))?;
        let loaded = load(&tx)?;
        tx.finish()?;
        Ok((rev, loaded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewCard, NewGate, SiteKey};
    use gatehouse_access::model::{Direction, HolidayRule, Schedule, Window};
    use time::macros::{date, datetime};

    fn schedule(start: u16, end: u16) -> Schedule {
        Schedule {
            weekly: std::array::from_fn(|_| vec![Window { start, end }]),
            holidays: HolidayRule::Closed,
        }
    }

    fn gate(name: &str, zone: ZoneId, direction: Direction) -> NewGate {
        NewGate {
            name: name.into(),
            zone,
            direction,
            relay_ms: 1500,
            allowed_ips: None,
            mqtt_username: None,
        }
    }

    #[test]
    fn the_decision_snapshot_is_the_full_one_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SiteKey::from_bytes([7; 32]);
        let empty = store.revisioned_decision_snapshot().unwrap().1;
        assert_eq!(empty, DecisionSnapshot::default());

        let z = store.add_zone("main", true).unwrap();
        let g_in = store.add_gate(&gate("in", z, Direction::In)).unwrap().id;
        let g_out = store.add_gate(&gate("out", z, Direction::Out)).unwrap().id;
        let day = store.add_level("day", &schedule(480, 1080)).unwrap();
        let night = store.add_level("night", &schedule(0, 360)).unwrap();
        store.add_level_gate(day, g_in).unwrap();
        store.add_level_gate(day, g_out).unwrap();
        store.add_level_gate(night, g_in).unwrap();
        let validity = Validity {
            from: Some(datetime!(2025-01-01 0:00 UTC)),
            until: Some(datetime!(2026-01-01 0:00 UTC)),
        };
        let mut people = Vec::new();
        for i in 0..20 {
            let v = if i % 7 == 0 {
                validity
            } else {
                Validity::default()
            };
            let p = store.add_person(&format!("p{i}"), v).unwrap();
            if i % 2 == 0 {
                store.grant_level(p, day).unwrap();
            }
            if i % 3 == 0 {
                store.grant_level(p, night).unwrap();
            }
            if i == 5 {
                store.set_person_enabled(p, false).unwrap();
            }
            people.push(p);
        }
        for (i, p) in people.iter().enumerate() {
            for c in 0..(i % 3) {
                store
                    .add_card(
                        &key,
                        format!("card-{i}-{c}").as_bytes(),
                        &NewCard {
                            person: *p,
                            master: i == 4,
                            validity: if c == 1 {
                                Validity {
                                    from: None,
                                    until: Some(datetime!(2025-06-01 0:00 UTC)),
                                }
                            } else {
                                Validity::default()
                            },
                            label: Some("a label".into()),
                        },
                    )
                    .unwrap();
            }
        }
        store
            .add_holiday(date!(2025 - 12 - 25), "Christmas")
            .unwrap();

        let (rev, full) = store.revisioned_snapshot().unwrap();
        let (rev2, compact) = store.revisioned_decision_snapshot().unwrap();
        assert_eq!(rev, rev2);
        assert_eq!(compact.cards().len(), full.cards.len());
        assert_eq!(compact.person_count(), 20);
        assert_eq!(compact, DecisionSnapshot::from(&full));
    }
}
