//! Multipart copies: CreateMultipartUpload, parallel parts drawing on one
//! shared budget (UploadPartCopy server-side, or a ranged read and
//! UploadPart when streaming), CompleteMultipartUpload, and
//! AbortMultipartUpload on any failure so no upload is left behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart};

use crate::checksum::{self, Checksum, with_checksum};
use tokio::sync::Semaphore;

use crate::util::PaceExt;
use escrow_sync_core::{
    Error, ErrorKind, Item, RangeRead, Receipt, Result, RetryPolicy, ServerSideRef,
};

use crate::sink::S3Sink;
use crate::util::{TAG_PREFIX, copy_source_version, s3_error, tagging_header, url};

const MIB: u64 = 1024 * 1024;
/// The smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// The largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// The most parts S3 accepts in one upload.
pub const MAX_PARTS: u32 = 10_000;
/// Metadata key (`x-amz-meta-…`) recording the source ETag on multipart copies,
/// whose own ETag differs from the source's.
pub const SOURCE_ETAG_META: &str = "escrow-sync-source-etag";

/// The default bound on the bytes a sink's streamed copies hold at once
/// ([`MultipartOptions::with_memory_limit`]).
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 * MIB;
/// The part size of server-side copies, unless set.
const DEFAULT_PART_SIZE: u64 = 64 * MIB;
/// The part copies in flight at once, unless set.
const DEFAULT_PART_CONCURRENCY: usize = 64;
/// Streamed copies get this many parts out of their memory limit, unless
/// the part size is set.
const STREAM_PARTS_PER_BUDGET: u64 = 8;
/// The largest part a streamed copy derives from its memory limit.
const MAX_DERIVED_PART_SIZE: u64 = 64 * MIB;

/// When and how objects are copied in parts.
///
/// Server-side copies (UploadPartCopy) move no bytes through this process:
/// they are bounded by the part concurrency alone. Streamed copies (a
/// ranged read, then PutObject or UploadPart) are also bounded by the
/// memory limit: each read claims its size from one budget per sink before
/// it starts and holds it until its bytes are sent. Unless set, their part
/// size and concurrency are derived from that limit.
///
/// ```
/// use escrow_sync_s3::MultipartOptions;
/// const MIB: u64 = 1024 * 1024;
/// let o = MultipartOptions::new().with_memory_limit(256 * MIB);
/// assert_eq!(o.stream_part_size(), 32 * MIB);
/// assert_eq!(o.stream_parts_in_flight(), 8);
/// assert_eq!(o.streaming_summary(), "memory_limit 256 MiB → 32 MiB parts, 8 in flight");
/// // Server-side copies keep their own part size and concurrency.
/// assert_eq!((o.part_size_for(1024 * MIB).unwrap(), o.part_concurrency()), (64 * MIB, 64));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartOptions {
    threshold: u64,
    part_size: Option<u64>,
    max_parts: u32,
    part_concurrency: Option<usize>,
    memory_limit: u64,
    part_retry: RetryPolicy,
}

impl Default for MultipartOptions {
    fn default() -> Self {
        MultipartOptions {
            threshold: 256 * MIB,
            part_size: None,
            max_parts: MAX_PARTS,
            part_concurrency: None,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            part_retry: RetryPolicy::default(),
        }
    }
}

impl MultipartOptions {
    /// Defaults: objects over 256 MiB copied server-side in 64 MiB parts, at
    /// most 10,000 parts, 64 part copies at once across all objects;
    /// streamed copies within 256 MiB of memory (32 MiB parts, 8 at once).
    pub fn new() -> Self {
        Self::default()
    }

    /// Objects larger than this are copied in parts. Objects over 5 GiB
    /// always are (CopyObject cannot copy them).
    pub fn with_threshold(mut self, bytes: u64) -> Self {
        self.threshold = bytes;
        self
    }

    /// The preferred part size (raised when an object would need more than
    /// `max_parts` parts; at least 5 MiB). Default: 64 MiB for server-side
    /// copies; for streamed copies, derived from the memory limit.
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = Some(bytes);
        self
    }

    /// The most parts per object (1..=10,000).
    pub fn with_max_parts(mut self, parts: u32) -> Self {
        self.max_parts = parts.clamp(1, MAX_PARTS);
        self
    }

    /// Part copies in flight at once, across all objects of a sink (default
    /// 64). Streamed parts are further bounded by the memory limit.
    pub fn with_part_concurrency(mut self, n: usize) -> Self {
        self.part_concurrency = Some(n.max(1));
        self
    }

    /// The most bytes a sink's streamed copies hold at once (default
    /// [`DEFAULT_MEMORY_LIMIT`]; at least 5 MiB, S3's smallest part).
    ///
    /// Every streamed read (a whole object sent in one PutObject, or one
    /// part) claims its size from this budget before it starts and keeps
    /// it until its bytes are sent. A part larger than the whole budget
    /// (an explicit part size above it, or a part size raised to stay
    /// within `max_parts`) claims the whole budget: it runs alone, and
    /// still runs. Server-side copies do not draw on it. The process needs
    /// this much and its own working memory besides (runtime, SDK, HTTP
    /// buffers).
    pub fn with_memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = bytes.max(MIN_PART_SIZE);
        self
    }

    /// Retries of one part (same rules as the executor's item retries).
    pub fn with_part_retry(mut self, retry: RetryPolicy) -> Self {
        self.part_retry = retry;
        self
    }

    /// The effective threshold: never above 5 GiB.
    pub fn threshold(&self) -> u64 {
        self.threshold.min(MAX_PART_SIZE)
    }

    /// The part concurrency: part copies in flight at once across all
    /// objects of a sink.
    pub fn part_concurrency(&self) -> usize {
        self.part_concurrency.unwrap_or(DEFAULT_PART_CONCURRENCY)
    }

    /// The memory limit of streamed copies, in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    /// The preferred part size of streamed copies: the one set, else an
    /// eighth of the memory limit, rounded down to a whole MiB, within 5 to
    /// 64 MiB.
    pub fn stream_part_size(&self) -> u64 {
        self.part_size.unwrap_or_else(|| {
            (self.memory_limit / STREAM_PARTS_PER_BUDGET / MIB * MIB)
                .clamp(MIN_PART_SIZE, MAX_DERIVED_PART_SIZE)
        })
    }

    /// Streamed parts in flight at once: as many parts of
    /// [`MultipartOptions::stream_part_size`] as fit the memory limit (at
    /// least one), at most the part concurrency.
    pub fn stream_parts_in_flight(&self) -> usize {
        let fit = (self.memory_limit / self.stream_part_size().max(1)).max(1);
        usize::try_from(fit).unwrap_or(usize::MAX).min(self.part_concurrency())
    }

    /// One line for a streamed job's report, such as
    /// `memory_limit 256 MiB → 32 MiB parts, 8 in flight`.
    pub fn streaming_summary(&self) -> String {
        format!(
            "memory_limit {} → {} parts, {} in flight",
            mib(self.memory_limit),
            mib(self.stream_part_size()),
            self.stream_parts_in_flight()
        )
    }

    /// The part size of a server-side copy of an object of `size` bytes:
    /// the preferred size, raised so that there are at most `max_parts`
    /// parts, rounded up to a whole MiB, at least 5 MiB. Fails when even
    /// 5 GiB parts are not enough.
    pub fn part_size_for(&self, size: u64) -> Result<u64> {
        self.sized(self.part_size.unwrap_or(DEFAULT_PART_SIZE), size)
    }

    /// The part size of a streamed copy of an object of `size` bytes: as
    /// [`MultipartOptions::part_size_for`], from
    /// [`MultipartOptions::stream_part_size`].
    pub fn stream_part_size_for(&self, size: u64) -> Result<u64> {
        self.sized(self.stream_part_size(), size)
    }

    fn sized(&self, preferred: u64, size: u64) -> Result<u64> {
        let needed = size.div_ceil(u64::from(self.max_parts));
        let part = preferred.max(needed).max(MIN_PART_SIZE).div_ceil(MIB) * MIB;
        if part > MAX_PART_SIZE {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "s3:UploadPartCopy",
                format!("{size} bytes"),
                format!(
                    "an object this large needs parts over 5 GiB with max_parts = {}; raise max_parts",
                    self.max_parts
                ),
            ));
        }
        Ok(part)
    }
}

/// `bytes` for people: whole MiB when it is one, else KiB or bytes.
fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

/// The inclusive byte ranges of the parts of an object of `size` bytes.
pub fn part_ranges(size: u64, part_size: u64) -> Vec<(u64, u64)> {
    (0..size.div_ceil(part_size))
        .map(|i| {
            let start = i * part_size;
            (start, (start + part_size).min(size) - 1)
        })
        .collect()
}

/// The shared budgets of one sink: part copies in flight (every multipart
/// copy), and the bytes its streamed reads hold (streamed copies only).
#[derive(Debug, Clone)]
pub(crate) struct PartBudget {
    pub(crate) parts: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// The byte budget's size, in its units.
    units: u32,
}

/// The byte budget counts in KiB: a claim of up to 4 TiB fits a `u32`.
const BUDGET_UNIT: u64 = 1024;

impl PartBudget {
    pub(crate) fn new(options: &MultipartOptions) -> Self {
        let units = u32::try_from(options.memory_limit().div_ceil(BUDGET_UNIT).max(1))
            .unwrap_or(u32::MAX)
            .min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        PartBudget {
            parts: Arc::new(Semaphore::new(options.part_concurrency())),
            bytes: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// Claims `bytes` of the memory budget for a streamed read, waiting
    /// until they are free; held until the permit is dropped. A claim
    /// larger than the whole budget takes the whole budget: it waits for
    /// every other claim to end, then runs alone, so it never waits forever.
    pub(crate) async fn claim_bytes(
        &self,
        bytes: u64,
        op: &'static str,
        resource: &str,
    ) -> Result<tokio::sync::SemaphorePermit<'_>> {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX).min(self.units);
        self.bytes
            .acquire_many(units)
            .await
            .map_err(|_| Error::new(ErrorKind::Cancelled, op, resource, ""))
    }
}

/// The source object's headers a multipart upload must set explicitly.
pub(crate) struct SourceHead {
    pub(crate) metadata: HashMap<String, String>,
    pub(crate) content_type: Option<String>,
    pub(crate) cache_control: Option<String>,
    pub(crate) content_disposition: Option<String>,
    pub(crate) content_encoding: Option<String>,
    pub(crate) content_language: Option<String>,
    pub(crate) checksum: Option<Checksum>,
}

/// The checksum an upload keeps: its algorithm (CRC family, full-object;
/// or SHA-256 per part, for escrow-sync's own records), its type, and the
/// source's full-object value S3 checks on completion, if known.
pub(crate) struct Sums {
    pub(crate) algorithm: Option<ChecksumAlgorithm>,
    pub(crate) kind: Option<ChecksumType>,
    pub(crate) full: Option<Checksum>,
}

/// Where the parts of an upload get their bytes.
pub(crate) enum PartSource<'a> {
    /// Server-side: UploadPartCopy from the source object.
    Copy { src: &'a ServerSideRef, source: String },
    /// Streamed: a ranged read, then UploadPart.
    Read(&'a dyn RangeRead),
}

impl PartSource<'_> {
    fn operation(&self) -> &'static str {
        match self {
            PartSource::Copy { .. } => "s3:UploadPartCopy",
            PartSource::Read(_) => "s3:UploadPart",
        }
    }
}

impl SourceHead {
    /// The headers a streamed source handed over as attributes.
    pub(crate) fn from_attributes(attributes: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| attributes.get(k).cloned();
        SourceHead {
            metadata: crate::util::metadata(attributes),
            content_type: get(crate::util::CONTENT_TYPE),
            cache_control: get("cache-control"),
            content_disposition: get("content-disposition"),
            content_encoding: get("content-encoding"),
            content_language: get("content-language"),
            checksum: Checksum::from_attributes(attributes),
        }
    }
}

impl S3Sink {
    /// The source object's metadata and content headers (escrow credentials,
    /// `If-Match` the listed ETag).
    pub(crate) async fn head_source(&self, src: &ServerSideRef) -> Result<SourceHead> {
        let out = self
            .client()
            .head_object()
            .bucket(&src.container)
            .key(&src.key)
            .set_version_id(src.version.clone())
            .if_match(&src.fingerprint)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .set_expected_bucket_owner(src.owner.clone())
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:HeadObject", url(&src.container, &src.key)))?;
        Ok(SourceHead {
            metadata: out.metadata().cloned().unwrap_or_default(),
            content_type: out.content_type().map(str::to_string),
            cache_control: out.cache_control().map(str::to_string),
            content_disposition: out.content_disposition().map(str::to_string),
            content_encoding: out.content_encoding().map(str::to_string),
            content_language: out.content_language().map(str::to_string),
            checksum: Checksum::from_head(&out),
        })
    }

    /// Copies `src` in parts into `dest_key`; aborts the upload on any failure.
    pub(crate) async fn multipart_copy(
        &self,
        item: &Item,
        src: &ServerSideRef,
        dest_key: &str,
    ) -> Result<Receipt> {
        let head = self.head_source(src).await?;
        let source = copy_source_version(&src.container, &src.key, src.version.as_deref());
        let from = PartSource::Copy { src, source };
        if src.attributes.contains_key(crate::tags::TAGS_COPIED_ATTR) {
            // CreateMultipartUpload cannot copy tags: read them (escrow
            // credentials, as the copy itself) and set them.
            let mut attributes = src.attributes.clone();
            let tags = crate::tags::object_tags(
                self.client(),
                &src.container,
                &src.key,
                src.version.as_deref(),
                src.owner.clone(),
                self.pacer(),
            )
            .await?;
            attributes.extend(tags.into_iter().map(|(k, v)| (format!("{TAG_PREFIX}{k}"), v)));
            return self
                .multipart_upload(item, head, &src.fingerprint, &attributes, from, dest_key)
                .await;
        }
        self.multipart_upload(item, head, &src.fingerprint, &src.attributes, from, dest_key).await
    }

    /// Uploads `data` in parts into `dest_key`, reading each part's range as
    /// it is uploaded; aborts the upload on any failure.
    pub(crate) async fn multipart_stream(
        &self,
        item: &Item,
        data: &dyn RangeRead,
        dest_key: &str,
    ) -> Result<Receipt> {
        let head = SourceHead::from_attributes(data.attributes());
        let from = PartSource::Read(data);
        self.multipart_upload(item, head, &item.fingerprint, data.attributes(), from, dest_key)
            .await
    }

    async fn multipart_upload(
        &self,
        item: &Item,
        head: SourceHead,
        source_etag: &str,
        attributes: &BTreeMap<String, String>,
        from: PartSource<'_>,
        dest_key: &str,
    ) -> Result<Receipt> {
        // The copy keeps the source's full-object CRC; where its value is
        // known, S3 checks the assembled copy against it on completion.
        let algorithm = head
            .checksum
            .as_ref()
            .map(|c| c.algorithm.clone())
            .or_else(|| checksum::algorithm(item.checksum_algorithm.as_deref()))
            .filter(checksum::full_object);
        let full = head.checksum.clone().filter(|c| Some(&c.algorithm) == algorithm.as_ref());
        let mut head = head;
        head.metadata.extend(crate::util::metadata(attributes));
        head.metadata.insert(SOURCE_ETAG_META.to_string(), source_etag.to_string());
        let tagging = tagging_header(attributes);
        let kind = algorithm.as_ref().map(|_| ChecksumType::FullObject);
        let sums = Sums { algorithm, kind, full };
        self.upload_in_parts(
            item,
            head,
            Some(tagging).filter(|t| !t.is_empty()),
            sums,
            from,
            dest_key,
        )
        .await
    }

    /// The upload itself: CreateMultipartUpload with `head`'s metadata and
    /// content headers, `tagging`, the checksum of `sums` and the sink's
    /// protection; the journal entry; the parts from `from`; completion
    /// (then the retention checked); an abort on any failure.
    ///
    /// No upload is left open even when this future is dropped half-way
    /// (a hard stop): the upload is created by a task of its own that hands
    /// it over as an [`OpenUpload`], which aborts it in the background when
    /// dropped before it is closed ([`S3Sink::settle`] waits for that).
    pub(crate) async fn upload_in_parts(
        &self,
        item: &Item,
        head: SourceHead,
        tagging: Option<String>,
        sums: Sums,
        from: PartSource<'_>,
        dest_key: &str,
    ) -> Result<Receipt> {
        let part_size = match from {
            PartSource::Copy { .. } => self.multipart().part_size_for(item.size)?,
            PartSource::Read(_) => self.multipart().stream_part_size_for(item.size)?,
        };
        let open = self.open_upload(head, tagging, &sums, dest_key).await?;
        let upload_id = open.upload_id.clone();
        let res =
            self.parts_and_complete(item, &from, &sums, dest_key, &upload_id, part_size).await;
        if res.is_err() {
            self.abort(dest_key, &upload_id).await;
        }
        self.journal_close(&upload_id).await;
        open.closed();
        res.map(|etag| {
            Receipt::new(item.size, etag).with_parts(part_ranges(item.size, part_size).len() as u32)
        })
    }

    /// CreateMultipartUpload and the journal entry, in a task of their own
    /// so that an upload S3 created is always known: when the caller is
    /// gone by the time it is, the [`OpenUpload`] is dropped, and aborted.
    async fn open_upload(
        &self,
        head: SourceHead,
        tagging: Option<String>,
        sums: &Sums,
        dest_key: &str,
    ) -> Result<OpenUpload> {
        let sink = self.clone();
        let key = dest_key.to_string();
        let (algorithm, kind) = (sums.algorithm.clone(), sums.kind.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.cleanup().spawn(async move {
            let opened = sink.create_upload(head, tagging, algorithm, kind, &key).await;
            // Refused when the copy was dropped meanwhile: the upload is
            // dropped here, and aborted.
            let _ = tx.send(opened);
        });
        rx.await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Cancelled,
                "s3:CreateMultipartUpload",
                url(self.bucket(), dest_key),
                "",
            ))
        })
    }

    async fn create_upload(
        &self,
        head: SourceHead,
        tagging: Option<String>,
        algorithm: Option<ChecksumAlgorithm>,
        kind: Option<ChecksumType>,
        dest_key: &str,
    ) -> Result<OpenUpload> {
        let dest = url(self.bucket(), dest_key);
        let created = self
            .client()
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(dest_key)
            .set_metadata(Some(head.metadata).filter(|m| !m.is_empty()))
            .set_content_type(head.content_type)
            .set_cache_control(head.cache_control)
            .set_content_disposition(head.content_disposition)
            .set_content_encoding(head.content_encoding)
            .set_content_language(head.content_language)
            .set_tagging(tagging)
            .set_checksum_algorithm(algorithm)
            .set_checksum_type(kind)
            .set_expected_bucket_owner(self.owner().map(str::to_string));
        let created = crate::protect::protect!(created, self.protection())
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:CreateMultipartUpload", dest.clone()))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        tracing::debug!(%dest, %upload_id, "multipart upload started");
        // Mark the upload as ours, so a later run can abort it if this one
        // is interrupted; no mark, no upload.
        if let Err(e) = self.journal_open(dest_key, &upload_id).await {
            self.abort(dest_key, &upload_id).await;
            return Err(e);
        }
        Ok(OpenUpload { sink: self.clone(), dest_key: dest_key.to_string(), upload_id, open: true })
    }

    async fn parts_and_complete(
        &self,
        item: &Item,
        from: &PartSource<'_>,
        sums: &Sums,
        dest_key: &str,
        upload_id: &str,
        part_size: u64,
    ) -> Result<Option<String>> {
        let failed = AtomicBool::new(false);
        let op = from.operation();
        let parts = part_ranges(item.size, part_size).into_iter().enumerate().map(|(i, (a, b))| {
            let failed = &failed;
            async move {
                // The permit bounds the parts in flight across all objects;
                // a streamed part also claims its bytes (`upload_part`).
                let _permit = self
                    .part_budget()
                    .parts
                    .acquire()
                    .await
                    .map_err(|_| Error::new(ErrorKind::Cancelled, op, dest_key, ""))?;
                if failed.load(Ordering::SeqCst) {
                    return Err(Error::new(
                        ErrorKind::Cancelled,
                        op,
                        url(self.bucket(), dest_key),
                        "another part failed",
                    ));
                }
                let number = i as i32 + 1;
                let res = self.part(from, sums, dest_key, upload_id, number, a, b).await;
                if res.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                res
            }
        });
        // Every started part finishes before the upload is completed or
        // aborted: nothing is left running against an aborted upload.
        let results = futures::future::join_all(parts).await;
        let (ok, errors): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        let mut errors: Vec<Error> = errors.into_iter().filter_map(Result::err).collect();
        // Report the part that failed, not the parts skipped because of it.
        errors.sort_by_key(|e| e.kind() == ErrorKind::Cancelled);
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let mut completed: Vec<CompletedPart> = ok.into_iter().filter_map(Result::ok).collect();
        completed.sort_by_key(|p| p.part_number());
        let dest = url(self.bucket(), dest_key);
        let complete = self
            .client()
            .complete_multipart_upload()
            .bucket(self.bucket())
            .key(dest_key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder().set_parts(Some(completed)).build(),
            )
            .set_checksum_type(sums.kind.clone())
            .set_expected_bucket_owner(self.owner().map(str::to_string));
        let out = with_checksum!(complete, sums.full.as_ref())
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:CompleteMultipartUpload", dest.clone()))?;
        self.ensure_retention(dest_key, out.version_id()).await?;
        Ok(out.e_tag().map(str::to_string))
    }

    /// One part, retried on its own: UploadPartCopy, or a ranged read and
    /// UploadPart.
    #[allow(clippy::too_many_arguments)]
    async fn part(
        &self,
        from: &PartSource<'_>,
        sums: &Sums,
        dest_key: &str,
        upload_id: &str,
        number: i32,
        first: u64,
        last: u64,
    ) -> Result<CompletedPart> {
        let retry = self.multipart().part_retry;
        let resource = format!("{} part {number}", url(self.bucket(), dest_key));
        let mut attempt = 1;
        loop {
            let res = match from {
                PartSource::Copy { src, source } => {
                    self.copy_part(src, source, dest_key, upload_id, number, first, last, &resource)
                        .await
                }
                PartSource::Read(data) => {
                    self.upload_part(
                        *data, sums, dest_key, upload_id, number, first, last, &resource,
                    )
                    .await
                }
            };
            match res {
                Ok((etag, part_sum)) => {
                    let part = CompletedPart::builder().part_number(number).set_e_tag(etag);
                    let part_sum = part_sum.and_then(|value| {
                        sums.algorithm.clone().map(|algorithm| Checksum { algorithm, value })
                    });
                    return Ok(with_checksum!(part, part_sum.as_ref()).build());
                }
                Err(e) if e.is_retryable() && attempt < retry.max_attempts => {
                    let delay = retry.delay(attempt);
                    tracing::debug!(%resource, attempt, ?delay, error = %e.chain(), "retrying part");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy_part(
        &self,
        src: &ServerSideRef,
        source: &str,
        dest_key: &str,
        upload_id: &str,
        number: i32,
        first: u64,
        last: u64,
        resource: &str,
    ) -> Result<(Option<String>, Option<String>)> {
        let out = self
            .client()
            .upload_part_copy()
            .bucket(self.bucket())
            .key(dest_key)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(source)
            .copy_source_range(format!("bytes={first}-{last}"))
            .copy_source_if_match(&src.fingerprint)
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .set_expected_source_bucket_owner(src.owner.clone())
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:UploadPartCopy", resource.to_string()))?;
        let r = out.copy_part_result();
        let sum = r.and_then(|r| {
            r.checksum_crc64_nvme()
                .or(r.checksum_crc32_c())
                .or(r.checksum_crc32())
                .map(str::to_string)
        });
        Ok((r.and_then(|r| r.e_tag()).map(str::to_string), sum))
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        data: &dyn RangeRead,
        sums: &Sums,
        dest_key: &str,
        upload_id: &str,
        number: i32,
        first: u64,
        last: u64,
        resource: &str,
    ) -> Result<(Option<String>, Option<String>)> {
        // The part's bytes are claimed before they are read and released
        // once UploadPart has sent them (each attempt claims anew: a retry
        // waiting out its back-off holds nothing).
        let _claim =
            self.part_budget().claim_bytes(last - first + 1, "s3:UploadPart", resource).await?;
        // The body is the read's buffer itself (`Bytes` is shared, not
        // copied), so a part is held once.
        let bytes = data.read_range(first, last).await?;
        let len = bytes.len() as i64;
        let out = self
            .client()
            .upload_part()
            .bucket(self.bucket())
            .key(dest_key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len)
            .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
            .set_checksum_algorithm(sums.algorithm.clone())
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:UploadPart", resource.to_string()))?;
        let sum = out
            .checksum_crc64_nvme()
            .or(out.checksum_crc32_c())
            .or(out.checksum_crc32())
            .or(out.checksum_sha256())
            .or(out.checksum_sha1())
            .map(str::to_string);
        Ok((out.e_tag().map(str::to_string), sum))
    }

    /// Makes sure a completed multipart copy carries the configured
    /// retention: S3 applies the lock headers of CreateMultipartUpload, but
    /// not every S3 implementation does (moto does not), and an escrow copy
    /// without its retention is not protected.
    async fn ensure_retention(&self, dest_key: &str, version: Option<&str>) -> Result<()> {
        let Some(lock) = self.protection().object_lock else { return Ok(()) };
        let dest = url(self.bucket(), dest_key);
        let head = self.head_escrow(dest_key, version).await?;
        if head.object_lock_mode().is_some() && head.object_lock_retain_until_date().is_some() {
            return Ok(());
        }
        tracing::debug!(%dest, "setting retention after the multipart copy");
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .set_mode(self.protection().lock_mode().map(|m| match m {
                aws_sdk_s3::types::ObjectLockMode::Governance => {
                    aws_sdk_s3::types::ObjectLockRetentionMode::Governance
                }
                _ => aws_sdk_s3::types::ObjectLockRetentionMode::Compliance,
            }))
            .retain_until_date(aws_smithy_types::DateTime::from(lock.retain_until()))
            .build();
        self.client()
            .put_object_retention()
            .bucket(self.bucket())
            .key(dest_key)
            .set_version_id(version.map(str::to_string))
            .retention(retention)
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:PutObjectRetention", dest))?;
        Ok(())
    }

    /// Aborts an upload, retrying a little: an upload left behind costs
    /// storage and is invisible in listings.
    pub(crate) async fn abort(&self, dest_key: &str, upload_id: &str) {
        let retry = self.multipart().part_retry;
        let attempts = retry.max_attempts.max(5);
        for attempt in 1..=attempts {
            let res = self
                .client()
                .abort_multipart_upload()
                .bucket(self.bucket())
                .key(dest_key)
                .upload_id(upload_id)
                .set_expected_bucket_owner(self.owner().map(str::to_string))
                .customize()
                .config_override(crate::no_sdk_retries())
                .send()
                .paced(self.pacer())
                .await;
            let err = match res {
                Ok(_) => return,
                Err(e) => s3_error(e, "s3:AbortMultipartUpload", url(self.bucket(), dest_key)),
            };
            if err.kind() == ErrorKind::NotFound {
                return;
            }
            if attempt == attempts {
                tracing::error!(
                    upload_id,
                    error = %err.chain(),
                    "could not abort a failed multipart copy; the upload is left behind"
                );
                return;
            }
            tracing::warn!(upload_id, attempt, error = %err.chain(), "abort failed; retrying");
            tokio::time::sleep(retry.delay(attempt)).await;
        }
    }
}

/// A multipart upload of ours, created and journaled, not yet completed or
/// aborted. Dropped before [`OpenUpload::closed`] (the copy's future was
/// dropped: a hard stop), it aborts the upload and removes its journal
/// entry in the background, in the sink's clean-up ([`S3Sink::settle`]).
pub(crate) struct OpenUpload {
    sink: S3Sink,
    dest_key: String,
    upload_id: String,
    open: bool,
}

impl OpenUpload {
    /// The upload was completed or aborted, and its journal entry removed.
    fn closed(mut self) {
        self.open = false;
    }
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let sink = self.sink.clone();
        let (key, id) = (std::mem::take(&mut self.dest_key), std::mem::take(&mut self.upload_id));
        tracing::debug!(key, upload_id = id, "copy stopped half-way: aborting its upload");
        self.sink.cleanup().spawn(async move {
            sink.abort(&key, &id).await;
            sink.journal_close(&id).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_respect_the_part_limit_and_the_minimum() {
        let o = MultipartOptions::new();
        assert_eq!(o.part_size_for(300 * MIB).unwrap(), 64 * MIB);
        // Exactly 10,000 parts of 64 MiB.
        let edge = 10_000 * 64 * MIB;
        assert_eq!(o.part_size_for(edge).unwrap(), 64 * MIB);
        assert_eq!(part_ranges(edge, 64 * MIB).len(), 10_000);
        // One byte more needs bigger parts, still at most 10,000.
        let p = o.part_size_for(edge + 1).unwrap();
        assert_eq!(p, 65 * MIB);
        assert!(part_ranges(edge + 1, p).len() <= 10_000);
        // 5 TiB, the largest S3 object.
        let huge = 5 * 1024 * 1024 * MIB;
        let p = o.part_size_for(huge).unwrap();
        assert!(part_ranges(huge, p).len() <= 10_000 && p.is_multiple_of(MIB), "{p}");
        // A small preferred size is raised to 5 MiB.
        let small = MultipartOptions::new().with_part_size(1);
        assert_eq!(small.part_size_for(12 * MIB).unwrap(), 5 * MIB);
        // A tight max_parts raises the part size, and can make it impossible.
        let few = MultipartOptions::new().with_max_parts(2);
        assert_eq!(few.part_size_for(300 * MIB).unwrap(), 150 * MIB);
        assert!(few.part_size_for(11 * 1024 * MIB).is_err());
    }

    #[test]
    fn ranges_cover_the_object_exactly() {
        assert_eq!(part_ranges(12, 5), [(0, 4), (5, 9), (10, 11)]);
        assert_eq!(part_ranges(10, 5), [(0, 4), (5, 9)]);
        assert_eq!(part_ranges(1, 5), [(0, 0)]);
        assert!(part_ranges(0, 5).is_empty());
    }

    #[test]
    fn streamed_parts_are_derived_from_the_memory_limit_unless_set() {
        let at = |limit: u64| {
            let o = MultipartOptions::new().with_memory_limit(limit);
            (o.stream_part_size(), o.stream_parts_in_flight())
        };
        assert_eq!(at(256 * MIB), (32 * MIB, 8));
        assert_eq!(at(48 * MIB), (6 * MIB, 8));
        // Within 5 to 64 MiB, whole MiB.
        assert_eq!(at(5 * MIB), (5 * MIB, 1));
        assert_eq!(at(20 * MIB), (5 * MIB, 4));
        assert_eq!(at(100 * MIB), (12 * MIB, 8));
        assert_eq!(at(4096 * MIB), (64 * MIB, 64));
        // Below one part: raised to one part.
        assert_eq!(MultipartOptions::new().with_memory_limit(1).memory_limit(), MIN_PART_SIZE);
        // The part concurrency caps the parts in flight.
        let o = MultipartOptions::new().with_memory_limit(8192 * MIB);
        assert_eq!((o.stream_part_size(), o.stream_parts_in_flight()), (64 * MIB, 64));
        // Explicit settings win; the limit still bounds the parts in flight.
        let o = MultipartOptions::new()
            .with_memory_limit(64 * MIB)
            .with_part_size(24 * MIB)
            .with_part_concurrency(16);
        assert_eq!((o.stream_part_size(), o.stream_parts_in_flight()), (24 * MIB, 2));
        assert_eq!(o.streaming_summary(), "memory_limit 64 MiB → 24 MiB parts, 2 in flight");
        // Streamed part sizes also keep within max_parts.
        let o = MultipartOptions::new().with_max_parts(2);
        assert_eq!(o.stream_part_size_for(100 * MIB).unwrap(), 50 * MIB);
        // Server-side copies ignore the limit.
        let o = MultipartOptions::new().with_memory_limit(16 * MIB);
        assert_eq!((o.part_size_for(1 << 30).unwrap(), o.part_concurrency()), (64 * MIB, 64));
    }

    #[test]
    fn the_threshold_never_exceeds_5_gib() {
        let o = MultipartOptions::new().with_threshold(u64::MAX);
        assert_eq!(o.threshold(), MAX_PART_SIZE);
    }
}
