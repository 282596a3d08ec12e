//! Rolling Object Lock retention (issue 17, point 1).
//!
//! Retention is set on a copy when it is made, for `days`. An object that
//! never changes in the primary is never copied again, so without renewal
//! its escrow copy would be unlocked `days` later. Every run therefore
//! extends, to now + `days`, the retention of the escrow copies whose
//! retain-until date falls within `renew_within_days`, and only those, so a
//! steady-state run costs O(copies in the window), not O(bucket).
//!
//! S3 lists no retention dates, so the sink keeps a **ledger** of its locked
//! writes under `<dest_prefix>.escrow-sync-retention/`: one small object per
//! batch of writes, `<YYYY-MM-DD>/<batch>.jsonl`, filed under the day the
//! batch's retention ends (the earliest write of the batch), each line
//! `{"key": "<key under the destination prefix>"}`. A renewal pass reads
//! the days that are due, and for each key:
//!
//! 1. HeadObject of the escrow copy (its current version): gone, or not this
//!    job's (no version), and the entry is dropped; retention still beyond
//!    the window, and the entry is filed again under its real day.
//! 2. `still_wanted(key)` (an S3 job: the object is still in the primary;
//!    records: always): if not, the entry is dropped and the copy's lock
//!    lapses on its date (counted as `lapsing`).
//! 3. PutObjectRetention of that version to now + `days`, never shorter than
//!    it is (a COMPLIANCE lock stays COMPLIANCE), and the entry is filed
//!    under the new day.
//!
//! A due ledger object is removed (a delete marker: the bucket is
//! versioned) only once all its entries are filed again or dropped; any
//! failure leaves it for the next run. A job's first pass with a lock (no
//! `started` marker) enters every copy escrow holds, once.
//!
//! The ledger is a schedule, not the protection: an escrow insider who
//! deletes it stops renewals, and `verify` then reports each copy whose lock
//! lapsed (`unprotected`); it cannot unlock anything. Entries name keys
//! under the destination prefix only, and keys under the ledger's own folder
//! are never copied from the primary.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use escrow_sync_core::{Error, ErrorKind, Failure, Report, Result, Scope, Sink, time::rfc3339};

use crate::protect::{LockMode, ObjectLock};
use crate::sink::S3Sink;
use crate::util::{PaceExt, s3_error, url};

/// The folder of the retention ledger, under the job's destination prefix.
/// Keys under it are never listed as escrow items nor copied from the
/// primary.
pub const RETENTION_DIR: &str = escrow_sync_core::layout::RETENTION_DIR;

/// Entries per ledger object: a batch is written once it holds this many.
const BATCH: usize = 10_000;

/// The largest ledger object read (a batch of [`BATCH`] keys of at most
/// 1,024 bytes, JSON-escaped): anything larger is not escrow-sync's.
const MAX_LEDGER_OBJECT: i64 = 64 << 20;

/// Renewals in flight at once.
const CONCURRENCY: usize = 16;

/// The marker of a ledger that holds every copy (the first pass is done).
const STARTED: &str = "started";

/// The locked writes not yet in the ledger, shared by a sink's clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger(Arc<Mutex<Pending>>);

#[derive(Debug, Default)]
struct Pending {
    keys: Vec<String>,
    since: Option<SystemTime>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
}

/// What a renewal pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Renewal {
    /// Copies whose retention was extended.
    pub renewed: u64,
    /// Copies looked at whose retention still ends after the window.
    pub current: u64,
    /// Copies no longer wanted (gone from the primary): their locks lapse.
    pub lapsing: u64,
    /// Entries that name no escrow copy any more.
    pub dropped: u64,
    /// The retain-until date given to the renewed copies.
    pub until: Option<SystemTime>,
    /// Copies that could not be renewed (each kept for the next run).
    pub failures: Vec<Failure>,
    /// Whether this pass entered every copy escrow holds (a job's first
    /// pass with a lock).
    pub started: bool,
}

impl Renewal {
    /// Tells a renewal pass's outcome in `report`: its summary as a note,
    /// each copy that could not be renewed as a failure (its lock would
    /// lapse), and a pass that could not read the ledger as one failure.
    /// `what` names the copies (e.g. "escrow copies", "run manifests").
    pub fn fold(result: Result<Renewal>, what: &str, report: &mut Report) {
        match result {
            Ok(r) => {
                report.notes.extend(r.summary(what));
                report.failed += r.failures.len() as u64;
                report.failures.extend(r.failures);
            }
            Err(e) => {
                report.failed += 1;
                report.failures.push(Failure::new(format!("(retention of {what})"), &e, 1));
            }
        }
    }

    /// One line for a run report, or `None` when nothing was due.
    pub fn summary(&self, what: &str) -> Option<String> {
        if self.renewed == 0 && self.lapsing == 0 && self.failures.is_empty() && !self.started {
            return None;
        }
        let mut parts = vec![format!("retention: renewed {} {what}", self.renewed)];
        if let Some(until) = self.until {
            parts[0].push_str(&format!(" until {}", &rfc3339(until)[..10]));
        }
        if self.lapsing > 0 {
            parts.push(format!(
                "{} no longer in the primary (their locks lapse on their dates)",
                self.lapsing
            ));
        }
        if !self.failures.is_empty() {
            parts.push(format!("{} could not be renewed", self.failures.len()));
        }
        if self.started {
            parts.push("the retention ledger now holds every copy".to_string());
        }
        Some(parts.join("; "))
    }
}

fn day(t: SystemTime) -> String {
    rfc3339(t)[..10].to_string()
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

impl S3Sink {
    /// Where this sink's ledger lives and what it covers:
    /// `<dest_prefix><scope>` ([`S3Sink::with_ledger_scope`]).
    fn ledger_root(&self) -> String {
        format!("{}{}", self.dest_prefix(), self.ledger_scope())
    }

    fn ledger_prefix(&self) -> String {
        format!("{}{RETENTION_DIR}", self.ledger_root())
    }

    /// Enters a locked write (`key` under the destination prefix) in the
    /// ledger; writes a batch once it is full.
    pub(crate) async fn ledger_record(&self, key: &str) -> Result<()> {
        let Some(lock) = self.protection().object_lock else { return Ok(()) };
        let full = {
            let mut p = self.ledger().0.lock().unwrap_or_else(|e| e.into_inner());
            p.since.get_or_insert_with(SystemTime::now);
            p.keys.push(key.to_string());
            p.keys.len() >= BATCH
        };
        if full { self.flush_ledger_with(lock).await } else { Ok(()) }
    }

    /// Writes the locked writes not yet in the retention ledger. Call it
    /// once the copies are done ([`crate::S3CopyJob`] does; so does
    /// [`S3Sink::renew_retention`]).
    pub async fn flush_ledger(&self) -> Result<()> {
        match self.protection().object_lock {
            Some(lock) => self.flush_ledger_with(lock).await,
            None => Ok(()),
        }
    }

    async fn flush_ledger_with(&self, lock: ObjectLock) -> Result<()> {
        let (keys, since) = {
            let mut p = self.ledger().0.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut p.keys), p.since.take())
        };
        let Some(since) = since else { return Ok(()) };
        // The earliest write's retention ends first: filing the batch under
        // its day renews none of them late.
        let res = self.write_ledger(&day(since + days(lock.days)), &keys).await;
        if res.is_err() {
            // Kept for the next flush.
            let mut p = self.ledger().0.lock().unwrap_or_else(|e| e.into_inner());
            p.keys.extend(keys);
            p.since = Some(p.since.map_or(since, |s| s.min(since)));
        }
        res
    }

    async fn write_ledger(&self, day: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for key in keys {
            serde_json::to_writer(&mut body, &Entry { key: key.clone() })
                .map_err(|e| Error::new(ErrorKind::Failed, "ledger", key.clone(), e.to_string()))?;
            body.push(b'\n');
        }
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let key = format!(
            "{}{day}/{}-{}-{:08x}.jsonl",
            self.ledger_prefix(),
            now.as_nanos(),
            std::process::id(),
            batch_id()
        );
        self.client()
            .put_object()
            .bucket(self.bucket())
            .key(&key)
            .body(ByteStream::from(body))
            .content_type("application/x-ndjson")
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:PutObject", url(self.bucket(), &key)))?;
        Ok(())
    }

    /// The rolling renewal pass (see the module docs): extends to now +
    /// `days` the retention of each escrow copy in the ledger whose lock
    /// ends within `renew_within_days` and that `still_wanted` (called with
    /// the key under the destination prefix) keeps. Does nothing without
    /// Object Lock. An error is returned only when the ledger itself cannot
    /// be read; copies that fail are listed in [`Renewal::failures`].
    pub async fn renew_retention<F, Fut>(&self, still_wanted: F) -> Result<Renewal>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let Some(lock) = self.protection().object_lock else { return Ok(Renewal::default()) };
        self.flush_ledger_with(lock).await?;
        let now = SystemTime::now();
        let due = day(now + days(lock.renew_within_days));
        let prefix = self.ledger_prefix();
        let entries: Vec<(String, i64)> = crate::list::list_objects(crate::list::ListRequest {
            client: self.client().clone(),
            bucket: self.bucket().to_string(),
            prefix: prefix.clone(),
            strip: prefix.len(),
            owner: self.owner().map(str::to_string),
            pacer: self.pacer().cloned(),
            ranges: 1,
        })
        .map_ok(|item| (item.key, item.size as i64))
        .try_collect()
        .await?;
        let mut renewal = Renewal::default();
        let until = now + days(lock.days);
        let pass = Pass { lock, now, until, still_wanted: &still_wanted };
        // A key filed twice (a copy made by this run and entered again by
        // a first pass; a batch written again after a failed removal) is
        // renewed and filed once.
        let mut seen = HashSet::new();
        if !entries.iter().any(|(k, _)| k == STARTED) {
            // The first pass with a lock: every copy escrow holds, batch by
            // batch (those already locked beyond the window are only filed).
            let dest = self.dest_prefix().to_string();
            let mut copies = self
                .list(&Scope::with_prefix(self.ledger_scope()))
                .map_ok(|item| format!("{dest}{}", item.key))
                // Not escrow-sync's own folders below the scope (another
                // store's ledger or journal).
                .try_filter(|key| futures::future::ready(!in_own_folder(key)))
                .try_chunks(BATCH);
            let mut whole = true;
            while let Some(keys) = copies.try_next().await.map_err(|e| e.1)? {
                whole &= self.renew_batch(keys, &pass, &mut seen, &mut renewal).await;
            }
            if whole {
                self.write_ledger_marker(&prefix).await?;
                renewal.started = true;
            }
        }
        for (name, size) in entries {
            // `<YYYY-MM-DD>/<batch>`: due when the day is within the window.
            if !name.split_once('/').is_some_and(|(d, _)| d.len() == 10 && d <= due.as_str()) {
                continue;
            }
            let keys = match self.read_ledger(&prefix, &name, size).await {
                Ok(keys) => keys,
                Err(e) => {
                    renewal.failures.push(Failure::new(format!("{prefix}{name}"), &e, 1));
                    continue;
                }
            };
            if self.renew_batch(keys, &pass, &mut seen, &mut renewal).await {
                self.remove_ledger(&prefix, &name).await;
            }
        }
        if renewal.renewed > 0 {
            renewal.until = Some(until);
        }
        Ok(renewal)
    }

    /// Renews one batch of keys and files each again; whether every key is
    /// settled (renewed, current or dropped, and filed).
    async fn renew_batch<F, Fut>(
        &self,
        mut keys: Vec<String>,
        pass: &Pass<'_, F>,
        seen: &mut HashSet<String>,
        renewal: &mut Renewal,
    ) -> bool
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        keys.retain(|k| seen.insert(k.clone()));
        let results: Vec<(String, Result<Step>)> = futures::stream::iter(keys)
            .map(|key| async move {
                let step = self.renew_one(&key, pass).await;
                (key, step)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut whole = true;
        let mut filed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, step) in results {
            match step {
                Ok(Step::Renewed) => {
                    renewal.renewed += 1;
                    filed.entry(day(pass.until)).or_default().push(key);
                }
                Ok(Step::Current(d)) => {
                    renewal.current += 1;
                    filed.entry(d).or_default().push(key);
                }
                Ok(Step::Lapsing) => renewal.lapsing += 1,
                Ok(Step::Gone) => renewal.dropped += 1,
                Err(e) => {
                    whole = false;
                    renewal.failures.push(Failure::new(key, &e, 1));
                }
            }
        }
        // Filed again before the due object is removed.
        for (d, keys) in &filed {
            if let Err(e) = self.write_ledger(d, keys).await {
                whole = false;
                renewal.failures.push(Failure::new(format!("{}{d}/", self.ledger_prefix()), &e, 1));
            }
        }
        whole
    }

    async fn read_ledger(&self, prefix: &str, name: &str, size: i64) -> Result<Vec<String>> {
        let key = format!("{prefix}{name}");
        if size > MAX_LEDGER_OBJECT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "s3:GetObject",
                url(self.bucket(), &key),
                format!(
                    "{size} bytes: larger than any retention ledger object escrow-sync writes, so \
                     not read; remove it (escrow-sync's ledger folder holds only its own objects)"
                ),
            ));
        }
        let body = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:GetObject", url(self.bucket(), &key)))?
            .body
            .collect()
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Transient, "s3:GetObject", url(self.bucket(), &key), "")
                    .with_source(e)
            })?
            .into_bytes();
        let root = self.ledger_root();
        let mut keys = Vec::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let entry: Entry = serde_json::from_slice(line).map_err(|e| {
                Error::new(
                    ErrorKind::Unsupported,
                    "s3:GetObject",
                    url(self.bucket(), &key),
                    format!("not a retention ledger object of escrow-sync's ({e}); remove it"),
                )
            })?;
            // Only copies this ledger covers: under its root, outside
            // escrow-sync's own folders.
            if entry.key.starts_with(&root) && !in_own_folder(&entry.key) {
                keys.push(entry.key);
            }
        }
        Ok(keys)
    }

    async fn renew_one<F, Fut>(&self, key: &str, pass: &Pass<'_, F>) -> Result<Step>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let head = match self.head_escrow(key, None).await {
            Ok(head) => head,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Step::Gone),
            Err(e) => return Err(e),
        };
        let Some(version) = head.version_id().filter(|v| *v != "null").map(str::to_string) else {
            return Ok(Step::Gone);
        };
        let held = head.object_lock_retain_until_date().and_then(|d| SystemTime::try_from(*d).ok());
        let Pass { lock, now, until, still_wanted } = *pass;
        let window = now + days(lock.renew_within_days);
        if let Some(held) = held
            && held > window
        {
            return Ok(Step::Current(day(held)));
        }
        if !still_wanted(key.to_string()).await? {
            return Ok(Step::Lapsing);
        }
        if held.is_some_and(|h| h >= until) {
            return Ok(Step::Current(day(held.unwrap_or(until))));
        }
        // A COMPLIANCE lock cannot become GOVERNANCE; keep the stronger.
        let mode = match (head.object_lock_mode(), lock.mode) {
            (Some(aws_sdk_s3::types::ObjectLockMode::Compliance), _)
            | (_, LockMode::Compliance) => aws_sdk_s3::types::ObjectLockRetentionMode::Compliance,
            _ => aws_sdk_s3::types::ObjectLockRetentionMode::Governance,
        };
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(mode)
            .retain_until_date(aws_smithy_types::DateTime::from(until))
            .build();
        self.client()
            .put_object_retention()
            .bucket(self.bucket())
            .key(key)
            .version_id(&version)
            .retention(retention)
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:PutObjectRetention", url(self.bucket(), key)))?;
        Ok(Step::Renewed)
    }

    async fn write_ledger_marker(&self, prefix: &str) -> Result<()> {
        let key = format!("{prefix}{STARTED}");
        self.client()
            .put_object()
            .bucket(self.bucket())
            .key(&key)
            .body(ByteStream::from_static(b""))
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:PutObject", url(self.bucket(), &key)))?;
        Ok(())
    }

    /// Removes a due ledger object whose entries are all filed again (best
    /// effort: a leftover is read again, at the cost of its HEADs).
    async fn remove_ledger(&self, prefix: &str, name: &str) {
        let key = format!("{prefix}{name}");
        let res = self
            .client()
            .delete_object()
            .bucket(self.bucket())
            .key(&key)
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .send()
            .paced(self.pacer())
            .await;
        if let Err(e) = res {
            let err = s3_error(e, "s3:DeleteObject", url(self.bucket(), &key));
            tracing::warn!(key, error = %err.chain(), "retention ledger object left behind");
        }
    }
}

/// One renewal pass's settings.
struct Pass<'a, F> {
    lock: ObjectLock,
    now: SystemTime,
    until: SystemTime,
    still_wanted: &'a F,
}

impl<F> Clone for Pass<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for Pass<'_, F> {}

enum Step {
    Renewed,
    /// Retention ends after the window: filed under this day.
    Current(String),
    Lapsing,
    Gone,
}

/// Whether any folder of `key` is one of escrow-sync's own.
fn in_own_folder(key: &str) -> bool {
    std::iter::once(key)
        .chain(key.match_indices('/').map(|(i, _)| &key[i + 1..]))
        .any(crate::journal::own_folder)
}

fn batch_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
