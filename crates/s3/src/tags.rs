//! How object tags reach escrow ([`TagMode`]), and the one GetObjectTagging
//! call that reads them where S3 cannot copy them server-side.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use escrow_sync_core::{RequestPacer, Result};

use crate::util::{PaceExt, s3_error, url};

/// Attribute of a server-side reference saying that the copy takes the
/// source's tags server-side (`TaggingDirective=COPY`): the reference then
/// carries no tags of its own.
pub(crate) const TAGS_COPIED_ATTR: &str = "tagging-directive";

/// How a job's copies get the source object's tags (`tags = "copy" |
/// "explicit" | "none"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TagMode {
    /// S3 copies them server-side (`TaggingDirective=COPY`, one request per
    /// object; AWS needs `s3:GetObjectTagging` on the source for it).
    /// Where S3 cannot (streamed copies, copies in parts), they are read
    /// with GetObjectTagging and set explicitly.
    #[default]
    Copy,
    /// Read with GetObjectTagging and set explicitly on every copy
    /// (`TaggingDirective=REPLACE`): for S3-compatible stores that drop
    /// tags on a server-side copy.
    Explicit,
    /// Not copied: escrow copies carry no tags, and `verify` does not
    /// compare them.
    None,
}

impl TagMode {
    /// The config spelling: `copy`, `explicit` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            TagMode::Copy => "copy",
            TagMode::Explicit => "explicit",
            TagMode::None => "none",
        }
    }
}

impl std::fmt::Display for TagMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tags of `bucket`/`key` (of one version, if given); none where the
/// store has no object tagging (an S3-compatible store without it has no
/// tags to keep).
pub(crate) async fn object_tags(
    client: &Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
    owner: Option<String>,
    pacer: Option<&RequestPacer>,
) -> Result<BTreeMap<String, String>> {
    let res = client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_string))
        .set_expected_bucket_owner(owner)
        .customize()
        .config_override(crate::no_sdk_retries())
        .send()
        .paced(pacer)
        .await;
    match res {
        Ok(out) => {
            Ok(out.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
        }
        Err(e)
            if e.as_service_error().and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                == Some("NotImplemented") =>
        {
            Ok(BTreeMap::new())
        }
        Err(e) => Err(s3_error(e, "s3:GetObjectTagging", url(bucket, key))),
    }
}
