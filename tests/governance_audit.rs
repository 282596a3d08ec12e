//! The isolation audit on the emulator, across two accounts: a clean escrow
//! gives no finding (exit 0); each planted violation is found, naming the
//! resource (exit 3).
//!
//! Each test starts its own emulator (xtask's launcher, on a free 127.0.0.1
//! port, stopped by PID when dropped) and turns IAM enforcement on there
//! once its identities exist (moto's `/moto-api/reset-auth`, on that private
//! server only). Two reasons: without enforcement moto lets any account read
//! any bucket, so the primary would always "reach" the escrow and no escrow
//! could ever audit clean; and IAM roles and trails are account-wide, so a
//! role or a stopped trail planted by one test would show in another's
//! audit on a shared server. The identities, as on real AWS:
//!
//! - `escrow-admin`, an IAM user in 222222222222 with every right: the
//!   escrow credentials the CLI starts from, and the test's hands in escrow;
//! - `escrow-operator`, a role in escrow trusting that user, every right;
//! - `escrow-reader`, the primary's reader role, trusting the operator's
//!   session, allowed to read one primary bucket and nothing else;
//! - `primary-admin`, an IAM user in 111111111111, the test's hands there.
//!
//! moto checks an identity's own IAM policies only (bucket, key and trust
//! policies of another account are not evaluated, and a trust policy is
//! matched by exact principal ARN): that is enough for the primary's probes
//! to be refused in a clean escrow and to succeed once the reader role is
//! given rights on escrow resources.

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_s3::types::{
    BucketVersioningStatus, PublicAccessBlockConfiguration, VersioningConfiguration,
};
use serde_json::Value;

use escrow_sync_aws::Session;
use escrow_sync_e2e::{ESCROW, ESCROW_ROLE, Outcome, PRIMARY, READER_ROLE};

const ALL: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// The private emulator of one test.
type Server = escrow_sync_e2e::PrivateEmulator;

async fn sdk_config(endpoint: &str, credentials: Credentials) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await
}

/// Before enforcement: a session in `account` through a role moto does
/// not check.
async fn bootstrap(endpoint: &str, account: &str) -> SdkConfig {
    let base =
        sdk_config(endpoint, Credentials::new("testing", "testing", None, None, "boot")).await;
    let out = aws_sdk_sts::Client::new(&base)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{account}:role/bootstrap"))
        .role_session_name("bootstrap")
        .send()
        .await
        .expect("bootstrap role");
    let c = out.credentials().expect("credentials");
    let creds = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "bootstrap",
    );
    sdk_config(endpoint, creds).await
}

async fn admin_user(iam: &aws_sdk_iam::Client, name: &str) -> (String, String) {
    iam.create_user().user_name(name).send().await.expect("create user");
    iam.put_user_policy()
        .user_name(name)
        .policy_name("all")
        .policy_document(ALL)
        .send()
        .await
        .expect("user policy");
    let key = iam.create_access_key().user_name(name).send().await.expect("access key");
    let key = key.access_key().expect("key");
    (key.access_key_id().to_string(), key.secret_access_key().to_string())
}

async fn role(iam: &aws_sdk_iam::Client, name: &str, trust: &str, policy: &str) {
    iam.create_role()
        .role_name(name)
        .assume_role_policy_document(trust)
        .send()
        .await
        .expect("create role");
    iam.put_role_policy()
        .role_name(name)
        .policy_name("permissions")
        .policy_document(policy)
        .send()
        .await
        .expect("role policy");
}

/// The reader role's policy: one primary bucket, nothing in escrow.
const READER_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
    "Action":["s3:GetObject","s3:ListBucket"],
    "Resource":["arn:aws:s3:::primary-data","arn:aws:s3:::primary-data/*"]}]}"#;

/// Two accounts on a private server with IAM enforced, a clean escrow key
/// and a logging trail.
struct World {
    server: Server,
    /// The escrow-admin user's keys: the CLI's escrow credentials.
    keys: (String, String),
    /// The escrow admin (all rights in escrow).
    escrow: Session,
    /// The primary admin (all rights in the primary).
    primary: Session,
    /// The escrow key's ARN (`[escrow] kms_key_id`).
    key: String,
    /// The escrow trail's ARN.
    trail: String,
}

impl World {
    async fn start() -> World {
        let server = Server::start("audit");
        let ep = server.endpoint.clone();
        let (boot_escrow, boot_primary) =
            (bootstrap(&ep, ESCROW).await, bootstrap(&ep, PRIMARY).await);
        let iam_escrow = aws_sdk_iam::Client::new(&boot_escrow);
        let iam_primary = aws_sdk_iam::Client::new(&boot_primary);
        let keys = admin_user(&iam_escrow, "escrow-admin").await;
        let primary_keys = admin_user(&iam_primary, "primary-admin").await;
        role(
            &iam_escrow,
            "escrow-operator",
            &format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole",
                "Principal":{{"AWS":"arn:aws:iam::{ESCROW}:user/escrow-admin"}}}}]}}"#
            ),
            ALL,
        )
        .await;
        role(
            &iam_primary,
            "escrow-reader",
            &format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole",
                "Principal":{{"AWS":"arn:aws:sts::{ESCROW}:assumed-role/escrow-operator/escrow-sync"}},
                "Condition":{{"StringEquals":{{"sts:ExternalId":"test-external-id"}}}}}}]}}"#
            ),
            READER_POLICY,
        )
        .await;
        server.set_iam_enforced(true);
        let user = |(k, s): &(String, String)| Credentials::new(k, s, None, None, "audit-tests");
        let escrow = Session::from_parts(sdk_config(&ep, user(&keys)).await, ESCROW);
        let primary = Session::from_parts(sdk_config(&ep, user(&primary_keys)).await, PRIMARY);

        // Enforcement is on: the bootstrap keys no longer work.
        let anonymous =
            sdk_config(&ep, Credentials::new("testing", "testing", None, None, "x")).await;
        assert!(
            aws_sdk_s3::Client::new(&anonymous).list_buckets().send().await.is_err(),
            "IAM enforcement is on"
        );

        let kms = aws_sdk_kms::Client::new(escrow.sdk_config());
        let key = kms.create_key().description("escrow key").send().await.expect("create key");
        let key = key.key_metadata().and_then(|m| m.arn()).expect("key arn").to_string();

        let s3 = s3(&escrow);
        let trail_bucket = "escrow-trail-logs";
        s3.create_bucket().bucket(trail_bucket).send().await.expect("trail bucket");
        let ct = aws_sdk_cloudtrail::Client::new(escrow.sdk_config());
        let trail = ct
            .create_trail()
            .name("escrow-trail")
            .s3_bucket_name(trail_bucket)
            .send()
            .await
            .expect("create trail");
        let trail = trail.trail_arn().expect("trail arn").to_string();
        ct.start_logging().name(&trail).send().await.expect("start logging");
        World { server, keys, escrow, primary, key, trail }
    }

    /// A config of the two accounts with the escrow key, then `jobs`.
    fn config(&self, jobs: &str) -> PathBuf {
        let path = escrow_sync_e2e::config_with_jobs(jobs);
        let text = std::fs::read_to_string(&path).expect("config").replacen(
            "[escrow]\n",
            &format!("[escrow]\nkms_key_id = \"{}\"\n", self.key),
            1,
        );
        std::fs::write(&path, text).expect("config");
        path
    }

    /// `escrow-sync audit --config CONFIG --output json ARGS` as the escrow.
    fn audit(&self, config: &Path, args: &[&str]) -> Outcome {
        let mut all = vec!["audit", "--config", config.to_str().expect("utf-8 path")];
        if !args.contains(&"--output") {
            all.extend(["--output", "json"]);
        }
        all.extend(args);
        let out = Command::new(escrow_sync_e2e::binary())
            .current_dir(std::env::temp_dir())
            .args(&all)
            .env("AWS_ENDPOINT_URL", &self.server.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.keys.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.keys.1)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/escrow-sync-test-config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/escrow-sync-test-credentials")
            .output()
            .expect("run escrow-sync");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// IAM writes with policy documents: moto cannot recompute the
    /// signature of such requests from this SDK (SignatureDoesNotMatch), so
    /// enforcement is off until the guard drops.
    fn iam_writes(&self) -> IamWrites<'_> {
        self.server.set_iam_enforced(false);
        IamWrites(&self.server)
    }

    /// Sets the reader role's permissions.
    async fn reader_policy(&self, policy: &str) {
        let _iam = self.iam_writes();
        aws_sdk_iam::Client::new(self.primary.sdk_config())
            .put_role_policy()
            .role_name("escrow-reader")
            .policy_name("permissions")
            .policy_document(policy)
            .send()
            .await
            .expect("reader policy");
    }
}

/// Turns IAM enforcement back on when dropped.
struct IamWrites<'a>(&'a Server);

impl Drop for IamWrites<'_> {
    fn drop(&mut self) {
        self.0.set_iam_enforced(true);
    }
}

fn s3(session: &Session) -> aws_sdk_s3::Client {
    escrow_sync_e2e::s3(session)
}

fn all_blocked() -> PublicAccessBlockConfiguration {
    PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build()
}

/// A clean escrow bucket: versioned, with Object Lock when `locked`, public
/// access blocked, encrypting with the escrow key `key` by default.
async fn clean_bucket(s3: &aws_sdk_s3::Client, name: &str, locked: bool, key: &str) {
    let mut create = s3.create_bucket().bucket(name);
    if locked {
        create = create.object_lock_enabled_for_bucket(true);
    }
    create.send().await.expect("create bucket");
    if !locked {
        s3.put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
            )
            .send()
            .await
            .expect("versioning");
    }
    s3.put_public_access_block()
        .bucket(name)
        .public_access_block_configuration(all_blocked())
        .send()
        .await
        .expect("public access block");
    default_encryption(s3, name, key).await;
}

/// Makes `key` (SSE-KMS) the default encryption of `bucket`.
async fn default_encryption(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    use aws_sdk_s3::types::{
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::AwsKms)
        .kms_master_key_id(key)
        .build()
        .unwrap();
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(by_default)
                        .bucket_key_enabled(true)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("default encryption");
}

/// `(check, resource)` of every finding, sorted.
fn found(out: &Outcome) -> Vec<(String, String)> {
    let doc = out.json();
    let mut v: Vec<(String, String)> = doc["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array: {out:?}"))
        .iter()
        .map(|f| (f["check"].as_str().unwrap().into(), f["resource"].as_str().unwrap().into()))
        .collect();
    v.sort();
    v
}

fn finding<'a>(doc: &'a Value, check: &str, resource: &str) -> &'a Value {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check && f["resource"] == resource)
        .unwrap_or_else(|| panic!("no {check} finding for {resource}: {doc:#}"))
}

/// Asserts a clean audit: exit 0, no finding.
fn assert_clean(out: &Outcome) {
    assert_eq!(out.code, 0, "{out:?}");
    assert!(found(out).is_empty(), "{out:?}");
    let doc = out.json();
    assert_eq!((doc["ok"].as_bool(), doc["command"].as_str()), (Some(true), Some("audit")));
    assert_eq!(doc["escrow_account"], ESCROW);
}

/// Plants one violation after another; after each, the audit exits 3 and
/// finds exactly what was planted so far (`expected` grows).
struct Planted {
    expected: Vec<(String, String)>,
}

impl Planted {
    fn new() -> Self {
        Planted { expected: Vec::new() }
    }

    /// Adds `check` on `resource` (high), audits, compares; returns the
    /// document.
    fn expect(&mut self, world: &World, config: &Path, check: &str, resource: &str) -> Value {
        self.expect_at(world, config, "high", check, resource)
    }

    /// [`Planted::expect`] of a finding of `severity` (some high finding is
    /// planted already: the audit still exits 3).
    fn expect_at(
        &mut self,
        world: &World,
        config: &Path,
        severity: &str,
        check: &str,
        resource: &str,
    ) -> Value {
        self.expected.push((check.to_string(), resource.to_string()));
        self.expected.sort();
        self.expected.dedup();
        let out = world.audit(config, &[]);
        assert_eq!(out.code, 3, "{check} on {resource}: {out:?}");
        assert_eq!(found(&out), self.expected, "{check} on {resource}: {}", out.stdout);
        let doc = out.json();
        assert_eq!(doc["exit_code"], 3);
        let f = finding(&doc, check, resource);
        assert_eq!(f["severity"], severity, "{f}");
        assert!(!f["fix"].as_str().unwrap().is_empty(), "{f}");
        doc
    }

    /// A finding is gone (its violation was repaired).
    fn repaired(&mut self, check: &str, resource: &str) {
        self.expected.retain(|(c, r)| !(c == check && r == resource));
    }
}

#[tokio::test]
async fn escrow_buckets_clean_then_each_violation_found() {
    let world = World::start().await;
    let s3 = s3(&world.escrow);
    let (plain, locked, manifests) = ("escrow-assets", "escrow-locked", "escrow-manifests");
    clean_bucket(&s3, plain, true, &world.key).await;
    clean_bucket(&s3, locked, true, &world.key).await;
    let config = world.config(&format!(
        r#"[[s3]]
name = "assets"
source_bucket = "primary-data"
dest_bucket = "{plain}"

[[s3]]
name = "locked"
source_bucket = "primary-data"
dest_bucket = "{locked}"
object_lock = {{ mode = "GOVERNANCE", days = 1 }}
"#
    ));
    assert_clean(&world.audit(&config, &[]));
    let text = world.audit(&config, &["--output", "text"]);
    assert_eq!(
        (text.code, text.stdout.as_str()),
        (0, "audit of escrow account 222222222222: no findings\n")
    );

    let mut p = Planted::new();
    s3.put_bucket_versioning()
        .bucket(plain)
        .versioning_configuration(
            VersioningConfiguration::builder().status(BucketVersioningStatus::Suspended).build(),
        )
        .send()
        .await
        .unwrap();
    let doc = p.expect(&world, &config, "s3.bucket.versioning", &format!("s3://{plain}"));
    let f = finding(&doc, "s3.bucket.versioning", &format!("s3://{plain}"));
    assert!(f["problem"].as_str().unwrap().contains("suspended"), "{f}");

    s3.delete_public_access_block().bucket(locked).send().await.unwrap();
    p.expect(&world, &config, "s3.bucket.public-access-block", &format!("s3://{locked}"));

    s3.put_public_access_block()
        .bucket(plain)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let doc = p.expect(&world, &config, "s3.bucket.public-access-block", &format!("s3://{plain}"));
    let f = finding(&doc, "s3.bucket.public-access-block", &format!("s3://{plain}"));
    assert!(f["problem"].as_str().unwrap().contains("RestrictPublicBuckets"), "{f}");

    // A lifecycle rule that ages out every noncurrent version.
    {
        use aws_sdk_s3::types::{
            BucketLifecycleConfiguration, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
            NoncurrentVersionExpiration,
        };
        let rule = LifecycleRule::builder()
            .id("tidy")
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder().noncurrent_days(30).build(),
            )
            .build()
            .unwrap();
        s3.put_bucket_lifecycle_configuration()
            .bucket(plain)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder().rules(rule).build().unwrap(),
            )
            .send()
            .await
            .unwrap();
        let doc = p.expect(&world, &config, "s3.bucket.lifecycle-expiry", &format!("s3://{plain}"));
        let f = finding(&doc, "s3.bucket.lifecycle-expiry", &format!("s3://{plain}"));
        assert!(f["problem"].as_str().unwrap().contains("rule tidy"), "{f}");
    }

    // Replication of the escrow bucket to another account's bucket.
    {
        use aws_sdk_s3::types::{
            Destination, ReplicationConfiguration, ReplicationRule, ReplicationRuleStatus,
        };
        let rule = ReplicationRule::builder()
            .id("out")
            .status(ReplicationRuleStatus::Enabled)
            .priority(1)
            .filter(aws_sdk_s3::types::ReplicationRuleFilter::builder().prefix("").build())
            .delete_marker_replication(
                aws_sdk_s3::types::DeleteMarkerReplication::builder()
                    .status(aws_sdk_s3::types::DeleteMarkerReplicationStatus::Disabled)
                    .build(),
            )
            .destination(
                Destination::builder()
                    .bucket("arn:aws:s3:::somebody-elses")
                    .account("333333333333")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        s3.put_bucket_replication()
            .bucket(locked)
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .role("arn:aws:iam::222222222222:role/replication")
                    .rules(rule)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let doc = p.expect(&world, &config, "s3.bucket.replication-out", &format!("s3://{locked}"));
        let f = finding(&doc, "s3.bucket.replication-out", &format!("s3://{locked}"));
        assert!(f["problem"].as_str().unwrap().contains("333333333333"), "{f}");
    }

    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
        "Principal":{{"AWS":"arn:aws:iam::333333333333:root"}},"Action":"s3:GetObject",
        "Resource":"arn:aws:s3:::{plain}/*"}}]}}"#
    );
    s3.put_bucket_policy().bucket(plain).policy(policy).send().await.unwrap();
    let doc =
        p.expect(&world, &config, "s3.bucket-policy.foreign-principal", &format!("s3://{plain}"));
    let f = finding(&doc, "s3.bucket-policy.foreign-principal", &format!("s3://{plain}"));
    assert!(f["problem"].as_str().unwrap().contains("333333333333"), "{f}");

    // An ACL grant to everyone (the other ACL grantees are pinned by the
    // mocks in crates/governance/tests/audit_mocks.rs).
    s3.put_bucket_acl()
        .bucket(plain)
        .acl(aws_sdk_s3::types::BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let doc = p.expect(&world, &config, "s3.bucket-acl.foreign-grantee", &format!("s3://{plain}"));
    let f = finding(&doc, "s3.bucket-acl.foreign-grantee", &format!("s3://{plain}"));
    assert!(f["problem"].as_str().unwrap().contains("everyone (AllUsers) (READ)"), "{f}");

    // A job asking for Object Lock on a bucket without it; a manifest
    // bucket that does not exist.
    clean_bucket(&s3, "escrow-unlocked", false, &world.key).await;
    let text = std::fs::read_to_string(&config).unwrap();
    let text =
        text.replacen("[escrow]\n", &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"), 1)
            + "\n[[s3]]\nname = \"wants-lock\"\nsource_bucket = \"primary-data\"\n\
           dest_bucket = \"escrow-unlocked\"\nobject_lock = { mode = \"GOVERNANCE\", days = 1 }\n";
    std::fs::write(&config, text).unwrap();
    p.expected.push(("s3.bucket.object-lock".into(), "s3://escrow-unlocked".into()));
    let doc = p.expect(&world, &config, "s3.bucket.missing", &format!("s3://{manifests}"));
    let f = finding(&doc, "s3.bucket.missing", &format!("s3://{manifests}"));
    assert!(f["problem"].as_str().unwrap().contains("run manifests"), "{f}");

    // Repaired, the findings go.
    s3.put_bucket_versioning()
        .bucket(plain)
        .versioning_configuration(
            VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
        )
        .send()
        .await
        .unwrap();
    p.repaired("s3.bucket.versioning", &format!("s3://{plain}"));
    s3.delete_bucket_policy().bucket(plain).send().await.unwrap();
    p.repaired("s3.bucket-policy.foreign-principal", &format!("s3://{plain}"));
    s3.put_bucket_acl()
        .bucket(plain)
        .acl(aws_sdk_s3::types::BucketCannedAcl::Private)
        .send()
        .await
        .unwrap();
    p.repaired("s3.bucket-acl.foreign-grantee", &format!("s3://{plain}"));
    s3.delete_bucket_lifecycle().bucket(plain).send().await.unwrap();
    p.repaired("s3.bucket.lifecycle-expiry", &format!("s3://{plain}"));
    s3.delete_bucket_replication().bucket(locked).send().await.unwrap();
    p.repaired("s3.bucket.replication-out", &format!("s3://{locked}"));
    p.expect(&world, &config, "s3.bucket.missing", &format!("s3://{manifests}"));

    // No default encryption with the escrow key; a bucket of a job that
    // asks for no lock, without Object Lock.
    s3.delete_bucket_encryption().bucket(plain).send().await.unwrap();
    p.expect_at(
        &world,
        &config,
        "medium",
        "s3.bucket.default-encryption",
        &format!("s3://{plain}"),
    );
    default_encryption(&s3, plain, &world.key).await;
    p.repaired("s3.bucket.default-encryption", &format!("s3://{plain}"));
    clean_bucket(&s3, "escrow-open", false, &world.key).await;
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[[s3]]\nname = \"open\"\nsource_bucket = \"primary-data\"\ndest_bucket = \"escrow-open\"\n";
    std::fs::write(&config, text).unwrap();
    let doc =
        p.expect_at(&world, &config, "medium", "s3.bucket.object-lock-off", "s3://escrow-open");
    let f = finding(&doc, "s3.bucket.object-lock-off", "s3://escrow-open");
    assert!(f["fix"].as_str().unwrap().contains("--object-lock-enabled-for-bucket"), "{f}");

    // The text output: one line per finding, then the summary.
    let text = world.audit(&config, &["--output", "text"]);
    assert_eq!(text.code, 3, "{text:?}");
    assert!(
        text.stdout.contains(&format!("HIGH    s3://{manifests}: escrow bucket {manifests}")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.lines().last().unwrap().contains("5 finding(s): 4 high, 1 medium"),
        "{}",
        text.stdout
    );
}

/// An escrow table keyed on `pk`, encrypted with `key` (else DynamoDB's own
/// key), with deletion protection when `protected`.
async fn create_table(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: Option<&str>,
    protected: bool,
) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        SseSpecification, SseType,
    };
    ddb.create_table()
        .table_name(table)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .deletion_protection_enabled(protected)
        .set_sse_specification(key.map(|k| {
            SseSpecification::builder()
                .enabled(true)
                .sse_type(SseType::Kms)
                .kms_master_key_id(k)
                .build()
        }))
        .send()
        .await
        .expect("create the escrow table");
}

#[tokio::test]
async fn escrow_table_and_key_clean_then_each_violation_found() {
    use aws_sdk_dynamodb::types::{PointInTimeRecoverySpecification, TimeToLiveSpecification};
    let world = World::start().await;
    let ddb = aws_sdk_dynamodb::Client::new(world.escrow.sdk_config());
    let table = "escrow-orders";
    create_table(&ddb, table, Some(&world.key), true).await;
    let pitr = |on: bool| {
        ddb.update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(on)
                    .build()
                    .unwrap(),
            )
            .send()
    };
    pitr(true).await.expect("PITR on");
    let config = world.config(&format!(
        r#"[[dynamodb]]
name = "orders"
source_table = "orders"
dest_table = "{table}"
"#
    ));
    // The checkpoint table does not exist yet: the first run creates it.
    assert_clean(&world.audit(&config, &[]));

    let mut p = Planted::new();
    let resource = format!("dynamodb://{table}");
    pitr(false).await.unwrap();
    p.expect(&world, &config, "dynamodb.table.pitr", &resource);

    ddb.update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let doc = p.expect(&world, &config, "dynamodb.table.ttl", &resource);
    assert!(
        finding(&doc, "dynamodb.table.ttl", &resource)["problem"]
            .as_str()
            .unwrap()
            .contains("expires")
    );

    ddb.update_table().table_name(table).deletion_protection_enabled(false).send().await.unwrap();
    p.expect(&world, &config, "dynamodb.table.deletion-protection", &resource);

    // The table made anew under DynamoDB's own key (moto keeps a table's
    // encryption through UpdateTable): PITR off again, TTL gone.
    ddb.delete_table().table_name(table).send().await.unwrap();
    create_table(&ddb, table, None, false).await;
    p.repaired("dynamodb.table.ttl", &resource);
    p.expect(&world, &config, "dynamodb.table.sse", &resource);

    // The key: a policy admitting the primary, then disabled, then
    // scheduled for deletion.
    let kms = aws_sdk_kms::Client::new(world.escrow.sdk_config());
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ESCROW}:root"}},"Action":"kms:*","Resource":"*"}},
        {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{PRIMARY}:root"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#
    );
    kms.put_key_policy()
        .key_id(&world.key)
        .policy_name("default")
        .policy(policy)
        .send()
        .await
        .unwrap();
    let doc = p.expect(&world, &config, "kms.key-policy.foreign-principal", &world.key);
    let f = finding(&doc, "kms.key-policy.foreign-principal", &world.key);
    assert!(f["problem"].as_str().unwrap().contains("the primary account 111111111111"), "{f}");

    // moto wants the key id here, not the ARN.
    let key_id = world.key.rsplit('/').next().unwrap();
    kms.disable_key().key_id(key_id).send().await.unwrap();
    p.expect(&world, &config, "kms.key.disabled", &world.key);

    kms.schedule_key_deletion().key_id(key_id).pending_window_in_days(7).send().await.unwrap();
    p.repaired("kms.key.disabled", &world.key);
    let doc = p.expect(&world, &config, "kms.key.pending-deletion", &world.key);
    let f = finding(&doc, "kms.key.pending-deletion", &world.key);
    assert!(f["fix"].as_str().unwrap().contains("cancel-key-deletion"), "{f}");

    // A table job whose escrow table is gone.
    ddb.delete_table().table_name(table).send().await.unwrap();
    for check in [
        "dynamodb.table.pitr",
        "dynamodb.table.ttl",
        "dynamodb.table.deletion-protection",
        "dynamodb.table.sse",
    ] {
        p.repaired(check, &resource);
    }
    p.expect(&world, &config, "dynamodb.table.missing", &resource);
}

#[tokio::test]
async fn roles_trails_and_the_primarys_reach_are_found() {
    let world = World::start().await;
    let s3 = s3(&world.escrow);
    let bucket = "escrow-isolated";
    clean_bucket(&s3, bucket, true, &world.key).await;
    let config = world.config(&format!(
        "[[s3]]\nname = \"assets\"\nsource_bucket = \"primary-data\"\ndest_bucket = \"{bucket}\"\n"
    ));
    assert_clean(&world.audit(&config, &[]));
    let mut p = Planted::new();

    // A role in escrow the primary can assume.
    let iam = aws_sdk_iam::Client::new(world.escrow.sdk_config());
    let trusting = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole",
        "Principal":{{"AWS":"{PRIMARY}"}}}}]}}"#
    );
    {
        let _iam = world.iam_writes();
        iam.create_role()
            .role_name("break-glass")
            .assume_role_policy_document(trusting)
            .send()
            .await
            .unwrap();
    }
    let role_arn = format!("arn:aws:iam::{ESCROW}:role/break-glass");
    let doc = p.expect(&world, &config, "iam.trust.foreign-principal", &role_arn);
    let f = finding(&doc, "iam.trust.foreign-principal", &role_arn);
    assert!(f["problem"].as_str().unwrap().contains("the primary account 111111111111"), "{f}");

    // One that anyone can assume.
    let anyone = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole",
        "Principal":{"AWS":"*"}}]}"#;
    {
        let _iam = world.iam_writes();
        iam.create_role()
            .role_name("open-door")
            .assume_role_policy_document(anyone)
            .send()
            .await
            .unwrap();
    }
    p.expect(
        &world,
        &config,
        "iam.trust.foreign-principal",
        &format!("arn:aws:iam::{ESCROW}:role/open-door"),
    );

    // An IAM user with an access key, beside the runner (escrow-admin,
    // whose keys assume the operator role, is not reported).
    {
        let _iam = world.iam_writes();
        iam.create_user().user_name("intruder").send().await.unwrap();
        iam.create_access_key().user_name("intruder").send().await.unwrap();
    }
    let intruder = format!("arn:aws:iam::{ESCROW}:user/intruder");
    p.expected.push(("iam.user.present".into(), intruder.clone()));
    let doc = p.expect_at(&world, &config, "low", "iam.user.access-key", &intruder);
    assert_eq!(finding(&doc, "iam.user.present", &intruder)["severity"], "low");

    // The trail stops: nothing logs the escrow.
    let ct = aws_sdk_cloudtrail::Client::new(world.escrow.sdk_config());
    ct.stop_logging().name(&world.trail).send().await.unwrap();
    let doc = p.expect(&world, &config, "cloudtrail.not-logging", &world.trail);
    let f = finding(&doc, "cloudtrail.not-logging", &world.trail);
    assert!(f["problem"].as_str().unwrap().contains("escrow-trail"), "{f}");
    ct.start_logging().name(&world.trail).send().await.unwrap();
    p.repaired("cloudtrail.not-logging", &world.trail);

    // The primary's reader role gets rights on escrow resources.
    world
        .reader_policy(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow",
            "Action":["s3:GetBucketVersioning","s3:ListBucket","kms:DescribeKey","sts:AssumeRole"],
            "Resource":["arn:aws:s3:::{bucket}","{}","{ESCROW_ROLE}"]}}]}}"#,
            world.key
        ))
        .await;
    // (The key is granted too, but moto's KMS never finds another account's
    // key by ARN: the kms:DescribeKey probe is covered with mocks.)
    p.expected.push(("isolation.primary-access".into(), ESCROW_ROLE.into()));
    let doc = p.expect(&world, &config, "isolation.primary-access", &format!("s3://{bucket}"));
    let f = finding(&doc, "isolation.primary-access", &format!("s3://{bucket}"));
    assert!(
        f["problem"].as_str().unwrap().contains("s3:GetBucketVersioning and s3:ListObjectsV2"),
        "{f}"
    );
    world.reader_policy(READER_POLICY).await;
    for r in [format!("s3://{bucket}"), ESCROW_ROLE.to_string()] {
        p.repaired("isolation.primary-access", &r);
    }
    p.expect(&world, &config, "iam.trust.foreign-principal", &role_arn);
}

#[tokio::test]
async fn escrow_snapshots_shared_with_another_account_are_found() {
    use aws_sdk_ec2::types::{
        LaunchPermission, LaunchPermissionModifications, OperationType, SnapshotAttributeName,
    };
    let world = World::start().await;
    let config = world.config(
        r#"[[ec2]]
name = "ec2"
tags = { backup = "true" }

[[rds]]
name = "rds"
tags = { backup = "true" }

[[redshift]]
name = "redshift"
tags = { backup = "true" }
"#,
    );
    let ec2 = aws_sdk_ec2::Client::new(world.escrow.sdk_config());
    let volume = ec2
        .create_volume()
        .availability_zone("us-east-1a")
        .size(8)
        .send()
        .await
        .unwrap()
        .volume_id
        .unwrap();
    let snapshot =
        ec2.create_snapshot().volume_id(&volume).send().await.unwrap().snapshot_id.unwrap();
    let image = ec2
        .register_image()
        .name("escrow-image")
        .root_device_name("/dev/sda1")
        .block_device_mappings(
            aws_sdk_ec2::types::BlockDeviceMapping::builder()
                .device_name("/dev/sda1")
                .ebs(aws_sdk_ec2::types::EbsBlockDevice::builder().snapshot_id(&snapshot).build())
                .build(),
        )
        .send()
        .await
        .unwrap()
        .image_id
        .unwrap();
    let rds = aws_sdk_rds::Client::new(world.escrow.sdk_config());
    rds.create_db_instance()
        .db_instance_identifier("escrow-db")
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .allocated_storage(20)
        .master_username("admin")
        .master_user_password("password123")
        .send()
        .await
        .unwrap();
    rds.create_db_snapshot()
        .db_instance_identifier("escrow-db")
        .db_snapshot_identifier("escrow-db-copy")
        .send()
        .await
        .unwrap();
    rds.create_db_cluster()
        .db_cluster_identifier("escrow-cluster")
        .engine("aurora-postgresql")
        .master_username("admin")
        .master_user_password("password123")
        .send()
        .await
        .unwrap();
    rds.create_db_cluster_snapshot()
        .db_cluster_identifier("escrow-cluster")
        .db_cluster_snapshot_identifier("escrow-cluster-copy")
        .send()
        .await
        .unwrap();
    let redshift = aws_sdk_redshift::Client::new(world.escrow.sdk_config());
    redshift
        .create_cluster()
        .cluster_identifier("escrow-dw")
        .node_type("dc2.large")
        .master_username("admin")
        .master_user_password("Password123")
        .cluster_type("single-node")
        .send()
        .await
        .unwrap();
    redshift
        .create_cluster_snapshot()
        .cluster_identifier("escrow-dw")
        .snapshot_identifier("escrow-dw-copy")
        .send()
        .await
        .unwrap();
    // The escrow template's locked Recycle Bin rules (xtask's rbin model).
    let rbin = aws_sdk_rbin::Client::new(world.escrow.sdk_config());
    let lock = || {
        aws_sdk_rbin::types::LockConfiguration::builder()
            .unlock_delay(
                aws_sdk_rbin::types::UnlockDelay::builder()
                    .unlock_delay_value(14)
                    .unlock_delay_unit(aws_sdk_rbin::types::UnlockDelayUnit::Days)
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let mut rules = Vec::new();
    for kind in [
        aws_sdk_rbin::types::ResourceType::EbsSnapshot,
        aws_sdk_rbin::types::ResourceType::Ec2Image,
    ] {
        let rule = rbin
            .create_rule()
            .resource_type(kind)
            .retention_period(
                aws_sdk_rbin::types::RetentionPeriod::builder()
                    .retention_period_value(14)
                    .retention_period_unit(aws_sdk_rbin::types::RetentionPeriodUnit::Days)
                    .build()
                    .unwrap(),
            )
            .lock_configuration(lock())
            .send()
            .await
            .expect("create a locked Recycle Bin rule");
        rules.push(rule.identifier().unwrap().to_string());
    }
    // Escrow-owned, unshared, deletions recoverable: clean.
    assert_clean(&world.audit(&config, &[]));

    // An unlocked rule no longer counts (medium: exit 0 unless --fail-on).
    rbin.unlock_rule().identifier(&rules[0]).send().await.expect("unlock");
    let out = world.audit(&config, &["--fail-on", "medium"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(found(&out), [("rbin.rule.missing".to_string(), "rbin://EBS_SNAPSHOT".to_string())]);
    let f = finding(&out.json(), "rbin.rule.missing", "rbin://EBS_SNAPSHOT").clone();
    assert_eq!(f["severity"], "medium");
    assert!(f["problem"].as_str().unwrap().contains("pending_unlock"), "{f}");
    rbin.lock_rule()
        .identifier(&rules[0])
        .lock_configuration(lock())
        .send()
        .await
        .expect("lock again");
    assert_clean(&world.audit(&config, &[]));

    let mut p = Planted::new();
    ec2.modify_snapshot_attribute()
        .snapshot_id(&snapshot)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(OperationType::Add)
        .user_ids(PRIMARY)
        .send()
        .await
        .unwrap();
    let doc = p.expect(&world, &config, "ec2.snapshot.shared", &snapshot);
    let f = finding(&doc, "ec2.snapshot.shared", &snapshot);
    assert!(f["problem"].as_str().unwrap().contains("the primary account 111111111111"), "{f}");

    ec2.modify_image_attribute()
        .image_id(&image)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id("333333333333").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    p.expect(&world, &config, "ec2.image.shared", &image);

    rds.modify_db_snapshot_attribute()
        .db_snapshot_identifier("escrow-db-copy")
        .attribute_name("restore")
        .values_to_add(PRIMARY)
        .send()
        .await
        .unwrap();
    p.expect(&world, &config, "rds.snapshot.shared", "rds snapshot escrow-db-copy");

    rds.modify_db_cluster_snapshot_attribute()
        .db_cluster_snapshot_identifier("escrow-cluster-copy")
        .attribute_name("restore")
        .values_to_add("all")
        .send()
        .await
        .unwrap();
    let doc = p.expect(
        &world,
        &config,
        "rds.cluster-snapshot.shared",
        "rds cluster snapshot escrow-cluster-copy",
    );
    let f =
        finding(&doc, "rds.cluster-snapshot.shared", "rds cluster snapshot escrow-cluster-copy");
    assert!(f["problem"].as_str().unwrap().contains("everyone (public)"), "{f}");

    redshift
        .authorize_snapshot_access()
        .snapshot_identifier("escrow-dw-copy")
        .account_with_restore_access(PRIMARY)
        .send()
        .await
        .unwrap();
    p.expect(&world, &config, "redshift.snapshot.shared", "redshift snapshot escrow-dw-copy");
}

#[tokio::test]
async fn fail_on_levels_unreachable_primary_same_account_and_bad_config() {
    let world = World::start().await;
    clean_bucket(&s3(&world.escrow), "escrow-levels", true, &world.key).await;
    let config = world.config(
        "[[s3]]\nname = \"j\"\nsource_bucket = \"primary-data\"\ndest_bucket = \"escrow-levels\"\n",
    );
    assert_clean(&world.audit(&config, &["--fail-on", "low"]));

    // A second trail that does not log, beside one that does: low.
    let ct = aws_sdk_cloudtrail::Client::new(world.escrow.sdk_config());
    let old = ct
        .create_trail()
        .name("old-trail")
        .s3_bucket_name("escrow-trail-logs")
        .send()
        .await
        .unwrap();
    let old = old.trail_arn().unwrap().to_string();
    let out = world.audit(&config, &[]);
    assert_eq!(out.code, 0, "a low finding does not fail by default: {out:?}");
    assert_eq!(found(&out), [("cloudtrail.trail.stopped".to_string(), old.clone())]);
    assert_eq!(out.json()["findings"][0]["severity"], "low");
    assert_eq!(world.audit(&config, &["--fail-on", "medium"]).code, 0);
    let low = world.audit(&config, &["--fail-on", "low"]);
    assert_eq!((low.code, low.json()["ok"].as_bool()), (3, Some(false)), "{low:?}");
    ct.delete_trail().name("old-trail").send().await.unwrap();

    // The reader role cannot be assumed: the escrow is still audited, and
    // that is a medium finding.
    let iam = aws_sdk_iam::Client::new(world.escrow.sdk_config());
    let deny_reader = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Deny","Action":"sts:AssumeRole",
        "Resource":"{READER_ROLE}"}}]}}"#
    );
    {
        let _iam = world.iam_writes();
        iam.put_role_policy()
            .role_name("escrow-operator")
            .policy_name("no-primary")
            .policy_document(deny_reader)
            .send()
            .await
            .unwrap();
    }
    let out = world.audit(&config, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        found(&out),
        [("isolation.primary-unreachable".to_string(), format!("account {PRIMARY}"))]
    );
    assert_eq!(out.json()["findings"][0]["severity"], "medium");
    assert_eq!(world.audit(&config, &["--fail-on", "medium"]).code, 3);
    {
        let _iam = world.iam_writes();
        iam.delete_role_policy()
            .role_name("escrow-operator")
            .policy_name("no-primary")
            .send()
            .await
            .unwrap();
    }

    // An audit call refused: "could not check", medium.
    let deny_trails = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny",
        "Action":"cloudtrail:DescribeTrails","Resource":"*"}]}"#;
    {
        let _iam = world.iam_writes();
        iam.put_role_policy()
            .role_name("escrow-operator")
            .policy_name("no-trails")
            .policy_document(deny_trails)
            .send()
            .await
            .unwrap();
    }
    let out = world.audit(&config, &["--fail-on", "medium"]);
    assert_eq!(out.code, 3, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["findings"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["findings"][0]["check"], "audit.access-denied");
    assert_eq!(doc["findings"][0]["severity"], "medium");
    assert!(
        doc["findings"][0]["problem"].as_str().unwrap().starts_with("could not check"),
        "{doc:#}"
    );
    {
        let _iam = world.iam_writes();
        iam.delete_role_policy()
            .role_name("escrow-operator")
            .policy_name("no-trails")
            .send()
            .await
            .unwrap();
    }

    // Escrow credentials that land in the primary account (a role there
    // the escrow admin may assume).
    {
        let _iam = world.iam_writes();
        role(
            &aws_sdk_iam::Client::new(world.primary.sdk_config()),
            "escrow-operator",
            &format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole",
                "Principal":{{"AWS":"arn:aws:iam::{ESCROW}:user/escrow-admin"}}}}]}}"#
            ),
            ALL,
        )
        .await;
    }
    let same = escrow_sync_e2e::write_config(&format!(
        r#"[escrow]
region = "us-east-1"
role_arn = "arn:aws:iam::{PRIMARY}:role/escrow-operator"
allow_same_account = true
kms_key_id = "{}"

[primary]
account_id = "{PRIMARY}"
role_arn = "{READER_ROLE}"
external_id = "test-external-id"

[[s3]]
name = "j"
source_bucket = "primary-data"
dest_bucket = "escrow-levels"
"#,
        world.key
    ));
    let out = world.audit(&same, &[]);
    assert_eq!(out.code, 3, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["escrow_account"], PRIMARY);
    finding(&doc, "accounts.same-account", &format!("account {PRIMARY}"));

    // An invalid config: exit 2, the error in the JSON.
    let bad = escrow_sync_e2e::write_config("[escrow]\nregion = \"us-east-1\"\nbogus = 1\n");
    let out = world.audit(&bad, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    let doc = out.json();
    assert_eq!((doc["ok"].as_bool(), doc["exit_code"].as_u64()), (Some(false), Some(2)));
    assert!(doc["error"].as_str().unwrap().contains("bogus"), "{doc:#}");
}
