//! The source stage: connects the source, resumes where the chain ends, reconnects after
//! retryable errors, and hands items to the segment loop (snapshot parts to the
//! snapshot uploader).

use std::sync::Arc;

use logferry_common::{Position, StreamId};
use logferry_config::{AgentConfig, SourceConfig};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use super::snapshots::InlineSnapshots;
use super::spool_loop::on_spool;
use super::{wait_or_shutdown, Msg, ShutdownRx};
use crate::backoff::Backoff;
use crate::client::ShipperClient;
use crate::error::{AgentError, Result};
use crate::metrics::Metrics;
use crate::resume::ResumePoint;
use crate::sources::{self, Source, SourceItem};
use crate::spool::Spool;

/// Where the source continues: the newest spooled segment, else the checkpoint, else what
/// the shipper holds of the stream (a lost spool directory), else the configured start.
pub(super) async fn initial_position(
    cfg: &AgentConfig,
    spool: &Arc<Spool>,
    client: &ShipperClient,
    metrics: &Metrics,
    mut backoff: Backoff,
    mut shutdown: ShutdownRx,
) -> Result<Option<ResumePoint>> {
    loop {
        match on_spool(spool, |s| s.resume_position()).await {
            Ok(Some(p)) => return Ok(Some(p)),
            Ok(None) => break,
            Err(e @ AgentError::SpoolCorrupt { .. }) => {
                metrics.spool_damaged.inc();
                error!(error = %e, "a spooled segment is damaged: it was moved to quarantine and its range is read again from the source");
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        match client.head(&cfg.agent.stream).await {
            Ok(head) => {
                let kind = sources::kind(&cfg.source);
                let parse = |text: &String| Position::parse(kind, text);
                let Some(end) = head.end.as_ref().map(parse).transpose()? else {
                    return Ok(None);
                };
                let open_trx = head.open_trx.as_ref().map(parse).transpose()?;
                let last_trx = head
                    .last_trx
                    .as_ref()
                    .map(logferry_common::TrxMark::try_from)
                    .transpose()?;
                return Ok(Some(ResumePoint {
                    end,
                    open_trx,
                    origin: head.origin,
                    last_trx,
                }));
            }
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => {
                let wait = backoff.next_delay();
                warn!(error = %e, retry_in = ?wait, "no local checkpoint, and the shipper cannot tell where the stream stands; waiting for it");
                if wait_or_shutdown(wait, &mut shutdown).await {
                    return Err(e);
                }
            }
        }
    }
}

/// What the source task needs besides the source's config.
pub(super) struct SourceTask {
    /// Where the chain ends (the source resumes right after it); `None` for a new stream.
    pub resume: Option<ResumePoint>,
    /// The shipper, asked for the stored segment ends a forked standby may continue from.
    pub client: ShipperClient,
    /// The stream.
    pub stream: StreamId,
    /// Items for the segment loop.
    pub tx: mpsc::Sender<Msg>,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Where inline snapshots are stored.
    pub snapshots: InlineSnapshots,
    /// The end of the newest durably stored segment, from the ship loop.
    pub durable: watch::Receiver<Option<Position>>,
    /// Stops the task.
    pub shutdown: ShutdownRx,
}

impl SourceTask {
    /// Connects, pumps, and reconnects after retryable errors until shutdown or a fatal
    /// error (which goes to the segment loop).
    pub(super) async fn run(mut self, cfg: SourceConfig) {
        let mut first = true;
        loop {
            let connected =
                sources::connect(&cfg, self.resume.as_ref(), &self.client, &self.stream).await;
            let result = match connected {
                Ok(mut src) => {
                    self.backoff.reset();
                    self.snapshots.abort();
                    let at = self.resume.as_ref().map(|r| r.connect_at().clone());
                    if !first && self.tx.send(Msg::Restart(at)).await.is_err() {
                        return;
                    }
                    first = false;
                    let origin = Msg::Origin(src.origin().to_owned(), src.new_leg().cloned());
                    if self.tx.send(origin).await.is_err() {
                        return;
                    }
                    self.pump(&mut src).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return,
                Err(e) if e.is_retryable() => {
                    self.metrics.source_reconnects.inc();
                    let wait = self.backoff.next_delay();
                    warn!(error = %e, retry_in = ?wait, "source unavailable; will reconnect after the last complete transaction");
                    if wait_or_shutdown(wait, &mut self.shutdown).await {
                        return;
                    }
                }
                Err(e) => {
                    let _ = self.tx.send(Msg::Fatal(e)).await;
                    return;
                }
            }
        }
    }

    /// Moves items from `src` into the segment loop until an error; `Ok` when the loop is
    /// gone. Between items it tells the source what became durable.
    async fn pump<S: Source>(&mut self, src: &mut S) -> Result<()> {
        let mut preamble: Vec<u8> = Vec::new();
        loop {
            if self.durable.has_changed().unwrap_or(false) {
                let end = self.durable.borrow_and_update().clone();
                if let Some(end) = end {
                    src.durable(&end).await?;
                }
            }
            let msg = match src.next().await? {
                SourceItem::Event(ev) => {
                    if src.preamble() != preamble.as_slice() {
                        preamble = src.preamble().to_vec();
                        if self.tx.send(Msg::Preamble(preamble.clone())).await.is_err() {
                            return Ok(());
                        }
                    }
                    self.metrics.events_read.inc();
                    self.metrics.bytes_read.inc_by(ev.record.len() as u64);
                    if ev.boundary {
                        let last_trx = ev
                            .trx
                            .clone()
                            .or_else(|| self.resume.as_mut().and_then(|r| r.last_trx.take()));
                        self.resume = Some(ResumePoint {
                            end: ev.end.clone(),
                            open_trx: None,
                            origin: src.origin().to_owned(),
                            last_trx,
                        });
                    }
                    self.at_head(src.head(), Some(&ev.end), Some(ev.time_ms));
                    Msg::Event(ev)
                }
                SourceItem::Heartbeat => {
                    self.at_head(src.head(), self.resume.as_ref().map(|r| &r.end), None);
                    Msg::Heartbeat
                }
                SourceItem::Snapshot(part) => {
                    let Some(at) = self.snapshots.part(part).await? else {
                        continue;
                    };
                    // A snapshot of a place the chain has reached (an AOF rewrite's
                    // base) joins it; only one beyond it restarts the chain there.
                    let joins = self
                        .resume
                        .as_ref()
                        .is_some_and(|r| at.cmp_place(&r.end).is_ok_and(|o| o.is_le()));
                    if joins {
                        continue;
                    }
                    let after_break = ResumePoint {
                        origin: src.origin().to_owned(),
                        ..ResumePoint::at(at.clone())
                    };
                    if let Some(before) = self.resume.replace(after_break) {
                        self.metrics.source_breaks.inc();
                        error!(chain_end = %before, continues_at = %at, "the chain breaks: the source could not continue after its end and sent a new snapshot; restores reach up to the break and from the snapshot on, not across");
                    }
                    Msg::Break(at, src.fork_point().cloned())
                }
            };
            if self.tx.send(msg).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Publishes whether what was read (`read`, its commit time `commit_ms` when it is an
    /// event) has reached the source's known head, and both places for the reports.
    fn at_head(&self, head: Option<Position>, read: Option<&Position>, commit_ms: Option<i64>) {
        let reached = match (&head, read) {
            (Some(h), Some(r)) => r.cmp_place(h).is_ok_and(|o| o.is_ge()),
            _ => false,
        };
        self.metrics.source_at_head.set(u64::from(reached));
        if let Ok(mut marks) = self.metrics.marks.lock() {
            marks.head = head;
            marks.read = read.cloned();
            if commit_ms.is_some() {
                marks.read_commit_ms = commit_ms;
            }
        }
    }
}
