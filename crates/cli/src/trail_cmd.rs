//! `[[cloudtrail]]` jobs: the primary's trails found through the reader
//! role, their log buckets copied into escrow as `[[s3]]` jobs (one per
//! bucket and key prefix), and, on `verify`, the escrow copy's integrity
//! chain validated (log file hashes, digest chain, digest signatures) with
//! CloudTrail's public keys asked of ListPublicKeys with the escrow's
//! credentials, or read from `public_keys_file`.

use std::collections::BTreeMap;

use escrow_sync_aws::{Session, Sessions};
use escrow_sync_cloudtrail::{
    EscrowTrailStore, FindingKind, KeySource, Keyring, ListPublicKeys, Location, Options, Trail,
};
use escrow_sync_core::{CancellationToken, Error, Finding, Mode, Report, Result};
use escrow_sync_s3::{check_dest_bucket, check_dest_protection, check_source_bucket};

use crate::config::{CloudTrailJob, Config};

/// A job's trails, found and checked.
pub(crate) struct Checked {
    trails: Vec<Trail>,
    /// Every trail of the primary (to know who else delivers where).
    all: Vec<Trail>,
    keys: Option<Keyring>,
}

/// Finds the job's trails and checks their buckets, the escrow bucket and
/// the keys file; an error changes nothing.
pub(crate) async fn check(job: &CloudTrailJob, sessions: &Sessions) -> Result<Checked> {
    let keys = match &job.public_keys_file {
        Some(path) => Some(read_keys(job, path)?),
        None => None,
    };
    let client = escrow_sync_cloudtrail::client(&sessions.primary, None);
    let all = escrow_sync_cloudtrail::describe_trails(&client, &[]).await?;
    let mut trails = escrow_sync_cloudtrail::describe_trails(&client, &job.trails).await?;
    if let Some(bucket) = &job.source_bucket {
        if let Some(t) = trails.iter().find(|t| &t.bucket != bucket && !job.trails.is_empty()) {
            return Err(Error::invalid_config(format!(
                "[[cloudtrail]] ({}): trail {} delivers to s3://{}, not to source_bucket {bucket}: \
                 fix source_bucket or trails",
                job.name(),
                t.name,
                t.bucket
            )));
        }
        trails.retain(|t| &t.bucket == bucket);
    }
    if trails.is_empty() {
        let there: Vec<_> =
            all.iter().map(|t| format!("{} -> s3://{}", t.name, t.bucket)).collect();
        return Err(Error::invalid_config(format!(
            "[[cloudtrail]] ({}): no trail of the primary to escrow{} (trails: {}): create a \
             trail with log file validation, or fix source_bucket",
            job.name(),
            job.source_bucket
                .as_ref()
                .map(|b| format!(" delivers to s3://{b}"))
                .unwrap_or_default(),
            if there.is_empty() { "none".to_string() } else { there.join(", ") }
        )));
    }
    let primary = escrow_sync_s3::client(&sessions.primary);
    let escrow = escrow_sync_s3::client(&sessions.escrow);
    let primary_id = sessions.primary.account_id();
    for (bucket, _) in locations(&trails, &all).keys() {
        check_source_bucket(&primary, bucket, primary_id).await?;
    }
    check_dest_bucket(&escrow, &job.dest_bucket, sessions.escrow.account_id()).await?;
    check_dest_protection(
        &escrow,
        &job.dest_bucket,
        job.allow_unversioned_dest,
        job.object_lock.is_some(),
    )
    .await?;
    Ok(Checked { trails, all, keys })
}

/// The job's trails by (bucket, key prefix), with the primary's other
/// trails delivering there.
fn locations(trails: &[Trail], all: &[Trail]) -> BTreeMap<(String, String), Location> {
    let mut out: BTreeMap<(String, String), Location> = BTreeMap::new();
    for t in trails {
        let at = (t.bucket.clone(), t.key_prefix.trim_matches('/').to_string());
        let loc = out.entry(at.clone()).or_insert_with(|| Location {
            bucket: t.bucket.clone(),
            key_prefix: at.1.clone(),
            trails: Vec::new(),
            other_trails: Vec::new(),
        });
        loc.trails.push(t.name.clone());
    }
    for t in all {
        let at = (t.bucket.clone(), t.key_prefix.trim_matches('/').to_string());
        if let Some(loc) = out.get_mut(&at)
            && !loc.trails.contains(&t.name)
            && !loc.other_trails.contains(&t.name)
        {
            loc.other_trails.push(t.name.clone());
        }
    }
    out
}

/// Runs (plan, run or verify) one `[[cloudtrail]]` job.
#[allow(clippy::too_many_arguments)] // the job's context, as run_s3 takes it
pub(crate) async fn run(
    config: &Config,
    job: &CloudTrailJob,
    checked: Checked,
    sessions: &Sessions,
    mode: Mode,
    checksums: bool,
    cancel: CancellationToken,
    progress: Option<escrow_sync_core::ProgressFn>,
    item_log: Option<escrow_sync_core::ItemLog>,
) -> Result<Report> {
    let locations = locations(&checked.trails, &checked.all);
    let sources: Vec<_> =
        locations.values().map(|l| format!("s3://{}/{}", l.bucket, l.root())).collect();
    let mut report = Report::new(
        mode,
        sources.join(", "),
        format!("s3://{}/{}", job.dest_bucket, job.dest_prefix),
    );
    for t in &checked.trails {
        report.notes.push(format!(
            "trail {} ({}{}) delivers to s3://{}/{}",
            t.name,
            t.home_region,
            if t.multi_region { ", every region" } else { "" },
            t.bucket,
            t.root()
        ));
        if !t.validation {
            report.warnings.push(format!(
                "trail {} has log file validation off: its logs are copied but nothing proves \
                 them untampered; turn it on: aws cloudtrail update-trail --name {} \
                 --enable-log-file-validation",
                t.name, t.name
            ));
        }
    }
    for loc in locations.values() {
        if cancel.is_cancelled() {
            report.cancelled = true;
            break;
        }
        let s3 = job.s3_job(&loc.bucket, &loc.key_prefix);
        let part = crate::run_s3(
            config,
            &s3,
            sessions,
            mode,
            checksums,
            cancel.clone(),
            progress.clone(),
            item_log.clone(),
        )
        .await?;
        report.absorb(part);
    }
    if mode == Mode::Verify && !report.cancelled {
        let store = store(job, &sessions.escrow);
        let locations: Vec<_> = locations.into_values().collect();
        validate(job, checked.keys.as_ref(), &store, &locations, &sessions.escrow, &mut report)
            .await?;
    }
    Ok(report)
}

fn store(job: &CloudTrailJob, escrow: &Session) -> EscrowTrailStore {
    EscrowTrailStore::from_client(
        escrow_sync_s3::client(escrow),
        &job.dest_bucket,
        &job.dest_prefix,
    )
}

/// `verify --offline`: validates every trail whose files escrow holds,
/// found from the escrow bucket alone (the primary is not asked).
pub(crate) async fn verify_offline(
    job: &CloudTrailJob,
    escrow: &Session,
    report: &mut Report,
) -> Result<()> {
    let keys = match &job.public_keys_file {
        Some(path) => Some(read_keys(job, path)?),
        None => None,
    };
    let store = store(job, escrow);
    let locations = store.locations().await?;
    if locations.is_empty() {
        report.missing += 1;
        report.findings.push(
            Finding::new(
                format!("s3://{}/{}", job.dest_bucket, job.dest_prefix),
                "escrow holds no CloudTrail files for this job",
            )
            .with_kind("log-missing"),
        );
        return Ok(());
    }
    validate(job, keys.as_ref(), &store, &locations, escrow, report).await
}

fn read_keys(job: &CloudTrailJob, path: &str) -> Result<Keyring> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::invalid_config(format!(
            "[[cloudtrail]] ({}): public_keys_file {path}: {e}: save it with `aws cloudtrail \
             list-public-keys --output json > {path}`, or drop the key to ask ListPublicKeys",
            job.name()
        ))
    })?;
    Keyring::from_json(&text, path)
}

/// Validates the escrow copy of every location; findings go to the report.
async fn validate(
    job: &CloudTrailJob,
    keys: Option<&Keyring>,
    store: &EscrowTrailStore,
    locations: &[Location],
    escrow: &Session,
    report: &mut Report,
) -> Result<()> {
    let escrow = escrow.clone();
    let asked = ListPublicKeys::new(move |region: &str| {
        escrow_sync_cloudtrail::client(&escrow, Some(region))
    });
    let keys: &dyn KeySource = match keys {
        Some(k) => k,
        None => &asked,
    };
    let now = escrow_sync_cloudtrail::time::epoch(std::time::SystemTime::now());
    let options = Options { since: job.since(), now: Some(now) };
    for loc in locations {
        for v in escrow_sync_cloudtrail::validate(store, keys, loc, options).await? {
            let covered = match (&v.covered_from, &v.covered_to) {
                (Some(f), Some(t)) => format!(", covering {f} to {t}"),
                _ => String::new(),
            };
            report.notes.push(format!(
                "trail {}: {} digest(s) and {} log file(s) validated{covered}, {} problem(s)",
                v.trail,
                v.digests,
                v.log_files,
                v.findings.len()
            ));
            report.notes.extend(v.notes.iter().map(|n| format!("trail {}: {n}", v.trail)));
            for f in v.findings {
                match f.kind {
                    FindingKind::LogMissing | FindingKind::DigestMissing => report.missing += 1,
                    FindingKind::LogUnsigned | FindingKind::DigestUnsigned => {
                        report.unprotected += 1
                    }
                    _ => report.different += 1,
                }
                report.findings.push(
                    Finding::new(f.key, format!("trail {}: {}", v.trail, f.detail))
                        .with_kind(f.kind.as_str())
                        .with_range(f.from, f.to),
                );
            }
        }
    }
    Ok(())
}
