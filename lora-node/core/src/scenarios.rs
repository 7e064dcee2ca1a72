//! The node's behaviour tests, written once and run twice: by `cargo test` on the host
//! (`core/tests/scenarios.rs`, one `#[test]` per scenario) and on a Cortex-M4 under
//! qemu-system-arm (`lora-node/qemu-tests`, which calls every entry of [`ALL`] and turns
//! the outcome into the semihosting exit code).
//!
//! Each scenario drives a real [`Node`] with a fake clock against [`FakeHub`], a model of
//! the hub side of the link built from `gatehouse-lora-proto` alone: it opens every uplink
//! with the node's key, enforces the hub's replay rule (every fcnt above the last one) and
//! answers alarms with sealed ACK downlinks in the node's receive window. An independent
//! log of every transmission checks the EU868 duty cycle over every sliding hour.
//!
//! `no_std`, no allocation, no panics: a failed check returns a [`Failure`] naming the
//! check and its line.

use core::fmt;

use gatehouse_lora_proto::duty::{SubBand, HOUR_MS, NORMAL_SHARE_PERCENT};
use gatehouse_lora_proto::{
    open, seal, Alarm, AlarmKind, Command, DevAddr, Dir, Downlink, Frame, Heartbeat, Key,
    Modulation, Payload, Priority, Quantity, MAX_FRAME_LEN,
};
use heapless::Vec;

use crate::storage::{MemStorage, FCNT_SKIP};
use crate::{Action, Event, Input, Node, NodeConfig, RadioParams, RxError, SensorKind};

/// A check that did not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub what: &'static str,
    pub line: u32,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenarios.rs:{}: {}", self.line, self.what)
    }
}

pub type Outcome = Result<(), Failure>;

/// One named test case.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn() -> Outcome,
}

/// Every scenario, in the order the QEMU runner prints them.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "counter_never_reused_across_reboot",
        run: counter_never_reused_across_reboot,
    },
    Scenario {
        name: "storage_failure_stops_transmissions",
        run: storage_failure_stops_transmissions,
    },
    Scenario {
        name: "alarm_retried_until_acked_then_stops",
        run: alarm_retried_until_acked_then_stops,
    },
    Scenario {
        name: "an_alarms_end_carries_its_raises_id",
        run: an_alarms_end_carries_its_raises_id,
    },
    Scenario {
        name: "alarm_gives_up_after_max_and_reports",
        run: alarm_gives_up_after_max_and_reports,
    },
    Scenario {
        name: "duty_budget_respected",
        run: duty_budget_respected,
    },
    Scenario {
        name: "heartbeat_schedule",
        run: heartbeat_schedule,
    },
    Scenario {
        name: "downlink_replay_refused",
        run: downlink_replay_refused,
    },
    Scenario {
        name: "downlink_replay_refused_after_reboot",
        run: downlink_replay_refused_after_reboot,
    },
    Scenario {
        name: "reports_on_change_and_periodically",
        run: reports_on_change_and_periodically,
    },
];

macro_rules! check {
    ($cond:expr, $what:expr) => {
        if !$cond {
            return Err(Failure {
                what: $what,
                line: line!(),
            });
        }
    };
}

const DEV_ADDR: DevAddr = DevAddr(0x2601_0001);
const KEY: [u8; 16] = [
    0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c,
];
/// 868.1 MHz: sub-band G868_0, 1 % duty cycle.
const FREQ_HZ: u32 = 868_100_000;
const RSSI: i16 = -87;
const SNR: i8 = 7;

/// The configuration the scenarios start from.
pub fn config(kind: SensorKind, sf: u8) -> NodeConfig {
    NodeConfig::new(
        DEV_ADDR,
        Key(KEY),
        kind,
        RadioParams {
            freq_hz: FREQ_HZ,
            modulation: Modulation::lora(sf, 125_000),
        },
    )
}

/// One uplink as the hub saw it (compact: a Cortex-M test image has 16 KiB of RAM).
#[derive(Debug, Clone)]
pub struct Seen {
    pub at_ms: u64,
    pub fcnt: u32,
    pub payload: SeenPayload,
}

/// What the scenarios look at in an uplink's payload.
#[derive(Debug, Clone, Copy)]
pub enum SeenPayload {
    Alarm(Alarm),
    Heartbeat(Heartbeat),
    Report {
        contact: Option<i32>,
        temperature: Option<i32>,
    },
    Other,
}

impl SeenPayload {
    fn of(payload: &Payload) -> SeenPayload {
        let find = |r: &gatehouse_lora_proto::Report, q: Quantity| {
            r.readings.iter().find(|x| x.quantity == q).map(|x| x.value)
        };
        match payload {
            Payload::Alarm(a) => SeenPayload::Alarm(*a),
            Payload::Heartbeat(h) => SeenPayload::Heartbeat(*h),
            Payload::Report(r) => SeenPayload::Report {
                contact: find(r, Quantity::Contact),
                temperature: find(r, Quantity::Temperature),
            },
            Payload::Downlink(_) => SeenPayload::Other,
        }
    }
}

/// The hub side of the link, as far as the node can tell.
pub struct FakeHub {
    key: Key,
    last_fcnt: u32,
    down_fcnt: u32,
    /// Uplinks opened, in order (the last 48).
    pub seen: Vec<Seen, 48>,
    pub uplinks: u32,
    /// Uplinks whose fcnt was not above the previous one: must stay 0.
    pub replays: u32,
    /// Uplinks that did not open (bad MIC, malformed): must stay 0.
    pub bad_frames: u32,
    /// Acknowledge alarms.
    pub ack_alarms: bool,
    /// Alarm uplinks to lose on the air before the hub hears one.
    pub lose_alarms: u32,
    /// A command to send in the next downlink (sent after any uplink).
    pub command: Option<Command>,
    /// The last downlink sent (for a replay attack).
    pub last_downlink: Vec<u8, MAX_FRAME_LEN>,
}

impl FakeHub {
    pub fn new() -> FakeHub {
        FakeHub {
            key: Key(KEY),
            last_fcnt: 0,
            down_fcnt: 0,
            seen: Vec::new(),
            uplinks: 0,
            replays: 0,
            bad_frames: 0,
            ack_alarms: true,
            lose_alarms: 0,
            command: None,
            last_downlink: Vec::new(),
        }
    }

    /// The hub hears `bytes` at `at_ms`; returns the downlink it sends into the window.
    fn uplink(&mut self, at_ms: u64, bytes: &[u8]) -> Option<Vec<u8, MAX_FRAME_LEN>> {
        let frame = match open(bytes, &self.key, Dir::Up) {
            Ok(frame) => frame,
            Err(_) => {
                self.bad_frames += 1;
                return None;
            }
        };
        if matches!(frame.payload, Payload::Alarm(_)) && self.lose_alarms > 0 {
            self.lose_alarms -= 1;
            return None;
        }
        self.uplinks += 1;
        if frame.fcnt <= self.last_fcnt {
            self.replays += 1;
            return None;
        }
        self.last_fcnt = frame.fcnt;
        if self.seen.is_full() {
            self.seen.remove(0);
        }
        let _ = self.seen.push(Seen {
            at_ms,
            fcnt: frame.fcnt,
            payload: SeenPayload::of(&frame.payload),
        });
        let ack =
            (matches!(frame.payload, Payload::Alarm(_)) && self.ack_alarms).then_some(frame.fcnt);
        if ack.is_none() && self.command.is_none() {
            return None;
        }
        let downlink = Downlink {
            ack_fcnt: ack,
            command: self.command.take().unwrap_or_default(),
        };
        let bytes = self.seal_down(self.down_fcnt + 1, downlink)?;
        self.down_fcnt += 1;
        self.last_downlink = bytes.clone();
        Some(bytes)
    }

    /// A downlink sealed with the node's key and the given down counter.
    pub fn seal_down(&self, fcnt: u32, downlink: Downlink) -> Option<Vec<u8, MAX_FRAME_LEN>> {
        seal_with(&self.key, fcnt, downlink)
    }

    fn alarms(&self) -> impl Iterator<Item = (&Seen, &Alarm)> {
        self.seen.iter().filter_map(|s| match &s.payload {
            SeenPayload::Alarm(a) => Some((s, a)),
            _ => None,
        })
    }

    fn heartbeats(&self) -> impl Iterator<Item = (&Seen, &Heartbeat)> {
        self.seen.iter().filter_map(|s| match &s.payload {
            SeenPayload::Heartbeat(h) => Some((s, h)),
            _ => None,
        })
    }
}

impl Default for FakeHub {
    fn default() -> Self {
        FakeHub::new()
    }
}

fn seal_with(key: &Key, fcnt: u32, downlink: Downlink) -> Option<Vec<u8, MAX_FRAME_LEN>> {
    let frame = Frame::new(DEV_ADDR, fcnt, Payload::Downlink(downlink));
    let mut buf = [0u8; MAX_FRAME_LEN];
    let len = seal(&frame, key, Dir::Down, &mut buf).ok()?;
    Vec::from_slice(buf.get(..len)?).ok()
}

/// One transmission in the independent duty-cycle log.
#[derive(Debug, Clone, Copy)]
struct Tx {
    at_ms: u64,
    airtime_us: u32,
}

/// The fake clock, the air between node and hub, and the checks on every transmission.
pub struct Bench {
    pub now_ms: u64,
    pub hub: FakeHub,
    /// Frames an attacker puts into the next receive window before the hub's answer.
    pub inject: Vec<Vec<u8, MAX_FRAME_LEN>, 2>,
    /// What the node said about each frame it heard (the last 8).
    pub rx: Vec<Result<(), RxError>, 8>,
    /// Events drained from the node (the last 16).
    pub events: Vec<Event, 16>,
    log: Vec<Tx, 96>,
    band: SubBand,
    /// Any transmission that broke the duty cycle in its sliding hour.
    pub duty_violations: u32,
    /// Alarm transmissions made while normal traffic was over its share of the hour.
    pub alarms_in_reserve: u32,
}

impl Bench {
    pub fn new() -> Bench {
        Bench {
            now_ms: 0,
            hub: FakeHub::new(),
            inject: Vec::new(),
            rx: Vec::new(),
            events: Vec::new(),
            log: Vec::new(),
            band: SubBand::G868_0,
            duty_violations: 0,
            alarms_in_reserve: 0,
        }
    }

    /// Runs the node until `end_ms` (fake time), playing radio and hub.
    pub fn run_until(&mut self, node: &mut Node<MemStorage>, end_ms: u64) -> Outcome {
        let mut window: Vec<Vec<u8, MAX_FRAME_LEN>, 3> = Vec::new();
        let mut steps = 0u32;
        while self.now_ms < end_ms {
            steps += 1;
            check!(steps < 50_000, "the node never sleeps (runaway poll loop)");
            match node.poll(self.now_ms) {
                Action::Transmit(tx) => {
                    self.account(tx.airtime_us, tx.priority);
                    let end = self.now_ms + u64::from(tx.airtime_us).div_ceil(1_000);
                    window.clear();
                    for frame in &self.inject {
                        let _ = window.push(frame.clone());
                    }
                    self.inject.clear();
                    if let Some(down) = self.hub.uplink(self.now_ms, &tx.bytes) {
                        let _ = window.push(down);
                    }
                    self.now_ms = end;
                    node.tx_done(end);
                }
                Action::Listen { until_ms, .. } => {
                    if window.is_empty() {
                        self.now_ms = until_ms;
                    } else {
                        let frame = window.remove(0);
                        let result = node.received(self.now_ms, &frame, RSSI, SNR).map(|_| ());
                        if self.rx.is_full() {
                            let _ = self.rx.remove(0);
                        }
                        let _ = self.rx.push(result);
                        self.now_ms += 1;
                    }
                }
                Action::Sleep { until_ms } => {
                    check!(until_ms > self.now_ms, "the node asked to sleep until now");
                    self.now_ms = until_ms.min(end_ms);
                }
            }
            while let Some(event) = node.event() {
                if self.events.is_full() {
                    self.events.remove(0);
                }
                let _ = self.events.push(event);
            }
        }
        Ok(())
    }

    /// Logs a transmission and checks the duty cycle of the hour ending with it.
    fn account(&mut self, airtime_us: u32, priority: Priority) {
        let now = self.now_ms;
        self.log.retain(|tx| tx.at_ms + HOUR_MS > now);
        if self.log.is_full() {
            // The log always keeps an hour (96 > any hour's count at 1 %): never reached.
            self.duty_violations += 1;
            return;
        }
        let _ = self.log.push(Tx {
            at_ms: now,
            airtime_us,
        });
        let used: u64 = self.log.iter().map(|tx| u64::from(tx.airtime_us)).sum();
        let budget = self.band.budget_us();
        let normal_share = budget * NORMAL_SHARE_PERCENT / 100;
        if used > budget || (priority == Priority::Normal && used > normal_share) {
            self.duty_violations += 1;
        }
        if priority == Priority::Alarm && used > normal_share {
            self.alarms_in_reserve += 1;
        }
    }

    fn has_event(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(f)
    }
}

impl Default for Bench {
    fn default() -> Self {
        Bench::new()
    }
}

fn boot(config: NodeConfig, storage: MemStorage, now_ms: u64) -> Result<Node<MemStorage>, Failure> {
    Node::new(config, storage, now_ms).map_err(|_| Failure {
        what: "the scenario's configuration was refused",
        line: line!(),
    })
}

const S: u64 = 1_000;
const MIN: u64 = 60 * S;

/// Reboots at several points of a counter block (right after boot, mid-block, at a
/// block boundary): the hub sees strictly increasing counters throughout, the boot count
/// rises, and the storage is written about once per 32 frames, not per frame.
pub fn counter_never_reused_across_reboot() -> Outcome {
    let mut cfg = config(SensorKind::Temp, 7);
    cfg.report_s = 10;
    cfg.heartbeat_s = 60;
    let mut bench = Bench::new();
    let mut storage = MemStorage::default();
    let mut frames = 0;
    // Run lengths chosen to stop before, at and after 32-frame boundaries.
    for (boot_no, run_s) in [(0u16, 95u64), (1, 400), (2, 0), (3, 330), (4, 2), (5, 600)] {
        let mut node = boot(cfg.clone(), storage, bench.now_ms)?;
        check!(
            node.reboots() == boot_no,
            "boot count did not rise by one per boot"
        );
        node.input(
            bench.now_ms,
            Input::Temperature {
                centi_c: 2_000 + boot_no as i32 * 100,
            },
        );
        node.input(bench.now_ms, Input::Battery { mv: 3_000 });
        let before = node.stats().frames_sent;
        bench.run_until(&mut node, bench.now_ms + run_s * S + 1)?;
        frames += node.stats().frames_sent - before;
        storage = node.into_storage();
    }
    check!(
        bench.hub.bad_frames == 0,
        "the hub could not open an uplink"
    );
    check!(bench.hub.replays == 0, "a counter was reused or went back");
    check!(
        frames > 3 * FCNT_SKIP,
        "too few frames to cross several counter blocks"
    );
    check!(
        storage.writes <= frames / FCNT_SKIP + 6,
        "the counter was stored more often than once per block and boot"
    );
    let last_boot = bench.hub.heartbeats().last().map(|(_, h)| h.reboots);
    check!(
        last_boot == Some(5),
        "the heartbeat does not carry the boot count"
    );
    Ok(())
}

/// A node whose counter store fails sends nothing (it cannot promise a fresh counter after
/// a reboot) and says why; once the store works again it resumes.
pub fn storage_failure_stops_transmissions() -> Outcome {
    let mut bench = Bench::new();
    let storage = MemStorage {
        fail: true,
        ..MemStorage::default()
    };
    let mut node = boot(config(SensorKind::Door, 7), storage, 0)?;
    node.input(0, Input::PanicButton);
    bench.run_until(&mut node, 5 * MIN)?;
    check!(
        bench.hub.uplinks == 0,
        "a frame went out without a stored counter block"
    );
    check!(
        bench.has_event(|e| matches!(e, Event::StorageFailed(_))),
        "the storage failure was not reported"
    );
    let mut storage = node.into_storage();
    storage.fail = false;
    let mut node = boot(config(SensorKind::Door, 7), storage, bench.now_ms)?;
    node.input(bench.now_ms, Input::PanicButton);
    bench.run_until(&mut node, bench.now_ms + MIN)?;
    check!(
        bench.hub.alarms().count() == 1,
        "the alarm did not go out after the store worked"
    );
    Ok(())
}

/// The first three transmissions of an alarm are lost; the fourth is acknowledged. Every
/// copy has the same alarm id and a new fcnt, the gaps grow (backoff), and after the ACK
/// the alarm is never sent again.
pub fn alarm_retried_until_acked_then_stops() -> Outcome {
    let mut bench = Bench::new();
    let mut node = boot(config(SensorKind::Door, 7), MemStorage::default(), 0)?;
    node.input(0, Input::Contact { open: false });
    bench.run_until(&mut node, 10 * S)?;
    bench.hub.lose_alarms = 3;
    node.input(bench.now_ms, Input::Contact { open: true });
    let t0 = bench.now_ms;
    bench.run_until(&mut node, t0 + 60 * MIN)?;
    let acked = bench
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::AlarmAcked {
                    kind: AlarmKind::DoorOpen,
                    active: true,
                    attempts: 4,
                    ..
                }
            )
        })
        .count();
    check!(
        acked == 1,
        "the alarm was not acknowledged exactly once after 4 attempts"
    );
    check!(
        node.alarms_pending() == 0,
        "an acknowledged alarm is still pending"
    );
    check!(
        node.stats().alarm_transmissions == 4,
        "not exactly 4 alarm transmissions"
    );
    // The hub heard only the fourth copy; the node's stats saw all four with growing gaps.
    let heard: Vec<(u64, u32, u16), 8> = bench
        .hub
        .alarms()
        .map(|(s, a)| (s.at_ms, s.fcnt, a.alarm_id))
        .collect();
    check!(
        heard.len() == 1,
        "the hub heard other than the one copy that got through"
    );
    let Some(&(at, fcnt, alarm_id)) = heard.first() else {
        return Err(Failure {
            what: "no alarm heard",
            line: line!(),
        });
    };
    // Attempts at t0, then after >= 2 s, 4 s, 8 s backoffs (plus tx + window each).
    check!(
        at >= t0 + 2 * S + 4 * S + 8 * S,
        "retries came faster than the backoff"
    );
    check!(
        at <= t0 + 3 * S + 6 * S + 12 * S + 3 * 2 * S,
        "retries came later than backoff + jitter"
    );
    check!(
        fcnt > u32::from(alarm_id),
        "a retransmission reused the first copy's fcnt"
    );
    check!(bench.hub.replays == 0, "a counter was reused");
    Ok(())
}

/// A door opens (raise) and closes (end): the end is sent under the raise's alarm id, so
/// the hub ends that alarm's event; the next opening gets a new id.
pub fn an_alarms_end_carries_its_raises_id() -> Outcome {
    let mut bench = Bench::new();
    let mut node = boot(config(SensorKind::Door, 7), MemStorage::default(), 0)?;
    node.input(0, Input::Contact { open: false });
    bench.run_until(&mut node, 10 * S)?;
    node.input(bench.now_ms, Input::Contact { open: true });
    bench.run_until(&mut node, bench.now_ms + 10 * MIN)?;
    node.input(bench.now_ms, Input::Contact { open: false });
    bench.run_until(&mut node, bench.now_ms + 10 * MIN)?;
    node.input(bench.now_ms, Input::Contact { open: true });
    bench.run_until(&mut node, bench.now_ms + 10 * MIN)?;
    let heard: Vec<(bool, u16), 8> = bench
        .hub
        .alarms()
        .filter(|(_, a)| a.kind == AlarmKind::DoorOpen)
        .map(|(_, a)| (a.active, a.alarm_id))
        .collect();
    check!(heard.len() == 3, "not exactly raise, end, raise heard");
    let ids: Vec<u16, 8> = heard.iter().map(|(_, id)| *id).collect();
    let actives: Vec<bool, 8> = heard.iter().map(|(a, _)| *a).collect();
    check!(
        actives.as_slice() == [true, false, true],
        "alarms not heard as raise, end, raise"
    );
    check!(
        ids.first() == ids.get(1),
        "the end has another id than its raise"
    );
    check!(
        ids.get(2) != ids.first(),
        "a new raise reused the ended alarm's id"
    );
    Ok(())
}

/// Nobody acknowledges: the node sends the alarm 1 + 8 times, then gives up, says so,
/// and sends it no more.
pub fn alarm_gives_up_after_max_and_reports() -> Outcome {
    let mut bench = Bench::new();
    bench.hub.ack_alarms = false;
    let mut node = boot(config(SensorKind::Smoke, 7), MemStorage::default(), 0)?;
    node.input(0, Input::Smoke { detected: false });
    bench.run_until(&mut node, 10 * S)?;
    node.input(bench.now_ms, Input::Smoke { detected: true });
    bench.run_until(&mut node, 2 * 60 * MIN)?;
    let copies: Vec<u16, 16> = bench.hub.alarms().map(|(_, a)| a.alarm_id).collect();
    check!(copies.len() == 9, "not 1 + 8 transmissions of the alarm");
    check!(
        copies.iter().all(|id| Some(id) == copies.first()),
        "retransmissions changed the alarm id"
    );
    check!(
        bench.has_event(|e| matches!(
            e,
            Event::AlarmGaveUp {
                kind: AlarmKind::Smoke,
                attempts: 9,
                ..
            }
        )),
        "giving up was not reported"
    );
    check!(
        node.stats().alarms_given_up == 1,
        "giving up was not counted"
    );
    check!(
        node.alarms_pending() == 0,
        "the alarm is still pending after giving up"
    );
    let last = bench.hub.alarms().last().map(|(s, _)| s.at_ms).unwrap_or(0);
    check!(
        last < 30 * MIN,
        "the alarm was still sent long after giving up"
    );
    Ok(())
}

/// At SF12 (about 1.5 s per frame) with a report every 5 s and panic alarms nobody
/// acknowledges, the node wants far more than 1 % of the hour: every transmission stays
/// inside the sliding-hour budget (normal traffic inside its 80 % share), the node
/// waited for the budget, and alarms still went out from the reserve.
pub fn duty_budget_respected() -> Outcome {
    let mut cfg = config(SensorKind::Temp, 12);
    cfg.report_s = 5;
    cfg.heartbeat_s = 120;
    let mut bench = Bench::new();
    bench.hub.ack_alarms = false;
    let mut node = boot(cfg, MemStorage::default(), 0)?;
    let mut t = 0;
    let mut temperature = 2_000;
    while t < 3 * 60 * MIN {
        temperature += 60;
        node.input(
            t,
            Input::Temperature {
                centi_c: temperature % 4_000,
            },
        );
        if t % (4 * MIN) == 0 {
            node.input(t, Input::PanicButton);
        }
        t += 20 * S;
        bench.run_until(&mut node, t)?;
    }
    check!(
        bench.duty_violations == 0,
        "a transmission broke the duty cycle"
    );
    check!(
        node.stats().budget_waits > 0,
        "the budget never held anything back"
    );
    check!(
        bench.alarms_in_reserve > 0,
        "no alarm used the reserve normal traffic may not"
    );
    let used = node.budget().used_us(bench.now_ms, SubBand::G868_0);
    check!(
        used <= SubBand::G868_0.budget_us(),
        "the node's own budget is over the limit"
    );
    Ok(())
}

/// Heartbeats go out at boot and then at most `heartbeat_s` apart (at least 15/16 of it),
/// carry battery, tamper flag, boot count and interval, and follow a new interval set by a
/// downlink command, whose RSSI/SNR the next heartbeat reports.
pub fn heartbeat_schedule() -> Outcome {
    let mut cfg = config(SensorKind::Door, 7);
    cfg.heartbeat_s = 300;
    cfg.report_s = 0;
    let mut bench = Bench::new();
    let mut node = boot(cfg, MemStorage::default(), 0)?;
    node.input(0, Input::Battery { mv: 2_300 });
    bench.run_until(&mut node, 60 * MIN)?;
    let times: Vec<u64, 48> = bench.hub.heartbeats().map(|(s, _)| s.at_ms).collect();
    check!(times.first() == Some(&0), "no heartbeat at boot");
    check!(times.len() >= 12, "fewer heartbeats than one per interval");
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        check!(gap <= 300 * S, "heartbeats further apart than the interval");
        check!(
            gap >= 300 * S * 15 / 16,
            "heartbeats closer than 15/16 of the interval"
        );
    }
    let Some((_, hb)) = bench.hub.heartbeats().last() else {
        return Err(Failure {
            what: "no heartbeat",
            line: line!(),
        });
    };
    check!(
        hb.battery_mv == 2_300 && hb.low_battery(),
        "battery or low-battery flag wrong"
    );
    check!(
        hb.interval_s == 300 && hb.reboots == 0 && !hb.tamper(),
        "heartbeat fields wrong"
    );
    check!(hb.last_rssi == 0, "an RSSI without any downlink");

    // The hub sets 120 s in the window after the next uplink.
    bench.hub.command = Some(Command::SetHeartbeatInterval { seconds: 120 });
    node.input(bench.now_ms, Input::Tamper { open: true });
    let t1 = bench.now_ms;
    bench.run_until(&mut node, t1 + 30 * MIN)?;
    check!(
        node.heartbeat_s() == 120,
        "the interval command was not applied"
    );
    check!(
        bench.has_event(|e| matches!(e, Event::HeartbeatIntervalChanged { seconds: 120 })),
        "the interval change was not reported"
    );
    let later: Vec<(u64, Heartbeat), 48> = bench
        .hub
        .heartbeats()
        .filter(|(s, _)| s.at_ms > t1 + 5 * MIN)
        .map(|(s, h)| (s.at_ms, *h))
        .collect();
    check!(
        later.len() >= 10,
        "heartbeats did not follow the shorter interval"
    );
    for pair in later.windows(2) {
        check!(
            pair[1].0 - pair[0].0 <= 120 * S,
            "heartbeats further apart than the new interval"
        );
    }
    let Some((_, hb)) = later.last() else {
        return Err(Failure {
            what: "no heartbeat after the command",
            line: line!(),
        });
    };
    check!(
        hb.interval_s == 120,
        "the heartbeat does not say the new interval"
    );
    check!(hb.tamper(), "the tamper flag is missing");
    check!(
        hb.last_rssi == RSSI && hb.last_snr == SNR,
        "RSSI/SNR of the downlink not reported"
    );
    Ok(())
}

/// A captured downlink played again in a later window is refused (its down counter is
/// not above the last accepted) and does not act; a forged one (wrong key) is refused and
/// leaves the window open for the hub's real answer.
pub fn downlink_replay_refused() -> Outcome {
    let mut cfg = config(SensorKind::Door, 7);
    cfg.report_s = 0;
    let mut bench = Bench::new();
    let mut node = boot(cfg, MemStorage::default(), 0)?;
    // The hub sets 60 s; an attacker records that downlink.
    bench.hub.command = Some(Command::SetHeartbeatInterval { seconds: 60 });
    bench.run_until(&mut node, 10 * S)?;
    check!(
        node.heartbeat_s() == 60,
        "the first command was not applied"
    );
    let captured = bench.hub.last_downlink.clone();
    // The hub later sets 600 s.
    bench.hub.command = Some(Command::SetHeartbeatInterval { seconds: 600 });
    bench.run_until(&mut node, 2 * MIN)?;
    check!(
        node.heartbeat_s() == 600,
        "the second command was not applied"
    );
    // The attacker replays the first downlink in the window after the next alarm, and a
    // forged ACK sealed with another key.
    let forged = seal_with(&Key([0x55; 16]), 1_000, Downlink::ack(node.fcnt_next()));
    let Some(forged) = forged else {
        return Err(Failure {
            what: "could not seal the forged frame",
            line: line!(),
        });
    };
    let _ = bench.inject.push(captured);
    let _ = bench.inject.push(forged);
    node.input(bench.now_ms, Input::PanicButton);
    bench.run_until(&mut node, 3 * MIN)?;
    check!(
        bench
            .rx
            .iter()
            .any(|r| matches!(r, Err(RxError::Replayed { .. }))),
        "the replayed downlink was not refused as a replay"
    );
    check!(
        bench.rx.iter().any(|r| matches!(r, Err(RxError::Frame(_)))),
        "the forged downlink was not refused"
    );
    check!(node.heartbeat_s() == 600, "the replayed command acted");
    check!(
        node.stats().downlinks_replayed == 1,
        "the replay was not counted"
    );
    check!(
        bench.has_event(|e| matches!(e, Event::AlarmAcked { attempts: 1, .. })),
        "the hub's real ACK after the bad frames was not taken"
    );
    Ok(())
}

/// After a reboot the node still refuses what it accepted before (its high-water mark
/// is in storage), and the hub, which numbers downlinks one by one and so is below that
/// mark, is not locked out: its ACK names the uplink it answers. Downlinks do not write
/// the storage each time.
pub fn downlink_replay_refused_after_reboot() -> Outcome {
    let mut cfg = config(SensorKind::Door, 7);
    cfg.report_s = 0;
    let mut bench = Bench::new();
    let mut node = boot(cfg.clone(), MemStorage::default(), 0)?;
    // The hub sets 60 s (down counter 1), then acknowledges an alarm (2); both recorded.
    bench.hub.command = Some(Command::SetHeartbeatInterval { seconds: 60 });
    bench.run_until(&mut node, 10 * S)?;
    check!(node.heartbeat_s() == 60, "the command was not applied");
    let captured_command = bench.hub.last_downlink.clone();
    node.input(bench.now_ms, Input::PanicButton);
    bench.run_until(&mut node, 20 * S)?;
    check!(
        node.stats().alarms_acked == 1,
        "the first alarm was not acknowledged"
    );
    let captured_ack = bench.hub.last_downlink.clone();
    let writes_before = node.storage().writes;
    // More ACKs (3, 4, ...): within the mark's block, no storage write for them.
    for _ in 0..5 {
        node.input(bench.now_ms, Input::PanicButton);
        bench.run_until(&mut node, bench.now_ms + 10 * S)?;
    }
    check!(
        node.stats().alarms_acked == 6,
        "an alarm before the reboot was not acknowledged"
    );
    check!(
        node.storage().writes == writes_before,
        "a downlink within the stored block wrote the storage"
    );

    let mut node = boot(cfg, node.into_storage(), bench.now_ms)?;
    check!(
        node.heartbeat_s() == 300,
        "the rebooted node did not start from its configuration"
    );
    let _ = bench.inject.push(captured_command);
    let _ = bench.inject.push(captured_ack);
    node.input(bench.now_ms, Input::PanicButton);
    bench.run_until(&mut node, bench.now_ms + 10 * S)?;
    let replays = bench
        .rx
        .iter()
        .rev()
        .take(3)
        .filter(|r| matches!(r, Err(RxError::Replayed { .. })))
        .count();
    check!(
        replays == 2,
        "a downlink recorded before the reboot was not refused as a replay"
    );
    check!(
        node.stats().downlinks_replayed == 2,
        "the replays were not counted"
    );
    check!(node.heartbeat_s() == 300, "the replayed command acted");
    check!(
        node.stats().alarms_acked == 1,
        "the hub's ACK after the reboot (below the mark) was refused: hub locked out"
    );
    check!(
        bench.has_event(|e| matches!(e, Event::AlarmAcked { attempts: 1, .. })),
        "the alarm after the reboot needed more than one transmission"
    );
    // The hub goes on: its commands and ACKs are taken.
    bench.hub.command = Some(Command::SetHeartbeatInterval { seconds: 120 });
    node.input(bench.now_ms, Input::PanicButton);
    bench.run_until(&mut node, bench.now_ms + 10 * S)?;
    check!(
        node.heartbeat_s() == 120 && node.stats().alarms_acked == 2,
        "the hub's downlink after the first one since the reboot was refused"
    );
    check!(
        bench.hub.replays == 0 && bench.hub.bad_frames == 0,
        "the hub refused an uplink"
    );
    Ok(())
}

/// A door node reports its first contact reading at once and every `report_s`; a
/// temperature node reports a change of 0.5 degC or more at once and ignores smaller ones.
pub fn reports_on_change_and_periodically() -> Outcome {
    periodic_door_reports()?;
    temperature_reports_on_change()
}

// Separate frames, so the two benches never share the 16 KiB of a Cortex-M test image.
#[inline(never)]
fn periodic_door_reports() -> Outcome {
    let mut cfg = config(SensorKind::Door, 7);
    cfg.report_s = 600;
    cfg.heartbeat_s = 3_600;
    let mut bench = Bench::new();
    let mut node = boot(cfg, MemStorage::default(), 0)?;
    node.input(0, Input::Contact { open: false });
    node.input(0, Input::Battery { mv: 3_100 });
    bench.run_until(&mut node, 31 * MIN)?;
    let reports: Vec<(u64, i32), 16> = bench
        .hub
        .seen
        .iter()
        .filter_map(|s| match s.payload {
            SeenPayload::Report { contact, .. } => Some((s.at_ms, contact?)),
            _ => None,
        })
        .collect();
    check!(
        reports.len() == 4,
        "not a report at boot and one per 10 minutes"
    );
    check!(
        reports.iter().all(|&(_, v)| v == 0),
        "the contact reading is wrong"
    );
    for pair in reports.windows(2) {
        check!(
            pair[1].0 - pair[0].0 == 600 * S,
            "periodic reports not 10 minutes apart"
        );
    }
    Ok(())
}

#[inline(never)]
fn temperature_reports_on_change() -> Outcome {
    let mut cfg = config(SensorKind::Temp, 7);
    cfg.report_s = 0;
    let mut bench = Bench::new();
    let mut node = boot(cfg, MemStorage::default(), 0)?;
    node.input(0, Input::Temperature { centi_c: 2_000 });
    bench.run_until(&mut node, MIN)?;
    node.input(bench.now_ms, Input::Temperature { centi_c: 2_030 });
    bench.run_until(&mut node, 2 * MIN)?;
    node.input(bench.now_ms, Input::Temperature { centi_c: 2_060 });
    bench.run_until(&mut node, 3 * MIN)?;
    let temps: Vec<i32, 8> = bench
        .hub
        .seen
        .iter()
        .filter_map(|s| match s.payload {
            SeenPayload::Report { temperature, .. } => temperature,
            _ => None,
        })
        .collect();
    check!(
        temps.as_slice() == [2_000, 2_060],
        "reports not on a 0.5 degC change only"
    );
    Ok(())
}
