//! The S3 Batch Operations engine across two accounts on the emulator
//! (moto has no S3 Control jobs: xtask's moto_patch_s3control.py runs a
//! Copy job's tasks with CopyObject and writes AWS's completion report).
//! A job runs end to end, through the S3 Control client escrow-sync builds
//! for an overridden endpoint; a re-run of the same plan creates no second
//! job; a `--no-wait` job is folded in by the next run, whose failed tasks
//! (an object the primary deleted, one it rewrote after the plan) are
//! reported with their reasons and retried by the run after.

use std::time::Duration;

use escrow_sync_core::{Job, JobContext, Mode, Report};
use escrow_sync_e2e::{BucketPair, ESCROW, PRIMARY, create_bucket, s3, sessions, unique};
use escrow_sync_s3::{BatchControl, BatchOptions, Engine, S3CopyJob, S3Sink, S3Source};

/// Keys that a naive CSV manifest would break.
/// (A newline in a key is covered by the mocks and the property tests: the
/// emulator's HTTP server cannot take one in a path.)
const KEYS: [&str; 3] = ["plain.txt", "a,comma.txt", "per%cent + space/and;\"quote\".txt"];

struct Setup {
    pair: BucketPair,
    batch_bucket: String,
    protection: escrow_sync_s3::Protection,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let pair = BucketPair::new(name).await;
        let batch_bucket = unique(&format!("{name}-batch"));
        create_bucket(&pair.escrow, &batch_bucket, true).await;
        Setup { pair, batch_bucket, protection: escrow_sync_s3::Protection::new() }
    }

    async fn job(&self, wait: bool) -> S3CopyJob {
        let s = sessions().await;
        let source = S3Source::from_client(s3(&s.primary), &self.pair.source_bucket)
            .with_expected_owner(Some(PRIMARY.into()));
        let sink = S3Sink::from_client(s3(&s.escrow), &self.pair.dest_bucket)
            .with_expected_owner(Some(ESCROW.into()))
            .with_protection(self.protection.clone());
        let options = BatchOptions::new(
            BatchControl::for_session(&s.escrow),
            ESCROW,
            format!("arn:aws:iam::{ESCROW}:role/escrow-batch"),
            &self.batch_bucket,
        )
        .with_wait(wait)
        .with_polling(
            Duration::from_millis(10),
            Duration::from_millis(50),
            Duration::from_secs(60),
        );
        S3CopyJob::new(source, sink).with_engine(Engine::BatchOperations, Some(options))
    }

    async fn run(&self, wait: bool) -> Report {
        self.job(wait).await.execute(Mode::Run, &JobContext::new()).await.expect("a run")
    }

    async fn batch_files(&self) -> Vec<String> {
        escrow_sync_e2e::keys(&self.pair.escrow, &self.batch_bucket).await
    }
}

#[tokio::test]
async fn a_batch_job_copies_end_to_end_and_a_rerun_creates_no_second_job() {
    let t = Setup::new("batch").await;
    for (i, key) in KEYS.iter().enumerate() {
        t.pair.put(key, format!("content {i}")).await;
    }
    let report = t.run(true).await;
    assert_eq!((report.copied, report.failed), (3, 0), "{report:#?}");
    for (i, key) in KEYS.iter().enumerate() {
        assert_eq!(
            t.pair.escrow_get(key).await.as_deref(),
            Some(format!("content {i}").as_bytes()),
            "{key:?} copied by the job"
        );
    }
    let files = t.batch_files().await;
    assert!(files.iter().any(|k| k.ends_with("/manifest.csv")), "{files:?}");
    assert!(files.iter().any(|k| k.contains("/report/job-") && k.ends_with("/manifest.json")));
    // Nothing changed: the next run plans no copy and creates no job.
    let again = t.run(true).await;
    assert_eq!((again.copied, again.skipped), (0, 3), "{again:#?}");
    let manifests = t.batch_files().await.iter().filter(|k| k.ends_with("/manifest.csv")).count();
    assert_eq!(manifests, 1, "one job for one plan");
    let state = t.job(true).await.batch_state().await.unwrap().expect("a job record");
    assert_eq!((state.status.as_str(), state.succeeded, state.folded), ("Complete", 3, true));
}

#[tokio::test]
async fn a_no_wait_job_is_folded_by_the_next_run_and_its_failed_tasks_retried() {
    let t = Setup::new("batchwait").await;
    for key in ["keep.txt", "gone.txt", "swapped.txt"] {
        t.pair.put(key, "planned").await;
    }
    let first = t.run(false).await;
    assert_eq!(first.copied, 0, "{first:#?}");
    assert!(first.notes.iter().any(|n| n.contains("--no-wait")), "{:?}", first.notes);
    // The primary moves between plan and copy: one object deleted, one
    // rewritten.
    t.pair
        .primary
        .delete_object()
        .bucket(&t.pair.source_bucket)
        .key("gone.txt")
        .send()
        .await
        .unwrap();
    t.pair.put("swapped.txt", "rewritten after the plan").await;
    // `status` sees the job, not yet folded into a run.
    let state = t.job(true).await.batch_state().await.unwrap().expect("a job record");
    assert!(!state.folded, "{state:?}");

    let second = t.run(true).await;
    let failed: Vec<(&str, &str)> =
        second.failures.iter().map(|f| (f.key.as_str(), f.error.as_str())).collect();
    assert_eq!(second.failed, 2, "{failed:?}");
    assert!(failed.iter().any(|(k, e)| *k == "gone.txt" && e.contains("NoSuchKey")), "{failed:?}");
    // The rewrite is caught either by the job (rewritten after the newest
    // planned modification: 412) or, within the same second, by the check
    // of the copy against the plan.
    assert!(
        failed.iter().any(|(k, e)| *k == "swapped.txt"
            && (e.contains("PreconditionFailed") || e.contains("differs from the planned"))),
        "{failed:?}"
    );
    assert_eq!(t.pair.escrow_get("keep.txt").await.as_deref(), Some(&b"planned"[..]));
    // Whichever caught it, escrow now holds the primary's current content
    // (copied by this run's own job when the first one refused it).
    assert_eq!(
        t.pair.escrow_get("swapped.txt").await.as_deref(),
        Some(&b"rewritten after the plan"[..])
    );

    // The run after retries what failed: the object put back is copied by a
    // new job.
    t.pair.put("gone.txt", "back again").await;
    let third = t.run(true).await;
    assert_eq!((third.copied, third.failed), (1, 0), "{third:#?}");
    assert_eq!(t.pair.escrow_get("gone.txt").await.as_deref(), Some(&b"back again"[..]));
}

/// The CLI: `run --no-wait` returns once the job is created, `status` shows
/// the job not yet folded (in text and in JSON, which keeps to its schema),
/// and the next `run` folds it in.
#[tokio::test]
async fn run_no_wait_then_status_then_run_folds_the_job() {
    use escrow_sync_e2e::{ESCROW_ROLE, READER_ROLE, cli, write_config};
    let t = Setup::new("batchcli").await;
    t.pair.put("a.txt", "one").await;
    t.pair.put("b,c.txt", "two").await;
    let manifests = unique("batchcli-runs");
    create_bucket(&t.pair.escrow, &manifests, true).await;
    let cfg = write_config(&format!(
        r#"[escrow]
region = "us-east-1"
role_arn = "{ESCROW_ROLE}"
account_id = "{ESCROW}"
manifest_bucket = "{manifests}"
batch_role_arn = "arn:aws:iam::{ESCROW}:role/escrow-batch"

[primary]
account_id = "{PRIMARY}"
role_arn = "{READER_ROLE}"
external_id = "test-external-id"

[[s3]]
name = "bulk"
source_bucket = "{}"
dest_bucket = "{}"
engine = "batch-operations"
batch_bucket = "{}"
"#,
        t.pair.source_bucket, t.pair.dest_bucket, t.batch_bucket
    ));
    let cfg = cfg.to_str().unwrap();
    let first = cli(&["run", "-c", cfg, "--no-wait", "--output", "json"]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert_eq!(t.pair.escrow_get("a.txt").await, None, "nothing copied yet");

    let status = cli(&["status", "-c", cfg, "--output", "json"]);
    let doc = status.json();
    let job = &doc["jobs"][0]["batch_job"];
    assert_eq!(job["folded"], false, "{doc:#}");
    assert!(job["job_id"].as_str().is_some_and(|id| !id.is_empty()), "{doc:#}");
    escrow_sync_e2e::assert_schema("status", &doc);
    let text = cli(&["status", "-c", cfg]);
    assert!(text.stdout.contains("batch job "), "{}", text.stdout);

    let second = cli(&["run", "-c", cfg, "--output", "json"]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert_eq!(t.pair.escrow_get("a.txt").await.as_deref(), Some(&b"one"[..]));
    assert_eq!(t.pair.escrow_get("b,c.txt").await.as_deref(), Some(&b"two"[..]));
    let doc = cli(&["status", "-c", cfg, "--output", "json"]).json();
    assert_eq!(doc["jobs"][0]["batch_job"]["folded"], true, "{doc:#}");
    assert_eq!(doc["jobs"][0]["last_run"]["copied"], 2, "{doc:#}");
}

/// A source object uploaded in parts gets a new ETag from a Batch Copy (a
/// CopyObject): its copy counts once the source is still the planned
/// object, and the next run copies it no more. A key in escrow-sync's own
/// folders fails as the direct path fails it and never reaches a job.
#[tokio::test]
async fn copies_of_multipart_objects_verify_once_and_own_folder_keys_stay_out() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let t = Setup::new("batchparts").await;
    let (c, bucket) = (&t.pair.primary, &t.pair.source_bucket);
    let up = c.create_multipart_upload().bucket(bucket).key("parts.bin").send().await.unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    let first = vec![b'p'; 5 << 20];
    for (n, body) in [(1, first.clone()), (2, b"tail".to_vec())] {
        let out = c
            .upload_part()
            .bucket(bucket)
            .key("parts.bin")
            .upload_id(id)
            .part_number(n)
            .body(body.into())
            .send()
            .await
            .unwrap();
        parts.push(CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build());
    }
    c.complete_multipart_upload()
        .bucket(bucket)
        .key("parts.bin")
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .unwrap();
    t.pair.put("plain.txt", "plain").await;
    t.pair.put(".escrow-sync-uploads/planted", "a journal entry from the primary").await;

    let report = t.run(true).await;
    assert_eq!((report.copied, report.failed), (2, 1), "{report:#?}");
    assert_eq!(report.failures[0].key, ".escrow-sync-uploads/planted");
    assert_eq!(report.failures[0].kind, escrow_sync_core::ErrorKind::Unsupported);
    let mut want = first;
    want.extend_from_slice(b"tail");
    assert_eq!(t.pair.escrow_get("parts.bin").await.as_deref(), Some(&want[..]));
    assert!(
        !t.pair.escrow_keys().await.iter().any(|k| k.starts_with(".escrow-sync-uploads/")),
        "the planted key is never copied"
    );

    let again = t.run(true).await;
    assert_eq!((again.copied, again.skipped, again.failed), (0, 2, 1), "{again:#?}");
    let manifests = t.batch_files().await.iter().filter(|k| k.ends_with("/manifest.csv")).count();
    assert_eq!(manifests, 1, "no second job for copies already made");
}

/// Under the escrow key every copy has an ETag of its own: a job's copies
/// count once the source, read again after the job, is still the planned
/// object; they are recorded, so the next run copies nothing, and an
/// object rewritten later is copied again (its record names the old
/// source ETag).
#[tokio::test]
async fn copies_under_the_escrow_key_are_checked_against_the_source_and_recorded() {
    let mut t = Setup::new("batchkms").await;
    let key = escrow_sync_e2e::create_kms_key(&sessions().await.escrow).await;
    t.protection = escrow_sync_s3::Protection::new().with_kms_key_id(Some(key));
    t.pair.put("one.txt", "first").await;
    t.pair.put("two.txt", "second").await;
    let report = t.run(true).await;
    assert_eq!((report.copied, report.failed), (2, 0), "{report:#?}");
    let again = t.run(true).await;
    assert_eq!((again.copied, again.skipped), (0, 2), "{again:#?}");
    t.pair.put("two.txt", "second, rewritten").await;
    let third = t.run(true).await;
    assert_eq!((third.copied, third.skipped, third.failed), (1, 1, 0), "{third:#?}");
    assert_eq!(t.pair.escrow_get("two.txt").await.as_deref(), Some(&b"second, rewritten"[..]));
}

/// S3 Control forgets a job 90 days on (DescribeJob: 404
/// NotFoundException): a record of such a job that no run folded shows as
/// gone in `status`, and the next run records it folded with a warning and
/// copies what escrow lacks, instead of failing every run.
#[tokio::test]
async fn a_job_s3_control_forgot_does_not_stop_the_runs() {
    let t = Setup::new("batchgone").await;
    t.pair.put("a.txt", "one").await;
    let pair = format!("{}/\n{}/", t.pair.source_bucket, t.pair.dest_bucket);
    let folder = &escrow_sync_s3::client_token(pair.as_bytes(), "pair")[..16];
    let record = r#"{"job_id":"00000000-0000-0000-0000-000000000000","token":"t","folder":"escrow-sync/batch/x/","folded":false}"#;
    t.pair
        .escrow
        .put_object()
        .bucket(&t.batch_bucket)
        .key(format!("{}{folder}/job.json", escrow_sync_s3::DEFAULT_BATCH_PREFIX))
        .body(record.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let state = t.job(true).await.batch_state().await.unwrap().expect("the record");
    assert_eq!(state.status, escrow_sync_s3::JOB_GONE, "{state:?}");

    let report = t.run(true).await;
    assert!(
        report.warnings.iter().any(|w| w.contains("gone from S3 Control")),
        "{:?}",
        report.warnings
    );
    assert_eq!((report.copied, report.failed), (1, 0), "{report:#?}");
    assert_eq!(t.pair.escrow_get("a.txt").await.as_deref(), Some(&b"one"[..]));
}
