//! The isolation audit against aws-smithy-mocks: the request shape of each
//! check, ListRoles / ListGrants / DescribeSnapshots pagination, trust,
//! bucket and key policies of every principal shape, missing resources as
//! findings, access denied as a medium "could not check" finding, other
//! failures ending the audit, and the primary's probes.
//!
//! The two-account suite (tests/governance_audit.rs) plants each violation
//! on the emulator. RDS and Redshift shares are covered there only: this
//! crate's dev-dependencies have no `test-util` for aws-sdk-rds / -redshift.

use aws_sdk_cloudtrail::operation::describe_trails::DescribeTrailsOutput;
use aws_sdk_cloudtrail::operation::get_trail_status::GetTrailStatusOutput;
use aws_sdk_cloudtrail::types::Trail;
use aws_sdk_dynamodb::operation::describe_continuous_backups::DescribeContinuousBackupsOutput;
use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
use aws_sdk_dynamodb::operation::describe_time_to_live::DescribeTimeToLiveOutput;
use aws_sdk_dynamodb::types::{
    ContinuousBackupsDescription, ContinuousBackupsStatus, PointInTimeRecoveryDescription,
    PointInTimeRecoveryStatus, TableDescription, TimeToLiveDescription, TimeToLiveStatus,
};
use aws_sdk_ec2::operation::describe_image_attribute::DescribeImageAttributeOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_snapshot_attribute::DescribeSnapshotAttributeOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::types::{
    CreateVolumePermission, Image, LaunchPermission, PermissionGroup, Snapshot,
};
use aws_sdk_iam::operation::list_roles::ListRolesOutput;
use aws_sdk_iam::types::Role;
use aws_sdk_kms::operation::describe_key::{DescribeKeyError, DescribeKeyOutput};
use aws_sdk_kms::operation::get_key_policy::GetKeyPolicyOutput;
use aws_sdk_kms::operation::list_grants::ListGrantsOutput;
use aws_sdk_kms::types::{GrantListEntry, KeyMetadata, KeyState};
use aws_sdk_s3::operation::get_bucket_acl::GetBucketAclOutput;
use aws_sdk_s3::operation::get_bucket_policy::{GetBucketPolicyError, GetBucketPolicyOutput};
use aws_sdk_s3::operation::get_bucket_versioning::{
    GetBucketVersioningError, GetBucketVersioningOutput,
};
use aws_sdk_s3::operation::get_object_lock_configuration::{
    GetObjectLockConfigurationError, GetObjectLockConfigurationOutput,
};
use aws_sdk_s3::operation::get_public_access_block::{
    GetPublicAccessBlockError, GetPublicAccessBlockOutput,
};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::{
    BucketVersioningStatus, Grant, Grantee, Owner, Permission, PublicAccessBlockConfiguration, Type,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;

use escrow_sync_core::ErrorKind;
use escrow_sync_governance::Inventory;
use escrow_sync_governance::audit::{Auditor, Finding, Severity};
use escrow_sync_governance::inventory::{Ec2Grant, ManifestLocation, S3Grant, TableGrant};

const ESCROW: &str = "222222222222";
const PRIMARY: &str = "111111111111";
const ESCROW_KEY: &str = "arn:aws:kms:us-east-1:222222222222:key/k-1";

fn inventory() -> Inventory {
    Inventory {
        region: "us-east-1".into(),
        escrow_account: ESCROW.into(),
        primary_account: PRIMARY.into(),
        ..Default::default()
    }
}

fn checks(found: &[Finding]) -> Vec<(Severity, &str, &str)> {
    found.iter().map(|f| (f.severity, f.check.as_str(), f.resource.as_str())).collect()
}

fn encode(doc: &str) -> String {
    // RFC 3986 percent-encoding, as IAM returns trust policies.
    doc.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ------------------------------------------------------------------ IAM

fn role(name: &str, trust: &str) -> Role {
    Role::builder()
        .role_name(name)
        .arn(format!("arn:aws:iam::{ESCROW}:role/{name}"))
        .path("/")
        .role_id(name)
        .create_date(aws_smithy_types::DateTime::from_secs(0))
        .assume_role_policy_document(encode(trust))
        .build()
        .unwrap()
}

#[tokio::test]
async fn trust_policies_of_every_shape_are_read_across_pages() {
    let page1 = mock!(aws_sdk_iam::Client::list_roles)
        .match_requests(|r| r.marker().is_none())
        .then_output(|| {
            ListRolesOutput::builder()
                .roles(role(
                    "operator",
                    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
                        "Principal":{"AWS":"arn:aws:iam::222222222222:root"},"Action":"sts:AssumeRole"}]}"#,
                ))
                .roles(role(
                    "lambda",
                    r#"{"Statement":{"Effect":"Allow","Principal":{"Service":["lambda.amazonaws.com"]},
                        "Action":"sts:AssumeRole"}}"#,
                ))
                .roles(role(
                    "from-primary",
                    r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::222222222222:role/x",
                        "111111111111"]},"Action":"sts:AssumeRole",
                        "Condition":{"StringEquals":{"sts:ExternalId":"e"}}}]}"#,
                ))
                .is_truncated(true)
                .marker("page-2")
                .build()
                .unwrap()
        });
    let page2 = mock!(aws_sdk_iam::Client::list_roles)
        .match_requests(|r| r.marker() == Some("page-2"))
        .then_output(|| {
            ListRolesOutput::builder()
                .roles(role(
                    "anyone",
                    r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole"}]}"#,
                ))
                .roles(role(
                    "google",
                    r#"{"Statement":[{"Effect":"Allow","Principal":{"Federated":"accounts.google.com"},
                        "Action":"sts:AssumeRoleWithWebIdentity"}]}"#,
                ))
                .roles(role(
                    "sso",
                    r#"{"Statement":[{"Effect":"Allow","Principal":{"Federated":
                        "arn:aws:iam::222222222222:saml-provider/sso"},"Action":"sts:AssumeRoleWithSAML"},
                        {"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::333333333333:root"},"Action":"*"}]}"#,
                ))
                .roles({
                    let mut r = role("broken", "{");
                    r.assume_role_policy_document = Some("%7B%ZZ".into());
                    r
                })
                .is_truncated(false)
                .build()
                .unwrap()
        });
    let users = no_users();
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&page1, &page2, &users]);
    let found = Auditor::new(inventory()).with_iam_client(iam).run().await.unwrap();
    assert_eq!((page1.num_calls(), page2.num_calls()), (1, 1));
    let arn = |n: &str| format!("arn:aws:iam::{ESCROW}:role/{n}");
    assert_eq!(
        checks(&found),
        [
            (Severity::High, "iam.trust.foreign-principal", arn("anyone").as_str()),
            (Severity::High, "iam.trust.foreign-principal", arn("from-primary").as_str()),
            (Severity::High, "iam.trust.foreign-principal", arn("google").as_str()),
            (Severity::Medium, "iam.trust.unreadable", arn("broken").as_str()),
        ]
    );
    let primary = &found[1];
    assert!(primary.problem.contains("by the primary"), "{primary:?}");
    assert!(primary.problem.contains("the primary account 111111111111"), "{primary:?}");
    assert!(primary.fix.contains("--role-name from-primary"), "{primary:?}");
    assert!(found[0].problem.contains("everyone (*)"), "{:?}", found[0]);
    assert!(found[2].problem.contains("federated accounts.google.com"), "{:?}", found[2]);
}

#[tokio::test]
async fn access_denied_on_list_roles_is_a_medium_finding() {
    let denied = mock!(aws_sdk_iam::Client::list_roles).then_error(|| {
        aws_sdk_iam::operation::list_roles::ListRolesError::generic(
            ErrorMetadata::builder().code("AccessDenied").message("not allowed").build(),
        )
    });
    let users = no_users();
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&denied, &users]);
    let found = Auditor::new(inventory()).with_iam_client(iam).run().await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].severity, Severity::Medium);
    assert_eq!(found[0].check, "audit.access-denied");
    assert!(found[0].problem.starts_with("could not check the trust policies"), "{found:?}");
    assert!(found[0].fix.contains("iam:ListRoles"), "{found:?}");
}

#[tokio::test]
async fn other_failures_end_the_audit() {
    let broken = mock!(aws_sdk_iam::Client::list_roles).then_error(|| {
        aws_sdk_iam::operation::list_roles::ListRolesError::generic(
            ErrorMetadata::builder().code("ValidationError").message("bad").build(),
        )
    });
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&broken]);
    let err = Auditor::new(inventory()).with_iam_client(iam).run().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    assert!(err.to_string().contains("iam:ListRoles"), "{err}");
}

// ------------------------------------------------------------------ S3

/// GetBucketLifecycleConfiguration of a bucket without rules.
fn no_lifecycle() -> Rule {
    mock!(aws_sdk_s3::Client::get_bucket_lifecycle_configuration).then_error(|| {
        aws_sdk_s3::operation::get_bucket_lifecycle_configuration::GetBucketLifecycleConfigurationError::generic(
            ErrorMetadata::builder().code("NoSuchLifecycleConfiguration").build(),
        )
    })
}

/// The answers of a bucket with versioning on, every public access block
/// flag set, no policy and an owner-only ACL (the checks other tests are not
/// about).
fn settled_bucket() -> Vec<Rule> {
    vec![
        mock!(aws_sdk_s3::Client::get_bucket_versioning).then_output(|| {
            GetBucketVersioningOutput::builder().status(BucketVersioningStatus::Enabled).build()
        }),
        mock!(aws_sdk_s3::Client::get_public_access_block).then_output(|| {
            GetPublicAccessBlockOutput::builder()
                .public_access_block_configuration(all_blocked())
                .build()
        }),
        mock!(aws_sdk_s3::Client::get_bucket_policy).then_error(|| {
            GetBucketPolicyError::generic(
                ErrorMetadata::builder().code("NoSuchBucketPolicy").build(),
            )
        }),
        mock!(aws_sdk_s3::Client::get_bucket_acl).then_output(owner_only_acl),
        lock_enabled(),
        sse_s3(),
    ]
}

/// GetObjectLockConfiguration of a bucket with Object Lock.
fn lock_enabled() -> Rule {
    mock!(aws_sdk_s3::Client::get_object_lock_configuration).then_output(|| {
        GetObjectLockConfigurationOutput::builder()
            .object_lock_configuration(
                aws_sdk_s3::types::ObjectLockConfiguration::builder()
                    .object_lock_enabled(aws_sdk_s3::types::ObjectLockEnabled::Enabled)
                    .build(),
            )
            .build()
    })
}

/// GetBucketEncryption answering `algorithm` (and `key`) by default.
fn sse(
    algorithm: aws_sdk_s3::types::ServerSideEncryption,
    key: Option<&str>,
) -> aws_sdk_s3::operation::get_bucket_encryption::GetBucketEncryptionOutput {
    aws_sdk_s3::operation::get_bucket_encryption::GetBucketEncryptionOutput::builder()
        .server_side_encryption_configuration(
            aws_sdk_s3::types::ServerSideEncryptionConfiguration::builder()
                .rules(
                    aws_sdk_s3::types::ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            aws_sdk_s3::types::ServerSideEncryptionByDefault::builder()
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

/// GetBucketEncryption of a bucket encrypting with SSE-S3 by default.
fn sse_s3() -> Rule {
    mock!(aws_sdk_s3::Client::get_bucket_encryption)
        .then_output(|| sse(aws_sdk_s3::types::ServerSideEncryption::Aes256, None))
}

/// ListUsers of an account without IAM users.
fn no_users() -> Rule {
    mock!(aws_sdk_iam::Client::list_users).then_output(|| {
        aws_sdk_iam::operation::list_users::ListUsersOutput::builder()
            .set_users(Some(Vec::new()))
            .is_truncated(false)
            .build()
            .unwrap()
    })
}

/// GetBucketReplication of a bucket without replication.
fn no_replication() -> Rule {
    mock!(aws_sdk_s3::Client::get_bucket_replication).then_error(|| {
        aws_sdk_s3::operation::get_bucket_replication::GetBucketReplicationError::generic(
            ErrorMetadata::builder().code("ReplicationConfigurationNotFoundError").build(),
        )
    })
}

/// GetBucketLifecycleConfiguration answering `rules`.
fn lifecycle(rules: Vec<aws_sdk_s3::types::LifecycleRule>) -> Rule {
    mock!(aws_sdk_s3::Client::get_bucket_lifecycle_configuration).then_output(move || {
        aws_sdk_s3::operation::get_bucket_lifecycle_configuration::GetBucketLifecycleConfigurationOutput::builder()
            .set_rules(Some(rules.clone()))
            .build()
    })
}

fn s3_inventory() -> Inventory {
    Inventory {
        s3: vec![
            S3Grant {
                name: "assets".into(),
                dest_bucket: "esc-assets".into(),
                ..Default::default()
            },
            S3Grant {
                name: "locked".into(),
                dest_bucket: "esc-locked".into(),
                object_lock: true,
                ..Default::default()
            },
        ],
        manifest: Some(ManifestLocation { bucket: "esc-gone".into(), ..Default::default() }),
        ..inventory()
    }
}

fn all_blocked() -> PublicAccessBlockConfiguration {
    PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build()
}

/// A grant of `permission` to the canonical user `id`.
fn grant_to(id: &str, permission: Permission) -> Grant {
    Grant::builder()
        .grantee(Grantee::builder().r#type(Type::CanonicalUser).id(id).build().unwrap())
        .permission(permission)
        .build()
}

/// A grant of `permission` to the group `uri`.
fn grant_to_group(uri: &str, permission: Permission) -> Grant {
    Grant::builder()
        .grantee(Grantee::builder().r#type(Type::Group).uri(uri).build().unwrap())
        .permission(permission)
        .build()
}

/// The bucket owner's ACL: full control to the owner only.
fn owner_only_acl() -> GetBucketAclOutput {
    GetBucketAclOutput::builder()
        .owner(Owner::builder().id("escrow-owner").build())
        .grants(grant_to("escrow-owner", Permission::FullControl))
        .build()
}

#[tokio::test]
async fn bucket_settings_and_policies_are_checked_per_escrow_bucket() {
    let versioning = [
        mock!(aws_sdk_s3::Client::get_bucket_versioning)
            .match_requests(|r| r.bucket() == Some("esc-assets"))
            .then_output(|| {
                GetBucketVersioningOutput::builder()
                    .status(BucketVersioningStatus::Suspended)
                    .build()
            }),
        mock!(aws_sdk_s3::Client::get_bucket_versioning)
            .match_requests(|r| r.bucket() == Some("esc-locked"))
            .then_output(|| {
                GetBucketVersioningOutput::builder().status(BucketVersioningStatus::Enabled).build()
            }),
        mock!(aws_sdk_s3::Client::get_bucket_versioning)
            .match_requests(|r| r.bucket() == Some("esc-gone"))
            .then_error(|| {
                GetBucketVersioningError::generic(
                    ErrorMetadata::builder().code("NoSuchBucket").build(),
                )
            }),
    ];
    // Object Lock is asked of esc-locked only.
    let lock = mock!(aws_sdk_s3::Client::get_object_lock_configuration)
        .match_requests(|r| r.bucket() == Some("esc-locked"))
        .then_error(|| {
            GetObjectLockConfigurationError::generic(
                ErrorMetadata::builder().code("ObjectLockConfigurationNotFoundError").build(),
            )
        });
    let pab = [
        mock!(aws_sdk_s3::Client::get_public_access_block)
            .match_requests(|r| r.bucket() == Some("esc-assets"))
            .then_output(|| {
                GetPublicAccessBlockOutput::builder()
                    .public_access_block_configuration(
                        PublicAccessBlockConfiguration::builder()
                            .block_public_acls(true)
                            .ignore_public_acls(true)
                            .block_public_policy(false)
                            .build(),
                    )
                    .build()
            }),
        mock!(aws_sdk_s3::Client::get_public_access_block)
            .match_requests(|r| r.bucket() == Some("esc-locked"))
            .then_error(|| {
                GetPublicAccessBlockError::generic(
                    ErrorMetadata::builder().code("NoSuchPublicAccessBlockConfiguration").build(),
                )
            }),
    ];
    let policy = [
        mock!(aws_sdk_s3::Client::get_bucket_policy)
            .match_requests(|r| r.bucket() == Some("esc-assets"))
            .then_output(|| {
                GetBucketPolicyOutput::builder()
                    .policy(
                        r#"{"Version":"2012-10-17","Statement":[
                        {"Sid":"trail","Effect":"Allow","Principal":{"Service":"cloudtrail.amazonaws.com"},
                         "Action":"s3:PutObject","Resource":"arn:aws:s3:::esc-assets/*"},
                        {"Sid":"own","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::222222222222:role/op"},
                         "Action":"s3:*","Resource":"*"},
                        {"Sid":"leak","Effect":"Allow","Principal":{"AWS":["arn:aws:iam::111111111111:role/reader",
                         "arn:aws:iam::333333333333:root"]},"Action":"s3:GetObject","Resource":"*"}]}"#,
                    )
                    .build()
            }),
        mock!(aws_sdk_s3::Client::get_bucket_policy)
            .match_requests(|r| r.bucket() == Some("esc-locked"))
            .then_error(|| {
                GetBucketPolicyError::generic(
                    ErrorMetadata::builder().code("AccessDenied").message("Access Denied").build(),
                )
            }),
    ];
    let acl = [
        mock!(aws_sdk_s3::Client::get_bucket_acl)
            .match_requests(|r| r.bucket() == Some("esc-assets"))
            .then_output(|| {
                GetBucketAclOutput::builder()
                    .owner(Owner::builder().id("escrow-owner").build())
                    .grants(grant_to("escrow-owner", Permission::FullControl))
                    .grants(grant_to("primary-canonical-id", Permission::Read))
                    .grants(grant_to_group(
                        "http://acs.amazonaws.com/groups/global/AllUsers",
                        Permission::Read,
                    ))
                    .grants(grant_to_group(
                        "http://acs.amazonaws.com/groups/s3/LogDelivery",
                        Permission::Write,
                    ))
                    .build()
            }),
        mock!(aws_sdk_s3::Client::get_bucket_acl)
            .match_requests(|r| r.bucket() == Some("esc-locked"))
            .then_output(owner_only_acl),
    ];
    let rules_of_assets = {
        use aws_sdk_s3::types::{ExpirationStatus, LifecycleRule, NoncurrentVersionExpiration};
        let rule = LifecycleRule::builder()
            .id("tidy")
            .status(ExpirationStatus::Enabled)
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder().noncurrent_days(30).build(),
            )
            .build()
            .unwrap();
        mock!(aws_sdk_s3::Client::get_bucket_lifecycle_configuration)
            .match_requests(|r| r.bucket() == Some("esc-assets"))
            .then_output(move || {
                aws_sdk_s3::operation::get_bucket_lifecycle_configuration::GetBucketLifecycleConfigurationOutput::builder()
                    .rules(rule.clone())
                    .build()
            })
    };
    let assets_locked = mock!(aws_sdk_s3::Client::get_object_lock_configuration)
        .match_requests(|r| r.bucket() == Some("esc-assets"))
        .then_output(|| {
            GetObjectLockConfigurationOutput::builder()
                .object_lock_configuration(
                    aws_sdk_s3::types::ObjectLockConfiguration::builder()
                        .object_lock_enabled(aws_sdk_s3::types::ObjectLockEnabled::Enabled)
                        .build(),
                )
                .build()
        });
    let lifecycles = [rules_of_assets, no_lifecycle(), no_replication(), assets_locked, sse_s3()];
    let rules: Vec<&Rule> = versioning
        .iter()
        .chain([&lock])
        .chain(&pab)
        .chain(&policy)
        .chain(&acl)
        .chain(&lifecycles)
        .collect();
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &rules);
    let found = Auditor::new(s3_inventory()).with_s3_client(s3).run().await.unwrap();
    assert_eq!(
        checks(&found),
        [
            (Severity::High, "s3.bucket-acl.foreign-grantee", "s3://esc-assets"),
            (Severity::High, "s3.bucket-policy.foreign-principal", "s3://esc-assets"),
            (Severity::High, "s3.bucket.lifecycle-expiry", "s3://esc-assets"),
            (Severity::High, "s3.bucket.missing", "s3://esc-gone"),
            (Severity::High, "s3.bucket.object-lock", "s3://esc-locked"),
            (Severity::High, "s3.bucket.public-access-block", "s3://esc-assets"),
            (Severity::High, "s3.bucket.public-access-block", "s3://esc-locked"),
            (Severity::High, "s3.bucket.versioning", "s3://esc-assets"),
            (Severity::Medium, "audit.access-denied", "s3://esc-locked"),
        ]
    );
    let text = |check: &str, resource: &str| {
        let f = found.iter().find(|f| f.check == check && f.resource == resource).unwrap();
        format!("{} | {}", f.problem, f.fix)
    };
    let leak = text("s3.bucket-policy.foreign-principal", "s3://esc-assets");
    assert!(
        leak.contains("arn:aws:iam::111111111111:role/reader (the primary account 111111111111)"),
        "{leak}"
    );
    assert!(leak.contains("arn:aws:iam::333333333333:root (account 333333333333)"), "{leak}");
    assert!(!leak.contains("cloudtrail") && !leak.contains("role/op"), "{leak}");
    assert!(
        text("s3.bucket.public-access-block", "s3://esc-assets")
            .contains("BlockPublicPolicy, RestrictPublicBuckets")
    );
    assert!(
        text("s3.bucket.public-access-block", "s3://esc-locked")
            .contains("has no public access block")
    );
    assert!(text("s3.bucket.versioning", "s3://esc-assets").contains("suspended"));
    assert!(text("s3.bucket.missing", "s3://esc-gone").contains("run manifests"));
    assert!(
        text("s3.bucket.lifecycle-expiry", "s3://esc-assets")
            .contains("lifecycle rule tidy expires noncurrent versions")
    );
    assert!(text("audit.access-denied", "s3://esc-locked").contains("s3:GetBucketPolicy"));
    let acl_leak = text("s3.bucket-acl.foreign-grantee", "s3://esc-assets");
    assert!(acl_leak.contains("canonical user primary-canonical-id (READ)"), "{acl_leak}");
    assert!(acl_leak.contains("everyone (AllUsers) (READ)"), "{acl_leak}");
    assert!(!acl_leak.contains("LogDelivery") && !acl_leak.contains("escrow-owner"), "{acl_leak}");
    assert!(acl_leak.contains("BucketOwnerEnforced"), "{acl_leak}");
    // A missing bucket is not asked anything more.
    assert_eq!(versioning[2].num_calls(), 1);
    assert_eq!((lock.num_calls(), pab[0].num_calls(), pab[1].num_calls()), (1, 1, 1));
}

#[tokio::test]
async fn a_clean_bucket_gives_no_finding() {
    let mut rules = settled_bucket();
    rules.extend([no_lifecycle(), no_replication()]);
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
    let inv = Inventory {
        s3: vec![S3Grant {
            name: "j".into(),
            dest_bucket: "esc".into(),
            object_lock: true,
            ..Default::default()
        }],
        ..inventory()
    };
    let found = Auditor::new(inv).with_s3_client(s3).run().await.unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(rules.iter().map(Rule::num_calls).collect::<Vec<_>>(), [1; 8]);
}

// ------------------------------------------------------------------ KMS

fn key_metadata(state: KeyState) -> KeyMetadata {
    KeyMetadata::builder()
        .key_id("k-1")
        .arn(format!("arn:aws:kms:us-east-1:{ESCROW}:key/k-1"))
        .aws_account_id(ESCROW)
        .key_state(state)
        .deletion_date(aws_smithy_types::DateTime::from_secs(1_800_000_000))
        .build()
        .unwrap()
}

fn kms_rules(state: KeyState, policy: &'static str, grants: bool) -> Vec<Rule> {
    let key_arn = format!("arn:aws:kms:us-east-1:{ESCROW}:key/k-1");
    let arn2 = key_arn.clone();
    let arn3 = key_arn.clone();
    vec![
        mock!(aws_sdk_kms::Client::describe_key)
            .match_requests(|r| r.key_id() == Some("alias/escrow"))
            .then_output(move || {
                DescribeKeyOutput::builder().key_metadata(key_metadata(state.clone())).build()
            }),
        mock!(aws_sdk_kms::Client::get_key_policy)
            .match_requests(move |r| {
                r.key_id() == Some(arn2.as_str()) && r.policy_name() == Some("default")
            })
            .then_output(move || GetKeyPolicyOutput::builder().policy(policy).build()),
        mock!(aws_sdk_kms::Client::list_grants)
            .match_requests(move |r| r.key_id() == Some(arn3.as_str()) && r.marker().is_none())
            .then_output(move || {
                let mut out = ListGrantsOutput::builder();
                if grants {
                    out = out
                        .grants(
                            GrantListEntry::builder()
                                .grant_id("g-service")
                                .grantee_principal("ec2.us-east-1.amazonaws.com")
                                .build(),
                        )
                        .truncated(true)
                        .next_marker("m2");
                }
                out.build()
            }),
        mock!(aws_sdk_kms::Client::list_grants)
            .match_requests(|r| r.marker() == Some("m2"))
            .then_output(|| {
                ListGrantsOutput::builder()
                    .grants(
                        GrantListEntry::builder()
                            .grant_id("g-own")
                            .grantee_principal("arn:aws:iam::222222222222:role/op")
                            .build(),
                    )
                    .grants(
                        GrantListEntry::builder()
                            .grant_id("g-primary")
                            .grantee_principal("arn:aws:iam::111111111111:role/reader")
                            .build(),
                    )
                    .truncated(false)
                    .build()
            }),
    ]
}

const OWN_KEY_POLICY: &str = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions",
    "Effect":"Allow","Principal":{"AWS":"arn:aws:iam::222222222222:root"},"Action":"kms:*","Resource":"*"},
    {"Sid":"via","Effect":"Allow","Principal":{"AWS":"*"},"Action":["kms:Decrypt"],"Resource":"*",
    "Condition":{"StringEquals":{"kms:CallerAccount":"222222222222","kms:ViaService":"ec2.us-east-1.amazonaws.com"}}}]}"#;

fn key_inventory() -> Inventory {
    Inventory { escrow_kms_key: Some("alias/escrow".into()), ..inventory() }
}

#[tokio::test]
async fn an_enabled_key_with_an_escrow_only_policy_is_clean() {
    let rules = kms_rules(KeyState::Enabled, OWN_KEY_POLICY, false);
    let kms = mock_client!(aws_sdk_kms, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
    let found = Auditor::new(key_inventory()).with_kms_client(kms).run().await.unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(rules.iter().map(Rule::num_calls).collect::<Vec<_>>(), [1, 1, 1, 0]);
}

#[tokio::test]
async fn key_state_policy_and_grants_name_the_key() {
    let key_arn = format!("arn:aws:kms:us-east-1:{ESCROW}:key/k-1");
    let policy = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:root"},
        "Action":"kms:Decrypt","Resource":"*"}]}"#;
    for (state, check) in [
        (KeyState::Disabled, "kms.key.disabled"),
        (KeyState::PendingDeletion, "kms.key.pending-deletion"),
    ] {
        let rules = kms_rules(state, policy, true);
        let kms = mock_client!(aws_sdk_kms, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
        let found = Auditor::new(key_inventory()).with_kms_client(kms).run().await.unwrap();
        assert_eq!(
            checks(&found),
            [
                (Severity::High, "kms.grant.foreign-principal", key_arn.as_str()),
                (Severity::High, "kms.key-policy.foreign-principal", key_arn.as_str()),
                (Severity::High, check, key_arn.as_str()),
            ],
            "{found:?}"
        );
        assert!(found[0].problem.contains("g-primary"), "{found:?}");
        assert!(found[0].fix.contains("revoke-grant"), "{found:?}");
        assert!(found[1].problem.contains("the primary account 111111111111"), "{found:?}");
        if check == "kms.key.pending-deletion" {
            assert!(found[2].problem.contains("2027-01-15"), "{found:?}");
            assert!(found[2].fix.contains("cancel-key-deletion"), "{found:?}");
        }
    }
}

#[tokio::test]
async fn a_missing_key_is_a_finding() {
    let rule = mock!(aws_sdk_kms::Client::describe_key).then_error(|| {
        DescribeKeyError::NotFoundException(
            aws_sdk_kms::types::error::NotFoundException::builder()
                .message("no such alias")
                .build(),
        )
    });
    let kms = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&rule]);
    let found = Auditor::new(key_inventory()).with_kms_client(kms).run().await.unwrap();
    assert_eq!(checks(&found), [(Severity::High, "kms.key.missing", "alias/escrow")]);
}

/// The bucket checks of `policy` on a native-export job's bucket whose
/// other settings are right.
async fn export_bucket_findings(policy: &'static str) -> Vec<Finding> {
    let inv = Inventory {
        dynamodb: vec![TableGrant {
            name: "orders".into(),
            source_table: "orders".into(),
            dest_bucket: Some("esc-exports".into()),
            dest_prefix: "dynamodb/".into(),
            native_export: true,
            ..Default::default()
        }],
        ..inventory()
    };
    let rules = [
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
        mock!(aws_sdk_s3::Client::get_bucket_policy)
            .then_output(move || GetBucketPolicyOutput::builder().policy(policy).build()),
        mock!(aws_sdk_s3::Client::get_bucket_acl).then_output(owner_only_acl),
        no_lifecycle(),
        no_replication(),
        lock_enabled(),
        sse_s3(),
    ];
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &rules);
    Auditor::new(inv).with_s3_client(s3).run().await.unwrap()
}

#[tokio::test]
async fn the_primary_may_write_an_export_bucket_only_under_the_staging_prefix() {
    // The grant `escrow-sync policy` generates: nothing to report.
    let staged = export_bucket_findings(
        r#"{"Statement":[{"Sid":"PrimaryReaderNativeExportOrders","Effect":"Allow",
        "Principal":{"AWS":"arn:aws:iam::111111111111:role/escrow-reader"},
        "Action":["s3:PutObject","s3:AbortMultipartUpload"],
        "Resource":"arn:aws:s3:::esc-exports/dynamodb/.staging/orders/*"}]}"#,
    )
    .await;
    assert_eq!(checks(&staged), [], "{staged:?}");
    // The old grant over the generations: the primary could plant one.
    let found = export_bucket_findings(
        r#"{"Statement":[{"Sid":"PrimaryReaderNativeExportOrders","Effect":"Allow",
        "Principal":{"AWS":"arn:aws:iam::111111111111:role/escrow-reader"},
        "Action":["s3:PutObject","s3:AbortMultipartUpload"],
        "Resource":"arn:aws:s3:::esc-exports/dynamodb/orders/*"}]}"#,
    )
    .await;
    assert_eq!(
        checks(&found),
        [
            (Severity::High, "s3.bucket-policy.foreign-principal", "s3://esc-exports"),
            (Severity::High, "s3.bucket-policy.outside-write", "s3://esc-exports"),
        ]
    );
    let write = found.iter().find(|f| f.check == "s3.bucket-policy.outside-write").unwrap();
    assert!(write.problem.contains("the primary account 111111111111"), "{}", write.problem);
    assert!(write.problem.contains("esc-exports/dynamodb/orders/*"), "{}", write.problem);
    assert!(write.problem.contains("dynamodb/.staging/orders/"), "{}", write.problem);
    // A wildcard action on the whole bucket, to the primary's root: also a write.
    let found = export_bucket_findings(
        r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"111111111111"},
        "Action":"s3:Put*","Resource":"arn:aws:s3:::esc-exports/*"}}"#,
    )
    .await;
    assert!(found.iter().any(|f| f.check == "s3.bucket-policy.outside-write"), "{found:?}");
    // A read grant is a foreign principal, not a write.
    let found = export_bucket_findings(
        r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"111111111111"},
        "Action":"s3:GetObject","Resource":"arn:aws:s3:::esc-exports/dynamodb/.staging/orders/*"}}"#,
    )
    .await;
    assert_eq!(
        checks(&found),
        [(Severity::High, "s3.bucket-policy.foreign-principal", "s3://esc-exports")]
    );
}

// ------------------------------------------------------------------ DynamoDB

#[tokio::test]
async fn escrow_tables_need_pitr_deletion_protection_and_no_ttl() {
    let inv = Inventory {
        dynamodb: vec![
            TableGrant {
                name: "orders".into(),
                dest_table: Some("escrow-orders".into()),
                checkpoint_table: "escrow-sync-checkpoints".into(),
                ..Default::default()
            },
            TableGrant {
                name: "users".into(),
                dest_table: Some("escrow-users".into()),
                checkpoint_table: "escrow-sync-checkpoints".into(),
                ..Default::default()
            },
        ],
        ..inventory()
    };
    let rules = [
        mock!(aws_sdk_dynamodb::Client::describe_table)
            .match_requests(|r| r.table_name() == Some("escrow-orders"))
            .then_output(|| {
                DescribeTableOutput::builder()
                    .table(TableDescription::builder().deletion_protection_enabled(false).build())
                    .build()
            }),
        mock!(aws_sdk_dynamodb::Client::describe_table)
            .match_requests(|r| r.table_name() == Some("escrow-users"))
            .then_error(|| {
                DescribeTableError::ResourceNotFoundException(
                    aws_sdk_dynamodb::types::error::ResourceNotFoundException::builder().build(),
                )
            }),
        // Not created yet: the first run creates the checkpoint table.
        mock!(aws_sdk_dynamodb::Client::describe_table)
            .match_requests(|r| r.table_name() == Some("escrow-sync-checkpoints"))
            .then_error(|| {
                DescribeTableError::ResourceNotFoundException(
                    aws_sdk_dynamodb::types::error::ResourceNotFoundException::builder().build(),
                )
            }),
        mock!(aws_sdk_dynamodb::Client::describe_continuous_backups)
            .match_requests(|r| r.table_name() == Some("escrow-orders"))
            .then_output(|| {
                DescribeContinuousBackupsOutput::builder()
                    .continuous_backups_description(
                        ContinuousBackupsDescription::builder()
                            .continuous_backups_status(ContinuousBackupsStatus::Enabled)
                            .point_in_time_recovery_description(
                                PointInTimeRecoveryDescription::builder()
                                    .point_in_time_recovery_status(
                                        PointInTimeRecoveryStatus::Disabled,
                                    )
                                    .build(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
            }),
        mock!(aws_sdk_dynamodb::Client::describe_time_to_live)
            .match_requests(|r| r.table_name() == Some("escrow-orders"))
            .then_output(|| {
                DescribeTimeToLiveOutput::builder()
                    .time_to_live_description(
                        TimeToLiveDescription::builder()
                            .time_to_live_status(TimeToLiveStatus::Enabled)
                            .attribute_name("expires")
                            .build(),
                    )
                    .build()
            }),
    ];
    let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
    let found = Auditor::new(inv).with_dynamodb_client(ddb).run().await.unwrap();
    assert_eq!(
        checks(&found),
        [
            (Severity::High, "dynamodb.table.deletion-protection", "dynamodb://escrow-orders"),
            (Severity::High, "dynamodb.table.missing", "dynamodb://escrow-users"),
            (Severity::High, "dynamodb.table.pitr", "dynamodb://escrow-orders"),
            (Severity::High, "dynamodb.table.sse", "dynamodb://escrow-orders"),
            (Severity::High, "dynamodb.table.ttl", "dynamodb://escrow-orders"),
        ]
    );
    assert!(found[3].problem.contains("AWS owned key"), "{found:?}");
    assert!(found[4].problem.contains("expires"), "{found:?}");
    assert_eq!(rules.iter().map(Rule::num_calls).collect::<Vec<_>>(), [1, 1, 1, 1, 1]);
}

// ------------------------------------------------------------------ EC2

#[tokio::test]
async fn escrow_snapshots_and_images_shared_outside_are_found() {
    let inv = Inventory {
        ec2: vec![Ec2Grant {
            name: "ec2".into(),
            images: true,
            snapshots: true,
            ..Default::default()
        }],
        ..inventory()
    };
    let snap = |id: &str| Snapshot::builder().snapshot_id(id).owner_id(ESCROW).build();
    let rules = [
        mock!(aws_sdk_ec2::Client::describe_snapshots)
            .match_requests(|r| r.owner_ids() == ["self"] && r.next_token().is_none())
            .then_output(move || {
                DescribeSnapshotsOutput::builder()
                    .snapshots(snap("snap-private"))
                    .snapshots(snap("snap-shared"))
                    .next_token("t2")
                    .build()
            }),
        mock!(aws_sdk_ec2::Client::describe_snapshots)
            .match_requests(|r| r.next_token() == Some("t2"))
            .then_output(move || {
                DescribeSnapshotsOutput::builder().snapshots(snap("snap-public")).build()
            }),
        mock!(aws_sdk_ec2::Client::describe_snapshot_attribute)
            .match_requests(|r| r.snapshot_id() == Some("snap-private"))
            .then_output(|| DescribeSnapshotAttributeOutput::builder().build()),
        mock!(aws_sdk_ec2::Client::describe_snapshot_attribute)
            .match_requests(|r| {
                r.snapshot_id() == Some("snap-shared")
                    && r.attribute()
                        == Some(&aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            })
            .then_output(|| {
                DescribeSnapshotAttributeOutput::builder()
                    .create_volume_permissions(
                        CreateVolumePermission::builder().user_id(PRIMARY).build(),
                    )
                    .build()
            }),
        mock!(aws_sdk_ec2::Client::describe_snapshot_attribute)
            .match_requests(|r| r.snapshot_id() == Some("snap-public"))
            .then_output(|| {
                DescribeSnapshotAttributeOutput::builder()
                    .create_volume_permissions(
                        CreateVolumePermission::builder().group(PermissionGroup::All).build(),
                    )
                    .build()
            }),
        mock!(aws_sdk_ec2::Client::describe_images)
            .match_requests(|r| r.owners() == ["self"])
            .then_output(|| {
                DescribeImagesOutput::builder()
                    .images(Image::builder().image_id("ami-shared").build())
                    .build()
            }),
        mock!(aws_sdk_ec2::Client::describe_image_attribute)
            .match_requests(|r| {
                r.image_id() == Some("ami-shared")
                    && r.attribute()
                        == Some(&aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            })
            .then_output(|| {
                DescribeImageAttributeOutput::builder()
                    .launch_permissions(LaunchPermission::builder().user_id("333333333333").build())
                    .launch_permissions(LaunchPermission::builder().user_id(ESCROW).build())
                    .build()
            }),
    ];
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
    let found = Auditor::new(inv).with_ec2_client(ec2).run().await.unwrap();
    assert_eq!(
        checks(&found),
        [
            (Severity::High, "ec2.image.shared", "ami-shared"),
            (Severity::High, "ec2.snapshot.shared", "snap-public"),
            (Severity::High, "ec2.snapshot.shared", "snap-shared"),
        ]
    );
    assert!(found[0].problem.contains("account 333333333333"), "{found:?}");
    assert!(found[1].problem.contains("everyone (public)"), "{found:?}");
    assert!(found[2].problem.contains("the primary account 111111111111"), "{found:?}");
    assert!(found[2].fix.contains("--user-ids 111111111111"), "{found:?}");
    assert_eq!(rules.iter().map(Rule::num_calls).collect::<Vec<_>>(), [1, 1, 1, 1, 1, 1, 1]);
}

#[tokio::test]
async fn without_snapshot_jobs_shares_are_not_listed() {
    let never = mock!(aws_sdk_ec2::Client::describe_snapshots)
        .then_output(|| DescribeSnapshotsOutput::builder().build());
    let ec2 = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&never]);
    let found = Auditor::new(inventory()).with_ec2_client(ec2).run().await.unwrap();
    assert!(found.is_empty());
    assert_eq!(never.num_calls(), 0);
}

// ------------------------------------------------------------------ CloudTrail

fn trail(name: &str) -> Trail {
    Trail::builder()
        .name(name)
        .trail_arn(format!("arn:aws:cloudtrail:us-east-1:{ESCROW}:trail/{name}"))
        .build()
}

async fn trail_findings(trails: Vec<(&'static str, bool)>) -> Vec<Finding> {
    let names: Vec<_> = trails.iter().map(|(n, _)| *n).collect();
    let mut rules = vec![
        mock!(aws_sdk_cloudtrail::Client::describe_trails)
            .match_requests(|r| r.include_shadow_trails() == Some(true))
            .then_output(move || {
                DescribeTrailsOutput::builder()
                    .set_trail_list(Some(names.iter().map(|n| trail(n)).collect()))
                    .build()
            }),
    ];
    for (name, logging) in trails {
        let arn = format!("arn:aws:cloudtrail:us-east-1:{ESCROW}:trail/{name}");
        rules.push(
            mock!(aws_sdk_cloudtrail::Client::get_trail_status)
                .match_requests(move |r| r.name() == Some(arn.as_str()))
                .then_output(move || GetTrailStatusOutput::builder().is_logging(logging).build()),
        );
    }
    let ct =
        mock_client!(aws_sdk_cloudtrail, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
    let found = Auditor::new(inventory()).with_cloudtrail_client(ct).run().await.unwrap();
    assert!(rules.iter().all(|r| r.num_calls() == 1), "each trail's status asked once");
    found
}

#[tokio::test]
async fn trails_must_log() {
    let found = trail_findings(vec![]).await;
    assert_eq!(
        checks(&found),
        [(
            Severity::High,
            "cloudtrail.not-logging",
            "cloudtrail of account 222222222222 (us-east-1)"
        )]
    );
    let found = trail_findings(vec![("stopped", false)]).await;
    assert_eq!(
        checks(&found),
        [(
            Severity::High,
            "cloudtrail.not-logging",
            "arn:aws:cloudtrail:us-east-1:222222222222:trail/stopped"
        )]
    );
    assert!(found[0].fix.contains("start-logging --name stopped"), "{found:?}");
    let found = trail_findings(vec![("main", true), ("old", false)]).await;
    assert_eq!(
        checks(&found),
        [(
            Severity::Low,
            "cloudtrail.trail.stopped",
            "arn:aws:cloudtrail:us-east-1:222222222222:trail/old"
        )]
    );
    assert!(trail_findings(vec![("main", true)]).await.is_empty());
}

// ------------------------------------------------------------------ isolation

/// An STS client that reaches nothing (this crate has no STS test-util):
/// every call fails at once, as a refused AssumeRole would.
fn unreachable_sts() -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:1")
        .credentials_provider(aws_sdk_sts::config::Credentials::new("a", "b", None, None, "test"))
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sts::Client::from_conf(conf)
}

#[tokio::test]
async fn the_primary_reaching_an_escrow_bucket_is_a_finding() {
    let inv = Inventory {
        s3: vec![
            S3Grant { name: "a".into(), dest_bucket: "esc-open".into(), ..Default::default() },
            S3Grant { name: "b".into(), dest_bucket: "esc-closed".into(), ..Default::default() },
        ],
        dynamodb: vec![TableGrant {
            name: "t".into(),
            dest_table: Some("escrow-orders".into()),
            ..Default::default()
        }],
        operator_role_arn: Some(format!("arn:aws:iam::{ESCROW}:role/escrow-operator")),
        escrow_kms_key: Some(ESCROW_KEY.into()),
        ..inventory()
    };
    let denied =
        || GetBucketVersioningError::generic(ErrorMetadata::builder().code("AccessDenied").build());
    let s3_rules = [
        mock!(aws_sdk_s3::Client::get_bucket_versioning)
            .match_requests(|r| r.bucket() == Some("esc-open"))
            .then_output(|| GetBucketVersioningOutput::builder().build()),
        mock!(aws_sdk_s3::Client::list_objects_v2)
            .match_requests(|r| r.bucket() == Some("esc-open") && r.max_keys() == Some(1))
            .then_output(|| ListObjectsV2Output::builder().build()),
        mock!(aws_sdk_s3::Client::get_bucket_versioning)
            .match_requests(|r| r.bucket() == Some("esc-closed"))
            .then_error(denied),
        mock!(aws_sdk_s3::Client::list_objects_v2)
            .match_requests(|r| r.bucket() == Some("esc-closed"))
            .then_error(|| {
                aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error::generic(
                    ErrorMetadata::builder().code("AccessDenied").build(),
                )
            }),
    ];
    let ddb_rule = mock!(aws_sdk_dynamodb::Client::describe_table)
        .match_requests(|r| {
            r.table_name() == Some("arn:aws:dynamodb:us-east-1:222222222222:table/escrow-orders")
        })
        .then_output(|| DescribeTableOutput::builder().build());
    let kms_rule = mock!(aws_sdk_kms::Client::describe_key)
        .match_requests(|r| r.key_id() == Some(ESCROW_KEY))
        .then_output(|| DescribeKeyOutput::builder().build());
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &s3_rules.iter().collect::<Vec<_>>());
    let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&ddb_rule]);
    let kms = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&kms_rule]);
    let found = Auditor::new(inv)
        .with_primary_clients(PRIMARY, s3, ddb, kms, unreachable_sts())
        .run()
        .await
        .unwrap();
    assert_eq!(
        checks(&found),
        [
            (Severity::High, "isolation.primary-access", ESCROW_KEY),
            (Severity::High, "isolation.primary-access", "dynamodb://escrow-orders"),
            (Severity::High, "isolation.primary-access", "s3://esc-open"),
        ]
    );
    assert!(
        found[2]
            .problem
            .contains("s3:GetBucketVersioning and s3:ListObjectsV2 on escrow bucket esc-open"),
        "{found:?}"
    );
    assert_eq!(s3_rules.iter().map(Rule::num_calls).collect::<Vec<_>>(), [1, 1, 1, 1]);
    assert_eq!(ddb_rule.num_calls(), 1);
    assert_eq!(kms_rule.num_calls(), 1);

    // An alias would resolve in the primary's own account: only ARNs are probed.
    let inv = Inventory { escrow_kms_key: Some("alias/escrow".into()), ..inventory() };
    let kms_rule = mock!(aws_sdk_kms::Client::describe_key)
        .then_output(|| DescribeKeyOutput::builder().build());
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &s3_rules.iter().collect::<Vec<_>>());
    let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&ddb_rule]);
    let kms = mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&kms_rule]);
    let found = Auditor::new(inv)
        .with_primary_clients(PRIMARY, s3, ddb, kms, unreachable_sts())
        .run()
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(kms_rule.num_calls(), 0);
}

/// Lifecycle rules: only enabled rules that expire versions under an escrow
/// prefix are findings; a rule filtered by tag counts wherever it points,
/// since the primary can plant the tags that copies carry.
#[tokio::test]
async fn lifecycle_rules_that_expire_escrow_data_are_found() {
    use aws_sdk_s3::types::{
        ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, Tag,
    };
    let expire = |id: &str, filter: LifecycleRuleFilter, on: bool| {
        LifecycleRule::builder()
            .id(id)
            .status(if on { ExpirationStatus::Enabled } else { ExpirationStatus::Disabled })
            .filter(filter)
            .expiration(LifecycleExpiration::builder().days(7).build())
            .build()
            .unwrap()
    };
    let prefix = |p: &str| LifecycleRuleFilter::builder().prefix(p).build();
    let tagged = LifecycleRuleFilter::builder()
        .tag(Tag::builder().key("tmp").value("yes").build().unwrap())
        .build();
    let markers_only = LifecycleRule::builder()
        .id("markers")
        .status(ExpirationStatus::Enabled)
        .filter(prefix(""))
        .expiration(LifecycleExpiration::builder().expired_object_delete_marker(true).build())
        .build()
        .unwrap();
    let rules = vec![
        expire("disabled", prefix(""), false),
        expire("elsewhere", prefix("scratch/"), true),
        expire("wider", prefix("esc"), true),
        expire("tagged", tagged, true),
        markers_only,
    ];
    let mut s3_rules = settled_bucket();
    s3_rules.extend([lifecycle(rules), no_replication()]);
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &s3_rules.iter().collect::<Vec<_>>());
    let inv = Inventory {
        s3: vec![S3Grant {
            name: "j".into(),
            dest_bucket: "esc".into(),
            dest_prefix: "escrow/".into(),
            ..Default::default()
        }],
        ..inventory()
    };
    let found = Auditor::new(inv).with_s3_client(s3).run().await.unwrap();
    let problems: Vec<&str> = found
        .iter()
        .filter(|f| f.check == "s3.bucket.lifecycle-expiry")
        .map(|f| f.problem.as_str())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("rule wider expires current versions")));
    assert!(problems.iter().any(|p| p.contains("rule tagged") && p.contains("plant")));
}

/// Replication out of escrow: a rule to another account, or to a bucket
/// escrow does not own, is a finding; one to escrow's own bucket is not,
/// nor a disabled rule.
#[tokio::test]
async fn replication_out_of_escrow_is_found() {
    use aws_sdk_s3::operation::get_bucket_replication::GetBucketReplicationOutput;
    use aws_sdk_s3::operation::head_bucket::HeadBucketError;
    use aws_sdk_s3::types::ReplicationRuleStatus as Status;
    use aws_sdk_s3::types::{Destination, ReplicationConfiguration, ReplicationRule};
    let rule = |id: &str, bucket: &str, account: Option<&str>, on: bool| {
        ReplicationRule::builder()
            .id(id)
            .status(if on { Status::Enabled } else { Status::Disabled })
            .destination(
                Destination::builder()
                    .bucket(format!("arn:aws:s3:::{bucket}"))
                    .set_account(account.map(str::to_string))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let rules = vec![
        rule("to-other-account", "theirs", Some("333333333333"), true),
        rule("to-unowned", "elsewhere", None, true),
        rule("to-own", "esc-copy", None, true),
        rule("to-own-account", "esc-copy2", Some("222222222222"), true),
        // Account names escrow, but the bucket is someone else's.
        rule("to-posing-account", "theirs2", Some("222222222222"), true),
        rule("off", "theirs", Some("333333333333"), false),
    ];
    let mut s3_rules = settled_bucket();
    s3_rules.extend([
        no_lifecycle(),
        mock!(aws_sdk_s3::Client::get_bucket_replication).then_output(move || {
            GetBucketReplicationOutput::builder()
                .replication_configuration(
                    ReplicationConfiguration::builder()
                        .role("arn:aws:iam::222222222222:role/replication")
                        .set_rules(Some(rules.clone()))
                        .build()
                        .unwrap(),
                )
                .build()
        }),
        mock!(aws_sdk_s3::Client::head_bucket)
            .match_requests(|r| {
                matches!(r.bucket(), Some("esc-copy" | "esc-copy2"))
                    && r.expected_bucket_owner() == Some("222222222222")
            })
            .then_output(|| {
                aws_sdk_s3::operation::head_bucket::HeadBucketOutput::builder().build()
            }),
        mock!(aws_sdk_s3::Client::head_bucket).then_error(|| {
            HeadBucketError::generic(ErrorMetadata::builder().code("AccessDenied").build())
        }),
    ]);
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, &s3_rules.iter().collect::<Vec<_>>());
    let inv = Inventory {
        s3: vec![S3Grant { name: "j".into(), dest_bucket: "esc".into(), ..Default::default() }],
        ..inventory()
    };
    let found = Auditor::new(inv).with_s3_client(s3).run().await.unwrap();
    let problems: Vec<&str> = found
        .iter()
        .filter(|f| f.check == "s3.bucket.replication-out")
        .map(|f| f.problem.as_str())
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("to-other-account") && p.contains("333333333333")));
    assert!(problems.iter().any(|p| p.contains("to-unowned") && p.contains("does not own")));
    assert!(
        problems.iter().any(|p| p.contains("to-posing-account")
            && p.contains("s3://theirs2")
            && p.contains("does not own")),
        "{problems:?}"
    );
}

// ------------------------------------------------------------------ what keeps escrow sealed

/// The audit's checks of what keeps escrow sealed beyond each copy (issue
/// 17, point 4): buckets without Object Lock or default encryption with the
/// escrow key, escrow tables not encrypted with it, and IAM users and
/// access keys beyond the runner.
mod sealed {
    use super::*;
    use aws_sdk_dynamodb::types::{SseDescription, SseStatus, SseType};
    use aws_sdk_iam::operation::list_access_keys::ListAccessKeysOutput;
    use aws_sdk_iam::operation::list_users::ListUsersOutput;
    use aws_sdk_iam::types::{AccessKeyMetadata, StatusType, User};
    use aws_sdk_s3::operation::get_bucket_encryption::GetBucketEncryptionError;
    use aws_sdk_s3::types::{ObjectLockConfiguration, ObjectLockEnabled, ServerSideEncryption};

    const KEY: &str = "arn:aws:kms:us-east-1:222222222222:key/k1";

    fn keyed_inventory() -> Inventory {
        Inventory {
            escrow_account: ESCROW.into(),
            primary_account: "111111111111".into(),
            region: "us-east-1".into(),
            escrow_kms_key: Some(KEY.into()),
            ..Default::default()
        }
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
            ..keyed_inventory()
        };
        let mut rules = vec![
            mock!(aws_sdk_s3::Client::get_object_lock_configuration)
                .match_requests(|r| r.bucket() == Some("esc-plain"))
                .then_error(|| {
                    GetObjectLockConfigurationError::generic(
                        ErrorMetadata::builder()
                            .code("ObjectLockConfigurationNotFoundError")
                            .build(),
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
                    sse(
                        ServerSideEncryption::AwsKms,
                        Some("arn:aws:kms:us-east-1:222222222222:key/k2"),
                    )
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
        rules.extend(settled_bucket());
        rules.extend([no_lifecycle(), no_replication()]);
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
        let grants = mock!(aws_sdk_kms::Client::list_grants).then_output(|| {
            aws_sdk_kms::operation::list_grants::ListGrantsOutput::builder().build()
        });
        let kms = mock_client!(
            aws_sdk_kms,
            RuleMode::MatchAny,
            [&describe, &escrow_key, &policy, &grants]
        );
        let found = Auditor::new(inv).with_s3_client(s3).with_kms_client(kms).run().await.unwrap();
        let found: Vec<Finding> =
            found.into_iter().filter(|f| f.check.starts_with("s3.")).collect();
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
            ..keyed_inventory()
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
                                    .point_in_time_recovery_status(
                                        PointInTimeRecoveryStatus::Enabled,
                                    )
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
        let ddb =
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules.iter().collect::<Vec<_>>());
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
            ListRolesOutput::builder()
                .set_roles(Some(Vec::new()))
                .is_truncated(false)
                .build()
                .unwrap()
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
        let found = Auditor::new(keyed_inventory())
            .with_iam_client(iam)
            .with_sts_client(sts)
            .run()
            .await
            .unwrap();
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
        assert!(
            found[1].problem.contains("the runner runner has 2 active access keys"),
            "{found:?}"
        );
    }
}
