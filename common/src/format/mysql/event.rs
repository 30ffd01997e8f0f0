//! Binlog events as the server writes them: type codes, the v4 header, checksums, and the
//! few bodies (rotate, query) that the stream's structure depends on.

use super::position::{file_seq, BinlogPos};
use crate::{Error, Result};

/// The four bytes every binlog file starts with.
pub const BINLOG_MAGIC: &[u8; 4] = b"\xfebin";
/// Length of a v4 event header.
pub const EVENT_HEADER_LEN: usize = 19;

/// Raw event type codes used here (MySQL and MariaDB share the low ones).
pub mod code {
    /// QUERY_EVENT: a statement, or BEGIN / COMMIT of a transaction.
    pub const QUERY: u8 = 2;
    /// STOP_EVENT: the server shut down cleanly; it continues in the next binlog file.
    pub const STOP: u8 = 3;
    /// ROTATE_EVENT: the server continues in another binlog file.
    pub const ROTATE: u8 = 4;
    /// FORMAT_DESCRIPTION_EVENT.
    pub const FORMAT_DESCRIPTION: u8 = 15;
    /// TABLE_MAP_EVENT: precedes each statement's row events.
    pub const TABLE_MAP: u8 = 19;
    /// XID_EVENT: commit of a transactional (InnoDB) transaction.
    pub const XID: u8 = 16;
    /// HEARTBEAT_LOG_EVENT: sent by the server when idle; not part of the log.
    pub const HEARTBEAT: u8 = 27;
    /// MySQL GTID_LOG_EVENT.
    pub const MYSQL_GTID: u8 = 33;
    /// MySQL ANONYMOUS_GTID_LOG_EVENT.
    pub const MYSQL_ANONYMOUS_GTID: u8 = 34;
    /// MySQL PREVIOUS_GTIDS_LOG_EVENT: the GTID set logged before a binlog file.
    pub const MYSQL_PREVIOUS_GTIDS: u8 = 35;
    /// MySQL HEARTBEAT_LOG_EVENT_V2 (8.0.26+, 64-bit positions).
    pub const MYSQL_HEARTBEAT_V2: u8 = 41;
    /// MySQL GTID_TAGGED_LOG_EVENT (8.4): a transaction under a tagged GTID.
    pub const MYSQL_GTID_TAGGED: u8 = 42;
    /// MySQL TRANSACTION_PAYLOAD_EVENT (binlog transaction compression).
    pub const TRANSACTION_PAYLOAD: u8 = 40;
    /// MariaDB GTID_EVENT: starts a transaction (replaces BEGIN).
    pub const MARIADB_GTID: u8 = 162;
    /// MariaDB ANNOTATE_ROWS_EVENT: the statement text before row events, sent only to
    /// replicas that ask for it.
    pub const MARIADB_ANNOTATE_ROWS: u8 = 160;
    /// MariaDB GTID_LIST_EVENT: the GTID state at the start of a binlog file.
    pub const MARIADB_GTID_LIST: u8 = 163;
    /// First and last MariaDB compressed event codes (`log_bin_compress`).
    pub const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;
}

/// Flag of artificial events (fake rotate, synthetic events of a dump): not stored, except
/// the fake rotate that proves a crashed file was sent to its end ([`is_file_switch`]).
pub const LOG_EVENT_ARTIFICIAL_F: u16 = 0x20;

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

/// The body of a raw event: without its header and, when `crc32`, its 4-byte checksum.
pub fn event_body(event: &[u8], crc32: bool) -> &[u8] {
    let end = event.len().saturating_sub(if crc32 { 4 } else { 0 });
    event.get(EVENT_HEADER_LEN..end).unwrap_or_default()
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
        return Err(Error::corrupt_in(
            "binlog payload",
            "rotate event too short",
        ));
    }
    let mut pos = [0u8; 8];
    pos.copy_from_slice(&body[..8]);
    let name = std::str::from_utf8(&body[8..])
        .map_err(|_| Error::corrupt_in("binlog payload", "rotate event file name is not UTF-8"))?;
    Ok((u64::from_le_bytes(pos), name.to_owned()))
}

/// The binlog file the server writes after `name`: the numeric extension plus one, at
/// least as wide (`mysql-bin.000009` → `mysql-bin.000010`, `b.999999` → `b.1000000`).
/// `None` when the name has no numeric extension.
pub fn next_file_name(name: &str) -> Option<String> {
    let next = file_seq(name)?.checked_add(1)?;
    let (base, ext) = name.rsplit_once('.')?;
    Some(format!("{base}.{next:0width$}", width = ext.len()))
}

/// Where the stream continues after a stop event at `at`: the start of the next file
/// (position 4, after the magic), on the same leg. `None` when the next file's name cannot
/// be derived.
pub fn after_stop(at: &BinlogPos) -> Option<BinlogPos> {
    next_file_name(at.file()).and_then(|next| at.moved_to(next, BinlogPos::FIRST_EVENT_OFFSET).ok())
}

/// Whether an event is a fake rotate the server sent mid-stream to move on to the next
/// file: artificial, no position of its own, naming the file after `from` at its start.
/// The dump thread sends one only after the file before was sent to its end, so it marks a
/// file that ended with neither a rotate nor a stop event (the server crashed) without
/// hiding a gap. It is kept in the stream as that proof and left out of exported files.
pub fn is_file_switch(header: &EventHeader, from: &str, to: &BinlogPos) -> bool {
    header.event_type == code::ROTATE
        && header.log_pos == 0
        && header.flags & LOG_EVENT_ARTIFICIAL_F != 0
        && to.offset == 4
        && next_file_name(from).is_some_and(|next| next == to.file())
}

/// Where a rotate event (whole, with its checksum when `crc32`) points to.
///
/// # Errors
/// [`Error::Corrupt`] when the body is too short or the name is not UTF-8.
pub fn rotate_event_target(ev: &[u8], crc32: bool) -> Result<(u64, String)> {
    rotate_target(event_body(ev, crc32))
}

/// The statement text of a QUERY event body (checksum already removed).
///
/// Body: thread id (4), exec time (4), schema length (1), error code (2), status-vars
/// length (2), status vars, schema, NUL, query.
pub fn query_text(body: &[u8]) -> Option<String> {
    let schema_len = *body.get(8)? as usize;
    let vars_len = u16::from_le_bytes([*body.get(11)?, *body.get(12)?]) as usize;
    let start = 13 + vars_len + schema_len + 1;
    body.get(start..)
        .map(|q| String::from_utf8_lossy(q).into_owned())
}
