//! The HTTP API: segment uploads from agents, stream state, health and metrics.
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/v1/segments` | 201 stored, 200 identical re-send, 400 invalid, 409 conflict, 413 too large, 503 store down |
//! | GET | `/v1/limits` | [`Limits`]: the largest segment accepted |
//! | GET | `/v1/streams` | names of stored streams |
//! | GET | `/v1/streams/<stream>` | [`StreamHead`]: segment count and first/last position |
//! | PUT | `/v1/streams/<s>/snapshots/<id>/chunks/<n>` | 201/200; 400 when the `x-logferry-sha256` header does not match; 409 other bytes stored |
//! | PUT | `/v1/streams/<s>/snapshots/<id>/manifest` | 201/200; 400 unless every listed chunk is stored |
//! | GET | `/healthz` | 200 when the store answers |
//! | GET | `/metrics` | Prometheus text |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use logferry_common::wire::{ErrorBody, Limits, StreamHead, LIMITS_PATH, SEGMENTS_PATH};
use logferry_common::StreamId;
use tokio::sync::Semaphore;

use crate::catalog::ChainEnd;
use crate::error::ShipperError;
use crate::ingest::Ingest;
use crate::snapshots::{self, Accepted, SHA256_HEADER};

/// Builds the router over shared ingest state: bodies up to `max_body` bytes, and at most
/// `max_uploads` upload bodies (segments, snapshot chunks) received at once, so that the
/// memory they take is bounded whatever the number of agents; an upload that takes longer
/// than `upload_timeout` (a sender gone mid-body) is answered 408 and frees its place.
pub fn router(
    state: Arc<Ingest>,
    max_body: usize,
    max_uploads: usize,
    upload_timeout: Duration,
) -> Router {
    let permits = Arc::new(Semaphore::new(max_uploads.max(1)));
    let uploads = Router::new()
        .route(SEGMENTS_PATH, post(put_segment))
        .route(
            "/v1/streams/{stream}/snapshots/{id}/chunks/{index}",
            put(put_chunk),
        )
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let permits = permits.clone();
            async move {
                // Taken before the body is read; held until the answer is sent.
                let Ok(_permit) = permits.acquire_owned().await else {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                };
                match tokio::time::timeout(upload_timeout, next.run(req)).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        let error = format!(
                            "the upload was not received and stored within {} ms (server.upload_timeout_ms)",
                            upload_timeout.as_millis()
                        );
                        tracing::warn!(%error, "upload timed out");
                        (StatusCode::REQUEST_TIMEOUT, Json(ErrorBody { error })).into_response()
                    }
                }
            }
        }));
    Router::new()
        .merge(uploads)
        .route(LIMITS_PATH, get(limits))
        .route("/v1/streams", get(list_streams))
        .route("/v1/streams/{stream}", get(stream_head))
        .route(
            "/v1/streams/{stream}/snapshots/{id}/manifest",
            put(put_manifest),
        )
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn put_segment(State(st): State<Arc<Ingest>>, body: Bytes) -> Response {
    match st.segment(body).await {
        Ok(ack) if ack.duplicate => (StatusCode::OK, Json(ack)).into_response(),
        Ok(ack) => (StatusCode::CREATED, Json(ack)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn put_chunk(
    State(st): State<Arc<Ingest>>,
    Path((stream, id, index)): Path<(String, String, u32)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stream = match StreamId::new(&stream) {
        Ok(s) => s,
        Err(e) => return ShipperError::BadRequest(e.to_string()).into_response(),
    };
    let sha = headers.get(SHA256_HEADER).and_then(|v| v.to_str().ok());
    accepted(snapshots::put_chunk(&st.store, &stream, &id, index, sha, body).await)
}

async fn put_manifest(
    State(st): State<Arc<Ingest>>,
    Path((stream, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let stream = match StreamId::new(&stream) {
        Ok(s) => s,
        Err(e) => return ShipperError::BadRequest(e.to_string()).into_response(),
    };
    accepted(snapshots::put_manifest(&st.store, &stream, &id, body).await)
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

async fn list_streams(State(st): State<Arc<Ingest>>) -> Json<Vec<String>> {
    Json(
        st.catalog
            .stream_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
}

async fn stream_head(State(st): State<Arc<Ingest>>, Path(stream): Path<String>) -> Response {
    let stream = match StreamId::new(&stream) {
        Ok(s) => s,
        Err(e) => return ShipperError::BadRequest(e.to_string()).into_response(),
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

async fn metrics(State(st): State<Arc<Ingest>>) -> String {
    st.metrics.render()
}

impl IntoResponse for ShipperError {
    fn into_response(self) -> Response {
        let status = match &self {
            ShipperError::Format(_)
            | ShipperError::BadSnapshot(_)
            | ShipperError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ShipperError::Internal(_) | ShipperError::Corrupt { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ShipperError::Conflict(_) => StatusCode::CONFLICT,
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
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{ingest, segment};
    use axum::body::Body;
    use tower::ServiceExt;

    async fn send(app: &Router, method: &str, uri: &str, body: Bytes) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body))
            .unwrap();
        let answer = app.clone().oneshot(req).await.unwrap();
        let status = answer.status();
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn uploads_are_answered_with_the_status_the_table_promises() {
        let st = ingest();
        let app = router(st.clone(), 1 << 20, 4, Duration::from_secs(5));
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
                ShipperError::Internal("x".into()),
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
