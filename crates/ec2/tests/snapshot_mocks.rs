//! EBS snapshot escrow against aws-smithy-mocks: listing by owner and tags,
//! the share before the copy and its removal after, a snapshot under the
//! AWS-managed key refused with what to configure, the copy encrypted with
//! the escrow key and tagged with its provenance at creation, polling to
//! completion, a copy in error reported with the service's message, a copy
//! left in progress by an interrupted run waited on rather than started
//! twice, and a whole run through the core executor followed by a re-run
//! that makes no mutating call.
//!
//! The two-account suite (tests/ec2_two_accounts.rs) runs the same dance on
//! the emulator, through xtask's launcher that patches moto's cross-account
//! sharing; these pin the request shapes and the paths the emulator cannot
//! produce (AWS-managed keys, copies in error or left in progress).

use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::operation::copy_snapshot::CopySnapshotOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::modify_snapshot_attribute::ModifySnapshotAttributeOutput;
use aws_sdk_ec2::types::{Snapshot, SnapshotState, Tag};
use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::types::{KeyManagerType, KeyMetadata};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use escrow_sync_core::{
    ErrorKind, Executor, ExecutorOptions, Item, ItemKind, Mode, Payload, RetryPolicy, Scope, Sink,
    Source,
};
use escrow_sync_ec2::{EbsSnapshotSink, EbsSnapshotSource};

const ESCROW: &str = "222222222222";
const ESCROW_KEY: &str = "arn:aws:kms:us-east-1:222222222222:key/escrow";

fn snapshot(id: &str, state: SnapshotState, key: Option<&str>) -> Snapshot {
    Snapshot::builder()
        .snapshot_id(id)
        .state(state)
        .volume_size(8)
        .encrypted(key.is_some())
        .set_kms_key_id(key.map(str::to_string))
        .start_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
        .build()
}

fn copy_of(source: &str, id: &str, state: SnapshotState) -> Snapshot {
    let failed = state == SnapshotState::Error;
    let mut s = snapshot(id, state, Some(ESCROW_KEY));
    s.tags = Some(vec![
        Tag::builder().key(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID).value(source).build(),
    ]);
    if failed {
        s.state_message = Some("internal error copying".into());
    }
    s
}

fn ec2(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules)
}

fn kms(manager: KeyManagerType) -> aws_sdk_kms::Client {
    let rule = mock!(aws_sdk_kms::Client::describe_key).then_output(move || {
        DescribeKeyOutput::builder()
            .key_metadata(
                KeyMetadata::builder().key_id("k").key_manager(manager.clone()).build().unwrap(),
            )
            .build()
    });
    mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&rule])
}

fn shares(add: bool) -> Rule {
    mock!(Client::modify_snapshot_attribute)
        .match_requests(move |r| {
            let op = if add {
                aws_sdk_ec2::types::OperationType::Add
            } else {
                aws_sdk_ec2::types::OperationType::Remove
            };
            r.operation_type() == Some(&op) && r.user_ids() == [ESCROW]
        })
        .then_output(|| ModifySnapshotAttributeOutput::builder().build())
}

fn source(ec2_client: Client, manager: KeyManagerType) -> EbsSnapshotSource {
    EbsSnapshotSource::from_client(ec2_client, kms(manager), "us-east-1", "111111111111", ESCROW)
}

#[tokio::test]
async fn the_listing_asks_for_own_completed_snapshots_with_the_tags() {
    let list = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.owner_ids() == ["self"]
                && r.filters()
                    .iter()
                    .any(|f| f.name() == Some("tag:backup") && f.values() == ["true"])
                && r.filters().iter().any(|f| f.name() == Some("status"))
        })
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot("snap-1", SnapshotState::Completed, None))
                .snapshots(snapshot("snap-2", SnapshotState::Completed, None))
                .build()
        });
    let src = source(ec2(&[&list]), KeyManagerType::Customer)
        .with_tags([("backup".to_string(), "true".to_string())].into());
    use futures::TryStreamExt;
    let items: Vec<Item> = src.list(&Scope::all()).try_collect().await.unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["snap-1", "snap-2"]);
    assert_eq!(items[0].size, 8 << 30);
}

#[tokio::test]
async fn reading_shares_with_the_escrow_and_finishing_unshares() {
    let describe = mock!(Client::describe_snapshots).then_output(|| {
        DescribeSnapshotsOutput::builder()
            .snapshots(snapshot(
                "snap-1",
                SnapshotState::Completed,
                Some("arn:aws:kms:us-east-1:111111111111:key/cmk"),
            ))
            .build()
    });
    let (add, remove) = (shares(true), shares(false));
    let src = source(ec2(&[&describe, &add, &remove]), KeyManagerType::Customer);
    let item = Item::new("snap-1", ItemKind::Snapshot, 8 << 30, "snap-1");
    let Payload::Reference(r) = src.read(&item).await.unwrap() else { panic!("a reference") };
    assert_eq!((r.service.as_str(), r.key.as_str()), ("ec2", "snap-1"));
    assert_eq!(r.owner.as_deref(), Some("111111111111"));
    assert_eq!((add.num_calls(), remove.num_calls()), (1, 0));
    src.finish(&item).await.unwrap();
    assert_eq!(remove.num_calls(), 1);
}

#[tokio::test]
async fn a_snapshot_under_the_aws_managed_key_is_refused_with_what_to_configure() {
    let describe = mock!(Client::describe_snapshots).then_output(|| {
        DescribeSnapshotsOutput::builder()
            .snapshots(snapshot("snap-1", SnapshotState::Completed, Some("alias/aws/ebs")))
            .build()
    });
    let add = shares(true);
    let src = source(ec2(&[&describe, &add]), KeyManagerType::Aws);
    let err = src.read(&Item::new("snap-1", ItemKind::Snapshot, 1, "snap-1")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(
        err.to_string().contains("snap-1") && err.to_string().contains("reencrypt_key_id"),
        "{err}"
    );
    assert_eq!(add.num_calls(), 0, "nothing shared");
}

fn sink(rules: &[&Rule]) -> EbsSnapshotSink {
    EbsSnapshotSink::from_client(ec2(rules), "us-east-1")
        .with_kms_key_id(Some(ESCROW_KEY.into()))
        .with_wait(Duration::from_secs(5), Duration::from_millis(1))
}

fn reference() -> Payload {
    Payload::Reference(
        escrow_sync_core::ServerSideRef::new("ec2", "us-east-1", "snap-1", "snap-1")
            .with_owner(Some("111111111111".into())),
    )
}

fn no_copies() -> Rule {
    mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids().is_empty())
        .then_output(|| DescribeSnapshotsOutput::builder().build())
}

#[tokio::test]
async fn the_copy_is_encrypted_with_the_escrow_key_tagged_and_waited_for() {
    let copy = mock!(Client::copy_snapshot)
        .match_requests(|r| {
            r.source_snapshot_id() == Some("snap-1")
                && r.encrypted() == Some(true)
                && r.kms_key_id() == Some(ESCROW_KEY)
                && r.tag_specifications().iter().flat_map(|s| s.tags()).any(|t| {
                    t.key() == Some(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID)
                        && t.value() == Some("snap-1")
                })
        })
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-copy").build());
    let poll = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-copy"])
        .sequence()
        .output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-1", "snap-copy", SnapshotState::Pending))
                .build()
        })
        .times(2)
        .output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-1", "snap-copy", SnapshotState::Completed))
                .build()
        })
        .build();
    let none = no_copies();
    let receipt = sink(&[&copy, &poll, &none])
        .write(&Item::new("snap-1", ItemKind::Snapshot, 8 << 30, "snap-1"), reference())
        .await
        .unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("snap-copy"));
    assert_eq!((copy.num_calls(), poll.num_calls()), (1, 3));
}

#[tokio::test]
async fn a_copy_in_error_is_reported_with_the_service_message() {
    let copy = mock!(Client::copy_snapshot)
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-copy").build());
    let poll = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-copy"])
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-1", "snap-copy", SnapshotState::Error))
                .build()
        });
    let none = no_copies();
    let err = sink(&[&copy, &poll, &none])
        .write(&Item::new("snap-1", ItemKind::Snapshot, 1, "snap-1"), reference())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("internal error copying"), "{err}");
}

#[tokio::test]
async fn a_copy_left_in_progress_is_waited_on_not_started_again() {
    let copy = mock!(Client::copy_snapshot)
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-new").build());
    let existing = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids().is_empty())
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-1", "snap-old-error", SnapshotState::Error))
                .snapshots(copy_of("snap-1", "snap-pending", SnapshotState::Pending))
                .build()
        });
    let poll = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-pending"])
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-1", "snap-pending", SnapshotState::Completed))
                .build()
        });
    let receipt = sink(&[&copy, &existing, &poll])
        .write(&Item::new("snap-1", ItemKind::Snapshot, 1, "snap-1"), reference())
        .await
        .unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("snap-pending"));
    assert_eq!(copy.num_calls(), 0, "no second copy");
}

#[tokio::test]
async fn a_run_copies_what_escrow_lacks_and_a_rerun_makes_no_mutating_call() {
    // Primary: two snapshots. Escrow: a completed copy of snap-2 already.
    let primary_list = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.owner_ids() == ["self"]
                && r.snapshot_ids().is_empty()
                && r.restorable_by_user_ids().is_empty()
        })
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot("snap-1", SnapshotState::Completed, None))
                .snapshots(snapshot("snap-2", SnapshotState::Completed, None))
                .build()
        });
    // Nothing left shared by an earlier run.
    let left_shared = mock!(Client::describe_snapshots)
        .match_requests(|r| r.restorable_by_user_ids() == [ESCROW])
        .then_output(|| DescribeSnapshotsOutput::builder().build());
    let primary_one = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-1"])
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot("snap-1", SnapshotState::Completed, None))
                .build()
        });
    let (add, remove) = (shares(true), shares(false));
    let src = source(
        ec2(&[&primary_list, &left_shared, &primary_one, &add, &remove]),
        KeyManagerType::Customer,
    );

    // The listing of completed copies (planning), then of every copy (the
    // sink's one lookup per run).
    let escrow_list = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.filters().iter().any(|f| f.name() == Some("tag-key"))
                && r.filters().iter().any(|f| f.name() == Some("status"))
        })
        .sequence()
        .output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-2", "snap-c2", SnapshotState::Completed))
                .build()
        })
        .output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-2", "snap-c2", SnapshotState::Completed))
                .snapshots(copy_of("snap-1", "snap-c1", SnapshotState::Completed))
                .build()
        })
        .build();
    let escrow_lookup = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.filters().iter().any(|f| f.name() == Some("tag-key"))
                && !r.filters().iter().any(|f| f.name() == Some("status"))
        })
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-2", "snap-c2", SnapshotState::Completed))
                .build()
        });
    let copy = mock!(Client::copy_snapshot)
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-c1").build());
    let poll = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-c1"])
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-1", "snap-c1", SnapshotState::Completed))
                .build()
        });
    let dest = sink(&[&escrow_list, &escrow_lookup, &copy, &poll]);

    let ex = Executor::new(ExecutorOptions::new().with_concurrency(20).with_retry(RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }));
    let run = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.skipped, run.failed), (1, 1, 0), "{run:?}");
    assert_eq!((add.num_calls(), copy.num_calls(), remove.num_calls()), (1, 1, 1));
    let again = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 2), "{again:?}");
    assert_eq!(
        (add.num_calls(), copy.num_calls(), remove.num_calls()),
        (1, 1, 1),
        "no mutating call"
    );
}

#[tokio::test]
async fn a_snapshot_under_the_aws_managed_key_is_reencrypted_with_the_configured_key_once() {
    const CUSTOMER: &str = "arn:aws:kms:us-east-1:111111111111:key/shared-with-escrow";
    let original = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-1"])
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot("snap-1", SnapshotState::Completed, Some("alias/aws/ebs")))
                .build()
        });
    // No re-encrypted copy the first time; the second time, the one made.
    let lookup = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.filters().iter().any(|f| f.name() == Some("tag:escrow-sync:reencrypted-from"))
        })
        .sequence()
        .output(|| DescribeSnapshotsOutput::builder().build())
        .output(|| {
            let mut s = snapshot("snap-re", SnapshotState::Completed, Some(CUSTOMER));
            s.tags = Some(vec![
                Tag::builder().key("escrow-sync:reencrypted-from").value("snap-1").build(),
            ]);
            DescribeSnapshotsOutput::builder().snapshots(s).build()
        })
        .build();
    let copy = mock!(Client::copy_snapshot)
        .match_requests(|r| {
            r.source_snapshot_id() == Some("snap-1")
                && r.kms_key_id() == Some(CUSTOMER)
                && r.encrypted() == Some(true)
        })
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-re").build());
    let poll = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-re"])
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot("snap-re", SnapshotState::Completed, Some(CUSTOMER)))
                .build()
        });
    let add = mock!(Client::modify_snapshot_attribute)
        .match_requests(|r| {
            r.snapshot_id() == Some("snap-re")
                && r.operation_type() == Some(&aws_sdk_ec2::types::OperationType::Add)
        })
        .then_output(|| ModifySnapshotAttributeOutput::builder().build());
    let remove = mock!(Client::modify_snapshot_attribute)
        .match_requests(|r| {
            r.snapshot_id() == Some("snap-re")
                && r.operation_type() == Some(&aws_sdk_ec2::types::OperationType::Remove)
        })
        .then_output(|| ModifySnapshotAttributeOutput::builder().build());
    let src = source(ec2(&[&original, &lookup, &copy, &poll, &add, &remove]), KeyManagerType::Aws)
        .with_reencrypt_key_id(Some(CUSTOMER.into()))
        .with_wait(Duration::from_secs(5), Duration::from_millis(1));
    let item = Item::new("snap-1", ItemKind::Snapshot, 8 << 30, "snap-1");
    let Payload::Reference(r) = src.read(&item).await.unwrap() else { panic!("a reference") };
    assert_eq!(r.key, "snap-re", "the re-encrypted copy is what is shared");
    assert_eq!((copy.num_calls(), add.num_calls()), (1, 1));
    src.finish(&item).await.unwrap();
    assert_eq!(remove.num_calls(), 1, "the re-encrypted copy is unshared");
    // A later run reuses the re-encrypted copy.
    src.read(&item).await.unwrap();
    assert_eq!(copy.num_calls(), 1, "no second re-encryption");
}

#[tokio::test]
async fn plan_assesses_the_key_without_changing_anything() {
    let describe = mock!(Client::describe_snapshots).then_output(|| {
        DescribeSnapshotsOutput::builder()
            .snapshots(snapshot("snap-1", SnapshotState::Completed, Some("alias/aws/ebs")))
            .build()
    });
    let add = shares(true);
    let item = Item::new("snap-1", ItemKind::Snapshot, 1, "snap-1");
    let refused = source(ec2(&[&describe, &add]), KeyManagerType::Aws);
    assert!(refused.assesses());
    let err = refused.assess(&item).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("reencrypt_key_id"), "{err}");
    let reencrypting = source(ec2(&[&describe, &add]), KeyManagerType::Aws)
        .with_reencrypt_key_id(Some("arn:aws:kms:us-east-1:111111111111:key/cmk".into()));
    let status = reencrypting.assess(&item).await.unwrap().unwrap();
    assert!(status.starts_with("needs re-encryption"), "{status}");
    let plain = source(ec2(&[&describe, &add]), KeyManagerType::Customer);
    assert_eq!(plain.assess(&item).await.unwrap(), None);
    assert_eq!(add.num_calls(), 0, "assessing shares nothing");
}

#[tokio::test]
async fn verify_audits_the_copy_key_and_prune_sees_every_copy_with_its_lineage() {
    use escrow_sync_core::Retained;
    let tagged = |id: &str, state: SnapshotState, key: &str, created: &str| {
        let mut s = snapshot(id, state, Some(key));
        s.tags = Some(vec![
            Tag::builder()
                .key(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID)
                .value(format!("src-{id}"))
                .build(),
            Tag::builder().key(escrow_sync_core::tags::LINEAGE).value("vol-1").build(),
            Tag::builder().key("escrow-sync:source-start-time").value(created).build(),
        ]);
        s
    };
    let list = mock!(Client::describe_snapshots).then_output(move || {
        DescribeSnapshotsOutput::builder()
            .snapshots(tagged(
                "snap-a",
                SnapshotState::Completed,
                ESCROW_KEY,
                "2026-11-01T00:00:00Z",
            ))
            .snapshots(tagged("snap-b", SnapshotState::Pending, ESCROW_KEY, "2026-11-02T00:00:00Z"))
            .build()
    });
    let delete = mock!(Client::delete_snapshot)
        .match_requests(|r| r.snapshot_id() == Some("snap-a"))
        .then_output(|| {
            aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput::builder().build()
        });
    let store = sink(&[&list, &delete]);
    let copies = store.copies().await.unwrap();
    assert_eq!(copies.len(), 2);
    assert_eq!(
        (copies[0].source.as_str(), copies[0].lineage.as_str(), copies[0].complete),
        ("src-snap-a", "vol-1", true)
    );
    assert!(!copies[1].complete, "a pending copy is not complete");
    store.delete_copy(&copies[0]).await.unwrap();
    assert_eq!(delete.num_calls(), 1);

    let item = Item::new("src-snap-a", ItemKind::Snapshot, 1, "src-snap-a");
    assert!(store.audits());
    assert_eq!(store.audit(&item).await.unwrap(), Vec::<String>::new());
    let other = mock!(Client::describe_snapshots).then_output(move || {
        DescribeSnapshotsOutput::builder()
            .snapshots(tagged(
                "snap-a",
                SnapshotState::Completed,
                "arn:aws:kms:us-east-1:222222222222:key/other",
                "x",
            ))
            .build()
    });
    let problems = sink(&[&other]).audit(&item).await.unwrap();
    assert!(problems[0].contains("not the escrow key"), "{problems:?}");
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>\
         </Errors><RequestID>r</RequestID></Response>"
    )
}

#[tokio::test]
async fn the_primarys_reencrypted_copies_are_not_listed_as_items() {
    let list = mock!(Client::describe_snapshots).then_output(|| {
        let mut reencrypted = snapshot("snap-re", SnapshotState::Completed, None);
        reencrypted.tags =
            Some(vec![Tag::builder().key("escrow-sync:reencrypted-from").value("snap-1").build()]);
        DescribeSnapshotsOutput::builder()
            .snapshots(snapshot("snap-1", SnapshotState::Completed, None))
            .snapshots(reencrypted)
            .build()
    });
    // Everything the primary owns: the re-encrypted copy made for snap-1
    // (or for an AMI) would otherwise be escrowed a second time.
    let src = source(ec2(&[&list]), KeyManagerType::Customer);
    use futures::TryStreamExt;
    let items: Vec<Item> = src.list(&Scope::all()).try_collect().await.unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["snap-1"]);
}

#[tokio::test]
async fn a_copy_not_visible_yet_is_waited_for_and_one_deleted_meanwhile_is_not_found() {
    // EC2 is eventually consistent: right after CopySnapshot, describing the
    // new id may answer InvalidSnapshot.NotFound (HTTP 400).
    let copy = mock!(Client::copy_snapshot)
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-copy").build());
    let poll = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-copy"])
        .sequence()
        .http_status(
            400,
            Some(error_xml("InvalidSnapshot.NotFound", "The snapshot 'snap-copy' does not exist.")),
        )
        .output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-1", "snap-copy", SnapshotState::Completed))
                .build()
        })
        .build();
    let none = no_copies();
    let receipt = sink(&[&copy, &poll, &none])
        .write(&Item::new("snap-1", ItemKind::Snapshot, 8 << 30, "snap-1"), reference())
        .await
        .unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("snap-copy"));

    // Never found again within the grace (here the timeout): NotFound, not a
    // wait until the timeout's "next run waits for it".
    let copy = mock!(Client::copy_snapshot)
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-gone").build());
    let poll = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-gone"])
        .sequence()
        .http_status(
            400,
            Some(error_xml("InvalidSnapshot.NotFound", "The snapshot 'snap-gone' does not exist.")),
        )
        .repeatedly()
        .build();
    let none = no_copies();
    let err = EbsSnapshotSink::from_client(ec2(&[&copy, &poll, &none]), "us-east-1")
        .with_wait(Duration::from_millis(30), Duration::from_millis(1))
        .write(&Item::new("snap-1", ItemKind::Snapshot, 1, "snap-1"), reference())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("snap-gone") && err.to_string().contains("next run"), "{err}");
}

#[tokio::test]
async fn a_share_an_interrupted_run_left_is_removed_when_escrow_already_holds_the_copy() {
    use aws_sdk_ec2::types::Tag;
    // Shared with escrow now: snap-1 itself, and the re-encrypted copy of snap-3.
    let left = mock!(Client::describe_snapshots)
        .match_requests(|r| r.owner_ids() == ["self"] && r.restorable_by_user_ids() == [ESCROW])
        .then_output(|| {
            let mut reencrypted = snapshot("snap-3r", SnapshotState::Completed, None);
            reencrypted.tags = Some(vec![
                Tag::builder().key("escrow-sync:reencrypted-from").value("snap-3").build(),
            ]);
            DescribeSnapshotsOutput::builder()
                .snapshots(snapshot("snap-1", SnapshotState::Completed, None))
                .snapshots(reencrypted)
                .build()
        });
    let removed = |id: &'static str| {
        mock!(Client::modify_snapshot_attribute)
            .match_requests(move |r| {
                r.snapshot_id() == Some(id)
                    && r.operation_type() == Some(&aws_sdk_ec2::types::OperationType::Remove)
                    && r.user_ids() == [ESCROW]
            })
            .then_output(|| ModifySnapshotAttributeOutput::builder().build())
    };
    let (one, three) = (removed("snap-1"), removed("snap-3r"));
    let src = source(ec2(&[&left, &one, &three]), KeyManagerType::Customer);
    assert!(src.finishes_skipped());
    for key in ["snap-1", "snap-2", "snap-3"] {
        src.finish(&Item::new(key, ItemKind::Snapshot, 1, key)).await.unwrap();
    }
    assert_eq!((one.num_calls(), three.num_calls()), (1, 1), "snap-2 was not shared: untouched");
    assert_eq!(left.num_calls(), 1, "one listing of what is shared");

    // With unshare_after_copy off, nothing is asked or changed.
    let keep = source(ec2(&[&left, &one, &three]), KeyManagerType::Customer)
        .with_unshare_after_copy(false);
    assert!(!keep.finishes_skipped());
    keep.finish(&Item::new("snap-1", ItemKind::Snapshot, 1, "snap-1")).await.unwrap();
    assert_eq!((left.num_calls(), one.num_calls()), (1, 1));
}

#[tokio::test]
async fn the_sink_lists_escrow_once_per_run_and_asks_afresh_on_a_retry() {
    let all = mock!(Client::describe_snapshots)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("tag-key")))
        .then_output(|| DescribeSnapshotsOutput::builder().build());
    let lookup = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.filters().iter().any(|f| {
                f.name() == Some(&format!("tag:{}", escrow_sync_core::tags::SOURCE_SNAPSHOT_ID)[..])
            })
        })
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-1", "snap-c1", SnapshotState::Completed))
                .build()
        });
    let copy = mock!(Client::copy_snapshot)
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-new").build());
    let poll = mock!(Client::describe_snapshots)
        .match_requests(|r| !r.snapshot_ids().is_empty())
        .then_output(|| {
            let id = "snap-new";
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("any", id, SnapshotState::Completed))
                .build()
        });
    let dest = sink(&[&all, &lookup, &copy, &poll]);
    for key in ["snap-2", "snap-3", "snap-4"] {
        dest.write(&Item::new(key, ItemKind::Snapshot, 1, key), reference()).await.unwrap();
    }
    assert_eq!((all.num_calls(), lookup.num_calls(), copy.num_calls()), (1, 0, 3));
    // The same source again in this run (the executor's retry): EC2 is asked
    // afresh and finds the copy the first try made: no second copy.
    dest.write(&Item::new("snap-1", ItemKind::Snapshot, 1, "snap-1"), reference()).await.unwrap();
    assert_eq!(copy.num_calls(), 4);
    dest.write(&Item::new("snap-1", ItemKind::Snapshot, 1, "snap-1"), reference()).await.unwrap();
    assert_eq!((lookup.num_calls(), copy.num_calls()), (1, 4), "found, not copied again");
}

#[tokio::test]
async fn a_copy_not_complete_in_time_fails_the_item_for_the_next_run_without_retrying() {
    let none = no_copies();
    let copy = mock!(Client::copy_snapshot)
        .then_output(|| CopySnapshotOutput::builder().snapshot_id("snap-slow").build());
    let poll = mock!(Client::describe_snapshots)
        .match_requests(|r| r.snapshot_ids() == ["snap-slow"])
        .then_output(|| {
            DescribeSnapshotsOutput::builder()
                .snapshots(copy_of("snap-1", "snap-slow", SnapshotState::Pending))
                .build()
        });
    let dest = EbsSnapshotSink::from_client(ec2(&[&none, &copy, &poll]), "us-east-1")
        .with_wait(Duration::from_millis(20), Duration::from_millis(1));
    let err = dest
        .write(&Item::new("snap-1", ItemKind::Snapshot, 1, "snap-1"), reference())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
    assert!(!err.is_retryable() && err.to_string().contains("next run waits"), "{err}");
}
