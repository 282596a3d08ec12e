//! The S3 Batch Operations engine's request shapes, with aws-smithy-mocks
//! (the emulator has no S3 Control jobs): CreateJob with every destination
//! setting, DescribeJob polled until the job ends, a failed job, a failed
//! task, a copy that differs from the plan, `--no-wait`, and a client token
//! that a re-run of the same plan repeats.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, Object};
use aws_sdk_s3control::operation::create_job::CreateJobOutput;
use aws_sdk_s3control::operation::describe_job::DescribeJobOutput;
use aws_sdk_s3control::types::{
    JobDescriptor, JobFailure, JobManifestFieldName, JobManifestFormat, JobProgressSummary,
    JobReportFormat, JobReportScope, JobStatus, S3ChecksumAlgorithm, S3ObjectLockMode,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use escrow_sync_core::{ErrorKind, Job, JobContext, Mode, Report};

/// A record object written: its key and body.
type Recorded = (String, Vec<u8>);
use escrow_sync_s3::{
    BatchControl, BatchOptions, Engine, LockMode, ObjectLock, Protection, S3CopyJob, S3Sink,
    S3Source,
};

/// A key with every character that could break a CSV row or its decoding.
const ODD: &str = "odd,key\n100%+ \"x\".txt";
const KMS: &str = "arn:aws:kms:us-east-1:222222222222:key/escrow";

fn s3(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(1))))
}

fn control(rules: &[&Rule]) -> aws_sdk_s3control::Client {
    mock_client!(aws_sdk_s3control, RuleMode::MatchAny, rules)
}

fn describe(status: JobStatus, ok: i64, failed: i64) -> DescribeJobOutput {
    DescribeJobOutput::builder()
        .job(
            JobDescriptor::builder()
                .job_id("job-1")
                .status(status)
                .progress_summary(
                    JobProgressSummary::builder()
                        .total_number_of_tasks(ok + failed)
                        .number_of_tasks_succeeded(ok)
                        .number_of_tasks_failed(failed)
                        .build(),
                )
                .build(),
        )
        .build()
}

/// What the job under test is given and what it sent.
struct World {
    /// The report prefix CreateJob named (the report's folder).
    report_prefix: Arc<Mutex<String>>,
    /// The client tokens CreateJob got.
    tokens: Arc<Mutex<Vec<String>>>,
    /// The report's result CSV.
    result_csv: String,
    /// The escrow copy's ETag as HeadObject answers.
    copy_etag: &'static str,
    /// DescribeJob's answers, in order (the last repeats).
    statuses: Vec<DescribeJobOutput>,
    /// Whether the run waits for its job.
    wait: bool,
    /// The pair's job record in escrow, if any (JSON).
    record: Option<String>,
    /// The source object's ETag (listed, planned and read again).
    src_etag: &'static str,
    /// The source's LastModified as HeadObject answers after the job (it
    /// was listed at 1,700,000,000).
    src_modified_after: i64,
    /// More source keys, listed after the odd one.
    extra_src: Vec<&'static str>,
    /// The KMS key the escrow copy says it is encrypted with.
    copy_kms: &'static str,
    /// Every object written into escrow: key and body.
    puts: Arc<Mutex<Vec<Recorded>>>,
    /// The CRC32C checksums HeadObject answers: of the copy, of the source.
    crc: (Option<&'static str>, Option<&'static str>),
}

impl World {
    fn new() -> Self {
        World {
            report_prefix: Arc::default(),
            tokens: Arc::default(),
            result_csv: "prod,odd%2Ckey%0A100%25%2B%20%22x%22.txt,,succeeded,,200,Successful\n"
                .into(),
            copy_etag: "\"a\"",
            statuses: vec![describe(JobStatus::Complete, 1, 0)],
            wait: true,
            record: None,
            src_etag: "\"a\"",
            src_modified_after: 1_700_000_000,
            extra_src: Vec::new(),
            copy_kms: KMS,
            puts: Arc::default(),
            crc: (None, None),
        }
    }
}

struct Rules {
    record_get: Rule,
    src_list: Rule,
    dst_list: Rule,
    batch_list: Rule,
    put: Rule,
    get_plan: Rule,
    get_manifest: Rule,
    get_result: Rule,
    head: Rule,
    src_head: Rule,
    create: Rule,
    describe: Rule,
}

impl Rules {
    fn new(w: &World) -> Self {
        let (prefix, prefix2, prefix3) =
            (w.report_prefix.clone(), w.report_prefix.clone(), w.report_prefix.clone());
        let tokens = w.tokens.clone();
        let csv = w.result_csv.clone();
        let etag = w.copy_etag;
        let statuses = w.statuses.clone();
        let mut describe = mock!(aws_sdk_s3control::Client::describe_job)
            .match_requests(|r| {
                r.account_id() == Some("222222222222") && r.job_id() == Some("job-1")
            })
            .sequence();
        for s in &statuses[..statuses.len() - 1] {
            let s = s.clone();
            describe = describe.output(move || s.clone());
        }
        let last = statuses.last().cloned().unwrap();
        let describe = describe.output(move || last.clone()).repeatedly().build();
        let (record, record2) = (w.record.clone(), w.record.clone());
        let (src_etag, extra) = (w.src_etag, w.extra_src.clone());
        let (modified_after, copy_kms) = (w.src_modified_after, w.copy_kms);
        let (copy_crc, src_crc) = w.crc;
        Rules {
            record_get: mock!(Client::get_object)
                .match_requests(|r| r.key().is_some_and(|k| k.ends_with("/job.json")))
                .then_output(move || {
                    GetObjectOutput::builder()
                        .body(ByteStream::from(record2.clone().unwrap_or_default().into_bytes()))
                        .build()
                }),
            src_list: mock!(Client::list_objects_v2)
                .match_requests(|r| r.bucket() == Some("prod"))
                .then_output(move || {
                    let mut keys = vec![ODD];
                    keys.extend(extra.iter().copied());
                    keys.sort();
                    let mut out = ListObjectsV2Output::builder();
                    for k in keys {
                        out = out.contents(
                            Object::builder()
                                .key(k)
                                .size(5)
                                .e_tag(src_etag)
                                .last_modified(aws_sdk_s3::primitives::DateTime::from_secs(1_700_000_000))
                                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                                .build(),
                        );
                    }
                    out.build()
                }),
            dst_list: mock!(Client::list_objects_v2)
                .match_requests(|r| r.bucket() == Some("escrow"))
                .then_output(|| ListObjectsV2Output::builder().build()),
            batch_list: {
                let asked = Arc::new(Mutex::new(String::new()));
                let seen = asked.clone();
                mock!(Client::list_objects_v2)
                    .match_requests(move |r| {
                        *asked.lock().unwrap() = r.prefix().unwrap_or("").to_string();
                        r.bucket() == Some("escrow-batch")
                    })
                    .then_output(move || {
                        let mut out = ListObjectsV2Output::builder();
                        let prefix = seen.lock().unwrap().clone();
                        if record.is_some() && prefix.ends_with("job.json") {
                            // The record itself, listed under its own key.
                            out = out.contents(Object::builder().key(prefix).size(10).build());
                        }
                        out.build()
                    })
            },
            put: {
                let puts = w.puts.clone();
                mock!(Client::put_object)
                    .match_requests(move |r| {
                        if let (Some(k), Some(b)) = (r.key(), r.body().bytes()) {
                            puts.lock().unwrap().push((k.to_string(), b.to_vec()));
                        }
                        r.expected_bucket_owner() == Some("222222222222")
                    })
                    .then_output(|| PutObjectOutput::builder().e_tag("\"m1\"").build())
            },
            get_plan: mock!(Client::get_object)
                .match_requests(|r| r.key().is_some_and(|k| k.ends_with("/plan.json")))
                .then_output(move || {
                    let plan = serde_json::json!([{"key": ODD, "size": 5, "etag": src_etag,
                        "modified": 1_700_000_000}]);
                    GetObjectOutput::builder()
                        .body(ByteStream::from(serde_json::to_vec(&plan).unwrap()))
                        .build()
                }),
            get_manifest: mock!(Client::get_object)
                .match_requests(move |r| {
                    let p = prefix.lock().unwrap().clone();
                    r.bucket() == Some("escrow-batch")
                        && r.key() == Some(format!("{p}/job-job-1/manifest.json").as_str())
                })
                .then_output(move || {
                    let p = prefix2.lock().unwrap().clone();
                    let m = serde_json::json!({
                        "Format": "Report_CSV_20180820",
                        "ReportCreationDate": "2026-12-06T17:00:00.000Z",
                        "Results": [{"TaskExecutionStatus": "succeeded",
                            "Bucket": "arn:aws:s3:::escrow-batch", "MD5Checksum": "x",
                            "Key": format!("{p}/job-job-1/results/r1.csv")}],
                        "ReportSchema": "Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, Result Message"
                    });
                    GetObjectOutput::builder()
                        .body(ByteStream::from(serde_json::to_vec(&m).unwrap()))
                        .build()
                }),
            get_result: mock!(Client::get_object)
                .match_requests(move |r| {
                    let p = prefix3.lock().unwrap().clone();
                    r.key() == Some(format!("{p}/job-job-1/results/r1.csv").as_str())
                })
                .then_output(move || GetObjectOutput::builder().body(ByteStream::from(csv.clone().into_bytes())).build()),
            head: mock!(Client::head_object)
                .match_requests(|r| r.bucket() == Some("escrow") && r.key() == Some(ODD))
                .then_output(move || {
                    HeadObjectOutput::builder()
                        .content_length(5)
                        .e_tag(etag)
                        .ssekms_key_id(copy_kms)
                        .set_checksum_crc32_c(copy_crc.map(str::to_string))
                        .build()
                }),
            src_head: mock!(Client::head_object)
                .match_requests(|r| r.bucket() == Some("prod") && r.key() == Some(ODD))
                .then_output(move || {
                    HeadObjectOutput::builder()
                        .content_length(5)
                        .e_tag(src_etag)
                        .last_modified(aws_sdk_s3::primitives::DateTime::from_secs(modified_after))
                        .set_checksum_crc32_c(src_crc.map(str::to_string))
                        .build()
                }),
            create: {
                let report_prefix = w.report_prefix.clone();
                mock!(aws_sdk_s3control::Client::create_job)
                    .match_requests(move |r| {
                        tokens.lock().unwrap().push(r.client_request_token().unwrap_or("").into());
                        if let Some(p) = r.report().and_then(|r| r.prefix()) {
                            *report_prefix.lock().unwrap() = p.to_string();
                        }
                        true
                    })
                    .then_output(|| CreateJobOutput::builder().job_id("job-1").build())
            },
            describe,
        }
    }

    fn job(&self, wait: bool) -> S3CopyJob {
        let primary = s3(&[&self.src_list, &self.src_head]);
        let escrow = s3(&[
            &self.record_get,
            &self.dst_list,
            &self.batch_list,
            &self.put,
            &self.get_plan,
            &self.get_manifest,
            &self.get_result,
            &self.head,
        ]);
        let source = S3Source::from_client(primary, "prod");
        let sink = S3Sink::from_client(escrow, "escrow")
            .with_expected_owner(Some("222222222222".into()))
            .with_protection(
                Protection::new()
                    .with_kms_key_id(Some(KMS.into()))
                    .with_object_lock(Some(ObjectLock::new(LockMode::Compliance, 30))),
            );
        let options = BatchOptions::new(
            BatchControl::from_client(control(&[&self.create, &self.describe])),
            "222222222222",
            "arn:aws:iam::222222222222:role/escrow-batch",
            "escrow-batch",
        )
        .with_prefix("jobs/")
        .with_wait(wait)
        .with_polling(
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_secs(30),
        );
        S3CopyJob::new(source, sink)
            .with_abort_stale_uploads_after(None)
            .with_engine(Engine::BatchOperations, Some(options))
    }
}

async fn run(w: &World) -> (Rules, Report) {
    let rules = Rules::new(w);
    let report = rules.job(w.wait).execute(Mode::Run, &JobContext::new()).await.unwrap();
    (rules, report)
}

#[tokio::test]
async fn create_job_carries_every_destination_setting() {
    let mut w = World::new();
    w.statuses = vec![describe(JobStatus::Active, 0, 0)];
    let rules = Rules::new(&w);
    let create = mock!(aws_sdk_s3control::Client::create_job)
        .match_requests(|r| {
            let op = r.operation().and_then(|o| o.s3_put_object_copy()).unwrap();
            let m = r.manifest().unwrap();
            let rep = r.report().unwrap();
            r.account_id() == Some("222222222222")
                && r.confirmation_required() == Some(false)
                && r.role_arn() == Some("arn:aws:iam::222222222222:role/escrow-batch")
                && r.client_request_token().is_some_and(|t| t.len() == 64)
                && m.spec().unwrap().format() == &JobManifestFormat::S3BatchOperationsCsv20180820
                && m.spec().unwrap().fields()
                    == [JobManifestFieldName::Bucket, JobManifestFieldName::Key]
                && {
                    let a = m.location().unwrap().object_arn();
                    a.starts_with("arn:aws:s3:::escrow-batch/jobs/") && a.ends_with("/manifest.csv")
                }
                && m.location().unwrap().e_tag() == "m1"
                && rep.enabled()
                && rep.bucket() == Some("arn:aws:s3:::escrow-batch")
                && rep.format() == Some(&JobReportFormat::ReportCsv20180820)
                && rep.report_scope() == Some(&JobReportScope::AllTasks)
                && rep.prefix().is_some_and(|p| p.starts_with("jobs/") && p.ends_with("/report"))
                && op.target_resource() == Some("arn:aws:s3:::escrow")
                && op.target_key_prefix().is_none()
                && op.sse_aws_kms_key_id() == Some(KMS)
                && op.object_lock_mode() == Some(&S3ObjectLockMode::Compliance)
                && op.object_lock_retain_until_date().is_some()
                && op.checksum_algorithm() == Some(&S3ChecksumAlgorithm::Crc32C)
                && op.un_modified_since_constraint()
                    == Some(&aws_smithy_types::DateTime::from_secs(1_700_000_000))
        })
        .then_output(|| CreateJobOutput::builder().job_id("job-1").build());
    let job = {
        let primary = s3(&[&rules.src_list]);
        let escrow = s3(&[&rules.dst_list, &rules.batch_list, &rules.put, &rules.head]);
        let sink = S3Sink::from_client(escrow, "escrow")
            .with_expected_owner(Some("222222222222".into()))
            .with_protection(
                Protection::new()
                    .with_kms_key_id(Some(KMS.into()))
                    .with_object_lock(Some(ObjectLock::new(LockMode::Compliance, 30))),
            );
        let options = BatchOptions::new(
            BatchControl::from_client(control(&[&create, &rules.describe])),
            "222222222222",
            "arn:aws:iam::222222222222:role/escrow-batch",
            "escrow-batch",
        )
        .with_prefix("jobs/")
        .with_wait(false);
        S3CopyJob::new(S3Source::from_client(primary, "prod"), sink)
            .with_abort_stale_uploads_after(None)
            .with_engine(Engine::BatchOperations, Some(options))
    };
    job.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!(create.num_calls(), 1, "CreateJob with every setting");
}

#[tokio::test]
async fn a_completed_job_folds_into_the_report() {
    let w = World::new();
    let (rules, report) = run(&w).await;
    assert_eq!(rules.create.num_calls(), 1);
    assert_eq!((report.copied, report.failed), (1, 0), "{report:?}");
    assert_eq!(report.bytes_copied, 5);
    assert_eq!(rules.head.num_calls(), 1, "each copy is checked against the plan");
    assert!(report.notes.iter().any(|n| n.contains("batch job job-1")), "{:?}", report.notes);
}

#[tokio::test]
async fn describe_job_is_polled_until_the_job_ends() {
    let mut w = World::new();
    w.statuses = vec![
        describe(JobStatus::Preparing, 0, 0),
        describe(JobStatus::Active, 0, 0),
        describe(JobStatus::Active, 0, 0),
        describe(JobStatus::Complete, 1, 0),
    ];
    let (rules, report) = run(&w).await;
    assert_eq!(rules.describe.num_calls(), 4);
    assert_eq!(report.copied, 1);
}

#[tokio::test]
async fn a_failed_job_fails_its_objects_with_the_reason() {
    let mut w = World::new();
    let failed = DescribeJobOutput::builder()
        .job(
            JobDescriptor::builder()
                .job_id("job-1")
                .status(JobStatus::Failed)
                .failure_reasons(
                    JobFailure::builder()
                        .failure_code("AccessDenied")
                        .failure_reason("the role cannot read the manifest")
                        .build(),
                )
                .build(),
        )
        .build();
    w.statuses = vec![failed];
    let (rules, report) = run(&w).await;
    assert_eq!((report.copied, report.failed), (0, 1));
    assert!(report.failures[0].error.contains("the role cannot read the manifest"), "{report:?}");
    assert_eq!(rules.head.num_calls(), 0);
}

#[tokio::test]
async fn a_failed_task_is_a_failure_with_its_reason() {
    let mut w = World::new();
    w.result_csv = "prod,odd%2Ckey%0A100%25%2B%20%22x%22.txt,,failed,AccessDenied,403,\"Access Denied, source\"\n".into();
    w.statuses = vec![describe(JobStatus::Complete, 0, 1)];
    let (_, report) = run(&w).await;
    assert_eq!((report.copied, report.failed), (0, 1));
    assert_eq!(report.failures[0].kind, ErrorKind::AccessDenied);
    assert!(report.failures[0].error.contains("Access Denied, source"), "{report:?}");
}

#[tokio::test]
async fn a_copy_unlike_the_plan_is_not_counted() {
    let mut w = World::new();
    w.copy_etag = "\"rewritten\"";
    let rules = Rules::new(&w);
    // Without an escrow key the ETag is compared.
    let primary = s3(&[&rules.src_list]);
    let escrow = s3(&[
        &rules.dst_list,
        &rules.batch_list,
        &rules.put,
        &rules.get_plan,
        &rules.get_manifest,
        &rules.get_result,
        &rules.head,
    ]);
    let options = BatchOptions::new(
        BatchControl::from_client(control(&[&rules.create, &rules.describe])),
        "222222222222",
        "arn:aws:iam::222222222222:role/escrow-batch",
        "escrow-batch",
    )
    .with_prefix("jobs/");
    let job = S3CopyJob::new(
        S3Source::from_client(primary, "prod"),
        S3Sink::from_client(escrow, "escrow").with_expected_owner(Some("222222222222".into())),
    )
    .with_abort_stale_uploads_after(None)
    .with_engine(Engine::BatchOperations, Some(options));
    let report = job.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!((report.copied, report.failed), (0, 1));
    assert_eq!(report.failures[0].kind, ErrorKind::PreconditionFailed);
    assert!(report.failures[0].error.contains("differs from the planned object"));
}

#[tokio::test]
async fn no_wait_returns_once_the_job_is_created() {
    let mut w = World::new();
    w.wait = false;
    w.statuses = vec![describe(JobStatus::Active, 0, 0)];
    let (rules, report) = run(&w).await;
    assert_eq!(rules.create.num_calls(), 1);
    assert_eq!(rules.describe.num_calls(), 1);
    assert_eq!((report.copied, report.failed), (0, 0));
    assert_eq!(rules.get_manifest.num_calls(), 0);
    assert!(report.notes.iter().any(|n| n.contains("--no-wait")), "{:?}", report.notes);
}

#[tokio::test]
async fn the_same_plan_sends_the_same_client_token() {
    let w = World::new();
    let rules = Rules::new(&w);
    for _ in 0..2 {
        rules.job(true).execute(Mode::Run, &JobContext::new()).await.unwrap();
    }
    let tokens = w.tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0], tokens[1]);
    assert_eq!(tokens[0].len(), 64);
}

#[tokio::test]
async fn a_new_job_after_a_folded_one_gets_another_token_so_failed_tasks_are_retried() {
    let w = World::new();
    let rules = Rules::new(&w);
    rules.job(true).execute(Mode::Run, &JobContext::new()).await.unwrap();
    let mut after = World::new();
    after.record =
        Some(r#"{"job_id":"job-0","token":"t","folder":"jobs/x/","folded":true}"#.into());
    let rules = Rules::new(&after);
    rules.job(true).execute(Mode::Run, &JobContext::new()).await.unwrap();
    let (first, second) = (w.tokens.lock().unwrap().clone(), after.tokens.lock().unwrap().clone());
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(first[0], second[0], "the same plan after a folded job is a new job");
}

#[tokio::test]
async fn plans_do_not_create_jobs() {
    let w = World::new();
    let rules = Rules::new(&w);
    let report = rules.job(true).execute(Mode::Plan, &JobContext::new()).await.unwrap();
    assert_eq!(report.missing, 1);
    assert_eq!(rules.create.num_calls(), 0);
}

#[tokio::test]
async fn auto_below_the_threshold_copies_directly() {
    let w = World::new();
    let rules = Rules::new(&w);
    let options = BatchOptions::new(
        BatchControl::from_client(control(&[&rules.create, &rules.describe])),
        "222222222222",
        "arn:aws:iam::222222222222:role/escrow-batch",
        "escrow-batch",
    );
    let copy = mock!(Client::copy_object)
        .match_requests(|r| r.bucket() == Some("escrow") && r.key() == Some(ODD))
        .then_output(|| aws_sdk_s3::operation::copy_object::CopyObjectOutput::builder().build());
    let tagging = mock!(Client::get_object_tagging).then_output(|| {
        aws_sdk_s3::operation::get_object_tagging::GetObjectTaggingOutput::builder()
            .set_tag_set(Some(vec![]))
            .build()
            .unwrap()
    });
    let job = S3CopyJob::new(
        S3Source::from_client(s3(&[&rules.src_list, &tagging]), "prod"),
        S3Sink::from_client(s3(&[&rules.dst_list, &rules.batch_list, &copy]), "escrow"),
    )
    .with_abort_stale_uploads_after(None)
    .with_engine(Engine::Auto { threshold: 1 }, Some(options));
    let report = job.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!(report.copied, 1, "{report:?}");
    assert_eq!(copy.num_calls(), 1);
    assert_eq!(rules.create.num_calls(), 0);
}

/// Under the escrow key a copy has an ETag of its own and a Batch Copy
/// cannot record the source's in metadata: the checked copies are recorded
/// beside the job's files, and the next plan takes such a copy for the
/// source's instead of copying it again.
#[tokio::test]
async fn batch_copies_under_the_escrow_key_are_recorded_and_not_copied_again() {
    let mut w = World::new();
    w.copy_etag = "\"kms-etag\"";
    let recorded: Arc<Mutex<Option<Recorded>>> = Arc::default();
    let rules = Rules::new(&w);
    let rec = recorded.clone();
    let put = mock!(Client::put_object)
        .match_requests(move |r| {
            if let (Some(k), Some(b)) = (r.key(), r.body().bytes())
                && k.contains("/copies/")
            {
                *rec.lock().unwrap() = Some((k.to_string(), b.to_vec()));
            }
            r.expected_bucket_owner() == Some("222222222222")
        })
        .then_output(|| PutObjectOutput::builder().e_tag("\"m1\"").build());
    let options = |c: &Rules| {
        BatchOptions::new(
            BatchControl::from_client(control(&[&c.create, &c.describe])),
            "222222222222",
            "arn:aws:iam::222222222222:role/escrow-batch",
            "escrow-batch",
        )
        .with_prefix("jobs/")
        .with_polling(
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_secs(30),
        )
    };
    let sink = |client: Client| {
        S3Sink::from_client(client, "escrow")
            .with_expected_owner(Some("222222222222".into()))
            .with_protection(Protection::new().with_kms_key_id(Some(KMS.into())))
    };
    let first = S3CopyJob::new(
        S3Source::from_client(s3(&[&rules.src_list, &rules.src_head]), "prod"),
        sink(s3(&[
            &rules.dst_list,
            &rules.batch_list,
            &put,
            &rules.get_plan,
            &rules.get_manifest,
            &rules.get_result,
            &rules.head,
        ])),
    )
    .with_abort_stale_uploads_after(None)
    .with_engine(Engine::BatchOperations, Some(options(&rules)));
    let report = first.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!(report.copied, 1, "{report:#?}");
    let (record_key, body) = recorded.lock().unwrap().clone().expect("the copies are recorded");
    let copies: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        copies,
        serde_json::json!([{"key": ODD, "escrow_etag": "\"kms-etag\"", "source_etag": "\"a\""}])
    );

    // The next run: escrow lists the copy with its own ETag.
    let next = Rules::new(&World::new());
    let dst_list = mock!(Client::list_objects_v2)
        .match_requests(|r| r.bucket() == Some("escrow"))
        .then_output(|| {
            ListObjectsV2Output::builder()
                .contents(Object::builder().key(ODD).size(5).e_tag("\"kms-etag\"").build())
                .build()
        });
    let (k1, k2) = (record_key.clone(), record_key.clone());
    let records_list = mock!(Client::list_objects_v2)
        .match_requests(|r| {
            r.bucket() == Some("escrow-batch")
                && r.prefix().is_some_and(|p| p.ends_with("/copies/"))
        })
        .then_output(move || {
            ListObjectsV2Output::builder()
                .contents(Object::builder().key(k1.clone()).size(100).build())
                .build()
        });
    let body2 = body.clone();
    let records_get = mock!(Client::get_object)
        .match_requests(move |r| r.key() == Some(k2.as_str()))
        .then_output(move || {
            GetObjectOutput::builder().body(ByteStream::from(body2.clone())).build()
        });
    let head =
        mock!(Client::head_object).match_requests(|r| r.key() == Some(ODD)).then_output(|| {
            HeadObjectOutput::builder().content_length(5).e_tag("\"kms-etag\"").build()
        });
    let second = S3CopyJob::new(
        S3Source::from_client(s3(&[&next.src_list]), "prod"),
        sink(s3(&[&records_list, &records_get, &dst_list, &next.batch_list, &head])),
    )
    .with_abort_stale_uploads_after(None)
    .with_engine(Engine::BatchOperations, Some(options(&next)));
    let report = second.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!((report.skipped, report.copied), (1, 0), "{report:#?}");
    assert_eq!(next.create.num_calls(), 0, "no job for a copy already made");
    assert_eq!(records_get.num_calls(), 1);
}

impl World {
    /// The bodies written under keys containing `part`, as text.
    fn written(&self, part: &str) -> Vec<(String, String)> {
        self.puts
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(k, b)| (k.clone(), String::from_utf8_lossy(b).into_owned()))
            .collect()
    }

    /// An unfolded record of job-1 (its files under `jobs/x/`), as an
    /// earlier `--no-wait` run leaves it.
    fn left_job(&mut self, retain_until: Option<i64>) {
        let until = retain_until.map(|u| format!(",\"retain_until\":{u}")).unwrap_or_default();
        self.record = Some(format!(
            r#"{{"job_id":"job-1","token":"t0","folder":"jobs/x/","folded":false{until}}}"#
        ));
        *self.report_prefix.lock().unwrap() = "jobs/x/report".into();
    }
}

/// The attack: under the escrow key the copy's ETag proves nothing, and the
/// job's one UnModifiedSinceConstraint (the newest planned modification)
/// lets through a key rewritten after it was listed when another key was
/// written later still. The source is read again after the job: rewritten
/// since the listing, the copy does not count and is not recorded as
/// checked (else `confirm_same` would take the attacker's bytes for the
/// planned object forever).
#[tokio::test]
async fn a_source_rewritten_after_the_listing_is_not_counted_under_the_escrow_key() {
    let mut w = World::new();
    w.copy_etag = "\"kms-etag\"";
    w.src_modified_after = 1_700_000_100;
    let (rules, report) = run(&w).await;
    assert_eq!((report.copied, report.failed), (0, 1), "{report:#?}");
    assert_eq!(report.failures[0].kind, ErrorKind::PreconditionFailed);
    assert!(report.failures[0].error.contains("modified after it was listed"), "{report:#?}");
    assert_eq!(rules.src_head.num_calls(), 1, "the source is read again after the job");
    assert!(w.written("/copies/").is_empty(), "a rewritten copy is never recorded as checked");

    // Unchanged since the listing: counted and recorded.
    let mut w = World::new();
    w.copy_etag = "\"kms-etag\"";
    let (_, report) = run(&w).await;
    assert_eq!((report.copied, report.failed), (1, 0), "{report:#?}");
    assert_eq!(w.written("/copies/").len(), 1);
}

/// The direct path refuses keys in escrow-sync's own folders (journal,
/// retention ledger); the batch path fails them the same way and never
/// names them in a manifest.
#[tokio::test]
async fn keys_in_escrow_syncs_own_folders_never_reach_a_manifest() {
    let mut w = World::new();
    w.extra_src = vec![".escrow-sync-uploads/planted", ".escrow-sync-retention/2026-12-07/x.jsonl"];
    let (_, report) = run(&w).await;
    let manifests = w.written("/manifest.csv");
    assert_eq!(manifests.len(), 1);
    assert!(!manifests[0].1.contains(".escrow-sync"), "{}", manifests[0].1);
    assert_eq!((report.copied, report.failed), (1, 2), "{report:#?}");
    for f in &report.failures {
        assert!(f.key.starts_with(".escrow-sync-"), "{f:?}");
        assert_eq!(f.kind, ErrorKind::Unsupported);
        assert!(f.error.contains("escrow-sync's own folder"), "{f:?}");
    }
}

/// A source uploaded in parts (ETag "…-N") gets a new ETag from a Batch
/// Copy: the copy counts once the source still is the planned object, is
/// recorded, and the next plan takes it for the source's.
#[tokio::test]
async fn copies_of_objects_uploaded_in_parts_verify_and_are_not_copied_again() {
    let mut w = World::new();
    w.src_etag = "\"a-2\"";
    w.copy_etag = "\"whole\"";
    let rules = Rules::new(&w);
    let options = |c: &Rules| {
        BatchOptions::new(
            BatchControl::from_client(control(&[&c.create, &c.describe])),
            "222222222222",
            "arn:aws:iam::222222222222:role/escrow-batch",
            "escrow-batch",
        )
        .with_prefix("jobs/")
        .with_polling(
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_secs(30),
        )
    };
    let sink = |client: Client| {
        S3Sink::from_client(client, "escrow").with_expected_owner(Some("222222222222".into()))
    };
    let first = S3CopyJob::new(
        S3Source::from_client(s3(&[&rules.src_list, &rules.src_head]), "prod"),
        sink(s3(&[
            &rules.dst_list,
            &rules.batch_list,
            &rules.put,
            &rules.get_plan,
            &rules.get_manifest,
            &rules.get_result,
            &rules.head,
        ])),
    )
    .with_abort_stale_uploads_after(None)
    .with_engine(Engine::BatchOperations, Some(options(&rules)));
    let report = first.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!((report.copied, report.failed), (1, 0), "{report:#?}");
    assert_eq!(rules.src_head.num_calls(), 1);
    let recorded = w.written("/copies/");
    assert_eq!(recorded.len(), 1);
    let (record_key, body) = recorded[0].clone();
    let copies: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        copies,
        serde_json::json!([{"key": ODD, "escrow_etag": "\"whole\"", "source_etag": "\"a-2\""}])
    );

    // The next run: escrow lists the copy with its own ETag.
    let mut again = World::new();
    again.src_etag = "\"a-2\"";
    let next = Rules::new(&again);
    let dst_list = mock!(Client::list_objects_v2)
        .match_requests(|r| r.bucket() == Some("escrow"))
        .then_output(|| {
            ListObjectsV2Output::builder()
                .contents(Object::builder().key(ODD).size(5).e_tag("\"whole\"").build())
                .build()
        });
    let k1 = record_key.clone();
    let records_list = mock!(Client::list_objects_v2)
        .match_requests(|r| {
            r.bucket() == Some("escrow-batch")
                && r.prefix().is_some_and(|p| p.ends_with("/copies/"))
        })
        .then_output(move || {
            ListObjectsV2Output::builder()
                .contents(Object::builder().key(k1.clone()).size(100).build())
                .build()
        });
    let records_get = mock!(Client::get_object)
        .match_requests(move |r| r.key() == Some(record_key.as_str()))
        .then_output(move || {
            GetObjectOutput::builder().body(ByteStream::from(body.clone().into_bytes())).build()
        });
    let head = mock!(Client::head_object)
        .match_requests(|r| r.key() == Some(ODD))
        .then_output(|| HeadObjectOutput::builder().content_length(5).e_tag("\"whole\"").build());
    let second = S3CopyJob::new(
        S3Source::from_client(s3(&[&next.src_list]), "prod"),
        sink(s3(&[&records_list, &records_get, &dst_list, &next.batch_list, &head])),
    )
    .with_abort_stale_uploads_after(None)
    .with_engine(Engine::BatchOperations, Some(options(&next)));
    let report = second.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!((report.skipped, report.copied), (1, 0), "{report:#?}");
    assert_eq!(next.create.num_calls(), 0, "no job for a copy already made");
}

/// A job's copies are locked until the date fixed when the job was
/// created; a job folded days later must file them under that date, not
/// the fold's, and every copy AWS made is filed, even one whose check
/// fails (its lock must not lapse unrenewed).
#[tokio::test]
async fn a_folded_job_files_every_copy_under_its_own_retain_until_day() {
    let mut w = World::new();
    w.left_job(Some(1_797_000_000)); // 2026-12-11
    w.copy_kms = "arn:aws:kms:us-east-1:222222222222:key/other";
    let (_, report) = run(&w).await;
    assert!(report.failed >= 1, "the copy under another key fails its check: {report:#?}");
    let day = w.written(".escrow-sync-retention/2026-12-11/");
    assert_eq!(day.len(), 1, "{:?}", w.written(".escrow-sync-retention/"));
    assert!(day[0].1.contains("odd,key"), "{}", day[0].1);
    // The new job this run made is filed under its own date (30 days on).
    let files: Vec<_> = w.written(".jsonl");
    assert_eq!(files.len(), 2, "{files:?}");
}

/// `auto` under its threshold copies directly, and the job an earlier run
/// left, folded first, stays in the report.
#[tokio::test]
async fn auto_under_the_threshold_keeps_the_folded_jobs_report() {
    let mut w = World::new();
    w.left_job(None);
    let rules = Rules::new(&w);
    let options = BatchOptions::new(
        BatchControl::from_client(control(&[&rules.create, &rules.describe])),
        "222222222222",
        "arn:aws:iam::222222222222:role/escrow-batch",
        "escrow-batch",
    )
    .with_prefix("jobs/");
    let copy = mock!(Client::copy_object)
        .match_requests(|r| r.bucket() == Some("escrow") && r.key() == Some(ODD))
        .then_output(|| aws_sdk_s3::operation::copy_object::CopyObjectOutput::builder().build());
    let tagging = mock!(Client::get_object_tagging).then_output(|| {
        aws_sdk_s3::operation::get_object_tagging::GetObjectTaggingOutput::builder()
            .set_tag_set(Some(vec![]))
            .build()
            .unwrap()
    });
    let job = S3CopyJob::new(
        S3Source::from_client(s3(&[&rules.src_list, &tagging]), "prod"),
        S3Sink::from_client(
            s3(&[
                &rules.record_get,
                &rules.dst_list,
                &rules.batch_list,
                &rules.put,
                &rules.get_plan,
                &rules.get_manifest,
                &rules.get_result,
                &rules.head,
                &copy,
            ]),
            "escrow",
        )
        .with_expected_owner(Some("222222222222".into())),
    )
    .with_abort_stale_uploads_after(None)
    .with_engine(Engine::Auto { threshold: 1000 }, Some(options));
    let report = job.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!(copy.num_calls(), 1, "the plan under the threshold is copied directly");
    assert_eq!(rules.create.num_calls(), 0);
    assert_eq!(report.copied, 2, "the folded job's copy and the direct one: {report:#?}");
    assert!(w.written("job.json").iter().any(|(_, b)| b.contains("\"folded\":true")));
}

/// S3 Control forgets a job 90 days on: a record of such a job that no
/// run folded must not stop every later run. It is recorded folded with a
/// warning, and the plan copies what escrow lacks.
#[tokio::test]
async fn a_job_s3_control_no_longer_knows_is_recorded_folded() {
    let mut w = World::new();
    w.record =
        Some(r#"{"job_id":"job-gone","token":"t0","folder":"jobs/x/","folded":false}"#.into());
    let rules = Rules::new(&w);
    let gone = mock!(aws_sdk_s3control::Client::describe_job)
        .match_requests(|r| r.job_id() == Some("job-gone"))
        .then_error(|| {
            aws_sdk_s3control::operation::describe_job::DescribeJobError::NotFoundException(
                aws_sdk_s3control::types::error::NotFoundException::builder()
                    .message("The specified job was not found")
                    .meta(
                        aws_smithy_types::error::ErrorMetadata::builder()
                            .code("NotFoundException")
                            .message("The specified job was not found")
                            .build(),
                    )
                    .build(),
            )
        });
    let mut job = rules.job(true);
    job = job.with_engine(
        Engine::BatchOperations,
        Some(
            BatchOptions::new(
                BatchControl::from_client(control(&[&gone, &rules.create, &rules.describe])),
                "222222222222",
                "arn:aws:iam::222222222222:role/escrow-batch",
                "escrow-batch",
            )
            .with_prefix("jobs/")
            .with_polling(
                Duration::from_millis(1),
                Duration::from_millis(2),
                Duration::from_secs(30),
            ),
        ),
    );
    let report = job.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!(gone.num_calls(), 1);
    assert!(
        report.warnings.iter().any(|w| w.contains("job-gone") && w.contains("gone")),
        "{report:#?}"
    );
    assert!(
        w.written("job.json")
            .iter()
            .any(|(_, b)| b.contains("\"job-gone\"") && b.contains("\"folded\":true")),
        "{:?}",
        w.written("job.json")
    );
    assert_eq!(rules.create.num_calls(), 1, "the plan is copied by a new job");
    assert_eq!(report.copied, 1, "{report:#?}");
    // `status` shows such a job as gone instead of failing.
    let state = job.batch_state().await.unwrap().expect("the record");
    assert_eq!(
        (state.job_id.as_str(), state.status.as_str()),
        ("job-gone", escrow_sync_s3::JOB_GONE)
    );
}

/// A task answers a manifest row only by the row's exact string: a report
/// row that decodes to the key but is written otherwise does not count, nor
/// does a key the report lists twice.
#[tokio::test]
async fn report_rows_match_the_manifest_string_exactly_and_once() {
    let row = "odd%2Ckey%0A100%25%2B%20%22x%22.txt";
    // Lower-case escapes: the same key once decoded, not the row written.
    let mut w = World::new();
    w.result_csv = format!("prod,{},,succeeded,,200,Successful\n", row.to_lowercase());
    let (_, report) = run(&w).await;
    assert_eq!((report.copied, report.failed), (0, 1), "{report:#?}");
    assert!(report.failures[0].error.contains("not in the completion report"), "{report:#?}");
    assert!(!report.findings.is_empty(), "the stray row is a finding");

    let mut w = World::new();
    w.result_csv =
        format!("prod,{row},,succeeded,,200,Successful\nprod,{row},,failed,InternalError,500,x\n");
    let (_, report) = run(&w).await;
    assert_eq!((report.copied, report.failed), (0, 1), "{report:#?}");
    assert!(report.failures[0].error.contains("more than once"), "{report:#?}");
    assert!(report.findings.iter().any(|f| format!("{f:?}").contains("more than once")));
}

/// A rewrite within the second of the listing leaves LastModified as
/// listed: where the source and the copy both carry a full-object checksum,
/// they must agree (a checksum of parts, "…-N", is not compared).
#[tokio::test]
async fn a_copy_whose_checksum_is_not_the_sources_is_not_counted() {
    let mut w = World::new();
    w.copy_etag = "\"kms-etag\"";
    w.crc = (Some("AAAAAA=="), Some("BBBBBB=="));
    let (_, report) = run(&w).await;
    assert_eq!((report.copied, report.failed), (0, 1), "{report:#?}");
    assert!(report.failures[0].error.contains("CRC32C checksum"), "{report:#?}");
    assert!(w.written("/copies/").is_empty());

    for crc in [(Some("AAAAAA=="), Some("AAAAAA==")), (Some("AAAAAA=="), Some("BBBBBB==-2"))] {
        let mut w = World::new();
        w.copy_etag = "\"kms-etag\"";
        w.crc = crc;
        let (_, report) = run(&w).await;
        assert_eq!((report.copied, report.failed), (1, 0), "{crc:?}: {report:#?}");
    }
}
