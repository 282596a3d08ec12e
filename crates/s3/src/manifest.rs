//! Run manifests in escrow: written through the S3 sink's upload path, read
//! back for `verify --offline`. The format (lines, writer, spool, parser)
//! is core's ([`escrow_sync_core::manifest`]); this is its I/O.
//!
//! A manifest goes up as `<prefix><run_id>.jsonl` with
//! [`S3Sink::write_record`]: the sink's protection (SSE-KMS with the escrow
//! key, Object Lock retention), `ExpectedBucketOwner`, a SHA-256 checksum,
//! one PutObject up to the part size ([`ManifestStore::with_part_size`],
//! 64 MiB), beyond it a multipart upload read part by part from the spool
//! file (one part in memory) and aborted on any failure: either way the
//! object appears whole or not at all, so a manifest in escrow is never
//! partial; a reader refuses one without its end line.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::manifest::{Manifest, ManifestReader, Spooled};
use escrow_sync_core::{Error, ErrorKind, RangeRead, Result, RetryPolicy};

use crate::multipart::{MIN_PART_SIZE, MultipartOptions};
use crate::protect::{LockMode, ObjectLock, Protection};
use crate::sink::S3Sink;
use crate::util::url;

/// The content type of a manifest object.
pub const MANIFEST_CONTENT_TYPE: &str = "application/x-ndjson";

/// The default part size of a manifest's multipart upload, and the largest
/// manifest written in one PutObject.
pub const DEFAULT_MANIFEST_PART_SIZE: u64 = 64 * 1024 * 1024;

/// Where manifests are kept, and how they are protected.
///
/// ```no_run
/// use escrow_sync_core::manifest::{Header, ManifestWriter, run_id};
/// use escrow_sync_s3::{LockMode, ManifestStore, ObjectLock, Protection};
///
/// # async fn demo(escrow: aws_sdk_s3::Client) -> escrow_sync_core::Result<()> {
/// let id = run_id();
/// let header = Header::new(id.clone(), "0.1.0", "sha256:00", "222222222222", "111111111111");
/// let mut writer = ManifestWriter::create(header)?;
/// writer.job("assets", "s3");
/// // ... give writer.item_log("assets") to the job's executor, then:
/// let (_, spooled) = writer.finish_spooled()?;
/// let store = ManifestStore::new(escrow, "escrow-manifests", "runs/")
///     .with_expected_owner(Some("222222222222".into()))
///     .with_protection(
///         Protection::new()
///             .with_kms_key_id(Some("alias/escrow".into()))
///             .with_object_lock(Some(ObjectLock::new(LockMode::Compliance, 30))),
///     );
/// let key = store.put_spooled(&id, spooled).await?;
/// let (latest, manifest) = store.latest().await?.expect("just written");
/// assert_eq!((latest, manifest.header.run_id), (key, id));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ManifestStore {
    sink: S3Sink,
    prefix: String,
    protection: Protection,
    retry: RetryPolicy,
    /// A lock mode [`ManifestStore::with_object_lock`] could not read.
    invalid_lock: Option<String>,
}

impl ManifestStore {
    /// Manifests under `prefix` in escrow bucket `bucket` (escrow credentials).
    pub fn new(
        s3: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        let prefix = prefix.into();
        ManifestStore {
            sink: S3Sink::from_client(s3, bucket)
                .with_multipart(Self::multipart(DEFAULT_MANIFEST_PART_SIZE))
                .with_ledger_scope(prefix.clone()),
            prefix,
            protection: Protection::new(),
            retry: RetryPolicy::default(),
            invalid_lock: None,
        }
    }

    /// One part at a time: memory holds one part of the spool file.
    fn multipart(part_size: u64) -> MultipartOptions {
        MultipartOptions::new().with_part_size(part_size).with_part_concurrency(1)
    }

    /// Manifests larger than `bytes` go up in parts of `bytes` (at least
    /// S3's 5 MiB, rounded up to a whole MiB; default
    /// [`DEFAULT_MANIFEST_PART_SIZE`]).
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.sink = self.sink.with_multipart(Self::multipart(bytes.max(MIN_PART_SIZE)));
        self
    }

    /// The bucket must belong to this account (`ExpectedBucketOwner`).
    pub fn with_expected_owner(mut self, account: Option<String>) -> Self {
        self.sink = self.sink.with_expected_owner(account);
        self
    }

    /// Protects manifests as the sink protects every copy: SSE-KMS with the
    /// escrow key, Object Lock retention.
    pub fn with_protection(mut self, protection: Protection) -> Self {
        self.invalid_lock = None;
        self.protect(protection)
    }

    fn protect(mut self, protection: Protection) -> Self {
        self.sink = self.sink.with_protection(protection.clone());
        self.protection = protection;
        self
    }

    /// Encrypts manifests with this escrow key (SSE-KMS).
    pub fn with_kms_key_id(self, key: Option<String>) -> Self {
        let protection = self.protection.clone().with_kms_key_id(key);
        self.protect(protection)
    }

    /// Holds manifests under Object Lock: mode (`COMPLIANCE` or
    /// `GOVERNANCE`) and days. Another mode fails every write with a clear
    /// error (prefer [`ManifestStore::with_protection`], which cannot).
    pub fn with_object_lock(mut self, lock: Option<(String, u32)>) -> Self {
        self.invalid_lock = None;
        let lock = match lock {
            None => None,
            Some((mode, days)) => match LockMode::parse(&mode) {
                Some(mode) => Some(ObjectLock::new(mode, days)),
                None => {
                    self.invalid_lock = Some(format!(
                        "manifest object_lock mode {mode:?} is not COMPLIANCE or GOVERNANCE: set \
                         one of them"
                    ));
                    None
                }
            },
        };
        let protection = self.protection.clone().with_object_lock(lock);
        self.protect(protection)
    }

    /// Retries of a whole manifest write on retryable errors (its parts are
    /// also retried on their own); default [`RetryPolicy::default`].
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        self.sink.bucket()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn location(&self, key: &str) -> String {
        url(self.sink.bucket(), key)
    }

    /// The key of run `run_id`'s manifest: `<prefix><run_id>.jsonl`.
    pub fn key(&self, run_id: &str) -> String {
        format!("{}{run_id}.jsonl", self.prefix)
    }

    /// Writes one manifest's whole text as `<prefix><run_id>.jsonl` (never
    /// partial); returns its key.
    pub async fn put(&self, run_id: &str, bytes: Vec<u8>) -> Result<String> {
        self.write(run_id, Arc::new(InMemory(Bytes::from(bytes), BTreeMap::new()))).await
    }

    /// Writes a spooled manifest as `<prefix><run_id>.jsonl`: in one
    /// PutObject up to the part size, otherwise in a multipart upload read
    /// part by part from the spool file (memory: one part), which S3 shows
    /// only once it is complete; a failed upload is aborted. Returns its key.
    pub async fn put_spooled(&self, run_id: &str, spooled: Spooled) -> Result<String> {
        self.write(run_id, Arc::new(spooled)).await
    }

    async fn write(&self, run_id: &str, body: Arc<dyn RangeRead>) -> Result<String> {
        let key = self.key(run_id);
        if let Some(why) = &self.invalid_lock {
            return Err(Error::invalid_config(why.clone()));
        }
        let mut attempt = 1;
        loop {
            match self.sink.write_record(&key, body.clone(), MANIFEST_CONTENT_TYPE).await {
                Ok(_) => return Ok(key),
                Err(e) if e.is_retryable() && attempt < self.retry.max_attempts => {
                    let delay = self.retry.delay(attempt);
                    tracing::debug!(key, attempt, ?delay, error = %e.chain(), "retrying the manifest");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Extends the Object Lock retention of the records under this store's
    /// prefix whose lock ends within the renewal window (records are kept
    /// for good: every one is renewed); see [`S3Sink::renew_retention`].
    /// Nothing to do without a lock.
    pub async fn renew_retention(&self) -> Result<crate::Renewal> {
        self.sink.renew_retention(|_| async { Ok(true) }).await
    }

    /// [`ManifestStore::renew_retention`] of the due days only (no sweep;
    /// nothing written where no ledger was started).
    pub async fn renew_due(&self) -> Result<crate::Renewal> {
        self.sink.renew_due(|_| async { Ok(true) }).await
    }

    /// Aborts the multipart uploads of manifests (and of anything else this
    /// store's sink journals at the bucket's root) that an interrupted run
    /// left behind more than `older_than` ago; see
    /// [`S3Sink::abort_stale_uploads`].
    pub async fn abort_stale_uploads(&self, older_than: std::time::Duration) -> Result<u64> {
        self.sink.abort_stale_uploads(older_than).await
    }

    /// The keys of every manifest right under the prefix (ending in
    /// `.jsonl`; not in a "folder" below it), oldest first: run ids sort in the order runs started.
    pub async fn keys(&self) -> Result<Vec<String>> {
        let mut pages = self
            .sink
            .client()
            .list_objects_v2()
            .bucket(self.sink.bucket())
            .prefix(&self.prefix)
            .set_expected_bucket_owner(self.sink.owner().map(str::to_string))
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
                    // Only this prefix's own manifests, not those of a
                    // prefix under it (verification records).
                    .filter(|k| !k[self.prefix.len().min(k.len())..].contains('/'))
                    .map(str::to_string),
            );
        }
        keys.sort();
        Ok(keys)
    }

    /// Reads and parses the manifest at `key` (a partial one is refused),
    /// line by line as it streams in: an object over
    /// [`MAX_MANIFEST_BYTES`](escrow_sync_core::manifest::MAX_MANIFEST_BYTES)
    /// or a line over
    /// [`MAX_MANIFEST_LINE_BYTES`](escrow_sync_core::manifest::MAX_MANIFEST_LINE_BYTES)
    /// is a clear error, never read into memory whole.
    pub async fn read(&self, key: &str) -> Result<Manifest> {
        self.read_with(key, ManifestReader::new(self.location(key))).await
    }

    /// Reads the manifest at `key` as [`ManifestStore::read`] does, but keeps
    /// no item lines: the header, each job's summary and the end line
    /// (memory does not grow with the items).
    pub async fn read_summaries(&self, key: &str) -> Result<Manifest> {
        self.read_with(key, ManifestReader::new(self.location(key)).summaries_only()).await
    }

    async fn read_with(&self, key: &str, mut reader: ManifestReader) -> Result<Manifest> {
        let out = self
            .sink
            .client()
            .get_object()
            .bucket(self.sink.bucket())
            .key(key)
            .set_expected_bucket_owner(self.sink.owner().map(str::to_string))
            .send()
            .await
            .map_err(|e| sdk_error(e, "s3:GetObject", self.location(key)))?;
        if let Some(len) = out.content_length() {
            reader.check_len(len as u64)?;
        }
        let mut body = out.body;
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            Error::new(ErrorKind::Transient, "s3:GetObject", self.location(key), e.to_string())
        })? {
            reader.feed(&chunk)?;
        }
        reader.finish()
    }

    /// The latest complete manifest (the greatest key under the prefix that
    /// ends in `.jsonl`), with its key; `None` when there is none.
    pub async fn latest(&self) -> Result<Option<(String, Manifest)>> {
        let Some(key) = self.keys().await?.pop() else { return Ok(None) };
        let manifest = self.read(&key).await?;
        Ok(Some((key, manifest)))
    }
}

/// A manifest's text in memory, as a [`RangeRead`].
struct InMemory(Bytes, BTreeMap<String, String>);

#[async_trait]
impl RangeRead for InMemory {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn attributes(&self) -> &BTreeMap<String, String> {
        &self.1
    }

    async fn read_range(&self, first: u64, last: u64) -> Result<Bytes> {
        let (first, end) = (first as usize, last as usize + 1);
        if first >= end || end > self.0.len() {
            return Err(Error::new(
                ErrorKind::Failed,
                "manifest",
                "memory",
                format!("bytes {first}-{last} are outside the {} bytes", self.0.len()),
            ));
        }
        Ok(self.0.slice(first..end))
    }
}
