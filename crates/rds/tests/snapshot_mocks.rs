//! RDS DB snapshot and Aurora cluster snapshot escrow against
//! aws-smithy-mocks: the listing (own manual and automated snapshots, tags
//! and ids, pages, escrow-sync's own copies in the primary left out), the
//! share through the `restore` attribute and its removal, an automated
//! snapshot copied to a manual one in the primary first, a snapshot under the
//! AWS-managed key refused with what to configure or re-encrypted once, the
//! escrow copy made from the shared ARN with the escrow key and its
//! provenance tags at creation, quota errors and throttling retried, a copy
//! that fails reported with RDS's message and retried under a new name, a
//! copy left in progress waited on, a whole run followed by a re-run that
//! makes no mutating call and a clean verify, the shares an interrupted run
//! left (read from the `restore` attribute) removed for items escrow holds,
//! `plan`'s assessments, audits,
//! and the retention store.
//!
//! The two-account suite (tests/rds_two_accounts.rs) runs the dance on the
//! emulator; these pin the request shapes and what the emulator cannot
//! produce (AWS-managed keys, copies in progress or failed, quotas,
//! throttling, the refusal to encrypt a copy of an unencrypted Aurora
//! snapshot).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::types::{KeyManagerType, KeyMetadata};
use aws_sdk_rds::Client;
use aws_sdk_rds::config::retry::RetryConfig;
use aws_sdk_rds::operation::copy_db_cluster_snapshot::CopyDbClusterSnapshotOutput;
use aws_sdk_rds::operation::copy_db_snapshot::CopyDbSnapshotOutput;
use aws_sdk_rds::operation::delete_db_snapshot::DeleteDbSnapshotOutput;
use aws_sdk_rds::operation::describe_db_cluster_snapshot_attributes::DescribeDbClusterSnapshotAttributesOutput;
use aws_sdk_rds::operation::describe_db_cluster_snapshots::DescribeDbClusterSnapshotsOutput;
use aws_sdk_rds::operation::describe_db_snapshot_attributes::DescribeDbSnapshotAttributesOutput;
use aws_sdk_rds::operation::describe_db_snapshots::DescribeDbSnapshotsOutput;
use aws_sdk_rds::operation::describe_events::DescribeEventsOutput;
use aws_sdk_rds::operation::modify_db_cluster_snapshot_attribute::ModifyDbClusterSnapshotAttributeOutput;
use aws_sdk_rds::operation::modify_db_snapshot_attribute::ModifyDbSnapshotAttributeOutput;
use aws_sdk_rds::types::{
    DbClusterSnapshot, DbClusterSnapshotAttribute, DbClusterSnapshotAttributesResult, DbSnapshot,
    DbSnapshotAttribute, DbSnapshotAttributesResult, Event, Tag,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use futures::TryStreamExt;

use escrow_sync_core::{
    ErrorKind, EscrowCopy, Executor, ExecutorOptions, Item, ItemKind, Mode, Payload, Retained,
    RetryPolicy, Scope, ServerSideRef, Sink, Source,
};
use escrow_sync_rds::{
    RdsKind, RdsSnapshotSink, RdsSnapshotSource, escrow_identifier, primary_copy_identifier,
};

const PRIMARY: &str = "111111111111";
const ESCROW: &str = "222222222222";
const ESCROW_KEY: &str = "arn:aws:kms:us-east-1:222222222222:key/escrow";
const PRIMARY_KEY: &str = "arn:aws:kms:us-east-1:111111111111:key/cmk";
const AWS_KEY: &str = "arn:aws:kms:us-east-1:111111111111:key/aws-rds";
const CUSTOMER: &str = "arn:aws:kms:us-east-1:111111111111:key/shared-with-escrow";
const AUTOMATED: &str = "rds:orders-db-2026-11-28-03-10";
const CREATED: &str = "2023-11-14T22:13:20Z";

fn arn(account: &str, kind: &str, id: &str) -> String {
    format!("arn:aws:rds:us-east-1:{account}:{kind}:{id}")
}

/// A DB snapshot of `orders-db` in `account` (automated when its id starts
/// with `rds:`), 20 GiB.
fn db(
    account: &str,
    id: &str,
    status: &str,
    key: Option<&str>,
    tags: &[(&str, &str)],
) -> DbSnapshot {
    let mut b = DbSnapshot::builder()
        .db_snapshot_identifier(id)
        .db_instance_identifier("orders-db")
        .db_snapshot_arn(arn(account, "snapshot", id))
        .status(status)
        .snapshot_type(if id.starts_with("rds:") { "automated" } else { "manual" })
        .encrypted(key.is_some())
        .set_kms_key_id(key.map(str::to_string))
        .allocated_storage(20)
        .snapshot_create_time(aws_smithy_types::DateTime::from_secs(1_700_000_000));
    for (k, v) in tags {
        b = b.tag_list(Tag::builder().key(*k).value(*v).build());
    }
    b.build()
}

/// An escrow copy of `source` named `id`.
fn escrow_copy(source: &str, id: &str, status: &str, key: Option<&str>) -> DbSnapshot {
    db(
        ESCROW,
        id,
        status,
        key,
        &[
            (escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, source),
            ("escrow-sync:lineage", "orders-db"),
        ],
    )
}

fn cluster(
    account: &str,
    id: &str,
    status: &str,
    key: Option<&str>,
    tags: &[(&str, &str)],
) -> DbClusterSnapshot {
    let mut b = DbClusterSnapshot::builder()
        .db_cluster_snapshot_identifier(id)
        .db_cluster_identifier("orders-aurora")
        .db_cluster_snapshot_arn(arn(account, "cluster-snapshot", id))
        .status(status)
        .snapshot_type(if id.starts_with("rds:") { "automated" } else { "manual" })
        .storage_encrypted(key.is_some())
        .set_kms_key_id(key.map(str::to_string))
        .allocated_storage(1)
        .snapshot_create_time(aws_smithy_types::DateTime::from_secs(1_700_000_000));
    for (k, v) in tags {
        b = b.tag_list(Tag::builder().key(*k).value(*v).build());
    }
    b.build()
}

fn dbs(items: impl IntoIterator<Item = DbSnapshot>) -> DescribeDbSnapshotsOutput {
    DescribeDbSnapshotsOutput::builder().set_db_snapshots(Some(items.into_iter().collect())).build()
}

fn clusters(
    items: impl IntoIterator<Item = DbClusterSnapshot>,
) -> DescribeDbClusterSnapshotsOutput {
    DescribeDbClusterSnapshotsOutput::builder()
        .set_db_cluster_snapshots(Some(items.into_iter().collect()))
        .build()
}

/// The XML body RDS (awsQuery) answers an error with.
fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
    )
}

fn not_found(id: &str) -> String {
    error_xml("DBSnapshotNotFound", &format!("DBSnapshot {id} not found."))
}

fn rds(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_rds, RuleMode::MatchAny, rules, |c| c.retry_config(
        RetryConfig::standard()
            .with_initial_backoff(Duration::from_millis(1))
            .with_max_backoff(Duration::from_millis(2))
    ))
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

/// `describe_db_snapshots` of one identifier: `answers` in order, the last
/// repeated; `None` answers DBSnapshotNotFound.
fn get_db(id: &'static str, answers: Vec<Option<DbSnapshot>>) -> Rule {
    let mut seq = mock!(Client::describe_db_snapshots)
        .match_requests(move |r| r.db_snapshot_identifier() == Some(id))
        .sequence();
    let last = answers.len() - 1;
    for (i, a) in answers.into_iter().enumerate() {
        seq = match a {
            Some(s) => seq.output(move || dbs([s.clone()])),
            None => seq.http_status(404, Some(not_found(id))),
        };
        if i == last {
            return seq.repeatedly().build();
        }
    }
    unreachable!()
}

fn share_db(id: &'static str, add: bool) -> Rule {
    mock!(Client::modify_db_snapshot_attribute)
        .match_requests(move |r| {
            let (values, others) = if add {
                (r.values_to_add(), r.values_to_remove())
            } else {
                (r.values_to_remove(), r.values_to_add())
            };
            r.db_snapshot_identifier() == Some(id)
                && r.attribute_name() == Some("restore")
                && values == [ESCROW]
                && others.is_empty()
        })
        .then_output(|| ModifyDbSnapshotAttributeOutput::builder().build())
}

/// DescribeDBSnapshotAttributes of `id`: its `restore` attribute names
/// `answers` in order (the last repeated).
fn restore_db(id: &'static str, answers: Vec<Vec<&'static str>>) -> Rule {
    let mut seq = mock!(Client::describe_db_snapshot_attributes)
        .match_requests(move |r| r.db_snapshot_identifier() == Some(id))
        .sequence();
    let last = answers.len() - 1;
    for (i, accounts) in answers.into_iter().enumerate() {
        seq = seq.output(move || {
            let restore = DbSnapshotAttribute::builder()
                .attribute_name("restore")
                .set_attribute_values(Some(accounts.iter().map(|a| a.to_string()).collect()))
                .build();
            DescribeDbSnapshotAttributesOutput::builder()
                .db_snapshot_attributes_result(
                    DbSnapshotAttributesResult::builder()
                        .db_snapshot_identifier(id)
                        .db_snapshot_attributes(restore)
                        .build(),
                )
                .build()
        });
        if i == last {
            return seq.repeatedly().build();
        }
    }
    unreachable!()
}

fn source(rules: &[&Rule], manager: KeyManagerType) -> RdsSnapshotSource {
    RdsSnapshotSource::from_client(
        rds(rules),
        kms(manager),
        RdsKind::Db,
        "us-east-1",
        PRIMARY,
        ESCROW,
    )
    .with_wait(Duration::from_secs(5), Duration::from_millis(1))
}

fn sink(rules: &[&Rule]) -> RdsSnapshotSink {
    RdsSnapshotSink::from_client(rds(rules), RdsKind::Db, "us-east-1")
        .with_kms_key_id(Some(ESCROW_KEY.into()))
        .with_wait(Duration::from_secs(5), Duration::from_millis(1))
}

fn item(id: &str) -> Item {
    Item::new(id, ItemKind::Snapshot, 20 << 30, id)
}

/// What the source hands the sink for `id`, shared as `shared`.
fn reference(id: &str, shared: &str, encrypted: bool) -> Payload {
    Payload::Reference(
        ServerSideRef::new("rds", "us-east-1", arn(PRIMARY, "snapshot", shared), id)
            .with_owner(Some(PRIMARY.into()))
            .with_attributes(BTreeMap::from([
                ("arn".to_string(), arn(PRIMARY, "snapshot", id)),
                ("start-time".to_string(), CREATED.to_string()),
                ("lineage".to_string(), "orders-db".to_string()),
                ("encrypted".to_string(), encrypted.to_string()),
            ])),
    )
}

#[tokio::test]
async fn the_listing_pages_through_own_snapshots_and_selects_by_tags() {
    let page1 = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.marker().is_none() && r.db_snapshot_identifier().is_none())
        .then_output(|| {
            DescribeDbSnapshotsOutput::builder()
                .db_snapshots(db(PRIMARY, "nightly-1", "available", None, &[("backup", "true")]))
                .db_snapshots(db(PRIMARY, "nightly-2", "creating", None, &[("backup", "true")]))
                .db_snapshots(db(PRIMARY, "other", "available", None, &[("backup", "no")]))
                .marker("page-2")
                .build()
        });
    let page2 = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.marker() == Some("page-2"))
        .then_output(|| {
            let mut backup =
                db(PRIMARY, "from-aws-backup", "available", None, &[("backup", "true")]);
            backup.snapshot_type = Some("awsbackup".into());
            dbs([
                db(PRIMARY, AUTOMATED, "available", None, &[("backup", "true")]),
                // escrow-sync's own manual copy of the automated one.
                db(
                    PRIMARY,
                    "escrow-sync-rds-orders-db-2026-11-28-03-10-12345678",
                    "available",
                    None,
                    &[("backup", "true"), (escrow_sync_core::tags::COPIED_FROM, AUTOMATED)],
                ),
                backup,
            ])
        });
    let src = source(&[&page1, &page2], KeyManagerType::Customer)
        .with_tags(BTreeMap::from([("backup".to_string(), "true".to_string())]));
    let items: Vec<Item> = src.list(&Scope::all()).try_collect().await.unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["nightly-1", AUTOMATED]);
    assert_eq!((items[0].size, items[0].fingerprint.as_str()), (20 << 30, "nightly-1"));
    assert_eq!(page2.num_calls(), 1);
    assert_eq!(src.describe(), "rds://111111111111/us-east-1");
}

#[tokio::test]
async fn the_listing_by_ids_asks_for_those_ids() {
    let list = mock!(Client::describe_db_snapshots)
        .match_requests(|r| {
            r.filters().iter().any(|f| {
                f.name() == Some("db-snapshot-id") && f.values() == ["nightly-1", AUTOMATED]
            })
        })
        .then_output(|| {
            dbs([
                db(PRIMARY, "nightly-1", "available", None, &[]),
                db(PRIMARY, AUTOMATED, "available", None, &[]),
            ])
        });
    let src = source(&[&list], KeyManagerType::Customer)
        .with_ids(vec!["nightly-1".into(), AUTOMATED.into()]);
    let items: Vec<Item> = src.list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!(items.len(), 2);
}

#[tokio::test]
async fn reading_shares_through_the_restore_attribute_and_finishing_unshares() {
    let get = get_db(
        "nightly-1",
        vec![Some(db(PRIMARY, "nightly-1", "available", Some(PRIMARY_KEY), &[]))],
    );
    let (add, remove) = (share_db("nightly-1", true), share_db("nightly-1", false));
    let src = source(&[&get, &add, &remove], KeyManagerType::Customer);
    let Payload::Reference(r) = src.read(&item("nightly-1")).await.unwrap() else {
        panic!("a reference")
    };
    assert_eq!((r.service.as_str(), r.container.as_str()), ("rds", "us-east-1"));
    assert_eq!(r.key, arn(PRIMARY, "snapshot", "nightly-1"), "the sink copies by ARN");
    assert_eq!(r.owner.as_deref(), Some(PRIMARY));
    assert_eq!(r.attributes["start-time"], CREATED);
    assert_eq!(r.attributes["lineage"], "orders-db");
    assert_eq!((add.num_calls(), remove.num_calls()), (1, 0));
    src.finish(&item("nightly-1")).await.unwrap();
    assert_eq!(remove.num_calls(), 1);
    assert_eq!(src.assess(&item("nightly-1")).await.unwrap(), None, "a plain copy");
}

#[tokio::test]
async fn a_snapshot_under_the_aws_managed_key_is_refused_with_what_to_configure() {
    let get =
        get_db("nightly-1", vec![Some(db(PRIMARY, "nightly-1", "available", Some(AWS_KEY), &[]))]);
    let add = share_db("nightly-1", true);
    let src = source(&[&get, &add], KeyManagerType::Aws);
    let err = src.read(&item("nightly-1")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let text = err.to_string();
    assert!(text.contains("nightly-1") && text.contains("reencrypt_key_id"), "{text}");
    assert!(text.contains("aws/rds") && text.contains(ESCROW), "{text}");
    assert_eq!(add.num_calls(), 0, "nothing shared");
    let assessed = src.assess(&item("nightly-1")).await.unwrap_err();
    assert_eq!(assessed.kind(), ErrorKind::Unsupported);
    assert!(assessed.to_string().contains("reencrypt_key_id"), "{assessed}");
}

#[tokio::test]
async fn a_snapshot_under_the_aws_managed_key_is_reencrypted_in_the_primary_once() {
    let base = primary_copy_identifier("nightly-1");
    assert_eq!(base, "escrow-sync-nightly-1");
    let original =
        get_db("nightly-1", vec![Some(db(PRIMARY, "nightly-1", "available", Some(AWS_KEY), &[]))]);
    let tags = [(escrow_sync_core::tags::REENCRYPTED_FROM, "nightly-1")];
    let copy_state = get_db(
        "escrow-sync-nightly-1",
        vec![
            None,
            Some(db(PRIMARY, "escrow-sync-nightly-1", "creating", Some(CUSTOMER), &tags)),
            Some(db(PRIMARY, "escrow-sync-nightly-1", "available", Some(CUSTOMER), &tags)),
        ],
    );
    let copy = mock!(Client::copy_db_snapshot)
        .match_requests(|r| {
            r.source_db_snapshot_identifier() == Some("nightly-1")
                && r.target_db_snapshot_identifier() == Some("escrow-sync-nightly-1")
                && r.kms_key_id() == Some(CUSTOMER)
                && r.tags().iter().any(|t| {
                    t.key() == Some(escrow_sync_core::tags::REENCRYPTED_FROM)
                        && t.value() == Some("nightly-1")
                })
                && !r.tags().iter().any(|t| t.key() == Some(escrow_sync_core::tags::COPIED_FROM))
        })
        .then_output(move || {
            CopyDbSnapshotOutput::builder()
                .db_snapshot(db(
                    PRIMARY,
                    "escrow-sync-nightly-1",
                    "creating",
                    Some(CUSTOMER),
                    &tags,
                ))
                .build()
        });
    let (add, remove) =
        (share_db("escrow-sync-nightly-1", true), share_db("escrow-sync-nightly-1", false));
    let src = source(&[&original, &copy_state, &copy, &add, &remove], KeyManagerType::Aws)
        .with_reencrypt_key_id(Some(CUSTOMER.into()));
    let assessed = src.assess(&item("nightly-1")).await.unwrap().unwrap();
    assert!(
        assessed.starts_with("needs re-encryption: ") && assessed.contains(CUSTOMER),
        "{assessed}"
    );
    assert_eq!(copy.num_calls(), 0, "assess changes nothing");

    let Payload::Reference(r) = src.read(&item("nightly-1")).await.unwrap() else {
        panic!("a reference")
    };
    assert_eq!(
        r.key,
        arn(PRIMARY, "snapshot", "escrow-sync-nightly-1"),
        "the re-encrypted copy is shared"
    );
    assert_eq!(
        r.attributes["arn"],
        arn(PRIMARY, "snapshot", "nightly-1"),
        "provenance: the original"
    );
    assert_eq!((copy.num_calls(), add.num_calls()), (1, 1));
    src.finish(&item("nightly-1")).await.unwrap();
    assert_eq!(remove.num_calls(), 1, "the re-encrypted copy is unshared");
    src.read(&item("nightly-1")).await.unwrap();
    assert_eq!(copy.num_calls(), 1, "a later run reuses the re-encrypted copy");
}

#[tokio::test]
async fn an_automated_snapshot_is_copied_to_a_manual_one_in_the_primary_which_is_shared() {
    let base = primary_copy_identifier(AUTOMATED);
    assert!(base.starts_with("escrow-sync-rds-orders-db-2026-11-28-03-10-"), "{base}");
    let base: &'static str = Box::leak(base.into_boxed_str());
    let automated = mock!(Client::describe_db_snapshots)
        .match_requests(|r| {
            r.db_snapshot_identifier() == Some(AUTOMATED) && r.snapshot_type() == Some("automated")
        })
        .then_output(|| dbs([db(PRIMARY, AUTOMATED, "available", None, &[])]));
    let tags = [(escrow_sync_core::tags::COPIED_FROM, AUTOMATED)];
    // Not there for the plan, nor for the first read; then made.
    let manual = get_db(base, vec![None, None, Some(db(PRIMARY, base, "available", None, &tags))]);
    let copy = mock!(Client::copy_db_snapshot)
        .match_requests(move |r| {
            r.source_db_snapshot_identifier() == Some(AUTOMATED)
                && r.target_db_snapshot_identifier() == Some(base)
                && r.kms_key_id().is_none()
                && r.copy_tags() == Some(false)
                && r.tags().iter().any(|t| {
                    t.key() == Some(escrow_sync_core::tags::COPIED_FROM)
                        && t.value() == Some(AUTOMATED)
                })
        })
        .then_output(move || {
            CopyDbSnapshotOutput::builder()
                .db_snapshot(db(PRIMARY, base, "creating", None, &tags))
                .build()
        });
    let (add, remove) = (share_db(base, true), share_db(base, false));
    let src = source(&[&automated, &manual, &copy, &add, &remove], KeyManagerType::Customer);
    assert_eq!(
        src.assess(&item(AUTOMATED)).await.unwrap().as_deref(),
        Some("automated: copied to a manual snapshot in the primary first")
    );
    let Payload::Reference(r) = src.read(&item(AUTOMATED)).await.unwrap() else {
        panic!("a reference")
    };
    assert_eq!(r.key, arn(PRIMARY, "snapshot", base), "the manual copy is shared");
    assert_eq!(r.fingerprint, AUTOMATED, "the item stays the automated snapshot");
    assert_eq!(r.attributes["arn"], arn(PRIMARY, "snapshot", AUTOMATED));
    assert_eq!((copy.num_calls(), add.num_calls()), (1, 1));
    src.finish(&item(AUTOMATED)).await.unwrap();
    assert_eq!(remove.num_calls(), 1);
    let again = src.assess(&item(AUTOMATED)).await.unwrap().unwrap();
    assert!(again.contains(base), "a later plan names the copy it shares: {again}");
    src.read(&item(AUTOMATED)).await.unwrap();
    assert_eq!(copy.num_calls(), 1, "a later run reuses the manual copy");
}

fn escrow_copy_rule(target: &'static str, kms: Option<&'static str>) -> Rule {
    mock!(Client::copy_db_snapshot)
        .match_requests(move |r| {
            let tags: BTreeMap<&str, &str> =
                r.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or(""))).collect();
            r.source_db_snapshot_identifier() == Some(&arn(PRIMARY, "snapshot", "nightly-1")[..])
                && r.target_db_snapshot_identifier() == Some(target)
                && r.kms_key_id() == kms
                && r.copy_tags() == Some(false)
                && tags.get(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID) == Some(&"nightly-1")
                && tags.get("escrow-sync:source-account") == Some(&PRIMARY)
                && tags.get("escrow-sync:source-arn")
                    == Some(&&arn(PRIMARY, "snapshot", "nightly-1")[..])
                && tags.get("escrow-sync:source-start-time") == Some(&CREATED)
                && tags.get("escrow-sync:lineage") == Some(&"orders-db")
                && tags.get("escrow-sync:copied-at").is_some_and(|t| t.ends_with('Z'))
        })
        .then_output(move || {
            CopyDbSnapshotOutput::builder()
                .db_snapshot(escrow_copy("nightly-1", target, "creating", kms))
                .build()
        })
}

#[tokio::test]
async fn the_copy_is_made_from_the_shared_arn_with_the_escrow_key_tags_and_waited_for() {
    assert_eq!(escrow_identifier("nightly-1"), "escrow-nightly-1");
    let state = get_db(
        "escrow-nightly-1",
        vec![
            None,
            Some(escrow_copy("nightly-1", "escrow-nightly-1", "creating", Some(ESCROW_KEY))),
            Some(escrow_copy("nightly-1", "escrow-nightly-1", "copying", Some(ESCROW_KEY))),
            Some(escrow_copy("nightly-1", "escrow-nightly-1", "available", Some(ESCROW_KEY))),
        ],
    );
    let copy = escrow_copy_rule("escrow-nightly-1", Some(ESCROW_KEY));
    let receipt = sink(&[&state, &copy])
        .write(&item("nightly-1"), reference("nightly-1", "nightly-1", false))
        .await
        .unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("escrow-nightly-1"));
    assert_eq!(receipt.bytes, 20 << 30);
    assert_eq!((copy.num_calls(), state.num_calls()), (1, 4));
}

#[tokio::test]
async fn quota_errors_and_throttling_are_retried() {
    // No copy until the attempt after the quota error makes one.
    let state = get_db(
        "escrow-nightly-1",
        vec![
            None,
            None,
            Some(escrow_copy("nightly-1", "escrow-nightly-1", "available", Some(ESCROW_KEY))),
        ],
    );
    // Throttling is retried by the SDK; a full snapshot quota goes back to
    // the executor as a throttle, which backs off and tries again.
    let copy = mock!(Client::copy_db_snapshot)
        .sequence()
        .http_status(400, Some(error_xml("Throttling", "Rate exceeded")))
        .http_status(400, Some(error_xml("SnapshotQuotaExceeded", "Cannot copy more snapshots")))
        .output(|| {
            CopyDbSnapshotOutput::builder()
                .db_snapshot(escrow_copy(
                    "nightly-1",
                    "escrow-nightly-1",
                    "creating",
                    Some(ESCROW_KEY),
                ))
                .build()
        })
        .build();
    let dest = sink(&[&state, &copy]);
    let err = dest
        .write(&item("nightly-1"), reference("nightly-1", "nightly-1", false))
        .await
        .unwrap_err();
    assert!(err.is_throttle() && err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("SnapshotQuotaExceeded") && err.to_string().contains("nightly-1"),
        "{err}"
    );
    assert_eq!(copy.num_calls(), 2, "throttling retried by the SDK");
    dest.write(&item("nightly-1"), reference("nightly-1", "nightly-1", false)).await.unwrap();
    assert_eq!(copy.num_calls(), 3);
}

#[tokio::test]
async fn a_failed_copy_is_reported_with_rds_message_and_the_next_run_copies_again() {
    let failed = escrow_copy("nightly-1", "escrow-nightly-1", "failed", Some(ESCROW_KEY));
    let state = get_db("escrow-nightly-1", vec![None, Some(failed.clone())]);
    let events = mock!(Client::describe_events)
        .match_requests(|r| r.source_identifier() == Some("escrow-nightly-1"))
        .then_output(|| {
            DescribeEventsOutput::builder()
                .events(Event::builder().message("Copying snapshot started").build())
                .events(Event::builder().message("The KMS key is not accessible").build())
                .build()
        });
    let copy = escrow_copy_rule("escrow-nightly-1", Some(ESCROW_KEY));
    let retry = escrow_copy_rule("escrow-nightly-1-retry-2", Some(ESCROW_KEY));
    // The escrow's manual snapshots, by tag: the failed copy.
    let tagged = mock!(Client::describe_db_snapshots)
        .match_requests(|r| {
            r.db_snapshot_identifier().is_none() && r.snapshot_type() == Some("manual")
        })
        .then_output(move || dbs([failed.clone()]));
    let retry_state = get_db(
        "escrow-nightly-1-retry-2",
        vec![Some(escrow_copy(
            "nightly-1",
            "escrow-nightly-1-retry-2",
            "available",
            Some(ESCROW_KEY),
        ))],
    );
    let dest = sink(&[&state, &events, &copy, &retry, &tagged, &retry_state]);
    let err = dest
        .write(&item("nightly-1"), reference("nightly-1", "nightly-1", false))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    let text = err.to_string();
    assert!(
        text.contains("The KMS key is not accessible") && text.contains("status failed"),
        "{text}"
    );
    assert!(text.contains("nightly-1"), "{text}");
    let receipt =
        dest.write(&item("nightly-1"), reference("nightly-1", "nightly-1", false)).await.unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("escrow-nightly-1-retry-2"));
    assert_eq!((copy.num_calls(), retry.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_copy_left_in_progress_is_waited_on_not_started_again() {
    let state = get_db(
        "escrow-nightly-1",
        vec![
            Some(escrow_copy("nightly-1", "escrow-nightly-1", "copying", Some(ESCROW_KEY))),
            Some(escrow_copy("nightly-1", "escrow-nightly-1", "copying", Some(ESCROW_KEY))),
            Some(escrow_copy("nightly-1", "escrow-nightly-1", "available", Some(ESCROW_KEY))),
        ],
    );
    let copy = escrow_copy_rule("escrow-nightly-1", Some(ESCROW_KEY));
    let receipt = sink(&[&state, &copy])
        .write(&item("nightly-1"), reference("nightly-1", "nightly-1", false))
        .await
        .unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("escrow-nightly-1"));
    assert_eq!(copy.num_calls(), 0, "no second copy");
}

#[tokio::test]
async fn a_snapshot_of_another_source_under_the_copy_name_is_not_taken_for_the_copy() {
    let state = get_db(
        "escrow-nightly-1",
        vec![Some(db(ESCROW, "escrow-nightly-1", "available", None, &[]))],
    );
    let copy = escrow_copy_rule("escrow-nightly-1", Some(ESCROW_KEY));
    let err = sink(&[&state, &copy])
        .write(&item("nightly-1"), reference("nightly-1", "nightly-1", false))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("already exists") && err.to_string().contains("escrow-nightly-1"),
        "{err}"
    );
    assert_eq!(copy.num_calls(), 0);
}

#[tokio::test]
async fn a_copy_of_another_primarys_snapshot_of_the_same_name_is_not_this_ones() {
    // One escrow, two primaries: 333333333333 also has a `nightly-1`.
    let theirs = db(
        ESCROW,
        "escrow-nightly-1",
        "available",
        Some(ESCROW_KEY),
        &[
            (escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, "nightly-1"),
            ("escrow-sync:source-account", "333333333333"),
        ],
    );
    let all = {
        let theirs = theirs.clone();
        mock!(Client::describe_db_snapshots)
            .match_requests(|r| r.db_snapshot_identifier().is_none())
            .then_output(move || dbs([theirs.clone()]))
    };
    let named = get_db("escrow-nightly-1", vec![Some(theirs.clone())]);
    let retry = get_db(
        "escrow-nightly-1-retry-2",
        vec![Some(escrow_copy("nightly-1", "escrow-nightly-1-retry-2", "available", None))],
    );
    let copy = escrow_copy_rule("escrow-nightly-1-retry-2", Some(ESCROW_KEY));
    let ours = sink(&[&all, &named, &retry, &copy]).with_source_account(Some(PRIMARY.into()));
    let listed: Vec<Item> = ours.list(&Scope::all()).try_collect().await.unwrap();
    assert!(listed.is_empty(), "their copy is not ours: {listed:?}");
    assert!(ours.copies().await.unwrap().is_empty(), "nor is it ours to prune");
    let audit = ours.audit(&item("nightly-1")).await.unwrap();
    assert!(audit.iter().any(|p| p.contains("no available copy")), "{audit:?}");

    // The write tells them apart by the payload's owner, even unconfigured.
    let receipt = sink(&[&all, &named, &retry, &copy])
        .write(&item("nightly-1"), reference("nightly-1", "nightly-1", false))
        .await
        .unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("escrow-nightly-1-retry-2"));
    assert_eq!(copy.num_calls(), 1, "copied, not taken for theirs");
}

#[tokio::test]
async fn a_run_copies_what_escrow_lacks_a_rerun_makes_no_mutating_call_and_verify_is_clean() {
    // Primary: two snapshots. Escrow: a complete copy of nightly-2 already.
    let primary_list = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.db_snapshot_identifier().is_none())
        .then_output(|| {
            dbs([
                db(PRIMARY, "nightly-1", "available", None, &[]),
                db(PRIMARY, "nightly-2", "available", None, &[]),
            ])
        });
    let primary_one =
        get_db("nightly-1", vec![Some(db(PRIMARY, "nightly-1", "available", None, &[]))]);
    let (add, remove) = (share_db("nightly-1", true), share_db("nightly-1", false));
    // Items escrow already holds are looked at, not unshared: nothing is
    // left shared.
    let (restore_1, restore_2) =
        (restore_db("nightly-1", vec![vec![]]), restore_db("nightly-2", vec![vec![]]));
    let src = source(
        &[&primary_list, &primary_one, &add, &remove, &restore_1, &restore_2],
        KeyManagerType::Customer,
    );

    let escrow_list = mock!(Client::describe_db_snapshots)
        .match_requests(|r| {
            r.db_snapshot_identifier().is_none() && r.snapshot_type() == Some("manual")
        })
        .sequence()
        .output(|| {
            dbs([escrow_copy("nightly-2", "escrow-nightly-2", "available", Some(ESCROW_KEY))])
        })
        .output(|| {
            dbs([
                escrow_copy("nightly-2", "escrow-nightly-2", "available", Some(ESCROW_KEY)),
                escrow_copy("nightly-1", "escrow-nightly-1", "available", Some(ESCROW_KEY)),
                // An older failed copy of nightly-1 (listed once all the same).
                escrow_copy("nightly-1", "escrow-nightly-1-retry-2", "available", Some(ESCROW_KEY)),
            ])
        })
        .repeatedly()
        .build();
    let copy_state = get_db(
        "escrow-nightly-1",
        vec![
            None,
            Some(escrow_copy("nightly-1", "escrow-nightly-1", "available", Some(ESCROW_KEY))),
        ],
    );
    let other_state = get_db(
        "escrow-nightly-2",
        vec![Some(escrow_copy("nightly-2", "escrow-nightly-2", "available", Some(ESCROW_KEY)))],
    );
    let copy = escrow_copy_rule("escrow-nightly-1", Some(ESCROW_KEY));
    let dest = sink(&[&escrow_list, &copy_state, &other_state, &copy]);

    let ex = Executor::new(ExecutorOptions::new().with_concurrency(20).with_retry(RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }));
    let run = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.skipped, run.failed), (1, 1, 0), "{run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert_eq!((add.num_calls(), copy.num_calls(), remove.num_calls()), (1, 1, 1));
    let again = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 2), "{again:?}");
    assert_eq!(
        (add.num_calls(), copy.num_calls(), remove.num_calls()),
        (1, 1, 1),
        "no mutating call"
    );
    assert_eq!((restore_1.num_calls(), restore_2.num_calls()), (1, 2), "each skip looked");
    let verify = ex.execute(Mode::Verify, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((verify.missing, verify.unprotected, verify.failed), (0, 0, 0), "{verify:?}");
    assert_eq!(copy.num_calls(), 1);
}

/// After runs interrupted before their unshare, escrow holds copies of
/// nightly-1 (left shared), the automated snapshot (its manual copy in the
/// primary left shared), nightly-3 (under the AWS-managed key: its
/// re-encrypted copy left shared) and nightly-4 (shared with another
/// account only): a run removes exactly the escrow account's leftover
/// shares, copies nothing, and a re-run makes no mutating call.
#[tokio::test]
async fn a_share_an_interrupted_run_left_is_removed_for_items_escrow_holds() {
    let manual_copy = primary_copy_identifier(AUTOMATED);
    let reencrypted = primary_copy_identifier("nightly-3");
    let (manual_id, reencrypted_id): (&'static str, &'static str) =
        (Box::leak(manual_copy.clone().into_boxed_str()), Box::leak(reencrypted.into_boxed_str()));
    let primary_list = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.db_snapshot_identifier().is_none())
        .then_output(move || {
            dbs([
                db(PRIMARY, "nightly-1", "available", None, &[]),
                db(PRIMARY, AUTOMATED, "available", None, &[]),
                db(
                    PRIMARY,
                    manual_id,
                    "available",
                    None,
                    &[(escrow_sync_core::tags::COPIED_FROM, AUTOMATED)],
                ),
                db(PRIMARY, "nightly-3", "available", Some(AWS_KEY), &[]),
                db(
                    PRIMARY,
                    reencrypted_id,
                    "available",
                    Some(CUSTOMER),
                    &[(escrow_sync_core::tags::REENCRYPTED_FROM, "nightly-3")],
                ),
                db(PRIMARY, "nightly-4", "available", None, &[]),
            ])
        });
    // Shared the first time asked; no longer once unshared.
    let restores = [
        restore_db("nightly-1", vec![vec![ESCROW], vec![]]),
        restore_db(manual_id, vec![vec![ESCROW, "333333333333"], vec!["333333333333"]]),
        restore_db(reencrypted_id, vec![vec![ESCROW], vec![]]),
        restore_db("nightly-4", vec![vec!["333333333333"]]),
    ];
    let removes =
        [share_db("nightly-1", false), share_db(manual_id, false), share_db(reencrypted_id, false)];
    let others = mock!(Client::modify_db_snapshot_attribute)
        .then_output(|| ModifyDbSnapshotAttributeOutput::builder().build());
    let mut rules: Vec<&Rule> = vec![&primary_list];
    rules.extend(restores.iter());
    rules.extend(removes.iter());
    rules.push(&others);
    let src = source(&rules, KeyManagerType::Customer);
    assert!(src.finishes_skipped());

    let escrow_list = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.snapshot_type() == Some("manual"))
        .then_output(|| {
            dbs(["nightly-1", AUTOMATED, "nightly-3", "nightly-4"]
                .map(|id| escrow_copy(id, &escrow_identifier(id), "available", Some(ESCROW_KEY))))
        });
    let copy =
        mock!(Client::copy_db_snapshot).then_output(|| CopyDbSnapshotOutput::builder().build());
    let dest = sink(&[&escrow_list, &copy]);
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(20));
    let run = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.skipped, run.failed), (0, 4, 0), "{run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert_eq!(removes.each_ref().map(|r| r.num_calls()), [1, 1, 1], "each leftover share removed");
    assert_eq!(others.num_calls(), 0, "nothing else: not nightly-3 itself, not nightly-4");
    assert_eq!(restores.each_ref().map(|r| r.num_calls()), [1, 1, 1, 1], "one look each");
    assert_eq!(copy.num_calls(), 0, "nothing copied");

    let again = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 4, 0), "{again:?}");
    assert_eq!(removes.each_ref().map(|r| r.num_calls()), [1, 1, 1], "no mutating call");
    assert_eq!((others.num_calls(), copy.num_calls()), (0, 0));

    // Without unshare_after_copy, nothing is looked at or removed.
    let keep = source(&rules, KeyManagerType::Customer).with_unshare_after_copy(false);
    assert!(!keep.finishes_skipped());
    let kept = ex.execute(Mode::Run, &keep, &dest, &Scope::all()).await.unwrap();
    assert_eq!(kept.skipped, 4, "{kept:?}");
    keep.finish(&item("nightly-1")).await.unwrap();
    assert_eq!(restores.each_ref().map(|r| r.num_calls()), [2, 2, 2, 2], "not asked");
    assert_eq!(removes.each_ref().map(|r| r.num_calls()), [1, 1, 1]);
    assert_eq!(others.num_calls(), 0);
}

/// The same for an Aurora cluster snapshot listed by id: the listing does
/// not show copies in the primary, so the snapshot and its copy's name are
/// looked at (the copy does not exist: not an error), with the cluster calls.
#[tokio::test]
async fn an_aurora_share_left_is_removed_with_the_cluster_calls_when_listed_by_id() {
    let list = mock!(Client::describe_db_cluster_snapshots)
        .match_requests(|r| r.db_cluster_snapshot_identifier().is_none())
        .then_output(|| {
            clusters([cluster(PRIMARY, "weekly-1", "available", Some(PRIMARY_KEY), &[])])
        });
    let restore = |accounts: Vec<&'static str>| {
        DescribeDbClusterSnapshotAttributesOutput::builder()
            .db_cluster_snapshot_attributes_result(
                DbClusterSnapshotAttributesResult::builder()
                    .db_cluster_snapshot_identifier("weekly-1")
                    .db_cluster_snapshot_attributes(
                        DbClusterSnapshotAttribute::builder()
                            .attribute_name("restore")
                            .set_attribute_values(Some(
                                accounts.iter().map(|a| a.to_string()).collect(),
                            ))
                            .build(),
                    )
                    .build(),
            )
            .build()
    };
    let attributes = mock!(Client::describe_db_cluster_snapshot_attributes)
        .match_requests(|r| r.db_cluster_snapshot_identifier() == Some("weekly-1"))
        .sequence()
        .output(move || restore(vec![ESCROW]))
        .output(move || restore(vec![]))
        .repeatedly()
        .build();
    let copy_name = primary_copy_identifier("weekly-1");
    let no_copy = mock!(Client::describe_db_cluster_snapshot_attributes)
        .match_requests(move |r| r.db_cluster_snapshot_identifier() == Some(copy_name.as_str()))
        .sequence()
        .http_status(404, Some(error_xml("DBClusterSnapshotNotFoundFault", "not found")))
        .repeatedly()
        .build();
    let remove = mock!(Client::modify_db_cluster_snapshot_attribute)
        .match_requests(|r| {
            r.db_cluster_snapshot_identifier() == Some("weekly-1")
                && r.attribute_name() == Some("restore")
                && r.values_to_remove() == [ESCROW]
                && r.values_to_add().is_empty()
        })
        .then_output(|| ModifyDbClusterSnapshotAttributeOutput::builder().build());
    let src = RdsSnapshotSource::from_client(
        rds(&[&list, &attributes, &no_copy, &remove]),
        kms(KeyManagerType::Customer),
        RdsKind::Cluster,
        "us-east-1",
        PRIMARY,
        ESCROW,
    )
    .with_ids(vec!["weekly-1".into()]);
    let escrow_tags = [(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, "weekly-1")];
    let escrow_list = mock!(Client::describe_db_cluster_snapshots).then_output(move || {
        clusters([cluster(ESCROW, "escrow-weekly-1", "available", Some(ESCROW_KEY), &escrow_tags)])
    });
    let dest = RdsSnapshotSink::from_client(rds(&[&escrow_list]), RdsKind::Cluster, "us-east-1")
        .with_kms_key_id(Some(ESCROW_KEY.into()));
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(4));
    let run = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((run.skipped, run.failed), (1, 0), "{run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert_eq!((attributes.num_calls(), no_copy.num_calls(), remove.num_calls()), (1, 1, 1));
    let again = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((again.skipped, again.failed), (1, 0), "{again:?}");
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(remove.num_calls(), 1, "nothing left: no mutating call");
}

#[tokio::test]
async fn audit_reports_copies_not_under_the_escrow_key() {
    let wrong = get_db(
        "escrow-nightly-1",
        vec![Some(escrow_copy("nightly-1", "escrow-nightly-1", "available", Some(PRIMARY_KEY)))],
    );
    let problems = sink(&[&wrong]).audit(&item("nightly-1")).await.unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains(PRIMARY_KEY) && problems[0].contains(ESCROW_KEY), "{problems:?}");
    assert!(problems[1].contains("account 111111111111"), "{problems:?}");

    let plain = get_db(
        "escrow-nightly-1",
        vec![Some(escrow_copy("nightly-1", "escrow-nightly-1", "available", None))],
    );
    let problems = sink(&[&plain]).audit(&item("nightly-1")).await.unwrap();
    assert_eq!(problems, ["the escrow copy escrow-nightly-1 is not encrypted"]);

    let good = get_db(
        "escrow-nightly-1",
        vec![Some(escrow_copy("nightly-1", "escrow-nightly-1", "available", Some(ESCROW_KEY)))],
    );
    let dest = sink(&[&good]);
    assert!(dest.audits());
    assert!(dest.audit(&item("nightly-1")).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_retention_store_lists_every_copy_and_deletes_only_its_own() {
    let list = mock!(Client::describe_db_snapshots)
        .match_requests(|r| r.db_snapshot_identifier().is_none())
        .then_output(|| {
            dbs([
                escrow_copy("nightly-1", "escrow-nightly-1", "available", Some(ESCROW_KEY)),
                escrow_copy("nightly-2", "escrow-nightly-2", "copying", Some(ESCROW_KEY)),
                db(ESCROW, "someone-elses", "available", None, &[]),
            ])
        });
    let one = get_db(
        "escrow-nightly-1",
        vec![Some(escrow_copy("nightly-1", "escrow-nightly-1", "available", Some(ESCROW_KEY)))],
    );
    let delete = mock!(Client::delete_db_snapshot)
        .match_requests(|r| r.db_snapshot_identifier() == Some("escrow-nightly-1"))
        .then_output(|| DeleteDbSnapshotOutput::builder().build());
    let dest = sink(&[&list, &one, &delete]);
    let copies = dest.copies().await.unwrap();
    assert_eq!(
        copies,
        [
            EscrowCopy {
                id: "escrow-nightly-1".into(),
                source: "nightly-1".into(),
                lineage: "orders-db".into(),
                created: CREATED.into(),
                complete: true,
                copied: Some(CREATED.into()),
                job: None,
            },
            EscrowCopy {
                id: "escrow-nightly-2".into(),
                source: "nightly-2".into(),
                lineage: "orders-db".into(),
                created: CREATED.into(),
                complete: false,
                copied: Some(CREATED.into()),
                job: None,
            },
        ]
    );
    assert_eq!(Retained::describe(&dest), "rds://escrow/us-east-1");
    dest.delete_copy(&copies[0]).await.unwrap();
    assert_eq!(delete.num_calls(), 1);
    let mut wrong = copies[0].clone();
    wrong.source = "nightly-9".into();
    let err = dest.delete_copy(&wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    assert_eq!(delete.num_calls(), 1, "not a copy of that source: not deleted");
}

fn get_cluster(id: &'static str, answers: Vec<Option<DbClusterSnapshot>>) -> Rule {
    let mut seq = mock!(Client::describe_db_cluster_snapshots)
        .match_requests(move |r| r.db_cluster_snapshot_identifier() == Some(id))
        .sequence();
    let last = answers.len() - 1;
    for (i, a) in answers.into_iter().enumerate() {
        seq = match a {
            Some(s) => seq.output(move || clusters([s.clone()])),
            None => seq.http_status(
                404,
                Some(error_xml("DBClusterSnapshotNotFoundFault", &format!("{id} not found"))),
            ),
        };
        if i == last {
            return seq.repeatedly().build();
        }
    }
    unreachable!()
}

#[tokio::test]
async fn an_aurora_cluster_snapshot_is_shared_and_copied_with_the_cluster_calls() {
    let get = get_cluster(
        "weekly-1",
        vec![Some(cluster(PRIMARY, "weekly-1", "available", Some(PRIMARY_KEY), &[]))],
    );
    let share = |add: bool| {
        mock!(Client::modify_db_cluster_snapshot_attribute)
            .match_requests(move |r| {
                let values = if add { r.values_to_add() } else { r.values_to_remove() };
                r.db_cluster_snapshot_identifier() == Some("weekly-1")
                    && r.attribute_name() == Some("restore")
                    && values == [ESCROW]
            })
            .then_output(|| ModifyDbClusterSnapshotAttributeOutput::builder().build())
    };
    let (add, remove) = (share(true), share(false));
    let src = RdsSnapshotSource::from_client(
        rds(&[&get, &add, &remove]),
        kms(KeyManagerType::Customer),
        RdsKind::Cluster,
        "us-east-1",
        PRIMARY,
        ESCROW,
    );
    assert_eq!(src.describe(), "aurora://111111111111/us-east-1");
    assert_eq!(src.assess(&item("weekly-1")).await.unwrap(), None);
    let payload = src.read(&item("weekly-1")).await.unwrap();
    let Payload::Reference(r) = &payload else { panic!("a reference") };
    assert_eq!(r.key, arn(PRIMARY, "cluster-snapshot", "weekly-1"));
    assert_eq!(r.attributes["lineage"], "orders-aurora");

    let escrow_tags = [(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, "weekly-1")];
    let state = get_cluster(
        "escrow-weekly-1",
        vec![
            None,
            Some(cluster(ESCROW, "escrow-weekly-1", "available", Some(ESCROW_KEY), &escrow_tags)),
        ],
    );
    let copy = mock!(Client::copy_db_cluster_snapshot)
        .match_requests(|r| {
            r.source_db_cluster_snapshot_identifier()
                == Some(&arn(PRIMARY, "cluster-snapshot", "weekly-1")[..])
                && r.target_db_cluster_snapshot_identifier() == Some("escrow-weekly-1")
                && r.kms_key_id() == Some(ESCROW_KEY)
                && r.copy_tags() == Some(false)
                && r.tags().iter().any(|t| {
                    t.key() == Some("escrow-sync:lineage") && t.value() == Some("orders-aurora")
                })
        })
        .then_output(move || {
            CopyDbClusterSnapshotOutput::builder()
                .db_cluster_snapshot(cluster(
                    ESCROW,
                    "escrow-weekly-1",
                    "creating",
                    Some(ESCROW_KEY),
                    &escrow_tags,
                ))
                .build()
        });
    let dest = RdsSnapshotSink::from_client(rds(&[&state, &copy]), RdsKind::Cluster, "us-east-1")
        .with_kms_key_id(Some(ESCROW_KEY.into()))
        .with_wait(Duration::from_secs(5), Duration::from_millis(1));
    assert_eq!(Sink::describe(&dest), "aurora://escrow/us-east-1");
    let receipt = dest.write(&item("weekly-1"), payload).await.unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("escrow-weekly-1"));
    assert_eq!(copy.num_calls(), 1);
    src.finish(&item("weekly-1")).await.unwrap();
    assert_eq!((add.num_calls(), remove.num_calls()), (1, 1));
    assert!(dest.audit(&item("weekly-1")).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unencrypted_aurora_snapshot_is_copied_without_a_key_and_reported() {
    let get =
        get_cluster("weekly-1", vec![Some(cluster(PRIMARY, "weekly-1", "available", None, &[]))]);
    let src = RdsSnapshotSource::from_client(
        rds(&[&get]),
        kms(KeyManagerType::Customer),
        RdsKind::Cluster,
        "us-east-1",
        PRIMARY,
        ESCROW,
    );
    let assessed = src.assess(&item("weekly-1")).await.unwrap().unwrap();
    assert!(assessed.starts_with("unencrypted: "), "{assessed}");

    let escrow_tags = [(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID, "weekly-1")];
    let state = get_cluster(
        "escrow-weekly-1",
        vec![None, Some(cluster(ESCROW, "escrow-weekly-1", "available", None, &escrow_tags))],
    );
    // AWS refuses a KmsKeyId for a copy of an unencrypted cluster snapshot.
    let copy = mock!(Client::copy_db_cluster_snapshot)
        .match_requests(|r| r.kms_key_id().is_none())
        .then_output(move || {
            CopyDbClusterSnapshotOutput::builder()
                .db_cluster_snapshot(cluster(
                    ESCROW,
                    "escrow-weekly-1",
                    "creating",
                    None,
                    &escrow_tags,
                ))
                .build()
        });
    let dest = RdsSnapshotSink::from_client(rds(&[&state, &copy]), RdsKind::Cluster, "us-east-1")
        .with_kms_key_id(Some(ESCROW_KEY.into()))
        .with_wait(Duration::from_secs(5), Duration::from_millis(1));
    let payload = Payload::Reference(
        ServerSideRef::new(
            "rds",
            "us-east-1",
            arn(PRIMARY, "cluster-snapshot", "weekly-1"),
            "weekly-1",
        )
        .with_owner(Some(PRIMARY.into()))
        .with_attributes(BTreeMap::from([("encrypted".to_string(), "false".to_string())])),
    );
    dest.write(&item("weekly-1"), payload).await.unwrap();
    assert_eq!(copy.num_calls(), 1);
    let problems = dest.audit(&item("weekly-1")).await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("not encrypted") && problems[0].contains("Aurora"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_key_out_of_reach_says_what_to_grant() {
    let state = get_db("escrow-nightly-1", vec![None]);
    let copy = mock!(Client::copy_db_snapshot)
        .sequence()
        .http_status(400, Some(error_xml("KMSKeyNotAccessibleFault", "The key is not accessible")))
        .build();
    let err = sink(&[&state, &copy])
        .write(&item("nightly-1"), reference("nightly-1", "nightly-1", true))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    let text = err.chain();
    assert!(
        text.contains("kms:CreateGrant") && text.contains("KMSKeyNotAccessibleFault"),
        "{text}"
    );
    assert!(text.contains("nightly-1"), "{text}");
}

#[tokio::test]
async fn an_encrypted_snapshot_without_an_escrow_key_or_from_another_region_is_refused() {
    let copy = escrow_copy_rule("escrow-nightly-1", None);
    let no_key = RdsSnapshotSink::from_client(rds(&[&copy]), RdsKind::Db, "us-east-1");
    let err = no_key
        .write(&item("nightly-1"), reference("nightly-1", "nightly-1", true))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("kms_key_id"), "{err}");

    let elsewhere = RdsSnapshotSink::from_client(rds(&[&copy]), RdsKind::Db, "eu-west-1")
        .with_kms_key_id(Some(ESCROW_KEY.into()));
    let err = elsewhere
        .write(&item("nightly-1"), reference("nightly-1", "nightly-1", true))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("cross-region"), "{err}");
    assert_eq!(copy.num_calls(), 0);
}
