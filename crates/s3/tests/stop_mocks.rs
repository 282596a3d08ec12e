//! A copy dropped half-way (the executor's hard stop drops the copies in
//! flight) leaves no multipart upload open: its upload is aborted and its
//! journal entry removed in the background, and `S3Sink::settle` waits for
//! that. With aws-smithy-mocks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use escrow_sync_core::{Item, ItemKind, Payload, RangeRead, Result, Sink};
use escrow_sync_s3::{JOURNAL_DIR, MultipartOptions, S3Sink};

const MIB: u64 = 1024 * 1024;

/// A streamed source whose reads never end (a copy stuck in flight).
struct Stuck(BTreeMap<String, String>);

#[async_trait::async_trait]
impl RangeRead for Stuck {
    fn len(&self) -> u64 {
        12 * MIB
    }
    fn attributes(&self) -> &BTreeMap<String, String> {
        &self.0
    }
    async fn read_range(&self, _: u64, _: u64) -> Result<bytes::Bytes> {
        std::future::pending().await
    }
}

struct Mocks {
    create: Rule,
    journal_put: Rule,
    abort: Rule,
    journal_delete: Rule,
}

impl Mocks {
    fn new() -> Self {
        let journal = format!("{JOURNAL_DIR}up-1");
        let j2 = journal.clone();
        Mocks {
            create: mock!(Client::create_multipart_upload)
                .match_requests(|r| r.key() == Some("big"))
                .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up-1").build()),
            journal_put: mock!(Client::put_object)
                .match_requests(move |r| r.key() == Some(journal.as_str()))
                .then_output(|| PutObjectOutput::builder().build()),
            abort: mock!(Client::abort_multipart_upload)
                .match_requests(|r| r.key() == Some("big") && r.upload_id() == Some("up-1"))
                .then_output(|| AbortMultipartUploadOutput::builder().build()),
            journal_delete: mock!(Client::delete_object)
                .match_requests(move |r| r.key() == Some(j2.as_str()))
                .then_output(|| DeleteObjectOutput::builder().build()),
        }
    }

    fn sink(&self) -> S3Sink {
        let rules = [&self.create, &self.journal_put, &self.abort, &self.journal_delete];
        let client: Client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules);
        S3Sink::from_client(client, "escrow")
            .with_multipart(MultipartOptions::new().with_part_size(5 * MIB))
    }
}

fn big() -> (Item, Payload) {
    let item = Item::new("big", ItemKind::Object, 12 * MIB, "\"etag\"");
    (item, Payload::Ranged(Arc::new(Stuck(BTreeMap::new()))))
}

#[tokio::test]
async fn a_copy_dropped_while_its_parts_are_in_flight_aborts_its_upload() {
    let mocks = Mocks::new();
    let sink = mocks.sink();
    let (item, payload) = big();
    let write = tokio::time::timeout(Duration::from_millis(200), sink.write(&item, payload)).await;
    assert!(write.is_err(), "the parts never end: the copy is dropped");
    assert_eq!((mocks.create.num_calls(), mocks.journal_put.num_calls()), (1, 1));
    sink.settle().await;
    assert_eq!(mocks.abort.num_calls(), 1, "the upload is aborted");
    assert_eq!(mocks.journal_delete.num_calls(), 1, "and its journal entry removed");
}

#[tokio::test]
async fn a_copy_dropped_before_its_upload_was_created_still_aborts_it() {
    let mocks = Mocks::new();
    let sink = mocks.sink();
    let (item, payload) = big();
    {
        // Polled once: the upload's creation has started, not ended.
        let mut write = std::pin::pin!(sink.write(&item, payload));
        let polled = futures::poll!(write.as_mut());
        assert!(polled.is_pending());
    }
    sink.settle().await;
    // Created and journaled by then, with nobody to take it: aborted.
    assert_eq!((mocks.create.num_calls(), mocks.journal_put.num_calls()), (1, 1));
    assert_eq!(mocks.abort.num_calls(), 1);
    assert_eq!(mocks.journal_delete.num_calls(), 1);
}
