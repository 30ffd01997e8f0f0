//! Binlog files rebuilt from segment payloads, which `mariadb-binlog` / `mysqlbinlog` read
//! and replay.

use super::event::{code, is_file_switch, EventHeader, BINLOG_MAGIC};
use super::payload::{walk, Walked};
use super::position::BinlogPos;
use crate::{Error, Result};

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
            if EventHeader::parse(ev)?.event_type != code::FORMAT_DESCRIPTION {
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
        None => {
            first_error = Some(Error::corrupt_in(
                "binlog payload",
                "not a binlog file: magic missing",
            ))
        }
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

/// The name an exported file gets: the original name on the stream's first server,
/// `legN-NAME` on its later ones.
pub fn export_name(at: &BinlogPos) -> String {
    match at.leg() {
        0 => at.file().to_owned(),
        n => format!("leg{n}-{}", at.file()),
    }
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
    /// Adds the payload of the next segment of the chain, whose first event starts at
    /// `start` (the offset is not used). Files of a later leg (another server's binlog)
    /// are named `legN-FILE`, so two servers' files of one name never merge.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the payload is malformed.
    pub fn push_segment(&mut self, start: &BinlogPos, payload: &[u8]) -> Result<()> {
        let mut file = start.at(0);
        walk(&file.clone(), payload, |w| {
            match w {
                Walked::Format(fde) => self.format = Some(fde.to_vec()),
                Walked::Event {
                    bytes, header, end, ..
                } => {
                    if header.event_type == code::FORMAT_DESCRIPTION {
                        self.format = Some(bytes.to_vec());
                    }
                    if is_file_switch(&header, file.file(), end) {
                        // Not part of any file: it only says the next one begins.
                        file = end.at(0);
                        return Ok(true);
                    }
                    let name = export_name(&file);
                    if self.files.last().is_none_or(|(f, _)| *f != name) {
                        let mut w = BinlogFileWriter::new();
                        w.pending_format = self.format.clone();
                        self.files.push((name, w));
                    }
                    if let Some((_, w)) = self.files.last_mut() {
                        w.push_event(bytes)?;
                    }
                    if end.file() != file.file() {
                        file = end.at(0);
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
