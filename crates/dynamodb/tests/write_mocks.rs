//! The escrow table's writes and lookups against aws-smithy-mocks:
//! 25-item batches with no key twice, UnprocessedItems re-sent until done,
//! throttling backed off, items still failing after the retry budget sent
//! to the dead-letter file (and the run reporting them), a validation
//! error isolated to its item, and UnprocessedKeys on lookups.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

mod common;

use escrow_sync_core::{Mode, RetryPolicy};
use escrow_sync_dynamodb::json::{Record, from_line};
use escrow_sync_dynamodb::table::batches;
use escrow_sync_dynamodb::{EscrowTable, KeySchema, ScanOptions, TableInfo, TableJob};

fn item(pk: &str) -> Record {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(pk.to_string())),
        ("v".to_string(), AttributeValue::N("1".into())),
    ])
}

fn pk_of(r: &Record) -> String {
    match &r["pk"] {
        AttributeValue::S(s) => s.clone(),
        other => panic!("{other:?}"),
    }
}

fn keys() -> KeySchema {
    KeySchema::new("pk", None)
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }
}

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules)
}

fn sink(rules: &[&Rule]) -> EscrowTable {
    EscrowTable::from_client(client(rules), "escrow-orders").with_retry(fast())
}

fn put_items(
    input: &aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput,
) -> Vec<Record> {
    input
        .request_items()
        .and_then(|m| m.get("escrow-orders"))
        .map(|w| w.iter().filter_map(|r| r.put_request().map(|p| p.item().clone())).collect())
        .unwrap_or_default()
}

fn unprocessed(items: Vec<Record>) -> BatchWriteItemOutput {
    let requests: Vec<WriteRequest> = items
        .into_iter()
        .map(|i| {
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(i)).build().unwrap())
                .build()
        })
        .collect();
    BatchWriteItemOutput::builder()
        .set_unprocessed_items(
            (!requests.is_empty())
                .then(|| HashMap::from([("escrow-orders".to_string(), requests)])),
        )
        .build()
}

const TOO_BIG: &str = r#"{"__type":"com.amazon.coral.validation#ValidationException","message":"Item size has exceeded the maximum allowed size"}"#;

#[test]
fn batches_hold_at_most_25_items_and_never_one_key_twice() {
    let mut records: Vec<Record> = (0..60).map(|i| item(&format!("k{i}"))).collect();
    records.insert(10, item("k3")); // k3 again, within what would be one batch
    let b = batches(records, &keys()).unwrap();
    assert!(b.iter().all(|b| b.len() <= 25));
    assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 61, "nothing dropped");
    for batch in &b {
        let ks: HashSet<String> = batch.iter().map(pk_of).collect();
        assert_eq!(ks.len(), batch.len(), "a key twice in one batch");
    }
    let first_k3 = b.iter().position(|b| b.iter().any(|r| pk_of(r) == "k3")).unwrap();
    assert!(b[first_k3 + 1..].iter().any(|b| b.iter().any(|r| pk_of(r) == "k3")));
}

#[tokio::test]
async fn unprocessed_items_are_sent_again_until_written() {
    // The first request leaves its last two items unprocessed.
    let rule = mock!(Client::batch_write_item)
        .match_requests(|r| put_items(r).len() <= 25)
        .sequence()
        .output(|| unprocessed(vec![item("k8"), item("k9")]))
        .output(|| unprocessed(vec![]))
        .build();
    let out = sink(&[&rule])
        .write((0..10).map(|i| item(&format!("k{i}"))).collect(), &keys())
        .await
        .unwrap();
    assert_eq!((out.written, out.dead.len()), (10, 0));
    assert_eq!(rule.num_calls(), 2);
    assert_eq!(out.throttled, 1, "an unprocessed round counts as throttling");
}

#[tokio::test]
async fn throttling_is_backed_off_then_succeeds() {
    let rule = mock!(Client::batch_write_item)
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}"#.into()),
        )
        .times(2)
        .output(|| unprocessed(vec![]))
        .build();
    let out = sink(&[&rule]).write(vec![item("a"), item("b")], &keys()).await.unwrap();
    assert_eq!((out.written, out.dead.len(), out.throttled), (2, 0, 2));
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn items_unprocessed_past_the_budget_are_dead_not_dropped() {
    let rule = mock!(Client::batch_write_item).then_output(|| unprocessed(vec![item("stuck")]));
    let out = sink(&[&rule]).write(vec![item("ok"), item("stuck")], &keys()).await.unwrap();
    assert_eq!(out.written, 1);
    assert_eq!(out.dead.len(), 1);
    assert_eq!(pk_of(&out.dead[0].0), "stuck");
    assert!(
        out.dead[0].1.to_string().contains("unprocessed after 4 attempts"),
        "{}",
        out.dead[0].1
    );
    assert_eq!(rule.num_calls(), 4, "the whole retry budget");
}

#[tokio::test]
async fn a_validation_error_is_isolated_to_its_item() {
    let batch =
        mock!(Client::batch_write_item).sequence().http_status(400, Some(TOO_BIG.into())).build();
    let good = mock!(Client::put_item)
        .match_requests(|r| {
            r.item().and_then(|i| i.get("pk")) != Some(&AttributeValue::S("huge".into()))
        })
        .then_output(|| PutItemOutput::builder().build());
    let bad = mock!(Client::put_item)
        .match_requests(|r| {
            r.item().and_then(|i| i.get("pk")) == Some(&AttributeValue::S("huge".into()))
        })
        .sequence()
        .http_status(400, Some(TOO_BIG.into()))
        .build();
    let out = sink(&[&batch, &good, &bad])
        .write(vec![item("a"), item("huge"), item("b")], &keys())
        .await
        .unwrap();
    assert_eq!((out.written, out.dead.len()), (2, 1));
    assert!(out.dead[0].1.to_string().contains("maximum allowed size"), "{}", out.dead[0].1);
    assert_eq!((good.num_calls(), bad.num_calls()), (2, 1));
}

#[tokio::test]
async fn access_denied_fails_the_write_instead_of_dead_lettering() {
    let rule = mock!(Client::batch_write_item)
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not authorized"}"#.into()),
        )
        .build();
    let err = sink(&[&rule]).write(vec![item("a")], &keys()).await.unwrap_err();
    assert_eq!(err.kind(), escrow_sync_core::ErrorKind::AccessDenied, "{err}");
    assert!(err.to_string().contains("escrow-orders"), "{err}");
}

#[tokio::test]
async fn lookups_follow_unprocessed_keys() {
    let rule = mock!(Client::batch_get_item)
        .match_requests(|r| {
            r.request_items()
                .and_then(|m| m.get("escrow-orders"))
                .is_some_and(|k| k.consistent_read() == Some(true))
        })
        .sequence()
        .output(|| {
            BatchGetItemOutput::builder()
                .responses("escrow-orders", vec![item("a")])
                .unprocessed_keys(
                    "escrow-orders",
                    KeysAndAttributes::builder()
                        .keys(HashMap::from([("pk".to_string(), AttributeValue::S("b".into()))]))
                        .build()
                        .unwrap(),
                )
                .build()
        })
        .output(|| {
            BatchGetItemOutput::builder().responses("escrow-orders", vec![item("b")]).build()
        })
        .build();
    let ks: Vec<(String, Record)> = ["a", "b", "c"]
        .iter()
        .map(|k| {
            let r = HashMap::from([("pk".to_string(), AttributeValue::S(k.to_string()))]);
            (keys().key_text(&r).unwrap(), r)
        })
        .collect();
    let found = sink(&[&rule]).lookup(&ks, &keys()).await.unwrap();
    assert_eq!(found.len(), 2, "a and b held, c not");
    assert_eq!(rule.num_calls(), 2);
}

fn describe_rules(name: &'static str) -> Vec<Rule> {
    common::table_rules(name, true, vec![])
}

#[tokio::test]
async fn a_run_puts_items_it_cannot_write_in_the_dead_letter_file_and_reports_them() {
    let primary_rules =
        {
            let mut r = describe_rules("orders");
            r.push(mock!(Client::scan).then_output(|| {
                ScanOutput::builder().items(item("ok")).items(item("stuck")).build()
            }));
            r
        };
    let primary = client(&primary_rules.iter().collect::<Vec<_>>());
    let escrow_rules = {
        let mut r = escrow_description(vec![OWN_TAG], true);
        r.push(mock!(Client::batch_get_item).then_output(|| BatchGetItemOutput::builder().build()));
        r.push(mock!(Client::batch_write_item).then_output(|| unprocessed(vec![item("stuck")])));
        // A run that wrote items records when (escrow-sync:last-run-at).
        r.push(
            mock!(Client::tag_resource)
                .match_requests(|r| r.tags().iter().any(|t| t.key() == "escrow-sync:last-run-at"))
                .then_output(|| {
                    aws_sdk_dynamodb::operation::tag_resource::TagResourceOutput::builder().build()
                }),
        );
        r
    };
    let escrow =
        EscrowTable::from_client(client(&escrow_rules.iter().collect::<Vec<_>>()), "escrow-orders")
            .with_retry(fast());
    let info = TableInfo::describe(&primary, "orders").await.unwrap();
    let dir = std::env::temp_dir().join(format!("escrow-sync-dead-{}", std::process::id()));
    let job =
        TableJob::new("orders", primary, info, "111111111111", escrow, "2026-11-28T00:00:00Z")
            .unwrap()
            .with_scan_options(ScanOptions::new().with_segments(1).with_retry(fast()))
            .with_dead_letter_dir(&dir);
    let report = job.execute(Mode::Run).await.unwrap();
    assert_eq!((report.copied, report.failed), (1, 1), "{report:?}");
    assert_eq!(escrow_rules.last().unwrap().num_calls(), 1, "the run was recorded");
    assert_eq!(report.failures[0].key, "stuck");
    let path = job.dead_letter_path();
    assert!(
        report.warnings.iter().any(|w| w.contains(&path.display().to_string())),
        "{:?}",
        report.warnings
    );
    let text = std::fs::read_to_string(&path).expect("dead-letter file");
    let lines: Vec<Record> = text.lines().map(|l| from_line(l).unwrap()).collect();
    assert_eq!(lines, vec![item("stuck")], "the item, whole, in DynamoDB JSON");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_error_every_item_meets_alike_fails_the_write_instead_of_dead_lettering_the_table() {
    let batch = mock!(Client::batch_write_item)
        .sequence()
        .http_status(400, Some(KMS_DISABLED.into()))
        .build();
    let single = mock!(Client::put_item)
        .sequence()
        .http_status(400, Some(KMS_DISABLED.into()))
        .times(3)
        .build();
    let err = sink(&[&batch, &single])
        .write((0..10).map(|i| item(&format!("k{i}"))).collect(), &keys())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("KMS key"), "{err}");
    assert_eq!(single.num_calls(), 3, "stopped after three alike failures");
}

const KMS_DISABLED: &str = r#"{"__type":"com.amazon.coral.validation#ValidationException","message":"The KMS key is disabled"}"#;

/// The provenance tag escrow-sync puts on the escrow table of `orders`.
const OWN_TAG: (&str, &str) =
    ("escrow-sync:source-table-arn", "arn:aws:dynamodb:us-east-1:111111111111:table/orders");

fn escrow_description(tags: Vec<(&'static str, &'static str)>, pitr: bool) -> Vec<Rule> {
    common::table_rules("escrow-orders", pitr, tags)
}

async fn source_info() -> TableInfo {
    let rules = describe_rules("orders");
    TableInfo::describe(&client(&rules.iter().collect::<Vec<_>>()), "orders").await.unwrap()
}

#[tokio::test]
async fn an_escrow_table_of_another_source_is_refused() {
    let rules = escrow_description(
        vec![(
            "escrow-sync:source-table-arn",
            "arn:aws:dynamodb:us-east-1:111111111111:table/other",
        )],
        true,
    );
    let sink = EscrowTable::from_client(client(&rules.iter().collect::<Vec<_>>()), "escrow-orders");
    let err = sink.check(&source_info().await).await.unwrap_err();
    assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
    assert!(
        err.to_string().contains("table/other") && err.to_string().contains("dest_table"),
        "{err}"
    );
}

#[tokio::test]
async fn an_escrow_table_escrow_sync_did_not_create_is_not_written_into() {
    let rules = escrow_description(vec![("team", "payments")], true);
    let sink = EscrowTable::from_client(client(&rules.iter().collect::<Vec<_>>()), "escrow-orders");
    let err = sink.check(&source_info().await).await.unwrap_err();
    assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("adopt the table by tagging it"), "{err}");
}

#[tokio::test]
async fn an_escrow_table_whose_ttl_cannot_be_read_is_not_taken_for_safe() {
    let mut rules = escrow_description(vec![OWN_TAG], true);
    rules[1] = mock!(Client::describe_time_to_live).sequence().http_status(
        400,
        Some(r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not authorized to perform dynamodb:DescribeTimeToLive"}"#.into()),
    ).build();
    let sink = EscrowTable::from_client(client(&rules.iter().collect::<Vec<_>>()), "escrow-orders");
    let err = sink.check(&source_info().await).await.unwrap_err();
    assert_eq!(err.kind(), escrow_sync_core::ErrorKind::AccessDenied, "{err}");
    assert!(err.to_string().contains("DescribeTimeToLive"), "{err}");
}

#[tokio::test]
async fn point_in_time_recovery_is_retried_while_backups_are_still_being_enabled() {
    let mut rules = escrow_description(vec![OWN_TAG], false);
    rules.push(
        mock!(Client::update_continuous_backups)
            .sequence()
            .http_status(
                400,
                Some(r#"{"__type":"com.amazonaws.dynamodb.v20120810#ContinuousBackupsUnavailableException","message":"Backups are being enabled for the table"}"#.into()),
            )
            .times(2)
            .output(|| aws_sdk_dynamodb::operation::update_continuous_backups::UpdateContinuousBackupsOutput::builder().build())
            .build(),
    );
    let sink = EscrowTable::from_client(client(&rules.iter().collect::<Vec<_>>()), "escrow-orders")
        .with_wait_timeout(Duration::from_secs(30))
        .with_retry(fast());
    let ensured = sink.ensure(&source_info().await, "111111111111", "now").await.unwrap();
    assert_eq!(ensured.fixed, vec!["point-in-time recovery".to_string()]);
    assert_eq!(rules[4].num_calls(), 3);
}
