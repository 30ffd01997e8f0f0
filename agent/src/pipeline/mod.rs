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
//!
//! One file per stage: `source_task`, `segment_loop`, `seal_loop`, `spool_loop`,
//! `ship_loop`; [`snapshots`] runs scheduled and inline snapshots beside them.

mod seal_loop;
mod segment_loop;
mod ship_loop;
pub mod snapshots;
mod source_task;
mod spool_loop;

use self::seal_loop::seal_loop;
use self::segment_loop::{segment_loop, SealQueue, Stages};
use self::ship_loop::ship_loop;
use self::snapshots::InlineSnapshots;
use self::source_task::{initial_position, SourceTask};
use self::spool_loop::{on_spool, spool_loop};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use logferry_common::segment::DEFAULT_MAX_SEGMENT_BYTES;
use logferry_common::Position;
use logferry_config::AgentConfig;
use tokio::sync::{mpsc, watch, Notify};
use tracing::{error, info};

use crate::backoff::Backoff;
use crate::client::ShipperClient;
use crate::encryption::Encryption;
use crate::error::{AgentError, Result};
use crate::exposure::Exposure;
use crate::metrics::{self, Metrics};
use crate::sources::{self, SourceEvent};
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
    Event(SourceEvent),
    /// The source is idle and everything up to its head has been read.
    Heartbeat,
    /// The source reconnected: drop events after the last transaction boundary.
    Restart(Option<Position>),
    /// The source connected to this server; `Some` when the server continues the stream
    /// as a new leg.
    Origin(String, Option<crate::sources::NewLeg>),
    /// The log broke and continues at this position, where a snapshot now stands: seal
    /// what is open, carry nothing over; with the place the previous history forked at,
    /// when the server continued it only up to there (a fork).
    Break(Position, Option<Position>),
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
    let metrics = Arc::new(Metrics::new(cfg.agent.stream.as_str()));
    if let Some(addr) = cfg.agent.metrics_listen {
        tokio::spawn(metrics::serve(addr, metrics.clone()));
    }
    let encryption = Encryption::start(&cfg, Some(spool.clone())).await?;
    let client = ShipperClient::from_config(&cfg.shipper)?.with_encryption(encryption);
    tokio::spawn(crate::report::run(
        client.clone(),
        cfg.agent.stream.clone(),
        metrics.clone(),
        Duration::from_millis(cfg.agent.report_interval_ms),
        crate::sources::mysql::snapshot::ReplicaLag::for_config(&cfg),
        shutdown.clone(),
    ));
    let retry = client.backoff();
    if let Err(e) = sources::recover_interrupted_snapshot(&cfg).await {
        error!(error = %e, "could not put back what an interrupted snapshot left behind (a paused replica)");
    }
    if let Some(schedule) = cfg.source.snapshot_schedule()? {
        tokio::spawn(snapshots::scheduled(
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
        let (durable_tx, durable_rx) = watch::channel(None);
        let source_task = SourceTask {
            resume: resume.clone(),
            client: self.client.clone(),
            stream: cfg.agent.stream.clone(),
            tx,
            backoff: self.retry.clone(),
            metrics: self.metrics.clone(),
            snapshots: InlineSnapshots::new(
                self.client.clone(),
                cfg.agent.stream.clone(),
                self.metrics.clone(),
                stop.clone(),
            ),
            durable: durable_rx,
            shutdown: stop.clone(),
        };
        let source_task = tokio::spawn(source_task.run(cfg.source.clone()));
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
        let seal_loop = seal_loop(
            jobs_rx,
            free_tx,
            writes_tx,
            cfg.segment.compression(),
            self.client.encryption().map(|e| e.key().clone()),
        );
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
                &durable_tx,
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
