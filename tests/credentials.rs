//! Credentials and region like the AWS CLI (issue 15, point 5), through the
//! binary: the region from `--region`, `AWS_REGION` or the profile; the
//! escrow profile from `--profile`; one line naming what was tried and the
//! fix when credentials are missing or expired; the escrow role's external
//! id, session name and duration; `policy` without `account_id`; and an
//! escrow on an S3-compatible store (a second emulator, static keys) with
//! the primary's reader role assumed on the primary's own STS (the shared
//! emulator, behind a recording proxy), with the escrow's credentials or a
//! primary profile's.

#[path = "proxy.rs"]
mod proxy;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use escrow_sync_e2e::{
    BucketPair, ESCROW, ESCROW_ROLE, Outcome, PRIMARY, READER_ROLE, SecondEmulator, admin,
    cli_command, create_bucket, endpoint, s3, unique, write_config,
};
use proxy::{Proxy, Schedule};

/// `escrow-sync ARGS` against the emulator (or what `env` says), with no
/// region anywhere unless `env` gives one; `None` removes a variable.
fn cli(args: &[&str], env: &[(&str, Option<&str>)]) -> Outcome {
    let mut cmd = cli_command(&std::env::temp_dir(), args);
    // Empty AWS config files (the SDK warns about missing ones).
    let empty = std::env::temp_dir().join("escrow-sync-credentials-empty");
    std::fs::write(&empty, "").expect("empty file");
    cmd.env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    Outcome::run(&mut cmd)
}

/// The one `error:` line of a run (panics unless there is exactly one line
/// besides the AWS SDK's own log lines: aws-config logs a WARN of its own,
/// with a Debug dump, when a profile's credentials fail to load; the log
/// filter, not this error, decides whether it shows).
fn error_line(out: &Outcome) -> String {
    let sdk_log = |l: &str| l.contains("WARN") && l.contains("aws_config");
    let lines: Vec<_> =
        out.stderr.lines().filter(|l| !l.trim().is_empty() && !sdk_log(l)).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {}", out.stderr);
    assert!(lines[0].starts_with("error: "), "{}", out.stderr);
    lines[0].to_string()
}

/// A config of the test accounts for `pair`, with `escrow` as the
/// `[escrow]` section's lines.
fn config(pair: &BucketPair, escrow: &str) -> PathBuf {
    write_config(&format!(
        "[escrow]\n{escrow}\n\n[primary]\naccount_id = \"{PRIMARY}\"\nrole_arn = \
         \"{READER_ROLE}\"\nexternal_id = \"test-external-id\"\n\n[[s3]]\nname = \"job\"\n\
         source_bucket = \"{}\"\ndest_bucket = \"{}\"\n",
        pair.source_bucket, pair.dest_bucket
    ))
}

/// Writes `text` beside `cfg` as `name`; returns its path.
fn beside(cfg: &Path, name: &str, text: &str) -> String {
    let path = cfg.parent().expect("config dir").join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("utf-8").to_string()
}

#[tokio::test]
async fn the_region_comes_from_the_flag_the_environment_or_the_profile() {
    let pair = BucketPair::new("region").await;
    pair.put("a.txt", Bytes::from_static(b"alpha")).await;
    let cfg = config(&pair, &format!("role_arn = \"{ESCROW_ROLE}\"\naccount_id = \"{ESCROW}\""));
    let cfg_s = cfg.to_str().unwrap();

    let out = cli(&["plan", "--config", cfg_s], &[]);
    assert_eq!(out.code, 2, "{out:?}");
    let line = error_line(&out);
    assert!(line.contains("no region for the escrow account"), "{line}");
    assert!(line.contains("--region") && line.contains("AWS_REGION"), "{line}");
    assert!(!line.contains("missing field"), "{line}");

    let out = cli(&["plan", "--config", cfg_s, "--region", "us-east-1"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = cli(&["plan", "--region", "us-east-1", "--config", cfg_s], &[]);
    assert_eq!(out.code, 0, "the flag is global: {out:?}");
    let out = cli(&["plan", "--config", cfg_s], &[("AWS_REGION", Some("us-east-1"))]);
    assert_eq!(out.code, 0, "{out:?}");

    // The profile's region (its credentials: the environment's keys).
    let conf = beside(&cfg, "aws-config", "[profile lab]\nregion = us-east-1\n");
    let env = [("AWS_CONFIG_FILE", Some(conf.as_str())), ("AWS_PROFILE", Some("lab"))];
    let out = cli(&["plan", "--config", cfg_s], &env);
    assert_eq!(out.code, 0, "{out:?}");
}

#[tokio::test]
async fn the_profile_flag_overrides_the_config_and_a_missing_profile_says_how_to_fix_it() {
    let pair = BucketPair::new("profile").await;
    let cfg = config(
        &pair,
        &format!(
            "region = \"us-east-1\"\nprofile = \"nowhere\"\nrole_arn = \"{ESCROW_ROLE}\"\n\
             account_id = \"{ESCROW}\""
        ),
    );
    let cfg_s = cfg.to_str().unwrap();
    let creds = beside(
        &cfg,
        "credentials",
        "[ops]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    );
    // No keys in the environment: the profile is the only source.
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", Some(creds.as_str())),
        ("AWS_ACCESS_KEY_ID", None),
        ("AWS_SECRET_ACCESS_KEY", None),
    ];
    let out = cli(&["plan", "--config", cfg_s], &env);
    assert_eq!(out.code, 2, "{out:?}");
    let line = error_line(&out);
    assert!(line.contains("no escrow credentials from profile nowhere"), "{line}");
    assert!(line.contains(&format!("to assume {ESCROW_ROLE}")), "{line}");
    assert!(line.contains("aws sso login --profile nowhere"), "{line}");
    assert!(!line.contains("dispatch failure") && !line.contains("transient"), "{line}");

    let out = cli(&["plan", "--config", cfg_s, "--profile", "ops"], &env);
    assert_eq!(out.code, 0, "{out:?}");

    // A named profile is used even when the environment has keys too (as
    // the AWS CLI's --profile): the missing one still fails.
    let mut with_keys = env.to_vec();
    with_keys.truncate(1);
    let out = cli(&["plan", "--config", cfg_s], &with_keys);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(error_line(&out).contains("profile nowhere"), "{out:?}");
}

#[tokio::test]
async fn no_credentials_is_one_line_that_says_what_was_tried() {
    let pair = BucketPair::new("nocreds").await;
    let cfg = config(&pair, &format!("region = \"us-east-1\"\nrole_arn = \"{ESCROW_ROLE}\""));
    let env = [("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)];
    let out = cli(&["plan", "--config", cfg.to_str().unwrap()], &env);
    assert_eq!(out.code, 2, "{out:?}");
    let line = error_line(&out);
    assert!(line.contains("no escrow credentials"), "{line}");
    assert!(line.contains("AWS_ACCESS_KEY_ID is not set"), "what was tried: {line}");
    for fix in ["AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "aws sso login"] {
        assert!(line.contains(fix), "{fix}: {line}");
    }
    assert!(!line.contains("dispatch failure") && !line.contains('{'), "{line}");

    // JSON output says the same, with exit code 2.
    let out = cli(&["plan", "--config", cfg.to_str().unwrap(), "--output", "json"], &env);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.json()["error"].as_str().unwrap().contains("no escrow credentials"));
}

#[tokio::test]
async fn an_expired_sso_token_says_to_log_in_again() {
    let pair = BucketPair::new("sso").await;
    let cfg = config(&pair, "region = \"us-east-1\"\nprofile = \"escrow-sso\"");
    let conf = beside(
        &cfg,
        "aws-config",
        "[profile escrow-sso]\nsso_session = corp\nsso_account_id = 222222222222\n\
         sso_role_name = EscrowOperator\nregion = us-east-1\n\n[sso-session corp]\n\
         sso_start_url = https://corp.awsapps.example/start\nsso_region = us-east-1\n",
    );
    // The token cache: ~/.aws/sso/cache/<sha1 of the session name>.json,
    // expired, with nothing to refresh it.
    let home = cfg.parent().unwrap().join("home");
    let cache = home.join(".aws").join("sso").join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let name = {
        use sha1::Digest;
        hex(&sha1::Sha1::digest(b"corp"))
    };
    std::fs::write(
        cache.join(format!("{name}.json")),
        r#"{"accessToken": "expired-token", "expiresAt": "2020-01-01T00:00:00Z", "region": "us-east-1", "startUrl": "https://corp.awsapps.example/start"}"#,
    )
    .unwrap();
    let env = [
        ("AWS_CONFIG_FILE", Some(conf.as_str())),
        ("HOME", Some(home.to_str().unwrap())),
        ("AWS_ACCESS_KEY_ID", None),
        ("AWS_SECRET_ACCESS_KEY", None),
    ];
    let out = cli(&["plan", "--config", cfg.to_str().unwrap()], &env);
    assert_eq!(out.code, 2, "{out:?}");
    let line = error_line(&out);
    assert!(line.contains("escrow credentials from profile escrow-sso"), "{line}");
    assert!(line.contains("have expired"), "{line}");
    assert!(line.contains("aws sso login --profile escrow-sso"), "{line}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_escrow_role_takes_external_id_session_name_and_duration() {
    let pair = BucketPair::new("escrow-role").await;
    let keys = format!(
        "region = \"us-east-1\"\nrole_arn = \"{ESCROW_ROLE}\"\naccount_id = \"{ESCROW}\"\n\
         external_id = \"escrow-external-id\"\nsession_name = \"nightly-escrow\"\n\
         duration_seconds = 7200"
    );
    let cfg = config(&pair, &keys);
    let proxy = Proxy::start(&endpoint(), Schedule::Never);
    let env = [("AWS_ENDPOINT_URL", Some(proxy.endpoint.as_str()))];
    let out = cli(&["plan", "--config", cfg.to_str().unwrap(), "--output", "json"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("escrow-external-id"), "the external id is a secret");
    let seen = proxy.seen();
    let assume = seen
        .iter()
        .find(|s| s.action.as_deref() == Some("AssumeRole") && s.form.contains("escrow-operator"))
        .expect("the escrow role assumed");
    for part in
        ["ExternalId=escrow-external-id", "RoleSessionName=nightly-escrow", "DurationSeconds=7200"]
    {
        assert!(assume.form.contains(part), "{part}: {}", assume.form);
    }

    for (bad, why) in [
        ("duration_seconds = 60", "duration_seconds is 60: use 900 to 43200"),
        ("duration_seconds = 50000", "duration_seconds is 50000: use 900 to 43200"),
    ] {
        let cfg = config(&pair, &keys.replace("duration_seconds = 7200", bad));
        let out = cli(&["plan", "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(error_line(&out).contains(why), "{out:?}");
    }
    let no_role = config(&pair, "region = \"us-east-1\"\nsession_name = \"x-y\"");
    let out = cli(&["plan", "--config", no_role.to_str().unwrap()], &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(error_line(&out).contains("only apply to assuming [escrow] role_arn"), "{out:?}");
}

#[tokio::test]
async fn policy_takes_the_escrow_account_from_the_escrow_role() {
    let pair = BucketPair::new("policy-role").await;
    let cfg = config(&pair, &format!("role_arn = \"{ESCROW_ROLE}\""));
    let out = cli(&["policy", "--config", cfg.to_str().unwrap(), "--region", "us-east-1"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("arn:aws:iam::{ESCROW}:")), "{}", out.stdout);
    // Without a region anywhere, policy says where to give one.
    let out = cli(&["policy", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(error_line(&out).contains("--region"), "{out:?}");
}

/// The escrow on an S3-compatible store (a second emulator, static keys,
/// no role) and the primary in "AWS" (the shared emulator, the environment's
/// endpoint, behind a recording proxy) behind its reader role.
struct OutsideAws {
    store: SecondEmulator,
    proxy: Proxy,
    source: String,
    dest: String,
}

impl OutsideAws {
    async fn new() -> Self {
        let store = SecondEmulator::start();
        let primary = s3(&admin(PRIMARY).await);
        let (source, dest) = (unique("outside-src"), unique("outside-dst"));
        create_bucket(&primary, &source, false).await;
        for (k, v) in [("a.txt", "alpha"), ("d/b.txt", "beta")] {
            primary
                .put_object()
                .bucket(&source)
                .key(k)
                .body(Bytes::from(v).into())
                .send()
                .await
                .unwrap();
        }
        create_bucket(&store.s3().await, &dest, true).await;
        let proxy = Proxy::start(&endpoint(), Schedule::Never);
        OutsideAws { store, proxy, source, dest }
    }

    fn config(&self, primary_extra: &str) -> PathBuf {
        write_config(&format!(
            "[escrow]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\naccount_id = \"{ESCROW}\"\n\n\
             [primary]\naccount_id = \"{PRIMARY}\"\nrole_arn = \"{READER_ROLE}\"\n\
             external_id = \"test-external-id\"\n{primary_extra}\n\n[[s3]]\nsource_bucket = \
             \"{}\"\ndest_bucket = \"{}\"\n",
            self.store.endpoint, self.source, self.dest
        ))
    }

    fn run(&self, cfg: &Path, env: &[(&str, Option<&str>)]) -> Outcome {
        let mut all = vec![
            ("AWS_ENDPOINT_URL", Some(self.proxy.endpoint.as_str())),
            ("AWS_ACCESS_KEY_ID", Some("STOREKEY")),
            ("AWS_SECRET_ACCESS_KEY", Some("store-secret")),
        ];
        all.extend_from_slice(env);
        cli(&["run", "--config", cfg.to_str().unwrap(), "--output", "json"], &all)
    }

    /// The primary's STS calls the proxy saw: (action, signing key).
    fn sts_calls(&self) -> Vec<(String, String)> {
        self.proxy
            .seen()
            .into_iter()
            .filter_map(|s| Some((s.action?, s.key.unwrap_or_default())))
            .collect()
    }

    /// Whether the store was ever asked an STS question (a form POST).
    fn store_saw_sts(&self) -> bool {
        let log = std::fs::read_to_string(self.store_log()).unwrap_or_default();
        log.lines().any(|l| l.contains("\"POST / HTTP"))
    }

    fn store_log(&self) -> PathBuf {
        let port = self.store.endpoint.rsplit(':').next().unwrap().to_string();
        escrow_sync_e2e::workspace_root()
            .join("target")
            .join("emulator")
            .join(format!("second-{port}.log"))
    }
}

#[tokio::test]
async fn an_escrow_outside_aws_assumes_the_primary_role_on_the_primary_sts() {
    let outside = OutsideAws::new().await;
    let out = outside.run(&outside.config(""), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["jobs"][0]["copied"], 2, "{}", out.stdout);
    let remote = outside.store.s3().await;
    assert_eq!(escrow_sync_e2e::get(&remote, &outside.dest, "d/b.txt").await.unwrap(), "beta");
    // AssumeRole with the escrow's credentials and the identity check with
    // the role's, both on the primary's STS; none on the store.
    let calls = outside.sts_calls();
    assert_eq!(
        calls.first().map(|c| (c.0.as_str(), c.1.as_str())),
        Some(("AssumeRole", "STOREKEY")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|(a, k)| a == "GetCallerIdentity" && k != "STOREKEY"),
        "the identity check made with the reader role's credentials: {calls:?}"
    );
    assert!(!outside.store_saw_sts(), "no STS call to the escrow's store");
}

#[tokio::test]
async fn a_primary_profile_assumes_the_reader_role_as_source_profile() {
    let outside = OutsideAws::new().await;
    let cfg = outside.config("profile = \"primary-source\"");
    let creds = beside(
        &cfg,
        "credentials",
        "[primary-source]\naws_access_key_id = PRIMARYSOURCE\naws_secret_access_key = s\n",
    );
    let out = outside.run(&cfg, &[("AWS_SHARED_CREDENTIALS_FILE", Some(creds.as_str()))]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["jobs"][0]["copied"], 2, "{}", out.stdout);
    let calls = outside.sts_calls();
    let assume: Vec<_> = calls.iter().filter(|(a, _)| a == "AssumeRole").collect();
    assert!(!assume.is_empty(), "{calls:?}");
    assert!(
        assume.iter().all(|(_, k)| k == "PRIMARYSOURCE"),
        "the reader role assumed with the profile's keys, never the escrow's: {calls:?}"
    );
    assert!(!outside.store_saw_sts(), "no STS call to the escrow's store");
}
