//! Exponential backoff for retries of the source connection and of uploads.

use std::time::Duration;

/// Doubles a delay from `min` up to `max`; `reset` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait now; the following one is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Starts again from `min`.
    pub fn reset(&mut self) {
        self.next = self.min;
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
