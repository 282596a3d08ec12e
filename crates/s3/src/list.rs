//! Streaming ListObjectsV2.

use std::time::SystemTime;

use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};

use crate::util::PaceExt;
use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Item, ItemKind, ItemStream};

struct Page {
    token: Option<String>,
    done: bool,
}

/// Lists `bucket` under `prefix`, page by page, yielding items whose keys
/// have the first `strip` bytes removed (a sink's destination prefix).
pub(crate) fn list_objects(
    pacer: Option<escrow_sync_core::RequestPacer>,
    client: Client,
    bucket: String,
    prefix: String,
    strip: usize,
    expected_owner: Option<String>,
) -> ItemStream<'static> {
    futures::stream::try_unfold(Page { token: None, done: false }, move |page| {
        let (client, bucket, prefix, owner, pacer) =
            (client.clone(), bucket.clone(), prefix.clone(), expected_owner.clone(), pacer.clone());
        async move {
            if page.done {
                return Ok(None);
            }
            let out = client
                .list_objects_v2()
                .bucket(&bucket)
                .prefix(&prefix)
                .set_continuation_token(page.token)
                .set_expected_bucket_owner(owner)
                .send()
                .paced(pacer.as_ref())
                .await
                .map_err(|e| sdk_error(e, "s3:ListObjectsV2", format!("s3://{bucket}/{prefix}")))?;
            let items: Vec<Item> = out
                .contents()
                .iter()
                .filter_map(|o| {
                    let key = o.key()?;
                    let logical = key.get(strip..)?.to_string();
                    let modified = o.last_modified().and_then(|d| SystemTime::try_from(*d).ok());
                    Some(
                        Item::new(
                            logical,
                            ItemKind::Object,
                            o.size().unwrap_or(0).max(0) as u64,
                            o.e_tag().unwrap_or_default(),
                        )
                        .with_modified(modified)
                        .with_checksum_algorithm(
                            o.checksum_algorithm().first().map(|a| a.as_str().to_string()),
                        ),
                    )
                })
                .collect();
            let next = match out.next_continuation_token() {
                Some(t) if out.is_truncated().unwrap_or(false) && !t.is_empty() => {
                    Some(t.to_string())
                }
                _ => None,
            };
            let done = next.is_none();
            Ok(Some((items, Page { token: next, done })))
        }
    })
    .map_ok(|items| futures::stream::iter(items.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

/// Lists `bucket` under `prefix`: every version of every key (one item per
/// key) when `versions`, else the current objects.
pub(crate) fn list_keys(
    versions: bool,
    pacer: Option<escrow_sync_core::RequestPacer>,
    client: Client,
    bucket: String,
    prefix: String,
    strip: usize,
    owner: Option<String>,
) -> ItemStream<'static> {
    if versions {
        crate::versions::list_versions(pacer, client, bucket, prefix, strip, owner)
    } else {
        list_objects(pacer, client, bucket, prefix, strip, owner)
    }
}
