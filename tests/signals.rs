//! Signals on a real `escrow-sync` process (issue 15, point 3), on the
//! emulator: SIGTERM mid-run lets the copy in flight finish within
//! `--drain-timeout`, writes a complete run manifest, releases the lease and
//! exits 143; with the drain time run out, the copy in flight is stopped,
//! its multipart upload aborted and the item recorded as failed; a second
//! signal during a restore drill still deletes what the drill created.
//!
//! The runs are paced (`max_requests_per_second`) so that a streamed
//! multipart copy is in flight when the signal comes: the tests wait for
//! an open multipart upload in the escrow bucket (a condition, not a
//! sleep). moto's ranged GETs of big objects are slow, so the objects stay
//! small (11 MiB, three 5 MiB parts).

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

use escrow_sync_core::ItemOutcome;
use escrow_sync_core::manifest::Manifest;
use escrow_sync_e2e::{
    BucketPair, ESCROW, admin, cli, cli_command, config_with_jobs, create_bucket, get, keys, s3,
    unique,
};
use escrow_sync_s3::LeaseRecord;

const MIB: usize = 1024 * 1024;
const RECOVERY_ROLE: &str = "arn:aws:iam::333333333333:role/recovery";

/// A running `escrow-sync`, its stderr read as it comes.
struct Running {
    child: Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = cli_command(&std::env::temp_dir(), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start escrow-sync");
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running { child, stdout, stderr, reader }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (polling) until `ready` says so; panics if the process ends
    /// first.
    async fn until<F: std::future::Future<Output = bool>>(
        &mut self,
        what: &str,
        ready: impl Fn() -> F,
    ) {
        loop {
            if ready().await {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("escrow-sync ended ({status}) before {what}:\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let kill = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success());
    }

    /// Waits for the exit: the code, stdout and stderr.
    fn wait(mut self) -> (i32, String, String) {
        let status = self.child.wait().expect("wait for escrow-sync");
        self.reader.join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        let stdout = self.stdout.join().unwrap();
        (status.code().unwrap_or(-1), stdout, stderr)
    }
}

/// A paced streamed job of three 11 MiB objects between `pair`'s buckets,
/// with a manifest bucket; returns the config path.
async fn slow_multipart_job(name: &str) -> (BucketPair, String, String) {
    let escrow = s3(&admin(ESCROW).await);
    let manifests = unique(&format!("{name}-manifests"));
    create_bucket(&escrow, &manifests, true).await;
    let pair = BucketPair::new(name).await;
    for i in 0..3u8 {
        pair.put(&format!("big/{i}.bin"), vec![i; 11 * MIB]).await;
    }
    let path = config_with_jobs(&format!(
        "[[s3]]\nname = \"big\"\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\nmode = \
         \"stream\"\npart_size = \"5MiB\"\npart_concurrency = 1\nconcurrency = 1\n\
         max_requests_per_second = 4\n",
        pair.source_bucket, pair.dest_bucket
    ));
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[escrow]\n",
        &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    (pair, manifests, path.to_str().unwrap().to_string())
}

async fn open_uploads(client: &Client, bucket: &str) -> usize {
    let out = client.list_multipart_uploads().bucket(bucket).send().await.expect("list uploads");
    out.uploads().len()
}

/// The run's manifest, parsed (which fails without its end line).
async fn the_manifest(escrow: &Client, bucket: &str) -> Manifest {
    let written: Vec<String> =
        keys(escrow, bucket).await.into_iter().filter(|k| k.ends_with(".jsonl")).collect();
    assert_eq!(written.len(), 1, "one run manifest: {written:?}");
    let body = get(escrow, bucket, &written[0]).await.unwrap();
    Manifest::parse(std::str::from_utf8(&body).unwrap()).expect("a complete manifest")
}

async fn assert_lease_released(escrow: &Client, bucket: &str, job: &str) {
    let key = format!("escrow-sync/manifests/leases/{job}.json");
    let body = get(escrow, bucket, &key).await.expect("the job's lease");
    let lease: LeaseRecord = serde_json::from_slice(&body).unwrap();
    assert!(lease.released.is_some(), "released: {lease:?}");
}

/// What escrow-sync journals of its uploads, and the uploads themselves:
/// nothing is left of either.
async fn assert_no_upload_left(pair: &BucketPair) {
    assert_eq!(open_uploads(&pair.escrow, &pair.dest_bucket).await, 0, "no open upload");
    let journal: Vec<String> = pair
        .escrow_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with(escrow_sync_s3::JOURNAL_DIR))
        .collect();
    assert!(journal.is_empty(), "journal entries left: {journal:?}");
}

fn job(doc: &Value) -> &Value {
    &doc["jobs"][0]
}

#[tokio::test]
async fn sigterm_drains_the_copy_in_flight_writes_the_manifest_and_exits_143() {
    let (pair, manifests, cfg) = slow_multipart_job("sig-drain").await;
    let mut run = Running::start(&["run", "--config", &cfg, "--output", "json"]);
    let (escrow, bucket) = (pair.escrow.clone(), pair.dest_bucket.clone());
    run.until("a multipart upload was open", || {
        let (escrow, bucket) = (escrow.clone(), bucket.clone());
        async move { open_uploads(&escrow, &bucket).await > 0 }
    })
    .await;
    run.signal("TERM");
    let (code, stdout, stderr) = run.wait();
    assert_eq!(code, 143, "{stdout}\n{stderr}");
    assert!(stderr.contains("SIGTERM") && stderr.contains("drain"), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("a JSON report");
    let j = job(&doc);
    // The copy in flight finished within the drain; nothing new started.
    assert_eq!(j["cancelled"], true, "{j}");
    let copied = j["copied"].as_u64().unwrap();
    assert!((1..3).contains(&copied), "{j}");
    assert_eq!(j["failed"], 0, "{j}");
    let manifest = the_manifest(&pair.escrow, &manifests).await;
    let record = &manifest.jobs["big"];
    assert_eq!(record.summary.as_ref().map(|s| s.cancelled), Some(true));
    let in_manifest: Vec<&str> = record
        .items
        .iter()
        .filter(|i| i.outcome == ItemOutcome::Copied)
        .map(|i| i.key.as_str())
        .collect();
    assert_eq!(in_manifest.len() as u64, copied, "{:?}", record.items);
    assert_eq!(manifest.end.jobs, 1);
    for key in in_manifest {
        let body = pair.escrow_get(key).await.expect("a copied object is in escrow");
        assert_eq!(body.len(), 11 * MIB);
    }
    assert_no_upload_left(&pair).await;
    assert_lease_released(&pair.escrow, &manifests, "big").await;
}

#[tokio::test]
async fn when_the_drain_runs_out_the_copy_is_stopped_and_its_upload_aborted() {
    let (pair, manifests, cfg) = slow_multipart_job("sig-stop").await;
    let args = ["run", "--config", &cfg, "--output", "json", "--drain-timeout", "0s"];
    let mut run = Running::start(&[&args[..], &["--log-format", "json"]].concat());
    let (escrow, bucket) = (pair.escrow.clone(), pair.dest_bucket.clone());
    run.until("a multipart upload was open", || {
        let (escrow, bucket) = (escrow.clone(), bucket.clone());
        async move { open_uploads(&escrow, &bucket).await > 0 }
    })
    .await;
    run.signal("TERM");
    let (code, stdout, stderr) = run.wait();
    assert_eq!(code, 143, "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("a JSON report");
    let j = job(&doc);
    assert_eq!(j["cancelled"], true, "{j}");
    assert!(j["failed"].as_u64().unwrap() >= 1, "the copy in flight was stopped: {j}");
    // The log says so, as a JSON line.
    let line = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"].as_str().is_some_and(|m| m.contains("drain time ran out")))
        .unwrap_or_else(|| panic!("a JSON log line of the stop in {stderr}"));
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(line["timestamp"].is_string(), "{line}");
    // The stopped items are failed in the manifest, and not in escrow.
    let manifest = the_manifest(&pair.escrow, &manifests).await;
    let record = &manifest.jobs["big"];
    let failed: Vec<_> = record.items.iter().filter(|i| i.outcome == ItemOutcome::Failed).collect();
    assert!(!failed.is_empty(), "{:?}", record.items);
    for item in &failed {
        assert!(item.error.as_deref().is_some_and(|e| e.contains("cancelled")), "{item:?}");
        assert!(pair.escrow_get(&item.key).await.is_none(), "{} is not in escrow", item.key);
    }
    for item in record.items.iter().filter(|i| i.outcome == ItemOutcome::Copied) {
        assert_eq!(pair.escrow_get(&item.key).await.map(|b| b.len()), Some(11 * MIB));
    }
    assert_no_upload_left(&pair).await;
    assert_lease_released(&pair.escrow, &manifests, "big").await;
    // The next run (unpaced) finishes the job.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("max_requests_per_second = 4\n", "");
    std::fs::write(&cfg, text).unwrap();
    let again = cli(&["run", "--config", &cfg, "--output", "json"]);
    assert_eq!(again.code, 0, "{again:?}");
    for i in 0..3 {
        assert_eq!(pair.escrow_get(&format!("big/{i}.bin")).await.map(|b| b.len()), Some(11 * MIB));
    }
    assert_no_upload_left(&pair).await;
}

#[tokio::test]
async fn a_second_signal_during_a_drill_still_deletes_what_the_drill_created() {
    // Escrow holds three 40 MiB objects: a drill restores them one at a
    // time, each a while in flight, so the signals come while it restores.
    let pair = BucketPair::new("sig-drill").await;
    for i in 0..3u8 {
        pair.escrow
            .put_object()
            .bucket(&pair.dest_bucket)
            .key(format!("obj/{i}"))
            .body(ByteStream::from(vec![i; 40 * MIB]))
            .send()
            .await
            .expect("put an escrow object");
    }
    let cfg = config_with_jobs(&format!(
        "[[s3]]\nname = \"assets\"\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\nconcurrency = 1\n",
        pair.source_bucket, pair.dest_bucket
    ));
    let cfg = cfg.to_str().unwrap();
    let drill_bucket = unique("sig-drill-target");
    let recovery = s3(&admin("333333333333").await);
    let mut drill = Running::start(&[
        "restore",
        "--config",
        cfg,
        "--job",
        "assets",
        "--target-role-arn",
        RECOVERY_ROLE,
        "--target-bucket",
        &drill_bucket,
        "--drill",
        "--output",
        "json",
    ]);
    let (client, bucket) = (recovery.clone(), drill_bucket.clone());
    drill
        .until("the drill restored an object (the next is in flight)", || {
            let (client, bucket) = (client.clone(), bucket.clone());
            async move {
                let listed = client.list_objects_v2().bucket(bucket).send().await;
                listed.is_ok_and(|o| o.key_count().unwrap_or(0) > 0)
            }
        })
        .await;
    drill.signal("TERM");
    let first = drill.stderr.clone();
    drill
        .until("the first signal was heard", || {
            let first = first.clone();
            async move { first.lock().unwrap().contains("nothing new starts") }
        })
        .await;
    // The copy in flight would get 30 s to finish: the second signal stops
    // it, and the drill still cleans up.
    drill.signal("TERM");
    let (code, stdout, stderr) = drill.wait();
    assert_eq!(code, 143, "{stdout}\n{stderr}");
    assert!(stderr.contains("SIGTERM again"), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("a JSON report");
    let r = &doc["restore"];
    assert_eq!(r["drill"]["cleaned_target"], true, "{r}");
    assert!(r["restored"].as_u64().unwrap() < 3, "interrupted: {r}");
    assert!(
        recovery.head_bucket().bucket(&drill_bucket).send().await.is_err(),
        "the drill deleted its bucket"
    );
}
