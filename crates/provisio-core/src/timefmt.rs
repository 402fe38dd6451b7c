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

    proptest::proptest! {
        /// Any `dt` text is parsed without panicking.
        #[test]
        fn any_dt_text_is_parsed_without_panicking(
            text in proptest::prop_oneof![
                ".*",
                "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
            ],
        ) {
            if let Ok(t) = parse(&text) {
                let _ = (format_seconds(t), format_millis(t), to_millis(t));
            }
        }

        /// What provisio writes it reads back: the instant (to the second)
        /// and the emitter's offset.
        #[test]
        fn dt_round_trips_with_its_offset(
            seconds in -62_135_596_800i64..253_402_300_799,
            offset_minutes in -1439i32..=1439,
        ) {
            let offset = UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
            let Ok(t) = OffsetDateTime::from_unix_timestamp(seconds).map(|t| t.to_offset(offset)) else {
                return Ok(());
            };
            // Years outside 0000..=9999 have no RFC 3339 spelling.
            proptest::prop_assume!((0..=9999).contains(&t.year()));
            let back = parse(&format_seconds(t)).unwrap();
            proptest::prop_assert_eq!(back, t);
            proptest::prop_assert_eq!(back.offset(), offset);
            proptest::prop_assert_eq!(from_millis(to_millis(t)), t);
        }
    }
}
