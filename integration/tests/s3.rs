//! The shipper's S3 path against a real S3-protocol server (moto_server, started privately).

mod common;

use std::time::{Duration, Instant};

use common::{segment, settings, STREAM};
use logferry_integration::logferry::{bearer, Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::s3::S3Server;
use logferry_integration::workload;
use mysql_async::prelude::Queryable;

/// A shipper that also accepts segments in clear.
const PLAINTEXT: &[(&str, &str)] = &[("LOGFERRY__ENCRYPTION__INSECURE_PLAINTEXT", "true")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_ships_into_s3_and_verifies_from_the_bucket() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let s3 = S3Server::start().await?;
    s3.create_bucket("logferry").await?;
    let db = MariaDb::start(Options::default()).await?;
    // Its agent encrypts; the hand-made segments below are in clear.
    let shipper = Shipper::start_s3(tmp.path(), &s3, "logferry", PLAINTEXT).await?;
    let agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;

    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 200).await?;
    c.query_drop("FLUSH BINARY LOGS").await?;
    workload::run(&mut c, 200, 300).await?;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (file, pos) = db.master_status().await?;
        let end = shipper.head(STREAM).await?.end.unwrap_or_default();
        if end.starts_with(&format!("{file}:{pos}")) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "not caught up: {end} vs {file}:{pos}\n{}\n{}",
            agent.log_text(),
            shipper.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out = logferry_integration::logferry::shipper_command()?
        .args(["verify", "--store", "s3://logferry"])
        .envs(s3.env())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("OK stream {STREAM}")), "{text}");

    // Create-only puts hold on S3 itself: a second shipper on the same bucket, whose catalog
    // has not seen the segment, must learn from the store's conditional put that it exists.
    let other = Shipper::start_s3(&tmp.path().join("second"), &s3, "logferry", PLAINTEXT).await?;
    let first = segment(4, b"s3 first").bytes().to_vec();
    let cases = [
        (&shipper, first.clone(), 201),
        (&other, first, 200),
        (&other, segment(4, b"s3 other").bytes().to_vec(), 409),
    ];
    for (to, body, want) in cases {
        let r = to
            .client()?
            .post(format!("{}/v1/segments", to.url()))
            .header("authorization", bearer())
            .body(body)
            .send()
            .await?;
        assert_eq!(
            r.status().as_u16(),
            want,
            "{}: {}",
            to.url(),
            r.text().await?
        );
    }
    Ok(())
}

/// A missing bucket is said once, in words: the store, the server's answer, the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_named_once_with_the_fix() -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    let out = logferry_integration::logferry::shipper_command()?
        .args(["verify", "--store", "s3://no-such-bucket"])
        .envs(s3.env())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_eq!(text.matches("NoSuchBucket").count(), 1, "{text}");
    assert!(text.contains("s3://no-such-bucket"), "{text}");
    assert!(text.contains("create the bucket"), "{text}");
    assert!(!text.contains("<?xml"), "{text}");
    Ok(())
}

/// The store suite every backend passes (the shipper's unit tests run it on a local
/// directory and in memory) against the S3-protocol server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_behaves_as_the_others() -> anyhow::Result<()> {
    let s3 = S3Server::start().await?;
    s3.create_bucket("conformance").await?;
    let cfg = logferry_config::StoreConfig {
        url: "s3://conformance".into(),
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".into()),
        allow_http: true,
    };
    let [(_, key_id), (_, secret), _] = logferry_integration::s3::S3_ENV;
    let store = logferry_shipper::storage::Store::open_with_keys(&cfg, key_id, secret)?;
    logferry_shipper::store_conformance::check(&store, "suite")
        .await
        .map_err(anyhow::Error::msg)
}
