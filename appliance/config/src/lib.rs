//! Gatehouse's configuration: one TOML file for every service, loaded and validated here
//! and nowhere else.
//!
//! Promises:
//! - every key has a default, and `config/gatehouse.toml` documents each one with it (a
//!   test holds the file and [`Config::default`] equal);
//! - an unknown key, a value of the wrong type or a value out of range is an error that
//!   names the file, the key (`tunnel.listen_port`) and what was expected;
//! - after [`Config::load`] returns, the values are consistent with each other (tunnel
//!   ports unique, the gateway's address inside its subnet, ...), so services do not
//!   re-check them.

mod cidr;

pub use cidr::{Cidr, CidrError};

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything the configuration loader can reject.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read configuration file {file}: {source}; check the path given with --config")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: key `{key}`: {message}")]
    Syntax {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("{file}: key `{key}`: expected {expected}, found {found}")]
    Invalid {
        file: PathBuf,
        key: String,
        expected: String,
        found: String,
    },
}

/// The whole configuration of a box.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub general: General,
    pub tunnel: Tunnel,
    pub hub: Hub,
    pub lora: Lora,
}

/// Settings shared by every service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct General {
    /// Where state lives (peer store, keys, database). Relative paths are taken from the
    /// working directory of the process.
    pub data_dir: PathBuf,
    /// `plain` (journald adds the time) or `json`.
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

/// How the tunnel moves decrypted packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelMode {
    /// UDP <-> a kernel TUN device (needs CAP_NET_ADMIN); the kernel routes to the LAN.
    Tun,
    /// UDP <-> an in-process TCP/IP stack (smoltcp); no privileges needed.
    Userspace,
}

/// Which packet filter guards the TUN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firewall {
    /// nftables rules generated from the peers' roles, applied atomically with `nft -f`.
    Nftables,
    /// No kernel rules; the tunnel's own role filter still drops what a role does not allow.
    None,
}

/// The WireGuard endpoint (`gatehouse tunnel`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tunnel {
    /// Interface name: the TUN device in `tun` mode and the UAPI socket's name in both.
    pub interface: String,
    pub mode: TunnelMode,
    /// UDP port WireGuard listens on (all addresses).
    pub listen_port: u16,
    /// The gateway's address inside the tunnel; peers get the next free addresses of
    /// this subnet.
    pub address: Cidr,
    /// Optional IPv6 tunnel address; peers then also get one address from it.
    pub address6: Option<Cidr>,
    /// Host:port that client configs give as the gateway's endpoint.
    pub public_endpoint: String,
    /// Tunnel MTU (client configs and the TUN device).
    pub mtu: u16,
    /// Persistent keepalive written into client configs, in seconds (0: none).
    pub client_keepalive: u16,
    /// The peer store, in WireGuard's config format; empty: `<data_dir>/<interface>.conf`.
    /// The hub and the CLI edit it too (mode 0660); it holds no private key.
    pub peers_file: PathBuf,
    /// The gateway's WireGuard private key (base64 and a newline, as `wg genkey` writes;
    /// 0600), read and written by the tunnel only; empty: `<data_dir>/<interface>.key`.
    pub private_key_file: PathBuf,
    /// Directory of the UAPI socket `<interface>.sock`.
    pub uapi_dir: PathBuf,
    pub firewall: Firewall,
    /// Subnets beyond the tunnel that admin client configs route through the gateway.
    pub client_routes: Vec<Cidr>,
    /// The gateway's own services, reachable by peers at the tunnel address.
    #[serde(rename = "service")]
    pub services: Vec<Service>,
    /// LAN services forwarded from a tunnel port (for example an NVR's web and RTSP ports).
    #[serde(rename = "forward")]
    pub forwards: Vec<Service>,
}

/// A TCP port on the gateway's tunnel address and where connections to it go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// Port on the gateway's tunnel address.
    pub port: u16,
    /// Where connections are relayed (userspace mode) or destination-NATed (TUN mode).
    pub target: SocketAddr,
    /// Roles allowed to reach it; default: every role for services, `admin` for forwards.
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// What a remote peer may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The gateway's console and the LAN services named in config.
    Admin,
    /// The gateway's console only.
    Installer,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Admin, Role::Installer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Installer => "installer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "installer" => Ok(Role::Installer),
            other => Err(format!(
                "unknown role `{other}`: expected admin or installer"
            )),
        }
    }
}

/// The file in `general.data_dir` where the hub leaves the API key of its reserved event
/// source `tunnel` (0640) and the tunnel (same group) reads it to post its events to the
/// hub's webhook.
pub const TUNNEL_EVENTS_KEY_FILE: &str = "tunnel-events.key";

/// The auth / event broker (`gatehouse hub`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hub {
    /// Where the plain-HTTP listener is (the gates' HTTP transport, the events webhook,
    /// health and metrics; also the console and JSON API when it is a loopback address or
    /// `dev_plain_http` is set).
    pub http_listen: SocketAddr,
    /// Where the console and JSON API listen over HTTPS (the same routes as
    /// `http_listen`); `None` (an empty string in the file) turns HTTPS off.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub https_listen: Option<SocketAddr>,
    /// Extra DNS names and IP addresses for the console's certificate.
    pub tls_names: Vec<String>,
    /// Serve the console and JSON API on a non-loopback `http_listen` too (development
    /// only: passwords and sessions would cross the network in the clear).
    pub dev_plain_http: bool,
    /// Where gates connect with the raw-TCP transport; `None` (an empty string in the
    /// file) turns that transport off.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub gate_tcp_listen: Option<SocketAddr>,
    /// The site's offset from UTC: schedules and holidays are local wall-clock times.
    pub timezone_offset: UtcOffsetMinutes,
    /// The gates' MQTT transport (`[hub.mqtt]`).
    pub mqtt: Mqtt,
    /// Alert delivery (`[hub.alerts]`).
    pub alerts: Alerts,
}

/// How the hub delivers alerts and watches the box (`[hub.alerts]`). Rules, receivers
/// and silences live in the database; these are the delivery mechanics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Alerts {
    /// First retry delay after a failed delivery, in milliseconds; doubled per attempt
    /// (with full jitter) up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Attempts before a delivery is given up (dead-lettered, which raises a system event).
    pub max_attempts: u32,
    /// How long one webhook, ntfy or SMTP attempt may take, in milliseconds.
    pub request_timeout_ms: u64,
    /// Deliveries in flight at once per receiver (a stalled request does not hold up
    /// the others).
    pub parallel_per_receiver: u32,
    /// Raise "disk nearly full" when the data partition is fuller than this, in percent.
    pub disk_full_percent: u8,
    /// Raise "gate offline" when a gate that was seen has been silent this long, in
    /// seconds (0: never).
    pub gate_offline_s: u64,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            retry_base_ms: 2_000,
            retry_max_ms: 600_000,
            max_attempts: 12,
            request_timeout_ms: 10_000,
            parallel_per_receiver: 4,
            disk_full_percent: 90,
            gate_offline_s: 300,
        }
    }
}

impl Alerts {
    fn validate(
        &self,
        invalid: &dyn Fn(&str, &str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if self.retry_base_ms == 0 || self.retry_base_ms > self.retry_max_ms {
            return Err(invalid(
                "hub.alerts.retry_base_ms",
                "a delay from 1 ms up to hub.alerts.retry_max_ms",
                self.retry_base_ms.to_string(),
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(invalid(
                "hub.alerts.max_attempts",
                "from 1 to 100 attempts",
                self.max_attempts.to_string(),
            ));
        }
        if !(100..=300_000).contains(&self.request_timeout_ms) {
            return Err(invalid(
                "hub.alerts.request_timeout_ms",
                "from 100 ms to 300000 ms (5 minutes)",
                self.request_timeout_ms.to_string(),
            ));
        }
        if !(1..=64).contains(&self.parallel_per_receiver) {
            return Err(invalid(
                "hub.alerts.parallel_per_receiver",
                "from 1 to 64",
                self.parallel_per_receiver.to_string(),
            ));
        }
        if !(1..=100).contains(&self.disk_full_percent) {
            return Err(invalid(
                "hub.alerts.disk_full_percent",
                "a percentage from 1 to 100",
                self.disk_full_percent.to_string(),
            ));
        }
        Ok(())
    }
}

/// Where the hub's MQTT broker comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttMode {
    /// The hub runs its own mosquitto (a child process, files in `<data_dir>/mosquitto/`)
    /// and provisions it from the store's gates.
    Embedded,
    /// The hub connects to a broker run by someone else (systemd's mosquitto on the box).
    External,
    /// No MQTT transport.
    Off,
}

/// The gates' MQTT transport: gates publish sealed frames to `request_topic`, the hub
/// answers gate `n` on `<response_prefix>/<n>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mqtt {
    pub mode: MqttMode,
    /// Embedded mode: the broker's listener. A loopback address gets one loopback
    /// listener (port 0: a free port, logged at start); any other address gets a listener
    /// there (fixed port) plus a loopback one on a free port for the hub itself.
    pub listen: SocketAddr,
    /// External mode: the broker's `host:port`.
    pub broker: String,
    /// The hub's own MQTT user name.
    pub username: String,
    /// The file holding the hub's MQTT password. External mode: required. Embedded mode:
    /// empty means `<data_dir>/mqtt-hub.password`, created with a random password.
    pub password_file: PathBuf,
    /// External mode: where to write mosquitto's password and ACL files for the gates
    /// (`passwd`, `acl`); empty: do not write them.
    pub provision_dir: PathBuf,
    /// The topic gates publish access requests to.
    pub request_topic: String,
    /// Gate `n` gets its answers on `<response_prefix>/<n>`.
    pub response_prefix: String,
}

impl Default for Mqtt {
    fn default() -> Self {
        Mqtt {
            mode: MqttMode::Embedded,
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            broker: "127.0.0.1:1883".into(),
            username: "gatehouse-hub".into(),
            password_file: PathBuf::new(),
            provision_dir: PathBuf::new(),
            request_topic: "access/request".into(),
            response_prefix: "access/response".into(),
        }
    }
}

/// Which radio the LoRa packet forwarder (`gatehouse lora`) drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraMode {
    /// No forwarder (`gatehouse up` does not start one; `gatehouse lora` refuses to run).
    Off,
    /// The simulated air (UDP on loopback, `gatehouse lora air`): development and tests.
    Sim,
    /// An SX1262 on SPI with GPIO pins (the box's LoRa HAT).
    Sx1262,
}

/// The radio regulations the forwarder follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LoraRegion {
    /// EU 863-870 MHz (ETSI EN 300 220-2: duty cycle per sub-band).
    #[serde(rename = "EU868")]
    Eu868,
}

/// The LoRa packet forwarder (`[lora]`): one radio channel, raw frames to and from the
/// hub over MQTT (`lora/up`, `lora/down`, `lora/tx`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lora {
    pub mode: LoraMode,
    /// Sim mode: the air's UDP address (`gatehouse up` starts one there if none answers).
    pub air: SocketAddr,
    pub region: LoraRegion,
    /// The channel the forwarder listens on (and the nodes send on), Hz.
    pub frequency_hz: u32,
    /// Spreading factor, 7 to 12.
    pub spreading_factor: u8,
    /// Bandwidth, Hz: 125000, 250000 or 500000.
    pub bandwidth_hz: u32,
    /// Transmit power for downlinks, dBm (-9 to 22, the SX1262's range; EU868 allows
    /// 14 dBm ERP in most sub-bands).
    pub tx_power_dbm: i8,
    /// Sx1262 mode: the SPI device (opened without kernel chip select; `cs` drives it).
    pub spi: PathBuf,
    /// Sx1262 mode: SPI clock, Hz (the SX1262 allows up to 16 MHz).
    pub spi_hz: u32,
    /// Sx1262 mode: the GPIO chip of the pins below.
    pub gpio_chip: PathBuf,
    /// Sx1262 mode: GPIO line offsets on `gpio_chip`.
    pub cs: u32,
    pub reset: u32,
    pub busy: u32,
    pub dio1: u32,
    /// The forwarder's MQTT connection (`[lora.mqtt]`).
    pub mqtt: LoraMqtt,
}

/// How the forwarder reaches the MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraMqtt {
    /// The broker's host:port; empty: the hub's embedded broker at `hub.mqtt.listen`
    /// (`gatehouse up` uses the address that broker really got).
    pub broker: String,
    /// The forwarder's MQTT user name (the hub provisions it with access to `lora/#`).
    pub username: String,
    /// The file holding the forwarder's MQTT password; empty:
    /// `<data_dir>/mqtt-lora.password`, which the hub writes (embedded mode).
    pub password_file: PathBuf,
}

impl Default for LoraMqtt {
    fn default() -> Self {
        LoraMqtt {
            broker: String::new(),
            username: "lora-forwarder".into(),
            password_file: PathBuf::new(),
        }
    }
}

impl Default for Lora {
    fn default() -> Self {
        Lora {
            mode: LoraMode::Off,
            air: SocketAddr::from(([127, 0, 0, 1], 7301)),
            region: LoraRegion::Eu868,
            frequency_hz: 868_100_000,
            spreading_factor: 7,
            bandwidth_hz: 125_000,
            tx_power_dbm: 14,
            spi: PathBuf::from("/dev/spidev0.0"),
            spi_hz: 2_000_000,
            gpio_chip: PathBuf::from("/dev/gpiochip0"),
            cs: 21,
            reset: 18,
            busy: 20,
            dio1: 16,
            mqtt: LoraMqtt::default(),
        }
    }
}

/// The file in `general.data_dir` holding the forwarder's MQTT password (written by the
/// hub's embedded broker provisioning, read by `gatehouse lora`).
pub const LORA_PASSWORD_FILE: &str = "mqtt-lora.password";

impl Lora {
    /// The forwarder's MQTT password file (`lora.mqtt.password_file`, or the default in
    /// `data_dir`).
    pub fn password_file(&self, data_dir: &Path) -> PathBuf {
        if self.mqtt.password_file.as_os_str().is_empty() {
            data_dir.join(LORA_PASSWORD_FILE)
        } else {
            self.mqtt.password_file.clone()
        }
    }

    fn validate(
        &self,
        invalid: &dyn Fn(&str, &str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if !(7..=12).contains(&self.spreading_factor) {
            return Err(invalid(
                "lora.spreading_factor",
                "a spreading factor from 7 to 12",
                self.spreading_factor.to_string(),
            ));
        }
        if ![125_000, 250_000, 500_000].contains(&self.bandwidth_hz) {
            return Err(invalid(
                "lora.bandwidth_hz",
                "125000, 250000 or 500000",
                self.bandwidth_hz.to_string(),
            ));
        }
        match self.region {
            LoraRegion::Eu868 if !(863_000_000..=870_000_000).contains(&self.frequency_hz) => {
                return Err(invalid(
                    "lora.frequency_hz",
                    "a frequency in the EU868 band, 863000000 to 870000000 Hz (868100000 is the usual first channel)",
                    self.frequency_hz.to_string(),
                ));
            }
            LoraRegion::Eu868 => {}
        }
        if !(-9..=22).contains(&self.tx_power_dbm) {
            return Err(invalid(
                "lora.tx_power_dbm",
                "a transmit power from -9 to 22 dBm (the SX1262's range)",
                self.tx_power_dbm.to_string(),
            ));
        }
        if !(100_000..=16_000_000).contains(&self.spi_hz) {
            return Err(invalid(
                "lora.spi_hz",
                "an SPI clock from 100000 to 16000000 Hz (the SX1262's limit)",
                self.spi_hz.to_string(),
            ));
        }
        if self.mode == LoraMode::Sim && self.air.port() == 0 {
            return Err(invalid(
                "lora.air",
                "the simulated air's fixed address:port, like \"127.0.0.1:7301\"",
                self.air.to_string(),
            ));
        }
        if self.mode == LoraMode::Sx1262 {
            let pins = [
                ("lora.cs", self.cs),
                ("lora.reset", self.reset),
                ("lora.busy", self.busy),
                ("lora.dio1", self.dio1),
            ];
            for (i, (key, pin)) in pins.iter().enumerate() {
                if let Some((other, _)) = pins[..i].iter().find(|(_, p)| p == pin) {
                    return Err(invalid(
                        key,
                        &format!("a GPIO line not already used by {other}"),
                        pin.to_string(),
                    ));
                }
            }
        }
        let broker = &self.mqtt.broker;
        let broker_ok = broker.is_empty()
            || broker.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
        if !broker_ok {
            return Err(invalid(
                "lora.mqtt.broker",
                "host:port of the MQTT broker, like 127.0.0.1:1883 (or \"\" for the hub's embedded broker)",
                format!("{broker:?}"),
            ));
        }
        let name = &self.mqtt.username;
        if name.is_empty()
            || name.starts_with('#')
            || name.contains(':')
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "lora.mqtt.username",
                "an MQTT user name without ':', whitespace or a leading '#'",
                format!("{name:?}"),
            ));
        }
        Ok(())
    }
}

/// A fixed offset from UTC, written `+HH:MM` or `-HH:MM` (`Z` for `+00:00`), between
/// -23:59 and +23:59. Fixed, not a zone name: the box has no tz database, and a site that
/// observes daylight saving time changes it twice a year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UtcOffsetMinutes(i16);

impl UtcOffsetMinutes {
    /// From minutes east of UTC; `None` outside -23:59..=+23:59.
    pub fn from_minutes(minutes: i16) -> Option<UtcOffsetMinutes> {
        (-(24 * 60) < minutes && minutes < 24 * 60).then_some(UtcOffsetMinutes(minutes))
    }

    /// Minutes east of UTC.
    pub fn minutes(self) -> i16 {
        self.0
    }

    /// Seconds east of UTC.
    pub fn seconds(self) -> i32 {
        i32::from(self.0) * 60
    }
}

impl fmt::Display for UtcOffsetMinutes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let m = self.0.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", m / 60, m % 60)
    }
}

impl std::str::FromStr for UtcOffsetMinutes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a UTC offset like \"+01:00\" or \"-05:30\"");
        if s == "Z" {
            return Ok(UtcOffsetMinutes(0));
        }
        let b = s.as_bytes();
        let sign: i16 = match b.first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(bad()),
        };
        let digits = |r: std::ops::Range<usize>| -> Option<i16> {
            let part = s.get(r)?;
            if part.len() == 2 && part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        if b.len() != 6 || b.get(3) != Some(&b':') {
            return Err(bad());
        }
        let (Some(h), Some(m)) = (digits(1..3), digits(4..6)) else {
            return Err(bad());
        };
        if h > 23 || m > 59 {
            return Err(format!(
                "{s:?} is out of range: hours 00 to 23, minutes 00 to 59"
            ));
        }
        Ok(UtcOffsetMinutes(sign * (h * 60 + m)))
    }
}

impl<'de> Deserialize<'de> for UtcOffsetMinutes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn optional_socket_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{s:?} is not an address:port like \"0.0.0.0:7300\" (or \"\" to turn it off)"
        ))
    })
}

impl Default for General {
    fn default() -> Self {
        General {
            data_dir: PathBuf::from("/var/lib/gatehouse"),
            log_format: LogFormat::Plain,
        }
    }
}

impl Default for Tunnel {
    fn default() -> Self {
        Tunnel {
            interface: "wg0".into(),
            mode: TunnelMode::Tun,
            listen_port: 51820,
            address: Cidr::v4([10, 77, 0, 1], 24),
            address6: None,
            public_endpoint: "gatehouse.local:51820".into(),
            mtu: 1420,
            client_keepalive: 25,
            peers_file: PathBuf::new(),
            private_key_file: PathBuf::new(),
            uapi_dir: PathBuf::from("/var/run/wireguard"),
            firewall: Firewall::Nftables,
            client_routes: Vec::new(),
            services: Vec::new(),
            forwards: Vec::new(),
        }
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            https_listen: Some(SocketAddr::from(([0, 0, 0, 0], 8443))),
            tls_names: Vec::new(),
            dev_plain_http: false,
            gate_tcp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 7300))),
            timezone_offset: UtcOffsetMinutes::default(),
            mqtt: Mqtt::default(),
            alerts: Alerts::default(),
        }
    }
}

/// Whether `name` is a DNS host name (RFC 1123 labels) or an IP address.
fn is_dns_name_or_ip(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Hub {
    fn validate_listeners(
        &self,
        invalid: &dyn Fn(&str, &str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        for (i, name) in self.tls_names.iter().enumerate() {
            if !is_dns_name_or_ip(name) {
                return Err(invalid(
                    &format!("hub.tls_names[{i}]"),
                    "a DNS name (like gatehouse.example.net) or an IP address",
                    format!("{name:?}"),
                ));
            }
        }
        match self.https_listen {
            Some(https) => {
                let http = self.http_listen;
                let overlap = https.port() == http.port()
                    && (https.ip() == http.ip()
                        || https.ip().is_unspecified()
                        || http.ip().is_unspecified());
                if overlap && https.port() != 0 {
                    return Err(invalid(
                        "hub.https_listen",
                        &format!("an address:port other than hub.http_listen ({http})"),
                        https.to_string(),
                    ));
                }
            }
            None if !self.http_listen.ip().is_loopback() && !self.dev_plain_http => {
                return Err(invalid(
                    "hub.https_listen",
                    &format!(
                        "an address for the console over HTTPS, like \"0.0.0.0:8443\": \
                         hub.http_listen ({}) is not a loopback address, so plain HTTP serves \
                         only gates, the events webhook and health; or set \
                         hub.dev_plain_http = true (development only)",
                        self.http_listen
                    ),
                    "\"\" (off)".into(),
                ));
            }
            None => {}
        }
        Ok(())
    }
}

impl Mqtt {
    fn validate(
        &self,
        invalid: &dyn Fn(&str, &str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        use gatehouse_broker::{Account, BrokerError, Provisioning, Topics};
        if self.mode == MqttMode::Off {
            return Ok(());
        }
        let topic_err = |key: &str, e: BrokerError| {
            invalid(
                key,
                "an MQTT topic without wildcards, '$' or '/' at either end",
                e.to_string(),
            )
        };
        Topics::new(&self.request_topic, "x")
            .map_err(|e| topic_err("hub.mqtt.request_topic", e))?;
        let topics = Topics::new(&self.request_topic, &self.response_prefix)
            .map_err(|e| topic_err("hub.mqtt.response_prefix", e))?;
        if self
            .request_topic
            .starts_with(&format!("{}/", self.response_prefix))
        {
            return Err(invalid(
                "hub.mqtt.request_topic",
                "a topic outside hub.mqtt.response_prefix (a gate reads <response_prefix>/<gate_id>)",
                format!("{:?}", self.request_topic),
            ));
        }
        Provisioning::new(Account::new(&self.username, "-"), topics).map_err(|e| {
            invalid(
                "hub.mqtt.username",
                "an MQTT user name without ':', whitespace or a leading '#'",
                e.to_string(),
            )
        })?;
        match self.mode {
            MqttMode::Embedded => {
                if self.listen.port() == 0 && !self.listen.ip().is_loopback() {
                    return Err(invalid(
                        "hub.mqtt.listen",
                        "a fixed port for a non-loopback listener (port 0, a free port, only on 127.0.0.1)",
                        self.listen.to_string(),
                    ));
                }
            }
            MqttMode::External => {
                let ok = self.broker.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                });
                if !ok {
                    return Err(invalid(
                        "hub.mqtt.broker",
                        "host:port of the MQTT broker, like 127.0.0.1:1883",
                        format!("{:?}", self.broker),
                    ));
                }
                if self.password_file.as_os_str().is_empty() {
                    return Err(invalid(
                        "hub.mqtt.password_file",
                        "the file holding the hub's MQTT password (required in external mode)",
                        "\"\"".into(),
                    ));
                }
            }
            MqttMode::Off => {}
        }
        Ok(())
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `file` is only used in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string();
            ConfigError::Syntax {
                file: file.to_owned(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: message.trim().replace('\n', " ").replace("  ", " "),
            }
        })?;
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&mut self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, expected: &str, found: String| ConfigError::Invalid {
            file: file.to_owned(),
            key: key.to_owned(),
            expected: expected.to_owned(),
            found,
        };
        let t = &mut self.tunnel;
        let name_ok = !t.interface.is_empty()
            && t.interface.len() < 16
            && t.interface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            return Err(invalid(
                "tunnel.interface",
                "an interface name of 1 to 15 letters, digits, '-', '_' or '.'",
                format!("{:?}", t.interface),
            ));
        }
        if t.listen_port == 0 {
            return Err(invalid(
                "tunnel.listen_port",
                "a UDP port from 1 to 65535",
                "0".into(),
            ));
        }
        if !t.address.addr().is_ipv4() {
            return Err(invalid(
                "tunnel.address",
                "an IPv4 address with prefix, like 10.77.0.1/24",
                t.address.to_string(),
            ));
        }
        if t.address.prefix() > 30 || t.address.is_network_address() {
            return Err(invalid(
                "tunnel.address",
                "a host address inside a subnet of /30 or larger, like 10.77.0.1/24",
                t.address.to_string(),
            ));
        }
        if let Some(a6) = t.address6 {
            if a6.addr().is_ipv4() || a6.prefix() > 126 {
                return Err(invalid(
                    "tunnel.address6",
                    "an IPv6 address with prefix of /126 or larger, like fd77::1/64",
                    a6.to_string(),
                ));
            }
        }
        if !(1280..=9000).contains(&t.mtu) {
            return Err(invalid(
                "tunnel.mtu",
                "an MTU from 1280 to 9000",
                t.mtu.to_string(),
            ));
        }
        if t.public_endpoint
            .rsplit_once(':')
            .is_none_or(|(host, port)| {
                host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0)
            })
        {
            return Err(invalid(
                "tunnel.public_endpoint",
                "host:port that remote peers use to reach the gateway, like vpn.example.net:51820",
                format!("{:?}", t.public_endpoint),
            ));
        }
        let mut ports = std::collections::BTreeMap::new();
        for (table, list) in [
            ("tunnel.service", &mut t.services),
            ("tunnel.forward", &mut t.forwards),
        ] {
            for (i, s) in list.iter_mut().enumerate() {
                let key = format!("{table}[{i}]");
                if s.port == 0 {
                    return Err(invalid(
                        &format!("{key}.port"),
                        "a TCP port from 1 to 65535",
                        "0".into(),
                    ));
                }
                if let Some(other) = ports.insert(s.port, key.clone()) {
                    return Err(invalid(
                        &format!("{key}.port"),
                        &format!("a tunnel port not already used by {other}"),
                        s.port.to_string(),
                    ));
                }
                if s.roles.is_empty() {
                    s.roles = if table == "tunnel.service" {
                        Role::ALL.to_vec()
                    } else {
                        vec![Role::Admin]
                    };
                }
            }
        }
        if t.peers_file.as_os_str().is_empty() {
            t.peers_file = self.general.data_dir.join(format!("{}.conf", t.interface));
        }
        if t.private_key_file.as_os_str().is_empty() {
            t.private_key_file = self.general.data_dir.join(format!("{}.key", t.interface));
        }
        if t.private_key_file == t.peers_file {
            return Err(invalid(
                "tunnel.private_key_file",
                "a file other than tunnel.peers_file (the hub edits the peer store; the \
                 private key is the tunnel's alone)",
                t.private_key_file.display().to_string(),
            ));
        }
        self.hub.validate_listeners(&invalid)?;
        self.hub.mqtt.validate(&invalid)?;
        self.hub.alerts.validate(&invalid)?;
        self.lora.validate(&invalid)
    }

    /// The UAPI socket path of the tunnel interface.
    pub fn uapi_socket(&self) -> PathBuf {
        self.tunnel
            .uapi_dir
            .join(format!("{}.sock", self.tunnel.interface))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn documented_defaults_match_code() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/gatehouse.toml");
        let loaded = Config::load(&path).unwrap();
        let mut expected = Config::default();
        expected.validate(&path).unwrap();
        assert_eq!(loaded, expected);
    }

    #[test]
    fn dev_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/dev.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.tunnel.mode, TunnelMode::Userspace);
        assert_eq!(c.lora.mode, LoraMode::Sim);
    }

    #[test]
    fn lora_section() {
        let c = parse("").unwrap();
        assert_eq!(c.lora.mode, LoraMode::Off);
        assert_eq!(c.lora.region, LoraRegion::Eu868);
        assert_eq!(
            c.lora.password_file(Path::new("/d")),
            Path::new("/d/mqtt-lora.password")
        );
        let c = parse(
            "[lora]\nmode = \"sx1262\"\nregion = \"EU868\"\nfrequency_hz = 869525000\n\
             spreading_factor = 9\nbandwidth_hz = 250000\nspi = \"/dev/spidev1.0\"\n\
             gpio_chip = \"/dev/gpiochip4\"\ncs = 8\nreset = 22\nbusy = 23\ndio1 = 24\n\
             [lora.mqtt]\nbroker = \"10.0.0.2:1883\"\nusername = \"radio\"\n\
             password_file = \"/etc/pw\"\n",
        )
        .unwrap();
        assert_eq!(c.lora.mode, LoraMode::Sx1262);
        assert_eq!(
            (
                c.lora.frequency_hz,
                c.lora.spreading_factor,
                c.lora.bandwidth_hz
            ),
            (869_525_000, 9, 250_000)
        );
        assert_eq!(
            (c.lora.cs, c.lora.reset, c.lora.busy, c.lora.dio1),
            (8, 22, 23, 24)
        );
        assert_eq!(c.lora.spi, Path::new("/dev/spidev1.0"));
        assert_eq!(c.lora.mqtt.broker, "10.0.0.2:1883");
        assert_eq!(c.lora.password_file(Path::new("/d")), Path::new("/etc/pw"));
        let c = parse("[lora]\nmode = \"sim\"\nair = \"127.0.0.1:9999\"\n").unwrap();
        assert_eq!(c.lora.air.port(), 9999);
        for (text, key) in [
            ("[lora]\nspreading_factor = 6\n", "lora.spreading_factor"),
            ("[lora]\nbandwidth_hz = 100000\n", "lora.bandwidth_hz"),
            ("[lora]\nfrequency_hz = 915000000\n", "lora.frequency_hz"),
            ("[lora]\ntx_power_dbm = 30\n", "lora.tx_power_dbm"),
            (
                "[lora]\nmode = \"sim\"\nair = \"127.0.0.1:0\"\n",
                "lora.air",
            ),
            ("[lora]\nmode = \"sx1262\"\nbusy = 21\n", "lora.busy"),
            ("[lora.mqtt]\nbroker = \"nohost\"\n", "lora.mqtt.broker"),
            ("[lora.mqtt]\nusername = \"a b\"\n", "lora.mqtt.username"),
            ("[lora]\nmode = \"radio\"\n", "lora.mode"),
            ("[lora]\nregion = \"US915\"\n", "lora.region"),
            ("[lora]\nspi_hz = 1\n", "lora.spi_hz"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(&format!("key `{key}`")), "{text:?}: {e}");
        }
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = parse("[tunnel]\nlisten_prot = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("test.toml: key `tunnel"), "{e}");
        assert!(e.contains("listen_prot"), "{e}");
        assert!(e.contains("listen_port"), "expected keys listed: {e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = parse("[tunnel]\nlisten_port = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tunnel.listen_port`"), "{e}");
        assert!(e.contains("u16"), "{e}");
    }

    #[test]
    fn bad_cidr_names_key_and_expectation() {
        let e = parse("[tunnel]\naddress = \"10.0.0.1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tunnel.address`"), "{e}");
        assert!(e.contains("prefix"), "{e}");
    }

    #[test]
    fn out_of_range_values_rejected() {
        let e = parse("[tunnel]\nmtu = 100\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "test.toml: key `tunnel.mtu`: expected an MTU from 1280 to 9000, found 100"
        );
        let e = parse("[tunnel]\naddress = \"10.0.0.0/24\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("host address"), "{e}");
        let e = parse("[tunnel]\npublic_endpoint = \"nohost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tunnel.public_endpoint"), "{e}");
    }

    #[test]
    fn duplicate_tunnel_port_rejected() {
        let e = parse(
            "[[tunnel.service]]\nname='a'\nport=80\ntarget='127.0.0.1:1'\n\
             [[tunnel.forward]]\nname='b'\nport=80\ntarget='127.0.0.1:2'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tunnel.forward[0].port"), "{e}");
        assert!(e.contains("tunnel.service[0]"), "{e}");
    }

    #[test]
    fn role_defaults_filled() {
        let c = parse(
            "[[tunnel.service]]\nname='a'\nport=80\ntarget='127.0.0.1:1'\n\
             [[tunnel.forward]]\nname='b'\nport=81\ntarget='127.0.0.1:2'\n",
        )
        .unwrap();
        assert_eq!(c.tunnel.services[0].roles, Role::ALL.to_vec());
        assert_eq!(c.tunnel.forwards[0].roles, vec![Role::Admin]);
        assert_eq!(
            c.tunnel.peers_file,
            PathBuf::from("/var/lib/gatehouse/wg0.conf")
        );
        assert_eq!(
            c.tunnel.private_key_file,
            PathBuf::from("/var/lib/gatehouse/wg0.key")
        );
        let e = parse("[tunnel]\npeers_file = '/k/a'\nprivate_key_file = '/k/a'\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tunnel.private_key_file") && e.contains("other than tunnel.peers_file"),
            "{e}"
        );
        let c = parse("[tunnel]\ninterface = 'gh1'\nprivate_key_file = '/k/gw.key'\n").unwrap();
        assert_eq!(c.tunnel.private_key_file, PathBuf::from("/k/gw.key"));
        assert_eq!(
            c.tunnel.peers_file,
            PathBuf::from("/var/lib/gatehouse/gh1.conf")
        );
    }

    #[test]
    fn hub_gate_tcp_listen_and_timezone() {
        let c = parse("[hub]\ngate_tcp_listen = \"\"\ntimezone_offset = \"-05:30\"\n").unwrap();
        assert_eq!(c.hub.gate_tcp_listen, None);
        assert_eq!(c.hub.timezone_offset.minutes(), -330);
        assert_eq!(c.hub.timezone_offset.seconds(), -19800);
        assert_eq!(c.hub.timezone_offset.to_string(), "-05:30");
        let c = parse("[hub]\ngate_tcp_listen = \"127.0.0.1:7301\"\ntimezone_offset = \"Z\"\n")
            .unwrap();
        assert_eq!(
            c.hub.gate_tcp_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 7301)))
        );
        assert_eq!(c.hub.timezone_offset.minutes(), 0);
        assert_eq!(Config::default().hub.timezone_offset.to_string(), "+00:00");
        for bad in [
            "+1:00",
            "01:00",
            "+24:00",
            "+01:60",
            "+01:00:00",
            "+0a:00",
            "",
        ] {
            let e = parse(&format!("[hub]\ntimezone_offset = {bad:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("`hub.timezone_offset`"), "{bad}: {e}");
        }
        let e = parse("[hub]\ngate_tcp_listen = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`hub.gate_tcp_listen`") && e.contains("7300"),
            "{e}"
        );
    }

    #[test]
    fn hub_https_keys() {
        let c = Config::default();
        assert_eq!(
            c.hub.https_listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 8443)))
        );
        assert!(c.hub.tls_names.is_empty() && !c.hub.dev_plain_http);
        let c = parse(
            "[hub]\nhttps_listen = \"\"\ntls_names = [\"gh.example.net\", \"192.0.2.5\", \"fd00::5\"]\n",
        )
        .unwrap();
        assert_eq!(c.hub.https_listen, None);
        assert_eq!(c.hub.tls_names.len(), 3);
        // Plain HTTP on the LAN needs HTTPS for the console, or the development switch.
        let e = parse("[hub]\nhttp_listen = \"0.0.0.0:8080\"\nhttps_listen = \"\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`hub.https_listen`") && e.contains("hub.dev_plain_http = true"),
            "{e}"
        );
        parse(
            "[hub]\nhttp_listen = \"0.0.0.0:8080\"\nhttps_listen = \"\"\ndev_plain_http = true\n",
        )
        .unwrap();
        parse("[hub]\nhttp_listen = \"0.0.0.0:8080\"\n").unwrap();
        for (text, key) in [
            ("https_listen = \"127.0.0.1:8080\"", "hub.https_listen"),
            (
                "http_listen = \"0.0.0.0:9000\"\nhttps_listen = \"127.0.0.1:9000\"",
                "hub.https_listen",
            ),
            ("https_listen = \"nope\"", "hub.https_listen"),
            ("tls_names = [\"bad name\"]", "hub.tls_names[0]"),
            (
                "tls_names = [\"ok.example\", \"-x.example\"]",
                "hub.tls_names[1]",
            ),
            ("tls_names = [\"\"]", "hub.tls_names[0]"),
        ] {
            let e = parse(&format!("[hub]\n{text}\n")).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn hub_mqtt_keys() {
        let c = Config::default();
        assert_eq!(c.hub.mqtt.mode, MqttMode::Embedded);
        let c = parse(
            "[hub.mqtt]\nmode = \"external\"\nbroker = \"localhost:1883\"\n\
             password_file = \"/etc/gatehouse/mqtt-hub.password\"\n\
             provision_dir = \"/etc/mosquitto/gatehouse\"\n\
             request_topic = \"site/req\"\nresponse_prefix = \"site/resp\"\n",
        )
        .unwrap();
        assert_eq!(c.hub.mqtt.mode, MqttMode::External);
        assert_eq!(c.hub.mqtt.response_prefix, "site/resp");
        let c = parse("[hub.mqtt]\nmode = \"off\"\nrequest_topic = \"#\"\n").unwrap();
        assert_eq!(c.hub.mqtt.mode, MqttMode::Off);
        for (text, key) in [
            ("request_topic = \"access/#\"", "hub.mqtt.request_topic"),
            ("response_prefix = \"\"", "hub.mqtt.response_prefix"),
            ("response_prefix = \"/x\"", "hub.mqtt.response_prefix"),
            (
                "request_topic = \"access/response/1\"",
                "hub.mqtt.request_topic",
            ),
            ("username = \"a:b\"", "hub.mqtt.username"),
            ("listen = \"0.0.0.0:0\"", "hub.mqtt.listen"),
            ("listen = \"nope\"", "hub.mqtt.listen"),
            ("mode = \"external\"\nbroker = \"x\"", "hub.mqtt.broker"),
            ("mode = \"external\"", "hub.mqtt.password_file"),
            ("mode = \"cloud\"", "hub.mqtt.mode"),
        ] {
            let e = parse(&format!("[hub.mqtt]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn alerts_section_has_defaults_and_names_bad_keys() {
        let c = parse("[hub.alerts]\nmax_attempts = 3\n").unwrap();
        assert_eq!(c.hub.alerts.max_attempts, 3);
        assert_eq!(c.hub.alerts.retry_base_ms, Alerts::default().retry_base_ms);
        for (text, key) in [
            ("retry_base_ms = 0", "hub.alerts.retry_base_ms"),
            (
                "retry_base_ms = 5000\nretry_max_ms = 10",
                "hub.alerts.retry_base_ms",
            ),
            ("max_attempts = 0", "hub.alerts.max_attempts"),
            ("request_timeout_ms = 5", "hub.alerts.request_timeout_ms"),
            (
                "parallel_per_receiver = 0",
                "hub.alerts.parallel_per_receiver",
            ),
            ("disk_full_percent = 101", "hub.alerts.disk_full_percent"),
            ("retries = 3", "hub.alerts"),
        ] {
            let e = parse(&format!("[hub.alerts]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("`{key}")), "{text}: {e}");
        }
    }

    #[test]
    fn bad_enum_value_lists_choices() {
        let e = parse("[tunnel]\nmode = \"kernel\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tunnel.mode`"), "{e}");
        assert!(e.contains("tun") && e.contains("userspace"), "{e}");
    }
}
