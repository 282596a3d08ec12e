//! Warnings at plan time: what a config leaves unlocked (an escrow insider
//! can delete it) or not encrypted with an escrow-owned KMS key, each with
//! the setting that fixes it. [`Config::protection_warnings`] is the one
//! place they are made; `plan`, `run` and `verify` carry them in their
//! reports ([`crate::Run::protection_warnings`], the JSON documents'
//! `protection_warnings`, the text output and `--report`). They never fail
//! a command: exit codes do not change.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::spec::{Config, DynamoDbJob, Ec2Job, JobRef, ObjectLockConfig, RdsJob, RedshiftJob};

/// The owner of warnings about the run manifests (`[escrow]` settings).
pub const ESCROW: &str = "[escrow]";

/// [`ProtectionWarning::kind`]: copies an escrow insider can delete.
pub const UNLOCKED: &str = "unlocked";
/// [`ProtectionWarning::kind`]: copies not encrypted with an escrow-owned
/// KMS key.
pub const UNENCRYPTED: &str = "unencrypted";
/// [`ProtectionWarning::kind`]: escrow holds only the primary's share, no
/// copy of its own.
pub const SHARE_ONLY: &str = "share-only";

/// One way a config leaves escrow data less protected than it could be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProtectionWarning {
    /// The job, or [`ESCROW`] for the run manifests.
    pub job: String,
    /// [`UNLOCKED`], [`UNENCRYPTED`] or [`SHARE_ONLY`].
    pub kind: &'static str,
    /// What fixes it: a config key (`object_lock`, `lock`,
    /// `[escrow] kms_key_id`, `[escrow] manifest_object_lock`,
    /// `independent_copy`), or for RDS and Redshift, which have no native
    /// lock, the `policy --format cloudformation` parameter
    /// `EnableBackupVault`.
    pub setting: &'static str,
    /// What is unprotected, why it matters and what to set: one line.
    pub warning: String,
}

impl ProtectionWarning {
    /// Whether it concerns a run of `job` (`None`: every job); those of
    /// [`ESCROW`] concern every run.
    pub fn concerns(&self, job: Option<&str>) -> bool {
        self.job == ESCROW || job.is_none_or(|j| j == self.job)
    }
}

impl std::fmt::Display for ProtectionWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.job, self.warning)
    }
}

const SET_KMS: &str = "set [escrow] kms_key_id to a customer-managed KMS key of the escrow account";
const LOCK_EXAMPLE: &str = "{ mode = \"COMPLIANCE\", days = N }";
const VAULT: &str = "copy them into an escrow AWS Backup vault with Vault Lock, which policy \
                     --format cloudformation (EnableBackupVault parameter) can create";

impl Config {
    /// Every protection warning of this config, in job order (S3 first, as
    /// [`Config::jobs`]), then the run manifests'; one line each, no two
    /// alike.
    pub fn protection_warnings(&self) -> Vec<ProtectionWarning> {
        let mut all = Vec::new();
        let keyed = self.escrow.kms_key_id.is_some();
        for job in self.jobs() {
            let name = job.name();
            let mut warn = |kind, setting, warning: String| {
                all.push(ProtectionWarning { job: name.clone(), kind, setting, warning });
            };
            match job {
                JobRef::S3(j) => {
                    objects(&mut warn, "copies", &j.dest_bucket, &j.dest_prefix, &j.object_lock);
                    if !keyed {
                        warn(UNENCRYPTED, KMS, unkeyed("copies", &j.dest_bucket, &j.dest_prefix));
                    }
                }
                JobRef::CloudTrail(j) => {
                    let what = "log copies";
                    objects(&mut warn, what, &j.dest_bucket, &j.dest_prefix, &j.object_lock);
                    if !keyed {
                        warn(UNENCRYPTED, KMS, unkeyed(what, &j.dest_bucket, &j.dest_prefix));
                    }
                }
                JobRef::DynamoDb(j) => dynamodb(&mut warn, j, keyed),
                JobRef::Ec2(j) => ec2(&mut warn, j, keyed),
                JobRef::Rds(j) => rds(&mut warn, j, keyed),
                JobRef::Redshift(j) => redshift(&mut warn, j, keyed),
            }
        }
        if let Some(bucket) = &self.escrow.manifest_bucket {
            let prefix = self
                .escrow
                .manifest_prefix
                .as_deref()
                .unwrap_or(escrow_sync_core::manifest::DEFAULT_PREFIX);
            let mut warn = |kind, setting, warning: String| {
                all.push(ProtectionWarning { job: ESCROW.into(), kind, setting, warning });
            };
            let setting = "[escrow] manifest_object_lock";
            match &self.escrow.manifest_object_lock {
                None => warn(
                    UNLOCKED,
                    setting,
                    format!(
                        "run manifests in s3://{bucket}/{prefix} are not locked: an escrow insider \
                         can delete them, and verify --offline, status and restore trust them; set \
                         [escrow] manifest_object_lock = {LOCK_EXAMPLE}"
                    ),
                ),
                Some(l) if governance(&l.mode) => {
                    warn(UNLOCKED, setting, governance_s3("run manifests", bucket, prefix, setting))
                }
                Some(_) => {}
            }
            if !keyed {
                warn(UNENCRYPTED, KMS, unkeyed("run manifests", bucket, prefix));
            }
        }
        let mut seen = BTreeSet::new();
        all.retain(|w| seen.insert((w.job.clone(), w.warning.clone())));
        all
    }

    /// The protection warnings that concern a run of `job` (`None`: every
    /// job), as [`ProtectionWarning::concerns`] says.
    pub fn protection_warnings_for(&self, job: Option<&str>) -> Vec<ProtectionWarning> {
        self.protection_warnings().into_iter().filter(|w| w.concerns(job)).collect()
    }
}

const KMS: &str = "[escrow] kms_key_id";

/// Adds a warning of `kind` fixed by `setting`.
type Warn<'a> = dyn FnMut(&'static str, &'static str, String) + 'a;

/// Objects under `s3://bucket/prefix` that `object_lock` would lock.
fn objects(
    warn: &mut Warn<'_>,
    what: &str,
    bucket: &str,
    prefix: &str,
    lock: &Option<ObjectLockConfig>,
) {
    match lock {
        None => warn(
            UNLOCKED,
            "object_lock",
            format!(
                "{what} in s3://{bucket}/{prefix} are not locked: an escrow insider can delete \
                 them; set object_lock = {LOCK_EXAMPLE} in the job (the bucket needs Object Lock \
                 enabled)"
            ),
        ),
        Some(l) if governance(&l.mode) => {
            warn(UNLOCKED, "object_lock", governance_s3(what, bucket, prefix, "object_lock"))
        }
        Some(_) => {}
    }
}

/// Whether a lock mode is governance (any case).
fn governance(mode: &str) -> bool {
    mode.eq_ignore_ascii_case("governance")
}

/// Objects under `s3://bucket/prefix` locked in GOVERNANCE mode.
fn governance_s3(what: &str, bucket: &str, prefix: &str, setting: &str) -> String {
    format!(
        "{what} in s3://{bucket}/{prefix} are locked in GOVERNANCE mode, which can be lifted by \
         whoever holds s3:BypassGovernanceRetention; set {setting} mode = \"COMPLIANCE\""
    )
}

/// Objects under `s3://bucket/prefix` written without the escrow key.
fn unkeyed(what: &str, bucket: &str, prefix: &str) -> String {
    format!(
        "{what} in s3://{bucket}/{prefix} are not encrypted with an escrow-owned KMS key (the \
         bucket's default encryption applies); {SET_KMS}"
    )
}

fn dynamodb(warn: &mut Warn<'_>, job: &DynamoDbJob, keyed: bool) {
    if let Some(bucket) = &job.dest_bucket {
        let prefix =
            format!("{}{}/", job.dest_prefix.as_deref().unwrap_or_default(), job.source_table);
        objects(warn, "export generations", bucket, &prefix, &job.object_lock);
        if !keyed {
            warn(UNENCRYPTED, KMS, unkeyed("export generations", bucket, &prefix));
        }
    }
    if let (Some(table), false) = (&job.dest_table, keyed) {
        let history = match &job.history_bucket {
            Some(b) => {
                format!(" and its item history in s3://{b}/{}{table}/ are", job.history_prefix())
            }
            None => " is".to_string(),
        };
        warn(
            UNENCRYPTED,
            KMS,
            format!(
                "escrow table {table}{history} not encrypted with an escrow-owned KMS key \
                 (a table escrow-sync creates gets DynamoDB's default, an AWS-owned key); \
                 {SET_KMS}"
            ),
        );
    }
}

fn ec2(warn: &mut Warn<'_>, job: &Ec2Job, keyed: bool) {
    let what = match (job.includes("images"), job.includes("snapshots")) {
        (true, true) => "AMI and EBS snapshot copies",
        (true, false) => "AMI copies",
        _ => "EBS snapshot copies",
    };
    if !keyed {
        warn(
            UNENCRYPTED,
            KMS,
            format!(
                "{what} land under the escrow's AWS-managed key (aws/ebs), which restore cannot \
                 share with another account; {SET_KMS}"
            ),
        );
    }
    match &job.lock {
        None => warn(
            UNLOCKED,
            "lock",
            format!(
                "{what} are not locked: an escrow insider can delete or deregister them; set lock \
                 = {{ mode = \"compliance\", days = N }} in the job (EBS Snapshot Lock and AMI \
                 deregistration protection)"
            ),
        ),
        Some(l) if governance(&l.mode) => warn(
            UNLOCKED,
            "lock",
            format!(
                "{what} are locked in governance mode, which can be lifted by whoever holds \
                 ec2:LockSnapshot (the escrow operator role does); set lock mode = \"compliance\""
            ),
        ),
        Some(_) => {}
    }
}

fn rds(warn: &mut Warn<'_>, job: &RdsJob, keyed: bool) {
    let what = match (job.includes("db"), job.includes("cluster")) {
        (true, true) => "RDS DB and Aurora cluster snapshot copies",
        (true, false) => "RDS DB snapshot copies",
        _ => "Aurora cluster snapshot copies",
    };
    if !keyed {
        warn(
            UNENCRYPTED,
            KMS,
            format!(
                "{what} are not encrypted with an escrow-owned KMS key: an encrypted snapshot \
                 cannot be copied (RDS needs an escrow key) and an unencrypted one stays \
                 unencrypted; {SET_KMS}"
            ),
        );
    }
    warn(
        UNLOCKED,
        "EnableBackupVault",
        format!("{what} have no native lock: an escrow insider can delete them; {VAULT}"),
    );
}

fn redshift(warn: &mut Warn<'_>, job: &RedshiftJob, keyed: bool) {
    if !job.independent_copy {
        // No copy escrow owns: nothing to encrypt or lock.
        warn(
            SHARE_ONLY,
            "independent_copy",
            "escrow holds only the primary's share of each Redshift snapshot, which the primary \
             can revoke or delete; set independent_copy = true in the job"
                .into(),
        );
        return;
    }
    if !keyed {
        warn(
            UNENCRYPTED,
            KMS,
            format!(
                "Redshift snapshot copies keep the source snapshot's encryption (for an encrypted \
                 source, the primary's key, which the primary can revoke), not an escrow-owned \
                 KMS key; {SET_KMS}"
            ),
        );
    }
    warn(
        UNLOCKED,
        "EnableBackupVault",
        format!(
            "Redshift snapshot copies have no native lock: an escrow insider can delete them; {VAULT}"
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every copy locked and under the escrow key.
    const PROTECTED: &str = r#"
[escrow]
region = "us-east-1"
role_arn = "arn:aws:iam::222222222222:role/escrow-operator"
kms_key_id = "arn:aws:kms:us-east-1:222222222222:key/escrow"
manifest_bucket = "escrow-manifests"
manifest_object_lock = { mode = "COMPLIANCE", days = 30 }

[primary]
account_id = "111111111111"
role_arn = "arn:aws:iam::111111111111:role/escrow-reader"

[[s3]]
name = "assets"
source_bucket = "prod-assets"
dest_bucket = "escrow-assets"
dest_prefix = "assets/"
object_lock = { mode = "COMPLIANCE", days = 30 }

[[dynamodb]]
name = "orders"
source_table = "orders"
dest_table = "escrow-orders"
history_bucket = "escrow-history"

[[dynamodb]]
name = "orders-export"
source_table = "orders"
dest_bucket = "escrow-exports"
dest_prefix = "ddb/"
object_lock = { mode = "COMPLIANCE", days = 30 }

[[ec2]]
name = "amis"
lock = { mode = "compliance", days = 30 }

[[cloudtrail]]
name = "trail"
dest_bucket = "escrow-trails"
dest_prefix = "ct/"
object_lock = { mode = "COMPLIANCE", days = 30 }
"#;

    fn warnings(text: &str) -> Vec<ProtectionWarning> {
        let all = Config::parse(text, "escrow.toml").unwrap().protection_warnings();
        let unique: BTreeSet<_> = all.iter().map(ToString::to_string).collect();
        assert_eq!(unique.len(), all.len(), "no two alike: {all:#?}");
        for w in &all {
            assert!(!w.warning.contains('\n'), "one line: {w}");
        }
        all
    }

    /// The warnings of `PROTECTED` with `from` replaced by `to` (once).
    fn with(from: &str, to: &str) -> Vec<ProtectionWarning> {
        assert!(PROTECTED.contains(from), "{from}");
        warnings(&PROTECTED.replacen(from, to, 1))
    }

    /// The one warning of `job`, with its kind and setting.
    fn only<'a>(all: &'a [ProtectionWarning], job: &str) -> &'a ProtectionWarning {
        let of: Vec<_> = all.iter().filter(|w| w.job == job).collect();
        assert_eq!(of.len(), 1, "{job}: {all:#?}");
        of[0]
    }

    #[test]
    fn a_fully_protected_config_has_no_warning() {
        assert_eq!(warnings(PROTECTED), vec![]);
        // Without a manifest bucket there are no manifests to protect.
        let none = PROTECTED
            .replace("manifest_bucket = \"escrow-manifests\"\n", "")
            .replace("manifest_object_lock = { mode = \"COMPLIANCE\", days = 30 }\n", "");
        assert_eq!(warnings(&none), vec![]);
    }

    #[test]
    fn an_unlocked_bucket_job_names_the_job_the_place_and_object_lock() {
        let lock = "object_lock = { mode = \"COMPLIANCE\", days = 30 }\n";
        let s3 = with(&format!("dest_prefix = \"assets/\"\n{lock}"), "dest_prefix = \"assets/\"\n");
        let w = only(&s3, "assets");
        assert_eq!((w.kind, w.setting), (UNLOCKED, "object_lock"));
        assert!(
            w.warning.starts_with("copies in s3://escrow-assets/assets/ are not locked")
                && w.warning.contains("escrow insider can delete them")
                && w.warning.contains("set object_lock = { mode = \"COMPLIANCE\", days = N }"),
            "{w}"
        );
        assert!(w.to_string().starts_with("assets: copies in"), "{w}");

        let export = with(&format!("dest_prefix = \"ddb/\"\n{lock}"), "dest_prefix = \"ddb/\"\n");
        let w = only(&export, "orders-export");
        assert_eq!((w.kind, w.setting), (UNLOCKED, "object_lock"));
        assert!(
            w.warning.starts_with("export generations in s3://escrow-exports/ddb/orders/"),
            "{w}"
        );

        let trail = with(&format!("dest_prefix = \"ct/\"\n{lock}"), "dest_prefix = \"ct/\"\n");
        let w = only(&trail, "trail");
        assert_eq!((w.kind, w.setting), (UNLOCKED, "object_lock"));
        assert!(
            w.warning.starts_with("log copies in s3://escrow-trails/ct/ are not locked"),
            "{w}"
        );
    }

    #[test]
    fn unlocked_run_manifests_are_escrows_warning() {
        let all = with("manifest_object_lock = { mode = \"COMPLIANCE\", days = 30 }\n", "");
        let w = only(&all, ESCROW);
        assert_eq!((w.kind, w.setting), (UNLOCKED, "[escrow] manifest_object_lock"));
        assert!(
            w.warning.starts_with("run manifests in s3://escrow-manifests/escrow-sync/manifests/")
                && w.warning.contains("set [escrow] manifest_object_lock = {"),
            "{w}"
        );
    }

    #[test]
    fn without_the_escrow_key_every_copy_says_so_and_names_kms_key_id() {
        let all = with("kms_key_id = \"arn:aws:kms:us-east-1:222222222222:key/escrow\"\n", "");
        let jobs: Vec<_> = all.iter().map(|w| w.job.as_str()).collect();
        assert_eq!(
            jobs,
            ["assets", "orders", "orders-export", "amis", "trail", ESCROW],
            "{all:#?}"
        );
        for w in &all {
            assert_eq!((w.kind, w.setting), (UNENCRYPTED, "[escrow] kms_key_id"), "{w}");
            assert!(w.warning.contains("set [escrow] kms_key_id to a customer-managed"), "{w}");
        }
        let text = |job: &str| only(&all, job).warning.clone();
        assert!(
            text("assets").starts_with("copies in s3://escrow-assets/assets/ are not encrypted")
        );
        assert!(
            text("orders").starts_with(
                "escrow table escrow-orders and its item history in \
                 s3://escrow-history/dynamodb-history/escrow-orders/ are not encrypted"
            ),
            "{}",
            text("orders")
        );
        assert!(
            text("orders-export")
                .starts_with("export generations in s3://escrow-exports/ddb/orders/")
        );
        assert!(
            text("amis").contains("AMI and EBS snapshot copies land under the escrow's AWS-managed key (aws/ebs), which restore cannot share"),
            "{}",
            text("amis")
        );
        let bare = warnings(
            &PROTECTED
                .replace("kms_key_id = \"arn:aws:kms:us-east-1:222222222222:key/escrow\"\n", "")
                .replace("history_bucket = \"escrow-history\"\n", ""),
        );
        assert!(
            only(&bare, "orders")
                .warning
                .starts_with("escrow table escrow-orders is not encrypted"),
            "{bare:#?}"
        );
        assert!(text("trail").starts_with("log copies in s3://escrow-trails/ct/"));
        assert!(text(ESCROW).starts_with("run manifests in s3://escrow-manifests/"));
    }

    #[test]
    fn an_ec2_job_without_a_lock_names_lock() {
        let all =
            with("lock = { mode = \"compliance\", days = 30 }\n", "include = [\"snapshots\"]\n");
        let w = only(&all, "amis");
        assert_eq!((w.kind, w.setting), (UNLOCKED, "lock"));
        assert!(
            w.warning.starts_with("EBS snapshot copies are not locked")
                && w.warning.contains("set lock = { mode = \"compliance\", days = N }"),
            "{w}"
        );
    }

    #[test]
    fn governance_locks_are_warned_of_as_liftable() {
        let gov = |from: &str, to: &str| {
            assert!(PROTECTED.contains(from), "{from}");
            PROTECTED.replacen(from, to, 1)
        };
        // An S3 job's copies.
        let s3 = warnings(&gov(
            "dest_prefix = \"assets/\"\nobject_lock = { mode = \"COMPLIANCE\"",
            "dest_prefix = \"assets/\"\nobject_lock = { mode = \"GOVERNANCE\"",
        ));
        let w = only(&s3, "assets");
        assert_eq!((w.kind, w.setting), (UNLOCKED, "object_lock"));
        assert_eq!(
            w.warning,
            "copies in s3://escrow-assets/assets/ are locked in GOVERNANCE mode, which can be \
             lifted by whoever holds s3:BypassGovernanceRetention; set object_lock mode = \
             \"COMPLIANCE\""
        );
        // The run manifests.
        let manifests = warnings(&gov(
            "manifest_object_lock = { mode = \"COMPLIANCE\"",
            "manifest_object_lock = { mode = \"GOVERNANCE\"",
        ));
        let w = only(&manifests, ESCROW);
        assert_eq!((w.kind, w.setting), (UNLOCKED, "[escrow] manifest_object_lock"));
        assert!(w.warning.contains("s3:BypassGovernanceRetention"), "{w}");
        // EC2 copies: ec2:LockSnapshot shortens a governance lock.
        let ec2 = warnings(&gov(
            "lock = { mode = \"compliance\", days = 30 }",
            "lock = { mode = \"governance\", days = 30 }",
        ));
        let w = only(&ec2, "amis");
        assert_eq!((w.kind, w.setting), (UNLOCKED, "lock"));
        assert!(
            w.warning.starts_with("AMI and EBS snapshot copies are locked in governance mode")
                && w.warning.contains("whoever holds ec2:LockSnapshot")
                && w.warning.ends_with("set lock mode = \"compliance\""),
            "{w}"
        );
    }

    #[test]
    fn rds_and_redshift_copies_point_to_a_locked_backup_vault() {
        let text = format!(
            "{PROTECTED}[[rds]]\ninclude = [\"cluster\"]\n[[redshift]]\nindependent_copy = true\n"
        );
        let all = warnings(&text);
        for (job, what) in
            [("rds", "Aurora cluster snapshot copies"), ("redshift", "Redshift snapshot copies")]
        {
            let w = only(&all, job);
            assert_eq!((w.kind, w.setting), (UNLOCKED, "EnableBackupVault"), "{w}");
            assert!(
                w.warning.starts_with(&format!("{what} have no native lock"))
                    && w.warning
                        .contains("policy --format cloudformation (EnableBackupVault parameter)"),
                "{w}"
            );
        }
        // Without the escrow key: encrypted RDS snapshots cannot be copied,
        // Redshift copies keep the primary's key.
        let unkeyed = warnings(
            &text.replace("kms_key_id = \"arn:aws:kms:us-east-1:222222222222:key/escrow\"\n", ""),
        );
        let of = |job: &str| -> Vec<_> {
            unkeyed.iter().filter(|w| w.job == job && w.kind == UNENCRYPTED).collect()
        };
        assert!(of("rds")[0].warning.contains("cannot be copied (RDS needs an escrow key)"));
        assert!(
            of("redshift")[0].warning.contains("the primary's key, which the primary can revoke")
        );
        // A share is no copy: the one thing to say is independent_copy.
        let shared = warnings(&text.replace("independent_copy = true\n", ""));
        let w = only(&shared, "redshift");
        assert_eq!((w.kind, w.setting), (SHARE_ONLY, "independent_copy"));
    }

    #[test]
    fn a_selected_job_gets_its_own_warnings_and_escrows() {
        let text = PROTECTED
            .replace("kms_key_id = \"arn:aws:kms:us-east-1:222222222222:key/escrow\"\n", "")
            .replace("manifest_object_lock = { mode = \"COMPLIANCE\", days = 30 }\n", "");
        let c = Config::parse(&text, "escrow.toml").unwrap();
        let jobs = |sel| -> BTreeSet<String> {
            c.protection_warnings_for(sel).into_iter().map(|w| w.job).collect()
        };
        assert_eq!(jobs(Some("amis")), BTreeSet::from(["amis".into(), ESCROW.into()]));
        assert_eq!(jobs(None).len(), 6);
    }
}
