//! The LoRa side of the end-to-end harness (issue 6): the node simulator `lora-sim`
//! (lora-node/sim, its own workspace, built once per test binary), long-running
//! `gatehouse` subcommands other than the hub (`gatehouse lora`), the forwarder's transmit
//! log and its duty-cycle check, and the hub's `/metrics`.
//!
//! Cleanup whatever the outcome: a [`Daemon`] SIGKILLs its process by PID and reaps it on
//! drop, and prints its log when the test fails. Used with `mod support { pub mod site;
//! pub mod lora; }`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::site::{strip_ansi, GATEHOUSE, WAIT};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds lora-sim once per test binary (its own workspace, lora-node/) and returns its
/// path.
pub fn lora_sim() -> &'static Path {
    static SIM: OnceLock<PathBuf> = OnceLock::new();
    SIM.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = repo.join("lora-node/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "lora-sim", "--manifest-path"])
            .arg(&manifest)
            .status()
            .unwrap();
        assert!(st.success(), "building lora-sim failed");
        let bin = repo.join("lora-node/target/debug/lora-sim");
        assert!(bin.exists(), "{}", bin.display());
        bin
    })
}

/// A long-running child process (a `gatehouse` subcommand, lora-sim) with its output in a
/// file; SIGKILLed by PID and reaped on drop.
pub struct Daemon {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    reaped: bool,
}

impl Daemon {
    /// Starts `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Daemon {
        let out = fs::File::create(&log).unwrap();
        let child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon {
            name: name.to_owned(),
            child,
            log,
            reaped: false,
        }
    }

    /// `gatehouse --config CONFIG ARGS...`, logging at info.
    pub fn gatehouse(name: &str, config: &Path, args: &[&str], log: PathBuf) -> Daemon {
        let mut cmd = Command::new(GATEHOUSE);
        cmd.arg("--config")
            .arg(config)
            .args(args)
            .env("GATEHOUSE_LOG", "info");
        Daemon::spawn(name, cmd, log)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Waits until its log contains `pat` (failing if it exits first or after [`WAIT`]).
    pub fn wait_log(&mut self, pat: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.log_text().contains(pat) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                self.reaped = true;
                panic!(
                    "{} exited ({status}) before logging {pat:?}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {pat:?}:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `timeout`) for it to exit; asserts it succeeded; its output.
    pub fn finish(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        self.reaped = true;
        assert!(
            status.success(),
            "{} exited {status}:\n{}",
            self.name,
            self.log_text()
        );
        self.log_text()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}

// ---- the duty cycle, from the forwarder's transmit log ----------------------------------

/// One line of `<data_dir>/lora-tx.log`: a transmission the forwarder made.
#[derive(Debug, Clone, PartialEq)]
pub struct TxRecord {
    pub at_us: u64,
    pub freq_hz: u64,
    pub airtime_us: u64,
    /// As the forwarder named it (not used for the check, which classifies by frequency).
    pub sub_band: String,
}

/// Reads the transmit log (one JSON object per line).
pub fn read_tx_log(path: &Path) -> Vec<TxRecord> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("transmit log line {l:?} is not JSON: {e}"));
            let n = |k: &str| {
                v[k].as_u64()
                    .unwrap_or_else(|| panic!("transmit log line without {k}: {l}"))
            };
            TxRecord {
                at_us: n("at_us"),
                freq_hz: n("freq_hz"),
                airtime_us: n("airtime_us"),
                sub_band: v["sub_band"].as_str().unwrap_or("").to_owned(),
            }
        })
        .collect()
}

/// The EU868 sub-band of a frequency and its duty-cycle limit in parts per thousand, per
/// ETSI EN 300 220-2 V3.2.1 (bands of ERC Recommendation 70-03 annex 1, as LoRaWAN's
/// RP002 EU863-870 plan uses them): an oracle independent of proto/lora's own table.
pub fn eu868_band(freq_hz: u64) -> Option<(&'static str, u64)> {
    Some(match freq_hz {
        863_000_000..=864_999_999 => ("863.0-865.0", 1),
        865_000_000..=867_999_999 => ("865.0-868.0", 10),
        868_000_000..=868_600_000 => ("868.0-868.6", 10),
        868_700_000..=869_200_000 => ("868.7-869.2", 1),
        869_400_000..=869_650_000 => ("869.4-869.65", 100),
        869_700_000..=870_000_000 => ("869.7-870.0", 10),
        _ => return None,
    })
}

/// Per sub-band: (transmissions, total airtime µs, the most airtime in any sliding hour µs,
/// the limit per hour µs). Windows start at each transmission (the maximum over all
/// windows is reached at one of those starts); a transmission counts fully when it starts
/// inside the window.
pub fn duty_by_band(log: &[TxRecord]) -> BTreeMap<&'static str, (u64, u64, u64, u64)> {
    const HOUR_US: u64 = 3_600_000_000;
    // Per band: (start µs, airtime µs) of each transmission, and the limit in permille.
    type Band = (Vec<(u64, u64)>, u64);
    let mut by: BTreeMap<&'static str, Band> = BTreeMap::new();
    for r in log {
        let (band, permille) = eu868_band(r.freq_hz)
            .unwrap_or_else(|| panic!("the forwarder sent outside EU868 bands: {r:?}"));
        let e = by.entry(band).or_insert((Vec::new(), permille));
        e.0.push((r.at_us, r.airtime_us));
    }
    by.into_iter()
        .map(|(band, (mut tx, permille))| {
            tx.sort_unstable();
            let total: u64 = tx.iter().map(|t| t.1).sum();
            let (mut max, mut sum, mut j) = (0u64, 0u64, 0usize);
            for i in 0..tx.len() {
                while j < tx.len() && tx[j].0 < tx[i].0 + HOUR_US {
                    sum += tx[j].1;
                    j += 1;
                }
                max = max.max(sum);
                sum -= tx[i].1;
            }
            (
                band,
                (tx.len() as u64, total, max, HOUR_US * permille / 1000),
            )
        })
        .collect()
}

// ---- the hub's /metrics --------------------------------------------------------------

/// `GET /metrics` from the hub's plain HTTP listener (loopback callers need no session).
pub fn scrape(http: &str) -> String {
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "/metrics: {head}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The sum of every series of metric `name` whose labels include all of `labels`
/// (`[("reason", "forged")]`); 0 when there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, lab) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| lab.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_hour() {
        let rec = |at_s: u64, air_ms: u64| TxRecord {
            at_us: at_s * 1_000_000,
            freq_hz: 868_100_000,
            airtime_us: air_ms * 1000,
            sub_band: String::new(),
        };
        let log = vec![rec(0, 10), rec(10, 20), rec(3_599, 30), rec(3_600, 40)];
        let d = duty_by_band(&log);
        // [0, 3600 s) holds the first three (60 ms); [10 s, 3610 s) the last three (90 ms).
        assert_eq!(d["868.0-868.6"], (4, 100_000, 90_000, 36_000_000));
    }

    #[test]
    fn metric_sums_matching_series() {
        let t = "# HELP x\nx_total{a=\"1\",b=\"u\"} 3\nx_total{a=\"2\"} 4\ny 1\n";
        assert_eq!(metric(t, "x_total", &[]), 7.0);
        assert_eq!(metric(t, "x_total", &[("a", "2")]), 4.0);
        assert_eq!(metric(t, "z", &[]), 0.0);
    }
}
