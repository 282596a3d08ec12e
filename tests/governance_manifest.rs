//! Run manifests in escrow and `verify --offline` on the emulator: every
//! run writes one complete manifest (header, every item with its outcome,
//! job summaries, end line) into the escrow's manifest bucket under the
//! escrow key; `verify --offline` checks escrow against the latest one with
//! escrow credentials only, and still works when the primary is gone.

use escrow_sync_core::manifest::Manifest;
use escrow_sync_e2e::{BucketPair, ESCROW, admin, cli, create_bucket, create_kms_key, s3, unique};
use escrow_sync_s3::ManifestStore;

use escrow_sync_core::ItemOutcome;

/// The manifests in `bucket` (keys, oldest first).
/// The run manifests in `bucket` (the jobs' leases, under
/// `<manifest_prefix>leases/`, left out).
async fn manifests(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = client.list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut keys: Vec<String> = out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .filter(|k| !k.contains("/leases/"))
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn each_run_records_a_complete_manifest_and_verify_offline_needs_only_escrow() {
    let pair = BucketPair::new("manifest").await;
    for i in 0..5 {
        pair.put(&format!("data/{i}.txt"), format!("object {i}")).await;
    }
    let escrow_session = admin(ESCROW).await;
    let escrow = s3(&escrow_session);
    let manifest_bucket = unique("manifests");
    create_bucket(&escrow, &manifest_bucket, true).await;
    let key = create_kms_key(&escrow_session).await;
    let jobs = format!(
        "[[s3]]\nname = \"assets\"\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\n",
        pair.source_bucket, pair.dest_bucket
    );
    let config = escrow_sync_e2e::config_with_jobs(&jobs);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[escrow]\n",
        &format!(
            "[escrow]\nkms_key_id = \"{key}\"\nmanifest_bucket = \"{manifest_bucket}\"\n\
             manifest_prefix = \"runs/\"\n"
        ),
        1,
    );
    std::fs::write(&config, &text).unwrap();
    let cfg = config.to_str().unwrap();

    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let keys = manifests(&escrow, &manifest_bucket).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("runs/") && keys[0].ends_with(".jsonl"), "{keys:?}");
    let lease = escrow_sync_e2e::get(&escrow, &manifest_bucket, "runs/leases/assets.json").await;
    let lease: serde_json::Value =
        serde_json::from_slice(&lease.expect("the job's lease")).unwrap();
    assert!(lease["released"].is_string(), "released after the run: {lease}");
    let notes = run.json()["jobs"][0]["notes"].to_string();
    assert!(notes.contains(&keys[0]), "the report names the manifest: {notes}");

    // The manifest: encrypted with the escrow key, complete, every item.
    let head = escrow.head_object().bucket(&manifest_bucket).key(&keys[0]).send().await.unwrap();
    assert_eq!(head.ssekms_key_id(), Some(key.as_str()));
    let store = ManifestStore::new(escrow.clone(), &manifest_bucket, "runs/");
    let (latest, manifest) = store.latest().await.unwrap().unwrap();
    assert_eq!(latest, keys[0]);
    assert_eq!(keys[0], format!("runs/{}.jsonl", manifest.header.run_id), "named by its run");
    assert_eq!(manifest.header.escrow_account, ESCROW);
    assert!(manifest.header.config_digest.starts_with("sha256:"));
    assert_eq!(manifest.header.config_digest, escrow_sync_core::manifest::digest(text.as_bytes()));
    let job = &manifest.jobs["assets"];
    assert_eq!(job.kind, "s3");
    assert_eq!(job.items.len(), 5);
    assert!(job.items.iter().all(|i| i.outcome == ItemOutcome::Copied && i.size > 0));
    assert!(job.items.iter().all(|i| !i.fingerprint.is_empty() && i.source_time.is_some()));
    assert_eq!(job.summary.as_ref().unwrap().copied, 5);
    assert_eq!(manifest.end.items, 5);

    // A second run: a second manifest, the items recorded as in escrow.
    pair.put("data/new.txt", "one more").await;
    let again = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(again.code, 0, "{again:?}");
    let (second, manifest) = store.latest().await.unwrap().unwrap();
    assert!(second > keys[0], "{second} after {}", keys[0]);
    let outcomes: Vec<ItemOutcome> =
        manifest.jobs["assets"].items.iter().map(|i| i.outcome).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == ItemOutcome::InEscrow).count(), 5);
    assert_eq!(outcomes.iter().filter(|o| **o == ItemOutcome::Copied).count(), 1);

    // The primary's data is gone (the intruder emptied and deleted the
    // bucket): an online verify cannot run; the offline one needs escrow
    // only and finds escrow whole.
    let listed = pair.primary.list_objects_v2().bucket(&pair.source_bucket).send().await.unwrap();
    for o in listed.contents() {
        let key = o.key().unwrap();
        pair.primary.delete_object().bucket(&pair.source_bucket).key(key).send().await.unwrap();
    }
    pair.primary.delete_bucket().bucket(&pair.source_bucket).send().await.unwrap();
    assert_eq!(cli(&["verify", "--config", cfg]).code, 2, "online verify needs the primary");
    let offline = cli(&["verify", "--offline", "--config", cfg, "--output", "json"]);
    assert_eq!(offline.code, 0, "{offline:?}");
    let text = cli(&["verify", "--offline", "--config", cfg]);
    assert!(text.stdout.contains("escrow matches the run manifest"), "{}", text.stdout);
    let j = &offline.json()["jobs"][0];
    assert_eq!((j["skipped"].as_u64(), j["missing"].as_u64()), (Some(6), Some(0)), "{j}");

    // An escrow copy deleted: offline verify names it (exit 3).
    escrow.delete_object().bucket(&pair.dest_bucket).key("data/3.txt").send().await.unwrap();
    let offline = cli(&["verify", "--offline", "--config", cfg, "--output", "json"]);
    assert_eq!(offline.code, 3, "{offline:?}");
    let j = &offline.json()["jobs"][0];
    assert_eq!(j["missing"].as_u64(), Some(1), "{j}");
    assert_eq!(j["differences"][0]["key"].as_str(), Some("data/3.txt"));
}

/// `run --job` writes a manifest of that job only: offline verify takes,
/// per job, the newest run that finished it. And a copy overwritten in
/// escrow since the run is caught by its fingerprint, at the same size.
#[tokio::test]
async fn offline_verify_takes_each_jobs_newest_finished_run_and_catches_a_replaced_copy() {
    let a = BucketPair::new("mfa").await;
    let b = BucketPair::new("mfb").await;
    for i in 0..3 {
        a.put(&format!("a/{i}.txt"), format!("alpha {i}")).await;
        b.put(&format!("b/{i}.txt"), format!("bravo {i}")).await;
    }
    let escrow = s3(&admin(ESCROW).await);
    let manifest_bucket = unique("manifests");
    create_bucket(&escrow, &manifest_bucket, true).await;
    let jobs = format!(
        "[[s3]]\nname = \"a\"\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\n\n\
         [[s3]]\nname = \"b\"\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\n",
        a.source_bucket, a.dest_bucket, b.source_bucket, b.dest_bucket
    );
    let config = escrow_sync_e2e::config_with_jobs(&jobs);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[escrow]\n",
        &format!("[escrow]\nmanifest_bucket = \"{manifest_bucket}\"\n"),
        1,
    );
    std::fs::write(&config, &text).unwrap();
    let cfg = config.to_str().unwrap();

    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    let first = manifests(&escrow, &manifest_bucket).await;
    assert_eq!(cli(&["run", "--config", cfg, "--job", "a"]).code, 0);
    let both = manifests(&escrow, &manifest_bucket).await;
    assert_eq!(both.len(), 2, "{both:?}");
    let store = ManifestStore::new(escrow.clone(), &manifest_bucket, "escrow-sync/manifests/");
    let (_, latest) = store.latest().await.unwrap().unwrap();
    assert!(!latest.jobs.contains_key("b"), "the latest run was of job a only");

    let offline = cli(&["verify", "--offline", "--config", cfg, "--output", "json"]);
    assert_eq!(offline.code, 0, "{offline:?}");
    let doc = offline.json();
    let job = |name: &str| {
        doc["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap().clone()
    };
    assert_eq!(job("a")["skipped"].as_u64(), Some(3), "{doc}");
    assert_eq!(job("b")["skipped"].as_u64(), Some(3), "{doc}");
    let first_id = first[0].trim_start_matches("escrow-sync/manifests/").trim_end_matches(".jsonl");
    assert!(job("b")["notes"].to_string().contains(first_id), "b from the first run: {doc}");

    // Escrow's copy of b/1.txt replaced by other bytes of the same size.
    escrow
        .put_object()
        .bucket(&b.dest_bucket)
        .key("b/1.txt")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"BRAVO 1"))
        .send()
        .await
        .unwrap();
    let offline = cli(&["verify", "--offline", "--config", cfg, "--job", "b", "--output", "json"]);
    assert_eq!(offline.code, 3, "{offline:?}");
    let j = &offline.json()["jobs"][0];
    assert_eq!(j["different"].as_u64(), Some(1), "{j}");
    assert_eq!(j["differences"][0]["key"].as_str(), Some("b/1.txt"), "{j}");
}

#[tokio::test]
async fn verify_offline_without_a_manifest_or_a_manifest_bucket_exits_2() {
    let pair = BucketPair::new("nomanifest").await;
    let escrow = s3(&admin(ESCROW).await);
    let manifest_bucket = unique("manifests-empty");
    create_bucket(&escrow, &manifest_bucket, true).await;
    let jobs = format!(
        "[[s3]]\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\n",
        pair.source_bucket, pair.dest_bucket
    );
    let config = escrow_sync_e2e::config_with_jobs(&jobs);
    let cfg = config.to_str().unwrap();
    let none = cli(&["verify", "--offline", "--config", cfg]);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(none.stderr.contains("manifest_bucket"), "{}", none.stderr);
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[escrow]\n",
        &format!("[escrow]\nmanifest_bucket = \"{manifest_bucket}\"\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let empty = cli(&["verify", "--offline", "--config", cfg]);
    assert_eq!(empty.code, 2, "{empty:?}");
    assert!(empty.stderr.contains("run `escrow-sync run` first"), "{}", empty.stderr);
}

#[test]
fn a_manifest_cut_short_is_never_taken_for_complete() {
    let header = escrow_sync_core::manifest::Header::new("r", "v", "sha256:0", "e", "p");
    let mut w = escrow_sync_core::manifest::ManifestWriter::create(header).unwrap();
    w.job("j", "s3");
    let (_, bytes) = w.finish().unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(Manifest::parse(&text).is_ok());
    let cut: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    assert!(Manifest::parse(&cut).is_err());
}

/// A manifest larger than one part goes up as a multipart upload from the
/// spool file, under the escrow key, and reads back whole; no upload is
/// left open.
#[tokio::test]
async fn a_manifest_larger_than_a_part_is_written_in_parts_and_reads_back_whole() {
    use escrow_sync_core::manifest::{Header, ManifestWriter};
    use escrow_sync_core::{Item, ItemKind, ItemRecord};
    let session = admin(ESCROW).await;
    let escrow = s3(&session);
    let bucket = unique("manifests");
    create_bucket(&escrow, &bucket, true).await;
    let key = create_kms_key(&session).await;
    let header = Header::new("run-big", "0.1.0", "sha256:00", ESCROW, "111111111111");
    let mut w = ManifestWriter::create(header).unwrap();
    w.job("assets", "s3");
    let log = w.item_log("assets");
    let items = 60_000;
    for i in 0..items {
        let item = Item::new(format!("data/{i:09}.bin"), ItemKind::Object, 42, format!("\"{i}\""));
        log(ItemRecord::new(item, ItemOutcome::Copied));
    }
    let (_, spooled) = w.finish_spooled().unwrap();
    assert!(spooled.len() > 5 * 1024 * 1024, "more than one 5 MiB part: {}", spooled.len());
    let store = ManifestStore::new(escrow.clone(), &bucket, "runs/")
        .with_kms_key_id(Some(key.clone()))
        .with_part_size(5 * 1024 * 1024);
    let written = store.put_spooled("run-big", spooled).await.unwrap();
    let head = escrow.head_object().bucket(&bucket).key(&written).send().await.unwrap();
    assert!(head.e_tag().unwrap_or_default().contains('-'), "a multipart object: {head:?}");
    assert_eq!(head.ssekms_key_id(), Some(key.as_str()));
    let (_, manifest) = store.latest().await.unwrap().unwrap();
    assert_eq!(manifest.jobs["assets"].items.len(), items);
    assert_eq!(manifest.end.items, items as u64);
    let open = escrow.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
    assert!(open.uploads().is_empty(), "{open:?}");
}

#[tokio::test]
async fn snapshot_jobs_are_recorded_and_verified_offline_by_their_escrow_copies() {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let primary_ec2 = escrow_sync_ec2::client(&admin(escrow_sync_e2e::PRIMARY).await);
    let escrow_session = admin(ESCROW).await;
    let escrow_ec2 = escrow_sync_ec2::client(&escrow_session);
    let tag = unique("manifest-snap");
    let volume = primary_ec2
        .create_volume()
        .availability_zone("us-east-1a")
        .size(1)
        .send()
        .await
        .unwrap()
        .volume_id
        .unwrap();
    let snapshot = primary_ec2
        .create_snapshot()
        .volume_id(volume)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Snapshot)
                .tags(Tag::builder().key("backup").value(&tag).build())
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshot_id
        .unwrap();
    let manifest_bucket = unique("manifests-snap");
    create_bucket(&s3(&escrow_session), &manifest_bucket, true).await;
    let key = create_kms_key(&escrow_session).await;
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[ec2]]\nname = \"volumes\"\ninclude = [\"snapshots\"]\ntags = {{ backup = \"{tag}\" }}\n"
    ));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[escrow]\n",
        &format!("[escrow]\nkms_key_id = \"{key}\"\nmanifest_bucket = \"{manifest_bucket}\"\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let cfg = config.to_str().unwrap();
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    let store = ManifestStore::new(
        s3(&escrow_session),
        &manifest_bucket,
        escrow_sync_core::manifest::DEFAULT_PREFIX,
    );
    let (_, manifest) = store.latest().await.unwrap().unwrap();
    // Escrow may hold other copies (other jobs' and tests'): they are
    // recorded as retained; this job's snapshot as copied.
    let items = &manifest.jobs["volumes"].items;
    let item = items.iter().find(|i| i.key == snapshot).expect("the snapshot is recorded");
    assert_eq!(item.outcome, ItemOutcome::Copied);
    assert!(item.escrow_fingerprint.as_deref().is_some_and(|f| f.starts_with("snap-")));
    assert!(item.lineage.as_deref().is_some_and(|l| l.starts_with("vol-")));
    let offline = cli(&["verify", "--offline", "--config", cfg, "--output", "json"]);
    assert_eq!(offline.code, 0, "{offline:?}");
    assert!(offline.json()["jobs"][0]["skipped"].as_u64() >= Some(1), "{}", offline.stdout);

    // The escrow copy deleted: offline verify names the source snapshot.
    let copy = item.escrow_fingerprint.clone().unwrap();
    escrow_ec2.delete_snapshot().snapshot_id(&copy).send().await.unwrap();
    let offline = cli(&["verify", "--offline", "--config", cfg, "--output", "json"]);
    assert_eq!(offline.code, 3, "{offline:?}");
    assert_eq!(
        offline.json()["jobs"][0]["differences"][0]["key"].as_str(),
        Some(snapshot.as_str())
    );
}

#[test]
fn a_config_error_quoting_the_external_id_never_prints_it() {
    let config = escrow_sync_e2e::write_config(
        "[escrow]\nregion = \"us-east-1\"\n\n[primary]\nregion = \"us-east-1\"\n\
         external_id = \"ext-s3cr3t-77\" oops\n",
    );
    let cfg = config.to_str().unwrap();
    for args in [
        vec!["run", "--config", cfg],
        vec!["run", "--config", cfg, "--output", "json"],
        vec!["verify", "--offline", "--config", cfg, "--output", "json"],
    ] {
        let out = cli(&args);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(!out.stderr.is_empty() || !out.stdout.is_empty(), "{out:?}");
        assert!(
            !out.stderr.contains("ext-s3cr3t-77") && !out.stdout.contains("ext-s3cr3t-77"),
            "{args:?}: {out:?}"
        );
    }
}

/// A manifest under Object Lock, small (one PutObject) or larger than a
/// part (multipart: the emulator ignores the lock headers of
/// CreateMultipartUpload, so the sink sets the retention after completion),
/// is kept under the escrow key with its retention, and no upload or
/// journal entry is left behind.
#[tokio::test]
async fn a_locked_manifest_keeps_its_retention_whether_put_whole_or_in_parts() {
    use escrow_sync_core::manifest::{Header, ManifestWriter};
    use escrow_sync_core::{Item, ItemKind, ItemRecord};
    let session = admin(ESCROW).await;
    let escrow = s3(&session);
    let bucket = unique("manifests-locked");
    escrow_sync_e2e::create_locked_bucket(&escrow, &bucket).await;
    let key = create_kms_key(&session).await;
    let store = ManifestStore::new(escrow.clone(), &bucket, "runs/")
        .with_expected_owner(Some(ESCROW.into()))
        .with_kms_key_id(Some(key.clone()))
        .with_object_lock(Some(("GOVERNANCE".into(), 2)))
        .with_part_size(5 * 1024 * 1024);
    for (run, items) in [("run-small", 10), ("run-big", 60_000)] {
        let header = Header::new(run, "0.1.0", "sha256:00", ESCROW, "111111111111");
        let mut w = ManifestWriter::create(header).unwrap();
        w.job("assets", "s3");
        let log = w.item_log("assets");
        for i in 0..items {
            let item =
                Item::new(format!("data/{i:09}.bin"), ItemKind::Object, 42, format!("\"{i}\""));
            log(ItemRecord::new(item, ItemOutcome::Copied));
        }
        let (_, spooled) = w.finish_spooled().unwrap();
        let written = store.put_spooled(run, spooled).await.unwrap();
        let head = escrow.head_object().bucket(&bucket).key(&written).send().await.unwrap();
        assert_eq!(head.e_tag().unwrap_or_default().contains('-'), items > 10, "{head:?}");
        assert_eq!(head.ssekms_key_id(), Some(key.as_str()), "{run}");
        assert_eq!(head.content_type(), Some("application/x-ndjson"), "{run}");
        assert_eq!(head.object_lock_mode().map(|m| m.as_str()), Some("GOVERNANCE"), "{run}");
        let until = head.object_lock_retain_until_date().expect("a retain-until date");
        let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs();
        assert!((until.secs() - now - 2 * 86_400).abs() < 3600, "{run}: {until:?}");
        let m = store.read(&written).await.unwrap();
        assert_eq!(m.end.items, items as u64, "{run}");
    }
    assert_eq!(manifests(&escrow, &bucket).await, ["runs/run-big.jsonl", "runs/run-small.jsonl"]);
    let open = escrow.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
    assert!(open.uploads().is_empty(), "{open:?}");
}
