//! The text form of durations people type for alerts: a rule's group window and repeat
//! interval, a silence's length (`30s`, `5m`, `2h`, `1d`, `1h30m`). Shared by the CLI
//! and the admin API, so both read and show them alike.
//!
//! Promises:
//! - [`parse_duration`] reads one or more `<number><unit>` parts (units `s`, `m`, `h`,
//!   `d`; each unit at most once, largest first) or a bare `0`; anything else is refused
//!   with a message showing the accepted forms. Whole seconds only, so what it returns is
//!   what the store keeps.
//! - [`format_duration`] prints what [`parse_duration`] reads back, in the largest units
//!   that fit (`90s` -> `1m30s`, `0` -> `0s`).

use std::time::Duration;

/// The forms [`parse_duration`] accepts, for error messages.
pub const DURATION_FORMS: &str =
    "a duration like 30s, 5m, 2h or 1d (parts combine largest first: 1h30m), or 0";

/// Longest duration accepted: 10 years (a typo like `5000000h` is not a silence anyone
/// means, and the store's millisecond times must not overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Reads a duration typed by a person (see the module docs).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let wrong = |why: &str| format!("{s:?} {why}; expected {DURATION_FORMS}");
    if s.is_empty() {
        return Err(format!("the duration is empty; expected {DURATION_FORMS}"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u64 = 0;
    // Index into UNITS of the last unit used: each next part must be a smaller unit.
    let mut last_unit: Option<usize> = None;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(wrong("is not a duration"));
        }
        let (number, after) = rest.split_at(digits);
        let mut chars = after.chars();
        let Some(unit) = chars.next() else {
            return Err(wrong("has no unit after its last number"));
        };
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(wrong(&format!("has an unknown unit {unit:?}")));
        };
        if last_unit.is_some_and(|l| index <= l) {
            return Err(wrong("repeats a unit or puts a smaller one first"));
        }
        last_unit = Some(index);
        let n: u64 = number.parse().map_err(|_| wrong("is too long"))?;
        let secs = UNITS.get(index).map_or(1, |(_, s)| *s);
        total = n
            .checked_mul(secs)
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| wrong("is too long"))?;
        rest = chars.as_str();
    }
    let d = Duration::from_secs(total);
    if d > MAX_DURATION {
        return Err(format!(
            "{s:?} is longer than the limit of {}",
            format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// The text form of `d` (whole seconds; a fraction is dropped).
pub fn format_duration(d: Duration) -> String {
    let mut left = d.as_secs();
    if left == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, secs) in UNITS {
        let n = left / secs;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push(unit);
            left -= n * secs;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        for (text, secs) in [
            ("30s", 30),
            ("5m", 300),
            ("2h", 7200),
            ("1d", 86_400),
            ("1h30m", 5400),
            ("1d2h3m4s", 93_784),
            (" 90s ", 90),
            ("0", 0),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        for (secs, text) in [
            (0, "0s"),
            (90, "1m30s"),
            (300, "5m"),
            (7200, "2h"),
            (93_784, "1d2h3m4s"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text).unwrap(), d);
        }
    }

    #[test]
    fn bad_durations_say_what_is_accepted() {
        for (text, why) in [
            ("", "empty"),
            ("5", "no unit"),
            ("90", "no unit"),
            ("m5", "not a duration"),
            ("5x", "unknown unit 'x'"),
            ("5 m", "unknown unit ' '"),
            ("-5m", "not a duration"),
            ("30m1h", "smaller one first"),
            ("5m5m", "repeats a unit"),
            ("99999999999999999999s", "too long"),
            ("5000000d", "longer than the limit"),
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
            if why != "longer than the limit" {
                assert!(e.contains("30s, 5m, 2h or 1d"), "{text:?}: {e}");
            }
        }
    }
}
