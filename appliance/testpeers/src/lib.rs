//! Peers for tests of the alert path, all on 127.0.0.1 and in-process:
//!
//! - [`WebhookReceiver`]: an HTTP server that records every request, fails or stalls a
//!   seeded-random share of them, and keeps an idempotency-key ledger (what a receiver
//!   that honours `Idempotency-Key` would have shown, and how many duplicates it saw).
//! - [`SmtpSink`]: a minimal SMTP server (RFC 5321, no TLS, no AUTH) that stores what it
//!   is sent.
//! - [`SseClient`]: a Server-Sent Events client (the WHATWG `text/event-stream` format)
//!   with `Last-Event-ID` resume; [`SseParser`] is its sans-IO parser.
//! - [`free_port`]: a port that was free a moment ago.
//!
//! Waiting is bounded everywhere: the `wait_*` and `next` calls take a timeout and say
//! what they had when it passed ([`TimedOut`]).

mod smtp;
mod sse;
mod webhook;

pub use smtp::{SinkMessage, SmtpSink};
pub use sse::{SseClient, SseError, SseMessage, SseParser};
pub use webhook::{Counts, Faults, RecordedRequest, WebhookReceiver};

use std::sync::{Mutex, MutexGuard, PoisonError};

/// A wait that ended before what it waited for happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out waiting for {wanted} {what}; got {got}")]
pub struct TimedOut {
    pub what: &'static str,
    pub wanted: usize,
    pub got: usize,
}

/// A TCP port on 127.0.0.1 that was free when this returned (another process may take
/// it before the caller binds it; prefer binding port 0 where the code allows).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Locks a mutex, carrying on after a panic elsewhere (the data are records, still valid).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
