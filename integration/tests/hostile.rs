//! Hostile clients against the real shipper: slow-loris heads, one host opening more
//! connections than its share, oversized heads and bodies, and traversal names. Each is
//! refused within its limit, nothing lands outside the store, and other agents are served
//! all the while.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::segment;
use logferry_integration::logferry::{bearer, Shipper};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (or answers), within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> anyhow::Result<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the shipper kept the connection open for {limit:?}"))?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

async fn upload_from(shipper: &Shipper, from: IpAddr, start: u64) -> anyhow::Result<u16> {
    let http = reqwest::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .build()?;
    let r = http
        .post(format!("{}/v1/segments", shipper.url()))
        .header("authorization", bearer())
        .body(segment(start, b"from another host").bytes().to_vec())
        .send()
        .await?;
    Ok(r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_a_greedy_peer_are_held_to_their_limits_while_others_are_served(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // Plain HTTP, so that the test can write partial requests by hand.
    let shipper = Shipper::start_plain_http(
        tmp.path(),
        &[
            ("LOGFERRY__SERVER__MAX_CONNECTIONS_PER_PEER", "4"),
            ("LOGFERRY__SERVER__HEADER_TIMEOUT_MS", "5000"),
            // The hand-made segments and manifests here are in clear.
            ("LOGFERRY__ENCRYPTION__INSECURE_PLAINTEXT", "true"),
        ],
    )
    .await?;
    let addr = ("127.0.0.1", shipper.port);
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"POST /v1/segments HTTP/1.1\r\nhost: x\r\n")
            .await?;
        slow.push(s);
    }
    // The four hold every place of 127.0.0.1: a fifth, with a whole request, is closed
    // unanswered (the write may already find it closed)...
    let mut fifth = TcpStream::connect(addr).await?;
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let said = closed_within(&mut fifth, Duration::from_secs(30)).await?;
    assert!(said.is_empty(), "the fifth connection was served: {said}");
    // ... while another host is served.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(upload_from(&shipper, other, 4).await?, 201);
    // The slow heads are closed after server.header_timeout_ms (5 s here; hyper's own
    // default is 30 s), which frees their places.
    for s in &mut slow {
        closed_within(s, Duration::from_secs(25)).await?;
    }
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(upload_from(&shipper, local, 100).await?, 201);
    let log = shipper.log_text();
    assert!(log.contains("server.max_connections_per_peer"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_and_traversal_names_are_refused() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let shipper = Shipper::start_with_env(
        tmp.path(),
        &[
            ("LOGFERRY__SERVER__MAX_SEGMENT_BYTES", "1048576"),
            // The hand-made segments and manifests here are in clear.
            ("LOGFERRY__ENCRYPTION__INSECURE_PLAINTEXT", "true"),
        ],
    )
    .await?;
    let http = shipper.client()?;
    let base = shipper.url();

    // A 64 KiB head is answered 431 once 16 KiB of it are read; the client may then find
    // the connection closed while it still writes the rest, the same refusal from its side.
    let huge_header = "x".repeat(64 * 1024);
    let r = http
        .get(format!("{base}/v1/limits"))
        .header("authorization", bearer())
        .header("x-padding", &huge_header)
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status().as_u16(), 431, "a 64 KiB head"),
        Err(e) => assert!(e.is_request(), "a 64 KiB head: {e}"),
    }

    // An oversized body is answered 413 from its Content-Length, before it is read; the
    // client may then find the connection closed while it still sends, which is the same
    // refusal seen from its side.
    let big = http
        .post(format!("{base}/v1/segments"))
        .header("authorization", bearer())
        .body(vec![0u8; (1 << 20) + 4096])
        .send()
        .await;
    assert!(
        refused_as_too_large(big),
        "a body over server.max_segment_bytes"
    );
    let put_manifest = |body: Vec<u8>| {
        http.put(format!(
            "{base}/v1/streams/db1/snapshots/1796235494312/manifest"
        ))
        .header("authorization", bearer())
        .body(body)
        .send()
    };
    let manifest = put_manifest(vec![b' '; 17 * 1024 * 1024]).await;
    assert!(refused_as_too_large(manifest), "a manifest over 16 MiB");
    // Over the segment limit but within the manifest's: read, and refused as no manifest.
    // On a client of its own: the refusal above closed its connection, which a pooled
    // client could still pick for this request and find broken mid-body.
    let r = shipper
        .client()?
        .put(format!(
            "{base}/v1/streams/db1/snapshots/1796235494312/manifest"
        ))
        .header("authorization", bearer())
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await?;
    assert_eq!(
        r.status().as_u16(),
        400,
        "a 2 MiB manifest is the manifest limit's"
    );

    // Bodies that would be accepted under a valid name: only the name refuses them.
    let chunk = b"SELECT 666".to_vec();
    let chunk_sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&chunk)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let manifest = br#"{"kind":"mysql","stream":"db1","id":"1796235494312","position":"mysql-bin.000001:4","taken_at_ms":1,"replica":"r:1","dump_tool":"d","chunks":[],"tables":[]}"#;

    for path in [
        "/v1/streams/..%2F..%2Fetc/snapshots/1796235494312/chunks/1",
        "/v1/streams/db1%00/snapshots/1796235494312/chunks/1",
        "/v1/streams/db1/snapshots/..%2F..%2Fx/chunks/1",
        "/v1/streams/db1/snapshots/1796235494312%2F..%2F..%2Fx/manifest",
        "/v1/streams/.hidden/snapshots/1796235494312/chunks/1",
        "/v1/streams/..%2F..%2Fetc/snapshots/1796235494312/manifest",
    ] {
        let body = if path.ends_with("manifest") {
            manifest.to_vec()
        } else {
            chunk.clone()
        };
        let r = http
            .put(format!("{base}{path}"))
            .header("authorization", bearer())
            .header("x-logferry-sha256", &chunk_sha)
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        assert!(
            status == 400 || status == 404,
            "{path}: {status} {}",
            r.text().await?
        );
    }
    let stored: Vec<_> = walk(&shipper.store_dir);
    assert!(stored.is_empty(), "nothing was stored: {stored:?}");
    let r = http
        .put(format!(
            "{base}/v1/streams/db1/snapshots/1796235494312/chunks/1"
        ))
        .header("authorization", bearer())
        .header("x-logferry-sha256", &chunk_sha)
        .body(chunk.clone())
        .send()
        .await?;
    assert_eq!(
        r.status().as_u16(),
        201,
        "the same chunk under a valid name is stored"
    );
    let r = put_manifest(manifest.to_vec()).await?;
    let status = r.status().as_u16();
    assert_eq!(
        status,
        201,
        "the same manifest under a valid name is stored: {}",
        r.text().await?
    );
    assert!(
        !tmp.path().join("etc").exists() && !tmp.path().join("x").exists(),
        "nothing outside the store"
    );
    // Still serving after all that.
    assert_eq!(shipper.head("db1").await?.segments, 0);
    Ok(())
}

/// 413, or the connection closed under a client still sending what was refused.
fn refused_as_too_large(answer: reqwest::Result<reqwest::Response>) -> bool {
    match answer {
        Ok(r) => r.status().as_u16() == 413,
        Err(e) => e.is_request() || e.is_body(),
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
