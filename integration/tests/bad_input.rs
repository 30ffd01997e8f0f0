//! Bad input gives a clear error that names the problem and the fix, and loses nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{segment, shipper_cli};
use logferry_common::wire::SegmentAck;
use logferry_integration::logferry::{bearer, Agent, AgentSettings, Shipper};
use logferry_integration::mariadb::{MariaDb, Options, REPL_USER};
use logferry_integration::process::workspace_bin;
use logferry_integration::{free_port, wait_for};

/// A shipper that accepts the hand-made segments in clear these tests upload.
const PLAINTEXT: &[(&str, &str)] = &[("LOGFERRY__ENCRYPTION__INSECURE_PLAINTEXT", "true")];

fn agent_check_config(text: &str) -> anyhow::Result<(i32, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text)?;
    let out = Command::new(workspace_bin("logferry-agent")?)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

const GOOD: &str = "[agent]\nstream = \"db1\"\nspool_dir = \"/tmp/x\"\n\n[source]\ntype = \"mysql\"\n\
url = \"mysql://u:p@127.0.0.1:3306\"\nserver_id = 7\n\n[shipper]\nurl = \"https://127.0.0.1:9450\"\n\n\
[encryption]\nkey_id = \"k\"\n[encryption.keys.k]\nfile = \"/etc/logferry/k.key\"\n";

#[test]
fn malformed_configs_name_the_key() -> anyhow::Result<()> {
    let (code, out) = agent_check_config(GOOD)?;
    assert_eq!(code, 0, "{out}");
    let cases = [
        (GOOD.replace("[source]", "[source"), "agent.toml"),
        (
            GOOD.replace("server_id = 7", "server_id = 7\nserverid = 8"),
            "serverid",
        ),
        (
            GOOD.replace("server_id = 7", "server_id = 0"),
            "source.server_id",
        ),
        (
            GOOD.replace("server_id = 7", "server_id = \"seven\""),
            "server_id",
        ),
        (
            GOOD.replace("type = \"mysql\"", "type = \"oracle\""),
            "oracle",
        ),
        (
            GOOD.replace("https://127.0.0.1:9450", "127.0.0.1:9450"),
            "shipper.url",
        ),
        (GOOD.replace("https://", "http://"), "insecure_plain_http"),
        (GOOD.replace("key_id = \"k\"\n", ""), "encryption.key_id"),
        (
            GOOD.replace("/etc/logferry/k.key", "/tmp/x/k.key"),
            "encryption.keys.k.file",
        ),
        (
            GOOD.replace("key_id = \"k\"", "key_id = \"other\""),
            "\"other\" is not among [encryption.keys]",
        ),
    ];
    for (text, needle) in cases {
        let (code, out) = agent_check_config(&text)?;
        assert_eq!(code, 2, "{needle}: {out}");
        assert!(out.contains(needle), "the error names {needle}: {out}");
    }
    let (code, out) = shipper_cli(&["verify", "--store", "ftp://nowhere"])?;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("store.url"), "{out}");
    let parent = tempfile::tempdir()?;
    let missing = parent.path().join("no-such-store");
    for cmd in ["verify", "ls"] {
        let (code, out) = shipper_cli(&[cmd, "--store", &missing.display().to_string()])?;
        assert_ne!(code, 0, "{cmd} of a store that does not exist: {out}");
        assert!(out.contains("does not exist"), "{cmd}: {out}");
    }
    assert!(!missing.exists(), "a read created the store directory");
    Ok(())
}

fn settings(url: String, shipper: &Shipper) -> AgentSettings {
    AgentSettings {
        stream: "db1".into(),
        source_url: url,
        server_id: 1001,
        shipper_url: shipper.url(),
        shipper_extra: shipper.agent_tls_lines(),
        max_age_ms: 200,
        source_extra: String::new(),
        segment_extra: String::new(),
        extra_toml: String::new(),
    }
}

async fn wait_for_log(agent: &Agent, needle: &str) -> anyhow::Result<String> {
    wait_for(needle, Duration::from_secs(30), || async {
        let log = agent.log_text();
        Ok(log.contains(needle).then_some(log))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", agent.log_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_retried_with_a_clear_message() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let shipper = Shipper::start(tmp.path()).await?;
    let port = free_port()?;
    let mut agent = Agent::start(
        &tmp.path().join("a"),
        &settings(format!("mysql://u:p@127.0.0.1:{port}"), &shipper),
    )?;
    wait_for_log(
        &agent,
        &format!("cannot connect to the database at 127.0.0.1:{port}"),
    )
    .await?;
    assert!(
        agent.try_exit()?.is_none(),
        "the agent keeps retrying, it does not exit"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_binlog_off_stop_with_the_fix() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let shipper = Shipper::start(tmp.path()).await?;
    let db = MariaDb::start(Options::default()).await?;
    let url = format!("mysql://{REPL_USER}:wrong@127.0.0.1:{}", db.port);
    let mut agent = Agent::start(&tmp.path().join("a"), &settings(url, &shipper))?;
    let log = wait_for_log(&agent, "agent stopped").await?;
    assert!(
        log.contains("refused the login") && log.contains("source.url"),
        "{log}"
    );
    let status = agent.wait_exit(Duration::from_secs(10)).await?;
    assert!(
        status.is_some_and(|s| !s.success()),
        "the agent exits with an error: {status:?}"
    );

    let off = MariaDb::start(Options::without_binlog(3)).await?;
    let agent = Agent::start(&tmp.path().join("b"), &settings(off.repl_url(), &shipper))?;
    let log = wait_for_log(&agent, "agent stopped").await?;
    assert!(
        log.contains("binary logging is off") && log.contains("--log-bin"),
        "{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_uploads_are_refused_and_the_store_stays_clean() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // Hand-made segments are in clear: this shipper accepts them (and is told it is
    // refusing them below first).
    let strict = Shipper::start(&tmp.path().join("strict")).await?;
    let (status, text) = {
        let r = strict
            .client()?
            .post(format!("{}/v1/segments", strict.url()))
            .header("authorization", bearer())
            .body(segment(4, b"first").bytes().to_vec())
            .send()
            .await?;
        (r.status().as_u16(), r.text().await?)
    };
    assert_eq!(
        status, 400,
        "a segment in clear is refused by default: {text}"
    );
    assert!(text.contains("not encrypted"), "{text}");
    let shipper = Shipper::start_with_env(tmp.path(), PLAINTEXT).await?;
    let http = shipper.client()?;
    let url = format!("{}/v1/segments", shipper.url());
    let post = |body: Vec<u8>| {
        let req = http.post(&url).header("authorization", bearer()).body(body);
        async move {
            let r = req.send().await?;
            let status = r.status().as_u16();
            anyhow::Ok((status, r.text().await?))
        }
    };
    let good = segment(4, b"first");
    let bytes = good.bytes().to_vec();
    for (what, body) in [
        ("empty", Vec::new()),
        ("text", b"hello shipper".to_vec()),
        ("truncated", bytes[..bytes.len() - 10].to_vec()),
        ("bit flip", {
            let mut b = bytes.clone();
            b[30] ^= 4;
            b
        }),
    ] {
        let (status, text) = post(body).await?;
        assert_eq!(status, 400, "{what}: {text}");
        assert!(
            text.contains("\"error\""),
            "{what}: JSON error body: {text}"
        );
    }
    let (status, text) = post(vec![0u8; 300 * 1024 * 1024]).await?;
    assert_eq!(status, 413, "oversized body: {text}");

    let (status, text) = post(bytes.clone()).await?;
    assert_eq!(status, 201, "{text}");
    let ack: SegmentAck = serde_json::from_str(&text)?;
    assert!(!ack.duplicate);
    let (status, text) = post(bytes.clone()).await?;
    assert_eq!(status, 200, "an identical re-send is acknowledged: {text}");
    let (status, text) = post(segment(4, b"other").bytes().to_vec()).await?;
    assert_eq!(status, 409, "a different segment at the same start: {text}");
    let (status, text) = post(segment(10, b"overlapping").bytes().to_vec()).await?;
    assert_eq!(status, 409, "an overlapping segment: {text}");

    let stored = std::fs::read(shipper.store_dir.join(&ack.key))?;
    assert_eq!(
        stored, bytes,
        "the first segment is kept, never overwritten"
    );
    let (code, out) = shipper_cli(&["verify", "--store", &shipper.store_url()])?;
    assert_eq!(code, 1, "a segment in clear is no green light: {out}");
    assert!(out.contains("UNAUTHENTIC"), "{out}");
    let (code, out) = shipper_cli(&[
        "verify",
        "--insecure-plaintext",
        "--store",
        &shipper.store_url(),
    ])?;
    assert_eq!(code, 0, "only the valid segment is in the store: {out}");
    assert!(out.contains("1 segments"), "{out}");
    for cmd in ["verify", "ls"] {
        let (code, out) = shipper_cli(&[cmd, "--store", &shipper.store_url(), "--stream", "dbl"])?;
        assert_eq!(code, 1, "{cmd} of a mistyped stream: {out}");
        assert!(out.contains("stream dbl has no"), "{cmd}: {out}");
    }
    Ok(())
}

/// A segment whose trailer matches but whose payload does not decompress to its plaintext
/// sha256 (what a faulty agent could send): stored by default, since the shipper checks
/// the trailer that covers every stored byte, and reported by `verify`; refused on upload
/// when `server.verify_payload` is on (set here through its environment override).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_check_on_upload_is_optional_and_verify_catches_a_bad_payload() -> anyhow::Result<()>
{
    use sha2::{Digest, Sha256};
    let mut bad = segment(4, b"a payload that will not match")
        .bytes()
        .to_vec();
    let body_len = bad.len() - 32;
    bad[body_len - 1] ^= 0x55;
    let trailer: [u8; 32] = Sha256::digest(&bad[..body_len]).into();
    bad[body_len..].copy_from_slice(&trailer);

    let tmp = tempfile::tempdir()?;
    let strict = Shipper::start_with_env(
        &tmp.path().join("strict"),
        &[("LOGFERRY__SERVER__VERIFY_PAYLOAD", "true"), PLAINTEXT[0]],
    )
    .await?;
    let relaxed = Shipper::start_with_env(&tmp.path().join("relaxed"), PLAINTEXT).await?;
    let post = |to: &Shipper, body: Vec<u8>| {
        let req = to
            .client()
            .map(|http| http.post(format!("{}/v1/segments", to.url())));
        async move {
            let r = req?
                .header("authorization", bearer())
                .body(body)
                .send()
                .await?;
            let status = r.status().as_u16();
            anyhow::Ok((status, r.text().await?))
        }
    };

    let (status, text) = post(&strict, bad.clone()).await?;
    assert_eq!(status, 400, "verify_payload refuses it: {text}");
    assert!(text.contains("payload") || text.contains("zstd"), "{text}");
    let (code, out) = shipper_cli(&["verify", "--store", &strict.store_url()])?;
    assert_eq!(
        code, 1,
        "nothing was stored, which is no green light: {out}"
    );
    assert!(out.contains("no streams"), "{out}");

    let (status, text) = post(&relaxed, bad).await?;
    assert_eq!(status, 201, "the trailer matches, so it is stored: {text}");
    let (code, out) = shipper_cli(&[
        "verify",
        "--insecure-plaintext",
        "--store",
        &relaxed.store_url(),
    ])?;
    assert_eq!(code, 1, "verify opens every payload: {out}");
    assert!(out.contains("CORRUPT") || out.contains("corrupt"), "{out}");
    Ok(())
}

/// A sender that stops mid-body (its host died) holds an upload place only until
/// `server.upload_timeout_ms` and is answered 408; with one place, the next upload is then
/// stored. (Over plain HTTP, so that the test can write a partial request by hand.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_times_out_and_frees_its_place() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir()?;
    let shipper = Shipper::start_plain_http(
        tmp.path(),
        &[
            ("LOGFERRY__SERVER__MAX_CONCURRENT_UPLOADS", "1"),
            ("LOGFERRY__SERVER__UPLOAD_TIMEOUT_MS", "1500"),
            PLAINTEXT[0],
        ],
    )
    .await?;
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", shipper.port)).await?;
    stalled
        .write_all(
            format!("POST /v1/segments HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-type: application/octet-stream\r\ncontent-length: 100000\r\n\r\npartial", bearer()).as_bytes(),
        )
        .await?;
    // Were the stalled upload's place never freed, this one would wait for ever (the
    // client gives up after 60 s and the test fails).
    let body = segment(4, b"after the stall").bytes().to_vec();
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?
        .post(format!("{}/v1/segments", shipper.url()))
        .header("authorization", bearer())
        .body(body)
        .send()
        .await?;
    assert_eq!(answer.status(), 201, "{}", answer.text().await?);
    let mut reply = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(60), stalled.read(&mut reply)).await??;
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    Ok(())
}

/// Without a valid token nothing is stored, every refusal is in the audit log, and an agent
/// sent off with the wrong token stops saying which setting to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused_and_audited() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let shipper = Shipper::start(tmp.path()).await?;
    let http = shipper.client()?;
    let url = format!("{}/v1/segments", shipper.url());
    let body = segment(4, b"unauthenticated").bytes().to_vec();
    for auth in [None, Some("Bearer lft_wrong".to_owned())] {
        let mut req = http.post(&url).body(body.clone());
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await?;
        assert_eq!(r.status().as_u16(), 401, "{auth:?}: {}", r.text().await?);
    }
    let chunk = format!(
        "{}/v1/streams/db1/snapshots/1796235494312/chunks/1",
        shipper.url()
    );
    let r = http.put(&chunk).body("INSERT 666").send().await?;
    assert_eq!(r.status().as_u16(), 401, "{}", r.text().await?);
    assert!(
        !shipper.store_dir.join("streams").exists(),
        "nothing refused is stored"
    );
    let audited = wait_for(
        "the refusals in the audit log",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(shipper.audit_log()).unwrap_or_default();
            Ok((text.lines().count() >= 3).then_some(text))
        },
    )
    .await?;
    assert!(
        audited.lines().all(|l| l.contains("\"status\":401")) && !audited.contains("lft_wrong"),
        "{audited}"
    );

    let db = MariaDb::start(Options::default()).await?;
    let mut s = settings(db.repl_url(), &shipper);
    s.extra_toml = String::new();
    let mut agent = Agent::start_with_env(
        &tmp.path().join("agent"),
        &s,
        &[("LOGFERRY__SHIPPER__TOKEN", "lft_not_this_one")],
    )?;
    let status = agent.wait_exit(Duration::from_secs(60)).await?;
    let log = agent.log_text();
    assert!(status.is_some_and(|s| !s.success()), "{log}");
    assert!(
        log.contains("401")
            && log.contains("LOGFERRY__SHIPPER__TOKEN")
            && !log.contains("lft_not_this_one"),
        "{log}"
    );
    Ok(())
}
