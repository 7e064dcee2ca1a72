//! The gates' MQTT transport: sealed binary frames of the gate link (the same bytes as on
//! raw TCP, one frame per message) relayed by mosquitto.
//!
//! Gates publish to `hub.mqtt.request_topic`; the hub, connected as its own user
//! (`hub.mqtt.username`), subscribes to it, handles every payload with
//! [`gate_frames::handle`] (verify with the gate's key, replay window, decide), waits for
//! the decision's log row to be durable and publishes the sealed `Decision` to
//! `<response_prefix>/<gate_id>` at QoS 0; an answer of several frames (the chunks of an
//! allow-list transfer) is one publish per frame, in order. Refusals are counted; a known gate gets an
//! `ErrorReply` on its topic only for a frame that was authentic (a forged or mis-keyed
//! frame is dropped silently, so nobody can make the hub publish on another gate's
//! topic); unknown gates and unparseable payloads are dropped. A gate with an IP
//! allow-list is refused over MQTT: the hub cannot see the gate's address behind the
//! broker. When the broker goes away the client reconnects with exponential backoff
//! ([`INITIAL_BACKOFF`] to [`MAX_BACKOFF`]) and subscribes again.
//!
//! QoS 0 both ways: the gate link is request/answer with its own timeouts and retries (a
//! gate that gets no decision decides from its allow-list; offline batches are resent
//! until acknowledged; allow-list requests are repeated), so MQTT-level acknowledgements
//! would add only a second small write per message. The connection sets TCP_NODELAY
//! (rumqttc's default leaves Nagle on, which holds a small answer back until the broker's
//! delayed ACK: about 40 ms per message).
//!
//! Broker accounts. Each gate's MQTT account is its store `mqtt_username` with the
//! password [`gate_password`]: lowercase hex of HMAC-SHA-256(gate secret,
//! [`GATE_PASSWORD_LABEL`]). Nothing new is stored, rotating the gate's secret rotates
//! its MQTT password, and the gate derives it from the secret it already holds. The ACL
//! (see `gatehouse_broker::acl`) lets a gate write only the request topic and read only
//! its own response topic.
//!
//! Modes (`hub.mqtt.mode`):
//! - `embedded`: [`MqttTransport::start`] provisions mosquitto from the store's gates
//!   (the hub's password random, kept 0600 in `<data_dir>/mqtt-hub.password`) and runs
//!   it from `<data_dir>/mosquitto/`; when the store's revision moves and the set of gate
//!   accounts changed, it rewrites the password and ACL files and reloads mosquitto
//!   (SIGHUP); the broker is stopped when the transport stops. `start` returns once the
//!   hub is subscribed, so a gate may publish as soon as `Hub::bind` returned.
//! - `external`: connect to `hub.mqtt.broker` with the password in
//!   `hub.mqtt.password_file`; if `hub.mqtt.provision_dir` is set, the password and ACL
//!   files are written there on every change (reloading that broker is its owner's job).

use crate::access::{AccessService, GateAuth, REFRESH_INTERVAL};
use crate::drops::DropKind;
use crate::gate_frames::{self, Answer, Peer, ReplySink};
use gatehouse_broker::{
    random_password, Account, BrokerConfig, BrokerError, BrokerFiles, GateAccount, Mosquitto,
    Provisioning, Topics,
};
use gatehouse_config::{Config, MqttMode};
use gatehouse_gate_proto::{Error as ProtoError, Frame, GateKey, MAX_FRAME_LEN};
use hmac::{Hmac, Mac};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, Publish, QoS,
};
use sha2::Sha256;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The HMAC label of a gate's MQTT password (see [`gate_password`]).
pub const GATE_PASSWORD_LABEL: &[u8] = b"gatehouse mqtt password v1";
/// The hub's password file in the data directory (embedded mode, when
/// `hub.mqtt.password_file` is empty).
pub const HUB_PASSWORD_FILE: &str = "mqtt-hub.password";
/// The embedded broker's directory in the data directory.
pub const BROKER_DIR: &str = "mosquitto";
/// First wait before reconnecting to a broker that went away; doubled up to
/// [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest MQTT packet the hub accepts or sends: a frame is at most `MAX_FRAME_LEN`; the
/// margin lets an oversize payload be counted instead of breaking the connection.
pub const MAX_PACKET: usize = 64 * 1024;
/// How long `start` waits for the embedded broker to accept the hub's subscription.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long stopping waits for owed answers to go out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
const CLIENT_ID: &str = "gatehouse-hub";
const TRANSPORT: &str = "mqtt";

/// Why the MQTT transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    #[error("hub.mqtt.password_file {path}: {source}")]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hub.mqtt.password_file {0} is empty; put the hub's MQTT password in it")]
    EmptyPassword(PathBuf),
    #[error("MQTT broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("hub.mqtt.broker {0:?} is not host:port")]
    Address(String),
    #[error("the embedded MQTT broker at {addr} did not accept the hub's subscription to {topic:?}: {detail}")]
    NotReady {
        addr: SocketAddr,
        topic: String,
        detail: String,
    },
    #[error("the MQTT transport's background work failed: {0}")]
    Task(String),
}

/// A gate's MQTT password: lowercase hex of HMAC-SHA-256(`key`, [`GATE_PASSWORD_LABEL`]).
pub fn gate_password(key: &GateKey) -> String {
    // HMAC accepts keys of any length; the fallback is never taken.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(GATE_PASSWORD_LABEL);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The broker account of each gate.
fn gate_accounts(gates: &[Arc<GateAuth>]) -> Vec<GateAccount> {
    gates
        .iter()
        .map(|g| GateAccount::with_username(g.id, g.mqtt_username.clone(), gate_password(g.key())))
        .collect()
}

/// Where the accounts go.
enum Sink {
    /// The hub's own mosquitto.
    Embedded(Mosquitto),
    /// Files for a broker run elsewhere.
    Files(BrokerFiles),
}

/// Keeps the broker's accounts equal to the store's gates.
struct Provisioner {
    hub: Account,
    topics: Topics,
    sink: Sink,
    /// The gate accounts last written.
    current: Vec<GateAccount>,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("gates", &self.current.len())
            .finish_non_exhaustive()
    }
}

/// The hub's account and every gate account that can be written (a gate whose user name
/// collides with another account is left out, with a warning).
fn provisioning(
    hub: &Account,
    topics: &Topics,
    gates: &[GateAccount],
) -> Result<Provisioning, MqttError> {
    let mut p = Provisioning::new(hub.clone(), topics.clone())?;
    for g in gates {
        if let Err(e) = p.add_gate(g.clone()) {
            tracing::warn!(gate = g.gate_id, error = %e, "gate left out of the MQTT broker's accounts");
        }
    }
    Ok(p)
}

impl Provisioner {
    /// Writes `gates` (and reloads an embedded broker). Blocking.
    fn apply(&mut self, gates: Vec<GateAccount>) -> Result<(), MqttError> {
        let p = provisioning(&self.hub, &self.topics, &gates)?;
        match &mut self.sink {
            Sink::Embedded(m) => m.reprovision(&p)?,
            Sink::Files(files) => {
                std::fs::create_dir_all(files.dir()).map_err(|e| {
                    MqttError::Broker(BrokerError::Io {
                        path: files.dir().to_owned(),
                        source: e,
                    })
                })?;
                p.write_credentials(files)?;
            }
        }
        tracing::info!(gates = p.gates().len(), "MQTT broker accounts provisioned");
        self.current = gates;
        Ok(())
    }

    fn stop(self) {
        if let Sink::Embedded(m) = self.sink {
            if let Err(e) = m.stop() {
                tracing::warn!(error = %e, "stopping mosquitto");
            }
        }
    }
}

/// Reads the hub's password from `path`, creating it (0600, random) if `create` and it
/// does not exist.
fn hub_password(path: &Path, create: bool) -> Result<String, MqttError> {
    let err = |source| MqttError::Password {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let pw = text.trim();
            if pw.is_empty() {
                return Err(MqttError::EmptyPassword(path.to_owned()));
            }
            Ok(pw.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let pw = random_password()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(err)?;
            f.write_all(format!("{pw}\n").as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
            Ok(pw)
        }
        Err(e) => Err(err(e)),
    }
}

/// The MQTT transport, connected (embedded: subscribed) but not yet serving.
pub struct MqttTransport {
    client: AsyncClient,
    eventloop: EventLoop,
    topics: Topics,
    broker_addr: Option<SocketAddr>,
    provisioner: Option<Provisioner>,
}

impl std::fmt::Debug for MqttTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTransport")
            .field("topics", &self.topics)
            .field("broker_addr", &self.broker_addr)
            .finish_non_exhaustive()
    }
}

fn resolve_addr(hostport: &str) -> Result<(String, u16), MqttError> {
    let bad = || MqttError::Address(hostport.to_owned());
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), port))
}

impl MqttTransport {
    /// Starts the transport as `config.hub.mqtt` says; `None` when its mode is `off`.
    pub async fn start(
        config: &Config,
        service: &AccessService,
    ) -> Result<Option<MqttTransport>, MqttError> {
        let m = &config.hub.mqtt;
        let topics = Topics::new(&m.request_topic, &m.response_prefix)?;
        let gates = gate_accounts(&service.gates());
        let (host, port, broker_addr, provisioner) = match m.mode {
            MqttMode::Off => return Ok(None),
            MqttMode::Embedded => {
                let data_dir = std::path::absolute(&config.general.data_dir).map_err(|e| {
                    MqttError::Broker(BrokerError::Io {
                        path: config.general.data_dir.clone(),
                        source: e,
                    })
                })?;
                let pw_path = if m.password_file.as_os_str().is_empty() {
                    data_dir.join(HUB_PASSWORD_FILE)
                } else {
                    m.password_file.clone()
                };
                let hub = Account::new(&m.username, hub_password(&pw_path, true)?);
                let p = provisioning(&hub, &topics, &gates)?;
                let loopback = m.listen.ip() == std::net::IpAddr::from(Ipv4Addr::LOCALHOST);
                let broker_config = if loopback {
                    BrokerConfig::loopback(m.listen.port())
                } else {
                    BrokerConfig {
                        lan_listener: Some(m.listen),
                        ..BrokerConfig::loopback(0)
                    }
                };
                let files = BrokerFiles::new(data_dir.join(BROKER_DIR));
                let mosquitto = tokio::task::spawn_blocking(move || {
                    Mosquitto::start(files, &p, &broker_config)
                })
                .await
                .map_err(|e| MqttError::Task(e.to_string()))??;
                let addr = mosquitto.address();
                tracing::info!(
                    %addr,
                    gates_listen = %(if loopback { addr } else { m.listen }),
                    pid = mosquitto.pid(),
                    gates = gates.len(),
                    "MQTT broker ready"
                );
                let provisioner = Provisioner {
                    hub: hub.clone(),
                    topics: topics.clone(),
                    sink: Sink::Embedded(mosquitto),
                    current: gates,
                };
                (
                    addr.ip().to_string(),
                    addr.port(),
                    Some(addr),
                    Some((provisioner, hub.password)),
                )
            }
            MqttMode::External => {
                let password = hub_password(&m.password_file, false)?;
                let (host, port) = resolve_addr(&m.broker)?;
                let provisioner = if m.provision_dir.as_os_str().is_empty() {
                    None
                } else {
                    let mut p = Provisioner {
                        hub: Account::new(&m.username, password.clone()),
                        topics: topics.clone(),
                        sink: Sink::Files(BrokerFiles::new(&m.provision_dir)),
                        current: Vec::new(),
                    };
                    let g = gates.clone();
                    p = tokio::task::spawn_blocking(move || p.apply(g).map(|()| p))
                        .await
                        .map_err(|e| MqttError::Task(e.to_string()))??;
                    Some(p)
                };
                let addr = m.broker.parse().ok();
                (host, port, addr, provisioner.map(|p| (p, password)))
            }
        };
        let password = match &provisioner {
            Some((_, pw)) => pw.clone(),
            None => hub_password(&m.password_file, false)?,
        };
        let mut options = MqttOptions::new(CLIENT_ID, host, port);
        options
            .set_credentials(&m.username, password)
            .set_keep_alive(Duration::from_secs(15))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        eventloop.set_network_options(low_latency());
        let mut t = MqttTransport {
            client,
            eventloop,
            topics,
            broker_addr,
            provisioner: provisioner.map(|(p, _)| p),
        };
        if m.mode == MqttMode::Embedded {
            t.wait_subscribed().await?;
        } else {
            tracing::info!(broker = %m.broker, "MQTT transport connecting to the external broker");
        }
        Ok(Some(t))
    }

    /// Polls until the broker granted the request-topic subscription.
    async fn wait_subscribed(&mut self) -> Result<(), MqttError> {
        let addr = self
            .broker_addr
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let topic = self.topics.request().to_owned();
        let not_ready = |detail: String| MqttError::NotReady {
            addr,
            topic: topic.clone(),
            detail,
        };
        let wait = async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        self.client
                            .try_subscribe(self.topics.request(), QoS::AtLeastOnce)
                            .map_err(|e| not_ready(e.to_string()))?;
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        return if ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                        {
                            Ok(())
                        } else {
                            Err(not_ready(format!("refused: {:?}", ack.return_codes)))
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return Err(not_ready(e.to_string())),
                }
            }
        };
        tokio::time::timeout(READY_TIMEOUT, wait)
            .await
            .map_err(|_| not_ready(format!("no answer within {READY_TIMEOUT:?}")))??;
        tracing::info!(topic = %self.topics.request(), "MQTT transport subscribed");
        Ok(())
    }

    /// The broker's address: embedded mode, its loopback listener; external mode, the
    /// configured broker when it is an `ip:port`.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker_addr
    }

    /// The topics in use.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Serves until `stop` turns true; then publishes the answers it owes (bounded by a
    /// few seconds), disconnects, and stops an embedded broker.
    pub async fn run(self, service: AccessService, stop: watch::Receiver<bool>) {
        let MqttTransport {
            client,
            eventloop,
            topics,
            provisioner,
            ..
        } = self;
        let provisioner =
            provisioner.map(|p| tokio::spawn(keep_provisioned(p, service.clone(), stop.clone())));
        serve(eventloop, client, topics, service, stop).await;
        if let Some(task) = provisioner {
            if let Ok(Some(p)) = task.await {
                let _ = tokio::task::spawn_blocking(move || p.stop()).await;
            }
        }
    }
}

/// Re-provisions when the store's revision moved and the gate accounts changed. Returns
/// the provisioner (to stop the broker) unless a provisioning thread panicked.
async fn keep_provisioned(
    mut p: Provisioner,
    service: AccessService,
    mut stop: watch::Receiver<bool>,
) -> Option<Provisioner> {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done_revision = service.revision();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::stopped(&mut stop) => break,
        }
        let revision = service.revision();
        if revision == done_revision {
            continue;
        }
        let gates = gate_accounts(&service.gates());
        if gates == p.current {
            done_revision = revision;
            continue;
        }
        let (back, result) = match tokio::task::spawn_blocking(move || {
            let r = p.apply(gates);
            (p, r)
        })
        .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "MQTT provisioning failed; the broker is gone");
                return None;
            }
        };
        p = back;
        match result {
            Ok(()) => {
                done_revision = revision;
                failing = false;
            }
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "cannot re-provision the MQTT broker; retrying");
            }
            Err(_) => {}
        }
    }
    Some(p)
}

enum Step {
    Go,
    Retry(rumqttc::ConnectionError),
    Stop,
}

async fn serve(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    service: AccessService,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::unbounded_channel::<Answer>();
    let mut responder = tokio::spawn(respond(rx, client.clone(), topics.clone(), service.clone()));
    let mut backoff = INITIAL_BACKOFF;
    let mut failing = false;
    loop {
        let step = tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if failing {
                        tracing::info!("MQTT transport reconnected");
                    }
                    failing = false;
                    backoff = INITIAL_BACKOFF;
                    // Clean session: subscribe on every connection.
                    if let Err(e) = client.try_subscribe(topics.request(), QoS::AtLeastOnce) {
                        tracing::error!(error = %e, "cannot subscribe to the request topic");
                    }
                    Step::Go
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.iter().any(|c| !matches!(c, rumqttc::SubscribeReasonCode::Success(_))) {
                        tracing::error!(topic = %topics.request(), codes = ?ack.return_codes,
                            "the MQTT broker refused the hub's subscription; check the hub's ACL");
                    }
                    Step::Go
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    on_publish(&service, &topics, &p, &tx);
                    Step::Go
                }
                Ok(_) => Step::Go,
                Err(e) => Step::Retry(e),
            },
            _ = crate::stopped(&mut stop) => Step::Stop,
        };
        match step {
            Step::Go => {}
            Step::Stop => break,
            Step::Retry(e) => {
                if failing {
                    tracing::debug!(error = %e, "MQTT broker still unreachable");
                } else {
                    failing = true;
                    tracing::warn!(error = %e, "MQTT broker connection lost; reconnecting with backoff");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = crate::stopped(&mut stop) => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    // Answer what was accepted, keeping the connection going while the responder works.
    drop(tx);
    let drive = async {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(INITIAL_BACKOFF).await;
            }
        }
    };
    tokio::select! {
        _ = &mut responder => {}
        _ = drive => {}
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => responder.abort(),
    }
    // The disconnect is queued behind the answers: once it went out, so did they.
    if client.try_disconnect().is_ok() {
        let flush = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, flush).await;
    }
    tracing::info!("MQTT transport stopped");
}

/// One message on the request topic: exactly one frame.
fn on_publish(
    service: &AccessService,
    topics: &Topics,
    p: &Publish,
    answers: &mpsc::UnboundedSender<Answer>,
) {
    if p.topic != topics.request() {
        return;
    }
    let payload: &[u8] = &p.payload;
    let frame = match Frame::new_checked(payload) {
        Ok(f) => f,
        Err(e) => {
            let kind = match e {
                ProtoError::Oversize { .. } => DropKind::Oversize,
                _ => DropKind::Malformed,
            };
            service.drops().count(
                kind,
                TRANSPORT,
                &format_args!("payload of {} bytes on {}: {e}", payload.len(), p.topic),
            );
            return;
        }
    };
    debug_assert!(payload.len() <= MAX_FRAME_LEN);
    if let Some(answer) = gate_frames::handle(service, &frame, Peer::Broker, TRANSPORT) {
        let _ = answers.send(answer);
    }
}

/// One gate's response topic: each frame is one publish.
struct Publisher<'a> {
    client: &'a AsyncClient,
    topic: String,
    gate: u32,
}

/// TCP_NODELAY: answers are small and must leave at once.
fn low_latency() -> NetworkOptions {
    let mut o = NetworkOptions::new();
    o.set_tcp_nodelay(true);
    o
}

impl ReplySink for Publisher<'_> {
    async fn frame(&mut self, frame: &[u8]) {
        if let Err(e) = self
            .client
            .publish(self.topic.clone(), QoS::AtMostOnce, false, frame.to_vec())
            .await
        {
            tracing::debug!(gate = self.gate, error = %e, "cannot queue an MQTT answer");
        }
    }
}

/// Publishes answers in the order the requests came, each once its decision is durable.
async fn respond(
    mut answers: mpsc::UnboundedReceiver<Answer>,
    client: AsyncClient,
    topics: Topics,
    service: AccessService,
) {
    while let Some(answer) = answers.recv().await {
        let gate = answer.gate_id();
        let mut publisher = Publisher {
            client: &client,
            topic: topics.response_topic(gate),
            gate,
        };
        gate_frames::resolve(&mut publisher, answer, &service, TRANSPORT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_password_is_keyed_hex() {
        let a = gate_password(&[1u8; 32]);
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a, gate_password(&[1u8; 32]));
        assert_ne!(a, gate_password(&[2u8; 32]));
    }

    #[test]
    fn hub_password_created_private_and_reread() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HUB_PASSWORD_FILE);
        assert!(hub_password(&path, false).is_err());
        let pw = hub_password(&path, true).unwrap();
        assert_eq!(hub_password(&path, false).unwrap(), pw);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn broker_address_split() {
        assert_eq!(
            resolve_addr("localhost:1883").unwrap(),
            ("localhost".into(), 1883)
        );
        assert_eq!(resolve_addr("[::1]:1883").unwrap(), ("::1".into(), 1883));
        assert!(resolve_addr("nope").is_err());
    }
}
