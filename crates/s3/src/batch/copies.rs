//! The record of copies a Batch Operations job made under the escrow key.
//!
//! A direct copy under the escrow key records the source ETag in the
//! copy's metadata, because S3 gives an SSE-KMS copy an ETag of its own;
//! a Batch Copy job has one metadata set for all its objects and cannot.
//! Instead, once a job's copies are checked, escrow-sync writes their
//! (escrow key, escrow ETag, source ETag) into escrow beside the job's
//! files, and [`crate::S3Sink`]'s `confirm_same` takes a copy for the
//! source's when this record says so: without it every later plan would
//! find those copies changed and copy them again.

use std::collections::HashMap;
use std::sync::Arc;

use escrow_sync_core::Result;
use serde::{Deserialize, Serialize};

use crate::S3Sink;

/// Record files larger than this are not read (escrow is read under caps).
const MAX_RECORD_BYTES: u64 = 256 << 20;

/// Copies per record file written: at most about 6.3 KB each (a 1,024-byte
/// key of control characters is 6 KB as JSON, and two ETags), so a file
/// stays under [`MAX_RECORD_BYTES`] whatever its keys.
pub(crate) const RECORDS_PER_FILE: usize = 20_000;

/// One checked batch copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Copied {
    /// The escrow key (the destination prefix included).
    pub key: String,
    /// The copy's ETag.
    pub escrow_etag: String,
    /// The source ETag it was planned and checked with.
    pub source_etag: String,
}

/// Where a pair's batch-copy records are, and what they say once read
/// (read when a plan first needs them, again after new ones are written). Shared by a sink's clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct CopyRecords(Arc<std::sync::OnceLock<Place>>);

#[derive(Debug)]
struct Place {
    store: S3Sink,
    prefix: String,
    read: tokio::sync::Mutex<Option<HashMap<String, (String, String)>>>,
}

impl CopyRecords {
    /// Says where the records are (once; later calls change nothing).
    pub(crate) fn place(&self, store: S3Sink, prefix: String) {
        let _ = self.0.set(Place { store, prefix, read: tokio::sync::Mutex::new(None) });
    }

    /// Forgets what was read (a job's copies were just recorded).
    pub(crate) async fn forget(&self) {
        if let Some(place) = self.0.get() {
            *place.read.lock().await = None;
        }
    }

    /// Where the records are, if placed.
    pub(crate) fn prefix(&self) -> Option<&str> {
        self.0.get().map(|p| p.prefix.as_str())
    }

    /// Whether a batch copy at `key` with ETag `escrow_etag` was checked
    /// as the copy of the source ETag `source_etag`.
    pub(crate) async fn confirms(
        &self,
        key: &str,
        escrow_etag: &str,
        source_etag: &str,
    ) -> Result<bool> {
        let Some(place) = self.0.get() else { return Ok(false) };
        let mut read = place.read.lock().await;
        if read.is_none() {
            *read = Some(read_all(&place.store, &place.prefix).await?);
        }
        Ok(read
            .as_ref()
            .and_then(|m| m.get(key))
            .is_some_and(|(e, s)| e == escrow_etag && s == source_etag))
    }
}

async fn read_all(store: &S3Sink, prefix: &str) -> Result<HashMap<String, (String, String)>> {
    let mut files = store.list_own(prefix).await?;
    // Oldest first, so a newer record of a key wins.
    files.sort_by_key(|(_, _, modified)| *modified);
    let mut map = HashMap::new();
    for (name, size, _) in files {
        let key = format!("{prefix}{name}");
        if size > MAX_RECORD_BYTES {
            tracing::warn!(
                key,
                size,
                "a batch-copy record larger than escrow-sync writes: not read"
            );
            continue;
        }
        let body = store.get_own(&key).await?;
        match serde_json::from_slice::<Vec<Copied>>(&body) {
            Ok(list) => {
                for c in list {
                    map.insert(c.key, (c.escrow_etag, c.source_etag));
                }
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "a batch-copy record that is not valid: not read")
            }
        }
    }
    Ok(map)
}
