//! Where escrow-sync keeps its own records in escrow, by default: one place
//! for the names that the service crates write, the facade checks for
//! overlaps and governance grants.

/// The key prefix, in an escrow bucket or the manifest bucket, under which
/// run leases live (one object per job).
pub const LEASE_PREFIX: &str = ".escrow-sync/leases/";

/// The folder, under a destination prefix (an S3 job's, an export job's
/// table, the manifest prefix), of the retention ledger: the schedule of
/// Object Lock renewals (`escrow_sync_s3::S3Sink::renew_retention`).
pub const RETENTION_DIR: &str = ".escrow-sync-retention/";

/// The default key prefix of a DynamoDB table job's item history in its
/// `history_bucket`.
pub const HISTORY_PREFIX: &str = "dynamodb-history/";

/// The default escrow table of DynamoDB scan checkpoints.
pub const CHECKPOINT_TABLE: &str = "escrow-sync-checkpoints";

/// The default key prefix DynamoDB's native export writes into, beside the
/// generations under `dest_prefix` (the only place the primary may write).
pub fn staging_prefix(dest_prefix: &str) -> String {
    format!("{dest_prefix}.staging/")
}

/// The CloudWatch namespace of escrow-sync's metrics (`[escrow] metrics =
/// "cloudwatch"`), which `policy` grants `cloudwatch:PutMetricData` on.
pub const METRICS_NAMESPACE: &str = "EscrowSync";
