//! The event writer: one thread, one store connection, group commit.
//!
//! The thread takes one submission, then everything else already queued (up to
//! [`MAX_BATCH`]), plans each event with the alert configuration (rules, receivers,
//! silences, holidays; reloaded when `alert_config_revision` moved), gives each new event
//! a ULID, and ingests the batch in one transaction. Each sender hears its own outcome
//! only after that commit. If the commit fails, every sender in the batch hears the error
//! and nothing of the batch is stored (the store's transaction is all or nothing).

use super::{Accepted, EventsError, Ingress, SubmitError};
use gatehouse_alerts::model::{EventId, NewEvent};
use gatehouse_alerts::plan::{Plan, Planner};
use gatehouse_store::events::{IngestItem, IngestOutcome, PlannedDelivery};
use gatehouse_store::Store;
use rand_core::{OsRng, RngCore};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use time::{OffsetDateTime, UtcOffset};
use tokio::sync::{oneshot, watch};

/// Most events committed in one transaction.
pub const MAX_BATCH: usize = 256;

/// One event waiting for the writer.
pub(super) struct Submission {
    pub event: NewEvent,
    pub ingress: Ingress,
    pub reply: oneshot::Sender<Result<Accepted, SubmitError>>,
}

enum Msg {
    Submit(Box<Submission>),
    Close,
}

/// The sending side of the writer's queue.
pub(super) struct WriterHandle {
    tx: Sender<Msg>,
    closed: AtomicBool,
}

impl WriterHandle {
    pub fn send(&self, s: Submission) -> Result<(), SubmitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SubmitError::Closed);
        }
        self.tx
            .send(Msg::Submit(Box::new(s)))
            .map_err(|_| SubmitError::Closed)
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Close);
    }
}

/// What [`start`] gives the service: the queue's sending side, the commit counter, the
/// thread.
pub(super) type Started = (
    WriterHandle,
    Arc<watch::Sender<u64>>,
    std::thread::JoinHandle<()>,
);

pub(super) fn start(data_dir: &Path, utc_offset: UtcOffset) -> Result<Started, EventsError> {
    let store = Store::open(data_dir).map_err(|source| EventsError::Open {
        dir: data_dir.to_owned(),
        source,
    })?;
    let (tx, rx) = mpsc::channel();
    let committed_tx = Arc::new(watch::Sender::new(0u64));
    let committed = Arc::clone(&committed_tx);
    let thread = std::thread::Builder::new()
        .name("event-writer".into())
        .spawn(move || run(store, utc_offset, rx, &committed))
        .map_err(EventsError::Thread)?;
    Ok((
        WriterHandle {
            tx,
            closed: AtomicBool::new(false),
        },
        committed_tx,
        thread,
    ))
}

/// The alert configuration the writer plans with, and the revision it was read at.
struct PlanningState {
    planner: Planner,
    revision: Option<u64>,
    utc_offset: UtcOffset,
}

impl PlanningState {
    /// Reloads the planner if the store's alert configuration changed since it was read.
    /// On a read error the previous planner stays (and the next batch tries again).
    fn refresh(&mut self, store: &Store, now: OffsetDateTime) {
        let revision = match store.alert_config_revision() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the alert configuration revision");
                return;
            }
        };
        if self.revision == Some(revision) {
            return;
        }
        match store.load_alert_config(now) {
            Ok(c) => {
                self.planner = Planner::new(
                    c.rules,
                    c.receivers,
                    c.silences,
                    c.holidays,
                    self.utc_offset,
                );
                self.revision = Some(revision);
                tracing::debug!(revision, "alert configuration loaded");
            }
            Err(e) => tracing::warn!(error = %e, "loading the alert configuration"),
        }
    }
}

/// The store's form of a plan: one delivery per receiver, with the calling rule's group
/// window and repeat interval. A silenced event gets no deliveries.
fn planned_deliveries(plan: &Plan) -> Vec<PlannedDelivery> {
    if plan.silenced_by.is_some() {
        return Vec::new();
    }
    plan.deliveries
        .iter()
        .filter_map(|d| {
            let rule = plan.rule(d.rule)?;
            Some(PlannedDelivery {
                receiver: d.receiver,
                rule: d.rule,
                group_window: rule.group_window,
                repeat_every: rule.repeat_every,
            })
        })
        .collect()
}

fn accepted(outcome: IngestOutcome) -> Result<Accepted, SubmitError> {
    match outcome {
        IngestOutcome::New { id, seq, .. } => Ok(Accepted {
            id,
            seq,
            duplicate: false,
            outcome,
        }),
        IngestOutcome::Existing {
            id, seq, changed, ..
        } => Ok(Accepted {
            id,
            seq,
            duplicate: !changed,
            outcome,
        }),
        IngestOutcome::Refused { field, reason } => Err(SubmitError::Refused { field, reason }),
    }
}

fn run(store: Store, utc_offset: UtcOffset, rx: Receiver<Msg>, committed: &watch::Sender<u64>) {
    let mut planning = PlanningState {
        planner: Planner::new(Vec::new(), Vec::new(), Vec::new(), Vec::new(), utc_offset),
        revision: None,
        utc_offset,
    };
    let mut closing = false;
    while !closing {
        let Ok(first) = rx.recv() else { break };
        let mut batch = Vec::new();
        match first {
            Msg::Submit(s) => batch.push(*s),
            Msg::Close => closing = true,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Submit(s)) => batch.push(*s),
                Ok(Msg::Close) => closing = true,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let now = OffsetDateTime::now_utc();
        planning.refresh(&store, now);
        let items: Vec<IngestItem> = batch
            .iter()
            .map(|s| {
                let plan = planning.planner.plan(&s.event, now);
                let mut random = [0u8; 16];
                OsRng.fill_bytes(&mut random);
                IngestItem {
                    id: EventId::new(now, u128::from_le_bytes(random)),
                    event: s.event.clone(),
                    deliveries: planned_deliveries(&plan),
                    silenced_by: plan.silenced_by,
                }
            })
            .collect();
        match store.ingest_events(&items, now) {
            Ok(outcomes) => {
                let stored = outcomes.iter().any(|o| {
                    matches!(
                        o,
                        IngestOutcome::New { .. } | IngestOutcome::Existing { changed: true, .. }
                    )
                });
                if stored {
                    committed.send_modify(|n| *n = n.wrapping_add(1));
                }
                for (s, outcome) in batch.into_iter().zip(outcomes) {
                    tracing::debug!(ingress = s.ingress.as_str(), ?outcome, "event ingested");
                    let _ = s.reply.send(accepted(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "committing events failed");
                let msg = e.to_string();
                for s in batch {
                    let _ = s.reply.send(Err(SubmitError::Store(msg.clone())));
                }
            }
        }
    }
    // Whatever arrived after Close.
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Submit(s) = msg {
            let _ = s.reply.send(Err(SubmitError::Closed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::EventService;
    use super::*;
    use gatehouse_alerts::model::{Lifecycle, Severity, SourceKind};

    fn event(external: Option<&str>, severity: Severity) -> NewEvent {
        NewEvent {
            source: "nvr-yard".into(),
            source_kind: SourceKind::Nvr,
            kind: "intrusion".into(),
            severity,
            time: OffsetDateTime::now_utc(),
            camera: Some("front".into()),
            zone: Some("driveway".into()),
            device: None,
            message: None,
            snapshot_url: None,
            clip_url: None,
            external_id: external.map(str::to_owned),
            lifecycle: Lifecycle::Instant,
        }
    }

    #[tokio::test]
    async fn submit_commits_plans_and_folds_retransmissions() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventService::open(dir.path(), UtcOffset::UTC).unwrap();
        let mut committed = events.committed();
        let a = events
            .submit(event(Some("a-1"), Severity::Warning), Ingress::Webhook)
            .await
            .unwrap();
        assert!(!a.duplicate);
        assert!(
            matches!(a.outcome, IngestOutcome::New { deliveries: 1, .. }),
            "the default rule sends warning and above to the console: {:?}",
            a.outcome
        );
        assert!(committed.has_changed().unwrap());
        committed.mark_unchanged();
        let again = events
            .submit(event(Some("a-1"), Severity::Warning), Ingress::Webhook)
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.id, a.id);
        assert!(!committed.has_changed().unwrap());
        let info = events
            .submit(event(None, Severity::Info), Ingress::Webhook)
            .await
            .unwrap();
        assert!(matches!(
            info.outcome,
            IngestOutcome::New { deliveries: 0, .. }
        ));
        // Many at once: all committed, each with its own id.
        let many: Vec<_> = (0..300)
            .map(|i| {
                let events = events.clone();
                tokio::spawn(async move {
                    events
                        .submit(
                            event(Some(&format!("m-{i}")), Severity::Critical),
                            Ingress::Webhook,
                        )
                        .await
                })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        for t in many {
            ids.insert(t.await.unwrap().unwrap().id);
        }
        assert_eq!(ids.len(), 300);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.reconcile().unwrap().events, 302);
        events.shutdown();
        assert_eq!(
            events
                .submit(event(None, Severity::Info), Ingress::Webhook)
                .await
                .unwrap_err(),
            SubmitError::Closed
        );
    }

    #[tokio::test]
    async fn a_refused_event_says_which_field() {
        let dir = tempfile::tempdir().unwrap();
        let events = EventService::open(dir.path(), UtcOffset::UTC).unwrap();
        let mut bad = event(None, Severity::Info);
        bad.source = String::new();
        let e = events.submit(bad, Ingress::System).await.unwrap_err();
        assert!(
            matches!(
                e,
                SubmitError::Refused {
                    field: "source",
                    ..
                }
            ),
            "{e}"
        );
        events.shutdown();
    }
}
