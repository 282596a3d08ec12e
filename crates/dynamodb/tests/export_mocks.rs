//! Export generations against aws-smithy-mocks (DynamoDB) and the in-memory
//! bucket of escrow-sync-testkit (S3): a native export asked for with the
//! escrow as bucket owner, the escrow key and an idempotency token, polled
//! until it completes, then schema.json and manifest.json written beside
//! its files; a failed export reported with DynamoDB's reason; a source
//! without point-in-time recovery refused; and a scan export whose file
//! writes meet transient faults still writing every item once.
//!
//! The emulator runs native exports too (tests/dynamodb_exports.rs), but
//! ignores the SSE settings and the client token; these pin the request.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::describe_export::DescribeExportOutput;
use aws_sdk_dynamodb::operation::export_table_to_point_in_time::ExportTableToPointInTimeOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::types::{AttributeValue, ExportDescription, ExportStatus, S3SseAlgorithm};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

mod common;
use serde_json::Value;

use escrow_sync_core::{ErrorKind, Mode, RetryPolicy};
use escrow_sync_dynamodb::export::read_data_file;
use escrow_sync_dynamodb::json::{Record, to_line};
use escrow_sync_dynamodb::{ExportJob, ExportTarget, ScanOptions, TableInfo};
use escrow_sync_testkit::{FaultLayer, MemBucket, MemSink, MemSource};

const ARN: &str = "arn:aws:dynamodb:us-east-1:111111111111:table/orders";
const EXPORT: &str = "arn:aws:dynamodb:us-east-1:111111111111:table/orders/export/01";

fn item(pk: &str) -> Record {
    HashMap::from([("pk".to_string(), AttributeValue::S(pk.to_string()))])
}

fn source_rules(pitr: bool) -> Vec<Rule> {
    common::table_rules("orders", pitr, vec![])
}

fn client(rules: &[Rule], more: &[&Rule]) -> Client {
    let all: Vec<&Rule> = rules.iter().chain(more.iter().copied()).collect();
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &all)
}

fn gz(lines: &[Record]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for l in lines {
        writeln!(e, "{}", to_line(l)).unwrap();
    }
    e.finish().unwrap()
}

async fn job(client: Client, bucket: &MemBucket) -> ExportJob {
    let info = TableInfo::describe(&client, "orders").await.unwrap();
    ExportJob::new(
        "orders",
        client,
        info,
        "111111111111",
        ExportTarget {
            files: Arc::new(MemSink::new(bucket.clone())),
            reader: Arc::new(MemSource::new(bucket.clone())),
            location: "mem://escrow/".into(),
            dest_prefix: "dynamodb/".into(),
        },
        "2026-11-28T00:00:00Z",
    )
    .unwrap()
}

fn export(status: ExportStatus) -> DescribeExportOutput {
    DescribeExportOutput::builder()
        .export_description(
            ExportDescription::builder()
                .export_arn(EXPORT)
                .export_status(status)
                .item_count(2)
                .failure_code("S3AccessDenied")
                .failure_message("no write access to the bucket")
                .build(),
        )
        .build()
}

#[tokio::test]
async fn a_native_export_is_asked_for_the_escrow_bucket_polled_and_completed() {
    let started = mock!(Client::export_table_to_point_in_time)
        .match_requests(|r| {
            r.table_arn() == Some(ARN)
                && r.s3_bucket() == Some("escrow")
                && r.s3_bucket_owner() == Some("222222222222")
                && r.s3_prefix() == Some("dynamodb/.staging/orders/20261128T000000000Z")
                && r.client_token() == Some("escrow-sync-20261128T000000000Z")
                && r.s3_sse_algorithm() == Some(&S3SseAlgorithm::Kms)
                && r.s3_sse_kms_key_id() == Some("arn:aws:kms:us-east-1:222222222222:key/k")
        })
        .then_output(|| {
            ExportTableToPointInTimeOutput::builder()
                .export_description(
                    ExportDescription::builder()
                        .export_arn(EXPORT)
                        .export_status(ExportStatus::InProgress)
                        .build(),
                )
                .build()
        });
    let polled = mock!(Client::describe_export)
        .match_requests(|r| r.export_arn() == Some(EXPORT))
        .sequence()
        .output(|| export(ExportStatus::InProgress))
        .times(2)
        .output(|| export(ExportStatus::Completed))
        .build();
    let bucket = MemBucket::new("escrow");
    // What DynamoDB writes, into the staging prefix.
    let dir = "dynamodb/orders/20261128T000000000Z/";
    let staged = "dynamodb/.staging/orders/20261128T000000000Z/";
    bucket.put(format!("{staged}AWSDynamoDB/01/data/a.json.gz"), gz(&[item("a"), item("b")]));
    bucket.put(format!("{staged}AWSDynamoDB/01/manifest-summary.json"), "{}");
    let job = job(client(&source_rules(true), &[&started, &polled]), &bucket)
        .await
        .with_native_export(
            "escrow",
            "222222222222",
            Some("arn:aws:kms:us-east-1:222222222222:key/k".into()),
        )
        .with_export_timeout(Duration::from_secs(5), Duration::from_millis(1));
    let report = job.execute(Mode::Run).await.unwrap();
    assert_eq!((report.copied, report.failed), (2, 0), "{report:?}");
    assert_eq!((started.num_calls(), polled.num_calls()), (1, 3));
    let manifest: Value =
        serde_json::from_slice(&bucket.get(&format!("{dir}manifest.json")).unwrap().data).unwrap();
    assert_eq!(manifest["export_arn"], EXPORT);
    assert_eq!(manifest["item_count"], 2);
    assert_eq!(manifest["files"][0]["key"], "native/AWSDynamoDB/01/data/a.json.gz");
    assert_eq!(manifest["files"].as_array().unwrap().len(), 1, "only data files are listed");
    assert!(bucket.get(&format!("{dir}schema.json")).is_some());
    // Copied into the generation by escrow-sync, byte for byte.
    assert_eq!(
        bucket.get(&format!("{dir}native/AWSDynamoDB/01/data/a.json.gz")).unwrap().data,
        bucket.get(&format!("{staged}AWSDynamoDB/01/data/a.json.gz")).unwrap().data
    );
}

/// A completed export whose DynamoDB manifest (manifest-summary.json,
/// manifest-files.json) lists one data file with `md5` and `items`.
fn with_manifest(bucket: &MemBucket, md5: &str, items: u64) -> Rule {
    let staged = "dynamodb/.staging/orders/20261128T000000000Z/";
    let summary = format!("{staged}AWSDynamoDB/01/manifest-summary.json");
    let files = format!("{staged}AWSDynamoDB/01/manifest-files.json");
    bucket.put(&summary, serde_json::json!({"manifestFilesS3Key": files}).to_string());
    bucket.put(
        &files,
        serde_json::json!({"itemCount": items, "md5Checksum": md5,
            "dataFileS3Key": format!("{staged}AWSDynamoDB/01/data/a.json.gz")})
        .to_string(),
    );
    mock!(Client::describe_export).then_output(move || {
        DescribeExportOutput::builder()
            .export_description(
                ExportDescription::builder()
                    .export_arn(EXPORT)
                    .export_status(ExportStatus::Completed)
                    .item_count(2)
                    .export_manifest(&summary)
                    .build(),
            )
            .build()
    })
}

fn started() -> Rule {
    mock!(Client::export_table_to_point_in_time).then_output(|| {
        ExportTableToPointInTimeOutput::builder()
            .export_description(ExportDescription::builder().export_arn(EXPORT).build())
            .build()
    })
}

#[tokio::test]
async fn only_staged_files_that_match_dynamodb_manifest_are_copied_into_the_generation() {
    use md5::Digest;
    let bucket = MemBucket::new("escrow");
    let staged = "dynamodb/.staging/orders/20261128T000000000Z/AWSDynamoDB/01/data/";
    let data = gz(&[item("a"), item("b")]);
    let md5 = aws_smithy_types::base64::encode(md5::Md5::digest(&data).as_slice());
    bucket.put(format!("{staged}a.json.gz"), data);
    // A file planted beside DynamoDB's: not in its manifest, not copied.
    bucket.put(format!("{staged}planted.json.gz"), gz(&[item("x")]));
    let (started, polled) = (started(), with_manifest(&bucket, &md5, 2));
    let job = job(client(&source_rules(true), &[&started, &polled]), &bucket)
        .await
        .with_native_export("escrow", "222222222222", None);
    let report = job.execute(Mode::Run).await.unwrap();
    assert_eq!(report.copied, 2, "{report:?}");
    let dir = "dynamodb/orders/20261128T000000000Z/";
    let keys = bucket.keys();
    assert!(keys.contains(&format!("{dir}native/AWSDynamoDB/01/data/a.json.gz")), "{keys:?}");
    assert!(keys.iter().all(|k| !(k.starts_with(dir) && k.contains("planted"))), "{keys:?}");
}

#[tokio::test]
async fn a_staged_file_altered_after_dynamodb_wrote_it_is_refused() {
    let bucket = MemBucket::new("escrow");
    let staged = "dynamodb/.staging/orders/20261128T000000000Z/AWSDynamoDB/01/data/";
    // The primary replaced DynamoDB's file with its own two items.
    bucket.put(format!("{staged}a.json.gz"), gz(&[item("evil"), item("evil2")]));
    let (started, polled) = (started(), with_manifest(&bucket, "1B2M2Y8AsgTpgAmY7PhCfg==", 2));
    let job = job(client(&source_rules(true), &[&started, &polled]), &bucket)
        .await
        .with_native_export("escrow", "222222222222", None);
    let err = job.execute(Mode::Run).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    let text = err.chain();
    assert!(text.contains("MD5") && text.contains("a.json.gz"), "{text}");
    assert!(
        bucket.keys().iter().all(|k| !k.starts_with("dynamodb/orders/")),
        "nothing written into the generation: {:?}",
        bucket.keys()
    );
}

#[tokio::test]
async fn a_failed_native_export_is_reported_with_its_reason() {
    let started = mock!(Client::export_table_to_point_in_time).then_output(|| {
        ExportTableToPointInTimeOutput::builder()
            .export_description(ExportDescription::builder().export_arn(EXPORT).build())
            .build()
    });
    let polled = mock!(Client::describe_export).then_output(|| export(ExportStatus::Failed));
    let bucket = MemBucket::new("escrow");
    let job = job(client(&source_rules(true), &[&started, &polled]), &bucket)
        .await
        .with_native_export("escrow", "222222222222", None);
    let err = job.execute(Mode::Run).await.unwrap_err().to_string();
    assert!(err.contains("FAILED") && err.contains("S3AccessDenied"), "{err}");
    assert!(bucket.keys().iter().all(|k| !k.ends_with("manifest.json")), "no manifest");
}

#[tokio::test]
async fn a_native_export_of_a_source_without_pitr_is_refused() {
    let started = mock!(Client::export_table_to_point_in_time)
        .then_output(|| ExportTableToPointInTimeOutput::builder().build());
    let bucket = MemBucket::new("escrow");
    let job = job(client(&source_rules(false), &[&started]), &bucket).await.with_native_export(
        "escrow",
        "222222222222",
        None,
    );
    let err = job.execute(Mode::Run).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("point-in-time recovery"), "{err}");
    assert_eq!(started.num_calls(), 0);
}

#[tokio::test]
async fn file_writes_that_meet_transient_faults_are_retried_and_nothing_is_written_twice() {
    let scan = mock!(Client::scan).then_output(|| {
        ScanOutput::builder()
            .set_items(Some((0..40).map(|i| item(&format!("k{i:02}"))).collect()))
            .build()
    });
    let bucket = MemBucket::new("escrow");
    let info_client = client(&source_rules(true), &[&scan]);
    let info = TableInfo::describe(&info_client, "orders").await.unwrap();
    let sink = Arc::new(
        FaultLayer::new().with_transient_rate(0.4).with_seed(7).wrap(MemSink::new(bucket.clone())),
    );
    let job = ExportJob::new(
        "orders",
        info_client,
        info,
        "111111111111",
        ExportTarget {
            files: sink.clone(),
            reader: Arc::new(MemSource::new(bucket.clone())),
            location: "mem://escrow/".into(),
            dest_prefix: String::new(),
        },
        "2026-11-28T00:00:00Z",
    )
    .unwrap()
    .with_scan_options(ScanOptions::new().with_segments(2))
    .with_retry(RetryPolicy {
        max_attempts: 20,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    });
    let report = job.execute(Mode::Run).await.unwrap();
    // Both segments get the same mocked page: 80 items in two files.
    assert_eq!(report.copied, 80, "{report:?}");
    let manifest: Value = serde_json::from_slice(
        &bucket.get("orders/20261128T000000000Z/manifest.json").expect("manifest").data,
    )
    .unwrap();
    assert_eq!(manifest["item_count"], 80);
    let mut total = 0;
    for f in manifest["files"].as_array().unwrap() {
        let key = format!("orders/20261128T000000000Z/{}", f["key"].as_str().unwrap());
        total += read_data_file(&bucket.get(&key).unwrap().data, &key).unwrap().len();
    }
    assert_eq!(total, 80);
    assert!(sink.injected() > 0, "faults were injected");
}

#[tokio::test]
async fn through_job_the_context_gives_the_retry_policy_and_the_item_log() {
    use escrow_sync_core::{ItemOutcome, ItemRecord, Job, JobContext};
    let scan = mock!(Client::scan).then_output(|| {
        ScanOutput::builder()
            .set_items(Some((0..40).map(|i| item(&format!("k{i:02}"))).collect()))
            .build()
    });
    let bucket = MemBucket::new("escrow");
    let info_client = client(&source_rules(true), &[&scan]);
    let info = TableInfo::describe(&info_client, "orders").await.unwrap();
    let sink = Arc::new(
        FaultLayer::new().with_transient_rate(0.4).with_seed(7).wrap(MemSink::new(bucket.clone())),
    );
    let target = ExportTarget {
        files: sink.clone(),
        reader: Arc::new(MemSource::new(bucket.clone())),
        location: "mem://escrow/".into(),
        dest_prefix: String::new(),
    };
    // One attempt by the builder: the context's policy replaces it.
    let single = RetryPolicy { max_attempts: 1, ..RetryPolicy::default() };
    let job =
        ExportJob::new("orders", info_client, info, "111111111111", target, "2026-11-28T00:00:00Z")
            .unwrap()
            .with_scan_options(ScanOptions::new().with_segments(2))
            .with_retry(single);
    let records: Arc<std::sync::Mutex<Vec<ItemRecord>>> = Arc::default();
    let to = records.clone();
    let ctx = JobContext::new()
        .with_retry(RetryPolicy {
            max_attempts: 20,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        })
        .with_item_log(Arc::new(move |r| to.lock().unwrap().push(r)));
    let job: Box<dyn Job> = Box::new(job);
    assert_eq!(job.describe(), "dynamodb://orders -> mem://escrow/orders/");
    let report = job.execute(Mode::Run, &ctx).await.unwrap();
    assert_eq!((report.copied, report.failed), (80, 0), "{report:?}");
    assert!(sink.injected() > 0, "faults were injected, and retried");
    let records = records.lock().unwrap();
    assert_eq!(records.len(), 1, "the generation, by its manifest: {records:?}");
    assert_eq!(records[0].item.key, "orders/20261128T000000000Z/manifest.json");
    assert_eq!(records[0].outcome, ItemOutcome::Copied);
}
