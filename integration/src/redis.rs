//! A throwaway `redis-server` on a free port in a temporary directory, and `redis-cli`
//! against it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::Proc;
use crate::{free_port, wait_for};

/// A running `redis-server`, stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    password: Option<String>,
    _proc: Proc,
}

impl RedisServer {
    /// Starts `redis-server` under `dir` with no persistence, diskless full syncs without
    /// delay, and `extra` arguments (e.g. `["--requirepass", "x"]`); waits until it
    /// answers.
    ///
    /// # Errors
    /// When `redis-server` is missing (Debian's `redis-server`) or does not answer.
    pub async fn start(dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .args(extra);
        let proc = Proc::spawn("redis-server", cmd, &dir.join("redis.log"))
            .context("Debian's redis-server package provides redis-server")?;
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .map(|p| (*p).to_owned());
        let server = RedisServer {
            port,
            password,
            _proc: proc,
        };
        wait_for("redis-server to answer", Duration::from_secs(30), || {
            let out = server.cli(&["PING"]);
            async move { Ok(out.ok().filter(|o| o.trim() == "PONG").map(|_| ())) }
        })
        .await?;
        Ok(server)
    }

    /// `redis://[:PASSWORD@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    fn base(&self) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        cmd
    }

    /// Runs one command with `redis-cli`; its output.
    ///
    /// # Errors
    /// When `redis-cli` fails.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .base()
            .args(args)
            .output()
            .context("redis-cli (Debian's redis-tools)")?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the commands of `script` (one per line) on one connection, so that `MULTI` …
    /// `EXEC` and `SELECT` hold across them.
    ///
    /// # Errors
    /// When `redis-cli` fails.
    pub fn script(&self, script: &str) -> anyhow::Result<String> {
        use std::io::Write;
        let mut child = self
            .base()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("redis-cli's stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        anyhow::ensure!(out.status.success(), "redis-cli script failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
