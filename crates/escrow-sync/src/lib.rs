//! escrow-sync as a library: keep an offsite, append-only copy of an AWS
//! account in a second account, the *escrow*, that the primary's people and
//! credentials cannot reach.
//!
//! This facade is what a platform team embeds. It holds what makes
//! escrow-sync an escrow beyond one Source/Sink pair:
//!
//! - [`spec`]: the config model, parsing and validation;
//! - [`Runner`]: preflight checks, every job kind, leases and the run
//!   manifest, for `plan`, `run` and `verify`, plus [`Runner::verify_offline`]
//!   and [`Runner::prune`];
//! - [`restore`]: one request and one report type for every job kind, with
//!   drills;
//! - [`governance`]: the least-privilege policies and the isolation audit.
//!
//! The service crates are re-exported ([`core`], [`aws`], [`s3`], ...), one
//! cargo feature per service: `s3`, `dynamodb`, `ec2`, `rds`, `redshift`,
//! `cloudtrail`, `governance`, all on by default.
//!
//! ```no_run
//! use escrow_sync::{Mode, RunOptions, Runner, spec::Config};
//!
//! # async fn demo() -> Result<(), escrow_sync::Error> {
//! let config = Config::parse(
//!     r#"
//!     [escrow]
//!     region = "eu-west-1"
//!     [primary]
//!     account_id = "111111111111"
//!     role_arn = "arn:aws:iam::111111111111:role/escrow-reader"
//!     [[s3]]
//!     source_bucket = "prod-assets"
//!     dest_bucket = "escrow-prod-assets"
//!     "#,
//!     "inline config",
//! )?;
//! let outcomes = Runner::new(config).run(Mode::Run, &RunOptions::new()).await?;
//! for job in &outcomes {
//!     println!("{}: {:?}", job.name, job.report.as_ref().map(|r| r.copied));
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod doc;
#[cfg(feature = "dynamodb")]
mod dynamo;
#[cfg(feature = "governance")]
pub mod governance;
mod lease;
mod manifest;
pub mod restore;
mod runner;
mod snapshots;
pub mod spec;
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

pub use manifest::SOURCE as OFFLINE_SOURCE;
pub use runner::{JobOutcome, Observer, RunOptions, Runner};
pub use snapshots::{PruneFailure, PruneOutcome};

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
    /// A fatal error: invalid config or usage, or a job that could not run.
    Fatal,
}

impl Verdict {
    /// The verdict of a `plan`, `run` or `verify` (online or offline).
    pub fn of_jobs(mode: Mode, jobs: &[JobOutcome]) -> Verdict {
        if jobs.iter().any(|j| j.error.is_some() || j.report.is_none()) {
            return Verdict::Fatal;
        }
        let reports = jobs.iter().filter_map(|j| j.report.as_ref());
        // A tripped mass-change breaker is an incident to look at, not a
        // failure to retry: it outranks item failures.
        let mass_change = |r: &Report| {
            r.findings.iter().any(|f| f.kind.as_deref() == Some(escrow_sync_core::MASS_CHANGE))
        };
        if mode == Mode::Run && reports.clone().any(mass_change) {
            return Verdict::Findings;
        }
        if reports.clone().any(|r| r.failed > 0 || r.cancelled) {
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
    pub async fn verify_offline(&self, options: &RunOptions) -> Result<Vec<JobOutcome>, Error> {
        let escrow = self.escrow_session().await?;
        manifest::verify_offline(self.config(), options.job.as_deref(), &escrow).await
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

    /// Restores one job's data from escrow (see [`restore`]).
    pub async fn restore(
        &self,
        request: &restore::RestoreRequest,
    ) -> Result<restore::RestoreReport, Error> {
        restore::restore(self.config(), request, self.cancel().clone()).await
    }
}
