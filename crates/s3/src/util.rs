//! Small helpers shared by the source and the sink.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
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
    format!(
        "{}/{}",
        utf8_percent_encode(bucket, PATH),
        utf8_percent_encode(key, PATH)
    )
}

/// The `x-amz-tagging` value for the `tag:` attributes, URL-encoded.
pub fn tagging_header(attributes: &BTreeMap<String, String>) -> String {
    attributes
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(TAG_PREFIX).map(|k| (k, v)))
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, COMPONENT),
                utf8_percent_encode(v, COMPONENT)
            )
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
        .filter_map(|(k, v)| {
            k.strip_prefix(META_PREFIX)
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect()
}

/// `s3://bucket/key` for messages.
pub fn url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_encodes_all_but_slashes() {
        assert_eq!(
            copy_source("b", "a/b c+d%é.txt"),
            "b/a/b%20c%2Bd%25%C3%A9.txt"
        );
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
