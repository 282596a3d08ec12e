//! The S3 Source: lists with ListObjectsV2 and hands the sink a server-side
//! reference (with the object's tags where S3 cannot copy them itself).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_s3::Client;

use crate::util::PaceExt;
use escrow_sync_core::{
    Item, ItemStream, Payload, RequestPacer, Result, Scope, ServerSideRef, Source,
};

use crate::list::{ListRequest, Prefetch};
use crate::range::S3Range;
use crate::tags::{TAGS_COPIED_ATTR, TagMode};
use crate::util::{TAG_PREFIX, s3_error, url};

/// Reads a bucket in the primary account (through the reader role).
#[derive(Debug, Clone)]
pub struct S3Source {
    client: Client,
    bucket: String,
    prefix: String,
    owner: Option<String>,
    pacer: Option<RequestPacer>,
    streaming: bool,
    versions: bool,
    tags: TagMode,
    list_ranges: usize,
    prefetched: Prefetch,
    range: crate::KeyRange,
}

impl S3Source {
    /// A source over `bucket`, using `client` (primary credentials).
    pub fn from_client(client: Client, bucket: impl Into<String>) -> Self {
        S3Source {
            client,
            bucket: bucket.into(),
            prefix: String::new(),
            owner: None,
            pacer: None,
            streaming: false,
            versions: false,
            tags: TagMode::default(),
            list_ranges: crate::list::DEFAULT_LIST_RANGES,
            prefetched: Prefetch::default(),
            range: crate::KeyRange::all(),
        }
    }

    /// Only keys under `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The account that must own the bucket (sent as `ExpectedBucketOwner`,
    /// and as `ExpectedSourceBucketOwner` on copies).
    pub fn with_expected_owner(mut self, account_id: Option<String>) -> Self {
        self.owner = account_id;
        self
    }

    /// Streams the bytes instead of handing the sink a server-side
    /// reference: for an escrow on another endpoint (any S3-compatible
    /// store), or when asked (`mode = "stream"`).
    pub fn with_streaming(mut self, streaming: bool) -> Self {
        self.streaming = streaming;
        self
    }

    /// Copies every version of every key, oldest first (`versions = true`);
    /// server-side copies only.
    pub fn with_versions(mut self, versions: bool) -> Self {
        self.versions = versions;
        self
    }

    /// How copies get the objects' tags (default [`TagMode::Copy`]: S3
    /// copies them server-side, no request of ours).
    pub fn with_tags(mut self, tags: TagMode) -> Self {
        self.tags = tags;
        self
    }

    /// How copies get the objects' tags.
    pub fn tags(&self) -> TagMode {
        self.tags
    }

    /// Key ranges listed at once once a listing is longer than
    /// [`crate::SPLIT_AFTER_PAGES`] pages
    /// (default [`crate::DEFAULT_LIST_RANGES`]; 1: one listing from start
    /// to end).
    pub fn with_list_ranges(mut self, ranges: usize) -> Self {
        self.list_ranges = ranges.max(1);
        self
    }

    /// Lists only the keys in `range` (one part of a sharded run,
    /// [`crate::shard`]): the listing starts after the range's lower bound
    /// and stops past its upper one. A listing started ahead of this
    /// ([`S3Source::prefetch`]) is not taken.
    pub fn with_key_range(mut self, range: crate::KeyRange) -> Self {
        self.range = range;
        self.prefetched = Prefetch::default();
        self
    }

    /// The key range listed ([`crate::KeyRange::all`] unless a part).
    pub fn key_range(&self) -> &crate::KeyRange {
        &self.range
    }

    /// Paces every request of this source (`max_requests_per_second`).
    pub fn with_pacer(mut self, pacer: Option<RequestPacer>) -> Self {
        self.pacer = pacer;
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix listed (empty: the whole bucket).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this source streams bytes ([`S3Source::with_streaming`]).
    pub fn streaming(&self) -> bool {
        self.streaming
    }
}

impl S3Source {
    /// Starts listing `scope` now, before the copy asks for it (while the
    /// checks before a run are made): the next listing of the same scope
    /// takes this one. Listing changes nothing.
    pub fn prefetch(&self, scope: &Scope) {
        self.prefetched.start(self.versions, self.list_request(scope));
    }

    fn list_request(&self, scope: &Scope) -> ListRequest {
        let prefix = if scope.prefix.starts_with(&self.prefix) {
            scope.prefix.clone()
        } else {
            format!("{}{}", self.prefix, scope.prefix)
        };
        ListRequest {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            prefix,
            strip: 0,
            owner: self.owner.clone(),
            pacer: self.pacer.clone(),
            ranges: self.list_ranges,
            range: self.range.clone(),
        }
    }

    /// HeadObject of `key` in the primary, with its checksum.
    pub(crate) async fn head(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .set_expected_bucket_owner(self.owner.clone())
            .send()
            .paced(self.pacer.as_ref())
            .await
            .map_err(|e| s3_error(e, "s3:HeadObject", url(&self.bucket, key)))
    }

    /// Whether the primary still holds `key` (HeadObject: only a 404 is
    /// "no"; any other error is an error, never taken for a deletion).
    pub(crate) async fn contains(&self, key: &str) -> Result<bool> {
        let res = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_expected_bucket_owner(self.owner.clone())
            .send()
            .paced(self.pacer.as_ref())
            .await
            .map_err(|e| s3_error(e, "s3:HeadObject", url(&self.bucket, key)));
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == escrow_sync_core::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The tags of `key` (of one version, if given).
    async fn object_tags(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<BTreeMap<String, String>> {
        crate::tags::object_tags(
            &self.client,
            &self.bucket,
            key,
            version,
            self.owner.clone(),
            self.pacer.as_ref(),
        )
        .await
    }

    /// The attributes that carry the tags of a server-side copy: the
    /// marker [`TAGS_COPIED_ATTR`] when S3 copies them itself, nothing when
    /// they are not copied, else the tags read from the source (as `tag:`
    /// attributes, so no tag can pass for the marker).
    async fn copy_tags(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<BTreeMap<String, String>> {
        match self.tags {
            TagMode::Copy => {
                Ok(BTreeMap::from([(TAGS_COPIED_ATTR.to_string(), "COPY".to_string())]))
            }
            TagMode::Explicit => self.object_tags(key, version).await.map(prefixed),
            TagMode::None => Ok(BTreeMap::new()),
        }
    }

    /// Every version of a key, oldest first, with each version's tags.
    async fn read_versions(&self, item: &Item) -> Result<Payload> {
        let list = crate::versions::versions_of(
            &self.client,
            &self.bucket,
            &item.key,
            self.owner.clone(),
            self.pacer.clone(),
        )
        .await?;
        if crate::versions::fingerprint(&list) != item.fingerprint {
            return Err(crate::versions::changed(&self.bucket, &item.key));
        }
        let mut attributes = BTreeMap::new();
        for (i, v) in list.iter().enumerate() {
            let tags = match self.tags {
                TagMode::Explicit => self.object_tags(&item.key, Some(&v.id)).await?,
                TagMode::Copy | TagMode::None => BTreeMap::new(),
            };
            crate::versions::encode(&mut attributes, i, v, &tags);
        }
        if self.tags == TagMode::Copy {
            attributes.insert(TAGS_COPIED_ATTR.to_string(), "COPY".to_string());
        }
        Ok(Payload::Reference(
            ServerSideRef::new("s3", &self.bucket, &item.key, &item.fingerprint)
                .with_owner(self.owner.clone())
                .with_attributes(attributes),
        ))
    }
}

#[async_trait]
impl Source for S3Source {
    fn describe(&self) -> String {
        url(&self.bucket, &self.prefix)
    }

    fn sorted(&self) -> bool {
        // ListObjectsV2 returns keys in UTF-8 binary order.
        true
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.prefetched.list(self.versions, self.list_request(scope))
    }

    async fn checksum(&self, item: &Item) -> Result<Option<String>> {
        if self.versions {
            return Ok(None);
        }
        crate::checksum::of_object(
            &self.client,
            &self.bucket,
            &item.key,
            self.owner.clone(),
            self.pacer.as_ref(),
        )
        .await
    }

    fn keeps_tags(&self) -> bool {
        // A versions job's item is every version of a key: no one tag set.
        self.tags != TagMode::None && !self.versions
    }

    async fn tags(&self, item: &Item) -> Result<Option<BTreeMap<String, String>>> {
        if !self.keeps_tags() {
            return Ok(None);
        }
        self.object_tags(&item.key, None).await.map(Some)
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        if self.versions {
            return self.read_versions(item).await;
        }
        if !self.streaming {
            let tags = self.copy_tags(&item.key, None).await?;
            return Ok(Payload::Reference(
                ServerSideRef::new("s3", &self.bucket, &item.key, &item.fingerprint)
                    .with_owner(self.owner.clone())
                    .with_attributes(tags),
            ));
        }
        // A PutObject cannot copy tags: streamed copies set them.
        let tags = match self.tags {
            TagMode::None => BTreeMap::new(),
            TagMode::Copy | TagMode::Explicit => self.object_tags(&item.key, None).await?,
        };
        let tags = prefixed(tags);
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&item.key)
            .if_match(&item.fingerprint)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .set_expected_bucket_owner(self.owner.clone())
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .paced(self.pacer.as_ref())
            .await
            .map_err(|e| s3_error(e, "s3:HeadObject", url(&self.bucket, &item.key)))?;
        let mut attributes = tags;
        if let Some(sum) = crate::checksum::Checksum::from_head(&head) {
            sum.to_attributes(&mut attributes);
        }
        crate::util::head_attributes(&head, &mut attributes, |_| true);
        Ok(Payload::Ranged(std::sync::Arc::new(S3Range {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: item.key.clone(),
            etag: item.fingerprint.clone(),
            owner: self.owner.clone(),
            len: head.content_length().unwrap_or(0).max(0) as u64,
            attributes,
            pacer: self.pacer.clone(),
            version: None,
        })))
    }
}

/// Tags as payload attributes (`tag:KEY`).
fn prefixed(tags: BTreeMap<String, String>) -> BTreeMap<String, String> {
    tags.into_iter().map(|(k, v)| (format!("{TAG_PREFIX}{k}"), v)).collect()
}
