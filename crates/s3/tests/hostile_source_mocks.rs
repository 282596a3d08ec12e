//! What a primary's attacker can put in front of the S3 sink.
//!
//! - A `versions = true` job with an escrow KMS key: escrow's copies have
//!   ETags unlike the source's, so a listing never matches by ETag. The sink
//!   confirms each key from the source ETag every copy recorded, so a run
//!   with nothing new finds nothing changed (and the mass-change breaker
//!   does not trip on every run); a version escrow lacks is still found.
//! - A source key inside escrow-sync's own journal folder is refused before
//!   any request: the primary cannot plant journal entries that a later run
//!   would read and act on.

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::types::ObjectVersion;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use escrow_sync_core::{ErrorKind, Item, ItemKind, Payload, Sink};
use escrow_sync_s3::{Protection, S3Sink, SOURCE_ETAG_META};

fn version(id: &str, etag: &str, size: i64) -> ObjectVersion {
    ObjectVersion::builder().key("a").version_id(id).e_tag(etag).size(size).build()
}

fn sink(rules: &[&Rule]) -> S3Sink {
    let client: Client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules);
    let protection = Protection { kms_key_id: Some("alias/escrow".into()), object_lock: None };
    S3Sink::from_client(client, "escrow").with_versions(true).with_protection(protection)
}

#[tokio::test]
async fn kms_copies_of_versions_are_confirmed_by_the_source_etag_they_recorded() {
    let listing = mock!(Client::list_object_versions).then_output(|| {
        ListObjectVersionsOutput::builder()
            .versions(version("k2", "\"kms2\"", 6))
            .versions(version("k1", "\"kms1\"", 5))
            .is_truncated(false)
            .build()
    });
    let recorded = |id: &'static str, etag: &'static str| {
        mock!(Client::head_object).match_requests(move |r| r.version_id() == Some(id)).then_output(
            move || HeadObjectOutput::builder().metadata(SOURCE_ETAG_META, etag).build(),
        )
    };
    let (h1, h2) = (recorded("k1", "\"e1\""), recorded("k2", "\"e2\""));
    let rules = [&listing, &h1, &h2];
    let escrow = Item::new("a", ItemKind::Object, 11, "\"kms1\"/5|\"kms2\"/6");
    let same = Item::new("a", ItemKind::Object, 11, "\"e1\"/5|\"e2\"/6");
    assert!(sink(&rules).confirm_same(&same, &escrow).await.unwrap());
    assert_eq!(h1.num_calls() + h2.num_calls(), 2);
    // A third source version escrow lacks: changed.
    let newer = Item::new("a", ItemKind::Object, 18, "\"e1\"/5|\"e2\"/6|\"e3\"/7");
    assert!(!sink(&rules).confirm_same(&newer, &escrow).await.unwrap());
}

#[tokio::test]
async fn a_source_key_in_the_journal_folder_is_refused_without_a_request() {
    let put = mock!(Client::put_object)
        .then_output(|| aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build());
    let rules = [&put];
    let key = format!("{}planted", escrow_sync_s3::JOURNAL_DIR);
    let item = Item::new(&key, ItemKind::Object, 3, "\"x\"");
    let payload = Payload::from_bytes("abc".into(), Default::default());
    let err = sink(&rules).write(&item, payload).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains(escrow_sync_s3::JOURNAL_DIR), "{err}");
    assert_eq!(put.num_calls(), 0);
}
