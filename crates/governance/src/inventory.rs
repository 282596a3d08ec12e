//! The resources and accounts a config names.

use std::collections::BTreeMap;

/// Everything governance needs to know about one escrow setup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The region the jobs run in.
    pub region: String,
    /// The escrow account id.
    pub escrow_account: String,
    /// The primary account id.
    pub primary_account: String,
    /// The role escrow-sync assumes in the primary (the reader role).
    pub reader_role_arn: Option<String>,
    /// The role escrow-sync runs as in escrow (the operator), when known.
    pub operator_role_arn: Option<String>,
    /// The external id the reader role's trust policy requires.
    pub external_id: Option<String>,
    /// The escrow KMS key every copy is encrypted with.
    pub escrow_kms_key: Option<String>,
    /// Where run manifests go, when configured.
    pub manifest: Option<ManifestLocation>,
    /// `[[s3]]` jobs.
    pub s3: Vec<S3Grant>,
    /// `[[dynamodb]]` jobs.
    pub dynamodb: Vec<TableGrant>,
    /// `[[ec2]]` jobs.
    pub ec2: Vec<Ec2Grant>,
    /// `[[rds]]` jobs.
    pub rds: Vec<RdsGrant>,
    /// `[[redshift]]` jobs.
    pub redshift: Vec<RedshiftGrant>,
    /// `[[cloudtrail]]` jobs (their log buckets are also in `s3`).
    pub cloudtrail: Vec<TrailGrant>,
    /// `[escrow] metrics = "cloudwatch"`: the PutMetricData grant and the
    /// alarms.
    pub metrics: Option<MetricsGrant>,
    /// `[escrow] recycle_bin_days`: how long the escrow's Recycle Bin rules
    /// keep a deleted EBS snapshot or AMI copy (`None`:
    /// [`DEFAULT_RECYCLE_BIN_DAYS`]; see [`Inventory::recycle_bin_days`]).
    pub recycle_bin_days: Option<u32>,
    /// `[[s3]] engine = "batch-operations"` (or `"auto"`): the escrow's
    /// batch role and where its jobs' files go.
    pub batch: Option<BatchGrant>,
}

/// The S3 Batch Operations role of the escrow and what its jobs touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchGrant {
    /// `[escrow] batch_role_arn`.
    pub role_arn: String,
    /// The `[[s3]]` jobs (by name) that may copy with Batch Operations.
    pub jobs: Vec<String>,
    /// Per batch bucket, the key prefixes of the manifests, job records
    /// and completion reports.
    pub files: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// How long Recycle Bin keeps a deleted escrow snapshot or AMI when the
/// config does not say.
pub const DEFAULT_RECYCLE_BIN_DAYS: u32 = 14;

impl Inventory {
    /// The Recycle Bin retention the escrow's rules must have, in days.
    pub fn recycle_bin_days(&self) -> u32 {
        self.recycle_bin_days.unwrap_or(DEFAULT_RECYCLE_BIN_DAYS)
    }
}

/// CloudWatch metrics in the escrow account: `cloudwatch:PutMetricData` on
/// one namespace, and an alarm per job that has a `max_age`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsGrant {
    /// The namespace (`EscrowSync`).
    pub namespace: String,
    /// One alarm per job with a `max_age`.
    pub alarms: Vec<JobAlarm>,
}

/// An alarm on a job's `SecondsSinceLastVerifiedCopy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobAlarm {
    /// The job (the `Job` dimension).
    pub job: String,
    /// The threshold: the job's `max_age`, in seconds.
    pub max_age_seconds: u64,
}

/// One `[[cloudtrail]]` job: trails found with DescribeTrails, their log
/// bucket copied like an `[[s3]]` job (listed in `Inventory::s3` too), the
/// escrow copy validated with CloudTrail's public keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrailGrant {
    /// The job's name.
    pub name: String,
    /// The escrow bucket.
    pub dest_bucket: String,
    /// Where the log bucket's copy is kept in it (`<dest_prefix><bucket>/`).
    pub dest_prefix: String,
}

/// Where run manifests are written in escrow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestLocation {
    /// The escrow bucket.
    pub bucket: String,
    /// The key prefix (may be empty).
    pub prefix: String,
    /// Whether the bucket must hold manifests under Object Lock.
    pub object_lock: bool,
}

/// One `[[s3]]` job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Grant {
    /// The job's name.
    pub name: String,
    /// The primary bucket.
    pub source_bucket: String,
    /// Only keys under this prefix (empty: all).
    pub prefix: String,
    /// The escrow bucket.
    pub dest_bucket: String,
    /// The prefix in escrow.
    pub dest_prefix: String,
    /// Whether the job sets Object Lock retention on copies.
    pub object_lock: bool,
    /// Whether every version is copied.
    pub versions: bool,
    /// Whether bytes pass through escrow-sync (no server-side copy).
    pub streamed: bool,
}

/// One `[[dynamodb]]` job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableGrant {
    /// The job's name.
    pub name: String,
    /// The primary table.
    pub source_table: String,
    /// The escrow table (table jobs).
    pub dest_table: Option<String>,
    /// The escrow bucket (export jobs).
    pub dest_bucket: Option<String>,
    /// The prefix of export generations.
    pub dest_prefix: String,
    /// Whether DynamoDB's native export writes the generation.
    pub native_export: bool,
    /// Native exports: the key prefix DynamoDB writes exports into (empty:
    /// the default `<dest_prefix>.staging/`), the only place the primary may
    /// write in escrow.
    pub staging_prefix: String,
    /// The escrow table holding scan checkpoints.
    pub checkpoint_table: String,
    /// Whether the job sets Object Lock retention on export files.
    pub object_lock: bool,
    /// The escrow bucket keeping item history (table jobs).
    pub history_bucket: Option<String>,
    /// The prefix of the item history in `history_bucket`.
    pub history_prefix: String,
}

impl TableGrant {
    /// Where a native export job's exports land: `<staging_prefix><table>/`
    /// (the default staging prefix is `<dest_prefix>.staging/`, or
    /// `<history_prefix>.staging/` for a native-incremental table job);
    /// `None` for other jobs.
    pub fn staging(&self) -> Option<String> {
        self.staging_bucket()?;
        let prefix = if !self.staging_prefix.is_empty() {
            self.staging_prefix.clone()
        } else if self.dest_bucket.is_some() {
            format!("{}.staging/", self.dest_prefix)
        } else {
            format!("{}.staging/", self.history_prefix)
        };
        Some(format!("{prefix}{}/", self.source_table))
    }

    /// The escrow bucket a native export stages in: the export job's
    /// `dest_bucket`, or a native-incremental table job's history bucket;
    /// `None` for other jobs.
    pub fn staging_bucket(&self) -> Option<&str> {
        if !self.native_export {
            return None;
        }
        self.dest_bucket.as_deref().or(self.history_bucket.as_deref())
    }
}

/// One `[[ec2]]` job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ec2Grant {
    /// The job's name.
    pub name: String,
    /// Whether AMIs are copied.
    pub images: bool,
    /// Whether EBS snapshots are copied.
    pub snapshots: bool,
    /// The tags that select (all must match).
    pub tags: BTreeMap<String, String>,
    /// The ids that select.
    pub ids: Vec<String>,
    /// The primary's customer key used to re-encrypt, if any.
    pub reencrypt_key: Option<String>,
    /// Whether prune may delete copies (retention is set).
    pub prunes: bool,
    /// The EBS Snapshot Lock the job keeps on its copies (and deregistration
    /// protection on its AMI copies), if it asks for one.
    pub lock: Option<Ec2LockGrant>,
}

/// An `[[ec2]]` job's `lock`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ec2LockGrant {
    /// `compliance` or `governance`.
    pub mode: String,
    /// Days each lock lasts.
    pub days: u32,
}

/// One `[[rds]]` job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdsGrant {
    /// The job's name.
    pub name: String,
    /// Whether DB snapshots are copied.
    pub db: bool,
    /// Whether Aurora cluster snapshots are copied.
    pub cluster: bool,
    /// The tags that select.
    pub tags: BTreeMap<String, String>,
    /// The snapshot identifiers that select.
    pub ids: Vec<String>,
    /// The primary's customer key used to re-encrypt, if any.
    pub reencrypt_key: Option<String>,
    /// Whether prune may delete copies.
    pub prunes: bool,
}

/// One `[[redshift]]` job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedshiftGrant {
    /// The job's name.
    pub name: String,
    /// The tags that select.
    pub tags: BTreeMap<String, String>,
    /// The snapshot identifiers that select.
    pub ids: Vec<String>,
    /// Whether escrow restores and snapshots (an independent copy).
    pub independent_copy: bool,
    /// Whether prune may delete copies.
    pub prunes: bool,
}
