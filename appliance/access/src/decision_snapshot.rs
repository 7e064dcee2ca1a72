//! The snapshot decisions are made from: the access model of a [`Snapshot`] reduced to
//! what the [engine](crate::engine) and the hub's offline allow-lists read, laid out to be
//! small. A [`Snapshot`] is the model as the database holds it (names, maps to edit and
//! check); a [`DecisionSnapshot`] is what stays in memory for as long as the hub runs, so
//! with 100,000 cards every byte per card counts.
//!
//! Promises:
//! - Deciding from `DecisionSnapshot::from(&snapshot)` gives the decisions the engine's
//!   module docs describe for `snapshot`, inconsistencies included (a dangling reference
//!   decides as a deny; an entry of `Snapshot::cards` keyed under another hash is ignored).
//! - Layout: one [`CardRule`] of 64 bytes per card, in one `Vec` sorted by hash (the hash
//!   is stored once; lookups are binary searches); the people as a sorted `Vec` of ids
//!   (8 bytes each); each distinct validity window and each distinct set of levels once
//!   (people share a few), cards referring to them by a `u32` index. No names or labels:
//!   a decision names its card and person by id, and whoever displays it reads the names
//!   from the database. A card holds its person's part of the decision (enabled, validity
//!   window, levels) folded in, so a decision reads one card and no person.
//! - Read-only once built, plain data: shared (`Arc`) by the engine and the allow-lists.
//!
//! [`DecisionSnapshotBuilder`] builds one from rows in any order, so the store can stream
//! its tables into it without first materialising a [`Snapshot`].

use std::collections::HashMap;
use std::fmt;

use time::Date;

use crate::model::{
    Card, CardHash, CardId, Direction, Gate, GateId, Level, LevelId, PersonId, Schedule, Snapshot,
    Validity, Zone, ZoneId,
};

/// The index of the open window ([`Validity::default`]) in [`DecisionSnapshot::windows`].
pub const ALWAYS_VALID: u32 = 0;

/// The index of the empty level set in [`DecisionSnapshot::level_set`].
pub const NO_LEVELS: u32 = 0;

const ENABLED: u8 = 1;
const MASTER: u8 = 2;
const PERSON_KNOWN: u8 = 4;

/// One card as decisions need it, its person's part folded in. 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardRule {
    hash: CardHash,
    id: CardId,
    person: PersonId,
    /// Index into [`DecisionSnapshot::windows`]: the card's window intersected with its
    /// person's.
    window: u32,
    /// Index into the level sets: the person's levels ([`NO_LEVELS`] when unknown).
    levels: u32,
    flags: u8,
}

// The layout the module docs promise.
const _: () = assert!(std::mem::size_of::<CardRule>() == 64);

impl CardRule {
    pub fn hash(&self) -> &CardHash {
        &self.hash
    }

    pub fn id(&self) -> CardId {
        self.id
    }

    /// The person the card names (whether or not that person exists).
    pub fn person(&self) -> PersonId {
        self.person
    }

    /// Whether the person the card names exists (else the card decides as unknown).
    pub fn person_known(&self) -> bool {
        self.flags & PERSON_KNOWN != 0
    }

    /// Both the card and its person are enabled.
    pub fn enabled(&self) -> bool {
        self.flags & ENABLED != 0
    }

    pub fn master(&self) -> bool {
        self.flags & MASTER != 0
    }

    /// Index into [`DecisionSnapshot::windows`]: where both the card and its person are
    /// valid (`from` the later start, `until` the earlier end).
    pub fn window(&self) -> u32 {
        self.window
    }

    /// Index of the person's set of levels ([`DecisionSnapshot::level_set`]).
    pub fn level_set(&self) -> u32 {
        self.levels
    }
}

/// A gate as decisions need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GateRule {
    /// The id inside the gate's entry (what levels name).
    pub(crate) id: GateId,
    pub(crate) zone: ZoneId,
    pub(crate) direction: Direction,
    pub(crate) enabled: bool,
    pub(crate) relay_ms: u32,
}

/// A level as decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LevelRule {
    pub(crate) id: LevelId,
    pub(crate) gates: Box<[GateId]>,
    pub(crate) schedule: Schedule,
}

/// What the engine decides from (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct DecisionSnapshot {
    /// Sorted by hash, one per hash.
    cards: Box<[CardRule]>,
    /// Sorted, deduplicated.
    people: Box<[PersonId]>,
    /// Distinct windows; [`ALWAYS_VALID`] first.
    windows: Box<[Validity]>,
    /// Distinct sets of levels, as indices into `levels`; [`NO_LEVELS`] first.
    level_sets: Box<[Box<[u32]>]>,
    /// Sorted by id.
    pub(crate) levels: Box<[LevelRule]>,
    pub(crate) gates: HashMap<GateId, GateRule>,
    /// Whether each zone has anti-passback.
    pub(crate) zones: HashMap<ZoneId, bool>,
    /// Site holidays (local dates), sorted, deduplicated.
    holidays: Box<[Date]>,
}

/// Counts only: the full contents would be 100,000 lines.
impl fmt::Debug for DecisionSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionSnapshot")
            .field("cards", &self.cards.len())
            .field("people", &self.people.len())
            .field("windows", &self.windows.len())
            .field("level_sets", &self.level_sets.len())
            .field("levels", &self.levels.len())
            .field("gates", &self.gates.len())
            .field("zones", &self.zones.len())
            .field("holidays", &self.holidays.len())
            .finish()
    }
}

impl Default for DecisionSnapshot {
    fn default() -> Self {
        DecisionSnapshotBuilder::new().build()
    }
}

impl DecisionSnapshot {
    /// Every card, sorted by hash.
    pub fn cards(&self) -> &[CardRule] {
        &self.cards
    }

    /// The card with this hash.
    pub fn card(&self, hash: &CardHash) -> Option<&CardRule> {
        self.cards
            .binary_search_by(|c| c.hash.cmp(hash))
            .ok()
            .and_then(|i| self.cards.get(i))
    }

    /// Whether a person with this id exists.
    pub fn has_person(&self, person: PersonId) -> bool {
        self.people.binary_search(&person).is_ok()
    }

    /// People known.
    pub fn person_count(&self) -> usize {
        self.people.len()
    }

    /// The distinct validity windows cards refer to ([`CardRule::window`]).
    pub fn windows(&self) -> &[Validity] {
        &self.windows
    }

    /// A card's validity window (open if the index is out of range, which a built
    /// snapshot never has).
    pub fn window(&self, index: u32) -> Validity {
        self.windows
            .get(index as usize)
            .copied()
            .unwrap_or_default()
    }

    /// How many distinct level sets there are (indices `0..level_set_count()`).
    pub fn level_set_count(&self) -> usize {
        self.level_sets.len()
    }

    /// The levels of level set `index` that exist (empty for an unknown index).
    pub(crate) fn level_set(&self, index: u32) -> impl Iterator<Item = &LevelRule> + '_ {
        self.level_sets
            .get(index as usize)
            .map_or(&[][..], |s| &s[..])
            .iter()
            .filter_map(|l| self.levels.get(*l as usize))
    }

    /// Every gate the levels of level set `index` include (repeats possible).
    pub fn level_set_gates(&self, index: u32) -> impl Iterator<Item = GateId> + '_ {
        self.level_set(index)
            .flat_map(|level| level.gates.iter().copied())
    }

    /// The gates that can grant anything: enabled, with a zone that exists. Their ids as
    /// levels name them.
    pub fn usable_gates(&self) -> impl Iterator<Item = GateId> + '_ {
        self.gates
            .values()
            .filter(|g| g.enabled && self.zones.contains_key(&g.zone))
            .map(|g| g.id)
    }

    /// The gate asked for as `gate`, if it is enabled and its zone exists.
    pub(crate) fn usable_gate(&self, gate: GateId) -> Option<&GateRule> {
        self.gates
            .get(&gate)
            .filter(|g| g.enabled && self.zones.contains_key(&g.zone))
    }

    /// Whether `date` (a local date) is a site holiday.
    pub fn is_holiday(&self, date: Date) -> bool {
        self.holidays.binary_search(&date).is_ok()
    }
}

impl From<&Snapshot> for DecisionSnapshot {
    fn from(snapshot: &Snapshot) -> Self {
        let mut b = DecisionSnapshotBuilder::new();
        b.reserve(snapshot.people.len(), snapshot.cards.len());
        for (id, zone) in &snapshot.zones {
            b.zone(*id, zone);
        }
        for (id, gate) in &snapshot.gates {
            b.gate(*id, gate);
        }
        for (id, level) in &snapshot.levels {
            b.level(*id, level);
        }
        for (id, person) in &snapshot.people {
            b.person(*id, person.enabled, person.validity, &person.levels);
        }
        for (hash, card) in &snapshot.cards {
            // The engine never matched an entry keyed under another hash.
            if card.hash == *hash {
                b.card(card);
            }
        }
        for date in &snapshot.holidays {
            b.holiday(*date);
        }
        b.build()
    }
}

impl From<Snapshot> for DecisionSnapshot {
    fn from(snapshot: Snapshot) -> Self {
        DecisionSnapshot::from(&snapshot)
    }
}

/// One person while building: what their cards take from them.
#[derive(Debug, Clone, Copy)]
struct PersonRow {
    id: PersonId,
    window: u32,
    /// Index into the builder's level lists.
    levels: u32,
    enabled: bool,
}

/// Builds a [`DecisionSnapshot`] from rows given in any order (see
/// [`DecisionSnapshot::from`] for a [`Snapshot`], and the store's loader). An id given twice
/// keeps one of the two entries (which one is unspecified); a consistent source never does.
#[derive(Debug)]
pub struct DecisionSnapshotBuilder {
    cards: Vec<CardRule>,
    people: Vec<PersonRow>,
    windows: Vec<Validity>,
    window_index: HashMap<Validity, u32>,
    /// Distinct level-id lists of people, sorted and deduplicated; the empty one first.
    level_lists: Vec<Box<[LevelId]>>,
    level_list_index: HashMap<Box<[LevelId]>, u32>,
    levels: Vec<LevelRule>,
    gates: HashMap<GateId, GateRule>,
    zones: HashMap<ZoneId, bool>,
    holidays: Vec<Date>,
    scratch: Vec<LevelId>,
}

impl Default for DecisionSnapshotBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DecisionSnapshotBuilder {
    pub fn new() -> Self {
        let mut b = DecisionSnapshotBuilder {
            cards: Vec::new(),
            people: Vec::new(),
            windows: Vec::new(),
            window_index: HashMap::new(),
            level_lists: Vec::new(),
            level_list_index: HashMap::new(),
            levels: Vec::new(),
            gates: HashMap::new(),
            zones: HashMap::new(),
            holidays: Vec::new(),
            scratch: Vec::new(),
        };
        let always = b.intern_window(Validity::default());
        let none = b.intern_levels(&[]);
        debug_assert_eq!((always, none), (ALWAYS_VALID, NO_LEVELS));
        b
    }

    /// Room for this many more people and cards (so that loading 100,000 does not leave
    /// up to twice the room allocated).
    pub fn reserve(&mut self, people: usize, cards: usize) {
        self.people.reserve_exact(people);
        self.cards.reserve_exact(cards);
    }

    pub fn zone(&mut self, id: ZoneId, zone: &Zone) {
        self.zones.insert(id, zone.anti_passback);
    }

    /// The gate asked for as `id` (`gate.id` is what levels name; they differ only in an
    /// inconsistent snapshot).
    pub fn gate(&mut self, id: GateId, gate: &Gate) {
        self.gates.insert(
            id,
            GateRule {
                id: gate.id,
                zone: gate.zone,
                direction: gate.direction,
                enabled: gate.enabled,
                relay_ms: gate.relay_ms,
            },
        );
    }

    pub fn level(&mut self, id: LevelId, level: &Level) {
        self.levels.push(LevelRule {
            id,
            gates: level.gates.clone().into_boxed_slice(),
            schedule: level.schedule.clone(),
        });
    }

    pub fn holiday(&mut self, date: Date) {
        self.holidays.push(date);
    }

    /// A person with the access levels granted to them (unknown levels are ignored at
    /// decision time, as the engine's docs say).
    pub fn person(&mut self, id: PersonId, enabled: bool, validity: Validity, levels: &[LevelId]) {
        let window = self.intern_window(validity);
        let levels = self.intern_levels(levels);
        self.people.push(PersonRow {
            id,
            window,
            levels,
            enabled,
        });
    }

    /// A card (its `hash` is its key).
    pub fn card(&mut self, card: &Card) {
        let mut flags = 0;
        if card.enabled {
            flags |= ENABLED;
        }
        if card.master {
            flags |= MASTER;
        }
        let window = self.intern_window(card.validity);
        self.cards.push(CardRule {
            hash: card.hash,
            id: card.id,
            person: card.person,
            window,
            levels: NO_LEVELS,
            flags,
        });
    }

    fn intern_window(&mut self, validity: Validity) -> u32 {
        if validity == Validity::default() && !self.windows.is_empty() {
            return ALWAYS_VALID;
        }
        if let Some(i) = self.window_index.get(&validity) {
            return *i;
        }
        let i = index_u32(self.windows.len());
        self.windows.push(validity);
        self.window_index.insert(validity, i);
        i
    }

    fn intern_levels(&mut self, levels: &[LevelId]) -> u32 {
        self.scratch.clear();
        self.scratch.extend_from_slice(levels);
        self.scratch.sort_unstable();
        self.scratch.dedup();
        if let Some(i) = self.level_list_index.get(self.scratch.as_slice()) {
            return *i;
        }
        let i = index_u32(self.level_lists.len());
        let list: Box<[LevelId]> = self.scratch.as_slice().into();
        self.level_list_index.insert(list.clone(), i);
        self.level_lists.push(list);
        i
    }

    /// The window where both `a` and `b` hold.
    fn intersect(&mut self, a: u32, b: u32) -> u32 {
        if a == ALWAYS_VALID || a == b {
            return b;
        }
        if b == ALWAYS_VALID {
            return a;
        }
        let (Some(x), Some(y)) = (
            self.windows.get(a as usize).copied(),
            self.windows.get(b as usize).copied(),
        ) else {
            return ALWAYS_VALID; // indices this builder made: never taken
        };
        let from = match (x.from, y.from) {
            (Some(p), Some(q)) => Some(p.max(q)),
            (p, q) => p.or(q),
        };
        let until = match (x.until, y.until) {
            (Some(p), Some(q)) => Some(p.min(q)),
            (p, q) => p.or(q),
        };
        self.intern_window(Validity { from, until })
    }

    pub fn build(mut self) -> DecisionSnapshot {
        self.people.sort_unstable_by_key(|p| p.id);
        self.people.dedup_by_key(|p| p.id);
        self.levels.sort_unstable_by_key(|l| l.id);
        self.levels.dedup_by_key(|l| l.id);

        let mut cards = std::mem::take(&mut self.cards);
        for card in &mut cards {
            let person = self
                .people
                .binary_search_by_key(&card.person, |p| p.id)
                .ok()
                .and_then(|i| self.people.get(i))
                .copied();
            if let Some(p) = person {
                card.flags |= PERSON_KNOWN;
                if !p.enabled {
                    card.flags &= !ENABLED;
                }
                card.levels = p.levels;
                card.window = self.intersect(card.window, p.window);
            }
        }
        cards.sort_unstable_by_key(|c| (c.hash, c.id));
        cards.dedup_by_key(|c| c.hash);

        // Keep only the windows and level sets cards use, each list in a fixed order, so
        // that the same data builds the same snapshot whatever order its rows came in.
        let (windows, remap) = used_in_order(&self.windows, cards.iter().map(|c| c.window), |w| {
            (w.from, w.until)
        });
        let (level_lists, remap_levels) =
            used_in_order(&self.level_lists, cards.iter().map(|c| c.levels), |l| {
                l.clone()
            });
        for card in &mut cards {
            card.window = remap
                .get(card.window as usize)
                .copied()
                .unwrap_or(ALWAYS_VALID);
            card.levels = remap_levels
                .get(card.levels as usize)
                .copied()
                .unwrap_or(NO_LEVELS);
        }

        let levels = &self.levels;
        let level_sets = level_lists
            .iter()
            .map(|list| {
                list.iter()
                    .filter_map(|id| levels.binary_search_by_key(id, |l| l.id).ok())
                    .map(index_u32)
                    .collect()
            })
            .collect();
        let people = self.people.iter().map(|p| p.id).collect();
        self.holidays.sort_unstable();
        self.holidays.dedup();
        DecisionSnapshot {
            cards: cards.into_boxed_slice(),
            people,
            windows: windows.into_boxed_slice(),
            level_sets,
            levels: self.levels.into_boxed_slice(),
            gates: self.gates,
            zones: self.zones,
            holidays: self.holidays.into_boxed_slice(),
        }
    }
}

/// The entries of `items` that `used` names, and entry 0 (the open window, the empty
/// level list: the smallest key), sorted by `key`; and for each old index its new one.
fn used_in_order<T: Clone, K: Ord>(
    items: &[T],
    used: impl Iterator<Item = u32>,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Vec<u32>) {
    let mut keep = vec![false; items.len()];
    if let Some(first) = keep.first_mut() {
        *first = true;
    }
    for i in used {
        if let Some(k) = keep.get_mut(i as usize) {
            *k = true;
        }
    }
    let mut order: Vec<usize> = (0..items.len())
        .filter(|i| keep.get(*i).copied().unwrap_or(false))
        .collect();
    order.sort_by_cached_key(|i| items.get(*i).map(&key));
    let mut remap = vec![0; items.len()];
    let mut kept = Vec::with_capacity(order.len());
    for (new, old) in order.into_iter().enumerate() {
        if let (Some(r), Some(item)) = (remap.get_mut(old), items.get(old)) {
            *r = index_u32(new);
            kept.push(item.clone());
        }
    }
    (kept, remap)
}

/// A position in one of the builder's `Vec`s as a `u32`. More than 2^32 - 1 windows or
/// level sets would need more memory than the hub has; saturating keeps this panic-free.
fn index_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HolidayRule, Person};
    use time::macros::{date, datetime};

    fn hash(n: u8) -> CardHash {
        CardHash([n; 32])
    }

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.zones.insert(
            1,
            Zone {
                id: 1,
                name: "z".into(),
                anti_passback: true,
            },
        );
        s.gates.insert(
            7,
            Gate {
                id: 7,
                name: "g".into(),
                zone: 1,
                direction: Direction::In,
                enabled: true,
                relay_ms: 100,
            },
        );
        s.levels.insert(
            3,
            Level {
                id: 3,
                name: "l".into(),
                gates: vec![7],
                schedule: Schedule {
                    weekly: Default::default(),
                    holidays: HolidayRule::Closed,
                },
            },
        );
        for (id, levels, until) in [
            (10, vec![3, 99, 3], None),
            (11, vec![99, 3], Some(datetime!(2030-01-01 0:00 UTC))),
            (12, vec![], None),
        ] {
            s.people.insert(
                id,
                Person {
                    id,
                    name: format!("person {id}"),
                    enabled: id != 12,
                    validity: Validity { from: None, until },
                    levels,
                },
            );
        }
        for (n, person, from) in [
            (1, 10, None),
            (2, 11, Some(datetime!(2025-01-01 0:00 UTC))),
            (3, 12, None),
            (4, 77, None),
        ] {
            s.cards.insert(
                hash(n),
                Card {
                    id: i64::from(n),
                    hash: hash(n),
                    person,
                    enabled: true,
                    validity: Validity { from, until: None },
                    master: n == 3,
                },
            );
        }
        s.holidays = vec![
            date!(2025 - 12 - 25),
            date!(2025 - 01 - 01),
            date!(2025 - 12 - 25),
        ];
        s
    }

    #[test]
    fn cards_fold_in_their_person_and_share_windows_and_level_sets() {
        let d = DecisionSnapshot::from(snapshot());
        let hashes: Vec<_> = d.cards().iter().map(|c| *c.hash()).collect();
        assert_eq!(hashes, [hash(1), hash(2), hash(3), hash(4)]);
        // People 10 and 11 have the same levels once sorted and deduplicated ([3, 99]).
        let c1 = *d.card(&hash(1)).unwrap();
        let c2 = *d.card(&hash(2)).unwrap();
        assert_eq!(c1.level_set(), c2.level_set());
        assert_eq!(d.level_set_gates(c1.level_set()).collect::<Vec<_>>(), [7]);
        assert!(c1.enabled() && c1.person_known() && !c1.master());
        assert_eq!(c1.window(), ALWAYS_VALID);
        assert_eq!(
            d.window(c2.window()),
            Validity {
                from: Some(datetime!(2025-01-01 0:00 UTC)),
                until: Some(datetime!(2030-01-01 0:00 UTC)),
            }
        );
        let c3 = d.card(&hash(3)).unwrap();
        assert!(c3.master() && !c3.enabled(), "person 12 is disabled");
        assert_eq!(c3.level_set(), NO_LEVELS);
        let c4 = d.card(&hash(4)).unwrap();
        assert!(!c4.person_known());
        assert_eq!((c4.id(), c4.person()), (4, 77));
        assert_eq!(d.card(&hash(5)), None);
        assert!(d.has_person(12) && !d.has_person(77));
        assert_eq!(d.usable_gates().collect::<Vec<_>>(), [7]);
        assert!(d.is_holiday(date!(2025 - 12 - 25)));
        assert!(!d.is_holiday(date!(2025 - 12 - 24)));
        assert_eq!(d.holidays.len(), 2);
    }

    #[test]
    fn entries_keyed_under_another_hash_are_left_out() {
        let mut s = snapshot();
        let c = s.cards.remove(&hash(1)).unwrap();
        s.cards.insert(hash(9), c);
        let d = DecisionSnapshot::from(&s);
        assert_eq!(d.card(&hash(1)), None);
        assert_eq!(d.card(&hash(9)), None);
        assert_eq!(d.cards().len(), 3);
    }

    #[test]
    fn an_empty_snapshot_has_nothing() {
        let d = DecisionSnapshot::default();
        assert!(d.cards().is_empty());
        assert_eq!(d.person_count(), 0);
        assert_eq!(d.usable_gates().count(), 0);
        assert_eq!(d, DecisionSnapshot::from(Snapshot::default()));
    }
}
