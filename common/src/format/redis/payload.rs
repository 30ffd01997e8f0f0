//! The segment payload of a Redis stream: AOF form. Commands are RESP arrays exactly as the
//! server propagated them, and a `#TS:<unix seconds>` line stands before the first command
//! of each new second, as Redis 7 writes its AOF with `aof-timestamp-enabled yes`. Every
//! payload starts with the `SELECT` in force (after an optional `#TS:` line), so that it is
//! readable alone; that first `SELECT` is the preamble, not an event of the stream.
//!
//! The server's heartbeats (`PING`, `REPLCONF GETACK`) advance the replication offset but
//! are not stored; a `#SKIP:<bytes>` line before the next command says how many bytes of
//! the stream they took, so every command's offset is known ([`Command::skipped`]) and a
//! restore can stop at an exact offset. Redis's AOF loader and `redis-check-aof` pass over
//! any line that starts with `#`.
//!
//! Restores stop only between transactions: a command inside `MULTI` … `EXEC` (Redis 7
//! also wraps the effects of a script in one) is not a place to stop.

use super::{resp, ReplPos};
use crate::{Error, Result};

/// The prefix of a timestamp annotation.
pub const TS_PREFIX: &[u8] = b"#TS:";

/// The prefix of the annotation of heartbeat bytes that were not stored.
pub const SKIP_PREFIX: &[u8] = b"#SKIP:";

/// `#TS:<secs>\r\n`.
pub fn ts_line(secs: i64) -> Vec<u8> {
    format!("#TS:{secs}\r\n").into_bytes()
}

/// `#SKIP:<bytes>\r\n`.
pub fn skip_line(bytes: u64) -> Vec<u8> {
    format!("#SKIP:{bytes}\r\n").into_bytes()
}

/// Whether a command of the replication stream (its arguments) is a heartbeat: a bare
/// `PING` or `REPLCONF GETACK *`, as a primary sends them. Heartbeats advance the offset
/// but are not stored; their bytes count into the next command's `#SKIP:`, and
/// [`heartbeats`] rebuilds any run of them.
pub fn is_heartbeat(args: &[&[u8]]) -> bool {
    match args {
        [ping] => ping.eq_ignore_ascii_case(b"PING"),
        [replconf, getack, star] => {
            replconf.eq_ignore_ascii_case(b"REPLCONF")
                && getack.eq_ignore_ascii_case(b"GETACK")
                && *star == b"*"
        }
        _ => false,
    }
}

/// Heartbeat commands (`PING`, `REPLCONF GETACK *`) exactly `n` bytes long, as the
/// unstored heartbeats a `#SKIP:<n>` line stands for: a feed that continues a replica's
/// history byte for byte sends them in their place. `None` for a length no mix of the two
/// makes (a skip count no server sent).
pub fn heartbeats(n: u64) -> Option<Vec<u8>> {
    let ping = resp::encode(&["PING"]);
    let getack = resp::encode(&["REPLCONF", "GETACK", "*"]);
    let (p, g) = (ping.len() as u64, getack.len() as u64);
    let acks = (0..p).find(|k| k * g <= n && (n - k * g) % p == 0)?;
    let pings = (n - acks * g) / p;
    let mut out = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..acks {
        out.extend_from_slice(&getack);
    }
    for _ in 0..pings {
        out.extend_from_slice(&ping);
    }
    Some(out)
}

/// One command of a payload.
#[derive(Debug)]
pub struct Command<'a> {
    /// The command as stored (a RESP array).
    pub bytes: &'a [u8],
    /// Its arguments; the first is the command's name.
    pub args: Vec<&'a [u8]>,
    /// The last `#TS:` annotation at or before it in this payload, unix seconds.
    pub ts: Option<i64>,
    /// `true` for the payload's leading `SELECT`.
    pub preamble: bool,
    /// Bytes of the replication stream between the previous command and this one that
    /// were not stored (heartbeats), from `#SKIP:` lines.
    pub skipped: u64,
}

impl Command<'_> {
    /// Bytes of the replication stream this command and the heartbeats before it take: the
    /// preamble takes none (it is not part of the stream).
    pub fn stream_bytes(&self) -> u64 {
        self.skipped.saturating_add(if self.preamble {
            0
        } else {
            self.bytes.len() as u64
        })
    }
}

impl Command<'_> {
    /// Whether the command's name is `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.args
            .first()
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The db a `SELECT` selects.
    pub fn selected_db(&self) -> Option<u32> {
        selected_db(&self.args)
    }
}

/// The db the command with `args` selects, when it is a `SELECT` with a db number.
pub fn selected_db(args: &[&[u8]]) -> Option<u32> {
    if !args.first()?.eq_ignore_ascii_case(b"SELECT") {
        return None;
    }
    std::str::from_utf8(args.get(1)?).ok()?.parse().ok()
}

/// Walks the commands of `payload` in order; `f` returns `false` to stop early.
///
/// # Errors
/// [`Error::Corrupt`] naming the byte offset where the payload stops being AOF form, or
/// when it does not start with its `SELECT`; `f`'s errors.
pub fn walk<'a>(payload: &'a [u8], mut f: impl FnMut(Command<'a>) -> Result<bool>) -> Result<()> {
    let mut at = 0;
    let mut ts = None;
    let mut skipped = 0u64;
    let mut first = true;
    let bad =
        |at: usize, why: String| Error::corrupt_in("Redis payload", format!("at byte {at}: {why}"));
    while at < payload.len() {
        if payload[at] == b'#' {
            let rest = &payload[at..];
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad(at, "an annotation does not end".into()))?;
            let line = &rest[..end];
            if let Some(secs) = line.strip_prefix(TS_PREFIX) {
                ts = Some(
                    std::str::from_utf8(secs)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad(at, "a #TS: annotation without a number".into()))?,
                );
            } else if let Some(n) = line.strip_prefix(SKIP_PREFIX) {
                skipped = std::str::from_utf8(n)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .and_then(|n| skipped.checked_add(n))
                    .ok_or_else(|| bad(at, "a #SKIP: annotation without a number".into()))?;
            }
            at += end + 2;
            continue;
        }
        let end = resp::value_end(payload, at)
            .map_err(|e| bad(at, e.to_string()))?
            .ok_or_else(|| bad(at, "the last command is cut off".into()))?;
        let bytes = &payload[at..end];
        let args = resp::command_args(bytes).map_err(|e| bad(at, e.to_string()))?;
        let cmd = Command {
            bytes,
            args,
            ts,
            preamble: first,
            skipped: std::mem::take(&mut skipped),
        };
        if first && cmd.selected_db().is_none() {
            return Err(bad(at, "the payload does not start with its SELECT".into()));
        }
        first = false;
        if !f(cmd)? {
            return Ok(());
        }
        at = end;
    }
    if first {
        return Err(bad(0, "the payload holds no SELECT".into()));
    }
    Ok(())
}

/// Where transactions end: tracks `MULTI` … `EXEC` / `DISCARD` across commands (and across
/// segments, which may end inside one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrxTracker {
    in_multi: bool,
}

impl TrxTracker {
    /// A tracker that starts inside a transaction when `in_multi`.
    pub fn new(in_multi: bool) -> Self {
        TrxTracker { in_multi }
    }

    /// Takes the next command (by name); `true` when a restore may stop right after it.
    pub fn after(&mut self, name: &[u8]) -> bool {
        if name.eq_ignore_ascii_case(b"MULTI") {
            self.in_multi = true;
        } else if name.eq_ignore_ascii_case(b"EXEC") || name.eq_ignore_ascii_case(b"DISCARD") {
            self.in_multi = false;
            return true;
        }
        !self.in_multi
    }

    /// Whether a transaction is open.
    pub fn in_multi(&self) -> bool {
        self.in_multi
    }
}

/// The stream offset after `cmd`, which starts at `offset`.
///
/// # Errors
/// [`Error::Corrupt`] when the sum passes the largest offset (crafted `#SKIP:` lines).
pub fn advance(offset: u64, cmd: &Command<'_>) -> Result<u64> {
    offset.checked_add(cmd.stream_bytes()).ok_or_else(|| {
        Error::corrupt_in(
            "Redis payload",
            format!("the stream offset passes 2^64 after {offset}"),
        )
    })
}

/// Checks that a segment from `start` to `end` is one run of one history and that its
/// `payload` is AOF form from its `SELECT` to its end, its commands and skipped heartbeat
/// bytes adding up to exactly the range it claims; returns its event count (commands after
/// the preamble).
///
/// # Errors
/// [`Error::Corrupt`] for a segment across histories, running backwards, or whose
/// commands do not fill its range; as [`walk`].
pub fn check_payload(payload: &[u8], start: &ReplPos, end: &ReplPos) -> Result<u64> {
    if start.history != end.history || start.offset > end.offset {
        return Err(Error::corrupt_in(
            "Redis segment",
            format!("it runs from {start} to {end}: not one run of one history"),
        ));
    }
    let mut events = 0u64;
    let mut offset = start.offset;
    walk(payload, |c| {
        events += u64::from(!c.preamble);
        offset = advance(offset, &c)?;
        Ok(true)
    })?;
    if offset != end.offset {
        return Err(Error::corrupt_in(
            "Redis segment",
            format!(
                "it claims {start} to {end}, but its commands run from offset {} to {offset}",
                start.offset
            ),
        ));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    #[test]
    fn heartbeats_fill_exactly_what_pings_and_getacks_took() {
        use super::heartbeats;
        assert_eq!(heartbeats(0), Some(Vec::new()));
        assert_eq!(
            heartbeats(14).as_deref(),
            Some(&b"*1\r\n$4\r\nPING\r\n"[..])
        );
        for (pings, acks) in [(3u64, 0u64), (0, 2), (5, 3), (1, 13)] {
            let n = pings * 14 + acks * 37;
            let bytes = heartbeats(n).expect("a mix the server could send");
            assert_eq!(bytes.len() as u64, n);
            let mut at = 0;
            while at < bytes.len() {
                let end = super::resp::value_end(&bytes, at).unwrap().unwrap();
                let args = super::resp::command_args(&bytes[at..end]).unwrap();
                assert!(args[0] == b"PING" || args[1] == b"GETACK", "{args:?}");
                at = end;
            }
        }
        assert_eq!(heartbeats(1), None);
        assert_eq!(heartbeats(13), None);
    }

    use super::*;
    use resp::{encode, select};

    fn payload() -> Vec<u8> {
        [
            ts_line(100),
            select(2),
            encode(&["SET", "a", "1"]),
            ts_line(101),
            skip_line(14),
            encode(&["MULTI"]),
            encode(&["INCR", "a"]),
            encode(&["EXEC"]),
        ]
        .concat()
    }

    /// The stream bytes [`payload`] covers: its commands after the preamble and 14 skipped.
    fn covered() -> u64 {
        [
            encode(&["SET", "a", "1"]),
            encode(&["MULTI"]),
            encode(&["INCR", "a"]),
            encode(&["EXEC"]),
        ]
        .concat()
        .len() as u64
            + 14
    }

    #[test]
    fn commands_carry_their_second_and_transactions_their_boundaries() {
        let mut seen = Vec::new();
        let mut trx = TrxTracker::default();
        walk(&payload(), |c| {
            let name = String::from_utf8_lossy(c.args[0]).into_owned();
            let boundary = trx.after(c.args[0]);
            seen.push((name, c.ts, c.preamble, boundary));
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen[0], ("SELECT".into(), Some(100), true, true));
        assert_eq!(seen[1], ("SET".into(), Some(100), false, true));
        assert_eq!(seen[2], ("MULTI".into(), Some(101), false, false));
        assert!(!seen[3].3, "inside MULTI is no place to stop");
        assert_eq!(seen[4], ("EXEC".into(), Some(101), false, true));
        let (a, b) = (
            ReplPos::new(1, 10, "", 0),
            ReplPos::new(1, 10 + covered(), "", 0),
        );
        assert_eq!(check_payload(&payload(), &a, &b).unwrap(), 4);
        assert!(check_payload(&payload(), &b, &a).is_err());
        assert!(check_payload(&payload(), &a, &ReplPos::new(2, 90, "", 0)).is_err());
        let short = ReplPos::new(1, 9 + covered(), "", 0);
        let e = check_payload(&payload(), &a, &short)
            .unwrap_err()
            .to_string();
        assert!(e.contains("commands run from offset 10"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_walk_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512), end in proptest::prelude::any::<u64>()) {
            let mut with_skip = skip_line(u64::MAX).to_vec();
            with_skip.extend_from_slice(&bytes);
            for p in [&bytes, &with_skip] {
                let _ = check_payload(p, &ReplPos::new(1, 5, "", 0), &ReplPos::new(1, end.max(5), "", 0));
            }
        }

        #[test]
        fn mutated_payloads_walk_without_panicking(at in 0usize..64, byte in proptest::prelude::any::<u8>()) {
            let mut p = payload();
            let i = at % p.len();
            p[i] = byte;
            let _ = check_payload(&p, &ReplPos::new(1, u64::MAX - 3, "", 0), &ReplPos::new(1, u64::MAX, "", 0));
        }
    }

    #[test]
    fn damage_is_named_with_its_offset() {
        let (a, b) = (
            ReplPos::new(1, 10, "", 0),
            ReplPos::new(1, 10 + covered(), "", 0),
        );
        let check_payload = |p: &[u8]| check_payload(p, &a, &b);
        let p = payload();
        let e = check_payload(&p[..p.len() - 3]).unwrap_err().to_string();
        assert!(e.contains("cut off"), "{e}");
        let e = check_payload(&encode(&["SET", "a", "1"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SELECT"), "{e}");
        let mut p = payload();
        p[12] = b'!';
        assert!(check_payload(&p)
            .unwrap_err()
            .to_string()
            .contains("at byte"));
    }
}
