//! Where a validation reads a trail's files: the escrow copy of the log
//! bucket (an S3 bucket holding `<dest_prefix><source bucket>/<key>`), or
//! anything else that can list and read by the names CloudTrail gave.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_s3::Client;

use escrow_sync_core::Result;

/// The most bytes read of one file in escrow (compressed, as stored).
/// CloudTrail's files are far smaller (a log file is a few MiB at most, and
/// [`MAX_UNCOMPRESSED`](crate::digest::MAX_UNCOMPRESSED) caps what it may
/// decompress to); a larger object is not a CloudTrail file. A store reads
/// at most one byte more, so that [`StoredObject::over_cap`] tells.
pub const MAX_STORED_BYTES: u64 = 64 << 20;

/// How many folders deep a trail's key prefix is looked for in escrow
/// (S3 allows a prefix of up to 200 characters: a hundred one-letter
/// folders; trails rarely use more than two).
pub const MAX_PREFIX_DEPTH: usize = 32;

/// A file's bytes and user metadata.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Its bytes as stored (gzip); at most [`MAX_STORED_BYTES`] + 1 (a store
    /// stops reading there).
    pub body: Vec<u8>,
    /// Its user metadata.
    pub metadata: BTreeMap<String, String>,
}

impl StoredObject {
    /// Whether the object is larger than [`MAX_STORED_BYTES`] (its body is
    /// then only the first bytes): not a CloudTrail file, reported, not read.
    pub fn over_cap(&self) -> bool {
        self.body.len() as u64 > MAX_STORED_BYTES
    }
}

/// An earlier version of a file (escrow keeps every version).
#[derive(Debug, Clone)]
pub struct StoredVersion {
    /// Its version id.
    pub version_id: String,
    /// When it was stored (RFC 3339), if known.
    pub stored_at: Option<String>,
}

/// Read access to a trail's files by their CloudTrail names.
#[async_trait]
pub trait TrailStore: Send + Sync {
    /// Every key under `prefix` of the log bucket `bucket`, in key order.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>>;
    /// The current content of `bucket`/`key`; `None` when it is not there.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>>;
    /// Earlier (noncurrent) versions of `bucket`/`key`, newest first.
    async fn earlier_versions(&self, _bucket: &str, _key: &str) -> Result<Vec<StoredVersion>> {
        Ok(Vec::new())
    }
    /// The bytes of one version of `bucket`/`key`.
    async fn get_version(
        &self,
        _bucket: &str,
        _key: &str,
        _version: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// One version of `bucket`/`key` with its user metadata (a digest's
    /// signature). By default [`TrailStore::get_version`] without metadata.
    async fn get_version_object(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<Option<StoredObject>> {
        Ok(self
            .get_version(bucket, key, version)
            .await?
            .map(|body| StoredObject { body, metadata: BTreeMap::new() }))
    }
    /// The keys under `prefix` whose current version is a delete marker
    /// (escrow keeps what is under it), in key order; by default none.
    async fn deleted(&self, _bucket: &str, _prefix: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Where `bucket`/`key` is kept, for reports.
    fn location(&self, bucket: &str, key: &str) -> String;
    /// The folders right under `prefix` (a prefix ending in `/`) of the log
    /// bucket `bucket`: each `prefix<name>/`, in key order. By default from
    /// [`TrailStore::list`]; a store that can list by delimiter reads only
    /// the folder names.
    async fn folders(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for key in self.list(bucket, prefix).await? {
            let Some((name, _)) = key.strip_prefix(prefix).and_then(|r| r.split_once('/')) else {
                continue;
            };
            let folder = format!("{prefix}{name}/");
            if out.last() != Some(&folder) {
                out.push(folder);
            }
        }
        Ok(out)
    }
}

/// The escrow copy of log buckets: `bucket`/`key` is kept at
/// `<escrow_bucket>/<prefix><bucket>/<key>`.
#[derive(Debug, Clone)]
pub struct EscrowTrailStore {
    client: Client,
    escrow_bucket: String,
    prefix: String,
}

impl EscrowTrailStore {
    /// The store in `escrow_bucket` under `prefix`.
    pub fn from_client(client: Client, escrow_bucket: &str, prefix: &str) -> Self {
        EscrowTrailStore { client, escrow_bucket: escrow_bucket.into(), prefix: prefix.into() }
    }

    /// Every trail location escrow holds files of, found from the keys
    /// alone (`<prefix><bucket>/<key prefix>AWSLogs/…`), with the trails
    /// whose digests are there: what an offline verify validates.
    pub async fn locations(&self) -> Result<Vec<crate::Location>> {
        let mut found: BTreeMap<(String, String), std::collections::BTreeSet<String>> =
            BTreeMap::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.escrow_bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(e, "s3:ListObjectsV2", &self.prefix))?;
            for key in page.contents().iter().filter_map(|o| o.key()) {
                let Some((bucket, rest)) =
                    key.strip_prefix(&self.prefix).and_then(|r| r.split_once('/'))
                else {
                    continue;
                };
                let Some(at) = rest.find("AWSLogs/") else { continue };
                let trails = found
                    .entry((bucket.to_string(), rest[..at].trim_matches('/').to_string()))
                    .or_default();
                if let Some(name) = crate::DigestName::parse(rest) {
                    trails.insert(name.trail);
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|((bucket, key_prefix), trails)| crate::Location {
                bucket,
                key_prefix,
                trails: trails.into_iter().collect(),
                unvalidated_trails: Vec::new(),
            })
            .collect())
    }

    /// The log buckets escrow holds files of, and under each the key
    /// prefixes trails deliver to (the folders holding `AWSLogs/`, found
    /// by listing folders, at most [`MAX_PREFIX_DEPTH`] levels down): `(bucket, key
    /// prefix)` pairs, read without listing the files themselves.
    pub async fn roots(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for folder in self.common_prefixes(&self.prefix).await? {
            let Some(bucket) = folder.strip_prefix(&self.prefix).and_then(|b| b.strip_suffix('/'))
            else {
                continue;
            };
            let mut level = vec![String::new()];
            for _ in 0..=MAX_PREFIX_DEPTH {
                let mut next = Vec::new();
                for at in level {
                    for sub in TrailStore::folders(self, bucket, &at).await? {
                        if sub.ends_with("/AWSLogs/") || sub == "AWSLogs/" {
                            out.push((bucket.to_string(), at.trim_matches('/').to_string()));
                        } else {
                            next.push(sub);
                        }
                    }
                }
                level = next;
                if level.is_empty() {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The folders (common prefixes) right under `prefix` of the escrow
    /// bucket.
    async fn common_prefixes(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.escrow_bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(e, "s3:ListObjectsV2", prefix))?;
            out.extend(
                page.common_prefixes().iter().filter_map(|p| p.prefix()).map(str::to_string),
            );
        }
        Ok(out)
    }

    /// Every page of ListObjectVersions under `prefix` of the escrow
    /// bucket, handed to `each`.
    async fn version_pages(
        &self,
        prefix: &str,
        mut each: impl FnMut(&aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput),
    ) -> Result<()> {
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.escrow_bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.err(e, "s3:ListObjectVersions", prefix))?;
            each(&page);
            if page.is_truncated() != Some(true) {
                return Ok(());
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() && version_marker.is_none() {
                return Ok(());
            }
        }
    }

    /// The escrow key of `bucket`/`key`.
    pub fn escrow_key(&self, bucket: &str, key: &str) -> String {
        format!("{}{bucket}/{key}", self.prefix)
    }

    fn err<E>(
        &self,
        e: aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api_http::HttpResponse>,
        op: &str,
        key: &str,
    ) -> escrow_sync_core::Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        escrow_sync_aws::sdk_error(e, op, format!("s3://{}/{key}", self.escrow_bucket))
    }
}

/// The SDK's HTTP response type, named once.
mod aws_smithy_runtime_api_http {
    pub type HttpResponse = aws_sdk_s3::config::http::HttpResponse;
}

/// Reads `body` up to [`MAX_STORED_BYTES`] + 1 bytes and stops there:
/// an object of any size costs at most that much memory.
async fn collect(mut body: aws_sdk_s3::primitives::ByteStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) =
        body.try_next().await.map_err(|e| std::io::Error::other(e.to_string()))?
    {
        let room = (MAX_STORED_BYTES + 1) as usize - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() as u64 > MAX_STORED_BYTES {
            break;
        }
    }
    Ok(out)
}

#[async_trait]
impl TrailStore for EscrowTrailStore {
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let full = self.escrow_key(bucket, prefix);
        let strip = self.escrow_key(bucket, "");
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.escrow_bucket)
            .prefix(&full)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(e, "s3:ListObjectsV2", &full))?;
            for o in page.contents() {
                if let Some(k) = o.key().and_then(|k| k.strip_prefix(&strip)) {
                    keys.push(k.to_string());
                }
            }
        }
        Ok(keys)
    }

    async fn folders(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let strip = self.escrow_key(bucket, "");
        Ok(self
            .common_prefixes(&self.escrow_key(bucket, prefix))
            .await?
            .into_iter()
            .filter_map(|p| p.strip_prefix(&strip).map(str::to_string))
            .collect())
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<StoredObject>> {
        let ekey = self.escrow_key(bucket, key);
        let out = match self.client.get_object().bucket(&self.escrow_bucket).key(&ekey).send().await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.err(e, "s3:GetObject", &ekey)),
        };
        let metadata = out.metadata().cloned().unwrap_or_default().into_iter().collect();
        let body = collect(out.body).await.map_err(|e| {
            escrow_sync_core::Error::new(
                escrow_sync_core::ErrorKind::Transient,
                "s3:GetObject",
                format!("s3://{}/{ekey}", self.escrow_bucket),
                e.to_string(),
            )
        })?;
        Ok(Some(StoredObject { body, metadata }))
    }

    async fn earlier_versions(&self, bucket: &str, key: &str) -> Result<Vec<StoredVersion>> {
        let ekey = self.escrow_key(bucket, key);
        let mut versions = Vec::new();
        self.version_pages(&ekey, |page| {
            for v in page.versions() {
                if v.key() != Some(ekey.as_str()) || v.is_latest() == Some(true) {
                    continue;
                }
                let Some(id) = v.version_id() else { continue };
                versions.push(StoredVersion {
                    version_id: id.to_string(),
                    stored_at: v.last_modified().map(|t| escrow_sync_aws::time::fmt_time(Some(t))),
                });
            }
        })
        .await?;
        Ok(versions)
    }

    async fn get_version(&self, bucket: &str, key: &str, version: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_version_object(bucket, key, version).await?.map(|o| o.body))
    }

    async fn get_version_object(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> Result<Option<StoredObject>> {
        let ekey = self.escrow_key(bucket, key);
        let got = self
            .client
            .get_object()
            .bucket(&self.escrow_bucket)
            .key(&ekey)
            .version_id(version)
            .send()
            .await
            .map_err(|e| self.err(e, "s3:GetObject", &ekey))?;
        let metadata = got.metadata().cloned().unwrap_or_default().into_iter().collect();
        // A version over the cap is not a CloudTrail file: not an original.
        Ok(collect(got.body)
            .await
            .ok()
            .filter(|b| b.len() as u64 <= MAX_STORED_BYTES)
            .map(|body| StoredObject { body, metadata }))
    }

    async fn deleted(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let full = self.escrow_key(bucket, prefix);
        let strip = self.escrow_key(bucket, "");
        let mut out = Vec::new();
        self.version_pages(&full, |page| {
            for m in page.delete_markers().iter().filter(|m| m.is_latest() == Some(true)) {
                if let Some(k) = m.key().and_then(|k| k.strip_prefix(&strip)) {
                    out.push(k.to_string());
                }
            }
        })
        .await?;
        out.sort();
        Ok(out)
    }

    fn location(&self, bucket: &str, key: &str) -> String {
        format!("s3://{}/{}", self.escrow_bucket, self.escrow_key(bucket, key))
    }
}
