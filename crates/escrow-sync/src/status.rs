//! `status`: how fresh each job's escrow is (the RPO achieved), read from
//! escrow alone: the run manifests and the verification records under
//! `[escrow] manifest_bucket`. It works with the primary gone.
//!
//! A job's copy counts as *verified* when a run finished the job with no
//! failure and no finding (every item copied or already up to date, as its
//! run manifest records), or when a `verify` of the job came out clean (its
//! verification record). A job whose newest verified copy is older than its
//! `max_age` (or `status --max-age`), or that has none, gets a finding of
//! kind [`STALE`].

use std::time::{Duration, SystemTime};

use serde::Serialize;

use escrow_sync_aws::Session;
use escrow_sync_core::manifest::{JobSummary, Manifest};
use escrow_sync_core::{Error, Finding};

use crate::Verdict;
use crate::manifest;
use crate::spec::Config;

/// The finding kind of a job whose newest verified copy is too old.
pub const STALE: &str = "stale";

/// What `status` asks.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StatusRequest {
    /// Only this job.
    pub job: Option<String>,
    /// The largest age of a job's newest verified copy before it is stale,
    /// instead of each job's `max_age`.
    pub max_age: Option<Duration>,
}

impl StatusRequest {
    /// Every job, each with its own `max_age`.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only job `job`, or every job.
    pub fn set_job(mut self, job: Option<String>) -> Self {
        self.job = job;
        self
    }
    /// One `max_age` for every job (instead of each job's key).
    pub fn set_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }
}

/// How a run left a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunOutcome {
    /// Every item copied or already up to date: a verified copy.
    Ok,
    /// Some items failed.
    Failed,
    /// The run found something (a mass change held back, ...).
    Findings,
    /// The run was interrupted.
    Cancelled,
    /// The job could not run.
    Error,
    /// A sharded run with parts that have no run under its boundaries.
    Incomplete,
}

impl RunOutcome {
    fn of(s: &JobSummary) -> Self {
        if s.error.is_some() {
            RunOutcome::Error
        } else if s.cancelled {
            RunOutcome::Cancelled
        } else if !s.findings.is_empty()
            || s.held_back > 0
            || s.missing > 0
            || s.different > 0
            || s.unprotected > 0
        {
            RunOutcome::Findings
        } else if s.failed > 0 {
            RunOutcome::Failed
        } else {
            RunOutcome::Ok
        }
    }

    /// The word for it (`ok`, `failed`, `findings`, `cancelled`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Findings => "findings",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Error => "error",
            RunOutcome::Incomplete => "incomplete",
        }
    }
}

/// A job's last run, as its run manifest records it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct LastRun {
    /// The run's id.
    pub run_id: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// How it left the job.
    pub outcome: RunOutcome,
    /// Items copied.
    pub copied: u64,
    /// Items escrow already held.
    pub skipped: u64,
    /// Items that failed.
    pub failed: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Findings the run reported.
    pub findings: u64,
    /// How long the job took, in seconds.
    pub duration_seconds: f64,
    /// The job's error, if it could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What vouched for a job's newest verified copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VerifiedBy {
    /// A run that finished the job clean.
    Run,
    /// A clean `verify` (online or offline).
    Verify,
}

/// A job's newest verified copy.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct VerifiedCopy {
    /// The run or verify that vouched for it.
    pub run_id: String,
    /// When that run or verify started (RFC 3339): it read the primary from
    /// then on, so this is the time of the data escrow holds (its age is the
    /// RPO).
    pub started_at: String,
    /// When that run or verify finished (RFC 3339).
    pub finished_at: String,
    /// A run or a verify.
    pub by: VerifiedBy,
}

/// One job's status.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job's name.
    pub name: String,
    /// Its kind (`s3`, `dynamodb`, ...).
    pub kind: &'static str,
    /// Its last run, if any manifest records one.
    pub last_run: Option<LastRun>,
    /// Its newest verified copy, if any.
    pub last_verified: Option<VerifiedCopy>,
    /// Seconds since the newest verified copy (the RPO achieved); `None`
    /// without one.
    pub seconds_since_last_verified_copy: Option<u64>,
    /// The largest age allowed, in seconds, if any.
    pub max_age_seconds: Option<u64>,
    /// `stale` when the newest verified copy is older than that (or there
    /// is none); [`INCOMPLETE_SHARDS`] when the last sharded run lacks a
    /// part.
    pub findings: Vec<Finding>,
    /// The parts of the last run, when it was sharded (`run --shard`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardStatus>,
    /// An `[[s3]]` job with `engine = "batch-operations"` or `"auto"`: its
    /// last S3 Batch Operations job, as S3 Control describes it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_job: Option<BatchJob>,
}

/// The finding kind of a job whose last sharded run lacks a part (never
/// run under the same boundaries, or still running).
pub const INCOMPLETE_SHARDS: &str = "incomplete-shards";

/// The parts of a job's last sharded run: the newest record of each part
/// cut by the same boundaries.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ShardStatus {
    /// N.
    pub count: u32,
    /// The digest of the boundaries.
    pub boundaries: String,
    /// The parts found, in order.
    pub parts: Vec<PartStatus>,
    /// The parts with no run under these boundaries (`I/N`).
    pub missing: Vec<String>,
}

/// One part's newest run.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PartStatus {
    /// `I/N`.
    pub part: String,
    /// The part's last run.
    pub run: LastRun,
}

/// An RFC 3339 time as an instant, for comparing (`None`, first, when it
/// does not read as one).
fn instant(time: &str) -> Option<std::time::SystemTime> {
    escrow_sync_core::time::parse_rfc3339(time)
}

/// The last S3 Batch Operations job of an `[[s3]]` job: the s3 crate's
/// own account of it.
pub use escrow_sync_s3::BatchJobState as BatchJob;

/// Every selected job's status.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct StatusReport {
    /// Each job, in config order.
    pub jobs: Vec<JobStatus>,
    /// Records that could not be read (a damaged or foreign object under
    /// the manifest prefix): skipped, and said here.
    pub warnings: Vec<String>,
}

impl StatusReport {
    /// [`Verdict::Findings`] when a job is stale, else [`Verdict::Ok`].
    pub fn verdict(&self) -> Verdict {
        if self.jobs.iter().any(|j| !j.findings.is_empty()) {
            Verdict::Findings
        } else {
            Verdict::Ok
        }
    }
}

/// One record under the manifest prefix: a run manifest or a verification
/// record, by run id.
struct Record {
    run_id: String,
    key: String,
    verification: bool,
}

/// How far in the future a record's start may be (clocks differ) before
/// it is taken for a forgery or a broken clock and not believed.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Reads the status of the selected jobs from escrow (newest records
/// first, each without its item lines, stopping once each job has its last
/// run and its newest verified copy, or once the records are older than
/// every unverified job's `max_age`: such a copy would be stale anyway).
pub(crate) async fn status(
    config: &Config,
    escrow: &Session,
    request: &StatusRequest,
    now: SystemTime,
) -> Result<StatusReport, Error> {
    let jobs = config.select(request.job.as_deref())?;
    let (Some(runs), Some(verifications)) =
        (manifest::store(config, escrow), manifest::verification_store(config, escrow))
    else {
        return Err(Error::invalid_config(
            "status reads the run manifests in escrow: set [escrow] manifest_bucket (every run \
             then records itself there)",
        ));
    };
    let mut records = Vec::new();
    for (store, verification) in [(&runs, false), (&verifications, true)] {
        for key in store.keys().await? {
            let run_id = key
                .strip_prefix(store.prefix())
                .and_then(|k| k.strip_suffix(".jsonl"))
                .unwrap_or(&key)
                .to_string();
            records.push(Record { run_id, key, verification });
        }
    }
    // Newest first; a run's manifest before a verification of the same id.
    records.sort_by(|a, b| b.run_id.cmp(&a.run_id).then(a.verification.cmp(&b.verification)));
    let mut out: Vec<JobStatus> = jobs
        .iter()
        .map(|j| JobStatus {
            name: j.name(),
            kind: j.kind(),
            last_run: None,
            last_verified: None,
            seconds_since_last_verified_copy: None,
            max_age_seconds: request.max_age.or_else(|| j.max_age()).map(|d| d.as_secs()),
            findings: Vec::new(),
            shards: None,
            batch_job: None,
        })
        .collect();
    let mut warnings = Vec::new();
    let mut parts: Vec<Parts> = out.iter().map(|_| Parts::default()).collect();
    for record in records {
        let done = |(s, p): (&JobStatus, &Parts)| s.last_verified.is_some() && p.has_run(s);
        if out.iter().zip(&parts).all(done) {
            break;
        }
        // Past the horizon of every job still without a verified copy, and
        // every job has its last run (or an unfinished whole run, which
        // parts older than the horizon do not displace): nothing older can
        // change the verdict.
        let started = escrow_sync_core::manifest::run_started(&record.run_id);
        let horizon = out
            .iter()
            .filter(|s| s.last_verified.is_none())
            .map(|s| s.max_age_seconds.map(Duration::from_secs))
            .try_fold(Duration::ZERO, |acc, m| m.map(|m| acc.max(m)));
        if let (Some(started), Some(horizon)) = (started, horizon)
            && out.iter().zip(&parts).all(|(s, p)| p.has_run(s) || p.unfinished_whole.is_some())
            && now.duration_since(started).unwrap_or_default() > horizon + CLOCK_SKEW
        {
            break;
        }
        // A run manifest matters while some job lacks its last run or its
        // verified copy; a verification record only for the latter.
        let wanted = out
            .iter()
            .zip(&parts)
            .any(|(s, p)| s.last_verified.is_none() || (!record.verification && !p.has_run(s)));
        if !wanted {
            continue;
        }
        let store = if record.verification { &verifications } else { &runs };
        let manifest = match store.read_summaries(&record.key).await {
            Ok(m) => m,
            Err(e) if e.kind() == escrow_sync_core::ErrorKind::AccessDenied => return Err(e),
            Err(e) => {
                warnings.push(format!(
                    "skipped s3://{}/{}: {}",
                    store.bucket(),
                    record.key,
                    e.chain()
                ));
                continue;
            }
        };
        let future = escrow_sync_core::time::parse_rfc3339(&manifest.header.started_at)
            .is_some_and(|t| t.duration_since(now).is_ok_and(|ahead| ahead > CLOCK_SKEW));
        if future {
            warnings.push(format!(
                "skipped s3://{}/{}: it says it started at {}, in the future: a clock that is \
                 wrong, or a record escrow-sync did not write",
                store.bucket(),
                record.key,
                manifest.header.started_at
            ));
            continue;
        }
        take(&mut out, &mut parts, &manifest, record.verification);
    }
    for (s, p) in out.iter_mut().zip(parts) {
        p.finish(s);
        judge(s, now);
    }
    for (s, job) in out.iter_mut().zip(&jobs) {
        if let crate::spec::JobRef::S3(j) = job {
            match batch_job(config, j, escrow).await {
                Ok(b) => s.batch_job = b,
                Err(e) => warnings.push(format!(
                    "could not read the batch job of {}: {}",
                    s.name,
                    e.chain()
                )),
            }
        }
    }
    Ok(StatusReport { jobs: out, warnings })
}

/// What the part records of a sharded job add up to so far (records are
/// read newest first).
#[derive(Default)]
struct Parts {
    /// The last run's parts, when the job's newest run record is a part.
    runs: Option<crate::shard::Merge<LastRun>>,
    /// The newest verified run of each part, per cut (N and boundaries):
    /// the first cut whose parts are all found is the newest verified copy.
    verified: Vec<crate::shard::Merge<VerifiedCopy>>,
    /// The newest whole run, when it did not finish the job (refused by a
    /// part's lease, failed, interrupted) and nothing newer is known: the
    /// last run unless every part of the newest cut of older parts is found
    /// (a run that did nothing must not hide a complete set of parts).
    unfinished_whole: Option<LastRun>,
}

impl Parts {
    /// Whether the job's last run is known (a whole run, or every part).
    fn has_run(&self, s: &JobStatus) -> bool {
        s.last_run.is_some() || self.runs.as_ref().is_some_and(|m| m.whole())
    }

    /// The last run of the parts, merged: the counts added up, the worst
    /// outcome (`incomplete` when a part is missing), from the first start
    /// to the last finish.
    fn finish(self, s: &mut JobStatus) {
        if s.last_run.is_some() {
            return;
        }
        let Some(merge) = self.runs.filter(|m| m.whole() || self.unfinished_whole.is_none()) else {
            s.last_run = self.unfinished_whole;
            return;
        };
        let found: Vec<(usize, &LastRun)> = merge
            .parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
            .collect();
        let missing = merge.missing();
        let Some(newest) = found.iter().map(|(_, r)| *r).max_by(|a, b| a.run_id.cmp(&b.run_id))
        else {
            return;
        };
        let worst = found.iter().map(|(_, r)| r.outcome).max_by_key(|o| severity(*o));
        let outcome = if missing.is_empty() {
            worst.unwrap_or(RunOutcome::Ok)
        } else {
            RunOutcome::Incomplete
        };
        let sum = |f: fn(&LastRun) -> u64| found.iter().map(|(_, r)| f(r)).sum::<u64>();
        let count = merge.cut.count;
        let failed_parts: Vec<String> = found
            .iter()
            .filter(|(_, r)| r.outcome != RunOutcome::Ok)
            .map(|(i, r)| format!("{}/{count} {}", i + 1, r.outcome.as_str()))
            .collect();
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!(
                "part(s) {} have no run cut by these boundaries (not run yet, still running, or \
                 run with other boundaries or another N): run them with --shard",
                missing.join(", ")
            ));
        }
        if !failed_parts.is_empty() {
            problems.push(format!("part(s) {}", failed_parts.join(", ")));
        }
        s.last_run = Some(LastRun {
            run_id: newest.run_id.clone(),
            started_at: found
                .iter()
                .map(|(_, r)| &r.started_at)
                .min_by_key(|t| instant(t))
                .cloned()
                .unwrap_or_default(),
            finished_at: found
                .iter()
                .map(|(_, r)| &r.finished_at)
                .max_by_key(|t| instant(t))
                .cloned()
                .unwrap_or_default(),
            outcome,
            copied: sum(|r| r.copied),
            skipped: sum(|r| r.skipped),
            failed: sum(|r| r.failed),
            bytes_copied: sum(|r| r.bytes_copied),
            findings: sum(|r| r.findings),
            duration_seconds: found.iter().map(|(_, r)| r.duration_seconds).fold(0.0, f64::max),
            error: (!problems.is_empty()).then(|| problems.join("; ")),
        });
        if !missing.is_empty() {
            s.findings.push(
                Finding::new(
                    &s.name,
                    format!(
                        "the last sharded run ({count} parts) lacks part(s) {}: until each part \
                         has run with the same boundaries, escrow is not vouched for as a whole",
                        missing.join(", ")
                    ),
                )
                .with_kind(INCOMPLETE_SHARDS),
            );
        }
        s.shards = Some(ShardStatus {
            count,
            boundaries: merge.cut.boundaries.clone(),
            parts: found
                .iter()
                .map(|(i, r)| PartStatus { part: format!("{}/{count}", i + 1), run: (*r).clone() })
                .collect(),
            missing,
        });
    }
}

/// How bad an outcome is, to pick the worst of a sharded run's parts.
fn severity(o: RunOutcome) -> u8 {
    match o {
        RunOutcome::Ok => 0,
        RunOutcome::Failed => 1,
        RunOutcome::Findings => 2,
        RunOutcome::Cancelled => 3,
        RunOutcome::Incomplete => 4,
        RunOutcome::Error => 5,
    }
}

/// Fills in what `manifest` says of the jobs that still lack it.
fn take(out: &mut [JobStatus], parts: &mut [Parts], manifest: &Manifest, verification: bool) {
    for (s, acc) in out.iter_mut().zip(parts.iter_mut()) {
        let Some(record) = manifest.jobs.get(&s.name) else { continue };
        let Some(summary) = &record.summary else { continue };
        let run = LastRun {
            run_id: manifest.header.run_id.clone(),
            started_at: manifest.header.started_at.clone(),
            finished_at: manifest.end.finished_at.clone(),
            outcome: RunOutcome::of(summary),
            copied: summary.copied,
            skipped: summary.skipped,
            failed: summary.failed,
            bytes_copied: summary.bytes_copied,
            findings: summary.findings.len() as u64,
            duration_seconds: summary.elapsed_ms as f64 / 1000.0,
            error: summary.error.clone(),
        };
        let copy = VerifiedCopy {
            run_id: manifest.header.run_id.clone(),
            started_at: manifest.header.started_at.clone(),
            finished_at: manifest.end.finished_at.clone(),
            by: if verification { VerifiedBy::Verify } else { VerifiedBy::Run },
        };
        // A part of a sharded run stands for its key range only: it counts
        // once every part of its cut has a record.
        if let (Some(part), false) = (&summary.shard, verification) {
            if !crate::shard::usable_part(part, &s.name, &manifest.header.run_id) {
                continue;
            }
            if s.last_run.is_none() && acc.runs.is_none() {
                if part.boundaries.is_empty() {
                    // It failed before it knew its boundaries.
                    s.last_run = Some(run.clone());
                } else {
                    acc.runs = Some(crate::shard::Merge::new(part));
                }
            }
            if let Some(m) = acc.runs.as_mut().filter(|m| !m.whole()) {
                m.offer(part, run);
            }
            if s.last_verified.is_none() && summary.verified() && !part.boundaries.is_empty() {
                let at = match acc.verified.iter().position(|m| m.cut.same_cut(part)) {
                    Some(at) => at,
                    None => {
                        acc.verified.push(crate::shard::Merge::new(part));
                        acc.verified.len() - 1
                    }
                };
                let m = &mut acc.verified[at];
                m.offer(part, copy);
                if m.whole() {
                    // Read newest first: the part offered last is the
                    // oldest, and the merged copy is as old as it. Times are
                    // compared as instants, not as text (RFC 3339 text
                    // with fractions of different lengths does not sort);
                    // parts started in the same instant are told apart by
                    // run id, so the answer never depends on the order they
                    // were offered in.
                    let oldest = m
                        .parts
                        .iter()
                        .flatten()
                        .min_by_key(|p| (instant(&p.started_at), p.run_id.clone()))
                        .cloned();
                    s.last_verified = oldest;
                }
            }
            continue;
        }
        if !verification && s.last_run.is_none() && acc.runs.is_none() {
            match acc.unfinished_whole.take() {
                // An older whole run: the unfinished one is the last run.
                Some(newer) => s.last_run = Some(newer),
                None if matches!(
                    run.outcome,
                    RunOutcome::Error | RunOutcome::Cancelled | RunOutcome::Incomplete
                ) =>
                {
                    acc.unfinished_whole = Some(run);
                }
                None => s.last_run = Some(run),
            }
        }
        if s.last_verified.is_none() && summary.verified() {
            s.last_verified = Some(copy);
        }
    }
}

/// The last Batch Operations job of a batch-engine `[[s3]]` job (its
/// record in escrow, described by S3 Control).
async fn batch_job(
    config: &Config,
    job: &crate::spec::S3Job,
    escrow: &Session,
) -> Result<Option<BatchJob>, Error> {
    let Some(options) = crate::runner::batch_options(config, job, escrow) else {
        return Ok(None);
    };
    // The source only names the pair: nothing is asked of the primary.
    let source =
        escrow_sync_s3::S3Source::from_client(escrow_sync_s3::client(escrow), &job.source_bucket)
            .with_prefix(&job.prefix);
    let sink = crate::runner::s3_sink(config, job, escrow);
    let pair = escrow_sync_s3::S3CopyJob::new(source, sink)
        .with_engine(escrow_sync_s3::Engine::BatchOperations, Some(options));
    pair.batch_state().await
}

/// The age of the newest verified copy, and the `stale` finding.
fn judge(s: &mut JobStatus, now: SystemTime) {
    let verified_at =
        s.last_verified.as_ref().and_then(|v| escrow_sync_core::time::parse_rfc3339(&v.started_at));
    // A record a little in the future (clocks differ by less than
    // CLOCK_SKEW; further ones were skipped) counts as age zero.
    s.seconds_since_last_verified_copy =
        verified_at.map(|t| now.duration_since(t).unwrap_or_default().as_secs());
    let Some(max) = s.max_age_seconds else { return };
    let problem = match (s.seconds_since_last_verified_copy, &s.last_verified) {
        (Some(age), Some(v)) if age > max => format!(
            "the newest verified copy (of {}, by {} {}) is {} old, more than max_age {}: run \
             the job (and see its last run) until it finishes clean",
            v.started_at,
            match v.by {
                VerifiedBy::Run => "run",
                VerifiedBy::Verify => "verify",
            },
            v.run_id,
            human(age),
            human(max)
        ),
        (Some(_), _) => return,
        (None, _) => format!(
            "no verified copy: no run or verify recorded in escrow finished this job clean \
             (max_age {}): run it until it finishes clean",
            human(max)
        ),
    };
    s.findings.push(Finding::new(&s.name, problem).with_kind(STALE));
}

/// `93784` as `1d 2h 3m 4s`.
fn human(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use escrow_sync_core::manifest::{Header, ManifestWriter};

    fn status(name: &str, max_age: Option<u64>) -> JobStatus {
        JobStatus {
            name: name.into(),
            kind: "s3",
            last_run: None,
            last_verified: None,
            seconds_since_last_verified_copy: None,
            max_age_seconds: max_age,
            findings: Vec::new(),
            shards: None,
            batch_job: None,
        }
    }

    fn manifest(run_id: &str, mode_verify: bool, summaries: &[JobSummary]) -> Manifest {
        let mut header = Header::new(run_id, "0", "sha256:00", "222222222222", "111111111111");
        if mode_verify {
            header = header.verification();
        }
        let mut w = ManifestWriter::create(header).unwrap();
        for s in summaries {
            w.job(&s.job, "s3");
            w.job_end(s.clone());
        }
        Manifest::parse(&String::from_utf8(w.finish().unwrap().1).unwrap()).unwrap()
    }

    fn summary(job: &str) -> JobSummary {
        JobSummary { job: job.into(), copied: 2, bytes_copied: 10, ..Default::default() }
    }

    #[test]
    fn a_clean_run_is_a_verified_copy_and_a_failed_one_is_only_the_last_run() {
        let mut out = vec![status("a", None), status("b", None)];
        let failed = JobSummary { failed: 1, ..summary("a") };
        let held = JobSummary {
            findings: vec![Finding::new("x", "mass").with_kind("mass-change")],
            held_back: 3,
            ..summary("b")
        };
        let mut parts = vec![Parts::default(), Parts::default()];
        take(&mut out, &mut parts, &manifest("r2", false, &[failed, held]), false);
        assert_eq!(out[0].last_run.as_ref().unwrap().outcome, RunOutcome::Failed);
        assert_eq!(out[1].last_run.as_ref().unwrap().outcome, RunOutcome::Findings);
        assert!(out.iter().all(|s| s.last_verified.is_none()));
        take(&mut out, &mut parts, &manifest("r1", false, &[summary("a"), summary("b")]), false);
        // The older run does not replace the last run, but vouches for a copy.
        assert_eq!(out[0].last_run.as_ref().unwrap().run_id, "r2");
        assert_eq!(out[0].last_verified.as_ref().unwrap().run_id, "r1");
        assert_eq!(out[0].last_verified.as_ref().unwrap().by, VerifiedBy::Run);
    }

    #[test]
    fn a_clean_verify_vouches_but_a_verify_with_differences_does_not() {
        let mut out = vec![status("a", None), status("b", None)];
        let different = JobSummary { different: 1, copied: 0, ..summary("b") };
        let clean = JobSummary { copied: 0, skipped: 5, ..summary("a") };
        let mut parts = vec![Parts::default(), Parts::default()];
        take(&mut out, &mut parts, &manifest("v1", true, &[clean, different]), true);
        assert_eq!(out[0].last_verified.as_ref().unwrap().by, VerifiedBy::Verify);
        assert!(out[0].last_run.is_none(), "a verify is not a run");
        assert!(out[1].last_verified.is_none());
    }

    #[test]
    fn stale_when_older_than_max_age_or_never_verified() {
        let now = escrow_sync_core::time::parse_rfc3339("2026-12-06T12:00:00Z").unwrap();
        let verified = |at: &str| VerifiedCopy {
            run_id: "r".into(),
            started_at: at.into(),
            finished_at: at.into(),
            by: VerifiedBy::Run,
        };
        let mut fresh = status("fresh", Some(26 * 3600));
        fresh.last_verified = Some(verified("2026-12-06T00:00:00Z"));
        judge(&mut fresh, now);
        assert_eq!(fresh.seconds_since_last_verified_copy, Some(12 * 3600));
        assert!(fresh.findings.is_empty());

        let mut old = status("old", Some(26 * 3600));
        old.last_verified = Some(verified("2026-12-03T12:00:00Z"));
        judge(&mut old, now);
        assert_eq!(old.findings.len(), 1);
        assert_eq!(old.findings[0].kind.as_deref(), Some(STALE));
        assert!(old.findings[0].problem.contains("3days old"), "{}", old.findings[0].problem);

        let mut never = status("never", Some(60));
        judge(&mut never, now);
        assert_eq!(never.findings[0].kind.as_deref(), Some(STALE));
        assert!(never.findings[0].problem.starts_with("no verified copy"));

        let mut unlimited = status("unlimited", None);
        judge(&mut unlimited, now);
        assert!(unlimited.findings.is_empty(), "no max_age: nothing to be stale against");

        let mut future = status("future", Some(60));
        future.last_verified = Some(verified("2026-12-07T00:00:00Z"));
        judge(&mut future, now);
        assert_eq!(future.seconds_since_last_verified_copy, Some(0));
        let report = StatusReport { jobs: vec![fresh, old], warnings: vec![] };
        assert_eq!(report.verdict(), Verdict::Findings);
    }

    fn part(job: &str, index: u32, count: u32, cut: &str) -> JobSummary {
        let shard = escrow_sync_core::manifest::ShardPart {
            index,
            count,
            boundaries: cut.into(),
            ..Default::default()
        };
        JobSummary { shard: Some(shard), ..summary(job) }
    }

    /// Reads `manifests` (made oldest first, listed newest first) as
    /// `status` does, for job `a`.
    fn merged(manifests: &[Manifest]) -> JobStatus {
        let mut out = vec![status("a", Some(3600))];
        let mut parts = vec![Parts::default()];
        for m in manifests.iter().rev() {
            take(&mut out, &mut parts, m, false);
        }
        let mut s = out.pop().unwrap();
        parts.pop().unwrap().finish(&mut s);
        s
    }

    #[test]
    fn a_whole_run_that_did_not_finish_does_not_hide_a_complete_set_of_parts() {
        let m = |id: &str, s: JobSummary| manifest(id, false, &[s]);
        let refused =
            || JobSummary { error: Some("job a is running in parts".into()), ..summary("a") };
        // Parts 1, 2 of 2, then a whole run refused by their leases.
        let s = merged(&[
            m("r1", part("a", 1, 2, "d")),
            m("r2", part("a", 2, 2, "d")),
            m("r3", refused()),
        ]);
        let run = s.last_run.as_ref().unwrap();
        assert_eq!((run.outcome, run.run_id.as_str()), (RunOutcome::Ok, "r2"), "{run:?}");
        assert_eq!(s.last_verified.as_ref().unwrap().run_id, "r1");
        assert!(s.shards.is_some() && s.findings.is_empty(), "{s:?}");
        // Without a complete set of parts, or after an older whole run, the
        // unfinished whole run is the last run.
        for older in [m("r2", part("a", 2, 3, "d")), m("r2", summary("a"))] {
            let s = merged(&[m("r1", part("a", 1, 3, "d")), older, m("r3", refused())]);
            let run = s.last_run.as_ref().unwrap();
            assert_eq!((run.outcome, run.run_id.as_str()), (RunOutcome::Error, "r3"), "{run:?}");
        }
        let s = merged(&[m("r3", refused())]);
        assert_eq!(s.last_run.as_ref().unwrap().run_id, "r3");
    }

    #[test]
    fn the_parts_of_a_sharded_run_are_merged_and_a_missing_or_failed_part_is_not_ok() {
        let m = |id: &str, s: JobSummary| manifest(id, false, &[s]);
        // A whole run, then parts 1, 2, 3 of 3.
        let whole = merged(&[
            m("r1", summary("a")),
            m("r2", part("a", 1, 3, "d")),
            m("r3", part("a", 2, 3, "d")),
            m("r4", part("a", 3, 3, "d")),
        ]);
        let run = whole.last_run.as_ref().unwrap();
        assert_eq!((run.outcome, run.copied, run.run_id.as_str()), (RunOutcome::Ok, 6, "r4"));
        // The merged copy is as old as its oldest part.
        assert_eq!(whole.last_verified.as_ref().unwrap().run_id, "r2");
        assert_eq!(whole.shards.as_ref().unwrap().parts.len(), 3);
        assert!(whole.findings.is_empty());

        // Part 2 ran with other boundaries: missing under the newest cut;
        // the whole run r1 is the newest verified copy.
        let gap = merged(&[
            m("r1", summary("a")),
            m("r2", part("a", 1, 3, "d")),
            m("r3", part("a", 2, 3, "other")),
            m("r4", part("a", 3, 3, "d")),
        ]);
        let run = gap.last_run.as_ref().unwrap();
        assert_eq!(run.outcome, RunOutcome::Incomplete);
        assert!(run.error.as_ref().unwrap().contains("2/3"), "{run:?}");
        assert_eq!(gap.shards.as_ref().unwrap().missing, vec!["2/3".to_string()]);
        assert_eq!(gap.findings[0].kind.as_deref(), Some(INCOMPLETE_SHARDS));
        assert_eq!(gap.last_verified.as_ref().unwrap().run_id, "r1");

        // A newer cut with a part missing: the older cut's whole set is
        // the newest verified copy.
        let moved = merged(&[
            m("r1", part("a", 1, 2, "old")),
            m("r2", part("a", 2, 2, "old")),
            m("r3", part("a", 1, 2, "new")),
        ]);
        assert_eq!(moved.last_run.as_ref().unwrap().outcome, RunOutcome::Incomplete);
        assert_eq!(moved.last_verified.as_ref().unwrap().run_id, "r1");

        // A failed part: the merged run is failed, and no verified copy.
        let failed = merged(&[
            m("r2", part("a", 1, 2, "d")),
            m("r3", JobSummary { failed: 2, ..part("a", 2, 2, "d") }),
        ]);
        assert_eq!(failed.last_run.as_ref().unwrap().outcome, RunOutcome::Failed);
        assert!(failed.last_verified.is_none());
        assert!(failed.last_run.as_ref().unwrap().error.as_ref().unwrap().contains("2/2 failed"));
    }
}
