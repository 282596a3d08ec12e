//! Snapshot jobs (`[[ec2]]`, `[[rds]]`, `[[redshift]]`): one executor pass
//! per resource type, each with its own in-flight limit (AMIs 100, EBS 20,
//! RDS 20, Aurora 5, Redshift 5 unless `max_in_flight` says otherwise),
//! merged into one report; and `escrow-sync prune`.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use escrow_sync_aws::Sessions;
use escrow_sync_core::{
    CancellationToken, Error, EscrowCopy, Executor, ExecutorOptions, Item, ItemStream, Kept, Mode,
    Payload, ProgressFn, Report, Retained, Retention, Scope, Sink, Source,
};

use crate::config::{Config, JobRef};
use crate::output::exit;

/// An escrow store a part copies into and `prune` deletes from.
trait Store: Sink + Retained {}
impl<T: Sink + Retained> Store for T {}

/// One resource type of a snapshot job.
struct Part {
    /// E.g. `EBS snapshots`.
    what: &'static str,
    source: Windowed,
    store: Box<dyn Store>,
    in_flight: usize,
}

/// A source cut to what the job's retention keeps (see
/// [`escrow_sync_core::within_retention`]): a run copies only what prune
/// would keep, so prune never deletes what the next run copies back.
struct Windowed {
    inner: Box<dyn Source>,
    retention: Retention,
    left_out: std::sync::atomic::AtomicU64,
    /// Every key the source listed (before the window), to find configured
    /// ids the primary does not have.
    listed: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

#[async_trait::async_trait]
impl Source for Windowed {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let listing = self.inner.list(scope);
        futures::stream::once(async move {
            let items: Vec<Item> = listing.try_collect().await?;
            self.listed.lock().expect("listed").extend(items.iter().map(|i| i.key.clone()));
            let (kept, gone) = escrow_sync_core::within_retention(items, &self.retention);
            self.left_out.fetch_add(gone.len() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, Error>(futures::stream::iter(kept.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    async fn read(&self, item: &Item) -> escrow_sync_core::Result<Payload> {
        self.inner.read(item).await
    }

    async fn finish(&self, item: &Item) -> escrow_sync_core::Result<()> {
        self.inner.finish(item).await
    }

    fn assesses(&self) -> bool {
        self.inner.assesses()
    }

    async fn assess(&self, item: &Item) -> escrow_sync_core::Result<Option<String>> {
        self.inner.assess(item).await
    }
}

/// The region snapshots are read and copied in.
fn region(config: &Config) -> String {
    config.primary.region.clone().unwrap_or_else(|| config.escrow.region.clone())
}

/// The ids an `[[ec2]]` job selects of one type (`ami-` or `snap-`): `None`
/// when the type is left out, an empty list for "everything (by tags)".
/// A job that lists ids selects by id only: a type none of its ids names
/// has nothing selected (an empty id list would select every resource).
pub(crate) fn ec2_ids(
    job: &crate::config::Ec2Job,
    what: &str,
    prefix: &str,
) -> Option<Vec<String>> {
    let ids: Vec<String> = job.ids.iter().filter(|i| i.starts_with(prefix)).cloned().collect();
    (job.includes(what) && (job.ids.is_empty() || !ids.is_empty())).then_some(ids)
}

/// The parts of a snapshot job; empty for other jobs.
fn parts(config: &Config, job: JobRef<'_>, sessions: &Sessions) -> Vec<Part> {
    let retention = retention_of(job).unwrap_or_default();
    let windowed = |inner: Box<dyn Source>| Windowed {
        inner,
        retention,
        left_out: Default::default(),
        listed: Default::default(),
    };
    let region = region(config);
    let (primary, escrow) =
        (sessions.primary.account_id().to_string(), sessions.escrow.account_id().to_string());
    let key = config.escrow.kms_key_id.clone();
    let mut parts = Vec::new();
    match job {
        JobRef::Ec2(job) => {
            let ec2 = escrow_sync_ec2::client(&sessions.primary);
            let kms = escrow_sync_ec2::kms_client(&sessions.primary);
            let escrow_ec2 = escrow_sync_ec2::client(&sessions.escrow);
            if let Some(ids) = ec2_ids(job, "images", "ami-") {
                let source = escrow_sync_ec2::AmiSource::from_client(
                    ec2.clone(),
                    kms.clone(),
                    &region,
                    &primary,
                    &escrow,
                )
                .with_tags(job.tags.clone())
                .with_ids(ids)
                .with_unshare_after_copy(job.unshare_after_copy)
                .with_reencrypt_key_id(job.reencrypt_key_id.clone());
                let store = escrow_sync_ec2::AmiSink::from_client(escrow_ec2.clone(), &region)
                    .with_kms_key_id(key.clone());
                let in_flight = job.max_in_flight.unwrap_or(100);
                parts.push(Part {
                    what: "AMIs",
                    source: windowed(Box::new(source)),
                    store: Box::new(store),
                    in_flight,
                });
            }
            if let Some(ids) = ec2_ids(job, "snapshots", "snap-") {
                let source = escrow_sync_ec2::EbsSnapshotSource::from_client(
                    ec2, kms, &region, &primary, &escrow,
                )
                .with_tags(job.tags.clone())
                .with_ids(ids)
                .with_unshare_after_copy(job.unshare_after_copy)
                .with_reencrypt_key_id(job.reencrypt_key_id.clone());
                let store = escrow_sync_ec2::EbsSnapshotSink::from_client(escrow_ec2, &region)
                    .with_kms_key_id(key.clone());
                let in_flight = job.max_in_flight.unwrap_or(20);
                parts.push(Part {
                    what: "EBS snapshots",
                    source: windowed(Box::new(source)),
                    store: Box::new(store),
                    in_flight,
                });
            }
        }
        JobRef::Rds(job) => {
            let kinds = [
                ("db", escrow_sync_rds::RdsKind::Db, "RDS DB snapshots", 20),
                ("cluster", escrow_sync_rds::RdsKind::Cluster, "Aurora cluster snapshots", 5),
            ];
            for (name, kind, what, default_in_flight) in kinds {
                if !job.includes(name) {
                    continue;
                }
                let source = escrow_sync_rds::RdsSnapshotSource::from_client(
                    escrow_sync_rds::client(&sessions.primary),
                    escrow_sync_rds::kms_client(&sessions.primary),
                    kind,
                    &region,
                    &primary,
                    &escrow,
                )
                .with_tags(job.tags.clone())
                .with_ids(job.ids.clone())
                .with_unshare_after_copy(job.unshare_after_copy)
                .with_reencrypt_key_id(job.reencrypt_key_id.clone());
                let store = escrow_sync_rds::RdsSnapshotSink::from_client(
                    escrow_sync_rds::client(&sessions.escrow),
                    kind,
                    &region,
                )
                .with_kms_key_id(key.clone())
                .with_source_account(Some(primary.clone()));
                let in_flight = job.max_in_flight.unwrap_or(default_in_flight);
                parts.push(Part {
                    what,
                    source: windowed(Box::new(source)),
                    store: Box::new(store),
                    in_flight,
                });
            }
        }
        JobRef::Redshift(job) => {
            let source = escrow_sync_redshift::RedshiftSnapshotSource::from_client(
                escrow_sync_redshift::client(&sessions.primary),
                escrow_sync_redshift::kms_client(&sessions.primary),
                &region,
                &primary,
                &escrow,
            )
            .with_tags(job.tags.clone())
            .with_ids(job.ids.clone())
            .with_unshare_after_copy(job.independent_copy && job.unshare_after_copy);
            let store = escrow_sync_redshift::RedshiftSnapshotSink::from_client(
                escrow_sync_redshift::client(&sessions.escrow),
                &region,
            )
            .with_accounts(&primary, &escrow)
            .with_independent_copy(job.independent_copy)
            .with_kms_key_id(key);
            let in_flight = job.max_in_flight.unwrap_or(5);
            parts.push(Part {
                what: "Redshift snapshots",
                source: windowed(Box::new(source)),
                store: Box::new(store),
                in_flight,
            });
        }
        JobRef::S3(_) | JobRef::DynamoDb(_) | JobRef::CloudTrail(_) => {}
    }
    parts
}

/// The escrow stores of a snapshot job, built with escrow credentials only
/// (for `verify --offline`): `(what, store)` per type.
pub(crate) fn escrow_stores(
    config: &Config,
    job: JobRef<'_>,
    escrow: &escrow_sync_aws::Session,
) -> Vec<(&'static str, Box<dyn Sink>)> {
    let region = region(config);
    let key = config.escrow.kms_key_id.clone();
    let primary = config.primary.account_id.clone();
    let mut stores: Vec<(&'static str, Box<dyn Sink>)> = Vec::new();
    match job {
        JobRef::Ec2(job) => {
            let ec2 = escrow_sync_ec2::client(escrow);
            if job.includes("images") {
                let sink = escrow_sync_ec2::AmiSink::from_client(ec2.clone(), &region)
                    .with_kms_key_id(key.clone());
                stores.push(("AMIs", Box::new(sink)));
            }
            if job.includes("snapshots") {
                let sink = escrow_sync_ec2::EbsSnapshotSink::from_client(ec2, &region)
                    .with_kms_key_id(key);
                stores.push(("EBS snapshots", Box::new(sink)));
            }
        }
        JobRef::Rds(job) => {
            for (name, kind, what) in [
                ("db", escrow_sync_rds::RdsKind::Db, "RDS DB snapshots"),
                ("cluster", escrow_sync_rds::RdsKind::Cluster, "Aurora cluster snapshots"),
            ] {
                if job.includes(name) {
                    let sink = escrow_sync_rds::RdsSnapshotSink::from_client(
                        escrow_sync_rds::client(escrow),
                        kind,
                        &region,
                    )
                    .with_kms_key_id(key.clone())
                    .with_source_account(Some(primary.clone()));
                    stores.push((what, Box::new(sink)));
                }
            }
        }
        JobRef::Redshift(job) => {
            let sink = escrow_sync_redshift::RedshiftSnapshotSink::from_client(
                escrow_sync_redshift::client(escrow),
                &region,
            )
            .with_accounts(&primary, escrow.account_id())
            .with_independent_copy(job.independent_copy)
            .with_kms_key_id(key);
            stores.push(("Redshift snapshots", Box::new(sink)));
        }
        JobRef::S3(_) | JobRef::DynamoDb(_) | JobRef::CloudTrail(_) => {}
    }
    stores
}

/// Adds `part`'s counts and lists to `total`.
fn merge(total: &mut Option<Report>, part: Report) {
    let Some(t) = total else {
        *total = Some(part);
        return;
    };
    t.source = format!("{}, {}", t.source, part.source);
    t.destination = format!("{}, {}", t.destination, part.destination);
    t.absorb(part);
}

/// Runs every part of a snapshot job in `mode`, one type after another.
async fn execute_parts(
    parts: &[Part],
    mode: Mode,
    cancel: &CancellationToken,
    progress: Option<ProgressFn>,
    item_log: Option<escrow_sync_core::ItemLog>,
) -> Result<Report, Error> {
    let mut total = None;
    for part in parts {
        let mut options =
            ExecutorOptions::new().with_concurrency(part.in_flight).with_listed_in_escrow(true);
        if let Some(log) = &item_log {
            options = options.with_item_log(log.clone());
        }
        let mut executor = Executor::new(options).with_cancellation(cancel.clone());
        if let Some(p) = &progress {
            executor = executor.with_progress(p.clone());
        }
        let store: &dyn Sink = part.store.as_ref();
        let mut report = executor.execute(mode, &part.source, store, &Scope::all()).await?;
        let left_out = part.source.left_out.load(std::sync::atomic::Ordering::Relaxed);
        if left_out > 0 {
            report.notes.push(format!(
                "{left_out} older {} of the selection left out: the job's keep_* retention \
                 would not keep their copies",
                part.what
            ));
        }
        merge(&mut total, report);
        if cancel.is_cancelled() {
            break;
        }
    }
    Ok(total.expect("a snapshot job has at least one part"))
}

/// Runs one snapshot job (`plan`, `run` or `verify`).
pub(crate) async fn run(
    config: &Config,
    job: JobRef<'_>,
    sessions: &Sessions,
    mode: Mode,
    cancel: CancellationToken,
    progress: Option<ProgressFn>,
    item_log: Option<escrow_sync_core::ItemLog>,
) -> Result<Report, Error> {
    let parts = parts(config, job, sessions);
    let mut report = execute_parts(&parts, mode, &cancel, progress, item_log).await?;
    let listed: std::collections::BTreeSet<String> =
        parts.iter().flat_map(|p| p.source.listed.lock().expect("listed").clone()).collect();
    let cancelled = report.cancelled;
    for id in ids_of(job).iter().filter(|id| !cancelled && !listed.contains(*id)) {
        let error = Error::new(
            escrow_sync_core::ErrorKind::NotFound,
            "list",
            format!("{id} in the primary ({})", report.source),
            "no such snapshot or image is selectable (deleted, not available yet, or a typo): \
             fix or remove the id in ids",
        );
        report.failed += 1;
        report.failures.push(escrow_sync_core::Failure::new(id.clone(), &error, 0));
    }
    if let JobRef::Redshift(job) = job
        && !job.independent_copy
        && mode == Mode::Run
    {
        report.notes.push(
            "escrow holds shares of the primary's Redshift snapshots, which the primary can \
             revoke: set independent_copy = true for copies escrow owns"
                .into(),
        );
    }
    Ok(report)
}

/// The outcome of `prune` for one job.
#[derive(Debug, Serialize)]
pub struct PruneOutcome {
    /// The job's name.
    pub name: String,
    /// `ec2`, `rds` or `redshift`.
    pub kind: &'static str,
    /// The retention rules applied.
    pub retention: Retention,
    /// Whether verify found every selected source in escrow, complete and
    /// under the escrow key (else nothing is deleted).
    pub verified: bool,
    /// Copies kept, with why.
    pub kept: Vec<Kept>,
    /// Copies deleted (`--apply`) or that would be (dry run).
    pub deleted: Vec<EscrowCopy>,
    /// Deletions that failed, each with its error.
    pub failures: Vec<PruneFailure>,
    /// What the operator should know (why nothing was deleted...).
    pub notes: Vec<String>,
    /// A fatal error of this job (nothing deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A copy `prune --apply` could not delete.
#[derive(Debug, Serialize)]
pub struct PruneFailure {
    /// The escrow copy's id.
    pub id: String,
    /// The error.
    pub error: String,
}

/// The ids a snapshot job names.
fn ids_of(job: JobRef<'_>) -> &[String] {
    match job {
        JobRef::Ec2(j) => &j.ids,
        JobRef::Rds(j) => &j.ids,
        JobRef::Redshift(j) => &j.ids,
        JobRef::S3(_) | JobRef::DynamoDb(_) | JobRef::CloudTrail(_) => &[],
    }
}

fn kind_of(job: JobRef<'_>) -> &'static str {
    match job {
        JobRef::Ec2(_) => "ec2",
        JobRef::Rds(_) => "rds",
        JobRef::Redshift(_) => "redshift",
        JobRef::S3(_) => "s3",
        JobRef::DynamoDb(_) => "dynamodb",
        JobRef::CloudTrail(_) => "cloudtrail",
    }
}

fn retention_of(job: JobRef<'_>) -> Option<Retention> {
    match job {
        JobRef::Ec2(j) => Some(j.retention()),
        JobRef::Rds(j) => Some(j.retention()),
        JobRef::Redshift(j) => Some(j.retention()),
        JobRef::S3(_) | JobRef::DynamoDb(_) | JobRef::CloudTrail(_) => None,
    }
}

/// The snapshot jobs `prune` looks at: all of them, or the one named,
/// which must be a snapshot job.
pub(crate) fn prunable<'a>(
    config: &'a Config,
    job: Option<&str>,
) -> Result<Vec<JobRef<'a>>, Error> {
    let selected = config.select(job)?;
    if let (Some(name), [one]) = (job, selected.as_slice())
        && retention_of(*one).is_none()
    {
        return Err(Error::invalid_config(format!(
            "job {name} is a {} job: prune applies to [[ec2]], [[rds]] and [[redshift]] jobs \
             (escrow keeps every object and item)",
            kind_of(*one)
        )));
    }
    Ok(selected.into_iter().filter(|j| retention_of(*j).is_some()).collect())
}

/// `prune` for one snapshot job: verify, select, and with `apply` delete.
pub(crate) async fn prune(
    config: &Config,
    job: JobRef<'_>,
    sessions: &Sessions,
    apply: bool,
    cancel: &CancellationToken,
) -> PruneOutcome {
    let retention = retention_of(job).unwrap_or_default();
    let mut outcome = PruneOutcome {
        name: job.name(),
        kind: kind_of(job),
        retention,
        verified: false,
        kept: Vec::new(),
        deleted: Vec::new(),
        failures: Vec::new(),
        notes: Vec::new(),
        error: None,
    };
    if !retention.is_set() {
        outcome.notes.push("no keep_* set: nothing to prune".into());
        return outcome;
    }
    let parts = parts(config, job, sessions);
    match execute_parts(&parts, Mode::Verify, cancel, None, None).await {
        Ok(report) if report.is_clean() => outcome.verified = true,
        Ok(report) => outcome.notes.push(format!(
            "nothing deleted: the latest run did not leave a verified copy of every selected \
             source ({} missing, {} different, {} unprotected, {} failed): run `escrow-sync run` \
             until verify is clean, then prune",
            report.missing, report.different, report.unprotected, report.failed
        )),
        Err(e) => {
            outcome.error = Some(format!("verify before pruning: {}", e.chain()));
            return outcome;
        }
    }
    for part in &parts {
        // Only copies of what the job selects today: another job's copies,
        // and those of volumes or databases the primary no longer has (the
        // last copies of something deleted), are never pruned here.
        let selected: Result<Vec<Item>, Error> =
            part.source.inner.list(&Scope::all()).try_collect().await;
        let lineages: std::collections::BTreeSet<String> = match selected {
            Ok(items) => items.into_iter().map(|i| i.lineage.unwrap_or(i.key)).collect(),
            Err(e) => {
                outcome.error = Some(format!("listing the primary's {}: {}", part.what, e.chain()));
                return outcome;
            }
        };
        let copies = match part.store.copies().await {
            Ok(c) => c,
            Err(e) => {
                outcome.error = Some(format!("listing escrow {}: {}", part.what, e.chain()));
                return outcome;
            }
        };
        let (copies, others): (Vec<_>, Vec<_>) =
            copies.into_iter().partition(|c| lineages.contains(&c.lineage));
        if !others.is_empty() {
            outcome.notes.push(format!(
                "{} escrow {} of volumes, databases or selections this job does not select \
                 today are kept",
                others.len(),
                part.what
            ));
        }
        let plan = escrow_sync_core::select_retained(&copies, &retention);
        outcome.kept.extend(plan.keep);
        if !outcome.verified {
            continue;
        }
        for copy in plan.delete {
            if apply {
                if cancel.is_cancelled() {
                    outcome.notes.push("interrupted: the remaining copies were kept".into());
                    return outcome;
                }
                if let Err(e) = delete_with_retry(part.store.as_ref(), &copy).await {
                    outcome.failures.push(PruneFailure { id: copy.id.clone(), error: e.chain() });
                    continue;
                }
            }
            outcome.deleted.push(copy);
        }
    }
    if !apply && !outcome.deleted.is_empty() {
        outcome.notes.push("dry run: nothing was deleted (add --apply to delete)".into());
    }
    outcome
}

/// Deletes one copy, retrying retryable errors a few times.
async fn delete_with_retry(store: &dyn Store, copy: &EscrowCopy) -> Result<(), Error> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match store.delete_copy(copy).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && attempt < 5 => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The exit code of a prune: 2 for a job's fatal error, 1 when a deletion
/// failed, 3 when a job's escrow did not verify (nothing deleted), else 0.
pub(crate) fn prune_exit_code(outcomes: &[PruneOutcome]) -> u8 {
    if outcomes.iter().any(|o| o.error.is_some()) {
        exit::FATAL
    } else if outcomes.iter().any(|o| !o.failures.is_empty()) {
        exit::ITEMS_FAILED
    } else if outcomes.iter().any(|o| o.retention.is_set() && !o.verified) {
        exit::DIFFERENCES
    } else {
        exit::OK
    }
}

/// The JSON document of a prune.
pub(crate) fn prune_json(
    outcomes: &[PruneOutcome],
    apply: bool,
    fatal: Option<&Error>,
    code: u8,
) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        ok: bool,
        command: &'static str,
        apply: bool,
        jobs: &'a [PruneOutcome],
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        exit_code: u8,
    }
    let doc = Doc {
        ok: code == exit::OK,
        command: "prune",
        apply,
        jobs: outcomes,
        error: fatal.map(Error::chain),
        exit_code: code,
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The text summary of a prune.
pub(crate) fn prune_text(outcomes: &[PruneOutcome], apply: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let verb = if apply { "deleted" } else { "would delete" };
    for o in outcomes {
        let _ = writeln!(s, "{} ({}):", o.name, o.kind);
        for copy in &o.deleted {
            let _ = writeln!(
                s,
                "  {verb} {} (copy of {}, {}, created {})",
                copy.id, copy.source, copy.lineage, copy.created
            );
        }
        for k in &o.kept {
            let _ = writeln!(
                s,
                "  keep {} (copy of {}): {}",
                k.copy.id,
                k.copy.source,
                k.reasons.join(", ")
            );
        }
        for f in &o.failures {
            let _ = writeln!(s, "  failed to delete {}: {}", f.id, f.error);
        }
        for n in &o.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        if let Some(e) = &o.error {
            let _ = writeln!(s, "  error: {e}");
        }
        let _ = writeln!(s, "  prune: {} kept, {} {verb}", o.kept.len(), o.deleted.len());
    }
    if outcomes.is_empty() {
        let _ = writeln!(s, "no [[ec2]], [[rds]] or [[redshift]] job: nothing to prune");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[escrow]
region = "us-east-1"
[primary]
account_id = "111111111111"
role_arn = "arn:aws:iam::111111111111:role/reader"
[[s3]]
name = "assets"
source_bucket = "a"
dest_bucket = "b"
[[ec2]]
keep_last = 2
[[redshift]]
"#;

    #[test]
    fn prune_looks_at_snapshot_jobs_only_and_refuses_naming_another() {
        let config = Config::parse(CONFIG, "c").unwrap();
        let names: Vec<_> = prunable(&config, None).unwrap().iter().map(|j| j.name()).collect();
        assert_eq!(names, ["ec2", "redshift"]);
        let err = prunable(&config, Some("assets")).unwrap_err();
        assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("prune applies to [[ec2]]"), "{err}");
        assert!(prunable(&config, Some("nope")).is_err());
    }

    #[test]
    fn an_ec2_id_list_selects_by_id_only() {
        let job = |extra: &str| {
            let text = CONFIG.replace("[[ec2]]\nkeep_last = 2\n", &format!("[[ec2]]\n{extra}\n"));
            let config = Config::parse(&text, "c").unwrap();
            config.ec2.into_iter().next().unwrap()
        };
        let both = |j: &crate::config::Ec2Job| {
            (ec2_ids(j, "images", "ami-"), ec2_ids(j, "snapshots", "snap-"))
        };
        // Snapshot ids only: no AMI is selected (an empty list would be all).
        let j = job("ids = [\"snap-1\"]");
        assert_eq!(both(&j), (None, Some(vec!["snap-1".to_string()])));
        let j = job("ids = [\"ami-1\"]");
        assert_eq!(both(&j), (Some(vec!["ami-1".to_string()]), None));
        let j = job("ids = [\"ami-1\", \"snap-1\"]");
        assert_eq!(both(&j), (Some(vec!["ami-1".into()]), Some(vec!["snap-1".into()])));
        // No ids: everything (by tags) of each type included.
        assert_eq!(both(&job("")), (Some(vec![]), Some(vec![])));
        assert_eq!(both(&job("include = [\"snapshots\"]")), (None, Some(vec![])));
    }

    #[test]
    fn exit_codes_say_what_prune_did() {
        let outcome = |verified, failures: usize, error: bool| PruneOutcome {
            name: "j".into(),
            kind: "ec2",
            retention: Retention { keep_last: Some(1), ..Default::default() },
            verified,
            kept: Vec::new(),
            deleted: Vec::new(),
            failures: (0..failures)
                .map(|i| PruneFailure { id: format!("snap-{i}"), error: "denied".into() })
                .collect(),
            notes: Vec::new(),
            error: error.then(|| "boom".to_string()),
        };
        assert_eq!(prune_exit_code(&[outcome(true, 0, false)]), exit::OK);
        assert_eq!(prune_exit_code(&[outcome(false, 0, false)]), exit::DIFFERENCES);
        assert_eq!(prune_exit_code(&[outcome(true, 1, false)]), exit::ITEMS_FAILED);
        assert_eq!(prune_exit_code(&[outcome(true, 0, true)]), exit::FATAL);
    }
}
