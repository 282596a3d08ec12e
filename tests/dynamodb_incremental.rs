//! `mode = "native-incremental"` on the emulator, across two accounts: a
//! first run takes a full export, the next (the table's clock 15 minutes
//! on) asks DynamoDB for the changes since and stores them as an
//! incremental generation; `restore --at` composes the generations (after
//! the second run: the source as it is; between the runs: the first
//! state); `verify` compares the primary with the composed state; a
//! planted incremental generation is ignored; a base generation
//! gone is an error naming it.
//!
//! DynamoDB exports a window of 15 minutes at least and no suite waits that
//! long: the emulator's DynamoDB patch (xtask/src/moto_patch_dynamodb.py)
//! runs a table tagged `emulator:dynamodb-clock-behind-seconds` behind the
//! wall clock, and the suite lowers the tag to move the table's clock
//! forward. escrow-sync reads the table's clock as it does on AWS, from
//! DescribeContinuousBackups' LatestRestorableDateTime.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PointInTimeRecoverySpecification, Tag};
use serde_json::Value;

use escrow_sync_e2e::ddb::{all_items, create_source, item, put_items};
use escrow_sync_e2e::{
    ESCROW, PRIMARY, admin, cli, config_with_jobs, create_bucket, get, keys, s3, unique,
};

const CLOCK_TAG: &str = "emulator:dynamodb-clock-behind-seconds";

/// Sets the source table's clock `behind` seconds behind the wall clock.
async fn clock(ddb: &Client, table: &str, behind: u64) {
    ddb.tag_resource()
        .resource_arn(format!("arn:aws:dynamodb:us-east-1:{PRIMARY}:table/{table}"))
        .tags(Tag::builder().key(CLOCK_TAG).value(behind.to_string()).build().unwrap())
        .send()
        .await
        .expect("tag the source table");
}

/// A new source table with point-in-time recovery on and `items` items,
/// its clock an hour behind the wall clock (set before recovery is
/// enabled: its earliest restorable time is read from the table's clock),
/// then ten seconds on, so that the first export's time is past every
/// write.
async fn source_with_recovery(ddb: &Client, items: usize) -> String {
    let source = create_source(ddb).await;
    clock(ddb, &source, 3600).await;
    ddb.update_continuous_backups()
        .table_name(&source)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    put_items(ddb, &source, (0..items).map(item)).await;
    clock(ddb, &source, 3590).await;
    source
}

/// Twenty minutes on in `table`'s clock: item 100 added, item 1 replaced,
/// item 2 updated, item 3 deleted; then ten seconds on.
async fn four_changes(ddb: &Client, table: &str) {
    clock(ddb, table, 2400).await;
    put_items(ddb, table, [item(100)].into_iter()).await;
    let mut replaced = item(1);
    replaced.insert("status".into(), AttributeValue::S("refunded".into()));
    put_items(ddb, table, [replaced].into_iter()).await;
    let key = |i: usize| {
        let it = item(i);
        [("customer", it["customer"].clone()), ("seq", it["seq"].clone())]
    };
    let mut update = ddb
        .update_item()
        .table_name(table)
        .update_expression("SET amount = :a")
        .expression_attribute_values(":a", AttributeValue::N("9.99".into()));
    for (k, v) in key(2) {
        update = update.key(k, v);
    }
    update.send().await.unwrap();
    let mut delete = ddb.delete_item().table_name(table);
    for (k, v) in key(3) {
        delete = delete.key(k, v);
    }
    delete.send().await.unwrap();
    clock(ddb, table, 2390).await;
}

/// `restore --apply` of job `orders` into the recovery account, with
/// `extra` arguments.
fn restore(cfg: &str, extra: &[&str]) -> escrow_sync_e2e::Outcome {
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
        "--apply",
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

/// Waits for the next whole second of the wall clock (at most one) and
/// returns it as RFC 3339: later than anything started before the call,
/// earlier than anything started after.
async fn next_second() -> String {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let next = Duration::from_secs(now.as_secs() + 1);
    tokio::time::sleep(next - now).await;
    escrow_sync_core::rfc3339(UNIX_EPOCH + next)
}

/// The generations complete in `bucket` under the job's prefix, oldest
/// first, with their manifests.
async fn generations(es3: &aws_sdk_s3::Client, bucket: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut manifests: Vec<String> = keys(es3, bucket)
        .await
        .into_iter()
        .filter(|k| k.ends_with("/manifest.json") && !k.contains("/.staging/"))
        .collect();
    manifests.sort();
    for key in manifests {
        let manifest: Value =
            serde_json::from_slice(&get(es3, bucket, &key).await.unwrap()).expect("manifest.json");
        let generation = manifest["generation"].as_str().unwrap_or_default().to_string();
        out.push((generation, manifest));
    }
    out
}

#[tokio::test]
async fn incremental_generations_follow_the_changes_and_restore_composes_them() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let recovery = escrow_sync_dynamodb::client(&admin("333333333333").await);
    let escrow_session = admin(ESCROW).await;
    let es3 = s3(&escrow_session);
    let source = source_with_recovery(&primary_admin, 40).await;

    let bucket = unique("escrow-incr");
    let manifests = unique("incr-manifests");
    create_bucket(&es3, &bucket, true).await;
    create_bucket(&es3, &manifests, true).await;
    let path = config_with_jobs(&format!(
        r#"[[dynamodb]]
name = "orders"
source_table = "{source}"
dest_bucket = "{bucket}"
dest_prefix = "dynamodb/"
mode = "native-incremental"
checkpoint_table = "{}"
"#,
        unique("cp")
    ));
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[escrow]\n",
        &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let cfg = path.to_str().unwrap();
    let run = || cli(&["run", "--config", cfg, "--output", "json"]);
    let notes = |v: &Value| v["notes"].to_string();

    // First run: no watermark, a full export.
    let first = run();
    assert_eq!(first.code, 0, "{first:?}");
    let job = &first.json()["jobs"][0];
    assert!(notes(job).contains("full export: first run of native-incremental"), "{job}");
    let gens = generations(&es3, &bucket).await;
    assert_eq!(gens.len(), 1, "{gens:?}");
    let (g1, m1) = gens[0].clone();
    assert_eq!((m1["kind"].as_str(), m1["item_count"].as_u64()), (Some("full"), Some(40)), "{m1}");
    let first_state = all_items(&primary_admin, &source).await;
    // `--at` reads whole seconds: a second boundary between the runs.
    let between = next_second().await;

    // Twenty minutes on in the table's clock: one item added, one
    // replaced, one updated, one deleted.
    four_changes(&primary_admin, &source).await;

    // Second run: the changes since the first export's time, four of them.
    let second = run();
    assert_eq!(second.code, 0, "{second:?}");
    let job = &second.json()["jobs"][0];
    assert!(notes(job).contains(&format!("on top of generation {g1}")), "{job}");
    assert_eq!(job["copied"].as_u64(), Some(4), "{job}");
    let gens = generations(&es3, &bucket).await;
    assert_eq!(gens.len(), 2, "{gens:?}");
    let (g2, m2) = gens[1].clone();
    assert_eq!(m2["kind"], "incremental", "{m2}");
    assert_eq!(m2["base_generation"].as_str(), Some(g1.as_str()), "{m2}");
    assert_eq!(m2["export_from_time"], m1["watermark"], "{m2}");
    let second_state = all_items(&primary_admin, &source).await;
    assert_ne!(first_state, second_state);

    // verify compares the primary with the composed state.
    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let job = &verify.json()["jobs"][0];
    assert_eq!((job["missing"].as_u64(), job["different"].as_u64()), (Some(0), Some(0)), "{job}");

    // Right after: under DynamoDB's 15 minutes, nothing is asked for.
    let third = run();
    assert_eq!(third.code, 0, "{third:?}");
    let job = &third.json()["jobs"][0];
    assert!(notes(job).contains("nothing exported"), "{job}");
    assert_eq!(generations(&es3, &bucket).await.len(), 2);

    let restore = |extra: &[&str]| restore(cfg, extra);
    let after = next_second().await;
    // After the second run: the full generation and the changes on top.
    let now_table = unique("restored-now");
    let out = restore(&["--target-table", &now_table, "--at", &after]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = &out.json()["restore"];
    assert!(notes(r).contains("1 incremental generation(s)") && notes(r).contains(&g2), "{r}");
    assert_eq!(all_items(&recovery, &now_table).await, second_state, "{r}");
    // Between the runs: the first state.
    let then_table = unique("restored-then");
    let out = restore(&["--target-table", &then_table, "--at", &between]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(all_items(&recovery, &then_table).await, first_state);

    // The primary's admin plants a newer incremental generation on top of
    // the second, deleting every item: no run manifest records it, ignored.
    let planted = "99991231T235959999Z";
    let pdir = format!("dynamodb/{source}/{planted}/");
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
    let mut fake = m2.clone();
    fake["generation"] = planted.into();
    fake["base_generation"] = g2.clone().into();
    fake["export_from_time"] = m2["watermark"].clone();
    fake["files"] = Value::Array(Vec::new());
    put(format!("{pdir}manifest.json"), serde_json::to_vec(&fake).unwrap()).await;
    let g2_dir = format!("dynamodb/{source}/{g2}/");
    put(
        format!("{pdir}schema.json"),
        get(&es3, &bucket, &format!("{g2_dir}schema.json")).await.unwrap().to_vec(),
    )
    .await;
    let latest_table = unique("restored-latest");
    let out = restore(&["--target-table", &latest_table]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = &out.json()["restore"];
    assert!(notes(r).contains(planted) && notes(r).contains("ignored"), "{r}");
    assert!(r["source"].as_str().unwrap().contains(&g2), "{r}");
    assert_eq!(all_items(&recovery, &latest_table).await, second_state);

    // The full generation's manifest deleted (a delete marker in the
    // versioned bucket): the chain has a gap, refused, naming it.
    es3.delete_object()
        .bucket(&bucket)
        .key(format!("dynamodb/{source}/{g1}/manifest.json"))
        .send()
        .await
        .unwrap();
    let gap_table = unique("restored-gap");
    let out = restore(&["--target-table", &gap_table, "--at", &after]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains(&g1) && out.stderr.contains("gap"), "{}", out.stderr);
    assert!(recovery.describe_table().table_name(&gap_table).send().await.is_err());
}

/// A table job in `mode = "native-incremental"`: the first run scans the
/// table into the escrow table and saves the scan's start as the
/// watermark (in the checkpoint table); the next (the table's clock 20
/// minutes on) applies only the changes DynamoDB exports since, staged in
/// the history bucket: puts written (the replaced state kept in the item
/// history first), the item deleted in the primary kept in escrow and
/// reported; a run right after asks DynamoDB for nothing.
#[tokio::test]
async fn a_table_job_applies_the_changes_since_its_watermark_and_keeps_deleted_items() {
    let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
    let escrow_session = admin(ESCROW).await;
    let escrow_ddb = escrow_sync_dynamodb::client(&escrow_session);
    let recovery = escrow_sync_dynamodb::client(&admin("333333333333").await);
    let es3 = s3(&escrow_session);
    let source = source_with_recovery(&primary_admin, 30).await;

    let history = unique("incr-history");
    create_bucket(&es3, &history, true).await;
    let dest = unique("escrow-incr-orders");
    let cp = unique("cp");
    let path = config_with_jobs(&format!(
        r#"[[dynamodb]]
name = "orders"
source_table = "{source}"
dest_table = "{dest}"
mode = "native-incremental"
history_bucket = "{history}"
checkpoint_table = "{cp}"
"#
    ));
    let cfg = path.to_str().unwrap();
    let run = || cli(&["run", "--config", cfg, "--output", "json"]);
    let text = |v: &Value| format!("{} {}", v["notes"], v["warnings"]);

    // First run: a full scan; its start is the watermark.
    let first = run();
    assert_eq!(first.code, 0, "{first:?}");
    let job = &first.json()["jobs"][0];
    assert!(text(job).contains("full scan: first run"), "{job}");
    assert!(text(job).contains("watermark"), "{job}");
    assert_eq!(job["copied"].as_u64(), Some(30), "{job}");
    let first_state = all_items(&primary_admin, &source).await;
    assert_eq!(all_items(&escrow_ddb, &dest).await, first_state);
    let between = next_second().await;

    // Twenty minutes on in the table's clock: one added, one replaced, one
    // updated, one deleted.
    four_changes(&primary_admin, &source).await;

    // Second run: the changes only, staged under the history bucket's
    // staging prefix; the deleted item stays in escrow.
    let second = run();
    assert_eq!(second.code, 0, "{second:?}");
    let job = &second.json()["jobs"][0];
    assert!(text(job).contains("incremental export of the changes"), "{job}");
    assert_eq!(job["copied"].as_u64(), Some(3), "{job}");
    assert_eq!(job["retained"].as_u64(), Some(1), "{job}");
    assert!(text(job).contains("kept in escrow"), "{job}");
    let staged: Vec<String> = keys(&es3, &history)
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("dynamodb-history/.staging/{source}/")))
        .collect();
    assert!(!staged.is_empty(), "DynamoDB's export is staged in the history bucket");
    let escrow_now = all_items(&escrow_ddb, &dest).await;
    let second_state = all_items(&primary_admin, &source).await;
    assert_eq!(escrow_now.len(), 31, "30 + 1 added, the deleted one kept");
    for (k, digest) in &second_state {
        assert_eq!(escrow_now.get(k), Some(digest), "{k}: escrow holds what the primary holds");
    }
    let deleted: Vec<&String> =
        first_state.keys().filter(|k| !second_state.contains_key(*k)).collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(escrow_now.get(deleted[0]), first_state.get(deleted[0]), "kept as it was");

    // The item history holds the state the change replaced: escrow as of
    // between the runs is the first state, item for item.
    let then_table = unique("restored-table-then");
    let out = restore(cfg, &["--target-table", &then_table, "--at", &between]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(all_items(&recovery, &then_table).await, first_state);

    // Right after: under DynamoDB's 15 minutes, nothing is asked for.
    let third = run();
    assert_eq!(third.code, 0, "{third:?}");
    let job = &third.json()["jobs"][0];
    assert!(text(job).contains("nothing exported"), "{job}");
    assert_eq!(job["copied"].as_u64(), Some(0), "{job}");
}
