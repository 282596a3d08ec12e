//! EBS Snapshot Lock and AMI deregistration protection on escrow copies,
//! against aws-smithy-mocks: the LockSnapshot request (mode, duration,
//! cooling-off period) for copies without a lock in force, renewal only of
//! locks lapsing within the window (to now + days, never shortened, never
//! weakened), DescribeLockedSnapshots paged and by ids, deregistration
//! protection with the cooldown, what `prune` keeps (and why) and what
//! `verify` reports `unprotected`.
//!
//! The emulator suite (tests/ec2_two_accounts.rs) runs the same through
//! xtask's moto patch, which models the lock state; these pin the request
//! shapes AWS expects.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_locked_snapshots::DescribeLockedSnapshotsOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::enable_image_deregistration_protection::EnableImageDeregistrationProtectionOutput;
use aws_sdk_ec2::operation::lock_snapshot::LockSnapshotOutput;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Image, ImageState, LockMode as SdkMode, LockState,
    LockedSnapshotsInfo, Snapshot, SnapshotState, Tag,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;

use escrow_sync_core::{EscrowCopy, Item, ItemKind, Retained, Sink};
use escrow_sync_ec2::{AmiSink, EbsSnapshotSink, LockMode, SnapshotLock};

const DAY: i64 = 86_400;

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn ec2(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules)
}

fn copy(id: &str, complete: bool) -> EscrowCopy {
    EscrowCopy {
        id: id.into(),
        source: format!("src-{id}"),
        lineage: "vol-1".into(),
        created: "2026-11-01T00:00:00Z".into(),
        complete,
        copied: None,
        job: Some("ebs".into()),
    }
}

/// A lock of `state` lapsing `days` days from now.
fn locked(id: &str, state: LockState, days: i64) -> LockedSnapshotsInfo {
    LockedSnapshotsInfo::builder()
        .snapshot_id(id)
        .owner_id("222222222222")
        .lock_state(state)
        .lock_expires_on(DateTime::from_secs(now() + days * DAY))
        .build()
}

/// DescribeLockedSnapshots answering `pages` in turn (by NextToken), each
/// request naming exactly `ids`.
fn describe_locks(ids: &'static [&'static str], pages: Vec<Vec<LockedSnapshotsInfo>>) -> Rule {
    let pages = Arc::new(pages);
    mock!(Client::describe_locked_snapshots)
        .match_requests(move |r| r.snapshot_ids() == ids && r.max_results().is_none())
        .then_compute_output(move |r| {
            let page: usize = r.next_token().map_or(0, |t| t.parse().unwrap());
            let mut out =
                DescribeLockedSnapshotsOutput::builder().set_snapshots(Some(pages[page].clone()));
            if page + 1 < pages.len() {
                out = out.next_token((page + 1).to_string());
            }
            out.build()
        })
}

type Locks = Arc<Mutex<Vec<(String, String, Option<i32>, Option<i32>, Option<i64>)>>>;

/// LockSnapshot, recording (id, mode, duration, cool-off, expiration).
fn lock_rule(calls: &Locks) -> Rule {
    let calls = calls.clone();
    mock!(Client::lock_snapshot).then_compute_output(move |r| {
        calls.lock().unwrap().push((
            r.snapshot_id().unwrap().to_string(),
            r.lock_mode().unwrap().as_str().to_string(),
            r.lock_duration(),
            r.cool_off_period(),
            r.expiration_date().map(|d| d.secs()),
        ));
        LockSnapshotOutput::builder().snapshot_id(r.snapshot_id().unwrap()).build()
    })
}

#[tokio::test]
async fn copies_without_a_lock_in_force_are_locked_with_the_jobs_mode_duration_and_cool_off() {
    // snap-new: never locked; snap-lapsed: its lock expired; snap-held: a
    // compliance lock for 29 more days (outside the window of 8); the
    // pending copy is left for the run that completes it. The locks come
    // back over two pages.
    let describe = describe_locks(
        &["snap-new", "snap-lapsed", "snap-held"],
        vec![
            vec![locked("snap-lapsed", LockState::Expired, -2)],
            vec![locked("snap-held", LockState::Compliance, 29)],
        ],
    );
    let calls = Locks::default();
    let lock = lock_rule(&calls);
    let sink = EbsSnapshotSink::from_client(ec2(&[&describe, &lock]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Compliance, 30).with_cool_off_hours(12)));
    let copies = [
        copy("snap-new", true),
        copy("snap-lapsed", true),
        copy("snap-held", true),
        copy("snap-pending", false),
    ];
    let upkeep = sink.keep_locked(&copies).await.unwrap();
    assert_eq!((upkeep.locked, upkeep.renewed, upkeep.unchanged), (2, 0, 1), "{upkeep:?}");
    assert_eq!(describe.num_calls(), 2, "one request, two pages");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            ("snap-new".into(), "compliance".into(), Some(30), Some(12), None),
            ("snap-lapsed".into(), "compliance".into(), Some(30), Some(12), None),
        ]
    );

    // A governance lock (an insider's, for 100 years) where the job asks
    // for compliance: locked again, in compliance mode for the job's days.
    let describe = describe_locks(
        &["snap-gov", "snap-comp"],
        vec![vec![
            locked("snap-gov", LockState::Governance, 36_500),
            locked("snap-comp", LockState::Compliance, 29),
        ]],
    );
    let calls = Locks::default();
    let lock = lock_rule(&calls);
    let sink = EbsSnapshotSink::from_client(ec2(&[&describe, &lock]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Compliance, 30).with_cool_off_hours(12)));
    let upkeep =
        sink.keep_locked(&[copy("snap-gov", true), copy("snap-comp", true)]).await.unwrap();
    assert_eq!((upkeep.locked, upkeep.unchanged), (1, 1), "{upkeep:?}");
    assert_eq!(
        calls.lock().unwrap().clone(),
        [("snap-gov".into(), "compliance".into(), Some(30), Some(12), None)]
    );

    // Governance: no cooling-off period is sent (AWS refuses one).
    let describe = describe_locks(&["snap-new"], vec![vec![]]);
    let calls = Locks::default();
    let lock = lock_rule(&calls);
    let sink = EbsSnapshotSink::from_client(ec2(&[&describe, &lock]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Governance, 7)));
    sink.keep_locked(&[copy("snap-new", true)]).await.unwrap();
    assert_eq!(
        calls.lock().unwrap().clone(),
        [("snap-new".into(), "governance".into(), Some(7), None, None)]
    );
}

#[tokio::test]
async fn only_locks_lapsing_within_the_window_are_renewed_to_now_plus_days_never_shortened() {
    // Governance for 100 days, renewed within 25: snap-soon (a compliance
    // lock lapsing in 10 days) is renewed, and stays compliance; snap-later
    // (60 days) and snap-longer (200 days, longer than the job's own) are
    // left as they are.
    let describe = describe_locks(
        &["snap-soon", "snap-later", "snap-longer"],
        vec![vec![
            locked("snap-soon", LockState::Compliance, 10),
            locked("snap-later", LockState::Governance, 60),
            locked("snap-longer", LockState::Governance, 200),
        ]],
    );
    let calls = Locks::default();
    let lock = lock_rule(&calls);
    let sink = EbsSnapshotSink::from_client(ec2(&[&describe, &lock]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Governance, 100)));
    let before = now();
    let copies = [copy("snap-soon", true), copy("snap-later", true), copy("snap-longer", true)];
    let upkeep = sink.keep_locked(&copies).await.unwrap();
    let after = now();
    assert_eq!((upkeep.locked, upkeep.renewed, upkeep.unchanged), (0, 1, 2), "{upkeep:?}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (id, mode, duration, cool_off, until) = &calls[0];
    assert_eq!((id.as_str(), mode.as_str()), ("snap-soon", "compliance"), "never weakened");
    assert_eq!((*duration, *cool_off), (None, None), "an expiration date, no cooling-off");
    let until = until.unwrap();
    assert!(until >= before + 100 * DAY && until <= after + 100 * DAY, "now + days: {until}");

    // A sink without a lock makes no call at all.
    let quiet = EbsSnapshotSink::from_client(ec2(&[]), "us-east-1");
    assert_eq!(quiet.keep_locked(&copies).await.unwrap(), Default::default());
}

fn image(id: &str, protection: &str, snapshots: &[&str]) -> Image {
    let mut b = Image::builder()
        .image_id(id)
        .state(ImageState::Available)
        .owner_id("222222222222")
        .creation_date("2026-11-28T21:43:21.000Z")
        .deregistration_protection(protection)
        .tags(Tag::builder().key(escrow_sync_core::tags::SOURCE_IMAGE_ID).value("ami-src").build());
    for (n, s) in snapshots.iter().enumerate() {
        b = b.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(format!("/dev/xvd{}", (b'a' + n as u8) as char))
                .ebs(EbsBlockDevice::builder().snapshot_id(*s).volume_size(8).build())
                .build(),
        );
    }
    b.build()
}

fn escrow_images(list: Vec<Image>) -> Rule {
    mock!(Client::describe_images)
        .match_requests(|r| r.owners() == ["self"])
        .then_output(move || DescribeImagesOutput::builder().set_images(Some(list.clone())).build())
}

#[tokio::test]
async fn ami_copies_get_deregistration_protection_with_cooldown_and_their_snapshots_locks() {
    let images = escrow_images(vec![
        image("ami-open", "disabled", &["snap-1", "snap-2"]),
        image("ami-safe", "enabled-with-cooldown", &["snap-3"]),
        image("ami-other", "disabled", &["snap-9"]),
    ]);
    let describe = describe_locks(
        &["snap-1", "snap-2", "snap-3"],
        vec![vec![locked("snap-3", LockState::Compliance, 300)]],
    );
    let enabled = Arc::new(Mutex::new(Vec::new()));
    let seen = enabled.clone();
    let protect =
        mock!(Client::enable_image_deregistration_protection).then_compute_output(move |r| {
            seen.lock().unwrap().push((r.image_id().unwrap().to_string(), r.with_cooldown()));
            EnableImageDeregistrationProtectionOutput::builder().r#return("true").build()
        });
    let calls = Locks::default();
    let lock = lock_rule(&calls);
    let sink = AmiSink::from_client(ec2(&[&images, &describe, &protect, &lock]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Compliance, 365)));
    // ami-other is another job's copy: not asked.
    let upkeep = sink.keep_locked(&[copy("ami-open", true), copy("ami-safe", true)]).await.unwrap();
    assert_eq!((upkeep.protected, upkeep.locked, upkeep.unchanged), (1, 2, 1), "{upkeep:?}");
    assert_eq!(enabled.lock().unwrap().clone(), [("ami-open".to_string(), Some(true))]);
    let locked_ids: Vec<_> = calls.lock().unwrap().iter().map(|c| c.0.clone()).collect();
    assert_eq!(locked_ids, ["snap-1", "snap-2"]);
    assert!(calls.lock().unwrap().iter().all(|c| c.1 == "compliance" && c.2 == Some(365)));

    // Governance: deregistration protection without the cooldown.
    let images = escrow_images(vec![image("ami-open", "disabled", &["snap-1"])]);
    let describe =
        describe_locks(&["snap-1"], vec![vec![locked("snap-1", LockState::Governance, 300)]]);
    let enabled = Arc::new(Mutex::new(Vec::new()));
    let seen = enabled.clone();
    let protect =
        mock!(Client::enable_image_deregistration_protection).then_compute_output(move |r| {
            seen.lock().unwrap().push(r.with_cooldown());
            EnableImageDeregistrationProtectionOutput::builder().build()
        });
    let sink = AmiSink::from_client(ec2(&[&images, &describe, &protect]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Governance, 365)));
    sink.keep_locked(&[copy("ami-open", true)]).await.unwrap();
    assert_eq!(enabled.lock().unwrap().clone(), [Some(false)]);
}

#[tokio::test]
async fn prune_is_told_which_copies_a_lock_keeps_and_until_when() {
    let expires = now() + 40 * DAY;
    let describe = mock!(Client::describe_locked_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-locked", "snap-lapsed", "snap-free"])
        .then_output(move || {
            DescribeLockedSnapshotsOutput::builder()
                .snapshots(
                    LockedSnapshotsInfo::builder()
                        .snapshot_id("snap-locked")
                        .lock_state(LockState::ComplianceCooloff)
                        .lock_expires_on(DateTime::from_secs(expires))
                        .build(),
                )
                .snapshots(locked("snap-lapsed", LockState::Expired, -1))
                .build()
        });
    // Whatever the sink's own config: a lock set earlier holds.
    let sink = EbsSnapshotSink::from_client(ec2(&[&describe]), "us-east-1");
    let held = sink
        .locked(&[copy("snap-locked", true), copy("snap-lapsed", true), copy("snap-free", true)])
        .await
        .unwrap();
    let until = escrow_sync_core::rfc3339(escrow_sync_core::time::from_epoch(expires));
    assert_eq!(
        held.into_iter().collect::<Vec<_>>(),
        [("snap-locked".to_string(), format!("locked (compliance) until {until}"))]
    );

    // AMIs: protected, or backed by a locked snapshot, are kept.
    let images = escrow_images(vec![
        image("ami-protected", "enabled-without-cooldown", &["snap-a"]),
        image("ami-backed", "disabled", &["snap-b"]),
        image("ami-free", "disabled", &["snap-c"]),
    ]);
    let describe = describe_locks(
        &["snap-a", "snap-b", "snap-c"],
        vec![vec![locked("snap-b", LockState::Governance, 5)]],
    );
    let sink = AmiSink::from_client(ec2(&[&images, &describe]), "us-east-1");
    let held = sink
        .locked(&[copy("ami-protected", true), copy("ami-backed", true), copy("ami-free", true)])
        .await
        .unwrap();
    assert_eq!(held.keys().collect::<Vec<_>>(), ["ami-backed", "ami-protected"]);
    assert_eq!(held["ami-protected"], "deregistration protection (enabled-without-cooldown)");
    assert!(held["ami-backed"].starts_with("backing snapshot snap-b locked (governance) until "));
}

fn escrow_snapshot(id: &str) -> Snapshot {
    Snapshot::builder()
        .snapshot_id(id)
        .state(SnapshotState::Completed)
        .encrypted(true)
        .kms_key_id("arn:aws:kms:us-east-1:222222222222:key/escrow")
        .start_time(DateTime::from_secs(1_700_000_000))
        .tags(
            Tag::builder()
                .key(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID)
                .value("snap-src")
                .build(),
        )
        .build()
}

#[tokio::test]
async fn verify_reports_copies_without_a_lock_in_force_as_unprotected() {
    let listing = mock!(Client::describe_snapshots).then_output(|| {
        DescribeSnapshotsOutput::builder().snapshots(escrow_snapshot("snap-copy")).build()
    });
    let unlocked = describe_locks(&["snap-copy"], vec![vec![]]);
    let sink = EbsSnapshotSink::from_client(ec2(&[&listing, &unlocked]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Compliance, 30)));
    let item = Item::new("snap-src", ItemKind::Snapshot, 8 << 30, "snap-src");
    let problems = sink.audit(&item).await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("escrow copy snap-copy: it has no snapshot lock"));

    let held =
        describe_locks(&["snap-copy"], vec![vec![locked("snap-copy", LockState::Compliance, 3)]]);
    let sink = EbsSnapshotSink::from_client(ec2(&[&listing, &held]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Compliance, 30)));
    assert_eq!(sink.audit(&item).await.unwrap(), Vec::<String>::new());

    // A governance lock where the job asks for compliance: reported (it can
    // be shortened by whoever holds ec2:LockSnapshot); fine for a
    // governance job.
    let weaker =
        describe_locks(&["snap-copy"], vec![vec![locked("snap-copy", LockState::Governance, 3)]]);
    let sink = EbsSnapshotSink::from_client(ec2(&[&listing, &weaker]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Compliance, 30)));
    let problems = sink.audit(&item).await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("escrow copy snap-copy: its snapshot lock is locked (governance)"),
        "{problems:?}"
    );
    assert!(problems[0].contains("asks for compliance mode"), "{problems:?}");
    let sink = EbsSnapshotSink::from_client(ec2(&[&listing, &weaker]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Governance, 30)));
    assert_eq!(sink.audit(&item).await.unwrap(), Vec::<String>::new());

    // An AMI copy without deregistration protection, one snapshot unlocked.
    let images = escrow_images(vec![image("ami-copy", "disabled", &["snap-x", "snap-y"])]);
    let snaps = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-x", "snap-y"])
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(escrow_snapshot("snap-x"))
                .snapshots(escrow_snapshot("snap-y"))
                .build()
        });
    let locks = describe_locks(
        &["snap-x", "snap-y"],
        vec![vec![
            locked("snap-x", LockState::Compliance, 30),
            locked("snap-y", LockState::Expired, -1),
        ]],
    );
    let sink = AmiSink::from_client(ec2(&[&images, &snaps, &locks]), "us-east-1")
        .with_lock(Some(SnapshotLock::new(LockMode::Compliance, 30)));
    let problems =
        sink.audit(&Item::new("ami-src", ItemKind::Snapshot, 1, "ami-src")).await.unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().all(|p| p.contains("lock") || p.contains("protection")),
        "{problems:?}"
    );
    assert!(problems[0].contains("ami-copy has no deregistration protection"), "{problems:?}");
    assert!(problems[1].contains("backing snapshot snap-y): its snapshot lock expired"));
}

#[test]
fn the_sdk_lock_modes_are_the_ones_sent() {
    assert_eq!(SdkMode::Compliance.as_str(), LockMode::Compliance.as_str());
    assert_eq!(SdkMode::Governance.as_str(), LockMode::Governance.as_str());
}
