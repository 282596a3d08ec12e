//! The `escrow-sync` command line: config file, `plan` / `run` / `verify`,
//! progress bars on a terminal, text or JSON reports, and exit codes
//! (0 all good, 1 some items failed, 2 invalid config or fatal error,
//! 3 verify found differences).
//!
//! ```
//! use clap::Parser;
//! let cli = escrow_sync_cli::Cli::try_parse_from(["escrow-sync", "plan", "--output", "json"]).unwrap();
//! assert!(matches!(cli.command, escrow_sync_cli::Command::Plan(_)));
//! ```
#![deny(missing_docs)]

mod audit_cmd;
pub mod config;
mod dynamo;
mod governance;
mod lease_cmd;
mod manifest_cmd;
pub mod output;
mod policy_cmd;
mod progress;
pub mod redact;
mod restore_cmd;
mod snapshots;
mod trail_cmd;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use escrow_sync_aws::{Connector, Sessions};
use escrow_sync_core::{CancellationToken, Error, Executor, ExecutorOptions, Mode, Scope};
use escrow_sync_s3::{
    S3Sink, S3Source, check_dest_bucket, check_dest_protection, check_kms_key, check_source_bucket,
};

use config::{Config, JobRef, S3Job};
use output::{JobOutcome, exit};

/// Keeps an offsite copy of an AWS account in a separate escrow account.
#[derive(Debug, Parser)]
#[command(name = "escrow-sync", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a run would copy; changes nothing.
    Plan(JobArgs),
    /// Copy what is missing or changed into escrow.
    Run(RunArgs),
    /// Compare primary and escrow; list every missing or differing item.
    Verify(VerifyArgs),
    /// Apply the keep_* retention of snapshot jobs to their escrow copies,
    /// from escrow's own records (never asks the primary): a dry run unless
    /// --apply; never deletes the newest copy of a volume or database, a
    /// copy made within keep_within_days, nor anything unless the latest
    /// run left a verified copy; stops at max_delete_percent.
    Prune(PruneArgs),
    /// Print the least-privilege IAM policies (and bucket and key policy
    /// statements) both accounts need for this config.
    Policy(PolicyArgs),
    /// Inspect the escrow account for the ways it can stop being an escrow.
    Audit(AuditArgs),
    /// Bring one job's data from escrow back into a recovery account: a dry
    /// run unless --apply; --drill restores into a bucket it creates,
    /// compares every object with escrow byte for byte, and deletes what it
    /// created.
    Restore(RestoreArgs),
}

/// Arguments of `restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The config file.
    #[arg(long, default_value = "escrow.toml")]
    pub config: PathBuf,
    /// The job to restore.
    #[arg(long)]
    pub job: String,
    /// The role in the recovery account to restore with (assumed with the
    /// escrow credentials).
    #[arg(long)]
    pub target_role_arn: String,
    /// The bucket to restore an S3 job into (default: the job's source
    /// bucket name).
    #[arg(long, conflicts_with = "target_table")]
    pub target_bucket: Option<String>,
    /// The table to restore a DynamoDB job into (default: the job's source
    /// table name).
    #[arg(long)]
    pub target_table: Option<String>,
    /// Restore the data as escrow held it at this time (RFC 3339; default:
    /// the newest).
    #[arg(long)]
    pub at: Option<String>,
    /// S3 jobs with --at: also restore keys the primary had already deleted
    /// by then (escrow keeps them). Without it, when a run manifest of that
    /// time exists, only the keys the primary held then are restored.
    #[arg(long, requires = "at")]
    pub include_deleted: bool,
    /// Restore (without it: a dry run that says what would be restored).
    #[arg(long, conflicts_with = "drill")]
    pub apply: bool,
    /// Restore into a new bucket, verify it against escrow byte for byte,
    /// report, then delete what the drill created.
    #[arg(long)]
    pub drill: bool,
    /// Snapshot jobs with --apply: besides sharing each escrow copy with
    /// the recovery account, copy it there (and then remove the share).
    /// Not for Redshift, which cannot copy across accounts.
    #[arg(long, requires = "apply")]
    pub copy: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Output formats of `policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyFormat {
    /// One JSON document with every policy.
    Json,
    /// Two CloudFormation templates, one per account.
    Cloudformation,
}

/// Arguments of `policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// The config file.
    #[arg(long, default_value = "escrow.toml")]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PolicyFormat::Json)]
    pub format: PolicyFormat,
}

/// Severities of audit findings, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Severity {
    /// Worth knowing.
    Low,
    /// Weakens the escrow.
    Medium,
    /// The escrow can stop being one.
    High,
}

/// Arguments of `audit`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// The config file.
    #[arg(long, default_value = "escrow.toml")]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Exit 3 when a finding at or above this severity is found.
    #[arg(long, value_enum, default_value_t = Severity::High)]
    pub fail_on: Severity,
}

/// Arguments of `prune`.
#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// The shared arguments.
    #[command(flatten)]
    pub job: JobArgs,
    /// Delete the copies the retention lets go (without it: a dry run).
    #[arg(long)]
    pub apply: bool,
    /// Delete even when that is more than a job's max_delete_percent of its
    /// escrow copies (without it such a prune deletes nothing, reports a
    /// `prune-limit` finding and exits 3).
    #[arg(long)]
    pub accept_mass_delete: bool,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Arguments shared by the commands.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// The config file.
    #[arg(long, default_value = "escrow.toml")]
    pub config: PathBuf,
    /// Only this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Arguments of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The shared arguments.
    #[command(flatten)]
    pub job: JobArgs,
    /// Let the selected jobs copy a mass change: more than their
    /// `max_change_percent` of escrow's items changed in the primary in one
    /// run (without it such a run copies at most that share, holds the rest
    /// back and exits 3 with a `mass-change` finding).
    #[arg(long)]
    pub accept_mass_change: bool,
}

/// Arguments of `verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The shared arguments.
    #[command(flatten)]
    pub job: JobArgs,
    /// Also compare full-object checksums of items whose listings match (one
    /// HeadObject per item on each side); a mismatch counts as different.
    #[arg(long)]
    pub checksums: bool,
    /// Check escrow against the latest run manifest, without touching the
    /// primary (for the day the primary is gone).
    #[arg(long, conflicts_with = "checksums")]
    pub offline: bool,
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    let cancel = CancellationToken::new();
    let (mode, args, checksums, accept_mass_change) = match cli.command {
        Command::Plan(a) => (Mode::Plan, a, false, false),
        Command::Run(a) => (Mode::Run, a.job, false, a.accept_mass_change),
        Command::Verify(a) if a.offline => return manifest_cmd::verify_offline(&a.job).await,
        Command::Verify(a) => (Mode::Verify, a.job, a.checksums, false),
        Command::Policy(a) => return policy_cmd::run(&a).await,
        Command::Audit(a) => return audit_cmd::run(&a).await,
        Command::Restore(a) => {
            interrupt_on_ctrl_c(cancel.clone());
            return restore_cmd::run(&a, cancel).await;
        }
        Command::Prune(a) => {
            interrupt_on_ctrl_c(cancel.clone());
            return prune(&a, cancel).await;
        }
    };
    interrupt_on_ctrl_c(cancel.clone());
    let result = execute(mode, &args, checksums, accept_mass_change, cancel).await;
    let (jobs, fatal) = match result {
        Ok(jobs) => (jobs, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let code = if fatal.is_some() { exit::FATAL } else { output::exit_code(mode, &jobs) };
    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let doc = output::json(mode, &jobs, fatal.as_ref(), code);
            let _ = writeln!(stdout, "{}", crate::redact::redact(&doc));
        }
        OutputFormat::Text => {
            let _ = write!(stdout, "{}", crate::redact::redact(&output::text(mode, &jobs)));
        }
    }
    if let Some(e) = &fatal {
        eprintln!("error: {}", crate::redact::redact(&e.chain()));
    }
    for j in &jobs {
        if let Some(e) = &j.error {
            eprintln!("error: job {}: {}", j.name, crate::redact::redact(&e.chain()));
        }
    }
    code
}

/// The first Ctrl-C or SIGTERM cancels `cancel`: nothing new starts, work
/// in flight finishes, the run manifest is written and leases are released.
/// The second exits at once (130 after Ctrl-C, 143 after SIGTERM).
fn interrupt_on_ctrl_c(cancel: CancellationToken) {
    // Listen for SIGTERM before any work starts (a container's stop).
    let mut signals = Signals::listen();
    tokio::spawn(async move {
        let Some(first) = signals.next().await else { return };
        eprintln!(
            "{first}: nothing new starts; waiting for work in flight, then the run manifest and \
             the leases are written (Ctrl-C or SIGTERM again to stop at once; nothing \
             half-written is ever taken as done)"
        );
        cancel.cancel();
        if let Some(second) = signals.next().await {
            eprintln!("{second} again: stopping now");
            std::process::exit(if second == Signals::TERMINATED { 143 } else { 130 });
        }
    });
}

/// Ctrl-C (SIGINT) and, on Unix, SIGTERM, as one stream.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    const INTERRUPTED: &str = "interrupted";
    const TERMINATED: &str = "terminated (SIGTERM)";

    fn listen() -> Self {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    /// The next signal's description; `None` when no signal can be heard.
    async fn next(&mut self) -> Option<&'static str> {
        let ctrl_c = async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => Self::INTERRUPTED,
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            return tokio::select! {
                s = ctrl_c => Some(s),
                t = term.recv() => t.map(|()| Self::TERMINATED),
            };
        }
        Some(ctrl_c.await)
    }
}

/// `escrow-sync prune`: prints what it keeps and deletes; returns the exit
/// code.
async fn prune(args: &PruneArgs, cancel: CancellationToken) -> u8 {
    let result = async {
        let config = Config::load(&args.job.config)?;
        let jobs = snapshots::prunable(&config, args.job.job.as_deref())?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // Escrow credentials only: prune works with the primary gone, and
        // nothing the primary shows can steer it.
        let escrow = Connector::new().connect_escrow(&config.escrow_account()).await?;
        let mut outcomes = Vec::new();
        for job in jobs {
            outcomes.push(
                snapshots::prune(
                    &config,
                    job,
                    &escrow,
                    args.apply,
                    args.accept_mass_delete,
                    &cancel,
                )
                .await,
            );
        }
        Ok::<_, Error>(outcomes)
    }
    .await;
    let (outcomes, fatal) = match result {
        Ok(o) => (o, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let code = if fatal.is_some() { exit::FATAL } else { snapshots::prune_exit_code(&outcomes) };
    let mut stdout = std::io::stdout().lock();
    match args.job.output {
        OutputFormat::Json => {
            let doc = snapshots::prune_json(&outcomes, args.apply, fatal.as_ref(), code);
            let _ = writeln!(stdout, "{}", redact::redact(&doc));
        }
        OutputFormat::Text => {
            let _ =
                write!(stdout, "{}", redact::redact(&snapshots::prune_text(&outcomes, args.apply)));
        }
    }
    if let Some(e) = &fatal {
        eprintln!("error: {}", crate::redact::redact(&e.chain()));
    }
    code
}

/// An account id, unless unknown (an S3-compatible store stated none).
fn known(id: &str) -> Option<String> {
    (!id.is_empty()).then(|| id.to_string())
}

/// Loads the config, connects, checks every selected job, then runs them
/// (`accept_mass_change`: `run --accept-mass-change`). An `Err` means
/// nothing was changed.
pub async fn execute(
    mode: Mode,
    args: &JobArgs,
    checksums: bool,
    accept_mass_change: bool,
    cancel: CancellationToken,
) -> Result<Vec<JobOutcome>, Error> {
    let config = Config::load(&args.config)?;
    let jobs = config.select(args.job.as_deref())?;
    let sessions: Sessions =
        Connector::new().connect(&config.escrow_account(), &config.primary_account()).await?;
    let primary = escrow_sync_s3::client(&sessions.primary);
    let escrow = escrow_sync_s3::client(&sessions.escrow);
    let (primary_id, escrow_id) =
        (sessions.primary.account_id().to_string(), sessions.escrow.account_id().to_string());
    if let Some(key) = &config.escrow.kms_key_id {
        check_kms_key(key, &escrow_id)?;
    }
    let mut manifest = match (&config.escrow.manifest_bucket, mode) {
        (Some(bucket), Mode::Run) => {
            check_dest_bucket(&escrow, bucket, &escrow_id).await?;
            let locked = config.escrow.manifest_object_lock.is_some();
            check_dest_protection(&escrow, bucket, false, locked).await?;
            let text = std::fs::read(&args.config).unwrap_or_default();
            let header = escrow_sync_governance::manifest::Header::new(
                escrow_sync_governance::manifest::run_id(),
                env!("CARGO_PKG_VERSION"),
                escrow_sync_governance::manifest::digest(&text),
                &escrow_id,
                &primary_id,
            );
            Some(escrow_sync_governance::manifest::ManifestWriter::create(header)?)
        }
        _ => None,
    };
    let mut ready = Vec::new();
    for job in &jobs {
        ready.push(match *job {
            JobRef::S3(job) => {
                check_source_bucket(&primary, &job.source_bucket, &primary_id).await?;
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
            JobRef::DynamoDb(job) => {
                Ready::DynamoDb(job, Box::new(dynamo::check(&config, job, &sessions).await?))
            }
            JobRef::Ec2(_) | JobRef::Rds(_) | JobRef::Redshift(_) => Ready::Snapshots(*job),
            JobRef::CloudTrail(job) => {
                Ready::CloudTrail(job, Box::new(trail_cmd::check(job, &sessions).await?))
            }
        });
    }
    let warnings = sessions.warnings.clone();
    let run_id = manifest
        .as_ref()
        .map(|m| m.run_id().to_string())
        .unwrap_or_else(escrow_sync_governance::manifest::run_id);
    let progress = progress::Progress::new();
    let mut outcomes = Vec::new();
    for job in ready {
        if cancel.is_cancelled() {
            break;
        }
        let name = job.name();
        let bar = progress.job(&name, mode);
        let callback: Option<escrow_sync_core::ProgressFn> =
            bar.as_ref().map(|b| Arc::new(b.callback()) as _);
        let kind = job.kind();
        let item_log = manifest.as_mut().map(|m| {
            m.job(&name, kind);
            m.item_log(&name)
        });
        // One run per job: `run` holds the job's lease while it runs, and the
        // job gets a token of its own that a lost lease cancels.
        let cancel = cancel.child_token();
        let lease = match mode {
            Mode::Run => {
                match lease_cmd::take(&config, job.job_ref(), &sessions, &run_id, &cancel).await {
                    Ok(lease) => Some(lease),
                    Err(e) => {
                        // Held by another run (or unreadable): this job is
                        // left alone, the others still run.
                        if let Some(bar) = bar {
                            bar.finish();
                        }
                        let result = Err(e);
                        if let Some(m) = manifest.as_mut() {
                            m.job_end(manifest_cmd::summary(&name, &result));
                        }
                        let error = result.err();
                        outcomes.push(JobOutcome {
                            name,
                            kind,
                            report: None,
                            error,
                            streamed: false,
                        });
                        continue;
                    }
                }
            }
            Mode::Plan | Mode::Verify => None,
        };
        let (kind, streamed, result) = match job {
            Ready::S3(job) => {
                let streamed = config.streams(job);
                let result = run_s3(
                    &config,
                    job,
                    &sessions,
                    mode,
                    checksums,
                    accept_mass_change,
                    cancel.clone(),
                    callback,
                    item_log,
                )
                .await;
                ("s3", streamed, result)
            }
            Ready::Snapshots(job) => {
                let kind = match job {
                    JobRef::Rds(_) => "rds",
                    JobRef::Redshift(_) => "redshift",
                    _ => "ec2",
                };
                let result = snapshots::run(
                    &config,
                    job,
                    &sessions,
                    mode,
                    cancel.clone(),
                    callback,
                    item_log,
                    accept_mass_change,
                )
                .await;
                (kind, false, result)
            }
            Ready::DynamoDb(job, checked) => {
                let result = dynamo::run(
                    &config,
                    job,
                    *checked,
                    &sessions,
                    mode,
                    cancel.clone(),
                    callback,
                    accept_mass_change,
                    item_log,
                )
                .await;
                ("dynamodb", false, result)
            }
            Ready::CloudTrail(job, checked) => {
                let result = trail_cmd::run(
                    &config,
                    job,
                    *checked,
                    &sessions,
                    mode,
                    checksums,
                    accept_mass_change,
                    cancel.clone(),
                    callback,
                    item_log,
                )
                .await;
                ("cloudtrail", false, result)
            }
        };
        let (result, lease_lost) = match lease {
            Some(lease) => lease.end(result).await,
            None => (result, None),
        };
        if let Some(bar) = bar {
            bar.finish();
        }
        if let Some(m) = manifest.as_mut() {
            m.job_end(manifest_cmd::summary(&name, &result));
        }
        let outcome = match result {
            Ok(mut report) => {
                report.warnings.extend(warnings.iter().cloned());
                JobOutcome { name, kind, report: Some(report), error: None, streamed }
            }
            Err(e) => JobOutcome { name, kind, report: None, error: Some(e), streamed },
        };
        outcomes.push(outcome);
        if let Some(o) = outcomes.last_mut() {
            o.error = lease_cmd::job_error(o.error.take(), lease_lost);
        }
    }
    if let Some(m) = manifest {
        manifest_cmd::write(&config, &sessions.escrow, m, &mut outcomes).await;
    }
    Ok(outcomes)
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
    DynamoDb(&'a config::DynamoDbJob, Box<dynamo::Checked>),
    Snapshots(JobRef<'a>),
    CloudTrail(&'a config::CloudTrailJob, Box<trail_cmd::Checked>),
}

impl<'a> Ready<'a> {
    /// The configured job.
    fn job_ref(&self) -> JobRef<'a> {
        match self {
            Ready::S3(j) => JobRef::S3(j),
            Ready::DynamoDb(j, _) => JobRef::DynamoDb(j),
            Ready::Snapshots(j) => *j,
            Ready::CloudTrail(j, _) => JobRef::CloudTrail(j),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Ready::S3(_) => "s3",
            Ready::DynamoDb(..) => "dynamodb",
            Ready::Snapshots(JobRef::Rds(_)) => "rds",
            Ready::Snapshots(JobRef::Redshift(_)) => "redshift",
            Ready::Snapshots(_) => "ec2",
            Ready::CloudTrail(..) => "cloudtrail",
        }
    }

    fn name(&self) -> String {
        match self {
            Ready::S3(j) => j.name(),
            Ready::DynamoDb(j, _) => j.name(),
            Ready::Snapshots(j) => j.name(),
            Ready::CloudTrail(j, _) => j.name(),
        }
    }
}

/// The escrow side of an `[[s3]]` job, with escrow credentials.
fn s3_sink(config: &Config, job: &S3Job, escrow: &escrow_sync_aws::Session) -> S3Sink {
    S3Sink::from_client(escrow_sync_s3::client(escrow), &job.dest_bucket)
        .with_dest_prefix(&job.dest_prefix)
        .with_expected_owner(known(escrow.account_id()))
        .with_multipart(job.multipart())
        .with_protection(job.protection(config.escrow.kms_key_id.clone()))
        .with_versions(job.versions)
}

/// Runs one `[[s3]]` job.
#[allow(clippy::too_many_arguments)] // the job's context; a struct would only rename them
pub(crate) async fn run_s3(
    config: &Config,
    job: &S3Job,
    sessions: &Sessions,
    mode: Mode,
    checksums: bool,
    accept_mass_change: bool,
    cancel: CancellationToken,
    progress: Option<escrow_sync_core::ProgressFn>,
    item_log: Option<escrow_sync_core::ItemLog>,
) -> Result<escrow_sync_core::Report, Error> {
    let primary = escrow_sync_s3::client(&sessions.primary);
    let primary_id = sessions.primary.account_id().to_string();
    let streamed = config.streams(job);
    let pacer = job.max_requests_per_second.map(escrow_sync_core::RequestPacer::per_second);
    let source = S3Source::from_client(primary, &job.source_bucket)
        .with_streaming(streamed)
        .with_versions(job.versions)
        .with_pacer(pacer.clone())
        .with_prefix(&job.prefix)
        .with_expected_owner(known(&primary_id));
    let sink = s3_sink(config, job, &sessions.escrow).with_pacer(pacer);
    let mut job_warnings = Vec::new();
    if mode == Mode::Run {
        let age = std::time::Duration::from_secs(job.abort_stale_uploads_after_hours * 3600);
        match sink.abort_stale_uploads(age).await {
            Ok(0) => {}
            Ok(n) => job_warnings.push(format!(
                "aborted {n} multipart upload(s) that an interrupted run left in s3://{}",
                job.dest_bucket
            )),
            Err(e) => job_warnings.push(format!(
                "could not look for multipart uploads left by interrupted runs: {}",
                e.chain()
            )),
        }
    }
    let guard =
        escrow_sync_core::MassChangeGuard::for_job(job.max_change_percent, accept_mass_change);
    let mut options = ExecutorOptions::new()
        .with_concurrency(job.concurrency)
        .with_verify_checksums(checksums)
        .with_mass_change_guard(guard);
    if let Some(log) = item_log {
        options = options.with_item_log(log);
    }
    let mut executor = Executor::new(options).with_cancellation(cancel);
    if let Some(p) = progress {
        executor = executor.with_progress(p);
    }
    let mut report =
        executor.execute(mode, &source, &sink, &Scope::with_prefix(&job.prefix)).await?;
    report.warnings.extend(job_warnings);
    Ok(report)
}
