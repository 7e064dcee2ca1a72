//! The state file: each gate's last sequence number, as a board keeps it in flash, so that
//! runs follow each other without the hub refusing their numbers as replays. JSON
//! `{"<gate_id>": <seq>, ...}`; a missing file is an empty state.

use crate::args::ConfigError;
use std::collections::BTreeMap;
use std::path::Path;

pub fn load(path: &Path) -> Result<BTreeMap<u32, u32>, ConfigError> {
    let err = |message: String| ConfigError::State {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| err(format!("{e} (expected {{\"<gate id>\": <last seq>}})"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes the state atomically (a temporary file renamed over the old one).
pub fn save(path: &Path, seqs: &BTreeMap<u32, u32>) -> Result<(), ConfigError> {
    let err = |message: String| ConfigError::State {
        path: path.display().to_string(),
        message,
    };
    let text = serde_json::to_string_pretty(seqs).map_err(|e| err(e.to_string()))?;
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
        let s = BTreeMap::from([(1, 50), (2, 7)]);
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), s);
        std::fs::write(&p, "nope").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("state file") && e.contains("expected"), "{e}");
    }
}
