//! Exponential backoff for retries of the source connection and of uploads, on the
//! maintained `backon` crate's builder (its retry loops are not used: each caller waits
//! its delay beside a shutdown signal).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Doubles a delay from `min` up to `max`, without end; `reset` after a success.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// A backoff between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Backoff {
            builder,
            delays: builder.build(),
            max,
        }
    }

    /// The delay to wait now; the following one is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts again from `min`.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

/// A copy starts from `min`: every caller that takes one begins its own retries.
impl Clone for Backoff {
    fn clone(&self) -> Self {
        Backoff {
            builder: self.builder,
            delays: self.builder.build(),
            max: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        let seen: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seen, vec![100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
