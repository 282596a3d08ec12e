//! `escrow-sync restore` on the emulator, into a third account
//! (333333333333, the recovery account; its role is assumed with the escrow
//! credentials): a dry run changes nothing; drills at two different times
//! restore what escrow held then, compare it byte for byte and delete what
//! they created; `--apply` restores into a bucket of the recovery account
//! and a second one finds everything there; bad input exits 2 and changes
//! nothing. The same for a DynamoDB table-to-table job, export generations,
//! EBS snapshots, AMIs (launch permission and backing snapshots shared),
//! RDS and Aurora snapshots (copied by ARN under the recovery account's own
//! key), and Redshift snapshots (shared only: Redshift cannot copy across
//! accounts, so `--copy` and share-only jobs are refused with exit 2).
//!
//! moto's patched launcher (xtask/src/moto_patch_*.py) lets the recovery
//! account see and copy a shared AMI or RDS snapshot, and see a shared
//! Redshift snapshot, only while the share names it. What it cannot do —
//! enforce the escrow key's policy on the recovery account, copies that
//! stay pending or fail, an AMI with more than one block device — is
//! covered by the mocks in crates/{ec2,rds,redshift}/tests/restore_mocks.rs.

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

/// With run manifests, `--at` restores only the keys the primary held at
/// the newest run that finished by then: escrow keeps what the primary
/// deleted, but the primary of that time did not have it.
#[tokio::test]
async fn an_s3_restore_at_a_time_leaves_out_what_the_primary_had_deleted_by_then() {
    let pair = BucketPair::new("restore-manifest").await;
    pair.put("docs/a.txt", "a").await;
    pair.put("docs/b.txt", "b, deleted before the second run").await;
    let manifests = unique("restore-manifests");
    escrow_sync_e2e::create_bucket(&pair.escrow, &manifests, true).await;
    let jobs = format!(
        "[[s3]]\nname = \"assets\"\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\n",
        pair.source_bucket, pair.dest_bucket
    );
    let config = escrow_sync_e2e::config_with_jobs(&jobs);
    let text = std::fs::read_to_string(&config).unwrap();
    let text =
        text.replacen("[escrow]\n", &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"), 1);
    std::fs::write(&config, text).unwrap();
    let cfg = config.to_str().unwrap();
    // Before any run finished, there is no manifest to go by: a note says so.
    let before = escrow_sync_core::rfc3339(SystemTime::now() - Duration::from_secs(3600));
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first = escrow_sync_core::rfc3339(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pair.primary
        .delete_object()
        .bucket(&pair.source_bucket)
        .key("docs/b.txt")
        .send()
        .await
        .unwrap();
    pair.put("docs/c.txt", "c").await;
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = escrow_sync_core::rfc3339(SystemTime::now());

    let dry = |at: &str, extra: &[&str]| {
        let mut args = vec!["--target-bucket", "not-created", "--at", at];
        args.extend_from_slice(extra);
        let out = restore(cfg, &args);
        assert_eq!(out.code, 0, "{out:?}");
        out.json()["restore"].clone()
    };
    // At the first run: a and b.
    let r = dry(&first, &[]);
    assert_eq!(r["restored"].as_u64(), Some(2), "{r}");
    assert!(r["notes"].to_string().contains("only the 2 keys the primary held then"), "{r}");
    // At the second: a and c; escrow still holds b, the primary did not.
    let drill_bucket = unique("drill");
    let out = restore(cfg, &["--target-bucket", &drill_bucket, "--at", &second, "--drill"]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = &out.json()["restore"];
    assert_eq!(
        (r["restored"].as_u64(), r["drill"]["verified"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    // --include-deleted: b too.
    assert_eq!(dry(&second, &["--include-deleted"])["restored"].as_u64(), Some(3));
    // Before the first run finished: no manifest, every key escrow held then
    // (none yet).
    let r = dry(&before, &[]);
    assert!(r["notes"].to_string().contains("no run manifest"), "{r}");
    assert_eq!(r["restored"].as_u64(), Some(0), "{r}");
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
    // "Newest" is pinned to the drill's start, so that a run copying a new
    // version meanwhile changes neither the restore nor the comparison.
    assert!(r["source"].as_str().unwrap().contains(" as of "), "{r}");
    assert_eq!(r["at"], serde_json::Value::Null, "{r}");
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

/// One of moto's default (Amazon-owned) Linux AMIs.
async fn default_linux_ami(ec2: &aws_sdk_ec2::Client) -> String {
    let images =
        ec2.describe_images().owners("amazon").send().await.unwrap().images.unwrap_or_default();
    images
        .into_iter()
        .find(|i| {
            !i.platform().is_some_and(|p| p.as_str().eq_ignore_ascii_case("windows"))
                && i.product_codes().is_empty()
        })
        .and_then(|i| i.image_id)
        .expect("a default AMI")
}

/// The escrow copy of an AMI: a dry run shares nothing; a drill shares the
/// escrow AMI and its backing snapshot with the recovery account, copies
/// it there, checks the copy's block devices, deregisters it and deletes
/// its snapshot, and removes both shares; `--apply` alone shares both;
/// `--apply --copy` leaves an available copy in the recovery account,
/// tagged with the escrow AMI it came from, and removes the shares.
#[tokio::test]
async fn an_ami_is_shared_with_its_snapshots_copied_into_the_recovery_account_and_drilled() {
    use aws_sdk_ec2::types::{Filter, ImageAttributeName, SnapshotAttributeName};
    let primary = escrow_sync_ec2::client(&admin(escrow_sync_e2e::PRIMARY).await);
    let escrow = escrow_sync_ec2::client(&admin(ESCROW).await);
    let recovery = escrow_sync_ec2::client(&admin(RECOVERY).await);
    let base = default_linux_ami(&primary).await;
    let instance = primary
        .run_instances()
        .image_id(base)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap()
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    let image = primary
        .create_image()
        .instance_id(&instance)
        .name(unique("restore-image"))
        .send()
        .await
        .unwrap()
        .image_id
        .unwrap();
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[ec2]]\nname = \"images\"\ninclude = [\"images\"]\nids = [\"{image}\"]\n"
    ));
    let cfg = config.to_str().unwrap();
    let run = cli(&["run", "--config", cfg]);
    assert_eq!(run.code, 0, "{run:?}");
    let escrow_image = escrow
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("tag:escrow-sync:source-image-id").values(&image).build())
        .send()
        .await
        .unwrap()
        .images()[0]
        .clone();
    let escrow_id = escrow_image.image_id().unwrap().to_string();
    let escrow_snapshot = escrow_image.block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.snapshot_id())
        .unwrap()
        .to_string();
    let launchers = || {
        let (escrow, id) = (escrow.clone(), escrow_id.clone());
        async move {
            let out = escrow
                .describe_image_attribute()
                .image_id(id)
                .attribute(ImageAttributeName::LaunchPermission)
                .send()
                .await
                .unwrap();
            out.launch_permissions()
                .iter()
                .filter_map(|p| p.user_id().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    let volume_users = || {
        let (escrow, id) = (escrow.clone(), escrow_snapshot.clone());
        async move {
            let out = escrow
                .describe_snapshot_attribute()
                .snapshot_id(id)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .send()
                .await
                .unwrap();
            out.create_volume_permissions()
                .iter()
                .filter_map(|p| p.user_id().map(str::to_string))
                .collect::<Vec<_>>()
        }
    };
    let restored_from =
        |name: &str| Filter::builder().name(format!("tag:{name}")).values(&escrow_id).build();
    let recovered_images = || {
        let (recovery, filter) = (recovery.clone(), restored_from("escrow-sync:restored-from"));
        async move {
            recovery
                .describe_images()
                .owners("self")
                .filters(filter)
                .send()
                .await
                .unwrap()
                .images()
                .to_vec()
        }
    };
    let recovered_snapshots = || {
        let (recovery, filter) = (recovery.clone(), restored_from("escrow-sync:restored-from"));
        async move {
            recovery
                .describe_snapshots()
                .owner_ids("self")
                .filters(filter)
                .send()
                .await
                .unwrap()
                .snapshots()
                .len()
        }
    };
    let restore = |extra: &[&str]| restore_job(cfg, "images", extra);

    let dry = restore(&[]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let r = &dry.json()["restore"];
    assert_eq!((r["mode"].as_str(), r["restored"].as_u64()), (Some("dry-run"), Some(1)), "{r}");
    assert!(r["source"].as_str().unwrap().starts_with("ami://escrow/"), "{r}");
    assert!(launchers().await.is_empty(), "a dry run shares nothing");

    let drill = restore(&["--drill"]);
    assert_eq!(drill.code, 0, "{drill:?}");
    let r = &drill.json()["restore"];
    assert_eq!((r["kind"].as_str(), r["restored"].as_u64()), (Some("ec2"), Some(1)), "{r}");
    assert_eq!(r["drill"]["verified"].as_u64(), Some(1), "{r}");
    assert_eq!(r["drill"]["mismatched"], serde_json::json!([]), "{r}");
    assert_eq!(r["drill"]["cleaned_items"].as_u64(), Some(1), "{r}");
    assert_eq!(r["drill"]["cleaned_target"], true, "{r}");
    assert!(recovered_images().await.is_empty(), "the drill deregistered its copy");
    assert_eq!(recovered_snapshots().await, 0, "and deleted the copy's snapshot");
    assert!(launchers().await.is_empty(), "the launch permission is removed");
    assert!(volume_users().await.is_empty(), "the snapshot's share is removed");

    let shared = restore(&["--apply"]);
    assert_eq!(shared.code, 0, "{shared:?}");
    assert_eq!(launchers().await, [RECOVERY]);
    assert_eq!(volume_users().await, [RECOVERY], "the backing snapshot is shared too");
    assert!(recovered_images().await.is_empty(), "--apply alone only shares");

    let copied = restore(&["--apply", "--copy"]);
    assert_eq!(copied.code, 0, "{copied:?}");
    let held = recovered_images().await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].state(), Some(&aws_sdk_ec2::types::ImageState::Available));
    assert_eq!(held[0].block_device_mappings().len(), escrow_image.block_device_mappings().len());
    assert_eq!(recovered_snapshots().await, 1, "the copy's snapshot is tagged too");
    assert!(launchers().await.is_empty(), "the shares went once copied");
    assert!(volume_users().await.is_empty());
}

/// The escrow copies of an RDS DB snapshot and an Aurora cluster snapshot
/// (both encrypted with the escrow key): a dry run names them and the key
/// grant the recovery account needs, and `--at` before the run finds
/// none; a drill shares each (the `restore` attribute), copies it into the
/// recovery account by its ARN, checks status, storage and engine, deletes
/// the copies and removes the shares; `--apply` alone shares them;
/// `--apply --copy` leaves tagged, encrypted copies and removes the shares.
#[tokio::test]
async fn rds_and_aurora_snapshots_are_shared_copied_into_the_recovery_account_and_drilled() {
    let primary_session = admin(escrow_sync_e2e::PRIMARY).await;
    let escrow_session = admin(ESCROW).await;
    let primary = escrow_sync_rds::client(&primary_session);
    let escrow = escrow_sync_rds::client(&escrow_session);
    let recovery = escrow_sync_rds::client(&admin(RECOVERY).await);
    let escrow_key = escrow_sync_e2e::create_kms_key(&escrow_session).await;
    let primary_key = escrow_sync_e2e::create_kms_key(&primary_session).await;
    let instance = unique("restoredb");
    primary
        .create_db_instance()
        .db_instance_identifier(&instance)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .allocated_storage(20)
        .master_username("admin1")
        .master_user_password("not-a-secret-1")
        .send()
        .await
        .unwrap();
    let db_snapshot = unique("nightly");
    primary
        .create_db_snapshot()
        .db_instance_identifier(&instance)
        .db_snapshot_identifier(&db_snapshot)
        .send()
        .await
        .unwrap();
    let cluster = unique("restoreaurora");
    primary
        .create_db_cluster()
        .db_cluster_identifier(&cluster)
        .engine("aurora-postgresql")
        .master_username("admin1")
        .master_user_password("not-a-secret-1")
        .storage_encrypted(true)
        .kms_key_id(&primary_key)
        .send()
        .await
        .unwrap();
    let cluster_snapshot = unique("weekly");
    primary
        .create_db_cluster_snapshot()
        .db_cluster_identifier(&cluster)
        .db_cluster_snapshot_identifier(&cluster_snapshot)
        .send()
        .await
        .unwrap();
    let config = escrow_sync_e2e::write_config(&format!(
        "[escrow]\nregion = \"us-east-1\"\nrole_arn = \"{}\"\naccount_id = \"{ESCROW}\"\n\
         kms_key_id = \"{escrow_key}\"\n\n[primary]\naccount_id = \"{}\"\nrole_arn = \"{}\"\n\
         external_id = \"test-external-id\"\n\n[[rds]]\nname = \"databases\"\n\
         ids = [\"{db_snapshot}\", \"{cluster_snapshot}\"]\n",
        escrow_sync_e2e::ESCROW_ROLE,
        escrow_sync_e2e::PRIMARY,
        escrow_sync_e2e::READER_ROLE,
    ));
    let cfg = config.to_str().unwrap();
    let run = cli(&["run", "--config", cfg]);
    assert_eq!(run.code, 0, "{run:?}");
    let escrow_db = escrow_sync_rds::escrow_identifier(&db_snapshot);
    let escrow_cluster = escrow_sync_rds::escrow_identifier(&cluster_snapshot);
    let shares = || {
        let (escrow, db, cl) = (escrow.clone(), escrow_db.clone(), escrow_cluster.clone());
        async move {
            let db = escrow
                .describe_db_snapshot_attributes()
                .db_snapshot_identifier(db)
                .send()
                .await
                .unwrap();
            let cl = escrow
                .describe_db_cluster_snapshot_attributes()
                .db_cluster_snapshot_identifier(cl)
                .send()
                .await
                .unwrap();
            let restore_values = |values: Vec<(Option<String>, Vec<String>)>| {
                values
                    .into_iter()
                    .filter(|(name, _)| name.as_deref() == Some("restore"))
                    .flat_map(|(_, v)| v)
                    .collect::<Vec<_>>()
            };
            let db = restore_values(
                db.db_snapshot_attributes_result()
                    .unwrap()
                    .db_snapshot_attributes()
                    .iter()
                    .map(|a| {
                        (a.attribute_name().map(str::to_string), a.attribute_values().to_vec())
                    })
                    .collect(),
            );
            let cl = restore_values(
                cl.db_cluster_snapshot_attributes_result()
                    .unwrap()
                    .db_cluster_snapshot_attributes()
                    .iter()
                    .map(|a| {
                        (a.attribute_name().map(str::to_string), a.attribute_values().to_vec())
                    })
                    .collect(),
            );
            (db, cl)
        }
    };
    // The recovery account's copies, found by the tag naming the escrow
    // copy's ARN.
    let recovered = || {
        let (recovery, escrow_db, escrow_cluster) =
            (recovery.clone(), escrow_db.clone(), escrow_cluster.clone());
        async move {
            let db: Vec<_> = recovery
                .describe_db_snapshots()
                .snapshot_type("manual")
                .send()
                .await
                .unwrap()
                .db_snapshots()
                .iter()
                .filter(|s| {
                    s.tag_list().iter().any(|t| {
                        t.key() == Some("escrow-sync:restored-from")
                            && t.value().is_some_and(|v| v.ends_with(&format!(":{escrow_db}")))
                    })
                })
                .cloned()
                .collect();
            let cl: Vec<_> = recovery
                .describe_db_cluster_snapshots()
                .snapshot_type("manual")
                .send()
                .await
                .unwrap()
                .db_cluster_snapshots()
                .iter()
                .filter(|s| {
                    s.tag_list().iter().any(|t| {
                        t.key() == Some("escrow-sync:restored-from")
                            && t.value().is_some_and(|v| v.ends_with(&format!(":{escrow_cluster}")))
                    })
                })
                .cloned()
                .collect();
            (db, cl)
        }
    };
    let restore = |extra: &[&str]| restore_job(cfg, "databases", extra);

    let dry = restore(&[]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let r = &dry.json()["restore"];
    assert_eq!((r["kind"].as_str(), r["restored"].as_u64()), (Some("rds"), Some(2)), "{r}");
    let notes = r["notes"].to_string();
    assert!(notes.contains("kms:CreateGrant") && notes.contains(&escrow_key), "{notes}");
    assert_eq!(shares().await, (vec![], vec![]), "a dry run shares nothing");
    let before = restore(&["--at", "2000-01-01T00:00:00Z"]);
    assert_eq!(before.json()["restore"]["restored"].as_u64(), Some(0), "{before:?}");

    let drill = restore(&["--drill"]);
    assert_eq!(drill.code, 0, "{drill:?}");
    let r = &drill.json()["restore"];
    assert_eq!(r["restored"].as_u64(), Some(2), "{r}");
    assert_eq!(r["drill"]["verified"].as_u64(), Some(2), "{r}");
    assert_eq!(r["drill"]["mismatched"], serde_json::json!([]), "{r}");
    assert_eq!(r["drill"]["cleaned_items"].as_u64(), Some(2), "{r}");
    assert_eq!(r["drill"]["cleaned_target"], true, "{r}");
    let (db, cl) = recovered().await;
    assert!(db.is_empty() && cl.is_empty(), "the drill deleted its copies: {db:?} {cl:?}");
    assert_eq!(shares().await, (vec![], vec![]), "the shares are removed");

    let shared = restore(&["--apply"]);
    assert_eq!(shared.code, 0, "{shared:?}");
    let recovery_account = vec![RECOVERY.to_string()];
    assert_eq!(shares().await, (recovery_account.clone(), recovery_account));
    let (db, cl) = recovered().await;
    assert!(db.is_empty() && cl.is_empty(), "--apply alone only shares");

    let copied = restore(&["--apply", "--copy"]);
    assert_eq!(copied.code, 0, "{copied:?}");
    let (db, cl) = recovered().await;
    assert_eq!((db.len(), cl.len()), (1, 1), "{db:?} {cl:?}");
    assert_eq!((db[0].engine(), db[0].allocated_storage()), (Some("postgres"), Some(20)));
    assert_eq!(db[0].encrypted(), Some(true), "under the recovery account's own key");
    assert_eq!(cl[0].engine(), Some("aurora-postgresql"));
    assert_eq!(shares().await, (vec![], vec![]), "the shares went once copied");
}

/// An independent escrow copy of a Redshift snapshot: a dry run shares
/// nothing; a drill shares it with the recovery account, which sees it
/// (DescribeClusterSnapshots with OwnerAccount), then revokes the share;
/// `--apply` shares it, and the recovery account restores a cluster from
/// the share; `--copy` is refused (Redshift cannot copy across accounts),
/// and so is a share-only job, whose escrow holds no snapshot of its own.
#[tokio::test]
async fn a_redshift_escrow_snapshot_is_shared_with_the_recovery_account_and_drilled() {
    use aws_sdk_redshift::types::Tag;
    let primary = escrow_sync_redshift::client(&admin(escrow_sync_e2e::PRIMARY).await);
    let escrow = escrow_sync_redshift::client(&admin(ESCROW).await);
    let recovery = escrow_sync_redshift::client(&admin(RECOVERY).await);
    let cluster = unique("restoresales");
    primary
        .create_cluster()
        .cluster_identifier(&cluster)
        .node_type("ra3.xlplus")
        .cluster_type("multi-node")
        .number_of_nodes(2)
        .master_username("admin")
        .master_user_password("Passw0rd1")
        .send()
        .await
        .unwrap();
    let snapshot = format!("{cluster}-weekly");
    primary
        .create_cluster_snapshot()
        .cluster_identifier(&cluster)
        .snapshot_identifier(&snapshot)
        .tags(Tag::builder().key("backup").value("true").build())
        .send()
        .await
        .unwrap();
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[redshift]]\nname = \"warehouse\"\nids = [\"{snapshot}\"]\nindependent_copy = true\n\n\
         [[redshift]]\nname = \"shared\"\nids = [\"{snapshot}\"]\n"
    ));
    let cfg = config.to_str().unwrap();
    let run = cli(&["run", "--config", cfg, "--job", "warehouse"]);
    assert_eq!(run.code, 0, "{run:?}");
    let escrow_snapshot = escrow
        .describe_cluster_snapshots()
        .snapshot_type("manual")
        .tag_keys("escrow-sync:source-snapshot-id")
        .send()
        .await
        .unwrap()
        .snapshots()
        .iter()
        .find(|s| {
            s.owner_account().is_none_or(|o| o == ESCROW)
                && s.tags().iter().any(|t| {
                    t.key() == Some("escrow-sync:source-snapshot-id")
                        && t.value() == Some(snapshot.as_str())
                })
        })
        .and_then(|s| s.snapshot_identifier())
        .expect("the escrow copy")
        .to_string();
    let visible = || {
        let (recovery, id) = (recovery.clone(), escrow_snapshot.clone());
        async move {
            recovery
                .describe_cluster_snapshots()
                .owner_account(ESCROW)
                .snapshot_identifier(id)
                .send()
                .await
                .is_ok()
        }
    };
    let restore = |extra: &[&str]| restore_job(cfg, "warehouse", extra);

    let dry = restore(&[]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let r = &dry.json()["restore"];
    assert_eq!((r["kind"].as_str(), r["restored"].as_u64()), (Some("redshift"), Some(1)), "{r}");
    assert!(!visible().await, "a dry run shares nothing");

    let drill = restore(&["--drill"]);
    assert_eq!(drill.code, 0, "{drill:?}");
    let r = &drill.json()["restore"];
    assert_eq!(r["drill"]["verified"].as_u64(), Some(1), "{r}");
    assert_eq!(r["drill"]["mismatched"], serde_json::json!([]), "{r}");
    assert_eq!(r["drill"]["cleaned_items"].as_u64(), Some(1), "{r}");
    assert_eq!(r["drill"]["cleaned_target"], true, "{r}");
    assert!(!visible().await, "the drill revoked the share");

    let shared = restore(&["--apply"]);
    assert_eq!(shared.code, 0, "{shared:?}");
    assert!(visible().await, "--apply shares the escrow snapshot");
    let restored_cluster = unique("recovered");
    recovery
        .restore_from_cluster_snapshot()
        .cluster_identifier(&restored_cluster)
        .snapshot_identifier(&escrow_snapshot)
        .owner_account(ESCROW)
        .send()
        .await
        .expect("the recovery account restores a cluster from the share");
    recovery
        .delete_cluster()
        .cluster_identifier(&restored_cluster)
        .skip_final_cluster_snapshot(true)
        .send()
        .await
        .unwrap();

    let copy = restore(&["--apply", "--copy"]);
    assert_eq!(copy.code, 2, "{copy:?}");
    assert!(copy.stderr.contains("restores a cluster from the share"), "{}", copy.stderr);
    let share_only = restore_job(cfg, "shared", &["--drill"]);
    assert_eq!(share_only.code, 2, "{share_only:?}");
    assert!(share_only.stderr.contains("share-only"), "{}", share_only.stderr);
}

/// The generic snapshot restore of escrow-sync-core over `Ec2Restore`, on
/// the emulator: what `restore --drill` of an `[[ec2]]` job does, called as
/// a library with the escrow and recovery sessions — the escrow copy
/// shared, copied into the recovery account, checked, the copy deleted and
/// the share removed.
#[tokio::test]
async fn the_generic_snapshot_restore_drills_an_ebs_copy_as_a_library() {
    use aws_sdk_ec2::types::Filter;
    use escrow_sync_core::snapshot::{SnapshotRestoreRequest, restore};
    use escrow_sync_ec2::restore::Ec2Restore;

    let primary = escrow_sync_ec2::client(&admin(escrow_sync_e2e::PRIMARY).await);
    let (escrow_session, recovery_session) = (admin(ESCROW).await, admin(RECOVERY).await);
    let escrow = escrow_sync_ec2::client(&escrow_session);
    let recovery = escrow_sync_ec2::client(&recovery_session);
    let volume = primary
        .create_volume()
        .availability_zone("us-east-1a")
        .size(3)
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
    assert_eq!(cli(&["run", "--config", config.to_str().unwrap()]).code, 0);
    let escrow_copy = escrow
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            Filter::builder()
                .name(format!("tag:{}", escrow_sync_core::tags::SOURCE_SNAPSHOT_ID))
                .values(&snapshot)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshots()[0]
        .snapshot_id()
        .unwrap()
        .to_string();
    let kind =
        Ec2Restore::new(&escrow_session, &recovery_session, "us-east-1", escrow_sync_e2e::PRIMARY)
            .with_selection(std::slice::from_ref(&snapshot), true, false)
            .with_wait(Duration::from_secs(120), Duration::from_millis(100));

    let plan = restore(&kind, &SnapshotRestoreRequest::new("volumes")).await.unwrap();
    assert_eq!((plan.restored, plan.bytes), (1, 3 << 30), "{plan:?}");
    assert_eq!(plan.target, format!("ebs://{RECOVERY}/us-east-1"));

    let out =
        restore(&kind, &SnapshotRestoreRequest::new("volumes").with_drill(true)).await.unwrap();
    assert!(out.failed.is_empty(), "{out:?}");
    let drill = out.drill.unwrap();
    assert_eq!((drill.verified, drill.cleaned_items, drill.cleaned_target), (1, 1, true));
    assert!(drill.mismatched.is_empty(), "{:?}", drill.mismatched);
    let left = recovery
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            Filter::builder()
                .name(format!("tag:{}", escrow_sync_core::tags::RESTORED_FROM))
                .values(&escrow_copy)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(left.snapshots().is_empty(), "the drill deleted its copy: {left:?}");
    let shares = escrow
        .describe_snapshot_attribute()
        .snapshot_id(&escrow_copy)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .unwrap();
    assert!(shares.create_volume_permissions().is_empty(), "the share is removed");
}

/// The generic snapshot restore over `RdsRestore`, on the emulator: a DB
/// snapshot's escrow copy shared, copied by its ARN into the recovery
/// account, checked, the copy deleted and the share removed.
#[tokio::test]
async fn the_generic_snapshot_restore_drills_an_rds_copy_as_a_library() {
    use escrow_sync_core::snapshot::{SnapshotRestoreRequest, restore};
    use escrow_sync_rds::RdsKind;
    use escrow_sync_rds::restore::RdsRestore;

    let primary_session = admin(escrow_sync_e2e::PRIMARY).await;
    let escrow_session = admin(ESCROW).await;
    let recovery_session = admin(RECOVERY).await;
    let primary = escrow_sync_rds::client(&primary_session);
    let escrow = escrow_sync_rds::client(&escrow_session);
    let recovery = escrow_sync_rds::client(&recovery_session);
    let escrow_key = escrow_sync_e2e::create_kms_key(&escrow_session).await;
    let instance = unique("librarydb");
    primary
        .create_db_instance()
        .db_instance_identifier(&instance)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .allocated_storage(20)
        .master_username("admin1")
        .master_user_password("not-a-secret-1")
        .send()
        .await
        .unwrap();
    let db_snapshot = unique("librarynightly");
    primary
        .create_db_snapshot()
        .db_instance_identifier(&instance)
        .db_snapshot_identifier(&db_snapshot)
        .send()
        .await
        .unwrap();
    let config = escrow_sync_e2e::write_config(&format!(
        "[escrow]\nregion = \"us-east-1\"\nrole_arn = \"{}\"\naccount_id = \"{ESCROW}\"\n\
         kms_key_id = \"{escrow_key}\"\n\n[primary]\naccount_id = \"{}\"\nrole_arn = \"{}\"\n\
         external_id = \"test-external-id\"\n\n[[rds]]\nname = \"databases\"\n\
         ids = [\"{db_snapshot}\"]\n",
        escrow_sync_e2e::ESCROW_ROLE,
        escrow_sync_e2e::PRIMARY,
        escrow_sync_e2e::READER_ROLE,
    ));
    let run = cli(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let escrow_db = escrow_sync_rds::escrow_identifier(&db_snapshot);

    let kind =
        RdsRestore::new(&escrow_session, &recovery_session, "us-east-1", escrow_sync_e2e::PRIMARY)
            .with_ids(std::slice::from_ref(&db_snapshot))
            .with_kinds(vec![RdsKind::Db])
            .with_wait(Duration::from_secs(120), Duration::from_millis(100));
    let plan = restore(&kind, &SnapshotRestoreRequest::new("databases")).await.unwrap();
    assert_eq!((plan.restored, plan.bytes), (1, 20 << 30), "{plan:?}");
    assert_eq!(plan.source, "rds://escrow/us-east-1");

    let out =
        restore(&kind, &SnapshotRestoreRequest::new("databases").with_drill(true)).await.unwrap();
    assert!(out.failed.is_empty(), "{out:?}");
    assert!(
        out.notes.iter().any(|n| n.starts_with(&format!("copied escrow db snapshot {escrow_db}"))),
        "{:?}",
        out.notes
    );
    let drill = out.drill.unwrap();
    assert_eq!((drill.verified, drill.cleaned_items, drill.cleaned_target), (1, 1, true));
    let held = recovery.describe_db_snapshots().snapshot_type("manual").send().await.unwrap();
    let prefix = format!("restored-{escrow_db}");
    assert!(
        held.db_snapshots()
            .iter()
            .all(|s| !s.db_snapshot_identifier().unwrap_or_default().starts_with(&prefix)),
        "the drill deleted its copy: {held:?}"
    );
    let attrs = escrow
        .describe_db_snapshot_attributes()
        .db_snapshot_identifier(&escrow_db)
        .send()
        .await
        .unwrap();
    let shared: Vec<String> = attrs
        .db_snapshot_attributes_result()
        .map(|r| r.db_snapshot_attributes())
        .unwrap_or_default()
        .iter()
        .filter(|a| a.attribute_name() == Some("restore"))
        .flat_map(|a| a.attribute_values().to_vec())
        .collect();
    assert!(!shared.contains(&RECOVERY.to_string()), "the share is removed: {shared:?}");
}

/// The generic snapshot restore over `RedshiftRestore`, on the emulator:
/// the escrow snapshot (an independent copy) shared, seen by the recovery
/// account, and the share revoked; `--copy` refused.
#[tokio::test]
async fn the_generic_snapshot_restore_drills_a_redshift_share_as_a_library() {
    use aws_sdk_redshift::types::Tag;
    use escrow_sync_core::snapshot::{SnapshotRestoreRequest, restore};
    use escrow_sync_redshift::restore::RedshiftRestore;

    let primary = escrow_sync_redshift::client(&admin(escrow_sync_e2e::PRIMARY).await);
    let (escrow_session, recovery_session) = (admin(ESCROW).await, admin(RECOVERY).await);
    let recovery = escrow_sync_redshift::client(&recovery_session);
    let cluster = unique("librarysales");
    primary
        .create_cluster()
        .cluster_identifier(&cluster)
        .node_type("ra3.xlplus")
        .cluster_type("multi-node")
        .number_of_nodes(2)
        .master_username("admin")
        .master_user_password("Passw0rd1")
        .send()
        .await
        .unwrap();
    let snapshot = format!("{cluster}-weekly");
    primary
        .create_cluster_snapshot()
        .cluster_identifier(&cluster)
        .snapshot_identifier(&snapshot)
        .tags(Tag::builder().key("backup").value("true").build())
        .send()
        .await
        .unwrap();
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[redshift]]\nname = \"warehouse\"\nids = [\"{snapshot}\"]\nindependent_copy = true\n"
    ));
    let run = cli(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");

    let kind = RedshiftRestore::new(
        &escrow_session,
        &recovery_session,
        "us-east-1",
        escrow_sync_e2e::PRIMARY,
    )
    .with_ids(std::slice::from_ref(&snapshot));
    let copy = SnapshotRestoreRequest::new("warehouse").with_apply(true).with_copy(true);
    assert!(restore(&kind, &copy).await.is_err(), "Redshift cannot copy across accounts");

    let out =
        restore(&kind, &SnapshotRestoreRequest::new("warehouse").with_drill(true)).await.unwrap();
    assert!(out.failed.is_empty(), "{out:?}");
    assert_eq!(out.restored, 1, "{out:?}");
    let drill = out.drill.unwrap();
    assert_eq!((drill.verified, drill.cleaned_items, drill.cleaned_target), (1, 1, true));
    assert!(drill.mismatched.is_empty(), "{:?}", drill.mismatched);
    let escrow_id = out
        .notes
        .iter()
        .find_map(|n| n.strip_prefix(&format!("account {RECOVERY} saw escrow snapshot ")))
        .and_then(|rest| rest.split(' ').next())
        .expect("the seen note names the escrow snapshot")
        .to_string();
    let visible = recovery
        .describe_cluster_snapshots()
        .owner_account(ESCROW)
        .snapshot_identifier(&escrow_id)
        .send()
        .await
        .is_ok();
    assert!(!visible, "the drill revoked the share of {escrow_id}");
}
