//! The times users type into Last Modified, and the ones the app writes back to results.tc.

use time::OffsetDateTime;

use super::value::shown;

/// Parses what users type into Last Modified.
///
/// Accepts `N minutes|hours|days|weeks ago` (singular or plural, `ago` optional), `now`, an
/// ISO-8601 date or datetime with or without zone (UTC when none), `YYYY-MM-DD HH:MM:SS`, and
/// epoch seconds (or milliseconds). More than a day in the future is refused (a typo would
/// otherwise silently select nothing). The error reads after the label: "must be ..., got '..'".
pub fn parse_last_modified(
    s: &str,
    now: OffsetDateTime,
) -> std::result::Result<OffsetDateTime, String> {
    let input = s.trim();
    let fail = || {
        format!(
            "must be a time such as '30 days ago', 'now', '2024-01-31', '2024-01-31T08:00:00Z' or epoch seconds, got '{}'",
            shown(input)
        )
    };
    let t = parse_time(input, now).ok_or_else(fail)?;
    // Relative times and `now` carry the clock's nanoseconds; whole seconds read better.
    let t = t.replace_nanosecond(0).unwrap_or(t);
    if t > now + time::Duration::days(1) {
        return Err(format!("is in the future, got '{}'", shown(input)));
    }
    Ok(t)
}

/// `now`, a relative time, epoch seconds (or milliseconds) or an ISO date / datetime.
pub(crate) fn parse_time(input: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let lower = input.to_ascii_lowercase();
    if lower == "now" {
        return Some(now);
    }
    if let Some(t) = parse_relative(&lower, now) {
        return Some(t);
    }
    if !input.is_empty() && input.chars().all(|c| c.is_ascii_digit()) {
        let n: i64 = input.parse().ok()?;
        // 13+ digits: milliseconds.
        let secs = if n >= 100_000_000_000 { n / 1000 } else { n };
        return OffsetDateTime::from_unix_timestamp(secs).ok();
    }
    parse_iso(input)
}

fn parse_relative(lower: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let words: Vec<&str> = lower.split_whitespace().collect();
    let (n, unit) = match words.as_slice() {
        [n, unit] | [n, unit, "ago"] => (*n, *unit),
        _ => return None,
    };
    let n: i64 = n.parse().ok()?;
    if !(0..=100_000).contains(&n) {
        return None;
    }
    let d = match unit.strip_suffix('s').unwrap_or(unit) {
        "second" | "sec" => time::Duration::seconds(n),
        "minute" | "min" => time::Duration::minutes(n),
        "hour" | "hr" => time::Duration::hours(n),
        "day" => time::Duration::days(n),
        "week" => time::Duration::weeks(n),
        _ => return None,
    };
    now.checked_sub(d)
}

fn parse_iso(input: &str) -> Option<OffsetDateTime> {
    use time::macros::format_description;
    let mut s = input.trim().to_string();
    if s.len() == 10 {
        let d = time::Date::parse(&s, format_description!("[year]-[month]-[day]")).ok()?;
        return Some(d.midnight().assume_utc());
    }
    // Normalise: date/time separator, zone spellings.
    if s.len() > 10 && (s.as_bytes()[10] == b' ' || s.as_bytes()[10] == b't') {
        s.replace_range(10..11, "T");
    }
    for suffix in [" UTC", " utc", " GMT", " Z", "Z", "z"] {
        if let Some(stripped) = s.strip_suffix(suffix) {
            s = format!("{stripped}+00:00");
            break;
        }
    }
    let (dt, offset) = split_offset(&s)?;
    let pdt = time::PrimitiveDateTime::parse(
        dt,
        format_description!(
            "[year]-[month]-[day]T[hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
        ),
    )
    .ok()?;
    match offset {
        None => Some(pdt.assume_utc()),
        Some(off) => Some(pdt.assume_offset(off)),
    }
}

/// Splits a trailing `+HH:MM`, `+HHMM` or `+HH` zone (or its `-` twin) off a datetime.
fn split_offset(s: &str) -> Option<(&str, Option<time::UtcOffset>)> {
    let time_part_start = 11.min(s.len());
    // Byte 11 may fall inside a multi-byte character of a typo: that is no datetime (found by
    // tests/fuzz.rs; slicing there used to panic).
    let tail = s.get(time_part_start..)?;
    let Some(rel) = tail.rfind(['+', '-']) else {
        return Some((s, None));
    };
    let at = time_part_start + rel;
    let (dt, zone) = s.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let h: i8 = digits[..2].parse().ok()?;
    let m: i8 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    if h > 18 || m > 59 {
        return None;
    }
    let off = time::UtcOffset::from_hms(sign * h, sign * m, 0).ok()?;
    Some((dt, Some(off)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00:00 UTC);

    #[test]
    fn last_modified_forms() {
        let eight = datetime!(2024-01-31 08:00:00 UTC);
        for (input, want) in [
            ("30 days ago", datetime!(2026-10-29 12:00:00 UTC)),
            ("1 day ago", datetime!(2026-11-27 12:00:00 UTC)),
            ("90 Minutes Ago", datetime!(2026-11-28 10:30:00 UTC)),
            ("1 hour ago", datetime!(2026-11-28 11:00:00 UTC)),
            ("2 weeks ago", datetime!(2026-11-14 12:00:00 UTC)),
            ("12 hours", datetime!(2026-11-28 00:00:00 UTC)),
            ("now", NOW),
            ("2024-01-31", datetime!(2024-01-31 00:00:00 UTC)),
            ("2024-01-31T08:00:00Z", eight),
            ("2024-01-31T08:00:00", eight),
            ("2024-01-31T08:00", eight),
            ("2024-01-31 08:00:00", eight),
            ("2024-01-31 08:00:00 UTC", eight),
            ("2024-01-31T10:00:00+02:00", eight),
            ("2024-01-31T03:00:00-0500", eight),
            ("2024-01-31T08:00:00.250Z", eight),
            ("1706688000", eight),
            ("1706688000000", eight),
        ] {
            assert_eq!(parse_last_modified(input, NOW), Ok(want), "{input}");
        }
        for bad in [
            "yesterday",
            "30 fortnights ago",
            "-3 days ago",
            "2024-13-01",
            "2024-01-31T25:00:00",
            "2024-01-31T08:00:00+25:00",
            "",
            "2099-01-01",
        ] {
            let e = parse_last_modified(bad, NOW).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }

    #[test]
    fn last_modified_with_a_multi_byte_character_at_byte_11_is_an_error_not_a_panic() {
        for s in ["2024-01-01é", "0aA𛱰A𑰀", "2024-01-01\u{fffe}x"] {
            assert!(parse_last_modified(s, NOW).is_err(), "{s}");
        }
    }
}
