//! Counters of everything the gate transports refuse or drop, and a warning about them at
//! a bounded rate (at most one log line per [`LOG_INTERVAL_MS`]), so a flood of garbage
//! costs a few atomic increments, not a flood of log lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Least time between two warnings about dropped input.
pub const LOG_INTERVAL_MS: u64 = 1_000;

/// Why a request or frame was refused or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropKind {
    /// The gate id is not known (or cannot be addressed).
    UnknownGate,
    /// Wrong key or tag, or a frame whose access request names another gate.
    BadAuth,
    /// The peer's address is not in the gate's allow-list.
    IpRefused,
    /// A sequence number not above the highest accepted.
    Replayed,
    /// Bytes that do not parse (JSON, hex, frame, payload).
    Malformed,
    /// Bigger than accepted (HTTP body, frame length); TCP connections are closed.
    Oversize,
    /// A message type or version the hub does not handle.
    Unsupported,
    /// The access log could not make the decision durable; no answer was given.
    NotDurable,
}

/// Totals since the hub started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropStats {
    pub unknown_gate: u64,
    pub bad_auth: u64,
    pub ip_refused: u64,
    pub replayed: u64,
    pub malformed: u64,
    pub oversize: u64,
    pub unsupported: u64,
    pub not_durable: u64,
}

impl DropStats {
    pub fn total(&self) -> u64 {
        self.unknown_gate
            + self.bad_auth
            + self.ip_refused
            + self.replayed
            + self.malformed
            + self.oversize
            + self.unsupported
            + self.not_durable
    }
}

/// Shared, lock-free counters.
#[derive(Debug)]
pub struct DropCounters {
    counts: [AtomicU64; 8],
    started: Instant,
    /// Milliseconds since `started` of the last warning, plus one (0: never).
    last_log: AtomicU64,
}

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters {
            counts: Default::default(),
            started: Instant::now(),
            last_log: AtomicU64::new(0),
        }
    }
}

fn index(kind: DropKind) -> usize {
    match kind {
        DropKind::UnknownGate => 0,
        DropKind::BadAuth => 1,
        DropKind::IpRefused => 2,
        DropKind::Replayed => 3,
        DropKind::Malformed => 4,
        DropKind::Oversize => 5,
        DropKind::Unsupported => 6,
        DropKind::NotDurable => 7,
    }
}

impl DropCounters {
    /// Counts one refusal; logs a warning (with `transport` and `detail`, which must hold
    /// no secret and no raw card id) unless one was logged in the last second.
    pub fn count(&self, kind: DropKind, transport: &'static str, detail: &dyn std::fmt::Display) {
        if let Some(c) = self.counts.get(index(kind)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_log.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= LOG_INTERVAL_MS)
            && self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let s = self.stats();
            tracing::warn!(
                transport,
                kind = ?kind,
                %detail,
                total_dropped = s.total(),
                "refused gate input (further ones within 1 s are only counted)"
            );
        }
    }

    pub fn stats(&self) -> DropStats {
        let get = |k| {
            self.counts
                .get(index(k))
                .map_or(0, |c| c.load(Ordering::Relaxed))
        };
        DropStats {
            unknown_gate: get(DropKind::UnknownGate),
            bad_auth: get(DropKind::BadAuth),
            ip_refused: get(DropKind::IpRefused),
            replayed: get(DropKind::Replayed),
            malformed: get(DropKind::Malformed),
            oversize: get(DropKind::Oversize),
            unsupported: get(DropKind::Unsupported),
            not_durable: get(DropKind::NotDurable),
        }
    }
}
