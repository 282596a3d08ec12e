//! RDS DB snapshots and Aurora cluster snapshots for escrow-sync: the
//! primary shares each selected snapshot with the escrow account (the reader
//! role's ModifyDBSnapshotAttribute / ModifyDBClusterSnapshotAttribute,
//! `restore` attribute), the escrow copies it into its own account by its ARN
//! (CopyDBSnapshot / CopyDBClusterSnapshot, escrow credentials) encrypted
//! with the escrow KMS key and tagged with its provenance at creation, waits
//! for it, and the primary's share is removed once the copy is complete.
//!
//! [`RdsSnapshotSource`] and [`RdsSnapshotSink`] implement the core
//! contracts for one [`RdsKind`]: a listing item is one source snapshot (key:
//! its identifier); escrow lists its copies by their
//! `escrow-sync:source-snapshot-id` tag, so a re-run after a complete run
//! makes no mutating call, and a copy still in progress (an interrupted
//! run's) is waited on rather than started twice. Automated snapshots, which
//! cannot be shared, are first copied to a manual snapshot in the primary;
//! snapshots under the AWS-managed key are re-encrypted in the primary with
//! `reencrypt_key_id` when it is set. The sink is also the
//! [`escrow_sync_core::Retained`] store that `prune` deletes from.
//! [`restore`] shares escrow's copies with a recovery account and copies
//! them there; [`restore::RdsRestore`] is core's `SnapshotRestore` for it.
//! Modules: `api` (the RDS calls, per kind), `source`, `sink`, `restore`.
//!
//! ```
//! use escrow_sync_rds::{escrow_identifier, provenance_tags, RdsKind};
//! let tags = provenance_tags(
//!     "nightly-1",
//!     "111111111111",
//!     "arn:aws:rds:us-east-1:111111111111:snapshot:nightly-1",
//!     "2026-11-28T00:00:00Z",
//!     "2026-11-28T01:00:00Z",
//!     "orders-db",
//! );
//! assert_eq!(tags["escrow-sync:source-snapshot-id"], "nightly-1");
//! assert_eq!(tags["escrow-sync:lineage"], "orders-db");
//! assert_eq!(escrow_identifier("nightly-1"), "escrow-nightly-1");
//! assert!(escrow_identifier("rds:orders-db-2026-11-28-03-10").starts_with("escrow-rds-orders-db-"));
//! assert_eq!(RdsKind::Cluster.as_str(), "cluster");
//! ```
#![deny(missing_docs)]

mod api;
pub mod restore;
mod sink;
mod source;

pub use api::RdsKind;
pub use sink::{RdsSnapshotSink, escrow_identifier, provenance_tags};
pub use source::{RdsSnapshotSource, primary_copy_identifier};

/// A rds client for `session`.
pub fn client(session: &escrow_sync_aws::Session) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::new(session.sdk_config())
}

/// A KMS client for `session`.
pub fn kms_client(session: &escrow_sync_aws::Session) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(session.sdk_config())
}
