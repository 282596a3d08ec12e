//! What keeps escrow data sealed beyond the checks of each copy (issue 17,
//! point 4): every escrow bucket under Object Lock and default encryption
//! with the escrow key, every escrow table encrypted with the escrow key,
//! and no long-lived IAM credentials in the escrow beyond the runner's.
//!
//! - `s3.bucket.object-lock-off` (medium): an escrow bucket without Object
//!   Lock where no job asks for it (where one does, `s3.bucket.object-lock`
//!   is high): nothing there can ever be locked, and Object Lock can only be
//!   turned on for a versioned bucket by AWS support or at creation.
//! - `s3.bucket.default-encryption` (medium): no default encryption, or,
//!   with `[escrow] kms_key_id`, a default other than SSE-KMS with that key:
//!   what escrow-sync writes without its own key (leases, ledgers) and what
//!   anyone else writes lands under another key.
//! - `dynamodb.table.sse` (high): an escrow table encrypted with an AWS
//!   owned or AWS-managed key, or a customer key that is not the escrow
//!   key: its data does not depend on the escrow's key policy.
//! - `iam.user.present` (low): an IAM user in the escrow account other than
//!   the identity running the audit (the runner); `iam.user.access-key`
//!   (low): its active access keys, or more than one active key of the
//!   runner's. Long-lived keys are what leaks.

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::Result;

use super::{Auditor, Finding, Findings, Severity};

/// The escrow key as an ARN when KMS can resolve it (an alias or key id in
/// the config), else as configured; `None` without `[escrow] kms_key_id`.
pub(super) async fn escrow_key(a: &Auditor) -> Option<String> {
    let key = a.inventory.escrow_kms_key.clone()?;
    let Some(kms) = &a.escrow.kms else { return Some(key) };
    match kms.describe_key().key_id(&key).send().await {
        Ok(out) => Some(out.key_metadata.and_then(|m| m.arn).unwrap_or(key)),
        // The key check reports a missing or unreadable key.
        Err(_) => Some(key),
    }
}

/// Whether the key a service reports (`got`: an ARN or key id) is the
/// escrow key (`want`: resolved by [`escrow_key`] when it could be).
fn same_key(want: &str, got: &str) -> bool {
    if want == got {
        return true;
    }
    let id = |k: &str| k.rsplit_once("key/").map_or(k, |(_, id)| id).to_string();
    !want.starts_with("alias/") && !want.contains(":alias/") && id(want) == id(got)
}

/// Whether the key a service reports (`got`) is the escrow key (`want`):
/// the same key, or, when `got` is an alias or a key id (S3's default
/// encryption keeps what was set, and an alias is valid there), the key KMS
/// resolves it to.
async fn is_escrow_key(a: &Auditor, want: &str, got: &str) -> bool {
    if same_key(want, got) {
        return true;
    }
    if got.starts_with("arn:") && got.contains(":key/") {
        return false;
    }
    let Some(kms) = &a.escrow.kms else { return false };
    match kms.describe_key().key_id(got).send().await {
        Ok(out) => out.key_metadata.and_then(|m| m.arn).is_some_and(|arn| same_key(want, &arn)),
        Err(_) => false,
    }
}

/// Object Lock (when no job asks for it) and default encryption of one
/// escrow bucket.
pub(super) async fn bucket(
    a: &Auditor,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    lock_asked: bool,
    uses: &str,
    key: Option<&str>,
    f: &mut Findings,
) -> Result<()> {
    let resource = format!("s3://{bucket}");
    if !lock_asked {
        let on = match s3.get_object_lock_configuration().bucket(bucket).send().await {
            Ok(out) => {
                out.object_lock_configuration().and_then(|c| c.object_lock_enabled())
                    == Some(&aws_sdk_s3::types::ObjectLockEnabled::Enabled)
            }
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => false,
            Err(e) => {
                let err = sdk_error(e, "s3:GetObjectLockConfiguration", &resource);
                f.could_not(err, &format!("Object Lock on escrow bucket {bucket}"))?;
                true
            }
        };
        if !on {
            f.push(Finding::new(
                Severity::Medium,
                "s3.bucket.object-lock-off",
                &resource,
                format!(
                    "escrow bucket {bucket} ({uses}) has no Object Lock: nothing in it can be \
                     locked, so an escrow insider can delete every version"
                ),
                format!(
                    "create the escrow bucket with Object Lock (aws s3api create-bucket --bucket \
                     {bucket} --object-lock-enabled-for-bucket, or `escrow-sync policy --format \
                     cloudformation`), move the jobs to it and set their object_lock"
                ),
            ));
        }
    }
    match s3.get_bucket_encryption().bucket(bucket).send().await {
        Ok(out) => {
            let rules = out
                .server_side_encryption_configuration()
                .map(|c| c.rules().to_vec())
                .unwrap_or_default();
            let defaults: Vec<(String, Option<String>)> = rules
                .iter()
                .filter_map(|r| r.apply_server_side_encryption_by_default())
                .map(|d| {
                    (
                        d.sse_algorithm().as_str().to_string(),
                        d.kms_master_key_id().map(str::to_string),
                    )
                })
                .collect();
            let problem = match (defaults.first(), key) {
                (None, _) => Some("has no default encryption".to_string()),
                (Some((alg, got)), Some(want)) => {
                    let kms = alg.starts_with("aws:kms");
                    let escrow = match got {
                        Some(got) if kms => is_escrow_key(a, want, got).await,
                        _ => false,
                    };
                    match got {
                        _ if escrow => None,
                        Some(got) if kms => Some(format!(
                            "encrypts by default with {got}, not the escrow key {want}"
                        )),
                        _ => Some(format!(
                            "encrypts by default with {alg}{}, not the escrow key {want}",
                            if kms { " and the AWS-managed key" } else { "" }
                        )),
                    }
                }
                (Some(_), None) => None,
            };
            if let Some(problem) = problem {
                push_encryption(f, bucket, &resource, uses, &problem, key);
            }
        }
        Err(e) if e.code() == Some("ServerSideEncryptionConfigurationNotFoundError") => {
            push_encryption(f, bucket, &resource, uses, "has no default encryption", key);
        }
        Err(e) => {
            let err = sdk_error(e, "s3:GetEncryptionConfiguration", &resource);
            f.could_not(err, &format!("the default encryption of escrow bucket {bucket}"))?;
        }
    }
    Ok(())
}

fn push_encryption(
    f: &mut Findings,
    bucket: &str,
    resource: &str,
    uses: &str,
    problem: &str,
    key: Option<&str>,
) {
    let fix = match key {
        Some(key) => format!(
            "aws s3api put-bucket-encryption --bucket {bucket} --server-side-encryption-configuration \
             '{{\"Rules\":[{{\"ApplyServerSideEncryptionByDefault\":{{\"SSEAlgorithm\":\"aws:kms\",\
             \"KMSMasterKeyID\":\"{key}\"}},\"BucketKeyEnabled\":true}}]}}'"
        ),
        None => format!(
            "set [escrow] kms_key_id to an escrow-owned key and make it the bucket's default \
             (aws s3api put-bucket-encryption --bucket {bucket} ...)"
        ),
    };
    f.push(Finding::new(
        Severity::Medium,
        "s3.bucket.default-encryption",
        resource,
        format!("escrow bucket {bucket} ({uses}) {problem}"),
        fix,
    ));
}

/// The encryption of one escrow table, from its description.
pub(super) async fn table_sse(
    a: &Auditor,
    table: &str,
    uses: &str,
    desc: Option<&aws_sdk_dynamodb::types::SseDescription>,
    key: Option<&str>,
    f: &mut Findings,
) {
    use aws_sdk_dynamodb::types::SseStatus;
    let resource = format!("dynamodb://{table}");
    let on = desc.and_then(|d| d.status()).is_some_and(|s| matches!(s, SseStatus::Enabled));
    let got = desc.filter(|_| on).and_then(|d| d.kms_master_key_arn());
    let escrow = match (got, key) {
        (Some(got), Some(want)) => is_escrow_key(a, want, got).await,
        _ => false,
    };
    let problem = match (got, key) {
        _ if escrow => return,
        (None, _) => "is encrypted with an AWS owned key".to_string(),
        (Some(got), Some(want)) => format!("is encrypted with {got}, not the escrow key {want}"),
        (Some(got), None) => format!(
            "is encrypted with {got}, and the config names no escrow key ([escrow] kms_key_id)"
        ),
    };
    let fix = match key {
        Some(key) => format!(
            "aws dynamodb update-table --table-name {table} --sse-specification \
             Enabled=true,SSEType=KMS,KMSMasterKeyId={key}"
        ),
        None => format!(
            "set [escrow] kms_key_id to an escrow-owned key, then aws dynamodb update-table \
             --table-name {table} --sse-specification Enabled=true,SSEType=KMS,KMSMasterKeyId=<key>"
        ),
    };
    f.push(Finding::high(
        "dynamodb.table.sse",
        resource,
        format!(
            "escrow table {table} ({uses}) {problem}: its data does not depend on the escrow key's \
             policy"
        ),
        fix,
    ));
}

/// IAM users and their active access keys, beyond the runner's own.
pub(super) async fn iam_users(
    a: &Auditor,
    iam: &aws_sdk_iam::Client,
    f: &mut Findings,
) -> Result<()> {
    let own = &a.inventory.escrow_account;
    let runner = match &a.escrow.sts {
        Some(sts) => match sts.get_caller_identity().send().await {
            Ok(out) => out.arn().map(str::to_string),
            Err(e) => {
                let err = sdk_error(e, "sts:GetCallerIdentity", format!("account {own}"));
                return f.could_not(err, "which identity runs the audit");
            }
        },
        None => None,
    };
    let resource = format!("iam users of account {own}");
    let mut pages = iam.list_users().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let err = sdk_error(e, "iam:ListUsers", &resource);
                return f.could_not(err, "the escrow's IAM users");
            }
        };
        for user in page.users() {
            let name = user.user_name();
            let is_runner = runner.as_deref() == Some(user.arn());
            let keys = match iam.list_access_keys().user_name(name).send().await {
                Ok(out) => out
                    .access_key_metadata()
                    .iter()
                    .filter(|k| k.status() == Some(&aws_sdk_iam::types::StatusType::Active))
                    .filter_map(|k| k.access_key_id().map(str::to_string))
                    .collect::<Vec<_>>(),
                Err(e) => {
                    let err = sdk_error(e, "iam:ListAccessKeys", user.arn());
                    f.could_not(err, &format!("the access keys of IAM user {name}"))?;
                    Vec::new()
                }
            };
            if is_runner {
                if keys.len() > 1 {
                    f.push(Finding::new(
                        Severity::Low,
                        "iam.user.access-key",
                        user.arn(),
                        format!(
                            "the runner {name} has {} active access keys ({}): one is enough, and \
                             each is a credential that can leak",
                            keys.len(),
                            keys.join(", ")
                        ),
                        format!(
                            "deactivate and delete all but the key in use (aws iam \
                             delete-access-key --user-name {name} --access-key-id ...)"
                        ),
                    ));
                }
                continue;
            }
            f.push(Finding::new(
                Severity::Low,
                "iam.user.present",
                user.arn(),
                format!(
                    "IAM user {name} in the escrow account, besides the runner: a long-lived \
                     identity an insider or a leaked password can use"
                ),
                format!(
                    "use roles (SSO) for people and the escrow operator role for escrow-sync; \
                     delete the user (aws iam delete-user --user-name {name}) if nothing needs it"
                ),
            ));
            if !keys.is_empty() {
                f.push(Finding::new(
                    Severity::Low,
                    "iam.user.access-key",
                    user.arn(),
                    format!(
                        "IAM user {name} has {} active access key(s) ({}) in the escrow account",
                        keys.len(),
                        keys.join(", ")
                    ),
                    format!(
                        "delete them (aws iam delete-access-key --user-name {name} \
                         --access-key-id ...) unless a documented process needs them"
                    ),
                ));
            }
        }
    }
    Ok(())
}
