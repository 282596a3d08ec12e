//! CloudTrail log escrow for escrow-sync.
//!
//! A `[[cloudtrail]]` job finds the primary's trails ([`describe_trails`]),
//! copies their log buckets into escrow with the S3 crate (append-only,
//! like any S3 job), and [`validate`]s the escrow copy: each log file's
//! SHA-256 against its digest file, the digest chain, and each digest's
//! SHA256withRSA signature against CloudTrail's public keys
//! ([`Keyring::fetch`], `ListPublicKeys`). Findings carry the time range of
//! events they leave unproven.
//!
//! ```
//! use escrow_sync_cloudtrail::{Digest, FindingKind, root};
//!
//! assert_eq!(root(""), "AWSLogs/");
//! assert_eq!(root("audit/"), "audit/AWSLogs/");
//! assert_eq!(FindingKind::LogAltered.as_str(), "log-altered");
//! let d: Digest = serde_json::from_str(r#"{"awsAccountId":"1","digestStartTime":"a",
//!     "digestEndTime":"2015-08-17T15:01:31Z","digestS3Bucket":"b","digestS3Object":"k"}"#).unwrap();
//! assert_eq!(d.signing_string("00"), "2015-08-17T15:01:31Z\nb/k\n00\nnull");
//! ```
#![deny(missing_docs)]

mod athena;
mod digest;
mod events;
mod keys;
mod store;
#[cfg(feature = "test-util")]
pub mod synthetic;
pub mod time;
mod timeline;
mod trails;
mod validate;

pub use athena::{
    AthenaDdl, AthenaTable, COLUMNS as ATHENA_COLUMNS, PARTITIONS as ATHENA_PARTITIONS, athena_ddl,
};
pub use digest::{
    Digest, DigestName, LogFileEntry, LogName, MAX_DIGEST_UNCOMPRESSED, MAX_UNCOMPRESSED,
    SIGNATURE_ALGORITHM_META, SIGNATURE_META, gunzip, gunzip_capped, sha256_hex, sha256_of_gunzip,
};
pub use events::{DESTRUCTIVE, Event, EventQuery, is_destructive, parse_log_file};
pub use keys::{KeySource, Keyring, ListPublicKeys, PublicKey, SignatureCheck};
pub use store::{
    EscrowTrailStore, MAX_PREFIX_DEPTH, MAX_STORED_BYTES, StoredObject, StoredVersion, TrailStore,
};
pub use timeline::{EventSink, TimelineEvent, TimelineSummary, Unproven, timeline};
pub use trails::{Trail, describe_trails};
pub use validate::{FindingKind, IntegrityFinding, Location, Options, Validation, root, validate};

/// A CloudTrail client of `session`, in `region` (public keys are per
/// region) or the session's own.
pub fn client(
    session: &escrow_sync_aws::Session,
    region: Option<&str>,
) -> aws_sdk_cloudtrail::Client {
    let mut conf = aws_sdk_cloudtrail::config::Builder::from(session.sdk_config());
    if let Some(r) = region {
        conf = conf.region(aws_sdk_cloudtrail::config::Region::new(r.to_string()));
    }
    aws_sdk_cloudtrail::Client::from_conf(conf.build())
}
