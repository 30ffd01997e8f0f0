//! A private S3-compatible server (moto's `moto_server`, from PyPI) on a free port, for the
//! shipper's S3 path.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::Proc;
use crate::{free_port, wait_for};

/// Credentials the tests give the shipper and the CLI (any pair works with moto).
pub const S3_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "logferry"),
    ("AWS_SECRET_ACCESS_KEY", "logferry-secret"),
    ("AWS_REGION", "us-east-1"),
];

/// A running S3 server; stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts `moto_server` and waits until it answers.
    ///
    /// # Errors
    /// When `moto_server` is missing (`pip install "moto[server]"`) or does not answer.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let proc = Proc::spawn("moto_server", cmd, &dir.path().join("moto.log"))
            .context("pip install \"moto[server]\" provides moto_server")?;
        let url = format!("http://127.0.0.1:{port}/");
        wait_for("moto_server to answer", Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                reqwest::get(&url).await?;
                Ok(Some(()))
            }
        })
        .await?;
        Ok(S3Server {
            port,
            _proc: proc,
            _dir: dir,
        })
    }

    /// Endpoint URL for S3 clients.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket.
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint()))
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "creating bucket {name}: {}",
            r.status()
        );
        Ok(())
    }

    /// Environment for a process that reaches this server through `s3://` URLs.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = S3_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.push(("AWS_ENDPOINT".into(), self.endpoint()));
        env.push(("AWS_ALLOW_HTTP".into(), "true".into()));
        env
    }
}
