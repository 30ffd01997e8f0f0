//! Redis source: tails a primary or replica over its replication link, as a replica does.
//!
//! The agent logs in, does the replica handshake and asks `PSYNC` for the byte after the
//! stored chain's end. `+CONTINUE` continues the stream; `+FULLRESYNC` sends an RDB first,
//! which becomes a snapshot of the stream ([`super::SnapshotPart`]) and starts a new
//! history of positions (see [`ReplPos`]): the chain breaks there, and the pipeline counts
//! and logs it. Commands become events in AOF form ([`logferry_common::format::redis`]),
//! stamped with the agent's receive time (the stream carries none). The server's `PING`s
//! and `REPLCONF GETACK`s are heartbeats: they advance the offset but are not stored, and
//! their bytes count into the range of the next event (its `#SKIP:` line says how many) so
//! the chain has no holes and every command's offset is known.
//!
//! - [`link`]: the connection, login, handshake and `PSYNC`.
//! - [`rdb`]: the RDB of a full sync, streamed out and checked as it passes.
//! - [`snapshot`]: scheduled snapshots, each a full sync over a second link.

pub mod aof;
pub mod framer;
pub mod link;
pub mod rdb;
pub mod snapshot;

use std::time::Duration;

use logferry_common::format::redis::payload::is_heartbeat;
use logferry_common::format::redis::{resp, ReplPos};
use logferry_common::snapshot::SnapshotContent;
use logferry_common::Position;
use logferry_config::RedisSource as RedisConfig;
use tokio::time::Instant;
use tracing::{info, warn};

use self::framer::Framer;
use self::link::{Link, Psync};
use self::rdb::RdbReceiver;
use super::{SnapshotPart, Source, SourceEvent, SourceItem};
use crate::error::{AgentError, Result};
use crate::metrics::now_ms;

/// Where the link is in the server's stream.
enum Phase {
    /// A full sync's RDB is arriving; the stream continues after it.
    Rdb(Box<RdbReceiver>),
    /// Commands are arriving.
    Stream,
}

/// A live replication link and the bookkeeping that turns its commands into positioned
/// events.
pub struct RedisSource {
    link: Link,
    phase: Phase,
    /// Positions, and the framing of commands into events.
    framer: Framer,
    ack_every: Duration,
    last_ack: Instant,
    /// Whether anything arrived since the last ACK (an idle link yields heartbeats).
    active: bool,
    /// Set until the first boundary that empties what the server had sent.
    catching_up: bool,
    /// After a full resync that forked the stream: where the server's copy of the stored
    /// history ends.
    fork: Option<Position>,
}

/// Connects to the server in `cfg` and continues right after `resume`, or starts with a
/// full sync (a new stream, or a server that no longer holds the offset).
///
/// `chain_end` is the stored chain's end (after `resume` when the chain ends inside a
/// transaction). A promoted server whose copy of the stream's history ends before it holds
/// other bytes at the stored offsets after its copy's end: that is a fork, and the agent
/// asks it for a full sync (a new history) rather than continuing on offsets the store
/// already used.
///
/// # Errors
/// [`AgentError::Unreachable`] (retried), [`AgentError::AccessDenied`],
/// [`AgentError::ServerSetup`] naming the fix.
pub async fn connect(
    cfg: &RedisConfig,
    resume: Option<&ReplPos>,
    chain_end: Option<&ReplPos>,
) -> Result<RedisSource> {
    let ep = cfg.endpoint()?;
    let mut link = Link::open(&ep, cfg.connect_timeout()).await?;
    link.handshake(cfg.announce_port).await?;
    let resume = resume.filter(|r| !r.replid.is_empty());
    let earlier = match resume {
        Some(_) => link.earlier_history().await?,
        None => None,
    };
    let fork = resume.and_then(|r| fork_point(chain_end.unwrap_or(r), earlier.as_ref()));
    let ask = resume
        .filter(|_| fork.is_none())
        .map(|r| (r.replid.as_str(), r.offset));
    let answer = link.psync(ask).await?;
    let (cursor, phase) = match (answer, resume) {
        (Psync::Continue { replid }, Some(r)) if fork.is_none() => {
            let mut at = r.clone();
            if let Some(id) = replid {
                if id != at.replid {
                    info!(old = %at.replid, new = %id, "the server continues the stream under a new replication id (a failover)");
                    at.replid = id;
                }
            }
            info!(addr = link.addr(), at = %at, "+CONTINUE: the server continues the stream where the chain ends");
            (at, Phase::Stream)
        }
        (Psync::Continue { .. }, _) => {
            return Err(AgentError::Protocol(
                "the server answered a request for a full sync with +CONTINUE".into(),
            ))
        }
        (Psync::Full { replid, offset }, resume) => {
            let history = resume.map_or(1, |r| r.history + 1);
            match (resume, &fork) {
                (Some(r), Some(at)) => warn!(
                    addr = link.addr(),
                    chain_end = %r,
                    fork_at = %at,
                    %replid,
                    "+FULLRESYNC from a promoted server that holds the stream only up to {at}: a FORK; the stored commands after it are on the old primary's branch only (export --branch names them); the stream continues from the snapshot this full sync brings"
                ),
                (Some(r), None) => warn!(
                    addr = link.addr(),
                    chain_end = %r,
                    %replid,
                    offset,
                    "+FULLRESYNC: the server no longer holds the stream after the chain's end (its backlog moved on, or its replication id changed); \
                     the chain breaks here and continues from the snapshot this full sync brings"
                ),
                (None, _) => {
                    info!(addr = link.addr(), %replid, offset, "+FULLRESYNC: a new stream starts with the server's snapshot")
                }
            }
            let at = ReplPos::new(history, offset, &replid, 0);
            let server = link.addr().to_owned();
            let rx = RdbReceiver::start(&mut link, server, at.clone()).await?;
            (at, Phase::Rdb(Box::new(rx)))
        }
    };
    Ok(RedisSource {
        framer: Framer::new(cursor),
        link,
        phase,
        ack_every: cfg.ack_every(),
        last_ack: Instant::now(),
        active: false,
        catching_up: true,
        fork: fork.map(Position::Redis),
    })
}

/// Where the server forked the stream ending at `end`: it continued `end`'s history
/// (`earlier`: its id and the last offset of it held) only up to a place before `end` (a
/// replica promoted while behind). `None` when it holds all of it, or another history.
fn fork_point(end: &ReplPos, earlier: Option<&(String, u64)>) -> Option<ReplPos> {
    let (id, last) = earlier?;
    (*id == end.replid && *last < end.offset).then(|| ReplPos::new(end.history, *last, id, 0))
}

impl RedisSource {
    /// One command from the buffer, if a whole one is there: an event, or `None` for a
    /// heartbeat command (consumed) and for an incomplete one.
    async fn command(&mut self) -> Result<Option<Option<SourceEvent>>> {
        let buffered = self.link.buffered();
        let Some(end) = resp::value_end(buffered, 0).map_err(|e| {
            AgentError::Protocol(format!(
                "the replication stream from {} at offset {} is not RESP: {e}",
                self.link.addr(),
                self.framer.cursor().offset
            ))
        })?
        else {
            return Ok(None);
        };
        let bytes = buffered[..end].to_vec();
        self.link.consume(end);
        let args = resp::command_args(&bytes).map_err(|e| {
            AgentError::Protocol(format!(
                "the replication stream from {} at offset {}: {e}",
                self.link.addr(),
                self.framer.cursor().offset
            ))
        })?;
        if is_heartbeat(&args) {
            let getack = args.len() == 3;
            self.framer.skip(end as u64);
            if getack {
                self.link.ack(self.framer.cursor().offset).await?;
                self.last_ack = Instant::now();
            }
            return Ok(Some(None));
        }
        let mut ev = self.framer.command(&bytes, &args, now_ms())?;
        let caught_up = ev.boundary && self.catching_up && self.link.buffered().is_empty();
        if caught_up {
            self.catching_up = false;
        }
        ev.caught_up = caught_up;
        Ok(Some(Some(ev)))
    }

    /// Waits for more bytes, acknowledging the offset read every `ack_every`; `true` when
    /// an ACK fell due with nothing new since the last one (the link is idle).
    async fn wait(&mut self) -> Result<bool> {
        let due = self.last_ack + self.ack_every;
        tokio::select! {
            read = self.link.fill(link::SILENCE_LIMIT) => {
                read?;
                self.active = true;
                Ok(false)
            }
            _ = tokio::time::sleep_until(due) => {
                self.link.ack(self.framer.cursor().offset).await?;
                self.last_ack = Instant::now();
                let idle = !self.active;
                self.active = false;
                Ok(idle)
            }
        }
    }
}

impl Source for RedisSource {
    async fn next(&mut self) -> Result<SourceItem> {
        loop {
            if let Phase::Rdb(rx) = &mut self.phase {
                match rx.next(&mut self.link).await? {
                    Some(part) => return Ok(SourceItem::Snapshot(part)),
                    None => {
                        let Phase::Rdb(rx) = std::mem::replace(&mut self.phase, Phase::Stream)
                        else {
                            continue;
                        };
                        let (at, content) = rx.finish().await?;
                        self.link.ack(at.offset).await?;
                        self.last_ack = Instant::now();
                        self.framer = Framer::new(at.clone());
                        return Ok(SourceItem::Snapshot(SnapshotPart::End {
                            position: Position::Redis(at),
                            content: SnapshotContent::Redis(content),
                        }));
                    }
                }
            }
            match self.command().await? {
                Some(Some(ev)) => return Ok(SourceItem::Event(ev)),
                Some(None) => continue,
                None => {}
            }
            if self.wait().await? {
                return Ok(SourceItem::Heartbeat);
            }
        }
    }

    fn preamble(&self) -> &[u8] {
        self.framer.preamble()
    }

    fn head(&self) -> Option<Position> {
        // Pings advance the offset but are not data: the head is the last event read.
        Some(Position::Redis(self.framer.emitted().clone()))
    }

    async fn durable(&mut self, _end: &Position) -> Result<()> {
        Ok(())
    }

    fn origin(&self) -> &str {
        ""
    }

    fn new_leg(&self) -> Option<&crate::sources::NewLeg> {
        None
    }

    fn fork_point(&self) -> Option<&Position> {
        self.fork.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "8f0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c";

    #[test]
    fn a_full_resync_is_a_fork_only_on_a_server_that_holds_the_history_short_of_its_end() {
        let end = ReplPos::new(2, 5000, OLD, 3);
        let behind = (OLD.to_owned(), 4200);
        assert_eq!(
            fork_point(&end, Some(&behind)),
            Some(ReplPos::new(2, 4200, OLD, 0))
        );
        // Another history, no earlier history, or one holding the whole chain: a break.
        assert_eq!(fork_point(&end, Some(&("x".repeat(40), 4200))), None);
        assert_eq!(fork_point(&end, None), None);
        assert_eq!(fork_point(&end, Some(&(OLD.to_owned(), 5000))), None);
    }
}
