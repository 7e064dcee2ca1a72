//! The access decision engine: given a gate, a card hash and the current time, allow or
//! deny with a [`Reason`]. Sans-IO: the time comes in as an argument (carrying the site's
//! local UTC offset, because schedules and holidays are local wall-clock), nothing is read
//! from a clock, a file or the network, and a decision allocates nothing except, on a
//! grant in an anti-passback zone, possibly growing the presence map.
//!
//! # Order of checks
//!
//! [`AccessEngine::decide`] applies these in order; the first that fails is the reason.
//!
//! 1. The gate is unknown, disabled, or names an unknown zone -> [`Reason::UnknownGate`].
//! 2. The card hash is unknown, or its card names an unknown person -> [`Reason::UnknownCard`].
//! 3. The card or its person is disabled -> [`Reason::Disabled`].
//! 4. `now` is before the card's or the person's `validity.from` -> [`Reason::NotYetValid`].
//! 5. `now` is at or after the card's or the person's `validity.until` -> [`Reason::Expired`].
//!    Validity is `from <= now < until`, compared as instants (offsets do not matter).
//! 6. The card is a master card -> [`Reason::GrantedMaster`]. Masters skip levels,
//!    schedules, holidays **and anti-passback** (guards doing rounds must not be locked
//!    in or out); their grants still update anti-passback state.
//! 7. None of the person's levels includes the gate -> [`Reason::GateNotInLevel`]
//!    (levels the person names that do not exist count as not including it).
//! 8. Schedules. A level that includes the gate is *open* when one of its windows for the
//!    local day contains the local minute (`start <= minute < end`). Levels are a union:
//!    one open level is enough. On a site holiday a level uses its [`HolidayRule`]
//!    (`Closed`: no windows; `Ignore`: the weekday's; `Windows`: those instead). If no
//!    level is open:
//!    - today is a holiday and none of those levels has `HolidayRule::Ignore` (so the
//!      holiday rule decided every one of them) -> [`Reason::Holiday`];
//!    - otherwise -> [`Reason::OutsideSchedule`].
//! 9. Anti-passback, when the gate's zone has it enabled: an `In` gate refuses a person
//!    known to be inside the zone, an `Out` gate refuses a person known to be outside it
//!    -> [`Reason::AntiPassback`]. A person with no recorded passage in the zone (first
//!    ever, or since the engine started) may pass either way.
//! 10. Otherwise [`Reason::Granted`], with the gate's `relay_ms`.
//!
//! Only a grant (normal or master) at a gate of an anti-passback zone changes state: an
//! `In` gate records the person inside, an `Out` gate records them outside. A deny never
//! changes anything.

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_gate_proto::Reason;
use serde::Serialize;
use time::{Duration, OffsetDateTime, UtcOffset};

use crate::decision_snapshot::{CardRule, DecisionSnapshot, GateRule};
use crate::model::{CardHash, CardId, Direction, GateId, HolidayRule, PersonId, ZoneId};

/// The answer for one card at one gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AccessDecision {
    /// Why: [`Reason::Granted`] or [`Reason::GrantedMaster`] on a grant, the denial otherwise.
    pub reason: Reason,
    /// How long to pulse the relay: the gate's `relay_ms` on a grant, 0 on a deny.
    pub relay_ms: u32,
    /// The card's holder, when the card and its person are known.
    pub person: Option<PersonId>,
    /// The card, when its hash is known.
    pub card: Option<CardId>,
    /// The gate asked about (echoed even when unknown).
    pub gate: GateId,
}

impl AccessDecision {
    pub fn is_allowed(&self) -> bool {
        self.reason.is_allowed()
    }
}

/// Where a person was last seen relative to an anti-passback zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Last passage was through an `In` gate of the zone.
    Inside,
    /// Last passage was through an `Out` gate of the zone.
    Outside,
}

/// Decides from a [`DecisionSnapshot`] held in memory (shared, read-only), and remembers
/// who is inside each anti-passback zone.
#[derive(Debug, Clone)]
pub struct AccessEngine {
    snapshot: Arc<DecisionSnapshot>,
    presence: HashMap<(ZoneId, PersonId), Presence>,
}

impl AccessEngine {
    /// An engine deciding from `snapshot`, with no anti-passback history. The snapshot
    /// need not come from one that passed [`Snapshot::validate`](crate::model::Snapshot::validate):
    /// inconsistencies decide as denials.
    pub fn new(snapshot: impl Into<Arc<DecisionSnapshot>>) -> Self {
        Self {
            snapshot: snapshot.into(),
            presence: HashMap::new(),
        }
    }

    /// Swaps in a fresh snapshot (after a database change) and hands back the previous
    /// one, so that the caller can drop it outside its locks. Anti-passback state is kept
    /// for people still in the snapshot, in zones that still exist with anti-passback
    /// enabled; the rest is forgotten (so a zone that gets anti-passback re-enabled starts
    /// from "unknown", which lets everyone pass once).
    pub fn replace(&mut self, snapshot: impl Into<Arc<DecisionSnapshot>>) -> Arc<DecisionSnapshot> {
        let previous = std::mem::replace(&mut self.snapshot, snapshot.into());
        let snapshot = &self.snapshot;
        self.presence.retain(|(zone, person), _| {
            snapshot.has_person(*person) && snapshot.zones.get(zone).copied().unwrap_or(false)
        });
        previous
    }

    /// The snapshot decisions are made from.
    pub fn snapshot(&self) -> &Arc<DecisionSnapshot> {
        &self.snapshot
    }

    /// Where `person` was last recorded relative to anti-passback `zone`, if anywhere.
    pub fn presence(&self, zone: ZoneId, person: PersonId) -> Option<Presence> {
        self.presence.get(&(zone, person)).copied()
    }

    /// Forgets `person`'s anti-passback state in every zone (a guard's "reset
    /// anti-passback" for someone who tailgated); their next passage is allowed either way.
    pub fn forget_presence(&mut self, person: PersonId) {
        self.presence.retain(|(_, p), _| *p != person);
    }

    /// Decides whether `card` may pass `gate` at `now` (see the module docs for the
    /// order of checks), and on a grant records the passage for anti-passback.
    pub fn decide(&mut self, gate: GateId, card: &CardHash, now: OffsetDateTime) -> AccessDecision {
        let decision = self.evaluate(gate, card, now);
        if decision.is_allowed() {
            if let Some(person) = decision.person {
                self.record_passage(gate, person);
            }
        }
        decision
    }

    /// The cards that would be granted at `gate` at some instant in `[from, until)`,
    /// ignoring anti-passback: enabled card and person, validity overlapping the range,
    /// and either a master card or a level including the gate with a window (holiday
    /// rules applied) overlapping the range. Local days are taken in `from`'s UTC offset.
    /// Sorted by hash. Empty for an unknown or disabled gate or an empty range.
    ///
    /// Meant for offline allow-lists over short horizons (a day or two): the cost is
    /// O(cards x days x levels per person).
    pub fn allow_list(
        &self,
        gate: GateId,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Vec<CardHash> {
        let mut allowed = Vec::new();
        if from >= until || self.snapshot.usable_gate(gate).is_none() {
            return allowed;
        }
        let offset = from.offset();
        for card in self.snapshot.cards() {
            if !card.person_known() || !card.enabled() {
                continue;
            }
            let validity = self.snapshot.window(card.window());
            let lo = validity.from.map_or(from, |f| f.max(from));
            let hi = validity.until.map_or(until, |u| u.min(until));
            if lo >= hi {
                continue;
            }
            if card.master() || self.open_during(card.level_set(), gate, lo, hi, offset) {
                allowed.push(*card.hash());
            }
        }
        // The snapshot's cards are sorted by hash already.
        allowed
    }

    fn evaluate(&self, gate_id: GateId, hash: &CardHash, now: OffsetDateTime) -> AccessDecision {
        let mut decision = AccessDecision {
            reason: Reason::UnknownGate,
            relay_ms: 0,
            person: None,
            card: None,
            gate: gate_id,
        };
        let Some(gate) = self.snapshot.usable_gate(gate_id) else {
            return decision;
        };
        let Some(card) = self.snapshot.card(hash) else {
            decision.reason = Reason::UnknownCard;
            return decision;
        };
        decision.card = Some(card.id());
        if !card.person_known() {
            decision.reason = Reason::UnknownCard;
            return decision;
        }
        decision.person = Some(card.person());
        decision.reason = self.check(gate, card, now);
        if decision.is_allowed() {
            decision.relay_ms = gate.relay_ms;
        }
        decision
    }

    /// Steps 3 to 10 of the module docs. The card carries its person's part: enabled
    /// means both are, its window is where both are valid (so "either is not yet valid"
    /// and "either expired" read as one comparison each), its levels are the person's.
    fn check(&self, gate: &GateRule, card: &CardRule, now: OffsetDateTime) -> Reason {
        if !card.enabled() {
            return Reason::Disabled;
        }
        let validity = self.snapshot.window(card.window());
        if validity.not_yet_valid_at(now) {
            return Reason::NotYetValid;
        }
        if validity.expired_at(now) {
            return Reason::Expired;
        }
        if card.master() {
            return Reason::GrantedMaster;
        }

        let holiday = self.snapshot.is_holiday(now.date());
        let weekday = now.weekday();
        let minute = u16::from(now.hour()) * 60 + u16::from(now.minute());
        let mut in_level = false;
        let mut holiday_ignored = false;
        let mut open = false;
        for level in self
            .snapshot
            .level_set(card.level_set())
            .filter(|level| level.gates.contains(&gate.id))
        {
            in_level = true;
            holiday_ignored |= matches!(level.schedule.holidays, HolidayRule::Ignore);
            if level
                .schedule
                .windows_on(weekday, holiday)
                .iter()
                .any(|w| w.contains(minute))
            {
                open = true;
                break;
            }
        }
        if !in_level {
            return Reason::GateNotInLevel;
        }
        if !open {
            return if holiday && !holiday_ignored {
                Reason::Holiday
            } else {
                Reason::OutsideSchedule
            };
        }

        if self
            .snapshot
            .zones
            .get(&gate.zone)
            .copied()
            .unwrap_or(false)
        {
            let refused = matches!(
                (gate.direction, self.presence(gate.zone, card.person())),
                (Direction::In, Some(Presence::Inside)) | (Direction::Out, Some(Presence::Outside))
            );
            if refused {
                return Reason::AntiPassback;
            }
        }
        Reason::Granted
    }

    fn record_passage(&mut self, gate: GateId, person: PersonId) {
        let Some(gate) = self.snapshot.gates.get(&gate) else {
            return;
        };
        if !self
            .snapshot
            .zones
            .get(&gate.zone)
            .copied()
            .unwrap_or(false)
        {
            return;
        }
        let presence = match gate.direction {
            Direction::In => Presence::Inside,
            Direction::Out => Presence::Outside,
        };
        self.presence.insert((gate.zone, person), presence);
    }

    /// Whether some level of level set `levels` including `gate` has a window (holiday
    /// rules applied) overlapping `[lo, hi)`, with local days taken in `offset`.
    fn open_during(
        &self,
        levels: u32,
        gate: GateId,
        lo: OffsetDateTime,
        hi: OffsetDateTime,
        offset: UtcOffset,
    ) -> bool {
        let Some(lo) = lo.checked_to_offset(offset) else {
            return false;
        };
        let including = || {
            self.snapshot
                .level_set(levels)
                .filter(move |level| level.gates.contains(&gate))
        };
        if including().next().is_none() {
            return false;
        }
        let mut date = lo.date();
        loop {
            let midnight = date.midnight().assume_offset(offset);
            if midnight >= hi {
                return false;
            }
            let holiday = self.snapshot.is_holiday(date);
            for level in including() {
                for w in level
                    .schedule
                    .windows_on(date.weekday(), holiday)
                    .iter()
                    .filter(|w| w.start < w.end)
                {
                    let start = midnight.checked_add(Duration::minutes(i64::from(w.start)));
                    let end = midnight.checked_add(Duration::minutes(i64::from(w.end)));
                    if let (Some(start), Some(end)) = (start, end) {
                        if start < hi && lo < end {
                            return true;
                        }
                    }
                }
            }
            match date.next_day() {
                Some(next) => date = next,
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests;
