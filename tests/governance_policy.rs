//! Generated policies on the emulator: valid templates, and with IAM
//! enforcement on, enough for a run and each statement needed.
//!
//! Each test starts its own moto (`escrow_sync_e2e::PrivateEmulator`: a
//! free 127.0.0.1 port, stopped by PID when dropped), IAM enforcement off:
//! requests are free until the test has bootstrapped an administrator user
//! in each account and the user that runs escrow-sync, then the test turns
//! enforcement on (`/moto-api/reset-auth`) and everything after is checked
//! against IAM policies.
//!
//! What moto 5.2.5 evaluates, read from `moto/core/authorization.py` and
//! `moto/iam/access_control.py`, and what the tests do about it:
//! - identity policies of IAM users and assumed roles (inline and attached):
//!   yes. S3 requests carry the bucket or object ARN as the resource;
//!   moto's DynamoDB and KMS handlers carry `*`, so a statement scoped to a
//!   table or key would never match: xtask's launcher patches them to name
//!   the table or key ARN (`xtask/src/moto_patch_iam.py`), so table and key
//!   scoping is evaluated too;
//! - conditions: only `StringEquals`, and only against values moto collects
//!   (the external id of AssumeRole); every other condition passes. The
//!   `s3:prefix` and `ec2:Add/userId` conditions are pinned by the unit
//!   tests in `crates/governance/tests/policy.rs`;
//! - trust policies: only when the role is in the caller's own account, so
//!   the reader role's trust (escrow operator, external id) is not
//!   evaluated across accounts (unit tests again); the operator role's trust
//!   is;
//! - resource policies (bucket policies, key policies) and KMS use by S3
//!   and DynamoDB on the caller's behalf: not evaluated (unit tests);
//! - moto authorizes HeadBucket as `s3:HeadBucket` (AWS: `s3:ListBucket`):
//!   an `emulator-quirks` policy grants that name, which is no AWS action,
//!   on the job's buckets;
//! - snapshot jobs: moto's EC2, RDS and Redshift handlers name no resource
//!   either, and their sharing conditions are not evaluated: covered by the
//!   unit tests only.

use std::path::{Path, PathBuf};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use serde_json::{Value, json};

use escrow_sync_e2e::{
    ESCROW, ESCROW_ROLE, Outcome, PRIMARY, READER_ROLE, cli_env, unique, write_config,
};
use escrow_sync_governance::policy::EXTERNAL_ID_PLACEHOLDER;

const EXTERNAL_ID: &str = "policy-test-external-id";
const REGION: &str = "us-east-1";

/// This test's own moto, IAM enforcement off until [`Moto::enforce`].
struct Moto {
    server: escrow_sync_e2e::PrivateEmulator,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        let server = escrow_sync_e2e::PrivateEmulator::start("policy-iam");
        let endpoint = server.endpoint.clone();
        Moto { server, endpoint }
    }

    /// Every request from now on is checked against IAM.
    fn enforce(&self) {
        self.server.set_iam_enforced(true);
    }

    async fn config(&self, key: &str, secret: &str, token: Option<String>) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                key,
                secret,
                token,
                None,
                "policy-tests",
            )))
            .load()
            .await
    }

    /// An administrator of `account` while enforcement is off (an assumed
    /// role, as the other suites' admin).
    async fn bootstrap_admin(&self, account: &str) -> SdkConfig {
        let base = self.config("testing", "testing", None).await;
        let creds = aws_sdk_sts::Client::new(&base)
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account}:role/test-admin"))
            .role_session_name("policy-tests")
            .send()
            .await
            .expect("assume a bootstrap admin")
            .credentials
            .expect("credentials");
        self.config(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_string()),
        )
        .await
    }

    /// Runs `escrow-sync ARGS` on this emulator with `keys`.
    fn cli(&self, args: &[&str], keys: &(String, String)) -> Outcome {
        cli_env(
            args,
            &[
                ("AWS_ENDPOINT_URL", &self.endpoint),
                ("AWS_ACCESS_KEY_ID", &keys.0),
                ("AWS_SECRET_ACCESS_KEY", &keys.1),
                ("AWS_REGION", REGION),
            ],
        )
    }
}

/// An IAM user `name` with an inline policy, and its access key.
async fn user(iam: &aws_sdk_iam::Client, name: &str, policy: &Value) -> (String, String) {
    iam.create_user().user_name(name).send().await.expect("create user");
    iam.put_user_policy()
        .user_name(name)
        .policy_name("p")
        .policy_document(policy.to_string())
        .send()
        .await
        .expect("user policy");
    let key = iam.create_access_key().user_name(name).send().await.expect("access key");
    let key = key.access_key.expect("an access key");
    (key.access_key_id, key.secret_access_key)
}

fn s3(conf: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(conf).force_path_style(true).build(),
    )
}

async fn versioned_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.create_bucket().bucket(bucket).send().await.expect("create bucket");
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
        )
        .send()
        .await
        .expect("versioning");
}

/// The accounts as the tests use them: admins of both, the user that runs
/// escrow-sync in escrow (it may only assume the operator role), a source
/// bucket and table in the primary, and the escrow key.
struct World {
    moto: Moto,
    primary: SdkConfig,
    escrow: SdkConfig,
    runner: (String, String),
    source_bucket: String,
    source_table: String,
    escrow_key: String,
}

impl World {
    /// The world; with `enforce`, IAM checks every request after the
    /// bootstrap.
    async fn new(enforce: bool) -> Self {
        let moto = Moto::start();
        let admin = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]});
        let p = moto.bootstrap_admin(PRIMARY).await;
        let e = moto.bootstrap_admin(ESCROW).await;
        let p_keys = user(&aws_sdk_iam::Client::new(&p), "admin", &admin).await;
        let e_keys = user(&aws_sdk_iam::Client::new(&e), "admin", &admin).await;
        let runner = user(
            &aws_sdk_iam::Client::new(&e),
            "escrow-runner",
            &json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": ESCROW_ROLE}]}),
        )
        .await;
        let primary = moto.config(&p_keys.0, &p_keys.1, None).await;
        let escrow = moto.config(&e_keys.0, &e_keys.1, None).await;
        if enforce {
            moto.enforce();
            // Checked now: the runner may do nothing but assume the operator.
            let runner_conf = moto.config(&runner.0, &runner.1, None).await;
            let denied = s3(&runner_conf).list_buckets().send().await;
            assert!(denied.is_err(), "enforcement is off: {denied:?}");
        }

        let source_bucket = unique("pol-src");
        let src = s3(&primary);
        versioned_bucket(&src, &source_bucket).await;
        for (key, body) in
            [("data/a.txt", "alpha"), ("data/b.txt", "beta"), ("other/c.txt", "gamma")]
        {
            src.put_object()
                .bucket(&source_bucket)
                .key(key)
                .body(ByteStream::from_static(body.as_bytes()))
                .send()
                .await
                .expect("put a source object");
        }
        let ddb = aws_sdk_dynamodb::Client::new(&primary);
        let source_table = unique("pol-orders");
        ddb.create_table()
            .table_name(&source_table)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .expect("create the source table");
        for i in 0..5 {
            ddb.put_item()
                .table_name(&source_table)
                .item("id", AttributeValue::S(format!("order-{i}")))
                .item("total", AttributeValue::N(format!("{}", i * 10)))
                .send()
                .await
                .expect("put an item");
        }
        let escrow_key = aws_sdk_kms::Client::new(&escrow)
            .create_key()
            .description("escrow-sync policy test key")
            .send()
            .await
            .expect("create the escrow key")
            .key_metadata
            .and_then(|m| m.arn)
            .expect("a key arn");
        World { moto, primary, escrow, runner, source_bucket, source_table, escrow_key }
    }

    /// A config of one S3 job (prefix `data/`) and one DynamoDB table job,
    /// into escrow destinations no earlier run touched; returns it and its
    /// escrow bucket, table and checkpoint table.
    async fn fresh_config(&self) -> (PathBuf, String, String) {
        let dest_bucket = unique("pol-dst");
        versioned_bucket(&s3(&self.escrow), &dest_bucket).await;
        let dest_table = unique("pol-escrow-orders");
        let checkpoints = unique("pol-checkpoints");
        let path = write_config(&format!(
            r#"[escrow]
region = "{REGION}"
role_arn = "{ESCROW_ROLE}"
account_id = "{ESCROW}"
kms_key_id = "{key}"

[primary]
account_id = "{PRIMARY}"
role_arn = "{READER_ROLE}"
external_id = "{EXTERNAL_ID}"

[[s3]]
name = "assets"
source_bucket = "{src}"
dest_bucket = "{dest_bucket}"
prefix = "data/"

[[dynamodb]]
name = "orders"
source_table = "{table}"
dest_table = "{dest_table}"
checkpoint_table = "{checkpoints}"
"#,
            key = self.escrow_key,
            src = self.source_bucket,
            table = self.source_table,
        ));
        (path, dest_bucket, dest_table)
    }

    /// `escrow-sync policy` for `config`.
    fn policies(&self, config: &Path) -> Value {
        let out = self.moto.cli(&["policy", "--config", config.to_str().unwrap()], &self.runner);
        assert_eq!(out.code, 0, "policy failed: {}", out.stderr);
        let doc = out.json();
        assert!(!out.stdout.contains(EXTERNAL_ID), "the external id is printed");
        doc
    }

    /// Creates (or updates) both roles from `doc`, each permission policy
    /// without the statements `drop` names.
    async fn install(&self, doc: &Value, drop: Option<(&str, usize)>, buckets: &[&str]) {
        let reader = &doc["primary"]["reader_role"];
        let operator = &doc["escrow"]["operator_policy"];
        let trust =
            reader["trust_policy"].to_string().replace(EXTERNAL_ID_PLACEHOLDER, EXTERNAL_ID);
        let runner_trust = json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ESCROW}:user/escrow-runner")},
            "Action": "sts:AssumeRole"}]});
        let quirks = json!({"Version": "2012-10-17", "Statement": [{
            "Sid": "MotoAuthorizesHeadBucketUnderThisName",
            "Effect": "Allow",
            "Action": "s3:HeadBucket",
            "Resource": buckets.iter().map(|b| format!("arn:aws:s3:::{b}")).collect::<Vec<_>>()}]});
        for (conf, name, trust, policy, side) in [
            (
                &self.primary,
                reader["name"].as_str().unwrap(),
                trust,
                &reader["permission_policy"],
                "reader",
            ),
            (&self.escrow, "escrow-operator", runner_trust.to_string(), operator, "operator"),
        ] {
            let mut policy = policy.clone();
            if let Some((s, i)) = drop
                && s == side
            {
                policy["Statement"].as_array_mut().unwrap().remove(i);
            }
            let iam = aws_sdk_iam::Client::new(conf);
            if iam.get_role().role_name(name).send().await.is_err() {
                iam.create_role()
                    .role_name(name)
                    .assume_role_policy_document(&trust)
                    .send()
                    .await
                    .expect("create role");
            } else {
                iam.update_assume_role_policy()
                    .role_name(name)
                    .policy_document(&trust)
                    .send()
                    .await
                    .expect("update trust");
            }
            iam.put_role_policy()
                .role_name(name)
                .policy_name("escrow-sync")
                .policy_document(policy.to_string())
                .send()
                .await
                .expect("role policy");
            if side == "operator" {
                iam.put_role_policy()
                    .role_name(name)
                    .policy_name("escrow-sync-audit")
                    .policy_document(doc["escrow"]["audit_policy"].to_string())
                    .send()
                    .await
                    .expect("audit policy");
            }
            iam.put_role_policy()
                .role_name(name)
                .policy_name("emulator-quirks")
                .policy_document(quirks.to_string())
                .send()
                .await
                .expect("quirks policy");
        }
    }

    fn run(&self, config: &Path) -> Outcome {
        self.moto
            .cli(&["run", "--config", config.to_str().unwrap(), "--output", "json"], &self.runner)
    }
}

fn denied(out: &Outcome) -> bool {
    let text = format!("{}\n{}", out.stdout, out.stderr).to_lowercase();
    ["access denied", "accessdenied", "not authorized", "forbidden"]
        .iter()
        .any(|s| text.contains(s))
}

/// Statements a run of these jobs does not need on moto, and why; every
/// other one is needed.
fn not_needed_on_moto(sid: &str) -> Option<&'static str> {
    if sid == "ListEscrowBuckets" {
        return Some("optional: without it the bucket check relies on ExpectedBucketOwner");
    }
    if sid.starts_with("EscrowJournal") {
        return Some("multipart journals only; an entry left behind is a warning");
    }
    if sid == "UseEscrowKey" || sid == "EscrowKeyGrants" {
        return Some("moto does not authorize the KMS use of S3 and DynamoDB");
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_roles_are_enough_for_a_run_and_each_statement_is_needed() {
    let world = World::new(true).await;

    // With every statement: a complete run and a clean verify.
    let (config, dest_bucket, dest_table) = world.fresh_config().await;
    let doc = world.policies(&config);
    let buckets = [world.source_bucket.as_str(), dest_bucket.as_str()];
    world.install(&doc, None, &buckets).await;
    let out = world.run(&config);
    assert_eq!(
        out.code, 0,
        "run with the generated policies failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    let escrow_s3 = s3(&world.escrow);
    let mut keys: Vec<String> = escrow_s3
        .list_objects_v2()
        .bucket(&dest_bucket)
        .send()
        .await
        .expect("list escrow")
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    keys.sort();
    // The copies under the job's prefix, and the job's lease (no manifest
    // bucket here: it sits at the bucket root, outside the copied keys).
    assert_eq!(
        keys,
        [".escrow-sync/leases/assets.json", "data/a.txt", "data/b.txt"],
        "the prefix and the lease only"
    );
    let items = aws_sdk_dynamodb::Client::new(&world.escrow)
        .scan()
        .table_name(&dest_table)
        .send()
        .await
        .expect("scan the escrow table")
        .count;
    assert_eq!(items, 5);
    let verify = world
        .moto
        .cli(&["verify", "--config", config.to_str().unwrap(), "--output", "json"], &world.runner);
    assert_eq!(verify.code, 0, "verify:\n{}\n{}", verify.stdout, verify.stderr);

    // The audit under the generated audit policy: it can read everything it
    // checks, and the reader role reaches nothing in escrow. (This escrow
    // has other findings — no trail, no public access block — by design.)
    let audit = world
        .moto
        .cli(&["audit", "--config", config.to_str().unwrap(), "--output", "json"], &world.runner);
    let findings = audit.json()["findings"].as_array().expect("findings").clone();
    for f in &findings {
        let check = f["check"].as_str().unwrap();
        assert!(
            !["audit.access-denied", "isolation.primary-access", "isolation.primary-unreachable"]
                .contains(&check),
            "{f}"
        );
    }
    assert!(
        findings.iter().any(|f| f["check"] == "cloudtrail.not-logging"),
        "the audit ran its checks: {findings:?}"
    );

    // Without any one statement the run (or verify) needs: AccessDenied.
    let mut checked = Vec::new();
    let mut skipped = Vec::new();
    for side in ["reader", "operator"] {
        let n = match side {
            "reader" => doc["primary"]["reader_role"]["permission_policy"]["Statement"]
                .as_array()
                .unwrap()
                .len(),
            _ => doc["escrow"]["operator_policy"]["Statement"].as_array().unwrap().len(),
        };
        for i in 0..n {
            let (config, dest_bucket, _) = world.fresh_config().await;
            let doc = world.policies(&config);
            let statement = match side {
                "reader" => &doc["primary"]["reader_role"]["permission_policy"]["Statement"][i],
                _ => &doc["escrow"]["operator_policy"]["Statement"][i],
            };
            let sid = statement["Sid"].as_str().unwrap().to_string();
            if let Some(why) = not_needed_on_moto(&sid) {
                skipped.push(format!("{side} {sid}: {why}"));
                continue;
            }
            world
                .install(
                    &doc,
                    Some((side, i)),
                    &[world.source_bucket.as_str(), dest_bucket.as_str()],
                )
                .await;
            // Needed by the run, or else by `verify` (which reads what the
            // run no longer does: the source's tags, S3 copying them).
            let mut out = world.run(&config);
            if out.code == 0 {
                out = world.moto.cli(
                    &["verify", "--config", config.to_str().unwrap(), "--output", "json"],
                    &world.runner,
                );
            }
            assert_ne!(
                out.code, 0,
                "the run and verify succeeded without {side} statement {sid}:\n{}",
                out.stdout
            );
            assert!(
                denied(&out),
                "without {side} {sid}, not an access denial:\n{}\n{}",
                out.stdout,
                out.stderr
            );
            checked.push(format!("{side} {sid}"));
        }
    }
    eprintln!("needed: {checked:#?}\nnot needed on moto: {skipped:#?}");
    for must in [
        "reader ReadListAssets",
        "reader ReadObjectsAssets",
        "reader ReadTableOrders",
        "operator AssumeReaderRole",
        "operator PullSourceAssets",
        "operator EscrowTables",
        "operator CheckpointTable",
    ] {
        assert!(checked.iter().any(|c| c == must), "{must} was not checked: {checked:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn templates_validate_and_create_the_roles() {
    // Without enforcement: moto recomputes request signatures to check
    // them, and does not get CloudFormation's large form bodies right.
    let world = World::new(false).await;
    let (config, dest_bucket, _) = world.fresh_config().await;
    // The template creates the escrow bucket itself: a name no one holds.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&dest_bucket, &format!("{dest_bucket}-cfn"));
    std::fs::write(&config, text).unwrap();
    let out = world.moto.cli(
        &["policy", "--config", config.to_str().unwrap(), "--format", "cloudformation"],
        &world.runner,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = out.json();
    assert!(!out.stdout.contains(EXTERNAL_ID));
    let json_doc = world.policies(&config);

    for (conf, template, params) in [
        (&world.escrow, &doc["escrow"], vec![]),
        (&world.primary, &doc["primary"], vec![("ExternalId", EXTERNAL_ID)]),
    ] {
        let cfn = aws_sdk_cloudformation::Client::new(conf);
        cfn.validate_template()
            .template_body(template.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("invalid template: {e:?}\n{template:#}"));
        let mut req = cfn
            .create_stack()
            .stack_name(unique("escrow-sync"))
            .template_body(template.to_string());
        for (k, v) in params {
            req = req.parameters(
                aws_sdk_cloudformation::types::Parameter::builder()
                    .parameter_key(k)
                    .parameter_value(v)
                    .build(),
            );
        }
        let id = req.send().await.expect("create stack").stack_id.expect("a stack id");
        let stack = cfn.describe_stacks().stack_name(&id).send().await.expect("describe stack");
        let status = stack.stacks()[0].stack_status().map(|s| s.as_str().to_string());
        assert_eq!(status.as_deref(), Some("CREATE_COMPLETE"), "{stack:?}");
    }

    // The roles hold the generated documents.
    let reader = aws_sdk_iam::Client::new(&world.primary)
        .get_role_policy()
        .role_name("escrow-reader")
        .policy_name("escrow-sync-reader")
        .send()
        .await
        .expect("the reader role's policy");
    let reader: Value = document(reader.policy_document());
    assert_eq!(reader, json_doc["primary"]["reader_role"]["permission_policy"]);
    let operator = aws_sdk_iam::Client::new(&world.escrow)
        .get_role_policy()
        .role_name("escrow-operator")
        .policy_name("escrow-sync-operator")
        .send()
        .await
        .expect("the operator role's policy");
    let operator: Value = document(operator.policy_document());
    assert_eq!(operator, json_doc["escrow"]["operator_policy"]);
    let trust = aws_sdk_iam::Client::new(&world.primary)
        .get_role()
        .role_name("escrow-reader")
        .send()
        .await
        .expect("the reader role")
        .role
        .expect("a role")
        .assume_role_policy_document
        .expect("a trust policy");
    let trust: Value = document(&trust);
    assert_eq!(trust["Statement"][0]["Principal"]["AWS"], ESCROW_ROLE);
    assert_eq!(trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"], EXTERNAL_ID);
    // The escrow bucket, encrypted with the escrow key. (moto's
    // CloudFormation ignores a bucket's VersioningConfiguration, Object
    // Lock and PublicAccessBlockConfiguration: the unit tests pin those.)
    let encryption = s3(&world.escrow)
        .get_bucket_encryption()
        .bucket(format!("{dest_bucket}-cfn"))
        .send()
        .await
        .expect("the template's escrow bucket");
    let rule = &encryption.server_side_encryption_configuration().expect("encryption").rules()[0];
    let default = rule.apply_server_side_encryption_by_default().expect("a default");
    assert_eq!(default.sse_algorithm().as_str(), "aws:kms");
    assert_eq!(default.kms_master_key_id(), Some(world.escrow_key.as_str()));
}

/// A policy document as IAM returns it: URL-encoded JSON; moto returns an
/// inline policy a CloudFormation stack created as a Python dict's repr
/// (single quotes), which is read here as the JSON it stands for.
fn document(s: &str) -> Value {
    let text = decode(s);
    serde_json::from_str(&text).unwrap_or_else(|_| {
        let json = text.replace('\'', "\"").replace("True", "true").replace("False", "false");
        serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("not a policy document ({e}): {text}"))
    })
}

/// IAM returns policy documents URL-encoded.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out).expect("utf-8")
}
