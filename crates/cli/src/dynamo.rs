//! `[[dynamodb]]` jobs: checks before anything runs, and the run itself.

use std::sync::Arc;

use escrow_sync_aws::Sessions;
use escrow_sync_core::{CancellationToken, Error, ErrorKind, Mode, ProgressFn, Report, Result};
use escrow_sync_dynamodb::{
    CheckpointStore, EscrowBilling, EscrowTable, ExportJob, ExportTarget, ScanOptions, TableInfo,
    TableJob, checkpoint::DEFAULT_TABLE,
};
use escrow_sync_s3::{S3Sink, S3Source, check_dest_bucket, check_dest_protection};

use crate::config::{Config, DynamoDbJob};

/// What the checks found for one job, ready to run.
pub(crate) struct Checked {
    source: TableInfo,
}

fn table_sink(config: &Config, job: &DynamoDbJob, sessions: &Sessions) -> EscrowTable {
    let escrow = escrow_sync_dynamodb::client(&sessions.escrow);
    let billing = match job.billing_mode.as_deref() {
        Some("provisioned") => EscrowBilling::LikeSource,
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
                config.primary.region.as_deref().unwrap_or(&config.escrow.region),
            ))
        } else {
            e
        }
    })?;
    checkpoint_store(config, job, sessions).check().await?;
    if job.mode.as_deref() == Some("native-export") {
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
        }
    }
    Ok(Checked { source })
}

/// Runs one checked job in `mode`. `accept_mass_change` lets a table job
/// overwrite more than `max_change_percent` of its escrow items
/// (`run --accept-mass-change`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    config: &Config,
    job: &DynamoDbJob,
    checked: Checked,
    sessions: &Sessions,
    mode: Mode,
    cancel: CancellationToken,
    progress: Option<ProgressFn>,
    accept_mass_change: bool,
) -> Result<Report> {
    let primary = escrow_sync_dynamodb::client(&sessions.primary);
    let segments = job
        .segments
        .unwrap_or_else(|| TableJob::default_segments(checked.source.size_bytes(), job.workers));
    let options =
        ScanOptions::new().with_segments(segments).with_consistent_read(job.consistent_read);
    let store = checkpoint_store(config, job, sessions);
    let started = escrow_sync_aws::now_rfc3339();
    let progress = progress.map(|p| p as Arc<_>);
    if let Some(bucket) = &job.dest_bucket {
        // No mass-change breaker for export generations: each run writes a
        // new generation of new objects, and nothing escrow holds is
        // replaced, so a primary rewritten by an attacker cannot overwrite
        // an older generation. `max_change_percent` is accepted (every job
        // kind takes it) and has nothing to guard here.
        let s3 = escrow_sync_s3::client(&sessions.escrow);
        let owner = Some(sessions.escrow.account_id().to_string()).filter(|o| !o.is_empty());
        let files = S3Sink::from_client(s3.clone(), bucket)
            .with_expected_owner(owner.clone())
            .with_protection(job.protection(config.escrow.kms_key_id.clone()));
        let reader =
            S3Source::from_client(s3, bucket).with_streaming(true).with_expected_owner(owner);
        let mut export = ExportJob::new(
            job.name(),
            primary,
            checked.source,
            sessions.primary.account_id(),
            ExportTarget {
                files: Arc::new(files),
                reader: Arc::new(reader),
                location: format!("s3://{bucket}/"),
                dest_prefix: job.dest_prefix.clone().unwrap_or_default(),
            },
            started,
        )?
        .with_scan_options(options)
        .with_read_capacity_percent(job.read_capacity_percent)
        .with_workers(job.workers)
        .with_checkpoints(Some(store))
        .with_cancellation(cancel)
        .with_progress(progress);
        if let Some(size) = job.file_size {
            export = export.with_file_size(size.0 as usize);
        }
        if job.mode.as_deref() == Some("native-export") {
            export = export.with_native_export(
                bucket,
                sessions.escrow.account_id(),
                config.escrow.kms_key_id.clone(),
            );
        }
        return export.execute(mode).await;
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
    .with_accept_mass_change(accept_mass_change)
    .with_cancellation(cancel)
    .with_progress(progress);
    table.execute(mode).await
}
