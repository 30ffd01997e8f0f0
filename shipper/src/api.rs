//! The HTTP API: segment uploads from agents, stream state, health and metrics.
//!
//! Every request but `/healthz` and the page at `/` carries `Authorization: Bearer <token>` ([`crate::auth`]):
//! 401 without a valid one, 403 when it does not cover the action or the stream (the
//! action each route needs is in the table). Every authenticated or refused request is
//! written to the audit log ([`crate::audit`]) when one is configured.
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/v1/segments` (ship) | 201 stored, 200 identical re-send, 400 invalid (in clear where that is refused, or its key's capsule not stored), 409 conflict, 413 too large, 503 store down |
//! | GET | `/v1/limits` (any) | [`Limits`]: the largest segment accepted |
//! | GET | `/v1/status` (any) | [`Status`]: transport, tokens, audit, and a warning for each one missing; each stream's status for the streams the token may read |
//! | PUT | `/v1/streams/<s>/report` (ship) | 204; the agent's [`AgentReport`], every few seconds |
//! | GET | `/v1/streams` (read) | names of stored streams the token covers |
//! | GET | `/v1/streams/<stream>` (ship or read) | [`StreamHead`]: segment count and first/last position |
//! | PUT | `/v1/streams/<s>/snapshots/<id>/chunks/<n>` (ship) | 201/200; 400 when the `x-logferry-sha256` header does not match; 409 other bytes stored |
//! | PUT | `/v1/streams/<s>/snapshots/<id>/manifest` (ship) | 201/200; 400 unless every listed chunk is stored and its key's capsule too (or, in clear, unless clear is accepted) |
//! | PUT | `/v1/streams/<s>/keys/<epoch>` (ship) | 201, or 200 when a capsule is stored there already (it is kept, never replaced); 400 a capsule of another stream or epoch |
//! | GET | `/healthz` (no token) | 200 when the store answers |
//! | GET | `/`, `/page.css`, `/page.js` (no token) | the status page; its script reads `/v1/status` and `/v1/history` with the token from `/#token=...` |
//! | GET | `/v1/history` (read) | per stream, the last hours of RPO exposure and lag samples, for the page's chart |
//! | GET | `/metrics` (admin) | OpenMetrics text |

use crate::time_arg::now_ms;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Extension;
use axum::{Json, Router};
use bytes::Bytes;
use logferry_common::exposition;
use logferry_common::keys::{capsule_key, chunk_key, manifest_key};
use logferry_common::wire::{
    AgentReport, ErrorBody, Limits, StreamHead, LIMITS_PATH, SEGMENTS_PATH,
};
use logferry_common::{Segment, StreamId};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::audit::{Audit, Entry};
use crate::auth::{Action, Auth, Caller};
use crate::catalog::ChainEnd;
use crate::error::ShipperError;
use crate::ingest::Ingest;
use crate::snapshots::{self, Accepted, SHA256_HEADER};
use crate::watch::status::StreamStatus;

/// Who may call the API, how they reach it, and where their requests are written down.
#[derive(Debug)]
pub struct Gate {
    /// The accepted tokens.
    pub auth: Auth,
    /// The audit log, when configured.
    pub audit: Option<Audit>,
    /// How connections are protected, for `/v1/status`.
    pub transport: Transport,
}

/// How connections to the API are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Plain HTTP (`server.insecure_plain_http`).
    PlainHttp,
    /// TLS, any client.
    Tls,
    /// TLS with client certificates required (`server.tls.client_ca`).
    MutualTls,
}

impl Transport {
    /// The protection `[server.tls]` gives (none: plain HTTP).
    pub fn of(tls: Option<&logferry_config::shipper::ServerTls>) -> Self {
        match tls {
            None => Transport::PlainHttp,
            Some(t) if t.client_ca.is_some() => Transport::MutualTls,
            Some(_) => Transport::Tls,
        }
    }
}

/// `GET /v1/status`: how the shipper is protected, with a warning for each protection it
/// goes without, so that a monitoring check or a person can see an unsafe setting.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The shipper's version.
    pub version: &'static str,
    /// How connections are protected.
    pub transport: Transport,
    /// Whether every request needs a token.
    pub tokens_required: bool,
    /// Whether requests are audited.
    pub audited: bool,
    /// Whether segments and snapshots in clear are accepted
    /// (`encryption.insecure_plaintext`).
    pub plaintext_accepted: bool,
    /// What is unsafe about this configuration, in words; empty when nothing is.
    pub warnings: Vec<String>,
    /// Every stream the caller's token covers, as [`crate::watch`] sees it now.
    pub streams: Vec<StreamStatus>,
}

impl Gate {
    /// What `/v1/status` says of this gate, and of the ingest beside it that accepts data
    /// in clear when `accept_plaintext`.
    pub fn status(&self, accept_plaintext: bool) -> Status {
        let mut warnings = Vec::new();
        if self.transport == Transport::PlainHttp {
            warnings.push("server.insecure_plain_http: the API is served over plain HTTP, so tokens and segments cross the network in clear unless a TLS proxy is in front".into());
        }
        if self.auth.is_open() {
            warnings.push("auth.insecure_no_auth: every request is accepted without a token; anyone who reaches the API can add restore points".into());
        }
        if self.audit.is_none() {
            warnings.push("no auth.audit_log: requests are not audited".into());
        }
        if accept_plaintext {
            warnings.push("encryption.insecure_plaintext: segments and snapshots in clear are accepted and stored, readable by anyone with the bucket".into());
        }
        Status {
            version: env!("CARGO_PKG_VERSION"),
            transport: self.transport,
            tokens_required: !self.auth.is_open(),
            audited: self.audit.is_some(),
            plaintext_accepted: accept_plaintext,
            warnings,
            streams: Vec::new(),
        }
    }
}

/// The address a request came from, for the audit log; [`crate::listen`] puts it in each
/// request's extensions as `ConnectInfo<Peer>`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What a handler tells the audit log about its request, carried in the response.
#[derive(Debug, Clone, Default)]
struct Noted {
    stream: Option<String>,
    object: Option<String>,
    error: Option<String>,
}

/// `response` with `stream` and `object` noted for the audit log.
fn noted(mut response: Response, stream: &StreamId, object: Option<String>) -> Response {
    let error = response
        .extensions()
        .get::<Noted>()
        .and_then(|n| n.error.clone());
    response.extensions_mut().insert(Noted {
        stream: Some(stream.to_string()),
        object,
        error,
    });
    response
}

/// Resolves the caller of every request but `/healthz` (401 for no valid token), hands it
/// to the handler, and audits the answer, or the client's going away before it (499).
async fn guard(gate: Arc<Gate>, mut req: Request, next: Next) -> Response {
    // The page is the same for everyone and holds no data; its script sends the token.
    if req.uri().path() == "/healthz"
        || (matches!(req.uri().path(), "/" | "/page.css" | "/page.js")
            && req.method() == axum::http::Method::GET)
    {
        return next.run(req).await;
    }
    let request = format!("{} {}", req.method(), req.uri().path());
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0 .0.to_string());
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = gate.auth.caller(header, now_ms());
    let mut pending = Pending {
        audit: gate.audit.as_ref(),
        entry: Some(Entry {
            time: String::new(),
            peer,
            token: caller.as_ref().ok().and_then(Caller::id).map(str::to_owned),
            stream: stream_in_path(&request),
            request,
            object: None,
            status: CLIENT_GONE,
            error: Some("the client went away before the answer".into()),
        }),
    };
    let response = match caller {
        Err(e) => e.into_response(),
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
    };
    if let Some(entry) = pending.entry.as_mut() {
        let note = response
            .extensions()
            .get::<Noted>()
            .cloned()
            .unwrap_or_default();
        entry.stream = note.stream.or(entry.stream.take());
        entry.object = note.object;
        entry.status = response.status().as_u16();
        // Refusals the HTTP layer makes itself (a body over the limit or cut short, a path
        // that matches no route) carry no note: their status says what they were.
        entry.error = note.error.or_else(|| {
            let status = response.status();
            (status.is_client_error() || status.is_server_error()).then(|| {
                format!(
                    "{} (refused by the HTTP layer)",
                    status.canonical_reason().unwrap_or("error")
                )
            })
        });
    }
    drop(pending);
    response
}

/// The status audited for a request whose client went away before it was answered (nginx's
/// convention).
const CLIENT_GONE: u16 = 499;

/// The audit entry of a request in flight, recorded when it is dropped: after the answer,
/// or when the client goes away and the server drops the request's future mid-way.
struct Pending<'a> {
    audit: Option<&'a Audit>,
    entry: Option<Entry>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let (Some(audit), Some(mut entry)) = (self.audit, self.entry.take()) {
            if std::thread::panicking() {
                entry.status = StatusCode::INTERNAL_SERVER_ERROR.as_u16();
                entry.error = Some("the request's handler panicked".into());
            }
            entry.time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            audit.record(&entry);
        }
    }
}

/// Refuses an upload the caller's token could never make (no `ship`, or a stream in the path
/// it does not cover) before its body is received: a valid token of another role or stream
/// cannot make the shipper read megabytes to refuse them. The handler checks again with what
/// only the body says (a segment's stream).
async fn ship_scope(req: Request, next: Next) -> Response {
    let verdict = match req.extensions().get::<Caller>() {
        None => Err(ShipperError::Internal(
            "no caller resolved for an upload".into(),
        )),
        Some(caller) => match stream_in_path(req.uri().path()).map(|s| StreamId::new(&s)) {
            None => caller.allow(Action::Ship, None),
            Some(Ok(stream)) => caller.allow(Action::Ship, Some(&stream)),
            Some(Err(e)) => Err(ShipperError::BadRequest(e.to_string())),
        },
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The stream a `/v1/streams/<stream>...` request (or path) names, percent-decoded as the
/// router's `Path` decodes it, so that `%62illing` is `billing` here too.
fn stream_in_path(request: &str) -> Option<String> {
    let rest = request.split_once("/v1/streams/")?.1;
    rest.split('/').next().filter(|s| !s.is_empty()).map(|s| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// Builds the router over shared ingest state, behind `gate`: bodies up to `max_body`
/// bytes, and at most `max_uploads` upload bodies (segments, snapshot chunks, manifests)
/// received at once, so that the memory they take is bounded whatever the number of agents;
/// an upload that takes longer than `upload_timeout` (a sender gone mid-body) is answered
/// 408 and frees its place.
pub fn router(
    state: Arc<Ingest>,
    gate: Arc<Gate>,
    max_body: usize,
    max_uploads: usize,
    upload_timeout: Duration,
) -> Router {
    let status = gate.status(state.keys.accepts_plaintext());
    let permits = Arc::new(Semaphore::new(max_uploads.max(1)));
    let uploads = Router::new()
        .route(SEGMENTS_PATH, post(put_segment))
        .route(
            "/v1/streams/{stream}/snapshots/{id}/chunks/{index}",
            put(put_chunk),
        )
        .route(
            "/v1/streams/{stream}/snapshots/{id}/manifest",
            put(put_manifest).layer(DefaultBodyLimit::max(MAX_MANIFEST_BYTES)),
        )
        .route(
            "/v1/streams/{stream}/keys/{epoch}",
            put(put_capsule).layer(DefaultBodyLimit::max(MAX_CAPSULE_BYTES)),
        )
        .route(
            "/v1/streams/{stream}/report",
            put(put_report).layer(DefaultBodyLimit::max(MAX_REPORT_BYTES)),
        )
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let permits = permits.clone();
            async move {
                // Taken before the body is read; held until the answer is sent.
                let Ok(_permit) = permits.acquire_owned().await else {
                    return refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the shipper is shutting down".into(),
                    );
                };
                match tokio::time::timeout(upload_timeout, next.run(req)).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        let error = format!(
                            "the upload was not received and stored within {} ms (server.upload_timeout_ms)",
                            upload_timeout.as_millis()
                        );
                        tracing::warn!(%error, "upload timed out");
                        refusal(StatusCode::REQUEST_TIMEOUT, error)
                    }
                }
            }
        }));
    let ships = uploads.layer(middleware::from_fn(ship_scope));
    let reads = Router::new()
        .route(LIMITS_PATH, get(limits))
        .route(
            "/v1/status",
            get(
                move |State(st): State<Arc<Ingest>>, Extension(caller): Extension<Caller>| {
                    let mut status = status.clone();
                    async move {
                        status.streams = visible(&caller, st.statuses(now_ms()).await);
                        Json(status)
                    }
                },
            ),
        )
        .route("/v1/streams", get(list_streams))
        .route("/v1/streams/{stream}", get(stream_head))
        .route("/v1/streams/{stream}/marks", get(stream_marks))
        .route("/v1/history", get(history))
        .route("/", get(page))
        .route("/page.css", get(page_css))
        .route("/page.js", get(page_js))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn(|req: Request, next: Next| async move {
            match tokio::time::timeout(READ_TIMEOUT, next.run(req)).await {
                Ok(answer) => answer,
                Err(_) => refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "not answered within {} s (the store is slow or away)",
                        READ_TIMEOUT.as_secs()
                    ),
                ),
            }
        }));
    Router::new()
        .merge(ships)
        .merge(reads)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            guard(gate.clone(), req, next)
        }))
        .with_state(state)
}

/// Largest snapshot manifest accepted: its JSON lists chunks and tables, a few hundred bytes
/// each, so this holds tens of thousands of either.
const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;

/// Largest agent report accepted (one is about 600 bytes).
const MAX_REPORT_BYTES: usize = 16 * 1024;

/// Largest key capsule accepted (one is about 400 bytes).
const MAX_CAPSULE_BYTES: usize = 16 * 1024;

/// How long a request other than an upload (which has `server.upload_timeout_ms`) may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

async fn put_segment(
    State(st): State<Arc<Ingest>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    // The stream is in the segment's header: read it (cheaply) before anything is stored.
    let stream = match Segment::peek_header(&body) {
        Ok(h) => h.meta.stream,
        Err(e) => return ShipperError::Format(e).into_response(),
    };
    if let Err(e) = caller.allow(Action::Ship, Some(&stream)) {
        return noted(e.into_response(), &stream, None);
    }
    match st.segment(body).await {
        Ok(ack) => {
            let status = if ack.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let key = ack.key.clone();
            noted((status, Json(ack)).into_response(), &stream, Some(key))
        }
        Err(e) => noted(e.into_response(), &stream, None),
    }
}

async fn put_chunk(
    State(st): State<Arc<Ingest>>,
    Extension(caller): Extension<Caller>,
    Path((stream, id, index)): Path<(String, String, u32)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stream = match allowed(&caller, &[Action::Ship], &stream) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let sha = headers.get(SHA256_HEADER).and_then(|v| v.to_str().ok());
    let key = chunk_key(&stream, &id, index);
    let answer = accepted(snapshots::put_chunk(&st.store, &stream, &id, index, sha, body).await);
    noted(answer, &stream, Some(key))
}

async fn put_manifest(
    State(st): State<Arc<Ingest>>,
    Extension(caller): Extension<Caller>,
    Path((stream, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let stream = match allowed(&caller, &[Action::Ship], &stream) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let key = manifest_key(&stream, &id);
    let answer = accepted(snapshots::put_manifest(&st.store, &st.keys, &stream, &id, body).await);
    noted(answer, &stream, Some(key))
}

async fn put_capsule(
    State(st): State<Arc<Ingest>>,
    Extension(caller): Extension<Caller>,
    Path((stream, epoch)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let stream = match allowed(&caller, &[Action::Ship], &stream) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    // The object is noted only for an epoch of the grammar (put_capsule refuses others).
    let key = logferry_common::crypto::validate_epoch(&epoch)
        .is_ok()
        .then(|| capsule_key(&stream, &epoch));
    let answer = accepted(st.keys.put_capsule(&st.store, &stream, &epoch, body).await);
    noted(answer, &stream, key)
}

/// The stream named in a path, when it is one and the caller may do one of `actions` on
/// it; else the answer to send (400, 403).
fn allowed(caller: &Caller, actions: &[Action], stream: &str) -> Result<StreamId, Box<Response>> {
    let stream = StreamId::new(stream)
        .map_err(|e| Box::new(ShipperError::BadRequest(e.to_string()).into_response()))?;
    let mut refusal = None;
    for action in actions {
        match caller.allow(*action, Some(&stream)) {
            Ok(()) => return Ok(stream),
            Err(e) => refusal = Some(e),
        }
    }
    let e = refusal.unwrap_or_else(|| ShipperError::Forbidden("no action allowed".into()));
    Err(Box::new(noted(e.into_response(), &stream, None)))
}

fn accepted(r: Result<Accepted, ShipperError>) -> Response {
    match r {
        Ok(Accepted::Created) => (StatusCode::CREATED, "stored\n").into_response(),
        Ok(Accepted::Duplicate) => (StatusCode::OK, "already stored\n").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn limits(State(st): State<Arc<Ingest>>) -> Json<Limits> {
    Json(Limits {
        max_segment_bytes: st.limits.max_segment_bytes,
    })
}

async fn list_streams(
    State(st): State<Arc<Ingest>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    if let Err(e) = caller.allow(Action::Read, None) {
        return e.into_response();
    }
    let names: Vec<String> = st
        .catalog
        .stream_names()
        .iter()
        .filter(|s| caller.sees(s))
        .map(|s| s.to_string())
        .collect();
    Json(names).into_response()
}

/// How many of the newest segments `GET /v1/streams/<s>/marks` looks at: a fork's point
/// lies within the standby's replication lag of the chain's end.
const MARKS_SEGMENTS: usize = 256;

/// The newest segment ends a failover to a standby that missed the last transactions can
/// continue from (see [`logferry_common::wire::ChainMarks`]).
async fn stream_marks(
    State(st): State<Arc<Ingest>>,
    Extension(caller): Extension<Caller>,
    Path(stream): Path<String>,
) -> Response {
    let stream = match allowed(&caller, &[Action::Ship, Action::Read], &stream) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let refs = st
        .catalog
        .stream(&stream)
        .lock()
        .await
        .last_segments(MARKS_SEGMENTS);
    let mut marks = Vec::new();
    for seg in &refs {
        let header = match crate::catalog::read_header(&st.store, seg).await {
            Ok(h) => h,
            Err(e) => return e.into_response(),
        };
        let m = header.meta;
        if let (None, Some(t)) = (&m.open_trx, &m.lineage.last_trx) {
            marks.push(logferry_common::wire::ChainMark {
                end: m.end.to_string(),
                last_trx: t.into(),
            });
        }
    }
    (
        StatusCode::OK,
        Json(logferry_common::wire::ChainMarks { marks }),
    )
        .into_response()
}

async fn stream_head(
    State(st): State<Arc<Ingest>>,
    Extension(caller): Extension<Caller>,
    Path(stream): Path<String>,
) -> Response {
    let stream = match allowed(&caller, &[Action::Ship, Action::Read], &stream) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    let lock = st.catalog.stream(&stream);
    let mut chain = lock.lock().await;
    let segments = chain.segment_count() as u64;
    let ends = async {
        let first = chain.end_header(&st.store, ChainEnd::First).await?;
        let last = chain.end_header(&st.store, ChainEnd::Last).await?;
        Ok::<_, ShipperError>((first, last))
    };
    let (first, last) = match ends.await {
        Ok(ends) => ends,
        Err(e) => return e.into_response(),
    };
    let head = StreamHead {
        stream: stream.to_string(),
        segments,
        start: first.map(|h| h.meta.start.to_string()),
        end: last.as_ref().map(|h| h.meta.end.to_string()),
        open_trx: last
            .as_ref()
            .and_then(|h| h.meta.open_trx.as_ref().map(ToString::to_string)),
        origin: last
            .as_ref()
            .map(|h| h.meta.lineage.origin.clone())
            .unwrap_or_default(),
        last_trx: last
            .as_ref()
            .and_then(|h| h.meta.lineage.last_trx.as_ref().map(Into::into)),
        last_event_ms: last.map(|h| h.meta.last_event_ms),
    };
    (StatusCode::OK, Json(head)).into_response()
}

async fn health(State(st): State<Arc<Ingest>>) -> Response {
    match st.store.healthcheck().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics(
    State(st): State<Arc<Ingest>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    match caller.allow(Action::Admin, None) {
        Ok(()) => {
            let openmetrics = st.metrics.render(&st.statuses(now_ms()).await);
            let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok());
            let (kind, body) = exposition::negotiate(accept, openmetrics);
            ([(CONTENT_TYPE, kind)], body).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// The statuses of the streams `caller` may read.
fn visible(caller: &Caller, statuses: Vec<StreamStatus>) -> Vec<StreamStatus> {
    statuses
        .into_iter()
        .filter(|s| {
            StreamId::new(&s.stream).is_ok_and(|id| caller.allow(Action::Read, Some(&id)).is_ok())
        })
        .collect()
}

/// `GET /v1/history`: the charted samples of the streams the caller may read.
async fn history(State(st): State<Arc<Ingest>>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(e) = caller.allow(Action::Read, None) {
        return e.into_response();
    }
    let series = st.watch.history(|s| {
        StreamId::new(s).is_ok_and(|id| caller.allow(Action::Read, Some(&id)).is_ok())
    });
    Json(serde_json::json!({ "streams": series })).into_response()
}

/// `GET /`: the status page. It holds no data: its script asks `/v1/status` and
/// `/v1/history` with the token given in the address (`/#token=...`, never sent to the
/// server) or typed into it.
async fn page() -> Response {
    page_file("text/html; charset=utf-8", crate::page::INDEX_HTML)
}

async fn page_css() -> Response {
    page_file("text/css; charset=utf-8", crate::page::PAGE_CSS)
}

async fn page_js() -> Response {
    page_file("text/javascript; charset=utf-8", crate::page::PAGE_JS)
}

/// One of the page's files, under the page's content security policy.
fn page_file(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, kind),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                crate::page::CSP,
            ),
        ],
        body,
    )
        .into_response()
}

async fn put_report(
    State(st): State<Arc<Ingest>>,
    Extension(caller): Extension<Caller>,
    Path(stream): Path<String>,
    body: Bytes,
) -> Response {
    let stream = match allowed(&caller, &[Action::Ship], &stream) {
        Ok(s) => s,
        Err(refused) => return *refused,
    };
    match serde_json::from_slice::<AgentReport>(&body) {
        // Printed in tables and logs: a name, not escape sequences.
        Ok(report)
            if report.agent.is_empty()
                || report.agent.len() > 200
                || report.agent.chars().any(char::is_control) =>
        {
            ShipperError::BadRequest(
                "the report's agent name must be 1 to 200 printable characters".into(),
            )
            .into_response()
        }
        Ok(report) => {
            st.watch.hear(&stream, report, now_ms());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => ShipperError::BadRequest(format!("the report is not an agent report ({e})"))
            .into_response(),
    }
}

impl IntoResponse for ShipperError {
    fn into_response(self) -> Response {
        let status = match &self {
            ShipperError::Format(_)
            | ShipperError::BadSnapshot(_)
            | ShipperError::BadRequest(_)
            | ShipperError::Key { .. } => StatusCode::BAD_REQUEST,
            ShipperError::Internal(_) | ShipperError::Corrupt { .. } | ShipperError::Tls(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ShipperError::Conflict(_) => StatusCode::CONFLICT,
            ShipperError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ShipperError::Forbidden(_) => StatusCode::FORBIDDEN,
            ShipperError::Restore(_) | ShipperError::Gap(_) | ShipperError::Interrupted(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ShipperError::Store(_) | ShipperError::StoreConfig(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::warn!(error = %self, "request refused");
        }
        refusal(status, self.to_string())
    }
}

/// An error answer: `{"error": ...}` with `status`, the reason noted for the audit log.
fn refusal(status: StatusCode, error: String) -> Response {
    let mut response = (
        status,
        Json(ErrorBody {
            error: error.clone(),
        }),
    )
        .into_response();
    response.extensions_mut().insert(Noted {
        error: Some(error),
        ..Noted::default()
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ingest, segment};
    use axum::body::Body;
    use logferry_config::shipper::{AuthSection, TokenConfig};
    use sha2::Digest;
    use tower::ServiceExt;

    async fn send(app: &Router, method: &str, uri: &str, body: Bytes) -> (StatusCode, String) {
        send_as(app, None, method, uri, body).await
    }

    async fn send_as(
        app: &Router,
        token: Option<&str>,
        method: &str,
        uri: &str,
        body: Bytes,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Body::from(body)).unwrap();
        let answer = app.clone().oneshot(req).await.unwrap();
        let status = answer.status();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn open_gate() -> Arc<Gate> {
        let auth = Auth::from_config(&AuthSection {
            insecure_no_auth: true,
            ..AuthSection::default()
        })
        .unwrap();
        Arc::new(Gate {
            auth,
            audit: None,
            transport: Transport::PlainHttp,
        })
    }

    fn token(id: &str, secret: &str, streams: &str, actions: &[Action]) -> TokenConfig {
        TokenConfig {
            id: id.into(),
            sha256: hex::encode(sha2::Sha256::digest(secret.as_bytes())),
            streams: vec![streams.into()],
            actions: actions.to_vec(),
            expires: None,
        }
    }

    #[tokio::test]
    async fn tokens_are_held_to_their_streams_and_actions_and_every_request_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let cfg = AuthSection {
            tokens: vec![
                token("orders-agent", "ship-secret", "orders", &[Action::Ship]),
                token("billing-agent", "other-secret", "billing", &[Action::Ship]),
                token("reader", "read-secret", "*", &[Action::Read]),
            ],
            ..AuthSection::default()
        };
        let gate_audit = Audit::open(&log, 1 << 20, Arc::default()).unwrap();
        let gate = Arc::new(Gate {
            auth: Auth::from_config(&cfg).unwrap(),
            audit: Some(gate_audit.clone()),
            transport: Transport::Tls,
        });
        let st = ingest();
        let app = router(st.clone(), gate, 1 << 20, 4, Duration::from_secs(5));
        let seg = segment(4, 90, b"one");
        let post = |t| send_as(&app, t, "POST", SEGMENTS_PATH, seg.clone());
        assert_eq!(post(None).await.0, StatusCode::UNAUTHORIZED, "no token");
        assert_eq!(
            post(Some("nope")).await.0,
            StatusCode::UNAUTHORIZED,
            "a wrong token"
        );
        assert_eq!(
            post(Some("other-secret")).await.0,
            StatusCode::FORBIDDEN,
            "another stream's token"
        );
        assert_eq!(
            post(Some("read-secret")).await.0,
            StatusCode::FORBIDDEN,
            "a read-only token"
        );
        assert_eq!(
            st.catalog.stream_names().len(),
            0,
            "nothing refused is stored"
        );
        assert_eq!(post(Some("ship-secret")).await.0, StatusCode::CREATED);
        let chunk = "/v1/streams/billing/snapshots/1796235494312/chunks/1";
        let (status, _) = send_as(
            &app,
            Some("ship-secret"),
            "PUT",
            chunk,
            Bytes::from_static(b"x"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a chunk of another stream");
        let (status, body) = send_as(
            &app,
            Some("ship-secret"),
            "GET",
            "/v1/streams",
            Bytes::new(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "a ship token lists nothing: {body}"
        );
        let (status, _) = send_as(&app, Some("ship-secret"), "GET", "/metrics", Bytes::new()).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "a ship token reads no metrics"
        );
        let (status, _) = send_as(
            &app,
            Some("ship-secret"),
            "GET",
            "/v1/streams/orders",
            Bytes::new(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "an agent reads where its stream stands"
        );
        let (status, body) = send_as(
            &app,
            Some("read-secret"),
            "GET",
            "/v1/streams",
            Bytes::new(),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "[\"orders\"]"));
        let (status, _) = send(&app, "GET", "/healthz", Bytes::new()).await;
        assert_eq!(status, StatusCode::OK, "health needs no token");
        let (status, body) =
            send_as(&app, Some("ship-secret"), "GET", "/v1/status", Bytes::new()).await;
        assert_eq!(status, StatusCode::OK);
        let said: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(said["transport"], "tls");
        // Only that this test's ingest takes its hand-made segments in clear.
        assert_eq!(said["plaintext_accepted"], true);
        assert_eq!(
            said["warnings"].as_array().map(Vec::len),
            Some(1),
            "nothing else unsafe: {body}"
        );
        assert!(body.contains("encryption.insecure_plaintext"), "{body}");

        // 11 requests audited (health is not), refusals with their reason, no secret.
        assert!(gate_audit.flush(Duration::from_secs(30)));
        let lines = std::fs::read_to_string(&log).unwrap();
        let entries: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(entries.len(), 11, "{lines}");
        assert_eq!(entries[0]["status"], 401);
        assert!(entries[0]["token"].is_null());
        assert_eq!(entries[2]["token"], "billing-agent");
        assert_eq!(entries[2]["stream"], "orders");
        assert!(entries[2]["error"]
            .as_str()
            .unwrap()
            .contains("does not cover stream orders"));
        assert_eq!(entries[4]["status"], 201);
        assert!(entries[4]["object"]
            .as_str()
            .unwrap()
            .starts_with("streams/orders/segments/"));
        assert_eq!(entries[5]["stream"], "billing");
        assert!(
            !lines.contains("secret"),
            "no secret in the audit log: {lines}"
        );
    }

    /// A request whose body never arrives: answered without its body, or never.
    fn endless(token: &str, method: &str, uri: &str) -> Request {
        let forever = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        Request::builder()
            .method(method)
            .uri(uri)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from_stream(forever))
            .unwrap()
    }

    #[tokio::test]
    async fn tokens_that_could_never_upload_are_refused_before_the_body_and_odd_paths_need_one() {
        let mut expired = token("old", "old-secret", "*", &[Action::Ship]);
        expired.expires = Some("2020-01-01T00:00:00Z".into());
        let cfg = AuthSection {
            tokens: vec![
                token("orders-agent", "ship-secret", "orders", &[Action::Ship]),
                token("reader", "read-secret", "*", &[Action::Read]),
                token("ops", "admin-secret", "*", &[Action::Admin]),
                expired,
            ],
            ..AuthSection::default()
        };
        let gate = Arc::new(Gate {
            auth: Auth::from_config(&cfg).unwrap(),
            audit: None,
            transport: Transport::Tls,
        });
        let app = router(ingest(), gate, 1 << 20, 4, Duration::from_secs(600));
        let chunk = "/v1/streams/orders/snapshots/1796235494312/chunks/1";
        let manifest = "/v1/streams/orders/snapshots/1796235494312/manifest";
        let other = "/v1/streams/billing/snapshots/1796235494312/chunks/1";
        let encoded = "/v1/streams/%62illing/snapshots/1796235494312/chunks/1";
        let invalid = "/v1/streams/ORDERS/snapshots/1796235494312/chunks/1";
        let cases = [
            ("read-secret", "POST", SEGMENTS_PATH, StatusCode::FORBIDDEN),
            ("admin-secret", "POST", SEGMENTS_PATH, StatusCode::FORBIDDEN),
            ("read-secret", "PUT", chunk, StatusCode::FORBIDDEN),
            ("admin-secret", "PUT", manifest, StatusCode::FORBIDDEN),
            ("ship-secret", "PUT", other, StatusCode::FORBIDDEN),
            ("ship-secret", "PUT", encoded, StatusCode::FORBIDDEN),
            ("ship-secret", "PUT", invalid, StatusCode::BAD_REQUEST),
            (
                "old-secret",
                "POST",
                SEGMENTS_PATH,
                StatusCode::UNAUTHORIZED,
            ),
        ];
        for (secret, method, uri, want) in cases {
            let answer = tokio::time::timeout(
                Duration::from_secs(60),
                app.clone().oneshot(endless(secret, method, uri)),
            )
            .await
            .unwrap_or_else(|_| panic!("{secret} {method} {uri} waited for its body"))
            .unwrap();
            assert_eq!(answer.status(), want, "{secret} {method} {uri}");
        }
        let (status, body) =
            send_as(&app, Some("old-secret"), "GET", "/v1/limits", Bytes::new()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("token old has expired"), "{body}");
        for odd in [
            "/healthz/",
            "/%68ealthz",
            "/healthz/../metrics",
            "//healthz",
        ] {
            let (status, _) = send(&app, "GET", odd, Bytes::new()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{odd} is not /healthz");
        }
    }

    #[tokio::test]
    async fn a_client_gone_mid_upload_and_a_body_over_the_limit_are_audited() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let audit = Audit::open(&log, 1 << 20, Arc::default()).unwrap();
        let gate = Arc::new(Gate {
            auth: Auth::from_config(&AuthSection {
                tokens: vec![token(
                    "orders-agent",
                    "ship-secret",
                    "orders",
                    &[Action::Ship],
                )],
                ..AuthSection::default()
            })
            .unwrap(),
            audit: Some(audit.clone()),
            transport: Transport::Tls,
        });
        let app = router(ingest(), gate, 1 << 20, 4, Duration::from_secs(600));
        let chunk = "/v1/streams/orders/snapshots/1796235494312/chunks/1";
        // The body never comes, so the request cannot be answered: giving up on it drops
        // the request's future, as the server does when the client's connection closes.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(200),
            app.clone().oneshot(endless("ship-secret", "PUT", chunk)),
        )
        .await;
        assert!(gave_up.is_err(), "answered without a body");
        assert!(audit.flush(Duration::from_secs(30)));
        let text = std::fs::read_to_string(&log).unwrap();
        let entry: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(entry["status"], 499, "{text}");
        assert_eq!(entry["token"], "orders-agent");
        assert_eq!(entry["stream"], "orders");
        assert_eq!(entry["request"], format!("PUT {chunk}"));

        let big = Bytes::from(vec![0u8; (1 << 20) + 1]);
        let (status, _) = send_as(&app, Some("ship-secret"), "PUT", chunk, big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(audit.flush(Duration::from_secs(30)));
        let text = std::fs::read_to_string(&log).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["status"], 413, "{text}");
        assert_eq!(last["seq"], 1, "{text}");
        assert!(
            last["error"]
                .as_str()
                .is_some_and(|e| e.contains("Payload Too Large")),
            "the HTTP layer's refusal has its reason: {text}"
        );
    }

    #[test]
    fn an_open_gate_warns_of_everything_it_goes_without() {
        let said = open_gate().status(false);
        assert_eq!(said.transport, Transport::PlainHttp);
        assert!(!said.tokens_required && !said.audited);
        let all = said.warnings.join("\n");
        for key in [
            "server.insecure_plain_http",
            "auth.insecure_no_auth",
            "auth.audit_log",
        ] {
            assert!(all.contains(key), "{key}: {all}");
        }
    }

    #[tokio::test]
    async fn uploads_are_answered_with_the_status_the_table_promises() {
        let st = ingest();
        let app = router(st.clone(), open_gate(), 1 << 20, 4, Duration::from_secs(5));
        let first = segment(4, 90, b"one");
        let (status, _) = send(&app, "POST", SEGMENTS_PATH, first.clone()).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = send(&app, "POST", SEGMENTS_PATH, first).await;
        assert_eq!(status, StatusCode::OK, "an identical re-send: {body}");
        let (status, body) = send(&app, "POST", SEGMENTS_PATH, segment(4, 90, b"two")).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "other bytes at the same start: {body}"
        );
        let (status, body) = send(&app, "POST", SEGMENTS_PATH, segment(50, 120, b"x")).await;
        assert_eq!(status, StatusCode::CONFLICT, "an overlap: {body}");
        let (status, body) = send(&app, "POST", SEGMENTS_PATH, Bytes::from_static(b"junk")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "not a segment: {body}");
        let big = Bytes::from(vec![0u8; (1 << 20) + 1]);
        let (status, _) = send(&app, "POST", SEGMENTS_PATH, big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

        let (status, body) = send(&app, "GET", "/v1/streams/orders", Bytes::new()).await;
        assert_eq!(status, StatusCode::OK);
        let head: StreamHead = serde_json::from_str(&body).unwrap();
        assert_eq!(head.segments, 1);
        assert_eq!(head.end.as_deref(), Some("mysql-bin.000001:90"));
        let (status, _) = send(&app, "GET", "/v1/streams/no%20such", Bytes::new()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "a name outside the grammar"
        );
        let (status, _) = send(&app, "GET", "/healthz", Bytes::new()).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn every_error_maps_to_its_status() {
        let cases = [
            (
                ShipperError::BadRequest("x".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                ShipperError::BadSnapshot("x".into()),
                StatusCode::BAD_REQUEST,
            ),
            (ShipperError::Conflict("x".into()), StatusCode::CONFLICT),
            (
                ShipperError::Unauthorized("x".into()),
                StatusCode::UNAUTHORIZED,
            ),
            (ShipperError::Forbidden("x".into()), StatusCode::FORBIDDEN),
            (
                ShipperError::Internal("x".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                ShipperError::Tls("x".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                ShipperError::Restore("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ShipperError::Gap("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ShipperError::Interrupted("x".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                ShipperError::Store("x".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                ShipperError::StoreConfig("x".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (e, want) in cases {
            let said = e.to_string();
            assert_eq!(e.into_response().status(), want, "{said}");
        }
    }
}
