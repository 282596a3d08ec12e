//! S3 Source and Sink for escrow-sync.
//!
//! [`S3Source`] lists a primary bucket with ListObjectsV2 (paginated,
//! streamed, in key order) and hands each object to the sink as a server-side
//! reference. [`S3Sink`] lists the escrow bucket and copies
//! with CopyObject **called with escrow credentials**: metadata and content
//! headers copied, tags copied server-side (`TaggingDirective=COPY`: one
//! request per object; [`TagMode`] sets them explicitly for stores that drop
//! them, or leaves them out), `CopySourceIfMatch` with the
//! listed ETag so an object that changes mid-run is never half-copied, and
//! `ExpectedBucketOwner` / `ExpectedSourceBucketOwner` from the account ids.
//!
//! Objects above a threshold (default 256 MiB, never above 5 GiB) are copied
//! in parts with UploadPartCopy, all objects' parts drawing on one budget,
//! then CompleteMultipartUpload; any failure aborts the upload. A multipart
//! copy records the source ETag in its metadata ([`SOURCE_ETAG_META`]).
//! Streamed copies ([`S3Source::with_streaming`]) hold at most the sink's
//! memory limit of bytes at once ([`MultipartOptions::with_memory_limit`],
//! default 256 MiB), their part size and concurrency derived from it.
//!
//! An object is up to date when its size and ETag match, or, for a
//! multipart copy, when its recorded source ETag matches.
//!
//! [`ManifestStore`] writes run manifests (format:
//! `escrow_sync_core::manifest`) through the sink's upload path
//! ([`S3Sink::write_record`]) and reads them back.
//!
//! Item calls (tagging, copy, put) run with the SDK's retries off: the
//! executor's one retry budget covers them. Listings keep the SDK's standard
//! retries.
//!
//! [`S3CopyJob`] is the [`escrow_sync_core::Job`] of one bucket pair: the
//! executor's copy, with the multipart uploads an interrupted run left
//! aborted first.
//!
//! ```no_run
//! use escrow_sync_core::{Executor, ExecutorOptions, Mode, Scope};
//! use escrow_sync_s3::{S3Sink, S3Source};
//!
//! # async fn demo(primary: aws_sdk_s3::Client, escrow: aws_sdk_s3::Client) -> escrow_sync_core::Result<()> {
//! let source = S3Source::from_client(primary, "prod-assets")
//!     .with_expected_owner(Some("111111111111".into()));
//! let sink = S3Sink::from_client(escrow, "escrow-prod-assets")
//!     .with_expected_owner(Some("222222222222".into()));
//! let report = Executor::new(ExecutorOptions::new())
//!     .execute(Mode::Run, &source, &sink, &Scope::all())
//!     .await?;
//! println!("copied {} objects, {} bytes", report.copied, report.bytes_copied);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod batch;
mod check;
mod checksum;
mod job;
mod journal;
mod lease;
mod list;
mod manifest;
mod multipart;
mod own;
mod protect;
mod range;
mod record;
mod renew;
mod restore;
pub mod shard;
mod sink;
mod source;
mod tags;
mod util;
mod versions;

pub use batch::csv::{
    ManifestRow, ReportFiles, TaskResult, client_token, encode_key, manifest_csv, parse_report_csv,
    parse_report_manifest,
};
pub use batch::{
    BatchControl, BatchJobState, BatchOptions, DEFAULT_BATCH_PREFIX, DEFAULT_BATCH_THRESHOLD,
    Engine, JOB_GONE,
};
pub use check::{check_dest_bucket, check_dest_protection, check_kms_key, check_source_bucket};
pub use job::{DEFAULT_STALE_UPLOAD_AGE, S3CopyJob};
pub use journal::JOURNAL_DIR;
pub use lease::{
    BUCKET_LEASE_PREFIX, DEFAULT_LEASE_TTL, Lease, LeaseEnd, LeaseGuard, LeaseHolder, LeaseRecord,
    LeaseStore, host_name,
};
pub use list::{DEFAULT_LIST_RANGES, SPLIT_AFTER_PAGES};
pub use manifest::{DEFAULT_MANIFEST_PART_SIZE, MANIFEST_CONTENT_TYPE, ManifestStore};
pub use multipart::{
    DEFAULT_MEMORY_LIMIT, MAX_PARTS, MIN_PART_SIZE, MultipartOptions, SOURCE_ETAG_META, part_ranges,
};
pub use protect::{LockMode, ObjectLock, Protection};
pub use renew::{RETENTION_DIR, Renewal};
pub use restore::{
    S3RestoreSource, bucket_exists, compare_with_target, create_bucket, delete_bucket_and_contents,
    object_sha256,
};
pub use shard::{
    AgreedBoundaries, Boundaries, BoundaryRecord, BoundaryStore, KeyRange, KeySampler, MAX_SHARDS,
    Shard, sample_boundaries,
};
pub use sink::S3Sink;
pub use source::S3Source;
pub use tags::TagMode;
pub use util::{MAX_COPY_OBJECT_SIZE, META_PREFIX, TAG_PREFIX, copy_source, tagging_header};
pub use versions::{SOURCE_MODIFIED_META, SOURCE_VERSION_META};

use escrow_sync_aws::Session;

/// An S3 client for `session`, with path-style addressing when the endpoint
/// is overridden (emulators and S3-compatible stores).
pub fn client(session: &Session) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(session.sdk_config())
        .force_path_style(session.endpoint_overridden())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A per-operation override that turns the SDK's retries off (the executor
/// retries the whole item instead).
pub(crate) fn no_sdk_retries() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default()
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
}
