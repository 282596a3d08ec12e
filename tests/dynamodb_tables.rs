//! DynamoDB table-to-table escrow on the emulator, across two accounts: a
//! 10,000-item table with a GSI and an LSI cloned with its schema and
//! settings, every item exact; a re-run that makes no mutating call;
//! verify finding missing, changed and retained items; a resume after an
//! interrupted run; a key-schema mismatch refused with exit code 2; and a
//! primary rewritten whole (ransomware) tripping the mass-change breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, BillingMode, KeyType, ScalarAttributeType};
use serde_json::Value;

use escrow_sync_core::{CancellationToken, Mode, ProgressEvent};
use escrow_sync_dynamodb::{CheckpointStore, EscrowTable, ScanOptions, TableInfo, TableJob};
use escrow_sync_e2e::ddb::{all_items, attr, create_source, item, key, put_items, scan_all};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, cli, config_with_jobs, faults, sessions, unique};

/// A job over `source` into a new escrow table, as the binary builds it.
async fn job(source: &str, dest: &str, checkpoints: &str, escrow_client: Client) -> TableJob {
    let s = sessions().await;
    let primary = escrow_sync_dynamodb::client(&s.primary);
    let info = TableInfo::describe(&primary, source).await.expect("describe source");
    TableJob::new(
        format!("dynamodb:{source}"),
        primary,
        info,
        PRIMARY,
        EscrowTable::from_client(escrow_client.clone(), dest),
        escrow_sync_aws::now_rfc3339(),
    )
    .unwrap()
    .with_scan_options(ScanOptions::new().with_segments(4).with_page_limit(Some(250)))
    .with_read_units(100_000.0)
    .with_workers(4)
    .with_checkpoints(Some(CheckpointStore::from_client(escrow_client, checkpoints)))
}

const MUTATING: &[&str] = &[
    "BatchWriteItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "CreateTable",
    "UpdateTable",
    "UpdateContinuousBackups",
    "UpdateTimeToLive",
    "TagResource",
];

#[tokio::test]
async fn ten_thousand_items_with_indexes_are_cloned_exactly_and_a_rerun_writes_nothing() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow_admin = escrow_sync_dynamodb::client(&admin(ESCROW).await);
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..10_000).map(item)).await;
    let dest = unique("escrow-orders");
    let checkpoints = unique("checkpoints");
    let s = sessions().await;
    let escrow = escrow_sync_dynamodb::client(&s.escrow);

    let report =
        job(&source, &dest, &checkpoints, escrow.clone()).await.execute(Mode::Run).await.unwrap();
    assert_eq!((report.copied, report.skipped, report.failed), (10_000, 0, 0), "{report:?}");
    assert!(report.bytes_copied > 10_000 * 50, "{report:?}");
    assert_eq!(all_items(&escrow_admin, &dest).await, all_items(&primary_admin, &source).await);

    // Schema and settings.
    let info = TableInfo::describe(&escrow_admin, &dest).await.unwrap();
    let schema = info.schema_json();
    assert_eq!(
        schema["KeySchema"],
        TableInfo::describe(&primary_admin, &source).await.unwrap().schema_json()["KeySchema"]
    );
    assert_eq!(info.global_indexes(), vec!["by-status".to_string()]);
    assert_eq!(info.local_indexes(), vec!["by-amount".to_string()]);
    assert_eq!(schema["GlobalSecondaryIndexes"][0]["Projection"]["ProjectionType"], "KEYS_ONLY");
    assert_eq!(schema["LocalSecondaryIndexes"][0]["Projection"]["NonKeyAttributes"][0], "note");
    assert!(info.on_demand(), "escrow tables are on-demand by default");
    assert!(info.pitr, "point-in-time recovery on");
    assert!(info.deletion_protection(), "deletion protection on");
    assert_eq!(info.ttl_attribute, None, "TTL is never enabled in escrow");
    assert_eq!(info.tags.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        info.tags.get("escrow-sync:source-table-arn").map(String::as_str),
        Some(format!("arn:aws:dynamodb:us-east-1:{PRIMARY}:table/{source}").as_str())
    );
    assert_eq!(
        info.tags.get("escrow-sync:source-ttl-attribute").map(String::as_str),
        Some("expires")
    );
    assert_eq!(info.tags.get("escrow-sync:source-account").map(String::as_str), Some(PRIMARY));
    assert!(info.tags.contains_key("escrow-sync:last-run-at"), "{:?}", info.tags);
    let by_status = escrow_admin
        .query()
        .table_name(&dest)
        .index_name("by-status")
        .key_condition_expression("#s = :s")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":s", AttributeValue::S("paid".into()))
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .expect("query the escrow GSI");
    assert!(by_status.count > 0, "the cloned GSI answers queries");

    // A re-run against the unchanged table: no mutating call in escrow.
    let base = aws_smithy_http_client::Builder::new().build_http();
    let (http, seen) = faults::recording(base);
    let recorded = Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(s.escrow.sdk_config()).http_client(http).build(),
    );
    let report =
        job(&source, &dest, &checkpoints, recorded).await.execute(Mode::Run).await.unwrap();
    assert_eq!((report.copied, report.skipped, report.failed), (0, 10_000, 0), "{report:?}");
    let ops = seen.lock().unwrap().clone();
    assert!(ops.iter().any(|o| o == "BatchGetItem"), "{ops:?}");
    let mutating: Vec<_> = ops.iter().filter(|o| MUTATING.contains(&o.as_str())).collect();
    assert!(mutating.is_empty(), "a re-run made mutating calls: {mutating:?}");

    // Changes in the primary: one item changed, one deleted, one new.
    primary_admin
        .put_item()
        .table_name(&source)
        .set_item(Some({
            let mut i = item(17);
            i.insert("status".into(), AttributeValue::S("refunded".into()));
            i
        }))
        .send()
        .await
        .unwrap();
    primary_admin
        .delete_item()
        .table_name(&source)
        .key("customer", AttributeValue::S("cust#018".to_string()))
        .key("seq", AttributeValue::N("18".into()))
        .send()
        .await
        .unwrap();
    put_items(&primary_admin, &source, std::iter::once(item(10_000))).await;
    // And one item lost from escrow.
    escrow_admin
        .delete_item()
        .table_name(&dest)
        .key("customer", AttributeValue::S("cust#019".to_string()))
        .key("seq", AttributeValue::N("19".into()))
        .send()
        .await
        .unwrap();

    let verify = job(&source, &dest, &checkpoints, escrow.clone())
        .await
        .execute(Mode::Verify)
        .await
        .unwrap();
    assert_eq!((verify.missing, verify.different, verify.retained), (2, 1, 1), "{verify:?}");
    let listed: Vec<&str> = verify.differences.iter().map(|d| d.key.as_str()).collect();
    assert!(listed.contains(&r#"{"customer":{"S":"cust#019"},"seq":{"N":"19"}}"#), "{listed:?}");
    assert_eq!(verify.key_digests.len(), 4, "one digest per segment");
    let mismatched =
        verify.key_digests.iter().filter(|d| d.primary_digest != d.escrow_digest).count();
    assert!((1..=2).contains(&mismatched), "{:?}", verify.key_digests);
    assert_eq!(verify.unprotected, 0, "{:?}", verify.findings);

    let report =
        job(&source, &dest, &checkpoints, escrow.clone()).await.execute(Mode::Run).await.unwrap();
    assert_eq!((report.copied, report.failed), (3, 0), "{report:?}");
    let verify =
        job(&source, &dest, &checkpoints, escrow).await.execute(Mode::Verify).await.unwrap();
    assert_eq!((verify.missing, verify.different, verify.retained), (0, 0, 1), "{verify:?}");
    assert!(verify.key_digests.iter().all(|d| d.primary_digest == d.escrow_digest));
    let escrow_items = all_items(&escrow_admin, &dest).await;
    assert!(escrow_items.contains_key("cust#018/18"), "deleted in the primary, kept in escrow");
}

#[tokio::test]
async fn an_interrupted_run_resumes_from_its_checkpoints_in_escrow() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow_admin = escrow_sync_dynamodb::client(&admin(ESCROW).await);
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..2_000).map(item)).await;
    let dest = unique("escrow-orders");
    let checkpoints = unique("checkpoints");
    let escrow = escrow_sync_dynamodb::client(&sessions().await.escrow);

    // Cancel once 500 items are written: pages in flight finish, then the
    // checkpoints are saved in escrow.
    let cancel = CancellationToken::new();
    let copied = Arc::new(AtomicU64::new(0));
    let (c, n) = (cancel.clone(), copied.clone());
    let first = job(&source, &dest, &checkpoints, escrow.clone())
        .await
        .with_cancellation(cancel)
        .with_progress(Some(Arc::new(move |e: &ProgressEvent| {
            if matches!(e, ProgressEvent::Copied { .. })
                && n.fetch_add(1, Ordering::SeqCst) + 1 >= 500
            {
                c.cancel();
            }
        })))
        .execute(Mode::Run)
        .await
        .unwrap();
    assert!(first.cancelled, "{first:?}");
    assert!(first.copied >= 500 && first.copied < 2_000, "{first:?}");
    let store = CheckpointStore::from_client(escrow_admin.clone(), &checkpoints);
    let saved =
        store.load(&format!("dynamodb:{source}")).await.unwrap().expect("a checkpoint in escrow");
    assert_eq!(saved.segments, 4);
    assert!(saved.checkpoints.iter().any(|c| c.last_key.is_some() || c.done));

    let second = job(&source, &dest, &checkpoints, escrow).await.execute(Mode::Run).await.unwrap();
    assert!(!second.cancelled);
    assert_eq!(second.skipped, 0, "the resumed run reads nothing it already wrote: {second:?}");
    assert_eq!(first.copied + second.copied, 2_000, "{first:?} {second:?}");
    assert!(second.notes.iter().any(|w| w.contains("resumed")), "{:?}", second.notes);
    assert_eq!(all_items(&escrow_admin, &dest).await.len(), 2_000);
    assert!(
        store.load(&format!("dynamodb:{source}")).await.unwrap().is_none(),
        "a finished scan clears its checkpoint"
    );
}

fn config(source: &str, dest: &str, extra: &str) -> std::path::PathBuf {
    config_with_jobs(&format!(
        r#"[[dynamodb]]
name = "orders"
source_table = "{source}"
dest_table = "{dest}"
segments = 2
{extra}"#
    ))
}

#[tokio::test]
async fn a_primary_rewritten_whole_trips_the_mass_change_breaker_until_accepted() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow_admin = escrow_sync_dynamodb::client(&admin(ESCROW).await);
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..40).map(item)).await;
    let dest = unique("escrow-orders");
    let checkpoints = unique("cp");
    let cfg = config(&source, &dest, &format!("checkpoint_table = \"{checkpoints}\""));
    let cfg = cfg.to_str().unwrap();
    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["jobs"][0]["copied"].as_u64(), Some(40), "{run:?}");
    let original = all_items(&escrow_admin, &dest).await;
    assert_eq!(original.len(), 40);

    // The attacker rewrites every item of the primary.
    let rewritten = (0..40).map(|i| {
        let mut it = item(i);
        it.insert("note".into(), AttributeValue::S("encrypted: pay to get it back".into()));
        it
    });
    put_items(&primary_admin, &source, rewritten).await;
    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 3, "{run:?}");
    let j = &run.json()["jobs"][0];
    let kinds: Vec<&str> =
        j["findings"].as_array().unwrap().iter().filter_map(|f| f["kind"].as_str()).collect();
    assert_eq!(kinds, vec!["mass-change"], "{j}");
    let problem = j["findings"][0]["problem"].as_str().unwrap();
    assert!(problem.starts_with("40 of 40 escrow items (100%) changed"), "{problem}");
    let after = all_items(&escrow_admin, &dest).await;
    let unchanged = original.iter().filter(|(k, d)| after.get(*k) == Some(*d)).count();
    assert!(unchanged * 100 >= 75 * 40, "only {unchanged} of 40 escrow items unchanged");
    assert!(unchanged < 40, "the share the breaker allows was written");
    assert_eq!(after.len(), 40);

    // Accepted, the job goes on and copies the rest.
    let accepted = cli(&["run", "--config", cfg, "--accept-mass-change", "--output", "json"]);
    assert_eq!(accepted.code, 0, "{accepted:?}");
    let j = &accepted.json()["jobs"][0];
    assert_eq!(j["findings"], serde_json::json!([]), "{j}");
    assert_eq!(j["copied"].as_u64(), Some(unchanged as u64), "{j}");
    assert_eq!(all_items(&escrow_admin, &dest).await, all_items(&primary_admin, &source).await);
}

#[tokio::test]
async fn the_binary_runs_plans_and_verifies_a_table_job_and_refuses_a_key_schema_mismatch() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow_admin = escrow_sync_dynamodb::client(&admin(ESCROW).await);
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..300).map(item)).await;
    let dest = unique("escrow-orders");
    let cfg = config(&source, &dest, &format!("checkpoint_table = \"{}\"", unique("cp")));
    let cfg = cfg.to_str().unwrap();

    let plan = cli(&["plan", "--config", cfg, "--output", "json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let j = &plan.json()["jobs"][0];
    assert_eq!(
        (j["kind"].as_str(), j["copied"].as_u64(), j["missing"].as_u64()),
        (Some("dynamodb"), Some(300), Some(300)),
        "{j}"
    );
    assert!(
        escrow_admin.describe_table().table_name(&dest).send().await.is_err(),
        "plan creates nothing"
    );

    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = &run.json()["jobs"][0];
    assert_eq!((j["copied"].as_u64(), j["failed"].as_u64()), (Some(300), Some(0)), "{j}");

    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let j = &verify.json()["jobs"][0];
    assert_eq!(j["key_digests"].as_array().map(Vec::len), Some(2), "{j}");
    assert_eq!(j["missing"].as_u64(), Some(0));

    // An escrow table keyed differently: refused before anything runs.
    let other = unique("escrow-other");
    escrow_admin
        .create_table()
        .table_name(&other)
        .key_schema(key("id", KeyType::Hash))
        .attribute_definitions(attr("id", ScalarAttributeType::S))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let cfg = config(&source, &other, "");
    let out = cli(&["run", "--config", cfg.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.code, 2, "{out:?}");
    let doc: Value = out.json();
    let err = doc["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(&other) && err.contains("key schema") && err.contains("dest_table"),
        "{err}"
    );
    let count = escrow_admin.scan().table_name(&other).send().await.unwrap().count;
    assert_eq!(count, 0, "nothing written");

    // A source table that does not exist: exit 2, naming it.
    let cfg = config("no-such-table", &unique("escrow-x"), "");
    let out = cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("no-such-table") && out.stderr.contains("source_table"),
        "{}",
        out.stderr
    );
}

/// Every item of a table keyed by `pk` (S), by key, as content digests.
async fn by_pk(ddb: &Client, table: &str) -> std::collections::BTreeMap<String, [u8; 32]> {
    scan_all(ddb, table)
        .await
        .iter()
        .map(|i| {
            let AttributeValue::S(k) = &i["pk"] else { panic!("{i:?}") };
            (k.clone(), escrow_sync_dynamodb::keys::content_digest(i))
        })
        .collect()
}

async fn pk_table(ddb: &Client) -> String {
    let table = unique("fidelity");
    ddb.create_table()
        .table_name(&table)
        .key_schema(key("pk", KeyType::Hash))
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    table
}

/// Copies `source` (keyed by `pk`) into a new escrow table; returns its name.
async fn copy_table(source: &str) -> String {
    let dest = unique("escrow-fidelity");
    let escrow = escrow_sync_dynamodb::client(&sessions().await.escrow);
    let report = job(source, &dest, &unique("cp"), escrow).await.execute(Mode::Run).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    dest
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Arbitrary items, every attribute type nested, copied through the
    /// table sink into escrow: escrow holds exactly the primary's items.
    #[test]
    fn arbitrary_items_round_trip_through_the_table_sink(
        items in proptest::collection::vec(escrow_sync_dynamodb::strategies::record(), 1..12)
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let primary = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
            let escrow = escrow_sync_dynamodb::client(&admin(ESCROW).await);
            let source = pk_table(&primary).await;
            let items = items.into_iter().enumerate().map(|(i, mut r)| {
                r.insert("pk".into(), AttributeValue::S(format!("k{i}")));
                r
            });
            put_items(&primary, &source, items).await;
            let dest = copy_table(&source).await;
            let (p, e) = (by_pk(&primary, &source).await, by_pk(&escrow, &dest).await);
            assert!(!p.is_empty());
            assert_eq!(p, e);
        });
    }
}

#[tokio::test]
async fn an_item_near_400_kb_is_copied_whole() {
    let primary = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow = escrow_sync_dynamodb::client(&admin(ESCROW).await);
    let source = pk_table(&primary).await;
    let big = std::collections::HashMap::from([
        ("pk".to_string(), AttributeValue::S("big".into())),
        (
            "payload".to_string(),
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![0xAB; 390 * 1024])),
        ),
    ]);
    put_items(&primary, &source, std::iter::once(big)).await;
    let dest = copy_table(&source).await;
    assert_eq!(by_pk(&escrow, &dest).await, by_pk(&primary, &source).await);
}

#[tokio::test]
async fn checkpoints_larger_than_an_item_are_saved_in_chunks_and_replaced_whole() {
    use escrow_sync_dynamodb::checkpoint::SavedScan;
    use escrow_sync_dynamodb::scan::Checkpoint;

    let escrow = escrow_sync_dynamodb::client(&sessions().await.escrow);
    let table = unique("cp");
    let store = CheckpointStore::from_client(escrow.clone(), &table);
    let scan = |segments: u32, key_len: usize| SavedScan {
        source_arn: "arn:aws:dynamodb:us-east-1:111111111111:table/orders".into(),
        table_id: "id".into(),
        destination: "dynamodb://escrow-orders".into(),
        segments,
        checkpoints: (0..segments)
            .map(|segment| Checkpoint {
                segment,
                last_key: Some(std::collections::HashMap::from([(
                    "pk".to_string(),
                    AttributeValue::S(format!("{segment}-{}", "é".repeat(key_len))),
                )])),
                done: segment % 3 == 0,
            })
            .collect(),
        sink_state: String::new(),
    };
    let parts = |escrow: Client, table: String| async move {
        escrow
            .query()
            .table_name(&table)
            .key_condition_expression("#j = :j")
            .expression_attribute_names("#j", "job")
            .expression_attribute_values(":j", AttributeValue::S("job".into()))
            .send()
            .await
            .unwrap()
            .count
    };
    // About 2 MB of state: well over DynamoDB's 400 KB item limit.
    let big = scan(2_000, 500);
    store.save("job", &big).await.unwrap();
    assert_eq!(store.load("job").await.unwrap(), Some(big));
    assert!(parts(escrow.clone(), table.clone()).await > 3, "a head and several chunks");
    let small = scan(4, 10);
    store.save("job", &small).await.unwrap();
    assert_eq!(store.load("job").await.unwrap(), Some(small));
    assert_eq!(parts(escrow.clone(), table.clone()).await, 2, "older chunks deleted");
    store.clear("job").await.unwrap();
    assert_eq!(store.load("job").await.unwrap(), None);
    assert_eq!(parts(escrow, table).await, 0);
}

/// The DynamoDB Source/Sink pair under the conformance suite: items
/// `{pk: key, data: B(content)}` in a primary table, copied by the core
/// executor into an escrow table.
struct DdbFixture {
    primary: Client,
    escrow: Client,
    source_table: String,
    dest_table: String,
    source: escrow_sync_dynamodb::DynamoDbSource,
    sink: escrow_sync_dynamodb::DynamoDbSink,
}

impl DdbFixture {
    async fn new() -> Self {
        let primary = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
        let escrow = escrow_sync_dynamodb::client(&admin(ESCROW).await);
        let source_table = pk_table(&primary).await;
        let dest_table = unique("escrow-conformance");
        let s = sessions().await;
        let reader = escrow_sync_dynamodb::client(&s.primary);
        let operator = escrow_sync_dynamodb::client(&s.escrow);
        let info = TableInfo::describe(&reader, &source_table).await.unwrap();
        let keys = info.key_schema().unwrap();
        let table = EscrowTable::from_client(operator.clone(), &dest_table);
        table.ensure(&info, PRIMARY, "now").await.unwrap();
        DdbFixture {
            source: escrow_sync_dynamodb::DynamoDbSource::from_client(
                reader,
                &source_table,
                keys.clone(),
                ScanOptions::new().with_segments(2),
                1e9,
            ),
            sink: escrow_sync_dynamodb::DynamoDbSink::new(operator, table, keys),
            primary,
            escrow,
            source_table,
            dest_table,
        }
    }
}

#[async_trait::async_trait]
impl escrow_sync_testkit::conformance::Fixture for DdbFixture {
    fn source(&self) -> &dyn escrow_sync_core::Source {
        &self.source
    }
    fn sink(&self) -> &dyn escrow_sync_core::Sink {
        &self.sink
    }
    async fn put_source(&self, key: &str, data: bytes::Bytes) -> escrow_sync_core::Result<()> {
        self.primary
            .put_item()
            .table_name(&self.source_table)
            .item("pk", AttributeValue::S(key.into()))
            .item("data", AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(data.to_vec())))
            .send()
            .await
            .expect("put a primary item");
        Ok(())
    }
    async fn delete_source(&self, key: &str) -> escrow_sync_core::Result<()> {
        self.primary
            .delete_item()
            .table_name(&self.source_table)
            .key("pk", AttributeValue::S(key.into()))
            .send()
            .await
            .expect("delete a primary item");
        Ok(())
    }
    async fn escrow_content(&self, key: &str) -> escrow_sync_core::Result<Option<bytes::Bytes>> {
        let out = self
            .escrow
            .get_item()
            .table_name(&self.dest_table)
            .key("pk", AttributeValue::S(key.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get an escrow item");
        Ok(out.item.and_then(|i| match i.get("data") {
            Some(AttributeValue::B(b)) => Some(bytes::Bytes::from(b.clone().into_inner())),
            _ => None,
        }))
    }
}

#[tokio::test]
async fn the_dynamodb_source_and_sink_pass_the_conformance_suite() {
    let summary = escrow_sync_testkit::conformance::run_all(DdbFixture::new).await;
    assert!(summary.all_ran(), "{summary:?}");
}
