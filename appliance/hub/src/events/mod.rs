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
//!
//! Around the writer:
//! - [`webhook`]: `POST /api/v1/events`, authenticated by the source's API key.
//! - [`delivery`]: one worker per enabled receiver (console aside) draining the outbox
//!   with retries, backoff and dead-lettering.
//! - [`repeat`]: enqueues the reminders of unacknowledged critical events.
//! - [`sse`]: `GET /api/v1/events/stream`, the console's live feed with resume.
//! - [`monitor`]: the hub's own events: started, crashed, disk full, clock, gates
//!   offline, repeated denies; and the tunnel's key for the webhook.
//! - [`metrics`]: the pipeline's counters and `GET /metrics`.
//!
//! [`routes`] are the HTTP side of all of them.

pub mod delivery;
pub mod frigate;
pub mod metrics;
pub mod monitor;
pub mod repeat;
pub mod sse;
pub mod webhook;
pub mod writer;

use crate::access::AccessService;
use crate::admin::AdminApi;
use gatehouse_alerts::model::{EventId, NewEvent};
use gatehouse_store::events::IngestOutcome;
use gatehouse_store::{Store, StoreError};
use metrics::{EventMetrics, InOutcome};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
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
    #[error("cannot set up alert delivery: {0}")]
    Sender(#[source] gatehouse_notify::SendError),
    #[error("starting the events pipeline failed: {0}")]
    Task(String),
}

impl SubmitError {
    /// A short stable label for counting (a metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            SubmitError::Refused { .. } => "refused",
            SubmitError::Store(_) => "store",
            SubmitError::Closed => "closed",
        }
    }
}

struct Inner {
    writer: writer::WriterHandle,
    committed: watch::Receiver<u64>,
    /// Shared with the writer thread; also bumped by [`EventService::notify_committed`].
    committed_tx: Arc<watch::Sender<u64>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    metrics: EventMetrics,
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
        let (writer, committed_tx, thread) = writer::start(data_dir, utc_offset)?;
        Ok(EventService {
            inner: Arc::new(Inner {
                writer,
                committed: committed_tx.subscribe(),
                committed_tx,
                thread: Mutex::new(Some(thread)),
                metrics: EventMetrics::default(),
            }),
        })
    }

    /// Stores `event` with the notifications the rules call for; returns once committed.
    /// Counted in [`EventService::metrics`] either way (`events_in` by outcome, or
    /// `events_rejected` by [`SubmitError::reason`]).
    pub async fn submit(&self, event: NewEvent, ingress: Ingress) -> Result<Accepted, SubmitError> {
        let source_kind = event.source_kind;
        let (tx, rx) = oneshot::channel();
        let sent = self.inner.writer.send(writer::Submission {
            event,
            ingress,
            reply: tx,
        });
        let result = match sent {
            Ok(()) => rx.await.unwrap_or(Err(SubmitError::Closed)),
            Err(e) => Err(e),
        };
        let m = &self.inner.metrics;
        match &result {
            Ok(a) => m.count_in(ingress, source_kind, InOutcome::of(a)),
            Err(e) => m.count_rejected(ingress, e.reason()),
        }
        result
    }

    /// Wakes whoever waits on [`EventService::committed`], for changes made outside the
    /// writer (the repeat scheduler's reminders).
    pub fn notify_committed(&self) {
        self.inner
            .committed_tx
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The pipeline's in-memory counters.
    pub fn metrics(&self) -> &EventMetrics {
        &self.inner.metrics
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

/// The HTTP side of the events pipeline: the webhook (`POST /api/v1/events`), the live
/// feed (`GET /api/v1/events/stream`, admin sessions) and `GET /metrics`. `stop` ends
/// live feeds when the hub stops, so the server can drain.
pub fn routes(
    events: &EventService,
    admin: AdminApi,
    access: AccessService,
    data_dir: &Path,
    stop: watch::Receiver<bool>,
) -> axum::Router {
    webhook::routes(events.clone(), StoreConn::new(data_dir))
        .merge(sse::routes(
            events.clone(),
            admin.clone(),
            StoreConn::new(data_dir),
            stop,
        ))
        .merge(metrics::routes(
            events.clone(),
            admin,
            access,
            StoreConn::new(data_dir),
        ))
}

/// Why a store call from async code failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreCallError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store task failed: {0}")]
    Task(String),
}

/// One store connection for async code: opened on first use, used only on blocking
/// threads ([`StoreConn::call`]), one call at a time. The lock is taken inside the
/// blocking task, never held across an `.await`.
#[derive(Clone)]
pub(crate) struct StoreConn {
    dir: Arc<PathBuf>,
    store: Arc<Mutex<Option<Store>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded store is only read or written inside a transaction, which a panic
    // rolls back: it is usable after one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StoreConn {
    pub(crate) fn new(dir: &Path) -> StoreConn {
        StoreConn {
            dir: Arc::new(dir.to_path_buf()),
            store: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `f` with the connection on a blocking thread (opening it first if needed).
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreCallError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&conn.store);
            let store = match guard.take() {
                Some(s) => s,
                None => Store::open(&conn.dir)?,
            };
            let r = f(&store);
            *guard = Some(store);
            Ok(r?)
        })
        .await
        .map_err(|e| StoreCallError::Task(e.to_string()))?
    }
}
