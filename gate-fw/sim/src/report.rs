//! What a run measured: [`GateReport`] per gate, summed into [`Summary`], printed as one
//! line of `key=value` fields (stable names, for people and for tests).

use gate_core::Decided;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

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
    /// The last sequence number used (the value to persist).
    pub last_seq: u32,
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
        if let (false, Some(l)) = (d.offline, latency) {
            self.latencies.push(l);
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
        self.latencies.extend(o.latencies);
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
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], p: u32) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * p as usize).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
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
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_owned(), |d| {
                format!("{:.2}", d.as_secs_f64() * 1000.0)
            })
        };
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            " not_carried={} rx_dropped={} offline_logged={} offline_pending={} offline_dropped={} \
             latency_ms_p50={} latency_ms_p99={} elapsed_s={:.2} decisions_per_s={:.0}",
            t.not_carried,
            t.rx_dropped,
            t.offline_logged,
            t.offline_pending,
            t.offline_dropped,
            ms(self.latency(50)),
            ms(self.latency(99)),
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
            " latency_ms_p50=2.00 latency_ms_p99=4.00 ",
        ] {
            assert!(line.contains(want), "{want:?} in {line}");
        }
    }
}
