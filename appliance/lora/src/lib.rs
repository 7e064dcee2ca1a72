//! The LoRa packet forwarder (`gatehouse lora`): the radio side of the LoRa link. It
//! holds no keys and makes no decisions (the hub verifies, decrypts, de-duplicates and
//! decides acknowledgements, see ARCHITECTURE.md); it:
//!
//! - publishes every frame its radio receives on `lora/up` (QoS 1) with RSSI, SNR, the
//!   channel, the end of reception on its monotonic clock (`rx_us`) and the wall time;
//! - takes downlinks from `lora/down` (QoS 1) and transmits each at its `tx_us`, if the
//!   EU868 duty-cycle budget of its sub-band allows (ETSI EN 300 220-2; alarms may use the
//!   whole budget, normal traffic 80 %) and it overlaps no other transmission (an alarm
//!   displaces normal ones), answering on `lora/tx` (QoS 0): `sent`, `too_late`,
//!   `duty_cycle`, `busy` or `invalid` ([`schedule`]);
//! - logs every transmission to `<data_dir>/lora-tx.log` ([`tx_log`]).
//!
//! Radios ([`Radio`]): [`SimRadio`] on the simulated air (`gatehouse_lora_proto::air`,
//! shared with the node simulator) and [`Sx1262Radio`] (an SX1262 over spidev and GPIO,
//! [`sx1262`]). The JSON shapes are in [`messages`]; the MQTT account is provisioned by
//! the hub's embedded broker (`lora-forwarder`, read/write `lora/#`, password in
//! `<data_dir>/mqtt-lora.password`).

pub mod forwarder;
pub mod messages;
pub mod radio;
pub mod schedule;
pub mod sim;
pub mod sx1262;
pub mod tx_log;

pub use forwarder::{Counters, Forwarder, ForwarderOptions};
pub use radio::{Radio, RadioError, RxPacket, TxRequest, TxResult};
pub use sim::SimRadio;
pub use sx1262::Sx1262Radio;

use gatehouse_config::{Config, LoraMode};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::watch;

/// Why the forwarder could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    #[error(
        "lora.mode is \"off\"; set it to \"sim\" or \"sx1262\" in [lora] to run the forwarder"
    )]
    Off,
    #[error("{0}")]
    Config(String),
    #[error("cannot read the forwarder's MQTT password from {path}: {source}; the hub writes it when it provisions its embedded broker (start the hub first), or set lora.mqtt.password_file")]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the MQTT broker at {broker} did not take the forwarder (user {user}): {detail}")]
    Broker {
        broker: String,
        user: String,
        detail: String,
    },
    #[error("cannot open the LoRa transmit log {path}: {source}")]
    TxLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("LoRa radio: {0}")]
    Radio(#[from] RadioError),
}

/// The forwarder's connection settings from `config`: the broker is `broker` if given
/// (what `gatehouse up` learnt from the hub), else `lora.mqtt.broker`, else the hub's
/// embedded broker at `hub.mqtt.listen`; the password is read from its file.
pub fn options_from_config(
    config: &Config,
    broker: Option<SocketAddr>,
) -> Result<ForwarderOptions, LoraError> {
    let l = &config.lora;
    let (host, port) = if let Some(b) = broker {
        (b.ip().to_string(), b.port())
    } else if !l.mqtt.broker.is_empty() {
        let bad = || {
            LoraError::Config(format!(
                "lora.mqtt.broker {:?} is not host:port",
                l.mqtt.broker
            ))
        };
        let (host, port) = l.mqtt.broker.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        (
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        )
    } else {
        let listen = config.hub.mqtt.listen;
        if config.hub.mqtt.mode != gatehouse_config::MqttMode::Embedded || listen.port() == 0 {
            return Err(LoraError::Config(
                "lora.mqtt.broker is empty and the hub's broker has no fixed address (hub.mqtt.mode is not \"embedded\" or hub.mqtt.listen has port 0); set lora.mqtt.broker to the broker's host:port, or run `gatehouse up`".into(),
            ));
        }
        let ip = if listen.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            listen.ip()
        };
        (ip.to_string(), listen.port())
    };
    let path = l.password_file(&config.general.data_dir);
    let password = std::fs::read_to_string(&path)
        .map_err(|source| LoraError::Password {
            path: path.clone(),
            source,
        })?
        .trim()
        .to_owned();
    if password.is_empty() {
        return Err(LoraError::Password {
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        });
    }
    Ok(ForwarderOptions {
        host,
        port,
        username: l.mqtt.username.clone(),
        password,
        tx_log: config.general.data_dir.join(tx_log::TX_LOG_FILE),
    })
}

/// Runs the forwarder `config.lora` describes until `stop` turns true: opens the radio,
/// connects (see [`options_from_config`] for `broker`), forwards.
pub async fn run(
    config: &Config,
    broker: Option<SocketAddr>,
    stop: watch::Receiver<bool>,
) -> Result<(), LoraError> {
    let l = &config.lora;
    let options = options_from_config(config, broker)?;
    match l.mode {
        LoraMode::Off => Err(LoraError::Off),
        LoraMode::Sim => {
            let (air, f, sf, bw) = (l.air, l.frequency_hz, l.spreading_factor, l.bandwidth_hz);
            let radio = tokio::task::spawn_blocking(move || SimRadio::connect(air, f, sf, bw))
                .await
                .map_err(|e| LoraError::Config(format!("starting the simulated radio: {e}")))??;
            tracing::info!(%air, freq_hz = f, sf, "LoRa forwarder on the simulated air");
            Forwarder::connect(radio, &options).await?.run(stop).await
        }
        LoraMode::Sx1262 => {
            let radio = sx1262::open(l).await?;
            tracing::info!(spi = %l.spi.display(), freq_hz = l.frequency_hz, sf = l.spreading_factor, "LoRa forwarder on the SX1262");
            Forwarder::connect(radio, &options).await?.run(stop).await
        }
    }
}
