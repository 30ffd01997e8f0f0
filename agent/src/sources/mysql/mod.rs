//! MySQL / MariaDB source: tails the binlog as a replica over the replication protocol.
//!
//! Events are kept byte for byte (rebuilt from the decoded event, CRC32 verified against the
//! server's checksum), framed as [`logferry_common::format::mysql`] records. Positions are a
//! binlog file and offset, annotated at transaction boundaries with the GTID state
//! (MariaDB's, or MySQL's GTID set when `gtid_mode` is on).
//!
//! - [`connect`](mod@connect): preflight checks (binlog on, ROW format, privileges) and the dump request.
//! - [`events`]: rotate targets, as pure functions.
//! - [`snapshot`]: full snapshots from a replica paused on the apply side.

pub mod accounts;
pub mod connect;
pub mod events;
pub mod snapshot;
pub mod tls;

use std::panic::AssertUnwindSafe;

use futures::{FutureExt, StreamExt};
use logferry_common::format::mysql as binlog;
use logferry_common::{BinlogPos, Position, TrxMark};
use mysql_async::binlog::events::Event;
use mysql_async::binlog::{BinlogChecksumAlg, BinlogVersion};
use mysql_async::BinlogStream;

use self::events::{fake_rotate_target, rotate_target};
use super::{NewLeg, Source, SourceEvent, SourceItem};
use crate::error::{AgentError, Result};
use logferry_common::format::mysql::{
    code, ServerGtids, TrxFingerprint, TrxTracker, LOG_EVENT_ARTIFICIAL_F,
};

pub use self::connect::connect;

/// How long the successor check may take to receive the transaction it checks.
const SUCCESSOR_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// A live binlog stream and the bookkeeping that turns its events into positioned records.
pub struct MysqlSource {
    stream: BinlogStream,
    addr: String,
    /// Where the next stored event must start; `None` until the server names the file.
    cursor: Option<BinlogPos>,
    gtid: ServerGtids,
    /// Whether `gtid` is the full server state (so positions may carry it).
    gtid_known: bool,
    trx: TrxTracker,
    /// Whether a format-description event arrived on this connection.
    seen_fde: bool,
    /// A format record of the format-description event in force.
    preamble: Vec<u8>,
    /// The server is MariaDB: it leaves out the ANNOTATE_ROWS event written before each
    /// statement's TABLE_MAP (it is sent only on request), so a TABLE_MAP may start further on.
    mariadb: bool,
    /// The binlog files the server listed when the source connected: what a fake rotate
    /// may name (besides the one after the last).
    known_files: Vec<String>,
    /// The server's binlog end when the source connected, until a boundary reaches it.
    catch_up_to: Option<BinlogPos>,
    /// The newest place the server is known to have written: its binlog end at connect,
    /// then where the stream stood at the last heartbeat (the server sends one only
    /// when it has sent everything).
    head: Option<BinlogPos>,
    /// The server read, as segments record it.
    origin: String,
    /// The leg of the stream this server's places are on.
    leg: u32,
    /// Whether the events of the open transaction carry a CRC32 (from the format event).
    crc32: bool,
    /// The transaction in progress: its GTID, the GTID state before it, its fingerprint.
    trx_mark: Option<Box<(String, String, TrxFingerprint)>>,
    /// This connection continues the stream on another server: set until the checks of
    /// the dump's first transaction are done.
    successor: Option<Box<connect::Successor>>,
    /// Where this connection's new leg joins the chain, when it began one.
    new_leg: Option<NewLeg>,
}

/// What [`connect`] established, for [`MysqlSource::new`].
pub(super) struct Dump {
    stream: BinlogStream,
    addr: String,
    origin: String,
    mariadb: bool,
    leg: u32,
    cursor: Option<BinlogPos>,
    gtid: ServerGtids,
    gtid_known: bool,
    known_files: Vec<String>,
    catch_up_to: Option<BinlogPos>,
    successor: Option<connect::Successor>,
}

impl MysqlSource {
    fn new(d: Dump) -> Self {
        MysqlSource {
            stream: d.stream,
            addr: d.addr,
            cursor: d.cursor,
            gtid: d.gtid,
            gtid_known: d.gtid_known,
            trx: TrxTracker::default(),
            seen_fde: false,
            preamble: Vec::new(),
            mariadb: d.mariadb,
            known_files: d.known_files,
            head: d.catch_up_to.clone(),
            catch_up_to: d.catch_up_to,
            origin: d.origin,
            leg: d.leg,
            crc32: true,
            trx_mark: None,
            new_leg: d.successor.as_ref().map(|s| NewLeg {
                continues: Position::Mysql(s.continues.clone()),
                forks_at: s.forks_at.clone().map(Position::Mysql),
            }),
            successor: d.successor.map(Box::new),
        }
    }

    /// A place on this server's leg.
    fn place(&self, file: String, offset: u64) -> Result<BinlogPos> {
        Ok(server_pos(file, offset)?.on_leg(self.leg))
    }

    fn handle(&mut self, ev: &Event) -> Result<Option<SourceItem>> {
        let h = ev.header();
        let ty = h.event_type_raw();
        let flags = h.flags_raw();
        let log_pos = u64::from(h.log_pos());
        let size = u64::from(h.event_size());
        if ty == code::HEARTBEAT || ty == code::MYSQL_HEARTBEAT_V2 {
            if let Some(c) = &self.cursor {
                self.saw(c.clone());
            }
            return Ok(Some(SourceItem::Heartbeat));
        }
        if ty == code::MYSQL_GTID_TAGGED {
            return Err(AgentError::ServerSetup(
                "a transaction under a tagged GTID (MySQL 8.4 `UUID:tag:N`): tagged GTIDs are not supported yet; \
                 leave gtid_next untagged"
                    .into(),
            ));
        }
        if ty == code::TRANSACTION_PAYLOAD || code::MARIADB_COMPRESSED.contains(&ty) {
            return Err(AgentError::ServerSetup(format!(
                "compressed binlog events (type {ty}) are not supported yet; \
                 turn off binlog_transaction_compression (MySQL) or log_bin_compress (MariaDB)"
            )));
        }
        let artificial = flags & LOG_EVENT_ARTIFICIAL_F != 0 || log_pos == 0;
        if ty == code::FORMAT_DESCRIPTION {
            self.preamble = framed(ev, binlog::TAG_FORMAT, self.cursor.as_ref())?;
            self.crc32 = binlog::fde_has_crc32(&self.preamble[5..]);
            self.seen_fde = true;
        }
        if ty == code::ROTATE && artificial {
            let mut known = self.known_files.clone();
            if let Some(c) = &self.cursor {
                known.push(c.file().to_owned());
            }
            let (pos, file) = fake_rotate_target(ev.data(), &known)?;
            let Some(cursor) = self.cursor.clone() else {
                self.cursor = Some(self.place(file, pos)?);
                return Ok(None);
            };
            if cursor.file() == file {
                return Ok(None);
            }
            // Mid-stream, the server sends a fake rotate only once it has sent the file
            // before to its end: to the next file, that file ended with neither a rotate nor
            // a stop event (the server crashed) and nothing was skipped. The fake rotate is
            // stored as the chain's proof of that, under the rule every reader checks.
            let to = self.place(file, pos)?;
            let header = binlog::EventHeader {
                timestamp: h.timestamp(),
                event_type: ty,
                server_id: h.server_id(),
                event_size: h.event_size(),
                log_pos: h.log_pos(),
                flags,
            };
            if !binlog::is_file_switch(&header, cursor.file(), &to) {
                return Err(AgentError::Gap(format!(
                    "the stream is at {cursor} but the server continues in {to} \
                     (binlog reset or purged?): take a new snapshot and start the stream again"
                )));
            }
            return self.emit(ev, cursor, to);
        }
        if artificial {
            return Ok(None);
        }
        let cursor = self.cursor.clone().ok_or_else(|| {
            AgentError::Protocol("event arrived before the server named the binlog file".into())
        })?;
        let start_off = log_pos.checked_sub(size).ok_or_else(|| {
            AgentError::Protocol(format!("event ends at {log_pos} but is {size} bytes long"))
        })?;
        let mut cursor = cursor;
        if self.successor.is_some() && self.trx_mark.is_none() {
            // A dump by GTID on another server skips the transactions before its start:
            // until the first one arrives, events are taken where they are (and not stored).
            cursor = cursor.at(start_off);
        }
        if start_off != cursor.offset {
            if log_pos <= cursor.offset {
                return Ok(None);
            }
            if !(start_off > cursor.offset && ty == code::TABLE_MAP && self.mariadb) {
                return Err(AgentError::Gap(format!(
                    "expected the next event at {}:{} but the server sent one at {}:{start_off}",
                    cursor.file(),
                    cursor.offset,
                    cursor.file()
                )));
            }
        }
        let body = ev.data();
        match ty {
            code::MARIADB_GTID | code::MYSQL_GTID => {
                // A transaction is marked only where the whole GTID state before it is
                // known: a successor check connects there.
                let before = self.gtid.render();
                self.trx_mark = self
                    .gtid
                    .begin_trx(ty, h.server_id(), body)
                    .filter(|_| self.gtid_known)
                    .map(|id| Box::new((id, before, TrxFingerprint::default())));
            }
            // A file's GTID list (MySQL: its previous GTIDs) is the state at its start; a
            // dump by GTID on another server starts later in the file, where the state is
            // the one it was asked for.
            code::MARIADB_GTID_LIST | code::MYSQL_PREVIOUS_GTIDS if self.successor.is_none() => {
                if !self.gtid.file_state(ty, body) {
                    return Err(AgentError::ServerSetup(format!(
                        "the binlog's GTID state at the start of {} does not read (tagged GTIDs, MySQL 8.4, are not supported yet)",
                        cursor.file()
                    )));
                }
                self.gtid_known = true;
            }
            _ => {}
        }
        let end = if ty == code::ROTATE {
            let (pos, file) = rotate_target(body)?;
            self.place(file, pos)?
        } else if let Some(next) = (ty == code::STOP)
            .then(|| binlog::after_stop(&cursor))
            .flatten()
        {
            next
        } else {
            cursor.at(log_pos)
        };
        self.emit(ev, cursor, end)
    }

    /// Moves the known head forward to `at` when `at` is past it.
    fn saw(&mut self, at: BinlogPos) {
        if self.head.as_ref().is_none_or(|h| at.cmp_place(h).is_gt()) {
            self.head = Some(at);
        }
    }

    /// The stored item for an event that runs from `start` to `end`: transaction boundary,
    /// GTID state at a boundary, catch-up mark, and the verbatim record.
    fn emit(
        &mut self,
        ev: &Event,
        start: BinlogPos,
        mut end: BinlogPos,
    ) -> Result<Option<SourceItem>> {
        let h = ev.header();
        let boundary = self.trx.after(h.event_type_raw(), ev.data());
        if boundary && self.gtid_known {
            let g = self.gtid.render();
            end.gtid = (!g.is_empty()).then_some(g);
        }
        let record = framed(ev, binlog::TAG_EVENT, Some(&start))?;
        if let Some(mark) = &mut self.trx_mark {
            mark.2.add(&record[5..], self.crc32);
        }
        let trx = if boundary {
            self.trx_mark.take().map(|mark| {
                let (id, before, fp) = *mark;
                TrxMark {
                    id,
                    before,
                    digest: fp.finish(),
                }
            })
        } else {
            None
        };
        if let Some(plan) = &self.successor {
            // The dump on another server: nothing is stored until its first transaction
            // proved to be the chain's last one (or, with none to check, until it began).
            let Some(check) = &plan.check else {
                if self.trx_mark.is_none() && trx.is_none() {
                    self.cursor = Some(end);
                    return Ok(None);
                }
                self.successor = None;
                return self.stored(ev, start, end, boundary, record, trx);
            };
            if !boundary || trx.is_none() {
                self.cursor = Some(end);
                return Ok(None);
            }
            let got = trx.as_ref().map(|t| (&t.id, t.digest));
            if got != Some((&check.id, check.digest)) {
                let reason = match &trx {
                    Some(t) if t.id == check.id => format!(
                        "it holds the chain's last transaction {} with other content (fingerprint {} where the store has {})",
                        check.id,
                        hex_prefix(&t.digest),
                        hex_prefix(&check.digest)
                    ),
                    Some(t) => format!(
                        "asked for the transactions after GTID state {:?}, it sent {} first where the chain's last one is {} \
                         (a transaction the stream never held: written on this server, or on a server the stream's did not replicate)",
                        check.before, t.id, check.id
                    ),
                    None => format!("it did not send the chain's last transaction {}", check.id),
                };
                return Err(AgentError::NotSuccessor {
                    server: self.origin.clone(),
                    stored: plan.stored_origin.clone(),
                    reason,
                });
            }
            tracing::info!(server = %self.origin, last_trx = %check.id, at = %end, "the server holds the chain's last transaction with the same content: it continues the stream");
            self.successor = None;
            self.cursor = Some(end);
            return Ok(None);
        }
        self.stored(ev, start, end, boundary, record, trx)
    }

    /// The item for an event that is stored.
    fn stored(
        &mut self,
        ev: &Event,
        mut start: BinlogPos,
        end: BinlogPos,
        boundary: bool,
        record: Vec<u8>,
        trx: Option<TrxMark>,
    ) -> Result<Option<SourceItem>> {
        let h = ev.header();
        let caught_up = boundary
            && self
                .catch_up_to
                .as_ref()
                .is_some_and(|head| end.cmp_place(head).is_ge());
        if caught_up {
            self.catch_up_to = None;
        }
        start.gtid = None;
        self.cursor = Some(end.clone());
        Ok(Some(SourceItem::Event(SourceEvent {
            record,
            start: Position::Mysql(start),
            end: Position::Mysql(end),
            time_ms: i64::from(h.timestamp()) * 1000,
            boundary,
            caught_up,
            trx,
        })))
    }
}

impl MysqlSource {
    /// The next event of the dump.
    async fn read_event(&mut self) -> Result<Event> {
        let next = AssertUnwindSafe(self.stream.next()).catch_unwind().await;
        match next {
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                let at = self
                    .cursor
                    .as_ref()
                    .map_or_else(|| "the stream's start".to_owned(), ToString::to_string);
                Err(AgentError::Protocol(format!(
                    "the binlog decoder failed on a truncated or malformed event after {at} ({why})"
                )))
            }
            Ok(None) => Err(AgentError::Stream {
                addr: self.addr.clone(),
                reason: "the server ended the binlog stream".into(),
            }),
            Ok(Some(Err(e))) => Err(match &self.successor {
                Some(plan) => plan.refused(&self.addr, &self.origin, e),
                None => connect::stream_error(&self.addr, e),
            }),
            Ok(Some(Ok(ev))) => Ok(ev),
        }
    }

    /// Reads the dump of another server until its first transaction proved to be the one
    /// the successor check names (nothing is stored meanwhile).
    ///
    /// # Errors
    /// [`AgentError::NotSuccessor`] when it is not; the dump's errors.
    pub(super) async fn check_successor(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + SUCCESSOR_CHECK;
        while self.successor.is_some() {
            let ev = match tokio::time::timeout_at(deadline, self.read_event()).await {
                Ok(ev) => ev?,
                Err(_) => return Err(self.not_sent("sent nothing more within the check's time")),
            };
            match self.handle(&ev)? {
                None => {}
                // MySQL also sends a heartbeat after each run of transactions it skips
                // (those in the set it was given): only the deadline ends its check.
                Some(SourceItem::Heartbeat) if !self.mariadb => {}
                // Idle: everything was sent and the checked transaction was not.
                Some(SourceItem::Heartbeat) => {
                    return Err(self.not_sent("had nothing more to send"));
                }
                Some(_) => {
                    return Err(AgentError::Stage(
                        "an event was stored before the server was checked".into(),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The refusal of a server whose dump did not bring the checked transaction.
    fn not_sent(&self, why: &str) -> AgentError {
        let (stored, state) = self.successor.as_ref().map_or_else(
            || (String::new(), String::new()),
            |p| (p.stored_origin.clone(), p.connect_state.clone()),
        );
        AgentError::NotSuccessor {
            server: self.origin.clone(),
            stored,
            reason: format!("asked for what follows GTID state {state:?}, it {why}"),
        }
    }
}

impl Source for MysqlSource {
    async fn next(&mut self) -> Result<SourceItem> {
        loop {
            let ev = self.read_event().await?;
            if let Some(item) = self.handle(&ev)? {
                return Ok(item);
            }
        }
    }

    fn preamble(&self) -> &[u8] {
        &self.preamble
    }

    fn head(&self) -> Option<Position> {
        self.head.clone().map(Position::Mysql)
    }

    async fn durable(&mut self, _end: &Position) -> Result<()> {
        Ok(())
    }

    fn origin(&self) -> &str {
        &self.origin
    }

    fn new_leg(&self) -> Option<&NewLeg> {
        self.new_leg.as_ref()
    }
}

/// The first bytes of a fingerprint in hex, for messages.
fn hex_prefix(digest: &[u8; 32]) -> String {
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A position the server named; a file name that is not a binlog file's is the server's
/// protocol error, never a position that sorts as file 0.
pub(super) fn server_pos(file: String, offset: u64) -> Result<BinlogPos> {
    BinlogPos::new(file, offset).map_err(|e| AgentError::Protocol(format!("the server named {e}")))
}

/// Rebuilds the event's bytes exactly as the server sent them, framed as a payload record
/// with `tag`, in one buffer. The rebuilt CRC32 (computed once, by the re-encoding) must
/// equal the one the server sent.
fn framed(ev: &Event, tag: u8, at: Option<&BinlogPos>) -> Result<Vec<u8>> {
    let size = ev.header().event_size();
    let mut rec = Vec::with_capacity(5 + size as usize);
    rec.extend_from_slice(&binlog::record_header(tag, size));
    ev.write(BinlogVersion::Version4, &mut rec)
        .map_err(|e| AgentError::Protocol(format!("cannot re-encode event: {e}")))?;
    if rec.len() != 5 + size as usize {
        return Err(AgentError::Protocol(format!(
            "re-encoded event is {} bytes, the server sent {size}",
            rec.len() - 5
        )));
    }
    let crc32 = matches!(
        ev.footer().get_checksum_alg(),
        Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))
    );
    if let (true, Some(sum)) = (crc32, ev.checksum()) {
        if rec[rec.len() - 4..] != sum {
            let at = at.map(|p| p.to_string()).unwrap_or_default();
            return Err(AgentError::Protocol(format!(
                "CRC32 mismatch in event of type {} ending at log_pos {} (after {at})",
                ev.header().event_type_raw(),
                ev.header().log_pos()
            )));
        }
    }
    Ok(rec)
}
