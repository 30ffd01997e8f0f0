//! Where a Redis restore goes: `--to` parsed into a [`Target`].

use std::str::FromStr;

use logferry_common::format::redis::ReplPos;

use crate::error::{Result, ShipperError};

/// Where to restore to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The last whole transaction stored.
    Latest,
    /// The last transaction received at or before this time (ms since the epoch; the
    /// agent's receive time, to the second, since the stream carries none).
    Time(i64),
    /// The last transaction that ends at or before this offset of the history.
    Position(ReplPos),
}

impl FromStr for Target {
    type Err = ShipperError;

    fn from_str(s: &str) -> Result<Self> {
        if s == "latest" {
            return Ok(Target::Latest);
        }
        if let Some(ms) = crate::time_arg::parse_time(s, "--to") {
            return ms.map(Target::Time);
        }
        ReplPos::parse(s).map(Target::Position).map_err(|_| {
            ShipperError::Restore(format!(
                "--to {s:?}: give an RFC 3339 time (2026-11-23T12:00:00Z or 2026-11-23T13:00:00+01:00), a Redis position \
                 HISTORY:OFFSET (1:18446, as `ls` and `verify` show them) or \"latest\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!("latest".parse::<Target>().unwrap(), Target::Latest);
        assert_eq!(
            "1970-01-01T00:00:01Z".parse::<Target>().unwrap(),
            Target::Time(1000)
        );
        assert_eq!(
            "2:18446".parse::<Target>().unwrap(),
            Target::Position(ReplPos::new(2, 18446, "", 0))
        );
        let err = "mysql-bin.000001:4".parse::<Target>().unwrap_err();
        assert!(err.to_string().contains("HISTORY:OFFSET"), "{err}");
    }
}
