//! Writing manifests against aws-smithy-mocks: one PutObject up to the part
//! size, otherwise a multipart upload read part by part from the spool file
//! (each part with its SHA-256, the escrow key and Object Lock on the
//! upload), and an upload that fails is aborted, never completed. Both go
//! through the S3 sink's upload path ([`S3Sink::write_record`]): its
//! protection, its upload journal, its retention check after completion.
//! The emulator suite (tests/governance_manifest.rs) writes a multipart
//! manifest for real and reads it back.

use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::operation::put_object_retention::PutObjectRetentionOutput;
use aws_sdk_s3::operation::upload_part::{UploadPartError, UploadPartOutput};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ObjectLockMode, ObjectLockRetentionMode, ServerSideEncryption,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;

use escrow_sync_core::manifest::{Header, ManifestWriter, Spooled};
use escrow_sync_core::{Item, ItemKind, ItemOutcome, ItemRecord};
use escrow_sync_s3::{JOURNAL_DIR, LockMode, ManifestStore, ObjectLock, Protection, S3Sink};

const MIB: u64 = 1024 * 1024;

/// A finished manifest of about `items` × 100 bytes.
fn spooled(items: usize) -> Spooled {
    let header = Header::new("run-1", "0.1.0", "sha256:00", "222222222222", "111111111111");
    let mut w = ManifestWriter::create(header).unwrap();
    w.job("assets", "s3");
    let log = w.item_log("assets");
    for i in 0..items {
        let item = Item::new(format!("data/{i:09}"), ItemKind::Object, 7, format!("\"e{i}\""));
        log(ItemRecord::new(item, ItemOutcome::Copied));
    }
    w.finish_spooled().unwrap().1
}

/// The sink's upload journal: an entry written after
/// CreateMultipartUpload, removed once the upload is completed or aborted.
fn journal() -> (Rule, Rule) {
    let open = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| r.key().is_some_and(|k| k.starts_with(JOURNAL_DIR)))
        .then_output(|| PutObjectOutput::builder().build());
    let close = mock!(aws_sdk_s3::Client::delete_object)
        .match_requests(|r| r.key().is_some_and(|k| k.starts_with(JOURNAL_DIR)))
        .then_output(|| DeleteObjectOutput::builder().build());
    (open, close)
}

/// The HeadObject after a locked multipart upload: the retention is there.
fn locked_head() -> Rule {
    mock!(aws_sdk_s3::Client::head_object).then_output(|| {
        HeadObjectOutput::builder()
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(aws_smithy_types::DateTime::from_secs(4_000_000_000))
            .build()
    })
}

#[tokio::test]
async fn a_small_manifest_is_one_put_object() {
    let put = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| {
            r.key() == Some("runs/run-1.jsonl")
                && r.checksum_algorithm() == Some(&ChecksumAlgorithm::Sha256)
                && r.server_side_encryption() == Some(&ServerSideEncryption::AwsKms)
                && r.ssekms_key_id() == Some("alias/escrow")
                && r.expected_bucket_owner() == Some("222222222222")
        })
        .then_output(|| PutObjectOutput::builder().build());
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put]);
    let store = ManifestStore::new(s3, "esc-manifests", "runs/")
        .with_expected_owner(Some("222222222222".into()))
        .with_kms_key_id(Some("alias/escrow".into()));
    let key = store.put_spooled("run-1", spooled(100)).await.unwrap();
    assert_eq!(key, "runs/run-1.jsonl");
    assert_eq!(put.num_calls(), 1);
}

#[tokio::test]
async fn a_large_manifest_goes_up_in_parts_from_the_spool_file() {
    let manifest = spooled(130_000);
    let len = manifest.len();
    assert!(len > 10 * MIB && len < 15 * MIB, "three 5 MiB parts: {len}");
    let create = mock!(aws_sdk_s3::Client::create_multipart_upload)
        .match_requests(|r| {
            r.key() == Some("runs/run-1.jsonl")
                && r.checksum_algorithm() == Some(&ChecksumAlgorithm::Sha256)
                && r.ssekms_key_id() == Some("alias/escrow")
                && r.object_lock_mode() == Some(&ObjectLockMode::Compliance)
                && r.object_lock_retain_until_date().is_some()
        })
        .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up-1").build());
    let part = mock!(aws_sdk_s3::Client::upload_part)
        .match_requests(|r| {
            r.upload_id() == Some("up-1")
                && r.checksum_algorithm() == Some(&ChecksumAlgorithm::Sha256)
        })
        .then_output(|| UploadPartOutput::builder().e_tag("\"p\"").checksum_sha256("c2hh").build());
    let complete = mock!(aws_sdk_s3::Client::complete_multipart_upload)
        .match_requests(|r| {
            let parts = r.multipart_upload().map(|m| m.parts()).unwrap_or_default();
            r.upload_id() == Some("up-1")
                && parts.len() == 3
                && parts.iter().enumerate().all(|(i, p)| {
                    p.part_number() == Some(i as i32 + 1)
                        && p.e_tag() == Some("\"p\"")
                        && p.checksum_sha256() == Some("c2hh")
                })
        })
        .then_output(|| CompleteMultipartUploadOutput::builder().build());
    let (open, close) = journal();
    let head = locked_head();
    let s3 = mock_client!(
        aws_sdk_s3,
        RuleMode::MatchAny,
        [&create, &part, &complete, &open, &close, &head]
    );
    let store = ManifestStore::new(s3, "esc-manifests", "runs/")
        .with_kms_key_id(Some("alias/escrow".into()))
        .with_object_lock(Some(("COMPLIANCE".into(), 30)))
        .with_part_size(5 * MIB);
    store.put_spooled("run-1", manifest).await.unwrap();
    assert_eq!((create.num_calls(), part.num_calls(), complete.num_calls()), (1, 3, 1));
    assert_eq!((open.num_calls(), close.num_calls(), head.num_calls()), (1, 1, 1));
}

#[tokio::test]
async fn a_failed_part_aborts_the_upload_and_nothing_is_completed() {
    let create = mock!(aws_sdk_s3::Client::create_multipart_upload)
        .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up-2").build());
    let part = mock!(aws_sdk_s3::Client::upload_part).then_error(|| {
        UploadPartError::generic(
            ErrorMetadata::builder().code("AccessDenied").message("Access Denied").build(),
        )
    });
    let complete = mock!(aws_sdk_s3::Client::complete_multipart_upload)
        .then_output(|| CompleteMultipartUploadOutput::builder().build());
    let abort = mock!(aws_sdk_s3::Client::abort_multipart_upload)
        .match_requests(|r| r.upload_id() == Some("up-2") && r.key() == Some("runs/run-1.jsonl"))
        .then_output(|| AbortMultipartUploadOutput::builder().build());
    let (open, close) = journal();
    let s3 = mock_client!(
        aws_sdk_s3,
        RuleMode::MatchAny,
        [&create, &part, &complete, &abort, &open, &close]
    );
    let store = ManifestStore::new(s3, "esc-manifests", "runs/").with_part_size(5 * MIB);
    let err = store.put_spooled("run-1", spooled(130_000)).await.unwrap_err();
    assert!(err.to_string().contains("UploadPart"), "{err}");
    assert_eq!((complete.num_calls(), abort.num_calls()), (0, 1));
    // The journal entry goes with the aborted upload.
    assert_eq!((open.num_calls(), close.num_calls()), (1, 1));
}

/// A store whose GetObject of `runs/m.jsonl` answers `output`.
fn reading(
    output: impl Fn() -> aws_sdk_s3::operation::get_object::GetObjectOutput + Send + Sync + 'static,
) -> ManifestStore {
    let get = mock!(aws_sdk_s3::Client::get_object).then_output(output);
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get]);
    ManifestStore::new(s3, "esc-manifests", "runs/")
}

fn body(bytes: Vec<u8>) -> aws_sdk_s3::operation::get_object::GetObjectOutput {
    aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
        .content_length(bytes.len() as i64)
        .body(aws_sdk_s3::primitives::ByteStream::from(bytes))
        .build()
}

#[tokio::test]
async fn a_manifest_read_back_is_parsed_as_it_streams() {
    let text = spooled(1000).into_bytes().unwrap();
    let m = reading(move || body(text.clone())).read("runs/m.jsonl").await.unwrap();
    assert_eq!(m.jobs["assets"].items.len(), 1000);
    assert_eq!(m.header.run_id, "run-1");
}

#[tokio::test]
async fn an_oversized_or_malformed_manifest_is_a_clear_error_not_a_crash() {
    use escrow_sync_core::manifest::{MAX_MANIFEST_BYTES, MAX_MANIFEST_LINE_BYTES};

    // Over the cap by its length: refused before a byte is read.
    let huge = || {
        aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
            .content_length(MAX_MANIFEST_BYTES as i64 + 1)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
            .build()
    };
    let err = reading(huge).read("runs/m.jsonl").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("s3://esc-manifests/runs/m.jsonl"), "{text}");
    assert!(text.contains("over the 4 GiB a manifest may have"), "{text}");

    // One line without end, past the line cap.
    let long = vec![b'x'; MAX_MANIFEST_LINE_BYTES + 10];
    let err = reading(move || body(long.clone())).read("runs/m.jsonl").await.unwrap_err();
    assert!(err.to_string().contains("line 1: longer than 1024 KiB"), "{err}");

    // A valid header, then a long line.
    let mut text = spooled(3).into_bytes().unwrap();
    let first = text.iter().position(|b| *b == b'\n').unwrap();
    text.truncate(first + 1);
    text.extend(std::iter::repeat_n(b'y', MAX_MANIFEST_LINE_BYTES + 1));
    text.push(b'\n');
    let err = reading(move || body(text.clone())).read("runs/m.jsonl").await.unwrap_err();
    assert!(err.to_string().contains("line 2: longer than"), "{err}");

    // Not text, not JSON, not a manifest, partial.
    for (bytes, want) in [
        (vec![0xff, 0xfe, 0x00, b'\n'], "not UTF-8"),
        (b"{\"not\": \"a manifest\"}\n".to_vec(), "no header line"),
        (b"\x1f\x8b\x08\x00garbage".to_vec(), "not UTF-8"),
        (Vec::new(), "no header line"),
    ] {
        let err = reading(move || body(bytes.clone())).read("runs/m.jsonl").await.unwrap_err();
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    let mut partial = spooled(5).into_bytes().unwrap();
    partial.truncate(partial.len() - 20);
    let err = reading(move || body(partial.clone())).read("runs/m.jsonl").await.unwrap_err();
    assert!(err.chain().contains("line"), "{}", err.chain());
}

/// What a PutObject or CreateMultipartUpload of a manifest asked for.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    key: Option<String>,
    content_type: Option<String>,
    checksum: Option<ChecksumAlgorithm>,
    sse: Option<ServerSideEncryption>,
    kms_key: Option<String>,
    lock: Option<ObjectLockMode>,
    retain_days: Option<i64>,
    owner: Option<String>,
    body: Option<Vec<u8>>,
}

fn days_from_now(d: Option<&aws_smithy_types::DateTime>) -> Option<i64> {
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now()).secs();
    // Rounded: the request was made a moment ago.
    d.map(|d| (d.secs() - now + 3600) / 86_400)
}

type Log = std::sync::Arc<std::sync::Mutex<Vec<Sent>>>;

/// The parts uploaded: number and body.
type Parts = std::sync::Arc<std::sync::Mutex<Vec<(i32, Vec<u8>)>>>;

const KEY_ARN: &str = "arn:aws:kms:us-east-1:222222222222:key/escrow";

fn protection(mode: LockMode, days: u32) -> Protection {
    Protection::new()
        .with_kms_key_id(Some(KEY_ARN.into()))
        .with_object_lock(Some(ObjectLock::new(mode, days)))
}

async fn text_of(spooled: &Spooled) -> Vec<u8> {
    use escrow_sync_core::RangeRead;
    spooled.read_range(0, spooled.len() - 1).await.unwrap().to_vec()
}

#[tokio::test]
async fn a_manifest_put_goes_through_the_sink_with_the_escrow_key_and_object_lock() {
    let log: Log = Default::default();
    let seen = log.clone();
    let put = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(move |r| {
            seen.lock().unwrap().push(Sent {
                key: r.key().map(str::to_string),
                content_type: r.content_type().map(str::to_string),
                checksum: r.checksum_algorithm().cloned(),
                sse: r.server_side_encryption().cloned(),
                kms_key: r.ssekms_key_id().map(str::to_string),
                lock: r.object_lock_mode().cloned(),
                retain_days: days_from_now(r.object_lock_retain_until_date()),
                owner: r.expected_bucket_owner().map(str::to_string),
                body: r.body().bytes().map(<[u8]>::to_vec),
            });
            true
        })
        .then_output(|| PutObjectOutput::builder().e_tag("\"m\"").build());
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put]);
    let manifest = spooled(100);
    let text = text_of(&manifest).await;
    let store = ManifestStore::new(s3.clone(), "esc-manifests", "runs/")
        .with_expected_owner(Some("222222222222".into()))
        .with_protection(protection(LockMode::Compliance, 30));
    assert_eq!(store.put_spooled("run-1", manifest).await.unwrap(), "runs/run-1.jsonl");
    let want = Sent {
        key: Some("runs/run-1.jsonl".into()),
        content_type: Some("application/x-ndjson".into()),
        checksum: Some(ChecksumAlgorithm::Sha256),
        sse: Some(ServerSideEncryption::AwsKms),
        kms_key: Some(KEY_ARN.into()),
        lock: Some(ObjectLockMode::Compliance),
        retain_days: Some(30),
        owner: Some("222222222222".into()),
        body: Some(text.clone()),
    };
    assert_eq!(log.lock().unwrap()[0], want);

    // The very request the S3 sink makes for a record of its own.
    let sink = S3Sink::from_client(s3, "esc-manifests")
        .with_expected_owner(Some("222222222222".into()))
        .with_protection(protection(LockMode::Compliance, 30));
    let body = std::sync::Arc::new(spooled(100));
    let text = text_of(&body).await;
    sink.write_record("runs/run-1.jsonl", body, "application/x-ndjson").await.unwrap();
    assert_eq!(log.lock().unwrap()[1], Sent { body: Some(text), ..want });

    // The legacy setters give the same protection.
    let store = ManifestStore::new(
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put]),
        "esc-manifests",
        "runs/",
    )
    .with_expected_owner(Some("222222222222".into()))
    .with_kms_key_id(Some(KEY_ARN.into()))
    .with_object_lock(Some(("COMPLIANCE".into(), 30)));
    store.put("run-2", b"text".to_vec()).await.unwrap();
    let sent = log.lock().unwrap()[2].clone();
    assert_eq!(
        (sent.sse, sent.kms_key.as_deref()),
        (Some(ServerSideEncryption::AwsKms), Some(KEY_ARN))
    );
    assert_eq!((sent.lock, sent.retain_days), (Some(ObjectLockMode::Compliance), Some(30)));
    assert_eq!(sent.body.as_deref(), Some(&b"text"[..]));
    assert_eq!(put.num_calls(), 3);
}

#[tokio::test]
async fn a_big_spooled_manifest_goes_up_in_parts_protected_and_byte_for_byte() {
    let manifest = spooled(130_000);
    let text = text_of(&manifest).await;
    let log: Log = Default::default();
    let seen = log.clone();
    let create = mock!(aws_sdk_s3::Client::create_multipart_upload)
        .match_requests(move |r| {
            seen.lock().unwrap().push(Sent {
                key: r.key().map(str::to_string),
                content_type: r.content_type().map(str::to_string),
                checksum: r.checksum_algorithm().cloned(),
                sse: r.server_side_encryption().cloned(),
                kms_key: r.ssekms_key_id().map(str::to_string),
                lock: r.object_lock_mode().cloned(),
                retain_days: days_from_now(r.object_lock_retain_until_date()),
                owner: r.expected_bucket_owner().map(str::to_string),
                body: None,
            });
            r.metadata().is_none() && r.checksum_type().is_none()
        })
        .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up-9").build());
    let parts: Parts = Default::default();
    let got = parts.clone();
    let part = mock!(aws_sdk_s3::Client::upload_part)
        .match_requests(move |r| {
            let body = r.body().bytes().map(<[u8]>::to_vec).unwrap_or_default();
            got.lock().unwrap().push((r.part_number().unwrap_or(0), body));
            r.upload_id() == Some("up-9")
                && r.checksum_algorithm() == Some(&ChecksumAlgorithm::Sha256)
                && r.expected_bucket_owner() == Some("222222222222")
        })
        .then_output(|| UploadPartOutput::builder().e_tag("\"p\"").checksum_sha256("c2hh").build());
    let complete = mock!(aws_sdk_s3::Client::complete_multipart_upload)
        .match_requests(|r| {
            let parts = r.multipart_upload().map(|m| m.parts()).unwrap_or_default();
            r.upload_id() == Some("up-9")
                && parts.len() == 3
                && parts.iter().all(|p| p.checksum_sha256() == Some("c2hh"))
        })
        .then_output(|| {
            CompleteMultipartUploadOutput::builder().e_tag("\"m-3\"").version_id("v1").build()
        });
    let (open, close) = journal();
    // A store that ignores the lock headers of CreateMultipartUpload (moto):
    // the sink sets the retention after completion.
    let head = mock!(aws_sdk_s3::Client::head_object)
        .match_requests(|r| r.key() == Some("runs/run-1.jsonl") && r.version_id() == Some("v1"))
        .then_output(|| HeadObjectOutput::builder().build());
    let retention = mock!(aws_sdk_s3::Client::put_object_retention)
        .match_requests(|r| {
            let retention = r.retention();
            r.key() == Some("runs/run-1.jsonl")
                && r.version_id() == Some("v1")
                && retention.and_then(|x| x.mode()) == Some(&ObjectLockRetentionMode::Governance)
                && days_from_now(retention.and_then(|x| x.retain_until_date())) == Some(7)
        })
        .then_output(|| PutObjectRetentionOutput::builder().build());
    let s3 = mock_client!(
        aws_sdk_s3,
        RuleMode::MatchAny,
        [&create, &part, &complete, &open, &close, &head, &retention]
    );
    let store = ManifestStore::new(s3, "esc-manifests", "runs/")
        .with_expected_owner(Some("222222222222".into()))
        .with_protection(protection(LockMode::Governance, 7))
        .with_part_size(5 * MIB);
    assert_eq!(store.put_spooled("run-1", manifest).await.unwrap(), "runs/run-1.jsonl");
    assert_eq!(
        log.lock().unwrap().as_slice(),
        [Sent {
            key: Some("runs/run-1.jsonl".into()),
            content_type: Some("application/x-ndjson".into()),
            checksum: Some(ChecksumAlgorithm::Sha256),
            sse: Some(ServerSideEncryption::AwsKms),
            kms_key: Some(KEY_ARN.into()),
            lock: Some(ObjectLockMode::Governance),
            retain_days: Some(7),
            owner: Some("222222222222".into()),
            body: None,
        }]
    );
    let mut parts = parts.lock().unwrap().clone();
    parts.sort_by_key(|p| p.0);
    assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3]);
    let sizes: Vec<u64> = parts.iter().map(|p| p.1.len() as u64).collect();
    assert_eq!(sizes[..2], [5 * MIB, 5 * MIB]);
    let joined: Vec<u8> = parts.iter().flat_map(|p| p.1.iter().copied()).collect();
    assert!(joined == text, "the parts are the spool file, in order");
    assert_eq!((complete.num_calls(), open.num_calls(), close.num_calls()), (1, 1, 1));
    assert_eq!((head.num_calls(), retention.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_retryable_failure_is_retried_and_a_bad_lock_mode_sends_nothing() {
    use escrow_sync_core::RetryPolicy;
    use std::time::Duration;
    let put = mock!(aws_sdk_s3::Client::put_object)
        .sequence()
        .http_status(503, None)
        .output(|| PutObjectOutput::builder().build())
        .build();
    let s3 = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&put]);
    let fast = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let store = ManifestStore::new(s3, "esc-manifests", "runs/").with_retry(fast);
    store.put("run-1", b"x".to_vec()).await.unwrap();
    assert_eq!(put.num_calls(), 2, "one 503, then the write");

    let nothing =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&nothing]);
    let store = ManifestStore::new(s3, "esc-manifests", "runs/")
        .with_object_lock(Some(("FOREVER".into(), 30)));
    let err = store.put("run-1", b"x".to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("\"FOREVER\" is not COMPLIANCE or GOVERNANCE"), "{err}");
    assert_eq!(nothing.num_calls(), 0);
}
