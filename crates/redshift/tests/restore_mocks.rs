//! Restoring Redshift snapshots from escrow into a recovery account,
//! against aws-smithy-mocks: the escrow listing (its own available manual
//! snapshots carrying the provenance tag; snapshots other accounts share
//! with escrow left out), the newest per source cluster at a time; the
//! share (AuthorizeSnapshotAccess naming the snapshot, its cluster and
//! exactly the recovery account) and its revocation, both idempotent
//! (AuthorizationAlreadyExists / AuthorizationNotFound count as done); and
//! the drill's check, with the recovery account's client, that it sees the
//! snapshot (DescribeClusterSnapshots with OwnerAccount = escrow), not
//! found or not available being reported.
//!
//! The emulator suite (tests/restore_drills.rs) runs the restore end to
//! end; moto cannot show a shared snapshot in another state than
//! available, which these cover.

use std::time::{Duration, SystemTime};

use aws_sdk_redshift::Client;
use aws_sdk_redshift::config::retry::RetryConfig;
use aws_sdk_redshift::operation::authorize_snapshot_access::AuthorizeSnapshotAccessOutput;
use aws_sdk_redshift::operation::describe_cluster_snapshots::DescribeClusterSnapshotsOutput;
use aws_sdk_redshift::operation::revoke_snapshot_access::RevokeSnapshotAccessOutput;
use aws_sdk_redshift::types::{Snapshot, Tag};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use escrow_sync_core::ErrorKind;
use escrow_sync_redshift::restore::{
    EscrowRedshiftSnapshot, as_of, check_visible, escrow_snapshots, set_shared,
};

const PRIMARY: &str = "111111111111";
const ESCROW: &str = "222222222222";
const RECOVERY: &str = "333333333333";

fn redshift(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_redshift, RuleMode::MatchAny, rules, |c| c.retry_config(
        RetryConfig::standard().with_max_attempts(1).with_initial_backoff(Duration::from_millis(1))
    ))
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    )
}

fn snapshot(id: &str, owner: &str, status: &str, tags: &[(&str, &str)]) -> Snapshot {
    let mut b = Snapshot::builder()
        .snapshot_identifier(id)
        .cluster_identifier("escrow-sync-restore-1")
        .owner_account(owner)
        .status(status)
        .snapshot_type("manual")
        .encrypted(true)
        .kms_key_id("arn:aws:kms:us-east-1:222222222222:key/escrow")
        .total_backup_size_in_mega_bytes(2.0);
    for (k, v) in tags {
        b = b.tags(Tag::builder().key(*k).value(*v).build());
    }
    b.build()
}

fn of(source: &str, copied: &'static str) -> Vec<(&'static str, String)> {
    vec![
        (escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, source.to_string()),
        (escrow_sync_core::tags::SOURCE_ACCOUNT, PRIMARY.to_string()),
        (escrow_sync_core::tags::LINEAGE, "sales".to_string()),
        (escrow_sync_core::tags::COPIED_AT, copied.to_string()),
    ]
}

fn tags<'a>(list: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    list.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn escrow_snapshot() -> EscrowRedshiftSnapshot {
    EscrowRedshiftSnapshot {
        id: "escrow-sync-abc-1".into(),
        cluster: Some("escrow-sync-restore-abc".into()),
        source_id: "weekly".into(),
        source_account: Some(PRIMARY.into()),
        lineage: Some("sales".into()),
        started: None,
        bytes: 0,
        encrypted: true,
        kms_key_id: None,
    }
}

#[tokio::test]
async fn the_escrow_listing_keeps_its_own_available_copies_newest_per_cluster() {
    let list = mock!(Client::describe_cluster_snapshots)
        .match_requests(|r| {
            r.snapshot_type() == Some("manual")
                && r.tag_keys() == [escrow_sync_core::tags::SOURCE_SNAPSHOT_ID]
                && r.owner_account().is_none()
        })
        .then_output(|| {
            let (w1, w2) =
                (of("weekly-1", "2026-11-01T00:00:00Z"), of("weekly-2", "2026-11-08T00:00:00Z"));
            DescribeClusterSnapshotsOutput::builder()
                .snapshots(snapshot("escrow-sync-a-1", ESCROW, "available", &tags(&w1)))
                .snapshots(snapshot("escrow-sync-b-1", ESCROW, "available", &tags(&w2)))
                .snapshots(snapshot("escrow-sync-c-1", ESCROW, "creating", &tags(&w2)))
                // Shared with escrow by another account: not escrow's copy.
                .snapshots(snapshot("weekly-2", PRIMARY, "available", &tags(&w2)))
                .build()
        });
    let client = redshift(&[&list]);
    let all = escrow_snapshots(&client, ESCROW).await.unwrap();
    let ids = |v: &[EscrowRedshiftSnapshot]| v.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&all), ["escrow-sync-a-1", "escrow-sync-b-1"]);
    assert_eq!(all[0].bytes, 2 * 1024 * 1024);
    assert_eq!(all[0].cluster.as_deref(), Some("escrow-sync-restore-1"));
    assert_eq!(ids(&as_of(all.clone(), None)), ["escrow-sync-b-1"], "one per source cluster");
    let at = aws_smithy_types::DateTime::from_str(
        "2026-11-05T00:00:00Z",
        aws_smithy_types::date_time::Format::DateTime,
    )
    .unwrap();
    let at = Some(SystemTime::try_from(at).unwrap());
    assert_eq!(ids(&as_of(all, at)), ["escrow-sync-a-1"]);
}

#[tokio::test]
async fn a_share_authorizes_exactly_the_recovery_account_and_is_idempotent() {
    let authorize = mock!(Client::authorize_snapshot_access)
        .match_requests(|r| {
            r.snapshot_identifier() == Some("escrow-sync-abc-1")
                && r.snapshot_cluster_identifier() == Some("escrow-sync-restore-abc")
                && r.account_with_restore_access() == Some(RECOVERY)
        })
        .sequence()
        .output(|| AuthorizeSnapshotAccessOutput::builder().build())
        .http_status(400, Some(error_xml("AuthorizationAlreadyExists", "already")))
        .build();
    let revoke = mock!(Client::revoke_snapshot_access)
        .match_requests(|r| {
            r.snapshot_identifier() == Some("escrow-sync-abc-1")
                && r.account_with_restore_access() == Some(RECOVERY)
        })
        .sequence()
        .output(|| RevokeSnapshotAccessOutput::builder().build())
        .http_status(400, Some(error_xml("AuthorizationNotFound", "gone")))
        .build();
    let client = redshift(&[&authorize, &revoke]);
    let s = escrow_snapshot();
    set_shared(&client, &s, RECOVERY, true).await.unwrap();
    set_shared(&client, &s, RECOVERY, true).await.expect("already shared counts as done");
    set_shared(&client, &s, RECOVERY, false).await.unwrap();
    set_shared(&client, &s, RECOVERY, false).await.expect("already revoked counts as done");
    assert_eq!((authorize.num_calls(), revoke.num_calls()), (2, 2));
}

#[tokio::test]
async fn the_drill_asks_the_recovery_account_whether_it_sees_the_share() {
    let seen = mock!(Client::describe_cluster_snapshots)
        .match_requests(|r| {
            r.owner_account() == Some(ESCROW) && r.snapshot_identifier() == Some("seen")
        })
        .then_output(|| {
            DescribeClusterSnapshotsOutput::builder()
                .snapshots(snapshot("seen", ESCROW, "available", &[]))
                .build()
        });
    let pending = mock!(Client::describe_cluster_snapshots)
        .match_requests(|r| r.snapshot_identifier() == Some("pending"))
        .then_output(|| {
            DescribeClusterSnapshotsOutput::builder()
                .snapshots(snapshot("pending", ESCROW, "creating", &[]))
                .build()
        });
    let unseen = mock!(Client::describe_cluster_snapshots)
        .match_requests(|r| r.snapshot_identifier() == Some("unseen"))
        .sequence()
        .http_status(404, Some(error_xml("ClusterSnapshotNotFound", "not found")))
        .build();
    let client = redshift(&[&seen, &pending, &unseen]);
    check_visible(&client, ESCROW, "seen").await.unwrap();
    let err = check_visible(&client, ESCROW, "pending").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    assert!(err.to_string().contains("creating"), "{err}");
    let err = check_visible(&client, ESCROW, "unseen").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("does not see"), "{err}");
}

/// The generic snapshot restore over `RedshiftRestore`: `--copy` is
/// refused; a drill shares, asks the recovery account, and revokes; a
/// revocation that fails is the clean-up error, with what to do by hand.
#[tokio::test]
async fn a_drill_through_the_snapshot_restore_contract_revokes_the_share() {
    use escrow_sync_core::snapshot::{SnapshotRestoreRequest, restore};
    use escrow_sync_redshift::restore::RedshiftRestore;

    let held = mock!(Client::describe_cluster_snapshots)
        .match_requests(|r| r.owner_account().is_none())
        .then_output(|| {
            let t = of("weekly-1", "2026-11-20T00:00:00Z");
            DescribeClusterSnapshotsOutput::builder()
                .snapshots(snapshot("escrow-sync-weekly-1", ESCROW, "available", &tags(&t)))
                .build()
        });
    let share = mock!(Client::authorize_snapshot_access)
        .match_requests(|r| r.account_with_restore_access() == Some(RECOVERY))
        .then_output(|| AuthorizeSnapshotAccessOutput::builder().build());
    let revoke = mock!(Client::revoke_snapshot_access)
        .sequence()
        .http_status(403, Some(error_xml("AccessDenied", "no")))
        .build();
    let escrow = redshift(&[&held, &share, &revoke]);
    let seen = mock!(Client::describe_cluster_snapshots)
        .match_requests(|r| r.owner_account() == Some(ESCROW))
        .then_output(|| {
            DescribeClusterSnapshotsOutput::builder()
                .snapshots(snapshot("escrow-sync-weekly-1", ESCROW, "available", &[]))
                .build()
        });
    let target = redshift(&[&seen]);
    let kind =
        RedshiftRestore::from_clients(escrow, target, ESCROW, RECOVERY, "us-east-1", PRIMARY);

    let copy = SnapshotRestoreRequest::new("sales").with_apply(true).with_copy(true);
    let err = restore(&kind, &copy).await.unwrap_err();
    assert!(err.to_string().contains("job sales: Redshift cannot copy"), "{err}");
    assert_eq!(share.num_calls(), 0);

    let out = restore(&kind, &SnapshotRestoreRequest::new("sales").with_drill(true)).await.unwrap();
    assert_eq!(out.target, format!("redshift://{RECOVERY}/us-east-1"));
    assert_eq!(out.restored, 1);
    let drill = out.drill.unwrap();
    assert_eq!((drill.verified, drill.cleaned_items, drill.cleaned_target), (1, 0, false));
    let left = drill.cleanup_error.unwrap();
    assert!(
        left.starts_with(&format!(
            "revoke account {RECOVERY}'s access to these escrow snapshots by hand \
             (RevokeSnapshotAccess): escrow-sync-weekly-1: "
        )),
        "{left}"
    );
    assert_eq!((share.num_calls(), seen.num_calls(), revoke.num_calls()), (1, 1, 1));
}
