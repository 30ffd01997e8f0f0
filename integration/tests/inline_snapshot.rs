//! A snapshot a source hands over inside its change stream (as a Redis full resync sends
//! an RDB) is stored through the agent's inline-snapshot route into a real shipper: chunks
//! that read back to the same bytes, and a manifest naming them; parts out of order are
//! refused.

use std::sync::Arc;
use std::time::Duration;

use logferry_agent::client::{ClientTls, ShipperClient};
use logferry_agent::encryption::Encryption;
use logferry_agent::metrics::Metrics;
use logferry_agent::pipeline::snapshots::InlineSnapshots;
use logferry_agent::sources::SnapshotPart;
use logferry_common::crypto::MasterKey;
use logferry_common::keys::{chunk_key, manifest_key};
use logferry_common::snapshot::{
    open_chunk, ChunkSealing, MysqlSnapshot, SnapshotContent, SnapshotManifest,
};
use logferry_common::{BinlogPos, Position, StreamId};
use logferry_integration::logferry::{test_key, Shipper, TEST_KEY_ID};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_snapshot_is_stored_in_chunks_with_its_manifest() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let shipper = Shipper::start(tmp.path()).await?;
    let client = ShipperClient::new(
        &shipper.url(),
        Duration::from_secs(30),
        Some(logferry_integration::logferry::TEST_TOKEN),
        &ClientTls {
            ca_file: Some(shipper.ca_file()),
            identity: None,
        },
    )?;
    let stream = StreamId::new("inline")?;
    let master = MasterKey::from_text(
        TEST_KEY_ID,
        &std::fs::read_to_string(test_key()?)?,
        "the test key",
    )?;
    let client = client.with_encryption(Some(Arc::new(Encryption::new(&stream, &master, None)?)));
    let metrics = Arc::new(Metrics::new("test"));
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let mut inline = InlineSnapshots::new(client, stream.clone(), metrics.clone(), shutdown);

    // 20 MiB in 64 KiB parts: more than two chunks of the default 8 MiB.
    let data: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let position = Position::Mysql(BinlogPos::new("mysql-bin.000001", 4)?);
    assert_eq!(inline.part(SnapshotPart::Begin).await?, None);
    for piece in data.chunks(64 * 1024) {
        inline
            .part(SnapshotPart::Data(bytes::Bytes::copy_from_slice(piece)))
            .await?;
    }
    let content = SnapshotContent::Mysql(MysqlSnapshot {
        replica: "inline".into(),
        dump_tool: "test".into(),
        tables: Vec::new(),
        users: false,
        accounts_left_out: Vec::new(),
    });
    let stored_at = inline
        .part(SnapshotPart::End {
            position: position.clone(),
            content: content.clone(),
        })
        .await?;
    assert_eq!(
        stored_at,
        Some(position.clone()),
        "the chain continues at the snapshot"
    );
    assert_eq!(metrics.inline_snapshots.get(), 1);

    let store = std::path::Path::new(&shipper.store_url()).to_owned();
    let ids: Vec<String> =
        std::fs::read_dir(store.join(logferry_common::keys::snapshots_prefix(&stream)))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
    assert_eq!(ids.len(), 1, "one snapshot stored: {ids:?}");
    let manifest =
        SnapshotManifest::from_json(&std::fs::read(store.join(manifest_key(&stream, &ids[0])))?)?;
    assert_eq!(manifest.position()?, position);
    assert_eq!(manifest.content, content);
    assert!(
        manifest.chunks.len() >= 3,
        "{} chunks",
        manifest.chunks.len()
    );
    // Sealed under the agent's epoch key: the manifest's MAC holds, and every chunk opens.
    let epoch = manifest
        .key_ref()?
        .expect("the snapshot is encrypted")
        .epoch;
    let key = logferry_integration::store::epoch_key(&store, &stream, &epoch)?;
    manifest.check_mac(&key)?;
    let sealing = ChunkSealing {
        key: &key,
        snapshot: &manifest.id,
    };
    let mut back = Vec::new();
    for c in &manifest.chunks {
        let stored = std::fs::read(store.join(chunk_key(&stream, &manifest.id, c.index)))?;
        back.extend(open_chunk(&stored, c, Some(&sealing))?);
    }
    assert!(back == data, "the stored chunks read back to other bytes");

    // A part without a snapshot open is the source's protocol error, not stored.
    let err = inline
        .part(SnapshotPart::Data(bytes::Bytes::from_static(b"stray")))
        .await
        .expect_err("data outside a snapshot must be refused");
    assert!(err.to_string().contains("out of order"), "{err}");
    Ok(())
}
