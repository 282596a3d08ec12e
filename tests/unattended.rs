//! Logs and progress that work unattended (issue 15, point 4), on the
//! emulator with the real binary, stderr piped (not a terminal): `run`,
//! `verify` and `restore` print stats lines every `--stats-interval` and a
//! last one per job; `--log-format json` makes every stderr line one JSON
//! object; no ANSI escapes; `ESCROW_SYNC_LOG`, else `RUST_LOG`, else
//! `-v`/`-q` choose what is logged.

use std::path::PathBuf;

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

use escrow_sync_e2e::{BucketPair, Outcome, cli_command, config_for, unique};

const RECOVERY_ROLE: &str = "arn:aws:iam::333333333333:role/recovery";

/// Runs `escrow-sync ARGS` with exactly `env`'s log variables (none of the
/// caller's).
fn run(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = cli_command(&std::env::temp_dir(), args);
    cmd.env_remove("RUST_LOG").env_remove("ESCROW_SYNC_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Outcome::run(&mut cmd)
}

async fn five_objects(name: &str, extra: &str) -> (BucketPair, PathBuf) {
    let pair = BucketPair::new(name).await;
    for i in 0..5u8 {
        pair.put(&format!("obj/{i}"), vec![i; 1000]).await;
    }
    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, extra);
    (pair, cfg)
}

/// The stats lines of job `job` of `command`: the periodic ones and the last.
fn stats_lines<'a>(stderr: &'a str, command: &str, job: &str) -> (Vec<&'a str>, &'a str) {
    let every = format!("stats: {command} job {job}: ");
    let last = format!("stats: {command} job {job} finished: ");
    let periodic = stderr.lines().filter(|l| l.starts_with(&every)).collect();
    let finished: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&last)).collect();
    assert_eq!(finished.len(), 1, "one last line in {stderr}");
    (periodic, finished[0])
}

/// `1.2 KiB, 3.4 KiB/s, 0 retries, 0 throttled, 2s` split into its fields.
fn tail_fields(line: &str) -> Vec<String> {
    let tail = &line[line.find("), ").expect("the items part ends") + 3..];
    tail.split(", ").map(str::to_string).collect()
}

#[tokio::test]
async fn run_verify_and_restore_print_stats_lines_off_a_terminal() {
    // Paced so that the run lasts a few stats intervals.
    let (pair, cfg) = five_objects("stats", "concurrency = 1\nmax_requests_per_second = 5").await;
    let cfg = cfg.to_str().unwrap();
    let out = run(&["run", "--config", cfg, "--stats-interval", "200ms"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains('\x1b'), "no ANSI escape in piped stderr: {:?}", out.stderr);
    let (periodic, last) = stats_lines(&out.stderr, "run", "job");
    assert!(!periodic.is_empty(), "a line per interval while the job ran: {}", out.stderr);
    assert!(
        last.starts_with(
            "stats: run job job finished: 5 of 5 items (5 copied, 0 up to date, 0 failed), "
        ),
        "{last}"
    );
    let fields = tail_fields(last);
    assert_eq!(fields.len(), 5, "{fields:?}");
    assert_eq!(fields[0], "4.9 KiB", "bytes copied: {last}");
    assert!(fields[1].ends_with("/s"), "a rate: {last}");
    assert_eq!((fields[2].as_str(), fields[3].as_str()), ("0 retries", "0 throttled"), "{last}");
    assert!(fields[4].ends_with('s') && fields[4][..fields[4].len() - 1].parse::<u64>().is_ok());
    // The counts only grow.
    let copied =
        |l: &str| l.split(" copied").next().and_then(|h| h.rsplit('(').next()).map(str::to_string);
    let seen: Vec<u64> =
        periodic.iter().filter_map(|l| copied(l)).filter_map(|n| n.parse().ok()).collect();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");

    // verify: same and differing items, and the bytes compared.
    let out = run(&["verify", "--config", cfg, "--stats-interval", "200ms"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let (_, last) = stats_lines(&out.stderr, "verify", "job");
    assert!(
        last.starts_with(
            "stats: verify job job finished: 5 of 5 items (5 same, 0 differ, 0 failed), 4.9 KiB, "
        ),
        "{last}"
    );

    // restore --apply reports its copies too.
    let target = unique("stats-restore");
    let out = run(
        &[
            "restore",
            "--config",
            cfg,
            "--job",
            "job",
            "--target-role-arn",
            RECOVERY_ROLE,
            "--target-bucket",
            &target,
            "--apply",
            "--stats-interval",
            "1h",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let (periodic, last) = stats_lines(&out.stderr, "restore", "job");
    assert!(periodic.is_empty(), "no line before the first hour: {periodic:?}");
    assert!(
        last.starts_with("stats: restore job job finished: 5 of 5 items (5 copied, "),
        "{last}"
    );
    drop(pair);
}

#[tokio::test]
async fn with_json_logs_every_stderr_line_is_a_json_object() {
    let (_pair, cfg) = five_objects("jsonlog", "").await;
    let cfg = cfg.to_str().unwrap();
    let out = run(
        &["run", "--config", cfg, "--log-format", "json", "-vv", "--stats-interval", "100ms"],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);
    let lines: Vec<Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|v| v["level"].is_string() && v["fields"].is_object()), "{lines:?}");
    assert!(lines.iter().any(|v| v["level"] == "DEBUG"), "-vv logs at debug");
    let last = lines
        .iter()
        .find(|v| v["target"] == "escrow_sync::stats" && v["fields"]["finished"] == true)
        .expect("the job's last stats line");
    let f = &last["fields"];
    assert_eq!((f["job"].as_str(), f["command"].as_str()), (Some("job"), Some("run")));
    assert_eq!((f["items"].as_u64(), f["copied"].as_u64()), (Some(5), Some(5)));
    assert_eq!((f["bytes"].as_u64(), f["failed"].as_u64()), (Some(5000), Some(0)));
}

/// A run that logs one warning: escrow holds something under the upload
/// journal's folder that is not a journal entry (over 1 KiB), and the run
/// looks for stale uploads at once.
async fn warning_run() -> String {
    let (pair, cfg) = five_objects("warns", "abort_stale_uploads_after_hours = 0").await;
    pair.escrow
        .put_object()
        .bucket(&pair.dest_bucket)
        .key(format!("{}bogus", escrow_sync_s3::JOURNAL_DIR))
        .body(ByteStream::from(vec![b'x'; 2048]))
        .send()
        .await
        .unwrap();
    cfg.to_str().unwrap().to_string()
}

const WARNING: &str = "not a journal entry of escrow-sync's";

#[tokio::test]
async fn warnings_show_by_default_and_quiet_rust_log_and_escrow_sync_log_choose() {
    let cfg = warning_run().await;
    let logged = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["run", "--config", &cfg];
        all.extend_from_slice(args);
        let out = run(&all, env);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(!out.stderr.contains('\x1b'), "{:?}", out.stderr);
        out.stderr.contains(WARNING)
    };
    assert!(logged(&[], &[]), "warn is the default level");
    assert!(!logged(&["-q"], &[]), "-q: errors only");
    assert!(!logged(&[], &[("RUST_LOG", "error")]), "RUST_LOG is honoured");
    assert!(logged(&["-q"], &[("RUST_LOG", "warn")]), "an explicit filter wins over -q");
    assert!(
        logged(&[], &[("RUST_LOG", "error"), ("ESCROW_SYNC_LOG", "warn")]),
        "ESCROW_SYNC_LOG wins over RUST_LOG"
    );
    // The same warning as one JSON object.
    let out = run(&["run", "--config", &cfg, "--log-format", "json"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let line = out.stderr.lines().find(|l| l.contains(WARNING)).expect("the warning");
    let v: Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(v["level"], "WARN", "{v}");
    assert!(v["timestamp"].is_string() && v["target"].is_string(), "{v}");
    assert!(v["fields"]["message"].as_str().unwrap().contains(WARNING), "{v}");
    assert_eq!(
        (v["fields"]["upload_id"].as_str(), v["fields"]["size"].as_u64()),
        (Some("bogus"), Some(2048))
    );
}

/// JSON log lines go through the same masking: no credential, session
/// token or external id, even at trace level, and every line still parses.
#[tokio::test]
async fn json_logs_at_trace_level_carry_no_secret_and_stay_json() {
    let (_pair, config) = five_objects("jsonsecrets", "").await;
    let external_id = "external-id-\"quoted\"-never-printed-5d2e";
    let secret = "escrow-secret-key-that-must-never-be-printed-77c1";
    let access = "AKIAESCROWACCESSKEY88";
    let text = std::fs::read_to_string(&config).unwrap();
    // The emulator's reader role trusts any external id.
    let text = text.replace("\"test-external-id\"", &format!("'{external_id}'"));
    std::fs::write(&config, text).unwrap();
    let cfg = config.to_str().unwrap();
    let env = [
        ("ESCROW_SYNC_LOG", "trace"),
        ("AWS_ACCESS_KEY_ID", access),
        ("AWS_SECRET_ACCESS_KEY", secret),
    ];
    let out = run(&["run", "--config", cfg, "--log-format", "json"], &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.lines().count() > 100, "trace logs on");
    for line in out.stderr.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    let escaped = serde_json::to_string(external_id).unwrap();
    for needle in [external_id, &escaped[1..escaped.len() - 1], secret, access, "FQoGZXIvYXdzE"] {
        assert!(!out.stderr.contains(needle), "logged {needle}");
    }
}
