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
/// lease of its own, `<leases>/parts/<job>/I-of-N.json` (a folder of the
/// job's own, so no other job's lease name can be taken for a part's).
pub(crate) async fn take_part(
    config: &Config,
    job: JobRef<'_>,
    sessions: &Sessions,
    run_id: &str,
    cancel: &CancellationToken,
    shard: Option<escrow_sync_s3::Shard>,
) -> Result<JobLease, Error> {
    // A part and a whole run of one job hold different leases, and so do
    // parts of one job cut in different numbers: each checks, once it holds
    // its own, that none it excludes is held (two that start at once both
    // see the other and both stop: never both run). Only S3 jobs have parts.
    let name = job.name();
    let (bucket, key, whole_key, parts_dir) = match config.lease_place(&job) {
        LeasePlace::Object { bucket, key } => {
            let parts = crate::shard::part_lease_dir(&key, &name);
            match shard {
                Some(shard) => {
                    (bucket, crate::shard::part_lease_key(&key, &name, shard), Some(key), parts)
                }
                None => {
                    let parts = matches!(job, JobRef::S3(_)).then_some(parts);
                    (bucket, key, None, parts.unwrap_or_default())
                }
            }
        }
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
    let client = escrow_sync_s3::client(&sessions.escrow);
    let store = LeaseStore::from_client(client, bucket, key)
        .with_ttl(config.lease_ttl())
        .with_expected_owner((!escrow_id.is_empty()).then(|| escrow_id.to_string()))
        .with_kms_key_id(config.escrow.kms_key_id.clone());
    let location = store.location();
    let holder = match shard {
        Some(shard) => format!("{name} part {shard}"),
        None => name.clone(),
    };
    let lease = store.acquire(&LeaseHolder::this_process(holder, run_id)).await?;
    let conflict = match excluding(&store, whole_key.as_deref(), &parts_dir, shard).await {
        Ok(held) => held.map(|(key, record, what)| {
            let fix = match shard {
                Some(_) if what.starts_with("whole") => "wait for it to end",
                _ => "wait for those parts to end",
            };
            Error::new(
                ErrorKind::PreconditionFailed,
                "lease",
                format!("s3://{lease_bucket}/{key}"),
                format!(
                    "job {name} is running {what}: {} holds its lease until {}; this run leaves \
                     the job alone ({fix}, or for that lease to expire if the run died)",
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

/// The first live lease that excludes the run holding `store`: (key,
/// record, what that run is doing). A whole run (no `shard`) is excluded by
/// any part of its job; a part by the whole run (`whole_key`) and by any
/// part of the job cut in another number of parts (parts of one cut run
/// side by side: their key ranges do not overlap).
async fn excluding(
    store: &LeaseStore,
    whole_key: Option<&str>,
    parts_dir: &str,
    shard: Option<escrow_sync_s3::Shard>,
) -> Result<Option<(String, escrow_sync_s3::LeaseRecord, String)>, Error> {
    if let Some(whole) = whole_key
        && let Some((key, record)) =
            store.held_under(whole).await?.into_iter().find(|(k, _)| k == whole)
    {
        return Ok(Some((key, record, "whole (without --shard)".to_string())));
    }
    if parts_dir.is_empty() {
        return Ok(None);
    }
    for (key, record) in store.held_under(parts_dir).await? {
        let Some(other) = key.strip_prefix(parts_dir).and_then(crate::shard::parse_part_lease)
        else {
            continue;
        };
        match shard {
            None => {
                return Ok(Some((key, record, format!("in parts (run --shard, part {other})"))));
            }
            Some(own) if other.count() != own.count() => {
                let what = format!(
                    "cut into {} parts (part {other} runs), and this part is of a cut into {}: \
                     their key ranges overlap",
                    other.count(),
                    own.count()
                );
                return Ok(Some((key, record, what)));
            }
            Some(_) => {}
        }
    }
    Ok(None)
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
