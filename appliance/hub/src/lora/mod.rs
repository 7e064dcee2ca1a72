//! The LoRa network server: the hub's side of the sensors' link. The packet forwarder
//! (`gatehouse lora`) holds no keys and decides nothing; it publishes every frame it
//! receives on `lora/up` and transmits what the hub publishes on `lora/down`. Here every
//! frame is verified, decrypted, replay-checked, recorded, acknowledged and turned into
//! events.
//!
//! # Uplinks (`lora/up`, JSON, QoS 1)
//! `{"frame": base64, "rssi", "snr", "freq_hz", "sf", "bw_hz", "rx_us", "rx_at"}`, one
//! frame per message, handled one after the other in arrival order:
//! 1. [`peek`] the header -> the sensor by its `dev_addr` (unknown: dropped, counted
//!    `unknown_device`; disabled: dropped, counted `disabled`);
//! 2. [`open`] with the sensor's key: a bad MIC (wrong key, any byte altered) is dropped
//!    and counted `forged`; nothing in the frame is believed before;
//! 3. [`Store::record_uplink`](gatehouse_store::Store::record_uplink): in one transaction
//!    the counter must be above the highest accepted (else `replayed`, dropped) and
//!    everything the frame says is recorded (last seen, signal, battery, readings, the
//!    alarm de-duplication, the ACK's downlink counter);
//! 4. what the frame asks for:
//!    - **Alarm**: the event `sensor.alarm.<kind>` (critical for smoke, tamper and panic
//!      button, warning otherwise; door open, smoke, high temperature and tamper are
//!      active until the node's matching end, motion and panic button are instant),
//!      external id `alarm:<alarm_id>:<fcnt of the alarm's first copy>`, so every
//!      retransmission folds into the one event (and a new fcnt is no new alarm); then,
//!      once the event is committed, the ACK. Every copy is acknowledged (the node did
//!      not hear the earlier ACK); a copy is counted `duplicate_alarms`. An alarm whose
//!      event could not be stored is not acknowledged: the node sends it again.
//!    - **Heartbeat**: `sensor.low_battery` (warning) when the battery drops below
//!      [`LoraSettings::low_battery_mv`] or the node flags it, and `sensor.tamper`
//!      (critical) when its tamper flag comes on: once per change (instant events named
//!      by the frame's counter), not at every heartbeat.
//!    - **Report**: the readings are stored (`sensors.readings`) and counted.
//!
//! # ACKs (`lora/down`, JSON, QoS 1)
//! `{"frame", "freq_hz", "sf", "bw_hz", "tx_us", "priority": "alarm", "id"}`: a
//! `Downlink` acknowledging the alarm's fcnt, sealed with the sensor's key, on the
//! uplink's frequency and spreading factor, to be sent at `tx_us = rx_us +`
//! [`RX1_DELAY_US`] (the node's receive window; the hub's work fits in that second: two
//! small transactions and one event commit). The forwarder answers on `lora/tx`
//! (`sent`, `too_late`, `duty_cycle`, `busy`), counted by status.
//!
//! # Supervision
//! Every [`LoraSettings::check_every`] (and at once when a missing sensor is heard), the
//! registry is compared with the clock ([`supervision::MissingWatch`]): an enabled sensor
//! silent for 3 heartbeat intervals plus a grace raises `sensor.missing` (warning,
//! active) once. Silent counts from its last frame, or, for a sensor not heard since it
//! was provisioned (`gatehouse sensor add`, `POST /api/v1/sensors`) or enabled again,
//! from that moment (the store's `enabled_since`): a sensor never heard goes missing too,
//! its message saying "never been heard since it was provisioned at ..." rather than
//! "not been heard from since ...". The event ends (a "resolved" notice) when the sensor
//! is heard (its first frame, for one never heard), disabled or removed. Episodes are
//! kept in the store (`missing_since`), so they survive restarts, and every clock starts
//! from a stored time, so a restart does not restart one; an event that could not be
//! stored is tried again at the next check.
//!
//! Every event has the sensor's name as source (kind `sensor`, ingress `sensor`) and as
//! device, and goes through [`EventService::submit`] like every other event.
//!
//! # Connection
//! A second MQTT client of the hub (client id [`CLIENT_ID`]), with the hub's own broker
//! account (`hub.mqtt.username`, its password file), to the broker the gate transport
//! uses (embedded: its loopback listener; external: `hub.mqtt.broker`). Its session is
//! persistent, so uplinks published while the hub restarts are delivered after (their
//! ACKs are late, the alarms are not lost). Reconnects with backoff.
//!
//! Counters ([`LoraCounters`]) are exported on `/metrics` ([`LoraCounters::render`]).

pub mod provisioning;
pub mod supervision;

use crate::events::{EventService, Ingress, StoreConn, SubmitError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use gatehouse_alerts::model::{limits, Lifecycle, NewEvent, Severity, SourceKind};
use gatehouse_config::{Config, MqttMode};
use gatehouse_lora_proto::link::RX1_DELAY_US;
use gatehouse_lora_proto::{
    open, peek, seal, AlarmKind, DevAddr, Dir, Downlink, Frame, FrameError, Key, Payload,
    MAX_FRAME_LEN,
};
use gatehouse_store::sensors::{
    Heard, HeartbeatInfo, SensorAuth, SensorRecord, Uplink, UplinkOutcome,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use supervision::{missing_external_id, Ended, MissingChange, MissingWatch, Silence};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch, Notify};

/// Frames from the forwarder.
pub const UP_TOPIC: &str = "lora/up";
/// Frames for the forwarder to transmit.
pub const DOWN_TOPIC: &str = "lora/down";
/// The forwarder's report on each transmission.
pub const TX_TOPIC: &str = "lora/tx";
/// The network server's MQTT client id (stable: the broker keeps its session).
pub const CLIENT_ID: &str = "gatehouse-hub-lora";
/// Below this battery voltage a heartbeat raises `sensor.low_battery` (2.4 V: two AA
/// lithium or alkaline cells near their end; the SX1262 runs down to 1.8 V).
pub const LOW_BATTERY_MV: u16 = 2400;
/// Uplinks waiting to be handled, at most (beyond: dropped and counted `overloaded`).
pub const UPLINK_QUEUE: usize = 4096;

pub const SENSOR_ALARM_PREFIX: &str = "sensor.alarm.";
pub const SENSOR_LOW_BATTERY: &str = "sensor.low_battery";
pub const SENSOR_TAMPER: &str = "sensor.tamper";
pub const SENSOR_MISSING: &str = "sensor.missing";

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why the network server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    #[error("the hub's MQTT password file {path}: {source}")]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hub.mqtt.broker {0:?} is not host:port")]
    Address(String),
    #[error("the MQTT broker's address is unknown (embedded broker not started)")]
    NoBroker,
}

/// How the network server judges its sensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraSettings {
    /// Heartbeat intervals of silence before `sensor.missing`.
    pub missing_after: u32,
    /// Added to that silence.
    pub missing_grace: Duration,
    /// How often the heartbeats are checked.
    pub check_every: Duration,
    /// Below this, a heartbeat's battery is low.
    pub low_battery_mv: u16,
}

impl Default for LoraSettings {
    fn default() -> Self {
        LoraSettings {
            missing_after: supervision::MISSING_AFTER,
            missing_grace: supervision::MISSING_GRACE,
            check_every: Duration::from_secs(1),
            low_battery_mv: LOW_BATTERY_MV,
        }
    }
}

// ---- counters --------------------------------------------------------------------------

/// The network server's counters since the hub started.
#[derive(Debug, Default)]
pub struct LoraCounters {
    uplinks: AtomicU64,
    malformed: AtomicU64,
    unknown_device: AtomicU64,
    disabled: AtomicU64,
    forged: AtomicU64,
    replayed: AtomicU64,
    accepted: AtomicU64,
    reports: AtomicU64,
    heartbeats: AtomicU64,
    alarms: AtomicU64,
    duplicate_alarms: AtomicU64,
    acks_sent: AtomicU64,
    events_failed: AtomicU64,
    store_failed: AtomicU64,
    overloaded: AtomicU64,
    tx_status: Mutex<BTreeMap<String, u64>>,
    last_seen: Mutex<BTreeMap<String, i64>>,
}

/// A copy of [`LoraCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoraStats {
    /// Messages on `lora/up`.
    pub uplinks: u64,
    /// Not JSON of the contract, not base64, not a frame, or an authentic frame whose
    /// payload does not parse.
    pub malformed: u64,
    pub unknown_device: u64,
    pub disabled: u64,
    /// Bad MIC.
    pub forged: u64,
    /// Counter not above the highest accepted.
    pub replayed: u64,
    pub accepted: u64,
    pub reports: u64,
    pub heartbeats: u64,
    /// Alarm frames accepted (copies included).
    pub alarms: u64,
    /// Alarm frames that were copies of an alarm taken before.
    pub duplicate_alarms: u64,
    pub acks_sent: u64,
    /// Events the pipeline did not accept (an alarm's ACK is then not sent).
    pub events_failed: u64,
    /// Uplinks dropped because the store failed.
    pub store_failed: u64,
    /// Uplinks dropped because the queue was full.
    pub overloaded: u64,
    /// The forwarder's transmission reports, by status.
    pub tx_status: BTreeMap<String, u64>,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Maps of counters: any state a panic leaves is still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LoraCounters {
    pub fn stats(&self) -> LoraStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LoraStats {
            uplinks: g(&self.uplinks),
            malformed: g(&self.malformed),
            unknown_device: g(&self.unknown_device),
            disabled: g(&self.disabled),
            forged: g(&self.forged),
            replayed: g(&self.replayed),
            accepted: g(&self.accepted),
            reports: g(&self.reports),
            heartbeats: g(&self.heartbeats),
            alarms: g(&self.alarms),
            duplicate_alarms: g(&self.duplicate_alarms),
            acks_sent: g(&self.acks_sent),
            events_failed: g(&self.events_failed),
            store_failed: g(&self.store_failed),
            overloaded: g(&self.overloaded),
            tx_status: lock(&self.tx_status).clone(),
        }
    }

    fn seen(&self, sensor: &str, at: OffsetDateTime) {
        lock(&self.last_seen).insert(sensor.to_owned(), at.unix_timestamp());
    }

    /// The counters in the Prometheus text format (see `events::metrics`):
    /// `gatehouse_lora_uplinks_total{outcome}`, `gatehouse_lora_alarms_total{copy}`,
    /// `gatehouse_lora_acks_sent_total`, `gatehouse_lora_tx_total{status}`,
    /// `gatehouse_lora_events_failed_total` and `gatehouse_sensor_last_seen_seconds{sensor}`
    /// (unix time of the last accepted frame, for sensors heard since the hub started).
    pub fn render(&self) -> String {
        let s = self.stats();
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "gatehouse_lora_uplinks_total",
            "counter",
            "LoRa frames received from the forwarder since the hub started, by what became of them.",
        );
        for (outcome, n) in [
            ("accepted", s.accepted),
            ("malformed", s.malformed),
            ("unknown_device", s.unknown_device),
            ("disabled", s.disabled),
            ("forged", s.forged),
            ("replayed", s.replayed),
            ("store_failed", s.store_failed),
            ("overloaded", s.overloaded),
        ] {
            let _ = writeln!(
                out,
                "gatehouse_lora_uplinks_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        family(
            &mut out,
            "gatehouse_lora_frames_total",
            "counter",
            "Accepted LoRa frames by type; alarms split into first copies and retransmissions.",
        );
        for (kind, n) in [
            ("report", s.reports),
            ("heartbeat", s.heartbeats),
            ("alarm", s.alarms.saturating_sub(s.duplicate_alarms)),
            ("alarm_duplicate", s.duplicate_alarms),
        ] {
            let _ = writeln!(out, "gatehouse_lora_frames_total{{type=\"{kind}\"}} {n}");
        }
        family(
            &mut out,
            "gatehouse_lora_acks_sent_total",
            "counter",
            "ACK downlinks handed to the forwarder.",
        );
        let _ = writeln!(out, "gatehouse_lora_acks_sent_total {}", s.acks_sent);
        family(
            &mut out,
            "gatehouse_lora_events_failed_total",
            "counter",
            "Sensor events the events pipeline did not accept.",
        );
        let _ = writeln!(
            out,
            "gatehouse_lora_events_failed_total {}",
            s.events_failed
        );
        family(
            &mut out,
            "gatehouse_lora_tx_total",
            "counter",
            "The forwarder's transmission reports, by status.",
        );
        for (status, n) in &s.tx_status {
            let _ = writeln!(
                out,
                "gatehouse_lora_tx_total{{status=\"{}\"}} {n}",
                escape_label(status)
            );
        }
        family(
            &mut out,
            "gatehouse_sensor_last_seen_seconds",
            "gauge",
            "Unix time of each sensor's last accepted frame (sensors heard since the hub started).",
        );
        for (sensor, at) in lock(&self.last_seen).iter() {
            let _ = writeln!(
                out,
                "gatehouse_sensor_last_seen_seconds{{sensor=\"{}\"}} {at}",
                escape_label(sensor)
            );
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

// ---- messages ----------------------------------------------------------------------------

/// A `lora/up` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpMessage {
    /// The frame, base64.
    pub frame: String,
    #[serde(default)]
    pub rssi: Option<i16>,
    #[serde(default)]
    pub snr: Option<f64>,
    pub freq_hz: u32,
    pub sf: u8,
    pub bw_hz: u32,
    /// The forwarder's monotonic clock at the end of reception, microseconds.
    pub rx_us: u64,
    /// Wall time of reception, RFC 3339.
    #[serde(default)]
    pub rx_at: Option<String>,
}

/// A `lora/down` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownMessage {
    pub frame: String,
    pub freq_hz: u32,
    pub sf: u8,
    pub bw_hz: u32,
    /// When to transmit, on the forwarder's clock.
    pub tx_us: u64,
    /// `alarm` or `normal`.
    pub priority: String,
    pub id: String,
}

/// A `lora/tx` message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct TxReport {
    #[serde(default)]
    id: String,
    status: String,
}

// ---- the server ---------------------------------------------------------------------------

/// The network server, connected but not yet serving.
pub struct LoraServer {
    client: AsyncClient,
    eventloop: EventLoop,
    data_dir: PathBuf,
    events: EventService,
    counters: Arc<LoraCounters>,
    settings: LoraSettings,
}

impl std::fmt::Debug for LoraServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraServer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn read_password(path: &std::path::Path) -> Result<String, LoraError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoraError::Password {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim().to_owned())
}

impl LoraServer {
    /// Sets up the network server's MQTT client as `config.hub.mqtt` says, towards
    /// `broker` (the embedded broker's address; external mode: `hub.mqtt.broker`);
    /// `None` when MQTT is off.
    pub fn start(
        config: &Config,
        broker: Option<SocketAddr>,
        events: &EventService,
        settings: LoraSettings,
    ) -> Result<Option<LoraServer>, LoraError> {
        let m = &config.hub.mqtt;
        let (host, port, pw_path) = match m.mode {
            MqttMode::Off => return Ok(None),
            MqttMode::Embedded => {
                let addr = broker.ok_or(LoraError::NoBroker)?;
                let pw = if m.password_file.as_os_str().is_empty() {
                    config.general.data_dir.join(crate::mqtt::HUB_PASSWORD_FILE)
                } else {
                    m.password_file.clone()
                };
                (addr.ip().to_string(), addr.port(), pw)
            }
            MqttMode::External => {
                let bad = || LoraError::Address(m.broker.clone());
                let (host, port) = m.broker.rsplit_once(':').ok_or_else(bad)?;
                let port: u16 = port.parse().map_err(|_| bad())?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                (host.to_owned(), port, m.password_file.clone())
            }
        };
        let password = read_password(&pw_path)?;
        let mut options = MqttOptions::new(CLIENT_ID, host, port);
        options
            .set_credentials(&m.username, password)
            .set_keep_alive(Duration::from_secs(15))
            .set_clean_session(false)
            .set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        Ok(Some(LoraServer {
            client,
            eventloop,
            data_dir: config.general.data_dir.clone(),
            events: events.clone(),
            counters: Arc::default(),
            settings,
        }))
    }

    /// The counters (shared with the running server).
    pub fn counters(&self) -> Arc<LoraCounters> {
        self.counters.clone()
    }

    /// Serves until `stop` is set: the uplinks, the transmission reports and the
    /// supervision.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let LoraServer {
            client,
            mut eventloop,
            data_dir,
            events,
            counters,
            settings,
        } = self;
        let wake = Arc::new(Notify::new());
        let handler = UplinkHandler {
            store: StoreConn::new(&data_dir),
            events: events.clone(),
            client: client.clone(),
            counters: counters.clone(),
            low_battery_mv: settings.low_battery_mv,
            wake: wake.clone(),
        };
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(UPLINK_QUEUE);
        let worker = tokio::spawn(async move {
            while let Some(payload) = rx.recv().await {
                handler.handle(&payload).await;
            }
        });
        let supervisor = tokio::spawn(supervise(
            StoreConn::new(&data_dir),
            events,
            settings,
            wake,
            stop.clone(),
        ));
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let polled = tokio::select! {
                _ = crate::stopped(&mut stop) => break,
                p = eventloop.poll() => p,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = INITIAL_BACKOFF;
                    let subs = [
                        rumqttc::SubscribeFilter::new(UP_TOPIC.into(), QoS::AtLeastOnce),
                        rumqttc::SubscribeFilter::new(TX_TOPIC.into(), QoS::AtMostOnce),
                    ];
                    if let Err(e) = client.try_subscribe_many(subs) {
                        tracing::warn!(error = %e, "LoRa: cannot subscribe");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    if refused {
                        tracing::warn!(
                            "LoRa: the MQTT broker refused the hub's subscription to \
                             {UP_TOPIC}/{TX_TOPIC}; give the hub's account `readwrite lora/#` \
                             in the broker's ACL"
                        );
                    } else {
                        tracing::info!("LoRa network server subscribed to {UP_TOPIC}");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic == UP_TOPIC {
                        if tx.try_send(p.payload.to_vec()).is_err() {
                            inc(&counters.overloaded);
                        }
                    } else if p.topic == TX_TOPIC {
                        match serde_json::from_slice::<TxReport>(&p.payload) {
                            Ok(r) => {
                                tracing::debug!(id = %r.id, status = %r.status, "LoRa transmission");
                                let status = if r.status.len() <= 32 {
                                    r.status
                                } else {
                                    "invalid".to_owned()
                                };
                                *lock(&counters.tx_status).entry(status).or_default() += 1;
                            }
                            Err(_) => inc(&counters.malformed),
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "LoRa: MQTT connection lost; reconnecting");
                    tokio::select! {
                        _ = crate::stopped(&mut stop) => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        drop(tx);
        let _ = worker.await;
        let _ = supervisor.await;
        let _ = client.try_disconnect();
        // Let the disconnect go out.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// A sensor's event.
fn sensor_event(
    sensor: &str,
    kind: String,
    severity: Severity,
    lifecycle: Lifecycle,
    external_id: String,
    message: String,
    time: OffsetDateTime,
) -> NewEvent {
    NewEvent {
        source: sensor.to_owned(),
        source_kind: SourceKind::Sensor,
        kind,
        severity,
        time,
        camera: None,
        zone: None,
        device: Some(sensor.to_owned()),
        message: Some(message),
        snapshot_url: None,
        clip_url: None,
        external_id: Some(external_id),
        lifecycle,
    }
}

/// An alarm's severity and whether it lasts until the node ends it.
pub fn alarm_class(kind: AlarmKind) -> (Severity, bool) {
    match kind {
        AlarmKind::Smoke | AlarmKind::Tamper => (Severity::Critical, true),
        AlarmKind::PanicButton => (Severity::Critical, false),
        AlarmKind::DoorOpen | AlarmKind::TemperatureHigh => (Severity::Warning, true),
        AlarmKind::Motion => (Severity::Warning, false),
    }
}

/// The reception time the forwarder gave, if plausible, else `now`.
fn rx_time(rx_at: Option<&str>, now: OffsetDateTime) -> OffsetDateTime {
    rx_at
        .and_then(|s| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
        .filter(|t| {
            t.unix_timestamp() >= limits::EARLIEST_TIME
                && (*t - now).whole_seconds() <= limits::MAX_AHEAD
        })
        .unwrap_or(now)
}

struct UplinkHandler {
    store: StoreConn,
    events: EventService,
    client: AsyncClient,
    counters: Arc<LoraCounters>,
    low_battery_mv: u16,
    wake: Arc<Notify>,
}

impl UplinkHandler {
    async fn handle(&self, payload: &[u8]) {
        let c = &self.counters;
        inc(&c.uplinks);
        let Ok(up) = serde_json::from_slice::<UpMessage>(payload) else {
            inc(&c.malformed);
            return;
        };
        let bytes = match B64.decode(up.frame.as_bytes()) {
            Ok(b) if b.len() <= MAX_FRAME_LEN => b,
            _ => {
                inc(&c.malformed);
                return;
            }
        };
        let header = match peek(&bytes) {
            Ok(h) if h.mtype.dir() == Dir::Up => h,
            _ => {
                inc(&c.malformed);
                return;
            }
        };
        let dev_addr = header.dev_addr.0;
        let auth = match self.store.call(move |s| s.sensor_auth(dev_addr)).await {
            Ok(Some(a)) => a,
            Ok(None) => {
                tracing::debug!(dev_addr = %header.dev_addr, "LoRa frame from an unknown device");
                inc(&c.unknown_device);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "LoRa: cannot read the sensor registry");
                inc(&c.store_failed);
                return;
            }
        };
        if !auth.enabled {
            inc(&c.disabled);
            return;
        }
        let key = Key(*auth.key.expose());
        let frame = match open(&bytes, &key, Dir::Up) {
            Ok(f) => f,
            Err(FrameError::BadMic) => {
                tracing::info!(sensor = %auth.name, fcnt = header.fcnt, "LoRa frame with a bad MIC dropped");
                inc(&c.forged);
                return;
            }
            Err(e) => {
                tracing::info!(sensor = %auth.name, error = %e, "LoRa frame dropped");
                inc(&c.malformed);
                return;
            }
        };
        let now = OffsetDateTime::now_utc();
        let at = rx_time(up.rx_at.as_deref(), now);
        let heard = match &frame.payload {
            Payload::Report(r) => Heard::Report(
                r.readings
                    .iter()
                    .map(|x| (x.quantity.as_str().to_owned(), i64::from(x.value)))
                    .collect(),
            ),
            Payload::Alarm(a) => Heard::Alarm {
                alarm_id: a.alarm_id,
                active: a.active,
            },
            Payload::Heartbeat(h) => Heard::Heartbeat(HeartbeatInfo {
                battery_mv: h.battery_mv,
                flags: h.flags,
                reboots: h.reboots,
                down_rssi: h.last_rssi,
                down_snr: h.last_snr,
            }),
            // peek said up; open checked the direction.
            Payload::Downlink(_) => {
                inc(&c.malformed);
                return;
            }
        };
        let record = Uplink {
            sensor: auth.id,
            fcnt: frame.fcnt,
            // The node's clock is not in the frame: the sensor was heard now.
            at: now,
            rssi: up.rssi,
            snr: up.snr.filter(|s| s.is_finite()),
            heard,
            downlink: frame.confirmed,
        };
        let outcome = match self.store.call(move |s| s.record_uplink(&record)).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(sensor = %auth.name, error = %e, "LoRa: cannot record an uplink");
                inc(&c.store_failed);
                return;
            }
        };
        let (sensor, before, fcnt_down, alarm_seen) = match outcome {
            UplinkOutcome::Accepted {
                sensor,
                before,
                fcnt_down,
                alarm,
            } => (sensor, before, fcnt_down, alarm),
            UplinkOutcome::Replayed { last } => {
                tracing::info!(sensor = %auth.name, fcnt = frame.fcnt, last, "LoRa frame replayed or out of order; dropped");
                inc(&c.replayed);
                return;
            }
            UplinkOutcome::Disabled => {
                inc(&c.disabled);
                return;
            }
            UplinkOutcome::Unknown => {
                inc(&c.unknown_device);
                return;
            }
        };
        inc(&c.accepted);
        c.seen(&sensor.name, now);
        if sensor.missing() {
            self.wake.notify_one();
        }
        match frame.payload {
            Payload::Report(_) => inc(&c.reports),
            Payload::Heartbeat(h) => {
                inc(&c.heartbeats);
                self.heartbeat_events(&sensor, frame.fcnt, &h, before, at)
                    .await;
            }
            Payload::Alarm(a) => {
                inc(&c.alarms);
                let Some(seen) = alarm_seen else { return };
                if seen.duplicate {
                    inc(&c.duplicate_alarms);
                }
                let (severity, lasting) = alarm_class(a.kind);
                let lifecycle = match (a.active, lasting) {
                    (false, _) => Lifecycle::Ended,
                    (true, true) => Lifecycle::Active,
                    (true, false) => Lifecycle::Instant,
                };
                let what = if a.active { "alarm" } else { "alarm ended" };
                let event = sensor_event(
                    &sensor.name,
                    format!("{SENSOR_ALARM_PREFIX}{}", a.kind.as_str()),
                    severity,
                    lifecycle,
                    format!("alarm:{}:{}", a.alarm_id, seen.episode_fcnt),
                    format!(
                        "{} {what} from {} sensor {:?} (value {}, alarm #{})",
                        a.kind.as_str().replace('_', " "),
                        sensor.kind,
                        sensor.name,
                        a.value,
                        a.alarm_id
                    ),
                    at,
                );
                if !self.submit(event).await {
                    // Not stored: no ACK, so the node sends it again.
                    return;
                }
                if let Some(fcnt_down) = fcnt_down {
                    self.ack(&auth, &up, frame.fcnt, fcnt_down).await;
                }
            }
            Payload::Downlink(_) => {}
        }
    }

    async fn submit(&self, event: NewEvent) -> bool {
        let kind = event.kind.clone();
        match self.events.submit(event, Ingress::Sensor).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(%kind, error = %e, "LoRa: sensor event not accepted");
                inc(&self.counters.events_failed);
                false
            }
        }
    }

    async fn heartbeat_events(
        &self,
        sensor: &SensorRecord,
        fcnt: u32,
        h: &gatehouse_lora_proto::Heartbeat,
        before: Option<(u16, u8)>,
        at: OffsetDateTime,
    ) {
        // 0 mV means "not measured" (a node on external power without a battery gauge,
        // like the STM32WL board today): only the node's own flag counts then.
        let low = |mv: u16, flags: u8| {
            (mv != 0 && mv < self.low_battery_mv)
                || flags & gatehouse_lora_proto::Heartbeat::FLAG_LOW_BATTERY != 0
        };
        let tamper = |flags: u8| flags & gatehouse_lora_proto::Heartbeat::FLAG_TAMPER != 0;
        if low(h.battery_mv, h.flags) && !before.is_some_and(|(mv, f)| low(mv, f)) {
            let event = sensor_event(
                &sensor.name,
                SENSOR_LOW_BATTERY.into(),
                Severity::Warning,
                Lifecycle::Instant,
                format!("low_battery:{fcnt}"),
                format!(
                    "battery low on {} sensor {:?}: {} mV{}",
                    sensor.kind,
                    sensor.name,
                    h.battery_mv,
                    if h.low_battery() {
                        " (the node says so)"
                    } else {
                        ""
                    }
                ),
                at,
            );
            self.submit(event).await;
        }
        if tamper(h.flags) && !before.is_some_and(|(_, f)| tamper(f)) {
            let event = sensor_event(
                &sensor.name,
                SENSOR_TAMPER.into(),
                Severity::Critical,
                Lifecycle::Instant,
                format!("tamper:{fcnt}"),
                format!(
                    "{} sensor {:?} reports its enclosure opened (tamper switch)",
                    sensor.kind, sensor.name
                ),
                at,
            );
            self.submit(event).await;
        }
    }

    /// Publishes the ACK of uplink `fcnt` for the forwarder to send in the node's receive
    /// window.
    async fn ack(&self, auth: &SensorAuth, up: &UpMessage, fcnt: u32, fcnt_down: u32) {
        let frame = Frame::new(
            DevAddr(auth.dev_addr),
            fcnt_down,
            Payload::Downlink(Downlink::ack(fcnt)),
        );
        let mut buf = [0u8; MAX_FRAME_LEN];
        let len = match seal(&frame, &Key(*auth.key.expose()), Dir::Down, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "LoRa: cannot seal an ACK");
                return;
            }
        };
        let msg = DownMessage {
            frame: B64.encode(&buf[..len]),
            freq_hz: up.freq_hz,
            sf: up.sf,
            bw_hz: up.bw_hz,
            tx_us: up.rx_us.saturating_add(RX1_DELAY_US),
            priority: "alarm".into(),
            id: format!("{}-{fcnt_down}", DevAddr(auth.dev_addr)),
        };
        let Ok(body) = serde_json::to_vec(&msg) else {
            return;
        };
        match self
            .client
            .publish(DOWN_TOPIC, QoS::AtLeastOnce, false, body)
            .await
        {
            Ok(()) => inc(&self.counters.acks_sent),
            Err(e) => tracing::warn!(error = %e, "LoRa: cannot publish an ACK"),
        }
    }
}

// ---- supervision --------------------------------------------------------------------------

async fn supervise(
    store: StoreConn,
    events: EventService,
    settings: LoraSettings,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut watch = MissingWatch::new(settings.missing_after, settings.missing_grace);
    let mut tick = tokio::time::interval(settings.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::stopped(&mut stop) => return,
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        let sensors = match store.call(|s| s.list_sensors()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "LoRa supervision: cannot read the sensors");
                continue;
            }
        };
        let now = OffsetDateTime::now_utc();
        for change in watch.check(&sensors, now) {
            apply(&store, &events, &mut watch, change, now).await;
        }
    }
}

/// Raises the event of `change`, then records the episode in the store (an event not
/// accepted is raised again at the next check, as the store still says what it said).
async fn apply(
    store: &StoreConn,
    events: &EventService,
    watch: &mut MissingWatch,
    change: MissingChange,
    now: OffsetDateTime,
) {
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    match change {
        MissingChange::Missing {
            id,
            name,
            since,
            silence,
            limit,
        } => {
            let limit_s = limit.as_secs();
            let message = match silence {
                Silence::SinceLastHeard => {
                    tracing::warn!(sensor = %name, "sensor missing");
                    format!(
                        "sensor {name:?} has not been heard from since {} (limit {limit_s} s: \
                         3 heartbeats)",
                        rfc3339(since)
                    )
                }
                Silence::NeverHeard => {
                    tracing::warn!(sensor = %name, "sensor provisioned but never heard");
                    format!(
                        "sensor {name:?} has never been heard since it was provisioned at {} \
                         (limit {limit_s} s: 3 heartbeats): check the key flashed into the \
                         node, its range to the box and its battery",
                        rfc3339(since)
                    )
                }
                Silence::SinceEnabled { last_heard } => {
                    tracing::warn!(sensor = %name, "sensor not heard since it was enabled again");
                    format!(
                        "sensor {name:?} has not been heard since it was enabled again at {} \
                         ({}; limit {limit_s} s: 3 heartbeats)",
                        rfc3339(since),
                        match last_heard {
                            Some(at) => format!("last heard at {}", rfc3339(at)),
                            None => "never heard before".to_owned(),
                        }
                    )
                }
            };
            let event = sensor_event(
                &name,
                SENSOR_MISSING.into(),
                Severity::Warning,
                Lifecycle::Active,
                missing_external_id(since),
                message,
                now,
            );
            if events.submit(event, Ingress::Sensor).await.is_err() {
                return;
            }
            match store
                .call(move |s| s.set_sensor_missing(id, None, Some(since)))
                .await
            {
                Ok(_) => watch.opened(id, name, since),
                Err(e) => tracing::warn!(error = %e, "LoRa supervision: cannot record an episode"),
            }
        }
        MissingChange::Back {
            id,
            name,
            since,
            why,
        } => {
            let removed = why == Ended::Removed;
            let message = match why {
                Ended::Heard(at) => {
                    tracing::info!(sensor = %name, "missing sensor heard");
                    format!("sensor {name:?} was heard at {}", rfc3339(at))
                }
                Ended::Disabled => format!("sensor {name:?} was disabled"),
                Ended::EnabledAgain => format!(
                    "sensor {name:?} was disabled and enabled again: its supervision starts over"
                ),
                Ended::Removed => format!("sensor {name:?} was removed"),
            };
            let event = sensor_event(
                &name,
                SENSOR_MISSING.into(),
                Severity::Warning,
                Lifecycle::Ended,
                missing_external_id(since),
                message,
                now,
            );
            let result: Result<_, SubmitError> = events.submit(event, Ingress::Sensor).await;
            if result.is_err() {
                if removed {
                    // Its row is gone: keep trying from memory.
                    watch.opened(id, name, since);
                }
                return;
            }
            watch.closed(id);
            if !removed {
                if let Err(e) = store
                    .call(move |s| s.set_sensor_missing(id, Some(since), None))
                    .await
                {
                    tracing::warn!(error = %e, "LoRa supervision: cannot record an episode's end");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn reception_times_are_believed_only_when_plausible() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(rx_time(None, now), now);
        assert_eq!(rx_time(Some("yesterday"), now), now);
        assert_eq!(rx_time(Some("1990-01-01T00:00:00Z"), now), now);
        assert_eq!(rx_time(Some("2100-01-01T00:00:00Z"), now), now);
        let t = now - time::Duration::seconds(3);
        let s = t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert_eq!(rx_time(Some(&s), now), t);
    }

    #[test]
    fn counters_render_in_the_exposition_format() {
        let c = LoraCounters::default();
        inc(&c.uplinks);
        inc(&c.forged);
        inc(&c.acks_sent);
        c.seen(
            "front \"door\"",
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        );
        *lock(&c.tx_status).entry("sent".into()).or_default() += 2;
        let text = c.render();
        for line in [
            "# TYPE gatehouse_lora_uplinks_total counter",
            "gatehouse_lora_uplinks_total{outcome=\"forged\"} 1",
            "gatehouse_lora_acks_sent_total 1",
            "gatehouse_lora_tx_total{status=\"sent\"} 2",
            "gatehouse_sensor_last_seen_seconds{sensor=\"front \\\"door\\\"\"} 1800000000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert_eq!(c.stats().forged, 1);
    }

    #[test]
    fn alarm_classes() {
        assert_eq!(alarm_class(AlarmKind::Smoke), (Severity::Critical, true));
        assert_eq!(
            alarm_class(AlarmKind::PanicButton),
            (Severity::Critical, false)
        );
        assert_eq!(alarm_class(AlarmKind::DoorOpen), (Severity::Warning, true));
        assert_eq!(alarm_class(AlarmKind::Motion), (Severity::Warning, false));
    }
}
