//! Restoring RDS DB snapshots and Aurora cluster snapshots from escrow into
//! a recovery account, against aws-smithy-mocks: the escrow listing (own
//! available manual copies carrying the provenance tag, engine and storage
//! read); the share through the `restore` attribute (exactly the recovery
//! account added, then removed) for both kinds; the recovery copy by the
//! escrow copy's ARN, under the given key of the recovery account, tagged
//! with the ARN it came from and nothing else (no CopyTags); a key out of
//! reach reported with what the escrow key must grant the recovery account
//! (moto does not enforce key policies across accounts); a copy in
//! progress waited on, one that fails reported; and the drill's clean-up
//! of a copy already gone.
//!
//! The emulator suite (tests/restore_drills.rs) runs the restore end to end.

use std::time::Duration;

use aws_sdk_rds::Client;
use aws_sdk_rds::config::retry::RetryConfig;
use aws_sdk_rds::operation::copy_db_cluster_snapshot::CopyDbClusterSnapshotOutput;
use aws_sdk_rds::operation::copy_db_snapshot::CopyDbSnapshotOutput;
use aws_sdk_rds::operation::describe_db_snapshots::DescribeDbSnapshotsOutput;
use aws_sdk_rds::operation::describe_events::DescribeEventsOutput;
use aws_sdk_rds::operation::modify_db_cluster_snapshot_attribute::ModifyDbClusterSnapshotAttributeOutput;
use aws_sdk_rds::operation::modify_db_snapshot_attribute::ModifyDbSnapshotAttributeOutput;
use aws_sdk_rds::types::{DbClusterSnapshot, DbSnapshot, Event, Tag};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use escrow_sync_core::ErrorKind;
use escrow_sync_rds::RdsKind;
use escrow_sync_rds::restore::{
    RECOVERY_KEY, delete_snapshot, escrow_snapshots, set_shared, start_copy, wait_available,
};

const PRIMARY: &str = "111111111111";
const RECOVERY: &str = "333333333333";
const ESCROW_KEY: &str = "arn:aws:kms:us-east-1:222222222222:key/escrow";
const ESCROW_ARN: &str = "arn:aws:rds:us-east-1:222222222222:snapshot:escrow-nightly-1";
const CLUSTER_ARN: &str = "arn:aws:rds:us-east-1:222222222222:cluster-snapshot:escrow-weekly-1";

fn rds(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_rds, RuleMode::MatchAny, rules, |c| c.retry_config(
        RetryConfig::standard().with_max_attempts(1).with_initial_backoff(Duration::from_millis(1))
    ))
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    )
}

fn db(id: &str, status: &str, tags: &[(&str, &str)]) -> DbSnapshot {
    let mut b = DbSnapshot::builder()
        .db_snapshot_identifier(id)
        .db_instance_identifier("orders-db")
        .db_snapshot_arn(format!("arn:aws:rds:us-east-1:222222222222:snapshot:{id}"))
        .status(status)
        .snapshot_type("manual")
        .engine("postgres")
        .encrypted(true)
        .kms_key_id(ESCROW_KEY)
        .allocated_storage(20);
    for (k, v) in tags {
        b = b.tag_list(Tag::builder().key(*k).value(*v).build());
    }
    b.build()
}

fn dbs(items: Vec<DbSnapshot>) -> DescribeDbSnapshotsOutput {
    DescribeDbSnapshotsOutput::builder().set_db_snapshots(Some(items)).build()
}

#[tokio::test]
async fn the_escrow_listing_keeps_its_available_copies_with_engine_and_storage() {
    let list = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.snapshot_type() == Some("manual"))
        .then_output(|| {
            let of = |s| {
                [
                    (escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, s),
                    ("escrow-sync:source-account", PRIMARY),
                    ("escrow-sync:lineage", "orders-db"),
                    ("escrow-sync:copied-at", "2026-11-28T01:00:00Z"),
                ]
            };
            dbs(vec![
                db("escrow-nightly-1", "available", &of("nightly-1")),
                db("escrow-nightly-2", "creating", &of("nightly-2")),
                db("someone-elses", "available", &[]),
            ])
        });
    let client = rds(&[&list]);
    let copies = escrow_snapshots(&client, RdsKind::Db).await.unwrap();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let c = &copies[0];
    assert_eq!((c.id.as_str(), c.source_id.as_str()), ("escrow-nightly-1", "nightly-1"));
    assert_eq!((c.arn.as_str(), c.lineage.as_str()), (ESCROW_ARN, "orders-db"));
    assert_eq!((c.gib, c.engine.as_str(), c.encrypted), (20, "postgres", true));
    assert_eq!(c.kms_key_id.as_deref(), Some(ESCROW_KEY));
    assert_eq!(c.source_account.as_deref(), Some(PRIMARY));
    let copied = aws_smithy_types::DateTime::from_str(
        "2026-11-28T01:00:00Z",
        aws_smithy_types::date_time::Format::DateTime,
    )
    .unwrap();
    assert_eq!(c.started, Some(std::time::SystemTime::try_from(copied).unwrap()));
}

#[tokio::test]
async fn a_share_adds_then_removes_exactly_the_recovery_account() {
    let add_db = mock!(Client::modify_db_snapshot_attribute)
        .match_requests(|r| {
            r.db_snapshot_identifier() == Some("escrow-nightly-1")
                && r.attribute_name() == Some("restore")
                && r.values_to_add() == [RECOVERY]
                && r.values_to_remove().is_empty()
        })
        .then_output(|| ModifyDbSnapshotAttributeOutput::builder().build());
    let remove_db = mock!(Client::modify_db_snapshot_attribute)
        .match_requests(|r| {
            r.attribute_name() == Some("restore")
                && r.values_to_remove() == [RECOVERY]
                && r.values_to_add().is_empty()
        })
        .then_output(|| ModifyDbSnapshotAttributeOutput::builder().build());
    let add_cluster = mock!(Client::modify_db_cluster_snapshot_attribute)
        .match_requests(|r| {
            r.db_cluster_snapshot_identifier() == Some("escrow-weekly-1")
                && r.attribute_name() == Some("restore")
                && r.values_to_add() == [RECOVERY]
                && r.values_to_remove().is_empty()
        })
        .then_output(|| ModifyDbClusterSnapshotAttributeOutput::builder().build());
    let client = rds(&[&add_db, &remove_db, &add_cluster]);
    set_shared(&client, RdsKind::Db, "escrow-nightly-1", RECOVERY, true).await.unwrap();
    set_shared(&client, RdsKind::Db, "escrow-nightly-1", RECOVERY, false).await.unwrap();
    set_shared(&client, RdsKind::Cluster, "escrow-weekly-1", RECOVERY, true).await.unwrap();
    assert_eq!((add_db.num_calls(), remove_db.num_calls(), add_cluster.num_calls()), (1, 1, 1));
}

#[tokio::test]
async fn the_recovery_copy_is_made_by_arn_under_the_recovery_key_and_tagged() {
    let tagged = |tags: &[Tag], arn: &str| {
        tags.len() == 1
            && tags[0].key() == Some(escrow_sync_core::tags::RESTORED_FROM)
            && tags[0].value() == Some(arn)
    };
    let copy_db = mock!(Client::copy_db_snapshot)
        .match_requests(move |r| {
            r.source_db_snapshot_identifier() == Some(ESCROW_ARN)
                && r.target_db_snapshot_identifier() == Some("restored-escrow-nightly-1-1700")
                && r.kms_key_id() == Some(RECOVERY_KEY)
                && r.copy_tags() == Some(false)
                && tagged(r.tags(), ESCROW_ARN)
        })
        .then_output(|| {
            CopyDbSnapshotOutput::builder()
                .db_snapshot(
                    DbSnapshot::builder()
                        .db_snapshot_identifier("restored-escrow-nightly-1-1700")
                        .build(),
                )
                .build()
        });
    let copy_cluster = mock!(Client::copy_db_cluster_snapshot)
        .match_requests(move |r| {
            r.source_db_cluster_snapshot_identifier() == Some(CLUSTER_ARN)
                && r.target_db_cluster_snapshot_identifier() == Some("restored-weekly")
                // An unencrypted Aurora snapshot: RDS refuses a key.
                && r.kms_key_id().is_none()
                && tagged(r.tags(), CLUSTER_ARN)
        })
        .then_output(|| {
            CopyDbClusterSnapshotOutput::builder()
                .db_cluster_snapshot(
                    DbClusterSnapshot::builder()
                        .db_cluster_snapshot_identifier("restored-weekly")
                        .build(),
                )
                .build()
        });
    let client = rds(&[&copy_db, &copy_cluster]);
    let id = start_copy(
        &client,
        RdsKind::Db,
        ESCROW_ARN,
        &escrow_sync_rds::restore::recovery_identifier("escrow-nightly-1", "1700"),
        Some(RECOVERY_KEY),
    )
    .await
    .unwrap();
    assert_eq!(id, "restored-escrow-nightly-1-1700");
    let id =
        start_copy(&client, RdsKind::Cluster, CLUSTER_ARN, "restored-weekly", None).await.unwrap();
    assert_eq!(id, "restored-weekly");
    assert_eq!((copy_db.num_calls(), copy_cluster.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_key_out_of_reach_says_what_the_escrow_key_must_grant_the_recovery_account() {
    let copy = mock!(Client::copy_db_snapshot)
        .sequence()
        .http_status(400, Some(error_xml("KMSKeyNotAccessibleFault", "The key is not accessible")))
        .build();
    let client = rds(&[&copy]);
    let err = start_copy(&client, RdsKind::Db, ESCROW_ARN, "restored-1", Some(RECOVERY_KEY))
        .await
        .unwrap_err();
    let text = err.chain();
    assert!(
        text.contains("escrow key")
            && text.contains("recovery account kms:Decrypt, kms:DescribeKey and kms:CreateGrant")
            && text.contains("KMSKeyNotAccessibleFault"),
        "{text}"
    );
    assert!(text.contains(ESCROW_ARN), "{text}");
}

#[tokio::test]
async fn a_copy_is_waited_on_until_available_and_a_failed_one_reported() {
    let poll = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.db_snapshot_identifier() == Some("restored-1"))
        .sequence()
        .output(|| dbs(vec![db("restored-1", "creating", &[])]))
        .times(2)
        .output(|| dbs(vec![db("restored-1", "available", &[])]))
        .build();
    let failed = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.db_snapshot_identifier() == Some("restored-2"))
        .then_output(|| dbs(vec![db("restored-2", "failed", &[])]));
    let events = mock!(Client::describe_events).then_output(|| {
        DescribeEventsOutput::builder()
            .events(Event::builder().message("the key is disabled").build())
            .build()
    });
    let client = rds(&[&poll, &failed, &events]);
    let (timeout, max_poll) = (Duration::from_secs(5), Duration::from_millis(1));
    let done = wait_available(&client, RdsKind::Db, "restored-1", timeout, max_poll).await.unwrap();
    assert_eq!(
        (done.status.as_str(), done.gib, done.engine.as_str()),
        ("available", 20, "postgres")
    );
    let err =
        wait_available(&client, RdsKind::Db, "restored-2", timeout, max_poll).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    assert!(err.to_string().contains("the key is disabled"), "{err}");
}

#[tokio::test]
async fn a_drill_copy_already_gone_counts_as_deleted() {
    let gone = mock!(Client::delete_db_cluster_snapshot)
        .sequence()
        .http_status(404, Some(error_xml("DBClusterSnapshotNotFoundFault", "restored-9 not found")))
        .build();
    let client = rds(&[&gone]);
    delete_snapshot(&client, RdsKind::Cluster, "restored-9").await.unwrap();
    assert_eq!(gone.num_calls(), 1);
}

/// The generic snapshot restore over `RdsRestore`: `--apply` shares the
/// newest escrow copy with the recovery account and says how to restore it;
/// a drill whose copy fails is still cleaned up.
#[tokio::test]
async fn apply_and_a_failed_drill_through_the_snapshot_restore_contract() {
    use aws_sdk_rds::operation::delete_db_snapshot::DeleteDbSnapshotOutput;
    use aws_sdk_rds::operation::describe_db_cluster_snapshots::DescribeDbClusterSnapshotsOutput;
    use escrow_sync_core::snapshot::{SnapshotRestoreRequest, restore};
    use escrow_sync_rds::restore::RdsRestore;

    let tags = [
        (escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, "nightly-1"),
        (escrow_sync_core::tags::SOURCE_ACCOUNT, "111111111111"),
        (escrow_sync_core::tags::LINEAGE, "orders"),
    ];
    let held = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.db_snapshot_identifier().is_none())
        .then_output(move || dbs(vec![db("escrow-nightly-1", "available", &tags)]));
    let clusters = mock!(Client::describe_db_cluster_snapshots)
        .then_output(|| DescribeDbClusterSnapshotsOutput::builder().build());
    let shares = mock!(Client::modify_db_snapshot_attribute)
        .match_requests(|r| {
            r.db_snapshot_identifier() == Some("escrow-nightly-1")
                && r.attribute_name() == Some("restore")
        })
        .then_output(|| ModifyDbSnapshotAttributeOutput::builder().build());
    let escrow = rds(&[&held, &clusters, &shares]);

    let copy =
        mock!(Client::copy_db_snapshot).then_output(|| CopyDbSnapshotOutput::builder().build());
    let failed = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.db_snapshot_identifier().is_some())
        .then_output(|| dbs(vec![db("restored-x", "failed", &[])]));
    let events =
        mock!(Client::describe_events).then_output(|| DescribeEventsOutput::builder().build());
    let delete =
        mock!(Client::delete_db_snapshot).then_output(|| DeleteDbSnapshotOutput::builder().build());
    let target = rds(&[&copy, &failed, &events, &delete]);

    let kind = RdsRestore::from_clients(
        escrow,
        target,
        "222222222222",
        RECOVERY,
        "us-east-1",
        "111111111111",
    )
    .with_kinds(vec![RdsKind::Db])
    .with_wait(Duration::from_secs(5), Duration::from_millis(1));

    let out = restore(&kind, &SnapshotRestoreRequest::new("dbs").with_apply(true)).await.unwrap();
    assert_eq!((out.source.as_str(), out.restored), ("rds://escrow/us-east-1", 1));
    assert!(out.notes[0].starts_with("the job selects by tags"), "{:?}", out.notes);
    assert!(out.notes[1].contains(ESCROW_KEY), "the key to grant: {:?}", out.notes);
    assert_eq!(
        out.notes[2],
        format!(
            "shared escrow db snapshot escrow-nightly-1 (of nightly-1): account {RECOVERY} \
             restores from {ESCROW_ARN}, or copies it with --copy"
        )
    );
    assert_eq!((shares.num_calls(), copy.num_calls()), (1, 0), "shared, left shared");

    let out = restore(&kind, &SnapshotRestoreRequest::new("dbs").with_drill(true)).await.unwrap();
    assert_eq!(out.restored, 0);
    assert_eq!(out.failed.len(), 1, "{:?}", out.failed);
    assert!(out.failed[0].starts_with("nightly-1: "), "{:?}", out.failed);
    let drill = out.drill.unwrap();
    assert_eq!((drill.cleaned_items, drill.cleaned_target), (1, true));
    assert_eq!(delete.num_calls(), 1, "the failed copy is deleted all the same");
    assert_eq!(shares.num_calls(), 3, "shared and unshared again");
}
