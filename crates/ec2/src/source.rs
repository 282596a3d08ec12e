//! The primary's EBS snapshots ([`EbsSnapshotSource`]) and AMIs with their
//! backing snapshots ([`AmiSource`]) as sources.
//!
//! An AMI copied from another account needs both its launch permission and
//! every backing snapshot's createVolumePermission; AWS refuses to copy a
//! shared AMI that carries a billing product (Windows, RHEL, SQL Server...)
//! or Marketplace product codes, so those are reported as not copyable.

mod images;
mod snapshots;

pub use images::AmiSource;
pub use snapshots::EbsSnapshotSource;
