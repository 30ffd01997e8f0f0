//! Reads from the store with a bounded number of requests in flight, in order.
//!
//! Restore, export, `verify`, `ls` and the drill read one object per stored segment: with
//! a 1 s seal a busy stream stores 86,400 a day, and one request at a time pays the
//! store's round trip for each. [`read_ahead`] keeps up to [`ReadAhead::reads`] requests
//! running and hands the results on in the order asked for, holding at most
//! [`ReadAhead::bytes`] of fetched data that the caller has not yet dropped (an item
//! bigger than that is fetched alone), so memory stays bounded however long the chain.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use futures::stream::{self, Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How far reads run ahead of their consumer.
#[derive(Debug, Clone, Copy)]
pub struct ReadAhead {
    /// Requests in flight at most.
    pub reads: usize,
    /// Bytes fetched and not yet dropped by the consumer, at most (weights as given).
    pub bytes: u32,
}

impl ReadAhead {
    /// What every command that reads many objects uses unless told otherwise (`ls`,
    /// `verify`, restore, export, the drill, snapshot listings): 16 requests, 128 MiB.
    pub const DEFAULT: ReadAhead = ReadAhead {
        reads: 16,
        bytes: 128 * 1024 * 1024,
    };
}

impl Default for ReadAhead {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A fetched item; the read-ahead budget it holds is freed when it is dropped.
#[derive(Debug)]
pub struct Held<T> {
    value: T,
    _budget: Option<OwnedSemaphorePermit>,
}

impl<T> Held<T> {
    /// The item, giving its budget back.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T, E> Held<Result<T, E>> {
    /// The fetched value still holding its budget, or the fetch's error.
    ///
    /// # Errors
    /// The error the fetch returned.
    pub fn ok(self) -> Result<Held<T>, E> {
        let Held { value, _budget } = self;
        value.map(|value| Held { value, _budget })
    }
}

impl<T> Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Runs `fetch` on each of `items` with `limits` and yields the results in `items`' order;
/// `weight` says how many bytes an item's result holds.
pub fn read_ahead<I, W, F, Fut>(
    items: I,
    limits: ReadAhead,
    weight: W,
    mut fetch: F,
) -> impl Stream<Item = Held<Fut::Output>>
where
    I: IntoIterator,
    W: Fn(&I::Item) -> u64,
    F: FnMut(I::Item) -> Fut,
    Fut: Future,
{
    let most = limits.bytes.max(1);
    let budget = Arc::new(Semaphore::new(most as usize));
    let most = u64::from(most);
    stream::iter(items)
        .map(move |item| {
            let need = u32::try_from(weight(&item).clamp(1, most)).unwrap_or(u32::MAX);
            let budget = budget.clone();
            let fetching = fetch(item);
            async move {
                // Permits are handed out first come, first served, so the oldest request
                // is never starved by younger ones; the semaphore is never closed.
                let permit = budget.acquire_many_owned(need).await.ok();
                Held {
                    value: fetching.await,
                    _budget: permit,
                }
            }
        })
        .buffered(limits.reads.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn results_come_in_order_with_reads_in_flight() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let limits = ReadAhead {
            reads: 4,
            bytes: 1000,
        };
        let got: Vec<u64> = read_ahead(
            (0..20u64).collect::<Vec<_>>(),
            limits,
            |_| 1,
            |i| {
                let (running, most) = (running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Later items finish first: the order must still hold.
                    tokio::time::sleep(Duration::from_millis(100 - i)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            },
        )
        .map(Held::into_inner)
        .collect()
        .await;
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 4, "four reads ran at once");
    }

    #[tokio::test(start_paused = true)]
    async fn fetched_bytes_held_by_the_consumer_stay_within_the_budget() {
        let fetched = Arc::new(AtomicUsize::new(0));
        let limits = ReadAhead {
            reads: 8,
            bytes: 300,
        };
        let count = fetched.clone();
        let mut s = Box::pin(read_ahead(
            vec![100u64; 10],
            limits,
            |w| *w,
            move |w| {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    w
                }
            },
        ));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(s.next().await.expect("an item"));
        }
        // Three held fill the budget: the fourth read waits until one is dropped.
        assert!(futures::poll!(s.next()).is_pending());
        assert_eq!(fetched.load(Ordering::SeqCst), 3);
        drop(held);
        // Each taken out of its hold, so that the rest can be read.
        let rest: Vec<u64> = s.map(Held::into_inner).collect().await;
        assert_eq!(rest.len(), 7);
        assert_eq!(fetched.load(Ordering::SeqCst), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_above_the_budget_is_read_alone() {
        let limits = ReadAhead {
            reads: 4,
            bytes: 10,
        };
        let running = Arc::new(AtomicUsize::new(0));
        let beside_big = Arc::new(AtomicUsize::new(0));
        let got: Vec<u64> = read_ahead(
            vec![5, 50, 5],
            limits,
            |w| *w,
            |w| {
                let (running, beside_big) = (running.clone(), beside_big.clone());
                async move {
                    running.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if w == 50 {
                        beside_big.store(running.load(Ordering::SeqCst), Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    w
                }
            },
        )
        .map(Held::into_inner)
        .collect()
        .await;
        assert_eq!(got, vec![5, 50, 5]);
        assert_eq!(
            beside_big.load(Ordering::SeqCst),
            1,
            "nothing ran beside it"
        );
    }
}
