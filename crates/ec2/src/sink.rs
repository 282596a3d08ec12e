//! Escrow's copies of EBS snapshots ([`EbsSnapshotSink`]) and of AMIs with
//! their snapshots ([`AmiSink`]) as sinks: copied with escrow credentials
//! and the escrow key, waited on, tagged with their provenance.

mod images;
mod snapshots;

pub use images::AmiSink;
pub use snapshots::{EbsSnapshotSink, provenance_tags};
