//! What a run did: [`NodeReport`] per node, gathered into [`Summary`], printed as one
//! line of `key=value` totals (stable names, for people and tests) and written as JSON
//! with every node's figures (`--json-summary`). Numbers are reported, never judged.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// One node's counts. "Alarms" are distinct alarms (one `alarm_id`, raised or ended),
/// "alarm frames" every transmission of them (retries included).
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct NodeReport {
    pub name: String,
    pub dev_addr: String,
    /// Alarm messages the node sent (raise and end each count once), by
    /// `<alarm_id>:<active>`, in order.
    pub alarms_sent: u64,
    pub alarms_acked: u64,
    pub alarms_gave_up: u64,
    /// Alarms still waiting for their ACK when the run ended (drain time over).
    pub alarms_pending: u64,
    /// Alarms still waiting for their ACK when the node was silenced (--silence): sent,
    /// never acknowledged, by design. sent = acked + gave_up + pending + cut_off.
    pub alarms_cut_off: u64,
    /// Alarm transmissions, retries included.
    pub alarm_frames: u64,
    pub reports: u64,
    pub heartbeats: u64,
    /// Every frame the node transmitted (its own: replays and forgeries not included).
    pub frames: u64,
    /// Their airtime, microseconds.
    pub airtime_us: u64,
    /// Downlinks addressed to this node that it accepted.
    pub downlinks: u64,
    /// Sends the duty-cycle budget held back (a frame waited for it).
    pub duty_waits: u64,
    /// Frames replayed and forged with this node's address (by --replay / --forge).
    pub replays: u64,
    pub forgeries: u64,
    /// The run stopped this node (--silence), and after how many ms of its life.
    pub silenced_after_ms: Option<u64>,
    /// `<alarm_id>:<active>` of every alarm sent, acknowledged, given up.
    pub alarm_ids_sent: Vec<String>,
    pub alarm_ids_acked: Vec<String>,
    pub alarm_ids_gave_up: Vec<String>,
}

/// Every node's report and their totals.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub nodes: usize,
    pub elapsed_ms: u64,
    pub totals: NodeReport,
    pub per_node: BTreeMap<String, NodeReport>,
}

impl Summary {
    pub fn new(elapsed: Duration, reports: Vec<NodeReport>) -> Summary {
        let mut t = NodeReport {
            name: "all".into(),
            ..NodeReport::default()
        };
        for r in &reports {
            t.alarms_sent += r.alarms_sent;
            t.alarms_acked += r.alarms_acked;
            t.alarms_gave_up += r.alarms_gave_up;
            t.alarms_pending += r.alarms_pending;
            t.alarms_cut_off += r.alarms_cut_off;
            t.alarm_frames += r.alarm_frames;
            t.reports += r.reports;
            t.heartbeats += r.heartbeats;
            t.frames += r.frames;
            t.airtime_us += r.airtime_us;
            t.downlinks += r.downlinks;
            t.duty_waits += r.duty_waits;
            t.replays += r.replays;
            t.forgeries += r.forgeries;
        }
        Summary {
            nodes: reports.len(),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            totals: t,
            per_node: reports.into_iter().map(|r| (r.name.clone(), r)).collect(),
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// `summary nodes=200 alarms_sent=... ...`: one line.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        write!(
            f,
            "summary nodes={} elapsed_ms={} alarms_sent={} alarms_acked={} alarms_gave_up={} \
             alarms_pending={} alarms_cut_off={} alarm_frames={} reports={} heartbeats={} frames={} airtime_us={} \
             downlinks={} duty_waits={} replays={} forgeries={} silenced={}",
            self.nodes,
            self.elapsed_ms,
            t.alarms_sent,
            t.alarms_acked,
            t.alarms_gave_up,
            t.alarms_pending,
            t.alarms_cut_off,
            t.alarm_frames,
            t.reports,
            t.heartbeats,
            t.frames,
            t.airtime_us,
            t.downlinks,
            t.duty_waits,
            t.replays,
            t.forgeries,
            self.per_node
                .values()
                .filter(|r| r.silenced_after_ms.is_some())
                .count(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_line() {
        let a = NodeReport {
            name: "a".into(),
            alarms_sent: 2,
            alarms_acked: 2,
            frames: 5,
            ..NodeReport::default()
        };
        let b = NodeReport {
            name: "b".into(),
            alarms_sent: 1,
            alarms_gave_up: 1,
            frames: 3,
            silenced_after_ms: Some(5000),
            ..NodeReport::default()
        };
        let s = Summary::new(Duration::from_millis(1500), vec![a, b]);
        let line = s.to_string();
        assert!(
            line.starts_with(
                "summary nodes=2 elapsed_ms=1500 alarms_sent=3 alarms_acked=2 alarms_gave_up=1 "
            ),
            "{line}"
        );
        assert!(
            line.contains(" frames=8 ") && line.ends_with("silenced=1"),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(v["per_node"]["b"]["alarms_gave_up"], 1);
        assert_eq!(v["totals"]["frames"], 8);
    }
}
