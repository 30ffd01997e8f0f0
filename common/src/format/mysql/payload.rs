//! The MySQL/MariaDB payload of a segment: records of binlog events, and the walk over them
//! that tracks positions and checks that they form an unbroken chain.
//!
//! A payload is a sequence of records `[tag u8][len u32 LE][bytes]`:
//! - tag 1, *format*: the format-description event in force for the events that follow.
//!   Context, not an event of the stream: every segment starts with one so that it is
//!   readable on its own.
//! - tag 2, *event*: one binlog event, byte for byte as the server wrote it (v4 header,
//!   body, CRC32 checksum when the server uses one), or, once per crashed file, the fake
//!   rotate the server sent to move on to the next file ([`is_file_switch`]): the only
//!   event of a payload that is in no binlog file, and exports leave it out.

use super::event::{
    after_stop, code, fde_has_crc32, is_file_switch, rotate_event_target, EventHeader,
};
use super::position::BinlogPos;
use crate::{Error, Result};

/// Record tag of a format-description event in force (context).
pub const TAG_FORMAT: u8 = 1;
/// Record tag of an event of the stream.
pub const TAG_EVENT: u8 = 2;

/// The 5-byte header of a record with `tag` holding `len` bytes, for writers that frame
/// an event in place instead of copying it through [`PayloadBuilder`].
pub fn record_header(tag: u8, len: u32) -> [u8; 5] {
    let l = len.to_le_bytes();
    [tag, l[0], l[1], l[2], l[3]]
}

/// One record of a binlog payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// The format-description event in force (context).
    Format(&'a [u8]),
    /// A binlog event of the stream.
    Event(&'a [u8]),
}

/// Builds a binlog payload record by record.
#[derive(Debug, Default)]
pub struct PayloadBuilder {
    buf: Vec<u8>,
}

impl PayloadBuilder {
    /// Appends the format-description event in force.
    pub fn push_format(&mut self, fde: &[u8]) {
        self.push(TAG_FORMAT, fde);
    }

    /// Appends one event.
    pub fn push_event(&mut self, event: &[u8]) {
        self.push(TAG_EVENT, event);
    }

    fn push(&mut self, tag: u8, bytes: &[u8]) {
        self.buf.push(tag);
        self.buf
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(bytes);
    }

    /// Appends records already framed by another builder.
    pub fn push_raw(&mut self, records: &[u8]) {
        self.buf.extend_from_slice(records);
    }

    /// Takes the payload out, leaving the builder empty for the next segment.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Iterates over the records of a payload, validating framing and event headers.
pub fn records(payload: &[u8]) -> impl Iterator<Item = Result<Record<'_>>> {
    let mut rest = payload;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let item = next_record(&mut rest);
        if item.is_err() {
            rest = &[];
        }
        Some(item)
    })
}

fn next_record<'a>(rest: &mut &'a [u8]) -> Result<Record<'a>> {
    if rest.len() < 5 {
        return Err(Error::corrupt_in(
            "binlog payload",
            "binlog payload truncated in a record header",
        ));
    }
    let tag = rest[0];
    let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
    let body = rest.get(5..5 + len).ok_or_else(|| {
        Error::corrupt_in("binlog payload", "binlog payload truncated in a record")
    })?;
    *rest = &rest[5 + len..];
    let header = EventHeader::parse(body)?;
    if header.event_size as usize != body.len() {
        return Err(Error::corrupt_in(
            "binlog payload",
            "binlog record length differs from its event size",
        ));
    }
    match tag {
        TAG_FORMAT if header.event_type == code::FORMAT_DESCRIPTION => Ok(Record::Format(body)),
        TAG_FORMAT => Err(Error::corrupt_in(
            "binlog payload",
            "format record holds a non-format event",
        )),
        TAG_EVENT => Ok(Record::Event(body)),
        other => Err(Error::corrupt_in(
            "binlog payload",
            format!("unknown binlog record tag {other}"),
        )),
    }
}

/// One step of [`walk`]: a format record, or an event with where it ends.
#[derive(Debug)]
pub enum Walked<'a> {
    /// The format-description event in force from here on.
    Format(&'a [u8]),
    /// An event, its header, the position right after it, and whether it has a CRC32.
    Event {
        /// Raw bytes.
        bytes: &'a [u8],
        /// Its header.
        header: EventHeader,
        /// Position right after it (a rotate's target for a rotate event, the next file's
        /// start for a stop event).
        end: &'a BinlogPos,
        /// Whether its last 4 bytes are a CRC32.
        crc32: bool,
    },
}

/// Walks a segment payload that starts at `start`, telling `f` each record with the
/// position after each event; stops early when `f` returns `Ok(false)`.
///
/// # Errors
/// [`Error::Corrupt`] for a malformed payload, or the error of `f`.
pub fn walk<F>(start: &BinlogPos, payload: &[u8], mut f: F) -> Result<()>
where
    F: FnMut(Walked<'_>) -> Result<bool>,
{
    let mut pos = start.at(start.offset);
    let mut crc = true;
    for rec in records(payload) {
        let ev = match rec? {
            Record::Format(fde) => {
                crc = fde_has_crc32(fde);
                if !f(Walked::Format(fde))? {
                    return Ok(());
                }
                continue;
            }
            Record::Event(ev) => ev,
        };
        let header = EventHeader::parse(ev)?;
        if header.event_type == code::FORMAT_DESCRIPTION {
            crc = fde_has_crc32(ev);
        }
        if header.event_type == code::ROTATE {
            let (offset, file) = rotate_event_target(ev, crc)?;
            pos = pos
                .moved_to(file, offset)
                .map_err(|e| Error::corrupt_in("binlog payload", format!("rotate event: {e}")))?;
        } else if let Some(next) = (header.event_type == code::STOP)
            .then(|| after_stop(&pos))
            .flatten()
        {
            pos = next;
        } else {
            pos.offset = u64::from(header.log_pos);
        }
        let step = Walked::Event {
            bytes: ev,
            header,
            end: &pos,
            crc32: crc,
        };
        if !f(step)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Checks that the events of a payload form an unbroken run from `start` to `end`: every
/// event starts where the previous one ended (rotate events move to their target file, stop
/// events and [`is_file_switch`] fake rotates to the start of the next file; only
/// the ANNOTATE_ROWS slot before a table map may be skipped), and the last event
/// ends at `end`. Returns the number of events.
///
/// # Errors
/// [`Error::Corrupt`] naming the first event that breaks the run.
pub fn check_chain(payload: &[u8], start: &BinlogPos, end: &BinlogPos) -> Result<u64> {
    let mut at = start.at(start.offset);
    let mut count = 0u64;
    walk(start, payload, |w| {
        let Walked::Event {
            header: h,
            end: after,
            ..
        } = w
        else {
            return Ok(true);
        };
        let begins = u64::from(h.log_pos).checked_sub(u64::from(h.event_size));
        let annotate_skipped =
            h.event_type == code::TABLE_MAP && begins.is_some_and(|b| b > at.offset);
        if begins != Some(at.offset) && !annotate_skipped && !is_file_switch(&h, at.file(), after) {
            return Err(Error::corrupt_in("binlog payload", format!(
                "event {count} (type {}) should start at {}:{} but its header says log_pos {}, size {}",
                h.event_type, at.file(), at.offset, h.log_pos, h.event_size
            )));
        }
        at.clone_from(after);
        count += 1;
        Ok(true)
    })?;
    if at != *end {
        return Err(Error::corrupt_in(
            "binlog payload",
            format!(
                "events end at {}:{} but the header says {}:{}",
                at.file(),
                at.offset,
                end.file(),
                end.offset
            ),
        ));
    }
    Ok(count)
}
