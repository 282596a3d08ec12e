//! `escrow-sync restore`: one job's data from escrow back into a recovery
//! target — the primary after an incident, or a fresh account — through a
//! target role assumed with the escrow credentials.
//!
//! - a dry run by default: what would be restored, and where;
//! - `--apply`: restore (the target bucket is created when missing);
//! - `--drill`: restore into a bucket the drill creates, compare every
//!   object with its escrow version byte for byte (SHA-256 of both), report,
//!   then delete everything the drill created, whatever happened.
//!
//! S3 jobs: every object as escrow held it at `--at` (default: the newest;
//! with `--at` and a run manifest of a run that finished the job by then,
//! only the keys the primary held at that run),
//! read from the escrow bucket's versions ([`S3RestoreSource`]) and streamed
//! into the target with the same executor as `run`.
//!
//! Snapshot jobs (EBS snapshots and AMIs, RDS and Aurora snapshots, Redshift
//! snapshots): the newest escrow copy at or before `--at` is shared with the
//! recovery account (`--apply`), and copied there with `--copy` (Redshift
//! cannot copy across accounts: the recovery account restores from the
//! share). A drill shares, copies, checks the copy against the escrow copy,
//! then deletes the copy and removes the share (Redshift: checks the
//! recovery account sees the share, then revokes it). The SDK calls are in
//! the service crates' `restore` modules; this is the orchestration.

use std::time::SystemTime;

use futures::TryStreamExt;
use serde::Serialize;

use escrow_sync_aws::{Connector, Session};
#[cfg(any(feature = "ec2", feature = "rds", feature = "redshift"))]
use escrow_sync_core::snapshot::{SnapshotRestore, SnapshotRestoreRequest};
use escrow_sync_core::{
    CancellationToken, Error, ExecutorOptions, Item, JobContext, Mode, Report, Scope, Source,
};
#[cfg(feature = "dynamodb")]
use escrow_sync_dynamodb::history::{AsOf, HistoryView};
#[cfg(feature = "dynamodb")]
use escrow_sync_dynamodb::{DynamoDbSink, DynamoDbSource, EscrowTable, ScanOptions, TableInfo};
use escrow_sync_s3::{
    S3RestoreSource, S3Sink, bucket_exists, compare_with_target, create_bucket,
    delete_bucket_and_contents,
};

pub use escrow_sync_core::snapshot::DrillReport;

use crate::Verdict;
#[cfg(feature = "dynamodb")]
use crate::spec::DynamoDbJob;
use crate::spec::{Config, JobRef, S3Job};
#[cfg(feature = "dynamodb")]
use escrow_sync_core::ErrorKind;
#[cfg(feature = "dynamodb")]
use escrow_sync_s3::S3Source;

/// How many objects a drill compares at once.
const COMPARE_CONCURRENCY: usize = 8;

/// What to restore, and how: one request for every job kind.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RestoreRequest {
    /// The job to restore.
    pub job: String,
    /// The role in the recovery account to restore with (assumed with the
    /// escrow credentials).
    pub target_role_arn: String,
    /// The bucket to restore an S3 job into (default: the job's source
    /// bucket name).
    pub target_bucket: Option<String>,
    /// The table to restore a DynamoDB job into (default: the job's source
    /// table name).
    pub target_table: Option<String>,
    /// Restore the data as escrow held it at this time (RFC 3339; default:
    /// the newest).
    pub at: Option<String>,
    /// With `at`: also restore keys the primary had already deleted by then.
    pub include_deleted: bool,
    /// Restore (without it: a dry run).
    pub apply: bool,
    /// Restore into a new bucket or table, verify it against escrow, report,
    /// then delete what the drill created.
    pub drill: bool,
    /// Snapshot jobs with `apply`: also copy each escrow copy into the
    /// recovery account (not Redshift).
    pub copy: bool,
}

impl RestoreRequest {
    /// A dry run of restoring `job` with the recovery account's role
    /// `target_role_arn`.
    pub fn new(job: impl Into<String>, target_role_arn: impl Into<String>) -> Self {
        RestoreRequest {
            job: job.into(),
            target_role_arn: target_role_arn.into(),
            ..Self::default()
        }
    }
    /// Restore into this bucket.
    pub fn target_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.target_bucket = Some(bucket.into());
        self
    }
    /// Restore into this bucket, or the default.
    pub fn set_target_bucket(mut self, bucket: Option<String>) -> Self {
        self.target_bucket = bucket;
        self
    }
    /// Restore into this table.
    pub fn target_table(mut self, table: impl Into<String>) -> Self {
        self.target_table = Some(table.into());
        self
    }
    /// Restore into this table, or the default.
    pub fn set_target_table(mut self, table: Option<String>) -> Self {
        self.target_table = table;
        self
    }
    /// Restore as escrow held the data at this time (RFC 3339).
    pub fn at(mut self, at: impl Into<String>) -> Self {
        self.at = Some(at.into());
        self
    }
    /// Restore as of this time, or the newest.
    pub fn set_at(mut self, at: Option<String>) -> Self {
        self.at = at;
        self
    }
    /// Also restore keys the primary had deleted by `at`.
    pub fn include_deleted(mut self, on: bool) -> Self {
        self.include_deleted = on;
        self
    }
    /// Restore for real (not a dry run).
    pub fn apply(mut self, on: bool) -> Self {
        self.apply = on;
        self
    }
    /// Run a drill.
    pub fn drill(mut self, on: bool) -> Self {
        self.drill = on;
        self
    }
    /// Copy snapshot copies into the recovery account.
    pub fn copy(mut self, on: bool) -> Self {
        self.copy = on;
        self
    }
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The job restored.
    pub job: String,
    /// Its kind (`s3`, `dynamodb`, `ec2`, `rds`, `redshift`, `cloudtrail`).
    pub kind: &'static str,
    /// `dry-run`, `apply` or `drill`.
    pub mode: &'static str,
    /// Where the data came from (escrow).
    pub source: String,
    /// Where it went (or would go).
    pub target: String,
    /// The recovery account.
    pub target_account: String,
    /// The `--at` time asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Objects restored (a dry run: that would be).
    pub restored: u64,
    /// Bytes restored (a dry run: that would be).
    pub bytes: u64,
    /// Objects the target already held.
    pub already_there: u64,
    /// Objects that failed, with why.
    pub failed: Vec<String>,
    /// The drill's verification and clean-up (`--drill`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillReport>,
    /// What the operator should know.
    pub notes: Vec<String>,
}

impl RestoreReport {
    /// An empty report of restoring job `args.job` from `source` into
    /// `target` (in `account`), in the mode the arguments ask for.
    fn new(
        args: &RestoreRequest,
        kind: &'static str,
        source: String,
        target: String,
        account: &str,
        at: Option<String>,
    ) -> Self {
        let mode = if args.drill {
            "drill"
        } else if args.apply {
            "apply"
        } else {
            "dry-run"
        };
        RestoreReport {
            job: args.job.clone(),
            kind,
            mode,
            source,
            target,
            target_account: account.to_string(),
            at,
            restored: 0,
            bytes: 0,
            already_there: 0,
            failed: Vec::new(),
            drill: None,
            notes: Vec::new(),
        }
    }
}

/// A drill's refusal of an existing target (`what`: bucket or table).
fn drill_refuses(what: &str, name: &str, account: &str) -> Error {
    Error::invalid_config(format!(
        "--drill restores into a {what} it creates and deletes afterwards, and {name} already \
         exists in account {account}: pass --target-{what} with a free name"
    ))
}

/// What a restore came to: fatal for an error, failed when an item failed
/// or a drill could not clean up, findings when a drill found a mismatch.
pub fn verdict(result: &Result<RestoreReport, Error>) -> Verdict {
    match result {
        Err(e) => Verdict::of_error(e),
        Ok(r) if !r.failed.is_empty() => Verdict::Failed,
        Ok(r) if r.drill.as_ref().is_some_and(|d| !d.mismatched.is_empty()) => Verdict::Findings,
        Ok(r) if r.drill.as_ref().is_some_and(|d| d.cleanup_error.is_some()) => Verdict::Failed,
        Ok(_) => Verdict::Ok,
    }
}

/// `[escrow] region`, else the one the escrow session resolved.
#[cfg(any(feature = "ec2", feature = "rds", feature = "redshift"))]
fn escrow_region(config: &Config, escrow: &Session) -> String {
    match &config.escrow.region {
        Some(r) => r.clone(),
        None => escrow.sdk_config().region().map(|r| r.to_string()).unwrap_or_default(),
    }
}

/// Restores one job's data from escrow as `args` asks: a dry run, an
/// apply or a drill (see the module docs).
pub async fn restore(
    config: &Config,
    args: &RestoreRequest,
    cancel: CancellationToken,
) -> Result<RestoreReport, Error> {
    restore_with(config, args, &JobContext::new().with_cancellation(cancel)).await
}

/// [`restore`] with `ctx`'s cancellation (nothing new starts; a drill still
/// cleans up), hard stop (work in flight is stopped: copies in flight fail,
/// a half-done S3 multipart upload is aborted, a drill stops comparing and
/// still deletes what it created) and progress events (the copies, as a
/// run reports them).
pub async fn restore_with(
    config: &Config,
    args: &RestoreRequest,
    ctx: &JobContext,
) -> Result<RestoreReport, Error> {
    let at = escrow_sync_core::time::parse_option("--at", args.at.as_deref())?;
    let job = config.select(Some(&args.job))?.into_iter().next().expect("select names one job");
    match job {
        JobRef::S3(_) if args.target_table.is_some() => {
            return Err(Error::invalid_config(format!(
                "job {} is an [[s3]] job: give --target-bucket, not --target-table",
                args.job
            )));
        }
        JobRef::S3(_) => {}
        JobRef::DynamoDb(j) if j.dest_table.is_some() => {
            if args.target_bucket.is_some() {
                return Err(Error::invalid_config(format!(
                    "job {} copies table to table: give --target-table, not --target-bucket",
                    args.job
                )));
            }
            if args.at.is_some() && j.history_bucket.is_none() {
                return Err(Error::invalid_config(format!(
                    "job {} copies table to table without item history, and the escrow table \
                     holds the latest state only: drop --at, or set history_bucket on the job \
                     so that later runs keep every state escrow held",
                    args.job
                )));
            }
        }
        JobRef::DynamoDb(_) => {
            if args.target_bucket.is_some() {
                return Err(Error::invalid_config(format!(
                    "job {} exports generations: give --target-table, not --target-bucket",
                    args.job
                )));
            }
        }
        JobRef::CloudTrail(_) if args.target_table.is_some() => {
            return Err(Error::invalid_config(format!(
                "job {} escrows CloudTrail logs: give --target-bucket, not --target-table",
                args.job
            )));
        }
        JobRef::CloudTrail(_) => {}
        JobRef::Ec2(_) | JobRef::Rds(_) | JobRef::Redshift(_) => {
            if args.target_bucket.is_some() || args.target_table.is_some() {
                return Err(Error::invalid_config(format!(
                    "job {} restores snapshots into the recovery account: drop --target-bucket \
                     and --target-table",
                    args.job
                )));
            }
        }
    }
    if let JobRef::Redshift(j) = job {
        if !j.independent_copy {
            return Err(Error::invalid_config(format!(
                "job {} is share-only: escrow holds no Redshift snapshot of its own, only the \
                 primary's share, which it cannot pass on; restore from the primary's snapshots \
                 there, and set independent_copy = true on the job so that escrow holds copies \
                 it can restore",
                args.job
            )));
        }
        if args.copy {
            return Err(Error::invalid_config(format!(
                "job {}: Redshift cannot copy a snapshot into another account, so --copy does \
                 not apply: the recovery account restores a cluster from the share (drop --copy; \
                 --apply shares the escrow snapshot, --drill checks the recovery account sees it)",
                args.job
            )));
        }
    }
    let escrow = Connector::new().connect_escrow(&config.escrow_account()).await?;
    let target = escrow.assume(&args.target_role_arn, "escrow-sync-restore").await?;
    if target.account_id() == escrow.account_id() {
        return Err(Error::invalid_config(format!(
            "--target-role-arn {} is in the escrow account {}: a restore writes into a recovery \
             account, never into the escrow itself",
            args.target_role_arn,
            escrow.account_id()
        )));
    }
    #[cfg(any(feature = "ec2", feature = "rds", feature = "redshift"))]
    let (primary, region) =
        (config.primary_account().account_id.clone(), escrow_region(config, &escrow));
    match job {
        JobRef::S3(j) => {
            // As of --at, only the keys the primary held then, by the run
            // manifest of that time (escrow also keeps what it had deleted).
            let held = match at {
                Some(t) if !args.include_deleted => {
                    Some(crate::manifest::keys_at(config, &escrow, &args.job, t).await?)
                }
                _ => None,
            };
            let mut restored = restore_s3(
                args,
                j,
                at,
                held.as_ref().and_then(Option::as_ref),
                &escrow,
                &target,
                ctx,
            )
            .await?;
            match held {
                Some(Some(k)) => restored.notes.push(format!(
                    "as of run {} (finished {}): only the {} keys the primary held then; keys it \
                     had deleted are left out (--include-deleted restores them too)",
                    k.run_id,
                    k.finished_at,
                    k.keys.len()
                )),
                Some(None) => restored.notes.push(
                    "no run manifest of a run that finished this job by --at: every key escrow \
                     held then is restored, including keys the primary had already deleted"
                        .to_string(),
                ),
                None => {}
            }
            Ok(restored)
        }
        #[cfg(feature = "dynamodb")]
        JobRef::DynamoDb(j) if j.dest_table.is_some() => {
            // As for S3: only the keys the primary held then, by the run
            // manifest of that time, unless --include-deleted.
            let held = match at {
                Some(t) if !args.include_deleted => {
                    crate::manifest::keys_at(config, &escrow, &args.job, t).await?
                }
                _ => None,
            };
            // A manifest of a version that did not record a table job's
            // items says nothing about them.
            let held = held.filter(|k| !k.keys.is_empty());
            let mut restored =
                restore_table(args, j, at, held.as_ref().map(|k| &k.keys), &escrow, &target, ctx)
                    .await?;
            match held {
                Some(k) => restored.notes.push(format!(
                    "as of run {} (finished {}): only the {} items the primary held then; items \
                     it had deleted are left out (--include-deleted restores them too)",
                    k.run_id,
                    k.finished_at,
                    k.keys.len()
                )),
                None if at.is_some() && !args.include_deleted => restored.notes.push(
                    "no run manifest of a run that finished this job by --at: every item escrow \
                     held then is restored, including items the primary had already deleted"
                        .to_string(),
                ),
                None => {}
            }
            Ok(restored)
        }
        #[cfg(feature = "dynamodb")]
        JobRef::DynamoDb(j) => {
            let recorded = crate::manifest::recorded_generations(config, &escrow, j).await?;
            restore_generation(args, j, at, recorded, &escrow, &target, ctx).await
        }
        #[cfg(feature = "ec2")]
        JobRef::Ec2(j) => {
            let kind =
                escrow_sync_ec2::restore::Ec2Restore::new(&escrow, &target, &region, &primary)
                    .with_selection(&j.ids, j.includes("snapshots"), j.includes("images"));
            restore_snapshots(args, "ec2", &kind, at, ctx).await
        }
        #[cfg(feature = "rds")]
        JobRef::Rds(j) => {
            use escrow_sync_rds::RdsKind;
            let kinds = [RdsKind::Db, RdsKind::Cluster];
            let kind =
                escrow_sync_rds::restore::RdsRestore::new(&escrow, &target, &region, &primary)
                    .with_ids(&j.ids)
                    .with_kinds(kinds.into_iter().filter(|k| j.includes(k.as_str())).collect());
            restore_snapshots(args, "rds", &kind, at, ctx).await
        }
        #[cfg(feature = "redshift")]
        JobRef::Redshift(j) => {
            let kind = escrow_sync_redshift::restore::RedshiftRestore::new(
                &escrow, &target, &region, &primary,
            )
            .with_ids(&j.ids);
            restore_snapshots(args, "redshift", &kind, at, ctx).await
        }
        #[cfg(feature = "cloudtrail")]
        JobRef::CloudTrail(j) => {
            // The log bucket's copy, restored like an [[s3]] job's: every
            // file under <dest_prefix><bucket>/, into a bucket named like it.
            let bucket = crate::trail::escrowed_bucket(j, &escrow).await?;
            let s3 = S3Job { prefix: String::new(), ..j.s3_job(&bucket, "") };
            restore_s3(args, &s3, at, None, &escrow, &target, ctx).await
        }
        // Refused when the config was parsed.
        #[allow(unreachable_patterns)]
        other => Err(crate::spec::not_built(other.kind())),
    }
}

/// An S3 job's escrow copy as of `at` (only `held`'s keys, when given)
/// into the target bucket.
async fn restore_s3(
    args: &RestoreRequest,
    job: &S3Job,
    at: Option<SystemTime>,
    held: Option<&crate::manifest::KeysAt>,
    escrow: &Session,
    target: &Session,
    ctx: &JobContext,
) -> Result<RestoreReport, Error> {
    let escrow_s3 = escrow_sync_s3::client(escrow);
    let target_s3 = escrow_sync_s3::client(target);
    let account = target.account_id().to_string();
    let bucket = args.target_bucket.clone().unwrap_or_else(|| job.source_bucket.clone());
    // A drill of the newest state pins "newest" to its start: a run that
    // copies a new version meanwhile changes neither the restore nor the
    // comparison.
    let versions_at = at.or_else(|| args.drill.then(SystemTime::now));
    let source = S3RestoreSource::from_client(escrow_s3, &job.dest_bucket)
        .with_dest_prefix(&job.dest_prefix)
        .with_prefix(&job.prefix)
        .with_as_of(versions_at)
        .with_keys(held.map(|k| k.keys.clone()))
        .with_source_order(job.versions)
        .with_expected_owner(Some(escrow.account_id().to_string()).filter(|a| !a.is_empty()));
    let sink =
        S3Sink::from_client(target_s3.clone(), &bucket).with_expected_owner(Some(account.clone()));
    let mut restored = RestoreReport::new(
        args,
        "s3",
        source.describe(),
        format!("s3://{bucket}"),
        &account,
        at.map(escrow_sync_core::rfc3339),
    );
    let exists = bucket_exists(&target_s3, &bucket, &account).await.map_err(|e| {
        Error::invalid_config(format!(
            "target bucket {bucket} is not usable by the recovery account {account} ({}): bucket \
             names are global, so pass --target-bucket with a bucket of that account or a free \
             name",
            e.chain()
        ))
    })?;
    if args.drill && exists {
        return Err(drill_refuses("bucket", &format!("s3://{bucket}"), &account));
    }
    let executor = ctx.executor(ExecutorOptions::new().with_concurrency(job.concurrency));
    if !args.apply && !args.drill {
        if exists {
            let report = executor.execute(Mode::Plan, &source, &sink, &Scope::all()).await?;
            take_counts(&mut restored, &report);
        } else {
            let items: Vec<Item> = source.list(&Scope::all()).try_collect().await?;
            restored.restored = items.len() as u64;
            restored.bytes = items.iter().map(|i| i.size).sum();
            restored
                .notes
                .push(format!("s3://{bucket} does not exist yet: --apply would create it"));
        }
        return Ok(restored);
    }
    let region = target.sdk_config().region().map(|r| r.to_string()).unwrap_or_default();
    if !exists {
        create_bucket(&target_s3, &bucket, &region).await?;
        restored.notes.push(format!("created s3://{bucket} in account {account}"));
    }
    let run = executor.execute(Mode::Run, &source, &sink, &Scope::all()).await;
    // Copies a hard stop dropped half-way abort their uploads meanwhile.
    sink.settle().await;
    if let Ok(report) = &run {
        take_counts(&mut restored, report);
    }
    if !args.drill {
        run?;
        return Ok(restored);
    }
    // The drill: compare, then clean up whatever happened before.
    let mut drill = DrillReport::default();
    let compared = match &run {
        // An interrupted restore is not compared: it would only list what
        // it did not get to; a comparison is given up when interrupted.
        Ok(r) if !r.cancelled => {
            let compare =
                compare_with_target(&source, &target_s3, &bucket, &account, COMPARE_CONCURRENCY);
            tokio::select! {
                biased;
                _ = ctx.cancellation().cancelled() => {
                    restored.failed.push("interrupted: the comparison did not finish".into());
                    Ok((0, Vec::new()))
                }
                _ = ctx.stop().cancelled() => {
                    restored.failed.push("interrupted: the comparison did not finish".into());
                    Ok((0, Vec::new()))
                }
                compared = compare => compared,
            }
        }
        _ => Ok((0, Vec::new())),
    };
    let cleaned = delete_bucket_and_contents(&target_s3, &bucket, &account).await;
    match cleaned {
        Ok(n) => {
            drill.cleaned_items = n;
            drill.cleaned_target = true;
        }
        Err((n, e)) => {
            drill.cleaned_items = n;
            drill.cleanup_error = Some(format!(
                "{}: delete what is left of s3://{bucket} in account {account} by hand",
                e.chain()
            ));
        }
    }
    let (verified, mismatched) = match (run, compared) {
        (Err(e), _) | (Ok(_), Err(e)) => {
            if let Some(c) = &drill.cleanup_error {
                return Err(Error::new(
                    e.kind(),
                    "restore --drill",
                    format!("s3://{bucket}"),
                    format!("{}; and the clean-up failed: {c}", e.chain()),
                ));
            }
            return Err(e);
        }
        (Ok(_), Ok(c)) => c,
    };
    drill.verified = verified;
    drill.mismatched = mismatched;
    restored.drill = Some(drill);
    Ok(restored)
}

#[cfg(feature = "dynamodb")]
/// A table-to-table job: the escrow table into a table of the recovery
/// account, created as a clone of the escrow table's schema when missing.
async fn restore_table(
    args: &RestoreRequest,
    job: &DynamoDbJob,
    at: Option<std::time::SystemTime>,
    held: Option<&std::collections::BTreeSet<String>>,
    escrow: &Session,
    target: &Session,
    ctx: &JobContext,
) -> Result<RestoreReport, Error> {
    let escrow_ddb = escrow_sync_dynamodb::client(escrow);
    let target_ddb = escrow_sync_dynamodb::client(target);
    let account = target.account_id().to_string();
    let escrow_name = job.dest_table.clone().unwrap_or_default();
    let info = TableInfo::describe(&escrow_ddb, &escrow_name).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::invalid_config(format!(
                "job {}: escrow table {escrow_name} does not exist in account {}: has the job run?",
                args.job,
                escrow.account_id()
            ))
        } else {
            e
        }
    })?;
    let keys = info.key_schema()?;
    let name = args.target_table.clone().unwrap_or_else(|| job.source_table.clone());
    let table = || EscrowTable::from_client(target_ddb.clone(), &name);
    let latest = DynamoDbSource::from_client(
        escrow_ddb,
        &escrow_name,
        keys.clone(),
        ScanOptions::new().with_segments(4),
        // Escrow's own capacity: no budget to keep.
        1e12,
    );
    // As of --at: the table's items as the item history says escrow held
    // them then (restore() refused --at without a history).
    let (source, history_note): (Box<dyn Source>, Option<String>) =
        match (at, crate::dynamo::history_reader(job, escrow)) {
            (Some(at), Some(reader)) => {
                let view = HistoryView::load(&reader, &escrow_name, at).await?;
                let note = format!(
                    "as of {}: {} item(s) restored as escrow held them then, from {} item \
                     history event(s) in {}; items escrow held before its history began are \
                     restored as they are now",
                    escrow_sync_core::rfc3339(at),
                    view.changed_since(),
                    view.events(),
                    reader.describe()
                );
                let as_of = AsOf::new(latest, keys.clone(), view, at).with_keys(held.cloned());
                (Box::new(as_of), Some(note))
            }
            _ => (Box::new(latest), None),
        };
    let source = source.as_ref();
    let sink = DynamoDbSink::new(target_ddb.clone(), table(), keys);
    let mut restored = RestoreReport::new(
        args,
        "dynamodb",
        source.describe(),
        format!("dynamodb://{name}"),
        &account,
        None,
    );
    restored.notes.extend(history_note);
    let existing = table().describe().await?;
    if args.drill && existing.is_some() {
        return Err(drill_refuses("table", &name, &account));
    }
    let executor = ctx.executor(ExecutorOptions::new().with_concurrency(16));
    if !args.apply && !args.drill {
        if existing.is_some() {
            table().check(&info).await?;
            let report = executor.execute(Mode::Plan, source, &sink, &Scope::all()).await?;
            take_counts(&mut restored, &report);
        } else {
            let items: Vec<Item> = source.list(&Scope::all()).try_collect().await?;
            restored.restored = items.len() as u64;
            restored.bytes = items.iter().map(|i| i.size).sum();
            restored.notes.push(format!(
                "table {name} does not exist yet: --apply would create it with the escrow table's \
                 keys and indexes"
            ));
        }
        return Ok(restored);
    }
    let mut drill = DrillReport::default();
    if existing.is_some() {
        table().check(&info).await?;
    } else {
        let ensured =
            table().ensure(&info, escrow.account_id(), &escrow_sync_aws::now_rfc3339()).await;
        if let Err(e) = ensured {
            // The table may exist, half set up: a drill's is deleted.
            if args.drill {
                drop_drill_table(table(), &name, &account, &mut drill).await;
            }
            return Err(with_cleanup(e, drill.cleanup_error.as_ref()));
        }
        restored.notes.push(format!(
            "created table {name} in account {account} (keys and indexes of the escrow table, \
             point-in-time recovery and deletion protection on)"
        ));
    }
    let run = executor.execute(Mode::Run, source, &sink, &Scope::all()).await;
    if let Ok(report) = &run {
        take_counts(&mut restored, report);
    }
    if !args.drill {
        run?;
        return Ok(restored);
    }
    let compared = match &run {
        // An interrupted restore is not compared: it would only list what
        // it did not get to.
        Ok(r) if !r.cancelled => {
            executor.execute(Mode::Verify, source, &sink, &Scope::all()).await.map(Some)
        }
        _ => Ok(None),
    };
    drop_drill_table(table(), &name, &account, &mut drill).await;
    let verified = match (run, compared) {
        (Err(e), _) | (Ok(_), Err(e)) => {
            return Err(with_cleanup(e, drill.cleanup_error.as_ref()));
        }
        (Ok(_), Ok(None)) => {
            restored.drill = Some(drill);
            return Ok(restored);
        }
        (Ok(_), Ok(Some(v))) => v,
    };
    if verified.cancelled {
        restored.failed.push("interrupted: the comparison did not finish".into());
    }
    drill.verified = verified.skipped;
    drill.mismatched = verified
        .differences
        .iter()
        .map(|d| match d.reason {
            escrow_sync_core::CopyReason::Missing => format!("{}: missing in the target", d.key),
            escrow_sync_core::CopyReason::Changed => format!("{}: differs from escrow", d.key),
        })
        .collect();
    if verified.differences_truncated > 0 {
        drill.mismatched.push(format!("and {} more", verified.differences_truncated));
    }
    restored.drill = Some(drill);
    Ok(restored)
}

#[cfg(any(feature = "ec2", feature = "rds", feature = "redshift"))]
/// A snapshot job's escrow copies through its kind's [`SnapshotRestore`]:
/// the one orchestration in core shares, copies, checks and cleans up the
/// same way for EBS snapshots and AMIs, RDS and Aurora, and Redshift.
async fn restore_snapshots<R: SnapshotRestore + Sync>(
    args: &RestoreRequest,
    kind_name: &'static str,
    kind: &R,
    at: Option<SystemTime>,
    ctx: &JobContext,
) -> Result<RestoreReport, Error> {
    let request = SnapshotRestoreRequest::new(&args.job)
        .with_at(at)
        .with_apply(args.apply)
        .with_copy(args.copy)
        .with_drill(args.drill)
        .with_cancel(ctx.cancellation().clone())
        .with_stop(ctx.stop().clone());
    let o = escrow_sync_core::snapshot::restore(kind, &request).await?;
    let mut restored = RestoreReport::new(
        args,
        kind_name,
        o.source,
        o.target,
        &o.target_account,
        at.map(escrow_sync_core::rfc3339),
    );
    restored.restored = o.restored;
    restored.bytes = o.bytes;
    restored.failed = o.failed;
    restored.notes = o.notes;
    restored.drill = o.drill;
    Ok(restored)
}

#[cfg(feature = "dynamodb")]
/// An export job: one complete generation in the escrow bucket (the newest,
/// or the newest started at or before `--at`, that a run manifest records
/// in `recorded`, its `manifest.json` checked against the recorded
/// SHA-256; any generation: without a manifest bucket) loaded into a table
/// of the recovery account, created from the generation's `schema.json`
/// (keys and indexes); every data file is checked against the manifest's
/// SHA-256 before any of its items is written.
#[allow(clippy::too_many_arguments)]
async fn restore_generation(
    args: &RestoreRequest,
    job: &DynamoDbJob,
    at: Option<SystemTime>,
    recorded: Option<std::collections::BTreeMap<String, String>>,
    escrow: &Session,
    target: &Session,
    ctx: &JobContext,
) -> Result<RestoreReport, Error> {
    use escrow_sync_dynamodb::export::{
        DEFAULT_FILE_SIZE, MANIFEST_CAP, check_manifest_sha256, choose_generation, collect_capped,
        data_file_cap, generation_id, parse_manifest, read_data_file_capped,
    };
    use escrow_sync_dynamodb::incremental::{Change, Link, check_base, read_changes_capped};
    use escrow_sync_dynamodb::keys::content_digest;
    let cancel = ctx.cancellation();
    let bucket = job.dest_bucket.clone().unwrap_or_default();
    let prefix = format!("{}{}/", job.dest_prefix.as_deref().unwrap_or_default(), job.source_table);
    let location = format!("s3://{bucket}/{prefix}");
    let reader = S3Source::from_client(escrow_sync_s3::client(escrow), &bucket)
        .with_streaming(true)
        .with_expected_owner(Some(escrow.account_id().to_string()).filter(|a| !a.is_empty()));
    let listed: std::collections::HashMap<String, Item> = reader
        .list(&Scope::with_prefix(&prefix))
        .map_ok(|i| (i.key.clone(), i))
        .try_collect()
        .await?;
    let mut generations: Vec<String> = listed
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix("/manifest.json"))
        .filter(|g| !g.contains('/'))
        .map(str::to_string)
        .collect();
    generations.sort_unstable();
    let bound = at.map(|t| generation_id(&escrow_sync_core::rfc3339(t)));
    let choice = choose_generation(&generations, recorded.as_ref(), bound.as_deref(), &location);
    let trusted: Vec<&String> = match &recorded {
        Some(r) => generations.iter().filter(|g| r.contains_key(g.as_str())).collect(),
        None => generations.iter().collect(),
    };
    let recorded_by = if recorded.is_some() { " recorded by a run manifest" } else { "" };
    let Some(generation) = choice.generation.clone() else {
        let ignored = if choice.ignored.is_empty() {
            String::new()
        } else {
            format!(
                " ({} not written by escrow-sync, recorded by no run manifest, ignored: {})",
                choice.ignored.len(),
                choice.ignored.join(", ")
            )
        };
        return Err(Error::invalid_config(match &bound {
            None => format!(
                "job {}: no complete export generation{recorded_by} under {location}{ignored}",
                args.job
            ),
            Some(_) => format!(
                "job {}: no complete export generation{recorded_by} under {location} started at \
                 or before --at {} (the oldest is {}){ignored}",
                args.job,
                args.at.as_deref().unwrap_or_default(),
                trusted.first().map(|g| g.as_str()).unwrap_or("none")
            ),
        }));
    };
    let data_cap = data_file_cap(job.file_size.map_or(DEFAULT_FILE_SIZE, |s| s.0));
    let fetch = |key: String, cap: u64| {
        let item = listed.get(&key).cloned();
        let reader = &reader;
        let location = format!("s3://{bucket}/{key}");
        async move {
            let item = item.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    "restore",
                    &location,
                    "listed in the manifest, gone",
                )
            })?;
            if item.size > cap {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    "restore",
                    &location,
                    format!(
                        "the object is {} bytes, over the cap of {cap}: escrow-sync did not write \
                         it so; check the object's versions in the escrow bucket",
                        item.size
                    ),
                ));
            }
            collect_capped(reader.read(&item).await?, &location, cap).await
        }
    };
    let dir = format!("{prefix}{generation}/");
    let bad = |what: String| {
        Error::new(ErrorKind::Failed, "restore", format!("s3://{bucket}/{dir}"), what)
    };
    // The manifest of generation `g` (`None`: not there), checked against
    // the SHA-256 a run manifest recorded for it, when one is given.
    let read_manifest = |g: String, sha: Option<String>| {
        let key = format!("{prefix}{g}/manifest.json");
        let name = format!("s3://{bucket}/{key}");
        let present = listed.contains_key(&key);
        let fetched = fetch(key, MANIFEST_CAP);
        async move {
            if !present {
                return Ok(None);
            }
            let text = fetched.await?;
            if let Some(sha) = &sha {
                check_manifest_sha256(&text, sha, &name)?;
            }
            parse_manifest(&text, &name).map(Some)
        }
    };
    // The chain: the generation chosen, and, while it is incremental, the
    // generation it builds on, back to a full one; a base missing, not
    // recorded or not ending where the next one starts is an error naming
    // it (no partial restore).
    let mut chain: Vec<(String, serde_json::Value)> = Vec::new();
    let mut next = Some((generation.clone(), choice.manifest_sha256.clone()));
    while let Some((g, sha)) = next.take() {
        let manifest = match read_manifest(g.clone(), sha).await? {
            Some(m) => m,
            None => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    "restore",
                    format!("s3://{bucket}/{prefix}{g}/manifest.json"),
                    "listed, gone",
                ));
            }
        };
        let link = Link::from_manifest(&g, &manifest);
        chain.push((g, manifest));
        if !link.incremental() {
            break;
        }
        let base = link.base.clone().unwrap_or_default();
        let base_sha = recorded.as_ref().map(|r| r.get(&base).cloned());
        let base_manifest = match &base_sha {
            // No run manifest records it: unverified.
            Some(None) => None,
            Some(Some(sha)) => read_manifest(base.clone(), Some(sha.clone())).await?,
            None => read_manifest(base.clone(), None).await?,
        };
        let base_link = base_manifest.as_ref().map(|m| Link::from_manifest(&base, m));
        check_base(&link, base_link.as_ref(), &location)?;
        next = Some((base, base_sha.flatten()));
    }
    chain.reverse();
    let schema: serde_json::Value =
        serde_json::from_slice(&fetch(format!("{dir}schema.json"), MANIFEST_CAP).await?)
            .map_err(|e| bad(format!("schema.json: {e}")))?;
    let mut all_files = Vec::new();
    for (g, manifest) in &chain {
        let Some(files) = manifest["files"].as_array() else {
            return Err(Error::new(
                ErrorKind::Failed,
                "restore",
                format!("s3://{bucket}/{prefix}{g}/"),
                "manifest.json lists no files (a native export's generation): restore it with \
                 DynamoDB ImportTable from its data/ files",
            ));
        };
        let incremental = Link::from_manifest(g, manifest).incremental();
        all_files.extend(files.iter().map(|f| (format!("{prefix}{g}/"), incremental, f.clone())));
    }
    let files = &all_files;
    let info = TableInfo::from_schema_json(&schema)?;
    let keys = info.key_schema()?;
    let account = target.account_id().to_string();
    let name = args.target_table.clone().unwrap_or_else(|| job.source_table.clone());
    let target_ddb = escrow_sync_dynamodb::client(target);
    let table = || EscrowTable::from_client(target_ddb.clone(), &name);
    let mut restored = RestoreReport::new(
        args,
        "dynamodb",
        format!("s3://{bucket}/{dir} (export generation {generation})"),
        format!("dynamodb://{name}"),
        &account,
        at.map(escrow_sync_core::rfc3339),
    );
    restored.notes.extend(choice.notes.iter().cloned());
    restored.notes.extend(choice.warnings.iter().map(|w| format!("warning: {w}")));
    if chain.len() > 1 {
        restored.notes.push(format!(
            "composed of full generation {} and {} incremental generation(s) applied in order: {}",
            chain[0].0,
            chain.len() - 1,
            chain[1..].iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let existing = table().describe().await?;
    if args.drill && existing.is_some() {
        return Err(drill_refuses("table", &name, &account));
    }
    if existing.is_some() {
        table().check(&info).await?;
    }
    if !args.apply && !args.drill {
        restored.restored = files.iter().filter_map(|(_, _, f)| f["items"].as_u64()).sum();
        restored.bytes = files.iter().filter_map(|(_, _, f)| f["bytes"].as_u64()).sum();
        if existing.is_none() {
            restored.notes.push(format!(
                "table {name} does not exist yet: --apply would create it as schema.json describes"
            ));
        }
        return Ok(restored);
    }
    let mut drill = DrillReport::default();
    if existing.is_none() {
        let ensured =
            table().ensure(&info, escrow.account_id(), &escrow_sync_aws::now_rfc3339()).await;
        if let Err(e) = ensured {
            // The table may exist, half set up: a drill's is deleted.
            if args.drill {
                drop_drill_table(table(), &name, &account, &mut drill).await;
            }
            return Err(with_cleanup(e, drill.cleanup_error.as_ref()));
        }
        restored
            .notes
            .push(format!("created table {name} in account {account} as schema.json describes"));
    }
    let mut interrupted = false;
    let loaded =
        async {
            let mut expected: std::collections::HashMap<String, String> = Default::default();
            for (dir, incremental, f) in files {
                if cancel.is_cancelled() || ctx.stop().is_cancelled() {
                    interrupted = true;
                    restored.failed.push("interrupted: the remaining files were not loaded".into());
                    break;
                }
                let key = f["key"].as_str().unwrap_or_default();
                let data = fetch(format!("{dir}{key}"), data_cap).await?;
                let sum = {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(&data))
                };
                if Some(sum.as_str()) != f["sha256"].as_str() {
                    return Err(bad(format!(
                        "{key}: SHA-256 {sum} is not the manifest's {}: the file was altered; \
                     nothing more is loaded",
                        f["sha256"].as_str().unwrap_or_default()
                    )));
                }
                if *incremental {
                    let url = format!("s3://{bucket}/{dir}{key}");
                    let changes = read_changes_capped(&data, &url, data_cap, Some(&keys), None)?;
                    let (mut puts, mut deletes) = (Vec::new(), Vec::new());
                    for c in changes {
                        let text = keys.key_text(c.change.keys())?;
                        match c.change {
                            Change::Put { item, .. } => {
                                if args.drill {
                                    expected.insert(text, hex::encode(content_digest(&item)));
                                }
                                puts.push(item);
                            }
                            Change::Delete { keys: k } => {
                                expected.remove(&text);
                                deletes.push(k);
                            }
                        }
                    }
                    let out = table().write(puts, &keys).await?;
                    restored.restored += out.written;
                    restored.bytes += out.bytes;
                    restored.failed.extend(out.dead.iter().map(|(r, e)| {
                        format!("{}: {}", keys.key_text(r).unwrap_or_default(), e.chain())
                    }));
                    restored.restored += table().delete_keys(deletes).await?;
                    continue;
                }
                let records =
                    read_data_file_capped(&data, &format!("s3://{bucket}/{dir}{key}"), data_cap)?;
                if args.drill {
                    for r in &records {
                        expected.insert(keys.key_text(r)?, hex::encode(content_digest(r)));
                    }
                }
                let out = table().write(records, &keys).await?;
                restored.restored += out.written;
                restored.bytes += out.bytes;
                restored.failed.extend(out.dead.iter().map(|(r, e)| {
                    format!("{}: {}", keys.key_text(r).unwrap_or_default(), e.chain())
                }));
            }
            Ok(expected)
        }
        .await;
    if !args.drill {
        loaded?;
        return Ok(restored);
    }
    let compared = match &loaded {
        Ok(expected) if !interrupted => {
            let listing = DynamoDbSource::from_client(
                target_ddb.clone(),
                &name,
                keys.clone(),
                ScanOptions::new().with_segments(4),
                1e12,
            );
            let held: Result<std::collections::HashMap<String, String>, Error> =
                listing.list(&Scope::all()).map_ok(|i| (i.key, i.fingerprint)).try_collect().await;
            held.map(|held| {
                let mut mismatched = Vec::new();
                let mut verified = 0;
                for (k, digest) in expected {
                    match held.get(k) {
                        Some(d) if d == digest => verified += 1,
                        Some(_) => mismatched.push(format!("{k}: differs from the generation")),
                        None => mismatched.push(format!("{k}: missing in the target")),
                    }
                }
                for k in held.keys().filter(|k| !expected.contains_key(*k)) {
                    mismatched.push(format!("{k}: in the target, not in the generation"));
                }
                mismatched.sort();
                (verified, mismatched)
            })
        }
        _ => Ok((0, Vec::new())),
    };
    drop_drill_table(table(), &name, &account, &mut drill).await;
    let (verified, mismatched) = match (loaded, compared) {
        (Err(e), _) | (Ok(_), Err(e)) => {
            return Err(with_cleanup(e, drill.cleanup_error.as_ref()));
        }
        (Ok(_), Ok(c)) => c,
    };
    drill.verified = verified;
    drill.mismatched = mismatched;
    restored.drill = Some(drill);
    Ok(restored)
}

#[cfg(feature = "dynamodb")]
/// `e`, saying also that a drill's clean-up failed (`cleanup`), if it did.
fn with_cleanup(e: Error, cleanup: Option<&String>) -> Error {
    match cleanup {
        None => e,
        Some(c) => Error::new(
            e.kind(),
            "restore --drill",
            "the drill's target",
            format!("{}; and the clean-up failed: {c}", e.chain()),
        ),
    }
}

#[cfg(feature = "dynamodb")]
/// A drill's table deleted; the error, if any, recorded in `drill`.
async fn drop_drill_table(table: EscrowTable, name: &str, account: &str, drill: &mut DrillReport) {
    match table.delete_restored().await {
        Ok(()) => drill.cleaned_target = true,
        Err(e) => {
            drill.cleanup_error =
                Some(format!("{}: delete table {name} in account {account} by hand", e.chain()))
        }
    }
}

fn take_counts(restored: &mut RestoreReport, report: &Report) {
    restored.restored = report.copied;
    restored.bytes = report.bytes_copied;
    restored.already_there = report.skipped;
    restored.failed = report.failures.iter().map(|f| format!("{}: {}", f.key, f.error)).collect();
    restored.notes.extend(report.notes.iter().cloned());
    restored.notes.extend(report.warnings.iter().cloned());
    if report.cancelled {
        restored.failed.push("interrupted: not everything was restored".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_at_is_refused_naming_the_flag_before_anything_is_asked() {
        let config = Config::parse(
            "[escrow]\nregion = \"us-east-1\"\n[primary]\naccount_id = \"111111111111\"\n\
             [[s3]]\nname = \"assets\"\nsource_bucket = \"a\"\ndest_bucket = \"b\"\n",
            "c",
        )
        .unwrap();
        let request =
            RestoreRequest::new("assets", "arn:aws:iam::333333333333:role/r").at("yesterday");
        // No endpoint, no credentials: it fails on the flag, not on a call.
        let err = restore(&config, &request, CancellationToken::new()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(
            err.to_string().contains("--at \"yesterday\"") && err.to_string().contains("RFC 3339"),
            "{err}"
        );
        let request = RestoreRequest::new("nope", "arn:aws:iam::333333333333:role/r");
        let err = restore(&config, &request, CancellationToken::new()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    }
}
