//! Events and alerts in the database (schema migration 4): registered event sources and
//! their API keys, receivers, rules, silences, the events themselves, and the alert outbox
//! (`deliveries`) with its delivery log and repeat schedule. The hub's writer thread
//! ingests ([`Store::ingest_events`]), its delivery workers drain the outbox
//! ([`Store::due_deliveries`], [`Store::record_attempt`]), and the CLI and admin API edit
//! the configuration; everything goes through the [`Store`] methods of the submodules:
//!
//! - `sources`: [`EventSource`]s and their [`ApiKey`]s.
//! - `config`: receivers, rules, silences and [`Store::load_alert_config`].
//! - `ingest`: [`Store::ingest_events`], the transactional outbox.
//! - `outbox`: what delivery workers, the repeat scheduler and the console feed use.
//! - `queries`: listing and acknowledging events, the delivery log, metrics and
//!   [`Store::reconcile`].
//!
//! Promises:
//! - Accepted = committed: [`Store::ingest_events`] writes a batch of events and every
//!   delivery they call for in one transaction; a failed call writes nothing.
//! - An event is identified by its [`EventId`] and, when the source gave one, by
//!   `(source, external_id)`: a retransmission or a lifecycle update folds into the stored
//!   event instead of adding one.
//! - A notification (event, receiver, kind, repeat number) is enqueued at most once.
//! - The delivery log reconciles with the outbox: each attempt appends exactly one log row
//!   in the transaction that updates its delivery, so a delivery's `attempts` equals its
//!   number of log rows, a delivered one has exactly one `delivered` row and a dead one
//!   exactly one `dead` row ([`Store::reconcile`] checks it). Console deliveries are
//!   delivered when committed and logged as one attempt of zero latency.
//! - API keys are stored only as SHA-256 of their text.
//! - History is never lost silently: removing a receiver is refused while deliveries to
//!   it are pending or rules send to it, and a removed receiver stays as a tombstone so its
//!   deliveries and log rows keep their receiver; removing a rule keeps its deliveries
//!   (without the rule); removing a source keeps its events.
//!
//! Units: unix milliseconds (UTC) in the database, `OffsetDateTime` here, so times come
//! back truncated to the millisecond; group windows and repeat intervals are whole seconds.

mod config;
mod ingest;
mod outbox;
mod queries;
mod sources;

pub use config::{AlertConfig, NewRule, NewSilence, MAX_GROUP_WINDOW};
pub use ingest::{IngestItem, IngestOutcome, PlannedDelivery};
pub use outbox::{AttemptOutcome, AttemptRecord, DeadDelivery, MAX_ERROR_LEN};
pub use queries::{
    AckOutcome, DeliveryCount, DeliveryLogEntry, DeliveryLogFilter, DeliveryLogOutcome,
    DeliveryRecord, EventDetail, EventFilter, QueueDepth, Reconciliation, ResolveOutcome,
    DEFAULT_PAGE, MAX_PAGE,
};
pub use sources::{api_key_hash, ApiKey, EventSource};

use crate::error::StoreError;
#[cfg(doc)]
use crate::store::Store;
use crate::store::{from_unix_ms, write_tx, Result};
use gatehouse_alerts::model::{
    Ack, Event, EventId, Lifecycle, NewEvent, NotificationKind, Severity, SourceKind,
};
use rusqlite::Row;
use std::time::Duration;

/// The stored number of a severity (`events.severity`).
fn severity_code(s: Severity) -> i64 {
    match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

fn severity_from_code(code: i64) -> Result<Severity> {
    match code {
        0 => Ok(Severity::Info),
        1 => Ok(Severity::Warning),
        2 => Ok(Severity::Critical),
        _ => Err(StoreError::Corrupt(format!("event severity {code}"))),
    }
}

/// Milliseconds of a duration, saturating.
fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whole seconds of a duration that must be whole seconds (rule windows and intervals).
fn whole_secs(field: &'static str, d: Duration) -> Result<i64> {
    if d.subsec_nanos() != 0 {
        return Err(StoreError::invalid(field, "must be whole seconds"));
    }
    i64::try_from(d.as_secs()).map_err(|_| StoreError::invalid(field, "too long"))
}

/// `deliveries.kind` and `repeat_n` of a notification kind.
fn kind_cols(kind: NotificationKind) -> (&'static str, i64) {
    match kind {
        NotificationKind::Firing => ("firing", 0),
        NotificationKind::Repeat(n) => ("repeat", i64::from(n)),
        NotificationKind::Resolved => ("resolved", 0),
    }
}

fn notification_kind(kind: &str, n: i64) -> Result<NotificationKind> {
    match kind {
        "firing" => Ok(NotificationKind::Firing),
        "resolved" => Ok(NotificationKind::Resolved),
        "repeat" => u32::try_from(n)
            .map(NotificationKind::Repeat)
            .map_err(|_| StoreError::Corrupt(format!("repeat number {n}"))),
        other => Err(StoreError::Corrupt(format!("delivery kind {other:?}"))),
    }
}

fn parse_source_kind(s: &str) -> Result<SourceKind> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("source kind {s:?}")))
}

fn parse_event_id(s: &str) -> Result<EventId> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("event id {s:?}")))
}

/// The columns [`RawEvent::read`] reads, in order, from `events e`.
const EVENT_COLS: &str = "e.seq, e.id, e.source, e.source_kind, e.kind, e.severity, \
    e.occurred_at, e.received_at, e.camera, e.zone, e.device, e.message, e.snapshot_url, \
    e.clip_url, e.external_id, e.lifecycle, e.ended_at, e.grouped_into, e.acked_by, \
    e.acked_at, e.ack_comment";

/// An `events` row as SQLite gives it, before parsing.
struct RawEvent {
    seq: i64,
    id: String,
    source: String,
    source_kind: String,
    kind: String,
    severity: i64,
    occurred_at: i64,
    received_at: i64,
    camera: Option<String>,
    zone: Option<String>,
    device: Option<String>,
    message: Option<String>,
    snapshot_url: Option<String>,
    clip_url: Option<String>,
    external_id: Option<String>,
    lifecycle: String,
    ended_at: Option<i64>,
    grouped_into: Option<String>,
    acked_by: Option<String>,
    acked_at: Option<i64>,
    ack_comment: Option<String>,
}

impl RawEvent {
    /// Reads [`EVENT_COLS`] starting at column `at`.
    fn read(r: &Row<'_>, at: usize) -> rusqlite::Result<RawEvent> {
        Ok(RawEvent {
            seq: r.get(at)?,
            id: r.get(at + 1)?,
            source: r.get(at + 2)?,
            source_kind: r.get(at + 3)?,
            kind: r.get(at + 4)?,
            severity: r.get(at + 5)?,
            occurred_at: r.get(at + 6)?,
            received_at: r.get(at + 7)?,
            camera: r.get(at + 8)?,
            zone: r.get(at + 9)?,
            device: r.get(at + 10)?,
            message: r.get(at + 11)?,
            snapshot_url: r.get(at + 12)?,
            clip_url: r.get(at + 13)?,
            external_id: r.get(at + 14)?,
            lifecycle: r.get(at + 15)?,
            ended_at: r.get(at + 16)?,
            grouped_into: r.get(at + 17)?,
            acked_by: r.get(at + 18)?,
            acked_at: r.get(at + 19)?,
            ack_comment: r.get(at + 20)?,
        })
    }

    fn into_event(self) -> Result<Event> {
        let ack = match (self.acked_by, self.acked_at) {
            (Some(by), Some(at)) => Some(Ack {
                by,
                at: from_unix_ms(at)?,
                comment: self.ack_comment,
            }),
            _ => None,
        };
        Ok(Event {
            id: parse_event_id(&self.id)?,
            seq: self.seq,
            new: NewEvent {
                source: self.source,
                source_kind: parse_source_kind(&self.source_kind)?,
                kind: self.kind,
                severity: severity_from_code(self.severity)?,
                time: from_unix_ms(self.occurred_at)?,
                camera: self.camera,
                zone: self.zone,
                device: self.device,
                message: self.message,
                snapshot_url: self.snapshot_url,
                clip_url: self.clip_url,
                external_id: self.external_id,
                lifecycle: self
                    .lifecycle
                    .parse::<Lifecycle>()
                    .map_err(|e| StoreError::Corrupt(format!("event {}: {e}", self.seq)))?,
            },
            received_at: from_unix_ms(self.received_at)?,
            ended_at: self.ended_at.map(from_unix_ms).transpose()?,
            grouped_into: self
                .grouped_into
                .as_deref()
                .map(parse_event_id)
                .transpose()?,
            ack,
        })
    }
}

/// `deliveries d JOIN events e` columns for a [`gatehouse_alerts::model::Notification`]:
/// the delivery id, kind and repeat number, then [`EVENT_COLS`].
fn notification_cols() -> String {
    format!("d.id, d.kind, d.repeat_n, {EVENT_COLS}")
}

/// A raw notification row: delivery id, kind, repeat number and the event.
type RawNotification = (i64, String, i64, RawEvent);

fn read_notification(r: &Row<'_>) -> rusqlite::Result<RawNotification> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, RawEvent::read(r, 3)?))
}

fn into_notification(raw: RawNotification) -> Result<gatehouse_alerts::model::Notification> {
    let (delivery, kind, n, event) = raw;
    Ok(gatehouse_alerts::model::Notification {
        delivery,
        kind: notification_kind(&kind, n)?,
        event: event.into_event()?,
    })
}

#[cfg(test)]
mod tests;
