//! `S3CopyJob` through the `Job` contract, with aws-smithy-mocks: a run
//! aborts the multipart uploads an interrupted run left (those its journal
//! names), then copies; a plan looks for none and copies nothing.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
use aws_sdk_s3::operation::copy_object::CopyObjectOutput;
use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::get_object_tagging::GetObjectTaggingOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::Object;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use escrow_sync_core::{ItemLog, Job, JobContext, Mode};
use escrow_sync_s3::{JOURNAL_DIR, S3CopyJob, S3Sink, S3Source};

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(1))))
}

/// The mocks of one job: a primary holding `data/a.txt`, an empty escrow
/// (under `pfx/`) whose journal names an upload started two days ago.
struct Mocks {
    src_list: Rule,
    tagging: Rule,
    dst_list: Rule,
    journal_list: Rule,
    journal_get: Rule,
    abort: Rule,
    journal_delete: Rule,
    copy: Rule,
}

impl Mocks {
    fn new() -> Self {
        let journal = format!("pfx/{JOURNAL_DIR}");
        let (j1, j2, j3) = (journal.clone(), journal.clone(), journal.clone());
        Mocks {
            src_list: mock!(Client::list_objects_v2)
                .match_requests(|r| r.bucket() == Some("prod") && r.prefix() == Some("data/"))
                .then_output(|| {
                    ListObjectsV2Output::builder()
                        .contents(
                            Object::builder().key("data/a.txt").size(5).e_tag("\"a\"").build(),
                        )
                        .build()
                }),
            tagging: mock!(Client::get_object_tagging).then_output(|| {
                GetObjectTaggingOutput::builder().set_tag_set(Some(vec![])).build().unwrap()
            }),
            dst_list: mock!(Client::list_objects_v2)
                .match_requests(|r| r.bucket() == Some("escrow") && r.prefix() == Some("pfx/data/"))
                .then_output(|| ListObjectsV2Output::builder().build()),
            journal_list: mock!(Client::list_objects_v2)
                .match_requests(move |r| {
                    r.bucket() == Some("escrow") && r.prefix() == Some(j1.as_str())
                })
                .then_output(move || {
                    let two_days_ago =
                        std::time::SystemTime::now() - Duration::from_secs(48 * 3600);
                    ListObjectsV2Output::builder()
                        .contents(
                            Object::builder()
                                .key(format!("{j2}upload-1"))
                                .size(15)
                                .last_modified(DateTime::from(two_days_ago))
                                .build(),
                        )
                        .build()
                }),
            journal_get: mock!(Client::get_object)
                .match_requests(move |r| r.key().is_some_and(|k| k.starts_with(j3.as_str())))
                .then_output(|| {
                    GetObjectOutput::builder()
                        .body(ByteStream::from_static(b"pfx/data/big.bin"))
                        .build()
                }),
            abort: mock!(Client::abort_multipart_upload)
                .match_requests(|r| {
                    r.bucket() == Some("escrow")
                        && r.key() == Some("pfx/data/big.bin")
                        && r.upload_id() == Some("upload-1")
                })
                .then_output(|| AbortMultipartUploadOutput::builder().build()),
            journal_delete: mock!(Client::delete_object)
                .match_requests(|r| r.key().is_some_and(|k| k.contains(JOURNAL_DIR)))
                .then_output(|| DeleteObjectOutput::builder().build()),
            copy: mock!(Client::copy_object)
                .match_requests(|r| {
                    r.bucket() == Some("escrow")
                        && r.key() == Some("pfx/data/a.txt")
                        && r.copy_source_if_match() == Some("\"a\"")
                })
                .then_output(|| CopyObjectOutput::builder().build()),
        }
    }

    fn job(&self) -> S3CopyJob {
        let primary = client(&[&self.src_list, &self.tagging]);
        let escrow = client(&[
            &self.dst_list,
            &self.journal_list,
            &self.journal_get,
            &self.abort,
            &self.journal_delete,
            &self.copy,
        ]);
        let source = S3Source::from_client(primary, "prod").with_prefix("data/");
        let sink = S3Sink::from_client(escrow, "escrow").with_dest_prefix("pfx/");
        S3CopyJob::new(source, sink)
    }
}

#[tokio::test]
async fn a_run_aborts_the_uploads_an_interrupted_run_left_then_copies() {
    let mocks = Mocks::new();
    let job: Box<dyn Job> = Box::new(mocks.job());
    let logged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let to = logged.clone();
    let log: ItemLog = std::sync::Arc::new(move |r| to.lock().unwrap().push(r.item.key));
    let ctx = JobContext::new().with_item_log(log);
    let report = job.execute(Mode::Run, &ctx).await.unwrap();
    assert_eq!(mocks.abort.num_calls(), 1, "the stale upload is aborted");
    assert_eq!(mocks.journal_delete.num_calls(), 1, "and its journal entry removed");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("aborted 1 multipart upload(s)") && w.contains("s3://escrow")),
        "{:?}",
        report.warnings
    );
    assert_eq!(report.copied, 1, "{report:?}");
    assert_eq!(mocks.copy.num_calls(), 1);
    assert_eq!(*logged.lock().unwrap(), ["data/a.txt"]);
}

#[tokio::test]
async fn a_plan_aborts_nothing_and_copies_nothing() {
    let mocks = Mocks::new();
    let job: Box<dyn Job> = Box::new(mocks.job());
    let report = job.execute(Mode::Plan, &JobContext::new()).await.unwrap();
    assert_eq!(report.missing, 1, "{report:?}");
    assert_eq!(
        (mocks.journal_list.num_calls(), mocks.abort.num_calls(), mocks.copy.num_calls()),
        (0, 0, 0)
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[tokio::test]
async fn a_job_told_not_to_look_for_stale_uploads_does_not() {
    let mocks = Mocks::new();
    let job = mocks.job().with_abort_stale_uploads_after(None);
    let report = job.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!((mocks.journal_list.num_calls(), mocks.abort.num_calls()), (0, 0));
    assert_eq!(report.copied, 1);
}
