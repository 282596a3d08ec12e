//! The read budget of a scan: a token bucket in read capacity units per
//! second. DynamoDB only says what a page cost once it is served
//! (ConsumedCapacity), so each request first reserves what a page has been
//! costing (a moving average; 128 units, a full 1 MB page, before the
//! first), and settles the difference when the answer comes. Reservations
//! keep parallel segments from all going at once; the bucket may go into
//! debt and the next request waits it off (governor's fixed-cost cells do
//! not fit that). Throttling halves the rate; each page served without
//! throttling grows it back by 5 %, up to the target.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A shared read budget.
#[derive(Debug)]
pub struct ReadBudget {
    target: f64,
    halving_window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate: f64,
    tokens: f64,
    last: Instant,
    consumed: f64,
    throttles: u64,
    estimate: f64,
    last_halved: Option<Instant>,
}

impl ReadBudget {
    /// A budget of `units_per_second` read capacity units (at least 1).
    pub fn new(units_per_second: f64) -> Self {
        let target = units_per_second.max(1.0);
        ReadBudget {
            target,
            halving_window: Duration::from_secs(1),
            state: Mutex::new(State {
                rate: target,
                tokens: target,
                last: Instant::now(),
                consumed: 0.0,
                throttles: 0,
                estimate: 128.0,
                last_halved: None,
            }),
        }
    }

    fn refill(s: &mut State) {
        let now = Instant::now();
        let elapsed = now.duration_since(s.last).as_secs_f64();
        s.last = now;
        s.tokens = (s.tokens + elapsed * s.rate).min(s.rate);
    }

    /// Throttling answers within `window` of a halving do not halve again
    /// (default 1 s).
    pub fn with_halving_window(mut self, window: Duration) -> Self {
        self.halving_window = window;
        self
    }

    /// How long to wait before the next request (zero when the bucket is
    /// not in debt).
    pub fn wait_time(&self) -> Duration {
        let mut s = self.state.lock().expect("budget lock");
        Self::refill(&mut s);
        if s.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-s.tokens / s.rate) }
    }

    /// Waits until a request may be sent.
    pub async fn ready(&self) {
        loop {
            let wait = self.wait_time();
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits until a request may be sent, then reserves what a page is
    /// expected to cost; returns the reservation, to settle or release.
    pub async fn reserve(&self) -> f64 {
        loop {
            let wait = {
                let mut s = self.state.lock().expect("budget lock");
                Self::refill(&mut s);
                if s.tokens >= 0.0 {
                    let units = s.estimate;
                    s.tokens -= units;
                    return units;
                }
                Duration::from_secs_f64(-s.tokens / s.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// A served page consumed `actual` units against `reserved`: settles
    /// the difference, updates the estimate, and grows the rate back.
    pub fn settle(&self, reserved: f64, actual: f64) {
        let mut s = self.state.lock().expect("budget lock");
        Self::refill(&mut s);
        s.tokens += reserved - actual;
        s.consumed += actual;
        s.estimate = 0.8 * s.estimate + 0.2 * actual;
        s.rate = (s.rate * 1.05).min(self.target);
    }

    /// A request that was not served gives its reservation back.
    pub fn release(&self, reserved: f64) {
        let mut s = self.state.lock().expect("budget lock");
        s.tokens += reserved;
    }

    /// Charges what a served page consumed without a reservation, and
    /// grows the rate back.
    pub fn charge(&self, units: f64) {
        self.settle(0.0, units);
    }

    /// The service throttled: halve the rate (not below 1 unit/s), once
    /// per second at most — parallel segments throttled by one burst halve
    /// it once, not once each.
    pub fn throttled(&self) {
        let mut s = self.state.lock().expect("budget lock");
        Self::refill(&mut s);
        let now = Instant::now();
        if s.last_halved.is_none_or(|t| now.duration_since(t) >= self.halving_window) {
            s.rate = (s.rate / 2.0).max(1.0);
            s.last_halved = Some(now);
        }
        s.tokens = s.tokens.min(0.0);
        s.throttles += 1;
    }

    /// The current rate, units per second.
    pub fn rate(&self) -> f64 {
        self.state.lock().expect("budget lock").rate
    }

    /// Units charged so far.
    pub fn consumed(&self) -> f64 {
        self.state.lock().expect("budget lock").consumed
    }

    /// Throttles seen so far.
    pub fn throttles(&self) -> u64 {
        self.state.lock().expect("budget lock").throttles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_makes_the_next_request_wait_in_proportion() {
        let b = ReadBudget::new(100.0);
        assert_eq!(b.wait_time(), Duration::ZERO);
        b.charge(150.0); // 100 in the bucket, 50 in debt
        let w = b.wait_time();
        assert!(w > Duration::from_millis(400) && w <= Duration::from_millis(500), "{w:?}");
        assert_eq!(b.consumed(), 150.0);
    }

    #[tokio::test]
    async fn reservations_make_parallel_requests_wait_their_turn() {
        let b = ReadBudget::new(100.0);
        let first = b.reserve().await; // 128 expected: 28 in debt
        assert_eq!(first, 128.0);
        assert!(b.wait_time() > Duration::from_millis(200), "{:?}", b.wait_time());
        b.settle(first, 8.0); // it cost 8: the debt is gone
        assert_eq!(b.wait_time(), Duration::ZERO);
        assert_eq!(b.consumed(), 8.0);
        let next = b.reserve().await;
        assert!(next < 128.0, "the estimate follows what pages cost: {next}");
        b.release(next);
        assert_eq!(b.consumed(), 8.0);
    }

    #[test]
    fn throttling_halves_and_pages_grow_the_rate_back_to_the_target() {
        let b = ReadBudget::new(64.0);
        b.throttled();
        b.throttled();
        assert_eq!(b.rate(), 32.0, "one burst of throttling halves once");
        assert_eq!(b.throttles(), 2);
        let b = ReadBudget::new(64.0).with_halving_window(Duration::ZERO);
        b.throttled();
        b.throttled();
        assert_eq!(b.rate(), 16.0);
        for _ in 0..100 {
            b.charge(0.0);
        }
        assert_eq!(b.rate(), 64.0, "never above the target");
        for _ in 0..20 {
            b.throttled();
        }
        assert_eq!(b.rate(), 1.0, "never below one unit per second");
    }
}
