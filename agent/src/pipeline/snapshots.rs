//! Snapshots while the agent runs: on the source's schedule, and those a source receives
//! inline in its change stream.

use std::sync::Arc;
use std::time::Duration;

use logferry_common::{Position, StreamId};
use logferry_config::cron::Schedule;
use logferry_config::AgentConfig;
use tracing::{error, info, warn};

use super::{wait_or_shutdown, ShutdownRx};
use crate::client::ShipperClient;
use crate::error::{AgentError, Result};
use crate::metrics::{now_ms, Metrics};
use crate::snapshot_upload::{SnapshotUpload, DEFAULT_CHUNK_BYTES};
use crate::sources::{self, SnapshotPart};

/// Takes a snapshot each time `schedule` fires, until shutdown.
pub(super) async fn scheduled(
    cfg: AgentConfig,
    schedule: Schedule,
    client: ShipperClient,
    mut shutdown: ShutdownRx,
) {
    loop {
        let now = now_ms() / 1000;
        let Some(next) = schedule.next_after(now) else {
            warn!("source.snapshot.schedule never fires; no scheduled snapshots");
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
        match sources::take_snapshot(&cfg, &client, shutdown.clone()).await {
            Ok(m) => info!(id = %m.id, position = %m.position, "scheduled snapshot stored"),
            Err(e) => error!(error = %e, "scheduled snapshot failed"),
        }
    }
}

/// Stores the snapshots a source hands over inside its stream, part by part, while the
/// source waits (the events after a snapshot continue from its position, so they are not
/// read before it is stored).
pub struct InlineSnapshots {
    client: ShipperClient,
    stream: StreamId,
    metrics: Arc<Metrics>,
    shutdown: ShutdownRx,
    open: Option<SnapshotUpload>,
}

impl InlineSnapshots {
    /// Stores inline snapshots of `stream` through `client`.
    pub fn new(
        client: ShipperClient,
        stream: StreamId,
        metrics: Arc<Metrics>,
        shutdown: ShutdownRx,
    ) -> Self {
        InlineSnapshots {
            client,
            stream,
            metrics,
            shutdown,
            open: None,
        }
    }

    /// Drops a snapshot left half-sent by a broken connection: a source that reconnects
    /// sends it again from its start. Its chunks stay unnamed by any manifest.
    pub fn abort(&mut self) {
        if let Some(upload) = self.open.take() {
            warn!(
                id = upload.id(),
                "an inline snapshot was cut off by a reconnect; the source sends it again"
            );
        }
    }

    /// Takes the next part of the snapshot in progress; returns the snapshot's position
    /// once it is stored.
    ///
    /// # Errors
    /// [`AgentError::Protocol`] for parts out of order; the upload's errors.
    pub async fn part(&mut self, part: SnapshotPart) -> Result<Option<Position>> {
        match (part, &mut self.open) {
            (SnapshotPart::Begin, None) => {
                info!("the source sends a snapshot inline; storing it");
                let upload = SnapshotUpload::new(
                    &self.client,
                    &self.stream,
                    now_ms(),
                    DEFAULT_CHUNK_BYTES,
                    self.shutdown.clone(),
                );
                self.open = Some(upload);
                Ok(None)
            }
            (SnapshotPart::Data(bytes), Some(upload)) => upload.push(&bytes).await.map(|()| None),
            (SnapshotPart::End { position, content }, Some(_)) => {
                let Some(upload) = self.open.take() else {
                    return Ok(None);
                };
                let m = upload.finish(&position, content).await?;
                self.metrics.inline_snapshots.inc();
                info!(id = %m.id, position = %m.position, "inline snapshot stored");
                Ok(Some(position))
            }
            (part, open) => Err(AgentError::Protocol(format!(
                "the source sent a snapshot part out of order ({}, with {} snapshot open)",
                match part {
                    SnapshotPart::Begin => "a start",
                    SnapshotPart::Data(_) => "data",
                    SnapshotPart::End { .. } => "an end",
                },
                if open.is_some() { "a" } else { "no" }
            ))),
        }
    }
}
