//! The `escrow-sync` binary end to end across two accounts on the emulator:
//! plan / run / verify, JSON reports, exit codes, and refused configs.

use bytes::Bytes;
use serde_json::Value;

use escrow_sync_e2e::{
    BucketPair, PRIMARY, READER_ROLE, admin, cli, cli_env, cli_in, config_for, create_bucket, keys,
    s3, unique, write_config,
};

fn content(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; (i * 397) % 5000])
}

async fn seeded(name: &str, n: usize) -> BucketPair {
    let pair = BucketPair::new(name).await;
    for i in 0..n {
        pair.put(&format!("obj/{i:03}"), content(i)).await;
    }
    pair
}

fn job(doc: &Value) -> &Value {
    let jobs = doc["jobs"].as_array().expect("jobs array");
    assert_eq!(jobs.len(), 1, "{doc}");
    &jobs[0]
}

fn n(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} is a number in {v}"))
}

#[tokio::test]
async fn plan_run_verify_rerun_with_json_reports() {
    let pair = seeded("full", 40).await;
    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, "");
    let cfg = cfg.to_str().unwrap();
    let total: u64 = (0..40).map(|i| content(i).len() as u64).sum();

    let plan = cli(&["plan", "--config", cfg, "--output", "json"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let doc = plan.json();
    assert_eq!(doc["ok"], Value::Bool(true));
    let j = job(&doc);
    for field in [
        "name",
        "kind",
        "copied",
        "skipped",
        "failed",
        "bytes_copied",
        "missing",
        "different",
        "failures",
    ] {
        assert!(j.get(field).is_some(), "field {field} in {j}");
    }
    assert_eq!((j["name"].as_str(), j["kind"].as_str()), (Some("job"), Some("s3")));
    assert_eq!((n(j, "copied"), n(j, "missing"), n(j, "bytes_copied")), (40, 40, total));
    assert!(pair.escrow_keys().await.is_empty(), "plan changes nothing");

    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    let j = job(&doc);
    assert_eq!((n(j, "copied"), n(j, "failed"), n(j, "bytes_copied")), (40, 0, total));
    assert_eq!(j["failures"].as_array().unwrap().len(), 0);
    assert_eq!(pair.escrow_keys().await.len(), 40);
    assert_eq!(pair.escrow_get("obj/007").await.unwrap(), content(7));

    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(verify.code, 0, "{verify:?}");
    let doc = verify.json();
    let j = job(&doc);
    assert_eq!((n(j, "missing"), n(j, "different"), n(j, "skipped")), (0, 0, 40));

    let again = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(again.code, 0);
    let doc = again.json();
    let j = job(&doc);
    assert_eq!((n(j, "copied"), n(j, "skipped"), n(j, "bytes_copied")), (0, 40, 0));

    let text = cli(&["run", "--config", cfg]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("run: copied 0 (0 B), skipped 40, failed 0"), "{}", text.stdout);
}

/// The protection warnings of a plan/run/verify JSON document, as
/// `(job, setting)` pairs.
fn protection(doc: &Value) -> Vec<(String, String)> {
    let all = doc["protection_warnings"].as_array().unwrap_or_else(|| panic!("{doc}"));
    all.iter()
        .map(|w| (w["job"].as_str().unwrap().into(), w["setting"].as_str().unwrap().into()))
        .collect()
}

#[tokio::test]
async fn plan_and_every_report_warn_of_unlocked_and_unkeyed_copies_without_failing() {
    let pair = seeded("warn", 1).await;
    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, "");
    let cfg = cfg.to_str().unwrap();
    let expected = vec![
        ("job".to_string(), "object_lock".to_string()),
        ("job".into(), "[escrow] kms_key_id".into()),
    ];

    // plan says so in text, one line each, naming the job, the place and the key.
    let plan = cli(&["plan", "--config", cfg]);
    assert_eq!(plan.code, 0, "a warning is no failure: {plan:?}");
    let warned: Vec<&str> =
        plan.stdout.lines().filter(|l| l.starts_with("warning: job: ")).collect();
    assert_eq!(warned.len(), 2, "{}", plan.stdout);
    let unlocked = format!("copies in s3://{}/ are not locked", pair.dest_bucket);
    assert!(
        warned[0].contains(&unlocked) && warned[0].contains("set object_lock = {"),
        "{warned:?}"
    );
    assert!(warned[1].contains("set [escrow] kms_key_id"), "{warned:?}");

    // Every report carries them: run and verify, and a plan stopped by a check.
    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let doc = run.json();
    assert_eq!(protection(&doc), expected);
    assert!(
        doc["protection_warnings"][0]["warning"].as_str().unwrap().contains(&unlocked),
        "{doc}"
    );
    assert_eq!(doc["protection_warnings"][0]["kind"], "unlocked");
    assert_eq!(n(job(&doc), "copied"), 1);
    let verify = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!((verify.code, protection(&verify.json())), (0, expected.clone()), "{verify:?}");
    let absent = config_for(&pair.source_bucket, &unique("absent"), "");
    let stopped = cli(&["plan", "--config", absent.to_str().unwrap(), "--output", "json"]);
    assert_eq!(stopped.code, 2, "{stopped:?}");
    assert_eq!(protection(&stopped.json()).len(), 2, "{stopped:?}");

    // Locked (in GOVERNANCE mode) and under the escrow key: only that the
    // lock can be lifted.
    let locked = unique("warn-locked");
    escrow_sync_e2e::create_locked_bucket(&pair.escrow, &locked).await;
    let key = escrow_sync_e2e::create_kms_key(&admin(escrow_sync_e2e::ESCROW).await).await;
    let text = std::fs::read_to_string(config_for(
        &pair.source_bucket,
        &locked,
        "object_lock = { mode = \"GOVERNANCE\", days = 1 }",
    ))
    .unwrap()
    .replace(
        "account_id = \"222222222222\"",
        &format!("account_id = \"222222222222\"\nkms_key_id = \"{key}\""),
    );
    let protected = write_config(&text);
    let protected = protected.to_str().unwrap();
    let plan = cli(&["plan", "--config", protected]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let warned: Vec<&str> = plan.stdout.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warned.len(), 1, "{}", plan.stdout);
    assert!(warned[0].contains("locked in GOVERNANCE mode"), "{warned:?}");
    let run = cli(&["run", "--config", protected, "--output", "json"]);
    let only_governance = vec![("job".to_string(), "object_lock".to_string())];
    assert_eq!((run.code, protection(&run.json())), (0, only_governance), "{run:?}");
}

#[tokio::test]
async fn changed_objects_are_copied_again_and_deleted_ones_stay_in_escrow() {
    let pair = seeded("change", 10).await;
    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, "");
    let cfg = cfg.to_str().unwrap();
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);

    pair.put("obj/003", Bytes::from_static(b"a new version")).await;
    pair.primary.delete_object().bucket(&pair.source_bucket).key("obj/005").send().await.unwrap();
    pair.put("obj/new", Bytes::from_static(b"fresh")).await;

    let verify = cli(&["verify", "--config", cfg]);
    assert_eq!(verify.code, 3, "{verify:?}");
    assert!(verify.stdout.contains("changed obj/003"), "{}", verify.stdout);
    assert!(verify.stdout.contains("missing obj/new"), "{}", verify.stdout);
    let doc = cli(&["verify", "--config", cfg, "--output", "json"]).json();
    let j = job(&doc);
    assert_eq!((n(j, "missing"), n(j, "different")), (1, 1));
    assert_eq!(doc["ok"], Value::Bool(false));

    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 0);
    let doc = run.json();
    let j = job(&doc);
    assert_eq!((n(j, "copied"), n(j, "retained")), (2, 1));
    assert_eq!(pair.escrow_get("obj/003").await.unwrap(), "a new version");
    assert_eq!(
        pair.escrow_get("obj/005").await.unwrap(),
        content(5),
        "deleted in the primary, kept in escrow"
    );
    assert_eq!(cli(&["verify", "--config", cfg]).code, 0);
}

#[tokio::test]
async fn an_object_that_cannot_be_copied_fails_alone_with_exit_1() {
    let pair = seeded("cold", 3).await;
    pair.primary
        .put_object()
        .bucket(&pair.source_bucket)
        .key("archive/cold.bin")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"frozen"))
        .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
        .send()
        .await
        .unwrap();
    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, "");
    let out = cli(&["run", "--config", cfg.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let doc = out.json();
    let j = job(&doc);
    assert_eq!((n(j, "copied"), n(j, "failed")), (3, 1));
    let f = &j["failures"][0];
    assert_eq!(f["key"], "archive/cold.bin");
    let err = f["error"].as_str().unwrap();
    assert!(err.contains("archive/cold.bin") && err.contains("restore it"), "{err}");
}

#[tokio::test]
async fn same_account_configs_are_refused_unless_allowed() {
    // A role in the primary used as the escrow identity: refused before any call.
    let pair = seeded("same", 1).await;
    let text = format!(
        "[escrow]\nregion = \"us-east-1\"\nrole_arn = \"arn:aws:iam::{PRIMARY}:role/admin\"\n\n\
         [primary]\naccount_id = \"{PRIMARY}\"\nrole_arn = \"{READER_ROLE}\"\n\n\
         [[s3]]\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\n",
        pair.source_bucket, pair.dest_bucket
    );
    let out = cli(&["run", "--config", write_config(&text).to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("role in the primary account"), "{}", out.stderr);
    assert!(pair.escrow_keys().await.is_empty());

    // The base credentials act as 123456789012 on the emulator; naming that
    // account as the primary makes both sides one account, found through STS.
    let lab = "123456789012";
    let base = s3(&admin(lab).await);
    let (src, dst) = (unique("lab-src"), unique("lab-dst"));
    create_bucket(&base, &src, false).await;
    create_bucket(&base, &dst, true).await;
    base.put_object()
        .bucket(&src)
        .key("k")
        .body(Bytes::from_static(b"v").into())
        .send()
        .await
        .unwrap();
    let config = |allow: bool| {
        format!(
            "[escrow]\nregion = \"us-east-1\"\nallow_same_account = {allow}\n\n\
             [primary]\naccount_id = \"{lab}\"\nrole_arn = \"arn:aws:iam::{lab}:role/reader\"\n\n\
             [[s3]]\nsource_bucket = \"{src}\"\ndest_bucket = \"{dst}\"\n"
        )
    };
    let out = cli(&["run", "--config", write_config(&config(false)).to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("same account 123456789012"), "{}", out.stderr);
    assert!(keys(&base, &dst).await.is_empty(), "nothing copied");

    let out = cli(&[
        "run",
        "--config",
        write_config(&config(true)).to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let j = job(&doc);
    assert_eq!(n(j, "copied"), 1);
    let warnings = j["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("same account")), "{j}");
}

#[tokio::test]
async fn missing_and_foreign_buckets_are_refused_with_exit_2_and_nothing_changes() {
    let pair = seeded("refuse", 2).await;

    let missing_src = unique("no-src");
    let cfg = config_for(&missing_src, &pair.dest_bucket, "");
    let out = cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "source bucket {missing_src} does not exist in the primary account {PRIMARY}"
        )),
        "{}",
        out.stderr
    );

    let missing_dst = unique("no-dst");
    let cfg = config_for(&pair.source_bucket, &missing_dst, "");
    let out = cli(&["run", "--config", cfg.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.code, 2, "{out:?}");
    let doc = out.json();
    assert_eq!(doc["ok"], Value::Bool(false));
    let err = doc["error"].as_str().unwrap();
    assert!(
        err.contains(&format!(
            "destination bucket {missing_dst} does not exist in the escrow account"
        )),
        "{err}"
    );

    // A destination in the primary account is not escrow.
    let foreign = unique("primary-owned");
    create_bucket(&pair.primary, &foreign, true).await;
    let cfg = config_for(&pair.source_bucket, &foreign, "");
    let out = cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!("{foreign} is not owned by the escrow account")),
        "{}",
        out.stderr
    );
    assert!(keys(&pair.primary, &foreign).await.is_empty(), "nothing written");

    // Checks run for every job before any job runs: a bad second job stops the first.
    let text = std::fs::read_to_string(config_for(&pair.source_bucket, &pair.dest_bucket, ""))
        .unwrap()
        + &format!(
            "\n[[s3]]\nname = \"bad\"\nsource_bucket = \"{missing_src}\"\ndest_bucket = \"{}\"\n",
            pair.dest_bucket
        );
    let out = cli(&["run", "--config", write_config(&text).to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(pair.escrow_keys().await.is_empty(), "the good job did not run either");
}

#[tokio::test]
async fn bad_config_and_usage_exit_2() {
    let pair = seeded("badcfg", 1).await;
    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, "concurency = 4");
    let out = cli(&["plan", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("unknown field `concurency`"), "{}", out.stderr);
    assert!(out.stderr.contains("line 15"), "{}", out.stderr);

    let out = cli(&["plan", "--config", "/nonexistent/escrow.toml"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("config file /nonexistent/escrow.toml not found"),
        "{}",
        out.stderr
    );

    let out = cli(&["plan", "--output", "yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = cli(&["frobnicate"]);
    assert_eq!(out.code, 2, "{out:?}");

    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, "");
    let out = cli(&["run", "--config", cfg.to_str().unwrap(), "--job", "nope"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no job named \"nope\""), "{}", out.stderr);
    assert!(pair.escrow_keys().await.is_empty());
}

#[tokio::test]
async fn config_defaults_to_escrow_toml_and_job_selects_one() {
    let a = seeded("jobs-a", 2).await;
    let b = seeded("jobs-b", 3).await;
    let text = std::fs::read_to_string(config_for(&a.source_bucket, &a.dest_bucket, "")).unwrap()
        + &format!(
            "\n[[s3]]\nsource_bucket = \"{}\"\ndest_bucket = \"{}\"\ndest_prefix = \"b/\"\n",
            b.source_bucket, b.dest_bucket
        );
    let path = write_config(&text);
    let dir = path.parent().unwrap();
    let second = format!("s3:{}", b.source_bucket);

    let out = cli_in(dir, &["run", "--job", &second, "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let j = job(&doc);
    assert_eq!((j["name"].as_str().unwrap(), n(j, "copied")), (second.as_str(), 3));
    assert!(a.escrow_keys().await.is_empty(), "the other job did not run");
    // The job held its lease beside its copies, outside dest_prefix.
    let lease = format!(".escrow-sync/leases/{second}.json");
    assert_eq!(b.escrow_keys().await, [lease.as_str(), "b/obj/000", "b/obj/001", "b/obj/002"]);

    let out = cli_in(dir, &["run", "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let copied: Vec<u64> = doc["jobs"].as_array().unwrap().iter().map(|j| n(j, "copied")).collect();
    assert_eq!(copied, [2, 0]);
}

#[tokio::test]
async fn the_config_comes_from_c_or_escrow_sync_config_and_the_flag_wins() {
    let a = seeded("cfg-env", 2).await;
    let good = config_for(&a.source_bucket, &a.dest_bucket, "");
    let good = good.to_str().unwrap();
    let bad = write_config("[escrow]\nregion = \"us-east-1\"\nnot_a_key = 1\n");
    let bad = bad.to_str().unwrap();

    // From the environment, as a container sets it.
    let out = cli_env(&["plan", "--output", "json"], &[("ESCROW_SYNC_CONFIG", good)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(n(job(&out.json()), "copied"), 2);

    // The environment's file is the one read without a flag: refused, named.
    let out = cli_env(&["plan"], &[("ESCROW_SYNC_CONFIG", bad)]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(bad) && out.stderr.contains("not_a_key"), "{}", out.stderr);

    // -c (and --config) win over the environment.
    for flag in ["-c", "--config"] {
        let out =
            cli_env(&["plan", flag, good, "--output", "json"], &[("ESCROW_SYNC_CONFIG", bad)]);
        assert_eq!(out.code, 0, "{flag}: {out:?}");
        assert_eq!(n(job(&out.json()), "copied"), 2);
    }
}

#[tokio::test]
async fn large_objects_are_copied_in_parts_and_recognised_on_the_next_run() {
    let pair = seeded("multipart", 2).await;
    let big: Bytes = (0..12 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect::<Vec<_>>().into();
    pair.primary
        .put_object()
        .bucket(&pair.source_bucket)
        .key("big/video.bin")
        .body(big.clone().into())
        .content_type("video/mp4")
        .metadata("camera", "north")
        .tagging("kind=footage")
        .send()
        .await
        .unwrap();
    let cfg = config_for(
        &pair.source_bucket,
        &pair.dest_bucket,
        "multipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\npart_concurrency = 2",
    );
    let cfg = cfg.to_str().unwrap();

    let out = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!(n(job(&doc), "copied"), 3);

    let head = pair
        .escrow
        .head_object()
        .bucket(&pair.dest_bucket)
        .key("big/video.bin")
        .send()
        .await
        .unwrap();
    assert!(head.e_tag().unwrap().ends_with("-3\""), "three parts: {:?}", head.e_tag());
    assert_eq!(head.content_type(), Some("video/mp4"));
    assert_eq!(head.metadata().unwrap().get("camera").map(String::as_str), Some("north"));
    let tags = pair
        .escrow
        .get_object_tagging()
        .bucket(&pair.dest_bucket)
        .key("big/video.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tag_set().len(), 1);
    assert_eq!(pair.escrow_get("big/video.bin").await.unwrap(), big);
    let uploads =
        pair.escrow.list_multipart_uploads().bucket(&pair.dest_bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "no upload left behind");

    // The part-copied object's ETag differs from the source's; the recorded
    // source ETag keeps the next run from copying it again.
    let again = cli(&["run", "--config", cfg, "--output", "json"]).json();
    assert_eq!((n(job(&again), "copied"), n(job(&again), "skipped")), (0, 3));
    assert_eq!(cli(&["verify", "--config", cfg]).code, 0);

    pair.put("big/video.bin", big.slice(1..)).await;
    let verify = cli(&["verify", "--config", cfg]);
    assert_eq!(verify.code, 3, "{verify:?}");
    assert!(verify.stdout.contains("changed big/video.bin"), "{}", verify.stdout);
}

#[tokio::test]
async fn destinations_must_be_versioned_unless_the_job_allows_otherwise() {
    let pair = seeded("unversioned", 2).await;
    let plain = unique("plain-dst");
    create_bucket(&pair.escrow, &plain, false).await;
    let cfg = config_for(&pair.source_bucket, &plain, "");
    let out = cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("destination bucket {plain} does not have versioning enabled")),
        "{}",
        out.stderr
    );
    assert!(keys(&pair.escrow, &plain).await.is_empty());
    let cfg = config_for(&pair.source_bucket, &plain, "allow_unversioned_dest = true");
    assert_eq!(cli(&["run", "--config", cfg.to_str().unwrap()]).code, 0);
    assert_eq!(keys(&pair.escrow, &plain).await.len(), 2);
}

#[tokio::test]
async fn object_lock_retention_is_set_on_every_copy_small_and_multipart() {
    let pair = seeded("locked", 2).await;
    let big: Bytes = vec![7u8; 11 * 1024 * 1024].into();
    pair.put("big.bin", big.clone()).await;
    let lock = "object_lock = { mode = \"GOVERNANCE\", days = 3 }\nmultipart_threshold = \"5MiB\"\npart_size = \"5MiB\"";

    // The versioned escrow bucket has no Object Lock: refused, nothing copied.
    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, lock);
    let out = cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("does not have Object Lock enabled"), "{}", out.stderr);
    assert!(pair.escrow_keys().await.is_empty());

    let locked = unique("locked-dst");
    escrow_sync_e2e::create_locked_bucket(&pair.escrow, &locked).await;
    let cfg = config_for(&pair.source_bucket, &locked, lock);
    let out = cli(&["run", "--config", cfg.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(n(job(&out.json()), "copied"), 3);
    let soon = std::time::SystemTime::now() + std::time::Duration::from_secs(2 * 86_400);
    for key in ["obj/000", "obj/001", "big.bin"] {
        let head = pair.escrow.head_object().bucket(&locked).key(key).send().await.unwrap();
        assert_eq!(head.object_lock_mode().map(|m| m.as_str()), Some("GOVERNANCE"), "{key}");
        let until = std::time::SystemTime::try_from(*head.object_lock_retain_until_date().unwrap())
            .unwrap();
        assert!(until > soon, "{key} retained for about 3 days");
    }
    assert_eq!(escrow_sync_e2e::get(&pair.escrow, &locked, "big.bin").await.unwrap(), big);
}

#[tokio::test]
async fn copies_are_encrypted_with_the_escrow_key_and_a_primary_key_is_refused() {
    let pair = seeded("kms", 2).await;
    let escrow_key = escrow_sync_e2e::create_kms_key(&admin(escrow_sync_e2e::ESCROW).await).await;
    let primary_key = escrow_sync_e2e::create_kms_key(&admin(PRIMARY).await).await;
    let with_key = |key: &str| {
        let text = std::fs::read_to_string(config_for(&pair.source_bucket, &pair.dest_bucket, ""))
            .unwrap();
        write_config(&text.replace(
            "account_id = \"222222222222\"",
            &format!("account_id = \"222222222222\"\nkms_key_id = \"{key}\""),
        ))
    };

    let out = cli(&["run", "--config", with_key(&primary_key).to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("belongs to account 111111111111, not the escrow account"),
        "{}",
        out.stderr
    );
    assert!(pair.escrow_keys().await.is_empty());

    let cfg = with_key(&escrow_key);
    let out = cli(&["run", "--config", cfg.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(n(job(&out.json()), "copied"), 2);
    let head =
        pair.escrow.head_object().bucket(&pair.dest_bucket).key("obj/001").send().await.unwrap();
    assert_eq!(head.server_side_encryption().map(|s| s.as_str()), Some("aws:kms"));
    assert_eq!(head.ssekms_key_id(), Some(escrow_key.as_str()));
    let recorded = head.metadata().unwrap().get(escrow_sync_s3::SOURCE_ETAG_META).cloned();
    let source_etag =
        pair.primary.head_object().bucket(&pair.source_bucket).key("obj/001").send().await.unwrap();
    assert_eq!(recorded.as_deref(), source_etag.e_tag(), "the source ETag is recorded");
    let again = cli(&["run", "--config", cfg.to_str().unwrap(), "--output", "json"]).json();
    assert_eq!(n(job(&again), "copied"), 0);
}

#[tokio::test]
async fn verify_reports_escrow_copies_without_the_configured_retention() {
    let pair = seeded("audit", 3).await;
    let locked = unique("audit-dst");
    escrow_sync_e2e::create_locked_bucket(&pair.escrow, &locked).await;
    let cfg = config_for(
        &pair.source_bucket,
        &locked,
        "object_lock = { mode = \"GOVERNANCE\", days = 2 }",
    );
    let cfg = cfg.to_str().unwrap();
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    assert_eq!(cli(&["verify", "--config", cfg]).code, 0);

    // Someone writes the same bytes into escrow without retention: the
    // listing matches, the protection does not.
    pair.put("obj/new", content(99)).await;
    pair.escrow
        .put_object()
        .bucket(&locked)
        .key("obj/new")
        .body(content(99).into())
        .send()
        .await
        .unwrap();
    let out = cli(&["verify", "--config", cfg, "--output", "json"]);
    assert_eq!(out.code, 3, "{out:?}");
    let doc = out.json();
    let j = job(&doc);
    assert_eq!((n(j, "missing"), n(j, "different"), n(j, "unprotected")), (0, 0, 1));
    assert_eq!(j["findings"][0]["key"], "obj/new");
    assert!(
        j["findings"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("no GOVERNANCE Object Lock retention"),
        "{j}"
    );
    let text = cli(&["verify", "--config", cfg]);
    assert!(text.stdout.contains("unprotected obj/new"), "{}", text.stdout);
}

#[tokio::test]
async fn each_run_renews_the_locks_of_copies_still_in_the_primary() {
    let pair = seeded("renew", 3).await;
    let locked = unique("renew-dst");
    escrow_sync_e2e::create_locked_bucket(&pair.escrow, &locked).await;
    // A one-day lock renewed within one day: every copy is due at every
    // run, so two runs a moment apart show the renewal.
    let cfg = config_for(
        &pair.source_bucket,
        &locked,
        "object_lock = { mode = \"GOVERNANCE\", days = 1, renew_within_days = 1 }",
    );
    let cfg = cfg.to_str().unwrap();
    let until = |key: &'static str| {
        let (escrow, bucket) = (pair.escrow.clone(), locked.clone());
        async move {
            let head = escrow.head_object().bucket(&bucket).key(key).send().await.unwrap();
            std::time::SystemTime::try_from(*head.object_lock_retain_until_date().unwrap()).unwrap()
        }
    };
    let out = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let notes = job(&out.json())["notes"].to_string();
    assert!(notes.contains("the retention ledger now holds every copy"), "{notes}");
    let first = [until("obj/000").await, until("obj/001").await];

    std::thread::sleep(std::time::Duration::from_millis(1_100));
    pair.primary.delete_object().bucket(&pair.source_bucket).key("obj/000").send().await.unwrap();
    let out = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let notes = job(&out.json())["notes"].to_string();
    assert!(notes.contains("retention: renewed 2 escrow copies"), "{notes}");
    assert!(notes.contains("1 no longer in the primary"), "{notes}");
    // Still in the primary: renewed. Deleted there: its lock runs out.
    assert!(until("obj/001").await > first[1], "obj/001 renewed");
    assert_eq!(until("obj/000").await, first[0], "obj/000 left to lapse");
    // The ledger is escrow-sync's own: not an escrow item, never verified
    // as one, and its folder is not copied from the primary.
    assert_eq!(cli(&["verify", "--config", cfg]).code, 0);

    // The primary's attacker breaks the primary (the source bucket gone):
    // the run stops before its jobs (exit 2), and the locks due are renewed
    // all the same, with escrow credentials alone.
    let second = until("obj/001").await;
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    for key in ["obj/001", "obj/002"] {
        pair.primary.delete_object().bucket(&pair.source_bucket).key(key).send().await.unwrap();
    }
    pair.primary.delete_bucket().bucket(&pair.source_bucket).send().await.unwrap();
    let out = cli(&["run", "--config", cfg]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(until("obj/001").await > second, "renewed by the stopped run: {}", out.stderr);
}

#[tokio::test]
async fn stream_mode_copies_through_this_process_in_parts() {
    let pair = seeded("stream", 3).await;
    let big: Bytes = (0..11 * 1024 * 1024u32).map(|i| (i % 239) as u8).collect::<Vec<_>>().into();
    pair.primary
        .put_object()
        .bucket(&pair.source_bucket)
        .key("big.bin")
        .body(big.clone().into())
        .content_type("application/x-test")
        .metadata("origin", "stream")
        .tagging("lane=slow")
        .send()
        .await
        .unwrap();
    let cfg = config_for(
        &pair.source_bucket,
        &pair.dest_bucket,
        "mode = \"stream\"\npart_size = \"5MiB\"\npart_concurrency = 2",
    );
    let cfg = cfg.to_str().unwrap();
    let out = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    assert_eq!((n(job(&doc), "copied"), n(job(&doc), "copied_in_parts")), (4, 1));
    assert_eq!(job(&doc)["streamed"], Value::Bool(true));
    assert_eq!(pair.escrow_get("big.bin").await.unwrap(), big);
    assert_eq!(pair.escrow_get("obj/002").await.unwrap(), content(2));
    let head =
        pair.escrow.head_object().bucket(&pair.dest_bucket).key("big.bin").send().await.unwrap();
    assert!(head.e_tag().unwrap().ends_with("-3\""), "{:?}", head.e_tag());
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(head.metadata().unwrap().get("origin").map(String::as_str), Some("stream"));
    let tags = pair
        .escrow
        .get_object_tagging()
        .bucket(&pair.dest_bucket)
        .key("big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tag_set()[0].key(), "lane");
    let again = cli(&["run", "--config", cfg, "--output", "json"]).json();
    assert_eq!((n(job(&again), "copied"), n(job(&again), "skipped")), (0, 4));
    assert_eq!(cli(&["verify", "--config", cfg]).code, 0);
    let uploads =
        pair.escrow.list_multipart_uploads().bucket(&pair.dest_bucket).send().await.unwrap();
    assert!(uploads.uploads().is_empty());
}

#[tokio::test]
async fn an_escrow_on_another_s3_compatible_endpoint_is_streamed_automatically() {
    let store = escrow_sync_e2e::SecondEmulator::start();
    let remote = store.s3().await;
    // The primary: a bucket on the main emulator, read with a profile's keys.
    let primary = s3(&admin("123456789012").await);
    let (src, dst) = (unique("compat-src"), unique("compat-dst"));
    create_bucket(&primary, &src, false).await;
    create_bucket(&remote, &dst, true).await;
    let big: Bytes = vec![3u8; 6 * 1024 * 1024 + 5].into();
    for (k, v) in [("a.txt", Bytes::from_static(b"alpha")), ("big.bin", big.clone())] {
        primary.put_object().bucket(&src).key(k).body(v.into()).send().await.unwrap();
    }
    let main = escrow_sync_e2e::endpoint();
    let text = format!(
        "[escrow]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\naccount_id = \"222222222222\"\n\n\
         [primary]\naccount_id = \"111111111111\"\nprofile = \"primary-store\"\nendpoint_url = \"{main}\"\n\n\
         [[s3]]\nsource_bucket = \"{src}\"\ndest_bucket = \"{dst}\"\npart_size = \"5MiB\"\n",
        store.endpoint
    );
    let cfg = write_config(&text);
    let creds = cfg.parent().unwrap().join("credentials");
    std::fs::write(
        &creds,
        "[primary-store]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let env = [("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap())];
    let out = escrow_sync_e2e::cli_env(
        &["run", "--config", cfg.to_str().unwrap(), "--output", "json"],
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(n(job(&out.json()), "copied"), 2);
    assert_eq!(escrow_sync_e2e::get(&remote, &dst, "big.bin").await.unwrap(), big);
    assert_eq!(escrow_sync_e2e::get(&remote, &dst, "a.txt").await.unwrap(), "alpha");
    let verify = escrow_sync_e2e::cli_env(&["verify", "--config", cfg.to_str().unwrap()], &env);
    assert_eq!(verify.code, 0, "{verify:?}");

    // Server-side copies cannot cross endpoints: asking for one is refused.
    let forced = write_config(&text.replace("part_size", "mode = \"server-side\"\npart_size"));
    let out = escrow_sync_e2e::cli_env(&["run", "--config", forced.to_str().unwrap()], &env);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("needs both buckets behind one endpoint"), "{}", out.stderr);
}

#[tokio::test]
async fn versions_are_copied_oldest_first_and_only_once() {
    let pair = BucketPair::new("versions").await;
    pair.primary
        .put_bucket_versioning()
        .bucket(&pair.source_bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    for body in ["v1", "v2 longer", "v3"] {
        pair.put("doc.txt", Bytes::from(body)).await;
    }
    pair.put("single.txt", Bytes::from_static(b"only")).await;
    pair.put("gone.txt", Bytes::from_static(b"was here")).await;
    pair.primary.delete_object().bucket(&pair.source_bucket).key("gone.txt").send().await.unwrap();
    let source_ids: Vec<String> = {
        let out = pair
            .primary
            .list_object_versions()
            .bucket(&pair.source_bucket)
            .prefix("doc.txt")
            .send()
            .await
            .unwrap();
        let mut v: Vec<_> =
            out.versions().iter().map(|v| v.version_id().unwrap().to_string()).collect();
        v.reverse();
        v
    };
    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, "versions = true");
    let cfg = cfg.to_str().unwrap();

    let out = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(n(job(&out.json()), "copied"), 3, "three keys (gone.txt's version too)");

    // Escrow holds the three versions of doc.txt, oldest first, each naming its source version.
    let listed = pair
        .escrow
        .list_object_versions()
        .bucket(&pair.dest_bucket)
        .prefix("doc.txt")
        .send()
        .await
        .unwrap();
    let mut escrow_versions: Vec<_> =
        listed.versions().iter().map(|v| v.version_id().unwrap().to_string()).collect();
    escrow_versions.reverse();
    assert_eq!(escrow_versions.len(), 3);
    let mut recorded = Vec::new();
    for id in &escrow_versions {
        let head = pair
            .escrow
            .head_object()
            .bucket(&pair.dest_bucket)
            .key("doc.txt")
            .version_id(id)
            .send()
            .await
            .unwrap();
        let meta = head.metadata().unwrap();
        recorded.push(meta.get(escrow_sync_s3::SOURCE_VERSION_META).cloned().unwrap());
        assert!(meta.contains_key(escrow_sync_s3::SOURCE_MODIFIED_META));
    }
    assert_eq!(recorded, source_ids, "oldest first, each recording its source version");
    assert_eq!(
        pair.escrow_get("doc.txt").await.unwrap(),
        "v3",
        "the current version is the newest"
    );
    assert_eq!(
        pair.escrow_get("gone.txt").await.unwrap(),
        "was here",
        "a delete marker is not copied"
    );

    let again = cli(&["run", "--config", cfg, "--output", "json"]).json();
    assert_eq!((n(job(&again), "copied"), n(job(&again), "skipped")), (0, 3));
    assert_eq!(cli(&["verify", "--config", cfg]).code, 0);

    pair.put("doc.txt", Bytes::from_static(b"v4")).await;
    assert_eq!(cli(&["verify", "--config", cfg]).code, 3);
    let third = cli(&["run", "--config", cfg, "--output", "json"]).json();
    assert_eq!(n(job(&third), "copied"), 1);
    let listed = pair
        .escrow
        .list_object_versions()
        .bucket(&pair.dest_bucket)
        .prefix("doc.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.versions().len(), 4, "only the new version was added");
    assert_eq!(pair.escrow_get("doc.txt").await.unwrap(), "v4");
}

#[tokio::test]
async fn verify_with_checksums_finds_an_escrow_copy_whose_content_differs() {
    use aws_sdk_s3::types::ChecksumAlgorithm;
    let pair = BucketPair::new("verify-crc").await;
    for (key, body) in [("a.txt", "alpha"), ("b.txt", "bravo")] {
        pair.primary
            .put_object()
            .bucket(&pair.source_bucket)
            .key(key)
            .body(Bytes::from(body).into())
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .send()
            .await
            .unwrap();
    }
    let cfg = config_for(&pair.source_bucket, &pair.dest_bucket, "mode = \"stream\"");
    let cfg = cfg.to_str().unwrap();
    assert_eq!(cli(&["run", "--config", cfg]).code, 0);
    assert_eq!(
        cli(&["verify", "--config", cfg, "--checksums"]).code,
        0,
        "checksums match after a run"
    );
    let crc = |client: aws_sdk_s3::Client, bucket: String| async move {
        let h = client
            .head_object()
            .bucket(bucket)
            .key("b.txt")
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        h.checksum_crc32_c().map(str::to_string)
    };
    let source_crc = crc(pair.primary.clone(), pair.source_bucket.clone()).await;
    assert!(source_crc.is_some());
    assert_eq!(
        crc(pair.escrow.clone(), pair.dest_bucket.clone()).await,
        source_crc,
        "the copy carries the source's CRC32C"
    );

    // Bit rot in escrow that the listing cannot see: same ETag and size, a
    // different stored checksum. (The emulator stores checksums as sent
    // without checking them, which lets the test plant one.)
    let stored =
        pair.escrow.get_object().bucket(&pair.dest_bucket).key("b.txt").send().await.unwrap();
    let etag = stored.e_tag().unwrap().to_string();
    pair.escrow
        .put_object()
        .bucket(&pair.dest_bucket)
        .key("b.txt")
        .body(Bytes::from("bravo").into())
        .checksum_algorithm(ChecksumAlgorithm::Crc32C)
        .checksum_crc32_c("AAAAAA==")
        .send()
        .await
        .unwrap();
    let head =
        pair.escrow.head_object().bucket(&pair.dest_bucket).key("b.txt").send().await.unwrap();
    assert_eq!(head.e_tag(), Some(etag.as_str()), "the listing still matches");
    assert_eq!(cli(&["verify", "--config", cfg]).code, 0, "a listing comparison sees nothing");

    let out = cli(&["verify", "--config", cfg, "--checksums", "--output", "json"]);
    assert_eq!(out.code, 3, "{out:?}");
    let doc = out.json();
    let j = job(&doc);
    assert_eq!((n(j, "different"), n(j, "skipped")), (1, 1));
    assert_eq!(j["differences"][0]["key"], "b.txt");
    let problem = j["findings"][0]["problem"].as_str().unwrap();
    assert!(problem.contains("checksum mismatch") && problem.contains("AAAAAA=="), "{problem}");
    let text = cli(&["verify", "--config", cfg, "--checksums"]);
    assert!(text.stdout.contains("mismatch b.txt: checksum mismatch"), "{}", text.stdout);
}

#[tokio::test]
async fn a_run_aborts_the_uploads_an_interrupted_run_left_and_no_others() {
    let pair = seeded("stale", 2).await;
    let escrow = &pair.escrow;
    let bucket = &pair.dest_bucket;
    // An upload escrow-sync started and never finished: it carries its journal entry.
    let ours = escrow.create_multipart_upload().bucket(bucket).key("obj/000").send().await.unwrap();
    let ours_id = ours.upload_id().unwrap().to_string();
    escrow
        .put_object()
        .bucket(bucket)
        .key(format!("{}{ours_id}", escrow_sync_s3::JOURNAL_DIR))
        .body(Bytes::from_static(b"obj/000").into())
        .send()
        .await
        .unwrap();
    // Someone else's upload in the same bucket: no journal entry.
    let theirs = escrow
        .create_multipart_upload()
        .bucket(bucket)
        .key("manual/upload.bin")
        .send()
        .await
        .unwrap();
    let theirs_id = theirs.upload_id().unwrap().to_string();

    let uploads = || async {
        let out = escrow.list_multipart_uploads().bucket(bucket).send().await.unwrap();
        let mut ids: Vec<String> =
            out.uploads().iter().filter_map(|u| u.upload_id().map(str::to_string)).collect();
        ids.sort();
        ids
    };
    // Young uploads may belong to a run in progress: left alone by default.
    let cfg = config_for(&pair.source_bucket, bucket, "");
    assert_eq!(cli(&["run", "--config", cfg.to_str().unwrap()]).code, 0);
    assert_eq!(uploads().await.len(), 2);

    let cfg = config_for(&pair.source_bucket, bucket, "abort_stale_uploads_after_hours = 0");
    let out = cli(&["run", "--config", cfg.to_str().unwrap(), "--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = out.json();
    let warnings = job(&doc)["warnings"].as_array().unwrap().clone();
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains("aborted 1 multipart upload")),
        "{warnings:?}"
    );
    assert_eq!(uploads().await, [theirs_id], "only escrow-sync's own upload was aborted");
    assert!(!uploads().await.contains(&ours_id));
    assert!(
        !pair.escrow_keys().await.iter().any(|k| k.starts_with(escrow_sync_s3::JOURNAL_DIR)),
        "the journal entry is gone"
    );
    assert_eq!(cli(&["verify", "--config", cfg.to_str().unwrap()]).code, 0);
}

#[tokio::test]
async fn a_snapshot_id_the_primary_does_not_have_fails_by_name() {
    let missing = escrow_sync_e2e::unique("no-such-snapshot");
    let config = escrow_sync_e2e::config_with_jobs(&format!(
        "[[rds]]\nname = \"databases\"\nids = [\"{missing}\"]\n"
    ));
    let cfg = config.to_str().unwrap();
    let run = cli(&["run", "--config", cfg, "--output", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let j = job(&run.json()).clone();
    assert_eq!((n(&j, "copied"), n(&j, "failed")), (0, 1), "{j}");
    let failure = &j["failures"][0];
    assert_eq!(failure["key"].as_str(), Some(missing.as_str()));
    assert!(failure["error"].as_str().unwrap().contains("fix or remove the id"), "{failure}");
}

/// Issue 6, item 4: no credential, session token or external id is ever
/// printed or logged, even with every log at trace level.
#[tokio::test]
async fn no_secret_is_printed_or_logged_even_at_trace_level() {
    let pair = BucketPair::new("secrets").await;
    pair.put("a.txt", "a").await;
    let external_id = "external-id-that-must-never-be-printed-0c7f";
    let secret = "escrow-secret-key-that-must-never-be-printed-9a1b";
    let access = "AKIAESCROWACCESSKEY77";
    let config = config_for(&pair.source_bucket, &pair.dest_bucket, "");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("test-external-id"));
    // The emulator's reader role trusts any external id.
    std::fs::write(&config, text.replace("test-external-id", external_id)).unwrap();
    let cfg = config.to_str().unwrap();
    let env = [
        ("ESCROW_SYNC_LOG", "trace"),
        ("AWS_ACCESS_KEY_ID", access),
        ("AWS_SECRET_ACCESS_KEY", secret),
    ];
    for args in [
        &["plan", "--config", cfg][..],
        &["run", "--config", cfg, "--output", "json"][..],
        &["verify", "--config", cfg][..],
        &["run", "--config", "/nonexistent/escrow.toml"][..],
    ] {
        let out = escrow_sync_e2e::cli_env(args, &env);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.len() > 1000 || args.contains(&"/nonexistent/escrow.toml"),
            "trace logs on"
        );
        for needle in
            [external_id, secret, access, "SessionToken", "session_token: Some", "SecretAccessKey"]
        {
            assert!(!all.contains(needle), "{args:?} printed {needle}");
        }
        // Temporary credentials the emulator hands out (moto's session
        // tokens start with FQoGZXIvYXdzE) never show either, nor any access
        // key id (AKIA/ASIA and 16 more letters or digits).
        assert!(!all.contains("FQoGZXIvYXdzE"), "{args:?} printed a session token");
        let b = all.as_bytes();
        let key_id = (0..b.len().saturating_sub(20)).find(|&i| {
            (b[i..].starts_with(b"AKIA") || b[i..].starts_with(b"ASIA"))
                && b[i + 4..i + 20].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        });
        assert_eq!(key_id.map(|i| &all[i..i + 20]), None, "{args:?} printed an access key id");
    }
}
