//! A seeded fault soak at the HTTP level: the real SDK, our error
//! classification and our retries copy through an in-process S3 (tests/fake)
//! that, for a seeded share of requests, throttles (503 SlowDown), fails
//! (500 InternalError), answers 200 with an `<Error>` body (CopyObject,
//! UploadPartCopy, CompleteMultipartUpload) or drops the connection (before
//! the request, or halfway through a GET's body). Over a thousand faults in
//! all; nothing may be lost (every key in escrow once, with the right bytes)
//! and no multipart upload may be left open.

mod fake;

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_smithy_runtime_api::client::http::{SharedHttpConnector, http_client_fn};
use bytes::Bytes;

use escrow_sync_core::{Executor, ExecutorOptions, Mode, Report, RetryPolicy, Scope};
use escrow_sync_s3::{JOURNAL_DIR, MultipartOptions, S3Sink, S3Source};
use escrow_sync_testkit::FaultKind;
use escrow_sync_testkit::http::HttpFaults;

use fake::FakeS3;

const MIB: usize = 1024 * 1024;

fn conf(http: aws_smithy_runtime_api::client::http::SharedHttpClient) -> aws_sdk_s3::Config {
    aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        // Never dialled: the connector answers in process.
        .endpoint_url("http://127.0.0.1:9")
        .force_path_style(true)
        .http_client(http)
        // Listings and the upload journal keep SDK retries (item calls turn
        // them off and retry in the executor).
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(25)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(2)),
        )
        .build()
}

fn faulty_client(server: &FakeS3, faults: &HttpFaults) -> Client {
    Client::from_conf(conf(faults.client_for(SharedHttpConnector::new(server.clone()))))
}

fn clean_client(server: &FakeS3) -> Client {
    let connector = SharedHttpConnector::new(server.clone());
    Client::from_conf(conf(http_client_fn(move |_, _| connector.clone())))
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 200,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }
}

fn content(i: usize) -> Bytes {
    let len = 100 + (i * 131) % 3000;
    Bytes::from((0..len).map(|j| ((i * 7 + j * 13) % 251) as u8).collect::<Vec<_>>())
}

/// Seeds `bucket` with `small` small objects and `big` objects just over
/// 5 MiB (two parts each: a part is at least 5 MiB); returns every key with
/// its bytes.
fn seed(server: &FakeS3, bucket: &str, small: usize, big: usize) -> Vec<(String, Bytes)> {
    let size = 5 * MIB + 1000;
    let base: Bytes = (0..size + big).map(|i| (i % 241) as u8).collect::<Vec<_>>().into();
    let mut all: Vec<(String, Bytes)> =
        (0..small).map(|i| (format!("small/{i:05}"), content(i))).collect();
    all.extend((0..big).map(|i| (format!("big/{i:02}"), base.slice(i..i + size))));
    for (k, v) in &all {
        server.put(bucket, k, v.clone());
    }
    all
}

async fn run(source: &S3Source, sink: &S3Sink) -> Report {
    Executor::new(ExecutorOptions::new().with_concurrency(16).with_retry(retry()))
        .execute(Mode::Run, source, sink, &Scope::all())
        .await
        .expect("the listings succeed")
}

/// Nothing lost, nothing twice, no upload left open, no journal entry left.
async fn assert_escrow(server: &FakeS3, dest: &str, expected: &[(String, Bytes)]) {
    let keys = server.keys(dest);
    assert_eq!(keys.len(), expected.len(), "escrow holds every key and nothing else: {keys:?}");
    for (k, v) in expected {
        let got = server.get(dest, k).unwrap_or_else(|| panic!("{dest}/{k} is missing"));
        assert!(got.data == *v, "{dest}/{k}: wrong bytes ({} of {})", got.data.len(), v.len());
        assert_eq!(server.versions(dest, k), 1, "{dest}/{k} written exactly once");
    }
    assert!(keys.iter().all(|k| !k.starts_with(JOURNAL_DIR)), "journal entries left: {keys:?}");
    let uploads = clean_client(server).list_multipart_uploads().bucket(dest).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "uploads left open: {:?}", uploads.uploads());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_http_faults_of_every_kind_lose_nothing_and_leave_no_upload_open() {
    let server = FakeS3::new();
    let expected = seed(&server, "src", 300, 2);
    // Streamed copies of small objects only: over plain HTTP the SDK signs
    // a body's SHA-256, and hashing 5 MiB parts again and again in a debug
    // build would take most of the test's time (mock_requests.rs covers the
    // streamed multipart path; this run covers server-side parts).
    let expected_streamed = seed(&server, "src-streamed", 100, 0);
    let faults = HttpFaults::new()
        .with_reset_rate(0.1)
        .with_throttle_rate(0.1)
        .with_transient_rate(0.1)
        .with_error_in_200_rate(0.3)
        .with_body_reset_rate(0.3)
        .with_seed(13);
    let parts = MultipartOptions::new()
        .with_threshold(5 * MIB as u64)
        .with_part_size(5 * MIB as u64)
        .with_part_retry(retry());

    // Server-side copies: CopyObject, and UploadPartCopy for the big ones.
    let source = S3Source::from_client(faulty_client(&server, &faults), "src");
    let sink = S3Sink::from_client(faulty_client(&server, &faults), "copied")
        .with_multipart(parts.clone());
    let r = run(&source, &sink).await;
    assert_eq!((r.copied, r.failed), (expected.len() as u64, 0), "{:?}", r.failures);
    assert_escrow(&server, "copied", &expected).await;

    // Streamed copies: HeadObject, ranged GETs (whose bodies break off) and
    // PutObject.
    let source =
        S3Source::from_client(faulty_client(&server, &faults), "src-streamed").with_streaming(true);
    let sink =
        S3Sink::from_client(faulty_client(&server, &faults), "streamed").with_multipart(parts);
    let r = run(&source, &sink).await;
    assert_eq!((r.copied, r.failed), (expected_streamed.len() as u64, 0), "{:?}", r.failures);
    assert_escrow(&server, "streamed", &expected_streamed).await;

    let (created, completed, aborted, open) = server.upload_counts();
    assert_eq!(open, 0);
    assert_eq!(created, completed + aborted, "every upload completed or aborted");
    assert_eq!(completed, 2, "one completed upload per big object");

    let counts = faults.counts();
    let n = counts.record("s3::fault_soak");
    assert!(n >= 1000, "at least a thousand faults: {}", counts.summary());
    for kind in [
        FaultKind::Transient,
        FaultKind::Throttle,
        FaultKind::ErrorIn200,
        FaultKind::ConnectionReset,
    ] {
        assert!(counts.get(kind) >= 50, "{} faults: {}", kind.as_str(), counts.summary());
    }
    assert_eq!(counts.get(FaultKind::Permanent), 0);
    // A second run, without faults, finds nothing to copy.
    let clean = S3Source::from_client(clean_client(&server), "src");
    let again = run(&clean, &S3Sink::from_client(clean_client(&server), "copied")).await;
    assert_eq!((again.copied, again.failed), (0, 0), "{again:?}");
}

#[tokio::test]
async fn each_http_fault_kind_is_retryable_and_leaves_nothing_written() {
    use escrow_sync_core::{ErrorKind, Item, ItemKind, Payload, ServerSideRef, Sink, Source};

    let server = FakeS3::new();
    let data = content(7);
    server.put("src", "k", data.clone());
    let item = Item::new("k", ItemKind::Object, data.len() as u64, fake::etag(&data));
    let reference = || Payload::Reference(ServerSideRef::new("s3", "src", "k", &item.fingerprint));
    let all = escrow_sync_testkit::FaultCounts::new();
    let cases = [
        (HttpFaults::new().with_reset_rate(1.0), FaultKind::ConnectionReset, ErrorKind::Transient),
        (HttpFaults::new().with_throttle_rate(1.0), FaultKind::Throttle, ErrorKind::Throttled),
        (HttpFaults::new().with_transient_rate(1.0), FaultKind::Transient, ErrorKind::Transient),
        (
            HttpFaults::new().with_error_in_200_rate(1.0),
            FaultKind::ErrorIn200,
            ErrorKind::Transient,
        ),
    ];
    for (faults, kind, want) in cases {
        let sink = S3Sink::from_client(faulty_client(&server, &faults), "escrow");
        let err = sink.write(&item, reference()).await.unwrap_err();
        assert_eq!(err.kind(), want, "{}: {err}", kind.as_str());
        assert!(err.is_retryable(), "{}: {err}", kind.as_str());
        assert_eq!(
            faults.counts().get(kind),
            1,
            "{}: {}",
            kind.as_str(),
            faults.counts().summary()
        );
        assert_eq!(faults.counts().total(), 1);
        assert!(server.get("escrow", "k").is_none(), "{}: nothing written", kind.as_str());
        all.absorb(faults.counts());
    }

    // A connection dropped halfway through a response body (GetObjectTagging,
    // the first GET a read with explicit tags makes; the soak breaks ranged
    // GETs too).
    let faults = HttpFaults::new().with_body_reset_rate(1.0);
    let source = S3Source::from_client(faulty_client(&server, &faults), "src")
        .with_tags(escrow_sync_s3::TagMode::Explicit);
    let err = source.read(&item).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(faults.counts().get(FaultKind::ConnectionReset), 1);
    all.absorb(faults.counts());
    assert_eq!(all.record("s3::fault_soak::each_kind_once"), 5);
}
