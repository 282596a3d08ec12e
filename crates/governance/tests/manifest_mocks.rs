//! Writing manifests against aws-smithy-mocks: one PutObject up to the part
//! size, otherwise a multipart upload read part by part from the spool file
//! (each part with its SHA-256, the escrow key and Object Lock on the
//! upload), and an upload that fails is aborted, never completed. The
//! emulator suite (tests/governance_manifest.rs) writes a multipart manifest
//! for real and reads it back.

use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::operation::upload_part::{UploadPartError, UploadPartOutput};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode, ServerSideEncryption};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;

use escrow_sync_core::{Item, ItemKind, ItemOutcome, ItemRecord};
use escrow_sync_governance::manifest::{Header, ManifestStore, ManifestWriter, Spooled};

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
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&create, &part, &complete]);
    let store = ManifestStore::new(s3, "esc-manifests", "runs/")
        .with_kms_key_id(Some("alias/escrow".into()))
        .with_object_lock(Some(("COMPLIANCE".into(), 30)))
        .with_part_size(5 * MIB);
    store.put_spooled("run-1", manifest).await.unwrap();
    assert_eq!((create.num_calls(), part.num_calls(), complete.num_calls()), (1, 3, 1));
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
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&create, &part, &complete, &abort]);
    let store = ManifestStore::new(s3, "esc-manifests", "runs/").with_part_size(5 * MIB);
    let err = store.put_spooled("run-1", spooled(130_000)).await.unwrap_err();
    assert!(err.to_string().contains("UploadPart"), "{err}");
    assert_eq!((complete.num_calls(), abort.num_calls()), (0, 1));
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
    use escrow_sync_governance::manifest::{MAX_MANIFEST_BYTES, MAX_MANIFEST_LINE_BYTES};

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
