//! The marker of escrow-sync's own multipart uploads: a small journal object
//! per upload in progress, `<dest_prefix>.escrow-sync-uploads/<upload id>`,
//! whose body is the upload's key. It is written right after
//! CreateMultipartUpload and removed once the upload is completed or
//! aborted, so an upload whose journal entry outlives it was left by an
//! interrupted run. A later run aborts those uploads, and only those: an
//! upload without a journal entry is someone else's and is never touched.

use std::time::{Duration, SystemTime};

use escrow_sync_core::{ErrorKind, Result};

use crate::sink::S3Sink;
use crate::util::{PaceExt, s3_error, url};

/// The folder of journal entries, under the job's destination prefix. Keys
/// under it are never listed as escrow items.
pub const JOURNAL_DIR: &str = ".escrow-sync-uploads/";

/// Whether `key` (under the destination prefix) falls in one of
/// escrow-sync's own folders there: the upload journal ([`JOURNAL_DIR`]) or
/// the retention ledger ([`crate::RETENTION_DIR`]). Such keys are never
/// listed as escrow items, never copied from the primary and never written
/// as records.
pub(crate) fn own_folder(key: &str) -> bool {
    key.starts_with(JOURNAL_DIR) || key.starts_with(crate::renew::RETENTION_DIR)
}

/// The largest journal entry escrow-sync writes (a key name, at most 1,024
/// bytes): anything larger under [`JOURNAL_DIR`] is not its own.
const MAX_JOURNAL_ENTRY: u64 = 1024;

impl S3Sink {
    fn journal_key(&self, upload_id: &str) -> String {
        format!("{}{JOURNAL_DIR}{upload_id}", self.dest_prefix())
    }

    /// Records an upload in progress.
    pub(crate) async fn journal_open(&self, dest_key: &str, upload_id: &str) -> Result<()> {
        let key = self.journal_key(upload_id);
        self.put_own(&key, dest_key.as_bytes().to_vec(), "text/plain").await
    }

    /// Forgets an upload that was completed or aborted (best effort: a
    /// leftover entry only makes a later run look for the upload again).
    pub(crate) async fn journal_close(&self, upload_id: &str) {
        self.delete_own(&self.journal_key(upload_id), "journal entry").await;
    }

    /// Aborts the multipart uploads escrow-sync started under this sink's
    /// destination prefix and left behind more than `older_than` ago (an
    /// interrupted run), and only those. Returns how many were aborted.
    pub async fn abort_stale_uploads(&self, older_than: Duration) -> Result<u64> {
        let prefix = format!("{}{JOURNAL_DIR}", self.dest_prefix());
        let entries = self.list_own(&prefix).await?;
        let cutoff = SystemTime::now().checked_sub(older_than).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut aborted = 0;
        for (upload_id, size, modified) in entries {
            if modified.is_some_and(|m| m > cutoff) {
                continue; // possibly a run in progress right now
            }
            if size > MAX_JOURNAL_ENTRY {
                // escrow-sync writes one key name (under 1 KiB): this is not
                // its entry, and is neither read whole nor acted on.
                tracing::warn!(upload_id, size, "not a journal entry of escrow-sync's: left alone");
                continue;
            }
            let journal = self.journal_key(&upload_id);
            let body = self.get_own(&journal).await?;
            let dest_key = String::from_utf8_lossy(&body).into_owned();
            let res = self
                .client()
                .abort_multipart_upload()
                .bucket(self.bucket())
                .key(&dest_key)
                .upload_id(&upload_id)
                .set_expected_bucket_owner(self.owner().map(str::to_string))
                .send()
                .paced(self.pacer())
                .await;
            match res {
                Ok(_) => {
                    tracing::info!(upload_id, dest_key, "aborted a stale multipart upload");
                    aborted += 1;
                }
                Err(e) => {
                    let err = s3_error(e, "s3:AbortMultipartUpload", url(self.bucket(), &dest_key));
                    if err.kind() != ErrorKind::NotFound {
                        return Err(err);
                    }
                }
            }
            self.journal_close(&upload_id).await;
        }
        Ok(aborted)
    }
}
