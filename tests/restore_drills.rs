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

/// `escrow-sync restore` of `job` into the recovery account, JSON out.
fn restore_job(config: &str, job: &str, extra: &[&str]) -> escrow_sync_e2e::Outcome {
    let mut args = vec![
        "restore",
        "--config",
        config,
        "--job",
        job,
        "--target-role-arn",
        RECOVERY_ROLE,
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

fn restore(config: &str, extra: &[&str]) -> escrow_sync_e2e::Outcome {
    restore_job(config, "assets", extra)
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
    let table_restore = |extra: &[&str]| restore_job(cfg, "orders", extra);

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

/// An export job: drills of the generation of each of two runs (chosen
/// with `--at`) load the table as it was, from `schema.json` (keys and
/// indexes) and the data files; a data file altered in escrow is caught
/// by the manifest's SHA-256 and the drill still deletes its table.
#[tokio::test]
async fn export_generations_are_drilled_at_two_times_and_an_altered_file_is_refused() {
    use escrow_sync_e2e::ddb::{create_source, item, put_items};
    let primary = escrow_sync_dynamodb::client(&admin(escrow_sync_e2e::PRIMARY).await);
    let recovery = escrow_sync_dynamodb::client(&admin(RECOVERY).await);
    let escrow = s3(&admin(ESCROW).await);
    let source = create_source(&primary).await;
    put_items(&primary, &source, (0..50).map(item)).await;
    let bucket = unique("exports");
    escrow_sync_e2e::create_bucket(&escrow, &bucket, true).await;
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[dynamodb]]\nname = \"orders\"\nsource_table = \"{source}\"\ndest_bucket = \"{bucket}\"\n\
         dest_prefix = \"dynamodb/\"\nsegments = 2\ncheckpoint_table = \"{}\"\n",
        unique("cp")
    ));
    let cfg = config.to_str().unwrap();
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    // --at has whole seconds: one second after the first generation started.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first = escrow_sync_core::rfc3339(SystemTime::now());
    put_items(&primary, &source, (50..80).map(item)).await;
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    let table_restore = |extra: &[&str]| restore_job(cfg, "orders", extra);

    for (at, items) in [(Some(first.as_str()), 50), (None, 80)] {
        let drill_table = unique("drill-gen");
        let mut extra = vec!["--target-table", drill_table.as_str(), "--drill"];
        if let Some(at) = at {
            extra.extend(["--at", at]);
        }
        let drill = table_restore(&extra);
        assert_eq!(drill.code, 0, "{drill:?}");
        let r = &drill.json()["restore"];
        assert!(r["source"].as_str().unwrap().contains("export generation"), "{r}");
        assert_eq!(r["restored"].as_u64(), Some(items), "{r}");
        assert_eq!(r["drill"]["verified"].as_u64(), Some(items), "{r}");
        assert_eq!(r["drill"]["mismatched"], serde_json::json!([]), "{r}");
        assert_eq!(r["drill"]["cleaned_target"], true, "{r}");
        assert!(recovery.describe_table().table_name(&drill_table).send().await.is_err());
    }

    // Apply the latest generation; the indexes come from schema.json.
    let target = unique("recovered-gen");
    let applied = table_restore(&["--target-table", &target, "--apply"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let t = recovery.describe_table().table_name(&target).send().await.unwrap();
    let t = t.table().unwrap();
    assert_eq!((t.global_secondary_indexes().len(), t.local_secondary_indexes().len()), (1, 1));
    assert_eq!(
        escrow_sync_e2e::ddb::all_items(&recovery, &target).await,
        escrow_sync_e2e::ddb::all_items(&primary, &source).await
    );

    // A data file of the latest generation altered in escrow (a new
    // version over it): refused by its SHA-256, and the drill cleans up.
    let keys = escrow_sync_e2e::keys(&escrow, &bucket).await;
    let file = keys.iter().filter(|k| k.contains("/data/")).max().unwrap().clone();
    escrow
        .put_object()
        .bucket(&bucket)
        .key(&file)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"not the data"))
        .send()
        .await
        .unwrap();
    let drill_table = unique("drill-gen");
    let altered = table_restore(&["--target-table", &drill_table, "--drill"]);
    assert_ne!(altered.code, 0, "{altered:?}");
    assert!(altered.stderr.contains("altered"), "{}", altered.stderr);
    assert!(recovery.describe_table().table_name(&drill_table).send().await.is_err());
}

/// The escrow copy of an EBS snapshot: a drill shares it with the recovery
/// account, copies it there, checks the copy and deletes it, and the share
/// is gone again; `--apply` alone shares it; `--apply --copy` leaves a copy
/// in the recovery account, tagged with the escrow copy it came from.
#[tokio::test]
async fn an_ebs_snapshot_is_shared_copied_into_the_recovery_account_and_drilled() {
    use aws_sdk_ec2::types::Filter;
    let primary = escrow_sync_ec2::client(&admin(escrow_sync_e2e::PRIMARY).await);
    let escrow = escrow_sync_ec2::client(&admin(ESCROW).await);
    let recovery = escrow_sync_ec2::client(&admin(RECOVERY).await);
    let volume = primary
        .create_volume()
        .availability_zone("us-east-1a")
        .size(2)
        .send()
        .await
        .unwrap()
        .volume_id
        .unwrap();
    let snapshot =
        primary.create_snapshot().volume_id(volume).send().await.unwrap().snapshot_id.unwrap();
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[ec2]]\nname = \"volumes\"\ninclude = [\"snapshots\"]\nids = [\"{snapshot}\"]\n"
    ));
    let cfg = config.to_str().unwrap();
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    let escrow_copy = escrow
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            Filter::builder().name("tag:escrow-sync:source-snapshot-id").values(&snapshot).build(),
        )
        .send()
        .await
        .unwrap()
        .snapshots()[0]
        .snapshot_id()
        .unwrap()
        .to_string();
    let shared_with = |id: String| {
        let escrow = escrow.clone();
        async move {
            let out = escrow
                .describe_snapshot_attribute()
                .snapshot_id(id)
                .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                .send()
                .await
                .unwrap();
            out.create_volume_permissions()
                .iter()
                .filter_map(|p| p.user_id().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    let recovered = || {
        let recovery = recovery.clone();
        let escrow_copy = escrow_copy.clone();
        async move {
            recovery
                .describe_snapshots()
                .owner_ids("self")
                .filters(
                    Filter::builder()
                        .name("tag:escrow-sync:restored-from")
                        .values(escrow_copy)
                        .build(),
                )
                .send()
                .await
                .unwrap()
                .snapshots()
                .to_vec()
        }
    };
    let restore = |extra: &[&str]| restore_job(cfg, "volumes", extra);

    let dry = restore(&[]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert_eq!(dry.json()["restore"]["restored"].as_u64(), Some(1));
    assert!(shared_with(escrow_copy.clone()).await.is_empty(), "a dry run shares nothing");

    let drill = restore(&["--drill"]);
    assert_eq!(drill.code, 0, "{drill:?}");
    let r = &drill.json()["restore"];
    assert_eq!((r["kind"].as_str(), r["restored"].as_u64()), (Some("ec2"), Some(1)), "{r}");
    assert_eq!(r["drill"]["verified"].as_u64(), Some(1), "{r}");
    assert_eq!(r["drill"]["cleaned_items"].as_u64(), Some(1), "{r}");
    assert!(recovered().await.is_empty(), "the drill deleted its copy");
    assert!(shared_with(escrow_copy.clone()).await.is_empty(), "the share is removed");

    let shared = restore(&["--apply"]);
    assert_eq!(shared.code, 0, "{shared:?}");
    assert_eq!(shared_with(escrow_copy.clone()).await, [RECOVERY]);
    assert!(recovered().await.is_empty(), "--apply alone only shares");

    let copied = restore(&["--apply", "--copy"]);
    assert_eq!(copied.code, 0, "{copied:?}");
    let held = recovered().await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].volume_size(), Some(2));
    assert!(shared_with(escrow_copy).await.is_empty(), "the share went once copied");

    let refused = restore(&["--target-bucket", "x"]);
    assert_eq!(refused.code, 2, "{refused:?}");
}
