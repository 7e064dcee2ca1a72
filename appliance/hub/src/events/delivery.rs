//! Alert delivery: one worker per enabled receiver (the console aside: its notifications
//! are delivered when committed), draining that receiver's part of the outbox.
//!
//! - The dispatcher ([`spawn`]) reads the receivers when the store's
//!   `alert_config_revision` moves (checked every [`CONFIG_POLL`]): it starts a worker for
//!   each new enabled receiver, hands a changed configuration to the running worker, and
//!   stops the worker of a receiver removed or disabled (after its attempts in flight).
//! - A worker takes its receiver's due deliveries in id order ([`Store::due_deliveries`],
//!   minus those it holds; fetched ahead, up to 8 x `parallel_per_receiver` per read, so
//!   one store read feeds many sends), sends up to `parallel_per_receiver` at once with
//!   [`gatehouse_notify::Sender`], and hands every finished attempt to its recorder. It
//!   holds back a notification while another of the same event is in flight, so a
//!   receiver hears `firing` before `resolved`. It sleeps until the earliest of: the next
//!   pending delivery's time ([`Store::next_due_at`]), a commit of the event writer
//!   ([`EventService::committed`]), a finished attempt, a configuration change, shutdown.
//! - The recorder writes the attempts that finished together in one transaction
//!   ([`Store::record_attempts`]): delivered, or failed with the next attempt's time from
//!   the [`RetryPolicy`] (exponential backoff with full jitter), or dead after
//!   `max_attempts`, which raises an "alert.delivery_dead" system event (never for a
//!   notification of such an event). If the store cannot record, it retries with backoff:
//!   an attempt that happened is logged once it can be.
//! - Every store call runs on a blocking thread with the worker's own connections; no
//!   lock is held across an `.await`.
//! - Crash-safety comes from the outbox: a delivery is pending until its success is
//!   recorded, so an attempt whose answer was lost is made again, with the same
//!   idempotency key.
//! - Logs name receivers and hosts, never a receiver's configuration (it holds SMTP
//!   passwords, ntfy tokens and secret webhook URLs); [`SendError`]'s text has none.
//!
//! [`Store::due_deliveries`]: gatehouse_store::Store::due_deliveries
//! [`Store::next_due_at`]: gatehouse_store::Store::next_due_at
//! [`Store::record_attempts`]: gatehouse_store::Store::record_attempts

use super::metrics::AttemptResult;
use super::{EventService, Ingress, StoreConn};
use gatehouse_alerts::model::{
    DeliveryId, DeliveryStatus, EventId, NewEvent, Notification, Receiver, ReceiverConfig,
    ReceiverId, DELIVERY_DEAD_KIND,
};
use gatehouse_alerts::RetryPolicy;
use gatehouse_notify::{SendError, Sender, SenderConfig, Sent};
use gatehouse_store::events::{AttemptOutcome, AttemptRecord};
use gatehouse_store::StoreError;
use rand_core::{OsRng, RngCore};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How often the dispatcher checks whether receivers changed.
pub const CONFIG_POLL: Duration = Duration::from_secs(1);
/// How long a stopping worker waits for its attempts in flight (at most; they end by
/// the request timeout anyway). What is cut off stays pending and is sent again later.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// The longest a worker sleeps without looking at the outbox (a safety net: commits and
/// due times wake it sooner).
const MAX_IDLE: Duration = Duration::from_secs(30);
/// After a failed store read, wait this long before the next.
const READ_RETRY: Duration = Duration::from_secs(1);
/// Due deliveries a worker fetches ahead (per receiver): `8 x parallel_per_receiver`
/// within these bounds, so one store read feeds many sends.
const PREFETCH_MIN: usize = 32;
const PREFETCH_MAX: usize = 256;
/// Most attempts recorded in one transaction.
const MAX_RECORD_BATCH: usize = 256;
/// The longest wait between tries to record attempts while the store fails.
const MAX_RECORD_RETRY: Duration = Duration::from_secs(30);

/// How deliveries are made: from `[hub.alerts]`.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub retry: RetryPolicy,
    /// Attempts in flight at once per receiver (at least 1).
    pub parallel: usize,
    pub sender: Sender,
}

impl DeliverySettings {
    /// The settings `[hub.alerts]` describes (retry delays, attempts, request timeout,
    /// parallelism).
    pub fn from_config(a: &gatehouse_config::Alerts) -> Result<DeliverySettings, SendError> {
        let sender = Sender::new(SenderConfig {
            request_timeout: Duration::from_millis(a.request_timeout_ms),
            ..SenderConfig::default()
        })?;
        Ok(DeliverySettings {
            retry: RetryPolicy {
                base: Duration::from_millis(a.retry_base_ms),
                max: Duration::from_millis(a.retry_max_ms),
                max_attempts: a.max_attempts,
            },
            parallel: usize::try_from(a.parallel_per_receiver).unwrap_or(1).max(1),
            sender,
        })
    }

    fn stop_grace(&self) -> Duration {
        (self.sender.config().request_timeout + Duration::from_millis(500)).min(STOP_GRACE)
    }
}

/// Starts the dispatcher (and through it the workers); it ends when `stop` is set, after
/// every worker has finished its attempts in flight (see [`STOP_GRACE`]) and recorded
/// them. Await it before [`EventService::shutdown`]: dead letters are submitted as events.
pub fn spawn(
    data_dir: &Path,
    events: EventService,
    settings: DeliverySettings,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(dispatch(
        data_dir.to_path_buf(),
        events,
        Arc::new(settings),
        stop,
    ))
}

/// Raises the "delivery dead" events a previous run recorded the deaths of but died
/// before storing (the event's external id makes raising one twice harmless).
async fn raise_missed_dead_events(store: &StoreConn, events: &EventService) {
    let missed = match store.call(|s| s.dead_deliveries_without_event(1024)).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "looking for dead deliveries without their event");
            return;
        }
    };
    let now = time::OffsetDateTime::now_utc();
    for d in missed {
        let dead = NewEvent::delivery_dead(
            d.receiver,
            &d.receiver_name,
            d.delivery,
            d.event,
            d.severity,
            &d.error,
            now,
        );
        match events.submit(dead, Ingress::System).await {
            Ok(_) => {
                tracing::info!(delivery = d.delivery, receiver = %d.receiver_name, "raised a delivery_dead event missed by the previous run")
            }
            Err(e) => {
                tracing::error!(delivery = d.delivery, error = %e, "could not raise the delivery_dead event")
            }
        }
    }
}

/// A running worker, as the dispatcher holds it.
struct Running {
    /// Dropping it stops the worker.
    receiver: watch::Sender<Receiver>,
    task: JoinHandle<()>,
}

async fn dispatch(
    data_dir: PathBuf,
    events: EventService,
    settings: Arc<DeliverySettings>,
    mut stop: watch::Receiver<bool>,
) {
    let store = StoreConn::new(&data_dir);
    raise_missed_dead_events(&store, &events).await;
    let mut workers: HashMap<ReceiverId, Running> = HashMap::new();
    let mut retired: Vec<JoinHandle<()>> = Vec::new();
    let mut revision: Option<u64> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        match store.call(|s| s.alert_config_revision()).await {
            Ok(r) if revision == Some(r) => {}
            Ok(r) => match store.call(|s| s.list_receivers()).await {
                Ok(list) => {
                    let wanted: HashMap<ReceiverId, Receiver> = list
                        .into_iter()
                        .filter(|r| r.enabled && !matches!(r.config, ReceiverConfig::Console))
                        .map(|r| (r.id, r))
                        .collect();
                    let gone: Vec<ReceiverId> = workers
                        .keys()
                        .filter(|id| !wanted.contains_key(id))
                        .copied()
                        .collect();
                    for id in gone {
                        if let Some(w) = workers.remove(&id) {
                            tracing::info!(
                                receiver = %w.receiver.borrow().name,
                                "receiver removed or disabled; its delivery worker stops"
                            );
                            // Dropping `w.receiver` tells the worker.
                            retired.push(w.task);
                        }
                    }
                    for (id, r) in wanted {
                        if let Some(w) = workers.get(&id) {
                            w.receiver.send_if_modified(|old| {
                                if *old == r {
                                    return false;
                                }
                                tracing::info!(receiver = %r.name, "receiver changed; new attempts use its new settings");
                                *old = r;
                                true
                            });
                            continue;
                        }
                        tracing::info!(receiver = %r.name, kind = r.config.kind(), "delivery worker started");
                        let (tx, rx) = watch::channel(r);
                        let worker = Worker {
                            id,
                            receiver: rx,
                            events: events.clone(),
                            settings: Arc::clone(&settings),
                            data_dir: data_dir.clone(),
                            stop: stop.clone(),
                        };
                        workers.insert(
                            id,
                            Running {
                                receiver: tx,
                                task: tokio::spawn(worker.run()),
                            },
                        );
                    }
                    revision = Some(r);
                }
                Err(e) => tracing::warn!(error = %e, "reading the receivers failed; trying again"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "reading the alert configuration revision failed; trying again")
            }
        }
        retired.retain(|t| !t.is_finished());
        tokio::select! {
            _ = crate::stopped(&mut stop) => break,
            _ = tokio::time::sleep(CONFIG_POLL) => {}
        }
    }
    // The workers see `stop` themselves and finish what is in flight.
    for (_, w) in workers {
        let _ = w.task.await;
    }
    for t in retired {
        let _ = t.await;
    }
}

/// One finished attempt, on its way to the recorder.
struct Completed {
    n: Notification,
    /// Attempts made before this one.
    attempts_before: u32,
    started_at: OffsetDateTime,
    latency: Duration,
    result: Result<Sent, SendError>,
}

struct Worker {
    id: ReceiverId,
    receiver: watch::Receiver<Receiver>,
    events: EventService,
    settings: Arc<DeliverySettings>,
    data_dir: PathBuf,
    stop: watch::Receiver<bool>,
}

/// A monotonic deadline for a wall-clock time (now if it is past).
fn deadline(at: OffsetDateTime) -> tokio::time::Instant {
    let wait = Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + wait.min(MAX_IDLE)
}

/// A worker's deliveries between the outbox and the recorder.
#[derive(Default)]
struct Pipeline {
    /// Fetched and due, not yet sent, in id order, with the attempts made so far.
    queue: VecDeque<(Notification, u32)>,
    sending: JoinSet<Completed>,
    /// Task -> its delivery and event, to free them when the task ends.
    tasks: HashMap<tokio::task::Id, (DeliveryId, EventId)>,
    /// Queued, in flight or being recorded: left out of fetches.
    busy: HashSet<DeliveryId>,
    /// Events with an attempt in flight, and how many.
    in_flight: HashMap<EventId, usize>,
}

impl Pipeline {
    /// Sends queued notifications until `parallel` are in flight. A notification waits
    /// while another of its event is in flight (a receiver hears `firing` first).
    fn start_sends(
        &mut self,
        parallel: usize,
        settings: &Arc<DeliverySettings>,
        config: &Receiver,
    ) {
        if self.queue.is_empty() || self.sending.len() >= parallel {
            return;
        }
        let config = Arc::new(config.config.clone());
        let mut kept = VecDeque::new();
        while let Some((n, before)) = self.queue.pop_front() {
            if self.sending.len() >= parallel || self.in_flight.contains_key(&n.event.id) {
                kept.push_back((n, before));
                continue;
            }
            let (delivery, event) = (n.delivery, n.event.id);
            let handle =
                self.sending
                    .spawn(send(Arc::clone(settings), Arc::clone(&config), n, before));
            self.tasks.insert(handle.id(), (delivery, event));
            *self.in_flight.entry(event).or_default() += 1;
        }
        self.queue = kept;
    }

    /// Passes a finished send to the recorder (or frees a delivery whose task failed).
    fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, Completed), tokio::task::JoinError>,
        to_record: &mpsc::UnboundedSender<Completed>,
    ) {
        let task = match &joined {
            Ok((task, _)) => *task,
            Err(e) => e.id(),
        };
        let Some((delivery, event)) = self.tasks.remove(&task) else {
            return;
        };
        if let Some(n) = self.in_flight.get_mut(&event) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&event);
            }
        }
        match joined {
            Ok((_, c)) => {
                if to_record.send(c).is_err() {
                    self.busy.remove(&delivery);
                }
            }
            Err(e) => {
                tracing::error!(delivery, error = %e, "a delivery attempt's task failed; it will be made again");
                self.busy.remove(&delivery);
            }
        }
    }
}

/// What the recorder tells its worker after recording a batch.
struct Recorded {
    deliveries: Vec<DeliveryId>,
    /// Some of them are pending again (retries due later).
    retry: bool,
}

impl Worker {
    async fn run(mut self) {
        let reads = StoreConn::new(&self.data_dir);
        let (to_record, records) = mpsc::unbounded_channel::<Completed>();
        let (done_tx, mut done) = mpsc::unbounded_channel::<Recorded>();
        let recorder = Recorder {
            id: self.id,
            receiver: self.receiver.clone(),
            events: self.events.clone(),
            settings: Arc::clone(&self.settings),
            store: StoreConn::new(&self.data_dir),
            stop: self.stop.clone(),
        };
        let recorder = tokio::spawn(recorder.run(records, done_tx));
        let mut p = Pipeline::default();
        let mut committed = self.events.committed();
        let mut commits_open = true;
        let parallel = self.settings.parallel;
        let prefetch = (parallel * 8).clamp(PREFETCH_MIN, PREFETCH_MAX);
        // The outbox may hold due deliveries not fetched yet.
        let mut dirty = true;
        // When to look again without being woken (the next known due time).
        let mut wake_at: Option<tokio::time::Instant> = None;
        loop {
            if *self.stop.borrow() {
                break;
            }
            if dirty && p.queue.len() < parallel {
                dirty = false;
                committed.mark_unchanged();
                let want = prefetch - p.queue.len();
                let exclude: Vec<DeliveryId> = p.busy.iter().copied().collect();
                let now = OffsetDateTime::now_utc();
                let id = self.id;
                let fetched = reads
                    .call(move |s| {
                        let due = s.due_deliveries(id, now, want, &exclude)?;
                        let ids: Vec<DeliveryId> = due.iter().map(|n| n.delivery).collect();
                        let attempts = s.delivery_attempts(&ids)?;
                        let next = if due.len() < want {
                            let mut all = exclude;
                            all.extend_from_slice(&ids);
                            s.next_due_at(id, &all)?
                        } else {
                            None
                        };
                        Ok((due, attempts, next))
                    })
                    .await;
                match fetched {
                    Ok((due, attempts, next)) => {
                        let full = due.len() == want;
                        let attempts: HashMap<DeliveryId, u32> = attempts.into_iter().collect();
                        for n in due {
                            if let Some(&before) = attempts.get(&n.delivery) {
                                p.busy.insert(n.delivery);
                                p.queue.push_back((n, before));
                            }
                        }
                        if full {
                            // More may be due: fetch again once the queue runs low.
                            dirty = true;
                            wake_at = None;
                        } else {
                            wake_at =
                                Some(next.map_or_else(
                                    || tokio::time::Instant::now() + MAX_IDLE,
                                    deadline,
                                ));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(receiver = %self.receiver.borrow().name, error = %e, "reading due deliveries failed; trying again");
                        wake_at = Some(tokio::time::Instant::now() + READ_RETRY);
                    }
                }
            }
            p.start_sends(parallel, &self.settings, &self.receiver.borrow());
            let timer = wake_at.filter(|_| !dirty);
            tokio::select! {
                biased;
                _ = crate::stopped(&mut self.stop) => break,
                Some(joined) = p.sending.join_next_with_id(), if !p.sending.is_empty() => {
                    let mut joined = Some(joined);
                    while let Some(j) = joined.take().or_else(|| p.sending.try_join_next_with_id()) {
                        p.finished(j, &to_record);
                    }
                }
                Some(r) = done.recv() => {
                    for d in r.deliveries {
                        p.busy.remove(&d);
                    }
                    // A retried delivery's next time is in the store: look again.
                    dirty |= r.retry;
                }
                changed = self.receiver.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                changed = committed.changed(), if commits_open && !dirty => {
                    match changed {
                        Ok(()) => dirty = true,
                        Err(_) => commits_open = false,
                    }
                }
                _ = tokio::time::sleep_until(timer.unwrap_or_else(tokio::time::Instant::now)), if timer.is_some() => {
                    dirty = true;
                }
            }
        }
        // Let the attempts in flight end (their requests time out anyway), record them,
        // then let the recorder finish. Queued ones stay pending for the next start.
        let grace = self.settings.stop_grace();
        let _ = tokio::time::timeout(grace, async {
            while let Some(j) = p.sending.join_next_with_id().await {
                p.finished(j, &to_record);
            }
        })
        .await;
        if !p.sending.is_empty() {
            tracing::info!(
                receiver = %self.receiver.borrow().name,
                cut_off = p.sending.len(),
                "stopping: attempts still in flight are abandoned and will be made again"
            );
        }
        p.sending.abort_all();
        drop(to_record);
        let _ = recorder.await;
    }
}

/// One attempt.
async fn send(
    settings: Arc<DeliverySettings>,
    config: Arc<ReceiverConfig>,
    n: Notification,
    attempts_before: u32,
) -> Completed {
    let started_at = OffsetDateTime::now_utc();
    let t0 = Instant::now();
    let result = settings.sender.send(&config, &n).await;
    let latency = match &result {
        Ok(s) => s.latency,
        Err(_) => t0.elapsed(),
    };
    Completed {
        n,
        attempts_before,
        started_at,
        latency,
        result,
    }
}

/// Writes a worker's finished attempts to the store, batched.
struct Recorder {
    id: ReceiverId,
    receiver: watch::Receiver<Receiver>,
    events: EventService,
    settings: Arc<DeliverySettings>,
    store: StoreConn,
    stop: watch::Receiver<bool>,
}

impl Recorder {
    async fn run(
        mut self,
        mut records: mpsc::UnboundedReceiver<Completed>,
        done: mpsc::UnboundedSender<Recorded>,
    ) {
        while let Some(first) = records.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_RECORD_BATCH {
                match records.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let deliveries = batch.iter().map(|c| c.n.delivery).collect();
            let retry = self.record(batch).await;
            // The worker may already be gone (stopping): then nobody needs to know.
            let _ = done.send(Recorded { deliveries, retry });
        }
    }

    fn attempt_record(&self, c: &Completed, now: OffsetDateTime) -> AttemptRecord {
        let outcome = match &c.result {
            Ok(_) => AttemptOutcome::Delivered,
            Err(e) => AttemptOutcome::Failed {
                error: e.to_string(),
                next_attempt_at: self.settings.retry.next(
                    c.attempts_before.saturating_add(1),
                    now,
                    OsRng.next_u64(),
                ),
            },
        };
        AttemptRecord {
            started_at: c.started_at,
            latency: c.latency,
            http_status: match &c.result {
                Ok(s) => s.status,
                Err(e) => e.http_status(),
            },
            outcome,
        }
    }

    /// Records a batch; returns whether some of it is to be retried.
    async fn record(&mut self, batch: Vec<Completed>) -> bool {
        let now = OffsetDateTime::now_utc();
        let records: Arc<Vec<(DeliveryId, AttemptRecord)>> = Arc::new(
            batch
                .iter()
                .map(|c| (c.n.delivery, self.attempt_record(c, now)))
                .collect(),
        );
        let mut wait = Duration::from_millis(250);
        let results = loop {
            let r = Arc::clone(&records);
            match self.store.call(move |s| s.record_attempts(&r)).await {
                Ok(results) => break results,
                Err(e) => {
                    let name = self.receiver.borrow().name.clone();
                    if *self.stop.borrow() {
                        tracing::error!(receiver = %name, error = %e, attempts = records.len(), "stopping with delivery attempts the store could not record; they stay pending and will be made again");
                        return true;
                    }
                    tracing::error!(receiver = %name, error = %e, attempts = records.len(), "recording delivery attempts failed; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = crate::stopped(&mut self.stop) => {}
                    }
                    wait = (wait * 2).min(MAX_RECORD_RETRY);
                }
            }
        };
        let name = self.receiver.borrow().name.clone();
        let retry = results
            .iter()
            .any(|r| matches!(r, Ok(DeliveryStatus::Pending) | Err(_)));
        for ((c, (_, record)), result) in batch.iter().zip(records.iter()).zip(results) {
            self.after(&name, c, record, result, now).await;
        }
        retry
    }

    /// Counts and logs one recorded attempt; raises the dead letter's event.
    async fn after(
        &self,
        name: &str,
        c: &Completed,
        record: &AttemptRecord,
        result: Result<DeliveryStatus, StoreError>,
        now: OffsetDateTime,
    ) {
        let metrics = self.events.metrics();
        let attempt = c.attempts_before.saturating_add(1);
        let error = match &c.result {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        match result {
            Ok(DeliveryStatus::Delivered) => {
                metrics.count_attempt(name, AttemptResult::Delivered, c.latency);
                tracing::debug!(receiver = %name, delivery = c.n.delivery, event = %c.n.event.id, attempt, "delivered");
            }
            Ok(DeliveryStatus::Pending) => {
                metrics.count_attempt(name, AttemptResult::Failed, c.latency);
                let retry_at = match &record.outcome {
                    AttemptOutcome::Failed {
                        next_attempt_at: Some(t),
                        ..
                    } => Some(*t),
                    _ => None,
                };
                tracing::info!(receiver = %name, delivery = c.n.delivery, event = %c.n.event.id, attempt, %error, retry_at = ?retry_at, "delivery attempt failed; will retry");
            }
            Ok(DeliveryStatus::Dead) => {
                metrics.count_attempt(name, AttemptResult::Dead, c.latency);
                tracing::warn!(receiver = %name, delivery = c.n.delivery, event = %c.n.event.id, attempt, %error, "delivery given up after its last attempt");
                if c.n.event.new.kind == DELIVERY_DEAD_KIND {
                    return;
                }
                let dead = NewEvent::delivery_dead(
                    self.id,
                    name,
                    c.n.delivery,
                    c.n.event.id,
                    c.n.event.new.severity,
                    &error,
                    now,
                );
                if let Err(e) = self.events.submit(dead, Ingress::System).await {
                    tracing::error!(receiver = %name, delivery = c.n.delivery, error = %e, "could not raise the delivery_dead event");
                }
            }
            Err(e) => {
                tracing::warn!(receiver = %name, delivery = c.n.delivery, error = %e, "delivery attempt not recorded");
            }
        }
    }
}
