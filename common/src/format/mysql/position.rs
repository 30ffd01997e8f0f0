//! A place in a MySQL/MariaDB binlog: file, offset, and the GTID state there.

use std::cmp::Ordering;
use std::fmt;

use super::gtid::validate_gtid;
use crate::{Error, Result};

/// A place in a MySQL/MariaDB binlog: file name and byte offset, plus the GTID state of the
/// server at that place when the server has GTIDs, on one *leg* of the stream.
///
/// A stream follows its database, not a server: when the agent continues it on another
/// server (a promoted standby), that server's binlog files are another leg, numbered one
/// higher. Legs order first, so every place on a later server sorts after every place on an
/// earlier one, and object keys still list the chain in order.
///
/// Text form: `mysql-bin.000003:1234` or `mysql-bin.000003:1234@0-1-57,1-2-9` on leg 0,
/// `leg2/mysql-bin.000003:1234@0-1-57` on leg 2.
///
/// The file name is checked once, when the position is made: it must end in a numeric
/// extension, which orders files. `==` compares the place (leg, file number and offset, the
/// rule of [`BinlogPos::cmp_place`]) only; the
/// GTID state is an annotation that follows from the place.
#[derive(Debug, Clone)]
pub struct BinlogPos {
    leg: u32,
    file: String,
    seq: u64,
    /// Byte offset inside the file.
    pub offset: u64,
    /// GTID state (MariaDB `D-S-N[,D-S-N]`, or a MySQL GTID set) after everything before this
    /// place, when known. Used to resume by GTID.
    pub gtid: Option<String>,
}

impl PartialEq for BinlogPos {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_place(other).is_eq()
    }
}

impl Eq for BinlogPos {}

impl BinlogPos {
    /// Offset of the first event in every binlog file (after the 4-byte magic).
    pub const FIRST_EVENT_OFFSET: u64 = 4;

    /// A position without GTID state.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `file` is not a binlog file name (`base.NNNNNN`, no path).
    pub fn new(file: impl Into<String>, offset: u64) -> Result<Self> {
        let file = file.into();
        let seq = file_seq(&file)
            .filter(|_| !file.contains(['/', '\\', '@', ':']))
            .ok_or_else(|| {
                Error::invalid(
                    "binlog file name",
                    format!("{file:?}: expected BASE.NNNNNN, e.g. mysql-bin.000003"),
                )
            })?;
        Ok(BinlogPos {
            leg: 0,
            file,
            seq,
            offset,
            gtid: None,
        })
    }

    /// This place on leg `leg` of the stream (the servers it followed, counted from 0).
    pub fn on_leg(mut self, leg: u32) -> Self {
        self.leg = leg;
        self
    }

    /// The leg of the stream this place is on: 0 on the first server, one more at each
    /// switch to another server.
    pub fn leg(&self) -> u32 {
        self.leg
    }

    /// Another place on the same leg (a rotate's target, the file after a stop).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `file` is not a binlog file name.
    pub fn moved_to(&self, file: impl Into<String>, offset: u64) -> Result<Self> {
        Ok(BinlogPos::new(file, offset)?.on_leg(self.leg))
    }

    /// The same file at another offset (a valid file name stays valid).
    pub fn at(&self, offset: u64) -> Self {
        BinlogPos {
            leg: self.leg,
            file: self.file.clone(),
            seq: self.seq,
            offset,
            gtid: None,
        }
    }

    /// This place annotated with the GTID state there.
    pub fn with_gtid(mut self, gtid: Option<String>) -> Self {
        self.gtid = gtid;
        self
    }

    /// Binlog file name, e.g. `mysql-bin.000003`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The numeric suffix of the file name (`mysql-bin.000003` → 3), which orders files.
    pub fn file_seq(&self) -> u64 {
        self.seq
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`Error::Invalid`] quoting the text and the expected form.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "binlog position",
                format!("{text:?}: expected [legN/]FILE:OFFSET[@GTID], e.g. mysql-bin.000003:1234@0-1-57"),
            )
        };
        let (leg, text_after_leg) = match text.split_once('/') {
            Some((l, rest)) => {
                let n: u32 = l
                    .strip_prefix("leg")
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(bad)?;
                (n, rest)
            }
            None => (0, text),
        };
        let (place, gtid) = match text_after_leg.split_once('@') {
            Some((p, g)) => (p, Some(g)),
            None => (text_after_leg, None),
        };
        let (file, offset) = place.rsplit_once(':').ok_or_else(bad)?;
        let offset: u64 = offset.parse().map_err(|_| bad())?;
        let gtid = match gtid {
            Some("") | None => None,
            Some(g) => {
                validate_gtid(g).map_err(|_| bad())?;
                Some(g.to_owned())
            }
        };
        Ok(BinlogPos::new(file, offset)
            .map_err(|_| bad())?
            .on_leg(leg)
            .with_gtid(gtid))
    }

    /// Fixed-width rendering that sorts in log order: `SEQ_OFFSET` on leg 0 (the form keys
    /// had before legs existed), `LNNNNNN.SEQ_OFFSET` on later legs (`L` sorts after every
    /// digit, so a later leg sorts after every place of leg 0).
    pub fn sort_key(&self) -> String {
        if self.leg == 0 {
            format!("{:010}_{:016}", self.seq, self.offset)
        } else {
            format!("L{:06}.{:010}_{:016}", self.leg, self.seq, self.offset)
        }
    }

    /// Orders by leg, then file sequence, then offset.
    pub fn cmp_place(&self, other: &BinlogPos) -> Ordering {
        (self.leg, self.seq, self.offset).cmp(&(other.leg, other.seq, other.offset))
    }
}

impl fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.leg > 0 {
            write!(f, "leg{}/", self.leg)?;
        }
        write!(f, "{}:{}", self.file, self.offset)?;
        if let Some(g) = &self.gtid {
            write!(f, "@{g}")?;
        }
        Ok(())
    }
}

/// The numeric extension of a binlog file name, if it has one: the one rule for reading
/// a file's number.
pub fn file_seq(file: &str) -> Option<u64> {
    let (base, ext) = file.rsplit_once('.')?;
    if base.is_empty() || ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ext.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for t in [
            "mysql-bin.000003:1234",
            "mysql-bin.000003:4@0-1-57,1-2-9",
            "leg2/mysql-bin.000003:4@0-1-57",
        ] {
            assert_eq!(BinlogPos::parse(t).unwrap().to_string(), t);
        }
        for bad in [
            "",
            "mysql-bin.000003",
            "mysql-bin:4",
            "x.1:a",
            "x.1:4@bad gtid",
            "a/b.1:4",
            ".000001:4",
            "leg0/b.000001:4",
            "legx/b.000001:4",
            "2/b.000001:4",
        ] {
            assert!(BinlogPos::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_name_without_a_number_is_refused_not_read_as_zero() {
        let err = BinlogPos::new("mysql-bin", 4).unwrap_err().to_string();
        assert!(
            err.contains("mysql-bin") && err.contains("BASE.NNNNNN"),
            "{err}"
        );
    }

    #[test]
    fn equality_is_the_place_not_the_gtid_annotation() {
        let a = BinlogPos::new("b.000001", 90).unwrap();
        let b = a.clone().with_gtid(Some("0-1-5".into()));
        assert_eq!(a, b);
        assert_ne!(a, a.at(91));
    }

    #[test]
    fn order_follows_file_sequence_then_offset() {
        let a = BinlogPos::new("mysql-bin.000009", 900).unwrap();
        let b = BinlogPos::new("mysql-bin.000010", 4).unwrap();
        assert_eq!(a.cmp_place(&b), Ordering::Less);
        assert!(a.sort_key() < b.sort_key());
        let c = b.at(120);
        assert!(b.sort_key() < c.sort_key());
    }

    #[test]
    fn a_later_leg_sorts_after_every_place_of_an_earlier_one() {
        let a = BinlogPos::new("mysql-bin.000900", 9_000_000).unwrap();
        let b = BinlogPos::new("mysql-bin.000001", 4).unwrap().on_leg(1);
        let c = b.at(5).on_leg(2);
        assert_eq!(a.cmp_place(&b), Ordering::Less);
        assert!(a.sort_key() < b.sort_key() && b.sort_key() < c.sort_key());
        assert_ne!(a.at(4), a.at(4).on_leg(1));
        assert_eq!(b.moved_to("mysql-bin.000002", 4).unwrap().leg(), 1);
    }
}
