//! What a rule or silence matches, when a rule applies, when a silence is in force, and
//! what makes each of them valid (the one definition: the store and the admin API check
//! with these before saving).
//!
//! Promises:
//! - [`Matcher::matches`]: every non-empty list must contain a pattern matching the
//!   event's field (`kinds` the kind, `sources` the source name, `zones` the zone; an
//!   event without a zone never matches a non-empty `zones`), and the event's severity
//!   is at least `min_severity`. An empty list matches anything. A pattern ending in `*`
//!   matches by prefix (`review.*`, `*` alone matches everything); any other pattern
//!   matches exactly.
//! - [`Rule::applies_at`] takes site-local time: the rule's schedule's windows for that
//!   local weekday (or the holiday rule, on one of `holidays`) contain the local minute.
//! - [`Silence::in_force`]: `starts_at <= now < ends_at`.

use crate::model::{
    check_name, is_valid_kind, limits, Matcher, ModelError, NewEvent, Rule, Silence,
};
use std::time::Duration;
use time::{Date, OffsetDateTime};

/// At most this many patterns in each of a matcher's lists.
pub const MAX_PATTERNS: usize = 32;

/// The longest group window: a day.
pub const MAX_GROUP_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether `value` matches `pattern`: equal, or, for a pattern ending in `*`, starts
/// with what comes before the `*`.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

fn any_matches(patterns: &[String], value: Option<&str>) -> bool {
    patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| pattern_matches(p, v)))
}

impl Matcher {
    /// Whether the event matches (see the module docs).
    pub fn matches(&self, ev: &NewEvent) -> bool {
        ev.severity >= self.min_severity
            && any_matches(&self.kinds, Some(&ev.kind))
            && any_matches(&self.sources, Some(&ev.source))
            && any_matches(&self.zones, ev.zone.as_deref())
    }

    /// Checks the patterns: at most [`MAX_PATTERNS`] per list; each 1..=64 bytes with `*`
    /// only as its last character; kind patterns of `[a-z0-9_.-]` (a pattern that no kind
    /// could match is a mistake worth reporting); source and zone patterns without
    /// control characters.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_patterns("kinds", &self.kinds, |p| {
            if p.is_empty() || is_valid_kind(p) {
                Ok(())
            } else {
                Err(format!(
                    "{p:?} cannot match a kind: kinds are a-z, 0-9, '_', '.', '-' (end with * for a prefix)"
                ))
            }
        })?;
        check_patterns("sources", &self.sources, check_name)?;
        check_patterns("zones", &self.zones, check_name)?;
        Ok(())
    }
}

fn check_patterns(
    field: &'static str,
    patterns: &[String],
    check_stem: impl Fn(&str) -> Result<(), String>,
) -> Result<(), ModelError> {
    let invalid = |why: String| ModelError::Invalid { field, why };
    if patterns.len() > MAX_PATTERNS {
        return Err(invalid(format!(
            "{} patterns, over the limit of {MAX_PATTERNS}; use a prefix pattern (ending in *)",
            patterns.len()
        )));
    }
    for p in patterns {
        if p.is_empty() {
            return Err(invalid(
                "an empty pattern matches nothing; remove it".into(),
            ));
        }
        if p.len() > limits::NAME {
            return Err(invalid(format!(
                "pattern {:?} is {} bytes long, over the limit of {}",
                p,
                p.len(),
                limits::NAME
            )));
        }
        let stem = p.strip_suffix('*').unwrap_or(p);
        if stem.contains('*') {
            return Err(invalid(format!(
                "pattern {p:?}: '*' is allowed only at the end (a prefix match)"
            )));
        }
        if !stem.is_empty() {
            check_stem(stem).map_err(|why| invalid(format!("pattern {why}")))?;
        }
    }
    Ok(())
}

impl Rule {
    /// Whether the rule applies at `local` (site-local time, in the site's UTC offset),
    /// with `holidays` the site's holidays (local dates). No schedule = always.
    pub fn applies_at(&self, local: OffsetDateTime, holidays: &[Date]) -> bool {
        let Some(schedule) = &self.active else {
            return true;
        };
        let holiday = holidays.contains(&local.date());
        let minute = u16::from(local.hour()) * 60 + u16::from(local.minute());
        schedule
            .windows_on(local.weekday(), holiday)
            .iter()
            .any(|w| w.contains(minute))
    }

    /// Checks the name (1..=64 bytes), the matcher, the schedule (non-empty windows within
    /// a day), the group window (at most [`MAX_GROUP_WINDOW`]) and the repeat interval
    /// (at least a second).
    pub fn validate(&self) -> Result<(), ModelError> {
        check_name(&self.name).map_err(|why| ModelError::Invalid { field: "name", why })?;
        self.matcher.validate()?;
        if let Some(schedule) = &self.active {
            schedule.validate(None).map_err(|e| ModelError::Invalid {
                field: "active",
                why: e.to_string(),
            })?;
        }
        if self.group_window > MAX_GROUP_WINDOW {
            return Err(ModelError::Invalid {
                field: "group_window",
                why: format!(
                    "{} s is over the limit of {} s (a day)",
                    self.group_window.as_secs(),
                    MAX_GROUP_WINDOW.as_secs()
                ),
            });
        }
        if self.repeat_every.is_some_and(|r| r.as_secs() == 0) {
            return Err(ModelError::Invalid {
                field: "repeat_every",
                why: "must be at least 1 s; omit it to notify once".into(),
            });
        }
        Ok(())
    }
}

impl Silence {
    /// Whether the silence holds at `now`: `starts_at <= now < ends_at`.
    pub fn in_force(&self, now: OffsetDateTime) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Checks it ends after it starts, names its author (1..=64 bytes) and says why
    /// (a comment of 1..=1024 bytes), and its matcher.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.ends_at <= self.starts_at {
            return Err(ModelError::Invalid {
                field: "ends_at",
                why: format!(
                    "{} is not after starts_at ({})",
                    crate::model::rfc3339(self.ends_at),
                    crate::model::rfc3339(self.starts_at)
                ),
            });
        }
        check_name(&self.author).map_err(|why| ModelError::Invalid {
            field: "author",
            why,
        })?;
        if self.comment.trim().is_empty() {
            return Err(ModelError::Invalid {
                field: "comment",
                why: "is empty; say why the alerts are silenced".into(),
            });
        }
        crate::model::check_message(&self.comment).map_err(|why| ModelError::Invalid {
            field: "comment",
            why,
        })?;
        self.matcher.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Lifecycle, Severity, SourceKind};
    use gatehouse_access::model::{HolidayRule, Schedule, Window};
    use time::macros::{date, datetime, offset};

    fn ev(kind: &str, source: &str, zone: Option<&str>, severity: Severity) -> NewEvent {
        NewEvent {
            source: source.into(),
            source_kind: SourceKind::Nvr,
            kind: kind.into(),
            severity,
            time: datetime!(2025-03-07 12:00 UTC),
            camera: None,
            zone: zone.map(Into::into),
            device: None,
            message: None,
            snapshot_url: None,
            clip_url: None,
            external_id: None,
            lifecycle: Lifecycle::Instant,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_matcher_matches_everything() {
        let m = Matcher::default();
        assert!(m.matches(&ev("fire", "nvr", None, Severity::Info)));
        m.validate().unwrap();
    }

    #[test]
    fn patterns_exact_and_prefix() {
        let m = Matcher {
            kinds: strings(&["intrusion", "review.*"]),
            ..Matcher::default()
        };
        assert!(m.matches(&ev("intrusion", "nvr", None, Severity::Info)));
        assert!(m.matches(&ev("review.person", "nvr", None, Severity::Info)));
        assert!(!m.matches(&ev("intrusion.fence", "nvr", None, Severity::Info)));
        assert!(!m.matches(&ev("review", "nvr", None, Severity::Info)));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("review.*", "review."));
    }

    #[test]
    fn all_lists_must_match_and_severity_is_a_floor() {
        let m = Matcher {
            kinds: strings(&["object.*"]),
            sources: strings(&["nvr-yard", "nvr-gate"]),
            zones: strings(&["fence", "drive*"]),
            min_severity: Severity::Warning,
        };
        m.validate().unwrap();
        let ok = ev(
            "object.person",
            "nvr-gate",
            Some("driveway"),
            Severity::Warning,
        );
        assert!(m.matches(&ok));
        assert!(m.matches(&NewEvent {
            severity: Severity::Critical,
            ..ok.clone()
        }));
        assert!(!m.matches(&NewEvent {
            severity: Severity::Info,
            ..ok.clone()
        }));
        assert!(!m.matches(&NewEvent {
            zone: None,
            ..ok.clone()
        }));
        assert!(!m.matches(&NewEvent {
            source: "nvr-roof".into(),
            ..ok.clone()
        }));
        assert!(!m.matches(&NewEvent {
            kind: "fire".into(),
            ..ok
        }));
    }

    #[test]
    fn bad_matchers_are_explained() {
        let cases: &[(Matcher, &str)] = &[
            (
                Matcher {
                    kinds: strings(&["Review.*"]),
                    ..Matcher::default()
                },
                "invalid kinds: pattern \"Review.\" cannot match a kind",
            ),
            (
                Matcher {
                    kinds: strings(&["re*view"]),
                    ..Matcher::default()
                },
                "'*' is allowed only at the end",
            ),
            (
                Matcher {
                    zones: strings(&[""]),
                    ..Matcher::default()
                },
                "invalid zones: an empty pattern",
            ),
            (
                Matcher {
                    sources: vec!["x".repeat(65)],
                    ..Matcher::default()
                },
                "invalid sources: pattern \"xxx",
            ),
            (
                Matcher {
                    sources: vec!["nvr".into(); MAX_PATTERNS + 1],
                    ..Matcher::default()
                },
                "33 patterns, over the limit of 32",
            ),
        ];
        for (m, want) in cases {
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}\n wants {want}");
        }
        // `*` alone is fine everywhere.
        Matcher {
            kinds: strings(&["*"]),
            sources: strings(&["*"]),
            zones: strings(&["*"]),
            min_severity: Severity::Info,
        }
        .validate()
        .unwrap();
    }

    fn office_hours() -> Schedule {
        let day = vec![Window {
            start: 8 * 60,
            end: 18 * 60,
        }];
        Schedule {
            weekly: [
                day.clone(),
                day.clone(),
                day.clone(),
                day.clone(),
                day,
                vec![],
                vec![],
            ],
            holidays: HolidayRule::Closed,
        }
    }

    fn rule(active: Option<Schedule>) -> Rule {
        Rule {
            id: 1,
            name: "office".into(),
            enabled: true,
            matcher: Matcher::default(),
            active,
            receivers: vec![1],
            group_window: Duration::from_secs(60),
            repeat_every: None,
        }
    }

    #[test]
    fn rule_without_schedule_always_applies() {
        assert!(rule(None).applies_at(datetime!(2025-03-09 03:00 +02), &[]));
    }

    #[test]
    fn rule_schedule_in_local_time_with_holidays() {
        let r = rule(Some(office_hours()));
        r.validate().unwrap();
        // Friday 2025-03-07.
        assert!(r.applies_at(datetime!(2025-03-07 08:00 +02), &[]));
        assert!(r.applies_at(datetime!(2025-03-07 17:59 +02), &[]));
        assert!(!r.applies_at(datetime!(2025-03-07 18:00 +02), &[]));
        assert!(!r.applies_at(datetime!(2025-03-07 07:59 +02), &[]));
        // The same instant, seen from UTC, is outside (06:30 UTC = 08:30 +02).
        let t = datetime!(2025-03-07 06:30 UTC);
        assert!(!r.applies_at(t, &[]));
        assert!(r.applies_at(t.to_offset(offset!(+2)), &[]));
        // Saturday: no windows.
        assert!(!r.applies_at(datetime!(2025-03-08 10:00 +02), &[]));
        // A holiday with HolidayRule::Closed.
        assert!(!r.applies_at(datetime!(2025-03-07 10:00 +02), &[date!(2025 - 03 - 07)]));
        let mut open = r.clone();
        if let Some(s) = &mut open.active {
            s.holidays = HolidayRule::Windows(vec![Window { start: 0, end: 60 }]);
        }
        assert!(open.applies_at(datetime!(2025-03-08 00:30 +02), &[date!(2025 - 03 - 08)]));
        assert!(!open.applies_at(datetime!(2025-03-08 01:00 +02), &[date!(2025 - 03 - 08)]));
    }

    #[test]
    fn rule_validation() {
        let mut r = rule(None);
        r.validate().unwrap();
        r.repeat_every = Some(Duration::ZERO);
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("repeat_every"));
        r.repeat_every = None;
        r.group_window = MAX_GROUP_WINDOW + Duration::from_secs(1);
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("group_window"));
        r.group_window = Duration::ZERO;
        r.name = String::new();
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("invalid name"));
        let mut r = rule(Some(office_hours()));
        if let Some(s) = &mut r.active {
            s.weekly[0] = vec![Window {
                start: 600,
                end: 600,
            }];
        }
        let e = r.validate().unwrap_err().to_string();
        assert!(
            e.contains("invalid active: monday window 600..600 is empty"),
            "{e}"
        );
    }

    fn silence() -> Silence {
        Silence {
            id: 3,
            matcher: Matcher::default(),
            starts_at: datetime!(2025-03-07 10:00 UTC),
            ends_at: datetime!(2025-03-07 12:00 UTC),
            author: "alice".into(),
            comment: "mowing the lawn".into(),
        }
    }

    #[test]
    fn silence_in_force_is_half_open() {
        let s = silence();
        assert!(!s.in_force(datetime!(2025-03-07 09:59:59.999 UTC)));
        assert!(s.in_force(datetime!(2025-03-07 10:00 UTC)));
        assert!(s.in_force(datetime!(2025-03-07 11:59:59.999 UTC)));
        assert!(!s.in_force(datetime!(2025-03-07 12:00 UTC)));
    }

    #[test]
    fn silence_validation() {
        silence().validate().unwrap();
        let cases: &[(Silence, &str)] = &[
            (
                Silence {
                    ends_at: datetime!(2025-03-07 10:00 UTC),
                    ..silence()
                },
                "invalid ends_at: 2025-03-07T10:00:00Z is not after starts_at",
            ),
            (
                Silence {
                    author: String::new(),
                    ..silence()
                },
                "invalid author",
            ),
            (
                Silence {
                    author: "a".repeat(65),
                    ..silence()
                },
                "invalid author: is 65 bytes long",
            ),
            (
                Silence {
                    comment: "  ".into(),
                    ..silence()
                },
                "invalid comment: is empty; say why",
            ),
            (
                Silence {
                    comment: "c".repeat(1025),
                    ..silence()
                },
                "invalid comment: is 1025 bytes long",
            ),
            (
                Silence {
                    matcher: Matcher {
                        kinds: strings(&["**"]),
                        ..Matcher::default()
                    },
                    ..silence()
                },
                "invalid kinds",
            ),
        ];
        for (s, want) in cases {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}\n wants {want}");
        }
    }
}
