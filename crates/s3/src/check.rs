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
    match client.head_bucket().bucket(bucket).expected_bucket_owner(account_id).send().await {
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
