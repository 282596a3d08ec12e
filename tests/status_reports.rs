//! `status`, metrics, the JSON documents' contract and `--report`, end to
//! end on the emulator: freshness from escrow alone (the primary gone
//! too), `stale` and exit 3, a clean verify counting as a verified copy,
//! metrics stored in the escrow account's CloudWatch and a Prometheus
//! textfile, every command's JSON validated against its schema in
//! `docs/schema/`, and human reports.

use std::path::Path;

use serde_json::Value;

use escrow_sync_e2e::{
    BucketPair, ESCROW, Outcome, PRIMARY, admin, assert_schema, cli, create_bucket, unique,
    write_config,
};

/// Two buckets with `n` objects, a manifest bucket, and a config with
/// `escrow_extra` in `[escrow]` and `job_extra` in the job.
async fn setup(name: &str, n: usize, escrow_extra: &str, job_extra: &str) -> (BucketPair, String) {
    let pair = BucketPair::new(name).await;
    for i in 0..n {
        pair.put(&format!("obj/{i:02}"), vec![i as u8; 100 + i]).await;
    }
    let manifests = unique("manifests");
    create_bucket(&pair.escrow, &manifests, true).await;
    let cfg = write_config(&format!(
        r#"[escrow]
region = "us-east-1"
role_arn = "arn:aws:iam::{ESCROW}:role/escrow-operator"
account_id = "{ESCROW}"
manifest_bucket = "{manifests}"
{escrow_extra}

[primary]
account_id = "{PRIMARY}"
role_arn = "arn:aws:iam::{PRIMARY}:role/escrow-reader"
external_id = "test-external-id"

[[s3]]
name = "assets"
source_bucket = "{}"
dest_bucket = "{}"
{job_extra}
"#,
        pair.source_bucket, pair.dest_bucket
    ));
    (pair, cfg.to_str().unwrap().to_string())
}

fn json(out: &Outcome) -> Value {
    out.json()
}

fn job<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).unwrap_or_else(|| {
        panic!("job {name} in {doc:#}");
    })
}

#[tokio::test]
async fn status_is_fresh_after_a_run_stale_past_max_age_and_a_clean_verify_counts() {
    let (_pair, cfg) = setup("status", 3, "", "max_age = \"26h\"").await;

    // Before any run: no verified copy, and a max_age: stale.
    let before = cli(&["status", "-c", &cfg, "--output", "json"]);
    assert_eq!(before.code, 3, "{before:?}");
    let doc = json(&before);
    assert_schema("status", &doc);
    let j = job(&doc, "assets");
    assert_eq!(j["findings"][0]["kind"], "stale", "{doc:#}");
    assert!(j["last_run"].is_null() && j["last_verified"].is_null());
    assert_eq!(j["max_age_seconds"], 26 * 3600);

    let run = cli(&["run", "-c", &cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run_doc = json(&run);
    assert_schema("jobs", &run_doc);
    let run_id = run_doc["run_id"].as_str().unwrap().to_string();

    let fresh = cli(&["status", "-c", &cfg, "--output", "json"]);
    assert_eq!(fresh.code, 0, "{fresh:?}");
    let doc = json(&fresh);
    assert_schema("status", &doc);
    let j = job(&doc, "assets");
    assert_eq!(j["last_run"]["run_id"], run_id.as_str(), "the run's id is its manifest's");
    assert_eq!(j["last_run"]["outcome"], "ok");
    assert_eq!(j["last_run"]["copied"], 3);
    assert_eq!(j["last_verified"]["by"], "run");
    assert!(j["seconds_since_last_verified_copy"].as_u64().unwrap() < 600, "{doc:#}");
    assert_eq!(j["findings"], Value::Array(vec![]));
    assert_eq!(
        (doc["escrow_account"].as_str(), doc["primary_account"].as_str()),
        (Some(ESCROW), Some(PRIMARY))
    );
    let text = cli(&["status", "-c", &cfg]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("newest verified copy:"), "{}", text.stdout);
    assert!(text.stdout.contains("status: 1 job(s), 0 stale"), "{}", text.stdout);

    // --max-age overrides the key: older than one second is stale.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let stale = cli(&["status", "-c", &cfg, "--max-age", "1s", "--output", "json"]);
    assert_eq!(stale.code, 3, "{stale:?}");
    let doc = json(&stale);
    assert_schema("status", &doc);
    let f = &job(&doc, "assets")["findings"][0];
    assert_eq!(f["kind"], "stale");
    assert!(f["problem"].as_str().unwrap().contains("more than max_age 1s"), "{f}");

    // A clean verify is a newer verified copy.
    let verify = cli(&["verify", "-c", &cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    assert_schema("jobs", &json(&verify));
    let doc = json(&cli(&["status", "-c", &cfg, "--output", "json"]));
    let j = job(&doc, "assets");
    assert_eq!(j["last_verified"]["by"], "verify", "{doc:#}");
    assert_eq!(j["last_run"]["run_id"], run_id.as_str(), "a verify is not a run");

    // The primary gone (no credentials reach it: its reader role is assumed
    // through a profile that does not exist): status asks escrow only.
    let gone = std::fs::read_to_string(&cfg).unwrap().replace(
        "external_id = \"test-external-id\"",
        "external_id = \"test-external-id\"\nprofile = \"primary-gone\"",
    );
    let gone = write_config(&gone);
    let out = cli(&["status", "-c", gone.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(job(&json(&out), "assets")["last_verified"]["by"], "verify");
    // ... which `plan` cannot do without it.
    assert_ne!(cli(&["plan", "-c", gone.to_str().unwrap()]).code, 0);
    // The primary's own endpoint_url answers nothing: status still works,
    // and plan fails there (the config's endpoint wins over the
    // environment's AWS_ENDPOINT_URL, which names the escrow's emulator),
    // as a fault that outlasted the retries: exit 1.
    let unreachable = std::fs::read_to_string(&cfg).unwrap().replace(
        "external_id = \"test-external-id\"",
        "external_id = \"test-external-id\"\nendpoint_url = \"http://127.0.0.1:9\"",
    );
    let unreachable = write_config(&unreachable);
    let out = cli(&["status", "-c", unreachable.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let plan = cli(&["plan", "-c", unreachable.to_str().unwrap()]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(plan.stderr.contains("127.0.0.1:9") || plan.stderr.contains("dispatch"), "{plan:?}");
}

#[tokio::test]
async fn a_verify_with_differences_vouches_for_nothing() {
    let (pair, cfg) = setup("dirty", 2, "", "").await;
    assert_eq!(cli(&["run", "-c", &cfg]).code, 0);
    let first = json(&cli(&["status", "-c", &cfg, "--output", "json"]));
    let verified = job(&first, "assets")["last_verified"].clone();
    pair.put("obj/new", b"new".to_vec()).await;
    assert_eq!(cli(&["verify", "-c", &cfg]).code, 3);
    let after = json(&cli(&["status", "-c", &cfg, "--output", "json"]));
    assert_eq!(job(&after, "assets")["last_verified"], verified, "still the run's copy");
    // No max_age anywhere: reported, never stale.
    assert_eq!(job(&after, "assets")["max_age_seconds"], Value::Null);
}

#[tokio::test]
async fn metrics_are_stored_in_the_escrow_accounts_cloudwatch() {
    let (_pair, cfg) = setup("metrics", 4, "metrics = \"cloudwatch\"", "max_age = \"26h\"").await;
    let run = cli(&["run", "-c", &cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        job(&json(&run), "assets")["warnings"].as_array().unwrap().is_empty(),
        "published without a warning: {run:?}"
    );
    let cw = aws_sdk_cloudwatch::Client::new(admin(ESCROW).await.sdk_config());
    let listed = cw
        .list_metrics()
        .namespace("EscrowSync")
        .dimensions(
            aws_sdk_cloudwatch::types::DimensionFilter::builder()
                .name("Job")
                .value("assets")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut names: Vec<_> = listed.metrics().iter().filter_map(|m| m.metric_name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        [
            "BytesCopied",
            "DurationSeconds",
            "Failures",
            "Findings",
            "ItemsCopied",
            "SecondsSinceLastVerifiedCopy"
        ]
    );
    let now = std::time::SystemTime::now();
    let stat = |name: &'static str| {
        let cw = cw.clone();
        async move {
            let out = cw
                .get_metric_statistics()
                .namespace("EscrowSync")
                .metric_name(name)
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name("Job")
                        .value("assets")
                        .build(),
                )
                .start_time((now - std::time::Duration::from_secs(3600)).into())
                .end_time((now + std::time::Duration::from_secs(3600)).into())
                .period(60)
                .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
                .send()
                .await
                .unwrap();
            out.datapoints().iter().filter_map(|d| d.maximum()).fold(f64::MIN, f64::max)
        }
    };
    assert_eq!(stat("ItemsCopied").await, 4.0);
    assert_eq!(stat("BytesCopied").await, (100 + 101 + 102 + 103) as f64);
    assert_eq!(stat("Failures").await, 0.0);
    assert!(stat("SecondsSinceLastVerifiedCopy").await < 600.0);
    // status publishes too: a stale job's findings count.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(cli(&["status", "-c", &cfg, "--max-age", "1s"]).code, 3);
    assert_eq!(stat("Findings").await, 1.0, "status published the stale finding");
}

#[tokio::test]
async fn metrics_go_to_a_prometheus_textfile_replaced_whole() {
    let dir = std::env::temp_dir().join(unique("prom"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("escrow_sync.prom");
    let extra = format!("metrics = \"prometheus\"\nmetrics_file = \"{}\"", file.display());
    let (pair, cfg) = setup("prom", 2, &extra, "").await;
    assert_eq!(cli(&["run", "-c", &cfg]).code, 0);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("# TYPE escrow_sync_items_copied gauge"), "{text}");
    assert!(text.contains("escrow_sync_items_copied{job=\"assets\"} 2\n"), "{text}");
    assert!(
        text.contains("escrow_sync_seconds_since_last_verified_copy{job=\"assets\"} "),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
    // A run stopped before its jobs (the source bucket is gone) still
    // publishes a failure, not mere missing data.
    let gone = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&pair.source_bucket, "no-such-source-bucket");
    let out = cli(&["run", "-c", write_config(&gone).to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("escrow_sync_failures{job=\"assets\"} 1\n"), "{text}");
    assert!(!text.contains("escrow_sync_items_copied{job=\"assets\"}"), "no zeros: {text}");
    // A config asking for Prometheus without a file is refused up front.
    let bad = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&format!("metrics_file = \"{}\"", file.display()), "");
    let out = cli(&["plan", "-c", write_config(&bad).to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("needs metrics_file"), "{}", out.stderr);
}

#[tokio::test]
async fn every_document_has_the_head_and_matches_its_schema() {
    let (_pair, cfg) = setup("schemas", 2, "", "").await;
    let plan = cli(&["plan", "-c", &cfg, "--output", "json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let run = cli(&["run", "-c", &cfg, "--output", "json"]);
    let offline = cli(&["verify", "--offline", "-c", &cfg, "--output", "json"]);
    assert_eq!(offline.code, 0, "{offline:?}");
    for (schema, out) in [("jobs", &plan), ("jobs", &run), ("jobs", &offline)] {
        let doc = json(out);
        assert_schema(schema, &doc);
        assert_eq!(doc["escrow_account"], ESCROW, "{doc:#}");
        assert_eq!(doc["primary_account"], PRIMARY, "{doc:#}");
        assert!(doc["finished_at"].as_str().unwrap() >= doc["started_at"].as_str().unwrap());
    }
    let prune = cli(&["prune", "-c", &cfg, "--output", "json"]);
    assert_schema("prune", &json(&prune));
    let policy = cli(&["policy", "-c", &cfg, "--output", "json"]);
    assert_eq!(policy.code, 0, "{policy:?}");
    assert_schema("policy", &json(&policy));
    assert_eq!(
        (json(&policy)["escrow_account"].as_str(), json(&policy)["primary_account"].as_str()),
        (Some(ESCROW), Some(PRIMARY))
    );
    let old_flag = cli(&["policy", "-c", &cfg, "--format", "json"]);
    assert_eq!(old_flag.code, 0, "--format still works: {old_flag:?}");
    let audit = cli(&["audit", "-c", &cfg, "--output", "json", "--fail-on", "high"]);
    assert_schema("audit", &json(&audit));
    let restore = cli(&[
        "restore",
        "-c",
        &cfg,
        "--job",
        "assets",
        "--target-role-arn",
        "arn:aws:iam::333333333333:role/recovery",
        "--target-bucket",
        &unique("restored"),
        "--output",
        "json",
    ]);
    assert_schema("restore", &json(&restore));
    // A fatal error has the head too, with what is known.
    let missing = cli(&["run", "-c", "/nonexistent/escrow.toml", "--output", "json"]);
    assert_eq!(missing.code, 2);
    let doc = json(&missing);
    assert_schema("jobs", &doc);
    assert_eq!(doc["escrow_account"], Value::Null);
    assert!(doc["error"].as_str().unwrap().contains("/nonexistent/escrow.toml"), "{doc:#}");
}

#[tokio::test]
async fn reports_are_markdown_or_one_html_page_and_a_wrong_name_changes_nothing() {
    let (pair, cfg) = setup("reports", 2, "", "max_age = \"26h\"").await;
    let dir = std::env::temp_dir().join(unique("reports"));
    std::fs::create_dir_all(&dir).unwrap();
    let at = |name: &str| dir.join(name).to_str().unwrap().to_string();

    let bad = cli(&["run", "-c", &cfg, "--report", &at("run.pdf")]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains(".md (Markdown) or .html"), "{}", bad.stderr);
    assert!(pair.escrow_keys().await.is_empty(), "a refused report path runs nothing");
    let nodir = cli(&["run", "-c", &cfg, "--report", &at("missing/run.md")]);
    assert_eq!(nodir.code, 2, "{nodir:?}");

    assert_eq!(cli(&["run", "-c", &cfg, "--report", &at("run.md")]).code, 0);
    let md = std::fs::read_to_string(at("run.md")).unwrap();
    assert!(md.starts_with("# escrow-sync run\n"), "{md}");
    assert!(md.contains("| assets | s3 | ok | 2 | 0 | 0 |"), "{md}");
    assert!(md.contains(&format!("- **escrow account**: {ESCROW}")), "{md}");

    assert_eq!(cli(&["status", "-c", &cfg, "--report", &at("status.html")]).code, 0);
    let html = std::fs::read_to_string(at("status.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<th>age (RPO)</th>") && html.contains("<td>assets</td>"), "{html}");
    assert!(!html.contains("<script") && !html.contains("<link"), "self-contained");

    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(
        cli(&["status", "-c", &cfg, "--max-age", "1s", "--report", &at("stale.md")]).code,
        3
    );
    let md = std::fs::read_to_string(at("stale.md")).unwrap();
    assert!(md.contains("- **stale** assets"), "{md}");
    assert!(md.contains("*What to do:* run the job"), "{md}");
    assert!(Path::new(&at("run.md")).exists() && !Path::new(&at("run.pdf")).exists());
}
