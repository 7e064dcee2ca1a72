//! The access model: a snapshot of the database's access tables as they are (names
//! included), keyed by id, to edit, check ([`Snapshot::validate`]) and display. The engine
//! decides from its compact form, [`DecisionSnapshot`](crate::DecisionSnapshot). Cards
//! appear only as keyed hashes ([`CardHash`]); the raw card id never reaches this crate.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::{Date, OffsetDateTime, Weekday};

pub type PersonId = i64;
pub type GateId = i64;
pub type LevelId = i64;
pub type ZoneId = i64;
pub type CardId = i64;

/// HMAC-SHA-256 of the raw card id (acc_id) under the site key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CardHash(pub [u8; 32]);

/// A validity window; either end open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Validity {
    #[serde(with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: PersonId,
    pub name: String,
    pub enabled: bool,
    pub validity: Validity,
    /// Access levels granted to this person.
    pub levels: Vec<LevelId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub id: CardId,
    pub hash: CardHash,
    pub person: PersonId,
    pub enabled: bool,
    pub validity: Validity,
    /// Opens every enabled gate at any time (still subject to enabled/validity).
    pub master: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub id: GateId,
    pub name: String,
    pub zone: ZoneId,
    pub direction: Direction,
    pub enabled: bool,
    /// How long the relay holds the door open on a grant, in milliseconds.
    pub relay_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    pub id: ZoneId,
    pub name: String,
    /// Refuse a second entry without an exit in between (and an exit without an entry).
    pub anti_passback: bool,
}

/// A time window within one day, in minutes since local midnight: `start <= t < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: u16,
    pub end: u16,
}

/// What a level allows on a holiday.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolidayRule {
    /// Closed all day.
    Closed,
    /// The usual weekday windows apply.
    Ignore,
    /// These windows instead of the weekday's.
    Windows(Vec<Window>),
}

/// A weekly schedule: windows per weekday (index 0 = Monday), and the holiday rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub weekly: [Vec<Window>; 7],
    pub holidays: HolidayRule,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub id: LevelId,
    pub name: String,
    pub gates: Vec<GateId>,
    pub schedule: Schedule,
}

/// The access data, in full. The engine decides from the
/// [`DecisionSnapshot`](crate::DecisionSnapshot) made from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub people: HashMap<PersonId, Person>,
    pub cards: HashMap<CardHash, Card>,
    pub gates: HashMap<GateId, Gate>,
    pub zones: HashMap<ZoneId, Zone>,
    pub levels: HashMap<LevelId, Level>,
    /// Site holidays (local dates).
    pub holidays: Vec<Date>,
}

/// Minutes in a day: the largest allowed [`Window::end`].
pub const MINUTES_PER_DAY: u16 = 24 * 60;

impl Window {
    /// Whether `minute` (since local midnight) falls in the window: `start <= minute < end`.
    pub fn contains(&self, minute: u16) -> bool {
        self.start <= minute && minute < self.end
    }
}

impl Schedule {
    /// The windows that apply on a local day: the weekday's, unless the day is a holiday
    /// and the [`HolidayRule`] says otherwise (`Closed`: none; `Windows`: those instead).
    pub fn windows_on(&self, weekday: Weekday, holiday: bool) -> &[Window] {
        let weekly = self
            .weekly
            .get(usize::from(weekday.number_days_from_monday()))
            .map_or(&[][..], Vec::as_slice);
        match (&self.holidays, holiday) {
            (_, false) | (HolidayRule::Ignore, true) => weekly,
            (HolidayRule::Closed, true) => &[],
            (HolidayRule::Windows(windows), true) => windows,
        }
    }
}

impl Validity {
    /// `t` is before `from` (`from` is inclusive: valid from that instant on).
    pub fn not_yet_valid_at(&self, t: OffsetDateTime) -> bool {
        self.from.is_some_and(|from| t < from)
    }

    /// `t` is at or after `until` (`until` is exclusive: no longer valid at that instant).
    pub fn expired_at(&self, t: OffsetDateTime) -> bool {
        self.until.is_some_and(|until| t >= until)
    }
}

/// Why a [`Snapshot`] is inconsistent. The engine never panics on any of these (a dangling
/// reference decides as a deny), but the store should refuse to load or save such data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("{}{day} window {start}..{end} is empty (start must be before end)", in_level(*level))]
    EmptyWindow {
        /// None for a schedule checked before its level exists.
        level: Option<LevelId>,
        /// `"monday"` .. `"sunday"`, or `"holiday"`.
        day: &'static str,
        start: u16,
        end: u16,
    },
    #[error("{}{day} window ends at minute {end}, after midnight ({MINUTES_PER_DAY}); split overnight windows in two", in_level(*level))]
    WindowPastMidnight {
        level: Option<LevelId>,
        day: &'static str,
        end: u16,
    },
    #[error("level {level} names unknown gate {gate}")]
    LevelUnknownGate { level: LevelId, gate: GateId },
    #[error("card {card} names unknown person {person}")]
    CardUnknownPerson { card: CardId, person: PersonId },
    #[error("gate {gate} names unknown zone {zone}")]
    GateUnknownZone { gate: GateId, zone: ZoneId },
    #[error("person {person} names unknown level {level}")]
    PersonUnknownLevel { person: PersonId, level: LevelId },
    /// A map entry whose key differs from the id (or hash) inside the value.
    #[error("{table}: entry keyed {key} holds id {id}")]
    KeyMismatch {
        table: &'static str,
        key: String,
        id: String,
    },
}

fn in_level(level: Option<LevelId>) -> String {
    level.map(|l| format!("level {l}: ")).unwrap_or_default()
}

/// Weekday names in [`Schedule::weekly`] order (index 0 = Monday), as errors and the CLI
/// spell them.
pub const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn sorted<K: Ord + Copy, V>(map: &HashMap<K, V>) -> Vec<(K, &V)> {
    let mut entries: Vec<(K, &V)> = map.iter().map(|(k, v)| (*k, v)).collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    entries
}

fn check_windows(
    level: Option<LevelId>,
    day: &'static str,
    windows: &[Window],
) -> Result<(), ModelError> {
    for w in windows {
        if w.start >= w.end {
            return Err(ModelError::EmptyWindow {
                level,
                day,
                start: w.start,
                end: w.end,
            });
        }
        if w.end > MINUTES_PER_DAY {
            return Err(ModelError::WindowPastMidnight {
                level,
                day,
                end: w.end,
            });
        }
    }
    Ok(())
}

fn check_key<K: PartialEq + std::fmt::Debug>(
    table: &'static str,
    key: &K,
    id: &K,
) -> Result<(), ModelError> {
    if key == id {
        Ok(())
    } else {
        Err(ModelError::KeyMismatch {
            table,
            key: format!("{key:?}"),
            id: format!("{id:?}"),
        })
    }
}

impl Schedule {
    /// Checks every window is non-empty and within one day (`start < end <= 1440`; an
    /// overnight shift is two windows). `level` names the level in the error, if it has one.
    /// The one definition of a valid schedule: the store checks with it before saving.
    pub fn validate(&self, level: Option<LevelId>) -> Result<(), ModelError> {
        for (day, windows) in DAY_NAMES.iter().zip(&self.weekly) {
            check_windows(level, day, windows)?;
        }
        if let HolidayRule::Windows(windows) = &self.holidays {
            check_windows(level, "holiday", windows)?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// Checks the snapshot is consistent: every map keyed by its values' ids, every window
    /// non-empty and within one day (`start < end <= 1440`; an overnight shift is two
    /// windows), and no dangling reference (card -> person, person -> level,
    /// level -> gate, gate -> zone). Entries are checked in id order, so the error
    /// reported for a given snapshot is deterministic.
    pub fn validate(&self) -> Result<(), ModelError> {
        for (key, person) in sorted(&self.people) {
            check_key("people", &key, &person.id)?;
            if let Some(level) = person.levels.iter().find(|l| !self.levels.contains_key(l)) {
                return Err(ModelError::PersonUnknownLevel {
                    person: key,
                    level: *level,
                });
            }
        }
        for (key, card) in sorted(&self.cards) {
            check_key("cards", &key, &card.hash)?;
            if !self.people.contains_key(&card.person) {
                return Err(ModelError::CardUnknownPerson {
                    card: card.id,
                    person: card.person,
                });
            }
        }
        for (key, gate) in sorted(&self.gates) {
            check_key("gates", &key, &gate.id)?;
            if !self.zones.contains_key(&gate.zone) {
                return Err(ModelError::GateUnknownZone {
                    gate: key,
                    zone: gate.zone,
                });
            }
        }
        for (key, zone) in sorted(&self.zones) {
            check_key("zones", &key, &zone.id)?;
        }
        for (key, level) in sorted(&self.levels) {
            check_key("levels", &key, &level.id)?;
            if let Some(gate) = level.gates.iter().find(|g| !self.gates.contains_key(g)) {
                return Err(ModelError::LevelUnknownGate {
                    level: key,
                    gate: *gate,
                });
            }
            level.schedule.validate(Some(key))?;
        }
        Ok(())
    }

    /// Whether `date` (a local date) is a site holiday.
    pub fn is_holiday(&self, date: Date) -> bool {
        self.holidays.contains(&date)
    }
}
