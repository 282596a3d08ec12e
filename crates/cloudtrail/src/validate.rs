//! Validation of a trail's log file integrity chain, on whatever
//! [`TrailStore`] holds its files:
//!
//! - each digest's SHA256withRSA signature, with the public key its
//!   fingerprint names (valid at its time), over the documented string
//!   (which covers its end time, its own name, its content's SHA-256 and the
//!   previous digest's signature);
//! - the chain: each digest's `previousDigestSignature`,
//!   `previousDigestHashValue` and `previousDigestS3Object` against the
//!   digest before it; a digest that is not there is a gap;
//! - each log file a digest lists, by the SHA-256 of its uncompressed
//!   content; a missing one is reported with its events' time range;
//! - log files no digest lists, once a digest later than them exists.
//!
//! When a log file or digest is altered or gone, escrow's earlier versions
//! are searched for the original, and the finding says which one it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use escrow_sync_core::Result;

use crate::digest::{
    Digest, DigestName, LogFileEntry, LogName, SIGNATURE_META, gunzip, sha256_hex,
};
use crate::keys::{KeySource, Keyring, SignatureCheck};
use crate::store::TrailStore;
use crate::time::{parse_rfc3339, rfc3339};

/// How long after a log file is written a digest must list it: one hour
/// of digest period, plus a quarter of an hour for delivery.
const SIGNING_GRACE_SECS: i64 = 75 * 60;

/// How many files are read at once.
const READ_CONCURRENCY: usize = 16;

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A log file a digest lists is not there.
    LogMissing,
    /// A log file's content does not hash to what its digest says.
    LogAltered,
    /// A log file no digest lists, though later digests exist.
    LogUnsigned,
    /// A digest the chain names is not there: nothing proves the log files
    /// of its hour.
    DigestMissing,
    /// A digest has no signature, or one by a key CloudTrail does not list.
    DigestUnsigned,
    /// A digest's signature does not verify: it was altered or forged.
    DigestInvalidSignature,
    /// A digest is not the one the next digest chains to (its signature,
    /// hash or name differ), or it names another place than where it is.
    ChainBroken,
}

impl FindingKind {
    /// The kebab-case name (`log-missing`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::LogMissing => "log-missing",
            FindingKind::LogAltered => "log-altered",
            FindingKind::LogUnsigned => "log-unsigned",
            FindingKind::DigestMissing => "digest-missing",
            FindingKind::DigestUnsigned => "digest-unsigned",
            FindingKind::DigestInvalidSignature => "digest-invalid-signature",
            FindingKind::ChainBroken => "chain-broken",
        }
    }
}

/// One problem, with the time range of events it leaves unproven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrityFinding {
    /// What is wrong.
    pub kind: FindingKind,
    /// The file (`s3://log-bucket/key`, CloudTrail's name).
    pub key: String,
    /// Start of the time range affected (RFC 3339).
    pub from: String,
    /// End of the time range affected (RFC 3339).
    pub to: String,
    /// What was found, and where escrow keeps an original if it does.
    pub detail: String,
}

/// The outcome of validating one trail.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Validation {
    /// The trail.
    pub trail: String,
    /// Digests checked.
    pub digests: u64,
    /// Log files checked against a digest.
    pub log_files: u64,
    /// Start of the time the chain covers (RFC 3339).
    pub covered_from: Option<String>,
    /// End of the time the chain covers (RFC 3339).
    pub covered_to: Option<String>,
    /// Every problem.
    pub findings: Vec<IntegrityFinding>,
    /// What the reader may want to know (where the chain starts, log files
    /// too recent to be signed yet).
    pub notes: Vec<String>,
}

/// Which files to validate: the trails delivering to `bucket` under
/// `key_prefix`.
#[derive(Debug, Clone)]
pub struct Location {
    /// The log bucket.
    pub bucket: String,
    /// The trails' key prefix (without `AWSLogs/`), `""` for none.
    pub key_prefix: String,
    /// The trails to validate (their names in digest file names).
    pub trails: Vec<String>,
    /// Trails delivering here that are not validated: their log files are
    /// not reported as unsigned.
    pub other_trails: Vec<String>,
}

impl Location {
    /// The prefix of everything the trails deliver: `<key_prefix>/AWSLogs/`.
    pub fn root(&self) -> String {
        root(&self.key_prefix)
    }
}

/// `<key_prefix>/AWSLogs/` (no leading slash when there is no prefix).
pub fn root(key_prefix: &str) -> String {
    let p = key_prefix.trim_matches('/');
    if p.is_empty() { "AWSLogs/".to_string() } else { format!("{p}/AWSLogs/") }
}

/// Options of a validation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Digests ending before this (epoch seconds) are not required: a gap
    /// before it is a note, not a finding. Without it, the oldest digest
    /// escrow holds starts the chain.
    pub since: Option<i64>,
    /// "Now" (epoch seconds), for deciding which log files should be signed
    /// by now; default: the newest digest's end.
    pub now: Option<i64>,
}

struct Checked {
    key: String,
    name: DigestName,
    digest: Digest,
    sha: String,
    signature: Option<String>,
}

/// Validates every trail of `location` from the files in `store`.
pub async fn validate(
    store: &dyn TrailStore,
    keys: &dyn KeySource,
    location: &Location,
    options: Options,
) -> Result<Vec<Validation>> {
    let bucket = location.bucket.as_str();
    let listed = store.list(bucket, &location.root()).await?;
    let mut digests: BTreeMap<(String, String, String), Vec<(String, DigestName)>> =
        BTreeMap::new();
    let mut logs: BTreeMap<String, LogName> = BTreeMap::new();
    for key in listed {
        if key.contains("/CloudTrail-Digest/") {
            if let Some(name) = DigestName::parse(&key) {
                digests
                    .entry((name.trail.clone(), name.account.clone(), name.region.clone()))
                    .or_default()
                    .push((key, name));
            }
        } else if key.contains("/CloudTrail/")
            && let Some(name) = LogName::parse(&key)
        {
            logs.insert(key, name);
        }
    }
    let wanted = digests.iter().filter(|((t, ..), _)| location.trails.contains(t));
    let regions: BTreeSet<String> = wanted.clone().map(|((_, _, r), _)| r.clone()).collect();
    let ends = wanted.flat_map(|(_, files)| files.iter().map(|(_, n)| n.end));
    let (from, to) = ends.fold((i64::MAX, i64::MIN), |(f, t), e| (f.min(e - 3600), t.max(e)));
    let keyring = if regions.is_empty() {
        Keyring::default()
    } else {
        keys.keyring(&regions, from, to).await?
    };
    let keyring = &keyring;
    let mut signed: BTreeSet<String> = BTreeSet::new();
    // Newest digest end per (account, region), over every trail here.
    let mut newest_end: HashMap<(String, String), i64> = HashMap::new();
    let mut oldest_start: HashMap<(String, String), i64> = HashMap::new();
    let mut out = Vec::new();
    for trail in &location.trails {
        let mut v = Validation { trail: trail.clone(), ..Validation::default() };
        let chains: Vec<_> = digests.iter().filter(|((t, ..), _)| t == trail).collect();
        if chains.is_empty() {
            v.notes.push(format!(
                "no digest file of trail {trail} under {}: its log files cannot be validated (is \
                 log file validation on?)",
                store.location(bucket, &location.root())
            ));
        }
        for ((_, account, region), files) in chains {
            let mut files = files.clone();
            files.sort_by(|a, b| (a.1.end, &a.0).cmp(&(b.1.end, &b.0)));
            let span = chain(store, keyring, bucket, files, options, &mut v, &mut signed).await?;
            if let Some((from, to)) = span {
                let ar = (account.clone(), region.clone());
                let e = newest_end.entry(ar.clone()).or_insert(to);
                *e = (*e).max(to);
                let e = oldest_start.entry(ar).or_insert(from);
                *e = (*e).min(from);
            }
        }
        out.push(v);
    }
    // Log files no digest lists, written in the covered time and long
    // enough before its end that a digest should list them.
    let mut unsigned: Vec<IntegrityFinding> = Vec::new();
    let mut too_recent = 0u64;
    let others_here = !location.other_trails.is_empty();
    for (key, name) in &logs {
        if signed.contains(key) {
            continue;
        }
        let ar = (name.account.clone(), name.region.clone());
        let (Some(&start), Some(&end)) = (oldest_start.get(&ar), newest_end.get(&ar)) else {
            continue;
        };
        let end = options.now.map_or(end, |now| now.min(end));
        if name.time < start {
            continue;
        }
        if name.time + SIGNING_GRACE_SECS > end {
            too_recent += 1;
            continue;
        }
        if others_here {
            continue;
        }
        unsigned.push(IntegrityFinding {
            kind: FindingKind::LogUnsigned,
            key: format!("s3://{bucket}/{key}"),
            from: rfc3339(name.time),
            to: rfc3339(name.time + 3600),
            detail: format!(
                "no digest lists this log file, though digests cover its time: it was added \
                 after delivery, or its digest was replaced ({})",
                store.location(bucket, key)
            ),
        });
    }
    if let Some(v) = out.first_mut() {
        v.findings.extend(unsigned);
        if too_recent > 0 {
            v.notes.push(format!(
                "{too_recent} log file(s) are too recent for a digest to list them yet"
            ));
        }
        if others_here {
            v.notes.push(format!(
                "trails {} also deliver here: log files no digest lists are not reported",
                location.other_trails.join(", ")
            ));
        }
    }
    for v in &mut out {
        v.findings.sort_by(|a, b| (&a.from, a.kind, &a.key).cmp(&(&b.from, b.kind, &b.key)));
    }
    Ok(out)
}

/// Validates one chain (one trail, account and region), oldest first;
/// returns the time it covers.
async fn chain(
    store: &dyn TrailStore,
    keyring: &Keyring,
    bucket: &str,
    files: Vec<(String, DigestName)>,
    options: Options,
    v: &mut Validation,
    signed: &mut BTreeSet<String>,
) -> Result<Option<(i64, i64)>> {
    let mut span: Option<(i64, i64)> = None;
    let present: BTreeSet<String> = files.iter().map(|(k, _)| k.clone()).collect();
    let mut previous: Option<Checked> = None;
    for (key, name) in files {
        let Some(checked) = check_digest(store, keyring, bucket, &key, name, v).await? else {
            // Unreadable: already reported; the next digest's link to it is
            // then reported too, as it cannot be checked.
            previous = None;
            continue;
        };
        v.digests += 1;
        let d = &checked.digest;
        let start = parse_rfc3339(&d.digest_start_time).unwrap_or(checked.name.end - 3600);
        let end = checked.name.end;
        span = Some(span.map_or((start, end), |(f, t)| (f.min(start), t.max(end))));
        if v.covered_from.as_deref().and_then(parse_rfc3339).is_none_or(|f| start < f) {
            v.covered_from = Some(rfc3339(start));
        }
        if v.covered_to.as_deref().and_then(parse_rfc3339).is_none_or(|t| end > t) {
            v.covered_to = Some(rfc3339(end));
        }
        if !checked.name.backfill {
            link(store, bucket, &checked, previous.as_ref(), &present, options, v).await;
        }
        check_logs(store, &d.log_files, (start, end), v, signed).await?;
        if !checked.name.backfill {
            previous = Some(checked);
        }
    }
    Ok(span)
}

/// Reads, parses and checks the signature of one digest; `None` when it
/// cannot be read as a digest (reported).
async fn check_digest(
    store: &dyn TrailStore,
    keyring: &Keyring,
    bucket: &str,
    key: &str,
    name: DigestName,
    v: &mut Validation,
) -> Result<Option<Checked>> {
    let here = format!("s3://{bucket}/{key}");
    let hour = (rfc3339(name.end - 3600), rfc3339(name.end));
    let finding = |kind, detail: String| IntegrityFinding {
        kind,
        key: here.clone(),
        from: hour.0.clone(),
        to: hour.1.clone(),
        detail,
    };
    let Some(obj) = store.get(bucket, key).await? else {
        v.findings.push(finding(
            FindingKind::DigestMissing,
            format!("listed but gone when read ({})", store.location(bucket, key)),
        ));
        return Ok(None);
    };
    let parsed = gunzip(&obj.body).map_err(|e| e.to_string()).and_then(|c| {
        serde_json::from_slice::<Digest>(&c).map(|d| (c, d)).map_err(|e| e.to_string())
    });
    let (content, digest) = match parsed {
        Ok(p) => p,
        Err(e) => {
            v.findings.push(finding(
                FindingKind::DigestInvalidSignature,
                format!("not a digest file ({e}): altered"),
            ));
            return Ok(None);
        }
    };
    let sha = sha256_hex(&content);
    let signature = obj.metadata.get(SIGNATURE_META).cloned();
    let range = (digest.digest_start_time.clone(), digest.digest_end_time.clone());
    let mut push = |kind, detail: String| {
        v.findings.push(IntegrityFinding {
            kind,
            key: here.clone(),
            from: range.0.clone(),
            to: range.1.clone(),
            detail,
        })
    };
    if digest.digest_s3_bucket != bucket || digest.digest_s3_object != key {
        push(
            FindingKind::ChainBroken,
            format!(
                "the digest names s3://{}/{} but is stored here: moved or forged",
                digest.digest_s3_bucket, digest.digest_s3_object
            ),
        );
    }
    match signature.as_deref().map(hex::decode) {
        None => push(
            FindingKind::DigestUnsigned,
            "no signature metadata (x-amz-meta-signature): nothing proves it".into(),
        ),
        Some(Err(_)) => push(
            FindingKind::DigestInvalidSignature,
            "its signature metadata is not hex: altered".into(),
        ),
        Some(Ok(sig)) => {
            let at = parse_rfc3339(&digest.digest_end_time).unwrap_or(name.end);
            let message = digest.signing_string(&sha);
            match keyring.verify(
                &digest.digest_public_key_fingerprint,
                at,
                message.as_bytes(),
                &sig,
            ) {
                SignatureCheck::Valid => {}
                SignatureCheck::UnknownKey => push(
                    FindingKind::DigestUnsigned,
                    format!(
                        "signed with key {:?}, which CloudTrail's public keys for {} do not \
                         include: forged, or the keys were not fetched for its region",
                        digest.digest_public_key_fingerprint, name.region
                    ),
                ),
                SignatureCheck::Invalid => {
                    let original = original_version(store, bucket, key, None).await?;
                    push(
                        FindingKind::DigestInvalidSignature,
                        format!("its signature does not verify: altered or forged{original}"),
                    )
                }
            }
        }
    }
    Ok(Some(Checked { key: key.to_string(), name, digest, sha, signature }))
}

/// Checks the link from `d` back to the digest before it.
async fn link(
    store: &dyn TrailStore,
    bucket: &str,
    d: &Checked,
    previous: Option<&Checked>,
    present: &BTreeSet<String>,
    options: Options,
    v: &mut Validation,
) {
    let here = format!("s3://{bucket}/{}", d.key);
    let start = d.digest.digest_start_time.clone();
    let Some(prev_key) = d.digest.previous_digest_s3_object.as_deref() else {
        if let Some(p) = previous {
            v.notes.push(format!(
                "the chain restarts at {here}: no digest covers {} to {} (logging was stopped, \
                 or validation turned off)",
                p.digest.digest_end_time, start
            ));
        } else {
            v.notes.push(format!("the chain starts at {here} ({start})"));
        }
        return;
    };
    let prev_bucket = d.digest.previous_digest_s3_bucket.as_deref().unwrap_or(bucket);
    let prev_name = DigestName::parse(prev_key);
    let prev_end = prev_name.as_ref().map(|n| n.end);
    match previous {
        Some(p) if p.key == prev_key && prev_bucket == bucket => {
            let mut wrong = Vec::new();
            // An unsigned predecessor is reported as such; its link is only
            // checked by hash.
            if p.signature.is_some() && d.digest.previous_digest_signature != p.signature {
                wrong.push("signature");
            }
            if d.digest.previous_digest_hash_value.as_deref() != Some(p.sha.as_str()) {
                wrong.push("SHA-256");
            }
            if !wrong.is_empty() {
                v.findings.push(IntegrityFinding {
                    kind: FindingKind::ChainBroken,
                    key: format!("s3://{bucket}/{}", p.key),
                    from: p.digest.digest_start_time.clone(),
                    to: d.digest.digest_end_time.clone(),
                    detail: format!(
                        "the next digest ({here}) chains to a digest with another {}: one of the \
                         two was replaced",
                        wrong.join(" and ")
                    ),
                });
            }
        }
        _ if present.contains(prev_key) && prev_bucket == bucket => {
            // The named digest is here but was not the one before: it could
            // not be read (reported), or the chain forks.
            if previous.is_some() {
                v.findings.push(IntegrityFinding {
                    kind: FindingKind::ChainBroken,
                    key: here,
                    from: start.clone(),
                    to: d.digest.digest_end_time.clone(),
                    detail: format!(
                        "it chains to s3://{prev_bucket}/{prev_key}, which is not the digest \
                         before it"
                    ),
                });
            }
        }
        _ => {
            let gap_from = prev_end.map(|e| rfc3339(e - 3600)).unwrap_or_else(|| "?".into());
            let before_since = match (options.since, prev_end) {
                (Some(since), Some(e)) => e <= since,
                (Some(_), None) => false,
                (None, _) => previous.is_none(),
            };
            if before_since {
                v.notes.push(format!(
                    "the chain is checked from {here} ({start}); the digest before it \
                     (s3://{prev_bucket}/{prev_key}) is older than what escrow must hold"
                ));
            } else {
                let original =
                    original_version(store, prev_bucket, prev_key, None).await.unwrap_or_default();
                v.findings.push(IntegrityFinding {
                    kind: FindingKind::DigestMissing,
                    key: format!("s3://{prev_bucket}/{prev_key}"),
                    from: gap_from,
                    to: start,
                    detail: format!(
                        "the digest {here} chains to it, but it is not there: the log files of \
                         its hour are unproven{original}"
                    ),
                });
            }
        }
    }
}

/// Checks every log file a digest lists.
async fn check_logs(
    store: &dyn TrailStore,
    entries: &[LogFileEntry],
    hour: (i64, i64),
    v: &mut Validation,
    signed: &mut BTreeSet<String>,
) -> Result<()> {
    let results: Vec<(usize, Option<IntegrityFinding>)> =
        futures::stream::iter(entries.iter().enumerate())
            .map(|(i, e)| async move { check_log(store, e, hour).await.map(|f| (i, f)) })
            .buffer_unordered(READ_CONCURRENCY)
            .try_collect()
            .await?;
    let mut findings: Vec<_> = results.into_iter().collect();
    findings.sort_by_key(|(i, _)| *i);
    for (i, f) in findings {
        v.log_files += 1;
        signed.insert(entries[i].s3_object.clone());
        v.findings.extend(f);
    }
    Ok(())
}

async fn check_log(
    store: &dyn TrailStore,
    e: &LogFileEntry,
    hour: (i64, i64),
) -> Result<Option<IntegrityFinding>> {
    let from = e.oldest_event_time.clone().unwrap_or_else(|| rfc3339(hour.0));
    let to = e.newest_event_time.clone().unwrap_or_else(|| rfc3339(hour.1));
    let key = format!("s3://{}/{}", e.s3_bucket, e.s3_object);
    let (kind, detail) = match store.get(&e.s3_bucket, &e.s3_object).await? {
        None => (
            FindingKind::LogMissing,
            format!(
                "listed by its digest but not in {}",
                store.location(&e.s3_bucket, &e.s3_object)
            ),
        ),
        Some(obj) => match gunzip(&obj.body) {
            Ok(content) if sha256_hex(&content).eq_ignore_ascii_case(&e.hash_value) => {
                return Ok(None);
            }
            Ok(content) => (
                FindingKind::LogAltered,
                format!("SHA-256 {} but its digest says {}", sha256_hex(&content), e.hash_value),
            ),
            Err(err) => (FindingKind::LogAltered, format!("not gzip ({err})")),
        },
    };
    let original = original_version(store, &e.s3_bucket, &e.s3_object, Some(&e.hash_value)).await?;
    Ok(Some(IntegrityFinding { kind, key, from, to, detail: format!("{detail}{original}") }))
}

/// ", escrow still holds the original as version …" when an earlier
/// version of the file is (or hashes to `hash`, when given).
async fn original_version(
    store: &dyn TrailStore,
    bucket: &str,
    key: &str,
    hash: Option<&str>,
) -> Result<String> {
    for ver in store.earlier_versions(bucket, key).await? {
        let matches = match hash {
            Some(h) => gunzip(&ver.body).is_ok_and(|c| sha256_hex(&c).eq_ignore_ascii_case(h)),
            None => true,
        };
        if matches {
            let what = if hash.is_some() { "the original" } else { "an earlier version" };
            return Ok(format!(
                "; escrow still holds {what} as version {} of {}{}",
                ver.version_id,
                store.location(bucket, key),
                ver.stored_at.map(|t| format!(" (stored {t})")).unwrap_or_default()
            ));
        }
    }
    Ok(String::new())
}
