//! What a listing yields.

use std::time::SystemTime;

/// The kind of thing an [`Item`] stands for.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// An object in an object store (S3 and S3-compatible stores).
    Object,
    /// An item of a table (DynamoDB), keyed by its primary key.
    Record,
    /// A snapshot (EBS, RDS, Redshift), keyed by the source snapshot's id.
    Snapshot,
}

/// One entry of a listing: an object, a table generation, a snapshot...
///
/// Two items with the same key are the *same* (nothing to copy) when their
/// sizes and fingerprints are equal. A fingerprint is whatever proves sameness
/// for the kind: ETag (with size) for S3 objects in this version.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The logical key, identical on both sides (sinks strip their own prefix).
    pub key: String,
    /// What the item is.
    pub kind: ItemKind,
    /// Size in bytes.
    pub size: u64,
    /// What proves sameness (for S3, the ETag as listed, quotes included).
    pub fingerprint: String,
    /// When the item was last modified, where known.
    pub modified: Option<SystemTime>,
    /// The checksum algorithm the item carries, as listed (for S3:
    /// `CRC64NVME`, `CRC32C`...), so a copy can carry the same.
    pub checksum_algorithm: Option<String>,
    /// For snapshots: the lineage the item belongs to (source volume,
    /// database, cluster), which retention counts copies by.
    pub lineage: Option<String>,
    /// The store version the item is read as, where a source reads one of
    /// several (a restore from a versioned escrow bucket).
    pub version: Option<String>,
}

impl Item {
    /// An item with the given key, kind, size and fingerprint.
    pub fn new(
        key: impl Into<String>,
        kind: ItemKind,
        size: u64,
        fingerprint: impl Into<String>,
    ) -> Self {
        Item {
            key: key.into(),
            kind,
            size,
            fingerprint: fingerprint.into(),
            modified: None,
            checksum_algorithm: None,
            lineage: None,
            version: None,
        }
    }

    /// Sets the last-modified time.
    pub fn with_modified(mut self, modified: Option<SystemTime>) -> Self {
        self.modified = modified;
        self
    }

    /// Sets the lineage (snapshots: source volume, database, cluster).
    pub fn with_lineage(mut self, lineage: Option<String>) -> Self {
        self.lineage = lineage;
        self
    }

    /// Sets the version the item is read as.
    pub fn with_version(mut self, version: Option<String>) -> Self {
        self.version = version;
        self
    }

    /// Sets the checksum algorithm.
    pub fn with_checksum_algorithm(mut self, algorithm: Option<String>) -> Self {
        self.checksum_algorithm = algorithm;
        self
    }

    /// Whether `other` (the escrow copy) holds the same content as `self`.
    pub fn same_content(&self, other: &Item) -> bool {
        self.size == other.size && self.fingerprint == other.fingerprint
    }
}
