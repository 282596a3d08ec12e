//! Ranged reads of a source object, for streamed copies.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use bytes::Bytes;

use escrow_sync_core::{Error, ErrorKind, RangeRead, RequestPacer, Result};

use crate::util::{PaceExt, s3_error, url};

/// One source object, read range by range with `If-Match` its listed ETag.
#[derive(Debug)]
pub(crate) struct S3Range {
    pub(crate) client: Client,
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) etag: String,
    pub(crate) owner: Option<String>,
    pub(crate) len: u64,
    pub(crate) attributes: BTreeMap<String, String>,
    pub(crate) pacer: Option<RequestPacer>,
    /// One version of the key (restores read escrow versions).
    pub(crate) version: Option<String>,
}

#[async_trait]
impl RangeRead for S3Range {
    fn len(&self) -> u64 {
        self.len
    }

    fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    async fn read_range(&self, first: u64, last: u64) -> Result<Bytes> {
        let resource = format!("{} bytes {first}-{last}", url(&self.bucket, &self.key));
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_version_id(self.version.clone())
            .range(format!("bytes={first}-{last}"))
            .if_match(&self.etag)
            .set_expected_bucket_owner(self.owner.clone())
            .customize()
            .config_override(crate::no_sdk_retries())
            .send()
            .paced(self.pacer.as_ref())
            .await
            .map_err(|e| s3_error(e, "s3:GetObject", resource.clone()))?;
        // Read chunk by chunk into one buffer of the part's size: collecting
        // and then concatenating would hold the part twice.
        let want = last - first + 1;
        let mut buf = bytes::BytesMut::with_capacity(want as usize);
        let mut body = out.body;
        while let Some(chunk) = body.try_next().await.map_err(|e| {
            Error::new(ErrorKind::Transient, "s3:GetObject", resource.clone(), "").with_source(e)
        })? {
            if (buf.len() + chunk.len()) as u64 > want {
                // A store that sends more than the range asked for is not
                // read on: the part's memory claim holds `want` bytes.
                return Err(Error::new(
                    ErrorKind::Transient,
                    "s3:GetObject",
                    resource,
                    format!("got more than the {want} bytes asked for"),
                ));
            }
            buf.extend_from_slice(&chunk);
        }
        let data = buf.freeze();
        if data.len() as u64 != want {
            return Err(Error::new(
                ErrorKind::Transient,
                "s3:GetObject",
                resource,
                format!("got {} bytes, asked for {want}", data.len()),
            ));
        }
        Ok(data)
    }
}
