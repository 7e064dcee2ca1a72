//! The command line, and [`SimConfig`]: the checked settings a run uses. Every
//! configuration error is a [`ConfigError`] naming the option or file at fault.

use crate::provisioning::{self, ProvisioningError, SensorSpec};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Simulated LoRa sensor nodes: each runs the node firmware's core (lora-node-core) over
/// the simulated air (`gatehouse lora air`), against the forwarder and the hub. Prints
/// one summary line at the end (and a JSON summary with --json-summary).
#[derive(Debug, Parser)]
#[command(name = "lora-sim", version)]
pub struct Args {
    /// The nodes: a provisioning file of [[sensor]] tables as `gatehouse sensor add`
    /// prints them (name, kind, dev_addr, key, frequency_hz, spreading_factor,
    /// bandwidth_hz, heartbeat_s).
    #[arg(long, value_name = "FILE")]
    pub sensors: PathBuf,
    /// The simulated air's UDP address (`gatehouse lora air --listen ADDR`).
    #[arg(long, value_name = "ADDR")]
    pub air: SocketAddr,
    /// Run for S seconds (decimals allowed); then no new alarm is raised and the run ends
    /// once every alarm in flight was acknowledged or given up (see --drain).
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    pub duration: f64,
    /// After --duration, wait at most S seconds for alarms in flight.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub drain: f64,
    /// Each node raises an alarm every S seconds (its first at a random time in the first
    /// interval) and ends it --alarm-hold seconds later. 0: no alarms.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub alarm_every: f64,
    /// How long an alarm stays active before the node reports its end.
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    pub alarm_hold: f64,
    /// The node's first alarm backoff in ms, doubling per retransmission [default: the
    /// firmware's, 2000].
    #[arg(long, value_name = "MS")]
    pub alarm_backoff_ms: Option<u32>,
    /// Cap of the doubling alarm backoff in ms [default: the firmware's, 120000].
    #[arg(long, value_name = "MS")]
    pub alarm_backoff_max_ms: Option<u32>,
    /// Each node sends a sensor report at least every S seconds (and on every change).
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub report_every: u32,
    /// The nodes start at random times spread over the first S seconds (so that they do
    /// not all boot, and send, in the same instant). Default: a third of --duration, at
    /// most 10 s.
    #[arg(long, value_name = "S")]
    pub start_spread: Option<f64>,
    /// Stop node NAME (it sends nothing more, as if its battery were pulled) S seconds
    /// after its start (default 5), but not before the hub has acknowledged one of its
    /// alarms: the node starts with the run and presses its panic button at boot, so the
    /// hub has certainly heard it (it supervises only sensors it has heard). Repeatable.
    #[arg(long, value_name = "NAME[@S]")]
    pub silence: Vec<String>,
    /// Re-send, verbatim and once, S seconds into the run (default: half the --duration),
    /// the last alarm frame of node NAME the hub acknowledged (so the hub has certainly
    /// seen its counter); a node with none by then presses its panic button and replays
    /// once that alarm is acknowledged. Repeatable: one replayed frame per use.
    #[arg(long, value_name = "NAME[@S]")]
    pub replay: Vec<String>,
    /// Send once, S seconds into the run (default: half the --duration), a heartbeat with
    /// node NAME's address and a counter ahead of its own, sealed with a wrong key (so its
    /// MIC is bad). Repeatable: one forged frame per use.
    #[arg(long, value_name = "NAME[@S]")]
    pub forge: Vec<String>,
    /// Seed of the start times, alarm times and forged keys.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Also write the summary as JSON (per node: alarms sent / acked / given up and
    /// their ids, frames, airtime, reports, heartbeats) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json_summary: Option<PathBuf>,
}

/// What is wrong with the command line or the provisioning file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(transparent)]
    Provisioning(#[from] ProvisioningError),
    #[error("--{option} {value}: {message}")]
    Option {
        option: &'static str,
        value: String,
        message: String,
    },
}

/// Something done to one node at a time into the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    /// Index into [`SimConfig::sensors`].
    pub node: usize,
    pub at: Duration,
}

/// The checked settings of a run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub sensors: Vec<SensorSpec>,
    pub air: SocketAddr,
    pub duration: Duration,
    pub drain: Duration,
    pub alarm_every: Option<Duration>,
    pub alarm_hold: Duration,
    pub report_every_s: u32,
    pub alarm_backoff_ms: Option<u32>,
    pub alarm_backoff_max_ms: Option<u32>,
    pub start_spread: Duration,
    /// `at` counts from the node's own start.
    pub silence: Vec<Scheduled>,
    /// `at` counts from the start of the run.
    pub replay: Vec<Scheduled>,
    pub forge: Vec<Scheduled>,
    pub seed: u64,
    pub json_summary: Option<PathBuf>,
}

fn seconds(option: &'static str, v: f64, allow_zero: bool) -> Result<Duration, ConfigError> {
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > 1e7 {
        return Err(ConfigError::Option {
            option,
            value: v.to_string(),
            message: if allow_zero {
                "must be a number of seconds, 0 or more".into()
            } else {
                "must be a number of seconds above 0".into()
            },
        });
    }
    Ok(Duration::from_secs_f64(v))
}

impl SimConfig {
    pub fn from_args(a: Args) -> Result<SimConfig, ConfigError> {
        let sensors = provisioning::load(&a.sensors)?;
        let duration = seconds("duration", a.duration, false)?;
        let drain = seconds("drain", a.drain, true)?;
        let alarm_every = seconds("alarm-every", a.alarm_every, true)?;
        let alarm_hold = seconds("alarm-hold", a.alarm_hold, true)?;
        let start_spread = match a.start_spread {
            Some(s) => seconds("start-spread", s, true)?,
            None => (duration / 3).min(Duration::from_secs(10)),
        };
        if a.report_every == 0 {
            return Err(ConfigError::Option {
                option: "report-every",
                value: "0".into(),
                message: "must be at least 1 second".into(),
            });
        }
        let schedule = |option: &'static str, list: &[String], default: Duration| {
            list.iter()
                .map(|v| parse_scheduled(option, v, &sensors, default))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(SimConfig {
            silence: schedule("silence", &a.silence, Duration::from_secs(5))?,
            replay: schedule("replay", &a.replay, duration / 2)?,
            forge: schedule("forge", &a.forge, duration / 2)?,
            air: a.air,
            duration,
            drain,
            alarm_every: (!alarm_every.is_zero()).then_some(alarm_every),
            alarm_hold,
            report_every_s: a.report_every,
            alarm_backoff_ms: a.alarm_backoff_ms,
            alarm_backoff_max_ms: a.alarm_backoff_max_ms,
            start_spread,
            seed: a.seed,
            json_summary: a.json_summary,
            sensors,
        })
    }
}

/// `NAME` or `NAME@S`.
fn parse_scheduled(
    option: &'static str,
    v: &str,
    sensors: &[SensorSpec],
    default: Duration,
) -> Result<Scheduled, ConfigError> {
    let err = |message: String| ConfigError::Option {
        option,
        value: v.to_owned(),
        message,
    };
    let (name, at) = match v.rsplit_once('@') {
        Some((n, s)) => {
            let secs: f64 = s
                .parse()
                .map_err(|_| err(format!("{s:?} after @ is not a number of seconds")))?;
            (
                n,
                seconds(option, secs, true)
                    .map_err(|_| err("the time after @ must be 0 or more seconds".into()))?,
            )
        }
        None => (v, default),
    };
    let node = sensors.iter().position(|s| s.name == name).ok_or_else(|| {
        err(format!(
            "no sensor named {name:?} in the provisioning file (use NAME or NAME@SECONDS)"
        ))
    })?;
    Ok(Scheduled { node, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &[&str]) -> Result<SimConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(
            &p,
            "[[sensor]]\nname = \"a\"\nkind = \"door\"\ndev_addr = \"01\"\nkey = \"000102030405060708090a0b0c0d0e0f\"\n\
             [[sensor]]\nname = \"b\"\nkind = \"smoke\"\ndev_addr = \"02\"\nkey = \"000102030405060708090a0b0c0d0e0f\"\n",
        )
        .unwrap();
        let mut argv = vec![
            "lora-sim".to_owned(),
            "--sensors".into(),
            p.display().to_string(),
            "--air".into(),
            "127.0.0.1:9".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        SimConfig::from_args(Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn schedules_name_nodes_and_times() {
        let c = config(&[
            "--duration",
            "20",
            "--silence",
            "b@2.5",
            "--replay",
            "a",
            "--forge",
            "b@0",
        ])
        .unwrap();
        assert_eq!(
            c.silence,
            vec![Scheduled {
                node: 1,
                at: Duration::from_millis(2500)
            }]
        );
        assert_eq!(
            c.replay,
            vec![Scheduled {
                node: 0,
                at: Duration::from_secs(10)
            }]
        );
        assert_eq!(c.forge[0].at, Duration::ZERO);
        assert_eq!(c.alarm_every, None);
        assert_eq!(c.start_spread, Duration::from_secs(20) / 3);
    }

    #[test]
    fn errors_name_the_option() {
        let e = config(&["--silence", "zz"]).unwrap_err().to_string();
        assert!(e.contains("--silence zz") && e.contains("no sensor"), "{e}");
        let e = config(&["--replay", "a@x"]).unwrap_err().to_string();
        assert!(e.contains("--replay"), "{e}");
        let e = config(&["--duration", "0"]).unwrap_err().to_string();
        assert!(e.contains("--duration"), "{e}");
    }
}
