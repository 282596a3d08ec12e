//! Runs a plan: bounded concurrency, retries with backoff and full jitter,
//! cancellation and progress events.
//!
//! # The retry budget
//!
//! There is one budget per item: [`RetryPolicy::max_attempts`] attempts of the
//! whole read-and-write, with exponential backoff and full jitter between
//! them, and only for retryable errors ([`Error::is_retryable`]: throttling
//! and transient failures). Service crates turn the SDK's own retries off for
//! the calls an item makes, so the two do not multiply; listing calls keep the
//! SDK's standard retries because the executor does not retry a listing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::{BoxStream, FuturesUnordered};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::report::UNPROTECTED;
use crate::{
    Action, AdaptiveLimit, ChangeTally, CopyPlan, CopyReason, Difference, Error, ErrorKind,
    Failure, Finding, Item, MassChangeGuard, Mode, Policy, Report, Result, Scope, Sink, Source,
    plan_stream,
};

/// How often and how patiently to retry one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The backoff cap before the first retry; doubles with each attempt.
    pub initial_backoff: Duration,
    /// The largest backoff cap.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The backoff cap before retry number `retry` (1 for the first retry):
    /// `min(max_backoff, initial_backoff * 2^(retry-1))`.
    pub fn cap(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1).min(30));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// A full-jitter delay: uniform in `[0, cap(retry)]`.
    pub fn delay(&self, retry: u32) -> Duration {
        let cap = self.cap(retry);
        if cap.is_zero() {
            return cap;
        }
        let nanos = rand::rng().random_range(0..=cap.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }
}

/// Options for an [`Executor`].
#[derive(Clone)]
pub struct ExecutorOptions {
    concurrency: usize,
    retry: RetryPolicy,
    policy: Policy,
    difference_limit: usize,
    verify_checksums: bool,
    list_in_escrow: bool,
    item_log: Option<ItemLog>,
    mass_change: Option<MassChangeGuard>,
}

/// What became of one item in a run, for a record such as a run manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
// Exhaustive on purpose: every crate matches it, and a new variant must
// be handled everywhere rather than fall into a wildcard.
pub enum ItemOutcome {
    /// Copied into escrow by this run.
    Copied,
    /// Escrow already held it.
    InEscrow,
    /// It failed (see the report's failures).
    Failed,
    /// Escrow holds it, the primary no longer does: kept.
    Retained,
}

/// One item's outcome, with what identifies its content.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    /// The item as the source listed it (for `Retained`: as escrow lists it).
    pub item: Item,
    /// What became of it.
    pub outcome: ItemOutcome,
    /// The escrow copy's fingerprint, when the sink said (a copy's ETag,
    /// snapshot id...).
    pub escrow_fingerprint: Option<String>,
    /// The error, for `Failed`.
    pub error: Option<String>,
}

impl ItemRecord {
    /// `item`'s `outcome`, with no escrow fingerprint or error.
    pub fn new(item: Item, outcome: ItemOutcome) -> Self {
        ItemRecord { item, outcome, escrow_fingerprint: None, error: None }
    }
}

/// Receives every item's outcome (see [`ExecutorOptions::with_item_log`]).
pub type ItemLog = Arc<dyn Fn(ItemRecord) + Send + Sync>;

impl std::fmt::Debug for ExecutorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorOptions")
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("policy", &self.policy)
            .field("difference_limit", &self.difference_limit)
            .field("verify_checksums", &self.verify_checksums)
            .field("list_in_escrow", &self.list_in_escrow)
            .field("item_log", &self.item_log.is_some())
            .field("mass_change", &self.mass_change)
            .finish()
    }
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            concurrency: 16,
            retry: RetryPolicy::default(),
            policy: Policy::default(),
            difference_limit: 1000,
            verify_checksums: false,
            list_in_escrow: false,
            item_log: None,
            mass_change: None,
        }
    }
}

impl ExecutorOptions {
    /// Default options: 16 items at once, 5 attempts, the never-delete policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many items are copied at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy { max_attempts: retry.max_attempts.max(1), ..retry };
        self
    }

    /// The planning policy.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How many differences a plan report lists by key (verify lists all).
    pub fn with_difference_limit(mut self, n: usize) -> Self {
        self.difference_limit = n;
        self
    }

    /// Whether verify also compares the checksums of items whose listings
    /// match (one request per item on each side), counting mismatches as
    /// different.
    pub fn with_verify_checksums(mut self, on: bool) -> Self {
        self.verify_checksums = on;
        self
    }

    /// Whether the report also lists, by key, the items escrow already
    /// holds (`in_escrow`; up to the difference limit in plan). For jobs of
    /// few, large items such as snapshots.
    pub fn with_listed_in_escrow(mut self, on: bool) -> Self {
        self.list_in_escrow = on;
        self
    }

    /// Sends every item's outcome to `log` (runs only: plan and verify
    /// record nothing), e.g. to write a run manifest.
    pub fn with_item_log(mut self, log: ItemLog) -> Self {
        self.item_log = Some(log);
        self
    }

    /// The mass-change circuit breaker (`None`: off). In a run, changed
    /// items are copied at once only while the copies stay within the
    /// guard's share of the escrow items seen so far; the rest wait for the
    /// end of the listing, and are copied then only if the whole run stays
    /// within the share. Otherwise they are held back (logged as failed,
    /// counted in [`Report::held_back`]) and the report carries a finding of
    /// kind [`crate::MASS_CHANGE`]. Plan warns when a run would trip.
    pub fn with_mass_change_guard(mut self, guard: Option<MassChangeGuard>) -> Self {
        self.mass_change = guard;
        self
    }

    /// The concurrency.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }
}

/// Something that happened while a job ran.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// An item is about to be copied.
    Started {
        /// The key.
        key: String,
        /// Its size.
        size: u64,
    },
    /// An item is in escrow already.
    Skipped {
        /// The key.
        key: String,
        /// Its size.
        size: u64,
    },
    /// An attempt failed and will be retried after `delay`.
    Retrying {
        /// The key.
        key: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// The error, on one line.
        error: String,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// An item was copied.
    Copied {
        /// The key.
        key: String,
        /// Bytes copied.
        bytes: u64,
    },
    /// An item failed for good (in this run).
    Failed {
        /// The key.
        key: String,
        /// The error, on one line.
        error: String,
    },
    /// Cancellation was requested: no new items will start.
    Cancelling,
    /// The hard stop came (see [`Executor::with_stop`]): items in flight are
    /// being stopped and count as failed.
    Stopping,
    /// The plan's totals, once known: at the start when the plan is computed
    /// in memory, at the end of the listing when it is a streaming merge.
    Planned {
        /// Items the source lists (to copy or already in escrow).
        items: u64,
        /// Of those, the items escrow lacks or holds differently (a run
        /// copies them, unless the sink finds them the same after all).
        copies: u64,
        /// The bytes of those items.
        bytes: u64,
    },
    /// Plan and verify: escrow lacks an item or holds it differently.
    Differs {
        /// The key.
        key: String,
        /// Its size in the primary.
        size: u64,
    },
    /// An attempt was throttled (it is retried, or fails, as
    /// [`ProgressEvent::Retrying`] or [`ProgressEvent::Failed`] says).
    Throttled {
        /// The key.
        key: String,
    },
    /// The concurrency limit changed (halved on throttling, grown back).
    Concurrency {
        /// The new limit.
        limit: usize,
    },
}

/// Receives progress events; must be cheap and must not block.
pub type ProgressFn = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Runs plans. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    options: ExecutorOptions,
    progress: Option<ProgressFn>,
    cancel: CancellationToken,
    stop: CancellationToken,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("options", &self.options)
            .field("cancelled", &self.cancel.is_cancelled())
            .field("stopped", &self.stop.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Whether a checksum (`ALGORITHM:value`) is strong enough to prove two
/// items hold the same bytes: only a cryptographic hash is. A CRC (CRC32,
/// CRC32C, and CRC64NVME too) can be forged by whoever writes the source:
/// the primary's attacker could rewrite an object with content whose CRC
/// equals escrow's and have the change pass for "same" (verify still
/// compares CRCs to find corruption).
fn strong(checksum: &str) -> bool {
    checksum.starts_with("SHA256:") || checksum.starts_with("SHA1:")
}

/// The mass-change breaker's state in one execution.
struct Breaker {
    /// The guard, until it has decided (`None`: off, or decided).
    guard: Option<MassChangeGuard>,
    /// What the run found so far.
    tally: ChangeTally,
    /// Changed items waiting for the final count.
    waiting: Vec<Item>,
}

impl Breaker {
    /// Counts a changed item; whether it may be copied at once (otherwise
    /// it waits for the final count).
    fn let_through(&mut self, item: &Item) -> bool {
        let Some(guard) = self.guard else { return true };
        if self.tally.changed(&item.key, &guard) {
            return true;
        }
        self.waiting.push(item.clone());
        false
    }
}

/// A plan's totals, for [`ProgressEvent::Planned`].
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    items: u64,
    copies: u64,
    bytes: u64,
}

impl Totals {
    fn count(&mut self, action: &Action) {
        match action {
            Action::Skip { .. } => self.items += 1,
            Action::Copy { item, .. } => {
                self.items += 1;
                self.copies += 1;
                self.bytes += item.size;
            }
            Action::Retain { .. } | Action::Delete { .. } => {}
        }
    }

    fn event(self) -> ProgressEvent {
        ProgressEvent::Planned { items: self.items, copies: self.copies, bytes: self.bytes }
    }
}

/// Work that needs the services for one action.
enum Work {
    /// Copy (run), unless the sink confirms the escrow item is the same.
    Copy(Item, Option<Item>),
    /// Ask the sink whether a changed item is the same after all, and hand
    /// it to the mass-change breaker if not (run, with the breaker on).
    Confirm(Item, Item),
    /// Copy an item already confirmed changed (run, with the breaker on).
    Write(Item),
    /// Ask the sink whether a changed item is the same after all (plan,
    /// verify); audit it too when the flag says so.
    Check(Item, Item, bool),
    /// Audit the protection of an item escrow holds (verify).
    Audit(Item),
    /// Ask the source what copying a missing item would take (plan).
    Assess(Item, CopyReason),
    /// Let the source undo what an interrupted run left for an item escrow
    /// already holds (run).
    Finish(Item),
    Delete(Item),
}

enum Outcome {
    Copied {
        bytes: u64,
        parts: u32,
        warning: Option<String>,
    },
    /// Confirmed changed; the breaker decides when it is copied.
    Changed {
        item: Item,
    },
    Same {
        key: String,
        size: u64,
        problems: Vec<String>,
    },
    Differs {
        item: Item,
    },
    Assessed {
        item: Item,
        reason: CopyReason,
        status: Option<String>,
        copyable: bool,
    },
    Finished {
        key: String,
        size: u64,
        warning: Option<String>,
    },
    /// The two sides differ beyond the listing: `what` (checksum, tags).
    Mismatch {
        item: Item,
        what: &'static str,
        primary: String,
        escrow: String,
    },
    Deleted,
    Failed {
        key: String,
        error: Error,
        attempts: u32,
    },
}

impl Executor {
    /// An executor with these options.
    pub fn new(options: ExecutorOptions) -> Self {
        Executor {
            options,
            progress: None,
            cancel: CancellationToken::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Sends progress events to `f`.
    pub fn with_progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }

    /// Uses `token` for cancellation: once cancelled, no new item starts,
    /// items in flight finish (or fail cleanly), and the report says so.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// The cancellation token.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Uses `token` as the hard stop (a drain that ran out of time, a
    /// second Ctrl-C): once cancelled, nothing new starts (as with
    /// cancellation) and every request of an item in flight is dropped, so
    /// the item fails at once with [`ErrorKind::Cancelled`]: logged as
    /// failed, never as copied. A sink whose write is dropped half-way
    /// must leave nothing behind that looks complete (the S3 sink aborts
    /// its multipart upload).
    pub fn with_stop(mut self, token: CancellationToken) -> Self {
        self.stop = token;
        self
    }

    /// The hard-stop token.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The options.
    pub fn options(&self) -> &ExecutorOptions {
        &self.options
    }

    fn emit(&self, event: ProgressEvent) {
        if let Some(f) = &self.progress {
            f(&event);
        }
    }

    /// The plan as a stream of actions: a streaming merge when both sides
    /// list in key order, otherwise both listings are read and planned in
    /// memory.
    pub async fn plan<'a>(
        &self,
        source: &'a dyn Source,
        sink: &'a dyn Sink,
        scope: &Scope,
    ) -> Result<BoxStream<'a, Result<Action>>> {
        Ok(self.plan_counted(source, sink, scope).await?.0)
    }

    /// [`Executor::plan`], with the plan's totals when it was computed in
    /// memory.
    async fn plan_counted<'a>(
        &self,
        source: &'a dyn Source,
        sink: &'a dyn Sink,
        scope: &Scope,
    ) -> Result<(BoxStream<'a, Result<Action>>, Option<Totals>)> {
        if source.sorted() && sink.sorted() {
            let plan = plan_stream(source.list(scope), sink.list(scope), &self.options.policy);
            return Ok((plan, None));
        }
        let (src, dst) = futures::future::join(
            source.list(scope).collect::<Vec<_>>(),
            sink.list(scope).collect::<Vec<_>>(),
        )
        .await;
        let src = src.into_iter().collect::<Result<Vec<_>>>()?;
        let dst = dst.into_iter().collect::<Result<Vec<_>>>()?;
        let plan = CopyPlan::compute(src, dst, &self.options.policy)?;
        let mut totals = Totals::default();
        plan.actions().iter().for_each(|a| totals.count(a));
        let stream = futures::stream::iter(plan.into_actions().into_iter().map(Ok)).boxed();
        Ok((stream, Some(totals)))
    }

    /// Runs one job in `mode`. `Plan` and `Verify` change nothing; `Run`
    /// copies. A listing failure is returned as `Err` (after items in flight
    /// have finished); item failures are in the report.
    pub async fn execute(
        &self,
        mode: Mode,
        source: &dyn Source,
        sink: &dyn Sink,
        scope: &Scope,
    ) -> Result<Report> {
        let started = Instant::now();
        let mut report = Report::new(mode, source.describe(), sink.describe());
        let (mut plan, known) = self.plan_counted(source, sink, scope).await?;
        // The totals, announced as soon as they are known.
        let mut totals = Totals::default();
        if let Some(known) = known {
            self.emit(known.event());
        }
        // Halves on throttling, grows back slowly; never above the option.
        let adaptive = AdaptiveLimit::new(self.options.concurrency);
        let mut inflight = FuturesUnordered::new();
        // Work that is ready and waits only for room (changed items the
        // breaker let through, and its waiting items once it decided).
        let mut queued: VecDeque<Work> = VecDeque::new();
        let mut listed = false;
        let mut stop = false;
        let mut stopped = false;
        let mut fatal: Option<Error> = None;
        let audit = mode == Mode::Verify
            && (sink.audits() || self.options.verify_checksums || source.keeps_tags());
        let assess = mode == Mode::Plan && source.assesses();
        let finish = mode == Mode::Run && source.finishes_skipped();
        let limit = match mode {
            Mode::Verify => usize::MAX,
            _ => self.options.difference_limit,
        };
        let guard = self.options.mass_change.filter(|_| mode != Mode::Verify);
        let mut breaker = Breaker { guard, tally: ChangeTally::default(), waiting: Vec::new() };
        loop {
            let room = inflight.len() < adaptive.current();
            if room
                && !report.cancelled
                && let Some(work) = queued.pop_front()
            {
                inflight.push(self.perform(source, sink, &adaptive, work));
                continue;
            }
            let can_schedule = !stop && room;
            if !can_schedule && inflight.is_empty() {
                let done = listed && fatal.is_none() && !report.cancelled;
                if done && let Some(guard) = breaker.guard.take() {
                    self.decide(&mut report, guard, &mut breaker, &mut queued);
                    continue;
                }
                break;
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled(), if !stopped => {
                    // Items in flight see the stop themselves (each of their
                    // requests races it) and end as failed.
                    stopped = true;
                    stop = true;
                    if !report.cancelled {
                        report.cancelled = true;
                        self.emit(ProgressEvent::Cancelling);
                    }
                    self.emit(ProgressEvent::Stopping);
                }
                _ = self.cancel.cancelled(), if !report.cancelled => {
                    stop = true;
                    report.cancelled = true;
                    self.emit(ProgressEvent::Cancelling);
                }
                Some(outcome) = inflight.next(), if !inflight.is_empty() => match outcome {
                    Outcome::Changed { item } => {
                        if breaker.let_through(&item) {
                            queued.push_back(Work::Write(item));
                        }
                    }
                    outcome => self.record(&mut report, mode, outcome, limit),
                },
                next = plan.next(), if can_schedule => match next {
                    None => {
                        stop = true;
                        listed = true;
                        if known.is_none() {
                            self.emit(totals.event());
                        }
                    }
                    Some(Err(e)) => {
                        stop = true;
                        fatal = Some(e);
                    }
                    Some(Ok(action)) => {
                        totals.count(&action);
                        if breaker.guard.is_some() && action.escrow_item() {
                            breaker.tally.saw_escrow_item();
                        }
                        let checks = (audit, assess, finish, breaker.guard.is_some());
                        if let Some(fut) = self.account(&mut report, mode, action, limit, checks) {
                            inflight.push(self.perform(source, sink, &adaptive, fut));
                        }
                    }
                },
            }
        }
        report.elapsed = started.elapsed();
        report.throttled = adaptive.throttles();
        match fatal {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// The breaker's decision once the listing is complete. A run copies the
    /// changes that waited if the whole run stays within the share, and
    /// otherwise holds them back with a finding; a plan warns when a run
    /// would trip.
    fn decide(
        &self,
        report: &mut Report,
        guard: MassChangeGuard,
        breaker: &mut Breaker,
        queued: &mut VecDeque<Work>,
    ) {
        let tally = &breaker.tally;
        if report.mode == Mode::Plan {
            if guard.exceeded(report.different, tally.escrow_seen) {
                report.warnings.push(format!(
                    "a run would stop at the mass-change breaker: {} of {} escrow items \
                     changed in the primary, over max_change_percent = {} (it would copy {} of \
                     the changes and hold the rest back)",
                    report.different,
                    tally.escrow_seen,
                    guard.max_percent(),
                    guard.limit(tally.escrow_seen),
                ));
            }
            return;
        }
        let waiting = std::mem::take(&mut breaker.waiting);
        if !guard.exceeded(tally.changed, tally.escrow_seen) {
            queued.extend(waiting.into_iter().map(Work::Write));
            return;
        }
        let held = waiting.len() as u64;
        report.findings.push(guard.finding(
            &report.destination,
            tally.changed,
            tally.escrow_seen,
            held,
            &tally.first_keys,
        ));
        report.held_back += held;
        let why = format!(
            "held back: mass change ({} of {} escrow items changed in one run, over \
             max_change_percent = {}; run with --accept-mass-change if it is legitimate)",
            tally.changed,
            tally.escrow_seen,
            guard.max_percent()
        );
        for item in waiting {
            self.log_item(Mode::Run, &item, ItemOutcome::Failed, None, Some(why.clone()));
        }
    }

    /// Counts `action` in the report; returns the work to do in a run.
    fn account(
        &self,
        report: &mut Report,
        mode: Mode,
        action: Action,
        limit: usize,
        (audit, assess, finish, guarded): (bool, bool, bool, bool),
    ) -> Option<Work> {
        match action {
            Action::Skip { item } if audit => Some(Work::Audit(item)),
            Action::Skip { item } if finish => Some(Work::Finish(item)),
            Action::Skip { item } => {
                self.log_item(mode, &item, ItemOutcome::InEscrow, None, None);
                report.skipped += 1;
                self.list_in_escrow(report, &item.key, limit);
                self.emit(ProgressEvent::Skipped { key: item.key, size: item.size });
                None
            }
            Action::Retain { item } => {
                self.log_item(mode, &item, ItemOutcome::Retained, None, None);
                report.retained += 1;
                None
            }
            Action::Copy { item, reason, escrow } => match (mode, escrow) {
                (Mode::Run, Some(escrow)) if guarded => Some(Work::Confirm(item, escrow)),
                (Mode::Run, escrow) => Some(Work::Copy(item, escrow)),
                (_, Some(escrow)) => Some(Work::Check(item, escrow, audit)),
                (_, None) if assess => Some(Work::Assess(item, reason)),
                (_, None) => {
                    self.count_difference(report, mode, item, reason, None, limit);
                    None
                }
            },
            Action::Delete { item } => match mode {
                Mode::Plan => {
                    report.deleted += 1;
                    None
                }
                Mode::Verify => None,
                Mode::Run => Some(Work::Delete(item)),
            },
        }
    }

    /// Sends one item's outcome to the item log, in a run.
    fn log_item(
        &self,
        mode: Mode,
        item: &Item,
        outcome: ItemOutcome,
        escrow_fingerprint: Option<String>,
        error: Option<String>,
    ) {
        if mode != Mode::Run {
            return;
        }
        if let Some(log) = &self.options.item_log {
            log(ItemRecord { item: item.clone(), outcome, escrow_fingerprint, error });
        }
    }

    /// Lists `key` among the items escrow holds, when asked to.
    fn list_in_escrow(&self, report: &mut Report, key: &str, limit: usize) {
        if self.options.list_in_escrow && report.in_escrow.len() < limit {
            report.in_escrow.push(key.to_string());
        }
    }

    /// Counts an item escrow lacks or holds differently (plan and verify).
    fn count_difference(
        &self,
        report: &mut Report,
        mode: Mode,
        item: Item,
        reason: CopyReason,
        status: Option<(String, bool)>,
        limit: usize,
    ) {
        match reason {
            CopyReason::Missing => report.missing += 1,
            CopyReason::Changed => report.different += 1,
        }
        let copyable = status.as_ref().is_none_or(|(_, copyable)| *copyable);
        if mode == Mode::Plan && copyable {
            report.copied += 1;
            report.bytes_copied += item.size;
        }
        let status = status.map(|(status, _)| status);
        if mode != Mode::Run {
            self.emit(ProgressEvent::Differs { key: item.key.clone(), size: item.size });
        }
        if report.differences.len() < limit {
            report.differences.push(Difference { key: item.key, reason, size: item.size, status });
        } else {
            report.differences_truncated += 1;
        }
    }

    fn record(&self, report: &mut Report, mode: Mode, outcome: Outcome, limit: usize) {
        match outcome {
            Outcome::Copied { bytes, parts, warning } => {
                report.copied += 1;
                report.warnings.extend(warning);
                report.bytes_copied += bytes;
                if parts > 1 {
                    report.copied_in_parts += 1;
                }
            }
            Outcome::Same { key, size, problems } => {
                report.skipped += 1;
                self.list_in_escrow(report, &key, limit);
                if !problems.is_empty() {
                    report.unprotected += 1;
                    report.findings.extend(
                        problems.into_iter().map(|problem| {
                            Finding::new(key.clone(), problem).with_kind(UNPROTECTED)
                        }),
                    );
                }
                self.emit(ProgressEvent::Skipped { key, size });
            }
            Outcome::Differs { item } => {
                self.count_difference(report, mode, item, CopyReason::Changed, None, limit);
            }
            Outcome::Finished { key, size, warning } => {
                report.skipped += 1;
                report.warnings.extend(warning);
                self.list_in_escrow(report, &key, limit);
                self.emit(ProgressEvent::Skipped { key, size });
            }
            Outcome::Assessed { item, reason, status, copyable } => {
                let status = status.map(|s| (s, copyable));
                self.count_difference(report, mode, item, reason, status, limit);
            }
            Outcome::Mismatch { item, what, primary, escrow } => {
                report.findings.push(Finding::new(
                    item.key.clone(),
                    format!("{what} mismatch: primary {primary}, escrow {escrow}"),
                ));
                self.count_difference(report, mode, item, CopyReason::Changed, None, limit);
            }
            Outcome::Deleted => report.deleted += 1,
            // The execute loop hands these to the breaker.
            Outcome::Changed { item } => {
                self.count_difference(report, mode, item, CopyReason::Changed, None, limit);
            }
            Outcome::Failed { key, error, attempts } => {
                report.failed += 1;
                self.emit(ProgressEvent::Failed { key: key.clone(), error: error.chain() });
                report.failures.push(Failure::new(key, &error, attempts));
            }
        }
    }

    async fn perform(
        &self,
        source: &dyn Source,
        sink: &dyn Sink,
        limit: &AdaptiveLimit,
        work: Work,
    ) -> Outcome {
        match work {
            Work::Copy(item, escrow) => {
                if let Some(escrow) = escrow
                    && self.confirmed_same(source, sink, limit, &item, &escrow).await
                {
                    let fingerprint = Some(escrow.fingerprint.clone());
                    self.log_item(Mode::Run, &item, ItemOutcome::InEscrow, fingerprint, None);
                    return Outcome::Same { key: item.key, size: item.size, problems: Vec::new() };
                }
                self.copy_item(source, sink, limit, item).await
            }
            Work::Confirm(item, escrow) => {
                if self.confirmed_same(source, sink, limit, &item, &escrow).await {
                    let fingerprint = Some(escrow.fingerprint.clone());
                    self.log_item(Mode::Run, &item, ItemOutcome::InEscrow, fingerprint, None);
                    return Outcome::Same { key: item.key, size: item.size, problems: Vec::new() };
                }
                Outcome::Changed { item }
            }
            Work::Write(item) => self.copy_item(source, sink, limit, item).await,
            Work::Finish(item) => {
                self.log_item(Mode::Run, &item, ItemOutcome::InEscrow, None, None);
                let warning = self.finish_item(source, limit, &item).await;
                Outcome::Finished { key: item.key, size: item.size, warning }
            }
            Work::Assess(item, reason) => {
                match self.or_stopped(&item.key, source.assess(&item)).await {
                    Ok(status) => Outcome::Assessed { item, reason, status, copyable: true },
                    Err(e) if e.kind() == ErrorKind::Unsupported => {
                        let why =
                            if e.message().is_empty() { e.chain() } else { e.message().into() };
                        let status = Some(if why.starts_with("not copyable") {
                            why
                        } else {
                            format!("not copyable: {why}")
                        });
                        Outcome::Assessed { item, reason, status, copyable: false }
                    }
                    Err(e) => {
                        let status = Some(format!("could not assess: {}", e.chain()));
                        Outcome::Assessed { item, reason, status, copyable: true }
                    }
                }
            }
            Work::Check(item, escrow, audit) => {
                if !self.confirmed_same(source, sink, limit, &item, &escrow).await {
                    return Outcome::Differs { item };
                }
                if audit {
                    self.audit(source, sink, limit, item).await
                } else {
                    Outcome::Same { key: item.key, size: item.size, problems: Vec::new() }
                }
            }
            Work::Audit(item) => self.audit(source, sink, limit, item).await,
            Work::Delete(item) => {
                match self.with_retries(limit, &item.key, || sink.delete(&item.key)).await {
                    (Ok(()), _) => Outcome::Deleted,
                    (Err(error), attempts) => {
                        self.log_item(
                            Mode::Run,
                            &item,
                            ItemOutcome::Failed,
                            None,
                            Some(error.chain()),
                        );
                        Outcome::Failed { key: item.key, error, attempts }
                    }
                }
            }
        }
    }

    /// Audits the protection of an escrow item; a failed audit is a failure.
    /// With `verify_checksums`, also compares the two sides' checksums; where
    /// the source keeps tags, the two sides' tags.
    async fn audit(
        &self,
        source: &dyn Source,
        sink: &dyn Sink,
        limit: &AdaptiveLimit,
        item: Item,
    ) -> Outcome {
        let problems = if sink.audits() {
            match self.with_retries(limit, &item.key, || sink.audit(&item)).await {
                (Ok(problems), _) => problems,
                (Err(error), attempts) => {
                    return Outcome::Failed { key: item.key, error, attempts };
                }
            }
        } else {
            Vec::new()
        };
        if self.options.verify_checksums {
            let sums = self
                .with_retries(limit, &item.key, || async {
                    Ok((source.checksum(&item).await?, sink.checksum(&item).await?))
                })
                .await;
            match sums {
                (Ok((Some(a), Some(b))), _) if a != b => {
                    return Outcome::Mismatch { item, what: "checksum", primary: a, escrow: b };
                }
                (Ok(_), _) => {}
                (Err(error), attempts) => {
                    return Outcome::Failed { key: item.key, error, attempts };
                }
            }
        }
        if source.keeps_tags() {
            let tags = self
                .with_retries(limit, &item.key, || async {
                    Ok((source.tags(&item).await?, sink.tags(&item).await?))
                })
                .await;
            match tags {
                (Ok((Some(a), Some(b))), _) if a != b => {
                    let show = |t: BTreeMap<String, String>| {
                        let pairs: Vec<String> =
                            t.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                        format!("{{{}}}", pairs.join(", "))
                    };
                    return Outcome::Mismatch {
                        item,
                        what: "tags",
                        primary: show(a),
                        escrow: show(b),
                    };
                }
                (Ok(_), _) => {}
                (Err(error), attempts) => {
                    return Outcome::Failed { key: item.key, error, attempts };
                }
            }
        }
        Outcome::Same { key: item.key, size: item.size, problems }
    }

    /// Asks the sink whether a changed item is the same after all. A failed
    /// check counts as "differs": copying again is always safe.
    async fn confirmed_same(
        &self,
        source: &dyn Source,
        sink: &dyn Sink,
        limit: &AdaptiveLimit,
        item: &Item,
        escrow: &Item,
    ) -> bool {
        // First the sink's own evidence (for S3: the source ETag a copy
        // records), then full-content checksums where both sides keep one:
        // the same bytes re-uploaded with another part layout are the same.
        let check = || async {
            if sink.confirm_same(item, escrow).await? {
                return Ok(true);
            }
            // Only where both listings say a checksum is kept.
            if item.checksum_algorithm.is_none() || escrow.checksum_algorithm.is_none() {
                return Ok(false);
            }
            Ok(match (source.checksum(item).await?, sink.checksum(item).await?) {
                (Some(a), Some(b)) => a == b && strong(&a) && item.size == escrow.size,
                _ => false,
            })
        };
        match self.with_retries(limit, &item.key, check).await {
            (Ok(same), _) => same,
            (Err(e), _) => {
                tracing::debug!(key = %item.key, error = %e.chain(), "could not confirm; treating as changed");
                false
            }
        }
    }

    async fn copy_item(
        &self,
        source: &dyn Source,
        sink: &dyn Sink,
        limit: &AdaptiveLimit,
        item: Item,
    ) -> Outcome {
        self.emit(ProgressEvent::Started { key: item.key.clone(), size: item.size });
        let res = self
            .with_retries(limit, &item.key, || async {
                let payload = source.read(&item).await?;
                sink.write(&item, payload).await
            })
            .await;
        match res {
            (Ok(receipt), _) => {
                self.emit(ProgressEvent::Copied { key: item.key.clone(), bytes: receipt.bytes });
                // The copy is safe in escrow: the source may now undo what
                // reading needed (a share). A failure there is a warning.
                let warning = self.finish_item(source, limit, &item).await;
                let outcome =
                    if receipt.unchanged { ItemOutcome::InEscrow } else { ItemOutcome::Copied };
                self.log_item(Mode::Run, &item, outcome, receipt.fingerprint.clone(), None);
                if receipt.unchanged {
                    return Outcome::Same { key: item.key, size: item.size, problems: Vec::new() };
                }
                Outcome::Copied { bytes: receipt.bytes, parts: receipt.parts, warning }
            }
            (Err(error), attempts) => {
                self.log_item(Mode::Run, &item, ItemOutcome::Failed, None, Some(error.chain()));
                Outcome::Failed { key: item.key, error, attempts }
            }
        }
    }

    /// [`Source::finish`] for an item safe in escrow, with retries; a
    /// failure is returned as a warning.
    async fn finish_item(
        &self,
        source: &dyn Source,
        limit: &AdaptiveLimit,
        item: &Item,
    ) -> Option<String> {
        let (finished, _) = self.with_retries(limit, &item.key, || source.finish(item)).await;
        finished.err().map(|e| {
            format!("{} is in escrow, but finishing in the source failed: {}", item.key, e.chain())
        })
    }

    /// `fut`, unless the hard stop comes first.
    async fn or_stopped<T>(
        &self,
        key: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Err(stopped(key)),
            res = fut => res,
        }
    }

    /// Runs `op` until it succeeds, fails for good, runs out of attempts, is
    /// cancelled during a backoff or is stopped (see [`Executor::with_stop`]). Returns the result and the attempts made.
    async fn with_retries<T, F, Fut>(
        &self,
        limit: &AdaptiveLimit,
        key: &str,
        mut op: F,
    ) -> (Result<T>, u32)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let retry = self.options.retry;
        let mut attempt = 1;
        loop {
            let res = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return (Err(stopped(key)), attempt),
                res = op() => res,
            };
            match &res {
                Ok(_) => {
                    if let Some(n) = limit.on_success() {
                        self.emit(ProgressEvent::Concurrency { limit: n });
                    }
                }
                Err(e) if e.is_throttle() => {
                    let n = limit.on_throttle();
                    tracing::debug!(key, limit = n, "throttled: concurrency lowered");
                    self.emit(ProgressEvent::Throttled { key: key.to_string() });
                    self.emit(ProgressEvent::Concurrency { limit: n });
                }
                Err(_) => {}
            }
            match res {
                Ok(v) => return (Ok(v), attempt),
                Err(e) if e.is_retryable() && attempt < retry.max_attempts => {
                    let delay = retry.delay(attempt);
                    self.emit(ProgressEvent::Retrying {
                        key: key.to_string(),
                        attempt,
                        error: e.chain(),
                        delay,
                    });
                    tracing::debug!(key, attempt, ?delay, error = %e.chain(), "retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancel.cancelled() => {
                            let err = Error::new(ErrorKind::Cancelled, "copy", key, "")
                                .with_source(e);
                            return (Err(err), attempt);
                        }
                    }
                    attempt += 1;
                }
                Err(e) => return (Err(e), attempt),
            }
        }
    }
}

/// The error of an item the hard stop dropped in flight (a later run
/// copies it).
fn stopped(key: &str) -> Error {
    Error::new(ErrorKind::Cancelled, "stopped in flight:", key, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_caps_grow_exponentially_and_stop_at_max() {
        let r = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(r.cap(1), Duration::from_millis(100));
        assert_eq!(r.cap(2), Duration::from_millis(200));
        assert_eq!(r.cap(4), Duration::from_millis(800));
        assert_eq!(r.cap(5), Duration::from_secs(1));
        assert_eq!(r.cap(60), Duration::from_secs(1));
        for n in 1..8 {
            assert!(r.delay(n) <= r.cap(n));
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let r = RetryPolicy::default();
        let delays: std::collections::BTreeSet<_> = (0..50).map(|_| r.delay(3)).collect();
        assert!(delays.len() > 10, "full jitter should rarely repeat: {delays:?}");
    }
}
