//! The Redshift calls and helpers the source, sink and restore share:
//! provenance tags, error classification of Redshift's own fault codes,
//! snapshot accessors and the waiter (core's `poll_until`).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_redshift::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_redshift::types::Snapshot;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::poll::{Polled, Polling, poll_until};
use escrow_sync_core::tags;
use escrow_sync_core::{Error, ErrorKind, Result};

const MIB: f64 = 1024.0 * 1024.0;

/// The error code of an SDK error, when the service answered one.
pub(crate) fn code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<String> {
    err.as_service_error().and_then(|e| e.code()).map(str::to_string)
}

/// [`sdk_error`]: the shared classifier knows Redshift's quota faults
/// (throttling, retried with back-off) and not-found faults.
pub(crate) fn rs_error<E>(err: SdkError<E>, operation: &str, resource: impl Into<String>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    sdk_error(err, operation, resource)
}

/// The value of tag `key` on `snapshot`.
pub(crate) fn tag<'a>(snapshot: &'a Snapshot, key: &str) -> Option<&'a str> {
    snapshot.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// The snapshot's size in bytes, from its total backup size (0 if unknown).
pub(crate) fn size_of(snapshot: &Snapshot) -> u64 {
    snapshot.total_backup_size_in_mega_bytes().map(|mb| (mb.max(0.0) * MIB) as u64).unwrap_or(0)
}

/// The snapshot's ARN: as answered, else built from its parts.
pub(crate) fn snapshot_arn(snapshot: &Snapshot, region: &str, account: &str) -> String {
    match snapshot.snapshot_arn() {
        Some(arn) => arn.to_string(),
        None => format!(
            "arn:aws:redshift:{region}:{}:snapshot:{}/{}",
            snapshot.owner_account().unwrap_or(account),
            snapshot.cluster_identifier().unwrap_or_default(),
            snapshot.snapshot_identifier().unwrap_or_default()
        ),
    }
}

/// A short, stable digest of `s` (FNV-1a, 64 bits, as 16 hex digits): part
/// of the deterministic names of restore clusters and escrow snapshots.
pub(crate) fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// What [`manual_copy_id`] prefixes an identifier with.
const MANUAL_COPY_BASE: &str = "escrow-sync-";

/// How the manual copies of automated snapshots (`rs:...`) are named.
pub(crate) const MANUAL_COPY_PREFIX: &str = "escrow-sync-rs-";

/// The identifier of the manual copy, in the primary, of the automated
/// snapshot `id` (`rs:cluster-2024-...` becomes
/// `escrow-sync-rs-cluster-2024-...`): deterministic, so later runs reuse it.
pub(crate) fn manual_copy_id(id: &str) -> String {
    let mut out = String::from(MANUAL_COPY_BASE);
    for c in id.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let mut out: String = out.chars().take(255).collect();
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The source key of a snapshot the primary shares with escrow: the
/// automated snapshot a manual copy was made from (its tag, else its
/// name), else the snapshot itself.
pub(crate) fn shared_source_key(snapshot: &Snapshot) -> Option<String> {
    let id = snapshot.snapshot_identifier()?;
    if let Some(from) = tag(snapshot, tags::COPIED_FROM) {
        return Some(from.to_string());
    }
    match id.strip_prefix(MANUAL_COPY_PREFIX) {
        Some(rest) => Some(format!("rs:{rest}")),
        None => Some(id.to_string()),
    }
}

/// Provenance tags of an escrow snapshot.
pub(crate) fn provenance_tags(
    source_id: &str,
    source_account: &str,
    source_arn: &str,
    source_start_time: &str,
    lineage: &str,
    copied_at: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (tags::SOURCE_SNAPSHOT_ID.to_string(), source_id.to_string()),
        (tags::SOURCE_ACCOUNT.to_string(), source_account.to_string()),
        (tags::SOURCE_ARN.to_string(), source_arn.to_string()),
        (tags::SOURCE_START_TIME.to_string(), source_start_time.to_string()),
        (tags::LINEAGE.to_string(), lineage.to_string()),
        (tags::COPIED_AT.to_string(), copied_at.to_string()),
    ])
}

/// Capped exponential polling with an overall timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    pub(crate) timeout: Duration,
    pub(crate) max_poll: Duration,
}

impl Waiter {
    /// Calls `check` (with [`poll_until`]: from 1 s apart, doubling to
    /// `max_poll`) until it
    /// answers `Some` or fails; past the timeout, a transient error says
    /// that the next run waits for `what`.
    pub(crate) async fn until<T, F, Fut>(
        &self,
        operation: &str,
        resource: &str,
        what: &str,
        mut check: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let polling = Polling::new(operation, resource)
            .with_max_pause(self.max_poll)
            .with_timeout(self.timeout)
            .with_deadline_error(
                ErrorKind::Failed,
                format!("{what} not done"),
                "the next run waits for it",
            );
        poll_until(&polling, || {
            let look = check();
            async move {
                Ok(match look.await? {
                    Some(done) => Polled::Done(done),
                    None => Polled::Pending(String::new()),
                })
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_copy_names_are_valid_identifiers_and_map_back() {
        let id = manual_copy_id("rs:sales-2024-05-01-03-10");
        assert_eq!(id, "escrow-sync-rs-sales-2024-05-01-03-10");
        let s = Snapshot::builder().snapshot_identifier(&id).build();
        assert_eq!(shared_source_key(&s).as_deref(), Some("rs:sales-2024-05-01-03-10"));
        assert_eq!(manual_copy_id("rs:A--b:"), "escrow-sync-rs-a-b");
        let plain = Snapshot::builder().snapshot_identifier("weekly").build();
        assert_eq!(shared_source_key(&plain).as_deref(), Some("weekly"));
    }

    #[test]
    fn hashes_are_stable() {
        assert_eq!(short_hash(""), "cbf29ce484222325");
        assert_eq!(short_hash("a"), "af63dc4c8601ec8c");
        assert_ne!(short_hash("111111111111/s1"), short_hash("333333333333/s1"));
    }
}
