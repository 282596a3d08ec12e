//! Redshift snapshots in the primary: selected, shared with the escrow
//! account (AuthorizeSnapshotAccess) as they are read, unshared once escrow
//! holds its copy.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_redshift::types::{Snapshot, Tag};
use futures::StreamExt;

use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Result, Scope, ServerSideRef, Source,
};

use crate::api::{
    MANUAL_COPY_PREFIX, Waiter, code, manual_copy_id, rs_error, size_of, snapshot_arn, tag,
};

/// What [`RedshiftSnapshotSource::list`](Source::list) yields a snapshot
/// for: available, manual or automated, and not one of escrow-sync's own
/// manual copies of an automated snapshot (those stand for their original).
/// A copy is known by its tag, and by its name too: CopyClusterSnapshot
/// cannot tag, so a run interrupted between the copy and CreateTags leaves
/// it untagged, and it must not become an item (a second escrow copy of the
/// same data) before the next read of its original tags it.
fn selectable(s: &Snapshot, account: &str) -> bool {
    s.status() == Some("available")
        && matches!(s.snapshot_type(), Some("manual" | "automated"))
        && s.owner_account().is_none_or(|o| o == account)
        && tag(s, tags::COPIED_FROM).is_none()
        && !s.snapshot_identifier().is_some_and(|id| id.starts_with(MANUAL_COPY_PREFIX))
}

/// The primary's Redshift cluster snapshots, selected by tags or ids (or
/// all of them), shared with the escrow account as they are read and
/// unshared once escrow holds its copy.
///
/// Automated snapshots cannot be shared: each is first copied to a manual
/// snapshot in the primary (CopyClusterSnapshot, tagged
/// [`escrow_sync_core::tags::COPIED_FROM`](escrow_sync_core::tags::COPIED_FROM), reused by later runs), and
/// that copy is what is shared.
#[derive(Debug, Clone)]
pub struct RedshiftSnapshotSource {
    redshift: aws_sdk_redshift::Client,
    kms: aws_sdk_kms::Client,
    region: String,
    account: String,
    escrow_account: String,
    tags: BTreeMap<String, String>,
    ids: Vec<String>,
    unshare_after_copy: bool,
    wait: Waiter,
    /// The items read (shared) in this run and not yet finished.
    read: Arc<Mutex<BTreeSet<String>>>,
    /// What the last listing showed of each snapshot it saw.
    listed: Arc<Mutex<BTreeMap<String, Listed>>>,
}

/// What a listing showed of one snapshot, for finishing items escrow
/// already holds without asking again.
#[derive(Debug, Clone)]
struct Listed {
    automated: bool,
    cluster: Option<String>,
    /// escrow-sync's tag naming the automated snapshot it copies.
    copied_from: Option<String>,
    /// Its AccountsWithRestoreAccess names the escrow account.
    shared: bool,
}

impl Listed {
    fn of(s: &Snapshot, escrow_account: &str) -> Self {
        Listed {
            automated: s.snapshot_type() == Some("automated"),
            cluster: s.cluster_identifier().map(str::to_string),
            copied_from: tag(s, tags::COPIED_FROM).map(str::to_string),
            shared: s
                .accounts_with_restore_access()
                .iter()
                .any(|a| a.account_id() == Some(escrow_account)),
        }
    }
}

impl RedshiftSnapshotSource {
    /// Snapshots owned by `account` in `region`, read with the reader
    /// role's `redshift` and `kms` clients, shared with `escrow_account`.
    pub fn from_client(
        redshift: aws_sdk_redshift::Client,
        kms: aws_sdk_kms::Client,
        region: impl Into<String>,
        account: impl Into<String>,
        escrow_account: impl Into<String>,
    ) -> Self {
        RedshiftSnapshotSource {
            redshift,
            kms,
            region: region.into(),
            account: account.into(),
            escrow_account: escrow_account.into(),
            tags: BTreeMap::new(),
            ids: Vec::new(),
            unshare_after_copy: true,
            wait: Waiter {
                timeout: Duration::from_secs(12 * 3600),
                max_poll: Duration::from_secs(60),
            },
            read: Default::default(),
            listed: Default::default(),
        }
    }

    /// Only snapshots carrying all these tags.
    pub fn with_tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.tags = tags;
        self
    }

    /// Only these snapshot identifiers.
    pub fn with_ids(mut self, ids: Vec<String>) -> Self {
        self.ids = ids;
        self
    }

    /// Remove the share once escrow holds its copy (default true). Without
    /// `independent_copy` the share *is* the escrow: pass false.
    pub fn with_unshare_after_copy(mut self, on: bool) -> Self {
        self.unshare_after_copy = on;
        self
    }

    /// How long to wait for the manual copy of an automated snapshot, and
    /// the longest pause between polls (defaults 12 hours and 60 s).
    pub fn with_wait(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.wait = Waiter { timeout, max_poll: max_poll.max(Duration::from_millis(1)) };
        self
    }

    fn resource(&self, id: &str) -> String {
        format!("redshift snapshot {id} (account {}, {})", self.account, self.region)
    }

    /// The primary's snapshot `id`, if it exists.
    async fn find(&self, id: &str) -> Result<Option<Snapshot>> {
        let out = self
            .redshift
            .describe_cluster_snapshots()
            .snapshot_identifier(id)
            .owner_account(&self.account)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out.snapshots.unwrap_or_default().into_iter().next()),
            Err(e) if code(&e).as_deref() == Some("ClusterSnapshotNotFound") => Ok(None),
            Err(e) => Err(rs_error(e, "redshift:DescribeClusterSnapshots", self.resource(id))),
        }
    }

    async fn snapshot(&self, id: &str) -> Result<Snapshot> {
        self.find(id).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "redshift:DescribeClusterSnapshots",
                self.resource(id),
                "",
            )
        })
    }

    /// Every snapshot the primary owns (or those tagged with any of the
    /// selection's tag keys: the service ORs them, the caller ANDs them).
    async fn owned(&self) -> Result<Vec<Snapshot>> {
        let mut req = self.redshift.describe_cluster_snapshots().owner_account(&self.account);
        for (k, v) in &self.tags {
            req = req.tag_keys(k).tag_values(v);
        }
        let mut pages = req.into_paginator().items().send();
        let mut out = Vec::new();
        while let Some(s) = pages.next().await {
            out.push(s.map_err(|e| {
                rs_error(e, "redshift:DescribeClusterSnapshots", Source::describe(self))
            })?);
        }
        Ok(out)
    }

    /// The selected snapshots under `prefix`, as items.
    async fn selected(&self, prefix: &str) -> Result<Vec<Item>> {
        let snapshots = if self.ids.is_empty() {
            self.owned().await?
        } else {
            let mut out = Vec::new();
            for id in &self.ids {
                let found = self.find(id).await?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        "redshift:DescribeClusterSnapshots",
                        self.resource(id),
                        "listed in ids but not found in the primary: remove it from ids",
                    )
                })?;
                out.push(found);
            }
            out
        };
        *self.listed.lock().expect("listing") = snapshots
            .iter()
            .filter_map(|s| {
                Some((s.snapshot_identifier()?.to_string(), Listed::of(s, &self.escrow_account)))
            })
            .collect();
        Ok(snapshots
            .into_iter()
            .filter(|s| selectable(s, &self.account))
            .filter(|s| self.tags.iter().all(|(k, v)| tag(s, k) == Some(v.as_str())))
            .filter_map(|s| {
                let id = s.snapshot_identifier()?;
                id.starts_with(prefix).then(|| {
                    Item::new(id, ItemKind::Snapshot, size_of(&s), id)
                        .with_lineage(s.cluster_identifier().map(str::to_string))
                        .with_modified(
                            s.snapshot_create_time().and_then(escrow_sync_aws::time::system_time),
                        )
                })
            })
            .collect())
    }

    /// Fails when `key` is an AWS-managed key (aws/redshift), which cannot
    /// be shared with another account.
    async fn check_key(&self, id: &str, cluster: &str, key: &str) -> Result<()> {
        let out = self.kms.describe_key().key_id(key).send().await.map_err(|e| {
            escrow_sync_aws::sdk_error(
                e,
                "kms:DescribeKey",
                format!("key {key} of {}", self.resource(id)),
            )
        })?;
        let manager = out.key_metadata.and_then(|m| m.key_manager).map(|m| m.as_str().to_string());
        if manager.as_deref() == Some("AWS") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "redshift:AuthorizeSnapshotAccess",
                self.resource(id),
                format!(
                    "encrypted with the AWS-managed key {key} (aws/redshift), which cannot be \
                     shared with another account, and Redshift has no re-encryption path for a \
                     snapshot: move the cluster {cluster} to a customer-managed key in the \
                     primary whose policy grants kms:Decrypt, kms:DescribeKey and \
                     kms:CreateGrant to the escrow account {} (ModifyCluster with KmsKeyId), \
                     then take a new snapshot",
                    self.escrow_account
                ),
            ));
        }
        Ok(())
    }

    /// The manual copy, in the primary, of the automated snapshot
    /// `original`: an existing one (tagged or named as escrow-sync makes
    /// them), else a new CopyClusterSnapshot tagged [`escrow_sync_core::tags::COPIED_FROM`];
    /// waited for.
    async fn manual_copy(&self, original: &Snapshot) -> Result<Snapshot> {
        let id = original.snapshot_identifier().unwrap_or_default();
        let copy_id = manual_copy_id(id);
        let resource = format!("manual copy {copy_id} of {}", self.resource(id));
        let existing = self.find(&copy_id).await?;
        if let Some(other) = existing.as_ref().and_then(|s| tag(s, tags::COPIED_FROM))
            && other != id
        {
            return Err(Error::new(
                ErrorKind::Failed,
                "redshift:CopyClusterSnapshot",
                resource,
                format!(
                    "{copy_id} in the primary is escrow-sync's copy of {other}, not of {id}: \
                     it is not shared for {id}; rename or delete it in the primary"
                ),
            ));
        }
        if existing.is_none() {
            let copied = self
                .redshift
                .copy_cluster_snapshot()
                .source_snapshot_identifier(id)
                .set_source_snapshot_cluster_identifier(
                    original.cluster_identifier().map(str::to_string),
                )
                .target_snapshot_identifier(&copy_id)
                .send()
                .await;
            match copied {
                Ok(_) => {}
                Err(e) if code(&e).as_deref() == Some("ClusterSnapshotAlreadyExists") => {}
                Err(e) => return Err(rs_error(e, "redshift:CopyClusterSnapshot", resource)),
            }
        }
        if existing.as_ref().is_none_or(|s| tag(s, tags::COPIED_FROM) != Some(id)) {
            let mut arn_of = original.clone();
            arn_of.snapshot_identifier = Some(copy_id.clone());
            arn_of.snapshot_arn = None;
            self.redshift
                .create_tags()
                .resource_name(snapshot_arn(&arn_of, &self.region, &self.account))
                .tags(Tag::builder().key(tags::COPIED_FROM).value(id).build())
                .send()
                .await
                .map_err(|e| rs_error(e, "redshift:CreateTags", &resource))?;
        }
        self.wait
            .until("redshift:CopyClusterSnapshot", &resource, "the manual copy", || async {
                match self.find(&copy_id).await? {
                    Some(s) if s.status() == Some("available") => Ok(Some(s)),
                    Some(s) if matches!(s.status(), Some("failed" | "deleted")) => Err(Error::new(
                        ErrorKind::Failed,
                        "redshift:CopyClusterSnapshot",
                        &resource,
                        format!(
                            "the manual copy ended in state {}: delete {copy_id} in the \
                                 primary and run again",
                            s.status().unwrap_or_default()
                        ),
                    )),
                    Some(_) => Ok(None),
                    None => Err(Error::new(
                        ErrorKind::Failed,
                        "redshift:CopyClusterSnapshot",
                        &resource,
                        "the manual copy disappeared; the next run copies again",
                    )),
                }
            })
            .await
    }

    /// Authorizes (or revokes) the escrow account to restore snapshot `id`
    /// of cluster `cluster`; an authorization already in that state is fine.
    async fn share(&self, id: &str, cluster: Option<&str>, add: bool) -> Result<()> {
        let cluster = cluster.map(str::to_string);
        if add {
            let out = self
                .redshift
                .authorize_snapshot_access()
                .snapshot_identifier(id)
                .set_snapshot_cluster_identifier(cluster)
                .account_with_restore_access(&self.escrow_account)
                .send()
                .await;
            match out {
                Ok(_) => Ok(()),
                Err(e) if code(&e).as_deref() == Some("AuthorizationAlreadyExists") => Ok(()),
                Err(e) => Err(rs_error(e, "redshift:AuthorizeSnapshotAccess", self.resource(id))),
            }
        } else {
            let out = self
                .redshift
                .revoke_snapshot_access()
                .snapshot_identifier(id)
                .set_snapshot_cluster_identifier(cluster)
                .account_with_restore_access(&self.escrow_account)
                .send()
                .await;
            match out {
                Ok(_) => Ok(()),
                Err(e) if code(&e).as_deref() == Some("AuthorizationNotFound") => Ok(()),
                Err(e) => Err(rs_error(e, "redshift:RevokeSnapshotAccess", self.resource(id))),
            }
        }
    }

    /// Revokes the escrow account's access an interrupted run left on what
    /// a read of `key` (an item escrow already holds, not read in this run)
    /// shares: the snapshot, or the manual copy of an automated one (only
    /// when tagged as escrow-sync's copy of `key`). Its
    /// AccountsWithRestoreAccess comes from the listing, or (a copy the
    /// listing did not show: selected by tags or ids) from one
    /// DescribeClusterSnapshots; nothing is revoked unless it names the
    /// escrow account.
    async fn unshare_left(&self, key: &str) -> Result<()> {
        let (shared_id, listed) = {
            let listed = self.listed.lock().expect("listing");
            let automated = listed.get(key).map_or(key.starts_with("rs:"), |l| l.automated);
            let shared_id = if automated { manual_copy_id(key) } else { key.to_string() };
            let seen = listed.get(&shared_id).cloned();
            (shared_id, seen)
        };
        let shared = match listed {
            Some(l) => Some(l),
            None => self.find(&shared_id).await?.map(|s| Listed::of(&s, &self.escrow_account)),
        };
        let Some(shared) = shared else { return Ok(()) };
        let ours = shared_id == key || shared.copied_from.as_deref() == Some(key);
        if ours && shared.shared {
            self.share(&shared_id, shared.cluster.as_deref(), false).await?;
            if let Some(l) = self.listed.lock().expect("listing").get_mut(&shared_id) {
                l.shared = false;
            }
        }
        Ok(())
    }

    /// Refuses a snapshot under an AWS-managed key.
    async fn check_encryption(&self, snapshot: &Snapshot) -> Result<()> {
        if snapshot.encrypted() == Some(true)
            && let Some(key) = snapshot.kms_key_id()
        {
            self.check_key(
                snapshot.snapshot_identifier().unwrap_or_default(),
                snapshot.cluster_identifier().unwrap_or("?"),
                key,
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Source for RedshiftSnapshotSource {
    fn describe(&self) -> String {
        format!("redshift://{}/{}", self.account, self.region)
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let prefix = scope.prefix.clone();
        futures::stream::once(async move { self.selected(&prefix).await })
            .flat_map(|r| match r {
                Ok(items) => futures::stream::iter(items.into_iter().map(Ok)).boxed(),
                Err(e) => futures::stream::iter([Err(e)]).boxed(),
            })
            .boxed()
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        let snapshot = self.snapshot(&item.key).await?;
        self.check_encryption(&snapshot).await?;
        let shared = if snapshot.snapshot_type() == Some("automated") {
            self.manual_copy(&snapshot).await?
        } else {
            snapshot.clone()
        };
        let shared_id = shared.snapshot_identifier().unwrap_or(&item.key).to_string();
        self.share(&shared_id, shared.cluster_identifier(), true).await?;
        self.read.lock().expect("reads").insert(item.key.clone());
        let cluster = snapshot.cluster_identifier().unwrap_or_default().to_string();
        let mut attributes = BTreeMap::from([
            ("region".to_string(), self.region.clone()),
            ("arn".to_string(), snapshot_arn(&snapshot, &self.region, &self.account)),
            (
                "start-time".to_string(),
                escrow_sync_aws::time::fmt_time(snapshot.snapshot_create_time()),
            ),
            ("cluster".to_string(), cluster.clone()),
            ("shared-cluster".to_string(), shared.cluster_identifier().unwrap_or(&cluster).into()),
        ]);
        if let Some(t) = snapshot.node_type() {
            attributes.insert("node-type".into(), t.into());
        }
        if let Some(n) = snapshot.number_of_nodes() {
            attributes.insert("number-of-nodes".into(), n.to_string());
        }
        Ok(Payload::Reference(
            ServerSideRef::new("redshift", &self.region, shared_id, &item.fingerprint)
                .with_owner(Some(self.account.clone()))
                .with_attributes(attributes),
        ))
    }

    fn finishes_skipped(&self) -> bool {
        self.unshare_after_copy
    }

    /// Revokes the share once escrow holds the copy: the one this run made,
    /// or, for an item escrow already held, one an interrupted run left
    /// (see `RedshiftSnapshotSource::unshare_left`; nothing is changed
    /// when none is left).
    async fn finish(&self, item: &Item) -> Result<()> {
        if !self.unshare_after_copy {
            return Ok(());
        }
        if !self.read.lock().expect("reads").contains(&item.key) {
            return self.unshare_left(&item.key).await;
        }
        // What read shared: the snapshot, or the manual copy of an
        // automated one (deterministic name, so no state is needed).
        let snapshot = self.find(&item.key).await?;
        let automated = match &snapshot {
            Some(s) => s.snapshot_type() == Some("automated"),
            // Expired since it was read: automated ones are named rs:...
            None => item.key.starts_with("rs:"),
        };
        let shared = if automated { manual_copy_id(&item.key) } else { item.key.clone() };
        let cluster = snapshot.as_ref().and_then(|s| s.cluster_identifier());
        self.share(&shared, cluster, false).await?;
        self.read.lock().expect("reads").remove(&item.key);
        Ok(())
    }

    async fn assess(&self, item: &Item) -> Result<Option<String>> {
        let snapshot = self.snapshot(&item.key).await?;
        self.check_encryption(&snapshot).await?;
        if snapshot.snapshot_type() == Some("automated") {
            let copy_id = manual_copy_id(&item.key);
            return Ok(match self.find(&copy_id).await? {
                Some(_) => Some(format!("automated: shared through its manual copy {copy_id}")),
                None => Some("automated: copied to a manual snapshot in the primary first".into()),
            });
        }
        Ok(None)
    }
}
