//! The text forms admins type, shared by the JSON API and the CLI: raw card ids
//! (`0004123456`, `0x04A1B2C3`, `04:a1:b2:c3`), weekly schedules (`mon-fri 08:00-18:00;
//! sat 09:00-12:00`) and validity bounds (`2026-12-31` or an RFC 3339 time).
//!
//! Promises:
//! - A raw card id is turned into the bytes a reader sends and nothing else; no error
//!   message repeats it (it is the secret being enrolled).
//! - A schedule that parses is valid by the model's one definition
//!   ([`Schedule::validate`]); [`format_schedule`] prints what [`parse_schedule`] reads back.
//! - Dates are whole days in the site's UTC offset.

use crate::model::DAY_NAMES as DAYS_LONG;
use crate::model::{HolidayRule, Schedule, Window, MINUTES_PER_DAY};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, UtcOffset};

// ---- card ids ----------------------------------------------------------------------

const ACC_ID_FORMS: &str = "expected decimal digits as printed on the card (e.g. 0004123456) \
     or hex bytes as the reader sends them, with 0x or colons (e.g. 0x04A1B2C3D4E5F6 or \
     04:A1:B2:C3)";

/// Shortest byte string a decimal card number becomes (a 32-bit number: the common
/// 10-digit printed card numbers and 4-byte UIDs).
const MIN_DECIMAL_BYTES: usize = 4;

/// The bytes of a raw card id as typed (see `card add --help`). Errors never repeat the
/// input: it is the secret being enrolled.
pub fn parse_acc_id(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("the card id is empty; {ACC_ID_FORMS}"));
    }
    let bytes = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let digits: String = h.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
        decode_hex(&digits)?
    } else if s.contains(':') {
        let mut out = Vec::new();
        for pair in s.split(':') {
            if pair.len() != 2 {
                return Err(format!(
                    "colon-separated hex must have two digits per byte; {ACC_ID_FORMS}"
                ));
            }
            out.extend(decode_hex(pair)?);
        }
        out
    } else if s.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = s.parse().map_err(|_| {
            "the decimal card id is larger than 64 bits; give it in hex with 0x".to_owned()
        })?;
        let be = n.to_be_bytes();
        let first = be.iter().position(|b| *b != 0).unwrap_or(be.len());
        let keep = (be.len() - first).max(MIN_DECIMAL_BYTES);
        be.get(be.len() - keep..).unwrap_or(&be).to_vec()
    } else if s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the card id looks like hex: write it with 0x (e.g. 0x04A1B2C3) so it is not \
             mistaken for a decimal number; {ACC_ID_FORMS}"
        ));
    } else {
        return Err(format!("the card id is not a number; {ACC_ID_FORMS}"));
    };
    gatehouse_gate_proto::CardId::new(&bytes).map_err(|_| {
        format!(
            "the card id is {} bytes; a card id is 1 to {} bytes",
            bytes.len(),
            gatehouse_gate_proto::CardId::MAX_LEN
        )
    })?;
    Ok(bytes)
}

fn decode_hex(digits: &str) -> Result<Vec<u8>, String> {
    if digits.is_empty() {
        return Err(format!("no hex digits after 0x; {ACC_ID_FORMS}"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "odd number of hex digits: give two per byte, with leading zeros; {ACC_ID_FORMS}"
        ));
    }
    let nibble = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("not a hex digit in the card id; {ACC_ID_FORMS}")),
        }
    };
    digits
        .as_bytes()
        .chunks(2)
        .map(|p| match p {
            [h, l] => Ok(nibble(*h)? << 4 | nibble(*l)?),
            _ => Err(format!("odd number of hex digits; {ACC_ID_FORMS}")),
        })
        .collect()
}

/// The store refuses labels holding the id's bytes in hex; a decimal id as typed is also
/// refused in the label (any four-digit run of it).
pub fn check_label_against_typed(label: &str, typed: &str) -> Result<(), String> {
    let typed = typed.trim();
    if !typed.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    let digits = typed.trim_start_matches('0');
    let leaks = if digits.len() >= 4 {
        digits
            .as_bytes()
            .windows(4)
            .any(|w| std::str::from_utf8(w).is_ok_and(|w| label.contains(w)))
    } else {
        !digits.is_empty() && label.contains(digits)
    };
    if leaks {
        return Err("must not contain any part of the card id".to_owned());
    }
    Ok(())
}

// ---- validity ----------------------------------------------------------------------

/// Which end of a validity window a typed date is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Inclusive start: a date means the start of that day.
    From,
    /// Exclusive end: a date means the end of that day (the next midnight).
    Until,
}

const DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// A validity bound: `YYYY-MM-DD` (whole days in the site's offset `tz`) or an RFC 3339
/// time.
pub fn parse_bound(s: &str, bound: Bound, tz: UtcOffset) -> Result<OffsetDateTime, String> {
    let s = s.trim();
    let wrong = || {
        format!(
            "expected a date like 2026-12-31 ({} that day, site time) or an RFC 3339 time like \
             2026-12-31T18:00:00Z, found {s:?}",
            match bound {
                Bound::From => "from the start of",
                Bound::Until => "through the end of",
            }
        )
    };
    if let Ok(date) = Date::parse(s, DATE) {
        let day = match bound {
            Bound::From => Some(date),
            Bound::Until => date.next_day(),
        };
        return day
            .map(|d| d.midnight().assume_offset(tz))
            .ok_or_else(wrong);
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .and_then(|t| t.checked_to_offset(UtcOffset::UTC))
        .ok_or_else(wrong)
}

// ---- schedules ---------------------------------------------------------------------

const SCHEDULE_FORM: &str =
    "expected \"always\" or clauses like \"mon-fri 08:00-18:00; sat 09:00-12:00\"";

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Parses a schedule spec (see `level add --help`) into the model's [`Schedule`]. Windows
/// given for the same day are merged where they overlap or touch.
pub fn parse_schedule(spec: &str, holidays: HolidayRule) -> Result<Schedule, String> {
    let spec = spec.trim();
    let mut weekly: [Vec<Window>; 7] = Default::default();
    if spec.eq_ignore_ascii_case("always") {
        for day in &mut weekly {
            day.push(Window {
                start: 0,
                end: MINUTES_PER_DAY,
            });
        }
    } else {
        if spec.is_empty() {
            return Err(format!("empty schedule; {SCHEDULE_FORM}"));
        }
        for clause in spec.split(';').map(str::trim) {
            if clause.is_empty() {
                return Err(format!(
                    "empty clause (two ';' in a row, or one at the end); {SCHEDULE_FORM}"
                ));
            }
            let split = clause
                .find(|c: char| c.is_ascii_digit())
                .ok_or_else(|| {
                    format!("clause {clause:?} has no times; expected days then times, like \"mon-fri 08:00-18:00\"")
                })?;
            let (days_part, times_part) = clause.split_at(split);
            let days = parse_days(days_part.trim(), clause)?;
            let windows = parse_windows(times_part.trim(), clause)?;
            for d in days {
                if let Some(slot) = weekly.get_mut(d) {
                    slot.extend_from_slice(&windows);
                }
            }
        }
        for day in &mut weekly {
            *day = merge(std::mem::take(day));
        }
    }
    let schedule = Schedule { weekly, holidays };
    schedule.validate(None).map_err(|e| e.to_string())?;
    Ok(schedule)
}

fn parse_day(s: &str, clause: &str) -> Result<usize, String> {
    let l = s.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == l)
        .or_else(|| DAYS_LONG.iter().position(|d| *d == l))
        .ok_or_else(|| {
            format!(
                "unknown day {s:?} in {clause:?}; expected mon tue wed thu fri sat sun, a range \
                 like mon-fri, a list like mon,wed, or daily"
            )
        })
}

/// Day indexes (0 = Monday) named by `mon-fri`, `sat,sun`, `fri-mon`, `daily`.
fn parse_days(s: &str, clause: &str) -> Result<Vec<usize>, String> {
    if s.is_empty() {
        return Err(format!(
            "clause {clause:?} names no days; expected days then times, like \"mon-fri 08:00-18:00\""
        ));
    }
    let mut days = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.eq_ignore_ascii_case("daily") {
            days.extend(0..7);
        } else if let Some((a, b)) = item.split_once('-') {
            let (a, b) = (parse_day(a.trim(), clause)?, parse_day(b.trim(), clause)?);
            // A range may wrap past Sunday: fri-mon is fri, sat, sun, mon.
            let mut d = a;
            loop {
                days.push(d);
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        } else {
            days.push(parse_day(item, clause)?);
        }
    }
    days.sort_unstable();
    days.dedup();
    Ok(days)
}

/// Minutes since midnight from `H:MM` or `HH:MM`, `24:00` included.
fn parse_hhmm(s: &str, clause: &str) -> Result<u16, String> {
    let bad = || format!("bad time {s:?} in {clause:?}; expected HH:MM from 00:00 to 24:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_windows(s: &str, clause: &str) -> Result<Vec<Window>, String> {
    let mut out = Vec::new();
    for w in s.split(',').map(str::trim) {
        let (a, b) = w.split_once('-').ok_or_else(|| {
            format!("bad time window {w:?} in {clause:?}; expected HH:MM-HH:MM, like 08:00-18:00")
        })?;
        let (start, end) = (parse_hhmm(a.trim(), clause)?, parse_hhmm(b.trim(), clause)?);
        if end < start {
            return Err(format!(
                "window {w:?} in {clause:?} ends before it starts; an overnight shift is two \
                 windows, like \"mon 22:00-24:00; tue 00:00-06:00\""
            ));
        }
        if end == start {
            return Err(format!(
                "window {w:?} in {clause:?} is empty (start and end are equal)"
            ));
        }
        out.push(Window { start, end });
    }
    Ok(out)
}

/// Sorts windows and merges those that overlap or touch.
fn merge(mut windows: Vec<Window>) -> Vec<Window> {
    windows.sort_unstable_by_key(|w| (w.start, w.end));
    let mut out: Vec<Window> = Vec::with_capacity(windows.len());
    for w in windows {
        match out.last_mut() {
            Some(last) if w.start <= last.end => last.end = last.end.max(w.end),
            _ => out.push(w),
        }
    }
    out
}

pub fn format_windows(windows: &[Window]) -> String {
    let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    windows
        .iter()
        .map(|w| format!("{}-{}", hhmm(w.start), hhmm(w.end)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The spec form of a schedule's weekly windows (what [`parse_schedule`] reads back):
/// runs of days with the same windows are joined (`mon-fri`).
pub fn format_schedule(s: &Schedule) -> String {
    let all_day = [Window {
        start: 0,
        end: MINUTES_PER_DAY,
    }];
    if s.weekly.iter().all(|d| d.as_slice() == all_day) {
        return "always".to_owned();
    }
    let mut clauses = Vec::new();
    let mut d = 0;
    while d < 7 {
        let Some(windows) = s.weekly.get(d) else {
            break;
        };
        let mut end = d;
        while s.weekly.get(end + 1).is_some_and(|w| w == windows) {
            end += 1;
        }
        if !windows.is_empty() {
            let days = match (DAYS.get(d), DAYS.get(end)) {
                (Some(a), Some(_)) if d == end => (*a).to_owned(),
                (Some(a), Some(b)) => format!("{a}-{b}"),
                _ => String::new(),
            };
            clauses.push(format!("{days} {}", format_windows(windows)));
        }
        d = end + 1;
    }
    if clauses.is_empty() {
        "never".to_owned()
    } else {
        clauses.join("; ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn w(start: u16, end: u16) -> Window {
        Window { start, end }
    }

    #[test]
    fn schedule_specs_parse_into_the_model() {
        let h = |hh: u16, mm: u16| hh * 60 + mm;
        let none: Vec<Window> = vec![];
        let cases: Vec<(&str, [Vec<Window>; 7])> = vec![
            ("always", std::array::from_fn(|_| vec![w(0, 1440)])),
            ("ALWAYS", std::array::from_fn(|_| vec![w(0, 1440)])),
            (
                "mon-fri 08:00-18:00; sat 09:00-12:00",
                [
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(8, 0), h(18, 0))],
                    vec![w(h(9, 0), h(12, 0))],
                    none.clone(),
                ],
            ),
            (
                "  Mon,Wed 7:30-12:00, 13:00-17:45 ;sun 00:00-24:00 ",
                [
                    vec![w(h(7, 30), h(12, 0)), w(h(13, 0), h(17, 45))],
                    none.clone(),
                    vec![w(h(7, 30), h(12, 0)), w(h(13, 0), h(17, 45))],
                    none.clone(),
                    none.clone(),
                    none.clone(),
                    vec![w(0, 1440)],
                ],
            ),
            (
                "fri-mon 22:00-24:00",
                [
                    vec![w(h(22, 0), 1440)],
                    none.clone(),
                    none.clone(),
                    none.clone(),
                    vec![w(h(22, 0), 1440)],
                    vec![w(h(22, 0), 1440)],
                    vec![w(h(22, 0), 1440)],
                ],
            ),
            (
                // Overlapping and touching windows of one day merge.
                "mon 08:00-12:00; mon 11:00-13:00, 13:00-14:00; tuesday 01:00-02:00",
                [
                    vec![w(h(8, 0), h(14, 0))],
                    vec![w(h(1, 0), h(2, 0))],
                    none.clone(),
                    none.clone(),
                    none.clone(),
                    none.clone(),
                    none.clone(),
                ],
            ),
            (
                "daily 06:00-22:00",
                std::array::from_fn(|_| vec![w(h(6, 0), h(22, 0))]),
            ),
        ];
        for (spec, weekly) in cases {
            let s = parse_schedule(spec, HolidayRule::Closed)
                .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            assert_eq!(s.weekly, weekly, "{spec:?}");
            assert_eq!(s.holidays, HolidayRule::Closed);
            // What is printed parses back to the same schedule.
            let again = parse_schedule(&format_schedule(&s), HolidayRule::Closed).unwrap();
            assert_eq!(again, s, "{spec:?} -> {:?}", format_schedule(&s));
        }
        let s =
            parse_schedule("mon-fri 08:00-18:00; sat 09:00-12:00", HolidayRule::Ignore).unwrap();
        assert_eq!(format_schedule(&s), "mon-fri 08:00-18:00; sat 09:00-12:00");
        assert_eq!(s.holidays, HolidayRule::Ignore);
    }

    #[test]
    fn bad_schedule_specs_say_what_and_how() {
        let cases = [
            ("", "empty schedule"),
            ("   ", "empty schedule"),
            ("sometimes", "no times"),
            ("mon-fri", "no times"),
            ("08:00-18:00", "names no days"),
            ("mon-fri 08:00-18:00;", "empty clause"),
            ("mon-fri 08:00-18:00;; sat 09:00-12:00", "empty clause"),
            ("mun 08:00-18:00", "unknown day \"mun\""),
            ("mon-fry 08:00-18:00", "unknown day \"fry\""),
            ("mon 8-18", "bad time \"8\""),
            ("mon 08:00", "expected HH:MM-HH:MM"),
            ("mon 08:00-25:00", "bad time \"25:00\""),
            ("mon 08:60-09:00", "bad time \"08:60\""),
            ("mon 24:30-24:45", "bad time \"24:30\""),
            ("mon 08:0-09:00", "bad time \"08:0\""),
            ("mon 22:00-06:00", "overnight shift is two windows"),
            ("mon 08:00-08:00", "is empty"),
            ("mon 08:00-18:00,", "expected HH:MM-HH:MM"),
        ];
        for (spec, want) in cases {
            match parse_schedule(spec, HolidayRule::Closed) {
                Ok(s) => panic!("{spec:?} parsed as {s:?}"),
                Err(e) => assert!(e.contains(want), "{spec:?}: {e}"),
            }
        }
    }

    #[test]
    fn card_ids_parse_as_decimal_or_hex_and_errors_never_echo_them() {
        let ok: [(&str, &[u8]); 8] = [
            ("0004123456", &[0x00, 0x3e, 0xeb, 0x40]),
            ("1", &[0, 0, 0, 1]),
            ("4294967295", &[0xff, 0xff, 0xff, 0xff]),
            ("4294967296", &[0x01, 0, 0, 0, 0]),
            (
                "0x04A1B2C3D4E5F6",
                &[0x04, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6],
            ),
            ("0Xdeadbeef", &[0xde, 0xad, 0xbe, 0xef]),
            ("04:a1:B2:c3", &[0x04, 0xa1, 0xb2, 0xc3]),
            ("0x04:a1:b2", &[0x04, 0xa1, 0xb2]),
        ];
        for (s, want) in ok {
            assert_eq!(parse_acc_id(s).unwrap(), want, "{s}");
        }
        let long = format!("0x{}", "ab".repeat(33));
        let bad = [
            ("", "empty"),
            ("0x", "no hex digits"),
            ("0xabc", "odd number"),
            ("0x12zz", "not a hex digit"),
            ("deadbeef", "looks like hex"),
            ("4:a1", "two digits per byte"),
            ("12 34", "not a number"),
            ("99999999999999999999999", "larger than 64 bits"),
            (long.as_str(), "33 bytes"),
        ];
        for (s, want) in bad {
            let e = parse_acc_id(s).unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
            if s.len() > 3 {
                assert!(!e.contains(s), "echoes the id: {e}");
            }
        }
    }

    #[test]
    fn validity_bounds_take_whole_days_or_times() {
        let utc = |t: OffsetDateTime| t.to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap();
        let from = parse_bound("2026-03-01", Bound::From, UtcOffset::UTC).unwrap();
        assert_eq!(utc(from), "2026-03-01T00:00:00Z");
        let until = parse_bound("2026-03-31", Bound::Until, UtcOffset::UTC).unwrap();
        assert_eq!(utc(until), "2026-04-01T00:00:00Z");
        let t = parse_bound("2026-03-31T18:00:00+02:00", Bound::Until, UtcOffset::UTC).unwrap();
        assert_eq!(utc(t), "2026-03-31T16:00:00Z");
        let e = parse_bound("soon", Bound::Until, UtcOffset::UTC).unwrap_err();
        assert!(e.contains("2026-12-31") && e.contains("\"soon\""), "{e}");
        // Dates are the site's days.
        let plus2 = UtcOffset::from_hms(2, 0, 0).unwrap();
        let from = parse_bound("2026-03-01", Bound::From, plus2).unwrap();
        assert_eq!(utc(from), "2026-02-28T22:00:00Z");
    }

    #[test]
    fn labels_may_not_hold_the_typed_id() {
        assert!(check_label_against_typed("blue fob", "0004123456").is_ok());
        assert!(check_label_against_typed("fob 4123", "0004123456").is_err());
        assert!(check_label_against_typed("fob 9876", "0004123456").is_ok());
        assert!(check_label_against_typed("spare 3", "0x0303").is_ok());
    }
}
