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
    TrailStore,
};
use escrow_sync_core::{Error, Finding, Job, JobContext, Mode, Report, Result};
use escrow_sync_s3::check_source_bucket;

use crate::spec::{CloudTrailJob, Config};

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
    let primary_session = sessions.primary.clone();
    let client_for =
        move |region: &str| escrow_sync_cloudtrail::client(&primary_session, Some(region));
    let region = sessions.primary.sdk_config().region().map(|r| r.to_string()).unwrap_or_default();
    let all = escrow_sync_cloudtrail::describe_trails(&client_for, &region, &[]).await?;
    let mut trails: Vec<Trail> = if job.trails.is_empty() {
        all.clone()
    } else {
        escrow_sync_cloudtrail::describe_trails(&client_for, &region, &job.trails).await?
    };
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
    let primary_id = sessions.primary.account_id();
    for (bucket, _) in locations(&trails, &all).keys() {
        check_source_bucket(&primary, bucket, primary_id).await?;
    }
    let locked = job.object_lock.is_some();
    crate::runner::check_escrow_bucket(
        &sessions.escrow,
        &job.dest_bucket,
        job.allow_unversioned_dest,
        locked,
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
            unvalidated_trails: Vec::new(),
        });
        loc.trails.push(t.name.clone());
    }
    for t in all.iter().filter(|t| !t.validation) {
        let at = (t.bucket.clone(), t.key_prefix.trim_matches('/').to_string());
        if let Some(loc) = out.get_mut(&at)
            && !loc.unvalidated_trails.contains(&t.name)
        {
            loc.unvalidated_trails.push(t.name.clone());
        }
    }
    out
}

/// A checked `[[cloudtrail]]` job as a [`Job`]: each log location copied
/// like an `[[s3]]` job, and `verify` validating the escrow copy's
/// integrity chain.
pub(crate) struct TrailJob<'a> {
    pub(crate) config: &'a Config,
    pub(crate) job: &'a CloudTrailJob,
    pub(crate) checked: Checked,
    pub(crate) sessions: &'a Sessions,
}

#[async_trait::async_trait]
impl Job for TrailJob<'_> {
    fn describe(&self) -> String {
        self.job.name()
    }

    async fn execute(&self, mode: Mode, ctx: &JobContext) -> Result<Report> {
        run(self.config, self.job, &self.checked, self.sessions, mode, ctx).await
    }
}

async fn run(
    config: &Config,
    job: &CloudTrailJob,
    checked: &Checked,
    sessions: &Sessions,
    mode: Mode,
    ctx: &JobContext,
) -> Result<Report> {
    let cancel = ctx.cancellation();
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
        let part = Job::execute(&crate::runner::s3_job(config, &s3, sessions), mode, ctx).await?;
        report.absorb(part);
    }
    if mode == Mode::Verify && !report.cancelled {
        let store = store(job, &sessions.escrow);
        let locations: Vec<_> = locations.into_values().collect();
        let validating: Vec<&str> =
            checked.trails.iter().filter(|t| t.validation).map(|t| t.name.as_str()).collect();
        validate(
            job,
            checked.keys.as_ref(),
            &store,
            &locations,
            &validating,
            &sessions.escrow,
            &mut report,
        )
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
    let proven = validate(job, keys.as_ref(), &store, &locations, &[], escrow, report).await?;
    // Offline, the files validated are the items vouched for.
    report.skipped += proven;
    Ok(())
}

/// The log bucket whose escrow copy a restore of `job` brings back: its
/// `source_bucket`, or the one bucket escrow holds files of.
pub(crate) async fn escrowed_bucket(job: &CloudTrailJob, escrow: &Session) -> Result<String> {
    if let Some(bucket) = &job.source_bucket {
        return Ok(bucket.clone());
    }
    let buckets: std::collections::BTreeSet<String> =
        store(job, escrow).locations().await?.into_iter().map(|l| l.bucket).collect();
    let mut it = buckets.iter();
    match (it.next(), it.next()) {
        (Some(one), None) => Ok(one.clone()),
        (None, _) => Err(Error::invalid_config(format!(
            "job {}: escrow holds no CloudTrail files in s3://{}/{}: run the job first",
            job.name(),
            job.dest_bucket,
            job.dest_prefix
        ))),
        (Some(_), Some(_)) => Err(Error::invalid_config(format!(
            "job {} holds the logs of several buckets ({}): set source_bucket in the job to the \
             one to restore",
            job.name(),
            buckets.iter().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
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
/// A trail in `validating` (log file validation on, says the primary)
/// without a single digest in escrow is a finding. Returns how many digests
/// and log files were proven.
async fn validate(
    job: &CloudTrailJob,
    keys: Option<&Keyring>,
    store: &EscrowTrailStore,
    locations: &[Location],
    validating: &[&str],
    escrow: &Session,
    report: &mut Report,
) -> Result<u64> {
    let escrow = escrow.clone();
    let asked = ListPublicKeys::new(move |region: &str| {
        escrow_sync_cloudtrail::client(&escrow, Some(region))
    });
    let keys: &dyn KeySource = match keys {
        Some(k) => k,
        None => &asked,
    };
    let now = escrow_sync_core::time::epoch(std::time::SystemTime::now());
    let options = Options { since: job.since(), now: Some(now) };
    let mut proven = 0;
    for loc in locations {
        for v in escrow_sync_cloudtrail::validate(store, keys, loc, options).await? {
            let covered = match (&v.covered_from, &v.covered_to) {
                (Some(f), Some(t)) => format!(", covering {f} to {t}"),
                _ => String::new(),
            };
            proven += v.digests + v.log_files;
            report.notes.push(format!(
                "trail {}: {} digest(s) and {} log file(s) validated{covered}, {} problem(s)",
                v.trail,
                v.digests,
                v.log_files,
                v.findings.len()
            ));
            report.notes.extend(v.notes.iter().map(|n| format!("trail {}: {n}", v.trail)));
            report.warnings.extend(v.warnings.iter().map(|w| format!("trail {}: {w}", v.trail)));
            if v.digests == 0 && validating.contains(&v.trail.as_str()) {
                report.missing += 1;
                report.findings.push(
                    Finding::new(
                        store.location(&loc.bucket, &loc.root()),
                        format!(
                            "trail {}: log file validation is on, but escrow holds no digest of \
                             it that can be proven: its logs are unproven",
                            v.trail
                        ),
                    )
                    .with_kind(FindingKind::DigestMissing.as_str()),
                );
            }
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
    Ok(proven)
}

/// What `trail events` asks for: one `[[cloudtrail]]` job's escrowed
/// events, selected as the options of the command say (`None`: no
/// condition). Times are RFC 3339, or a day (`2026-12-01`: from its start,
/// or to its end).
#[derive(Debug, Clone, Default)]
pub struct EventsRequest {
    /// The `[[cloudtrail]]` job.
    pub job: String,
    /// `--from`.
    pub from: Option<String>,
    /// `--to`.
    pub to: Option<String>,
    /// `--event-name` (a glob).
    pub event_name: Option<String>,
    /// `--principal` (a glob over ARNs).
    pub principal: Option<String>,
    /// `--source-ip` (a CIDR block or an address).
    pub source_ip: Option<String>,
    /// `--destructive`.
    pub destructive: bool,
}

impl EventsRequest {
    /// The query; bad input is an error naming the option and the fix.
    pub fn query(&self) -> Result<escrow_sync_cloudtrail::EventQuery> {
        let time = |flag: &str, text: &Option<String>, end_of_day: bool| {
            let text = text.as_deref().map(|t| match (t.len(), end_of_day) {
                (10, false) => format!("{t}T00:00:00Z"),
                (10, true) => format!("{t}T23:59:59Z"),
                _ => t.to_string(),
            });
            escrow_sync_core::time::parse_option(flag, text.as_deref())
                .map(|t| t.map(escrow_sync_core::time::epoch))
        };
        let mut q = escrow_sync_cloudtrail::EventQuery::new().destructive(self.destructive);
        if let Some(t) = time("--from", &self.from, false)? {
            q = q.from(t);
        }
        if let Some(t) = time("--to", &self.to, true)? {
            q = q.to(t);
        }
        if let (Some(f), Some(t)) = q.range()
            && f > t
        {
            return Err(Error::invalid_config(format!(
                "--from {} is after --to {}: swap them",
                self.from.as_deref().unwrap_or_default(),
                self.to.as_deref().unwrap_or_default()
            )));
        }
        if let Some(g) = &self.event_name {
            q = q.event_name(g)?;
        }
        if let Some(g) = &self.principal {
            q = q.principal(g)?;
        }
        if let Some(c) = &self.source_ip {
            q = q.source_ip(c)?;
        }
        Ok(q)
    }
}

/// The `[[cloudtrail]]` job named `name`.
pub(crate) fn job_named<'a>(config: &'a Config, name: &str) -> Result<&'a CloudTrailJob> {
    config.cloudtrail.iter().find(|j| j.name() == name).ok_or_else(|| {
        let known: Vec<_> = config.cloudtrail.iter().map(CloudTrailJob::name).collect();
        Error::invalid_config(format!(
            "no [[cloudtrail]] job named {name:?}: the config has {}",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ))
    })
}

/// The log locations (log bucket, key prefix) escrow holds for `job`, found
/// from escrow's folders alone (only `source_bucket`'s, when set).
async fn roots(job: &CloudTrailJob, store: &EscrowTrailStore) -> Result<Vec<(String, String)>> {
    let mut roots = store.roots().await?;
    if let Some(bucket) = &job.source_bucket {
        roots.retain(|(b, _)| b == bucket);
    }
    if roots.is_empty() {
        return Err(Error::invalid_config(format!(
            "job {}: escrow holds no CloudTrail files in s3://{}/{}: run the job first",
            job.name(),
            job.dest_bucket,
            job.dest_prefix
        )));
    }
    Ok(roots)
}

/// `trail events`: the job's escrowed events the request selects, from
/// escrow alone, handed to `sink` (see [`escrow_sync_cloudtrail::timeline`]):
/// an event is proven only once its log file's hash is the one a digest
/// signed by CloudTrail lists; others come marked.
pub(crate) async fn events(
    config: &Config,
    request: &EventsRequest,
    escrow: &Session,
    sink: &mut dyn escrow_sync_cloudtrail::EventSink,
) -> Result<escrow_sync_cloudtrail::TimelineSummary> {
    let job = job_named(config, &request.job)?;
    let query = request.query()?;
    let keys = match &job.public_keys_file {
        Some(path) => Some(read_keys(job, path)?),
        None => None,
    };
    let store = store(job, escrow);
    let roots = roots(job, &store).await?;
    let session = escrow.clone();
    let asked = ListPublicKeys::new(move |region: &str| {
        escrow_sync_cloudtrail::client(&session, Some(region))
    });
    let keys: &dyn KeySource = match &keys {
        Some(k) => k,
        None => &asked,
    };
    escrow_sync_cloudtrail::timeline(&store, keys, &roots, &query, sink).await
}

/// `trail athena`: the Athena DDL and example queries over the job's
/// escrow copy, from escrow's folders alone.
pub(crate) async fn athena(
    config: &Config,
    job: &str,
    escrow: &Session,
) -> Result<escrow_sync_cloudtrail::AthenaDdl> {
    let job = job_named(config, job)?;
    let store = store(job, escrow);
    let roots = roots(job, &store).await?;
    escrow_sync_cloudtrail::athena_ddl(
        &store,
        &job.name(),
        &job.dest_bucket,
        &job.dest_prefix,
        &roots,
    )
    .await
}
