//! Run manifests, moved: the format is [`escrow_sync_core::manifest`], the
//! I/O is [`escrow_sync_s3::ManifestStore`] (through the S3 sink's upload
//! path). This module only re-exports them, for callers not yet switched;
//! it goes once they are.

pub use escrow_sync_core::manifest::*;
pub use escrow_sync_s3::{
    DEFAULT_MANIFEST_PART_SIZE as DEFAULT_PART_SIZE, MANIFEST_CONTENT_TYPE, ManifestStore,
};
