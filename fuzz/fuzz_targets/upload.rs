//! Any bytes through the shipper's HTTP upload routes (segment, snapshot chunk, manifest),
//! over an in-memory store: answered, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use logferry_common::DecodeLimits;
use logferry_config::shipper::AuthSection;
use logferry_shipper::api::{router, Gate, Transport};
use logferry_shipper::auth::Auth;
use logferry_shipper::catalog::Catalog;
use logferry_shipper::ingest::Ingest;
use logferry_shipper::storage::Store;
use tower_service::Service;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let (method, uri) = match route % 3 {
        0 => ("POST", "/v1/segments".to_owned()),
        1 => (
            "PUT",
            format!("/v1/streams/db{}/snapshots/1796235494312/chunks/{}", route % 7, route),
        ),
        _ => (
            "PUT",
            "/v1/streams/db1/snapshots/1796235494312/manifest".to_owned(),
        ),
    };
    runtime().block_on(async {
        let ingest = Arc::new(Ingest {
            store: Store::in_memory(),
            catalog: Catalog::default(),
            metrics: Default::default(),
            limits: DecodeLimits::for_segments(1 << 20),
            verify_payload: true,
            keys: logferry_shipper::capsules::UploadKeys::new(true),
        });
        let auth = Auth::from_config(&AuthSection {
            insecure_no_auth: true,
            ..AuthSection::default()
        })
        .expect("open auth");
        let gate = Arc::new(Gate {
            auth,
            audit: None,
            transport: Transport::PlainHttp,
        });
        let mut app = router(ingest, gate, 1 << 20, 4, Duration::from_secs(5));
        // The body's own sha256 most of the time, so that chunks get past their hash check.
        let sha = if route & 0x80 == 0 {
            hex_sha256(body)
        } else {
            "00".to_owned()
        };
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-logferry-sha256", sha)
            .body(Body::from(body.to_vec()))
            .expect("a request");
        let _ = app.call(req).await;
    });
});
