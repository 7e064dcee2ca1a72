//! The command line, and [`SimConfig`]: the checked settings a run uses. Every
//! configuration error is a [`ConfigError`] naming the option or file at fault.

use crate::gates_file::{self, GateSpec, GatesFileError};
use crate::rng::SplitMix64;
use clap::{ArgGroup, Parser, ValueEnum};
use gatehouse_gate_proto::CardId;
use std::path::PathBuf;
use std::time::Duration;

/// Simulated gates: each runs the gate firmware's core (gate-core) against the hub over
/// the chosen transport, reading cards at a fixed rate, and a summary line is printed at
/// the end.
#[derive(Debug, Parser)]
#[command(name = "gate-sim", version)]
#[command(group(ArgGroup::new("card_source").required(true).args(["cards", "card"])))]
#[command(group(ArgGroup::new("length").args(["duration", "requests"])))]
pub struct Args {
    /// How gates reach the hub.
    #[arg(long, value_enum)]
    pub transport: Transport,
    /// The hub's address, HOST:PORT: hub.http_listen (http), hub.gate_tcp_listen (tcp) or
    /// the MQTT broker (mqtt). `http://` in front is accepted for http.
    #[arg(long, value_name = "ADDR")]
    pub hub: String,
    /// The gates to simulate (TOML, or JSON if it ends in .json): [[gate]] id, secret,
    /// optional allow_list_key, mqtt_username, mqtt_password, name.
    #[arg(long, value_name = "FILE")]
    pub gates: PathBuf,
    /// Read N random cards (generated from --seed, unknown to the hub).
    #[arg(long, value_name = "N")]
    pub cards: Option<usize>,
    /// Read these cards (hex bytes as the reader sends them; repeat the option or list
    /// several after it).
    #[arg(long, value_name = "HEX", num_args = 1..)]
    pub card: Vec<String>,
    /// How the next card is chosen: at random, or each gate cycling through the list
    /// (gate i starts at card i), which makes the counts per card exact.
    #[arg(long, value_enum, default_value_t = Pick::Random)]
    pub pick: Pick,
    /// Card reads per second per gate (a gate waits for each decision before the next).
    #[arg(long, value_name = "R", default_value_t = 10.0)]
    pub rate: f64,
    /// Run for S seconds (decimals allowed).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Stop each gate after N card reads [default: 100 unless --duration].
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Seed of the card choice and generated cards.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// How long a gate waits for the hub's decision before using its allow-list.
    #[arg(long, value_name = "MS", default_value_t = 1500)]
    pub request_timeout_ms: u32,
    /// Resend an unacknowledged offline batch after this long.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub offline_ack_timeout_ms: u32,
    /// After the last read, wait up to S seconds for the offline logs to be uploaded.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub drain: f64,
    /// Each gate's persisted sequence number, like the board's flash: read at start (if
    /// the file exists), written at the end. Without it every run numbers from 1, which
    /// the hub refuses as replays after the first run.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// MQTT password for gates whose record has none.
    #[arg(long, value_name = "PASSWORD")]
    pub mqtt_password: Option<String>,
    /// Topic gates publish requests to.
    #[arg(long, value_name = "TOPIC", default_value = "access/request")]
    pub mqtt_request_topic: String,
    /// Topic a gate's answers arrive on; `{gate_id}` is replaced by the gate's id.
    #[arg(
        long,
        value_name = "TOPIC",
        default_value = "access/response/{gate_id}"
    )]
    pub mqtt_response_topic: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Http,
    Tcp,
    Mqtt,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Tcp => "tcp",
            Transport::Mqtt => "mqtt",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pick {
    Random,
    Cycle,
}

/// When a gate stops reading cards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    Requests(u64),
    Duration(Duration),
}

/// A configuration error: the message says which option or file and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(transparent)]
    Gates(#[from] GatesFileError),
    #[error("--{option}: {message}")]
    Option {
        option: &'static str,
        message: String,
    },
    #[error("state file {path}: {message}")]
    State { path: String, message: String },
}

fn option(option: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Option {
        option,
        message: message.into(),
    }
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub transport: Transport,
    /// HOST:PORT.
    pub hub: String,
    pub gates: Vec<GateSpec>,
    pub cards: Vec<CardId>,
    pub pick: Pick,
    pub interval: Duration,
    pub length: Length,
    pub seed: u64,
    pub request_timeout_ms: u32,
    pub offline_ack_timeout_ms: u32,
    pub drain: Duration,
    pub state: Option<PathBuf>,
    pub mqtt_request_topic: String,
    pub mqtt_response_topic: String,
}

impl SimConfig {
    /// Checks the arguments and reads the gates file.
    pub fn from_args(args: Args) -> Result<SimConfig, ConfigError> {
        let hub = match args.transport {
            Transport::Http => args
                .hub
                .strip_prefix("http://")
                .unwrap_or(&args.hub)
                .trim_end_matches('/')
                .to_owned(),
            _ => args.hub.clone(),
        };
        match hub.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(option("hub", format!("{:?} is not HOST:PORT", args.hub))),
        }
        if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 100_000.0) {
            return Err(option("rate", "must be above 0 and at most 100000 reads/s"));
        }
        let length = match (args.duration, args.requests) {
            (Some(s), _) if !(s.is_finite() && s > 0.0) => {
                return Err(option("duration", "must be a positive number of seconds"))
            }
            (Some(s), _) => Length::Duration(Duration::from_secs_f64(s)),
            (None, Some(0)) => return Err(option("requests", "must be 1 or more")),
            (None, Some(n)) => Length::Requests(n),
            (None, None) => Length::Requests(100),
        };
        if !(args.drain.is_finite() && args.drain >= 0.0) {
            return Err(option("drain", "must be 0 or more seconds"));
        }
        if args.request_timeout_ms == 0 {
            return Err(option("request-timeout-ms", "must be 1 or more"));
        }
        let cards = match args.cards {
            Some(0) => return Err(option("cards", "must be 1 or more")),
            Some(n) => random_cards(n, args.seed),
            None => args
                .card
                .iter()
                .map(|h| {
                    let bytes = gates_file::parse_hex(h).map_err(|m| option("card", m))?;
                    CardId::new(&bytes)
                        .map_err(|e| option("card", format!("{h:?}: {e} (1 to 32 bytes)")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if cards.is_empty() {
            return Err(option("card", "give at least one card"));
        }
        if !args.mqtt_response_topic.contains("{gate_id}") {
            return Err(option(
                "mqtt-response-topic",
                "must contain {gate_id} (each gate has its own answer topic)",
            ));
        }
        let mut gates = gates_file::load(&args.gates)?;
        for g in &mut gates {
            if g.mqtt_password.is_none() {
                g.mqtt_password.clone_from(&args.mqtt_password);
            }
        }
        Ok(SimConfig {
            transport: args.transport,
            hub,
            gates,
            cards,
            pick: args.pick,
            interval: Duration::from_secs_f64(1.0 / args.rate),
            length,
            seed: args.seed,
            request_timeout_ms: args.request_timeout_ms,
            offline_ack_timeout_ms: args.offline_ack_timeout_ms.max(1),
            drain: Duration::from_secs_f64(args.drain),
            state: args.state,
            mqtt_request_topic: args.mqtt_request_topic,
            mqtt_response_topic: args.mqtt_response_topic,
        })
    }
}

/// `n` distinct 7-byte cards (the UID length of most MIFARE cards) from `seed`.
fn random_cards(n: usize, seed: u64) -> Vec<CardId> {
    let mut rng = SplitMix64::new(seed ^ 0x6361_7264_7321); // "cards!"
    let mut seen = std::collections::HashSet::new();
    let mut cards = Vec::with_capacity(n);
    while cards.len() < n {
        let raw = rng.next_u64().to_be_bytes();
        if seen.insert(raw) {
            if let Ok(c) = CardId::new(&raw[1..]) {
                cards.push(c);
            }
        }
    }
    cards
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn gates_file() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gates.toml");
        std::fs::write(&p, format!("[[gate]]\nid = 1\nsecret = \"{K}\"\n")).unwrap();
        let s = p.display().to_string();
        (dir, s)
    }

    fn config(extra: &[&str]) -> Result<SimConfig, String> {
        let (_dir, gates) = gates_file();
        let mut argv = vec!["gate-sim", "--gates", &gates];
        argv.extend_from_slice(extra);
        let args = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        SimConfig::from_args(args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_card_lists() {
        let c = config(&[
            "--transport",
            "tcp",
            "--hub",
            "127.0.0.1:7300",
            "--cards",
            "5",
        ])
        .unwrap();
        assert_eq!(c.transport, Transport::Tcp);
        assert_eq!(c.cards.len(), 5);
        assert_eq!(c.length, Length::Requests(100));
        assert_eq!(c.interval, Duration::from_millis(100));
        assert_eq!(c.pick, Pick::Random);
        let again = config(&["--transport", "tcp", "--hub", "h:1", "--cards", "5"]).unwrap();
        assert_eq!(c.cards, again.cards, "generated cards follow the seed");

        let c = config(&[
            "--transport",
            "http",
            "--hub",
            "http://localhost:8080/",
            "--card",
            "0x04a1b2",
            "04:a1",
            "--card",
            "ff",
            "--duration",
            "1.5",
            "--rate",
            "4",
            "--pick",
            "cycle",
        ])
        .unwrap();
        assert_eq!(c.hub, "localhost:8080");
        assert_eq!(c.cards.len(), 3);
        assert_eq!(c.cards[0].as_bytes(), &[4, 0xa1, 0xb2]);
        assert_eq!(c.length, Length::Duration(Duration::from_millis(1500)));
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.pick, Pick::Cycle);
    }

    #[test]
    fn mqtt_password_fills_gates_without_one() {
        let c = config(&[
            "--transport",
            "mqtt",
            "--hub",
            "127.0.0.1:1883",
            "--cards",
            "1",
            "--mqtt-password",
            "pw",
        ])
        .unwrap();
        assert_eq!(c.gates[0].mqtt_password.as_deref(), Some("pw"));
        assert_eq!(c.gates[0].mqtt_username, "gate-1");
    }

    #[test]
    fn errors_name_the_option() {
        let base = ["--transport", "tcp", "--hub", "127.0.0.1:7300"];
        let cases: &[(&[&str], &str)] = &[
            (&["--cards", "0"], "--cards: must be 1 or more"),
            (&["--card", "xyz"], "--card:"),
            (&["--card", "00".repeat(33).leak()], "--card:"),
            (&["--cards", "1", "--rate", "0"], "--rate"),
            (&["--cards", "1", "--requests", "0"], "--requests"),
            (&["--cards", "1", "--duration=-1"], "--duration"),
            (&["--cards", "1", "--mqtt-response-topic", "x"], "{gate_id}"),
            // clap's own checks
            (&[], "--cards"),
            (&["--cards", "1", "--card", "00"], "cannot be used with"),
            (
                &["--cards", "1", "--duration", "1", "--requests", "2"],
                "cannot be used with",
            ),
        ];
        for (extra, want) in cases {
            let mut argv = base.to_vec();
            argv.extend_from_slice(extra);
            let e = config(&argv).unwrap_err();
            assert!(e.contains(want), "{extra:?}: wanted {want:?} in {e}");
        }
        let e = config(&["--transport", "tcp", "--hub", "nohost", "--cards", "1"]).unwrap_err();
        assert!(e.contains("--hub: \"nohost\" is not HOST:PORT"), "{e}");
        let e = config(&[
            "--transport",
            "carrier-pigeon",
            "--hub",
            "h:1",
            "--cards",
            "1",
        ])
        .unwrap_err();
        assert!(e.contains("carrier-pigeon"), "{e}");
    }

    #[test]
    fn missing_gates_file_is_named() {
        let args = Args::try_parse_from([
            "gate-sim",
            "--transport",
            "tcp",
            "--hub",
            "h:1",
            "--gates",
            "/nonexistent/g.toml",
            "--cards",
            "1",
        ])
        .unwrap();
        let e = SimConfig::from_args(args).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/g.toml"), "{e}");
    }
}
