//! The primary's AMIs as a source: the launch permission and every backing
//! snapshot shared with escrow, and unshared once escrow holds the copy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, Image, ImageState, LaunchPermission, LaunchPermissionModifications, ResourceType,
    Snapshot, Tag, TagSpecification,
};
use futures::{StreamExt, TryStreamExt};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Result, Scope, ServerSideRef, Source,
};

use crate::api::*;

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
        let images = paged_images(req.into_paginator().items(), Source::describe(self));
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
