//! The run-manifest format: what every run records in escrow, and how it is
//! read back for `verify --offline`. Pure format: the I/O that writes a
//! manifest into escrow and reads it back is the S3 crate's
//! (`escrow_sync_s3::ManifestStore`, through the S3 sink's upload path).
//!
//! A manifest is JSON lines: a header (tool version, config digest, run id,
//! accounts, start time), then per job a job line, one line per item (key,
//! fingerprint, size, outcome, escrow fingerprint, provenance) and a summary
//! line, and last an end line (finish time, counts). [`ManifestWriter`]
//! spools it to an anonymous local file while the run goes; the finished
//! [`Spooled`] file is a [`RangeRead`](crate::RangeRead), written into
//! escrow in one PutObject or, when larger than one part, in a multipart
//! upload read part by part from the file: either way the object appears
//! whole or not at all. A reader ([`Manifest::parse`], [`ManifestReader`])
//! refuses one without its end line, so a partial manifest is never taken
//! for complete.
//!
//! ```
//! use escrow_sync_core::manifest::{Header, Manifest, ManifestWriter};
//! let header = Header::new("run-1", "0.1.0", "sha256:00", "222222222222", "111111111111");
//! let mut w = ManifestWriter::create(header).unwrap();
//! w.job("assets", "s3");
//! let text = String::from_utf8(w.finish().unwrap().1).unwrap();
//! let m = Manifest::parse(&text).unwrap();
//! assert_eq!(m.header.run_id, "run-1");
//! assert_eq!(m.jobs["assets"].kind, "s3");
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::{Error, ErrorKind, ItemLog, ItemOutcome, ItemRecord, RangeRead, Result};

/// The format tag of the header line.
pub const FORMAT: &str = "escrow-sync-manifest/1";

/// The default key prefix of manifests.
pub const DEFAULT_PREFIX: &str = "escrow-sync/manifests/";

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// The run's id (its start time, sortable, and the process id).
    pub run_id: String,
    /// escrow-sync's version.
    pub tool_version: String,
    /// `sha256:<hex>` of the config file's bytes.
    pub config_digest: String,
    /// The escrow account.
    pub escrow_account: String,
    /// The primary account.
    pub primary_account: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// What the run did: absent for a `run` (its manifest records every
    /// item), [`VERIFY`] for a `verify` (a verification record: job lines
    /// and summaries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl Header {
    /// A header for run `run_id`, started now.
    pub fn new(
        run_id: impl Into<String>,
        tool_version: impl Into<String>,
        config_digest: impl Into<String>,
        escrow_account: impl Into<String>,
        primary_account: impl Into<String>,
    ) -> Self {
        Header {
            format: FORMAT.to_string(),
            run_id: run_id.into(),
            tool_version: tool_version.into(),
            config_digest: config_digest.into(),
            escrow_account: escrow_account.into(),
            primary_account: primary_account.into(),
            started_at: now_rfc3339(),
            mode: None,
        }
    }

    /// The header of a verification record (see [`Header::mode`]).
    pub fn verification(mut self) -> Self {
        self.mode = Some(VERIFY.to_string());
        self
    }
}

/// [`Header::mode`] of a verification record.
pub const VERIFY: &str = "verify";

/// `sha256:<hex>` of `bytes` (the config digest).
pub fn digest(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    format!("sha256:{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A run id: the start time (UTC, to the nanosecond, fixed width so that
/// ids sort as runs started: the latest manifest is the greatest key) and
/// the process id (zero-padded).
pub fn run_id() -> String {
    run_id_at(std::time::SystemTime::now(), std::process::id())
}

/// When run `run_id` started, to the second, read back from the id as
/// [`run_id`] writes it (`None` for an id it did not write).
pub fn run_started(run_id: &str) -> Option<std::time::SystemTime> {
    let t = run_id.get(..15)?;
    let (date, clock) = t.split_once('T')?;
    if date.len() != 8
        || clock.len() != 6
        || !(date.bytes().chain(clock.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let (y, mo, d) = (&date[..4], &date[4..6], &date[6..]);
    let (h, mi, s) = (&clock[..2], &clock[2..4], &clock[4..]);
    crate::time::parse_rfc3339(&format!("{y}-{mo}-{d}T{h}:{mi}:{s}Z"))
}

fn run_id_at(at: std::time::SystemTime, pid: u32) -> String {
    let secs = crate::rfc3339(at);
    let nanos = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    // `2026-11-28T23:47:01Z`: keep the whole seconds, then nanos, fixed width.
    let whole: String = secs.chars().take(19).filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{whole}{nanos:09}Z-{pid:010}")
}

/// The current time in RFC 3339, UTC, with the fraction of a second to the
/// microsecond, trailing zeros dropped (`2026-11-28T23:47:01.5Z`), as the
/// header's start and the end line's finish carry it.
pub fn now_rfc3339() -> String {
    timestamp(std::time::SystemTime::now())
}

fn timestamp(t: std::time::SystemTime) -> String {
    let whole = crate::rfc3339(t);
    let micros = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_micros()).unwrap_or(0);
    if micros == 0 {
        return whole;
    }
    let fraction = format!("{micros:06}");
    format!("{}.{}Z", whole.trim_end_matches('Z'), fraction.trim_end_matches('0'))
}

/// One item of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemLine {
    /// The job.
    pub job: String,
    /// The item's key (object key, snapshot id...).
    pub key: String,
    /// What identifies its content in the primary (ETag, snapshot id...).
    pub fingerprint: String,
    /// Size in bytes as listed.
    pub size: u64,
    /// What became of it.
    pub outcome: ItemOutcome,
    /// The escrow copy's fingerprint, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow_fingerprint: Option<String>,
    /// Provenance: when the source was last modified or created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_time: Option<String>,
    /// Provenance: the source volume, database or cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    /// The error, for failed items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A job's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLine {
    /// The job's name.
    pub job: String,
    /// `s3`, `dynamodb`, `ec2`, `rds`, `redshift`.
    pub kind: String,
}

/// A job's end: its counts as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job's name.
    pub job: String,
    /// Where the data came from.
    pub source: String,
    /// Where it went.
    pub destination: String,
    /// Items copied.
    pub copied: u64,
    /// Items escrow already held.
    pub skipped: u64,
    /// Items that failed.
    pub failed: u64,
    /// Escrow-only items kept.
    pub retained: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Whether the job was interrupted.
    pub cancelled: bool,
    /// The job's fatal error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Notes (generations written, per-part key digests...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Changes the mass-change breaker held back (escrow kept the earlier
    /// content): a job with any is not finished.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_back: u64,
    /// What the run found (a `mass-change` finding, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<crate::Finding>,
    /// Verify: items escrow lacks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing: u64,
    /// Verify: items that differ between the primary and escrow.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub different: u64,
    /// Verify: escrow copies without the configured protection.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unprotected: u64,
    /// How long the job took, in milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub elapsed_ms: u64,
    /// The part of a sharded run (`run --shard I/N`) this summary is of:
    /// its items are that part's key range only. Absent: the whole job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardPart>,
}

/// One part of a sharded run, as its manifest records it: the parts of a
/// job are merged only when they agree on `count` and `boundaries`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardPart {
    /// `I`, from 1.
    pub index: u32,
    /// `N`.
    pub count: u32,
    /// The digest of the boundaries that cut the job (`sha256:<hex>`).
    pub boundaries: String,
    /// The part's exclusive lower bound, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The part's inclusive upper bound, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl ShardPart {
    /// Whether `other` is a part of the same cut (same N, same boundaries).
    pub fn same_cut(&self, other: &ShardPart) -> bool {
        self.count == other.count && self.boundaries == other.boundaries
    }
}

impl JobSummary {
    /// Whether the job left a verified copy: it finished with no error, no
    /// failure, nothing held back, nothing missing, different or
    /// unprotected, and no finding (every item copied or already up to
    /// date).
    pub fn verified(&self) -> bool {
        self.error.is_none()
            && !self.cancelled
            && self.failed == 0
            && self.held_back == 0
            && self.missing == 0
            && self.different == 0
            && self.unprotected == 0
            && self.findings.is_empty()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndLine {
    /// When the run finished (RFC 3339).
    pub finished_at: String,
    /// Jobs recorded.
    pub jobs: u64,
    /// Item lines recorded.
    pub items: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
enum Line {
    Header(Header),
    Job(JobLine),
    Item(ItemLine),
    JobEnd(JobSummary),
    End(EndLine),
}

/// Spools a manifest while a run goes. Cloned item logs write concurrently.
pub struct ManifestWriter {
    out: Arc<Mutex<Spool>>,
    jobs: u64,
    run_id: String,
}

struct Spool {
    file: std::io::BufWriter<std::fs::File>,
    items: u64,
    failed: Option<String>,
}

impl Spool {
    fn write(&mut self, line: &Line) {
        if self.failed.is_some() {
            return;
        }
        let res = serde_json::to_writer(&mut self.file, line)
            .map_err(std::io::Error::other)
            .and_then(|()| self.file.write_all(b"\n"));
        if let Err(e) = res {
            self.failed = Some(e.to_string());
        }
    }
}

impl std::fmt::Debug for ManifestWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestWriter").field("jobs", &self.jobs).finish_non_exhaustive()
    }
}

impl ManifestWriter {
    /// Starts a manifest with `header`, spooled to an anonymous temporary
    /// file (nothing is left behind if the process dies).
    pub fn create(header: Header) -> Result<Self> {
        let file = tempfile().map_err(|e| {
            Error::new(ErrorKind::Failed, "manifest", "a temporary file", e.to_string())
        })?;
        let mut spool = Spool { file: std::io::BufWriter::new(file), items: 0, failed: None };
        let run_id = header.run_id.clone();
        spool.write(&Line::Header(header));
        Ok(ManifestWriter { out: Arc::new(Mutex::new(spool)), jobs: 0, run_id })
    }

    /// The run's id, as the header gives it (name the manifest by it).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Starts job `job`'s section.
    pub fn job(&mut self, job: &str, kind: &str) {
        self.jobs += 1;
        self.out
            .lock()
            .expect("manifest")
            .write(&Line::Job(JobLine { job: job.to_string(), kind: kind.to_string() }));
    }

    /// An item log for job `job`: give it to the job's executor
    /// ([`ExecutorOptions::with_item_log`](crate::ExecutorOptions::with_item_log)).
    pub fn item_log(&self, job: &str) -> ItemLog {
        let out = self.out.clone();
        let job = job.to_string();
        Arc::new(move |r: ItemRecord| {
            let line = Line::Item(ItemLine {
                job: job.clone(),
                key: r.item.key.clone(),
                fingerprint: r.item.fingerprint.clone(),
                size: r.item.size,
                outcome: r.outcome,
                escrow_fingerprint: r.escrow_fingerprint.clone(),
                source_time: r.item.modified.map(crate::rfc3339),
                lineage: r.item.lineage.clone(),
                error: r.error.clone(),
            });
            let mut spool = out.lock().expect("manifest");
            spool.items += 1;
            spool.write(&line);
        })
    }

    /// Ends a job's section with its summary.
    pub fn job_end(&mut self, summary: JobSummary) {
        self.out.lock().expect("manifest").write(&Line::JobEnd(summary));
    }

    /// Ends the manifest; returns the end line and the whole text.
    pub fn finish(self) -> Result<(EndLine, Vec<u8>)> {
        let (end, spooled) = self.finish_spooled()?;
        Ok((end, spooled.into_bytes()?))
    }

    /// Ends the manifest; returns the end line and the spool file, to be
    /// written into escrow (`escrow_sync_s3::ManifestStore::put_spooled`)
    /// without holding the whole text in memory.
    pub fn finish_spooled(self) -> Result<(EndLine, Spooled)> {
        let mut spool = self.out.lock().expect("manifest");
        let end = EndLine { finished_at: now_rfc3339(), jobs: self.jobs, items: spool.items };
        spool.write(&Line::End(end.clone()));
        if let Some(e) = spool.failed.take() {
            return Err(spool_error(e));
        }
        spool.file.flush().map_err(|e| spool_error(e.to_string()))?;
        let file = spool.file.get_ref().try_clone().map_err(|e| spool_error(e.to_string()))?;
        let len = file.metadata().map_err(|e| spool_error(e.to_string()))?.len();
        Ok((end, Spooled { file: Mutex::new(file), len, attributes: BTreeMap::new() }))
    }
}

fn spool_error(e: String) -> Error {
    Error::new(ErrorKind::Failed, "manifest", "the spool file", e)
}

/// A finished manifest in its local spool file: read it whole
/// ([`Spooled::into_bytes`]) or by ranges ([`RangeRead`]), which is how the
/// S3 sink uploads it part by part.
#[derive(Debug)]
pub struct Spooled {
    file: Mutex<std::fs::File>,
    len: u64,
    attributes: BTreeMap<String, String>,
}

impl Spooled {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty (never, for a finished manifest).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `buf.len()` bytes from `offset`; fills `buf` unless the file
    /// ends first, and returns how many it read.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = self.file.lock().map_err(|e| spool_error(e.to_string()))?;
        file.seek(SeekFrom::Start(offset)).map_err(|e| spool_error(e.to_string()))?;
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(spool_error(e.to_string())),
            }
        }
        Ok(filled)
    }

    /// The whole text.
    pub fn into_bytes(self) -> Result<Vec<u8>> {
        let len = usize::try_from(self.len).map_err(|e| spool_error(e.to_string()))?;
        let mut bytes = vec![0; len];
        let n = self.read_at(0, &mut bytes)?;
        bytes.truncate(n);
        Ok(bytes)
    }
}

#[async_trait]
impl RangeRead for Spooled {
    fn len(&self) -> u64 {
        self.len
    }

    /// None: the writer names the content type.
    fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    async fn read_range(&self, first: u64, last: u64) -> Result<Bytes> {
        if first > last || last >= self.len {
            return Err(spool_error(format!(
                "bytes {first}-{last} are outside the {} bytes of the manifest",
                self.len
            )));
        }
        let n = usize::try_from(last - first + 1).map_err(|e| spool_error(e.to_string()))?;
        let mut buf = vec![0; n];
        let read = self.read_at(first, &mut buf)?;
        if read != n {
            return Err(spool_error(format!(
                "the spool file ended at {} bytes, before byte {last}",
                first + read as u64
            )));
        }
        Ok(Bytes::from(buf))
    }
}

/// An anonymous temporary file (unlinked at once where the OS allows).
fn tempfile() -> std::io::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!(
        "escrow-sync-manifest-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

/// One job of a manifest read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// `s3`, `dynamodb`, `ec2`, `rds`, `redshift`.
    pub kind: String,
    /// Its items.
    pub items: Vec<ItemLine>,
    /// Its summary.
    pub summary: Option<JobSummary>,
}

/// A manifest read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The header.
    pub header: Header,
    /// The jobs, by name.
    pub jobs: BTreeMap<String, JobRecord>,
    /// The end line.
    pub end: EndLine,
}

/// The most bytes a manifest read back from escrow may have. A run writes
/// one item line per item (about 200–400 bytes), so this is room for some
/// ten million items; a larger object is refused with a clear error before
/// it is read, not read into memory.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 30;

/// The most bytes of one manifest line (an item line with its key, ETags,
/// provenance and error text is well under a few KiB; S3 keys are at most
/// 1 KiB).
pub const MAX_MANIFEST_LINE_BYTES: usize = 1 << 20;

impl Manifest {
    /// Parses a manifest; fails on an unknown format, a line that does not
    /// parse or is over [`MAX_MANIFEST_LINE_BYTES`], an item of an unknown
    /// job, or a missing end line (a partial manifest is never taken for
    /// complete).
    pub fn parse(text: &str) -> Result<Manifest> {
        let mut parser = ManifestParser::default();
        for line in text.lines() {
            parser.line(line)?;
        }
        parser.finish()
    }
}

/// A manifest parsed line by line, as it is read.
#[derive(Debug, Default)]
struct ManifestParser {
    /// Lines seen (for messages).
    n: u64,
    header: Option<Header>,
    jobs: BTreeMap<String, JobRecord>,
    end: Option<EndLine>,
    /// Item lines are checked and dropped (see
    /// [`ManifestReader::summaries_only`]).
    skip_items: bool,
}

fn bad(m: String) -> Error {
    Error::new(ErrorKind::Failed, "manifest", "parse", m)
}

fn long_line(n: u64) -> Error {
    bad(format!(
        "line {n}: longer than {} KiB, more than any manifest line: not an escrow-sync manifest, \
         or a damaged one",
        MAX_MANIFEST_LINE_BYTES >> 10
    ))
}

impl ManifestParser {
    fn line(&mut self, l: &str) -> Result<()> {
        self.n += 1;
        let n = self.n;
        if l.trim().is_empty() {
            return Ok(());
        }
        if l.len() > MAX_MANIFEST_LINE_BYTES {
            return Err(long_line(n));
        }
        if self.header.is_none() {
            self.header = Some(match serde_json::from_str::<Line>(l) {
                Ok(Line::Header(h)) if h.format == FORMAT => h,
                Ok(Line::Header(h)) => {
                    return Err(bad(format!("format {} is not {FORMAT}", h.format)));
                }
                _ => return Err(bad("no header line: not an escrow-sync manifest".into())),
            });
            return Ok(());
        }
        if self.end.is_some() {
            return Err(bad(format!("line {n}: text after the end line")));
        }
        let line: Line = serde_json::from_str(l).map_err(|e| bad(format!("line {n}: {e}")))?;
        match line {
            Line::Header(_) => return Err(bad(format!("line {n}: a second header"))),
            Line::Job(j) => {
                let record = JobRecord { kind: j.kind, items: Vec::new(), summary: None };
                self.jobs.insert(j.job, record);
            }
            Line::Item(i) => match self.jobs.get_mut(&i.job) {
                Some(_) if self.skip_items => {}
                Some(j) => j.items.push(i),
                None => return Err(bad(format!("line {n}: item of unknown job {}", i.job))),
            },
            Line::JobEnd(s) => match self.jobs.get_mut(&s.job) {
                Some(j) => j.summary = Some(s),
                None => return Err(bad(format!("line {n}: end of unknown job {}", s.job))),
            },
            Line::End(e) => self.end = Some(e),
        }
        Ok(())
    }

    fn finish(self) -> Result<Manifest> {
        let header =
            self.header.ok_or_else(|| bad("no header line: not an escrow-sync manifest".into()))?;
        let end = self.end.ok_or_else(|| bad("no end line: the manifest is partial".into()))?;
        Ok(Manifest { header, jobs: self.jobs, end })
    }
}

/// A manifest parsed as its bytes arrive (a stream read from escrow): each
/// line is parsed as soon as it is whole, so memory holds one line, never
/// the whole text. Refuses, with an error naming `resource` and the line, a
/// stream over [`MAX_MANIFEST_BYTES`], a line over
/// [`MAX_MANIFEST_LINE_BYTES`] (without holding more of it), text that is
/// not UTF-8, and everything [`Manifest::parse`] refuses.
///
/// ```
/// use escrow_sync_core::manifest::{Header, ManifestReader, ManifestWriter};
/// let w = ManifestWriter::create(Header::new("r", "0.1.0", "sha256:00", "e", "p")).unwrap();
/// let text = w.finish().unwrap().1;
/// let mut reader = ManifestReader::new("s3://escrow/runs/r.jsonl");
/// for chunk in text.chunks(7) {
///     reader.feed(chunk).unwrap();
/// }
/// assert_eq!(reader.finish().unwrap().header.run_id, "r");
/// ```
#[derive(Debug)]
pub struct ManifestReader {
    resource: String,
    parser: ManifestParser,
    pending: Vec<u8>,
    total: u64,
}

impl ManifestReader {
    /// A reader of the manifest at `resource` (named in its errors).
    pub fn new(resource: impl Into<String>) -> Self {
        ManifestReader {
            resource: resource.into(),
            parser: ManifestParser::default(),
            pending: Vec::new(),
            total: 0,
        }
    }

    /// Keeps no item lines (each is still parsed and checked): the header,
    /// the jobs with their summaries and the end line, in memory that does
    /// not grow with the items (`status` reads manifests this way).
    pub fn summaries_only(mut self) -> Self {
        self.parser.skip_items = true;
        self
    }

    fn failed(&self, m: String) -> Error {
        Error::new(ErrorKind::Failed, "manifest", self.resource.clone(), m)
    }

    fn too_large(&self, size: String) -> Error {
        self.failed(format!(
            "{size} bytes, over the {} GiB a manifest may have: not a manifest escrow-sync \
             wrote, or a damaged one; list the manifests (`status`) and remove or ignore this \
             object",
            MAX_MANIFEST_BYTES >> 30
        ))
    }

    /// Refuses an object whose announced length is over
    /// [`MAX_MANIFEST_BYTES`], before a byte of it is read.
    pub fn check_len(&self, len: u64) -> Result<()> {
        if len > MAX_MANIFEST_BYTES {
            return Err(self.too_large(len.to_string()));
        }
        Ok(())
    }

    fn complete_line(&mut self, bytes: &[u8]) -> Result<()> {
        let n = self.parser.n + 1;
        let text = std::str::from_utf8(bytes)
            .map_err(|e| self.failed(format!("line {n}: not UTF-8 text ({e})")))?;
        let text = text.strip_suffix('\r').unwrap_or(text);
        let res = self.parser.line(text);
        res.map_err(|e| self.failed(e.chain()))
    }

    /// The next bytes of the manifest.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        self.total += chunk.len() as u64;
        if self.total > MAX_MANIFEST_BYTES {
            return Err(self.too_large(format!("more than {}", self.total)));
        }
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.pending);
            line.extend_from_slice(&rest[..i]);
            self.complete_line(&line)?;
            line.clear();
            self.pending = line;
            rest = &rest[i + 1..];
        }
        if self.pending.len() + rest.len() > MAX_MANIFEST_LINE_BYTES {
            // Refused without holding more of the line.
            return Err(self.failed(long_line(self.parser.n + 1).chain()));
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    /// The manifest, once every byte was fed; fails on a partial one.
    pub fn finish(mut self) -> Result<Manifest> {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.complete_line(&last)?;
        }
        let resource = self.resource;
        self.parser
            .finish()
            .map_err(|e| Error::new(ErrorKind::Failed, "manifest", resource, e.chain()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Item, ItemKind};

    #[test]
    fn run_ids_sort_as_runs_started() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let ids = [
            run_id_at(t, 999),
            run_id_at(t, 1000),
            run_id_at(t + Duration::from_millis(500), 5),
            run_id_at(t + Duration::from_millis(520), 5),
            run_id_at(t + Duration::from_secs(1), 1),
        ];
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(ids.iter().all(|i| i.len() == ids[0].len()), "{ids:?}");
        assert!(run_id().ends_with(&format!("-{:010}", std::process::id())));
    }

    #[test]
    fn a_manifest_round_trips_and_a_partial_one_is_refused() {
        let header = Header::new("r1", "0.1.0", digest(b"cfg"), "222222222222", "111111111111");
        assert!(header.config_digest.starts_with("sha256:") && header.config_digest.len() == 71);
        let mut w = ManifestWriter::create(header).unwrap();
        w.job("assets", "s3");
        let log = w.item_log("assets");
        let item = |k: &str| Item::new(k, ItemKind::Object, 3, format!("\"etag-{k}\""));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let mut r =
                            crate::ItemRecord::new(item(&format!("k{t}-{i}")), ItemOutcome::Copied);
                        r.escrow_fingerprint = Some("\"x\"".into());
                        log(r);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        w.job_end(JobSummary { job: "assets".into(), copied: 200, ..Default::default() });
        let (end, bytes) = w.finish().unwrap();
        assert_eq!((end.jobs, end.items), (1, 200));
        let text = String::from_utf8(bytes).unwrap();
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.jobs["assets"].items.len(), 200);
        assert_eq!(m.jobs["assets"].summary.as_ref().unwrap().copied, 200);
        let partial: String = text.lines().take(50).map(|l| format!("{l}\n")).collect();
        let err = Manifest::parse(&partial).unwrap_err();
        assert!(err.to_string().contains("partial"), "{err}");
        assert!(Manifest::parse("{\"line\":\"end\"}").is_err());
        assert!(Manifest::parse(&text.replace(FORMAT, "other/9")).is_err());
    }
    #[test]
    fn timestamps_keep_the_fraction_to_the_microsecond_without_trailing_zeros() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(timestamp(t), "2026-11-18T11:06:40Z");
        assert_eq!(timestamp(t + Duration::from_millis(500)), "2026-11-18T11:06:40.5Z");
        assert_eq!(timestamp(t + Duration::from_nanos(120_999)), "2026-11-18T11:06:40.00012Z");
        assert_eq!(timestamp(t + Duration::from_nanos(999)), "2026-11-18T11:06:40Z");
        assert_eq!(run_id_at(t, 7), "20261118T110640000000000Z-0000000007");
    }

    #[test]
    fn a_reader_parses_any_chunking_and_refuses_what_parse_refuses() {
        let header = Header::new("r2", "0.1.0", "sha256:00", "e", "p");
        let mut w = ManifestWriter::create(header).unwrap();
        w.job("assets", "s3");
        let log = w.item_log("assets");
        for i in 0..20 {
            log(crate::ItemRecord::new(
                Item::new(format!("k{i}"), ItemKind::Object, 1, "\"e\""),
                ItemOutcome::Copied,
            ));
        }
        let (_, spooled) = w.finish_spooled().unwrap();
        let whole = {
            let len = spooled.len();
            let bytes = futures::executor::block_on(spooled.read_range(0, len - 1)).unwrap();
            assert!(futures::executor::block_on(spooled.read_range(0, len)).is_err());
            assert_eq!(bytes.len() as u64, len);
            bytes.to_vec()
        };
        assert_eq!(spooled.into_bytes().unwrap(), whole);
        for size in [1, 2, 7, 100, whole.len()] {
            let mut r = ManifestReader::new("s3://b/k");
            for chunk in whole.chunks(size) {
                r.feed(chunk).unwrap();
            }
            let m = r.finish().unwrap();
            assert_eq!((m.header.run_id.as_str(), m.jobs["assets"].items.len()), ("r2", 20));
        }
        let crlf = String::from_utf8(whole.clone()).unwrap().replace('\n', "\r\n");
        let mut r = ManifestReader::new("s3://b/k");
        r.feed(crlf.as_bytes()).unwrap();
        assert_eq!(r.finish().unwrap().end.items, 20);
        let mut r = ManifestReader::new("s3://b/k");
        r.feed(&whole[..whole.len() / 2]).unwrap();
        let err = r.finish().unwrap_err().to_string();
        assert!(err.contains("s3://b/k"), "{err}");
        let r = ManifestReader::new("s3://b/k");
        assert!(r.check_len(MAX_MANIFEST_BYTES).is_ok());
        let err = r.check_len(MAX_MANIFEST_BYTES + 1).unwrap_err().to_string();
        assert!(err.contains("over the 4 GiB a manifest may have"), "{err}");
    }
}
