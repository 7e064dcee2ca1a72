//! The gates file: which gates to simulate and their credentials, as printed by
//! `gatehouse gate add`. TOML or JSON, chosen by the file's extension (`.json` is JSON,
//! anything else TOML):
//!
//! ```toml
//! [[gate]]
//! id = 1
//! secret = "<64 hex digits: the gate's key>"
//! card_key = "<64 hex digits>"         # optional: SiteKey::card_key() on the hub
//! allow_list_key = "<64 hex digits>"   # optional: SiteKey::gate_key(id) on the hub
//! mqtt_username = "gate-front-door"    # optional (default "gate-<name>", or "gate-<id>")
//! mqtt_password = "..."                # optional (default: --mqtt-password)
//! name = "front-door"                  # optional, for the default MQTT user
//! ```
//!
//! JSON is the same records, either `{"gate": [...]}` or a bare array. Ids must be unique
//! and non-zero; a key must be exactly 32 bytes. `gatehouse gate add` prints the record
//! with every key. Without `card_key` and `allow_list_key` the gate's allow-list entries
//! can never match, so every offline decision is a deny.

use gatehouse_gate_proto::{GateKey, KEY_LEN};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

/// What is wrong with a gates file. Each names the gate (by position and id) and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatesFileError {
    #[error("cannot read the gates file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("gates file {path}: {message}")]
    Syntax { path: String, message: String },
    #[error("gates file {path} lists no gates (add [[gate]] records with id and secret)")]
    Empty { path: String },
    #[error("gates file {path}: gate #{index} (id {id}): {message}")]
    Gate {
        path: String,
        index: usize,
        id: u32,
        message: String,
    },
}

/// One simulated gate's identity and credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct GateSpec {
    pub id: u32,
    pub name: Option<String>,
    pub key: GateKey,
    /// The site's card key (all zeros when not given).
    pub card_key: [u8; KEY_LEN],
    /// The gate's allow-list key (all zeros when not given).
    pub allow_list_key: [u8; KEY_LEN],
    pub mqtt_username: String,
    pub mqtt_password: Option<String>,
}

/// Keys stay out of logs.
impl std::fmt::Debug for GateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateSpec")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("mqtt_username", &self.mqtt_username)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    id: u32,
    secret: String,
    #[serde(default)]
    card_key: Option<String>,
    #[serde(default)]
    allow_list_key: Option<String>,
    #[serde(default)]
    mqtt_username: Option<String>,
    #[serde(default)]
    mqtt_password: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    gate: Vec<RawGate>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawJson {
    List(Vec<RawGate>),
    File(RawFile),
}

/// Reads and checks a gates file.
pub fn load(path: &Path) -> Result<Vec<GateSpec>, GatesFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| GatesFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let json = path.extension().is_some_and(|e| e == "json");
    parse(&text, json, &shown)
}

/// Parses a gates file's text (`json`: JSON, else TOML); `path` is for messages only.
pub fn parse(text: &str, json: bool, path: &str) -> Result<Vec<GateSpec>, GatesFileError> {
    let syntax = |message: String| GatesFileError::Syntax {
        path: path.to_owned(),
        message,
    };
    let raw = if json {
        match serde_json::from_str::<RawJson>(text) {
            Ok(RawJson::List(g)) => g,
            Ok(RawJson::File(f)) => f.gate,
            Err(e) => {
                return Err(syntax(format!(
                    "{e} (expected {{\"gate\": [{{\"id\": 1, \"secret\": \"<hex>\"}}]}} or a bare array)"
                )))
            }
        }
    } else {
        toml::from_str::<RawFile>(text)
            .map_err(|e| syntax(e.to_string()))?
            .gate
    };
    if raw.is_empty() {
        return Err(GatesFileError::Empty {
            path: path.to_owned(),
        });
    }
    let mut seen = HashSet::new();
    let mut gates = Vec::with_capacity(raw.len());
    for (i, g) in raw.into_iter().enumerate() {
        let bad = |message: String| GatesFileError::Gate {
            path: path.to_owned(),
            index: i + 1,
            id: g.id,
            message,
        };
        if g.id == 0 {
            return Err(bad("id must be 1 or more".into()));
        }
        if !seen.insert(g.id) {
            return Err(bad("id listed twice".into()));
        }
        let key = parse_key(&g.secret).map_err(|m| bad(format!("secret: {m}")))?;
        let card_key = match &g.card_key {
            Some(k) => parse_key(k).map_err(|m| bad(format!("card_key: {m}")))?,
            None => [0; KEY_LEN],
        };
        let allow_list_key = match &g.allow_list_key {
            Some(k) => parse_key(k).map_err(|m| bad(format!("allow_list_key: {m}")))?,
            None => [0; KEY_LEN],
        };
        let mqtt_username = g.mqtt_username.clone().unwrap_or_else(|| match &g.name {
            Some(n) => format!("gate-{n}"),
            None => format!("gate-{}", g.id),
        });
        gates.push(GateSpec {
            id: g.id,
            name: g.name.clone(),
            key,
            card_key,
            allow_list_key,
            mqtt_username,
            mqtt_password: g.mqtt_password.clone(),
        });
    }
    Ok(gates)
}

/// A 32-byte key as 64 hex digits.
pub fn parse_key(hex: &str) -> Result<[u8; KEY_LEN], String> {
    let bytes = parse_hex(hex.trim())?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("must be {KEY_LEN} bytes (64 hex digits), got {}", b.len()))
}

/// Hex digits, two per byte, with an optional `0x` and `:` separators.
pub fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = hex
        .strip_prefix("0x")
        .or_else(|| hex.strip_prefix("0X"))
        .unwrap_or(hex)
        .bytes()
        .filter(|b| *b != b':')
        .collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err(format!("{hex:?} is not an even number of hex digits"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| format!("{hex:?} is not hex"))?;
            u8::from_str_radix(s, 16).map_err(|_| format!("{hex:?} is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn toml_with_defaults() {
        let text = format!(
            "[[gate]]\nid = 3\nsecret = \"{K}\"\nname = \"front\"\n\n[[gate]]\nid = 4\nsecret = \"{K}\"\n\
             card_key = \"{C}\"\nallow_list_key = \"{K}\"\nmqtt_username = \"u4\"\nmqtt_password = \"p4\"\n"
        );
        let g = parse(&text, false, "g.toml").unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].id, 3);
        assert_eq!(g[0].key[31], 0x1f);
        assert_eq!(g[0].allow_list_key, [0; 32]);
        assert_eq!(g[0].card_key, [0; 32]);
        assert_eq!(g[0].mqtt_username, "gate-front");
        assert_eq!(g[0].mqtt_password, None);
        assert_eq!(g[1].allow_list_key[1], 1);
        assert_eq!(g[1].card_key, [0xcc; 32]);
        assert_eq!(g[1].mqtt_username, "u4");
        assert_eq!(g[1].mqtt_password.as_deref(), Some("p4"));
        assert!(
            !format!("{:?}", g[0]).contains("0102"),
            "keys stay out of Debug"
        );
    }

    #[test]
    fn json_object_or_array() {
        let a = format!("[{{\"id\": 7, \"secret\": \"{K}\"}}]");
        let o = format!("{{\"gate\": [{{\"id\": 7, \"secret\": \"{K}\"}}]}}");
        let ga = parse(&a, true, "g.json").unwrap();
        let go = parse(&o, true, "g.json").unwrap();
        assert_eq!(ga, go);
        assert_eq!(ga[0].mqtt_username, "gate-7");
    }

    #[test]
    fn errors_name_the_gate_and_field() {
        let cases = [
            (
                "[[gate]]\nid = 1\nsecret = \"abcd\"\n".to_owned(),
                "gate #1 (id 1): secret: must be 32 bytes",
            ),
            (
                format!("[[gate]]\nid = 0\nsecret = \"{K}\"\n"),
                "id must be 1 or more",
            ),
            (
                format!("[[gate]]\nid = 2\nsecret = \"{K}\"\n[[gate]]\nid = 2\nsecret = \"{K}\"\n"),
                "gate #2 (id 2): id listed twice",
            ),
            (
                format!("[[gate]]\nid = 2\nsecret = \"zz{}\"\n", &K[2..]),
                "is not hex",
            ),
            (
                format!("[[gate]]\nid = 2\nsecret = \"{K}\"\ncard_key = \"abcd\"\n"),
                "gate #1 (id 2): card_key: must be 32 bytes",
            ),
            (
                format!("[[gate]]\nid = 2\nsecret = \"{K}\"\ncolour = 1\n"),
                "unknown field",
            ),
            ("[[gate]]\nid = 2\n".to_owned(), "missing field `secret`"),
            (String::new(), "lists no gates"),
        ];
        for (text, want) in cases {
            let e = parse(&text, false, "g.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: wanted {want:?} in {e:?}");
            assert!(e.contains("g.toml"), "{e}");
        }
    }

    #[test]
    fn hex_forms() {
        assert_eq!(parse_hex("0x04A1").unwrap(), vec![4, 0xa1]);
        assert_eq!(parse_hex("04:a1:ff").unwrap(), vec![4, 0xa1, 0xff]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("").is_err());
    }

    #[test]
    fn load_reads_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gates.json");
        std::fs::write(&p, format!("[{{\"id\": 9, \"secret\": \"{K}\"}}]")).unwrap();
        assert_eq!(load(&p).unwrap()[0].id, 9);
        let e = load(&dir.path().join("nope.toml")).unwrap_err().to_string();
        assert!(e.contains("cannot read the gates file"), "{e}");
    }
}
