//! [`ReplPos`]: a place in a Redis replication stream.

use std::cmp::Ordering;
use std::fmt;

use crate::{Error, Result};

/// A place in a Redis stream: the byte offset of the replication stream (Redis's
/// `master_repl_offset`: the stream is consumed up to and including this byte) within one
/// *history*.
///
/// A history is one unbroken run of offsets. Redis keeps offsets going across a partial
/// resync and a failover (the new primary keeps the old replication id as
/// `master_replid2`), but a full resync can restart them anywhere: the agent then starts a
/// new history, numbered one higher, so positions still sort in the order they were read and
/// the chain shows the break. Identity is (history, offset); the replication id to `PSYNC`
/// with and the db selected there are annotations, as a binlog position's GTID state is.
///
/// Text form `H:OFFSET@REPLID/DB` (`1:18446@8f0c…/0`); `H:OFFSET` alone parses too, for
/// `--to`.
#[derive(Debug, Clone)]
pub struct ReplPos {
    /// The history, 1 for a stream's first.
    pub history: u32,
    /// Bytes of the replication stream consumed (Redis's replica offset).
    pub offset: u64,
    /// The replication id the offset belongs to (40 hex digits); empty when unknown (a
    /// position typed by an operator).
    pub replid: String,
    /// The db selected at this place of the stream (what a `SELECT` before the next command
    /// would say).
    pub db: u32,
}

impl PartialEq for ReplPos {
    fn eq(&self, other: &Self) -> bool {
        self.history == other.history && self.offset == other.offset
    }
}

impl Eq for ReplPos {}

/// Length of a Redis replication id.
pub const REPLID_LEN: usize = 40;

/// Whether `id` looks like a replication id (40 lowercase hex digits).
pub fn is_replid(id: &str) -> bool {
    id.len() == REPLID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ReplPos {
    /// A position in history `history` at `offset` of `replid`, with `db` selected.
    pub fn new(history: u32, offset: u64, replid: &str, db: u32) -> Self {
        ReplPos {
            history,
            offset,
            replid: replid.to_owned(),
            db,
        }
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`Error::Invalid`] quoting the text and the form expected.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "Redis position",
                format!("{text:?}: use HISTORY:OFFSET (1:18446), optionally @REPLID/DB"),
            )
        };
        let (place, annotation) = match text.split_once('@') {
            Some((p, a)) => (p, Some(a)),
            None => (text, None),
        };
        let (h, o) = place.split_once(':').ok_or_else(bad)?;
        let history: u32 = h.parse().map_err(|_| bad())?;
        let offset: u64 = o.parse().map_err(|_| bad())?;
        if history == 0 {
            return Err(bad());
        }
        let (replid, db) = match annotation {
            None => (String::new(), 0),
            Some(a) => {
                let (id, db) = a.split_once('/').ok_or_else(bad)?;
                if !is_replid(id) {
                    return Err(bad());
                }
                (id.to_owned(), db.parse().map_err(|_| bad())?)
            }
        };
        Ok(ReplPos {
            history,
            offset,
            replid,
            db,
        })
    }

    /// Fixed-width rendering whose byte order equals position order.
    pub fn sort_key(&self) -> String {
        format!("{:010}-{:020}", self.history, self.offset)
    }

    /// Orders by place: history, then offset.
    pub fn cmp_place(&self, other: &ReplPos) -> Ordering {
        (self.history, self.offset).cmp(&(other.history, other.offset))
    }

    /// The same history and replication id, `bytes` further on, with `db` selected.
    pub fn advanced(&self, bytes: u64, db: u32) -> ReplPos {
        ReplPos {
            history: self.history,
            offset: self.offset + bytes,
            replid: self.replid.clone(),
            db,
        }
    }
}

impl fmt::Display for ReplPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.history, self.offset)?;
        if !self.replid.is_empty() {
            write!(f, "@{}/{}", self.replid, self.db)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8f0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c";

    #[test]
    fn text_form_round_trips_and_annotations_are_not_identity() {
        let p = ReplPos::new(2, 18446, ID, 3);
        let text = p.to_string();
        assert_eq!(text, format!("2:18446@{ID}/3"));
        let back = ReplPos::parse(&text).unwrap();
        assert_eq!(back.replid, ID);
        assert_eq!(back.db, 3);
        assert_eq!(back, ReplPos::parse("2:18446").unwrap());
        for bad in [
            "",
            "18446",
            "0:5",
            "1:x",
            "1:5@nothex/0",
            &format!("1:5@{ID}"),
        ] {
            assert!(ReplPos::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sort_keys_order_as_places_across_histories() {
        let a = ReplPos::new(1, 999_999, ID, 0);
        let b = ReplPos::new(2, 5, ID, 0);
        let c = ReplPos::new(2, 60, ID, 0);
        assert!(a.sort_key() < b.sort_key() && b.sort_key() < c.sort_key());
        assert_eq!(a.cmp_place(&b), Ordering::Less);
        assert_eq!(c.advanced(10, 1).offset, 70);
    }
}
