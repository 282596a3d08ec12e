//! `[[dynamodb]]` jobs: checks before anything runs, and the run itself.

use std::sync::Arc;

use escrow_sync_aws::Sessions;
use escrow_sync_core::{CancellationToken, Error, ErrorKind, Mode, ProgressFn, Report, Result};
use escrow_sync_dynamodb::{
    CheckpointStore, EscrowBilling, EscrowTable, ScanOptions, TableInfo, TableJob,
    checkpoint::DEFAULT_TABLE,
};

use crate::config::{Config, DynamoDbJob};

/// What the checks found for one job, ready to run.
pub(crate) struct Checked {
    source: TableInfo,
}

fn sink(config: &Config, job: &DynamoDbJob, sessions: &Sessions) -> EscrowTable {
    let escrow = escrow_sync_dynamodb::client(&sessions.escrow);
    let billing = match job.billing_mode.as_deref() {
        Some("provisioned") => EscrowBilling::LikeSource,
        _ => EscrowBilling::OnDemand,
    };
    EscrowTable::from_client(escrow, job.dest_table.clone().unwrap_or_default())
        .with_kms_key_id(config.escrow.kms_key_id.clone())
        .with_billing(billing)
}

/// Checks one job before any job runs: the source table exists and the
/// reader role can describe it; an existing escrow table has the same key
/// schema and no TTL.
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
    sink(config, job, sessions).check(&source).await?;
    Ok(Checked { source })
}

/// Runs one checked job in `mode`.
pub(crate) async fn run(
    config: &Config,
    job: &DynamoDbJob,
    checked: Checked,
    sessions: &Sessions,
    mode: Mode,
    cancel: CancellationToken,
    progress: Option<ProgressFn>,
) -> Result<Report> {
    let primary = escrow_sync_dynamodb::client(&sessions.primary);
    let escrow = escrow_sync_dynamodb::client(&sessions.escrow);
    let segments = job
        .segments
        .unwrap_or_else(|| TableJob::default_segments(checked.source.size_bytes(), job.workers));
    let options =
        ScanOptions::new().with_segments(segments).with_consistent_read(job.consistent_read);
    let store = CheckpointStore::from_client(
        escrow,
        job.checkpoint_table.clone().unwrap_or_else(|| DEFAULT_TABLE.to_string()),
    );
    let table = TableJob::new(
        job.name(),
        primary,
        checked.source,
        sessions.primary.account_id(),
        sink(config, job, sessions),
        escrow_sync_aws::now_rfc3339(),
    )?
    .with_scan_options(options)
    .with_read_capacity_percent(job.read_capacity_percent)
    .with_workers(job.workers)
    .with_checkpoints(Some(store))
    .with_dead_letter_dir(job.dead_letter_dir.clone().unwrap_or_else(|| ".".into()))
    .with_cancellation(cancel)
    .with_progress(progress.map(|p| p as Arc<_>));
    table.execute(mode).await
}
