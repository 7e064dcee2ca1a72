//! The hub's MQTT client: the gates' transport (sealed binary frames of the gate link, the
//! same bytes as on raw TCP, one frame per message) and the NVRs' Frigate messages
//! (`<prefix>/events`, `<prefix>/reviews`), both relayed by mosquitto.
//!
//! # Gate link
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
//! Remote door opens ([`crate::gate_commands`]): a gate heard on the request topic
//! lately is taken to be listening on its response topic, where a command is published
//! at once (a gate cannot be seen behind the broker, so "lately" stands in for
//! "connected"); otherwise the command is published after the answer to the gate's next
//! accepted frame.
//!
//! QoS 0 both ways: the gate link is request/answer with its own timeouts and retries (a
//! gate that gets no decision decides from its allow-list; offline batches are resent
//! until acknowledged; allow-list requests are repeated), so MQTT-level acknowledgements
//! would add only a second small write per message. The hub subscribes to the request
//! topic at QoS 0 also because its session outlives its connection (below): requests
//! published while the hub is away are not queued for it (a decision for a card read
//! minutes ago would be worse than none). The connection sets TCP_NODELAY (rumqttc's
//! default leaves Nagle on, which holds a small answer back until the broker's delayed
//! ACK: about 40 ms per message).
//!
//! # Frigate
//!
//! Every enabled event source of kind `nvr` with an MQTT prefix
//! ([`Store::nvr_mqtt_prefixes`]) is an NVR speaking Frigate's MQTT. The hub subscribes to
//! `<prefix>/events` and `<prefix>/reviews` at QoS 1 and hands each message to
//! [`FrigateIngest`] (parse, then [`EventService::submit`]). Nothing is lost on the way:
//! - the hub's session is persistent: `clean_session = false` with the stable client id
//!   [`CLIENT_ID`], so the broker keeps its subscriptions and queues QoS 1 messages while
//!   the hub is away (crashed, restarting, or the broker restarted with persistence);
//! - acknowledgements are manual: a Frigate message is acknowledged only after its event
//!   is committed, or once it is known never to be (invalid payload, false positive,
//!   refused by the store: counted, see
//!   [`FrigateStats`](crate::events::frigate::FrigateStats)); while the store fails the
//!   submit is retried and the message stays unacknowledged, so after a crash the broker
//!   delivers it again. A message delivered twice folds into the same event in the store
//!   (same source and Frigate id).
//! - each message is submitted on its own task, so the event loop (and the gates'
//!   traffic) never waits for a commit; messages about one Frigate object (one external
//!   id) are submitted in arrival order, one after the other. Acknowledgements go through
//!   the client's request channel; an acknowledgement owed on a connection that has since
//!   dropped is not sent (the broker delivers the message again on the new connection).
//!   Gate requests arrive at QoS 0 and need none; mosquitto keeps sending them while
//!   Frigate messages wait for their commits (its in-flight limit counts QoS 1 only).
//!
//! Subscriptions follow the store (the store's alert configuration revision, which every
//! change to event sources bumps, is checked every [`REFRESH_INTERVAL`]; the sources are
//! re-read only when it moved): a new NVR is subscribed, a removed or disabled one unsubscribed,
//! and every connection subscribes again to all of them. A message on the topic of a
//! source that is gone is acknowledged and counted.
//!
//! NVR prefixes are topic names without wildcards that overlap neither the gate link's
//! topics nor each other (`gatehouse_broker::check_nvr_prefix`, which the admin API and
//! CLI should call before they register one); a source whose prefix breaks these rules is
//! left out (lowest source id first), with a warning.
//!
//! # Broker accounts
//!
//! Each gate's MQTT account is its store `mqtt_username` with the password
//! [`gate_password`]: lowercase hex of HMAC-SHA-256(gate secret, [`GATE_PASSWORD_LABEL`]).
//! Nothing new is stored, rotating the gate's secret rotates its MQTT password, and the
//! gate derives it from the secret it already holds. The ACL (see `gatehouse_broker::acl`)
//! lets a gate write only the request topic and read only its own response topic.
//!
//! Each NVR source's account is `nvr-<source name>` ([`nvr_mqtt_username`]) with the
//! password [`nvr_mqtt_password`]: lowercase hex of HMAC-SHA-256(K, [`NVR_PASSWORD_LABEL`]
//! || source id as 8 bytes big-endian || SHA-256 of the source's API key), where K is
//! `SiteKey::nvr_mqtt_key` (derived from the site key, which never leaves the box).
//! Nothing new is stored; rotating the source's API key rotates its MQTT password; a copy
//! of the database alone does not give it. [`nvr_mqtt_credentials`] prints it for the
//! admin API and CLI. Its ACL: read and write `<prefix>/#` (Frigate publishes many topics
//! under its prefix and subscribes to its own `.../set` topics); the hub reads
//! `<prefix>/events` and `<prefix>/reviews`.
//!
//! When `[lora]` runs a packet forwarder (`lora.mode` not `off`), the broker also has its
//! account `lora.mqtt.username` (`lora-forwarder`) with the password
//! [`lora_forwarder_password`] (derived from the site key like the NVRs'), written 0600
//! to `<data_dir>/mqtt-lora.password` for `gatehouse lora` to read; its ACL, like the
//! hub's, is read and write on `lora/#` (`lora/up`, `lora/down`, `lora/tx`).
//!
//! # Modes (`hub.mqtt.mode`)
//!
//! - `embedded`: [`MqttTransport::start`] provisions mosquitto from the store's gates and
//!   NVR sources (the hub's password random, kept 0600 in `<data_dir>/mqtt-hub.password`)
//!   and runs it from `<data_dir>/mosquitto/`; when the accounts change it rewrites the
//!   password and ACL files and reloads mosquitto (SIGHUP); the broker is stopped when the
//!   transport stops. `start` returns once the hub is subscribed, so a gate may publish
//!   as soon as `Hub::bind` returned. The embedded broker keeps its sessions in
//!   `<data_dir>/mosquitto/db/` (persistence on: written when it stops, which includes
//!   the hub dying, as mosquitto then gets SIGTERM, and every 30 minutes; a broker killed
//!   outright or a power cut loses the messages it held for the hub since then), queues up
//!   to [`EMBEDDED_MAX_QUEUED`] messages per client, accepts payloads up to
//!   [`BROKER_MESSAGE_LIMIT`] bytes, and upgrades deliveries to the subscriber's QoS
//!   (`upgrade_outgoing_qos`: Frigate publishes at QoS 0; the hub gets its messages at
//!   QoS 1, kept until acknowledged; a gate gets its answers at the QoS it subscribed
//!   with).
//! - `external`: connect to `hub.mqtt.broker` with the password in
//!   `hub.mqtt.password_file`; if `hub.mqtt.provision_dir` is set, the password and ACL
//!   files are written there on every change (reloading that broker is its owner's job).
//!   That broker should be set up like the embedded one: persistence on, a
//!   `message_size_limit` of at most [`BROKER_MESSAGE_LIMIT`] (a larger message on a
//!   Frigate topic breaks the hub's connection, and it would be redelivered forever) and
//!   `upgrade_outgoing_qos true` (else Frigate's QoS 0 messages published while the hub
//!   is away are not kept for it).

use crate::access::{AccessService, GateAuth, REFRESH_INTERVAL};
use crate::drops::DropKind;
use crate::events::frigate::{FrigateCounters, FrigateIngest, FrigateSource};
use crate::events::EventService;
use crate::gate_frames::{self, Answer, Peer, ReplySink};
use gatehouse_alerts::frigate::FrigateTopic;
use gatehouse_alerts::model::SourceId;
use gatehouse_broker::acl::nvr_hub_topics;
use gatehouse_broker::{
    check_nvr_prefix, random_password, Account, BrokerConfig, BrokerError, BrokerFiles,
    GateAccount, Mosquitto, NvrAccount, Persistence, Provisioning, Topics,
};
use gatehouse_config::{Config, MqttMode};
use gatehouse_gate_proto::{Error as ProtoError, Frame, GateKey, MAX_FRAME_LEN};
use gatehouse_store::{SiteKey, Store, StoreError};
use hmac::{Hmac, Mac};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter,
};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// The HMAC label of a gate's MQTT password (see [`gate_password`]).
pub const GATE_PASSWORD_LABEL: &[u8] = b"gatehouse mqtt password v1";
/// The HMAC label of an NVR's MQTT password (see [`nvr_mqtt_password`]).
pub const NVR_PASSWORD_LABEL: &[u8] = b"gatehouse nvr mqtt password v1";
/// The HMAC label of the LoRa packet forwarder's MQTT password (see
/// [`lora_forwarder_password`]).
pub const LORA_PASSWORD_LABEL: &[u8] = b"gatehouse lora forwarder mqtt password v1";
/// What an NVR source's MQTT user name starts with (then its source name).
pub const NVR_USERNAME_PREFIX: &str = "nvr-";
/// The hub's password file in the data directory (embedded mode, when
/// `hub.mqtt.password_file` is empty).
pub const HUB_PASSWORD_FILE: &str = "mqtt-hub.password";
/// The embedded broker's directory in the data directory.
pub const BROKER_DIR: &str = "mosquitto";
/// The embedded broker's persistence directory, inside [`BROKER_DIR`].
pub const PERSISTENCE_DIR: &str = "db";
/// Largest payload the embedded broker accepts (`message_size_limit`): Frigate's
/// snapshots (a JPEG per camera and object) fit; the hub's incoming packet limit is this
/// plus the largest MQTT header, so anything the broker delivers reaches the hub whole.
pub const BROKER_MESSAGE_LIMIT: u32 = 1 << 20;
/// Most messages the embedded broker queues per client (`max_queued_messages`; mosquitto's
/// default, 1000, would drop Frigate messages when the hub falls behind a burst).
pub const EMBEDDED_MAX_QUEUED: u32 = 100_000;
/// First wait before reconnecting to a broker that went away; doubled up to
/// [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest MQTT packet the hub sends: a frame is at most `MAX_FRAME_LEN`.
pub const MAX_PACKET: usize = 64 * 1024;
/// Largest MQTT packet the hub accepts (remaining length): a payload of
/// [`BROKER_MESSAGE_LIMIT`] with a topic of up to 65535 bytes, its length and the packet
/// id (MQTT 3.1.1 section 3.3). Larger payloads than a frame or a Frigate message are
/// counted and dropped, not a broken connection.
pub const MAX_INCOMING_PACKET: usize = BROKER_MESSAGE_LIMIT as usize + 2 + 65_535 + 2;
/// The hub's MQTT client id: stable, so the broker finds its session again.
pub const CLIENT_ID: &str = "gatehouse-hub";
/// How long `start` waits for the embedded broker to accept the hub's subscription.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long stopping waits for owed answers and acknowledgements to go out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
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
    #[error("cannot read the NVR sources from the store in {dir}: {source}")]
    Store {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("the MQTT transport's background work failed: {0}")]
    Task(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    // HMAC accepts keys of any length; the fallback is never taken.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    for p in parts {
        mac.update(p);
    }
    hex(&mac.finalize().into_bytes())
}

/// A gate's MQTT password: lowercase hex of HMAC-SHA-256(`key`, [`GATE_PASSWORD_LABEL`]).
pub fn gate_password(key: &GateKey) -> String {
    hmac_hex(key, &[GATE_PASSWORD_LABEL])
}

/// An NVR source's MQTT user name: `nvr-<source name>` (source names are
/// `[A-Za-z0-9._-]{1,64}`, valid mosquitto user names).
pub fn nvr_mqtt_username(source_name: &str) -> String {
    format!("{NVR_USERNAME_PREFIX}{source_name}")
}

/// An NVR source's MQTT password: lowercase hex of HMAC-SHA-256(`site_key.nvr_mqtt_key()`,
/// [`NVR_PASSWORD_LABEL`] || `source` as 8 bytes big-endian || `key_hash`), where
/// `key_hash` is SHA-256 of the source's API key (`Store::event_source_key_hash`).
pub fn nvr_mqtt_password(site_key: &SiteKey, source: SourceId, key_hash: &[u8; 32]) -> String {
    hmac_hex(
        &site_key.nvr_mqtt_key(),
        &[NVR_PASSWORD_LABEL, &source.to_be_bytes(), key_hash],
    )
}

/// The LoRa packet forwarder's MQTT password: lowercase hex of
/// HMAC-SHA-256(`site_key.nvr_mqtt_key()`, [`LORA_PASSWORD_LABEL`]). Stable for the site;
/// written to `<data_dir>/mqtt-lora.password` for `gatehouse lora` (see
/// [`lora_forwarder_account`]).
pub fn lora_forwarder_password(site_key: &SiteKey) -> String {
    hmac_hex(&site_key.nvr_mqtt_key(), &[LORA_PASSWORD_LABEL])
}

/// The forwarder's broker account when `[lora]` runs one (`lora.mode` is not `off`):
/// `lora.mqtt.username` with [`lora_forwarder_password`], which is written (0600) to
/// its password file (`lora.mqtt.password_file`, default `<data_dir>/mqtt-lora.password`)
/// when that file does not already hold it. Blocking.
fn lora_forwarder_account(
    config: &Config,
    data_dir: &Path,
    site_key: &SiteKey,
) -> Result<Option<Account>, MqttError> {
    if config.lora.mode == gatehouse_config::LoraMode::Off {
        return Ok(None);
    }
    let password = lora_forwarder_password(site_key);
    let path = config.lora.password_file(data_dir);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.trim() != password {
        let err = |source| MqttError::Password {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        f.write_all(format!("{password}\n").as_bytes())
            .map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    Ok(Some(Account::new(&config.lora.mqtt.username, password)))
}

/// The MQTT user name and password of event source `source`, to show the admin who sets
/// up the NVR (Frigate's `mqtt.user` and `mqtt.password`). The broker has this account
/// while the source is an enabled NVR with an MQTT prefix.
pub fn nvr_mqtt_credentials(
    store: &Store,
    site_key: &SiteKey,
    source: SourceId,
) -> Result<(String, String), StoreError> {
    let s = store.event_source(source)?;
    let hash = store.event_source_key_hash(source)?;
    Ok((
        nvr_mqtt_username(&s.name),
        nvr_mqtt_password(site_key, s.id, &hash),
    ))
}

/// The broker account of each gate.
fn gate_accounts(gates: &[Arc<GateAuth>]) -> Vec<GateAccount> {
    gates
        .iter()
        .map(|g| GateAccount::with_username(g.id, g.mqtt_username.clone(), gate_password(g.key())))
        .collect()
}

/// An NVR source in effect, with its broker password.
#[derive(Clone, PartialEq, Eq)]
struct Nvr {
    source: Arc<FrigateSource>,
    password: String,
}

impl std::fmt::Debug for Nvr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvr")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Nvr {
    fn account(&self) -> NvrAccount {
        NvrAccount::new(
            self.source.prefix.clone(),
            Account::new(nvr_mqtt_username(&self.source.name), self.password.clone()),
        )
    }
}

/// The NVR sources the hub takes Frigate messages from, and why others are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NvrSet {
    nvrs: Vec<Nvr>,
    left_out: Vec<String>,
}

impl NvrSet {
    fn accounts(&self) -> Vec<NvrAccount> {
        self.nvrs.iter().map(Nvr::account).collect()
    }

    fn warn_left_out(&self) {
        for why in &self.left_out {
            tracing::warn!("NVR source left out of MQTT: {why}");
        }
    }
}

/// The hub's own connection to the store for the NVR sources.
struct SourceReader {
    store: Store,
    site_key: SiteKey,
    topics: Topics,
    /// The store's alert configuration revision at the last successful read.
    read_at: Option<u64>,
}

impl SourceReader {
    /// Opens the store in `data_dir`. Blocking.
    fn open(data_dir: &Path, topics: Topics) -> Result<SourceReader, MqttError> {
        let err = |source| MqttError::Store {
            dir: data_dir.to_owned(),
            source,
        };
        Ok(SourceReader {
            store: Store::open(data_dir).map_err(err)?,
            site_key: SiteKey::load_or_create(data_dir).map_err(err)?,
            topics,
            read_at: None,
        })
    }

    /// [`SourceReader::read`] if the sources may have changed since the last read (the
    /// revision moved), else `None`. Blocking.
    fn read_if_changed(&mut self) -> Result<Option<NvrSet>, StoreError> {
        let revision = self.store.alert_config_revision()?;
        if self.read_at == Some(revision) {
            return Ok(None);
        }
        let set = self.read()?;
        self.read_at = Some(revision);
        Ok(Some(set))
    }

    /// The enabled NVR sources with a usable prefix, lowest id first. Blocking.
    fn read(&self) -> Result<NvrSet, StoreError> {
        let mut set = NvrSet::default();
        for s in self.store.nvr_mqtt_prefixes()? {
            let Some(prefix) = s.mqtt_prefix else {
                continue;
            };
            let taken = set.nvrs.iter().map(|n| n.source.prefix.as_str());
            if let Err(e) = check_nvr_prefix(&prefix, &self.topics, taken) {
                set.left_out.push(format!("source {:?}: {e}", s.name));
                continue;
            }
            let hash = self.store.event_source_key_hash(s.id)?;
            set.nvrs.push(Nvr {
                password: nvr_mqtt_password(&self.site_key, s.id, &hash),
                source: Arc::new(FrigateSource {
                    id: s.id,
                    name: s.name,
                    prefix,
                    base_url: s.base_url,
                }),
            });
        }
        Ok(set)
    }
}

/// Every account the broker should have besides the hub's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Accounts {
    gates: Vec<GateAccount>,
    nvrs: Vec<NvrAccount>,
}

/// Where the accounts go.
enum Sink {
    /// The hub's own mosquitto.
    Embedded(Mosquitto),
    /// Files for a broker run elsewhere.
    Files(BrokerFiles),
}

/// Keeps the broker's accounts equal to the store's gates and NVR sources.
struct Provisioner {
    hub: Account,
    /// The LoRa packet forwarder's account, when `[lora]` runs one.
    lora: Option<Account>,
    topics: Topics,
    sink: Sink,
    /// The accounts last written.
    current: Accounts,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("gates", &self.current.gates.len())
            .field("nvrs", &self.current.nvrs.len())
            .finish_non_exhaustive()
    }
}

/// The hub's account and every gate and NVR account that can be written (one whose user
/// name collides with another account is left out, with a warning).
fn provisioning(
    hub: &Account,
    lora: Option<&Account>,
    topics: &Topics,
    accounts: &Accounts,
) -> Result<Provisioning, MqttError> {
    let mut p = Provisioning::new(hub.clone(), topics.clone())?;
    if let Some(l) = lora {
        p.set_lora_forwarder(l.clone())?;
    }
    for g in &accounts.gates {
        if let Err(e) = p.add_gate(g.clone()) {
            tracing::warn!(gate = g.gate_id, error = %e, "gate left out of the MQTT broker's accounts");
        }
    }
    for n in &accounts.nvrs {
        if let Err(e) = p.add_nvr(n.clone()) {
            tracing::warn!(user = %n.account.username, error = %e,
                "NVR left out of the MQTT broker's accounts");
        }
    }
    Ok(p)
}

impl Provisioner {
    /// Writes `accounts` (and reloads an embedded broker). Blocking.
    fn apply(&mut self, accounts: Accounts) -> Result<(), MqttError> {
        let p = provisioning(&self.hub, self.lora.as_ref(), &self.topics, &accounts)?;
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
        tracing::info!(
            gates = p.gates().len(),
            nvrs = p.nvrs().len(),
            "MQTT broker accounts provisioned"
        );
        self.current = accounts;
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
    sources: SourceReader,
    nvrs: NvrSet,
    /// Messages that arrived before `start` returned (a resumed session's queue).
    early: Vec<Publish>,
    frigate: Arc<FrigateCounters>,
}

impl std::fmt::Debug for MqttTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTransport")
            .field("topics", &self.topics)
            .field("broker_addr", &self.broker_addr)
            .field("nvrs", &self.nvrs)
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

/// Every subscription of the hub: the request topic at QoS 0, each NVR's Frigate topics at
/// QoS 1.
fn subscriptions(topics: &Topics, nvrs: &NvrSet) -> Vec<SubscribeFilter> {
    std::iter::once(SubscribeFilter::new(
        topics.request().to_owned(),
        QoS::AtMostOnce,
    ))
    .chain(nvrs.nvrs.iter().flat_map(|n| {
        nvr_hub_topics(&n.source.prefix)
            .into_iter()
            .map(|t| SubscribeFilter::new(t, QoS::AtLeastOnce))
    }))
    .collect()
}

/// The embedded broker's settings (see the module docs).
fn embedded_broker_config(listen: SocketAddr, broker_dir: &Path) -> BrokerConfig {
    let loopback = listen.ip() == std::net::IpAddr::from(Ipv4Addr::LOCALHOST);
    BrokerConfig {
        persistence: Persistence::Directory(broker_dir.join(PERSISTENCE_DIR)),
        max_queued_messages: Some(EMBEDDED_MAX_QUEUED),
        message_size_limit: Some(BROKER_MESSAGE_LIMIT),
        upgrade_outgoing_qos: true,
        lan_listener: (!loopback).then_some(listen),
        ..BrokerConfig::loopback(if loopback { listen.port() } else { 0 })
    }
}

impl MqttTransport {
    /// Starts the transport as `config.hub.mqtt` says; `None` when its mode is `off`.
    pub async fn start(
        config: &Config,
        service: &AccessService,
    ) -> Result<Option<MqttTransport>, MqttError> {
        let m = &config.hub.mqtt;
        if m.mode == MqttMode::Off {
            return Ok(None);
        }
        let topics = Topics::new(&m.request_topic, &m.response_prefix)?;
        let data_dir = std::path::absolute(&config.general.data_dir).map_err(|e| {
            MqttError::Broker(BrokerError::Io {
                path: config.general.data_dir.clone(),
                source: e,
            })
        })?;
        let (sources, nvrs) = {
            let (dir, t) = (data_dir.clone(), topics.clone());
            tokio::task::spawn_blocking(move || {
                let mut sources = SourceReader::open(&dir, t)?;
                let nvrs = sources
                    .read_if_changed()
                    .map_err(|source| MqttError::Store {
                        dir: dir.clone(),
                        source,
                    })?
                    .unwrap_or_default();
                Ok::<_, MqttError>((sources, nvrs))
            })
            .await
            .map_err(|e| MqttError::Task(e.to_string()))??
        };
        nvrs.warn_left_out();
        let lora = lora_forwarder_account(config, &data_dir, &sources.site_key)?;
        let accounts = Accounts {
            gates: gate_accounts(&service.gates()),
            nvrs: nvrs.accounts(),
        };
        let (host, port, broker_addr, provisioner) = match m.mode {
            MqttMode::Off => return Ok(None),
            MqttMode::Embedded => {
                let pw_path = if m.password_file.as_os_str().is_empty() {
                    data_dir.join(HUB_PASSWORD_FILE)
                } else {
                    m.password_file.clone()
                };
                let hub = Account::new(&m.username, hub_password(&pw_path, true)?);
                let p = provisioning(&hub, lora.as_ref(), &topics, &accounts)?;
                let broker_dir = data_dir.join(BROKER_DIR);
                let broker_config = embedded_broker_config(m.listen, &broker_dir);
                let files = BrokerFiles::new(broker_dir);
                let mosquitto = tokio::task::spawn_blocking(move || {
                    Mosquitto::start(files, &p, &broker_config)
                })
                .await
                .map_err(|e| MqttError::Task(e.to_string()))??;
                let addr = mosquitto.address();
                let loopback = m.listen.ip() == std::net::IpAddr::from(Ipv4Addr::LOCALHOST);
                tracing::info!(
                    %addr,
                    gates_listen = %(if loopback { addr } else { m.listen }),
                    pid = mosquitto.pid(),
                    gates = accounts.gates.len(),
                    nvrs = accounts.nvrs.len(),
                    "MQTT broker ready"
                );
                let provisioner = Provisioner {
                    hub: hub.clone(),
                    lora,
                    topics: topics.clone(),
                    sink: Sink::Embedded(mosquitto),
                    current: accounts,
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
                        lora,
                        topics: topics.clone(),
                        sink: Sink::Files(BrokerFiles::new(&m.provision_dir)),
                        current: Accounts::default(),
                    };
                    p = tokio::task::spawn_blocking(move || p.apply(accounts).map(|()| p))
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
            // The broker keeps the hub's subscriptions and queued QoS 1 messages while it
            // is away; every message is acknowledged by the hub itself.
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_PACKET);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        eventloop.set_network_options(low_latency());
        let mut t = MqttTransport {
            client,
            eventloop,
            topics,
            broker_addr,
            provisioner: provisioner.map(|(p, _)| p),
            sources,
            nvrs,
            early: Vec::new(),
            frigate: Arc::default(),
        };
        if m.mode == MqttMode::Embedded {
            t.wait_subscribed().await?;
        } else {
            tracing::info!(broker = %m.broker, "MQTT transport connecting to the external broker");
        }
        Ok(Some(t))
    }

    /// Polls until the broker granted the hub's subscriptions, keeping the messages a
    /// resumed session delivers meanwhile.
    async fn wait_subscribed(&mut self) -> Result<(), MqttError> {
        let addr = self
            .broker_addr
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let filters = subscriptions(&self.topics, &self.nvrs);
        let topic = filters
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let not_ready = |detail: String| MqttError::NotReady {
            addr,
            topic: topic.clone(),
            detail,
        };
        let wait = async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        tracing::debug!(
                            session_present = ack.session_present,
                            "MQTT transport connected"
                        );
                        self.client
                            .try_subscribe_many(filters.clone())
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
                    Ok(Event::Incoming(Packet::Publish(p))) => self.early.push(p),
                    Ok(_) => {}
                    Err(e) => return Err(not_ready(e.to_string())),
                }
            }
        };
        tokio::time::timeout(READY_TIMEOUT, wait)
            .await
            .map_err(|_| not_ready(format!("no answer within {READY_TIMEOUT:?}")))??;
        tracing::info!(topics = %topic, "MQTT transport subscribed");
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

    /// The Frigate counters (received, committed, dropped by reason).
    pub fn frigate_counters(&self) -> Arc<FrigateCounters> {
        Arc::clone(&self.frigate)
    }

    /// Serves until `stop` turns true; then publishes the answers and acknowledgements it
    /// owes (bounded by a few seconds), disconnects, and stops an embedded broker.
    pub async fn run(
        self,
        service: AccessService,
        events: EventService,
        stop: watch::Receiver<bool>,
    ) {
        let MqttTransport {
            client,
            eventloop,
            topics,
            provisioner,
            sources,
            nvrs,
            early,
            frigate,
            ..
        } = self;
        // What `start` subscribed to; a newer set from the follower shows as a change.
        let initial_routes = routes(&nvrs);
        let (nvrs_tx, nvrs_rx) = watch::channel(nvrs.clone());
        let follower = tokio::spawn(follow_store(
            Follower {
                provisioner,
                sources,
                nvrs,
                nvrs_tx,
            },
            service.clone(),
            stop.clone(),
        ));
        let mut session = Session::new(
            client,
            topics,
            service,
            FrigateIngest::new(events, frigate),
            stop,
        );
        session.routes = initial_routes;
        session.serve(eventloop, nvrs_rx, early).await;
        if let Ok(Some(p)) = follower.await {
            let _ = tokio::task::spawn_blocking(move || p.stop()).await;
        }
    }
}

/// What follows the store: the broker's accounts (when the hub provisions them) and the
/// NVR sources the hub subscribes to.
struct Follower {
    provisioner: Option<Provisioner>,
    sources: SourceReader,
    /// The NVR sources last published to the session.
    nvrs: NvrSet,
    nvrs_tx: watch::Sender<NvrSet>,
}

/// Every [`REFRESH_INTERVAL`]: re-reads the gates (when the store's revision moved) and the
/// NVR sources (when the alert configuration revision moved); re-provisions the broker when the accounts changed; then tells the session
/// about new NVR sources (after their accounts and the hub's ACL exist). Returns the
/// provisioner (to stop the broker) unless a blocking task panicked.
async fn follow_store(
    mut f: Follower,
    service: AccessService,
    mut stop: watch::Receiver<bool>,
) -> Option<Provisioner> {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gates_revision = service.revision();
    let mut gates = f
        .provisioner
        .as_ref()
        .map(|p| p.current.gates.clone())
        .unwrap_or_default();
    let mut failing = false;
    let mut read_failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::stopped(&mut stop) => break,
        }
        let revision = service.revision();
        if revision != gates_revision && f.provisioner.is_some() {
            gates = gate_accounts(&service.gates());
        }
        let mut reader = f.sources;
        let (reader, read) = match tokio::task::spawn_blocking(move || {
            let r = reader.read_if_changed();
            (reader, r)
        })
        .await
        {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "reading the NVR sources failed; MQTT stops following the store");
                return f.provisioner;
            }
        };
        f.sources = reader;
        let nvrs = match read {
            Ok(n) => {
                read_failing = false;
                n.unwrap_or_else(|| f.nvrs.clone())
            }
            Err(e) => {
                if !read_failing {
                    read_failing = true;
                    tracing::error!(error = %e, "cannot read the NVR sources; retrying");
                }
                continue;
            }
        };
        if let Some(mut p) = f.provisioner.take() {
            let accounts = Accounts {
                gates: gates.clone(),
                nvrs: nvrs.accounts(),
            };
            if accounts != p.current {
                let (back, result) = match tokio::task::spawn_blocking(move || {
                    let r = p.apply(accounts);
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
                f.provisioner = Some(back);
                match result {
                    Ok(()) => failing = false,
                    Err(e) => {
                        if !failing {
                            failing = true;
                            tracing::error!(error = %e, "cannot re-provision the MQTT broker; retrying");
                        }
                        continue;
                    }
                }
            } else {
                f.provisioner = Some(p);
            }
        }
        gates_revision = revision;
        if nvrs != f.nvrs {
            if nvrs.left_out != f.nvrs.left_out {
                nvrs.warn_left_out();
            }
            f.nvrs = nvrs.clone();
            // The session is gone once it stopped; so are we, at the next tick.
            let _ = f.nvrs_tx.send(nvrs);
        }
    }
    f.provisioner
}

/// Keeps the messages about one Frigate object (one source and external id) in arrival
/// order: each waits for the one before it to settle. Messages about different objects
/// go concurrently.
#[derive(Debug, Default)]
struct InOrder {
    /// Per object, a receiver that completes when its latest message has settled.
    last: HashMap<(SourceId, String), oneshot::Receiver<()>>,
    /// Settled entries are pruned when the map grows past this.
    prune_above: usize,
}

impl InOrder {
    const MIN_PRUNE: usize = 256;

    /// Enters a message about `key`: what to wait for before submitting it (the previous
    /// message's), and what to drop once it has settled.
    fn enter(
        &mut self,
        key: (SourceId, String),
    ) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, next) = oneshot::channel();
        let previous = self.last.insert(key, next);
        if self.last.len() > self.prune_above.max(Self::MIN_PRUNE) {
            // A closed channel: that message has settled, nobody has to wait for it.
            self.last
                .retain(|_, rx| matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
            self.prune_above = self.last.len() * 2;
        }
        (previous, done)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }
}

/// Acknowledges `p` unless the connection it came on is gone (`generation` moved): the
/// broker then delivers it again on the new one, and that copy gets acknowledged.
async fn ack(client: &AsyncClient, p: &Publish, generation: &AtomicU64, received_on: u64) {
    if p.qos == QoS::AtMostOnce || generation.load(Ordering::Acquire) != received_on {
        return;
    }
    if let Err(e) = client.ack(p).await {
        tracing::debug!(error = %e, "cannot queue an MQTT acknowledgement");
    }
}

enum Step {
    Go,
    Retry(rumqttc::ConnectionError),
    Stop,
}

/// The serving side of the connection.
struct Session {
    client: AsyncClient,
    topics: Topics,
    service: AccessService,
    ingest: FrigateIngest,
    stop: watch::Receiver<bool>,
    /// Frigate topic -> its source and kind.
    routes: HashMap<String, (Arc<FrigateSource>, FrigateTopic)>,
    in_order: InOrder,
    /// Submits and acknowledgements under way.
    tasks: JoinSet<()>,
    /// Bumped on every CONNACK.
    generation: Arc<AtomicU64>,
}

fn routes(nvrs: &NvrSet) -> HashMap<String, (Arc<FrigateSource>, FrigateTopic)> {
    let mut r = HashMap::new();
    for n in &nvrs.nvrs {
        for t in [FrigateTopic::Events, FrigateTopic::Reviews] {
            r.insert(
                format!("{}/{}", n.source.prefix, t.suffix()),
                (Arc::clone(&n.source), t),
            );
        }
    }
    r
}

impl Session {
    fn new(
        client: AsyncClient,
        topics: Topics,
        service: AccessService,
        ingest: FrigateIngest,
        stop: watch::Receiver<bool>,
    ) -> Session {
        Session {
            client,
            topics,
            service,
            ingest,
            stop,
            routes: HashMap::new(),
            in_order: InOrder::default(),
            tasks: JoinSet::new(),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues a SUBSCRIBE (from a task if the request channel is full).
    fn subscribe(&mut self, filters: Vec<SubscribeFilter>) {
        if filters.is_empty() {
            return;
        }
        if self.client.try_subscribe_many(filters.clone()).is_err() {
            let client = self.client.clone();
            self.tasks.spawn(async move {
                if let Err(e) = client.subscribe_many(filters).await {
                    tracing::error!(error = %e, "cannot subscribe the hub's MQTT topics");
                }
            });
        }
    }

    /// Follows a new set of NVR sources: subscribes the topics of new ones, unsubscribes
    /// those of removed ones.
    fn set_nvrs(&mut self, nvrs: &NvrSet) {
        let new = routes(nvrs);
        let added: Vec<SubscribeFilter> = new
            .keys()
            .filter(|t| !self.routes.contains_key(*t))
            .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce))
            .collect();
        let removed: Vec<String> = self
            .routes
            .keys()
            .filter(|t| !new.contains_key(*t))
            .cloned()
            .collect();
        for t in &added {
            tracing::info!(topic = %t.path, "subscribing to Frigate messages");
        }
        self.subscribe(added);
        for topic in removed {
            tracing::info!(%topic, "unsubscribing from Frigate messages");
            if self.client.try_unsubscribe(topic.clone()).is_err() {
                let client = self.client.clone();
                self.tasks.spawn(async move {
                    let _ = client.unsubscribe(topic).await;
                });
            }
        }
        self.routes = new;
    }

    async fn serve(
        mut self,
        mut eventloop: EventLoop,
        mut nvrs: watch::Receiver<NvrSet>,
        early: Vec<Publish>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel::<Answer>();
        let mut responder = tokio::spawn(respond(
            rx,
            self.client.clone(),
            self.topics.clone(),
            self.service.clone(),
        ));
        // Messages that came while `start` waited for the SUBACK: on the first connection.
        self.generation.store(1, Ordering::Release);
        for p in early {
            self.on_publish(p, &tx);
        }
        let mut backoff = INITIAL_BACKOFF;
        let mut failing = false;
        let mut following = true;
        let mut stop = self.stop.clone();
        loop {
            let step = tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        self.generation.fetch_add(1, Ordering::AcqRel);
                        if failing {
                            tracing::info!(session_present = ack.session_present, "MQTT transport reconnected");
                        }
                        failing = false;
                        backoff = INITIAL_BACKOFF;
                        // Also with a resumed session: the broker may have lost it. The
                        // topics routed now; a newer set is subscribed when it is taken,
                        // so nothing arrives for a topic before its route exists.
                        self.subscribe(self.all_subscriptions());
                        Step::Go
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.iter().any(|c| !matches!(c, rumqttc::SubscribeReasonCode::Success(_))) {
                            tracing::error!(codes = ?ack.return_codes, topics = ?self.subscribed(),
                                "the MQTT broker refused some of the hub's subscriptions; check the hub's ACL");
                        }
                        Step::Go
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        self.on_publish(p, &tx);
                        Step::Go
                    }
                    Ok(_) => Step::Go,
                    Err(e) => Step::Retry(e),
                },
                changed = nvrs.changed(), if following => {
                    if changed.is_ok() {
                        let set = nvrs.borrow_and_update().clone();
                        self.set_nvrs(&set);
                    } else {
                        // The follower is gone: keep the sources as they are.
                        following = false;
                    }
                    Step::Go
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => Step::Go,
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
        // Answer what was accepted and acknowledge what was committed, keeping the
        // connection going meanwhile.
        drop(tx);
        let mut tasks = std::mem::take(&mut self.tasks);
        let drive = async {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(INITIAL_BACKOFF).await;
                }
            }
        };
        let owed = async {
            let _ = (&mut responder).await;
            while tasks.join_next().await.is_some() {}
        };
        tokio::select! {
            _ = owed => {}
            _ = drive => {}
            _ = tokio::time::sleep(DRAIN_TIMEOUT) => {
                responder.abort();
                tasks.abort_all();
            }
        }
        // The disconnect is queued behind the answers and acknowledgements: once it went
        // out, so did they.
        if self.client.try_disconnect().is_ok() {
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

    /// The request topic at QoS 0 and every routed Frigate topic at QoS 1.
    fn all_subscriptions(&self) -> Vec<SubscribeFilter> {
        let mut frigate: Vec<&String> = self.routes.keys().collect();
        frigate.sort_unstable();
        std::iter::once(SubscribeFilter::new(
            self.topics.request().to_owned(),
            QoS::AtMostOnce,
        ))
        .chain(
            frigate
                .into_iter()
                .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce)),
        )
        .collect()
    }

    /// The hub's subscriptions, for error messages.
    fn subscribed(&self) -> Vec<&str> {
        let mut t: Vec<&str> = std::iter::once(self.topics.request())
            .chain(self.routes.keys().map(String::as_str))
            .collect();
        t.sort_unstable();
        t
    }

    /// One incoming message.
    fn on_publish(&mut self, p: Publish, answers: &mpsc::UnboundedSender<Answer>) {
        let generation = self.generation.load(Ordering::Acquire);
        if p.topic == self.topics.request() {
            on_gate_publish(&self.service, &p, answers);
            // Subscribed at QoS 0; a QoS 1 copy could only come from an older session.
            self.ack_soon(p, generation);
            return;
        }
        let Some((source, topic)) = self.routes.get(&p.topic).cloned() else {
            // A source removed while its messages were queued, or a subscription the
            // broker kept from an earlier run: acknowledged, counted, unsubscribed.
            self.ingest.counters().unknown_topic(&p.topic);
            let _ = self.client.try_unsubscribe(p.topic.clone());
            self.ack_soon(p, generation);
            return;
        };
        let now = time::OffsetDateTime::now_utc();
        let Some(event) = self.ingest.prepare(&source, topic, &p.payload, now) else {
            self.ack_soon(p, generation);
            return;
        };
        let (previous, done) = match &event.external_id {
            Some(id) => {
                let (previous, done) = self.in_order.enter((source.id, id.clone()));
                (previous, Some(done))
            }
            None => (None, None),
        };
        let ingest = self.ingest.clone();
        let client = self.client.clone();
        let current = Arc::clone(&self.generation);
        let mut stop = self.stop.clone();
        self.tasks.spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let settled = ingest.submit(event, &mut stop).await;
            if settled.ack() {
                ack(&client, &p, &current, generation).await;
            }
            drop(done);
        });
    }

    /// Acknowledges a message that needs no commit.
    fn ack_soon(&mut self, p: Publish, generation: u64) {
        if p.qos == QoS::AtMostOnce {
            return;
        }
        if self.client.try_ack(&p).is_err() {
            let client = self.client.clone();
            let current = Arc::clone(&self.generation);
            self.tasks
                .spawn(async move { ack(&client, &p, &current, generation).await });
        }
    }
}

/// One message on the request topic: exactly one frame.
fn on_gate_publish(service: &AccessService, p: &Publish, answers: &mpsc::UnboundedSender<Answer>) {
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
    let handled = gate_frames::handle(service, &frame, Peer::Broker, TRANSPORT);
    if let Some(gate) = handled.accepted {
        service.gate_commands().heard_over_mqtt(gate, answers);
    }
    for answer in handled.into_answers() {
        let _ = answers.send(answer);
    }
}

/// One gate's response topic: each frame is one publish.
struct Publisher<'a> {
    client: &'a AsyncClient,
    topic: String,
    gate: u32,
    /// A publish could not be queued.
    failed: bool,
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
            self.failed = true;
        }
    }

    async fn sent(&mut self) -> bool {
        !self.failed
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
            failed: false,
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
    fn lora_forwarder_account_follows_lora_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let site = SiteKey::from_bytes([7u8; 32]);
        let mut config = Config::default();
        assert!(lora_forwarder_account(&config, dir.path(), &site)
            .unwrap()
            .is_none());
        config.lora.mode = gatehouse_config::LoraMode::Sim;
        let a = lora_forwarder_account(&config, dir.path(), &site)
            .unwrap()
            .unwrap();
        assert_eq!(a.username, "lora-forwarder");
        assert_eq!(a.password, lora_forwarder_password(&site));
        assert_ne!(
            a.password,
            lora_forwarder_password(&SiteKey::from_bytes([8u8; 32]))
        );
        let path = dir.path().join("mqtt-lora.password");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), a.password);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn nvr_password_depends_on_site_source_and_key() {
        let site = SiteKey::from_bytes([7u8; 32]);
        let a = nvr_mqtt_password(&site, 3, &[1u8; 32]);
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a, nvr_mqtt_password(&site, 3, &[1u8; 32]));
        assert_ne!(a, nvr_mqtt_password(&site, 4, &[1u8; 32]), "another source");
        assert_ne!(a, nvr_mqtt_password(&site, 3, &[2u8; 32]), "a rotated key");
        let other_site = SiteKey::from_bytes([8u8; 32]);
        assert_ne!(a, nvr_mqtt_password(&other_site, 3, &[1u8; 32]));
        assert_eq!(nvr_mqtt_username("yard"), "nvr-yard");
    }

    #[test]
    fn credentials_follow_the_store_and_key_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let site = SiteKey::load_or_create(dir.path()).unwrap();
        let (s, key) = store
            .add_event_source(
                "yard",
                gatehouse_alerts::model::SourceKind::Nvr,
                Some("frigate"),
                None,
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        let (user, pw) = nvr_mqtt_credentials(&store, &site, s.id).unwrap();
        assert_eq!(user, "nvr-yard");
        let hash = gatehouse_store::events::api_key_hash(key.expose());
        assert_eq!(pw, nvr_mqtt_password(&site, s.id, &hash));
        store.rotate_event_source_key(s.id).unwrap();
        let (_, rotated) = nvr_mqtt_credentials(&store, &site, s.id).unwrap();
        assert_ne!(pw, rotated);
        assert!(nvr_mqtt_credentials(&store, &site, s.id + 1).is_err());
    }

    #[test]
    fn sources_with_bad_or_overlapping_prefixes_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let reader = SourceReader::open(dir.path(), Topics::default()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let nvr = gatehouse_alerts::model::SourceKind::Nvr;
        let s = &reader.store;
        s.add_event_source("a", nvr, Some("frigate"), Some("http://a.lan:5000"), now)
            .unwrap();
        s.add_event_source("b", nvr, Some("frigate/b"), None, now)
            .unwrap();
        s.add_event_source("c", nvr, Some("access"), None, now)
            .unwrap();
        s.add_event_source("d", nvr, Some("site/d"), None, now)
            .unwrap();
        let (off, _) = s
            .add_event_source("e", nvr, Some("site/e"), None, now)
            .unwrap();
        s.set_event_source_enabled(off.id, false).unwrap();
        s.add_event_source(
            "f",
            gatehouse_alerts::model::SourceKind::Sensor,
            Some("site/f"),
            None,
            now,
        )
        .unwrap();
        let set = reader.read().unwrap();
        let names: Vec<&str> = set.nvrs.iter().map(|n| n.source.name.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(
            set.nvrs[0].source.base_url.as_deref(),
            Some("http://a.lan:5000")
        );
        assert_eq!(set.left_out.len(), 2, "{:?}", set.left_out);
        assert!(set.left_out[0].contains("\"b\""), "{:?}", set.left_out);
        assert!(set.left_out[1].contains("gate link"), "{:?}", set.left_out);
        let filters = subscriptions(&Topics::default(), &set);
        let subs: Vec<(&str, QoS)> = filters.iter().map(|f| (f.path.as_str(), f.qos)).collect();
        assert_eq!(
            subs,
            [
                ("access/request", QoS::AtMostOnce),
                ("frigate/events", QoS::AtLeastOnce),
                ("frigate/reviews", QoS::AtLeastOnce),
                ("site/d/events", QoS::AtLeastOnce),
                ("site/d/reviews", QoS::AtLeastOnce),
            ]
        );
        let r = routes(&set);
        assert_eq!(r.len(), 4);
        assert_eq!(r["site/d/reviews"].1, FrigateTopic::Reviews);
        assert!(!format!("{set:?}").contains(&set.nvrs[0].password));
    }

    #[test]
    fn embedded_broker_keeps_sessions_in_the_data_dir() {
        let conf =
            embedded_broker_config("127.0.0.1:0".parse().unwrap(), Path::new("/d/mosquitto"))
                .render(&BrokerFiles::new("/d/mosquitto"))
                .unwrap();
        for line in [
            "persistence true",
            "persistence_location /d/mosquitto/db/",
            "max_queued_messages 100000",
            "message_size_limit 1048576",
            "upgrade_outgoing_qos true",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line}:\n{conf}");
        }
        let lan = embedded_broker_config("192.168.1.2:1883".parse().unwrap(), Path::new("/d/m"));
        assert_eq!(lan.lan_listener, Some("192.168.1.2:1883".parse().unwrap()));
        assert_eq!(lan.port, 0);
    }

    #[tokio::test]
    async fn messages_about_one_object_settle_in_order() {
        let mut in_order = InOrder::default();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        // Three messages about object "x" (the first slowest), one about "y".
        for (i, key, delay) in [(0, "x", 30), (1, "x", 10), (2, "y", 0), (3, "x", 0)] {
            let (previous, done) = in_order.enter((1, key.to_owned()));
            let log = Arc::clone(&log);
            tasks.spawn(async move {
                if let Some(p) = previous {
                    let _ = p.await;
                }
                tokio::time::sleep(Duration::from_millis(delay)).await;
                log.lock().unwrap().push(i);
                drop(done);
            });
        }
        while tasks.join_next().await.is_some() {}
        let log = log.lock().unwrap().clone();
        let xs: Vec<i32> = log.iter().copied().filter(|i| *i != 2).collect();
        assert_eq!(xs, [0, 1, 3]);
        assert_eq!(log.len(), 4);
        assert_eq!(in_order.len(), 2);
    }

    #[test]
    fn settled_objects_are_pruned() {
        let mut in_order = InOrder::default();
        for i in 0..10_000 {
            let (_, done) = in_order.enter((1, format!("event:{i}")));
            drop(done);
        }
        assert!(
            in_order.len() <= 2 * InOrder::MIN_PRUNE,
            "{}",
            in_order.len()
        );
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
