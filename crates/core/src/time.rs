//! Time in the one form escrow-sync writes and reads: RFC 3339 in UTC
//! (`2026-11-28T12:00:00Z`), as provenance tags, manifests, `--at` and the
//! services' own answers carry it. Service crates convert the SDK's
//! `DateTime` with `SystemTime::try_from` and read or write text here.
//!
//! ```
//! use escrow_sync_core::time::{parse_rfc3339, rfc3339};
//! let t = parse_rfc3339("2026-11-28T22:01:01+01:00").unwrap();
//! assert_eq!(rfc3339(t), "2026-11-28T21:01:01Z");
//! assert_eq!(parse_rfc3339("yesterday"), None);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// Days since 1970-01-01 of an RFC 3339 time's date (`YYYY-MM-DD...`).
pub(crate) fn epoch_day(time: &str) -> Option<i64> {
    let date = time.get(..10)?;
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `t` as RFC 3339 in UTC, to the second (`1970-01-01T00:00:00Z`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Seconds since 1970 of an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS`, an
/// optional fraction, then `Z` or an offset `±HH:MM`), the fraction
/// dropped; `None` when it does not read as one.
pub fn epoch_seconds(time: &str) -> Option<i64> {
    parse(time).map(|(secs, _)| secs)
}

/// An RFC 3339 time (as [`epoch_seconds`] reads it, the fraction kept to
/// the nanosecond) as a `SystemTime`; `None` when it does not read as one.
pub fn parse_rfc3339(time: &str) -> Option<SystemTime> {
    let (secs, nanos) = parse(time)?;
    Some(from_epoch(secs) + Duration::from_nanos(u64::from(nanos)))
}

/// The time a command-line option `flag` (say `--at`) gives, when it gives
/// one; an error naming the option and the form to write when it is not
/// RFC 3339.
pub fn parse_option(flag: &str, text: Option<&str>) -> Result<Option<SystemTime>> {
    let Some(text) = text else { return Ok(None) };
    parse_rfc3339(text).map(Some).ok_or_else(|| {
        Error::invalid_config(format!(
            "{flag} {text:?} is not an RFC 3339 time: write it like 2026-11-28T12:00:00Z"
        ))
    })
}

/// Seconds since 1970 of `t` (negative before).
pub fn epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The `SystemTime` `secs` seconds after 1970 (before, when negative).
pub fn from_epoch(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Seconds since 1970 and nanoseconds of an RFC 3339 time.
fn parse(time: &str) -> Option<(i64, u32)> {
    let day = epoch_day(time)?;
    if !matches!(time.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let field = |r: std::ops::Range<usize>, max: i64| {
        time.get(r)?.parse::<i64>().ok().filter(|v| (0..=max).contains(v))
    };
    let (h, m, s) = (field(11..13, 23)?, field(14..16, 59)?, field(17..19, 60)?);
    if time.get(13..14) != Some(":") || time.get(16..17) != Some(":") {
        return None;
    }
    let mut rest = &time[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &frac[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.get(3..4) != Some(":") {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    Some((day * 86_400 + h * 3600 + m * 60 + s - offset, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_with_their_fraction_and_offset() {
        let t = parse_rfc3339("2026-11-28T21:01:01.25Z").unwrap();
        assert_eq!(epoch(t), 1_795_899_661);
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().subsec_millis(), 250);
        assert_eq!(parse_rfc3339("2026-11-28T22:01:01+01:00"), Some(from_epoch(1_795_899_661)));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(from_epoch(-1)));
        assert_eq!(epoch(from_epoch(-1)), -1);
        assert_eq!(rfc3339(parse_rfc3339("2024-02-29T00:00:00Z").unwrap()), "2024-02-29T00:00:00Z");
        for bad in ["", "2026-11-28", "2026-11-28T21:01:01", "2026-11-28T21:01:01.Z", "soon"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_option_that_is_no_time_is_refused_with_the_form_to_write() {
        assert_eq!(parse_option("--at", None).unwrap(), None);
        assert_eq!(
            parse_option("--at", Some("2026-11-28T12:00:00Z")).unwrap(),
            Some(from_epoch(1_795_867_200))
        );
        let err = parse_option("--at", Some("noon")).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("--at \"noon\" is not an RFC 3339 time"), "{err}");
    }
}
