//! Escrow's copies of EBS snapshots as a sink: copy with the escrow key,
//! wait, provenance tags, audit, retention.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, SnapshotState, Tag, TagSpecification};
use futures::StreamExt;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Receipt, Result, Scope, Sink,
};

use crate::api::*;
use crate::lock::{self, SnapshotLock};

/// The provenance tags of an escrow copy of `snapshot_id`.
pub fn provenance_tags(
    snapshot_id: &str,
    source_account: &str,
    region: &str,
    source_start_time: &str,
    copied_at: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (tags::SOURCE_SNAPSHOT_ID.to_string(), snapshot_id.to_string()),
        (tags::SOURCE_ACCOUNT.to_string(), source_account.to_string()),
        (tags::SOURCE_ARN.to_string(), format!("arn:aws:ec2:{region}::snapshot/{snapshot_id}")),
        (tags::SOURCE_START_TIME.to_string(), source_start_time.to_string()),
        (tags::COPIED_AT.to_string(), copied_at.to_string()),
    ])
}

/// Escrow copies by the source snapshot they copy, newest first.
type CopiesBySource = BTreeMap<String, Vec<aws_sdk_ec2::types::Snapshot>>;

/// The escrow account's copies of EBS snapshots, encrypted with the escrow
/// key, found by their provenance tag.
#[derive(Debug, Clone)]
pub struct EbsSnapshotSink {
    ec2: aws_sdk_ec2::Client,
    region: String,
    kms_key_id: Option<String>,
    job: Option<String>,
    lock: Option<SnapshotLock>,
    timeout: Duration,
    max_poll: Duration,
    /// Every escrow-sync copy escrow held when first asked after the last
    /// [`Sink::list`] (any state), by source: one listing per run instead of
    /// one query per item.
    known: std::sync::Arc<tokio::sync::Mutex<Option<std::sync::Arc<CopiesBySource>>>>,
    /// Sources this sink has tried to copy in this run: a retry asks EC2
    /// afresh, as the listing cannot know the copy the first try started.
    tried: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl EbsSnapshotSink {
    /// Copies into the escrow account of `ec2` (escrow credentials) in
    /// `region`.
    pub fn from_client(ec2: aws_sdk_ec2::Client, region: impl Into<String>) -> Self {
        EbsSnapshotSink {
            ec2,
            region: region.into(),
            kms_key_id: None,
            job: None,
            lock: None,
            timeout: Duration::from_secs(12 * 3600),
            max_poll: Duration::from_secs(60),
            known: Default::default(),
            tried: Default::default(),
        }
    }

    /// Every escrow-sync copy escrow holds (any state), by source, listed
    /// once after each [`Sink::list`] (that is, once per run).
    async fn known(&self) -> Result<std::sync::Arc<CopiesBySource>> {
        let mut known = self.known.lock().await;
        if let Some(k) = known.as_ref() {
            return Ok(k.clone());
        }
        let fresh = std::sync::Arc::new(
            async {
                let all = escrow_copies(&self.ec2).await?;
                let mut by_source: BTreeMap<String, Vec<aws_sdk_ec2::types::Snapshot>> =
                    BTreeMap::new();
                for s in all {
                    if let Some(source) = tag(s.tags(), tags::SOURCE_SNAPSHOT_ID) {
                        by_source.entry(source.to_string()).or_default().push(s);
                    }
                }
                for copies in by_source.values_mut() {
                    copies.sort_by_key(|s| std::cmp::Reverse(fmt_time(s.start_time())));
                }
                Ok::<_, Error>(by_source)
            }
            .await?,
        );
        *known = Some(fresh.clone());
        Ok(fresh)
    }

    /// The escrow copies of `source_id` (any state), newest first: from the
    /// one listing, unless this run already tried to copy it.
    async fn copies_known(&self, source_id: &str) -> Result<Vec<aws_sdk_ec2::types::Snapshot>> {
        let retry = !self.tried.lock().expect("tried").insert(source_id.to_string());
        if retry {
            return self.copies_of(source_id).await;
        }
        Ok(self.known().await?.get(source_id).cloned().unwrap_or_default())
    }

    /// Encrypts every copy with this escrow key (else the escrow account's
    /// default EBS key).
    pub fn with_kms_key_id(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }

    /// Tags every new copy with [`escrow_sync_core::tags::JOB`] = `job`, so
    /// that `prune` tells the job's copies from escrow's records alone.
    pub fn with_job(mut self, job: Option<String>) -> Self {
        self.job = job;
        self
    }

    /// Keeps every copy under EBS Snapshot Lock as `lock` says
    /// ([`Retained::keep_locked`](escrow_sync_core::Retained::keep_locked)
    /// locks and renews; `verify` reports a copy without a lock in force as
    /// `unprotected`). `None` (the default): copies are not locked.
    pub fn with_lock(mut self, lock: Option<SnapshotLock>) -> Self {
        self.lock = lock;
        self
    }

    /// How long to wait for one copy, and the longest pause between polls
    /// (defaults 12 hours and 60 s; polls start at 1 s and double).
    pub fn with_wait(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.timeout = timeout;
        self.max_poll = max_poll.max(Duration::from_millis(1));
        self
    }

    fn resource(&self, source_id: &str) -> String {
        format!("escrow copy of ebs snapshot {source_id} ({})", self.region)
    }

    /// The escrow copies of `source_id` (any state), newest first.
    async fn copies_of(&self, source_id: &str) -> Result<Vec<aws_sdk_ec2::types::Snapshot>> {
        let mut out: Vec<_> = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::SOURCE_SNAPSHOT_ID))
                    .values(source_id)
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", self.resource(source_id)))?;
        out.sort_by_key(|s| std::cmp::Reverse(fmt_time(s.start_time())));
        Ok(out)
    }

    async fn wait(&self, source_id: &str, copy_id: &str) -> Result<aws_sdk_ec2::types::Snapshot> {
        wait_snapshot(&self.ec2, copy_id, self.timeout, self.max_poll, &self.resource(source_id))
            .await
    }
}

#[async_trait]
impl Sink for EbsSnapshotSink {
    fn describe(&self) -> String {
        format!("ebs://escrow/{}", self.region)
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        // A new run: what escrow holds is listed afresh.
        if let Ok(mut known) = self.known.try_lock() {
            *known = None;
        }
        self.tried.lock().expect("tried").clear();
        let prefix = scope.prefix.clone();
        let pages = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(Filter::builder().name("tag-key").values(tags::SOURCE_SNAPSHOT_ID).build())
            .filters(Filter::builder().name("status").values("completed").build())
            .into_paginator()
            .items();
        paged_snapshots(pages, "escrow snapshots".to_string())
            .filter_map(move |r| {
                let prefix = prefix.clone();
                async move {
                    match r {
                        Ok(s) => {
                            let source = s
                                .tags()
                                .iter()
                                .find(|t| t.key() == Some(tags::SOURCE_SNAPSHOT_ID))
                                .and_then(|t| t.value())?
                                .to_string();
                            source.starts_with(&prefix).then(|| {
                                Ok(Item::new(
                                    &source,
                                    ItemKind::Snapshot,
                                    s.volume_size().unwrap_or(0).max(0) as u64 * GIB,
                                    &source,
                                ))
                            })
                        }
                        Err(e) => Some(Err(e)),
                    }
                }
            })
            .boxed()
    }

    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        let Payload::Reference(source) = payload else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "ec2:CopySnapshot",
                self.resource(&item.key),
                "an EBS snapshot is copied by reference only",
            ));
        };
        // A copy an interrupted run started: wait for it instead of copying
        // again. Copies that ended in error are left and a new one starts.
        let existing =
            self.copies_known(&item.key).await?.into_iter().find(|s| {
                matches!(s.state(), Some(SnapshotState::Pending | SnapshotState::Completed))
            });
        let copy_id = match existing.and_then(|s| s.snapshot_id().map(str::to_string)) {
            Some(id) => id,
            None => {
                let mut tags = provenance_tags(
                    &item.key,
                    source.owner.as_deref().unwrap_or_default(),
                    &source.container,
                    source.attributes.get("start-time").map(String::as_str).unwrap_or_default(),
                    &escrow_sync_aws::now_rfc3339(),
                );
                let lineage = source.attributes.get("lineage").unwrap_or(&item.key);
                tags.insert(tags::LINEAGE.to_string(), lineage.clone());
                if let Some(job) = &self.job {
                    tags.insert(escrow_sync_core::tags::JOB.to_string(), job.clone());
                }
                let spec = TagSpecification::builder()
                    .resource_type(ResourceType::Snapshot)
                    .set_tags(Some(
                        tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect(),
                    ))
                    .build();
                self.ec2
                    .copy_snapshot()
                    // The snapshot shared: the source, or its re-encrypted copy.
                    .source_snapshot_id(&source.key)
                    .source_region(&source.container)
                    .encrypted(true)
                    .set_kms_key_id(self.kms_key_id.clone())
                    .description(format!(
                        "escrow-sync copy of {} from account {}",
                        item.key,
                        source.owner.as_deref().unwrap_or("?")
                    ))
                    .tag_specifications(spec)
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "ec2:CopySnapshot", self.resource(&item.key)))?
                    .snapshot_id
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Failed,
                            "ec2:CopySnapshot",
                            self.resource(&item.key),
                            "no snapshot id in the answer",
                        )
                    })?
            }
        };
        let done = self.wait(&item.key, &copy_id).await?;
        Ok(Receipt::new(
            done.volume_size().unwrap_or(0).max(0) as u64 * GIB,
            done.snapshot_id().map(str::to_string),
        ))
    }

    fn audits(&self) -> bool {
        true
    }

    async fn audit(&self, item: &Item) -> Result<Vec<String>> {
        let copies = self.known().await?.get(&item.key).cloned().unwrap_or_default();
        let Some(copy) = copies.iter().find(|s| s.state() == Some(&SnapshotState::Completed))
        else {
            return Ok(vec!["no completed escrow copy".to_string()]);
        };
        let id = copy.snapshot_id().unwrap_or("?");
        let mut problems: Vec<String> =
            key_problem(id, copy.encrypted(), copy.kms_key_id(), self.kms_key_id.as_deref())
                .into_iter()
                .collect();
        if let Some(want) = &self.lock {
            let ids = [id.to_string()];
            let locks = lock::describe_locks(&self.ec2, &ids, &self.resource(&item.key)).await?;
            let what = format!("escrow copy {id}");
            problems.extend(lock::lock_problem(&what, locks.get(id), want, lock::now()));
        }
        Ok(problems)
    }
}

#[async_trait]
impl escrow_sync_core::Retained for EbsSnapshotSink {
    fn describe(&self) -> String {
        Sink::describe(self)
    }

    async fn copies(&self) -> Result<Vec<escrow_sync_core::EscrowCopy>> {
        let all: Vec<aws_sdk_ec2::types::Snapshot> = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(Filter::builder().name("tag-key").values(tags::SOURCE_SNAPSHOT_ID).build())
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", "escrow snapshots"))?;
        Ok(all
            .iter()
            .filter_map(|s| {
                let source = tag(s.tags(), tags::SOURCE_SNAPSHOT_ID)?.to_string();
                Some(escrow_sync_core::EscrowCopy {
                    id: s.snapshot_id()?.to_string(),
                    lineage: tag(s.tags(), tags::LINEAGE).unwrap_or(&source).to_string(),
                    created: tag(s.tags(), tags::SOURCE_START_TIME).unwrap_or_default().to_string(),
                    complete: s.state() == Some(&SnapshotState::Completed),
                    copied: s
                        .start_time()
                        .map(|t| fmt_time(Some(t)))
                        .or_else(|| tag(s.tags(), tags::COPIED_AT).map(str::to_string))
                        .filter(|t| !t.is_empty()),
                    job: tag(s.tags(), escrow_sync_core::tags::JOB).map(str::to_string),
                    source,
                })
            })
            .collect())
    }

    /// The copies a snapshot lock in force keeps (whatever this sink's own
    /// `lock` says: a lock set earlier holds).
    async fn locked(
        &self,
        copies: &[escrow_sync_core::EscrowCopy],
    ) -> Result<BTreeMap<String, String>> {
        let ids: Vec<String> = copies.iter().map(|c| c.id.clone()).collect();
        let now = lock::now();
        Ok(lock::describe_locks(&self.ec2, &ids, "escrow snapshots")
            .await?
            .into_iter()
            .filter(|(_, l)| l.in_force(now))
            .map(|(id, l)| (id, l.reason()))
            .collect())
    }

    /// Locks the complete `copies` without a lock in force and renews the
    /// locks lapsing within the window (nothing without a `lock`).
    async fn keep_locked(
        &self,
        copies: &[escrow_sync_core::EscrowCopy],
    ) -> Result<escrow_sync_core::LockUpkeep> {
        let Some(want) = &self.lock else {
            return Ok(Default::default());
        };
        let ids: Vec<String> = copies.iter().filter(|c| c.complete).map(|c| c.id.clone()).collect();
        lock::keep_snapshots_locked(&self.ec2, want, &ids, lock::now(), "escrow snapshots").await
    }

    async fn delete_copy(&self, copy: &escrow_sync_core::EscrowCopy) -> Result<()> {
        self.ec2
            .delete_snapshot()
            .snapshot_id(&copy.id)
            .send()
            .await
            .map_err(|e| sdk_error(e, "ec2:DeleteSnapshot", self.resource(&copy.source)))?;
        Ok(())
    }
}
