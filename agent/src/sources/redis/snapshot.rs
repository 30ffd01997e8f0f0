//! Scheduled Redis snapshots: a full sync over a second link, so the primary forks and
//! streams an RDB (diskless, with the default `repl-diskless-sync yes`) and never writes
//! one to its own disk for us. The RDB's offset lies in the same replication history as
//! the stream, so the snapshot joins the chain where that offset is.

use logferry_common::format::redis::ReplPos;
use logferry_common::snapshot::{SnapshotContent, SnapshotManifest};
use logferry_common::Position;
use logferry_config::{AgentConfig, RedisMode, SourceConfig};
use tracing::info;

use super::link::{Link, Psync};
use super::rdb::RdbReceiver;
use crate::client::ShipperClient;
use crate::error::{AgentError, Result};
use crate::metrics::now_ms;
use crate::pipeline::ShutdownRx;
use crate::snapshot_upload::{interrupted, SnapshotUpload, DEFAULT_CHUNK_BYTES};
use crate::sources::SnapshotPart;

/// Takes a snapshot of the Redis source in `cfg` and stores it through `client`.
///
/// # Errors
/// [`AgentError::Snapshot`] when the stream has no stored position yet or the server is
/// on another replication history than the chain; the link's and the upload's errors.
pub async fn take(
    cfg: &AgentConfig,
    client: &ShipperClient,
    shutdown: ShutdownRx,
) -> Result<SnapshotManifest> {
    let SourceConfig::Redis(r) = &cfg.source else {
        return Err(AgentError::Snapshot("the source is not Redis".into()));
    };
    if r.mode == RedisMode::Aof {
        return Err(AgentError::Snapshot(
            "in AOF mode (source.mode = \"aof\") the snapshots are the base files of the server's rewrites: \
             run BGREWRITEAOF on the server and the running agent stores the new base"
                .into(),
        ));
    }
    let stream = &cfg.agent.stream;
    let head = client.head(stream).await?;
    let Some(end) = head.end.as_deref() else {
        return Err(AgentError::Snapshot(format!(
            "stream {stream} has nothing stored yet: its first full sync brings its first snapshot; start the agent"
        )));
    };
    let end = ReplPos::parse(end)?;
    let mut link = Link::open(&r.endpoint()?, r.connect_timeout()).await?;
    link.handshake(r.announce_port).await?;
    let Psync::Full { replid, offset } = link.psync(None).await? else {
        return Err(AgentError::Protocol(
            "the server answered a request for a full sync with +CONTINUE".into(),
        ));
    };
    if replid != end.replid {
        return Err(AgentError::Snapshot(format!(
            "the server {} is on replication id {replid}, the stored chain of {stream} on {} (it ends at {end}): \
             the RDB would not join the chain; the agent's next full resync brings a snapshot that does",
            link.addr(),
            end.replid
        )));
    }
    info!(addr = link.addr(), %replid, offset, "full sync for a scheduled snapshot");
    let at = ReplPos::new(end.history, offset, &replid, 0);
    let server = link.addr().to_owned();
    let mut rx = RdbReceiver::start(&mut link, server, at).await?;
    let mut upload = SnapshotUpload::new(
        client,
        stream,
        now_ms(),
        DEFAULT_CHUNK_BYTES,
        shutdown.clone(),
    );
    while let Some(part) = rx.next(&mut link).await? {
        if *shutdown.borrow() {
            return Err(interrupted());
        }
        if let SnapshotPart::Data(bytes) = part {
            upload.push(&bytes).await?;
        }
    }
    let (at, content) = rx.finish().await?;
    upload
        .finish(&Position::Redis(at), SnapshotContent::Redis(content))
        .await
}
