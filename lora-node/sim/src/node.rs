//! One simulated node: the firmware's [`Node`] core driven by the real clock (the air's
//! microseconds, so that its receive windows line up with the forwarder's transmit
//! times), with an [`AirClient`] as its radio and scripted sensor inputs.
//!
//! The radio behaves as a node's SX1262 does: it is asleep except in the receive windows
//! the core asks for ([`Action::Listen`]). The simulator registers the radio with the air
//! on the node's channel only for those windows and parks it on [`SLEEP_FREQ_HZ`]
//! otherwise, so the air delivers a node only what it could hear — and does not copy
//! every uplink to 200 sleeping sockets.
//!
//! The script, per node kind: the first readings at boot (contact closed, no smoke, 21.5
//! degC and 45 % humidity, battery 3000 mV); every `alarm_every` (its first at a random
//! time in the first interval) an alarm is raised and, `alarm_hold` later, ended: a door
//! opens and closes, smoke is detected and clears, the temperature rises above the
//! node's threshold and falls back; a PIR detects motion (its alarm has no end).

use crate::args::SimConfig;
use crate::provisioning::SensorSpec;
use crate::rng::SplitMix64;
use crate::summary::NodeReport;
use gatehouse_lora_proto::air::AirClient;
use gatehouse_lora_proto::{
    open, seal, DevAddr, Dir, Frame, Heartbeat, Key, Modulation, Payload, MAX_FRAME_LEN,
};
use lora_node_core::{
    Action, Event, Input, MemStorage, Node, NodeConfig, RadioParams, SensorKind, Transmit,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where a sleeping radio is parked: a frequency no transmitter uses.
pub const SLEEP_FREQ_HZ: u32 = 1;
/// Temperatures of the script, centi-degC: normal, and above the default alarm threshold.
const TEMP_NORMAL: i32 = 2_150;
const TEMP_HIGH: i32 = 5_200;
/// The longest a loop iteration blocks, so that a stop is noticed.
const MAX_BLOCK: Duration = Duration::from_millis(200);

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("node {name}: cannot reach the air at {air}: {source}")]
    Air {
        name: String,
        air: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("node {name}: {message}")]
    Config { name: String, message: String },
}

/// What the run does to this node besides its script.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// Stop after this long (from the node's start), once the hub has acknowledged one
    /// of its alarms (the node presses its panic button at boot for that): the hub
    /// supervises only sensors it has heard. Such a node starts with the run.
    pub silence_after: Option<Duration>,
    /// Re-send the last acknowledged alarm frame verbatim at these times (from the run's start).
    pub replay_at: Vec<Duration>,
    /// Send a forged heartbeat at these times (from the run's start).
    pub forge_at: Vec<Duration>,
}

/// A scripted input, at a time from the run's start.
#[derive(Debug, Clone, Copy)]
struct Scripted {
    at: Duration,
    input: Input,
    /// Raises an alarm (not sent after the run's duration).
    raise: bool,
}

/// The node's inputs over the run, in time order.
fn script(
    spec: &SensorSpec,
    cfg: &SimConfig,
    start: Duration,
    rng: &mut SplitMix64,
) -> Vec<Scripted> {
    let at_start = |input| Scripted {
        at: start,
        input,
        raise: false,
    };
    let mut s = vec![at_start(Input::Battery { mv: 3_000 })];
    match spec.kind {
        SensorKind::Door => s.push(at_start(Input::Contact { open: false })),
        SensorKind::Pir => {}
        SensorKind::Smoke => s.push(at_start(Input::Smoke { detected: false })),
        SensorKind::Temp => {
            s.push(at_start(Input::Temperature {
                centi_c: TEMP_NORMAL,
            }));
            s.push(at_start(Input::Humidity { centi_pct: 4_500 }));
        }
    }
    if let Some(every) = cfg.alarm_every {
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut at = start + Duration::from_millis(rng.below(every_ms));
        while at < cfg.duration {
            let (raise, end) = match spec.kind {
                SensorKind::Door => (
                    Input::Contact { open: true },
                    Some(Input::Contact { open: false }),
                ),
                SensorKind::Pir => (Input::Motion, None),
                SensorKind::Smoke => (
                    Input::Smoke { detected: true },
                    Some(Input::Smoke { detected: false }),
                ),
                SensorKind::Temp => (
                    Input::Temperature { centi_c: TEMP_HIGH },
                    Some(Input::Temperature {
                        centi_c: TEMP_NORMAL,
                    }),
                ),
            };
            s.push(Scripted {
                at,
                input: raise,
                raise: true,
            });
            if let Some(end) = end {
                s.push(Scripted {
                    at: at + cfg.alarm_hold,
                    input: end,
                    raise: false,
                });
            }
            at += every;
        }
    }
    s.sort_by_key(|x| x.at);
    s
}

/// The node core's configuration from its provisioning and the run's policy.
fn node_config(spec: &SensorSpec, cfg: &SimConfig) -> Result<NodeConfig, NodeError> {
    let err = |message: String| NodeError::Config {
        name: spec.name.clone(),
        message,
    };
    let modulation = Modulation::lora(spec.spreading_factor, spec.bandwidth_hz);
    modulation.check().map_err(|e| err(e.to_string()))?;
    let mut c = NodeConfig::new(
        DevAddr(spec.dev_addr),
        Key(spec.key),
        spec.kind,
        RadioParams {
            freq_hz: spec.frequency_hz,
            modulation,
        },
    );
    c.heartbeat_s = u16::try_from(spec.heartbeat_s).map_err(|_| {
        err(format!(
            "heartbeat_s {} is above the node's limit of 65535",
            spec.heartbeat_s
        ))
    })?;
    c.report_s = cfg.report_every_s;
    if let Some(ms) = cfg.alarm_backoff_ms {
        c.alarm_backoff_ms = ms;
    }
    if let Some(ms) = cfg.alarm_backoff_max_ms {
        c.alarm_backoff_max_ms = ms;
    }
    c.validate().map_err(|e| err(e.to_string()))?;
    Ok(c)
}

/// The node's radio: an air client, asleep unless listening.
struct Radio {
    air: AirClient,
    freq_hz: u32,
    sf: u8,
    listening: bool,
}

impl Radio {
    fn listen(&mut self, on: bool) -> std::io::Result<()> {
        if on != self.listening {
            let (f, sf) = if on {
                (self.freq_hz, self.sf)
            } else {
                (SLEEP_FREQ_HZ, self.sf)
            };
            self.air.set_channel(f, sf)?;
            self.listening = on;
        }
        Ok(())
    }

    fn now_ms(&self) -> u64 {
        self.air.now_us() / 1_000
    }

    /// Transmits on the node's channel now; the air time the transmission ends, µs.
    fn send(&self, bytes: &[u8], airtime_us: u32) -> std::io::Result<u64> {
        let start = self.air.now_us();
        self.air
            .send_at(start, self.freq_hz, self.sf, bytes, airtime_us)?;
        Ok(start + u64::from(airtime_us))
    }
}

/// Runs one node until the run (and its drain) is over, it is silenced, or `stop` is set.
pub fn run(
    index: usize,
    spec: SensorSpec,
    cfg: &SimConfig,
    extras: Extras,
    run_start: Instant,
    stop: &AtomicBool,
) -> Result<NodeReport, NodeError> {
    let mut rng = SplitMix64::new(cfg.seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
    let spread_ms = u64::try_from(cfg.start_spread.as_millis()).unwrap_or(0);
    let start = if extras.silence_after.is_some() {
        Duration::ZERO
    } else {
        Duration::from_millis(rng.below(spread_ms + 1))
    };
    let config = node_config(&spec, cfg)?;
    let mut report = NodeReport {
        name: spec.name.clone(),
        dev_addr: format!("{:08x}", spec.dev_addr),
        ..NodeReport::default()
    };
    let mut inputs = script(&spec, cfg, start, &mut rng);
    inputs.reverse(); // popped from the end, earliest first
    let mut replays = extras.replay_at.clone();
    let mut forgeries = extras.forge_at.clone();
    let end_of_run = cfg.duration + cfg.drain;

    sleep_until(run_start + start, stop);
    if stop.load(Ordering::Relaxed) {
        return Ok(report);
    }
    let air_err = |source| NodeError::Air {
        name: spec.name.clone(),
        air: cfg.air,
        source,
    };
    let air = AirClient::connect(cfg.air, SLEEP_FREQ_HZ, spec.spreading_factor).map_err(air_err)?;
    let mut radio = Radio {
        air,
        freq_hz: spec.frequency_hz,
        sf: spec.spreading_factor,
        listening: false,
    };
    let booted = Instant::now();
    let mut node = Node::new(config, MemStorage::default(), radio.now_ms()).map_err(|e| {
        NodeError::Config {
            name: spec.name.clone(),
            message: e.to_string(),
        }
    })?;
    // The last transmission of each alarm, and the one the hub acknowledged last: what
    // --replay sends (the hub certainly accepted it, so its counter is certainly old).
    // Keyed by (alarm id, active): an alarm's end is sent under its raise's id.
    let mut alarm_frames: HashMap<(u16, bool), Vec<u8>> = HashMap::new();
    let mut acked_frame: Option<Vec<u8>> = None;
    let mut panic_pressed = false;
    // (alarm_id, active) of every alarm sent (to count each once).
    let mut sent_alarms: HashSet<(u16, bool)> = HashSet::new();
    let modulation = node.config().radio.modulation;

    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let elapsed = run_start.elapsed();
        if let Some(after) = extras.silence_after {
            if !panic_pressed {
                node.input(radio.now_ms(), Input::PanicButton);
                panic_pressed = true;
            }
            if booted.elapsed() >= after && acked_frame.is_some() {
                report.silenced_after_ms =
                    Some(u64::try_from(booted.elapsed().as_millis()).unwrap_or(u64::MAX));
                break;
            }
        }
        if elapsed >= end_of_run {
            break;
        }
        // Scripted inputs whose time has come.
        while inputs.last().is_some_and(|s| s.at <= elapsed) {
            if let Some(s) = inputs.pop() {
                if !(s.raise && elapsed >= cfg.duration) {
                    node.input(radio.now_ms(), s.input);
                }
            }
        }
        if elapsed >= cfg.duration
            && node.alarms_pending() == 0
            && inputs.iter().all(|s| s.raise)
            && replays.is_empty()
            && forgeries.is_empty()
        {
            break;
        }
        // Replays and forgeries due.
        if let Some(i) = replays.iter().position(|t| *t <= elapsed) {
            if let Some(bytes) = &acked_frame {
                replays.remove(i);
                let airtime = modulation.airtime_us(bytes.len());
                radio.send(bytes, airtime).map_err(air_err)?;
                report.replays += 1;
            } else if !panic_pressed && node.alarms_pending() == 0 {
                // Nothing acknowledged to replay yet: make an alarm.
                node.input(radio.now_ms(), Input::PanicButton);
                panic_pressed = true;
            }
        }
        if let Some(i) = forgeries.iter().position(|t| *t <= elapsed) {
            forgeries.remove(i);
            let bytes = forge(&spec, node.fcnt_next().saturating_add(1_000), &mut rng);
            let airtime = modulation.airtime_us(bytes.len());
            radio.send(&bytes, airtime).map_err(air_err)?;
            report.forgeries += 1;
        }

        let now_ms = radio.now_ms();
        match node.poll(now_ms) {
            Action::Transmit(tx) => {
                radio.listen(false).map_err(air_err)?;
                let end_us = radio.send(&tx.bytes, tx.airtime_us).map_err(air_err)?;
                if let Some(alarm) = account(&mut report, &tx, &spec, &mut sent_alarms) {
                    alarm_frames.insert(alarm, tx.bytes.to_vec());
                }
                node.tx_done(end_us.div_ceil(1_000));
            }
            Action::Listen { until_ms, .. } => {
                radio.listen(true).map_err(air_err)?;
                // A downlink that started in the window is received to its end.
                let closes_us = until_ms.saturating_mul(1_000);
                let tail_us = u64::from(modulation.airtime_us(MAX_FRAME_LEN));
                let mut done = false;
                while !done && !stop.load(Ordering::Relaxed) {
                    let now_us = radio.air.now_us();
                    if now_us >= closes_us + tail_us {
                        break;
                    }
                    let wait = Duration::from_micros(closes_us + tail_us - now_us).min(MAX_BLOCK);
                    match radio.air.recv_timeout(wait).map_err(air_err)? {
                        None => {}
                        Some(p) => {
                            let began_us = p
                                .end_us
                                .saturating_sub(u64::from(modulation.airtime_us(p.bytes.len())));
                            if began_us > closes_us {
                                continue;
                            }
                            let snr = p.snr.round().clamp(-128.0, 127.0) as i8;
                            if node
                                .received(p.end_us / 1_000, &p.bytes, p.rssi, snr)
                                .is_ok()
                            {
                                report.downlinks += 1;
                                done = true;
                            }
                        }
                    }
                }
                // Without an accepted downlink, the next poll (past the window) closes it.
                radio.listen(false).map_err(air_err)?;
            }
            Action::Sleep { until_ms } => {
                radio.listen(false).map_err(air_err)?;
                let mut wake = Duration::from_millis(until_ms.saturating_sub(now_ms));
                let elapsed = run_start.elapsed();
                if let Some(next) = inputs.last() {
                    wake = wake.min(next.at.saturating_sub(elapsed));
                }
                for t in replays.iter().chain(forgeries.iter()) {
                    wake = wake.min(t.saturating_sub(elapsed));
                }
                if let (Some(after), Some(_)) = (extras.silence_after, &acked_frame) {
                    wake = wake.min(after.saturating_sub(booted.elapsed()));
                }
                wake = wake.min(end_of_run.saturating_sub(elapsed)).min(MAX_BLOCK);
                if elapsed < cfg.duration {
                    wake = wake.min(cfg.duration - elapsed);
                }
                if !wake.is_zero() {
                    std::thread::sleep(wake);
                }
            }
        }
        while let Some(e) = node.event() {
            match e {
                Event::AlarmAcked {
                    alarm_id, active, ..
                } => {
                    report.alarms_acked += 1;
                    if let Some(bytes) = alarm_frames.remove(&(alarm_id, active)) {
                        acked_frame = Some(bytes);
                    }
                    report
                        .alarm_ids_acked
                        .push(format!("{alarm_id}:{}", u8::from(active)));
                }
                Event::AlarmGaveUp {
                    alarm_id, active, ..
                } => {
                    report.alarms_gave_up += 1;
                    report
                        .alarm_ids_gave_up
                        .push(format!("{alarm_id}:{}", u8::from(active)));
                }
                _ => {}
            }
        }
    }
    // Alarms sent and not acknowledged or given up (one never sent is not counted).
    let unanswered = report
        .alarms_sent
        .saturating_sub(report.alarms_acked + report.alarms_gave_up);
    if report.silenced_after_ms.is_some() {
        report.alarms_cut_off = unanswered;
    } else {
        // Also those raised and never sent.
        report.alarms_pending = unanswered.max(node.alarms_pending() as u64);
    }
    let st = node.stats();
    report.duty_waits = u64::from(st.budget_waits);
    report.airtime_us = st.airtime_us;
    Ok(report)
}

/// Counts a transmission: its type, and a new alarm the first time its id goes out.
/// Returns the (alarm id, active) of an alarm frame.
fn account(
    report: &mut NodeReport,
    tx: &Transmit,
    spec: &SensorSpec,
    sent_alarms: &mut HashSet<(u16, bool)>,
) -> Option<(u16, bool)> {
    report.frames += 1;
    match open(&tx.bytes, &Key(spec.key), Dir::Up).map(|f| f.payload) {
        Ok(Payload::Alarm(a)) => {
            report.alarm_frames += 1;
            if sent_alarms.insert((a.alarm_id, a.active)) {
                report.alarms_sent += 1;
                report
                    .alarm_ids_sent
                    .push(format!("{}:{}", a.alarm_id, u8::from(a.active)));
            }
            return Some((a.alarm_id, a.active));
        }
        Ok(Payload::Report(_)) => report.reports += 1,
        Ok(Payload::Heartbeat(_)) => report.heartbeats += 1,
        Ok(Payload::Downlink(_)) | Err(_) => {}
    }
    None
}

/// A heartbeat with the node's address and counter `fcnt`, sealed with a key that is not
/// the node's: its MIC cannot match at the hub.
fn forge(spec: &SensorSpec, fcnt: u32, rng: &mut SplitMix64) -> Vec<u8> {
    let mut key = [0u8; 16];
    for k in key.iter_mut() {
        *k = rng.next_u32() as u8;
    }
    if key == spec.key {
        key[0] ^= 0xff;
    }
    let frame = Frame::new(
        DevAddr(spec.dev_addr),
        fcnt,
        Payload::Heartbeat(Heartbeat {
            battery_mv: 3_000,
            interval_s: u16::try_from(spec.heartbeat_s).unwrap_or(u16::MAX),
            ..Heartbeat::default()
        }),
    );
    let mut buf = [0u8; MAX_FRAME_LEN];
    match seal(&frame, &Key(key), Dir::Up, &mut buf) {
        Ok(n) => buf[..n].to_vec(),
        // A heartbeat always fits; should sealing ever fail, garbage of a frame's length
        // is just as forged.
        Err(_) => key.repeat(2),
    }
}

fn sleep_until(t: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let left = t.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(MAX_BLOCK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provisioning::parse;

    fn spec() -> SensorSpec {
        parse(
            "[[sensor]]\nname = \"d\"\nkind = \"door\"\ndev_addr = \"26000001\"\n\
             key = \"000102030405060708090a0b0c0d0e0f\"\nheartbeat_s = 30\n",
            "t",
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn forged_frame_has_the_address_but_not_the_key() {
        let s = spec();
        let bytes = forge(&s, 77, &mut SplitMix64::new(3));
        let h = gatehouse_lora_proto::peek(&bytes).unwrap();
        assert_eq!((h.dev_addr, h.fcnt), (DevAddr(s.dev_addr), 77));
        assert_eq!(
            open(&bytes, &Key(s.key), Dir::Up).unwrap_err(),
            gatehouse_lora_proto::FrameError::BadMic
        );
    }
}
