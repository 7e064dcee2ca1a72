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
//!   direction, are for this node, and are new (replays are refused:
//!   [`RxError::Replayed`]), also across reboots ([`crate::storage`], "Downlink counter"):
//!   - the node keeps a floor: the last accepted down counter, or after a reboot the
//!     high-water mark it stored (every counter accepted before the reboot is at or
//!     below it; 0 on a new node);
//!   - a downlink is new if its counter is above the floor, or, until the first downlink
//!     after a reboot is accepted, if it acknowledges the uplink of this very receive
//!     window (uplink counters never repeat, so no frame recorded earlier can name it;
//!     this is how the hub's next ACKs, numbered below the mark, still get through);
//!   - once one is accepted, its counter is the floor (the hub counts up, so everything
//!     it made earlier is below it);
//!   - a counter above the stored mark is accepted only after the mark has been moved to
//!     `counter + FCNT_DOWN_SKIP - 1` in [`Storage`] (one write per [`FCNT_DOWN_SKIP`]
//!     counters; a failed store refuses the downlink: [`RxError::NotPersisted`]).
//!
//!   So after a reboot a downlink that acknowledges nothing is refused while its counter
//!   is at or below the mark (the hub sends none: it answers confirmed uplinks only, with
//!   their ACK). They may acknowledge an alarm and may set the heartbeat interval.
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
use crate::storage::{Storage, StorageError, Stored, FCNT_DOWN_SKIP, FCNT_SKIP};
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
    /// Its down counter is not above the last accepted one (after a reboot: the stored
    /// high-water mark) and it does not acknowledge this window's uplink: a replay.
    Replayed { fcnt: u32, last: u32 },
    /// Its counter is above the stored high-water mark and moving the mark failed: not
    /// accepted, since after a reboot it could be played again.
    NotPersisted(StorageError),
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
            RxError::NotPersisted(e) => write!(f, "downlink refused: {e}"),
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
    /// What storage holds (the last successful store, or what was loaded at boot).
    stored: Stored,
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
    /// Downlink counters at or below this are refused unless `down_exact` is false and
    /// the downlink acknowledges this window's uplink (see the module docs).
    down_floor: u32,
    /// Whether `down_floor` is the last accepted counter (a downlink was accepted since
    /// boot, or nothing was ever accepted) rather than the stored high-water mark.
    down_exact: bool,
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
        let loaded = storage.load();
        let (fcnt_next, reboots) = match loaded {
            Some(stored) => (
                stored.fcnt.saturating_add(FCNT_SKIP),
                stored.reboots.saturating_add(1),
            ),
            // 0 means "no uplink" in the hub's ack field: start at 1.
            None => (1, 0),
        };
        let stored = loaded.unwrap_or_default();
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
            stored,
            radio: Radio::Idle,
            alarms: Vec::new(),
            raised_ids: [None; 8],
            heartbeat_due_ms: now_ms,
            last_heartbeat_ms: None,
            report_pending: false,
            report_due_ms,
            storage_retry_ms: None,
            readings: Readings::default(),
            down_floor: stored.down_mark,
            down_exact: stored.down_mark == 0,
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
        // Fresh beyond doubt: it names this window's uplink, which no earlier frame could.
        let answers_this_uplink = downlink.ack_fcnt == Some(fcnt);
        if frame.fcnt <= self.down_floor && (self.down_exact || !answers_this_uplink) {
            self.stats.downlinks_replayed += 1;
            return Err(RxError::Replayed {
                fcnt: frame.fcnt,
                last: self.down_floor,
            });
        }
        if let Err(e) = self.reserve_down(frame.fcnt) {
            self.stats.storage_errors += 1;
            return Err(self.refused(RxError::NotPersisted(e)));
        }
        self.down_floor = frame.fcnt;
        self.down_exact = true;
        self.last_rssi = rssi;
        self.last_snr = snr;
        self.stats.downlinks_accepted += 1;
        self.radio = Radio::Idle;

        match sent {
            Sent::Alarm { alarm_id, active } if answers_this_uplink => {
                self.alarm_acked(alarm_id, active)
            }
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
        let value = Stored {
            fcnt,
            reboots: self.reboots,
            down_mark: self.stored.down_mark,
        };
        self.storage.store(value)?;
        self.stored = value;
        self.reserved_until = fcnt.saturating_add(FCNT_SKIP);
        Ok(())
    }

    /// Makes sure the down counter `fcnt` is at or below the stored high-water mark (see
    /// [`crate::storage`]): above it, stores `fcnt + FCNT_DOWN_SKIP - 1` first.
    fn reserve_down(&mut self, fcnt: u32) -> Result<(), StorageError> {
        if fcnt <= self.stored.down_mark {
            return Ok(());
        }
        let value = Stored {
            // Whatever was stored last: every uplink counter used is covered by it (a
            // downlink only comes after an uplink, whose store this is).
            fcnt: self.stored.fcnt,
            reboots: self.reboots,
            down_mark: fcnt.saturating_add(FCNT_DOWN_SKIP - 1),
        };
        self.storage.store(value)?;
        self.stored = value;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::RadioParams;
    use gatehouse_lora_proto::{DevAddr, Key};

    const ADDR: DevAddr = DevAddr(0x2601_00AA);
    const KEY: Key = Key([7; 16]);

    fn config() -> NodeConfig {
        let mut c = NodeConfig::new(
            ADDR,
            KEY,
            SensorKind::Door,
            RadioParams {
                freq_hz: 868_100_000,
                modulation: Modulation::lora(7, 125_000),
            },
        );
        c.report_s = 0;
        c
    }

    /// A downlink as the hub seals it.
    fn down(fcnt: u32, ack_fcnt: Option<u32>, command: Command) -> Vec<u8, MAX_FRAME_LEN> {
        let frame = Frame::new(
            ADDR,
            fcnt,
            Payload::Downlink(Downlink { ack_fcnt, command }),
        );
        let mut buf = [0u8; MAX_FRAME_LEN];
        let len = seal(&frame, &KEY, Dir::Down, &mut buf).unwrap();
        Vec::from_slice(&buf[..len]).unwrap()
    }

    /// Raises an alarm and runs the node (other frames' windows pass empty) until the
    /// receive window after the alarm's transmission is open; returns the alarm's fcnt.
    fn alarm_window<S: Storage>(node: &mut Node<S>, now: &mut u64) -> u32 {
        node.input(*now, Input::PanicButton);
        let mut alarm_fcnt = None;
        for _ in 0..10_000 {
            match node.poll(*now) {
                Action::Transmit(tx) => {
                    if tx.mtype == MType::Alarm {
                        alarm_fcnt = Some(tx.fcnt);
                    }
                    *now += u64::from(tx.airtime_us).div_ceil(1_000);
                    node.tx_done(*now);
                }
                Action::Listen { until_ms, .. } => match alarm_fcnt {
                    Some(fcnt) => return fcnt,
                    None => *now = until_ms,
                },
                Action::Sleep { until_ms } => *now = until_ms,
            }
        }
        panic!("no alarm window")
    }

    fn reboot(node: Node<MemStorage>, now: u64) -> Node<MemStorage> {
        Node::new(config(), node.into_storage(), now).unwrap()
    }

    #[test]
    fn after_a_reboot_the_last_accepted_downlink_is_refused_and_the_hubs_next_taken() {
        let mut now = 0;
        let mut node = Node::new(config(), MemStorage::default(), now).unwrap();
        // The hub acknowledges an alarm and sets 60 s (its counter 5); recorded.
        let up = alarm_window(&mut node, &mut now);
        let recorded = down(5, Some(up), Command::SetHeartbeatInterval { seconds: 60 });
        node.received(now, &recorded, -80, 5).unwrap();
        assert_eq!(node.heartbeat_s(), 60);
        assert_eq!(node.storage().value.map(|s| s.down_mark), Some(36));

        let mut node = reboot(node, now);
        assert_eq!(node.heartbeat_s(), 300);
        let up = alarm_window(&mut node, &mut now);
        assert_eq!(
            node.received(now, &recorded, -80, 5),
            Err(RxError::Replayed { fcnt: 5, last: 36 })
        );
        assert_eq!(node.heartbeat_s(), 300, "the replayed command acted");
        assert_eq!(node.stats().downlinks_replayed, 1);
        // The hub's next counter (6) is below the mark (36) but answers this uplink.
        let fresh = down(6, Some(up), Command::None);
        assert!(node.received(now, &fresh, -80, 5).is_ok());
        assert_eq!(node.stats().alarms_acked, 1);
        // From now on the floor is exact: 7 is taken, a replay of 6 is not.
        alarm_window(&mut node, &mut now);
        assert!(matches!(
            node.received(now, &fresh, -80, 5),
            Err(RxError::Replayed { fcnt: 6, last: 6 })
        ));
        let command = down(7, None, Command::SetHeartbeatInterval { seconds: 120 });
        assert!(node.received(now, &command, -80, 5).is_ok());
        assert_eq!(node.heartbeat_s(), 120);
    }

    #[test]
    fn after_a_reboot_only_a_downlink_naming_this_uplink_passes_below_the_mark() {
        let mut now = 0;
        let mut node = Node::new(config(), MemStorage::default(), now).unwrap();
        let old_up = alarm_window(&mut node, &mut now);
        node.received(now, &down(1, Some(old_up), Command::None), -80, 5)
            .unwrap();
        // Made by the hub before the reboot, never heard by the node (counter 2..=32).
        let unheard_ack = down(2, Some(old_up), Command::None);
        let unheard_command = down(3, None, Command::SetHeartbeatInterval { seconds: 60 });

        let mut node = reboot(node, now);
        let up = alarm_window(&mut node, &mut now);
        assert_ne!(up, old_up);
        for frame in [&unheard_ack, &unheard_command] {
            assert!(matches!(
                node.received(now, frame, -80, 5),
                Err(RxError::Replayed { last: 32, .. })
            ));
        }
        // A downlink naming another (future) uplink does not pass either.
        let other = down(4, Some(up + 1), Command::None);
        assert!(matches!(
            node.received(now, &other, -80, 5),
            Err(RxError::Replayed { .. })
        ));
        assert_eq!(node.heartbeat_s(), 300);
        // Above the mark anything new passes (and moves the mark).
        let writes = node.storage().writes;
        let above = down(33, None, Command::SetHeartbeatInterval { seconds: 90 });
        assert!(node.received(now, &above, -80, 5).is_ok());
        assert_eq!(node.heartbeat_s(), 90);
        assert_eq!(node.storage().writes, writes + 1);
        assert_eq!(node.storage().value.map(|s| s.down_mark), Some(64));
    }

    /// Counts the stores that moved the downlink mark.
    #[derive(Default)]
    struct Counting {
        inner: MemStorage,
        down_writes: u32,
    }

    impl Storage for Counting {
        fn load(&mut self) -> Option<Stored> {
            self.inner.load()
        }
        fn store(&mut self, value: Stored) -> Result<(), StorageError> {
            if value.down_mark != self.inner.value.unwrap_or_default().down_mark {
                self.down_writes += 1;
            }
            self.inner.store(value)
        }
    }

    #[test]
    fn n_downlinks_cost_at_most_one_write_per_block() {
        let mut now = 0;
        let mut node = Node::new(config(), Counting::default(), now).unwrap();
        const N: u32 = 100;
        for c in 1..=N {
            let up = alarm_window(&mut node, &mut now);
            node.received(now, &down(c, Some(up), Command::None), -80, 5)
                .unwrap();
        }
        assert_eq!(node.stats().alarms_acked, N);
        let s = node.storage();
        assert!(
            s.down_writes <= N.div_ceil(FCNT_DOWN_SKIP),
            "{} mark writes for {N} downlinks",
            s.down_writes
        );
        // Uplink blocks (about one per 32 frames and the boot's) plus the mark's.
        let frames = node.stats().frames_sent;
        assert!(s.inner.writes <= frames.div_ceil(FCNT_SKIP) + 1 + N.div_ceil(FCNT_DOWN_SKIP));
        assert_eq!(s.inner.value.map(|v| v.down_mark), Some(128));
    }

    #[test]
    fn a_downlink_whose_mark_cannot_be_stored_is_refused() {
        let mut now = 0;
        let mut node = Node::new(config(), MemStorage::default(), now).unwrap();
        let up = alarm_window(&mut node, &mut now);
        node.storage.fail = true;
        let ack = down(1, Some(up), Command::SetHeartbeatInterval { seconds: 60 });
        assert_eq!(
            node.received(now, &ack, -80, 5),
            Err(RxError::NotPersisted(StorageError::WriteFailed))
        );
        assert_eq!(node.heartbeat_s(), 300);
        assert_eq!(node.stats().alarms_acked, 0);
        // The window is still open: once the flash works, the same frame is taken.
        node.storage.fail = false;
        assert!(node.received(now, &ack, -80, 5).is_ok());
        assert_eq!(node.stats().alarms_acked, 1);
    }

    #[test]
    fn a_blank_node_takes_the_hubs_first_downlink() {
        let mut now = 0;
        let mut node = Node::new(config(), MemStorage::default(), now).unwrap();
        alarm_window(&mut node, &mut now);
        // Not naming the uplink: only the counter (1 > 0) speaks for it.
        let command = down(1, None, Command::SetHeartbeatInterval { seconds: 60 });
        assert!(node.received(now, &command, -80, 5).is_ok());
        assert_eq!(node.heartbeat_s(), 60);
    }
}
