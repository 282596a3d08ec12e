//! The forensic timeline (`trail events`) over synthetic signed trails
//! holding a scripted intrusion, in an in-memory versioned store like the
//! escrow bucket; the CLI suite (tests/cloudtrail_escrow.rs) reads the same
//! from a bucket a run copied.

use escrow_sync_cloudtrail::synthetic::{
    INTRUDER_IP, MemoryStore, SyntheticFile, SyntheticTrail, gzip, intrusion,
};
use escrow_sync_cloudtrail::time::{parse_rfc3339, rfc3339};
use escrow_sync_cloudtrail::{EventQuery, Keyring, TimelineEvent, TimelineSummary, timeline};

const BUCKET: &str = "primary-trail-logs";
const ACCOUNT: &str = "111111111111";

fn trail() -> &'static SyntheticTrail {
    static T: std::sync::OnceLock<SyntheticTrail> = std::sync::OnceLock::new();
    T.get_or_init(|| SyntheticTrail::new(ACCOUNT, "us-east-1", "main", BUCKET, "audit/"))
}

/// `hours` hours from `start`, three log files an hour; the first file of
/// hour 2 holds the intrusion, the others the team's ordinary writes.
fn files(start: &str, hours: usize) -> Vec<SyntheticFile> {
    trail().hours_with(parse_rfc3339(start).unwrap(), hours, 3, |h, i, at| {
        if (h, i) == (2, 0) {
            intrusion(ACCOUNT, at - 1200)
        } else {
            vec![serde_json::json!({
                "eventTime": rfc3339(at - 30), "eventSource": "s3.amazonaws.com",
                "eventName": "PutObject", "eventID": format!("put-{h}-{i}"),
                "sourceIPAddress": "198.51.100.10", "recipientAccountId": ACCOUNT,
                "userIdentity": {"type": "AssumedRole",
                    "arn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/deploy/ci")}})]
        }
    })
}

fn store(files: &[SyntheticFile]) -> MemoryStore {
    let mem = MemoryStore::new(BUCKET);
    files.iter().for_each(|f| mem.put(f));
    mem
}

async fn read(mem: &MemoryStore, query: EventQuery) -> (Vec<TimelineEvent>, TimelineSummary) {
    let keys = Keyring::new(vec![trail().public_key()]);
    let mut events = Vec::new();
    let mut sink = |e: TimelineEvent| {
        events.push(e);
        Ok(())
    };
    let roots = vec![(BUCKET.to_string(), "audit".to_string())];
    let summary = timeline(mem, &keys, &roots, &query, &mut sink).await.unwrap();
    (events, summary)
}

fn ids(events: &[TimelineEvent], verified: bool) -> Vec<&str> {
    events.iter().filter(|e| e.verified == verified).map(|e| e.event.event_id.as_str()).collect()
}

#[tokio::test]
async fn the_timeline_finds_exactly_the_intrusion_in_order() {
    let mem = store(&files("2026-11-01T10:00:00Z", 4));
    let (events, summary) = read(&mem, EventQuery::new().destructive(true)).await;
    assert_eq!(ids(&events, true), ["intrusion-2", "intrusion-3", "intrusion-4", "intrusion-5"]);
    assert!(ids(&events, false).is_empty());
    assert_eq!((summary.log_files, summary.verified_files, summary.unverified_files), (12, 12, 0));
    let e = &events[2].event;
    assert_eq!(
        (e.principal.as_str(), e.source_ip.as_str(), e.event_name.as_str()),
        (format!("arn:aws:iam::{ACCOUNT}:user/admin").as_str(), INTRUDER_IP, "DeleteBucket")
    );
    assert_eq!(e.resources, ["bucketName=prod-data"]);

    let intruder = ["intrusion-1", "intrusion-2", "intrusion-3", "intrusion-4", "intrusion-5"];
    let by_ip = EventQuery::new().source_ip(&format!("{INTRUDER_IP}/32")).unwrap();
    assert_eq!(ids(&read(&mem, by_ip).await.0, true), intruder);
    let by_user = EventQuery::new().principal("arn:aws:iam::*:user/admin").unwrap();
    assert_eq!(ids(&read(&mem, by_user).await.0, true), intruder);
    let by_role = EventQuery::new().principal("arn:aws:iam::*:role/deploy").unwrap();
    assert!(ids(&read(&mem, by_role).await.0, true).contains(&"team-2"));
    let stop = EventQuery::new().event_name("Stop*").unwrap();
    assert_eq!(ids(&read(&mem, stop).await.0, true), ["intrusion-3"]);
    // A time window: the intrusion's first minutes only.
    let at = events[0].event.epoch - 120;
    let window = EventQuery::new().from(at - 1).to(at + 250).destructive(true);
    assert_eq!(ids(&read(&mem, window).await.0, true), ["intrusion-2", "intrusion-3"]);
}

#[tokio::test]
async fn a_day_boundary_loses_nothing() {
    // Files written before midnight are signed by a digest of the next day.
    let mem = store(&files("2026-11-01T22:00:00Z", 4));
    let (events, summary) = read(&mem, EventQuery::new()).await;
    assert_eq!((summary.days, summary.verified_files, summary.unverified_files), (2, 12, 0));
    assert!(events.iter().all(|e| e.verified));
    let times: Vec<i64> = events.iter().map(|e| e.event.epoch).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
}

#[tokio::test]
async fn tampered_planted_and_forged_files_are_marked_unverified() {
    let all = files("2026-11-01T10:00:00Z", 4);
    let log = all.iter().find(|f| f.key.contains("/CloudTrail/")).unwrap().key.clone();
    let hour_two: Vec<&SyntheticFile> =
        all.iter().filter(|f| f.key.contains("/CloudTrail/") && f.key.contains("T12")).collect();
    let intrusion_log = hour_two[0].key.clone();

    // The intruder rewrites the log of the intrusion without it, and
    // plants a file no digest lists; escrow, versioned, keeps the original.
    let mem = store(&all);
    let cleaned = serde_json::json!({"Records": [{"eventTime": "2026-11-01T12:00:00Z",
        "eventSource": "s3.amazonaws.com", "eventName": "DeleteObject", "eventID": "rewritten",
        "recipientAccountId": ACCOUNT}]});
    mem.put(&SyntheticFile {
        key: intrusion_log.clone(),
        body: gzip(cleaned.to_string().as_bytes()),
        metadata: Default::default(),
    });
    let planted_key = trail().log_key(parse_rfc3339("2026-11-01T11:30:00Z").unwrap(), "planted");
    let planted = serde_json::json!({"Records": [{"eventTime": "2026-11-01T11:29:00Z",
        "eventSource": "s3.amazonaws.com", "eventName": "DeleteBucket", "eventID": "planted",
        "recipientAccountId": ACCOUNT}]});
    mem.put(&SyntheticFile {
        key: planted_key,
        body: gzip(planted.to_string().as_bytes()),
        metadata: Default::default(),
    });
    let (events, summary) = read(&mem, EventQuery::new().destructive(true)).await;
    // The original's events are proven, from escrow's earlier version.
    assert_eq!(ids(&events, true), ["intrusion-2", "intrusion-3", "intrusion-4", "intrusion-5"]);
    let first = events.iter().find(|e| e.verified).unwrap();
    assert!(first.log_file.ends_with("?versionId=v0"), "{}", first.log_file);
    let mut unverified: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| !e.verified)
        .map(|e| (e.event.event_id.as_str(), e.problem.as_ref().unwrap().kind))
        .collect();
    unverified.sort();
    assert_eq!(unverified, [("planted", "log-unsigned"), ("rewritten", "log-altered")]);
    assert_eq!(summary.unverified_files, 2);
    assert!(summary.problems.iter().any(|(f, k, d)| f.ends_with(&intrusion_log)
        && k == "log-altered"
        && d.contains("original as version v0")));

    // Without the original (escrow holds only the altered file), the
    // intrusion's events are nowhere among the proven ones.
    let only_altered = MemoryStore::new(BUCKET);
    for f in all.iter().filter(|f| f.key != intrusion_log) {
        only_altered.put(f);
    }
    only_altered.put(&SyntheticFile {
        key: intrusion_log.clone(),
        body: gzip(cleaned.to_string().as_bytes()),
        metadata: Default::default(),
    });
    let (events, summary) = read(&only_altered, EventQuery::new()).await;
    assert!(events.iter().all(|e| !e.event.event_id.starts_with("intrusion")));
    assert_eq!(ids(&events, false), ["rewritten"]);
    assert_eq!(summary.unverified_files, 1);
    assert!(!summary.problems[0].2.contains("original"), "{:?}", summary.problems);

    // A digest re-signed with another key proves nothing it lists.
    let forger = SyntheticTrail::new(ACCOUNT, "us-east-1", "main", BUCKET, "audit/");
    let forged = MemoryStore::new(BUCKET);
    for f in &all {
        if f.key.contains("CloudTrail-Digest") {
            let content = escrow_sync_cloudtrail::gunzip(&f.body).unwrap();
            let mut digest: escrow_sync_cloudtrail::Digest =
                serde_json::from_slice(&content).unwrap();
            digest.digest_public_key_fingerprint = forger.fingerprint().to_string();
            forged.put(&forger.digest_file(&digest));
        } else {
            forged.put(f);
        }
    }
    let (events, summary) = read(&forged, EventQuery::new()).await;
    assert_eq!((summary.verified_files, summary.unverified_files), (0, 12));
    assert!(events.iter().all(|e| !e.verified
        && e.problem.as_ref().is_some_and(|p| p.kind == "digest-unsigned")));
    assert!(log.contains("/CloudTrail/"));
}

/// A store that counts the log files of one day folder read so far.
struct Counting {
    inner: MemoryStore,
    day: &'static str,
    read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl escrow_sync_cloudtrail::TrailStore for Counting {
    async fn list(&self, b: &str, p: &str) -> escrow_sync_core::Result<Vec<String>> {
        self.inner.list(b, p).await
    }
    async fn get(
        &self,
        b: &str,
        k: &str,
    ) -> escrow_sync_core::Result<Option<escrow_sync_cloudtrail::StoredObject>> {
        if k.contains("/CloudTrail/") && k.contains(self.day) {
            self.read.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.get(b, k).await
    }
    fn location(&self, b: &str, k: &str) -> String {
        self.inner.location(b, k)
    }
}

#[tokio::test]
async fn a_day_is_handed_over_before_the_next_day_is_read() {
    // Three days of files: the first day's events reach the sink before
    // any log file of the last day is read (memory holds one day).
    let mem = store(&trail().hours(parse_rfc3339("2026-11-01T20:00:00Z").unwrap(), 30, 1));
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = Counting { inner: mem, day: "/2026/11/03/", read: read.clone() };
    let keys = Keyring::new(vec![trail().public_key()]);
    let mut seen = Vec::new();
    let mut sink = |e: TimelineEvent| {
        seen.push((e.event.time.clone(), read.load(std::sync::atomic::Ordering::SeqCst)));
        Ok(())
    };
    let roots = vec![(BUCKET.to_string(), "audit".to_string())];
    let summary = timeline(&counting, &keys, &roots, &EventQuery::new(), &mut sink).await.unwrap();
    assert_eq!((summary.days, summary.verified_files), (3, 30));
    let first_day: Vec<_> = seen.iter().filter(|(t, _)| t.starts_with("2026-11-01")).collect();
    assert_eq!(first_day.len(), 4);
    assert!(first_day.iter().all(|(_, n)| *n == 0), "{seen:?}");
    assert!(seen.last().unwrap().1 > 0);
}

/// The intrusion's log file and the digest that lists it.
fn intrusion_files(all: &[SyntheticFile]) -> (SyntheticFile, SyntheticFile) {
    let log = all
        .iter()
        .find(|f| f.key.contains("/CloudTrail/") && f.key.contains("T12"))
        .unwrap()
        .clone();
    let digest = all
        .iter()
        .find(|f| {
            f.key.contains("CloudTrail-Digest")
                && escrow_sync_cloudtrail::gunzip(&f.body)
                    .map(|c| String::from_utf8_lossy(&c).contains(&log.key))
                    .unwrap_or(false)
        })
        .unwrap()
        .clone();
    (log, digest)
}

const INTRUSION: [&str; 4] = ["intrusion-2", "intrusion-3", "intrusion-4", "intrusion-5"];

#[tokio::test]
async fn an_overwritten_digest_and_log_are_read_from_escrows_originals() {
    // The intruder copies another hour's genuinely signed digest (and its
    // signature) over the intrusion's digest and rewrites the intrusion's
    // log: escrow copies both as new versions.
    let all = files("2026-11-01T10:00:00Z", 4);
    let (log, digest) = intrusion_files(&all);
    let other = all.iter().find(|f| f.key.contains("CloudTrail-Digest") && f.key != digest.key);
    let mem = store(&all);
    mem.put(&SyntheticFile { key: digest.key.clone(), ..other.unwrap().clone() });
    let empty = serde_json::json!({"Records": []});
    mem.put(&SyntheticFile { body: gzip(empty.to_string().as_bytes()), ..log.clone() });
    let (events, summary) = read(&mem, EventQuery::new().destructive(true)).await;
    assert_eq!(ids(&events, true), INTRUSION, "{summary:?}");
    assert!(summary.problems.iter().any(|(f, k, _)| f.ends_with(&log.key) && k == "log-altered"));
}

#[tokio::test]
async fn delete_markers_hide_nothing_and_a_missing_file_is_counted() {
    // An insider puts delete markers on the intrusion's log and digest.
    let all = files("2026-11-01T10:00:00Z", 4);
    let (log, digest) = intrusion_files(&all);
    let mem = store(&all);
    mem.delete(&log.key);
    mem.delete(&digest.key);
    let (events, summary) = read(&mem, EventQuery::new().destructive(true)).await;
    assert_eq!(ids(&events, true), INTRUSION, "{summary:?}");
    assert_eq!(summary.missing_files, 1, "{summary:?}");
    assert!(summary.problems.iter().any(|(f, k, d)| f.ends_with(&log.key)
        && k == "log-missing"
        && d.contains("delete marker")));

    // A file escrow never got (or lost with every version) is counted too.
    let without = MemoryStore::new(BUCKET);
    all.iter().filter(|f| f.key != log.key).for_each(|f| without.put(f));
    let (events, summary) = read(&without, EventQuery::new().destructive(true)).await;
    assert!(ids(&events, true).is_empty());
    assert_eq!(summary.missing_files, 1);
    assert!(summary.problems.iter().any(|(f, k, _)| f.ends_with(&log.key) && k == "log-missing"));
}

/// CloudTrail's keys for us-east-1 only; any other region fails.
struct OneRegion(Keyring);

#[async_trait::async_trait]
impl escrow_sync_cloudtrail::KeySource for OneRegion {
    async fn keyring(
        &self,
        regions: &std::collections::BTreeSet<String>,
        _: i64,
        _: i64,
    ) -> escrow_sync_core::Result<Keyring> {
        if regions.iter().all(|r| r == "us-east-1") {
            Ok(self.0.clone())
        } else {
            Err(escrow_sync_core::Error::invalid_config("no such region"))
        }
    }
}

#[tokio::test]
async fn planted_region_and_day_folders_do_not_stop_the_timeline() {
    let all = files("2026-11-01T10:00:00Z", 4);
    let mem = store(&all);
    let fake = SyntheticTrail::new(ACCOUNT, "xx-fake-1", "main", BUCKET, "audit/");
    fake.hours(parse_rfc3339("2026-11-01T10:00:00Z").unwrap(), 1, 2)
        .iter()
        .for_each(|f| mem.put(f));
    let bad_day = "audit/AWSLogs/111111111111/CloudTrail/us-east-1/0000/00/00/x.json.gz";
    mem.put(&SyntheticFile { key: bad_day.into(), body: vec![0], metadata: Default::default() });
    let keys = OneRegion(Keyring::new(vec![trail().public_key()]));
    let mut events = Vec::new();
    let mut sink = |e: TimelineEvent| {
        events.push(e);
        Ok(())
    };
    let roots = vec![(BUCKET.to_string(), "audit".to_string())];
    let query = EventQuery::new().destructive(true);
    let summary = timeline(&mem, &keys, &roots, &query, &mut sink).await.unwrap();
    assert_eq!(ids(&events, true), INTRUSION);
    // The planted region's events come unverified, with a warning.
    assert!(events.iter().any(|e| !e.verified && e.event.event_name == "DeleteBucket"));
    assert!(summary.warnings.iter().any(|w| w.contains("xx-fake-1")), "{:?}", summary.warnings);
    assert!(summary.warnings.iter().any(|w| w.contains("0000/00/00")), "{:?}", summary.warnings);
}
