//! Snapshot jobs (`[[ec2]]`, `[[rds]]`, `[[redshift]]`): one executor pass
//! per resource type, each with its own in-flight limit (AMIs 100, EBS 20,
//! RDS 20, Aurora 5, Redshift 5 unless `max_in_flight` says otherwise),
//! merged into one report; and `escrow-sync prune`.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use escrow_sync_aws::Sessions;
use escrow_sync_core::{
    CancellationToken, Error, EscrowCopy, ExecutorOptions, Item, ItemStream, Job, JobContext, Kept,
    Mode, Payload, PruneLimits, Report, Retained, Retention, Scope, Sink, Source,
};

use crate::Verdict;
use crate::spec::{Config, JobRef};

/// An escrow store a part copies into and `prune` deletes from.
pub(crate) trait Store: Sink + Retained {}
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
    /// The mass-change breaker: at most this many new copies per lineage
    /// (`None`: off).
    cap: Option<u32>,
    /// What escrow holds (its listing's keys), set before a run or plan
    /// when the breaker is on: an item not among them is a new copy.
    in_escrow: std::sync::Mutex<Option<std::collections::BTreeSet<String>>>,
    /// New copies the breaker held back from the listing.
    held_back: std::sync::Mutex<Vec<Item>>,
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
            let (mut kept, gone) = escrow_sync_core::within_retention(items, &self.retention);
            self.left_out.fetch_add(gone.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let in_escrow = self.in_escrow.lock().expect("in_escrow").clone();
            if let (Some(cap), Some(in_escrow)) = (self.cap, in_escrow) {
                let (new, old): (Vec<Item>, Vec<Item>) =
                    kept.into_iter().partition(|i| !in_escrow.contains(&i.key));
                let (go, held) = escrow_sync_core::cap_new_per_lineage(new, cap);
                kept = old.into_iter().chain(go).collect();
                *self.held_back.lock().expect("held_back") = held;
            }
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

/// The region snapshots are read and copied in: the config's, else the
/// one `session` resolved (the SDK's region chain).
fn region(config: &Config, session: &escrow_sync_aws::Session) -> String {
    config.region_or(session)
}

/// The ids an `[[ec2]]` job selects of one type (`ami-` or `snap-`): `None`
/// when the type is left out, an empty list for "everything (by tags)".
/// A job that lists ids selects by id only: a type none of its ids names
/// has nothing selected (an empty id list would select every resource).
#[cfg(feature = "ec2")]
pub(crate) fn ec2_ids(job: &crate::spec::Ec2Job, what: &str, prefix: &str) -> Option<Vec<String>> {
    let ids: Vec<String> = job.ids.iter().filter(|i| i.starts_with(prefix)).cloned().collect();
    (job.includes(what) && (job.ids.is_empty() || !ids.is_empty())).then_some(ids)
}

/// The parts of a snapshot job; empty for other jobs. `cap`: the
/// mass-change breaker's most new copies per lineage (`None`: off).
// A build without some snapshot kinds leaves their setup unused.
#[cfg_attr(
    not(all(feature = "ec2", feature = "rds", feature = "redshift")),
    allow(unused_variables, unused_mut)
)]
fn parts(config: &Config, job: JobRef<'_>, sessions: &Sessions, cap: Option<u32>) -> Vec<Part> {
    let retention = retention_of(job).unwrap_or_default();
    let windowed = |inner: Box<dyn Source>| Windowed {
        inner,
        retention,
        left_out: Default::default(),
        listed: Default::default(),
        cap,
        in_escrow: Default::default(),
        held_back: Default::default(),
    };
    let job_tag = Some(job.name());
    let region = region(config, &sessions.primary);
    let (primary, escrow) =
        (sessions.primary.account_id().to_string(), sessions.escrow.account_id().to_string());
    let key = config.escrow.kms_key_id.clone();
    let mut parts = Vec::new();
    match job {
        #[cfg(feature = "ec2")]
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
                    .with_kms_key_id(key.clone())
                    .with_job(job_tag.clone())
                    .with_lock(job.snapshot_lock());
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
                    .with_kms_key_id(key.clone())
                    .with_job(job_tag.clone())
                    .with_lock(job.snapshot_lock());
                let in_flight = job.max_in_flight.unwrap_or(20);
                parts.push(Part {
                    what: "EBS snapshots",
                    source: windowed(Box::new(source)),
                    store: Box::new(store),
                    in_flight,
                });
            }
        }
        #[cfg(feature = "rds")]
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
                .with_source_account(Some(primary.clone()))
                .with_job(job_tag.clone());
                let in_flight = job.max_in_flight.unwrap_or(default_in_flight);
                parts.push(Part {
                    what,
                    source: windowed(Box::new(source)),
                    store: Box::new(store),
                    in_flight,
                });
            }
        }
        #[cfg(feature = "redshift")]
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
            .with_kms_key_id(key)
            .with_job(job_tag);
            let in_flight = job.max_in_flight.unwrap_or(5);
            parts.push(Part {
                what: "Redshift snapshots",
                source: windowed(Box::new(source)),
                store: Box::new(store),
                in_flight,
            });
        }
        // Other kinds, and snapshot kinds this build lacks (refused when
        // the config was parsed), have no parts.
        _ => {}
    }
    parts
}

/// The escrow stores of a snapshot job, built with escrow credentials only
/// (for `verify --offline` and `prune`): `(what, store)` per type.
// A build without some snapshot kinds leaves their setup unused.
#[cfg_attr(
    not(all(feature = "ec2", feature = "rds", feature = "redshift")),
    allow(unused_variables, unused_mut)
)]
pub(crate) fn escrow_stores(
    config: &Config,
    job: JobRef<'_>,
    escrow: &escrow_sync_aws::Session,
) -> Vec<(&'static str, Box<dyn Store>)> {
    let region = region(config, escrow);
    let key = config.escrow.kms_key_id.clone();
    let primary = config.primary.account_id.clone();
    let mut stores: Vec<(&'static str, Box<dyn Store>)> = Vec::new();
    match job {
        #[cfg(feature = "ec2")]
        JobRef::Ec2(job) => {
            let ec2 = escrow_sync_ec2::client(escrow);
            if job.includes("images") {
                let sink = escrow_sync_ec2::AmiSink::from_client(ec2.clone(), &region)
                    .with_kms_key_id(key.clone())
                    .with_lock(job.snapshot_lock());
                stores.push(("AMIs", Box::new(sink)));
            }
            if job.includes("snapshots") {
                let sink = escrow_sync_ec2::EbsSnapshotSink::from_client(ec2, &region)
                    .with_kms_key_id(key)
                    .with_lock(job.snapshot_lock());
                stores.push(("EBS snapshots", Box::new(sink)));
            }
        }
        #[cfg(feature = "rds")]
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
        #[cfg(feature = "redshift")]
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
        // Other kinds, and snapshot kinds this build lacks (refused when
        // the config was parsed), have no parts.
        _ => {}
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
async fn execute_parts(parts: &[Part], mode: Mode, ctx: &JobContext) -> Result<Report, Error> {
    // Snapshot stores keep no checksums: there is nothing to compare.
    let ctx = ctx.clone().with_verify_checksums(false);
    let cancel = ctx.cancellation();
    let mut total = None;
    for part in parts {
        let options =
            ExecutorOptions::new().with_concurrency(part.in_flight).with_listed_in_escrow(true);
        let executor = ctx.executor(options);
        let store: &dyn Sink = part.store.as_ref();
        if part.source.cap.is_some() && matches!(mode, Mode::Run | Mode::Plan) {
            // The breaker counts new copies: what escrow does not hold yet.
            let held: std::collections::BTreeSet<String> =
                store.list(&Scope::all()).map_ok(|i| i.key).try_collect().await?;
            *part.source.in_escrow.lock().expect("in_escrow") = Some(held);
        }
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

/// A snapshot job (`[[ec2]]`, `[[rds]]` or `[[redshift]]`) as a [`Job`]:
/// one executor pass per resource type, merged into one report. Unless the
/// context accepts a mass change (or the job's `max_change_percent = 100`),
/// a run copies at most `max_new_copies_per_source` new copies of each
/// source volume or database (the newest), holds back the rest (each a
/// failure, logged as failed) and reports one `mass-change` finding.
pub(crate) struct SnapshotJob<'a> {
    pub(crate) config: &'a Config,
    pub(crate) job: JobRef<'a>,
    pub(crate) sessions: &'a Sessions,
}

#[async_trait::async_trait]
impl Job for SnapshotJob<'_> {
    fn describe(&self) -> String {
        format!("{} ({} snapshots)", self.job.name(), self.job.kind())
    }

    async fn execute(&self, mode: Mode, ctx: &JobContext) -> Result<Report, Error> {
        run(self.config, self.job, self.sessions, mode, ctx).await
    }
}

async fn run(
    config: &Config,
    job: JobRef<'_>,
    sessions: &Sessions,
    mode: Mode,
    ctx: &JobContext,
) -> Result<Report, Error> {
    let item_log = ctx.item_log().cloned();
    let cap = if ctx.accept_mass_change() { None } else { new_copies_cap(job) };
    let parts = parts(config, job, sessions, cap);
    let mut report = execute_parts(&parts, mode, ctx).await?;
    if mode == Mode::Run && !report.cancelled {
        keep_locked(config, job, &parts, &mut report).await;
    }
    if let Some(cap) = cap {
        let held: Vec<(&str, Item)> = parts
            .iter()
            .flat_map(|p| {
                let held = std::mem::take(&mut *p.source.held_back.lock().expect("held_back"));
                held.into_iter().map(move |i| (p.what, i))
            })
            .collect();
        hold_back(&job.name(), cap, mode, held, item_log.as_ref(), &mut report);
    }
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

/// Keeps the job's escrow copies locked, as its stores are configured to
/// (`[[ec2]] lock`; other stores do nothing): each store's copies that this
/// job claims ([`claimant`]) and its keep_* retention keeps
/// ([`lock_upkept`]), complete ones locked where no lock is in force and
/// renewed where the lock lapses within the window. A copy the retention
/// lets go keeps its lock until it lapses, and `prune` deletes it after. A
/// failure is the run's failure (the copies stay deletable until a run
/// locks them).
async fn keep_locked(config: &Config, job: JobRef<'_>, parts: &[Part], report: &mut Report) {
    if !locks(job) {
        return;
    }
    let jobs = jobs_of_kind(config, job);
    let name = job.name();
    let retention = retention_of(job).unwrap_or_default();
    let keep_within = limits_of(job).keep_within_days;
    let now = std::time::SystemTime::now();
    let mut total = escrow_sync_core::LockUpkeep::default();
    let mut let_go = 0;
    for part in parts {
        let outcome = async {
            let copies: Vec<EscrowCopy> = part
                .store
                .copies()
                .await?
                .into_iter()
                .filter(|c| claimant(c, &jobs) == Some(name.as_str()))
                .collect();
            let (upkept, gone) = lock_upkept(&copies, &retention, keep_within, now);
            let_go += gone;
            part.store.keep_locked(&upkept).await
        }
        .await;
        match outcome {
            Ok(upkeep) => total.absorb(upkeep),
            Err(e) => {
                report.failed += 1;
                report.failures.push(escrow_sync_core::Failure::new(
                    format!("lock of escrow {}", part.what),
                    &e,
                    0,
                ));
            }
        }
    }
    if total.changed() {
        report.notes.push(format!(
            "locks: {} escrow copies locked, {} locks renewed, {} AMI copies given deregistration \
             protection ({} locks in force and not due)",
            total.locked, total.renewed, total.protected, total.unchanged
        ));
    }
    if let_go > 0 {
        report.notes.push(format!(
            "locks: {let_go} escrow copies the keep_* retention lets go are neither locked nor \
             renewed: each keeps its lock until it lapses, then `prune` deletes it"
        ));
    }
}

/// The copies whose locks a run keeps: those the retention keeps (what
/// `prune` keeps by the keep_* rules and the `keep_within_days` floor, at
/// `now`), and how many it lets go (their locks are left to lapse, so that
/// `prune` can delete them once they have).
fn lock_upkept(
    copies: &[EscrowCopy],
    retention: &Retention,
    keep_within_days: u32,
    now: std::time::SystemTime,
) -> (Vec<EscrowCopy>, usize) {
    let plan = escrow_sync_core::select_within(copies, retention, keep_within_days, now);
    (plan.keep.into_iter().map(|k| k.copy).collect(), plan.delete.len())
}

/// Whether a job keeps its copies locked.
fn locks(job: JobRef<'_>) -> bool {
    matches!(job, JobRef::Ec2(j) if j.lock.is_some())
}

/// Records what the breaker held back: one `mass-change` finding for the
/// job; in a run, each held-back item a failure (and failed in the item
/// log, so the run manifest shows the job unfinished).
fn hold_back(
    job: &str,
    cap: u32,
    mode: Mode,
    held: Vec<(&str, Item)>,
    item_log: Option<&escrow_sync_core::ItemLog>,
    report: &mut Report,
) {
    if held.is_empty() {
        return;
    }
    let lineages: std::collections::BTreeSet<&str> =
        held.iter().map(|(_, i)| i.lineage.as_deref().unwrap_or(&i.key)).collect();
    let first: Vec<&str> = held.iter().take(5).map(|(_, i)| i.key.as_str()).collect();
    let more = if held.len() > first.len() { ", ..." } else { "" };
    let why = format!(
        "held back: mass change: more than max_new_copies_per_source {cap} new copies of {} \
         source volume(s) or database(s) ({}) in one run; the newest {cap} of each were copied \
         (check the primary for a flood of new snapshots, then run with --accept-mass-change \
         to copy the rest)",
        lineages.len(),
        lineages.iter().take(5).copied().collect::<Vec<_>>().join(", "),
    );
    report.findings.push(
        escrow_sync_core::Finding::new(
            job,
            format!(
                "mass change: {} new copies held back ({}{more}), {} source volume(s) or \
                 database(s) over max_new_copies_per_source {cap}: the newest {cap} of each were \
                 copied; check the primary for a flood of new snapshots, then run with \
                 --accept-mass-change to copy the rest",
                held.len(),
                first.join(", "),
                lineages.len(),
            ),
        )
        .with_kind("mass-change"),
    );
    if mode != Mode::Run {
        report.notes.push(format!(
            "a run would hold back {} new copies (mass change: max_new_copies_per_source {cap})",
            held.len()
        ));
        return;
    }
    for (what, item) in held {
        let error = Error::new(
            escrow_sync_core::ErrorKind::PreconditionFailed,
            "copy",
            format!("{} ({what})", item.key),
            why.clone(),
        );
        report.failed += 1;
        report.failures.push(escrow_sync_core::Failure::new(item.key.clone(), &error, 0));
        if let Some(log) = item_log {
            let mut record =
                escrow_sync_core::ItemRecord::new(item, escrow_sync_core::ItemOutcome::Failed);
            record.error = Some(error.chain());
            log(record);
        }
    }
}

/// The mass-change breaker's most new copies per source of a snapshot job
/// (`None`: off, or not a snapshot job).
fn new_copies_cap(job: JobRef<'_>) -> Option<u32> {
    match job {
        JobRef::Ec2(j) => j.new_copies_cap(),
        JobRef::Rds(j) => j.new_copies_cap(),
        JobRef::Redshift(j) => j.new_copies_cap(),
        JobRef::S3(_) | JobRef::DynamoDb(_) | JobRef::CloudTrail(_) => None,
    }
}

/// The prune limits of a snapshot job (defaults for others).
fn limits_of(job: JobRef<'_>) -> PruneLimits {
    match job {
        JobRef::Ec2(j) => j.prune_limits(),
        JobRef::Rds(j) => j.prune_limits(),
        JobRef::Redshift(j) => j.prune_limits(),
        JobRef::S3(_) | JobRef::DynamoDb(_) | JobRef::CloudTrail(_) => PruneLimits::default(),
    }
}

/// The name and ids of every job of `job`'s kind in `config`: whose
/// copies an escrow copy of that kind may be.
fn jobs_of_kind(config: &Config, job: JobRef<'_>) -> Vec<(String, Vec<String>)> {
    match job {
        JobRef::Ec2(_) => config.ec2.iter().map(|j| (j.name(), j.ids.clone())).collect(),
        JobRef::Rds(_) => config.rds.iter().map(|j| (j.name(), j.ids.clone())).collect(),
        JobRef::Redshift(_) => config.redshift.iter().map(|j| (j.name(), j.ids.clone())).collect(),
        JobRef::S3(_) | JobRef::DynamoDb(_) | JobRef::CloudTrail(_) => Vec::new(),
    }
}

/// The job an escrow copy belongs to, from escrow's own records: its
/// `escrow-sync:job` tag; for a copy made before copies recorded their job,
/// the job whose `ids` name its recorded source (or lineage). A job that
/// selects by tags cannot claim an untagged copy (escrow does not record
/// the source's tags, and another config may share the escrow account):
/// `None`, and such copies are kept until tagged with the job's name.
fn claimant<'a>(copy: &EscrowCopy, jobs: &'a [(String, Vec<String>)]) -> Option<&'a str> {
    if let Some(tagged) = &copy.job {
        return jobs.iter().find(|(name, _)| name == tagged).map(|(name, _)| name.as_str());
    }
    jobs.iter()
        .find(|(_, ids)| ids.iter().any(|i| *i == copy.source || *i == copy.lineage))
        .map(|(name, _)| name.as_str())
}

/// Escrow-side evidence that the latest run left a verified copy: per
/// lineage, its newest copy (by source creation time) is complete. Returns
/// what is wrong.
fn newest_incomplete(copies: &[EscrowCopy]) -> Vec<String> {
    let mut newest: std::collections::BTreeMap<&str, &EscrowCopy> = Default::default();
    for c in copies {
        match newest.get(c.lineage.as_str()) {
            Some(n) if (&n.created, &n.id) >= (&c.created, &c.id) => {}
            _ => {
                newest.insert(&c.lineage, c);
            }
        }
    }
    newest
        .values()
        .filter(|c| !c.complete)
        .map(|c| format!("the newest escrow copy {} of {} is not complete", c.id, c.lineage))
        .collect()
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
    /// The limits applied besides them (`keep_within_days`,
    /// `max_delete_percent`).
    pub limits: PruneLimits,
    /// Whether escrow's own records show the latest run left a verified
    /// copy: the newest copy of every lineage complete, and (with a manifest
    /// bucket) the latest run manifest of the job without failure (else
    /// nothing is deleted).
    pub verified: bool,
    /// Copies kept, with why.
    pub kept: Vec<Kept>,
    /// Copies deleted (`--apply`) or that would be (dry run).
    pub deleted: Vec<EscrowCopy>,
    /// Deletions that failed, each with its error.
    pub failures: Vec<PruneFailure>,
    /// What the operator should know (why nothing was deleted...).
    pub notes: Vec<String>,
    /// Findings: `prune-limit` when the prune would delete more than
    /// `max_delete_percent` of the job's copies (then nothing is deleted).
    pub findings: Vec<escrow_sync_core::Finding>,
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

/// `prune` for one snapshot job, from escrow's own records only (escrow
/// credentials; the primary is never asked): the job's copies by their
/// provenance tags, the gate (the newest copy of every lineage complete,
/// and the latest run manifest without failure), the keep_* rules with the
/// safety floor and `keep_within_days`, `max_delete_percent`; with `apply`
/// delete.
pub(crate) async fn prune(
    config: &Config,
    job: JobRef<'_>,
    escrow: &escrow_sync_aws::Session,
    apply: bool,
    accept_mass_delete: bool,
    cancel: &CancellationToken,
) -> PruneOutcome {
    let retention = retention_of(job).unwrap_or_default();
    let limits = limits_of(job);
    let name = job.name();
    let mut outcome = PruneOutcome {
        name: name.clone(),
        kind: kind_of(job),
        retention,
        limits,
        verified: false,
        kept: Vec::new(),
        deleted: Vec::new(),
        failures: Vec::new(),
        notes: Vec::new(),
        findings: Vec::new(),
        error: None,
    };
    if !retention.is_set() {
        outcome.notes.push("no keep_* set: nothing to prune".into());
        return outcome;
    }
    let jobs = jobs_of_kind(config, job);
    let stores = escrow_stores(config, job, escrow);
    let mut mine = Vec::new();
    for (what, store) in &stores {
        let copies = match store.copies().await {
            Ok(c) => c,
            Err(e) => {
                outcome.error = Some(format!("listing escrow {what}: {}", e.chain()));
                return outcome;
            }
        };
        let (copies, others): (Vec<_>, Vec<_>) =
            copies.into_iter().partition(|c| claimant(c, &jobs) == Some(name.as_str()));
        let untagged = others.iter().filter(|c| c.job.is_none()).count();
        if others.len() > untagged {
            outcome.notes.push(format!(
                "{} escrow {what} of other jobs (by their escrow-sync:job tag) are kept",
                others.len() - untagged
            ));
        }
        if untagged > 0 {
            outcome.notes.push(format!(
                "{untagged} escrow {what} without an escrow-sync:job tag (made before copies \
                 recorded their job) that this job's ids do not name are kept: tag them \
                 escrow-sync:job={name} to let this job prune them"
            ));
        }
        mine.push((*what, store.as_ref(), copies));
    }
    // The gate, from escrow alone.
    let mut problems: Vec<String> =
        mine.iter().flat_map(|(_, _, copies)| newest_incomplete(copies)).collect();
    match crate::manifest::latest_run_problem(config, escrow, &name).await {
        Ok(Some(Some(why))) => problems.push(why),
        Ok(_) => {}
        Err(e) => {
            outcome.error = Some(format!("reading the run manifests: {}", e.chain()));
            return outcome;
        }
    }
    outcome.verified = problems.is_empty();
    if !outcome.verified {
        outcome.notes.push(format!(
            "nothing deleted: escrow does not show that the latest run left a verified copy of \
             every volume or database ({}): run `escrow-sync run` until it is clean, then prune",
            problems.join("; ")
        ));
    }
    let now = std::time::SystemTime::now();
    let mut plans = Vec::new();
    for (what, store, copies) in &mine {
        let plan =
            escrow_sync_core::select_within(copies, &retention, limits.keep_within_days, now);
        outcome.kept.extend(plan.keep);
        // A copy a lock keeps is never tried: kept, with its lock.
        let locked = if plan.delete.is_empty() {
            Default::default()
        } else {
            match store.locked(&plan.delete).await {
                Ok(l) => l,
                Err(e) => {
                    outcome.error =
                        Some(format!("reading the locks of escrow {what}: {}", e.chain()));
                    return outcome;
                }
            }
        };
        let (held, delete) = hold_locked(plan.delete, &locked);
        outcome.kept.extend(held);
        plans.push((*what, *store, delete));
    }
    let total: usize = mine.iter().map(|(_, _, c)| c.len()).sum();
    let deleting: usize = plans.iter().map(|(_, _, d)| d.len()).sum();
    if escrow_sync_core::over_delete_limit(deleting, total, limits.max_delete_percent) {
        let first: Vec<&str> =
            plans.iter().flat_map(|(_, _, d)| d.iter().map(|c| c.id.as_str())).take(5).collect();
        let more = if deleting > first.len() { ", ..." } else { "" };
        let problem = format!(
            "prune would delete {deleting} of the job's {total} escrow copies ({}{more}), more \
             than max_delete_percent {}: check the primary for a flood of new snapshots and the \
             keep_* rules, then prune with --accept-mass-delete",
            first.join(", "),
            limits.max_delete_percent
        );
        if accept_mass_delete {
            outcome.notes.push(format!("{problem} (accepted: --accept-mass-delete)"));
        } else {
            outcome
                .findings
                .push(escrow_sync_core::Finding::new(&name, problem).with_kind("prune-limit"));
            for (_, _, delete) in std::mem::take(&mut plans) {
                let reason =
                    format!("max_delete_percent {} (prune-limit)", limits.max_delete_percent);
                outcome.kept.extend(
                    delete.into_iter().map(|copy| Kept { copy, reasons: vec![reason.clone()] }),
                );
            }
        }
    }
    if !outcome.verified {
        return outcome;
    }
    for (_, store, delete) in plans {
        for copy in delete {
            if apply {
                if cancel.is_cancelled() {
                    outcome.notes.push("interrupted: the remaining copies were kept".into());
                    return outcome;
                }
                if let Err(e) = delete_with_retry(store, &copy).await {
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

/// Splits the copies the rules let go into those a lock keeps (`locked`:
/// id to why), kept with that reason, and those to delete.
fn hold_locked(
    delete: Vec<EscrowCopy>,
    locked: &std::collections::BTreeMap<String, String>,
) -> (Vec<Kept>, Vec<EscrowCopy>) {
    let (held, delete): (Vec<_>, Vec<_>) =
        delete.into_iter().partition(|c| locked.contains_key(&c.id));
    let held = held
        .into_iter()
        .map(|copy| {
            let why = locked.get(&copy.id).cloned().unwrap_or_default();
            Kept { copy, reasons: vec![why] }
        })
        .collect();
    (held, delete)
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

/// What a prune came to: fatal for a job's fatal error, failed when a
/// deletion failed, findings when a job's escrow did not verify or a job
/// reports a finding (`prune-limit`; nothing deleted), else ok.
pub(crate) fn prune_verdict(outcomes: &[PruneOutcome]) -> Verdict {
    if outcomes.iter().any(|o| o.error.is_some()) {
        Verdict::Fatal
    } else if outcomes.iter().any(|o| !o.failures.is_empty()) {
        Verdict::Failed
    } else if outcomes
        .iter()
        .any(|o| (o.retention.is_set() && !o.verified) || !o.findings.is_empty())
    {
        Verdict::Findings
    } else {
        Verdict::Ok
    }
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
    #[cfg(feature = "ec2")]
    fn an_ec2_id_list_selects_by_id_only() {
        let job = |extra: &str| {
            let text = CONFIG.replace("[[ec2]]\nkeep_last = 2\n", &format!("[[ec2]]\n{extra}\n"));
            let config = Config::parse(&text, "c").unwrap();
            config.ec2.into_iter().next().unwrap()
        };
        let both = |j: &crate::spec::Ec2Job| {
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
            limits: PruneLimits::default(),
            verified,
            kept: Vec::new(),
            deleted: Vec::new(),
            failures: (0..failures)
                .map(|i| PruneFailure { id: format!("snap-{i}"), error: "denied".into() })
                .collect(),
            notes: Vec::new(),
            findings: Vec::new(),
            error: error.then(|| "boom".to_string()),
        };
        assert_eq!(prune_verdict(&[outcome(true, 0, false)]), Verdict::Ok);
        assert_eq!(prune_verdict(&[outcome(false, 0, false)]), Verdict::Findings);
        assert_eq!(prune_verdict(&[outcome(true, 1, false)]), Verdict::Failed);
        assert_eq!(prune_verdict(&[outcome(true, 0, true)]), Verdict::Fatal);
        let mut limited = outcome(true, 0, false);
        limited
            .findings
            .push(escrow_sync_core::Finding::new("j", "too many").with_kind("prune-limit"));
        assert_eq!(prune_verdict(&[limited]), Verdict::Findings);
    }

    /// A primary of snapshots (key, lineage, seconds) listed as given.
    struct Snapshots(Vec<Item>);

    #[async_trait::async_trait]
    impl Source for Snapshots {
        fn describe(&self) -> String {
            "mem://primary".into()
        }
        fn list(&self, _: &Scope) -> ItemStream<'_> {
            futures::stream::iter(self.0.clone().into_iter().map(Ok)).boxed()
        }
        async fn read(&self, item: &Item) -> escrow_sync_core::Result<Payload> {
            Ok(Payload::Reference(escrow_sync_core::ServerSideRef::new(
                "mem", "primary", &item.key, &item.key,
            )))
        }
    }

    /// An escrow of snapshot copies: the source keys it holds.
    #[derive(Default)]
    struct Escrow(std::sync::Mutex<std::collections::BTreeSet<String>>);

    #[async_trait::async_trait]
    impl Sink for Escrow {
        fn describe(&self) -> String {
            "mem://escrow".into()
        }
        fn list(&self, _: &Scope) -> ItemStream<'_> {
            let held: Vec<_> = self.0.lock().unwrap().iter().cloned().collect();
            futures::stream::iter(
                held.into_iter()
                    .map(|k| Ok(Item::new(&k, escrow_sync_core::ItemKind::Snapshot, 1, &k))),
            )
            .boxed()
        }
        async fn write(
            &self,
            item: &Item,
            _: Payload,
        ) -> escrow_sync_core::Result<escrow_sync_core::Receipt> {
            self.0.lock().unwrap().insert(item.key.clone());
            Ok(escrow_sync_core::Receipt::new(1, Some(item.key.clone())))
        }
    }

    #[async_trait::async_trait]
    impl Retained for Escrow {
        fn describe(&self) -> String {
            "mem://escrow".into()
        }
        async fn copies(&self) -> escrow_sync_core::Result<Vec<EscrowCopy>> {
            Ok(Vec::new())
        }
        async fn delete_copy(&self, _: &EscrowCopy) -> escrow_sync_core::Result<()> {
            Ok(())
        }
    }

    fn snap(key: &str, lineage: &str, secs: u64) -> Item {
        Item::new(key, escrow_sync_core::ItemKind::Snapshot, 1, key)
            .with_lineage(Some(lineage.to_string()))
            .with_modified(Some(std::time::UNIX_EPOCH + Duration::from_secs(secs)))
    }

    fn part(items: Vec<Item>, escrow: Escrow, cap: Option<u32>) -> Part {
        Part {
            what: "EBS snapshots",
            source: Windowed {
                inner: Box::new(Snapshots(items)),
                retention: Retention::default(),
                left_out: Default::default(),
                listed: Default::default(),
                cap,
                in_escrow: Default::default(),
                held_back: Default::default(),
            },
            store: Box::new(escrow),
            in_flight: 4,
        }
    }

    #[tokio::test]
    async fn the_breaker_copies_the_newest_three_of_a_flooded_volume_and_holds_back_the_rest() {
        // vol-a: one copy in escrow (old), five fresh ones; vol-b: one new.
        let items = vec![
            snap("snap-old", "vol-a", 1),
            snap("snap-f1", "vol-a", 11),
            snap("snap-f2", "vol-a", 12),
            snap("snap-f3", "vol-a", 13),
            snap("snap-f4", "vol-a", 14),
            snap("snap-f5", "vol-a", 15),
            snap("snap-b", "vol-b", 5),
        ];
        let escrow = Escrow::default();
        escrow.0.lock().unwrap().insert("snap-old".into());
        let logged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logged.clone();
        let log: escrow_sync_core::ItemLog = std::sync::Arc::new(move |r| {
            sink.lock().unwrap().push(r);
        });
        let parts = [part(items.clone(), escrow, Some(3))];
        let ctx = JobContext::new().with_item_log(log.clone());
        let mut report = execute_parts(&parts, Mode::Run, &ctx).await.unwrap();
        let held = std::mem::take(&mut *parts[0].source.held_back.lock().unwrap());
        let held: Vec<_> = held.into_iter().map(|i| ("EBS snapshots", i)).collect();
        hold_back("volumes", 3, Mode::Run, held, Some(&log), &mut report);
        assert_eq!(report.copied, 4, "three of vol-a, one of vol-b: {report:?}");
        assert_eq!(report.failed, 2);
        let failed: Vec<_> = report.failures.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(failed, ["snap-f1", "snap-f2"], "the oldest fresh ones wait");
        assert!(report.failures[0].error.contains("held back: mass change"), "{report:?}");
        assert_eq!(report.findings.len(), 1, "one finding per job");
        let f = &report.findings[0];
        assert_eq!(f.kind.as_deref(), Some("mass-change"));
        assert!(f.problem.contains("2 new copies held back (snap-f1, snap-f2)"), "{}", f.problem);
        let log = logged.lock().unwrap().clone();
        let failed_logged: Vec<_> = log
            .iter()
            .filter(|r| r.outcome == escrow_sync_core::ItemOutcome::Failed)
            .map(|r| r.item.key.as_str())
            .collect();
        assert_eq!(failed_logged, ["snap-f1", "snap-f2"]);
        assert!(log.iter().all(|r| r.outcome != escrow_sync_core::ItemOutcome::Failed
            || r.error.as_deref().unwrap_or("").contains("held back")));

        // Off (accepted, or max_change_percent = 100): everything is copied.
        let parts = [part(items, Escrow::default(), None)];
        let report = execute_parts(&parts, Mode::Run, &JobContext::new()).await.unwrap();
        assert_eq!((report.copied, report.failed), (7, 0));
        assert!(parts[0].source.held_back.lock().unwrap().is_empty());
    }

    #[test]
    fn a_copy_is_a_jobs_by_its_job_tag_else_by_ids() {
        let copy = |job: Option<&str>, source: &str, lineage: &str| EscrowCopy {
            id: format!("c-{source}"),
            source: source.into(),
            lineage: lineage.into(),
            created: "2026-11-01T00:00:00Z".into(),
            complete: true,
            copied: None,
            job: job.map(str::to_string),
        };
        let one = vec![("volumes".to_string(), vec![]), ("db".to_string(), vec!["snap-9".into()])];
        assert_eq!(claimant(&copy(Some("db"), "snap-1", "vol-1"), &one), Some("db"));
        assert_eq!(claimant(&copy(Some("gone"), "snap-1", "vol-1"), &one), None);
        assert_eq!(claimant(&copy(None, "snap-9", "vol-1"), &one), Some("db"));
        assert_eq!(
            claimant(&copy(None, "vol-9", "vol-9"), &[("v".into(), vec!["vol-9".into()])]),
            Some("v")
        );
        // A tag-selecting job cannot tell an untagged copy is its own: kept.
        assert_eq!(claimant(&copy(None, "snap-1", "vol-1"), &one), None);
        let two = vec![("a".to_string(), vec![]), ("b".to_string(), vec![])];
        assert_eq!(claimant(&copy(Some("b"), "snap-1", "vol-1"), &two), Some("b"));
    }

    #[test]
    fn a_locked_copy_is_kept_with_its_lock_never_deleted() {
        let copy = |id: &str| EscrowCopy {
            id: id.into(),
            source: id.into(),
            lineage: "vol-a".into(),
            created: "2026-11-01T00:00:00Z".into(),
            complete: true,
            copied: None,
            job: None,
        };
        let locked = std::collections::BTreeMap::from([(
            "snap-locked".to_string(),
            "locked (compliance) until 2027-01-05T00:00:00Z".to_string(),
        )]);
        let (kept, delete) = hold_locked(vec![copy("snap-locked"), copy("snap-free")], &locked);
        assert_eq!(delete, [copy("snap-free")]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].copy.id, "snap-locked");
        assert_eq!(kept[0].reasons, ["locked (compliance) until 2027-01-05T00:00:00Z"]);
    }

    /// An escrow of `copies` that records which copies it is asked to
    /// keep locked.
    struct Locking {
        copies: Vec<EscrowCopy>,
        asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl Sink for Locking {
        fn describe(&self) -> String {
            "mem://locking".into()
        }
        fn list(&self, _: &Scope) -> ItemStream<'_> {
            futures::stream::empty().boxed()
        }
        async fn write(
            &self,
            item: &Item,
            _: Payload,
        ) -> escrow_sync_core::Result<escrow_sync_core::Receipt> {
            Ok(escrow_sync_core::Receipt::new(1, Some(item.key.clone())))
        }
    }

    #[async_trait::async_trait]
    impl Retained for Locking {
        fn describe(&self) -> String {
            "mem://locking".into()
        }
        async fn copies(&self) -> escrow_sync_core::Result<Vec<EscrowCopy>> {
            Ok(self.copies.clone())
        }
        async fn delete_copy(&self, _: &EscrowCopy) -> escrow_sync_core::Result<()> {
            Ok(())
        }
        async fn keep_locked(
            &self,
            copies: &[EscrowCopy],
        ) -> escrow_sync_core::Result<escrow_sync_core::LockUpkeep> {
            self.asked.lock().unwrap().extend(copies.iter().map(|c| c.id.clone()));
            Ok(escrow_sync_core::LockUpkeep { renewed: copies.len() as u64, ..Default::default() })
        }
    }

    #[tokio::test]
    async fn only_copies_the_retention_keeps_have_their_locks_renewed() {
        let text = CONFIG.replace(
            "[[ec2]]\nkeep_last = 2\n",
            "[[ec2]]\nname = \"vols\"\nkeep_last = 2\nkeep_within_days = 0\n\
             lock = { mode = \"compliance\", days = 30 }\n",
        );
        let config = Config::parse(&text, "c").unwrap();
        let job = JobRef::Ec2(&config.ec2[0]);
        let copy = |id: &str, day: u32, job: &str| EscrowCopy {
            id: id.into(),
            source: format!("src-{id}"),
            lineage: "vol-a".into(),
            created: format!("2026-11-{day:02}T00:00:00Z"),
            complete: true,
            copied: Some(format!("2026-11-{day:02}T01:00:00Z")),
            job: Some(job.to_string()),
        };
        // keep_last 2: c3 and c4 are kept, c1 and c2 let go (their locks
        // lapse, then prune deletes them); another job's copy is never this
        // job's to lock.
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = Locking {
            copies: vec![
                copy("c1", 1, "vols"),
                copy("c2", 2, "vols"),
                copy("c3", 3, "vols"),
                copy("c4", 4, "vols"),
                copy("o1", 4, "other"),
            ],
            asked: asked.clone(),
        };
        let mut parts = vec![part(Vec::new(), Escrow::default(), None)];
        parts[0].store = Box::new(store);
        let mut report = Report::new(Mode::Run, "mem://primary", "mem://locking");
        keep_locked(&config, job, &parts, &mut report).await;
        assert_eq!(report.failed, 0, "{report:?}");
        let mut asked = asked.lock().unwrap().clone();
        asked.sort();
        assert_eq!(asked, ["c3", "c4"]);
        let notes = report.notes.join("\n");
        assert!(notes.contains("0 escrow copies locked, 2 locks renewed"), "{notes}");
        assert!(notes.contains("2 escrow copies the keep_* retention lets go"), "{notes}");

        // keep_within_days keeps (and so locks) young copies too.
        let now = escrow_sync_core::time::from_epoch(
            escrow_sync_core::epoch_seconds("2026-11-05T00:00:00Z").unwrap(),
        );
        let copies: Vec<_> =
            ["c1", "c2", "c3", "c4"].iter().zip(1..).map(|(id, d)| copy(id, d, "vols")).collect();
        let retention = config.ec2[0].retention();
        let (kept, gone) = lock_upkept(&copies, &retention, 3, now);
        let mut kept: Vec<_> = kept.iter().map(|c| c.id.as_str()).collect();
        kept.sort();
        assert_eq!((kept, gone), (vec!["c2", "c3", "c4"], 1));
    }

    #[test]
    fn the_gate_needs_the_newest_copy_of_every_lineage_complete() {
        let copy = |id: &str, lineage: &str, created: &str, complete: bool| EscrowCopy {
            id: id.into(),
            source: id.into(),
            lineage: lineage.into(),
            created: created.into(),
            complete,
            copied: None,
            job: None,
        };
        let done = vec![
            copy("a1", "vol-a", "2026-11-01T00:00:00Z", false),
            copy("a2", "vol-a", "2026-11-02T00:00:00Z", true),
        ];
        assert!(newest_incomplete(&done).is_empty());
        let mut pending = done.clone();
        pending.push(copy("a3", "vol-a", "2026-11-03T00:00:00Z", false));
        let problems = newest_incomplete(&pending);
        assert_eq!(problems, ["the newest escrow copy a3 of vol-a is not complete"]);
    }
}
