//! `mode = "native-incremental"` on a table job, against aws-smithy-mocks
//! (a fake primary, a fake escrow table and checkpoint table kept in
//! memory) and the in-memory bucket of escrow-sync-testkit (the history
//! bucket and its staging prefix): a first run scans and saves the scan's
//! start as the watermark; a later run asks for the changes since the
//! watermark, applies the puts (history first), keeps deleted items and
//! moves the watermark; a run that could not apply everything, or whose
//! staged file is not DynamoDB's, keeps the old watermark; a run within 15
//! minutes asks for nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput;
use aws_sdk_dynamodb::operation::describe_export::DescribeExportOutput;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::export_table_to_point_in_time::ExportTableToPointInTimeOutput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::operation::tag_resource::TagResourceOutput;
use aws_sdk_dynamodb::types::{
    AttributeValue, ExportDescription, ExportStatus, ExportType, ExportViewType,
    IncrementalExportSpecification, PutRequest, WriteRequest,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use md5::Digest as _;
use serde_json::json;

mod common;

use common::{Store, batch_get, fast, item, pk_of, store, v_of};

use escrow_sync_core::{Mode, Report};
use escrow_sync_dynamodb::checkpoint::TableWatermark;
use escrow_sync_dynamodb::history::History;
use escrow_sync_dynamodb::json::Record;
use escrow_sync_dynamodb::{CheckpointStore, EscrowTable, ScanOptions, TableInfo, TableJob};
use escrow_sync_testkit::{MemBucket, MemSink, MemSource};

const ARN: &str = "arn:aws:dynamodb:us-east-1:111111111111:table/orders";
const EXPORT: &str = "arn:aws:dynamodb:us-east-1:111111111111:table/orders/export/01";
const STARTED: &str = "2026-11-28T12:00:00Z";
const GENERATION: &str = "20261128T120000000Z";
const STAGED: &str = "dynamodb-history/.staging/orders/20261128T120000000Z/";

type Rows = Arc<Mutex<BTreeMap<(String, String), Record>>>;

fn secs(t: &str) -> u64 {
    escrow_sync_core::epoch_seconds(t).unwrap() as u64
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules)
}

/// Change lines of an incremental export, written at `micros`.
fn put_line(pk: &str, v: u32, micros: u64) -> String {
    json!({"Metadata": {"WriteTimestampMicros": {"N": micros.to_string()}},
           "Keys": {"pk": {"S": pk}},
           "NewImage": {"pk": {"S": pk}, "v": {"N": v.to_string()}}})
    .to_string()
}

fn delete_line(pk: &str, micros: u64) -> String {
    json!({"Metadata": {"WriteTimestampMicros": {"N": micros.to_string()}},
           "Keys": {"pk": {"S": pk}}, "OldImage": {"pk": {"S": pk}, "v": {"N": "1"}}})
    .to_string()
}

fn gz(lines: &[String]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for l in lines {
        writeln!(e, "{l}").unwrap();
    }
    e.finish().unwrap()
}

struct Setup {
    primary: Store,
    escrow: Store,
    rows: Rows,
    staging: MemBucket,
    history: MemBucket,
    /// Keys whose writes escrow never accepts (unprocessed every time).
    refused: Arc<Mutex<Vec<String>>>,
    primary_rules: Vec<Rule>,
    escrow_rules: Vec<Rule>,
}

impl Setup {
    fn new(escrow: Vec<Record>, primary: Vec<Record>) -> Self {
        let (primary, escrow) = (store(primary), store(escrow));
        let rows: Rows = Arc::default();
        let refused: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut p = common::table_rules("orders", true, vec![]);
        let scan_data = primary.clone();
        p.push(mock!(Client::scan).then_compute_output(move |_| {
            let data = scan_data.lock().unwrap();
            ScanOutput::builder().set_items(Some(data.values().cloned().collect())).build()
        }));
        p.push(batch_get("orders", primary.clone()));
        let mut e =
            common::table_rules("escrow-orders", true, vec![("escrow-sync:source-table-arn", ARN)]);
        let count = escrow.clone();
        e[0] = mock!(Client::describe_table)
            .match_requests(|r| r.table_name() == Some("escrow-orders"))
            .then_compute_output(move |_| {
                let mut t = common::table("escrow-orders");
                t.item_count = Some(count.lock().unwrap().len() as i64);
                DescribeTableOutput::builder().table(t).build()
            });
        e.push(batch_get("escrow-orders", escrow.clone()));
        let (data, no) = (escrow.clone(), refused.clone());
        e.push(mock!(Client::batch_write_item).then_compute_output(move |r| {
            let mut data = data.lock().unwrap();
            let no = no.lock().unwrap();
            let mut unprocessed = Vec::new();
            for w in &r.request_items().unwrap()["escrow-orders"] {
                let item = w.put_request().unwrap().item().clone();
                if no.contains(&pk_of(&item)) {
                    unprocessed.push(
                        WriteRequest::builder()
                            .put_request(
                                PutRequest::builder().set_item(Some(item)).build().unwrap(),
                            )
                            .build(),
                    );
                } else {
                    data.insert(pk_of(&item), item);
                }
            }
            let mut out = BatchWriteItemOutput::builder();
            if !unprocessed.is_empty() {
                out = out.unprocessed_items("escrow-orders", unprocessed);
            }
            out.build()
        }));
        e.push(mock!(Client::tag_resource).then_output(|| TagResourceOutput::builder().build()));
        // The checkpoint table "cp", rows by (job, part).
        let key = |r: &HashMap<String, AttributeValue>| {
            let s = |k: &str| r[k].as_s().unwrap().clone();
            (s("job"), s("part"))
        };
        let r = rows.clone();
        e.push(mock!(Client::get_item).then_compute_output(move |g| {
            let row = r.lock().unwrap().get(&key(g.key().unwrap())).cloned();
            GetItemOutput::builder().set_item(row).build()
        }));
        let r = rows.clone();
        e.push(mock!(Client::put_item).then_compute_output(move |p| {
            let item = p.item().unwrap().clone();
            r.lock().unwrap().insert(key(&item), item);
            PutItemOutput::builder().build()
        }));
        let r = rows.clone();
        e.push(mock!(Client::query).then_compute_output(move |q| {
            let job = q.expression_attribute_values().unwrap()[":j"].as_s().unwrap().clone();
            let items: Vec<Record> = r
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.0 == job)
                .map(|(_, v)| v.clone())
                .collect();
            QueryOutput::builder().set_items(Some(items)).build()
        }));
        let r = rows.clone();
        e.push(mock!(Client::delete_item).then_compute_output(move |d| {
            r.lock().unwrap().remove(&key(d.key().unwrap()));
            DeleteItemOutput::builder().build()
        }));
        Setup {
            primary,
            escrow,
            rows,
            staging: MemBucket::new("hist"),
            history: MemBucket::new("hist"),
            refused,
            primary_rules: p,
            escrow_rules: e,
        }
    }

    fn escrow_client(&self) -> Client {
        client(&self.escrow_rules.iter().collect::<Vec<_>>())
    }

    fn checkpoints(&self) -> CheckpointStore {
        CheckpointStore::from_client(self.escrow_client(), "cp")
    }

    async fn info(&self) -> TableInfo {
        let c = client(&self.primary_rules.iter().collect::<Vec<_>>());
        TableInfo::describe(&c, "orders").await.unwrap()
    }

    /// Saves a watermark at `time` for this job, as an earlier run would.
    async fn watermark(&self, time: u64) {
        let info = self.info().await;
        let w = TableWatermark {
            time: at(time),
            source_arn: info.arn().to_string(),
            table_id: info.table_id().to_string(),
            destination: "dynamodb://escrow-orders".into(),
        };
        self.checkpoints().save_watermark("orders", &w).await.unwrap();
    }

    async fn saved_watermark(&self) -> Option<u64> {
        let w = self.checkpoints().load_watermark("orders").await.unwrap()?;
        Some(w.time.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    /// What DynamoDB writes into the staging prefix for the export.
    fn stage(&self, lines: &[String]) -> String {
        let data = gz(lines);
        let md5 = aws_smithy_types::base64::encode(md5::Md5::digest(&data).as_slice());
        let base = format!("{STAGED}AWSDynamoDB/01/");
        self.staging.put(format!("{base}data/a.json.gz"), data);
        let files = format!("{base}manifest-files.json");
        self.staging.put(
            &files,
            json!({"itemCount": lines.len(), "md5Checksum": md5,
                   "dataFileS3Key": format!("{base}data/a.json.gz")})
            .to_string(),
        );
        let summary = format!("{base}manifest-summary.json");
        self.staging.put(&summary, json!({"manifestFilesS3Key": files}).to_string());
        summary
    }

    async fn run(&self, more: &[&Rule]) -> escrow_sync_core::Result<Report> {
        let rules: Vec<&Rule> = self.primary_rules.iter().chain(more.iter().copied()).collect();
        let primary = client(&rules);
        let info = TableInfo::describe(&primary, "orders").await.unwrap();
        let sink =
            EscrowTable::from_client(self.escrow_client(), "escrow-orders").with_retry(fast());
        let history =
            History::new(Arc::new(MemSink::new(self.history.clone())), "escrow-orders", STARTED);
        TableJob::new("orders", primary, info, "111111111111", sink, STARTED)
            .unwrap()
            .with_scan_options(ScanOptions::new().with_segments(1).with_retry(fast()))
            .with_checkpoints(Some(self.checkpoints()))
            .with_dead_letter_dir(std::env::temp_dir())
            .with_history(Some(history))
            .with_native_incremental(
                "hist",
                "222222222222",
                None,
                "dynamodb-history/.staging/",
                Arc::new(MemSource::new(self.staging.clone())),
            )
            .with_export_timeout(Duration::from_secs(5), Duration::from_millis(1))
            .execute(Mode::Run)
            .await
    }

    fn escrow_v(&self, pk: &str) -> Option<String> {
        self.escrow.lock().unwrap().get(pk).map(v_of)
    }
}

/// ExportTableToPointInTime of the changes in `[from, to)` into the
/// staging prefix of the history bucket, NEW_IMAGE view.
fn asked(from: u64, to: u64) -> Rule {
    mock!(Client::export_table_to_point_in_time)
        .match_requests(move |r| {
            let spec = r.incremental_export_specification();
            r.table_arn() == Some(ARN)
                && r.export_type() == Some(&ExportType::IncrementalExport)
                && r.s3_bucket() == Some("hist")
                && r.s3_bucket_owner() == Some("222222222222")
                && r.s3_prefix() == Some(STAGED.trim_end_matches('/'))
                && r.client_token() == Some(&*format!("escrow-sync-{GENERATION}"))
                && spec.and_then(|s| s.export_from_time())
                    == Some(&DateTime::from_secs(from as i64))
                && spec.and_then(|s| s.export_to_time()) == Some(&DateTime::from_secs(to as i64))
                && spec.and_then(|s| s.export_view_type()) == Some(&ExportViewType::NewImage)
        })
        .then_output(|| {
            ExportTableToPointInTimeOutput::builder()
                .export_description(ExportDescription::builder().export_arn(EXPORT).build())
                .build()
        })
}

fn completed(summary: String, items: i64, from: u64, to: u64) -> Rule {
    mock!(Client::describe_export).then_output(move || {
        let d = ExportDescription::builder()
            .export_arn(EXPORT)
            .export_status(ExportStatus::Completed)
            .item_count(items)
            .export_manifest(&summary)
            .export_type(ExportType::IncrementalExport)
            .incremental_export_specification(
                IncrementalExportSpecification::builder()
                    .export_from_time(DateTime::from_secs(from as i64))
                    .export_to_time(DateTime::from_secs(to as i64))
                    .export_view_type(ExportViewType::NewImage)
                    .build(),
            )
            .build();
        DescribeExportOutput::builder().export_description(d).build()
    })
}

fn any_export() -> Rule {
    mock!(Client::export_table_to_point_in_time).then_output(|| {
        ExportTableToPointInTimeOutput::builder()
            .export_description(ExportDescription::builder().export_arn(EXPORT).build())
            .build()
    })
}

#[tokio::test]
async fn a_first_run_scans_and_saves_the_scan_start_as_the_watermark() {
    let s = Setup::new(vec![], (0..5).map(|i| item(&format!("k{i}"), 1)).collect());
    let export = any_export();
    let report = s.run(&[&export]).await.unwrap();
    assert_eq!(export.num_calls(), 0, "a first run asks DynamoDB for no export");
    assert_eq!(report.copied, 5, "{report:?}");
    assert!(report.notes.iter().any(|n| n.contains("full scan: first run")), "{:?}", report.notes);
    assert_eq!(s.saved_watermark().await, Some(secs(STARTED)), "{:?}", report.notes);
    assert_eq!(s.escrow.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn a_scan_that_could_not_write_everything_saves_no_watermark() {
    let s = Setup::new(vec![], (0..5).map(|i| item(&format!("k{i}"), 1)).collect());
    s.refused.lock().unwrap().push("k3".into());
    let report = s.run(&[]).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(s.saved_watermark().await, None, "{:?}", report.warnings);
    assert!(report.warnings.iter().any(|w| w.contains("watermark stays")), "{:?}", report.warnings);
}

#[tokio::test]
async fn a_later_run_applies_the_changes_keeps_deleted_items_and_moves_the_watermark() {
    let now = secs(STARTED);
    let from = now - 3600;
    let escrow: Vec<Record> = (0..3).map(|i| item(&format!("k{i}"), 1)).collect();
    let s = Setup::new(escrow, vec![]);
    s.watermark(from).await;
    let w = (from + 60) * 1_000_000;
    let summary = s.stage(&[
        put_line("k0", 2, w),     // replaced
        put_line("k1", 1, w + 1), // the same state escrow holds
        delete_line("k2", w + 2), // deleted in the primary
        put_line("n0", 7, w + 3), // new
    ]);
    let (asked, polled) = (asked(from, now), completed(summary, 4, from, now));
    let report = s.run(&[&asked, &polled]).await.unwrap();
    assert_eq!(asked.num_calls(), 1, "{report:?}");
    assert_eq!((report.copied, report.skipped, report.retained), (2, 1, 1), "{report:?}");
    assert_eq!(s.escrow_v("k0").as_deref(), Some("2"));
    assert_eq!(s.escrow_v("n0").as_deref(), Some("7"));
    assert_eq!(s.escrow_v("k2").as_deref(), Some("1"), "escrow keeps what the primary deleted");
    assert_eq!(s.saved_watermark().await, Some(now), "{:?}", report.warnings);
    // The history holds k0's state before the change (and n0's absence).
    let events = escrow_sync_dynamodb::history::load_events(
        &MemSource::new(s.history.clone()),
        "escrow-orders",
    )
    .await
    .unwrap();
    let k0 = events.iter().find(|e| e.key.contains("k0")).expect("a history event for k0");
    let previous = k0.previous.as_ref().expect("escrow held k0");
    let previous = escrow_sync_dynamodb::json::record_from_json(previous, "k0").unwrap();
    assert_eq!(v_of(&previous), "1", "{k0:?}");
    assert!(events.iter().all(|e| !e.key.contains("k1")), "no event for a change already held");
    assert!(s.primary.lock().unwrap().is_empty(), "the primary was never scanned into");

    // The same export applied again (a re-run from the same watermark)
    // writes nothing.
    s.watermark(from).await;
    let (asked2, polled2) = (
        self::asked(from, now),
        completed(s.stage(&[put_line("k0", 2, w), put_line("n0", 7, w + 3)]), 2, from, now),
    );
    let again = s.run(&[&asked2, &polled2]).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 2), "{again:?}");
}

#[tokio::test]
async fn a_partial_apply_keeps_the_old_watermark() {
    let now = secs(STARTED);
    let from = now - 3600;
    let s = Setup::new(vec![item("k0", 1)], vec![]);
    s.watermark(from).await;
    s.refused.lock().unwrap().push("n1".into());
    let w = (from + 60) * 1_000_000;
    let summary = s.stage(&[put_line("n0", 1, w), put_line("n1", 1, w + 1)]);
    let (asked, polled) = (asked(from, now), completed(summary, 2, from, now));
    let report = s.run(&[&asked, &polled]).await.unwrap();
    assert_eq!((report.copied, report.failed), (1, 1), "{report:?}");
    assert_eq!(s.saved_watermark().await, Some(from), "the watermark did not move");
}

#[tokio::test]
async fn a_staged_file_that_is_not_dynamodbs_applies_nothing_and_keeps_the_watermark() {
    let now = secs(STARTED);
    let from = now - 3600;
    let s = Setup::new(vec![item("k0", 1)], vec![]);
    s.watermark(from).await;
    let w = (from + 60) * 1_000_000;
    let summary = s.stage(&[put_line("k0", 2, w)]);
    // The primary's reader role rewrites the staged file after the export.
    s.staging.put(format!("{STAGED}AWSDynamoDB/01/data/a.json.gz"), gz(&[put_line("k0", 9, w)]));
    let (asked, polled) = (asked(from, now), completed(summary, 1, from, now));
    let e = s.run(&[&asked, &polled]).await.unwrap_err();
    assert!(e.chain().contains("MD5"), "{}", e.chain());
    assert_eq!(s.escrow_v("k0").as_deref(), Some("1"));
    assert_eq!(s.saved_watermark().await, Some(from));
}

#[tokio::test]
async fn within_15_minutes_of_the_watermark_nothing_is_asked_for() {
    let now = secs(STARTED);
    let s = Setup::new(vec![item("k0", 1)], vec![item("k0", 2)]);
    s.watermark(now - 600).await;
    let export = any_export();
    let report = s.run(&[&export]).await.unwrap();
    assert_eq!(export.num_calls(), 0);
    assert!(report.notes.iter().any(|n| n.starts_with("nothing exported")), "{:?}", report.notes);
    assert_eq!(s.escrow_v("k0").as_deref(), Some("1"), "nothing scanned or written");
    assert_eq!(s.saved_watermark().await, Some(now - 600));
    let _ = &s.rows;
}
