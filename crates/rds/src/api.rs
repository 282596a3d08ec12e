//! One view of DB snapshots and Aurora cluster snapshots: the calls escrow
//! needs (describe, copy, share, delete, wait), dispatched on [`RdsKind`],
//! and the deterministic identifiers of the copies it makes.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_rds::config::http::HttpResponse;
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::types::{DbClusterSnapshot, DbSnapshot, Filter, SourceType, Tag};
use futures::StreamExt;
use futures::stream::BoxStream;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::poll::{Polled, Polling, poll_until};
use escrow_sync_core::{Error, ErrorKind, Result};

/// Which RDS snapshots a source or sink handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
// Exhaustive on purpose: RDS has these two snapshot kinds, and callers
// (tests included) handle each.
pub enum RdsKind {
    /// DB instance snapshots (ModifyDBSnapshotAttribute, CopyDBSnapshot).
    Db,
    /// Aurora DB cluster snapshots (ModifyDBClusterSnapshotAttribute,
    /// CopyDBClusterSnapshot).
    Cluster,
}

impl RdsKind {
    /// `"db"` or `"cluster"`, as config files name them.
    pub fn as_str(&self) -> &'static str {
        match self {
            RdsKind::Db => "db",
            RdsKind::Cluster => "cluster",
        }
    }

    /// The URL scheme of `describe()` strings: `rds` or `aurora`.
    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            RdsKind::Db => "rds",
            RdsKind::Cluster => "aurora",
        }
    }

    /// How resources are named in errors and reports: `db snapshot` or
    /// `aurora cluster snapshot`.
    pub fn noun(&self) -> &'static str {
        match self {
            RdsKind::Db => "db snapshot",
            RdsKind::Cluster => "aurora cluster snapshot",
        }
    }

    /// The operation name for this kind, e.g. `rds:CopyDBSnapshot` or
    /// `rds:CopyDBClusterSnapshot`.
    pub(crate) fn op(&self, db: &'static str, cluster: &'static str) -> &'static str {
        match self {
            RdsKind::Db => db,
            RdsKind::Cluster => cluster,
        }
    }
}

impl std::fmt::Display for RdsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A DB snapshot or a cluster snapshot, as escrow sees either.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snap {
    pub id: String,
    pub arn: String,
    /// The DB instance or cluster it was taken of.
    pub lineage: String,
    pub status: String,
    /// `manual`, `automated`, `shared`, `public`, `awsbackup`.
    pub snapshot_type: String,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub gib: u64,
    /// The engine (`postgres`, `aurora-postgresql`...).
    pub engine: String,
    pub created: Option<aws_smithy_types::DateTime>,
    pub tags: BTreeMap<String, String>,
}

fn tags(list: &[Tag]) -> BTreeMap<String, String> {
    list.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect()
}

impl From<DbSnapshot> for Snap {
    fn from(s: DbSnapshot) -> Self {
        Snap {
            id: s.db_snapshot_identifier().unwrap_or_default().to_string(),
            arn: s.db_snapshot_arn().unwrap_or_default().to_string(),
            lineage: s.db_instance_identifier().unwrap_or_default().to_string(),
            status: s.status().unwrap_or_default().to_string(),
            snapshot_type: s.snapshot_type().unwrap_or_default().to_string(),
            encrypted: s.encrypted() == Some(true),
            kms_key_id: s.kms_key_id().map(str::to_string),
            gib: s.allocated_storage().unwrap_or(0).max(0) as u64,
            engine: s.engine().unwrap_or_default().to_string(),
            created: s.snapshot_create_time().cloned(),
            tags: tags(s.tag_list()),
        }
    }
}

impl From<DbClusterSnapshot> for Snap {
    fn from(s: DbClusterSnapshot) -> Self {
        Snap {
            id: s.db_cluster_snapshot_identifier().unwrap_or_default().to_string(),
            arn: s.db_cluster_snapshot_arn().unwrap_or_default().to_string(),
            lineage: s.db_cluster_identifier().unwrap_or_default().to_string(),
            status: s.status().unwrap_or_default().to_string(),
            snapshot_type: s.snapshot_type().unwrap_or_default().to_string(),
            encrypted: s.storage_encrypted() == Some(true),
            kms_key_id: s.kms_key_id().map(str::to_string),
            gib: s.allocated_storage().unwrap_or(0).max(0) as u64,
            engine: s.engine().unwrap_or_default().to_string(),
            created: s.snapshot_create_time().cloned(),
            tags: tags(s.tag_list()),
        }
    }
}

impl Snap {
    pub fn is_automated(&self) -> bool {
        self.snapshot_type == "automated"
    }

    pub fn is_available(&self) -> bool {
        self.status == "available"
    }

    /// A copy that ended badly: it will never become available.
    pub fn is_failed(&self) -> bool {
        let s = self.status.as_str();
        s.contains("fail")
            || s.contains("error")
            || s.starts_with("incompatible")
            || s == "deleting"
    }

    pub fn created_rfc3339(&self) -> String {
        escrow_sync_aws::time::fmt_time(self.created.as_ref())
    }
}

/// Whether a snapshot encrypted with `actual` is encrypted with `wanted` (a
/// key ARN, a key id, or an alias, which cannot be told apart without KMS and
/// counts as a match).
pub(crate) fn same_key(actual: Option<&str>, wanted: &str) -> bool {
    let Some(actual) = actual else { return false };
    if wanted.starts_with("alias/") || wanted.contains(":alias/") {
        return true;
    }
    let id = |k: &str| k.rsplit_once("key/").map(|(_, id)| id.to_string()).unwrap_or(k.into());
    actual == wanted || id(actual) == id(wanted)
}

/// The account of an ARN (`arn:aws:kms:us-east-1:111111111111:key/...`).
pub(crate) fn arn_account(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:").and_then(|r| r.split(':').nth(3)).filter(|a| !a.is_empty())
}

/// The shared classifier knows RDS's not-found faults.
pub(crate) fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    escrow_sync_aws::classify(err) == ErrorKind::NotFound
}

/// What an escrow copy needs granted when a key is out of reach.
const ESCROW_COPY_KEYS: &str = "a KMS key is not accessible: the key of the shared snapshot must \
     grant the escrow account kms:Decrypt, kms:DescribeKey and kms:CreateGrant, and the escrow key \
     must let the escrow operator use it (kms:CreateGrant, kms:Encrypt)";

/// A copy's SDK error; when a key is out of reach
/// (`KMSKeyNotAccessibleFault`), `keys` says what to grant.
pub(crate) fn copy_error<E>(
    err: SdkError<E, HttpResponse>,
    op: &str,
    resource: &str,
    keys: &str,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let key_denied =
        err.as_service_error().and_then(|e| e.code()) == Some("KMSKeyNotAccessibleFault");
    let err = sdk_error(err, op, resource);
    if !key_denied {
        return err;
    }
    Error::new(err.kind(), op, resource, keys).with_source(err)
}

/// The longest base identifier: room is left for a `-retry-N` suffix
/// within RDS's 255 characters.
const BASE_MAX: usize = 240;

/// A valid RDS snapshot identifier made of `prefix` (which starts with a
/// letter and ends with a hyphen) and `id`: lowercase letters, digits and
/// single hyphens, no trailing hyphen, at most 240 characters. When that
/// loses information (another character replaced, or a cut), a hash of `id`
/// is appended, so two different ids never share an identifier.
pub(crate) fn identifier(prefix: &str, id: &str) -> String {
    let mut out = String::from(prefix);
    for c in id.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    let exact = out.len() <= BASE_MAX && out == format!("{prefix}{}", id.to_ascii_lowercase());
    if !exact {
        out.truncate(BASE_MAX - 9);
        while out.ends_with('-') {
            out.pop();
        }
        out.push_str(&format!("-{:08x}", fnv1a(id)));
    }
    out
}

/// 32-bit FNV-1a: stable across releases and platforms (identifiers are
/// derived from it, so it must never change).
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// RDS calls for one kind of snapshot, with one client.
#[derive(Debug, Clone)]
pub(crate) struct Rds {
    pub client: aws_sdk_rds::Client,
    pub kind: RdsKind,
}

impl Rds {
    pub fn new(client: aws_sdk_rds::Client, kind: RdsKind) -> Self {
        Rds { client, kind }
    }

    fn describe_op(&self) -> &'static str {
        self.kind.op("rds:DescribeDBSnapshots", "rds:DescribeDBClusterSnapshots")
    }

    /// The account's own snapshots (manual and automated; with `ids`, only
    /// those), page by page. `manual_only` asks for manual ones only.
    pub fn list(
        &self,
        ids: &[String],
        manual_only: bool,
        resource: String,
    ) -> BoxStream<'static, Result<Snap>> {
        let op = self.describe_op();
        let filter = |name: &str| {
            (!ids.is_empty())
                .then(|| Filter::builder().name(name).set_values(Some(ids.to_vec())).build())
        };
        let kind = manual_only.then_some("manual");
        match self.kind {
            RdsKind::Db => {
                let pages = self
                    .client
                    .describe_db_snapshots()
                    .set_filters(filter("db-snapshot-id").map(|f| vec![f]))
                    .set_snapshot_type(kind.map(str::to_string))
                    .into_paginator()
                    .items()
                    .send();
                futures::stream::unfold((pages, resource), move |(mut p, resource)| async move {
                    let next = p.next().await?;
                    let item = next.map(Snap::from).map_err(|e| sdk_error(e, op, resource.clone()));
                    Some((item, (p, resource)))
                })
                .boxed()
            }
            RdsKind::Cluster => {
                let pages = self
                    .client
                    .describe_db_cluster_snapshots()
                    .set_filters(filter("db-cluster-snapshot-id").map(|f| vec![f]))
                    .set_snapshot_type(kind.map(str::to_string))
                    .into_paginator()
                    .items()
                    .send();
                futures::stream::unfold((pages, resource), move |(mut p, resource)| async move {
                    let next = p.next().await?;
                    let item = next.map(Snap::from).map_err(|e| sdk_error(e, op, resource.clone()));
                    Some((item, (p, resource)))
                })
                .boxed()
            }
        }
    }

    /// The account's own manual snapshots tagged `key` = `value`, any state.
    pub async fn tagged(&self, key: &str, value: &str, resource: &str) -> Result<Vec<Snap>> {
        let all: Vec<Result<Snap>> = self.list(&[], true, resource.to_string()).collect().await;
        let mut out = Vec::new();
        for s in all {
            let s = s?;
            if s.tags.get(key).map(String::as_str) == Some(value) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The account's snapshot `id`, or `None` when there is none. Automated
    /// snapshots (`rds:` ids) are asked for with SnapshotType=automated, as
    /// RDS requires.
    pub async fn get(&self, id: &str, resource: &str) -> Result<Option<Snap>> {
        let op = self.describe_op();
        let automated = id.starts_with("rds:").then(|| "automated".to_string());
        let found = match self.kind {
            RdsKind::Db => match self
                .client
                .describe_db_snapshots()
                .db_snapshot_identifier(id)
                .set_snapshot_type(automated)
                .send()
                .await
            {
                Ok(out) => out.db_snapshots.unwrap_or_default().into_iter().map(Snap::from).next(),
                Err(e) if is_not_found(&e) => None,
                Err(e) => return Err(sdk_error(e, op, resource)),
            },
            RdsKind::Cluster => match self
                .client
                .describe_db_cluster_snapshots()
                .db_cluster_snapshot_identifier(id)
                .set_snapshot_type(automated)
                .send()
                .await
            {
                Ok(out) => {
                    out.db_cluster_snapshots.unwrap_or_default().into_iter().map(Snap::from).next()
                }
                Err(e) if is_not_found(&e) => None,
                Err(e) => return Err(sdk_error(e, op, resource)),
            },
        };
        // RDS keeps identifiers in lowercase and matches them so.
        Ok(found.filter(|s| s.id.eq_ignore_ascii_case(id)))
    }

    /// Copies `source` (an identifier in this account, or the ARN of a
    /// snapshot another account shares) to `target`, encrypted with `kms`
    /// when given, tagged `tags` at creation and nothing else.
    pub async fn copy(
        &self,
        source: &str,
        target: &str,
        kms: Option<&str>,
        tags: &BTreeMap<String, String>,
        resource: &str,
    ) -> Result<Snap> {
        let op = self.kind.op("rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot");
        let tag_list: Vec<Tag> =
            tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let kms = kms.map(str::to_string);
        let copied = match self.kind {
            RdsKind::Db => self
                .client
                .copy_db_snapshot()
                .source_db_snapshot_identifier(source)
                .target_db_snapshot_identifier(target)
                .set_kms_key_id(kms)
                .set_tags(Some(tag_list))
                .copy_tags(false)
                .send()
                .await
                .map_err(|e| copy_error(e, op, resource, ESCROW_COPY_KEYS))?
                .db_snapshot
                .map(Snap::from),
            RdsKind::Cluster => self
                .client
                .copy_db_cluster_snapshot()
                .source_db_cluster_snapshot_identifier(source)
                .target_db_cluster_snapshot_identifier(target)
                .set_kms_key_id(kms)
                .set_tags(Some(tag_list))
                .copy_tags(false)
                .send()
                .await
                .map_err(|e| copy_error(e, op, resource, ESCROW_COPY_KEYS))?
                .db_cluster_snapshot
                .map(Snap::from),
        };
        Ok(copied.unwrap_or_else(|| Snap { id: target.to_string(), ..Snap::default() }))
    }

    /// Adds `account` to (or removes it from) the snapshot's `restore`
    /// attribute: the share.
    pub async fn share(&self, id: &str, account: &str, add: bool, resource: &str) -> Result<()> {
        let values = Some(vec![account.to_string()]);
        let (to_add, to_remove) = if add { (values, None) } else { (None, values) };
        match self.kind {
            RdsKind::Db => {
                self.client
                    .modify_db_snapshot_attribute()
                    .db_snapshot_identifier(id)
                    .attribute_name("restore")
                    .set_values_to_add(to_add)
                    .set_values_to_remove(to_remove)
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "rds:ModifyDBSnapshotAttribute", resource))?;
            }
            RdsKind::Cluster => {
                self.client
                    .modify_db_cluster_snapshot_attribute()
                    .db_cluster_snapshot_identifier(id)
                    .attribute_name("restore")
                    .set_values_to_add(to_add)
                    .set_values_to_remove(to_remove)
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "rds:ModifyDBClusterSnapshotAttribute", resource))?;
            }
        }
        Ok(())
    }

    /// Whether snapshot `id`'s `restore` attribute names `account` (the
    /// share), read with DescribeDBSnapshotAttributes /
    /// DescribeDBClusterSnapshotAttributes; `None` when there is no such
    /// snapshot.
    pub async fn shared_with(
        &self,
        id: &str,
        account: &str,
        resource: &str,
    ) -> Result<Option<bool>> {
        let names = |name: Option<&str>, values: &[String]| {
            name == Some("restore") && values.iter().any(|v| v == account)
        };
        let shared = match self.kind {
            RdsKind::Db => {
                let op = "rds:DescribeDBSnapshotAttributes";
                match self
                    .client
                    .describe_db_snapshot_attributes()
                    .db_snapshot_identifier(id)
                    .send()
                    .await
                {
                    Ok(out) => out
                        .db_snapshot_attributes_result()
                        .map(|r| r.db_snapshot_attributes())
                        .unwrap_or_default()
                        .iter()
                        .any(|a| names(a.attribute_name(), a.attribute_values())),
                    Err(e) if is_not_found(&e) => return Ok(None),
                    Err(e) => return Err(sdk_error(e, op, resource)),
                }
            }
            RdsKind::Cluster => {
                let op = "rds:DescribeDBClusterSnapshotAttributes";
                match self
                    .client
                    .describe_db_cluster_snapshot_attributes()
                    .db_cluster_snapshot_identifier(id)
                    .send()
                    .await
                {
                    Ok(out) => out
                        .db_cluster_snapshot_attributes_result()
                        .map(|r| r.db_cluster_snapshot_attributes())
                        .unwrap_or_default()
                        .iter()
                        .any(|a| names(a.attribute_name(), a.attribute_values())),
                    Err(e) if is_not_found(&e) => return Ok(None),
                    Err(e) => return Err(sdk_error(e, op, resource)),
                }
            }
        };
        Ok(Some(shared))
    }

    /// Deletes snapshot `id`.
    pub async fn delete(&self, id: &str, resource: &str) -> Result<()> {
        match self.kind {
            RdsKind::Db => {
                self.client
                    .delete_db_snapshot()
                    .db_snapshot_identifier(id)
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "rds:DeleteDBSnapshot", resource))?;
            }
            RdsKind::Cluster => {
                self.client
                    .delete_db_cluster_snapshot()
                    .db_cluster_snapshot_identifier(id)
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "rds:DeleteDBClusterSnapshot", resource))?;
            }
        }
        Ok(())
    }

    /// The latest event RDS recorded about snapshot `id` in the last two
    /// weeks (where RDS says why a copy failed); best effort.
    async fn last_event(&self, id: &str) -> Option<String> {
        let source_type = match self.kind {
            RdsKind::Db => SourceType::DbSnapshot,
            RdsKind::Cluster => SourceType::DbClusterSnapshot,
        };
        let out = self
            .client
            .describe_events()
            .source_identifier(id)
            .source_type(source_type)
            .duration(14 * 24 * 60)
            .send()
            .await
            .ok()?;
        out.events().iter().rev().find_map(|e| e.message().map(str::to_string))
    }

    /// Polls snapshot `id` (from 1 s, doubling to `max_poll`) until it is
    /// available; fails when it ends in a failed state (with the message RDS
    /// recorded), disappears, or `timeout` passes. `resource` names it.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
        max_poll: Duration,
        resource: &str,
    ) -> Result<Snap> {
        let op = self.kind.op("rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot");
        let named = format!("{resource} ({id})");
        let polling = Polling::new(op, &named)
            .with_max_pause(max_poll)
            .with_timeout(timeout)
            .with_deadline_error(ErrorKind::Failed, "not available", "the next run waits for it");
        poll_until(&polling, || async {
            match self.get(id, &named).await? {
                Some(s) if s.is_available() => Ok(Polled::Done(s)),
                Some(s) if s.is_failed() => {
                    let why = self.last_event(id).await.unwrap_or_else(|| "no message".into());
                    Err(Error::new(
                        ErrorKind::Failed,
                        op,
                        &named,
                        format!(
                            "the copy ended in status {}: {why}; the next run copies it again",
                            s.status
                        ),
                    ))
                }
                Some(s) => Ok(Polled::Pending(s.status)),
                None => Err(Error::new(
                    ErrorKind::Transient,
                    op,
                    &named,
                    "the copy disappeared while it was awaited; the next run copies it again",
                )),
            }
        })
        .await
    }

    /// The copy marked `marker` (a tag and its value) named `base`, or one
    /// an earlier failure made it retry as `base-retry-N`: reused when
    /// `usable` (in progress or available), else made anew by copying
    /// `source` with `kms` and `tags`. Not waited for.
    #[allow(clippy::too_many_arguments)]
    pub async fn copy_once(
        &self,
        base: &str,
        marker: (&str, &str),
        usable: impl Fn(&Snap) -> bool,
        source: &str,
        kms: Option<&str>,
        tags: &BTreeMap<String, String>,
        resource: &str,
    ) -> Result<Snap> {
        let (tag, value) = marker;
        let target = match self.get(base, resource).await? {
            None => base.to_string(),
            Some(s) if s.tags.get(tag).map(String::as_str) != Some(value) => {
                return Err(Error::new(
                    ErrorKind::Failed,
                    self.kind.op("rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot"),
                    resource,
                    format!(
                        "a snapshot named {base} already exists and is not tagged {tag}={value}: \
                         escrow-sync copies {value} to that name; rename or delete the other one"
                    ),
                ));
            }
            Some(s) if usable(&s) => return Ok(s),
            Some(_) => {
                // It failed (or is stale): look for a retry an earlier run made.
                let copies = self.tagged(tag, value, resource).await?;
                if let Some(s) = copies.iter().find(|s| usable(s)) {
                    return Ok(s.clone());
                }
                let mut n = copies.len() + 1;
                let taken = |n: usize| copies.iter().any(|s| s.id == format!("{base}-retry-{n}"));
                while taken(n) {
                    n += 1;
                }
                format!("{base}-retry-{n}")
            }
        };
        self.copy(source, &target, kms, tags, resource).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(id: &str) -> bool {
        id.len() <= 255
            && id.starts_with(|c: char| c.is_ascii_lowercase())
            && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !id.contains("--")
            && !id.ends_with('-')
    }

    #[test]
    fn identifiers_are_valid_deterministic_and_distinct() {
        assert_eq!(identifier("escrow-", "nightly-1"), "escrow-nightly-1");
        assert_eq!(identifier("escrow-", "Nightly-1"), "escrow-nightly-1");
        let auto = identifier("escrow-sync-", "rds:db1-2026-11-28-00-00");
        assert!(auto.starts_with("escrow-sync-rds-db1-2026-11-28-00-00-"), "{auto}");
        assert!(valid(&auto), "{auto}");
        assert_eq!(auto, identifier("escrow-sync-", "rds:db1-2026-11-28-00-00"));
        // Replacing ':' would make these two equal: the hash keeps them apart.
        assert_ne!(identifier("escrow-", "rds:db1-2026"), identifier("escrow-", "rds-db1-2026"),);
        let long = "a".repeat(255);
        let l = identifier("escrow-", &long);
        assert!(valid(&l) && l.len() <= BASE_MAX, "{l}");
        assert_ne!(l, identifier("escrow-", &format!("{}b", "a".repeat(254))));
        for odd in ["x--y", "x-", "x::y", "ÄÖ", "-"] {
            assert!(valid(&identifier("escrow-", odd)), "{odd}");
        }
    }

    #[test]
    fn keys_compare_by_arn_or_id() {
        let arn = "arn:aws:kms:us-east-1:222222222222:key/1234";
        assert!(same_key(Some(arn), arn));
        assert!(same_key(Some(arn), "1234"));
        assert!(!same_key(Some(arn), "arn:aws:kms:us-east-1:222222222222:key/9999"));
        assert!(!same_key(None, arn));
        assert!(same_key(Some(arn), "alias/escrow"));
        assert_eq!(arn_account(arn), Some("222222222222"));
        assert_eq!(arn_account("1234"), None);
    }
}
