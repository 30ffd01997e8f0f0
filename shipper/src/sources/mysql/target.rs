//! Where a MySQL restore goes: `--to` parsed into a [`Target`].

use std::str::FromStr;

pub use logferry_common::format::mysql::Gtid;
use logferry_common::BinlogPos;

use crate::error::{Result, ShipperError};

/// Where to restore to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The end of the stored chain.
    Latest,
    /// The last transaction committed at or before this time (ms since the epoch).
    Time(i64),
    /// The last transaction that ends at or before this binlog position.
    BinlogPosition(BinlogPos),
    /// Up to and including the transaction with this MariaDB GTID.
    Gtid(Gtid),
}

impl FromStr for Target {
    type Err = ShipperError;

    fn from_str(s: &str) -> Result<Self> {
        if s == "latest" {
            return Ok(Target::Latest);
        }
        if let Ok(g) = Gtid::parse(s) {
            return Ok(Target::Gtid(g));
        }
        if let Some(ms) = crate::time_arg::parse_time(s, "--to") {
            return ms.map(Target::Time);
        }
        BinlogPos::parse(s)
            .map(Target::BinlogPosition)
            .map_err(|_| {
                ShipperError::Restore(format!(
                "--to {s:?}: give an RFC 3339 time (2026-11-23T12:00:00Z or 2026-11-23T13:00:00+01:00), a binlog position \
                 (mysql-bin.000003:1234), a MariaDB GTID (0-1-500) or \"latest\""
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
            "1970-01-01T00:00:01.250Z".parse::<Target>().unwrap(),
            Target::Time(1250)
        );
        assert!(matches!(
            "mysql-bin.000002:120".parse::<Target>().unwrap(),
            Target::BinlogPosition(_)
        ));
        assert_eq!(
            "1970-01-01T01:00:01+01:00".parse::<Target>().unwrap(),
            Target::Time(1000)
        );
        let err = "1970-01-01T00:00:01".parse::<Target>().unwrap_err();
        assert!(err.to_string().contains("no time zone"), "{err}");
        let err = "yesterday".parse::<Target>().unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }
}
