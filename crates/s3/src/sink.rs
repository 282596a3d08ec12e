//! The S3 Sink: lists what escrow holds and copies into it with escrow
//! credentials.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{MetadataDirective, TaggingDirective};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{
    Error, ErrorKind, Item, ItemStream, Payload, Receipt, Result, Scope, ServerSideRef, Sink,
};

use crate::list::list_objects;
use crate::util::{
    CONTENT_TYPE, MAX_COPY_OBJECT_SIZE, copy_source, metadata, s3_error, tagging_header, url,
};

/// Writes into a bucket in the escrow account.
#[derive(Debug, Clone)]
pub struct S3Sink {
    client: Client,
    bucket: String,
    dest_prefix: String,
    owner: Option<String>,
}

impl S3Sink {
    /// A sink into `bucket`, using `client` (escrow credentials).
    pub fn from_client(client: Client, bucket: impl Into<String>) -> Self {
        S3Sink {
            client,
            bucket: bucket.into(),
            dest_prefix: String::new(),
            owner: None,
        }
    }

    /// Prepends `prefix` to every key in escrow.
    pub fn with_dest_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.dest_prefix = prefix.into();
        self
    }

    /// The escrow account, sent as `ExpectedBucketOwner` on every call.
    pub fn with_expected_owner(mut self, account_id: Option<String>) -> Self {
        self.owner = account_id;
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn dest_key(&self, key: &str) -> String {
        format!("{}{}", self.dest_prefix, key)
    }

    async fn copy(&self, item: &Item, src: ServerSideRef) -> Result<Receipt> {
        let dest_key = self.dest_key(&item.key);
        let resource = format!(
            "{} -> {}",
            url(&src.container, &src.key),
            url(&self.bucket, &dest_key)
        );
        if src.service != "s3" {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "s3:CopyObject",
                resource,
                format!("cannot copy a {} reference into S3", src.service),
            ));
        }
        if item.size > MAX_COPY_OBJECT_SIZE {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "s3:CopyObject",
                resource,
                format!(
                    "objects over 5 GiB ({} bytes here) need a multipart copy, which is not yet \
                     supported; this object is not in escrow",
                    item.size
                ),
            ));
        }
        let tagging = tagging_header(&src.attributes);
        let out = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(&dest_key)
            .copy_source(copy_source(&src.container, &src.key))
            .copy_source_if_match(&src.fingerprint)
            .metadata_directive(MetadataDirective::Copy)
            .tagging_directive(TaggingDirective::Replace)
            .tagging(tagging)
            .set_expected_bucket_owner(self.owner.clone())
            .set_expected_source_bucket_owner(src.owner.clone())
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .await
            .map_err(|e| {
                let err = s3_error(e, "s3:CopyObject", resource.clone());
                if err.kind() == ErrorKind::PreconditionFailed {
                    Error::new(
                        ErrorKind::PreconditionFailed,
                        "s3:CopyObject",
                        resource.clone(),
                        "the source object changed after it was listed; the next run copies the new version",
                    )
                    .with_source(err)
                } else {
                    err
                }
            })?;
        let etag = out
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .map(str::to_string);
        Ok(Receipt::new(item.size, etag))
    }

    async fn put(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        let dest_key = self.dest_key(&item.key);
        let (data, attributes) = payload.collect().await?;
        if data.len() as u64 != item.size {
            return Err(Error::new(
                ErrorKind::Failed,
                "s3:PutObject",
                url(&self.bucket, &dest_key),
                format!(
                    "the source gave {} bytes, the listing said {}",
                    data.len(),
                    item.size
                ),
            ));
        }
        let tagging = tagging_header(&attributes);
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&dest_key)
            .body(ByteStream::from(data))
            .set_metadata(Some(metadata(&attributes)))
            .set_content_type(attributes.get(CONTENT_TYPE).cloned())
            .set_tagging((!tagging.is_empty()).then_some(tagging))
            .set_expected_bucket_owner(self.owner.clone())
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .await
            .map_err(|e| sdk_error(e, "s3:PutObject", url(&self.bucket, &dest_key)))?;
        Ok(Receipt::new(item.size, out.e_tag().map(str::to_string)))
    }
}

#[async_trait]
impl Sink for S3Sink {
    fn describe(&self) -> String {
        url(&self.bucket, &self.dest_prefix)
    }

    fn sorted(&self) -> bool {
        // Stripping a common prefix keeps the byte order.
        true
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let prefix = self.dest_key(&scope.prefix);
        list_objects(
            self.client.clone(),
            self.bucket.clone(),
            prefix,
            self.dest_prefix.len(),
            self.owner.clone(),
        )
    }

    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        match payload {
            Payload::Reference(r) => self.copy(item, r).await,
            bytes => self.put(item, bytes).await,
        }
    }
}
