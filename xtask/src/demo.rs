//! `cargo xtask demo`: a primary and an escrow account on the emulator, then the
//! `escrow-sync` binary's plan, run, verify, a second run with nothing to do, a
//! verify in JSON, a verify against the run manifest alone, a prune dry run,
//! the isolation audit of the escrow with both accounts set up from
//! `escrow-sync policy` and IAM enforced, and restore drills of an S3 job
//! and a DynamoDB job into a third account.

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::emulator::{self, Files};
use crate::paths::Paths;
use crate::process::{describe, run_status, secs};

/// Seeds both accounts (see the file for what it creates).
const SEED_SCRIPT: &str = include_str!("demo_seed.py");

/// The recovery account's role the demo's restore drill writes with.
const RECOVERY_ROLE: &str = "arn:aws:iam::333333333333:role/recovery";

/// The incident: the primary's attacker, and the check of what came back (see the file).
const INCIDENT_SCRIPT: &str = include_str!("demo_incident.py");

/// Creates the IAM identities from `escrow-sync policy` (see the file).
const IAM_SCRIPT: &str = include_str!("demo_iam.py");

/// Creates the escrow template's Recycle Bin rules (see the file).
const RBIN_SCRIPT: &str = include_str!("demo_rbin.py");

/// The demo's escrow-sync configuration; must agree with [`SEED_SCRIPT`].
pub const DEMO_CONFIG: &str = r#"[escrow]
region = "us-east-1"
role_arn = "arn:aws:iam::222222222222:role/escrow-operator"
account_id = "222222222222"
# The escrow's own key: every copy is encrypted with it.
kms_key_id = "alias/escrow-demo"
# Every run writes its manifest here; `verify --offline` checks against it,
# and `status` reads how fresh each job's newest verified copy is.
manifest_bucket = "escrow-manifests"
# Manifests are locked too, their retention renewed like every copy's.
manifest_object_lock = { mode = "COMPLIANCE", days = 30 }
# After each run and status: per-job metrics in the escrow account's
# CloudWatch (namespace EscrowSync, dimension Job); `policy --output
# cloudformation` adds an alarm per job with a max_age.
metrics = "cloudwatch"

[primary]
account_id = "111111111111"
role_arn = "arn:aws:iam::111111111111:role/escrow-reader"
external_id = "demo-external-id"

[[s3]]
name = "assets"
source_bucket = "prod-assets"
dest_bucket = "escrow-prod-assets"
# Objects over 8 MiB are copied server-side in 8 MiB parts (UploadPartCopy).
multipart_threshold = "8MiB"
part_size = "8MiB"
# `status` calls the job stale (exit 3) when its newest verified copy is
# older than this; also its CloudWatch alarm's threshold.
max_age = "26h"
# Every copy locked for 30 days (COMPLIANCE: nobody, not even the escrow's
# root, can delete it or shorten the lock); each run extends the locks of
# copies still in the primary once fewer than renew_within_days are left.
object_lock = { mode = "COMPLIANCE", days = 30, renew_within_days = 7 }

[[s3]]
name = "logs"
source_bucket = "prod-logs"
dest_bucket = "escrow-prod-logs"
# Bytes pass through escrow-sync (as for an escrow on another S3-compatible
# store), 5 MiB parts, at most 4 in memory.
mode = "stream"
part_size = "5MiB"
part_concurrency = 4
object_lock = { mode = "COMPLIANCE", days = 30 }

[[dynamodb]]
# Table to table: the escrow table is created as a clone (key schema, GSI,
# LSI, tags; PITR and deletion protection on, never TTL), then kept up to
# date item by item.
name = "orders"
source_table = "orders"
dest_table = "escrow-orders"
segments = 4
# Before a run replaces an escrow item, the state escrow held is kept here:
# `restore --at` brings back the table as escrow held it at any time.
history_bucket = "escrow-orders-history"
max_age = "26h"

[[dynamodb]]
# Point-in-time export generations in escrow S3 (gzip DynamoDB JSON lines,
# schema.json, manifest.json): each run writes a new generation.
name = "orders-export"
source_table = "orders"
dest_bucket = "escrow-exports"
dest_prefix = "dynamodb/"
segments = 4
object_lock = { mode = "COMPLIANCE", days = 30 }

[[ec2]]
# AMIs (with their backing snapshots) and EBS snapshots tagged backup=true:
# shared by the primary, copied into the escrow with escrow credentials,
# then unshared. `escrow-sync prune` keeps the newest copy per volume.
name = "ec2"
include = ["images", "snapshots"]
tags = { backup = "true" }
keep_last = 1
# EBS Snapshot Lock on every copy (AMI backing snapshots too) and
# deregistration protection on every AMI copy; renewed by each run, and
# `prune` never deletes a locked copy.
lock = { mode = "compliance", days = 30 }

[[rds]]
# RDS DB snapshots and Aurora cluster snapshots tagged backup=true.
name = "databases"
include = ["db", "cluster"]
tags = { backup = "true" }
keep_last = 7

[[redshift]]
# Redshift snapshots can only be shared: restore each in escrow and snapshot
# it there, so escrow owns a copy the primary cannot revoke.
name = "warehouse"
tags = { backup = "true" }
independent_copy = true

[[cloudtrail]]
# The primary's trail: its log bucket copied into escrow (append-only), and
# `verify` checking every log file against its signed digest and the digest
# chain, from escrow.
name = "trail"
trails = ["prod-trail"]
source_bucket = "prod-trail-logs"
dest_bucket = "escrow-trail-logs"
dest_prefix = "cloudtrail/"
# The emulator has no ListPublicKeys: the seed script saved its signing
# key's public half here (the shape of `aws cloudtrail list-public-keys`).
public_keys_file = "cloudtrail-public-keys.json"
object_lock = { mode = "COMPLIANCE", days = 30 }
"#;

/// The package that holds the binary the demo runs.
const DEMO_PACKAGE: &str = "escrow-sync-cli";
/// The binary the demo runs (`target/debug/escrow-sync`).
const DEMO_BIN: &str = "escrow-sync";

/// The demo's one build: `cargo build -p escrow-sync-cli --bin escrow-sync` on the dev
/// profile, without the clippy wrapper and without test targets (issue 14, item 8). A
/// newcomer's first command compiles only the binary it runs (the emulator and the seed
/// scripts are Python); `cargo xtask test` keeps its own single clippy+test build. The
/// wrapper variables are removed so an exported `RUSTC_WORKSPACE_WRAPPER` cannot turn clippy
/// back on here.
fn demo_build(paths: &Paths) -> Command {
    let mut cmd = crate::process::cargo(paths);
    cmd.args(["build", "-p", DEMO_PACKAGE, "--bin", DEMO_BIN]);
    cmd.env_remove("RUSTC_WORKSPACE_WRAPPER").env_remove("CLIPPY_ARGS");
    cmd
}

/// What an `escrow-sync` exit code means (issue 2, item 7).
fn exit_meaning(code: Option<i32>) -> &'static str {
    match code {
        Some(1) => "some items failed, or a fault outlasted the retries",
        Some(2) => "invalid config or usage, or a refusal",
        Some(3) => {
            "findings: verify found differences, a job is stale, or a run stopped at the \
                    mass-change breaker"
        }
        Some(130) => "stopped by Ctrl-C",
        Some(143) => "stopped by SIGTERM",
        Some(_) => "unexpected exit code",
        None => "killed by a signal",
    }
}

/// Runs the demo end to end; any failed step fails the demo with a message naming it.
pub fn demo(paths: &Paths) -> Result<ExitCode> {
    let started = Instant::now();

    // Only what the demo runs: the escrow-sync binary, no test target, no clippy.
    let mut build_cmd = demo_build(paths);
    println!("==> building the escrow-sync binary: {}", describe(&build_cmd));
    let build = run_status(&mut build_cmd)?;
    if !build.success() {
        bail!("building the escrow-sync binary failed ({build}); the demo runs it");
    }
    let bin = paths.escrow_sync_bin();
    if !bin.is_file() {
        bail!(
            "the escrow-sync binary is missing at {} after `{}`: \
             the {DEMO_PACKAGE} crate must define `[[bin]] name = \"{DEMO_BIN}\"`",
            bin.display(),
            describe(&build_cmd)
        );
    }

    let guard = emulator::Guard::start(paths)?;
    let endpoint = guard.emulator().endpoint.clone();
    if !guard.emulator().started_here {
        println!("emulator: resetting its state so the demo starts from empty accounts");
        emulator::reset(&endpoint)?;
    }

    let files = Files::new(paths);
    let demo_dir = files.dir.join("demo");
    fs::create_dir_all(&demo_dir).with_context(|| format!("creating {}", demo_dir.display()))?;
    let seed = files.dir.join("demo_seed.py");
    fs::write(&seed, SEED_SCRIPT).with_context(|| format!("writing {}", seed.display()))?;
    let mut seed_cmd = Command::new(files.python());
    seed_cmd.arg(&seed).arg(&endpoint).arg(demo_dir.join("cloudtrail-public-keys.json"));
    emulator::apply_client_env(&mut seed_cmd, paths, &endpoint);
    println!("\n==> seeding the primary and escrow accounts: {}", paths.display(&seed));
    let seeded = Instant::now();
    let status = run_status(&mut seed_cmd)?;
    if !status.success() {
        bail!("seeding the demo accounts failed ({status})");
    }
    println!("seeded in {}", secs(seeded.elapsed()));

    let config = demo_dir.join("escrow.toml");
    fs::write(&config, DEMO_CONFIG).with_context(|| format!("writing {}", config.display()))?;
    println!("\n==> config {}:\n{DEMO_CONFIG}", config.display());

    let steps: [&[&str]; 9] = [
        &["plan"],
        &["run"],
        &["verify"],
        &["run", "--report", RUN_REPORT],
        &["verify", "--output", "json"],
        &["verify", "--offline"],
        &["prune"],
        &["status"],
        &["status", "--job", "assets", "--output", "json"],
    ];
    // Then `policy` and `audit` under the generated roles, restore drills of
    // an S3 job and a DynamoDB job into a third account, `status --max-age
    // 1s` (stale by then: exit 3), the metrics the runs published, and last
    // the incident (INCIDENT_STEPS steps).
    let of = steps.len() + 5 + INCIDENT_STEPS;
    for (n, args) in steps.iter().enumerate() {
        let (command, rest) = args.split_first().expect("a command");
        let mut cmd = Command::new(&bin);
        cmd.arg(command).arg("--config").arg(&config).args(rest).current_dir(&demo_dir);
        emulator::apply_client_env(&mut cmd, paths, &endpoint);
        run_step(paths, &bin, n + 1, of, &mut cmd)?;
        if args.contains(&"--report") {
            let report = demo_dir.join(RUN_REPORT);
            let text = fs::read_to_string(&report)
                .with_context(|| format!("reading the run's report {}", report.display()))?;
            println!("\n==> the run's Markdown report, {}:\n{text}", paths.display(&report));
        }
    }
    audit_under_iam(
        paths,
        &files,
        &bin,
        &config,
        &endpoint,
        (steps.len() + 1, steps.len() + 2),
        of,
    )?;

    // Restore drills into a recovery account (333333333333), from escrow
    // alone: the S3 job compared byte for byte, the table item for item,
    // then deleted.
    for (n, (job, target)) in [
        ("assets", ["--target-bucket", "drill-prod-assets"]),
        ("orders", ["--target-table", "drill-orders"]),
    ]
    .iter()
    .enumerate()
    {
        let mut drill = Command::new(&bin);
        drill
            .args(["restore", "--config"])
            .arg(&config)
            .args(["--job", job, "--target-role-arn", RECOVERY_ROLE])
            .args(target)
            .arg("--drill")
            .current_dir(&demo_dir);
        emulator::apply_client_env(&mut drill, paths, &endpoint);
        run_step(paths, &bin, steps.len() + 3 + n, of, &mut drill)?;
    }

    // Seconds have passed since the last verified copy: with --max-age 1s
    // every job is stale.
    let mut stale = Command::new(&bin);
    stale.args(["status", "--max-age", "1s", "--config"]).arg(&config).current_dir(&demo_dir);
    emulator::apply_client_env(&mut stale, paths, &endpoint);
    run_step_expecting(paths, &bin, steps.len() + 5, of, &mut stale, 3)?;
    show_metrics(paths, &files, &endpoint)?;

    let first = steps.len() + 6;
    incident(paths, &files, &bin, &config, &endpoint, first, of)?;

    drop(guard);
    println!("\n==> demo finished in {} (including the build)", secs(started.elapsed()));
    Ok(ExitCode::SUCCESS)
}

/// The Markdown report the second run writes (`run --report`), shown after it.
const RUN_REPORT: &str = "run-report.md";

/// Prints what the runs and `status` published to the escrow account's
/// CloudWatch (namespace `EscrowSync`): each job's newest value of every
/// metric, read back from the emulator with boto3 (in the emulator's venv).
fn show_metrics(paths: &Paths, files: &Files, endpoint: &str) -> Result<()> {
    let script = files.dir.join("demo_metrics.py");
    fs::write(&script, METRICS_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let mut cmd = Command::new(files.python());
    cmd.arg(&script).arg(endpoint);
    emulator::apply_client_env(&mut cmd, paths, endpoint);
    println!("\n==> the metrics in the escrow account's CloudWatch: {}", paths.display(&script));
    let status = run_status(&mut cmd)?;
    if !status.success() {
        bail!("reading the published metrics failed ({status})");
    }
    Ok(())
}

/// Reads the escrow account's `EscrowSync` metrics back (see [`show_metrics`]).
const METRICS_SCRIPT: &str = r#"import datetime, sys
import boto3
sts = boto3.client("sts", endpoint_url=sys.argv[1], region_name="us-east-1")
creds = sts.assume_role(RoleArn="arn:aws:iam::222222222222:role/escrow-operator",
                        RoleSessionName="demo-metrics")["Credentials"]
cw = boto3.client("cloudwatch", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=creds["AccessKeyId"],
                  aws_secret_access_key=creds["SecretAccessKey"],
                  aws_session_token=creds["SessionToken"])
now = datetime.datetime.now(datetime.timezone.utc)
metrics = cw.list_metrics(Namespace="EscrowSync")["Metrics"]
jobs = sorted({d["Value"] for m in metrics for d in m["Dimensions"] if d["Name"] == "Job"})
names = sorted({m["MetricName"] for m in metrics})
if not jobs:
    sys.exit("no EscrowSync metric in the escrow account")
print("%-14s" % "job" + "".join("%30s" % n for n in names))
for job in jobs:
    row = "%-14s" % job
    for name in names:
        points = cw.get_metric_statistics(
            Namespace="EscrowSync", MetricName=name,
            Dimensions=[{"Name": "Job", "Value": job}],
            StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(minutes=5),
            Period=60, Statistics=["Maximum"])["Datapoints"]
        last = max(points, key=lambda p: p["Timestamp"])["Maximum"] if points else None
        row += "%30s" % ("-" if last is None else "%.12g" % last)
    print(row)
"#;

/// How many `escrow-sync` steps the incident drill runs.
const INCIDENT_STEPS: usize = 8;

/// The incident escrow-sync exists for, after the drills: the primary's
/// attacker overwrites every object of `prod-assets` with random bytes and
/// deletes a third, rewrites the orders and deletes a fifth, deletes the
/// backed-up volume's snapshots ([`INCIDENT_SCRIPT`]). The scheduled runs of
/// both data jobs stop at the mass-change breaker (exit 3); accepted runs
/// copy the rest (escrow keeps every earlier state); `prune --apply`, from
/// escrow's records alone, deletes none of the escrow copies;
/// `restore --at` a time before the incident brings the
/// bucket and the table back into the recovery account, and the script
/// checks them against the primary as it was before, byte for byte and item
/// for item.
fn incident(
    paths: &Paths,
    files: &Files,
    bin: &Path,
    config: &Path,
    endpoint: &str,
    first: usize,
    of: usize,
) -> Result<()> {
    let demo_dir = config.parent().expect("the config is in the demo directory");
    let script = files.dir.join("demo_incident.py");
    fs::write(&script, INCIDENT_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let (state, time) = (demo_dir.join("pre-incident.json"), demo_dir.join("pre-incident-time"));
    let python = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let mut cmd = Command::new(files.python());
        cmd.arg(&script).args(args).current_dir(&files.dir);
        emulator::apply_client_env(&mut cmd, paths, endpoint);
        let status = run_status(&mut cmd)?;
        if !status.success() {
            bail!("{} failed ({status})", paths.display(&script));
        }
        Ok(())
    };
    println!("\n==> the incident: the primary's admin login is stolen");
    python(&["attack".as_ref(), endpoint.as_ref(), state.as_os_str(), time.as_os_str()])?;
    let before =
        fs::read_to_string(&time).with_context(|| format!("reading {}", time.display()))?;
    let before = before.trim();
    let escrow_sync = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        let (command, rest) = args.split_first().expect("a command");
        cmd.arg(command).arg("--config").arg(config).args(rest).current_dir(demo_dir);
        emulator::apply_client_env(&mut cmd, paths, endpoint);
        cmd
    };
    // The next scheduled runs stop at the breaker: exit 3, `mass-change`.
    for (n, job) in ["assets", "orders"].iter().enumerate() {
        run_step_expecting(paths, bin, first + n, of, &mut escrow_sync(&["run", "--job", job]), 3)?;
    }
    // Once the operator knows, the change to the data is accepted: escrow
    // keeps every earlier version and item state, so nothing is lost.
    for (n, job) in ["assets", "orders"].iter().enumerate() {
        let mut cmd = escrow_sync(&["run", "--job", job, "--accept-mass-change"]);
        run_step(paths, bin, first + 2 + n, of, &mut cmd)?;
    }
    // prune --apply, with the primary's snapshots gone: it reads escrow's
    // own records only, and keeps copies made in the last keep_within_days.
    run_step(paths, bin, first + 4, of, &mut escrow_sync(&["prune", "--apply", "--job", "ec2"]))?;
    // Back as of before the incident, into the recovery account.
    let targets = [
        ("assets", "--target-bucket", "incident-prod-assets"),
        ("orders", "--target-table", "incident-orders"),
    ];
    for (n, (job, flag, target)) in targets.iter().enumerate() {
        let args = [
            "restore",
            "--job",
            job,
            "--target-role-arn",
            RECOVERY_ROLE,
            flag,
            target,
            "--at",
            before,
            "--apply",
        ];
        run_step(paths, bin, first + 5 + n, of, &mut escrow_sync(&args))?;
    }
    println!("\n==> what came back, compared with the primary before the incident");
    python(&[
        "check".as_ref(),
        endpoint.as_ref(),
        state.as_os_str(),
        targets[0].2.as_ref(),
        targets[1].2.as_ref(),
    ])?;
    // What the intruder did, from the escrowed CloudTrail alone: each event
    // proven by a digest CloudTrail signed (the seeded trail's last hour
    // holds the intrusion).
    println!("\n==> the forensic timeline: what the intruder did, from the escrowed CloudTrail");
    let mut timeline = Command::new(bin);
    timeline.args(["trail", "events", "--config"]).arg(config);
    timeline.args(["--job", "trail", "--destructive"]).current_dir(demo_dir);
    emulator::apply_client_env(&mut timeline, paths, endpoint);
    run_step(paths, bin, first + 7, of, &mut timeline)
}

/// The closing audit. The emulator keeps the accounts apart only with IAM
/// enforced (otherwise any identity reads any bucket, and the primary would
/// always "reach" the escrow), so: `escrow-sync policy` (step `n.0`), the
/// roles and the runner user created from it ([`IAM_SCRIPT`]), enforcement
/// on, `escrow-sync audit` with the runner's keys (step `n.1`), which must
/// find nothing at all, and enforcement off again.
fn audit_under_iam(
    paths: &Paths,
    files: &Files,
    bin: &Path,
    config: &Path,
    endpoint: &str,
    n: (usize, usize),
    of: usize,
) -> Result<()> {
    let demo_dir = config.parent().expect("the config is in the demo directory");
    let mut policy = Command::new(bin);
    policy.args(["policy", "--config"]).arg(config).current_dir(demo_dir);
    emulator::apply_client_env(&mut policy, paths, endpoint);
    let shown = describe(&policy).replace(&bin.display().to_string(), "escrow-sync");
    println!(
        "\n==> [{}/{}] {} > policies.json",
        n.0,
        of,
        shown.replace(&format!("{}/", paths.root.display()), "")
    );
    let out = policy.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let policies = demo_dir.join("policies.json");
    fs::write(&policies, &out.stdout).with_context(|| format!("writing {}", policies.display()))?;

    let script = files.dir.join("demo_iam.py");
    fs::write(&script, IAM_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let keys = demo_dir.join("runner-keys");
    let mut iam = Command::new(files.python());
    iam.arg(&script).arg(endpoint).arg(&policies).arg(&keys);
    emulator::apply_client_env(&mut iam, paths, endpoint);
    println!("creating both accounts' roles from {}:", paths.display(&policies));
    let status = run_status(&mut iam)?;
    if !status.success() {
        bail!("creating the roles from the generated policies failed ({status})");
    }
    recycle_bin_rules(paths, files, bin, config, endpoint)?;
    let keys = fs::read_to_string(&keys).with_context(|| format!("reading {}", keys.display()))?;
    let (Some(key_id), Some(secret)) = (keys.lines().next(), keys.lines().nth(1)) else {
        bail!("demo_iam.py wrote no access key for the runner");
    };

    let mut audit = Command::new(bin);
    // Clean means no finding at all, not only none at the default level.
    audit.args(["audit", "--fail-on", "low", "--config"]).arg(config).current_dir(demo_dir);
    emulator::apply_client_env(&mut audit, paths, endpoint);
    audit.env("AWS_ACCESS_KEY_ID", key_id).env("AWS_SECRET_ACCESS_KEY", secret);
    println!("IAM enforcement on: each request is checked against the generated policies");
    let enforced = emulator::IamEnforced::on(endpoint)?;
    let result = run_step(paths, bin, n.1, of, &mut audit);
    drop(enforced);
    println!("IAM enforcement off");
    result
}

/// The escrow administrator's part of the escrow template: its locked
/// Recycle Bin rules, created from `escrow-sync policy --output
/// cloudformation` ([`RBIN_SCRIPT`]), so the audit finds them.
fn recycle_bin_rules(
    paths: &Paths,
    files: &Files,
    bin: &Path,
    config: &Path,
    endpoint: &str,
) -> Result<()> {
    let demo_dir = config.parent().expect("the config is in the demo directory");
    let mut templates = Command::new(bin);
    templates
        .args(["policy", "--output", "cloudformation", "--config"])
        .arg(config)
        .current_dir(demo_dir);
    emulator::apply_client_env(&mut templates, paths, endpoint);
    let out = templates.output().context("running escrow-sync policy --output cloudformation")?;
    if !out.status.success() {
        bail!(
            "`escrow-sync policy --output cloudformation` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = demo_dir.join("templates.json");
    fs::write(&path, &out.stdout).with_context(|| format!("writing {}", path.display()))?;
    let script = files.dir.join("demo_rbin.py");
    fs::write(&script, RBIN_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let mut cmd = Command::new(files.python());
    cmd.arg(&script).arg(endpoint).arg(&path);
    emulator::apply_client_env(&mut cmd, paths, endpoint);
    println!("the escrow template's locked Recycle Bin rules, from {}:", paths.display(&path));
    let status = run_status(&mut cmd)?;
    if !status.success() {
        bail!("creating the escrow's Recycle Bin rules failed ({status})");
    }
    Ok(())
}

/// Runs one escrow-sync command with its output on the terminal; fails unless it exits 0.
fn run_step(paths: &Paths, bin: &Path, n: usize, of: usize, cmd: &mut Command) -> Result<()> {
    run_step_expecting(paths, bin, n, of, cmd, 0)
}

/// Runs one escrow-sync command with its output on the terminal; fails
/// unless it exits with `expected`.
fn run_step_expecting(
    paths: &Paths,
    bin: &Path,
    n: usize,
    of: usize,
    cmd: &mut Command,
    expected: i32,
) -> Result<()> {
    let shown = describe(cmd).replace(&bin.display().to_string(), "escrow-sync");
    let shown = shown.replace(&format!("{}/", paths.root.display()), "");
    println!("\n==> [{n}/{of}] {shown}");
    let step_started = Instant::now();
    let status = run_status(cmd)?;
    if status.code() != Some(expected) {
        bail!(
            "`{shown}` exited with {status} ({}), expected {expected}",
            exit_meaning(status.code())
        );
    }
    if expected != 0 {
        println!("(exit {expected}: {}, as expected)", exit_meaning(Some(expected)));
    }
    println!("({})", secs(step_started.elapsed()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_seed_script_name_the_same_accounts_and_buckets() {
        for needle in [
            "222222222222",
            "111111111111",
            "escrow-operator",
            "escrow-reader",
            "demo-external-id",
            "\"prod-assets\"",
            "\"escrow-prod-assets\"",
            "\"prod-logs\"",
            "\"escrow-prod-logs\"",
            "\"orders\"",
            "\"escrow-exports\"",
            "backup",
            "alias/escrow-demo",
            "\"escrow-manifests\"",
            "\"escrow-orders-history\"",
            "\"prod-trail\"",
            "\"prod-trail-logs\"",
            "\"escrow-trail-logs\"",
        ] {
            assert!(DEMO_CONFIG.contains(needle), "config lacks {needle}");
            assert!(SEED_SCRIPT.contains(needle), "seed script lacks {needle}");
        }
    }

    #[test]
    fn demo_builds_only_the_binary_without_clippy() {
        let paths = Paths { root: "/ws".into(), target: "/ws/target".into() };
        let cmd = demo_build(&paths);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["build", "-p", "escrow-sync-cli", "--bin", "escrow-sync"]);
        assert!(!args.iter().any(|a| a == "--workspace" || a == "--all-targets"));
        // Both wrapper variables are explicitly removed (`None`), not inherited.
        for var in ["RUSTC_WORKSPACE_WRAPPER", "CLIPPY_ARGS"] {
            let set = cmd.get_envs().find(|(k, _)| *k == var);
            assert_eq!(set, Some((std::ffi::OsStr::new(var), None)), "{var}");
        }
        assert_eq!(paths.escrow_sync_bin().file_stem().unwrap(), DEMO_BIN);
    }

    #[test]
    fn exit_codes_have_meanings() {
        assert!(exit_meaning(Some(3)).contains("mass-change breaker"));
        assert_eq!(exit_meaning(None), "killed by a signal");
    }
}
