//! escrow-sync's own small objects in an escrow bucket (upload journal
//! entries, retention ledger objects): written, read whole and removed with
//! the sink's credentials, owner check and pacing, in one shape.

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use escrow_sync_core::{Error, ErrorKind, Result};

use crate::sink::S3Sink;
use crate::util::{PaceExt, s3_error, url};

/// One of escrow-sync's own objects as listed: key (below the listed
/// prefix), size, last modified.
pub(crate) type OwnEntry = (String, u64, Option<std::time::SystemTime>);

impl S3Sink {
    /// Lists escrow-sync's own objects under `prefix` (a full key prefix),
    /// their keys relative to it.
    pub(crate) async fn list_own(&self, prefix: &str) -> Result<Vec<OwnEntry>> {
        use futures::TryStreamExt;
        crate::list::list_objects(crate::list::ListRequest {
            client: self.client().clone(),
            bucket: self.bucket().to_string(),
            prefix: prefix.to_string(),
            strip: prefix.len(),
            owner: self.owner().map(str::to_string),
            pacer: self.pacer().cloned(),
            ranges: 1,
            range: crate::KeyRange::all(),
        })
        .map_ok(|item| (item.key, item.size, item.modified))
        .try_collect()
        .await
    }

    /// Writes one of escrow-sync's own objects at `key` (a full key).
    pub(crate) async fn put_own(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<()> {
        self.client()
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .body(ByteStream::from(body))
            .content_type(content_type)
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:PutObject", url(self.bucket(), key)))?;
        Ok(())
    }

    /// Reads one of escrow-sync's own objects whole (the caller has checked
    /// its size).
    pub(crate) async fn get_own(&self, key: &str) -> Result<Bytes> {
        let out = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .send()
            .paced(self.pacer())
            .await
            .map_err(|e| s3_error(e, "s3:GetObject", url(self.bucket(), key)))?;
        let body = out.body.collect().await.map_err(|e| {
            Error::new(ErrorKind::Transient, "s3:GetObject", url(self.bucket(), key), "")
                .with_source(e)
        })?;
        Ok(body.into_bytes())
    }

    /// Removes one of escrow-sync's own objects (best effort: a versioned
    /// bucket keeps a delete marker; a leftover is only looked at again).
    /// `what` names it in the warning.
    pub(crate) async fn delete_own(&self, key: &str, what: &str) {
        let res = self
            .client()
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .set_expected_bucket_owner(self.owner().map(str::to_string))
            .send()
            .paced(self.pacer())
            .await;
        if let Err(e) = res {
            let err = s3_error(e, "s3:DeleteObject", url(self.bucket(), key));
            tracing::warn!(key, error = %err.chain(), "{what} left behind");
        }
    }
}
