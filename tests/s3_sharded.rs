//! Sharded runs (`run --shard I/N`) end to end on the emulator, through the
//! binary: N processes share one S3 job, each a key range under its own
//! lease, writing its own manifest; `status` and `verify --offline` merge
//! the parts, and a part that is missing, failed or cut by other
//! boundaries never reads as ok.

use std::collections::BTreeMap;

use serde_json::Value;

use escrow_sync_e2e::{
    BucketPair, ESCROW, Outcome, PRIMARY, binary, cli, cli_command, create_bucket, get, keys,
    unique, write_config,
};

/// The recovery account's role (`restore` writes there, never into escrow).
const RECOVERY_ROLE: &str = "arn:aws:iam::333333333333:role/recovery";

/// The keys every test bucket holds: `obj/00`..`obj/29` and a few others
/// around them in S3's order (a multibyte one last).
fn test_keys() -> Vec<String> {
    let mut keys: Vec<String> = (0..30).map(|i| format!("obj/{i:02}")).collect();
    keys.extend(["a-first", "obj/", "obj/1", "obj/10/inner", "z/é"].map(String::from));
    keys.sort();
    keys
}

/// A primary and an escrow bucket holding `test_keys()`, a manifest
/// bucket, and a config with `job_extra` in the `[[s3]]` job.
async fn setup(name: &str, job_extra: &str) -> (BucketPair, String, String) {
    let pair = BucketPair::new(name).await;
    for (i, key) in test_keys().iter().enumerate() {
        pair.put(key, format!("{key} {}", "x".repeat(i))).await;
    }
    let manifests = unique("manifests");
    create_bucket(&pair.escrow, &manifests, true).await;
    let cfg = config(&pair, &manifests, job_extra);
    (pair, cfg, manifests)
}

fn config(pair: &BucketPair, manifests: &str, job_extra: &str) -> String {
    let path = write_config(&format!(
        r#"[escrow]
region = "us-east-1"
role_arn = "arn:aws:iam::{ESCROW}:role/escrow-operator"
account_id = "{ESCROW}"
manifest_bucket = "{manifests}"

[primary]
account_id = "{PRIMARY}"
role_arn = "arn:aws:iam::{PRIMARY}:role/escrow-reader"
external_id = "test-external-id"

[[s3]]
name = "assets"
source_bucket = "{}"
dest_bucket = "{}"
{job_extra}
"#,
        pair.source_bucket, pair.dest_bucket
    ));
    path.to_str().unwrap().to_string()
}

/// Runs the parts `parts` of N at once, as N runners would; their outcomes.
fn run_parts(cfg: &str, parts: &[u32], n: u32) -> Vec<Outcome> {
    let children: Vec<_> = parts
        .iter()
        .map(|i| {
            let shard = format!("{i}/{n}");
            let args = ["run", "-c", cfg, "--shard", &shard, "--output", "json"];
            cli_command(&std::env::temp_dir(), &args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a part")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("a part ends");
            Outcome {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .collect()
}

/// Every escrow object of `pair` and its content.
async fn escrow_content(pair: &BucketPair) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for key in keys(&pair.escrow, &pair.dest_bucket).await {
        let body = get(&pair.escrow, &pair.dest_bucket, &key).await.expect("listed key");
        out.insert(key, body.to_vec());
    }
    out
}

fn status(cfg: &str) -> (i32, Value) {
    let out = cli(&["status", "-c", cfg, "--output", "json"]);
    let doc = out.json();
    (out.code, doc["jobs"][0].clone())
}

fn summary_counts(out: &Outcome) -> (u64, u64) {
    let doc = out.json();
    let job = &doc["jobs"][0];
    let n = |k: &str| job["report"][k].as_u64().or_else(|| job[k].as_u64()).unwrap_or(0);
    (n("copied"), n("skipped"))
}

#[tokio::test]
async fn a_four_way_sharded_run_merges_to_what_an_unsharded_run_copies() {
    assert!(binary().exists());
    let (sharded, cfg, manifests) = setup("shard4", "").await;
    let (whole, whole_cfg, _) = setup("whole", "").await;

    // Four runners at once: the boundaries are sampled (by each runner
    // that finds none stored) and one set is agreed on.
    let parts = run_parts(&cfg, &[1, 2, 3, 4], 4);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.code, 0, "part {}/4: {p:?}", i + 1);
    }
    let copied: Vec<u64> = parts.iter().map(|p| summary_counts(p).0).collect();
    assert_eq!(copied.iter().sum::<u64>(), test_keys().len() as u64, "{copied:?}");
    assert!(copied.iter().all(|c| *c > 0), "sampled parts are not empty: {copied:?}");
    let unsharded = cli(&["run", "-c", &whole_cfg, "--output", "json"]);
    assert_eq!(unsharded.code, 0, "{unsharded:?}");

    // The merged result equals the unsharded one, and the primary.
    let got = escrow_content(&sharded).await;
    assert_eq!(got, escrow_content(&whole).await);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), test_keys());

    // One stored set of boundaries, for N = 4.
    let stored = keys(&sharded.escrow, &manifests).await;
    let records: Vec<&String> = stored.iter().filter(|k| k.contains("/shards/")).collect();
    assert_eq!(records.len(), 1, "{stored:?}");
    assert!(records[0].ends_with("shards/assets/4.json"), "{records:?}");

    // status merges the four parts into one verified run.
    let (code, job) = status(&cfg);
    assert_eq!(code, 0, "{job:#}");
    assert_eq!(job["last_run"]["outcome"], "ok", "{job:#}");
    assert_eq!(job["last_run"]["copied"], test_keys().len() as u64, "{job:#}");
    assert_eq!(job["shards"]["count"], 4, "{job:#}");
    assert_eq!(job["shards"]["missing"].as_array().unwrap().len(), 0, "{job:#}");
    assert!(job["last_verified"].is_object(), "{job:#}");

    // verify --offline checks escrow against the four manifests together.
    let offline = cli(&["verify", "-c", &cfg, "--offline", "--output", "json"]);
    assert_eq!(offline.code, 0, "{offline:?}");
    assert_eq!(summary_counts(&offline).1, test_keys().len() as u64, "{}", offline.stdout);

    // restore --at takes the keys the primary held from the four parts
    // together (a dry run: nothing is written).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let now = escrow_sync_core::rfc3339(std::time::SystemTime::now());
    let dry = cli(&[
        "restore",
        "-c",
        &cfg,
        "--job",
        "assets",
        "--target-role-arn",
        RECOVERY_ROLE,
        "--target-bucket",
        "not-created",
        "--at",
        &now,
        "--output",
        "json",
    ]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let r = &dry.json()["restore"];
    assert_eq!(r["restored"].as_u64(), Some(test_keys().len() as u64), "{r}");
    let want = format!("only the {} keys the primary held then", test_keys().len());
    assert!(r["notes"].to_string().contains(&want), "{r}");

    // A second sharded run changes nothing.
    for p in run_parts(&cfg, &[1, 2, 3, 4], 4) {
        assert_eq!((p.code, summary_counts(&p).0), (0, 0), "{p:?}");
    }
}

#[tokio::test]
async fn keys_at_the_boundaries_land_once_and_a_missing_part_is_never_ok() {
    let boundaries = r#"shard_boundaries = ["obj/10", "obj/20"]"#;
    let (pair, cfg, manifests) = setup("shardgap", boundaries).await;
    // Parts 1 and 3 of 3 only.
    for p in run_parts(&cfg, &[1, 3], 3) {
        assert_eq!(p.code, 0, "{p:?}");
    }
    let part2 = |k: &String| k.as_str() > "obj/10" && k.as_str() <= "obj/20";
    let want: Vec<String> = test_keys().into_iter().filter(|k| !part2(k)).collect();
    let got: Vec<String> = escrow_content(&pair).await.into_keys().collect();
    // obj/10 is in part 1 (a key equal to a boundary is in the part below
    // it), obj/20 in part 2.
    assert_eq!(got, want);
    assert!(got.contains(&"obj/10".to_string()) && !got.contains(&"obj/20".to_string()));

    // status: the run is incomplete, named, and not a verified copy.
    let (code, job) = status(&cfg);
    assert_eq!(code, 3, "{job:#}");
    assert_eq!(job["last_run"]["outcome"], "incomplete", "{job:#}");
    assert_eq!(job["shards"]["missing"], serde_json::json!(["2/3"]), "{job:#}");
    assert_eq!(job["findings"][0]["kind"], "incomplete-shards", "{job:#}");
    assert!(job["last_verified"].is_null(), "{job:#}");
    let text = cli(&["status", "-c", &cfg]);
    assert!(text.stdout.contains("missing 2/3"), "{}", text.stdout);

    // verify --offline refuses to vouch, naming the part to run.
    let offline = cli(&["verify", "-c", &cfg, "--offline"]);
    assert_ne!(offline.code, 0, "{offline:?}");
    assert!(offline.stderr.contains("--shard 2/3"), "{offline:?}");

    // Part 2 alone completes the run.
    for p in run_parts(&cfg, &[2], 3) {
        assert_eq!(p.code, 0, "{p:?}");
        assert_eq!(summary_counts(&p).0, 11, "obj/11..obj/20 and obj/10/inner: {p:?}");
    }
    assert_eq!(escrow_content(&pair).await.into_keys().collect::<Vec<_>>(), test_keys());
    let (code, job) = status(&cfg);
    assert_eq!((code, &job["last_run"]["outcome"]), (0, &Value::from("ok")), "{job:#}");
    let offline = cli(&["verify", "-c", &cfg, "--offline"]);
    assert_eq!(offline.code, 0, "{offline:?}");

    // Other boundaries: the old parts are not merged with the new.
    let cfg2 = config(&pair, &manifests, r#"shard_boundaries = ["obj/05"]"#);
    let wrong_n = run_parts(&cfg2, &[1], 3);
    assert_eq!(wrong_n[0].code, 2, "{:?}", wrong_n[0]);
    assert!(wrong_n[0].stderr.contains("--shard I/2"), "{:?}", wrong_n[0]);
    for p in run_parts(&cfg2, &[1], 2) {
        assert_eq!(p.code, 0, "{p:?}");
    }
    let (code, job) = status(&cfg2);
    assert_eq!(code, 3, "{job:#}");
    assert_eq!(job["shards"]["missing"], serde_json::json!(["2/2"]), "{job:#}");
    // The three parts before still vouch for the copy they made.
    assert!(job["last_verified"].is_object(), "{job:#}");
}

#[tokio::test]
async fn stored_boundaries_edited_by_an_insider_are_refused_or_never_merged() {
    let (pair, cfg, manifests) = setup("shardedit", "").await;
    for p in run_parts(&cfg, &[1, 2], 2) {
        assert_eq!(p.code, 0, "{p:?}");
    }
    let key = "escrow-sync/manifests/shards/assets/2.json";
    let body = get(&pair.escrow, &manifests, key).await.expect("stored boundaries");
    let mut record: Value = serde_json::from_slice(&body).unwrap();
    let put = |record: &Value| {
        let client = pair.escrow.clone();
        let (bucket, body) = (manifests.clone(), serde_json::to_vec(record).unwrap());
        async move {
            client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .expect("an insider's write");
        }
    };

    // Boundaries changed, digest not: refused, nothing copied by the cut.
    record["boundaries"] = serde_json::json!(["obj/15"]);
    put(&record).await;
    let edited = &run_parts(&cfg, &[1], 2)[0];
    assert_ne!(edited.code, 0, "{edited:?}");
    assert!(edited.stderr.contains("edited"), "{edited:?}");

    // A consistent forgery (digest made to match) only moves the cut: the
    // parts it makes are never merged with the parts before it.
    let digest = boundaries_digest(&["obj/15"]);
    record["digest"] = Value::from(digest);
    put(&record).await;
    let moved = &run_parts(&cfg, &[1], 2)[0];
    assert_eq!(moved.code, 0, "{moved:?}");
    let (code, job) = status(&cfg);
    assert_eq!(code, 3, "{job:#}");
    assert_eq!(job["shards"]["missing"], serde_json::json!(["2/2"]), "{job:#}");
}

/// [`escrow_sync_s3::Boundaries::digest`] of `keys`.
fn boundaries_digest(keys: &[&str]) -> String {
    escrow_sync_s3::Boundaries::new(keys.iter().map(|k| k.to_string()).collect()).unwrap().digest()
}

#[tokio::test]
async fn bad_shard_input_exits_2_naming_the_fix() {
    let (pair, cfg, _) = setup("shardbad", "").await;
    let bad = cli(&["run", "-c", &cfg, "--shard", "0/4"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("1 to N"), "{bad:?}");
    let bad = cli(&["run", "-c", &cfg, "--shard", "two/4"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("I/N"), "{bad:?}");

    let unsorted = config(&pair, "m", r#"shard_boundaries = ["obj/2", "obj/1"]"#);
    let out = cli(&["run", "-c", &unsorted, "--shard", "1/3"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("sorted and distinct"), "{out:?}");

    // A Batch Operations job is not cut into parts.
    let batch = config(
        &pair,
        &manifest_of(&cfg),
        "engine = \"batch-operations\"\nbatch_bucket = \"batch-files\"",
    );
    let text = std::fs::read_to_string(&batch).unwrap().replace(
        "[primary]",
        &format!("batch_role_arn = \"arn:aws:iam::{ESCROW}:role/escrow-batch\"\n\n[primary]"),
    );
    let batch = write_config(&text);
    let out = cli(&["run", "-c", batch.to_str().unwrap(), "--shard", "1/2"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("engine = \"batch-operations\""), "{out:?}");

    let no_manifests = write_config(
        &std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&format!("manifest_bucket = \"{}\"", manifest_of(&cfg)), ""),
    );
    let out = cli(&["run", "-c", no_manifests.to_str().unwrap(), "--shard", "1/2"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("manifest_bucket"), "{out:?}");
    assert!(keys(&pair.escrow, &pair.dest_bucket).await.is_empty(), "nothing copied");
}

fn manifest_of(cfg: &str) -> String {
    let text = std::fs::read_to_string(cfg).unwrap();
    let line = text.lines().find(|l| l.starts_with("manifest_bucket")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

/// A lease record another run holds until an hour from now.
fn held_lease(job: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now();
    serde_json::to_vec(&serde_json::json!({
        "job": job,
        "host": "other-host",
        "pid": 4242,
        "run_id": "other-run",
        "started": escrow_sync_core::rfc3339(now),
        "expires": escrow_sync_core::rfc3339(now + std::time::Duration::from_secs(3600)),
    }))
    .unwrap()
}

#[tokio::test]
async fn a_whole_run_and_the_parts_of_one_job_never_run_at_once() {
    let (pair, cfg, manifests) = setup("shardlease", "").await;
    let put = |key: &'static str, body: Vec<u8>| {
        let (client, bucket) = (pair.escrow.clone(), manifests.clone());
        async move {
            client.put_object().bucket(bucket).key(key).body(body.into()).send().await.unwrap();
        }
    };
    // Part 2/2 is running elsewhere: a whole run leaves the job alone.
    put("escrow-sync/manifests/leases/parts/assets/2-of-2.json", held_lease("assets part 2/2"))
        .await;
    let whole = cli(&["run", "-c", &cfg]);
    assert_eq!(whole.code, 2, "{whole:?}");
    assert!(whole.stderr.contains("running in parts") && whole.stderr.contains("other-host"));
    assert!(keys(&pair.escrow, &pair.dest_bucket).await.is_empty(), "nothing copied");
    // Another part of the same cut may run beside it.
    assert_eq!(run_parts(&cfg, &[1], 2)[0].code, 0);
    // A part of another cut may not: 1/4 and 3/8 overlap 2/2's keys (and
    // 1/4 would run retention beside 1/2).
    for (i, n) in [(1, 4), (3, 8)] {
        let part = &run_parts(&cfg, &[i], n)[0];
        assert_eq!(part.code, 2, "{i}/{n}: {part:?}");
        assert!(
            part.stderr.contains("cut into 2 parts") && part.stderr.contains("other-host"),
            "{i}/{n}: {part:?}"
        );
    }

    // The job is running whole: a part leaves it alone.
    put("escrow-sync/manifests/leases/assets.json", held_lease("assets")).await;
    let part = &run_parts(&cfg, &[2], 3)[0];
    assert_eq!(part.code, 2, "{part:?}");
    assert!(part.stderr.contains("running whole"), "{part:?}");
}

#[tokio::test]
async fn part_1_failing_before_its_job_still_renews_the_escrow_locks() {
    let mut pair = BucketPair::new("shardrenew").await;
    for key in ["obj/01", "obj/02", "obj/03"] {
        pair.put(key, key).await;
    }
    let locked = unique("shardrenew-dst");
    escrow_sync_e2e::create_locked_bucket(&pair.escrow, &locked).await;
    pair.dest_bucket = locked.clone();
    let manifests = unique("manifests");
    create_bucket(&pair.escrow, &manifests, true).await;
    // A one-day lock renewed within one day: due at every run.
    let lock = "object_lock = { mode = \"GOVERNANCE\", days = 1, renew_within_days = 1 }";
    let cfg = config(&pair, &manifests, lock);
    for p in run_parts(&cfg, &[1, 2], 2) {
        assert_eq!(p.code, 0, "{p:?}");
    }
    let until = || {
        let (escrow, bucket) = (pair.escrow.clone(), locked.clone());
        async move {
            let head = escrow.head_object().bucket(&bucket).key("obj/01").send().await.unwrap();
            std::time::SystemTime::try_from(*head.object_lock_retain_until_date().unwrap()).unwrap()
        }
    };
    let before = until().await;
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    // The stored boundaries are refused (edited): part 1 fails before its
    // job runs, and renews the locks with escrow credentials all the same.
    let key = "escrow-sync/manifests/shards/assets/2.json";
    let body = get(&pair.escrow, &manifests, key).await.expect("stored boundaries");
    let mut record: Value = serde_json::from_slice(&body).unwrap();
    record["boundaries"] = serde_json::json!(["obj/00"]);
    let body = serde_json::to_vec(&record).unwrap();
    pair.escrow.put_object().bucket(&manifests).key(key).body(body.into()).send().await.unwrap();
    let failed = &run_parts(&cfg, &[1], 2)[0];
    assert_ne!(failed.code, 0, "{failed:?}");
    assert!(failed.stderr.contains("edited"), "{failed:?}");
    assert!(until().await > before, "renewed by the failed part 1: {}", failed.stderr);
}

#[tokio::test]
async fn a_whole_run_refused_by_the_parts_does_not_hide_them() {
    let (pair, cfg, manifests) = setup("shardhide", "").await;
    for p in run_parts(&cfg, &[1, 2], 2) {
        assert_eq!(p.code, 0, "{p:?}");
    }
    // A part runs again elsewhere: a whole run is refused (its manifest
    // records the refusal), and the complete set of parts still stands.
    let key = "escrow-sync/manifests/leases/parts/assets/2-of-2.json";
    let body = held_lease("assets part 2/2");
    pair.escrow.put_object().bucket(&manifests).key(key).body(body.into()).send().await.unwrap();
    let whole = cli(&["run", "-c", &cfg]);
    assert_eq!(whole.code, 2, "{whole:?}");
    let offline = cli(&["verify", "--offline", "-c", &cfg]);
    assert_eq!(offline.code, 0, "{offline:?}");
    let (code, job) = status(&cfg);
    assert_eq!(code, 0, "{job:#}");
    assert_eq!(job["last_run"]["outcome"], "ok", "{job:#}");
}

#[tokio::test]
async fn a_small_job_rewritten_in_the_primary_trips_the_breaker_in_every_part() {
    // 35 keys cut 4 ways: about 9 escrow items a part, under the whole
    // job's minimum of 20 but over a part's (5).
    let (pair, cfg, _) = setup("shardmass", "").await;
    for p in run_parts(&cfg, &[1, 2, 3, 4], 4) {
        assert_eq!(p.code, 0, "{p:?}");
    }
    for key in test_keys() {
        pair.put(&key, format!("{key} encrypted by the attacker")).await;
    }
    for (i, p) in run_parts(&cfg, &[1, 2, 3, 4], 4).iter().enumerate() {
        assert_eq!(p.code, 3, "part {}/4: {p:?}", i + 1);
        assert!(p.stdout.contains("mass-change"), "part {}/4: {p:?}", i + 1);
    }
}
