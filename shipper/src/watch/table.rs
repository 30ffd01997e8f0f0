//! The `status` command's table: one line per stream, the numbers an operator checks
//! first, and each stream's problems under it.

use std::fmt::Write;

use super::status::{Health, StreamStatus};
use crate::listing::rfc3339;

fn seconds(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{s:.1}s"))
}

fn time(ms: Option<i64>) -> String {
    ms.map_or("-".into(), rfc3339)
}

/// The table of `statuses`.
pub fn render(statuses: &[StreamStatus]) -> String {
    let head = [
        "STREAM",
        "KIND",
        "HEALTH",
        "EXPOSURE",
        "LAG",
        "AGENT SEEN",
        "RESTORABLE",
        "LAST SNAPSHOT",
        "LAST DRILL",
    ];
    let rows: Vec<[String; 9]> = statuses
        .iter()
        .map(|s| {
            [
                s.stream.clone(),
                s.kind.clone().unwrap_or_else(|| "-".into()),
                match s.health {
                    Health::Green => "green",
                    Health::Amber => "AMBER",
                    Health::Red => "RED",
                }
                .into(),
                seconds(s.rpo_exposure_seconds),
                seconds(s.source_lag_seconds),
                s.agent_silent_seconds
                    .map_or("never".into(), |v| format!("{v:.0}s ago")),
                s.restorable_text(),
                time(s.last_snapshot_ms),
                s.last_drill.as_ref().map_or("-".into(), |d| {
                    format!(
                        "{} {}",
                        rfc3339(d.finished_ms),
                        if d.passed { "passed" } else { "FAILED" }
                    )
                }),
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut out, &head);
    for (row, s) in rows.iter().zip(statuses) {
        line(&mut out, &row.each_ref().map(String::as_str));
        for p in &s.problems {
            let _ = writeln!(out, "  ! {p}");
        }
    }
    if statuses.is_empty() {
        out.push_str("(no stream stored or reported yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::status::status;
    use crate::watch::status::tests::LONG_UP;
    use crate::watch::stored::StoredFacts;

    #[test]
    fn a_red_stream_shows_why() {
        let s = status(
            "orders",
            100_000,
            60.0,
            &StoredFacts::default(),
            None,
            Default::default(),
            LONG_UP,
        );
        let table = render(&[s]);
        assert!(table.starts_with("STREAM"), "{table}");
        assert!(table.contains("orders  -     RED"), "{table}");
        assert!(table.contains("  ! no agent has reported"), "{table}");
    }
}
