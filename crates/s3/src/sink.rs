//! The S3 Sink: lists what escrow holds and copies into it with escrow
//! credentials.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{MetadataDirective, TaggingDirective};
use futures::{StreamExt, TryStreamExt};

use crate::util::PaceExt;
use escrow_sync_aws::sdk_error;
use escrow_sync_core::{
    Error, ErrorKind, Item, ItemStream, Payload, RangeRead, Receipt, RequestPacer, Result, Scope,
    ServerSideRef, Sink,
};

use crate::list::{ListRequest, list_keys};
use std::sync::Arc;

use crate::multipart::{MultipartOptions, PartBudget, SOURCE_ETAG_META, SourceHead};
use crate::protect::{EMPTY_BODY_MD5, Protection, protect};
use crate::tags::TAGS_COPIED_ATTR;
use crate::util::{MAX_COPY_OBJECT_SIZE, copy_source_version, s3_error, tagging_header, url};

/// Writes into a bucket in the escrow account.
#[derive(Debug, Clone)]
pub struct S3Sink {
    client: Client,
    bucket: String,
    dest_prefix: String,
    owner: Option<String>,
    multipart: MultipartOptions,
    budget: PartBudget,
    protection: Protection,
    pacer: Option<RequestPacer>,
    versions: bool,
    cleanup: Cleanup,
    list_ranges: usize,
    ledger: crate::renew::Ledger,
    ledger_scope: String,
    batch_copies: crate::batch::CopyRecords,
    range: crate::KeyRange,
}

/// The background clean-up of a sink's copies that were dropped half-way
/// (their multipart uploads being aborted), shared by its clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cleanup(Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Cleanup {
    /// Runs `task` in the background; [`Cleanup::settle`] waits for it.
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                "no async runtime to clean up a copy stopped half-way: its multipart upload is \
                 left behind (its journal entry makes a later run abort it)"
            );
            return;
        };
        let mut tasks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(runtime.spawn(task));
    }

    /// Waits until every task (and every task they started) has ended.
    async fn settle(&self) {
        loop {
            let tasks = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
            if tasks.is_empty() {
                return;
            }
            for task in tasks {
                let _ = task.await;
            }
        }
    }
}

impl S3Sink {
    /// A sink into `bucket`, using `client` (escrow credentials).
    pub fn from_client(client: Client, bucket: impl Into<String>) -> Self {
        let multipart = MultipartOptions::default();
        let budget = PartBudget::new(&multipart);
        S3Sink {
            client,
            bucket: bucket.into(),
            dest_prefix: String::new(),
            owner: None,
            multipart,
            budget,
            protection: Protection::default(),
            pacer: None,
            versions: false,
            cleanup: Cleanup::default(),
            list_ranges: crate::list::DEFAULT_LIST_RANGES,
            ledger: crate::renew::Ledger::default(),
            ledger_scope: String::new(),
            batch_copies: crate::batch::CopyRecords::default(),
            range: crate::KeyRange::all(),
        }
    }

    /// Waits for the clean-up of copies that were dropped half-way (a hard
    /// stop drops the copies in flight): their multipart uploads are
    /// aborted and their journal entries removed in the background. Call it
    /// before the process ends, after the copies (a [`crate::S3CopyJob`]
    /// does).
    pub async fn settle(&self) {
        self.cleanup.settle().await;
    }

    /// The records of copies Batch Operations jobs made under the escrow
    /// key (see `confirm_same`).
    pub(crate) fn batch_copies(&self) -> &crate::batch::CopyRecords {
        &self.batch_copies
    }

    pub(crate) fn ledger(&self) -> &crate::renew::Ledger {
        &self.ledger
    }

    /// What the retention ledger covers, under the destination prefix
    /// (default: all of it): the ledger lives in `<scope>` and a first
    /// renewal pass enters the copies there
    /// ([`S3Sink::renew_retention`]). For a sink that writes several
    /// stores' objects into one bucket (export generations of one table).
    pub fn with_ledger_scope(mut self, scope: impl Into<String>) -> Self {
        self.ledger_scope = scope.into();
        self
    }

    pub(crate) fn ledger_scope(&self) -> &str {
        &self.ledger_scope
    }

    pub(crate) fn cleanup(&self) -> &Cleanup {
        &self.cleanup
    }

    /// Key ranges listed at once once a listing is longer than
    /// [`crate::SPLIT_AFTER_PAGES`] pages
    /// (default [`crate::DEFAULT_LIST_RANGES`]; 1: one listing from start
    /// to end).
    pub fn with_list_ranges(mut self, ranges: usize) -> Self {
        self.list_ranges = ranges.max(1);
        self
    }

    /// Lists only the keys in `range` (logical keys, below the destination
    /// prefix): one part of a sharded run ([`crate::shard`]), whose source
    /// lists the same range, so the plan never takes a key outside it for
    /// missing.
    pub fn with_key_range(mut self, range: crate::KeyRange) -> Self {
        self.range = range;
        self
    }

    fn list_request(&self, scope: &Scope) -> ListRequest {
        ListRequest {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            prefix: self.dest_key(&scope.prefix),
            strip: self.dest_prefix.len(),
            owner: self.owner.clone(),
            pacer: self.pacer.clone(),
            ranges: self.list_ranges,
            range: self.range.prefixed(&self.dest_prefix),
        }
    }

    /// When and how objects are copied in parts (UploadPartCopy, or
    /// UploadPart when streamed), and the memory streamed copies may hold
    /// ([`MultipartOptions::with_memory_limit`]). The sink's budgets are
    /// shared by its clones.
    pub fn with_multipart(mut self, options: MultipartOptions) -> Self {
        self.budget = PartBudget::new(&options);
        self.multipart = options;
        self
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// HeadObject of an escrow key (one version, if given).
    pub(crate) async fn head_escrow(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .set_expected_bucket_owner(self.owner.clone())
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:HeadObject", url(&self.bucket, key)))
    }

    pub(crate) fn dest_prefix(&self) -> &str {
        &self.dest_prefix
    }

    pub(crate) fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Protects every copy: SSE-KMS with the escrow key, Object Lock retention.
    pub fn with_protection(mut self, protection: Protection) -> Self {
        self.protection = protection;
        self
    }

    /// Keeps every source version as a version of the escrow object, oldest
    /// first, each recording its source version id (`versions = true`).
    pub fn with_versions(mut self, versions: bool) -> Self {
        self.versions = versions;
        self
    }

    /// Paces every request of this sink (`max_requests_per_second`; share
    /// one pacer between a job's source and sink).
    pub fn with_pacer(mut self, pacer: Option<RequestPacer>) -> Self {
        self.pacer = pacer;
        self
    }

    pub(crate) fn pacer(&self) -> Option<&RequestPacer> {
        self.pacer.as_ref()
    }

    pub(crate) fn protection(&self) -> &Protection {
        &self.protection
    }

    /// The multipart settings and memory limit ([`S3Sink::with_multipart`]).
    pub fn multipart(&self) -> &MultipartOptions {
        &self.multipart
    }

    pub(crate) fn part_budget(&self) -> &PartBudget {
        &self.budget
    }

    /// Prepends `prefix` to every key in escrow.
    pub fn with_dest_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.dest_prefix = prefix.into();
        self
    }

    /// The escrow account, sent as `ExpectedBucketOwner` on every call.
    pub fn with_expected_owner(mut self, account_id: Option<String>) -> Self {
        self.owner = account_id;
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The error of a source key in escrow-sync's own folders (journal,
    /// retention ledger): only escrow-sync writes its own records, a
    /// source key there could plant journal or ledger entries that a later
    /// run acts on. Every engine refuses such a key with this error.
    pub(crate) fn own_folder_refusal(&self, key: &str) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            "s3:CopyObject",
            url(&self.bucket, &self.dest_key(key)),
            format!(
                "the key falls in escrow-sync's own folder {} or {}: not copied, so \
                 that nothing in the primary can write escrow-sync's records; rename the \
                 object in the primary, or give the job a prefix that leaves it out",
                crate::journal::JOURNAL_DIR,
                crate::renew::RETENTION_DIR
            ),
        )
    }

    pub(crate) fn dest_key(&self, key: &str) -> String {
        format!("{}{}", self.dest_prefix, key)
    }

    async fn copy(&self, item: &Item, src: ServerSideRef) -> Result<Receipt> {
        let dest_key = self.dest_key(&item.key);
        let resource =
            format!("{} -> {}", url(&src.container, &src.key), url(&self.bucket, &dest_key));
        if src.service != "s3" {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "s3:CopyObject",
                resource,
                format!("cannot copy a {} reference into S3", src.service),
            ));
        }
        if item.size > self.multipart.threshold() {
            return self.multipart_copy(item, &src, &dest_key).await;
        }
        debug_assert!(item.size <= MAX_COPY_OBJECT_SIZE);
        // One request: S3 copies the tags itself (TaggingDirective=COPY),
        // unless the job sets them explicitly (or copies none).
        let (directive, tagging) = if src.attributes.contains_key(TAGS_COPIED_ATTR) {
            (TaggingDirective::Copy, None)
        } else {
            let tagging = tagging_header(&src.attributes);
            (TaggingDirective::Replace, Some(tagging).filter(|t| !t.is_empty()))
        };
        let mut req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(&dest_key)
            .copy_source(copy_source_version(&src.container, &src.key, src.version.as_deref()))
            .copy_source_if_match(&src.fingerprint)
            .tagging_directive(directive)
            .set_tagging(tagging)
            // S3 computes the copy's checksum with the source's algorithm.
            .set_checksum_algorithm(crate::checksum::algorithm(item.checksum_algorithm.as_deref()))
            .set_expected_bucket_owner(self.owner.clone())
            .set_expected_source_bucket_owner(src.owner.clone());
        let extra_meta = crate::util::metadata(&src.attributes);
        req = if self.protection.kms_key_id.is_some()
            || !extra_meta.is_empty()
            || crate::util::uploaded_in_parts(&src.fingerprint)
        {
            // An SSE-KMS copy, and a one-request copy of an object uploaded
            // in parts, get an ETag unlike the source's: record the source
            // ETag so later runs can confirm the copy (confirm_same).
            // Version copies record the source version id and time.
            let head = self.head_source(&src).await?;
            let mut meta = head.metadata;
            meta.extend(extra_meta);
            meta.insert(SOURCE_ETAG_META.to_string(), src.fingerprint.clone());
            req.metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(meta))
                .set_content_type(head.content_type)
                .set_cache_control(head.cache_control)
                .set_content_disposition(head.content_disposition)
                .set_content_encoding(head.content_encoding)
                .set_content_language(head.content_language)
        } else {
            req.metadata_directive(MetadataDirective::Copy)
        };
        let locked = self.protection.object_lock.is_some();
        let out = protect!(req, &self.protection)
            .customize()
            .config_override(crate::no_sdk_retries())
            .mutate_request(move |r| {
                if locked {
                    r.headers_mut().insert("Content-MD5", EMPTY_BODY_MD5);
                }
            })
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:CopyObject", resource.clone()))?;
        let etag = out.copy_object_result().and_then(|r| r.e_tag()).map(str::to_string);
        Ok(Receipt::new(item.size, etag))
    }

    /// Whether escrow holds every source version of `item` once its copies
    /// with another ETag (SSE-KMS, multipart) are taken for the source ETag
    /// they recorded: without this a versions job with an escrow key would
    /// find every key changed on every run (and trip the mass-change
    /// breaker). One HeadObject per such escrow version.
    async fn versions_recorded(&self, item: &Item) -> Result<bool> {
        use crate::versions::{Version, contains_all, fingerprint};
        let other_etag_possible =
            self.protection.kms_key_id.is_some() || item.fingerprint.contains('-');
        if !other_etag_possible {
            return Ok(false);
        }
        let dest_key = self.dest_key(&item.key);
        let escrow: Vec<Version> = self.escrow_versions(&dest_key).await?;
        let mut mapped = Vec::with_capacity(escrow.len());
        for e in escrow {
            let content = format!("{}/{}", e.etag, e.size);
            if item.fingerprint.split('|').any(|v| v == content) {
                mapped.push(e);
                continue;
            }
            let head = self.head_escrow(&dest_key, Some(&e.id)).await?;
            match head.metadata().and_then(|m| m.get(SOURCE_ETAG_META)) {
                Some(etag) => mapped.push(Version { etag: etag.clone(), ..e }),
                None => mapped.push(e),
            }
        }
        Ok(contains_all(&fingerprint(&mapped), &item.fingerprint))
    }

    /// Every version escrow holds of `dest_key`, oldest first.
    async fn escrow_versions(&self, dest_key: &str) -> Result<Vec<crate::versions::Version>> {
        crate::versions::versions_of(
            &self.client,
            &self.bucket,
            dest_key,
            self.owner.clone(),
            self.pacer.clone(),
        )
        .await
    }

    /// Copies the source versions escrow lacks, oldest first.
    async fn write_versions(&self, item: &Item, src: ServerSideRef) -> Result<Receipt> {
        use crate::versions::{Version, decode, missing, receipt, version_ref};
        let source = decode(&src);
        let dest_key = self.dest_key(&item.key);
        let escrow: Vec<Version> = self.escrow_versions(&dest_key).await?;
        // Escrow versions whose ETag matches no source version (SSE-KMS,
        // multipart) say which source version they copied in their metadata.
        let contents: std::collections::HashSet<String> =
            source.iter().map(|(v, _)| format!("{}/{}", v.etag, v.size)).collect();
        let mut recorded = std::collections::HashSet::new();
        for e in escrow.iter().filter(|e| !contents.contains(&format!("{}/{}", e.etag, e.size))) {
            let head = self.head_escrow(&dest_key, Some(&e.id)).await?;
            if let Some(id) =
                head.metadata().and_then(|m| m.get(crate::versions::SOURCE_VERSION_META))
            {
                recorded.insert(id.clone());
            }
        }
        let (mut bytes, mut copied) = (0, 0);
        for (v, tags) in missing(&source, &escrow, &recorded) {
            let one = Item::new(item.key.clone(), item.kind, v.size, v.etag.clone());
            self.copy(&one, version_ref(&src, v, tags.clone())).await?;
            bytes += v.size;
            copied += 1;
        }
        Ok(receipt(bytes, copied))
    }

    /// A streamed copy: one PutObject up to a streamed part's size, parts
    /// beyond; every read claims its bytes from the sink's memory budget
    /// first and holds them until they are sent, so the bytes in flight
    /// stay within the memory limit.
    async fn stream_in(&self, item: &Item, data: Arc<dyn RangeRead>) -> Result<Receipt> {
        let dest_key = self.dest_key(&item.key);
        if data.len() != item.size {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "s3:GetObject",
                url(&self.bucket, &dest_key),
                format!(
                    "the source object is {} bytes, the listing said {}: it changed after it was \
                     listed; the next run copies the new version",
                    data.len(),
                    item.size
                ),
            ));
        }
        let part_size = self.multipart.stream_part_size_for(item.size)?;
        if item.size > part_size {
            return self.multipart_stream(item, data.as_ref(), &dest_key).await;
        }
        let resource = url(&self.bucket, &dest_key);
        let _permit =
            self.budget.parts.acquire().await.map_err(|_| {
                Error::new(ErrorKind::Cancelled, "s3:PutObject", resource.clone(), "")
            })?;
        let _claim = self.budget.claim_bytes(item.size, "s3:PutObject", &resource).await?;
        self.put(item, Payload::Ranged(data)).await
    }

    async fn put(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        let dest_key = self.dest_key(&item.key);
        let (data, attributes) = payload.collect().await?;
        if data.len() as u64 != item.size {
            return Err(Error::new(
                ErrorKind::Failed,
                "s3:PutObject",
                url(&self.bucket, &dest_key),
                format!("the source gave {} bytes, the listing said {}", data.len(), item.size),
            ));
        }
        let tagging = tagging_header(&attributes);
        let head = SourceHead::from_attributes(&attributes);
        // A streamed copy sends the source's checksum: S3 checks the bytes
        // it stores against it (else the SDK's own checksum of the body).
        let sum = head.checksum.clone();
        let mut meta = head.metadata;
        if self.protection.kms_key_id.is_some() {
            meta.insert(SOURCE_ETAG_META.to_string(), item.fingerprint.clone());
        }
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&dest_key)
            .content_length(data.len() as i64)
            .body(ByteStream::from(data))
            .set_metadata(Some(meta))
            .set_content_type(head.content_type)
            .set_cache_control(head.cache_control)
            .set_content_disposition(head.content_disposition)
            .set_content_encoding(head.content_encoding)
            .set_content_language(head.content_language)
            .set_tagging((!tagging.is_empty()).then_some(tagging))
            .set_checksum_algorithm(sum.as_ref().map(|c| c.algorithm.clone()))
            .set_expected_bucket_owner(self.owner.clone());
        let req = crate::checksum::with_checksum!(req, sum.as_ref());
        let out = protect!(req, &self.protection)
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| sdk_error(e, "s3:PutObject", url(&self.bucket, &dest_key)))?;
        Ok(Receipt::new(item.size, out.e_tag().map(str::to_string)))
    }
}

#[async_trait]
impl Sink for S3Sink {
    fn describe(&self) -> String {
        url(&self.bucket, &self.dest_prefix)
    }

    fn sorted(&self) -> bool {
        // Stripping a common prefix keeps the byte order.
        true
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        // escrow-sync's own upload journal is not escrow data.
        list_keys(self.versions, self.list_request(scope))
            .try_filter(|item| futures::future::ready(!crate::journal::own_folder(&item.key)))
            .boxed()
    }

    async fn checksum(&self, item: &Item) -> Result<Option<String>> {
        if self.versions {
            return Ok(None);
        }
        let key = self.dest_key(&item.key);
        crate::checksum::of_object(
            &self.client,
            &self.bucket,
            &key,
            self.owner.clone(),
            self.pacer(),
        )
        .await
    }

    async fn tags(&self, item: &Item) -> Result<Option<BTreeMap<String, String>>> {
        if self.versions {
            return Ok(None);
        }
        let key = self.dest_key(&item.key);
        let tags = crate::tags::object_tags(
            &self.client,
            &self.bucket,
            &key,
            None,
            self.owner.clone(),
            self.pacer(),
        )
        .await?;
        Ok(Some(tags))
    }

    fn audits(&self) -> bool {
        self.protection.kms_key_id.is_some() || self.protection.object_lock.is_some()
    }

    async fn audit(&self, item: &Item) -> Result<Vec<String>> {
        let key = self.dest_key(&item.key);
        let head = self.head_escrow(&key, None).await?;
        let mut problems = Vec::new();
        if let Some(want) = &self.protection.kms_key_id {
            let sse = head.server_side_encryption().map(|s| s.as_str().to_string());
            let got = head.ssekms_key_id().unwrap_or_default();
            if sse.as_deref() != Some("aws:kms") {
                problems.push(format!(
                    "not encrypted with the escrow KMS key {want} (server-side encryption: {})",
                    sse.as_deref().unwrap_or("none")
                ));
            } else if !crate::protect::same_key(want, got) {
                problems.push(format!("encrypted with {got}, not the escrow KMS key {want}"));
            }
        }
        if let Some(lock) = &self.protection.object_lock {
            let mode = head.object_lock_mode().map(|m| m.as_str().to_string());
            let until = head
                .object_lock_retain_until_date()
                .and_then(|d| std::time::SystemTime::try_from(*d).ok());
            if mode.as_deref() != Some(lock.mode.as_str()) {
                problems.push(format!(
                    "no {} Object Lock retention (mode: {})",
                    lock.mode.as_str(),
                    mode.as_deref().unwrap_or("none")
                ));
            } else if until.is_none_or(|u| u <= std::time::SystemTime::now()) {
                problems.push("its Object Lock retention has expired".to_string());
            }
        }
        Ok(problems)
    }

    async fn confirm_same(&self, item: &Item, escrow: &Item) -> Result<bool> {
        if self.versions {
            // Escrow keeps every version it ever copied: it is up to date
            // when it holds each source version (by ETag and size).
            if crate::versions::contains_all(&escrow.fingerprint, &item.fingerprint) {
                return Ok(true);
            }
            return self.versions_recorded(item).await;
        }
        // Multipart copies (ETag "…-N") and SSE-KMS copies hold the same
        // bytes under another ETag; they record the source ETag in metadata.
        // A single-part copy of a source uploaded in parts ("…-N") has an
        // ETag of its own too (a Batch Copy's, recorded beside the job).
        let other_etag_possible = escrow.fingerprint.contains('-')
            || crate::util::uploaded_in_parts(&item.fingerprint)
            || self.protection.kms_key_id.is_some();
        if item.size != escrow.size || !other_etag_possible {
            return Ok(false);
        }
        let key = self.dest_key(&item.key);
        let out = self.head_escrow(&key, None).await?;
        let recorded = out.metadata().and_then(|m| m.get(SOURCE_ETAG_META));
        if recorded.is_none() && out.e_tag() == Some(escrow.fingerprint.as_str()) {
            // A Batch Operations copy cannot carry the record: its job's
            // own record of checked copies says instead.
            return self.batch_copies.confirms(&key, &escrow.fingerprint, &item.fingerprint).await;
        }
        Ok(out.e_tag() == Some(escrow.fingerprint.as_str())
            && recorded.map(String::as_str) == Some(item.fingerprint.as_str()))
    }

    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        if crate::journal::own_folder(&item.key) {
            return Err(self.own_folder_refusal(&item.key));
        }
        let receipt = match payload {
            Payload::Reference(r) if self.versions => self.write_versions(item, r).await,
            Payload::Reference(r) => self.copy(item, r).await,
            Payload::Ranged(r) => self.stream_in(item, r).await,
            bytes => self.put(item, bytes).await,
        }?;
        self.ledger_record(&self.dest_key(&item.key)).await?;
        Ok(receipt)
    }
}
