//! The provisioning file: which nodes to simulate and their link settings, as
//! `gatehouse sensor add` prints them (one `[[sensor]]` table per sensor; the output of
//! several `sensor add` runs concatenated is a valid file):
//!
//! ```toml
//! [[sensor]]
//! name = "door-1"
//! kind = "door"                # door | pir | smoke | temp (what alarms it raises)
//! dev_addr = "26011f2a"        # 8 hex digits (a `0x` in front is accepted), or an integer
//! key = "<32 hex digits: the sensor's AES-128 key>"
//! frequency_hz = 868100000
//! spreading_factor = 7
//! bandwidth_hz = 125000
//! heartbeat_s = 300
//! ```
//!
//! Names and device addresses must be unique; a key must be exactly 16 bytes. Keys are
//! never printed ([`SensorSpec`]'s `Debug` leaves them out).

use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

/// What is wrong with a provisioning file. Each names the sensor (by position and name)
/// and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisioningError {
    #[error("cannot read the provisioning file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("provisioning file {path}: {message}")]
    Syntax { path: String, message: String },
    #[error(
        "provisioning file {path} lists no sensors (add the [[sensor]] tables `gatehouse \
         sensor add` prints)"
    )]
    Empty { path: String },
    #[error("provisioning file {path}: sensor #{index} ({name}): {message}")]
    Sensor {
        path: String,
        index: usize,
        name: String,
        message: String,
    },
}

/// What a node senses: the core's kind (one list of kinds and their names).
pub use lora_node_core::SensorKind;

/// One simulated node's identity and link settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SensorSpec {
    pub name: String,
    pub kind: SensorKind,
    pub dev_addr: u32,
    pub key: [u8; 16],
    pub frequency_hz: u32,
    pub spreading_factor: u8,
    pub bandwidth_hz: u32,
    pub heartbeat_s: u32,
}

/// Keys stay out of logs.
impl std::fmt::Debug for SensorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("dev_addr", &format_args!("{:08x}", self.dev_addr))
            .field("frequency_hz", &self.frequency_hz)
            .field("spreading_factor", &self.spreading_factor)
            .field("bandwidth_hz", &self.bandwidth_hz)
            .field("heartbeat_s", &self.heartbeat_s)
            .finish_non_exhaustive()
    }
}

/// A device address as printed: a string of hex digits or a TOML integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAddr {
    Int(u32),
    Text(String),
}

/// A heartbeat interval: seconds as an integer, or text like "300s", "5m", "300".
#[derive(Deserialize)]
#[serde(untagged)]
enum RawInterval {
    Int(u32),
    Text(String),
}

#[derive(Deserialize)]
struct RawSensor {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    dev_addr: Option<RawAddr>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default, alias = "frequency")]
    frequency_hz: Option<u32>,
    #[serde(default, alias = "sf")]
    spreading_factor: Option<u8>,
    #[serde(default, alias = "bandwidth")]
    bandwidth_hz: Option<u32>,
    #[serde(default, alias = "heartbeat", alias = "heartbeat_interval_s")]
    heartbeat_s: Option<RawInterval>,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    sensor: Vec<RawSensor>,
}

/// Defaults of what a file may leave out: EU868 channel 868.1 MHz, SF7/125 kHz (DR5), a
/// heartbeat every 300 s (`gatehouse sensor add`'s defaults).
pub const DEFAULT_FREQUENCY_HZ: u32 = 868_100_000;
pub const DEFAULT_SF: u8 = 7;
pub const DEFAULT_BW_HZ: u32 = 125_000;
pub const DEFAULT_HEARTBEAT_S: u32 = 300;

/// Reads and checks a provisioning file.
pub fn load(path: &Path) -> Result<Vec<SensorSpec>, ProvisioningError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ProvisioningError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

/// Parses a provisioning file's text; `path` is for messages only.
pub fn parse(text: &str, path: &str) -> Result<Vec<SensorSpec>, ProvisioningError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| ProvisioningError::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if raw.sensor.is_empty() {
        return Err(ProvisioningError::Empty {
            path: path.to_owned(),
        });
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::with_capacity(raw.sensor.len());
    for (i, r) in raw.sensor.into_iter().enumerate() {
        let index = i + 1;
        let name = r.name.clone().unwrap_or_default();
        let err = |message: String| ProvisioningError::Sensor {
            path: path.to_owned(),
            index,
            name: if name.is_empty() {
                "no name".to_owned()
            } else {
                name.clone()
            },
            message,
        };
        if name.is_empty() {
            return Err(err("`name` is missing".into()));
        }
        let kind = match r.kind.as_deref() {
            None => return Err(err("`kind` is missing (door, pir, smoke or temp)".into())),
            Some(k) => SensorKind::parse(k)
                .ok_or_else(|| err(format!("`kind` {k:?} is not one of door, pir, smoke, temp")))?,
        };
        let dev_addr = match r.dev_addr {
            None => return Err(err("`dev_addr` is missing".into())),
            Some(RawAddr::Int(n)) => n,
            Some(RawAddr::Text(t)) => parse_addr(&t).ok_or_else(|| {
                err(format!(
                    "`dev_addr` {t:?} is not 8 hex digits (as `gatehouse sensor add` prints it)"
                ))
            })?,
        };
        let key = match r.key.as_deref() {
            None => return Err(err("`key` is missing".into())),
            Some(k) => parse_key(k).ok_or_else(|| {
                err(
                    "`key` must be 32 hex digits (16 bytes, as printed by `gatehouse sensor \
                     add`)"
                        .into(),
                )
            })?,
        };
        let spreading_factor = r.spreading_factor.unwrap_or(DEFAULT_SF);
        if !(7..=12).contains(&spreading_factor) {
            return Err(err(format!(
                "`spreading_factor` {spreading_factor} is outside 7..=12"
            )));
        }
        let bandwidth_hz = r.bandwidth_hz.unwrap_or(DEFAULT_BW_HZ);
        if ![125_000, 250_000, 500_000].contains(&bandwidth_hz) {
            return Err(err(format!(
                "`bandwidth_hz` {bandwidth_hz} is not 125000, 250000 or 500000"
            )));
        }
        let heartbeat_s = match r.heartbeat_s {
            None => DEFAULT_HEARTBEAT_S,
            Some(RawInterval::Int(n)) => n,
            Some(RawInterval::Text(t)) => parse_interval(&t).ok_or_else(|| {
                err(format!(
                    "`heartbeat_s` {t:?} is not a number of seconds (like 300 or \"5m\")"
                ))
            })?,
        };
        if heartbeat_s == 0 {
            return Err(err("`heartbeat_s` must be at least 1".into()));
        }
        if !names.insert(name.clone()) {
            return Err(err("the name is used twice".into()));
        }
        if !addrs.insert(dev_addr) {
            return Err(err(format!("dev_addr {dev_addr:08x} is used twice")));
        }
        out.push(SensorSpec {
            name,
            kind,
            dev_addr,
            key,
            frequency_hz: r.frequency_hz.unwrap_or(DEFAULT_FREQUENCY_HZ),
            spreading_factor,
            bandwidth_hz,
            heartbeat_s,
        });
    }
    Ok(out)
}

fn parse_addr(t: &str) -> Option<u32> {
    let t = t.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() || t.len() > 8 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(t, 16).ok()
}

fn parse_key(t: &str) -> Option<[u8; 16]> {
    let t = t.trim();
    if t.len() != 32 || !t.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

fn parse_interval(t: &str) -> Option<u32> {
    let t = t.trim();
    let (num, mul) = if let Some(n) = t.strip_suffix('s') {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600)
    } else {
        (t, 1)
    };
    num.trim().parse::<u32>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f";

    fn one(extra: &str) -> String {
        format!("[[sensor]]\nname = \"d1\"\nkind = \"door\"\ndev_addr = \"0x26011f2a\"\nkey = \"{KEY}\"\n{extra}")
    }

    #[test]
    fn reads_what_sensor_add_prints_with_defaults() {
        let s = parse(&one("heartbeat_s = 30\n"), "p.toml").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].dev_addr, 0x2601_1f2a);
        assert_eq!(s[0].key[15], 0x0f);
        assert_eq!(s[0].kind, SensorKind::Door);
        assert_eq!(s[0].frequency_hz, DEFAULT_FREQUENCY_HZ);
        assert_eq!(s[0].spreading_factor, 7);
        assert_eq!(s[0].heartbeat_s, 30);
        let s = parse(&one("heartbeat = \"2m\"\nsf = 9\n"), "p.toml").unwrap();
        assert_eq!((s[0].heartbeat_s, s[0].spreading_factor), (120, 9));
        let s = parse(
            &format!("[[sensor]]\nname = \"x\"\nkind = \"pir\"\ndev_addr = 7\nkey = \"{KEY}\"\n"),
            "p",
        )
        .unwrap();
        assert_eq!(s[0].dev_addr, 7);
        assert!(!format!("{:?}", s[0]).contains("0102"), "key in Debug");
    }

    #[test]
    fn errors_name_the_sensor_and_field() {
        let e = |text: &str| parse(text, "p.toml").unwrap_err().to_string();
        assert!(e("").contains("no sensors"));
        assert!(e("[[sensor]\n").contains("p.toml"));
        let bad_key = e(&one("").replace(KEY, "abcd"));
        assert!(
            bad_key.contains("d1") && bad_key.contains("`key`"),
            "{bad_key}"
        );
        assert!(e(&one("").replace("door", "lamp")).contains("`kind`"));
        assert!(e(&one("").replace("0x26011f2a", "xyz")).contains("`dev_addr`"));
        assert!(e(&one("sf = 13\n")).contains("spreading_factor"));
        let twice = format!("{}{}", one(""), one("").replace("d1", "d2"));
        assert!(e(&twice).contains("used twice"));
    }
}
