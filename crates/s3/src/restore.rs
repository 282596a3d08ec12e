//! Reading an escrow bucket back for a restore: every key as escrow held it
//! at a point in time.
//!
//! Escrow buckets are versioned and a sync never deletes, so each key's
//! versions are the copies escrow made of it over time. [`S3RestoreSource`]
//! lists them (ListObjectVersions) and yields, per key, the newest version
//! escrow had at or before the chosen time (`with_as_of`; default: the
//! newest), skipping keys whose newest entry by then is a delete marker and
//! keys escrow did not hold yet. "Newest" is the listing's order (newest
//! first within a key, `IsLatest` the current entry), never `LastModified`
//! alone: S3 gives it to the second, and a delete marker put in the same
//! second as the version it hides is still the newer entry. Keys come
//! without the job's escrow prefix (`dest_prefix`), as they were in the
//! primary; the bytes are streamed from that exact version (`GetObject`
//! with `versionId` and `If-Match`), so any sink can take them.
//! escrow-sync's own bookkeeping (metadata `escrow-sync-*`, the multipart
//! journal under [`crate::JOURNAL_DIR`]) is left behind.

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

impl S3RestoreSource {
    /// Whether delete marker `marker` of `key` is older than version
    /// `version`, both of one second (`modified`, shared by `entries` held
    /// entries): whether ListObjectVersions lists the marker after the
    /// version (`KeyMarker`/`VersionIdMarker` = the version). Only entries
    /// of that second can come between them, so the walk stops at the first
    /// entry of another key or an earlier second.
    async fn marker_is_older(
        &self,
        key: &str,
        version: &str,
        marker: &str,
        modified: Option<SystemTime>,
        entries: usize,
    ) -> Result<bool> {
        let (mut key_marker, mut version_marker) = (key.to_string(), version.to_string());
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .key_marker(&key_marker)
                .version_id_marker(&version_marker)
                .max_keys(entries.clamp(1, 1000) as i32)
                .set_expected_bucket_owner(self.owner.clone())
                .send()
                .await
                .map_err(|e| s3_error(e, "s3:ListObjectVersions", url(&self.bucket, key)))?;
            if out
                .delete_markers()
                .iter()
                .any(|d| d.key() == Some(key) && d.version_id() == Some(marker))
            {
                return Ok(true);
            }
            let same_second = |k: Option<&str>, t: Option<&aws_smithy_types::DateTime>| {
                k == Some(key) && t.and_then(|t| SystemTime::try_from(*t).ok()) == modified
            };
            let more = out.versions().iter().all(|v| same_second(v.key(), v.last_modified()))
                && out.delete_markers().iter().all(|d| same_second(d.key(), d.last_modified()));
            match (out.is_truncated(), out.next_key_marker(), out.next_version_id_marker()) {
                (Some(true), Some(k), Some(v))
                    if more
                        && k == key
                        && (k, v) != (key_marker.as_str(), version_marker.as_str()) =>
                {
                    (key_marker, version_marker) = (k.to_string(), v.to_string());
                }
                _ => return Ok(false),
            }
        }
    }
}

/// One listed entry: a version or a delete marker.
struct Entry {
    key: String,
    version: String,
    etag: String,
    size: u64,
    modified: Option<SystemTime>,
    /// `IsLatest`: the key's current entry.
    latest: bool,
    /// The listing page it came on: a key's entries on an earlier page are
    /// newer than on a later one.
    page: u64,
    checksum_algorithm: Option<String>,
}

/// One key's entries: its versions and its delete markers, each newest first
/// as ListObjectVersions gives them (pages appended in order).
///
/// S3 gives `LastModified` to the second, so the time alone cannot order
/// entries made in one second; the listing's order can, and `IsLatest`
/// names the current entry. ListObjectVersions lists one key's versions and
/// delete markers interleaved, newest first, but the response comes as two
/// lists, so between a version and a marker of the same second neither the
/// order nor the time tells which came first: unless one of them is the
/// latest, [`S3RestoreSource::marker_is_older`] asks S3.
#[derive(Default)]
struct History {
    versions: Vec<Entry>,
    markers: Vec<Entry>,
}

/// Whether escrow held `e` at `at` (always, for `None` or an untimed entry).
fn held(e: &Entry, at: Option<SystemTime>) -> bool {
    !matches!((at, e.modified), (Some(at), Some(m)) if m > at)
}

/// A key as escrow held it at `at`.
#[derive(Debug, PartialEq)]
enum State {
    /// Escrow did not hold the key yet, or its newest entry is a delete
    /// marker.
    Gone,
    /// The newest entry is a version.
    Held,
    /// The newest held version and the newest held delete marker carry the
    /// same time and neither is the latest: which came first needs S3.
    Tie {
        /// The newest held version's id.
        version: String,
        /// The newest held delete marker's id.
        marker: String,
        /// That second.
        modified: Option<SystemTime>,
        /// How many held entries carry that time.
        entries: usize,
    },
}

/// The state of one key at `at` from its listed entries.
fn state(h: &History, at: Option<SystemTime>) -> State {
    let version = h.versions.iter().find(|e| held(e, at));
    let marker = h.markers.iter().find(|e| held(e, at));
    match (version, marker) {
        (None, _) => State::Gone,
        (Some(_), None) => State::Held,
        // The latest entry, when held, is the newest held one.
        (Some(v), Some(_)) if v.latest => State::Held,
        (Some(_), Some(m)) if m.latest => State::Gone,
        // An earlier page, or a later second, is newer.
        (Some(v), Some(m)) => match m.page.cmp(&v.page).then(v.modified.cmp(&m.modified)) {
            std::cmp::Ordering::Greater => State::Held,
            std::cmp::Ordering::Less => State::Gone,
            std::cmp::Ordering::Equal => State::Tie {
                version: v.version.clone(),
                marker: m.version.clone(),
                modified: v.modified,
                entries: h
                    .versions
                    .iter()
                    .chain(&h.markers)
                    .filter(|e| held(e, at) && e.page == v.page && e.modified == v.modified)
                    .count(),
            },
        },
    }
}

/// The versions of a held key a restore may take, newest copy first: those
/// escrow held at `at`.
fn candidates(h: History, at: Option<SystemTime>) -> Vec<Entry> {
    h.versions.into_iter().filter(|e| held(e, at)).collect()
}

/// Splits page `page` of entries (versions and delete markers, each in the
/// listing's order: key order, newest first within a key) into complete key
/// histories in key order; the last key stays in `pending` when more pages
/// follow, as its entries may go on there.
fn groups(
    page: u64,
    versions: Vec<Entry>,
    markers: Vec<Entry>,
    pending: &mut Option<(String, History)>,
    last_page: bool,
) -> Vec<(String, History)> {
    let mut keys: BTreeMap<String, History> = BTreeMap::new();
    // Everything of a key on an earlier page is newer than on this one.
    if let Some((key, h)) = pending.take() {
        keys.insert(key, h);
    }
    for (mut e, deleted) in
        versions.into_iter().map(|e| (e, false)).chain(markers.into_iter().map(|e| (e, true)))
    {
        e.page = page;
        let h = keys.entry(e.key.clone()).or_default();
        if deleted { h.markers.push(e) } else { h.versions.push(e) }
    }
    if !last_page {
        *pending = keys.pop_last();
    }
    keys.into_iter().collect()
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
            pending: Option<(String, History)>,
            number: u64,
            done: bool,
        }
        let start =
            Page { key_marker: None, version_marker: None, pending: None, number: 0, done: false };
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
                let entry =
                    |key: Option<&str>,
                     version: Option<&str>,
                     etag: Option<&str>,
                     size: Option<i64>,
                     modified: Option<&aws_smithy_types::DateTime>,
                     latest: Option<bool>,
                     checksum_algorithm: Option<String>| Entry {
                        key: key.unwrap_or_default().to_string(),
                        version: version.unwrap_or("null").to_string(),
                        etag: etag.unwrap_or_default().to_string(),
                        size: size.unwrap_or(0).max(0) as u64,
                        modified: time(modified),
                        latest: latest.unwrap_or(false),
                        page: 0,
                        checksum_algorithm,
                    };
                let versions: Vec<Entry> = out
                    .versions()
                    .iter()
                    .map(|v| {
                        entry(
                            v.key(),
                            v.version_id(),
                            v.e_tag(),
                            v.size(),
                            v.last_modified(),
                            v.is_latest(),
                            v.checksum_algorithm().first().map(|a| a.as_str().to_string()),
                        )
                    })
                    .collect();
                let markers: Vec<Entry> = out
                    .delete_markers()
                    .iter()
                    .map(|d| {
                        entry(
                            d.key(),
                            d.version_id(),
                            None,
                            None,
                            d.last_modified(),
                            d.is_latest(),
                            None,
                        )
                    })
                    .collect();
                if out.is_truncated().unwrap_or(false) {
                    page.key_marker = out.next_key_marker().map(str::to_string);
                    page.version_marker = out.next_version_id_marker().map(str::to_string);
                } else {
                    page.done = true;
                }
                let mut chosen = Vec::new();
                page.number += 1;
                let number = page.number;
                for (key, history) in
                    groups(number, versions, markers, &mut page.pending, page.done)
                {
                    // escrow-sync's own multipart journal (under the job's
                    // escrow prefix) is not data.
                    let journal =
                        key.strip_prefix(strip.as_str()).is_some_and(crate::journal::own_folder);
                    let unstripped = key.strip_prefix(strip.as_str()).unwrap_or(&key);
                    if journal || only.as_ref().is_some_and(|keys| !keys.contains(unstripped)) {
                        continue;
                    }
                    let holds = match state(&history, at) {
                        State::Gone => false,
                        State::Held => true,
                        // Held when the marker is the older of the two.
                        State::Tie { version, marker, modified, entries } => {
                            self.marker_is_older(&key, &version, &marker, modified, entries).await?
                        }
                    };
                    if !holds {
                        continue;
                    }
                    let taken = candidates(history, at);
                    let pick = if self.source_order && taken.len() > 1 {
                        self.newest_in_source(taken).await?
                    } else {
                        taken.into_iter().next()
                    };
                    chosen.extend(pick);
                }
                let items: Vec<Result<Item>> = chosen
                    .into_iter()
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
        let tags = crate::tags::object_tags(
            &self.client,
            &self.bucket,
            &key,
            version.as_deref(),
            self.owner.clone(),
            None,
        )
        .await?;
        let mut attributes: BTreeMap<String, String> =
            tags.into_iter().map(|(k, v)| (format!("{TAG_PREFIX}{k}"), v)).collect();
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

    fn entry(key: &str, version: &str, secs: u64, latest: bool) -> Entry {
        Entry {
            key: key.into(),
            version: version.into(),
            etag: format!("\"{version}\""),
            size: 1,
            modified: Some(UNIX_EPOCH + Duration::from_secs(secs)),
            latest,
            page: 0,
            checksum_algorithm: None,
        }
    }

    fn v(key: &str, version: &str, secs: u64) -> Entry {
        entry(key, version, secs, false)
    }

    fn keys(chosen: &[Entry]) -> Vec<(String, String)> {
        chosen.iter().map(|e| (e.key.clone(), e.version.clone())).collect()
    }

    fn at(s: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(s))
    }

    /// What the listing takes by copy order, over pages of (versions,
    /// markers); a tie fails the test.
    fn choose(pages: Vec<(Vec<Entry>, Vec<Entry>)>, at: Option<SystemTime>) -> Vec<Entry> {
        let (n, mut pending, mut out) = (pages.len(), None, Vec::new());
        for (i, (versions, markers)) in pages.into_iter().enumerate() {
            for (_, h) in groups(i as u64, versions, markers, &mut pending, i + 1 == n) {
                match state(&h, at) {
                    State::Gone => {}
                    State::Held => out.extend(candidates(h, at).into_iter().next()),
                    tie => panic!("{tie:?}"),
                }
            }
        }
        out
    }

    #[test]
    fn each_key_as_it_was_at_the_time() {
        let page = || {
            (
                vec![v("a", "a3", 300), v("a", "a2", 200), v("a", "a1", 100), v("b", "b1", 150)],
                vec![v("b", "b2", 250)],
            )
        };
        let c = || (vec![v("c", "c1", 400)], Vec::<Entry>::new());
        let both = || {
            let (mut versions, markers) = page();
            versions.extend(c().0);
            (versions, markers)
        };
        assert_eq!(
            keys(&choose(vec![both()], None)),
            [("a".to_string(), "a3".to_string()), ("c".into(), "c1".into())]
        );
        assert_eq!(
            keys(&choose(vec![both()], at(220))),
            [("a".to_string(), "a2".to_string()), ("b".into(), "b1".into())]
        );
        assert_eq!(keys(&choose(vec![both()], at(99))), Vec::<(String, String)>::new());
        // A key whose versions continue on the next page is settled once,
        // with all its versions as candidates.
        let pages = vec![
            (vec![v("a", "a3", 300)], vec![]),
            (vec![v("a", "a2", 200), v("b", "b1", 100)], vec![]),
        ];
        assert_eq!(
            keys(&choose(pages, at(1000))),
            [("a".to_string(), "a3".to_string()), ("b".into(), "b1".into())]
        );
        let mut pending = None;
        let first = groups(0, vec![v("a", "a3", 300)], vec![], &mut pending, false);
        let second = groups(1, vec![v("a", "a2", 200)], vec![], &mut pending, true);
        assert_eq!((first.len(), second.len(), second[0].1.versions.len()), (0, 1, 2));
        // Entries on a later page than the key's others are older, whatever
        // their second.
        let pages = vec![(vec![v("a", "a1", 100)], vec![]), (vec![], vec![v("a", "adel", 100)])];
        assert_eq!(keys(&choose(pages, None)), [("a".to_string(), "a1".to_string())]);
        let pages = vec![(vec![], vec![v("a", "adel", 100)]), (vec![v("a", "a1", 100)], vec![])];
        assert!(choose(pages, None).is_empty());
        // Two pages both ending with one key, markers and versions split.
        let mut pending = None;
        let first = groups(0, vec![v("a", "a1", 1)], vec![v("b", "bdel", 9)], &mut pending, false);
        let second = groups(1, vec![v("b", "b1", 5), v("c", "c1", 1)], vec![], &mut pending, true);
        assert_eq!(first.len(), 1);
        let b: Vec<_> =
            second.iter().map(|(k, h)| (k.as_str(), h.versions.len(), h.markers.len())).collect();
        assert_eq!(b, [("b", 1, 1), ("c", 1, 0)]);
    }

    #[test]
    fn same_second_entries_go_by_is_latest_then_need_the_listing() {
        let h = |versions, markers| History { versions, markers };
        // The marker is the latest: gone, now and as of that second.
        let marked = || h(vec![v("a", "a1", 100)], vec![entry("a", "adel", 100, true)]);
        assert_eq!(state(&marked(), None), State::Gone);
        assert_eq!(state(&marked(), at(100)), State::Gone);
        assert_eq!(state(&marked(), at(99)), State::Gone);
        // The version is the latest (deleted and put again in one second).
        let back = || h(vec![entry("a", "a2", 100, true)], vec![v("a", "adel", 100)]);
        assert_eq!(state(&back(), None), State::Held);
        assert_eq!(state(&back(), at(100)), State::Held);
        // Neither is the latest: a tie to settle, counting that second's
        // entries held.
        let under = h(
            vec![entry("a", "a3", 300, true), v("a", "a2", 100), v("a", "a1", 100)],
            vec![v("a", "adel", 100)],
        );
        assert_eq!(
            state(&under, at(150)),
            State::Tie {
                version: "a2".into(),
                marker: "adel".into(),
                modified: at(100),
                entries: 3
            }
        );
        assert_eq!(state(&under, None), State::Held);
        assert_eq!(state(&under, at(99)), State::Gone);
        let picked = candidates(under, at(150));
        assert_eq!(keys(&picked), [("a".to_string(), "a2".to_string()), ("a".into(), "a1".into())]);
    }
}
