//! What a run measured: [`GateReport`] per gate, summed into [`Summary`], printed as one
//! line of `key=value` fields (stable names, for people and for tests), and optionally
//! as one JSON object ([`Summary::json`], for scripts such as `make bench-access`).
//!
//! Every decision is also kept as a [`Sample`] (when its card was read, how long the
//! decision took, who made it), so that [`Summary::window`] can measure a part of the run
//! only: the steady state after a warm-up (`--warmup`), leaving out the connection set-up
//! and the allow-list transfers every gate asks for at link-up.

use gate_core::Decided;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// One decided card read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the card was read (the decision's time less its latency).
    pub read_at: Instant,
    /// Card read to decision.
    pub latency: Duration,
    /// Decided by the gate from its allow-list (timeout, error reply, link down), not by
    /// the hub.
    pub offline: bool,
}

/// One gate's counts.
#[derive(Debug, Default, Clone)]
pub struct GateReport {
    /// Card reads.
    pub requests: u64,
    /// Decided by the hub, allowed.
    pub granted: u64,
    /// Decided by the hub, refused, by reason name (`unknown_reason` for a code this
    /// build does not know).
    pub denied: BTreeMap<String, u64>,
    pub offline_granted: u64,
    pub offline_denied: u64,
    /// Requests the hub did not answer in time (decided offline; included there).
    pub timeouts: u64,
    /// Failed connection attempts and lost connections.
    pub io_errors: u64,
    pub http_errors: BTreeMap<u16, u64>,
    pub mqtt_refused: u64,
    /// The hub's error replies by code.
    pub error_replies: BTreeMap<String, u64>,
    /// Messages the transport cannot carry (HTTP: everything but access requests).
    pub not_carried: u64,
    /// Received frames the core dropped (malformed, wrong gate, bad tag, unmatched).
    pub rx_dropped: u64,
    /// Offline decisions appended to the log in this run.
    pub offline_logged: u64,
    /// Offline entries still waiting for the hub's acknowledgement at the end.
    pub offline_pending: u64,
    /// Offline entries pushed out of a full log.
    pub offline_dropped: u64,
    /// Latency of each hub decision, card read to decision.
    pub latencies: Vec<Duration>,
    /// Every decision of a card read, hub or offline, in the order they were made.
    pub samples: Vec<Sample>,
    /// The last sequence number used (the value to persist).
    pub last_seq: u32,
    /// Door openings without a grant made by `--door-forced-every` (each one reported by
    /// the core as `forced_open`).
    pub forced_opens: u64,
    /// Remote opens from the hub the core carried out (the relay pulsed).
    pub remote_opens: u64,
}

impl GateReport {
    pub fn decided(&mut self, d: Decided, latency: Option<Duration>) {
        match (d.offline, d.allowed) {
            (true, true) => self.offline_granted += 1,
            (true, false) => self.offline_denied += 1,
            (false, true) => self.granted += 1,
            (false, false) => {
                let reason = d.reason.map_or("unknown_reason", |r| r.as_str());
                *self.denied.entry(reason.to_owned()).or_default() += 1;
            }
        }
        if let Some(l) = latency {
            if !d.offline {
                self.latencies.push(l);
            }
            let now = Instant::now();
            self.samples.push(Sample {
                read_at: now.checked_sub(l).unwrap_or(now),
                latency: l,
                offline: d.offline,
            });
        }
    }

    fn merge(&mut self, o: GateReport) {
        self.requests += o.requests;
        self.granted += o.granted;
        for (k, v) in o.denied {
            *self.denied.entry(k).or_default() += v;
        }
        self.offline_granted += o.offline_granted;
        self.offline_denied += o.offline_denied;
        self.timeouts += o.timeouts;
        self.io_errors += o.io_errors;
        for (k, v) in o.http_errors {
            *self.http_errors.entry(k).or_default() += v;
        }
        self.mqtt_refused += o.mqtt_refused;
        for (k, v) in o.error_replies {
            *self.error_replies.entry(k).or_default() += v;
        }
        self.not_carried += o.not_carried;
        self.rx_dropped += o.rx_dropped;
        self.offline_logged += o.offline_logged;
        self.offline_pending += o.offline_pending;
        self.offline_dropped += o.offline_dropped;
        self.forced_opens += o.forced_opens;
        self.remote_opens += o.remote_opens;
        self.latencies.extend(o.latencies);
        self.samples.extend(o.samples);
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub transport: &'static str,
    pub gates: usize,
    pub elapsed: Duration,
    pub total: GateReport,
}

impl Summary {
    pub fn new(transport: &'static str, elapsed: Duration, reports: Vec<GateReport>) -> Summary {
        let gates = reports.len();
        let mut total = GateReport::default();
        for r in reports {
            total.merge(r);
        }
        total.latencies.sort_unstable();
        Summary {
            transport,
            gates,
            elapsed,
            total,
        }
    }

    pub fn denied(&self) -> u64 {
        self.total.denied.values().sum()
    }

    pub fn offline(&self) -> u64 {
        self.total.offline_granted + self.total.offline_denied
    }

    pub fn answered(&self) -> u64 {
        self.total.granted + self.denied() + self.offline()
    }

    pub fn errors(&self) -> u64 {
        let t = &self.total;
        t.io_errors
            + t.http_errors.values().sum::<u64>()
            + t.mqtt_refused
            + t.error_replies.values().sum::<u64>()
    }

    /// The `p`-th percentile (nearest rank) of the hub decisions' latency.
    pub fn latency(&self, p: u32) -> Option<Duration> {
        percentile(&self.total.latencies, p)
    }

    /// The `pm`-th per-mille (nearest rank) of the hub decisions' latency: 999 is p99.9.
    pub fn latency_per_mille(&self, pm: u32) -> Option<Duration> {
        per_mille(&self.total.latencies, pm)
    }

    /// Decisions made by the hub (granted or denied; not offline).
    pub fn hub_decisions(&self) -> u64 {
        self.total.granted + self.denied()
    }

    /// The card reads made from `start + skip` for `len`, and their decisions.
    pub fn window(&self, start: Instant, skip: Duration, len: Duration) -> Window {
        let from = start + skip;
        let to = from + len;
        let mut w = Window {
            skip,
            len,
            reads: 0,
            hub_decisions: 0,
            offline: 0,
            latencies: Vec::new(),
        };
        for s in &self.total.samples {
            if s.read_at < from || s.read_at >= to {
                continue;
            }
            w.reads += 1;
            if s.offline {
                w.offline += 1;
            } else {
                w.hub_decisions += 1;
                w.latencies.push(s.latency);
            }
        }
        w.latencies.sort_unstable();
        w
    }

    /// The summary as one JSON object: the counts and latencies of the summary line
    /// (milliseconds; `null` without hub decisions), plus `offered_per_s` (the configured
    /// offered rate, `null` when saturating), `achieved_per_s` (hub decisions per second
    /// of `load`, the configured run length; `null` when the run was counted in requests)
    /// and `window`, the figures of [`Summary::window`] (`null` if not given).
    pub fn json(
        &self,
        offered_per_s: Option<f64>,
        load: Option<Duration>,
        window: Option<&Window>,
    ) -> String {
        let t = &self.total;
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        let achieved = load
            .filter(|l| !l.is_zero())
            .map(|l| self.hub_decisions() as f64 / l.as_secs_f64());
        let secs = self.elapsed.as_secs_f64();
        serde_json::json!({
            "transport": self.transport,
            "gates": self.gates,
            "requests": t.requests,
            "answered": self.answered(),
            "hub_decisions": self.hub_decisions(),
            "granted": t.granted,
            "denied": self.denied(),
            "denied_by_reason": t.denied,
            "offline": self.offline(),
            "timeouts": t.timeouts,
            "errors": self.errors(),
            "io_errors": t.io_errors,
            "http_errors": t.http_errors.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "mqtt_refused": t.mqtt_refused,
            "error_replies": t.error_replies,
            "not_carried": t.not_carried,
            "rx_dropped": t.rx_dropped,
            "offline_logged": t.offline_logged,
            "offline_pending": t.offline_pending,
            "offline_dropped": t.offline_dropped,
            "forced_opens": t.forced_opens,
            "remote_opens": t.remote_opens,
            "latency_ms_p50": ms(self.latency(50)),
            "latency_ms_p99": ms(self.latency(99)),
            "latency_ms_p999": ms(self.latency_per_mille(999)),
            "latency_ms_max": ms(t.latencies.last().copied()),
            "elapsed_s": secs,
            "load_s": load.map(|l| l.as_secs_f64()),
            "offered_per_s": offered_per_s,
            "achieved_per_s": achieved,
            "decisions_per_s": if secs > 0.0 { self.answered() as f64 / secs } else { 0.0 },
            "window": window.map(Window::json),
        })
        .to_string()
    }
}

/// The card reads of a part of the run ([`Summary::window`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// From the start of the run to the window.
    pub skip: Duration,
    pub len: Duration,
    /// Card reads made in the window (every one was decided before the run ended).
    pub reads: u64,
    pub hub_decisions: u64,
    /// Decided by the gate: the hub's answer did not come in time, was an error, or the
    /// link was down.
    pub offline: u64,
    /// Of the hub decisions, sorted.
    pub latencies: Vec<Duration>,
}

impl Window {
    /// Hub decisions per second of the window.
    pub fn achieved_per_s(&self) -> f64 {
        let secs = self.len.as_secs_f64();
        if secs > 0.0 {
            self.hub_decisions as f64 / secs
        } else {
            0.0
        }
    }

    /// The `pm`-th per-mille (nearest rank) of the hub decisions' latency.
    pub fn latency_per_mille(&self, pm: u32) -> Option<Duration> {
        per_mille(&self.latencies, pm)
    }

    fn json(&self) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        serde_json::json!({
            "skip_s": self.skip.as_secs_f64(),
            "len_s": self.len.as_secs_f64(),
            "reads": self.reads,
            "hub_decisions": self.hub_decisions,
            "offline": self.offline,
            "achieved_per_s": self.achieved_per_s(),
            "latency_ms_p50": ms(self.latency_per_mille(500)),
            "latency_ms_p99": ms(self.latency_per_mille(990)),
            "latency_ms_p999": ms(self.latency_per_mille(999)),
            "latency_ms_max": ms(self.latencies.last().copied()),
        })
    }
}

/// One line of `key=value` fields, like the summary line.
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_owned(), |d| {
                format!("{:.2}", d.as_secs_f64() * 1000.0)
            })
        };
        write!(
            f,
            "window skip_s={:.2} len_s={:.2} reads={} hub_decisions={} offline={} \
             latency_ms_p50={} latency_ms_p99={} latency_ms_p999={} latency_ms_max={} \
             achieved_per_s={:.0}",
            self.skip.as_secs_f64(),
            self.len.as_secs_f64(),
            self.reads,
            self.hub_decisions,
            self.offline,
            ms(self.latency_per_mille(500)),
            ms(self.latency_per_mille(990)),
            ms(self.latency_per_mille(999)),
            ms(self.latencies.last().copied()),
            self.achieved_per_s()
        )
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], p: u32) -> Option<Duration> {
    per_mille(sorted, p.saturating_mul(10))
}

/// Nearest-rank per-mille of sorted values (999: the 99.9th percentile).
pub fn per_mille(sorted: &[Duration], pm: u32) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * pm as usize).div_ceil(1000).max(1);
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.total;
        write!(
            f,
            "summary transport={} gates={} requests={} answered={} granted={} denied={}",
            self.transport,
            self.gates,
            t.requests,
            self.answered(),
            t.granted,
            self.denied()
        )?;
        for (reason, n) in &t.denied {
            write!(f, " denied.{reason}={n}")?;
        }
        write!(
            f,
            " offline={} offline_granted={} offline_denied={} timeouts={} errors={} io_errors={}",
            self.offline(),
            t.offline_granted,
            t.offline_denied,
            t.timeouts,
            self.errors(),
            t.io_errors
        )?;
        for (status, n) in &t.http_errors {
            write!(f, " http.{status}={n}")?;
        }
        if t.mqtt_refused > 0 {
            write!(f, " mqtt_refused={}", t.mqtt_refused)?;
        }
        for (code, n) in &t.error_replies {
            write!(f, " error_reply.{code}={n}")?;
        }
        if t.forced_opens > 0 {
            write!(f, " forced_opens={}", t.forced_opens)?;
        }
        if t.remote_opens > 0 {
            write!(f, " remote_opens={}", t.remote_opens)?;
        }
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_owned(), |d| {
                format!("{:.2}", d.as_secs_f64() * 1000.0)
            })
        };
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            " not_carried={} rx_dropped={} offline_logged={} offline_pending={} offline_dropped={} \
             latency_ms_p50={} latency_ms_p99={} latency_ms_p999={} latency_ms_max={} \
             elapsed_s={:.2} decisions_per_s={:.0}",
            t.not_carried,
            t.rx_dropped,
            t.offline_logged,
            t.offline_pending,
            t.offline_dropped,
            ms(self.latency(50)),
            ms(self.latency(99)),
            ms(self.latency_per_mille(999)),
            ms(t.latencies.last().copied()),
            secs,
            if secs > 0.0 { self.answered() as f64 / secs } else { 0.0 }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_gate_proto::Reason;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 99), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50), None);
        let v: Vec<Duration> = (1..=2000).map(Duration::from_millis).collect();
        assert_eq!(per_mille(&v, 999), Some(Duration::from_millis(1998)));
        assert_eq!(per_mille(&v, 1000), Some(Duration::from_millis(2000)));
        assert_eq!(per_mille(&v[..10], 999), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&v, 99), per_mille(&v, 990));
    }

    #[test]
    fn summary_line() {
        let mut a = GateReport {
            requests: 3,
            ..GateReport::default()
        };
        let d = |allowed, reason, offline| Decided {
            seq: 1,
            allowed,
            reason,
            offline,
        };
        a.decided(
            d(true, Some(Reason::Granted), false),
            Some(Duration::from_millis(2)),
        );
        a.decided(
            d(false, Some(Reason::UnknownCard), false),
            Some(Duration::from_millis(4)),
        );
        a.decided(d(false, Some(Reason::OfflineDenied), true), None);
        a.error_replies.insert("unsupported".into(), 1);
        let s = Summary::new(
            "tcp",
            Duration::from_secs(1),
            vec![a, GateReport::default()],
        );
        let line = s.to_string();
        for want in [
            "summary transport=tcp gates=2 requests=3 answered=3 granted=1 denied=1 denied.unknown_card=1",
            " offline=1 offline_granted=0 offline_denied=1 ",
            " errors=1 ",
            " error_reply.unsupported=1 ",
            " latency_ms_p50=2.00 latency_ms_p99=4.00 latency_ms_p999=4.00 latency_ms_max=4.00 ",
        ] {
            assert!(line.contains(want), "{want:?} in {line}");
        }

        let j: serde_json::Value =
            serde_json::from_str(&s.json(Some(3.0), Some(Duration::from_secs(2)), None)).unwrap();
        assert_eq!(j["transport"], "tcp");
        assert_eq!(j["hub_decisions"], 2);
        assert_eq!(j["offline"], 1);
        assert_eq!(j["errors"], 1);
        assert_eq!(j["latency_ms_p50"], 2.0);
        assert_eq!(j["latency_ms_p999"], 4.0);
        assert_eq!(j["offered_per_s"], 3.0);
        assert_eq!(j["achieved_per_s"], 1.0);
        assert_eq!(j["denied_by_reason"]["unknown_card"], 1);
        let j: serde_json::Value = serde_json::from_str(&s.json(None, None, None)).unwrap();
        assert!(j["offered_per_s"].is_null() && j["achieved_per_s"].is_null());
        assert!(j["window"].is_null());
        let empty = Summary::new("http", Duration::ZERO, vec![]);
        let j: serde_json::Value = serde_json::from_str(&empty.json(None, None, None)).unwrap();
        assert!(j["latency_ms_p99"].is_null());
    }

    #[test]
    fn window_counts_reads_made_in_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let sample = |read_ms: u64, latency_ms: u64, offline: bool| Sample {
            read_at: at(read_ms),
            latency: Duration::from_millis(latency_ms),
            offline,
        };
        let a = GateReport {
            samples: vec![
                sample(100, 900, false), // warm-up
                sample(1000, 5, false),
                sample(1500, 1500, true),
                sample(2999, 50, false), // read in the window, decided after it
                sample(3000, 1, false),  // after
            ],
            ..GateReport::default()
        };
        let b = GateReport {
            samples: vec![sample(1200, 7, false)],
            ..GateReport::default()
        };
        let s = Summary::new("mqtt", Duration::from_secs(4), vec![a, b]);
        let w = s.window(t0, Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!((w.reads, w.hub_decisions, w.offline), (4, 3, 1));
        assert_eq!(w.latency_per_mille(500), Some(Duration::from_millis(7)));
        assert_eq!(w.latency_per_mille(999), Some(Duration::from_millis(50)));
        assert_eq!(w.achieved_per_s(), 1.5);
        let line = w.to_string();
        assert!(
            line.starts_with("window skip_s=1.00 len_s=2.00 reads=4 hub_decisions=3 offline=1 "),
            "{line}"
        );
        let j: serde_json::Value = serde_json::from_str(&s.json(None, None, Some(&w))).unwrap();
        assert_eq!(j["window"]["hub_decisions"], 3);
        assert_eq!(j["window"]["latency_ms_p99"], 50.0);
    }

    #[test]
    fn decisions_become_samples() {
        let mut r = GateReport::default();
        let d = |offline| Decided {
            seq: 1,
            allowed: true,
            reason: Some(if offline {
                Reason::OfflineGranted
            } else {
                Reason::Granted
            }),
            offline,
        };
        let before = Instant::now();
        r.decided(d(false), Some(Duration::from_millis(3)));
        r.decided(d(true), Some(Duration::from_millis(1500)));
        r.decided(d(false), None);
        assert_eq!(r.latencies, vec![Duration::from_millis(3)]);
        assert_eq!(r.samples.len(), 2);
        assert!(!r.samples[0].offline && r.samples[1].offline);
        assert!(r.samples[0].read_at <= Instant::now() - Duration::from_millis(3));
        assert!(r.samples[0].read_at + Duration::from_millis(3) >= before);
    }
}
