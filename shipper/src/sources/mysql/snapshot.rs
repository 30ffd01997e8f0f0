//! A MySQL snapshot (a `mariadb-dump` script, in verified chunks) loaded into the target
//! server or written to a directory, and the `RESTORE.txt` that says how to apply an
//! export with the stock clients.

use std::path::Path;
use std::process::Stdio;

use indicatif::ProgressBar;

use super::collect::Collected;
use super::plan::Plan;
use super::target_server::{TargetServer, Tool, REPLAY_MAX_PACKET};
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::restore::{snapshot_chunks, write_error};
use crate::storage::Store;

/// Loads the plan's snapshot (each chunk verified) into `server`; nothing without one.
///
/// # Errors
/// When the client fails or a chunk is corrupt.
pub async fn load_snapshot(
    store: &Store,
    plan: &Plan,
    server: &TargetServer,
    bar: &ProgressBar,
    interrupt: &Interrupt,
) -> Result<()> {
    let Some(m) = &plan.snapshot else {
        return Ok(());
    };
    let mut client = server.client();
    if server.writes_binlog().await? {
        // The snapshot is the primary's data, not its transactions: binlogged here it would
        // take GTIDs of the target's own, and the restored server's GTID state would no
        // longer be the primary's. The replay after it is binlogged with the primary's.
        client.arg("--init-command=SET SESSION sql_log_bin = 0");
    }
    let mut child = client
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ShipperError::Restore(format!("cannot run the mariadb client: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| ShipperError::Restore("mariadb has no stdin".into()))?;
    let client = Tool::watch(child);
    let fed = tokio::select! {
        fed = snapshot_chunks(store, m, bar, &mut stdin, "loading the snapshot") => fed,
        () = interrupt.requested() => {
            // A dump has no boundary to stop at; the client is killed (dropped) with it.
            return Err(ShipperError::Interrupted(format!(
                "while loading snapshot {}: the target holds part of it; start over with --force",
                m.id
            )));
        }
    };
    drop(stdin);
    // A chunk that fails its checks cuts the dump mid-statement, so the client fails too:
    // the chunk's error is the cause, and the one a restore falls back on.
    let finished = client.finish("loading the snapshot with mariadb").await;
    fed?;
    finished
}

/// Writes the plan's snapshot as SQL into `dir` (fsynced); returns the file name, or
/// `None` without a snapshot.
///
/// # Errors
/// When the directory cannot be written or a chunk is corrupt.
pub async fn export_snapshot(
    store: &Store,
    plan: &Plan,
    dir: &Path,
    bar: &ProgressBar,
) -> Result<Option<String>> {
    let Some(m) = &plan.snapshot else {
        return Ok(None);
    };
    let io = write_error(dir);
    tokio::fs::create_dir_all(dir).await.map_err(&io)?;
    let name = format!("snapshot-{}.sql", m.id);
    let mut f = tokio::fs::File::create(dir.join(&name))
        .await
        .map_err(&io)?;
    snapshot_chunks(store, m, bar, &mut f, "writing the snapshot").await?;
    f.sync_all().await.map_err(&io)?;
    Ok(Some(name))
}

/// Writes `RESTORE.txt` into `dir`: a bash script that applies the exported files with the
/// stock clients, as written (`MYSQL_HOST=… MYSQL_PWD=… bash RESTORE.txt`). The password
/// is asked once, never per file, and the first failing tool stops it with a non-zero exit.
///
/// # Errors
/// When the file cannot be written.
pub async fn write_howto(dir: &Path, plan: &Plan, collected: &Collected) -> Result<()> {
    tokio::fs::write(dir.join("RESTORE.txt"), howto(plan, collected))
        .await
        .map_err(write_error(dir))
}

/// The text of `RESTORE.txt`.
fn howto(plan: &Plan, collected: &Collected) -> String {
    let packet = REPLAY_MAX_PACKET;
    let mut script = format!(
        r#"#!/usr/bin/env bash
# Restore by hand with the stock clients, from this directory:
#   MYSQL_HOST=db.example MYSQL_TCP_PORT=3306 MYSQL_USER=root MYSQL_PWD=... bash RESTORE.txt
# Without MYSQL_PWD the password is asked once. The target should be empty. For TLS, give
# the client's flags in MYSQL_SSL_ARGS, e.g.
#   MYSQL_SSL_ARGS="--ssl --ssl-verify-server-cert --ssl-ca=/etc/mysql/ca.pem"
# mariadb-binlog replays each statement's rows as one BINLOG statement, so a bulk
# statement needs a large packet limit on the server and the client: it is raised for
# the replay and put back at the end, whatever happens.
set -euo pipefail
cd "$(dirname "$0")"
: "${{MYSQL_HOST:?set MYSQL_HOST to the server to restore into}}"
if [ -z "${{MYSQL_PWD+set}}" ]; then
  read -rsp "password of ${{MYSQL_USER:-root}}@$MYSQL_HOST: " MYSQL_PWD
  echo
fi
export MYSQL_PWD
read -ra ssl <<< "${{MYSQL_SSL_ARGS:-}}"
client=(mariadb --host="$MYSQL_HOST" --port="${{MYSQL_TCP_PORT:-3306}}" --user="${{MYSQL_USER:-root}}" --max-allowed-packet={packet} "${{ssl[@]}}")
previous=$("${{client[@]}}" -N -B -e 'SELECT @@GLOBAL.max_allowed_packet')
"${{client[@]}}" -e 'SET GLOBAL max_allowed_packet = {packet}'
trap '"${{client[@]}}" -e "SET GLOBAL max_allowed_packet = $previous"' EXIT
"#
    );
    if let Some(m) = &plan.snapshot {
        let file = sh_quote(&format!("snapshot-{}.sql", m.id));
        // Out of a binlogging target's binlog, as `restore` loads it: the snapshot is the
        // primary's data, not transactions of the target's own.
        script.push_str(&format!(
            "load=(\"${{client[@]}}\")\n\
             if [ \"$(\"${{client[@]}}\" -N -B -e 'SELECT @@GLOBAL.log_bin')\" = 1 ]; then\n\
             \x20 load+=(--init-command='SET SESSION sql_log_bin = 0')\n\
             fi\n\
             echo loading {file}\n\"${{load[@]}}\" < {file}\n"
        ));
    }
    // One file per invocation: the first file may start mid-file without the GTID list
    // that mariadb-binlog's multi-file GTID check expects.
    for file in collected.files.iter().map(|f| sh_quote(f)) {
        script.push_str(&format!(
            "echo replaying {file}\nmariadb-binlog {file} | \"${{client[@]}}\"\n"
        ));
    }
    let reached = collected
        .last_position
        .as_ref()
        .map_or_else(|| plan.start.to_string(), ToString::to_string);
    script.push_str(&format!(
        "echo {}\n",
        sh_quote(&format!("restored to {reached}"))
    ));
    script
}

/// `s` as one bash word, whatever it holds (names come from the stored stream).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::sh_quote;

    #[test]
    fn names_are_quoted_as_one_word() {
        assert_eq!(sh_quote("mysql-bin.000001"), "'mysql-bin.000001'");
        assert_eq!(sh_quote("a'$(id)"), r"'a'\''$(id)'");
    }
}
