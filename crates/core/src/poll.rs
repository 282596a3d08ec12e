//! One way to wait for a resource the service builds in the background (a
//! snapshot copy, an image, a table, an export): look, pause, look again,
//! the pauses doubling from a first one up to a cap, until it is done, the
//! look fails, an overall deadline passes, or the work is cancelled.
//!
//! ```
//! # tokio_test_block_on(async {
//! use std::time::Duration;
//! use escrow_sync_core::poll::{Polled, Polling, poll_until};
//!
//! let mut looks = 0;
//! let done = poll_until(
//!     &Polling::new("ec2:CopySnapshot", "escrow copy snap-1")
//!         .with_first_pause(Duration::from_millis(1))
//!         .with_timeout(Duration::from_secs(60)),
//!     || {
//!         looks += 1;
//!         let seen = looks;
//!         async move {
//!             Ok(if seen < 3 { Polled::Pending("pending".into()) } else { Polled::Done(seen) })
//!         }
//!     },
//! )
//! .await
//! .unwrap();
//! assert_eq!(done, 3);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Error, ErrorKind, Result};

/// What one look at a resource found.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled<T> {
    /// It is done: the value the wait answers.
    Done(T),
    /// Not yet; its state as the service describes it (`pending`,
    /// `creating`, `not visible yet`), named in the error at the deadline.
    Pending(String),
}

/// How to wait: the operation and resource that errors name, the first
/// pause, the cap the pauses double up to, the overall timeout, and what
/// the error at the deadline says.
#[derive(Debug, Clone)]
pub struct Polling {
    operation: String,
    resource: String,
    first: Duration,
    cap: Duration,
    timeout: Duration,
    kind: ErrorKind,
    not_done: String,
    advice: String,
    cancel: Option<CancellationToken>,
}

impl Polling {
    /// Waiting for `resource`, which `operation` started: first pause 1 s,
    /// pauses capped at 30 s, timeout 1 h; at the deadline an error of kind
    /// Failed saying "not done after {timeout}; the next run waits for it".
    pub fn new(operation: impl Into<String>, resource: impl Into<String>) -> Self {
        Polling {
            operation: operation.into(),
            resource: resource.into(),
            first: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            timeout: Duration::from_secs(3600),
            kind: ErrorKind::Failed,
            not_done: "not done".into(),
            advice: "the next run waits for it".into(),
            cancel: None,
        }
    }

    /// The first pause (never more than the cap).
    pub fn with_first_pause(mut self, first: Duration) -> Self {
        self.first = first;
        self
    }

    /// The longest pause: each pause doubles the last, up to this.
    pub fn with_max_pause(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// How long to wait in all: the last look is the first after it passes.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What the error at the deadline says: its `kind`, what is not done
    /// (`not available`, `still in progress`) and what to do (`the next
    /// run waits for it`).
    pub fn with_deadline_error(
        mut self,
        kind: ErrorKind,
        not_done: impl Into<String>,
        advice: impl Into<String>,
    ) -> Self {
        self.kind = kind;
        self.not_done = not_done.into();
        self.advice = advice.into();
        self
    }

    /// Stops waiting when `cancel` fires (an error of kind Cancelled).
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// The overall timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn deadline_error(&self, last: &str) -> Error {
        let seen = if last.is_empty() { String::new() } else { format!(" (last seen: {last})") };
        Error::new(
            self.kind,
            self.operation.clone(),
            self.resource.clone(),
            format!("{} after {:?}{seen}; {}", self.not_done, self.timeout, self.advice),
        )
    }
}

/// Calls `look` until it answers [`Polled::Done`] (its value is returned)
/// or an error (returned as it is), pausing between looks from the first
/// pause, doubling up to the cap. A look that answers `Pending` after the
/// timeout has passed ends the wait with the deadline error, naming the
/// resource and the last state seen; cancellation during a pause ends it
/// with an error of kind Cancelled.
pub async fn poll_until<T, F, Fut>(polling: &Polling, mut look: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Polled<T>>>,
{
    let deadline = tokio::time::Instant::now() + polling.timeout;
    let mut pause = polling.first.min(polling.cap);
    loop {
        let last = match look().await? {
            Polled::Done(value) => return Ok(value),
            Polled::Pending(state) => state,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(polling.deadline_error(&last));
        }
        match &polling.cancel {
            Some(cancel) => tokio::select! {
                _ = cancel.cancelled() => {
                    return Err(Error::new(
                        ErrorKind::Cancelled,
                        polling.operation.clone(),
                        polling.resource.clone(),
                        "",
                    ));
                }
                _ = tokio::time::sleep(pause) => {}
            },
            None => tokio::time::sleep(pause).await,
        }
        pause = (pause * 2).min(polling.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Looks answering `states` in turn (then the last one again), each
    /// look's instant recorded relative to the start.
    type Look = std::future::Ready<Result<Polled<u32>>>;

    fn looks(
        states: Vec<Result<Polled<u32>>>,
    ) -> (impl FnMut() -> Look, Arc<Mutex<Vec<Duration>>>) {
        let start = tokio::time::Instant::now();
        let at = Arc::new(Mutex::new(Vec::new()));
        let seen = at.clone();
        let states = Arc::new(Mutex::new(states.into_iter().collect::<Vec<_>>()));
        let look = move || {
            seen.lock().unwrap().push(start.elapsed());
            let mut s = states.lock().unwrap();
            let next = if s.len() > 1 {
                s.remove(0)
            } else {
                match &s[0] {
                    Ok(p) => Ok(p.clone()),
                    Err(e) => Err(Error::new(e.kind(), "op", "res", e.message())),
                }
            };
            std::future::ready(next)
        };
        (look, at)
    }

    fn pending(state: &str) -> Result<Polled<u32>> {
        Ok(Polled::Pending(state.into()))
    }

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_cap_until_done() {
        let (look, at) = looks(vec![
            pending("pending"),
            pending("pending"),
            pending("pending"),
            pending("pending"),
            pending("pending"),
            Ok(Polled::Done(7)),
        ]);
        let polling = Polling::new("ec2:CopySnapshot", "copy snap-1")
            .with_first_pause(Duration::from_secs(1))
            .with_max_pause(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(3600));
        assert_eq!(poll_until(&polling, look).await.unwrap(), 7);
        // Pauses 1, 2, 4, 5, 5.
        assert_eq!(*at.lock().unwrap(), secs(&[0, 1, 3, 7, 12, 17]));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_names_the_resource_and_the_last_state() {
        let (look, at) = looks(vec![pending("pending"), pending("copying 40%")]);
        let polling = Polling::new("rds:CopyDBSnapshot", "escrow copy nightly-1")
            .with_first_pause(Duration::from_secs(1))
            .with_max_pause(Duration::from_secs(4))
            .with_timeout(Duration::from_secs(10))
            .with_deadline_error(ErrorKind::Transient, "not available", "run again");
        let err = poll_until(&polling, look).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        let text = err.to_string();
        assert!(text.contains("rds:CopyDBSnapshot escrow copy nightly-1"), "{text}");
        assert!(
            text.contains("not available after 10s (last seen: copying 40%); run again"),
            "{text}"
        );
        // 0, 1, 3, 7, then 11 is past the deadline: that look is the last.
        assert_eq!(*at.lock().unwrap(), secs(&[0, 1, 3, 7, 11]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_look_ends_the_wait_at_once() {
        let (look, at) = looks(vec![
            pending("pending"),
            Err(Error::new(ErrorKind::AccessDenied, "op", "res", "no")),
        ]);
        let err = poll_until(&Polling::new("op", "res"), look).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied);
        assert_eq!(at.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_pause_over_the_cap_is_cut_to_it() {
        let (look, at) = looks(vec![pending("a"), pending("b"), Ok(Polled::Done(1))]);
        let polling = Polling::new("op", "res")
            .with_first_pause(Duration::from_secs(10))
            .with_max_pause(Duration::from_secs(2));
        poll_until(&polling, look).await.unwrap();
        assert_eq!(*at.lock().unwrap(), secs(&[0, 2, 4]));
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_a_pause() {
        let cancel = CancellationToken::new();
        let (mut look, at) = looks(vec![pending("pending")]);
        let polling = Polling::new("dynamodb:DescribeExport", "export arn:1")
            .with_first_pause(Duration::from_secs(60))
            .with_max_pause(Duration::from_secs(60))
            .with_cancel(cancel.clone());
        // Cancelled as the second look answers, so during the pause after it.
        let (stop, looked) = (cancel.clone(), at.clone());
        let look = move || {
            let answer = look();
            if looked.lock().unwrap().len() == 2 {
                stop.cancel();
            }
            answer
        };
        let start = tokio::time::Instant::now();
        let err = poll_until(&polling, look).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert!(err.to_string().contains("export arn:1"), "{err}");
        // Looks at 0 and 60; the pause after the second ends at once.
        assert_eq!(*at.lock().unwrap(), secs(&[0, 60]));
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }
}
