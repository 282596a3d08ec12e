//! Run manifests: written into escrow after every `run` (when `[escrow]
//! manifest_bucket` is set), and read back by `verify --offline`, which
//! checks escrow against the latest one with escrow credentials only.

use std::collections::BTreeMap;

use futures::TryStreamExt;

use escrow_sync_aws::Session;
use escrow_sync_core::manifest::{DEFAULT_PREFIX, JobRecord, JobSummary, ManifestWriter};
use escrow_sync_core::{
    CopyReason, Difference, Error, ErrorKind, Failure, Item, ItemOutcome, Mode, Report, Scope, Sink,
};
use escrow_sync_s3::ManifestStore;

use crate::runner::JobOutcome;
use crate::spec::{Config, JobRef};

/// How `verify --offline` reports name their source.
pub const SOURCE: &str = "run manifest ";

/// Where verification records go, under the manifest prefix.
pub(crate) const VERIFICATIONS: &str = "verifications/";

/// The manifest store `config` names, if any.
pub(crate) fn store(config: &Config, escrow: &Session) -> Option<ManifestStore> {
    store_at(config, escrow, "")
}

/// The store of verification records (`<manifest_prefix>verifications/`),
/// if `config` names a manifest bucket.
pub(crate) fn verification_store(config: &Config, escrow: &Session) -> Option<ManifestStore> {
    store_at(config, escrow, VERIFICATIONS)
}

fn store_at(config: &Config, escrow: &Session, below: &str) -> Option<ManifestStore> {
    let bucket = config.escrow.manifest_bucket.as_ref()?;
    let prefix = config.escrow.manifest_prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.into());
    let prefix = format!("{prefix}{below}");
    let owner = Some(escrow.account_id().to_string()).filter(|a| !a.is_empty());
    let protection = crate::spec::protection(
        config.escrow.manifest_object_lock.as_ref(),
        config.escrow.kms_key_id.clone(),
    );
    Some(
        ManifestStore::new(escrow_sync_s3::client(escrow), bucket, prefix)
            .with_expected_owner(owner)
            .with_protection(protection),
    )
}

#[cfg(feature = "dynamodb")]
/// The export generations of `job` that run manifests record: generation
/// id -> SHA-256 of the generation's `manifest.json`, as the run that
/// completed it wrote it. `None` without `[escrow] manifest_bucket`: then
/// nothing tells escrow-sync's generations from planted ones.
pub(crate) async fn recorded_generations(
    config: &Config,
    escrow: &Session,
    job: &crate::spec::DynamoDbJob,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    let Some(store) = store(config, escrow) else { return Ok(None) };
    let prefix = format!("{}{}/", job.dest_prefix.as_deref().unwrap_or_default(), job.source_table);
    let mut out = BTreeMap::new();
    for key in store.keys().await? {
        let manifest = store.read(&key).await?;
        generations_in(&manifest, &job.name(), &prefix, &mut out);
    }
    Ok(Some(out))
}

/// Adds the generations under `prefix` (`<dest_prefix><table>/`) that
/// `manifest` records as written by job `job` to `out`.
#[cfg_attr(not(feature = "dynamodb"), allow(dead_code))]
pub(crate) fn generations_in(
    manifest: &escrow_sync_core::manifest::Manifest,
    job: &str,
    prefix: &str,
    out: &mut BTreeMap<String, String>,
) {
    let Some(record) = manifest.jobs.get(job) else { return };
    if record.kind != "dynamodb" {
        return;
    }
    for item in &record.items {
        if item.outcome != ItemOutcome::Copied {
            continue;
        }
        if let Some(generation) =
            item.key.strip_prefix(prefix).and_then(|k| k.strip_suffix("/manifest.json"))
            && !generation.is_empty()
            && !generation.contains('/')
        {
            out.insert(generation.to_string(), item.fingerprint.clone());
        }
    }
}

/// A job's summary line from its result.
pub(crate) fn summary(name: &str, result: &Result<Report, Error>) -> JobSummary {
    match result {
        Ok(r) => summary_of(name, Some(r), None),
        Err(e) => summary_of(name, None, Some(e)),
    }
}

/// A job's summary line from its report and its fatal error (either, or
/// both: a job whose lease was lost has a report and an error).
pub(crate) fn summary_of(name: &str, report: Option<&Report>, error: Option<&Error>) -> JobSummary {
    let error = error.map(Error::chain);
    let Some(r) = report else {
        return JobSummary { job: name.to_string(), error, ..Default::default() };
    };
    JobSummary {
        job: name.to_string(),
        source: r.source.clone(),
        destination: r.destination.clone(),
        copied: r.copied,
        skipped: r.skipped,
        failed: r.failed,
        retained: r.retained,
        bytes_copied: r.bytes_copied,
        cancelled: r.cancelled,
        held_back: r.held_back,
        findings: r.findings.clone(),
        missing: r.missing,
        different: r.different,
        unprotected: r.unprotected,
        elapsed_ms: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
        shard: None,
        error,
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
    }
}

/// Records a `verify` (online or offline) in escrow, for `status`: a
/// verification record of each job's summary under
/// `<manifest_prefix>verifications/`, named by the run id. Nothing without
/// `[escrow] manifest_bucket`. A record that cannot be written fails the
/// verify (it would not count for `status`).
pub(crate) async fn record_verification(
    config: &Config,
    escrow: &Session,
    header: escrow_sync_core::manifest::Header,
    outcomes: &mut Vec<JobOutcome>,
) {
    if config.escrow.manifest_bucket.is_none() || outcomes.is_empty() {
        return;
    }
    let mut writer = match ManifestWriter::create(header.verification()) {
        Ok(w) => w,
        Err(e) => {
            let bucket = config.escrow.manifest_bucket.as_deref().unwrap_or_default();
            return record_written(bucket, "verification record", Err(e), outcomes);
        }
    };
    for o in outcomes.iter() {
        writer.job(&o.name, o.kind);
        writer.job_end(summary_of(&o.name, o.report.as_ref(), o.error.as_ref()));
    }
    write(config, escrow, writer, true, outcomes).await;
}

/// Writes the run's manifest into escrow (one PutObject: never partial).
/// Success is noted in every job's report; failure fails the run (exit 1)
/// with the reason.
pub(crate) async fn write(
    config: &Config,
    escrow: &Session,
    manifest: ManifestWriter,
    verification: bool,
    outcomes: &mut Vec<JobOutcome>,
) {
    let store =
        if verification { verification_store(config, escrow) } else { store(config, escrow) };
    let Some(store) = store else { return };
    let run_id = manifest.run_id().to_string();
    let written = match manifest.finish_spooled() {
        Ok((_, spooled)) => store.put_spooled(&run_id, spooled).await,
        Err(e) => Err(e),
    };
    let bucket = config.escrow.manifest_bucket.as_deref().unwrap_or_default();
    let what = if verification { "verification record" } else { "run manifest" };
    let renew = written.is_ok() && config.escrow.manifest_object_lock.is_some();
    record_written(bucket, what, written, outcomes);
    if renew {
        renew_records(&store, what, outcomes).await;
    }
}

/// Rolling retention of the records under the store's prefix (every one is
/// kept for good, so every one whose lock ends within the window is
/// renewed): told in the first job report; a record that could not be
/// renewed is a failure of the run (its lock would lapse).
async fn renew_records(store: &ManifestStore, what: &str, outcomes: &mut [JobOutcome]) {
    let renewal = store.renew_retention().await;
    let Some(report) = outcomes.iter_mut().find_map(|o| o.report.as_mut()) else { return };
    escrow_sync_s3::Renewal::fold(renewal, &format!("{what}s"), report);
}

/// Tells each job's report where the manifest went, or why it did not:
/// then every report counts a failure, and when no job got as far as a
/// report, the failure is a line of its own.
fn record_written(
    bucket: &str,
    what: &str,
    written: Result<String, Error>,
    outcomes: &mut Vec<JobOutcome>,
) {
    let written = written.map_err(|e| {
        // The cause's kind is kept: a store that stayed unavailable past
        // the retries is a failure (exit 1), a refusal stays one (exit 2).
        let kind = match e.kind() {
            ErrorKind::InvalidConfig => ErrorKind::Failed,
            kind => kind,
        };
        Error::new(
            kind,
            "manifest",
            format!("s3://{bucket}"),
            format!("the {what} was not written: {}", e.chain()),
        )
    });
    let mut told = false;
    for o in outcomes.iter_mut() {
        let Some(report) = o.report.as_mut() else { continue };
        match &written {
            Ok(key) => report.notes.push(format!("recorded in the {what} s3://{bucket}/{key}")),
            Err(error) => {
                report.failed += 1;
                report.failures.push(Failure::new(format!("({what})"), error, 1));
                told = true;
            }
        }
    }
    if let Err(error) = written
        && !told
    {
        // Every job failed before it had a report: the manifest's failure
        // gets a line of its own rather than none.
        outcomes.push(JobOutcome::new(format!("({what})"), "manifest", Err(error)));
    }
}

/// Whether offline verify expects escrow to hold an item of this outcome:
/// what the run copied or found in escrow. Escrow-only items (`retained`)
/// are recorded but not expected: `prune` may have deleted them since, by
/// design; failed items never made it.
fn held_by_run(outcome: ItemOutcome) -> bool {
    matches!(outcome, ItemOutcome::Copied | ItemOutcome::InEscrow)
}

/// What the primary held for a job at a point in time, by the run manifest
/// of the newest run that finished the job at or before it.
pub(crate) struct KeysAt {
    /// That run.
    pub run_id: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// The keys the primary listed then (copied, already in escrow, or
    /// failed to copy); keys escrow kept after the primary deleted them are
    /// not among them.
    pub keys: std::collections::BTreeSet<String>,
}

/// The keys the primary held for `job` at the newest run that finished it
/// at or before `at`; `None` without a manifest bucket or such a run.
pub(crate) async fn keys_at(
    config: &Config,
    escrow: &Session,
    job: &str,
    at: std::time::SystemTime,
) -> Result<Option<KeysAt>, Error> {
    let Some(store) = store(config, escrow) else { return Ok(None) };
    // The parts of sharded runs, per cut, until every part of one is found.
    let mut cuts: Vec<crate::shard::Merge<KeysAt>> = Vec::new();
    for key in store.keys().await?.iter().rev() {
        // A run id starts with its start time: a run that started after
        // `at` cannot have finished by then.
        let file = key.rsplit('/').next().unwrap_or(key);
        let started = escrow_sync_core::manifest::run_started(file);
        if started.is_some_and(|s| s > at) {
            continue;
        }
        let mut manifest = store.read(key).await?;
        let finished = escrow_sync_core::time::parse_rfc3339(&manifest.end.finished_at);
        if finished.is_none_or(|f| f > at) {
            continue;
        }
        let Some(record) = manifest.jobs.remove(job) else { continue };
        if incomplete(&record).is_some() {
            continue;
        }
        let part = record.summary.as_ref().and_then(|s| s.shard.clone());
        let keys = record
            .items
            .into_iter()
            .filter(|i| i.outcome != ItemOutcome::Retained)
            .map(|i| i.key)
            .collect();
        let run =
            KeysAt { run_id: manifest.header.run_id, finished_at: manifest.end.finished_at, keys };
        let Some(part) = part else { return Ok(Some(run)) };
        // A part lists its key range only: the job's keys are those of
        // every part of one cut (N and boundaries), each its newest run.
        if part.boundaries.is_empty() || !crate::shard::usable_part(&part, job, key) {
            continue;
        }
        let at = match cuts.iter().position(|m| m.cut.same_cut(&part)) {
            Some(at) => at,
            None => {
                cuts.push(crate::shard::Merge::new(&part));
                cuts.len() - 1
            }
        };
        cuts[at].offer(&part, run);
        if cuts[at].whole() {
            let parts: Vec<KeysAt> = cuts.swap_remove(at).parts.into_iter().flatten().collect();
            let run_id = parts.iter().map(|p| p.run_id.as_str()).collect::<Vec<_>>().join(", ");
            let finished_at = parts.iter().map(|p| p.finished_at.clone()).max().unwrap_or_default();
            let keys = parts.into_iter().flat_map(|p| p.keys).collect();
            return Ok(Some(KeysAt { run_id, finished_at, keys }));
        }
    }
    Ok(None)
}

/// What the latest run manifest that records `job` says against pruning
/// it: `None` without a manifest bucket; `Some(None)` when that run
/// finished the job with no failure; `Some(Some(why))` otherwise (also when
/// no manifest records the job). Escrow credentials only.
pub(crate) async fn latest_run_problem(
    config: &Config,
    escrow: &Session,
    job: &str,
) -> Result<Option<Option<String>>, Error> {
    let Some(store) = store(config, escrow) else { return Ok(None) };
    for key in store.keys().await?.iter().rev() {
        let mut manifest = store.read(key).await?;
        let Some(record) = manifest.jobs.remove(job) else { continue };
        let run = &manifest.header.run_id;
        if let Some(why) = incomplete(&record) {
            return Ok(Some(Some(format!("the latest run ({run}) {why}"))));
        }
        let failed_items = record.items.iter().filter(|i| i.outcome == ItemOutcome::Failed).count();
        let failed = record.summary.as_ref().map_or(0, |s| s.failed).max(failed_items as u64);
        if failed > 0 {
            return Ok(Some(Some(format!(
                "the latest run ({run}) recorded {failed} failed items"
            ))));
        }
        return Ok(Some(None));
    }
    Ok(Some(Some("no run manifest records this job: run it first".into())))
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

/// Whether the escrow copy listed now (`listed`) differs from the one the
/// run recorded: only when both fingerprints are known.
fn changed_copy(recorded: Option<&str>, listed: &str) -> bool {
    match recorded {
        Some(r) if !r.is_empty() && !listed.is_empty() => r != listed,
        _ => false,
    }
}

/// Checks one job's escrow listing against its manifest record.
async fn check(
    sink: &dyn Sink,
    record: &JobRecord,
    compare: bool,
    report: &mut Report,
) -> Result<(), Error> {
    let held: BTreeMap<String, Item> =
        sink.list(&Scope::all()).map_ok(|i| (i.key.clone(), i)).try_collect().await?;
    for item in record.items.iter().filter(|i| held_by_run(i.outcome)) {
        let reason = match held.get(&item.key) {
            None => Some(CopyReason::Missing),
            Some(e) if compare && e.size != item.size => Some(CopyReason::Changed),
            // The escrow copy the run wrote or found, by its own fingerprint
            // (ETag): a copy overwritten since is not the one recorded.
            Some(e)
                if compare && changed_copy(item.escrow_fingerprint.as_deref(), &e.fingerprint) =>
            {
                Some(CopyReason::Changed)
            }
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

#[cfg(feature = "dynamodb")]
/// DynamoDB jobs offline: the escrow table exists (table jobs), or a
/// complete export generation exists under the prefix (export jobs).
async fn check_dynamodb(
    config: &Config,
    job: &crate::spec::DynamoDbJob,
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
        let mut present = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                escrow_sync_aws::sdk_error(e, "s3:ListObjectsV2", format!("s3://{bucket}/{prefix}"))
            })?;
            present.extend(page.contents().iter().filter_map(|o| {
                let g = o.key()?.strip_prefix(&prefix)?.strip_suffix("/manifest.json")?;
                (!g.contains('/')).then(|| g.to_string())
            }));
        }
        // Only generations a run manifest records count: one the primary
        // (or anyone else) planted is named and ignored.
        let recorded = recorded_generations(config, escrow, job).await?;
        let location = format!("s3://{bucket}/{prefix}");
        let choice = escrow_sync_dynamodb::export::choose_generation(
            &present,
            recorded.as_ref(),
            None,
            &location,
        );
        report.notes.extend(choice.notes);
        report.warnings.extend(choice.warnings);
        let generations = match &recorded {
            Some(r) => present.iter().filter(|g| r.contains_key(g.as_str())).count(),
            None => present.len(),
        };
        if let (Some(generation), Some(sha)) = (&choice.generation, &choice.manifest_sha256) {
            // The newest trusted generation's manifest.json is the one
            // escrow-sync wrote.
            let key = escrow_sync_dynamodb::export::manifest_key(&prefix, generation);
            let name = format!("s3://{bucket}/{key}");
            let out = s3
                .get_object()
                .bucket(bucket)
                .key(&key)
                .set_expected_bucket_owner(
                    Some(escrow.account_id().to_string()).filter(|a| !a.is_empty()),
                )
                .send()
                .await
                .map_err(|e| escrow_sync_aws::sdk_error(e, "s3:GetObject", &name))?;
            let cap = escrow_sync_dynamodb::export::MANIFEST_CAP;
            if out.content_length().is_some_and(|l| l as u64 > cap) {
                return Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    "read manifest",
                    &name,
                    format!("over the cap of {cap} bytes: escrow-sync did not write it so"),
                ));
            }
            let data = out.body.collect().await.map_err(|e| {
                Error::new(ErrorKind::Transient, "s3:GetObject", &name, e.to_string())
            })?;
            let data = data.into_bytes();
            if let Err(e) = escrow_sync_dynamodb::export::check_manifest_sha256(&data, sha, &name) {
                report.unprotected += 1;
                report.findings.push(escrow_sync_core::Finding::new(name, e.chain()));
            }
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

/// A job's record in the newest manifest that has it complete.
struct CompleteRun {
    key: String,
    run_id: String,
    finished_at: String,
    record: JobRecord,
}

/// The newest run that had a job but did not finish it.
struct UnfinishedRun {
    run_id: String,
    why: String,
    items: usize,
}

/// What the manifests say of each job asked for.
#[derive(Default)]
struct Newest {
    /// How many manifests the store holds.
    manifests: usize,
    /// Per job, the newest manifest in which it completed.
    complete: BTreeMap<String, CompleteRun>,
    /// Per job, the newest run that did not finish it, when that run is
    /// newer than the one in `complete` (or there is none).
    unfinished: BTreeMap<String, UnfinishedRun>,
    /// Per job whose newest record is a part of a sharded run: the newest
    /// complete run of each part cut by the same boundaries.
    sharded: BTreeMap<String, crate::shard::Merge<CompleteRun>>,
    /// Jobs whose newest record is of a whole run (parts older than it are
    /// not looked at).
    whole: std::collections::BTreeSet<String>,
}

impl Newest {
    /// Whether `job`'s newest complete run (whole, or every part) is found.
    fn settled(&self, job: &str) -> bool {
        self.complete.contains_key(job) || self.sharded.get(job).is_some_and(|m| m.whole())
    }

    /// Takes `record` of `job` from the manifest at `key` as a part of a
    /// sharded run, if it is one and the job's newest records are parts;
    /// whether it was a part.
    fn part(
        &mut self,
        job: &str,
        key: &str,
        manifest: &escrow_sync_core::manifest::Manifest,
        record: &mut Option<JobRecord>,
    ) -> bool {
        let Some(part) = record.as_ref().and_then(|r| r.summary.as_ref()?.shard.clone()) else {
            // A whole run that did not finish the job (refused by a part's
            // lease, failed, interrupted) does not end the merging of the
            // parts older than it: a complete set of them is still found.
            if record.as_ref().is_some_and(|r| incomplete(r).is_none()) {
                self.whole.insert(job.to_string());
            }
            return false;
        };
        if self.whole.contains(job) {
            // A part older than the job's newest whole run.
            return true;
        }
        if !crate::shard::usable_part(&part, job, key) {
            return true;
        }
        let Some(taken) = record.take() else { return true };
        let run_id = manifest.header.run_id.clone();
        if let Some(why) = incomplete(&taken).or_else(|| {
            part.boundaries.is_empty().then(|| "failed before its boundaries were known".into())
        }) {
            self.unfinished.entry(job.to_string()).or_insert(UnfinishedRun {
                run_id: format!("{run_id}, part {}/{}", part.index, part.count),
                why,
                items: taken.items.len(),
            });
            if !part.boundaries.is_empty() {
                self.sharded
                    .entry(job.to_string())
                    .or_insert_with(|| crate::shard::Merge::new(&part));
            }
            return true;
        }
        let merge =
            self.sharded.entry(job.to_string()).or_insert_with(|| crate::shard::Merge::new(&part));
        merge.offer(
            &part,
            CompleteRun {
                key: key.to_string(),
                run_id: format!("{run_id} (part {}/{})", part.index, part.count),
                finished_at: manifest.end.finished_at.clone(),
                record: taken,
            },
        );
        true
    }
}

/// Reads manifests newest first until each of `jobs` is found complete (a
/// `run --job` writes a manifest of that job only, so each job has its own
/// newest run), or none are left.
async fn newest_complete(store: &ManifestStore, jobs: &[String]) -> Result<Newest, Error> {
    let keys = store.keys().await?;
    let mut newest = Newest { manifests: keys.len(), ..Newest::default() };
    for key in keys.iter().rev() {
        if jobs.iter().all(|j| newest.settled(j)) {
            break;
        }
        let mut manifest = store.read(key).await?;
        for job in jobs {
            if newest.settled(job) {
                continue;
            }
            let mut record = manifest.jobs.remove(job);
            if newest.part(job, key, &manifest, &mut record) {
                continue;
            }
            let Some(record) = record else { continue };
            match incomplete(&record) {
                None => {
                    newest.complete.insert(
                        job.clone(),
                        CompleteRun {
                            key: key.clone(),
                            run_id: manifest.header.run_id.clone(),
                            finished_at: manifest.end.finished_at.clone(),
                            record,
                        },
                    );
                }
                Some(why) => {
                    newest.unfinished.entry(job.clone()).or_insert(UnfinishedRun {
                        run_id: manifest.header.run_id.clone(),
                        why,
                        items: record.items.len(),
                    });
                }
            }
        }
    }
    Ok(newest)
}

/// `verify --offline`: every selected job (`job`: only that one) checked
/// against the newest run manifest that finished it, with escrow
/// credentials only.
pub(crate) async fn verify_offline(
    config: &Config,
    job: Option<&str>,
    escrow: &Session,
) -> Result<Vec<JobOutcome>, Error> {
    let jobs = config.select(job)?;
    if config.escrow.manifest_bucket.is_none() {
        return Err(Error::invalid_config(
            "verify --offline checks escrow against the run manifests: set [escrow] \
             manifest_bucket (and run once) first",
        ));
    }
    let store = store(config, escrow).expect("manifest_bucket is set");
    let bucket = config.escrow.manifest_bucket.clone().unwrap_or_default();
    let names: Vec<String> = jobs.iter().map(JobRef::name).collect();
    let mut found = newest_complete(&store, &names).await?;
    if found.manifests == 0 {
        return Err(Error::invalid_config(format!(
            "no run manifest in s3://{bucket}: run `escrow-sync run` first"
        )));
    }
    let mut outcomes = Vec::new();
    for job in jobs {
        let name = job.name();
        let kind = job.kind();
        let streamed = match job {
            JobRef::S3(j) => config.streams(j),
            _ => false,
        };
        let mut complete = found.complete.remove(&name);
        let unfinished = found.unfinished.remove(&name);
        let mut sharded_gap = None;
        if let Some(merge) = found.sharded.remove(&name) {
            // The parts of one sharded run, as one run of the whole job.
            if merge.whole() {
                let runs: Vec<CompleteRun> = merge.parts.into_iter().flatten().collect();
                let mut items = Vec::new();
                for r in &runs {
                    items.extend(r.record.items.iter().cloned());
                }
                complete = Some(CompleteRun {
                    key: runs.iter().map(|r| r.key.as_str()).collect::<Vec<_>>().join(", "),
                    run_id: runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>().join(", "),
                    finished_at: runs
                        .iter()
                        .map(|r| r.finished_at.clone())
                        .max()
                        .unwrap_or_default(),
                    record: JobRecord { kind: kind.to_string(), items, summary: None },
                });
            } else {
                sharded_gap = Some((merge.cut.count, merge.missing()));
            }
        }
        let result = async {
            if let Some((count, missing)) = sharded_gap {
                return Err(Error::new(
                    ErrorKind::Failed,
                    "verify --offline",
                    format!("job {name}"),
                    format!(
                        "the newest sharded run ({count} parts) has no complete run of part(s) \
                         {} cut by the same boundaries, so escrow cannot be vouched for offline: \
                         run them to completion (escrow-sync run --shard {})",
                        missing.join(", "),
                        missing.first().cloned().unwrap_or_default()
                    ),
                ));
            }
            let Some(run) = complete else {
                return Err(match unfinished {
                    None => Error::invalid_config(format!(
                        "job {name} is in none of the {} run manifests in s3://{bucket}: run it \
                         first",
                        found.manifests
                    )),
                    Some(u) => Error::new(
                        ErrorKind::Failed,
                        "verify --offline",
                        format!("job {name}"),
                        format!(
                            "no run finished this job: the latest (run {}) {}; its manifest \
                             lists only {} items, so escrow cannot be vouched for offline; run \
                             the job to completion first",
                            u.run_id, u.why, u.items
                        ),
                    ),
                });
            };
            let record = &run.record;
            let source = format!("{SOURCE}s3://{bucket}/{}", run.key);
            let mut report = match job {
                JobRef::S3(j) => {
                    let sink = crate::runner::s3_sink(config, j, escrow);
                    let mut report = Report::new(Mode::Verify, &source, sink.describe());
                    // A later unfinished run may have replaced a copy with a
                    // newer one: then only presence is vouched for.
                    check(&sink, record, unfinished.is_none(), &mut report).await?;
                    report
                }
                #[cfg(feature = "dynamodb")]
                JobRef::DynamoDb(j) => {
                    let mut report = Report::new(Mode::Verify, &source, "escrow");
                    check_dynamodb(config, j, escrow, &mut report).await?;
                    report
                }
                #[cfg(feature = "cloudtrail")]
                JobRef::CloudTrail(j) => {
                    let mut report = Report::new(Mode::Verify, &source, "escrow");
                    crate::trail::verify_offline(j, escrow, &mut report).await?;
                    report
                }
                // Refused when the config was parsed.
                #[cfg(not(feature = "dynamodb"))]
                JobRef::DynamoDb(_) => return Err(crate::spec::not_built("dynamodb")),
                #[cfg(not(feature = "cloudtrail"))]
                JobRef::CloudTrail(_) => return Err(crate::spec::not_built("cloudtrail")),
                JobRef::Ec2(_) | JobRef::Rds(_) | JobRef::Redshift(_) => {
                    let stores = crate::snapshots::escrow_stores(config, job, escrow);
                    let names: Vec<String> =
                        stores.iter().map(|(_, s)| Sink::describe(s.as_ref())).collect();
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
                "checked offline against run {} (finished {}), the latest to finish this job, \
                 without the primary",
                run.run_id, run.finished_at
            ));
            if let Some(u) = unfinished {
                report.notes.push(format!(
                    "a later run (run {}) {}: what it copied is not checked offline, and \
                     escrow copies are checked for presence only",
                    u.run_id, u.why
                ));
            }
            Ok(report)
        }
        .await;
        let mut outcome = JobOutcome::new(name, kind, result);
        outcome.streamed = streamed;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_not_written_is_told_even_when_every_job_failed() {
        let failed = |name: &str| JobOutcome {
            name: name.into(),
            kind: "s3",
            report: None,
            error: Some(Error::invalid_config("x")),
            streamed: false,
        };
        let denied = || Error::new(ErrorKind::Failed, "s3:PutObject", "s3://m", "AccessDenied");
        let mut outcomes = vec![failed("a"), failed("b")];
        record_written("m", "run manifest", Err(denied()), &mut outcomes);
        assert_eq!(outcomes.len(), 3);
        let told = outcomes[2].error.as_ref().unwrap().chain();
        assert!(told.contains("not written") && told.contains("AccessDenied"), "{told}");

        let mut outcomes = vec![
            failed("a"),
            JobOutcome {
                report: Some(Report::new(Mode::Run, "s", "d")),
                error: None,
                ..failed("b")
            },
        ];
        record_written("m", "run manifest", Err(denied()), &mut outcomes);
        assert_eq!(outcomes.len(), 2, "told in the report that exists");
        assert_eq!(outcomes[1].report.as_ref().unwrap().failed, 1);

        record_written("m", "run manifest", Ok("runs/1.jsonl".into()), &mut outcomes);
        let notes = &outcomes[1].report.as_ref().unwrap().notes;
        assert!(notes.iter().any(|n| n.contains("s3://m/runs/1.jsonl")), "{notes:?}");
    }

    #[test]
    fn a_copy_is_changed_only_when_both_fingerprints_are_known_and_differ() {
        assert!(changed_copy(Some("\"a\""), "\"b\""));
        assert!(!changed_copy(Some("\"a\""), "\"a\""));
        assert!(!changed_copy(None, "\"b\""));
        assert!(!changed_copy(Some(""), "\"b\""));
        assert!(!changed_copy(Some("\"a\""), ""));
    }

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

    #[test]
    fn only_generations_the_job_recorded_as_copied_count() {
        use escrow_sync_core::manifest::{ItemLine, Manifest};
        let line = |job: &str, key: &str, outcome| ItemLine {
            job: job.into(),
            key: key.into(),
            fingerprint: format!("sha-of-{key}"),
            size: 10,
            outcome,
            escrow_fingerprint: None,
            source_time: None,
            lineage: None,
            error: None,
        };
        let text = format!(
            "{}\n{{\"line\":\"end\",\"finished_at\":\"2026-12-01T00:00:00Z\",\"jobs\":0,\"items\":0}}\n",
            serde_json::json!({"line": "header", "format": escrow_sync_core::manifest::FORMAT,
                "run_id": "r", "tool_version": "0", "config_digest": "d", "escrow_account": "e",
                "primary_account": "p", "started_at": "2026-12-01T00:00:00Z"})
        );
        let mut m = Manifest::parse(&text).unwrap();
        let items = vec![
            line(
                "orders",
                "dynamodb/orders/20261201T000000000Z/manifest.json",
                ItemOutcome::Copied,
            ),
            line(
                "orders",
                "dynamodb/orders/20261202T000000000Z/manifest.json",
                ItemOutcome::Failed,
            ),
            line("orders", "dynamodb/other/20261203T000000000Z/manifest.json", ItemOutcome::Copied),
            line("orders", "dynamodb/orders/x/data/a.json.gz", ItemOutcome::Copied),
        ];
        m.jobs.insert("orders".into(), JobRecord { kind: "dynamodb".into(), items, summary: None });
        let other = vec![line(
            "s3copy",
            "dynamodb/orders/20261204T000000000Z/manifest.json",
            ItemOutcome::Copied,
        )];
        m.jobs
            .insert("s3copy".into(), JobRecord { kind: "s3".into(), items: other, summary: None });
        let mut out = BTreeMap::new();
        generations_in(&m, "orders", "dynamodb/orders/", &mut out);
        generations_in(&m, "s3copy", "dynamodb/orders/", &mut out);
        assert_eq!(
            out,
            BTreeMap::from([(
                "20261201T000000000Z".to_string(),
                "sha-of-dynamodb/orders/20261201T000000000Z/manifest.json".to_string()
            )])
        );
    }
}
