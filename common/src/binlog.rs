//! The MySQL/MariaDB payload of a segment, and conversion back to binlog files.
//!
//! A payload is a sequence of records `[tag u8][len u32 LE][bytes]`:
//! - tag 1, *format*: the format-description event in force for the events that follow.
//!   Context, not an event of the stream: every segment starts with one so that it is
//!   readable on its own.
//! - tag 2, *event*: one binlog event, byte for byte as the server wrote it (v4 header,
//!   body, CRC32 checksum when the server uses one), or, once per crashed file, the fake
//!   rotate the server sent to move on to the next file ([`is_file_switch`]): the only
//!   event of a payload that is in no binlog file, and exports leave it out.
//!
//! [`BinlogFileWriter`] turns records back into a file that starts with the binlog magic and
//! that `mariadb-binlog` / `mysqlbinlog` read and replay.

use crate::{BinlogPos, Error, Result};

/// The four bytes every binlog file starts with.
pub const BINLOG_MAGIC: &[u8; 4] = b"\xfebin";
/// Length of a v4 event header.
pub const EVENT_HEADER_LEN: usize = 19;
/// Event type code of a format-description event.
pub const FORMAT_DESCRIPTION_EVENT: u8 = 15;
/// Event type code of a rotate event.
pub const ROTATE_EVENT: u8 = 4;
/// Event type code of a stop event: the server shut down cleanly and ended the file there
/// without a rotate event; when it starts again it writes the next file.
pub const STOP_EVENT: u8 = 3;
/// Event type code of a table-map event. MariaDB writes an ANNOTATE_ROWS event before the
/// first table map of each statement (with `binlog_annotate_row_events`), which the
/// replication stream leaves out unless the replica asks for it, so a table map may start
/// further on than the previous event ended.
pub const TABLE_MAP_EVENT: u8 = 19;

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

/// The fixed v4 header of a binlog event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHeader {
    /// Seconds since the epoch at which the statement started on the source.
    pub timestamp: u32,
    /// Event type code.
    pub event_type: u8,
    /// Server id of the originating server.
    pub server_id: u32,
    /// Length of the whole event including header and checksum.
    pub event_size: u32,
    /// Offset right after this event in its binlog file (0 for artificial events).
    pub log_pos: u32,
    /// Event flags.
    pub flags: u16,
}

impl EventHeader {
    /// Parses the header at the start of `event`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when `event` is shorter than a header or than its declared size.
    pub fn parse(event: &[u8]) -> Result<Self> {
        if event.len() < EVENT_HEADER_LEN {
            return Err(Error::corrupt(format!(
                "binlog event of {} bytes is shorter than its header",
                event.len()
            )));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([event[i], event[i + 1], event[i + 2], event[i + 3]]);
        let h = EventHeader {
            timestamp: u32_at(0),
            event_type: event[4],
            server_id: u32_at(5),
            event_size: u32_at(9),
            log_pos: u32_at(13),
            flags: u16::from_le_bytes([event[17], event[18]]),
        };
        if (h.event_size as usize) < EVENT_HEADER_LEN || h.event_size as usize > event.len() {
            return Err(Error::corrupt(format!(
                "binlog event declares {} bytes but {} are present",
                h.event_size,
                event.len()
            )));
        }
        Ok(h)
    }
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
        return Err(Error::corrupt(
            "binlog payload truncated in a record header",
        ));
    }
    let tag = rest[0];
    let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
    let body = rest
        .get(5..5 + len)
        .ok_or_else(|| Error::corrupt("binlog payload truncated in a record"))?;
    *rest = &rest[5 + len..];
    let header = EventHeader::parse(body)?;
    if header.event_size as usize != body.len() {
        return Err(Error::corrupt(
            "binlog record length differs from its event size",
        ));
    }
    match tag {
        TAG_FORMAT if header.event_type == FORMAT_DESCRIPTION_EVENT => Ok(Record::Format(body)),
        TAG_FORMAT => Err(Error::corrupt("format record holds a non-format event")),
        TAG_EVENT => Ok(Record::Event(body)),
        other => Err(Error::corrupt(format!("unknown binlog record tag {other}"))),
    }
}

/// Writes events into a binlog file image that the stock tools read.
///
/// The file starts with the magic and a format-description event: the first event when it is
/// one (a segment that starts a binlog file), else the segment's format record.
#[derive(Debug, Default)]
pub struct BinlogFileWriter {
    out: Vec<u8>,
    pending_format: Option<Vec<u8>>,
}

impl BinlogFileWriter {
    /// Starts an empty file image.
    pub fn new() -> Self {
        BinlogFileWriter {
            out: BINLOG_MAGIC.to_vec(),
            pending_format: None,
        }
    }

    fn push_event(&mut self, ev: &[u8]) -> Result<()> {
        if let Some(fde) = self.pending_format.take() {
            if EventHeader::parse(ev)?.event_type != FORMAT_DESCRIPTION_EVENT {
                self.out.extend_from_slice(&fde);
            }
        }
        self.out.extend_from_slice(ev);
        Ok(())
    }

    /// The finished file image.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Iterates over the events of a binlog file image (as written by the server or by
/// [`BinlogFileWriter`]).
///
/// # Errors
/// Items are [`Error::Corrupt`] when the magic is missing or an event is cut short.
pub fn file_events(file: &[u8]) -> impl Iterator<Item = Result<&[u8]>> {
    let mut rest: &[u8] = &[];
    let mut first_error = None;
    match file.strip_prefix(&BINLOG_MAGIC[..]) {
        Some(r) => rest = r,
        None => first_error = Some(Error::corrupt("not a binlog file: magic missing")),
    }
    std::iter::from_fn(move || {
        if let Some(e) = first_error.take() {
            return Some(Err(e));
        }
        if rest.is_empty() {
            return None;
        }
        match EventHeader::parse(rest) {
            Ok(h) => {
                let (ev, tail) = rest.split_at(h.event_size as usize);
                rest = tail;
                Some(Ok(ev))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

/// Whether events described by this format-description event carry a CRC32 checksum
/// (the byte before the FDE's own checksum names the algorithm; 1 = CRC32).
pub fn fde_has_crc32(fde: &[u8]) -> bool {
    fde.len() >= EVENT_HEADER_LEN + 5 && fde[fde.len() - 5] == 1
}

/// The `(position, file name)` a rotate event body (checksum removed) points to.
///
/// # Errors
/// [`Error::Corrupt`] when the body is too short or the name is not UTF-8.
pub fn rotate_target(body: &[u8]) -> Result<(u64, String)> {
    if body.len() <= 8 {
        return Err(Error::corrupt("rotate event too short"));
    }
    let mut pos = [0u8; 8];
    pos.copy_from_slice(&body[..8]);
    let name = std::str::from_utf8(&body[8..])
        .map_err(|_| Error::corrupt("rotate event file name is not UTF-8"))?;
    Ok((u64::from_le_bytes(pos), name.to_owned()))
}

/// The binlog file the server writes after `name`: the numeric extension plus one, at
/// least as wide (`mysql-bin.000009` → `mysql-bin.000010`, `b.999999` → `b.1000000`).
/// `None` when the name has no numeric extension.
pub fn next_file_name(name: &str) -> Option<String> {
    let (base, ext) = name.rsplit_once('.')?;
    if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let next = ext.parse::<u64>().ok()?.checked_add(1)?;
    Some(format!("{base}.{next:0width$}", width = ext.len()))
}

/// Where the stream continues after a stop event in `file`: the start of the next file
/// (position 4, after the magic). `None` when the next file's name cannot be derived.
pub fn after_stop(file: &str) -> Option<BinlogPos> {
    next_file_name(file).map(|next| BinlogPos::new(next, 4))
}

/// Whether an event is a fake rotate the server sent mid-stream to move on to the next
/// file: artificial, no position of its own, naming the file after `from` at its start.
/// The dump thread sends one only after the file before was sent to its end, so it marks a
/// file that ended with neither a rotate nor a stop event (the server crashed) without
/// hiding a gap. It is kept in the stream as that proof and left out of exported files.
pub fn is_file_switch(header: &EventHeader, from: &str, to: &BinlogPos) -> bool {
    header.event_type == ROTATE_EVENT
        && header.log_pos == 0
        && header.flags & crate::trx::LOG_EVENT_ARTIFICIAL_F != 0
        && to.offset == 4
        && next_file_name(from).is_some_and(|next| next == to.file)
}

fn rotate_event_target(ev: &[u8], crc: bool) -> Result<(u64, String)> {
    let body_end = ev.len().saturating_sub(if crc { 4 } else { 0 });
    rotate_target(ev.get(EVENT_HEADER_LEN..body_end).unwrap_or_default())
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
    let mut pos = BinlogPos::new(start.file.clone(), start.offset);
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
        if header.event_type == FORMAT_DESCRIPTION_EVENT {
            crc = fde_has_crc32(ev);
        }
        if header.event_type == ROTATE_EVENT {
            let (offset, file) = rotate_event_target(ev, crc)?;
            pos = BinlogPos::new(file, offset);
        } else if let Some(next) = (header.event_type == STOP_EVENT)
            .then(|| after_stop(&pos.file))
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

/// Rebuilds binlog files from a chain of segment payloads: one file image per original
/// binlog file, each starting with the magic and a format description, so that
/// `mariadb-binlog FILE... | mariadb` replays them.
///
/// It streams: [`ExportFiles::drain`] hands out the bytes added since the last call, so a
/// restore of any size holds about one segment in memory.
#[derive(Debug, Default)]
pub struct ExportFiles {
    files: Vec<(String, BinlogFileWriter)>,
    format: Option<Vec<u8>>,
}

impl ExportFiles {
    /// Adds the payload of the next segment of the chain, which starts in `start_file`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the payload is malformed.
    pub fn push_segment(&mut self, start_file: &str, payload: &[u8]) -> Result<()> {
        let mut file = start_file.to_owned();
        walk(&BinlogPos::new(start_file, 0), payload, |w| {
            match w {
                Walked::Format(fde) => self.format = Some(fde.to_vec()),
                Walked::Event {
                    bytes, header, end, ..
                } => {
                    if header.event_type == FORMAT_DESCRIPTION_EVENT {
                        self.format = Some(bytes.to_vec());
                    }
                    if is_file_switch(&header, &file, end) {
                        // Not part of any file: it only says the next one begins.
                        file.clone_from(&end.file);
                        return Ok(true);
                    }
                    if self.files.last().is_none_or(|(f, _)| *f != file) {
                        let mut w = BinlogFileWriter::new();
                        w.pending_format = self.format.clone();
                        self.files.push((file.clone(), w));
                    }
                    if let Some((_, w)) = self.files.last_mut() {
                        w.push_event(bytes)?;
                    }
                    if end.file != file {
                        file.clone_from(&end.file);
                    }
                }
            }
            Ok(true)
        })
    }

    /// The bytes added since the last call, as (file name, bytes) in order; the first
    /// piece of each file starts with the binlog magic and a format description, and the
    /// pieces of one file concatenate to its image.
    pub fn drain(&mut self) -> Vec<(String, Vec<u8>)> {
        let open = self.files.pop();
        let mut out: Vec<(String, Vec<u8>)> =
            self.files.drain(..).map(|(n, w)| (n, w.finish())).collect();
        if let Some((name, mut w)) = open {
            // The next piece is likely about as long: reserving that much keeps the buffer
            // from doubling past it (and a piece from carrying twice its size in capacity).
            let next = Vec::with_capacity(w.out.len());
            let bytes = std::mem::replace(&mut w.out, next);
            if !bytes.is_empty() {
                out.push((name.clone(), bytes));
            }
            self.files.push((name, w));
        }
        out
    }

    /// Every file image whole, in order, with its original name (for callers that want
    /// them in memory, e.g. tests comparing with the server's own files).
    pub fn finish(mut self) -> Vec<(String, Vec<u8>)> {
        let mut whole: Vec<(String, Vec<u8>)> = Vec::new();
        for (name, bytes) in self.drain() {
            match whole.last_mut() {
                Some((n, b)) if *n == name => b.extend_from_slice(&bytes),
                _ => whole.push((name, bytes)),
            }
        }
        whole
    }
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
    let mut at = BinlogPos::new(start.file.clone(), start.offset);
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
            h.event_type == TABLE_MAP_EVENT && begins.is_some_and(|b| b > at.offset);
        if begins != Some(at.offset) && !annotate_skipped && !is_file_switch(&h, &at.file, after) {
            return Err(Error::corrupt(format!(
                "event {count} (type {}) should start at {}:{} but its header says log_pos {}, size {}",
                h.event_type, at.file, at.offset, h.log_pos, h.event_size
            )));
        }
        at.clone_from(after);
        count += 1;
        Ok(true)
    })?;
    if at.file != end.file || at.offset != end.offset {
        return Err(Error::corrupt(format!(
            "events end at {}:{} but the header says {}:{}",
            at.file, at.offset, end.file, end.offset
        )));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u8, log_pos: u32, body: &[u8]) -> Vec<u8> {
        let size = (EVENT_HEADER_LEN + body.len()) as u32;
        let mut e = Vec::new();
        e.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        e.push(ty);
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&log_pos.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(body);
        e
    }

    #[test]
    fn drained_pieces_concatenate_to_the_whole_file() {
        let fde = event(FORMAT_DESCRIPTION_EVENT, 0, b"format");
        let mut first = PayloadBuilder::default();
        first.push_format(&fde);
        first.push_event(&event(2, 300, b"query"));
        first.push_event(&event(16, 330, b"xid"));
        let first = first.take();
        let mut second = PayloadBuilder::default();
        second.push_format(&fde);
        second.push_event(&event(2, 360, b"query2"));
        second.push_event(&event(16, 391, b"xid"));
        let second = second.take();

        let mut whole = ExportFiles::default();
        whole.push_segment("b.000001", &first).unwrap();
        whole.push_segment("b.000001", &second).unwrap();
        let whole = whole.finish();

        let mut streamed = ExportFiles::default();
        streamed.push_segment("b.000001", &first).unwrap();
        let mut pieces = streamed.drain();
        assert!(
            streamed.drain().is_empty(),
            "nothing new since the last drain"
        );
        streamed.push_segment("b.000001", &second).unwrap();
        pieces.extend(streamed.drain());
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|(n, _)| n == "b.000001"));
        let joined: Vec<u8> = pieces.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(joined, whole[0].1);
        assert!(pieces[0].1.starts_with(BINLOG_MAGIC));
    }

    #[test]
    fn payload_round_trips_into_a_file() {
        let fde = event(FORMAT_DESCRIPTION_EVENT, 0, b"format");
        let q = event(2, 300, b"query");
        let x = event(16, 330, b"xid");
        let mut b = PayloadBuilder::default();
        b.push_format(&fde);
        b.push_event(&q);
        b.push_event(&x);
        let payload = b.take();
        let recs: Vec<_> = records(&payload).collect::<Result<_>>().unwrap();
        assert_eq!(
            recs,
            vec![Record::Format(&fde), Record::Event(&q), Record::Event(&x)]
        );
        let mut files = ExportFiles::default();
        files.push_segment("b.000001", &payload).unwrap();
        let file = files.finish().remove(0).1;
        let evs: Vec<_> = file_events(&file).collect::<Result<_>>().unwrap();
        assert_eq!(evs, vec![&fde[..], &q[..], &x[..]]);
    }

    #[test]
    fn a_segment_that_starts_a_file_keeps_one_format_event() {
        let fde = event(FORMAT_DESCRIPTION_EVENT, 120, b"format");
        let mut b = PayloadBuilder::default();
        b.push_format(&fde);
        b.push_event(&fde);
        let mut files = ExportFiles::default();
        files.push_segment("b.000001", &b.take()).unwrap();
        assert_eq!(file_events(&files.finish()[0].1).count(), 1);
    }

    /// The event type codes of a file image, in order.
    fn event_types(file: &[u8]) -> Vec<u8> {
        file_events(file).map(|e| e.unwrap()[4]).collect()
    }

    #[test]
    fn the_next_file_name_counts_up_its_extension() {
        assert_eq!(
            next_file_name("mysql-bin.000009").as_deref(),
            Some("mysql-bin.000010")
        );
        assert_eq!(next_file_name("b.999999").as_deref(), Some("b.1000000"));
        assert_eq!(
            next_file_name("my.host-bin.42").as_deref(),
            Some("my.host-bin.43")
        );
        for bad in ["nodot", "b.", "b.12a", "b.99999999999999999999"] {
            assert_eq!(next_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_stop_event_continues_the_chain_at_the_start_of_the_next_file() {
        // b.000001 ends with a stop event (clean shutdown); b.000002 starts at 4.
        let fde = event(FORMAT_DESCRIPTION_EVENT, 29, b"format");
        let mut b = PayloadBuilder::default();
        b.push_format(&fde);
        b.push_event(&event(2, 124, b"query"));
        b.push_event(&event(16, 146, b"xid"));
        b.push_event(&event(STOP_EVENT, 165, b""));
        b.push_event(&fde);
        b.push_event(&event(2, 53, b"query"));
        let payload = b.take();
        let start = BinlogPos::new("b.000001", 100);
        assert_eq!(
            check_chain(&payload, &start, &BinlogPos::new("b.000002", 53)).unwrap(),
            5
        );
        assert!(check_chain(&payload, &start, &BinlogPos::new("b.000001", 53)).is_err());
        let mut files = ExportFiles::default();
        files.push_segment("b.000001", &payload).unwrap();
        let files = files.finish();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b.000001", "b.000002"]);
        assert_eq!(
            event_types(&files[0].1),
            [FORMAT_DESCRIPTION_EVENT, 2, 16, STOP_EVENT]
        );
        assert_eq!(event_types(&files[1].1), [FORMAT_DESCRIPTION_EVENT, 2]);
    }

    /// A fake rotate as the dump thread sends it mid-stream: no position, artificial flag.
    fn fake_rotate(to: &str) -> Vec<u8> {
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(to.as_bytes());
        let mut e = event(ROTATE_EVENT, 0, &body);
        e[17..19].copy_from_slice(&crate::trx::LOG_EVENT_ARTIFICIAL_F.to_le_bytes());
        e
    }

    #[test]
    fn a_fake_rotate_to_the_next_file_continues_the_chain_and_is_left_out_of_files() {
        // b.000001 ends with no marker (a crash); the server moved on to b.000002.
        let fde = event(FORMAT_DESCRIPTION_EVENT, 29, b"format");
        let payload = |to: &str| {
            let mut b = PayloadBuilder::default();
            b.push_format(&fde);
            b.push_event(&event(2, 124, b"query"));
            b.push_event(&fake_rotate(to));
            b.push_event(&fde);
            b.push_event(&event(2, 53, b"query"));
            b.take()
        };
        let start = BinlogPos::new("b.000001", 100);
        let end = |f: &str| BinlogPos::new(f, 53);
        assert_eq!(
            check_chain(&payload("b.000002"), &start, &end("b.000002")).unwrap(),
            4
        );
        // Anything but the next file is a gap: a skipped file, a reset numbering.
        for other in ["b.000003", "b.000001", "c.000002"] {
            assert!(
                check_chain(&payload(other), &start, &end(other)).is_err(),
                "{other}"
            );
        }
        let mut files = ExportFiles::default();
        files
            .push_segment("b.000001", &payload("b.000002"))
            .unwrap();
        let files = files.finish();
        assert_eq!(files[0].0, "b.000001");
        assert_eq!(event_types(&files[0].1), [FORMAT_DESCRIPTION_EVENT, 2]);
        assert_eq!(files[1].0, "b.000002");
        assert_eq!(event_types(&files[1].1), [FORMAT_DESCRIPTION_EVENT, 2]);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let q = event(2, 300, b"query");
        let mut b = PayloadBuilder::default();
        b.push_event(&q);
        let p = b.take();
        for n in 1..p.len() {
            assert!(records(&p[..n]).any(|r| r.is_err()), "cut at {n}");
        }
        let mut bad_tag = p.clone();
        bad_tag[0] = 9;
        assert!(records(&bad_tag).any(|r| r.is_err()));
        assert!(file_events(b"nope").any(|r| r.is_err()));
    }
}
