//! The RDB of a full sync, passed on in parts as it arrives (never whole in memory) and
//! read on a blocking thread beside it, for the manifest's facts and the RDB's checksum:
//! a snapshot whose RDB does not read is never stored.

use std::io::Read;

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
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
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
    tx: Option<mpsc::Sender<Vec<u8>>>,
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
                current: Vec::new(),
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
            let part = match &self.framing {
                RdbFraming::Length(_) => {
                    if self.remaining == 0 {
                        self.done = true;
                        continue;
                    }
                    let n =
                        (self.remaining.min(PART_BYTES as u64) as usize).min(link.buffered().len());
                    self.remaining -= n as u64;
                    link.take(n)
                }
                RdbFraming::Mark(mark) => {
                    let buffered = link.buffered();
                    let found = buffered
                        .windows(mark.len())
                        .position(|w| w == mark.as_slice());
                    match found {
                        Some(i) if i <= PART_BYTES => {
                            let data = link.take(i);
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
                            link.take(n)
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
        let facts = self
            .scan
            .await
            .map_err(|e| AgentError::Stage(format!("the RDB reader died: {e}")))?
            .map_err(|e| {
                AgentError::Snapshot(format!(
                    "the RDB the server {} sent does not read ({e}); it was not stored",
                    self.server
                ))
            })?;
        if facts.bytes != self.received {
            return Err(AgentError::Snapshot(format!(
                "the RDB from {} ends after {} bytes but {} arrived; it was not stored",
                self.server, facts.bytes, self.received
            )));
        }
        let mut at = self.at;
        at.db = facts.repl_stream_db.unwrap_or(0);
        Ok((
            at.clone(),
            RedisSnapshot {
                server: self.server,
                replid: at.replid.clone(),
                offset: at.offset,
                rdb_version: facts.version,
                redis_version: facts.redis_version,
                keys: facts
                    .keys
                    .into_iter()
                    .map(|(db, keys)| DbKeys { db, keys })
                    .collect(),
            },
        ))
    }
}
