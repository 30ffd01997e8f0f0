//! The short-lived primary a restore serves: the target is told `REPLICAOF` this endpoint,
//! connects as a replica, and is answered `+FULLRESYNC`, the snapshot's RDB and then the
//! commands up to the target, so that Redis's own loader reads every RDB version and
//! encoding. The endpoint listens on the address this host has towards the target and
//! takes only a replica that logs in with the one-time password the restore set as the
//! target's `masterauth`: nobody else can pull the data while it is open.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use indicatif::ProgressBar;
use logferry_common::format::redis::resp;
use logferry_common::snapshot::SnapshotManifest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::replay::Sink;
use crate::error::{Result, ShipperError};
use crate::restore::snapshot_chunks;
use crate::storage::Store;

/// How long the target may take to connect after `REPLICAOF` (it retries every second).
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// How long the target may go without acknowledging more of the stream while it loads the
/// RDB and applies the commands.
const APPLY_SILENCE_LIMIT: Duration = Duration::from_secs(600);

/// A listening endpoint, not yet connected.
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
    password: String,
}

impl Endpoint {
    /// Listens on `ip` (a free port) with a fresh one-time password.
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when no port can be had or no random bytes.
    pub async fn bind(ip: IpAddr) -> Result<Endpoint> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|e| {
                ShipperError::Restore(format!(
                    "cannot listen on {ip} for the target to replicate from: {e}"
                ))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| ShipperError::Restore(format!("the restore endpoint: {e}")))?;
        let mut secret = [0u8; 24];
        getrandom::fill(&mut secret).map_err(|e| {
            ShipperError::Internal(format!("no random bytes for the endpoint's password: {e}"))
        })?;
        Ok(Endpoint {
            listener,
            addr,
            password: hex::encode(secret),
        })
    }

    /// Where the target is to replicate from.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The password the target must log in with (set as its `masterauth`).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Waits for the target to connect and ask `PSYNC`, answering its handshake; a
    /// connection that does not log in with the password is answered with an error and
    /// closed.
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when no replica logs in within [`CONNECT_LIMIT`].
    pub async fn accept(&self, target: &str) -> Result<Feed> {
        let deadline = tokio::time::Instant::now() + CONNECT_LIMIT;
        loop {
            let accepted = tokio::time::timeout_at(deadline, self.listener.accept()).await;
            let Ok(Ok((stream, peer))) = accepted else {
                return Err(ShipperError::Restore(format!(
                    "the target {target} did not connect to the restore endpoint {} within {} s: it must reach this host at \
                     that address (a firewall, or a target in another network: run the restore on a host the target can reach); \
                     the target's log says why",
                    self.addr,
                    CONNECT_LIMIT.as_secs()
                )));
            };
            match tokio::time::timeout_at(deadline, handshake(stream, &self.password)).await {
                Ok(Ok(Some(feed))) => return Ok(feed),
                Ok(Ok(None)) => {
                    tracing::warn!(%peer, "a connection to the restore endpoint did not log in with its password; closed")
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "a connection to the restore endpoint broke during its handshake")
                }
                Err(_) => {}
            }
        }
    }
}

/// Answers a replica's handshake up to `PSYNC`; `None` when it does not log in.
async fn handshake(mut stream: TcpStream, password: &str) -> std::io::Result<Option<Feed>> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut authed = false;
    loop {
        let (args, used) = loop {
            match resp::value_end(&buf, 0) {
                Ok(Some(end)) => {
                    let args: Vec<Vec<u8>> = resp::command_args(&buf[..end])
                        .map_err(std::io::Error::other)?
                        .into_iter()
                        .map(<[u8]>::to_vec)
                        .collect();
                    break (args, end);
                }
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..used);
        let name = args
            .first()
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        let reply: &[u8] = match name.as_slice() {
            b"PING" => b"+PONG\r\n",
            b"AUTH"
                if args
                    .last()
                    .is_some_and(|p| p.as_slice() == password.as_bytes()) =>
            {
                authed = true;
                b"+OK\r\n"
            }
            b"AUTH" => {
                stream.write_all(b"-WRONGPASS invalid password\r\n").await?;
                return Ok(None);
            }
            b"REPLCONF" => b"+OK\r\n",
            b"PSYNC" | b"SYNC" if authed => break,
            b"PSYNC" | b"SYNC" => {
                stream
                    .write_all(b"-NOAUTH Authentication required.\r\n")
                    .await?;
                return Ok(None);
            }
            _ => b"-ERR the restore endpoint only serves a replica's handshake\r\n",
        };
        stream.write_all(reply).await?;
    }
    let (read, write) = stream.into_split();
    let (tx, acked) = watch::channel(None);
    tokio::spawn(read_acks(read, tx));
    Ok(Some(Feed {
        write,
        acked,
        sent: 0,
    }))
}

/// Reads the replica's `REPLCONF ACK <offset>` lines into `tx` until it closes the link.
/// The first comes once it has loaded the RDB; before, it sends bare newlines to keep the
/// link alive, which are passed over.
async fn read_acks(mut read: OwnedReadHalf, tx: watch::Sender<Option<u64>>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        loop {
            let newlines = buf
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            buf.drain(..newlines);
            let end = match resp::value_end(&buf, 0) {
                Ok(Some(end)) => end,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the target sent something else than RESP on its replication link");
                    return;
                }
            };
            if let Some(offset) = ack_offset(&buf[..end]) {
                tx.send_replace(Some(offset));
            }
            buf.drain(..end);
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The offset of a `REPLCONF ACK <offset> [FACK <offset>]`.
fn ack_offset(command: &[u8]) -> Option<u64> {
    let args = resp::command_args(command).ok()?;
    let is_ack = args.len() >= 3
        && args[0].eq_ignore_ascii_case(b"REPLCONF")
        && args[1].eq_ignore_ascii_case(b"ACK");
    is_ack.then(|| std::str::from_utf8(args[2]).ok()?.parse().ok())?
}

/// A connected replica being fed: the snapshot, then commands; it acknowledges what it
/// applied.
pub struct Feed {
    write: OwnedWriteHalf,
    /// The offset the replica last acknowledged; `None` until it has loaded the RDB.
    acked: watch::Receiver<Option<u64>>,
    /// Bytes of the stream sent after the RDB.
    sent: u64,
}

impl Feed {
    /// Answers `+FULLRESYNC` and sends the snapshot's chunks (each verified) as the RDB.
    ///
    /// # Errors
    /// [`ShipperError::Corrupt`] for a chunk that fails its checks (the replica then drops
    /// the partial transfer); [`ShipperError::Restore`] when the link breaks.
    pub async fn rdb(
        &mut self,
        store: &Store,
        m: &SnapshotManifest,
        bar: &ProgressBar,
    ) -> Result<()> {
        let mut replid = [0u8; 20];
        getrandom::fill(&mut replid).map_err(|e| {
            ShipperError::Internal(format!("no random bytes for a replication id: {e}"))
        })?;
        let head = format!(
            "+FULLRESYNC {} 0\r\n${}\r\n",
            hex::encode(replid),
            m.plain_bytes()
        );
        self.write
            .write_all(head.as_bytes())
            .await
            .map_err(broken)?;
        snapshot_chunks(
            store,
            m,
            bar,
            &mut self.write,
            "sending the snapshot to the target",
        )
        .await
    }

    /// Waits until the replica has loaded the RDB and acknowledges every byte sent after
    /// it, asking with `REPLCONF GETACK` every second.
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when the replica closes the link or acknowledges nothing
    /// new for [`APPLY_SILENCE_LIMIT`].
    pub async fn applied(&mut self) -> Result<()> {
        let getack = resp::encode(&["REPLCONF", "GETACK", "*"]);
        let mut last = (*self.acked.borrow(), tokio::time::Instant::now());
        loop {
            let acked = *self.acked.borrow_and_update();
            if acked.is_some_and(|a| a >= self.sent) {
                return Ok(());
            }
            if acked != last.0 {
                last = (acked, tokio::time::Instant::now());
            } else if last.1.elapsed() > APPLY_SILENCE_LIMIT {
                return Err(ShipperError::Restore(format!(
                    "the target acknowledged nothing new for {} s ({}): see its log",
                    APPLY_SILENCE_LIMIT.as_secs(),
                    progress(acked, self.sent)
                )));
            }
            self.write.write_all(&getack).await.map_err(broken)?;
            if let Ok(Err(_)) =
                tokio::time::timeout(Duration::from_secs(1), self.acked.changed()).await
            {
                return Err(ShipperError::Restore(format!(
                    "the target closed the replication link ({}): see its log",
                    progress(acked, self.sent)
                )));
            }
        }
    }
}

/// How far the replica got, for messages.
fn progress(acked: Option<u64>, sent: u64) -> String {
    match acked {
        None => "it had not loaded the snapshot".into(),
        Some(a) => format!("it had applied {a} of {sent} bytes of commands"),
    }
}

fn broken(e: std::io::Error) -> ShipperError {
    ShipperError::Restore(format!(
        "the replication link to the target broke: {e}; see the target's log"
    ))
}

impl Sink for Feed {
    async fn transaction(&mut self, commands: &[u8], _ts: i64) -> Result<()> {
        self.write.write_all(commands).await.map_err(broken)?;
        self.sent += commands.len() as u64;
        Ok(())
    }
}
