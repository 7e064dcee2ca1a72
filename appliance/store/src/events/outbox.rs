//! The outbox side: what the hub's delivery workers, its repeat scheduler and the
//! console's live feed read and write.
//!
//! Promises:
//! - [`Store::due_deliveries`] gives a receiver's pending deliveries whose time has come,
//!   in id order (so a receiver sees an event's `firing` before its `resolved`), minus
//!   those the caller has in flight.
//! - [`Store::record_attempt`] updates the delivery and appends its delivery-log row in
//!   one transaction; it refuses a delivery that is no longer pending
//!   ([`StoreError::Conflict`]), so a late or repeated report cannot add a second
//!   `delivered` row. [`Store::record_attempts`] does the same for a batch of attempts in
//!   one transaction (one commit for attempts that finished together).
//! - [`Store::enqueue_due_repeats`] enqueues reminder `n` (1, 2, ...) of each due repeat
//!   to its rule's live, enabled receivers and moves the schedule one interval past now,
//!   in one transaction; it drops schedules whose event was acknowledged or ended or whose
//!   rule is disabled or no longer repeats. A hub that was down sends one reminder on
//!   return, not the ones it missed.
//! - The console feed ([`Store::console_feed`]) is the console receiver's deliveries in id
//!   order: a client that resumes after id `n` gets exactly what came after `n`.

use super::{
    duration_ms, into_notification, kind_cols, notification_cols, parse_event_id,
    read_notification, severity_from_code, write_tx,
};
use crate::error::{Entity, StoreError};
use crate::store::{from_unix_ms, to_unix_ms, Result, Store};
use gatehouse_alerts::model::{
    DeliveryId, DeliveryStatus, EventId, Notification, NotificationKind, ReceiverId, RuleId,
    Severity, DELIVERY_DEAD_KIND,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::time::Duration;
use time::OffsetDateTime;

/// Longest error text kept per attempt (bytes); longer ones are cut.
pub const MAX_ERROR_LEN: usize = 1024;

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver accepted it.
    Delivered,
    /// It did not (refused, timed out, unreachable).
    Failed {
        /// What went wrong, for the log and `last_error` (cut to [`MAX_ERROR_LEN`]).
        error: String,
        /// When to try again (from the retry policy); `None`: give up, the delivery is
        /// dead.
        next_attempt_at: Option<OffsetDateTime>,
    },
}

/// One attempt to deliver, as the worker saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// When the attempt began.
    pub started_at: OffsetDateTime,
    /// From start to answer (or failure).
    pub latency: Duration,
    /// The HTTP status, for HTTP receivers that got an answer.
    pub http_status: Option<u16>,
    /// How it went.
    pub outcome: AttemptOutcome,
}

/// Enqueues one notification unless it already is (UNIQUE(event, receiver, kind, n)).
/// Console notifications are committed as delivered with their one log row. Returns the
/// new delivery's id.
pub(super) fn insert_delivery(
    tx: &Transaction<'_>,
    event_seq: i64,
    receiver: ReceiverId,
    console: bool,
    rule: Option<RuleId>,
    kind: NotificationKind,
    now_ms: i64,
) -> Result<Option<DeliveryId>> {
    let (kind, n) = kind_cols(kind);
    let (status, attempts, delivered_at) = if console {
        ("delivered", 1, Some(now_ms))
    } else {
        ("pending", 0, None)
    };
    let id: Option<DeliveryId> = {
        let mut st = tx.prepare_cached(
            "INSERT INTO deliveries (event_seq, receiver_id, rule_id, kind, repeat_n, status,
                                     attempts, next_attempt_at, created_at, delivered_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)
             ON CONFLICT (event_seq, receiver_id, kind, repeat_n) DO NOTHING
             RETURNING id",
        )?;
        st.query_row(
            params![
                event_seq,
                receiver,
                rule,
                kind,
                n,
                status,
                attempts,
                now_ms,
                delivered_at
            ],
            |r| r.get(0),
        )
        .optional()?
    };
    if let (Some(id), true) = (id, console) {
        let mut st = tx.prepare_cached(
            "INSERT INTO delivery_log (delivery_id, attempt, started_at, latency_ms, outcome)
             VALUES (?1, 1, ?2, 0, 'delivered')",
        )?;
        st.execute(params![id, now_ms])?;
    }
    Ok(id)
}

/// A dead delivery, with what its "delivery dead" event says
/// ([`Store::dead_deliveries_without_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadDelivery {
    pub delivery: DeliveryId,
    pub receiver: ReceiverId,
    pub receiver_name: String,
    pub event: EventId,
    pub severity: Severity,
    /// The last attempt's error.
    pub error: String,
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One attempt of a pending delivery, inside `tx`: the delivery's update and its log row.
/// Refuses (writing nothing) an unknown delivery or one no longer pending.
fn record_in(
    tx: &Transaction<'_>,
    delivery: DeliveryId,
    attempt: &AttemptRecord,
) -> Result<DeliveryStatus> {
    let started = to_unix_ms(attempt.started_at)?;
    let latency = duration_ms(attempt.latency);
    let row: Option<(String, i64)> = {
        let mut st = tx.prepare_cached("SELECT status, attempts FROM deliveries WHERE id = ?1")?;
        st.query_row([delivery], |r| <(String, i64)>::try_from(r))
            .optional()?
    };
    let Some((status, attempts)) = row else {
        return Err(StoreError::not_found(Entity::Delivery, delivery));
    };
    if status != DeliveryStatus::Pending.as_str() {
        return Err(StoreError::Conflict {
            entity: Entity::Delivery,
            key: delivery.to_string(),
            why: format!("is already {status}; only pending deliveries are attempted"),
        });
    }
    let n = attempts + 1;
    let (new_status, outcome, error) = match &attempt.outcome {
        AttemptOutcome::Delivered => {
            let mut st = tx.prepare_cached(
                "UPDATE deliveries SET status = 'delivered', attempts = ?2,
                                       delivered_at = ?3, last_error = NULL
                 WHERE id = ?1",
            )?;
            st.execute(params![delivery, n, started.saturating_add(latency)])?;
            (DeliveryStatus::Delivered, "delivered", None)
        }
        AttemptOutcome::Failed {
            error,
            next_attempt_at: Some(next),
        } => {
            let error = cut(error, MAX_ERROR_LEN);
            let mut st = tx.prepare_cached(
                "UPDATE deliveries SET attempts = ?2, next_attempt_at = ?3, last_error = ?4
                 WHERE id = ?1",
            )?;
            st.execute(params![delivery, n, to_unix_ms(*next)?, error])?;
            (DeliveryStatus::Pending, "failed", Some(error))
        }
        AttemptOutcome::Failed {
            error,
            next_attempt_at: None,
        } => {
            let error = cut(error, MAX_ERROR_LEN);
            let mut st = tx.prepare_cached(
                "UPDATE deliveries SET status = 'dead', attempts = ?2, last_error = ?3
                 WHERE id = ?1",
            )?;
            st.execute(params![delivery, n, error])?;
            (DeliveryStatus::Dead, "dead", Some(error))
        }
    };
    let mut st = tx.prepare_cached(
        "INSERT INTO delivery_log (delivery_id, attempt, started_at, latency_ms, outcome,
                                   http_status, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    st.execute(params![
        delivery,
        n,
        started,
        latency,
        outcome,
        attempt.http_status,
        error
    ])?;
    Ok(new_status)
}

fn notifications(
    conn: &Connection,
    sql_where: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Notification>> {
    let sql = format!(
        "SELECT {} FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {sql_where}",
        notification_cols()
    );
    let mut st = conn.prepare_cached(&sql)?;
    let raw = st
        .query_map(params, read_notification)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raw.into_iter().map(into_notification).collect()
}

impl Store {
    /// Up to `limit` pending deliveries of `receiver` due at `now` (`next_attempt_at <=
    /// now`), in id order, leaving out `exclude` (the caller's in-flight ones).
    pub fn due_deliveries(
        &self,
        receiver: ReceiverId,
        now: OffsetDateTime,
        limit: usize,
        exclude: &[DeliveryId],
    ) -> Result<Vec<Notification>> {
        let fetch = i64::try_from(limit.saturating_add(exclude.len())).unwrap_or(i64::MAX);
        let mut due = notifications(
            self.conn(),
            "d.receiver_id = ?1 AND d.status = 'pending' AND d.next_attempt_at <= ?2
             ORDER BY d.id LIMIT ?3",
            params![receiver, to_unix_ms(now)?, fetch],
        )?;
        due.retain(|n| !exclude.contains(&n.delivery));
        due.truncate(limit);
        Ok(due)
    }

    /// When the next pending delivery of `receiver` not in `exclude` is due (`None`:
    /// nothing pending). May be in the past: then it is due now.
    pub fn next_due_at(
        &self,
        receiver: ReceiverId,
        exclude: &[DeliveryId],
    ) -> Result<Option<OffsetDateTime>> {
        let fetch = i64::try_from(exclude.len().saturating_add(1)).unwrap_or(i64::MAX);
        let mut st = self.conn().prepare_cached(
            "SELECT id, next_attempt_at FROM deliveries
             WHERE receiver_id = ?1 AND status = 'pending'
             ORDER BY next_attempt_at, id LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![receiver, fetch], |r| <(i64, i64)>::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .find(|(id, _)| !exclude.contains(id))
            .map(|(_, at)| from_unix_ms(at))
            .transpose()
    }

    /// Records one attempt of a pending delivery and returns its new status: delivered,
    /// still pending (retry at `next_attempt_at`), or dead. The caller raises the
    /// "alert.delivery_dead" event for a dead one.
    pub fn record_attempt(
        &self,
        delivery: DeliveryId,
        attempt: &AttemptRecord,
    ) -> Result<DeliveryStatus> {
        let tx = write_tx(self.conn())?;
        let status = record_in(&tx, delivery, attempt)?;
        tx.commit()?;
        Ok(status)
    }

    /// [`Store::record_attempt`] for attempts that finished together, in one transaction
    /// (one commit instead of one per attempt). Each attempt gets its own answer: a
    /// delivery that is unknown or no longer pending is refused as
    /// [`Store::record_attempt`] refuses it, without affecting the others. An `Err` of the
    /// whole call (the database failed) records none of them.
    pub fn record_attempts(
        &self,
        attempts: &[(DeliveryId, AttemptRecord)],
    ) -> Result<Vec<Result<DeliveryStatus>>> {
        let tx = write_tx(self.conn())?;
        let mut out = Vec::with_capacity(attempts.len());
        for (delivery, attempt) in attempts {
            match record_in(&tx, *delivery, attempt) {
                Ok(s) => out.push(Ok(s)),
                Err(e @ (StoreError::NotFound { .. } | StoreError::Conflict { .. })) => {
                    out.push(Err(e))
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// How many attempts each of `deliveries` has had (unknown ids are left out): what
    /// a worker needs to ask its retry policy when the next attempt fails.
    pub fn delivery_attempts(&self, deliveries: &[DeliveryId]) -> Result<Vec<(DeliveryId, u32)>> {
        let mut st = self
            .conn()
            .prepare_cached("SELECT attempts FROM deliveries WHERE id = ?1")?;
        let mut out = Vec::with_capacity(deliveries.len());
        for &d in deliveries {
            let n: Option<i64> = st.query_row([d], |r| r.get(0)).optional()?;
            if let Some(n) = n {
                out.push((d, u32::try_from(n).unwrap_or(u32::MAX)));
            }
        }
        Ok(out)
    }

    /// Dead deliveries whose "alert.delivery_dead" event was never stored (the hub died
    /// between recording the last attempt and raising the event), oldest first, at most
    /// `limit`. The hub raises them again at start; the event's external id
    /// (`delivery:<id>`, see `NewEvent::delivery_dead`) makes raising one twice harmless.
    pub fn dead_deliveries_without_event(&self, limit: usize) -> Result<Vec<DeadDelivery>> {
        let mut st = self.conn().prepare_cached(
            "SELECT d.id, d.receiver_id, r.name, e.id, e.severity, COALESCE(d.last_error, '') \
             FROM deliveries d JOIN events e ON e.seq = d.event_seq \
             JOIN receivers r ON r.id = d.receiver_id \
             WHERE d.status = 'dead' AND e.kind != ?1 AND NOT EXISTS ( \
               SELECT 1 FROM events x WHERE x.source = 'system' \
               AND x.external_id = 'delivery:' || d.id) \
             ORDER BY d.id LIMIT ?2",
        )?;
        let rows = st.query_map(
            params![DELIVERY_DEAD_KIND, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (delivery, receiver, receiver_name, event, severity, error) = row?;
            out.push(DeadDelivery {
                delivery,
                receiver,
                receiver_name,
                event: parse_event_id(&event)?,
                severity: severity_from_code(severity)?,
                error,
            });
        }
        Ok(out)
    }

    /// The console's notifications after delivery id `after`, in id order, at most
    /// `limit` (for the SSE stream and its `Last-Event-ID` resume).
    pub fn console_feed(&self, after: DeliveryId, limit: usize) -> Result<Vec<Notification>> {
        let Some(console) = self.console_receiver_id()? else {
            return Ok(Vec::new());
        };
        notifications(
            self.conn(),
            "d.receiver_id = ?1 AND d.status = 'delivered' AND d.id > ?2 ORDER BY d.id LIMIT ?3",
            params![console, after, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// The newest console delivery id (0 when there is none): where a new SSE client
    /// without `Last-Event-ID` starts.
    pub fn latest_console_delivery(&self) -> Result<DeliveryId> {
        let Some(console) = self.console_receiver_id()? else {
            return Ok(0);
        };
        Ok(self.conn().query_row(
            "SELECT coalesce(max(id), 0) FROM deliveries
             WHERE receiver_id = ?1 AND status = 'delivered'",
            [console],
            |r| r.get(0),
        )?)
    }

    /// The console receiver's id (there is one from migration 4 on).
    pub fn console_receiver_id(&self) -> Result<Option<ReceiverId>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id FROM receivers WHERE kind = 'console' AND removed_at IS NULL",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Enqueues the reminders due at `now` (see the module docs); returns how many
    /// deliveries it enqueued.
    pub fn enqueue_due_repeats(&self, now: OffsetDateTime) -> Result<usize> {
        let now_ms = to_unix_ms(now)?;
        let tx = write_tx(self.conn())?;
        // event, rule, count, interval (NULL: stop), still wanted.
        type Due = (i64, i64, i64, Option<i64>, bool);
        let due: Vec<Due> = {
            let mut st = tx.prepare_cached(
                "SELECT p.event_seq, p.rule_id, p.count, r.repeat_every_s,
                        r.enabled = 1 AND e.acked_at IS NULL AND e.lifecycle <> 'ended'
                 FROM repeats p
                 JOIN rules r ON r.id = p.rule_id
                 JOIN events e ON e.seq = p.event_seq
                 WHERE p.next_at <= ?1 ORDER BY p.next_at",
            )?;
            let rows = st
                .query_map([now_ms], |r| Due::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        let mut enqueued = 0;
        for (seq, rule, count, every_s, wanted) in due {
            let Some(every_s) = every_s.filter(|_| wanted) else {
                tx.execute(
                    "DELETE FROM repeats WHERE event_seq = ?1 AND rule_id = ?2",
                    params![seq, rule],
                )?;
                continue;
            };
            let n = count + 1;
            let kind = NotificationKind::Repeat(u32::try_from(n).unwrap_or(u32::MAX));
            let receivers: Vec<(ReceiverId, bool)> = {
                let mut st = tx.prepare_cached(
                    "SELECT rc.id, rc.kind = 'console'
                     FROM rule_receivers rr JOIN receivers rc ON rc.id = rr.receiver_id
                     WHERE rr.rule_id = ?1 AND rc.enabled = 1 AND rc.removed_at IS NULL
                     ORDER BY rc.id",
                )?;
                let rows = st
                    .query_map([rule], |r| <(i64, bool)>::try_from(r))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows
            };
            for (receiver, console) in receivers {
                if insert_delivery(&tx, seq, receiver, console, Some(rule), kind, now_ms)?.is_some()
                {
                    enqueued += 1;
                }
            }
            tx.execute(
                "UPDATE repeats SET count = ?3, next_at = ?4 WHERE event_seq = ?1 AND rule_id = ?2",
                params![
                    seq,
                    rule,
                    n,
                    now_ms.saturating_add(every_s.saturating_mul(1000))
                ],
            )?;
        }
        tx.commit()?;
        Ok(enqueued)
    }

    /// When the next reminder is due (`None`: none scheduled): when the repeat scheduler
    /// should wake.
    pub fn next_repeat_at(&self) -> Result<Option<OffsetDateTime>> {
        let at: Option<i64> =
            self.conn()
                .query_row("SELECT min(next_at) FROM repeats", [], |r| r.get(0))?;
        at.map(from_unix_ms).transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::events::{IngestItem, IngestOutcome, NewRule, PlannedDelivery};
    use gatehouse_alerts::model::{
        EventId, Lifecycle, Matcher, NewEvent, ReceiverConfig, Severity, SourceKind, WebhookFormat,
    };
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-03-02 10:00 UTC);

    fn attempt(outcome: AttemptOutcome) -> AttemptRecord {
        AttemptRecord {
            started_at: T0,
            latency: Duration::from_millis(3),
            http_status: None,
            outcome,
        }
    }

    #[test]
    fn record_attempts_commits_a_batch_and_refuses_each_stale_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let hook = s
            .add_receiver(
                "hook",
                &ReceiverConfig::Webhook {
                    url: "http://127.0.0.1:9/h".into(),
                    format: WebhookFormat::Json,
                },
            )
            .unwrap();
        let rule = s
            .add_rule(&NewRule {
                name: "all".into(),
                matcher: Matcher::default(),
                active: None,
                receivers: vec![hook],
                group_window: Duration::ZERO,
                repeat_every: None,
            })
            .unwrap();
        let items: Vec<IngestItem> = (0..3u128)
            .map(|i| IngestItem {
                id: EventId::new(T0, i + 1),
                event: NewEvent {
                    source: "nvr".into(),
                    source_kind: SourceKind::Nvr,
                    kind: "intrusion".into(),
                    severity: Severity::Critical,
                    time: T0,
                    camera: None,
                    zone: None,
                    device: None,
                    message: None,
                    snapshot_url: None,
                    clip_url: None,
                    external_id: None,
                    lifecycle: Lifecycle::Instant,
                },
                deliveries: vec![PlannedDelivery {
                    receiver: hook,
                    rule,
                    group_window: Duration::ZERO,
                    repeat_every: None,
                }],
                silenced_by: None,
            })
            .collect();
        for o in s.ingest_events(&items, T0).unwrap() {
            assert!(matches!(o, IngestOutcome::New { .. }), "{o:?}");
        }
        let due: Vec<DeliveryId> = s
            .due_deliveries(hook, T0, 10, &[])
            .unwrap()
            .iter()
            .map(|n| n.delivery)
            .collect();
        assert_eq!(due.len(), 3);
        assert_eq!(
            s.delivery_attempts(&[due[0], due[1], due[2], 9999])
                .unwrap(),
            vec![(due[0], 0), (due[1], 0), (due[2], 0)]
        );
        // First round: one delivered, one retried later, one given up.
        let retry_at = T0 + time::Duration::seconds(5);
        let results = s
            .record_attempts(&[
                (due[0], attempt(AttemptOutcome::Delivered)),
                (
                    due[1],
                    attempt(AttemptOutcome::Failed {
                        error: "HTTP 500".into(),
                        next_attempt_at: Some(retry_at),
                    }),
                ),
                (
                    due[2],
                    attempt(AttemptOutcome::Failed {
                        error: "refused".into(),
                        next_attempt_at: None,
                    }),
                ),
            ])
            .unwrap();
        let statuses: Vec<DeliveryStatus> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            statuses,
            vec![
                DeliveryStatus::Delivered,
                DeliveryStatus::Pending,
                DeliveryStatus::Dead
            ]
        );
        assert_eq!(
            s.delivery_attempts(&due).unwrap(),
            vec![(due[0], 1), (due[1], 1), (due[2], 1)]
        );
        assert_eq!(s.next_due_at(hook, &[]).unwrap(), Some(retry_at));
        // Second round: a late report for the delivered one is refused on its own; the
        // pending one is recorded beside it.
        let results = s
            .record_attempts(&[
                (due[0], attempt(AttemptOutcome::Delivered)),
                (due[1], attempt(AttemptOutcome::Delivered)),
                (4242, attempt(AttemptOutcome::Delivered)),
            ])
            .unwrap();
        assert!(matches!(results[0], Err(StoreError::Conflict { .. })));
        assert_eq!(results[1].as_ref().unwrap(), &DeliveryStatus::Delivered);
        assert!(matches!(results[2], Err(StoreError::NotFound { .. })));
        let r = s.reconcile().unwrap();
        assert!(r.is_consistent(), "{r}");
        assert_eq!((r.delivered, r.dead, r.pending), (2, 1, 0));
        assert_eq!(r.log_rows, 4);
    }
}
