//! [`Store::ingest_events`]: a batch of events and every notification they call for,
//! written in one transaction (the transactional outbox). The hub's writer thread calls it
//! with everything that arrived since its last commit (group commit) and answers each
//! sender only after it returns.
//!
//! The hub decides *what* is called for (its planner: rules, schedules, silences); this
//! module applies that plan against what is stored:
//! - Dedup and folding: an event whose `(source, external_id)` is stored folds into the
//!   stored event (also when the first one is earlier in the same batch). Severity only
//!   rises; missing camera, zone, device, message and URLs are filled, never overwritten;
//!   an `ended` message sets `lifecycle = ended` and `ended_at` (the message's time, by the
//!   source's clock), enqueues a `resolved` notification for every receiver that has a
//!   `firing` one of the event, and stops its repeats. A fold of an event that is not
//!   ended, grouped, silenced or acknowledged also enqueues planned `firing`
//!   notifications it lacks (an update that raised the severity into a rule).
//! - Grouping: for a planned delivery whose rule has a group window, an earlier event
//!   with the same source, kind and zone, not itself grouped, with a `firing` delivery
//!   from the same rule and received within the window before this one, is the group's
//!   head: this event gets `grouped_into = head` and no delivery from that rule. (An event
//!   grouped by one rule is not a head for any rule; at worst that notifies once more.)
//! - Silences: an item with `silenced_by` is stored with it and gets no deliveries.
//! - Deliveries go only to receivers that are live and enabled, for rules that exist and
//!   are enabled at commit time (the plan may be a moment older than the configuration).
//!   Console deliveries are committed as delivered, with their one log row; others are
//!   pending, due at once.
//! - An event whose first message is already its end gets its `firing` and, at once, its
//!   `resolved` notifications (so every ended event that fired has been resolved).
//! - A planned `repeat_every` adds a repeat schedule row: first reminder one interval
//!   after receipt.

use super::outbox::insert_delivery;
use super::{duration_ms, severity_code, write_tx};
use crate::error::{is_unique_violation, StoreError};
use crate::store::{to_unix_ms, Result, Store};
use gatehouse_alerts::model::{
    limits, EventId, Lifecycle, NewEvent, NotificationKind, ReceiverId, RuleId, SilenceId,
};
use rusqlite::{params, Transaction};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use time::OffsetDateTime;

/// One notification the hub's planner calls for: `rule` matched the event and sends to
/// `receiver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedDelivery {
    pub receiver: ReceiverId,
    pub rule: RuleId,
    /// The rule's group window (zero: no grouping).
    pub group_window: Duration,
    /// The rule's repeat interval, if this event is to be repeated until acknowledged.
    pub repeat_every: Option<Duration>,
}

/// One event to ingest, with its id and its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestItem {
    /// Made by the hub at receipt (a new ULID); kept only if the event is new.
    pub id: EventId,
    pub event: NewEvent,
    /// Empty when no rule applies or a silence holds the event.
    pub deliveries: Vec<PlannedDelivery>,
    /// The silence in force at receipt that holds this event, if any.
    pub silenced_by: Option<SilenceId>,
}

/// What happened to one [`IngestItem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored as a new event.
    New {
        id: EventId,
        seq: i64,
        /// Notifications enqueued (console ones included).
        deliveries: usize,
        /// Set when it joined an earlier event's group.
        grouped_into: Option<EventId>,
    },
    /// Folded into a stored event with the same source and external id: a retransmission
    /// (`changed == false`) or a lifecycle update.
    Existing {
        /// The stored event's id (not the item's).
        id: EventId,
        seq: i64,
        /// Whether the stored event changed.
        changed: bool,
        /// `firing` notifications enqueued by this update.
        deliveries: usize,
        /// `resolved` notifications enqueued because it ended.
        resolved_deliveries: usize,
    },
    /// Not stored: the event breaks a limit (the hub's parsers check these first; this is
    /// the backstop). Nothing of it was written; the rest of the batch was.
    Refused { field: &'static str, reason: String },
}

/// Longest text a source may send per field, by [`gatehouse_alerts::model::limits`].
fn check_new_event(e: &NewEvent) -> Result<()> {
    let max = |field: &'static str, v: &Option<String>, limit: usize| match v {
        Some(s) if s.len() > limit => Err(StoreError::invalid(
            field,
            format!("longer than {limit} bytes"),
        )),
        _ => Ok(()),
    };
    if e.source.is_empty() || e.source.len() > limits::NAME || e.source.contains(char::is_control) {
        return Err(StoreError::invalid(
            "source",
            format!("must be 1 to {} printable bytes", limits::NAME),
        ));
    }
    if e.kind.is_empty()
        || e.kind.len() > limits::NAME
        || !e.kind.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
    {
        return Err(StoreError::invalid(
            "kind",
            format!("{:?} is not [a-z0-9_.-]{{1,{}}}", e.kind, limits::NAME),
        ));
    }
    max("camera", &e.camera, limits::NAME)?;
    max("zone", &e.zone, limits::NAME)?;
    max("device", &e.device, limits::NAME)?;
    max("message", &e.message, limits::MESSAGE)?;
    max("snapshot URL", &e.snapshot_url, limits::URL)?;
    max("clip URL", &e.clip_url, limits::URL)?;
    max("external id", &e.external_id, limits::EXTERNAL_ID)?;
    if e.external_id.as_deref() == Some("") {
        return Err(StoreError::invalid("external id", "must not be empty"));
    }
    Ok(())
}

/// Who may receive and which rules may send, as of this transaction.
struct Targets {
    /// Live, enabled receivers: id -> is the console.
    receivers: HashMap<ReceiverId, bool>,
    /// Enabled rules.
    rules: HashSet<RuleId>,
}

impl Targets {
    fn load(tx: &Transaction<'_>) -> Result<Targets> {
        let mut st = tx.prepare_cached(
            "SELECT id, kind = 'console' FROM receivers WHERE removed_at IS NULL AND enabled = 1",
        )?;
        let receivers = st
            .query_map([], |r| <(i64, bool)>::try_from(r))?
            .collect::<rusqlite::Result<HashMap<_, _>>>()?;
        let mut st = tx.prepare_cached("SELECT id FROM rules WHERE enabled = 1")?;
        let rules = st
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<HashSet<_>>>()?;
        Ok(Targets { receivers, rules })
    }
}

/// What grouping needs to know of the event a plan is applied to.
struct PlanSubject<'a> {
    seq: i64,
    source: &'a str,
    kind: &'a str,
    zone: Option<&'a str>,
    received_at: i64,
}

/// The stored event an item folds into.
struct Stored {
    seq: i64,
    id: String,
    severity: i64,
    lifecycle: String,
    camera: Option<String>,
    zone: Option<String>,
    device: Option<String>,
    message: Option<String>,
    snapshot_url: Option<String>,
    clip_url: Option<String>,
    ended_at: Option<i64>,
    grouped_into: Option<String>,
    silenced: bool,
    acked: bool,
    received_at: i64,
}

impl Store {
    /// Ingests `items` in one transaction at `now` (the hub's receipt time) and says what
    /// happened to each, in order. See the module docs for the rules. An error means
    /// nothing was written.
    pub fn ingest_events(
        &self,
        items: &[IngestItem],
        now: OffsetDateTime,
    ) -> Result<Vec<IngestOutcome>> {
        let now_ms = to_unix_ms(now)?;
        let tx = write_tx(self.conn())?;
        let targets = Targets::load(&tx)?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match check_new_event(&item.event) {
                Ok(()) => {}
                Err(StoreError::Invalid { field, reason }) => {
                    out.push(IngestOutcome::Refused { field, reason });
                    continue;
                }
                Err(e) => return Err(e),
            }
            let stored = match &item.event.external_id {
                Some(x) => find_external(&tx, &item.event.source, x)?,
                None => None,
            };
            out.push(match stored {
                Some(stored) => fold(&tx, &targets, stored, item, now_ms)?,
                None => insert_new(&tx, &targets, item, now_ms)?,
            });
        }
        tx.commit()?;
        Ok(out)
    }
}

fn find_external(tx: &Transaction<'_>, source: &str, external_id: &str) -> Result<Option<Stored>> {
    let mut st = tx.prepare_cached(
        "SELECT seq, id, severity, lifecycle, camera, zone, device, message, snapshot_url,
                clip_url, ended_at, grouped_into, silenced_by IS NOT NULL, acked_at IS NOT NULL,
                received_at
         FROM events WHERE source = ?1 AND external_id = ?2",
    )?;
    let mut rows = st.query(params![source, external_id])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    Ok(Some(Stored {
        seq: r.get(0)?,
        id: r.get(1)?,
        severity: r.get(2)?,
        lifecycle: r.get(3)?,
        camera: r.get(4)?,
        zone: r.get(5)?,
        device: r.get(6)?,
        message: r.get(7)?,
        snapshot_url: r.get(8)?,
        clip_url: r.get(9)?,
        ended_at: r.get(10)?,
        grouped_into: r.get(11)?,
        silenced: r.get(12)?,
        acked: r.get(13)?,
        received_at: r.get(14)?,
    }))
}

fn insert_new(
    tx: &Transaction<'_>,
    targets: &Targets,
    item: &IngestItem,
    now_ms: i64,
) -> Result<IngestOutcome> {
    let e = &item.event;
    let id = item.id.to_string();
    let occurred = to_unix_ms(e.time)?;
    let ended_at = (e.lifecycle == Lifecycle::Ended).then_some(occurred);
    // A silence that does not exist (never: silences are not deleted) is not referenced,
    // but still holds the event.
    let silenced_by = match item.silenced_by {
        Some(s) => {
            let mut st = tx.prepare_cached("SELECT id FROM silences WHERE id = ?1")?;
            st.exists([s])?.then_some(s)
        }
        None => None,
    };
    let inserted = {
        let mut st = tx.prepare_cached(
            "INSERT INTO events (id, source, source_kind, kind, severity, occurred_at,
                                 received_at, camera, zone, device, message, snapshot_url,
                                 clip_url, external_id, lifecycle, ended_at, silenced_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        st.execute(params![
            id,
            e.source,
            e.source_kind.as_str(),
            e.kind,
            severity_code(e.severity),
            occurred,
            now_ms,
            e.camera,
            e.zone,
            e.device,
            e.message,
            e.snapshot_url,
            e.clip_url,
            e.external_id,
            e.lifecycle.as_str(),
            ended_at,
            silenced_by,
        ])
    };
    match inserted {
        Ok(_) => {}
        // Only the statement is rolled back; the batch goes on.
        Err(err) if is_unique_violation(&err) => {
            return Ok(IngestOutcome::Refused {
                field: "event id",
                reason: format!("an event with id {id} is already stored"),
            })
        }
        Err(err) => return Err(err.into()),
    }
    let seq = tx.last_insert_rowid();
    let (deliveries, grouped_into) = if item.silenced_by.is_some() {
        (0, None)
    } else {
        let subject = PlanSubject {
            seq,
            source: &e.source,
            kind: &e.kind,
            zone: e.zone.as_deref(),
            received_at: now_ms,
        };
        apply_plan(tx, targets, &subject, &item.deliveries, false, now_ms)?
    };
    if let Some(head) = &grouped_into {
        tx.execute(
            "UPDATE events SET grouped_into = ?2 WHERE seq = ?1",
            params![seq, head],
        )?;
    }
    // Its first message was its end (the earlier ones were lost): it is over already.
    let resolved = if e.lifecycle == Lifecycle::Ended {
        resolve(tx, seq, now_ms)?
    } else {
        0
    };
    Ok(IngestOutcome::New {
        id: item.id,
        seq,
        deliveries: deliveries + resolved,
        grouped_into: grouped_into
            .as_deref()
            .map(super::parse_event_id)
            .transpose()?,
    })
}

/// Enqueues the planned `firing` deliveries of one event, grouping where the rule says
/// so. Returns how many were enqueued and the group head it joined, if any. When
/// `folding`, receivers that already have a `firing` notification of it are left alone.
fn apply_plan(
    tx: &Transaction<'_>,
    targets: &Targets,
    ev: &PlanSubject<'_>,
    planned: &[PlannedDelivery],
    folding: bool,
    now_ms: i64,
) -> Result<(usize, Option<String>)> {
    let mut enqueued = 0;
    let mut grouped_into: Option<String> = None;
    // Per rule: the group head found for it (None: this event notifies for the rule).
    let mut heads: HashMap<RuleId, Option<String>> = HashMap::new();
    for p in planned {
        let Some(&console) = targets.receivers.get(&p.receiver) else {
            continue;
        };
        if !targets.rules.contains(&p.rule) {
            continue;
        }
        if folding {
            let mut st = tx.prepare_cached(
                "SELECT 1 FROM deliveries
                 WHERE event_seq = ?1 AND receiver_id = ?2 AND kind = 'firing'",
            )?;
            if st.exists(params![ev.seq, p.receiver])? {
                continue;
            }
        }
        if !p.group_window.is_zero() {
            let head = match heads.get(&p.rule) {
                Some(h) => h.clone(),
                None => {
                    let h = group_head(tx, ev, p.rule, p.group_window)?;
                    heads.insert(p.rule, h.clone());
                    h
                }
            };
            if let Some(h) = head {
                grouped_into.get_or_insert(h);
                continue;
            }
        }
        let inserted = insert_delivery(
            tx,
            ev.seq,
            p.receiver,
            console,
            Some(p.rule),
            NotificationKind::Firing,
            now_ms,
        )?;
        if inserted.is_some() {
            enqueued += 1;
        }
        if let Some(every) = p.repeat_every {
            let mut st = tx.prepare_cached(
                "INSERT INTO repeats (event_seq, rule_id, next_at, count) VALUES (?1, ?2, ?3, 0)
                 ON CONFLICT (event_seq, rule_id) DO NOTHING",
            )?;
            st.execute(params![
                ev.seq,
                p.rule,
                ev.received_at.saturating_add(duration_ms(every))
            ])?;
        }
    }
    Ok((enqueued, grouped_into))
}

/// The head of the group `ev` joins for `rule`, if any (see the module docs): the most
/// recent such event.
fn group_head(
    tx: &Transaction<'_>,
    ev: &PlanSubject<'_>,
    rule: RuleId,
    window: Duration,
) -> Result<Option<String>> {
    let mut st = tx.prepare_cached(
        "SELECT e.id FROM events e
         WHERE e.source = ?1 AND e.kind = ?2 AND e.zone IS ?3
           AND e.received_at >= ?4 AND e.seq < ?5 AND e.grouped_into IS NULL
           AND EXISTS (SELECT 1 FROM deliveries d
                       WHERE d.event_seq = e.seq AND d.rule_id = ?6 AND d.kind = 'firing')
         ORDER BY e.received_at DESC, e.seq DESC LIMIT 1",
    )?;
    let mut rows = st.query(params![
        ev.source,
        ev.kind,
        ev.zone,
        ev.received_at.saturating_sub(duration_ms(window)),
        ev.seq,
        rule
    ])?;
    Ok(match rows.next()? {
        Some(r) => Some(r.get(0)?),
        None => None,
    })
}

fn fold(
    tx: &Transaction<'_>,
    targets: &Targets,
    stored: Stored,
    item: &IngestItem,
    now_ms: i64,
) -> Result<IngestOutcome> {
    let e = &item.event;
    let severity = stored.severity.max(severity_code(e.severity));
    let fill = |old: &Option<String>, new: &Option<String>| old.clone().or_else(|| new.clone());
    let camera = fill(&stored.camera, &e.camera);
    let zone = fill(&stored.zone, &e.zone);
    let device = fill(&stored.device, &e.device);
    let message = fill(&stored.message, &e.message);
    let snapshot_url = fill(&stored.snapshot_url, &e.snapshot_url);
    let clip_url = fill(&stored.clip_url, &e.clip_url);
    let was_ended = stored.lifecycle == Lifecycle::Ended.as_str();
    let ends_now = !was_ended && e.lifecycle == Lifecycle::Ended;
    let (lifecycle, ended_at) = if ends_now {
        (
            Lifecycle::Ended.as_str().to_string(),
            Some(to_unix_ms(e.time)?),
        )
    } else {
        (stored.lifecycle.clone(), stored.ended_at)
    };
    let mut changed = severity != stored.severity
        || camera != stored.camera
        || zone != stored.zone
        || device != stored.device
        || message != stored.message
        || snapshot_url != stored.snapshot_url
        || clip_url != stored.clip_url
        || ends_now;
    if changed {
        let mut st = tx.prepare_cached(
            "UPDATE events SET severity = ?2, camera = ?3, zone = ?4, device = ?5, message = ?6,
                               snapshot_url = ?7, clip_url = ?8, lifecycle = ?9, ended_at = ?10
             WHERE seq = ?1",
        )?;
        st.execute(params![
            stored.seq,
            severity,
            camera,
            zone,
            device,
            message,
            snapshot_url,
            clip_url,
            lifecycle,
            ended_at
        ])?;
    }

    let mut deliveries = 0;
    let mut resolved_deliveries = 0;
    if ends_now {
        resolved_deliveries = resolve(tx, stored.seq, now_ms)?;
    } else if !was_ended
        && e.lifecycle != Lifecycle::Ended
        && stored.grouped_into.is_none()
        && !stored.silenced
        && !stored.acked
        && item.silenced_by.is_none()
    {
        let subject = PlanSubject {
            seq: stored.seq,
            source: &e.source,
            kind: &e.kind,
            zone: zone.as_deref(),
            received_at: stored.received_at,
        };
        let (n, head) = apply_plan(tx, targets, &subject, &item.deliveries, true, now_ms)?;
        deliveries = n;
        if let Some(head) = head {
            tx.execute(
                "UPDATE events SET grouped_into = ?2 WHERE seq = ?1",
                params![stored.seq, head],
            )?;
            changed = true;
        }
    }
    Ok(IngestOutcome::Existing {
        id: super::parse_event_id(&stored.id)?,
        seq: stored.seq,
        changed,
        deliveries,
        resolved_deliveries,
    })
}

/// The event ended: a `resolved` notification to every live, enabled receiver that has a
/// `firing` one of it; its repeats stop. Returns how many were enqueued.
pub(super) fn resolve(tx: &Transaction<'_>, seq: i64, now_ms: i64) -> Result<usize> {
    let firing: Vec<(ReceiverId, Option<RuleId>, bool)> = {
        let mut st = tx.prepare_cached(
            "SELECT d.receiver_id, d.rule_id, r.kind = 'console'
             FROM deliveries d JOIN receivers r ON r.id = d.receiver_id
             WHERE d.event_seq = ?1 AND d.kind = 'firing'
               AND r.enabled = 1 AND r.removed_at IS NULL
             ORDER BY d.id",
        )?;
        let rows = st
            .query_map([seq], |r| <(i64, Option<i64>, bool)>::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    let mut n = 0;
    for (receiver, rule, console) in firing {
        if insert_delivery(
            tx,
            seq,
            receiver,
            console,
            rule,
            NotificationKind::Resolved,
            now_ms,
        )?
        .is_some()
        {
            n += 1;
        }
    }
    tx.execute("DELETE FROM repeats WHERE event_seq = ?1", [seq])?;
    Ok(n)
}
