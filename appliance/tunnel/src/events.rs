//! The tunnel's events for the hub: peers connecting and disconnecting, and bursts of
//! failed handshakes, posted to the hub's event webhook as the reserved source `tunnel`.
//!
//! The tunnel is its own process and does not open the hub's database. At start the hub
//! writes an API key for the source `tunnel` to [`KEY_FILE`] in the data directory
//! (0640: the tunnel runs as another user of the hub's group;
//! `gatehouse_config::TUNNEL_EVENTS_KEY_FILE`); the tunnel reads it and posts each event
//! as JSON to `http://<hub.http_listen>/api/v1/events` (an unspecified address means the
//! loopback one).
//!
//! | kind | severity | when |
//! |---|---|---|
//! | [`PEER_CONNECTED`] `tunnel.peer_connected` | info | a handshake completed for a peer that had none in the last [`REJECT_AFTER_TIME`] |
//! | [`PEER_DISCONNECTED`] `tunnel.peer_disconnected` | info | a connected peer has had no handshake for [`REJECT_AFTER_TIME`] (or was removed) |
//! | [`HANDSHAKE_FAILURES`] `tunnel.handshake_failures` | warning | more than the threshold of handshake initiations failed within a [`FAILURE_WINDOW`] |
//!
//! [`REJECT_AFTER_TIME`] is WireGuard's (the paper, section 6.1: no session is used after
//! 180 s without a new handshake), so "connected" means "has a session it may use".
//! A failed initiation is one the device could not answer: not addressed to this key
//! (bad MAC), from an unknown or expired peer, or undecryptable
//! ([`Counters::handshake_failures`](crate::device::Counters)).
//!
//! Promises:
//! - [`TunnelWatch`] and [`Outbox`] are sans-IO (the time and the peers' state are passed
//!   in), tested with a fake clock.
//! - Each event has an id (`connected:<key>:<handshake ms>`, ...) sent as the webhook's
//!   `id`, so a retry the hub already stored folds into the same event.
//! - The queue is bounded ([`QUEUE_LEN`]): an event that finds it full is dropped,
//!   logged and counted ([`ReporterStats::dropped`]). Events wait in memory only: those
//!   queued when the tunnel stops are lost.
//! - Delivery retries with exponential backoff ([`RETRY_BASE`] to [`RETRY_MAX`]) while the
//!   hub is unreachable, answers 5xx, or refuses the key (401: the key file is read again,
//!   the hub may have written a new one; 403: an admin disabled the source). A 400 or 413
//!   (the hub will never take that body) drops the event and counts it as refused.

use crate::device::{Device, PeerStatus};
use crate::keys::Key;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub const PEER_CONNECTED: &str = "tunnel.peer_connected";
pub const PEER_DISCONNECTED: &str = "tunnel.peer_disconnected";
pub const HANDSHAKE_FAILURES: &str = "tunnel.handshake_failures";

/// The file in the data directory holding the `tunnel` source's API key (written by the
/// hub; the name is defined once, in gatehouse-config).
pub use gatehouse_config::TUNNEL_EVENTS_KEY_FILE as KEY_FILE;
/// WireGuard's Reject-After-Time (the paper, section 6.1).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// The window handshake failures are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// More failed initiations than this in a window raise an event.
pub const FAILURE_THRESHOLD: u64 = 20;
/// How often the peers are looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Events waiting for the hub, at most.
pub const QUEUE_LEN: usize = 256;
pub const RETRY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long one post may take (connect, write, answer).
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// One event for the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelEvent {
    pub kind: &'static str,
    /// `info` or `warning`.
    pub severity: &'static str,
    /// The webhook's `id` (the event's external id).
    pub id: String,
    pub time: SystemTime,
    /// The peer (its name, or its public key).
    pub device: Option<String>,
    pub message: String,
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl TunnelEvent {
    /// The webhook body (see the hub's `gatehouse_alerts::ingest`).
    pub fn to_json(&self) -> String {
        let mut body = format!(
            "{{\"kind\":{},\"severity\":{},\"time\":{},\"id\":{},\"message\":{}",
            json_str(self.kind),
            json_str(self.severity),
            json_str(&rfc3339(self.time)),
            json_str(&self.id),
            json_str(&self.message)
        );
        if let Some(d) = &self.device {
            body.push_str(&format!(",\"device\":{}", json_str(d)));
        }
        body.push('}');
        body
    }
}

// ---- detection ---------------------------------------------------------------------

/// What the watch needs of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSeen {
    pub key: Key,
    pub name: Option<String>,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
}

impl From<PeerStatus> for PeerSeen {
    fn from(p: PeerStatus) -> PeerSeen {
        PeerSeen {
            key: p.config.public_key,
            name: p.config.name,
            endpoint: p.endpoint,
            last_handshake: p.last_handshake,
        }
    }
}

/// The device's peers and its failed-handshake count, as the watch wants them.
pub fn sample(device: &Device) -> (Vec<PeerSeen>, u64) {
    let peers = device.peers().into_iter().map(PeerSeen::from).collect();
    let failures = device.counters.handshake_failures.load(Ordering::Relaxed);
    (peers, failures)
}

/// A peer's label in events: its name (if it fits an event's device field), else its
/// public key.
fn label(key: &Key, name: Option<&str>) -> String {
    name.filter(|n| !n.is_empty() && n.len() <= 64 && !n.chars().any(char::is_control))
        .map_or_else(|| key.to_base64(), str::to_owned)
}

/// Turns samples of the device into events.
#[derive(Debug)]
pub struct TunnelWatch {
    threshold: u64,
    window: Duration,
    /// Connected peers: their label and the handshake that connected them.
    connected: HashMap<Key, (String, SystemTime)>,
    /// Start of the failure window and the failure count then.
    failures_since: Option<(SystemTime, u64)>,
}

impl TunnelWatch {
    pub fn new(threshold: u64, window: Duration) -> TunnelWatch {
        TunnelWatch {
            threshold,
            window,
            connected: HashMap::new(),
            failures_since: None,
        }
    }

    /// One sample: the peers, the device's failed-handshake total, the time.
    pub fn observe(
        &mut self,
        peers: &[PeerSeen],
        failures: u64,
        now: SystemTime,
    ) -> Vec<TunnelEvent> {
        let mut out = Vec::new();
        let fresh = |h: &SystemTime| {
            now.duration_since(*h)
                .map_or(true, |age| age < REJECT_AFTER_TIME)
        };
        for p in peers {
            let live = p.last_handshake.filter(fresh);
            match (live, self.connected.get(&p.key)) {
                (Some(h), None) => {
                    let who = label(&p.key, p.name.as_deref());
                    let from = p
                        .endpoint
                        .map_or_else(String::new, |e| format!(" from {e}"));
                    out.push(TunnelEvent {
                        kind: PEER_CONNECTED,
                        severity: "info",
                        id: format!("connected:{}:{}", p.key.to_base64(), unix_ms(h)),
                        time: h,
                        device: Some(who.clone()),
                        message: format!("peer {who} connected{from}"),
                    });
                    self.connected.insert(p.key, (who, h));
                }
                (None, Some(_)) => {
                    if let Some((who, since)) = self.connected.remove(&p.key) {
                        out.push(disconnected(&p.key, who, since, p.last_handshake, now));
                    }
                }
                _ => {}
            }
        }
        let gone: Vec<Key> = self
            .connected
            .keys()
            .filter(|k| !peers.iter().any(|p| p.key == **k))
            .copied()
            .collect();
        for key in gone {
            if let Some((who, since)) = self.connected.remove(&key) {
                out.push(disconnected(&key, who, since, None, now));
            }
        }
        match self.failures_since {
            None => self.failures_since = Some((now, failures)),
            Some((start, base)) if now.duration_since(start).unwrap_or_default() >= self.window => {
                let n = failures.saturating_sub(base);
                if n > self.threshold {
                    out.push(TunnelEvent {
                        kind: HANDSHAKE_FAILURES,
                        severity: "warning",
                        id: format!("handshake_failures:{}", unix_ms(start)),
                        time: now,
                        device: None,
                        message: format!(
                            "{n} handshake initiations failed within {} s (more than {}): \
                             peers with a wrong or revoked key, or someone probing the \
                             tunnel's port",
                            self.window.as_secs(),
                            self.threshold
                        ),
                    });
                }
                self.failures_since = Some((now, failures));
            }
            Some(_) => {}
        }
        out
    }
}

fn disconnected(
    key: &Key,
    who: String,
    since: SystemTime,
    last: Option<SystemTime>,
    now: SystemTime,
) -> TunnelEvent {
    let why = if last.is_some() {
        format!("no handshake for {} s", REJECT_AFTER_TIME.as_secs())
    } else {
        "removed from the tunnel".to_owned()
    };
    TunnelEvent {
        kind: PEER_DISCONNECTED,
        severity: "info",
        id: format!("disconnected:{}:{}", key.to_base64(), unix_ms(since)),
        time: now,
        device: Some(who.clone()),
        message: format!("peer {who} disconnected ({why})"),
    }
}

// ---- delivery ------------------------------------------------------------------------

/// Events waiting for the hub, with the retry schedule of the first one.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<TunnelEvent>,
    capacity: usize,
    failures: u32,
    next_at: Option<Instant>,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            failures: 0,
            next_at: None,
        }
    }

    /// Queues `event`; `false` (and nothing queued) when the queue is full.
    pub fn push(&mut self, event: TunnelEvent) -> bool {
        if self.queue.len() >= self.capacity {
            return false;
        }
        self.queue.push_back(event);
        true
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The event to post now, if one is due.
    pub fn due(&self, now: Instant) -> Option<&TunnelEvent> {
        if self.next_at.is_some_and(|t| now < t) {
            return None;
        }
        self.queue.front()
    }

    /// The first event is done with (delivered, or refused for good).
    pub fn done(&mut self) {
        self.queue.pop_front();
        self.failures = 0;
        self.next_at = None;
    }

    /// Posting the first event failed: try again after the backoff (doubling from
    /// [`RETRY_BASE`] up to [`RETRY_MAX`]).
    pub fn retry(&mut self, now: Instant) -> Duration {
        let delay = RETRY_BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(RETRY_MAX);
        self.failures = self.failures.saturating_add(1);
        self.next_at = Some(now + delay);
        delay
    }
}

/// What the hub's answer means for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostOutcome {
    /// 200 or 201: stored (201) or already stored (200).
    Accepted,
    /// 400, 413 or another 4xx: the hub will never take this body.
    Refused,
    /// 401: the key is not (or no longer) the source's; read the key file again.
    BadKey,
    /// Anything else (403 disabled source, 5xx): try again later.
    Retry,
}

impl PostOutcome {
    pub fn of(status: u16) -> PostOutcome {
        match status {
            200 | 201 => PostOutcome::Accepted,
            401 => PostOutcome::BadKey,
            403 | 408 | 429 => PostOutcome::Retry,
            400..=499 => PostOutcome::Refused,
            _ => PostOutcome::Retry,
        }
    }
}

/// Posts `body` to `http://<addr>/api/v1/events` with `key`; the answer's status.
pub fn post(addr: SocketAddr, key: &str, body: &str, timeout: Duration) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let request = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    s.take(64 * 1024).read_to_end(&mut answer)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let line = answer.split(|b| *b == b'\n').next().ok_or_else(bad)?;
    let line = std::str::from_utf8(line).map_err(|_| bad())?;
    match line.split(' ').collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubTarget {
    pub addr: SocketAddr,
    pub key_file: PathBuf,
}

impl HubTarget {
    /// The hub of `config`: `hub.http_listen` (an unspecified address becomes loopback)
    /// and the key file in `general.data_dir`. `None` if the port is 0 (chosen by the OS
    /// when the hub starts: unknown here).
    pub fn from_config(config: &gatehouse_config::Config) -> Option<HubTarget> {
        let mut addr = config.hub.http_listen;
        if addr.port() == 0 {
            return None;
        }
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        Some(HubTarget {
            addr,
            key_file: config.general.data_dir.join(KEY_FILE),
        })
    }
}

/// Counters of the reporter since it started.
#[derive(Debug, Default)]
pub struct ReporterStats {
    /// Accepted by the hub.
    pub sent: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Refused by the hub for good (400, 413).
    pub refused: AtomicU64,
    /// Failed posts (each retried).
    pub failed_posts: AtomicU64,
}

/// How the reporter watches and posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReporterSettings {
    pub watch_every: Duration,
    pub failure_threshold: u64,
    pub failure_window: Duration,
    pub queue_len: usize,
}

impl Default for ReporterSettings {
    fn default() -> Self {
        ReporterSettings {
            watch_every: WATCH_EVERY,
            failure_threshold: FAILURE_THRESHOLD,
            failure_window: FAILURE_WINDOW,
            queue_len: QUEUE_LEN,
        }
    }
}

/// The reporter's thread: watches the device and posts to the hub until stopped.
pub struct EventReporter {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<ReporterStats>,
}

impl EventReporter {
    /// Starts watching what `sample` returns (see [`sample`]) every
    /// `settings.watch_every` and posting the events to `target`.
    pub fn start(
        target: HubTarget,
        settings: ReporterSettings,
        sample: impl FnMut() -> (Vec<PeerSeen>, u64) + Send + 'static,
    ) -> std::io::Result<EventReporter> {
        let (stop, stopped) = mpsc::channel();
        let stats = Arc::new(ReporterStats::default());
        let thread = std::thread::Builder::new()
            .name("tunnel-events".into())
            .spawn({
                let stats = Arc::clone(&stats);
                move || run(target, settings, sample, &stopped, &stats)
            })?;
        Ok(EventReporter {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> &ReporterStats {
        &self.stats
    }

    /// Stops the thread and waits for it (an event being posted finishes first).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EventReporter {
    fn drop(&mut self) {
        self.halt();
    }
}

fn read_key(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let key = text.trim();
    (!key.is_empty()).then(|| key.to_owned())
}

fn run(
    target: HubTarget,
    settings: ReporterSettings,
    mut sample: impl FnMut() -> (Vec<PeerSeen>, u64),
    stopped: &mpsc::Receiver<()>,
    stats: &ReporterStats,
) {
    let mut watch = TunnelWatch::new(settings.failure_threshold, settings.failure_window);
    let mut outbox = Outbox::new(settings.queue_len);
    let mut key: Option<String> = None;
    let mut failing = false;
    // Until stopped (or the service is gone).
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(settings.watch_every) {
        let (peers, failures) = sample();
        for event in watch.observe(&peers, failures, SystemTime::now()) {
            tracing::info!(kind = event.kind, "{}", event.message);
            if !outbox.push(event) {
                let n = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    dropped = n,
                    queued = outbox.len(),
                    "tunnel event dropped: the hub has not taken events for a while"
                );
            }
        }
        while let Some(event) = outbox.due(Instant::now()) {
            if key.is_none() {
                key = read_key(&target.key_file);
            }
            let result = match &key {
                Some(k) => post(target.addr, k, &event.to_json(), POST_TIMEOUT),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no key in {} yet (the hub writes it when it starts)",
                        target.key_file.display()
                    ),
                )),
            };
            let outcome = match result {
                Ok(status) => (PostOutcome::of(status), format!("HTTP {status}")),
                Err(e) => (PostOutcome::Retry, e.to_string()),
            };
            match outcome {
                (PostOutcome::Accepted, _) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    outbox.done();
                    failing = false;
                }
                (PostOutcome::Refused, why) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(kind = event.kind, answer = %why, "the hub refused a tunnel event; dropped");
                    outbox.done();
                }
                (other, why) => {
                    if other == PostOutcome::BadKey {
                        key = None;
                    }
                    stats.failed_posts.fetch_add(1, Ordering::Relaxed);
                    let delay = outbox.retry(Instant::now());
                    if !failing {
                        tracing::warn!(hub = %target.addr, error = %why, retry_in = ?delay, queued = outbox.len(), "cannot post tunnel events to the hub; retrying");
                    }
                    failing = true;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use std::sync::Mutex;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    fn peer(key: Key, name: Option<&str>, handshake: Option<u64>) -> PeerSeen {
        PeerSeen {
            key,
            name: name.map(str::to_owned),
            endpoint: Some("198.51.100.7:40000".parse().unwrap()),
            last_handshake: handshake.map(t),
        }
    }

    #[test]
    fn peers_connect_and_disconnect_by_reject_after_time() {
        let alice = Key::generate_private().public();
        let bob = Key::generate_private().public();
        let mut w = TunnelWatch::new(20, FAILURE_WINDOW);
        assert!(w
            .observe(&[peer(alice, Some("alice"), None)], 0, t(0))
            .is_empty());
        let ev = w.observe(&[peer(alice, Some("alice"), Some(5))], 0, t(6));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, PEER_CONNECTED);
        assert_eq!(ev[0].device.as_deref(), Some("alice"));
        assert_eq!(ev[0].time, t(5));
        assert!(
            ev[0].message.contains("from 198.51.100.7:40000"),
            "{}",
            ev[0].message
        );
        let id = ev[0].id.clone();
        assert!(id.starts_with("connected:") && id.contains(&alice.to_base64()));
        // Rekeys (new handshakes) while connected: nothing.
        assert!(w
            .observe(&[peer(alice, Some("alice"), Some(125))], 0, t(130))
            .is_empty());
        // 179 s after the last handshake: still connected; 180 s: gone.
        assert!(w
            .observe(&[peer(alice, Some("alice"), Some(125))], 0, t(304))
            .is_empty());
        let ev = w.observe(&[peer(alice, Some("alice"), Some(125))], 0, t(305));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, PEER_DISCONNECTED);
        assert!(ev[0].message.contains("no handshake for 180 s"), "{ev:?}");
        // Back: a new connection, with its own id.
        let ev = w.observe(&[peer(alice, Some("alice"), Some(400))], 0, t(401));
        assert_eq!(ev[0].kind, PEER_CONNECTED);
        assert_ne!(ev[0].id, id);
        // A peer without a name is named by its key; a removed peer disconnects.
        let ev = w.observe(
            &[
                peer(alice, Some("alice"), Some(400)),
                peer(bob, None, Some(401)),
            ],
            0,
            t(402),
        );
        assert_eq!(ev[0].device.as_deref(), Some(bob.to_base64().as_str()));
        let ev = w.observe(&[peer(bob, None, Some(401))], 0, t(403));
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].kind, ev[0].device.as_deref()),
            (PEER_DISCONNECTED, Some("alice"))
        );
        assert!(ev[0].message.contains("removed"), "{ev:?}");
    }

    #[test]
    fn handshake_failures_above_the_threshold_per_window() {
        let mut w = TunnelWatch::new(20, Duration::from_secs(60));
        assert!(w.observe(&[], 100, t(0)).is_empty(), "the window starts");
        assert!(w.observe(&[], 130, t(59)).is_empty(), "not before its end");
        let ev = w.observe(&[], 130, t(60));
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].kind, ev[0].severity),
            (HANDSHAKE_FAILURES, "warning")
        );
        assert!(
            ev[0].message.starts_with("30 handshake"),
            "{}",
            ev[0].message
        );
        // The next window: exactly the threshold is not above it.
        assert!(w.observe(&[], 150, t(120)).is_empty());
        assert!(w.observe(&[], 171, t(180)).len() == 1);
    }

    #[test]
    fn the_outbox_is_bounded_and_backs_off() {
        let ev = |n: u32| TunnelEvent {
            kind: PEER_CONNECTED,
            severity: "info",
            id: format!("e{n}"),
            time: t(0),
            device: None,
            message: String::new(),
        };
        let mut o = Outbox::new(2);
        assert!(o.push(ev(1)) && o.push(ev(2)));
        assert!(!o.push(ev(3)), "full: the new one is dropped");
        let t0 = Instant::now();
        assert_eq!(o.due(t0).unwrap().id, "e1");
        assert_eq!(o.retry(t0), Duration::from_secs(1));
        assert!(o.due(t0).is_none());
        assert_eq!(o.due(t0 + Duration::from_secs(1)).unwrap().id, "e1");
        assert_eq!(o.retry(t0), Duration::from_secs(2));
        for _ in 0..10 {
            o.retry(t0);
        }
        assert_eq!(o.retry(t0), RETRY_MAX);
        o.done();
        assert_eq!(o.due(t0).unwrap().id, "e2", "the next one at once");
        assert_eq!(o.retry(t0), RETRY_BASE, "backoff starts over");
    }

    #[test]
    fn statuses_and_bodies() {
        assert_eq!(PostOutcome::of(201), PostOutcome::Accepted);
        assert_eq!(PostOutcome::of(200), PostOutcome::Accepted);
        assert_eq!(PostOutcome::of(401), PostOutcome::BadKey);
        assert_eq!(PostOutcome::of(403), PostOutcome::Retry);
        assert_eq!(PostOutcome::of(400), PostOutcome::Refused);
        assert_eq!(PostOutcome::of(413), PostOutcome::Refused);
        assert_eq!(PostOutcome::of(503), PostOutcome::Retry);
        let e = TunnelEvent {
            kind: PEER_CONNECTED,
            severity: "info",
            id: "connected:k+/=:1".into(),
            time: t(0),
            device: Some("a \"quoted\" name".into()),
            message: "line\nbreak \\ and \u{1}".into(),
        };
        assert_eq!(
            e.to_json(),
            "{\"kind\":\"tunnel.peer_connected\",\"severity\":\"info\",\
             \"time\":\"2027-01-15T08:00:00Z\",\"id\":\"connected:k+/=:1\",\
             \"message\":\"line\\nbreak \\\\ and \\u0001\",\"device\":\"a \\\"quoted\\\" name\"}"
        );
    }

    #[test]
    fn the_target_follows_the_config() {
        let mut c = gatehouse_config::Config::default();
        c.hub.http_listen = "0.0.0.0:8080".parse().unwrap();
        let target = HubTarget::from_config(&c).unwrap();
        assert_eq!(target.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(target.key_file, c.general.data_dir.join(KEY_FILE));
        c.hub.http_listen = "[::]:8080".parse().unwrap();
        assert_eq!(
            HubTarget::from_config(&c).unwrap().addr,
            "[::1]:8080".parse().unwrap()
        );
        c.hub.http_listen = "127.0.0.1:0".parse().unwrap();
        assert_eq!(HubTarget::from_config(&c), None);
    }

    /// A stand-in for the hub's webhook: answers each request with the next status of
    /// `statuses` (then 201) and records the requests.
    struct FakeHub {
        addr: SocketAddr,
        requests: Arc<Mutex<Vec<String>>>,
    }

    fn fake_hub(statuses: Vec<u16>) -> FakeHub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then the body by its Content-Length.
                let request = loop {
                    let n = conn.read(&mut chunk).unwrap();
                    if n == 0 {
                        break String::from_utf8_lossy(&buf).to_string();
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if body.len() >= len {
                            break text;
                        }
                    }
                };
                seen.lock().unwrap().push(request);
                let status = statuses.next().unwrap_or(201);
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        FakeHub { addr, requests }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_real_handshake_reaches_the_hub_after_retries_and_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join(KEY_FILE);
        // The hub is down once, then refuses the old key once.
        let hub = fake_hub(vec![503, 401]);
        std::fs::write(&key_file, "old-key\n").unwrap();
        let p = Arc::new(pair(Arc::new(crate::device::SystemClock), None));
        let watched = p.clone();
        let reporter = EventReporter::start(
            HubTarget {
                addr: hub.addr,
                key_file: key_file.clone(),
            },
            ReporterSettings {
                watch_every: Duration::from_millis(10),
                ..ReporterSettings::default()
            },
            move || sample(&watched.gw),
        )
        .unwrap();
        // A handshake between the two devices: the gateway's peer connects.
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; crate::device::BUFFER_SIZE];
        let ping = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        pump(&p, &mut g, &mut c, p.client_addr);
        wait_for("the first attempt", || {
            !hub.requests.lock().unwrap().is_empty()
        });
        std::fs::write(&key_file, "new-key\n").unwrap();
        wait_for("delivery", || {
            reporter.stats().sent.load(Ordering::Relaxed) == 1
        });
        let requests = hub.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 3, "503, 401, then accepted: {requests:?}");
        assert!(requests[1].contains("Authorization: Bearer old-key\r\n"));
        let last = &requests[2];
        assert!(
            last.starts_with("POST /api/v1/events HTTP/1.1\r\n"),
            "{last}"
        );
        assert!(last.contains("Authorization: Bearer new-key\r\n"), "{last}");
        assert!(
            last.contains("\"kind\":\"tunnel.peer_connected\""),
            "{last}"
        );
        assert!(
            last.contains(&format!("connected:{}", p.client_key.public().to_base64())),
            "{last}"
        );
        assert_eq!(reporter.stats().failed_posts.load(Ordering::Relaxed), 2);
        reporter.stop();
    }

    #[test]
    fn failed_handshakes_are_counted_by_the_device() {
        let p = pair(Arc::new(crate::device::SystemClock), None);
        let (mut g, mut c) = (Capture::default(), Capture::default());
        let mut buf = vec![0u8; crate::device::BUFFER_SIZE];
        let ping = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 1, &[8, 0, 0, 0]);
        p.client.handle_packet(&ping, &mut buf, &mut c);
        let (_, init) = c.sent.front().cloned().unwrap();
        // The client's initiation, but the gateway no longer knows the client.
        p.gw.remove_peer(&p.client_key.public());
        p.gw.handle_datagram(p.client_addr, &init, &mut buf, &mut g);
        // An initiation to another key (its MAC does not verify), and garbage that is no
        // initiation at all.
        let stranger = pair(Arc::new(crate::device::SystemClock), None);
        let mut sc = Capture::default();
        stranger.client.handle_packet(&ping, &mut buf, &mut sc);
        let (_, other) = sc.sent.front().cloned().unwrap();
        p.gw.handle_datagram(p.client_addr, &other, &mut buf, &mut g);
        p.gw.handle_datagram(p.client_addr, &[9; 64], &mut buf, &mut g);
        assert_eq!(p.gw.counters.handshake_failures.load(Ordering::Relaxed), 2);
        assert!(g.sent.is_empty());
    }
}
