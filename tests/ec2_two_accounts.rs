//! EBS snapshot escrow on the emulator, across two accounts (moto started
//! through xtask's launcher, which lets an account see and copy a snapshot
//! only while its owner shares it): a snapshot unshared stays invisible to
//! the escrow; a run shares it, copies it into the escrow encrypted with the
//! escrow key and tagged with its provenance, and removes the share; a
//! re-run copies nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};

use escrow_sync_core::{Executor, ExecutorOptions, Mode, Scope};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_kms_key, sessions};
use escrow_sync_ec2::{EbsSnapshotSink, EbsSnapshotSource};

async fn primary_snapshot(ec2: &aws_sdk_ec2::Client, backup: &str) -> String {
    let volume = ec2
        .create_volume()
        .availability_zone("us-east-1a")
        .size(8)
        .send()
        .await
        .expect("create a volume")
        .volume_id
        .expect("a volume id");
    ec2.create_snapshot()
        .volume_id(volume)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .tags(Tag::builder().key("backup").value(backup).build())
                .build(),
        )
        .send()
        .await
        .expect("create a snapshot")
        .snapshot_id
        .expect("a snapshot id")
}

async fn visible_to_escrow(ec2: &aws_sdk_ec2::Client, id: &str) -> bool {
    ec2.describe_snapshots().snapshot_ids(id).send().await.is_ok()
}

#[tokio::test]
async fn a_snapshot_is_shared_copied_with_the_escrow_key_and_unshared() {
    let primary_admin = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let escrow_admin_session = admin(ESCROW).await;
    let escrow_admin = escrow_sync_ec2::client(&escrow_admin_session);
    let tag = format!("run-{}", std::process::id());
    let selected = primary_snapshot(&primary_admin, &tag).await;
    let other = primary_snapshot(&primary_admin, "no").await;
    assert!(!visible_to_escrow(&escrow_admin, &selected).await, "unshared: invisible");

    let s = sessions().await;
    let key = create_kms_key(&escrow_admin_session).await;
    let source = EbsSnapshotSource::from_client(
        escrow_sync_ec2::client(&s.primary),
        escrow_sync_ec2::kms_client(&s.primary),
        "us-east-1",
        PRIMARY,
        ESCROW,
    )
    .with_tags(BTreeMap::from([("backup".to_string(), tag.clone())]));
    let sink = EbsSnapshotSink::from_client(escrow_sync_ec2::client(&s.escrow), "us-east-1")
        .with_kms_key_id(Some(key.clone()))
        .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(20));

    let run = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert!(!visible_to_escrow(&escrow_admin, &selected).await, "unshared after the copy");

    let copies = escrow_admin
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", escrow_sync_core::tags::SOURCE_SNAPSHOT_ID))
                .values(&selected)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshots
        .unwrap_or_default();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    assert_eq!(copy.encrypted(), Some(true));
    assert_eq!(copy.kms_key_id(), Some(key.as_str()));
    assert_eq!(copy.owner_id(), Some(ESCROW));
    let tags: BTreeMap<_, _> =
        copy.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or(""))).collect();
    assert_eq!(tags.get("escrow-sync:source-account"), Some(&PRIMARY));
    assert!(tags.contains_key("escrow-sync:copied-at"), "{tags:?}");

    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");

    // A run interrupted between the completed copy and the unshare leaves
    // the share: the next run, finding the copy in escrow, removes it.
    primary_admin
        .modify_snapshot_attribute()
        .snapshot_id(&selected)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        .operation_type(aws_sdk_ec2::types::OperationType::Add)
        .user_ids(ESCROW)
        .send()
        .await
        .unwrap();
    assert!(visible_to_escrow(&escrow_admin, &selected).await);
    let tidy = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((tidy.copied, tidy.skipped), (0, 1), "{tidy:?}");
    assert!(!visible_to_escrow(&escrow_admin, &selected).await, "the leftover share is gone");
    let verify = ex.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!(verify.missing, 0, "{verify:?}");
    assert!(!visible_to_escrow(&escrow_admin, &other).await, "the unselected one never shared");
}

#[tokio::test]
async fn the_emulator_shows_a_shared_snapshot_only_while_it_is_shared() {
    let primary = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let escrow = escrow_sync_ec2::client(&admin(ESCROW).await);
    let id = primary_snapshot(&primary, "x").await;
    let share = |add: bool| {
        let op = if add {
            aws_sdk_ec2::types::OperationType::Add
        } else {
            aws_sdk_ec2::types::OperationType::Remove
        };
        primary
            .modify_snapshot_attribute()
            .snapshot_id(&id)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .operation_type(op)
            .user_ids(ESCROW)
            .send()
    };
    let copy = || escrow.copy_snapshot().source_snapshot_id(&id).source_region("us-east-1").send();
    assert!(!visible_to_escrow(&escrow, &id).await);
    assert!(copy().await.is_err(), "an unshared snapshot cannot be copied");
    share(true).await.unwrap();
    assert!(visible_to_escrow(&escrow, &id).await);
    assert!(copy().await.is_ok(), "a shared one can");
    share(false).await.unwrap();
    assert!(!visible_to_escrow(&escrow, &id).await, "unsharing hides it again");
    assert!(copy().await.is_err());
}

#[tokio::test]
async fn the_binary_escrows_tagged_snapshots_from_an_ec2_job() {
    let primary_admin = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let tag = format!("cli-{}-{}", std::process::id(), escrow_sync_e2e::unique("t"));
    let id = primary_snapshot(&primary_admin, &tag).await;
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        r#"[[ec2]]
name = "volumes"
include = ["snapshots"]
tags = {{ backup = "{tag}" }}"#
    ));
    let cfg = config.to_str().unwrap();
    let plan = escrow_sync_e2e::cli(&["plan", "--config", cfg, "--output", "json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let j = &plan.json()["jobs"][0];
    assert_eq!((j["kind"].as_str(), j["copied"].as_u64()), (Some("ec2"), Some(1)), "{j}");
    assert_eq!(j["differences"][0]["key"].as_str(), Some(id.as_str()));
    let run = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["jobs"][0]["copied"].as_u64(), Some(1), "{}", run.stdout);
    let verify = escrow_sync_e2e::cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let again = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(again.json()["jobs"][0]["copied"].as_u64(), Some(0), "{}", again.stdout);

    let volumes = config.to_str().unwrap().to_string();
    std::fs::write(
        &volumes,
        std::fs::read_to_string(&volumes).unwrap().replace("[\"snapshots\"]", "[\"volumes\"]"),
    )
    .unwrap();
    let refused = escrow_sync_e2e::cli(&["run", "--config", &volumes]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("include \"volumes\" is not one of"), "{}", refused.stderr);
}

/// A new 1 GiB volume in the primary.
async fn new_volume(ec2: &aws_sdk_ec2::Client) -> String {
    ec2.create_volume()
        .availability_zone("us-east-1a")
        .size(1)
        .send()
        .await
        .expect("create a volume")
        .volume_id
        .expect("a volume id")
}

/// `n` snapshots of `volume`, tagged backup=`tag`, oldest first, a second
/// apart (start times are kept to the second, so "newest" is clear).
async fn snapshots_of(ec2: &aws_sdk_ec2::Client, volume: &str, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        ids.push(
            ec2.create_snapshot()
                .volume_id(volume)
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Snapshot)
                        .tags(Tag::builder().key("backup").value(tag).build())
                        .build(),
                )
                .send()
                .await
                .expect("create a snapshot")
                .snapshot_id
                .expect("a snapshot id"),
        );
    }
    ids
}

/// The escrow copies of `source`, by id.
async fn escrow_copies(ec2: &aws_sdk_ec2::Client, source: &str) -> Vec<String> {
    ec2.describe_snapshots()
        .owner_ids("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", escrow_sync_core::tags::SOURCE_SNAPSHOT_ID))
                .values(source)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshots
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| s.snapshot_id)
        .collect()
}

/// The tags of the escrow copies of `source`.
async fn escrow_copy_tags(
    ec2: &aws_sdk_ec2::Client,
    source: &str,
) -> Vec<BTreeMap<String, String>> {
    ec2.describe_snapshots()
        .owner_ids("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{}", escrow_sync_core::tags::SOURCE_SNAPSHOT_ID))
                .values(source)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshots
        .unwrap_or_default()
        .iter()
        .map(|s| {
            s.tags()
                .iter()
                .map(|t| (t.key().unwrap_or("").to_string(), t.value().unwrap_or("").to_string()))
                .collect()
        })
        .collect()
}

fn append(config: &std::path::Path, lines: &str) {
    std::fs::write(config, std::fs::read_to_string(config).unwrap() + lines).unwrap();
}

/// The `source` of each copy in a prune job's `field` list.
fn sources<'a>(job: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    job[field].as_array().unwrap().iter().filter_map(|c| c["source"].as_str()).collect()
}

#[tokio::test]
async fn prune_keeps_the_newest_copies_and_deletes_only_with_apply() {
    let primary_admin = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let escrow_admin = escrow_sync_ec2::client(&admin(ESCROW).await);
    let tag = escrow_sync_e2e::unique("prune");
    let volume = new_volume(&primary_admin).await;
    let ids = snapshots_of(&primary_admin, &volume, &tag, 2).await;
    let job = format!(
        "[[ec2]]\nname = \"{tag}\"\ninclude = [\"snapshots\"]\ntags = {{ backup = \"{tag}\" }}\n"
    );
    let key = create_kms_key(&admin(ESCROW).await).await;
    let config = escrow_sync_e2e::config_with_jobs(&job);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen("[escrow]\n", &format!("[escrow]\nkms_key_id = \"{key}\"\n"), 1);
    std::fs::write(&config, text).unwrap();
    let cfg = config.to_str().unwrap();
    let run = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.json()["jobs"][0]["copied"].as_u64(), Some(2), "{}", run.stdout);
    // Each copy records the job that made it: prune tells its copies by it.
    let tags = escrow_copy_tags(&escrow_admin, &ids[0]).await;
    assert_eq!(tags[0].get("escrow-sync:job"), Some(&tag), "{tags:?}");

    // Retention set afterwards: the older copy may go, the newest stays.
    // The copies are minutes old: keep_within_days 0 lets them go, and
    // deleting one of two is over the default max_delete_percent.
    append(&config, "keep_last = 1\nkeep_within_days = 0\nmax_delete_percent = 100\n");
    let dry = escrow_sync_e2e::cli(&["prune", "--config", cfg, "--output", "json"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let j = &dry.json()["jobs"][0];
    assert_eq!(dry.json()["apply"].as_bool(), Some(false));
    assert_eq!(sources(j, "deleted"), [ids[0].as_str()], "the newest copy stays: {j}");
    assert_eq!(j["findings"].as_array().map(Vec::len), Some(0), "{j}");
    assert_eq!(j["limits"]["max_delete_percent"].as_u64(), Some(100), "{j}");
    assert_eq!(escrow_copies(&escrow_admin, &ids[0]).await.len(), 1, "a dry run deletes nothing");
    let text = escrow_sync_e2e::cli(&["prune", "--config", cfg]);
    assert!(text.stdout.contains("would delete"), "{}", text.stdout);

    // A run copies the new one (the retention window leaves the older ones
    // of their volume alone), then prune --apply deletes the older copies.
    let newer = snapshots_of(&primary_admin, &volume, &tag, 1).await;
    let run = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let applied = escrow_sync_e2e::cli(&["prune", "--config", cfg, "--apply", "--output", "json"]);
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(escrow_copies(&escrow_admin, &ids[0]).await.is_empty(), "{}", applied.stdout);
    assert!(escrow_copies(&escrow_admin, &ids[1]).await.is_empty(), "{}", applied.stdout);
    assert_eq!(escrow_copies(&escrow_admin, &newer[0]).await.len(), 1, "newest of its volume");
    // Nothing the next run copies back, and verify stays clean.
    let again = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(again.json()["jobs"][0]["copied"].as_u64(), Some(0), "{}", again.stdout);
    assert_eq!(escrow_sync_e2e::cli(&["verify", "--config", cfg]).code, 0);
}

/// Issue 13: an intruder floods a volume with fresh snapshots. A run copies
/// only the newest `max_new_copies_per_source` (finding `mass-change`);
/// prune, which reads escrow only (it works with the primary unreachable),
/// keeps the pre-incident copies: young copies by keep_within_days, and a
/// prune over max_delete_percent deletes nothing (finding `prune-limit`,
/// exit 3) unless --accept-mass-delete.
#[tokio::test]
async fn a_flood_of_fresh_snapshots_neither_floods_escrow_nor_prunes_its_history() {
    let primary_admin = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let escrow_session = admin(ESCROW).await;
    let escrow_admin = escrow_sync_ec2::client(&escrow_session);
    let tag = escrow_sync_e2e::unique("flood");
    let manifests = escrow_sync_e2e::unique("flood-manifests");
    escrow_sync_e2e::create_bucket(&escrow_sync_e2e::s3(&escrow_session), &manifests, true).await;
    let volume = new_volume(&primary_admin).await;
    let before = snapshots_of(&primary_admin, &volume, &tag, 2).await;
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[ec2]]\nname = \"{tag}\"\ninclude = [\"snapshots\"]\ntags = {{ backup = \"{tag}\" }}\n"
    ));
    let text = std::fs::read_to_string(&config).unwrap();
    let text =
        text.replacen("[escrow]\n", &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"), 1);
    std::fs::write(&config, text).unwrap();
    let cfg = config.to_str().unwrap();
    let run = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["jobs"][0]["copied"].as_u64(), Some(2), "{}", run.stdout);

    // The flood: five fresh snapshots of the volume, tagged for backup.
    let flood = snapshots_of(&primary_admin, &volume, &tag, 5).await;
    let run = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    // Exit 3 once the lead's `run` exits 3 on a mass-change finding; until
    // then the held-back items make it 1.
    assert!(run.code == 3 || run.code == 1, "{run:?}");
    let j = &run.json()["jobs"][0];
    assert_eq!(j["copied"].as_u64(), Some(3), "the newest three only: {j}");
    let findings: Vec<_> = j["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"].as_str() == Some("mass-change"))
        .collect();
    assert_eq!(findings.len(), 1, "{j}");
    let problem = findings[0]["problem"].as_str().unwrap();
    assert!(problem.contains(&flood[0]) && problem.contains(&flood[1]), "{problem}");
    let held: Vec<&str> =
        j["failures"].as_array().unwrap().iter().filter_map(|f| f["key"].as_str()).collect();
    assert_eq!(held, [flood[0].as_str(), flood[1].as_str()], "{j}");
    for id in &flood[..2] {
        assert!(escrow_copies(&escrow_admin, id).await.is_empty(), "{id} held back");
    }
    for id in &flood[2..] {
        assert_eq!(escrow_copies(&escrow_admin, id).await.len(), 1, "{id} copied");
    }

    // Retention that would keep only the two newest copies. The latest run
    // manifest recorded the held-back items as failed: prune deletes nothing.
    append(&config, "keep_last = 2\n");
    let blocked = escrow_sync_e2e::cli(&["prune", "--config", cfg, "--apply", "--output", "json"]);
    assert_eq!(blocked.code, 3, "{blocked:?}");
    let j = &blocked.json()["jobs"][0];
    assert_eq!(j["verified"].as_bool(), Some(false), "{j}");
    assert!(j["notes"].to_string().contains("failed items"), "{j}");
    assert!(sources(j, "deleted").is_empty(), "{j}");
    // A run within the retention window has nothing new: a clean manifest.
    let run = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");

    // keep_within_days (default 7): every copy escrow made this week stays.
    let young = escrow_sync_e2e::cli(&["prune", "--config", cfg, "--apply", "--output", "json"]);
    assert_eq!(young.code, 0, "{young:?}");
    let j = &young.json()["jobs"][0];
    assert_eq!(j["verified"].as_bool(), Some(true), "{j}");
    assert!(sources(j, "deleted").is_empty(), "{j}");
    assert!(j["kept"].to_string().contains("keep_within_days"), "{j}");

    // Without that floor, keep_last = 2 would delete 3 of the job's 5
    // copies, the pre-incident ones among them: over max_delete_percent 25.
    append(&config, "keep_within_days = 0\n");
    let limited = escrow_sync_e2e::cli(&["prune", "--config", cfg, "--apply", "--output", "json"]);
    assert_eq!(limited.code, 3, "{limited:?}");
    let j = &limited.json()["jobs"][0];
    assert_eq!(j["findings"][0]["kind"].as_str(), Some("prune-limit"), "{j}");
    assert!(j["findings"][0]["problem"].as_str().unwrap().contains("3 of the job's 5"), "{j}");
    assert!(sources(j, "deleted").is_empty(), "{j}");
    for id in &before {
        assert_eq!(escrow_copies(&escrow_admin, id).await.len(), 1, "{id}: pre-incident kept");
    }

    // The same plan with the primary unreachable (no credentials for it
    // can be had: its reader role is replaced by a profile that does not
    // exist): a run fails, prune plans from escrow alone.
    let offline = config.with_file_name("primary-gone.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let primary = text
        .lines()
        .filter(|l| !l.starts_with("role_arn = \"arn:aws:iam::111111111111"))
        .filter(|l| !l.starts_with("external_id"))
        .collect::<Vec<_>>()
        .join("\n")
        .replacen("[primary]\n", "[primary]\nprofile = \"primary-gone\"\n", 1);
    std::fs::write(&offline, primary + "\n").unwrap();
    let gone = offline.to_str().unwrap();
    let refused = escrow_sync_e2e::cli(&["run", "--config", gone, "--output", "json"]);
    assert_eq!(refused.code, 2, "the primary is unreachable: {refused:?}");
    let dry = escrow_sync_e2e::cli(&[
        "prune",
        "--config",
        gone,
        "--accept-mass-delete",
        "--output",
        "json",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let j = &dry.json()["jobs"][0];
    let mut would = sources(j, "deleted");
    would.sort();
    let mut expected = vec![before[0].as_str(), before[1].as_str(), flood[2].as_str()];
    expected.sort();
    assert_eq!(would, expected, "{j}");

    // Accepted: the older copies go, the two newest stay.
    let applied = escrow_sync_e2e::cli(&[
        "prune",
        "--config",
        gone,
        "--apply",
        "--accept-mass-delete",
        "--output",
        "json",
    ]);
    assert_eq!(applied.code, 0, "{applied:?}");
    for id in [&before[0], &before[1], &flood[2]] {
        assert!(escrow_copies(&escrow_admin, id).await.is_empty(), "{id}: {}", applied.stdout);
    }
    for id in &flood[3..] {
        assert_eq!(escrow_copies(&escrow_admin, id).await.len(), 1, "{id} kept");
    }
}

/// The EBS Snapshot Locks of `ids` in the escrow: id to lock state.
async fn lock_states(ec2: &aws_sdk_ec2::Client, ids: &[String]) -> BTreeMap<String, String> {
    ec2.describe_locked_snapshots()
        .set_snapshot_ids(Some(ids.to_vec()))
        .send()
        .await
        .expect("describe locked snapshots")
        .snapshots()
        .iter()
        .filter_map(|s| Some((s.snapshot_id()?.to_string(), s.lock_state()?.as_str().to_string())))
        .collect()
}

/// Issue 17: `[[ec2]] lock`. Copies made before the job asked for a lock
/// are `unprotected` in verify; the next run locks them (then makes no lock
/// call while the locks are far from lapsing); prune keeps a locked copy,
/// naming its lock, where the keep_* rules would let it go; the lock holds
/// against the escrow account's own DeleteSnapshot. (moto models the lock
/// through xtask's patch; tests/crates/ec2 mocks pin AWS's request shapes.)
#[tokio::test]
async fn a_lock_protects_every_copy_from_the_next_run_on_and_prune_keeps_locked_copies() {
    let primary_admin = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let escrow_admin = escrow_sync_ec2::client(&admin(ESCROW).await);
    let tag = escrow_sync_e2e::unique("lock");
    let volume = new_volume(&primary_admin).await;
    let ids = snapshots_of(&primary_admin, &volume, &tag, 2).await;
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[ec2]]\nname = \"{tag}\"\ninclude = [\"snapshots\"]\ntags = {{ backup = \"{tag}\" }}\n"
    ));
    let cfg = config.to_str().unwrap();
    let run = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.json()["jobs"][0]["copied"].as_u64(), Some(2), "{}", run.stdout);
    let copies: Vec<String> =
        [escrow_copies(&escrow_admin, &ids[0]).await, escrow_copies(&escrow_admin, &ids[1]).await]
            .concat();
    assert_eq!(copies.len(), 2);
    assert!(lock_states(&escrow_admin, &copies).await.is_empty(), "no lock asked yet");

    // The job asks for a lock: the copies it made before are unprotected.
    append(&config, "lock = { mode = \"compliance\", days = 30, cool_off_hours = 1 }\n");
    let verify = escrow_sync_e2e::cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_ne!(verify.code, 0, "{verify:?}");
    let findings = verify.json()["jobs"][0]["findings"].clone();
    for copy in &copies {
        let problem = format!("escrow copy {copy}: it has no snapshot lock");
        assert!(
            findings.as_array().unwrap().iter().any(|f| f["kind"] == "unprotected"
                && f["problem"].as_str().unwrap().starts_with(&problem)),
            "{findings}"
        );
    }

    // The next run locks them; the one after makes no lock call.
    let run = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let notes = run.json()["jobs"][0]["notes"].to_string();
    assert!(notes.contains("locks: 2 escrow copies locked, 0 locks renewed"), "{notes}");
    let states = lock_states(&escrow_admin, &copies).await;
    assert_eq!(states.values().collect::<Vec<_>>(), ["compliance-cooloff"; 2], "{states:?}");
    let again = escrow_sync_e2e::cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(!again.json()["jobs"][0]["notes"].to_string().contains("locks:"), "{}", again.stdout);
    let verify = escrow_sync_e2e::cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");

    // keep_last = 1 lets the older copy go, but its lock keeps it.
    append(&config, "keep_last = 1\nkeep_within_days = 0\nmax_delete_percent = 100\n");
    let pruned = escrow_sync_e2e::cli(&["prune", "--config", cfg, "--apply", "--output", "json"]);
    assert_eq!(pruned.code, 0, "{pruned:?}");
    let j = &pruned.json()["jobs"][0];
    assert!(sources(j, "deleted").is_empty(), "{j}");
    assert!(j["failures"].as_array().unwrap().is_empty(), "never tried: {j}");
    assert!(j["kept"].to_string().contains("locked (compliance) until "), "{j}");
    assert_eq!(escrow_copies(&escrow_admin, &ids[0]).await.len(), 1, "the locked copy stays");
    let text = escrow_sync_e2e::cli(&["prune", "--config", cfg]);
    assert!(text.stdout.contains("locked (compliance) until"), "{}", text.stdout);

    // The escrow account itself cannot delete a locked copy.
    let refused = escrow_admin.delete_snapshot().snapshot_id(&copies[0]).send().await;
    let code = refused
        .as_ref()
        .err()
        .and_then(|e| aws_sdk_ec2::error::ProvideErrorMetadata::code(e).map(str::to_string));
    assert_eq!(code.as_deref(), Some("SnapshotLocked"), "{refused:?}");
}
