//! The audit's checks of what keeps escrow sealed beyond each copy (issue
//! 17, point 4), with aws-smithy-mocks: buckets without Object Lock or
//! default encryption with the escrow key, escrow tables not encrypted with
//! it, and IAM users and access keys beyond the runner.

use aws_sdk_dynamodb::operation::describe_continuous_backups::DescribeContinuousBackupsOutput;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::describe_time_to_live::DescribeTimeToLiveOutput;
use aws_sdk_dynamodb::types::{
    ContinuousBackupsDescription, ContinuousBackupsStatus, PointInTimeRecoveryDescription,
    PointInTimeRecoveryStatus, SseDescription, SseStatus, SseType, TableDescription,
};
use aws_sdk_iam::operation::list_access_keys::ListAccessKeysOutput;
use aws_sdk_iam::operation::list_roles::ListRolesOutput;
use aws_sdk_iam::operation::list_users::ListUsersOutput;
use aws_sdk_iam::types::{AccessKeyMetadata, StatusType, User};
use aws_sdk_s3::operation::get_bucket_acl::GetBucketAclOutput;
use aws_sdk_s3::operation::get_bucket_encryption::{
    GetBucketEncryptionError, GetBucketEncryptionOutput,
};
use aws_sdk_s3::operation::get_bucket_policy::GetBucketPolicyError;
use aws_sdk_s3::operation::get_bucket_versioning::GetBucketVersioningOutput;
use aws_sdk_s3::operation::get_object_lock_configuration::{
    GetObjectLockConfigurationError, GetObjectLockConfigurationOutput,
};
use aws_sdk_s3::operation::get_public_access_block::GetPublicAccessBlockOutput;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ObjectLockConfiguration, ObjectLockEnabled, Owner,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;

use escrow_sync_governance::Inventory;
use escrow_sync_governance::audit::{Auditor, Finding, Severity};
use escrow_sync_governance::inventory::{S3Grant, TableGrant};

const ESCROW: &str = "222222222222";
const KEY: &str = "arn:aws:kms:us-east-1:222222222222:key/k1";

fn inventory() -> Inventory {
    Inventory {
        escrow_account: ESCROW.into(),
        primary_account: "111111111111".into(),
        region: "us-east-1".into(),
        escrow_kms_key: Some(KEY.into()),
        ..Default::default()
    }
}

fn checks(found: &[Finding]) -> Vec<(Severity, &str, &str)> {
    found.iter().map(|f| (f.severity, f.check.as_str(), f.resource.as_str())).collect()
}

fn sse(algorithm: ServerSideEncryption, key: Option<&str>) -> GetBucketEncryptionOutput {
    GetBucketEncryptionOutput::builder()
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(algorithm)
                                .set_kms_master_key_id(key.map(str::to_string))
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .build()
}

/// Everything else about a bucket is as it should be.
fn otherwise_settled() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_s3::Client::get_bucket_versioning).then_output(|| {
            GetBucketVersioningOutput::builder().status(BucketVersioningStatus::Enabled).build()
        }),
        mock!(aws_sdk_s3::Client::get_public_access_block).then_output(|| {
            GetPublicAccessBlockOutput::builder()
                .public_access_block_configuration(
                    PublicAccessBlockConfiguration::builder()
                        .block_public_acls(true)
                        .ignore_public_acls(true)
                        .block_public_policy(true)
                        .restrict_public_buckets(true)
                        .build(),
                )
                .build()
        }),
        mock!(aws_sdk_s3::Client::get_bucket_policy).then_error(|| {
            GetBucketPolicyError::generic(
                ErrorMetadata::builder().code("NoSuchBucketPolicy").build(),
            )
        }),
        mock!(aws_sdk_s3::Client::get_bucket_acl).then_output(|| {
            GetBucketAclOutput::builder().owner(Owner::builder().id("escrow-owner").build()).build()
        }),
        mock!(aws_sdk_s3::Client::get_bucket_lifecycle_configuration).then_error(|| {
            aws_sdk_s3::operation::get_bucket_lifecycle_configuration::GetBucketLifecycleConfigurationError::generic(
                ErrorMetadata::builder().code("NoSuchLifecycleConfiguration").build(),
            )
        }),
        mock!(aws_sdk_s3::Client::get_bucket_replication).then_error(|| {
            aws_sdk_s3::operation::get_bucket_replication::GetBucketReplicationError::generic(
                ErrorMetadata::builder().code("ReplicationConfigurationNotFoundError").build(),
            )
        }),
    ]
}

#[tokio::test]
async fn buckets_without_object_lock_or_the_escrow_key_by_default_are_medium() {
    let inv = Inventory {
        s3: ["plain", "other-key", "sealed", "none", "alias"]
            .map(|b| S3Grant {
                name: b.into(),
                dest_bucket: format!("esc-{b}"),
                object_lock: b == "sealed",
                ..Default::default()
            })
            .to_vec(),
        ..inventory()
    };
    let mut rules = vec![
        mock!(aws_sdk_s3::Client::get_object_lock_configuration)
            .match_requests(|r| r.bucket() == Some("esc-plain"))
            .then_error(|| {
                GetObjectLockConfigurationError::generic(
                    ErrorMetadata::builder().code("ObjectLockConfigurationNotFoundError").build(),
                )
            }),
        mock!(aws_sdk_s3::Client::get_object_lock_configuration).then_output(|| {
            GetObjectLockConfigurationOutput::builder()
                .object_lock_configuration(
                    ObjectLockConfiguration::builder()
                        .object_lock_enabled(ObjectLockEnabled::Enabled)
                        .build(),
                )
                .build()
        }),
        mock!(aws_sdk_s3::Client::get_bucket_encryption)
            .match_requests(|r| r.bucket() == Some("esc-plain"))
            .then_output(|| sse(ServerSideEncryption::Aes256, None)),
        mock!(aws_sdk_s3::Client::get_bucket_encryption)
            .match_requests(|r| r.bucket() == Some("esc-other-key"))
            .then_output(|| {
                sse(ServerSideEncryption::AwsKms, Some("arn:aws:kms:us-east-1:222222222222:key/k2"))
            }),
        mock!(aws_sdk_s3::Client::get_bucket_encryption)
            .match_requests(|r| r.bucket() == Some("esc-none"))
            .then_error(|| {
                GetBucketEncryptionError::generic(
                    ErrorMetadata::builder()
                        .code("ServerSideEncryptionConfigurationNotFoundError")
                        .build(),
                )
            }),
        // An alias KMS resolves to the escrow key.
        mock!(aws_sdk_s3::Client::get_bucket_encryption)
            .match_requests(|r| r.bucket() == Some("esc-alias"))
            .then_output(|| sse(ServerSideEncryption::AwsKms, Some("alias/escrow"))),
        // The key id alone names the same key as its ARN.
        mock!(aws_sdk_s3::Client::get_bucket_encryption)
            .then_output(|| sse(ServerSideEncryption::AwsKms, Some("k1"))),
    ];
    rules.extend(otherwise_settled());
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
    let describe = mock!(aws_sdk_kms::Client::describe_key)
        .match_requests(|r| r.key_id() == Some("alias/escrow"))
        .then_output(|| {
            aws_sdk_kms::operation::describe_key::DescribeKeyOutput::builder()
                .key_metadata(
                    aws_sdk_kms::types::KeyMetadata::builder()
                        .key_id("k1")
                        .arn(KEY)
                        .build()
                        .unwrap(),
                )
                .build()
        });
    // KMS also answers the key's own checks (audit_mocks covers them: only
    // the S3 findings are looked at here).
    let escrow_key = mock!(aws_sdk_kms::Client::describe_key).then_output(|| {
        aws_sdk_kms::operation::describe_key::DescribeKeyOutput::builder()
            .key_metadata(
                aws_sdk_kms::types::KeyMetadata::builder()
                    .key_id("k1")
                    .arn(KEY)
                    .aws_account_id(ESCROW)
                    .key_state(aws_sdk_kms::types::KeyState::Enabled)
                    .build()
                    .unwrap(),
            )
            .build()
    });
    let policy = mock!(aws_sdk_kms::Client::get_key_policy).then_output(|| {
        aws_sdk_kms::operation::get_key_policy::GetKeyPolicyOutput::builder().build()
    });
    let grants = mock!(aws_sdk_kms::Client::list_grants)
        .then_output(|| aws_sdk_kms::operation::list_grants::ListGrantsOutput::builder().build());
    let kms =
        mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&describe, &escrow_key, &policy, &grants]);
    let found = Auditor::new(inv).with_s3_client(s3).with_kms_client(kms).run().await.unwrap();
    let found: Vec<Finding> = found.into_iter().filter(|f| f.check.starts_with("s3.")).collect();
    assert!(describe.num_calls() >= 1);
    assert_eq!(
        checks(&found),
        [
            (Severity::Medium, "s3.bucket.default-encryption", "s3://esc-none"),
            (Severity::Medium, "s3.bucket.default-encryption", "s3://esc-other-key"),
            (Severity::Medium, "s3.bucket.default-encryption", "s3://esc-plain"),
            (Severity::Medium, "s3.bucket.object-lock-off", "s3://esc-plain"),
        ]
    );
    let text = |i: usize| format!("{} | {}", found[i].problem, found[i].fix);
    assert!(text(0).contains("has no default encryption"), "{}", text(0));
    assert!(text(1).contains("key/k2, not the escrow key"), "{}", text(1));
    assert!(text(2).contains("AES256"), "{}", text(2));
    assert!(text(2).contains(&format!("\"KMSMasterKeyID\":\"{KEY}\"")), "{}", text(2));
    assert!(text(3).contains("--object-lock-enabled-for-bucket"), "{}", text(3));
}

fn table(name: &'static str, sse: Option<SseDescription>) -> Rule {
    mock!(aws_sdk_dynamodb::Client::describe_table)
        .match_requests(move |r| r.table_name() == Some(name))
        .then_output(move || {
            DescribeTableOutput::builder()
                .table(
                    TableDescription::builder()
                        .deletion_protection_enabled(true)
                        .set_sse_description(sse.clone())
                        .build(),
                )
                .build()
        })
}

fn kms_sse(key: &str) -> Option<SseDescription> {
    Some(
        SseDescription::builder()
            .status(SseStatus::Enabled)
            .sse_type(SseType::Kms)
            .kms_master_key_arn(key)
            .build(),
    )
}

#[tokio::test]
async fn escrow_tables_must_be_encrypted_with_the_escrow_key() {
    let inv = Inventory {
        dynamodb: ["owned", "managed", "escrow"]
            .map(|t| TableGrant {
                name: t.into(),
                dest_table: Some(format!("t-{t}")),
                native_export: true,
                ..Default::default()
            })
            .to_vec(),
        ..inventory()
    };
    let rules = [
        table("t-owned", None),
        table("t-managed", kms_sse("arn:aws:kms:us-east-1:222222222222:key/aws-managed")),
        table("t-escrow", kms_sse(KEY)),
        mock!(aws_sdk_dynamodb::Client::describe_continuous_backups).then_output(|| {
            DescribeContinuousBackupsOutput::builder()
                .continuous_backups_description(
                    ContinuousBackupsDescription::builder()
                        .continuous_backups_status(ContinuousBackupsStatus::Enabled)
                        .point_in_time_recovery_description(
                            PointInTimeRecoveryDescription::builder()
                                .point_in_time_recovery_status(PointInTimeRecoveryStatus::Enabled)
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
        }),
        mock!(aws_sdk_dynamodb::Client::describe_time_to_live)
            .then_output(|| DescribeTimeToLiveOutput::builder().build()),
    ];
    let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
    let found = Auditor::new(inv).with_dynamodb_client(ddb).run().await.unwrap();
    assert_eq!(
        checks(&found),
        [
            (Severity::High, "dynamodb.table.sse", "dynamodb://t-managed"),
            (Severity::High, "dynamodb.table.sse", "dynamodb://t-owned"),
        ]
    );
    assert!(found[0].problem.contains("key/aws-managed, not the escrow key"), "{found:?}");
    assert!(found[1].problem.contains("AWS owned key"), "{found:?}");
    assert!(found[1].fix.contains(&format!("KMSMasterKeyId={KEY}")), "{found:?}");
}

fn user(name: &str) -> User {
    User::builder()
        .user_name(name)
        .user_id(format!("ID{name}"))
        .arn(format!("arn:aws:iam::{ESCROW}:user/{name}"))
        .path("/")
        .create_date(aws_smithy_types::DateTime::from_secs(0))
        .build()
        .unwrap()
}

fn keys(user: &'static str, states: &'static [StatusType]) -> Rule {
    mock!(aws_sdk_iam::Client::list_access_keys)
        .match_requests(move |r| r.user_name() == Some(user))
        .then_output(move || {
            ListAccessKeysOutput::builder()
                .set_access_key_metadata(Some(
                    states
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            AccessKeyMetadata::builder()
                                .access_key_id(format!("AKIA{user}{i}"))
                                .status(s.clone())
                                .build()
                        })
                        .collect(),
                ))
                .is_truncated(false)
                .build()
                .unwrap()
        })
}

#[tokio::test]
async fn iam_users_and_keys_beyond_the_runner_are_low() {
    let roles = mock!(aws_sdk_iam::Client::list_roles).then_output(|| {
        ListRolesOutput::builder().set_roles(Some(Vec::new())).is_truncated(false).build().unwrap()
    });
    let users = mock!(aws_sdk_iam::Client::list_users).then_output(|| {
        ListUsersOutput::builder()
            .users(user("runner"))
            .users(user("alice"))
            .users(user("bob"))
            .is_truncated(false)
            .build()
            .unwrap()
    });
    let runner_keys = keys("runner", &[StatusType::Active, StatusType::Active]);
    let alice_keys = keys("alice", &[StatusType::Active, StatusType::Inactive]);
    let bob_keys = keys("bob", &[StatusType::Inactive]);
    let iam = mock_client!(
        aws_sdk_iam,
        RuleMode::MatchAny,
        [&roles, &users, &runner_keys, &alice_keys, &bob_keys]
    );
    let me = mock!(aws_sdk_sts::Client::get_caller_identity).then_output(|| {
        aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput::builder()
            .arn(format!("arn:aws:iam::{ESCROW}:user/runner"))
            .account(ESCROW)
            .build()
    });
    let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&me]);
    let found =
        Auditor::new(inventory()).with_iam_client(iam).with_sts_client(sts).run().await.unwrap();
    let arn = |n: &str| format!("arn:aws:iam::{ESCROW}:user/{n}");
    assert_eq!(
        checks(&found),
        [
            (Severity::Low, "iam.user.access-key", arn("alice").as_str()),
            (Severity::Low, "iam.user.access-key", arn("runner").as_str()),
            (Severity::Low, "iam.user.present", arn("alice").as_str()),
            (Severity::Low, "iam.user.present", arn("bob").as_str()),
        ]
    );
    assert!(found[0].problem.contains("1 active access key(s) (AKIAalice0)"), "{found:?}");
    assert!(found[1].problem.contains("the runner runner has 2 active access keys"), "{found:?}");
}
