//! Positions in a source's change log: totally ordered within a kind, printable, resumable.
//!
//! A segment records the position where its first event *starts* and the position right
//! *after* its last event ends; a chain is gapless when each segment starts exactly where the
//! previous one ended. Each kind's position type lives in its [`crate::format`](mod@crate::format) module;
//! this enum is what generic code (segments, keys, the catalog) carries.

use std::cmp::Ordering;
use std::fmt;

use crate::format::mysql::BinlogPos;
use crate::format::redis::ReplPos;
use crate::{Result, SourceKind};

/// A position in the change log of any source kind.
///
/// `==` means the same place in the same kind's log; annotations (such as a binlog
/// position's GTID state) are not part of identity. Positions of different kinds do not
/// compare: [`Position::cmp_place`] says so with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A MySQL/MariaDB binlog position.
    Mysql(BinlogPos),
    /// A place in a Redis replication stream.
    Redis(ReplPos),
}

impl Position {
    /// Which run of the stream the place is on: a MySQL stream's leg (its servers, counted
    /// from 0), a Redis stream's history (a new one after each full resync, from 1).
    pub fn leg(&self) -> u32 {
        match self {
            Position::Mysql(p) => p.leg(),
            Position::Redis(p) => p.history,
        }
    }

    /// The source kind this position belongs to.
    pub fn kind(&self) -> SourceKind {
        match self {
            Position::Mysql(_) => SourceKind::Mysql,
            Position::Redis(_) => SourceKind::Redis,
        }
    }

    /// Parses the text form written by [`Display`](fmt::Display) for a position of `kind`.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) quoting the text.
    pub fn parse(kind: SourceKind, text: &str) -> Result<Self> {
        match kind {
            SourceKind::Mysql => BinlogPos::parse(text).map(Position::Mysql),
            SourceKind::Redis => ReplPos::parse(text).map(Position::Redis),
        }
    }

    /// A fixed-width rendering whose byte order equals position order, for object keys.
    pub fn sort_key(&self) -> String {
        match self {
            Position::Mysql(p) => p.sort_key(),
            Position::Redis(p) => p.sort_key(),
        }
    }

    /// Orders two positions of one kind by their place in the log.
    ///
    /// # Errors
    /// [`Error::KindMismatch`](crate::Error::KindMismatch) when they belong to different kinds of log.
    pub fn cmp_place(&self, other: &Position) -> Result<Ordering> {
        match (self, other) {
            (Position::Mysql(a), Position::Mysql(b)) => Ok(a.cmp_place(b)),
            (Position::Redis(a), Position::Redis(b)) => Ok(a.cmp_place(b)),
            (a, b) => Err(crate::Error::KindMismatch {
                left: a.kind(),
                right: b.kind(),
            }),
        }
    }

    /// Bytes of the log from here to `later`, when both are in one log (one binlog file,
    /// one Redis replication id): how far a reader is behind a head, for lag.
    pub fn bytes_until(&self, later: &Position) -> Option<u64> {
        match (self, later) {
            (Position::Mysql(a), Position::Mysql(b)) if a.file() == b.file() => {
                Some(b.offset.saturating_sub(a.offset))
            }
            (Position::Redis(a), Position::Redis(b)) if a.replid == b.replid => {
                Some(b.offset.saturating_sub(a.offset))
            }
            _ => None,
        }
    }

    /// The binlog position inside, for MySQL code handed a stream's position.
    ///
    /// # Errors
    /// [`Error::KindMismatch`](crate::Error::KindMismatch) for a position of another kind.
    pub fn as_mysql(&self) -> Result<&BinlogPos> {
        match self {
            Position::Mysql(p) => Ok(p),
            other => Err(crate::Error::KindMismatch {
                left: SourceKind::Mysql,
                right: other.kind(),
            }),
        }
    }

    /// The replication position inside, for Redis code handed a stream's position.
    ///
    /// # Errors
    /// [`Error::KindMismatch`](crate::Error::KindMismatch) for a position of another kind.
    pub fn as_redis(&self) -> Result<&ReplPos> {
        match self {
            Position::Redis(p) => Ok(p),
            other => Err(crate::Error::KindMismatch {
                left: SourceKind::Redis,
                right: other.kind(),
            }),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Mysql(p) => p.fmt(f),
            Position::Redis(p) => p.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_by_place_and_print_their_kind_form() {
        let a = Position::parse(SourceKind::Mysql, "b.000001:90@0-1-5").unwrap();
        let b = Position::parse(SourceKind::Mysql, "b.000001:90").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.cmp_place(&b).unwrap(), Ordering::Equal);
        assert_eq!(a.to_string(), "b.000001:90@0-1-5");
        assert_eq!(a.kind(), SourceKind::Mysql);
        assert!(Position::parse(SourceKind::Mysql, "nope").is_err());
    }

    #[test]
    fn bytes_between_places_only_within_one_log() {
        let at = |t: &str| Position::parse(SourceKind::Mysql, t).unwrap();
        assert_eq!(
            at("b.000001:90").bytes_until(&at("b.000001:400")),
            Some(310)
        );
        assert_eq!(at("b.000001:90").bytes_until(&at("b.000002:400")), None);
        assert_eq!(at("b.000001:400").bytes_until(&at("b.000001:90")), Some(0));
    }
}
