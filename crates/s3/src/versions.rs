//! Every version of every key (`versions = true`): listings that yield one
//! item per key whose fingerprint lists its versions oldest first, and the
//! copy of the versions escrow lacks, oldest first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};

use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Receipt, RequestPacer, Result, ServerSideRef,
};

use crate::util::{META_PREFIX, PaceExt, TAG_PREFIX, s3_error, url};

/// Metadata key recording the source version id of an escrow copy.
pub const SOURCE_VERSION_META: &str = "escrow-sync-source-version-id";
/// Metadata key recording the source version's last-modified time (RFC 3339).
pub const SOURCE_MODIFIED_META: &str = "escrow-sync-source-last-modified";
/// Attribute-name prefix of the versions a source hands over.
const VERSION_ATTR: &str = "version:";

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) id: String,
    pub(crate) etag: String,
    pub(crate) size: u64,
    pub(crate) modified: Option<SystemTime>,
}

impl Version {
    fn content(&self) -> String {
        format!("{}/{}", self.etag, self.size)
    }
}

/// The fingerprint of a key's versions, oldest first: `etag/size|etag/size…`.
pub(crate) fn fingerprint(versions: &[Version]) -> String {
    versions.iter().map(Version::content).collect::<Vec<_>>().join("|")
}

/// Whether every version in `source` has its own match in `escrow` (by ETag
/// and size): escrow is append-only, so it may hold more.
pub(crate) fn contains_all(escrow: &str, source: &str) -> bool {
    let mut have: HashMap<&str, usize> = HashMap::new();
    for v in escrow.split('|').filter(|v| !v.is_empty()) {
        *have.entry(v).or_default() += 1;
    }
    source.split('|').filter(|v| !v.is_empty()).all(|v| match have.get_mut(v) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    })
}

fn to_item(key: String, mut newest_first: Vec<Version>) -> Item {
    newest_first.reverse();
    let size = newest_first.iter().map(|v| v.size).sum();
    let modified = newest_first.last().and_then(|v| v.modified);
    Item::new(key, ItemKind::Object, size, fingerprint(&newest_first)).with_modified(modified)
}

struct Page {
    key_marker: Option<String>,
    version_marker: Option<String>,
    done: bool,
}

/// Lists every version under `prefix` (delete markers left out: escrow
/// never deletes), one item per key, keys with the first `strip` bytes
/// removed. A key's versions may span pages; they are grouped as they come,
/// so memory holds one key's versions at a time.
pub(crate) fn list_versions(
    pacer: Option<RequestPacer>,
    client: Client,
    bucket: String,
    prefix: String,
    strip: usize,
    owner: Option<String>,
    after: Option<String>,
) -> ItemStream<'static> {
    let rows = version_rows(client, bucket, prefix, owner, pacer, after).peekable();
    futures::stream::unfold((rows, false), move |(mut rows, done)| async move {
        if done {
            return None;
        }
        let (key, first) = match rows.next().await? {
            Ok(row) => row,
            Err(e) => return Some((Err(e), (rows, true))),
        };
        let mut list = vec![first];
        while let Some(Ok((k, _))) = std::pin::Pin::new(&mut rows).peek().await {
            if *k != key {
                break;
            }
            if let Some(Ok((_, v))) = rows.next().await {
                list.push(v);
            }
        }
        let logical = key.get(strip..).unwrap_or_default().to_string();
        Some((Ok(to_item(logical, list)), (rows, false)))
    })
    .boxed()
}

/// The versions of exactly `key`, oldest first.
pub(crate) async fn versions_of(
    client: &Client,
    bucket: &str,
    key: &str,
    owner: Option<String>,
    pacer: Option<RequestPacer>,
) -> Result<Vec<Version>> {
    let mut out = Vec::new();
    let mut rows =
        version_rows(client.clone(), bucket.to_string(), key.to_string(), owner, pacer, None);
    while let Some((k, v)) = rows.try_next().await? {
        if k == key {
            out.push(v);
        }
    }
    out.reverse();
    Ok(out)
}

/// ListObjectVersions, page by page: `(key, version)` in key order, newest
/// version first within a key; after the key `after` when given (its
/// `KeyMarker`: a part of a sharded run starts past its lower bound).
fn version_rows(
    client: Client,
    bucket: String,
    prefix: String,
    owner: Option<String>,
    pacer: Option<RequestPacer>,
    after: Option<String>,
) -> futures::stream::BoxStream<'static, Result<(String, Version)>> {
    let start = Page { key_marker: after, version_marker: None, done: false };
    futures::stream::try_unfold(start, move |mut page| {
        let (client, bucket, prefix, owner, pacer) =
            (client.clone(), bucket.clone(), prefix.clone(), owner.clone(), pacer.clone());
        async move {
            if page.done {
                return Ok::<_, Error>(None);
            }
            let out = client
                .list_object_versions()
                .bucket(&bucket)
                .prefix(&prefix)
                .set_key_marker(page.key_marker.take())
                .set_version_id_marker(page.version_marker.take())
                .set_expected_bucket_owner(owner)
                .send()
                .paced(pacer.as_ref())
                .await
                .map_err(|e| {
                    s3_error(e, "s3:ListObjectVersions", format!("s3://{bucket}/{prefix}"))
                })?;
            let rows: Vec<(String, Version)> = out
                .versions()
                .iter()
                .map(|v| {
                    (
                        v.key().unwrap_or_default().to_string(),
                        Version {
                            id: v.version_id().unwrap_or("null").to_string(),
                            etag: v.e_tag().unwrap_or_default().to_string(),
                            size: v.size().unwrap_or(0).max(0) as u64,
                            modified: v.last_modified().and_then(|d| SystemTime::try_from(*d).ok()),
                        },
                    )
                })
                .collect();
            if out.is_truncated().unwrap_or(false) {
                page.key_marker = out.next_key_marker().map(str::to_string);
                page.version_marker = out.next_version_id_marker().map(str::to_string);
            } else {
                page.done = true;
            }
            Ok(Some((rows, page)))
        }
    })
    .map_ok(|rows| futures::stream::iter(rows.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

/// Encodes a version (and its tags) into reference attributes.
pub(crate) fn encode(
    attributes: &mut BTreeMap<String, String>,
    index: usize,
    v: &Version,
    tags: &BTreeMap<String, String>,
) {
    let modified = v
        .modified
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs().to_string())
        .unwrap_or_default();
    attributes.insert(
        format!("{VERSION_ATTR}{index:06}"),
        format!("{}\t{}\t{}\t{modified}", v.id, v.etag, v.size),
    );
    for (k, value) in tags {
        attributes.insert(format!("vtag:{index:06}:{k}"), value.clone());
    }
}

/// The versions (oldest first) and their tag attributes from a reference.
pub(crate) fn decode(src: &ServerSideRef) -> Vec<(Version, BTreeMap<String, String>)> {
    src.attributes
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(VERSION_ATTR).map(|i| (i.to_string(), v)))
        .filter_map(|(index, v)| {
            let mut f = v.split('\t');
            let version = Version {
                id: f.next()?.to_string(),
                etag: f.next()?.to_string(),
                size: f.next()?.parse().ok()?,
                modified: f
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(|s| UNIX_EPOCH + std::time::Duration::from_secs(s)),
            };
            let tag_prefix = format!("vtag:{index}:");
            let tags = src
                .attributes
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(&tag_prefix).map(|t| (format!("{TAG_PREFIX}{t}"), v.clone()))
                })
                .collect();
            Some((version, tags))
        })
        .collect()
}

/// The reference to copy one source version, recording its id and time.
pub(crate) fn version_ref(
    src: &ServerSideRef,
    v: &Version,
    tags: BTreeMap<String, String>,
) -> ServerSideRef {
    let mut attributes = tags;
    if let Some(directive) = src.attributes.get(crate::tags::TAGS_COPIED_ATTR) {
        attributes.insert(crate::tags::TAGS_COPIED_ATTR.to_string(), directive.clone());
    }
    attributes.insert(format!("{META_PREFIX}{SOURCE_VERSION_META}"), v.id.clone());
    if let Some(t) = v.modified {
        attributes.insert(
            format!("{META_PREFIX}{SOURCE_MODIFIED_META}"),
            aws_smithy_types::DateTime::from(t)
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .unwrap_or_default(),
        );
    }
    ServerSideRef::new("s3", &src.container, &src.key, &v.etag)
        .with_owner(src.owner.clone())
        .with_version(Some(v.id.clone()))
        .with_attributes(attributes)
}

/// Which source versions escrow lacks: a version is present when escrow
/// recorded its id, or holds a version with its ETag and size.
pub(crate) fn missing<'a>(
    source: &'a [(Version, BTreeMap<String, String>)],
    escrow: &[Version],
    recorded: &HashSet<String>,
) -> Vec<&'a (Version, BTreeMap<String, String>)> {
    let mut have: HashMap<String, usize> = HashMap::new();
    for e in escrow {
        *have.entry(e.content()).or_default() += 1;
    }
    source
        .iter()
        .filter(|(v, _)| {
            if recorded.contains(&v.id) {
                return false;
            }
            match have.get_mut(&v.content()) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            }
        })
        .collect()
}

/// An error for a key whose versions changed between listing and copying.
pub(crate) fn changed(bucket: &str, key: &str) -> Error {
    Error::new(
        ErrorKind::PreconditionFailed,
        "s3:ListObjectVersions",
        url(bucket, key),
        "the key's versions changed after they were listed; the next run copies them",
    )
}

/// A receipt for the versions copied.
pub(crate) fn receipt(bytes: u64, copied: usize) -> Receipt {
    if copied == 0 { Receipt::unchanged() } else { Receipt::new(bytes, None) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, etag: &str, size: u64) -> Version {
        Version { id: id.into(), etag: etag.into(), size, modified: None }
    }

    #[test]
    fn escrow_may_hold_more_versions_than_the_source() {
        assert!(contains_all("a/1|b/2|c/3", "b/2|c/3"));
        assert!(contains_all("a/1|a/1", "a/1|a/1"));
        assert!(!contains_all("a/1", "a/1|a/1"), "each version needs its own copy");
        assert!(!contains_all("a/1|b/2", "b/2|d/4"));
    }

    #[test]
    fn missing_versions_keep_their_order() {
        let source = vec![
            (v("s1", "a", 1), BTreeMap::new()),
            (v("s2", "b", 2), BTreeMap::new()),
            (v("s3", "a", 1), BTreeMap::new()),
            (v("s4", "c", 3), BTreeMap::new()),
        ];
        let escrow = vec![v("e1", "a", 1)];
        let recorded: HashSet<String> = ["s4".to_string()].into();
        let ids: Vec<_> =
            missing(&source, &escrow, &recorded).iter().map(|(v, _)| v.id.clone()).collect();
        assert_eq!(ids, ["s2", "s3"]);
    }

    #[test]
    fn versions_round_trip_through_attributes() {
        let mut attrs = BTreeMap::new();
        let mut tags = BTreeMap::new();
        tags.insert("team".to_string(), "ops".to_string());
        let first = Version {
            modified: Some(UNIX_EPOCH + std::time::Duration::from_secs(42)),
            ..v("id-1", "\"e1\"", 5)
        };
        encode(&mut attrs, 0, &first, &tags);
        encode(&mut attrs, 1, &v("id-2", "\"e2\"", 7), &BTreeMap::new());
        let src = ServerSideRef::new("s3", "b", "k", "fp").with_attributes(attrs);
        let got = decode(&src);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, first);
        assert_eq!(got[0].1.get("tag:team").map(String::as_str), Some("ops"));
        assert_eq!(got[1].0.id, "id-2");
        assert!(got[1].1.is_empty());
    }
}
