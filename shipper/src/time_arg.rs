//! Times given on the command line (`--to`), read the same way for every source kind: RFC
//! 3339 with `Z` or an offset. A time without a zone is refused rather than guessed, since
//! reading a local time as UTC would restore to the wrong hour.

use chrono::{DateTime, NaiveDateTime};

use crate::error::{Result, ShipperError};

/// Now, ms since the Unix epoch: the one clock reading of the shipper's commands.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `s` as ms since the epoch when it is an RFC 3339 time (`2026-11-23T12:00:00Z`,
/// `2026-11-23T13:00:00.250+01:00`); an error naming `flag` when it is a date and time
/// without a zone; `None` when it is not a time at all (a position, say).
pub fn parse_time(s: &str, flag: &str) -> Option<Result<i64>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(Ok(t.timestamp_millis()));
    }
    let zoneless = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .any(|f| NaiveDateTime::parse_from_str(s, f).is_ok());
    zoneless.then(|| {
        Err(ShipperError::Restore(format!(
            "{flag} {s:?} has no time zone; add one: {s}Z for UTC or an offset such as {s}+01:00"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_offsets_give_the_same_instant() {
        let utc = parse_time("2026-11-23T12:00:00Z", "--to").unwrap().unwrap();
        let paris = parse_time("2026-11-23T13:00:00+01:00", "--to")
            .unwrap()
            .unwrap();
        assert_eq!(utc, paris);
        assert_eq!(
            parse_time("1970-01-01T00:00:01.250Z", "--to")
                .unwrap()
                .unwrap(),
            1250
        );
        assert_eq!(
            parse_time("1970-01-01 00:00:01-00:30", "--to")
                .unwrap()
                .unwrap(),
            1000 + 30 * 60 * 1000
        );
    }

    #[test]
    fn a_time_without_a_zone_is_refused_with_the_fix() {
        for s in [
            "2026-11-23T12:00:00",
            "2026-11-23 12:00:00.5",
            "2026-11-23T12:00",
        ] {
            let err = parse_time(s, "--to").unwrap().unwrap_err().to_string();
            assert!(
                err.contains("no time zone") && err.contains("--to"),
                "{err}"
            );
        }
    }

    #[test]
    fn what_is_not_a_time_is_left_to_the_caller() {
        for s in ["latest", "mysql-bin.000001:4", "0-1-500", "yesterday"] {
            assert!(parse_time(s, "--to").is_none(), "{s}");
        }
    }
}
