//! A job's running counts, from its progress events: what the binary's
//! progress bars and stats lines show, and what an embedder's
//! [`Observer`](crate::Observer) can show the same way. Which event counts
//! as what is decided here once: a verify counts the bytes it compared, a
//! run the bytes it copied; retries and throttles are counted apart.
//!
//! ```
//! use escrow_sync::stats::JobStats;
//! use escrow_sync::core::{Mode, ProgressEvent};
//! let stats = JobStats::new(Mode::Run);
//! stats.count(&ProgressEvent::Copied { key: "a".into(), bytes: 10 });
//! stats.count(&ProgressEvent::Skipped { key: "b".into(), size: 5 });
//! let now = stats.snapshot();
//! assert_eq!((now.items(), now.copied, now.bytes), (2, 1, 10));
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use escrow_sync_core::{Mode, ProgressEvent};

/// The plan's totals, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Planned {
    /// Items the plan covers.
    pub items: u64,
    /// Items it copies.
    pub copies: u64,
    /// Bytes it copies.
    pub bytes: u64,
}

/// The counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// The mode counted.
    pub mode: Mode,
    /// Items copied.
    pub copied: u64,
    /// Items already up to date (verify: the same).
    pub up_to_date: u64,
    /// Verify: items that differ.
    pub differ: u64,
    /// Items that failed.
    pub failed: u64,
    /// Bytes copied (verify: compared).
    pub bytes: u64,
    /// Retries.
    pub retries: u64,
    /// Throttled requests.
    pub throttled: u64,
    /// Time since the job started.
    pub elapsed: Duration,
    /// The plan's totals, once known.
    pub planned: Option<Planned>,
}

impl StatsSnapshot {
    /// Items done: copied, up to date, differing, failed.
    pub fn items(&self) -> u64 {
        self.copied + self.up_to_date + self.differ + self.failed
    }

    /// Bytes per second since the start.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(0.001)
    }
}

/// A job's counts, updated from any thread.
#[derive(Debug)]
pub struct JobStats {
    mode: Mode,
    started: Instant,
    copied: AtomicU64,
    up_to_date: AtomicU64,
    differ: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    planned: Mutex<Option<Planned>>,
}

impl JobStats {
    /// Nothing counted yet, the clock started now.
    pub fn new(mode: Mode) -> Self {
        JobStats {
            mode,
            started: Instant::now(),
            copied: AtomicU64::new(0),
            up_to_date: AtomicU64::new(0),
            differ: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            planned: Mutex::new(None),
        }
    }

    /// Counts `e`; whether it changed anything shown (cancelling and
    /// stopping count as shown: they are said).
    pub fn count(&self, e: &ProgressEvent) -> bool {
        let add = |c: &AtomicU64, n: u64| c.fetch_add(n, Ordering::Relaxed);
        match e {
            ProgressEvent::Copied { bytes, .. } => {
                add(&self.copied, 1);
                add(&self.bytes, *bytes);
            }
            ProgressEvent::Skipped { size, .. } => {
                add(&self.up_to_date, 1);
                // Verify reads what it compares; a run copies nothing here.
                if self.mode == Mode::Verify {
                    add(&self.bytes, *size);
                }
            }
            ProgressEvent::Differs { size, .. } => {
                add(&self.differ, 1);
                add(&self.bytes, *size);
            }
            ProgressEvent::Failed { .. } => {
                add(&self.failed, 1);
            }
            ProgressEvent::Retrying { .. } => {
                add(&self.retries, 1);
            }
            ProgressEvent::Throttled { .. } => {
                add(&self.throttled, 1);
            }
            ProgressEvent::Planned { items, copies, bytes } => {
                if let Ok(mut p) = self.planned.lock() {
                    *p = Some(Planned { items: *items, copies: *copies, bytes: *bytes });
                }
            }
            ProgressEvent::Cancelling | ProgressEvent::Stopping => {}
            _ => return false,
        }
        true
    }

    /// The counts now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            mode: self.mode,
            copied: load(&self.copied),
            up_to_date: load(&self.up_to_date),
            differ: load(&self.differ),
            failed: load(&self.failed),
            bytes: load(&self.bytes),
            retries: load(&self.retries),
            throttled: load(&self.throttled),
            elapsed: self.started.elapsed(),
            planned: self.planned.lock().ok().and_then(|p| *p),
        }
    }
}
