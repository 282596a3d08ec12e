//! The provenance tag names escrow-sync writes on what it makes, in one
//! place: every service crate reads and writes these, and `prune`,
//! `restore` and the isolation audit recognise escrow's copies by them.
//!
//! ```
//! use escrow_sync_core::tags;
//! assert_eq!(tags::SOURCE_SNAPSHOT_ID, "escrow-sync:source-snapshot-id");
//! assert!(tags::LINEAGE.starts_with(tags::PREFIX));
//! ```

/// The prefix of every escrow-sync tag.
pub const PREFIX: &str = "escrow-sync:";

/// On an escrow copy (snapshot, AMI, table): the account that owns the
/// source.
pub const SOURCE_ACCOUNT: &str = "escrow-sync:source-account";
/// On an escrow snapshot or AMI: the source's ARN.
pub const SOURCE_ARN: &str = "escrow-sync:source-arn";
/// On an escrow snapshot: the source snapshot's id (EBS snapshot id, RDS or
/// Redshift snapshot identifier). Escrow lists its copies by this tag.
pub const SOURCE_SNAPSHOT_ID: &str = "escrow-sync:source-snapshot-id";
/// On an escrow AMI: the source image's id.
pub const SOURCE_IMAGE_ID: &str = "escrow-sync:source-image-id";
/// On an escrow snapshot or AMI: the source's creation time (RFC 3339,
/// UTC).
pub const SOURCE_START_TIME: &str = "escrow-sync:source-start-time";
/// On an escrow copy: when escrow-sync made it (RFC 3339, UTC).
pub const COPIED_AT: &str = "escrow-sync:copied-at";
/// On an escrow copy: its lineage (source volume, DB instance or cluster),
/// which retention groups copies by.
pub const LINEAGE: &str = "escrow-sync:lineage";
/// On a manual snapshot in the primary: the automated snapshot it copies
/// (automated snapshots cannot be shared).
pub const COPIED_FROM: &str = "escrow-sync:copied-from";
/// On a re-encrypted copy in the primary: the snapshot it re-encrypts
/// (snapshots under an AWS-managed key cannot be shared).
pub const REENCRYPTED_FROM: &str = "escrow-sync:reencrypted-from";
/// On a copy in a recovery account: the escrow copy it came from.
pub const RESTORED_FROM: &str = "escrow-sync:restored-from";
/// On a temporary Redshift restore cluster in escrow: the source snapshot
/// it restores.
pub const RESTORE_FOR: &str = "escrow-sync:restore-for";
/// On an escrow copy: the job that made it; `prune` counts a copy as a
/// job's by it, from escrow's own records.
pub const JOB: &str = "escrow-sync:job";

/// On an escrow table: the source table's ARN.
pub const SOURCE_TABLE_ARN: &str = "escrow-sync:source-table-arn";
/// On an escrow table: when escrow-sync created it.
pub const CREATED_AT: &str = "escrow-sync:created-at";
/// On an escrow table: the start of the latest run that wrote items.
pub const LAST_RUN_AT: &str = "escrow-sync:last-run-at";
/// On an escrow table: the source's TTL attribute (never applied in
/// escrow).
pub const SOURCE_TTL_ATTRIBUTE: &str = "escrow-sync:source-ttl-attribute";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_carries_the_prefix_and_names_differ() {
        let all = [
            SOURCE_ACCOUNT,
            SOURCE_ARN,
            SOURCE_SNAPSHOT_ID,
            SOURCE_IMAGE_ID,
            SOURCE_START_TIME,
            COPIED_AT,
            LINEAGE,
            COPIED_FROM,
            REENCRYPTED_FROM,
            RESTORED_FROM,
            RESTORE_FOR,
            JOB,
            SOURCE_TABLE_ARN,
            CREATED_AT,
            LAST_RUN_AT,
            SOURCE_TTL_ATTRIBUTE,
        ];
        assert!(all.iter().all(|t| t.starts_with(PREFIX) && t.len() > PREFIX.len()));
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }
}
