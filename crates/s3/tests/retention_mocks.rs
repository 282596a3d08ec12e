//! Rolling Object Lock retention (issue 17, point 1), with aws-smithy-mocks:
//! the ledger of locked writes, the renewal pass's requests (only copies in
//! the window, only those still wanted, never a weaker mode), and what a
//! failure leaves for the next run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::copy_object::CopyObjectOutput;
use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_s3::operation::put_object_retention::PutObjectRetentionOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CopyObjectResult, Object, ObjectLockMode, ObjectLockRetentionMode, ObjectVersion,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::DateTime;

use escrow_sync_core::{Item, ItemKind, Payload, ServerSideRef, Sink, time::rfc3339};
use escrow_sync_s3::{LockMode, ObjectLock, Protection, RETENTION_DIR, S3Sink};

const DAY: Duration = Duration::from_secs(86_400);

fn day(t: SystemTime) -> String {
    rfc3339(t)[..10].to_string()
}

fn client(rules: &[&Rule]) -> Client {
    // Unless a test says otherwise, escrow keeps one version of each key,
    // `v<key>`.
    let one_version = mock!(Client::list_object_versions).then_compute_output(|r| {
        let key = r.prefix().unwrap_or_default().to_string();
        ListObjectVersionsOutput::builder()
            .versions(ObjectVersion::builder().key(&key).version_id(format!("v{key}")).build())
            .is_truncated(false)
            .build()
    });
    let mut all: Vec<&Rule> = rules.to_vec();
    all.push(&one_version);
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, all)
}

/// ListObjectVersions of `key`: these versions (newest first), then a
/// longer key that must not be taken for one of them.
fn versions(key: &'static str, ids: &'static [&'static str]) -> Rule {
    mock!(Client::list_object_versions)
        .match_requests(move |r| r.prefix() == Some(key))
        .then_output(move || {
            let mut out = ListObjectVersionsOutput::builder();
            for id in ids {
                out = out.versions(ObjectVersion::builder().key(key).version_id(*id).build());
            }
            out.versions(
                ObjectVersion::builder().key(format!("{key}-longer")).version_id("x").build(),
            )
            .is_truncated(false)
            .build()
        })
}

/// HeadObject of one version of an escrow copy, locked `mode` until `until`.
fn head_version(
    key: &'static str,
    version: &'static str,
    mode: ObjectLockMode,
    until: SystemTime,
) -> Rule {
    mock!(Client::head_object)
        .match_requests(move |r| r.key() == Some(key) && r.version_id() == Some(version))
        .then_output(move || {
            HeadObjectOutput::builder()
                .version_id(version)
                .object_lock_mode(mode.clone())
                .object_lock_retain_until_date(DateTime::from(until))
                .build()
        })
}

fn sink(client: Client, mode: LockMode) -> S3Sink {
    S3Sink::from_client(client, "esc").with_dest_prefix("p/").with_protection(
        Protection::new()
            .with_object_lock(Some(ObjectLock::new(mode, 30).with_renew_within_days(7))),
    )
}

fn listing(prefix: &'static str, keys: Vec<String>) -> Rule {
    listing_at(prefix, keys, SystemTime::now())
}

/// A listing whose objects were all last modified at `modified`.
fn listing_at(prefix: &'static str, keys: Vec<String>, modified: SystemTime) -> Rule {
    mock!(Client::list_objects_v2).match_requests(move |r| r.prefix() == Some(prefix)).then_output(
        move || {
            ListObjectsV2Output::builder()
                .set_contents(Some(
                    keys.iter()
                        .map(|k| {
                            Object::builder()
                                .key(k)
                                .size(10)
                                .e_tag("\"e\"")
                                .last_modified(DateTime::from(modified))
                                .build()
                        })
                        .collect(),
                ))
                .is_truncated(false)
                .build()
        },
    )
}

/// HeadObject of an escrow copy: version `v<key>`, locked `mode` until `until`.
fn head(key: &'static str, mode: ObjectLockMode, until: SystemTime) -> Rule {
    mock!(Client::head_object).match_requests(move |r| r.key() == Some(key)).then_output(
        move || {
            HeadObjectOutput::builder()
                .version_id(format!("v{key}"))
                .object_lock_mode(mode.clone())
                .object_lock_retain_until_date(DateTime::from(until))
                .build()
        },
    )
}

/// (key, version, mode, retain-until) of every PutObjectRetention.
type Renewed = Arc<Mutex<Vec<(String, String, ObjectLockRetentionMode, SystemTime)>>>;

fn put_retention(seen: Renewed) -> Rule {
    mock!(Client::put_object_retention)
        .match_requests(move |r| {
            let ret = r.retention().expect("a retention");
            seen.lock().unwrap().push((
                r.key().unwrap().to_string(),
                r.version_id().unwrap_or_default().to_string(),
                ret.mode().unwrap().clone(),
                SystemTime::try_from(*ret.retain_until_date().unwrap()).unwrap(),
            ));
            true
        })
        .then_output(|| PutObjectRetentionOutput::builder().build())
}

/// (key, body) of every PutObject.
type Written = Arc<Mutex<Vec<(String, String)>>>;

fn put_object(seen: Written) -> Rule {
    mock!(Client::put_object)
        .match_requests(move |r| {
            let body = r.body().bytes().map(|b| String::from_utf8_lossy(b).into_owned());
            seen.lock().unwrap().push((r.key().unwrap().to_string(), body.unwrap_or_default()));
            true
        })
        .then_output(|| PutObjectOutput::builder().build())
}

fn ledger_keys(written: &Written, day: &str) -> Vec<String> {
    let prefix = format!("p/{RETENTION_DIR}{day}/");
    let mut keys: Vec<String> = written
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .flat_map(|(_, body)| {
            body.lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys
}

fn close(a: SystemTime, b: SystemTime) -> bool {
    a.duration_since(b).or_else(|_| b.duration_since(a)).unwrap() < Duration::from_secs(120)
}

#[tokio::test]
async fn first_pass_enters_every_copy_and_renews_only_those_due_and_wanted() {
    let now = SystemTime::now();
    let ledger = listing("p/.escrow-sync-retention/", Vec::new());
    let copies = listing(
        "p/",
        ["p/a", "p/b", "p/c", "p/.escrow-sync-uploads/u1", "p/.escrow-sync-retention/x"]
            .map(String::from)
            .to_vec(),
    );
    let far = now + 100 * DAY;
    let a = head("p/a", ObjectLockMode::Compliance, far);
    let b = head("p/b", ObjectLockMode::Compliance, now + 2 * DAY);
    let c = head("p/c", ObjectLockMode::Compliance, now + 2 * DAY);
    let renewed = Renewed::default();
    let put_ret = put_retention(renewed.clone());
    let written = Written::default();
    let put = put_object(written.clone());
    let sink = sink(client(&[&ledger, &copies, &a, &b, &c, &put_ret, &put]), LockMode::Compliance);

    let wanted = Arc::new(Mutex::new(Vec::new()));
    let asked = wanted.clone();
    let r = sink
        .renew_retention(move |key: String| {
            asked.lock().unwrap().push(key.clone());
            async move { Ok(key != "p/c") }
        })
        .await
        .unwrap();

    assert_eq!((r.renewed, r.current, r.lapsing, r.started), (1, 1, 1, true), "{r:?}");
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    // Only copies in the window are looked up in the primary.
    let mut asked = wanted.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, ["p/b", "p/c"]);
    let renewed = renewed.lock().unwrap().clone();
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    let (key, version, mode, until) = &renewed[0];
    assert_eq!((key.as_str(), version.as_str()), ("p/b", "vp/b"));
    assert_eq!(*mode, ObjectLockRetentionMode::Compliance);
    assert!(close(*until, now + 30 * DAY), "{until:?}");
    // Filed again: a under its own day, b under the new one; c is dropped.
    assert_eq!(ledger_keys(&written, &day(far)), ["p/a"]);
    assert_eq!(ledger_keys(&written, &day(now + 30 * DAY)), ["p/b"]);
    assert!(written.lock().unwrap().iter().any(|(k, _)| k == "p/.escrow-sync-retention/started"));
    let note = r.summary("escrow copies").unwrap();
    assert!(note.contains("renewed 1 escrow copies"), "{note}");
    assert!(note.contains("1 no longer in the primary"), "{note}");
}

#[tokio::test]
async fn steady_state_reads_only_due_days_and_keeps_a_compliance_lock() {
    let now = SystemTime::now();
    let due = day(now + 3 * DAY);
    let later = day(now + 20 * DAY);
    let due_file: &'static str =
        Box::leak(format!("p/.escrow-sync-retention/{due}/1.jsonl").into_boxed_str());
    let planted: &'static str =
        Box::leak(format!("p/.escrow-sync-retention/{due}/2.jsonl").into_boxed_str());
    let ledger = listing(
        "p/.escrow-sync-retention/",
        vec![
            "p/.escrow-sync-retention/started".into(),
            due_file.into(),
            planted.into(),
            format!("p/.escrow-sync-retention/{later}/3.jsonl"),
        ],
    );
    let read = Arc::new(Mutex::new(Vec::new()));
    let reads = read.clone();
    let get = mock!(Client::get_object)
        .match_requests(move |r| {
            reads.lock().unwrap().push(r.key().unwrap().to_string());
            true
        })
        .then_output(move || {
            GetObjectOutput::builder()
                .body(ByteStream::from_static(b"{\"key\":\"p/b\"}\n{\"key\":\"p/gone\"}\n{\"key\":\"other/x\"}\n{\"key\":\"p/.escrow-sync-uploads/u\"}\n"))
                .build()
        });
    // b is held under COMPLIANCE; the job asks for GOVERNANCE: it stays
    // COMPLIANCE (S3 refuses to weaken it anyway).
    let b = head("p/b", ObjectLockMode::Compliance, now + 3 * DAY);
    let gone = mock!(Client::head_object)
        .match_requests(|r| r.key() == Some("p/gone"))
        .then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                StatusCode::try_from(404).unwrap(),
                aws_smithy_types::body::SdkBody::empty(),
            )
        });
    let renewed = Renewed::default();
    let put_ret = put_retention(renewed.clone());
    let written = Written::default();
    let put = put_object(written.clone());
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let dels = deleted.clone();
    let delete = mock!(Client::delete_object)
        .match_requests(move |r| {
            dels.lock().unwrap().push(r.key().unwrap().to_string());
            true
        })
        .then_output(|| DeleteObjectOutput::builder().build());
    let sink =
        sink(client(&[&ledger, &get, &b, &gone, &put_ret, &put, &delete]), LockMode::Governance);

    let r = sink.renew_retention(|_| async { Ok(true) }).await.unwrap();

    // Both due objects read (each holds b, a gone copy and foreign keys,
    // which are ignored), the later day not at all.
    let mut read = read.lock().unwrap().clone();
    read.sort();
    assert_eq!(read, [due_file, planted]);
    // Named in both due objects: renewed once (a gone copy dropped once).
    assert_eq!((r.renewed, r.dropped, r.started), (1, 1, false), "{r:?}");
    let renewed = renewed.lock().unwrap().clone();
    assert!(
        renewed.iter().all(|(k, _, m, _)| k == "p/b" && *m == ObjectLockRetentionMode::Compliance)
    );
    // Filed again before the due objects were removed.
    assert_eq!(ledger_keys(&written, &day(now + 30 * DAY)), ["p/b"]);
    let mut deleted = deleted.lock().unwrap().clone();
    deleted.sort();
    assert_eq!(deleted, [due_file, planted]);
}

/// The listing of a started ledger with one object due tomorrow.
fn started_ledger_due_tomorrow(now: SystemTime) -> Rule {
    let due = format!("p/.escrow-sync-retention/{}/1.jsonl", day(now + DAY));
    listing("p/.escrow-sync-retention/", vec!["p/.escrow-sync-retention/started".into(), due])
}

#[tokio::test]
async fn a_refused_renewal_is_a_failure_and_is_filed_for_the_next_run() {
    let now = SystemTime::now();
    let ledger = started_ledger_due_tomorrow(now);
    let get = mock!(Client::get_object).then_output(|| {
        GetObjectOutput::builder().body(ByteStream::from_static(b"{\"key\":\"p/b\"}\n")).build()
    });
    let b = head("p/b", ObjectLockMode::Governance, now + DAY);
    let refuse = mock!(Client::put_object_retention).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            StatusCode::try_from(403).unwrap(),
            aws_smithy_types::body::SdkBody::from(
                "<Error><Code>AccessDenied</Code><Message>no</Message></Error>",
            ),
        )
    });
    let written = Written::default();
    let put = put_object(written.clone());
    let deletes =
        mock!(Client::delete_object).then_output(|| DeleteObjectOutput::builder().build());
    let sink = sink(client(&[&ledger, &get, &b, &refuse, &put, &deletes]), LockMode::Governance);

    let r = sink.renew_retention(|_| async { Ok(true) }).await.unwrap();

    assert_eq!(r.renewed, 0);
    assert_eq!(r.failures.len(), 1, "{r:?}");
    assert_eq!(r.failures[0].key, "p/b");
    assert!(r.failures[0].error.contains("PutObjectRetention"), "{}", r.failures[0].error);
    // Filed under today (due at the next run), then the due object goes:
    // nothing else in it is tried twice.
    assert_eq!(ledger_keys(&written, &day(now)), ["p/b"]);
    assert_eq!(deletes.num_calls(), 1);
}

#[tokio::test]
async fn locked_copies_enter_the_ledger_under_the_day_their_lock_ends() {
    let copy = mock!(Client::copy_object).then_output(|| {
        CopyObjectOutput::builder()
            .copy_object_result(CopyObjectResult::builder().e_tag("\"e\"").build())
            .build()
    });
    let written = Written::default();
    let put = put_object(written.clone());
    let sink = sink(client(&[&copy, &put]), LockMode::Compliance);
    let now = SystemTime::now();
    for key in ["k1", "k2"] {
        let item = Item::new(key, ItemKind::Object, 10, "\"e\"");
        let src = ServerSideRef::new("s3", "src", key, "\"e\"");
        sink.write(&item, Payload::Reference(src)).await.unwrap();
    }
    assert!(written.lock().unwrap().is_empty(), "batched until flushed");
    sink.flush_ledger().await.unwrap();
    assert_eq!(ledger_keys(&written, &day(now + 30 * DAY)), ["p/k1", "p/k2"]);
    // Nothing left to write.
    sink.flush_ledger().await.unwrap();
    assert_eq!(written.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_source_key_in_the_ledger_folder_is_never_copied() {
    let copy = mock!(Client::copy_object).then_output(|| CopyObjectOutput::builder().build());
    let sink = sink(client(&[&copy]), LockMode::Compliance);
    let key = format!("{RETENTION_DIR}2020-01-01/planted.jsonl");
    let item = Item::new(key.as_str(), ItemKind::Object, 10, "\"e\"");
    let src = ServerSideRef::new("s3", "src", key.as_str(), "\"e\"");
    let err = sink.write(&item, Payload::Reference(src)).await.unwrap_err();
    assert!(err.to_string().contains(RETENTION_DIR), "{err}");
    assert_eq!(copy.num_calls(), 0);
}

#[tokio::test]
async fn every_version_of_a_rewritten_object_stays_locked_and_a_refusing_primary_keeps_locks() {
    let now = SystemTime::now();
    let ledger = started_ledger_due_tomorrow(now);
    let get = mock!(Client::get_object).then_output(|| {
        GetObjectOutput::builder()
            .body(ByteStream::from_static(b"{\"key\":\"p/r\"}\n{\"key\":\"p/m\"}\n"))
            .build()
    });
    // p/r was rewritten by the primary's attacker: escrow keeps the
    // pre-attack version `old` under the new one, both due. p/m's current
    // version is a delete marker (listed apart): the version under it is
    // still escrow's.
    let r_versions = versions("p/r", &["new", "old"]);
    let m_versions = versions("p/m", &["under"]);
    let heads = [
        head_version("p/r", "new", ObjectLockMode::Compliance, now + DAY),
        head_version("p/r", "old", ObjectLockMode::Compliance, now + DAY),
        head_version("p/m", "under", ObjectLockMode::Compliance, now + DAY),
    ];
    let renewed = Renewed::default();
    let put_ret = put_retention(renewed.clone());
    let written = Written::default();
    let put = put_object(written.clone());
    let delete = mock!(Client::delete_object).then_output(|| DeleteObjectOutput::builder().build());
    let mut rules: Vec<&Rule> =
        vec![&ledger, &get, &r_versions, &m_versions, &put_ret, &put, &delete];
    rules.extend(heads.iter());
    let sink = sink(client(&rules), LockMode::Compliance);

    // The primary refuses to say whether it holds p/m: kept locked.
    let r = sink
        .renew_retention(|key: String| async move {
            if key == "p/m" {
                Err(escrow_sync_core::Error::new(
                    escrow_sync_core::ErrorKind::AccessDenied,
                    "s3:HeadObject",
                    key,
                    "refused",
                ))
            } else {
                Ok(true)
            }
        })
        .await
        .unwrap();

    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!((r.renewed, r.unchecked), (3, 1), "{r:?}");
    let mut got: Vec<(String, String)> =
        renewed.lock().unwrap().iter().map(|(k, v, _, _)| (k.clone(), v.clone())).collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("p/m".to_string(), "under".to_string()),
            ("p/r".to_string(), "new".to_string()),
            ("p/r".to_string(), "old".to_string()),
        ]
    );
    assert_eq!(ledger_keys(&written, &day(now + 30 * DAY)), ["p/m", "p/r"]);
    assert!(r.summary("escrow copies").unwrap().contains("1 renewed without the primary"));
}

#[tokio::test]
async fn a_sweep_once_per_lock_period_finds_copies_the_ledger_lost() {
    let now = SystemTime::now();
    // The last sweep was 24 days ago; days 30 - renew_within_days 7 = 23.
    let ledger = listing_at(
        "p/.escrow-sync-retention/",
        vec!["p/.escrow-sync-retention/started".into()],
        now - 24 * DAY,
    );
    // A copy whose ledger batch was lost (a crash before it was written),
    // its lock due.
    let copies = listing("p/", vec!["p/lost".into()]);
    let lost = head("p/lost", ObjectLockMode::Compliance, now + DAY);
    let renewed = Renewed::default();
    let put_ret = put_retention(renewed.clone());
    let written = Written::default();
    let put = put_object(written.clone());
    let sink = sink(client(&[&ledger, &copies, &lost, &put_ret, &put]), LockMode::Compliance);
    let r = sink.renew_retention(|_| async { Ok(true) }).await.unwrap();
    assert_eq!((r.renewed, r.swept, r.started), (1, true, false), "{r:?}");
    assert_eq!(copies.num_calls(), 1);
    assert!(written.lock().unwrap().iter().any(|(k, _)| k == "p/.escrow-sync-retention/started"));

    // Swept a moment ago: no sweep.
    let ledger =
        listing("p/.escrow-sync-retention/", vec!["p/.escrow-sync-retention/started".into()]);
    let copies = listing("p/", vec!["p/lost".into()]);
    let sink = sink_again(client(&[&ledger, &copies]));
    let r = sink.renew_retention(|_| async { Ok(true) }).await.unwrap();
    assert_eq!((r.renewed, r.swept), (0, false), "{r:?}");
    assert_eq!(copies.num_calls(), 0);
}

fn sink_again(client: Client) -> S3Sink {
    sink(client, LockMode::Compliance)
}
