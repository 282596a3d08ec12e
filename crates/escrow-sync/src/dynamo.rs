//! `[[dynamodb]]` jobs: checks before anything runs, and the run itself.

use std::sync::Arc;

use escrow_sync_aws::Sessions;
use escrow_sync_core::{Error, ErrorKind, Job, JobContext, Mode, Report, Result};

use escrow_sync_dynamodb::{
    CheckpointStore, EscrowBilling, EscrowTable, ExportJob, ExportTarget, ScanOptions, TableInfo,
    TableJob, checkpoint::DEFAULT_TABLE, history::History,
};
use escrow_sync_s3::{S3Sink, S3Source, check_dest_bucket, check_dest_protection};

use crate::spec::{Config, DynamoDbJob};

/// What the checks found for one job, ready to run.
#[derive(Clone)]
pub(crate) struct Checked {
    source: TableInfo,
}

fn table_sink(config: &Config, job: &DynamoDbJob, sessions: &Sessions) -> EscrowTable {
    let escrow = escrow_sync_dynamodb::client(&sessions.escrow);
    let billing = match job.billing_mode {
        Some(crate::spec::BillingMode::Provisioned) => EscrowBilling::LikeSource,
        _ => EscrowBilling::OnDemand,
    };
    EscrowTable::from_client(escrow, job.dest_table.clone().unwrap_or_default())
        .with_kms_key_id(config.escrow.kms_key_id.clone())
        .with_billing(billing)
}

fn checkpoint_store(config: &Config, job: &DynamoDbJob, sessions: &Sessions) -> CheckpointStore {
    CheckpointStore::from_client(
        escrow_sync_dynamodb::client(&sessions.escrow),
        job.checkpoint_table.clone().unwrap_or_else(|| DEFAULT_TABLE.to_string()),
    )
    .with_kms_key_id(config.escrow.kms_key_id.clone())
}

/// Checks one job before any job runs: the source table exists and the
/// reader role can describe it; an existing escrow table has the same key
/// schema and no TTL; an export bucket is the escrow's and protected.
pub(crate) async fn check(
    config: &Config,
    job: &DynamoDbJob,
    sessions: &Sessions,
) -> Result<Checked> {
    let primary = escrow_sync_dynamodb::client(&sessions.primary);
    let source = TableInfo::describe(&primary, &job.source_table).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::invalid_config(format!(
                "job {}: dynamodb table {} not found in the primary account {} (region {}): check \
                 source_table and [primary] region",
                job.name(),
                job.source_table,
                sessions.primary.account_id(),
                config.region_or(&sessions.primary),
            ))
        } else {
            e
        }
    })?;
    checkpoint_store(config, job, sessions).check().await?;
    if job.native_export() {
        escrow_sync_dynamodb::export::check_native_source(&job.name(), &source)?;
    }
    match &job.dest_bucket {
        Some(bucket) => {
            let escrow = escrow_sync_s3::client(&sessions.escrow);
            check_dest_bucket(&escrow, bucket, sessions.escrow.account_id()).await?;
            check_dest_protection(
                &escrow,
                bucket,
                job.allow_unversioned_dest,
                job.object_lock.is_some(),
            )
            .await?;
        }
        None => {
            table_sink(config, job, sessions).check(&source).await?;
            if let Some(bucket) = &job.history_bucket {
                // History must outlive what it records: escrow's, versioned.
                let escrow = escrow_sync_s3::client(&sessions.escrow);
                check_dest_bucket(&escrow, bucket, sessions.escrow.account_id()).await?;
                check_dest_protection(&escrow, bucket, false, false).await?;
            }
        }
    }
    Ok(Checked { source })
}

/// A checked `[[dynamodb]]` job as a [`Job`]: a table job or an export
/// job, built from the config and run with the context's cancellation,
/// progress, item log and retry. The context's `accept_mass_change` lets a
/// table job overwrite more than `max_change_percent` of its escrow items
/// (`run --accept-mass-change`). An export job records each generation it
/// completes in the item log (the run manifest); its `verify` trusts only
/// generations a run manifest records, and a table job's `verify` checks
/// its item history.
pub(crate) struct DynamoJob<'a> {
    pub(crate) config: &'a Config,
    pub(crate) job: &'a DynamoDbJob,
    pub(crate) checked: Checked,
    pub(crate) sessions: &'a Sessions,
}

#[async_trait::async_trait]
impl Job for DynamoJob<'_> {
    fn describe(&self) -> String {
        self.job.name()
    }

    async fn execute(&self, mode: Mode, ctx: &JobContext) -> Result<Report> {
        run(self.config, self.job, self.checked.clone(), self.sessions, mode, ctx).await
    }
}

async fn run(
    config: &Config,
    job: &DynamoDbJob,
    checked: Checked,
    sessions: &Sessions,
    mode: Mode,
    ctx: &JobContext,
) -> Result<Report> {
    let primary = escrow_sync_dynamodb::client(&sessions.primary);
    let segments = job
        .segments
        .unwrap_or_else(|| TableJob::default_segments(checked.source.size_bytes(), job.workers));
    let options =
        ScanOptions::new().with_segments(segments).with_consistent_read(job.consistent_read);
    let store = checkpoint_store(config, job, sessions);
    let started = escrow_sync_aws::now_rfc3339();
    if let Some(bucket) = &job.dest_bucket {
        // No mass-change breaker for export generations: each run writes a
        // new generation of new objects, and nothing escrow holds is
        // replaced, so a primary rewritten by an attacker cannot overwrite
        // an older generation. `max_change_percent` is accepted (every job
        // kind takes it) and has nothing to guard here.
        let s3 = escrow_sync_s3::client(&sessions.escrow);
        let owner = Some(sessions.escrow.account_id().to_string()).filter(|o| !o.is_empty());
        let files = export_files(config, job, &sessions.escrow).unwrap_or_else(|| {
            S3Sink::from_client(s3.clone(), bucket).with_expected_owner(owner.clone())
        });
        let reader =
            S3Source::from_client(s3, bucket).with_streaming(true).with_expected_owner(owner);
        let mut export = ExportJob::new(
            job.name(),
            primary,
            checked.source,
            sessions.primary.account_id(),
            ExportTarget {
                files: Arc::new(files.clone()),
                reader: Arc::new(reader),
                location: format!("s3://{bucket}/"),
                dest_prefix: job.dest_prefix.clone().unwrap_or_default(),
            },
            started,
        )?
        .with_scan_options(options)
        .with_read_capacity_percent(job.read_capacity_percent)
        .with_workers(job.workers)
        .with_checkpoints(Some(store));
        if mode == Mode::Verify || job.incremental() {
            // verify trusts only recorded generations; an incremental run
            // takes its watermark only from one.
            let recorded =
                crate::manifest::recorded_generations(config, &sessions.escrow, job).await?;
            export = export.with_recorded_generations(recorded);
        }
        if let Some(size) = job.file_size {
            export = export.with_file_size(size.0 as usize);
        }
        if let Some(staging) = job.staging_prefix() {
            export = export
                .with_native_export(
                    bucket,
                    sessions.escrow.account_id(),
                    config.escrow.kms_key_id.clone(),
                )
                .with_staging_prefix(staging);
            if job.incremental() {
                export =
                    export.with_incremental(escrow_sync_dynamodb::incremental::ViewType::default());
                if let Some(every) = job.full_export_every() {
                    export = export.with_full_export_every(every);
                }
            }
        }
        let run = Job::execute(&export, mode, ctx).await;
        if mode != Mode::Run || job.object_lock.is_none() {
            return run;
        }
        // Rolling retention of the generation files: each is kept for good
        // (a generation is never replaced), so each is renewed, even when
        // the export failed (the primary must not stop renewals). A hard
        // stop only writes the ledger.
        let renewal = if ctx.cancellation().is_cancelled() {
            files.flush_ledger().await.map(|()| escrow_sync_s3::Renewal::default())
        } else {
            files.renew_retention(|_| async { Ok(true) }).await
        };
        return escrow_sync_s3::Renewal::settle(
            run,
            Some(renewal),
            &job.name(),
            "export generation files",
        );
    }
    let table = TableJob::new(
        job.name(),
        primary,
        checked.source,
        sessions.primary.account_id(),
        table_sink(config, job, sessions),
        started,
    )?
    .with_scan_options(options)
    .with_read_capacity_percent(job.read_capacity_percent)
    .with_workers(job.workers)
    .with_checkpoints(Some(store))
    .with_dead_letter_dir(job.dead_letter_dir.clone().unwrap_or_else(|| ".".into()))
    .with_max_change_percent(job.max_change_percent)
    .with_history(history(config, job, sessions));
    let table = match (job.incremental(), job.staging_bucket(), job.staging_prefix()) {
        (true, Some(bucket), Some(staging)) => {
            // Staged in the history bucket (escrow's, versioned), read back
            // with escrow credentials.
            let owner = Some(sessions.escrow.account_id().to_string()).filter(|o| !o.is_empty());
            let reader = S3Source::from_client(escrow_sync_s3::client(&sessions.escrow), bucket)
                .with_streaming(true)
                .with_expected_owner(owner);
            table.with_native_incremental(
                bucket,
                sessions.escrow.account_id(),
                config.escrow.kms_key_id.clone(),
                staging,
                Arc::new(reader),
            )
        }
        _ => table,
    };
    let mut report = Job::execute(&table, mode, ctx).await?;
    if mode == Mode::Verify
        && let Some(reader) = history_reader(job, &sessions.escrow)
    {
        check_history(job, &reader, sessions, &mut report).await?;
    }
    Ok(report)
}

/// `verify` of a table job with item history: every state escrow held is
/// in the history, unbroken up to what the escrow table holds now (findings
/// of kind `history-gap`; an unreadable history object is an error naming
/// it).
async fn check_history(
    job: &DynamoDbJob,
    reader: &S3Source,
    sessions: &Sessions,
    report: &mut Report,
) -> Result<()> {
    use escrow_sync_core::Source;
    use futures::TryStreamExt;
    let table = job.dest_table.clone().unwrap_or_default();
    let escrow = escrow_sync_dynamodb::client(&sessions.escrow);
    let Some(info) = EscrowTable::from_client(escrow.clone(), &table).describe().await? else {
        return Ok(());
    };
    let keys = info.key_schema()?;
    let listing = escrow_sync_dynamodb::DynamoDbSink::new(
        escrow.clone(),
        EscrowTable::from_client(escrow, &table),
        keys,
    );
    let current: std::collections::HashMap<String, String> =
        escrow_sync_core::Sink::list(&listing, &escrow_sync_core::Scope::all())
            .map_ok(|i| (i.key, i.fingerprint))
            .try_collect()
            .await?;
    let events = escrow_sync_dynamodb::history::load_events(reader, &table).await?;
    let checked = escrow_sync_dynamodb::history::check(events, &current)?;
    report.notes.push(format!(
        "item history {}{table}/: {} event(s) for {} item(s); {} escrow item(s) written before the \
         history began have none",
        reader.describe(),
        checked.events,
        checked.keys,
        checked.without_history
    ));
    report.unprotected += checked.findings.len() as u64;
    report.findings.extend(checked.findings);
    Ok(())
}

/// The sink of an export job's generation files (escrow credentials, the
/// job's protection, its retention ledger under `<dest_prefix><table>/`);
/// `None` for a table job.
pub(crate) fn export_files(
    config: &Config,
    job: &DynamoDbJob,
    escrow: &escrow_sync_aws::Session,
) -> Option<S3Sink> {
    let bucket = job.dest_bucket.as_ref()?;
    let owner = Some(escrow.account_id().to_string()).filter(|o| !o.is_empty());
    let table_prefix =
        format!("{}{}/", job.dest_prefix.clone().unwrap_or_default(), job.source_table);
    Some(
        S3Sink::from_client(escrow_sync_s3::client(escrow), bucket)
            .with_expected_owner(owner)
            .with_protection(job.protection(config.escrow.kms_key_id.clone()))
            .with_ledger_scope(table_prefix),
    )
}

/// The item history of a table job, when it keeps one: objects through an
/// S3 sink on the history bucket (escrow key, escrow owner).
fn history(config: &Config, job: &DynamoDbJob, sessions: &Sessions) -> Option<History> {
    let bucket = job.history_bucket.as_ref()?;
    let owner = Some(sessions.escrow.account_id().to_string()).filter(|o| !o.is_empty());
    let sink = S3Sink::from_client(escrow_sync_s3::client(&sessions.escrow), bucket)
        .with_dest_prefix(job.history_prefix())
        .with_expected_owner(owner)
        .with_protection(crate::spec::protection(None, config.escrow.kms_key_id.clone()));
    let table = job.dest_table.clone().unwrap_or_default();
    Some(History::new(Arc::new(sink), table, &escrow_sync_aws::now_rfc3339()))
}

/// Reads a table job's item history (escrow credentials): the S3 source
/// over the history bucket and prefix, bytes handed over.
pub(crate) fn history_reader(
    job: &DynamoDbJob,
    escrow: &escrow_sync_aws::Session,
) -> Option<S3Source> {
    let bucket = job.history_bucket.as_ref()?;
    let owner = Some(escrow.account_id().to_string()).filter(|o| !o.is_empty());
    Some(
        S3Source::from_client(escrow_sync_s3::client(escrow), bucket)
            .with_streaming(true)
            .with_prefix(job.history_prefix())
            .with_expected_owner(owner),
    )
}
