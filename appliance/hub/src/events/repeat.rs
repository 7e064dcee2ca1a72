//! The repeat scheduler: reminders of critical events until someone acknowledges them.
//!
//! Every [`TICK`] at most (sooner when [`Store::next_repeat_at`] says a reminder is due
//! earlier), it reads when the next reminder is due and, if that is now, asks the store
//! to enqueue the reminders due ([`Store::enqueue_due_repeats`]: one transaction;
//! acknowledged or ended events are dropped there; an idle hub writes nothing), then
//! wakes the delivery workers and live feeds through [`EventService::notify_committed`]. New schedules come from the event writer with their
//! first reminder one interval after receipt, so the tick is how soon they are noticed.
//!
//! [`Store::next_repeat_at`]: gatehouse_store::Store::next_repeat_at
//! [`Store::enqueue_due_repeats`]: gatehouse_store::Store::enqueue_due_repeats

use super::{EventService, StoreConn};
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest the scheduler sleeps.
pub const TICK: Duration = Duration::from_secs(1);
/// The shortest (a schedule due "now" is enqueued on the next pass).
const MIN_SLEEP: Duration = Duration::from_millis(10);

/// Starts the scheduler; it ends when `stop` is set.
pub fn spawn(data_dir: &Path, events: EventService, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(run(StoreConn::new(data_dir), events, stop))
}

async fn run(store: StoreConn, events: EventService, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            break;
        }
        let now = OffsetDateTime::now_utc();
        // Read first: the write transaction (which locks out other writers for a moment)
        // only when a reminder is due.
        let pass = store
            .call(move |s| {
                let due = s.next_repeat_at()?.is_some_and(|at| at <= now);
                let enqueued = if due { s.enqueue_due_repeats(now)? } else { 0 };
                Ok((enqueued, s.next_repeat_at()?))
            })
            .await;
        let sleep = match pass {
            Ok((enqueued, next)) => {
                if enqueued > 0 {
                    tracing::debug!(enqueued, "reminders enqueued");
                    events.notify_committed();
                }
                next.map_or(TICK, |at| {
                    let wait = (at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
                    Duration::try_from(wait)
                        .unwrap_or(TICK)
                        .clamp(MIN_SLEEP, TICK)
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "enqueueing reminders failed; trying again");
                TICK
            }
        };
        tokio::select! {
            _ = crate::stopped(&mut stop) => break,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}
