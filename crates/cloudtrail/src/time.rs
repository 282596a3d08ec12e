//! The three ways CloudTrail writes times: RFC 3339 in digests
//! (`2015-08-17T15:01:31Z`), and the compact forms of digest
//! (`20150817T150131Z`) and log file (`20150817T1455Z`) names. All become
//! seconds since the Unix epoch (UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch of an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    aws_smithy_types::DateTime::from_str(text, aws_smithy_types::date_time::Format::DateTime)
        .ok()
        .map(|t| t.secs())
}

/// An epoch second in RFC 3339 (UTC).
pub fn rfc3339(secs: i64) -> String {
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    escrow_sync_core::rfc3339(t)
}

/// Seconds since the epoch of a `SystemTime`.
pub fn epoch(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `20150817T150131Z` or `20150817T1455Z` in a file name.
pub fn parse_compact(text: &str) -> Option<i64> {
    let body = text.strip_suffix('Z')?;
    let (date, clock) = body.split_once('T')?;
    if date.len() != 8 || !(clock.len() == 4 || clock.len() == 6) {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<i64>().ok())?;
    let (y, m, d) = (digits(&date[..4])?, digits(&date[4..6])?, digits(&date[6..])?);
    let (hh, mm) = (digits(&clock[..2])?, digits(&clock[2..4])?);
    let ss = if clock.len() == 6 { digits(&clock[4..])? } else { 0 };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Howard Hinnant's days_from_civil.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_agree() {
        let t = parse_rfc3339("2015-08-17T15:01:31Z").unwrap();
        assert_eq!(parse_compact("20150817T150131Z"), Some(t));
        assert_eq!(parse_compact("20150817T1501Z"), Some(t - 31));
        assert_eq!(rfc3339(t), "2015-08-17T15:01:31Z");
        assert_eq!(parse_compact("20240229T000000Z"), parse_rfc3339("2024-02-29T00:00:00Z"));
        for bad in ["20150817T150131", "2015081T150131Z", "20151317T1501Z", "2015x817T1501Z"] {
            assert_eq!(parse_compact(bad), None, "{bad}");
        }
    }
}
