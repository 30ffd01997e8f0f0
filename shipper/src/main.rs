//! `logferry-shipper`: the off-site receiver and the tools that read the store.

use logferry_shipper::time_arg::now_ms;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use logferry_common::{DecodeLimits, StreamId};
use logferry_config::{EncryptionSection, ShipperConfig, StoreConfig};
use logferry_shipper::alerts::Alerts;
use logferry_shipper::auth::{self, Action};
use logferry_shipper::capsules::UploadKeys;
use logferry_shipper::catalog::Catalog;
use logferry_shipper::drill_record::{self, DrillRecord, Verdict};
use logferry_shipper::error::ShipperError;
use logferry_shipper::ingest::Ingest;
use logferry_shipper::interrupt::Interrupt;
use logferry_shipper::keyring::Keyring;
use logferry_shipper::listing::{self, rfc3339};
use logferry_shipper::restore::{
    self, Bars, DrillReport, ExportOptions, Report, Request, RestoreOptions,
};
use logferry_shipper::storage::Store;
use logferry_shipper::watch::status::{Health, StreamStatus};
use logferry_shipper::watch::Watch;
use logferry_shipper::{api, audit, sources, verify};
use std::time::Instant;
use tracing::{info, warn};

/// Receives sealed change-log segments from logferry agents and keeps them in object
/// storage (a local directory or S3); checks and lists what is stored.
///
/// `verify` and `ls` read the object store directly: they work with no shipper running.
/// Config values can be overridden from the environment: LOGFERRY__SECTION__KEY=value
/// (e.g. LOGFERRY__STORE__URL=s3://bucket/prefix). Log verbosity: RUST_LOG=debug.
#[derive(Parser)]
#[command(name = "logferry-shipper", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API that agents upload segments to.
    Serve {
        /// Shipper config file (TOML); see examples/shipper.toml.
        #[arg(long, short, env = "LOGFERRY_SHIPPER_CONFIG")]
        config: PathBuf,
    },
    /// Print a new API token and the [[auth.tokens]] entry to add to the shipper's config
    /// (which holds only its sha256). The token is shown once: put it in the agent's
    /// shipper.token (or LOGFERRY__SHIPPER__TOKEN).
    GenToken {
        /// A name for the token, written to the audit log.
        #[arg(long)]
        id: String,
        /// Stream-name prefix it covers (repeatable); "*" covers every stream.
        #[arg(long = "stream-prefix", required = true)]
        stream_prefixes: Vec<String>,
        /// What it may do: ship (agents), read (stream state), admin (/metrics); comma
        /// separated.
        #[arg(long, value_delimiter = ',', required = true)]
        actions: Vec<String>,
        /// RFC 3339 UTC time after which it is refused.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Write a new private CA and, signed by it, the shipper's server certificate and an
    /// agent's client certificate (PEM; keys readable by their owner only) into DIR, and
    /// print the config lines that use them. For tests and small deployments; never
    /// replaces a file.
    GenCerts {
        /// Directory to write ca.pem, ca.key, shipper.pem, shipper.key, agent.pem,
        /// agent.key into.
        dir: PathBuf,
        /// A name or address agents use to reach the shipper (repeatable); localhost,
        /// 127.0.0.1 and ::1 are always in the certificate.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Days the shipper's and agent's certificates are valid (the CA: 10 years).
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
    /// Write a new random master key (AES-256, as 64 hex digits, mode 0600) into FILE, and
    /// print the [encryption] lines that use it. Keep it off the data volumes and keep a
    /// copy apart from the bucket: without it, nothing stored under it can be read. Never
    /// replaces a file.
    GenKey {
        /// File to write (must not exist).
        file: PathBuf,
        /// The key's id, as configs and object headers name it (default: the file's
        /// name without its extension).
        #[arg(long)]
        id: Option<String>,
    },
    /// Re-wrap every stream's key capsules under the master key encryption.key_id (or
    /// --to) names. Payloads are not rewritten; objects from before and after stay
    /// readable, and the old key may be removed from every config once this succeeds (keep
    /// it until then: a capsule not yet re-wrapped needs it).
    RotateKey {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        reads: ReadArgs,
        /// Only this stream's capsules.
        #[arg(long)]
        stream: Option<StreamId>,
        /// The new master key's id (default: encryption.key_id of --config).
        #[arg(long)]
        to: Option<String>,
        /// Open every capsule with its current key and say what would be re-wrapped;
        /// change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check every stored chain for gaps, overlaps and checksum errors, and every snapshot's
    /// chunks (both checksums), completeness and place in the chain; exit 1 on any, and on
    /// a store or --stream with nothing in it.
    ///
    /// With --restore-drill it also restores the stream into the scratch server --target:
    /// loads the next-to-newest snapshot, replays the stored binlog up to the newest
    /// snapshot's position, compares every table's row count and CHECKSUM TABLE with the
    /// newest manifest, then replays to the latest stored transaction. With --replica it
    /// then pauses that live replica's SQL thread, replays up to exactly where it stopped
    /// and compares every table of both (the only proof with a single snapshot). Exit 1 on
    /// any difference, and when there was nothing to compare with ("not proven"). Every
    /// drill's result is stored in the bucket under streams/<stream>/drills/. This is the
    /// monthly restore test, automated.
    ///
    /// For a Redis stream the drill loads the newest snapshot alone into --target and takes
    /// a digest of every key (type, value, TTL class), then loads the next-to-newest and
    /// replays the stored commands up to the newest's position, and compares the digests.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        reads: ReadArgs,
        /// Only this stream (required with --restore-drill).
        #[arg(long, required_if_eq("restore_drill", "true"))]
        stream: Option<StreamId>,
        /// Also run a restore drill into --target.
        #[arg(long, requires = "target")]
        restore_drill: bool,
        /// Scratch server for the drill: mysql://USER:PASSWORD@HOST:PORT (empty; TLS:
        /// ?ssl-mode=VERIFY_IDENTITY&ssl-ca=FILE, also ssl-cert and ssl-key), or
        /// redis://USER:PASSWORD@HOST:PORT for a Redis stream (its data is replaced).
        #[arg(long)]
        target: Option<String>,
        /// A live replica of the stream's source to compare the drilled copy with:
        /// mysql://USER:PASSWORD@HOST:PORT. Its SQL thread is paused for the comparison and
        /// started again after it.
        #[arg(long, requires = "restore_drill")]
        replica: Option<String>,
        /// Delete orphaned snapshot chunks (those no manifest names: a snapshot that did
        /// not finish) last written over an hour ago; younger ones may belong to a snapshot
        /// still uploading and are left alone.
        #[arg(long)]
        remove_orphans: bool,
    },
    /// Restore a stream to a point in time (or position) into a server of its kind: loads
    /// the newest snapshot at or before the target, then replays the stored log after the
    /// snapshot's position up to the last whole transaction committed at or before the
    /// target. Reads the object store directly.
    ///
    /// MySQL/MariaDB: needs the mariadb and mariadb-binlog clients. Redis: the target is told
    /// REPLICAOF an endpoint this command opens on the address it has towards the target
    /// (guarded by a one-time masterauth), is sent the snapshot's RDB and the commands, and
    /// is told REPLICAOF NO ONE once it acknowledged them all.
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        reads: ReadArgs,
        /// Stream to restore.
        #[arg(long)]
        stream: StreamId,
        /// RFC 3339 time with a zone (2026-11-23T12:00:00Z or 2026-11-23T13:00:00+01:00),
        /// binlog position (mysql-bin.000003:1234), MariaDB GTID (0-1-500: up to and including that transaction),
        /// Redis position (HISTORY:OFFSET, 1:18446), or "latest".
        #[arg(long)]
        to: String,
        /// Server to restore into: mysql://USER:PASSWORD@HOST:PORT (should be empty; TLS:
        /// ?ssl-mode=VERIFY_IDENTITY&ssl-ca=FILE, also ssl-cert and ssl-key), or
        /// redis://USER:PASSWORD@HOST:PORT for a Redis stream (empty, standalone).
        #[arg(long)]
        target: String,
        /// Restore into a target that already holds databases (an earlier or interrupted
        /// restore): every database outside the system schemas is dropped first, and the
        /// report names them. mysql, sys, information_schema and performance_schema are
        /// never touched. For Redis: the target's keys are replaced.
        #[arg(long)]
        force: bool,
        /// Continue a restore stopped by Ctrl-C, SIGTERM or SIGHUP from the position it
        /// recorded on the target (in the logferry_restore schema, dropped when the restore
        /// completes).
        #[arg(long, conflicts_with = "force")]
        resume: bool,
        /// Leave the target's innodb_flush_log_at_trx_commit alone. By default a restore
        /// sets it to 2 (redo log fsynced once a second rather than at every commit) while
        /// it runs, then puts it back and flushes the redo log before reporting success.
        #[arg(long)]
        keep_durability: bool,
    },
    /// Make a standby the stream's primary after its primary is lost, with nothing the
    /// store holds missing: fence the old primary if it still answers (--old-primary:
    /// read_only, super_read_only where it exists, client connections killed), stop the
    /// standby's replication, apply from the store the transactions it lacks (whole, with
    /// their original GTIDs), check its GTID state holds the stored end, then RESET SLAVE
    /// ALL and read_only=OFF. Prints and stores (streams/<s>/promotions/) a report: GTID
    /// states before and after, transactions applied, the data-loss window (last stored
    /// commit vs. the last commit the agent reported reading), elapsed time. A step that
    /// fails leaves the standby read-only and the report says which. Exit 1 then.
    Promote {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        reads: ReadArgs,
        /// Stream whose database moves to the standby.
        #[arg(long)]
        stream: StreamId,
        /// The standby: mysql://USER:PASSWORD@HOST:PORT (a user that may SET GLOBAL,
        /// STOP SLAVE and write every table; TLS as for restore --target).
        #[arg(long)]
        standby: String,
        /// The old primary, fenced when it still answers.
        #[arg(long)]
        old_primary: Option<String>,
        /// Print the plan (what would be applied, the data-loss window) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also record each step in this audit log (JSON lines, as the shipper's
        /// auth.audit_log: point it there to keep one trail). The report keeps the steps
        /// either way.
        #[arg(long, value_name = "PATH")]
        audit_log: Option<std::path::PathBuf>,
    },
    /// Write what a restore would apply into a directory: for MySQL the snapshot as SQL and
    /// the binlog as files that `mariadb-binlog FILE... | mariadb` replays by hand; for Redis
    /// a multi-part AOF directory (the snapshot's RDB as base, the commands as the
    /// incremental file, the manifest) that `redis-server --appendonly yes` loads.
    Export {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        reads: ReadArgs,
        /// Stream to export.
        #[arg(long)]
        stream: StreamId,
        /// Position to start at instead of a snapshot (no snapshot is written).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 time with a zone, binlog position, MariaDB GTID, Redis position, or
        /// "latest" (the default).
        #[arg(long, default_value = "latest")]
        to: String,
        /// Directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Instead: after a fork (`ls` shows them), the transactions only the old
        /// server's branch holds (stored before leg N began and missing from its server),
        /// as binlog files, each listed with its GTID and commit time.
        #[arg(long, value_name = "LEG", conflicts_with_all = ["from", "to"])]
        branch: Option<u32>,
    },
    /// List streams with their position and time ranges and their snapshots (id, position,
    /// time, size, tables, complete or not); --segments adds each segment, --snapshots shows
    /// the snapshots alone.
    Ls {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        reads: ReadArgs,
        /// Only this stream.
        #[arg(long)]
        stream: Option<StreamId>,
        /// One line per segment too.
        #[arg(long)]
        segments: bool,
        /// Only the snapshots (complete or not), without reading any segment.
        #[arg(long, conflicts_with = "segments")]
        snapshots: bool,
    },
    /// Show every stream as the running shipper sees it: kind, health (green, amber,
    /// red) and why, RPO exposure, source lag, when its agent was last heard, the
    /// restorable range, the last snapshot and the last restore drill. Exit 0 when every
    /// stream is green or amber, 1 when one is red (use it as a cron check), 2 when the
    /// shipper cannot be asked. The same JSON as `GET /v1/status` with --json.
    Status {
        /// The shipper's URL, as agents reach it (e.g. https://backup.example:8443).
        #[arg(long, env = "LOGFERRY_SHIPPER_URL")]
        url: String,
        /// A token with the read action for the streams to show.
        #[arg(long, env = "LOGFERRY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The CA certificate (PEM) that signed the shipper's certificate, for a private CA.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Print the JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Where the store is: a config file, or a URL.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct StoreArgs {
    /// Shipper config file whose [store] section names the store.
    #[arg(long, short, env = "LOGFERRY_SHIPPER_CONFIG")]
    config: Option<PathBuf>,
    /// Store URL: /dir, file:///dir or s3://bucket/prefix (S3 credentials from AWS_* variables).
    #[arg(long)]
    store: Option<String>,
}

/// How a reading command opens the store's objects, and how hard it may press the store.
#[derive(Args)]
struct ReadArgs {
    /// Store requests in flight at once (1 reads one object at a time; lower it for a
    /// store that throttles, raise it for one far away).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    reads_in_flight: u16,
    /// A master key to open stored data with, as ID=FILE (repeatable, or comma separated
    /// in the environment), beside those of the config's [encryption]: what a restore on a
    /// host without the config needs.
    #[arg(
        long = "key",
        value_name = "ID=FILE",
        env = "LOGFERRY_SHIPPER_KEYS",
        value_delimiter = ','
    )]
    keys: Vec<String>,
    /// Also read objects stored in clear (a store written by agents with
    /// encryption.insecure_plaintext, or before encryption): only for such stores, since a
    /// key holder never writes an object in clear.
    #[arg(long)]
    insecure_plaintext: bool,
}

impl ReadArgs {
    /// The `[encryption]` to read with: the config's, with the `--key` entries added.
    fn encryption(&self, config: Option<EncryptionSection>) -> anyhow::Result<EncryptionSection> {
        let mut section = config.unwrap_or_default();
        section.insecure_plaintext |= self.insecure_plaintext;
        // An empty LOGFERRY_SHIPPER_KEYS names no key.
        for entry in self.keys.iter().filter(|k| !k.is_empty()) {
            let Some((id, file)) = entry.split_once('=') else {
                bail!("--key {entry:?}: use --key ID=FILE (the key's id, as its config names it, and its file)");
            };
            section.keys.insert(
                id.to_owned(),
                logferry_config::encryption::KeySource {
                    file: Some(PathBuf::from(file)),
                    env: None,
                },
            );
        }
        section
            .validate(false, &[])
            .map_err(|e| anyhow::anyhow!("{e} (from --key)"))?;
        Ok(section)
    }
}

impl StoreArgs {
    fn open(&self, reads: &ReadArgs) -> anyhow::Result<Store> {
        let (cfg, encryption) = match (&self.config, &self.store) {
            (Some(path), _) => {
                let c = ShipperConfig::load(path)?;
                (c.store, Some(c.encryption))
            }
            (None, Some(url)) => {
                let cfg = StoreConfig::from_url(url);
                cfg.validate()?;
                (cfg, None)
            }
            (None, None) => bail!("give --config FILE or --store URL"),
        };
        let keyring = Keyring::from_config(&reads.encryption(encryption)?);
        // A read never creates a store: a mistyped path says so instead of looking empty.
        if let Some(dir) = cfg.local_dir() {
            if !dir.is_dir() {
                bail!(
                    "the store directory {} does not exist; give the directory the shipper's [store] url names",
                    dir.display()
                );
            }
        }
        Ok(Store::open(&cfg)?
            .with_reads_in_flight(usize::from(reads.reads_in_flight))
            .with_keyring(keyring))
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("logferry-shipper: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("logferry-shipper: {e:#}");
            // A gap is a finding about the backup, like a failed verify: exit 1. A stop the
            // operator asked for exits as shells report SIGINT. Anything else that stops a
            // command (bad flags, an unreachable store) is exit 2.
            ExitCode::from(match e.downcast_ref() {
                Some(ShipperError::Gap(_)) => 1,
                Some(ShipperError::Interrupted(_)) => INTERRUPTED_EXIT,
                _ => 2,
            })
        }
    }
}

/// The exit code of a command stopped by the operator (128 + SIGINT, as shells report it).
const INTERRUPTED_EXIT: u8 = 130;

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve(&config).await,
        Command::GenToken {
            id,
            stream_prefixes,
            actions,
            expires,
        } => gen_token(id, stream_prefixes, &actions, expires),
        Command::GenCerts { dir, hosts, days } => gen_certs(&dir, &hosts, days),
        Command::GenKey { file, id } => gen_key(&file, id),
        Command::RotateKey {
            store,
            reads,
            stream,
            to,
            dry_run,
        } => {
            let to = match (to, &store.config) {
                (Some(to), _) => to,
                (None, Some(path)) => ShipperConfig::load(path)?.encryption.key_id.context(
                    "give --to ID, or set encryption.key_id in the config to the new key",
                )?,
                (None, None) => bail!("give --to ID: the new master key's id"),
            };
            let store = store.open(&reads)?;
            let done =
                logferry_shipper::rotate::rotate(&store, stream.as_ref(), &to, dry_run).await?;
            let verb = if dry_run {
                "would re-wrap"
            } else {
                "re-wrapped"
            };
            for key in &done.rewrapped {
                println!("{verb} {key}");
            }
            for (key, why) in &done.failed {
                println!("NOT re-wrapped {key}: {why}");
            }
            println!(
                "{verb} {} capsule(s) under master key {to:?}; {} already under it; {} left as they were",
                done.rewrapped.len(),
                done.already,
                done.failed.len()
            );
            Ok(if done.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Verify {
            reads,
            store,
            stream,
            restore_drill,
            target,
            replica,
            remove_orphans,
        } => {
            let drill_of = match (restore_drill, stream.clone(), target) {
                (false, ..) => None,
                (true, Some(stream), Some(target)) => Some((stream, target)),
                (true, ..) => bail!("--restore-drill needs --stream and --target"),
            };
            let store = store.open(&reads)?;
            let verified = verify_store(&store, stream.as_ref(), remove_orphans).await?;
            if let Some((stream, target)) = drill_of {
                if verified != ExitCode::SUCCESS {
                    println!("the restore drill is not run on a stream that fails verify");
                    let why = "verify found the stream broken; the drill was not run".into();
                    store_drill_result(
                        &store,
                        &stream,
                        &DrillRecord::failed(&stream, now_ms(), why),
                    )
                    .await;
                    return Ok(verified);
                }
                return drill(&store, &stream, &target, replica.as_deref()).await;
            }
            Ok(verified)
        }
        Command::Restore {
            reads,
            store,
            stream,
            to,
            target,
            force,
            resume,
            keep_durability,
        } => {
            let store = store.open(&reads)?;
            let started = Instant::now();
            let req = Request {
                stream: &stream,
                to: &to,
            };
            let opts = RestoreOptions {
                target: &target,
                force,
                keep_durability,
                resume,
                interrupt: Interrupt::on_signals()
                    .context("installing the SIGINT, SIGTERM and SIGHUP handlers")?,
            };
            let report = sources::restore(&store, &req, &opts, &Bars::visible()).await?;
            print_report("restore", &req, &report, started);
            if report.interrupted {
                println!(
                    "INTERRUPTED restore: the target holds whole transactions up to the last applied one above, and its settings are put back; continue with the same command and --resume, or start over with --force"
                );
                return Ok(ExitCode::from(INTERRUPTED_EXIT));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Promote {
            reads,
            store,
            stream,
            standby,
            old_primary,
            dry_run,
            audit_log,
        } => {
            let store = store.open(&reads)?;
            let audit = audit_log
                .map(|path| {
                    audit::Audit::open(
                        &path,
                        logferry_config::shipper::DEFAULT_AUDIT_MAX_BYTES,
                        Default::default(),
                    )
                    .with_context(|| format!("--audit-log {}", path.display()))
                })
                .transpose()?;
            let req = logferry_shipper::promotion::PromoteRequest {
                stream: &stream,
                standby: &standby,
                old_primary: old_primary.as_deref(),
                dry_run,
                audit,
                interrupt: Interrupt::on_signals()
                    .context("installing the SIGINT, SIGTERM and SIGHUP handlers")?,
            };
            let report = sources::promote(&store, &req, &Bars::visible()).await?;
            print!("{}", report.render());
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            reads,
            store,
            stream,
            from,
            to,
            dir,
            branch,
        } => {
            let store = store.open(&reads)?;
            if let Some(leg) = branch {
                let b = sources::export_branch(&store, &stream, leg, &dir).await?;
                println!(
                    "leg {} of {stream} forked at {}; the old branch went on to {}",
                    b.leg, b.forks_at, b.old_end
                );
                for t in &b.transactions {
                    let state = if t.on_new_leg {
                        "also on the new branch (not written)"
                    } else if !t.complete {
                        "stored only in part: the old server's chain ends inside it (not written)"
                    } else {
                        "only on the old branch"
                    };
                    println!(
                        "  {}  {}  {state}",
                        t.gtid,
                        logferry_shipper::listing::rfc3339(t.commit_ms)
                    );
                }
                println!(
                    "{} transactions only on the old branch, written to {}: {}",
                    b.orphaned().count(),
                    dir.display(),
                    b.files.join(", ")
                );
                return Ok(ExitCode::SUCCESS);
            }
            let started = Instant::now();
            let req = Request {
                stream: &stream,
                to: &to,
            };
            let opts = ExportOptions {
                from: from.as_deref(),
                dir: &dir,
            };
            let report = sources::export(&store, &req, &opts, &Bars::visible()).await?;
            print_report("export", &req, &report, started);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            url,
            token,
            ca_file,
            json,
        } => status(&url, token.as_deref(), ca_file.as_deref(), json).await,
        Command::Ls {
            reads,
            store,
            stream,
            segments,
            snapshots,
        } => {
            let store = store.open(&reads)?;
            let chains = if snapshots {
                Vec::new()
            } else {
                listing::segments(&store, stream.as_ref()).await?
            };
            let mut snaps = listing::snapshots(&store, stream.as_ref()).await?;
            let mut names: Vec<String> = chains.iter().map(|(n, _)| n.clone()).collect();
            names.extend(snaps.keys().cloned());
            names.sort();
            names.dedup();
            for name in &names {
                let lines = chains.iter().find(|(n, _)| n == name).map(|(_, l)| l);
                if !snapshots {
                    print_chain(name, lines.map_or(&[][..], Vec::as_slice), segments);
                } else {
                    println!("{name}");
                }
                let lines = snaps.remove(name).unwrap_or_default();
                if snapshots && lines.is_empty() {
                    println!("  no snapshots");
                }
                for line in lines {
                    print_snapshot(&line);
                }
                if let Some(d) = drill_record::list(&store, &StreamId::new(name)?)
                    .await?
                    .last()
                {
                    let verdict = match &d.verdict {
                        Verdict::Passed => "passed".to_owned(),
                        Verdict::Failed(why) => format!("FAILED ({why})"),
                        Verdict::NotProven(why) => format!("NOT PROVEN ({why})"),
                    };
                    println!("  last drill {}: {verdict}", rfc3339(d.started_ms));
                }
            }
            if names.is_empty() {
                match &stream {
                    Some(s) => println!("stream {s} has nothing in {}; `logferry-shipper ls --store {}` lists the streams there", store.url(), store.url()),
                    None => println!("no streams in {}: is this the store the shipper writes to?", store.url()),
                }
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ls`'s line for a stream's chain and, with `segments`, one per segment.
fn print_chain(name: &str, lines: &[listing::SegmentLine], segments: bool) {
    let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
        println!("{name}\tno segments");
        return;
    };
    let events: u64 = lines.iter().map(|l| l.events).sum();
    let bytes: u64 = lines.iter().map(|l| l.bytes).sum();
    println!(
        "{name}\tsegments={} events={events} bytes={bytes}\tpositions {} .. {}\ttimes {} .. {}",
        lines.len(),
        first.start,
        last.end,
        rfc3339(first.first_event_ms),
        rfc3339(last.last_event_ms)
    );
    for note in lines.iter().filter_map(listing::SegmentLine::leg_note) {
        println!("  {note}");
    }
    if segments {
        for l in lines {
            println!(
                "  {}\t{} .. {}\tevents={}\tbytes={}\t{} .. {}",
                l.key,
                l.start,
                l.end,
                l.events,
                l.bytes,
                rfc3339(l.first_event_ms),
                rfc3339(l.last_event_ms)
            );
        }
    }
}

/// `ls`'s line for one snapshot.
fn print_snapshot(line: &listing::SnapshotLine) {
    match line {
        listing::SnapshotLine::Complete(m) => println!(
            "  snapshot {}\tcomplete\tat {}\ttaken {}\tchunks={} bytes={} plain_bytes={}\t{}",
            m.id,
            m.position,
            rfc3339(m.taken_at_ms),
            m.chunks.len(),
            m.chunks.iter().map(|c| c.stored_bytes).sum::<u64>(),
            m.plain_bytes(),
            m.content.summary()
        ),
        listing::SnapshotLine::Incomplete { id, chunks, bytes } => println!(
            "  snapshot {id}\tINCOMPLETE\tchunks={chunks} bytes={bytes}\tno manifest: a snapshot that did not finish (or is still uploading); restore never uses it, verify --remove-orphans deletes it after an hour"
        ),
    }
}

/// Orphaned snapshot chunks younger than this may belong to a snapshot still uploading.
const ORPHAN_MIN_AGE_MS: i64 = 3_600_000;

/// `verify` without the drill: prints each stream's verdict; failure on any problem, and on
/// a store or stream with nothing in it.
async fn verify_store(
    store: &Store,
    only: Option<&StreamId>,
    remove_orphans: bool,
) -> anyhow::Result<ExitCode> {
    let bar = Bars::visible().phase("verifying", 0);
    let reports = verify::verify(store, only, &bar).await?;
    bar.finish_and_clear();
    let mut bad = 0usize;
    for r in &reports {
        let status = if r.problems.is_empty() {
            "OK"
        } else {
            "FAILED"
        };
        println!(
            "{status} stream {}: {} segments, {} events, {} bytes, {} .. {}; {} snapshots",
            r.stream,
            r.segments,
            r.events,
            r.bytes,
            r.start.as_deref().unwrap_or("-"),
            r.end.as_deref().unwrap_or("-"),
            r.snapshots
        );
        for p in &r.problems {
            println!("  {} {}: {}", p.kind, p.key, p.detail);
        }
        bad += r.problems.len();
        for o in &r.orphans {
            let old = now_ms() - o.newest_ms >= ORPHAN_MIN_AGE_MS;
            let removal = match StreamId::new(&r.stream) {
                Ok(id) if remove_orphans && old => Some(
                    verify::snapshots::remove_orphans(store, &id, o, now_ms(), ORPHAN_MIN_AGE_MS)
                        .await,
                ),
                _ => None,
            };
            if let Some(removal) = removal {
                match removal {
                    Ok(verify::snapshots::Removal::Removed) => println!(
                        "  REMOVED orphaned snapshot {}: {} objects, {} bytes no manifest names",
                        o.id,
                        o.keys.len(),
                        o.bytes
                    ),
                    Ok(verify::snapshots::Removal::Kept) => println!(
                        "  KEPT orphaned snapshot {}: listed again, it has a manifest now or an object written in the last hour",
                        o.id
                    ),
                    Err(e) => println!("  could not remove orphaned snapshot {}: {e}", o.id),
                }
            } else {
                let what = if old {
                    "--remove-orphans deletes them"
                } else {
                    "written in the last hour: a snapshot may still be uploading them"
                };
                println!(
                    "  ORPHANED snapshot {}: {} objects, {} bytes no manifest names (a snapshot that did not finish; {what})",
                    o.id,
                    o.keys.len(),
                    o.bytes
                );
            }
        }
    }
    if reports.is_empty() {
        match only {
            Some(s) => println!("FAILED: stream {s} has no objects in {}; `logferry-shipper ls --store {}` lists the streams there", store.url(), store.url()),
            None => println!("FAILED: no streams in {}: is this the store the shipper writes to?", store.url()),
        }
        return Ok(ExitCode::FAILURE);
    }
    if bad > 0 {
        println!("{bad} problem(s) found");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn drill(
    store: &Store,
    stream: &StreamId,
    target: &str,
    replica: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let started_ms = now_ms();
    let interrupt =
        Interrupt::on_signals().context("installing the SIGINT, SIGTERM and SIGHUP handlers")?;
    let drilled =
        sources::drill(store, stream, target, replica, &Bars::visible(), &interrupt).await;
    let (record, outcome) = match drilled {
        Ok(report) => {
            print_drill(stream, &report, started);
            (DrillRecord::of_report(stream, started_ms, &report), Ok(()))
        }
        Err(e) => (
            DrillRecord::failed(stream, started_ms, e.to_string()),
            Err(e),
        ),
    };
    let saved = store_drill_result(store, stream, &record).await;
    outcome?;
    Ok(if saved && record.verdict.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Stores a drill's result in the bucket and says where; `false` (said too) when the store
/// refuses, since monitoring will then not see this drill.
async fn store_drill_result(store: &Store, stream: &StreamId, record: &DrillRecord) -> bool {
    match drill_record::save(store, stream, record).await {
        Ok(key) => {
            println!("  result stored:  {key}");
            true
        }
        Err(e) => {
            println!("FAILED to store the drill's result in the bucket ({e}); monitoring will not see this drill");
            false
        }
    }
}

/// What a finished drill did and found, for the operator.
fn print_drill(stream: &StreamId, report: &DrillReport, started: Instant) {
    println!("restore drill of stream {stream}");
    if !report.base.is_empty() {
        println!("  loaded:         {}", report.base);
    }
    for against in &report.checked_against {
        println!("  compared with:  {against}");
    }
    for d in &report.differences {
        println!(
            "  DIFFERS {}: {} {}, restored {}",
            d.table, d.expected_from, d.expected, d.found
        );
    }
    if report.not_proven.is_none() {
        println!(
            "  replayed:       {} events, last at {}",
            report.events,
            report
                .last_position
                .as_deref()
                .unwrap_or("the snapshot's position")
        );
    }
    println!("  elapsed:        {}", restore::elapsed(started.elapsed()));
    match report.verdict() {
        Verdict::Passed => println!(
            "OK restore drill: all {} {} compared are equal",
            report.compared, report.compared_what
        ),
        Verdict::Failed(why) => println!("FAILED restore drill: {why}"),
        Verdict::NotProven(why) => println!("NOT PROVEN restore drill: {why}"),
    }
}

/// Prints what a finished restore or export did. The plan refused any gap before the
/// target, so one after it is only a note.
fn print_report(what: &str, req: &Request<'_>, r: &Report, started: Instant) {
    let ended = if r.interrupted { "stopped" } else { "finished" };
    println!("{what} of stream {} to {} {ended}", req.stream, req.to);
    match &r.snapshot {
        Some(m) => println!(
            "  snapshot:       {} at {} (taken {}), {} chunks, {} bytes, sha256 verified",
            m.id,
            m.position,
            rfc3339(m.taken_at_ms),
            m.chunks.len(),
            m.plain_bytes()
        ),
        None => println!("  snapshot:       none (log from {})", r.start),
    }
    // An export writes files and applies nothing; its report says so.
    let done = if r.dir.is_some() {
        "written"
    } else {
        "applied"
    };
    println!(
        "  events {done}: {} in {} transactions from {} segments (sha256 verified)",
        r.events, r.transactions, r.segments_verified
    );
    match &r.last {
        Some((p, t)) => println!("  last {done}:   {p} committed {}", rfc3339(*t)),
        None => println!("  last {done}:   the snapshot's position {}", r.start),
    }
    for note in &r.notes {
        println!("  note:           {note}");
    }
    if let Some(dir) = &r.dir {
        println!("  written into {}: {}", dir.display(), r.written.join(", "));
    }
    println!("  elapsed:        {}", restore::elapsed(started.elapsed()));
}

/// Resolves on Ctrl-C or SIGTERM (what systemd, Docker and Kubernetes send): the server
/// then stops accepting connections and answers the requests in flight before it exits, so
/// an upload is either acknowledged after it is stored or not answered at all.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stop the shipper with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    info!("shutting down: finishing the requests in flight");
}

/// `gen-certs`: the files, and the config lines that use them.
fn gen_certs(dir: &std::path::Path, hosts: &[String], days: i64) -> anyhow::Result<ExitCode> {
    if !(1..=3650).contains(&days) {
        bail!("--days {days}: use 1..=3650");
    }
    let w = logferry_shipper::certs::generate(dir, hosts, days)?;
    println!(
        "wrote {} (keep ca.key offline: it signs new certificates)",
        dir.display()
    );
    println!("# the shipper's config:");
    println!("[server.tls]");
    println!("cert = {:?}", w.shipper.0.display().to_string());
    println!("key = {:?}", w.shipper.1.display().to_string());
    println!(
        "client_ca = {:?}   # mutual TLS: agents must show agent.pem",
        w.ca.display().to_string()
    );
    println!("# each agent's config (copy ca.pem, agent.pem and agent.key to its host):");
    println!("[shipper]");
    println!("ca_file = {:?}", w.ca.display().to_string());
    println!("client_cert = {:?}", w.agent.0.display().to_string());
    println!("client_key = {:?}", w.agent.1.display().to_string());
    Ok(ExitCode::SUCCESS)
}

/// `gen-key`: a new master key in a new file, and the config lines that use it.
fn gen_key(file: &std::path::Path, id: Option<String>) -> anyhow::Result<ExitCode> {
    let id = match id {
        Some(id) => id,
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_owned)
            .context("give --id: the file has no name to take it from")?,
    };
    let (_, text) = logferry_common::crypto::MasterKey::generate(&id)
        .map_err(|e| anyhow::anyhow!("{e}; give another --id"))?;
    logferry_shipper::certs::write_new(file, text.as_bytes(), true)
        .with_context(|| format!("writing {} (gen-key never replaces a file)", file.display()))?;
    println!("wrote master key {id:?} to {}", file.display());
    println!("# the agent's config (and the config of every host that restores):");
    println!("[encryption]");
    println!("key_id = {id:?}");
    println!("[encryption.keys.{id:?}]");
    println!("file = {:?}", file.display().to_string());
    Ok(ExitCode::SUCCESS)
}

/// `gen-token`: a new token on stdout with the config entry that accepts it.
fn gen_token(
    id: String,
    streams: Vec<String>,
    actions: &[String],
    expires: Option<String>,
) -> anyhow::Result<ExitCode> {
    let actions = actions
        .iter()
        .map(|a| match a.trim() {
            "ship" => Ok(Action::Ship),
            "read" => Ok(Action::Read),
            "admin" => Ok(Action::Admin),
            other => bail!("--actions {other:?}: use ship, read or admin"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Err(e) = logferry_config::shipper::check_token_id(&id) {
        bail!("--id {e} (it is written to the audit log as it is)");
    }
    let (token, sha256) = auth::new_token()?;
    let entry = logferry_config::shipper::TokenConfig {
        id,
        sha256,
        streams,
        actions,
        expires,
    };
    logferry_config::shipper::AuthSection {
        tokens: vec![entry.clone()],
        ..Default::default()
    }
    .validate()?;
    let quoted = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let action_names: Vec<String> = entry
        .actions
        .iter()
        .map(|a| format!("{a:?}").to_lowercase())
        .collect();
    println!("# the token (shown once; the agent's shipper.token or LOGFERRY__SHIPPER__TOKEN):");
    println!("{token}");
    println!("# add to the shipper's config:");
    println!("[[auth.tokens]]");
    println!("id = {:?}", entry.id);
    println!("sha256 = \"{}\"", entry.sha256);
    println!("streams = [{}]", quoted(&entry.streams));
    println!("actions = [{}]", quoted(&action_names));
    if let Some(e) = &entry.expires {
        println!("expires = {e:?}");
    }
    Ok(ExitCode::SUCCESS)
}

/// How long a stopping shipper waits for the audit log's last lines to reach the disk.
const AUDIT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The streams part of `GET /v1/status`.
#[derive(serde::Deserialize)]
struct StatusStreams {
    streams: Vec<StreamStatus>,
}

/// `status`: asks the shipper at `url` and prints its streams; see [`Command::Status`].
async fn status(
    url: &str,
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(ca) = ca_file {
        let pem =
            std::fs::read(ca).with_context(|| format!("cannot read --ca-file {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!("--ca-file {} holds no usable PEM certificate", ca.display())
        })?;
        client = client.tls_certs_only(certs);
    }
    let endpoint = format!("{}/v1/status", url.trim_end_matches('/'));
    let mut request = client.build()?.get(&endpoint);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: cannot ask the shipper at {endpoint}: {e} (is it running, and is --url right?)");
            return Ok(ExitCode::from(2));
        }
    };
    let code = answer.status();
    let body = answer.bytes().await.unwrap_or_default();
    if !code.is_success() {
        eprintln!(
            "error: the shipper at {endpoint} answered {code}: {} (a token with the read action goes in --token or LOGFERRY_TOKEN)",
            String::from_utf8_lossy(&body)
        );
        return Ok(ExitCode::from(2));
    }
    let streams: StatusStreams = serde_json::from_slice(&body)
        .with_context(|| format!("{endpoint} did not answer a status"))?;
    if json {
        println!("{}", String::from_utf8_lossy(&body));
    } else {
        print!(
            "{}",
            logferry_shipper::watch::table::render(&streams.streams)
        );
    }
    let red = streams.streams.iter().any(|s| s.health == Health::Red);
    Ok(if red {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn serve(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = ShipperConfig::load(config)?;
    // Uploads are checked without keys; the keys of [encryption], when given, let the
    // scheduled drills read the streams and the status check the drill records' MACs.
    let store = Store::open(&cfg.store)?.with_keyring(Keyring::from_config(&cfg.encryption));
    store
        .healthcheck()
        .await
        .with_context(|| format!("the store {} does not answer", cfg.store.url))?;
    let catalog = Catalog::load(&store).await?;
    let max = cfg.server.max_segment_bytes;
    let metrics = logferry_shipper::metrics::Metrics::new();
    let alerts = Alerts::new(cfg.alerts.clone(), store.clone(), metrics.alerts.clone())?;
    let state = Arc::new(Ingest {
        store: store.clone(),
        catalog,
        metrics,
        watch: Watch::new(
            cfg.watch.rpo_target_seconds,
            now_ms(),
            cfg.watch.startup_grace_ms,
        ),
        alerts,
        limits: DecodeLimits::for_segments(max),
        verify_payload: cfg.server.verify_payload,
        keys: UploadKeys::new(cfg.encryption.insecure_plaintext),
    });
    let audit = cfg
        .auth
        .audit_log
        .as_deref()
        .map(|path| audit::Audit::open(path, cfg.auth.audit_max_bytes, state.metrics.audit.clone()))
        .transpose()?;
    let tls = cfg
        .server
        .tls
        .as_ref()
        .map(logferry_shipper::tls::server_config)
        .transpose()?;
    let transport = api::Transport::of(cfg.server.tls.as_ref());
    let gate = Arc::new(api::Gate {
        auth: auth::Auth::from_config(&cfg.auth)?,
        audit: audit.clone(),
        transport,
    });
    for warning in gate.status(state.keys.accepts_plaintext()).warnings {
        warn!("{warning}");
    }
    state.alerts.restore().await?;
    state.watch.restore(&state.store).await?;
    state.watch.refresh(&state.store, &state.catalog).await;
    tokio::spawn({
        let state = state.clone();
        let every = std::time::Duration::from_millis(cfg.alerts.evaluate_ms);
        async move {
            loop {
                tokio::time::sleep(every).await;
                let now = now_ms();
                let statuses = state.watch.statuses(now);
                state.watch.record(&statuses, now);
                state.alerts.evaluate(&statuses, now).await;
                if let Some(heard) = state.watch.heard_to_keep(now) {
                    if let Err(e) = state
                        .store
                        .replace(logferry_shipper::watch::HEARD_KEY, heard.into())
                        .await
                    {
                        warn!(error = %e, "what the agents last reported could not be kept in the store; after a restart their streams count from the start");
                    }
                }
            }
        }
    });
    tokio::spawn({
        let state = state.clone();
        async move { state.alerts.deliver_forever().await }
    });
    if let Some(drill) = cfg.drill.clone() {
        let schedule = drill.schedule()?;
        info!(schedule = %drill.schedule, "restore drills scheduled");
        let store = Store::open(&cfg.store)?.with_keyring(Keyring::from_config(&cfg.encryption));
        logferry_shipper::drill_schedule::start(state.clone(), store, drill, schedule)
            .context("starting the scheduled drills")?;
    }
    tokio::spawn({
        let state = state.clone();
        let every = std::time::Duration::from_millis(cfg.watch.refresh_ms);
        async move {
            loop {
                tokio::time::sleep(every).await;
                state.watch.refresh(&state.store, &state.catalog).await;
            }
        }
    });
    let known: Vec<String> = state
        .catalog
        .stream_names()
        .iter()
        .map(ToString::to_string)
        .collect();
    let named = cfg
        .alerts
        .streams
        .keys()
        .map(|s| ("alerts.streams", s))
        .chain(
            cfg.drill
                .iter()
                .flat_map(|d| d.streams.iter().map(|s| ("drill.streams", s))),
        );
    for (key, name) in named {
        if !known.contains(name) {
            warn!(key, stream = %name, "names a stream the store does not hold (yet); check its spelling");
        }
    }
    for stream in state.catalog.stream_names() {
        let breaks = state.catalog.stream(&stream).lock().await.breaks();
        if breaks > 0 {
            warn!(%stream, breaks, "the stored chain is broken (segments are missing between stored ones); run logferry-shipper verify to see where");
        }
    }
    let app = api::router(
        state,
        gate,
        usize::try_from(max).unwrap_or(usize::MAX),
        cfg.server.max_concurrent_uploads,
        std::time::Duration::from_millis(cfg.server.upload_timeout_ms),
    );
    let listener = tokio::net::TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", cfg.server.listen))?;
    // The bound address, not the configured one: port 0 asks the system for a free port.
    let bound = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {}", cfg.server.listen))?;
    info!(listen = %bound, store = %cfg.store.url, transport = ?transport, "shipper serving");
    let limits = logferry_shipper::listen::ConnLimits {
        max_connections: cfg.server.max_connections,
        per_peer: cfg.server.max_connections_per_peer,
        header_bytes: cfg.server.max_header_bytes,
        header_timeout: std::time::Duration::from_millis(cfg.server.header_timeout_ms),
        drain: std::time::Duration::from_millis(cfg.server.upload_timeout_ms),
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    logferry_shipper::listen::serve(listener, acceptor, app, limits, stop_signal()).await;
    if let Some(audit) = audit {
        let flushed = tokio::task::spawn_blocking(move || audit.flush(AUDIT_PATIENCE))
            .await
            .unwrap_or(false);
        if !flushed {
            warn!("the audit log's last lines may not have reached the disk");
        }
    }
    info!("shipper stopped: every request in flight was answered");
    Ok(ExitCode::SUCCESS)
}
