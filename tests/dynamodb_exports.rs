//! DynamoDB export generations on the emulator, across two accounts: a
//! table with a GSI and an LSI exported into the escrow bucket as gzip
//! DynamoDB JSON files with `schema.json` and `manifest.json`; the
//! generation re-imported (DynamoDB ImportTable) into a fresh table equals
//! the source; verify against the latest generation, including an altered
//! file; an interrupted generation resumed without duplicates; a native
//! export staged apart and copied in; and a planted generation ignored by
//! verify and restore (no run manifest records it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, ImportStatus, InputCompressionType,
    InputFormat, KeySchemaElement, KeyType, Projection, ProjectionType, S3BucketSource,
    ScalarAttributeType, TableCreationParameters,
};
use serde_json::Value;

use escrow_sync_core::{CancellationToken, Mode, ProgressEvent};
use escrow_sync_dynamodb::export::read_data_file;
use escrow_sync_dynamodb::{
    CheckpointStore, EscrowTable, ExportJob, ExportTarget, ScanOptions, TableInfo,
};
use escrow_sync_e2e::ddb::{all_items, create_source, item, put_items};
use escrow_sync_e2e::{
    ESCROW, PRIMARY, admin, cli, config_with_jobs, create_bucket, get, keys, s3, sessions, unique,
};
use escrow_sync_s3::{S3Sink, S3Source};

/// The one complete generation in `bucket`: its directory and manifest.
async fn only_generation(es3: &aws_sdk_s3::Client, bucket: &str) -> (String, Value) {
    let manifests: Vec<String> =
        keys(es3, bucket).await.into_iter().filter(|k| k.ends_with("/manifest.json")).collect();
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let manifest: Value =
        serde_json::from_slice(&get(es3, bucket, &manifests[0]).await.unwrap()).unwrap();
    (manifests[0].trim_end_matches("manifest.json").to_string(), manifest)
}

fn config(source: &str, bucket: &str, extra: &str) -> std::path::PathBuf {
    config_with_jobs(&format!(
        r#"[[dynamodb]]
name = "orders"
source_table = "{source}"
dest_bucket = "{bucket}"
dest_prefix = "dynamodb/"
segments = 3
file_size = "64KiB"
{extra}"#
    ))
}

/// A fresh escrow table imported from `prefix` of `bucket` with the key
/// schema and indexes `schema.json` records.
async fn import(ddb: &Client, bucket: &str, prefix: &str, schema: &Value) -> String {
    let table = unique("reimported");
    let keys = |v: &Value| -> Vec<KeySchemaElement> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| {
                KeySchemaElement::builder()
                    .attribute_name(k["AttributeName"].as_str().unwrap())
                    .key_type(KeyType::from(k["KeyType"].as_str().unwrap()))
                    .build()
                    .unwrap()
            })
            .collect()
    };
    let projection = |v: &Value| {
        Projection::builder()
            .projection_type(ProjectionType::from(v["ProjectionType"].as_str().unwrap()))
            .set_non_key_attributes(
                v["NonKeyAttributes"]
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect()),
            )
            .build()
    };
    let mut params = TableCreationParameters::builder()
        .table_name(&table)
        .set_key_schema(Some(keys(&schema["KeySchema"])))
        .set_attribute_definitions(Some(
            schema["AttributeDefinitions"]
                .as_array()
                .unwrap()
                .iter()
                // Without the LSI, its sort key is not a key attribute here.
                .filter(|a| {
                    let name = a["AttributeName"].as_str().unwrap();
                    let in_keys = |v: &Value| {
                        v.as_array().into_iter().flatten().any(|k| k["AttributeName"] == name)
                    };
                    in_keys(&schema["KeySchema"])
                        || schema["GlobalSecondaryIndexes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|g| in_keys(&g["KeySchema"]))
                })
                .map(|a| {
                    AttributeDefinition::builder()
                        .attribute_name(a["AttributeName"].as_str().unwrap())
                        .attribute_type(ScalarAttributeType::from(
                            a["AttributeType"].as_str().unwrap(),
                        ))
                        .build()
                        .unwrap()
                })
                .collect(),
        ))
        .billing_mode(BillingMode::PayPerRequest);
    for g in schema["GlobalSecondaryIndexes"].as_array().unwrap() {
        params = params.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(g["IndexName"].as_str().unwrap())
                .set_key_schema(Some(keys(&g["KeySchema"])))
                .projection(projection(&g["Projection"]))
                .build()
                .unwrap(),
        );
    }
    // ImportTable cannot create local secondary indexes: the fresh table
    // gets the GSIs; equality is checked on the items.
    let out = ddb
        .import_table()
        .s3_bucket_source(
            S3BucketSource::builder().s3_bucket(bucket).s3_key_prefix(prefix).build().unwrap(),
        )
        .input_format(InputFormat::DynamodbJson)
        .input_compression_type(InputCompressionType::Gzip)
        .table_creation_parameters(params.build().unwrap())
        .send()
        .await
        .expect("import table");
    let arn = out.import_table_description.and_then(|d| d.import_arn).expect("import arn");
    for _ in 0..100 {
        let d = ddb.describe_import().import_arn(&arn).send().await.unwrap();
        match d.import_table_description.and_then(|d| d.import_status) {
            Some(ImportStatus::Completed) => return table,
            Some(ImportStatus::Failed | ImportStatus::Cancelled) => panic!("import failed"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("import did not finish");
}

#[tokio::test]
async fn a_generation_holds_every_item_and_reimports_into_an_equal_table() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow_session = admin(ESCROW).await;
    let escrow_admin = escrow_sync_dynamodb::client(&escrow_session);
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..1_000).map(item)).await;
    let bucket = unique("escrow-exports");
    let es3 = s3(&escrow_session);
    create_bucket(&es3, &bucket, true).await;
    let cfg = config(&source, &bucket, &format!("checkpoint_table = \"{}\"", unique("cp")));
    let cfg = cfg.to_str().unwrap();

    let plan = cli(&["plan", "--config", cfg, "--output", "json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(keys(&es3, &bucket).await.is_empty(), "plan writes nothing");

    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = &run.json()["jobs"][0];
    assert_eq!((j["kind"].as_str(), j["copied"].as_u64()), (Some("dynamodb"), Some(1_000)), "{j}");

    let (dir, manifest) = only_generation(&es3, &bucket).await;
    assert!(dir.starts_with(&format!("dynamodb/{source}/")), "{dir}");
    assert_eq!(manifest["format"], "escrow-sync-dynamodb-export/1");
    assert_eq!(manifest["item_count"], 1_000);
    assert_eq!(
        manifest["table_arn"],
        format!("arn:aws:dynamodb:us-east-1:{PRIMARY}:table/{source}")
    );
    let files = manifest["files"].as_array().unwrap();
    assert!(files.len() >= 3, "a file or more per segment: {}", files.len());
    let mut seen = HashSet::new();
    for f in files {
        let data =
            get(&es3, &bucket, &format!("{dir}{}", f["key"].as_str().unwrap())).await.unwrap();
        assert_eq!(data.len() as u64, f["compressed_bytes"].as_u64().unwrap());
        let records = read_data_file(&data, "file").unwrap();
        assert_eq!(records.len() as u64, f["items"].as_u64().unwrap());
        for r in records {
            assert!(seen.insert(format!("{:?}/{:?}", r["customer"], r["seq"])), "an item twice");
        }
    }
    assert_eq!(seen.len(), 1_000);
    let schema: Value =
        serde_json::from_slice(&get(&es3, &bucket, &format!("{dir}schema.json")).await.unwrap())
            .unwrap();
    assert_eq!(schema["TimeToLive"]["AttributeName"], "expires");
    assert_eq!(schema["LocalSecondaryIndexes"][0]["IndexName"], "by-amount");
    assert_eq!(schema["Tags"]["team"], "payments");

    // The generation loaded into a fresh table (a clone of the schema in
    // schema.json, LSI included, written in batches: the path a restore
    // takes) equals the source, every attribute type exact.
    let source_info = TableInfo::describe(&primary_admin, &source).await.unwrap();
    let reloaded = unique("reloaded");
    let sink = EscrowTable::from_client(escrow_admin.clone(), &reloaded);
    sink.ensure(&source_info, PRIMARY, "2026-11-28T00:00:00Z").await.unwrap();
    let key_schema = source_info.key_schema().unwrap();
    for f in files {
        let data =
            get(&es3, &bucket, &format!("{dir}{}", f["key"].as_str().unwrap())).await.unwrap();
        let out = sink.write(read_data_file(&data, "f").unwrap(), &key_schema).await.unwrap();
        assert!(out.dead.is_empty());
    }
    assert_eq!(all_items(&escrow_admin, &reloaded).await, all_items(&primary_admin, &source).await);

    // verify: clean, then after changes in the primary.
    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert_eq!(verify.json()["jobs"][0]["key_digests"].as_array().map(Vec::len), Some(3));
    put_items(&primary_admin, &source, std::iter::once(item(5_000))).await;
    primary_admin
        .delete_item()
        .table_name(&source)
        .key("customer", aws_sdk_dynamodb::types::AttributeValue::S("cust#001".into()))
        .key("seq", aws_sdk_dynamodb::types::AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 3, "{verify:?}");
    let j = &verify.json()["jobs"][0];
    assert_eq!((j["missing"].as_u64(), j["retained"].as_u64()), (Some(1), Some(1)), "{j}");

    // A second run writes a second generation; verify then compares with it.
    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let generations: HashSet<String> =
        keys(&es3, &bucket).await.into_iter().filter(|k| k.ends_with("/manifest.json")).collect();
    assert_eq!(generations.len(), 2, "{generations:?}");
    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");

    // A data file altered in escrow is caught against the manifest.
    let latest = generations.iter().max().unwrap().trim_end_matches("manifest.json").to_string();
    let first_file = format!("{latest}data/00000-00000.json.gz");
    es3.put_object()
        .bucket(&bucket)
        .key(&first_file)
        .body(bytes::Bytes::from_static(b"tampered").into())
        .send()
        .await
        .unwrap();
    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 3, "{verify:?}");
    let j = &verify.json()["jobs"][0];
    let findings = j["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["key"].as_str().unwrap().ends_with(&first_file)
            && f["problem"].as_str().unwrap().contains("SHA-256")),
        "{j}"
    );
}

#[tokio::test]
async fn an_interrupted_generation_is_resumed_without_duplicates() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow_session = admin(ESCROW).await;
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..1_500).map(item)).await;
    let bucket = unique("escrow-exports");
    let es3 = s3(&escrow_session);
    create_bucket(&es3, &bucket, true).await;
    let checkpoints = unique("cp");
    let s = sessions().await;

    let job = |started: &str| {
        let s3 = escrow_sync_s3::client(&s.escrow);
        let primary = escrow_sync_dynamodb::client(&s.primary);
        let escrow = escrow_sync_dynamodb::client(&s.escrow);
        let (source, bucket, checkpoints, started) =
            (source.clone(), bucket.clone(), checkpoints.clone(), started.to_string());
        async move {
            let info = TableInfo::describe(&primary, &source).await.unwrap();
            ExportJob::new(
                "orders",
                primary,
                info,
                PRIMARY,
                ExportTarget {
                    files: Arc::new(S3Sink::from_client(s3.clone(), &bucket)),
                    reader: Arc::new(S3Source::from_client(s3, &bucket).with_streaming(true)),
                    location: format!("s3://{bucket}/"),
                    dest_prefix: "x/".into(),
                },
                started,
            )
            .unwrap()
            .with_scan_options(ScanOptions::new().with_segments(3).with_page_limit(Some(50)))
            .with_read_units(100_000.0)
            .with_file_size(16 << 10)
            .with_checkpoints(Some(CheckpointStore::from_client(escrow, checkpoints)))
        }
    };
    let cancel = CancellationToken::new();
    let files = Arc::new(AtomicU64::new(0));
    let (c, n) = (cancel.clone(), files.clone());
    let first = job("2026-11-28T10:00:00Z")
        .await
        .with_cancellation(cancel)
        .with_progress(Some(Arc::new(move |e: &ProgressEvent| {
            if matches!(e, ProgressEvent::Copied { .. })
                && n.fetch_add(1, Ordering::SeqCst) + 1 >= 4
            {
                c.cancel();
            }
        })))
        .execute(Mode::Run)
        .await
        .unwrap();
    assert!(first.cancelled, "{first:?}");
    assert!(first.copied > 0 && first.copied < 1_500, "{first:?}");
    let dir = format!("x/{source}/20261128T100000000Z/");
    let listed = keys(&es3, &bucket).await;
    assert!(listed.iter().any(|k| k.starts_with(&dir)), "{listed:?}");
    assert!(!listed.iter().any(|k| k.ends_with("manifest.json")), "no manifest: incomplete");

    // The next run (started later) resumes the same generation.
    let second = job("2026-11-28T11:00:00Z").await.execute(Mode::Run).await.unwrap();
    assert!(!second.cancelled, "{second:?}");
    assert_eq!(first.copied + second.copied, 1_500, "{first:?} {second:?}");
    let manifest: Value = serde_json::from_slice(
        &get(&es3, &bucket, &format!("{dir}manifest.json"))
            .await
            .expect("manifest of the resumed generation"),
    )
    .unwrap();
    assert_eq!(manifest["item_count"], 1_500);
    assert!(manifest["files"].as_array().unwrap().len() > 3, "16 KiB files: several per segment");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for f in manifest["files"].as_array().unwrap() {
        let data =
            get(&es3, &bucket, &format!("{dir}{}", f["key"].as_str().unwrap())).await.unwrap();
        for r in read_data_file(&data, "f").unwrap() {
            *seen.entry(format!("{:?}/{:?}", r["customer"], r["seq"])).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 1_500);
    assert!(seen.values().all(|n| *n == 1), "no item twice");
    let data_files: Vec<_> = keys(&es3, &bucket)
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("{dir}data/")))
        .collect();
    assert_eq!(
        data_files.len(),
        manifest["files"].as_array().unwrap().len(),
        "no stray data file: {data_files:?}"
    );
}

/// `item(i)` without empty maps: the emulator's ImportTable parses lines
/// with py_partiql_parser, which silently drops a line holding `{"M":{}}`
/// and every line after it in the file. DynamoDB reads them; the table
/// above checks the empty-map items through the batch-load path instead.
fn importable(i: usize) -> HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut m = item(i);
    if let Some(AttributeValue::M(nested)) = m.get_mut("nested")
        && let Some(AttributeValue::L(l)) = nested.get_mut("l")
    {
        l.retain(|v| !matches!(v, AttributeValue::M(m) if m.is_empty()));
    }
    m
}

#[tokio::test]
async fn dynamodb_import_table_reads_a_generation_into_an_equal_table() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow_session = admin(ESCROW).await;
    let escrow_admin = escrow_sync_dynamodb::client(&escrow_session);
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..500).map(importable)).await;
    let bucket = unique("escrow-exports");
    let es3 = s3(&escrow_session);
    create_bucket(&es3, &bucket, true).await;
    let cfg = config(&source, &bucket, &format!("checkpoint_table = \"{}\"", unique("cp")));
    let run = cli(&["run", "--config", cfg.to_str().unwrap(), "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let (dir, _) = only_generation(&es3, &bucket).await;
    let schema: Value =
        serde_json::from_slice(&get(&es3, &bucket, &format!("{dir}schema.json")).await.unwrap())
            .unwrap();
    let reimported = import(&escrow_admin, &bucket, &format!("{dir}data/"), &schema).await;
    assert_eq!(
        all_items(&escrow_admin, &reimported).await,
        all_items(&primary_admin, &source).await
    );
}

#[tokio::test]
async fn a_native_export_lands_in_the_escrow_bucket_with_schema_and_manifest() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow_session = admin(ESCROW).await;
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..200).map(item)).await;
    let bucket = unique("escrow-exports");
    let es3 = s3(&escrow_session);
    create_bucket(&es3, &bucket, true).await;
    let cfg = config(
        &source,
        &bucket,
        &format!("mode = \"native-export\"\ncheckpoint_table = \"{}\"", unique("cp")),
    );
    let cfg = cfg.to_str().unwrap();

    // Without point-in-time recovery on the source: refused, nothing written.
    let out = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(out.code, 2, "{out:?}");
    let err = out.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("point-in-time recovery") && err.contains(&source), "{err}");
    assert!(keys(&es3, &bucket).await.is_empty());

    primary_admin
        .update_continuous_backups()
        .table_name(&source)
        .point_in_time_recovery_specification(
            aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let out = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["jobs"][0]["copied"].as_u64(), Some(200), "{}", out.stdout);
    let (dir, manifest) = only_generation(&es3, &bucket).await;
    let all = keys(&es3, &bucket).await;
    assert!(all.contains(&format!("{dir}schema.json")), "{all:?}");
    assert_eq!(manifest["mode"], "native-export");
    assert_eq!(manifest["item_count"], 200);
    assert!(manifest["export_arn"].as_str().is_some_and(|a| !a.is_empty()), "{manifest}");
    let files = manifest["files"].as_array().unwrap();
    assert!(!files.is_empty());
    assert!(files.iter().all(|f| f["key"].as_str().unwrap().starts_with("native/")), "{manifest}");
    // DynamoDB wrote into the staging prefix; escrow-sync copied each file
    // into the generation, byte for byte.
    let generation = manifest["generation"].as_str().unwrap();
    let staged = format!("dynamodb/.staging/{source}/{generation}/");
    assert!(all.iter().any(|k| k.starts_with(&staged)), "{all:?}");
    for f in files {
        let key = f["key"].as_str().unwrap();
        let copy = get(&es3, &bucket, &format!("{dir}{key}")).await.unwrap();
        let original =
            get(&es3, &bucket, &format!("{staged}{}", key.trim_start_matches("native/")))
                .await
                .unwrap();
        assert_eq!(copy, original, "{key}");
    }

    // verify reads the native generation like any other.
    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert_eq!(verify.json()["jobs"][0]["missing"].as_u64(), Some(0));
}

/// The attack of issue 13: a generation planted in the export prefix,
/// newer than any escrow-sync wrote and self-consistent (its data files'
/// SHA-256 match its manifest), is not taken by `verify`, `verify
/// --offline` or `restore --drill`: no run manifest records it. A recorded
/// generation whose manifest.json was replaced is refused.
#[tokio::test]
async fn a_planted_generation_is_ignored_by_verify_and_restore() {
    use escrow_sync_dynamodb::export::{DataFile, FORMAT};
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let recovery = escrow_sync_dynamodb::client(&admin("333333333333").await);
    let escrow_session = admin(ESCROW).await;
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..30).map(item)).await;
    let bucket = unique("escrow-exports");
    let manifests = unique("export-manifests");
    let es3 = s3(&escrow_session);
    create_bucket(&es3, &bucket, true).await;
    create_bucket(&es3, &manifests, true).await;
    let path = config(&source, &bucket, &format!("checkpoint_table = \"{}\"", unique("cp")));
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[escrow]\n",
        &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let cfg = path.to_str().unwrap();
    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let (dir, _) = only_generation(&es3, &bucket).await;
    let real = dir.trim_end_matches('/').rsplit('/').next().unwrap().to_string();

    // The primary's admin plants a newer generation of five items, its
    // data file's SHA-256 in its manifest, schema.json copied.
    let planted = "99991231T235959999Z";
    let pdir = format!("dynamodb/{source}/{planted}/");
    let mut file = DataFile::new();
    for i in 1000..1005 {
        file.push(&item(i)).unwrap();
    }
    let (items, bytes) = (file.items(), file.bytes());
    let data = file.finish().unwrap();
    let sha = escrow_sync_core::manifest::digest(&data).replace("sha256:", "");
    let manifest = serde_json::json!({
        "format": FORMAT, "table": source, "generation": planted, "item_count": items,
        "files": [{"key": "data/00000-00000.json.gz", "items": items, "bytes": bytes,
                   "compressed_bytes": data.len(), "sha256": sha}],
    });
    let schema = get(&es3, &bucket, &format!("{dir}schema.json")).await.unwrap();
    let put = |key: String, body: Vec<u8>| {
        let es3 = es3.clone();
        let bucket = bucket.clone();
        async move {
            es3.put_object()
                .bucket(&bucket)
                .key(key)
                .body(aws_sdk_s3::primitives::ByteStream::from(body))
                .send()
                .await
                .unwrap();
        }
    };
    put(format!("{pdir}data/00000-00000.json.gz"), data).await;
    put(format!("{pdir}schema.json"), schema.to_vec()).await;
    put(format!("{pdir}manifest.json"), serde_json::to_vec(&manifest).unwrap()).await;

    let notes = |v: &Value| v["notes"].to_string();
    // verify compares with escrow-sync's generation, not the planted one.
    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let job = &verify.json()["jobs"][0];
    assert_eq!(job["missing"].as_u64(), Some(0), "{job}");
    assert!(notes(job).contains(&format!("compared with export generation {real}")), "{job}");
    assert!(
        notes(job).contains(planted) && notes(job).contains("not written by escrow-sync"),
        "{job}"
    );
    // verify --offline counts only the recorded generation.
    let offline = cli(&["verify", "--offline", "--config", cfg, "--output", "json"]);
    assert_eq!(offline.code, 0, "{offline:?}");
    let job = &offline.json()["jobs"][0];
    assert!(notes(job).contains("1 complete export generation(s)"), "{job}");
    assert!(notes(job).contains(planted), "{job}");

    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--config",
            cfg,
            "--job",
            "orders",
            "--target-role-arn",
            "arn:aws:iam::333333333333:role/recovery",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    // restore --drill loads escrow-sync's generation: 30 items, not 5.
    let drill_table = unique("drill-planted");
    let drill = restore(&["--target-table", &drill_table, "--drill"]);
    assert_eq!(drill.code, 0, "{drill:?}");
    let r = &drill.json()["restore"];
    assert!(r["source"].as_str().unwrap().contains(&real), "{r}");
    assert_eq!(r["restored"].as_u64(), Some(30), "{r}");
    assert_eq!(r["drill"]["verified"].as_u64(), Some(30), "{r}");
    assert!(notes(r).contains(planted) && notes(r).contains("ignored"), "{r}");
    assert!(recovery.describe_table().table_name(&drill_table).send().await.is_err());

    // escrow-sync's own manifest.json replaced (same content, another
    // serialisation): its SHA-256 is not the recorded one, refused.
    let original = get(&es3, &bucket, &format!("{dir}manifest.json")).await.unwrap();
    let v: Value = serde_json::from_slice(&original).unwrap();
    put(format!("{dir}manifest.json"), serde_json::to_vec(&v).unwrap()).await;
    let refused = restore(&["--target-table", &unique("drill-replaced"), "--drill"]);
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused.stderr.contains("run manifest") && refused.stderr.contains("manifest.json"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn generation_files_are_locked_renewed_and_a_lapsed_lock_is_unprotected() {
    use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let es3 = s3(&admin(ESCROW).await);
    let source = create_source(&primary_admin).await;
    put_items(&primary_admin, &source, (0..30).map(item)).await;
    let bucket = unique("escrow-locked-exports");
    escrow_sync_e2e::create_locked_bucket(&es3, &bucket).await;
    let path = config(
        &source,
        &bucket,
        &format!(
            "checkpoint_table = \"{}\"\nobject_lock = {{ mode = \"GOVERNANCE\", days = 1 }}",
            unique("cp")
        ),
    );
    let cfg = path.to_str().unwrap();
    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let notes = run.json()["jobs"][0]["notes"].to_string();
    assert!(notes.contains("retention: renewed"), "{notes}");
    assert_eq!(cli(&["verify", "--config", cfg]).code, 0);

    // An escrow insider with the governance bypass shortens one data
    // file's lock; once it runs out, verify reports the file.
    let (dir, manifest) = only_generation(&es3, &bucket).await;
    let file = format!("{dir}{}", manifest["files"][0]["key"].as_str().unwrap());
    let soon = std::time::SystemTime::now() + Duration::from_secs(1);
    es3.put_object_retention()
        .bucket(&bucket)
        .key(&file)
        .bypass_governance_retention(true)
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(aws_smithy_types::DateTime::from(soon))
                .build(),
        )
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let out = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(out.code, 3, "{out:?}");
    let findings = out.json()["jobs"][0]["findings"].clone();
    let found = findings.as_array().unwrap().iter().any(|f| {
        f["kind"] == "unprotected"
            && f["key"].as_str().unwrap().ends_with(&file)
            && f["problem"].as_str().unwrap().contains("Object Lock retention has expired")
    });
    assert!(found, "{findings}");
}
