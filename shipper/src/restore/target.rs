//! Where a restore goes: `--to` parsed into a [`Target`].

use std::str::FromStr;

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
    Position(BinlogPos),
    /// Up to and including the transaction with this MariaDB GTID.
    Gtid(Gtid),
}

/// A MariaDB GTID `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    /// Replication domain.
    pub domain: u32,
    /// Originating server id.
    pub server: u32,
    /// Sequence number.
    pub seq: u64,
}

impl Gtid {
    fn parse(s: &str) -> Option<Gtid> {
        let mut it = s.split('-');
        let g = Gtid {
            domain: it.next()?.parse().ok()?,
            server: it.next()?.parse().ok()?,
            seq: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(g)
    }

    /// The sequence number this state holds for the GTID's domain (`D-S-N,...` text).
    pub(crate) fn seq_in(&self, state: &str) -> Option<u64> {
        state
            .split(',')
            .filter_map(|p| Gtid::parse(p.trim()))
            .find(|g| g.domain == self.domain)
            .map(|g| g.seq)
    }

    /// Whether a GTID event (its header's server id and body) is this GTID.
    pub(crate) fn is_event(&self, server_id: u32, body: &[u8]) -> bool {
        let (Some(seq), Some(domain)) = (body.get(0..8), body.get(8..12)) else {
            return false;
        };
        let seq = u64::from_le_bytes(seq.try_into().unwrap_or([0; 8]));
        let domain = u32::from_le_bytes(domain.try_into().unwrap_or([0; 4]));
        (domain, server_id, seq) == (self.domain, self.server, self.seq)
    }
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl FromStr for Target {
    type Err = ShipperError;

    fn from_str(s: &str) -> Result<Self> {
        if s == "latest" {
            return Ok(Target::Latest);
        }
        if let Some(g) = Gtid::parse(s) {
            return Ok(Target::Gtid(g));
        }
        if let Ok(t) = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')) {
            let ms = t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            return Ok(Target::Time(ms));
        }
        BinlogPos::parse(s).map(Target::Position).map_err(|_| {
            ShipperError::Restore(format!(
                "--to {s:?}: give an RFC 3339 UTC time (2026-11-23T12:00:00Z), a binlog position \
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
            Target::Position(_)
        ));
        let err = "yesterday".parse::<Target>().unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }
}
