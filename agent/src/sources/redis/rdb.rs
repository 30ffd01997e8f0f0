//! The RDB of a full sync, passed on in parts as it arrives (never whole in memory) and
//! read on a blocking thread beside it, for the manifest's facts and the RDB's checksum:
//! a snapshot whose RDB does not read is never stored.

use std::io::Read;

use bytes::Bytes;

use logferry_common::format::redis::rdb::{scan, RdbFacts};
use logferry_common::format::redis::{DbKeys, RedisSnapshot, ReplPos};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::link::{Link, RdbFraming, SILENCE_LIMIT};
use crate::error::{AgentError, Result};
use crate::sources::SnapshotPart;

/// Largest part handed on at a time.
const PART_BYTES: usize = 1024 * 1024;

/// Parts queued for the reading thread.
const QUEUED_PARTS: usize = 4;

/// Feeds the parts from the link to [`scan`] on a blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.blocking_recv() {
                Some(part) => {
                    self.current = part;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// An RDB being received.
pub struct RdbReceiver {
    framing: RdbFraming,
    /// Bytes still to come for a length-framed RDB.
    remaining: u64,
    begun: bool,
    done: bool,
    received: u64,
    tx: Option<mpsc::Sender<Bytes>>,
    scan: JoinHandle<logferry_common::Result<RdbFacts>>,
    at: ReplPos,
    server: String,
}

impl RdbReceiver {
    /// Reads the RDB's framing from `link` (right after `+FULLRESYNC`) and starts the
    /// reading thread; `at` is where the RDB stands.
    ///
    /// # Errors
    /// As [`Link::rdb_framing`].
    pub async fn start(link: &mut Link, server: String, at: ReplPos) -> Result<Self> {
        let framing = link.rdb_framing().await?;
        let remaining = match &framing {
            RdbFraming::Length(n) => *n,
            RdbFraming::Mark(_) => 0,
        };
        let (tx, rx) = mpsc::channel(QUEUED_PARTS);
        let scan = tokio::task::spawn_blocking(move || {
            scan(ChannelReader {
                rx,
                current: Bytes::new(),
                at: 0,
            })
        });
        Ok(RdbReceiver {
            framing,
            remaining,
            begun: false,
            done: false,
            received: 0,
            tx: Some(tx),
            scan,
            at,
            server,
        })
    }

    /// The next part: `Begin` first, then the RDB's bytes; `None` once all of it arrived
    /// (then [`Self::finish`]).
    ///
    /// # Errors
    /// [`AgentError::Stream`] when the link breaks or stays silent (the source reconnects
    /// and the server sends the RDB again).
    pub async fn next(&mut self, link: &mut Link) -> Result<Option<SnapshotPart>> {
        if !self.begun {
            self.begun = true;
            return Ok(Some(SnapshotPart::Begin));
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let part: Bytes = match &self.framing {
                RdbFraming::Length(_) => {
                    if self.remaining == 0 {
                        self.done = true;
                        continue;
                    }
                    let n =
                        (self.remaining.min(PART_BYTES as u64) as usize).min(link.buffered().len());
                    self.remaining -= n as u64;
                    link.take(n).into()
                }
                RdbFraming::Mark(mark) => {
                    let buffered = link.buffered();
                    let found = buffered
                        .windows(mark.len())
                        .position(|w| w == mark.as_slice());
                    match found {
                        Some(i) if i <= PART_BYTES => {
                            let data = link.take(i).into();
                            link.consume(mark.len());
                            self.done = true;
                            data
                        }
                        _ => {
                            // The mark may straddle what has arrived: keep its length back.
                            let n = buffered
                                .len()
                                .saturating_sub(mark.len() - 1)
                                .min(PART_BYTES);
                            link.take(n).into()
                        }
                    }
                }
            };
            if part.is_empty() {
                if !self.done {
                    link.fill(SILENCE_LIMIT).await?;
                }
                continue;
            }
            self.received += part.len() as u64;
            if let Some(tx) = &self.tx {
                // A reader that stopped has found the RDB unreadable: finish says why.
                if tx.send(part.clone()).await.is_err() {
                    self.tx = None;
                }
            }
            return Ok(Some(SnapshotPart::Data(part)));
        }
    }

    /// Where the RDB stands and what the manifest records of it, once every part is out.
    ///
    /// # Errors
    /// [`AgentError::Snapshot`] when the RDB does not read (damaged, cut, or from a
    /// newer Redis than this agent reads): it is not stored.
    pub async fn finish(mut self) -> Result<(ReplPos, RedisSnapshot)> {
        self.tx = None;
        let what = format!("the RDB the server {} sent", self.server);
        let facts = checked_facts(self.scan, &what, self.received).await?;
        let mut at = self.at;
        at.db = facts.repl_stream_db.unwrap_or(0);
        let content = snapshot_content(self.server, &at.replid, at.offset, facts);
        Ok((at, content))
    }
}

/// The facts the reading thread found in an RDB (`what`, for messages) of which `read`
/// bytes were handed on.
///
/// # Errors
/// [`AgentError::Snapshot`] when the RDB does not read (damaged, cut, or from a newer Redis
/// than this agent reads) or its length is not what was handed on: it is not stored.
pub async fn checked_facts(
    scan: JoinHandle<logferry_common::Result<RdbFacts>>,
    what: &str,
    read: u64,
) -> Result<RdbFacts> {
    let facts = scan
        .await
        .map_err(|e| AgentError::Stage(format!("the RDB reader died: {e}")))?
        .map_err(|e| {
            AgentError::Snapshot(format!("{what} does not read ({e}); it was not stored"))
        })?;
    if facts.bytes != read {
        return Err(AgentError::Snapshot(format!(
            "{what} ends after {} bytes but {read} were read; it was not stored",
            facts.bytes
        )));
    }
    Ok(facts)
}

/// The manifest's Redis part for an RDB from `server` that stands at `offset` of `replid`.
pub fn snapshot_content(
    server: String,
    replid: &str,
    offset: u64,
    facts: RdbFacts,
) -> RedisSnapshot {
    RedisSnapshot {
        server,
        replid: replid.to_owned(),
        offset,
        rdb_version: facts.version,
        redis_version: facts.redis_version,
        keys: facts
            .keys
            .into_iter()
            .map(|(db, keys)| DbKeys { db, keys })
            .collect(),
    }
}
