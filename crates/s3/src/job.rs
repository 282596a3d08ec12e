//! [`S3CopyJob`]: the [`Job`] of one primary bucket (or prefix) and its
//! escrow bucket.

use std::time::Duration;

use async_trait::async_trait;
use escrow_sync_core::{CopyJob, ExecutorOptions, Job, JobContext, Mode, Report, Result, Scope};

use crate::{S3Sink, S3Source};

/// How old a multipart upload left by an interrupted run must be before a
/// run aborts it, unless set otherwise (`abort_stale_uploads_after_hours =
/// 24`).
pub const DEFAULT_STALE_UPLOAD_AGE: Duration = Duration::from_secs(24 * 3600);

/// Copies a primary bucket (under the source's prefix) into an escrow
/// bucket: a [`CopyJob`] of an [`S3Source`] and an [`S3Sink`] that, in a
/// run, first aborts the multipart uploads an interrupted run left behind
/// (see [`S3Sink::abort_stale_uploads`]) and says so in the report's
/// warnings. A streamed job's report notes how its memory limit is spent
/// ([`crate::MultipartOptions::streaming_summary`]).
///
/// ```no_run
/// use escrow_sync_core::{Job, JobContext, Mode};
/// use escrow_sync_s3::{S3CopyJob, S3Sink, S3Source};
///
/// # async fn demo(primary: aws_sdk_s3::Client, escrow: aws_sdk_s3::Client) -> escrow_sync_core::Result<()> {
/// let source = S3Source::from_client(primary, "prod-assets").with_prefix("data/");
/// let sink = S3Sink::from_client(escrow, "escrow-prod-assets");
/// let job: Box<dyn Job> = Box::new(S3CopyJob::new(source, sink));
/// let report = job.execute(Mode::Run, &JobContext::new()).await?;
/// println!("copied {} objects", report.copied);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct S3CopyJob {
    copy: CopyJob<S3Source, S3Sink>,
    abort_stale_after: Option<Duration>,
    pub(crate) batch: Option<(crate::Engine, crate::BatchOptions)>,
    /// A part of a sharded run: the whole job's sink (for the retention
    /// pass) and whether this part runs the job-wide chores.
    part: Option<Part>,
}

/// What a part of a sharded run keeps of the whole job.
#[derive(Debug)]
struct Part {
    whole: S3Sink,
    first: bool,
}

impl S3CopyJob {
    /// Copies what `source` lists (everything under its prefix) into
    /// `sink`, with default executor options, the default mass-change share
    /// and stale uploads aborted after [`DEFAULT_STALE_UPLOAD_AGE`].
    pub fn new(source: S3Source, sink: S3Sink) -> Self {
        let scope = Scope::with_prefix(source.prefix());
        S3CopyJob {
            copy: CopyJob::new(source, sink).with_scope(scope),
            abort_stale_after: Some(DEFAULT_STALE_UPLOAD_AGE),
            batch: None,
            part: None,
        }
    }

    /// Runs only the keys in `range`, one part of a sharded run
    /// ([`crate::shard`]): the primary's and escrow's listings are both cut
    /// to it. Only `shard`'s part 1 aborts stale uploads and makes
    /// the rolling retention pass (over the whole job's ledger: the ledger's
    /// due objects mix keys of every part, and concurrent passes would file
    /// them again twice); the others only write the ledger entries of
    /// their own locked copies, which never race (each batch is an object
    /// of its own).
    ///
    /// The mass-change breaker of a part needs only
    /// [`escrow_sync_core::MassChangeGuard::min_items_per_part`] escrow items
    /// (each part counts those of its range only): a job that would trip it
    /// whole trips it in parts.
    pub fn with_part(self, range: crate::KeyRange, shard: crate::Shard) -> Self {
        let first = shard.is_first();
        let whole = self.sink().clone();
        let copy = CopyJob::new(
            self.source().clone().with_key_range(range.clone()),
            whole.clone().with_key_range(range),
        )
        .with_scope(self.copy.scope().clone())
        .with_options(self.copy.options().clone())
        .with_max_change_percent(self.copy.max_change_percent())
        .with_mass_change_min_items(escrow_sync_core::MassChangeGuard::min_items_per_part(
            shard.count(),
        ));
        S3CopyJob {
            copy,
            abort_stale_after: self.abort_stale_after.filter(|_| first),
            // A part copies directly (sharded runs refuse other engines).
            batch: None,
            part: Some(Part { whole, first }),
        }
    }

    /// Copies a run's objects with `engine`; Batch Operations (always, or
    /// above `auto`'s threshold) with `options` (see [`crate::BatchOptions`]).
    /// Plans and verifies stay direct.
    pub fn with_engine(
        mut self,
        engine: crate::Engine,
        options: Option<crate::BatchOptions>,
    ) -> Self {
        self.batch = options.filter(|_| engine != crate::Engine::Direct).map(|o| (engine, o));
        self.place_copy_records();
        self
    }

    /// Only what `scope` selects (by default: the source's prefix).
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.copy = self.copy.with_scope(scope);
        self
    }

    /// The executor options (concurrency, policy...; see
    /// [`CopyJob::with_options`]).
    pub fn with_options(mut self, options: ExecutorOptions) -> Self {
        self.copy = self.copy.with_options(options);
        self
    }

    /// The mass-change breaker's share in percent (100: off).
    pub fn with_max_change_percent(mut self, percent: u8) -> Self {
        self.copy = self.copy.with_max_change_percent(percent);
        self
    }

    /// Aborts, before a run, escrow-sync's multipart uploads left more than
    /// `age` ago (`None`: never looks for them).
    pub fn with_abort_stale_uploads_after(mut self, age: Option<Duration>) -> Self {
        self.abort_stale_after = age;
        self
    }

    /// Starts the source's listing now, ahead of [`Job::execute`] (which
    /// takes it): the checks and the lease before a run then overlap its
    /// first pages. Listing changes nothing. The escrow side is listed only
    /// once the job runs, under its lease: a listing made before the lease
    /// could miss what another run copied meanwhile and copy it again.
    pub fn prefetch(&self) {
        self.source().prefetch(self.copy.scope());
    }

    /// The pair and its settings.
    pub fn copy_job(&self) -> &CopyJob<S3Source, S3Sink> {
        &self.copy
    }

    /// The primary side.
    pub fn source(&self) -> &S3Source {
        self.copy.source()
    }

    /// The escrow side.
    pub fn sink(&self) -> &S3Sink {
        self.copy.sink()
    }
}

impl S3CopyJob {
    /// Rolling retention: the escrow copies of objects still in the primary
    /// whose lock ends within the window get `days` more
    /// ([`S3Sink::renew_retention`]; nothing without Object Lock).
    async fn renewal(&self) -> Result<crate::Renewal> {
        let sink = match &self.part {
            None => self.sink(),
            Some(Part { first: false, .. }) => {
                return self.sink().flush_ledger().await.map(|()| crate::Renewal::default());
            }
            Some(Part { whole, first: true }) => whole,
        };
        let dest = sink.dest_key("");
        let source = self.source();
        sink.renew_retention(|key: String| {
            let key = key.strip_prefix(dest.as_str()).unwrap_or(&key).to_string();
            async move { source.contains(&key).await }
        })
        .await
    }
}

#[async_trait]
impl Job for S3CopyJob {
    fn describe(&self) -> String {
        self.copy.describe()
    }

    async fn execute(&self, mode: Mode, ctx: &JobContext) -> Result<Report> {
        let mut warnings = Vec::new();
        if mode == Mode::Run
            && let Some(age) = self.abort_stale_after
        {
            match self.sink().abort_stale_uploads(age).await {
                Ok(0) => {}
                Ok(n) => warnings.push(format!(
                    "aborted {n} multipart upload(s) that an interrupted run left in s3://{}",
                    self.sink().bucket()
                )),
                Err(e) => warnings.push(format!(
                    "could not look for multipart uploads left by interrupted runs: {}",
                    e.chain()
                )),
            }
        }
        let run = match (&self.batch, mode) {
            (Some((engine, options)), Mode::Run) => {
                match self.execute_batch(*engine, options, ctx).await {
                    Ok(crate::batch::Batched::Done(report)) => Ok(report),
                    Ok(crate::batch::Batched::Direct(folded)) => {
                        // A job an earlier run left, folded before `auto`
                        // chose the direct path: its outcome stays reported.
                        self.copy.execute(mode, ctx).await.map(|mut report| {
                            report.absorb(folded);
                            report
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            _ => self.copy.execute(mode, ctx).await,
        };
        // Copies a hard stop dropped half-way abort their uploads meanwhile.
        self.sink().settle().await;
        // Rolling retention, even when the copy failed (a primary that
        // refuses or floods the copy must not stop renewals: the primary is
        // only asked whether it still holds an object, and a refusal keeps
        // the copy locked). A hard stop only writes the ledger.
        let renewal = match mode {
            Mode::Run if !ctx.cancellation().is_cancelled() => Some(self.renewal().await),
            Mode::Run => Some(self.sink().flush_ledger().await.map(|()| crate::Renewal::default())),
            _ => None,
        };
        let mut report = crate::Renewal::settle(run, renewal, &self.describe(), "escrow copies")?;
        report.warnings.extend(warnings);
        if self.source().streaming() && mode != Mode::Verify {
            report.notes.push(format!("streamed: {}", self.sink().multipart().streaming_summary()));
        }
        Ok(report)
    }
}
