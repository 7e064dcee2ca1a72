//! One simulated gate: a [`GateCore`] driven by the real clock, fed by a transport, reading
//! cards at the configured rate (the next read waits for the previous decision).

use crate::args::{Length, Pick, SimConfig};
use crate::gates_file::GateSpec;
use crate::report::GateReport;
use crate::rng::SplitMix64;
use crate::state::GateState;
use crate::transport::{self, LinkEvent};
use gate_core::{GateConfig, GateCore, Now, Output};
use gatehouse_gate_proto::{DoorEventKind, Frame, Message, Repr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// How long a gate waits for its link before reading cards anyway (decided offline).
pub const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Runs gate number `index` of the run until its load is done; `resume_seq` is its
/// persisted sequence number.
pub async fn run(
    index: usize,
    spec: GateSpec,
    config: Arc<SimConfig>,
    saved: GateState,
) -> (GateReport, GateState) {
    let mut gc = GateConfig::new(spec.id, spec.key, spec.card_key, spec.allow_list_key);
    gc.request_timeout_ms = config.request_timeout_ms;
    gc.offline_ack_timeout_ms = config.offline_ack_timeout_ms;
    let mut core = Box::new(GateCore::new(gc));
    core.resume(saved.seq);
    core.resume_commands(saved.command_seq);
    core.restore_allow_list(saved.allow_list_version, &saved.allow_list);
    let mut link = transport::spawn(&config, &spec);
    let mut rng = SplitMix64::new(config.seed ^ u64::from(spec.id).wrapping_mul(0x9e37_79b9));
    let mut report = GateReport::default();

    let start = Instant::now();
    let now_at = |t: Instant| Now {
        ms: u64::try_from(t.duration_since(start).as_millis()).unwrap_or(u64::MAX),
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0),
    };
    core.door_contact(true, now_at(start));

    let mut load_start: Option<Instant> = None;
    let mut next_read = start;
    let mut read_at: Option<Instant> = None;
    let mut reads: u64 = 0;
    let mut drain_until: Option<Instant> = None;
    loop {
        drain(&mut core, &link, &mut report, &mut read_at);
        let now = Instant::now();
        if load_start.is_none() && (core.is_link_up() || now >= start + CONNECT_WAIT) {
            load_start = Some(now);
            // Gates start spread over one interval, not all in phase.
            let gates = u32::try_from(config.gates.len().max(1)).unwrap_or(u32::MAX);
            let phase = u32::try_from(index).unwrap_or(0) % gates;
            next_read = now + config.interval * phase / gates;
        }
        let load_done = match (load_start, config.length) {
            (None, _) => false,
            (Some(_), Length::Requests(n)) => reads >= n,
            (Some(s), Length::Duration(d)) => now >= s + d,
        };
        if load_done && !core.is_waiting() {
            let until = *drain_until.get_or_insert(now + config.drain);
            if core.offline_log().is_empty() || now >= until {
                break;
            }
        }
        let read_due =
            (load_start.is_some() && !load_done && !core.is_waiting()).then_some(next_read);
        let wake = [
            read_due,
            core.poll_at().map(|ms| start + Duration::from_millis(ms)),
            load_start.is_none().then_some(start + CONNECT_WAIT),
            drain_until,
            match (load_start, config.length) {
                (Some(s), Length::Duration(d)) if !load_done => Some(s + d),
                _ => None,
            },
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_millis(100));
        tokio::select! {
            event = link.events.recv() => {
                let t = now_at(Instant::now());
                match event {
                    Some(LinkEvent::Up) => core.link_up(t),
                    Some(LinkEvent::Down) => core.link_down(t),
                    Some(LinkEvent::Frame(bytes)) => {
                        note_error_reply(&bytes, &mut report);
                        let before = core.stats().remote_opens;
                        let received = core.frame_received(&bytes, t);
                        if core.stats().remote_opens != before {
                            eprintln!("gate {}: remote open from the hub", spec.id);
                        } else if let Err(e @ gate_core::RxError::Replayed { .. }) = received {
                            eprintln!("gate {}: {e}", spec.id);
                        }
                    }
                    Some(LinkEvent::IoError) => report.io_errors += 1,
                    Some(LinkEvent::HttpStatus(s)) => *report.http_errors.entry(s).or_default() += 1,
                    Some(LinkEvent::MqttRefused) => report.mqtt_refused += 1,
                    Some(LinkEvent::NotCarried(_)) => report.not_carried += 1,
                    None => {
                        // The transport task ended: nothing will come back.
                        core.link_down(t);
                        report.io_errors += 1;
                        link.task.abort();
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if read_due.is_some_and(|t| now >= t) && !core.is_waiting() {
            let card = match config.pick {
                Pick::Random => config.cards.get(rng.below(config.cards.len())),
                Pick::Cycle => config
                    .cards
                    .get((index + reads as usize) % config.cards.len().max(1)),
            };
            if let Some(card) = card {
                reads += 1;
                if config.door_forced_every.is_some_and(|n| reads % n == 0) {
                    force_door(&mut core, &link, &mut report, &mut read_at, now_at(now));
                }
                report.requests += 1;
                read_at = Some(now);
                // A fixed schedule (the offered rate is kept when a decision is late),
                // but no burst to catch up after a long stall.
                let floor = now.checked_sub(config.interval).unwrap_or(now);
                next_read = (next_read + config.interval).max(floor);
                core.card_read(*card, now_at(now));
            }
        }
        core.tick(now_at(now));
    }
    link.task.abort();
    let stats = core.stats();
    report.timeouts = u64::from(stats.timeouts);
    report.rx_dropped = u64::from(stats.malformed)
        + u64::from(stats.wrong_gate)
        + u64::from(stats.bad_tag)
        + u64::from(stats.unmatched);
    report.offline_pending = core.offline_log().len() as u64;
    report.offline_dropped = u64::from(core.offline_log().dropped());
    report.last_seq = core.seq();
    report.remote_opens = u64::from(stats.remote_opens);
    let keep = GateState {
        seq: core.seq(),
        command_seq: core.command_seq().unwrap_or(0),
        allow_list_version: core.allow_list().version(),
        allow_list: core.allow_list().iter().copied().collect(),
    };
    (report, keep)
}

/// Hands everything the core has to do to the link and the report; returns the kinds of
/// the door events among the frames sent.
fn drain(
    core: &mut GateCore,
    link: &transport::Link,
    report: &mut GateReport,
    read_at: &mut Option<Instant>,
) -> Vec<DoorEventKind> {
    let mut doors = Vec::new();
    while let Some(out) = core.poll_output() {
        match out {
            Output::Transmit(t) => {
                doors.extend(door_event_kind(&t.bytes));
                let _ = link.out.send(t.bytes.to_vec());
            }
            Output::Decided(d) => {
                let latency = read_at.take().map(|t| t.elapsed());
                report.decided(d, latency);
            }
            Output::LogOffline(_) => report.offline_logged += 1,
            _ => {}
        }
    }
    doors
}

/// The kind of a door event frame the core sent (its own, so the tag is not checked).
fn door_event_kind(bytes: &[u8]) -> Option<DoorEventKind> {
    let frame = Frame::new_checked(bytes).ok()?;
    match Repr::parse(&frame).ok()?.message {
        Message::DoorEvent(e) => Some(e.kind),
        _ => None,
    }
}

/// `--door-forced-every`: the door contact opens without a grant, then closes. The core
/// calls an opening within a grant's window `opened` (and uses the window up): if that is
/// what it reported, the door is opened and closed once more, which is then forced. While
/// the link is down the events wait in the core's outbox and cannot be seen here: one
/// opening only.
fn force_door(
    core: &mut GateCore,
    link: &transport::Link,
    report: &mut GateReport,
    read_at: &mut Option<Instant>,
    now: Now,
) {
    for _ in 0..2 {
        core.door_contact(false, now);
        let doors = drain(core, link, report, read_at);
        core.door_contact(true, now);
        drain(core, link, report, read_at);
        if !doors.contains(&DoorEventKind::Opened) {
            report.forced_opens += 1;
            return;
        }
    }
}

/// Counts the hub's error replies by code (the core keeps only the last one).
fn note_error_reply(bytes: &[u8], report: &mut GateReport) {
    let Ok(frame) = Frame::new_checked(bytes) else {
        return;
    };
    if let Ok(Repr {
        message: Message::Error(e),
        ..
    }) = Repr::parse(&frame)
    {
        *report
            .error_replies
            .entry(format!("{:?}", e.code).to_lowercase())
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gate_core::GateConfig;
    use gatehouse_gate_proto::{CardId, Decision, Reason};
    use tokio::sync::mpsc::unbounded_channel;

    const KEY: [u8; 32] = [7; 32];

    fn now(ms: u64) -> Now {
        Now {
            ms,
            unix: 1_800_000_000,
        }
    }

    /// The door events among the frames the gate sent.
    fn sent_doors(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<DoorEventKind> {
        let mut kinds = Vec::new();
        while let Ok(f) = rx.try_recv() {
            kinds.extend(door_event_kind(&f));
        }
        kinds
    }

    #[tokio::test]
    async fn forcing_the_door_reports_exactly_one_forced_opening() {
        let (out, mut sent) = unbounded_channel();
        let (_events_tx, events) = unbounded_channel();
        let link = transport::Link {
            out,
            events,
            task: tokio::spawn(async {}),
        };
        let mut core = GateCore::new(GateConfig::new(3, KEY, [1; 32], [2; 32]));
        let mut report = GateReport::default();
        let mut read_at = None;
        core.door_contact(true, now(0));
        core.link_up(now(0));
        drain(&mut core, &link, &mut report, &mut read_at);
        sent_doors(&mut sent);

        // No grant pending: one opening, forced.
        force_door(&mut core, &link, &mut report, &mut read_at, now(10));
        use DoorEventKind::*;
        assert_eq!(sent_doors(&mut sent), [Forced, Closed]);
        assert_eq!(report.forced_opens, 1);

        // A granted card leaves an opening pending: it is used first (opened), then the
        // door is forced.
        core.card_read(CardId::new(&[0xca, 0xfe]).unwrap(), now(20));
        drain(&mut core, &link, &mut report, &mut read_at);
        let decision = Repr {
            gate_id: 3,
            message: Message::Decision(Decision {
                seq: core.seq(),
                reason: Reason::Granted,
                relay_ms: 1500,
            }),
        };
        let mut buf = vec![0u8; decision.buffer_len()];
        decision.emit_sealed(&KEY, &mut buf).unwrap();
        core.frame_received(&buf, now(30)).unwrap();
        drain(&mut core, &link, &mut report, &mut read_at);
        assert_eq!(report.granted, 1);
        force_door(&mut core, &link, &mut report, &mut read_at, now(40));
        assert_eq!(sent_doors(&mut sent), [Opened, Closed, Forced, Closed]);
        assert_eq!(report.forced_opens, 2);
    }
}
