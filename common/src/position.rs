//! Positions in a source's change log: totally ordered, printable, resumable.
//!
//! A segment records the position where its first event *starts* and the position right
//! *after* its last event ends; a chain is gapless when each segment starts exactly where the
//! previous one ended.

use std::cmp::Ordering;
use std::fmt;

use crate::{Error, Result, SourceKind};

/// A position in the change log of any source kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// A MySQL/MariaDB binlog position.
    Binlog(BinlogPos),
}

impl Position {
    /// The source kind this position belongs to.
    pub fn kind(&self) -> SourceKind {
        match self {
            Position::Binlog(_) => SourceKind::Mysql,
        }
    }

    /// Parses the text form written by [`Display`](fmt::Display) for a position of `kind`.
    ///
    /// # Errors
    /// [`Error::Invalid`] quoting the text.
    pub fn parse(kind: SourceKind, text: &str) -> Result<Self> {
        match kind {
            SourceKind::Mysql => BinlogPos::parse(text).map(Position::Binlog),
        }
    }

    /// A fixed-width rendering whose byte order equals position order, for object keys.
    pub fn sort_key(&self) -> String {
        match self {
            Position::Binlog(p) => p.sort_key(),
        }
    }

    /// Whether `self` names the same place in the log as `other` (ignoring annotations such
    /// as the GTID state, which follows from the place).
    pub fn same_place(&self, other: &Position) -> bool {
        self.cmp_place(other) == Ordering::Equal
    }

    /// Orders two positions by their place in the log.
    pub fn cmp_place(&self, other: &Position) -> Ordering {
        match (self, other) {
            (Position::Binlog(a), Position::Binlog(b)) => a.cmp_place(b),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Binlog(p) => p.fmt(f),
        }
    }
}

/// A place in a MySQL/MariaDB binlog: file name and byte offset, plus the GTID state of the
/// server at that place when the server has GTIDs.
///
/// Text form: `mysql-bin.000003:1234` or `mysql-bin.000003:1234@0-1-57,1-2-9`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPos {
    /// Binlog file name, e.g. `mysql-bin.000003`.
    pub file: String,
    /// Byte offset inside `file`.
    pub offset: u64,
    /// GTID state (MariaDB `D-S-N[,D-S-N]`, or a MySQL GTID set) after everything before this
    /// place, when known. Used to resume by GTID.
    pub gtid: Option<String>,
}

impl BinlogPos {
    /// Offset of the first event in every binlog file (after the 4-byte magic).
    pub const FIRST_EVENT_OFFSET: u64 = 4;

    /// Builds a position without GTID state.
    pub fn new(file: impl Into<String>, offset: u64) -> Self {
        BinlogPos {
            file: file.into(),
            offset,
            gtid: None,
        }
    }

    /// The numeric suffix of the file name (`mysql-bin.000003` → 3), which orders files.
    pub fn file_seq(&self) -> u64 {
        file_seq(&self.file).unwrap_or(0)
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`Error::Invalid`] quoting the text and the expected form.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "binlog position",
                format!("{text:?}: expected FILE:OFFSET[@GTID], e.g. mysql-bin.000003:1234@0-1-57"),
            )
        };
        let (place, gtid) = match text.split_once('@') {
            Some((p, g)) => (p, Some(g)),
            None => (text, None),
        };
        let (file, offset) = place.rsplit_once(':').ok_or_else(bad)?;
        let offset: u64 = offset.parse().map_err(|_| bad())?;
        if file.is_empty() || file_seq(file).is_none() || file.contains(['/', '\\', '@']) {
            return Err(bad());
        }
        let gtid = match gtid {
            Some("") => None,
            Some(g) => {
                validate_gtid(g).map_err(|_| bad())?;
                Some(g.to_owned())
            }
            None => None,
        };
        Ok(BinlogPos {
            file: file.to_owned(),
            offset,
            gtid,
        })
    }

    /// Fixed-width `SEQ_OFFSET` rendering that sorts in log order.
    pub fn sort_key(&self) -> String {
        format!("{:010}_{:016}", self.file_seq(), self.offset)
    }

    /// Orders by file sequence, then offset.
    pub fn cmp_place(&self, other: &BinlogPos) -> Ordering {
        (self.file_seq(), self.offset).cmp(&(other.file_seq(), other.offset))
    }
}

impl fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)?;
        if let Some(g) = &self.gtid {
            write!(f, "@{g}")?;
        }
        Ok(())
    }
}

/// The numeric extension of a binlog file name, if it has one.
pub fn file_seq(file: &str) -> Option<u64> {
    let (_, ext) = file.rsplit_once('.')?;
    if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ext.parse().ok()
}

/// Checks that `gtid` looks like a MariaDB GTID list or a MySQL GTID set.
///
/// # Errors
/// [`Error::Invalid`] quoting it.
pub fn validate_gtid(gtid: &str) -> Result<()> {
    let ok = !gtid.is_empty()
        && gtid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'-' | b',' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "GTID",
            format!("{gtid:?}: expected D-S-N[,D-S-N...] (MariaDB) or UUID:N-M (MySQL)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for t in ["mysql-bin.000003:1234", "mysql-bin.000003:4@0-1-57,1-2-9"] {
            assert_eq!(BinlogPos::parse(t).unwrap().to_string(), t);
        }
        for bad in [
            "",
            "mysql-bin.000003",
            "mysql-bin:4",
            "x.1:a",
            "x.1:4@bad gtid",
            "a/b.1:4",
        ] {
            assert!(BinlogPos::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn order_follows_file_sequence_then_offset() {
        let a = BinlogPos::new("mysql-bin.000009", 900);
        let b = BinlogPos::new("mysql-bin.000010", 4);
        assert_eq!(a.cmp_place(&b), Ordering::Less);
        assert!(a.sort_key() < b.sort_key());
        let c = BinlogPos::new("mysql-bin.000010", 120);
        assert!(b.sort_key() < c.sort_key());
    }
}
