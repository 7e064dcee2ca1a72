//! Commands the hub starts towards gates (today one: the remote door open, the gate
//! link's `RemoteOpen`), and how each reaches its gate on whichever transport the gate
//! uses.
//!
//! The gate link is otherwise request/answer, started by the gate. A command is
//! therefore either pushed on a link the gate holds open, or handed over in answer to the
//! gate's next frame:
//! - **TCP**: a connection on which a gate's frame was accepted is registered as that
//!   gate's push link until it closes ([`GateCommands::tcp_link`]); a command goes into
//!   the connection's queue of answers and is written in order with them.
//! - **MQTT**: a gate heard over MQTT within [`MQTT_LIVE`] (two and a half of gate-core's
//!   default 60-second heartbeat periods) is taken to be subscribed to its response topic,
//!   where the command is published (QoS 0, like every answer).
//! - **HTTP**, and a TCP or MQTT gate not live right now: the command is queued, and the
//!   gate's next accepted frame on any transport carries it back: after the frame's own
//!   answer, in the same TCP write, MQTT publishes, or HTTP reply body (a heartbeat's
//!   reply, empty until now, then holds the command's frame).
//!
//! A command not handed over within the expiry ([`EXPIRY`], 30 s) is dropped: a door
//! must not open minutes after an admin asked. "Delivered" means handed to the gate's
//! link: written to its TCP connection, published on its response topic, or put in the
//! reply to its HTTP request; the gate answers nothing, and reports the door opening as
//! usual. A write that fails puts the command back in the queue until it expires.
//!
//! The command number (the frame's `seq`) is the request's id in the store's
//! `remote_opens` table: strictly increasing and never reused, so the gate's replay check
//! on command numbers accepts each command once. Commands for one gate leave in the order
//! they were asked for.
//!
//! [`GateCommands::request`] returns a [`Ticket`]; [`GateCommands::settle`] waits for its
//! [`Outcome`] (delivered or expired). Every step takes the lock briefly and never waits.

use crate::access::GateAuth;
use crate::gate_frames::Answer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a command waits to be handed to its gate.
pub const EXPIRY: Duration = Duration::from_secs(30);

/// A gate heard over MQTT this recently is taken to be listening on its response topic.
pub const MQTT_LIVE: Duration = Duration::from_secs(150);

/// One remote door open on its way to a gate.
#[derive(Debug)]
pub struct Command {
    /// The request's id, the frame's `seq`.
    pub id: u32,
    pub relay_ms: u16,
    deadline: Instant,
    done: oneshot::Sender<OffsetDateTime>,
}

impl Command {
    /// Whether it is too late to hand it over.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// It was handed to the gate's link.
    pub fn delivered(self) {
        let _ = self.done.send(OffsetDateTime::now_utc());
    }
}

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handed to the gate's link at that time.
    Delivered(OffsetDateTime),
    /// Not handed over within the expiry.
    Expired,
}

/// A command's receipt, from [`GateCommands::request`].
#[derive(Debug)]
pub struct Ticket {
    pub gate: u32,
    pub id: u32,
    /// Pushed at once on a live link (TCP connection, or an MQTT gate heard lately);
    /// otherwise queued for the gate's next frame.
    pub pushed: bool,
    deadline: Instant,
    outcome: oneshot::Receiver<OffsetDateTime>,
}

/// A TCP connection's queue of answers, held weakly (the connection's writer ends when
/// the connection's own sender is dropped).
#[derive(Debug)]
struct TcpLink {
    id: u64,
    tx: mpsc::WeakSender<Answer>,
}

#[derive(Debug, Default)]
struct State {
    queued: HashMap<u32, Vec<Command>>,
    tcp: HashMap<u32, Vec<TcpLink>>,
    mqtt: HashMap<u32, (Instant, mpsc::WeakUnboundedSender<Answer>)>,
    next_link: u64,
}

/// The commands on their way to gates, and the links they can be pushed on (one per hub,
/// held by the access service so that every transport and the admin API reach it).
#[derive(Debug)]
pub struct GateCommands {
    state: Mutex<State>,
    expiry: Mutex<Duration>,
}

impl Default for GateCommands {
    fn default() -> Self {
        GateCommands {
            state: Mutex::default(),
            expiry: Mutex::new(EXPIRY),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Queues and link tables: any state a panic leaves is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a TCP link from the table when the connection ends.
#[derive(Debug)]
pub struct TcpLinkGuard {
    commands: Arc<GateCommands>,
    gate: u32,
    id: u64,
}

impl Drop for TcpLinkGuard {
    fn drop(&mut self) {
        let mut st = lock(&self.commands.state);
        if let Some(links) = st.tcp.get_mut(&self.gate) {
            links.retain(|l| l.id != self.id);
            if links.is_empty() {
                st.tcp.remove(&self.gate);
            }
        }
    }
}

impl GateCommands {
    /// How long commands wait to be handed over ([`EXPIRY`] unless changed).
    pub fn expiry(&self) -> Duration {
        *lock(&self.expiry)
    }

    /// Changes the expiry of commands requested from now on (tests).
    pub fn set_expiry(&self, expiry: Duration) {
        *lock(&self.expiry) = expiry;
    }

    /// Sends remote open `id` to `gate`, pulsing its relay for `relay_ms`: pushed on a
    /// live link if the gate has one, else queued for its next frame.
    pub fn request(&self, gate: Arc<GateAuth>, id: u32, relay_ms: u16) -> Ticket {
        let deadline = Instant::now() + self.expiry();
        let (done, outcome) = oneshot::channel();
        let gate_id = gate.id;
        let command = Command {
            id,
            relay_ms,
            deadline,
            done,
        };
        let pushed = self.push(gate, command);
        Ticket {
            gate: gate_id,
            id,
            pushed,
            deadline,
            outcome,
        }
    }

    /// Pushes on a live link, newest TCP connection first, then MQTT; queues otherwise.
    /// `true` if pushed.
    fn push(&self, gate: Arc<GateAuth>, command: Command) -> bool {
        let mut st = lock(&self.state);
        let gate_id = gate.id;
        let mut answer = Answer::Commands {
            gate,
            commands: vec![command],
        };
        // Commands already queued go first, in order.
        if let (Some(queued), Answer::Commands { commands, .. }) =
            (st.queued.remove(&gate_id), &mut answer)
        {
            let mut all = queued;
            all.append(commands);
            *commands = all;
        }
        if let Some(links) = st.tcp.get(&gate_id) {
            for link in links.iter().rev() {
                let Some(tx) = link.tx.upgrade() else {
                    continue;
                };
                match tx.try_send(answer) {
                    Ok(()) => return true,
                    Err(
                        mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a),
                    ) => {
                        answer = a;
                    }
                }
            }
        }
        if let Some((heard, tx)) = st.mqtt.get(&gate_id) {
            if heard.elapsed() < MQTT_LIVE {
                if let Some(tx) = tx.upgrade() {
                    match tx.send(answer) {
                        Ok(()) => return true,
                        Err(mpsc::error::SendError(a)) => answer = a,
                    }
                }
            }
        }
        if let Answer::Commands { commands, .. } = answer {
            st.queued.insert(gate_id, commands);
        }
        false
    }

    /// The commands queued for `gate`, taken for the answer to its frame just accepted
    /// (expired ones are dropped: their tickets settle as expired).
    pub fn due(&self, gate: &Arc<GateAuth>) -> Option<Answer> {
        let mut st = lock(&self.state);
        if st.queued.is_empty() {
            return None;
        }
        let mut commands = st.queued.remove(&gate.id)?;
        commands.retain(|c| !c.expired());
        (!commands.is_empty()).then(|| Answer::Commands {
            gate: Arc::clone(gate),
            commands,
        })
    }

    /// A command whose frame could not be written goes back to the front of its gate's
    /// queue (dropped if it has expired meanwhile).
    pub fn requeue(&self, gate: u32, command: Command) {
        if command.expired() {
            return;
        }
        let mut st = lock(&self.state);
        let queue = st.queued.entry(gate).or_default();
        let at = queue.partition_point(|c| c.id < command.id);
        queue.insert(at, command);
    }

    /// Withdraws queued command `id` of `gate`; `false` if it is not queued (handed over,
    /// or being written right now).
    pub fn cancel(&self, gate: u32, id: u32) -> bool {
        let mut st = lock(&self.state);
        let Some(queue) = st.queued.get_mut(&gate) else {
            return false;
        };
        let before = queue.len();
        queue.retain(|c| c.id != id);
        let removed = queue.len() != before;
        if queue.is_empty() {
            st.queued.remove(&gate);
        }
        removed
    }

    /// Whether command `id` of `gate` is still waiting in the queue or being written.
    /// (Only queued ones are known here; one being written is not.)
    pub fn is_queued(&self, gate: u32, id: u32) -> bool {
        lock(&self.state)
            .queued
            .get(&gate)
            .is_some_and(|q| q.iter().any(|c| c.id == id))
    }

    /// Registers a TCP connection's answer queue as `gate`'s push link, until the guard
    /// is dropped (when the connection ends).
    pub fn tcp_link(self: &Arc<Self>, gate: u32, tx: &mpsc::Sender<Answer>) -> TcpLinkGuard {
        let mut st = lock(&self.state);
        st.next_link += 1;
        let id = st.next_link;
        st.tcp.entry(gate).or_default().push(TcpLink {
            id,
            tx: tx.downgrade(),
        });
        TcpLinkGuard {
            commands: Arc::clone(self),
            gate,
            id,
        }
    }

    /// `gate` was just heard over MQTT; `tx` is the MQTT transport's answer queue.
    pub fn heard_over_mqtt(&self, gate: u32, tx: &mpsc::UnboundedSender<Answer>) {
        lock(&self.state)
            .mqtt
            .insert(gate, (Instant::now(), tx.downgrade()));
    }

    /// Waits until the command is handed over or has expired.
    pub async fn settle(&self, ticket: Ticket) -> Outcome {
        let Ticket {
            gate,
            id,
            deadline,
            mut outcome,
            ..
        } = ticket;
        match tokio::time::timeout_at(deadline, &mut outcome).await {
            Ok(Ok(at)) => Outcome::Delivered(at),
            Ok(Err(_)) => Outcome::Expired,
            Err(_) if self.cancel(gate, id) => Outcome::Expired,
            // Being written right now: its writer settles it (a failed write past the
            // deadline drops it).
            Err(_) => match outcome.await {
                Ok(at) => Outcome::Delivered(at),
                Err(_) => Outcome::Expired,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn gate(id: u32) -> Arc<GateAuth> {
        Arc::new(GateAuth::for_tests(id))
    }

    fn ids(answer: Option<Answer>) -> Vec<u32> {
        match answer {
            Some(Answer::Commands { commands, .. }) => commands.iter().map(|c| c.id).collect(),
            Some(other) => panic!("{other:?}"),
            None => Vec::new(),
        }
    }

    #[tokio::test]
    async fn queued_commands_go_with_the_next_frame_in_order() {
        let c = GateCommands::default();
        let g = gate(3);
        let t1 = c.request(Arc::clone(&g), 10, 3000);
        let t2 = c.request(Arc::clone(&g), 11, 3000);
        assert!(!t1.pushed && !t2.pushed);
        assert!(c.is_queued(3, 10));
        assert_eq!(ids(c.due(&gate(4))), Vec::<u32>::new());
        let Some(Answer::Commands { commands, .. }) = c.due(&g) else {
            panic!("nothing due");
        };
        assert_eq!(commands.iter().map(|c| c.id).collect::<Vec<_>>(), [10, 11]);
        assert_eq!(ids(c.due(&g)), Vec::<u32>::new(), "taken once");
        let mut it = commands.into_iter();
        it.next().unwrap().delivered();
        // A failed write puts it back.
        c.requeue(3, it.next().unwrap());
        assert!(matches!(c.settle(t1).await, Outcome::Delivered(_)));
        assert_eq!(ids(c.due(&g)), [11]);
    }

    #[tokio::test]
    async fn a_command_nobody_takes_expires_and_is_withdrawn() {
        let c = GateCommands::default();
        c.set_expiry(Duration::from_millis(1));
        let t = c.request(gate(3), 10, 3000);
        assert_eq!(c.settle(t).await, Outcome::Expired);
        assert!(!c.is_queued(3, 10));
        // Expired ones are never handed over.
        let _t = c.request(gate(3), 11, 3000);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(ids(c.due(&gate(3))), Vec::<u32>::new());
    }

    #[tokio::test]
    async fn a_live_tcp_link_gets_the_command_pushed_until_it_closes() {
        let c = Arc::new(GateCommands::default());
        let (tx, mut rx) = mpsc::channel(4);
        let link = c.tcp_link(3, &tx);
        let t = c.request(gate(3), 10, 2500);
        assert!(t.pushed);
        match rx.try_recv().unwrap() {
            Answer::Commands { commands, .. } => {
                assert_eq!((commands[0].id, commands[0].relay_ms), (10, 2500));
                commands.into_iter().for_each(Command::delivered);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.settle(t).await, Outcome::Delivered(_)));
        drop(link);
        assert!(!c.request(gate(3), 11, 2500).pushed);
        // A link whose connection is gone is skipped.
        let _link = c.tcp_link(3, &tx);
        drop((tx, rx));
        let t = c.request(gate(3), 12, 2500);
        assert!(!t.pushed);
        assert_eq!(ids(c.due(&gate(3))), [11, 12]);
    }

    #[tokio::test]
    async fn an_mqtt_gate_heard_lately_gets_it_published() {
        let c = GateCommands::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        assert!(!c.request(gate(5), 1, 100).pushed, "never heard");
        c.heard_over_mqtt(5, &tx);
        assert!(c.request(gate(5), 2, 100).pushed);
        // The queued one goes first.
        match rx.try_recv().unwrap() {
            Answer::Commands { commands, .. } => {
                assert_eq!(commands.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2]);
            }
            other => panic!("{other:?}"),
        }
    }
}
