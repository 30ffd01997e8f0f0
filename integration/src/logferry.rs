//! The shipper and agent binaries as real processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use logferry_common::wire::StreamHead;

use crate::process::{log_len, workspace_bin, Proc};

/// A running `logferry-shipper serve` on a local-directory store.
#[derive(Debug)]
pub struct Shipper {
    /// HTTP port.
    pub port: u16,
    /// Directory of the object store (when the store is a local directory).
    pub store_dir: PathBuf,
    /// Environment given to the process (S3 credentials and endpoint).
    pub env: Vec<(String, String)>,
    config: PathBuf,
    /// The `[store]` section of its config.
    store: String,
    /// TLS with the certificates `gen-certs` wrote under `certs/` (else plain HTTP).
    tls: bool,
    /// Sections appended to its config.
    extra: String,
    log: PathBuf,
    proc: Option<Proc>,
}

/// The token every test agent sends and every test shipper accepts (every stream, every
/// action).
pub const TEST_TOKEN: &str = "lft_7e57000000000000000000000000000000000000000000000000000000000000";

/// Id of the master key of every test agent ([`test_key`]).
pub const TEST_KEY_ID: &str = "test";

/// The master key every test agent encrypts under and every [`shipper_command`] reads
/// with: written once per test process (mode 0600) into its own temporary directory.
///
/// # Errors
/// When it cannot be written.
pub fn test_key() -> anyhow::Result<&'static Path> {
    static KEY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(k) = KEY.get() {
        return Ok(k);
    }
    let dir = tempfile::Builder::new()
        .prefix("logferry-test-key-")
        .tempdir()?
        .keep();
    let path = dir.join("test.key");
    write_key(&path, TEST_KEY_ID)?;
    Ok(KEY.get_or_init(|| path))
}

/// Writes a new master key `id` into `path` as `logferry-shipper gen-key` does.
///
/// # Errors
/// When the file exists or cannot be written.
pub fn write_key(path: &Path, id: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (_, text) = logferry_common::crypto::MasterKey::generate(id)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// The `[encryption]` section of a test agent: the test key.
///
/// # Errors
/// As [`test_key`].
pub fn encryption_toml() -> anyhow::Result<String> {
    Ok(format!(
        "\n[encryption]\nkey_id = \"{TEST_KEY_ID}\"\n[encryption.keys.{TEST_KEY_ID}]\nfile = \"{}\"\n",
        test_key()?.display()
    ))
}

/// `logferry-shipper`, reading with the test key (`LOGFERRY_SHIPPER_KEYS`), as every test
/// runs its reading commands.
///
/// # Errors
/// When the binary is missing or the key cannot be written.
pub fn shipper_command() -> anyhow::Result<Command> {
    let mut cmd = Command::new(workspace_bin("logferry-shipper")?);
    cmd.env(
        "LOGFERRY_SHIPPER_KEYS",
        format!("{TEST_KEY_ID}={}", test_key()?.display()),
    );
    Ok(cmd)
}

/// The `Authorization` header value of test requests to a shipper.
pub fn bearer() -> String {
    format!("Bearer {TEST_TOKEN}")
}

impl Shipper {
    /// Writes a config under `dir` and starts the shipper on a free port.
    ///
    /// # Errors
    /// When it does not become healthy within 30 s.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(dir, &[]).await
    }

    /// Like [`Self::start`], with extra environment (e.g. `LOGFERRY__SERVER__...`
    /// overrides of the config).
    ///
    /// # Errors
    /// When it does not become healthy within 30 s.
    pub async fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_local(dir, env, true).await
    }

    /// Like [`Self::start_with_env`] without TLS: `server.insecure_plain_http`.
    ///
    /// # Errors
    /// When it does not become healthy within 30 s.
    pub async fn start_plain_http(dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_local(dir, env, false).await
    }

    /// A shipper on a local-directory store under `dir`, over TLS when `tls`.
    async fn start_local(dir: &Path, env: &[(&str, &str)], tls: bool) -> anyhow::Result<Self> {
        Self::start_local_with(dir, env, tls, "").await
    }

    /// Like [`Self::start_with_env`], with `extra` sections appended to the config (e.g.
    /// `[alerts]` with its receivers, which the environment cannot set).
    ///
    /// # Errors
    /// When it does not become healthy within 30 s.
    pub async fn start_with_config(
        dir: &Path,
        env: &[(&str, &str)],
        extra: &str,
    ) -> anyhow::Result<Self> {
        Self::start_local_with(dir, env, true, extra).await
    }

    async fn start_local_with(
        dir: &Path,
        env: &[(&str, &str)],
        tls: bool,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let store_dir = dir.join("store");
        let store = format!("url = \"{}\"\n", store_dir.display());
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_with_store(dir, &store, store_dir, env, tls, extra).await
    }

    /// Starts a shipper storing into `bucket` of the S3 server `s3`, with extra
    /// environment `env`.
    ///
    /// # Errors
    /// When it does not become healthy within 30 s.
    pub async fn start_s3(
        dir: &Path,
        s3: &crate::s3::S3Server,
        bucket: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let store = format!(
            "url = \"s3://{bucket}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n",
            s3.endpoint()
        );
        let env = crate::s3::S3_ENV
            .iter()
            .chain(env)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_with_store(dir, &store, dir.join("unused"), env, true, "").await
    }

    async fn start_with_store(
        dir: &Path,
        store: &str,
        store_dir: PathBuf,
        env: Vec<(String, String)>,
        tls: bool,
        extra: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut s = Shipper {
            extra: extra.to_owned(),
            port: 0,
            store_dir,
            env,
            config: dir.join("shipper.toml"),
            store: store.to_owned(),
            tls,
            log: dir.join("shipper.log"),
            proc: None,
        };
        if tls && !s.ca_file().exists() {
            gen_certs(&s.certs_dir())?;
        }
        // Port 0 the first time: the shipper binds a free port itself and logs it, so no
        // other test can take it between a probe and the bind. Restarts keep that port,
        // because agents point at it.
        s.write_config()?;
        s.restart().await?;
        s.write_config()?;
        Ok(s)
    }

    fn write_config(&self) -> anyhow::Result<()> {
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(TEST_TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let certs = self.certs_dir();
        let transport = if self.tls {
            format!(
                "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                certs.join("shipper.pem").display(),
                certs.join("shipper.key").display()
            )
        } else {
            "insecure_plain_http = true\n".into()
        };
        std::fs::write(
            &self.config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{}\"\n{transport}\n[store]\n{}\n\
                 [auth]\naudit_log = \"{}\"\n\n\
                 [[auth.tokens]]\nid = \"test\"\nsha256 = \"{hash}\"\nstreams = [\"*\"]\nactions = [\"ship\", \"read\", \"admin\"]\n\n{}",
                self.port,
                self.store,
                self.audit_log().display(),
                self.extra
            ),
        )?;
        Ok(())
    }

    /// The shipper's audit log (JSON lines).
    pub fn audit_log(&self) -> PathBuf {
        self.log.with_file_name("audit.jsonl")
    }

    /// Starts the process again (after [`Self::kill9`]) with the same port and store, and
    /// waits until it serves.
    ///
    /// # Errors
    /// When it exits or does not serve within 30 s (the error holds its log).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(workspace_bin("logferry-shipper")?);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().cloned());
        let from = log_len(&self.log);
        let proc = &*self
            .proc
            .insert(Proc::spawn("logferry-shipper", cmd, &self.log)?);
        self.port =
            wait_logged_port(proc, from, "shipper serving", "listen", "the shipper").await?;
        Ok(())
    }

    /// Crashes the shipper (SIGKILL).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Stops the shipper as systemd, Docker or Kubernetes do (SIGTERM); its exit status.
    ///
    /// # Errors
    /// When it is not running or cannot be signalled.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.proc
            .take()
            .context("the shipper is not running")?
            .terminate()
    }

    /// Peak resident memory of the shipper process so far, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc.as_ref()?.peak_rss_kib()
    }

    /// CPU time the shipper process has used so far, seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.proc.as_ref()?.cpu_seconds()
    }

    /// Base URL of the API.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Where `gen-certs` wrote this shipper's CA and certificates.
    pub fn certs_dir(&self) -> PathBuf {
        self.log.with_file_name("certs")
    }

    /// The CA that signed the shipper's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.certs_dir().join("ca.pem")
    }

    /// The `[shipper]` lines an agent needs to reach this shipper (the CA to trust, or plain
    /// HTTP allowed).
    pub fn agent_tls_lines(&self) -> String {
        if self.tls {
            format!("ca_file = \"{}\"\n", self.ca_file().display())
        } else {
            "insecure_plain_http = true\n".into()
        }
    }

    /// An HTTP client that trusts this shipper's CA.
    ///
    /// # Errors
    /// When the CA file cannot be read.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder();
        if self.tls {
            let pem = std::fs::read(self.ca_file())?;
            b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?);
        }
        Ok(b.build()?)
    }

    /// The store URL for `verify` / `ls`.
    pub fn store_url(&self) -> String {
        self.store_dir.display().to_string()
    }

    /// The body of an authorised `GET path` (e.g. `/v1/status`, `/metrics`).
    ///
    /// # Errors
    /// When the request fails or is not answered with success.
    pub async fn get(&self, path: &str) -> anyhow::Result<String> {
        let answer = self
            .client()?
            .get(format!("{}{path}", self.url()))
            .header("authorization", bearer())
            .send()
            .await?;
        anyhow::ensure!(answer.status().is_success(), "{path}: {}", answer.status());
        Ok(answer.text().await?)
    }

    /// What the shipper holds of `stream`.
    ///
    /// # Errors
    /// When the request fails.
    pub async fn head(&self, stream: &str) -> anyhow::Result<StreamHead> {
        let body = self
            .client()?
            .get(format!("{}/v1/streams/{stream}", self.url()))
            .header("authorization", bearer())
            .send()
            .await?
            .bytes()
            .await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// The shipper's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Settings of an agent under test.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Stream name.
    pub stream: String,
    /// `mysql://...` of the source.
    pub source_url: String,
    /// Replica server id of the agent.
    pub server_id: u32,
    /// Base URL of the shipper.
    pub shipper_url: String,
    /// Extra lines for the `[shipper]` section: how to trust it
    /// ([`Shipper::agent_tls_lines`]).
    pub shipper_extra: String,
    /// Seal age in ms.
    pub max_age_ms: u64,
    /// Extra lines for the `[source]` section (e.g. `resume = "gtid"`).
    pub source_extra: String,
    /// Extra lines for the `[segment]` section (e.g. `codec = "lz4"`).
    pub segment_extra: String,
    /// Extra sections appended to the config (e.g. `[source.snapshot]`).
    pub extra_toml: String,
}

/// A running `logferry-agent run`.
#[derive(Debug)]
pub struct Agent {
    /// Spool directory.
    pub spool_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// Length of the log when the running process started: its lines come after.
    log_from: u64,
    /// Extra environment of the next start.
    env: Vec<(String, String)>,
    proc: Option<Proc>,
}

impl Agent {
    /// Writes a config under `dir` and starts the agent.
    ///
    /// # Errors
    /// When the binary cannot be started.
    pub fn start(dir: &Path, s: &AgentSettings) -> anyhow::Result<Self> {
        Self::start_with_env(dir, s, &[])
    }

    /// Like [`Self::start`], with extra environment (kept for restarts until
    /// [`Self::set_env`] changes it).
    ///
    /// # Errors
    /// When the binary cannot be started.
    pub fn start_with_env(
        dir: &Path,
        s: &AgentSettings,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let spool_dir = dir.join("spool");
        let text = format!(
                "[agent]\nstream = \"{}\"\nspool_dir = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\n\n\
                 [source]\ntype = \"mysql\"\nurl = \"{}\"\nserver_id = {}\nconnect_timeout_ms = 3000\n{}\n\n\
                 [segment]\nmax_age_ms = {}\n{}\n\n[shipper]\nurl = \"{}\"\nretry_max_ms = 1000\ntoken = \"{TEST_TOKEN}\"\n{}\n{}",
                s.stream,
                spool_dir.display(),
                s.source_url,
                s.server_id,
                s.source_extra,
                s.max_age_ms,
                s.segment_extra,
                s.shipper_url,
                s.shipper_extra,
                s.extra_toml
            );
        Self::start_config(dir, &text, env)
    }

    /// Writes `config` (an agent config whose spool is `DIR/spool`; the test key's
    /// `[encryption]` is appended unless it has one) under `dir` and starts the agent.
    ///
    /// # Errors
    /// When the binary cannot be started.
    pub fn start_config(dir: &Path, config: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let spool_dir = dir.join("spool");
        let path = dir.join("agent.toml");
        let encryption = if config.contains("[encryption") {
            String::new()
        } else {
            encryption_toml()?
        };
        std::fs::write(&path, format!("{config}\n{encryption}"))?;
        let config = path;
        let mut a = Agent {
            spool_dir,
            config,
            log: dir.join("agent.log"),
            log_from: 0,
            env: Vec::new(),
            proc: None,
        };
        a.set_env(env);
        a.restart()?;
        Ok(a)
    }

    /// Starts the process again with the same config and spool.
    ///
    /// # Errors
    /// When the binary cannot be started.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(workspace_bin("logferry-agent")?);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().cloned());
        self.log_from = log_len(&self.log);
        self.proc = Some(Proc::spawn("logferry-agent", cmd, &self.log)?);
        Ok(())
    }

    /// The port of the running agent's `/metrics` (it binds port 0 and logs the port it
    /// got), waiting until it has logged it.
    ///
    /// # Errors
    /// When the agent exits or does not serve `/metrics` within 30 s.
    pub async fn metrics_port(&self) -> anyhow::Result<u16> {
        let proc = self.proc.as_ref().context("the agent is not running")?;
        wait_logged_port(proc, self.log_from, "serving /metrics", "addr", "the agent").await
    }

    /// Replaces `from` by `to` in the agent's config file, for the next [`Self::restart`].
    ///
    /// # Errors
    /// When the config does not contain `from` or cannot be written.
    pub fn edit_config(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        anyhow::ensure!(
            text.contains(from),
            "the agent config has no {from:?}:\n{text}"
        );
        std::fs::write(&self.config, text.replace(from, to))?;
        Ok(())
    }

    /// Sets the extra environment of the next [`Self::restart`] (e.g. `FAILPOINTS`).
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Starts `logferry-agent snapshot` with this agent's config, as its own process.
    ///
    /// # Errors
    /// When the binary cannot be started.
    pub fn snapshot_process(&self, log_name: &str) -> anyhow::Result<Proc> {
        let mut cmd = Command::new(workspace_bin("logferry-agent")?);
        cmd.arg("snapshot").arg("--config").arg(&self.config);
        let log = self.log.with_file_name(log_name);
        Proc::spawn("logferry-agent snapshot", cmd, &log)
    }

    /// Crashes the agent (SIGKILL).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// Stops the agent with SIGTERM and returns its exit status.
    ///
    /// # Errors
    /// When it is not running.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.proc.take().context("agent not running")?.terminate()
    }

    /// The exit status if the agent has exited.
    ///
    /// # Errors
    /// When the status cannot be read.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        match &mut self.proc {
            Some(p) => p.try_exit(),
            None => Ok(None),
        }
    }

    /// Number of segments waiting in the spool.
    pub fn spooled(&self) -> usize {
        std::fs::read_dir(self.spool_dir.join("segments"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".lfs"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The agent's `/metrics` text.
    ///
    /// # Errors
    /// When the endpoint does not answer.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port().await?);
        Ok(reqwest::get(url).await?.text().await?)
    }

    /// One value of the agent's `/metrics` (first sample of `name`).
    ///
    /// # Errors
    /// When the endpoint does not answer or the metric is missing.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics().await?;
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no metric {name} in:\n{text}"))
    }

    /// Waits up to `timeout` for the agent to exit; its status, or `None` if still running.
    ///
    /// # Errors
    /// When the status cannot be read.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let until = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(Some(status));
            }
            if std::time::Instant::now() > until {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak resident memory of the agent process so far, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.proc.as_ref()?.peak_rss_kib()
    }

    /// CPU time the agent process has used so far, seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.proc.as_ref()?.cpu_seconds()
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref()?.pid()
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Writes a CA and certificates (for localhost and 127.0.0.1) into `dir` with the real
/// `logferry-shipper gen-certs`.
///
/// # Errors
/// When it fails (its stderr in the error).
pub fn gen_certs(dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(workspace_bin("logferry-shipper")?)
        .arg("gen-certs")
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "gen-certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Waits until `proc` (started when its log was `from` bytes long) logs the port it bound
/// on a line with `marker`; fails with its log when it exits first or takes over 30 s.
async fn wait_logged_port(
    proc: &Proc,
    from: u64,
    marker: &str,
    field: &str,
    what: &str,
) -> anyhow::Result<u16> {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(port) = proc.logged_port(from, marker, field) {
            return Ok(port);
        }
        anyhow::ensure!(
            proc.is_running(),
            "{what} exited before it served:\n{}",
            proc.log()
        );
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "{what} did not log {marker:?} within 30 s:\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
