//! A bounded history of each stream's exposure and lag, for the status page's chart: one
//! sample every [`SAMPLE_EVERY_MS`], the last [`KEEP_MS`] of them, in memory only (a
//! restarted shipper's chart starts empty; Prometheus keeps the long history).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::status::StreamStatus;

/// Time between samples.
pub const SAMPLE_EVERY_MS: i64 = 15_000;

/// How far back the history reaches: six hours.
pub const KEEP_MS: i64 = 6 * 3600 * 1000;

/// One stream's samples, as columns (compact JSON for the page).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// Sample times, ms since the epoch.
    pub t: Vec<i64>,
    /// RPO exposure (s); `null` when unknown.
    pub exposure: Vec<Option<f64>>,
    /// Source lag (s); `null` when unknown.
    pub lag: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    t: i64,
    exposure: Option<f64>,
    lag: Option<f64>,
}

/// The samples of every stream.
#[derive(Debug, Default)]
pub struct History {
    last_ms: Option<i64>,
    streams: BTreeMap<String, VecDeque<Sample>>,
}

impl History {
    /// Takes a sample of `statuses` at `now_ms` when one is due; drops what is too old.
    pub fn record(&mut self, statuses: &[StreamStatus], now_ms: i64) {
        if self.last_ms.is_some_and(|t| now_ms - t < SAMPLE_EVERY_MS) {
            return;
        }
        self.last_ms = Some(now_ms);
        for s in statuses {
            self.streams
                .entry(s.stream.clone())
                .or_default()
                .push_back(Sample {
                    t: now_ms,
                    exposure: s.rpo_exposure_seconds,
                    lag: s.source_lag_seconds,
                });
        }
        for samples in self.streams.values_mut() {
            while samples.front().is_some_and(|s| now_ms - s.t > KEEP_MS) {
                samples.pop_front();
            }
        }
        self.streams.retain(|_, s| !s.is_empty());
    }

    /// Every stream's series for which `visible` holds.
    pub fn series(&self, visible: impl Fn(&str) -> bool) -> BTreeMap<String, Series> {
        self.streams
            .iter()
            .filter(|(name, _)| visible(name))
            .map(|(name, samples)| {
                let mut out = Series::default();
                for s in samples {
                    out.t.push(s.t);
                    out.exposure.push(s.exposure);
                    out.lag.push(s.lag);
                }
                (name.clone(), out)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::status::status;
    use crate::watch::status::tests::LONG_UP;
    use crate::watch::stored::StoredFacts;

    #[test]
    fn samples_are_spaced_and_bounded() {
        let mut h = History::default();
        let s = status(
            "db1",
            0,
            60.0,
            &StoredFacts::default(),
            None,
            Default::default(),
            LONG_UP,
        );
        // Twice the kept span, a call a second.
        for i in 0..(2 * KEEP_MS / 1000) {
            h.record(std::slice::from_ref(&s), i * 1000);
        }
        let series = &h.series(|_| true)["db1"];
        let n = (KEEP_MS / SAMPLE_EVERY_MS) as usize;
        assert!(
            series.t.len() <= n + 1 && series.t.len() >= n - 1,
            "{}",
            series.t.len()
        );
        assert!(series.t.windows(2).all(|w| w[1] - w[0] == SAMPLE_EVERY_MS));
        assert!(h.series(|name| name != "db1").is_empty());
    }
}
