//! Checks made before a job runs: buckets exist, and the destination belongs
//! to the escrow account.

use aws_sdk_s3::Client;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Error, ErrorKind, Result};

/// Checks that the source bucket exists and is readable from the primary.
/// A missing bucket is an invalid config naming the bucket and the account.
pub async fn check_source_bucket(client: &Client, bucket: &str, account_id: &str) -> Result<()> {
    head_bucket(client, bucket, account_id, "source", "primary").await
}

/// Checks that the destination bucket exists and is owned by the escrow
/// account (`ExpectedBucketOwner`, and the escrow's own bucket list).
pub async fn check_dest_bucket(client: &Client, bucket: &str, account_id: &str) -> Result<()> {
    head_bucket(client, bucket, account_id, "destination", "escrow").await?;
    // Where ListBuckets is allowed, the bucket must be among the escrow's own.
    let mut token = None;
    loop {
        let out = match client.list_buckets().set_continuation_token(token).send().await {
            Ok(out) => out,
            Err(e) => {
                let err = sdk_error(e, "s3:ListBuckets", "escrow account");
                if err.kind() == ErrorKind::AccessDenied {
                    tracing::debug!(
                        "cannot list the escrow's buckets; relying on ExpectedBucketOwner"
                    );
                    return Ok(());
                }
                return Err(err);
            }
        };
        if out.buckets().iter().any(|b| b.name() == Some(bucket)) {
            return Ok(());
        }
        match out.continuation_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Err(not_owned(bucket, account_id))
}

fn not_owned(bucket: &str, account_id: &str) -> Error {
    Error::invalid_config(format!(
        "destination bucket {bucket} is not owned by the escrow account {account_id}: every escrow \
         copy must live in a bucket the escrow account owns; create it there or fix dest_bucket"
    ))
}

async fn head_bucket(
    client: &Client,
    bucket: &str,
    account_id: &str,
    role: &str,
    side: &str,
) -> Result<()> {
    let owner = (!account_id.is_empty()).then(|| account_id.to_string());
    match client.head_bucket().bucket(bucket).set_expected_bucket_owner(owner).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let err = sdk_error(e, "s3:HeadBucket", format!("s3://{bucket}"));
            match err.kind() {
                ErrorKind::NotFound => Err(Error::invalid_config(format!(
                    "{role} bucket {bucket} does not exist in the {side} account {account_id}: \
                     create it or fix the bucket name"
                ))),
                ErrorKind::AccessDenied if role == "destination" => {
                    Err(not_owned(bucket, account_id))
                }
                ErrorKind::AccessDenied => Err(Error::new(
                    ErrorKind::AccessDenied,
                    "s3:HeadBucket",
                    format!("s3://{bucket}"),
                    format!(
                        "the {side} account {account_id} does not own the {role} bucket, or the \
                         reader role may not read it: check the bucket name and the role's policy"
                    ),
                )
                .with_source(err)),
                _ => Err(err),
            }
        }
    }
}

/// Checks the destination bucket can hold protected escrow copies: versioning
/// on (unless `allow_unversioned`), and Object Lock enabled when retention is
/// asked for.
pub async fn check_dest_protection(
    client: &Client,
    bucket: &str,
    allow_unversioned: bool,
    object_lock: bool,
) -> Result<()> {
    if !allow_unversioned {
        let enabled = match client.get_bucket_versioning().bucket(bucket).send().await {
            Ok(out) => out.status() == Some(&aws_sdk_s3::types::BucketVersioningStatus::Enabled),
            // Some S3 implementations (moto) wrap the answer in an element the
            // SDK does not expect; a 200 answer's Status element still tells.
            Err(e) if raw_200_body(&e).is_some() => {
                raw_200_body(&e).is_some_and(|body| body.contains("<Status>Enabled</Status>"))
            }
            Err(e) => return Err(sdk_error(e, "s3:GetBucketVersioning", format!("s3://{bucket}"))),
        };
        if !enabled {
            return Err(Error::invalid_config(format!(
                "destination bucket {bucket} does not have versioning enabled: an escrow bucket \
                 keeps every version so an overwrite can never destroy a copy; enable versioning \
                 on it, or set allow_unversioned_dest = true in the job"
            )));
        }
    }
    if object_lock {
        let enabled = match client.get_object_lock_configuration().bucket(bucket).send().await {
            Ok(out) => out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| *e == aws_sdk_s3::types::ObjectLockEnabled::Enabled),
            Err(e) => {
                let not_configured = e
                    .as_service_error()
                    .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                    .is_some_and(|c| c == "ObjectLockConfigurationNotFoundError");
                if !not_configured {
                    return Err(sdk_error(
                        e,
                        "s3:GetObjectLockConfiguration",
                        format!("s3://{bucket}"),
                    ));
                }
                false
            }
        };
        if !enabled {
            return Err(Error::invalid_config(format!(
                "destination bucket {bucket} does not have Object Lock enabled, but the job sets \
                 object_lock: create the escrow bucket with Object Lock enabled, or remove \
                 object_lock from the job"
            )));
        }
    }
    Ok(())
}

/// Checks that `key` (id, alias or ARN) is not a key of another account:
/// escrow copies are encrypted with a key the escrow account owns.
pub fn check_kms_key(key: &str, escrow_account: &str) -> Result<()> {
    if let Some(rest) = key.strip_prefix("arn:") {
        let account = rest.split(':').nth(3).unwrap_or_default();
        if !escrow_account.is_empty() && account != escrow_account {
            return Err(Error::invalid_config(format!(
                "[escrow] kms_key_id {key} belongs to account {account}, not the escrow account \
                 {escrow_account}: escrow copies must be encrypted with a key the escrow owns"
            )));
        }
    }
    if key.trim().is_empty() {
        return Err(Error::invalid_config(
            "[escrow] kms_key_id is empty: give a key id, alias/NAME or key ARN in the escrow account",
        ));
    }
    Ok(())
}

/// The body of a 200 response the SDK could not parse, if that is what `err` is.
fn raw_200_body<E>(
    err: &aws_sdk_s3::error::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> Option<String> {
    let raw = err.raw_response()?;
    if raw.status().as_u16() != 200 {
        return None;
    }
    raw.body().bytes().map(|b| String::from_utf8_lossy(b).into_owned())
}
