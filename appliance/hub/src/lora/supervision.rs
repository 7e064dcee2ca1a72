//! Supervision of the sensors' heartbeats: which sensors went missing and which are heard
//! again. Sans-IO: the sensors as stored and the time go in, the changes come out; the
//! server ([`super::LoraServer`]) raises the events and records the episodes in the store.
//!
//! A sensor is missing once it has been silent for [`MissingWatch::limit`]: `after`
//! heartbeat intervals (3 by default) plus a grace (for the forwarder's and the hub's
//! own delays). Only an enabled sensor is supervised. Its silence is counted from its
//! last frame, or, if it has not been heard since, from when it was provisioned or last
//! enabled again ([`SensorRecord::enabled_since`], kept in the store): a sensor added
//! but never heard (wrong key flashed, out of range, flat battery) goes missing too, and
//! says so ([`Silence`]). Enabling a disabled sensor starts its clock again. Every time
//! involved is stored, so a restart of the hub neither restarts a clock nor opens a
//! second episode.
//!
//! An episode is open while the store's `missing_since` is set (so it survives
//! restarts); it is named by the moment its silence began ([`missing_external_id`]) and
//! ends when the sensor is heard (`last_seen` after the episode's start, the first frame
//! of a sensor never heard included), is disabled (or disabled and enabled again), or is
//! removed.

use gatehouse_store::sensors::{SensorId, SensorRecord};
use std::collections::HashMap;
use std::time::Duration;
use time::OffsetDateTime;

/// Heartbeat intervals of silence before a sensor is missing.
pub const MISSING_AFTER: u32 = 3;
/// Added to the silence limit.
pub const MISSING_GRACE: Duration = Duration::from_secs(2);

/// What a missing sensor's silence is counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// It was heard: silent since its last frame.
    SinceLastHeard,
    /// Never heard since it was provisioned.
    NeverHeard,
    /// Not heard since it was enabled again; `last_heard` before that, if ever.
    SinceEnabled { last_heard: Option<OffsetDateTime> },
}

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Heard at this time (its last frame when the check ran).
    Heard(OffsetDateTime),
    Disabled,
    /// Disabled and enabled again since the episode began: its clock starts over.
    EnabledAgain,
    /// Removed from the registry (nothing to record in the store).
    Removed,
}

/// A sensor went missing or came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingChange {
    Missing {
        id: SensorId,
        name: String,
        /// When its silence began: names the episode.
        since: OffsetDateTime,
        silence: Silence,
        limit: Duration,
    },
    /// Heard, disabled or removed.
    Back {
        id: SensorId,
        name: String,
        since: OffsetDateTime,
        why: Ended,
    },
}

/// The episode name (external id) of a sensor missing since `since`.
pub fn missing_external_id(since: OffsetDateTime) -> String {
    format!("missing:{}", since.unix_timestamp_nanos() / 1_000_000)
}

/// When the silence of an enabled sensor began, and which kind of silence it is.
pub fn silent_since(s: &SensorRecord) -> (OffsetDateTime, Silence) {
    match s.last_seen {
        Some(seen) if seen >= s.enabled_since => (seen, Silence::SinceLastHeard),
        None if s.enabled_since <= s.created => (s.enabled_since, Silence::NeverHeard),
        last_heard => (s.enabled_since, Silence::SinceEnabled { last_heard }),
    }
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
                    if !s.enabled {
                        continue;
                    }
                    let limit = self.limit(s.heartbeat_s);
                    let (since, silence) = silent_since(s);
                    if now - since >= limit {
                        changes.push(MissingChange::Missing {
                            id: s.id,
                            name: s.name.clone(),
                            since,
                            silence,
                            limit,
                        });
                    }
                }
                Some(since) => {
                    let why = match s.last_seen {
                        Some(seen) if seen > since => Some(Ended::Heard(seen)),
                        _ if !s.enabled => Some(Ended::Disabled),
                        _ if s.enabled_since > since => Some(Ended::EnabledAgain),
                        _ => None,
                    };
                    match why {
                        Some(why) => changes.push(MissingChange::Back {
                            id: s.id,
                            name: s.name.clone(),
                            since,
                            why,
                        }),
                        None => {
                            open.insert(s.id, (s.name.clone(), since));
                        }
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
                    why: Ended::Removed,
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
            enabled_since: t(0),
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

    /// A sensor provisioned at `created` and never heard.
    fn provisioned(id: SensorId, created: i64) -> SensorRecord {
        SensorRecord {
            created: t(created),
            enabled_since: t(created),
            ..sensor(id, None, None)
        }
    }

    fn missing(s: &SensorRecord, since: i64, silence: Silence) -> MissingChange {
        MissingChange::Missing {
            id: s.id,
            name: s.name.clone(),
            since: t(since),
            silence,
            limit: Duration::from_secs(182),
        }
    }

    #[test]
    fn silent_for_three_intervals_and_the_grace_is_missing() {
        let mut w = MissingWatch::default();
        assert_eq!(w.limit(60), Duration::from_secs(182));
        // Provisioned a second after the other was last heard: missing a second later.
        let never_heard = provisioned(1, 101);
        let quiet = sensor(2, Some(100), None);
        let mut disabled = sensor(3, Some(0), None);
        disabled.enabled = false;
        let all = [never_heard.clone(), quiet.clone(), disabled];
        assert_eq!(w.check(&all, t(281)), []);
        assert_eq!(
            w.check(&all, t(282)),
            [missing(&quiet, 100, Silence::SinceLastHeard)]
        );
        assert_eq!(
            w.check(&all, t(283)),
            [
                missing(&never_heard, 101, Silence::NeverHeard),
                missing(&quiet, 100, Silence::SinceLastHeard)
            ]
        );
    }

    #[test]
    fn a_sensor_never_heard_is_missing_from_when_it_was_provisioned() {
        // Provisioned at 1000, the hub (a fresh watch: as after a restart) first looks
        // at 1100, then later: the clock runs from the provisioning, not from the look.
        let s = provisioned(1, 1000);
        let mut w = MissingWatch::default();
        assert_eq!(w.check(std::slice::from_ref(&s), t(1100)), []);
        assert_eq!(w.check(std::slice::from_ref(&s), t(1181)), []);
        let raised = w.check(std::slice::from_ref(&s), t(1182));
        assert_eq!(raised, [missing(&s, 1000, Silence::NeverHeard)]);
        // Long after, a fresh watch (the hub restarted before it could record the
        // episode) raises the same episode: same name, hence one event.
        let mut after_restart = MissingWatch::default();
        assert_eq!(
            after_restart.check(std::slice::from_ref(&s), t(50_000)),
            raised
        );
        // Recorded: nothing more, before or after a restart.
        let open = SensorRecord {
            missing_since: Some(t(1000)),
            ..s
        };
        assert_eq!(w.check(std::slice::from_ref(&open), t(1183)), []);
        assert_eq!(
            MissingWatch::default().check(std::slice::from_ref(&open), t(90_000)),
            []
        );
    }

    #[test]
    fn a_disabled_sensor_is_not_supervised_and_enabling_restarts_its_clock() {
        let mut w = MissingWatch::default();
        let mut s = provisioned(1, 0);
        s.enabled = false;
        assert_eq!(w.check(std::slice::from_ref(&s), t(10_000)), []);
        // Enabled again at 9000, never heard: missing 182 s after that.
        s.enabled = true;
        s.enabled_since = t(9_000);
        assert_eq!(w.check(std::slice::from_ref(&s), t(9_181)), []);
        assert_eq!(
            w.check(std::slice::from_ref(&s), t(9_182)),
            [missing(
                &s,
                9_000,
                Silence::SinceEnabled { last_heard: None }
            )]
        );
        // One heard long ago and enabled again: counted from the enabling too.
        let mut heard = sensor(2, Some(100), None);
        heard.enabled_since = t(9_000);
        assert_eq!(w.check(std::slice::from_ref(&heard), t(9_181)), []);
        assert_eq!(
            w.check(std::slice::from_ref(&heard), t(9_182)),
            [missing(
                &heard,
                9_000,
                Silence::SinceEnabled {
                    last_heard: Some(t(100))
                }
            )]
        );
        // An episode open from before the sensor was disabled and enabled again ends
        // (the next check counts from the enabling).
        let again = SensorRecord {
            missing_since: Some(t(0)),
            ..s.clone()
        };
        assert_eq!(
            w.check(std::slice::from_ref(&again), t(9_001)),
            [MissingChange::Back {
                id: 1,
                name: "s1".into(),
                since: t(0),
                why: Ended::EnabledAgain
            }]
        );
    }

    #[test]
    fn the_first_frame_of_a_sensor_never_heard_ends_its_episode() {
        let mut w = MissingWatch::default();
        let mut s = provisioned(1, 1000);
        s.missing_since = Some(t(1000));
        assert_eq!(w.check(std::slice::from_ref(&s), t(2000)), []);
        s.last_seen = Some(t(2500));
        assert_eq!(
            w.check(std::slice::from_ref(&s), t(2501)),
            [MissingChange::Back {
                id: 1,
                name: "s1".into(),
                since: t(1000),
                why: Ended::Heard(t(2500))
            }]
        );
        // Closed in the store: supervised from that frame on, as any heard sensor.
        s.missing_since = None;
        assert_eq!(w.check(std::slice::from_ref(&s), t(2681)), []);
        assert_eq!(
            w.check(std::slice::from_ref(&s), t(2682)),
            [missing(&s, 2500, Silence::SinceLastHeard)]
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
            why: Ended::Heard(t(9_000))
        }));
        assert!(changes.contains(&MissingChange::Back {
            id: 2,
            name: "s2".into(),
            since: t(50),
            why: Ended::Removed
        }));
        let mut off = sensor(3, Some(100), Some(100));
        off.enabled = false;
        assert_eq!(
            w.check(&[off], t(10_002)),
            [MissingChange::Back {
                id: 3,
                name: "s3".into(),
                since: t(100),
                why: Ended::Disabled
            }]
        );
        assert_eq!(missing_external_id(t(1)), "missing:1800000001000");
    }
}
