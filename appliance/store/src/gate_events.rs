//! Door and tamper events reported by gates (table `gate_events`, migration 3), kept until
//! the events pipeline takes them over.
//!
//! Promises:
//! - An event is stored once per `(gate, gate_seq)`: the gate's sequence number is the
//!   idempotency key, so a frame sent again (or replayed past a replay window) adds nothing
//!   ([`Store::insert_gate_events`] reports how many rows were new).
//! - Kinds are stored as stable snake_case names ([`GateEventKind::name`]): the door
//!   events of `gatehouse_gate_proto::DoorEventKind` (`opened`, `closed`, `held_open`,
//!   `forced_open`, `exit_button`, and `unknown_<code>` for codes this build does not
//!   know) and `tamper_on` / `tamper_off`. Rows keep whatever name was written, so a row
//!   from a newer release reads back as its string.
//! - Times are unix milliseconds: `at` by the gate's clock, `received` by the hub's.

use crate::error::StoreError;
use crate::store::{from_unix_ms, to_unix_ms, write_tx, Result, Store};
use gatehouse_access::model::GateId;
use gatehouse_gate_proto::DoorEventKind;
use rusqlite::params;
use std::borrow::Cow;
use time::OffsetDateTime;

/// Largest page [`Store::gate_events`] returns.
pub const MAX_EVENTS_LIMIT: u32 = 10_000;

/// What a gate reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GateEventKind {
    Door(DoorEventKind),
    /// The tamper switch: `true` while the enclosure is open.
    Tamper(bool),
}

impl GateEventKind {
    /// The stored name (see the module docs).
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            GateEventKind::Door(DoorEventKind::Opened) => "opened",
            GateEventKind::Door(DoorEventKind::Closed) => "closed",
            GateEventKind::Door(DoorEventKind::HeldOpen) => "held_open",
            GateEventKind::Door(DoorEventKind::Forced) => "forced_open",
            GateEventKind::Door(DoorEventKind::ExitButton) => "exit_button",
            GateEventKind::Door(DoorEventKind::Unknown(n)) => {
                return Cow::Owned(format!("unknown_{n}"))
            }
            GateEventKind::Tamper(true) => "tamper_on",
            GateEventKind::Tamper(false) => "tamper_off",
        })
    }

    /// A door forced open or an enclosure opened: worth a warning at once.
    pub fn is_alarm(self) -> bool {
        matches!(
            self,
            GateEventKind::Door(DoorEventKind::Forced) | GateEventKind::Tamper(true)
        )
    }
}

/// One event to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGateEvent {
    /// When it happened, by the gate's clock (stored to the millisecond).
    pub at: OffsetDateTime,
    /// When the hub received it.
    pub received: OffsetDateTime,
    pub gate: GateId,
    pub kind: GateEventKind,
    /// The gate's sequence number of the message: the idempotency key.
    pub gate_seq: u32,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateEventRow {
    pub id: i64,
    pub at: OffsetDateTime,
    pub received: OffsetDateTime,
    pub gate: GateId,
    /// The stored name, e.g. `forced_open`.
    pub kind: String,
    pub gate_seq: u64,
}

/// Which events [`Store::gate_events`] returns: the newest `limit` (capped at
/// [`MAX_EVENTS_LIMIT`]), optionally of one gate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateEventFilter {
    pub gate: Option<GateId>,
    pub limit: u32,
}

type RawEvent = (i64, i64, i64, i64, String, i64);

fn event_row(raw: RawEvent) -> Result<GateEventRow> {
    let (id, at_ms, received_ms, gate, kind, seq) = raw;
    Ok(GateEventRow {
        id,
        at: from_unix_ms(at_ms)?,
        received: from_unix_ms(received_ms)?,
        gate,
        kind,
        gate_seq: u64::try_from(seq)
            .map_err(|_| StoreError::Corrupt(format!("gate event {id}: gate_seq {seq}")))?,
    })
}

impl Store {
    /// Stores `events` in one transaction, skipping any whose `(gate, gate_seq)` is already
    /// stored; returns how many were new.
    pub fn insert_gate_events(&self, events: &[NewGateEvent]) -> Result<usize> {
        let tx = write_tx(self.conn())?;
        let mut inserted = 0;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO gate_events (at_ms, received_ms, gate_id, kind, gate_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (gate_id, gate_seq) DO NOTHING",
            )?;
            for e in events {
                inserted += st.execute(params![
                    to_unix_ms(e.at)?,
                    to_unix_ms(e.received)?,
                    e.gate,
                    e.kind.name(),
                    e.gate_seq,
                ])?;
            }
        }
        tx.commit()?;
        Ok(inserted)
    }

    /// Stores one event; `false` if it was already stored.
    pub fn insert_gate_event(&self, event: &NewGateEvent) -> Result<bool> {
        Ok(self.insert_gate_events(std::slice::from_ref(event))? == 1)
    }

    /// The newest events matching `filter`, oldest first (for `gatehouse gate events`).
    pub fn gate_events(&self, filter: &GateEventFilter) -> Result<Vec<GateEventRow>> {
        let mut st = self.conn().prepare_cached(
            "SELECT id, at_ms, received_ms, gate_id, kind, gate_seq FROM gate_events
             WHERE (?1 IS NULL OR gate_id = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let raw = st
            .query_map(
                params![filter.gate, filter.limit.min(MAX_EVENTS_LIMIT)],
                |r| RawEvent::try_from(r),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut rows = raw.into_iter().map(event_row).collect::<Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The highest `gate_seq` stored per gate, for resuming replay windows (answered from
    /// the `(gate_id, gate_seq)` unique index).
    pub fn highest_event_seqs(&self) -> Result<Vec<(GateId, u64)>> {
        let mut st = self
            .conn()
            .prepare("SELECT gate_id, max(gate_seq) FROM gate_events GROUP BY gate_id")?;
        let rows = st
            .query_map([], |r| <(i64, i64)>::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(gate, seq)| {
                u64::try_from(seq)
                    .map(|s| (gate, s))
                    .map_err(|_| StoreError::Corrupt(format!("gate event gate_seq {seq}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(s).unwrap()
    }

    fn event(gate: GateId, seq: u32, kind: GateEventKind) -> NewGateEvent {
        NewGateEvent {
            at: at(1_800_000_000 + i64::from(seq)),
            received: at(1_800_000_100),
            gate,
            kind,
            gate_seq: seq,
        }
    }

    #[test]
    fn kind_names_are_stable() {
        let cases = [
            (GateEventKind::Door(DoorEventKind::Opened), "opened", false),
            (GateEventKind::Door(DoorEventKind::Closed), "closed", false),
            (
                GateEventKind::Door(DoorEventKind::HeldOpen),
                "held_open",
                false,
            ),
            (
                GateEventKind::Door(DoorEventKind::Forced),
                "forced_open",
                true,
            ),
            (
                GateEventKind::Door(DoorEventKind::ExitButton),
                "exit_button",
                false,
            ),
            (
                GateEventKind::Door(DoorEventKind::Unknown(9)),
                "unknown_9",
                false,
            ),
            (GateEventKind::Tamper(true), "tamper_on", true),
            (GateEventKind::Tamper(false), "tamper_off", false),
        ];
        for (kind, name, alarm) in cases {
            assert_eq!(kind.name(), name);
            assert_eq!(kind.is_alarm(), alarm, "{name}");
        }
    }

    #[test]
    fn stored_once_listed_newest_and_filtered_by_gate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let forced = GateEventKind::Door(DoorEventKind::Forced);
        let batch = [
            event(1, 10, forced),
            event(1, 11, GateEventKind::Tamper(true)),
            event(2, 10, GateEventKind::Door(DoorEventKind::Unknown(77))),
        ];
        assert_eq!(store.insert_gate_events(&batch).unwrap(), 3);
        // The same gate_seq again (a resent frame) is not stored twice, even as another kind.
        assert!(!store
            .insert_gate_event(&event(1, 10, GateEventKind::Tamper(false)))
            .unwrap());
        assert_eq!(store.insert_gate_events(&batch).unwrap(), 0);
        assert!(store
            .insert_gate_event(&event(1, 12, GateEventKind::Tamper(false)))
            .unwrap());

        let all = store
            .gate_events(&GateEventFilter {
                gate: None,
                limit: 100,
            })
            .unwrap();
        let seen: Vec<(GateId, u64, &str)> = all
            .iter()
            .map(|r| (r.gate, r.gate_seq, r.kind.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (1, 10, "forced_open"),
                (1, 11, "tamper_on"),
                (2, 10, "unknown_77"),
                (1, 12, "tamper_off"),
            ]
        );
        assert_eq!(all[0].at, at(1_800_000_010));
        assert_eq!(all[0].received, at(1_800_000_100));

        let newest_of_1 = store
            .gate_events(&GateEventFilter {
                gate: Some(1),
                limit: 2,
            })
            .unwrap();
        let seqs: Vec<u64> = newest_of_1.iter().map(|r| r.gate_seq).collect();
        assert_eq!(seqs, [11, 12], "the newest two, oldest first");

        let mut highest = store.highest_event_seqs().unwrap();
        highest.sort_unstable();
        assert_eq!(highest, [(1, 12), (2, 10)]);
    }
}
