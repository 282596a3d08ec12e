//! The incident escrow-sync exists for, played end to end on the emulator:
//! someone holding the primary's admin rewrites and deletes the data and
//! waits for the next scheduled run to carry the damage into escrow.
//!
//! - The scheduled run stops at the mass-change breaker: exit 3, a finding
//!   of kind `mass-change` (in the JSON report and the run manifest), at most
//!   `max_change_percent` of escrow's objects rewritten, the rest held back.
//! - `run --accept-mass-change` lets the change through (escrow keeps every
//!   earlier version: nothing is lost either way).
//! - A second run while another holds the job's lease exits 2 naming the
//!   holder and changes nothing.
//! - `restore --at` a time before the incident brings the pre-incident
//!   bucket back into a recovery account (333333333333), byte for byte,
//!   deleted keys included, from escrow alone.
//! - A table job with item history: the same incident, restored item for
//!   item; an insider deleting history objects is caught by `verify`.
//!
//! The snapshot flood (`prune` steered by fresh snapshots) is played in
//! `tests/ec2_two_accounts.rs`, a planted export generation in
//! `tests/dynamodb_exports.rs`, and overlapping runs in `tests/leases.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use escrow_sync_e2e::{BucketPair, admin, cli, get, keys, s3, unique};

const RECOVERY: &str = "333333333333";
const RECOVERY_ROLE: &str = "arn:aws:iam::333333333333:role/recovery";

/// Random-looking bytes (an encrypted object), from a seed.
fn ciphertext(seed: usize, len: usize) -> Vec<u8> {
    let mut x = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A config with one `[[s3]]` job named `assets` and a manifest bucket.
async fn config(pair: &BucketPair) -> String {
    let manifests = unique("hostile-manifests");
    escrow_sync_e2e::create_bucket(&pair.escrow, &manifests, true).await;
    let jobs = format!(
        "[[s3]]\nname = \"assets\"\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\n",
        pair.source_bucket, pair.dest_bucket
    );
    let path = escrow_sync_e2e::config_with_jobs(&jobs);
    let text = std::fs::read_to_string(&path).unwrap();
    let text =
        text.replacen("[escrow]\n", &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"), 1);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_rewritten_and_partly_deleted_bucket_trips_the_breaker_and_restores_from_before() {
    let pair = BucketPair::new("hostile").await;
    let mut before: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..60 {
        let key = format!("data/{i:03}.bin");
        let body = format!("pre-incident object {i}").into_bytes();
        pair.put(&key, body.clone()).await;
        before.insert(key, body);
    }
    let cfg = config(&pair).await;
    let first = cli(&["run", "--config", &cfg, "--output", "json"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.json()["jobs"][0]["copied"].as_u64(), Some(60));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pre_incident = escrow_sync_core::rfc3339(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The attacker overwrites every object with random bytes and deletes a
    // third of them.
    for (i, key) in before.keys().enumerate() {
        pair.put(key, ciphertext(i, 64)).await;
    }
    for key in before.keys().step_by(3) {
        pair.primary.delete_object().bucket(&pair.source_bucket).key(key).send().await.unwrap();
    }

    // A second run while another holds the job's lease (a cron overlap, or
    // a run started by hand) changes nothing and names the holder.
    let manifests = manifest_bucket(&cfg);
    let lease_key = "escrow-sync/manifests/leases/assets.json";
    let until = escrow_sync_core::rfc3339(SystemTime::now() + Duration::from_secs(600));
    let held = serde_json::json!({
        "job": "assets", "host": "other-runner", "pid": 4242, "run_id": "r-overlap",
        "started": escrow_sync_core::rfc3339(SystemTime::now()), "expires": until,
    });
    pair.escrow
        .put_object()
        .bucket(&manifests)
        .key(lease_key)
        .body(held.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let overlapped = cli(&["run", "--config", &cfg, "--output", "json"]);
    assert_eq!(overlapped.code, 2, "{overlapped:?}");
    assert!(overlapped.stderr.contains("other-runner"), "{}", overlapped.stderr);
    assert_eq!(still_intact(&pair, &before).await, 60, "a run without the lease changed escrow");
    pair.escrow.delete_object().bucket(&manifests).key(lease_key).send().await.unwrap();

    // plan says a run would stop.
    let plan = cli(&["plan", "--config", &cfg, "--output", "json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stdout.contains("mass-change breaker"), "{}", plan.stdout);

    // The scheduled run: exit 3, a mass-change finding, at most 25 % of
    // escrow's 60 objects rewritten.
    let scheduled = cli(&["run", "--config", &cfg, "--output", "json"]);
    assert_eq!(scheduled.code, 3, "{scheduled:?}");
    let job = &scheduled.json()["jobs"][0];
    let findings = job["findings"].as_array().unwrap();
    let finding = findings.iter().find(|f| f["kind"] == "mass-change").expect("mass-change");
    // Measured against the 40 escrow objects the primary still lists: the
    // 20 it deleted cannot dilute the rewrite.
    assert!(finding["problem"].as_str().unwrap().contains("40 of 40"), "{finding}");
    let (copied, held) = (job["copied"].as_u64().unwrap(), job["held_back"].as_u64().unwrap());
    assert!(copied <= 10, "copied {copied} of 40 rewritten objects");
    assert_eq!(copied + held, 40, "{job}");
    let intact = still_intact(&pair, &before).await;
    assert!(intact >= 50, "only {intact} of 60 escrow objects still hold their content");
    // The text report says it too, and the run manifest records the finding.
    let manifest_text = manifest_texts(&cfg).await;
    assert!(manifest_text.contains("mass-change"), "the run manifest lacks the finding");

    // Accepted: the rest goes through; escrow keeps the earlier versions.
    let accepted = cli(&["run", "--config", &cfg, "--accept-mass-change", "--output", "json"]);
    assert_eq!(accepted.code, 0, "{accepted:?}");
    assert_eq!(accepted.json()["jobs"][0]["copied"].as_u64(), Some(held));

    // Restore the bucket as it was before the incident into the recovery
    // account, from escrow alone, and compare byte for byte.
    let target = unique("hostile-restored");
    let out = cli(&[
        "restore",
        "--config",
        &cfg,
        "--job",
        "assets",
        "--target-role-arn",
        RECOVERY_ROLE,
        "--target-bucket",
        &target,
        "--at",
        &pre_incident,
        "--apply",
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let recovery = s3(&admin(RECOVERY).await);
    let restored = keys(&recovery, &target).await;
    assert_eq!(restored.len(), before.len(), "{restored:?}");
    for (key, body) in &before {
        let got = get(&recovery, &target, key).await;
        assert_eq!(got.as_deref(), Some(body.as_slice()), "{key} differs after the restore");
    }
}

/// How many of `before`'s objects escrow still holds as they were.
async fn still_intact(pair: &BucketPair, before: &BTreeMap<String, Vec<u8>>) -> usize {
    let mut intact = 0;
    for (key, body) in before {
        if pair.escrow_get(key).await.as_deref() == Some(body.as_slice()) {
            intact += 1;
        }
    }
    intact
}

/// The config's manifest bucket.
fn manifest_bucket(cfg: &str) -> String {
    let text = std::fs::read_to_string(cfg).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("manifest_bucket = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string()
}

/// Every run manifest's text in the config's manifest bucket.
async fn manifest_texts(cfg: &str) -> String {
    let bucket = manifest_bucket(cfg);
    let escrow = s3(&admin(escrow_sync_e2e::ESCROW).await);
    let mut all = String::new();
    for key in keys(&escrow, &bucket).await {
        let body = get(&escrow, &bucket, &key).await.unwrap_or_default();
        all.push_str(&String::from_utf8_lossy(&body));
    }
    all
}

/// A table-to-table job with item history: the attacker rewrites every
/// item and deletes a third; whatever the runs after that copy, `restore
/// --at` a time before the incident brings the table back item for item,
/// from escrow alone, because every state escrow held was made durable in
/// the history bucket before a run replaced it.
#[tokio::test]
async fn a_rewritten_table_is_restored_item_for_item_from_its_history() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use escrow_sync_e2e::ddb::{all_items, create_source, item, put_items};
    let primary = escrow_sync_dynamodb::client(&admin(escrow_sync_e2e::PRIMARY).await);
    let recovery = escrow_sync_dynamodb::client(&admin(RECOVERY).await);
    let escrow_s3 = s3(&admin(escrow_sync_e2e::ESCROW).await);
    let source = create_source(&primary).await;
    put_items(&primary, &source, (0..60).map(item)).await;
    let history = unique("hostile-history");
    escrow_sync_e2e::create_bucket(&escrow_s3, &history, true).await;
    let manifests = unique("hostile-table-manifests");
    escrow_sync_e2e::create_bucket(&escrow_s3, &manifests, true).await;
    let dest = unique("escrow-orders");
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[dynamodb]]\nname = \"orders\"\nsource_table = \"{source}\"\ndest_table = \"{dest}\"\n\
         segments = 2\ncheckpoint_table = \"{}\"\nhistory_bucket = \"{history}\"\n",
        unique("cp")
    ));
    let text = std::fs::read_to_string(&config).unwrap();
    let text =
        text.replacen("[escrow]\n", &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"), 1);
    std::fs::write(&config, text).unwrap();
    let cfg = config.to_str().unwrap();
    let first = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stdout.contains("item history"), "{}", first.stdout);
    let before = all_items(&primary, &source).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pre_incident = escrow_sync_core::rfc3339(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Every item rewritten, a third deleted.
    let rewritten = (0..60).map(|i| {
        let mut it = item(i);
        it.insert("status".into(), AttributeValue::S("ENCRYPTED".into()));
        it.insert("note".into(), AttributeValue::S(format!("pay to unlock {i}")));
        it
    });
    put_items(&primary, &source, rewritten).await;
    for i in (0..60).step_by(3) {
        let it = item(i);
        primary
            .delete_item()
            .table_name(&source)
            .key("customer", it["customer"].clone())
            .key("seq", it["seq"].clone())
            .send()
            .await
            .unwrap();
    }
    // The scheduled run stops at the breaker; the accepted one copies the
    // rest. History keeps every state either way.
    let scheduled = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(scheduled.code, 3, "{scheduled:?}");
    assert!(scheduled.stdout.contains("mass-change"), "{}", scheduled.stdout);
    let accepted = cli(&["run", "--config", cfg, "--accept-mass-change"]);
    assert_eq!(accepted.code, 0, "{accepted:?}");
    // verify checks the history is unbroken up to what the table holds.
    let verified = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verified.code, 0, "{verified:?}");
    assert!(verified.stdout.contains("event(s) for 60 item(s)"), "{}", verified.stdout);

    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--config",
            cfg,
            "--job",
            "orders",
            "--target-role-arn",
            RECOVERY_ROLE,
            "--at",
            &pre_incident,
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let target = unique("recovered-orders");
    let out = restore(&["--target-table", &target, "--apply"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("item history event"), "{}", out.stdout);
    assert_eq!(all_items(&recovery, &target).await, before, "restored table differs");
    // A drill at the same time compares what it restored, item for item.
    let drill = restore(&["--target-table", &unique("drill-orders"), "--drill"]);
    assert_eq!(drill.code, 0, "{drill:?}");
    let r = &drill.json()["restore"];
    assert_eq!(r["drill"]["verified"].as_u64(), Some(60), "{r}");
    // An insider deletes the newest history objects: the states the last
    // run wrote are no longer accounted for, and verify says so.
    let listed = escrow_s3.list_objects_v2().bucket(&history).send().await.unwrap();
    let newest = listed.contents().iter().filter_map(|o| o.last_modified()).max().copied();
    for o in listed.contents().iter().filter(|o| o.last_modified().copied() == newest) {
        escrow_s3.delete_object().bucket(&history).key(o.key().unwrap()).send().await.unwrap();
    }
    let gapped = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(gapped.code, 3, "{gapped:?}");
    assert!(gapped.stdout.contains("history-gap"), "{}", gapped.stdout);
    // As of now, only the 40 items the primary still holds; with
    // --include-deleted, the 20 it deleted too (escrow kept them).
    let now = escrow_sync_core::rfc3339(SystemTime::now());
    let count = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--config",
            cfg,
            "--job",
            "orders",
            "--target-role-arn",
            RECOVERY_ROLE,
            "--target-table",
            "not-created",
            "--at",
            &now,
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = cli(&args);
        assert_eq!(out.code, 0, "{out:?}");
        out.json()["restore"]["restored"].as_u64()
    };
    assert_eq!(count(&[]), Some(40));
    assert_eq!(count(&["--include-deleted"]), Some(60));
    // Before the first run, escrow held nothing.
    let empty = cli(&[
        "restore",
        "--config",
        cfg,
        "--job",
        "orders",
        "--target-role-arn",
        RECOVERY_ROLE,
        "--target-table",
        &unique("x"),
        "--at",
        "2020-01-01T00:00:00Z",
        "--output",
        "json",
    ]);
    assert_eq!(empty.code, 0, "{empty:?}");
    assert_eq!(empty.json()["restore"]["restored"].as_u64(), Some(0), "{}", empty.stdout);
}
