//! `escrow-sync restore` on the emulator, into a third account
//! (333333333333, the recovery account; its role is assumed with the escrow
//! credentials): a dry run changes nothing; drills at two different times
//! restore what escrow held then, compare it byte for byte and delete what
//! they created; `--apply` restores into a bucket of the recovery account
//! and a second one finds everything there; bad input exits 2 and changes
//! nothing. The same for a DynamoDB table-to-table job.

use std::time::{Duration, SystemTime};

use escrow_sync_e2e::{BucketPair, ESCROW, admin, cli, get, s3, unique};

const RECOVERY: &str = "333333333333";
const RECOVERY_ROLE: &str = "arn:aws:iam::333333333333:role/recovery";

fn restore(config: &str, extra: &[&str]) -> escrow_sync_e2e::Outcome {
    let mut args = vec![
        "restore",
        "--config",
        config,
        "--job",
        "assets",
        "--target-role-arn",
        RECOVERY_ROLE,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

#[tokio::test]
async fn s3_drills_at_two_times_restore_what_escrow_held_then_and_clean_up() {
    let pair = BucketPair::new("restore").await;
    pair.put("docs/a.txt", "version one of a").await;
    pair.put("docs/b.txt", "b, deleted later").await;
    let jobs = format!(
        "[[s3]]\nname = \"assets\"\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\n",
        pair.source_bucket, pair.dest_bucket
    );
    let config = escrow_sync_e2e::config_with_jobs(&jobs);
    let cfg = config.to_str().unwrap();
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    // S3 times have whole seconds: the first run's copies are at or before
    // `first`, the second run's after it.
    let first = escrow_sync_core::rfc3339(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pair.put("docs/a.txt", "version two of a, longer").await;
    pair.put("docs/c.txt", "c, new").await;
    pair.primary
        .delete_object()
        .bucket(&pair.source_bucket)
        .key("docs/b.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);

    let recovery = s3(&admin(RECOVERY).await);
    let exists = |bucket: String| {
        let recovery = recovery.clone();
        async move { recovery.head_bucket().bucket(bucket).send().await.is_ok() }
    };

    // A dry run: what would be restored, nothing created.
    let target = unique("recovered");
    let dry = restore(cfg, &["--target-bucket", &target]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let r = &dry.json()["restore"];
    assert_eq!((r["mode"].as_str(), r["restored"].as_u64()), (Some("dry-run"), Some(3)), "{r}");
    assert_eq!(r["target_account"], RECOVERY);
    assert!(!exists(target.clone()).await, "a dry run creates nothing");

    // A drill as escrow was after the first run: a (first version) and b.
    let drill_bucket = unique("drill");
    let drill = restore(cfg, &["--target-bucket", &drill_bucket, "--at", &first, "--drill"]);
    assert_eq!(drill.code, 0, "{drill:?}");
    let r = &drill.json()["restore"];
    assert_eq!(r["restored"].as_u64(), Some(2), "{r}");
    assert_eq!(r["drill"]["verified"].as_u64(), Some(2), "{r}");
    assert_eq!(r["drill"]["mismatched"], serde_json::json!([]), "{r}");
    assert_eq!(r["drill"]["cleaned_target"], true, "{r}");
    assert!(r["drill"]["cleaned_items"].as_u64().unwrap() >= 2, "{r}");
    assert!(!exists(drill_bucket.clone()).await, "the drill deleted its bucket");

    // A drill of the newest state: a (second version), b (escrow keeps it),
    // c.
    let drill_bucket = unique("drill");
    let drill = restore(cfg, &["--target-bucket", &drill_bucket, "--drill"]);
    assert_eq!(drill.code, 0, "{drill:?}");
    let r = &drill.json()["restore"];
    assert_eq!((r["restored"].as_u64(), r["drill"]["verified"].as_u64()), (Some(3), Some(3)));
    assert!(!exists(drill_bucket).await);

    // --apply as of the first run into the recovery account.
    let applied = restore(cfg, &["--target-bucket", &target, "--at", &first, "--apply"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert_eq!(applied.json()["restore"]["restored"].as_u64(), Some(2));
    let body = |key: &'static str| {
        let (recovery, target) = (recovery.clone(), target.clone());
        async move { get(&recovery, &target, key).await.map(|b| b.to_vec()) }
    };
    assert_eq!(body("docs/a.txt").await.as_deref(), Some(&b"version one of a"[..]));
    assert_eq!(body("docs/b.txt").await.as_deref(), Some(&b"b, deleted later"[..]));
    assert_eq!(body("docs/c.txt").await, None, "c came after that time");
    let owner = recovery.get_bucket_acl().bucket(&target).send().await.unwrap();
    assert!(owner.owner().is_some(), "the bucket is the recovery account's");
    let again = restore(cfg, &["--target-bucket", &target, "--at", &first, "--apply"]);
    let r = &again.json()["restore"];
    assert_eq!((r["restored"].as_u64(), r["already_there"].as_u64()), (Some(0), Some(2)), "{r}");

    // Bad input: exit 2, nothing changed.
    let into_escrow = cli(&[
        "restore",
        "--config",
        cfg,
        "--job",
        "assets",
        "--target-role-arn",
        &format!("arn:aws:iam::{ESCROW}:role/escrow-operator"),
        "--target-bucket",
        &unique("nope"),
        "--apply",
    ]);
    assert_eq!(into_escrow.code, 2, "{into_escrow:?}");
    assert!(into_escrow.stderr.contains("never into the escrow"), "{}", into_escrow.stderr);
    let bad_time = restore(cfg, &["--target-bucket", &target, "--at", "last tuesday", "--apply"]);
    assert_eq!(bad_time.code, 2);
    assert!(bad_time.stderr.contains("--at"), "{}", bad_time.stderr);
    let existing = restore(cfg, &["--target-bucket", &target, "--drill"]);
    assert_eq!(existing.code, 2, "a drill never writes into an existing bucket: {existing:?}");
    assert_eq!(body("docs/c.txt").await, None, "nothing changed");
    let unknown = cli(&[
        "restore",
        "--config",
        cfg,
        "--job",
        "nope",
        "--target-role-arn",
        RECOVERY_ROLE,
        "--target-bucket",
        &target,
    ]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);
}

/// A table-to-table job: a drill restores the escrow table into a new table
/// of the recovery account (keys and indexes of the escrow table), finds
/// every item equal to escrow's and deletes the table; `--apply` restores
/// into a table of the recovery account; `--at` is refused for a table copy
/// (the escrow table holds its latest state only).
#[tokio::test]
async fn a_table_copy_is_drilled_and_restored_into_the_recovery_account() {
    use escrow_sync_e2e::ddb::{all_items, create_source, item, put_items};
    let primary = escrow_sync_dynamodb::client(&admin(escrow_sync_e2e::PRIMARY).await);
    let recovery = escrow_sync_dynamodb::client(&admin(RECOVERY).await);
    let source = create_source(&primary).await;
    put_items(&primary, &source, (0..120).map(item)).await;
    let dest = unique("escrow-orders");
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[dynamodb]]\nname = \"orders\"\nsource_table = \"{source}\"\ndest_table = \"{dest}\"\n\
         segments = 2\ncheckpoint_table = \"{}\"\n",
        unique("cp")
    ));
    let cfg = config.to_str().unwrap();
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    let table_restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--config",
            cfg,
            "--job",
            "orders",
            "--target-role-arn",
            RECOVERY_ROLE,
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };

    let drill_table = unique("drill-orders");
    let drill = table_restore(&["--target-table", &drill_table, "--drill"]);
    assert_eq!(drill.code, 0, "{drill:?}");
    let r = &drill.json()["restore"];
    assert_eq!((r["kind"].as_str(), r["restored"].as_u64()), (Some("dynamodb"), Some(120)), "{r}");
    assert_eq!(r["drill"]["verified"].as_u64(), Some(120), "{r}");
    assert_eq!(r["drill"]["mismatched"], serde_json::json!([]), "{r}");
    assert_eq!(r["drill"]["cleaned_target"], true, "{r}");
    assert!(
        recovery.describe_table().table_name(&drill_table).send().await.is_err(),
        "the drill deleted its table"
    );

    let target = unique("recovered-orders");
    let applied = table_restore(&["--target-table", &target, "--apply"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert_eq!(all_items(&recovery, &target).await, all_items(&primary, &source).await);
    let described = recovery.describe_table().table_name(&target).send().await.unwrap();
    let t = described.table().unwrap();
    assert_eq!(t.global_secondary_indexes().len(), 1, "the GSI came along");
    assert_eq!(t.local_secondary_indexes().len(), 1, "the LSI came along");
    let again = table_restore(&["--target-table", &target, "--apply"]);
    let r = &again.json()["restore"];
    assert_eq!((r["restored"].as_u64(), r["already_there"].as_u64()), (Some(0), Some(120)), "{r}");

    let at = table_restore(&["--target-table", &unique("x"), "--at", "2026-11-28T00:00:00Z"]);
    assert_eq!(at.code, 2, "{at:?}");
    assert!(at.stderr.contains("--at"), "{}", at.stderr);
    let existing = table_restore(&["--target-table", &target, "--drill"]);
    assert_eq!(existing.code, 2, "a drill never writes into an existing table: {existing:?}");
}
