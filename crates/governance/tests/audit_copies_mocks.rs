//! The audit's checks of escrow snapshot copies against aws-smithy-mocks:
//! EBS copies (AMI backing snapshots included) without a lock in force and
//! AMI copies without deregistration protection when their job asks for a
//! lock (high), and copies under AWS-managed keys (medium) for EC2, RDS and
//! Redshift. The shares checks run beside them and see nothing shared.

use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_locked_snapshots::DescribeLockedSnapshotsOutput;
use aws_sdk_ec2::operation::describe_snapshot_attribute::DescribeSnapshotAttributeOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::types::{Image, LockState, LockedSnapshotsInfo, Snapshot, Tag};
use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::types::{KeyManagerType, KeyMetadata};
use aws_sdk_rds::operation::describe_db_cluster_snapshot_attributes::DescribeDbClusterSnapshotAttributesOutput;
use aws_sdk_rds::operation::describe_db_cluster_snapshots::DescribeDbClusterSnapshotsOutput;
use aws_sdk_rds::operation::describe_db_snapshot_attributes::DescribeDbSnapshotAttributesOutput;
use aws_sdk_rds::operation::describe_db_snapshots::DescribeDbSnapshotsOutput;
use aws_sdk_rds::types::{DbClusterSnapshot, DbSnapshot};
use aws_sdk_redshift::operation::describe_cluster_snapshots::DescribeClusterSnapshotsOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;

use escrow_sync_core::tags;
use escrow_sync_governance::Inventory;
use escrow_sync_governance::audit::{Auditor, Finding, Severity};
use escrow_sync_governance::inventory::{Ec2Grant, Ec2LockGrant, RdsGrant, RedshiftGrant};

const ESCROW: &str = "222222222222";
const AWS_EBS: &str = "arn:aws:kms:us-east-1:222222222222:key/aws-ebs";
const AWS_RDS: &str = "arn:aws:kms:us-east-1:222222222222:key/aws-rds";
const ESCROW_KEY: &str = "arn:aws:kms:us-east-1:222222222222:key/escrow";

fn inventory() -> Inventory {
    Inventory {
        region: "us-east-1".into(),
        escrow_account: ESCROW.into(),
        primary_account: "111111111111".into(),
        ..Default::default()
    }
}

fn checks(found: &[Finding]) -> Vec<(Severity, &str, &str)> {
    found.iter().map(|f| (f.severity, f.check.as_str(), f.resource.as_str())).collect()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn ec2_tags(provenance: &str, job: Option<&str>) -> Vec<Tag> {
    let mut t = vec![Tag::builder().key(provenance).value("src").build()];
    if let Some(job) = job {
        t.push(Tag::builder().key(tags::JOB).value(job).build());
    }
    t
}

fn snapshot(id: &str, provenance: &str, job: Option<&str>, key: &str) -> Snapshot {
    Snapshot::builder()
        .snapshot_id(id)
        .owner_id(ESCROW)
        .encrypted(true)
        .kms_key_id(key)
        .set_tags(Some(ec2_tags(provenance, job)))
        .build()
}

fn image(id: &str, protection: &str, job: &str) -> Image {
    Image::builder()
        .image_id(id)
        .owner_id(ESCROW)
        .deregistration_protection(protection)
        .set_tags(Some(ec2_tags(tags::SOURCE_IMAGE_ID, Some(job))))
        .build()
}

/// The shares check's listings (no filter) answer nothing; the copies
/// check's (the provenance tag-key filter) answer `snapshots` and `images`.
fn ec2_listings(snapshots: Vec<Snapshot>, images: Vec<Image>) -> [Rule; 5] {
    [
        mock!(aws_sdk_ec2::Client::describe_snapshots)
            .match_requests(|r| r.filters().is_empty())
            .then_output(|| DescribeSnapshotsOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_snapshots)
            .match_requests(|r| {
                r.owner_ids() == ["self"]
                    && r.filters().len() == 1
                    && r.filters()[0].name() == Some("tag-key")
                    && r.filters()[0].values() == [tags::SOURCE_SNAPSHOT_ID, tags::SOURCE_IMAGE_ID]
            })
            .then_output(move || {
                DescribeSnapshotsOutput::builder().set_snapshots(Some(snapshots.clone())).build()
            }),
        mock!(aws_sdk_ec2::Client::describe_images)
            .match_requests(|r| r.filters().is_empty())
            .then_output(|| DescribeImagesOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_images)
            .match_requests(|r| {
                r.owners() == ["self"]
                    && r.filters().len() == 1
                    && r.filters()[0].values() == [tags::SOURCE_IMAGE_ID]
            })
            .then_output(move || {
                DescribeImagesOutput::builder().set_images(Some(images.clone())).build()
            }),
        mock!(aws_sdk_ec2::Client::describe_snapshot_attribute)
            .then_output(|| DescribeSnapshotAttributeOutput::builder().build()),
    ]
}

#[tokio::test]
async fn copies_a_locking_job_left_unlocked_or_unprotected_are_found() {
    let inv = Inventory {
        ec2: vec![
            Ec2Grant {
                name: "amis".into(),
                images: true,
                snapshots: true,
                lock: Some(Ec2LockGrant { mode: "compliance".into(), days: 30 }),
                ..Default::default()
            },
            Ec2Grant { name: "plain".into(), snapshots: true, ..Default::default() },
        ],
        ..inventory()
    };
    let snapshots = vec![
        snapshot("snap-locked", tags::SOURCE_SNAPSHOT_ID, Some("amis"), ESCROW_KEY),
        snapshot("snap-open", tags::SOURCE_SNAPSHOT_ID, Some("amis"), ESCROW_KEY),
        snapshot("snap-backing", tags::SOURCE_IMAGE_ID, Some("amis"), ESCROW_KEY),
        // Locked, but in governance mode where the job asks for compliance.
        snapshot("snap-gov", tags::SOURCE_SNAPSHOT_ID, Some("amis"), ESCROW_KEY),
        // Retagged to a job the config does not have: found, and held to
        // the strictest lock (locked here, so only unclaimed).
        snapshot("snap-retagged", tags::SOURCE_SNAPSHOT_ID, Some("gone"), ESCROW_KEY),
        // Another job's, and an untagged copy (not every job locks): fine.
        snapshot("snap-plain", tags::SOURCE_SNAPSHOT_ID, Some("plain"), ESCROW_KEY),
        snapshot("snap-untagged", tags::SOURCE_SNAPSHOT_ID, None, ESCROW_KEY),
    ];
    let images = vec![
        image("ami-open", "disabled", "amis"),
        image("ami-safe", "enabled-with-cooldown", "amis"),
        image("ami-plain", "disabled", "plain"),
        // Retagged out of its job: unclaimed, and held to the strictest lock.
        image("ami-retagged", "disabled", "gone"),
    ];
    let [a, b, c, d, e] = ec2_listings(snapshots, images);
    let locks = mock!(aws_sdk_ec2::Client::describe_locked_snapshots)
        .match_requests(|r| {
            r.snapshot_ids()
                == ["snap-backing", "snap-gov", "snap-locked", "snap-open", "snap-retagged"]
        })
        .then_output(|| {
            DescribeLockedSnapshotsOutput::builder()
                .snapshots(
                    LockedSnapshotsInfo::builder()
                        .snapshot_id("snap-locked")
                        .lock_state(LockState::Compliance)
                        .lock_expires_on(DateTime::from_secs(now() + 20 * 86_400))
                        .build(),
                )
                .snapshots(
                    LockedSnapshotsInfo::builder()
                        .snapshot_id("snap-retagged")
                        .lock_state(LockState::Compliance)
                        .lock_expires_on(DateTime::from_secs(now() + 3 * 86_400))
                        .build(),
                )
                .snapshots(
                    LockedSnapshotsInfo::builder()
                        .snapshot_id("snap-gov")
                        .lock_state(LockState::Governance)
                        .lock_expires_on(DateTime::from_secs(now() + 36_500 * 86_400))
                        .build(),
                )
                .snapshots(
                    LockedSnapshotsInfo::builder()
                        .snapshot_id("snap-backing")
                        .lock_state(LockState::Expired)
                        .lock_expires_on(DateTime::from_secs(now() - 86_400))
                        .build(),
                )
                .build()
        });
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&a, &b, &c, &d, &e, &locks]);
    let found = Auditor::new(inv).with_ec2_client(ec2).run().await.unwrap();
    assert_eq!(
        checks(&found),
        [
            (Severity::High, "ec2.image.deregistration-unprotected", "ami-open"),
            (Severity::High, "ec2.image.deregistration-unprotected", "ami-retagged"),
            (Severity::High, "ec2.image.unclaimed", "ami-retagged"),
            (Severity::High, "ec2.snapshot.unclaimed", "snap-retagged"),
            (Severity::High, "ec2.snapshot.unlocked", "snap-backing"),
            (Severity::High, "ec2.snapshot.unlocked", "snap-open"),
            (Severity::High, "ec2.snapshot.weak-lock", "snap-gov"),
        ]
    );
    assert!(found[3].problem.contains("escrow-sync:job=gone"), "{found:?}");
    assert!(found[3].problem.contains("(compliance mode, 30 days)"), "{found:?}");
    assert!(found[6].problem.contains("locked in governance mode until"), "{found:?}");
    assert!(found[6].fix.contains("--lock-mode compliance --lock-duration 30"), "{found:?}");
    assert!(found[4].problem.contains("compliance lock of 30 days"), "{found:?}");
    assert!(found[5].fix.contains("--lock-mode compliance --lock-duration 30"), "{found:?}");
    assert_eq!(locks.num_calls(), 1);

    // Without any lock asked (and no KMS client), the copies are not listed.
    let quiet = Inventory {
        ec2: vec![Ec2Grant { name: "plain".into(), snapshots: true, ..Default::default() }],
        ..inventory()
    };
    let [a, b, c, d, e] = ec2_listings(Vec::new(), Vec::new());
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&a, &b, &c, &d, &e]);
    assert!(Auditor::new(quiet).with_ec2_client(ec2).run().await.unwrap().is_empty());
    assert_eq!(b.num_calls(), 0);
}

/// KMS answering DescribeKey: the aws-* keys are AWS-managed.
fn kms() -> (aws_sdk_kms::Client, Rule) {
    let rule = mock!(aws_sdk_kms::Client::describe_key).then_compute_output(|r| {
        let key = r.key_id().unwrap_or_default().to_string();
        let manager =
            if key.contains("/aws-") { KeyManagerType::Aws } else { KeyManagerType::Customer };
        DescribeKeyOutput::builder()
            .key_metadata(KeyMetadata::builder().key_id(key).key_manager(manager).build().unwrap())
            .build()
    });
    (mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&rule]), rule)
}

fn rds_tags(escrow_copy: bool) -> Vec<aws_sdk_rds::types::Tag> {
    let key = if escrow_copy { tags::SOURCE_SNAPSHOT_ID } else { "team" };
    vec![aws_sdk_rds::types::Tag::builder().key(key).value("x").build()]
}

#[tokio::test]
async fn copies_under_aws_managed_keys_are_found_for_ec2_rds_and_redshift() {
    let inv = Inventory {
        ec2: vec![Ec2Grant { name: "ebs".into(), snapshots: true, ..Default::default() }],
        rds: vec![RdsGrant { name: "rds".into(), db: true, cluster: true, ..Default::default() }],
        redshift: vec![RedshiftGrant { name: "rs".into(), ..Default::default() }],
        ..inventory()
    };
    let snapshots = vec![
        snapshot("snap-aws", tags::SOURCE_SNAPSHOT_ID, Some("ebs"), AWS_EBS),
        snapshot("snap-cmk", tags::SOURCE_SNAPSHOT_ID, Some("ebs"), ESCROW_KEY),
        snapshot("snap-aws-2", tags::SOURCE_SNAPSHOT_ID, Some("ebs"), AWS_EBS),
    ];
    let [a, b, c, d, e] = ec2_listings(snapshots, Vec::new());
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&a, &b, &c, &d, &e]);
    let db = |id: &str, key: &str, escrow_copy: bool| {
        DbSnapshot::builder()
            .db_snapshot_identifier(id)
            .snapshot_type("manual")
            .kms_key_id(key)
            .set_tag_list(Some(rds_tags(escrow_copy)))
            .build()
    };
    let rds_rules = [
        mock!(aws_sdk_rds::Client::describe_db_snapshots).then_output(move || {
            DescribeDbSnapshotsOutput::builder()
                .db_snapshots(db("escrow-db-aws", AWS_RDS, true))
                .db_snapshots(db("escrow-db-cmk", ESCROW_KEY, true))
                .db_snapshots(db("someone-elses", AWS_RDS, false))
                .build()
        }),
        mock!(aws_sdk_rds::Client::describe_db_cluster_snapshots).then_output(|| {
            DescribeDbClusterSnapshotsOutput::builder()
                .db_cluster_snapshots(
                    DbClusterSnapshot::builder()
                        .db_cluster_snapshot_identifier("escrow-cluster-aws")
                        .snapshot_type("manual")
                        .kms_key_id(AWS_RDS)
                        .set_tag_list(Some(rds_tags(true)))
                        .build(),
                )
                .build()
        }),
        mock!(aws_sdk_rds::Client::describe_db_snapshot_attributes)
            .then_output(|| DescribeDbSnapshotAttributesOutput::builder().build()),
        mock!(aws_sdk_rds::Client::describe_db_cluster_snapshot_attributes)
            .then_output(|| DescribeDbClusterSnapshotAttributesOutput::builder().build()),
    ];
    let rds = mock_client!(aws_sdk_rds, RuleMode::MatchAny, &rds_rules.iter().collect::<Vec<_>>());
    let rs = |id: &str, key: Option<&str>| {
        aws_sdk_redshift::types::Snapshot::builder()
            .snapshot_identifier(id)
            .owner_account(ESCROW)
            .encrypted(true)
            .set_kms_key_id(key.map(str::to_string))
            .build()
    };
    let redshift_rule =
        mock!(aws_sdk_redshift::Client::describe_cluster_snapshots).then_output(move || {
            DescribeClusterSnapshotsOutput::builder()
                .snapshots(rs("escrow-rs-default", None))
                .snapshots(rs("escrow-rs-cmk", Some(ESCROW_KEY)))
                .build()
        });
    let redshift = mock_client!(aws_sdk_redshift, RuleMode::MatchAny, [&redshift_rule]);
    let (kms, describe_key) = kms();
    let found = Auditor::new(inv)
        .with_ec2_client(ec2)
        .with_rds_client(rds)
        .with_redshift_client(redshift)
        .with_kms_client(kms)
        .run()
        .await
        .unwrap();
    assert_eq!(
        checks(&found),
        [
            (Severity::Medium, "ec2.snapshot.aws-managed-key", "snap-aws"),
            (Severity::Medium, "ec2.snapshot.aws-managed-key", "snap-aws-2"),
            (Severity::Medium, "rds.snapshot.aws-managed-key", "rds snapshot escrow-cluster-aws"),
            (Severity::Medium, "rds.snapshot.aws-managed-key", "rds snapshot escrow-db-aws"),
            (
                Severity::Medium,
                "redshift.snapshot.aws-managed-key",
                "redshift snapshot escrow-rs-default"
            ),
        ]
    );
    assert!(found[0].problem.contains("cannot be shared with a recovery account"), "{found:?}");
    assert!(found[0].fix.contains("[escrow] kms_key_id"), "{found:?}");
    // One DescribeKey per key: aws-ebs, escrow, aws-rds.
    assert_eq!(describe_key.num_calls(), 3);
}
