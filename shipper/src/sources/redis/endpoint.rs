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

use super::client::Client;
use super::replay::Sink;
use crate::error::{Result, ShipperError};
use crate::restore::snapshot_chunks;
use crate::storage::Store;

/// How long the target may take to connect after `REPLICAOF` (it retries every second).
pub const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// How long a connection may take to log in and ask `PSYNC`.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// The largest handshake command taken.
pub const HANDSHAKE_BYTES: usize = 64 * 1024;

/// How long the target may go without acknowledging more of the stream while it applies
/// the commands (time it spends loading the RDB does not count).
pub const APPLY_SILENCE_LIMIT: Duration = Duration::from_secs(600);

/// How long one write to the target may take.
pub const WRITE_LIMIT: Duration = Duration::from_secs(60);

/// A `PING` goes out when nothing was written for this long, as a primary does, so the
/// target's `repl-timeout` (60 s) does not drop the link while the store is slow.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

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

    /// Waits for the target to connect and ask `PSYNC`, answering each connection's
    /// handshake in a task of its own; a connection that does not log in with the password
    /// within [`HANDSHAKE_LIMIT`] is closed.
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when no replica logs in within [`CONNECT_LIMIT`].
    pub async fn accept(&self, target: &str) -> Result<Feed> {
        let deadline = tokio::time::Instant::now() + CONNECT_LIMIT;
        let mut handshakes = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let password = self.password.clone();
                    // Each connection answers on its own, so one that sends nothing holds
                    // up no other.
                    handshakes.spawn(async move {
                        let shake = tokio::time::timeout(HANDSHAKE_LIMIT, handshake(stream, &password)).await;
                        (peer, shake)
                    });
                }
                Some(done) = handshakes.join_next() => match done {
                    Ok((_, Ok(Ok(Some(feed))))) => return Ok(feed),
                    Ok((peer, Ok(Ok(None)))) => tracing::warn!(%peer, "a connection to the restore endpoint did not log in with its password; closed"),
                    Ok((peer, Ok(Err(e)))) => tracing::warn!(%peer, error = %e, "a connection to the restore endpoint broke during its handshake"),
                    Ok((peer, Err(_))) => tracing::warn!(%peer, "a connection to the restore endpoint sent no handshake in time; closed"),
                    Err(e) => tracing::warn!(error = %e, "a handshake of the restore endpoint died"),
                },
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ShipperError::Restore(format!(
                        "the target {target} did not connect to the restore endpoint {} within {} s: it must reach this host at \
                         that address (a firewall, or a target in another network: run the restore on a host the target can reach; \
                         a target with tls-replication yes cannot replicate from it); the target's log says why",
                        self.addr,
                        CONNECT_LIMIT.as_secs()
                    )));
                }
            }
        }
    }
}

/// Whether `a` equals `b`, in a time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers a replica's handshake up to `PSYNC`; `None` when it does not log in.
async fn handshake(mut stream: TcpStream, password: &str) -> std::io::Result<Option<Feed>> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut authed = false;
    let asked = loop {
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
                Ok(None) if buf.len() > HANDSHAKE_BYTES => {
                    return Err(std::io::Error::other("a handshake command over 64 KiB"))
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
                    .is_some_and(|p| same_secret(p, password.as_bytes())) =>
            {
                authed = true;
                b"+OK\r\n"
            }
            b"AUTH" => {
                stream.write_all(b"-WRONGPASS invalid password\r\n").await?;
                return Ok(None);
            }
            b"REPLCONF" => b"+OK\r\n",
            b"PSYNC" | b"SYNC" if authed => {
                break args
                    .get(1..3)
                    .map(|a| a.iter().map(|x| String::from_utf8_lossy(x).into_owned()))
                    .and_then(|mut a| Some((a.next()?, a.next()?.parse().ok()?)));
            }
            b"PSYNC" | b"SYNC" => {
                stream
                    .write_all(b"-NOAUTH Authentication required.\r\n")
                    .await?;
                return Ok(None);
            }
            _ => b"-ERR the restore endpoint only serves a replica's handshake\r\n",
        };
        stream.write_all(reply).await?;
    };
    let (read, write) = stream.into_split();
    let (tx, acked) = watch::channel(None);
    tokio::spawn(read_acks(read, tx));
    Ok(Some(Feed {
        write,
        asked,
        acked,
        sent: 0,
        last_write: tokio::time::Instant::now(),
        probe: true,
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
    /// What the replica's `PSYNC` asked for: its replication id and the first offset it
    /// lacks (`None` for `SYNC` or `PSYNC ? -1`).
    pub asked: Option<(String, u64)>,
    /// The offset the replica last acknowledged; `None` until it has loaded the RDB.
    acked: watch::Receiver<Option<u64>>,
    /// Bytes of the stream sent after the RDB.
    sent: u64,
    /// When the last bytes went out.
    last_write: tokio::time::Instant,
    /// Whether `applied` may ask for acknowledgements (`REPLCONF GETACK`): not after a
    /// `+CONTINUE`, whose history must hold exactly the bytes sent (the replica
    /// acknowledges every second by itself).
    probe: bool,
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

    /// Answers `+CONTINUE <replid>`: the replica keeps its dataset and its place `offset`
    /// in the history `replid`, and what is sent next continues that history byte for
    /// byte (a promotion hands a standby the stored commands it lacks this way).
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when the link breaks.
    pub async fn continued(&mut self, replid: &str, offset: u64) -> Result<()> {
        self.write
            .write_all(format!("+CONTINUE {replid}\r\n").as_bytes())
            .await
            .map_err(broken)?;
        self.sent = offset;
        self.probe = false;
        Ok(())
    }

    /// Sends bytes of the replication stream as they are, 1 MiB at a time (each within
    /// [`WRITE_LIMIT`]), counting them on `bar`.
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when the link breaks or the replica takes nothing for
    /// [`WRITE_LIMIT`].
    pub async fn stream(&mut self, bytes: &[u8], bar: &ProgressBar) -> Result<()> {
        for chunk in bytes.chunks(1 << 20) {
            self.send(chunk).await?;
            bar.inc(chunk.len() as u64);
        }
        Ok(())
    }

    /// The offset the replica must acknowledge: the bytes sent after the RDB, or its place
    /// after a `+CONTINUE` and what followed.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Writes `bytes` to the replica within [`WRITE_LIMIT`]; they count into what it must
    /// acknowledge.
    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        tokio::time::timeout(WRITE_LIMIT, self.write.write_all(bytes))
            .await
            .map_err(|_| {
                ShipperError::Restore(format!(
                    "the target took no data for {} s: see its log",
                    WRITE_LIMIT.as_secs()
                ))
            })?
            .map_err(broken)?;
        self.sent += bytes.len() as u64;
        self.last_write = tokio::time::Instant::now();
        Ok(())
    }

    /// Waits until the replica has loaded the RDB and acknowledges every byte sent after
    /// it, asking with `REPLCONF GETACK` every second (after a `+CONTINUE` it is not asked:
    /// its own acknowledgements come every second); `target` tells whether it is still
    /// loading the RDB (which counts as progress).
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when the replica closes the link or acknowledges nothing
    /// new for [`APPLY_SILENCE_LIMIT`] while not loading.
    pub async fn applied(&mut self, target: &mut Client) -> Result<()> {
        let getack = resp::encode(&["REPLCONF", "GETACK", "*"]);
        let mut last = (*self.acked.borrow(), tokio::time::Instant::now());
        loop {
            let acked = *self.acked.borrow_and_update();
            if acked.is_some_and(|a| a >= self.sent) {
                return Ok(());
            }
            if acked != last.0 || target.loading().await? {
                last = (acked, tokio::time::Instant::now());
            } else if last.1.elapsed() > APPLY_SILENCE_LIMIT {
                return Err(ShipperError::Restore(format!(
                    "the target acknowledged nothing new for {} s ({}): see its log",
                    APPLY_SILENCE_LIMIT.as_secs(),
                    progress(acked, self.sent)
                )));
            }
            if self.probe {
                tokio::time::timeout(WRITE_LIMIT, self.write.write_all(&getack))
                    .await
                    .map_err(|_| {
                        ShipperError::Restore(
                            "the target took no data for a minute: see its log".into(),
                        )
                    })?
                    .map_err(broken)?;
            }
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
        self.send(commands).await
    }

    async fn idle(&mut self) -> Result<()> {
        if self.last_write.elapsed() >= KEEPALIVE {
            self.send(&resp::encode(&["PING"])).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn send(stream: &mut TcpStream, args: &[&str]) -> String {
        stream.write_all(&resp::encode(args)).await.unwrap();
        let mut reply = vec![0u8; 256];
        let n = stream.read(&mut reply).await.unwrap();
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    #[tokio::test]
    async fn only_the_password_gets_a_feed_and_a_silent_peer_holds_up_no_one() {
        let endpoint = Endpoint::bind("127.0.0.1".parse().unwrap()).await.unwrap();
        let addr = endpoint.addr();
        let password = endpoint.password().to_owned();
        let accepting = tokio::spawn(async move { endpoint.accept("test").await.map(|_| ()) });
        // Connects and sends nothing.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut wrong = TcpStream::connect(addr).await.unwrap();
        assert_eq!(send(&mut wrong, &["PING"]).await, "+PONG\r\n");
        assert!(send(&mut wrong, &["AUTH", "guess"])
            .await
            .starts_with("-WRONGPASS"));
        let mut unauthed = TcpStream::connect(addr).await.unwrap();
        assert!(send(&mut unauthed, &["PSYNC", "?", "-1"])
            .await
            .starts_with("-NOAUTH"));
        assert!(!accepting.is_finished());
        let mut replica = TcpStream::connect(addr).await.unwrap();
        assert_eq!(send(&mut replica, &["AUTH", &password]).await, "+OK\r\n");
        assert_eq!(
            send(&mut replica, &["REPLCONF", "capa", "eof"]).await,
            "+OK\r\n"
        );
        replica
            .write_all(&resp::encode(&["PSYNC", "?", "-1"]))
            .await
            .unwrap();
        let fed = tokio::time::timeout(Duration::from_secs(4), accepting).await;
        assert!(matches!(fed, Ok(Ok(Ok(())))), "{fed:?}");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
