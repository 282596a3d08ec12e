//! escrow-sync as a library: keep an offsite, append-only copy of an AWS
//! account in a second account, the *escrow*, that the primary's people and
//! credentials cannot reach.
//!
//! This facade is what a platform team embeds. It holds what makes
//! escrow-sync an escrow beyond one Source/Sink pair:
//!
//! - [`spec`]: the config model, parsed from TOML or built in code, and
//!   validated the same way either way;
//! - [`Runner`]: preflight checks, then every job kind under its lease
//!   through core's [`Job`] contract, then the run manifest, for `plan`,
//!   `run` and `verify`; also [`Runner::verify_offline`] (escrow
//!   credentials only), [`Runner::prune`] and [`Runner::restore`];
//! - [`restore`]: one request and one report type for every job kind, with
//!   drills;
//! - [`status`]: the age of each job's newest verified copy, from escrow
//!   alone;
//! - [`doc`]: the JSON document of every command, as the binary prints it;
//! - [`protection`]: what a config leaves unlocked or not under an escrow
//!   key, said at plan time and in every report;
//! - `governance`: least-privilege policies and the isolation audit.
//!
//! The service crates are re-exported ([`core`], [`aws`], [`s3`], and
//! `dynamodb`, `ec2`, `rds`, `redshift`, `cloudtrail`, `governance_checks`
//! when their features are on). One cargo feature per service: `s3`,
//! `dynamodb`, `ec2`, `rds`, `redshift`, `cloudtrail`, `governance`, all on by
//! default; a build without one refuses a config that names it.
//!
//! # Walk-through: one bucket and one table
//!
//! This is `examples/embed_s3_dynamodb.rs` in short (the example is the whole
//! program; `cargo xtask test` runs it against the emulator).
//!
//! 1. **Sessions from your own `SdkConfig`s.** escrow-sync builds no
//!    credentials behind your back: give it the escrow account's
//!    configuration and the primary's reader role assumed through it.
//!    [`Session::identify`](aws::Session::identify) asks STS who each one is;
//!    [`Sessions::new`](aws::Sessions::new) refuses one account on both
//!    sides.
//! 2. **A config built in code.** [`spec::S3Job::new`] and
//!    [`spec::DynamoDbJob::to_table`] take the keys you name and every other
//!    key's default (versioned escrow bucket, point-in-time recovery and
//!    deletion protection on the escrow table, the mass-change breaker at
//!    25 %); [`spec::Config::validated`] checks it as a file is checked.
//! 3. **Run it.** [`Runner::run`] checks every job before anything is
//!    written (an `Err` means nothing changed), then runs each one; a job's
//!    own failure is in its [`JobOutcome`], and [`Verdict::of_jobs`] says
//!    what the run came to.
//!
//! ```no_run
//! use escrow_sync::aws::{Session, Sessions};
//! use escrow_sync::spec::{Config, DynamoDbJob, EscrowSection, PrimarySection, S3Job};
//! use escrow_sync::{Mode, RunOptions, Runner, Verdict};
//!
//! # async fn embed(
//! #     escrow_config: aws_config::SdkConfig,
//! #     primary_config: aws_config::SdkConfig,
//! # ) -> Result<(), escrow_sync::Error> {
//! // 1. Your own configurations: the escrow's, and the primary's reader
//! //    role assumed with the escrow's credentials.
//! let escrow = Session::identify(escrow_config, "escrow").await?;
//! let primary = Session::identify(primary_config, "primary").await?;
//!
//! // 2. One bucket and one table, every other key at its default.
//! let config = Config::new(EscrowSection::new("eu-west-1"), PrimarySection::new(primary.account_id()))
//!     .with_s3(S3Job::new("prod-assets", "escrow-prod-assets"))
//!     .with_dynamodb(DynamoDbJob::to_table("orders", "escrow-orders"))
//!     .validated("my-tool")?;
//!
//! // 3. Run, and read the reports.
//! let runner = Runner::new(config).with_sessions(Sessions::new(escrow, primary)?);
//! let run = runner.run(Mode::Run, &RunOptions::new()).await?;
//! for job in &run.jobs {
//!     if let Some(r) = &job.report {
//!         println!("{}: copied {}, failed {}", job.name, r.copied, r.failed);
//!     }
//! }
//! assert_eq!(Verdict::of_jobs(Mode::Run, &run.jobs), Verdict::Ok);
//! # Ok(())
//! # }
//! ```
//!
//! A config file works the same way: `Config::load(path)` or
//! `Config::parse(text, origin)`, then `Runner::new(config)` connects as the
//! file says.
#![deny(missing_docs)]

pub mod doc;
#[cfg(feature = "dynamodb")]
mod dynamo;
#[cfg(feature = "governance")]
pub mod governance;
mod lease;
mod manifest;
mod metrics;
pub mod protection;
pub mod report;
pub mod restore;
mod runner;
pub mod shard;
mod snapshots;
pub mod spec;
pub mod stats;
pub mod status;
#[cfg(feature = "cloudtrail")]
mod trail;

pub use escrow_sync_aws as aws;
#[cfg(feature = "cloudtrail")]
pub use escrow_sync_cloudtrail as cloudtrail;
pub use escrow_sync_core as core;
pub use escrow_sync_core::{CancellationToken, Error, ErrorKind, Job, JobContext, Mode, Report};
#[cfg(feature = "dynamodb")]
pub use escrow_sync_dynamodb as dynamodb;
#[cfg(feature = "ec2")]
pub use escrow_sync_ec2 as ec2;
#[cfg(feature = "governance")]
pub use escrow_sync_governance as governance_checks;
#[cfg(feature = "rds")]
pub use escrow_sync_rds as rds;
#[cfg(feature = "redshift")]
pub use escrow_sync_redshift as redshift;
pub use escrow_sync_s3 as s3;

pub use doc::RunInfo;
pub use manifest::SOURCE as OFFLINE_SOURCE;
pub use protection::ProtectionWarning;
pub use runner::{JobOutcome, Observer, Run, RunOptions, Runner};
pub use snapshots::{PruneFailure, PruneOutcome};
#[cfg(feature = "cloudtrail")]
pub use trail::EventsRequest;

/// What a command came to, whatever its kind; the binary turns it into an
/// exit code (0, 1, 3, 2 in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// All good.
    Ok,
    /// Some items failed (or the run was cancelled).
    Failed,
    /// Findings: verify found differences, a breaker stopped a run, a drill
    /// found a mismatch, a prune found nothing it could vouch for.
    Findings,
    /// A fatal error: invalid config or usage, a refusal, or a job that
    /// could not run for such a reason.
    Fatal,
}

impl Verdict {
    /// The verdict of an error that stopped a command (or a job): a fault
    /// that outlasted the retry budget (throttling, a transient failure:
    /// [`Error::is_retryable`]) is a failure to run again later, never
    /// bad input; anything else is fatal.
    pub fn of_error(error: &Error) -> Verdict {
        if error.is_retryable() { Verdict::Failed } else { Verdict::Fatal }
    }

    /// The verdict of a `plan`, `run` or `verify` (online or offline).
    pub fn of_jobs(mode: Mode, jobs: &[JobOutcome]) -> Verdict {
        let stopped = jobs.iter().filter(|j| j.error.is_some() || j.report.is_none());
        if stopped.clone().any(|j| j.error.as_ref().is_none_or(|e| !e.is_retryable())) {
            return Verdict::Fatal;
        }
        // A job stopped by a fault that outlasted the retries failed.
        let faulted = stopped.clone().next().is_some();
        let reports = jobs.iter().filter_map(|j| j.report.as_ref());
        // A tripped mass-change breaker is an incident to look at, not a
        // failure to retry: it outranks item failures.
        let mass_change = |r: &Report| {
            r.findings.iter().any(|f| f.kind.as_deref() == Some(escrow_sync_core::MASS_CHANGE))
        };
        if mode == Mode::Run && reports.clone().any(mass_change) {
            return Verdict::Findings;
        }
        if faulted || reports.clone().any(|r| r.failed > 0 || r.cancelled) {
            return Verdict::Failed;
        }
        if mode == Mode::Verify
            && reports.clone().any(|r| r.missing > 0 || r.different > 0 || r.unprotected > 0)
        {
            return Verdict::Findings;
        }
        Verdict::Ok
    }

    /// The verdict of a prune.
    pub fn of_prune(outcomes: &[PruneOutcome]) -> Verdict {
        snapshots::prune_verdict(outcomes)
    }
}

impl Runner {
    /// `verify --offline`: each selected job checked against the newest run
    /// manifest that finished it, with escrow credentials only (the
    /// primary may be gone).
    /// It is not recorded for `status`: it checks escrow against what a run
    /// recorded, not against the primary, so it vouches for no newer copy
    /// (a scheduled offline verify must not keep a job that no longer runs
    /// looking fresh).
    pub async fn verify_offline(&self, options: &RunOptions) -> Result<Run, Error> {
        let mut info = RunInfo::start();
        let escrow = self.escrow_session().await?;
        info = info.with_accounts(
            Some(escrow.account_id().to_string()),
            Some(self.config().primary.account_id.clone()),
        );
        let jobs = manifest::verify_offline(self.config(), options.job.as_deref(), &escrow).await?;
        info.finish();
        let protection_warnings = self.config().protection_warnings_for(options.job.as_deref());
        Ok(Run { info, jobs, protection_warnings })
    }

    /// `prune`: the keep_* retention of the selected snapshot jobs applied
    /// to their escrow copies from escrow's own records (escrow
    /// credentials only). A dry run unless `apply`; `accept_mass_delete`
    /// deletes past `max_delete_percent`.
    pub async fn prune(
        &self,
        job: Option<&str>,
        apply: bool,
        accept_mass_delete: bool,
    ) -> Result<Vec<PruneOutcome>, Error> {
        let config = self.config();
        let jobs = snapshots::prunable(config, job)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // Escrow credentials only: prune works with the primary gone, and
        // nothing the primary shows can steer it.
        let escrow = self.escrow_session().await?;
        let mut outcomes = Vec::new();
        for job in jobs {
            outcomes.push(
                snapshots::prune(config, job, &escrow, apply, accept_mass_delete, self.cancel())
                    .await,
            );
        }
        Ok(outcomes)
    }

    /// `status`: each selected job's last run and the age of its newest
    /// verified copy, from escrow alone (see [`status`]).
    pub async fn status(
        &self,
        request: &status::StatusRequest,
    ) -> Result<(RunInfo, status::StatusReport), Error> {
        let mut info = RunInfo::start();
        let escrow = self.escrow_session().await?;
        info = info.with_accounts(
            Some(escrow.account_id().to_string()),
            Some(self.config().primary.account_id.clone()),
        );
        let mut report =
            status::status(self.config(), &escrow, request, std::time::SystemTime::now()).await?;
        report.warnings.extend(metrics::publish(self.config(), &escrow, &[], &report).await);
        info.finish();
        Ok((info, report))
    }

    /// `trail events`: the escrowed CloudTrail events of one
    /// `[[cloudtrail]]` job that `request` selects, from escrow alone,
    /// handed to `sink` day by day (memory stays with one day). An event is
    /// proven (`verified`) only when its log file hashes to what a digest
    /// signed with CloudTrail's public keys lists; events of other files
    /// come marked with why, apart from the day's proven ones.
    #[cfg(feature = "cloudtrail")]
    pub async fn trail_events(
        &self,
        request: &EventsRequest,
        sink: &mut dyn cloudtrail::EventSink,
    ) -> Result<(RunInfo, cloudtrail::TimelineSummary), Error> {
        // Bad input is refused before any credential is asked for.
        trail::job_named(self.config(), &request.job)?;
        request.query()?;
        let (mut info, escrow) = self.escrow_info().await?;
        let summary = trail::events(self.config(), request, &escrow, sink).await?;
        info.finish();
        Ok((info, summary))
    }

    /// `trail athena`: the Athena DDL (partition projection by account,
    /// region and day) and example queries over one `[[cloudtrail]]` job's
    /// escrow copy, from escrow's folder names alone.
    #[cfg(feature = "cloudtrail")]
    pub async fn trail_athena(&self, job: &str) -> Result<(RunInfo, cloudtrail::AthenaDdl), Error> {
        trail::job_named(self.config(), job)?;
        let (mut info, escrow) = self.escrow_info().await?;
        let ddl = trail::athena(self.config(), job, &escrow).await?;
        info.finish();
        Ok((info, ddl))
    }

    /// The escrow session, and a [`RunInfo`] started now naming both
    /// accounts.
    #[cfg(feature = "cloudtrail")]
    async fn escrow_info(&self) -> Result<(RunInfo, escrow_sync_aws::Session), Error> {
        let info = RunInfo::start();
        let escrow = self.escrow_session().await?;
        let info = info.with_accounts(
            Some(escrow.account_id().to_string()),
            Some(self.config().primary.account_id.clone()),
        );
        Ok((info, escrow))
    }

    /// Restores one job's data from escrow (see [`restore`]), reporting its
    /// copies to the observer as a run does (`Mode::Run` for an apply or a
    /// drill, `Mode::Plan` for a dry run), and obeying the cancellation,
    /// the hard stop and the drain timeout.
    pub async fn restore(
        &self,
        request: &restore::RestoreRequest,
    ) -> Result<restore::RestoreReport, Error> {
        let (stop, _drain) = self.hard_stop();
        let mode = if request.apply || request.drill { Mode::Run } else { Mode::Plan };
        let progress = self.observer().and_then(|o| o.job_started(&request.job, mode));
        let ctx = JobContext::new()
            .with_cancellation(self.cancel().clone())
            .with_stop(stop)
            .set_progress(progress);
        let restored = restore::restore_with(self.config(), request, &ctx).await;
        if let Some(o) = self.observer() {
            o.job_finished(&request.job);
        }
        restored
    }
}

#[cfg(test)]
mod verdict_tests {
    use super::*;
    use escrow_sync_core::ErrorKind;

    fn stopped(kind: ErrorKind) -> JobOutcome {
        JobOutcome::new("j", "s3", Err(Error::new(kind, "s3:GetBucketVersioning", "s3://b", "")))
    }

    #[test]
    fn a_fault_past_the_retries_is_a_failure_and_bad_input_is_fatal() {
        for kind in [ErrorKind::Throttled, ErrorKind::Transient] {
            let e = Error::new(kind, "sts:AssumeRole", "r", "SlowDown (503)");
            assert_eq!(Verdict::of_error(&e), Verdict::Failed, "{kind}");
            assert_eq!(Verdict::of_jobs(Mode::Plan, &[stopped(kind)]), Verdict::Failed);
        }
        for kind in [ErrorKind::InvalidConfig, ErrorKind::AccessDenied, ErrorKind::NotFound] {
            let e = Error::new(kind, "op", "r", "m");
            assert_eq!(Verdict::of_error(&e), Verdict::Fatal, "{kind}");
        }
        // Bad input outranks a fault in another job.
        let jobs = [stopped(ErrorKind::Throttled), stopped(ErrorKind::InvalidConfig)];
        assert_eq!(Verdict::of_jobs(Mode::Run, &jobs), Verdict::Fatal);
    }
}
