//! What a gate is provisioned with: its id, its keys, and where and how it reaches the hub
//! on each transport. The one place that knows it: `gatehouse gate add` prints a
//! [`GateProvisioning`], the admin API's gate-create answer serializes it.
//!
//! A gate needs:
//! - its id and its own secret (the gate link's key: seals every frame, is the HTTP bearer
//!   key, and derives its MQTT password, [`gate_password`]);
//! - the site's card key and its own allow-list key, to compute allow-list entries from
//!   the cards it reads (see `gatehouse_store::site_key` for the scheme and for what a
//!   stolen gate gives away);
//! - the addresses of the transports that are on: the HTTP access check and frames
//!   endpoint, the raw-TCP address, the MQTT broker, user, password and topics.
//!
//! Promises: keys serialize as lowercase hex; `Debug` never shows a secret, a key or the
//! MQTT password. An unspecified listen address (0.0.0.0, ::) is shown as a placeholder
//! for the box's LAN address, which only the installer knows.

use crate::http::FRAMES_PATH;
use crate::mqtt::gate_password;
use gatehouse_config::{Config, MqttMode};
use gatehouse_store::{GateCredentials, NewGateCredentials, SiteKey};
use serde::{Serialize, Serializer};
use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The HTTP access check's path (the original design's).
pub const CHECK_PATH: &str = "/api/v1/access/check";

/// Stands for the box's LAN address where the hub listens on every address.
pub const THIS_BOX: &str = "<this box's address>";

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `host:port` as a gate should dial it; an unspecified address becomes [`THIS_BOX`].
pub fn host_port(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        THIS_BOX.to_owned()
    } else {
        match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    format!("{host}:{}", addr.port())
}

/// A 32-byte key: hex in JSON and `Display`, redacted in `Debug`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key32(pub [u8; 32]);

impl Key32 {
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Key32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The addresses a running hub actually listens on, where the configuration does not say
/// (port 0); `None` fields fall back to the configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listening {
    pub http: Option<SocketAddr>,
    pub gate_tcp: Option<SocketAddr>,
    /// The embedded broker's listener.
    pub mqtt: Option<SocketAddr>,
}

impl Listening {
    /// The addresses `hub` is bound to.
    pub fn of(hub: &crate::Hub) -> Listening {
        Listening {
            http: Some(hub.http_addr()),
            gate_tcp: hub.gate_tcp_addr(),
            mqtt: hub.mqtt_addr(),
        }
    }
}

/// Everything one gate is set up with (see the module docs).
#[derive(Clone, Serialize)]
pub struct GateProvisioning {
    pub gate_id: i64,
    pub name: String,
    /// The gate link's key.
    pub secret: Key32,
    /// `SiteKey::card_key()`, the same for every gate.
    pub card_key: Key32,
    /// `SiteKey::gate_key(gate_id)`, this gate's own.
    pub allow_list_key: Key32,
    pub mqtt_username: String,
    /// Derived from the secret ([`gate_password`]); `None` when MQTT is off.
    pub mqtt_password: Option<String>,
    /// `POST` the access check here (JSON, bearer key).
    pub http_url: String,
    /// `POST` any sealed frame here (binary, no bearer key).
    pub frames_url: String,
    /// The raw-TCP transport's `host:port`; `None` when it is off.
    pub tcp_addr: Option<String>,
    /// The MQTT broker's `host:port` (or, for an embedded broker on port 0 that is not
    /// running here, a note saying where to find it); `None` when MQTT is off.
    pub mqtt_broker: Option<String>,
    /// The topic the gate publishes to; `None` when MQTT is off.
    pub request_topic: Option<String>,
    /// The topic the gate's answers come on; `None` when MQTT is off.
    pub response_topic: Option<String>,
}

impl fmt::Debug for GateProvisioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateProvisioning")
            .field("gate_id", &self.gate_id)
            .field("name", &self.name)
            .field("secret", &self.secret)
            .field("card_key", &self.card_key)
            .field("allow_list_key", &self.allow_list_key)
            .field("mqtt_username", &self.mqtt_username)
            .field(
                "mqtt_password",
                &self.mqtt_password.as_ref().map(|_| "<redacted>"),
            )
            .field("http_url", &self.http_url)
            .field("frames_url", &self.frames_url)
            .field("tcp_addr", &self.tcp_addr)
            .field("mqtt_broker", &self.mqtt_broker)
            .field("request_topic", &self.request_topic)
            .field("response_topic", &self.response_topic)
            .finish()
    }
}

impl GateProvisioning {
    /// For a gate just added: `name` as given to `Store::add_gate`, `creds` what it
    /// returned.
    pub fn for_new_gate(
        config: &Config,
        site_key: &SiteKey,
        name: &str,
        creds: &NewGateCredentials,
        listening: &Listening,
    ) -> GateProvisioning {
        GateProvisioning::new(
            config,
            site_key,
            creds.id,
            name,
            creds.secret.expose(),
            &creds.mqtt_username,
            listening,
        )
    }

    /// For a stored gate (after a secret rotation, or to provision a replacement).
    pub fn for_gate(
        config: &Config,
        site_key: &SiteKey,
        creds: &GateCredentials,
        listening: &Listening,
    ) -> GateProvisioning {
        GateProvisioning::new(
            config,
            site_key,
            creds.id,
            &creds.name,
            creds.secret.expose(),
            &creds.mqtt_username,
            listening,
        )
    }

    fn new(
        config: &Config,
        site_key: &SiteKey,
        gate_id: i64,
        name: &str,
        secret: &[u8; 32],
        mqtt_username: &str,
        listening: &Listening,
    ) -> GateProvisioning {
        let http = host_port(listening.http.unwrap_or(config.hub.http_listen));
        let mqtt = &config.hub.mqtt;
        let broker = match mqtt.mode {
            MqttMode::Off => None,
            MqttMode::Embedded => {
                let actual = listening.mqtt.filter(|_| mqtt.listen.ip().is_loopback());
                Some(match actual {
                    Some(addr) => host_port(addr),
                    None if mqtt.listen.port() == 0 => {
                        "the port the hub logs at start (hub.mqtt.listen has port 0)".to_owned()
                    }
                    None => host_port(mqtt.listen),
                })
            }
            MqttMode::External => Some(mqtt.broker.clone()),
        };
        let on = broker.is_some();
        GateProvisioning {
            gate_id,
            name: name.to_owned(),
            secret: Key32(*secret),
            card_key: Key32(site_key.card_key()),
            allow_list_key: Key32(site_key.gate_key(gate_id)),
            mqtt_username: mqtt_username.to_owned(),
            mqtt_password: on.then(|| gate_password(secret)),
            http_url: format!("http://{http}{CHECK_PATH}"),
            frames_url: format!("http://{http}{FRAMES_PATH}"),
            tcp_addr: listening
                .gate_tcp
                .or(config.hub.gate_tcp_listen)
                .map(host_port),
            mqtt_broker: broker,
            request_topic: on.then(|| mqtt.request_topic.clone()),
            response_topic: on.then(|| format!("{}/{gate_id}", mqtt.response_prefix)),
        }
    }

    /// The gate's record for a `gate-sim` gates file (TOML, `[[gate]]`), with every key.
    pub fn gates_file_record(&self) -> String {
        let mut s = format!(
            "[[gate]]\nid = {}\nname = \"{}\"\nsecret = \"{}\"\ncard_key = \"{}\"\n\
             allow_list_key = \"{}\"\nmqtt_username = \"{}\"\n",
            self.gate_id,
            self.name,
            self.secret,
            self.card_key,
            self.allow_list_key,
            self.mqtt_username
        );
        if let Some(pw) = &self.mqtt_password {
            let _ = writeln!(s, "mqtt_password = \"{pw}\"");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_store::GateSecret;

    fn creds() -> GateCredentials {
        GateCredentials {
            id: 7,
            name: "front".into(),
            enabled: true,
            secret: secret(),
            allowed_ips: None,
            mqtt_username: "gate-front".into(),
        }
    }

    fn secret() -> GateSecret {
        // GateSecret's field is the store's; go through a stored gate.
        let dir = tempfile::tempdir().unwrap();
        let store = gatehouse_store::Store::open(dir.path()).unwrap();
        let zone = store.add_zone("z", false).unwrap();
        store
            .add_gate(&gatehouse_store::NewGate {
                name: "x".into(),
                zone,
                direction: gatehouse_access::model::Direction::In,
                relay_ms: 1,
                allowed_ips: None,
                mqtt_username: None,
            })
            .unwrap()
            .secret
    }

    #[test]
    fn host_port_names_the_listen_address() {
        assert_eq!(
            host_port("127.0.0.1:8080".parse().unwrap()),
            "127.0.0.1:8080"
        );
        assert_eq!(host_port("[::1]:80".parse().unwrap()), "[::1]:80");
        assert_eq!(
            host_port("0.0.0.0:8080".parse().unwrap()),
            "<this box's address>:8080"
        );
    }

    #[test]
    fn keys_are_the_site_keys_hex_in_json_and_hidden_in_debug() {
        let mut config = Config::default();
        config.hub.http_listen = "0.0.0.0:8080".parse().unwrap();
        config.hub.gate_tcp_listen = Some("0.0.0.0:17300".parse().unwrap());
        config.hub.mqtt.mode = MqttMode::Embedded;
        config.hub.mqtt.listen = "127.0.0.1:0".parse().unwrap();
        let site = SiteKey::from_bytes([0x5a; 32]);
        let c = creds();
        let listening = Listening {
            http: None,
            gate_tcp: None,
            mqtt: Some("127.0.0.1:41883".parse().unwrap()),
        };
        let p = GateProvisioning::for_gate(&config, &site, &c, &listening);
        assert_eq!(p.card_key.0, site.card_key());
        assert_eq!(p.allow_list_key.0, site.gate_key(7));
        assert_eq!(
            p.allow_list_key.to_string(),
            "e88991bd0db543ff7fcac2a98eb2052ca7ae665a3e0d6384affd2e76efa4bdf1",
            "the fixture shared with gate-core"
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["gate_id"], 7);
        assert_eq!(json["secret"], hex(c.secret.expose()));
        assert_eq!(json["card_key"], hex(&site.card_key()));
        assert_eq!(json["allow_list_key"], hex(&site.gate_key(7)));
        assert_eq!(
            json["http_url"],
            "http://<this box's address>:8080/api/v1/access/check"
        );
        assert_eq!(
            json["frames_url"],
            "http://<this box's address>:8080/api/v1/gate/frames"
        );
        assert_eq!(json["tcp_addr"], "<this box's address>:17300");
        assert_eq!(json["mqtt_broker"], "127.0.0.1:41883");
        assert_eq!(json["mqtt_password"], gate_password(c.secret.expose()));
        assert_eq!(json["request_topic"], "access/request");
        assert_eq!(json["response_topic"], "access/response/7");

        let debug = format!("{p:?}");
        for secret in [
            hex(c.secret.expose()),
            hex(&site.card_key()),
            hex(&site.gate_key(7)),
            gate_password(c.secret.expose()),
        ] {
            assert!(!debug.contains(&secret), "{debug}");
        }
        let record = p.gates_file_record();
        assert!(
            record.starts_with("[[gate]]\nid = 7\nname = \"front\"\n"),
            "{record}"
        );
        assert!(
            record.contains(&format!("card_key = \"{}\"\n", p.card_key)),
            "{record}"
        );

        config.hub.mqtt.mode = MqttMode::Off;
        config.hub.gate_tcp_listen = None;
        let off = GateProvisioning::for_gate(&config, &site, &c, &Listening::default());
        assert_eq!(
            (&off.mqtt_broker, &off.mqtt_password, &off.tcp_addr),
            (&None, &None, &None)
        );
        assert!(!off.gates_file_record().contains("mqtt_password"));
    }
}
