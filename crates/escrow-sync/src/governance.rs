//! The config as governance sees it: an [`Inventory`] of accounts and
//! resources.

use escrow_sync_core::{Error, Result};
use escrow_sync_governance::Inventory;
use escrow_sync_governance::inventory::{
    Ec2Grant, Ec2LockGrant, ManifestLocation, RdsGrant, RedshiftGrant, S3Grant, TableGrant,
    TrailGrant,
};

use crate::spec::Config;
use std::collections::BTreeMap;

/// The inventory of `config`. The escrow account is the config's
/// `[escrow] account_id`, else `escrow_account` (from STS, when connected),
/// else the account of `[escrow] role_arn`; without any, policies cannot
/// name it and this fails (exit 2). The region is the config's (or
/// `--region`), else `AWS_REGION` (or `AWS_DEFAULT_REGION`).
pub fn inventory(config: &Config, escrow_account: Option<&str>) -> Result<Inventory> {
    let from_role = config.escrow.role_arn.as_deref().and_then(escrow_sync_aws::role_account);
    let escrow =
        config.escrow.account_id.as_deref().or(escrow_account).or(from_role).ok_or_else(|| {
            Error::invalid_config(
                "the escrow account is not known: policies and the audit name it, so set \
                 account_id = \"<12 digits>\" (or role_arn, a role in it) in [escrow]",
            )
        })?;
    let from_env = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .into_iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()));
    let region = config.region().map(str::to_string).or(from_env).ok_or_else(|| {
        Error::invalid_config(
            "no region: policies name it in ARNs, so set region in [escrow] (or [primary]), \
             pass --region, or set AWS_REGION",
        )
    })?;
    let mut trail_buckets = Vec::new();
    for j in &config.cloudtrail {
        let bucket = j.source_bucket.as_ref().ok_or_else(|| {
            Error::invalid_config(format!(
                "[[cloudtrail]] ({}): policies name the log bucket, but the job finds it with \
                 DescribeTrails: set source_bucket = \"<the trails' bucket>\" in the job",
                j.name()
            ))
        })?;
        // The trails' key prefix is found at run time: the whole log bucket.
        let s3 = j.s3_job(bucket, "");
        trail_buckets.push(S3Grant {
            name: j.name(),
            source_bucket: bucket.clone(),
            prefix: String::new(),
            dest_bucket: s3.dest_bucket.clone(),
            dest_prefix: s3.dest_prefix.clone(),
            object_lock: j.object_lock.is_some(),
            versions: false,
            streamed: config.streams(&s3),
        });
    }
    let batch_jobs: Vec<&crate::spec::S3Job> =
        config.s3.iter().filter(|j| j.engine() != crate::spec::S3Engine::Direct).collect();
    let batch = match (&config.escrow.batch_role_arn, batch_jobs.is_empty()) {
        (Some(role), false) => {
            let mut files: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
            for j in &batch_jobs {
                if let Some(bucket) = &j.batch_bucket {
                    files.entry(bucket.clone()).or_default().insert(
                        j.batch_prefix
                            .clone()
                            .unwrap_or_else(|| escrow_sync_s3::DEFAULT_BATCH_PREFIX.to_string()),
                    );
                }
            }
            Some(escrow_sync_governance::inventory::BatchGrant {
                role_arn: role.clone(),
                jobs: batch_jobs.iter().map(|j| j.name()).collect(),
                files,
            })
        }
        _ => None,
    };
    Ok(Inventory {
        batch,
        region,
        escrow_account: escrow.to_string(),
        primary_account: config.primary.account_id.clone(),
        reader_role_arn: config.primary.role_arn.clone(),
        operator_role_arn: config.escrow.role_arn.clone(),
        external_id: config.primary.external_id.clone(),
        escrow_kms_key: config.escrow.kms_key_id.clone(),
        manifest: config.escrow.manifest_bucket.as_ref().map(|bucket| ManifestLocation {
            bucket: bucket.clone(),
            prefix: config.escrow.manifest_prefix.clone().unwrap_or_default(),
            object_lock: config.escrow.manifest_object_lock.is_some(),
        }),
        s3: config
            .s3
            .iter()
            .map(|j| S3Grant {
                name: j.name(),
                source_bucket: j.source_bucket.clone(),
                prefix: j.prefix.clone(),
                dest_bucket: j.dest_bucket.clone(),
                dest_prefix: j.dest_prefix.clone(),
                object_lock: j.object_lock.is_some(),
                versions: j.versions,
                streamed: config.streams(j),
            })
            .chain(trail_buckets)
            .collect(),
        dynamodb: config
            .dynamodb
            .iter()
            .map(|j| TableGrant {
                name: j.name(),
                source_table: j.source_table.clone(),
                dest_table: j.dest_table.clone(),
                dest_bucket: j.dest_bucket.clone(),
                dest_prefix: j.dest_prefix.clone().unwrap_or_default(),
                native_export: j.native_export(),
                staging_prefix: j.staging_prefix().unwrap_or_default(),
                checkpoint_table: j
                    .checkpoint_table
                    .clone()
                    .unwrap_or_else(|| escrow_sync_core::layout::CHECKPOINT_TABLE.to_string()),
                object_lock: j.object_lock.is_some(),
                history_bucket: j.history_bucket.clone(),
                history_prefix: j.history_prefix(),
            })
            .collect(),
        ec2: config
            .ec2
            .iter()
            .map(|j| Ec2Grant {
                name: j.name(),
                images: j.includes("images"),
                snapshots: j.includes("snapshots"),
                tags: j.tags.clone(),
                ids: j.ids.clone(),
                reencrypt_key: j.reencrypt_key_id.clone(),
                prunes: j.retention().is_set(),
                lock: j
                    .lock
                    .as_ref()
                    .map(|l| Ec2LockGrant { mode: l.mode.to_ascii_lowercase(), days: l.days }),
            })
            .collect(),
        rds: config
            .rds
            .iter()
            .map(|j| RdsGrant {
                name: j.name(),
                db: j.includes("db"),
                cluster: j.includes("cluster"),
                tags: j.tags.clone(),
                ids: j.ids.clone(),
                reencrypt_key: j.reencrypt_key_id.clone(),
                prunes: j.retention().is_set(),
            })
            .collect(),
        redshift: config
            .redshift
            .iter()
            .map(|j| RedshiftGrant {
                name: j.name(),
                tags: j.tags.clone(),
                ids: j.ids.clone(),
                independent_copy: j.independent_copy,
                prunes: j.retention().is_set(),
            })
            .collect(),
        cloudtrail: config
            .cloudtrail
            .iter()
            .map(|j| TrailGrant {
                name: j.name(),
                dest_bucket: j.dest_bucket.clone(),
                dest_prefix: j.dest_prefix.clone(),
            })
            .collect(),
        recycle_bin_days: Some(config.recycle_bin_days()),
        metrics: (config.escrow.metrics == Some(crate::spec::MetricsKind::Cloudwatch)).then(|| {
            escrow_sync_governance::inventory::MetricsGrant {
                namespace: escrow_sync_core::layout::METRICS_NAMESPACE.into(),
                alarms: config
                    .jobs()
                    .iter()
                    .filter_map(|j| {
                        Some(escrow_sync_governance::inventory::JobAlarm {
                            job: j.name(),
                            max_age_seconds: j.max_age()?.as_secs(),
                        })
                    })
                    .collect(),
            }
        }),
    })
}

/// What the isolation audit found, and of which account.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Audited {
    /// The escrow account audited.
    pub escrow_account: String,
    /// Every finding, each with its severity, resource and fix.
    pub findings: Vec<escrow_sync_governance::audit::Finding>,
}

impl Audited {
    /// The audit of `escrow_account` that found `findings`.
    pub fn new(
        escrow_account: impl Into<String>,
        findings: Vec<escrow_sync_governance::audit::Finding>,
    ) -> Self {
        Audited { escrow_account: escrow_account.into(), findings }
    }
}

/// The isolation audit of the escrow account `config` names. Connects like
/// `run` (the escrow identity, then the primary's reader role assumed with
/// it); when the primary cannot be reached the escrow is still audited and
/// that is a finding of its own.
pub async fn audit(config: &Config) -> Result<Audited> {
    use escrow_sync_aws::Connector;
    use escrow_sync_governance::audit::Auditor;
    let escrow_account = config.escrow_account();
    let connector = Connector::new();
    let escrow = connector.connect_escrow(&escrow_account).await?;
    let known = (!escrow.account_id().is_empty()).then(|| escrow.account_id().to_string());
    // No region in the config: the one the escrow session resolved.
    let resolved = config.clone().with_overrides(None, Some(config.region_or(&escrow)));
    let inventory = inventory(&resolved, known.as_deref())?;
    let account = inventory.escrow_account.clone();
    let mut auditor = Auditor::from_session(&escrow, inventory);
    auditor = match connector.connect(&escrow_account, &config.primary_account()).await {
        Ok(sessions) => auditor.with_primary(&sessions.primary),
        Err(e) => auditor.with_primary_unreachable(e.chain()),
    };
    let findings = auditor.run().await?;
    Ok(Audited { escrow_account: account, findings })
}

/// The shapes `policy` comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyFormat {
    /// One JSON document with every policy.
    Json,
    /// Two CloudFormation templates, one per account.
    Cloudformation,
}

/// The least-privilege policies `config` needs, as one document. Nothing is
/// contacted: the policies come from the config alone. A config they cannot
/// be written for is an invalid-config error that names the fix.
pub fn policy(config: &Config, format: PolicyFormat) -> Result<serde_json::Value> {
    use escrow_sync_governance::policy;
    let inventory = inventory(config, None)?;
    policy::check(&inventory)?;
    Ok(match format {
        PolicyFormat::Json => serde_json::to_value(policy::generate(&inventory)).map_err(|e| {
            Error::new(escrow_sync_core::ErrorKind::Failed, "policy", "json", e.to_string())
        })?,
        PolicyFormat::Cloudformation => {
            let (primary, escrow) = policy::cloudformation(&inventory);
            serde_json::json!({"primary": primary, "escrow": escrow})
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[escrow]
region = "us-east-1"
account_id = "222222222222"
role_arn = "arn:aws:iam::222222222222:role/escrow-operator"

[primary]
account_id = "111111111111"
role_arn = "arn:aws:iam::111111111111:role/escrow-reader"
external_id = "very-secret-external-id"

[[s3]]
source_bucket = "prod-assets"
dest_bucket = "escrow-prod-assets"
prefix = "data/"
"#;

    fn render(text: &str, format: PolicyFormat) -> Result<serde_json::Value> {
        policy(&Config::parse(text, "escrow.toml")?, format)
    }

    #[test]
    fn json_names_the_buckets_and_never_the_external_id() {
        let doc = render(CONFIG, PolicyFormat::Json).unwrap();
        let text = doc.to_string();
        assert!(!text.contains("very-secret-external-id"), "{text}");
        assert_eq!(doc["primary"]["reader_role"]["name"], "escrow-reader");
        assert!(doc["primary"]["bucket_policies"]["prod-assets"].is_array());
        assert!(doc["escrow"]["buckets"]["escrow-prod-assets"]["versioning"] == "Enabled");
    }

    #[test]
    fn cloudformation_gives_two_templates() {
        let doc = render(CONFIG, PolicyFormat::Cloudformation).unwrap();
        assert_eq!(doc["primary"]["Resources"]["ReaderRole"]["Type"], "AWS::IAM::Role");
        assert_eq!(doc["escrow"]["Resources"]["OperatorRole"]["Type"], "AWS::IAM::Role");
        assert_eq!(doc["primary"]["Parameters"]["ExternalId"]["NoEcho"], true);
        assert!(!doc.to_string().contains("very-secret-external-id"));
    }

    #[test]
    fn without_the_escrow_account_it_says_what_to_set() {
        let text = CONFIG
            .replace("account_id = \"222222222222\"\n", "")
            .replace("role_arn = \"arn:aws:iam::222222222222:role/escrow-operator\"\n", "");
        let err = render(&text, PolicyFormat::Json).unwrap_err();
        assert!(err.to_string().contains("set account_id"), "{err}");
    }

    #[test]
    fn the_escrow_account_comes_from_the_escrow_role() {
        let text = CONFIG.replace("account_id = \"222222222222\"\n", "");
        let doc = render(&text, PolicyFormat::Json).unwrap();
        assert!(doc.to_string().contains("222222222222"), "{doc}");
        let inv = inventory(&Config::parse(&text, "escrow.toml").unwrap(), None).unwrap();
        assert_eq!(inv.escrow_account, "222222222222");
    }

    #[test]
    fn the_region_comes_from_the_command_line() {
        let text = CONFIG.replace("region = \"us-east-1\"\n", "");
        let config = Config::parse(&text, "escrow.toml").unwrap();
        let config = config.with_overrides(None, Some("eu-west-3".into()));
        assert_eq!(inventory(&config, None).unwrap().region, "eu-west-3");
    }

    #[test]
    fn the_same_account_on_both_sides_is_refused() {
        let text = CONFIG.replace("222222222222", "111111111111");
        let err = render(&text, PolicyFormat::Json).unwrap_err();
        assert!(err.chain().to_string().contains("account"), "{err}");
    }
}
