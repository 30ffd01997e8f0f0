//! Configuration of `logferry-shipper`.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::error::invalid;
use crate::secret::SecretUrl;
use crate::Result;

/// The whole shipper configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipperConfig {
    /// The HTTP API.
    #[serde(default)]
    pub server: ServerSection,
    /// Where segments are stored.
    pub store: StoreConfig,
    /// Who may call the API, and the audit log of who did.
    #[serde(default)]
    pub auth: AuthSection,
    /// The master keys that restores, verify, the drill and `rotate-key` open data with
    /// (`serve` needs none: it checks uploads without keys).
    #[serde(default)]
    pub encryption: crate::encryption::EncryptionSection,
    /// How `serve` judges each stream's exposure and health.
    #[serde(default)]
    pub watch: WatchSection,
    /// The alert rules `serve` evaluates, and where it sends alerts.
    #[serde(default)]
    pub alerts: crate::alerts::AlertsSection,
    /// Restore drills `serve` runs on a schedule; none without this section.
    #[serde(default)]
    pub drill: Option<DrillSection>,
}

/// `[drill]`: `serve` restores every stream (or `streams`) into a scratch server of its
/// kind on `schedule` and checks it as `verify --restore-drill` does, storing each result
/// in the bucket, where the status, `/metrics` and the `drill` alert rule read it. The
/// scratch servers are emptied and loaded by every drill: never point them at a database
/// anyone uses. The master keys of `[encryption]` must be here to read encrypted streams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillSection {
    /// When to drill, five-field cron in UTC (e.g. `30 3 * * *`).
    pub schedule: String,
    /// Scratch server for MySQL/MariaDB streams (`mysql://root@scratch:3306`).
    pub mysql_target: Option<SecretUrl>,
    /// A live replica to compare the MySQL restore with (proves a stream with a single
    /// snapshot; paused briefly by each drill).
    pub mysql_replica: Option<SecretUrl>,
    /// Scratch server for Redis streams (`redis://scratch:6379`).
    pub redis_target: Option<SecretUrl>,
    /// Only these streams (default: every stream stored).
    #[serde(default)]
    pub streams: Vec<String>,
}

impl DrillSection {
    /// The parsed schedule.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming `drill.schedule`.
    pub fn schedule(&self) -> Result<crate::cron::Schedule> {
        self.schedule
            .parse()
            .map_err(|e: String| invalid("drill.schedule", e))
    }

    fn validate(&self) -> Result<()> {
        self.schedule()?;
        if self.mysql_target.is_none() && self.redis_target.is_none() {
            return Err(invalid(
                "drill",
                "names no scratch server: set drill.mysql_target or drill.redis_target (or remove [drill])",
            ));
        }
        for (key, url, scheme) in [
            ("drill.mysql_target", &self.mysql_target, "mysql"),
            ("drill.mysql_replica", &self.mysql_replica, "mysql"),
            ("drill.redis_target", &self.redis_target, "redis"),
        ] {
            if let Some(u) = url {
                let ok = url::Url::parse(u.expose()).is_ok_and(|p| {
                    p.scheme() == scheme || (scheme == "redis" && p.scheme() == "rediss")
                });
                if !ok {
                    return Err(invalid(
                        key,
                        format!("{} is not a {scheme}:// URL", u.redacted()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `[watch]`: what the shipper calls healthy for the streams it receives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSection {
    /// The RPO the streams are meant to keep (s): a stream exposed longer is red, one
    /// exposed more than half of it amber.
    #[serde(default = "default_rpo_target_seconds")]
    pub rpo_target_seconds: f64,
    /// How often what is stored of each stream (snapshots, drills, the chain's end) is
    /// read again from the store (ms).
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// After the shipper starts, how long a stream whose agent has not reported yet is not
    /// judged (ms): its agent needs a report interval to be heard again. Then its silence
    /// and exposure count from what the run before last heard.
    #[serde(default = "default_startup_grace_ms")]
    pub startup_grace_ms: u64,
}

impl Default for WatchSection {
    fn default() -> Self {
        WatchSection {
            rpo_target_seconds: default_rpo_target_seconds(),
            refresh_ms: default_refresh_ms(),
            startup_grace_ms: default_startup_grace_ms(),
        }
    }
}

fn default_rpo_target_seconds() -> f64 {
    60.0
}

fn default_refresh_ms() -> u64 {
    15_000
}

fn default_startup_grace_ms() -> u64 {
    30_000
}

impl WatchSection {
    fn validate(&self) -> Result<()> {
        if !(self.rpo_target_seconds.is_finite() && self.rpo_target_seconds > 0.0) {
            return Err(invalid(
                "watch.rpo_target_seconds",
                "must be a number of seconds above 0 (the default is 60)",
            ));
        }
        if self.startup_grace_ms > 600_000 {
            return Err(invalid(
                "watch.startup_grace_ms",
                "must be at most 600000 (the default, 30000, waits 30 s for the agents)",
            ));
        }
        if !(100..=3_600_000).contains(&self.refresh_ms) {
            return Err(invalid(
                "watch.refresh_ms",
                "must be between 100 and 3600000 (the default, 15000, reads every 15 s)",
            ));
        }
        Ok(())
    }
}

/// What a token may do with the streams it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Upload segments and snapshots, and read where the stream stands (what an agent
    /// needs to resume): no stored data is ever read back with it.
    Ship,
    /// List streams and read their state.
    Read,
    /// The shipper's own state: `/metrics`.
    Admin,
}

/// `[auth]`: every request but `/healthz` carries `Authorization: Bearer <token>`, and the
/// config holds only each token's sha256. Restores read the bucket directly and need the
/// bucket's credentials, not a token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Accept every request without a token: only for tests or a closed lab network; the
    /// shipper warns at start.
    #[serde(default)]
    pub insecure_no_auth: bool,
    /// The accepted tokens (`logferry-shipper gen-token` prints one with its entry).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Append-only JSON lines of every authenticated and every refused request; unset:
    /// none (warned at start).
    #[serde(default)]
    pub audit_log: Option<std::path::PathBuf>,
    /// Size at which the audit log is rotated (to `.1`, `.2`, ... `.5`).
    #[serde(default = "default_audit_max_bytes")]
    pub audit_max_bytes: u64,
}

/// The size past which the audit log is rotated unless `auth.audit_max_bytes` says.
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 64 * 1024 * 1024;

fn default_audit_max_bytes() -> u64 {
    DEFAULT_AUDIT_MAX_BYTES
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            insecure_no_auth: false,
            tokens: Vec::new(),
            audit_log: None,
            audit_max_bytes: default_audit_max_bytes(),
        }
    }
}

/// One accepted token (`[[auth.tokens]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for the token, written to the audit log (never the secret).
    pub id: String,
    /// Hex sha256 of the token.
    pub sha256: String,
    /// Stream-name prefixes it covers (`orders-`); `*` covers every stream.
    pub streams: Vec<String>,
    /// What it may do there.
    pub actions: Vec<Action>,
    /// RFC 3339 time after which it is refused.
    #[serde(default)]
    pub expires: Option<String>,
}

impl TokenConfig {
    /// The expiry as ms since the epoch.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] for `auth.tokens.expires` that is not RFC 3339.
    pub fn expires_ms(&self) -> Result<Option<i64>> {
        self.expires
            .as_deref()
            .map(|e| {
                humantime::parse_rfc3339(e)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .ok_or_else(|| {
                        invalid(
                            "auth.tokens.expires",
                            format!("token {:?}: {e:?} is not an RFC 3339 UTC time (2027-01-01T00:00:00Z)", self.id),
                        )
                    })
            })
            .transpose()
    }
}

impl AuthSection {
    /// Checks the tokens: a 64-digit hex sha256 each, unique ids, at least one stream and
    /// one action, a readable expiry; and that some token exists unless auth is off.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming the key and the token.
    pub fn validate(&self) -> Result<()> {
        if self.tokens.is_empty() && !self.insecure_no_auth {
            return Err(invalid(
                "auth.tokens",
                "no token is configured, so no agent could upload; add one printed by `logferry-shipper gen-token`, or set auth.insecure_no_auth = true on a closed test network",
            ));
        }
        if self.insecure_no_auth && !self.tokens.is_empty() {
            return Err(invalid(
                "auth.insecure_no_auth",
                "tokens are configured but insecure_no_auth would accept every request without one; remove insecure_no_auth",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let mut hashes = std::collections::HashMap::new();
        for t in &self.tokens {
            let name = &t.id;
            check_token_id(&t.id).map_err(|e| invalid("auth.tokens.id", e))?;
            if !ids.insert(t.id.as_str()) {
                return Err(invalid(
                    "auth.tokens.id",
                    format!("{name:?}: every token needs an id of its own"),
                ));
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "auth.tokens.sha256",
                    format!("token {name:?}: give the 64 hex digits `logferry-shipper gen-token` printed"),
                ));
            }
            if let Some(first) = hashes.insert(t.sha256.to_ascii_lowercase(), name) {
                return Err(invalid(
                    "auth.tokens.sha256",
                    format!("tokens {first:?} and {name:?} have the same sha256, so one secret would act as both; give each its own token"),
                ));
            }
            if t.streams.is_empty() || !t.streams.iter().all(|p| stream_prefix_ok(p)) {
                return Err(invalid(
                    "auth.tokens.streams",
                    format!("token {name:?}: list stream-name prefixes (\"orders-\": a-z, 0-9, '.', '_', '-', starting with a letter or digit), or \"*\" for every stream"),
                ));
            }
            if t.actions.is_empty() {
                return Err(invalid(
                    "auth.tokens.actions",
                    format!("token {name:?}: list what it may do: \"ship\", \"read\", \"admin\""),
                ));
            }
            t.expires_ms()?;
        }
        if self.audit_max_bytes < 4096 {
            return Err(invalid("auth.audit_max_bytes", "use at least 4096"));
        }
        Ok(())
    }
}

/// Checks a token id: what the audit log and error messages quote as they are.
///
/// # Errors
/// What is wrong with it, for the caller to put beside the key or flag it came from.
pub fn check_token_id(id: &str) -> std::result::Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?}: use 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-'"
        ))
    }
}

/// Whether `prefix` can begin a stream name (or is `*`, every stream): a prefix no stream
/// name can have (`Orders-`) would make a token that covers nothing. A prefix of a valid
/// name is itself one.
fn stream_prefix_ok(prefix: &str) -> bool {
    prefix == "*" || logferry_common::StreamId::new(prefix).is_ok()
}

/// The HTTP API of the shipper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest accepted segment upload; larger bodies get 413.
    #[serde(default = "default_max_segment_bytes")]
    pub max_segment_bytes: u64,
    /// Also decompress every upload and check its plaintext sha256 before acknowledging it.
    /// Off by default: the trailer sha256 already proves the stored bytes are the bytes the
    /// agent sealed, the plaintext is checked by `verify` and by every restore, and an
    /// encrypted payload cannot be opened without its key. On, it costs about as much CPU
    /// per byte as the agent's compression (see BENCHMARKS.md).
    #[serde(default)]
    pub verify_payload: bool,
    /// Uploads (segments and snapshot chunks) received at once; more wait their turn. Each
    /// is held in memory whole, so the shipper's upload memory stays under this many times
    /// `max_segment_bytes`.
    #[serde(default = "default_max_concurrent_uploads")]
    pub max_concurrent_uploads: usize,
    /// How long one upload may take to arrive and be stored; a slower one (an agent host
    /// gone mid-upload) gets 408 and frees its place, which the agent retries.
    #[serde(default = "default_upload_timeout_ms")]
    pub upload_timeout_ms: u64,
    /// Connections open at once, from everyone; more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one address, so that one host (or a flood from it)
    /// cannot take every place from the other agents.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Largest request head (request line and headers); larger is answered 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time for a request's head to arrive, and for an idle connection to send its next one:
    /// a client that trickles its headers (slow loris) is closed after this.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// The API's TLS certificate and key (and, for mutual TLS, the CA of client
    /// certificates); `logferry-shipper gen-certs DIR` writes a set.
    #[serde(default)]
    pub tls: Option<ServerTls>,
    /// Serve plain HTTP without `tls`: only on a closed test network, or behind a proxy
    /// that terminates TLS; warned at start and in `/v1/status`.
    #[serde(default)]
    pub insecure_plain_http: bool,
}

/// `[server.tls]`: PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// When set, only clients with a certificate this CA signed may connect (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<std::path::PathBuf>,
}

fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_peer() -> usize {
    64
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9450))
}
fn default_upload_timeout_ms() -> u64 {
    300_000
}
fn default_max_concurrent_uploads() -> usize {
    8
}
fn default_max_segment_bytes() -> u64 {
    logferry_common::segment::DEFAULT_MAX_SEGMENT_BYTES
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            max_segment_bytes: default_max_segment_bytes(),
            verify_payload: false,
            max_concurrent_uploads: default_max_concurrent_uploads(),
            upload_timeout_ms: default_upload_timeout_ms(),
            max_connections: default_max_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            max_header_bytes: default_max_header_bytes(),
            header_timeout_ms: default_header_timeout_ms(),
            tls: None,
            insecure_plain_http: false,
        }
    }
}

/// The object store holding segments: the source of truth for restore and verify.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `file:///absolute/dir` or a plain absolute path for a local directory,
    /// `s3://bucket[/prefix]` for S3 (credentials from the standard `AWS_*` variables).
    pub url: String,
    /// S3-compatible endpoint (MinIO, Ceph...), e.g. `http://minio:9000`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (`false` leaves `AWS_ALLOW_HTTP` from the environment in force).
    #[serde(default)]
    pub allow_http: bool,
}

impl ShipperConfig {
    /// Loads and validates a shipper config file (with environment overrides).
    ///
    /// # Errors
    /// Any [`crate::ConfigError`], naming the key.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: ShipperConfig = crate::load_file(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot work.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] naming the key and the fix.
    pub fn validate(&self) -> Result<()> {
        self.store.validate()?;
        self.auth.validate()?;
        self.watch.validate()?;
        self.alerts.validate()?;
        if let Some(d) = &self.drill {
            d.validate()?;
        }
        let store_dir = self.store.local_dir();
        self.encryption.validate(
            false,
            &store_dir.iter().map(|d| d.as_path()).collect::<Vec<_>>(),
        )?;
        match (&self.server.tls, self.server.insecure_plain_http) {
            (None, false) => {
                return Err(invalid(
                    "server.tls",
                    "no certificate is configured, so tokens and data would cross the network in clear; add [server.tls] cert and key (`logferry-shipper gen-certs DIR` writes a set), or set server.insecure_plain_http = true behind a TLS-terminating proxy or on a closed test network",
                ))
            }
            (Some(_), true) => {
                return Err(invalid(
                    "server.insecure_plain_http",
                    "[server.tls] is configured too; remove insecure_plain_http",
                ))
            }
            _ => {}
        }
        if !(1_000..=3_600_000).contains(&self.server.upload_timeout_ms) {
            return Err(invalid(
                "server.upload_timeout_ms",
                "use 1000..=3600000 (default 300000)",
            ));
        }
        let s = &self.server;
        if !(1..=65_536).contains(&s.max_connections) {
            return Err(invalid(
                "server.max_connections",
                "use 1..=65536 (default 1024)",
            ));
        }
        if !(1..=s.max_connections).contains(&s.max_connections_per_peer) {
            return Err(invalid(
                "server.max_connections_per_peer",
                "use 1..=server.max_connections (default 64)",
            ));
        }
        if !(1024..=1024 * 1024).contains(&s.max_header_bytes) {
            return Err(invalid(
                "server.max_header_bytes",
                "use 1024..=1048576 (default 16384)",
            ));
        }
        if !(100..=300_000).contains(&s.header_timeout_ms) {
            return Err(invalid(
                "server.header_timeout_ms",
                "use 100..=300000 (default 10000)",
            ));
        }
        if !(1..=1024).contains(&self.server.max_concurrent_uploads) {
            return Err(invalid(
                "server.max_concurrent_uploads",
                "use 1..=1024 (default 8)",
            ));
        }
        let most = logferry_common::segment::MAX_STORED_SEGMENT_BYTES;
        if !(4096..=most).contains(&self.server.max_segment_bytes) {
            return Err(invalid(
                "server.max_segment_bytes",
                format!(
                    "use 4096..={most} (default {})",
                    default_max_segment_bytes()
                ),
            ));
        }
        Ok(())
    }
}

impl StoreConfig {
    /// A store at `url` with no S3 options.
    pub fn from_url(url: &str) -> Self {
        StoreConfig {
            url: url.to_owned(),
            endpoint: None,
            region: None,
            allow_http: false,
        }
    }

    /// The directory of a local store: `/dir`, `file:///dir`, or a path relative to the
    /// current directory (`./store`, `backups/store`), made absolute; `None` for any other
    /// URL (S3).
    pub fn local_dir(&self) -> Option<std::path::PathBuf> {
        let u = self.url.as_str();
        if let Some(p) = u.strip_prefix("file://") {
            return Some(p.into());
        }
        if u.is_empty() || u.contains("://") {
            return None;
        }
        std::path::absolute(u).ok()
    }

    /// Checks the URL's form.
    ///
    /// # Errors
    /// [`crate::ConfigError::Invalid`] for `store.url`.
    pub fn validate(&self) -> Result<()> {
        let u = &self.url;
        if self.local_dir().is_some() {
            return Ok(());
        }
        let parsed = url::Url::parse(u).map_err(|e| {
            invalid(
                "store.url",
                format!("{u:?} is not a URL ({e}); use a directory (/dir, ./dir), file:///dir or s3://bucket/prefix"),
            )
        })?;
        match parsed.scheme() {
            "file" | "s3" => Ok(()),
            other => Err(invalid(
                "store.url",
                format!("scheme {other:?} is not supported; use file:///dir or s3://bucket/prefix"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_str;

    #[test]
    fn a_relative_store_path_is_a_directory_under_the_current_one() {
        let cfg = StoreConfig::from_url("./some/store");
        cfg.validate().unwrap();
        let dir = cfg.local_dir().unwrap();
        assert!(dir.is_absolute() && dir.ends_with("some/store"), "{dir:?}");
        assert!(StoreConfig::from_url("s3://b/p").local_dir().is_none());
        assert!(StoreConfig::from_url("ftp://x").validate().is_err());
        assert!(StoreConfig::from_url("").validate().is_err());
    }

    #[test]
    fn the_shipped_examples_are_valid() {
        for (name, text) in [
            (
                "examples/shipper.toml",
                include_str!("../../examples/shipper.toml"),
            ),
            (
                "examples/compose/shipper.toml",
                include_str!("../../examples/compose/shipper.toml"),
            ),
        ] {
            let cfg: ShipperConfig =
                parse_str(text, name, vec![]).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!cfg.server.verify_payload, "{name}");
        }
    }

    #[test]
    fn minimal_and_bad_store() {
        let cfg: ShipperConfig =
            parse_str("[store]\nurl = \"/tmp/x\"\n", "s.toml", vec![]).unwrap();
        let no_token = cfg.validate().unwrap_err().to_string();
        assert!(
            no_token.contains("auth.tokens") && no_token.contains("gen-token"),
            "{no_token}"
        );
        let cfg: ShipperConfig = parse_str(
            "[store]\nurl = \"/tmp/x\"\n[server]\ninsecure_plain_http = true\n[auth]\ninsecure_no_auth = true\n",
            "s.toml",
            vec![],
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.server.listen.port(), 9450);
        let bad: ShipperConfig = parse_str(
            "[store]\nurl = \"gs://b\"\n[server]\ninsecure_plain_http = true\n[auth]\ninsecure_no_auth = true\n",
            "s.toml",
            vec![],
        )
        .unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("store.url"));
    }

    #[test]
    fn tokens_that_would_act_wrongly_are_refused_naming_the_key() {
        let hash = "ab".repeat(32);
        let other = "cd".repeat(32);
        let with = |tokens: &str| -> String {
            let cfg: ShipperConfig = parse_str(
                &format!("[store]\nurl = \"/tmp/x\"\n[server]\ninsecure_plain_http = true\n[auth]\n{tokens}"),
                "s.toml",
                vec![],
            )
            .unwrap();
            cfg.validate()
                .map_or_else(|e| e.to_string(), |()| "ok".into())
        };
        let entry = |id: &str, sha: &str, streams: &str| {
            format!("[[auth.tokens]]\nid = {id:?}\nsha256 = {sha:?}\nstreams = [{streams:?}]\nactions = [\"ship\"]\n")
        };
        assert_eq!(with(&entry("a", &hash, "orders-")), "ok");
        let twice = with(&format!(
            "{}{}",
            entry("a", &hash, "*"),
            entry("b", &hash.to_uppercase(), "*")
        ));
        assert!(
            twice.contains("auth.tokens.sha256") && twice.contains("same sha256"),
            "{twice}"
        );
        let open = with(&format!(
            "insecure_no_auth = true\n{}",
            entry("a", &hash, "*")
        ));
        assert!(open.contains("auth.insecure_no_auth"), "{open}");
        for prefix in ["Orders-", "-x", "or ders", "", "orders.."] {
            let said = with(&entry("a", &other, prefix));
            assert!(said.contains("auth.tokens.streams"), "{prefix:?}: {said}");
        }
        for id in ["", "a b", "x\"y", &"i".repeat(65)] {
            let said = with(&entry(id, &other, "*"));
            assert!(said.contains("auth.tokens.id"), "{id:?}: {said}");
        }
    }
}
