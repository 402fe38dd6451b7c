//! The one timestamp format provisio writes: ISO 8601 / RFC 3339 with seconds and
//! an explicit `+HH:MM` offset, as in the reference payload (`2026-11-26T10:00:00+00:00`).

use time::format_description::FormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const SECONDS: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
);

const MILLIS: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory]:[offset_minute]"
);

/// Formats with whole seconds, keeping the value's own offset: the event `dt`.
pub fn format_seconds(t: OffsetDateTime) -> String {
    t.format(SECONDS).expect("a fixed format always formats")
}

/// Formats in UTC with milliseconds: timestamps provisio records itself.
pub fn format_millis(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(MILLIS)
        .expect("a fixed format always formats")
}

/// Parses RFC 3339 (`Z` or an offset, optional fraction).
pub fn parse(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        "must be an ISO 8601 date-time with offset, such as 2026-11-26T10:00:00+00:00".into()
    })
}

/// Milliseconds since the Unix epoch: how storage keeps instants.
pub fn to_millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_is_written_with_an_explicit_offset() {
        let t = parse("2026-11-26T10:00:00Z").unwrap();
        assert_eq!(format_seconds(t), "2026-11-26T10:00:00+00:00");
    }

    #[test]
    fn a_given_offset_is_kept() {
        let t = parse("2026-11-26T13:00:00.5+03:00").unwrap();
        assert_eq!(format_seconds(t), "2026-11-26T13:00:00+03:00");
        assert_eq!(format_millis(t), "2026-11-26T10:00:00.500+00:00");
    }

    #[test]
    fn millis_round_trip() {
        let t = parse("2026-11-26T10:00:00.123Z").unwrap();
        assert_eq!(from_millis(to_millis(t)), t);
    }
}
