//! Reading an escrow bucket back for a restore: every key as escrow held it
//! at a point in time.
//!
//! Escrow buckets are versioned and a sync never deletes, so each key's
//! versions are the copies escrow made of it over time. [`S3RestoreSource`]
//! lists them (ListObjectVersions) and yields, per key, the newest version
//! escrow had at or before the chosen time (`with_as_of`; default: the
//! newest), skipping keys whose newest entry by then is a delete marker and
//! keys escrow did not hold yet. Keys come without the job's escrow prefix
//! (`dest_prefix`), as they were in the primary; the bytes are streamed
//! from that exact version (`GetObject` with `versionId` and `If-Match`), so
//! any sink can take them. escrow-sync's own bookkeeping (metadata
//! `escrow-sync-*`, the multipart journal under [`crate::JOURNAL_DIR`]) is
//! left behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use sha2::Digest;

use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Result, Scope, Source,
};

use crate::range::S3Range;
use crate::util::{TAG_PREFIX, s3_error, url};

/// Metadata keys escrow-sync writes for itself, not restored.
const OWN_METADATA: &str = "escrow-sync-";

/// An escrow bucket as it was at a point in time (escrow credentials).
#[derive(Debug, Clone)]
pub struct S3RestoreSource {
    client: Client,
    bucket: String,
    dest_prefix: String,
    prefix: String,
    at: Option<SystemTime>,
    owner: Option<String>,
    keys: Option<std::sync::Arc<std::collections::BTreeSet<String>>>,
    source_order: bool,
}

impl S3RestoreSource {
    /// The escrow `bucket`, read with `client`.
    pub fn from_client(client: Client, bucket: impl Into<String>) -> Self {
        S3RestoreSource {
            client,
            bucket: bucket.into(),
            dest_prefix: String::new(),
            prefix: String::new(),
            at: None,
            owner: None,
            keys: None,
            source_order: false,
        }
    }

    /// Orders each key's escrow versions by the source's last-modified time
    /// recorded on each copy (metadata [`crate::SOURCE_MODIFIED_META`]),
    /// not by when escrow copied them: for `versions = true` jobs, where an
    /// interrupted run can copy an older source version after a newer one.
    /// Costs one HeadObject per version of keys with more than one.
    pub fn with_source_order(mut self, on: bool) -> Self {
        self.source_order = on;
        self
    }

    /// Only these keys (as the job's source names them, e.g. the keys a run
    /// manifest says the primary held at the time); `None`: every key.
    pub fn with_keys(mut self, keys: Option<std::collections::BTreeSet<String>>) -> Self {
        self.keys = keys.map(std::sync::Arc::new);
        self
    }

    /// The job's escrow key prefix (`dest_prefix`): listed keys come
    /// without it.
    pub fn with_dest_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.dest_prefix = prefix.into();
        self
    }

    /// Only keys under `prefix` (the job's source prefix).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Each key as escrow held it at `at` (`None`: the newest).
    pub fn with_as_of(mut self, at: Option<SystemTime>) -> Self {
        self.at = at;
        self
    }

    /// The account that must own the bucket (`ExpectedBucketOwner`).
    pub fn with_expected_owner(mut self, account_id: Option<String>) -> Self {
        self.owner = account_id;
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn escrow_key(&self, key: &str) -> String {
        format!("{}{key}", self.dest_prefix)
    }

    /// Of one key's versions (newest copy first), the one whose recorded
    /// source last-modified time is newest; ties and copies without the
    /// record go by copy time.
    async fn newest_in_source(&self, versions: Vec<Entry>) -> Result<Option<Entry>> {
        let mut best: Option<(Option<SystemTime>, Entry)> = None;
        for e in versions {
            let head = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&e.key)
                .version_id(&e.version)
                .set_expected_bucket_owner(self.owner.clone())
                .send()
                .await
                .map_err(|err| s3_error(err, "s3:HeadObject", url(&self.bucket, &e.key)))?;
            let source_time = head
                .metadata()
                .and_then(|m| m.get(crate::SOURCE_MODIFIED_META))
                .and_then(|t| {
                    aws_smithy_types::DateTime::from_str(
                        t,
                        aws_smithy_types::date_time::Format::DateTime,
                    )
                    .ok()
                })
                .and_then(|t| SystemTime::try_from(t).ok());
            // Strictly newer only: among equals the newer copy (seen first) stays.
            if best.as_ref().is_none_or(|(b, _)| source_time > *b) {
                best = Some((source_time, e));
            }
        }
        Ok(best.map(|(_, e)| e))
    }
}

/// One listed entry: a version or a delete marker.
struct Entry {
    key: String,
    version: String,
    etag: String,
    size: u64,
    modified: Option<SystemTime>,
    deleted: bool,
    checksum_algorithm: Option<String>,
}

/// The entries of one key escrow held at `at` that a restore may take,
/// newest copy first: none when the key's newest entry by then is a delete
/// marker (or escrow did not hold it yet), else its versions copied by then.
/// `entries` are one key's, newest copy first.
fn candidates(entries: Vec<Entry>, at: Option<SystemTime>) -> Vec<Entry> {
    let held: Vec<Entry> = entries
        .into_iter()
        .filter(|e| !matches!((at, e.modified), (Some(at), Some(m)) if m > at))
        .collect();
    match held.first() {
        Some(newest) if !newest.deleted => held.into_iter().filter(|e| !e.deleted).collect(),
        _ => Vec::new(),
    }
}

/// Splits entries in key order (newest copy first within a key) into
/// complete key groups; the last key stays in `pending` when more pages
/// follow, as its versions may go on there.
fn groups(entries: Vec<Entry>, pending: &mut Vec<Entry>, last_page: bool) -> Vec<Vec<Entry>> {
    let mut out: Vec<Vec<Entry>> = Vec::new();
    let mut current = std::mem::take(pending);
    for e in entries {
        if current.first().is_some_and(|c| c.key != e.key) {
            out.push(std::mem::take(&mut current));
        }
        current.push(e);
    }
    if last_page {
        if !current.is_empty() {
            out.push(current);
        }
    } else {
        *pending = current;
    }
    out
}

#[async_trait]
impl Source for S3RestoreSource {
    fn describe(&self) -> String {
        let at = match self.at {
            Some(t) => format!(" as of {}", escrow_sync_core::rfc3339(t)),
            None => String::new(),
        };
        format!("{}{at}", url(&self.bucket, &format!("{}{}", self.dest_prefix, self.prefix)))
    }

    fn sorted(&self) -> bool {
        // ListObjectVersions goes in key order; one prefix is stripped.
        true
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let scoped = if scope.prefix.starts_with(&self.prefix) {
            scope.prefix.clone()
        } else {
            format!("{}{}", self.prefix, scope.prefix)
        };
        let prefix = self.escrow_key(&scoped);
        let strip = self.dest_prefix.clone();
        let at = self.at;
        let only = self.keys.clone();
        struct Page {
            key_marker: Option<String>,
            version_marker: Option<String>,
            pending: Vec<Entry>,
            done: bool,
        }
        let start =
            Page { key_marker: None, version_marker: None, pending: Vec::new(), done: false };
        futures::stream::try_unfold(start, move |mut page| {
            let prefix = prefix.clone();
            let strip = strip.clone();
            let only = only.clone();
            async move {
                if page.done {
                    return Ok::<_, Error>(None);
                }
                let out = self
                    .client
                    .list_object_versions()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .set_key_marker(page.key_marker.take())
                    .set_version_id_marker(page.version_marker.take())
                    .set_expected_bucket_owner(self.owner.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        s3_error(e, "s3:ListObjectVersions", url(&self.bucket, &prefix))
                    })?;
                let time = |d: Option<&aws_smithy_types::DateTime>| {
                    d.and_then(|d| SystemTime::try_from(*d).ok())
                };
                let mut entries: Vec<Entry> = out
                    .versions()
                    .iter()
                    .map(|v| Entry {
                        key: v.key().unwrap_or_default().to_string(),
                        version: v.version_id().unwrap_or("null").to_string(),
                        etag: v.e_tag().unwrap_or_default().to_string(),
                        size: v.size().unwrap_or(0).max(0) as u64,
                        modified: time(v.last_modified()),
                        deleted: false,
                        checksum_algorithm: v
                            .checksum_algorithm()
                            .first()
                            .map(|a| a.as_str().to_string()),
                    })
                    .chain(out.delete_markers().iter().map(|d| Entry {
                        key: d.key().unwrap_or_default().to_string(),
                        version: d.version_id().unwrap_or("null").to_string(),
                        etag: String::new(),
                        size: 0,
                        modified: time(d.last_modified()),
                        deleted: true,
                        checksum_algorithm: None,
                    }))
                    .collect();
                // Versions and delete markers come in two lists: merge them
                // back into key order, newest first within a key.
                entries.sort_by(|a, b| a.key.cmp(&b.key).then(b.modified.cmp(&a.modified)));
                if out.is_truncated().unwrap_or(false) {
                    page.key_marker = out.next_key_marker().map(str::to_string);
                    page.version_marker = out.next_version_id_marker().map(str::to_string);
                } else {
                    page.done = true;
                }
                let mut chosen = Vec::new();
                for group in groups(entries, &mut page.pending, page.done) {
                    let held = candidates(group, at);
                    let pick = if self.source_order && held.len() > 1 {
                        self.newest_in_source(held).await?
                    } else {
                        held.into_iter().next()
                    };
                    chosen.extend(pick);
                }
                let items: Vec<Result<Item>> = chosen
                    .into_iter()
                    // escrow-sync's own multipart journal (under the job's
                    // escrow prefix) is not data.
                    .filter(|e| {
                        !e.key
                            .strip_prefix(strip.as_str())
                            .is_some_and(|k| k.starts_with(crate::journal::JOURNAL_DIR))
                    })
                    .filter(|e| {
                        let key = e.key.strip_prefix(strip.as_str()).unwrap_or(&e.key);
                        only.as_ref().is_none_or(|keys| keys.contains(key))
                    })
                    .map(|e| {
                        let key = e.key.strip_prefix(strip.as_str()).unwrap_or(&e.key).to_string();
                        Ok(Item::new(key, ItemKind::Object, e.size, e.etag)
                            .with_modified(e.modified)
                            .with_checksum_algorithm(e.checksum_algorithm)
                            .with_version(Some(e.version)))
                    })
                    .collect();
                Ok(Some((items, page)))
            }
        })
        .map_ok(futures::stream::iter)
        .try_flatten()
        .boxed()
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        let key = self.escrow_key(&item.key);
        let version = item.version.clone();
        let tags = self
            .client
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(&key)
            .set_version_id(version.clone())
            .set_expected_bucket_owner(self.owner.clone())
            .send()
            .await
            .map_err(|e| s3_error(e, "s3:GetObjectTagging", url(&self.bucket, &key)))?;
        let mut attributes: BTreeMap<String, String> = tags
            .tag_set()
            .iter()
            .map(|t| (format!("{TAG_PREFIX}{}", t.key()), t.value().to_string()))
            .collect();
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_version_id(version.clone())
            .if_match(&item.fingerprint)
            .set_expected_bucket_owner(self.owner.clone())
            .send()
            .await
            .map_err(|e| s3_error(e, "s3:HeadObject", url(&self.bucket, &key)))?;
        crate::util::head_attributes(&head, &mut attributes, |k| !k.starts_with(OWN_METADATA));
        Ok(Payload::Ranged(Arc::new(S3Range {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key,
            etag: item.fingerprint.clone(),
            owner: self.owner.clone(),
            len: head.content_length().unwrap_or(0).max(0) as u64,
            attributes,
            pacer: None,
            version,
        })))
    }
}

/// The SHA-256 (hex) and length of an object's bytes (of one version, if
/// given), streamed: a byte-for-byte comparison of two objects without
/// holding either.
pub async fn object_sha256(
    client: &Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
    owner: Option<String>,
) -> Result<(String, u64)> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_string))
        .set_expected_bucket_owner(owner)
        .send()
        .await
        .map_err(|e| s3_error(e, "s3:GetObject", url(bucket, key)))?;
    let mut hash = sha2::Sha256::new();
    let mut len = 0u64;
    let mut body = out.body;
    while let Some(chunk) = body.try_next().await.map_err(|e| {
        Error::new(ErrorKind::Transient, "s3:GetObject", url(bucket, key), "").with_source(e)
    })? {
        len += chunk.len() as u64;
        hash.update(&chunk);
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, len))
}

/// Whether `bucket` exists and belongs to `account`: `Ok(false)` when there
/// is no such bucket; an error (AccessDenied, or the owner check) when it is
/// someone else's.
pub async fn bucket_exists(client: &Client, bucket: &str, account: &str) -> Result<bool> {
    match client.head_bucket().bucket(bucket).expected_bucket_owner(account).send().await {
        Ok(_) => Ok(true),
        Err(e) => {
            let err = s3_error(e, "s3:HeadBucket", url(bucket, ""));
            match err.kind() {
                ErrorKind::NotFound => Ok(false),
                _ => Err(err),
            }
        }
    }
}

/// Creates `bucket` in `region` (a recovery target).
pub async fn create_bucket(client: &Client, bucket: &str, region: &str) -> Result<()> {
    let mut req = client.create_bucket().bucket(bucket);
    if !region.is_empty() && region != "us-east-1" {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    req.send().await.map_err(|e| s3_error(e, "s3:CreateBucket", url(bucket, "")))?;
    Ok(())
}

/// Deletes every object version and delete marker in `bucket`, then the
/// bucket (a restore drill's own bucket, never an escrow bucket): returns
/// how many versions went, or how many went before the error.
pub async fn delete_bucket_and_contents(
    client: &Client,
    bucket: &str,
    account: &str,
) -> std::result::Result<u64, (u64, Error)> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let mut deleted = 0u64;
    loop {
        let page = client
            .list_object_versions()
            .bucket(bucket)
            .expected_bucket_owner(account)
            .send()
            .await
            .map_err(|e| (deleted, s3_error(e, "s3:ListObjectVersions", url(bucket, ""))))?;
        let ids: Vec<ObjectIdentifier> = page
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(page.delete_markers().iter().map(|d| (d.key(), d.version_id())))
            .filter_map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k.unwrap_or_default())
                    .set_version_id(v.map(str::to_string))
                    .build()
                    .ok()
            })
            .collect();
        if ids.is_empty() {
            break;
        }
        let n = ids.len() as u64;
        let delete = Delete::builder().set_objects(Some(ids)).quiet(true).build().map_err(|e| {
            (
                deleted,
                Error::new(ErrorKind::Failed, "s3:DeleteObjects", url(bucket, ""), e.to_string()),
            )
        })?;
        let out = client
            .delete_objects()
            .bucket(bucket)
            .expected_bucket_owner(account)
            .delete(delete)
            .send()
            .await
            .map_err(|e| (deleted, s3_error(e, "s3:DeleteObjects", url(bucket, ""))))?;
        if let Some(first) = out.errors().first() {
            return Err((
                deleted,
                Error::new(
                    ErrorKind::Failed,
                    "s3:DeleteObjects",
                    url(bucket, first.key().unwrap_or_default()),
                    first.message().unwrap_or_default().to_string(),
                ),
            ));
        }
        deleted += n;
    }
    client
        .delete_bucket()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .send()
        .await
        .map_err(|e| (deleted, s3_error(e, "s3:DeleteBucket", url(bucket, ""))))?;
    Ok(deleted)
}

/// Each item of `source` compared byte for byte with the object of the same
/// key in `bucket` (read with `target`): `(identical, what differs or is
/// missing)`.
pub async fn compare_with_target(
    source: &S3RestoreSource,
    target: &Client,
    bucket: &str,
    account: &str,
    concurrency: usize,
) -> Result<(u64, Vec<String>)> {
    let items: Vec<Item> = source.list(&Scope::all()).try_collect().await?;
    let results: Vec<Result<Option<String>>> = futures::stream::iter(items)
        .map(|item| async move {
            let escrow_key = source.escrow_key(&item.key);
            let (want, want_len) = object_sha256(
                &source.client,
                &source.bucket,
                &escrow_key,
                item.version.as_deref(),
                source.owner.clone(),
            )
            .await?;
            match object_sha256(target, bucket, &item.key, None, Some(account.to_string())).await {
                Ok((got, got_len)) if got == want && got_len == want_len => Ok(None),
                Ok((got, got_len)) => Ok(Some(format!(
                    "{}: {got_len} bytes sha256 {got}, escrow has {want_len} bytes sha256 {want}",
                    item.key
                ))),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    Ok(Some(format!("{}: missing in the target", item.key)))
                }
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut identical = 0;
    let mut differ = Vec::new();
    for r in results {
        match r? {
            None => identical += 1,
            Some(m) => differ.push(m),
        }
    }
    differ.sort();
    Ok((identical, differ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn entry(key: &str, version: &str, secs: u64, deleted: bool) -> Entry {
        Entry {
            key: key.into(),
            version: version.into(),
            etag: format!("\"{version}\""),
            size: 1,
            modified: Some(UNIX_EPOCH + Duration::from_secs(secs)),
            deleted,
            checksum_algorithm: None,
        }
    }

    fn keys(chosen: &[Entry]) -> Vec<(String, String)> {
        chosen.iter().map(|e| (e.key.clone(), e.version.clone())).collect()
    }

    /// What the listing takes by copy order, over `pages`.
    fn choose(pages: Vec<Vec<Entry>>, at: Option<SystemTime>) -> Vec<Entry> {
        let (n, mut pending, mut out) = (pages.len(), Vec::new(), Vec::new());
        for (i, page) in pages.into_iter().enumerate() {
            for group in groups(page, &mut pending, i + 1 == n) {
                out.extend(candidates(group, at).into_iter().next());
            }
        }
        out
    }

    #[test]
    fn each_key_as_it_was_at_the_time() {
        let page = || {
            vec![
                entry("a", "a3", 300, false),
                entry("a", "a2", 200, false),
                entry("a", "a1", 100, false),
                entry("b", "b2", 250, true),
                entry("b", "b1", 150, false),
                entry("c", "c1", 400, false),
            ]
        };
        let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(
            keys(&choose(vec![page()], None)),
            [("a".to_string(), "a3".to_string()), ("c".into(), "c1".into())]
        );
        assert_eq!(
            keys(&choose(vec![page()], at(220))),
            [("a".to_string(), "a2".to_string()), ("b".into(), "b1".into())]
        );
        assert_eq!(keys(&choose(vec![page()], at(99))), Vec::<(String, String)>::new());
        // A key whose versions continue on the next page is settled once,
        // with all its versions as candidates.
        let pages = vec![
            vec![entry("a", "a3", 300, false)],
            vec![entry("a", "a2", 200, false), entry("b", "b1", 100, false)],
        ];
        assert_eq!(
            keys(&choose(pages, at(1000))),
            [("a".to_string(), "a3".to_string()), ("b".into(), "b1".into())]
        );
        let mut pending = Vec::new();
        let first = groups(vec![entry("a", "a3", 300, false)], &mut pending, false);
        let second = groups(vec![entry("a", "a2", 200, false)], &mut pending, true);
        assert_eq!((first.len(), second.len(), second[0].len()), (0, 1, 2));
    }
}
