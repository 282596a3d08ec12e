//! The EC2 calls and helpers the snapshot and image sources, sinks and
//! restore share: sharing a snapshot, waiting for a snapshot or an image
//! (core's `poll_until`), finding escrow's copies, key checks, and reading
//! images (backing snapshots, sizes, creation times, names).

use std::time::Duration;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, Image, ImageState, OperationType, Snapshot, SnapshotAttributeName, SnapshotState, Tag,
};

use escrow_sync_aws::sdk_error;
pub(crate) use escrow_sync_aws::time::{fmt_time, system_time};
use escrow_sync_core::poll::{Polled, Polling, poll_until};
use escrow_sync_core::tags;
use escrow_sync_core::{Error, ErrorKind, Result};

pub(crate) const GIB: u64 = 1 << 30;

/// PlatformDetails naming licensed software AWS bills through a billing
/// product (a shared AMI with one cannot be copied).
pub(crate) const BILLED_PLATFORMS: &[&str] =
    &["Windows", "Red Hat", "SQL Server", "SUSE", "Ubuntu Pro"];

/// The snapshots a DescribeSnapshots paginator yields, as a stream; errors
/// name `resource`.
pub(crate) fn paged_snapshots(
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

pub(crate) fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// The images a DescribeImages paginator yields, as a stream; errors name
/// `resource`.
pub(crate) fn paged_images(
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
pub(crate) fn image_size(image: &Image) -> u64 {
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

pub(crate) fn state_is(image: &Image, states: &[ImageState]) -> bool {
    image.state().is_some_and(|s| states.contains(s))
}

/// An image's creation date, when the service's string can be read.
pub(crate) fn created(image: &Image) -> Option<aws_smithy_types::DateTime> {
    escrow_sync_aws::time::parse_time(image.creation_date()?)
}

/// An image's creation date in RFC 3339 UTC (as the snapshots' start times
/// are written); the service's string as is when it cannot be read.
pub(crate) fn creation_time(image: &Image) -> String {
    match created(image) {
        Some(t) => fmt_time(Some(&t)),
        None => image.creation_date().unwrap_or_default().to_string(),
    }
}

/// The id of the snapshot behind an image's root device.
pub(crate) fn root_snapshot(image: &Image) -> Option<&str> {
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
pub(crate) fn lineage<'a>(image: &'a Image, volume_of: impl Fn(&str) -> Option<&'a str>) -> String {
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
pub(crate) fn billing_refusal(image: &Image) -> Option<String> {
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
pub(crate) async fn describe_snapshots(
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
