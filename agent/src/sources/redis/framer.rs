//! Turns the commands of a Redis change stream (a replication link's or an AOF file's)
//! into positioned events in AOF form: a `#TS:` line when the second changed (never inside
//! `MULTI`), a `#SKIP:` line for the stream bytes since the previous command that were not
//! stored (heartbeats, the AOF's own annotations, the jump to the next AOF file), then the
//! command. Each event runs from the end of the previous one, so the chain has no holes.

use logferry_common::format::redis::payload::selected_db;
use logferry_common::format::redis::{resp, skip_line, ts_line, ReplPos, TrxTracker};
use logferry_common::Position;

use crate::error::{AgentError, Result};
use crate::sources::SourceEvent;

/// Where a stream stands and what the next event needs to know.
pub struct Framer {
    /// After the last byte of the stream consumed (skipped bytes included).
    cursor: ReplPos,
    /// After the last event handed out: where the next one starts.
    emitted: ReplPos,
    trx: TrxTracker,
    /// The second of the last `#TS:` line written.
    last_ts: Option<i64>,
    /// `SELECT` of the db in force before the last event handed out.
    preamble: Vec<u8>,
}

impl Framer {
    /// A stream that continues right after `at`.
    pub fn new(at: ReplPos) -> Framer {
        Framer {
            preamble: resp::select(at.db),
            emitted: at.clone(),
            cursor: at,
            trx: TrxTracker::default(),
            last_ts: None,
        }
    }

    /// Bytes of the stream that are no command to store; they count into the next event.
    pub fn skip(&mut self, bytes: u64) {
        self.cursor = self.cursor.advanced(bytes, self.cursor.db);
    }

    /// After the last byte consumed.
    pub fn cursor(&self) -> &ReplPos {
        &self.cursor
    }

    /// After the last event handed out.
    pub fn emitted(&self) -> &ReplPos {
        &self.emitted
    }

    /// The `SELECT` of the db in force before the event last handed out: what a segment
    /// that starts with that event begins with.
    pub fn preamble(&self) -> &[u8] {
        &self.preamble
    }

    /// Whether a `MULTI` is open.
    pub fn in_multi(&self) -> bool {
        self.trx.in_multi()
    }

    /// The event of `bytes`, a whole command whose arguments are `args`, received (or
    /// written, by the AOF's clock) at `time_ms`. `caught_up` is left `false`.
    ///
    /// # Errors
    /// [`AgentError::Protocol`] for a `SELECT` without a db number.
    pub fn command(&mut self, bytes: &[u8], args: &[&[u8]], time_ms: i64) -> Result<SourceEvent> {
        let name = args.first().copied().unwrap_or_default();
        let db_before = self.cursor.db;
        let skipped = self.cursor.offset - self.emitted.offset;
        let mut db = db_before;
        if name.eq_ignore_ascii_case(b"SELECT") {
            db = selected_db(args)
                .ok_or_else(|| AgentError::Protocol("a SELECT without a db number".into()))?;
        }
        self.cursor = self.cursor.advanced(bytes.len() as u64, db);
        let secs = time_ms.div_euclid(1000);
        let mut record = Vec::with_capacity(bytes.len() + 32);
        if !self.trx.in_multi() && self.last_ts != Some(secs) {
            record.extend_from_slice(&ts_line(secs));
            self.last_ts = Some(secs);
        }
        if skipped > 0 {
            record.extend_from_slice(&skip_line(skipped));
        }
        record.extend_from_slice(bytes);
        let boundary = self.trx.after(name);
        self.preamble = resp::select(db_before);
        let start = std::mem::replace(&mut self.emitted, self.cursor.clone());
        Ok(SourceEvent {
            record,
            start: Position::Redis(start),
            end: Position::Redis(self.cursor.clone()),
            time_ms,
            boundary,
            caught_up: false,
            trx: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_common::format::redis::{check_payload, resp::encode};

    #[test]
    fn skipped_bytes_and_selects_give_every_command_its_offset() {
        let mut f = Framer::new(ReplPos::new(1, 100, "", 0));
        let mut payload = f.preamble().to_vec();
        let cmds = [encode(&["SELECT", "3"]), encode(&["SET", "k", "v"])];
        f.skip(14);
        for c in &cmds {
            let args = resp::command_args(c).unwrap();
            payload.extend_from_slice(&f.command(c, &args, 5_000).unwrap().record);
        }
        f.skip(7);
        let end = f.emitted().clone();
        assert_eq!(end.db, 3);
        assert_eq!(
            end.offset,
            100 + 14 + (cmds[0].len() + cmds[1].len()) as u64
        );
        assert_eq!(f.cursor().offset, end.offset + 7);
        assert_eq!(
            check_payload(&payload, &ReplPos::new(1, 100, "", 0), &end).unwrap(),
            2
        );
        assert_eq!(f.preamble(), resp::select(3).as_slice());
    }
}
