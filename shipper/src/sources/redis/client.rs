//! A client connection to the Redis server a restore or drill writes into: login, commands
//! and their replies, and the few facts a restore asks for (keys per db, role).

use std::net::IpAddr;
use std::time::Duration;

use logferry_common::format::redis::resp::{self, Value};
use logferry_config::redis::RedisEndpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Result, ShipperError};

/// How long connecting and each reply may take.
const REPLY_LIMIT: Duration = Duration::from_secs(30);

/// A logged-in connection to a Redis server.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    addr: String,
    ep: RedisEndpoint,
}

impl Client {
    /// Connects to `ep` and logs in with its user and password.
    ///
    /// # Errors
    /// [`ShipperError::Restore`] naming the address and what to fix: unreachable, a
    /// refused login, something that is not Redis.
    pub async fn connect(ep: &RedisEndpoint) -> Result<Client> {
        let addr = ep.addr();
        let stream = tokio::time::timeout(REPLY_LIMIT, TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                ShipperError::Restore(format!(
                    "the target {addr} did not answer within {} s",
                    REPLY_LIMIT.as_secs()
                ))
            })?
            .map_err(|e| {
                ShipperError::Restore(format!(
                    "cannot reach the target {addr}: {e}; check --target"
                ))
            })?;
        stream
            .set_nodelay(true)
            .map_err(|e| ShipperError::Restore(format!("the target {addr}: {e}")))?;
        let mut client = Client {
            stream,
            buf: Vec::new(),
            addr,
            ep: ep.clone(),
        };
        if let Some(password) = &ep.password {
            let reply = match &ep.user {
                Some(user) => client.command(&["AUTH", user, password.expose()]).await?,
                None => client.command(&["AUTH", password.expose()]).await?,
            };
            if let Value::Error(e) = reply {
                return Err(ShipperError::Restore(format!(
                    "the target {} refused the login: {e}; check the user and password in --target",
                    client.addr
                )));
            }
        }
        match client.command(&["PING"]).await? {
            Value::Simple(p) if p.eq_ignore_ascii_case("PONG") => Ok(client),
            Value::Error(e) if e.starts_with("NOAUTH") => Err(ShipperError::Restore(format!(
                "the target {} needs a password: give it in --target (redis://USER:PASSWORD@HOST:PORT)",
                client.addr
            ))),
            other => Err(ShipperError::Restore(format!(
                "the target {} answered PING with {}: it is not a Redis server; check --target",
                client.addr,
                other.text()
            ))),
        }
    }

    /// A second connection to the same server, logged in the same way.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn reconnect(&self) -> Result<Client> {
        Client::connect(&self.ep).await
    }

    /// `host:port` of the server, for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The address this host has on the connection: one the server can reach it at.
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn local_ip(&self) -> Result<IpAddr> {
        self.stream
            .local_addr()
            .map(|a| a.ip())
            .map_err(|e| ShipperError::Restore(format!("the connection to {}: {e}", self.addr)))
    }

    /// Sends a command and reads its reply (errors come back as [`Value::Error`]).
    ///
    /// # Errors
    /// [`ShipperError::Restore`] when the connection breaks, is silent too long, or the
    /// answer is not RESP.
    pub async fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value> {
        let broken =
            |addr: &str, e: String| ShipperError::Restore(format!("the target {addr}: {e}"));
        self.stream
            .write_all(&resp::encode(args))
            .await
            .map_err(|e| broken(&self.addr, e.to_string()))?;
        loop {
            match resp::parse(&self.buf) {
                Ok(Some((value, used))) => {
                    self.buf.drain(..used);
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(broken(
                        &self.addr,
                        format!("does not speak the Redis protocol ({e}); check --target"),
                    ))
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = tokio::time::timeout(REPLY_LIMIT, self.stream.read(&mut chunk))
                .await
                .map_err(|_| {
                    broken(
                        &self.addr,
                        format!("no reply within {} s", REPLY_LIMIT.as_secs()),
                    )
                })?
                .map_err(|e| broken(&self.addr, e.to_string()))?;
            if n == 0 {
                return Err(broken(&self.addr, "closed the connection".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// As [`Client::command`], and an error reply is an error naming the command.
    ///
    /// # Errors
    /// As [`Client::command`]; [`ShipperError::Restore`] quoting the server's error.
    pub async fn ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value> {
        match self.command(args).await? {
            Value::Error(e) => {
                let name = args
                    .iter()
                    .take(2)
                    .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                let hint = if e.starts_with("NOPERM") {
                    "; the target's user needs +@admin +@keyspace +@read (a scratch or empty server's default user has them)"
                } else if e.contains("unknown command") {
                    "; the command is renamed or disabled on the target (rename-command): a restore needs it"
                } else {
                    ""
                };
                Err(ShipperError::Restore(format!(
                    "the target {} refused {name}: {e}{hint}",
                    self.addr
                )))
            }
            v => Ok(v),
        }
    }

    /// Keys per db (`INFO keyspace`), dbs without keys left out.
    ///
    /// # Errors
    /// As [`Client::ok`].
    pub async fn keyspace(&mut self) -> Result<Vec<(u32, u64)>> {
        let info = self.ok(&["INFO", "keyspace"]).await?.text();
        Ok(info
            .lines()
            .filter_map(|l| {
                let (db, rest) = l.strip_prefix("db")?.split_once(':')?;
                let keys = rest.split(',').find_map(|kv| kv.strip_prefix("keys="))?;
                Some((db.parse().ok()?, keys.trim().parse().ok()?))
            })
            .collect())
    }

    /// The value of `field` in `INFO section`.
    ///
    /// # Errors
    /// As [`Client::ok`].
    pub async fn info(&mut self, section: &str, field: &str) -> Result<Option<String>> {
        let info = self.ok(&["INFO", section]).await?.text();
        Ok(resp::info_field(&info, field).map(str::to_owned))
    }

    /// Whether the server is loading a dataset (an RDB a restore sent it), in the
    /// foreground or (`repl-diskless-load swapdb`) beside its old one.
    ///
    /// # Errors
    /// As [`Client::ok`].
    pub async fn loading(&mut self) -> Result<bool> {
        let info = self.ok(&["INFO", "persistence"]).await?.text();
        Ok(info
            .lines()
            .any(|l| l.trim() == "loading:1" || l.trim() == "async_loading:1"))
    }

    /// The server's role: `master`, `slave` or `sentinel`.
    ///
    /// # Errors
    /// As [`Client::ok`].
    pub async fn role(&mut self) -> Result<String> {
        match self.ok(&["ROLE"]).await? {
            Value::Array(Some(items)) => Ok(items.first().map(Value::text).unwrap_or_default()),
            other => Ok(other.text()),
        }
    }
}
