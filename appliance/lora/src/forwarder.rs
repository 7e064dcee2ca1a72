//! The forwarder loop: frames from the radio to `lora/up`, downlinks from `lora/down`
//! through the [`TxSchedule`] to the radio, answers on `lora/tx`, every transmission in
//! the transmit log.

use crate::messages::{
    encode_frame, DownlinkRequest, Status, TxStatus, Uplink, DOWN_TOPIC, TX_TOPIC, UP_TOPIC,
};
use crate::radio::{Radio, RadioError, RxPacket};
use crate::schedule::{Queued, Refusal, TxSchedule};
use crate::tx_log::{TxLog, TxLogLine};
use crate::LoraError;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The forwarder's MQTT client id.
pub const CLIENT_ID: &str = "gatehouse-lora";
/// How long [`Forwarder::connect`] waits for the broker to take the subscription.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before reconnecting to the broker; doubled up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest MQTT packet the forwarder takes (a downlink request is a few hundred bytes).
const MAX_PACKET: usize = 16 * 1024;
/// Longest the loop sleeps with nothing queued (it wakes for frames and requests anyway).
const IDLE: Duration = Duration::from_secs(3600);

/// Where and how the forwarder connects.
#[derive(Clone)]
pub struct ForwarderOptions {
    /// The broker's host.
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// The transmit log's path.
    pub tx_log: PathBuf,
}

impl std::fmt::Debug for ForwarderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwarderOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("tx_log", &self.tx_log)
            .finish()
    }
}

/// What the forwarder did (for tests and logs).
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames received and published on `lora/up`.
    pub uplinks: AtomicU64,
    /// Requests received on `lora/down`.
    pub downlinks: AtomicU64,
    pub sent: AtomicU64,
    pub too_late: AtomicU64,
    pub duty_cycle: AtomicU64,
    pub busy: AtomicU64,
    pub invalid: AtomicU64,
    /// Radio failures (receive or transmit).
    pub radio_errors: AtomicU64,
}

impl Counters {
    fn count(&self, status: Status) {
        let c = match status {
            Status::Sent => &self.sent,
            Status::TooLate => &self.too_late,
            Status::DutyCycle => &self.duty_cycle,
            Status::Busy => &self.busy,
            Status::Invalid => &self.invalid,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot: (uplinks, downlinks, sent, too_late, duty_cycle, busy, invalid).
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A forwarder connected to the broker and subscribed to `lora/down`, not yet running.
pub struct Forwarder<R: Radio> {
    radio: R,
    client: AsyncClient,
    eventloop: EventLoop,
    tx_log: TxLog,
    counters: Arc<Counters>,
    /// Requests that arrived while subscribing.
    early: Vec<Vec<u8>>,
}

impl<R: Radio> std::fmt::Debug for Forwarder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("tx_log", &self.tx_log)
            .finish_non_exhaustive()
    }
}

fn mqtt_options(o: &ForwarderOptions) -> MqttOptions {
    let mut options = MqttOptions::new(CLIENT_ID, o.host.clone(), o.port);
    options
        .set_credentials(o.username.clone(), o.password.clone())
        .set_keep_alive(Duration::from_secs(15))
        // A downlink queued while the forwarder was away would be too late anyway.
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options
}

impl<R: Radio> Forwarder<R> {
    /// Opens the transmit log, connects to the broker and waits until it granted the
    /// subscription to `lora/down` (so a downlink published after this returns is seen).
    pub async fn connect(radio: R, options: &ForwarderOptions) -> Result<Self, LoraError> {
        let tx_log = TxLog::open(&options.tx_log).map_err(|source| LoraError::TxLog {
            path: options.tx_log.clone(),
            source,
        })?;
        let (client, mut eventloop) = AsyncClient::new(mqtt_options(options), 256);
        let broker = format!("{}:{}", options.host, options.port);
        let not_ready = |detail: String| LoraError::Broker {
            broker: broker.clone(),
            user: options.username.clone(),
            detail,
        };
        let mut early = Vec::new();
        let wait = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => client
                        .try_subscribe(DOWN_TOPIC, QoS::AtLeastOnce)
                        .map_err(|e| not_ready(e.to_string()))?,
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        return if ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                        {
                            Ok(())
                        } else {
                            Err(not_ready(format!(
                                "the broker refused the subscription to {DOWN_TOPIC} (check the account's ACL: it needs lora/#)"
                            )))
                        };
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == DOWN_TOPIC => {
                        early.push(p.payload.to_vec())
                    }
                    Ok(_) => {}
                    Err(e) => return Err(not_ready(e.to_string())),
                }
            }
        };
        tokio::time::timeout(READY_TIMEOUT, wait)
            .await
            .map_err(|_| not_ready(format!("no answer within {READY_TIMEOUT:?}")))??;
        tracing::info!(%broker, topic = DOWN_TOPIC, "LoRa forwarder subscribed");
        Ok(Forwarder {
            radio,
            client,
            eventloop,
            tx_log,
            counters: Arc::default(),
            early,
        })
    }

    /// The forwarder's counters.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Forwards until `stop` turns true (or the radio stops); then disconnects.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), LoraError> {
        let Forwarder {
            mut radio,
            client,
            eventloop,
            mut tx_log,
            counters,
            early,
        } = self;
        let (down_tx, mut downs) = mpsc::unbounded_channel();
        for payload in early {
            let _ = down_tx.send(payload);
        }
        let pump = tokio::spawn(pump(eventloop, client.clone(), down_tx));
        let mut schedule = TxSchedule::new();
        let mut link = Link {
            client: &client,
            counters: &counters,
        };
        let result = loop {
            if *stop.borrow() {
                break Ok(());
            }
            let wait = schedule.next_dispatch_us().map_or(IDLE, |t| {
                Duration::from_micros(t.saturating_sub(radio.now_us()))
            });
            tokio::select! {
                _ = stop.changed() => {}
                rx = radio.receive() => match rx {
                    Ok(p) => link.uplink(&p).await,
                    Err(RadioError::Closed) => break Err(LoraError::Radio(RadioError::Closed)),
                    Err(e) => {
                        counters.radio_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "LoRa receive failed");
                        tokio::time::sleep(INITIAL_BACKOFF).await;
                    }
                },
                Some(payload) = downs.recv() => {
                    counters.downlinks.fetch_add(1, Ordering::Relaxed);
                    match serde_json::from_slice::<DownlinkRequest>(&payload) {
                        Ok(req) => match schedule.offer(&req, radio.now_us()) {
                            Ok(displaced) => {
                                for r in displaced {
                                    link.answer(&r).await;
                                }
                            }
                            Err(r) => link.answer(&r).await,
                        },
                        Err(e) => link.malformed(&payload, &e).await,
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    let now = radio.now_us();
                    while let Some(q) = schedule.take_due(now) {
                        let status = match schedule.admit(&q, radio.now_us()) {
                            Ok(()) => transmit(&mut radio, &q, &mut tx_log, &counters).await,
                            Err(status) => status,
                        };
                        link.answer(&Refusal { id: q.id.clone(), status, airtime_us: q.tx.airtime_us }).await;
                    }
                }
            }
        };
        // Let the last answers go out, then leave.
        let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        result
    }
}

/// Transmits `q` and logs it; the status to answer.
async fn transmit<R: Radio>(
    radio: &mut R,
    q: &Queued,
    tx_log: &mut TxLog,
    counters: &Counters,
) -> Status {
    match radio.transmit(&q.tx).await {
        Ok(done) => {
            let line = TxLogLine {
                at_us: done.start_us,
                freq_hz: q.tx.freq_hz,
                sf: q.tx.sf,
                bw_hz: q.tx.bw_hz,
                airtime_us: done.airtime_us,
                sub_band: q.band.as_str().to_owned(),
                priority: q.priority.as_str().to_owned(),
                id: q.id.clone(),
            };
            if let Err(e) = tx_log.append(&line) {
                tracing::error!(error = %e, path = %tx_log.path().display(), "cannot write the LoRa transmit log");
            }
            tracing::debug!(id = %q.id, at_us = done.start_us, airtime_us = done.airtime_us, "downlink sent");
            Status::Sent
        }
        Err(e) => {
            counters.radio_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(id = %q.id, error = %e, "LoRa transmit failed");
            Status::Busy
        }
    }
}

/// The forwarder's side of the topics.
struct Link<'a> {
    client: &'a AsyncClient,
    counters: &'a Counters,
}

impl Link<'_> {
    async fn uplink(&mut self, p: &RxPacket) {
        self.counters.uplinks.fetch_add(1, Ordering::Relaxed);
        let up = Uplink {
            frame: encode_frame(&p.bytes),
            rssi: p.rssi,
            snr: p.snr,
            freq_hz: p.freq_hz,
            sf: p.sf,
            bw_hz: p.bw_hz,
            rx_us: p.end_us,
            rx_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        };
        match serde_json::to_vec(&up) {
            Ok(body) => {
                if let Err(e) = self
                    .client
                    .publish(UP_TOPIC, QoS::AtLeastOnce, false, body)
                    .await
                {
                    tracing::warn!(error = %e, "cannot publish an uplink");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode an uplink"),
        }
    }

    async fn answer(&mut self, r: &Refusal) {
        self.counters.count(r.status);
        let st = TxStatus {
            id: r.id.clone(),
            status: r.status,
            airtime_us: r.airtime_us,
        };
        if r.status != Status::Sent {
            tracing::info!(id = %r.id, status = r.status.as_str(), "downlink not sent");
        }
        if let Ok(body) = serde_json::to_vec(&st) {
            if let Err(e) = self
                .client
                .publish(TX_TOPIC, QoS::AtMostOnce, false, body)
                .await
            {
                tracing::warn!(error = %e, "cannot publish a downlink status");
            }
        }
    }

    /// A request that is not a [`DownlinkRequest`]: answered `invalid` if it has an id.
    async fn malformed(&mut self, payload: &[u8], e: &serde_json::Error) {
        let id = serde_json::from_slice::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
        tracing::warn!(error = %e, id = ?id, "malformed downlink request on {DOWN_TOPIC}");
        match id {
            Some(id) => {
                self.answer(&Refusal {
                    id,
                    status: Status::Invalid,
                    airtime_us: 0,
                })
                .await
            }
            None => {
                self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Polls the MQTT connection: hands `lora/down` payloads to the loop, subscribes again
/// after each reconnection, backs off while the broker is away. Ends on disconnect.
async fn pump(
    mut eventloop: EventLoop,
    client: AsyncClient,
    downs: mpsc::UnboundedSender<Vec<u8>>,
) {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = INITIAL_BACKOFF;
                tracing::info!("LoRa forwarder reconnected to the broker");
                if let Err(e) = client.try_subscribe(DOWN_TOPIC, QoS::AtLeastOnce) {
                    tracing::warn!(error = %e, "cannot subscribe to {DOWN_TOPIC}");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == DOWN_TOPIC => {
                if downs.send(p.payload.to_vec()).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                if downs.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "LoRa forwarder lost the broker; reconnecting in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
