//! The state file: what a board keeps in flash across reboots, so that runs follow each
//! other as a real gate's days do: each gate's last sequence number (the hub refuses a
//! number it has seen as a replay), the highest hub command number it accepted (so a
//! recorded remote open is refused after a restart too) and its allow-list (version and entries, so a gate that
//! boots while the hub is unreachable still decides from the list it last synced).
//!
//! JSON, one record per gate id:
//!
//! ```json
//! {"7": {"seq": 120, "command_seq": 3, "allow_list_version": 42, "allow_list": ["<32 hex digits>", ...]}}
//! ```
//!
//! A bare number (`{"7": 120}`, the earlier form) is a sequence number with no list. A
//! missing file is an empty state.

use crate::args::ConfigError;
use crate::gates_file::parse_hex;
use gatehouse_gate_proto::EntryHash;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What one gate keeps across runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateState {
    pub seq: u32,
    /// The highest hub command number accepted (0: none).
    pub command_seq: u32,
    pub allow_list_version: u32,
    pub allow_list: Vec<EntryHash>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Record {
    Seq(u32),
    Full {
        seq: u32,
        #[serde(default)]
        command_seq: u32,
        #[serde(default)]
        allow_list_version: u32,
        #[serde(default)]
        allow_list: Vec<String>,
    },
}

pub fn load(path: &Path) -> Result<BTreeMap<u32, GateState>, ConfigError> {
    let err = |message: String| ConfigError::State {
        path: path.display().to_string(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let records: BTreeMap<u32, Record> = serde_json::from_str(&text).map_err(|e| {
        err(format!(
            "{e} (expected {{\"<gate id>\": {{\"seq\": N, \"allow_list_version\": V, \
             \"allow_list\": [\"<32 hex digits>\", ...]}}}})"
        ))
    })?;
    records
        .into_iter()
        .map(|(id, r)| {
            let state = match r {
                Record::Seq(seq) => GateState {
                    seq,
                    ..GateState::default()
                },
                Record::Full {
                    seq,
                    command_seq,
                    allow_list_version,
                    allow_list,
                } => {
                    let entries = allow_list
                        .iter()
                        .map(|h| {
                            let bytes = parse_hex(h)?;
                            let e: [u8; EntryHash::LEN] = bytes.try_into().map_err(|_| {
                                format!("allow-list entry {h:?} is not {} bytes", EntryHash::LEN)
                            })?;
                            Ok(EntryHash(e))
                        })
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(|m| err(format!("gate {id}: {m}")))?;
                    GateState {
                        seq,
                        command_seq,
                        allow_list_version,
                        allow_list: entries,
                    }
                }
            };
            Ok((id, state))
        })
        .collect()
}

/// Writes the state atomically (a temporary file renamed over the old one).
pub fn save(path: &Path, gates: &BTreeMap<u32, GateState>) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::State {
        path: path.display().to_string(),
        message,
    };
    let records: BTreeMap<u32, Record> = gates
        .iter()
        .map(|(id, g)| {
            let hex = |e: &EntryHash| e.0.iter().map(|b| format!("{b:02x}")).collect();
            (
                *id,
                Record::Full {
                    seq: g.seq,
                    command_seq: g.command_seq,
                    allow_list_version: g.allow_list_version,
                    allow_list: g.allow_list.iter().map(hex).collect(),
                },
            )
        })
        .collect();
    let text = serde_json::to_string_pretty(&records).map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert!(load(&p).unwrap().is_empty());
        let s = BTreeMap::from([
            (
                1,
                GateState {
                    seq: 50,
                    command_seq: 4,
                    allow_list_version: 9,
                    allow_list: vec![EntryHash([0xab; 16]), EntryHash([0x01; 16])],
                },
            ),
            (2, GateState::default()),
        ]);
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), s);
        std::fs::write(&p, "nope").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("state file") && e.contains("expected"), "{e}");
    }

    #[test]
    fn bare_numbers_are_sequence_numbers_and_bad_entries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, r#"{"1": 50, "2": {"seq": 7}}"#).unwrap();
        let s = load(&p).unwrap();
        assert_eq!(s[&1].seq, 50);
        assert_eq!(s[&2].seq, 7);
        assert!(s[&1].allow_list.is_empty() && s[&2].allow_list.is_empty());
        std::fs::write(&p, r#"{"3": {"seq": 1, "allow_list": ["abcd"]}}"#).unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("gate 3") && e.contains("16 bytes"), "{e}");
    }
}
