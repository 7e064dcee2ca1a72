//! Building the access engine's in-memory [`Snapshot`] from the tables.
//!
//! Promises: a snapshot is read inside one read transaction, so it is consistent with
//! itself and with the revision returned beside it by [`Store::revisioned_snapshot`].

use crate::error::StoreError;
use crate::store::{
    card_hash_from_blob, parse_date, parse_direction, parse_schedule, relay_ms_from_col,
    validity_from_cols, Result, Store,
};
use gatehouse_access::model::{
    Card, Gate, GateId, Level, LevelId, Person, PersonId, Snapshot, Zone,
};
use rusqlite::Connection;
use std::collections::HashMap;

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

fn load(conn: &Connection) -> Result<Snapshot> {
    let people = load_people(conn)?;
    let levels = load_levels(conn)?;

    let mut zones = HashMap::new();
    {
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
    }

    let mut gates = HashMap::new();
    {
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
    }

    let mut cards = HashMap::new();
    {
        let mut st = conn.prepare(
            "SELECT id, hash, person_id, enabled, master, valid_from, valid_until FROM cards",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let hash: Vec<u8> = r.get(1)?;
            let c = Card {
                id: r.get(0)?,
                hash: card_hash_from_blob(&hash)?,
                person: r.get(2)?,
                enabled: r.get(3)?,
                master: r.get(4)?,
                validity: validity_from_cols(r.get(5)?, r.get(6)?)?,
            };
            cards.insert(c.hash, c);
        }
    }

    let mut holidays = Vec::new();
    {
        let mut st = conn.prepare("SELECT date FROM holidays ORDER BY date")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let d: String = r.get(0)?;
            holidays.push(parse_date(&d)?);
        }
    }

    Ok(Snapshot {
        people,
        cards,
        gates,
        zones,
        levels,
        holidays,
    })
}

impl Store {
    /// The access model as the engine needs it.
    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(self.revisioned_snapshot()?.1)
    }

    /// The access model and the revision it corresponds to, read in one transaction.
    pub fn revisioned_snapshot(&self) -> Result<(u64, Snapshot)> {
        let tx = self.conn().unchecked_transaction()?;
        let rev: i64 = tx.query_row("SELECT value FROM revision WHERE id = 1", [], |r| r.get(0))?;
        let rev = u64::try_from(rev).map_err(|_| StoreError::Corrupt(format!("revision {rev}")))?;
        let snap = load(&tx)?;
        tx.finish()?;
        Ok((rev, snap))
    }
}
