//! The read budget of a scan: a token bucket in read capacity units per
//! second, charged after the fact with the ConsumedCapacity each Scan page
//! reports (DynamoDB only says what a page cost once it is served, so the
//! bucket may go into debt and the next page waits it off; governor's
//! fixed-cost cells do not fit that). Throttling halves the rate; each page
//! served without throttling grows it back by 5 %, up to the target.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A shared read budget.
#[derive(Debug)]
pub struct ReadBudget {
    target: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate: f64,
    tokens: f64,
    last: Instant,
    consumed: f64,
    throttles: u64,
}

impl ReadBudget {
    /// A budget of `units_per_second` read capacity units (at least 1).
    pub fn new(units_per_second: f64) -> Self {
        let target = units_per_second.max(1.0);
        ReadBudget {
            target,
            state: Mutex::new(State {
                rate: target,
                tokens: target,
                last: Instant::now(),
                consumed: 0.0,
                throttles: 0,
            }),
        }
    }

    fn refill(s: &mut State) {
        let now = Instant::now();
        let elapsed = now.duration_since(s.last).as_secs_f64();
        s.last = now;
        s.tokens = (s.tokens + elapsed * s.rate).min(s.rate);
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

    /// Charges what a served page consumed, and grows the rate back.
    pub fn charge(&self, units: f64) {
        let mut s = self.state.lock().expect("budget lock");
        Self::refill(&mut s);
        s.tokens -= units;
        s.consumed += units;
        s.rate = (s.rate * 1.05).min(self.target);
    }

    /// The service throttled: halve the rate (not below 1 unit/s).
    pub fn throttled(&self) {
        let mut s = self.state.lock().expect("budget lock");
        Self::refill(&mut s);
        s.rate = (s.rate / 2.0).max(1.0);
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

    #[test]
    fn throttling_halves_and_pages_grow_the_rate_back_to_the_target() {
        let b = ReadBudget::new(64.0);
        b.throttled();
        b.throttled();
        assert_eq!(b.rate(), 16.0);
        assert_eq!(b.throttles(), 2);
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
