//! The segment stage: cuts the event stream into segments (at `segment.max_bytes`
//! wherever it is, at the seal age on a transaction boundary) and queues them for sealing;
//! stops taking events while the spool is over `agent.spool_max_bytes`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use logferry_common::segment::{max_payload_for, segment_bytes_for};
use logferry_config::AgentConfig;
use tokio::sync::{mpsc, Notify};
use tracing::warn;

use super::{Msg, ShutdownRx, SEALS_OUTSTANDING};
use crate::error::{AgentError, Result};
use crate::exposure::Exposure;
use crate::metrics::{now_ms, Metrics};
use crate::resume::ResumePoint;
use crate::segmenter::{SealJob, Segmenter};
use crate::sources::{self};
use crate::spool::Spool;

/// The segment loop's ends of the channels to and from the seal loop.
pub(super) struct SealQueue {
    /// Cut segments, in chain order.
    pub(super) jobs: mpsc::Sender<SealJob>,
    /// Payload buffers back from sealed segments, for reuse.
    pub(super) free: mpsc::Receiver<Vec<u8>>,
    /// Jobs sent whose buffer has not come back.
    pub(super) outstanding: usize,
}

impl SealQueue {
    fn returned(&mut self, buf: Vec<u8>, seg: &mut Segmenter) {
        self.outstanding = self.outstanding.saturating_sub(1);
        seg.recycle(buf);
    }
}

/// What the segment loop shares with the other stages.
pub(super) struct Stages<'a> {
    pub(super) spool: &'a Spool,
    pub(super) metrics: &'a Metrics,
    pub(super) exposure: &'a Exposure,
    pub(super) acked: &'a Notify,
    /// The shipper's segment limit.
    pub(super) limit: &'a AtomicU64,
    /// Whether the shipper has told it (an event over a limit not yet agreed waits).
    pub(super) agreed: &'a AtomicBool,
    /// Set when the pipeline stops because of a damaged spool file: the open segment is
    /// then dropped, not sealed (it follows the hole).
    pub(super) damaged: &'a AtomicBool,
}

pub(super) async fn segment_loop(
    cfg: &AgentConfig,
    resume: Option<&ResumePoint>,
    mut rx: mpsc::Receiver<Msg>,
    mut queue: SealQueue,
    st: Stages<'_>,
    mut stop: ShutdownRx,
) -> Result<()> {
    let mut seg = Segmenter::new(
        cfg.agent.stream.clone(),
        sources::kind(&cfg.source),
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
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                cut(&mut seg, &mut queue, metrics, exposure).await?;
            }
            msg = rx.recv() => match msg {
                Some(Msg::Preamble(p)) => preamble = p,
                Some(Msg::Event(ev)) => {
                    if seg.is_stored(&ev)? {
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
                Some(Msg::Heartbeat) => {
                    metrics.heartbeats.inc();
                }
                Some(Msg::Restart(at)) => seg.restart(at.as_ref())?,
                Some(Msg::Origin(origin, leg)) => {
                    if leg.is_some() {
                        cut(&mut seg, &mut queue, metrics, exposure).await?;
                    }
                    seg.connected(&origin, leg.as_ref())?;
                }
                Some(Msg::Break(at, fork)) => {
                    cut(&mut seg, &mut queue, metrics, exposure).await?;
                    seg.broke_at(&at, fork);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_common::{BinlogPos, Position};
    use std::path::Path;

    const AGE: Duration = Duration::from_millis(1000);

    fn config(dir: &Path) -> AgentConfig {
        let text = format!(
            "[agent]\nstream = \"s\"\nspool_dir = \"{}\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"mysql://u@127.0.0.1:1\"\nserver_id = 9\n\n[segment]\nmax_age_ms = {}\n\n\
             [shipper]\nurl = \"https://127.0.0.1:1\"\n\n[encryption]\ninsecure_plaintext = true\n",
            dir.join("spool").display(),
            AGE.as_millis()
        );
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        AgentConfig::load(&path).unwrap()
    }

    fn event(at: u64, boundary: bool, time_ms: i64) -> Msg {
        let pos = |o| Position::Mysql(BinlogPos::new("mysql-bin.000001", o).unwrap());
        Msg::Event(sources::SourceEvent {
            record: vec![0; 100],
            start: pos(at),
            end: pos(at + 100),
            time_ms,
            boundary,
            caught_up: false,
            trx: None,
        })
    }

    /// A segment loop with its channels: events in, cut segments out.
    struct Running {
        events: mpsc::Sender<Msg>,
        jobs: mpsc::Receiver<SealJob>,
        free: mpsc::Sender<Vec<u8>>,
        _stop: tokio::sync::watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let (events, rx) = mpsc::channel(16);
        let (jobs_tx, jobs) = mpsc::channel(16);
        let (free, free_rx) = mpsc::channel(16);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let spool = Spool::open(&cfg.agent.spool_dir).unwrap();
            let metrics = Metrics::new("test");
            let exposure = Exposure::default();
            let acked = Notify::new();
            let limit = AtomicU64::new(logferry_common::segment::DEFAULT_MAX_SEGMENT_BYTES);
            let (agreed, damaged) = (AtomicBool::new(true), AtomicBool::new(false));
            let queue = SealQueue {
                jobs: jobs_tx,
                free: free_rx,
                outstanding: 0,
            };
            let stages = Stages {
                spool: &spool,
                metrics: &metrics,
                exposure: &exposure,
                acked: &acked,
                limit: &limit,
                agreed: &agreed,
                damaged: &damaged,
            };
            segment_loop(&cfg, None, rx, queue, stages, stop).await
        });
        Running {
            events,
            jobs,
            free,
            _stop: stop_tx,
            _dir: dir,
        }
    }

    impl Running {
        /// The next cut segment, handing its buffer back as the seal loop does.
        async fn cut(&mut self) -> SealJob {
            let job = self.jobs.recv().await.expect("the segment loop stopped");
            self.free.send(Vec::new()).await.unwrap();
            job
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_committed_segment_is_cut_at_the_seal_age_not_before() {
        let mut run = start();
        let opened = Instant::now();
        run.events.send(event(4, true, now_ms())).await.unwrap();
        let job = run.cut().await;
        // The paused clock moves only to the next timer: the cut came at the seal age.
        assert_eq!(opened.elapsed(), AGE);
        assert_eq!(job.meta.event_count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_transaction_is_not_cut_by_age_and_is_cut_at_its_commit() {
        let mut run = start();
        run.events.send(event(4, false, now_ms())).await.unwrap();
        let waited = tokio::time::timeout(AGE * 10, run.jobs.recv()).await;
        assert!(waited.is_err(), "cut inside a transaction");
        let committed = Instant::now();
        run.events.send(event(104, true, now_ms())).await.unwrap();
        let job = run.cut().await;
        assert_eq!(
            committed.elapsed(),
            Duration::ZERO,
            "past its age: cut at the commit"
        );
        assert!(job.meta.ends_at_boundary());
        assert_eq!(job.meta.event_count, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn old_data_is_cut_at_once_but_at_most_once_per_seal_age() {
        let mut run = start();
        let long_ago = now_ms() - 3_600_000;
        let at = Instant::now();
        run.events.send(event(4, true, long_ago)).await.unwrap();
        run.cut().await;
        assert_eq!(
            at.elapsed(),
            Duration::ZERO,
            "a catch-up's old data waits for nothing"
        );
        run.events.send(event(104, true, long_ago)).await.unwrap();
        run.cut().await;
        assert_eq!(
            at.elapsed(),
            AGE,
            "a second stale cut waits out the seal age (a skewed clock cannot cut per transaction)"
        );
    }
}
