//! Redshift snapshots in escrow: either the primary's share itself
//! (share-only), or an independent copy escrow owns, made by restoring a
//! temporary cluster from the share with the escrow key, taking a manual
//! snapshot of it with indefinite retention and deleting the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_redshift::types::{Cluster, Snapshot, Tag};
use futures::StreamExt;

use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, EscrowCopy, Item, ItemKind, ItemStream, Payload, Receipt, Result, Retained,
    Scope, ServerSideRef, Sink,
};

use crate::api::{
    Waiter, code, provenance_tags, rs_error, shared_source_key, short_hash, size_of, tag,
};

/// The prefix of every temporary restore cluster's identifier.
pub const RESTORE_CLUSTER_PREFIX: &str = "escrow-sync-restore-";

/// Cluster states a restore does not come back from.
const FAILED_CLUSTER_STATES: &[&str] = &[
    "incompatible-restore",
    "incompatible-network",
    "incompatible-parameters",
    "incompatible-hsm",
    "hardware-failure",
    "storage-full",
];

/// How the temporary restore cluster is created. Every field is optional:
/// node type and count default to the snapshot's, network settings to the
/// escrow account's defaults.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// The node type (default: the snapshot's).
    pub node_type: Option<String>,
    /// The number of nodes (default: the snapshot's).
    pub number_of_nodes: Option<i32>,
    /// The cluster subnet group in escrow (default: the default VPC's).
    pub cluster_subnet_group_name: Option<String>,
    /// VPC security groups for the cluster (default: the VPC's default).
    pub vpc_security_group_ids: Vec<String>,
}

impl RestoreOptions {
    /// The defaults: everything taken from the snapshot and the account.
    pub fn new() -> Self {
        RestoreOptions::default()
    }

    /// Sets the node type.
    pub fn with_node_type(mut self, node_type: Option<String>) -> Self {
        self.node_type = node_type;
        self
    }

    /// Sets the number of nodes.
    pub fn with_number_of_nodes(mut self, n: Option<i32>) -> Self {
        self.number_of_nodes = n;
        self
    }

    /// Sets the cluster subnet group.
    pub fn with_cluster_subnet_group_name(mut self, name: Option<String>) -> Self {
        self.cluster_subnet_group_name = name;
        self
    }

    /// Sets the VPC security groups.
    pub fn with_vpc_security_group_ids(mut self, ids: Vec<String>) -> Self {
        self.vpc_security_group_ids = ids;
        self
    }
}

/// Whether `actual` (a key ARN, as Redshift answers it) is the configured
/// key `configured` (an ARN or a bare key id). An alias (`alias/escrow`, or
/// its ARN) cannot be told apart from its key without KMS and counts as a
/// match, as for EBS and RDS copies: otherwise every verify would flag a
/// copy made under the very alias configured.
fn same_key(actual: &str, configured: &str) -> bool {
    if configured.starts_with("alias/") || configured.contains(":alias/") {
        return true;
    }
    let id = |k: &str| k.rsplit_once("key/").map_or(k, |(_, id)| id).to_string();
    actual == configured || id(actual) == id(configured)
}

/// The escrow account's Redshift snapshots.
///
/// With [`with_independent_copy(true)`](Self::with_independent_copy), each
/// source snapshot the primary shares is restored into a temporary cluster
/// `escrow-sync-restore-<hash>` encrypted with the escrow key, a manual
/// snapshot `escrow-sync-<hash>-<n>` is taken of it with indefinite
/// retention and the provenance tags, and the cluster is deleted. Every step
/// is found again by name or tag, so an interrupted run resumes where it
/// stopped. Escrow lists the snapshots carrying
/// [`escrow_sync_core::tags::SOURCE_SNAPSHOT_ID`](escrow_sync_core::tags::SOURCE_SNAPSHOT_ID).
///
/// Without it (share-only), escrow holds nothing of its own: the share the
/// primary granted is recorded, and `verify` flags every item, since the
/// primary can revoke a share at any time.
#[derive(Debug, Clone)]
pub struct RedshiftSnapshotSink {
    redshift: aws_sdk_redshift::Client,
    region: String,
    independent: bool,
    kms_key_id: Option<String>,
    job: Option<String>,
    wait: Waiter,
    restore: RestoreOptions,
    primary_account: Option<String>,
    escrow_account: Option<String>,
}

impl RedshiftSnapshotSink {
    /// Escrow's Redshift snapshots through `redshift` (escrow credentials)
    /// in `region`; share-only until
    /// [`with_independent_copy`](Self::with_independent_copy).
    pub fn from_client(redshift: aws_sdk_redshift::Client, region: impl Into<String>) -> Self {
        RedshiftSnapshotSink {
            redshift,
            region: region.into(),
            independent: false,
            kms_key_id: None,
            job: None,
            wait: Waiter {
                timeout: Duration::from_secs(12 * 3600),
                max_poll: Duration::from_secs(60),
            },
            restore: RestoreOptions::default(),
            primary_account: None,
            escrow_account: None,
        }
    }

    /// Make a copy escrow owns (restore, manual snapshot, delete the
    /// cluster) instead of relying on the primary's share (default false).
    pub fn with_independent_copy(mut self, on: bool) -> Self {
        self.independent = on;
        self
    }

    /// Encrypts every restore cluster, hence its snapshot, with this escrow
    /// key (else the restore keeps the snapshot's encryption, which for an
    /// encrypted source is the primary's key: verify flags that).
    pub fn with_kms_key_id(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }

    /// Tags every new escrow snapshot with [`escrow_sync_core::tags::JOB`] =
    /// `job`, so that `prune` tells the job's copies from escrow's records
    /// alone.
    pub fn with_job(mut self, job: Option<String>) -> Self {
        self.job = job;
        self
    }

    /// How long to wait for one restore, and then for its snapshot, and the
    /// longest pause between polls (defaults 12 hours and 60 s; polls start
    /// at 1 s and double).
    pub fn with_wait(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.wait = Waiter { timeout, max_poll: max_poll.max(Duration::from_millis(1)) };
        self
    }

    /// How the temporary restore cluster is created.
    pub fn with_restore_options(mut self, options: RestoreOptions) -> Self {
        self.restore = options;
        self
    }

    /// The primary account (whose shares share-only mode lists, and whose
    /// copies independent mode lists) and the escrow account (to tag the
    /// restore clusters). Required in share-only mode.
    pub fn with_accounts(mut self, primary: impl Into<String>, escrow: impl Into<String>) -> Self {
        self.primary_account = Some(primary.into());
        self.escrow_account = Some(escrow.into());
        self
    }

    fn resource(&self, source_id: &str) -> String {
        let what = if self.independent { "escrow copy" } else { "escrow share" };
        format!("{what} of redshift snapshot {source_id} ({})", self.region)
    }

    fn primary(&self) -> Result<&str> {
        self.primary_account.as_deref().ok_or_else(|| {
            Error::invalid_config(
                "a share-only Redshift sink lists what the primary shares: give it the primary \
                 account (RedshiftSnapshotSink::with_accounts)",
            )
        })
    }

    /// The deterministic names of `source_id` (owned by `owner`): the hash,
    /// and the restore cluster's identifier.
    fn names(owner: &str, source_id: &str) -> (String, String) {
        let h = short_hash(&format!("{owner}/{source_id}"));
        let cluster = format!("{RESTORE_CLUSTER_PREFIX}{h}");
        (h, cluster)
    }

    /// Every manual snapshot escrow-sync made in escrow, in any state (of
    /// the primary's snapshots only, when the primary is known).
    async fn own_copies(&self) -> Result<Vec<Snapshot>> {
        let mut pages = self
            .redshift
            .describe_cluster_snapshots()
            .snapshot_type("manual")
            .tag_keys(tags::SOURCE_SNAPSHOT_ID)
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(s) = pages.next().await {
            let s = s.map_err(|e| {
                rs_error(e, "redshift:DescribeClusterSnapshots", "escrow redshift snapshots")
            })?;
            // Without OwnerAccount, Redshift may also answer snapshots other
            // accounts share with escrow: only escrow's own are copies. And
            // when the primary is known, only copies of its snapshots: one
            // escrow may serve several primaries whose snapshot names meet.
            let owner = s.owner_account();
            let foreign = owner.is_some_and(|o| {
                self.primary_account.as_deref() == Some(o)
                    || self.escrow_account.as_deref().is_some_and(|e| e != o)
            });
            let other_primary = match (tag(&s, tags::SOURCE_ACCOUNT), &self.primary_account) {
                (Some(a), Some(p)) => a != p,
                _ => false,
            };
            if tag(&s, tags::SOURCE_SNAPSHOT_ID).is_some()
                && s.snapshot_type() == Some("manual")
                && !foreign
                && !other_primary
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The escrow snapshots of `source_id` (of `owner`, when known), newest
    /// first.
    async fn copies_of(&self, owner: Option<&str>, source_id: &str) -> Result<Vec<Snapshot>> {
        let mut out: Vec<Snapshot> = self
            .own_copies()
            .await?
            .into_iter()
            .filter(|s| tag(s, tags::SOURCE_SNAPSHOT_ID) == Some(source_id))
            .filter(|s| owner.is_none_or(|o| tag(s, tags::SOURCE_ACCOUNT).is_none_or(|a| a == o)))
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.snapshot_create_time().copied()));
        Ok(out)
    }

    /// Escrow's own snapshot `id`, if it exists.
    async fn own_snapshot(&self, id: &str, resource: &str) -> Result<Option<Snapshot>> {
        match self.redshift.describe_cluster_snapshots().snapshot_identifier(id).send().await {
            Ok(out) => Ok(out.snapshots.unwrap_or_default().into_iter().next()),
            Err(e) if code(&e).as_deref() == Some("ClusterSnapshotNotFound") => Ok(None),
            Err(e) => Err(rs_error(e, "redshift:DescribeClusterSnapshots", resource)),
        }
    }

    /// The snapshot `id` that `owner` shares with escrow, if escrow sees it.
    async fn shared(&self, owner: &str, id: &str, resource: &str) -> Result<Option<Snapshot>> {
        let out = self
            .redshift
            .describe_cluster_snapshots()
            .owner_account(owner)
            .snapshot_identifier(id)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out.snapshots.unwrap_or_default().into_iter().next()),
            Err(e) if code(&e).as_deref() == Some("ClusterSnapshotNotFound") => Ok(None),
            Err(e) => Err(rs_error(e, "redshift:DescribeClusterSnapshots", resource)),
        }
    }

    /// Escrow's cluster `id`, if it exists.
    async fn cluster(&self, id: &str, resource: &str) -> Result<Option<Cluster>> {
        match self.redshift.describe_clusters().cluster_identifier(id).send().await {
            Ok(out) => Ok(out.clusters.unwrap_or_default().into_iter().next()),
            Err(e) if code(&e).as_deref() == Some("ClusterNotFound") => Ok(None),
            Err(e) => Err(rs_error(e, "redshift:DescribeClusters", format!("{resource} ({id})"))),
        }
    }

    /// The restore clusters that still exist (not being deleted).
    async fn restore_clusters(&self) -> Result<BTreeSet<String>> {
        let mut pages = self.redshift.describe_clusters().into_paginator().items().send();
        let mut out = BTreeSet::new();
        while let Some(c) = pages.next().await {
            let c = c.map_err(|e| rs_error(e, "redshift:DescribeClusters", "escrow clusters"))?;
            if let Some(id) = c.cluster_identifier()
                && id.starts_with(RESTORE_CLUSTER_PREFIX)
                && c.cluster_status() != Some("deleting")
            {
                out.insert(id.to_string());
            }
        }
        Ok(out)
    }

    /// The share of `source` (named `source_id`) is visible to escrow.
    async fn confirm_share(&self, source_id: &str, source: &ServerSideRef) -> Result<Receipt> {
        let resource = self.resource(source_id);
        let owner = match source.owner.as_deref() {
            Some(o) => o,
            None => self.primary()?,
        };
        match self.shared(owner, &source.key, &resource).await? {
            Some(s) if s.status() == Some("available") => {
                Ok(Receipt::new(size_of(&s), Some(source.key.clone())))
            }
            Some(s) => Err(Error::new(
                ErrorKind::Transient,
                "redshift:DescribeClusterSnapshots",
                resource,
                format!(
                    "the shared snapshot is {}; the next run checks again",
                    s.status().unwrap_or("?")
                ),
            )),
            None => Err(Error::new(
                ErrorKind::NotFound,
                "redshift:DescribeClusterSnapshots",
                resource,
                format!(
                    "escrow does not see {} shared by account {owner}: check that the reader role \
                     may call redshift:AuthorizeSnapshotAccess",
                    source.key
                ),
            )),
        }
    }

    /// Restores `cluster_id` from the shared snapshot unless an earlier
    /// run did, and waits until it is available. A restore that fails is
    /// deleted and reported; the next run restores again.
    async fn restored(
        &self,
        cluster_id: &str,
        item: &Item,
        source: &ServerSideRef,
        owner: &str,
        resource: &str,
    ) -> Result<()> {
        let existing = self.cluster(cluster_id, resource).await?;
        if existing.as_ref().is_some_and(|c| c.cluster_status() == Some("deleting")) {
            self.gone(cluster_id, resource).await?;
        }
        if existing.is_none_or(|c| c.cluster_status() == Some("deleting")) {
            self.restore(cluster_id, item, source, owner, resource).await?;
        }
        let state = self
            .wait
            .until("redshift:RestoreFromClusterSnapshot", resource, "the restore", || async {
                let Some(c) = self.cluster(cluster_id, resource).await? else {
                    return Err(Error::new(
                        ErrorKind::Failed,
                        "redshift:RestoreFromClusterSnapshot",
                        resource,
                        format!(
                            "the restore cluster {cluster_id} disappeared; the next run restores \
                             again"
                        ),
                    ));
                };
                let status = c.cluster_status().unwrap_or_default();
                let restore = c.restore_status().and_then(|r| r.status()).unwrap_or_default();
                if FAILED_CLUSTER_STATES.contains(&status) || restore == "failed" {
                    return Ok(Some(Err(format!("{status} (restore {restore})"))));
                }
                if status == "available" && matches!(restore, "" | "completed") {
                    return Ok(Some(Ok(())));
                }
                Ok(None)
            })
            .await?;
        if let Err(state) = state {
            self.drop_cluster(cluster_id, resource).await?;
            return Err(Error::new(
                ErrorKind::Failed,
                "redshift:RestoreFromClusterSnapshot",
                resource,
                format!(
                    "the restore cluster {cluster_id} ended in state {state}; it was deleted and \
                     the next run restores again"
                ),
            ));
        }
        Ok(())
    }

    /// RestoreFromClusterSnapshot of the shared snapshot into `cluster_id`,
    /// encrypted with the escrow key; the cluster is tagged with what it
    /// restores when the escrow account is known.
    async fn restore(
        &self,
        cluster_id: &str,
        item: &Item,
        source: &ServerSideRef,
        owner: &str,
        resource: &str,
    ) -> Result<()> {
        let attr = |k: &str| source.attributes.get(k).filter(|v| !v.is_empty()).cloned();
        let groups = &self.restore.vpc_security_group_ids;
        tracing::info!(source = %item.key, cluster = cluster_id, "restoring a temporary cluster in escrow");
        let out = self
            .redshift
            .restore_from_cluster_snapshot()
            .cluster_identifier(cluster_id)
            .snapshot_identifier(&source.key)
            .set_snapshot_cluster_identifier(attr("shared-cluster"))
            .owner_account(owner)
            .publicly_accessible(false)
            .set_kms_key_id(self.kms_key_id.clone())
            .set_encrypted(self.kms_key_id.as_ref().map(|_| true))
            .set_node_type(self.restore.node_type.clone())
            .set_number_of_nodes(self.restore.number_of_nodes)
            .set_cluster_subnet_group_name(self.restore.cluster_subnet_group_name.clone())
            .set_vpc_security_group_ids((!groups.is_empty()).then(|| groups.clone()))
            .send()
            .await;
        match out {
            Ok(_) => {}
            Err(e) if code(&e).as_deref() == Some("ClusterAlreadyExists") => return Ok(()),
            Err(e) => return Err(rs_error(e, "redshift:RestoreFromClusterSnapshot", resource)),
        }
        if let Some(escrow) = &self.escrow_account {
            self.redshift
                .create_tags()
                .resource_name(format!(
                    "arn:aws:redshift:{}:{escrow}:cluster:{cluster_id}",
                    self.region
                ))
                .tags(Tag::builder().key(tags::RESTORE_FOR).value(&item.key).build())
                .tags(Tag::builder().key(tags::SOURCE_ACCOUNT).value(owner).build())
                .send()
                .await
                .map_err(|e| {
                    rs_error(e, "redshift:CreateTags", format!("{resource} ({cluster_id})"))
                })?;
        }
        Ok(())
    }

    /// Waits until cluster `id` no longer exists.
    async fn gone(&self, id: &str, resource: &str) -> Result<()> {
        self.wait
            .until("redshift:DeleteCluster", resource, "deleting the restore cluster", || async {
                Ok(self.cluster(id, resource).await?.is_none().then_some(()))
            })
            .await
    }

    /// Deletes the restore cluster `id` (no final snapshot), waiting out a
    /// state that refuses deletion; nothing to do when it is gone or going.
    async fn drop_cluster(&self, id: &str, resource: &str) -> Result<()> {
        self.wait
            .until("redshift:DeleteCluster", resource, "deleting the restore cluster", || async {
                match self.cluster(id, resource).await? {
                    None => return Ok(Some(())),
                    Some(c) if c.cluster_status() == Some("deleting") => return Ok(Some(())),
                    Some(_) => {}
                }
                let out = self
                    .redshift
                    .delete_cluster()
                    .cluster_identifier(id)
                    .skip_final_cluster_snapshot(true)
                    .send()
                    .await;
                match out {
                    Ok(_) => Ok(Some(())),
                    Err(e) if code(&e).as_deref() == Some("ClusterNotFound") => Ok(Some(())),
                    Err(e) if code(&e).as_deref() == Some("InvalidClusterState") => Ok(None),
                    Err(e) => {
                        Err(rs_error(e, "redshift:DeleteCluster", format!("{resource} ({id})")))
                    }
                }
            })
            .await
    }

    /// Waits for escrow snapshot `id` to be available.
    async fn wait_snapshot(&self, id: &str, cluster_id: &str, resource: &str) -> Result<Snapshot> {
        let named = format!("{resource} ({id})");
        self.wait
            .until("redshift:CreateClusterSnapshot", &named, "the escrow snapshot", || async {
                match self.own_snapshot(id, &named).await? {
                    Some(s) if s.status() == Some("available") => Ok(Some(s)),
                    Some(s) if matches!(s.status(), Some("failed" | "deleted")) => Err(Error::new(
                        ErrorKind::Failed,
                        "redshift:CreateClusterSnapshot",
                        &named,
                        format!(
                            "the snapshot ended in state {}; the restore cluster {cluster_id} is \
                             kept and the next run snapshots it again",
                            s.status().unwrap_or_default()
                        ),
                    )),
                    Some(_) => Ok(None),
                    None => Err(Error::new(
                        ErrorKind::Failed,
                        "redshift:CreateClusterSnapshot",
                        &named,
                        "the snapshot disappeared; the next run takes it again",
                    )),
                }
            })
            .await
    }

    /// The independent copy of `item`, resumed from whatever an earlier run
    /// left: a snapshot (waited for, then the cluster deleted), a restore
    /// cluster (waited for, then snapshotted), or nothing (restored).
    async fn independent_copy(&self, item: &Item, source: &ServerSideRef) -> Result<Receipt> {
        let resource = self.resource(&item.key);
        let owner = match source.owner.as_deref() {
            Some(o) => o.to_string(),
            None => self.primary()?.to_string(),
        };
        let (h, cluster_id) = Self::names(&owner, &item.key);
        let copies = self.copies_of(Some(&owner), &item.key).await?;
        let started = copies.iter().find(|s| matches!(s.status(), Some("available" | "creating")));
        if let Some(id) = started.and_then(|s| s.snapshot_identifier()) {
            let done = self.wait_snapshot(id, &cluster_id, &resource).await?;
            self.drop_cluster(&cluster_id, &resource).await?;
            return Ok(Receipt::new(size_of(&done), Some(id.to_string())));
        }
        self.restored(&cluster_id, item, source, &owner, &resource).await?;

        // Failed snapshots of earlier runs keep their names: take the next.
        let prefix = format!("escrow-sync-{h}-");
        let n = copies
            .iter()
            .filter_map(|s| s.snapshot_identifier()?.strip_prefix(&prefix)?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let snapshot_id = format!("{prefix}{n}");
        let mut tags = provenance_tags(
            &item.key,
            &owner,
            source.attributes.get("arn").map(String::as_str).unwrap_or_default(),
            source.attributes.get("start-time").map(String::as_str).unwrap_or_default(),
            source.attributes.get("cluster").map(String::as_str).unwrap_or_default(),
            &escrow_sync_aws::now_rfc3339(),
        );
        if let Some(job) = &self.job {
            tags.insert(escrow_sync_core::tags::JOB.to_string(), job.clone());
        }
        let out = self
            .redshift
            .create_cluster_snapshot()
            .snapshot_identifier(&snapshot_id)
            .cluster_identifier(&cluster_id)
            .manual_snapshot_retention_period(-1)
            .set_tags(Some(
                tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect(),
            ))
            .send()
            .await;
        match out {
            Ok(_) => {}
            Err(e) if code(&e).as_deref() == Some("ClusterSnapshotAlreadyExists") => {}
            Err(e) => {
                return Err(rs_error(
                    e,
                    "redshift:CreateClusterSnapshot",
                    format!("{resource} ({snapshot_id})"),
                ));
            }
        }
        let done = self.wait_snapshot(&snapshot_id, &cluster_id, &resource).await?;
        self.drop_cluster(&cluster_id, &resource).await?;
        Ok(Receipt::new(size_of(&done), Some(snapshot_id)))
    }

    /// The listing of an independent sink: sources with an available escrow
    /// snapshot whose restore cluster is gone (one still there means an
    /// interrupted run: the next write deletes it).
    async fn independent_items(&self, prefix: &str) -> Result<Vec<Item>> {
        let leftovers = self.restore_clusters().await?;
        let mut items = BTreeMap::new();
        for s in self.own_copies().await? {
            let Some(key) = tag(&s, tags::SOURCE_SNAPSHOT_ID) else { continue };
            let owner = tag(&s, tags::SOURCE_ACCOUNT).unwrap_or_default();
            if s.status() != Some("available")
                || !key.starts_with(prefix)
                || leftovers.contains(&Self::names(owner, key).1)
            {
                continue;
            }
            items.insert(key.to_string(), Item::new(key, ItemKind::Snapshot, size_of(&s), key));
        }
        Ok(items.into_values().collect())
    }

    /// The listing of a share-only sink: what the primary shares with escrow.
    async fn shared_items(&self, prefix: &str) -> Result<Vec<Item>> {
        let primary = self.primary()?;
        let mut pages = self
            .redshift
            .describe_cluster_snapshots()
            .owner_account(primary)
            .into_paginator()
            .items()
            .send();
        let mut items = BTreeMap::new();
        while let Some(s) = pages.next().await {
            let s = s.map_err(|e| {
                rs_error(
                    e,
                    "redshift:DescribeClusterSnapshots",
                    format!("redshift snapshots account {primary} shares with escrow"),
                )
            })?;
            if s.status() != Some("available") || s.owner_account().is_some_and(|o| o != primary) {
                continue;
            }
            if let Some(key) = shared_source_key(&s).filter(|k| k.starts_with(prefix)) {
                items.insert(key.clone(), Item::new(&key, ItemKind::Snapshot, size_of(&s), &key));
            }
        }
        Ok(items.into_values().collect())
    }
}

#[async_trait]
impl Sink for RedshiftSnapshotSink {
    fn describe(&self) -> String {
        format!("redshift://escrow/{}", self.region)
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let prefix = scope.prefix.clone();
        futures::stream::once(async move {
            if self.independent {
                self.independent_items(&prefix).await
            } else {
                self.shared_items(&prefix).await
            }
        })
        .flat_map(|r| match r {
            Ok(items) => futures::stream::iter(items.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::iter([Err(e)]).boxed(),
        })
        .boxed()
    }

    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        let Payload::Reference(source) = payload else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "redshift:RestoreFromClusterSnapshot",
                self.resource(&item.key),
                "a Redshift snapshot is shared by reference only",
            ));
        };
        if self.independent {
            self.independent_copy(item, &source).await
        } else {
            self.confirm_share(&item.key, &source).await
        }
    }

    /// The escrow item stands for the source snapshot named by its
    /// provenance (the fingerprint is the source identifier): sizes differ
    /// between a source and its restored-and-snapshotted copy.
    async fn confirm_same(&self, item: &Item, escrow: &Item) -> Result<bool> {
        Ok(item.fingerprint == escrow.fingerprint)
    }

    fn audits(&self) -> bool {
        true
    }

    async fn audit(&self, item: &Item) -> Result<Vec<String>> {
        if !self.independent {
            return Ok(vec![format!(
                "escrow holds only a share of {} that the primary can revoke: set \
                 independent_copy = true for a copy escrow owns",
                item.key
            )]);
        }
        let copies = self.copies_of(self.primary_account.as_deref(), &item.key).await?;
        let Some(copy) = copies.iter().find(|s| s.status() == Some("available")) else {
            return Ok(vec![format!("no available escrow snapshot of {}", item.key)]);
        };
        let id = copy.snapshot_identifier().unwrap_or_default();
        let mut problems = Vec::new();
        match (copy.encrypted(), copy.kms_key_id(), self.kms_key_id.as_deref()) {
            (Some(true), Some(actual), Some(configured)) if !same_key(actual, configured) => {
                problems.push(format!(
                    "escrow snapshot {id} of {} is encrypted with {actual}, not the escrow key \
                     {configured}",
                    item.key
                ));
            }
            (Some(true), Some(actual), None) => {
                let source_account = tag(copy, tags::SOURCE_ACCOUNT).unwrap_or("?");
                if actual.split(':').nth(4) == Some(source_account) {
                    problems.push(format!(
                        "escrow snapshot {id} of {} is encrypted with the primary's key {actual}: \
                         set kms_key_id to an escrow key",
                        item.key
                    ));
                }
            }
            (Some(true), _, _) => {}
            _ => problems.push(format!(
                "escrow snapshot {id} of {} is not encrypted: set kms_key_id to an escrow key",
                item.key
            )),
        }
        if let Some(days) = copy.manual_snapshot_retention_period()
            && days != -1
        {
            problems.push(format!(
                "escrow snapshot {id} of {} expires after {days} days: set its \
                 ManualSnapshotRetentionPeriod to -1 (indefinite)",
                item.key
            ));
        }
        Ok(problems)
    }
}

#[async_trait]
impl Retained for RedshiftSnapshotSink {
    fn describe(&self) -> String {
        Sink::describe(self)
    }

    async fn copies(&self) -> Result<Vec<EscrowCopy>> {
        if !self.independent {
            return Ok(Vec::new());
        }
        Ok(self
            .own_copies()
            .await?
            .into_iter()
            .filter_map(|s| {
                Some(EscrowCopy {
                    id: s.snapshot_identifier()?.to_string(),
                    source: tag(&s, tags::SOURCE_SNAPSHOT_ID)?.to_string(),
                    lineage: tag(&s, tags::LINEAGE).unwrap_or_default().to_string(),
                    created: tag(&s, tags::SOURCE_START_TIME).unwrap_or_default().to_string(),
                    complete: s.status() == Some("available"),
                    copied: s
                        .snapshot_create_time()
                        .map(|t| escrow_sync_aws::time::fmt_time(Some(t)))
                        .or_else(|| tag(&s, tags::COPIED_AT).map(str::to_string)),
                    job: tag(&s, escrow_sync_core::tags::JOB).map(str::to_string),
                })
            })
            .collect())
    }

    async fn delete_copy(&self, copy: &EscrowCopy) -> Result<()> {
        let resource = format!("escrow redshift snapshot {} of {}", copy.id, copy.source);
        if !self.independent {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "redshift:DeleteClusterSnapshot",
                resource,
                "a share-only Redshift job holds no escrow copies",
            ));
        }
        match self.redshift.delete_cluster_snapshot().snapshot_identifier(&copy.id).send().await {
            Ok(_) => Ok(()),
            Err(e) if code(&e).as_deref() == Some("ClusterSnapshotNotFound") => Ok(()),
            Err(e) => Err(rs_error(e, "redshift:DeleteClusterSnapshot", resource)),
        }
    }
}
