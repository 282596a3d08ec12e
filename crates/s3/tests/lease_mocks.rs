//! Request shapes of job leases with aws-smithy-mocks: `If-None-Match: *`
//! to acquire, `If-Match: <etag>` to take over, renew and release, and what
//! a `412 Precondition Failed` means at each step.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::put_object::{PutObjectInput, PutObjectOutput};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use escrow_sync_core::{CancellationToken, ErrorKind};
use escrow_sync_s3::{LeaseHolder, LeaseRecord, LeaseStore};

const KEY: &str = "escrow-sync/manifests/leases/assets.json";

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules.iter().copied(), |c| c
        .retry_config(RetryConfig::standard().with_initial_backoff(Duration::from_millis(1))))
}

fn store(rules: &[&Rule]) -> LeaseStore {
    LeaseStore::from_client(client(rules), "manifests", KEY)
}

fn me() -> LeaseHolder {
    LeaseHolder { job: "assets".into(), host: "here".into(), pid: 7, run_id: "run-mine".into() }
}

fn precondition_failed() -> String {
    "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you \
     specified did not hold</Message></Error>"
        .into()
}

/// A lease record of another run expiring `from_now` seconds from now
/// (negative: in the past).
fn other(from_now: i64) -> LeaseRecord {
    let now = SystemTime::now();
    let at = if from_now >= 0 {
        now + Duration::from_secs(from_now as u64)
    } else {
        now - Duration::from_secs((-from_now) as u64)
    };
    LeaseRecord {
        job: "assets".into(),
        host: "other-host".into(),
        pid: 4242,
        run_id: "run-other".into(),
        started: escrow_sync_core::rfc3339(now - Duration::from_secs(3600)),
        expires: escrow_sync_core::rfc3339(at),
        released: None,
    }
}

fn object(record: &LeaseRecord, etag: &str) -> GetObjectOutput {
    GetObjectOutput::builder()
        .e_tag(etag)
        .body(ByteStream::from(serde_json::to_vec(record).unwrap()))
        .build()
}

fn body(r: &PutObjectInput) -> LeaseRecord {
    serde_json::from_slice(r.body().bytes().expect("an in-memory body")).expect("a lease record")
}

fn create(r: &PutObjectInput) -> bool {
    r.if_none_match() == Some("*") && r.if_match().is_none()
}

#[tokio::test]
async fn acquire_creates_the_lease_with_if_none_match() {
    let put = mock!(Client::put_object)
        .match_requests(|r| {
            let b = body(r);
            create(r)
                && r.key() == Some(KEY)
                && r.bucket() == Some("manifests")
                && r.expected_bucket_owner() == Some("222222222222")
                && r.ssekms_key_id() == Some("alias/escrow")
                && b.job == "assets"
                && b.host == "here"
                && b.pid == 7
                && b.run_id == "run-mine"
                && b.released.is_none()
        })
        .then_output(|| PutObjectOutput::builder().e_tag("\"e1\"").build());
    let get = mock!(Client::get_object).then_output(|| unreachable!("no read needed"));
    let lease = store(&[&put, &get])
        .with_expected_owner(Some("222222222222".into()))
        .with_kms_key_id(Some("alias/escrow".into()))
        .with_ttl(Duration::from_secs(600))
        .acquire(&me())
        .await
        .unwrap();
    assert_eq!(put.num_calls(), 1);
    assert_eq!(get.num_calls(), 0);
    assert!(lease.previous().is_none());
    let r = lease.record();
    let expires = r.expires_at().unwrap();
    assert!(expires > SystemTime::now() + Duration::from_secs(500), "{r:?}");
    assert!(!r.expired_at(SystemTime::now()));
}

#[tokio::test]
async fn a_held_lease_is_an_error_naming_the_holder_and_nothing_is_written() {
    let held = other(300);
    let expires = held.expires.clone();
    let create_put = mock!(Client::put_object)
        .match_requests(create)
        .sequence()
        .http_status(412, Some(precondition_failed()))
        .build();
    let takeover = mock!(Client::put_object)
        .match_requests(|r| r.if_match().is_some())
        .then_output(|| PutObjectOutput::builder().e_tag("\"never\"").build());
    let get = mock!(Client::get_object).then_output(move || object(&held, "\"held\""));
    let err = store(&[&create_put, &takeover, &get]).acquire(&me()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    let text = err.chain();
    for part in ["already running", "other-host", "4242", "run-other", &expires, KEY] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert_eq!(takeover.num_calls(), 0, "a live lease is never overwritten");
    assert_eq!(create_put.num_calls(), 1);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_if_match_its_etag() {
    let expired = other(-5);
    let create_put = mock!(Client::put_object)
        .match_requests(create)
        .sequence()
        .http_status(412, Some(precondition_failed()))
        .build();
    let takeover = mock!(Client::put_object)
        .match_requests(|r| {
            r.if_match() == Some("\"old\"") && r.if_none_match().is_none() && body(r).host == "here"
        })
        .then_output(|| PutObjectOutput::builder().e_tag("\"new\"").build());
    let get = mock!(Client::get_object).then_output(move || object(&expired, "\"old\""));
    let lease = store(&[&create_put, &takeover, &get]).acquire(&me()).await.unwrap();
    assert_eq!(takeover.num_calls(), 1);
    let previous = lease.previous().expect("the expired record");
    assert_eq!(previous.host, "other-host");
    assert_eq!(previous.run_id, "run-other");
    assert_eq!(lease.record().run_id, "run-mine");
}

#[tokio::test]
async fn losing_a_takeover_race_reads_and_names_the_winner() {
    let expired = other(-5);
    let mut winner = other(600);
    winner.host = "winner-host".into();
    let create_put = mock!(Client::put_object)
        .match_requests(create)
        .sequence()
        .http_status(412, Some(precondition_failed()))
        .times(2)
        .build();
    let takeover = mock!(Client::put_object)
        .match_requests(|r| r.if_match() == Some("\"old\""))
        .sequence()
        .http_status(412, Some(precondition_failed()))
        .build();
    let get = mock!(Client::get_object)
        .sequence()
        .output(move || object(&expired, "\"old\""))
        .output(move || object(&winner, "\"won\""))
        .build();
    let err = store(&[&create_put, &takeover, &get]).acquire(&me()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    assert!(err.chain().contains("winner-host"), "{}", err.chain());
    assert_eq!(takeover.num_calls(), 1);
    assert_eq!(get.num_calls(), 2);
}

#[tokio::test]
async fn our_own_create_seen_after_a_retry_is_ours() {
    // The SDK retried a create that had gone through: the retry's 412 finds
    // this very run's record.
    let create_put = mock!(Client::put_object)
        .match_requests(create)
        .sequence()
        .http_status(412, Some(precondition_failed()))
        .build();
    let mut mine = other(600);
    (mine.host, mine.pid, mine.run_id) = ("here".into(), 7, "run-mine".into());
    let get = mock!(Client::get_object).then_output(move || object(&mine, "\"mine\""));
    let lease = store(&[&create_put, &get]).acquire(&me()).await.unwrap();
    assert!(lease.previous().is_none());
    assert_eq!(lease.record().host, "here");
}

#[tokio::test]
async fn renew_and_release_write_with_if_match_the_latest_etag() {
    let created = mock!(Client::put_object)
        .match_requests(create)
        .then_output(|| PutObjectOutput::builder().e_tag("\"e1\"").build());
    let renew = mock!(Client::put_object)
        .match_requests(|r| r.if_match() == Some("\"e1\"") && body(r).released.is_none())
        .then_output(|| PutObjectOutput::builder().e_tag("\"e2\"").build());
    let release = mock!(Client::put_object)
        .match_requests(|r| {
            let b = body(r);
            r.if_match() == Some("\"e2\"")
                && b.released.is_some()
                && b.expired_at(SystemTime::now() + Duration::from_secs(1))
        })
        .then_output(|| PutObjectOutput::builder().e_tag("\"e3\"").build());
    let mut lease = store(&[&created, &renew, &release]).acquire(&me()).await.unwrap();
    let before = lease.record().started.clone();
    lease.renew().await.unwrap();
    assert_eq!(lease.record().started, before, "renewal keeps the start");
    lease.release().await.unwrap();
    assert_eq!((created.num_calls(), renew.num_calls(), release.num_calls()), (1, 1, 1));
}

#[tokio::test]
async fn a_renewal_refused_with_412_is_a_lost_lease() {
    let created = mock!(Client::put_object)
        .match_requests(create)
        .then_output(|| PutObjectOutput::builder().e_tag("\"e1\"").build());
    let renew = mock!(Client::put_object)
        .match_requests(|r| r.if_match() == Some("\"e1\""))
        .sequence()
        .http_status(412, Some(precondition_failed()))
        .build();
    let mut thief = other(600);
    thief.host = "thief-host".into();
    let get = mock!(Client::get_object).then_output(move || object(&thief, "\"t\""));
    let mut lease = store(&[&created, &renew, &get]).acquire(&me()).await.unwrap();
    let err = lease.renew().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    assert!(err.chain().contains("lost the lease"), "{}", err.chain());
    assert!(err.chain().contains("thief-host"), "{}", err.chain());
}

#[tokio::test]
async fn keep_alive_renews_in_the_background_then_releases() {
    let created = mock!(Client::put_object)
        .match_requests(create)
        .then_output(|| PutObjectOutput::builder().e_tag("\"e1\"").build());
    let renew = mock!(Client::put_object)
        .match_requests(|r| {
            matches!(r.if_match(), Some("\"e1\"" | "\"e2\"")) && body(r).released.is_none()
        })
        .then_output(|| PutObjectOutput::builder().e_tag("\"e2\"").build());
    let release = mock!(Client::put_object)
        .match_requests(|r| r.if_match() == Some("\"e2\"") && body(r).released.is_some())
        .then_output(|| PutObjectOutput::builder().e_tag("\"e3\"").build());
    let lease = store(&[&created, &renew, &release])
        .with_ttl(Duration::from_millis(150))
        .acquire(&me())
        .await
        .unwrap();
    let job = CancellationToken::new();
    let guard = lease.keep_alive(job.clone());
    // Wait (no deadline asserted) until the task has renewed twice.
    while renew.num_calls() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!guard.is_lost());
    guard.release().await.unwrap();
    assert_eq!(release.num_calls(), 1);
    assert!(!job.is_cancelled(), "a kept lease never cancels the job");
}

#[tokio::test]
async fn keep_alive_cancels_the_job_when_the_lease_is_lost() {
    let created = mock!(Client::put_object)
        .match_requests(create)
        .then_output(|| PutObjectOutput::builder().e_tag("\"e1\"").build());
    let renew = mock!(Client::put_object)
        .match_requests(|r| r.if_match().is_some())
        .sequence()
        .http_status(412, Some(precondition_failed()))
        .build();
    let thief = other(600);
    let get = mock!(Client::get_object).then_output(move || object(&thief, "\"t\""));
    let lease = store(&[&created, &renew, &get])
        .with_ttl(Duration::from_millis(60))
        .acquire(&me())
        .await
        .unwrap();
    let job = CancellationToken::new();
    let guard = lease.keep_alive(job.clone());
    job.cancelled().await;
    let err = guard.release().await.unwrap_err();
    assert!(err.chain().contains("lost the lease"), "{}", err.chain());
    assert_eq!(renew.num_calls(), 1, "released: nothing written after the loss");
}

#[tokio::test]
async fn an_unreadable_lease_object_is_an_error_telling_what_to_do() {
    let create_put = mock!(Client::put_object)
        .match_requests(create)
        .sequence()
        .http_status(412, Some(precondition_failed()))
        .build();
    let get = mock!(Client::get_object).then_output(|| {
        GetObjectOutput::builder().e_tag("\"x\"").body(ByteStream::from_static(b"not json")).build()
    });
    let err = store(&[&create_put, &get]).acquire(&me()).await.unwrap_err();
    assert!(err.chain().contains("not an escrow-sync lease"), "{}", err.chain());
}
