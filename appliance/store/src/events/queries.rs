//! Reading events and the delivery log, acknowledging events, the counts `/metrics`
//! exports, and [`Store::reconcile`], the check that the outbox and the delivery log agree.
//!
//! Pages are at most [`MAX_PAGE`] rows. Lists page by `seq` (events) or log id: with an
//! `after` bound they go forward (oldest first, for tailing and catching up), otherwise
//! newest first (for a console's list), optionally `before` a bound.

use super::config::check_author;
use super::{
    kind_cols, notification_kind, parse_event_id, parse_source_kind, severity_code, write_tx,
    RawEvent, EVENT_COLS,
};
use crate::error::{Entity, StoreError};
use crate::store::{from_unix_ms, to_unix_ms, Result, Store};
use gatehouse_alerts::model::{
    limits, Ack, DeliveryId, DeliveryStatus, Event, EventId, Lifecycle, NotificationKind,
    ReceiverId, RuleId, Severity, SilenceId, SourceKind,
};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension};
use std::fmt;
use std::time::Duration;
use time::OffsetDateTime;

/// Largest page [`Store::list_events`] and [`Store::delivery_log`] return.
pub const MAX_PAGE: usize = 1000;

/// The page size when a filter asks for 0.
pub const DEFAULT_PAGE: usize = 100;

fn page(limit: usize) -> i64 {
    let l = if limit == 0 { DEFAULT_PAGE } else { limit };
    i64::try_from(l.min(MAX_PAGE)).unwrap_or(100)
}

/// Which events [`Store::list_events`] returns. Every field narrows; the default is the
/// newest [`DEFAULT_PAGE`] events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events with a larger `seq`, oldest first (tailing). Without it: newest first.
    pub after_seq: Option<i64>,
    /// Only events with a smaller `seq` (paging back).
    pub before_seq: Option<i64>,
    /// Received at or after (the hub's clock).
    pub since: Option<OffsetDateTime>,
    /// Received before.
    pub until: Option<OffsetDateTime>,
    /// Exact kind, or a prefix ending in `*` (`review.*`).
    pub kind: Option<String>,
    /// Exact source name.
    pub source: Option<String>,
    pub severity_min: Option<Severity>,
    /// `Some(true)`: only acknowledged; `Some(false)`: only unacknowledged.
    pub acked: Option<bool>,
    /// A substring of the message, camera, zone or device (case-insensitive for ASCII).
    pub text: Option<String>,
    /// At most [`MAX_PAGE`]; 0 means [`DEFAULT_PAGE`].
    pub limit: usize,
}

/// What [`Store::ack_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Acknowledged now.
    Acked(Ack),
    /// It already was; the first acknowledgement stands.
    AlreadyAcked(Ack),
}

/// What [`Store::resolve_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOutcome {
    /// The event as it is now.
    pub event: Event,
    /// It ended now (else it had ended already, by its source or an earlier resolve).
    pub ended_now: bool,
    /// It was acknowledged now, by the resolving admin (else an earlier ack stands).
    pub acked_now: bool,
    /// `resolved` notifications enqueued.
    pub resolved_deliveries: usize,
}

/// One delivery of an event, as `gatehouse event show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub receiver: ReceiverId,
    pub receiver_name: String,
    /// `None` once the rule is removed.
    pub rule: Option<RuleId>,
    pub kind: NotificationKind,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

/// An event with what the store knows around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDetail {
    pub event: Event,
    /// The silence that held it at receipt.
    pub silenced_by: Option<SilenceId>,
    /// Its deliveries, in id order.
    pub deliveries: Vec<DeliveryRecord>,
}

/// The result of one attempt as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryLogOutcome {
    /// The receiver accepted it.
    Delivered,
    /// Failed; another attempt follows.
    Failed,
    /// Failed; the last attempt.
    Dead,
}

impl DeliveryLogOutcome {
    /// The stored name (`delivery_log.outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryLogOutcome::Delivered => "delivered",
            DeliveryLogOutcome::Failed => "failed",
            DeliveryLogOutcome::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Result<DeliveryLogOutcome> {
        match s {
            "delivered" => Ok(DeliveryLogOutcome::Delivered),
            "failed" => Ok(DeliveryLogOutcome::Failed),
            "dead" => Ok(DeliveryLogOutcome::Dead),
            other => Err(StoreError::Corrupt(format!(
                "delivery log outcome {other:?}"
            ))),
        }
    }
}

/// Which log rows [`Store::delivery_log`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryLogFilter {
    pub delivery: Option<DeliveryId>,
    pub event: Option<EventId>,
    pub receiver: Option<ReceiverId>,
    pub outcome: Option<DeliveryLogOutcome>,
    /// Only rows with a larger id, oldest first. Without it: newest first.
    pub after_id: Option<i64>,
    /// At most [`MAX_PAGE`]; 0 means [`DEFAULT_PAGE`].
    pub limit: usize,
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryLogEntry {
    pub id: i64,
    pub delivery: DeliveryId,
    pub event: EventId,
    pub receiver: ReceiverId,
    pub receiver_name: String,
    pub kind: NotificationKind,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub started_at: OffsetDateTime,
    pub latency: Duration,
    pub outcome: DeliveryLogOutcome,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

/// Deliveries of one receiver in one status (for `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCount {
    pub receiver: ReceiverId,
    pub receiver_name: String,
    pub status: DeliveryStatus,
    pub count: u64,
}

/// A live receiver's backlog (for `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    pub receiver: ReceiverId,
    pub receiver_name: String,
    pub pending: u64,
    /// When the oldest pending delivery was enqueued.
    pub oldest_pending: Option<OffsetDateTime>,
}

/// Whether the outbox and the delivery log agree ([`Store::reconcile`]). The counts of
/// problems are all zero in a consistent database ([`Reconciliation::is_consistent`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub events: u64,
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    /// Rows in the delivery log; equals the sum of `attempts` when consistent.
    pub log_rows: u64,
    pub attempts: u64,
    /// Delivered deliveries without exactly one `delivered` log row.
    pub delivered_without_one_success_row: u64,
    /// Dead deliveries without exactly one `dead` log row.
    pub dead_without_one_dead_row: u64,
    /// Deliveries whose `attempts` is not their number of log rows numbered 1..=attempts.
    pub attempts_not_logged: u64,
    /// `delivered` or `dead` log rows that are not their delivery's last attempt, or
    /// whose delivery is not in that state.
    pub final_rows_out_of_place: u64,
    /// Ended events with a `firing` notification to a live, enabled receiver but no
    /// `resolved` one to it.
    pub ended_without_resolved: u64,
}

impl Reconciliation {
    /// No problem found.
    pub fn is_consistent(&self) -> bool {
        self.log_rows == self.attempts
            && self.delivered_without_one_success_row == 0
            && self.dead_without_one_dead_row == 0
            && self.attempts_not_logged == 0
            && self.final_rows_out_of_place == 0
            && self.ended_without_resolved == 0
    }
}

impl fmt::Display for Reconciliation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "events                             {}", self.events)?;
        writeln!(
            f,
            "deliveries                         {} pending, {} delivered, {} dead",
            self.pending, self.delivered, self.dead
        )?;
        writeln!(
            f,
            "delivery log rows / attempts       {} / {}",
            self.log_rows, self.attempts
        )?;
        for (what, n) in [
            (
                "delivered without one success row",
                self.delivered_without_one_success_row,
            ),
            ("dead without one dead row", self.dead_without_one_dead_row),
            ("attempts not logged", self.attempts_not_logged),
            ("final rows out of place", self.final_rows_out_of_place),
            ("ended without resolved", self.ended_without_resolved),
        ] {
            writeln!(f, "{what:<35}{n}")?;
        }
        write!(
            f,
            "{}",
            if self.is_consistent() {
                "consistent"
            } else {
                "INCONSISTENT"
            }
        )
    }
}

fn delivery_status(s: &str) -> Result<DeliveryStatus> {
    match s {
        "pending" => Ok(DeliveryStatus::Pending),
        "delivered" => Ok(DeliveryStatus::Delivered),
        "dead" => Ok(DeliveryStatus::Dead),
        other => Err(StoreError::Corrupt(format!("delivery status {other:?}"))),
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn small(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `%`, `_` and `\` escaped for `LIKE ... ESCAPE '\'`.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// SQL conditions joined by AND, with their parameters (numbered as pushed).
#[derive(Default)]
struct Conditions {
    sql: Vec<String>,
    values: Vec<Value>,
}

impl Conditions {
    /// Adds `cond`, in which `?` stands for the next parameter (once or more).
    fn push(&mut self, cond: &str, value: impl Into<Value>) {
        self.values.push(value.into());
        let n = self.values.len();
        self.sql.push(cond.replace('?', &format!("?{n}")));
    }

    fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            "1".to_string()
        } else {
            self.sql.join(" AND ")
        }
    }
}

impl Store {
    /// One event by id.
    pub fn event(&self, id: EventId) -> Result<Event> {
        let sql = format!("SELECT {EVENT_COLS} FROM events e WHERE e.id = ?1");
        let raw = self
            .conn()
            .query_row(&sql, [id.to_string()], |r| RawEvent::read(r, 0))
            .optional()?;
        raw.map(RawEvent::into_event)
            .transpose()?
            .ok_or_else(|| StoreError::not_found(Entity::Event, id))
    }

    /// One event with its silence and deliveries.
    pub fn event_detail(&self, id: EventId) -> Result<EventDetail> {
        let tx = self.conn().unchecked_transaction()?;
        let event = self.event(id)?;
        let silenced_by: Option<SilenceId> = tx.query_row(
            "SELECT silenced_by FROM events WHERE seq = ?1",
            [event.seq],
            |r| r.get(0),
        )?;
        type Row = (
            i64,
            i64,
            String,
            Option<i64>,
            String,
            i64,
            String,
            i64,
            i64,
            i64,
            Option<i64>,
            Option<String>,
        );
        let rows: Vec<Row> = {
            let mut st = tx.prepare_cached(
                "SELECT d.id, d.receiver_id, r.name, d.rule_id, d.kind, d.repeat_n, d.status,
                        d.attempts, d.next_attempt_at, d.created_at, d.delivered_at, d.last_error
                 FROM deliveries d JOIN receivers r ON r.id = d.receiver_id
                 WHERE d.event_seq = ?1 ORDER BY d.id",
            )?;
            let rows = st
                .query_map([event.seq], |r| Row::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        tx.commit()?;
        let deliveries = rows
            .into_iter()
            .map(
                |(
                    id,
                    receiver,
                    receiver_name,
                    rule,
                    kind,
                    n,
                    status,
                    attempts,
                    next,
                    created,
                    delivered,
                    last_error,
                )| {
                    Ok(DeliveryRecord {
                        id,
                        receiver,
                        receiver_name,
                        rule,
                        kind: notification_kind(&kind, n)?,
                        status: delivery_status(&status)?,
                        attempts: small(attempts),
                        next_attempt_at: from_unix_ms(next)?,
                        created_at: from_unix_ms(created)?,
                        delivered_at: delivered.map(from_unix_ms).transpose()?,
                        last_error,
                    })
                },
            )
            .collect::<Result<Vec<_>>>()?;
        Ok(EventDetail {
            event,
            silenced_by,
            deliveries,
        })
    }

    /// Events matching `filter` (see [`EventFilter`] for the order).
    pub fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let mut c = Conditions::default();
        if let Some(s) = filter.after_seq {
            c.push("e.seq > ?", s);
        }
        if let Some(s) = filter.before_seq {
            c.push("e.seq < ?", s);
        }
        if let Some(t) = filter.since {
            c.push("e.received_at >= ?", to_unix_ms(t)?);
        }
        if let Some(t) = filter.until {
            c.push("e.received_at < ?", to_unix_ms(t)?);
        }
        if let Some(k) = filter.kind.as_deref() {
            match k.strip_suffix('*') {
                Some(prefix) => {
                    let n = i64::try_from(prefix.len()).unwrap_or(i64::MAX);
                    c.push(&format!("substr(e.kind, 1, {n}) = ?"), prefix.to_string());
                }
                None => c.push("e.kind = ?", k.to_string()),
            }
        }
        if let Some(s) = &filter.source {
            c.push("e.source = ?", s.clone());
        }
        if let Some(s) = filter.severity_min {
            c.push("e.severity >= ?", severity_code(s));
        }
        if let Some(acked) = filter.acked {
            c.push("(e.acked_at IS NOT NULL) = ?", acked);
        }
        if let Some(text) = &filter.text {
            c.push(
                "(e.message LIKE ? ESCAPE '\\' OR e.camera LIKE ? ESCAPE '\\'
                  OR e.zone LIKE ? ESCAPE '\\' OR e.device LIKE ? ESCAPE '\\')",
                like_pattern(text),
            );
        }
        let order = if filter.after_seq.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        let sql = format!(
            "SELECT {EVENT_COLS} FROM events e WHERE {} ORDER BY e.seq {order} LIMIT {}",
            c.where_clause(),
            page(filter.limit)
        );
        let mut st = self.conn().prepare_cached(&sql)?;
        let raw = st
            .query_map(params_from_iter(c.values), |r| RawEvent::read(r, 0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raw.into_iter().map(RawEvent::into_event).collect()
    }

    /// Acknowledges an event for admin `by`; the first acknowledgement wins. Stops its
    /// reminders.
    pub fn ack_event(
        &self,
        id: EventId,
        by: &str,
        comment: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<AckOutcome> {
        check_author("acknowledged by", by)?;
        if comment.is_some_and(|c| c.len() > limits::MESSAGE) {
            return Err(StoreError::invalid(
                "acknowledgement comment",
                format!("longer than {} bytes", limits::MESSAGE),
            ));
        }
        let tx = write_tx(self.conn())?;
        /// seq, acked_by, acked_at, ack_comment.
        type AckRow = (i64, Option<String>, Option<i64>, Option<String>);
        let row: Option<AckRow> = tx
            .query_row(
                "SELECT seq, acked_by, acked_at, ack_comment FROM events WHERE id = ?1",
                [id.to_string()],
                |r| AckRow::try_from(r),
            )
            .optional()?;
        let Some((seq, acked_by, acked_at, ack_comment)) = row else {
            return Err(StoreError::not_found(Entity::Event, id));
        };
        if let (Some(by), Some(at)) = (acked_by, acked_at) {
            return Ok(AckOutcome::AlreadyAcked(Ack {
                by,
                at: from_unix_ms(at)?,
                comment: ack_comment,
            }));
        }
        let at = to_unix_ms(now)?;
        tx.execute(
            "UPDATE events SET acked_by = ?2, acked_at = ?3, ack_comment = ?4 WHERE seq = ?1",
            params![seq, by, at, comment],
        )?;
        tx.execute("DELETE FROM repeats WHERE event_seq = ?1", [seq])?;
        tx.commit()?;
        Ok(AckOutcome::Acked(Ack {
            by: by.to_string(),
            at: from_unix_ms(at)?,
            comment: comment.map(str::to_string),
        }))
    }

    /// Resolves an event for admin `by`, in one transaction: unless it has ended, it ends
    /// now (`lifecycle = ended`, `ended_at = now`) exactly as when its source ends it
    /// (a `resolved` notification to every receiver that had a `firing` one, reminders
    /// stop); unless it was acknowledged, it is acknowledged by `by` with `comment`. So
    /// the acknowledgement names who resolved it. Resolving twice changes nothing.
    pub fn resolve_event(
        &self,
        id: EventId,
        by: &str,
        comment: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<ResolveOutcome> {
        check_author("resolved by", by)?;
        if comment.is_some_and(|c| c.len() > limits::MESSAGE) {
            return Err(StoreError::invalid(
                "resolution comment",
                format!("longer than {} bytes", limits::MESSAGE),
            ));
        }
        let tx = write_tx(self.conn())?;
        /// seq, lifecycle, acked_at.
        type ResolveRow = (i64, String, Option<i64>);
        let row: Option<ResolveRow> = tx
            .query_row(
                "SELECT seq, lifecycle, acked_at FROM events WHERE id = ?1",
                [id.to_string()],
                |r| ResolveRow::try_from(r),
            )
            .optional()?;
        let Some((seq, lifecycle, acked_at)) = row else {
            return Err(StoreError::not_found(Entity::Event, id));
        };
        let at = to_unix_ms(now)?;
        let ended_now = lifecycle != Lifecycle::Ended.as_str();
        let mut resolved_deliveries = 0;
        if ended_now {
            tx.execute(
                "UPDATE events SET lifecycle = ?2, ended_at = ?3 WHERE seq = ?1",
                params![seq, Lifecycle::Ended.as_str(), at],
            )?;
            resolved_deliveries = super::ingest::resolve(&tx, seq, at)?;
        }
        let acked_now = acked_at.is_none();
        if acked_now {
            tx.execute(
                "UPDATE events SET acked_by = ?2, acked_at = ?3, ack_comment = ?4 WHERE seq = ?1",
                params![seq, by, at, comment],
            )?;
            tx.execute("DELETE FROM repeats WHERE event_seq = ?1", [seq])?;
        }
        let event = self.event(id)?;
        tx.commit()?;
        Ok(ResolveOutcome {
            event,
            ended_now,
            acked_now,
            resolved_deliveries,
        })
    }

    /// Delivery-log rows matching `filter` (see [`DeliveryLogFilter`] for the order).
    pub fn delivery_log(&self, filter: &DeliveryLogFilter) -> Result<Vec<DeliveryLogEntry>> {
        let mut c = Conditions::default();
        if let Some(d) = filter.delivery {
            c.push("l.delivery_id = ?", d);
        }
        if let Some(e) = filter.event {
            c.push("e.id = ?", e.to_string());
        }
        if let Some(r) = filter.receiver {
            c.push("d.receiver_id = ?", r);
        }
        if let Some(o) = filter.outcome {
            c.push("l.outcome = ?", o.as_str().to_string());
        }
        if let Some(a) = filter.after_id {
            c.push("l.id > ?", a);
        }
        let order = if filter.after_id.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        let sql = format!(
            "SELECT l.id, l.delivery_id, e.id, d.receiver_id, r.name, d.kind, d.repeat_n,
                    l.attempt, l.started_at, l.latency_ms, l.outcome, l.http_status, l.error
             FROM delivery_log l
             JOIN deliveries d ON d.id = l.delivery_id
             JOIN events e ON e.seq = d.event_seq
             JOIN receivers r ON r.id = d.receiver_id
             WHERE {} ORDER BY l.id {order} LIMIT {}",
            c.where_clause(),
            page(filter.limit)
        );
        type Row = (
            i64,
            i64,
            String,
            i64,
            String,
            String,
            i64,
            i64,
            i64,
            i64,
            String,
            Option<i64>,
            Option<String>,
        );
        let mut st = self.conn().prepare_cached(&sql)?;
        let rows = st
            .query_map(params_from_iter(c.values), |r| Row::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(
                |(
                    id,
                    delivery,
                    event,
                    receiver,
                    receiver_name,
                    kind,
                    n,
                    attempt,
                    started,
                    latency,
                    outcome,
                    http,
                    error,
                )| {
                    Ok(DeliveryLogEntry {
                        id,
                        delivery,
                        event: parse_event_id(&event)?,
                        receiver,
                        receiver_name,
                        kind: notification_kind(&kind, n)?,
                        attempt: small(attempt),
                        started_at: from_unix_ms(started)?,
                        latency: Duration::from_millis(count(latency)),
                        outcome: DeliveryLogOutcome::parse(&outcome)?,
                        http_status: http.and_then(|h| u16::try_from(h).ok()),
                        error,
                    })
                },
            )
            .collect()
    }

    // ---- metrics -------------------------------------------------------------------

    /// Deliveries per receiver (removed ones included) and status.
    pub fn delivery_counts(&self) -> Result<Vec<DeliveryCount>> {
        let mut st = self.conn().prepare_cached(
            "SELECT d.receiver_id, r.name, d.status, count(*)
             FROM deliveries d JOIN receivers r ON r.id = d.receiver_id
             GROUP BY d.receiver_id, d.status ORDER BY d.receiver_id, d.status",
        )?;
        let rows = st
            .query_map([], |r| <(i64, String, String, i64)>::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(receiver, receiver_name, status, n)| {
                Ok(DeliveryCount {
                    receiver,
                    receiver_name,
                    status: delivery_status(&status)?,
                    count: count(n),
                })
            })
            .collect()
    }

    /// Pending deliveries per live receiver (zero included).
    pub fn queue_depth(&self) -> Result<Vec<QueueDepth>> {
        let mut st = self.conn().prepare_cached(
            "SELECT r.id, r.name, count(d.id), min(d.created_at)
             FROM receivers r
             LEFT JOIN deliveries d ON d.receiver_id = r.id AND d.status = 'pending'
             WHERE r.removed_at IS NULL GROUP BY r.id ORDER BY r.id",
        )?;
        let rows = st
            .query_map([], |r| <(i64, String, i64, Option<i64>)>::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(receiver, receiver_name, pending, oldest)| {
                Ok(QueueDepth {
                    receiver,
                    receiver_name,
                    pending: count(pending),
                    oldest_pending: oldest.map(from_unix_ms).transpose()?,
                })
            })
            .collect()
    }

    /// Events nobody has acknowledged (the console's dashboard). Scans the events table.
    pub fn unacknowledged_event_count(&self) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM events WHERE acked_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(count(n))
    }

    /// Stored events per source kind. Scans the events table: for a scrape every few
    /// seconds, keep counters in memory and use this to seed them.
    pub fn event_counts_by_source_kind(&self) -> Result<Vec<(SourceKind, u64)>> {
        let mut st = self.conn().prepare_cached(
            "SELECT source_kind, count(*) FROM events GROUP BY source_kind ORDER BY source_kind",
        )?;
        let rows = st
            .query_map([], |r| <(String, i64)>::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(k, n)| Ok((parse_source_kind(&k)?, count(n))))
            .collect()
    }

    // ---- reconciliation ------------------------------------------------------------

    /// Checks that the outbox and the delivery log agree (see [`Reconciliation`]), in one
    /// read transaction. Scans both tables: for tests and `gatehouse event check`.
    pub fn reconcile(&self) -> Result<Reconciliation> {
        let tx = self.conn().unchecked_transaction()?;
        let one = |sql: &str| -> Result<u64> { Ok(count(tx.query_row(sql, [], |r| r.get(0))?)) };
        let (firing, _) = kind_cols(NotificationKind::Firing);
        let (resolved, _) = kind_cols(NotificationKind::Resolved);
        let r = Reconciliation {
            events: one("SELECT count(*) FROM events")?,
            pending: one("SELECT count(*) FROM deliveries WHERE status = 'pending'")?,
            delivered: one("SELECT count(*) FROM deliveries WHERE status = 'delivered'")?,
            dead: one("SELECT count(*) FROM deliveries WHERE status = 'dead'")?,
            log_rows: one("SELECT count(*) FROM delivery_log")?,
            attempts: one("SELECT coalesce(sum(attempts), 0) FROM deliveries")?,
            delivered_without_one_success_row: one(
                "SELECT count(*) FROM deliveries d WHERE d.status = 'delivered'
                 AND (SELECT count(*) FROM delivery_log l
                      WHERE l.delivery_id = d.id AND l.outcome = 'delivered') <> 1",
            )?,
            dead_without_one_dead_row: one(
                "SELECT count(*) FROM deliveries d WHERE d.status = 'dead'
                 AND (SELECT count(*) FROM delivery_log l
                      WHERE l.delivery_id = d.id AND l.outcome = 'dead') <> 1",
            )?,
            attempts_not_logged: one(
                "SELECT count(*) FROM deliveries d
                 WHERE d.attempts <> (SELECT count(*) FROM delivery_log l WHERE l.delivery_id = d.id)
                    OR d.attempts <> (SELECT coalesce(max(attempt), 0) FROM delivery_log l
                                      WHERE l.delivery_id = d.id)",
            )?,
            final_rows_out_of_place: one(
                "SELECT count(*) FROM delivery_log l JOIN deliveries d ON d.id = l.delivery_id
                 WHERE l.outcome <> 'failed' AND (l.attempt <> d.attempts OR l.outcome <> d.status)",
            )?,
            ended_without_resolved: one(&format!(
                "SELECT count(*) FROM deliveries f
                 JOIN events e ON e.seq = f.event_seq
                 JOIN receivers r ON r.id = f.receiver_id
                 WHERE f.kind = '{firing}' AND e.lifecycle = 'ended'
                   AND r.enabled = 1 AND r.removed_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM deliveries x
                                   WHERE x.event_seq = f.event_seq AND x.receiver_id = f.receiver_id
                                     AND x.kind = '{resolved}')"
            ))?,
        };
        drop(tx);
        Ok(r)
    }
}
