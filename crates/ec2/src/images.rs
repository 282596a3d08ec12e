//! AMIs with their backing EBS snapshots: source (share the launch
//! permission and every backing snapshot, unshare) and sink (CopyImage with
//! a ClientToken and the escrow key, wait, tag the copy and its snapshots).
//!
//! An AMI copied from another account needs both its launch permission and
//! every backing snapshot's createVolumePermission; AWS refuses to copy a
//! shared AMI that carries a billing product (Windows, RHEL, SQL Server...)
//! or Marketplace product codes, so those are reported as not copyable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, Image, ImageState, LaunchPermission, LaunchPermissionModifications, ResourceType,
    Snapshot, Tag, TagSpecification,
};
use futures::{StreamExt, TryStreamExt};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::poll::{Polled, Polling, poll_until};
use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, EscrowCopy, Item, ItemKind, ItemStream, Payload, Receipt, Result, Retained,
    Scope, ServerSideRef, Sink, Source,
};

use crate::snapshots::{
    NOT_FOUND_GRACE, check_key, ec2_missing, fmt_time, key_problem, share_snapshot, system_time,
};

const GIB: u64 = 1 << 30;

/// PlatformDetails naming licensed software AWS bills through a billing
/// product (a shared AMI with one cannot be copied).
const BILLED_PLATFORMS: &[&str] = &["Windows", "Red Hat", "SQL Server", "SUSE", "Ubuntu Pro"];

/// The images a DescribeImages paginator yields, as a stream; errors name
/// `resource`.
fn paged(
    items: aws_sdk_ec2::operation::describe_images::paginator::DescribeImagesPaginatorItems,
    resource: String,
) -> impl futures::Stream<Item = Result<Image>> {
    futures::stream::unfold((items.send(), resource), |(mut p, resource)| async move {
        let next = p.next().await?;
        let item = next.map_err(|e| sdk_error(e, "ec2:DescribeImages", resource.clone()));
        Some((item, (p, resource)))
    })
}

/// The sum of an image's EBS volume sizes, in bytes.
fn image_size(image: &Image) -> u64 {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.volume_size()))
        .map(|gib| gib.max(0) as u64 * GIB)
        .sum()
}

/// The ids of an image's backing EBS snapshots, in mapping order.
pub(crate) fn backing_snapshots(image: &Image) -> Vec<String> {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
        .collect()
}

pub(crate) fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

fn state_is(image: &Image, states: &[ImageState]) -> bool {
    image.state().is_some_and(|s| states.contains(s))
}

/// An image's creation date, when the service's string can be read.
pub(crate) fn created(image: &Image) -> Option<aws_smithy_types::DateTime> {
    escrow_sync_aws::time::parse_time(image.creation_date()?)
}

/// An image's creation date in RFC 3339 UTC (as the snapshots' start times
/// are written); the service's string as is when it cannot be read.
fn creation_time(image: &Image) -> String {
    match created(image) {
        Some(t) => fmt_time(Some(&t)),
        None => image.creation_date().unwrap_or_default().to_string(),
    }
}

/// The id of the snapshot behind an image's root device.
fn root_snapshot(image: &Image) -> Option<&str> {
    image
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name().is_some() && m.device_name() == image.root_device_name())
        .and_then(|m| m.ebs())
        .and_then(|e| e.snapshot_id())
}

/// The lineage retention groups an image's copies by: the instance it was
/// made from, else its root snapshot's volume (`volume_of` looks it up),
/// else the image itself. The listing and the copy's tag use this one rule,
/// so `prune` finds the copies of what a job selects.
fn lineage<'a>(image: &'a Image, volume_of: impl Fn(&str) -> Option<&'a str>) -> String {
    image
        .source_instance_id()
        .or_else(|| root_snapshot(image).and_then(volume_of))
        .or(image.image_id())
        .unwrap_or_default()
        .to_string()
}

/// An AMI name of at most 128 characters, from the characters AWS allows:
/// `prefix-<name>-<id><suffix>`, the name shortened if need be and other
/// characters replaced by `-`.
pub(crate) fn image_name(prefix: &str, name: &str, id: &str, suffix: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c);
    let clean: String = name.chars().map(|c| if allowed(c) { c } else { '-' }).collect();
    let room = 128usize.saturating_sub(prefix.len() + id.len() + suffix.len() + 2);
    let clean: String = clean.chars().take(room).collect();
    if clean.is_empty() {
        format!("{prefix}-{id}{suffix}")
    } else {
        format!("{prefix}-{clean}-{id}{suffix}")
    }
}

/// Why AWS refuses to copy `image` once it is shared with another account
/// (a Marketplace product code or a billing product), if it does.
fn billing_refusal(image: &Image) -> Option<String> {
    let codes: Vec<&str> =
        image.product_codes().iter().filter_map(|c| c.product_code_id()).collect();
    if !codes.is_empty() {
        return Some(format!("it carries the Marketplace product code(s) {}", codes.join(", ")));
    }
    if let Some(op) = image.usage_operation()
        && op != "RunInstances"
    {
        return Some(format!(
            "it carries a billing product (usage operation {op}, platform {})",
            image.platform_details().unwrap_or("unknown")
        ));
    }
    if let Some(details) = image.platform_details()
        && BILLED_PLATFORMS.iter().any(|p| details.contains(p))
    {
        return Some(format!("it carries a billing product (platform {details})"));
    }
    // EC2 answers "windows" where the SDK's enum spells "Windows".
    if image.platform().is_some_and(|p| p.as_str().eq_ignore_ascii_case("windows")) {
        return Some("it is a Windows AMI, which carries a billing product".to_string());
    }
    None
}

/// Polls image `id` (from 1 s, doubling to `max_poll`) until it is
/// available; fails when it ends failed or in error (with the service's
/// reason), `timeout` passes, or it stays unknown longer than
/// [`NOT_FOUND_GRACE`] (kind NotFound: deregistered). `operation` is the
/// call that made it, `resource` names it in errors.
pub(crate) async fn wait_image(
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    timeout: Duration,
    max_poll: Duration,
    operation: &str,
    resource: &str,
) -> Result<Image> {
    let start = tokio::time::Instant::now();
    let grace = timeout.min(NOT_FOUND_GRACE);
    let named = format!("{resource} ({id})");
    let polling = Polling::new(operation, &named)
        .with_max_pause(max_poll)
        .with_timeout(timeout)
        .with_deadline_error(ErrorKind::Failed, "not available", "the next run waits for it");
    poll_until(&polling, || async {
        let image = match ec2.describe_images().image_ids(id).send().await {
            Ok(out) => out.images.unwrap_or_default().into_iter().next(),
            // A new image may not be visible yet (eventual consistency).
            Err(e) if ec2_missing(e.code()) => None,
            Err(e) => return Err(sdk_error(e, "ec2:DescribeImages", &named)),
        };
        if image.is_none() && start.elapsed() >= grace {
            return Err(Error::new(
                ErrorKind::NotFound,
                operation,
                &named,
                format!(
                    "the image is not found after {grace:?}: it was deregistered; the next run \
                     copies it again"
                ),
            ));
        }
        let Some(image) = image else {
            return Ok(Polled::Pending("not visible yet".into()));
        };
        match image.state() {
            Some(ImageState::Available) => Ok(Polled::Done(image)),
            Some(
                state @ (ImageState::Failed
                | ImageState::Error
                | ImageState::Invalid
                | ImageState::Deregistered),
            ) => Err(Error::new(
                ErrorKind::Failed,
                operation,
                &named,
                format!(
                    "the copy ended in state {}: {}; the next run copies it again",
                    state.as_str(),
                    image.state_reason().and_then(|r| r.message()).unwrap_or("no message")
                ),
            )),
            state => Ok(Polled::Pending(state.map_or("unknown", |s| s.as_str()).to_string())),
        }
    })
    .await
}

/// DescribeSnapshots of `ids` (none asked, none returned: an empty id list
/// would list every snapshot).
async fn describe_snapshots(
    ec2: &aws_sdk_ec2::Client,
    ids: &[String],
    resource: &str,
) -> Result<Vec<Snapshot>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(ec2
        .describe_snapshots()
        .set_snapshot_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", resource))?
        .snapshots
        .unwrap_or_default())
}

/// What the primary shared for one item: the image and its snapshots.
#[derive(Debug, Clone)]
struct Shared {
    image: String,
    snapshots: Vec<String>,
}

/// What the primary shares with the escrow account now, by the item it
/// stands for: images with a launch permission for it, and snapshots it may
/// create volumes from (the item's own, or its re-encrypted copy's).
type LeftShared = BTreeMap<String, (Vec<String>, Vec<String>)>;

/// The primary's AMIs, selected by tags or ids, shared with the escrow
/// account (launch permission and every backing snapshot) as they are read
/// and unshared once copied.
#[derive(Debug, Clone)]
pub struct AmiSource {
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
    shared: Arc<Mutex<BTreeMap<String, Shared>>>,
    /// The backing snapshots of the images the last listing yielded.
    listed: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    /// What an interrupted run left shared, asked once per listing when an
    /// item escrow already holds is finished (see `AmiSource::left_shared`).
    left_shared: Arc<tokio::sync::Mutex<Option<LeftShared>>>,
}

impl AmiSource {
    /// AMIs owned by `account` in `region`, read with the reader role's
    /// `ec2` and `kms` clients, shared with `escrow_account`.
    pub fn from_client(
        ec2: aws_sdk_ec2::Client,
        kms: aws_sdk_kms::Client,
        region: impl Into<String>,
        account: impl Into<String>,
        escrow_account: impl Into<String>,
    ) -> Self {
        AmiSource {
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
            listed: Default::default(),
            left_shared: Default::default(),
        }
    }

    /// Only AMIs carrying all these tags.
    pub fn with_tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.tags = tags;
        self
    }

    /// Only these image ids.
    pub fn with_ids(mut self, ids: Vec<String>) -> Self {
        self.ids = ids;
        self
    }

    /// Remove the shares (launch permission and snapshots) once the escrow
    /// copy is complete (default true).
    pub fn with_unshare_after_copy(mut self, on: bool) -> Self {
        self.unshare_after_copy = on;
        self
    }

    /// Re-encrypt an AMI with a backing snapshot under the AWS-managed key
    /// (which cannot be shared) with this customer key of the primary, whose
    /// policy grants the escrow account kms:Decrypt and kms:CreateGrant: a
    /// CopyImage in the primary, tagged `escrow-sync:reencrypted-from`,
    /// reused by later runs, is what gets shared.
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

    fn resource(&self, id: &str) -> String {
        format!("ami {id} (account {}, {})", self.account, self.region)
    }

    async fn image(&self, id: &str) -> Result<Image> {
        self.ec2
            .describe_images()
            .image_ids(id)
            .send()
            .await
            .map_err(|e| sdk_error(e, "ec2:DescribeImages", self.resource(id)))?
            .images
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::new(ErrorKind::NotFound, "ec2:DescribeImages", self.resource(id), "")
            })
    }

    /// Fails (kind Unsupported) when AWS would refuse to copy `image` across
    /// accounts whatever the keys.
    fn check_copyable(&self, image: &Image, id: &str) -> Result<()> {
        match billing_refusal(image) {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::Unsupported,
                "ec2:CopyImage",
                self.resource(id),
                format!(
                    "not copyable across accounts: {why}, and AWS refuses to copy a shared AMI \
                     with a billing product or Marketplace code; leave it out of the job \
                     (tags or ids)"
                ),
            )),
        }
    }

    /// The image's backing snapshots, and the Unsupported error of the first
    /// one under the AWS-managed key (which cannot be shared), if any.
    async fn inspect_keys(
        &self,
        image: &Image,
        id: &str,
    ) -> Result<(Vec<Snapshot>, Option<Error>)> {
        let resource = self.resource(id);
        let snapshots = describe_snapshots(&self.ec2, &backing_snapshots(image), &resource).await?;
        let mut checked = std::collections::BTreeSet::new();
        for s in &snapshots {
            let Some(key) = s.kms_key_id().filter(|_| s.encrypted() == Some(true)) else {
                continue;
            };
            if !checked.insert(key.to_string()) {
                continue;
            }
            let named = format!(
                "backing snapshot {} of ami {id} (account {}, {})",
                s.snapshot_id().unwrap_or("?"),
                self.account,
                self.region
            );
            match check_key(&self.kms, key, &named, &self.escrow_account).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Unsupported => return Ok((snapshots, Some(e))),
                Err(e) => return Err(e),
            }
        }
        Ok((snapshots, None))
    }

    /// The primary's re-encrypted copy of `image` under `key`: an existing
    /// one (available or in progress, its snapshots under `key`), else a new
    /// CopyImage; waited for.
    async fn reencrypted(&self, image: &Image, id: &str, key: &str) -> Result<Image> {
        let resource = self.resource(id);
        let existing: Vec<Image> = self
            .ec2
            .describe_images()
            .owners("self")
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
            .map_err(|e| sdk_error(e, "ec2:DescribeImages", &resource))?;
        let mut reusable = None;
        for candidate in
            existing.iter().filter(|i| state_is(i, &[ImageState::Pending, ImageState::Available]))
        {
            let snapshots =
                describe_snapshots(&self.ec2, &backing_snapshots(candidate), &resource).await?;
            if snapshots
                .iter()
                .all(|s| key_problem("", s.encrypted(), s.kms_key_id(), Some(key)).is_none())
            {
                reusable = candidate.image_id().map(str::to_string);
                break;
            }
        }
        let copy_id = match reusable {
            Some(c) => c,
            None => {
                let tagged = |kind| {
                    TagSpecification::builder()
                        .resource_type(kind)
                        .tags(Tag::builder().key(tags::REENCRYPTED_FROM).value(id).build())
                        .build()
                };
                let suffix = if existing.is_empty() {
                    String::new()
                } else {
                    format!("-{}", existing.len())
                };
                self.ec2
                    .copy_image()
                    .source_image_id(id)
                    .source_region(&self.region)
                    .name(image_name(
                        "escrow-sync-reencrypted",
                        image.name().unwrap_or_default(),
                        id,
                        &suffix,
                    ))
                    .description(format!(
                        "escrow-sync re-encryption of {id} for the escrow account"
                    ))
                    .encrypted(true)
                    .kms_key_id(key)
                    .client_token(format!("escrow-sync-reencrypt-{id}-{}", existing.len()))
                    .tag_specifications(tagged(ResourceType::Image))
                    .tag_specifications(tagged(ResourceType::Snapshot))
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "ec2:CopyImage", &resource))?
                    .image_id
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Failed,
                            "ec2:CopyImage",
                            &resource,
                            "no image id in the answer",
                        )
                    })?
            }
        };
        let (timeout, max_poll) = self.wait;
        let what = format!("re-encrypted copy of {resource}");
        wait_image(&self.ec2, &copy_id, timeout, max_poll, "ec2:CopyImage", &what).await
    }

    /// The volumes of the root snapshots of `images` made by no instance
    /// that the listing names (snapshot id -> volume id), for their lineage.
    async fn root_volumes(&self, images: &[Image]) -> Result<BTreeMap<String, String>> {
        let roots: Vec<String> = images
            .iter()
            .filter(|i| i.source_instance_id().is_none())
            .filter_map(|i| root_snapshot(i).map(str::to_string))
            .collect();
        let mut volumes = BTreeMap::new();
        // By filter, not SnapshotIds: a snapshot gone meanwhile is left out
        // (its image keeps its own id as lineage) instead of failing the
        // listing. In chunks: EC2 bounds the values of one filter.
        for chunk in roots.chunks(200) {
            let found: Vec<Snapshot> = self
                .ec2
                .describe_snapshots()
                .filters(
                    Filter::builder().name("snapshot-id").set_values(Some(chunk.to_vec())).build(),
                )
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| sdk_error(e, "ec2:DescribeSnapshots", Source::describe(self)))?;
            for s in found {
                if let (Some(id), Some(volume)) = (s.snapshot_id(), s.volume_id()) {
                    volumes.insert(id.to_string(), volume.to_string());
                }
            }
        }
        Ok(volumes)
    }

    /// What the primary shares with the escrow account now, by item: one
    /// paginated DescribeImages (Owners=self, ExecutableUsers=escrow) and one
    /// paginated DescribeSnapshots (OwnerIds=self, RestorableByUserIds=escrow),
    /// asked at the first call after a listing. An image counts for the item
    /// it is (or, tagged [`escrow_sync_core::tags::REENCRYPTED_FROM`], re-encrypts); a snapshot
    /// for the item whose image (listed, or shared) it backs, or whose
    /// re-encryption made it (the tag, which CopyImage puts on the new
    /// snapshots too): so the snapshots of an interrupted unshare, whose
    /// launch permission is already gone, are found as well. Other shared
    /// snapshots (an EBS job's) are no item's here.
    async fn left_shared(&self) -> Result<tokio::sync::MutexGuard<'_, Option<LeftShared>>> {
        let mut cache = self.left_shared.lock().await;
        if cache.is_some() {
            return Ok(cache);
        }
        let images: Vec<Image> = self
            .ec2
            .describe_images()
            .owners("self")
            .executable_users(&self.escrow_account)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_error(e, "ec2:DescribeImages", Source::describe(self)))?;
        let snapshots: Vec<Snapshot> = self
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
        let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
        for (image, backing) in self.listed.lock().expect("listing").iter() {
            for s in backing {
                owner_of.insert(s.clone(), image.clone());
            }
        }
        let mut left = LeftShared::new();
        for image in &images {
            let Some(id) = image.image_id() else { continue };
            let item = tag(image.tags(), tags::REENCRYPTED_FROM).unwrap_or(id).to_string();
            for s in backing_snapshots(image) {
                owner_of.insert(s, item.clone());
            }
            left.entry(item).or_default().0.push(id.to_string());
        }
        for s in &snapshots {
            let Some(id) = s.snapshot_id() else { continue };
            let item =
                tag(s.tags(), tags::REENCRYPTED_FROM).or(owner_of.get(id).map(String::as_str));
            if let Some(item) = item {
                left.entry(item.to_string()).or_default().1.push(id.to_string());
            }
        }
        *cache = Some(left);
        Ok(cache)
    }

    /// Adds (or removes) the escrow account to image `id`'s launch
    /// permission; `resource` names the item.
    async fn share_image(&self, id: &str, add: bool, resource: &str) -> Result<()> {
        let permission = LaunchPermission::builder().user_id(&self.escrow_account).build();
        let change = if add {
            LaunchPermissionModifications::builder().add(permission).build()
        } else {
            LaunchPermissionModifications::builder().remove(permission).build()
        };
        self.ec2
            .modify_image_attribute()
            .image_id(id)
            .launch_permission(change)
            .send()
            .await
            .map_err(|e| sdk_error(e, "ec2:ModifyImageAttribute", resource))?;
        Ok(())
    }

    /// Shares (or unshares) the image and each of its snapshots.
    async fn share(&self, shared: &Shared, add: bool, resource: &str) -> Result<()> {
        self.share_image(&shared.image, add, resource).await?;
        for snapshot in &shared.snapshots {
            let named = format!("backing snapshot {snapshot} of {resource}");
            share_snapshot(&self.ec2, snapshot, &self.escrow_account, add, &named).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Source for AmiSource {
    fn describe(&self) -> String {
        format!("ami://{}/{}", self.account, self.region)
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let mut req = self
            .ec2
            .describe_images()
            .owners("self")
            .filters(Filter::builder().name("state").values("available").build());
        for (k, v) in &self.tags {
            req = req.filters(Filter::builder().name(format!("tag:{k}")).values(v).build());
        }
        for id in &self.ids {
            req = req.image_ids(id);
        }
        let prefix = scope.prefix.clone();
        let images = paged(req.into_paginator().items(), Source::describe(self));
        futures::stream::once(async move {
            let images: Vec<Image> = images
                .try_filter(|image| {
                    // The primary's own re-encrypted copies are not items of
                    // their own.
                    let keep = tag(image.tags(), tags::REENCRYPTED_FROM).is_none()
                        && image.image_id().is_some_and(|id| id.starts_with(&prefix));
                    futures::future::ready(keep)
                })
                .try_collect()
                .await?;
            // A new listing: what is left shared is asked again when needed.
            *self.left_shared.lock().await = None;
            *self.listed.lock().expect("listing") = images
                .iter()
                .filter_map(|i| Some((i.image_id()?.to_string(), backing_snapshots(i))))
                .collect();
            let volumes = self.root_volumes(&images).await?;
            let items = images.into_iter().map(move |image| {
                let id = image.image_id().unwrap_or_default();
                let lineage = lineage(&image, |s| volumes.get(s).map(String::as_str));
                Ok(Item::new(id, ItemKind::Snapshot, image_size(&image), id)
                    .with_lineage(Some(lineage))
                    .with_modified(created(&image).as_ref().and_then(system_time)))
            });
            Ok::<_, Error>(futures::stream::iter(items.collect::<Vec<_>>()))
        })
        .try_flatten()
        .boxed()
    }

    fn assesses(&self) -> bool {
        true
    }

    async fn assess(&self, item: &Item) -> Result<Option<String>> {
        let image = self.image(&item.key).await?;
        self.check_copyable(&image, &item.key)?;
        match (self.inspect_keys(&image, &item.key).await?, &self.reencrypt_key_id) {
            ((_, None), _) => Ok(None),
            ((_, Some(_)), Some(key)) => Ok(Some(format!(
                "needs re-encryption: a backing snapshot is under the AWS-managed key, so the \
                 image is first copied in the primary with {key}"
            ))),
            ((_, Some(e)), None) => Err(e),
        }
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        let resource = self.resource(&item.key);
        let image = self.image(&item.key).await?;
        self.check_copyable(&image, &item.key)?;
        let (snapshots, managed) = self.inspect_keys(&image, &item.key).await?;
        let shared_image = match (managed, &self.reencrypt_key_id) {
            (None, _) => image.clone(),
            (Some(_), Some(key)) => self.reencrypted(&image, &item.key, key).await?,
            (Some(e), None) => return Err(e),
        };
        let shared = Shared {
            image: shared_image.image_id().unwrap_or(&item.key).to_string(),
            snapshots: backing_snapshots(&shared_image),
        };
        self.share(&shared, true, &resource).await?;
        self.shared.lock().expect("shares").insert(item.key.clone(), shared.clone());
        // The lineage retention groups copies by, as the listing has it.
        let lineage = lineage(&image, |root| {
            snapshots.iter().find(|s| s.snapshot_id() == Some(root)).and_then(|s| s.volume_id())
        });
        let attributes = BTreeMap::from([
            ("region".to_string(), self.region.clone()),
            ("start-time".to_string(), creation_time(&image)),
            ("name".to_string(), image.name().unwrap_or_default().to_string()),
            ("lineage".to_string(), lineage),
        ]);
        Ok(Payload::Reference(
            ServerSideRef::new("ec2", &self.region, &shared.image, &item.fingerprint)
                .with_owner(Some(self.account.clone()))
                .with_attributes(attributes),
        ))
    }

    fn finishes_skipped(&self) -> bool {
        self.unshare_after_copy
    }

    /// Removes the shares once the copy is complete: those this run made,
    /// or, for an item escrow already held, those an interrupted run left
    /// (the launch permission and the snapshots still shared, found in
    /// `AmiSource::left_shared`; nothing is changed when none is left).
    async fn finish(&self, item: &Item) -> Result<()> {
        if !self.unshare_after_copy {
            return Ok(());
        }
        let resource = self.resource(&item.key);
        let read_now = self.shared.lock().expect("shares").get(&item.key).cloned();
        if let Some(shared) = read_now {
            self.share(&shared, false, &resource).await?;
            // Undone: a later run that finds the item in escrow asks again.
            self.shared.lock().expect("shares").remove(&item.key);
            return Ok(());
        }
        let left = self.left_shared().await?.as_ref().and_then(|l| l.get(&item.key).cloned());
        let Some((images, snapshots)) = left else { return Ok(()) };
        for image in &images {
            self.share_image(image, false, &resource).await?;
        }
        for snapshot in &snapshots {
            let named = format!("backing snapshot {snapshot} of {resource}");
            share_snapshot(&self.ec2, snapshot, &self.escrow_account, false, &named).await?;
        }
        // Undone: a retry of this item, or a later finish, finds nothing.
        if let Some(left) = self.left_shared().await?.as_mut() {
            left.remove(&item.key);
        }
        Ok(())
    }
}

/// The escrow account's copies of AMIs (with their snapshots), encrypted
/// with the escrow key, found by their provenance tag.
#[derive(Debug, Clone)]
pub struct AmiSink {
    ec2: aws_sdk_ec2::Client,
    region: String,
    kms_key_id: Option<String>,
    job: Option<String>,
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
        paged(pages, "escrow images".to_string())
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

/// Deletes the backing `snapshots` of an image already deregistered
/// (`resource` names it); one already gone (an earlier, interrupted
/// attempt) counts as deleted.
pub(crate) async fn delete_snapshots_of(
    ec2: &aws_sdk_ec2::Client,
    snapshots: Vec<String>,
    resource: &str,
) -> Result<()> {
    for snapshot in snapshots {
        match ec2.delete_snapshot().snapshot_id(&snapshot).send().await {
            Ok(_) => {}
            Err(e) if ec2_missing(e.code()) => {}
            Err(e) => {
                let named = format!("snapshot {snapshot} of {resource}");
                return Err(sdk_error(e, "ec2:DeleteSnapshot", named));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_use_allowed_characters() {
        assert_eq!(image_name("escrow", "web server", "ami-1", ""), "escrow-web server-ami-1");
        assert_eq!(image_name("escrow", "", "ami-1", "-retry1"), "escrow-ami-1-retry1");
        assert_eq!(image_name("escrow", "a:b*c", "ami-1", ""), "escrow-a-b-c-ami-1");
        let long = image_name("escrow", &"x".repeat(300), "ami-0123456789abcdef0", "-retry2");
        assert_eq!(long.len(), 128);
        assert!(long.ends_with("-ami-0123456789abcdef0-retry2"), "{long}");
    }

    #[test]
    fn creation_dates_are_written_in_rfc3339_utc() {
        let image = Image::builder().creation_date("2026-11-28T21:43:21.000Z").build();
        assert_eq!(creation_time(&image), "2026-11-28T21:43:21Z");
        let odd = Image::builder().creation_date("yesterday").build();
        assert_eq!(creation_time(&odd), "yesterday");
    }
}
