//! Debian's headless Chromium, run on a page: the DOM after its scripts ran, what its
//! console said, and screenshots.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// What Chromium made of a page.
#[derive(Debug)]
pub struct Rendered {
    /// The DOM after the page's scripts ran.
    pub dom: String,
    /// The console's messages and the page's uncaught errors, one per line.
    pub console: Vec<String>,
}

fn chromium(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--ignore-certificate-errors",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
        ])
        .args(args)
        .output()
        .context("Debian's chromium (scripts/install-deps installs it)")
}

/// Loads `url` at a `width` × `height` window and returns its DOM and console.
///
/// # Errors
/// When Chromium cannot run or fails.
pub fn render(url: &str, width: u32, height: u32) -> anyhow::Result<Rendered> {
    let size = format!("--window-size={width},{height}");
    let out = chromium(&[&size, "--dump-dom", url])?;
    anyhow::ensure!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .map(str::to_owned)
        .collect();
    Ok(Rendered {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console,
    })
}

/// Saves a screenshot of `url` at `width` × `height` into `file` (PNG).
///
/// # Errors
/// When Chromium cannot run or writes no image.
pub fn screenshot(url: &str, width: u32, height: u32, file: &Path) -> anyhow::Result<()> {
    let size = format!("--window-size={width},{height}");
    let shot = format!("--screenshot={}", file.display());
    let out = chromium(&[&size, &shot, url])?;
    let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    anyhow::ensure!(
        out.status.success() && len > 1000,
        "chromium wrote no screenshot to {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
