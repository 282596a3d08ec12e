//! Run manifests: written into escrow after every `run` (when `[escrow]
//! manifest_bucket` is set), and read back by `verify --offline`, which
//! checks escrow against the latest one with escrow credentials only.

use std::collections::BTreeMap;
use std::io::Write;

use futures::TryStreamExt;

use escrow_sync_aws::{Connector, Session};
use escrow_sync_core::{
    CopyReason, Difference, Error, ErrorKind, Failure, Item, ItemOutcome, Mode, Report, Scope, Sink,
};
use escrow_sync_governance::manifest::{
    DEFAULT_PREFIX, JobRecord, JobSummary, ManifestStore, ManifestWriter,
};

use crate::config::{Config, JobRef};
use crate::output::{self, JobOutcome, exit};
use crate::{JobArgs, OutputFormat};

/// How `verify --offline` reports name their source.
pub(crate) const SOURCE: &str = "run manifest ";

/// The manifest store `config` names, if any.
fn store(config: &Config, escrow: &Session) -> Option<ManifestStore> {
    let bucket = config.escrow.manifest_bucket.as_ref()?;
    let prefix = config.escrow.manifest_prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.into());
    let owner = Some(escrow.account_id().to_string()).filter(|a| !a.is_empty());
    let lock = config.escrow.manifest_object_lock.as_ref().map(|l| (l.mode.clone(), l.days));
    Some(
        ManifestStore::new(escrow_sync_s3::client(escrow), bucket, prefix)
            .with_expected_owner(owner)
            .with_kms_key_id(config.escrow.kms_key_id.clone())
            .with_object_lock(lock),
    )
}

/// A job's summary line from its result.
pub(crate) fn summary(name: &str, result: &Result<Report, Error>) -> JobSummary {
    match result {
        Ok(r) => JobSummary {
            job: name.to_string(),
            source: r.source.clone(),
            destination: r.destination.clone(),
            copied: r.copied,
            skipped: r.skipped,
            failed: r.failed,
            retained: r.retained,
            bytes_copied: r.bytes_copied,
            cancelled: r.cancelled,
            error: None,
            notes: r
                .notes
                .iter()
                .cloned()
                .chain(r.key_digests.iter().map(|d| {
                    format!(
                        "{}: {} keys in the primary, {} in escrow, digest {}",
                        d.scope, d.primary_items, d.escrow_items, d.escrow_digest
                    )
                }))
                .collect(),
        },
        Err(e) => {
            JobSummary { job: name.to_string(), error: Some(e.chain()), ..Default::default() }
        }
    }
}

/// Writes the run's manifest into escrow (one PutObject: never partial).
/// Success is noted in every job's report; failure fails the run (exit 1)
/// with the reason.
pub(crate) async fn write(
    config: &Config,
    escrow: &Session,
    manifest: ManifestWriter,
    outcomes: &mut [JobOutcome],
) {
    let Some(store) = store(config, escrow) else { return };
    let run_id = manifest.run_id().to_string();
    let written = match manifest.finish() {
        Ok((_, bytes)) => store.put(&run_id, bytes).await,
        Err(e) => Err(e),
    };
    let bucket = config.escrow.manifest_bucket.as_deref().unwrap_or_default();
    for o in outcomes.iter_mut() {
        let Some(report) = o.report.as_mut() else { continue };
        match &written {
            Ok(key) => {
                report.notes.push(format!("recorded in the run manifest s3://{bucket}/{key}"))
            }
            Err(e) => {
                let error = Error::new(
                    ErrorKind::Failed,
                    "manifest",
                    format!("s3://{bucket}"),
                    format!("the run manifest was not written: {}", e.chain()),
                );
                report.failed += 1;
                report.failures.push(Failure::new("(run manifest)", &error, 1));
            }
        }
    }
}

/// Whether offline verify expects escrow to hold an item of this outcome:
/// what the run copied or found in escrow. Escrow-only items (`retained`)
/// are recorded but not expected: `prune` may have deleted them since, by
/// design; failed items never made it.
fn held_by_run(outcome: ItemOutcome) -> bool {
    matches!(outcome, ItemOutcome::Copied | ItemOutcome::InEscrow)
}

/// Why a job's record does not describe all of escrow, if it does not: the
/// run was interrupted, or the job failed before its listing was done (its
/// items are then a part, or none, of what escrow should hold).
fn incomplete(record: &JobRecord) -> Option<String> {
    match &record.summary {
        None => Some("did not finish the job".into()),
        Some(s) if s.cancelled => Some("was interrupted before the job was done".into()),
        Some(JobSummary { error: Some(e), .. }) => Some(format!("failed the job: {e}")),
        Some(_) => None,
    }
}

/// Checks one job's escrow listing against its manifest record.
async fn check(
    sink: &dyn Sink,
    record: &JobRecord,
    compare_sizes: bool,
    report: &mut Report,
) -> Result<(), Error> {
    let held: BTreeMap<String, Item> =
        sink.list(&Scope::all()).map_ok(|i| (i.key.clone(), i)).try_collect().await?;
    for item in record.items.iter().filter(|i| held_by_run(i.outcome)) {
        let reason = match held.get(&item.key) {
            None => Some(CopyReason::Missing),
            Some(e) if compare_sizes && e.size != item.size => Some(CopyReason::Changed),
            Some(_) => None,
        };
        match reason {
            None => report.skipped += 1,
            Some(reason) => {
                match reason {
                    CopyReason::Missing => report.missing += 1,
                    CopyReason::Changed => report.different += 1,
                }
                report.differences.push(Difference {
                    key: item.key.clone(),
                    reason,
                    size: item.size,
                    status: None,
                });
            }
        }
    }
    let failed = record.items.iter().filter(|i| i.outcome == ItemOutcome::Failed).count();
    if failed > 0 {
        report.notes.push(format!("{failed} items had failed in that run: not checked"));
    }
    Ok(())
}

/// DynamoDB jobs offline: the escrow table exists (table jobs), or a
/// complete export generation exists under the prefix (export jobs).
async fn check_dynamodb(
    job: &crate::config::DynamoDbJob,
    escrow: &Session,
    report: &mut Report,
) -> Result<(), Error> {
    let missing = |report: &mut Report, what: String| {
        report.missing += 1;
        report.differences.push(Difference {
            key: what,
            reason: CopyReason::Missing,
            size: 0,
            status: None,
        });
    };
    if let Some(table) = &job.dest_table {
        let ddb = escrow_sync_dynamodb::client(escrow);
        match ddb.describe_table().table_name(table).send().await {
            Ok(out) => {
                report.skipped += 1;
                let count = out.table.and_then(|t| t.item_count).unwrap_or(0);
                report.notes.push(format!(
                    "escrow table {table} exists with about {count} items (DynamoDB's estimate); \
                     items are compared only by `verify` with the primary"
                ));
            }
            Err(e) => {
                let e = escrow_sync_aws::sdk_error(e, "dynamodb:DescribeTable", table.clone());
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
                missing(report, format!("escrow table {table}"));
            }
        }
    } else if let Some(bucket) = &job.dest_bucket {
        let prefix =
            format!("{}{}/", job.dest_prefix.as_deref().unwrap_or_default(), job.source_table);
        let s3 = escrow_sync_s3::client(escrow);
        let mut pages = s3.list_objects_v2().bucket(bucket).prefix(&prefix).into_paginator().send();
        let mut generations = 0;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                escrow_sync_aws::sdk_error(e, "s3:ListObjectsV2", format!("s3://{bucket}/{prefix}"))
            })?;
            generations += page
                .contents()
                .iter()
                .filter(|o| o.key().is_some_and(|k| k.ends_with("/manifest.json")))
                .count();
        }
        if generations == 0 {
            missing(report, format!("a complete export generation under s3://{bucket}/{prefix}"));
        } else {
            report.skipped += 1;
            report.notes.push(format!(
                "{generations} complete export generation(s) under s3://{bucket}/{prefix}"
            ));
        }
    }
    Ok(())
}

/// `verify --offline`: every selected job checked against the latest run
/// manifest, with escrow credentials only. Returns the exit code.
pub(crate) async fn verify_offline(args: &JobArgs) -> u8 {
    let result = offline(args).await;
    let (jobs, fatal) = match result {
        Ok(jobs) => (jobs, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let code = if fatal.is_some() { exit::FATAL } else { output::exit_code(Mode::Verify, &jobs) };
    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let doc = output::json(Mode::Verify, &jobs, fatal.as_ref(), code);
            let _ = writeln!(stdout, "{}", crate::redact::redact(&doc));
        }
        OutputFormat::Text => {
            let _ = write!(stdout, "{}", crate::redact::redact(&output::text(Mode::Verify, &jobs)));
        }
    }
    if let Some(e) = &fatal {
        eprintln!("error: {}", crate::redact::redact(&e.chain()));
    }
    code
}

async fn offline(args: &JobArgs) -> Result<Vec<JobOutcome>, Error> {
    let config = Config::load(&args.config)?;
    let jobs = config.select(args.job.as_deref())?;
    if config.escrow.manifest_bucket.is_none() {
        return Err(Error::invalid_config(
            "verify --offline checks escrow against the run manifests: set [escrow] \
             manifest_bucket (and run once) first",
        ));
    }
    let escrow = Connector::new().connect_escrow(&config.escrow_account()).await?;
    let store = store(&config, &escrow).expect("manifest_bucket is set");
    let bucket = config.escrow.manifest_bucket.clone().unwrap_or_default();
    let Some((key, manifest)) = store.latest().await? else {
        return Err(Error::invalid_config(format!(
            "no run manifest in s3://{bucket}: run `escrow-sync run` first"
        )));
    };
    let mut outcomes = Vec::new();
    for job in jobs {
        let name = job.name();
        let (kind, streamed) = match job {
            JobRef::S3(j) => ("s3", config.streams(j)),
            JobRef::DynamoDb(_) => ("dynamodb", false),
            JobRef::Ec2(_) => ("ec2", false),
            JobRef::Rds(_) => ("rds", false),
            JobRef::Redshift(_) => ("redshift", false),
        };
        let source = format!("{SOURCE}s3://{bucket}/{key}");
        let result = async {
            let Some(record) = manifest.jobs.get(&name) else {
                return Err(Error::invalid_config(format!(
                    "job {name} is not in the latest run manifest (run {}): run it first",
                    manifest.header.run_id
                )));
            };
            if let Some(why) = incomplete(record) {
                return Err(Error::new(
                    ErrorKind::Failed,
                    "verify --offline",
                    format!("job {name}"),
                    format!(
                        "the latest run (run {}) {why}: its manifest lists only {} items, so \
                         escrow cannot be vouched for offline; run the job to completion first",
                        manifest.header.run_id,
                        record.items.len()
                    ),
                ));
            }
            let mut report = match job {
                JobRef::S3(j) => {
                    let sink = crate::s3_sink(&config, j, &escrow);
                    let mut report = Report::new(Mode::Verify, &source, sink.describe());
                    check(&sink, record, true, &mut report).await?;
                    report
                }
                JobRef::DynamoDb(j) => {
                    let mut report = Report::new(Mode::Verify, &source, "escrow");
                    check_dynamodb(j, &escrow, &mut report).await?;
                    report
                }
                JobRef::Ec2(_) | JobRef::Rds(_) | JobRef::Redshift(_) => {
                    let stores = crate::snapshots::escrow_stores(&config, job, &escrow);
                    let names: Vec<String> = stores.iter().map(|(_, s)| s.describe()).collect();
                    let mut report = Report::new(Mode::Verify, &source, names.join(", "));
                    let mut held =
                        JobRecord { kind: kind.into(), items: Vec::new(), summary: None };
                    // Each store lists its own type; an item is missing only
                    // if no store of the job holds it.
                    let mut keys = std::collections::BTreeSet::new();
                    for (_, store) in &stores {
                        let listed: Vec<Item> = store.list(&Scope::all()).try_collect().await?;
                        keys.extend(listed.into_iter().map(|i| i.key));
                    }
                    for item in record.items.iter().filter(|i| held_by_run(i.outcome)) {
                        if !keys.contains(&item.key) {
                            held.items.push(item.clone());
                        }
                    }
                    let matched = record
                        .items
                        .iter()
                        .filter(|i| held_by_run(i.outcome) && keys.contains(&i.key))
                        .count();
                    report.skipped += matched as u64;
                    for item in held.items {
                        report.missing += 1;
                        report.differences.push(Difference {
                            key: item.key,
                            reason: CopyReason::Missing,
                            size: item.size,
                            status: None,
                        });
                    }
                    report
                }
            };
            report.notes.push(format!(
                "checked offline against run {} (finished {}), without the primary",
                manifest.header.run_id, manifest.end.finished_at
            ));
            Ok(report)
        }
        .await;
        outcomes.push(match result {
            Ok(report) => JobOutcome { name, kind, report: Some(report), error: None, streamed },
            Err(e) => JobOutcome { name, kind, report: None, error: Some(e), streamed },
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_interrupted_or_failed_in_the_last_run_is_not_taken_for_complete() {
        let record = |summary| JobRecord { kind: "s3".into(), items: Vec::new(), summary };
        let done = JobSummary { job: "a".into(), copied: 3, ..Default::default() };
        assert_eq!(incomplete(&record(Some(done.clone()))), None);
        assert!(incomplete(&record(None)).is_some());
        let cancelled = JobSummary { cancelled: true, ..done.clone() };
        assert!(incomplete(&record(Some(cancelled))).unwrap().contains("interrupted"));
        let failed = JobSummary { error: Some("s3:ListObjectsV2: AccessDenied".into()), ..done };
        assert!(incomplete(&record(Some(failed))).unwrap().contains("AccessDenied"));
    }
}
