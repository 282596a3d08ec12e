//! One run per job (issue 13, part 6) end to end on the emulator: a job
//! whose lease another run holds exits 2 naming that run and changes
//! nothing while the config's other jobs still run; an expired lease is
//! taken over; leases are released after a run and after SIGTERM.
//!
//! moto 5.2.5 honours `If-None-Match: *` and `If-Match` on PutObject as S3
//! does (412 PreconditionFailed, 404 NoSuchKey for If-Match on a missing
//! key), so no emulator patch is needed; the request shapes and 412 paths
//! are also covered with mocks in crates/s3/tests/lease_mocks.rs.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

use escrow_sync_e2e::{
    BucketPair, ESCROW, admin, cli, cli_command, config_with_jobs, create_bucket, get, keys, s3,
    unique,
};
use escrow_sync_s3::LeaseRecord;

const LEASES: &str = "escrow-sync/manifests/leases/";

fn jobs(doc: &Value) -> &Vec<Value> {
    doc["jobs"].as_array().expect("jobs array")
}

fn job<'a>(doc: &'a Value, name: &str) -> &'a Value {
    jobs(doc).iter().find(|j| j["name"] == name).unwrap_or_else(|| panic!("job {name} in {doc}"))
}

fn s3_job(name: &str, pair: &BucketPair, extra: &str) -> String {
    format!(
        "[[s3]]\nname = \"{name}\"\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\n{extra}\n",
        pair.source_bucket, pair.dest_bucket
    )
}

/// A config with a manifest bucket (where the leases live) and `jobs`.
fn config(manifests: &str, jobs: &str) -> String {
    let path = config_with_jobs(jobs);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[escrow]\n",
        &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A lease record of another host's run, expiring `from_now` from now
/// (in the past when `expired`).
fn foreign_lease(job: &str, expired: bool) -> LeaseRecord {
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    LeaseRecord {
        job: job.into(),
        host: "other-host".into(),
        pid: 4242,
        run_id: "run-other".into(),
        started: escrow_sync_core::rfc3339(now - hour),
        expires: escrow_sync_core::rfc3339(if expired { now - hour / 2 } else { now + hour }),
        released: None,
    }
}

async fn put_lease(escrow: &Client, bucket: &str, key: &str, record: &LeaseRecord) -> String {
    let out = escrow
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(serde_json::to_vec(record).unwrap()))
        .send()
        .await
        .expect("put a lease");
    out.e_tag().unwrap().to_string()
}

async fn read_lease(escrow: &Client, bucket: &str, key: &str) -> Option<(LeaseRecord, String)> {
    match escrow.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let etag = out.e_tag().unwrap_or_default().to_string();
            let body = out.body.collect().await.unwrap().into_bytes();
            Some((serde_json::from_slice(&body).expect("a lease record"), etag))
        }
        Err(e) => {
            assert!(e.into_service_error().is_no_such_key(), "reading {bucket}/{key}");
            None
        }
    }
}

/// A lease this host's run released.
fn assert_released(record: &LeaseRecord) {
    assert_eq!(record.host, escrow_sync_s3::host_name(), "{record:?}");
    assert_ne!(record.run_id, "run-other", "{record:?}");
    assert!(record.released.is_some(), "released: {record:?}");
    assert!(record.expired_at(SystemTime::now()), "expired: {record:?}");
}

#[tokio::test]
async fn a_held_lease_fails_only_its_job_and_an_expired_one_is_taken_over() {
    let escrow = s3(&admin(ESCROW).await);
    let manifests = unique("leases-manifests");
    create_bucket(&escrow, &manifests, true).await;
    let held = BucketPair::new("leases-held").await;
    let free = BucketPair::new("leases-free").await;
    held.put("a.txt", "held data").await;
    free.put("b.txt", "free data").await;
    let cfg = config(&manifests, &(s3_job("held", &held, "") + &s3_job("free", &free, "")));
    let held_key = format!("{LEASES}held.json");
    let etag = put_lease(&escrow, &manifests, &held_key, &foreign_lease("held", false)).await;

    // Another host holds "held": that job exits 2 naming the holder and the
    // expiry, changes nothing; "free" still runs and releases its lease.
    let run = cli(&["run", "--config", &cfg, "--output", "json"]);
    assert_eq!(run.code, 2, "{run:?}");
    let doc = run.json();
    let error = job(&doc, "held")["error"].as_str().expect("held fails").to_string();
    let expires = foreign_lease("held", false).expires;
    for part in ["already running", "other-host", "4242", "run-other", &expires[..13], &held_key] {
        assert!(error.contains(part), "{part:?} missing from {error}");
    }
    assert!(run.stderr.contains("other-host"), "{}", run.stderr);
    assert!(held.escrow_keys().await.is_empty(), "the held job copied nothing");
    let (_, after) = read_lease(&escrow, &manifests, &held_key).await.unwrap();
    assert_eq!(after, etag, "the held lease is left as it was");
    assert_eq!(job(&doc, "free")["copied"], 1, "{doc}");
    assert!(job(&doc, "free")["error"].is_null(), "{doc}");
    assert_eq!(free.escrow_get("b.txt").await.as_deref(), Some(&b"free data"[..]));
    let (free_lease, _) =
        read_lease(&escrow, &manifests, &format!("{LEASES}free.json")).await.unwrap();
    assert_released(&free_lease);
    assert_eq!(free_lease.job, "free");

    // That run died: its lease expired unreleased. The next run takes it
    // over, says so, copies, and releases it.
    put_lease(&escrow, &manifests, &held_key, &foreign_lease("held", true)).await;
    let run = cli(&["run", "--config", &cfg, "--job", "held", "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    let warnings = job(&doc, "held")["warnings"].to_string();
    assert!(
        warnings.contains("took over the lease") && warnings.contains("other-host"),
        "{warnings}"
    );
    assert_eq!(held.escrow_get("a.txt").await.as_deref(), Some(&b"held data"[..]));
    let (taken, _) = read_lease(&escrow, &manifests, &held_key).await.unwrap();
    assert_released(&taken);

    // A released lease is taken over without a word.
    let run = cli(&["run", "--config", &cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    for name in ["held", "free"] {
        let w = job(&doc, name)["warnings"].to_string();
        assert!(!w.contains("lease"), "{name}: {w}");
    }
}

#[tokio::test]
async fn without_a_manifest_bucket_the_lease_lives_outside_the_copied_keys() {
    let prefixed = BucketPair::new("leases-prefixed").await;
    let bare = BucketPair::new("leases-bare").await;
    prefixed.put("k.txt", "k").await;
    bare.put("k.txt", "k").await;
    let cfg = config_with_jobs(
        &(s3_job("prefixed", &prefixed, "dest_prefix = \"backup/\"") + &s3_job("bare", &bare, "")),
    );
    let cfg = cfg.to_str().unwrap();
    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    let mut escrow_keys = prefixed.escrow_keys().await;
    escrow_keys.sort();
    assert_eq!(escrow_keys, [".escrow-sync/leases/prefixed.json", "backup/k.txt"]);
    let (lease, _) =
        read_lease(&prefixed.escrow, &prefixed.dest_bucket, ".escrow-sync/leases/prefixed.json")
            .await
            .unwrap();
    assert_released(&lease);
    // A job copying the whole bucket leaves no room for a lease: it holds
    // none, says so, and writes nothing but its copies.
    let w = job(&doc, "bare")["warnings"].to_string();
    assert!(w.contains("holds no lease") && w.contains("manifest_bucket"), "{w}");
    assert_eq!(bare.escrow_keys().await, ["k.txt"]);
    // The lease is no escrow item: a second run copies nothing, and verify
    // is clean.
    let again = cli(&["run", "--config", cfg, "--job", "prefixed", "--output", "json"]);
    assert_eq!(again.code, 0, "{again:?}");
    let j = job(&again.json(), "prefixed").clone();
    assert_eq!((j["copied"].as_u64(), j["retained"].as_u64()), (Some(0), Some(0)), "{j}");
    let verify = cli(&["verify", "--config", cfg, "--job", "prefixed", "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
}

#[tokio::test]
async fn sigterm_stops_a_run_cleanly_and_releases_its_lease() {
    let escrow = s3(&admin(ESCROW).await);
    let manifests = unique("leases-term");
    create_bucket(&escrow, &manifests, true).await;
    let pair = BucketPair::new("leases-term").await;
    for i in 0..40 {
        pair.put(&format!("obj/{i:03}"), vec![i as u8; 64]).await;
    }
    // Paced so the run is still copying when the signal comes.
    let cfg =
        config(&manifests, &s3_job("slow", &pair, "concurrency = 1\nmax_requests_per_second = 2"));
    let key = format!("{LEASES}slow.json");
    let mut child =
        cli_command(&std::env::temp_dir(), &["run", "--config", &cfg, "--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start escrow-sync run");
    // Wait until the run holds its lease (it then has started the job).
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it was signalled");
        }
        if read_lease(&escrow, &manifests, &key).await.is_some_and(|(r, _)| r.released.is_none()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait for escrow-sync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Cancelled, not killed: exit 143 (SIGTERM) with a report that says so.
    assert_eq!(out.status.code(), Some(143), "{stdout}\n{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("a JSON report");
    let j = job(&doc, "slow");
    assert_eq!(j["cancelled"], true, "{j}");
    assert!(j["copied"].as_u64().unwrap() < 40, "{j}");
    let (lease, _) = read_lease(&escrow, &manifests, &key).await.unwrap();
    assert_released(&lease);
    // The run manifest was written.
    let written = keys(&escrow, &manifests).await;
    assert!(written.iter().any(|k| k.ends_with(".jsonl")), "{written:?}");
    // And the next run finishes the job.
    let run = cli(&["run", "--config", &cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        get(&pair.escrow, &pair.dest_bucket, "obj/039").await.as_deref(),
        Some(&[39u8; 64][..])
    );
}
