//! One connection to Redis as a replica: login, the replica handshake, `PSYNC`, and the
//! buffered reading of replies, the RDB and the command stream. Errors say what the
//! operator fixes: the login, the ACL, the address of something that is not Redis.

use std::time::Duration;

use logferry_common::format::redis::resp::{self, Value};
use logferry_config::redis::{RedisEndpoint, REPLICATION_ACL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{AgentError, Result};

/// How long the link may stay silent while a full sync is prepared or streamed, as
/// Redis's own `repl-timeout` default.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// Bytes read from the socket at a time.
const READ_BYTES: usize = 256 * 1024;

/// What the server answered to `PSYNC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Psync {
    /// `+FULLRESYNC <replid> <offset>`: an RDB follows, then the stream after `offset`.
    Full {
        /// The replication id.
        replid: String,
        /// The offset the RDB stands at.
        offset: u64,
    },
    /// `+CONTINUE [<replid>]`: the stream goes on from the byte asked for; a new id when
    /// the server took over from the one the stream came from (a failover).
    Continue {
        /// The id the server continues under, when it says one.
        replid: Option<String>,
    },
}

/// How the RDB of a full sync is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdbFraming {
    /// `$<len>`: exactly this many bytes (disk-based sync).
    Length(u64),
    /// `$EOF:<mark>`: bytes until the 40-byte mark (diskless sync).
    Mark(Vec<u8>),
}

/// A connection to a Redis server.
pub struct Link {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    addr: String,
    timeout: Duration,
}

fn stream_error(addr: &str, reason: impl std::fmt::Display) -> AgentError {
    AgentError::Stream {
        addr: addr.to_owned(),
        reason: reason.to_string(),
    }
}

impl Link {
    /// Connects to `ep` and logs in; `timeout` bounds the connect and each handshake
    /// reply.
    ///
    /// # Errors
    /// [`AgentError::Unreachable`] (retried), [`AgentError::AccessDenied`] for a refused
    /// login, [`AgentError::ServerSetup`] for a server that does not speak Redis.
    pub async fn open(ep: &RedisEndpoint, timeout: Duration) -> Result<Link> {
        let addr = ep.addr();
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| AgentError::Unreachable {
                addr: addr.clone(),
                reason: format!("no answer within {} ms", timeout.as_millis()),
            })?
            .map_err(|e| AgentError::Unreachable {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        // ACKs and handshake commands are small and must not wait for Nagle.
        stream
            .set_nodelay(true)
            .map_err(|e| stream_error(&addr, e))?;
        let mut link = Link {
            stream,
            buf: Vec::with_capacity(READ_BYTES),
            start: 0,
            addr,
            timeout,
        };
        if let Some(password) = &ep.password {
            let reply = match &ep.user {
                Some(user) => link.command(&["AUTH", user, password.expose()]).await?,
                None => link.command(&["AUTH", password.expose()]).await?,
            };
            if let Value::Error(e) = reply {
                return Err(AgentError::AccessDenied {
                    addr: link.addr.clone(),
                    reason: e,
                });
            }
        }
        match link.command(&["PING"]).await? {
            Value::Simple(p) if p.eq_ignore_ascii_case("PONG") => Ok(link),
            Value::Error(e) if e.starts_with("NOAUTH") => Err(AgentError::AccessDenied {
                addr: link.addr.clone(),
                reason: format!("{e}: the server needs a password; give it in source.url (redis://USER:PASSWORD@HOST)"),
            }),
            Value::Error(e) => Err(link.refused("PING", &e)),
            other => Err(AgentError::ServerSetup(format!(
                "the server at {} answered PING with {other:?}: it is not Redis; check source.url's host and port",
                link.addr
            ))),
        }
    }

    /// `host:port` of the server.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The error for a command the server refused: an ACL refusal names the rule to add.
    pub fn refused(&self, what: &str, error: &str) -> AgentError {
        if error.starts_with("NOPERM") {
            return AgentError::AccessDenied {
                addr: self.addr.clone(),
                reason: format!(
                    "{what} refused: {error}; the user needs the replication commands: {REPLICATION_ACL}"
                ),
            };
        }
        if error.starts_with("LOADING")
            || error.starts_with("NOMASTERLINK")
            || error.starts_with("MASTERDOWN")
        {
            return stream_error(&self.addr, format!("{what}: {error}"));
        }
        AgentError::ServerSetup(format!(
            "the server at {} refused {what}: {error}",
            self.addr
        ))
    }

    /// Sends a command and reads its reply (errors come back as [`Value::Error`]).
    ///
    /// # Errors
    /// [`AgentError::Stream`] when the link breaks or is silent past the timeout;
    /// [`AgentError::ServerSetup`] when the answer is not RESP.
    pub async fn command(&mut self, args: &[&str]) -> Result<Value> {
        self.send(&resp::encode(args)).await?;
        let limit = self.timeout;
        loop {
            match resp::parse(&self.buf[self.start..]) {
                Ok(Some((value, used))) => {
                    self.start += used;
                    return Ok(value);
                }
                Ok(None) => {}
                Err(e) => {
                    let seen = &self.buf[self.start..self.buf.len().min(self.start + 32)];
                    return Err(AgentError::ServerSetup(format!(
                        "the server at {} does not speak the Redis protocol ({e}; it sent {:?}): check source.url's host and port",
                        self.addr,
                        String::from_utf8_lossy(seen)
                    )));
                }
            }
            self.fill(limit).await?;
        }
    }

    /// The replica handshake: the port shown in the server's `INFO replication` and the
    /// capabilities (`eof` for diskless sync, `psync2` for continuing across failovers).
    ///
    /// # Errors
    /// As [`Link::command`]; an ACL refusal names the rule.
    pub async fn handshake(&mut self, announce_port: u16) -> Result<()> {
        let port = announce_port.to_string();
        for cmd in [
            vec!["REPLCONF", "listening-port", port.as_str()],
            vec!["REPLCONF", "capa", "eof", "capa", "psync2"],
        ] {
            if let Value::Error(e) = self.command(&cmd).await? {
                return Err(self.refused("REPLCONF", &e));
            }
        }
        Ok(())
    }

    /// What the server holds of an earlier history it continued when it was promoted:
    /// `INFO replication`'s `master_replid2` and the last offset of it held
    /// (`second_repl_offset` − 1). `None` when it has none, or may not be asked (a user
    /// without `+info`: a fork then shows as a plain break).
    ///
    /// # Errors
    /// As [`Link::command`].
    pub async fn earlier_history(&mut self) -> Result<Option<(String, u64)>> {
        let text = match self.command(&["INFO", "replication"]).await? {
            Value::Error(e) => {
                tracing::warn!(addr = %self.addr, error = %e, "INFO replication refused: a full resync after a failover cannot be told from a break (grant the user +info)");
                return Ok(None);
            }
            v => v.text(),
        };
        let id =
            resp::info_field(&text, "master_replid2").filter(|id| id.bytes().any(|b| b != b'0'));
        let until =
            resp::info_field(&text, "second_repl_offset").and_then(|o| o.parse::<i64>().ok());
        Ok(match (id, until) {
            (Some(id), Some(until)) if until > 0 => {
                Some((id.to_owned(), u64::try_from(until - 1).unwrap_or(0)))
            }
            _ => None,
        })
    }

    /// Asks for the stream after `from` (`replid`, offset of the last byte held), or for
    /// a full sync when `from` is `None`.
    ///
    /// # Errors
    /// As [`Link::command`]; [`AgentError::Protocol`] for an answer that is neither.
    pub async fn psync(&mut self, from: Option<(&str, u64)>) -> Result<Psync> {
        let (id, offset) = match from {
            Some((id, at)) => (id.to_owned(), (at + 1).to_string()),
            None => ("?".to_owned(), "-1".to_owned()),
        };
        let reply = self.command(&["PSYNC", &id, &offset]).await?;
        let text = match reply {
            Value::Simple(t) => t,
            Value::Error(e) => return Err(self.refused("PSYNC", &e)),
            other => {
                return Err(AgentError::Protocol(format!(
                    "PSYNC was answered with {other:?}"
                )))
            }
        };
        let mut words = text.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("FULLRESYNC"), Some(replid), Some(offset)) => Ok(Psync::Full {
                replid: replid.to_owned(),
                offset: offset
                    .parse()
                    .map_err(|_| AgentError::Protocol(format!("PSYNC answered {text:?}")))?,
            }),
            (Some("CONTINUE"), replid, None) => Ok(Psync::Continue {
                replid: replid.map(str::to_owned),
            }),
            _ => Err(AgentError::Protocol(format!("PSYNC answered {text:?}"))),
        }
    }

    /// Reads the bulk header in front of a full sync's RDB, skipping the newlines a server
    /// sends while it prepares the RDB.
    ///
    /// # Errors
    /// [`AgentError::Stream`] when the link breaks or stays silent past
    /// [`SILENCE_LIMIT`]; [`AgentError::Protocol`] for another header.
    pub async fn rdb_framing(&mut self) -> Result<RdbFraming> {
        loop {
            while self.buf.get(self.start) == Some(&b'\n') {
                self.start += 1;
            }
            let rest = &self.buf[self.start..];
            if let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
                let line = rest[..at].to_vec();
                self.start += at + 2;
                if let Some(mark) = line.strip_prefix(b"$EOF:") {
                    if mark.len() != 40 {
                        return Err(AgentError::Protocol(
                            "the diskless RDB's end mark is not 40 bytes".into(),
                        ));
                    }
                    return Ok(RdbFraming::Mark(mark.to_vec()));
                }
                let len = line
                    .strip_prefix(b"$")
                    .and_then(|l| std::str::from_utf8(l).ok())
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(|| {
                        AgentError::Protocol(format!(
                            "expected the RDB's length after FULLRESYNC, got {:?}",
                            String::from_utf8_lossy(&line)
                        ))
                    })?;
                return Ok(RdbFraming::Length(len));
            }
            self.fill(SILENCE_LIMIT).await?;
        }
    }

    /// The bytes read and not yet taken.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` buffered bytes as taken.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Takes up to `n` buffered bytes out of the buffer.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let end = (self.start + n).min(self.buf.len());
        let out = self.buf[self.start..end].to_vec();
        self.start = end;
        out
    }

    /// Reads more bytes from the server; waits at most `limit`.
    ///
    /// # Errors
    /// [`AgentError::Stream`] when the link is closed, fails, or stays silent.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes read are kept in the buffer.
    pub async fn fill(&mut self, limit: Duration) -> Result<usize> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > READ_BYTES {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_BYTES);
        let n = tokio::time::timeout(limit, self.stream.read_buf(&mut self.buf))
            .await
            .map_err(|_| {
                stream_error(
                    &self.addr,
                    format!("the server sent nothing for {} s", limit.as_secs()),
                )
            })?
            .map_err(|e| stream_error(&self.addr, e))?;
        if n == 0 {
            return Err(stream_error(&self.addr, "the server closed the link"));
        }
        Ok(n)
    }

    /// Writes raw bytes (a command, an ACK).
    ///
    /// # Errors
    /// [`AgentError::Stream`] when the link fails.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let addr = self.addr.clone();
        tokio::time::timeout(self.timeout, self.stream.write_all(bytes))
            .await
            .map_err(|_| stream_error(&addr, "the server does not take what the agent sends"))?
            .map_err(|e| stream_error(&addr, e))
    }

    /// `REPLCONF ACK <offset>`: the offset read so far; keeps the link alive.
    ///
    /// # Errors
    /// As [`Link::send`].
    pub async fn ack(&mut self, offset: u64) -> Result<()> {
        let at = offset.to_string();
        self.send(&resp::encode(&["REPLCONF", "ACK", at.as_str()]))
            .await
    }
}
