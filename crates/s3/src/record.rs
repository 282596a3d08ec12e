//! escrow-sync's own records in escrow (run manifests): written through the
//! sink's upload path, so they get the same protection as every copy
//! (SSE-KMS with the escrow key, Object Lock retention, `ExpectedBucketOwner`)
//! and the same multipart machinery (parts read as they go, the upload
//! journalled, aborted on any failure, retention checked after completion).

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use bytes::Bytes;

use escrow_sync_core::{Error, ErrorKind, Item, ItemKind, RangeRead, Receipt, Result};

use crate::multipart::{PartSource, SourceHead, Sums};
use crate::protect::protect;
use crate::sink::S3Sink;
use crate::util::{PaceExt, url};
use escrow_sync_aws::sdk_error;

impl S3Sink {
    /// Writes `body` as one of escrow-sync's own records at `key` (under the
    /// destination prefix), with content type `content_type` and a SHA-256
    /// checksum S3 checks: in one PutObject up to a streamed part's size
    /// ([`MultipartOptions::stream_part_size_for`](crate::MultipartOptions::stream_part_size_for)),
    /// otherwise in a multipart upload that reads `body` part by part (memory:
    /// within the sink's memory limit) and is aborted on any failure.
    /// Either way the object appears whole or not at all. Protected as every
    /// copy of this sink is ([`S3Sink::with_protection`]). One attempt: the
    /// caller retries retryable errors (parts are retried on their own).
    /// Under Object Lock the record enters the retention ledger, renewed
    /// like every copy ([`S3Sink::renew_retention`]).
    pub async fn write_record(
        &self,
        key: &str,
        body: Arc<dyn RangeRead>,
        content_type: &str,
    ) -> Result<Receipt> {
        let receipt = self.put_record(key, body, content_type).await?;
        self.ledger_record(&self.dest_key(key)).await?;
        Ok(receipt)
    }

    async fn put_record(
        &self,
        key: &str,
        body: Arc<dyn RangeRead>,
        content_type: &str,
    ) -> Result<Receipt> {
        let dest_key = format!("{}{key}", self.dest_prefix());
        if crate::journal::own_folder(key) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "s3:PutObject",
                url(self.bucket(), &dest_key),
                format!(
                    "the key falls in escrow-sync's own folder {} or {}: choose another key",
                    crate::journal::JOURNAL_DIR,
                    crate::renew::RETENTION_DIR
                ),
            ));
        }
        let size = body.len();
        let item = Item::new(key, ItemKind::Object, size, "");
        if size > self.multipart().stream_part_size_for(size)? {
            let head = SourceHead {
                metadata: Default::default(),
                content_type: Some(content_type.to_string()),
                cache_control: None,
                content_disposition: None,
                content_encoding: None,
                content_language: None,
                checksum: None,
            };
            // SHA-256 is kept per part (S3 keeps no full-object SHA-256 of
            // a multipart object).
            let sums = Sums { algorithm: Some(ChecksumAlgorithm::Sha256), kind: None, full: None };
            let from = PartSource::Read(body.as_ref());
            return self.upload_in_parts(&item, head, None, sums, from, &dest_key).await;
        }
        let resource = url(self.bucket(), &dest_key);
        let _permit =
            self.part_budget().parts.acquire().await.map_err(|_| {
                Error::new(ErrorKind::Cancelled, "s3:PutObject", resource.clone(), "")
            })?;
        let _claim = self.part_budget().claim_bytes(size, "s3:PutObject", &resource).await?;
        let data = if size == 0 { Bytes::new() } else { body.read_range(0, size - 1).await? };
        let req = self
            .client()
            .put_object()
            .bucket(self.bucket())
            .key(&dest_key)
            .content_type(content_type)
            .content_length(data.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .body(ByteStream::from(data));
        let out = protect!(req, self.protection())
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| sdk_error(e, "s3:PutObject", url(self.bucket(), &dest_key)))?;
        Ok(Receipt::new(size, out.e_tag().map(str::to_string)))
    }
}
