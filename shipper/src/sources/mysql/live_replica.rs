//! The live replica a drill compares its restored copy with: paused on the apply side only
//! (`STOP SLAVE SQL_THREAD`, as for a snapshot), so that its data stands still at a
//! transaction boundary of the primary's binlog while its IO thread keeps receiving, then
//! put back as it was found. The pause is taken under the replica's named lock
//! [`PAUSE_LOCK`], which the agent's snapshots take too: a drill never restarts the SQL
//! thread under a snapshot's dump, nor a snapshot under a drill's comparison.

use std::time::Duration;

use logferry_common::format::mysql::sql::PAUSE_LOCK;
use logferry_common::BinlogPos;

use super::target_server::TargetServer;
use crate::error::{Result, ShipperError};

/// How often a replica catching up is asked where it stands.
const POLL: Duration = Duration::from_millis(200);

/// A session of the stock client holding [`PAUSE_LOCK`] on the replica; the lock goes with
/// the session when this is dropped (the client is killed).
struct PauseLock {
    _client: tokio::process::Child,
    _stdin: tokio::process::ChildStdin,
}

/// A replica paused by [`LiveReplica::pause_at_or_after`]; give it to
/// [`LiveReplica::put_back`].
pub struct Paused {
    was_applying: bool,
    _lock: PauseLock,
}

impl std::fmt::Debug for Paused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paused")
            .field("was_applying", &self.was_applying)
            .finish_non_exhaustive()
    }
}

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

    /// Takes [`PAUSE_LOCK`] in a client session of its own that keeps it until dropped.
    async fn lock(&self) -> Result<PauseLock> {
        use std::process::Stdio;
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut client = self
            .server
            .client()
            .args(["-N", "-B", "--unbuffered"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| ShipperError::Restore(format!("cannot run the mariadb client: {e}")))?;
        let (Some(mut stdin), Some(stdout)) = (client.stdin.take(), client.stdout.take()) else {
            return Err(ShipperError::Restore(
                "the mariadb client has no pipes".into(),
            ));
        };
        stdin
            .write_all(format!("SELECT GET_LOCK('{PAUSE_LOCK}', 0);\n").as_bytes())
            .await
            .map_err(|e| ShipperError::Restore(format!("--replica {}: {e}", self.server)))?;
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await;
        match answer {
            Ok(Ok(Some(line))) if line.trim() == "1" => Ok(PauseLock {
                _client: client,
                _stdin: stdin,
            }),
            Ok(Ok(Some(_))) => Err(ShipperError::Restore(format!(
                "--replica {}: its SQL thread is being paused by someone else (an agent's snapshot holds the lock {PAUSE_LOCK}); drill again when that is done",
                self.server
            ))),
            _ => Err(ShipperError::Restore(format!(
                "--replica {}: could not take the lock {PAUSE_LOCK} (no answer from the server)",
                self.server
            ))),
        }
    }

    /// Pauses the replica at a transaction boundary at or after `at_least`, letting it
    /// apply up to there first (for at most `wait`), under [`PAUSE_LOCK`]; returns where
    /// it stopped and the pause to hand to [`Self::put_back`].
    ///
    /// # Errors
    /// When the lock is held by another pause, the replica cannot be queried or paused, or
    /// it does not reach `at_least` in time (it is then put back as it was).
    pub async fn pause_at_or_after(
        &self,
        at_least: &BinlogPos,
        wait: Duration,
    ) -> Result<(BinlogPos, Paused)> {
        let lock = self.lock().await?;
        let was_applying = self.status().await?.applying;
        let paused = Paused {
            was_applying,
            _lock: lock,
        };
        match self.pause_inner(at_least, wait, was_applying).await {
            Ok(at) => Ok((at, paused)),
            Err(e) => {
                if let Err(p) = self.put_back(paused).await {
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

    /// Starts the SQL thread again when it ran before the pause, then lets the lock go.
    ///
    /// # Errors
    /// When the replica refuses; the message says to start it by hand.
    pub async fn put_back(&self, paused: Paused) -> Result<()> {
        if !paused.was_applying {
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
