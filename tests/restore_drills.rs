//! `escrow-sync restore` of an S3 job on the emulator, into a third account
//! (333333333333, the recovery account; its role is assumed with the escrow
//! credentials): a dry run changes nothing; drills at two different times
//! restore what escrow held then, compare it byte for byte and delete what
//! they created; `--apply` restores into a bucket of the recovery account
//! and a second one finds everything there; bad input exits 2 and changes
//! nothing.

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
    assert_eq!(r["drill"]["cleaned_bucket"], true, "{r}");
    assert!(r["drill"]["cleaned_objects"].as_u64().unwrap() >= 2, "{r}");
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
