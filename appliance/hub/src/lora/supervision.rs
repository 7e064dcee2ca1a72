//! Supervision of the sensors' heartbeats: which sensors went missing and which are heard
//! again. Sans-IO: the sensors as stored and the time go in, the changes come out; the
//! server ([`super::LoraServer`]) raises the events and records the episodes in the store.
//!
//! A sensor is missing once it has been silent for [`MissingWatch::limit`]: `after`
//! heartbeat intervals (3 by default) plus a grace (for the forwarder's and the hub's
//! own delays). Only a sensor heard at least once and enabled is supervised (one not yet
//! installed is not missing). An episode is open while the store's `missing_since` is
//! set (so it survives restarts); it ends when the sensor is heard again (`last_seen`
//! after the episode's start), is disabled, or is removed.

use gatehouse_store::sensors::{SensorId, SensorRecord};
use std::collections::HashMap;
use std::time::Duration;
use time::OffsetDateTime;

/// Heartbeat intervals of silence before a sensor is missing.
pub const MISSING_AFTER: u32 = 3;
/// Added to the silence limit.
pub const MISSING_GRACE: Duration = Duration::from_secs(2);

/// A sensor went missing or came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingChange {
    Missing {
        id: SensorId,
        name: String,
        /// When it was last heard: names the episode.
        since: OffsetDateTime,
        limit: Duration,
    },
    /// Heard again, disabled or removed.
    Back {
        id: SensorId,
        name: String,
        since: OffsetDateTime,
        /// Removed from the registry (nothing to record in the store).
        removed: bool,
    },
}

/// The episode name (external id) of a sensor missing since `since`.
pub fn missing_external_id(since: OffsetDateTime) -> String {
    format!("missing:{}", since.unix_timestamp_nanos() / 1_000_000)
}

/// Finds missing sensors.
#[derive(Debug)]
pub struct MissingWatch {
    after: u32,
    grace: Duration,
    /// Open episodes seen at the last check (id -> name, since), to end those of sensors
    /// removed meanwhile.
    open: HashMap<SensorId, (String, OffsetDateTime)>,
}

impl Default for MissingWatch {
    fn default() -> Self {
        MissingWatch::new(MISSING_AFTER, MISSING_GRACE)
    }
}

impl MissingWatch {
    pub fn new(after: u32, grace: Duration) -> MissingWatch {
        MissingWatch {
            after: after.max(1),
            grace,
            open: HashMap::new(),
        }
    }

    /// How long a sensor with heartbeat interval `heartbeat_s` may be silent.
    pub fn limit(&self, heartbeat_s: u32) -> Duration {
        Duration::from_secs(u64::from(heartbeat_s) * u64::from(self.after)) + self.grace
    }

    /// Compares every sensor's last sighting with `now`.
    pub fn check(&mut self, sensors: &[SensorRecord], now: OffsetDateTime) -> Vec<MissingChange> {
        let mut changes = Vec::new();
        let mut open = HashMap::new();
        for s in sensors {
            match s.missing_since {
                None => {
                    let limit = self.limit(s.heartbeat_s);
                    let silent = s.last_seen.filter(|seen| s.enabled && now - *seen >= limit);
                    if let Some(since) = silent {
                        changes.push(MissingChange::Missing {
                            id: s.id,
                            name: s.name.clone(),
                            since,
                            limit,
                        });
                    }
                }
                Some(since) => {
                    let heard = s.last_seen.is_some_and(|seen| seen > since);
                    if heard || !s.enabled {
                        changes.push(MissingChange::Back {
                            id: s.id,
                            name: s.name.clone(),
                            since,
                            removed: false,
                        });
                    } else {
                        open.insert(s.id, (s.name.clone(), since));
                    }
                }
            }
        }
        for (id, (name, since)) in self.open.drain() {
            if !sensors.iter().any(|s| s.id == id) {
                changes.push(MissingChange::Back {
                    id,
                    name,
                    since,
                    removed: true,
                });
            }
        }
        self.open = open;
        changes
    }

    /// Remembers an episode just opened (so its sensor's removal ends it).
    pub fn opened(&mut self, id: SensorId, name: String, since: OffsetDateTime) {
        self.open.insert(id, (name, since));
    }

    /// Forgets an episode that could not be opened, or was ended.
    pub fn closed(&mut self, id: SensorId) {
        self.open.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use gatehouse_store::sensors::SensorKind;

    fn t(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap()
    }

    fn sensor(id: SensorId, last_seen: Option<i64>, missing: Option<i64>) -> SensorRecord {
        SensorRecord {
            id,
            name: format!("s{id}"),
            kind: SensorKind::Door,
            dev_addr: id as u32,
            enabled: true,
            created: t(0),
            heartbeat_s: 60,
            fcnt_up_last: None,
            fcnt_down: 0,
            uplinks: 0,
            last_seen: last_seen.map(t),
            last_rssi: None,
            last_snr: None,
            battery_mv: None,
            flags: None,
            reboots: None,
            down_rssi: None,
            down_snr: None,
            readings: Vec::new(),
            missing_since: missing.map(t),
        }
    }

    #[test]
    fn silent_for_three_intervals_and_the_grace_is_missing() {
        let mut w = MissingWatch::default();
        assert_eq!(w.limit(60), Duration::from_secs(182));
        let never_heard = sensor(1, None, None);
        let quiet = sensor(2, Some(100), None);
        let mut disabled = sensor(3, Some(0), None);
        disabled.enabled = false;
        let all = [never_heard, quiet, disabled];
        assert_eq!(w.check(&all, t(281)), []);
        assert_eq!(
            w.check(&all, t(282)),
            [MissingChange::Missing {
                id: 2,
                name: "s2".into(),
                since: t(100),
                limit: Duration::from_secs(182)
            }]
        );
    }

    #[test]
    fn an_episode_ends_when_heard_disabled_or_removed() {
        let mut w = MissingWatch::default();
        // Still silent: the open episode stays, nothing new.
        let open = [
            sensor(1, Some(100), Some(100)),
            sensor(2, Some(50), Some(50)),
        ];
        assert_eq!(w.check(&open, t(10_000)), []);
        // Heard again; the other removed.
        let back = [sensor(1, Some(9_000), Some(100))];
        let changes = w.check(&back, t(10_001));
        assert_eq!(changes.len(), 2);
        assert!(changes.contains(&MissingChange::Back {
            id: 1,
            name: "s1".into(),
            since: t(100),
            removed: false
        }));
        assert!(changes.contains(&MissingChange::Back {
            id: 2,
            name: "s2".into(),
            since: t(50),
            removed: true
        }));
        let mut off = sensor(3, Some(100), Some(100));
        off.enabled = false;
        assert!(matches!(
            w.check(&[off], t(10_002))[..],
            [MissingChange::Back { id: 3, .. }]
        ));
        assert_eq!(missing_external_id(t(1)), "missing:1800000001000");
    }
}
