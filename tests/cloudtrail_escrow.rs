//! `[[cloudtrail]]` jobs on the emulator: the primary's trail found with
//! DescribeTrails through the reader role, its log bucket copied into
//! escrow, and `verify` validating the escrow copy's integrity chain.
//!
//! The emulator writes no CloudTrail files and has no ListPublicKeys, so
//! the trail's files are synthetic (`escrow_sync_cloudtrail::synthetic`:
//! log files and hourly digests signed with a test RSA key) and the keys
//! come from `public_keys_file`. ListPublicKeys itself is covered with
//! mocks in crates/cloudtrail/tests/validation_mocks.rs.

use aws_sdk_s3::primitives::ByteStream;

use escrow_sync_cloudtrail::synthetic::{
    INTRUDER_IP, SyntheticFile, SyntheticTrail, gzip, intrusion,
};
use escrow_sync_cloudtrail::time::rfc3339;
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, cli, create_bucket, s3, unique};

struct World {
    /// When the synthetic trail's first hour starts: three hours before the
    /// current hour, so that its newest digest is recent (an old chain end
    /// is a finding).
    start: i64,
    trail: SyntheticTrail,
    files: Vec<SyntheticFile>,
    primary: aws_sdk_s3::Client,
    escrow: aws_sdk_s3::Client,
    dest: String,
    config: std::path::PathBuf,
}

impl World {
    /// A trail in the primary delivering to a fresh log bucket under
    /// `audit/`, three hours of its files there, and an escrow bucket.
    async fn new() -> World {
        World::with(|trail, start| trail.hours(start, 3, 3)).await
    }

    /// As [`World::new`], with the files `files(trail, start)` makes.
    async fn with(files: impl Fn(&SyntheticTrail, i64) -> Vec<SyntheticFile>) -> World {
        let primary_session = admin(PRIMARY).await;
        let primary = s3(&primary_session);
        let bucket = unique("ct-logs");
        create_bucket(&primary, &bucket, false).await;
        let name = unique("trail").replace('-', "_");
        let ct = aws_sdk_cloudtrail::Client::new(primary_session.sdk_config());
        ct.create_trail()
            .name(&name)
            .s3_bucket_name(&bucket)
            .s3_key_prefix("audit")
            .enable_log_file_validation(true)
            .send()
            .await
            .expect("create trail");
        let trail = SyntheticTrail::new(PRIMARY, "us-east-1", &name, &bucket, "audit/");
        let now = escrow_sync_cloudtrail::time::epoch(std::time::SystemTime::now());
        let start = now - now.rem_euclid(3600) - 3 * 3600;
        let files = files(&trail, start);
        for f in &files {
            put(&primary, &bucket, f).await;
        }
        let escrow = s3(&admin(ESCROW).await);
        let dest = unique("ct-escrow");
        create_bucket(&escrow, &dest, true).await;
        let manifests = unique("ct-manifests");
        create_bucket(&escrow, &manifests, true).await;
        let config = escrow_sync_e2e::config_with_jobs(&format!(
            "[[cloudtrail]]\nname = \"trail\"\ntrails = [\"{name}\"]\ndest_bucket = \"{dest}\"\n\
             dest_prefix = \"cloudtrail/\"\npublic_keys_file = \"KEYS\"\n"
        ));
        let keys = config.with_file_name("public-keys.json");
        std::fs::write(&keys, trail.list_public_keys_json()).unwrap();
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("KEYS", keys.to_str().unwrap())
            .replacen("[escrow]\n", &format!("[escrow]\nmanifest_bucket = \"{manifests}\"\n"), 1);
        std::fs::write(&config, text).unwrap();
        World { start, trail, files, primary, escrow, dest, config }
    }

    fn cli(&self, command: &str, extra: &[&str]) -> (i32, serde_json::Value) {
        let mut args = vec![command, "--config", self.config.to_str().unwrap(), "--output", "json"];
        args.extend_from_slice(extra);
        let out = cli(&args);
        (out.code, out.json())
    }

    fn escrow_key(&self, key: &str) -> String {
        format!("cloudtrail/{}/{key}", self.trail.bucket)
    }

    fn log(&self, n: usize) -> &SyntheticFile {
        self.files.iter().filter(|f| f.key.contains("/CloudTrail/")).nth(n).unwrap()
    }
}

async fn put(client: &aws_sdk_s3::Client, bucket: &str, f: &SyntheticFile) {
    let mut req = client
        .put_object()
        .bucket(bucket)
        .key(&f.key)
        .content_type("application/json")
        .body(ByteStream::from(f.body.clone()));
    for (k, v) in &f.metadata {
        req = req.metadata(k, v);
    }
    req.send().await.expect("put trail file");
}

/// The findings of job 0 of a verify report, as (kind, key suffix).
fn findings(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["jobs"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let key = f["key"].as_str().unwrap();
            (f["kind"].as_str().unwrap_or("").to_string(), key.rsplit('/').next().unwrap().into())
        })
        .collect()
}

fn notes(doc: &serde_json::Value) -> String {
    doc["jobs"][0]["notes"].to_string()
}

#[tokio::test]
async fn a_trail_is_escrowed_and_its_chain_validated() {
    let w = World::new().await;
    let (code, run) = w.cli("run", &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(run["jobs"][0]["kind"], "cloudtrail");
    assert_eq!(run["jobs"][0]["copied"], 12, "9 log files and 3 digests: {run:#}");
    // Kept at <dest_prefix><log bucket>/<key>, the signature metadata with it.
    let digest = w.files.iter().find(|f| f.key.contains("CloudTrail-Digest")).unwrap();
    let head = w.escrow.head_object().bucket(&w.dest).key(w.escrow_key(&digest.key)).send();
    let head = head.await.expect("the digest is in escrow");
    assert_eq!(head.metadata().unwrap().get("signature"), digest.metadata.get("signature"));

    let (code, verify) = w.cli("verify", &[]);
    assert_eq!(code, 0, "{verify:#}");
    assert_eq!(findings(&verify), vec![]);
    let covering = format!(
        "3 digest(s) and 9 log file(s) validated, covering {} to {}, 0 problem(s)",
        rfc3339(w.start),
        rfc3339(w.start + 3 * 3600)
    );
    assert!(notes(&verify).contains(&covering), "{verify:#}");
    // Without the primary: the chain is validated from escrow alone.
    let (code, offline) = w.cli("verify", &["--offline"]);
    assert_eq!(code, 0, "{offline:#}");
    assert!(notes(&offline).contains("9 log file(s) validated"), "{offline:#}");
    assert_eq!(offline["jobs"][0]["skipped"], 12, "3 digests and 9 log files: {offline:#}");

    // The log bucket's escrow copy restores like an S3 job's: a drill into
    // the recovery account, byte for byte.
    let drill = unique("drill-trail");
    let (code, restore) = w.cli(
        "restore",
        &[
            "--job",
            "trail",
            "--target-role-arn",
            "arn:aws:iam::333333333333:role/recovery",
            "--target-bucket",
            &drill,
            "--drill",
        ],
    );
    assert_eq!(code, 0, "{restore:#}");
    assert_eq!(restore["restore"]["restored"], 12, "{restore:#}");
    assert_eq!(restore["restore"]["drill"]["verified"], 12, "{restore:#}");

    // A log file rewritten in the primary: the next run copies the new
    // content (a new escrow version), and verify says it is not what the
    // digest signed, when, and which escrow version still holds the original.
    let altered = w.log(1);
    let text = String::from_utf8(escrow_sync_cloudtrail::gunzip(&altered.body).unwrap()).unwrap();
    let forged = SyntheticFile {
        body: gzip(text.replace("DeleteBucket", "ListBuckets").as_bytes()),
        ..altered.clone()
    };
    put(&w.primary, &w.trail.bucket, &forged).await;
    let (code, run) = w.cli("run", &[]);
    assert_eq!((code, run["jobs"][0]["copied"].as_u64()), (0, Some(1)), "{run:#}");
    let (code, verify) = w.cli("verify", &[]);
    assert_eq!(code, 3, "{verify:#}");
    let name = altered.key.rsplit('/').next().unwrap().to_string();
    assert_eq!(findings(&verify), vec![("log-altered".to_string(), name.clone())]);
    let f = &verify["jobs"][0]["findings"][0];
    let event = rfc3339(w.start + 1800 - 30);
    assert_eq!((f["from"].as_str(), f["to"].as_str()), (Some(&*event), Some(&*event)));
    assert!(
        f["problem"].as_str().unwrap().contains("escrow still holds the original as version"),
        "{f:#}"
    );

    // A log file lost from escrow (deleted behind escrow-sync's back).
    let lost = w.log(5);
    w.escrow.delete_object().bucket(&w.dest).key(w.escrow_key(&lost.key)).send().await.unwrap();
    let (code, verify) = w.cli("verify", &["--offline"]);
    assert_eq!(code, 3, "{verify:#}");
    let lost_name = lost.key.rsplit('/').next().unwrap().to_string();
    let found = findings(&verify);
    assert!(found.contains(&("log-missing".to_string(), lost_name)), "{verify:#}");
    assert!(found.contains(&("log-altered".to_string(), name)), "{verify:#}");
}

#[tokio::test]
async fn bad_cloudtrail_jobs_are_refused_before_anything_is_copied() {
    let w = World::new().await;
    let text = std::fs::read_to_string(&w.config).unwrap();
    let wrong = w.config.with_file_name("wrong.toml");
    std::fs::write(&wrong, text.replace("trails = [\"", "trails = [\"no-such-")).unwrap();
    let out = cli(&["run", "--config", wrong.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("not among the primary's trails"), "{out:?}");
    std::fs::write(&wrong, text.replace("public-keys.json", "missing.json")).unwrap();
    let out = cli(&["verify", "--config", wrong.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("list-public-keys"), "{out:?}");
    let listed = w.escrow.list_objects_v2().bucket(&w.dest).send().await.unwrap();
    assert_eq!(listed.key_count(), Some(0), "nothing was copied");
}

/// The event ids of a `trail events --output json` list.
fn event_ids(doc: &serde_json::Value, list: &str) -> Vec<String> {
    doc[list].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().into()).collect()
}

#[tokio::test]
async fn trail_events_reads_the_intrusion_from_escrow_and_marks_what_the_intruder_rewrote() {
    // Hour 1's first log file holds a scripted intrusion; the rest is the
    // team's ordinary work.
    let w = World::with(|trail, start| {
        trail.hours_with(start, 3, 3, |h, i, at| {
            if (h, i) == (1, 0) {
                intrusion(PRIMARY, at - 1200)
            } else {
                vec![serde_json::json!({"eventTime": rfc3339(at - 30),
                    "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
                    "eventID": format!("get-{h}-{i}"), "sourceIPAddress": "198.51.100.10",
                    "recipientAccountId": PRIMARY})]
            }
        })
    })
    .await;
    let (code, run) = w.cli("run", &[]);
    assert_eq!(code, 0, "{run:#}");
    let events = |extra: &[&str]| {
        let mut args = vec!["trail", "events", "--config", w.config.to_str().unwrap()];
        args.extend_from_slice(&["--job", "trail"]);
        args.extend_from_slice(extra);
        cli(&args)
    };
    let out = events(&["--destructive", "--output", "json"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let doc = out.json();
    let intrusion = ["intrusion-2", "intrusion-3", "intrusion-4", "intrusion-5"];
    assert_eq!(event_ids(&doc, "events"), intrusion);
    assert_eq!(event_ids(&doc, "unverified"), Vec::<String>::new());
    assert_eq!(doc["summary"]["verified_files"], 9, "{doc:#}");
    assert_eq!(doc["events"][2]["source_ip"], INTRUDER_IP);
    assert_eq!(doc["events"][2]["event_name"], "DeleteBucket");
    // By address, and as a text timeline.
    let out = events(&["--source-ip", &format!("{INTRUDER_IP}/32")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains(INTRUDER_IP)).collect();
    assert_eq!(lines.len(), 5, "{}", out.stdout);
    assert!(lines[0].contains("signin:ConsoleLogin") && lines[4].contains("ec2:DeleteSnapshot"));
    assert!(lines[3].contains("bucketName=prod-data"), "{}", lines[3]);

    // The intruder rewrites the log of the intrusion without it; the next
    // run copies the rewrite as a new escrow version. The timeline still
    // lists the intrusion, proven, from escrow's original version, and
    // lists the rewrite apart, unverified; the exit code says so.
    let log = w.log(3);
    let rewritten = serde_json::json!({"Records": [{"eventTime": rfc3339(w.start + 3700),
        "eventSource": "s3.amazonaws.com", "eventName": "DeleteObject", "eventID": "rewritten",
        "sourceIPAddress": "198.51.100.10", "recipientAccountId": PRIMARY}]});
    put(
        &w.primary,
        &w.trail.bucket,
        &SyntheticFile { body: gzip(rewritten.to_string().as_bytes()), ..log.clone() },
    )
    .await;
    let (code, run) = w.cli("run", &[]);
    assert_eq!(code, 0, "{run:#}");
    assert_eq!(run["jobs"][0]["copied"], 1, "{run:#}");
    let out = events(&["--destructive", "--output", "json"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let doc = out.json();
    assert_eq!(event_ids(&doc, "events"), intrusion);
    assert!(doc["events"][0]["log_file"].as_str().unwrap().contains("?versionId="), "{doc:#}");
    assert_eq!(event_ids(&doc, "unverified"), ["rewritten"]);
    assert_eq!(doc["unverified"][0]["problem"]["kind"], "log-altered");
    let out = events(&["--destructive"]);
    assert_eq!(out.code, 3);
    let (head, tail) = out.stdout.split_once("UNVERIFIED:").expect("an unverified section");
    assert!(
        !head.contains("DeleteObject") && tail.contains("UNVERIFIED(log-altered)"),
        "{}",
        out.stdout
    );
    let out = events(&["--output", "csv", "--event-name", "Delete*"]);
    assert_eq!(out.code, 3);
    assert!(out.stdout.starts_with("time,principal,source_ip,"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 1 + 2 + 1, "{}", out.stdout);

    // Athena over the escrow copy.
    let out = cli(&["trail", "athena", "--config", w.config.to_str().unwrap(), "--job", "trail"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let location =
        format!("LOCATION 's3://{}/cloudtrail/{}/audit/AWSLogs/'", w.dest, w.trail.bucket);
    assert!(out.stdout.contains(&location), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("'projection.account.values'='{PRIMARY}'")));

    // Bad input: exit 2, naming the fix.
    for (extra, says) in [
        (vec!["--source-ip", "10.0.0.0/99"], "203.0.113.0/24"),
        (vec!["--from", "yesterday"], "RFC 3339"),
        (vec!["--event-name", "Delete["], "glob"),
    ] {
        let out = events(&extra);
        assert_eq!(out.code, 2, "{extra:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{extra:?}: {}", out.stderr);
    }
    let out = cli(&["trail", "events", "--config", w.config.to_str().unwrap(), "--job", "nope"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no [[cloudtrail]] job named \"nope\""), "{}", out.stderr);
}
