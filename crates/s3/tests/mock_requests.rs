//! Request shapes, paging and error paths of the S3 Source and Sink, with
//! aws-smithy-mocks. The emulator does not enforce `CopySourceIfMatch` nor
//! `ExpectedBucketOwner` (DESIGN.md §4), so those paths are covered here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::operation::copy_object::CopyObjectOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::get_object_tagging::GetObjectTaggingOutput;
use aws_sdk_s3::operation::head_bucket::HeadBucketOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::list_buckets::ListBucketsOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::operation::upload_part_copy::UploadPartCopyOutput;
use aws_sdk_s3::types::{
    Bucket, CopyObjectResult, CopyPartResult, MetadataDirective, Object, Tag, TaggingDirective,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use futures::TryStreamExt;

use escrow_sync_core::{
    ErrorKind, Executor, ExecutorOptions, Item, ItemKind, Mode, Payload, RetryPolicy, Scope,
    ServerSideRef, Sink, Source,
};
use escrow_sync_s3::{
    MultipartOptions, S3Sink, S3Source, SOURCE_ETAG_META, TagMode, check_dest_bucket,
};
use escrow_sync_testkit::{FaultCounts, FaultKind};

fn object(key: &str, size: i64, etag: &str) -> Object {
    Object::builder().key(key).size(size).e_tag(etag).build()
}

fn client(rules: &[&Rule]) -> Client {
    // escrow-sync journals its multipart uploads; tests that care count these.
    let journal_put = mock!(Client::put_object)
        .match_requests(|r| r.key().is_some_and(|k| k.contains(escrow_sync_s3::JOURNAL_DIR)))
        .then_output(|| aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build());
    let journal_delete = mock!(Client::delete_object)
        .match_requests(|r| r.key().is_some_and(|k| k.contains(escrow_sync_s3::JOURNAL_DIR)))
        .then_output(|| {
            aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build()
        });
    let mut all: Vec<&Rule> = rules.to_vec();
    all.push(&journal_put);
    all.push(&journal_delete);
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, all, |c| c
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(1))))
}

fn fast_executor() -> Executor {
    Executor::new(ExecutorOptions::new().with_retry(RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }))
}

/// A listing of any bucket that is empty.
fn empty_listing() -> Rule {
    mock!(Client::list_objects_v2).then_output(|| ListObjectsV2Output::builder().build())
}

/// A listing of any bucket holding one object.
fn one_object(key: &'static str, size: i64, etag: &'static str) -> Rule {
    mock!(Client::list_objects_v2).then_output(move || {
        ListObjectsV2Output::builder().contents(object(key, size, etag)).build()
    })
}

/// GetObjectTagging of any object: no tags.
fn no_tags() -> Rule {
    mock!(Client::get_object_tagging).then_output(|| {
        GetObjectTaggingOutput::builder().set_tag_set(Some(vec![])).build().unwrap()
    })
}

fn slow_down() -> String {
    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".into()
}

#[tokio::test]
async fn listing_follows_continuation_tokens_and_strips_the_dest_prefix() {
    let page1 = mock!(Client::list_objects_v2)
        .match_requests(|r| r.continuation_token().is_none() && r.prefix() == Some("escrow/data/"))
        .then_output(|| {
            ListObjectsV2Output::builder()
                .contents(object("escrow/data/a", 1, "\"a\""))
                .contents(object("escrow/data/b", 2, "\"b\""))
                .is_truncated(true)
                .next_continuation_token("t2")
                .build()
        });
    let page2 = mock!(Client::list_objects_v2)
        .match_requests(|r| r.continuation_token() == Some("t2"))
        .then_output(|| {
            ListObjectsV2Output::builder()
                .contents(object("escrow/data/c", 3, "\"c\""))
                .is_truncated(false)
                .build()
        });
    let sink = S3Sink::from_client(client(&[&page1, &page2]), "escrow-bucket")
        .with_dest_prefix("escrow/")
        .with_expected_owner(Some("222222222222".into()));
    let items: Vec<Item> = sink.list(&Scope::with_prefix("data/")).try_collect().await.unwrap();
    let keys: Vec<_> = items.iter().map(|i| (i.key.as_str(), i.size)).collect();
    assert_eq!(keys, [("data/a", 1), ("data/b", 2), ("data/c", 3)]);
    assert_eq!((page1.num_calls(), page2.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_listing_error_names_the_bucket() {
    let denied = mock!(Client::list_objects_v2)
        .sequence()
        .http_status(
            403,
            Some("<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>".into()),
        )
        .build();
    let source = S3Source::from_client(client(&[&denied]), "prod-assets");
    let err = source.list(&Scope::all()).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied);
    assert!(err.to_string().contains("s3://prod-assets/"), "{err}");
}

/// The default copy is one request: S3 copies tags and metadata itself
/// (`TaggingDirective=COPY`, `MetadataDirective=COPY`), no GetObjectTagging.
#[tokio::test]
async fn a_copy_is_one_request_that_copies_tags_and_metadata_server_side() {
    let tagging = no_tags();
    let head = mock!(Client::head_object).then_output(|| HeadObjectOutput::builder().build());
    let copy = mock!(Client::copy_object)
        .match_requests(|r| {
            r.bucket() == Some("escrow-assets")
                && r.key() == Some("dir/a.txt")
                && r.copy_source() == Some("prod-assets/dir/a.txt")
                && r.copy_source_if_match() == Some("\"etag1\"")
                && r.metadata_directive() == Some(&MetadataDirective::Copy)
                && r.tagging_directive() == Some(&TaggingDirective::Copy)
                && r.tagging().is_none()
                && r.expected_source_bucket_owner() == Some("111111111111")
        })
        .then_output(|| CopyObjectOutput::builder().build());
    let c = client(&[&tagging, &head, &copy]);
    let source = S3Source::from_client(c.clone(), "prod-assets")
        .with_expected_owner(Some("111111111111".into()));
    assert_eq!(source.tags(), TagMode::Copy, "the default");
    let sink = S3Sink::from_client(c, "escrow-assets");
    let item = Item::new("dir/a.txt", ItemKind::Object, 42, "\"etag1\"");
    let payload = source.read(&item).await.unwrap();
    sink.write(&item, payload).await.unwrap();
    let calls = (tagging.num_calls(), head.num_calls(), copy.num_calls());
    assert_eq!(calls, (0, 0, 1), "one CopyObject and nothing else");
}

/// `tags = "none"`: the copy replaces the tags with none, and nothing reads them.
#[tokio::test]
async fn tags_none_copies_without_tags_and_reads_none() {
    let tagging = no_tags();
    let copy = mock!(Client::copy_object)
        .match_requests(|r| {
            r.tagging_directive() == Some(&TaggingDirective::Replace) && r.tagging().is_none()
        })
        .then_output(|| CopyObjectOutput::builder().build());
    let c = client(&[&tagging, &copy]);
    let source = S3Source::from_client(c.clone(), "prod-assets").with_tags(TagMode::None);
    let sink = S3Sink::from_client(c, "escrow-assets");
    let item = Item::new("a", ItemKind::Object, 1, "\"e\"");
    let payload = source.read(&item).await.unwrap();
    sink.write(&item, payload).await.unwrap();
    assert_eq!((tagging.num_calls(), copy.num_calls()), (0, 1));
    assert!(!source.keeps_tags(), "verify compares no tags");
}

/// A copy in parts cannot copy tags server-side: in `copy` mode the sink
/// reads them from the source (escrow credentials) and sets them.
#[tokio::test]
async fn a_copy_in_parts_reads_the_tags_it_cannot_copy() {
    let tagging = mock!(Client::get_object_tagging)
        .match_requests(|r| {
            r.bucket() == Some("src")
                && r.key() == Some("big.bin")
                && r.expected_bucket_owner() == Some("111111111111")
        })
        .then_output(|| {
            GetObjectTaggingOutput::builder()
                .tag_set(Tag::builder().key("team").value("ops").build().unwrap())
                .build()
                .unwrap()
        });
    let (head, create, part, complete) = (source_head(), create_upload(), part_ok(), complete_ok());
    let c = client(&[&tagging, &head, &create, &part, &complete]);
    let (item, _) = big_ref(12 * MIB);
    let source =
        S3Source::from_client(c.clone(), "src").with_expected_owner(Some("111111111111".into()));
    let payload = source.read(&item).await.unwrap();
    assert_eq!(tagging.num_calls(), 0, "the source reads no tags in copy mode");
    multipart_sink(c).write(&item, payload).await.unwrap();
    assert_eq!((tagging.num_calls(), create.num_calls(), complete.num_calls()), (1, 1, 1));
}

/// `tags = "explicit"`: read with GetObjectTagging, set with REPLACE.
#[tokio::test]
async fn copy_sends_tags_directives_preconditions_and_owners() {
    let tagging = mock!(Client::get_object_tagging)
        .match_requests(|r| {
            r.bucket() == Some("prod-assets")
                && r.key() == Some("dir/ü a+b.txt")
                && r.expected_bucket_owner() == Some("111111111111")
        })
        .then_output(|| {
            GetObjectTaggingOutput::builder()
                .tag_set(Tag::builder().key("team").value("data eng").build().unwrap())
                .build()
                .unwrap()
        });
    let copy = mock!(Client::copy_object)
        .match_requests(|r| {
            r.bucket() == Some("escrow-assets")
                && r.key() == Some("pfx/dir/ü a+b.txt")
                && r.copy_source() == Some("prod-assets/dir/%C3%BC%20a%2Bb.txt")
                && r.copy_source_if_match() == Some("\"etag1\"")
                && r.metadata_directive() == Some(&MetadataDirective::Copy)
                && r.tagging_directive() == Some(&TaggingDirective::Replace)
                && r.tagging() == Some("team=data%20eng")
                && r.expected_bucket_owner() == Some("222222222222")
                && r.expected_source_bucket_owner() == Some("111111111111")
        })
        .then_output(|| {
            CopyObjectOutput::builder()
                .copy_object_result(CopyObjectResult::builder().e_tag("\"etag1\"").build())
                .build()
        });
    let source = S3Source::from_client(client(&[&tagging]), "prod-assets")
        .with_tags(TagMode::Explicit)
        .with_expected_owner(Some("111111111111".into()));
    let sink = S3Sink::from_client(client(&[&copy]), "escrow-assets")
        .with_dest_prefix("pfx/")
        .with_expected_owner(Some("222222222222".into()));
    let item = Item::new("dir/ü a+b.txt", ItemKind::Object, 42, "\"etag1\"");
    let payload = source.read(&item).await.unwrap();
    let receipt = sink.write(&item, payload).await.unwrap();
    assert_eq!(receipt.bytes, 42);
    assert_eq!(receipt.fingerprint.as_deref(), Some("\"etag1\""));
    assert_eq!((tagging.num_calls(), copy.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_source_changed_mid_run_is_a_precondition_failure_not_retried() {
    let list = one_object("k", 5, "\"old\"");
    let empty = empty_listing();
    let tagging = no_tags();
    let copy = mock!(Client::copy_object).sequence().http_status(412, Some(
        "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>".into(),
    )).build();
    let source = S3Source::from_client(client(&[&list, &tagging]), "src");
    let sink = S3Sink::from_client(client(&[&empty, &copy]), "dst");
    let report = fast_executor().execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!(report.failed, 1);
    let f = &report.failures[0];
    assert_eq!((f.key.as_str(), f.kind, f.attempts), ("k", ErrorKind::PreconditionFailed, 1));
    assert!(f.error.contains("changed after it was listed"), "{}", f.error);
    assert!(f.error.contains("s3://dst/k"), "{}", f.error);
    assert_eq!(copy.num_calls(), 1, "not retried");
}

#[tokio::test]
async fn slow_down_is_retried_by_the_executor_not_stacked_on_sdk_retries() {
    let list = one_object("k", 5, "\"e\"");
    let empty = empty_listing();
    let tagging = no_tags();
    let copy = mock!(Client::copy_object)
        .sequence()
        .http_status(503, Some(slow_down()))
        .times(2)
        .output(|| CopyObjectOutput::builder().build())
        .build();
    let source = S3Source::from_client(client(&[&list, &tagging]), "src");
    let sink = S3Sink::from_client(client(&[&empty, &copy]), "dst");
    let report = fast_executor().execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((report.copied, report.failed), (1, 0), "{:?}", report.failures);
    // Three calls in all: the SDK did not retry on its own (its standard mode
    // would have made three attempts per executor attempt).
    assert_eq!(copy.num_calls(), 3);
    assert_eq!(tagging.num_calls(), 0, "one request per attempt: tags are copied server-side");
    let faults = FaultCounts::new();
    (0..copy.num_calls() - 1).for_each(|_| faults.add(FaultKind::Throttle));
    assert_eq!(faults.record("s3::mock_requests::slow_down_retried_by_the_executor"), 2);
}

#[tokio::test]
async fn access_denied_on_one_key_fails_that_key_only() {
    let list = mock!(Client::list_objects_v2).then_output(|| {
        ListObjectsV2Output::builder()
            .contents(object("private", 5, "\"p\""))
            .contents(object("public", 5, "\"q\""))
            .build()
    });
    let empty = empty_listing();
    let denied = mock!(Client::get_object_tagging)
        .match_requests(|r| r.key() == Some("private"))
        .sequence()
        .http_status(
            403,
            Some("<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>".into()),
        )
        .build();
    let tagging = no_tags();
    let copy = mock!(Client::copy_object).then_output(|| CopyObjectOutput::builder().build());
    let source = S3Source::from_client(client(&[&list, &denied, &tagging]), "src")
        .with_tags(TagMode::Explicit);
    let sink = S3Sink::from_client(client(&[&empty, &copy]), "dst");
    let report = fast_executor().execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((report.copied, report.failed), (1, 1));
    let f = &report.failures[0];
    assert_eq!((f.key.as_str(), f.kind), ("private", ErrorKind::AccessDenied));
    assert!(f.error.contains("s3://src/private"), "{}", f.error);
    assert_eq!(copy.num_calls(), 1);
}

#[tokio::test]
async fn a_destination_owned_by_another_account_is_refused() {
    // Real S3 answers 403 to HeadBucket when ExpectedBucketOwner does not match.
    let head = mock!(Client::head_bucket)
        .match_requests(|r| r.expected_bucket_owner() == Some("222222222222"))
        .sequence()
        .http_status(403, None)
        .build();
    let err =
        check_dest_bucket(&client(&[&head]), "someone-elses", "222222222222").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(
        err.to_string().contains("someone-elses is not owned by the escrow account 222222222222")
    );

    // Where HeadBucket passes (the emulator ignores ExpectedBucketOwner), the
    // escrow's own bucket list decides.
    let head_ok = mock!(Client::head_bucket).then_output(|| HeadBucketOutput::builder().build());
    let list = mock!(Client::list_buckets).then_output(|| {
        ListBucketsOutput::builder().buckets(Bucket::builder().name("mine").build()).build()
    });
    let c = client(&[&head_ok, &list]);
    check_dest_bucket(&c, "mine", "222222222222").await.unwrap();
    let err = check_dest_bucket(&c, "theirs", "222222222222").await.unwrap_err();
    assert!(err.to_string().contains("theirs is not owned"), "{err}");
}

#[tokio::test]
async fn a_missing_bucket_is_named_with_its_account() {
    let head = mock!(Client::head_bucket).sequence().http_status(404, None).build();
    let err = escrow_sync_s3::check_source_bucket(&client(&[&head]), "nope", "111111111111")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert_eq!(
        err.to_string(),
        "invalid config: source bucket nope does not exist in the primary account 111111111111: create it or fix the bucket name"
    );
}

#[tokio::test]
async fn a_rerun_with_nothing_new_makes_no_mutating_call() {
    let src_list = mock!(Client::list_objects_v2)
        .match_requests(|r| r.bucket() == Some("src"))
        .then_output(|| {
            ListObjectsV2Output::builder()
                .contents(object("a", 1, "\"1\""))
                .contents(object("b", 2, "\"2\""))
                .build()
        });
    let dst_list = mock!(Client::list_objects_v2)
        .match_requests(|r| r.bucket() == Some("dst"))
        .then_output(|| {
            ListObjectsV2Output::builder()
                .contents(object("a", 1, "\"1\""))
                .contents(object("b", 2, "\"2\""))
                .contents(object("deleted-in-primary", 3, "\"3\""))
                .build()
        });
    let tagging = no_tags();
    let copy = mock!(Client::copy_object).then_output(|| CopyObjectOutput::builder().build());
    let put = mock!(Client::put_object)
        .then_output(|| aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build());
    let delete = mock!(Client::delete_object).then_output(|| {
        aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build()
    });
    let c = client(&[&src_list, &dst_list, &tagging, &copy, &put, &delete]);
    let source = S3Source::from_client(c.clone(), "src");
    let sink = S3Sink::from_client(c, "dst");
    let r = fast_executor().execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((r.copied, r.skipped, r.retained, r.deleted), (0, 2, 1, 0));
    assert_eq!((src_list.num_calls(), dst_list.num_calls()), (1, 1));
    let mutating = copy.num_calls() + put.num_calls() + delete.num_calls() + tagging.num_calls();
    assert_eq!(mutating, 0, "only listings were called");
}

const MIB: u64 = 1024 * 1024;

fn multipart_sink(c: Client) -> S3Sink {
    S3Sink::from_client(c, "dst").with_expected_owner(Some("222222222222".into())).with_multipart(
        MultipartOptions::new()
            .with_threshold(5 * MIB)
            .with_part_size(5 * MIB)
            .with_part_concurrency(2)
            .with_part_retry(RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
            }),
    )
}

fn big_ref(size: u64) -> (Item, ServerSideRef) {
    let item = Item::new("big.bin", ItemKind::Object, size, "\"src-etag\"");
    let mut tags = std::collections::BTreeMap::new();
    tags.insert("tag:team".to_string(), "ops".to_string());
    let src = ServerSideRef::new("s3", "src", "big.bin", "\"src-etag\"")
        .with_owner(Some("111111111111".into()))
        .with_attributes(tags);
    (item, src)
}

fn source_head() -> Rule {
    mock!(Client::head_object)
        .match_requests(|r| r.bucket() == Some("src") && r.if_match() == Some("\"src-etag\""))
        .then_output(|| {
            HeadObjectOutput::builder()
                .content_type("application/octet-stream")
                .cache_control("no-cache")
                .metadata("owner", "ops")
                .build()
        })
}

fn create_upload() -> Rule {
    mock!(Client::create_multipart_upload)
        .match_requests(|r| {
            let m = r.metadata().unwrap();
            r.bucket() == Some("dst")
                && r.key() == Some("big.bin")
                && m.get("owner").map(String::as_str) == Some("ops")
                && m.get(SOURCE_ETAG_META).map(String::as_str) == Some("\"src-etag\"")
                && r.content_type() == Some("application/octet-stream")
                && r.cache_control() == Some("no-cache")
                && r.tagging() == Some("team=ops")
                && r.expected_bucket_owner() == Some("222222222222")
        })
        .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up-1").build())
}

fn part_ok() -> Rule {
    mock!(Client::upload_part_copy)
        .match_requests(|r| {
            r.upload_id() == Some("up-1")
                && r.copy_source() == Some("src/big.bin")
                && r.copy_source_if_match() == Some("\"src-etag\"")
                && r.expected_source_bucket_owner() == Some("111111111111")
        })
        .then_compute_output(|r| {
            UploadPartCopyOutput::builder()
                .copy_part_result(
                    CopyPartResult::builder()
                        .e_tag(format!("\"p{}\"", r.part_number().unwrap()))
                        .build(),
                )
                .build()
        })
}

fn complete_ok() -> Rule {
    mock!(Client::complete_multipart_upload)
        .match_requests(|r| {
            let parts = r.multipart_upload().map(|m| m.parts()).unwrap_or_default();
            let numbers: Vec<_> = parts.iter().map(|p| (p.part_number(), p.e_tag())).collect();
            r.upload_id() == Some("up-1")
                && numbers
                    == [
                        (Some(1), Some("\"p1\"")),
                        (Some(2), Some("\"p2\"")),
                        (Some(3), Some("\"p3\"")),
                    ]
        })
        .then_output(|| CompleteMultipartUploadOutput::builder().e_tag("\"mp-3\"").build())
}

fn abort() -> Rule {
    mock!(Client::abort_multipart_upload)
        .match_requests(|r| r.upload_id() == Some("up-1") && r.key() == Some("big.bin"))
        .then_output(|| AbortMultipartUploadOutput::builder().build())
}

#[tokio::test]
async fn large_objects_are_copied_in_ranged_parts_then_completed() {
    let ranges = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = ranges.clone();
    let part = mock!(Client::upload_part_copy).then_compute_output(move |r| {
        seen.lock()
            .unwrap()
            .push((r.part_number().unwrap(), r.copy_source_range().unwrap().to_string()));
        UploadPartCopyOutput::builder()
            .copy_part_result(
                CopyPartResult::builder()
                    .e_tag(format!("\"p{}\"", r.part_number().unwrap()))
                    .build(),
            )
            .build()
    });
    let (head, create, complete, abort, copy) = (
        source_head(),
        create_upload(),
        complete_ok(),
        abort(),
        mock!(Client::copy_object).then_output(|| CopyObjectOutput::builder().build()),
    );
    let sink = multipart_sink(client(&[&head, &create, &part, &complete, &abort, &copy]));
    let (item, src) = big_ref(12 * MIB);
    let receipt = sink.write(&item, Payload::Reference(src)).await.unwrap();
    assert_eq!(receipt.bytes, 12 * MIB);
    assert_eq!(receipt.fingerprint.as_deref(), Some("\"mp-3\""));
    let mut got = ranges.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        [
            (1, "bytes=0-5242879".to_string()),
            (2, "bytes=5242880-10485759".to_string()),
            (3, "bytes=10485760-12582911".to_string())
        ]
    );
    assert_eq!((head.num_calls(), create.num_calls(), complete.num_calls()), (1, 1, 1));
    assert_eq!((abort.num_calls(), copy.num_calls()), (0, 0));
}

#[tokio::test]
async fn a_failed_part_aborts_the_upload_and_never_completes_it() {
    let part = mock!(Client::upload_part_copy)
        .match_requests(|r| r.part_number() == Some(2))
        .sequence()
        .http_status(
            403,
            Some("<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>".into()),
        )
        .build();
    let (head, create, ok, complete, abort) =
        (source_head(), create_upload(), part_ok(), complete_ok(), abort());
    let sink = multipart_sink(client(&[&head, &create, &part, &ok, &complete, &abort]));
    let (item, src) = big_ref(12 * MIB);
    let err = sink.write(&item, Payload::Reference(src)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied);
    assert!(err.to_string().contains("s3://dst/big.bin part 2"), "{err}");
    assert_eq!((abort.num_calls(), complete.num_calls()), (1, 0));
}

#[tokio::test]
async fn a_throttled_part_is_retried_alone() {
    let part = mock!(Client::upload_part_copy)
        .match_requests(|r| r.part_number() == Some(3))
        .sequence()
        .http_status(503, Some(slow_down()))
        .times(2)
        .output(|| {
            UploadPartCopyOutput::builder()
                .copy_part_result(CopyPartResult::builder().e_tag("\"p3\"").build())
                .build()
        })
        .build();
    let (head, create, ok, complete, abort) =
        (source_head(), create_upload(), part_ok(), complete_ok(), abort());
    let sink = multipart_sink(client(&[&head, &create, &part, &ok, &complete, &abort]));
    let (item, src) = big_ref(12 * MIB);
    sink.write(&item, Payload::Reference(src)).await.unwrap();
    assert_eq!(part.num_calls(), 3);
    assert_eq!(ok.num_calls(), 2, "parts 1 and 2 once each");
    assert_eq!((complete.num_calls(), abort.num_calls()), (1, 0));
    let faults = FaultCounts::new();
    (0..part.num_calls() - 1).for_each(|_| faults.add(FaultKind::Throttle));
    assert_eq!(faults.record("s3::mock_requests::throttled_part_retried_alone"), 2);
}

#[tokio::test]
async fn a_200_response_with_an_error_body_fails_and_aborts() {
    // S3 can answer CompleteMultipartUpload with 200 and an <Error> body.
    let complete = mock!(Client::complete_multipart_upload)
        .sequence()
        .http_status(
            200,
            Some("<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>".into()),
        )
        .build();
    let (head, create, ok, abort) = (source_head(), create_upload(), part_ok(), abort());
    let sink = multipart_sink(client(&[&head, &create, &ok, &complete, &abort]));
    let (item, src) = big_ref(12 * MIB);
    let err = sink.write(&item, Payload::Reference(src)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(abort.num_calls(), 1);
    let faults = FaultCounts::new();
    (0..complete.num_calls()).for_each(|_| faults.add(FaultKind::ErrorIn200));
    assert_eq!(faults.record("s3::mock_requests::complete_200_with_error_aborts"), 1);
}

#[tokio::test]
async fn objects_over_5_gib_are_copied_in_parts_whatever_the_threshold() {
    let part = mock!(Client::upload_part_copy).then_output(|| {
        UploadPartCopyOutput::builder()
            .copy_part_result(CopyPartResult::builder().e_tag("\"p\"").build())
            .build()
    });
    let complete = mock!(Client::complete_multipart_upload)
        .then_output(|| CompleteMultipartUploadOutput::builder().e_tag("\"mp-96\"").build());
    let copy = mock!(Client::copy_object).then_output(|| CopyObjectOutput::builder().build());
    let (head, create) = (source_head(), create_upload());
    let sink = S3Sink::from_client(client(&[&head, &create, &part, &complete, &copy]), "dst")
        .with_expected_owner(Some("222222222222".into()))
        .with_multipart(MultipartOptions::new().with_threshold(u64::MAX));
    let (item, src) = big_ref(6 * 1024 * MIB);
    sink.write(&item, Payload::Reference(src)).await.unwrap();
    assert_eq!(part.num_calls(), 96, "6 GiB in 64 MiB parts");
    assert_eq!((complete.num_calls(), copy.num_calls()), (1, 0));
}

#[tokio::test]
async fn a_multipart_copy_is_confirmed_by_its_recorded_source_etag() {
    let head = mock!(Client::head_object)
        .match_requests(|r| r.key() == Some("big.bin"))
        .then_output(|| {
            HeadObjectOutput::builder()
                .e_tag("\"mp-3\"")
                .metadata(SOURCE_ETAG_META, "\"src-etag\"")
                .build()
        });
    let sink = multipart_sink(client(&[&head]));
    let (item, _) = big_ref(12 * MIB);
    let escrow = Item::new("big.bin", ItemKind::Object, 12 * MIB, "\"mp-3\"");
    assert!(sink.confirm_same(&item, &escrow).await.unwrap());
    let changed = Item::new("big.bin", ItemKind::Object, 12 * MIB, "\"new-etag\"");
    assert!(!sink.confirm_same(&changed, &escrow).await.unwrap());
    // A single-part escrow ETag is compared by the listing alone: no call.
    let single = Item::new("big.bin", ItemKind::Object, 12 * MIB, "\"plain\"");
    assert!(!sink.confirm_same(&item, &single).await.unwrap());
    assert_eq!(head.num_calls(), 2);
}

#[tokio::test]
async fn protected_copies_carry_the_escrow_key_retention_and_the_source_etag() {
    let head = source_head();
    let copy = mock!(Client::copy_object)
        .match_requests(|r| {
            let meta = r.metadata().cloned().unwrap_or_default();
            r.metadata_directive() == Some(&MetadataDirective::Replace)
                && meta.get("owner").map(String::as_str) == Some("ops")
                && meta.get(SOURCE_ETAG_META).map(String::as_str) == Some("\"src-etag\"")
                && r.content_type() == Some("application/octet-stream")
                && r.server_side_encryption().map(|s| s.as_str()) == Some("aws:kms")
                && r.ssekms_key_id() == Some("alias/escrow")
                && r.object_lock_mode().map(|m| m.as_str()) == Some("COMPLIANCE")
                && r.object_lock_retain_until_date().is_some()
        })
        .then_output(|| {
            CopyObjectOutput::builder()
                .copy_object_result(CopyObjectResult::builder().e_tag("\"kms-etag\"").build())
                .build()
        });
    let sink = S3Sink::from_client(client(&[&head, &copy]), "dst").with_protection(
        escrow_sync_s3::Protection::new()
            .with_kms_key_id(Some("alias/escrow".into()))
            .with_object_lock(Some(escrow_sync_s3::ObjectLock::new(
                escrow_sync_s3::LockMode::Compliance,
                30,
            ))),
    );
    let (item, src) = big_ref(1024);
    let receipt = sink.write(&item, Payload::Reference(src)).await.unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("\"kms-etag\""));
    assert_eq!((head.num_calls(), copy.num_calls()), (1, 1));

    // The next run sees another ETag in escrow; the recorded source ETag
    // confirms the copy without copying again.
    let escrow_head = mock!(Client::head_object)
        .match_requests(|r| r.bucket() == Some("dst"))
        .then_output(|| {
            HeadObjectOutput::builder()
                .e_tag("\"kms-etag\"")
                .metadata(SOURCE_ETAG_META, "\"src-etag\"")
                .build()
        });
    let sink = S3Sink::from_client(client(&[&escrow_head]), "dst").with_protection(
        escrow_sync_s3::Protection::new().with_kms_key_id(Some("alias/escrow".into())),
    );
    let escrow = Item::new("big.bin", ItemKind::Object, 1024, "\"kms-etag\"");
    assert!(sink.confirm_same(&item, &escrow).await.unwrap());
}

#[test]
fn kms_keys_of_other_accounts_are_refused() {
    use escrow_sync_s3::check_kms_key;
    check_kms_key("alias/escrow", "222222222222").unwrap();
    check_kms_key("1234abcd-12ab-34cd-56ef-1234567890ab", "222222222222").unwrap();
    check_kms_key("arn:aws:kms:us-east-1:222222222222:key/k", "222222222222").unwrap();
    let err =
        check_kms_key("arn:aws:kms:us-east-1:111111111111:key/k", "222222222222").unwrap_err();
    assert!(err.to_string().contains("belongs to account 111111111111"), "{err}");
}

#[tokio::test]
async fn sse_c_and_aws_managed_key_objects_fail_alone_with_the_fix() {
    let list = mock!(Client::list_objects_v2)
        .match_requests(|r| r.bucket() == Some("src"))
        .then_output(|| {
            ListObjectsV2Output::builder()
                .contents(object("aws-managed-key", 5, "\"m\""))
                .contents(object("customer-key", 5, "\"c\""))
                .contents(object("fine", 5, "\"f\""))
                .build()
        });
    let empty = empty_listing();
    let tags = no_tags();
    let sse_c = mock!(Client::copy_object).match_requests(|r| r.key() == Some("customer-key")).sequence().http_status(400, Some(
        "<Error><Code>InvalidRequest</Code><Message>The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.</Message></Error>".into(),
    )).build();
    let kms = mock!(Client::copy_object).match_requests(|r| r.key() == Some("aws-managed-key")).sequence().http_status(403, Some(
        "<Error><Code>AccessDenied</Code><Message>The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.</Message></Error>".into(),
    )).build();
    let ok = mock!(Client::copy_object).then_output(|| CopyObjectOutput::builder().build());
    let c = client(&[&list, &empty, &tags, &sse_c, &kms, &ok]);
    let source = S3Source::from_client(c.clone(), "src");
    let sink = S3Sink::from_client(c, "dst");
    let r = fast_executor().execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((r.copied, r.failed), (1, 2), "{:?}", r.failures);
    let why = |key: &str| r.failures.iter().find(|f| f.key == key).unwrap().error.clone();
    assert!(why("customer-key").contains("SSE-C"), "{}", why("customer-key"));
    assert!(why("aws-managed-key").contains("aws/s3"), "{}", why("aws-managed-key"));
    assert_eq!((sse_c.num_calls(), kms.num_calls()), (1, 1), "permanent: not retried");
}

#[tokio::test]
async fn every_request_draws_on_the_jobs_pacer() {
    let pacer = escrow_sync_core::RequestPacer::per_second(1);
    let list = one_object("k", 5, "\"e\"");
    let sink = S3Sink::from_client(client(&[&list]), "dst").with_pacer(Some(pacer.clone()));
    let items: Vec<Item> = sink.list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!(items.len(), 1);
    assert!(!pacer.try_now(), "the listing took this second's only request");
}

/// A source object in memory that counts the part buffers alive at once
/// (a buffer lives from its read until the sink drops it).
struct CountingRange {
    data: Vec<u8>,
    attributes: std::collections::BTreeMap<String, String>,
    live: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct LiveBuffer {
    data: Vec<u8>,
    live: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl AsRef<[u8]> for LiveBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for LiveBuffer {
    fn drop(&mut self) {
        self.live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl escrow_sync_core::RangeRead for CountingRange {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn attributes(&self) -> &std::collections::BTreeMap<String, String> {
        &self.attributes
    }
    async fn read_range(&self, first: u64, last: u64) -> escrow_sync_core::Result<bytes::Bytes> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.live.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(n, SeqCst);
        tokio::task::yield_now().await;
        let data = self.data[first as usize..=last as usize].to_vec();
        Ok(bytes::Bytes::from_owner(LiveBuffer { data, live: self.live.clone() }))
    }
}

#[tokio::test]
async fn a_streamed_copy_holds_at_most_part_concurrency_parts_in_memory() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let create = mock!(Client::create_multipart_upload)
        .match_requests(|r| {
            r.content_type() == Some("text/csv")
                && r.metadata().and_then(|m| m.get("owner")).map(String::as_str) == Some("ops")
                && r.tagging() == Some("team=ops")
        })
        .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up-1").build());
    let part = mock!(Client::upload_part).then_compute_output(move |r| {
        s2.lock().unwrap().push((r.part_number().unwrap(), r.content_length().unwrap()));
        aws_sdk_s3::operation::upload_part::UploadPartOutput::builder()
            .e_tag(format!("\"p{}\"", r.part_number().unwrap()))
            .build()
    });
    let complete = mock!(Client::complete_multipart_upload).then_compute_output(|r| {
        let n = r.multipart_upload().map(|m| m.parts().len()).unwrap_or(0);
        CompleteMultipartUploadOutput::builder().e_tag(format!("\"mp-{n}\"")).build()
    });
    let sink = S3Sink::from_client(client(&[&create, &part, &complete]), "dst")
        .with_multipart(MultipartOptions::new().with_part_size(5 * MIB).with_part_concurrency(3));
    let size = 48 * MIB + 123;
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert("content-type".to_string(), "text/csv".to_string());
    attributes.insert("meta:owner".to_string(), "ops".to_string());
    attributes.insert("tag:team".to_string(), "ops".to_string());
    let data = CountingRange {
        data: (0..size).map(|i| (i % 251) as u8).collect(),
        attributes,
        live: live.clone(),
        peak: peak.clone(),
    };
    let item = Item::new("big.csv", ItemKind::Object, size, "\"src\"");
    let receipt = sink.write(&item, Payload::Ranged(std::sync::Arc::new(data))).await.unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("\"mp-10\""));
    let mut parts = seen.lock().unwrap().clone();
    parts.sort();
    assert_eq!(parts.len(), 10);
    assert!(parts[..9].iter().all(|(_, len)| *len == (5 * MIB) as i64));
    assert_eq!(parts[9].1, (3 * MIB + 123) as i64);
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "at most part_concurrency buffers alive: {peak}");
    assert_eq!(live.load(std::sync::atomic::Ordering::SeqCst), 0, "every buffer released");
}

#[tokio::test]
async fn a_store_without_object_tagging_is_read_as_having_no_tags() {
    let tagging = mock!(Client::get_object_tagging).sequence().http_status(501, Some(
        "<Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message></Error>".into(),
    )).build();
    let source = S3Source::from_client(client(&[&tagging]), "src").with_tags(TagMode::Explicit);
    let item = Item::new("k", ItemKind::Object, 1, "\"e\"");
    match source.read(&item).await.unwrap() {
        Payload::Reference(r) => assert!(r.attributes.is_empty()),
        other => panic!("expected a reference, got {other:?}"),
    }
}

#[tokio::test]
async fn version_listings_group_a_keys_versions_across_pages_oldest_first() {
    use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
    use aws_sdk_s3::types::{DeleteMarkerEntry, ObjectVersion};
    let version = |key: &str, id: &str, etag: &str, size: i64| {
        ObjectVersion::builder().key(key).version_id(id).e_tag(etag).size(size).build()
    };
    let page1 = mock!(Client::list_object_versions)
        .match_requests(|r| r.key_marker().is_none())
        .then_output(move || {
            ListObjectVersionsOutput::builder()
                .versions(version("a", "a3", "\"e3\"", 3))
                .versions(version("a", "a2", "\"e2\"", 2))
                .delete_markers(DeleteMarkerEntry::builder().key("b").version_id("dm").build())
                .is_truncated(true)
                .next_key_marker("a")
                .next_version_id_marker("a2")
                .build()
        });
    let page2 = mock!(Client::list_object_versions)
        .match_requests(|r| r.key_marker() == Some("a") && r.version_id_marker() == Some("a2"))
        .then_output(move || {
            ListObjectVersionsOutput::builder()
                .versions(version("a", "a1", "\"e1\"", 1))
                .versions(version("b", "b1", "\"f1\"", 9))
                .is_truncated(false)
                .build()
        });
    let source = S3Source::from_client(client(&[&page1, &page2]), "src").with_versions(true);
    let items: Vec<Item> = source.list(&Scope::all()).try_collect().await.unwrap();
    let got: Vec<_> =
        items.iter().map(|i| (i.key.as_str(), i.size, i.fingerprint.as_str())).collect();
    assert_eq!(got, [("a", 6, "\"e1\"/1|\"e2\"/2|\"e3\"/3"), ("b", 9, "\"f1\"/9")]);
}

#[tokio::test]
async fn copies_carry_the_sources_checksum_and_completions_check_it() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};
    // Single CopyObject: S3 computes the copy's checksum with the source's algorithm.
    let copy = mock!(Client::copy_object)
        .match_requests(|r| r.checksum_algorithm() == Some(&ChecksumAlgorithm::Crc64Nvme))
        .then_output(|| CopyObjectOutput::builder().build());
    let sink = S3Sink::from_client(client(&[&copy]), "dst");
    let item = Item::new("k", ItemKind::Object, 10, "\"e\"")
        .with_checksum_algorithm(Some("CRC64NVME".into()));
    sink.write(&item, Payload::Reference(ServerSideRef::new("s3", "src", "k", "\"e\"")))
        .await
        .unwrap();
    assert_eq!(copy.num_calls(), 1);

    // Multipart: a full-object CRC64NVME upload, parts with their checksums,
    // and the source's full-object value for S3 to check on completion.
    let head = mock!(Client::head_object)
        .match_requests(|r| r.checksum_mode().is_some())
        .then_output(|| {
            HeadObjectOutput::builder()
                .checksum_crc64_nvme("SOURCECRC64=")
                .checksum_type(ChecksumType::FullObject)
                .build()
        });
    let create = mock!(Client::create_multipart_upload)
        .match_requests(|r| {
            r.checksum_algorithm() == Some(&ChecksumAlgorithm::Crc64Nvme)
                && r.checksum_type() == Some(&ChecksumType::FullObject)
        })
        .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up-1").build());
    let part = mock!(Client::upload_part_copy).then_compute_output(|r| {
        UploadPartCopyOutput::builder()
            .copy_part_result(
                CopyPartResult::builder()
                    .e_tag(format!("\"p{}\"", r.part_number().unwrap()))
                    .checksum_crc64_nvme(format!("PART{}=", r.part_number().unwrap()))
                    .build(),
            )
            .build()
    });
    let complete = mock!(Client::complete_multipart_upload)
        .match_requests(|r| {
            let parts = r.multipart_upload().map(|m| m.parts()).unwrap_or_default();
            r.checksum_crc64_nvme() == Some("SOURCECRC64=")
                && r.checksum_type() == Some(&ChecksumType::FullObject)
                && parts.len() == 3
                && parts.iter().all(|p| {
                    p.checksum_crc64_nvme() == Some(&format!("PART{}=", p.part_number().unwrap()))
                })
        })
        .then_output(|| CompleteMultipartUploadOutput::builder().e_tag("\"mp-3\"").build());
    let abort = abort();
    let sink = multipart_sink(client(&[&head, &create, &part, &complete, &abort]));
    let (item, src) = big_ref(12 * MIB);
    let item = item.with_checksum_algorithm(Some("CRC64NVME".into()));
    sink.write(&item, Payload::Reference(src)).await.unwrap();
    assert_eq!(
        (create.num_calls(), part.num_calls(), complete.num_calls(), abort.num_calls()),
        (1, 3, 1, 0)
    );
}

#[tokio::test]
async fn a_200_response_with_an_error_body_to_a_copy_or_a_part_copy_is_retryable() {
    let error_body = || {
        Some("<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>".to_string())
    };
    let copy = mock!(Client::copy_object).sequence().http_status(200, error_body()).build();
    let sink = S3Sink::from_client(client(&[&copy]), "dst");
    let item = Item::new("k", ItemKind::Object, 10, "\"e\"");
    let err = sink
        .write(&item, Payload::Reference(ServerSideRef::new("s3", "src", "k", "\"e\"")))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "CopyObject: {err}");

    let part = mock!(Client::upload_part_copy)
        .sequence()
        .http_status(200, error_body())
        .repeatedly()
        .build();
    let (head, create, abort) = (source_head(), create_upload(), abort());
    let sink = multipart_sink(client(&[&head, &create, &part, &abort]));
    let (item, src) = big_ref(12 * MIB);
    let err = sink.write(&item, Payload::Reference(src)).await.unwrap_err();
    assert!(err.is_retryable(), "UploadPartCopy: {err}");
    assert_eq!(abort.num_calls(), 1);
    let faults = FaultCounts::new();
    (0..copy.num_calls() + part.num_calls()).for_each(|_| faults.add(FaultKind::ErrorIn200));
    // One CopyObject; parts fail on their own retries (part_retry) until one
    // part's budget runs out.
    assert!(faults.record("s3::mock_requests::copy_200_with_error_retryable") >= 2);
}

/// A client whose ListObjectsV2 serves `keys` (sorted) as S3 does: 1,000 a
/// page, after `StartAfter` or the continuation token (the last key sent);
/// records each request's StartAfter.
fn keyspace_client(keys: Vec<String>, starts: Arc<Mutex<Vec<Option<String>>>>) -> Client {
    let rule = mock!(Client::list_objects_v2).then_compute_output(move |req| {
        starts.lock().unwrap().push(req.start_after().map(str::to_string));
        let after = req.continuation_token().or(req.start_after()).unwrap_or("");
        let prefix = req.prefix().unwrap_or("");
        let page: Vec<&String> = keys
            .iter()
            .filter(|k| k.as_str() > after && k.starts_with(prefix))
            .take(1001)
            .collect();
        let mut out = ListObjectsV2Output::builder();
        for k in page.iter().take(1000) {
            out = out.contents(object(k, 1, "\"e\""));
        }
        if page.len() > 1000 {
            out = out.is_truncated(true).next_continuation_token(page[999].clone());
        }
        out.build()
    });
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&rule])
}

/// Past one page a listing is split into key ranges listed at once, and read
/// back in S3's key order: every key once, in order, whatever the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_listings_come_back_whole_and_in_key_order() {
    let mut keys: Vec<String> = (0..12_345).map(|i| format!("data/obj/{i:06}")).collect();
    // Keys that no split point anticipates: other characters, a folder
    // marker equal to a would-be split point, multibyte characters.
    keys.extend(
        ["data/obj/001", "data/obj/0~", "data/obj/Z", "data/obj/é", "data/obj/01/x"]
            .map(String::from),
    );
    keys.extend((0..1500).map(|i| format!("data/z{i}")));
    keys.extend(["other/outside".to_string()]);
    keys.sort();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let c = keyspace_client(keys.clone(), starts.clone());
    let want: Vec<String> = keys.iter().filter(|k| k.starts_with("data/")).cloned().collect();
    for ranges in [1, 2, 8] {
        starts.lock().unwrap().clear();
        let source =
            S3Source::from_client(c.clone(), "src").with_prefix("data/").with_list_ranges(ranges);
        let got: Vec<String> =
            source.list(&Scope::all()).map_ok(|i| i.key).try_collect().await.unwrap();
        assert_eq!(got.len(), want.len(), "ranges {ranges}: every key once");
        assert!(got == want, "ranges {ranges}: in key order");
        let split = starts.lock().unwrap().iter().filter(|s| s.is_some()).count();
        if ranges == 1 {
            assert_eq!(split, 0, "one listing, continuation tokens only");
        } else {
            assert!(split > 1, "ranges {ranges}: listed in key ranges ({split} StartAfter)");
        }
    }
    // The sink's listing splits the same way, keys in the source's key space.
    let sink = S3Sink::from_client(c, "dst").with_dest_prefix("data/");
    let got: Vec<String> = sink.list(&Scope::all()).map_ok(|i| i.key).try_collect().await.unwrap();
    let stripped: Vec<String> = want.iter().map(|k| k["data/".len()..].to_string()).collect();
    assert!(got == stripped, "the sink's split listing is whole and in order");
}

/// A prefetched listing starts before anyone reads it (the checks before a
/// run overlap its first pages), and the next listing of the same scope
/// takes it instead of listing again; another scope lists anew.
#[tokio::test]
async fn a_prefetched_listing_runs_before_it_is_read_and_is_taken_once() {
    let list = one_object("k", 1, "\"e\"");
    let c = client(&[&list]);
    let source = S3Source::from_client(c, "src");
    source.prefetch(&Scope::all());
    for _ in 0..100 {
        if list.num_calls() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(list.num_calls(), 1, "listed before anyone asked");
    let got: Vec<Item> = source.list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!((got.len(), list.num_calls()), (1, 1), "the prefetched listing was taken");
    let _: Vec<Item> = source.list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!(list.num_calls(), 2, "taken once: the next listing lists");
    source.prefetch(&Scope::with_prefix("a/"));
    let _: Vec<Item> = source.list(&Scope::with_prefix("b/")).try_collect().await.unwrap();
    let _: Vec<Item> = source.list(&Scope::with_prefix("a/")).try_collect().await.unwrap();
    assert_eq!(list.num_calls(), 4, "another scope lists anew; the prefetched one is taken");
}

/// A primary tag named like escrow-sync's copy marker is a tag like any
/// other: in `explicit` mode it is set on the copy, never taken for the
/// marker (which would copy with `TaggingDirective=COPY` and no tags).
#[tokio::test]
async fn a_tag_named_like_the_copy_marker_is_copied_as_a_tag() {
    let tagging = mock!(Client::get_object_tagging).then_output(|| {
        GetObjectTaggingOutput::builder()
            .tag_set(Tag::builder().key("tagging-directive").value("x").build().unwrap())
            .build()
            .unwrap()
    });
    let copy = mock!(Client::copy_object)
        .match_requests(|r| {
            r.tagging_directive() == Some(&TaggingDirective::Replace)
                && r.tagging() == Some("tagging-directive=x")
        })
        .then_output(|| CopyObjectOutput::builder().build());
    let c = client(&[&tagging, &copy]);
    let source = S3Source::from_client(c.clone(), "src").with_tags(TagMode::Explicit);
    let item = Item::new("k", ItemKind::Object, 1, "\"e\"");
    let payload = source.read(&item).await.unwrap();
    S3Sink::from_client(c, "dst").write(&item, payload).await.unwrap();
    assert_eq!(copy.num_calls(), 1);
}

/// A store that ignores `StartAfter` (every range restarts at the first
/// key) still yields each key once and in order; one that hands back the
/// continuation token it was given fails instead of listing forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_survive_stores_that_ignore_start_after_and_stop_on_a_stuck_token() {
    let keys: Vec<String> = (0..2500).map(|i| format!("k{i:05}")).collect();
    let served = keys.clone();
    let ignoring = mock!(Client::list_objects_v2).then_compute_output(move |req| {
        let after = req.continuation_token().unwrap_or("");
        let page: Vec<&String> = served.iter().filter(|k| k.as_str() > after).take(1001).collect();
        let mut out = ListObjectsV2Output::builder();
        for k in page.iter().take(1000) {
            out = out.contents(object(k, 1, "\"e\""));
        }
        if page.len() > 1000 {
            out = out.is_truncated(true).next_continuation_token(page[999].clone());
        }
        out.build()
    });
    let c = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&ignoring]);
    let got: Vec<String> = S3Source::from_client(c, "src")
        .list(&Scope::all())
        .map_ok(|i| i.key)
        .try_collect()
        .await
        .unwrap();
    assert!(got == keys, "each key once, in order ({} listed)", got.len());

    let stuck = mock!(Client::list_objects_v2).then_compute_output(|req| {
        ListObjectsV2Output::builder()
            .contents(object(&format!("x{}", req.continuation_token().unwrap_or("")), 1, "\"e\""))
            .is_truncated(true)
            .next_continuation_token("same")
            .build()
    });
    let c = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&stuck]);
    let err = S3Source::from_client(c, "src")
        .with_list_ranges(1)
        .list(&Scope::all())
        .try_collect::<Vec<Item>>()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("continuation token it was given"), "{err}");
}

/// A ranged GET answered with more bytes than asked is not read on (the
/// part's memory claim holds only what was asked).
#[tokio::test]
async fn a_ranged_read_stops_at_a_body_longer_than_the_range() {
    let head = mock!(Client::head_object)
        .then_output(|| HeadObjectOutput::builder().content_length(10).build());
    let get = mock!(Client::get_object).then_output(|| {
        aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
            .body(aws_sdk_s3::primitives::ByteStream::from(vec![0u8; 64 * 1024]))
            .build()
    });
    let c = client(&[&head, &get]);
    let source = S3Source::from_client(c, "src").with_streaming(true).with_tags(TagMode::None);
    let item = Item::new("k", ItemKind::Object, 10, "\"e\"");
    let Payload::Ranged(range) = source.read(&item).await.unwrap() else {
        panic!("a streamed read")
    };
    let err = range.read_range(0, 9).await.unwrap_err();
    assert!(err.to_string().contains("more than the 10 bytes asked for"), "{err}");
}

/// A one-request copy of an object uploaded in parts gets an ETag of its
/// own (the MD5 of the bytes, not "…-N"): the copy records the source ETag,
/// so the next plan confirms it instead of copying it again every run.
#[tokio::test]
async fn a_single_copy_of_an_object_uploaded_in_parts_records_the_source_etag() {
    const PARTS: &str = "\"9b2cf535f27731c974343645a3985328-2\"";
    let head = mock!(Client::head_object)
        .match_requests(|r| r.bucket() == Some("src") && r.if_match() == Some(PARTS))
        .then_output(|| HeadObjectOutput::builder().content_type("text/plain").build());
    let copy = mock!(Client::copy_object)
        .match_requests(|r| {
            r.metadata_directive() == Some(&MetadataDirective::Replace)
                && r.metadata().and_then(|m| m.get(SOURCE_ETAG_META)).map(String::as_str)
                    == Some(PARTS)
                && r.content_type() == Some("text/plain")
        })
        .then_output(|| {
            CopyObjectOutput::builder()
                .copy_object_result(CopyObjectResult::builder().e_tag("\"whole\"").build())
                .build()
        });
    let sink = S3Sink::from_client(client(&[&head, &copy]), "dst")
        .with_expected_owner(Some("222222222222".into()));
    let item = Item::new("obj", ItemKind::Object, 6 * MIB, PARTS);
    let src = ServerSideRef::new("s3", "src", "obj", PARTS);
    sink.write(&item, Payload::Reference(src)).await.unwrap();
    assert_eq!(copy.num_calls(), 1, "the copy records the source ETag");

    // The next plan: escrow lists the copy's own ETag; its record confirms it.
    let escrow_head = mock!(Client::head_object)
        .match_requests(|r| r.bucket() == Some("dst") && r.key() == Some("obj"))
        .then_output(|| {
            HeadObjectOutput::builder().e_tag("\"whole\"").metadata(SOURCE_ETAG_META, PARTS).build()
        });
    let sink = S3Sink::from_client(client(&[&escrow_head]), "dst");
    let escrow = Item::new("obj", ItemKind::Object, 6 * MIB, "\"whole\"");
    assert!(sink.confirm_same(&item, &escrow).await.unwrap());
}
