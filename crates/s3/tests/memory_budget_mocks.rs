//! The memory limit of streamed copies: the bytes a sink's streamed reads
//! hold at once (whole objects sent with PutObject and parts sent with
//! UploadPart, across all objects) never exceed
//! `MultipartOptions::with_memory_limit`, whatever the part concurrency;
//! a part larger than the whole budget still runs (alone) instead of
//! waiting forever. The reads are a fake `RangeRead` whose buffers count
//! themselves while they live (a high-water mark); S3 is aws-smithy-mocks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadOutput;
use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::operation::upload_part::UploadPartOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use bytes::Bytes;

use escrow_sync_core::{Item, ItemKind, Payload, RangeRead, Result, Sink};
use escrow_sync_s3::{MultipartOptions, S3CopyJob, S3Sink, S3Source};

const MIB: u64 = 1024 * 1024;

/// The bytes of all reads alive now, and the most ever alive at once.
#[derive(Default)]
struct Gauge {
    now: AtomicU64,
    high: AtomicU64,
}

impl Gauge {
    fn high(&self) -> u64 {
        self.high.load(Ordering::SeqCst)
    }
}

/// A read's buffer: counted from its allocation until the last `Bytes`
/// sharing it is gone (the request that sent it included).
struct Held {
    data: Vec<u8>,
    gauge: Arc<Gauge>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.now.fetch_sub(self.data.len() as u64, Ordering::SeqCst);
    }
}

/// A streamed source object of `len` bytes whose reads are counted.
struct Counted {
    len: u64,
    attributes: BTreeMap<String, String>,
    gauge: Arc<Gauge>,
}

#[async_trait::async_trait]
impl RangeRead for Counted {
    fn len(&self) -> u64 {
        self.len
    }

    fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    async fn read_range(&self, first: u64, last: u64) -> Result<Bytes> {
        let n = last - first + 1;
        let held = Held { data: vec![7u8; n as usize], gauge: self.gauge.clone() };
        let now = self.gauge.now.fetch_add(n, Ordering::SeqCst) + n;
        self.gauge.high.fetch_max(now, Ordering::SeqCst);
        // The body arrives over time: let every other copy run meanwhile,
        // so that all the reads the budgets let start are alive at once.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        Ok(Bytes::from_owner(held))
    }
}

/// S3 accepting everything a streamed copy sends.
fn rules() -> Vec<Rule> {
    vec![
        mock!(Client::create_multipart_upload)
            .then_output(|| CreateMultipartUploadOutput::builder().upload_id("up").build()),
        mock!(Client::upload_part)
            .then_output(|| UploadPartOutput::builder().e_tag("\"p\"").build()),
        mock!(Client::complete_multipart_upload)
            .then_output(|| CompleteMultipartUploadOutput::builder().e_tag("\"c-3\"").build()),
        // Objects sent whole, and the upload journal's entries.
        mock!(Client::put_object).then_output(|| PutObjectOutput::builder().e_tag("\"o\"").build()),
        mock!(Client::delete_object).then_output(|| DeleteObjectOutput::builder().build()),
    ]
}

/// Streams objects of each size in `sizes` into a sink with `options`, all
/// at once; the most bytes their reads held at once.
async fn stream_all(options: MultipartOptions, sizes: &[u64]) -> u64 {
    let rules = rules();
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &rules);
    let sink = S3Sink::from_client(s3, "escrow").with_multipart(options);
    let gauge = Arc::new(Gauge::default());
    let copies = sizes.iter().enumerate().map(|(i, &len)| {
        let item = Item::new(format!("k{i}"), ItemKind::Object, len, format!("\"e{i}\""));
        let data = Counted { len, attributes: BTreeMap::new(), gauge: gauge.clone() };
        let sink = &sink;
        async move { sink.write(&item, Payload::Ranged(Arc::new(data))).await }
    });
    for (i, r) in futures::future::join_all(copies).await.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("copy {i}: {}", e.chain()));
    }
    assert_eq!(gauge.now.load(Ordering::SeqCst), 0, "every read's bytes were let go");
    gauge.high()
}

#[tokio::test]
async fn streamed_bytes_in_flight_never_exceed_the_memory_limit() {
    // Part concurrency alone would let every part of every object (and
    // every whole object) be read at once: 4 × 15 + 4 × 2 = 68 MiB.
    let options = MultipartOptions::new()
        .with_part_size(5 * MIB)
        .with_part_concurrency(64)
        .with_memory_limit(16 * MIB);
    let sizes = [15 * MIB, 2 * MIB, 15 * MIB, 2 * MIB, 15 * MIB, 2 * MIB, 15 * MIB, 2 * MIB];
    let high = stream_all(options, &sizes).await;
    assert!(high <= 16 * MIB, "{high} bytes in flight, over the 16 MiB limit");
    // The limit bounds memory, it does not serialize the copies.
    assert!(high > 5 * MIB, "only {high} bytes in flight: the copies ran one at a time");
}

#[tokio::test]
async fn derived_parts_fill_the_limit_and_stay_within_it() {
    // Nothing set but the limit: 5 MiB parts (an eighth of 40 MiB), 8 at once.
    let options = MultipartOptions::new().with_memory_limit(40 * MIB);
    assert_eq!((options.stream_part_size(), options.stream_parts_in_flight()), (5 * MIB, 8));
    let high = stream_all(options, &[30 * MIB, 30 * MIB, 3 * MIB, 30 * MIB]).await;
    assert!(high <= 40 * MIB, "{high} bytes in flight, over the 40 MiB limit");
    assert!(high > 20 * MIB, "only {high} bytes in flight");
}

#[tokio::test]
async fn a_part_larger_than_the_whole_limit_runs_alone_and_finishes() {
    // 12 MiB parts under an 8 MiB limit (a library caller may set that; a
    // config file is refused): each part claims the whole budget, so the
    // parts and the whole object take turns, one at a time, and all finish.
    let options = MultipartOptions::new()
        .with_part_size(12 * MIB)
        .with_part_concurrency(8)
        .with_memory_limit(8 * MIB);
    let high = stream_all(options, &[30 * MIB, 6 * MIB, 30 * MIB]).await;
    assert_eq!(high, 12 * MIB, "one part at a time");
}

/// A plan of a job over a primary holding one object and an empty escrow.
async fn plan_notes(streaming: bool) -> Vec<String> {
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
    use aws_sdk_s3::types::Object;
    use escrow_sync_core::{Job, JobContext, Mode};
    let src_list = mock!(Client::list_objects_v2)
        .match_requests(|r| r.bucket() == Some("prod"))
        .then_output(|| {
            ListObjectsV2Output::builder()
                .contents(Object::builder().key("a").size(5).e_tag("\"a\"").build())
                .build()
        });
    let dst_list = mock!(Client::list_objects_v2)
        .match_requests(|r| r.bucket() == Some("escrow"))
        .then_output(|| ListObjectsV2Output::builder().build());
    let source = S3Source::from_client(mock_client!(aws_sdk_s3, [&src_list]), "prod")
        .with_streaming(streaming);
    let sink = S3Sink::from_client(mock_client!(aws_sdk_s3, [&dst_list]), "escrow")
        .with_multipart(MultipartOptions::new().with_memory_limit(48 * MIB));
    let job = S3CopyJob::new(source, sink);
    let report = job.execute(Mode::Plan, &JobContext::new()).await.unwrap();
    assert_eq!(report.missing, 1, "{report:?}");
    report.notes
}

#[tokio::test]
async fn a_streamed_job_reports_how_its_memory_limit_is_spent() {
    let notes = plan_notes(true).await;
    assert!(
        notes.iter().any(|n| n == "streamed: memory_limit 48 MiB → 6 MiB parts, 8 in flight"),
        "{notes:?}"
    );
    // Server-side copies hold no bytes: nothing to say.
    let notes = plan_notes(false).await;
    assert!(!notes.iter().any(|n| n.contains("memory_limit")), "{notes:?}");
}
