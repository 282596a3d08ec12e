//! Request pacing and adaptive concurrency.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Caps the requests a job sends per second (`max_requests_per_second`).
/// Cheap to clone; clones share the budget.
#[derive(Clone)]
pub struct RequestPacer(Arc<DefaultDirectRateLimiter>);

impl std::fmt::Debug for RequestPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestPacer").finish_non_exhaustive()
    }
}

impl RequestPacer {
    /// At most `n` requests per second (at least 1), in bursts of at most `n`.
    pub fn per_second(n: u32) -> Self {
        let n = NonZeroU32::new(n.max(1)).expect("at least 1");
        RequestPacer(Arc::new(RateLimiter::direct(Quota::per_second(n))))
    }

    /// Takes a request slot if one is free now.
    pub fn try_now(&self) -> bool {
        self.0.check().is_ok()
    }

    /// Waits until one more request may be sent.
    pub async fn ready(&self) {
        self.0.until_ready().await;
    }
}

/// Waits on `pacer`, if there is one.
pub async fn paced(pacer: Option<&RequestPacer>) {
    if let Some(p) = pacer {
        p.ready().await;
    }
}

/// A concurrency limit that halves when the service throttles and grows back
/// by one after each window of `limit` successes, never above its maximum.
#[derive(Debug)]
pub struct AdaptiveLimit {
    max: usize,
    current: AtomicUsize,
    successes: AtomicUsize,
    throttles: AtomicUsize,
}

impl AdaptiveLimit {
    /// A limit starting (and capped) at `max`.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        AdaptiveLimit {
            max,
            current: AtomicUsize::new(max),
            successes: AtomicUsize::new(0),
            throttles: AtomicUsize::new(0),
        }
    }

    /// How many throttles were seen.
    pub fn throttles(&self) -> u64 {
        self.throttles.load(Ordering::SeqCst) as u64
    }

    /// The current limit.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    /// The service throttled: halve (not below 1). Returns the new limit.
    pub fn on_throttle(&self) -> usize {
        self.throttles.fetch_add(1, Ordering::SeqCst);
        self.successes.store(0, Ordering::SeqCst);
        let prev = self
            .current
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| Some((c / 2).max(1)))
            .unwrap_or(1);
        (prev / 2).max(1)
    }

    /// A success: after `current` successes in a row, grow by one.
    /// Returns the new limit if it changed.
    pub fn on_success(&self) -> Option<usize> {
        let cur = self.current();
        if cur >= self.max {
            return None;
        }
        let n = self.successes.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= cur {
            self.successes.store(0, Ordering::SeqCst);
            let next = (cur + 1).min(self.max);
            self.current.store(next, Ordering::SeqCst);
            return Some(next);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_throttle_and_grows_slowly() {
        let l = AdaptiveLimit::new(16);
        assert_eq!(l.on_throttle(), 8);
        assert_eq!(l.on_throttle(), 4);
        assert_eq!(l.current(), 4);
        // Four successes in a row grow it by one.
        assert_eq!((0..3).filter_map(|_| l.on_success()).count(), 0);
        assert_eq!(l.on_success(), Some(5));
        for _ in 0..100 {
            l.on_throttle();
        }
        assert_eq!(l.current(), 1, "never below one");
        for _ in 0..10_000 {
            l.on_success();
        }
        assert_eq!(l.current(), 16, "never above the maximum");
    }

    #[test]
    fn the_pacer_allows_a_burst_then_makes_requests_wait() {
        let p = RequestPacer::per_second(1);
        assert!(p.try_now(), "the first request goes at once");
        assert!(!p.try_now(), "the second waits for the next second");
    }
}
