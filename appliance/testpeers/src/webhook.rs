//! A webhook receiver with fault injection and an idempotency-key ledger.
//!
//! Every request to any path is recorded. Each request draws two numbers from a
//! generator seeded with [`Faults::seed`] (so a run can be repeated): one decides whether
//! it stalls for [`Faults::stall`] before being handled, the other whether it is answered
//! 500. A stalled request is handled after the stall even if the client has given up
//! (its answer is then lost): the case an idempotency key exists for.
//!
//! The ledger is what a receiver that honours the key would show: a key is *accepted*
//! the first time it is answered 2xx; a later request with an accepted key is answered 200
//! again and counted as a duplicate, not accepted twice. The key is read from the
//! `Idempotency-Key` header, else `X-Idempotency-Key` (ntfy), else the JSON body's
//! `idempotency_key`.

use crate::{lock, TimedOut};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What share of requests fail or stall. `Faults::default()` is none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// Share of requests answered 500 (0.0 to 1.0).
    pub fail_ratio: f64,
    /// Share of requests held for `stall` before being handled (0.0 to 1.0).
    pub stall_ratio: f64,
    pub stall: Duration,
    /// Seeds the generator that picks which requests fail or stall.
    pub seed: u64,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// When it arrived.
    pub received_at: SystemTime,
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body, if it is JSON.
    pub json: Option<serde_json::Value>,
    pub idempotency_key: Option<String>,
    pub stalled: bool,
    /// What it was answered.
    pub status: u16,
}

impl RecordedRequest {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The receiver's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Requests handled (answered, or handled after a stall whose client left).
    pub requests: u64,
    /// Distinct idempotency keys answered 2xx.
    pub accepted: u64,
    /// Requests with an already accepted key, answered 200 again.
    pub duplicates: u64,
    /// Requests answered 500 by fault injection.
    pub failed: u64,
    /// Requests held for the stall time.
    pub stalled: u64,
    /// Requests answered 2xx that carried no idempotency key.
    pub without_key: u64,
}

/// A running webhook receiver on 127.0.0.1; stops when dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepted_rx: watch::Receiver<u64>,
    server: JoinHandle<()>,
}

struct Shared {
    faults: Mutex<(Faults, Rng)>,
    requests: Mutex<Vec<RecordedRequest>>,
    ledger: Mutex<Ledger>,
    accepted_tx: watch::Sender<u64>,
}

#[derive(Default)]
struct Ledger {
    accepted: HashSet<String>,
    accepted_order: Vec<String>,
    duplicate_keys: Vec<String>,
    counts: Counts,
}

impl WebhookReceiver {
    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start(faults: Faults) -> std::io::Result<WebhookReceiver> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (accepted_tx, accepted_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            faults: Mutex::new((faults, Rng(faults.seed))),
            requests: Mutex::new(Vec::new()),
            ledger: Mutex::new(Ledger::default()),
            accepted_tx,
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            // Ends only with an accept error; the handle is aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookReceiver {
            addr,
            shared,
            accepted_rx,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/hook` (any path is served).
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Changes the faults from the next request on (the generator is reseeded).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = (faults, Rng(faults.seed));
    }

    /// Every request handled so far, in the order they were handled.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Keys answered 2xx, each once, in the order they were first accepted.
    pub fn accepted_keys(&self) -> Vec<String> {
        lock(&self.shared.ledger).accepted_order.clone()
    }

    /// How many requests came with a key already accepted.
    pub fn duplicates_seen(&self) -> u64 {
        lock(&self.shared.ledger).counts.duplicates
    }

    /// The keys of those duplicate requests (a key once per duplicate request).
    pub fn duplicate_keys(&self) -> Vec<String> {
        lock(&self.shared.ledger).duplicate_keys.clone()
    }

    pub fn counts(&self) -> Counts {
        lock(&self.shared.ledger).counts
    }

    /// Waits until at least `n` distinct keys are accepted; returns them all.
    pub async fn wait_for_accepted(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<String>, TimedOut> {
        let mut rx = self.accepted_rx.clone();
        let wanted = n as u64;
        let reached = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= wanted)).await,
            Ok(Ok(_))
        );
        if reached {
            Ok(self.accepted_keys())
        } else {
            Err(TimedOut {
                what: "accepted keys",
                wanted: n,
                got: self.accepted_keys().len(),
            })
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let received_at = SystemTime::now();
    let (stall, fail) = {
        let mut f = lock(&shared.faults);
        let (faults, rng) = &mut *f;
        // Always two draws per request, so the pattern depends only on the seed and order.
        let stall = rng.next_f64() < faults.stall_ratio;
        let fail = rng.next_f64() < faults.fail_ratio;
        (stall.then_some(faults.stall), fail)
    };
    let json = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let header_value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let idempotency_key = header_value("idempotency-key")
        .or_else(|| header_value("x-idempotency-key"))
        .or_else(|| {
            json.as_ref()
                .and_then(|j| j.get("idempotency_key"))
                .and_then(|k| k.as_str())
                .map(str::to_string)
        });
    let request = RecordedRequest {
        received_at,
        method: method.to_string(),
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        json,
        idempotency_key,
        stalled: stall.is_some(),
        status: 0,
    };
    // Handled in a task of its own so that a client giving up mid-stall does not cancel it.
    let task = tokio::spawn(async move {
        if let Some(d) = stall {
            tokio::time::sleep(d).await;
        }
        shared.answer(request, fail)
    });
    task.await
        .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, "receiver task failed"))
}

impl Shared {
    fn answer(&self, mut request: RecordedRequest, fail: bool) -> (StatusCode, &'static str) {
        let answer = {
            let mut l = lock(&self.ledger);
            l.counts.requests += 1;
            if request.stalled {
                l.counts.stalled += 1;
            }
            if fail {
                l.counts.failed += 1;
                (StatusCode::INTERNAL_SERVER_ERROR, "injected failure")
            } else {
                match &request.idempotency_key {
                    Some(key) if l.accepted.contains(key) => {
                        l.counts.duplicates += 1;
                        l.duplicate_keys.push(key.clone());
                        (StatusCode::OK, "duplicate")
                    }
                    Some(key) => {
                        l.accepted.insert(key.clone());
                        l.accepted_order.push(key.clone());
                        l.counts.accepted += 1;
                        self.accepted_tx.send_replace(l.counts.accepted);
                        (StatusCode::OK, "accepted")
                    }
                    None => {
                        l.counts.without_key += 1;
                        (StatusCode::OK, "accepted without a key")
                    }
                }
            }
        };
        request.status = answer.0.as_u16();
        lock(&self.requests).push(request);
        answer
    }
}

/// splitmix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): small, seedable, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_roughly_uniform() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        let xs: Vec<f64> = (0..10_000).map(|_| a.next_f64()).collect();
        let ys: Vec<f64> = (0..10_000).map(|_| b.next_f64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let below = xs.iter().filter(|x| **x < 0.2).count();
        assert!((1_800..2_200).contains(&below), "{below}");
    }
}
