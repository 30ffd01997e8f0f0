//! The live replica a drill compares its restored copy with: paused on the apply side only
//! (`STOP SLAVE SQL_THREAD`, as for a snapshot), so that its data stands still at a
//! transaction boundary of the primary's binlog while its IO thread keeps receiving, then
//! put back as it was found.

use std::time::Duration;

use logferry_common::BinlogPos;

use super::target_server::TargetServer;
use crate::error::{Result, ShipperError};

/// How often a replica catching up is asked where it stands.
const POLL: Duration = Duration::from_millis(200);

/// A replica of the stream's source, reached with the stock client.
#[derive(Debug, Clone)]
pub struct LiveReplica {
    server: TargetServer,
}

/// Where a replica stands.
struct Status {
    /// The primary position it has applied up to.
    applied: BinlogPos,
    /// Whether its SQL thread runs.
    applying: bool,
}

impl LiveReplica {
    /// The replica `server`.
    pub fn new(server: TargetServer) -> Self {
        LiveReplica { server }
    }

    /// The replica as a server to query.
    pub fn server(&self) -> &TargetServer {
        &self.server
    }

    async fn status(&self) -> Result<Status> {
        let row = self
            .server
            .first_row_named("SHOW SLAVE STATUS")
            .await?
            .ok_or_else(|| {
                ShipperError::Restore(format!(
                    "--replica {}: not a replica (SHOW SLAVE STATUS is empty); give a replica of the stream's source",
                    self.server
                ))
            })?;
        let get = |name: &str| row.get(name).map(String::as_str).unwrap_or("");
        let offset = get("Exec_Master_Log_Pos").parse::<u64>().ok();
        let applied = offset
            .and_then(|o| BinlogPos::new(get("Relay_Master_Log_File").to_owned(), o).ok())
            .ok_or_else(|| {
                ShipperError::Restore(format!(
                    "--replica {}: it reports no applied primary position yet",
                    self.server
                ))
            })?;
        Ok(Status {
            applied,
            applying: get("Slave_SQL_Running") == "Yes",
        })
    }

    /// Pauses the replica at a transaction boundary at or after `at_least`, letting it
    /// apply up to there first (for at most `wait`); returns where it stopped and whether
    /// its SQL thread ran before (pass that to [`Self::put_back`]).
    ///
    /// # Errors
    /// When the replica cannot be queried or paused, or does not reach `at_least` in time
    /// (it is then put back as it was).
    pub async fn pause_at_or_after(
        &self,
        at_least: &BinlogPos,
        wait: Duration,
    ) -> Result<(BinlogPos, bool)> {
        let was_applying = self.status().await?.applying;
        match self.pause_inner(at_least, wait, was_applying).await {
            Ok(at) => Ok((at, was_applying)),
            Err(e) => {
                if let Err(p) = self.put_back(was_applying).await {
                    tracing::error!("{p}");
                }
                Err(e)
            }
        }
    }

    async fn pause_inner(
        &self,
        at_least: &BinlogPos,
        wait: Duration,
        was_applying: bool,
    ) -> Result<BinlogPos> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.server.query("STOP SLAVE SQL_THREAD").await?;
            let now = self.status().await?;
            if now.applied.cmp_place(at_least).is_ge() {
                return Ok(now.applied);
            }
            if !was_applying {
                return Err(ShipperError::Restore(format!(
                    "--replica {}: its SQL thread is stopped at {}, before the restored copy's {at_least}; start it (START SLAVE) and drill again",
                    self.server, now.applied
                )));
            }
            self.server.query("START SLAVE SQL_THREAD").await?;
            while self.status().await?.applied.cmp_place(at_least).is_lt() {
                if tokio::time::Instant::now() > deadline {
                    return Err(ShipperError::Restore(format!(
                        "--replica {}: it did not apply up to the restored copy's {at_least} within {} s; it lags the stored chain",
                        self.server,
                        wait.as_secs()
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Starts the SQL thread again when it ran before the pause.
    ///
    /// # Errors
    /// When the replica refuses; the message says to start it by hand.
    pub async fn put_back(&self, was_applying: bool) -> Result<()> {
        if !was_applying {
            return Ok(());
        }
        self.server
            .query("START SLAVE SQL_THREAD")
            .await
            .map(drop)
            .map_err(|e| {
                ShipperError::Restore(format!(
                    "could not restart the SQL thread of the replica {} ({e}); run START SLAVE SQL_THREAD on it",
                    self.server
                ))
            })
    }
}
