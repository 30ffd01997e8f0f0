//! Child processes that never outlive the test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use anyhow::Context;

/// How long a child may take to stop after SIGTERM.
pub const STOP_WITHIN: Duration = Duration::from_secs(60);
/// How long a child run to its end (a snapshot, a CLI command) may take.
pub const RUN_WITHIN: Duration = Duration::from_secs(900);

/// A running child; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// When the binary cannot be started.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        Ok(Proc {
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// Kills with SIGKILL (a crash) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit status, at most [`STOP_WITHIN`].
    ///
    /// # Errors
    /// When the process cannot be signalled, or has not exited in time (it is then killed,
    /// and the error carries its log).
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.pid().context("process already stopped")?.to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        self.wait_within(STOP_WITHIN)
    }

    /// Waits for the exit status, at most [`RUN_WITHIN`].
    ///
    /// # Errors
    /// When the process already stopped, or has not exited in time (it is then killed, and
    /// the error carries its log).
    pub fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.wait_within(RUN_WITHIN)
    }

    /// Waits for the exit status at most `limit`; a hung child is killed and its log goes
    /// into the error, so a test fails instead of hanging the suite.
    ///
    /// # Errors
    /// When the process already stopped, or has not exited in time.
    pub fn wait_within(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        let c = self.child.as_mut().context("process already stopped")?;
        loop {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > until {
                self.kill9();
                anyhow::bail!(
                    "the process did not exit within {limit:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running (not exited, even if not yet reaped).
    pub fn is_running(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        // /proc/<pid>/stat: "pid (name) state ...": an exited child not yet reaped is "Z".
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1;
                after.split_whitespace().next().map(|st| st != "Z")
            })
            .unwrap_or(false)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident memory so far (VmHWM), in KiB, while it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid()?)
    }

    /// CPU time (user + system) the process has used so far, while it runs.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid()?)
    }

    /// The exit status if it has exited, without waiting.
    ///
    /// # Errors
    /// When the status cannot be read.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    /// The port of the last `field=host:port` on a log line containing `marker`, written
    /// after byte `from` of the log (what this run of the process wrote).
    pub fn logged_port(&self, from: u64, marker: &str, field: &str) -> Option<u16> {
        logged_port(&self.log, from, marker, field)
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Path of a binary of this workspace, built next to the test executable.
///
/// # Errors
/// When it does not exist (run `cargo build --workspace --bins` first).
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("test executable has no directory")?
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    Ok(path)
}

/// Peak resident memory (VmHWM, KiB) of process `pid` so far, from `/proc/<pid>/status`.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system, seconds) used so far by process `pid`, from `/proc/<pid>/stat`
/// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Bytes in the log at `path` now (0 if there is none yet): what a process started next
/// writes comes after it.
pub fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// See [`Proc::logged_port`].
pub fn logged_port(path: &Path, from: u64, marker: &str, field: &str) -> Option<u16> {
    let text = std::fs::read(path).ok()?;
    let start = usize::try_from(from).ok()?.min(text.len());
    let text = String::from_utf8_lossy(&text[start..]);
    let prefix = format!("{field}=");
    text.lines()
        .rev()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&prefix))?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .next()
}
