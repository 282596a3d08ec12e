//! One DynamoDB table job: the primary's table scanned segment by segment
//! under the read budget, each page compared with what escrow holds (a
//! BatchGetItem on the escrow side, which costs the primary nothing), and
//! only missing or changed items written. A re-run against an unchanged
//! table makes no mutating call; items deleted in the primary stay in
//! escrow; an interrupted run resumes from the checkpoints it saved.
//!
//! The per-item [`escrow_sync_core::Source`] / [`escrow_sync_core::Sink`]
//! pair ([`crate::DynamoDbSource`], [`crate::DynamoDbSink`]) runs under the
//! core executor and the conformance suite, but a Scan returns whole items
//! in no useful order, so listing and then reading each item costs the
//! primary twice the read capacity. This job streams pages of records
//! instead and reports through the same [`escrow_sync_core::Report`].
//!
//! # The mass-change circuit breaker
//!
//! A primary whose every item was rewritten (ransomware) must not take the
//! escrow table with it. A run overwrites an item escrow holds with other
//! content ("a change") only while the changes written so far stay within
//! `max_change_percent` of the escrow items known so far:
//! `(overwritten + 1) * 100 <= max_change_percent * max(seen, count)`, where
//! `seen` counts the items of this run's pages that escrow holds and
//! `count` is the escrow table's own DescribeTable ItemCount (escrow's
//! statistic, which the primary cannot raise; escrow is append-only, so a
//! stale count is only ever low). A change the rule refuses is held back:
//! not written, and its segment's checkpoint is not saved past it, so an
//! interrupted run rescans it. Once the whole table is scanned:
//!
//! - escrow holds fewer than [`MASS_CHANGE_MIN_ITEMS`] items, or all the
//!   changes are within the share of the final escrow count: the held-back
//!   items are re-read from the primary by key (strongly consistent
//!   BatchGetItem, under the read budget) and written. Re-reading keeps only
//!   their keys in memory while the scan runs, and writes what the primary
//!   holds now. (Reporting them as failed for the next run instead would
//!   never converge: the next run would hold them back again.)
//! - otherwise the job reports a finding of kind `mass-change` with the
//!   counts and the first keys, and the held-back changes are not written.
//!
//! Items escrow lacks are not changes: they are always copied. A run that
//! accepts a mass change ([`TableJob::with_accept_mass_change`]) or a
//! `max_change_percent` of 100 holds nothing back.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use futures::{StreamExt, TryStreamExt};

use escrow_sync_core::{
    CancellationToken, CopyReason, Error, ErrorKind, Failure, Finding, Item, ItemKind, ItemLog,
    ItemOutcome, ItemRecord, Job, JobContext, KeyDigest, MassChangeGuard, Mode, ProgressEvent,
    ProgressFn, Report, Result, Source,
};

use crate::checkpoint::{CheckpointStore, SavedScan, TableWatermark};
use crate::compare::{Comparison, compare, tally};
use crate::export::{
    Native, StagingArea, check_reported, generation_id, pitr_window, request_export, wait_export,
};
use crate::history::{Event, History};
use crate::incremental::{
    Change, ExportPlan, Watermark, micros, plan_export, time_text, whole_second,
};
use crate::json::{Record, to_line};
use crate::keys::{KeySchema, KeySetDigest, content_digest};
use crate::pair::item_of;
use crate::scan::{Checkpoint, ScanOptions, TableScanner, starting_points};
use crate::table::{EscrowTable, TableInfo};

/// The mass-change breaker trips only once escrow holds at least this many
/// items of a job (core's rule, [`MassChangeGuard::MIN_ITEMS`]).
pub const MASS_CHANGE_MIN_ITEMS: u64 = MassChangeGuard::MIN_ITEMS;

/// The default `max_change_percent` ([`MassChangeGuard::DEFAULT_PERCENT`]).
pub const DEFAULT_MAX_CHANGE_PERCENT: u8 = MassChangeGuard::DEFAULT_PERCENT;

/// Keys a `mass-change` finding names.
const FIRST_KEYS: usize = 10;

/// Items that could not be written, as DynamoDB JSON lines (the format
/// ImportTable reads), in one file per run created on the first such item.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl DeadLetter {
    /// A dead-letter file for `job` in `dir`, named after the job and the
    /// run's start time.
    pub fn new(dir: impl Into<PathBuf>, job: &str, started: &str) -> Self {
        let safe: String = job
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .collect();
        let stamp: String = started.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        DeadLetter {
            path: dir.into().join(format!("escrow-sync-dead-letter-{safe}-{stamp}.json")),
            file: Mutex::new(None),
        }
    }

    /// Where the file is (or would be).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends `records`, creating the file first if needed.
    pub fn append(&self, records: &[Record]) -> Result<()> {
        use std::io::Write;
        let fail = |e: std::io::Error| {
            Error::new(
                ErrorKind::Failed,
                "write dead-letter file",
                self.path.display().to_string(),
                e.to_string(),
            )
        };
        let mut guard = self.file.lock().expect("dead-letter lock");
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(fail)?;
            }
            *guard = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(fail)?,
            );
        }
        let file = guard.as_mut().expect("opened");
        for r in records {
            writeln!(file, "{}", to_line(r)).map_err(fail)?;
        }
        file.sync_data().map_err(fail)
    }
}

/// A DynamoDB table-to-table job.
///
/// It is a [`Job`]: [`Job::execute`] takes cancellation, progress, the item
/// log, the retry policy (of the scan's reads) and `accept_mass_change` from
/// its [`JobContext`], in place of what [`TableJob::with_cancellation`],
/// [`TableJob::with_progress`], [`TableJob::with_item_log`] and
/// [`TableJob::with_accept_mass_change`] set for [`TableJob::execute`].
#[derive(Clone)]
pub struct TableJob {
    name: String,
    primary: Client,
    source: TableInfo,
    source_account: String,
    keys: KeySchema,
    sink: EscrowTable,
    options: ScanOptions,
    read_units: f64,
    workers: usize,
    checkpoints: Option<CheckpointStore>,
    checkpoint_interval: Duration,
    dead_letter_dir: PathBuf,
    dead_letter: Arc<std::sync::OnceLock<DeadLetter>>,
    started: String,
    cancel: CancellationToken,
    progress: Option<ProgressFn>,
    difference_limit: usize,
    history: Option<Arc<History>>,
    item_log: Option<ItemLog>,
    max_change_percent: u8,
    accept_mass_change: bool,
    incremental: Option<Incremental>,
    scan_state: String,
}

/// How a `native-incremental` table job asks for and reads its exports.
#[derive(Clone)]
struct Incremental {
    native: Native,
    area: StagingArea,
    staging: String,
    data_cap: u64,
}

/// The segment number history objects of changes applied from an
/// incremental export carry (no scan segment has it).
const INCREMENTAL_SEGMENT: u32 = 99_998;

/// Puts applied per page of an incremental export (one escrow lookup and
/// one write round each).
const INCREMENTAL_PAGE: usize = 1000;

/// The segment number history objects of held-back changes written at the
/// end of a run carry (no scan segment has it).
const SETTLE_SEGMENT: u32 = 99_999;

#[derive(Default)]
struct Shared {
    report: Option<Report>,
    checkpoints: BTreeMap<u32, Checkpoint>,
    digests: BTreeMap<u32, (KeySetDigest, KeySetDigest)>,
    wrote_since_save: bool,
    last_save: Option<Instant>,
    saved: bool,
    breaker: Breaker,
}

impl Shared {
    /// The checkpoints safe to save: a segment with held-back changes stays
    /// at the checkpoint before its first one, so a resumed run reads them
    /// again.
    fn savable(&self) -> Vec<Checkpoint> {
        self.checkpoints
            .iter()
            .map(|(segment, c)| self.breaker.frozen.get(segment).unwrap_or(c).clone())
            .collect()
    }
}

/// The mass-change breaker's counts for one run (see the module docs).
#[derive(Default)]
struct Breaker {
    /// The escrow table's ItemCount (DescribeTable) at the start of the run.
    escrow_count: u64,
    /// Items of this run's pages that escrow holds.
    escrow_seen: u64,
    /// Items escrow holds with other content than the primary (written or
    /// held back).
    changed: u64,
    /// Changes written.
    overwritten: u64,
    /// The keys (key attributes) of changes held back.
    held: Vec<Record>,
    /// The first changed keys, for the finding.
    first_keys: Vec<String>,
    /// Segment → the checkpoint before its first held-back change.
    frozen: BTreeMap<u32, Checkpoint>,
}

impl Breaker {
    /// The escrow items known: those seen, or escrow's own count if higher.
    fn escrow_items(&self) -> u64 {
        self.escrow_seen.max(self.escrow_count)
    }

    /// Whether the changes are over `percent` of an escrow of at least
    /// [`MASS_CHANGE_MIN_ITEMS`] items.
    fn over(&self, percent: u8) -> bool {
        MassChangeGuard::new(percent).exceeded(self.changed, self.escrow_items())
    }

    /// `<n> of <m> escrow items (p%) changed in the primary in one run`.
    fn counts(&self) -> String {
        let base = self.escrow_items();
        format!(
            "{} of {base} escrow items ({}%) changed in the primary in one run",
            self.changed,
            self.changed * 100 / base.max(1)
        )
    }
}

impl TableJob {
    /// A job named `name` copying `source` (described in the primary, read
    /// with `primary`, the reader role's client) into `sink`. `started` is
    /// the run's start time (RFC 3339), used in provenance tags and file
    /// names.
    pub fn new(
        name: impl Into<String>,
        primary: Client,
        source: TableInfo,
        source_account: impl Into<String>,
        sink: EscrowTable,
        started: impl Into<String>,
    ) -> Result<Self> {
        let keys = source.key_schema()?;
        Ok(TableJob {
            name: name.into(),
            primary,
            read_units: source.read_budget(25),
            source,
            source_account: source_account.into(),
            keys,
            sink,
            options: ScanOptions::new(),
            workers: 8,
            checkpoints: None,
            checkpoint_interval: Duration::from_secs(30),
            dead_letter_dir: PathBuf::from("."),
            dead_letter: Arc::default(),
            started: started.into(),
            cancel: CancellationToken::new(),
            progress: None,
            difference_limit: 1000,
            history: None,
            item_log: None,
            max_change_percent: DEFAULT_MAX_CHANGE_PERCENT,
            accept_mass_change: false,
            incremental: None,
            scan_state: String::new(),
        })
    }

    /// `mode = "native-incremental"`: a run asks DynamoDB (through the
    /// primary's reader role) for an incremental export of the changes
    /// since the job's watermark, staged in escrow bucket `bucket` (owned by
    /// `bucket_owner`, encrypted with `kms_key_id` when given) under
    /// `<staging_prefix><table>/<generation>/` and read back with `reader`
    /// (escrow credentials). Each staged file is checked against
    /// DynamoDB's manifest (MD5, item count) and each change line against
    /// the key schema and the window; then the puts are applied like a
    /// scan's page (item history first, mass-change breaker), deletions are
    /// counted and never applied, and only then the watermark moves (kept
    /// in the checkpoint table, [`crate::checkpoint::TableWatermark`]). A
    /// first run, or a gap DynamoDB cannot export incrementally, scans the
    /// table; a completed scan's start time becomes the watermark. Needs
    /// [`TableJob::with_checkpoints`].
    pub fn with_native_incremental(
        mut self,
        bucket: impl Into<String>,
        bucket_owner: impl Into<String>,
        kms_key_id: Option<String>,
        staging_prefix: impl Into<String>,
        reader: Arc<dyn Source>,
    ) -> Self {
        let bucket = bucket.into();
        self.incremental = Some(Incremental {
            area: StagingArea { reader, location: format!("s3://{bucket}/") },
            native: Native::new(bucket, bucket_owner, kms_key_id),
            staging: staging_prefix.into(),
            data_cap: crate::export::data_file_cap(crate::export::DEFAULT_FILE_SIZE),
        });
        self
    }

    /// `native-incremental`: how long to wait for an export (default 6
    /// hours), polling at most every `max_poll`.
    pub fn with_export_timeout(mut self, timeout: Duration, max_poll: Duration) -> Self {
        if let Some(i) = &mut self.incremental {
            i.native = i.native.clone().with_timeout(timeout, max_poll);
        }
        self
    }

    /// Keeps item history: before a run writes items into the escrow table,
    /// their previous states (none for new items) are made durable in
    /// `history` ([`crate::history`]). Without it a run warns that a rewrite
    /// in the primary replaces the escrow copy.
    pub fn with_history(mut self, history: Option<History>) -> Self {
        self.history = history.map(Arc::new);
        self
    }

    /// Sends every item's outcome in a run to `log` (a run manifest): in
    /// escrow already, copied, or failed (held back included). `restore
    /// --at` then knows which keys the primary held at each run.
    pub fn with_item_log(mut self, log: Option<ItemLog>) -> Self {
        self.item_log = log;
        self
    }

    /// Logs `item`'s outcome, in a run with an item log.
    fn log_item(&self, item: Item, outcome: ItemOutcome, error: Option<String>) {
        if let Some(log) = &self.item_log {
            let fingerprint = Some(item.fingerprint.clone());
            let mut record = ItemRecord::new(item, outcome);
            record.escrow_fingerprint = fingerprint.filter(|_| outcome != ItemOutcome::Failed);
            record.error = error;
            log(record);
        }
    }

    /// Logs the outcome of a write of `records`: each copied but the dead.
    fn log_written(&self, records: &[Record], w: &crate::table::WriteOutcome) {
        if self.item_log.is_none() {
            return;
        }
        let dead: HashMap<String, String> = w
            .dead
            .iter()
            .filter_map(|(r, e)| Some((self.keys.key_text(r).ok()?, e.chain())))
            .collect();
        for r in records {
            let Ok(item) = item_of(&self.keys, r) else { continue };
            match dead.get(&item.key) {
                Some(e) => self.log_item(item, ItemOutcome::Failed, Some(e.clone())),
                None => self.log_item(item, ItemOutcome::Copied, None),
            }
        }
    }

    /// Writes `records` into the escrow table; with item history, first
    /// makes the states they replace durable (`previous`: escrow's items by
    /// key text, as read before; looked up now when `None`). A failed
    /// history write writes nothing.
    async fn write_recorded(
        &self,
        segment: u32,
        records: Vec<Record>,
        previous: Option<&HashMap<String, Record>>,
    ) -> Result<crate::table::WriteOutcome> {
        if let Some(history) = &self.history {
            let looked_up;
            let previous = match previous {
                Some(p) => p,
                None => {
                    let keys = records
                        .iter()
                        .map(|r| Ok((self.keys.key_text(r)?, self.keys.key_of(r)?)))
                        .collect::<Result<Vec<_>>>()?;
                    looked_up = self.sink.lookup_records(&keys, &self.keys).await?;
                    &looked_up
                }
            };
            let events = records
                .iter()
                .map(|r| {
                    let key = self.keys.key_text(r)?;
                    Ok(Event::now(key.clone(), previous.get(&key), r))
                })
                .collect::<Result<Vec<_>>>()?;
            history.record(segment, &events).await?;
        }
        let logged = if self.item_log.is_some() { records.clone() } else { Vec::new() };
        let w = self.sink.write(records, &self.keys).await?;
        self.log_written(&logged, &w);
        Ok(w)
    }

    /// The mass-change breaker's share (1..=100, default 25): a run
    /// overwrites at most this percentage of the escrow table's items, and
    /// reports a `mass-change` finding when more changed. 100 turns the
    /// breaker off.
    pub fn with_max_change_percent(mut self, percent: u8) -> Self {
        self.max_change_percent = percent.clamp(1, 100);
        self
    }

    /// Lets a run overwrite however many items changed (the operator
    /// confirmed the change is legitimate: `run --accept-mass-change`).
    pub fn with_accept_mass_change(mut self, accept: bool) -> Self {
        self.accept_mass_change = accept;
        self
    }

    /// Whether a run in `mode` holds changes back.
    fn breaker_on(&self, mode: Mode) -> bool {
        mode == Mode::Run && !self.accept_mass_change && self.max_change_percent < 100
    }

    /// Scan options (segments, consistency, page size, retries).
    pub fn with_scan_options(mut self, options: ScanOptions) -> Self {
        self.options = options;
        self
    }

    /// The read budget as a percentage of the source's read capacity.
    pub fn with_read_capacity_percent(mut self, percent: u32) -> Self {
        self.read_units = self.source.read_budget(percent.clamp(1, 100));
        self
    }

    /// The read budget in read units per second.
    pub fn with_read_units(mut self, units: f64) -> Self {
        self.read_units = units.max(1.0);
        self
    }

    /// Segments processed at once.
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Where checkpoints are kept (none: an interrupted run starts over).
    pub fn with_checkpoints(mut self, store: Option<CheckpointStore>) -> Self {
        self.checkpoints = store;
        self
    }

    /// How often a run that is writing saves its checkpoints (besides on
    /// interruption and failure).
    pub fn with_checkpoint_interval(mut self, every: Duration) -> Self {
        self.checkpoint_interval = every;
        self
    }

    /// The dead-letter file (created only when an item could not be written).
    pub fn dead_letter_path(&self) -> PathBuf {
        self.dead_letter().path().to_path_buf()
    }

    /// The directory of the dead-letter file.
    pub fn with_dead_letter_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dead_letter_dir = dir.into();
        self
    }

    /// Stops scheduling new pages when `token` is cancelled.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Receives per-item progress events.
    pub fn with_progress(mut self, f: Option<ProgressFn>) -> Self {
        self.progress = f;
        self
    }

    /// Plan: at most this many differences listed.
    pub fn with_difference_limit(mut self, n: usize) -> Self {
        self.difference_limit = n;
        self
    }

    /// The read budget, read units per second.
    pub fn read_units(&self) -> f64 {
        self.read_units
    }

    /// A segment count for a table of `size_bytes` scanned by `workers`:
    /// one segment per GiB, at least one per worker, at most 1,000,000.
    pub fn default_segments(size_bytes: u64, workers: usize) -> u32 {
        let by_size = size_bytes.div_ceil(1 << 30);
        by_size.max(workers as u64).clamp(1, 1_000_000) as u32
    }

    fn emit(&self, e: ProgressEvent) {
        if let Some(p) = &self.progress {
            p(&e);
        }
    }

    /// Runs the job in `mode`: plan (compare, write nothing), run (create
    /// or fix the escrow table, write what is missing or changed; with
    /// [`TableJob::with_native_incremental`], only the changes since the
    /// watermark) or verify (compare, count, check the escrow table's
    /// protection).
    pub async fn execute(&self, mode: Mode) -> Result<Report> {
        match &self.incremental {
            Some(inc) if mode == Mode::Run => self.run_incremental(inc).await,
            _ => self.execute_scan(mode).await,
        }
    }

    /// The scan path of [`TableJob::execute`].
    async fn execute_scan(&self, mode: Mode) -> Result<Report> {
        let began = Instant::now();
        let mut report =
            Report::new(mode, format!("dynamodb://{}", self.source.name()), self.destination());
        match &self.history {
            Some(h) => report.notes.push(format!("item history: {}", h.describe())),
            None => report.warnings.push(format!(
                "no item history: a rewrite in the primary replaces escrow table {}'s copy, and \
                 the earlier state survives only in its point-in-time recovery window (35 days \
                 at most); set history_bucket on the job to keep every state escrow held",
                self.sink.name()
            )),
        }
        let mut escrow_count = 0;
        let escrow = match mode {
            Mode::Run => {
                let ensured =
                    self.sink.ensure(&self.source, &self.source_account, &self.started).await?;
                escrow_count = ensured.item_count;
                if ensured.created {
                    report.notes.push(format!(
                        "created escrow table {} (key schema, indexes, tags of {}; point-in-time \
                         recovery and deletion protection on)",
                        self.sink.name(),
                        self.source.name()
                    ));
                }
                for f in ensured.fixed {
                    report
                        .warnings
                        .push(format!("turned on {f} on escrow table {}", self.sink.name()));
                }
                true
            }
            _ => match self.sink.check(&self.source).await? {
                Some(existing) => {
                    escrow_count = existing.item_count();
                    if mode == Mode::Verify {
                        self.protection_findings(&existing, &mut report);
                    }
                    true
                }
                None => {
                    report.notes.push(format!(
                        "escrow table {} does not exist yet: a run creates it",
                        self.sink.name()
                    ));
                    false
                }
            },
        };

        let saved = match (&self.checkpoints, mode) {
            (Some(store), Mode::Run) => {
                store
                    .load_for(
                        &self.name,
                        &self.source,
                        &self.destination(),
                        &mut report.warnings,
                        "the scan starts from the beginning",
                    )
                    .await?
            }
            _ => None,
        };
        let mut options = self.options.clone();
        let mut resume = Vec::new();
        if let Some(s) = &saved {
            options = options.with_segments(s.segments);
            resume = s.checkpoints.clone();
            report.notes.push(format!(
                "resumed an interrupted scan of {} from its checkpoints ({} of {} segments done)",
                self.source.name(),
                resume.iter().filter(|c| c.done).count(),
                s.segments
            ));
        }
        let scanner =
            TableScanner::from_client(self.primary.clone(), self.source.name(), self.read_units)
                .with_options(options.clone());
        let segments = options.segments();
        let mut shared =
            Shared { report: Some(report), saved: saved.is_some(), ..Shared::default() };
        shared.checkpoints = starting_points(segments, &resume);
        shared.breaker.escrow_count = escrow_count;
        let shared = Arc::new(Mutex::new(shared));
        let save_lock = tokio::sync::Mutex::new(());
        let stop = self.cancel.child_token();

        let starts: Vec<Checkpoint> = shared
            .lock()
            .expect("job lock")
            .checkpoints
            .values()
            .filter(|c| !c.done)
            .cloned()
            .collect();
        let results: Vec<Result<()>> = futures::stream::iter(starts)
            .map(|start| self.segment(mode, escrow, &scanner, start, &shared, &save_lock, &stop))
            .buffer_unordered(self.workers)
            .collect()
            .await;
        let first_error = results.into_iter().find_map(|r| r.err());

        let mut first_error = first_error;
        let (mut report, all_done, checkpoints, digests, was_saved, breaker) = {
            let mut s = shared.lock().expect("job lock");
            let all_done = s.checkpoints.values().all(|c| c.done);
            (
                s.report.take().expect("report"),
                all_done,
                s.savable(),
                std::mem::take(&mut s.digests),
                s.saved,
                std::mem::take(&mut s.breaker),
            )
        };
        if all_done
            && first_error.is_none()
            && let Err(e) = self.settle_changes(mode, &scanner, breaker, None, &mut report).await
        {
            first_error = Some(e);
        }
        report.throttled += scanner.budget().throttles();
        if mode != Mode::Run {
            report.key_digests = digests
                .into_iter()
                .map(|(segment, (p, e))| KeyDigest {
                    scope: format!("segment {segment}"),
                    primary_items: p.count,
                    escrow_items: e.count,
                    primary_digest: p.hex(),
                    escrow_digest: e.hex(),
                })
                .collect();
        }
        if let (Some(store), Mode::Run) = (&self.checkpoints, mode) {
            if all_done && first_error.is_none() {
                if was_saved {
                    store.clear(&self.name).await?;
                }
            } else {
                let scan = self.saved(segments, checkpoints);
                let saved = store.save(&self.name, &scan).await;
                if let (Err(save), Some(e)) = (&saved, &first_error) {
                    // The job's own error is the one to report.
                    tracing::warn!(job = %self.name, error = %save.chain(), "could not save checkpoints after: {}", e.chain());
                }
                if first_error.is_none() {
                    saved?;
                }
                report.notes.push(format!(
                    "saved the scan's checkpoints in escrow table {} (item {}): the next run \
                     resumes there",
                    store.table(),
                    self.name
                ));
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if mode == Mode::Run && report.copied > 0 {
            self.sink.record_run(&self.started).await?;
        }
        if mode == Mode::Verify && escrow {
            let total = self.sink.count().await?;
            let present: u64 = report.key_digests.iter().map(|d| d.escrow_items).sum();
            report.retained = total.saturating_sub(present);
        }
        report.cancelled = self.cancel.is_cancelled() && !all_done;
        report.elapsed = began.elapsed();
        Ok(report)
    }

    fn destination(&self) -> String {
        format!("dynamodb://{}", self.sink.name())
    }

    fn saved(&self, segments: u32, checkpoints: Vec<Checkpoint>) -> SavedScan {
        SavedScan {
            source_arn: self.source.arn().to_string(),
            table_id: self.source.table_id().to_string(),
            destination: self.destination(),
            segments,
            checkpoints,
            sink_state: self.scan_state.clone(),
        }
    }

    fn protection_findings(&self, existing: &TableInfo, report: &mut Report) {
        let mut problem = |p: String| {
            report.unprotected += 1;
            report.findings.push(Finding::new(self.sink.name(), p));
        };
        if !existing.pitr {
            problem("point-in-time recovery is off: run escrow-sync run to turn it on".into());
        }
        if !existing.deletion_protection() {
            problem("deletion protection is off: run escrow-sync run to turn it on".into());
        }
        if let Some(a) = &existing.ttl_attribute {
            problem(format!(
                "TTL is enabled on attribute {a:?}: it expires escrow data; disable it"
            ));
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn segment(
        &self,
        mode: Mode,
        escrow: bool,
        scanner: &TableScanner,
        start: Checkpoint,
        shared: &Arc<Mutex<Shared>>,
        save_lock: &tokio::sync::Mutex<()>,
        stop: &CancellationToken,
    ) -> Result<()> {
        let segment = start.segment;
        let mut pages = scanner.segment(start);
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let page = match pages.try_next().await {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            };
            if let Err(e) = self.page(mode, escrow, segment, page.items, shared).await {
                stop.cancel();
                return Err(e);
            }
            let snapshot = {
                let mut s = shared.lock().expect("job lock");
                s.checkpoints.insert(segment, page.checkpoint);
                let due = s.last_save.is_none_or(|t| t.elapsed() >= self.checkpoint_interval);
                (mode == Mode::Run && s.wrote_since_save && due && self.checkpoints.is_some())
                    .then(|| s.savable())
            };
            if let (Some(checkpoints), Some(store)) = (snapshot, &self.checkpoints)
                && let Ok(_guard) = save_lock.try_lock()
            {
                let scan = self.saved(scanner.options().segments(), checkpoints);
                store.save(&self.name, &scan).await?;
                let mut s = shared.lock().expect("job lock");
                s.wrote_since_save = false;
                s.last_save = Some(Instant::now());
                s.saved = true;
            }
        }
    }

    async fn page(
        &self,
        mode: Mode,
        escrow: bool,
        segment: u32,
        items: Vec<Record>,
        shared: &Arc<Mutex<Shared>>,
    ) -> Result<()> {
        // With history, what a write replaces is read whole, to keep it.
        let history = self.history.as_ref().filter(|_| mode == Mode::Run);
        let (held, previous) = if escrow {
            let mut keys = Vec::with_capacity(items.len());
            for item in &items {
                keys.push((self.keys.key_text(item)?, self.keys.key_of(item)?));
            }
            if history.is_some() {
                let records = self.sink.lookup_records(&keys, &self.keys).await?;
                let digests = records.iter().map(|(k, r)| (k.clone(), content_digest(r))).collect();
                (digests, records)
            } else {
                (self.sink.lookup(&keys, &self.keys).await?, HashMap::new())
            }
        } else {
            Default::default()
        };
        // For the item log: each item as listed, by key.
        let mut listed: HashMap<String, Item> = HashMap::new();
        if mode == Mode::Run && self.item_log.is_some() {
            for r in &items {
                let item = item_of(&self.keys, r)?;
                listed.insert(item.key.clone(), item);
            }
        }
        let Comparison { mut to_write, mut differences, unchanged, primary: pd, escrow: ed } =
            compare(&self.keys, items, |k| held.get(k).copied())?;
        for key in &unchanged {
            if let Some(item) = listed.remove(key) {
                self.log_item(item, ItemOutcome::InEscrow, None);
            }
        }
        if escrow {
            (to_write, differences) =
                self.breaker(mode, segment, to_write, differences, ed.count, shared)?;
        }
        let skipped = unchanged.len() as u64;
        for key in unchanged {
            self.emit(ProgressEvent::Skipped { key, size: 0 });
        }
        let written = if mode == Mode::Run && !to_write.is_empty() {
            // History, when kept, is durable before the write that replaces
            // what it records.
            Some(self.write_recorded(segment, to_write, history.map(|_| &previous)).await?)
        } else {
            None
        };
        let mut dead_records = Vec::new();
        let mut failures = Vec::new();
        if let Some(w) = &written {
            for (record, error) in &w.dead {
                let key = self.keys.key_text(record).unwrap_or_default();
                self.emit(ProgressEvent::Failed { key: key.clone(), error: error.chain() });
                failures.push(Failure::new(key, error, 0));
                dead_records.push(record.clone());
            }
        }
        if !dead_records.is_empty() {
            self.dead_letter().append(&dead_records)?;
        }
        let mut s = shared.lock().expect("job lock");
        let digests = s.digests.entry(segment).or_default();
        digests.0.merge(&pd);
        digests.1.merge(&ed);
        let report = s.report.as_mut().expect("report");
        report.skipped += skipped;
        match written {
            Some(w) => {
                report.copied += w.written;
                report.bytes_copied += w.bytes;
                report.throttled += w.throttled;
                report.failed += failures.len() as u64;
                if report.failures.is_empty() && !failures.is_empty() {
                    report.warnings.push(format!(
                        "items that could not be written are in {} (DynamoDB JSON lines): fix \
                         the cause and run again",
                        self.dead_letter().path().display()
                    ));
                }
                report.failures.extend(failures);
                let bytes = w.bytes / w.written.max(1);
                for d in differences.iter().take(w.written as usize) {
                    self.emit(ProgressEvent::Copied { key: d.key.clone(), bytes });
                }
                if w.written > 0 {
                    s.wrote_since_save = true;
                }
            }
            None => tally(report, differences, mode, self.difference_limit),
        }
        Ok(())
    }

    /// Counts a page's changes for the mass-change breaker and, when it is
    /// on, holds back those over the share (see the module docs): returns
    /// what may be written.
    #[allow(clippy::type_complexity)]
    fn breaker(
        &self,
        mode: Mode,
        segment: u32,
        to_write: Vec<Record>,
        differences: Vec<escrow_sync_core::Difference>,
        in_escrow: u64,
        shared: &Arc<Mutex<Shared>>,
    ) -> Result<(Vec<Record>, Vec<escrow_sync_core::Difference>)> {
        let on = self.breaker_on(mode);
        let guard = MassChangeGuard::new(self.max_change_percent);
        let mut s = shared.lock().expect("job lock");
        let before = s.checkpoints.get(&segment).cloned();
        let b = &mut s.breaker;
        b.escrow_seen += in_escrow;
        let base = b.escrow_items();
        let (mut write, mut listed) = (Vec::new(), Vec::new());
        let mut held_any = false;
        for (record, d) in to_write.into_iter().zip(differences) {
            if d.reason == CopyReason::Changed {
                b.changed += 1;
                if b.first_keys.len() < FIRST_KEYS {
                    b.first_keys.push(d.key.clone());
                }
                if on && !guard.allows_now(b.overwritten + 1, base) {
                    b.held.push(self.keys.key_of(&record)?);
                    held_any = true;
                    continue;
                }
                b.overwritten += 1;
            }
            write.push(record);
            listed.push(d);
        }
        if held_any && let Some(c) = before {
            b.frozen.entry(segment).or_insert(c);
        }
        Ok((write, listed))
    }

    /// After a whole scan: writes the held-back changes when they are
    /// within the share after all (or escrow is small), else reports the
    /// `mass-change` finding. Plan and accepted runs get a warning when the
    /// changes are over the share. The held-back items written are re-read
    /// from the primary, or taken from `known` (an incremental export's
    /// images by key text) when given.
    async fn settle_changes(
        &self,
        mode: Mode,
        scanner: &TableScanner,
        breaker: Breaker,
        known: Option<&HashMap<String, Record>>,
        report: &mut Report,
    ) -> Result<()> {
        let percent = self.max_change_percent;
        let over = percent < 100 && breaker.over(percent);
        let keys = breaker.first_keys.join(", ");
        if !self.breaker_on(mode) {
            if over && mode != Mode::Verify {
                let then = match mode {
                    Mode::Plan => {
                        "a run stops at that share and reports a mass-change finding \
                                   (run --accept-mass-change to let it go on)"
                    }
                    _ => "overwritten in escrow as --accept-mass-change asks",
                };
                report.warnings.push(format!(
                    "table {}: {}, over max_change_percent = {percent}; first keys: {keys}; {then}",
                    self.source.name(),
                    breaker.counts()
                ));
            }
            return Ok(());
        }
        if breaker.held.is_empty() {
            return Ok(());
        }
        if over {
            report.findings.push(
                Finding::new(
                    self.source.name(),
                    format!(
                        "{}, over max_change_percent = {percent}; {} changes held back; first \
                         keys: {keys}; if the change is legitimate, re-run with \
                         --accept-mass-change",
                        breaker.counts(),
                        breaker.held.len()
                    ),
                )
                .with_kind("mass-change"),
            );
            report.held_back += breaker.held.len() as u64;
            if self.item_log.is_some() {
                let why = format!(
                    "held back: mass change ({}, over max_change_percent = {percent}; run with \
                     --accept-mass-change if it is legitimate)",
                    breaker.counts()
                );
                for key in &breaker.held {
                    let Ok(text) = self.keys.key_text(key) else { continue };
                    let item = Item::new(text, ItemKind::Record, 0, "");
                    self.log_item(item, ItemOutcome::Failed, Some(why.clone()));
                }
            }
            return Ok(());
        }
        // Within the share after all: the held-back changes are written as
        // the primary holds them now (their earlier states into the history
        // first, like every write).
        let items = match known {
            Some(known) => breaker
                .held
                .iter()
                .filter_map(|k| known.get(&self.keys.key_text(k).ok()?).cloned())
                .collect(),
            None => scanner.get_items(breaker.held).await?,
        };
        if items.is_empty() {
            return Ok(());
        }
        let w = self.write_recorded(SETTLE_SEGMENT, items, None).await?;
        report.copied += w.written;
        report.bytes_copied += w.bytes;
        report.throttled += w.throttled;
        if report.failures.is_empty() && !w.dead.is_empty() {
            report.warnings.push(format!(
                "items that could not be written are in {} (DynamoDB JSON lines): fix the cause \
                 and run again",
                self.dead_letter().path().display()
            ));
        }
        let mut dead = Vec::new();
        for (record, error) in w.dead {
            let key = self.keys.key_text(&record).unwrap_or_default();
            self.emit(ProgressEvent::Failed { key: key.clone(), error: error.chain() });
            report.failed += 1;
            report.failures.push(Failure::new(key, &error, 0));
            dead.push(record);
        }
        if !dead.is_empty() {
            self.dead_letter().append(&dead)?;
        }
        Ok(())
    }

    fn dead_letter(&self) -> &DeadLetter {
        self.dead_letter
            .get_or_init(|| DeadLetter::new(&self.dead_letter_dir, &self.name, &self.started))
    }
}

/// `native-incremental` runs (see [`TableJob::with_native_incremental`]).
impl TableJob {
    /// This run's time as a point in time (the start, or now).
    fn started_at(&self) -> std::time::SystemTime {
        escrow_sync_core::time::parse_rfc3339(&self.started)
            .unwrap_or_else(std::time::SystemTime::now)
    }

    /// A watermark of this job's source and escrow table at `time`.
    fn watermark_at(&self, time: std::time::SystemTime) -> TableWatermark {
        TableWatermark {
            time: whole_second(time),
            source_arn: self.source.arn().to_string(),
            table_id: self.source.table_id().to_string(),
            destination: self.destination(),
        }
    }

    async fn run_incremental(&self, inc: &Incremental) -> Result<Report> {
        let began = Instant::now();
        let store = self.checkpoints.as_ref().ok_or_else(|| {
            Error::invalid_config(format!(
                "job {}: mode = \"native-incremental\" keeps its watermark in the checkpoint \
                 table: give the job a checkpoint store",
                self.name
            ))
        })?;
        let mut report = Report::new(
            Mode::Run,
            format!("dynamodb://{}", self.source.name()),
            self.destination(),
        );
        // An interrupted full scan goes on first; its start is the watermark
        // it earns.
        let resumed = store.load(&self.name).await?.and_then(|saved| {
            let v: serde_json::Value = serde_json::from_str(&saved.sink_state).ok()?;
            escrow_sync_core::time::parse_rfc3339(v["scan_started"].as_str()?)
        });
        let watermark = match store.load_watermark(&self.name).await? {
            Some(w)
                if w.belongs_to(self.source.arn(), self.source.table_id(), &self.destination()) =>
            {
                Some(w)
            }
            Some(w) => {
                report.warnings.push(format!(
                    "the saved watermark belongs to {} (table id {}) into {}, not this job's \
                     table: not used",
                    w.source_arn, w.table_id, w.destination
                ));
                None
            }
            None => None,
        };
        let plan = match resumed {
            Some(at) => ExportPlan::Full {
                at,
                reason: "went on with the interrupted full scan of an earlier run".into(),
            },
            None => {
                let (earliest, latest) =
                    pitr_window(&self.primary, &self.source, &mut report).await;
                let now = self.started_at();
                let to = latest.map_or(now, |l| l.min(now));
                let mark = watermark.as_ref().map(|w| Watermark {
                    generation: format!(
                        "{} in checkpoint table {}",
                        crate::checkpoint::watermark_row(&self.name),
                        store.table()
                    ),
                    time: w.time,
                });
                plan_export(mark.as_ref(), to, earliest)
            }
        };
        let (mut report, next) = match plan {
            ExportPlan::Skip { reason } => {
                report.notes.push(reason);
                report.elapsed = began.elapsed();
                return Ok(report);
            }
            ExportPlan::Full { at, reason } => {
                // A scan that starts after `at` holds every change before
                // it: the next incremental export replays all after it.
                let at = whole_second(at.min(self.started_at()));
                let reason = reason.replacen("full export", "full scan", 1);
                let mut job = self.clone();
                job.scan_state = serde_json::json!({"scan_started": time_text(at)}).to_string();
                let mut scanned = job.execute_scan(Mode::Run).await?;
                scanned.warnings.splice(0..0, report.warnings);
                scanned.notes.insert(0, reason);
                (scanned, at)
            }
            ExportPlan::Incremental { from, to, .. } => {
                report.notes.push(format!(
                    "incremental export of the changes from {} to {}",
                    time_text(from),
                    time_text(to)
                ));
                // The run manifest's item list of a run says which keys the
                // primary held then (restore --at keeps only those): an
                // incremental run sees only the changed keys, so it lists
                // none, and restore --at after it takes every item escrow
                // held (deleted ones too) rather than too few.
                let mut job = self.clone();
                job.item_log = None;
                let mut report = job.apply_export(inc, from, to, report).await?;
                if self.item_log.is_some() {
                    report.notes.push(
                        "the run manifest lists no items for an incremental run (it sees only \
                         the changes): restore --at a time after it restores every item escrow \
                         held then, including items the primary had deleted"
                            .into(),
                    );
                }
                (report, to)
            }
        };
        // Everything applied: nothing failed, held back or cancelled.
        let whole = !report.cancelled
            && report.failed == 0
            && report.held_back == 0
            && report.findings.is_empty();
        self.move_watermark(store, whole, self.watermark_at(next), watermark.as_ref(), &mut report)
            .await?;
        report.elapsed = began.elapsed();
        Ok(report)
    }

    /// Saves `next` as the watermark when the run applied everything
    /// (`whole`); otherwise keeps `old` and says so.
    async fn move_watermark(
        &self,
        store: &CheckpointStore,
        whole: bool,
        next: TableWatermark,
        old: Option<&TableWatermark>,
        report: &mut Report,
    ) -> Result<()> {
        if whole {
            store.save_watermark(&self.name, &next).await?;
            report.notes.push(format!(
                "watermark {} saved (checkpoint table {}): the next run exports the changes \
                 from there",
                time_text(next.time),
                store.table()
            ));
        } else {
            report.warnings.push(format!(
                "not every change was applied: the watermark stays at {}, and the next run \
                 exports again from there",
                old.map_or("none (the next run scans the table)".to_string(), |w| time_text(
                    w.time
                ))
            ));
        }
        Ok(())
    }

    /// Asks for the incremental export of `[from, to)`, waits for it,
    /// checks what DynamoDB reports and each staged file, and applies the
    /// changes: puts as a scan's page would write them (item history
    /// first, mass-change breaker), deletions counted and never applied.
    async fn apply_export(
        &self,
        inc: &Incremental,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
        mut report: Report,
    ) -> Result<Report> {
        let generation = generation_id(&self.started);
        let staged = format!("{}{}/{generation}/", inc.staging, self.source.name());
        let plan = ExportPlan::Incremental { base: String::new(), from, to };
        let arn = request_export(
            &self.primary,
            &self.source,
            &inc.native,
            staged.trim_end_matches('/').to_string(),
            &generation,
            Some(&plan),
            Some(crate::incremental::ViewType::NewImage),
        )
        .await?;
        let Some(description) = wait_export(&self.primary, &inc.native, &arn, &self.cancel).await?
        else {
            report.cancelled = true;
            report.warnings.push(format!(
                "stopped waiting for incremental export {arn}: nothing applied; the next run \
                 exports again from the watermark"
            ));
            return Ok(report);
        };
        let status =
            description.export_status().map(|s| s.as_str().to_string()).unwrap_or_default();
        if status != "COMPLETED" {
            return Err(Error::new(
                ErrorKind::Failed,
                "dynamodb:DescribeExport",
                &arn,
                format!(
                    "the export ended {status}: {} {} (nothing applied; the next run exports \
                     again from the watermark)",
                    description.failure_code().unwrap_or_default(),
                    description.failure_message().unwrap_or_default()
                ),
            ));
        }
        check_reported(&plan, &description, &arn)?;
        let files = inc.area.files(&staged, &description, true, &mut report).await?;
        let window = Some((micros(from), micros(to)));
        // One change per key: the latest write (DynamoDB compacts an item's
        // changes in a window; a key twice keeps the later line).
        let mut changes: BTreeMap<String, (Option<u64>, Change)> = BTreeMap::new();
        let mut lines = 0u64;
        for file in &files {
            let data =
                inc.area.read_staged(&staged, file, inc.data_cap, &self.keys, window).await?;
            lines += data.items;
            for c in data.changes {
                let key = self.keys.key_text(c.change.keys())?;
                match changes.get(&key) {
                    Some((t, _)) if *t > c.write_micros => {}
                    _ => {
                        changes.insert(key, (c.write_micros, c.change));
                    }
                }
            }
        }
        if let Some(n) = description.item_count()
            && n.max(0) as u64 != lines
        {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "read incremental export",
                format!("{}{staged}", inc.area.location),
                format!(
                    "its files hold {lines} changes, DynamoDB reports {n}: nothing applied; the \
                     next run exports again from the watermark"
                ),
            ));
        }
        let (mut puts, mut deleted) = (Vec::new(), 0u64);
        let mut images = HashMap::new();
        for (key, (_, change)) in changes {
            match change {
                Change::Put { item, .. } => {
                    images.insert(key, item.clone());
                    puts.push(item);
                }
                Change::Delete { .. } => deleted += 1,
            }
        }
        if deleted > 0 {
            // As a scan leaves items deleted in the primary in escrow.
            report.retained += deleted;
            report.notes.push(format!(
                "{deleted} item(s) deleted in the primary in the window: kept in escrow table {} \
                 (escrow never deletes)",
                self.sink.name()
            ));
        }
        let ensured = self.sink.ensure(&self.source, &self.source_account, &self.started).await?;
        match &self.history {
            Some(h) => report.notes.push(format!("item history: {}", h.describe())),
            None => report.warnings.push(format!(
                "no item history: a change applied replaces escrow table {}'s copy; set \
                 history_bucket on the job",
                self.sink.name()
            )),
        }
        let mut shared = Shared { report: Some(report), ..Shared::default() };
        shared.breaker.escrow_count = ensured.item_count;
        let shared = Arc::new(Mutex::new(shared));
        let mut pages = Vec::new();
        while !puts.is_empty() {
            let rest = puts.split_off(puts.len().min(INCREMENTAL_PAGE));
            pages.push(std::mem::replace(&mut puts, rest));
        }
        for page in pages {
            self.page(Mode::Run, true, INCREMENTAL_SEGMENT, page, &shared).await?;
        }
        let (mut report, breaker) = {
            let mut s = shared.lock().expect("job lock");
            (s.report.take().expect("report"), std::mem::take(&mut s.breaker))
        };
        // Held-back changes within the share after all are written as the
        // export has them; over it, a finding.
        let scanner =
            TableScanner::from_client(self.primary.clone(), self.source.name(), self.read_units)
                .with_options(self.options.clone());
        self.settle_changes(Mode::Run, &scanner, breaker, Some(&images), &mut report).await?;
        report.throttled += scanner.budget().throttles();
        if report.copied > 0 {
            self.sink.record_run(&self.started).await?;
        }
        Ok(report)
    }
}

#[async_trait::async_trait]
impl Job for TableJob {
    fn describe(&self) -> String {
        format!("dynamodb://{} -> {}", self.source.name(), self.destination())
    }

    /// [`TableJob::execute`] with the context's cancellation, progress, item
    /// log, retry policy (of the scan's reads) and `accept_mass_change`.
    async fn execute(&self, mode: Mode, ctx: &JobContext) -> Result<Report> {
        let mut job = self.clone();
        job.cancel = ctx.cancellation().clone();
        job.progress = ctx.progress().cloned();
        job.item_log = ctx.item_log().cloned();
        job.accept_mass_change = ctx.accept_mass_change();
        job.options = job.options.with_retry(ctx.retry());
        TableJob::execute(&job, mode).await
    }
}
