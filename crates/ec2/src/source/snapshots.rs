//! The primary's EBS snapshots as a source: selection, sharing with
//! escrow (re-encrypted under a customer key where the AWS-managed key
//! prevents it), and unsharing once escrow holds the copy.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, SnapshotState, Tag, TagSpecification};
use futures::StreamExt;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Result, Scope, ServerSideRef, Source,
};

use crate::api::*;

/// The primary's EBS snapshots, selected by tags or ids, shared with the
/// escrow account as they are read and unshared once copied.
#[derive(Debug, Clone)]
pub struct EbsSnapshotSource {
    ec2: aws_sdk_ec2::Client,
    kms: aws_sdk_kms::Client,
    region: String,
    account: String,
    escrow_account: String,
    tags: BTreeMap<String, String>,
    ids: Vec<String>,
    unshare_after_copy: bool,
    reencrypt_key_id: Option<String>,
    wait: (Duration, Duration),
    shared: std::sync::Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    /// What an earlier run left shared, asked once after each listing.
    left_shared: std::sync::Arc<tokio::sync::Mutex<Option<std::sync::Arc<SharedByItem>>>>,
}

/// Snapshots shared with the escrow account, by the item they stand for.
type SharedByItem = BTreeMap<String, Vec<String>>;

impl EbsSnapshotSource {
    /// Snapshots owned by `account` in `region`, read with the reader
    /// role's `ec2` and `kms` clients, shared with `escrow_account`.
    pub fn from_client(
        ec2: aws_sdk_ec2::Client,
        kms: aws_sdk_kms::Client,
        region: impl Into<String>,
        account: impl Into<String>,
        escrow_account: impl Into<String>,
    ) -> Self {
        EbsSnapshotSource {
            ec2,
            kms,
            region: region.into(),
            account: account.into(),
            escrow_account: escrow_account.into(),
            tags: BTreeMap::new(),
            ids: Vec::new(),
            unshare_after_copy: true,
            reencrypt_key_id: None,
            wait: (Duration::from_secs(12 * 3600), Duration::from_secs(60)),
            shared: Default::default(),
            left_shared: Default::default(),
        }
    }

    /// The primary's snapshots shared with the escrow account now, by the
    /// item they stand for (a re-encrypted copy stands for its original):
    /// one paginated DescribeSnapshots (RestorableByUserIds), asked once.
    async fn left_shared(&self) -> Result<std::sync::Arc<SharedByItem>> {
        let mut left = self.left_shared.lock().await;
        if let Some(l) = left.as_ref() {
            return Ok(l.clone());
        }
        let fresh = std::sync::Arc::new(
            async {
                let shared: Vec<aws_sdk_ec2::types::Snapshot> = self
                    .ec2
                    .describe_snapshots()
                    .owner_ids("self")
                    .restorable_by_user_ids(&self.escrow_account)
                    .into_paginator()
                    .items()
                    .send()
                    .try_collect()
                    .await
                    .map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", Source::describe(self)))?;
                let mut by_item: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for s in &shared {
                    let Some(id) = s.snapshot_id() else { continue };
                    let item = tag(s.tags(), tags::REENCRYPTED_FROM).unwrap_or(id);
                    by_item.entry(item.to_string()).or_default().push(id.to_string());
                }
                Ok::<_, Error>(by_item)
            }
            .await?,
        );
        *left = Some(fresh.clone());
        Ok(fresh)
    }

    /// Re-encrypt a snapshot under the AWS-managed key (which cannot be
    /// shared) with this customer key of the primary, whose policy grants
    /// the escrow account kms:Decrypt and kms:CreateGrant: a CopySnapshot in
    /// the primary, tagged [`escrow_sync_core::tags::REENCRYPTED_FROM`], reused by later runs,
    /// is what gets shared.
    pub fn with_reencrypt_key_id(mut self, key: Option<String>) -> Self {
        self.reencrypt_key_id = key;
        self
    }

    /// How long to wait for a re-encryption copy, and the longest pause
    /// between polls (defaults 12 hours and 60 s).
    pub fn with_wait(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.wait = (timeout, max_poll.max(Duration::from_millis(1)));
        self
    }

    /// The primary's re-encrypted copy of `id` under `key`: an existing one
    /// (completed or in progress), else a new CopySnapshot; waited for.
    async fn reencrypted(&self, id: &str, key: &str) -> Result<String> {
        let existing: Vec<aws_sdk_ec2::types::Snapshot> = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::REENCRYPTED_FROM))
                    .values(id)
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", self.resource(id)))?;
        let reusable = existing.into_iter().find(|s| {
            s.kms_key_id() == Some(key)
                && matches!(s.state(), Some(SnapshotState::Pending | SnapshotState::Completed))
        });
        let copy_id = match reusable.and_then(|s| s.snapshot_id().map(str::to_string)) {
            Some(c) => c,
            None => self
                .ec2
                .copy_snapshot()
                .source_snapshot_id(id)
                .source_region(&self.region)
                .encrypted(true)
                .kms_key_id(key)
                .description(format!("escrow-sync re-encryption of {id} for the escrow account"))
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Snapshot)
                        .tags(Tag::builder().key(tags::REENCRYPTED_FROM).value(id).build())
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk_error(e, "ec2:CopySnapshot", self.resource(id)))?
                .snapshot_id
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Failed,
                        "ec2:CopySnapshot",
                        self.resource(id),
                        "no snapshot id in the answer",
                    )
                })?,
        };
        let (timeout, max_poll) = self.wait;
        wait_snapshot(&self.ec2, &copy_id, timeout, max_poll, &self.resource(id)).await?;
        Ok(copy_id)
    }

    /// Only snapshots carrying all these tags.
    pub fn with_tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.tags = tags;
        self
    }

    /// Only these snapshot ids.
    pub fn with_ids(mut self, ids: Vec<String>) -> Self {
        self.ids = ids;
        self
    }

    /// Remove the share once the escrow copy is complete (default true).
    pub fn with_unshare_after_copy(mut self, on: bool) -> Self {
        self.unshare_after_copy = on;
        self
    }

    fn resource(&self, id: &str) -> String {
        format!("ebs snapshot {id} (account {}, {})", self.account, self.region)
    }

    async fn snapshot(&self, id: &str) -> Result<aws_sdk_ec2::types::Snapshot> {
        self.ec2
            .describe_snapshots()
            .snapshot_ids(id)
            .send()
            .await
            .map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", self.resource(id)))?
            .snapshots
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::new(ErrorKind::NotFound, "ec2:DescribeSnapshots", self.resource(id), "")
            })
    }

    async fn check_key(&self, id: &str, key: &str) -> Result<()> {
        check_key(&self.kms, key, &self.resource(id), &self.escrow_account).await
    }

    async fn share(&self, id: &str, add: bool) -> Result<()> {
        share_snapshot(&self.ec2, id, &self.escrow_account, add, &self.resource(id)).await
    }
}

#[async_trait]
impl Source for EbsSnapshotSource {
    fn describe(&self) -> String {
        format!("ebs://{}/{}", self.account, self.region)
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        // A new run: what is left shared is asked afresh.
        if let Ok(mut left) = self.left_shared.try_lock() {
            *left = None;
        }
        let mut req = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(Filter::builder().name("status").values("completed").build());
        for (k, v) in &self.tags {
            req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
        }
        for id in &self.ids {
            req = req.snapshot_ids(id);
        }
        let prefix = scope.prefix.clone();
        paged_snapshots(req.into_paginator().items(), Source::describe(self))
            .filter_map(move |r| {
                let prefix = prefix.clone();
                async move {
                    match r {
                        // The primary's own re-encrypted copies (made for
                        // this job's snapshots or AMIs) are no items of their
                        // own: escrow would hold the same data twice.
                        Ok(s) if tag(s.tags(), tags::REENCRYPTED_FROM).is_some() => None,
                        Ok(s) => {
                            let id = s.snapshot_id()?.to_string();
                            id.starts_with(&prefix).then(|| {
                                Ok(Item::new(
                                    &id,
                                    ItemKind::Snapshot,
                                    s.volume_size().unwrap_or(0).max(0) as u64 * GIB,
                                    &id,
                                )
                                .with_lineage(s.volume_id().map(str::to_string))
                                .with_modified(s.start_time().and_then(system_time)))
                            })
                        }
                        Err(e) => Some(Err(e)),
                    }
                }
            })
            .boxed()
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        let snapshot = self.snapshot(&item.key).await?;
        let mut shared = item.key.clone();
        if snapshot.encrypted() == Some(true)
            && let Some(key) = snapshot.kms_key_id()
        {
            match (self.check_key(&item.key, key).await, &self.reencrypt_key_id) {
                (Ok(()), _) => {}
                (Err(e), Some(customer)) if e.kind() == ErrorKind::Unsupported => {
                    shared = self.reencrypted(&item.key, customer).await?;
                }
                (Err(e), _) => return Err(e),
            }
        }
        self.share(&shared, true).await?;
        self.shared.lock().expect("shares").insert(item.key.clone(), shared.clone());
        let attributes = BTreeMap::from([
            ("region".to_string(), self.region.clone()),
            ("start-time".to_string(), fmt_time(snapshot.start_time())),
            ("volume-size-gib".to_string(), snapshot.volume_size().unwrap_or(0).to_string()),
            ("lineage".to_string(), snapshot.volume_id().unwrap_or(&item.key).to_string()),
        ]);
        Ok(Payload::Reference(
            ServerSideRef::new("ec2", &self.region, &shared, &item.fingerprint)
                .with_owner(Some(self.account.clone()))
                .with_attributes(attributes),
        ))
    }

    fn assesses(&self) -> bool {
        true
    }

    async fn assess(&self, item: &Item) -> Result<Option<String>> {
        let snapshot = self.snapshot(&item.key).await?;
        let Some(key) = snapshot.kms_key_id().filter(|_| snapshot.encrypted() == Some(true)) else {
            return Ok(None);
        };
        match (self.check_key(&item.key, key).await, &self.reencrypt_key_id) {
            (Ok(()), _) => Ok(None),
            (Err(e), Some(customer)) if e.kind() == ErrorKind::Unsupported => Ok(Some(format!(
                "needs re-encryption: under the AWS-managed key {key}, copied in the primary \
                 under {customer} first"
            ))),
            (Err(e), _) => Err(e),
        }
    }

    fn finishes_skipped(&self) -> bool {
        self.unshare_after_copy
    }

    /// Removes the share once the copy is complete: the one this run made,
    /// or, for an item escrow already held, one an interrupted run left
    /// (nothing is changed when none is left).
    async fn finish(&self, item: &Item) -> Result<()> {
        if !self.unshare_after_copy {
            return Ok(());
        }
        let read_now = self.shared.lock().expect("shares").remove(&item.key);
        let ids = match read_now {
            Some(shared) => vec![shared],
            None => self.left_shared().await?.get(&item.key).cloned().unwrap_or_default(),
        };
        for id in ids {
            self.share(&id, false).await?;
        }
        Ok(())
    }
}
