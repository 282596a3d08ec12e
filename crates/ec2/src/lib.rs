//! EBS snapshots for escrow-sync: the primary shares each selected
//! snapshot with the escrow account (the reader role's
//! ModifySnapshotAttribute), the escrow copies it into its own account
//! encrypted with the escrow KMS key (CopySnapshot, escrow credentials),
//! tags the copy with its provenance, waits for it, and the primary's share
//! is removed once the copy is complete.
//!
//! [`EbsSnapshotSource`] and [`EbsSnapshotSink`] implement the core
//! contracts: a listing item is one source snapshot (key: its id); escrow
//! lists its copies by their `escrow-sync:source-snapshot-id` tag, so a
//! re-run after a complete run makes no mutating call, and a copy still in
//! progress (an interrupted run's) is waited on rather than started twice.
//! [`AmiSource`] and [`AmiSink`] do the same for AMIs with their backing
//! snapshots. [`restore::Ec2Restore`] implements core's `SnapshotRestore`
//! for both, into a recovery account.
//!
//! The layout is the one `crates/rds` and `crates/redshift` share: `api`
//! (the EC2 calls the others share), `source`, `sink` and `restore`.
//!
//! ```
//! use escrow_sync_ec2::provenance_tags;
//! let tags = provenance_tags("snap-1", "111111111111", "us-east-1", "2026-11-28T00:00:00Z", "now");
//! assert_eq!(tags["escrow-sync:source-snapshot-id"], "snap-1");
//! ```
#![deny(missing_docs)]

mod api;
mod lock;
pub mod restore;
mod sink;
mod source;

pub use lock::{LockMode, SnapshotLock};
pub use sink::{AmiSink, EbsSnapshotSink, provenance_tags};
pub use source::{AmiSource, EbsSnapshotSource};

/// An EC2 client for `session`.
pub fn client(session: &escrow_sync_aws::Session) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(session.sdk_config())
}

/// A KMS client for `session`.
pub fn kms_client(session: &escrow_sync_aws::Session) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(session.sdk_config())
}
