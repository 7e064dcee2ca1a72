//! Frigate's MQTT messages into the events pipeline: what the MQTT transport
//! ([`crate::mqtt`]) does with a message on `<prefix>/events` or `<prefix>/reviews` of a
//! registered NVR.
//!
//! [`FrigateIngest::prepare`] parses the payload with
//! [`gatehouse_alerts::frigate::parse_frigate`] (the source's registered name and
//! `base_url`, the time of receipt); [`FrigateIngest::submit`] hands the event to
//! [`EventService::submit`] with [`Ingress::Frigate`] and says whether the MQTT message
//! may now be acknowledged ([`Settled::ack`]). Folding Frigate's `new`/`update`/`end` for
//! one object into one event is the store's job (same source and external id
//! `event:<id>` or `review:<id>`), so a message delivered twice changes nothing.
//!
//! Promises:
//! - A message is acknowledged only once its event is committed, or once it is known that
//!   it never will be: a payload that does not parse, an object Frigate still marks as a
//!   false positive, an event the store refuses. Those are counted ([`FrigateStats`]) and
//!   logged at debug level with the reason, never with the payload; a broker would
//!   otherwise redeliver them forever.
//! - When the store cannot commit (disk full, I/O error) the message stays unacknowledged
//!   and the submit is retried with backoff ([`RETRY_INITIAL`] to [`RETRY_MAX`]) until it
//!   commits or the hub stops; after a crash or a stop the broker redelivers it.

use crate::events::{EventService, Ingress, SubmitError};
use gatehouse_alerts::frigate::{parse_frigate, FrigateOutcome, FrigateTopic};
use gatehouse_alerts::model::{NewEvent, SourceId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

/// First wait before retrying a submit the store could not commit; doubled up to
/// [`RETRY_MAX`].
pub const RETRY_INITIAL: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// An NVR source whose Frigate messages the hub takes (a store `event_sources` row of kind
/// `nvr`, enabled, with an MQTT prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrigateSource {
    pub id: SourceId,
    /// The source's registered name: the `source` of its events.
    pub name: String,
    /// Frigate's `mqtt.topic_prefix` on this NVR.
    pub prefix: String,
    /// The NVR's web address, for snapshot and clip links.
    pub base_url: Option<String>,
}

/// Totals since the hub started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrigateStats {
    /// Messages on a subscribed Frigate topic.
    pub received: u64,
    /// Events committed (new ones, updates and retransmissions alike).
    pub committed: u64,
    /// Well-formed messages that are not events, by reason (`false_positive`).
    pub ignored: BTreeMap<&'static str, u64>,
    /// Payloads that do not parse, by [`gatehouse_alerts::ingest::IngestError::reason`]
    /// (`too_large`, `not_json`, `shape`, `missing`, `field`).
    pub invalid: BTreeMap<&'static str, u64>,
    /// Events the store refused (a limit the parser let through).
    pub refused: u64,
    /// Messages on a topic no current source owns (a source removed while its messages
    /// were queued for the hub).
    pub unknown_topic: u64,
    /// Submits the store could not commit (each retry counts).
    pub store_errors: u64,
}

impl FrigateStats {
    /// Messages acknowledged without an event: ignored, invalid, refused, unknown topic.
    pub fn dropped(&self) -> u64 {
        self.ignored.values().sum::<u64>()
            + self.invalid.values().sum::<u64>()
            + self.refused
            + self.unknown_topic
    }
}

/// The counters behind [`FrigateStats`] (shared with the metrics).
#[derive(Debug, Default)]
pub struct FrigateCounters {
    received: AtomicU64,
    committed: AtomicU64,
    refused: AtomicU64,
    unknown_topic: AtomicU64,
    store_errors: AtomicU64,
    /// Rare, so a lock is fine.
    by_reason: Mutex<ByReason>,
}

/// Counts by reason.
#[derive(Debug, Default, Clone)]
struct ByReason {
    ignored: BTreeMap<&'static str, u64>,
    invalid: BTreeMap<&'static str, u64>,
}

impl FrigateCounters {
    pub fn stats(&self) -> FrigateStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let ByReason { ignored, invalid } = self
            .by_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        FrigateStats {
            received: get(&self.received),
            committed: get(&self.committed),
            ignored,
            invalid,
            refused: get(&self.refused),
            unknown_topic: get(&self.unknown_topic),
            store_errors: get(&self.store_errors),
        }
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn reason(&self, invalid: bool, reason: &'static str) {
        let mut maps = self
            .by_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let map = if invalid {
            &mut maps.invalid
        } else {
            &mut maps.ignored
        };
        *map.entry(reason).or_default() += 1;
    }

    /// Counts a message on a topic no current source owns.
    pub fn unknown_topic(&self, topic: &str) {
        Self::bump(&self.unknown_topic);
        tracing::debug!(
            topic,
            "Frigate message on a topic no NVR source owns; dropped"
        );
    }
}

/// How a submitted message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Committed: acknowledge it.
    Committed,
    /// Refused by the store for good: acknowledge it (counted).
    Refused,
    /// Not committed, and the hub is stopping: leave it unacknowledged, so that the broker
    /// delivers it again.
    Unacked,
}

impl Settled {
    /// Whether the MQTT message may be acknowledged.
    pub fn ack(self) -> bool {
        matches!(self, Settled::Committed | Settled::Refused)
    }
}

/// Frigate messages -> events, with counters.
#[derive(Debug, Clone)]
pub struct FrigateIngest {
    events: EventService,
    counters: std::sync::Arc<FrigateCounters>,
}

impl FrigateIngest {
    pub fn new(events: EventService, counters: std::sync::Arc<FrigateCounters>) -> Self {
        FrigateIngest { events, counters }
    }

    pub fn counters(&self) -> &FrigateCounters {
        &self.counters
    }

    /// Parses a message of `source` on `topic`: the event to submit, or `None` when the
    /// message is done with (ignored or invalid; counted and logged at debug level).
    pub fn prepare(
        &self,
        source: &FrigateSource,
        topic: FrigateTopic,
        payload: &[u8],
        now: OffsetDateTime,
    ) -> Option<NewEvent> {
        let c = &self.counters;
        FrigateCounters::bump(&c.received);
        match parse_frigate(
            topic,
            payload,
            &source.name,
            source.base_url.as_deref(),
            now,
        ) {
            Ok(FrigateOutcome::Event(event)) => Some(event),
            Ok(FrigateOutcome::Ignored(why)) => {
                c.reason(false, why.reason());
                tracing::debug!(source = %source.name, topic = topic.suffix(), reason = why.reason(),
                    "Frigate message ignored");
                None
            }
            Err(e) => {
                c.reason(true, e.reason());
                tracing::debug!(source = %source.name, topic = topic.suffix(), bytes = payload.len(),
                    reason = e.reason(), error = %e, "invalid Frigate message dropped");
                None
            }
        }
    }

    /// Submits `event` until it is committed or refused; while the store fails, retries
    /// with backoff unless `stop` turns true.
    pub async fn submit(&self, event: NewEvent, stop: &mut watch::Receiver<bool>) -> Settled {
        let c = &self.counters;
        let mut backoff = RETRY_INITIAL;
        let mut failing = false;
        loop {
            match self.events.submit(event.clone(), Ingress::Frigate).await {
                Ok(_) => {
                    FrigateCounters::bump(&c.committed);
                    if failing {
                        tracing::info!(source = %event.source, "Frigate event committed after retries");
                    }
                    return Settled::Committed;
                }
                Err(SubmitError::Refused { field, reason }) => {
                    FrigateCounters::bump(&c.refused);
                    tracing::debug!(source = %event.source, field, %reason,
                        "Frigate event refused by the store; dropped");
                    return Settled::Refused;
                }
                Err(SubmitError::Closed) => return Settled::Unacked,
                Err(e) => {
                    FrigateCounters::bump(&c.store_errors);
                    if !failing {
                        failing = true;
                        tracing::warn!(source = %event.source, error = %e,
                            "cannot commit a Frigate event; keeping the message unacknowledged and retrying");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = crate::stopped(stop) => return Settled::Unacked,
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_alerts::model::{Lifecycle, Severity};

    fn source() -> FrigateSource {
        FrigateSource {
            id: 1,
            name: "yard".into(),
            prefix: "frigate".into(),
            base_url: Some("http://nvr.lan:5000".into()),
        }
    }

    async fn ingest(dir: &std::path::Path) -> FrigateIngest {
        let events = EventService::open(dir, time::UtcOffset::UTC).unwrap();
        FrigateIngest::new(events, Default::default())
    }

    const REVIEW: &str = r#"{"type":"new","before":{},"after":{"id":"1718000000.1-abc","camera":"gate",
        "start_time":1718000000.5,"severity":"alert","data":{"objects":["person"],"zones":["drive"],
        "detections":["1718000000.1-abc"]}}}"#;

    #[tokio::test]
    async fn review_becomes_a_committed_event() {
        let dir = tempfile::tempdir().unwrap();
        let ingest = ingest(dir.path()).await;
        let now = OffsetDateTime::now_utc();
        let ev = ingest
            .prepare(&source(), FrigateTopic::Reviews, REVIEW.as_bytes(), now)
            .unwrap();
        assert_eq!(ev.source, "yard");
        assert_eq!(ev.severity, Severity::Critical);
        assert_eq!(ev.zone.as_deref(), Some("drive"));
        assert_eq!(ev.lifecycle, Lifecycle::Active);
        let (_tx, mut stop) = watch::channel(false);
        assert_eq!(
            ingest.submit(ev.clone(), &mut stop).await,
            Settled::Committed
        );
        // The same message again folds into the stored event.
        assert_eq!(ingest.submit(ev, &mut stop).await, Settled::Committed);
        let s = ingest.counters().stats();
        assert_eq!((s.received, s.committed, s.dropped()), (1, 2, 0));
    }

    #[tokio::test]
    async fn bad_and_ignored_payloads_are_counted_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let ingest = ingest(dir.path()).await;
        let now = OffsetDateTime::now_utc();
        let fp = r#"{"type":"new","after":{"id":"1.2-x","camera":"gate","label":"person",
            "start_time":1718000000.0,"false_positive":true}}"#;
        let wrong_type = r#"{"type":"new","after":{"id":"1.2-x","camera":"gate","label":"person",
            "start_time":"yesterday"}}"#;
        let huge = vec![b' '; gatehouse_alerts::model::limits::FRIGATE_PAYLOAD + 1];
        for (topic, payload) in [
            (FrigateTopic::Events, fp.as_bytes()),
            (FrigateTopic::Events, b"not json".as_slice()),
            (FrigateTopic::Events, wrong_type.as_bytes()),
            (FrigateTopic::Reviews, huge.as_slice()),
        ] {
            assert!(ingest.prepare(&source(), topic, payload, now).is_none());
        }
        let s = ingest.counters().stats();
        assert_eq!(s.received, 4);
        assert_eq!(s.ignored, BTreeMap::from([("false_positive", 1)]));
        assert_eq!(
            s.invalid,
            BTreeMap::from([("field", 1), ("not_json", 1), ("too_large", 1)])
        );
        assert_eq!(s.dropped(), 4);
    }

    #[tokio::test]
    async fn closed_service_leaves_the_message_unacked() {
        let dir = tempfile::tempdir().unwrap();
        let ingest = ingest(dir.path()).await;
        let ev = ingest
            .prepare(
                &source(),
                FrigateTopic::Reviews,
                REVIEW.as_bytes(),
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        let events = ingest.events.clone();
        tokio::task::spawn_blocking(move || events.shutdown())
            .await
            .unwrap();
        let (_tx, mut stop) = watch::channel(false);
        let settled = ingest.submit(ev, &mut stop).await;
        assert_eq!(settled, Settled::Unacked);
        assert!(!settled.ack());
    }
}
