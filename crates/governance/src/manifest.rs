//! Run manifests in escrow, and reading them back for `verify --offline`.
//!
//! A manifest is JSON lines: a header (tool version, config digest, run id,
//! accounts, start time), then per job a job line, one line per item (key,
//! fingerprint, size, outcome, escrow fingerprint, provenance) and a summary
//! line, and last an end line (finish time, counts). It is spooled to a local
//! file while the run goes, then written into escrow after the run (with the
//! escrow key and Object Lock when configured) in one PutObject, or from the
//! spool file in a multipart upload when it is larger than one part
//! ([`ManifestStore::with_part_size`], 64 MiB): either way the object appears
//! whole or not at all, so a manifest in escrow is never partial; a reader
//! refuses one without its end line.
//!
//! ```
//! use escrow_sync_governance::manifest::{Header, Manifest, ManifestWriter};
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

use serde::{Deserialize, Serialize};
use sha2::Digest;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Error, ErrorKind, ItemLog, ItemOutcome, ItemRecord, Result};

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
            started_at: escrow_sync_aws::now_rfc3339(),
        }
    }
}

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

fn run_id_at(at: std::time::SystemTime, pid: u32) -> String {
    let t = aws_smithy_types::DateTime::from(at);
    let secs = t.fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default();
    // `2026-11-28T23:47:01[.5]Z`: keep the whole seconds, then nanos, fixed width.
    let whole: String = secs.chars().take(19).filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{whole}{:09}Z-{pid:010}", t.subsec_nanos())
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
    pub findings: Vec<escrow_sync_core::Finding>,
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
    /// ([`escrow_sync_core::ExecutorOptions::with_item_log`]).
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
                source_time: r.item.modified.map(escrow_sync_core::rfc3339),
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
    /// written with [`ManifestStore::put_spooled`] without holding the whole
    /// text in memory.
    pub fn finish_spooled(self) -> Result<(EndLine, Spooled)> {
        let mut spool = self.out.lock().expect("manifest");
        let end = EndLine {
            finished_at: escrow_sync_aws::now_rfc3339(),
            jobs: self.jobs,
            items: spool.items,
        };
        spool.write(&Line::End(end.clone()));
        if let Some(e) = spool.failed.take() {
            return Err(spool_error(e));
        }
        spool.file.flush().map_err(|e| spool_error(e.to_string()))?;
        let file = spool.file.get_ref().try_clone().map_err(|e| spool_error(e.to_string()))?;
        let len = file.metadata().map_err(|e| spool_error(e.to_string()))?.len();
        Ok((end, Spooled { file, len }))
    }
}

fn spool_error(e: String) -> Error {
    Error::new(ErrorKind::Failed, "manifest", "the spool file", e)
}

/// A finished manifest in its local spool file.
#[derive(Debug)]
pub struct Spooled {
    file: std::fs::File,
    len: u64,
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
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        use std::io::{Read, Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(offset)).map_err(|e| spool_error(e.to_string()))?;
        let mut filled = 0;
        while filled < buf.len() {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(spool_error(e.to_string())),
            }
        }
        Ok(filled)
    }

    /// The whole text.
    pub fn into_bytes(mut self) -> Result<Vec<u8>> {
        let len = usize::try_from(self.len).map_err(|e| spool_error(e.to_string()))?;
        let mut bytes = vec![0; len];
        let n = self.read_at(0, &mut bytes)?;
        bytes.truncate(n);
        Ok(bytes)
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

/// Where manifests are kept, and how they are protected.
#[derive(Debug, Clone)]
pub struct ManifestStore {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    expected_owner: Option<String>,
    kms_key_id: Option<String>,
    object_lock: Option<(String, u32)>,
    part_size: u64,
}

/// The default part size of a manifest's multipart upload, and the largest
/// manifest written in one PutObject.
pub const DEFAULT_PART_SIZE: u64 = 64 * 1024 * 1024;

/// S3's smallest part (but the last).
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

impl ManifestStore {
    /// Manifests under `prefix` in escrow bucket `bucket` (escrow credentials).
    pub fn new(
        s3: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        ManifestStore {
            s3,
            bucket: bucket.into(),
            prefix: prefix.into(),
            expected_owner: None,
            kms_key_id: None,
            object_lock: None,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Manifests larger than `bytes` go up in parts of `bytes` (at least
    /// S3's 5 MiB; default [`DEFAULT_PART_SIZE`]).
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// The bucket must belong to this account (`ExpectedBucketOwner`).
    pub fn with_expected_owner(mut self, account: Option<String>) -> Self {
        self.expected_owner = account;
        self
    }

    /// Encrypts manifests with this escrow key (SSE-KMS).
    pub fn with_kms_key_id(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }

    /// Holds manifests under Object Lock: mode (`COMPLIANCE` or
    /// `GOVERNANCE`) and days.
    pub fn with_object_lock(mut self, lock: Option<(String, u32)>) -> Self {
        self.object_lock = lock;
        self
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn key(&self, run_id: &str) -> String {
        format!("{}{run_id}.jsonl", self.prefix)
    }

    fn retain_until(
        &self,
    ) -> Option<(aws_sdk_s3::types::ObjectLockMode, aws_smithy_types::DateTime)> {
        self.object_lock.as_ref().map(|(mode, days)| {
            let until = std::time::SystemTime::now()
                + std::time::Duration::from_secs(u64::from(*days) * 86_400);
            (aws_sdk_s3::types::ObjectLockMode::from(mode.as_str()), until.into())
        })
    }

    /// Writes one manifest (the whole text, in one PutObject: never partial)
    /// as `<prefix><run_id>.jsonl`; returns its key.
    pub async fn put(&self, run_id: &str, bytes: Vec<u8>) -> Result<String> {
        use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption};
        let key = self.key(run_id);
        let mut req = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/x-ndjson")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .body(bytes.into());
        if let Some(k) = &self.kms_key_id {
            req = req.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(k);
        }
        if let Some((mode, until)) = self.retain_until() {
            req = req.object_lock_mode(mode).object_lock_retain_until_date(until);
        }
        req.send().await.map_err(|e| sdk_error(e, "s3:PutObject", self.location(&key)))?;
        Ok(key)
    }

    /// Writes a spooled manifest as `<prefix><run_id>.jsonl`: in one
    /// PutObject up to the part size, otherwise in a multipart upload read
    /// part by part from the spool file (memory: one part), which S3 shows
    /// only once it is complete; a failed upload is aborted. Returns its key.
    pub async fn put_spooled(&self, run_id: &str, mut spooled: Spooled) -> Result<String> {
        use aws_sdk_s3::types::{
            ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
        };
        if spooled.len() <= self.part_size {
            return self.put(run_id, spooled.into_bytes()?).await;
        }
        let key = self.key(run_id);
        let mut create = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/x-ndjson")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_expected_bucket_owner(self.expected_owner.clone());
        if let Some(k) = &self.kms_key_id {
            create = create.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(k);
        }
        if let Some((mode, until)) = self.retain_until() {
            create = create.object_lock_mode(mode).object_lock_retain_until_date(until);
        }
        let upload = create
            .send()
            .await
            .map_err(|e| sdk_error(e, "s3:CreateMultipartUpload", self.location(&key)))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let parts = async {
            let size = usize::try_from(self.part_size).map_err(|e| spool_error(e.to_string()))?;
            let mut buf = vec![0; size];
            let mut parts = Vec::new();
            let mut offset = 0;
            while offset < spooled.len() {
                let n = spooled.read_at(offset, &mut buf)?;
                if n == 0 {
                    break;
                }
                let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
                let out = self
                    .s3
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .set_expected_bucket_owner(self.expected_owner.clone())
                    .body(buf[..n].to_vec().into())
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "s3:UploadPart", self.location(&key)))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag)
                        .set_checksum_sha256(out.checksum_sha256)
                        .build(),
                );
                offset += n as u64;
            }
            self.s3
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .set_expected_bucket_owner(self.expected_owner.clone())
                .multipart_upload(
                    CompletedMultipartUpload::builder().set_parts(Some(parts)).build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error(e, "s3:CompleteMultipartUpload", self.location(&key)))?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = parts {
            let aborted = self
                .s3
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .set_expected_bucket_owner(self.expected_owner.clone())
                .send()
                .await;
            if let Err(a) = aborted {
                tracing::warn!(
                    upload_id = %upload_id,
                    "the manifest's multipart upload to {} could not be aborted: {}",
                    self.location(&key),
                    sdk_error(a, "s3:AbortMultipartUpload", self.location(&key))
                );
            }
            return Err(e);
        }
        Ok(key)
    }

    /// The keys of every manifest under the prefix (ending in `.jsonl`),
    /// oldest first: run ids sort in the order runs started.
    pub async fn keys(&self) -> Result<Vec<String>> {
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| sdk_error(e, "s3:ListObjectsV2", self.location(&self.prefix)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter(|k| k.ends_with(".jsonl"))
                    .map(str::to_string),
            );
        }
        keys.sort();
        Ok(keys)
    }

    /// Reads and parses the manifest at `key` (a partial one is refused),
    /// line by line as it streams in: an object over [`MAX_MANIFEST_BYTES`]
    /// or a line over [`MAX_MANIFEST_LINE_BYTES`] is a clear error, never
    /// read into memory whole.
    pub async fn read(&self, key: &str) -> Result<Manifest> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .send()
            .await
            .map_err(|e| sdk_error(e, "s3:GetObject", self.location(key)))?;
        let failed = |m: String| Error::new(ErrorKind::Failed, "manifest", self.location(key), m);
        let too_large = |size: String| {
            failed(format!(
                "{size} bytes, over the {} GiB a manifest may have: not a manifest escrow-sync \
                 wrote, or a damaged one; list the manifests (`status`) and remove or ignore this \
                 object",
                MAX_MANIFEST_BYTES >> 30
            ))
        };
        if let Some(len) = out.content_length().filter(|l| *l as u64 > MAX_MANIFEST_BYTES) {
            return Err(too_large(len.to_string()));
        }
        let mut body = out.body;
        let mut parser = ManifestParser::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut total: u64 = 0;
        let feed = |parser: &mut ManifestParser, bytes: &[u8]| -> Result<()> {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| failed(format!("line {}: not UTF-8 text ({e})", parser.n + 1)))?;
            parser.line(text.strip_suffix('\r').unwrap_or(text)).map_err(|e| failed(e.chain()))
        };
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            Error::new(ErrorKind::Transient, "s3:GetObject", self.location(key), e.to_string())
        })? {
            total += chunk.len() as u64;
            if total > MAX_MANIFEST_BYTES {
                return Err(too_large(format!("more than {total}")));
            }
            let mut rest: &[u8] = &chunk;
            while let Some(i) = rest.iter().position(|b| *b == b'\n') {
                pending.extend_from_slice(&rest[..i]);
                feed(&mut parser, &pending)?;
                pending.clear();
                rest = &rest[i + 1..];
            }
            if pending.len() + rest.len() > MAX_MANIFEST_LINE_BYTES {
                // Refused without holding more of the line.
                return Err(failed(long_line(parser.n + 1).chain()));
            }
            pending.extend_from_slice(rest);
        }
        if !pending.is_empty() {
            feed(&mut parser, &pending)?;
        }
        parser.finish().map_err(|e| failed(e.chain()))
    }

    /// The latest complete manifest (the greatest key under the prefix that
    /// ends in `.jsonl`), with its key; `None` when there is none.
    pub async fn latest(&self) -> Result<Option<(String, Manifest)>> {
        let Some(key) = self.keys().await?.pop() else { return Ok(None) };
        let manifest = self.read(&key).await?;
        Ok(Some((key, manifest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use escrow_sync_core::{Item, ItemKind};

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
                        let mut r = escrow_sync_core::ItemRecord::new(
                            item(&format!("k{t}-{i}")),
                            ItemOutcome::Copied,
                        );
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
}
