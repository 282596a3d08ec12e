//! Shared harness for the two-account suites on the emulator.
//!
//! The emulator (moto) is started by `cargo xtask test` (or
//! `cargo xtask emulator start`); its endpoint comes from
//! `ESCROW_SYNC_EMULATOR`, `AWS_ENDPOINT_URL` or `target/emulator/endpoint`.
//! Accounts are modelled by STS AssumeRole: credentials for a role in
//! `111111111111` act as the primary, in `222222222222` as the escrow.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_config::BehaviorVersion;
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};

use escrow_sync_aws::{Connector, EscrowAccount, PrimaryAccount, Session, Sessions};

/// The primary account.
pub const PRIMARY: &str = "111111111111";
/// The escrow account.
pub const ESCROW: &str = "222222222222";
/// The escrow operator role.
pub const ESCROW_ROLE: &str = "arn:aws:iam::222222222222:role/escrow-operator";
/// The primary's reader role.
pub const READER_ROLE: &str = "arn:aws:iam::111111111111:role/escrow-reader";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The emulator's endpoint. Panics with the fix when no emulator is running:
/// these suites never skip silently.
pub fn endpoint() -> String {
    for var in ["ESCROW_SYNC_EMULATOR", "AWS_ENDPOINT_URL"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return v;
        }
    }
    let file = target_dir().join("emulator").join("endpoint");
    std::fs::read_to_string(&file).map(|s| s.trim().to_string()).unwrap_or_else(|_| {
        panic!(
            "no emulator: run the suites with `cargo xtask test`, or start one with \
             `cargo xtask emulator start` ({} not found)",
            file.display()
        )
    })
}

/// The base configuration: static test credentials against the emulator.
pub async fn base_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "escrow-sync-tests",
        ))
        .load()
        .await
}

/// A session acting as `account` (an administrator there, for test setup).
pub async fn admin(account: &str) -> Session {
    let provider = aws_config::sts::AssumeRoleProvider::builder(format!(
        "arn:aws:iam::{account}:role/test-admin"
    ))
    .session_name("escrow-sync-tests")
    .configure(&base_config().await)
    .build()
    .await;
    let conf = base_config()
        .await
        .to_builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
            provider,
        ))
        .build();
    let s = Session::identify(conf, "test admin").await.expect("assume a test admin role");
    assert_eq!(s.account_id(), account);
    s
}

/// Sessions as escrow-sync builds them: the escrow operator role, then the
/// primary reader role assumed with the escrow credentials.
pub async fn sessions() -> Sessions {
    Connector::new()
        .with_base_config(base_config().await)
        .connect(
            &EscrowAccount::new("us-east-1")
                .with_role_arn(Some(ESCROW_ROLE.into()))
                .with_account_id(Some(ESCROW.into())),
            &PrimaryAccount::new(PRIMARY)
                .with_role_arn(Some(READER_ROLE.into()))
                .with_external_id(Some("test-external-id".into())),
        )
        .await
        .expect("connect to both accounts")
}

/// An S3 client for `session` (path-style, as escrow-sync builds it).
pub fn s3(session: &Session) -> Client {
    escrow_sync_s3::client(session)
}

/// A bucket name no other test uses.
pub fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
        .chars()
        .take(63)
        .collect()
}

/// Creates `bucket` with `client`; versioned when asked.
pub async fn create_bucket(client: &Client, bucket: &str, versioned: bool) {
    client.create_bucket().bucket(bucket).send().await.expect("create bucket");
    if versioned {
        client
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
            )
            .send()
            .await
            .expect("enable versioning");
    }
}

/// Creates `bucket` with Object Lock enabled (which also turns versioning on).
pub async fn create_locked_bucket(client: &Client, bucket: &str) {
    client
        .create_bucket()
        .bucket(bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("create a bucket with Object Lock");
}

/// A new KMS key in `session`'s account; returns its ARN.
pub async fn create_kms_key(session: &Session) -> String {
    let kms = aws_sdk_kms::Client::new(session.sdk_config());
    let key =
        kms.create_key().description("escrow-sync test key").send().await.expect("create key");
    key.key_metadata().expect("key metadata").arn().expect("key arn").to_string()
}

/// A primary bucket and an escrow bucket, with admin clients for both.
pub struct BucketPair {
    /// Admin client in the primary.
    pub primary: Client,
    /// Admin client in the escrow.
    pub escrow: Client,
    /// The primary bucket.
    pub source_bucket: String,
    /// The escrow bucket (versioned).
    pub dest_bucket: String,
}

impl BucketPair {
    /// Creates both buckets.
    pub async fn new(name: &str) -> Self {
        let primary = s3(&admin(PRIMARY).await);
        let escrow = s3(&admin(ESCROW).await);
        let source_bucket = unique(&format!("{name}-src"));
        let dest_bucket = unique(&format!("{name}-esc"));
        create_bucket(&primary, &source_bucket, false).await;
        create_bucket(&escrow, &dest_bucket, true).await;
        BucketPair { primary, escrow, source_bucket, dest_bucket }
    }

    /// Puts `data` at `key` in the primary bucket.
    pub async fn put(&self, key: &str, data: impl Into<bytes::Bytes>) {
        self.primary
            .put_object()
            .bucket(&self.source_bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(data.into()))
            .send()
            .await
            .expect("put a primary object");
    }

    /// The escrow bucket's content at `key`, if any.
    pub async fn escrow_get(&self, key: &str) -> Option<bytes::Bytes> {
        get(&self.escrow, &self.dest_bucket, key).await
    }

    /// The keys in the escrow bucket.
    pub async fn escrow_keys(&self) -> Vec<String> {
        keys(&self.escrow, &self.dest_bucket).await
    }
}

/// The content of `bucket`/`key`, or `None` when there is no such key.
pub async fn get(client: &Client, bucket: &str, key: &str) -> Option<bytes::Bytes> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => Some(o.body.collect().await.expect("read body").into_bytes()),
        Err(e) => {
            let svc = e.into_service_error();
            assert!(svc.is_no_such_key(), "unexpected error reading {bucket}/{key}: {svc:?}");
            None
        }
    }
}

/// Every key in `bucket`.
pub async fn keys(client: &Client, bucket: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        out.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        match page.next_continuation_token() {
            Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
            _ => break,
        }
    }
    out
}

/// The `escrow-sync` binary built alongside the tests.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test> -> target/debug/escrow-sync
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("escrow-sync{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p escrow-sync-cli` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// What one invocation of the binary did.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Runs `cmd` to its end; what it did.
    pub fn run(cmd: &mut Command) -> Self {
        let out = cmd.output().expect("run escrow-sync");
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Standard output parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr)
        })
    }
}

/// Runs `escrow-sync ARGS` against the emulator with base test credentials.
pub fn cli(args: &[&str]) -> Outcome {
    cli_in(&std::env::temp_dir(), args)
}

/// Runs `escrow-sync ARGS` in directory `dir`.
pub fn cli_in(dir: &Path, args: &[&str]) -> Outcome {
    run_cli(dir, args, &[])
}

/// Runs `escrow-sync ARGS` with extra environment variables.
pub fn cli_env(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    run_cli(&std::env::temp_dir(), args, env)
}

/// Runs the binary in `dir` against the emulator with the base test keys,
/// no profile or config file of the developer's, and `env` on top.
fn run_cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = cli_command(dir, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Outcome::run(&mut cmd)
}

/// The command `escrow-sync ARGS` in `dir` against the emulator with the
/// base test keys and no profile or config file of the developer's, not
/// started yet (for a suite that signals the running process).
pub fn cli_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir)
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("ESCROW_SYNC_CONFIG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/escrow-sync-test-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/escrow-sync-test-credentials");
    cmd
}

/// A config file of the two test accounts (escrow operator role, primary
/// reader role with the test external id) followed by `jobs`; returns its
/// path (in a fresh temp dir).
pub fn config_with_jobs(jobs: &str) -> PathBuf {
    write_config(&format!(
        r#"[escrow]
region = "us-east-1"
role_arn = "{ESCROW_ROLE}"
account_id = "{ESCROW}"

[primary]
account_id = "{PRIMARY}"
role_arn = "{READER_ROLE}"
external_id = "test-external-id"

{jobs}
"#
    ))
}

/// A config file for one S3 job between `pair`'s buckets, with `extra`
/// lines appended to the job; returns its path (in a fresh temp dir).
pub fn config_for(source_bucket: &str, dest_bucket: &str, extra: &str) -> PathBuf {
    config_with_jobs(&format!(
        r#"[[s3]]
name = "job"
source_bucket = "{source_bucket}"
dest_bucket = "{dest_bucket}"
{extra}"#
    ))
}

/// Writes `text` to a fresh config file; returns its path.
pub fn write_config(text: &str) -> PathBuf {
    let dir = target_dir().join("e2e-configs").join(unique("cfg"));
    std::fs::create_dir_all(&dir).expect("config dir");
    let path = dir.join("escrow.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// An HTTP client that answers a share of requests with 503 SlowDown before
/// they reach the server, the rest passing through: transient faults at a
/// chosen rate, seeded.
pub mod faults {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use aws_smithy_runtime_api::client::http::{
        HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector, http_client_fn,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Counts of requests seen and faults injected.
    #[derive(Debug, Default)]
    pub struct Counts {
        /// Requests seen.
        pub seen: AtomicU64,
        /// Requests answered with a fault.
        pub injected: AtomicU64,
    }

    #[derive(Debug)]
    struct Faulty {
        inner: SharedHttpConnector,
        rate: f64,
        rng: Arc<Mutex<StdRng>>,
        counts: Arc<Counts>,
    }

    impl HttpConnector for Faulty {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            self.counts.seen.fetch_add(1, Ordering::SeqCst);
            if self.rng.lock().expect("lock").random::<f64>() < self.rate {
                self.counts.injected.fetch_add(1, Ordering::SeqCst);
                let body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                let response = HttpResponse::new(
                    StatusCode::try_from(503u16).expect("status"),
                    SdkBody::from(body),
                );
                return HttpConnectorFuture::ready(Ok(response));
            }
            self.inner.call(request)
        }
    }

    #[derive(Debug)]
    struct Recording {
        inner: SharedHttpConnector,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl HttpConnector for Recording {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let target = request
                .headers()
                .get("x-amz-target")
                .map(|t| t.rsplit('.').next().unwrap_or(t).to_string())
                .unwrap_or_else(|| format!("{} {}", request.method(), request.uri()));
            self.seen.lock().expect("lock").push(target);
            self.inner.call(request)
        }
    }

    /// Wraps `base` so that every request's operation is recorded: the
    /// `X-Amz-Target` operation name (DynamoDB: `BatchWriteItem`...), else
    /// the method and URI.
    pub fn recording(base: SharedHttpClient) -> (SharedHttpClient, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let client = http_client_fn(move |settings, components| {
            use aws_smithy_runtime_api::client::http::HttpClient;
            SharedHttpConnector::new(Recording {
                inner: base.http_connector(settings, components),
                seen: s.clone(),
            })
        });
        (client, seen)
    }

    /// Wraps `base` so that `rate` of requests fail with 503 SlowDown.
    pub fn client(base: SharedHttpClient, rate: f64, seed: u64) -> (SharedHttpClient, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let c = counts.clone();
        let client = http_client_fn(move |settings, components| {
            use aws_smithy_runtime_api::client::http::HttpClient;
            SharedHttpConnector::new(Faulty {
                inner: base.http_connector(settings, components),
                rate,
                rng: rng.clone(),
                counts: c.clone(),
            })
        });
        (client, counts)
    }
}

/// A second emulator, started by a test on a free 127.0.0.1 port from the
/// virtual environment `cargo xtask` installed, and stopped (by PID) when
/// dropped. Stands for an S3-compatible store outside AWS.
pub struct SecondEmulator {
    child: std::process::Child,
    /// Its endpoint.
    pub endpoint: String,
}

impl SecondEmulator {
    /// Starts one and waits until it answers.
    pub fn start() -> Self {
        let server = target_dir().join("emulator").join("venv").join("bin").join("moto_server");
        assert!(
            server.exists(),
            "{} is missing: run the suites with `cargo xtask test` (it installs the emulator)",
            server.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log =
            std::fs::File::create(target_dir().join("emulator").join(format!("second-{port}.log")))
                .expect("log file");
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env_remove("MOTO_ACCOUNT_ID")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a second emulator");
        let emulator = SecondEmulator { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the second emulator did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        emulator
    }

    /// An S3 client on it with the static test keys.
    pub async fn s3(&self) -> Client {
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .load()
            .await;
        Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build())
    }
}

impl Drop for SecondEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// DynamoDB fixtures: a source table with a GSI, an LSI, TTL and a tag,
/// items of every attribute type, and whole-table reads.
pub mod ddb {
    use std::collections::HashMap;

    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
        KeyType, LocalSecondaryIndex, Projection, ProjectionType, PutRequest, ScalarAttributeType,
        Tag, TimeToLiveSpecification, WriteRequest,
    };

    use escrow_sync_dynamodb::keys::content_digest;

    use crate::unique;

    pub fn key(name: &str, kind: KeyType) -> KeySchemaElement {
        KeySchemaElement::builder().attribute_name(name).key_type(kind).build().unwrap()
    }

    pub fn attr(name: &str, ty: ScalarAttributeType) -> AttributeDefinition {
        AttributeDefinition::builder().attribute_name(name).attribute_type(ty).build().unwrap()
    }

    /// A table `orders` keyed (customer S, seq N) with a GSI on status and an
    /// LSI on amount, TTL on `expires`, and a tag.
    pub async fn create_source(ddb: &Client) -> String {
        let table = unique("orders");
        ddb.create_table()
            .table_name(&table)
            .key_schema(key("customer", KeyType::Hash))
            .key_schema(key("seq", KeyType::Range))
            .attribute_definitions(attr("customer", ScalarAttributeType::S))
            .attribute_definitions(attr("seq", ScalarAttributeType::N))
            .attribute_definitions(attr("status", ScalarAttributeType::S))
            .attribute_definitions(attr("amount", ScalarAttributeType::N))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name("by-status")
                    .key_schema(key("status", KeyType::Hash))
                    .projection(
                        Projection::builder().projection_type(ProjectionType::KeysOnly).build(),
                    )
                    .build()
                    .unwrap(),
            )
            .local_secondary_indexes(
                LocalSecondaryIndex::builder()
                    .index_name("by-amount")
                    .key_schema(key("customer", KeyType::Hash))
                    .key_schema(key("amount", KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::Include)
                            .non_key_attributes("note")
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .tags(Tag::builder().key("team").value("payments").build().unwrap())
            .send()
            .await
            .expect("create source table");
        ddb.update_time_to_live()
            .table_name(&table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires")
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("enable TTL on the source");
        table
    }

    pub fn item(i: usize) -> HashMap<String, AttributeValue> {
        let mut m = HashMap::new();
        m.insert("customer".into(), AttributeValue::S(format!("cust#{:03}", i % 400)));
        m.insert("seq".into(), AttributeValue::N(i.to_string()));
        m.insert("status".into(), AttributeValue::S(["new", "paid", "shipped"][i % 3].into()));
        m.insert("amount".into(), AttributeValue::N(format!("{}.{:02}", i * 7 % 1000, i % 100)));
        m.insert("expires".into(), AttributeValue::N("1700000000".into()));
        if i.is_multiple_of(5) {
            m.insert(
                "big".into(),
                AttributeValue::N(format!("1234567890123456789012345678901234567{}", i % 10)),
            );
            m.insert("blob".into(), AttributeValue::B(Blob::new(vec![(i % 256) as u8, 0, 255])));
            m.insert("tags".into(), AttributeValue::Ss(vec![format!("t{i}"), "x".into()]));
            m.insert("nums".into(), AttributeValue::Ns(vec!["1".into(), i.to_string()]));
            m.insert(
                "nested".into(),
                AttributeValue::M(HashMap::from([
                    (
                        "l".to_string(),
                        AttributeValue::L(vec![
                            AttributeValue::Null(true),
                            AttributeValue::Bool(i.is_multiple_of(2)),
                            AttributeValue::M(HashMap::new()),
                            AttributeValue::L(vec![]),
                        ]),
                    ),
                    ("s".to_string(), AttributeValue::S(String::new())),
                ])),
            );
        }
        if i.is_multiple_of(7) {
            m.insert("note".into(), AttributeValue::S("x".repeat(i % 2000)));
        }
        m
    }

    pub async fn put_items(
        ddb: &Client,
        table: &str,
        items: impl Iterator<Item = HashMap<String, AttributeValue>>,
    ) {
        let items: Vec<_> = items.collect();
        for chunk in items.chunks(25) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|i| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder().set_item(Some(i.clone())).build().unwrap(),
                        )
                        .build()
                })
                .collect();
            while !pending.is_empty() {
                let out = ddb
                    .batch_write_item()
                    .request_items(table, pending)
                    .send()
                    .await
                    .expect("seed items");
                pending =
                    out.unprocessed_items.and_then(|mut u| u.remove(table)).unwrap_or_default();
            }
        }
    }

    pub async fn all_items(ddb: &Client, table: &str) -> HashMap<String, [u8; 32]> {
        scan_all(ddb, table)
            .await
            .iter()
            .map(|i| {
                let k = match (&i["customer"], &i["seq"]) {
                    (AttributeValue::S(c), AttributeValue::N(s)) => format!("{c}/{s}"),
                    other => panic!("{other:?}"),
                };
                (k, content_digest(i))
            })
            .collect()
    }

    /// Every item of `table`: a plain one-segment Scan loop.
    pub async fn scan_all(ddb: &Client, table: &str) -> Vec<HashMap<String, AttributeValue>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = ddb
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan");
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return out,
            }
        }
    }
}

/// A private emulator for one test (xtask's launcher on a free 127.0.0.1
/// port, stopped by PID when dropped), for suites that switch IAM
/// enforcement on: IAM roles and trails are account-wide, and enforcement
/// is server-wide, so a shared server would mix tests. Enforcement is off
/// until [`PrivateEmulator::set_iam_enforced`].
pub struct PrivateEmulator {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl PrivateEmulator {
    /// Starts one, logging to `target/emulator/<log>-<port>.log`.
    pub fn start(log: &str) -> Self {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("emulator");
        let python = dir.join("venv").join("bin").join("python");
        let launcher = dir.join("moto_server_escrow.py");
        assert!(
            python.exists() && launcher.exists(),
            "{} or {} is missing: run the suites with `cargo xtask test` (it installs the emulator)",
            python.display(),
            launcher.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.join(format!("{log}-{port}.log"))).expect("log file");
        let child = Command::new(python)
            .arg(launcher)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env_remove("MOTO_ACCOUNT_ID")
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a private emulator");
        let server = PrivateEmulator { child, port, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the private emulator did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }

    /// With `on`, every request needs an identity moto knows with a policy
    /// that allows it (`POST /moto-api/reset-auth`, on this server only).
    pub fn set_iam_enforced(&self, on: bool) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let body = if on { "0" } else { "inf" };
        write!(
            s,
            "POST /moto-api/reset-auth HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .expect("send");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "reset-auth: {answer}"
        );
    }
}

impl Drop for PrivateEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Validates `doc` against `docs/schema/<schema>.schema.json`.
pub fn assert_schema(schema: &str, doc: &serde_json::Value) {
    let path = workspace_root().join("docs/schema").join(format!("{schema}.schema.json"));
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    let id = compiler
        .compile(path.to_str().unwrap(), &mut schemas)
        .unwrap_or_else(|e| panic!("{} does not compile: {e:#}", path.display()));
    if let Err(e) = schemas.validate(doc, id) {
        panic!("the {schema} document breaks its schema: {e:#}\n{doc:#}");
    }
}
