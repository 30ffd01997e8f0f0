//! End-to-end harness: starts REAL servers and logferry processes on free ports in
//! temporary directories, and stops them when dropped.
//!
//! # Layout
//! - [`process`]: a child process that is killed when dropped, with its log file.
//! - [`mariadb`]: a private `mariadbd` (binlog on, ROW format) and its clients.
//! - [`delay_proxy`]: a TCP proxy adding latency, for benchmarks of a far-away peer.
//! - [`logferry`]: the shipper and agent binaries as processes, with their configs.
//! - [`s3`]: a private S3-compatible server for the shipper's S3 path.
//! - [`store`]: reads what the object store holds (segments, events, binlog files).
//! - [`workload`]: inserts, updates and deletes across several tables.

pub mod alert_receivers;
pub mod browser;
pub mod delay_proxy;
pub mod logferry;
pub mod mariadb;
pub mod mysql8;
pub mod process;
pub mod redis;
pub mod s3;
pub mod store;
pub mod workload;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A TCP port that was free a moment ago on 127.0.0.1.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `check` every 100 ms until it returns `Ok(Some(v))` or `timeout` passes.
///
/// # Errors
/// The last error of `check`, or a timeout naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let until = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > until {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out waiting for {what}")),
                None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
