//! `logferry-agent`: the sidecar beside a database.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use logferry_agent::client::ShipperClient;
use logferry_agent::{pipeline, sources};
use logferry_config::AgentConfig;
use tracing::{error, info};

/// Tails a database's change log (MySQL/MariaDB binlog) and ships small sealed, checksummed
/// segments to a logferry shipper, so that losing the database costs about a second of data.
///
/// Every value of the config file can be overridden from the environment:
/// LOGFERRY__SECTION__KEY=value (e.g. LOGFERRY__SOURCE__URL=mysql://repl:pw@db:3306).
/// Log verbosity: RUST_LOG=debug.
#[derive(Parser)]
#[command(name = "logferry-agent", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tail the source and ship segments until stopped (SIGINT/SIGTERM seal what is complete
    /// and exit; a crash loses nothing either: the spool is shipped first on restart).
    Run {
        /// Agent config file (TOML); see examples/agent.toml.
        #[arg(long, short, env = "LOGFERRY_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Take a full snapshot now from the replica in [source.snapshot] (pausing only its SQL thread)
    /// and upload it to the shipper; prints the snapshot id and primary position.
    Snapshot {
        /// Agent config file (TOML) with a [source.snapshot] section.
        #[arg(long, short, env = "LOGFERRY_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Load and validate a config file, print the effective settings and exit.
    CheckConfig {
        /// Agent config file (TOML).
        #[arg(long, short, env = "LOGFERRY_AGENT_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    one_malloc_arena();
    init_logging();
    #[cfg(feature = "failpoints")]
    let _crash_points = {
        tracing::warn!(set = ?std::env::var("FAILPOINTS").ok(), "built with crash points for tests (the failpoints feature)");
        fail::FailScenario::setup()
    };
    let cli = Cli::parse();
    let (Command::Run { config } | Command::Snapshot { config } | Command::CheckConfig { config }) =
        &cli.command;
    let cfg = match AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("logferry-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::CheckConfig { .. } = cli.command {
        println!("{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("logferry-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("shutdown requested; sealing complete transactions");
            let _ = tx.send(true);
        });
        let result = match cli.command {
            Command::Snapshot { .. } => snapshot_now(&cfg, rx).await,
            // On a worker, not on this thread: the source task hands the pipeline one event
            // at a time, and waking a task on the workers is a queue push where waking the
            // thread blocked here is a futex call (a context switch) per event.
            _ => tokio::spawn(pipeline::run(cfg, rx))
                .await
                .unwrap_or_else(|e| {
                    Err(logferry_agent::AgentError::Stage(format!(
                        "the pipeline task failed: {e}"
                    )))
                }),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "agent stopped");
                eprintln!("logferry-agent: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn snapshot_now(
    cfg: &AgentConfig,
    shutdown: pipeline::ShutdownRx,
) -> logferry_agent::Result<()> {
    // A one-off snapshot makes its own epoch, without the spool (a running agent may hold
    // it): its capsule is shipped before its first chunk.
    let encryption = logferry_agent::encryption::Encryption::start(cfg, None).await?;
    let client = ShipperClient::from_config(&cfg.shipper)?.with_encryption(encryption);
    let m = sources::take_snapshot(cfg, &client, shutdown).await?;
    println!(
        "snapshot {} of stream {} stored: position {}, {} chunks, {} bytes, {}",
        m.id,
        m.stream,
        m.position,
        m.chunks.len(),
        m.plain_bytes(),
        m.content.summary()
    );
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Makes glibc serve every thread from one malloc arena, before any thread starts. The
/// agent's large buffers (payloads, sealed segments, segments read back from the spool) are
/// allocated and freed on different threads; with an arena per thread, each arena kept the
/// freed ones resident and a catch-up with `segment.codec = "lz4"` peaked at up to 70 MiB
/// instead of 50-56 (BENCHMARKS.md). The threads allocate rarely enough that sharing the
/// arena costs no measurable CPU. `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before any other
        // thread exists, and a refusal (return 0) just leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Other allocators need no arena limit.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_malloc_arena() {}
