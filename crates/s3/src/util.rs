//! Small helpers shared by the source and the sink.

use std::collections::BTreeMap;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Error, ErrorKind};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// Like [`COMPONENT`], but `/` stays (for `x-amz-copy-source`).
const PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// The largest object a single CopyObject can copy (5 GiB).
pub const MAX_COPY_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Attribute-name prefix for object tags in a payload.
pub const TAG_PREFIX: &str = "tag:";
/// Attribute-name prefix for user metadata in a payload.
pub const META_PREFIX: &str = "meta:";
/// Attribute name for the content type in a payload.
pub const CONTENT_TYPE: &str = "content-type";

/// The `x-amz-copy-source` value for `bucket`/`key`, URL-encoded.
pub fn copy_source(bucket: &str, key: &str) -> String {
    format!("{}/{}", utf8_percent_encode(bucket, PATH), utf8_percent_encode(key, PATH))
}

/// The `x-amz-copy-source` value for one version of `bucket`/`key`.
pub fn copy_source_version(bucket: &str, key: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => {
            format!("{}?versionId={}", copy_source(bucket, key), utf8_percent_encode(v, COMPONENT))
        }
        None => copy_source(bucket, key),
    }
}

/// The `x-amz-tagging` value for the `tag:` attributes, URL-encoded.
pub fn tagging_header(attributes: &BTreeMap<String, String>) -> String {
    attributes
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(TAG_PREFIX).map(|k| (k, v)))
        .map(|(k, v)| {
            format!("{}={}", utf8_percent_encode(k, COMPONENT), utf8_percent_encode(v, COMPONENT))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The `meta:` attributes as user metadata.
pub fn metadata(
    attributes: &BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(META_PREFIX).map(|k| (k.to_string(), v.clone())))
        .collect()
}

/// Converts an S3 SDK error, explaining archived (Glacier) source objects.
pub(crate) fn s3_error<E>(
    err: SdkError<E, HttpResponse>,
    operation: &str,
    resource: String,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (code, message) = err
        .as_service_error()
        .map(|e| {
            (e.code().unwrap_or_default().to_string(), e.message().unwrap_or_default().to_string())
        })
        .unwrap_or_default();
    let converted = sdk_error(err, operation, resource.clone());
    if let Some((kind, why)) = unpullable(&code, &message) {
        return Error::new(kind, operation, resource, why).with_source(converted);
    }
    if converted.kind() == ErrorKind::PreconditionFailed {
        // Only source reads carry If-Match (the listed ETag).
        return Error::new(
            ErrorKind::PreconditionFailed,
            operation,
            resource,
            "the source object changed after it was listed; the next run copies the new version",
        )
        .with_source(converted);
    }
    converted
}

/// Explains the source objects escrow-sync cannot pull, by S3's error code
/// and message.
fn unpullable(code: &str, message: &str) -> Option<(ErrorKind, &'static str)> {
    let lower = message.to_ascii_lowercase();
    if code == "InvalidObjectState" || code == "ObjectNotInActiveTierError" {
        return Some((
            ErrorKind::Failed,
            "the source object is in an archive storage class (Glacier / Deep Archive): restore \
             it in the primary first; the next run copies it",
        ));
    }
    if code == "InvalidRequest"
        && (lower.contains("customer") || lower.contains("server side encryption"))
    {
        return Some((
            ErrorKind::Failed,
            "the source object is encrypted with a customer-provided key (SSE-C): S3 cannot copy \
             it without that key, and escrow-sync never handles customer keys; re-encrypt it in \
             the primary with SSE-S3 or a customer-managed KMS key",
        ));
    }
    if (code == "AccessDenied"
        || code == "KMS.AccessDeniedException"
        || code == "KMS.NotFoundException")
        && (lower.contains("kms") || lower.contains("ciphertext") || lower.contains("key"))
    {
        return Some((
            ErrorKind::AccessDenied,
            "the source object is encrypted with a KMS key the escrow may not use: objects under \
             the primary's AWS-managed aws/s3 key can never be read from another account; \
             re-encrypt them with a customer-managed key whose policy grants kms:Decrypt to the \
             escrow operator",
        ));
    }
    None
}

/// `s3://bucket/key` for messages.
pub fn url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// Waits for the job's request pacer before a request future runs.
pub(crate) trait PaceExt: std::future::Future + Sized {
    /// Runs `self` once `pacer` (if any) allows one more request.
    fn paced(
        self,
        pacer: Option<&escrow_sync_core::RequestPacer>,
    ) -> impl std::future::Future<Output = Self::Output> {
        async move {
            escrow_sync_core::paced(pacer).await;
            self.await
        }
    }
}

impl<F: std::future::Future> PaceExt for F {}

/// The user metadata (keys `keep` accepts) and content headers of a
/// HeadObject answer, as payload attributes for a streamed copy.
pub(crate) fn head_attributes(
    head: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    attributes: &mut BTreeMap<String, String>,
    keep: impl Fn(&str) -> bool,
) {
    for (k, v) in head.metadata().into_iter().flatten() {
        if keep(k) {
            attributes.insert(format!("{META_PREFIX}{k}"), v.clone());
        }
    }
    for (k, v) in [
        (CONTENT_TYPE, head.content_type()),
        ("cache-control", head.cache_control()),
        ("content-disposition", head.content_disposition()),
        ("content-encoding", head.content_encoding()),
        ("content-language", head.content_language()),
    ] {
        if let Some(v) = v {
            attributes.insert(k.to_string(), v.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpullable_objects_are_explained() {
        let (k, why) = unpullable("InvalidRequest", "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.").unwrap();
        assert_eq!(k, ErrorKind::Failed);
        assert!(why.contains("SSE-C"));
        let (k, why) = unpullable("AccessDenied", "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access.").unwrap();
        assert_eq!(k, ErrorKind::AccessDenied);
        assert!(why.contains("aws/s3"));
        assert!(unpullable("AccessDenied", "Access Denied").is_none());
        assert!(unpullable("ObjectNotInActiveTierError", "").unwrap().1.contains("restore"));
    }

    #[test]
    fn copy_source_encodes_all_but_slashes() {
        assert_eq!(copy_source("b", "a/b c+d%é.txt"), "b/a/b%20c%2Bd%25%C3%A9.txt");
    }

    #[test]
    fn tagging_is_a_query_string_of_tag_attributes() {
        let mut a = BTreeMap::new();
        a.insert("tag:team".to_string(), "data eng".to_string());
        a.insert("tag:a&b".to_string(), "x=y".to_string());
        a.insert("meta:ignored".to_string(), "v".to_string());
        assert_eq!(tagging_header(&a), "a%26b=x%3Dy&team=data%20eng");
        assert_eq!(metadata(&a).get("ignored").map(String::as_str), Some("v"));
    }
}

/// Whether `etag` is the ETag of an object uploaded in parts (`"<hex>-<n>"`):
/// a copy of it made in one CopyObject has an ETag of its own.
pub(crate) fn uploaded_in_parts(etag: &str) -> bool {
    let etag = etag.trim_matches('"');
    etag.rsplit_once('-').is_some_and(|(hex, n)| {
        !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod parts_tests {
    #[test]
    fn etags_of_objects_uploaded_in_parts() {
        assert!(super::uploaded_in_parts("\"9b2cf535f27731c974343645a3985328-3\""));
        assert!(!super::uploaded_in_parts("\"9b2cf535f27731c974343645a3985328\""));
        assert!(!super::uploaded_in_parts("\"src-etag\""));
        assert!(!super::uploaded_in_parts("\"-3\""));
    }
}
