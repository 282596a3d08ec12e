//! Escrow's copies of AMIs as a sink: CopyImage with a ClientToken and the
//! escrow key, wait, tag the copy and its snapshots, audit, retention.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, Image, ImageState, ResourceType, Snapshot, Tag, TagSpecification,
};
use futures::StreamExt;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, EscrowCopy, Item, ItemKind, ItemStream, Payload, Receipt, Result, Retained,
    Scope, ServerSideRef, Sink,
};

use crate::api::*;
use crate::lock::{self, SnapshotLock};

/// The escrow account's copies of AMIs (with their snapshots), encrypted
/// with the escrow key, found by their provenance tag.
#[derive(Debug, Clone)]
pub struct AmiSink {
    ec2: aws_sdk_ec2::Client,
    region: String,
    kms_key_id: Option<String>,
    job: Option<String>,
    lock: Option<SnapshotLock>,
    timeout: Duration,
    max_poll: Duration,
}

impl AmiSink {
    /// Copies into the escrow account of `ec2` (escrow credentials) in
    /// `region`.
    pub fn from_client(ec2: aws_sdk_ec2::Client, region: impl Into<String>) -> Self {
        AmiSink {
            ec2,
            region: region.into(),
            kms_key_id: None,
            job: None,
            lock: None,
            timeout: Duration::from_secs(12 * 3600),
            max_poll: Duration::from_secs(60),
        }
    }

    /// Encrypts every copy's snapshots with this escrow key (else the escrow
    /// account's default EBS key). Give its ARN or key id: verify compares
    /// it with the snapshots' key ARNs (an alias is taken as given).
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

    /// Keeps every copy's backing snapshots under EBS Snapshot Lock as
    /// `lock` says and every copy under deregistration protection (with the
    /// 24-hour cooldown in compliance mode):
    /// [`Retained::keep_locked`] sets and renews them; `verify` reports a
    /// copy without them as `unprotected`. `None` (the default): neither.
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
        format!("escrow copy of ami {source_id} ({})", self.region)
    }

    /// Every escrow image escrow-sync made (any state), or only the copies
    /// of `source_id`; newest first.
    async fn copies_of(&self, source_id: Option<&str>) -> Result<Vec<Image>> {
        let filter = match source_id {
            Some(id) => Filter::builder().name(format!("tag:{}", tags::SOURCE_IMAGE_ID)).values(id),
            None => Filter::builder().name("tag-key").values(tags::SOURCE_IMAGE_ID),
        };
        let resource = source_id.map_or_else(|| Retained::describe(self), |id| self.resource(id));
        let mut out: Vec<Image> = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(filter.build())
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_error(e, "ec2:DescribeImages", resource))?;
        out.sort_by_key(|i| std::cmp::Reverse(i.creation_date().unwrap_or_default().to_string()));
        Ok(out)
    }

    /// The newest available copy of `source_id`.
    async fn complete_copy(&self, source_id: &str) -> Result<Option<Image>> {
        Ok(self
            .copies_of(Some(source_id))
            .await?
            .into_iter()
            .find(|i| state_is(i, &[ImageState::Available])))
    }

    /// Starts the copy of the shared image `source`: encrypted with the
    /// escrow key, tagged with its provenance (image and snapshots) at
    /// creation. `attempt` counts the earlier copies of this source (failed
    /// ones): it makes the ClientToken, so a request retried or resumed
    /// returns the copy it started, while a copy after a failed one is new
    /// (the same token would return the failed image again).
    async fn start_copy(
        &self,
        item: &Item,
        source: &ServerSideRef,
        attempt: usize,
    ) -> Result<String> {
        let attr = |k: &str| source.attributes.get(k).map(String::as_str).unwrap_or_default();
        let lineage = Some(attr("lineage")).filter(|l| !l.is_empty()).unwrap_or(&item.key);
        let mut tags = BTreeMap::from([
            (tags::SOURCE_IMAGE_ID, item.key.clone()),
            (tags::SOURCE_ACCOUNT, source.owner.clone().unwrap_or_default()),
            (tags::SOURCE_ARN, format!("arn:aws:ec2:{}::image/{}", source.container, item.key)),
            (tags::SOURCE_START_TIME, attr("start-time").to_string()),
            (tags::COPIED_AT, escrow_sync_aws::now_rfc3339()),
            (tags::LINEAGE, lineage.to_string()),
        ]);
        if let Some(job) = &self.job {
            tags.insert(escrow_sync_core::tags::JOB, job.clone());
        }
        let spec = |kind| {
            TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(
                    tags.iter().map(|(k, v)| Tag::builder().key(*k).value(v).build()).collect(),
                ))
                .build()
        };
        let suffix = if attempt == 0 { String::new() } else { format!("-retry{attempt}") };
        self.ec2
            .copy_image()
            // The image shared: the source, or its re-encrypted copy.
            .source_image_id(&source.key)
            .source_region(&source.container)
            .name(image_name("escrow", attr("name"), &item.key, &suffix))
            .description(format!(
                "escrow-sync copy of {} from account {}",
                item.key,
                source.owner.as_deref().unwrap_or("?")
            ))
            .encrypted(true)
            .set_kms_key_id(self.kms_key_id.clone())
            .client_token(format!("escrow-sync-{}-{attempt}", item.key))
            .tag_specifications(spec(ResourceType::Image))
            .tag_specifications(spec(ResourceType::Snapshot))
            .send()
            .await
            .map_err(|e| sdk_error(e, "ec2:CopyImage", self.resource(&item.key)))?
            .image_id
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Failed,
                    "ec2:CopyImage",
                    self.resource(&item.key),
                    "no image id in the answer",
                )
            })
    }

    /// The escrow snapshots a deregistered copy of `source_id` left: tagged
    /// with that source, completed, and backing none of its images.
    async fn left_snapshots(&self, source_id: &str, resource: &str) -> Result<Vec<String>> {
        let in_use: std::collections::BTreeSet<String> =
            self.copies_of(Some(source_id)).await?.iter().flat_map(backing_snapshots).collect();
        let tagged: Vec<Snapshot> = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tags::SOURCE_IMAGE_ID))
                    .values(source_id)
                    .build(),
            )
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", resource))?;
        Ok(tagged
            .iter()
            .filter(|s| s.state() == Some(&aws_sdk_ec2::types::SnapshotState::Completed))
            .filter_map(|s| s.snapshot_id())
            .filter(|id| !in_use.contains(*id))
            .map(str::to_string)
            .collect())
    }

    /// Makes sure each backing snapshot of the available copy `image`
    /// carries the copy's provenance tags (CreateTags where missing).
    async fn tag_snapshots(&self, image: &Image, source_id: &str) -> Result<()> {
        let resource = self.resource(source_id);
        let provenance: Vec<&Tag> = image
            .tags()
            .iter()
            .filter(|t| t.key().is_some_and(|k| k.starts_with(tags::PREFIX)))
            .collect();
        let snapshots = describe_snapshots(&self.ec2, &backing_snapshots(image), &resource).await?;
        let missing: Vec<String> = snapshots
            .iter()
            .filter(|s| {
                provenance.iter().any(|p| tag(s.tags(), p.key().unwrap_or_default()) != p.value())
            })
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect();
        if missing.is_empty() || provenance.is_empty() {
            return Ok(());
        }
        self.ec2
            .create_tags()
            .set_resources(Some(missing))
            .set_tags(Some(provenance.into_iter().cloned().collect()))
            .send()
            .await
            .map_err(|e| sdk_error(e, "ec2:CreateTags", resource))?;
        Ok(())
    }
}

#[async_trait]
impl Sink for AmiSink {
    fn describe(&self) -> String {
        format!("ami://escrow/{}", self.region)
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let prefix = scope.prefix.clone();
        let pages = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(Filter::builder().name("tag-key").values(tags::SOURCE_IMAGE_ID).build())
            .filters(Filter::builder().name("state").values("available").build())
            .into_paginator()
            .items();
        paged_images(pages, "escrow images".to_string())
            .filter_map(move |r| {
                let prefix = prefix.clone();
                async move {
                    match r {
                        Ok(image) => {
                            let source = tag(image.tags(), tags::SOURCE_IMAGE_ID)?.to_string();
                            source.starts_with(&prefix).then(|| {
                                Ok(Item::new(
                                    &source,
                                    ItemKind::Snapshot,
                                    image_size(&image),
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
                "ec2:CopyImage",
                self.resource(&item.key),
                "an AMI is copied by reference only",
            ));
        };
        // A copy an interrupted run started: wait for it instead of copying
        // again. Copies that failed are left and a new one starts.
        let copies = self.copies_of(Some(&item.key)).await?;
        let existing = copies
            .iter()
            .find(|i| state_is(i, &[ImageState::Pending, ImageState::Available]))
            .and_then(|i| i.image_id().map(str::to_string));
        let resource = self.resource(&item.key);
        let wait = |id: String| {
            let resource = resource.clone();
            async move {
                let (timeout, max_poll) = (self.timeout, self.max_poll);
                wait_image(&self.ec2, &id, timeout, max_poll, "ec2:CopyImage", &resource).await
            }
        };
        let done = match existing {
            Some(id) => wait(id).await?,
            None => {
                // A token answers with the copy it first made. When that copy
                // failed or was deregistered since (by hand, or a prune) while
                // the count of copies moved back, take the next token, a few
                // times at most.
                let first = copies.len();
                let mut attempt = first;
                loop {
                    let id = self.start_copy(item, &source, attempt).await?;
                    let outcome = if copies.iter().any(|c| c.image_id() == Some(id.as_str())) {
                        Err(Error::new(
                            ErrorKind::NotFound,
                            "ec2:CopyImage",
                            &resource,
                            format!("the ClientToken answered with the earlier copy {id}"),
                        ))
                    } else {
                        wait(id).await
                    };
                    match outcome {
                        Err(e) if e.kind() == ErrorKind::NotFound && attempt < first + 3 => {
                            tracing::debug!(error = %e.chain(), "taking the next ClientToken");
                            attempt += 1;
                        }
                        done => break done?,
                    }
                }
            }
        };
        self.tag_snapshots(&done, &item.key).await?;
        Ok(Receipt::new(image_size(&done), done.image_id().map(str::to_string)))
    }

    /// An AMI never changes: an escrow copy made from the same image id
    /// holds its content, whatever sizes the listings show.
    async fn confirm_same(&self, item: &Item, escrow: &Item) -> Result<bool> {
        Ok(item.fingerprint == escrow.fingerprint)
    }

    fn audits(&self) -> bool {
        true
    }

    async fn audit(&self, item: &Item) -> Result<Vec<String>> {
        let Some(copy) = self.complete_copy(&item.key).await? else {
            return Ok(vec![format!("no available escrow copy of ami {}", item.key)]);
        };
        let id = copy.image_id().unwrap_or("?");
        let ids = backing_snapshots(&copy);
        if ids.is_empty() {
            return Ok(vec![format!("escrow copy {id} has no backing EBS snapshot")]);
        }
        let snapshots = describe_snapshots(&self.ec2, &ids, &self.resource(&item.key)).await?;
        let mut problems: Vec<String> = snapshots
            .iter()
            .filter_map(|s| {
                let named = format!("{id} (backing snapshot {})", s.snapshot_id().unwrap_or("?"));
                key_problem(&named, s.encrypted(), s.kms_key_id(), self.kms_key_id.as_deref())
            })
            .collect();
        if snapshots.len() < ids.len() {
            problems.push(format!(
                "escrow copy {id} lacks {} of its backing snapshots",
                ids.len() - snapshots.len()
            ));
        }
        if let Some(want) = &self.lock {
            if !lock::protected(&copy) {
                problems.push(format!(
                    "escrow copy {id} has no deregistration protection ({}), while \
                     the job's lock asks for it; the next run turns it on",
                    copy.deregistration_protection().unwrap_or("disabled")
                ));
            }
            let locks = lock::describe_locks(&self.ec2, &ids, &self.resource(&item.key)).await?;
            let now = lock::now();
            for snapshot in &ids {
                let what = format!("escrow copy {id} (backing snapshot {snapshot})");
                problems.extend(lock::lock_problem(&what, locks.get(snapshot), want, now));
            }
        }
        Ok(problems)
    }
}

#[async_trait]
impl Retained for AmiSink {
    fn describe(&self) -> String {
        format!("ami://escrow/{}", self.region)
    }

    async fn copies(&self) -> Result<Vec<EscrowCopy>> {
        Ok(self
            .copies_of(None)
            .await?
            .into_iter()
            .filter_map(|image| {
                let source = tag(image.tags(), tags::SOURCE_IMAGE_ID)?.to_string();
                Some(EscrowCopy {
                    id: image.image_id()?.to_string(),
                    lineage: tag(image.tags(), tags::LINEAGE).unwrap_or(&source).to_string(),
                    created: tag(image.tags(), tags::SOURCE_START_TIME)
                        .unwrap_or_default()
                        .to_string(),
                    complete: state_is(&image, &[ImageState::Available]),
                    copied: Some(creation_time(&image))
                        .filter(|t| !t.is_empty())
                        .or_else(|| tag(image.tags(), tags::COPIED_AT).map(str::to_string)),
                    job: tag(image.tags(), escrow_sync_core::tags::JOB).map(str::to_string),
                    source,
                })
            })
            .collect())
    }

    /// The copies deregistration protection keeps (on, or within its
    /// cooldown), or whose backing snapshots a lock in force keeps.
    async fn locked(&self, copies: &[EscrowCopy]) -> Result<BTreeMap<String, String>> {
        let wanted: std::collections::BTreeSet<&str> =
            copies.iter().map(|c| c.id.as_str()).collect();
        let images: Vec<Image> = self
            .copies_of(None)
            .await?
            .into_iter()
            .filter(|i| i.image_id().is_some_and(|id| wanted.contains(id)))
            .collect();
        let backing: Vec<String> = images.iter().flat_map(backing_snapshots).collect();
        let locks = lock::describe_locks(&self.ec2, &backing, &Retained::describe(self)).await?;
        let now = lock::now();
        let mut out = BTreeMap::new();
        for image in &images {
            let id = image.image_id().unwrap_or_default().to_string();
            let mut why = Vec::new();
            if lock::protection_holds(image) {
                why.push(format!(
                    "deregistration protection ({})",
                    image.deregistration_protection().unwrap_or_default()
                ));
            }
            for snapshot in backing_snapshots(image) {
                if let Some(l) = locks.get(&snapshot).filter(|l| l.in_force(now)) {
                    why.push(format!("backing snapshot {snapshot} {}", l.reason()));
                }
            }
            if !why.is_empty() {
                out.insert(id, why.join(", "));
            }
        }
        Ok(out)
    }

    /// Turns deregistration protection on for the complete `copies` without
    /// it, and locks (or renews the locks of) their backing snapshots
    /// (nothing without a `lock`).
    async fn keep_locked(&self, copies: &[EscrowCopy]) -> Result<escrow_sync_core::LockUpkeep> {
        let Some(want) = &self.lock else {
            return Ok(Default::default());
        };
        let wanted: std::collections::BTreeSet<&str> =
            copies.iter().filter(|c| c.complete).map(|c| c.id.as_str()).collect();
        if wanted.is_empty() {
            return Ok(Default::default());
        }
        let resource = Retained::describe(self);
        let images: Vec<Image> = self
            .copies_of(None)
            .await?
            .into_iter()
            .filter(|i| i.image_id().is_some_and(|id| wanted.contains(id)))
            .collect();
        let mut upkeep = escrow_sync_core::LockUpkeep::default();
        for image in images.iter().filter(|i| !lock::protected(i)) {
            let id = image.image_id().unwrap_or_default();
            lock::protect_image(&self.ec2, id, want, &resource).await?;
            upkeep.protected += 1;
        }
        let backing: Vec<String> = images.iter().flat_map(backing_snapshots).collect();
        let snapshots =
            lock::keep_snapshots_locked(&self.ec2, want, &backing, lock::now(), &resource).await?;
        upkeep.absorb(snapshots);
        Ok(upkeep)
    }

    /// Deregisters the copy, then deletes its backing snapshots (found
    /// before deregistering). Refuses an image escrow-sync did not make.
    /// Resumable: when the image is already deregistered (an attempt
    /// interrupted after DeregisterImage), the snapshots it left (tagged
    /// with its source, completed, backing no image) are deleted.
    async fn delete_copy(&self, copy: &EscrowCopy) -> Result<()> {
        let resource = format!("escrow image {} ({})", copy.id, self.region);
        let image = match self.ec2.describe_images().image_ids(&copy.id).send().await {
            Ok(out) => out.images.unwrap_or_default().into_iter().next(),
            Err(e) if ec2_missing(e.code()) => None,
            Err(e) => return Err(sdk_error(e, "ec2:DescribeImages", &resource)),
        };
        let snapshots = match image {
            Some(image) => {
                if tag(image.tags(), tags::SOURCE_IMAGE_ID).is_none() {
                    return Err(Error::new(
                        ErrorKind::PreconditionFailed,
                        "ec2:DeregisterImage",
                        &resource,
                        format!(
                            "it has no {} tag: escrow-sync did not make it, left alone",
                            tags::SOURCE_IMAGE_ID
                        ),
                    ));
                }
                let snapshots = backing_snapshots(&image);
                self.ec2
                    .deregister_image()
                    .image_id(&copy.id)
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "ec2:DeregisterImage", &resource))?;
                snapshots
            }
            None => self.left_snapshots(&copy.source, &resource).await?,
        };
        delete_snapshots_of(&self.ec2, snapshots, &resource).await
    }
}
