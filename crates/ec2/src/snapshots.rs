//! EBS snapshots: source (share, unshare) and sink (copy, wait, tag).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, OperationType, ResourceType, SnapshotAttributeName, SnapshotState, Tag,
    TagSpecification,
};
use futures::StreamExt;

use escrow_sync_aws::sdk_error;
pub(crate) use escrow_sync_aws::time::{fmt_time, system_time};
use escrow_sync_core::poll::{Polled, Polling, poll_until};
use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Receipt, Result, Scope, ServerSideRef,
    Sink, Source,
};

const GIB: u64 = 1 << 30;

/// The snapshots a DescribeSnapshots paginator yields, as a stream; errors
/// name `resource`.
fn paged(
    items: aws_sdk_ec2::operation::describe_snapshots::paginator::DescribeSnapshotsPaginatorItems,
    resource: String,
) -> impl futures::Stream<Item = Result<aws_sdk_ec2::types::Snapshot>> {
    futures::stream::unfold((items.send(), resource), |(mut p, resource)| async move {
        let next = p.next().await?;
        let item = next.map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", resource.clone()));
        Some((item, (p, resource)))
    })
}

/// How long a copy just made may stay invisible before a wait takes it for
/// gone: EC2 is eventually consistent, and DescribeSnapshots /
/// DescribeImages may answer `InvalidSnapshot.NotFound` /
/// `InvalidAMIID.NotFound` for a moment after the create call.
pub(crate) const NOT_FOUND_GRACE: Duration = Duration::from_secs(120);

/// Whether an EC2 error code says the resource does not exist. EC2 answers
/// these with HTTP 400 and codes ending in `.NotFound`, which the shared
/// classification takes for a permanent failure.
pub(crate) fn ec2_missing(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.ends_with(".NotFound") || c == "InvalidAMIID.Unavailable")
}

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

/// Fails when `key` is an AWS-managed key (aws/ebs), which cannot be shared
/// with another account; the error (kind Unsupported) says what to
/// configure. `resource` names what is encrypted with it.
pub(crate) async fn check_key(
    kms: &aws_sdk_kms::Client,
    key: &str,
    resource: &str,
    escrow_account: &str,
) -> Result<()> {
    let out = kms
        .describe_key()
        .key_id(key)
        .send()
        .await
        .map_err(|e| sdk_error(e, "kms:DescribeKey", format!("key {key} of {resource}")))?;
    let manager = out.key_metadata.and_then(|m| m.key_manager).map(|m| m.as_str().to_string());
    if manager.as_deref() == Some("AWS") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "share",
            resource,
            format!(
                "encrypted with the AWS-managed key {key} (aws/ebs), which cannot be shared \
                 with another account: set reencrypt_key_id to a customer-managed key in the \
                 primary whose policy grants kms:Decrypt and kms:CreateGrant to the escrow \
                 account {escrow_account}"
            ),
        ));
    }
    Ok(())
}

/// Adds (or removes) `escrow_account` to snapshot `id`'s
/// createVolumePermission, in the OperationType + UserIds form (both forms
/// are AWS's; this one every implementation honours).
pub(crate) async fn share_snapshot(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    escrow_account: &str,
    add: bool,
    resource: &str,
) -> Result<()> {
    ec2.modify_snapshot_attribute()
        .snapshot_id(id)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(if add { OperationType::Add } else { OperationType::Remove })
        .user_ids(escrow_account)
        .send()
        .await
        .map_err(|e| sdk_error(e, "ec2:ModifySnapshotAttribute", resource))?;
    Ok(())
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
        paged(req.into_paginator().items(), Source::describe(self))
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

/// Every escrow-sync copy the account of `ec2` holds (any state): its own
/// snapshots carrying [`escrow_sync_core::tags::SOURCE_SNAPSHOT_ID`].
pub(crate) async fn escrow_copies(
    ec2: &aws_sdk_ec2::Client,
) -> Result<Vec<aws_sdk_ec2::types::Snapshot>> {
    ec2.describe_snapshots()
        .owner_ids("self")
        .filters(Filter::builder().name("tag-key").values(tags::SOURCE_SNAPSHOT_ID).build())
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", "escrow snapshots"))
}

/// Polls `copy_id` (from 1 s, doubling to `max_poll`) until it completes;
/// fails when it ends in error (with the service's message), `timeout`
/// passes, or it stays unknown longer than [`NOT_FOUND_GRACE`] (kind
/// NotFound: deleted meanwhile). `resource` names it in errors.
pub(crate) async fn wait_snapshot(
    ec2: &aws_sdk_ec2::Client,
    copy_id: &str,
    timeout: Duration,
    max_poll: Duration,
    resource: &str,
) -> Result<aws_sdk_ec2::types::Snapshot> {
    let start = tokio::time::Instant::now();
    let grace = timeout.min(NOT_FOUND_GRACE);
    let named = format!("{resource} ({copy_id})");
    let polling = Polling::new("ec2:CopySnapshot", &named)
        .with_max_pause(max_poll)
        .with_timeout(timeout)
        .with_deadline_error(ErrorKind::Failed, "not complete", "the next run waits for it");
    poll_until(&polling, || async {
        let snapshot = match ec2.describe_snapshots().snapshot_ids(copy_id).send().await {
            Ok(out) => out.snapshots.unwrap_or_default().into_iter().next(),
            // A new snapshot may not be visible yet (eventual consistency).
            Err(e) if ec2_missing(e.code()) => None,
            Err(e) => return Err(sdk_error(e, "ec2:DescribeSnapshots", &named)),
        };
        if snapshot.is_none() && start.elapsed() >= grace {
            return Err(Error::new(
                ErrorKind::NotFound,
                "ec2:CopySnapshot",
                &named,
                format!(
                    "the copy is not found after {grace:?}: it was deleted; the next run \
                     copies it again"
                ),
            ));
        }
        match snapshot {
            Some(s) if s.state() == Some(&SnapshotState::Completed) => Ok(Polled::Done(s)),
            Some(s) if s.state() == Some(&SnapshotState::Error) => Err(Error::new(
                ErrorKind::Failed,
                "ec2:CopySnapshot",
                &named,
                format!(
                    "the copy ended in state error: {}; the next run copies it again",
                    s.state_message().unwrap_or("no message")
                ),
            )),
            Some(s) => Ok(Polled::Pending(s.state().map_or("unknown", |s| s.as_str()).to_string())),
            None => Ok(Polled::Pending("not visible yet".into())),
        }
    })
    .await
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
        paged(pages, "escrow snapshots".to_string())
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
        Ok(key_problem(id, copy.encrypted(), copy.kms_key_id(), self.kms_key_id.as_deref())
            .into_iter()
            .collect())
    }
}

/// What is wrong with a copy's encryption, given the escrow key configured:
/// none when it is encrypted with that key (an ARN or a key id; an alias
/// cannot be compared here and is taken as given).
pub(crate) fn key_problem(
    id: &str,
    encrypted: Option<bool>,
    actual: Option<&str>,
    wanted: Option<&str>,
) -> Option<String> {
    if encrypted != Some(true) {
        return Some(format!("escrow copy {id} is not encrypted"));
    }
    let wanted = wanted?;
    if wanted.starts_with("alias/") || wanted.contains(":alias/") {
        return None;
    }
    let id_of = |k: &str| k.rsplit('/').next().unwrap_or(k).to_string();
    match actual {
        Some(a) if a == wanted || id_of(a) == id_of(wanted) => None,
        other => Some(format!(
            "escrow copy {id} is encrypted with {}, not the escrow key {wanted}",
            other.unwrap_or("an unknown key")
        )),
    }
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
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
