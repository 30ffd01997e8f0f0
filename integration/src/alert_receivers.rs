//! The receivers alerts go to in the tests: a plain HTTP server that keeps every JSON body
//! POSTed to it (a generic webhook), and a real Alertmanager (Debian's
//! prometheus-alertmanager) on a free port.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

use crate::process::Proc;
use crate::{free_port, wait_for};

/// A webhook receiver on a free port, answering 200 (or 503 while told to fail).
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Its URL.
    pub url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    failing: Arc<Mutex<bool>>,
}

#[derive(Clone)]
struct Shared {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    failing: Arc<Mutex<bool>>,
}

impl Webhook {
    /// Starts the receiver; it runs until the test's runtime ends.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let shared = Shared {
            bodies: Arc::default(),
            failing: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/hook",
                post(|State(s): State<Shared>, body: String| async move {
                    if *s.failing.lock().unwrap_or_else(|p| p.into_inner()) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    match serde_json::from_str(&body) {
                        Ok(v) => {
                            s.bodies.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                            StatusCode::OK
                        }
                        Err(_) => StatusCode::BAD_REQUEST,
                    }
                }),
            )
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Webhook {
            url,
            bodies: shared.bodies,
            failing: shared.failing,
        })
    }

    /// Every body received so far, in order.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes the receiver answer 503 (`true`) or take bodies again.
    pub fn set_failing(&self, failing: bool) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = failing;
    }

    /// The bodies about `rule` in state `state` ("firing", "resolved").
    pub fn about(&self, rule: &str, state: &str) -> Vec<serde_json::Value> {
        self.bodies()
            .into_iter()
            .filter(|b| b["rule"] == rule && b["state"] == state)
            .collect()
    }
}

/// A running Alertmanager, stopped when dropped.
#[derive(Debug)]
pub struct Alertmanager {
    /// Its base URL.
    pub url: String,
    _proc: Proc,
}

impl Alertmanager {
    /// Starts `prometheus-alertmanager` under `dir` with a route to nowhere (the test reads
    /// its API), on a free port; waits until it answers.
    ///
    /// # Errors
    /// When the binary is missing (scripts/install-deps unpacks it) or it does not answer.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
        )?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new("prometheus-alertmanager");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        let proc = Proc::spawn(
            "prometheus-alertmanager",
            cmd,
            &dir.join("alertmanager.log"),
        )
        .context("scripts/install-deps unpacks prometheus-alertmanager from Debian")?;
        let am = Alertmanager { url, _proc: proc };
        let ready = format!("{}/-/ready", am.url);
        wait_for(
            "the Alertmanager to answer",
            Duration::from_secs(30),
            || {
                let ready = ready.clone();
                async move {
                    Ok(reqwest::get(&ready)
                        .await
                        .ok()
                        .filter(|a| a.status().is_success())
                        .map(|_| ()))
                }
            },
        )
        .await?;
        Ok(am)
    }

    /// The alerts it holds (`GET /api/v2/alerts`, active and not).
    ///
    /// # Errors
    /// When it does not answer.
    pub async fn alerts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let url = format!(
            "{}/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true",
            self.url
        );
        Ok(serde_json::from_str(
            &reqwest::get(url).await?.text().await?,
        )?)
    }
}
