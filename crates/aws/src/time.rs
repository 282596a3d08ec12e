//! The SDK's `DateTime` to and from the forms of `escrow_sync_core::time`:
//! one conversion for every service crate.

use std::time::SystemTime;

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;

/// An SDK time as a `SystemTime` (`None` when it does not fit one).
pub fn system_time(t: &DateTime) -> Option<SystemTime> {
    SystemTime::try_from(*t).ok()
}

/// An SDK time in RFC 3339, UTC (a fraction only when it has one); empty
/// for none.
pub fn fmt_time(t: Option<&DateTime>) -> String {
    t.and_then(|t| t.fmt(Format::DateTime).ok()).unwrap_or_default()
}

/// RFC 3339 text (read by [`escrow_sync_core::time::parse_rfc3339`]) as an
/// SDK time.
pub fn parse_time(text: &str) -> Option<DateTime> {
    escrow_sync_core::time::parse_rfc3339(text).map(DateTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_go_round_in_utc() {
        let t = parse_time("2026-11-28T22:43:21.000+01:00").unwrap();
        assert_eq!(fmt_time(Some(&t)), "2026-11-28T21:43:21Z");
        let t = parse_time("2026-11-28T21:43:21.5Z").unwrap();
        assert_eq!(fmt_time(Some(&t)), "2026-11-28T21:43:21.5Z");
        assert_eq!(system_time(&t).map(escrow_sync_core::time::epoch), Some(1_795_902_201));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(fmt_time(None), "");
    }
}
