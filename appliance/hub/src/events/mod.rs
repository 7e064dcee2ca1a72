//! The hub's events pipeline: every event from every way in is stored with the
//! notifications the alert rules call for, in one transaction (the outbox), and only then
//! acknowledged to whoever sent it.
//!
//! - [`EventService::submit`] is the one way in: the webhook, Frigate over MQTT, gates,
//!   sensors, the tunnel and the hub's own monitors all call it. It returns once the event
//!   and its pending deliveries are committed ("accepted = committed"), or with the error
//!   to give the sender (who retries; the source's own id makes a retry fold into the same
//!   event).
//! - The writer thread ([`writer`]) owns one store connection, plans every event with
//!   the alert rules, receivers and silences (reloaded when the store's
//!   `alert_config_revision` moves), and commits everything queued in one transaction:
//!   one fsync per batch, each sender waiting only for its own commit.
//! - [`EventService::committed`] is bumped after every commit, so delivery workers and
//!   live feeds wake without polling.

pub mod writer;

use gatehouse_alerts::model::{EventId, NewEvent};
use gatehouse_store::events::IngestOutcome;
use std::path::Path;
use std::sync::{Arc, Mutex};
use time::UtcOffset;
use tokio::sync::{oneshot, watch};

/// Which way an event came in (a label of the metrics; the writer does not care).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ingress {
    Webhook,
    Frigate,
    Gate,
    Sensor,
    Tunnel,
    System,
}

impl Ingress {
    pub const ALL: [Ingress; 6] = [
        Ingress::Webhook,
        Ingress::Frigate,
        Ingress::Gate,
        Ingress::Sensor,
        Ingress::Tunnel,
        Ingress::System,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::Webhook => "webhook",
            Ingress::Frigate => "frigate",
            Ingress::Gate => "gate",
            Ingress::Sensor => "sensor",
            Ingress::Tunnel => "tunnel",
            Ingress::System => "system",
        }
    }
}

/// What the store made of a submitted event, once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The stored event's id (for a retransmission or lifecycle update: the first one's).
    pub id: EventId,
    pub seq: i64,
    /// A retransmission that changed nothing.
    pub duplicate: bool,
    pub outcome: IngestOutcome,
}

/// Why an event was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The event breaks a limit the store enforces (the parsers check first; this is the
    /// backstop). Not worth retrying.
    #[error("{field}: {reason}")]
    Refused { field: &'static str, reason: String },
    /// The database could not commit it (disk full, I/O error). Retry later.
    #[error("the event store could not commit the event ({0}); retry later")]
    Store(String),
    /// The hub is shutting down. Retry later.
    #[error("the hub is shutting down; retry later")]
    Closed,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    #[error("cannot open the event store in {dir}: {source}")]
    Open {
        dir: std::path::PathBuf,
        #[source]
        source: gatehouse_store::StoreError,
    },
    #[error("cannot start the event writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

struct Inner {
    writer: writer::WriterHandle,
    committed: watch::Receiver<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The events pipeline's handle (cheap to clone).
#[derive(Clone)]
pub struct EventService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventService").finish_non_exhaustive()
    }
}

impl EventService {
    /// Opens the writer's store connection in `data_dir` and starts the writer thread.
    /// `utc_offset` is the site's: rules' active schedules are local times.
    pub fn open(data_dir: &Path, utc_offset: UtcOffset) -> Result<EventService, EventsError> {
        let (writer, committed, thread) = writer::start(data_dir, utc_offset)?;
        Ok(EventService {
            inner: Arc::new(Inner {
                writer,
                committed,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Stores `event` with the notifications the rules call for; returns once committed.
    pub async fn submit(&self, event: NewEvent, ingress: Ingress) -> Result<Accepted, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.inner.writer.send(writer::Submission {
            event,
            ingress,
            reply: tx,
        })?;
        rx.await.map_err(|_| SubmitError::Closed)?
    }

    /// A counter bumped after every commit that stored or changed something: wait on
    /// `changed()` to learn that new deliveries may be due.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.inner.committed.clone()
    }

    /// Stops the writer after what is queued is written, and waits for it. Later
    /// submissions get [`SubmitError::Closed`]. Blocking.
    pub fn shutdown(&self) {
        self.inner.writer.close();
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}
