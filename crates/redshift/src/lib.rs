//! Redshift snapshots for escrow-sync.
//!
//! Redshift snapshots can only be *shared* across accounts, never copied:
//! the primary's reader role authorizes the escrow account to restore each
//! selected manual snapshot (AuthorizeSnapshotAccess; an automated snapshot
//! is first copied to a manual one in the primary, since only manual ones
//! can be shared). Then, with escrow credentials, either:
//!
//! - **share-only** (the default): escrow records the share and holds
//!   nothing of its own; `verify` flags every such item, since the primary
//!   can revoke a share at any time;
//! - **independent copy** ([`RedshiftSnapshotSink::with_independent_copy`]):
//!   escrow restores a temporary cluster from the share, encrypted with the
//!   escrow KMS key, takes a manual snapshot of it with indefinite retention
//!   and provenance tags, deletes the cluster, and the share is revoked.
//!
//! [`restore`] shares escrow's independent copies with a recovery account,
//! which restores a cluster from the share; [`restore::RedshiftRestore`] is
//! core's `SnapshotRestore` for it. Modules: `api`, `source`, `sink`,
//! `restore`.
//!
//! [`RedshiftSnapshotSource`] and [`RedshiftSnapshotSink`] implement the
//! core contracts: a listing item is one source snapshot (key: its
//! identifier); an independent sink lists its snapshots by their
//! [`escrow_sync_core::tags::SOURCE_SNAPSHOT_ID`], so a re-run after a complete run makes no
//! mutating call, and each step of an interrupted copy (restore cluster,
//! snapshot) is found again by its deterministic name and resumed.
//!
//! ```
//! use escrow_sync_redshift::{RestoreOptions, provenance_tags};
//! let tags = provenance_tags(
//!     "weekly-2026-11-28",
//!     "111111111111",
//!     "arn:aws:redshift:us-east-1:111111111111:snapshot:sales/weekly-2026-11-28",
//!     "2026-11-28T00:00:00Z",
//!     "sales",
//!     "2026-11-28T01:00:00Z",
//! );
//! assert_eq!(tags[escrow_sync_core::tags::SOURCE_SNAPSHOT_ID], "weekly-2026-11-28");
//! assert_eq!(tags["escrow-sync:lineage"], "sales");
//! let small = RestoreOptions::new().with_node_type(Some("ra3.large".into()));
//! assert_eq!(small.number_of_nodes, None, "taken from the snapshot");
//! ```
#![deny(missing_docs)]

mod api;
pub mod restore;
mod sink;
mod source;

pub use sink::{RESTORE_CLUSTER_PREFIX, RedshiftSnapshotSink, RestoreOptions};
pub use source::RedshiftSnapshotSource;

/// The provenance tags of an escrow snapshot of `source_id`: its
/// identifier, owner account, ARN, creation time (RFC 3339), lineage (the
/// source cluster) and when the copy was made.
pub fn provenance_tags(
    source_id: &str,
    source_account: &str,
    source_arn: &str,
    source_start_time: &str,
    lineage: &str,
    copied_at: &str,
) -> std::collections::BTreeMap<String, String> {
    api::provenance_tags(
        source_id,
        source_account,
        source_arn,
        source_start_time,
        lineage,
        copied_at,
    )
}

/// A redshift client for `session`.
pub fn client(session: &escrow_sync_aws::Session) -> aws_sdk_redshift::Client {
    aws_sdk_redshift::Client::new(session.sdk_config())
}

/// A KMS client for `session`.
pub fn kms_client(session: &escrow_sync_aws::Session) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(session.sdk_config())
}
