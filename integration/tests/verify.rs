//! `logferry-shipper verify` finds damage in the store and exits non-zero.

mod common;

use common::{settings, shipper_cli, wait_caught_up, STREAM};
use logferry_integration::logferry::{Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::{store, workload};
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_and_missing_segment_are_reported() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db = MariaDb::start(Options::default()).await?;
    let shipper = Shipper::start(tmp.path()).await?;
    let agent = Agent::start(&tmp.path().join("agent"), &settings(&db, &shipper))?;
    let mut c = db.conn().await?;
    workload::create_schema(&mut c).await?;
    for batch in 0..6 {
        workload::run(&mut c, batch * 50, batch * 50 + 50).await?;
        c.query_drop("FLUSH BINARY LOGS").await?;
        // Each batch stored before the next: several segments, one per batch at least.
        wait_caught_up(&db, &shipper, &agent).await?;
    }
    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 0, "a clean store verifies: {out}");

    let segs = store::segments(&shipper.store_dir, STREAM)?;
    assert!(
        segs.len() >= 4,
        "need several segments, have {}",
        segs.len()
    );
    let dir = shipper
        .store_dir
        .join("streams")
        .join(STREAM)
        .join("segments");

    let victim = dir.join(&segs[1].0);
    let mut bytes = std::fs::read(&victim)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&victim, &bytes)?;
    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("CORRUPT") && out.contains(&segs[1].0),
        "verify names the flipped object: {out}"
    );

    // An export streams segment by segment: it stops at the flipped one, names it, says
    // how far it got, and what it wrote before it is whole.
    let from = segs[0].1.header.meta.start.to_string();
    let end = segs[0].1.header.meta.end.as_mysql()?;
    let first_end = format!("{}:{}", end.file(), end.offset);
    let export_dir = tmp.path().join("export");
    let (code, out) = shipper_cli(&[
        "export",
        "--store",
        &shipper.store_url(),
        "--stream",
        STREAM,
        "--from",
        &from,
        "--to",
        "latest",
        "--dir",
        &export_dir.display().to_string(),
    ])?;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&segs[1].0) && out.contains(&format!("everything up to {first_end}")),
        "the error names the segment and how far the export got: {out}"
    );
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&export_dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name.filter(|n| n.starts_with("mysql-bin.")) {
            files.push((name, std::fs::read(&path)?));
        }
    }
    // Exactly the first segment's events, byte for byte (its export on its own).
    let written = store::events_of_files(&files)?;
    let first = store::events_of_files(&store::export_files(&segs[..1])?)?;
    assert!(!first.is_empty());
    assert_eq!(
        written.len(),
        first.len(),
        "the export holds the first segment's events, no more, no fewer"
    );
    for (i, (a, b)) in written.iter().zip(&first).enumerate() {
        assert!(
            a.file == b.file && a.log_pos == b.log_pos && a.bytes == b.bytes,
            "event {i} differs: {}:{} against {}:{}",
            a.file,
            a.log_pos,
            b.file,
            b.log_pos
        );
    }

    std::fs::remove_file(dir.join(&segs[2].0))?;
    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("GAP") && out.contains(&segs[3].0),
        "verify reports the gap before the next segment: {out}"
    );
    Ok(())
}
