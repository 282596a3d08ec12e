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
const MAX_LEDGER_OBJECT: u64 = 64 << 20;

/// The longest a locked write waits in memory before the ledger holds it.
const FLUSH_AFTER: Duration = Duration::from_secs(60);

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
    /// Whether this pass swept every copy escrow holds (the first pass, and
    /// once per lock period after).
    pub swept: bool,
    /// Copies renewed because the primary could not say whether it still
    /// holds them (refused or unreachable): kept locked.
    pub unchecked: u64,
}

impl Renewal {
    /// A job's outcome with its renewal pass (`None`: no pass, as in
    /// `verify`): the renewal folded into the report ([`Renewal::fold`]),
    /// or, when the job failed, logged ([`Renewal::log`]) and the job's
    /// error returned.
    pub fn settle(
        run: Result<Report>,
        renewal: Option<Result<Renewal>>,
        job: &str,
        what: &str,
    ) -> Result<Report> {
        match run {
            Ok(mut report) => {
                if let Some(renewal) = renewal {
                    Renewal::fold(renewal, what, &mut report);
                }
                Ok(report)
            }
            Err(e) => {
                if let Some(renewal) = &renewal {
                    Renewal::log(renewal, job, what);
                }
                Err(e)
            }
        }
    }

    /// Tells a renewal pass's outcome where no report carries it (a job
    /// that failed, a run stopped before its jobs): its summary as a
    /// warning, each copy that could not be renewed and a ledger that could
    /// not be read as errors.
    pub fn log(result: &Result<Renewal>, job: &str, what: &str) {
        match result {
            Ok(r) => {
                if let Some(line) = r.summary(what) {
                    tracing::warn!(job, "{line}");
                }
                for f in &r.failures {
                    tracing::error!(job, key = %f.key, error = %f.error, "{what}: retention not renewed");
                }
            }
            Err(e) => tracing::error!(job, error = %e.chain(), "{what}: retention not renewed"),
        }
    }

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
        if self.renewed == 0
            && self.lapsing == 0
            && self.dropped == 0
            && self.unchecked == 0
            && self.failures.is_empty()
            && !self.swept
        {
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
        if self.dropped > 0 {
            parts.push(format!(
                "{} ledger entries name no escrow copy any more (every version gone)",
                self.dropped
            ));
        }
        if self.unchecked > 0 {
            parts.push(format!(
                "{} renewed without the primary saying it still holds them (it could not be asked)",
                self.unchecked
            ));
        }
        if !self.failures.is_empty() {
            parts.push(format!(
                "{} could not be renewed (tried again next run)",
                self.failures.len()
            ));
        }
        if self.started {
            parts.push("the retention ledger now holds every copy".to_string());
        } else if self.swept {
            parts.push("every copy swept (once per lock period)".to_string());
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
            let since = *p.since.get_or_insert_with(SystemTime::now);
            p.keys.push(key.to_string());
            // Full, or held long enough: what a crash would lose stays small.
            p.keys.len() >= BATCH || since.elapsed().unwrap_or_default() >= FLUSH_AFTER
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

    /// Enters locked writes whose retention ends at `until` (a Batch
    /// Operations job's, fixed when the job was created) in the ledger,
    /// filed under that day. Nothing without Object Lock.
    pub(crate) async fn ledger_file(&self, until: SystemTime, keys: &[String]) -> Result<()> {
        if self.protection().object_lock.is_none() {
            return Ok(());
        }
        // In ledger objects of at most BATCH entries, as the renewal pass
        // reads them (a larger object is not taken for escrow-sync's).
        for chunk in keys.chunks(BATCH) {
            self.write_ledger(&day(until), chunk).await?;
        }
        Ok(())
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
        self.put_own(&key, body, "application/x-ndjson").await
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
        self.renew_pass(still_wanted, true).await
    }

    /// [`S3Sink::renew_retention`] of the ledger's due days only: no sweep,
    /// and nothing written where no ledger was started (a run that stopped
    /// before its jobs changes nothing but the locks already scheduled).
    pub async fn renew_due<F, Fut>(&self, still_wanted: F) -> Result<Renewal>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        self.renew_pass(still_wanted, false).await
    }

    async fn renew_pass<F, Fut>(&self, still_wanted: F, may_sweep: bool) -> Result<Renewal>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let Some(lock) = self.protection().object_lock else { return Ok(Renewal::default()) };
        self.flush_ledger_with(lock).await?;
        let now = SystemTime::now();
        let due = day(now + days(lock.renew_within_days));
        let prefix = self.ledger_prefix();
        let entries = self.list_own(&prefix).await?;
        let mut renewal = Renewal::default();
        let until = now + days(lock.days);
        let pass = Pass { lock, now, until, still_wanted: &still_wanted };
        // A key named by several due objects (a batch written again after
        // a failed removal; a copy filed by this run and by a sweep) is
        // renewed and filed once. Only due keys are remembered: a sweep's
        // keys are not (memory stays with the window, not the bucket), so a
        // key both swept and due is looked at twice once per lock period.
        let mut seen = HashSet::new();
        // The sweep: every copy escrow holds, batch by batch (those locked
        // beyond the window are only filed). On a job's first pass with a
        // lock, and again once a lock period has gone by since the last
        // one: whatever never reached the ledger (a crash before a batch
        // was written) is found and locked before it could lapse.
        let sweep_every = days(lock.days.saturating_sub(lock.renew_within_days).max(1));
        let swept = entries.iter().find(|(k, _, _)| k == STARTED).map(|(_, _, m)| *m);
        let sweep = may_sweep
            && match swept {
                None => true,
                Some(at) => {
                    at.is_none_or(|at| now.duration_since(at).unwrap_or_default() >= sweep_every)
                }
            };
        if sweep {
            let dest = self.dest_prefix().to_string();
            let mut copies = self
                .list(&Scope::with_prefix(self.ledger_scope()))
                .map_ok(|item| format!("{dest}{}", item.key))
                // Not escrow-sync's own folders below the scope (another
                // store's ledger or journal).
                .try_filter(|key| futures::future::ready(!in_own_folder(key)))
                .try_chunks(BATCH);
            while let Some(keys) = copies.try_next().await.map_err(|e| e.1)? {
                self.renew_batch(keys, &pass, &mut HashSet::new(), &mut renewal).await;
            }
            // The listing is complete; keys that failed are filed under
            // today, so the next run tries them again.
            self.write_ledger_marker(&prefix).await?;
            renewal.started = swept.is_none();
            renewal.swept = true;
        }
        for (name, size, _) in entries {
            // `<YYYY-MM-DD>/<batch>`: due when the day is within the window.
            if !name.split_once('/').is_some_and(|(d, _)| d.len() == 10 && d <= due.as_str()) {
                continue;
            }
            let keys = match self.read_ledger(&prefix, &name, size).await {
                Ok(keys) => keys,
                // Another run (the manifests' ledger is shared) settled it.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
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
        let results: Vec<(String, Result<Settled>)> = futures::stream::iter(keys)
            .map(|key| async move {
                let settled = self.renew_one(&key, pass).await;
                (key, settled)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let today = day(pass.now);
        let mut filed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, settled) in results {
            match settled {
                Ok(s) => {
                    renewal.renewed += s.renewed;
                    renewal.current += s.current;
                    renewal.unchecked += u64::from(s.unchecked);
                    if s.lapsing {
                        renewal.lapsing += 1;
                    }
                    match s.next {
                        Some(d) => filed.entry(d).or_default().push(key),
                        None => renewal.dropped += 1,
                    }
                }
                Err(e) => {
                    // Tried again by the next run.
                    renewal.failures.push(Failure::new(key.as_str(), &e, 1));
                    filed.entry(today.clone()).or_default().push(key);
                }
            }
        }
        // Filed again before the due object is removed.
        let mut whole = true;
        for (d, keys) in &filed {
            if let Err(e) = self.write_ledger(d, keys).await {
                whole = false;
                renewal.failures.push(Failure::new(format!("{}{d}/", self.ledger_prefix()), &e, 1));
            }
        }
        whole
    }

    async fn read_ledger(&self, prefix: &str, name: &str, size: u64) -> Result<Vec<String>> {
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
        let body = self.get_own(&key).await?;
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

    /// Renews every version escrow keeps of `key` whose lock ends within
    /// the window (a rewritten object's earlier versions, and versions under
    /// a delete marker, included), when `still_wanted(key)` keeps it; says
    /// when the key is due next.
    async fn renew_one<F, Fut>(&self, key: &str, pass: &Pass<'_, F>) -> Result<Settled>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let Pass { lock, now, until, still_wanted } = *pass;
        let window = now + days(lock.renew_within_days);
        let mut settled = Settled::default();
        let mut next: Option<SystemTime> = None;
        let earliest = |t: SystemTime, next: &mut Option<SystemTime>| {
            *next = Some(next.map_or(t, |n| n.min(t)));
        };
        let mut wanted: Option<bool> = None;
        for version in self.versions_of(key).await? {
            let head = match self.head_escrow(key, Some(&version)).await {
                Ok(head) => head,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let held =
                head.object_lock_retain_until_date().and_then(|d| SystemTime::try_from(*d).ok());
            if let Some(held) = held
                && held > window
            {
                settled.current += 1;
                earliest(held, &mut next);
                continue;
            }
            let keep = match wanted {
                Some(w) => w,
                None => {
                    let w = match still_wanted(key.to_string()).await {
                        Ok(w) => w,
                        Err(e) => {
                            // The primary cannot say (refused, unreachable):
                            // keep the copy locked rather than let it lapse.
                            tracing::warn!(key, error = %e.chain(), "could not tell whether the primary still holds it: renewed");
                            settled.unchecked = true;
                            true
                        }
                    };
                    wanted = Some(w);
                    w
                }
            };
            if !keep {
                // Its lock runs out on its date; looked at again every run
                // until then (the object may come back).
                if held.is_some_and(|h| h > now) {
                    settled.lapsing = true;
                    earliest(now, &mut next);
                }
                continue;
            }
            if held.is_some_and(|h| h >= until) {
                earliest(held.unwrap_or(until), &mut next);
                settled.current += 1;
                continue;
            }
            // A COMPLIANCE lock cannot become GOVERNANCE; keep the stronger.
            let mode = match (head.object_lock_mode(), lock.mode) {
                (Some(aws_sdk_s3::types::ObjectLockMode::Compliance), _)
                | (_, LockMode::Compliance) => {
                    aws_sdk_s3::types::ObjectLockRetentionMode::Compliance
                }
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
            settled.renewed += 1;
            earliest(until, &mut next);
        }
        settled.next = next.map(day);
        Ok(settled)
    }

    /// The version ids escrow keeps of exactly `key`, newest first (delete
    /// markers left out: the versions under one are still escrow's).
    async fn versions_of(&self, key: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client()
                .list_object_versions()
                .bucket(self.bucket())
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .set_expected_bucket_owner(self.owner().map(str::to_string))
                .send()
                .paced(self.pacer())
                .await
                .map_err(|e| s3_error(e, "s3:ListObjectVersions", url(self.bucket(), key)))?;
            let mut past = false;
            for v in page.versions() {
                if v.key() != Some(key) {
                    // Longer keys sort after this one: its versions are done.
                    past = true;
                    break;
                }
                if let Some(id) = v.version_id().filter(|id| *id != "null") {
                    out.push(id.to_string());
                }
            }
            if past || !page.is_truncated().unwrap_or(false) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    async fn write_ledger_marker(&self, prefix: &str) -> Result<()> {
        self.put_own(&format!("{prefix}{STARTED}"), Vec::new(), "text/plain").await
    }

    /// Removes a due ledger object whose entries are all filed again (best
    /// effort: a leftover is read again, at the cost of its HEADs).
    async fn remove_ledger(&self, prefix: &str, name: &str) {
        self.delete_own(&format!("{prefix}{name}"), "retention ledger object").await;
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

/// What became of one key's versions.
#[derive(Default)]
struct Settled {
    renewed: u64,
    current: u64,
    lapsing: bool,
    unchecked: bool,
    /// The day the key is due next; `None`: nothing left to renew.
    next: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    /// A Batch Operations job's copies are filed under the job's own day in
    /// ledger objects the renewal pass reads (at most BATCH entries each).
    #[tokio::test]
    async fn a_jobs_copies_are_filed_under_its_day_in_readable_objects() {
        let keys_seen = Arc::new(Mutex::new(Vec::new()));
        let seen = keys_seen.clone();
        let put = mock!(aws_sdk_s3::Client::put_object)
            .match_requests(move |r| {
                let lines = r.body().bytes().map(|b| b.split(|c| *c == b'\n').count() - 1);
                seen.lock().unwrap().push((r.key().unwrap_or("").to_string(), lines));
                true
            })
            .then_output(|| aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build());
        let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put]);
        let sink = S3Sink::from_client(client, "escrow").with_protection(
            crate::Protection::new()
                .with_object_lock(Some(ObjectLock::new(LockMode::Governance, 30))),
        );
        let keys: Vec<String> = (0..2 * BATCH + 5).map(|i| format!("k{i}")).collect();
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1_797_000_000);
        sink.ledger_file(until, &keys).await.unwrap();
        let seen = keys_seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{:?}", seen.iter().map(|(_, n)| n).collect::<Vec<_>>());
        for (key, lines) in &seen {
            assert!(key.starts_with(&format!("{RETENTION_DIR}2026-12-11/")), "{key}");
            assert!(lines.is_some_and(|n| n <= BATCH), "{key}: {lines:?}");
        }
    }
}
