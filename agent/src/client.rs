//! HTTP client of the shipper: uploads segments and asks where a stream stands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logferry_common::wire::{
    AgentReport, ErrorBody, Limits, SegmentAck, StreamHead, LIMITS_PATH, REPORT_PATH,
    SEGMENTS_PATH, STREAMS_PATH,
};
use logferry_common::StreamId;
use reqwest::StatusCode;

use crate::backoff::Backoff;
use crate::encryption::Encryption;
use crate::error::{AgentError, Result};
use logferry_config::agent::ShipperClientSection;
use logferry_config::SecretString;

/// A client of one shipper.
#[derive(Debug, Clone)]
pub struct ShipperClient {
    http: reqwest::Client,
    base: String,
    /// Delays between retries of a failed upload (`shipper.retry_min_ms` ..
    /// `shipper.retry_max_ms`).
    retry: Backoff,
    /// The epoch key everything uploaded is sealed under (`None`: in clear). The client
    /// carries it because every uploader (segments, snapshots) needs it with the client,
    /// and ships its capsule before the first object sealed under it.
    encryption: Option<Arc<Encryption>>,
}

/// How long an idle connection to the shipper is kept for the next request.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// How the client trusts the shipper's certificate and proves itself (mutual TLS).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// The only CA trusted (PEM); `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM files), shown when the shipper asks.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// The TLS settings of the agent's `[shipper]` section.
    pub fn from_config(section: &ShipperClientSection) -> Self {
        ClientTls {
            ca_file: section.ca_file.clone(),
            identity: section.client_cert.clone().zip(section.client_key.clone()),
        }
    }
}

/// An error with its causes: reqwest's own text ("error sending request") leaves out why,
/// e.g. a certificate from an unknown issuer.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

fn unusable(key: &str, path: &Path, problem: impl std::fmt::Display) -> AgentError {
    AgentError::Config(logferry_config::ConfigError::Invalid {
        key: key.to_owned(),
        problem: format!("{}: {problem}", path.display()),
    })
}

fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| unusable(key, path, e))
}

impl ShipperClient {
    /// A client as the agent's `[shipper]` section configures it.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn from_config(section: &ShipperClientSection) -> Result<Self> {
        let mut client = ShipperClient::new(
            &section.url,
            Duration::from_millis(section.timeout_ms),
            section.token.as_ref().map(SecretString::expose),
            &ClientTls::from_config(section),
        )?;
        client.retry = Backoff::new(
            Duration::from_millis(section.retry_min_ms),
            Duration::from_millis(section.retry_max_ms),
        );
        Ok(client)
    }

    /// The delays to wait between retries of a failed upload, from the first.
    pub fn backoff(&self) -> Backoff {
        self.retry.clone()
    }

    /// A client for the shipper at `base` (e.g. `https://shipper:9450`) that sends `token`
    /// as `Authorization: Bearer` with every request (marked sensitive, so no debug output
    /// of a request shows it), over TLS as `tls` says for an `https://` base.
    ///
    /// # Errors
    /// [`AgentError::Config`] naming `shipper.ca_file`, `shipper.client_cert` or
    /// `shipper.token` when a file or the token is unusable; [`AgentError::ShipperUnavailable`]
    /// when the HTTP client cannot be built.
    pub fn new(
        base: &str,
        timeout: Duration,
        token: Option<&str>,
        tls: &ClientTls,
    ) -> Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| {
                    AgentError::Config(logferry_config::ConfigError::Invalid {
                        key: "shipper.token".into(),
                        problem: "holds characters a header cannot carry".into(),
                    })
                })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            // Below the shipper's default server.header_timeout_ms (10 s), after which it
            // closes idle connections: reusing one just as it closes would fail an upload.
            .pool_idle_timeout(POOL_IDLE)
            .default_headers(headers)
            .https_only(reqwest::Url::parse(base).is_ok_and(|u| u.scheme() == "https"));
        if let Some(ca) = &tls.ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read_pem("shipper.ca_file", ca)?)
                .map_err(|e| unusable("shipper.ca_file", ca, e))?;
            if certs.is_empty() {
                return Err(unusable("shipper.ca_file", ca, "no PEM certificate in it"));
            }
            builder = builder.tls_certs_only(certs);
        }
        if let Some((cert, key)) = &tls.identity {
            let mut pem = read_pem("shipper.client_cert", cert)?;
            pem.push(b'\n');
            pem.extend(read_pem("shipper.client_key", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                unusable(
                    "shipper.client_cert",
                    cert,
                    format!("with {}: {e}", key.display()),
                )
            })?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| match &tls.identity {
            // rustls checks the pair when the client is built: a key of another
            // certificate fails here, and no retry would mend it.
            Some((cert, key)) => AgentError::Config(logferry_config::ConfigError::Invalid {
                key: "shipper.client_cert".into(),
                problem: format!(
                    "{} with shipper.client_key {}: {}",
                    cert.display(),
                    key.display(),
                    causes(&e)
                ),
            }),
            None => AgentError::ShipperUnavailable(causes(&e)),
        })?;
        Ok(ShipperClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            retry: Backoff::new(Duration::from_millis(500), Duration::from_secs(5)),
            encryption: None,
        })
    }

    /// The same client, sealing what it uploads under `encryption`'s key.
    pub fn with_encryption(mut self, encryption: Option<Arc<Encryption>>) -> Self {
        self.encryption = encryption;
        self
    }

    /// The encryption of uploads; `None` when they go in clear.
    pub fn encryption(&self) -> Option<&Arc<Encryption>> {
        self.encryption.as_ref()
    }

    /// Makes sure the shipper stores the capsule of `epoch` of `stream` (once per process
    /// and epoch): before the first segment or snapshot sealed under it.
    ///
    /// # Errors
    /// As [`Self::upload`].
    pub async fn ensure_capsule(&self, stream: &StreamId, epoch: &str) -> Result<()> {
        let Some(enc) = &self.encryption else {
            return Ok(());
        };
        if enc.is_shipped(epoch) {
            return Ok(());
        }
        let body = enc.capsule(epoch).await?;
        let url = format!("{}{STREAMS_PATH}/{stream}/keys/{epoch}", self.base);
        let req = self
            .http
            .put(&url)
            .header("content-type", "application/json")
            .body(body);
        self.send_put(&url, req).await?;
        enc.mark_shipped(epoch);
        Ok(())
    }

    /// Uploads one encoded segment; `Ok` means it is durably stored (201, or 200 for an
    /// identical re-send).
    ///
    /// # Errors
    /// [`AgentError::ShipperUnavailable`] (retry) for network errors and 5xx,
    /// [`AgentError::ShipperRefused`] for 409 and other 4xx.
    pub async fn upload(&self, name: &str, bytes: bytes::Bytes) -> Result<SegmentAck> {
        let url = format!("{}{SEGMENTS_PATH}", self.base);
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .map_err(|e| AgentError::ShipperUnavailable(format!("POST {url}: {}", causes(&e))))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| AgentError::ShipperUnavailable(format!("POST {url}: {}", causes(&e))))?;
        if status == StatusCode::CREATED || status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|e| {
                AgentError::ShipperUnavailable(format!(
                    "POST {url}: unreadable acknowledgement: {e}"
                ))
            });
        }
        let reason = format!("{status}: {}", error_text(status, &body));
        if refused(status) {
            Err(AgentError::ShipperRefused {
                what: format!("segment {name}"),
                reason,
            })
        } else {
            Err(AgentError::ShipperUnavailable(format!(
                "POST {url}: {reason}"
            )))
        }
    }

    /// Uploads one stored snapshot chunk with its sha256.
    ///
    /// # Errors
    /// As [`Self::upload`].
    pub async fn put_chunk(
        &self,
        stream: &StreamId,
        id: &str,
        index: u32,
        stored: Vec<u8>,
        sha256: &str,
    ) -> Result<()> {
        let url = format!(
            "{}{STREAMS_PATH}/{stream}/snapshots/{id}/chunks/{index}",
            self.base
        );
        let req = self
            .http
            .put(&url)
            .header("x-logferry-sha256", sha256)
            .body(stored);
        self.send_put(&url, req).await
    }

    /// Uploads a snapshot manifest (after all its chunks).
    ///
    /// # Errors
    /// As [`Self::upload`].
    pub async fn put_manifest(&self, stream: &StreamId, id: &str, manifest: Vec<u8>) -> Result<()> {
        let url = format!(
            "{}{STREAMS_PATH}/{stream}/snapshots/{id}/manifest",
            self.base
        );
        let req = self
            .http
            .put(&url)
            .header("content-type", "application/json")
            .body(manifest);
        self.send_put(&url, req).await
    }

    /// Tells the shipper where the agent of `stream` stands.
    ///
    /// # Errors
    /// As [`Self::upload`].
    pub async fn put_report(&self, stream: &StreamId, report: &AgentReport) -> Result<()> {
        let url = format!("{}{STREAMS_PATH}/{stream}/{REPORT_PATH}", self.base);
        let body = serde_json::to_vec(report)
            .map_err(|e| AgentError::Stage(format!("encoding the report: {e}")))?;
        let req = self
            .http
            .put(&url)
            .header("content-type", "application/json")
            .body(body);
        self.send_put(&url, req).await
    }

    async fn send_put(&self, url: &str, req: reqwest::RequestBuilder) -> Result<()> {
        let resp = req
            .send()
            .await
            .map_err(|e| AgentError::ShipperUnavailable(format!("PUT {url}: {}", causes(&e))))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.bytes().await.unwrap_or_default();
        let reason = format!("{status}: {}", error_text(status, &body));
        if refused(status) {
            Err(AgentError::ShipperRefused {
                what: url.to_owned(),
                reason,
            })
        } else {
            Err(AgentError::ShipperUnavailable(format!(
                "PUT {url}: {reason}"
            )))
        }
    }

    /// What the shipper holds of `stream`.
    ///
    /// # Errors
    /// [`AgentError::ShipperUnavailable`] for network errors and unexpected answers.
    pub async fn head(&self, stream: &StreamId) -> Result<StreamHead> {
        self.get_json(&format!("{}{STREAMS_PATH}/{stream}", self.base))
            .await?
            .ok_or_else(|| {
                AgentError::ShipperUnavailable(format!("GET {STREAMS_PATH}/{stream}: 404"))
            })
    }

    /// The newest stored segment ends a failover may continue from (a fork's candidates);
    /// empty from a shipper that does not publish them.
    ///
    /// # Errors
    /// [`AgentError::ShipperUnavailable`] for network errors and unexpected answers.
    pub async fn marks(&self, stream: &StreamId) -> Result<logferry_common::wire::ChainMarks> {
        Ok(self
            .get_json(&format!("{}{STREAMS_PATH}/{stream}/marks", self.base))
            .await?
            .unwrap_or_default())
    }

    /// The shipper's upload limits; `None` from a shipper that does not publish them (an
    /// older build, which applies the default limits).
    ///
    /// # Errors
    /// [`AgentError::ShipperUnavailable`] for network errors and unexpected answers.
    pub async fn limits(&self) -> Result<Option<Limits>> {
        self.get_json(&format!("{}{LIMITS_PATH}", self.base)).await
    }

    /// GETs `url` and reads its JSON answer; `None` on 404.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<Option<T>> {
        let url = url.to_owned();
        let resp =
            self.http.get(&url).send().await.map_err(|e| {
                AgentError::ShipperUnavailable(format!("GET {url}: {}", causes(&e)))
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| AgentError::ShipperUnavailable(format!("GET {url}: {}", causes(&e))))?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // Retrying cannot help a refused token: stop with the fix.
            return Err(AgentError::ShipperRefused {
                what: format!("GET {url}"),
                reason: format!("{status}: {}", error_text(status, &body)),
            });
        }
        if status != StatusCode::OK {
            return Err(AgentError::ShipperUnavailable(format!(
                "GET {url}: {status}: {}",
                error_text(status, &body)
            )));
        }
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            AgentError::ShipperUnavailable(format!("GET {url}: unreadable answer: {e}"))
        })
    }
}

/// Whether an answer refuses the request for good (a 4xx other than a timeout or "too many
/// requests", which are retried like a 5xx).
fn refused(status: StatusCode) -> bool {
    status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
}

/// The shipper's error message, with the fix for a refused token.
fn error_text(status: StatusCode, body: &[u8]) -> String {
    let text = error_message(body);
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        format!("{text}; check shipper.token (or LOGFERRY__SHIPPER__TOKEN) against the shipper's [[auth.tokens]]: its streams and actions (ship)")
    } else {
        text
    }
}

fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(300).collect())
}
