//! The [`Runner`]: connect, check every selected job (preflight), then run
//! them one after another, each under its lease, and write the run manifest.

use std::sync::Arc;

use escrow_sync_aws::{Connector, Sessions};
use escrow_sync_core::{
    CancellationToken, Error, ExecutorOptions, Job, JobContext, Mode, ProgressFn, Report, Scope,
};
use escrow_sync_s3::{
    S3CopyJob, S3Sink, S3Source, check_dest_bucket, check_dest_protection, check_kms_key,
    check_source_bucket,
};

#[cfg(feature = "dynamodb")]
use crate::dynamo;
use crate::spec::{Config, JobRef, S3Job};
#[cfg(feature = "cloudtrail")]
use crate::trail;
use crate::{lease, manifest, snapshots};

/// The outcome of one job.
#[derive(Debug)]
#[non_exhaustive]
pub struct JobOutcome {
    /// The job's name.
    pub name: String,
    /// The job's kind (`s3`, `dynamodb`, `ec2`, `rds`, `redshift`,
    /// `cloudtrail`).
    pub kind: &'static str,
    /// The report, when the job got that far.
    pub report: Option<Report>,
    /// A fatal error that stopped the job.
    pub error: Option<Error>,
    /// Whether the job streams bytes through this process.
    pub streamed: bool,
}

impl JobOutcome {
    /// The outcome of job `name` of `kind`: its report or the error that
    /// stopped it.
    pub fn new(name: impl Into<String>, kind: &'static str, result: Result<Report, Error>) -> Self {
        let (report, error) = match result {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        JobOutcome { name: name.into(), kind, report, error, streamed: false }
    }
}

/// One `plan`, `run` or `verify`: who ran it and when, and each job's
/// outcome.
#[derive(Debug)]
#[non_exhaustive]
pub struct Run {
    /// The run's id (its manifest's), times and accounts.
    pub info: crate::doc::RunInfo,
    /// Each selected job's outcome, in config order.
    pub jobs: Vec<JobOutcome>,
    /// What the config leaves unlocked or not encrypted with an escrow key,
    /// for the selected jobs and the run manifests
    /// ([`Config::protection_warnings_for`]): never a failure.
    pub protection_warnings: Vec<crate::ProtectionWarning>,
}

/// What a caller watches while jobs run (a terminal's progress bars).
pub trait Observer: Send + Sync {
    /// Job `name` starts in `mode`; the returned callback receives its
    /// progress events.
    fn job_started(&self, name: &str, mode: Mode) -> Option<ProgressFn> {
        let _ = (name, mode);
        None
    }
    /// Job `name` ended (whatever its outcome).
    fn job_finished(&self, name: &str) {
        let _ = name;
    }
}

/// How a run goes, beyond its mode.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Only this job (by name); all jobs when `None`.
    pub job: Option<String>,
    /// `verify`: also compare full-object checksums.
    pub checksums: bool,
    /// `run`: let a mass change through (`run --accept-mass-change`).
    pub accept_mass_change: bool,
    /// `run`: return once each Batch Operations job is created (`run
    /// --no-wait`); `status` shows it, the next run folds it in.
    pub no_wait: bool,
    /// `run`: only this part of each selected S3 job (`run --shard I/N`,
    /// see [`crate::shard`]); other jobs run in part 1 only.
    pub shard: Option<escrow_sync_s3::Shard>,
}

impl RunOptions {
    /// Every job, no checksums, the mass-change breaker on.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only job `name`.
    pub fn job(mut self, name: impl Into<String>) -> Self {
        self.job = Some(name.into());
        self
    }
    /// Only job `name`, or every job.
    pub fn set_job(mut self, name: Option<String>) -> Self {
        self.job = name;
        self
    }
    /// Compare full-object checksums in `verify`.
    pub fn checksums(mut self, on: bool) -> Self {
        self.checksums = on;
        self
    }
    /// Let a mass change through.
    pub fn accept_mass_change(mut self, on: bool) -> Self {
        self.accept_mass_change = on;
        self
    }
    /// Do not wait for Batch Operations jobs (`run --no-wait`).
    pub fn no_wait(mut self, on: bool) -> Self {
        self.no_wait = on;
        self
    }
    /// Run only this part of each selected S3 job, or whole jobs.
    pub fn set_shard(mut self, shard: Option<escrow_sync_s3::Shard>) -> Self {
        self.shard = shard;
        self
    }
}

/// Runs the jobs of a [`Config`]: `plan`, `run` or `verify`.
///
/// Preflight first: the escrow key, the manifest bucket and every selected
/// job's buckets, tables and trails are checked before anything is written;
/// an `Err` from [`Runner::run`] means nothing was changed. Then each job
/// runs under its lease (`run` only), and the run manifest is written into
/// escrow (`run` with `[escrow] manifest_bucket`).
pub struct Runner {
    config: Config,
    sessions: Option<Sessions>,
    observer: Option<Arc<dyn Observer>>,
    cancel: CancellationToken,
    stop: CancellationToken,
    drain: Option<std::time::Duration>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("jobs", &self.config.jobs().len()).finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner of `config`'s jobs; it connects to both accounts as the
    /// config says unless given [`Runner::with_sessions`].
    pub fn new(config: Config) -> Self {
        Runner {
            config,
            sessions: None,
            observer: None,
            cancel: CancellationToken::new(),
            stop: CancellationToken::new(),
            drain: None,
        }
    }

    /// Use these sessions (the caller's own credentials) instead of
    /// connecting.
    pub fn with_sessions(mut self, sessions: Sessions) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Report each job's progress to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Stop when `cancel` is cancelled: nothing new starts, work in flight
    /// finishes, the manifest is written and leases are released.
    pub fn with_cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Stop the work in flight when `stop` is cancelled (a second Ctrl-C):
    /// its items count as failed, half-done copies are cleaned up (S3
    /// multipart uploads aborted), then the manifest is written and leases
    /// are released as after a cancellation.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// After a cancellation, give the work in flight at most `drain`
    /// before stopping it as [`Runner::with_stop`] does (default: no limit).
    pub fn with_drain_timeout(mut self, drain: std::time::Duration) -> Self {
        self.drain = Some(drain);
        self
    }

    /// The hard stop, cancelled by [`Runner::with_stop`]'s token or after
    /// the drain timeout (kept running while the returned timer lives).
    pub(crate) fn hard_stop(
        &self,
    ) -> (CancellationToken, Option<escrow_sync_core::StopAfterDrain>) {
        let timer = self
            .drain
            .map(|d| escrow_sync_core::StopAfterDrain::start(&self.cancel, &self.stop, d));
        (self.stop.clone(), timer)
    }

    /// The observer, if any.
    pub(crate) fn observer(&self) -> Option<&Arc<dyn Observer>> {
        self.observer.as_ref()
    }

    /// The config this runner runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cancellation token the runner obeys.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The escrow session alone (for what never asks the primary).
    pub(crate) async fn escrow_session(&self) -> Result<escrow_sync_aws::Session, Error> {
        match &self.sessions {
            Some(s) => Ok(s.escrow.clone()),
            None => Connector::new().connect_escrow(&self.config.escrow_account()).await,
        }
    }

    async fn sessions(&self) -> Result<Sessions, Error> {
        match &self.sessions {
            Some(s) => Ok(s.clone()),
            None => {
                Connector::new()
                    .connect(&self.config.escrow_account(), &self.config.primary_account())
                    .await
            }
        }
    }

    /// Checks every selected job, then runs them in `mode`. An `Err` means
    /// nothing was changed; a job's own failure is in its [`JobOutcome`].
    /// With `[escrow] manifest_bucket`, a `run` writes its run manifest and
    /// a `verify` its verification record (what `status` reads).
    ///
    /// With `[escrow] metrics`, a `run` stopped before its jobs (a refused
    /// check, an unreachable primary) still publishes a failure for each
    /// selected job, so a run that never starts is not mere missing data.
    pub async fn run(&self, mode: Mode, options: &RunOptions) -> Result<Run, Error> {
        let result = self.run_jobs(mode, options).await;
        if let (Err(e), Mode::Run) = (&result, mode) {
            if e.kind() != escrow_sync_core::ErrorKind::Cancelled {
                self.renew_stopped(options).await;
            }
            if self.config.escrow.metrics_on() {
                self.publish_stopped(options, e).await;
            }
        }
        result
    }

    /// Rolling retention of a run that stopped before its jobs (a refused
    /// check, a primary that cannot be reached or was made unreachable):
    /// with escrow credentials alone, the locks of the selected S3 jobs'
    /// copies, export generation files and run manifests that end within
    /// the window are extended, the primary not being asked whether it still
    /// holds them, so that an attacker who breaks the primary cannot make
    /// escrow's locks lapse by waiting. Best effort: what happens is logged.
    async fn renew_stopped(&self, options: &RunOptions) {
        // A sharded run renews in part 1 only (see `S3CopyJob::with_part`).
        if options.shard.is_some_and(|s| !s.is_first()) {
            return;
        }
        let config = &self.config;
        let Ok(jobs) = config.select(options.job.as_deref()) else { return };
        let Ok(escrow) = self.escrow_session().await else { return };
        let mut sinks: Vec<(String, S3Sink)> = Vec::new();
        for job in &jobs {
            match *job {
                JobRef::S3(j) if j.object_lock.is_some() => {
                    sinks.push((j.name(), s3_sink(config, j, &escrow)));
                }
                #[cfg(feature = "dynamodb")]
                JobRef::DynamoDb(j) if j.object_lock.is_some() => {
                    if let Some(files) = dynamo::export_files(config, j, &escrow) {
                        sinks.push((j.name(), files));
                    }
                }
                _ => {}
            }
        }
        // Nothing reports for a run stopped before its jobs: the log tells.
        for (name, sink) in sinks {
            let renewal = sink.renew_due(|_| async { Ok(true) }).await;
            let job = format!("{name} (run stopped before its jobs)");
            escrow_sync_s3::Renewal::log(&renewal, &job, "escrow copies");
        }
        if config.escrow.manifest_object_lock.is_some()
            && let Some(store) = crate::manifest::store(config, &escrow)
        {
            let renewal = store.renew_due().await;
            escrow_sync_s3::Renewal::log(
                &renewal,
                "(run stopped before its jobs)",
                "run manifests",
            );
        }
    }

    /// Publishes one failure per selected job of a run that stopped before
    /// its jobs ran (best effort: without escrow credentials nothing can be
    /// published, and the alarm's missing data tells instead).
    async fn publish_stopped(&self, options: &RunOptions, error: &Error) {
        let config = &self.config;
        let Ok(jobs) = config.select(options.job.as_deref()) else { return };
        let Ok(escrow) = self.escrow_session().await else { return };
        let stopped: Vec<JobOutcome> = jobs
            .iter()
            .map(|j| {
                let why = Error::new(error.kind(), "run", j.name(), error.chain());
                JobOutcome::new(j.name(), j.kind(), Err(why))
            })
            .collect();
        let request = crate::status::StatusRequest::new();
        let now = std::time::SystemTime::now();
        if let Ok(status) = crate::status::status(config, &escrow, &request, now).await
            && let Some(warning) = crate::metrics::publish(config, &escrow, &stopped, &status).await
        {
            tracing::warn!("{warning}");
        }
    }

    async fn run_jobs(&self, mode: Mode, options: &RunOptions) -> Result<Run, Error> {
        let mut info = crate::doc::RunInfo::start();
        let config = &self.config;
        let (checksums, accept_mass_change) = (options.checksums, options.accept_mass_change);
        let cancel = &self.cancel;
        let (stop, _drain) = self.hard_stop();
        let mut jobs = config.select(options.job.as_deref())?;
        let shard = options.shard;
        if let Some(shard) = shard {
            crate::shard::check(config, mode)?;
            if !jobs.iter().any(|j| matches!(j, JobRef::S3(_))) {
                return Err(Error::invalid_config(
                    "--shard cuts S3 jobs into parts, and no [[s3]] job is selected: select one \
                     (--job) or run without --shard",
                ));
            }
            // Jobs of other kinds run once, in part 1.
            if !shard.is_first() {
                jobs.retain(|j| matches!(j, JobRef::S3(_)));
            }
        }
        let sessions = self.sessions().await?;
        let primary = escrow_sync_s3::client(&sessions.primary);
        let escrow = escrow_sync_s3::client(&sessions.escrow);
        let (primary_id, escrow_id) =
            (sessions.primary.account_id().to_string(), sessions.escrow.account_id().to_string());
        info = info.with_accounts(Some(escrow_id.clone()), Some(primary_id.clone()));
        let header = escrow_sync_core::manifest::Header::new(
            &info.run_id,
            crate::doc::TOOL_VERSION,
            config.digest(),
            &escrow_id,
            &primary_id,
        );
        if let Some(key) = &config.escrow.kms_key_id {
            check_kms_key(key, &escrow_id)?;
        }
        // The S3 jobs are built now, and the first one starts listing: its
        // first pages arrive while the checks below are made (listing
        // changes nothing; nothing is written before every check passed).
        let mut s3_jobs: Vec<Option<S3CopyJob>> = jobs
            .iter()
            .map(|job| match *job {
                // A part lists its own range, once its boundaries are known.
                JobRef::S3(_) if shard.is_some() => None,
                JobRef::S3(j) => Some(s3_job(config, j, &sessions)),
                _ => None,
            })
            .collect();
        if let Some(first) = s3_jobs.iter().flatten().next() {
            first.prefetch();
        }
        // Every check at once: the manifest bucket's and each job's.
        let manifest_check = async {
            if let (Some(bucket), Mode::Run | Mode::Verify) = (&config.escrow.manifest_bucket, mode)
            {
                check_dest_bucket(&escrow, bucket, &escrow_id).await?;
                let locked = config.escrow.manifest_object_lock.is_some();
                check_dest_protection(&escrow, bucket, false, locked).await?;
            }
            Ok::<_, Error>(())
        };
        let job_checks = futures::future::try_join_all(jobs.iter().map(|job| {
            let (primary, primary_id, sessions) = (&primary, &primary_id, &sessions);
            async move {
                Ok::<_, Error>(match *job {
                    JobRef::S3(job) => {
                        check_source_bucket(primary, &job.source_bucket, primary_id).await?;
                        let locked = job.object_lock.is_some();
                        check_escrow_bucket(
                            &sessions.escrow,
                            &job.dest_bucket,
                            job.allow_unversioned_dest,
                            locked,
                        )
                        .await?;
                        Ready::S3(job)
                    }
                    #[cfg(feature = "dynamodb")]
                    JobRef::DynamoDb(job) => {
                        Ready::DynamoDb(job, Box::new(dynamo::check(config, job, sessions).await?))
                    }
                    JobRef::Ec2(_) | JobRef::Rds(_) | JobRef::Redshift(_) => Ready::Snapshots(*job),
                    #[cfg(feature = "cloudtrail")]
                    JobRef::CloudTrail(job) => {
                        Ready::CloudTrail(job, Box::new(trail::check(job, sessions).await?))
                    }
                    // Refused when the config was parsed; said again for an
                    // embedder that changed the config since.
                    #[allow(unreachable_patterns)]
                    other => return Err(crate::spec::not_built(other.kind())),
                })
            }
        }));
        let ((), ready) = futures::future::try_join(manifest_check, job_checks).await?;
        let mut manifest = match (&config.escrow.manifest_bucket, mode) {
            (Some(_), Mode::Run) => {
                Some(escrow_sync_core::manifest::ManifestWriter::create(header.clone())?)
            }
            _ => None,
        };
        let warnings = sessions.warnings.clone();
        let run_id = info.run_id.clone();
        let mut outcomes = Vec::new();
        for (index, job) in ready.into_iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            let name = job.name();
            let callback = self.observer.as_ref().and_then(|o| o.job_started(&name, mode));
            let kind = job.kind();
            let item_log = manifest.as_mut().map(|m| {
                m.job(&name, kind);
                m.item_log(&name)
            });
            // One run per job: `run` holds the job's lease while it runs, and
            // the job gets a token of its own that a lost lease cancels.
            let cancel = cancel.child_token();
            // A part of a sharded run: its key range first (boundaries are
            // agreed on before the part's lease, which is the part's own).
            let job_shard = shard.filter(|_| matches!(job, Ready::S3(_)));
            let part = match (&job, job_shard) {
                (Ready::S3(j), Some(shard)) => {
                    let source = s3_job(config, j, &sessions).source().clone();
                    Some(crate::shard::part(config, j, &sessions, &source, shard, &run_id).await)
                }
                _ => None,
            };
            let shard_record = match (&part, job_shard) {
                (Some(Ok(p)), _) => Some(p.record.clone()),
                (_, Some(shard)) => Some(crate::shard::unknown_part(shard)),
                _ => None,
            };
            // Part 1 renews the job's escrow locks; failing before its job
            // runs (the primary denies or throttles the sampling listing, a
            // stored boundary record is refused) it renews them all the same
            // with escrow credentials alone, as a whole run stopped before
            // its jobs does: an attacker who breaks the primary cannot make
            // escrow's locks lapse by failing part 1 every time.
            if let (Some(Err(e)), Ready::S3(j), Some(shard)) = (&part, &job, job_shard)
                && shard.is_first()
                && e.kind() != escrow_sync_core::ErrorKind::Cancelled
            {
                renew_part_stopped(config, j, &sessions.escrow).await;
            }
            let part = match part {
                Some(Err(e)) => Err(e),
                Some(Ok(p)) => Ok(Some(p)),
                None => Ok(None),
            };
            let held = match (mode, &part) {
                (Mode::Run, Ok(_)) => {
                    match lease::take_part(
                        config,
                        job.job_ref(),
                        &sessions,
                        &run_id,
                        &cancel,
                        job_shard,
                    )
                    .await
                    {
                        Ok(lease) => Some(lease),
                        Err(e) => {
                            // Held by another run (or unreadable): this job
                            // is left alone, the others still run. (Part 1
                            // refused by a lease does not renew: the holder
                            // may be making the retention pass right now.)
                            if let Some(o) = &self.observer {
                                o.job_finished(&name);
                            }
                            let result = Err(e);
                            if let Some(m) = manifest.as_mut() {
                                let mut summary = manifest::summary(&name, &result);
                                summary.shard = shard_record.clone();
                                m.job_end(summary);
                            }
                            outcomes.push(JobOutcome::new(name, kind, result));
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let ctx = JobContext::new()
                .with_cancellation(cancel.clone())
                .with_stop(stop.clone())
                .set_progress(callback)
                .set_item_log(item_log)
                .with_accept_mass_change(accept_mass_change)
                .with_verify_checksums(checksums);
            let streamed = matches!(job, Ready::S3(j) if config.streams(j));
            let part = part.map(|p| p.map(|p| (S3CopyJob::with_part, p.range, p.notes, job_shard)));
            let mut part_notes = Vec::new();
            let runnable: Box<dyn Job + '_> = match job {
                Ready::S3(job) => match (s3_jobs[index].take(), &part) {
                    (_, Ok(Some((with_part, range, notes, Some(shard))))) => {
                        part_notes = notes.clone();
                        Box::new(with_part(s3_job(config, job, &sessions), range.clone(), *shard))
                    }
                    (Some(built), _) => Box::new(built.with_batch_wait(!options.no_wait)),
                    (None, _) => {
                        Box::new(s3_job(config, job, &sessions).with_batch_wait(!options.no_wait))
                    }
                },
                Ready::Snapshots(job) => {
                    Box::new(snapshots::SnapshotJob { config, job, sessions: &sessions })
                }
                #[cfg(feature = "dynamodb")]
                Ready::DynamoDb(job, checked) => Box::new(dynamo::DynamoJob {
                    config,
                    job,
                    checked: *checked,
                    sessions: &sessions,
                }),
                #[cfg(feature = "cloudtrail")]
                Ready::CloudTrail(job, checked) => Box::new(trail::TrailJob {
                    config,
                    job,
                    checked: *checked,
                    sessions: &sessions,
                }),
            };
            let result = match part {
                Err(e) => Err(e),
                Ok(_) => runnable.execute(mode, &ctx).await.map(|mut report| {
                    report.notes.extend(part_notes);
                    report
                }),
            };
            let (result, lease_lost) = match held {
                Some(lease) => lease.end(result).await,
                None => (result, None),
            };
            if let Some(o) = &self.observer {
                o.job_finished(&name);
            }
            if let Some(m) = manifest.as_mut() {
                let mut summary = manifest::summary(&name, &result);
                summary.shard = shard_record;
                m.job_end(summary);
            }
            let mut outcome = JobOutcome::new(name, kind, result);
            outcome.streamed = streamed;
            if let Some(report) = outcome.report.as_mut() {
                report.warnings.extend(warnings.iter().cloned());
                report.notes.extend(backup_vault_note(kind).map(str::to_string));
            }
            outcome.error = lease::job_error(outcome.error.take(), lease_lost);
            outcomes.push(outcome);
        }
        if let Some(m) = manifest {
            manifest::write(config, &sessions.escrow, m, false, &mut outcomes).await;
        }
        if mode == Mode::Verify {
            manifest::record_verification(config, &sessions.escrow, header, &mut outcomes).await;
        }
        if mode == Mode::Run && config.escrow.metrics_on() {
            // Every job, not only the run's: a metrics file is replaced
            // whole, and an alert on an absent series must not go quiet.
            let request = crate::status::StatusRequest::new();
            let now = std::time::SystemTime::now();
            let warning = match crate::status::status(config, &sessions.escrow, &request, now).await
            {
                Ok(status) => {
                    crate::metrics::publish(config, &sessions.escrow, &outcomes, &status).await
                }
                Err(e) => Some(format!("the metrics were not published: {}", e.chain())),
            };
            for report in outcomes.iter_mut().filter_map(|o| o.report.as_mut()) {
                report.warnings.extend(warning.clone());
            }
        }
        info.finish();
        let protection_warnings = config.protection_warnings_for(options.job.as_deref());
        Ok(Run { info, jobs: outcomes, protection_warnings })
    }
}

/// An account id, unless unknown (an S3-compatible store stated none).
/// The escrow-only retention pass of part 1 of a sharded run that failed
/// before its job ran: the locks of `job`'s escrow copies that end within
/// the window are extended without asking the primary (as
/// [`Runner::run`] does for a run stopped before its jobs). Best effort:
/// what happens is logged.
async fn renew_part_stopped(config: &Config, job: &S3Job, escrow: &escrow_sync_aws::Session) {
    if job.object_lock.is_none() {
        return;
    }
    let sink = s3_sink(config, job, escrow);
    let renewal = sink.renew_due(|_| async { Ok(true) }).await;
    let name = format!("{} (part 1 stopped before its job)", job.name());
    escrow_sync_s3::Renewal::log(&renewal, &name, "escrow copies");
}

pub(crate) fn known(id: &str) -> Option<String> {
    (!id.is_empty()).then(|| id.to_string())
}

/// Checks an escrow bucket a job writes: escrow's own, versioned (unless
/// allowed otherwise), with Object Lock when the job locks copies.
pub(crate) async fn check_escrow_bucket(
    escrow: &escrow_sync_aws::Session,
    bucket: &str,
    allow_unversioned: bool,
    locked: bool,
) -> Result<(), Error> {
    let client = escrow_sync_s3::client(escrow);
    check_dest_bucket(&client, bucket, escrow.account_id()).await?;
    check_dest_protection(&client, bucket, allow_unversioned, locked).await
}

/// A job that passed its checks.
enum Ready<'a> {
    S3(&'a S3Job),
    #[cfg(feature = "dynamodb")]
    DynamoDb(&'a crate::spec::DynamoDbJob, Box<dynamo::Checked>),
    Snapshots(JobRef<'a>),
    #[cfg(feature = "cloudtrail")]
    CloudTrail(&'a crate::spec::CloudTrailJob, Box<trail::Checked>),
}

impl<'a> Ready<'a> {
    /// The configured job.
    fn job_ref(&self) -> JobRef<'a> {
        match self {
            Ready::S3(j) => JobRef::S3(j),
            #[cfg(feature = "dynamodb")]
            Ready::DynamoDb(j, _) => JobRef::DynamoDb(j),
            Ready::Snapshots(j) => *j,
            #[cfg(feature = "cloudtrail")]
            Ready::CloudTrail(j, _) => JobRef::CloudTrail(j),
        }
    }

    fn kind(&self) -> &'static str {
        self.job_ref().kind()
    }

    fn name(&self) -> String {
        self.job_ref().name()
    }
}

/// The note of every `[[rds]]` and `[[redshift]]` report: those copies
/// have no native lock (issue 17, point 2).
pub(crate) fn backup_vault_note(kind: &str) -> Option<&'static str> {
    matches!(kind, "rds" | "redshift").then_some(
        "RDS and Redshift snapshot copies have no lock of their own: the escrow operator can \
         delete them; for copies nobody can delete, enable the escrow template's AWS Backup \
         vault with Vault Lock (policy --output cloudformation, parameter EnableBackupVault)",
    )
}

/// The escrow side of an `[[s3]]` job, with escrow credentials.
pub(crate) fn s3_sink(config: &Config, job: &S3Job, escrow: &escrow_sync_aws::Session) -> S3Sink {
    S3Sink::from_client(escrow_sync_s3::client(escrow), &job.dest_bucket)
        .with_dest_prefix(&job.dest_prefix)
        .with_expected_owner(known(escrow.account_id()))
        .with_multipart(job.multipart())
        .with_protection(job.protection(config.escrow.kms_key_id.clone()))
        .with_versions(job.versions)
}

/// An `[[s3]]` job as a [`Job`]: its source in the primary, its sink in
/// escrow, its executor options; a run first aborts the multipart uploads
/// interrupted runs left behind.
pub(crate) fn s3_job(config: &Config, job: &S3Job, sessions: &Sessions) -> S3CopyJob {
    let primary = escrow_sync_s3::client(&sessions.primary);
    let pacer = job.max_requests_per_second.map(escrow_sync_core::RequestPacer::per_second);
    let source = S3Source::from_client(primary, &job.source_bucket)
        .with_streaming(config.streams(job))
        .with_versions(job.versions)
        .with_tags(job.tag_mode())
        .with_pacer(pacer.clone())
        .with_prefix(&job.prefix)
        .with_expected_owner(known(sessions.primary.account_id()));
    let sink = s3_sink(config, job, &sessions.escrow).with_pacer(pacer);
    let age = std::time::Duration::from_secs(job.abort_stale_uploads_after_hours * 3600);
    S3CopyJob::new(source, sink)
        .with_scope(Scope::with_prefix(&job.prefix))
        .with_options(ExecutorOptions::new().with_concurrency(job.concurrency))
        .with_max_change_percent(job.max_change_percent)
        .with_abort_stale_uploads_after(Some(age))
        .with_engine(s3_engine(job), batch_options(config, job, &sessions.escrow))
}

/// The engine of an `[[s3]]` job (validated: batch settings are set).
fn s3_engine(job: &S3Job) -> escrow_sync_s3::Engine {
    use crate::spec::S3Engine;
    let threshold = job.batch_threshold.unwrap_or(escrow_sync_s3::DEFAULT_BATCH_THRESHOLD);
    match job.engine() {
        S3Engine::Direct => escrow_sync_s3::Engine::Direct,
        S3Engine::BatchOperations => escrow_sync_s3::Engine::BatchOperations,
        S3Engine::Auto => escrow_sync_s3::Engine::Auto { threshold },
    }
}

/// The Batch Operations settings of an `[[s3]]` job, if it may use them.
pub(crate) fn batch_options(
    config: &Config,
    job: &S3Job,
    escrow: &escrow_sync_aws::Session,
) -> Option<escrow_sync_s3::BatchOptions> {
    if job.engine() == crate::spec::S3Engine::Direct {
        return None;
    }
    let (bucket, role) = (job.batch_bucket.as_ref()?, config.escrow.batch_role_arn.as_ref()?);
    let control = escrow_sync_s3::BatchControl::for_session(escrow);
    Some(
        escrow_sync_s3::BatchOptions::new(control, escrow.account_id(), role, bucket).with_prefix(
            job.batch_prefix
                .clone()
                .unwrap_or_else(|| escrow_sync_s3::DEFAULT_BATCH_PREFIX.to_string()),
        ),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rds_and_redshift_reports_recommend_the_locked_backup_vault() {
        for kind in ["rds", "redshift"] {
            let note = super::backup_vault_note(kind).unwrap();
            assert!(note.contains("EnableBackupVault") && note.contains("Vault Lock"), "{note}");
        }
        for kind in ["s3", "dynamodb", "ec2", "cloudtrail"] {
            assert_eq!(super::backup_vault_note(kind), None);
        }
    }
}
