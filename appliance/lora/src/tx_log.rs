//! The transmit log: one JSON line per transmission the forwarder made, in
//! `<data_dir>/lora-tx.log` ([`TX_LOG_FILE`]), so anyone (tests, an auditor) can check the
//! duty cycle from what was really sent ([`max_hourly_airtime_us`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

/// The log's name in the data directory.
pub const TX_LOG_FILE: &str = "lora-tx.log";
/// The window the duty cycle is counted over (ETSI EN 300 220-2: one hour).
pub const HOUR_US: u64 = 3_600_000_000;

/// One transmission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLogLine {
    /// Start, on the forwarder's clock, µs.
    pub at_us: u64,
    pub freq_hz: u32,
    pub sf: u8,
    pub bw_hz: u32,
    pub airtime_us: u32,
    /// The EU868 sub-band, like `"868.0-868.6"`.
    pub sub_band: String,
    /// `"alarm"` or `"normal"`.
    pub priority: String,
    /// The downlink's id.
    pub id: String,
}

/// The open log, appended to.
#[derive(Debug)]
pub struct TxLog {
    path: PathBuf,
    file: File,
}

impl TxLog {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<TxLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(TxLog {
            path: path.to_owned(),
            file,
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (one `write`, so a reader never sees half a line).
    pub fn append(&mut self, line: &TxLogLine) -> std::io::Result<()> {
        let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        text.push('\n');
        self.file.write_all(text.as_bytes())
    }
}

/// Every line of the log at `path` (lines that do not parse are skipped).
pub fn read(path: &Path) -> std::io::Result<Vec<TxLogLine>> {
    let f = File::open(path)?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        if let Ok(l) = serde_json::from_str(&line?) {
            out.push(l);
        }
    }
    Ok(out)
}

/// Per sub-band, the most airtime started within any one hour (a sliding window:
/// `[at_us, at_us + 1 h)` for each transmission's start), µs. Compare with
/// `SubBand::budget_us`.
pub fn max_hourly_airtime_us(lines: &[TxLogLine]) -> BTreeMap<String, u64> {
    let mut by_band: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for l in lines {
        by_band
            .entry(l.sub_band.clone())
            .or_default()
            .push((l.at_us, u64::from(l.airtime_us)));
    }
    by_band
        .into_iter()
        .map(|(band, mut txs)| {
            txs.sort_unstable();
            let mut best = 0;
            let (mut j, mut sum) = (0, 0);
            // Two pointers: the window starts at txs[i] and holds txs[i..j].
            for i in 0..txs.len() {
                while j < txs.len() && txs[j].0 < txs[i].0 + HOUR_US {
                    sum += txs[j].1;
                    j += 1;
                }
                best = best.max(sum);
                sum -= txs[i].1;
            }
            (band, best)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(at_us: u64, airtime_us: u32, band: &str) -> TxLogLine {
        TxLogLine {
            at_us,
            freq_hz: 868_100_000,
            sf: 7,
            bw_hz: 125_000,
            airtime_us,
            sub_band: band.into(),
            priority: "alarm".into(),
            id: "x".into(),
        }
    }

    #[test]
    fn appends_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TX_LOG_FILE);
        let mut log = TxLog::open(&path).unwrap();
        log.append(&line(1, 2, "a")).unwrap();
        log.append(&line(3, 4, "a")).unwrap();
        drop(log);
        let mut log = TxLog::open(&path).unwrap();
        log.append(&line(5, 6, "b")).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            [line(1, 2, "a"), line(3, 4, "a"), line(5, 6, "b")]
        );
    }

    #[test]
    fn sliding_hour_maximum() {
        let lines = [
            line(0, 10, "a"),
            line(HOUR_US - 1, 20, "a"),
            line(HOUR_US, 30, "a"),
            line(2 * HOUR_US + 5, 1, "a"),
            line(7, 100, "b"),
        ];
        let m = max_hourly_airtime_us(&lines);
        assert_eq!(m["a"], 50);
        assert_eq!(m["b"], 100);
    }
}
