//! Restoring AMIs from escrow into a recovery account, against
//! aws-smithy-mocks: the escrow listing (own available images carrying the
//! provenance tag) and the newest copy per source image at a time; the
//! share — the launch permission (UserId) AND each backing snapshot's
//! createVolumePermission in the OperationType + UserIds form — and its
//! removal, which tries every part; the recovery account's CopyImage (the
//! escrow image id and region, encrypted, no fixed ClientToken, the image and its
//! snapshots tagged with the escrow image they came from); a copy that
//! stays pending then becomes available, and one that fails, reported with
//! its reason; the drill's comparison of block devices; and the clean-up
//! (deregister, then delete the snapshots found before).
//!
//! The emulator suite (tests/restore_drills.rs) runs the restore end to end;
//! moto cannot show a copy pending or failed, or an AMI with more than one
//! block device, which these cover.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::operation::copy_image::CopyImageOutput;
use aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput;
use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::modify_image_attribute::ModifyImageAttributeOutput;
use aws_sdk_ec2::operation::modify_snapshot_attribute::{
    ModifySnapshotAttributeError, ModifySnapshotAttributeOutput,
};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Image, ImageState, OperationType, ResourceType,
    StateReason, Tag,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use escrow_sync_core::ErrorKind;

use escrow_sync_ec2::restore::{
    Device, EscrowImage, delete_image, escrow_images, image_mismatch, images_as_of,
    set_image_shared, start_image_copy, wait_image_available,
};

const PRIMARY: &str = "111111111111";
const RECOVERY: &str = "333333333333";

fn ec2(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules, |c| c.retry_config(
        RetryConfig::standard().with_max_attempts(1).with_initial_backoff(Duration::from_millis(1))
    ))
}

fn mapping(device: &str, snapshot: &str, gib: i32) -> BlockDeviceMapping {
    BlockDeviceMapping::builder()
        .device_name(device)
        .ebs(EbsBlockDevice::builder().snapshot_id(snapshot).volume_size(gib).build())
        .build()
}

/// An image with a root of 8 GiB and a data volume of 2 GiB.
fn image(id: &str, state: ImageState, created: &str, tags: &[(&str, &str)]) -> Image {
    Image::builder()
        .image_id(id)
        .state(state)
        .creation_date(created)
        .block_device_mappings(mapping("/dev/xvda", &format!("{id}-root"), 8))
        .block_device_mappings(mapping("/dev/xvdb", &format!("{id}-data"), 2))
        .set_tags(Some(
            tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect(),
        ))
        .build()
}

fn images(list: Vec<Image>) -> DescribeImagesOutput {
    DescribeImagesOutput::builder().set_images(Some(list)).build()
}

fn escrow_image(devices: &[(&str, i32)]) -> EscrowImage {
    EscrowImage {
        id: "ami-e".into(),
        source_id: "ami-1".into(),
        source_account: Some(PRIMARY.into()),
        started: None,
        devices: devices
            .iter()
            .map(|(name, gib)| Device {
                name: name.to_string(),
                size_gib: *gib,
                snapshot_id: Some(format!("snap-{}", name.trim_start_matches("/dev/"))),
            })
            .collect(),
    }
}

#[tokio::test]
async fn escrow_images_are_its_own_available_copies_newest_per_source_at_a_time() {
    let list = mock!(Client::describe_images)
        .match_requests(|r| {
            let filter = |name: &str| {
                r.filters().iter().find(|f| f.name() == Some(name)).map(|f| f.values().to_vec())
            };
            r.owners() == ["self"]
                && filter("tag-key")
                    == Some(vec![escrow_sync_core::tags::SOURCE_IMAGE_ID.to_string()])
                && filter("state") == Some(vec!["available".to_string()])
        })
        .then_output(|| {
            let of = |source| {
                [
                    (escrow_sync_core::tags::SOURCE_IMAGE_ID, source),
                    ("escrow-sync:source-account", PRIMARY),
                ]
            };
            images(vec![
                image("ami-e1", ImageState::Available, "2026-11-01T00:00:00.000Z", &of("ami-1")),
                image("ami-e2", ImageState::Available, "2026-11-20T00:00:00.000Z", &of("ami-1")),
                image("ami-e3", ImageState::Available, "2026-11-10T00:00:00.000Z", &of("ami-2")),
                // Not escrow-sync's: no provenance.
                image("ami-x", ImageState::Available, "2026-11-10T00:00:00.000Z", &[]),
            ])
        });
    let client = ec2(&[&list]);
    let all = escrow_images(&client).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    let e1 = all.iter().find(|i| i.id == "ami-e1").unwrap();
    assert_eq!(e1.source_id, "ami-1");
    assert_eq!(e1.source_account.as_deref(), Some(PRIMARY));
    assert_eq!(e1.size_gib(), 10);
    assert_eq!(e1.snapshots(), ["ami-e1-root", "ami-e1-data"]);
    let ids = |v: Vec<EscrowImage>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(ids(images_as_of(all.clone(), None)), ["ami-e2", "ami-e3"]);
    let at = |t: &str| {
        let t =
            aws_smithy_types::DateTime::from_str(t, aws_smithy_types::date_time::Format::DateTime)
                .unwrap();
        Some(SystemTime::try_from(t).unwrap())
    };
    assert_eq!(ids(images_as_of(all.clone(), at("2026-11-15T00:00:00Z"))), ["ami-e1", "ami-e3"]);
    assert!(images_as_of(all, at("2026-10-01T00:00:00Z")).is_empty());
}

#[tokio::test]
async fn a_share_adds_the_launch_permission_and_every_backing_snapshot() {
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let c1 = calls.clone();
    let launch = mock!(Client::modify_image_attribute)
        .match_requests(move |r| {
            let lp = r.launch_permission().expect("a launchPermission change");
            let (op, who) = match (lp.add(), lp.remove()) {
                ([p], []) => ("add", p.user_id()),
                ([], [p]) => ("remove", p.user_id()),
                other => panic!("one permission at a time: {other:?}"),
            };
            assert_eq!((r.image_id(), who), (Some("ami-e"), Some(RECOVERY)));
            c1.lock().unwrap().push(format!("{op} ami-e"));
            true
        })
        .then_output(|| ModifyImageAttributeOutput::builder().build());
    let c2 = calls.clone();
    let volumes = mock!(Client::modify_snapshot_attribute)
        .match_requests(move |r| {
            // The OperationType + UserIds form (moto ignores
            // CreateVolumePermission.Add; AWS takes both).
            assert_eq!(r.user_ids(), [RECOVERY]);
            assert!(r.create_volume_permission().is_none(), "{r:?}");
            assert_eq!(
                r.attribute(),
                Some(&aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            );
            let op = match r.operation_type() {
                Some(OperationType::Add) => "add",
                Some(OperationType::Remove) => "remove",
                other => panic!("{other:?}"),
            };
            c2.lock().unwrap().push(format!("{op} {}", r.snapshot_id().unwrap()));
            true
        })
        .then_output(|| ModifySnapshotAttributeOutput::builder().build());
    let client = ec2(&[&launch, &volumes]);
    let image = escrow_image(&[("/dev/xvda", 8), ("/dev/xvdb", 2)]);
    set_image_shared(&client, &image, RECOVERY, true).await.unwrap();
    set_image_shared(&client, &image, RECOVERY, false).await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "add ami-e",
            "add snap-xvda",
            "add snap-xvdb",
            "remove ami-e",
            "remove snap-xvda",
            "remove snap-xvdb"
        ]
    );
}

#[tokio::test]
async fn removing_a_share_tries_every_part_and_answers_the_first_error() {
    let launch = mock!(Client::modify_image_attribute)
        .then_output(|| ModifyImageAttributeOutput::builder().build());
    let denied = mock!(Client::modify_snapshot_attribute)
        .match_requests(|r| r.snapshot_id() == Some("snap-xvda"))
        .then_error(|| {
            ModifySnapshotAttributeError::generic(
                aws_sdk_ec2::error::ErrorMetadata::builder()
                    .code("UnauthorizedOperation")
                    .message("no")
                    .build(),
            )
        });
    let other = mock!(Client::modify_snapshot_attribute)
        .match_requests(|r| r.snapshot_id() == Some("snap-xvdb"))
        .then_output(|| ModifySnapshotAttributeOutput::builder().build());
    let client = ec2(&[&launch, &denied, &other]);
    let image = escrow_image(&[("/dev/xvda", 8), ("/dev/xvdb", 2)]);
    let err = set_image_shared(&client, &image, RECOVERY, false).await.unwrap_err();
    assert!(err.to_string().contains("snap-xvda"), "{err}");
    assert_eq!(other.num_calls(), 1, "the second snapshot is unshared all the same");
}

#[tokio::test]
async fn the_recovery_copy_names_the_escrow_image_and_tags_image_and_snapshots() {
    let copy = mock!(Client::copy_image)
        .match_requests(|r| {
            let tagged = |kind: ResourceType| {
                r.tag_specifications().iter().any(|s| {
                    s.resource_type() == Some(&kind)
                        && s.tags().iter().any(|t| {
                            t.key() == Some(escrow_sync_core::tags::RESTORED_FROM)
                                && t.value() == Some("ami-e")
                        })
                })
            };
            r.source_image_id() == Some("ami-e")
                && r.source_region() == Some("us-east-1")
                && r.encrypted() == Some(true)
                && r.kms_key_id().is_none()
                // The SDK's random token, never a fixed one, which would
                // answer a drill's deregistered copy again.
                && !r.client_token().is_some_and(|t| t.starts_with("escrow-sync"))
                && r.name().is_some_and(|n| n.starts_with("escrow-sync-restore-ami-e-"))
                && tagged(ResourceType::Image)
                && tagged(ResourceType::Snapshot)
        })
        .then_output(|| CopyImageOutput::builder().image_id("ami-r").build());
    let client = ec2(&[&copy]);
    assert_eq!(start_image_copy(&client, "ami-e", "us-east-1").await.unwrap(), "ami-r");
    assert_eq!(copy.num_calls(), 1);
}

#[tokio::test]
async fn a_copy_is_waited_on_until_available_and_a_failed_one_reported() {
    let poll = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-r"])
        .sequence()
        .output(|| {
            images(vec![image("ami-r", ImageState::Pending, "2026-11-28T00:00:00.000Z", &[])])
        })
        .times(2)
        .output(|| {
            images(vec![image("ami-r", ImageState::Available, "2026-11-28T00:00:00.000Z", &[])])
        })
        .build();
    let failed = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-f"])
        .then_output(|| {
            let mut i = image("ami-f", ImageState::Failed, "2026-11-28T00:00:00.000Z", &[]);
            i.state_reason =
                Some(StateReason::builder().message("Client.KmsKeyNotAccessible").build());
            images(vec![i])
        });
    let client = ec2(&[&poll, &failed]);
    let (timeout, poll_max) = (Duration::from_secs(5), Duration::from_millis(1));
    let devices = wait_image_available(&client, "ami-r", timeout, poll_max).await.unwrap();
    assert_eq!(devices.iter().map(|d| d.size_gib).collect::<Vec<_>>(), [8, 2]);
    let err = wait_image_available(&client, "ami-f", timeout, poll_max).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    assert!(err.to_string().contains("KmsKeyNotAccessible"), "{err}");
}

#[test]
fn a_drill_compares_the_number_and_sizes_of_block_devices() {
    let escrow = escrow_image(&[("/dev/xvda", 8), ("/dev/xvdb", 2)]).devices;
    let same = escrow_image(&[("/dev/xvdb", 2), ("/dev/xvda", 8)]).devices;
    assert_eq!(image_mismatch(&escrow, &same), None, "order does not matter");
    let fewer = escrow_image(&[("/dev/xvda", 8)]).devices;
    let why = image_mismatch(&escrow, &fewer).unwrap();
    assert!(why.contains("1 block devices") && why.contains("2"), "{why}");
    let smaller = escrow_image(&[("/dev/xvda", 8), ("/dev/xvdb", 1)]).devices;
    let why = image_mismatch(&escrow, &smaller).unwrap();
    assert!(why.contains("/dev/xvdb has 1 GiB"), "{why}");
}

#[tokio::test]
async fn the_clean_up_deregisters_then_deletes_the_snapshots_it_found_before() {
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let describe =
        mock!(Client::describe_images).match_requests(|r| r.image_ids() == ["ami-r"]).then_output(
            || images(vec![image("ami-r", ImageState::Available, "2026-11-28T00:00:00.000Z", &[])]),
        );
    let o1 = order.clone();
    let deregister = mock!(Client::deregister_image)
        .match_requests(move |r| {
            o1.lock().unwrap().push(format!("deregister {}", r.image_id().unwrap()));
            true
        })
        .then_output(|| DeregisterImageOutput::builder().build());
    let o2 = order.clone();
    let delete = mock!(Client::delete_snapshot)
        .match_requests(move |r| {
            o2.lock().unwrap().push(format!("delete {}", r.snapshot_id().unwrap()));
            true
        })
        .then_output(|| DeleteSnapshotOutput::builder().build());
    let client = ec2(&[&describe, &deregister, &delete]);
    delete_image(&client, "ami-r").await.unwrap();
    assert_eq!(
        *order.lock().unwrap(),
        ["deregister ami-r", "delete ami-r-root", "delete ami-r-data"]
    );
}

/// The generic snapshot restore over `Ec2Restore`, as `restore --drill`
/// runs it: the escrow copy of snap-1 is shared, copied into the recovery
/// account, found smaller than the escrow copy (a mismatch), the share
/// removed and the copy deleted.
#[tokio::test]
async fn a_drill_through_the_snapshot_restore_contract_checks_and_cleans_up() {
    use aws_sdk_ec2::operation::copy_snapshot::CopySnapshotOutput;
    use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
    use aws_sdk_ec2::types::{Snapshot, SnapshotState};
    use escrow_sync_core::snapshot::{SnapshotRestoreRequest, restore};
    use escrow_sync_ec2::restore::Ec2Restore;

    let snapshot = |id: &str, gib: i32, tags: &[(&str, &str)]| {
        Snapshot::builder()
            .snapshot_id(id)
            .state(SnapshotState::Completed)
            .volume_size(gib)
            .start_time(aws_smithy_types::DateTime::from_secs(1_795_000_000))
            .set_tags(Some(
                tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()).collect(),
            ))
            .build()
    };
    let held = mock!(Client::describe_snapshots)
        .match_requests(|r| r.owner_ids() == ["self"])
        .then_output(move || {
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot(
                    "snap-e",
                    8,
                    &[
                        (escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, "snap-1"),
                        (escrow_sync_core::tags::SOURCE_ACCOUNT, PRIMARY),
                        (escrow_sync_core::tags::LINEAGE, "vol-1"),
                    ],
                ))
                // Another primary's: left out.
                .snapshots(snapshot(
                    "snap-o",
                    8,
                    &[
                        (escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, "snap-1"),
                        (escrow_sync_core::tags::SOURCE_ACCOUNT, "444444444444"),
                    ],
                ))
                .build()
        });
    let shares = mock!(Client::modify_snapshot_attribute)
        .match_requests(|r| r.snapshot_id() == Some("snap-e") && r.user_ids() == [RECOVERY])
        .then_output(|| ModifySnapshotAttributeOutput::builder().build());
    let escrow = ec2(&[&held, &shares]);

    let copy = mock!(Client::copy_snapshot)
        .match_requests(|r| r.source_snapshot_id() == Some("snap-e"))
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-r").build());
    let done = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-r"])
        .then_output(move || {
            DescribeSnapshotsOutput::builder().snapshots(snapshot("snap-r", 4, &[])).build()
        });
    let delete = mock!(Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some("snap-r"))
        .then_output(|| DeleteSnapshotOutput::builder().build());
    let target = ec2(&[&copy, &done, &delete]);

    let kind = Ec2Restore::from_clients(escrow, target, RECOVERY, "us-east-1", PRIMARY)
        .with_selection(&["snap-1".to_string()], true, true)
        .with_wait(Duration::from_secs(5), Duration::from_millis(1));

    // A dry run lists and changes nothing.
    let plan = restore(&kind, &SnapshotRestoreRequest::new("volumes")).await.unwrap();
    assert_eq!((plan.restored, plan.bytes), (1, 8 << 30));
    assert_eq!(plan.source, "ebs://escrow/us-east-1", "no AMI ids named: no ami://");
    assert_eq!(plan.notes, ["would share escrow copy snap-e (of snap-1, 8 GiB)"]);
    assert_eq!((shares.num_calls(), copy.num_calls()), (0, 0));

    let out =
        restore(&kind, &SnapshotRestoreRequest::new("volumes").with_drill(true)).await.unwrap();
    assert!(out.failed.is_empty(), "{:?}", out.failed);
    assert_eq!(out.notes, ["copied escrow copy snap-e (of snap-1) to snap-r"]);
    let drill = out.drill.unwrap();
    assert_eq!(drill.verified, 0);
    assert_eq!(drill.mismatched, ["snap-1: the copy snap-r has 4 GiB, the escrow copy 8 GiB"]);
    assert_eq!((drill.cleaned_items, drill.cleaned_target), (1, true));
    assert_eq!(shares.num_calls(), 2, "shared, then the share removed");
    assert_eq!((copy.num_calls(), delete.num_calls()), (1, 1));
}
