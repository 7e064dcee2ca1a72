//! Remote door opens (table `remote_opens`, migration 5): who asked to open which gate's
//! door from the console, API or CLI, why, and whether the command reached the gate.
//!
//! Promises:
//! - A request is stored before anything is sent to the gate ([`Store::insert_remote_open`]),
//!   and its id is the command number the gate link carries: AUTOINCREMENT, so strictly
//!   increasing and never reused, even after rows are removed; ids stay below 2^32
//!   ([`StoreError::Invalid`] past that, as a gate could not tell them apart).
//! - The state only moves forward, once: `requested` -> `delivered` (with the time it was
//!   handed to the gate's link) or `requested` -> `expired`. Each `mark_*` says whether it
//!   made the move, so two racing outcomes cannot both be recorded.
//! - The reason is what the admin typed, 1 to [`MAX_REASON_CHARS`] characters without
//!   control characters; the admin is kept by name.
//! - Times are unix milliseconds (UTC).

use crate::error::StoreError;
use crate::store::{from_unix_ms, to_unix_ms, write_tx, Result, Store};
use gatehouse_access::model::GateId;
use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;
/// Largest page [`Store::remote_opens`] returns.
pub const MAX_OPENS_LIMIT: u32 = 1_000;

/// Where a remote open stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteOpenState {
    /// Stored, not yet handed to the gate.
    Requested,
    /// Handed to the gate's link (written to its TCP connection, published on its MQTT
    /// response topic, or put in the reply to its HTTP request).
    Delivered,
    /// Not delivered in time; the gate will not get it.
    Expired,
}

impl RemoteOpenState {
    /// The stored name: `requested`, `delivered` or `expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteOpenState::Requested => "requested",
            RemoteOpenState::Delivered => "delivered",
            RemoteOpenState::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Result<RemoteOpenState> {
        match s {
            "requested" => Ok(RemoteOpenState::Requested),
            "delivered" => Ok(RemoteOpenState::Delivered),
            "expired" => Ok(RemoteOpenState::Expired),
            other => Err(StoreError::Corrupt(format!("remote open state {other:?}"))),
        }
    }
}

/// A request to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRemoteOpen {
    pub at: OffsetDateTime,
    pub gate: GateId,
    /// The name of the admin who asked.
    pub admin: String,
    pub reason: String,
    /// How long the gate pulses its relay.
    pub relay_ms: u16,
}

/// A stored request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOpenRow {
    /// Also the command number sent to the gate.
    pub id: u32,
    pub at: OffsetDateTime,
    pub gate: GateId,
    pub admin: String,
    pub reason: String,
    pub relay_ms: u16,
    pub state: RemoteOpenState,
    pub delivered_at: Option<OffsetDateTime>,
}

/// Which requests [`Store::remote_opens`] returns: the newest `limit` (capped at
/// [`MAX_OPENS_LIMIT`]) with an id below `before_id` (paging back), optionally of one gate
/// and of one state, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteOpenFilter {
    pub gate: Option<GateId>,
    pub state: Option<RemoteOpenState>,
    pub before_id: Option<u32>,
    pub limit: u32,
}

/// Checks a reason typed by an admin.
pub fn check_reason(reason: &str) -> Result<()> {
    let n = reason.chars().count();
    if reason.trim().is_empty() {
        return Err(StoreError::invalid(
            "reason",
            "is required: say why the door is opened (it is logged)",
        ));
    }
    if n > MAX_REASON_CHARS {
        return Err(StoreError::invalid(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters (got {n})"),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "reason",
            "must be one line without control characters",
        ));
    }
    Ok(())
}

type RawOpen = (i64, i64, i64, String, String, i64, String, Option<i64>);

fn open_row(raw: RawOpen) -> Result<RemoteOpenRow> {
    let (id, at_ms, gate, admin, reason, relay_ms, state, delivered_ms) = raw;
    let corrupt = |what: &str| StoreError::Corrupt(format!("remote open {id}: {what}"));
    Ok(RemoteOpenRow {
        id: u32::try_from(id).map_err(|_| corrupt("id"))?,
        at: from_unix_ms(at_ms)?,
        gate,
        admin,
        reason,
        relay_ms: u16::try_from(relay_ms).map_err(|_| corrupt("relay_ms"))?,
        state: RemoteOpenState::parse(&state)?,
        delivered_at: delivered_ms.map(from_unix_ms).transpose()?,
    })
}

const COLUMNS: &str =
    "id, at_ms, gate_id, admin, reason, relay_ms, state, delivered_at_ms FROM remote_opens";

impl Store {
    /// Stores a new request in state `requested`; returns its id (the command number).
    pub fn insert_remote_open(&self, open: &NewRemoteOpen) -> Result<u32> {
        check_reason(&open.reason)?;
        let tx = write_tx(self.conn())?;
        tx.execute(
            "INSERT INTO remote_opens (at_ms, gate_id, admin, reason, relay_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                to_unix_ms(open.at)?,
                open.gate,
                open.admin,
                open.reason,
                open.relay_ms
            ],
        )?;
        let id = u32::try_from(tx.last_insert_rowid()).map_err(|_| {
            StoreError::invalid(
                "remote open",
                "the command numbers are used up (2^32); the gates need new keys",
            )
        })?;
        tx.commit()?;
        Ok(id)
    }

    /// Moves request `id` from `requested` to `delivered` at `at`; `false` if it was not
    /// `requested` (already delivered or expired, or unknown).
    pub fn mark_remote_open_delivered(&self, id: u32, at: OffsetDateTime) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE remote_opens SET state = 'delivered', delivered_at_ms = ?2
             WHERE id = ?1 AND state = 'requested'",
            params![id, to_unix_ms(at)?],
        )?;
        Ok(n == 1)
    }

    /// Moves request `id` from `requested` to `expired`; `false` if it was not
    /// `requested`.
    pub fn mark_remote_open_expired(&self, id: u32) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE remote_opens SET state = 'expired' WHERE id = ?1 AND state = 'requested'",
            params![id],
        )?;
        Ok(n == 1)
    }

    /// One request.
    pub fn remote_open(&self, id: u32) -> Result<Option<RemoteOpenRow>> {
        let raw = self
            .conn()
            .prepare_cached(&format!("SELECT {COLUMNS} WHERE id = ?1"))?
            .query_row(params![id], |r| RawOpen::try_from(r))
            .optional()?;
        raw.map(open_row).transpose()
    }

    /// The requests matching `filter`, newest first.
    pub fn remote_opens(&self, filter: &RemoteOpenFilter) -> Result<Vec<RemoteOpenRow>> {
        let mut st = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS}
             WHERE (?1 IS NULL OR gate_id = ?1) AND (?2 IS NULL OR state = ?2)
               AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4"
        ))?;
        let raw = st
            .query_map(
                params![
                    filter.gate,
                    filter.state.map(RemoteOpenState::as_str),
                    filter.before_id,
                    filter.limit.min(MAX_OPENS_LIMIT)
                ],
                |r| RawOpen::try_from(r),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raw.into_iter().map(open_row).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn at(ms: i64) -> OffsetDateTime {
        from_unix_ms(1_800_000_000_000 + ms).unwrap()
    }

    fn open(gate: GateId, reason: &str) -> NewRemoteOpen {
        NewRemoteOpen {
            at: at(0),
            gate,
            admin: "alice".into(),
            reason: reason.into(),
            relay_ms: 3000,
        }
    }

    #[test]
    fn requests_move_forward_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s
            .insert_remote_open(&open(3, "courier at the gate"))
            .unwrap();
        let b = s.insert_remote_open(&open(4, "fire drill")).unwrap();
        assert!(b > a, "ids increase");
        let row = s.remote_open(a).unwrap().unwrap();
        assert_eq!(
            (row.gate, row.admin.as_str(), row.reason.as_str(), row.state),
            (
                3,
                "alice",
                "courier at the gate",
                RemoteOpenState::Requested
            )
        );
        assert_eq!(
            (row.relay_ms, row.at, row.delivered_at),
            (3000, at(0), None)
        );

        assert!(s.mark_remote_open_delivered(a, at(150)).unwrap());
        assert!(!s.mark_remote_open_expired(a).unwrap(), "delivered stays");
        assert!(!s.mark_remote_open_delivered(a, at(900)).unwrap());
        let row = s.remote_open(a).unwrap().unwrap();
        assert_eq!(
            (row.state, row.delivered_at),
            (RemoteOpenState::Delivered, Some(at(150)))
        );
        assert!(s.mark_remote_open_expired(b).unwrap());
        assert!(
            !s.mark_remote_open_delivered(b, at(1)).unwrap(),
            "expired stays"
        );
        assert!(!s.mark_remote_open_expired(999).unwrap());
        assert_eq!(s.remote_open(999).unwrap(), None);

        let all = s
            .remote_opens(&RemoteOpenFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), [b, a]);
        let gate3 = s
            .remote_opens(&RemoteOpenFilter {
                gate: Some(3),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(gate3.len(), 1);
        let expired = s
            .remote_opens(&RemoteOpenFilter {
                state: Some(RemoteOpenState::Expired),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(expired.iter().map(|r| r.id).collect::<Vec<_>>(), [b]);
        let older = s
            .remote_opens(&RemoteOpenFilter {
                before_id: Some(b),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(older.iter().map(|r| r.id).collect::<Vec<_>>(), [a]);
    }

    #[test]
    fn ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.insert_remote_open(&open(3, "x")).unwrap();
        s.conn()
            .execute("DELETE FROM remote_opens WHERE id = ?1", params![a])
            .unwrap();
        assert!(s.insert_remote_open(&open(3, "y")).unwrap() > a);
    }

    #[test]
    fn reasons_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for bad in ["", "   ", "two\nlines", &"x".repeat(MAX_REASON_CHARS + 1)] {
            let e = s.insert_remote_open(&open(3, bad)).unwrap_err();
            assert!(
                matches!(
                    e,
                    StoreError::Invalid {
                        field: "reason",
                        ..
                    }
                ),
                "{bad:?}: {e}"
            );
        }
        assert!(s
            .insert_remote_open(&open(3, &"é".repeat(MAX_REASON_CHARS)))
            .is_ok());
        assert!(
            s.remote_opens(&RemoteOpenFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .len()
                == 1
        );
    }
}
