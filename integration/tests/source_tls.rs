//! TLS to the databases against real mariadbd servers whose accounts are `REQUIRE SSL`:
//! `[source.tls]` with `ssl-mode`'s meanings on the binlog connection, the snapshot
//! replica's connection and the dump tool alike, and a restore's `--target` URL with
//! `ssl-mode` and `ssl-ca`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    assert_stored_exactly_and_verified, run_snapshot, settings, shipper_cli, wait_caught_up,
};
use logferry_integration::logferry::{gen_certs, Agent, Shipper};
use logferry_integration::mariadb::{MariaDb, Options};
use logferry_integration::{wait_for, workload};
use mysql_async::prelude::Queryable;

/// mariadbd options serving TLS with the server certificate in `dir`.
fn tls_options(dir: &Path, server_id: u32) -> Options {
    Options {
        server_id,
        extra: vec![
            format!("--ssl-cert={}", dir.join("shipper.pem").display()),
            format!("--ssl-key={}", dir.join("shipper.key").display()),
            format!("--ssl-ca={}", dir.join("ca.pem").display()),
        ],
        ..Options::default()
    }
}

fn tls_line(mode: &str, ca: Option<&Path>) -> String {
    match ca {
        Some(ca) => format!("tls = {{ mode = \"{mode}\", ca = \"{}\" }}", ca.display()),
        None => format!("tls = {{ mode = \"{mode}\" }}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binlog_and_the_snapshot_travel_over_tls_as_source_tls_says() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let db_certs = tmp.path().join("db-certs");
    gen_certs(&db_certs)?;
    let stranger = tmp.path().join("other-ca");
    gen_certs(&stranger)?;
    let db = MariaDb::start(tls_options(&db_certs, 1)).await?;
    db.conn()
        .await?
        .query_drop("SET sql_log_bin = 0; ALTER USER 'logferry'@'%' REQUIRE SSL")
        .await?;
    let mut c = db.conn().await?;
    let shipper = Shipper::start(&tmp.path().join("shipper")).await?;

    // TLS off: the account refuses the login, and the agent says where to look.
    let mut s = settings(&db, &shipper);
    s.source_extra = tls_line("disabled", None);
    let mut plain = Agent::start(&tmp.path().join("plain"), &s)?;
    plain.wait_exit(Duration::from_secs(60)).await?;
    let said = plain.log_text();
    assert!(said.contains("source.tls.mode"), "{said}");

    // A CA that did not sign the server's certificate: refused, and said.
    s.source_extra = tls_line("verify_identity", Some(&stranger.join("ca.pem")));
    let mut wrong = Agent::start(&tmp.path().join("wrong"), &s)?;
    wait_for(
        "the refused certificate in the log",
        Duration::from_secs(60),
        || async {
            let log = wrong.log_text();
            Ok(log.contains("UnknownIssuer").then_some(()))
        },
    )
    .await
    .map_err(|e| e.context(wrong.log_text()))?;
    wrong.kill9();
    assert!(
        !shipper.store_dir.join("streams").exists(),
        "nothing was read over an unchecked connection"
    );

    // The right CA and the host checked: everything arrives, and a snapshot is taken from
    // a replica whose snapshot account is REQUIRE SSL too (its connection and the dump).
    let replica = MariaDb::start_replica_with(&db, tls_options(&db_certs, 2)).await?;
    let grants = logferry_config::agent::SNAPSHOT_GRANTS;
    replica
        .conn()
        .await?
        .query_drop(format!(
            "SET sql_log_bin = 0; CREATE USER 'logferry_snapshot'@'%' IDENTIFIED BY 'snap' REQUIRE SSL; {grants}"
        ))
        .await?;
    s.source_extra = tls_line("verify_identity", Some(&db_certs.join("ca.pem")));
    s.extra_toml = format!(
        "[source.snapshot]\nreplica_url = \"mysql://logferry_snapshot:snap@127.0.0.1:{}\"\nschedule = \"0 0 1 1 *\"\n",
        replica.port
    );
    let agent = Agent::start(&tmp.path().join("agent"), &s)?;
    workload::create_schema(&mut c).await?;
    workload::run(&mut c, 0, 200).await?;
    wait_caught_up(&db, &shipper, &agent).await?;
    let events = assert_stored_exactly_and_verified(&db, &shipper, tmp.path())?;
    assert!(events > 500, "the workload was shipped: {events} events");
    run_snapshot(&agent, "snapshot.log", Duration::from_secs(120))?;
    workload::run(&mut c, 200, 300).await?;
    wait_caught_up(&db, &shipper, &agent).await?;

    // A restore into a target whose restoring account is REQUIRE SSL: refused without TLS,
    // exact with the URL's ssl-mode and ssl-ca.
    let target = MariaDb::start(Options {
        log_bin: false,
        ..tls_options(&db_certs, 3)
    })
    .await?;
    target
        .conn()
        .await?
        .query_drop(
            "CREATE USER 'restorer'@'%' IDENTIFIED BY 'rpw' REQUIRE SSL; \
             GRANT ALL PRIVILEGES ON *.* TO 'restorer'@'%' WITH GRANT OPTION",
        )
        .await?;
    let restore = |query: String| {
        let url = format!("mysql://restorer:rpw@127.0.0.1:{}?{query}", target.port);
        shipper_cli(&[
            "restore",
            "--store",
            &shipper.store_url(),
            "--stream",
            common::STREAM,
            "--to",
            "latest",
            "--target",
            &url,
        ])
    };
    let (code, out) = restore("ssl-mode=DISABLED".into())?;
    assert_ne!(code, 0, "a restore without TLS got in: {out}");
    assert!(
        out.contains("Access denied"),
        "refused for its account's REQUIRE SSL: {out}"
    );
    let (code, out) = restore(format!(
        "ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        db_certs.join("ca.pem").display()
    ))?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        workload::checksums(&mut target.conn().await?).await?,
        workload::checksums(&mut c).await?,
        "the restore over TLS is exact: {out}"
    );
    Ok(())
}
