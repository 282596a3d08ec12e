//! The config as governance sees it: an [`Inventory`] of accounts and
//! resources.

use escrow_sync_core::{Error, Result};
use escrow_sync_governance::Inventory;
use escrow_sync_governance::inventory::{
    Ec2Grant, ManifestLocation, RdsGrant, RedshiftGrant, S3Grant, TableGrant, TrailGrant,
};

use crate::config::Config;

/// The inventory of `config`. The escrow account is the config's
/// `[escrow] account_id`, else `escrow_account` (from STS, when connected);
/// without either, policies cannot name it and this fails (exit 2).
pub(crate) fn inventory(config: &Config, escrow_account: Option<&str>) -> Result<Inventory> {
    let escrow = config.escrow.account_id.as_deref().or(escrow_account).ok_or_else(|| {
        Error::invalid_config(
            "[escrow] account_id is not set: policies and the audit name the escrow account, \
             so set account_id = \"<12 digits>\" in [escrow]",
        )
    })?;
    let region = config.primary.region.clone().unwrap_or_else(|| config.escrow.region.clone());
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
    Ok(Inventory {
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
                native_export: j.mode.as_deref() == Some("native-export"),
                staging_prefix: j.staging_prefix().unwrap_or_default(),
                checkpoint_table: j
                    .checkpoint_table
                    .clone()
                    .unwrap_or_else(|| escrow_sync_dynamodb::checkpoint::DEFAULT_TABLE.to_string()),
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
    })
}
