//! Who an event is notified to: the rules that match it and apply now, the receivers they
//! call for, and whether a silence holds it. No I/O; the hub's writer thread asks the
//! [`Planner`] for a [`Plan`] and commits the event and its deliveries from it.
//!
//! Promises of [`Planner::plan`]:
//! - Rules are considered in id order; a rule counts if it is enabled, its matcher
//!   matches, and it applies at `now` in the site's local time (the planner's UTC offset
//!   and holidays). Every such rule is in [`Plan::matched`], silenced or not (grouping
//!   needs to know which rules an event matched).
//! - Each rule's receivers are its enabled, known receivers, in the rule's order, without
//!   repeats. Unknown ids (a dangling reference) and disabled receivers are left out.
//! - [`Plan::deliveries`] has one delivery per receiver: a receiver called for by several
//!   rules is delivered once, attributed to the first (lowest id) rule that called for it.
//!   When grouping suppresses some rules for this event, [`Plan::deliveries_without`]
//!   recomputes that with those rules left out (so another rule may still call for the
//!   receiver).
//! - Silenced (a silence in force at `now` matches the event): [`Plan::silenced_by`] is the
//!   lowest such silence id and there are no deliveries.
//! - A rule's repeat interval is carried only for critical events.
//! - Dead-letter loop guard: a system event of kind
//!   [`DELIVERY_DEAD_KIND`](crate::model::DELIVERY_DEAD_KIND) whose `device` is
//!   `receiver:<id>` (see [`NewEvent::delivery_dead`] and [`NewEvent::dead_receiver`]) is
//!   never planned to receiver `<id>`: a receiver that is down does not get told about
//!   itself (other receivers do).

use crate::model::{NewEvent, Receiver, ReceiverId, Rule, RuleId, Severity, Silence, SilenceId};
use std::collections::HashMap;
use std::time::Duration;
use time::{Date, OffsetDateTime, UtcOffset};

/// One rule that matched the event and applies now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    pub rule: RuleId,
    /// The enabled receivers it calls for (see the module docs), possibly none.
    pub receivers: Vec<ReceiverId>,
    /// The rule's grouping window (zero = no grouping).
    pub group_window: Duration,
    /// The rule's repeat interval, if the event is critical.
    pub repeat_every: Option<Duration>,
}

/// One notification to enqueue: the event's `firing` delivery to `receiver`, called for
/// by `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlannedDelivery {
    pub receiver: ReceiverId,
    pub rule: RuleId,
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Every enabled rule that matches and applies now, in id order.
    pub matched: Vec<RuleMatch>,
    /// One per receiver; empty when silenced.
    pub deliveries: Vec<PlannedDelivery>,
    /// The silence holding the event, if any.
    pub silenced_by: Option<SilenceId>,
}

impl Plan {
    /// The deliveries if the rules in `suppressed` (those under which the event joined
    /// an earlier event's group) call for nothing: one per receiver, attributed to the
    /// first remaining rule calling for it. Empty when silenced.
    pub fn deliveries_without(&self, suppressed: &[RuleId]) -> Vec<PlannedDelivery> {
        if self.silenced_by.is_some() {
            return Vec::new();
        }
        let mut out: Vec<PlannedDelivery> = Vec::new();
        for m in self
            .matched
            .iter()
            .filter(|m| !suppressed.contains(&m.rule))
        {
            for &receiver in &m.receivers {
                if !out.iter().any(|d| d.receiver == receiver) {
                    out.push(PlannedDelivery {
                        receiver,
                        rule: m.rule,
                    });
                }
            }
        }
        out
    }

    /// The matched rule `rule`, if it matched.
    pub fn rule(&self, rule: RuleId) -> Option<&RuleMatch> {
        self.matched.iter().find(|m| m.rule == rule)
    }
}

/// Rules, receivers, silences and the site's calendar, ready to plan events. Built from
/// the store's tables; rebuilt when they change.
#[derive(Debug, Clone)]
pub struct Planner {
    /// Sorted by id.
    rules: Vec<Rule>,
    receivers: HashMap<ReceiverId, Receiver>,
    /// Sorted by id.
    silences: Vec<Silence>,
    holidays: Vec<Date>,
    utc_offset: UtcOffset,
}

impl Planner {
    /// `holidays` are local dates; `utc_offset` is the site's offset from UTC, in which
    /// rule schedules are read.
    pub fn new(
        mut rules: Vec<Rule>,
        receivers: Vec<Receiver>,
        mut silences: Vec<Silence>,
        holidays: Vec<Date>,
        utc_offset: UtcOffset,
    ) -> Planner {
        rules.sort_by_key(|r| r.id);
        silences.sort_by_key(|s| s.id);
        Planner {
            rules,
            receivers: receivers.into_iter().map(|r| (r.id, r)).collect(),
            silences,
            holidays,
            utc_offset,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn receiver(&self, id: ReceiverId) -> Option<&Receiver> {
        self.receivers.get(&id)
    }

    pub fn silences(&self) -> &[Silence] {
        &self.silences
    }

    pub fn utc_offset(&self) -> UtcOffset {
        self.utc_offset
    }

    /// The silence holding `ev` at `now`, if any (the lowest id).
    pub fn silenced_by(&self, ev: &NewEvent, now: OffsetDateTime) -> Option<SilenceId> {
        self.silences
            .iter()
            .find(|s| s.in_force(now) && s.matcher.matches(ev))
            .map(|s| s.id)
    }

    /// The plan for `ev`, received at `now` (see the module docs).
    pub fn plan(&self, ev: &NewEvent, now: OffsetDateTime) -> Plan {
        // An offset outside the representable range cannot happen for a valid `now`
        // (years -9999..=9999) except at the very ends; UTC is the safe fallback.
        let local = now.checked_to_offset(self.utc_offset).unwrap_or(now);
        let not_to = ev.dead_receiver();
        let matched: Vec<RuleMatch> = self
            .rules
            .iter()
            .filter(|r| r.enabled && r.matcher.matches(ev) && r.applies_at(local, &self.holidays))
            .map(|r| {
                let mut receivers: Vec<ReceiverId> = Vec::new();
                for &id in &r.receivers {
                    let usable = self.receivers.get(&id).is_some_and(|rc| rc.enabled);
                    if usable && Some(id) != not_to && !receivers.contains(&id) {
                        receivers.push(id);
                    }
                }
                RuleMatch {
                    rule: r.id,
                    receivers,
                    group_window: r.group_window,
                    repeat_every: r.repeat_every.filter(|_| ev.severity == Severity::Critical),
                }
            })
            .collect();
        let mut plan = Plan {
            matched,
            deliveries: Vec::new(),
            silenced_by: self.silenced_by(ev, now),
        };
        plan.deliveries = plan.deliveries_without(&[]);
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventId, Lifecycle, Matcher, ReceiverConfig, SourceKind, WebhookFormat};
    use gatehouse_access::model::{HolidayRule, Schedule, Window};
    use time::macros::{date, datetime, offset};

    const NOW: OffsetDateTime = datetime!(2025-03-07 06:30 UTC); // Friday, 08:30 at +02

    fn ev(kind: &str, severity: Severity) -> NewEvent {
        NewEvent {
            source: "nvr-yard".into(),
            source_kind: SourceKind::Nvr,
            kind: kind.into(),
            severity,
            time: NOW,
            camera: Some("east".into()),
            zone: Some("fence".into()),
            device: None,
            message: None,
            snapshot_url: None,
            clip_url: None,
            external_id: None,
            lifecycle: Lifecycle::Instant,
        }
    }

    fn receiver(id: ReceiverId, enabled: bool) -> Receiver {
        Receiver {
            id,
            name: format!("r{id}"),
            enabled,
            config: if id == 1 {
                ReceiverConfig::Console
            } else {
                ReceiverConfig::Webhook {
                    url: format!("http://127.0.0.1:9000/{id}"),
                    format: WebhookFormat::Json,
                }
            },
        }
    }

    fn rule(id: RuleId, kinds: &[&str], receivers: &[ReceiverId]) -> Rule {
        Rule {
            id,
            name: format!("rule {id}"),
            enabled: true,
            matcher: Matcher {
                kinds: kinds.iter().map(|s| s.to_string()).collect(),
                ..Matcher::default()
            },
            active: None,
            receivers: receivers.to_vec(),
            group_window: Duration::from_secs(id as u64 * 10),
            repeat_every: Some(Duration::from_secs(300)),
        }
    }

    fn planner(rules: Vec<Rule>, silences: Vec<Silence>) -> Planner {
        Planner::new(
            rules,
            vec![
                receiver(1, true),
                receiver(2, true),
                receiver(3, true),
                receiver(4, false),
            ],
            silences,
            vec![date!(2025 - 12 - 25)],
            offset!(+2),
        )
    }

    fn d(receiver: ReceiverId, rule: RuleId) -> PlannedDelivery {
        PlannedDelivery { receiver, rule }
    }

    #[test]
    fn deliveries_are_deduplicated_first_rule_wins() {
        // Given out of order: the planner sorts by id.
        let p = planner(
            vec![
                rule(20, &["intrusion"], &[3, 2]),
                rule(10, &[], &[1, 2, 2, 4, 99]),
                rule(30, &["fire"], &[3]),
            ],
            vec![],
        );
        let plan = p.plan(&ev("intrusion", Severity::Warning), NOW);
        assert_eq!(
            plan.matched,
            vec![
                RuleMatch {
                    rule: 10,
                    receivers: vec![1, 2],
                    group_window: Duration::from_secs(100),
                    repeat_every: None,
                },
                RuleMatch {
                    rule: 20,
                    receivers: vec![3, 2],
                    group_window: Duration::from_secs(200),
                    repeat_every: None,
                },
            ]
        );
        assert_eq!(plan.deliveries, vec![d(1, 10), d(2, 10), d(3, 20)]);
        assert_eq!(plan.silenced_by, None);
        // Rule 10 grouped: receiver 2 is still called for by rule 20.
        assert_eq!(plan.deliveries_without(&[10]), vec![d(3, 20), d(2, 20)]);
        assert_eq!(plan.deliveries_without(&[10, 20]), vec![]);
        assert_eq!(plan.rule(20).map(|m| m.rule), Some(20));
    }

    #[test]
    fn disabled_rules_and_non_matching_rules_do_nothing() {
        let mut off = rule(1, &[], &[1]);
        off.enabled = false;
        let p = planner(vec![off, rule(2, &["fire"], &[2])], vec![]);
        let plan = p.plan(&ev("intrusion", Severity::Critical), NOW);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn repeat_only_for_critical() {
        let p = planner(vec![rule(1, &[], &[2])], vec![]);
        let warn = p.plan(&ev("intrusion", Severity::Warning), NOW);
        assert_eq!(warn.matched[0].repeat_every, None);
        let crit = p.plan(&ev("intrusion", Severity::Critical), NOW);
        assert_eq!(crit.matched[0].repeat_every, Some(Duration::from_secs(300)));
    }

    #[test]
    fn schedules_are_read_in_site_time() {
        let mut r = rule(1, &[], &[2]);
        let morning = vec![Window {
            start: 8 * 60,
            end: 9 * 60,
        }];
        r.active = Some(Schedule {
            weekly: std::array::from_fn(|_| morning.clone()),
            holidays: HolidayRule::Closed,
        });
        let p = planner(vec![r], vec![]);
        let e = ev("intrusion", Severity::Info);
        // 06:30 UTC is 08:30 at +02: inside.
        assert_eq!(p.plan(&e, NOW).deliveries, vec![d(2, 1)]);
        // 07:30 UTC is 09:30 at +02: outside (though 07:30 UTC would be "inside" at UTC+1).
        assert!(p
            .plan(&e, datetime!(2025-03-07 07:30 UTC))
            .matched
            .is_empty());
        // Christmas, 08:30 local: a holiday, closed.
        assert!(p
            .plan(&e, datetime!(2025-12-25 06:30 UTC))
            .matched
            .is_empty());
    }

    #[test]
    fn silence_holds_deliveries_but_plan_says_which_rules_matched() {
        let silence = |id, starts_at, ends_at, kinds: &[&str]| Silence {
            id,
            matcher: Matcher {
                kinds: kinds.iter().map(|s| s.to_string()).collect(),
                ..Matcher::default()
            },
            starts_at,
            ends_at,
            author: "alice".into(),
            comment: "maintenance".into(),
        };
        let p = planner(
            vec![rule(1, &[], &[1, 2])],
            vec![
                // Expired, would match.
                silence(1, datetime!(2025-03-07 00:00 UTC), NOW, &[]),
                // In force, other kind.
                silence(
                    2,
                    datetime!(2025-03-07 00:00 UTC),
                    datetime!(2025-03-08 00:00 UTC),
                    &["fire"],
                ),
                // In force, matching.
                silence(
                    7,
                    datetime!(2025-03-07 00:00 UTC),
                    datetime!(2025-03-08 00:00 UTC),
                    &["intr*"],
                ),
                silence(
                    5,
                    datetime!(2025-03-07 00:00 UTC),
                    datetime!(2025-03-08 00:00 UTC),
                    &["intrusion"],
                ),
            ],
        );
        let plan = p.plan(&ev("intrusion", Severity::Critical), NOW);
        assert_eq!(plan.silenced_by, Some(5));
        assert_eq!(plan.matched.len(), 1);
        assert_eq!(plan.matched[0].receivers, vec![1, 2]);
        assert!(plan.deliveries.is_empty());
        assert!(plan.deliveries_without(&[]).is_empty());
        let fire = p.plan(&ev("fire", Severity::Critical), NOW);
        assert_eq!(fire.silenced_by, Some(2));
        let other = p.plan(&ev("tamper", Severity::Critical), NOW);
        assert_eq!(other.silenced_by, None);
        assert_eq!(other.deliveries, vec![d(1, 1), d(2, 1)]);
    }

    #[test]
    fn delivery_dead_is_not_sent_to_the_receiver_that_died() {
        let p = planner(
            vec![rule(1, &[], &[1, 2, 3]), rule(2, &["alert.*"], &[2])],
            vec![],
        );
        let dead = NewEvent::delivery_dead(
            2,
            "r2",
            41,
            EventId::new(NOW, 9),
            Severity::Critical,
            "HTTP 503",
            NOW,
        );
        assert_eq!(dead.dead_receiver(), Some(2));
        dead.validate().unwrap();
        let plan = p.plan(&dead, NOW);
        assert_eq!(plan.deliveries, vec![d(1, 1), d(3, 1)]);
        assert_eq!(plan.matched[1].receivers, Vec::<ReceiverId>::new());

        // The same device on another kind or from a non-system source is an ordinary event.
        let mut spoof = dead.clone();
        spoof.source_kind = SourceKind::Nvr;
        assert_eq!(spoof.dead_receiver(), None);
        assert_eq!(
            p.plan(&spoof, NOW).deliveries,
            vec![d(1, 1), d(2, 1), d(3, 1)]
        );
    }
}
