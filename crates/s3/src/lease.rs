//! One run per job: a lease object in an escrow bucket, taken with S3
//! conditional writes.
//!
//! - **Acquire**: PutObject with `If-None-Match: *` (only when no lease
//!   object exists). When one exists, GetObject reads it: a lease whose
//!   expiry has not passed is *held* (an error naming the holder's host,
//!   process, run and expiry); an expired one is taken over with PutObject
//!   `If-Match: <its ETag>`, so of two runs taking it over at once exactly one
//!   wins (the other gets `412 Precondition Failed` and reads the winner).
//! - **Renew**: PutObject `If-Match: <our ETag>` with a later expiry, every
//!   third of the time to live, by [`Lease::keep_alive`]'s background task.
//!   A 412 (or 404) means another run took the lease: the task cancels the
//!   job's [`CancellationToken`] and [`LeaseGuard::release`] reports the loss.
//! - **Release**: PutObject `If-Match: <our ETag>` of a record whose expiry is
//!   now (and which says when it was released). Not a DeleteObject: the
//!   escrow operator never needs `s3:DeleteObject` for a lease, and in a
//!   versioned escrow bucket each write only adds a version (the lease's
//!   history: who ran the job, when). The next run takes the released
//!   lease over like an expired one.
//!
//! Expiry is judged by the clock of the run that reads the lease: keep the
//! hosts' clocks in sync (NTP) and the time to live well above their skew.
//!
//! ```no_run
//! use std::time::Duration;
//! use escrow_sync_core::CancellationToken;
//! use escrow_sync_s3::{LeaseHolder, LeaseStore};
//!
//! # async fn demo(escrow: aws_sdk_s3::Client) -> escrow_sync_core::Result<()> {
//! let store = LeaseStore::from_client(escrow, "escrow-manifests", "escrow-sync/manifests/leases/assets.json")
//!     .with_ttl(Duration::from_secs(600));
//! let lease = store.acquire(&LeaseHolder::this_process("assets", "run-1")).await?;
//! let cancel = CancellationToken::new();
//! let guard = lease.keep_alive(cancel.clone());
//! // ... the job's work, stopping when `cancel` is cancelled ...
//! guard.release().await?;
//! # Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use serde::{Deserialize, Serialize};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{CancellationToken, Error, ErrorKind, Result};

/// The default time to live of a lease (renewed every third of it).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(600);

/// The key prefix, at the root of a job's own escrow bucket, of the leases
/// of jobs that have no manifest bucket to keep them in. escrow-sync keeps
/// a lease there only when no job copies keys into that part of the bucket.
pub const BUCKET_LEASE_PREFIX: &str = escrow_sync_core::layout::LEASE_PREFIX;

/// How often a lease object may change hands while one run acquires it
/// before the run gives up.
const ACQUIRE_ATTEMPTS: u32 = 4;

/// Who holds (or asks for) a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The job the lease is for.
    pub job: String,
    /// The host name of the run.
    pub host: String,
    /// The process id of the run.
    pub pid: u32,
    /// The run id.
    pub run_id: String,
}

impl LeaseHolder {
    /// This process on this host, running `run_id` of `job`.
    pub fn this_process(job: impl Into<String>, run_id: impl Into<String>) -> Self {
        LeaseHolder {
            job: job.into(),
            host: host_name(),
            pid: std::process::id(),
            run_id: run_id.into(),
        }
    }

    fn is(&self, record: &LeaseRecord) -> bool {
        record.host == self.host && record.pid == self.pid && record.run_id == self.run_id
    }
}

/// The host name: the kernel's, else `HOSTNAME`, else `unknown-host`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// The body of a lease object (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The job.
    pub job: String,
    /// The host of the run holding it.
    pub host: String,
    /// The process id of that run.
    pub pid: u32,
    /// Its run id.
    pub run_id: String,
    /// When that run took the lease (RFC 3339).
    pub started: String,
    /// When the lease expires unless renewed (RFC 3339).
    pub expires: String,
    /// When the run released it (RFC 3339), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
}

impl LeaseRecord {
    fn new(holder: &LeaseHolder, now: SystemTime, ttl: Duration) -> Self {
        LeaseRecord {
            job: holder.job.clone(),
            host: holder.host.clone(),
            pid: holder.pid,
            run_id: holder.run_id.clone(),
            started: escrow_sync_core::rfc3339(now),
            expires: escrow_sync_core::rfc3339(now + ttl),
            released: None,
        }
    }

    /// The expiry as a time; `None` when it cannot be read.
    pub fn expires_at(&self) -> Option<SystemTime> {
        aws_smithy_types::DateTime::from_str(
            &self.expires,
            aws_smithy_types::date_time::Format::DateTime,
        )
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
    }

    /// Whether the lease has expired (or was released) at `now`. A record
    /// whose expiry cannot be read never expires: it needs a person.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|t| t <= now)
    }

    /// "host H, pid P, run R", for messages.
    pub fn holder(&self) -> String {
        format!("host {} pid {} run {}", self.host, self.pid, self.run_id)
    }
}

/// Where a job's lease lives and how it is written.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    client: Client,
    bucket: String,
    key: String,
    ttl: Duration,
    expected_owner: Option<String>,
    kms_key_id: Option<String>,
}

impl LeaseStore {
    /// The lease at `bucket`/`key`, written with `client` (escrow
    /// credentials), with the default time to live.
    pub fn from_client(client: Client, bucket: impl Into<String>, key: impl Into<String>) -> Self {
        LeaseStore {
            client,
            bucket: bucket.into(),
            key: key.into(),
            ttl: DEFAULT_LEASE_TTL,
            expected_owner: None,
            kms_key_id: None,
        }
    }

    /// How long a lease lasts unless renewed (renewed every third of it).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The account that must own the bucket (`ExpectedBucketOwner`).
    pub fn with_expected_owner(mut self, owner: Option<String>) -> Self {
        self.expected_owner = owner;
        self
    }

    /// Encrypt lease objects with this escrow KMS key (SSE-KMS).
    pub fn with_kms_key_id(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }

    /// `s3://bucket/key` of the lease.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease for `holder`: creates it if there is none, takes it
    /// over if it expired (or was released). A lease another run holds is a
    /// [`ErrorKind::PreconditionFailed`] error naming that run's host,
    /// process, run id and the expiry; nothing is written then.
    pub async fn acquire(&self, holder: &LeaseHolder) -> Result<Lease> {
        for _ in 0..ACQUIRE_ATTEMPTS {
            let record = LeaseRecord::new(holder, SystemTime::now(), self.ttl);
            match self.put(&record, Condition::Absent).await {
                Ok(etag) => {
                    return Ok(Lease { store: self.clone(), record, etag, previous: None });
                }
                Err(e) if lost_race(&e) => {}
                Err(e) => return Err(e),
            }
            let Some((current, etag)) = self.read().await? else {
                // Released by deletion (or deleted by hand) meanwhile: try again.
                continue;
            };
            if holder.is(&current) {
                // Our own create went through, and the SDK's retry of it
                // found it there.
                return Ok(Lease { store: self.clone(), record: current, etag, previous: None });
            }
            let now = SystemTime::now();
            if !current.expired_at(now) {
                return Err(self.held(&holder.job, &current));
            }
            let record = LeaseRecord::new(holder, now, self.ttl);
            match self.put(&record, Condition::Matches(&etag)).await {
                Ok(etag) => {
                    return Ok(Lease {
                        store: self.clone(),
                        record,
                        etag,
                        previous: Some(current),
                    });
                }
                Err(e) if lost_race(&e) || e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            ErrorKind::PreconditionFailed,
            "lease",
            self.location(),
            format!(
                "the lease of job {} changed hands {ACQUIRE_ATTEMPTS} times while this run tried \
                 to take it: several runs of the job are starting at once; run it once",
                holder.job
            ),
        ))
    }

    /// The error for a lease `current` holds.
    fn held(&self, job: &str, current: &LeaseRecord) -> Error {
        let expiry = if current.expires_at().is_some() {
            format!("until {}", current.expires)
        } else {
            format!(
                "with an unreadable expiry {:?} (if no run of the job is going, overwrite or \
                 delete the lease object)",
                current.expires
            )
        };
        Error::new(
            ErrorKind::PreconditionFailed,
            "lease",
            self.location(),
            format!(
                "job {job} is already running: {} holds its lease {expiry}; this run leaves the \
                 job alone (wait for that run to finish, or for the lease to expire if it died)",
                current.holder()
            ),
        )
    }

    /// The leases held now (neither expired nor released) among the lease
    /// objects of this bucket whose keys start with `prefix` and hold no
    /// further `/` (the objects of one folder, not of its subfolders), this
    /// store's own excepted: (key, record). A sharded run's part and a whole
    /// run of the same job hold different leases and check each other's
    /// with it.
    pub async fn held_under(&self, prefix: &str) -> Result<Vec<(String, LeaseRecord)>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_expected_bucket_owner(self.expected_owner.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                sdk_error(e, "s3:ListObjectsV2", format!("s3://{}/{prefix}", self.bucket))
            })?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        let now = SystemTime::now();
        let mut held = Vec::new();
        for key in keys.into_iter().filter(|k| *k != self.key) {
            let other = LeaseStore { key: key.clone(), ..self.clone() };
            if let Some((record, _)) = other.read().await?
                && !record.expired_at(now)
            {
                held.push((key, record));
            }
        }
        Ok(held)
    }

    /// The lease object and its ETag, or `None` when there is none.
    pub async fn read(&self) -> Result<Option<(LeaseRecord, String)>> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let err = sdk_error(e, "s3:GetObject", self.location());
                if err.kind() == ErrorKind::NotFound {
                    return Ok(None);
                }
                return Err(err);
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| {
            Error::new(ErrorKind::Transient, "s3:GetObject", self.location(), "reading the lease")
                .with_source(e)
        })?;
        let record: LeaseRecord = serde_json::from_slice(&body.into_bytes()).map_err(|e| {
            Error::new(
                ErrorKind::Failed,
                "lease",
                self.location(),
                format!(
                    "the lease object is not an escrow-sync lease ({e}): if no run of the job is \
                     going, delete it (or overwrite it) and run again"
                ),
            )
        })?;
        Ok(Some((record, etag)))
    }

    /// Writes `record` under `condition`; returns the new ETag.
    async fn put(&self, record: &LeaseRecord, condition: Condition<'_>) -> Result<String> {
        let body = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::new(ErrorKind::Failed, "lease", self.location(), e.to_string()))?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .set_expected_bucket_owner(self.expected_owner.clone());
        req = match condition {
            Condition::Absent => req.if_none_match("*"),
            Condition::Matches(etag) => req.if_match(etag),
        };
        if let Some(key) = &self.kms_key_id {
            req = req.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(key);
        }
        let out = req.send().await.map_err(|e| sdk_error(e, "s3:PutObject", self.location()))?;
        out.e_tag().map(str::to_string).ok_or_else(|| {
            Error::new(
                ErrorKind::Failed,
                "s3:PutObject",
                self.location(),
                "the store returned no ETag: leases need a store with S3 conditional writes",
            )
        })
    }
}

/// The precondition of a lease write.
#[derive(Debug, Clone, Copy)]
enum Condition<'a> {
    /// `If-None-Match: *`.
    Absent,
    /// `If-Match: <etag>`.
    Matches(&'a str),
}

/// Whether `e` says another writer won a conditional write: 412
/// PreconditionFailed, or 409 ConditionalRequestConflict (S3's answer when
/// two conditional writes of one key overlap).
pub(crate) fn lost_race(e: &Error) -> bool {
    e.kind() == ErrorKind::PreconditionFailed
        || e.message().contains("ConditionalRequestConflict")
        || e.chain().contains("(409)")
}

/// A lease this run holds.
#[derive(Debug)]
pub struct Lease {
    store: LeaseStore,
    record: LeaseRecord,
    etag: String,
    previous: Option<LeaseRecord>,
}

impl Lease {
    /// What the lease object says now.
    pub fn record(&self) -> &LeaseRecord {
        &self.record
    }

    /// The expired (or released) record this run took over, if it took one
    /// over; a record without `released` means the run before died holding it.
    pub fn previous(&self) -> Option<&LeaseRecord> {
        self.previous.as_ref()
    }

    /// Where the lease lives.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Extends the expiry to a full time to live from now. Another run
    /// having taken the lease is a [`ErrorKind::PreconditionFailed`] error.
    pub async fn renew(&mut self) -> Result<()> {
        let mut record = self.record.clone();
        record.expires = escrow_sync_core::rfc3339(SystemTime::now() + self.store.ttl);
        match self.store.put(&record, Condition::Matches(&self.etag)).await {
            Ok(etag) => {
                self.etag = etag;
                self.record = record;
                Ok(())
            }
            Err(e) if lost_race(&e) || e.kind() == ErrorKind::NotFound => Err(self.lost(e).await),
            Err(e) => Err(e),
        }
    }

    /// Ends the lease: writes a record that expired now and says so, if the
    /// lease is still ours.
    pub async fn release(self) -> Result<()> {
        let now = escrow_sync_core::rfc3339(SystemTime::now());
        let mut record = self.record.clone();
        record.expires = now.clone();
        record.released = Some(now);
        match self.store.put(&record, Condition::Matches(&self.etag)).await {
            Ok(_) => Ok(()),
            Err(e) if lost_race(&e) || e.kind() == ErrorKind::NotFound => Err(self.lost(e).await),
            Err(e) => Err(e),
        }
    }

    /// The error for a lease another run took, naming that run if the
    /// lease object can be read.
    async fn lost(&self, cause: Error) -> Error {
        let by = match self.store.read().await {
            Ok(Some((r, _))) => format!(" by {} (until {})", r.holder(), r.expires),
            _ => String::new(),
        };
        Error::new(
            ErrorKind::PreconditionFailed,
            "lease",
            self.store.location(),
            format!(
                "this run lost the lease of job {} (held since {}, last expiry {}): it was taken \
                 over{by}; the job was stopped so two runs never work on it at once (renewals \
                 fell behind: raise lease_ttl_seconds, or check the clocks of the hosts)",
                self.record.job, self.record.started, self.record.expires
            ),
        )
        .with_source(cause)
    }

    /// Renews the lease in a background task every third of its time to
    /// live until [`LeaseGuard::release`]. When the lease is lost (another
    /// run took it, or renewals failed until it expired) the task cancels
    /// `job` so the job stops starting new work.
    pub fn keep_alive(self, job: CancellationToken) -> LeaseGuard {
        let stop = CancellationToken::new();
        let every = (self.store.ttl / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(renew_until(self, every, stop.clone(), job));
        LeaseGuard { stop, task }
    }
}

/// The renewal loop: returns the lease when stopped, or why it was lost.
async fn renew_until(
    mut lease: Lease,
    every: Duration,
    stop: CancellationToken,
    job: CancellationToken,
) -> std::result::Result<Lease, Error> {
    let mut wait = every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(lease),
            _ = tokio::time::sleep(wait) => {}
        }
        match lease.renew().await {
            Ok(()) => wait = every,
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                job.cancel();
                return Err(e);
            }
            Err(e) => {
                // Transient or unexpected: keep trying while the lease lasts.
                let expired = lease.record.expired_at(SystemTime::now());
                if expired {
                    job.cancel();
                    return Err(Error::new(
                        ErrorKind::Failed,
                        "lease",
                        lease.location(),
                        format!(
                            "the lease of job {} expired at {} because it could not be renewed; \
                             the job was stopped so two runs never work on it at once",
                            lease.record.job, lease.record.expires
                        ),
                    )
                    .with_source(e));
                }
                tracing::warn!("renewing the lease {}: {}", lease.location(), e.chain());
                wait = (every / 4).max(Duration::from_millis(10));
            }
        }
    }
}

/// A lease being renewed in the background; release it when the job ends.
#[derive(Debug)]
pub struct LeaseGuard {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::result::Result<Lease, Error>>,
}

impl LeaseGuard {
    /// Whether the renewal task has ended (the lease was lost).
    pub fn is_lost(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops renewing and releases the lease. An error says the lease was
    /// lost while the job ran (the job was then cancelled) or could not be
    /// released (it then expires by itself).
    pub async fn release(self) -> Result<()> {
        match self.end().await {
            LeaseEnd::Released => Ok(()),
            LeaseEnd::Lost(e) | LeaseEnd::NotReleased(e) => Err(e),
        }
    }

    /// Stops renewing and releases the lease, telling a lease lost while
    /// the job ran from one that could not be released.
    pub async fn end(self) -> LeaseEnd {
        self.stop.cancel();
        match self.task.await {
            Ok(Ok(lease)) => match lease.release().await {
                Ok(()) => LeaseEnd::Released,
                Err(e) if e.message().contains("lost the lease") => LeaseEnd::Lost(e),
                Err(e) => LeaseEnd::NotReleased(e),
            },
            Ok(Err(lost)) => LeaseEnd::Lost(lost),
            Err(e) => LeaseEnd::NotReleased(Error::new(
                ErrorKind::Failed,
                "lease",
                "renewal task",
                format!("the lease renewal task ended abnormally: {e}"),
            )),
        }
    }
}

/// How a kept lease ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum LeaseEnd {
    /// Released: the next run takes it over at once.
    Released,
    /// Another run took it while the job ran (the job was cancelled), or
    /// renewals failed until it expired.
    Lost(Error),
    /// Still ours, but the release could not be written: it expires by
    /// itself.
    NotReleased(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_expires() {
        let holder =
            LeaseHolder { job: "assets".into(), host: "h1".into(), pid: 42, run_id: "r1".into() };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_899_661);
        let r = LeaseRecord::new(&holder, t0, Duration::from_secs(600));
        assert_eq!(r.started, "2026-11-28T21:01:01Z");
        assert_eq!(r.expires, "2026-11-28T21:11:01Z");
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("released"), "{json}");
        let back: LeaseRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(!r.expired_at(t0 + Duration::from_secs(599)));
        assert!(r.expired_at(t0 + Duration::from_secs(600)));
        assert_eq!(r.holder(), "host h1 pid 42 run r1");
        let bad = LeaseRecord { expires: "soon".into(), ..r };
        assert!(!bad.expired_at(t0 + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn races_are_told_apart_from_other_errors() {
        let e = |kind, msg: &str| Error::new(kind, "s3:PutObject", "s3://b/k", msg);
        assert!(lost_race(&e(ErrorKind::PreconditionFailed, "PreconditionFailed (412)")));
        assert!(lost_race(&e(ErrorKind::Failed, "ConditionalRequestConflict (409): busy")));
        assert!(!lost_race(&e(ErrorKind::AccessDenied, "AccessDenied (403)")));
        assert!(!lost_race(&e(ErrorKind::Transient, "InternalError (500)")));
    }
}
