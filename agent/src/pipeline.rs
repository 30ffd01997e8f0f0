//! The running agent: source task → segment loop → seal loop → spool loop → ship loop.
//!
//! Each stage runs on its own and hands work to the next over a bounded channel, so reading
//! the network, compressing and hashing, writing, and uploading overlap on different cores.
//! The source task reads and frames events; the segment loop cuts them into segments (at
//! `segment.max_bytes` wherever it is, at the seal age on a transaction boundary); the seal loop compresses and hashes each cut segment (on a
//! blocking thread, one segment at a time, in order); the spool loop writes sealed segments
//! to the spool with fsync, in order, while the next one is sealed; the ship loop uploads
//! spooled segments oldest first and advances the checkpoint only on an acknowledgement.
//! When the spool exceeds `agent.spool_max_bytes` the segment loop stops taking events, the
//! channel fills, and the source stops reading (disk, not memory, holds the lag).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_common::segment::{
    max_payload_for, segment_bytes_for, Sealer, DEFAULT_MAX_SEGMENT_BYTES,
};
use logferry_common::wire::Limits;
use logferry_common::{Compression, Position, Segment, SourceKind};
use logferry_config::cron::Schedule;
use logferry_config::{AgentConfig, SourceConfig};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::client::ShipperClient;
use crate::error::{AgentError, Result};
use crate::exposure::Exposure;
use crate::metrics::{self, now_ms, Metrics};
use crate::resume::ResumePoint;
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
    Restart(Option<Position>),
    Fatal(AgentError),
}

/// Runs the agent until `shutdown` turns `true` or a non-retryable error occurs.
///
/// A spooled segment found damaged on disk does not stop it: the pipeline is torn down in
/// order, the damaged file and every newer one are set aside, and the pipeline starts
/// again from the checkpoint, reading the range again from the source (a gap only if the
/// source no longer has it, which the source then reports as one).
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
    let saved = spool.saved_limits().map(|l| l.max_segment_bytes);
    let limit = Arc::new(AtomicU64::new(saved.unwrap_or(DEFAULT_MAX_SEGMENT_BYTES)));
    let shared = Shared {
        cfg: &cfg,
        spool,
        metrics,
        client,
        retry,
        limit,
        agreed: Arc::new(AtomicBool::new(false)),
    };
    loop {
        match shared.stream_once(shutdown.clone()).await? {
            Ended::Shutdown => return Ok(()),
            Ended::Damaged if *shutdown.borrow() => return Ok(()),
            Ended::Damaged => {
                info!("reading the damaged range again from the source, from the last acknowledged position");
            }
        }
    }
}

/// What one run of the pipeline shares with the next.
struct Shared<'a> {
    cfg: &'a AgentConfig,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    client: ShipperClient,
    retry: Backoff,
    /// The largest encoded segment the shipper accepts (as last agreed, or the default,
    /// until it says).
    limit: Arc<AtomicU64>,
    /// Whether the shipper has told its limit to this process.
    agreed: Arc<AtomicBool>,
}

/// Why one run of the pipeline ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Shutdown was asked for.
    Shutdown,
    /// A spooled segment was damaged; the spool was cut back to before it.
    Damaged,
}

impl Shared<'_> {
    /// Runs source, segmenter, sealer, spool and ship loops until shutdown, an error, or a
    /// damaged spool file (after which every stage has finished and nothing is in flight).
    async fn stream_once(&self, shutdown: ShutdownRx) -> Result<Ended> {
        let cfg = self.cfg;
        let exposure = Arc::new(Exposure::default());
        let sealed = Arc::new(Notify::new());
        let acked = Arc::new(Notify::new());
        // A second wake-up for the spool loop: `acked` has one waiter, the segment loop.
        let freed = Arc::new(Notify::new());
        let resume = initial_position(
            cfg,
            &self.spool,
            &self.client,
            &self.metrics,
            self.retry.clone(),
            shutdown.clone(),
        )
        .await?;
        info!(stream = %cfg.agent.stream, resume = ?resume.as_ref().map(|p| p.to_string()), compression = ?cfg.segment.compression(), "agent starting");
        // What an earlier process spooled is exposed until acknowledged, from when it was
        // written (its read time is not kept).
        for entry in on_spool(&self.spool, |s| s.list()).await? {
            if let Ok((_, end_key)) = logferry_common::keys::parse_segment_file_name(&entry.name) {
                exposure.spooled(end_key, entry.written_ms);
            }
        }
        exposure.publish(&self.metrics);

        // The stages stop on shutdown, or when the ship loop finds a damaged spool file.
        let (stop_tx, stop) = watch::channel(false);
        let damaged = AtomicBool::new(false);
        let _forward = AbortOnDrop(tokio::spawn(forward_shutdown(
            shutdown.clone(),
            stop_tx.clone(),
        )));

        // Enough events to keep the network read and the sealing busy at once; a few MiB at
        // most (row events are up to ~8 KiB), so memory stays bounded whatever the lag.
        let (tx, rx) = mpsc::channel(SOURCE_CHANNEL_EVENTS);
        let source_task = tokio::spawn(source_task(
            cfg.source.clone(),
            resume.as_ref().map(|r| r.connect_at().clone()),
            tx,
            self.retry.clone(),
            self.metrics.clone(),
            stop.clone(),
        ));
        let _abort = AbortOnDrop(source_task);

        let (jobs_tx, jobs_rx) = mpsc::channel(SEALS_OUTSTANDING);
        let (free_tx, free_rx) = mpsc::channel(SEALS_OUTSTANDING);
        let segment_loop = segment_loop(
            cfg,
            resume.as_ref(),
            rx,
            SealQueue {
                jobs: jobs_tx,
                free: free_rx,
                outstanding: 0,
            },
            Stages {
                spool: &self.spool,
                metrics: &self.metrics,
                exposure: &exposure,
                acked: &acked,
                limit: &self.limit,
                agreed: &self.agreed,
                damaged: &damaged,
            },
            stop.clone(),
        );
        let (writes_tx, writes_rx) = mpsc::channel(WRITES_OUTSTANDING);
        let seal_loop = seal_loop(jobs_rx, free_tx, writes_tx, cfg.segment.compression());
        let spool_loop = spool_loop(
            writes_rx,
            &self.spool,
            &self.metrics,
            &sealed,
            &freed,
            stop.clone(),
        );
        let ship_loop = async {
            let end = ship_loop(
                cfg,
                &self.client,
                &self.spool,
                &self.metrics,
                &exposure,
                &sealed,
                [&*acked, &*freed],
                &self.limit,
                &self.agreed,
                self.retry.clone(),
                stop.clone(),
            )
            .await?;
            if end == Ended::Damaged {
                damaged.store(true, Ordering::Relaxed);
                let _ = stop_tx.send(true);
            }
            Ok::<_, AgentError>(end)
        };
        let (_, _, _, end) = tokio::try_join!(segment_loop, seal_loop, spool_loop, ship_loop)?;
        if end == Ended::Damaged {
            // Segments spooled while the stages wound down follow the hole too.
            on_spool(&self.spool, |s| s.drop_unacknowledged()).await?;
        }
        Ok(end)
    }
}

/// Turns `stop` on when `shutdown` does.
async fn forward_shutdown(mut shutdown: ShutdownRx, stop: watch::Sender<bool>) {
    if shutdown.wait_for(|down| *down).await.is_ok() {
        let _ = stop.send(true);
    }
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

/// Where the source continues: the newest spooled segment, else the checkpoint, else what
/// the shipper holds of the stream (a lost spool directory), else the configured start.
async fn initial_position(
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
                metrics.spool_damaged.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "a spooled segment is damaged: it was moved to quarantine and its range is read again from the source");
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        match client.head(&cfg.agent.stream).await {
            Ok(head) => {
                let kind = source_kind(&cfg.source);
                let parse = |text: &String| Position::parse(kind, text);
                let Some(end) = head.end.as_ref().map(parse).transpose()? else {
                    return Ok(None);
                };
                let open_trx = head.open_trx.as_ref().map(parse).transpose()?;
                return Ok(Some(ResumePoint { end, open_trx }));
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
                if !first && tx.send(Msg::Restart(resume.clone())).await.is_err() {
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

/// What the segment loop shares with the other stages.
struct Stages<'a> {
    spool: &'a Spool,
    metrics: &'a Metrics,
    exposure: &'a Exposure,
    acked: &'a Notify,
    /// The shipper's segment limit.
    limit: &'a AtomicU64,
    /// Whether the shipper has told it (an event over a limit not yet agreed waits).
    agreed: &'a AtomicBool,
    /// Set when the pipeline stops because of a damaged spool file: the open segment is
    /// then dropped, not sealed (it follows the hole).
    damaged: &'a AtomicBool,
}

async fn segment_loop(
    cfg: &AgentConfig,
    resume: Option<&ResumePoint>,
    mut rx: mpsc::Receiver<Msg>,
    mut queue: SealQueue,
    st: Stages<'_>,
    mut stop: ShutdownRx,
) -> Result<()> {
    let mut seg = Segmenter::new(
        cfg.agent.stream.clone(),
        source_kind(&cfg.source),
        cfg.segment.max_bytes,
        cfg.segment.max_age(),
        resume,
    );
    let (metrics, exposure) = (st.metrics, st.exposure);
    let mut preamble = Vec::new();
    let mut last_stale_seal: Option<Instant> = None;
    loop {
        if st.spool.bytes() > cfg.agent.spool_max_bytes {
            warn!(
                spool_bytes = st.spool.bytes(),
                limit = cfg.agent.spool_max_bytes,
                "spool full; pausing the source until the shipper catches up"
            );
            tokio::select! {
                _ = st.acked.notified() => continue,
                _ = stop.changed() => return stopped(&mut seg, &mut queue, &st).await,
            }
        }
        let deadline = seg.deadline();
        tokio::select! {
            biased;
            _ = stop.changed() => return stopped(&mut seg, &mut queue, &st).await,
            Some(buf) = queue.free.recv() => queue.returned(buf, &mut seg),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                cut(&mut seg, &mut queue, metrics, exposure).await?;
            }
            msg = rx.recv() => match msg {
                Some(Msg::Preamble(p)) => preamble = p,
                Some(Msg::Item(SourceItem::Event(ev))) => {
                    if seg.is_stored(&ev) {
                        continue;
                    }
                    let bytes = (preamble.len() + ev.record.len()) as u64;
                    while bytes > cfg.segment.max_bytes && !st.agreed.load(Ordering::Relaxed) {
                        // The limit in force is a guess until the shipper answers; anything up
                        // to segment.max_bytes fits every limit the agent accepts, a larger
                        // event waits for the answer rather than be sealed into a segment the
                        // shipper may refuse.
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                            _ = stop.changed() => return stopped(&mut seg, &mut queue, &st).await,
                        }
                    }
                    let max_segment_bytes = st.limit.load(Ordering::Relaxed);
                    let room = max_payload_for(max_segment_bytes);
                    if bytes > room {
                        return Err(AgentError::EventTooLarge {
                            at: ev.start.to_string(),
                            bytes,
                            limit: room,
                            max_segment_bytes,
                            needed: segment_bytes_for(bytes),
                        });
                    }
                    if seg.payload_len() > 0 && (seg.payload_len() + ev.record.len()) as u64 > room {
                        cut(&mut seg, &mut queue, metrics, exposure).await?;
                    }
                    let opens = seg.opened_at().is_none();
                    let caught_up = ev.caught_up;
                    seg.push(ev, || preamble.clone())?;
                    if opens {
                        exposure.opened(now_ms());
                        exposure.publish(metrics);
                    }
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
                Some(Msg::Restart(at)) => seg.restart(at.as_ref())?,
                Some(Msg::Fatal(e)) => {
                    stopped(&mut seg, &mut queue, &st).await?;
                    return Err(e);
                }
                None => return stopped(&mut seg, &mut queue, &st).await,
            },
        }
    }
}

/// The segment loop's last cut when the pipeline stops: the open segment is sealed, unless
/// the stop is for a damaged spool file (then it follows a hole and is read again).
async fn stopped(seg: &mut Segmenter, queue: &mut SealQueue, st: &Stages<'_>) -> Result<()> {
    if st.damaged.load(Ordering::Relaxed) {
        return Ok(());
    }
    cut(seg, queue, st.metrics, st.exposure).await
}

/// Cuts the open segment and queues it for the seal loop.
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
    exposure.cut(&job.meta.end, job.read_ms);
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
///
/// A full disk stops nothing: the write is tried again after each acknowledgement (which
/// deletes a spooled file) or every second, and meanwhile the stages before it wait, so
/// the source stops reading, as when the spool passes `agent.spool_max_bytes`.
async fn spool_loop(
    mut writes: mpsc::Receiver<Segment>,
    spool: &Arc<Spool>,
    metrics: &Metrics,
    sealed: &Notify,
    freed: &Notify,
    mut stop: ShutdownRx,
) -> Result<()> {
    while let Some(segment) = writes.recv().await {
        let mut full_since: Option<Instant> = None;
        let mut warned_at = Instant::now();
        loop {
            let (spool_for_write, seg) = (spool.clone(), segment.clone());
            let written = tokio::task::spawn_blocking(move || spool_for_write.write(seg))
                .await
                .map_err(|e| AgentError::Stage(format!("the spool writer failed: {e}")))?;
            match written {
                Ok(_) => break,
                Err(e) if e.is_spool_full() => {
                    if full_since.is_none() || warned_at.elapsed() >= Duration::from_secs(60) {
                        let paused = full_since.map(|t| t.elapsed());
                        if spool.bytes() == 0 {
                            error!(error = %e, ?paused, "the spool's disk is full and nothing of ours is on it to ship: free space on it (or move agent.spool_dir); reading from the database is paused");
                        } else {
                            warn!(error = %e, spool_bytes = spool.bytes(), ?paused, "the spool's disk is full: reading from the database pauses until shipping frees space");
                        }
                        metrics.spool_disk_full.store(1, Ordering::Relaxed);
                        full_since.get_or_insert_with(Instant::now);
                        warned_at = Instant::now();
                    }
                    let stopping = tokio::select! {
                        _ = freed.notified() => false,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                        _ = stop.changed() => true,
                    };
                    if stopping {
                        // This segment and any after it are not spooled (the next start reads
                        // them again); the stages before drain into the dropped channel.
                        metrics.spool_disk_full.store(0, Ordering::Relaxed);
                        while writes.recv().await.is_some() {}
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(since) = full_since {
            info!(paused_for = ?since.elapsed(), "the spool's disk has room again; reading from the database resumes");
            metrics.spool_disk_full.store(0, Ordering::Relaxed);
        }
        metrics.segments_sealed.fetch_add(1, Ordering::Relaxed);
        metrics.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        sealed.notify_one();
    }
    Ok(())
}

/// Runs `job` on the spool off the runtime's threads (file reads, fsyncs and hashing).
async fn on_spool<T: Send + 'static>(
    spool: &Arc<Spool>,
    job: impl FnOnce(&Spool) -> Result<T> + Send + 'static,
) -> Result<T> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || job(&spool))
        .await
        .map_err(|e| AgentError::Stage(format!("the spool task failed: {e}")))?
}

/// Asks the shipper for its segment limit until it answers (uploads wait for it anyway),
/// and checks that `segment.max_bytes` fits in it.
async fn agree_limits(
    cfg: &AgentConfig,
    client: &ShipperClient,
    spool: &Arc<Spool>,
    limit: &AtomicU64,
    agreed: &AtomicBool,
    backoff: &mut Backoff,
    shutdown: &mut ShutdownRx,
) -> Result<bool> {
    let shipper = loop {
        match client.limits().await {
            Ok(l) => {
                break l.map_or(DEFAULT_MAX_SEGMENT_BYTES, |l| l.max_segment_bytes);
            }
            Err(e) if e.is_retryable() => {
                let wait = backoff.next_delay();
                warn!(error = %e, retry_in = ?wait, "cannot ask the shipper for its limits; segments stay in the spool");
                if wait_or_shutdown(wait, shutdown).await {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    };
    backoff.reset();
    let fits = max_payload_for(shipper) / 2;
    if cfg.segment.max_bytes > fits {
        return Err(AgentError::LimitMismatch {
            max_bytes: cfg.segment.max_bytes,
            shipper,
            fits,
        });
    }
    limit.store(shipper, Ordering::Relaxed);
    agreed.store(true, Ordering::Relaxed);
    let limits = Limits {
        max_segment_bytes: shipper,
    };
    if let Err(e) = on_spool(spool, move |s| s.save_limits(&limits)).await {
        warn!(error = %e, "could not remember the shipper's limits; the next start assumes the default until the shipper answers");
    }
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
async fn ship_loop(
    cfg: &AgentConfig,
    client: &ShipperClient,
    spool: &Arc<Spool>,
    metrics: &Metrics,
    exposure: &Exposure,
    sealed: &Notify,
    acked: [&Notify; 2],
    limit: &AtomicU64,
    agreed: &AtomicBool,
    mut backoff: Backoff,
    mut shutdown: ShutdownRx,
) -> Result<Ended> {
    if !agree_limits(
        cfg,
        client,
        spool,
        limit,
        agreed,
        &mut backoff,
        &mut shutdown,
    )
    .await?
    {
        return Ok(Ended::Shutdown);
    }
    loop {
        let entries = on_spool(spool, |s| s.list()).await?;
        metrics
            .spool_segments
            .store(entries.len() as u64, Ordering::Relaxed);
        metrics.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        if entries.is_empty() {
            tokio::select! {
                _ = sealed.notified() => continue,
                _ = shutdown.changed() => return Ok(Ended::Shutdown),
            }
        }
        for entry in entries {
            let reading = entry.clone();
            let seg = match on_spool(spool, move |s| s.read(&reading)).await {
                Ok(s) => s,
                Err(e @ AgentError::SpoolCorrupt { .. }) => {
                    metrics.spool_damaged.fetch_add(1, Ordering::Relaxed);
                    error!(error = %e, "a spooled segment is damaged: it was moved to quarantine, and its range is read again from the source");
                    return Ok(Ended::Damaged);
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
                            return Ok(Ended::Shutdown);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            loop {
                let (done, point) = (entry.clone(), ResumePoint::after(&meta));
                match on_spool(spool, move |s| s.acknowledge(&done, &point)).await {
                    Ok(()) => break,
                    // Even the checkpoint may not fit on a full disk: the upload is stored, so
                    // wait for room rather than stop (a restart would send it again).
                    Err(e) if e.is_spool_full() => {
                        metrics.spool_disk_full.store(1, Ordering::Relaxed);
                        warn!(error = %e, "the spool's disk is full: cannot record the acknowledgement yet");
                        if wait_or_shutdown(Duration::from_secs(1), &mut shutdown).await {
                            return Ok(Ended::Shutdown);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            exposure.acknowledged(&meta.end);
            exposure.publish(metrics);
            metrics.segments_shipped.fetch_add(1, Ordering::Relaxed);
            metrics
                .bytes_shipped
                .fetch_add(entry.len, Ordering::Relaxed);
            metrics
                .last_acked_event_ms
                .store(meta.last_event_ms, Ordering::Relaxed);
            metrics.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
            for waiter in acked {
                waiter.notify_one();
            }
            if *shutdown.borrow() {
                return Ok(Ended::Shutdown);
            }
        }
    }
}
