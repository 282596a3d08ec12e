//! The S3 Source/Sink pair across two accounts on the emulator: the
//! conformance suite, metadata and tag fidelity, prefixes, and the checks
//! made before a job runs.

use async_trait::async_trait;
use bytes::Bytes;

use escrow_sync_core::{ErrorKind, Executor, ExecutorOptions, Mode, Result, Scope, Sink, Source};
use escrow_sync_e2e::{BucketPair, ESCROW, PRIMARY, create_bucket, get, s3, sessions, unique};
use escrow_sync_s3::{S3Sink, S3Source, check_dest_bucket, check_source_bucket};
use escrow_sync_testkit::conformance::{self, Fixture};

struct S3Fixture {
    pair: BucketPair,
    source: S3Source,
    sink: S3Sink,
}

impl S3Fixture {
    async fn new() -> Self {
        let pair = BucketPair::new("conf").await;
        let s = sessions().await;
        let source = S3Source::from_client(s3(&s.primary), &pair.source_bucket)
            .with_expected_owner(Some(PRIMARY.into()));
        let sink = S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket)
            .with_dest_prefix("escrow/")
            .with_expected_owner(Some(ESCROW.into()));
        S3Fixture { pair, source, sink }
    }
}

#[async_trait]
impl Fixture for S3Fixture {
    fn source(&self) -> &dyn Source {
        &self.source
    }
    fn sink(&self) -> &dyn Sink {
        &self.sink
    }
    async fn put_source(&self, key: &str, data: Bytes) -> Result<()> {
        self.pair.put(key, data).await;
        Ok(())
    }
    async fn delete_source(&self, key: &str) -> Result<()> {
        self.pair
            .primary
            .delete_object()
            .bucket(&self.pair.source_bucket)
            .key(key)
            .send()
            .await
            .expect("delete a primary object");
        Ok(())
    }
    async fn escrow_content(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.pair.escrow_get(&format!("escrow/{key}")).await)
    }
}

#[tokio::test]
async fn sessions_resolve_to_the_two_accounts() {
    let s = sessions().await;
    assert_eq!(s.escrow.account_id(), ESCROW);
    assert_eq!(s.primary.account_id(), PRIMARY);
    assert!(s.warnings.is_empty());
}

#[tokio::test]
async fn s3_pair_conforms() {
    let summary = conformance::run_all(S3Fixture::new).await;
    assert!(summary.all_ran(), "{summary:?}");
}

/// Each tag mode lands the tags it says, and `verify` reports tags that
/// changed in the primary after the copy (a tag change moves no ETag, so a
/// run does not see it).
#[tokio::test]
async fn tag_modes_land_their_tags_and_verify_reports_tag_drift() {
    use escrow_sync_s3::TagMode;
    let pair = BucketPair::new("tagmode").await;
    pair.primary
        .put_object()
        .bucket(&pair.source_bucket)
        .key("k")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"v"))
        .tagging("team=a")
        .send()
        .await
        .unwrap();
    let s = sessions().await;
    let escrow_tags = |prefix: &'static str| {
        let (c, b) = (pair.escrow.clone(), pair.dest_bucket.clone());
        async move {
            let out = c.get_object_tagging().bucket(b).key(format!("{prefix}k")).send().await;
            let out = out.unwrap();
            out.tag_set().iter().map(|t| format!("{}={}", t.key(), t.value())).collect::<Vec<_>>()
        }
    };
    let exec = Executor::new(ExecutorOptions::new());
    for (mode, prefix, want) in [
        (TagMode::Copy, "copy/", vec!["team=a".to_string()]),
        (TagMode::Explicit, "explicit/", vec!["team=a".to_string()]),
        (TagMode::None, "none/", vec![]),
    ] {
        let source = S3Source::from_client(s3(&s.primary), &pair.source_bucket).with_tags(mode);
        let sink = S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket).with_dest_prefix(prefix);
        let r = exec.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
        assert_eq!((r.copied, r.failed), (1, 0), "{mode}: {:?}", r.failures);
        assert_eq!(escrow_tags(prefix).await, want, "{mode}");
        let v = exec.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
        assert!(v.findings.is_empty(), "{mode}: {:?}", v.findings);
    }
    pair.primary
        .put_object_tagging()
        .bucket(&pair.source_bucket)
        .key("k")
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .tag_set(aws_sdk_s3::types::Tag::builder().key("team").value("b").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    for (mode, prefix) in [(TagMode::Copy, "copy/"), (TagMode::Explicit, "explicit/")] {
        let source = S3Source::from_client(s3(&s.primary), &pair.source_bucket).with_tags(mode);
        let sink = S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket).with_dest_prefix(prefix);
        let v = exec.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
        assert_eq!(v.findings.len(), 1, "{mode}: {:?}", v.findings);
        let f = &v.findings[0];
        assert_eq!(f.key, "k");
        assert!(f.problem.contains("tags mismatch: primary {team=b}, escrow {team=a}"), "{f:?}");
    }
    // `none` copies no tags and compares none.
    let source =
        S3Source::from_client(s3(&s.primary), &pair.source_bucket).with_tags(TagMode::None);
    let sink = S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket).with_dest_prefix("none/");
    let v = exec.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
    assert!(v.findings.is_empty(), "{:?}", v.findings);
}

#[tokio::test]
async fn metadata_content_headers_and_tags_survive_the_cross_account_copy() {
    let pair = BucketPair::new("meta").await;
    pair.primary
        .put_object()
        .bucket(&pair.source_bucket)
        .key("reports/q3.csv")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"a,b\n1,2\n"))
        .content_type("text/csv")
        .cache_control("max-age=60")
        .content_disposition("attachment; filename=\"q3.csv\"")
        .content_encoding("identity")
        .metadata("owner", "finance")
        .metadata("classification", "internal")
        .tagging("team=finance&retention=7 years")
        .send()
        .await
        .unwrap();
    let s = sessions().await;
    let source = S3Source::from_client(s3(&s.primary), &pair.source_bucket);
    let sink = S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket);
    let r = Executor::new(ExecutorOptions::new())
        .execute(Mode::Run, &source, &sink, &Scope::all())
        .await
        .unwrap();
    assert_eq!((r.copied, r.failed), (1, 0), "{:?}", r.failures);

    let head = pair
        .escrow
        .head_object()
        .bucket(&pair.dest_bucket)
        .key("reports/q3.csv")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/csv"));
    assert_eq!(head.cache_control(), Some("max-age=60"));
    assert_eq!(head.content_disposition(), Some("attachment; filename=\"q3.csv\""));
    assert_eq!(head.content_encoding(), Some("identity"));
    let meta = head.metadata().unwrap();
    assert_eq!(meta.get("owner").map(String::as_str), Some("finance"));
    assert_eq!(meta.get("classification").map(String::as_str), Some("internal"));

    let tags = pair
        .escrow
        .get_object_tagging()
        .bucket(&pair.dest_bucket)
        .key("reports/q3.csv")
        .send()
        .await
        .unwrap();
    let mut tags: Vec<_> =
        tags.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("retention".to_string(), "7 years".to_string()),
            ("team".to_string(), "finance".to_string())
        ]
    );
}

#[tokio::test]
async fn prefix_and_dest_prefix_select_and_place_keys() {
    let pair = BucketPair::new("pfx").await;
    for k in ["data/a", "data/sub/b", "other/c"] {
        pair.put(k, Bytes::from(k.to_string())).await;
    }
    let s = sessions().await;
    let source = S3Source::from_client(s3(&s.primary), &pair.source_bucket).with_prefix("data/");
    let sink = S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket).with_dest_prefix("backup/");
    let ex = Executor::new(ExecutorOptions::new());
    let r = ex.execute(Mode::Run, &source, &sink, &Scope::with_prefix("data/")).await.unwrap();
    assert_eq!(r.copied, 2);
    assert_eq!(pair.escrow_keys().await, ["backup/data/a", "backup/data/sub/b"]);
    assert_eq!(
        get(&pair.escrow, &pair.dest_bucket, "backup/data/sub/b").await.unwrap(),
        "data/sub/b"
    );
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::with_prefix("data/")).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 2));
}

#[tokio::test]
async fn listing_pages_through_more_than_a_thousand_keys() {
    let pair = BucketPair::new("many").await;
    let keys: Vec<String> = (0..1105).map(|i| format!("k/{i:05}")).collect();
    let pair_ref = &pair;
    futures::future::join_all(keys.chunks(100).map(|chunk| async move {
        for k in chunk {
            pair_ref.put(k, Bytes::from_static(b"x")).await;
        }
    }))
    .await;
    let s = sessions().await;
    let source = S3Source::from_client(s3(&s.primary), &pair.source_bucket);
    let sink = S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket);
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(32));
    let r = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((r.copied, r.failed), (1105, 0));
    let v = ex.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
    assert!(v.is_clean() && v.skipped == 1105, "{v:?}");
}

#[tokio::test]
async fn preflight_names_missing_and_foreign_buckets() {
    let s = sessions().await;
    let (primary, escrow) = (s3(&s.primary), s3(&s.escrow));
    let err = check_source_bucket(&primary, "no-such-bucket-xyz", PRIMARY).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(
        err.to_string().contains(
            "source bucket no-such-bucket-xyz does not exist in the primary account 111111111111"
        ),
        "{err}"
    );

    let pair = BucketPair::new("own").await;
    check_source_bucket(&primary, &pair.source_bucket, PRIMARY).await.unwrap();
    check_dest_bucket(&escrow, &pair.dest_bucket, ESCROW).await.unwrap();
    // A bucket that belongs to the primary is not an escrow destination.
    let err = check_dest_bucket(&escrow, &pair.source_bucket, ESCROW).await.unwrap_err();
    assert!(err.to_string().contains("is not owned by the escrow account 222222222222"), "{err}");

    let missing = unique("gone");
    let err = check_dest_bucket(&escrow, &missing, ESCROW).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "destination bucket {missing} does not exist in the escrow account"
        )),
        "{err}"
    );

    // A third account's bucket is not the escrow's either.
    let other = s3(&escrow_sync_e2e::admin("333333333333").await);
    let third = unique("third");
    create_bucket(&other, &third, true).await;
    assert!(check_dest_bucket(&escrow, &third, ESCROW).await.is_err());
}

#[tokio::test]
async fn a_run_with_transient_faults_on_a_fifth_of_requests_copies_everything_and_leaves_no_upload()
{
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use escrow_sync_core::RetryPolicy;
    use escrow_sync_e2e::faults;
    use escrow_sync_s3::MultipartOptions;

    let pair = BucketPair::new("faults").await;
    for i in 0..40 {
        pair.put(&format!("small/{i:02}"), Bytes::from(vec![i as u8; 1000 + i])).await;
    }
    let big: Bytes = (0..11 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect::<Vec<_>>().into();
    pair.put("big/a.bin", big.clone()).await;
    pair.put("big/b.bin", big.slice(7..)).await;

    let s = sessions().await;
    let faulty = |session: &escrow_sync_aws::Session, seed| {
        // The emulator speaks plain HTTP on loopback.
        let base = aws_smithy_http_client::Builder::new().build_http();
        let (http, counts) = faults::client(base, 0.2, seed);
        let conf = aws_sdk_s3::config::Builder::from(session.sdk_config())
            .force_path_style(true)
            .http_client(http)
            // Listings keep SDK retries (item calls turn them off): enough
            // attempts that a 20 % fault rate cannot fail a listing.
            .retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard()
                    .with_max_attempts(12)
                    .with_initial_backoff(Duration::from_millis(2)),
            )
            .build();
        (aws_sdk_s3::Client::from_conf(conf), counts)
    };
    let (primary, primary_counts) = faulty(&s.primary, 7);
    let (escrow, escrow_counts) = faulty(&s.escrow, 8);
    let fast = RetryPolicy {
        max_attempts: 12,
        initial_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(20),
    };
    let source = S3Source::from_client(primary, &pair.source_bucket);
    let sink = S3Sink::from_client(escrow, &pair.dest_bucket).with_multipart(
        MultipartOptions::new()
            .with_threshold(5 * 1024 * 1024)
            .with_part_size(5 * 1024 * 1024)
            .with_part_retry(fast),
    );
    let r = Executor::new(ExecutorOptions::new().with_concurrency(8).with_retry(fast))
        .execute(Mode::Run, &source, &sink, &Scope::all())
        .await
        .unwrap();
    assert_eq!((r.copied, r.failed), (42, 0), "{:?}", r.failures);
    let seen =
        primary_counts.seen.load(Ordering::SeqCst) + escrow_counts.seen.load(Ordering::SeqCst);
    let injected = primary_counts.injected.load(Ordering::SeqCst)
        + escrow_counts.injected.load(Ordering::SeqCst);
    assert!(injected * 100 >= seen * 15, "about a fifth of {seen} requests faulted: {injected}");
    // The harness answers them 503 SlowDown: throttling.
    let counts = escrow_sync_testkit::FaultCounts::new();
    (0..injected).for_each(|_| counts.add(escrow_sync_testkit::FaultKind::Throttle));
    assert!(counts.record("e2e::s3_two_accounts::faults_on_a_fifth_of_requests") > 0);

    // Checked with clients without faults.
    let clean_source = S3Source::from_client(s3(&s.primary), &pair.source_bucket);
    let clean_sink = S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket);
    let v = Executor::new(ExecutorOptions::new())
        .execute(Mode::Verify, &clean_source, &clean_sink, &Scope::all())
        .await
        .unwrap();
    assert!(v.is_clean() && v.skipped == 42, "{v:?}");
    assert_eq!(pair.escrow_get("big/b.bin").await.unwrap(), big.slice(7..));
    let uploads =
        pair.escrow.list_multipart_uploads().bucket(&pair.dest_bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "orphaned uploads: {:?}", uploads.uploads());
}

#[tokio::test]
async fn copies_keep_the_sources_full_object_crc64nvme() {
    // See the emulator gap noted below: moto checks only the streamed case.
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
    use escrow_sync_s3::MultipartOptions;

    let pair = BucketPair::new("crc").await;
    let big: Bytes = (0..11 * 1024 * 1024u32).map(|i| (i % 211) as u8).collect::<Vec<_>>().into();
    for (key, body) in [("small.bin", Bytes::from_static(b"checksummed")), ("big.bin", big)] {
        pair.primary
            .put_object()
            .bucket(&pair.source_bucket)
            .key(key)
            .body(body.into())
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .send()
            .await
            .unwrap();
    }
    let crc = |client: aws_sdk_s3::Client, bucket: String, key: &'static str| async move {
        let h = client
            .head_object()
            .bucket(bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        h.checksum_crc64_nvme().map(str::to_string)
    };
    let s = sessions().await;
    for (mode, prefix) in [("server-side", "copied/"), ("stream", "streamed/")] {
        let source = S3Source::from_client(s3(&s.primary), &pair.source_bucket)
            .with_streaming(mode == "stream");
        let sink = S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket)
            .with_dest_prefix(prefix)
            .with_multipart(
                MultipartOptions::new()
                    .with_threshold(5 * 1024 * 1024)
                    .with_part_size(5 * 1024 * 1024),
            );
        let r = Executor::new(ExecutorOptions::new())
            .execute(Mode::Run, &source, &sink, &Scope::all())
            .await
            .unwrap();
        assert_eq!((r.copied, r.failed, r.copied_in_parts), (2, 0, 1), "{mode}: {:?}", r.failures);
        for key in ["small.bin", "big.bin"] {
            let want = crc(pair.primary.clone(), pair.source_bucket.clone(), key).await;
            assert!(want.is_some(), "the source has a CRC64NVME");
            let dest_key: &'static str = Box::leak(format!("{prefix}{key}").into_boxed_str());
            let got = crc(pair.escrow.clone(), pair.dest_bucket.clone(), dest_key).await;
            if mode == "stream" && key == "small.bin" {
                // A streamed PutObject sends the source's value: S3 checks
                // and keeps it.
                assert_eq!(got, want, "{mode} copy of {key} keeps the full-object checksum");
            } else {
                // Emulator gap (moto 5.2.5): server-side copies and
                // multipart completions store a CRC32-sized value for
                // CRC64NVME instead of the real one, and never check a value
                // sent with CompleteMultipartUpload. The request shapes that
                // make S3 keep and check the source's CRC64NVME are covered
                // with aws-smithy-mocks (mock_requests.rs:
                // copies_carry_the_sources_checksum_and_completions_check_it).
                assert!(got.is_some(), "{mode} copy of {key} has a checksum");
            }
        }
    }
}

/// The emulator copies tags across accounts as AWS does (xtask's
/// `moto_patch_s3.py`): a cross-account CopyObject with the default
/// `TaggingDirective=COPY` carries the source's tags, and `REPLACE` the
/// request's. Without the patch moto drops them, and a production path
/// relying on COPY could not be tested here.
#[tokio::test]
async fn the_emulator_copies_tags_across_accounts_as_aws_does() {
    use aws_sdk_s3::types::TaggingDirective;
    let pair = escrow_sync_e2e::BucketPair::new("tagcopy").await;
    pair.primary
        .put_object()
        .bucket(&pair.source_bucket)
        .key("tagged")
        .tagging("team=payments&class=gold")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let tags = |key: &'static str| {
        let escrow = pair.escrow.clone();
        let bucket = pair.dest_bucket.clone();
        async move {
            let out = escrow.get_object_tagging().bucket(bucket).key(key).send().await.unwrap();
            let mut tags: Vec<_> =
                out.tag_set().iter().map(|t| format!("{}={}", t.key(), t.value())).collect();
            tags.sort();
            tags
        }
    };
    let source = format!("{}/tagged", pair.source_bucket);
    pair.escrow
        .copy_object()
        .bucket(&pair.dest_bucket)
        .key("copied")
        .copy_source(&source)
        .send()
        .await
        .unwrap();
    assert_eq!(tags("copied").await, ["class=gold", "team=payments"]);
    pair.escrow
        .copy_object()
        .bucket(&pair.dest_bucket)
        .key("replaced")
        .copy_source(&source)
        .tagging_directive(TaggingDirective::Replace)
        .tagging("escrow=yes")
        .send()
        .await
        .unwrap();
    assert_eq!(tags("replaced").await, ["escrow=yes"]);
}

/// An object uploaded in parts, copied in one CopyObject (below the
/// multipart threshold), gets an ETag of its own: the copy records the
/// source ETag, so the next run confirms it instead of copying it again.
#[tokio::test]
async fn an_object_uploaded_in_parts_is_copied_once() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use escrow_sync_core::{Job, JobContext};
    let pair = BucketPair::new("inparts").await;
    let (c, bucket) = (&pair.primary, &pair.source_bucket);
    let up = c.create_multipart_upload().bucket(bucket).key("parts.bin").send().await.unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    for (n, body) in [(1, vec![b'p'; 5 << 20]), (2, b"tail".to_vec())] {
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
    let s = sessions().await;
    let job = || {
        escrow_sync_s3::S3CopyJob::new(
            S3Source::from_client(s3(&s.primary), &pair.source_bucket)
                .with_expected_owner(Some(PRIMARY.into())),
            S3Sink::from_client(s3(&s.escrow), &pair.dest_bucket)
                .with_expected_owner(Some(ESCROW.into())),
        )
    };
    let first = job().execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!(first.copied, 1, "{first:#?}");
    let again = job().execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:#?}");
}
