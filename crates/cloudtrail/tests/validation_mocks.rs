//! Validation of synthetic trails (log files and hourly digests signed
//! with a test RSA key, `escrow_sync_cloudtrail::synthetic`), with
//! CloudTrail's public keys served through a mock of `ListPublicKeys`
//! (the emulator has no CloudTrail public keys and writes no trail files).
//! The store is in memory, with versions like the escrow bucket's; the
//! emulator suite (tests/cloudtrail_escrow.rs) runs the same checks on a
//! bucket copied by a run.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_cloudtrail::Client;
use aws_sdk_cloudtrail::operation::list_public_keys::ListPublicKeysOutput;
use aws_sdk_cloudtrail::types::PublicKey as SdkKey;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_types::{Blob, DateTime};

use escrow_sync_cloudtrail::synthetic::{MemoryStore, SyntheticFile, SyntheticTrail, gzip};
use escrow_sync_cloudtrail::{
    Digest, FindingKind, Keyring, ListPublicKeys, Location, Options, Validation, gunzip,
    time::parse_rfc3339, validate,
};

const BUCKET: &str = "primary-trail-logs";
const START: &str = "2026-11-01T10:00:00Z";

/// The in-memory versioned store of `synthetic`, holding `BUCKET`.
type Memory = MemoryStore;

fn trail() -> &'static SyntheticTrail {
    static T: std::sync::OnceLock<SyntheticTrail> = std::sync::OnceLock::new();
    T.get_or_init(|| SyntheticTrail::new("111111111111", "us-east-1", "main", BUCKET, "audit/"))
}

/// Four hours, three log files an hour, stored.
fn stored() -> (Memory, Vec<SyntheticFile>) {
    stored_hours(4)
}

/// `hours` hours, three log files an hour, stored.
fn stored_hours(hours: usize) -> (Memory, Vec<SyntheticFile>) {
    let mem = Memory::new(BUCKET);
    let files = trail().hours(parse_rfc3339(START).unwrap(), hours, 3);
    for f in &files {
        mem.put(f);
    }
    (mem, files)
}

fn location() -> Location {
    Location {
        bucket: BUCKET.into(),
        key_prefix: "audit".into(),
        trails: vec!["main".into()],
        unvalidated_trails: vec![],
    }
}

/// CloudTrail's keys as `ListPublicKeys` serves them: a decoy on the first
/// page, the trail's key on the second.
fn cloudtrail() -> Client {
    let key = trail().public_key();
    let first = mock!(Client::list_public_keys)
        .match_requests(|r| {
            r.next_token().is_none() && r.start_time().is_some() && r.end_time().is_some()
        })
        .then_output(|| {
            ListPublicKeysOutput::builder()
                .public_key_list(
                    SdkKey::builder().fingerprint("decoy").value(Blob::new(vec![1, 2, 3])).build(),
                )
                .next_token("page-2")
                .build()
        });
    let second = mock!(Client::list_public_keys)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(move || {
            ListPublicKeysOutput::builder()
                .public_key_list(
                    SdkKey::builder()
                        .fingerprint(key.fingerprint.clone())
                        .value(Blob::new(key.der.clone()))
                        .validity_start_time(DateTime::from_secs(0))
                        .validity_end_time(DateTime::from_secs(4_000_000_000))
                        .build(),
                )
                .build()
        });
    mock_client!(aws_sdk_cloudtrail, RuleMode::MatchAny, [&first, &second])
}

#[tokio::test]
async fn keys_are_fetched_page_by_page() {
    let start = UNIX_EPOCH + Duration::from_secs(parse_rfc3339(START).unwrap() as u64);
    let ring = Keyring::fetch(&cloudtrail(), start, start + Duration::from_secs(86_400)).await;
    let fps: Vec<_> = ring.unwrap().keys().iter().map(|k| k.fingerprint.clone()).collect();
    assert_eq!(fps, vec!["decoy".to_string(), trail().fingerprint().to_string()]);
}

async fn check(mem: &Memory, options: Options) -> Validation {
    // The keys of the digests' region, asked of ListPublicKeys.
    let keys = ListPublicKeys::new(|region: &str| {
        assert_eq!(region, "us-east-1");
        cloudtrail()
    });
    let mut v = validate(mem, &keys, &location(), options).await.unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn kinds(v: &Validation) -> Vec<FindingKind> {
    v.findings.iter().map(|f| f.kind).collect()
}

fn digest_of(f: &SyntheticFile) -> Digest {
    serde_json::from_slice(&gunzip(&f.body).unwrap()).unwrap()
}

fn digests(files: &[SyntheticFile]) -> Vec<&SyntheticFile> {
    files.iter().filter(|f| f.key.contains("CloudTrail-Digest")).collect()
}

#[tokio::test]
async fn an_untouched_trail_validates() {
    let (mem, _) = stored();
    let v = check(&mem, Options::default()).await;
    assert_eq!(v.findings, vec![], "{v:#?}");
    assert_eq!((v.digests, v.log_files), (4, 12));
    assert_eq!(v.covered_from.as_deref(), Some(START));
    assert_eq!(v.covered_to.as_deref(), Some("2026-11-01T14:00:00Z"));
    assert!(v.notes.iter().any(|n| n.contains("the chain starts at")), "{:?}", v.notes);
}

#[tokio::test]
async fn a_modified_log_file_is_caught_with_its_time_range_and_the_original() {
    let (mem, files) = stored();
    let log = files.iter().find(|f| f.key.contains("/CloudTrail/")).unwrap();
    let mut text = String::from_utf8(gunzip(&log.body).unwrap()).unwrap();
    text = text.replace("PutObject", "GetObject");
    mem.put(&SyntheticFile { body: gzip(text.as_bytes()), ..log.clone() });
    let v = check(&mem, Options::default()).await;
    assert_eq!(kinds(&v), vec![FindingKind::LogAltered], "{v:#?}");
    let f = &v.findings[0];
    assert_eq!(f.key, format!("s3://{BUCKET}/{}", log.key));
    assert_eq!((f.from.as_str(), f.to.as_str()), ("2026-11-01T10:14:30Z", "2026-11-01T10:14:30Z"));
    assert!(f.detail.contains("still holds the original as version v0"), "{}", f.detail);
}

#[tokio::test]
async fn a_deleted_log_file_is_caught() {
    let (mem, files) = stored();
    let log = files.iter().filter(|f| f.key.contains("/CloudTrail/")).nth(4).unwrap();
    mem.delete(&log.key);
    let v = check(&mem, Options::default()).await;
    assert_eq!(kinds(&v), vec![FindingKind::LogMissing], "{v:#?}");
    assert!(v.findings[0].from.starts_with("2026-11-01T11:"), "{v:#?}");
    assert!(v.findings[0].detail.contains("still holds the original"), "{v:#?}");
}

#[tokio::test]
async fn a_forged_digest_is_caught() {
    // Altered content under the old signature: a log entry dropped to hide it.
    let (mem, files) = stored();
    let d = digests(&files)[1];
    let mut digest = digest_of(d);
    let hidden = digest.log_files.remove(0);
    let body = gzip(&serde_json::to_vec(&digest).unwrap());
    mem.put(&SyntheticFile { body, ..d.clone() });
    let v = check(&mem, Options::default()).await;
    let k = kinds(&v);
    assert!(k.contains(&FindingKind::DigestInvalidSignature), "{v:#?}");
    // The next digest chains to the original's hash, so nothing proves the
    // forged one: every log file of its hour is unsigned, the hidden one
    // among them.
    assert!(k.contains(&FindingKind::ChainBroken), "{v:#?}");
    let unsigned: Vec<_> =
        v.findings.iter().filter(|f| f.kind == FindingKind::LogUnsigned).collect();
    assert_eq!(unsigned.len(), 3, "{v:#?}");
    assert!(unsigned.iter().any(|f| f.key.ends_with(&hidden.s3_object)), "{v:#?}");
    assert_eq!((v.digests, v.log_files), (3, 9), "{v:#?}");
    let forged = v.findings.iter().find(|f| f.kind == FindingKind::DigestInvalidSignature).unwrap();
    assert_eq!(
        (forged.from.as_str(), forged.to.as_str()),
        ("2026-11-01T11:00:00Z", "2026-11-01T12:00:00Z")
    );

    // Signed by a key CloudTrail does not have.
    let (mem, files) = stored();
    let forger = SyntheticTrail::new("111111111111", "us-east-1", "main", BUCKET, "audit/");
    let d = digests(&files)[2];
    let mut digest = digest_of(d);
    digest.digest_public_key_fingerprint = forger.fingerprint().to_string();
    mem.put(&forger.digest_file(&digest));
    let v = check(&mem, Options::default()).await;
    assert!(kinds(&v).contains(&FindingKind::DigestUnsigned), "{v:#?}");

    // No signature at all.
    let (mem, files) = stored();
    let d = digests(&files)[0];
    mem.put(&SyntheticFile { metadata: BTreeMap::new(), ..d.clone() });
    let v = check(&mem, Options::default()).await;
    assert_eq!(kinds(&v), vec![FindingKind::DigestUnsigned], "{v:#?}");
}

#[tokio::test]
async fn a_broken_chain_is_caught() {
    // A digest deleted: a gap, and its hour's log files unsigned.
    let (mem, files) = stored_hours(6);
    let d = digests(&files)[2];
    mem.delete(&d.key);
    let v = check(&mem, Options::default()).await;
    let gap: Vec<_> = v.findings.iter().filter(|f| f.kind == FindingKind::DigestMissing).collect();
    assert_eq!(gap.len(), 1, "{v:#?}");
    assert_eq!(
        (gap[0].from.as_str(), gap[0].to.as_str()),
        ("2026-11-01T12:00:00Z", "2026-11-01T13:00:00Z")
    );
    assert_eq!(v.findings.iter().filter(|f| f.kind == FindingKind::LogUnsigned).count(), 3);
    assert!(gap[0].detail.contains("escrow still holds"), "{}", gap[0].detail);

    // Two in a row: one gap over both hours, from the last digest before.
    mem.delete(&digests(&files)[3].key);
    let v = check(&mem, Options::default()).await;
    let gap: Vec<_> = v.findings.iter().filter(|f| f.kind == FindingKind::DigestMissing).collect();
    assert_eq!(gap.len(), 1, "{v:#?}");
    assert_eq!(
        (gap[0].from.as_str(), gap[0].to.as_str()),
        ("2026-11-01T12:00:00Z", "2026-11-01T14:00:00Z")
    );

    // A validly signed digest that chains to another predecessor: the
    // chain breaks on both sides of it.
    let (mem, files) = stored();
    let d = digests(&files)[1];
    let mut digest = digest_of(d);
    digest.previous_digest_signature = Some("00".repeat(256));
    mem.put(&trail().digest_file(&digest));
    let v = check(&mem, Options::default()).await;
    let broken: Vec<_> = v.findings.iter().filter(|f| f.kind == FindingKind::ChainBroken).collect();
    assert_eq!(broken.len(), 2, "{v:#?}");
    assert!(!kinds(&v).contains(&FindingKind::DigestInvalidSignature), "{v:#?}");
}

#[tokio::test]
async fn a_log_file_added_after_delivery_is_unsigned() {
    let (mem, _) = stored();
    let t = parse_rfc3339("2026-11-01T11:30:00Z").unwrap();
    mem.put(&SyntheticFile {
        key: trail().log_key(t, "planted"),
        body: gzip(b"{\"Records\":[]}"),
        metadata: BTreeMap::new(),
    });
    // One written in the last hour is too recent to judge.
    mem.put(&SyntheticFile {
        key: trail().log_key(parse_rfc3339("2026-11-01T13:30:00Z").unwrap(), "recent"),
        body: gzip(b"{\"Records\":[]}"),
        metadata: BTreeMap::new(),
    });
    let v = check(&mem, Options::default()).await;
    assert_eq!(kinds(&v), vec![FindingKind::LogUnsigned], "{v:#?}");
    assert!(v.findings[0].key.contains("planted"));
    assert_eq!(v.findings[0].from, "2026-11-01T11:30:00Z");
    assert!(v.notes.iter().any(|n| n.contains("1 log file(s) are too recent")), "{:?}", v.notes);
}

#[tokio::test]
async fn the_oldest_digest_gone_is_a_gap_only_after_since() {
    let (mem, files) = stored();
    mem.delete(&digests(&files)[0].key);
    // Without `since`, the oldest digest escrow holds starts the chain; its
    // hour's log files predate the chain and are not judged.
    let v = check(&mem, Options::default()).await;
    assert_eq!(v.findings, vec![], "{v:#?}");
    assert!(
        v.notes.iter().any(|n| n.contains("older than what escrow must hold")),
        "{:?}",
        v.notes
    );
    let since = parse_rfc3339(START).unwrap();
    let v = check(&mem, Options { since: Some(since), now: None }).await;
    assert_eq!(kinds(&v), vec![FindingKind::DigestMissing], "{v:#?}");
    assert_eq!(v.findings[0].from, START);
    // Untouched, `since` changes nothing.
    let (mem, _) = stored();
    assert_eq!(check(&mem, Options { since: Some(since), now: None }).await.findings, vec![]);
    let _ = mem.current(&digests(&files)[0].key);
}

#[tokio::test]
async fn a_chain_that_stops_early_is_a_gap_up_to_now() {
    let (mem, _) = stored();
    let now = parse_rfc3339("2026-11-01T19:00:00Z").unwrap();
    let v = check(&mem, Options { since: None, now: Some(now) }).await;
    assert_eq!(kinds(&v), vec![FindingKind::DigestMissing], "{v:#?}");
    let f = &v.findings[0];
    assert_eq!((f.from.as_str(), f.to.as_str()), ("2026-11-01T14:00:00Z", "2026-11-01T19:00:00Z"));
    assert!(f.key.ends_with("/CloudTrail-Digest/us-east-1/"), "{f:?}");
    // Within two hours of the newest digest, nothing is missing yet.
    let soon = parse_rfc3339("2026-11-01T15:30:00Z").unwrap();
    assert_eq!(check(&mem, Options { since: None, now: Some(soon) }).await.findings, vec![]);
}

#[tokio::test]
async fn every_region_of_a_multi_region_trail_is_validated() {
    let (mem, _) = stored();
    let eu = trail().in_region("eu-west-1");
    let eu_files = eu.hours(parse_rfc3339(START).unwrap(), 4, 3);
    for f in &eu_files {
        mem.put(f);
    }
    let keys = Keyring::new(vec![trail().public_key(), eu.public_key()]);
    let v = validate(&mem, &keys, &location(), Options::default()).await.unwrap().remove(0);
    assert_eq!(v.findings, vec![], "{v:#?}");
    assert_eq!((v.digests, v.log_files), (8, 24), "both regions' chains: {v:#?}");
    // A region whose digests are all gone: its log files are unproven.
    for f in digests(&eu_files) {
        mem.delete(&f.key);
    }
    let v = validate(&mem, &keys, &location(), Options::default()).await.unwrap().remove(0);
    assert_eq!(kinds(&v), vec![FindingKind::LogUnsigned], "{v:#?}");
    assert!(v.findings[0].key.ends_with("/CloudTrail/eu-west-1/"), "{v:#?}");
    assert!(v.findings[0].detail.starts_with("12 log file(s)"), "{v:#?}");
}

#[tokio::test]
async fn a_restarted_chain_warns_and_an_unvalidated_trail_silences_unsigned_logs() {
    let (mem, _) = stored_hours(2);
    // Logging stopped for an hour: the next chain starts afresh.
    for f in trail().hours(parse_rfc3339("2026-11-01T13:00:00Z").unwrap(), 4, 3) {
        mem.put(&f);
    }
    let v = check(&mem, Options::default()).await;
    assert_eq!(v.findings, vec![], "{v:#?}");
    assert!(
        v.warnings.iter().any(|w| w.contains("restarts") && w.contains("2026-11-01T12:00:00Z")),
        "{v:#?}"
    );
    mem.put(&SyntheticFile {
        key: trail().log_key(parse_rfc3339("2026-11-01T14:10:00Z").unwrap(), "other"),
        body: gzip(b"{\"Records\":[]}"),
        metadata: BTreeMap::new(),
    });
    assert_eq!(kinds(&check(&mem, Options::default()).await), vec![FindingKind::LogUnsigned]);
    let mut loc = location();
    loc.unvalidated_trails = vec!["legacy".into()];
    let keys = Keyring::new(vec![trail().public_key()]);
    let v = validate(&mem, &keys, &loc, Options::default()).await.unwrap().remove(0);
    assert_eq!(v.findings, vec![], "{v:#?}");
    assert!(v.warnings.iter().any(|w| w.contains("legacy")), "{v:#?}");
}

#[tokio::test]
async fn an_oversized_or_malformed_file_in_escrow_is_a_finding_not_a_crash() {
    use escrow_sync_cloudtrail::MAX_STORED_BYTES;

    // A log file replaced by an object over the cap (the store read only
    // the cap and one byte): reported, not read, the original named.
    let (mem, files) = stored();
    let logs: Vec<&SyntheticFile> =
        files.iter().filter(|f| f.key.contains("/CloudTrail/")).collect();
    let huge = vec![b'x'; MAX_STORED_BYTES as usize + 1];
    mem.put(&SyntheticFile { body: huge.clone(), ..logs[0].clone() });
    // Another replaced by bytes that are not gzip at all, a third by a
    // truncated gzip.
    mem.put(&SyntheticFile { body: b"\x1f\x8b not really gzip".to_vec(), ..logs[1].clone() });
    let mut cut = logs[2].body.clone();
    cut.truncate(cut.len() / 2);
    mem.put(&SyntheticFile { body: cut, ..logs[2].clone() });
    let v = check(&mem, Options::default()).await;
    assert_eq!(kinds(&v), vec![FindingKind::LogAltered; 3], "{v:#?}");
    let detail = |key: &str| {
        v.findings.iter().find(|f| f.key.ends_with(key)).map(|f| f.detail.clone()).unwrap()
    };
    let big = detail(&logs[0].key);
    assert!(big.contains("larger than 64 MiB") && big.contains("not read"), "{big}");
    assert!(big.contains("still holds the original"), "{big}");
    assert!(detail(&logs[1].key).contains("not readable as gzip"), "{v:#?}");
    assert!(detail(&logs[2].key).contains("not readable as gzip"), "{v:#?}");

    // A digest over the cap is no digest: its signature cannot be checked.
    let (mem, files) = stored();
    let d = digests(&files)[1];
    mem.put(&SyntheticFile { body: huge, ..d.clone() });
    let v = check(&mem, Options::default()).await;
    let f = v
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::DigestInvalidSignature)
        .unwrap_or_else(|| panic!("{v:#?}"));
    assert!(f.detail.contains("not a digest file (larger than 64 MiB"), "{}", f.detail);
}
