//! The `escrow-sync` command line: config file, `plan` / `run` / `verify`,
//! progress bars on a terminal (stats lines otherwise), text or JSON
//! reports and logs, signals, and exit codes (0 all good, 1 some items
//! failed or a fault outlasted the retries, 2 invalid config, bad input or
//! a refusal, 3 verify found differences or a job is stale; 143 after
//! SIGTERM, 130 after Ctrl-C).
//!
//! ```
//! use clap::Parser;
//! let cli = escrow_sync_cli::Cli::try_parse_from(["escrow-sync", "plan", "--output", "json"]).unwrap();
//! assert!(matches!(cli.command, escrow_sync_cli::Command::Plan(_)));
//! ```
#![deny(missing_docs)]

pub mod generate;
#[cfg(feature = "governance")]
mod governance;
pub mod logs;
pub mod output;
mod progress;
pub mod redact;
mod render;
mod report;
#[cfg(feature = "cloudtrail")]
pub mod trail;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use escrow_sync::report::HumanReport;
use escrow_sync::restore::RestoreRequest;
use escrow_sync::spec::Config;
use escrow_sync::status::StatusRequest;
use escrow_sync::{CancellationToken, Error, Mode, RunInfo, RunOptions, Runner, Verdict};

use output::exit;

/// Keeps an offsite copy of an AWS account in a separate escrow account.
#[derive(Debug, Parser)]
#[command(name = "escrow-sync", version, about)]
pub struct Cli {
    /// The options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes (before or after the command's name).
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// The AWS profile of the escrow credentials (instead of `[escrow]
    /// profile` and `AWS_PROFILE`).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// The escrow region (instead of `[escrow] region`, `AWS_REGION` and the
    /// profile's region).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// How log lines on stderr look.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log lines (-v: info, -vv: debug, -vvv: trace).
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Fewer log lines (-q: errors only, -qq: none).
    #[arg(short = 'q', long, global = true, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// When stderr is not a terminal, print one stats line per this
    /// interval (`run`, `verify`, `restore`).
    #[arg(long, global = true, default_value = "60s", value_parser = duration)]
    pub stats_interval: std::time::Duration,
    /// After SIGTERM or Ctrl-C, wait this long for copies in flight before
    /// stopping them (the run manifest and leases are written either way).
    #[arg(long, global = true, default_value = "30s", value_parser = duration)]
    pub drain_timeout: std::time::Duration,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event (colours only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// A duration such as `30s`, `26h` or `1h30m`.
fn duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 30s, 15m, 26h)"))
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
    /// Report how fresh each job's escrow is, from escrow alone (works with
    /// the primary gone): its last run, the age of its newest verified copy
    /// (the RPO achieved), items, bytes and findings; a job older than
    /// --max-age (or its max_age key) is `stale` and the exit code is 3.
    Status(StatusArgs),
    /// Bring one job's data from escrow back into a recovery account: a dry
    /// run unless --apply; --drill restores into a bucket it creates,
    /// compares every object with escrow byte for byte, and deletes what it
    /// created.
    Restore(RestoreArgs),
    /// Read the escrowed CloudTrail logs of a [[cloudtrail]] job, from
    /// escrow alone: `trail events` (a forensic timeline of proven events)
    /// and `trail athena` (a table over the escrow copy).
    #[cfg(feature = "cloudtrail")]
    Trail(trail::TrailArgs),
    /// Write shell completions or man pages (for packagers: `cargo xtask dist`).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// The config file: `-c`/`--config FILE`, else `ESCROW_SYNC_CONFIG`, else `escrow.toml`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigPath {
    /// The config file (or the environment's ESCROW_SYNC_CONFIG).
    #[arg(short = 'c', long = "config", env = "ESCROW_SYNC_CONFIG", default_value = "escrow.toml")]
    pub path: PathBuf,
}

/// `--report FILE.md|FILE.html`: also write a human report of the command.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportPath {
    /// Also write a human report (per-job table, findings, RPO, what to do)
    /// to this file: Markdown for .md, one self-contained page for .html.
    #[arg(long = "report", id = "report", value_name = "FILE.md|FILE.html")]
    pub path: Option<PathBuf>,
}

/// Arguments of `status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigPath,
    /// Only this job.
    #[arg(long)]
    pub job: Option<String>,
    /// The largest age of a job's newest verified copy (e.g. 26h) before it
    /// is stale (default: each job's max_age key; none: never stale).
    #[arg(long, value_parser = duration)]
    pub max_age: Option<std::time::Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// A human report.
    #[command(flatten)]
    pub report: ReportPath,
}

/// Arguments of `restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigPath,
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
    /// A human report.
    #[command(flatten)]
    pub report: ReportPath,
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
    #[command(flatten)]
    pub config: ConfigPath,
    /// Output format (`--format` is the same option's older name).
    #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = PolicyFormat::Json)]
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
    #[command(flatten)]
    pub config: ConfigPath,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Exit 3 when a finding at or above this severity is found.
    #[arg(long, value_enum, default_value_t = Severity::High)]
    pub fail_on: Severity,
    /// A human report.
    #[command(flatten)]
    pub report: ReportPath,
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
    #[command(flatten)]
    pub config: ConfigPath,
    /// Only this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// A human report.
    #[command(flatten)]
    pub report: ReportPath,
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
    /// Run only part I of N of each selected S3 job (e.g. `--shard 2/4`):
    /// N runners with `--shard 1/N` to `N/N` share each job, each part a key
    /// range under its own lease; other jobs run in part 1 only. Needs
    /// `[escrow] manifest_bucket`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<escrow_sync::s3::Shard>,
    /// Return once each S3 Batch Operations job (`engine =
    /// "batch-operations"`) is created instead of waiting for it: `status`
    /// shows the job, the next run folds its report in.
    #[arg(long)]
    pub no_wait: bool,
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

/// `--profile` and `--region`, applied to every config [`load`] reads.
static OVERRIDES: std::sync::Mutex<(Option<String>, Option<String>)> =
    std::sync::Mutex::new((None, None));

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    if let Ok(mut o) = OVERRIDES.lock() {
        *o = (cli.global.profile.clone(), cli.global.region.clone());
    }
    let cancel = CancellationToken::new();
    let global = &cli.global;
    match cli.command {
        Command::Plan(a) => jobs(Mode::Plan, &a, RunOptions::new(), false, cancel, global).await,
        Command::Run(a) => {
            let options = RunOptions::new()
                .accept_mass_change(a.accept_mass_change)
                .no_wait(a.no_wait)
                .set_shard(a.shard);
            jobs(Mode::Run, &a.job, options, false, cancel, global).await
        }
        Command::Verify(a) => {
            let options = RunOptions::new().checksums(a.checksums);
            jobs(Mode::Verify, &a.job, options, a.offline, cancel, global).await
        }
        #[cfg(feature = "governance")]
        Command::Policy(a) => governance::policy(&a),
        #[cfg(feature = "governance")]
        Command::Audit(a) => governance::audit(&a).await,
        #[cfg(not(feature = "governance"))]
        Command::Policy(_) | Command::Audit(_) => {
            fatal(&Error::invalid_config(
                "this build of escrow-sync has no governance support (policy, audit): build it \
                 with the `governance` feature",
            ));
            output::exit::FATAL
        }
        Command::Status(a) => status(&a).await,
        Command::Restore(a) => restore(&a, cancel, global).await,
        Command::Prune(a) => prune(&a, cancel, global).await,
        #[cfg(feature = "cloudtrail")]
        Command::Trail(a) => trail::run(&a).await,
        Command::Generate(a) => generate::run(&a),
    }
}

/// Loads the config file, registering its secrets for redaction.
fn load(path: &std::path::Path) -> Result<Config, Error> {
    let (profile, region) = OVERRIDES.lock().map(|o| o.clone()).unwrap_or_default();
    let config = Config::load(path)?.with_overrides(profile, region);
    config.secrets().into_iter().for_each(redact::register_secret);
    Ok(config)
}

/// Prints a fatal error (redacted) on stderr.
fn fatal(e: &Error) {
    eprintln!("error: {}", redact::redact(&e.chain()));
}

/// `plan`, `run`, `verify` and `verify --offline`: prints the reports;
/// returns the exit code.
async fn jobs(
    mode: Mode,
    args: &JobArgs,
    options: RunOptions,
    offline: bool,
    cancel: CancellationToken,
    global: &Global,
) -> u8 {
    let target = match report::check(&args.report) {
        Ok(t) => t,
        Err(e) => {
            fatal(&e);
            return exit::FATAL;
        }
    };
    let signals = interrupt_on_ctrl_c(cancel.clone());
    let options = options.set_job(args.job.clone());
    let command = match mode {
        Mode::Plan => "plan",
        Mode::Run => "run",
        Mode::Verify => "verify",
    };
    let progress = progress::Progress::new(command, global.stats_interval, global.log_format);
    let started = RunInfo::start();
    // Said even when the run stops before its jobs (a refused check).
    let mut warned = Vec::new();
    let result = async {
        let config = load(&args.config.path)?;
        warned = config.protection_warnings_for(options.job.as_deref());
        let runner = Runner::new(config)
            .with_cancellation(cancel)
            .with_stop(signals.stop.clone())
            .with_drain_timeout(global.drain_timeout)
            .with_observer(std::sync::Arc::new(progress));
        if offline {
            runner.verify_offline(&options).await
        } else {
            runner.run(mode, &options).await
        }
    }
    .await;
    let (info, jobs, warned, fatal_error) = match result {
        Ok(run) => (run.info, run.jobs, run.protection_warnings, None),
        Err(e) => (started, Vec::new(), warned, Some(e)),
    };
    let code = match &fatal_error {
        Some(e) => render::error_code(e),
        None => output::exit_code(mode, &jobs),
    };
    let code = signals.code().unwrap_or(code);
    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let doc =
                escrow_sync::doc::jobs(&info, mode, &jobs, &warned, fatal_error.as_ref(), code);
            let _ = writeln!(stdout, "{}", redact::redact(&doc));
        }
        OutputFormat::Text => {
            let _ = write!(stdout, "{}", redact::redact(&output::text(mode, &jobs)));
            let _ = write!(stdout, "{}", redact::redact(&output::protection(&warned)));
        }
    }
    if let Some(e) = &fatal_error {
        fatal(e);
    }
    for j in &jobs {
        if let Some(e) = &j.error {
            eprintln!("error: job {}: {}", j.name, redact::redact(&e.chain()));
        }
    }
    report::write(
        &target,
        || HumanReport::of_jobs(&info, mode, &jobs, code).with_protection_warnings(&warned),
        code,
    )
}

/// `status`: prints each job's freshness; exit 3 when one is stale.
async fn status(args: &StatusArgs) -> u8 {
    let target = match report::check(&args.report) {
        Ok(t) => t,
        Err(e) => {
            fatal(&e);
            return exit::FATAL;
        }
    };
    let started = RunInfo::start();
    let request = StatusRequest::new().set_job(args.job.clone()).set_max_age(args.max_age);
    let result = match load(&args.config.path) {
        Ok(config) => Runner::new(config).status(&request).await,
        Err(e) => Err(e),
    };
    let code = match &result {
        Ok((_, r)) => render::code(r.verdict()),
        Err(e) => render::error_code(e),
    };
    let info = result.as_ref().map(|(i, _)| i.clone()).unwrap_or(started);
    let report = result.as_ref().ok().map(|(_, r)| r);
    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let doc = escrow_sync::doc::status(&info, report, result.as_ref().err(), code);
            let _ = writeln!(stdout, "{}", redact::redact(&doc));
        }
        OutputFormat::Text => {
            if let Some(r) = report {
                let _ = write!(stdout, "{}", redact::redact(&render::status_text(r)));
            }
        }
    }
    if let Err(e) = &result {
        fatal(e);
    }
    match report {
        Some(r) => report::write(&target, || HumanReport::of_status(&info, r, code), code),
        None => code,
    }
}

/// `restore`: prints what it restored; returns the exit code.
async fn restore(args: &RestoreArgs, cancel: CancellationToken, global: &Global) -> u8 {
    let target = match report::check(&args.report) {
        Ok(t) => t,
        Err(e) => {
            fatal(&e);
            return exit::FATAL;
        }
    };
    let signals = interrupt_on_ctrl_c(cancel.clone());
    let progress = progress::Progress::new("restore", global.stats_interval, global.log_format);
    let request = RestoreRequest::new(&args.job, &args.target_role_arn)
        .set_target_bucket(args.target_bucket.clone())
        .set_target_table(args.target_table.clone())
        .set_at(args.at.clone())
        .include_deleted(args.include_deleted)
        .apply(args.apply)
        .drill(args.drill)
        .copy(args.copy);
    let info = RunInfo::start();
    let result = match load(&args.config.path) {
        Ok(config) => {
            Runner::new(config)
                .with_cancellation(cancel)
                .with_stop(signals.stop.clone())
                .with_drain_timeout(global.drain_timeout)
                .with_observer(std::sync::Arc::new(progress))
                .restore(&request)
                .await
        }
        Err(e) => Err(e),
    };
    let code = render::code(escrow_sync::restore::verdict(&result));
    let code = signals.code().unwrap_or(code);
    let mut stdout = std::io::stdout().lock();
    match (args.output, &result) {
        (OutputFormat::Json, _) => {
            let _ = writeln!(
                stdout,
                "{}",
                redact::redact(&escrow_sync::doc::restore(&info, &result, code))
            );
        }
        (OutputFormat::Text, Ok(r)) => {
            let _ = write!(stdout, "{}", redact::redact(&render::restore_text(r)));
        }
        (OutputFormat::Text, Err(_)) => {}
    }
    if let Err(e) = &result {
        fatal(e);
    }
    match &result {
        Ok(r) => report::write(&target, || HumanReport::of_restore(&info, r, code), code),
        Err(_) => code,
    }
}

/// `prune`: prints what it keeps and deletes; returns the exit code.
async fn prune(args: &PruneArgs, cancel: CancellationToken, global: &Global) -> u8 {
    if args.job.report.path.is_some() {
        fatal(&Error::invalid_config(
            "--report is for run, verify, status, audit and restore --drill, not prune: leave it \
             out (--output json has every prune decision)",
        ));
        return exit::FATAL;
    }
    let signals = interrupt_on_ctrl_c(cancel.clone());
    let info = RunInfo::start();
    let result = match load(&args.job.config.path) {
        Ok(config) => {
            Runner::new(config)
                .with_cancellation(cancel)
                .with_stop(signals.stop.clone())
                .with_drain_timeout(global.drain_timeout)
                .prune(args.job.job.as_deref(), args.apply, args.accept_mass_delete)
                .await
        }
        Err(e) => Err(e),
    };
    let (outcomes, fatal_error) = match result {
        Ok(o) => (o, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let code = match &fatal_error {
        Some(e) => render::error_code(e),
        None => render::code(Verdict::of_prune(&outcomes)),
    };
    let code = signals.code().unwrap_or(code);
    let mut stdout = std::io::stdout().lock();
    match args.job.output {
        OutputFormat::Json => {
            let doc =
                escrow_sync::doc::prune(&info, &outcomes, args.apply, fatal_error.as_ref(), code);
            let _ = writeln!(stdout, "{}", redact::redact(&doc));
        }
        OutputFormat::Text => {
            let _ =
                write!(stdout, "{}", redact::redact(&render::prune_text(&outcomes, args.apply)));
        }
    }
    if let Some(e) = &fatal_error {
        fatal(e);
    }
    code
}

/// The exit code after Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;
/// The exit code after SIGTERM (128 + SIGTERM), as a container's stop
/// expects.
pub const EXIT_TERMINATED: u8 = 143;

/// What the signals did to a command.
#[derive(Debug, Clone, Default)]
struct Interrupt {
    /// Cancelled by the second signal: the hard stop of the work in flight.
    stop: CancellationToken,
    /// The first signal heard.
    first: std::sync::Arc<std::sync::OnceLock<&'static str>>,
}

impl Interrupt {
    /// The exit code a signal asks for: 143 after SIGTERM, 130 after Ctrl-C.
    fn code(&self) -> Option<u8> {
        self.first.get().map(|s| match *s {
            Signals::TERMINATED => EXIT_TERMINATED,
            _ => EXIT_INTERRUPTED,
        })
    }
}

/// Ctrl-C or SIGTERM: the first cancels `cancel` (nothing new starts; work
/// in flight gets `--drain-timeout`, then it is stopped: the runner's hard
/// stop; the run manifest is written and leases are released), the second
/// stops the work in flight at once (half-done multipart uploads are
/// aborted, a drill still deletes what it created, the manifest and leases
/// are still written), the third exits at once. The command then exits
/// 143 after SIGTERM, 130 after Ctrl-C.
fn interrupt_on_ctrl_c(cancel: CancellationToken) -> Interrupt {
    // Listen for SIGTERM before any work starts (a container's stop).
    let mut signals = Signals::listen();
    let interrupt = Interrupt::default();
    let (stop, first_heard) = (interrupt.stop.clone(), interrupt.first.clone());
    tokio::spawn(async move {
        let Some(first) = signals.next().await else { return };
        let _ = first_heard.set(first);
        eprintln!(
            "{first}: nothing new starts; the work in flight gets the drain time \
             (--drain-timeout) to finish, then the run manifest and the leases are written \
             (Ctrl-C or SIGTERM again to stop the work in flight now; nothing half-written is \
             ever taken as done)"
        );
        cancel.cancel();
        let Some(second) = signals.next().await else { return };
        eprintln!(
            "{second} again: stopping the work in flight now (half-done uploads are aborted, a \
             drill deletes what it created, the manifest and the leases are written; a third \
             signal exits at once)"
        );
        stop.cancel();
        if let Some(third) = signals.next().await {
            eprintln!("{third} a third time: exiting now, without cleaning up");
            std::process::exit(i32::from(if first == Signals::TERMINATED {
                EXIT_TERMINATED
            } else {
                EXIT_INTERRUPTED
            }));
        }
    });
    interrupt
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
