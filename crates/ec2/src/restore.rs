//! Restoring EBS snapshots and AMIs from escrow into a recovery account:
//! the escrow copy is shared with the recovery account (escrow
//! credentials; an AMI with its launch permission and every backing
//! snapshot), copied there (the recovery account's credentials), waited
//! on, and unshared.

use std::time::{Duration, SystemTime};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, Image, LaunchPermission, LaunchPermissionModifications, ResourceType, SnapshotState,
    Tag, TagSpecification,
};

use async_trait::async_trait;
use escrow_sync_aws::sdk_error;
use escrow_sync_core::snapshot::{RecoveredCopy, SnapshotCopy, SnapshotRestore};
use escrow_sync_core::tags;
use escrow_sync_core::{Error, ErrorKind, Result};

use crate::api::{
    backing_snapshots, created, delete_snapshots_of, ec2_missing, escrow_copies, image_name,
    share_snapshot, system_time, tag, wait_image, wait_snapshot,
};

/// One completed escrow copy of a primary snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowSnapshot {
    /// The escrow copy's id.
    pub id: String,
    /// The primary snapshot it is a copy of.
    pub source_id: String,
    /// The primary account it came from.
    pub source_account: Option<String>,
    /// Its lineage (the source volume), when recorded.
    pub lineage: Option<String>,
    /// When the copy was started in escrow.
    pub started: Option<SystemTime>,
    /// The volume size in GiB.
    pub size_gib: i32,
}

/// Every completed escrow-sync copy the escrow account holds.
pub async fn escrow_snapshots(ec2: &Client) -> Result<Vec<EscrowSnapshot>> {
    let all = escrow_copies(ec2).await?;
    Ok(all
        .iter()
        .filter(|s| s.state() == Some(&SnapshotState::Completed))
        .filter_map(|s| {
            Some(EscrowSnapshot {
                id: s.snapshot_id()?.to_string(),
                source_id: tag(s.tags(), tags::SOURCE_SNAPSHOT_ID)?.to_string(),
                source_account: tag(s.tags(), tags::SOURCE_ACCOUNT).map(str::to_string),
                lineage: tag(s.tags(), tags::LINEAGE).map(str::to_string),
                started: s.start_time().and_then(system_time),
                size_gib: s.volume_size().unwrap_or(0),
            })
        })
        .collect())
}

/// Per lineage (source volume; the source snapshot where none is
/// recorded), the newest copy started at or before `at` (`None`: the
/// newest), in source-id order.
pub fn as_of(copies: Vec<EscrowSnapshot>, at: Option<SystemTime>) -> Vec<EscrowSnapshot> {
    let mut out = escrow_sync_core::newest_per_group(
        copies,
        at,
        |c| c.started,
        |c| c.lineage.clone().unwrap_or_else(|| c.source_id.clone()),
    );
    out.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    out
}

/// Shares (`add`) or unshares the escrow copy `id` with `account`.
pub async fn set_shared(ec2: &Client, id: &str, account: &str, add: bool) -> Result<()> {
    share_snapshot(ec2, id, account, add, &format!("escrow snapshot {id}")).await
}

/// Starts copying the shared escrow snapshot `id` (in `region`) into the
/// account of `ec2` (the recovery account), encrypted with its default EBS
/// key or `kms_key_id`, tagged with where it came from; returns the new
/// snapshot's id (wait for it with [`wait_completed`]).
pub async fn start_copy(
    ec2: &Client,
    id: &str,
    region: &str,
    kms_key_id: Option<String>,
) -> Result<String> {
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::Snapshot)
        .tags(Tag::builder().key(tags::RESTORED_FROM).value(id).build())
        .build();
    let out = ec2
        .copy_snapshot()
        .source_snapshot_id(id)
        .source_region(region)
        .encrypted(true)
        .set_kms_key_id(kms_key_id)
        .description(format!("escrow-sync restore of escrow snapshot {id}"))
        .tag_specifications(tags)
        .send()
        .await
        .map_err(|e| sdk_error(e, "ec2:CopySnapshot", format!("snapshot {id}")))?;
    Ok(out.snapshot_id().unwrap_or_default().to_string())
}

/// Waits until snapshot `copy` of the account of `ec2` is completed (at
/// most `timeout`, polling from 1 s up to every `max_poll`); returns its
/// volume size in GiB.
pub async fn wait_completed(
    ec2: &Client,
    copy: &str,
    timeout: Duration,
    max_poll: Duration,
) -> Result<i32> {
    let s = wait_snapshot(ec2, copy, timeout, max_poll, &format!("recovered copy {copy}")).await?;
    Ok(s.volume_size().unwrap_or(0))
}

/// Deletes snapshot `id` of the account of `ec2` (a drill's own copy).
pub async fn delete_snapshot(ec2: &Client, id: &str) -> Result<()> {
    ec2.delete_snapshot()
        .snapshot_id(id)
        .send()
        .await
        .map_err(|e| sdk_error(e, "ec2:DeleteSnapshot", format!("snapshot {id}")))?;
    Ok(())
}

/// One EBS volume of an image: its device, size and snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device name (`/dev/xvda`).
    pub name: String,
    /// The volume size in GiB.
    pub size_gib: i32,
    /// The snapshot behind it, when the service names one.
    pub snapshot_id: Option<String>,
}

/// The EBS devices of `image`, in mapping order.
fn devices(image: &Image) -> Vec<Device> {
    image
        .block_device_mappings()
        .iter()
        .filter_map(|m| {
            let ebs = m.ebs()?;
            Some(Device {
                name: m.device_name().unwrap_or_default().to_string(),
                size_gib: ebs.volume_size().unwrap_or(0),
                snapshot_id: ebs.snapshot_id().map(str::to_string),
            })
        })
        .collect()
}

/// One available escrow copy of a primary AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowImage {
    /// The escrow copy's image id.
    pub id: String,
    /// The primary image it is a copy of.
    pub source_id: String,
    /// The primary account it came from.
    pub source_account: Option<String>,
    /// When the copy was made in escrow (its creation date, else its
    /// `escrow-sync:copied-at` tag).
    pub started: Option<SystemTime>,
    /// Its EBS devices, each with its backing snapshot.
    pub devices: Vec<Device>,
}

impl EscrowImage {
    /// The sum of its volume sizes, in GiB.
    pub fn size_gib(&self) -> u64 {
        self.devices.iter().map(|d| d.size_gib.max(0) as u64).sum()
    }

    /// Its backing snapshots.
    pub fn snapshots(&self) -> Vec<String> {
        self.devices.iter().filter_map(|d| d.snapshot_id.clone()).collect()
    }
}

/// Every available escrow-sync copy of an AMI the escrow account holds
/// (owned by it, tagged [`escrow_sync_core::tags::SOURCE_IMAGE_ID`]).
pub async fn escrow_images(ec2: &Client) -> Result<Vec<EscrowImage>> {
    let all: Vec<Image> = ec2
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("tag-key").values(tags::SOURCE_IMAGE_ID).build())
        .filters(Filter::builder().name("state").values("available").build())
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| sdk_error(e, "ec2:DescribeImages", "escrow images"))?;
    Ok(all
        .iter()
        .filter(|i| i.state() == Some(&aws_sdk_ec2::types::ImageState::Available))
        .filter_map(|i| {
            Some(EscrowImage {
                id: i.image_id()?.to_string(),
                source_id: tag(i.tags(), tags::SOURCE_IMAGE_ID)?.to_string(),
                source_account: tag(i.tags(), tags::SOURCE_ACCOUNT).map(str::to_string),
                started: created(i).as_ref().and_then(system_time).or_else(|| {
                    tag(i.tags(), tags::COPIED_AT).and_then(escrow_sync_core::time::parse_rfc3339)
                }),
                devices: devices(i),
            })
        })
        .collect())
}

/// Per source image, the newest copy made at or before `at` (`None`: the
/// newest), in source-id order.
pub fn images_as_of(copies: Vec<EscrowImage>, at: Option<SystemTime>) -> Vec<EscrowImage> {
    escrow_sync_core::newest_per_group(copies, at, |c| c.started, |c| c.source_id.clone())
}

/// Adds `account` to (or removes it from) the launch permission of the
/// escrow image and the createVolumePermission of each of its backing
/// snapshots: a recovery account copies an AMI only with both. Removing
/// tries every part and answers the first error.
pub async fn set_image_shared(
    ec2: &Client,
    image: &EscrowImage,
    account: &str,
    add: bool,
) -> Result<()> {
    let resource = format!("escrow image {}", image.id);
    let permission = LaunchPermission::builder().user_id(account).build();
    let change = if add {
        LaunchPermissionModifications::builder().add(permission).build()
    } else {
        LaunchPermissionModifications::builder().remove(permission).build()
    };
    let mut first = ec2
        .modify_image_attribute()
        .image_id(&image.id)
        .launch_permission(change)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| sdk_error(e, "ec2:ModifyImageAttribute", &resource));
    if add {
        first?;
        for snapshot in image.snapshots() {
            let named = format!("backing snapshot {snapshot} of {resource}");
            share_snapshot(ec2, &snapshot, account, true, &named).await?;
        }
        return Ok(());
    }
    for snapshot in image.snapshots() {
        let named = format!("backing snapshot {snapshot} of {resource}");
        let done = share_snapshot(ec2, &snapshot, account, false, &named).await;
        if first.is_ok() {
            first = done;
        }
    }
    first
}

/// Starts copying the shared escrow image `id` (in `region`) into the
/// account of `ec2` (the recovery account), encrypted with its default EBS
/// key, the image and its snapshots tagged [`escrow_sync_core::tags::RESTORED_FROM`] = `id`;
/// returns the new image's id (wait for it with [`wait_image_available`]).
/// The name carries the time (AMI names are unique per account); the
/// ClientToken is the SDK's random one per call: a fixed one would answer a
/// drill's deregistered copy again.
pub async fn start_image_copy(ec2: &Client, id: &str, region: &str) -> Result<String> {
    let spec = |kind| {
        TagSpecification::builder()
            .resource_type(kind)
            .tags(Tag::builder().key(tags::RESTORED_FROM).value(id).build())
            .build()
    };
    let millis = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let resource = format!("escrow image {id}");
    ec2.copy_image()
        .source_image_id(id)
        .source_region(region)
        .name(image_name("escrow-sync-restore", "", id, &format!("-{millis}")))
        .description(format!("escrow-sync restore of escrow image {id}"))
        .encrypted(true)
        .tag_specifications(spec(ResourceType::Image))
        .tag_specifications(spec(ResourceType::Snapshot))
        .send()
        .await
        .map_err(|e| sdk_error(e, "ec2:CopyImage", &resource))?
        .image_id
        .ok_or_else(|| {
            Error::new(ErrorKind::Failed, "ec2:CopyImage", resource, "no image id in the answer")
        })
}

/// Waits until image `copy` of the account of `ec2` is available (at most
/// `timeout`, polling from 1 s up to every `max_poll`); returns its EBS
/// devices.
pub async fn wait_image_available(
    ec2: &Client,
    copy: &str,
    timeout: Duration,
    max_poll: Duration,
) -> Result<Vec<Device>> {
    let resource = format!("recovered image {copy}");
    let image = wait_image(ec2, copy, timeout, max_poll, "ec2:CopyImage", &resource).await?;
    Ok(devices(&image))
}

/// What differs between an escrow image's devices and its copy's (their
/// number, or a size), if anything.
pub fn image_mismatch(escrow: &[Device], copy: &[Device]) -> Option<String> {
    let sizes = |d: &[Device]| {
        let mut v: Vec<(String, i32)> = d.iter().map(|d| (d.name.clone(), d.size_gib)).collect();
        v.sort();
        v
    };
    let (want, got) = (sizes(escrow), sizes(copy));
    if want.len() != got.len() {
        return Some(format!("{} block devices, the escrow image {}", got.len(), want.len()));
    }
    want.iter()
        .zip(&got)
        .find(|(w, g)| w != g)
        .map(|(w, g)| format!("{} has {} GiB, the escrow image's {} {} GiB", g.0, g.1, w.0, w.1))
}

/// Deregisters image `id` of the account of `ec2` (a drill's own copy) and
/// deletes its backing snapshots (found before deregistering); an image or
/// snapshot already gone counts as deleted.
pub async fn delete_image(ec2: &Client, id: &str) -> Result<()> {
    let resource = format!("image {id}");
    let image = match ec2.describe_images().image_ids(id).send().await {
        Ok(out) => out.images.unwrap_or_default().into_iter().next(),
        Err(e) if ec2_missing(e.code()) => None,
        Err(e) => return Err(sdk_error(e, "ec2:DescribeImages", &resource)),
    };
    let Some(image) = image else { return Ok(()) };
    let snapshots = backing_snapshots(&image);
    match ec2.deregister_image().image_id(id).send().await {
        Ok(_) => {}
        Err(e) if ec2_missing(e.code()) => {}
        Err(e) => return Err(sdk_error(e, "ec2:DeregisterImage", &resource)),
    }
    delete_snapshots_of(ec2, snapshots, &resource).await
}

const GIB: u64 = 1 << 30;

/// The longest pause between two looks at a copy in progress, by default.
pub const MAX_POLL: Duration = Duration::from_secs(30);

/// How long a copy into the recovery account is waited for, by default.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// One escrow copy an [`Ec2Restore`] restores.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ec2Copy {
    /// An EBS snapshot.
    Snapshot(EscrowSnapshot),
    /// An AMI with its backing snapshots.
    Image(EscrowImage),
}

/// The [`SnapshotRestore`] of an `[[ec2]]` job: EBS snapshots (per source
/// volume, the newest escrow copy at or before the time) and AMIs (per
/// source image); the share of an AMI is its launch permission and every
/// backing snapshot's createVolumePermission. A drill checks each copy
/// completed at the escrow copy's size (AMIs: the same block devices and
/// sizes), then deletes it (AMIs: deregistered, their snapshots deleted).
#[derive(Debug, Clone)]
pub struct Ec2Restore {
    escrow: Client,
    target: Client,
    target_account: String,
    region: String,
    primary: String,
    snapshot_ids: Option<Vec<String>>,
    image_ids: Option<Vec<String>>,
    by_tags: bool,
    timeout: Duration,
    max_poll: Duration,
}

impl Ec2Restore {
    /// Restores, in `region`, the escrow copies the escrow session holds of
    /// the primary account `primary`'s snapshots and AMIs into the account
    /// of the `target` session (every one: narrow with
    /// [`Self::with_selection`]).
    pub fn new(
        escrow: &escrow_sync_aws::Session,
        target: &escrow_sync_aws::Session,
        region: &str,
        primary: &str,
    ) -> Self {
        Self::from_clients(
            crate::client(escrow),
            crate::client(target),
            target.account_id(),
            region,
            primary,
        )
    }

    /// As [`Self::new`], from escrow's and the recovery account's clients
    /// and the recovery account's id.
    pub fn from_clients(
        escrow: Client,
        target: Client,
        target_account: &str,
        region: &str,
        primary: &str,
    ) -> Self {
        Ec2Restore {
            escrow,
            target,
            target_account: target_account.to_string(),
            region: region.to_string(),
            primary: primary.to_string(),
            snapshot_ids: Some(Vec::new()),
            image_ids: Some(Vec::new()),
            by_tags: true,
            timeout: COPY_TIMEOUT,
            max_poll: MAX_POLL,
        }
    }

    /// What the job selects, as `run` does: `ids` (snapshot and image ids;
    /// empty: every copy, the job selecting by tags), snapshots when
    /// `snapshots`, AMIs when `images`. A job naming ids of one type only
    /// restores none of the other.
    pub fn with_selection(mut self, ids: &[String], snapshots: bool, images: bool) -> Self {
        let of = |on: bool, prefix: &str| {
            let chosen: Vec<String> =
                ids.iter().filter(|i| i.starts_with(prefix)).cloned().collect();
            (on && (ids.is_empty() || !chosen.is_empty())).then_some(chosen)
        };
        self.snapshot_ids = of(snapshots, "snap-");
        self.image_ids = of(images, "ami-");
        self.by_tags = ids.is_empty();
        self
    }

    /// Waits at most `timeout` for each copy, polling up to every
    /// `max_poll` (defaults: [`COPY_TIMEOUT`], [`MAX_POLL`]).
    pub fn with_wait(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.timeout = timeout;
        self.max_poll = max_poll;
        self
    }

    fn of_primary(&self, account: &Option<String>) -> bool {
        account.as_deref().is_none_or(|a| a == self.primary)
    }
}

#[async_trait]
impl SnapshotRestore for Ec2Restore {
    type Copy = Ec2Copy;

    fn target_account(&self) -> &str {
        &self.target_account
    }

    fn locations(&self, owner: &str) -> Vec<String> {
        [("ebs", self.snapshot_ids.is_some()), ("ami", self.image_ids.is_some())]
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(scheme, _)| format!("{scheme}://{owner}/{}", self.region))
            .collect()
    }

    async fn escrow_copies(&self, at: Option<SystemTime>) -> Result<Vec<Ec2Copy>> {
        let mut out = Vec::new();
        if let Some(ids) = &self.snapshot_ids {
            let copies: Vec<_> = escrow_snapshots(&self.escrow)
                .await?
                .into_iter()
                .filter(|c| self.of_primary(&c.source_account))
                .filter(|c| ids.is_empty() || ids.contains(&c.source_id))
                .collect();
            out.extend(as_of(copies, at).into_iter().map(Ec2Copy::Snapshot));
        }
        if let Some(ids) = &self.image_ids {
            let copies: Vec<_> = escrow_images(&self.escrow)
                .await?
                .into_iter()
                .filter(|c| self.of_primary(&c.source_account))
                .filter(|c| ids.is_empty() || ids.contains(&c.source_id))
                .collect();
            out.extend(images_as_of(copies, at).into_iter().map(Ec2Copy::Image));
        }
        Ok(out)
    }

    fn describe(&self, copy: &Ec2Copy) -> SnapshotCopy {
        match copy {
            Ec2Copy::Snapshot(c) => SnapshotCopy::new(
                &c.id,
                &c.source_id,
                format!("escrow copy {}", c.id),
                "snapshots",
                c.size_gib.max(0) as u64 * GIB,
            ),
            Ec2Copy::Image(i) => SnapshotCopy::new(
                &i.id,
                &i.source_id,
                format!("escrow AMI {}", i.id),
                "AMIs",
                i.size_gib() * GIB,
            ),
        }
    }

    fn notes(&self, _copies: &[Ec2Copy]) -> Vec<String> {
        let primary = &self.primary;
        self.by_tags
            .then(|| {
                format!(
                    "the job selects by tags: every escrow copy of a primary ({primary}) snapshot \
                     or AMI counts"
                )
            })
            .into_iter()
            .collect()
    }

    fn plan_note(&self, copy: &Ec2Copy) -> String {
        match copy {
            Ec2Copy::Snapshot(c) => {
                format!("would share escrow copy {} (of {}, {} GiB)", c.id, c.source_id, c.size_gib)
            }
            Ec2Copy::Image(i) => format!(
                "would share escrow AMI {} (of {}, {} GiB) and its {} backing snapshots",
                i.id,
                i.source_id,
                i.size_gib(),
                i.snapshots().len()
            ),
        }
    }

    fn shared_note(&self, copy: &Ec2Copy) -> String {
        match copy {
            Ec2Copy::Snapshot(c) => format!("shared escrow copy {} (of {})", c.id, c.source_id),
            Ec2Copy::Image(i) => format!(
                "shared escrow AMI {} (of {}) and its backing snapshots {}",
                i.id,
                i.source_id,
                i.snapshots().join(", ")
            ),
        }
    }

    async fn share(&self, copy: &Ec2Copy) -> Result<()> {
        match copy {
            Ec2Copy::Snapshot(c) => {
                set_shared(&self.escrow, &c.id, &self.target_account, true).await
            }
            Ec2Copy::Image(i) => {
                set_image_shared(&self.escrow, i, &self.target_account, true).await
            }
        }
    }

    async fn unshare(&self, copy: &Ec2Copy) -> Result<()> {
        match copy {
            Ec2Copy::Snapshot(c) => {
                set_shared(&self.escrow, &c.id, &self.target_account, false).await
            }
            Ec2Copy::Image(i) => {
                set_image_shared(&self.escrow, i, &self.target_account, false).await
            }
        }
    }

    fn retracts_failed_share(&self, copy: &Ec2Copy) -> bool {
        matches!(copy, Ec2Copy::Image(_))
    }

    async fn start_copy(&self, copy: &Ec2Copy) -> Result<String> {
        match copy {
            Ec2Copy::Snapshot(c) => start_copy(&self.target, &c.id, &self.region, None).await,
            Ec2Copy::Image(i) => start_image_copy(&self.target, &i.id, &self.region).await,
        }
    }

    async fn wait_copy(&self, copy: &Ec2Copy, id: &str) -> Result<RecoveredCopy> {
        match copy {
            Ec2Copy::Snapshot(c) => {
                let size = wait_completed(&self.target, id, self.timeout, self.max_poll).await?;
                let mismatch = (size != c.size_gib).then(|| {
                    format!("the copy {id} has {size} GiB, the escrow copy {} GiB", c.size_gib)
                });
                Ok(RecoveredCopy::new(id, size.max(0) as u64 * GIB, mismatch))
            }
            Ec2Copy::Image(i) => {
                let devices =
                    wait_image_available(&self.target, id, self.timeout, self.max_poll).await?;
                let bytes = devices.iter().map(|d| d.size_gib.max(0) as u64 * GIB).sum();
                let mismatch = image_mismatch(&i.devices, &devices)
                    .map(|why| format!("the copy {id} has {why}"));
                Ok(RecoveredCopy::new(id, bytes, mismatch))
            }
        }
    }

    async fn delete_copy(&self, copy: &Ec2Copy, id: &str) -> Result<()> {
        match copy {
            Ec2Copy::Snapshot(_) => delete_snapshot(&self.target, id).await,
            Ec2Copy::Image(_) => delete_image(&self.target, id).await,
        }
    }

    fn copy_label(&self, copy: &Ec2Copy, id: &str) -> String {
        match copy {
            Ec2Copy::Snapshot(_) => format!("snapshot {id}"),
            Ec2Copy::Image(_) => format!("AMI {id} and its snapshots"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn copy(id: &str, source: &str, lineage: Option<&str>, secs: u64) -> EscrowSnapshot {
        EscrowSnapshot {
            id: id.into(),
            source_id: source.into(),
            source_account: None,
            lineage: lineage.map(str::to_string),
            started: Some(UNIX_EPOCH + Duration::from_secs(secs)),
            size_gib: 1,
        }
    }

    #[test]
    fn the_newest_copy_per_lineage_at_the_time() {
        let copies = || {
            vec![
                copy("e1", "s1", Some("vol-a"), 100),
                copy("e2", "s2", Some("vol-a"), 200),
                copy("e3", "s3", None, 150),
            ]
        };
        let ids = |v: Vec<EscrowSnapshot>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(as_of(copies(), None)), ["e2", "e3"]);
        let at = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(ids(as_of(copies(), at(160))), ["e1", "e3"]);
        assert_eq!(ids(as_of(copies(), at(120))), ["e1"]);
        assert!(as_of(copies(), at(50)).is_empty());
    }
}
