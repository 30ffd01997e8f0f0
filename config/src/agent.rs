//! Configuration of `logferry-agent`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use logferry_common::{Compression, StreamId};
use serde::Deserialize;

use crate::encryption::EncryptionSection;
use crate::error::invalid;
use crate::secret::SecretUrl;
use crate::Result;

/// The whole agent configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Identity, spool and metrics of this agent.
    pub agent: AgentSection,
    /// The database this agent tails.
    pub source: SourceConfig,
    /// When segments are sealed.
    #[serde(default)]
    pub segment: SegmentSection,
    /// Where segments are shipped.
    pub shipper: ShipperClientSection,
    /// The master key every payload and snapshot chunk is encrypted under.
    #[serde(default)]
    pub encryption: EncryptionSection,
    /// The top-level `[snapshot]` of earlier versions, read only to say where it went.
    #[serde(default, rename = "snapshot")]
    moved_snapshot: Option<toml::Value>,
}

/// MySQL snapshots (`[source.snapshot]`), taken from a replica of the source, paused on
/// the apply side only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSnapshotSection {
    /// `mysql://USER:PASSWORD@REPLICA:PORT`; for the user's grants see
    /// [`SNAPSHOT_GRANTS`].
    pub replica_url: SecretUrl,
    /// When `logferry-agent run` takes one: cron `minute hour day month weekday`, UTC.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// Dump text per stored chunk.
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: u64,
    /// The dump tool (`mariadb-dump`, or `mysqldump` for MySQL).
    #[serde(default = "default_dump_command")]
    pub dump_command: String,
    /// Throttle the dump to this many bytes per second to spare the replica's disks
    /// (unset: as fast as it goes). The replica stays paused longer when throttled.
    #[serde(default)]
    pub max_bytes_per_sec: Option<u64>,
    /// Add the replica's accounts, roles and grants to the snapshot (from `SHOW CREATE
    /// USER` and `SHOW GRANTS`), so that a grant replayed after the snapshot finds its
    /// user.
    #[serde(default = "default_true")]
    pub include_users: bool,
}

/// What the snapshot user (`source.snapshot.replica_url`) needs on the replica: reading
/// every table, view, trigger, event and routine, the users and grants (`mysql.*`), and
/// pausing the replica's SQL thread. Named in the README and in the error of a missing one.
pub const SNAPSHOT_GRANTS: &str = "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, REPLICATION SLAVE ADMIN, SLAVE MONITOR ON *.* TO 'logferry_snapshot'@'%'";

fn default_true() -> bool {
    true
}

fn default_schedule() -> String {
    "0 2 * * 0".into()
}
fn default_chunk_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_dump_command() -> String {
    "mariadb-dump".into()
}

impl MysqlSnapshotSection {
    /// The parsed schedule.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] for `source.snapshot.schedule`.
    pub fn schedule(&self) -> Result<crate::cron::Schedule> {
        self.schedule
            .parse()
            .map_err(|e: String| invalid("source.snapshot.schedule", e))
    }

    fn validate(&self) -> Result<()> {
        let url = url::Url::parse(self.replica_url.expose()).map_err(|e| {
            invalid(
                "source.snapshot.replica_url",
                format!("not a URL ({e}); use mysql://USER:PASSWORD@REPLICA:3306"),
            )
        })?;
        if url.scheme() != "mysql" || url.host_str().is_none_or(|h| h.is_empty()) {
            return Err(invalid(
                "source.snapshot.replica_url",
                "use mysql://USER:PASSWORD@REPLICA:3306",
            ));
        }
        refuse_tls_parameters(&url, "source.snapshot.replica_url")?;
        self.schedule()?;
        if !(64 * 1024..=logferry_common::snapshot::MAX_CHUNK_BYTES_SETTING)
            .contains(&self.chunk_bytes)
        {
            return Err(invalid(
                "source.snapshot.chunk_bytes",
                "use 65536..=67108864 (default 8388608)",
            ));
        }
        if self.max_bytes_per_sec == Some(0) {
            return Err(invalid(
                "source.snapshot.max_bytes_per_sec",
                "0 would never finish; remove the key for no limit",
            ));
        }
        if self.dump_command.trim().is_empty() {
            return Err(invalid(
                "source.snapshot.dump_command",
                "is empty; use mariadb-dump or mysqldump",
            ));
        }
        Ok(())
    }
}

/// Identity, spool and metrics of the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Stream name under which this database's log is stored (unique per database).
    pub stream: StreamId,
    /// Directory of the durable spool and checkpoint; must be on a local disk.
    pub spool_dir: PathBuf,
    /// Stop reading the source while the spool holds more than this many bytes.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Address of the Prometheus `/metrics` endpoint; unset disables it.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// How often the agent reports its state to the shipper, idle or not (ms): the
    /// shipper judges the stream's exposure and the agent's silence by these reports.
    #[serde(default = "default_report_interval_ms")]
    pub report_interval_ms: u64,
}

fn default_spool_max_bytes() -> u64 {
    10 * 1024 * 1024 * 1024
}

fn default_report_interval_ms() -> u64 {
    5000
}

/// The database this agent tails; one variant per source kind, chosen by `type`.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A MySQL or MariaDB server, tailed as a replica over the replication protocol.
    Mysql(MysqlSource),
    /// A Redis server, tailed as a replica over its replication link.
    Redis(crate::redis::RedisSource),
}

/// Reads `type` first, then the rest of the table as that kind's settings, so that an error
/// names the field of the variant (serde's tagged enums lose it).
impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let kind = match table.remove("type") {
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`type` must be a string, not {other}"
                )))
            }
            None => {
                return Err(D::Error::custom(
                    "missing `type`; use type = \"mysql\" or type = \"redis\"",
                ))
            }
        };
        let rest = toml::Value::Table(table);
        match kind.as_str() {
            "mysql" => MysqlSource::deserialize(rest)
                .map(SourceConfig::Mysql)
                .map_err(|e| D::Error::custom(e.to_string().trim())),
            "redis" => crate::redis::RedisSource::deserialize(rest)
                .map(SourceConfig::Redis)
                .map_err(|e| D::Error::custom(e.to_string().trim())),
            other => Err(D::Error::custom(format!(
                "unknown source type {other:?}; supported: \"mysql\", \"redis\""
            ))),
        }
    }
}

/// Where a stream with no stored history starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest binlog the server still has (nothing available is missed).
    Earliest,
    /// The server's current position (only new changes).
    Current,
}

/// How a stream resumes after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumeMode {
    /// GTID when the stored position has GTID state, else file + offset.
    Auto,
    /// Always by GTID (fails when the position has no GTID state).
    Gtid,
    /// Always by binlog file + offset.
    File,
}

/// A MySQL/MariaDB source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSource {
    /// `mysql://USER:PASSWORD@HOST:PORT`; the user needs REPLICATION SLAVE and BINLOG MONITOR
    /// (MySQL: REPLICATION CLIENT).
    pub url: SecretUrl,
    /// Server id this agent presents as a replica; unique among the server's replicas.
    pub server_id: u32,
    /// Where a new stream starts.
    #[serde(default = "default_start")]
    pub start: StartFrom,
    /// How a restart resumes.
    #[serde(default = "default_resume")]
    pub resume: ResumeMode,
    /// Heartbeat period the server is asked for, so that an idle server is not taken for lag.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Connect timeout (of the replica connection of a snapshot too).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Full snapshots from a paused replica (omit to take none).
    #[serde(default)]
    pub snapshot: Option<MysqlSnapshotSection>,
    /// TLS to the server (and to the snapshot replica), as MySQL's `ssl-mode`.
    #[serde(default)]
    pub tls: MysqlTls,
}

/// `[source.tls]`: how the connections to the server (the binlog, and the snapshot replica's
/// connection and dump) are protected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlTls {
    /// As MySQL's `--ssl-mode`; default `preferred`.
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM file of the CA that signed the server's certificate (for `verify_ca` and
    /// `verify_identity`; unset: the bundled public roots).
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for servers that require one (`REQUIRE X509`), with `key`.
    #[serde(default)]
    pub cert: Option<std::path::PathBuf>,
    /// The private key of `cert` (PEM).
    #[serde(default)]
    pub key: Option<std::path::PathBuf>,
}

impl MysqlTls {
    /// Checks that the settings mean what they say; errors name each part as `name` spells
    /// it (`source.tls.ca`, or a URL's `ssl-ca`).
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`]: a cert without its key, a `ca` that no mode would
    /// use, files with TLS disabled.
    pub fn validate(&self, name: impl Fn(&str) -> String) -> Result<()> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(invalid(
                &name("cert"),
                format!("give {} and {} together", name("cert"), name("key")),
            ));
        }
        if self.mode == TlsMode::Disabled && (self.ca.is_some() || self.cert.is_some()) {
            return Err(invalid(
                &name("mode"),
                "is \"disabled\" but TLS files are given; use \"verify_identity\" (or remove the files)",
            ));
        }
        if self.ca.is_some() && self.mode != TlsMode::VerifyIdentity {
            return Err(invalid(
                &name("ca"),
                "is used only by mode \"verify_identity\" (the other modes check no certificate); set that mode or remove it",
            ));
        }
        Ok(())
    }

    /// The flags that give the stock clients (`mariadb`, `mariadb-dump`; Oracle's when
    /// `oracle`) the same protection: MariaDB's take `--ssl` and `--ssl-verify-server-cert`,
    /// Oracle's (8.0 on) only `--ssl-mode`. `preferred` leaves the client's own default.
    pub fn client_args(&self, oracle: bool) -> Vec<String> {
        let mut args: Vec<String> = match (self.mode, oracle) {
            (TlsMode::Disabled, false) => vec!["--skip-ssl".into()],
            (TlsMode::Preferred, _) => Vec::new(),
            (TlsMode::Required, false) => {
                vec!["--ssl".into(), "--skip-ssl-verify-server-cert".into()]
            }
            (TlsMode::VerifyIdentity, false) => {
                vec!["--ssl".into(), "--ssl-verify-server-cert".into()]
            }
            (TlsMode::Disabled, true) => vec!["--ssl-mode=DISABLED".into()],
            (TlsMode::Required, true) => vec!["--ssl-mode=REQUIRED".into()],
            (TlsMode::VerifyIdentity, true) => vec!["--ssl-mode=VERIFY_IDENTITY".into()],
        };
        if self.mode != TlsMode::Disabled {
            if let Some(ca) = &self.ca {
                args.push(format!("--ssl-ca={}", ca.display()));
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                args.push(format!("--ssl-cert={}", cert.display()));
                args.push(format!("--ssl-key={}", key.display()));
            }
        }
        args
    }
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    /// `ssl-mode` as MySQL spells it (`VERIFY_IDENTITY`) or as the config does
    /// (`verify_identity`): the one reading of a mode, for the config and for URLs. The
    /// error does not repeat the text (a URL's query may hold a misplaced password).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "disabled" => Ok(TlsMode::Disabled),
            "preferred" => Ok(TlsMode::Preferred),
            "required" => Ok(TlsMode::Required),
            "verify_identity" => Ok(TlsMode::VerifyIdentity),
            "verify_ca" => Err("\"verify_ca\" is not offered (the driver cannot check a certificate's chain without its name); use \"verify_identity\" with a host the certificate names".into()),
            _ => Err("is not a TLS mode; use disabled, preferred, required or verify_identity".into()),
        }
    }
}

impl TryFrom<String> for TlsMode {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// Refuses the driver's own TLS parameters in a server URL (`require_ssl`, `verify_ca`, ...):
/// `[source.tls]` would override them unseen.
fn refuse_tls_parameters(url: &url::Url, key: &str) -> Result<()> {
    const DRIVER_TLS: [&str; 4] = [
        "require_ssl",
        "verify_ca",
        "verify_identity",
        "built_in_roots",
    ];
    for (name, _) in url.query_pairs() {
        if DRIVER_TLS.contains(&name.as_ref()) {
            return Err(invalid(
                key,
                format!("has the TLS parameter {name:?}; TLS is set in [source.tls] (mode, ca, cert, key): move it there"),
            ));
        }
    }
    Ok(())
}

/// MySQL's `ssl-mode`, with the same meaning (its `VERIFY_CA` is not offered: see
/// its `FromStr`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum TlsMode {
    /// Never TLS.
    Disabled,
    /// TLS when the server offers it (its certificate unchecked), else plain, with a warning.
    #[default]
    Preferred,
    /// TLS or no connection; the certificate is not checked.
    Required,
    /// TLS with a certificate signed by `ca` for the host of the URL.
    VerifyIdentity,
}

fn default_start() -> StartFrom {
    StartFrom::Earliest
}
fn default_resume() -> ResumeMode {
    ResumeMode::Auto
}
fn default_heartbeat_ms() -> u64 {
    1000
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}

/// When the segmenter seals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSection {
    /// Seal once the payload reaches this size (at the next transaction boundary).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Seal once the oldest event in the open segment is this old (the RPO knob).
    #[serde(default = "default_max_age_ms")]
    pub max_age_ms: u64,
    /// How payloads are compressed: `zstd` (default, the smallest store), `lz4` (about
    /// twice as fast to seal, about twice the bytes) or `none`. Readers take every codec, so
    /// it may be changed at any time. See BENCHMARKS.md for both on binlog data.
    #[serde(default)]
    pub codec: CodecChoice,
    /// zstd level of the payload: lower is faster, higher is smaller. Negative levels are
    /// zstd's fast modes. See BENCHMARKS.md for the speed and size of each on binlog data.
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
}

/// The value of `segment.codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecChoice {
    /// zstd at `segment.zstd_level`.
    #[default]
    Zstd,
    /// LZ4 frames.
    Lz4,
    /// Stored uncompressed.
    None,
}

fn default_zstd_level() -> i32 {
    logferry_common::segment::DEFAULT_ZSTD_LEVEL
}
fn default_max_bytes() -> u64 {
    4 * 1024 * 1024
}
fn default_max_age_ms() -> u64 {
    1000
}

impl Default for SegmentSection {
    fn default() -> Self {
        SegmentSection {
            max_bytes: default_max_bytes(),
            max_age_ms: default_max_age_ms(),
            codec: CodecChoice::default(),
            zstd_level: default_zstd_level(),
        }
    }
}

impl SegmentSection {
    /// The compression the agent seals with, from `codec` and `zstd_level`.
    pub fn compression(&self) -> Compression {
        match self.codec {
            CodecChoice::Zstd => Compression::Zstd(self.zstd_level),
            CodecChoice::Lz4 => Compression::Lz4,
            CodecChoice::None => Compression::None,
        }
    }

    /// `max_age_ms` as a duration.
    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.max_age_ms)
    }
}

/// How to reach the shipper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipperClientSection {
    /// Base URL, e.g. `https://shipper:9450`.
    pub url: String,
    /// The bearer token the shipper accepts for this stream (`logferry-shipper gen-token`);
    /// best set from the environment, `LOGFERRY__SHIPPER__TOKEN`. Never shown.
    #[serde(default)]
    pub token: Option<crate::SecretString>,
    /// Timeout of one upload.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First retry delay after a failed upload; doubles up to `retry_max_ms`.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Uploads sent before the oldest is acknowledged: with a shipper tens of
    /// milliseconds away, a catch-up would otherwise wait one round trip per segment.
    /// Acknowledgements still advance the checkpoint in order; the memory held is up to
    /// this many sealed segments.
    #[serde(default = "default_uploads_in_flight")]
    pub uploads_in_flight: usize,
    /// PEM file of the CA that signed the shipper's certificate: the only one trusted when
    /// set (unset: the system's roots).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM certificate (and `client_key`) shown to a shipper that asks for one (mutual TLS).
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// The private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
    /// Allow an `http://` url: only behind a TLS-terminating proxy on the same host, or on
    /// a closed test network.
    #[serde(default)]
    pub insecure_plain_http: bool,
}

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_retry_min_ms() -> u64 {
    200
}
fn default_retry_max_ms() -> u64 {
    5_000
}
fn default_uploads_in_flight() -> usize {
    4
}

impl AgentConfig {
    /// Loads and validates an agent config file (with environment overrides).
    ///
    /// # Errors
    /// Any [`crate::ConfigError`], naming the key.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: AgentConfig = crate::load_file(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot work.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming the key and the fix.
    pub fn validate(&self) -> Result<()> {
        if self.agent.spool_dir.as_os_str().is_empty() {
            return Err(invalid(
                "agent.spool_dir",
                "is empty; give a directory on a local disk",
            ));
        }
        if self.agent.spool_max_bytes < 1024 * 1024 {
            return Err(invalid(
                "agent.spool_max_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        if !(100..=600_000).contains(&self.agent.report_interval_ms) {
            return Err(invalid(
                "agent.report_interval_ms",
                "must be between 100 and 600000 (the default, 5000, reports every 5 s)",
            ));
        }
        if self.moved_snapshot.is_some() {
            return Err(invalid(
                "snapshot",
                "the [snapshot] section now belongs to its source: rename the table header to [source.snapshot] (its keys are unchanged)",
            ));
        }
        match &self.source {
            SourceConfig::Mysql(m) => m.validate()?,
            SourceConfig::Redis(r) => r.validate()?,
        }
        self.encryption.validate(true, &[&self.agent.spool_dir])?;
        // A segment holds up to max_bytes plus one event: half of what the default
        // shipper accepts (the agent checks the shipper's own limit when it connects).
        let most = logferry_common::segment::max_payload_for(
            logferry_common::segment::DEFAULT_MAX_SEGMENT_BYTES,
        ) / 2;
        if self.segment.max_bytes < 1024 || self.segment.max_bytes > most {
            return Err(invalid(
                "segment.max_bytes",
                format!(
                    "{} is out of range; use 1024..={most} (a segment holds up to this plus one event, and the shipper accepts {} by default)",
                    self.segment.max_bytes,
                    logferry_common::segment::DEFAULT_MAX_SEGMENT_BYTES
                ),
            ));
        }
        if self.segment.max_age_ms < 10 || self.segment.max_age_ms > 600_000 {
            return Err(invalid(
                "segment.max_age_ms",
                format!(
                    "{} is out of range; use 10..=600000 (default 1000)",
                    self.segment.max_age_ms
                ),
            ));
        }
        if !(-7..=19).contains(&self.segment.zstd_level) {
            return Err(invalid(
                "segment.zstd_level",
                format!(
                    "{} is out of range; use -7..=19 (default 1; 3 is zstd's usual default)",
                    self.segment.zstd_level
                ),
            ));
        }
        let url = url::Url::parse(&self.shipper.url).map_err(|e| {
            invalid(
                "shipper.url",
                format!(
                    "{:?} is not a URL ({e}); use e.g. https://shipper:9450",
                    self.shipper.url
                ),
            )
        })?;
        match (url.scheme(), self.shipper.insecure_plain_http) {
            ("https", _) => {}
            ("http", true) => {
                if self.shipper.ca_file.is_some() || self.shipper.client_cert.is_some() {
                    return Err(invalid(
                        "shipper.url",
                        "is http://, so shipper.ca_file and shipper.client_cert would go unused; use https://",
                    ));
                }
            }
            ("http", false) => {
                return Err(invalid(
                    "shipper.url",
                    format!(
                        "{} is plain HTTP, so the token and every segment would cross the network in clear; use https:// (with shipper.ca_file for a private CA), or set shipper.insecure_plain_http = true for a TLS-terminating proxy on this host",
                        url
                    ),
                ))
            }
            (other, _) => {
                return Err(invalid(
                    "shipper.url",
                    format!("scheme {other:?} is not supported; use https://"),
                ))
            }
        }
        if self.shipper.client_cert.is_some() != self.shipper.client_key.is_some() {
            return Err(invalid(
                "shipper.client_cert",
                "give shipper.client_cert and shipper.client_key together",
            ));
        }
        if self.shipper.retry_min_ms == 0 || self.shipper.retry_min_ms > self.shipper.retry_max_ms {
            return Err(invalid(
                "shipper.retry_min_ms",
                "must be at least 1 and not above shipper.retry_max_ms",
            ));
        }
        if !(1..=64).contains(&self.shipper.uploads_in_flight) {
            return Err(invalid(
                "shipper.uploads_in_flight",
                format!(
                    "{} is out of range; use 1..=64 (default 4; 1 uploads one segment at a time)",
                    self.shipper.uploads_in_flight
                ),
            ));
        }
        Ok(())
    }
}

impl SourceConfig {
    /// When the source's snapshots are taken, if it takes any.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] for the schedule key.
    pub fn snapshot_schedule(&self) -> Result<Option<crate::cron::Schedule>> {
        match self {
            SourceConfig::Mysql(m) => m
                .snapshot
                .as_ref()
                .map(MysqlSnapshotSection::schedule)
                .transpose(),
            SourceConfig::Redis(r) => r
                .snapshot
                .as_ref()
                .map(crate::redis::RedisSnapshotSection::schedule)
                .transpose(),
        }
    }

    /// How long connecting to the source (or its replica) may take.
    pub fn connect_timeout(&self) -> Duration {
        match self {
            SourceConfig::Mysql(m) => Duration::from_millis(m.connect_timeout_ms),
            SourceConfig::Redis(r) => r.connect_timeout(),
        }
    }
}

impl MysqlSource {
    fn validate(&self) -> Result<()> {
        if let Some(s) = &self.snapshot {
            s.validate()?;
        }
        let url = url::Url::parse(self.url.expose()).map_err(|e| {
            invalid(
                "source.url",
                format!("not a URL ({e}); use mysql://USER:PASSWORD@HOST:3306"),
            )
        })?;
        if url.scheme() != "mysql" {
            return Err(invalid(
                "source.url",
                format!(
                    "scheme {:?}: use mysql://USER:PASSWORD@HOST:3306",
                    url.scheme()
                ),
            ));
        }
        if url.host_str().is_none_or(|h| h.is_empty()) {
            return Err(invalid(
                "source.url",
                "has no host; use mysql://USER:PASSWORD@HOST:3306",
            ));
        }
        if self.server_id == 0 {
            return Err(invalid(
                "source.server_id",
                "0 is not allowed for a replica; pick a number unique among the server's replicas",
            ));
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms > 60_000 {
            return Err(invalid(
                "source.heartbeat_ms",
                "use 1..=60000 (default 1000)",
            ));
        }
        self.tls.validate(|part| format!("source.tls.{part}"))?;
        refuse_tls_parameters(&url, "source.url")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_names_exactly_the_snapshot_grants() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&format!("{SNAPSHOT_GRANTS};")),
            "README.md must show SNAPSHOT_GRANTS verbatim: {SNAPSHOT_GRANTS}"
        );
    }
    use crate::{parse_str, ConfigError};

    #[test]
    fn the_shipped_examples_are_valid() {
        for (name, text) in [
            (
                "examples/agent.toml",
                include_str!("../../examples/agent.toml"),
            ),
            (
                "examples/compose/agent.toml",
                include_str!("../../examples/compose/agent.toml"),
            ),
        ] {
            let cfg: AgentConfig =
                parse_str(text, name, vec![]).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.segment.zstd_level, 1, "{name}");
            assert_eq!(cfg.segment.compression(), Compression::Zstd(1), "{name}");
        }
    }

    #[test]
    fn codec_is_chosen_by_name_and_a_bad_name_is_named() {
        for (name, want) in [
            ("zstd", Compression::Zstd(1)),
            ("lz4", Compression::Lz4),
            ("none", Compression::None),
        ] {
            let text = format!("{GOOD}\n[segment]\ncodec = \"{name}\"\n");
            let cfg: AgentConfig = parse_str(&text, "a.toml", vec![]).unwrap();
            cfg.validate().unwrap();
            assert_eq!(cfg.segment.compression(), want);
        }
        let env = vec![("LOGFERRY__SEGMENT__CODEC".to_string(), "lz4".to_string())];
        let cfg: AgentConfig = parse_str(GOOD, "a.toml", env).unwrap();
        assert_eq!(cfg.segment.compression(), Compression::Lz4);
        let text = format!("{GOOD}\n[segment]\ncodec = \"lz5\"\n");
        let err = parse_str::<AgentConfig>(&text, "a.toml", vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("codec") && err.contains("lz4"), "{err}");
    }

    #[test]
    fn zstd_level_out_of_range_names_the_key() {
        let text = format!("{GOOD}\n[segment]\nzstd_level = 40\n");
        let cfg: AgentConfig = parse_str(&text, "a.toml", vec![]).unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { ref key, .. } if key == "segment.zstd_level"),
            "{err}"
        );
    }

    const GOOD: &str = r#"
[agent]
stream = "db1"
spool_dir = "/tmp/spool"

[source]
type = "mysql"
url = "mysql://repl:pw@127.0.0.1:3306"
server_id = 4242

[shipper]
url = "https://127.0.0.1:9450"

[encryption]
key_id = "k1"
[encryption.keys.k1]
env = "LOGFERRY_TEST_KEY"
"#;

    fn parse(text: &str, env: Vec<(&str, &str)>) -> Result<AgentConfig> {
        let env = env.into_iter().map(|(a, b)| (a.to_owned(), b.to_owned()));
        let cfg: AgentConfig = parse_str(text, "agent.toml", env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn no_password_shows_in_the_printed_config() {
        let text = format!(
            "{}\n[source.snapshot]\nreplica_url = \"mysql://root:r3pl1ca-pw@10.0.0.2:3306\"\n",
            GOOD.replace("repl:pw@", "repl:s0urce-pw@")
        );
        let cfg = parse(&text, vec![]).unwrap();
        let shown = format!("{cfg:#?}");
        for secret in ["s0urce-pw", "r3pl1ca-pw"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("mysql://repl:***@127.0.0.1:3306"), "{shown}");
    }

    #[test]
    fn defaults_apply() {
        let cfg = parse(GOOD, vec![]).unwrap();
        assert_eq!(cfg.segment.max_age_ms, 1000);
        let SourceConfig::Mysql(m) = &cfg.source else {
            panic!("a MySQL source");
        };
        assert_eq!(m.start, StartFrom::Earliest);
        assert_eq!(m.resume, ResumeMode::Auto);
    }

    #[test]
    fn env_overrides_keys() {
        let cfg = parse(
            GOOD,
            vec![
                ("LOGFERRY__SEGMENT__MAX_AGE_MS", "200"),
                ("LOGFERRY__SOURCE__URL", "mysql://u:p@db:3307"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.segment.max_age_ms, 200);
        let SourceConfig::Mysql(m) = &cfg.source else {
            panic!("a MySQL source");
        };
        assert_eq!(m.url.expose(), "mysql://u:p@db:3307");
    }

    #[test]
    fn each_mode_gives_the_stock_clients_their_flags() {
        let files = MysqlTls {
            mode: TlsMode::VerifyIdentity,
            ca: Some("/etc/ca.pem".into()),
            cert: Some("/etc/c.pem".into()),
            key: Some("/etc/c.key".into()),
        };
        assert_eq!(
            files.client_args(false),
            [
                "--ssl",
                "--ssl-verify-server-cert",
                "--ssl-ca=/etc/ca.pem",
                "--ssl-cert=/etc/c.pem",
                "--ssl-key=/etc/c.key"
            ]
        );
        let off = MysqlTls {
            mode: TlsMode::Disabled,
            ..MysqlTls::default()
        };
        assert_eq!(off.client_args(false), ["--skip-ssl"]);
        assert_eq!(off.client_args(true), ["--ssl-mode=DISABLED"]);
        assert_eq!(files.client_args(true)[0], "--ssl-mode=VERIFY_IDENTITY");
        assert!(MysqlTls::default().client_args(false).is_empty());
        assert_eq!("VERIFY_IDENTITY".parse(), Ok(TlsMode::VerifyIdentity));
        assert!("verify-ca"
            .parse::<TlsMode>()
            .unwrap_err()
            .contains("verify_identity"));
    }

    #[test]
    fn plain_http_needs_saying_so() {
        let text = GOOD.replace(
            "url = \"https://127.0.0.1:9450\"",
            "url = \"http://127.0.0.1:9450\"\ninsecure_plain_http = true",
        );
        parse(&text, vec![]).unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let text = GOOD.replace("server_id = 4242", "server_id = 4242\nserverid = 1");
        let err = parse(&text, vec![]).unwrap_err().to_string();
        assert!(err.contains("serverid"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("server_id = 4242", "server_id = 0", "source.server_id"),
            (
                "server_id = 4242",
                "server_id = 4242\ntls = { mode = \"verify_identity\", cert = \"/c.pem\" }",
                "source.tls.cert",
            ),
            (
                "server_id = 4242",
                "server_id = 4242\ntls = { mode = \"disabled\", cert = \"/c.pem\", key = \"/c.key\" }",
                "source.tls.mode",
            ),
            (
                "server_id = 4242",
                "server_id = 4242\ntls = { mode = \"required\", ca = \"/ca.pem\" }",
                "source.tls.ca",
            ),
            (
                "server_id = 4242",
                "server_id = 4242\ntls = { mode = \"verify_ca\", ca = \"/ca.pem\" }",
                "verify_identity",
            ),
            (
                "mysql://repl:pw@127.0.0.1:3306",
                "mysql://repl:pw@127.0.0.1:3306?require_ssl=true",
                "[source.tls]",
            ),
            (
                "server_id = 4242",
                "server_id = 4242\ntls = { mode = \"verify-full\" }",
                "not a TLS mode",
            ),
            (
                "url = \"https://127.0.0.1:9450\"",
                "url = \"ftp://x\"",
                "shipper.url",
            ),
            (
                "url = \"https://127.0.0.1:9450\"",
                "url = \"http://127.0.0.1:9450\"",
                "shipper.url",
            ),
            (
                "url = \"https://127.0.0.1:9450\"",
                "url = \"https://127.0.0.1:9450\"\nclient_cert = \"/etc/a.pem\"",
                "shipper.client_cert",
            ),
            (
                "mysql://repl:pw@127.0.0.1:3306",
                "postgres://x",
                "source.url",
            ),
            ("stream = \"db1\"", "stream = \"DB 1\"", "stream id"),
            ("[shipper]", "[source.snapshot]\nreplica_url = \"mysql://r@h:3306\"\nschedule = \"0 2 * *\"\n\n[shipper]", "source.snapshot.schedule"),
            ("[shipper]", "[snapshot]\nreplica_url = \"mysql://r@h:3306\"\n\n[shipper]", "[source.snapshot]"),
        ];
        for (from, to, key) in cases {
            let err = parse(&GOOD.replace(from, to), vec![])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{to}: {err}");
        }
        let err = parse(GOOD, vec![("LOGFERRY__SEGMENT__MAX_AGE_MS", "1")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { ref key, .. } if key == "segment.max_age_ms"));
    }

    #[test]
    fn redis_modes_name_the_key_they_need() {
        let redis = |source: &str| {
            let text = GOOD.replace(
                &GOOD[GOOD.find("[source]").unwrap_or(0)..GOOD.find("[shipper]").unwrap_or(0)],
                &format!("[source]\ntype = \"redis\"\n{source}\n"),
            );
            parse(&text, vec![])
        };
        let err = |source: &str| redis(source).unwrap_err().to_string();
        assert!(err("").contains("source.url"), "{}", err(""));
        assert!(err("mode = \"aof\"").contains("source.aof_dir"));
        let with_schedule = "mode = \"aof\"\naof_dir = \"/data/appendonlydir\"\n[source.snapshot]\nschedule = \"0 2 * * 0\"";
        assert!(err(with_schedule).contains("source.snapshot"));
        assert!(err("mode = \"tail\"").contains("mode"));
        let cfg = redis("mode = \"aof\"\naof_dir = \"/data/appendonlydir\"").unwrap();
        let SourceConfig::Redis(r) = &cfg.source else {
            panic!("a Redis source");
        };
        assert_eq!(r.mode, crate::RedisMode::Aof);
        assert!(redis("url = \"redis://cache:6379\"").is_ok());
        assert!(err("url = \"redis://cache:6379\"\naof_dir = \"/d\"").contains("source.aof_dir"));
        assert!(err("mode = \"aof\"\naof_dir = \"/d\"\nurl = \"redis://c\"").contains("source.url"));
    }

    #[test]
    fn malformed_toml_is_a_parse_error() {
        let err = parse("[agent\nstream=", vec![]).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }
}
