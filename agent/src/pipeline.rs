//! The running agent: source task → segment loop → seal loop → spool loop → ship loop.
//!
//! Each stage runs on its own and hands work to the next over a bounded channel, so reading
//! the network, compressing and hashing, writing, and uploading overlap on different cores.
//! The source task reads and frames events; the segment loop cuts them into segments at
//! transaction boundaries; the seal loop compresses and hashes each cut segment (on a
//! blocking thread, one segment at a time, in order); the spool loop writes sealed segments
//! to the spool with fsync, in order, while the next one is sealed; the ship loop uploads
//! spooled segments oldest first and advances the checkpoint only on an acknowledgement.
//! When the spool exceeds `agent.spool_max_bytes` the segment loop stops taking events, the
//! channel fills, and the source stops reading (disk, not memory, holds the lag).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logferry_common::segment::Sealer;
use logferry_common::{Compression, Position, Segment, SourceKind};
use logferry_config::cron::Schedule;
use logferry_config::{AgentConfig, SourceConfig};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::client::ShipperClient;
use crate::error::{AgentError, Result};
use crate::metrics::{self, now_ms, Metrics};
use crate::segmenter::{SealJob, Segmenter};
use crate::snapshot;
use crate::sources::{mysql, Source, SourceItem};
use crate::spool::Spool;

/// Events in flight between the source task and the segment loop.
const SOURCE_CHANNEL_EVENTS: usize = 256;

/// Cut segments handed to the seal loop and not yet sealed. One is enough to overlap
/// sealing with filling the next segment; with the one being filled, two payload buffers
/// exist (2 × `segment.max_bytes`), which keeps the agent's memory bounded.
const SEALS_OUTSTANDING: usize = 1;

/// Sealed segments waiting for the spool loop: one, so that the next seal overlaps the
/// fsync of the previous segment.
const WRITES_OUTSTANDING: usize = 1;

/// Cancels everything when it changes to `true`.
pub type ShutdownRx = watch::Receiver<bool>;

/// Messages from the source task to the segmenter loop.
enum Msg {
    Preamble(Vec<u8>),
    Item(SourceItem),
    /// The source reconnected: drop events after the last transaction boundary.
    Restart,
    Fatal(AgentError),
}

/// Read times of segments not yet acknowledged, for the RPO-exposure gauge.
#[derive(Default)]
struct Exposure {
    spooled: Mutex<VecDeque<i64>>,
    open_ms: std::sync::atomic::AtomicI64,
}

impl Exposure {
    fn publish(&self, m: &Metrics) {
        let spooled = self
            .spooled
            .lock()
            .map(|q| q.front().copied())
            .unwrap_or(None);
        let open = self.open_ms.load(Ordering::Relaxed);
        let oldest = spooled.or((open != 0).then_some(open)).unwrap_or(0);
        m.oldest_unacked_read_ms.store(oldest, Ordering::Relaxed);
    }
}

/// Runs the agent until `shutdown` turns `true` or a non-retryable error occurs.
///
/// # Errors
/// The first non-retryable [`AgentError`] of any stage.
pub async fn run(cfg: AgentConfig, shutdown: ShutdownRx) -> Result<()> {
    let spool = Arc::new(Spool::open(&cfg.agent.spool_dir)?);
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = cfg.agent.metrics_listen {
        tokio::spawn(metrics::serve(
            addr,
            cfg.agent.stream.to_string(),
            metrics.clone(),
        ));
    }
    let client = ShipperClient::new(
        &cfg.shipper.url,
        Duration::from_millis(cfg.shipper.timeout_ms),
    )?;
    let retry = Backoff::new(
        Duration::from_millis(cfg.shipper.retry_min_ms),
        Duration::from_millis(cfg.shipper.retry_max_ms),
    );
    let exposure = Arc::new(Exposure::default());
    let sealed = Arc::new(Notify::new());
    let acked = Arc::new(Notify::new());

    if let Err(e) = snapshot::resume_if_left_paused(&cfg).await {
        error!(error = %e, "could not resume the replica left paused by an interrupted snapshot");
    }
    if let Some(snap) = &cfg.snapshot {
        let schedule = snap.schedule()?;
        tokio::spawn(snapshot_schedule(
            cfg.clone(),
            schedule,
            client.clone(),
            shutdown.clone(),
        ));
    }
    let resume = initial_position(&cfg, &spool, &client, retry.clone(), shutdown.clone()).await?;
    info!(stream = %cfg.agent.stream, resume = ?resume.as_ref().map(|p| p.to_string()), compression = ?cfg.segment.compression(), "agent starting");

    // Enough events to keep the network read and the sealing busy at once; a few MiB at
    // most (row events are up to ~8 KiB), so memory stays bounded whatever the lag.
    let (tx, rx) = mpsc::channel(SOURCE_CHANNEL_EVENTS);
    let source_task = tokio::spawn(source_task(
        cfg.source.clone(),
        resume,
        tx,
        retry.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let _abort = AbortOnDrop(source_task);

    let (jobs_tx, jobs_rx) = mpsc::channel(SEALS_OUTSTANDING);
    let (free_tx, free_rx) = mpsc::channel(SEALS_OUTSTANDING);
    let segment_loop = segment_loop(
        &cfg,
        rx,
        SealQueue {
            jobs: jobs_tx,
            free: free_rx,
            outstanding: 0,
        },
        &spool,
        &metrics,
        &exposure,
        &acked,
        shutdown.clone(),
    );
    let (writes_tx, writes_rx) = mpsc::channel(WRITES_OUTSTANDING);
    let seal_loop = seal_loop(jobs_rx, free_tx, writes_tx, cfg.segment.compression());
    let spool_loop = spool_loop(writes_rx, &spool, &metrics, &sealed);
    let ship_loop = ship_loop(
        &client, &spool, &metrics, &exposure, &sealed, &acked, retry, shutdown,
    );
    tokio::try_join!(segment_loop, seal_loop, spool_loop, ship_loop).map(|_| ())
}

/// Takes a snapshot each time `schedule` fires, until shutdown.
async fn snapshot_schedule(
    cfg: AgentConfig,
    schedule: Schedule,
    client: ShipperClient,
    mut shutdown: ShutdownRx,
) {
    loop {
        let now = now_ms() / 1000;
        let Some(next) = schedule.next_after(now) else {
            warn!("snapshot.schedule never fires; no scheduled snapshots");
            return;
        };
        info!(in_seconds = next - now, "next scheduled snapshot");
        if wait_or_shutdown(
            Duration::from_secs((next - now).max(0) as u64),
            &mut shutdown,
        )
        .await
        {
            return;
        }
        match snapshot::take(&cfg, &client, shutdown.clone()).await {
            Ok(m) => info!(id = %m.id, position = %m.position, "scheduled snapshot stored"),
            Err(e) => error!(error = %e, "scheduled snapshot failed"),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn source_kind(cfg: &SourceConfig) -> SourceKind {
    match cfg {
        SourceConfig::Mysql(_) => SourceKind::Mysql,
    }
}

async fn initial_position(
    cfg: &AgentConfig,
    spool: &Spool,
    client: &ShipperClient,
    mut backoff: Backoff,
    mut shutdown: ShutdownRx,
) -> Result<Option<Position>> {
    loop {
        match spool.resume_position() {
            Ok(Some(p)) => return Ok(Some(p)),
            Ok(None) => break,
            Err(e @ AgentError::SpoolCorrupt { .. }) => {
                error!(error = %e, "quarantined a corrupt spool file")
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        match client.head(&cfg.agent.stream).await {
            Ok(head) => {
                let kind = source_kind(&cfg.source);
                return head
                    .end
                    .map(|e| Position::parse(kind, &e))
                    .transpose()
                    .map_err(AgentError::from);
            }
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

/// Sleeps for `d`; returns `true` if shutdown was requested meanwhile.
async fn wait_or_shutdown(d: Duration, shutdown: &mut ShutdownRx) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

async fn source_task(
    cfg: SourceConfig,
    mut resume: Option<Position>,
    tx: mpsc::Sender<Msg>,
    mut backoff: Backoff,
    metrics: Arc<Metrics>,
    mut shutdown: ShutdownRx,
) {
    let SourceConfig::Mysql(mcfg) = &cfg;
    let mut first = true;
    loop {
        let at = resume.as_ref().map(|Position::Binlog(p)| p.clone());
        let result = match mysql::connect(mcfg, at.as_ref()).await {
            Ok(mut src) => {
                backoff.reset();
                if !first && tx.send(Msg::Restart).await.is_err() {
                    return;
                }
                first = false;
                pump(&mut src, &tx, &mut resume, &metrics).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return,
            Err(e) if e.is_retryable() => {
                metrics.source_reconnects.fetch_add(1, Ordering::Relaxed);
                let wait = backoff.next_delay();
                warn!(error = %e, retry_in = ?wait, "source unavailable; will reconnect after the last complete transaction");
                if wait_or_shutdown(wait, &mut shutdown).await {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Msg::Fatal(e)).await;
                return;
            }
        }
    }
}

/// Moves items from `src` into `tx` until an error; `Ok` when the receiver is gone.
async fn pump<S: Source>(
    src: &mut S,
    tx: &mpsc::Sender<Msg>,
    resume: &mut Option<Position>,
    metrics: &Metrics,
) -> Result<()> {
    let mut preamble: Vec<u8> = Vec::new();
    loop {
        let item = src.next().await?;
        if let SourceItem::Event(ev) = &item {
            if src.preamble() != preamble.as_slice() {
                preamble = src.preamble().to_vec();
                if tx.send(Msg::Preamble(preamble.clone())).await.is_err() {
                    return Ok(());
                }
            }
            metrics.events_read.fetch_add(1, Ordering::Relaxed);
            metrics
                .bytes_read
                .fetch_add(ev.record.len() as u64, Ordering::Relaxed);
            if ev.boundary {
                *resume = Some(ev.end.clone());
            }
        }
        if tx.send(Msg::Item(item)).await.is_err() {
            return Ok(());
        }
    }
}

/// The segment loop's ends of the channels to and from the seal loop.
struct SealQueue {
    /// Cut segments, in chain order.
    jobs: mpsc::Sender<SealJob>,
    /// Payload buffers back from sealed segments, for reuse.
    free: mpsc::Receiver<Vec<u8>>,
    /// Jobs sent whose buffer has not come back.
    outstanding: usize,
}

impl SealQueue {
    fn returned(&mut self, buf: Vec<u8>, seg: &mut Segmenter) {
        self.outstanding = self.outstanding.saturating_sub(1);
        seg.recycle(buf);
    }
}

#[allow(clippy::too_many_arguments)]
async fn segment_loop(
    cfg: &AgentConfig,
    mut rx: mpsc::Receiver<Msg>,
    mut queue: SealQueue,
    spool: &Spool,
    metrics: &Metrics,
    exposure: &Exposure,
    acked: &Notify,
    mut shutdown: ShutdownRx,
) -> Result<()> {
    let mut seg = Segmenter::new(
        cfg.agent.stream.clone(),
        source_kind(&cfg.source),
        cfg.segment.max_bytes,
        cfg.segment.max_age(),
    );
    let mut preamble = Vec::new();
    let mut last_stale_seal: Option<Instant> = None;
    loop {
        if spool.bytes() > cfg.agent.spool_max_bytes {
            warn!(
                spool_bytes = spool.bytes(),
                limit = cfg.agent.spool_max_bytes,
                "spool full; pausing the source until the shipper catches up"
            );
            tokio::select! {
                _ = acked.notified() => continue,
                _ = shutdown.changed() => return cut(&mut seg, &mut queue, metrics, exposure).await,
            }
        }
        let deadline = seg.deadline();
        tokio::select! {
            biased;
            _ = shutdown.changed() => return cut(&mut seg, &mut queue, metrics, exposure).await,
            Some(buf) = queue.free.recv() => queue.returned(buf, &mut seg),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                cut(&mut seg, &mut queue, metrics, exposure).await?;
            }
            msg = rx.recv() => match msg {
                Some(Msg::Preamble(p)) => preamble = p,
                Some(Msg::Item(SourceItem::Event(ev))) => {
                    if seg.opened_at().is_none() {
                        exposure.open_ms.store(now_ms(), Ordering::Relaxed);
                        exposure.publish(metrics);
                    }
                    let caught_up = ev.caught_up;
                    seg.push(ev, || preamble.clone());
                    // A stale seal at most once per seal age: a clock skew between database
                    // and agent then cannot turn live load into one segment per transaction.
                    let stale = rx.is_empty()
                        && seg.is_stale(now_ms())
                        && last_stale_seal.is_none_or(|t: Instant| t.elapsed() >= cfg.segment.max_age());
                    if stale {
                        last_stale_seal = Some(Instant::now());
                    }
                    if caught_up || stale || seg.should_seal(Instant::now()) {
                        cut(&mut seg, &mut queue, metrics, exposure).await?;
                    }
                }
                Some(Msg::Item(SourceItem::Heartbeat)) => {
                    metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                Some(Msg::Restart) => {
                    seg.truncate_to_boundary();
                }
                Some(Msg::Fatal(e)) => {
                    cut(&mut seg, &mut queue, metrics, exposure).await?;
                    return Err(e);
                }
                None => return cut(&mut seg, &mut queue, metrics, exposure).await,
            },
        }
    }
}

/// Cuts the open segment (up to its last boundary) and queues it for the seal loop.
async fn cut(
    seg: &mut Segmenter,
    queue: &mut SealQueue,
    metrics: &Metrics,
    exposure: &Exposure,
) -> Result<()> {
    while queue.outstanding >= SEALS_OUTSTANDING {
        let buf = queue
            .free
            .recv()
            .await
            .ok_or_else(|| AgentError::Stage("the seal loop stopped".into()))?;
        queue.returned(buf, seg);
    }
    let Some(job) = seg.seal() else {
        return Ok(());
    };
    if let Ok(mut q) = exposure.spooled.lock() {
        q.push_back(job.read_ms);
    }
    exposure.open_ms.store(0, Ordering::Relaxed);
    exposure.publish(metrics);
    queue
        .jobs
        .send(job)
        .await
        .map_err(|_| AgentError::Stage("the seal loop stopped".into()))?;
    queue.outstanding += 1;
    Ok(())
}

/// Seals cut segments in order (compression, sha256), hands the payload buffers back for
/// reuse and the sealed segments on to the spool loop. It runs on one blocking thread for
/// the agent's lifetime rather than one per segment: every sealed segment is then allocated
/// from (and freed back to) one malloc arena, so a freed segment's memory serves the next.
/// With a thread per segment glibc kept freed segments in each thread's arena, and the
/// agent's resident memory grew by 20-30 MiB on a catch-up with lz4.
async fn seal_loop(
    mut jobs: mpsc::Receiver<SealJob>,
    free: mpsc::Sender<Vec<u8>>,
    writes: mpsc::Sender<Segment>,
    compression: Compression,
) -> Result<()> {
    let mut sealer = Sealer::new(compression)?;
    tokio::task::spawn_blocking(move || {
        while let Some(job) = jobs.blocking_recv() {
            let segment = job.seal(&mut sealer)?;
            // The segment loop may have stopped; the buffer is then simply dropped.
            let _ = free.blocking_send(job.payload);
            writes
                .blocking_send(segment)
                .map_err(|_| AgentError::Stage("the spool loop stopped".into()))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| AgentError::Stage(format!("the sealing thread failed: {e}")))?
}

/// Writes sealed segments to the spool in order, each with fsync on a blocking thread, and
/// wakes the ship loop after each.
async fn spool_loop(
    mut writes: mpsc::Receiver<Segment>,
    spool: &Arc<Spool>,
    metrics: &Metrics,
    sealed: &Notify,
) -> Result<()> {
    while let Some(segment) = writes.recv().await {
        let spool_for_write = spool.clone();
        tokio::task::spawn_blocking(move || spool_for_write.write(segment))
            .await
            .map_err(|e| AgentError::Stage(format!("the spool writer failed: {e}")))??;
        metrics.segments_sealed.fetch_add(1, Ordering::Relaxed);
        metrics.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        sealed.notify_one();
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn ship_loop(
    client: &ShipperClient,
    spool: &Spool,
    metrics: &Metrics,
    exposure: &Exposure,
    sealed: &Notify,
    acked: &Notify,
    mut backoff: Backoff,
    mut shutdown: ShutdownRx,
) -> Result<()> {
    loop {
        let entries = spool.list()?;
        metrics
            .spool_segments
            .store(entries.len() as u64, Ordering::Relaxed);
        metrics.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        if entries.is_empty() {
            tokio::select! {
                _ = sealed.notified() => continue,
                _ = shutdown.changed() => return Ok(()),
            }
        }
        for entry in entries {
            let seg = match spool.read(&entry) {
                Ok(s) => s,
                Err(e @ AgentError::SpoolCorrupt { .. }) => {
                    error!(error = %e, "a spooled segment is damaged and was moved aside; the stored chain will show a gap there");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let meta = seg.header.meta.clone();
            let body = seg.into_bytes();
            let mut failures = 0u32;
            loop {
                match client.upload(&entry.name, body.clone()).await {
                    Ok(ack) => {
                        backoff.reset();
                        if failures > 0 {
                            info!(segment = %entry.name, "shipper reachable again");
                        }
                        tracing::debug!(key = %ack.key, duplicate = ack.duplicate, "segment acknowledged");
                        break;
                    }
                    Err(e) if e.is_retryable() => {
                        failures += 1;
                        metrics.ship_retries.fetch_add(1, Ordering::Relaxed);
                        let wait = backoff.next_delay();
                        if failures == 1 || failures % 20 == 0 {
                            warn!(error = %e, retry_in = ?wait, spool_bytes = spool.bytes(), "upload failed; segments stay in the spool");
                        }
                        if wait_or_shutdown(wait, &mut shutdown).await {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            spool.acknowledge(&entry, &meta.end)?;
            if let Ok(mut q) = exposure.spooled.lock() {
                q.pop_front();
            }
            exposure.publish(metrics);
            metrics.segments_shipped.fetch_add(1, Ordering::Relaxed);
            metrics
                .bytes_shipped
                .fetch_add(entry.len, Ordering::Relaxed);
            metrics
                .last_acked_event_ms
                .store(meta.last_event_ms, Ordering::Relaxed);
            metrics.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
            acked.notify_one();
            if *shutdown.borrow() {
                return Ok(());
            }
        }
    }
}
