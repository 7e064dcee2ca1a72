//! [`Node`]: the sensor node's behaviour as a sans-IO state machine.
//!
//! The board (or the host simulator) tells the node what happened, with the current
//! monotonic time in milliseconds, and asks it what to do:
//!
//! ```text
//! let mut node = Node::new(config, storage, now_ms)?;
//! loop {
//!     match node.poll(now_ms) {
//!         Action::Transmit(tx) => { radio.send(&tx.bytes); node.tx_done(end_of_tx_ms) }
//!                                  // or node.tx_failed(now_ms) when the radio failed
//!         Action::Listen { until_ms, .. } => match radio.receive_until(until_ms) {
//!             Some(rx) => { let _ = node.received(now_ms, &rx.bytes, rx.rssi, rx.snr); }
//!             None => {}                      // the next poll closes the window
//!         },
//!         Action::Sleep { until_ms } => { /* sleep until then or a sensor interrupt */ }
//!     }
//!     node.input(now_ms, Input::Contact { open: true }); // whenever a sensor changed
//!     while let Some(event) = node.event() { /* log: acked, gave up, ... */ }
//! }
//! ```
//!
//! What it promises:
//! - **Counters**: every uplink has a higher fcnt than every uplink before it, also across
//!   reboots ([`crate::storage`]: blocks of [`FCNT_SKIP`] reserved in [`Storage`] before
//!   use; if the store fails nothing is sent).
//! - **Duty cycle**: a frame is handed out only if the [`DutyBudget`] of its EU868 sub-band
//!   accepts it at that moment (alarms at [`Priority::Alarm`], everything else at
//!   [`Priority::Normal`], which leaves a fifth of the hour to alarms); otherwise the node
//!   sleeps until the budget has room.
//! - **Receive window**: after every uplink (class A) it listens once,
//!   [`RX1_DELAY_US`] after the end of the transmission, for [`RX_WINDOW_US`].
//! - **Alarms** are sent confirmed. An alarm is done when the downlink in the window after
//!   one of its transmissions acknowledges that transmission's fcnt; otherwise it is sent
//!   again (a new fcnt, the same `alarm_id`) after a backoff doubling from
//!   `alarm_backoff_ms` up to `alarm_backoff_max_ms`, plus up to half of it as jitter,
//!   at most `alarm_retries` times; then the node gives up and says so
//!   ([`Event::AlarmGaveUp`]). Alarms take precedence over heartbeats and reports; an
//!   alarm in backoff does not hold back a newer one. At most [`MAX_ALARMS`] wait; a
//!   further one pushes out the oldest not yet sent ([`Event::AlarmDropped`]). An
//!   `alarm_id` is the low 16 bits of the fcnt of its first transmission, so ids do not
//!   repeat after a reboot; the end of an alarm (active = 0) is sent under the id of the
//!   raise it ends, so the hub closes that alarm's event.
//! - **Heartbeats**: at boot and then every `heartbeat_s` minus up to 1/16 of it as
//!   jitter (never later than the interval, so the hub's supervision holds): battery,
//!   tamper/external power/low battery flags, boot count, RSSI/SNR of the last downlink,
//!   the interval.
//! - **Reports**: when a reading changed (the first reading of a quantity, a contact or
//!   smoke change, motion, a temperature change of `temperature_delta` or more) and every
//!   `report_s` (0: on change only); one report carries the latest value of every
//!   quantity of the node's kind, and its battery.
//! - **Downlinks** are believed only if they open with the node's key in the down
//!   direction, are for this node, and their counter is above the last accepted one
//!   (replays are refused: [`RxError::Replayed`]). They may acknowledge an alarm and may
//!   set the heartbeat interval.
//!
//! Nothing here allocates, blocks or panics on any input.

use core::fmt;

use gatehouse_lora_proto::airtime::Modulation;
use gatehouse_lora_proto::duty::{DutyBudget, Priority, SubBand};
use gatehouse_lora_proto::link::{RX1_DELAY_US, RX_WINDOW_US};
use gatehouse_lora_proto::{
    open, seal, Alarm, AlarmKind, Command, Dir, Downlink, Frame, FrameError, Heartbeat, MType,
    Payload, Quantity, Reading, Report, MAX_FRAME_LEN,
};
use heapless::{Deque, Vec};

use crate::config::{NodeConfig, SensorKind, TEMPERATURE_HYSTERESIS};
use crate::rng::Jitter;
use crate::storage::{Storage, StorageError, Stored, FCNT_SKIP};
use crate::ConfigError;

/// Alarms that can wait for transmission or acknowledgement at once.
pub const MAX_ALARMS: usize = 8;
/// Events kept until the board drains them with [`Node::event`].
pub const MAX_EVENTS: usize = 8;
/// How long after the expected end of a transmission the node assumes the radio failed
/// when the board reported neither [`Node::tx_done`] nor [`Node::tx_failed`].
pub const TX_TIMEOUT_GRACE_MS: u64 = 1_000;
/// How long the node waits before trying a failed counter store again.
pub const STORAGE_RETRY_MS: u64 = 10_000;

const RX1_DELAY_MS: u64 = RX1_DELAY_US / 1_000;
const RX_WINDOW_MS: u64 = RX_WINDOW_US / 1_000;

/// A change the board observed (debounced), fed with [`Node::input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The door/window contact: alarm `door_open` (active on opening, ended on closing).
    Contact { open: bool },
    /// The PIR detected motion: alarm `motion` (value: detections since the last report).
    Motion,
    /// The smoke detector's state: alarm `smoke`.
    Smoke { detected: bool },
    /// A temperature measurement in centi-degC: alarm `temperature_high` above the
    /// configured threshold.
    Temperature { centi_c: i32 },
    /// A humidity measurement in centi-percent.
    Humidity { centi_pct: i32 },
    /// A battery measurement in millivolts.
    Battery { mv: u16 },
    /// Whether external power is present.
    ExternalPower { present: bool },
    /// The enclosure's tamper switch: alarm `tamper` when opened.
    Tamper { open: bool },
    /// The panic button was pressed: alarm `panic_button`.
    PanicButton,
}

/// A sealed frame to put on the air now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub bytes: Vec<u8, MAX_FRAME_LEN>,
    pub fcnt: u32,
    pub mtype: MType,
    pub freq_hz: u32,
    pub modulation: Modulation,
    /// Time on air, already recorded in the node's duty budget.
    pub airtime_us: u32,
    pub priority: Priority,
}

/// What the board should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Transmit these bytes now, then call [`Node::tx_done`] with the time the
    /// transmission ended (or [`Node::tx_failed`]).
    Transmit(Transmit),
    /// Listen on this channel until `until_ms`; hand what arrives to [`Node::received`].
    Listen {
        freq_hz: u32,
        modulation: Modulation,
        until_ms: u64,
    },
    /// Nothing to do until `until_ms`, unless an input comes first.
    Sleep { until_ms: u64 },
}

/// Things the board may want to log or count (drained with [`Node::event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The hub acknowledged the alarm after `attempts` transmissions.
    AlarmAcked {
        alarm_id: u16,
        kind: AlarmKind,
        active: bool,
        attempts: u8,
    },
    /// No acknowledgement after `attempts` transmissions: the node stopped sending it.
    AlarmGaveUp {
        alarm_id: u16,
        kind: AlarmKind,
        active: bool,
        attempts: u8,
    },
    /// The alarm queue was full: this alarm (never sent) was pushed out by a newer one.
    AlarmDropped { kind: AlarmKind, active: bool },
    /// The hub set the heartbeat interval.
    HeartbeatIntervalChanged { seconds: u16 },
    /// Persisting the counter failed: nothing is sent until a store succeeds.
    StorageFailed(StorageError),
    /// The frame counter reached its end: the node must be provisioned again (new key).
    CountersExhausted,
}

/// Why a received frame was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RxError {
    /// No receive window is open.
    NotListening,
    /// Not a valid frame for this node's key (bad MIC, malformed, ...).
    Frame(FrameError),
    /// A valid frame for another device address.
    OtherDevice(u32),
    /// A valid frame that is not a downlink.
    NotADownlink(MType),
    /// Its down counter is not above the last accepted one: a replay.
    Replayed { fcnt: u32, last: u32 },
}

impl fmt::Display for RxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RxError::NotListening => f.write_str("frame received outside a receive window"),
            RxError::Frame(e) => write!(f, "downlink refused: {e}"),
            RxError::OtherDevice(a) => write!(f, "downlink for device {a:08x}, not this node"),
            RxError::NotADownlink(t) => write!(f, "a {t} frame where a downlink was expected"),
            RxError::Replayed { fcnt, last } => write!(
                f,
                "replayed downlink: counter {fcnt} is not above the last accepted {last}"
            ),
        }
    }
}

/// Counters of what the node did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub frames_sent: u32,
    pub alarm_transmissions: u32,
    pub alarms_acked: u32,
    pub alarms_given_up: u32,
    pub alarms_dropped: u32,
    pub heartbeats_sent: u32,
    pub reports_sent: u32,
    pub airtime_us: u64,
    pub downlinks_accepted: u32,
    pub downlinks_replayed: u32,
    pub downlinks_refused: u32,
    /// Polls at which a due frame had to wait for the duty budget.
    pub budget_waits: u32,
    pub storage_errors: u32,
    pub tx_failures: u32,
    pub events_dropped: u32,
}

#[derive(Debug, Clone, Copy)]
struct PendingAlarm {
    kind: AlarmKind,
    active: bool,
    value: i32,
    /// Set at the first transmission.
    alarm_id: Option<u16>,
    attempts: u8,
    next_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// An alarm is named by its id and whether it is a raise or an end (an end shares
    /// its raise's id).
    Alarm {
        alarm_id: u16,
        active: bool,
    },
    Heartbeat,
    Report,
}

#[derive(Debug, Clone, Copy)]
enum Radio {
    Idle,
    Transmitting {
        sent: Sent,
        fcnt: u32,
        deadline_ms: u64,
    },
    WaitRx {
        sent: Sent,
        fcnt: u32,
        opens_ms: u64,
        closes_ms: u64,
    },
}

/// The latest readings, for reports and heartbeats.
#[derive(Debug, Clone, Copy, Default)]
struct Readings {
    contact_open: Option<bool>,
    motion_count: i32,
    smoke: Option<bool>,
    temperature: Option<i32>,
    temperature_reported: Option<i32>,
    temperature_alarm: bool,
    humidity: Option<i32>,
    battery_mv: Option<u16>,
    external_power: bool,
    tamper_open: bool,
}

/// What the node would send next, before it is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Alarm(usize),
    Heartbeat,
    Report,
}

/// The sensor node (see the module docs).
pub struct Node<S: Storage> {
    config: NodeConfig,
    band: SubBand,
    storage: S,
    budget: DutyBudget,
    jitter: Jitter,
    reboots: u16,
    fcnt_next: u32,
    /// Counters below this are covered by the last successful store.
    reserved_until: u32,
    radio: Radio,
    alarms: Vec<PendingAlarm, MAX_ALARMS>,
    /// Per alarm kind (by code), the id of the last raise sent and not yet ended: its
    /// end is sent under the same id, so the hub ends that alarm's event.
    raised_ids: [Option<u16>; 8],
    heartbeat_due_ms: u64,
    last_heartbeat_ms: Option<u64>,
    report_pending: bool,
    report_due_ms: Option<u64>,
    storage_retry_ms: Option<u64>,
    readings: Readings,
    last_down: Option<u32>,
    last_rssi: i16,
    last_snr: i8,
    events: Deque<Event, MAX_EVENTS>,
    stats: Stats,
}

impl<S: Storage> Node<S> {
    /// Boots the node: reads the counter block from `storage` and resumes after it (the
    /// first transmission stores the next block and the boot count). The first heartbeat
    /// is due at once.
    pub fn new(config: NodeConfig, mut storage: S, now_ms: u64) -> Result<Node<S>, ConfigError> {
        let band = config.validate()?;
        let (fcnt_next, reboots) = match storage.load() {
            Some(stored) => (
                stored.fcnt.saturating_add(FCNT_SKIP),
                stored.reboots.saturating_add(1),
            ),
            // 0 means "no uplink" in the hub's ack field: start at 1.
            None => (1, 0),
        };
        let jitter = Jitter::new(config.dev_addr.0, &config.key.0, reboots);
        let report_due_ms = (config.report_s > 0).then_some(now_ms);
        Ok(Node {
            config,
            band,
            storage,
            budget: DutyBudget::new(),
            jitter,
            reboots,
            fcnt_next,
            reserved_until: 0,
            radio: Radio::Idle,
            alarms: Vec::new(),
            raised_ids: [None; 8],
            heartbeat_due_ms: now_ms,
            last_heartbeat_ms: None,
            report_pending: false,
            report_due_ms,
            storage_retry_ms: None,
            readings: Readings::default(),
            last_down: None,
            last_rssi: 0,
            last_snr: 0,
            events: Deque::new(),
            stats: Stats::default(),
        })
    }

    /// Gives the storage back (a test or the simulator "reboots" the node with it).
    pub fn into_storage(self) -> S {
        self.storage
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The duty budget of this node's transmissions.
    pub fn budget(&self) -> &DutyBudget {
        &self.budget
    }

    /// The sub-band of the configured frequency.
    pub fn band(&self) -> SubBand {
        self.band
    }

    /// The counter the next uplink will carry.
    pub fn fcnt_next(&self) -> u32 {
        self.fcnt_next
    }

    /// Boots since provisioning (0 on the first).
    pub fn reboots(&self) -> u16 {
        self.reboots
    }

    /// The heartbeat interval in force (the hub may have changed it).
    pub fn heartbeat_s(&self) -> u16 {
        self.config.heartbeat_s
    }

    /// Alarms waiting for transmission or acknowledgement.
    pub fn alarms_pending(&self) -> usize {
        self.alarms.len()
    }

    /// The next thing that happened worth logging.
    pub fn event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A sensor changed (see [`Input`] for what each raises).
    pub fn input(&mut self, now_ms: u64, input: Input) {
        let r = &mut self.readings;
        match input {
            Input::Contact { open } => {
                let before = r.contact_open.replace(open);
                match before {
                    Some(was) if was != open => {
                        self.raise(now_ms, AlarmKind::DoorOpen, open, i32::from(open))
                    }
                    Some(_) => {}
                    None => self.report_pending = true,
                }
            }
            Input::Motion => {
                r.motion_count = r.motion_count.saturating_add(1);
                let count = r.motion_count;
                self.raise(now_ms, AlarmKind::Motion, true, count);
            }
            Input::Smoke { detected } => {
                let before = r.smoke.replace(detected);
                if before.unwrap_or(false) != detected {
                    self.raise(now_ms, AlarmKind::Smoke, detected, i32::from(detected));
                } else if before.is_none() {
                    self.report_pending = true;
                }
            }
            Input::Temperature { centi_c } => {
                r.temperature = Some(centi_c);
                let changed = match r.temperature_reported {
                    Some(t) => t.abs_diff(centi_c) >= self.config.temperature_delta.unsigned_abs(),
                    None => true,
                };
                let high = self.config.temperature_high;
                let alarm = if !r.temperature_alarm && centi_c >= high {
                    r.temperature_alarm = true;
                    Some(true)
                } else if r.temperature_alarm && centi_c < high - TEMPERATURE_HYSTERESIS {
                    r.temperature_alarm = false;
                    Some(false)
                } else {
                    None
                };
                if changed {
                    self.report_pending = true;
                }
                if let Some(active) = alarm {
                    self.raise(now_ms, AlarmKind::TemperatureHigh, active, centi_c);
                }
            }
            Input::Humidity { centi_pct } => {
                if r.humidity.is_none() {
                    self.report_pending = true;
                }
                r.humidity = Some(centi_pct);
            }
            Input::Battery { mv } => r.battery_mv = Some(mv),
            Input::ExternalPower { present } => r.external_power = present,
            Input::Tamper { open } => {
                if r.tamper_open != open {
                    r.tamper_open = open;
                    self.raise(now_ms, AlarmKind::Tamper, open, i32::from(open));
                }
            }
            Input::PanicButton => self.raise(now_ms, AlarmKind::PanicButton, true, 1),
        }
    }

    /// What to do now (see [`Action`]). Call it after every input and whenever the
    /// previous action's time has come.
    pub fn poll(&mut self, now_ms: u64) -> Action {
        self.advance(now_ms);
        match self.radio {
            Radio::Transmitting { deadline_ms, .. } => Action::Sleep {
                until_ms: deadline_ms,
            },
            Radio::WaitRx {
                opens_ms,
                closes_ms,
                ..
            } => {
                if now_ms < opens_ms {
                    Action::Sleep { until_ms: opens_ms }
                } else {
                    Action::Listen {
                        freq_hz: self.config.radio.freq_hz,
                        modulation: self.config.radio.modulation,
                        until_ms: closes_ms,
                    }
                }
            }
            Radio::Idle => self.next_transmission(now_ms),
        }
    }

    /// The frame of the last [`Action::Transmit`] left the antenna at `now_ms`: the receive
    /// window opens [`RX1_DELAY_US`] later.
    pub fn tx_done(&mut self, now_ms: u64) {
        if let Radio::Transmitting { sent, fcnt, .. } = self.radio {
            let opens_ms = now_ms.saturating_add(RX1_DELAY_MS);
            self.radio = Radio::WaitRx {
                sent,
                fcnt,
                opens_ms,
                closes_ms: opens_ms.saturating_add(RX_WINDOW_MS),
            };
        }
    }

    /// The radio could not send the frame of the last [`Action::Transmit`]: an alarm is
    /// retried after its backoff, a heartbeat after `alarm_backoff_ms`; a report waits for
    /// the next change or period.
    pub fn tx_failed(&mut self, now_ms: u64) {
        if let Radio::Transmitting { sent, .. } = self.radio {
            self.stats.tx_failures += 1;
            self.radio = Radio::Idle;
            self.unacknowledged(now_ms, sent);
        }
    }

    /// A frame heard in the receive window, with its RSSI (dBm) and SNR (dB). On success,
    /// the window is over and the returned downlink has been acted on.
    pub fn received(
        &mut self,
        now_ms: u64,
        bytes: &[u8],
        rssi: i16,
        snr: i8,
    ) -> Result<Downlink, RxError> {
        let _ = now_ms;
        let Radio::WaitRx { sent, fcnt, .. } = self.radio else {
            return Err(RxError::NotListening);
        };
        let frame = match open(bytes, &self.config.key, Dir::Down) {
            Ok(frame) => frame,
            Err(e) => return Err(self.refused(RxError::Frame(e))),
        };
        if frame.dev_addr != self.config.dev_addr {
            return Err(self.refused(RxError::OtherDevice(frame.dev_addr.0)));
        }
        let Payload::Downlink(downlink) = frame.payload else {
            return Err(self.refused(RxError::NotADownlink(frame.mtype())));
        };
        if let Some(last) = self.last_down {
            if frame.fcnt <= last {
                self.stats.downlinks_replayed += 1;
                return Err(RxError::Replayed {
                    fcnt: frame.fcnt,
                    last,
                });
            }
        }
        self.last_down = Some(frame.fcnt);
        self.last_rssi = rssi;
        self.last_snr = snr;
        self.stats.downlinks_accepted += 1;
        self.radio = Radio::Idle;

        let acked = downlink.ack_fcnt == Some(fcnt);
        match sent {
            Sent::Alarm { alarm_id, active } if acked => self.alarm_acked(alarm_id, active),
            other => self.unacknowledged(now_ms, other),
        }
        if let Command::SetHeartbeatInterval { seconds } = downlink.command {
            if seconds > 0 {
                self.config.heartbeat_s = seconds;
                let base = self.last_heartbeat_ms.unwrap_or(now_ms);
                self.heartbeat_due_ms = base.saturating_add(u64::from(seconds) * 1_000);
                self.push_event(Event::HeartbeatIntervalChanged { seconds });
            }
        }
        Ok(downlink)
    }

    fn refused(&mut self, e: RxError) -> RxError {
        self.stats.downlinks_refused += 1;
        e
    }

    /// Closes windows and transmissions whose time is over.
    fn advance(&mut self, now_ms: u64) {
        match self.radio {
            Radio::Transmitting {
                sent, deadline_ms, ..
            } if now_ms >= deadline_ms => {
                self.stats.tx_failures += 1;
                self.radio = Radio::Idle;
                self.unacknowledged(now_ms, sent);
            }
            Radio::WaitRx {
                sent, closes_ms, ..
            } if now_ms >= closes_ms => {
                self.radio = Radio::Idle;
                self.unacknowledged(now_ms, sent);
            }
            _ => {}
        }
    }

    /// A transmission ended without the acknowledgement it wanted (only alarms want one;
    /// a failed heartbeat is retried soon).
    fn unacknowledged(&mut self, now_ms: u64, sent: Sent) {
        match sent {
            Sent::Alarm { alarm_id, active } => {
                let Some(i) = self.alarm_index(alarm_id, active) else {
                    return;
                };
                let retries = self.config.alarm_retries;
                let (base, max) = (
                    self.config.alarm_backoff_ms,
                    self.config.alarm_backoff_max_ms,
                );
                let Some(alarm) = self.alarms.get(i).copied() else {
                    return;
                };
                if alarm.attempts > retries {
                    self.alarms.remove(i);
                    self.stats.alarms_given_up += 1;
                    self.push_event(Event::AlarmGaveUp {
                        alarm_id,
                        kind: alarm.kind,
                        active: alarm.active,
                        attempts: alarm.attempts,
                    });
                } else {
                    let shift = u32::from(alarm.attempts.saturating_sub(1)).min(31);
                    let backoff = base.checked_shl(shift).unwrap_or(max).clamp(base, max);
                    let delay = backoff + self.jitter.below(backoff / 2 + 1);
                    if let Some(a) = self.alarms.get_mut(i) {
                        a.next_at_ms = now_ms.saturating_add(u64::from(delay));
                    }
                }
            }
            Sent::Heartbeat => {}
            Sent::Report => {}
        }
    }

    fn alarm_acked(&mut self, alarm_id: u16, active: bool) {
        if let Some(i) = self.alarm_index(alarm_id, active) {
            let alarm = self.alarms.remove(i);
            self.stats.alarms_acked += 1;
            self.push_event(Event::AlarmAcked {
                alarm_id,
                kind: alarm.kind,
                active: alarm.active,
                attempts: alarm.attempts,
            });
        }
    }

    fn alarm_index(&self, alarm_id: u16, active: bool) -> Option<usize> {
        self.alarms
            .iter()
            .position(|a| a.alarm_id == Some(alarm_id) && a.active == active)
    }

    /// Queues an alarm; an unsent one of the same kind and state just takes the new value.
    fn raise(&mut self, now_ms: u64, kind: AlarmKind, active: bool, value: i32) {
        if let Some(a) = self
            .alarms
            .iter_mut()
            .find(|a| a.attempts == 0 && a.kind == kind && a.active == active)
        {
            a.value = value;
            return;
        }
        if self.alarms.is_full() {
            // Push out the oldest alarm never sent; if all were sent, the oldest of all.
            let i = self
                .alarms
                .iter()
                .position(|a| a.attempts == 0)
                .unwrap_or(0);
            if i < self.alarms.len() {
                let dropped = self.alarms.remove(i);
                self.stats.alarms_dropped += 1;
                self.push_event(Event::AlarmDropped {
                    kind: dropped.kind,
                    active: dropped.active,
                });
            }
        }
        let _ = self.alarms.push(PendingAlarm {
            kind,
            active,
            value,
            alarm_id: None,
            attempts: 0,
            next_at_ms: now_ms,
        });
    }

    fn push_event(&mut self, event: Event) {
        if self.events.is_full() {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        let _ = self.events.push_back(event);
    }

    /// The due candidates in priority order: alarms (queue order), heartbeat, report.
    fn due(&self, now_ms: u64) -> Vec<Candidate, { MAX_ALARMS + 2 }> {
        let mut due = Vec::new();
        for (i, a) in self.alarms.iter().enumerate() {
            if a.next_at_ms <= now_ms {
                let _ = due.push(Candidate::Alarm(i));
            }
        }
        if self.heartbeat_due_ms <= now_ms {
            let _ = due.push(Candidate::Heartbeat);
        }
        if self.report_pending || self.report_due_ms.is_some_and(|t| t <= now_ms) {
            let _ = due.push(Candidate::Report);
        }
        due
    }

    fn next_transmission(&mut self, now_ms: u64) -> Action {
        // Something due now that the budget refuses wakes the node when the budget has
        // room, not at once; so the wake time starts from what is due later.
        let mut wake = self.next_due_after_ms(now_ms);
        if let Some(retry) = self.storage_retry_ms {
            if now_ms < retry {
                return Action::Sleep { until_ms: retry };
            }
            self.storage_retry_ms = None;
        }
        if self.fcnt_next >= u32::MAX - FCNT_SKIP {
            self.push_event(Event::CountersExhausted);
            return Action::Sleep { until_ms: u64::MAX };
        }
        for candidate in self.due(now_ms) {
            let Some(payload) = self.payload(candidate) else {
                // A report with nothing to say: not due any more.
                self.report_sent(now_ms);
                continue;
            };
            let priority = match candidate {
                Candidate::Alarm(_) => Priority::Alarm,
                _ => Priority::Normal,
            };
            let fcnt = self.fcnt_next;
            let frame = Frame::new(self.config.dev_addr, fcnt, payload);
            let mut buf = [0u8; MAX_FRAME_LEN];
            let Ok(len) = seal(&frame, &self.config.key, Dir::Up, &mut buf) else {
                continue;
            };
            let airtime_us = self.config.radio.modulation.airtime_us(len);
            if !self
                .budget
                .can_send(now_ms, self.band, airtime_us, priority)
            {
                self.stats.budget_waits += 1;
                let wait = self
                    .budget
                    .wait_ms(now_ms, self.band, airtime_us, priority)
                    .unwrap_or(gatehouse_lora_proto::duty::HOUR_MS)
                    .max(1);
                wake = wake.min(now_ms.saturating_add(wait));
                continue;
            }
            if let Err(e) = self.reserve(fcnt) {
                self.stats.storage_errors += 1;
                self.push_event(Event::StorageFailed(e));
                let retry = now_ms.saturating_add(STORAGE_RETRY_MS);
                self.storage_retry_ms = Some(retry);
                return Action::Sleep { until_ms: retry };
            }
            self.budget.record(now_ms, self.band, airtime_us);
            self.fcnt_next = fcnt + 1;
            self.stats.frames_sent += 1;
            self.stats.airtime_us += u64::from(airtime_us);
            let sent = match candidate {
                Candidate::Alarm(i) => {
                    self.stats.alarm_transmissions += 1;
                    let (mut alarm_id, mut active) = (0, true);
                    let first_id = self.alarms.get(i).map(|a| self.alarm_id_of(a, fcnt));
                    if let (Some(a), Some(id)) = (self.alarms.get_mut(i), first_id) {
                        let first = a.alarm_id.is_none();
                        alarm_id = *a.alarm_id.get_or_insert(id);
                        active = a.active;
                        a.attempts = a.attempts.saturating_add(1);
                        a.next_at_ms = u64::MAX;
                        if first {
                            // A raise opens its kind's id; its end (sent under it) closes it.
                            let slot = usize::from(a.kind.code()) % 8;
                            self.raised_ids[slot] = active.then_some(alarm_id);
                        }
                    }
                    Sent::Alarm { alarm_id, active }
                }
                Candidate::Heartbeat => {
                    self.stats.heartbeats_sent += 1;
                    let interval_ms = u64::from(self.config.heartbeat_s) * 1_000;
                    let early = u64::from(self.jitter.below((interval_ms / 16) as u32));
                    self.last_heartbeat_ms = Some(now_ms);
                    self.heartbeat_due_ms = now_ms + interval_ms - early;
                    Sent::Heartbeat
                }
                Candidate::Report => {
                    self.stats.reports_sent += 1;
                    self.readings.temperature_reported = self.readings.temperature;
                    self.readings.motion_count = 0;
                    self.report_sent(now_ms);
                    Sent::Report
                }
            };
            let airtime_ms = u64::from(airtime_us).div_ceil(1_000);
            self.radio = Radio::Transmitting {
                sent,
                fcnt,
                deadline_ms: now_ms
                    .saturating_add(airtime_ms)
                    .saturating_add(TX_TIMEOUT_GRACE_MS),
            };
            let mut bytes = Vec::new();
            let _ = bytes.extend_from_slice(buf.get(..len).unwrap_or(&[]));
            return Action::Transmit(Transmit {
                bytes,
                fcnt,
                mtype: frame.mtype(),
                freq_hz: self.config.radio.freq_hz,
                modulation: self.config.radio.modulation,
                airtime_us,
                priority,
            });
        }
        Action::Sleep {
            until_ms: wake.max(now_ms.saturating_add(1)),
        }
    }

    fn report_sent(&mut self, now_ms: u64) {
        self.report_pending = false;
        if self.config.report_s > 0 {
            self.report_due_ms =
                Some(now_ms.saturating_add(u64::from(self.config.report_s) * 1_000));
        }
    }

    /// The earliest time after `now_ms` something becomes due.
    fn next_due_after_ms(&self, now_ms: u64) -> u64 {
        let later = |t: u64| if t > now_ms { t } else { u64::MAX };
        let mut t = later(self.heartbeat_due_ms);
        for a in &self.alarms {
            t = t.min(later(a.next_at_ms));
        }
        if let Some(r) = self.report_due_ms {
            t = t.min(later(r));
        }
        t
    }

    /// Makes sure `fcnt` is covered by a stored block (see [`crate::storage`]).
    fn reserve(&mut self, fcnt: u32) -> Result<(), StorageError> {
        if fcnt < self.reserved_until {
            return Ok(());
        }
        self.storage.store(Stored {
            fcnt,
            reboots: self.reboots,
        })?;
        self.reserved_until = fcnt.saturating_add(FCNT_SKIP);
        Ok(())
    }

    /// The id an alarm is sent under: the one it has, else for an end the id of the raise
    /// it ends, else (a first transmission) the low 16 bits of the fcnt it is about to use.
    fn alarm_id_of(&self, a: &PendingAlarm, fcnt: u32) -> u16 {
        let raised = self.raised_ids[usize::from(a.kind.code()) % 8];
        a.alarm_id
            .or(if a.active { None } else { raised })
            .unwrap_or(fcnt as u16)
    }

    fn payload(&self, candidate: Candidate) -> Option<Payload> {
        Some(match candidate {
            Candidate::Alarm(i) => {
                let a = self.alarms.get(i)?;
                Payload::Alarm(Alarm {
                    kind: a.kind,
                    active: a.active,
                    alarm_id: self.alarm_id_of(a, self.fcnt_next),
                    value: a.value,
                })
            }
            Candidate::Heartbeat => Payload::Heartbeat(self.heartbeat()),
            Candidate::Report => Payload::Report(self.report()?),
        })
    }

    fn heartbeat(&self) -> Heartbeat {
        let r = &self.readings;
        let mut flags = 0;
        if r.tamper_open {
            flags |= Heartbeat::FLAG_TAMPER;
        }
        if r.external_power {
            flags |= Heartbeat::FLAG_EXTERNAL_POWER;
        }
        if r.battery_mv
            .is_some_and(|mv| mv < self.config.low_battery_mv)
        {
            flags |= Heartbeat::FLAG_LOW_BATTERY;
        }
        Heartbeat {
            battery_mv: r.battery_mv.unwrap_or(0),
            flags,
            reboots: self.reboots,
            last_rssi: self.last_rssi,
            last_snr: self.last_snr,
            interval_s: self.config.heartbeat_s,
        }
    }

    /// The kind's readings and the battery; `None` when nothing is known yet.
    fn report(&self) -> Option<Report> {
        let r = &self.readings;
        let mut readings: Vec<Reading, { gatehouse_lora_proto::MAX_READINGS }> = Vec::new();
        let mut add = |quantity, value: Option<i32>| {
            if let Some(value) = value {
                let _ = readings.push(Reading { quantity, value });
            }
        };
        match self.config.kind {
            SensorKind::Door => add(Quantity::Contact, r.contact_open.map(i32::from)),
            SensorKind::Pir => add(Quantity::Motion, Some(r.motion_count)),
            SensorKind::Smoke => add(Quantity::Smoke, r.smoke.map(i32::from)),
            SensorKind::Temp => {
                add(Quantity::Temperature, r.temperature);
                add(Quantity::Humidity, r.humidity);
            }
        }
        add(Quantity::Battery, r.battery_mv.map(i32::from));
        (!readings.is_empty()).then_some(Report { readings })
    }
}
