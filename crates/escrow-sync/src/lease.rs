//! One run per job: `run` holds each job's lease in escrow while the job
//! runs (the lease itself is `escrow_sync_s3::LeaseStore`; where it lives
//! is `Config::lease_place`).

use escrow_sync_aws::Sessions;
use escrow_sync_core::{CancellationToken, Error, ErrorKind, Report};
use escrow_sync_s3::{LeaseEnd, LeaseGuard, LeaseHolder, LeaseStore};

use crate::spec::{Config, JobRef, LeasePlace};

/// A job's lease for the time it runs, or why it has none.
pub(crate) struct JobLease {
    guard: Option<LeaseGuard>,
    location: String,
    notes: Vec<String>,
    warnings: Vec<String>,
}

/// Takes `job`'s lease for run `run_id` and keeps it renewed; a lost lease
/// cancels `cancel` (the job's own token). A lease another run holds is an
/// error naming that run and the expiry (nothing of the job is touched).
/// Of one part of a sharded run when `shard` is given: each part holds a
/// lease of its own, `<job>.part-I-of-N.json` beside the job's.
pub(crate) async fn take_part(
    config: &Config,
    job: JobRef<'_>,
    sessions: &Sessions,
    run_id: &str,
    cancel: &CancellationToken,
    shard: Option<escrow_sync_s3::Shard>,
) -> Result<JobLease, Error> {
    // A part and a whole run of one job hold different leases: each checks,
    // once it holds its own, that none of the other kind is held (two that
    // start at once both see the other and both stop: never both run).
    // Only S3 jobs have parts.
    let (bucket, key, others) = match config.lease_place(&job) {
        LeasePlace::Object { bucket, key } => match shard {
            Some(shard) => (bucket, crate::shard::part_lease_key(&key, shard), Some(key)),
            None => {
                let parts = crate::shard::part_lease_prefix(&key);
                (bucket, key, matches!(job, JobRef::S3(_)).then_some(parts))
            }
        },
        LeasePlace::Nowhere(why) => {
            return Ok(JobLease {
                guard: None,
                location: String::new(),
                notes: Vec::new(),
                warnings: vec![why],
            });
        }
    };
    let escrow_id = sessions.escrow.account_id();
    let lease_bucket = bucket.clone();
    let store = LeaseStore::from_client(escrow_sync_s3::client(&sessions.escrow), bucket, key)
        .with_ttl(config.lease_ttl())
        .with_expected_owner((!escrow_id.is_empty()).then(|| escrow_id.to_string()))
        .with_kms_key_id(config.escrow.kms_key_id.clone());
    let location = store.location();
    let holder = match shard {
        Some(shard) => format!("{} part {shard}", job.name()),
        None => job.name(),
    };
    let lease = store.acquire(&LeaseHolder::this_process(holder, run_id)).await?;
    let held = match &others {
        Some(others) => store.held_under(others).await,
        None => Ok(Vec::new()),
    };
    let conflict = match held {
        Ok(held) => held.into_iter().next().map(|(key, record)| {
            let (what, fix) = match shard {
                Some(_) => ("whole (without --shard)", "wait for it to end"),
                None => ("in parts (run --shard)", "wait for the parts to end"),
            };
            Error::new(
                ErrorKind::PreconditionFailed,
                "lease",
                format!("s3://{lease_bucket}/{key}"),
                format!(
                    "job {} is running {what}: {} holds its lease until {}; this run leaves the \
                     job alone ({fix}, or for that lease to expire if the run died)",
                    job.name(),
                    record.holder(),
                    record.expires
                ),
            )
        }),
        Err(e) => Some(e),
    };
    if let Some(e) = conflict {
        if let Err(release) = lease.release().await {
            tracing::warn!(error = %release.chain(), "a lease was not released: it expires by itself");
        }
        return Err(e);
    }
    let mut warnings = Vec::new();
    if let Some(prev) = lease.previous().filter(|p| p.released.is_none()) {
        warnings.push(format!(
            "took over the lease {location} that {} left to expire at {} without releasing it \
             (that run was killed or lost its connection): its work, if any, was cut short",
            prev.holder(),
            prev.expires
        ));
    }
    Ok(JobLease {
        guard: Some(lease.keep_alive(cancel.clone())),
        location,
        notes: Vec::new(),
        warnings,
    })
}

impl JobLease {
    /// Releases the lease after the job; puts what the operator should know
    /// into the job's report. Returns the job's result and, when the lease
    /// was lost while the job ran (the job was then cancelled), that error:
    /// the job fails with it.
    pub(crate) async fn end(
        mut self,
        result: Result<Report, Error>,
    ) -> (Result<Report, Error>, Option<Error>) {
        let mut lost = None;
        if let Some(guard) = self.guard.take() {
            match guard.end().await {
                LeaseEnd::Released => {}
                LeaseEnd::Lost(e) => {
                    self.notes.push(e.chain());
                    lost = Some(e);
                }
                LeaseEnd::NotReleased(e) => self.warnings.push(format!(
                    "the lease {} was not released ({}): it expires by itself within \
                     lease_ttl_seconds; until then another run of this job exits 2",
                    self.location,
                    e.chain()
                )),
                other => self.warnings.push(format!(
                    "the lease {} ended as this build cannot tell ({other:?}): it expires by \
                     itself within lease_ttl_seconds",
                    self.location
                )),
            }
        }
        let result = result.map(|mut report| {
            report.warnings.extend(self.warnings);
            report.notes.extend(self.notes);
            report
        });
        (result, lost)
    }
}

/// The error a job ends with, given the lease it lost: the lease's, unless
/// the job failed for a reason of its own first.
pub(crate) fn job_error(own: Option<Error>, lost: Option<Error>) -> Option<Error> {
    match (own, lost) {
        (Some(own), _) if own.kind() != ErrorKind::Cancelled => Some(own),
        (own, None) => own,
        (_, Some(lost)) => Some(lost),
    }
}
