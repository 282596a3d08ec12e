//! The three ways CloudTrail writes times: RFC 3339 in digests
//! (`2015-08-17T15:01:31Z`), and the compact forms of digest
//! (`20150817T150131Z`) and log file (`20150817T1455Z`) names. All become
//! seconds since the Unix epoch (UTC).

use std::time::SystemTime;

/// Seconds since the epoch of an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    escrow_sync_core::time::parse_rfc3339(text).map(epoch)
}

/// An epoch second in RFC 3339 (UTC).
pub fn rfc3339(secs: i64) -> String {
    escrow_sync_core::rfc3339(escrow_sync_core::time::from_epoch(secs))
}

/// Seconds since the epoch of a `SystemTime`.
pub fn epoch(t: SystemTime) -> i64 {
    escrow_sync_core::time::epoch(t)
}

/// `20150817T150131Z` or `20150817T1455Z` in a file name.
pub fn parse_compact(text: &str) -> Option<i64> {
    let body = text.strip_suffix('Z')?;
    let (date, clock) = body.split_once('T')?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if date.len() != 8 || !(clock.len() == 4 || clock.len() == 6) || !digits(date) || !digits(clock)
    {
        return None;
    }
    let secs = if clock.len() == 6 { &clock[4..] } else { "00" };
    let (y, mo, d, h, mi) = (&date[..4], &date[4..6], &date[6..], &clock[..2], &clock[2..4]);
    parse_rfc3339(&format!("{y}-{mo}-{d}T{h}:{mi}:{secs}Z"))
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
