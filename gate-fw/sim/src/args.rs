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
#[command(group(ArgGroup::new("card_source").required(true).args(["cards", "card", "cards_file"])))]
#[command(group(ArgGroup::new("length").args(["duration", "requests"])))]
#[command(group(ArgGroup::new("pace").args(["rate", "total_rate", "saturate"])))]
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
    /// Read the cards listed in FILE: one per line, hex bytes as for --card; blank lines
    /// and lines starting with '#' are skipped.
    #[arg(long, value_name = "FILE")]
    pub cards_file: Option<PathBuf>,
    /// How the next card is chosen: at random, or each gate cycling through the list
    /// (gate i starts at card i), which makes the counts per card exact.
    #[arg(long, value_enum, default_value_t = Pick::Random)]
    pub pick: Pick,
    /// Card reads per second per gate, on a fixed schedule (the gates' first reads spread
    /// over one interval). A gate has one request in flight: a read whose time came while
    /// it waited for a decision comes at once after it (a gate more than one interval
    /// behind skips ahead rather than bursting).
    #[arg(long, value_name = "R", default_value_t = 10.0)]
    pub rate: f64,
    /// Card reads per second of all gates together: each gate reads at R / (number of
    /// gates), as with --rate.
    #[arg(long, value_name = "R")]
    pub total_rate: Option<f64>,
    /// Each gate reads its next card as soon as the previous one is decided (no pacing):
    /// the hub's throughput with one request in flight per gate.
    #[arg(long)]
    pub saturate: bool,
    /// Run for S seconds (decimals allowed).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Read cards for W seconds before the --duration (connection set-up, the allow-list
    /// transfers of link-up), then also report the --duration alone: a `window` line (and
    /// the JSON summary's `window`) with the reads made in it and their decisions.
    #[arg(long, value_name = "W", requires = "duration")]
    pub warmup: Option<f64>,
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
    /// Every N-th card-read cycle of each gate, open its door contact without a grant
    /// (and close it again) before reading the card: the core reports a forced door
    /// (`forced_open`), which the hub raises as a "door.forced" event. If a grant's
    /// opening is still pending, the door is first opened and closed once for it (an
    /// `opened` passage), so that each such cycle forces the door exactly once.
    #[arg(long, value_name = "N")]
    pub door_forced_every: Option<u64>,
    /// After the summary line, print the same figures (and the offered and achieved rates)
    /// as one JSON object on a line of its own.
    #[arg(long)]
    pub json_summary: bool,
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
    #[error("cards file {path}: {message}")]
    Cards { path: String, message: String },
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
    /// Time between a gate's card reads (zero: as fast as decisions come back).
    pub interval: Duration,
    /// Reads per second offered by all gates together; `None` with --saturate.
    pub offered_per_s: Option<f64>,
    /// The whole load, warm-up included.
    pub length: Length,
    /// The first part of the load that [`SimConfig::window`] leaves out.
    pub warmup: Option<Duration>,
    pub seed: u64,
    pub request_timeout_ms: u32,
    pub offline_ack_timeout_ms: u32,
    pub drain: Duration,
    pub state: Option<PathBuf>,
    pub mqtt_request_topic: String,
    pub mqtt_response_topic: String,
    /// `--door-forced-every`: force the door every N-th read cycle of each gate.
    pub door_forced_every: Option<u64>,
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
        if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= MAX_RATE) {
            return Err(option("rate", "must be above 0 and at most 100000 reads/s"));
        }
        if let Some(r) = args.total_rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(option("total-rate", "must be above 0 reads/s"));
            }
        }
        let warmup = match args.warmup {
            Some(w) if !(w.is_finite() && w >= 0.0) => {
                return Err(option("warmup", "must be 0 or more seconds"))
            }
            Some(w) => Some(Duration::from_secs_f64(w)),
            None => None,
        };
        let length = match (args.duration, args.requests) {
            (Some(s), _) if !(s.is_finite() && s > 0.0) => {
                return Err(option("duration", "must be a positive number of seconds"))
            }
            (Some(s), _) => {
                Length::Duration(Duration::from_secs_f64(s) + warmup.unwrap_or_default())
            }
            (None, Some(0)) => return Err(option("requests", "must be 1 or more")),
            (None, Some(n)) => Length::Requests(n),
            (None, None) => Length::Requests(100),
        };
        if !(args.drain.is_finite() && args.drain >= 0.0) {
            return Err(option("drain", "must be 0 or more seconds"));
        }
        if args.door_forced_every == Some(0) {
            return Err(option(
                "door-forced-every",
                "must be 1 or more (1: every cycle)",
            ));
        }
        if args.request_timeout_ms == 0 {
            return Err(option("request-timeout-ms", "must be 1 or more"));
        }
        let cards = match (args.cards, &args.cards_file) {
            (Some(0), _) => return Err(option("cards", "must be 1 or more")),
            (Some(n), _) => random_cards(n, args.seed),
            (None, Some(path)) => read_cards_file(path)?,
            (None, None) => args
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
        let n_gates = gates.len() as f64;
        let (interval, offered_per_s) = match (args.saturate, args.total_rate) {
            (true, _) => (Duration::ZERO, None),
            (false, Some(total)) => {
                if total / n_gates > MAX_RATE {
                    return Err(option(
                        "total-rate",
                        format!("{total} over {n_gates} gates is above 100000 reads/s per gate"),
                    ));
                }
                (Duration::from_secs_f64(n_gates / total), Some(total))
            }
            (false, None) => (
                Duration::from_secs_f64(1.0 / args.rate),
                Some(args.rate * n_gates),
            ),
        };
        Ok(SimConfig {
            transport: args.transport,
            hub,
            gates,
            cards,
            pick: args.pick,
            interval,
            offered_per_s,
            length,
            warmup,
            seed: args.seed,
            request_timeout_ms: args.request_timeout_ms,
            offline_ack_timeout_ms: args.offline_ack_timeout_ms.max(1),
            drain: Duration::from_secs_f64(args.drain),
            state: args.state,
            mqtt_request_topic: args.mqtt_request_topic,
            mqtt_response_topic: args.mqtt_response_topic,
            door_forced_every: args.door_forced_every,
        })
    }
}

impl SimConfig {
    /// The part of the run `--warmup` asks to report alone: (from the start, length).
    pub fn window(&self) -> Option<(Duration, Duration)> {
        match (self.warmup, self.length) {
            (Some(w), Length::Duration(total)) => Some((w, total.saturating_sub(w))),
            _ => None,
        }
    }
}

/// Most reads per second per gate.
const MAX_RATE: f64 = 100_000.0;

/// The cards of a cards file: one per line, hex as for `--card`; blank lines and `#`
/// comments skipped. Errors name the line.
pub fn read_cards_file(path: &std::path::Path) -> Result<Vec<CardId>, ConfigError> {
    let shown = path.display().to_string();
    let err = |message: String| ConfigError::Cards {
        path: shown.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_cards(&text).map_err(err)
}

/// The cards in a cards file's text.
pub fn parse_cards(text: &str) -> Result<Vec<CardId>, String> {
    let mut cards = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bytes = gates_file::parse_hex(line).map_err(|m| format!("line {}: {m}", i + 1))?;
        let card =
            CardId::new(&bytes).map_err(|e| format!("line {}: {e} (1 to 32 bytes)", i + 1))?;
        cards.push(card);
    }
    if cards.is_empty() {
        return Err("lists no cards (one hex card id per line)".into());
    }
    Ok(cards)
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
        assert_eq!(c.door_forced_every, None);
        let forced = config(&[
            "--transport",
            "tcp",
            "--hub",
            "h:1",
            "--cards",
            "5",
            "--door-forced-every",
            "3",
        ])
        .unwrap();
        assert_eq!(forced.door_forced_every, Some(3));
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
            (
                &["--cards", "1", "--door-forced-every", "0"],
                "--door-forced-every: must be 1 or more",
            ),
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
    fn pacing_per_gate_total_or_saturated() {
        // One gate in the test gates file: the total rate is that gate's rate.
        let base = ["--transport", "tcp", "--hub", "h:1", "--cards", "1"];
        let with = |extra: &[&str]| {
            let mut argv = base.to_vec();
            argv.extend_from_slice(extra);
            config(&argv)
        };
        let c = with(&["--rate", "20"]).unwrap();
        assert_eq!(c.interval, Duration::from_millis(50));
        assert_eq!(c.offered_per_s, Some(20.0));
        let c = with(&["--total-rate", "4"]).unwrap();
        assert_eq!(c.interval, Duration::from_millis(250));
        assert_eq!(c.offered_per_s, Some(4.0));
        let c = with(&["--saturate"]).unwrap();
        assert_eq!(c.interval, Duration::ZERO);
        assert_eq!(c.offered_per_s, None);
        for (extra, want) in [
            (&["--total-rate", "0"][..], "--total-rate"),
            (&["--total-rate", "200000"][..], "per gate"),
            (&["--saturate", "--rate", "3"][..], "cannot be used with"),
            (
                &["--saturate", "--total-rate", "3"][..],
                "cannot be used with",
            ),
        ] {
            let e = with(extra).unwrap_err();
            assert!(e.contains(want), "{extra:?}: wanted {want:?} in {e}");
        }
    }

    #[test]
    fn warmup_lengthens_the_run_and_names_the_window() {
        let base = ["--transport", "tcp", "--hub", "h:1", "--cards", "1"];
        let with = |extra: &[&str]| {
            let mut argv = base.to_vec();
            argv.extend_from_slice(extra);
            config(&argv)
        };
        let c = with(&["--duration", "10", "--warmup", "2.5"]).unwrap();
        assert_eq!(c.length, Length::Duration(Duration::from_millis(12_500)));
        assert_eq!(
            c.window(),
            Some((Duration::from_millis(2500), Duration::from_secs(10)))
        );
        let c = with(&["--duration", "10"]).unwrap();
        assert_eq!(c.window(), None);
        assert!(with(&["--duration", "1", "--warmup=-1"])
            .unwrap_err()
            .contains("--warmup"));
        assert!(with(&["--warmup", "1"]).unwrap_err().contains("--duration"));
    }

    #[test]
    fn cards_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cards.txt");
        std::fs::write(&p, "# enrolled\n04a1b2c3d4e5f6\n\n0x0bad:ca:fe\n").unwrap();
        let c = config(&[
            "--transport",
            "tcp",
            "--hub",
            "h:1",
            "--cards-file",
            p.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(c.cards.len(), 2);
        assert_eq!(c.cards[1].as_bytes(), &[0x0b, 0xad, 0xca, 0xfe]);

        assert!(parse_cards("04a1\nxyz\n")
            .unwrap_err()
            .starts_with("line 2:"));
        assert!(parse_cards("# nothing\n").unwrap_err().contains("no cards"));
        let e = config(&[
            "--transport",
            "tcp",
            "--hub",
            "h:1",
            "--cards-file",
            "/nonexistent/cards.txt",
        ])
        .unwrap_err();
        assert!(e.contains("cards file /nonexistent/cards.txt"), "{e}");
        let e = config(&[
            "--transport",
            "tcp",
            "--hub",
            "h:1",
            "--cards-file",
            p.to_str().unwrap(),
            "--cards",
            "3",
        ])
        .unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
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
