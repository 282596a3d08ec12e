//! The [`Job`] contract: one unit of escrow work (a bucket, a table, a
//! snapshot type...) that plans, runs or verifies in a [`Mode`] and returns
//! a [`Report`], given what the run supplies in a [`JobContext`]:
//! cancellation, progress, the item log, the retry policy and the run's
//! switches. [`CopyJob`] is the job of any [`Source`] / [`Sink`] pair.
//!
//! ```
//! use escrow_sync_core::{CopyJob, Job, JobContext, Mode, Scope};
//! use escrow_sync_testkit::{MemBucket, MemSink, MemSource};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let primary = MemBucket::new("primary");
//! primary.put("a.txt", "hello");
//! let escrow = MemBucket::new("escrow");
//! let job: Box<dyn Job> =
//!     Box::new(CopyJob::new(MemSource::new(primary), MemSink::new(escrow.clone())));
//! let report = job.execute(Mode::Run, &JobContext::new()).await.unwrap();
//! assert_eq!(report.copied, 1);
//! assert_eq!(escrow.get("a.txt").unwrap().data, "hello");
//! # });
//! ```

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{
    Executor, ExecutorOptions, ItemLog, MassChangeGuard, Mode, ProgressFn, Report, Result,
    RetryPolicy, Scope, Sink, Source,
};

/// What a run gives every job: cancellation, progress, the item log, the
/// retry policy, and the run's switches (`--accept-mass-change`, `verify
/// --checksums`). Cheap to clone.
#[non_exhaustive]
#[derive(Clone, Default)]
pub struct JobContext {
    cancel: CancellationToken,
    stop: CancellationToken,
    progress: Option<ProgressFn>,
    item_log: Option<ItemLog>,
    retry: RetryPolicy,
    accept_mass_change: bool,
    verify_checksums: bool,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("cancelled", &self.cancel.is_cancelled())
            .field("stopped", &self.stop.is_cancelled())
            .field("progress", &self.progress.is_some())
            .field("item_log", &self.item_log.is_some())
            .field("retry", &self.retry)
            .field("accept_mass_change", &self.accept_mass_change)
            .field("verify_checksums", &self.verify_checksums)
            .finish()
    }
}

impl JobContext {
    /// A context that is never cancelled, with no progress and no item log,
    /// the default retry policy, the mass-change breaker on and no checksum
    /// comparison.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the job when `token` is cancelled: nothing new starts, work in
    /// flight finishes, and the report says it was cancelled.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Uses `token` as the hard stop: once cancelled, work in flight is
    /// stopped too and counts as failed (see [`Executor::with_stop`]); what
    /// was started is cleaned up (an S3 multipart upload is aborted). A
    /// drain timeout cancels it some time after the cancellation (see
    /// [`StopAfterDrain`]).
    pub fn with_stop(mut self, token: CancellationToken) -> Self {
        self.stop = token;
        self
    }

    /// Sends progress events to `f`.
    pub fn with_progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }

    /// Sends progress events to `f`, or nowhere.
    pub fn set_progress(mut self, f: Option<ProgressFn>) -> Self {
        self.progress = f;
        self
    }

    /// Sends every item's outcome in a run to `log` (a run manifest).
    pub fn with_item_log(mut self, log: ItemLog) -> Self {
        self.item_log = Some(log);
        self
    }

    /// Sends every item's outcome in a run to `log`, or nowhere.
    pub fn set_item_log(mut self, log: Option<ItemLog>) -> Self {
        self.item_log = log;
        self
    }

    /// The retry policy of each item (at least one attempt).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy { max_attempts: retry.max_attempts.max(1), ..retry };
        self
    }

    /// Lets a run copy a mass change the breaker would hold back (`run
    /// --accept-mass-change`: the operator confirmed it is legitimate).
    pub fn with_accept_mass_change(mut self, accept: bool) -> Self {
        self.accept_mass_change = accept;
        self
    }

    /// Makes `verify` also compare full-content checksums (`verify
    /// --checksums`).
    pub fn with_verify_checksums(mut self, on: bool) -> Self {
        self.verify_checksums = on;
        self
    }

    /// The cancellation token.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The hard-stop token.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Where progress events go, if anywhere.
    pub fn progress(&self) -> Option<&ProgressFn> {
        self.progress.as_ref()
    }

    /// Where item outcomes go, if anywhere.
    pub fn item_log(&self) -> Option<&ItemLog> {
        self.item_log.as_ref()
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// Whether a run lets a mass change through.
    pub fn accept_mass_change(&self) -> bool {
        self.accept_mass_change
    }

    /// Whether `verify` compares checksums.
    pub fn verify_checksums(&self) -> bool {
        self.verify_checksums
    }

    /// An [`Executor`] with `options` and this context's cancellation,
    /// progress, item log, retry policy and checksum switch (for jobs made
    /// of several executor passes). The mass-change guard stays as
    /// `options` set it: see [`MassChangeGuard::for_job`] with
    /// [`JobContext::accept_mass_change`].
    pub fn executor(&self, options: ExecutorOptions) -> Executor {
        let mut options =
            options.with_retry(self.retry).with_verify_checksums(self.verify_checksums);
        if let Some(log) = &self.item_log {
            options = options.with_item_log(log.clone());
        }
        let executor = Executor::new(options)
            .with_cancellation(self.cancel.clone())
            .with_stop(self.stop.clone());
        match &self.progress {
            Some(p) => executor.with_progress(p.clone()),
            None => executor,
        }
    }
}

/// Turns a cancellation into a hard stop after a drain time: once
/// `cancel` is cancelled, work in flight gets `drain` to finish, then
/// `stop` is cancelled (see [`JobContext::with_stop`]). The timer ends
/// when this value is dropped. Needs a Tokio runtime.
///
/// ```
/// use std::time::Duration;
/// use escrow_sync_core::{CancellationToken, StopAfterDrain};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let (cancel, stop) = (CancellationToken::new(), CancellationToken::new());
/// let _timer = StopAfterDrain::start(&cancel, &stop, Duration::from_millis(1));
/// cancel.cancel();
/// stop.cancelled().await; // 1 ms after the cancellation
/// # });
/// ```
#[derive(Debug)]
pub struct StopAfterDrain(tokio::task::JoinHandle<()>);

impl StopAfterDrain {
    /// Starts the timer.
    pub fn start(cancel: &CancellationToken, stop: &CancellationToken, drain: Duration) -> Self {
        let (cancel, stop) = (cancel.clone(), stop.clone());
        StopAfterDrain(tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = async {
                    cancel.cancelled().await;
                    tokio::time::sleep(drain).await;
                } => {
                    tracing::warn!(
                        drain_seconds = drain.as_secs_f64(),
                        "the drain time ran out: stopping the work in flight"
                    );
                    stop.cancel();
                }
            }
        }))
    }
}

impl Drop for StopAfterDrain {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One unit of escrow work: plans, runs or verifies in `mode`.
///
/// Object safe: a runner holds `Box<dyn Job>` of every kind and calls
/// [`Job::execute`] with each job's context. A job that returns `Err` stopped
/// (a listing or setup failure); failures of single items are in the
/// report.
#[async_trait]
pub trait Job: Send + Sync {
    /// A human-readable description, e.g. `s3://prod-assets/ -> s3://escrow/`.
    fn describe(&self) -> String;

    /// Runs the job in `mode` with what `ctx` supplies. `Plan` and `Verify`
    /// change nothing.
    async fn execute(&self, mode: Mode, ctx: &JobContext) -> Result<Report>;
}

#[async_trait]
impl<J: Job + ?Sized> Job for Box<J> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    async fn execute(&self, mode: Mode, ctx: &JobContext) -> Result<Report> {
        (**self).execute(mode, ctx).await
    }
}

#[async_trait]
impl<J: Job + ?Sized> Job for std::sync::Arc<J> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    async fn execute(&self, mode: Mode, ctx: &JobContext) -> Result<Report> {
        (**self).execute(mode, ctx).await
    }
}

/// The job of one [`Source`] / [`Sink`] pair, run by the [`Executor`].
///
/// Its own settings are the scope, the executor options (concurrency,
/// planning policy, difference limit, listing what escrow holds) and the
/// mass-change share; the context supplies cancellation, progress, the item
/// log, the retry policy, `verify` checksums and whether a mass change is
/// accepted (those replace what the options say).
///
/// ```
/// use escrow_sync_core::{CopyJob, ExecutorOptions, Job, JobContext, Mode, Scope};
/// use escrow_sync_testkit::{MemBucket, MemSink, MemSource};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let primary = MemBucket::new("primary");
/// primary.put("logs/a", "1");
/// primary.put("other/b", "2");
/// let escrow = MemBucket::new("escrow");
/// let job = CopyJob::new(MemSource::new(primary), MemSink::new(escrow.clone()))
///     .with_scope(Scope::with_prefix("logs/"))
///     .with_options(ExecutorOptions::new().with_concurrency(4));
/// let plan = job.execute(Mode::Plan, &JobContext::new()).await.unwrap();
/// assert_eq!(plan.missing, 1);
/// assert!(escrow.is_empty());
/// # });
/// ```
#[derive(Debug)]
pub struct CopyJob<S, K> {
    source: S,
    sink: K,
    scope: Scope,
    options: ExecutorOptions,
    max_change_percent: u8,
    mass_change_min_items: u64,
}

impl<S: Source, K: Sink> CopyJob<S, K> {
    /// Copies everything from `source` into `sink`, with default executor
    /// options and the default mass-change share
    /// ([`MassChangeGuard::DEFAULT_PERCENT`]).
    pub fn new(source: S, sink: K) -> Self {
        CopyJob {
            source,
            sink,
            scope: Scope::all(),
            options: ExecutorOptions::new(),
            max_change_percent: MassChangeGuard::DEFAULT_PERCENT,
            mass_change_min_items: MassChangeGuard::MIN_ITEMS,
        }
    }

    /// Only what `scope` selects.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// The executor options (concurrency, policy, difference limit, listing
    /// what escrow holds). Their retry policy, checksum switch, item log and
    /// mass-change guard are replaced by the context's and
    /// [`CopyJob::with_max_change_percent`].
    pub fn with_options(mut self, options: ExecutorOptions) -> Self {
        self.options = options;
        self
    }

    /// The mass-change breaker's share in percent (100: off). A run whose
    /// context accepts a mass change has no breaker.
    pub fn with_max_change_percent(mut self, percent: u8) -> Self {
        self.max_change_percent = percent;
        self
    }

    /// How many escrow items the job needs before the breaker can trip
    /// ([`MassChangeGuard::MIN_ITEMS`] unless set; a part of a sharded run
    /// takes [`MassChangeGuard::min_items_per_part`]).
    pub fn with_mass_change_min_items(mut self, n: u64) -> Self {
        self.mass_change_min_items = n;
        self
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The sink.
    pub fn sink(&self) -> &K {
        &self.sink
    }

    /// The scope.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The executor options.
    pub fn options(&self) -> &ExecutorOptions {
        &self.options
    }

    /// The mass-change share.
    pub fn max_change_percent(&self) -> u8 {
        self.max_change_percent
    }

    /// The executor this job runs with `ctx`.
    pub fn executor(&self, ctx: &JobContext) -> Executor {
        let guard = MassChangeGuard::for_job(self.max_change_percent, ctx.accept_mass_change())
            .map(|g| g.with_min_items(self.mass_change_min_items));
        ctx.executor(self.options.clone().with_mass_change_guard(guard))
    }
}

#[async_trait]
impl<S: Source, K: Sink> Job for CopyJob<S, K> {
    fn describe(&self) -> String {
        format!("{} -> {}", self.source.describe(), self.sink.describe())
    }

    async fn execute(&self, mode: Mode, ctx: &JobContext) -> Result<Report> {
        self.executor(ctx).execute(mode, &self.source, &self.sink, &self.scope).await
    }
}
