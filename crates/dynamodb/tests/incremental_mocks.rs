//! Native incremental exports (`mode = "native-incremental"`) against
//! aws-smithy-mocks (DynamoDB) and the in-memory bucket of
//! escrow-sync-testkit (S3). The emulator has no incremental export, so
//! these pin the request shapes and the watermark logic: a first run asks
//! for a full export; a run within DynamoDB's window asks for
//! `INCREMENTAL_EXPORT` from the watermark of the newest generation a run
//! manifest records to the run's time; under 15 minutes nothing is asked;
//! over 24 hours a full export again; the watermark moves only once a
//! verified generation records it, never from the staging prefix.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput;
use aws_sdk_dynamodb::operation::describe_export::DescribeExportOutput;
use aws_sdk_dynamodb::operation::export_table_to_point_in_time::{
    ExportTableToPointInTimeError, ExportTableToPointInTimeOutput,
};
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::{
    AttributeValue, ExportDescription, ExportStatus, ExportType, ExportViewType,
    IncrementalExportSpecification,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use md5::Digest as _;
use serde_json::{Value, json};

mod common;

use escrow_sync_core::{ErrorKind, Mode};
use escrow_sync_dynamodb::incremental::ViewType;
use escrow_sync_dynamodb::{CheckpointStore, ExportJob, ExportTarget, TableInfo};
use escrow_sync_testkit::{MemBucket, MemSink, MemSource};

const ARN: &str = "arn:aws:dynamodb:us-east-1:111111111111:table/orders";
const EXPORT: &str = "arn:aws:dynamodb:us-east-1:111111111111:table/orders/export/02";
const STARTED: &str = "2026-11-28T12:00:00Z";
const GENERATION: &str = "20261128T120000000Z";
const BASE: &str = "20261128T110000000Z";

/// Seconds since 1970 of `t` (RFC 3339).
fn secs(t: &str) -> i64 {
    escrow_sync_core::epoch_seconds(t).unwrap()
}

fn client(more: &[&Rule]) -> Client {
    let rules = common::table_rules("orders", true, vec![]);
    let all: Vec<&Rule> = rules.iter().chain(more.iter().copied()).collect();
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &all)
}

async fn job(client: Client, bucket: &MemBucket, recorded: BTreeMap<String, String>) -> ExportJob {
    job_at(client, bucket, recorded, STARTED).await
}

async fn job_at(
    client: Client,
    bucket: &MemBucket,
    recorded: BTreeMap<String, String>,
    started: &str,
) -> ExportJob {
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
        started,
    )
    .unwrap()
    .with_native_export("escrow", "222222222222", None)
    .with_incremental(ViewType::NewAndOldImages)
    .with_export_timeout(Duration::from_secs(5), Duration::from_millis(1))
    .with_recorded_generations(Some(recorded))
}

/// A generation escrow-sync completed, whose manifest records `watermark`;
/// returns the SHA-256 of its manifest, as a run manifest records it.
fn generation(bucket: &MemBucket, id: &str, watermark: &str) -> String {
    let manifest = json!({
        "format": escrow_sync_dynamodb::export::FORMAT,
        "generation": id, "item_count": 0, "files": [],
        "mode": "native-incremental", "kind": "full", "watermark": watermark,
    });
    let text = serde_json::to_vec_pretty(&manifest).unwrap();
    let sha = hex(&sha2::Sha256::digest(&text));
    bucket.put(format!("dynamodb/orders/{id}/manifest.json"), text);
    sha
}

/// A generation escrow-sync completed whose manifest has the fields
/// `fields` (kind, base_generation, export_from_time, watermark); returns
/// the SHA-256 of its manifest.
fn generation_with(bucket: &MemBucket, id: &str, fields: Value) -> String {
    let mut manifest = json!({
        "format": escrow_sync_dynamodb::export::FORMAT,
        "generation": id, "item_count": 0, "files": [], "mode": "native-incremental",
    });
    for (k, v) in fields.as_object().unwrap() {
        manifest[k] = v.clone();
    }
    let text = serde_json::to_vec_pretty(&manifest).unwrap();
    let sha = hex(&sha2::Sha256::digest(&text));
    bucket.put(format!("dynamodb/orders/{id}/manifest.json"), text);
    sha
}

/// Rows of the fake checkpoint table, by (job, part).
type Rows = Arc<Mutex<BTreeMap<(String, String), HashMap<String, AttributeValue>>>>;

fn row_key(r: &HashMap<String, AttributeValue>) -> (String, String) {
    (r["job"].as_s().unwrap().clone(), r["part"].as_s().unwrap().clone())
}

/// A checkpoint store over the fake checkpoint table `rows`.
fn checkpoint_store(rows: &Rows) -> CheckpointStore {
    let r = rows.clone();
    let get = mock!(Client::get_item).then_compute_output(move |g| {
        let row = r.lock().unwrap().get(&row_key(g.key().unwrap())).cloned();
        GetItemOutput::builder().set_item(row).build()
    });
    let r = rows.clone();
    let put = mock!(Client::put_item).then_compute_output(move |p| {
        let item = p.item().unwrap().clone();
        r.lock().unwrap().insert(row_key(&item), item);
        PutItemOutput::builder().build()
    });
    let r = rows.clone();
    let query = mock!(Client::query).then_compute_output(move |q| {
        let job = q.expression_attribute_values().unwrap()[":j"].as_s().unwrap().clone();
        let items: Vec<_> =
            r.lock().unwrap().iter().filter(|(k, _)| k.0 == job).map(|(_, v)| v.clone()).collect();
        QueryOutput::builder().set_items(Some(items)).build()
    });
    let r = rows.clone();
    let delete = mock!(Client::delete_item).then_compute_output(move |d| {
        r.lock().unwrap().remove(&row_key(d.key().unwrap()));
        DeleteItemOutput::builder().build()
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &[&get, &put, &query, &delete]);
    CheckpointStore::from_client(client, "cp")
}

fn has_checkpoint(rows: &Rows) -> bool {
    rows.lock().unwrap().keys().any(|(job, _)| job == "orders")
}

/// ExportTableToPointInTime refused with the error `code`.
fn refused(code: &'static str) -> Rule {
    mock!(Client::export_table_to_point_in_time).then_error(move || {
        ExportTableToPointInTimeError::generic(
            aws_sdk_dynamodb::error::ErrorMetadata::builder().code(code).message("no").build(),
        )
    })
}

/// The incremental window `[from, to)` asked for, answered by `rule`.
fn asks_window(
    from: &'static str,
    to: &'static str,
) -> impl Fn(
    &aws_sdk_dynamodb::operation::export_table_to_point_in_time::ExportTableToPointInTimeInput,
) -> bool {
    move |r| {
        let spec = r.incremental_export_specification();
        r.export_type() == Some(&ExportType::IncrementalExport)
            && spec.and_then(|s| s.export_from_time()) == Some(&DateTime::from_secs(secs(from)))
            && spec.and_then(|s| s.export_to_time()) == Some(&DateTime::from_secs(secs(to)))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn gz(lines: &[&str]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for l in lines {
        writeln!(e, "{l}").unwrap();
    }
    e.finish().unwrap()
}

/// What DynamoDB writes for an export into the staging prefix: one data
/// file of `lines` listed (MD5, item count) in manifest-files.json, and
/// manifest-summary.json naming it; returns the summary's key.
fn stage(bucket: &MemBucket, lines: &[&str]) -> String {
    stage_raw(bucket, gz(lines), lines.len())
}

/// [`stage`] of the data file `data` said to hold `items` items.
fn stage_raw(bucket: &MemBucket, data: Vec<u8>, items: usize) -> String {
    let staged = format!("dynamodb/.staging/orders/{GENERATION}/AWSDynamoDB/02/");
    let md5 = aws_smithy_types::base64::encode(md5::Md5::digest(&data).as_slice());
    bucket.put(format!("{staged}data/a.json.gz"), data);
    let files = format!("{staged}manifest-files.json");
    bucket.put(
        &files,
        json!({"itemCount": items, "md5Checksum": md5,
               "dataFileS3Key": format!("{staged}data/a.json.gz")})
        .to_string(),
    );
    let summary = format!("{staged}manifest-summary.json");
    bucket.put(
        &summary,
        json!({"manifestFilesS3Key": files, "exportType": "INCREMENTAL_EXPORT"}).to_string(),
    );
    summary
}

fn started_rule() -> Rule {
    mock!(Client::export_table_to_point_in_time).then_output(|| {
        ExportTableToPointInTimeOutput::builder()
            .export_description(ExportDescription::builder().export_arn(EXPORT).build())
            .build()
    })
}

/// DescribeExport: completed, `items` items, DynamoDB's manifest at
/// `summary`, the window `[from, to)` (or the export time `at`) reported.
fn completed(summary: String, items: i64, window: Option<(&str, &str)>, at: Option<&str>) -> Rule {
    let window = window.map(|(f, t)| (secs(f), secs(t)));
    let at = at.map(secs);
    mock!(Client::describe_export).then_output(move || {
        let mut d = ExportDescription::builder()
            .export_arn(EXPORT)
            .export_status(ExportStatus::Completed)
            .item_count(items)
            .export_manifest(&summary);
        if let Some((f, t)) = window {
            d = d.export_type(ExportType::IncrementalExport).incremental_export_specification(
                IncrementalExportSpecification::builder()
                    .export_from_time(DateTime::from_secs(f))
                    .export_to_time(DateTime::from_secs(t))
                    .export_view_type(ExportViewType::NewAndOldImages)
                    .build(),
            );
        }
        if let Some(at) = at {
            d = d.export_type(ExportType::FullExport).export_time(DateTime::from_secs(at));
        }
        DescribeExportOutput::builder().export_description(d.build()).build()
    })
}

fn manifest(bucket: &MemBucket, id: &str) -> Option<Value> {
    let data = bucket.get(&format!("dynamodb/orders/{id}/manifest.json"))?.data;
    Some(serde_json::from_slice(&data).unwrap())
}

const PUT: &str = r#"{"Metadata":{"WriteTimestampMicros":{"N":"1795865000000000"}},"Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"a"},"n":{"N":"2"}},"OldImage":{"pk":{"S":"a"},"n":{"N":"1"}}}"#;
const DELETE: &str = r#"{"Metadata":{"WriteTimestampMicros":{"N":"1795866000000000"}},"Keys":{"pk":{"S":"b"}},"OldImage":{"pk":{"S":"b"}}}"#;

#[tokio::test]
async fn a_first_run_asks_for_a_full_export_at_the_run_time_and_records_its_watermark() {
    let asked = mock!(Client::export_table_to_point_in_time)
        .match_requests(|r| {
            r.table_arn() == Some(ARN)
                && r.export_type() == Some(&ExportType::FullExport)
                && r.export_time() == Some(&DateTime::from_secs(secs(STARTED)))
                && r.incremental_export_specification().is_none()
                && r.s3_prefix() == Some(&*format!("dynamodb/.staging/orders/{GENERATION}"))
        })
        .then_output(|| {
            ExportTableToPointInTimeOutput::builder()
                .export_description(ExportDescription::builder().export_arn(EXPORT).build())
                .build()
        });
    let bucket = MemBucket::new("escrow");
    let item = r#"{"Item":{"pk":{"S":"a"}}}"#;
    let summary = stage(&bucket, &[item]);
    let polled = completed(summary, 1, None, Some(STARTED));
    let job = job(client(&[&asked, &polled]), &bucket, BTreeMap::new()).await;
    let report = job.execute(Mode::Run).await.unwrap();
    assert_eq!(asked.num_calls(), 1, "{report:?}");
    assert!(report.notes.iter().any(|n| n.contains("first run")), "{:?}", report.notes);
    let m = manifest(&bucket, GENERATION).expect("the generation is complete");
    assert_eq!((m["kind"].as_str(), m["watermark"].as_str()), (Some("full"), Some(STARTED)));
    assert_eq!(m["item_count"], 1);
}

#[tokio::test]
async fn within_the_window_only_the_changes_since_the_watermark_are_asked_for_and_stored() {
    let from = "2026-11-28T11:00:00Z";
    let bucket = MemBucket::new("escrow");
    let sha = generation(&bucket, BASE, from);
    let asked = mock!(Client::export_table_to_point_in_time)
        .match_requests(move |r| {
            let spec = r.incremental_export_specification();
            r.export_type() == Some(&ExportType::IncrementalExport)
                && r.export_time().is_none()
                && spec.and_then(|s| s.export_from_time()) == Some(&DateTime::from_secs(secs(from)))
                && spec.and_then(|s| s.export_to_time())
                    == Some(&DateTime::from_secs(secs(STARTED)))
                && spec.and_then(|s| s.export_view_type()) == Some(&ExportViewType::NewAndOldImages)
                && r.s3_bucket_owner() == Some("222222222222")
        })
        .then_output(|| {
            ExportTableToPointInTimeOutput::builder()
                .export_description(ExportDescription::builder().export_arn(EXPORT).build())
                .build()
        });
    let summary = stage(&bucket, &[PUT, DELETE]);
    let polled = completed(summary, 2, Some((from, STARTED)), None);
    let recorded = BTreeMap::from([(BASE.to_string(), sha)]);
    let job = job(client(&[&asked, &polled]), &bucket, recorded).await;
    let report = job.execute(Mode::Run).await.unwrap();
    assert_eq!((asked.num_calls(), report.copied), (1, 2), "{report:?}");
    let m = manifest(&bucket, GENERATION).expect("an incremental generation");
    assert_eq!(m["kind"], "incremental");
    assert_eq!(m["base_generation"], BASE);
    assert_eq!(m["export_from_time"], from);
    assert_eq!(m["export_to_time"], STARTED);
    assert_eq!(m["watermark"], STARTED, "the new watermark is the export's ExportToTime");
    assert_eq!(m["export_view_type"], "NEW_AND_OLD_IMAGES");
    assert_eq!(m["files"][0]["key"], "native/AWSDynamoDB/02/data/a.json.gz");
    // The composed chain is what verify and restore read.
    let chain = job.chain(GENERATION, None).await.unwrap();
    let ids: Vec<&str> = chain.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(ids, [BASE, GENERATION]);
}

#[tokio::test]
async fn less_than_15_minutes_after_the_watermark_nothing_is_asked_and_the_run_is_ok() {
    let bucket = MemBucket::new("escrow");
    let sha = generation(&bucket, BASE, "2026-11-28T11:50:00Z");
    let asked = started_rule();
    let job = job(client(&[&asked]), &bucket, BTreeMap::from([(BASE.to_string(), sha)])).await;
    let report = job.execute(Mode::Run).await.unwrap();
    assert_eq!(asked.num_calls(), 0);
    assert!(
        report.notes.iter().any(|n| n.starts_with(
            "nothing exported: last incremental export ended at 2026-11-28T11:50:00Z, less than \
             15 minutes ago"
        )),
        "{:?}",
        report.notes
    );
    assert_eq!((report.failed, report.cancelled), (0, false));
    assert!(manifest(&bucket, GENERATION).is_none());
}

#[tokio::test]
async fn a_gap_over_24_hours_falls_back_to_a_full_export() {
    let bucket = MemBucket::new("escrow");
    let sha = generation(&bucket, "20261127T110000000Z", "2026-11-27T11:00:00Z");
    let asked = mock!(Client::export_table_to_point_in_time)
        .match_requests(|r| {
            r.export_type() == Some(&ExportType::FullExport)
                && r.incremental_export_specification().is_none()
        })
        .then_output(|| {
            ExportTableToPointInTimeOutput::builder()
                .export_description(ExportDescription::builder().export_arn(EXPORT).build())
                .build()
        });
    let summary = stage(&bucket, &[r#"{"Item":{"pk":{"S":"a"}}}"#]);
    let polled = completed(summary, 1, None, Some(STARTED));
    let recorded = BTreeMap::from([("20261127T110000000Z".to_string(), sha)]);
    let job = job(client(&[&asked, &polled]), &bucket, recorded).await;
    let report = job.execute(Mode::Run).await.unwrap();
    assert_eq!(asked.num_calls(), 1);
    assert!(
        report.notes.iter().any(|n| n.contains("more than 24 hours ago")),
        "{:?}",
        report.notes
    );
    assert_eq!(manifest(&bucket, GENERATION).unwrap()["kind"], "full");
}

#[tokio::test]
async fn the_watermark_comes_only_from_a_generation_a_run_manifest_records() {
    let bucket = MemBucket::new("escrow");
    let sha = generation(&bucket, BASE, "2026-11-28T11:00:00Z");
    // Planted: a newer generation no run manifest records, whose watermark
    // would make the run skip everything since.
    generation(&bucket, "20261128T115900000Z", "2026-11-28T11:59:00Z");
    let client = client(&[]);
    let recorded = BTreeMap::from([(BASE.to_string(), sha.clone())]);
    let j = job(client.clone(), &bucket, recorded).await;
    let mut notes = Vec::new();
    let w = j.watermark(&mut notes).await.unwrap().unwrap();
    assert_eq!(w.generation, BASE);
    assert!(notes.iter().any(|n| n.contains("20261128T115900000Z")), "{notes:?}");
    // The recorded generation's manifest replaced since: refused, not trusted.
    generation(&bucket, BASE, "2026-11-28T11:55:00Z");
    let j = job(client.clone(), &bucket, BTreeMap::from([(BASE.to_string(), sha)])).await;
    let e = j.watermark(&mut Vec::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
    // No run manifests at all: no watermark, so a full export.
    let j = job(client, &bucket, BTreeMap::new()).await;
    assert!(j.watermark(&mut Vec::new()).await.unwrap().is_none());
}

#[tokio::test]
async fn an_export_reporting_another_window_or_altered_files_moves_no_watermark() {
    let from = "2026-11-28T11:00:00Z";
    for case in ["window", "md5", "key"] {
        let bucket = MemBucket::new("escrow");
        let sha = generation(&bucket, BASE, from);
        let summary = match case {
            // A change whose NewImage carries another key than its Keys.
            "key" => stage(&bucket, &[r#"{"Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"z"}}}"#]),
            _ => stage(&bucket, &[PUT, DELETE]),
        };
        if case == "md5" {
            // The primary rewrites DynamoDB's file in the staging prefix.
            bucket.put(
                format!("dynamodb/.staging/orders/{GENERATION}/AWSDynamoDB/02/data/a.json.gz"),
                gz(&[PUT, PUT]),
            );
        }
        // The window DynamoDB reports: a huge one for "window".
        let reported = if case == "window" { "2026-10-01T00:00:00Z" } else { from };
        let items = if case == "key" { 1 } else { 2 };
        let (asked, polled) =
            (started_rule(), completed(summary, items, Some((reported, STARTED)), None));
        let recorded = BTreeMap::from([(BASE.to_string(), sha)]);
        let j = job(client(&[&asked, &polled]), &bucket, recorded).await;
        let e = j.execute(Mode::Run).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed, "{case}: {}", e.chain());
        assert!(manifest(&bucket, GENERATION).is_none(), "{case}: no generation completed");
        let w = j.watermark(&mut Vec::new()).await.unwrap().unwrap();
        assert_eq!(w.generation, BASE, "{case}: the watermark did not move");
    }
}

#[tokio::test]
async fn an_export_request_dynamodb_refuses_drops_the_checkpoint_so_the_next_run_plans_anew() {
    let bucket = MemBucket::new("escrow");
    let sha = generation(&bucket, BASE, "2026-11-28T11:00:00Z");
    let recorded = BTreeMap::from([(BASE.to_string(), sha)]);
    let rows = Rows::default();
    // Refused as asked (PITR turned off and on: the window starts before
    // recovery reaches): the checkpoint is dropped.
    let no = refused("ValidationException");
    let j = job(client(&[&no]), &bucket, recorded.clone()).await;
    let e = j.with_checkpoints(Some(checkpoint_store(&rows))).execute(Mode::Run).await.unwrap_err();
    assert_eq!((e.kind(), no.num_calls()), (ErrorKind::PreconditionFailed, 1), "{}", e.chain());
    assert!(e.chain().contains("plans anew"), "{}", e.chain());
    assert!(!has_checkpoint(&rows), "a refused request leaves no checkpoint to resume");
    // Any other failure keeps it (the same export is asked again)…
    let other = refused("SomethingElse");
    let j = job(client(&[&other]), &bucket, recorded.clone()).await;
    let e = j.with_checkpoints(Some(checkpoint_store(&rows))).execute(Mode::Run).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Failed, "{}", e.chain());
    assert!(has_checkpoint(&rows));
    // …but a later run that finds it without an export ARN plans anew: its
    // own window (to 13:00), not the saved one (to 12:00).
    let later = "2026-11-28T13:00:00Z";
    let asked = mock!(Client::export_table_to_point_in_time)
        .match_requests(asks_window("2026-11-28T11:00:00Z", later))
        .then_error(|| {
            ExportTableToPointInTimeError::generic(
                aws_sdk_dynamodb::error::ErrorMetadata::builder()
                    .code("ValidationException")
                    .build(),
            )
        });
    let j = job_at(client(&[&asked]), &bucket, recorded, later).await;
    let e = j.with_checkpoints(Some(checkpoint_store(&rows))).execute(Mode::Run).await.unwrap_err();
    assert_eq!((e.kind(), asked.num_calls()), (ErrorKind::PreconditionFailed, 1), "{}", e.chain());
    assert!(!has_checkpoint(&rows));
}

#[tokio::test]
async fn a_started_export_whose_window_ended_over_a_day_ago_is_dropped_and_planned_anew() {
    let from = "2026-11-28T11:00:00Z";
    let bucket = MemBucket::new("escrow");
    let sha = generation(&bucket, BASE, from);
    let recorded = BTreeMap::from([(BASE.to_string(), sha)]);
    let rows = Rows::default();
    let store = checkpoint_store(&rows);
    // An export an earlier run started two days ago, never completed.
    let info = TableInfo::describe(&client(&[]), "orders").await.unwrap();
    let old = json!({
        "generation": "20261126T120000000Z",
        "export_arn": "arn:aws:dynamodb:us-east-1:111111111111:table/orders/export/01",
        "plan": {"kind": "incremental", "base": BASE,
                 "from": secs("2026-11-26T11:00:00Z"), "to": secs("2026-11-26T12:00:00Z")},
    });
    let saved = escrow_sync_dynamodb::checkpoint::SavedScan {
        source_arn: ARN.into(),
        table_id: info.table_id().into(),
        destination: "mem://escrow/dynamodb/orders/".into(),
        segments: 0,
        checkpoints: vec![],
        sink_state: old.to_string(),
    };
    store.save("orders", &saved).await.unwrap();
    let asked = mock!(Client::export_table_to_point_in_time)
        .match_requests(asks_window(from, STARTED))
        .then_output(|| {
            ExportTableToPointInTimeOutput::builder()
                .export_description(ExportDescription::builder().export_arn(EXPORT).build())
                .build()
        });
    let summary = stage(&bucket, &[PUT, DELETE]);
    let polled = completed(summary, 2, Some((from, STARTED)), None);
    let j = job(client(&[&asked, &polled]), &bucket, recorded).await;
    let report = j.with_checkpoints(Some(store)).execute(Mode::Run).await.unwrap();
    assert_eq!(asked.num_calls(), 1, "{report:?}");
    assert!(report.warnings.iter().any(|w| w.contains("more than 24 hours ago")), "{report:?}");
    assert_eq!(manifest(&bucket, GENERATION).unwrap()["base_generation"], BASE);
    assert!(!has_checkpoint(&rows));
}

#[tokio::test]
async fn a_staged_file_that_is_not_gzip_drops_the_checkpoint() {
    let from = "2026-11-28T11:00:00Z";
    let bucket = MemBucket::new("escrow");
    let sha = generation(&bucket, BASE, from);
    let rows = Rows::default();
    // DynamoDB's manifest lists it with its MD5: only its content is bad.
    let summary = stage_raw(&bucket, b"not gzip at all".to_vec(), 1);
    let (asked, polled) = (started_rule(), completed(summary, 1, Some((from, STARTED)), None));
    let j =
        job(client(&[&asked, &polled]), &bucket, BTreeMap::from([(BASE.to_string(), sha)])).await;
    let e = j.with_checkpoints(Some(checkpoint_store(&rows))).execute(Mode::Run).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PreconditionFailed, "{}", e.chain());
    assert!(e.chain().contains("not gzip"), "{}", e.chain());
    assert!(!has_checkpoint(&rows), "the next run asks for a new export, not the same file");
}

#[tokio::test]
async fn a_broken_chain_gives_no_watermark_so_the_run_takes_a_full_export() {
    let bucket = MemBucket::new("escrow");
    let full = generation(&bucket, BASE, "2026-11-28T11:00:00Z");
    let inc = "20261128T113000000Z";
    let incremental = |base: &str, from: &str| {
        json!({"kind": "incremental", "base_generation": base, "export_from_time": from,
               "watermark": "2026-11-28T11:30:00Z"})
    };
    // Whole: the incremental generation builds on BASE.
    let sha = generation_with(&bucket, inc, incremental(BASE, "2026-11-28T11:00:00Z"));
    let recorded = BTreeMap::from([(BASE.to_string(), full.clone()), (inc.to_string(), sha)]);
    let j = job(client(&[]), &bucket, recorded).await;
    assert_eq!(j.watermark(&mut Vec::new()).await.unwrap().unwrap().generation, inc);
    // Broken: its base is not a generation any run manifest records.
    let lost = "20261128T103000000Z";
    let sha = generation_with(&bucket, inc, incremental(lost, "2026-11-28T10:30:00Z"));
    let recorded = BTreeMap::from([(BASE.to_string(), full), (inc.to_string(), sha)]);
    let j = job(client(&[]), &bucket, recorded).await;
    let mut notes = Vec::new();
    assert_eq!(j.watermark(&mut notes).await.unwrap(), None);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("does not reach back to a full export") && n.contains(lost)),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_chain_older_than_full_export_every_is_re_based_by_a_full_export() {
    let bucket = MemBucket::new("escrow");
    let sha = generation(&bucket, BASE, "2026-11-28T11:00:00Z");
    let recorded = BTreeMap::from([(BASE.to_string(), sha)]);
    let j = job(client(&[]), &bucket, recorded.clone()).await;
    assert!(j.watermark(&mut Vec::new()).await.unwrap().is_some(), "within the default 7 days");
    let j = j.with_full_export_every(Duration::from_secs(1800));
    let mut notes = Vec::new();
    assert_eq!(j.watermark(&mut notes).await.unwrap(), None);
    assert!(notes.iter().any(|n| n.contains("full_export_every (30m)")), "{notes:?}");
}

#[tokio::test]
async fn an_incremental_export_reported_without_its_type_or_window_is_refused() {
    let from = "2026-11-28T11:00:00Z";
    for missing in ["type", "window", "to"] {
        let bucket = MemBucket::new("escrow");
        let sha = generation(&bucket, BASE, from);
        let summary = stage(&bucket, &[PUT, DELETE]);
        let polled = mock!(Client::describe_export).then_output(move || {
            let mut d = ExportDescription::builder()
                .export_arn(EXPORT)
                .export_status(ExportStatus::Completed)
                .item_count(2)
                .export_manifest(&summary);
            if missing != "type" {
                d = d.export_type(ExportType::IncrementalExport);
            }
            if missing != "window" {
                let to = (missing != "to").then(|| DateTime::from_secs(secs(STARTED)));
                d = d.incremental_export_specification(
                    IncrementalExportSpecification::builder()
                        .export_from_time(DateTime::from_secs(secs(from)))
                        .set_export_to_time(to)
                        .build(),
                );
            }
            DescribeExportOutput::builder().export_description(d.build()).build()
        });
        let asked = started_rule();
        let recorded = BTreeMap::from([(BASE.to_string(), sha)]);
        let j = job(client(&[&asked, &polled]), &bucket, recorded).await;
        let e = j.execute(Mode::Run).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed, "{missing}: {}", e.chain());
        assert!(
            e.chain().contains("reports no") || e.chain().contains("none"),
            "{missing}: {}",
            e.chain()
        );
        assert!(manifest(&bucket, GENERATION).is_none(), "{missing}");
    }
}
