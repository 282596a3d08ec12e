//! The TOML config file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use escrow_sync_aws::{EscrowAccount, PrimaryAccount};
use escrow_sync_core::{Error, Result};

/// A config value that is one of a few words: an enum that deserializes
/// from them (refusing any other word with the list of those allowed) and
/// turns back into its word.
macro_rules! config_words {
    ($(#[$doc:meta])* $name:ident, $key:literal { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every word this value may be.
            pub const WORDS: &[&str] = &[$($word),+];

            /// The word in the config file.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(word: String) -> std::result::Result<Self, String> {
                match word.as_str() {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!(
                        "{} {word:?} is not one of {:?}",
                        $key,
                        Self::WORDS
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_words!(
    /// `[[s3]] mode`: how bytes move.
    S3Mode, "mode" {
        /// CopyObject / UploadPartCopy: the bytes never leave S3.
        ServerSide = "server-side",
        /// Ranged GETs through this process, uploaded in parts.
        Stream = "stream",
    }
);

config_words!(
    /// `[[s3]] tags`: how copies get the objects' tags.
    S3Tags, "tags" {
        /// S3 copies them server-side (`TaggingDirective=COPY`): one request
        /// per object.
        Copy = "copy",
        /// Read with GetObjectTagging and set on every copy: for stores that
        /// drop tags on a server-side copy.
        Explicit = "explicit",
        /// Not copied (nor compared by `verify`).
        Omit = "none",
    }
);

config_words!(
    /// `[[s3]] engine`: what copies a run's objects.
    S3Engine, "engine" {
        /// escrow-sync, one CopyObject (or multipart copy) per object.
        Direct = "direct",
        /// One S3 Batch Operations Copy job per run, in the escrow account.
        BatchOperations = "batch-operations",
        /// Batch Operations when a run would copy more than
        /// `batch_threshold` objects, else direct.
        Auto = "auto",
    }
);

config_words!(
    /// `[[dynamodb]] mode`: how a table is read.
    TableMode, "mode" {
        /// A parallel Scan under a read budget.
        Scan = "scan",
        /// DynamoDB's own export to S3 (point-in-time recovery on the source).
        NativeExport = "native-export",
        /// DynamoDB's own incremental export of the changes since the
        /// previous run's export (a full export on the first run or after
        /// a gap over 24 hours).
        NativeIncremental = "native-incremental",
    }
);

config_words!(
    /// `[escrow] metrics`: where per-job metrics go after each `run` and
    /// `status`.
    MetricsKind, "metrics" {
        /// None (the default).
        Off = "off",
        /// CloudWatch PutMetricData in the escrow account, namespace
        /// `EscrowSync`, dimension `Job`.
        Cloudwatch = "cloudwatch",
        /// A Prometheus textfile-collector file (`[escrow] metrics_file`).
        Prometheus = "prometheus",
    }
);

config_words!(
    /// `[[dynamodb]] billing_mode` of an escrow table escrow-sync creates.
    BillingMode, "billing_mode" {
        /// Pay per request.
        OnDemand = "on-demand",
        /// The source's provisioned capacity.
        Provisioned = "provisioned",
    }
);

config_words!(
    /// `[[ec2]] include`: what an EC2 job copies.
    Ec2Include, "include" {
        /// AMIs with their backing snapshots.
        Images = "images",
        /// Standalone EBS snapshots.
        Snapshots = "snapshots",
    }
);

config_words!(
    /// `[[rds]] include`: what an RDS job copies.
    RdsInclude, "include" {
        /// DB instance snapshots.
        Db = "db",
        /// Aurora cluster snapshots.
        Cluster = "cluster",
    }
);

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The escrow account.
    pub escrow: EscrowSection,
    /// The primary account.
    pub primary: PrimarySection,
    /// S3 jobs.
    #[serde(default)]
    pub s3: Vec<S3Job>,
    /// DynamoDB jobs.
    #[serde(default)]
    pub dynamodb: Vec<DynamoDbJob>,
    /// EC2 jobs: AMIs with their backing snapshots, and EBS snapshots.
    #[serde(default)]
    pub ec2: Vec<Ec2Job>,
    /// RDS jobs: DB snapshots and Aurora cluster snapshots.
    #[serde(default)]
    pub rds: Vec<RdsJob>,
    /// Redshift jobs: cluster snapshots.
    #[serde(default)]
    pub redshift: Vec<RedshiftJob>,
    /// CloudTrail jobs: the primary's trails' log buckets, validated.
    #[serde(default)]
    pub cloudtrail: Vec<CloudTrailJob>,
    /// SHA-256 of the text this config was parsed from (the run manifest
    /// records it).
    #[serde(skip)]
    digest: String,
}

/// `[[cloudtrail]]`: the primary's trails (found with DescribeTrails through
/// the reader role), their log buckets copied into escrow like an `[[s3]]`
/// job (append-only), and `verify` validating the escrow copy's integrity
/// chain: log file hashes, the digest chain, and digest signatures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudTrailJob {
    /// Job name; default `cloudtrail`.
    pub name: Option<String>,
    /// Only these trails (names or ARNs); default: every trail.
    #[serde(default)]
    pub trails: Vec<String>,
    /// The log bucket the trails deliver to, when known: only trails
    /// delivering there are taken, and `policy` can name it.
    pub source_bucket: Option<String>,
    /// The escrow bucket; a log bucket's `key` is kept at
    /// `<dest_prefix><log bucket>/<key>`.
    pub dest_bucket: String,
    /// Prepended to escrow keys (`""` or ending in `/`).
    #[serde(default)]
    pub dest_prefix: String,
    /// Objects copied at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Object Lock retention set on every copy.
    pub object_lock: Option<ObjectLockConfig>,
    /// At most this many requests per second to S3 (both sides together).
    pub max_requests_per_second: Option<u32>,
    /// Allow a destination bucket without versioning.
    #[serde(default)]
    pub allow_unversioned_dest: bool,
    /// CloudTrail's public keys saved from `aws cloudtrail list-public-keys
    /// --output json`, used instead of asking ListPublicKeys (for a verify
    /// where CloudTrail cannot be reached).
    pub public_keys_file: Option<String>,
    /// Digests ending before this time (RFC 3339) are not required: a chain
    /// gap before it is a note. Without it the oldest digest escrow holds
    /// starts the chain.
    pub validate_from: Option<String>,
    /// The mass-change breaker for the log files (default 25; 100 turns it
    /// off): CloudTrail never rewrites a delivered file, so a run finding
    /// many rewritten stops with a `mass-change` finding.
    #[serde(default = "default_max_change_percent")]
    pub max_change_percent: u8,
    /// `status`: how old the newest verified copy may be (e.g. `26h`) before
    /// the job is reported `stale` (`status --max-age` overrides it); also the
    /// threshold of the job's CloudFormation alarm.
    pub max_age: Option<String>,
}

impl CloudTrailJob {
    /// The job's name.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| "cloudtrail".to_string())
    }

    /// The `[[s3]]` job copying what trails deliver to `bucket` under
    /// `key_prefix`.
    #[cfg(feature = "cloudtrail")]
    pub fn s3_job(&self, bucket: &str, key_prefix: &str) -> S3Job {
        S3Job {
            source_bucket: bucket.to_string(),
            dest_bucket: self.dest_bucket.clone(),
            name: Some(self.name()),
            prefix: escrow_sync_cloudtrail::root(key_prefix),
            dest_prefix: format!("{}{bucket}/", self.dest_prefix),
            concurrency: self.concurrency,
            multipart_threshold: None,
            part_size: None,
            max_parts: None,
            part_concurrency: None,
            memory_limit: default_memory_limit(),
            object_lock: self.object_lock.clone(),
            versions: false,
            mode: None,
            tags: None,
            max_requests_per_second: self.max_requests_per_second,
            abort_stale_uploads_after_hours: default_stale_hours(),
            allow_unversioned_dest: self.allow_unversioned_dest,
            max_change_percent: self.max_change_percent,
            max_age: self.max_age.clone(),
            engine: None,
            batch_threshold: None,
            batch_bucket: None,
            batch_prefix: None,
            shard_boundaries: None,
        }
    }

    /// `validate_from` in epoch seconds.
    pub fn since(&self) -> Option<i64> {
        self.validate_from.as_deref().and_then(escrow_sync_core::time::epoch_seconds)
    }

    fn problem(&self) -> Option<String> {
        if self.dest_bucket.trim().is_empty() {
            return Some("dest_bucket must be set".into());
        }
        if let Some(problem) = percent_problem("max_change_percent", self.max_change_percent) {
            return Some(problem);
        }
        if self.source_bucket.as_deref() == Some(self.dest_bucket.as_str()) {
            return Some(format!(
                "source_bucket and dest_bucket are both {}: escrow copies go to a bucket in the \
                 escrow account",
                self.dest_bucket
            ));
        }
        if !self.dest_prefix.is_empty() && !self.dest_prefix.ends_with('/') {
            return Some(format!(
                "dest_prefix {:?} must end in \"/\" (or be empty)",
                self.dest_prefix
            ));
        }
        if self.concurrency == 0 || self.max_requests_per_second == Some(0) {
            return Some("concurrency and max_requests_per_second must be at least 1".into());
        }
        if let Some(problem) = self.object_lock.as_ref().and_then(ObjectLockConfig::problem) {
            return Some(problem);
        }
        if let Some(t) = &self.validate_from
            && self.since().is_none()
        {
            return Some(format!(
                "validate_from {t:?} is not an RFC 3339 time: write it like 2026-01-01T00:00:00Z"
            ));
        }
        if self.trails.iter().any(|t| t.trim().is_empty()) {
            return Some("trails has an empty name: list trail names or ARNs".into());
        }
        None
    }
}

fn default_unshare() -> bool {
    true
}

/// Declares a snapshot job's config section (`[[ec2]]`, `[[rds]]`,
/// `[[redshift]]`): the keys given, then those every snapshot job shares
/// (its name, the keep_* retention, the breaker's and prune's limits), and
/// the methods on the shared ones. One declaration of the shared keys.
macro_rules! snapshot_job {
    ($(#[$doc:meta])* $name:ident, $default:literal { $($fields:tt)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[doc = concat!("Job name; default `", $default, "`.")]
            pub name: Option<String>,
            $($fields)*
            /// Retention, applied only by `escrow-sync prune`.
            pub keep_last: Option<u32>,
            /// Retention: the newest copy of each of the last N days.
            pub keep_daily: Option<u32>,
            /// Retention: the newest copy of each of the last N weeks.
            pub keep_weekly: Option<u32>,
            /// Retention: the newest copy of each of the last N months.
            pub keep_monthly: Option<u32>,
            /// The mass-change circuit breaker: 100 turns it off (default 25). A
            /// run copies at most `max_new_copies_per_source` new copies of one
            /// source volume or database unless `run --accept-mass-change`.
            #[serde(default = "default_max_change_percent")]
            pub max_change_percent: u8,
            /// `status`: how old the newest verified copy may be (e.g. `26h`) before
            /// the job is reported `stale` (`status --max-age` overrides it); also the
            /// threshold of the job's CloudFormation alarm.
            pub max_age: Option<String>,
            /// New copies of one source volume or database a run makes at most
            /// (default 3): the newest; the rest are held back with a `mass-change`
            /// finding.
            #[serde(default = "default_new_copies_per_source")]
            pub max_new_copies_per_source: u32,
            /// `prune` never deletes a copy made in escrow less than this many days
            /// ago (default 7; 0 turns it off).
            #[serde(default = "default_keep_within_days")]
            pub keep_within_days: u32,
            /// A `prune` that would delete more than this share (percent) of the
            /// job's escrow copies deletes nothing and reports a `prune-limit`
            /// finding, unless `--accept-mass-delete` (default 25; 100: no limit).
            #[serde(default = "default_max_delete_percent")]
            pub max_delete_percent: u8,
        }

        impl $name {
            /// The job's name.
            pub fn name(&self) -> String {
                self.name.clone().unwrap_or_else(|| $default.to_string())
            }

            /// Its retention rules.
            pub fn retention(&self) -> escrow_sync_core::Retention {
                retention(self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly)
            }

            /// What `prune` holds to besides the keep_* rules.
            pub fn prune_limits(&self) -> escrow_sync_core::PruneLimits {
                escrow_sync_core::PruneLimits {
                    keep_within_days: self.keep_within_days,
                    max_delete_percent: self.max_delete_percent,
                }
            }

            /// The most new copies per source a run makes, unless the
            /// breaker is off (`max_change_percent = 100`).
            pub fn new_copies_cap(&self) -> Option<u32> {
                (self.max_change_percent < 100).then_some(self.max_new_copies_per_source)
            }
        }
    };
}

snapshot_job!(
    /// `[[ec2]]`: AMIs with their backing snapshots, and EBS snapshots, of the
    /// primary, shared with the escrow and copied with the escrow key.
    Ec2Job, "ec2" {
        /// What to copy: `images` and/or `snapshots` (default both).
        pub include: Option<Vec<Ec2Include>>,
        /// Only resources with all these tags.
        #[serde(default)]
        pub tags: BTreeMap<String, String>,
        /// Only these ids (`ami-...`, `snap-...`).
        #[serde(default)]
        pub ids: Vec<String>,
        /// Remove the share in the primary once the copy is complete.
        #[serde(default = "default_unshare")]
        pub unshare_after_copy: bool,
        /// Copies in flight at once per resource type (default 100 AMIs, 20
        /// EBS snapshots).
        pub max_in_flight: Option<usize>,
        /// A customer key in the primary, shared with the escrow, to re-encrypt
        /// snapshots under the AWS-managed key with before sharing them.
        pub reencrypt_key_id: Option<String>,
        /// EBS Snapshot Lock on every escrow snapshot copy (AMI backing
        /// snapshots included) and deregistration protection on every escrow
        /// AMI copy, renewed every run.
        pub lock: Option<SnapshotLockConfig>,
    }
);

impl Ec2Job {
    /// Whether the job copies `what` (`images` or `snapshots`).
    pub fn includes(&self, what: &str) -> bool {
        self.include.as_ref().is_none_or(|i| i.iter().any(|w| w.as_str() == what))
    }

    /// The job's snapshot lock, as the EC2 sinks take it.
    #[cfg(feature = "ec2")]
    pub(crate) fn snapshot_lock(&self) -> Option<escrow_sync_ec2::SnapshotLock> {
        let l = self.lock.as_ref()?;
        let mode = escrow_sync_ec2::LockMode::parse(&l.mode)?;
        Some(
            escrow_sync_ec2::SnapshotLock::new(mode, l.days)
                .with_cool_off_hours(l.cool_off_hours)
                .with_renew_within_days(l.renew_within_days()),
        )
    }
}

/// `[[ec2]] lock = { mode = "compliance" | "governance", days = N,
/// cool_off_hours = H, renew_within_days = R }`: EBS Snapshot Lock on every
/// escrow snapshot copy, deregistration protection on every AMI copy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLockConfig {
    /// `compliance` (nobody can lift or shorten the lock once any
    /// cooling-off period is over) or `governance` (who holds
    /// `ec2:UnlockSnapshot` can lift it, and who holds `ec2:LockSnapshot`,
    /// the operator role included, can shorten it).
    pub mode: String,
    /// Days each lock lasts, from when it is set or renewed.
    pub days: u32,
    /// Compliance mode: hours after locking during which the lock can still
    /// be lifted (0, the default: none; at most 72, AWS's limit).
    #[serde(default)]
    pub cool_off_hours: u32,
    /// A lock lapsing within this many days is renewed to now + `days`
    /// (default: a quarter of `days`, rounded up).
    pub renew_within_days: Option<u32>,
}

impl SnapshotLockConfig {
    /// The renewal window in days.
    pub fn renew_within_days(&self) -> u32 {
        self.renew_within_days.unwrap_or(self.days.div_ceil(4))
    }

    /// Why this setting is invalid, if it is.
    fn problem(&self) -> Option<String> {
        let mode = self.mode.to_ascii_lowercase();
        if mode != "compliance" && mode != "governance" {
            return Some(format!(
                "lock mode {:?} is not \"compliance\" or \"governance\": set one of them",
                self.mode
            ));
        }
        if self.days == 0 || self.days > 36_500 {
            return Some(format!(
                "lock days = {} is out of range: set 1 to 36500 (AWS's limit)",
                self.days
            ));
        }
        if self.cool_off_hours > 72 {
            return Some(format!(
                "lock cool_off_hours = {} is over AWS's limit: set 0 (no cooling-off period) to 72",
                self.cool_off_hours
            ));
        }
        if self.cool_off_hours > 0 && mode == "governance" {
            return Some(
                "lock cool_off_hours applies to mode = \"compliance\" only (a governance lock can \
                 be lifted anyway): remove it or use compliance"
                    .into(),
            );
        }
        let renew = self.renew_within_days();
        if renew > self.days {
            return Some(format!(
                "lock renew_within_days = {renew} is more than days = {}: set at most {} (a \
                 renewal extends a lock to now + days)",
                self.days, self.days
            ));
        }
        None
    }
}

fn retention(
    keep_last: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
) -> escrow_sync_core::Retention {
    escrow_sync_core::Retention { keep_last, keep_daily, keep_weekly, keep_monthly }
}

snapshot_job!(
    /// `[[rds]]`: DB snapshots and Aurora cluster snapshots of the primary,
    /// shared with the escrow and copied with the escrow key.
    RdsJob, "rds" {
        /// What to copy: `db` and/or `cluster` (default both).
        pub include: Option<Vec<RdsInclude>>,
        /// Only snapshots with all these tags.
        #[serde(default)]
        pub tags: BTreeMap<String, String>,
        /// Only these snapshot identifiers.
        #[serde(default)]
        pub ids: Vec<String>,
        /// Remove the share in the primary once the copy is complete.
        #[serde(default = "default_unshare")]
        pub unshare_after_copy: bool,
        /// Copies in flight at once per type (default 20 DB snapshots, 5 Aurora
        /// cluster snapshots).
        pub max_in_flight: Option<usize>,
        /// A customer key in the primary, shared with the escrow, to re-encrypt
        /// snapshots under the AWS-managed key (aws/rds) with first.
        pub reencrypt_key_id: Option<String>,
    }
);

impl RdsJob {
    /// Whether the job copies `what` (`db` or `cluster`).
    pub fn includes(&self, what: &str) -> bool {
        self.include.as_ref().is_none_or(|i| i.iter().any(|w| w.as_str() == what))
    }
}

snapshot_job!(
    /// `[[redshift]]`: Redshift snapshots of the primary, shared with the
    /// escrow, and with `independent_copy` restored and snapshotted in escrow.
    ///
    /// Its keep_* retention applies to independent copies.
    RedshiftJob, "redshift" {
        /// Only snapshots with all these tags.
        #[serde(default)]
        pub tags: BTreeMap<String, String>,
        /// Only these snapshot identifiers.
        #[serde(default)]
        pub ids: Vec<String>,
        /// Restore each shared snapshot into a minimal cluster in escrow, take
        /// a manual snapshot escrow owns, delete the cluster. Without it escrow
        /// holds only a share the primary can revoke.
        #[serde(default)]
        pub independent_copy: bool,
        /// With `independent_copy`: remove the share once escrow's snapshot is
        /// complete.
        #[serde(default = "default_unshare")]
        pub unshare_after_copy: bool,
        /// Copies in flight at once (default 5).
        pub max_in_flight: Option<usize>,
    }
);

fn default_max_delete_percent() -> u8 {
    escrow_sync_core::PruneLimits::default().max_delete_percent
}

fn default_new_copies_per_source() -> u32 {
    3
}

fn default_keep_within_days() -> u32 {
    escrow_sync_core::PruneLimits::default().keep_within_days
}

fn default_read_capacity_percent() -> u32 {
    25
}

fn default_workers() -> usize {
    8
}

/// `[[dynamodb]]`: one table to escrow, into an escrow table or as export
/// generations in an escrow bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoDbJob {
    /// The table in the primary.
    pub source_table: String,
    /// The escrow table (created as a clone of the source if missing).
    pub dest_table: Option<String>,
    /// Instead of `dest_table`: the escrow bucket for export generations.
    pub dest_bucket: Option<String>,
    /// With `dest_bucket`: the key prefix of the generations.
    pub dest_prefix: Option<String>,
    /// Job name; default `dynamodb:<source_table>`.
    pub name: Option<String>,
    /// `scan` (the default), `native-export` or `native-incremental`.
    pub mode: Option<TableMode>,
    /// `native-export`: the key prefix of `dest_bucket` DynamoDB exports
    /// into (default `<dest_prefix>.staging/`), the only place the generated
    /// bucket policy lets the primary write; escrow-sync checks each export
    /// there against DynamoDB's manifest and copies it into the generation.
    pub staging_prefix: Option<String>,
    /// `native-incremental` export generations: how long a chain of
    /// incremental generations grows on top of its full export before a
    /// run makes a full export again (default `7d`).
    pub full_export_every: Option<String>,
    /// Scan segments; default one per GiB of table, at least `workers`.
    pub segments: Option<u32>,
    /// Segments scanned at once (default 8).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Share of the source's read capacity the scan may use (1-100, default 25).
    #[serde(default = "default_read_capacity_percent")]
    pub read_capacity_percent: u32,
    /// Strongly consistent scan reads (twice the read capacity).
    #[serde(default)]
    pub consistent_read: bool,
    /// `on-demand` (the default) or `provisioned` (the source's capacity)
    /// for an escrow table escrow-sync creates.
    pub billing_mode: Option<BillingMode>,
    /// The escrow table that holds scan checkpoints (default
    /// `escrow-sync-checkpoints`).
    pub checkpoint_table: Option<String>,
    /// Where a file of items that could not be written goes (default: the
    /// current directory).
    pub dead_letter_dir: Option<String>,
    /// Export generations: uncompressed bytes per data file (default 64 MiB).
    pub file_size: Option<ByteSize>,
    /// Export generations: Object Lock retention set on every file.
    pub object_lock: Option<ObjectLockConfig>,
    /// Export generations: allow a destination bucket without versioning.
    #[serde(default)]
    pub allow_unversioned_dest: bool,
    /// Table jobs: the escrow bucket (versioned) that keeps item history:
    /// the state escrow held of every item a run replaces, made durable
    /// before the write, so `restore --at` can bring back any earlier state.
    pub history_bucket: Option<String>,
    /// Table jobs: the key prefix of the history in `history_bucket`
    /// (default `dynamodb-history/`); objects go under
    /// `<history_prefix><escrow table>/`.
    pub history_prefix: Option<String>,
    /// The mass-change breaker (1-100, default 25; 100 turns it off): a run
    /// of a table job overwrites at most this percentage of the escrow
    /// table's items and reports a `mass-change` finding when more changed.
    /// Export generations replace nothing, so there it guards nothing.
    #[serde(default = "default_max_change_percent")]
    pub max_change_percent: u8,
    /// `status`: how old the newest verified copy may be (e.g. `26h`) before
    /// the job is reported `stale` (`status --max-age` overrides it); also the
    /// threshold of the job's CloudFormation alarm.
    pub max_age: Option<String>,
}

impl DynamoDbJob {
    /// A job copying table `source_table` of the primary into escrow table
    /// `dest_table`, every other key at its default.
    pub fn to_table(source_table: impl Into<String>, dest_table: impl Into<String>) -> Self {
        let (source, dest) = (source_table.into(), dest_table.into());
        job_from("[[dynamodb]]", &[("source_table", &source), ("dest_table", &dest)])
    }

    /// A job writing export generations of table `source_table` into escrow
    /// bucket `dest_bucket` under `dest_prefix`, every other key at its
    /// default.
    pub fn to_bucket(
        source_table: impl Into<String>,
        dest_bucket: impl Into<String>,
        dest_prefix: impl Into<String>,
    ) -> Self {
        let (source, bucket, prefix) =
            (source_table.into(), dest_bucket.into(), dest_prefix.into());
        job_from(
            "[[dynamodb]]",
            &[("source_table", &source), ("dest_bucket", &bucket), ("dest_prefix", &prefix)],
        )
    }

    /// The history prefix (`history_prefix` or the default).
    pub fn history_prefix(&self) -> String {
        self.history_prefix
            .clone()
            .unwrap_or_else(|| escrow_sync_core::layout::HISTORY_PREFIX.to_string())
    }

    /// The protection every export file of this job gets.
    pub fn protection(&self, kms_key_id: Option<String>) -> escrow_sync_s3::Protection {
        protection(self.object_lock.as_ref(), kms_key_id)
    }

    /// The job's name.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("dynamodb:{}", self.source_table))
    }

    /// `full_export_every` (checked when the config was validated), if set.
    pub fn full_export_every(&self) -> Option<std::time::Duration> {
        self.full_export_every.as_deref().and_then(|t| parse_duration("full_export_every", t).ok())
    }

    /// Whether DynamoDB's native export (full or incremental) writes the
    /// generations.
    pub fn native_export(&self) -> bool {
        matches!(self.mode, Some(TableMode::NativeExport | TableMode::NativeIncremental))
    }

    /// Whether each run exports only the changes since the previous one
    /// (`mode = "native-incremental"`).
    pub fn incremental(&self) -> bool {
        self.mode == Some(TableMode::NativeIncremental)
    }

    /// A native export job's staging prefix (`staging_prefix`, default
    /// `<dest_prefix>.staging/`; a native-incremental table job stages in
    /// its history bucket, default `<history_prefix>.staging/`); `None` for
    /// other jobs.
    pub fn staging_prefix(&self) -> Option<String> {
        let base = match (&self.dest_bucket, &self.history_bucket) {
            _ if !self.native_export() => return None,
            (Some(_), _) => self.dest_prefix.clone().unwrap_or_default(),
            (None, Some(_)) if self.incremental() => self.history_prefix(),
            _ => return None,
        };
        Some(
            self.staging_prefix
                .clone()
                .unwrap_or_else(|| escrow_sync_core::layout::staging_prefix(&base)),
        )
    }

    /// The escrow bucket a native export stages in: `dest_bucket`, or a
    /// native-incremental table job's `history_bucket`.
    pub fn staging_bucket(&self) -> Option<&str> {
        self.staging_prefix()?;
        self.dest_bucket.as_deref().or(self.history_bucket.as_deref())
    }
}

/// A place in escrow that a job or the run writes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Place {
    /// Objects under a key prefix of an escrow bucket (`""`: the whole bucket).
    Objects {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
    /// An escrow table.
    Table(String),
}

impl Place {
    /// Whether the two places can hold the same object or item.
    pub fn overlaps(&self, other: &Place) -> bool {
        match (self, other) {
            (Place::Objects { bucket: a, prefix: p }, Place::Objects { bucket: b, prefix: q }) => {
                a == b && (p.starts_with(q.as_str()) || q.starts_with(p.as_str()))
            }
            (Place::Table(a), Place::Table(b)) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Objects { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Place::Table(t) => write!(f, "table {t}"),
        }
    }
}

/// The error for a job of `kind` in a build without that kind's feature.
pub(crate) fn not_built(kind: &str) -> Error {
    Error::invalid_config(format!(
        "this build of escrow-sync has no {kind} support (it has: {}): build it with the `{kind}` \
         feature, or remove the job",
        Config::built_kinds().join(", ")
    ))
}

/// A duration key (`max_age = "26h"`): humantime's units (`s`, `m`, `h`,
/// `d`, `w`, combined as in `1h30m`), more than zero.
pub fn parse_duration(key: &str, text: &str) -> std::result::Result<std::time::Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.as_secs() >= 1 => Ok(d),
        Ok(_) => {
            Err(format!("{key} is {text:?}: give a duration of a second or more, e.g. \"26h\""))
        }
        Err(e) => Err(format!(
            "{key} is {text:?} ({e}): give a duration such as \"26h\", \"90m\" or \"2d\""
        )),
    }
}

/// One configured job of any kind.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum JobRef<'a> {
    /// An `[[s3]]` job.
    S3(&'a S3Job),
    /// A `[[dynamodb]]` job.
    DynamoDb(&'a DynamoDbJob),
    /// An `[[ec2]]` job.
    Ec2(&'a Ec2Job),
    /// An `[[rds]]` job.
    Rds(&'a RdsJob),
    /// A `[[redshift]]` job.
    Redshift(&'a RedshiftJob),
    /// A `[[cloudtrail]]` job.
    CloudTrail(&'a CloudTrailJob),
}

impl JobRef<'_> {
    /// The job's kind: `s3`, `dynamodb`, `ec2`, `rds`, `redshift` or
    /// `cloudtrail`.
    pub fn kind(&self) -> &'static str {
        match self {
            JobRef::S3(_) => "s3",
            JobRef::DynamoDb(_) => "dynamodb",
            JobRef::Ec2(_) => "ec2",
            JobRef::Rds(_) => "rds",
            JobRef::Redshift(_) => "redshift",
            JobRef::CloudTrail(_) => "cloudtrail",
        }
    }

    /// The job's `max_age` as written, if set.
    pub fn max_age_text(&self) -> Option<&str> {
        match self {
            JobRef::S3(j) => j.max_age.as_deref(),
            JobRef::DynamoDb(j) => j.max_age.as_deref(),
            JobRef::Ec2(j) => j.max_age.as_deref(),
            JobRef::Rds(j) => j.max_age.as_deref(),
            JobRef::Redshift(j) => j.max_age.as_deref(),
            JobRef::CloudTrail(j) => j.max_age.as_deref(),
        }
    }

    /// The job's `max_age` (checked when the config was validated).
    pub fn max_age(&self) -> Option<std::time::Duration> {
        self.max_age_text().and_then(|t| parse_duration("max_age", t).ok())
    }

    /// The job's name.
    pub fn name(&self) -> String {
        match self {
            JobRef::S3(j) => j.name(),
            JobRef::DynamoDb(j) => j.name(),
            JobRef::Ec2(j) => j.name(),
            JobRef::Rds(j) => j.name(),
            JobRef::Redshift(j) => j.name(),
            JobRef::CloudTrail(j) => j.name(),
        }
    }
}

/// `[escrow]`: the account that runs escrow-sync and owns every copy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowSection {
    /// Region; default: `--region`, else the SDK's region chain
    /// (`AWS_REGION`, the profile's region).
    pub region: Option<String>,
    /// Named profile; default: `--profile`, else the standard credential
    /// chain (`AWS_PROFILE`...).
    pub profile: Option<String>,
    /// Escrow role assumed first, if given.
    pub role_arn: Option<String>,
    /// The external id the escrow role's trust policy requires.
    pub external_id: Option<String>,
    /// The session name of the escrow role (default `escrow-sync`).
    pub session_name: Option<String>,
    /// How long the escrow role's credentials last (900 to 43200 seconds).
    pub duration_seconds: Option<u32>,
    /// Checked against STS GetCallerIdentity.
    pub account_id: Option<String>,
    /// The escrow-owned KMS key: every copy is SSE-KMS with it.
    pub kms_key_id: Option<String>,
    /// Labs and single-account S3-compatible stores only.
    #[serde(default)]
    pub allow_same_account: bool,
    /// Endpoint override (default: `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// The escrow bucket every `run` writes its manifest into.
    pub manifest_bucket: Option<String>,
    /// The key prefix of manifests (default `escrow-sync/manifests/`).
    pub manifest_prefix: Option<String>,
    /// Object Lock retention set on every manifest.
    pub manifest_object_lock: Option<ObjectLockConfig>,
    /// How long a job's lease lasts unless renewed (default 600; renewed
    /// every third of it while the job runs).
    pub lease_ttl_seconds: Option<u64>,
    /// Per-job metrics after each `run` and `status` (default off).
    pub metrics: Option<MetricsKind>,
    /// `metrics = "prometheus"`: the textfile-collector file to write
    /// (replaced atomically), e.g.
    /// `/var/lib/node_exporter/textfile_collector/escrow_sync.prom`.
    pub metrics_file: Option<String>,
    /// How long Recycle Bin keeps a deleted escrow EBS snapshot or AMI
    /// (default [`DEFAULT_RECYCLE_BIN_DAYS`], 1 to 365): the retention of
    /// the locked rules `policy --output cloudformation` emits for `[[ec2]]`
    /// jobs, and the least `audit` accepts.
    pub recycle_bin_days: Option<u32>,
    /// The role S3 Batch Operations runs `[[s3]] engine =
    /// "batch-operations"` copies as (trusted by
    /// `batchoperations.s3.amazonaws.com`; `policy` writes it).
    pub batch_role_arn: Option<String>,
}

/// `[primary]`: the account being backed up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimarySection {
    /// The primary's account id.
    pub account_id: String,
    /// The reader role, assumed with the escrow credentials (or with
    /// `profile`'s, when set too).
    pub role_arn: Option<String>,
    /// A named profile: alone, the primary's credentials; with `role_arn`,
    /// the credentials the reader role is assumed with.
    pub profile: Option<String>,
    /// External id for the reader role.
    pub external_id: Option<String>,
    /// Region; default: the escrow region.
    pub region: Option<String>,
    /// Endpoint override of every primary call, STS included; default: the
    /// environment's (`AWS_ENDPOINT_URL`, else AWS), not the escrow's.
    pub endpoint_url: Option<String>,
}

fn default_concurrency() -> usize {
    64
}

fn default_memory_limit() -> ByteSize {
    ByteSize(escrow_sync_s3::DEFAULT_MEMORY_LIMIT)
}

fn default_stale_hours() -> u64 {
    24
}

/// `[[s3]]`: one bucket to escrow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Job {
    /// The bucket in the primary.
    pub source_bucket: String,
    /// The bucket in the escrow.
    pub dest_bucket: String,
    /// Job name; default `s3:<source_bucket>`.
    pub name: Option<String>,
    /// Only keys under this prefix.
    #[serde(default)]
    pub prefix: String,
    /// Prepended to keys in escrow.
    #[serde(default)]
    pub dest_prefix: String,
    /// Objects copied at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Objects larger than this are copied in parts (default 256 MiB; objects
    /// over 5 GiB always are). Bytes, or a string such as "512MiB".
    pub multipart_threshold: Option<ByteSize>,
    /// Preferred part size (default 64 MiB server-side; streamed, derived
    /// from `memory_limit`; raised to keep within max_parts).
    pub part_size: Option<ByteSize>,
    /// Most parts per object (default and maximum 10000).
    pub max_parts: Option<u32>,
    /// Part copies in flight at once across all objects of the job (default 64).
    pub part_concurrency: Option<usize>,
    /// Streamed copies: the most bytes the job holds in memory at once
    /// (default "256MiB", at least 5 MiB); their part size and concurrency
    /// are derived from it unless set.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// Object Lock retention set on every copy.
    pub object_lock: Option<ObjectLockConfig>,
    /// Copy every version of every key, oldest first.
    #[serde(default)]
    pub versions: bool,
    /// `server-side` (CopyObject, the default on one endpoint) or `stream`
    /// (bytes through this process; the default when the two sides have
    /// different endpoints).
    pub mode: Option<S3Mode>,
    /// `copy` (the default: S3 copies the tags server-side, one request per
    /// object), `explicit` (read and set them: stores that drop tags on a
    /// copy) or `none`. `verify` compares them unless `none`.
    pub tags: Option<S3Tags>,
    /// At most this many requests per second to S3 (both sides together).
    pub max_requests_per_second: Option<u32>,
    /// A run first aborts multipart uploads escrow-sync left behind under the
    /// destination prefix (interrupted runs) this many hours ago or more.
    #[serde(default = "default_stale_hours")]
    pub abort_stale_uploads_after_hours: u64,
    /// Allow a destination bucket without versioning.
    #[serde(default)]
    pub allow_unversioned_dest: bool,
    /// The mass-change breaker: a run that finds more than this share (%)
    /// of the job's escrow objects changed in the primary copies at most
    /// that share and stops with a `mass-change` finding (default 25; 100
    /// turns it off).
    #[serde(default = "default_max_change_percent")]
    pub max_change_percent: u8,
    /// `status`: how old the newest verified copy may be (e.g. `26h`) before
    /// the job is reported `stale` (`status --max-age` overrides it); also the
    /// threshold of the job's CloudFormation alarm.
    pub max_age: Option<String>,
    /// `direct` (the default), `batch-operations` or `auto` (Batch
    /// Operations above `batch_threshold` objects to copy).
    pub engine: Option<S3Engine>,
    /// `engine = "auto"`: the object count above which a run uses Batch
    /// Operations (default 1,000,000).
    pub batch_threshold: Option<u64>,
    /// The escrow bucket of the Batch Operations manifests, job records and
    /// completion reports (needed by `engine = "batch-operations"` and
    /// `"auto"`).
    pub batch_bucket: Option<String>,
    /// The key prefix of those files (default `escrow-sync/batch/`).
    pub batch_prefix: Option<String>,
    /// `run --shard I/N`: the N-1 keys that cut the job into N parts
    /// (sorted as S3 lists keys, distinct). Part 1 holds the keys up to and
    /// including the first, part N those after the last. Without it, a
    /// sharded run samples boundaries once per job and N and keeps them in
    /// the manifest bucket.
    pub shard_boundaries: Option<Vec<String>>,
}

impl S3Job {
    /// The engine, `direct` unless set.
    pub fn engine(&self) -> S3Engine {
        self.engine.unwrap_or(S3Engine::Direct)
    }

    /// Why this job's batch settings cannot work, if they cannot.
    fn batch_problem(&self, escrow: &EscrowSection, streams: bool) -> Option<String> {
        if self.engine() == S3Engine::Direct {
            return None;
        }
        let engine = self.engine();
        if self.batch_bucket.as_deref().is_none_or(|b| b.trim().is_empty()) {
            return Some(format!(
                "engine = \"{engine}\" needs batch_bucket: an escrow bucket for the job's \
                 manifests and completion reports"
            ));
        }
        if escrow.batch_role_arn.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Some(format!(
                "engine = \"{engine}\" needs [escrow] batch_role_arn: the role S3 Batch \
                 Operations runs the copy as (`escrow-sync policy` writes it)"
            ));
        }
        if escrow.account_id.is_none() {
            return Some(format!(
                "engine = \"{engine}\" needs [escrow] account_id: S3 Control jobs are created \
                 in a named account"
            ));
        }
        if self.versions {
            return Some(format!(
                "engine = \"{engine}\" copies the current version of each key; versions = true \
                 copies every version: drop one of them"
            ));
        }
        if streams {
            return Some(format!(
                "engine = \"{engine}\" copies server-side in S3; this job streams (mode = \
                 \"stream\" or different endpoint_url): drop one of them"
            ));
        }
        if self.batch_threshold == Some(0) {
            return Some("batch_threshold must be at least 1".into());
        }
        // A Batch Copy's TargetKeyPrefix is joined to the key with one "/"
        // by S3: only a prefix ending in exactly one "/" puts each copy
        // where escrow-sync (and every later run) looks for it.
        let p = &self.dest_prefix;
        if !p.is_empty()
            && (!p.ends_with('/') || p.ends_with("//") || p.trim_end_matches('/').is_empty())
        {
            return Some(format!(
                "engine = \"{engine}\" needs dest_prefix empty or ending in exactly one \"/\" \
                 (S3 Batch Operations writes <prefix>/<key>), not {p:?}: set dest_prefix = \"{}/\"",
                p.trim_end_matches('/')
            ));
        }
        None
    }
}

/// The default `max_change_percent`.
fn default_max_change_percent() -> u8 {
    escrow_sync_core::MassChangeGuard::DEFAULT_PERCENT
}

/// A `max_change_percent` (or other share) outside 1 to 100, as a problem.
pub(crate) fn percent_problem(key: &str, value: u8) -> Option<String> {
    (!(1..=100).contains(&value)).then(|| {
        format!(
            "{key} is {value}; use 1 to 100 (a share of the job's escrow items; 100 turns the \
             check off)"
        )
    })
}

/// Why a job's `memory_limit` cannot work, if it cannot: below S3's
/// smallest part, or (streamed) below its `part_size`, since a streamed
/// part is held in memory whole.
fn memory_problem(job: &S3Job, streamed: bool) -> Option<String> {
    let ByteSize(limit) = job.memory_limit;
    if limit < escrow_sync_s3::MIN_PART_SIZE {
        return Some(format!(
            "memory_limit is {limit} bytes; it must hold at least one 5 MiB part: set it to \"5MiB\" \
             or more (default \"256MiB\")"
        ));
    }
    match job.part_size {
        Some(ByteSize(part)) if streamed && part > limit => Some(format!(
            "part_size ({part} bytes) is larger than memory_limit ({limit} bytes), and this job \
             streams, holding each part in memory whole: raise memory_limit to at least part_size, \
             or lower part_size (or leave part_size out to derive it from memory_limit)"
        )),
        _ => None,
    }
}

/// `object_lock = { mode = "COMPLIANCE" | "GOVERNANCE", days = N,
/// renew_within_days = M }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockConfig {
    /// `COMPLIANCE` or `GOVERNANCE`.
    pub mode: String,
    /// Days of retention from each copy, and from each renewal.
    pub days: u32,
    /// Every run extends to `days` from now the retention of the copies
    /// (of objects still in the primary) whose lock ends within this many
    /// days. Default: a quarter of `days` (at least 1).
    #[serde(default)]
    pub renew_within_days: Option<u32>,
}

/// Protection with the escrow key and, when configured, Object Lock.
pub(crate) fn protection(
    lock: Option<&ObjectLockConfig>,
    kms_key_id: Option<String>,
) -> escrow_sync_s3::Protection {
    let lock = lock.and_then(|l| {
        escrow_sync_s3::LockMode::parse(&l.mode).map(|mode| {
            let lock = escrow_sync_s3::ObjectLock::new(mode, l.days);
            match l.renew_within_days {
                Some(days) => lock.with_renew_within_days(days),
                None => lock,
            }
        })
    });
    escrow_sync_s3::Protection::new().with_kms_key_id(kms_key_id).with_object_lock(lock)
}

impl ObjectLockConfig {
    /// Why this setting is invalid, if it is.
    fn problem(&self) -> Option<String> {
        if escrow_sync_s3::LockMode::parse(&self.mode).is_none() {
            return Some(format!(
                "object_lock mode {:?} is not COMPLIANCE or GOVERNANCE",
                self.mode
            ));
        }
        if self.days == 0 {
            return Some("object_lock days must be at least 1".to_string());
        }
        match self.renew_within_days {
            Some(w) if w == 0 || w > self.days => Some(format!(
                "object_lock renew_within_days is {w}: it must be from 1 to days ({}); leave it \
                 out for a quarter of days ({})",
                self.days,
                escrow_sync_s3::ObjectLock::default_renew_within(self.days)
            )),
            _ => None,
        }
    }
}

/// A size in bytes: an integer, or a string with a unit (B, KiB, MiB, GiB,
/// TiB, or KB, MB, GB, TB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse_size(&t).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses "64MiB", "5 GiB", "100MB", "1024".
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a size such as \"64MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}: use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("{text:?} is too large"))
}

/// A job built in code: the keys given, every other key at the default a
/// config file would give it.
fn job_from<T: serde::de::DeserializeOwned>(kind: &str, keys: &[(&str, &str)]) -> T {
    let table: toml::Table =
        keys.iter().map(|(k, v)| (k.to_string(), toml::Value::String(v.to_string()))).collect();
    table.try_into().unwrap_or_else(|e| panic!("the required keys of a {kind} job: {e}"))
}

impl S3Job {
    /// A job copying bucket `source_bucket` of the primary into escrow
    /// bucket `dest_bucket`, every other key at its default (change the
    /// public fields to set them).
    pub fn new(source_bucket: impl Into<String>, dest_bucket: impl Into<String>) -> Self {
        let (source, dest) = (source_bucket.into(), dest_bucket.into());
        job_from("[[s3]]", &[("source_bucket", &source), ("dest_bucket", &dest)])
    }

    /// How this job's copies get the objects' tags (default `copy`).
    pub fn tag_mode(&self) -> escrow_sync_s3::TagMode {
        match self.tags {
            None | Some(S3Tags::Copy) => escrow_sync_s3::TagMode::Copy,
            Some(S3Tags::Explicit) => escrow_sync_s3::TagMode::Explicit,
            Some(S3Tags::Omit) => escrow_sync_s3::TagMode::None,
        }
    }

    /// The multipart settings of this job.
    pub fn multipart(&self) -> escrow_sync_s3::MultipartOptions {
        let mut m = escrow_sync_s3::MultipartOptions::new();
        if let Some(ByteSize(t)) = self.multipart_threshold {
            m = m.with_threshold(t);
        }
        if let Some(ByteSize(p)) = self.part_size {
            m = m.with_part_size(p);
        }
        if let Some(p) = self.max_parts {
            m = m.with_max_parts(p);
        }
        if let Some(c) = self.part_concurrency {
            m = m.with_part_concurrency(c);
        }
        m.with_memory_limit(self.memory_limit.0)
    }

    /// The protection every copy of this job gets.
    pub fn protection(&self, kms_key_id: Option<String>) -> escrow_sync_s3::Protection {
        protection(self.object_lock.as_ref(), kms_key_id)
    }

    /// The job's name.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("s3:{}", self.source_bucket))
    }
}

impl EscrowSection {
    /// Whether `metrics` publishes anything (`cloudwatch` or `prometheus`).
    pub fn metrics_on(&self) -> bool {
        matches!(self.metrics, Some(MetricsKind::Cloudwatch | MetricsKind::Prometheus))
    }

    /// The escrow account in `region`, every other key at its default.
    pub fn new(region: impl Into<String>) -> Self {
        job_from("[escrow]", &[("region", &region.into())])
    }
}

impl PrimarySection {
    /// The primary account `account_id`, every other key at its default.
    pub fn new(account_id: impl Into<String>) -> Self {
        job_from("[primary]", &[("account_id", &account_id.into())])
    }
}

impl Config {
    /// A config built in code, with no job yet: add jobs with
    /// [`Config::with_s3`] and [`Config::with_dynamodb`], then check it with
    /// [`Config::validated`].
    pub fn new(escrow: EscrowSection, primary: PrimarySection) -> Self {
        Config {
            escrow,
            primary,
            s3: Vec::new(),
            dynamodb: Vec::new(),
            ec2: Vec::new(),
            rds: Vec::new(),
            redshift: Vec::new(),
            cloudtrail: Vec::new(),
            digest: String::new(),
        }
    }

    /// Adds an `[[s3]]` job.
    pub fn with_s3(mut self, job: S3Job) -> Self {
        self.s3.push(job);
        self
    }

    /// Adds a `[[dynamodb]]` job.
    pub fn with_dynamodb(mut self, job: DynamoDbJob) -> Self {
        self.dynamodb.push(job);
        self
    }

    /// Checks a config built in code as a config file is checked (`origin`
    /// names it in errors).
    pub fn validated(mut self, origin: &str) -> Result<Config> {
        self.validate(origin)?;
        self.digest = escrow_sync_core::manifest::digest(format!("{self:?}").as_bytes());
        Ok(self)
    }

    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::invalid_config(format!(
                    "config file {} not found: create it (see docs/config.md) or \
                     pass --config FILE",
                    path.display()
                ))
            } else {
                Error::invalid_config(format!("cannot read config file {}: {e}", path.display()))
            }
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// SHA-256 (hex) of the text this config was parsed from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The values that must never appear in output or logs (the external
    /// ids of the primary's reader role and of the escrow role).
    pub fn secrets(&self) -> Vec<&str> {
        self.primary
            .external_id
            .as_deref()
            .into_iter()
            .chain(self.escrow.external_id.as_deref())
            .collect()
    }

    /// The config with the command line's `--profile` and `--region` in
    /// place of `[escrow] profile` and `region` (each only when given).
    pub fn with_overrides(mut self, profile: Option<String>, region: Option<String>) -> Self {
        if profile.is_some() {
            self.escrow.profile = profile;
        }
        if region.is_some() {
            self.escrow.region = region;
        }
        self
    }

    /// The region the config names for the primary: `[primary] region`,
    /// else `[escrow] region` (`None`: the SDK's region chain decides, see
    /// [`Config::region_or`]).
    pub fn region(&self) -> Option<&str> {
        self.primary.region.as_deref().or(self.escrow.region.as_deref())
    }

    /// [`Config::region`], else the region `session` resolved.
    pub fn region_or(&self, session: &escrow_sync_aws::Session) -> String {
        match self.region() {
            Some(r) => r.to_string(),
            None => session.sdk_config().region().map(|r| r.to_string()).unwrap_or_default(),
        }
    }

    /// Parses and checks config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            Error::invalid_config(format!("{origin}: {}", e.to_string().trim_end()))
        })?;
        config.validate(origin)?;
        let mut config = config;
        config.digest = escrow_sync_core::manifest::digest(text.as_bytes());
        Ok(config)
    }

    /// The job kinds this build can run (the cargo features it was built
    /// with).
    pub fn built_kinds() -> Vec<&'static str> {
        [
            ("s3", cfg!(feature = "s3")),
            ("dynamodb", cfg!(feature = "dynamodb")),
            ("ec2", cfg!(feature = "ec2")),
            ("rds", cfg!(feature = "rds")),
            ("redshift", cfg!(feature = "redshift")),
            ("cloudtrail", cfg!(feature = "cloudtrail")),
        ]
        .into_iter()
        .filter_map(|(kind, built)| built.then_some(kind))
        .collect()
    }

    /// Refuses jobs of a kind not in `built` (a build without that
    /// service's feature), naming the kind and the fix.
    fn check_built(&self, origin: &str, built: &[&str]) -> Result<()> {
        let used = [
            ("s3", self.s3.len()),
            ("dynamodb", self.dynamodb.len()),
            ("ec2", self.ec2.len()),
            ("rds", self.rds.len()),
            ("redshift", self.redshift.len()),
            ("cloudtrail", self.cloudtrail.len()),
        ];
        match used.iter().find(|(kind, n)| *n > 0 && !built.contains(kind)) {
            None => Ok(()),
            Some((kind, n)) => Err(Error::invalid_config(format!(
                "{origin}: {n} [[{kind}]] job(s), but this build of escrow-sync has no {kind} \
                 support (it has: {}): build it with the `{kind}` feature (cargo install \
                 escrow-sync-cli --features {kind}), or remove the job(s)",
                built.join(", ")
            ))),
        }
    }

    fn validate(&self, origin: &str) -> Result<()> {
        self.check_built(origin, &Self::built_kinds())?;
        escrow_sync_aws::check_escrow_role(&self.escrow_account())
            .map_err(|e| Error::invalid_config(format!("{origin}: {}", e.message())))?;
        if let Some(ttl) = self.escrow.lease_ttl_seconds
            && !(MIN_LEASE_TTL_SECONDS..=MAX_LEASE_TTL_SECONDS).contains(&ttl)
        {
            return Err(Error::invalid_config(format!(
                "{origin}: [escrow] lease_ttl_seconds is {ttl}: use {MIN_LEASE_TTL_SECONDS} to \
                 {MAX_LEASE_TTL_SECONDS} seconds (a running job renews its lease every third of it)"
            )));
        }
        if let Some(days) = self.escrow.recycle_bin_days
            && !(1..=MAX_RECYCLE_BIN_DAYS).contains(&days)
        {
            return Err(Error::invalid_config(format!(
                "{origin}: [escrow] recycle_bin_days is {days}: use 1 to {MAX_RECYCLE_BIN_DAYS} \
                 days (Recycle Bin's retention range; default {DEFAULT_RECYCLE_BIN_DAYS})"
            )));
        }
        if let Some(problem) =
            self.escrow.manifest_object_lock.as_ref().and_then(ObjectLockConfig::problem)
        {
            return Err(Error::invalid_config(format!("{origin}: [escrow] manifest_{problem}")));
        }
        if self.jobs().is_empty() {
            return Err(Error::invalid_config(format!(
                "{origin}: no jobs: add an [[s3]] section with source_bucket and dest_bucket, \
                 a [[dynamodb]] section with source_table and dest_table, or an [[ec2]], [[rds]], \
                 [[redshift]] or [[cloudtrail]] section"
            )));
        }
        match (self.escrow.metrics, &self.escrow.metrics_file) {
            (Some(MetricsKind::Prometheus), None) => {
                return Err(Error::invalid_config(format!(
                    "{origin}: [escrow] metrics = \"prometheus\" needs metrics_file, the \
                     textfile-collector file to write (e.g. \
                     \"/var/lib/node_exporter/textfile_collector/escrow_sync.prom\")"
                )));
            }
            (Some(MetricsKind::Prometheus), Some(f)) if !f.ends_with(".prom") => {
                return Err(Error::invalid_config(format!(
                    "{origin}: [escrow] metrics_file {f:?} must end in .prom (the textfile \
                     collector reads only those)"
                )));
            }
            (Some(MetricsKind::Cloudwatch | MetricsKind::Prometheus), _)
                if self.escrow.manifest_bucket.is_none() =>
            {
                return Err(Error::invalid_config(format!(
                    "{origin}: [escrow] metrics needs manifest_bucket: SecondsSinceLastVerifiedCopy \
                     is read from the run manifests there"
                )));
            }
            (None | Some(MetricsKind::Off | MetricsKind::Cloudwatch), Some(_)) => {
                return Err(Error::invalid_config(format!(
                    "{origin}: [escrow] metrics_file is set, but metrics is not \"prometheus\": \
                     set metrics = \"prometheus\" or remove metrics_file"
                )));
            }
            _ => {}
        }
        for job in self.jobs() {
            if let Some(text) = job.max_age_text() {
                parse_duration("max_age", text).map_err(|why| {
                    Error::invalid_config(format!(
                        "{origin}: [[{}]] ({}): {why}",
                        job.kind(),
                        job.name()
                    ))
                })?;
            }
        }
        let mut names = BTreeSet::new();
        let snapshot_jobs = self
            .ec2
            .iter()
            .map(|j| ("[[ec2]]", j.name(), validate_ec2(j)))
            .chain(self.rds.iter().map(|j| ("[[rds]]", j.name(), validate_rds(j))))
            .chain(self.redshift.iter().map(|j| ("[[redshift]]", j.name(), validate_redshift(j))))
            .chain(self.cloudtrail.iter().map(|j| ("[[cloudtrail]]", j.name(), j.problem())));
        for (section, name, problem) in snapshot_jobs {
            let at = format!("{origin}: {section} ({name})");
            if let Some(problem) = problem {
                return Err(Error::invalid_config(format!("{at}: {problem}")));
            }
            if !names.insert(name.clone()) {
                return Err(Error::invalid_config(format!(
                    "{at}: the job name {name} is used twice: give each job its own name"
                )));
            }
        }
        let mut targets = std::collections::BTreeMap::new();
        for (i, job) in self.dynamodb.iter().enumerate() {
            let at = format!("{origin}: [[dynamodb]] #{} ({})", i + 1, job.name());
            validate_dynamodb(job, &at)?;
            if job.incremental()
                && job.dest_bucket.is_some()
                && self.escrow.manifest_bucket.is_none()
            {
                return Err(Error::invalid_config(format!(
                    "{at}: mode = \"native-incremental\" needs [escrow] manifest_bucket: a run \
                     exports the changes since the newest generation a run manifest records, and \
                     trusts no other record of it; set manifest_bucket, or use mode = \
                     \"native-export\""
                )));
            }
            let target = match (&job.dest_table, &job.dest_bucket) {
                (Some(t), _) => format!("escrow table {t}"),
                (None, b) => format!(
                    "s3://{}/{}{}/",
                    b.as_deref().unwrap_or_default(),
                    job.dest_prefix.as_deref().unwrap_or_default(),
                    job.source_table
                ),
            };
            if let Some(other) = targets.insert(target.clone(), job.name()) {
                return Err(Error::invalid_config(format!(
                    "{at}: jobs {other} and {} both write {target}: each job needs its own \
                     destination, or their items mix",
                    job.name()
                )));
            }
            if !names.insert(job.name()) {
                return Err(Error::invalid_config(format!(
                    "{at}: the job name {} is used twice: give each job its own name",
                    job.name()
                )));
            }
        }
        for (i, job) in self.s3.iter().enumerate() {
            let at = format!("{origin}: [[s3]] #{} ({})", i + 1, job.name());
            if job.source_bucket.trim().is_empty() || job.dest_bucket.trim().is_empty() {
                return Err(Error::invalid_config(format!(
                    "{at}: source_bucket and dest_bucket must both be set"
                )));
            }
            if job.source_bucket == job.dest_bucket {
                return Err(Error::invalid_config(format!(
                    "{at}: source_bucket and dest_bucket are both {}: escrow copies go to a bucket \
                     in the escrow account, never into the source",
                    job.source_bucket
                )));
            }
            if job.concurrency == 0 || job.part_concurrency == Some(0) {
                return Err(Error::invalid_config(format!(
                    "{at}: concurrency and part_concurrency must be at least 1"
                )));
            }
            if let Some(keys) = &job.shard_boundaries
                && let Err(problem) = escrow_sync_s3::Boundaries::new(keys.clone())
            {
                return Err(Error::invalid_config(format!("{at}: {problem}")));
            }
            if let Some(problem) = job.object_lock.as_ref().and_then(ObjectLockConfig::problem) {
                return Err(Error::invalid_config(format!("{at}: {problem}")));
            }
            if job.mode == Some(S3Mode::ServerSide) && self.endpoints_differ() {
                return Err(Error::invalid_config(format!(
                    "{at}: mode = \"server-side\" needs both buckets behind one endpoint, but \
                     [primary] and [escrow] have different endpoint_url: use mode = \"stream\" \
                     (or leave mode out)"
                )));
            }
            if job.versions && self.streams(job) {
                return Err(Error::invalid_config(format!(
                    "{at}: versions = true copies server-side only, but this job streams (mode = \
                     \"stream\" or different endpoint_url); drop one of them"
                )));
            }
            if job.max_requests_per_second == Some(0) {
                return Err(Error::invalid_config(format!(
                    "{at}: max_requests_per_second must be at least 1"
                )));
            }
            if let Some(problem) = percent_problem("max_change_percent", job.max_change_percent) {
                return Err(Error::invalid_config(format!("{at}: {problem}")));
            }
            if let Some(p) = job.max_parts
                && !(1..=10_000).contains(&p)
            {
                return Err(Error::invalid_config(format!(
                    "{at}: max_parts is {p}; S3 allows 1 to 10000"
                )));
            }
            if let Some(ByteSize(p)) = job.part_size
                && !(5 << 20..=5 << 30).contains(&p)
            {
                return Err(Error::invalid_config(format!(
                    "{at}: part_size is {p} bytes; S3 parts are 5 MiB to 5 GiB"
                )));
            }
            if let Some(problem) = memory_problem(job, self.streams(job)) {
                return Err(Error::invalid_config(format!("{at}: {problem}")));
            }
            if let Some(problem) = job.batch_problem(&self.escrow, self.streams(job)) {
                return Err(Error::invalid_config(format!("{at}: {problem}")));
            }
            if !names.insert(job.name()) {
                return Err(Error::invalid_config(format!(
                    "{at}: the job name {} is used twice: give each job its own name",
                    job.name()
                )));
            }
        }
        self.check_places(origin)
    }

    /// Every place in escrow the config writes: each job's destination and
    /// the other prefixes and tables it keeps there, and the run manifests.
    /// Each entry names its owner (a job, or `[escrow]`) and what it is.
    pub fn escrow_places(&self) -> Vec<(String, &'static str, Place)> {
        let objects = |bucket: &str, prefix: &str| Place::Objects {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        };
        let mut places = Vec::new();
        if let Some(bucket) = &self.escrow.manifest_bucket {
            let prefix = self
                .escrow
                .manifest_prefix
                .as_deref()
                .unwrap_or(escrow_sync_core::manifest::DEFAULT_PREFIX);
            places.push(("[escrow]".to_string(), "run manifests", objects(bucket, prefix)));
        }
        for job in &self.s3 {
            places.push((job.name(), "copies", objects(&job.dest_bucket, &job.dest_prefix)));
            // Batch Operations manifests, reports and records of checked
            // copies: a copied primary key must never land on them.
            if let (true, Some(bucket)) = (job.engine() != S3Engine::Direct, &job.batch_bucket) {
                let prefix =
                    job.batch_prefix.as_deref().unwrap_or(escrow_sync_s3::DEFAULT_BATCH_PREFIX);
                places.push((job.name(), "batch files", objects(bucket, prefix)));
            }
        }
        for job in &self.cloudtrail {
            places.push((job.name(), "log copies", objects(&job.dest_bucket, &job.dest_prefix)));
        }
        for job in &self.dynamodb {
            // Every DynamoDB job checkpoints (export generations too).
            let checkpoints = job
                .checkpoint_table
                .clone()
                .unwrap_or_else(|| escrow_sync_core::layout::CHECKPOINT_TABLE.to_string());
            places.push((job.name(), "checkpoint table", Place::Table(checkpoints)));
            if let Some(table) = &job.dest_table {
                places.push((job.name(), "escrow table", Place::Table(table.clone())));
                if let Some(bucket) = &job.history_bucket {
                    let prefix = format!("{}{table}/", job.history_prefix());
                    places.push((job.name(), "item history", objects(bucket, &prefix)));
                    if let Some(staging) = job.staging_prefix() {
                        // native-incremental: DynamoDB's exports, beside
                        // (not under) the history.
                        let prefix = format!("{staging}{}/", job.source_table);
                        places.push((
                            job.name(),
                            "native export staging",
                            objects(bucket, &prefix),
                        ));
                    }
                }
            }
            if let Some(bucket) = &job.dest_bucket {
                let prefix = format!(
                    "{}{}/",
                    job.dest_prefix.as_deref().unwrap_or_default(),
                    job.source_table
                );
                places.push((job.name(), "export generations", objects(bucket, &prefix)));
                if let Some(staging) = job.staging_prefix() {
                    let prefix = format!("{staging}{}/", job.source_table);
                    places.push((job.name(), "native export staging", objects(bucket, &prefix)));
                }
            }
        }
        places
    }

    /// Refuses two places in escrow that overlap: one job's copies must
    /// never land on another's, nor on run manifests (which `verify
    /// --offline` and `restore` trust). Jobs share a checkpoint table by
    /// design (rows are keyed by job).
    fn check_places(&self, origin: &str) -> Result<()> {
        let places = self.escrow_places();
        for (i, (owner_a, what_a, a)) in places.iter().enumerate() {
            for (owner_b, what_b, b) in &places[i + 1..] {
                let shared_checkpoints =
                    *what_a == "checkpoint table" && *what_b == "checkpoint table";
                // Each job pair keeps its batch files in a folder of its own.
                let shared_batch = *what_a == "batch files" && *what_b == "batch files";
                if shared_checkpoints || shared_batch || !a.overlaps(b) {
                    continue;
                }
                let same_job = owner_a == owner_b;
                if same_job && what_a == what_b {
                    continue;
                }
                return Err(Error::invalid_config(format!(
                    "{origin}: the {what_a} of {owner_a} ({a}) and the {what_b} of {owner_b} \
                     ({b}) overlap in escrow: one could overwrite or be read as the other; give \
                     each its own bucket, table or a dest_prefix that is not a prefix of the other"
                )));
            }
        }
        Ok(())
    }

    /// Whether the primary and the escrow are on different endpoints (an
    /// escrow outside AWS): server-side copies are then impossible.
    /// Each side without `endpoint_url` is on the environment's endpoint
    /// (`AWS_ENDPOINT_URL`, else AWS): the primary never follows the
    /// escrow's `endpoint_url`.
    pub fn endpoints_differ(&self) -> bool {
        self.primary.endpoint_url != self.escrow.endpoint_url
    }

    /// Whether `job` streams bytes instead of copying server-side.
    pub fn streams(&self, job: &S3Job) -> bool {
        job.mode == Some(S3Mode::Stream) || self.endpoints_differ()
    }

    /// The escrow account settings.
    pub fn escrow_account(&self) -> EscrowAccount {
        let e = &self.escrow;
        EscrowAccount::from_environment()
            .with_region(e.region.clone())
            .with_profile(e.profile.clone())
            .with_role_arn(e.role_arn.clone())
            .with_external_id(e.external_id.clone())
            .with_session_name(e.session_name.clone())
            .with_duration_seconds(e.duration_seconds)
            .with_account_id(e.account_id.clone())
            .with_endpoint_url(e.endpoint_url.clone())
            .with_allow_same_account(e.allow_same_account)
    }

    /// The primary account settings.
    pub fn primary_account(&self) -> PrimaryAccount {
        let p = &self.primary;
        PrimaryAccount::new(p.account_id.clone())
            .with_role_arn(p.role_arn.clone())
            .with_profile(p.profile.clone())
            .with_external_id(p.external_id.clone())
            .with_region(p.region.clone())
            .with_endpoint_url(p.endpoint_url.clone())
    }

    /// Every job, S3 first, in config order.
    pub fn jobs(&self) -> Vec<JobRef<'_>> {
        self.s3
            .iter()
            .map(JobRef::S3)
            .chain(self.dynamodb.iter().map(JobRef::DynamoDb))
            .chain(self.ec2.iter().map(JobRef::Ec2))
            .chain(self.rds.iter().map(JobRef::Rds))
            .chain(self.redshift.iter().map(JobRef::Redshift))
            .chain(self.cloudtrail.iter().map(JobRef::CloudTrail))
            .collect()
    }

    /// The jobs to run: all, or the one named `job`.
    pub fn select(&self, job: Option<&str>) -> Result<Vec<JobRef<'_>>> {
        match job {
            None => Ok(self.jobs()),
            Some(name) => {
                let found: Vec<_> = self.jobs().into_iter().filter(|j| j.name() == name).collect();
                if found.is_empty() {
                    let known: Vec<_> = self.jobs().iter().map(JobRef::name).collect();
                    return Err(Error::invalid_config(format!(
                        "no job named {name:?}: the config has {}",
                        known.join(", ")
                    )));
                }
                Ok(found)
            }
        }
    }
}

/// What is wrong with the keys every snapshot job shares, if anything.
fn check_common(
    include: Option<usize>,
    allowed: &[&str],
    max_in_flight: Option<usize>,
    reencrypt_key_id: Option<&String>,
    retention: escrow_sync_core::Retention,
) -> Option<String> {
    if include == Some(0) {
        return Some(format!("include is empty: list some of {allowed:?}"));
    }
    if max_in_flight == Some(0) {
        return Some("max_in_flight must be at least 1".into());
    }
    if let Some(key) = reencrypt_key_id
        && (key.trim().is_empty() || key.contains("alias/aws/"))
    {
        return Some(format!(
            "reencrypt_key_id {key:?} must be a customer-managed key of the primary (an \
             AWS-managed key cannot be shared)"
        ));
    }
    let zero = [
        ("keep_daily", retention.keep_daily),
        ("keep_weekly", retention.keep_weekly),
        ("keep_monthly", retention.keep_monthly),
    ];
    if let Some((key, _)) = zero.iter().find(|(_, v)| *v == Some(0)) {
        return Some(format!("{key} = 0 keeps nothing by that rule: remove it or set 1 or more"));
    }
    None
}

/// What is wrong with a snapshot job's mass-change and prune limits.
fn check_limits(
    max_change_percent: u8,
    max_new_copies: u32,
    max_delete_percent: u8,
) -> Option<String> {
    for (key, value) in
        [("max_change_percent", max_change_percent), ("max_delete_percent", max_delete_percent)]
    {
        if !(1..=100).contains(&value) {
            return Some(format!(
                "{key} = {value} is out of range: set 1 to 100 (100 turns the limit off)"
            ));
        }
    }
    if max_new_copies == 0 {
        return Some(
            "max_new_copies_per_source = 0 would copy nothing: set 1 or more (or \
             max_change_percent = 100 to turn the breaker off)"
                .into(),
        );
    }
    None
}

fn validate_ec2(job: &Ec2Job) -> Option<String> {
    if let Some(p) =
        check_limits(job.max_change_percent, job.max_new_copies_per_source, job.max_delete_percent)
    {
        return Some(p);
    }
    if let Some(p) = check_common(
        job.include.as_ref().map(Vec::len),
        Ec2Include::WORDS,
        job.max_in_flight,
        job.reencrypt_key_id.as_ref(),
        job.retention(),
    ) {
        return Some(p);
    }
    if let Some(problem) = job.lock.as_ref().and_then(SnapshotLockConfig::problem) {
        return Some(problem);
    }
    if let Some(id) = job.ids.iter().find(|i| !i.starts_with("snap-") && !i.starts_with("ami-")) {
        return Some(format!("ids: {id:?} is not an AMI (ami-...) or EBS snapshot id (snap-...)"));
    }
    let (images, snapshots) = (job.includes("images"), job.includes("snapshots"));
    if let Some(id) = job
        .ids
        .iter()
        .find(|i| (i.starts_with("ami-") && !images) || (i.starts_with("snap-") && !snapshots))
    {
        return Some(format!(
            "ids: {id:?} is of a type include leaves out: add it to include or drop the id"
        ));
    }
    None
}

fn validate_rds(job: &RdsJob) -> Option<String> {
    if let Some(p) =
        check_limits(job.max_change_percent, job.max_new_copies_per_source, job.max_delete_percent)
    {
        return Some(p);
    }
    check_common(
        job.include.as_ref().map(Vec::len),
        RdsInclude::WORDS,
        job.max_in_flight,
        job.reencrypt_key_id.as_ref(),
        job.retention(),
    )
}

fn validate_redshift(job: &RedshiftJob) -> Option<String> {
    if let Some(p) =
        check_limits(job.max_change_percent, job.max_new_copies_per_source, job.max_delete_percent)
    {
        return Some(p);
    }
    if let Some(p) = check_common(None, &[], job.max_in_flight, None, job.retention()) {
        return Some(p);
    }
    if !job.independent_copy && job.retention().is_set() {
        return Some(
            "keep_* needs independent_copy = true: without it escrow holds only shares, \
             nothing of its own to prune"
                .into(),
        );
    }
    None
}

fn validate_dynamodb(job: &DynamoDbJob, at: &str) -> Result<()> {
    let bad = |m: String| Err(Error::invalid_config(format!("{at}: {m}")));
    if job.source_table.trim().is_empty() {
        return bad("source_table must be set".into());
    }
    match (&job.dest_table, &job.dest_bucket) {
        (Some(_), Some(_)) => {
            return bad(
                "dest_table and dest_bucket are both set: choose an escrow table (dest_table) \
                 or export generations in an escrow bucket (dest_bucket)"
                    .into(),
            );
        }
        (None, None) => {
            return bad(
                "set dest_table (an escrow table) or dest_bucket (export generations)".into()
            );
        }
        (Some(t), None) if t.trim().is_empty() => return bad("dest_table is empty".into()),
        (None, Some(b)) if b.trim().is_empty() => return bad("dest_bucket is empty".into()),
        _ => {}
    }
    if job.dest_prefix.is_some() && job.dest_bucket.is_none() {
        return bad("dest_prefix goes with dest_bucket; an escrow table has no prefix".into());
    }
    if job.dest_table.is_none() && (job.history_bucket.is_some() || job.history_prefix.is_some()) {
        return bad(
            "history_bucket and history_prefix go with dest_table: export generations keep \
             their own history, one generation per run"
                .into(),
        );
    }
    if job.history_bucket.as_deref().is_some_and(|b| b.trim().is_empty()) {
        return bad("history_bucket is empty: name a versioned escrow bucket".into());
    }
    if job.history_prefix.as_deref().is_some_and(|p| !p.is_empty() && !p.ends_with('/')) {
        return bad(format!(
            "history_prefix {:?} must end with '/' (or be empty)",
            job.history_prefix.as_deref().unwrap_or_default()
        ));
    }
    if job.native_export() && !job.incremental() && job.dest_bucket.is_none() {
        return bad("mode = \"native-export\" writes into an escrow bucket: set dest_bucket and \
             dest_prefix instead of dest_table (an escrow table job exports only its changes \
             with mode = \"native-incremental\" and history_bucket)"
            .into());
    }
    if job.incremental() && job.dest_bucket.is_none() && job.history_bucket.is_none() {
        return bad("mode = \"native-incremental\" on an escrow table job needs history_bucket: \
             DynamoDB's incremental exports are staged under <history_prefix>.staging/ in that \
             escrow-owned, versioned bucket, and every state a change replaces is kept there; \
             set history_bucket (or dest_bucket and dest_prefix instead of dest_table for export \
             generations)"
            .into());
    }
    if let Some(every) = &job.full_export_every {
        if !job.incremental() || job.dest_bucket.is_none() {
            return bad(
                "full_export_every goes with mode = \"native-incremental\" and dest_bucket (a \
                 chain of export generations); an escrow table job keeps no chain: remove it"
                    .into(),
            );
        }
        if let Err(why) = parse_duration("full_export_every", every) {
            return bad(why);
        }
    }
    if let Some(staging) = &job.staging_prefix {
        if !job.native_export() {
            return bad(
                "staging_prefix goes with mode = \"native-export\" or \"native-incremental\" \
                 (where DynamoDB writes its exports); remove it"
                    .into(),
            );
        }
        if staging.is_empty() || !staging.ends_with('/') {
            return bad(format!(
                "staging_prefix {staging:?} must be a key prefix ending with '/', apart from the \
                 generations (default \"<dest_prefix>.staging/\")"
            ));
        }
    }
    if job.dest_bucket.is_none()
        && (job.file_size.is_some() || job.object_lock.is_some() || job.allow_unversioned_dest)
    {
        return bad(
            "file_size, object_lock and allow_unversioned_dest go with dest_bucket (export \
             generations)"
                .into(),
        );
    }
    if let Some(problem) = job.object_lock.as_ref().and_then(ObjectLockConfig::problem) {
        return bad(problem);
    }
    if job.file_size == Some(ByteSize(0)) {
        return bad("file_size must be at least 1 byte".into());
    }
    if !(1..=100).contains(&job.read_capacity_percent) {
        return bad(format!(
            "read_capacity_percent is {}; use 1 to 100 (percent of the table's read capacity)",
            job.read_capacity_percent
        ));
    }
    if let Some(n) = job.segments
        && !(1..=1_000_000).contains(&n)
    {
        return bad(format!("segments is {n}; DynamoDB allows 1 to 1000000"));
    }
    if let Some(problem) = percent_problem("max_change_percent", job.max_change_percent) {
        return bad(problem);
    }
    if job.workers == 0 {
        return bad("workers must be at least 1".into());
    }
    Ok(())
}

/// The shortest lease a config may ask for, in seconds.
pub const MIN_LEASE_TTL_SECONDS: u64 = 10;
/// `[escrow] recycle_bin_days` when not set.
pub const DEFAULT_RECYCLE_BIN_DAYS: u32 = 14;
/// The longest `[escrow] recycle_bin_days` (Recycle Bin's limit).
pub const MAX_RECYCLE_BIN_DAYS: u32 = 365;
/// The longest lease a config may ask for, in seconds (a day).
pub const MAX_LEASE_TTL_SECONDS: u64 = 86_400;

/// Where a job keeps its lease while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeasePlace {
    /// The lease object `key` in the escrow bucket `bucket`.
    Object {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// No lease: overlapping runs of the job are not prevented. The text
    /// says why and how to get one.
    Nowhere(String),
}

impl Config {
    /// `[escrow] recycle_bin_days`, or [`DEFAULT_RECYCLE_BIN_DAYS`].
    pub fn recycle_bin_days(&self) -> u32 {
        self.escrow.recycle_bin_days.unwrap_or(DEFAULT_RECYCLE_BIN_DAYS)
    }

    /// How long a lease lasts unless renewed.
    pub fn lease_ttl(&self) -> std::time::Duration {
        self.escrow
            .lease_ttl_seconds
            .map(std::time::Duration::from_secs)
            .unwrap_or(escrow_sync_s3::DEFAULT_LEASE_TTL)
    }

    /// Where `job` keeps its lease: `<manifest_prefix>leases/<job>.json` in
    /// the manifest bucket when there is one; otherwise
    /// `.escrow-sync/leases/<job>.json` at the root of the job's own escrow
    /// bucket (S3, CloudTrail and export jobs), unless a job of the config
    /// copies keys there; otherwise nowhere.
    pub fn lease_place(&self, job: &JobRef<'_>) -> LeasePlace {
        let name = job.name();
        let fix = "set [escrow] manifest_bucket (leases are kept under \
                   <manifest_prefix>leases/ there)";
        let (bucket, key) = match &self.escrow.manifest_bucket {
            Some(bucket) => {
                let prefix = self
                    .escrow
                    .manifest_prefix
                    .as_deref()
                    .unwrap_or(escrow_sync_core::manifest::DEFAULT_PREFIX);
                (bucket.clone(), format!("{prefix}leases/{name}.json"))
            }
            None => {
                let own = match job {
                    JobRef::S3(j) => Some(&j.dest_bucket),
                    JobRef::CloudTrail(j) => Some(&j.dest_bucket),
                    JobRef::DynamoDb(j) => j.dest_bucket.as_ref(),
                    JobRef::Ec2(_) | JobRef::Rds(_) | JobRef::Redshift(_) => None,
                };
                let Some(bucket) = own else {
                    return LeasePlace::Nowhere(format!(
                        "job {name} holds no lease: it has no escrow bucket and [escrow] \
                         manifest_bucket is not set, so overlapping runs of it (a cron overlap) \
                         are not prevented; {fix}"
                    ));
                };
                (bucket.clone(), format!("{}{name}.json", escrow_sync_s3::BUCKET_LEASE_PREFIX))
            }
        };
        if let Some(other) = self.copies_into(&bucket, &key) {
            return LeasePlace::Nowhere(format!(
                "job {name} holds no lease: job {other} copies keys into s3://{bucket}/ where its \
                 lease {key} would live, so overlapping runs of {name} are not prevented; give \
                 {other} a dest_prefix, or {fix} in another bucket"
            ));
        }
        LeasePlace::Object { bucket, key }
    }

    /// The name of a job whose escrow copies can land on `bucket`/`key`.
    fn copies_into(&self, bucket: &str, key: &str) -> Option<String> {
        let s3 = self
            .s3
            .iter()
            .filter(|j| j.dest_bucket == bucket)
            .find(|j| key.starts_with(&format!("{}{}", j.dest_prefix, j.prefix)))
            .map(S3Job::name);
        let exports = self
            .dynamodb
            .iter()
            .filter(|j| j.dest_bucket.as_deref() == Some(bucket))
            .find(|j| {
                let prefix = j.dest_prefix.as_deref().unwrap_or_default();
                key.starts_with(&format!("{prefix}{}/", j.source_table))
            })
            .map(DynamoDbJob::name);
        // A trail's logs land under `<dest_prefix><log bucket>/`, and bucket
        // names start with a lowercase letter or a digit.
        let trails = self
            .cloudtrail
            .iter()
            .filter(|j| j.dest_bucket == bucket)
            .find(|j| {
                key.strip_prefix(j.dest_prefix.as_str()).is_some_and(|rest| {
                    rest.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                })
            })
            .map(CloudTrailJob::name);
        s3.or(exports).or(trails)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_of_a_kind_this_build_lacks_is_refused_naming_the_feature() {
        let text = "[escrow]\nregion = \"us-east-1\"\n[primary]\naccount_id = \"111111111111\"\n\
                    [[s3]]\nsource_bucket = \"a\"\ndest_bucket = \"b\"\n[[ec2]]\n";
        let config = Config::parse(text, "c").unwrap();
        assert!(config.check_built("c", &["s3", "ec2"]).is_ok());
        let err = config.check_built("c", &["s3", "dynamodb"]).unwrap_err();
        assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
        let text = err.to_string();
        assert!(text.contains("1 [[ec2]] job(s)"), "{text}");
        assert!(text.contains("has: s3, dynamodb"), "{text}");
        assert!(text.contains("`ec2` feature"), "{text}");
    }

    const GOOD: &str = r#"
[escrow]
region = "us-east-1"
role_arn = "arn:aws:iam::222222222222:role/escrow-operator"

[primary]
account_id = "111111111111"
role_arn = "arn:aws:iam::111111111111:role/escrow-reader"

[[s3]]
source_bucket = "prod-assets"
dest_bucket = "escrow-prod-assets"

[[s3]]
name = "logs"
source_bucket = "prod-logs"
dest_bucket = "escrow-logs"
prefix = "2026/"
dest_prefix = "logs/"
concurrency = 8
"#;

    /// `GOOD`'s header with `rest` after it.
    fn with(rest: &str) -> Result<Config> {
        let head = GOOD.split("[[s3]]").next().unwrap();
        Config::parse(&format!("{head}{rest}"), "escrow.toml")
    }

    #[test]
    fn batch_files_under_copies_are_refused_and_may_be_shared_between_jobs() {
        let job = |name: &str, batch_prefix: &str| {
            format!(
                "[[s3]]\nname = \"{name}\"\nsource_bucket = \"src-{name}\"\ndest_bucket = \
                 \"esc\"\ndest_prefix = \"{name}/\"\nengine = \"batch-operations\"\n\
                 batch_bucket = \"esc\"\nbatch_prefix = \"{batch_prefix}\"\n"
            )
        };
        let head = "[escrow]\naccount_id = \"222222222222\"\nbatch_role_arn = \
                    \"arn:aws:iam::222222222222:role/b\"\n[primary]\naccount_id = \"111111111111\"\n";
        let ok = format!("{head}{}{}", job("a", "batch/"), job("b", "batch/"));
        Config::parse(&ok, "t.toml").unwrap();
        let bad = format!("{head}{}", job("a", "a/batch/"));
        let err = Config::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(err.contains("batch files") && err.contains("overlap"), "{err}");
        let no_role = format!(
            "[escrow]\naccount_id = \"222222222222\"\n[primary]\naccount_id = \"111111111111\"\n{}",
            job("a", "batch/")
        );
        let err = Config::parse(&no_role, "t.toml").unwrap_err().to_string();
        assert!(err.contains("batch_role_arn"), "{err}");
    }

    #[test]
    fn batch_engine_needs_a_dest_prefix_ending_in_one_slash() {
        let job = |prefix: &str| {
            format!(
                "[escrow]\naccount_id = \"222222222222\"\nbatch_role_arn = \
                 \"arn:aws:iam::222222222222:role/b\"\n[primary]\naccount_id = \"111111111111\"\n\
                 [[s3]]\nname = \"a\"\nsource_bucket = \"src\"\ndest_bucket = \"esc\"\n\
                 dest_prefix = \"{prefix}\"\nengine = \"batch-operations\"\n\
                 batch_bucket = \"esc-batch\"\n"
            )
        };
        for ok in ["", "a/", "a/b/"] {
            Config::parse(&job(ok), "t.toml").unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in ["a", "a//", "/", "a/b"] {
            let err = Config::parse(&job(bad), "t.toml").unwrap_err();
            assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig, "{bad:?}");
            let text = err.to_string();
            assert!(text.contains("dest_prefix") && text.contains("exactly one"), "{text}");
        }
    }

    #[test]
    fn escrow_places_that_overlap_are_refused_whatever_their_kinds() {
        let job = |name: &str, bucket: &str, prefix: &str| {
            format!(
                "[[s3]]\nname = \"{name}\"\nsource_bucket = \"src-{name}\"\ndest_bucket = \
                 \"{bucket}\"\ndest_prefix = \"{prefix}\"\n"
            )
        };
        // Side by side in one bucket: fine.
        assert!(with(&format!("{}{}", job("a", "esc", "a/"), job("b", "esc", "b/"))).is_ok());
        // One inside the other: refused, naming both.
        let e = with(&format!("{}{}", job("a", "esc", "a/"), job("b", "esc", "a/b/")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlap") && e.contains("a/b/") && e.contains(" a "), "{e}");
        // A job writing over the run manifests.
        let head = GOOD.split("[[s3]]").next().unwrap();
        let head = head.replacen("[escrow]\n", "[escrow]\nmanifest_bucket = \"esc\"\n", 1);
        let e = Config::parse(&format!("{head}{}", job("a", "esc", "")), "escrow.toml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("run manifests"), "{e}");
        // An export generation prefix under an S3 job's copies, and a table
        // job writing into another's checkpoint table.
        let export = "[[dynamodb]]\nsource_table = \"orders\"\ndest_bucket = \"esc\"\n\
                      dest_prefix = \"a/\"\n";
        let e = with(&format!("{}{export}", job("a", "esc", "a/"))).unwrap_err().to_string();
        assert!(e.contains("export generations"), "{e}");
        let tables = "[[dynamodb]]\nsource_table = \"t1\"\ndest_table = \"e1\"\n\
                      [[dynamodb]]\nsource_table = \"t2\"\ndest_table = \"escrow-sync-checkpoints\"\n";
        let e = with(tables).unwrap_err().to_string();
        assert!(e.contains("checkpoint table"), "{e}");
        // Two table jobs share the default checkpoint table by design.
        let shared = "[[dynamodb]]\nsource_table = \"t1\"\ndest_table = \"e1\"\n\
                      [[dynamodb]]\nsource_table = \"t2\"\ndest_table = \"e2\"\n";
        assert!(with(shared).is_ok());
        // An export job checkpoints too: its checkpoint table is no one's
        // escrow table.
        let export = "[[dynamodb]]\nsource_table = \"t1\"\ndest_table = \"e1\"\n\
                      [[dynamodb]]\nsource_table = \"t2\"\ndest_bucket = \"b\"\n\
                      checkpoint_table = \"e1\"\n";
        let e = with(export).unwrap_err().to_string();
        assert!(e.contains("checkpoint table") && e.contains("escrow table"), "{e}");
    }

    #[test]
    fn native_exports_stage_apart_from_the_generations() {
        let native = |extra: &str| {
            format!(
                "[[dynamodb]]\nsource_table = \"orders\"\ndest_bucket = \"esc\"\n\
                 dest_prefix = \"dynamodb/\"\nmode = \"native-export\"\n{extra}"
            )
        };
        let c = with(&native("")).unwrap();
        assert_eq!(c.dynamodb[0].staging_prefix().as_deref(), Some("dynamodb/.staging/"));
        let places = c.escrow_places();
        assert!(
            places.iter().any(|(_, what, p)| *what == "native export staging"
                && *p
                    == Place::Objects {
                        bucket: "esc".into(),
                        prefix: "dynamodb/.staging/orders/".into()
                    }),
            "{places:?}"
        );
        // Two native export jobs of one prefix stage side by side.
        let two = format!(
            "{}{}",
            native(""),
            native("name = \"b\"").replace("\"orders\"", "\"payments\"")
        );
        assert!(with(&two).is_ok());
        // Staging over the job's own generations, or another job's copies:
        // refused.
        let e = with(&native("staging_prefix = \"dynamodb/\"\n")).unwrap_err().to_string();
        assert!(e.contains("native export staging") && e.contains("overlap"), "{e}");
        let s3 = "[[s3]]\nname = \"c\"\nsource_bucket = \"src\"\ndest_bucket = \"esc\"\n\
                  dest_prefix = \"stage/\"\n";
        let e = with(&format!("{s3}{}", native("staging_prefix = \"stage/\"\n")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("native export staging"), "{e}");
        // Only native exports stage; a prefix ends with '/'.
        let scan = native("").replace("mode = \"native-export\"\n", "staging_prefix = \"s/\"\n");
        let e = with(&scan).unwrap_err().to_string();
        assert!(e.contains("staging_prefix goes with mode"), "{e}");
        let e = with(&native("staging_prefix = \"s\"\n")).unwrap_err().to_string();
        assert!(e.contains("staging_prefix \"s\" must"), "{e}");
    }

    #[test]
    fn max_change_percent_is_a_share() {
        let job = "[[s3]]\nsource_bucket = \"a\"\ndest_bucket = \"b\"\n";
        assert_eq!(with(job).unwrap().s3[0].max_change_percent, 25);
        let e = with(&format!("{job}max_change_percent = 0\n")).unwrap_err().to_string();
        assert!(e.contains("max_change_percent is 0"), "{e}");
        assert!(with(&format!("{job}max_change_percent = 101\n")).is_err());
        assert!(with(&format!("{job}max_change_percent = 100\n")).is_ok());
    }

    #[test]
    fn parses_the_documented_shape() {
        let c = Config::parse(GOOD, "escrow.toml").unwrap();
        assert_eq!(c.s3.len(), 2);
        assert_eq!(c.s3[0].name(), "s3:prod-assets");
        assert_eq!(c.s3[0].concurrency, 64);
        assert_eq!(c.s3[1].dest_prefix, "logs/");
        assert_eq!(c.select(Some("logs")).unwrap().len(), 1);
        let err = c.select(Some("nope")).unwrap_err().to_string();
        assert!(
            err.contains("no job named \"nope\": the config has s3:prod-assets, logs"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let text = GOOD.replace("concurrency = 8", "concurency = 8");
        let err = Config::parse(&text, "escrow.toml").unwrap_err().to_string();
        assert!(err.contains("unknown field `concurency`"), "{err}");
        assert!(err.contains("line 20"), "{err}");
        assert!(err.starts_with("invalid config: escrow.toml"), "{err}");

        let text = GOOD.replace("[escrow]", "[escrow]\nregoin = \"x\"");
        let err = Config::parse(&text, "escrow.toml").unwrap_err().to_string();
        assert!(err.contains("unknown field `regoin`") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn s3_tag_modes_parse_and_default_to_copy() {
        use escrow_sync_s3::TagMode;
        let c = Config::parse(GOOD, "c").unwrap();
        assert_eq!(c.s3[1].tag_mode(), TagMode::Copy);
        for (word, mode) in
            [("copy", TagMode::Copy), ("explicit", TagMode::Explicit), ("none", TagMode::None)]
        {
            let text = GOOD.replace("concurrency = 8", &format!("tags = \"{word}\""));
            assert_eq!(Config::parse(&text, "c").unwrap().s3[1].tag_mode(), mode);
        }
        let bad = GOOD.replace("concurrency = 8", "tags = \"replace\"");
        let err = Config::parse(&bad, "c").unwrap_err().to_string();
        assert!(err.contains("tags \"replace\" is not one of"), "{err}");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("5 GiB"), Ok(5 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("64mb").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("lots").is_err());
        let text = GOOD.replace(
            "concurrency = 8",
            "multipart_threshold = \"8MiB\"\npart_size = 6291456\nmax_parts = 500",
        );
        let c = Config::parse(&text, "c").unwrap();
        assert_eq!(c.s3[1].multipart_threshold, Some(ByteSize(8 << 20)));
        assert_eq!(c.s3[1].part_size, Some(ByteSize(6 << 20)));
        let bad = GOOD.replace("concurrency = 8", "part_size = \"1MiB\"");
        assert!(Config::parse(&bad, "c").unwrap_err().to_string().contains("5 MiB to 5 GiB"));
        let bad = GOOD.replace("concurrency = 8", "multipart_threshold = \"8 parsecs\"");
        let err = Config::parse(&bad, "c").unwrap_err().to_string();
        assert!(err.contains("unknown size unit") && err.contains("line 20"), "{err}");
    }

    #[test]
    fn native_incremental_jobs_parse_and_need_a_bucket_and_run_manifests() {
        let base = GOOD.split("[[s3]]").next().unwrap().to_string();
        let base = base.replacen("[escrow]\n", "[escrow]\nmanifest_bucket = \"m\"\n", 1);
        let job = "[[dynamodb]]\nsource_table = \"orders\"\ndest_bucket = \"b\"\n\
                   dest_prefix = \"dynamodb/\"\nmode = \"native-incremental\"\n";
        let c = Config::parse(&format!("{base}{job}"), "c").unwrap();
        let j = &c.dynamodb[0];
        assert!(j.incremental() && j.native_export());
        assert_eq!(j.staging_prefix().as_deref(), Some("dynamodb/.staging/"));
        assert_eq!(j.full_export_every(), None, "the default is the library's");
        let every = format!("{base}{job}full_export_every = \"2d\"\n");
        let c = Config::parse(&every, "c").unwrap();
        assert_eq!(
            c.dynamodb[0].full_export_every(),
            Some(std::time::Duration::from_secs(172_800))
        );
        let e = Config::parse(&every.replace("\"2d\"", "\"soon\""), "c").unwrap_err();
        assert!(e.to_string().contains("full_export_every is \"soon\""), "{e}");
        let e =
            Config::parse(&every.replace("native-incremental", "native-export"), "c").unwrap_err();
        assert!(e.to_string().contains("full_export_every goes with"), "{e}");
        // An escrow table job: it needs a history bucket to stage in.
        let table = job
            .replace("dest_bucket = \"b\"\ndest_prefix = \"dynamodb/\"\n", "dest_table = \"e\"\n");
        let e = Config::parse(&format!("{base}{table}"), "c").unwrap_err();
        assert_eq!(e.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
        let e = e.to_string();
        assert!(
            e.contains("mode = \"native-incremental\"")
                && e.contains("needs history_bucket")
                && e.contains("set history_bucket"),
            "{e}"
        );
        // With one, it stages beside the history, and needs no run
        // manifests (its watermark is kept in the checkpoint table).
        let plain = GOOD.split("[[s3]]").next().unwrap();
        let table = format!("{table}history_bucket = \"h\"\n");
        let c = Config::parse(&format!("{plain}{table}"), "c").unwrap();
        let j = &c.dynamodb[0];
        assert_eq!(j.staging_prefix().as_deref(), Some("dynamodb-history/.staging/"));
        assert_eq!(j.staging_bucket(), Some("h"));
        let places = c.escrow_places();
        assert!(
            places.iter().any(|(_, what, p)| *what == "native export staging"
                && p.to_string().contains("dynamodb-history/.staging/orders/")),
            "{places:?}"
        );
        // native-export stays an export job's mode.
        let native = table.replace("native-incremental", "native-export");
        let e = Config::parse(&format!("{plain}{native}"), "c").unwrap_err().to_string();
        assert!(e.contains("set dest_bucket") && e.contains("native-incremental"), "{e}");
        // Without run manifests, no watermark could be trusted.
        let plain = GOOD.split("[[s3]]").next().unwrap();
        let e = Config::parse(&format!("{plain}{job}"), "c").unwrap_err().to_string();
        assert!(e.contains("needs [escrow] manifest_bucket") && e.contains("native-export"), "{e}");
    }

    #[test]
    fn memory_limit_parses_and_bounds_streamed_parts() {
        const MIB: u64 = 1 << 20;
        // Default 256 MiB: streamed copies in 32 MiB parts, 8 at once;
        // server-side copies keep 64 MiB parts, 64 at once.
        let c = Config::parse(GOOD, "c").unwrap();
        assert_eq!(c.s3[0].memory_limit, ByteSize(256 * MIB));
        let m = c.s3[0].multipart();
        assert_eq!((m.memory_limit(), m.stream_part_size()), (256 * MIB, 32 * MIB));
        assert_eq!((m.stream_parts_in_flight(), m.part_concurrency()), (8, 64));
        assert_eq!(m.part_size_for(1 << 30).unwrap(), 64 * MIB);
        // A size with a unit, or bytes.
        let text = GOOD.replace("concurrency = 8", "memory_limit = \"48MiB\"\nmode = \"stream\"");
        let c = Config::parse(&text, "c").unwrap();
        assert_eq!(c.s3[1].memory_limit, ByteSize(48 * MIB));
        assert_eq!(
            c.s3[1].multipart().streaming_summary(),
            "memory_limit 48 MiB → 6 MiB parts, 8 in flight"
        );
        let text = GOOD.replace("concurrency = 8", "memory_limit = 16777216");
        assert_eq!(Config::parse(&text, "c").unwrap().s3[1].memory_limit, ByteSize(16 * MIB));
        // Explicit part settings win, within the limit.
        let text = GOOD.replace(
            "concurrency = 8",
            "memory_limit = \"64MiB\"\npart_size = \"16MiB\"\npart_concurrency = 2\nmode = \"stream\"",
        );
        let m = Config::parse(&text, "c").unwrap().s3[1].multipart();
        assert_eq!((m.stream_part_size(), m.stream_parts_in_flight()), (16 * MIB, 2));
        // Too small to hold one part.
        let bad = GOOD.replace("concurrency = 8", "memory_limit = \"4MiB\"");
        let err = Config::parse(&bad, "c").unwrap_err();
        assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("memory_limit is 4194304 bytes"), "{err}");
        // A streamed part larger than the limit: named, with the fix.
        let over = "memory_limit = \"32MiB\"\npart_size = \"64MiB\"";
        let bad = GOOD.replace("concurrency = 8", &format!("{over}\nmode = \"stream\""));
        let err = Config::parse(&bad, "c").unwrap_err();
        assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
        let text = err.to_string();
        assert!(text.contains("[[s3]] #2 (logs)"), "{text}");
        assert!(
            text.contains(
                "part_size (67108864 bytes) is larger than memory_limit (33554432 bytes)"
            ),
            "{text}"
        );
        assert!(text.contains("raise memory_limit"), "{text}");
        // Server-side copies hold no parts in memory: no such limit.
        let text = GOOD.replace("concurrency = 8", over);
        assert!(Config::parse(&text, "c").is_ok());
    }

    #[test]
    fn dynamodb_jobs_parse_and_bad_ones_are_refused() {
        let base = GOOD.split("[[s3]]").next().unwrap().to_string();
        let ok = format!(
            "{base}[[dynamodb]]\nsource_table = \"orders\"\ndest_table = \"escrow-orders\"\n\n\
             [[dynamodb]]\nname = \"exp\"\nsource_table = \"orders\"\ndest_bucket = \"b\"\n\
             dest_prefix = \"dynamodb/\"\nmode = \"native-export\"\nfile_size = \"8MiB\"\n"
        );
        let c = Config::parse(&ok, "c").unwrap();
        assert_eq!(c.dynamodb.len(), 2);
        assert_eq!(c.dynamodb[0].name(), "dynamodb:orders");
        assert_eq!(c.dynamodb[0].read_capacity_percent, 25);
        assert_eq!(c.jobs().len(), 2);
        let refused = |from: &str, to: &str, why: &str| {
            let text = ok.replacen(from, to, 1);
            let err = Config::parse(&text, "c").unwrap_err().to_string();
            assert!(err.contains(why), "{from} -> {to}: {err}");
        };
        refused("dest_table = \"escrow-orders\"", "", "set dest_table");
        refused(
            "dest_table = \"escrow-orders\"",
            "dest_table = \"t\"\ndest_bucket = \"b\"",
            "both set",
        );
        refused(
            "mode = \"native-export\"",
            "mode = \"dump\"",
            "mode \"dump\" is not one of [\"scan\", \"native-export\", \"native-incremental\"]",
        );
        refused(
            "dest_bucket = \"b\"\n",
            "dest_table = \"x\"\n",
            "dest_prefix goes with dest_bucket",
        );
        refused(
            "source_table = \"orders\"\ndest_table",
            "read_capacity_percent = 0\nsource_table = \"orders\"\ndest_table",
            "1 to 100",
        );
        refused("name = \"exp\"", "name = \"dynamodb:orders\"", "used twice");
        refused(
            "dest_bucket = \"b\"\ndest_prefix = \"dynamodb/\"\nmode = \"native-export\"\nfile_size = \"8MiB\"",
            "dest_table = \"escrow-orders\"",
            "both write escrow table escrow-orders",
        );
        refused(
            "file_size = \"8MiB\"",
            "file_size = \"8MiB\"\nsegmnts = 3",
            "unknown field `segmnts`",
        );
        assert_eq!(c.dynamodb[0].max_change_percent, 25);
        refused(
            "source_table = \"orders\"\ndest_table",
            "max_change_percent = 0\nsource_table = \"orders\"\ndest_table",
            "max_change_percent is 0; use 1 to 100",
        );
        refused(
            "source_table = \"orders\"\ndest_table",
            "max_change_percent = 101\nsource_table = \"orders\"\ndest_table",
            "max_change_percent is 101; use 1 to 100",
        );
        refused(
            "source_table = \"orders\"\ndest_table",
            "max_change_percent = 300\nsource_table = \"orders\"\ndest_table",
            "max_change_percent",
        );
        let off = ok.replacen(
            "source_table = \"orders\"\ndest_table",
            "max_change_percent = 100\nsource_table = \"orders\"\ndest_table",
            1,
        );
        assert_eq!(Config::parse(&off, "c").unwrap().dynamodb[0].max_change_percent, 100);
    }

    #[test]
    fn ec2_jobs_parse_and_what_this_version_lacks_is_refused() {
        let base = GOOD.split("[[s3]]").next().unwrap().to_string();
        let ok = format!(
            "{base}[[ec2]]\ninclude = [\"snapshots\"]\ntags = {{ backup = \"true\" }}\n\
             ids = [\"snap-1\"]\nmax_in_flight = 5\n"
        );
        let c = Config::parse(&ok, "c").unwrap();
        assert_eq!(c.ec2[0].name(), "ec2");
        assert!(c.ec2[0].unshare_after_copy, "unshare by default");
        assert_eq!(c.ec2[0].tags["backup"], "true");
        let refused = |from: &str, to: &str, why: &str| {
            let err = Config::parse(&ok.replacen(from, to, 1), "c").unwrap_err().to_string();
            assert!(err.contains(why), "{from} -> {to}: {err}");
        };
        refused("[\"snapshots\"]", "[\"volumes\"]", "is not one of [\"images\", \"snapshots\"]");
        refused("max_in_flight = 5", "max_in_flight = 0", "at least 1");
        refused("\"snap-1\"", "\"vol-1\"", "not an AMI (ami-...) or EBS snapshot id");
        refused("\"snap-1\"", "\"ami-1\"", "include leaves out");
        refused("max_in_flight = 5", "keep_daily = 0", "keeps nothing");
        refused(
            "max_in_flight = 5",
            "reencrypt_key_id = \"alias/aws/ebs\"",
            "customer-managed key",
        );
        let key = ok.replace(
            "max_in_flight = 5",
            "reencrypt_key_id = \"arn:aws:kms:us-east-1:111111111111:key/k\"",
        );
        assert!(Config::parse(&key, "c").unwrap().ec2[0].reencrypt_key_id.is_some());
        let both = ok
            .replace("include = [\"snapshots\"]\n", "")
            .replace("max_in_flight = 5", "keep_last = 7");
        let c = Config::parse(&both, "c").unwrap();
        assert!(c.ec2[0].includes("images") && c.ec2[0].includes("snapshots"));
        assert_eq!(c.ec2[0].retention().keep_last, Some(7));
    }

    #[test]
    fn an_ec2_lock_parses_and_bad_values_name_the_job_and_the_fix() {
        let base = GOOD.split("[[s3]]").next().unwrap().to_string();
        let ok = format!(
            "{base}[[ec2]]\nname = \"amis\"\n\
             lock = {{ mode = \"compliance\", days = 30, cool_off_hours = 24 }}\n"
        );
        let c = Config::parse(&ok, "c").unwrap();
        let lock = c.ec2[0].lock.as_ref().unwrap();
        assert_eq!((lock.days, lock.cool_off_hours, lock.renew_within_days()), (30, 24, 8));
        #[cfg(feature = "ec2")]
        {
            let l = c.ec2[0].snapshot_lock().unwrap();
            assert_eq!(l.mode, escrow_sync_ec2::LockMode::Compliance);
            assert_eq!((l.days, l.cool_off_hours, l.renew_within_days), (30, 24, 8));
        }
        let refused = |from: &str, to: &str, why: &str| {
            let err = Config::parse(&ok.replacen(from, to, 1), "c").unwrap_err();
            assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
            let err = err.to_string();
            assert!(err.contains("[[ec2]] (amis)") && err.contains(why), "{from} -> {to}: {err}");
        };
        refused("\"compliance\"", "\"legal-hold\"", "is not \"compliance\" or \"governance\"");
        refused("days = 30", "days = 0", "set 1 to 36500");
        refused(
            "cool_off_hours = 24",
            "cool_off_hours = 73",
            "set 0 (no cooling-off period) to 72",
        );
        refused("\"compliance\"", "\"governance\"", "applies to mode = \"compliance\" only");
        refused("cool_off_hours = 24", "renew_within_days = 31", "set at most 30");
        let unknown = Config::parse(&ok.replace("cool_off_hours", "retain"), "c").unwrap_err();
        assert!(unknown.to_string().contains("unknown field `retain`"), "{unknown}");
        let gov = ok
            .replace("\"compliance\", days = 30, cool_off_hours = 24", "\"governance\", days = 9");
        let c = Config::parse(&gov, "c").unwrap();
        assert_eq!(c.ec2[0].lock.as_ref().unwrap().renew_within_days(), 3);
    }

    #[test]
    fn rds_and_redshift_jobs_parse_and_bad_keys_are_refused() {
        let base = GOOD.split("[[s3]]").next().unwrap().to_string();
        let ok = format!(
            "{base}[[rds]]\ninclude = [\"db\", \"cluster\"]\ntags = {{ backup = \"true\" }}\n\
             keep_last = 3\n[[redshift]]\nindependent_copy = true\nkeep_monthly = 12\n"
        );
        let c = Config::parse(&ok, "c").unwrap();
        assert_eq!((c.rds[0].name(), c.redshift[0].name()), ("rds".into(), "redshift".into()));
        assert!(c.rds[0].includes("cluster") && c.redshift[0].independent_copy);
        let refused = |text: String, why: &str| {
            let err = Config::parse(&text, "c").unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        };
        refused(ok.replace("\"cluster\"", "\"aurora\""), "is not one of [\"db\", \"cluster\"]");
        refused(ok.replace("independent_copy = true", ""), "needs independent_copy = true");
        let more = format!("{ok}[[rds]]\nname = \"more\"\ninclude = [\"db\"]\nkeep_daily = 7\n");
        assert_eq!(Config::parse(&more, "c").unwrap().rds.len(), 2);
        refused(format!("{ok}[[rds]]\ninclude = [\"db\"]\n"), "used twice");
    }

    #[test]
    fn snapshot_jobs_take_mass_change_and_prune_limits_with_defaults() {
        let base = GOOD.split("[[s3]]").next().unwrap().to_string();
        let ok = format!("{base}[[ec2]]\n[[rds]]\n[[redshift]]\n");
        let c = Config::parse(&ok, "c").unwrap();
        let defaults =
            escrow_sync_core::PruneLimits { keep_within_days: 7, max_delete_percent: 25 };
        assert_eq!(c.ec2[0].prune_limits(), defaults);
        assert_eq!(c.rds[0].prune_limits(), defaults);
        assert_eq!(c.redshift[0].prune_limits(), defaults);
        assert_eq!(c.ec2[0].new_copies_cap(), Some(3));
        assert_eq!(c.ec2[0].max_change_percent, 25);
        let set = ok.replacen(
            "[[ec2]]\n",
            "[[ec2]]\nmax_new_copies_per_source = 5\nkeep_within_days = 0\nmax_delete_percent = 100\n",
            1,
        );
        let c = Config::parse(&set, "c").unwrap();
        assert_eq!(c.ec2[0].new_copies_cap(), Some(5));
        assert_eq!(
            c.ec2[0].prune_limits(),
            escrow_sync_core::PruneLimits { keep_within_days: 0, max_delete_percent: 100 }
        );
        let off = ok.replacen("[[rds]]\n", "[[rds]]\nmax_change_percent = 100\n", 1);
        assert_eq!(Config::parse(&off, "c").unwrap().rds[0].new_copies_cap(), None);
        let refused = |section: &str, line: &str, why: &str| {
            let text = ok.replacen(&format!("{section}\n"), &format!("{section}\n{line}\n"), 1);
            let err = Config::parse(&text, "c").unwrap_err();
            assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
            assert!(err.to_string().contains(why), "{line}: {err}");
        };
        refused("[[ec2]]", "max_change_percent = 0", "max_change_percent = 0 is out of range");
        refused("[[rds]]", "max_delete_percent = 101", "max_delete_percent = 101 is out of range");
        refused("[[redshift]]", "max_new_copies_per_source = 0", "max_new_copies_per_source = 0");
        refused("[[ec2]]", "max_delete_percent = 300", "max_delete_percent");
        refused("[[ec2]]", "keep_within_day = 3", "unknown field `keep_within_day`");
    }

    #[test]
    fn cloudtrail_jobs_parse_into_s3_jobs_and_bad_ones_are_refused() {
        let base = GOOD.split("[[s3]]").next().unwrap().to_string();
        let ok = format!(
            "{base}[[cloudtrail]]\ntrails = [\"main\"]\ndest_bucket = \"escrow-trails\"\n\
             dest_prefix = \"ct/\"\nvalidate_from = \"2026-01-01T00:00:00Z\"\n"
        );
        let c = Config::parse(&ok, "c").unwrap();
        let j = &c.cloudtrail[0];
        assert_eq!((j.name(), j.since()), ("cloudtrail".to_string(), Some(1_767_225_600)));
        let s3 = j.s3_job("prod-trail-logs", "audit");
        assert_eq!(
            (s3.prefix.as_str(), s3.dest_prefix.as_str()),
            ("audit/AWSLogs/", "ct/prod-trail-logs/")
        );
        assert_eq!(s3.source_bucket, "prod-trail-logs");
        assert!(!s3.versions && s3.mode.is_none());
        let refused = |text: String, why: &str| {
            let err = Config::parse(&text, "c").unwrap_err().to_string();
            assert!(err.contains("[[cloudtrail]] (cloudtrail)") && err.contains(why), "{err}");
        };
        refused(ok.replace("\"ct/\"", "\"ct\""), "must end in \"/\"");
        refused(ok.replace("2026-01-01T00:00:00Z", "yesterday"), "not an RFC 3339 time");
        refused(ok.replace("\"main\"", "\"\""), "trails has an empty name");
        refused(format!("{ok}source_bucket = \"escrow-trails\"\n"), "both escrow-trails");
    }

    #[test]
    fn bad_jobs_are_refused() {
        let same = GOOD.replace("escrow-logs", "prod-logs");
        assert!(Config::parse(&same, "c").unwrap_err().to_string().contains("both prod-logs"));
        let dup = GOOD.replace("name = \"logs\"", "name = \"s3:prod-assets\"");
        assert!(Config::parse(&dup, "c").unwrap_err().to_string().contains("used twice"));
        let none = GOOD.split("[[s3]]").next().unwrap().to_string();
        assert!(Config::parse(&none, "c").unwrap_err().to_string().contains("no jobs"));
        let zero = GOOD.replace("concurrency = 8", "concurrency = 0");
        assert!(Config::parse(&zero, "c").unwrap_err().to_string().contains("at least 1"));
        let missing = GOOD.replace("dest_bucket = \"escrow-logs\"", "");
        let err = Config::parse(&missing, "c").unwrap_err().to_string();
        assert!(err.contains("missing field `dest_bucket`"), "{err}");
    }

    #[test]
    fn shard_boundaries_parse_and_unsorted_or_repeated_ones_name_the_job_and_the_fix() {
        let job = |b: &str| {
            format!("[[s3]]\nsource_bucket = \"a\"\ndest_bucket = \"b\"\nshard_boundaries = {b}\n")
        };
        let c = with(&job(r#"["logs/", "media/"]"#)).unwrap();
        assert_eq!(c.s3[0].shard_boundaries.as_deref().unwrap(), ["logs/", "media/"]);
        assert!(with(&job("[]")).is_ok(), "no boundaries: one part");
        for bad in [r#"["media/", "logs/"]"#, r#"["a", "a"]"#, r#"[""]"#] {
            let err = with(&job(bad)).unwrap_err();
            assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
            let text = err.to_string();
            assert!(text.contains("s3:a") && text.contains("shard boundar"), "{text}");
        }
    }

    #[test]
    fn leases_live_in_the_manifest_bucket_else_outside_every_copied_key_space() {
        let c = Config::parse(GOOD, "c").unwrap();
        let jobs = c.jobs();
        // "logs" copies under logs/2026/: the bucket root's .escrow-sync/ is free.
        assert_eq!(
            c.lease_place(&jobs[1]),
            LeasePlace::Object {
                bucket: "escrow-logs".into(),
                key: ".escrow-sync/leases/logs.json".into()
            }
        );
        // s3:prod-assets copies the whole bucket: a lease there could be
        // overwritten by a copy, so it holds none and says how to get one.
        let LeasePlace::Nowhere(why) = c.lease_place(&jobs[0]) else { panic!("no lease") };
        assert!(why.contains("s3:prod-assets") && why.contains("manifest_bucket"), "{why}");
        assert!(why.contains("dest_prefix"), "{why}");

        let with_manifest = GOOD.replace(
            "[escrow]",
            "[escrow]\nmanifest_bucket = \"escrow-manifests\"\nlease_ttl_seconds = 30",
        );
        let c = Config::parse(&with_manifest, "c").unwrap();
        assert_eq!(c.lease_ttl(), std::time::Duration::from_secs(30));
        assert_eq!(
            c.lease_place(&c.jobs()[0]),
            LeasePlace::Object {
                bucket: "escrow-manifests".into(),
                key: "escrow-sync/manifests/leases/s3:prod-assets.json".into()
            }
        );
        assert_eq!(Config::parse(GOOD, "c").unwrap().lease_ttl().as_secs(), 600);
    }

    #[test]
    fn snapshot_jobs_without_a_manifest_bucket_hold_no_lease() {
        let text = GOOD.replace(
            "[[s3]]\nsource_bucket = \"prod-assets\"",
            "[[rds]]\n\n[[s3]]\nsource_bucket = \"prod-assets\"",
        );
        let c = Config::parse(&text, "c").unwrap();
        let rds = c.jobs().into_iter().find(|j| j.name() == "rds").unwrap();
        let LeasePlace::Nowhere(why) = c.lease_place(&rds) else { panic!("no lease") };
        assert!(why.contains("not prevented") && why.contains("manifest_bucket"), "{why}");
    }

    #[test]
    fn recycle_bin_days_defaults_to_14_and_must_be_1_to_365() {
        let c = Config::parse(GOOD, "escrow.toml").unwrap();
        assert_eq!(c.recycle_bin_days(), 14);
        let text = GOOD.replace("[escrow]", "[escrow]\nrecycle_bin_days = 365");
        assert_eq!(Config::parse(&text, "escrow.toml").unwrap().recycle_bin_days(), 365);
        for bad in ["0", "366"] {
            let text = GOOD.replace("[escrow]", &format!("[escrow]\nrecycle_bin_days = {bad}"));
            let err = Config::parse(&text, "escrow.toml").unwrap_err();
            assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
            let err = err.to_string();
            assert!(err.contains("recycle_bin_days is") && err.contains("1 to 365"), "{err}");
        }
    }

    #[test]
    fn lease_ttl_out_of_range_names_the_key_and_the_range() {
        for bad in ["0", "9", "86401"] {
            let text = GOOD.replace("[escrow]", &format!("[escrow]\nlease_ttl_seconds = {bad}"));
            let err = Config::parse(&text, "escrow.toml").unwrap_err();
            assert_eq!(err.kind(), escrow_sync_core::ErrorKind::InvalidConfig);
            let err = err.to_string();
            assert!(err.contains("lease_ttl_seconds is") && err.contains("10 to 86400"), "{err}");
        }
    }
}
