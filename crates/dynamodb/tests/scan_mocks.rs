//! The segmented scan against aws-smithy-mocks: paging per segment,
//! capacity accounting, throttling then success, and resuming from
//! checkpoints.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use futures::TryStreamExt;

use escrow_sync_core::RetryPolicy;
use escrow_sync_dynamodb::scan::{Checkpoint, ScanOptions, ScanPage, TableScanner};

fn key(pk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_string(), AttributeValue::S(pk.to_string()))])
}

fn page(items: &[&str], last: Option<&str>, units: f64) -> ScanOutput {
    ScanOutput::builder()
        .set_items(Some(items.iter().map(|k| key(k)).collect()))
        .set_last_evaluated_key(last.map(key))
        .consumed_capacity(ConsumedCapacity::builder().capacity_units(units).build())
        .build()
}

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules)
}

fn fast() -> ScanOptions {
    ScanOptions::new().with_segments(2).with_retry(RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    })
}

fn first_page(segment: i32, items: &'static [&'static str], last: &'static str) -> Rule {
    mock!(Client::scan)
        .match_requests(move |r| {
            r.segment() == Some(segment)
                && r.total_segments() == Some(2)
                && r.exclusive_start_key().is_none()
                && r.return_consumed_capacity().is_some()
        })
        .then_output(move || page(items, Some(last), 2.5))
}

fn next_page(segment: i32, after: &'static str, items: &'static [&'static str]) -> Rule {
    mock!(Client::scan)
        .match_requests(move |r| {
            r.segment() == Some(segment)
                && r.exclusive_start_key().and_then(|k| k.get("pk"))
                    == Some(&AttributeValue::S(after.into()))
        })
        .then_output(move || page(items, None, 1.5))
}

#[tokio::test]
async fn every_segment_is_paged_to_its_end_and_its_capacity_charged() {
    let rules = [
        first_page(0, &["a", "b"], "b"),
        next_page(0, "b", &["c"]),
        first_page(1, &["x"], "x"),
        next_page(1, "x", &["y", "z"]),
    ];
    let scanner =
        TableScanner::from_client(client(&rules.iter().collect::<Vec<_>>()), "orders", 1000.0)
            .with_options(fast());
    let pages: Vec<ScanPage> = scanner.pages(&[]).try_collect().await.unwrap();
    let mut keys: Vec<String> = pages
        .iter()
        .flat_map(|p| p.items.iter())
        .map(|i| match &i["pk"] {
            AttributeValue::S(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c", "x", "y", "z"]);
    let done: Vec<_> =
        pages.iter().filter(|p| p.checkpoint.done).map(|p| p.checkpoint.segment).collect();
    assert_eq!(done.len(), 2, "each segment ends once");
    assert_eq!(scanner.budget().consumed(), 8.0);
}

#[tokio::test]
async fn throttling_halves_the_read_rate_and_the_page_is_retried() {
    let throttled = mock!(Client::scan)
        .match_requests(|r| r.segment() == Some(0))
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"Rate of requests exceeds the allowed throughput."}"#.into()),
        )
        .output(|| page(&["a"], None, 1.0))
        .build();
    let other = mock!(Client::scan)
        .match_requests(|r| r.segment() == Some(1))
        .then_output(|| page(&[], None, 0.5));
    let scanner = TableScanner::from_client(client(&[&throttled, &other]), "orders", 100.0)
        .with_options(fast());
    let pages: Vec<ScanPage> = scanner.pages(&[]).try_collect().await.unwrap();
    assert_eq!(pages.iter().map(|p| p.items.len()).sum::<usize>(), 1);
    assert_eq!(throttled.num_calls(), 2, "retried once");
    assert_eq!(scanner.budget().throttles(), 1);
    assert!(
        scanner.budget().rate() < 100.0,
        "halved, and growing back: {}",
        scanner.budget().rate()
    );
}

#[tokio::test]
async fn a_scan_resumes_from_its_checkpoints() {
    let resumed = next_page(1, "x", &["y"]);
    let from_start = mock!(Client::scan)
        .match_requests(|r| r.exclusive_start_key().is_none())
        .then_output(|| page(&["nope"], None, 1.0));
    let scanner = TableScanner::from_client(client(&[&resumed, &from_start]), "orders", 1000.0)
        .with_options(fast());
    let resume = [
        Checkpoint { segment: 0, last_key: Some(key("c")), done: true },
        Checkpoint { segment: 1, last_key: Some(key("x")), done: false },
    ];
    let pages: Vec<ScanPage> = scanner.pages(&resume).try_collect().await.unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].items, vec![key("y")]);
    assert!(pages[0].checkpoint.done);
    assert_eq!((resumed.num_calls(), from_start.num_calls()), (1, 0), "no segment restarted");
}
