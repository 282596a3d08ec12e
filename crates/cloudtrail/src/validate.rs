//! Validation of a trail's log file integrity chain, on whatever
//! [`TrailStore`] holds its files, as `aws cloudtrail validate-logs` does:
//!
//! - each digest's SHA256withRSA signature, with the public key its
//!   fingerprint names, over the documented string (its end time, its own
//!   name, its content's SHA-256 and the previous digest's signature); a
//!   digest whose own signature cannot be checked is still proven when the
//!   next, proven digest chains to its SHA-256;
//! - the chain: each digest's `previousDigestSignature`,
//!   `previousDigestHashValue` and `previousDigestS3Object` against the
//!   digest before it; a digest that is not there is a gap, reported from
//!   the end of the last digest before it to the start of the next; a chain
//!   whose newest digest is old (given `now`) is a gap up to now;
//! - each log file a proven digest lists, by the SHA-256 of its
//!   uncompressed content; a missing one is reported with its events' time
//!   range;
//! - log files no proven digest lists, once a digest later than them
//!   exists, and log files of a region with no digest at all.
//!
//! Chains are kept apart by trail, account path (an organization trail's
//! `o-…/<account>`), region and home region. When a log file or digest is
//! altered or gone, escrow's earlier versions are searched for the
//! original, and the finding says which one it is.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use escrow_sync_core::Result;

use crate::digest::{
    Digest, DigestName, LogFileEntry, LogName, MAX_DIGEST_UNCOMPRESSED, MAX_UNCOMPRESSED,
    SIGNATURE_META, gunzip_capped, sha256_hex, sha256_of_gunzip,
};
use crate::keys::{KeySource, Keyring, SignatureCheck};
use crate::store::TrailStore;
use crate::time::{parse_rfc3339, rfc3339};

/// How long after a log file is written a digest must list it: the digest
/// hour, plus time for late delivery.
const SIGNING_GRACE_SECS: i64 = 2 * 3600;

/// A chain whose newest digest ended longer ago than this (before `now`)
/// has lost its newest digests, or logging stopped.
const STALE_SECS: i64 = 2 * 3600;

/// How many files are read at once.
const READ_CONCURRENCY: usize = 16;

/// Log file validation began in 2015: keys are not asked for before.
const EARLIEST: i64 = 1_420_070_400;

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FindingKind {
    /// A log file a digest lists is not there.
    LogMissing,
    /// A log file's content does not hash to what its digest says.
    LogAltered,
    /// A log file no proven digest lists, though later digests exist (or
    /// its region has no digest at all).
    LogUnsigned,
    /// A digest the chain needs is not there: nothing proves the log files
    /// of the time it leaves uncovered.
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
    /// The file (`s3://log-bucket/key`, CloudTrail's name), or the folder
    /// of a region.
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
    /// Digests proven (by their signature, or by the next proven digest).
    pub digests: u64,
    /// Log files checked against a proven digest.
    pub log_files: u64,
    /// Start of the time proven digests cover (RFC 3339).
    pub covered_from: Option<String>,
    /// End of the time proven digests cover (RFC 3339).
    pub covered_to: Option<String>,
    /// Every problem.
    pub findings: Vec<IntegrityFinding>,
    /// What the reader must see though it proves nothing wrong: a chain that
    /// restarts (logging was stopped) leaves time no digest covers.
    pub warnings: Vec<String>,
    /// What the reader may want to know (where a chain starts, log files
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
    /// Trails delivering here without log file validation: their log files
    /// have no digest, so none here is reported as unsigned.
    pub unvalidated_trails: Vec<String>,
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
    /// "Now" (epoch seconds): a chain whose newest digest ended more than
    /// two hours before is reported; without it, the end of a chain is not
    /// judged.
    pub now: Option<i64>,
}

/// The account path of a key (`111122223333`, or `o-…/111122223333` for an
/// organization trail): what lies between `root` and `marker`.
fn scope_of(key: &str, root: &str, marker: &str) -> Option<String> {
    let rest = key.strip_prefix(root)?;
    rest.split_once(marker).map(|(scope, _)| scope.to_string())
}

/// A chain: trail, account path, region, home region.
type ChainKey = (String, String, String, String);

/// One digest as read.
struct Entry {
    key: String,
    name: DigestName,
    digest: Option<Digest>,
    sha: Option<String>,
    signature: Option<String>,
    signed_ok: bool,
    proven: bool,
}

impl Entry {
    fn start(&self) -> i64 {
        self.digest
            .as_ref()
            .and_then(|d| parse_rfc3339(&d.digest_start_time))
            .unwrap_or(self.name.end - 3600)
    }
}

/// Validates every trail of `location` from the files in `store`.
pub async fn validate(
    store: &dyn TrailStore,
    keys: &dyn KeySource,
    location: &Location,
    options: Options,
) -> Result<Vec<Validation>> {
    let bucket = location.bucket.as_str();
    let root = location.root();
    let listed = store.list(bucket, &root).await?;
    let mut digests: BTreeMap<ChainKey, Vec<(String, DigestName)>> = BTreeMap::new();
    // (account path, region) -> log key -> written at.
    let mut logs: BTreeMap<(String, String), BTreeMap<String, i64>> = BTreeMap::new();
    for key in listed {
        if let Some(scope) = scope_of(&key, &root, "/CloudTrail-Digest/") {
            if let Some(name) = DigestName::parse(&key) {
                let chain =
                    (name.trail.clone(), scope, name.region.clone(), name.home_region.clone());
                digests.entry(chain).or_default().push((key, name));
            }
        } else if let Some(scope) = scope_of(&key, &root, "/CloudTrail/")
            && let Some(name) = LogName::parse(&key)
        {
            logs.entry((scope, name.region)).or_default().insert(key, name.time);
        }
    }
    let ours = |t: &String| location.trails.contains(t);
    let regions: BTreeSet<String> =
        digests.keys().filter(|(t, ..)| ours(t)).map(|(_, _, r, _)| r.clone()).collect();
    let ends = digests
        .iter()
        .filter(|((t, ..), _)| ours(t))
        .flat_map(|(_, files)| files.iter().map(|(_, n)| n.end));
    let (first, last) = ends.fold((i64::MAX, i64::MIN), |(f, t), e| (f.min(e), t.max(e)));
    let keyring = if regions.is_empty() {
        Keyring::default()
    } else {
        // Names come from the log bucket: clamp what they say to what
        // ListPublicKeys accepts.
        let to = options.now.unwrap_or(last);
        let from = (first - 3600).clamp(EARLIEST, to.max(EARLIEST));
        keys.keyring(&regions, from, to.max(from)).await?
    };
    let mut signed: BTreeSet<String> = BTreeSet::new();
    // (account path, region) -> time covered by proven digests.
    let mut spans: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let mut out = Vec::new();
    for trail in &location.trails {
        let mut v = Validation { trail: trail.clone(), ..Validation::default() };
        let chains: Vec<_> = digests.iter().filter(|((t, ..), _)| t == trail).collect();
        if chains.is_empty() {
            v.notes.push(format!(
                "no digest file of trail {trail} under {}",
                store.location(bucket, &root)
            ));
        }
        for ((_, scope, region, _), files) in chains {
            let mut files = files.clone();
            files.sort_by(|a, b| (a.1.end, &a.0).cmp(&(b.1.end, &b.0)));
            let span = chain(store, &keyring, bucket, files, options, &mut v, &mut signed).await?;
            if let Some((from, to)) = span {
                let e = spans.entry((scope.clone(), region.clone())).or_insert((from, to));
                *e = (e.0.min(from), e.1.max(to));
            }
        }
        out.push(v);
    }
    // Other trails' digests here list their own log files.
    let others: Vec<&String> = digests
        .iter()
        .filter(|((t, ..), _)| !ours(t))
        .flat_map(|(_, files)| files.iter().map(|(k, _)| k))
        .collect();
    for key in others {
        let read = store.get(bucket, key).await?;
        let parsed = read
            .filter(|o| !o.over_cap())
            .and_then(|o| gunzip_capped(&o.body, MAX_DIGEST_UNCOMPRESSED).ok())
            .and_then(|c| serde_json::from_slice::<Digest>(&c).ok());
        for e in parsed.map(|d| d.log_files).unwrap_or_default() {
            signed.insert(e.s3_object);
        }
    }
    let Some(v) = out.first_mut() else { return Ok(out) };
    if !location.unvalidated_trails.is_empty() {
        v.warnings.push(format!(
            "trails {} deliver here without log file validation: their log files cannot be \
             told from planted ones, so none is reported as unsigned",
            location.unvalidated_trails.join(", ")
        ));
    } else {
        unsigned(store, bucket, &root, &logs, &signed, &spans, v);
    }
    for v in &mut out {
        v.findings.sort_by(|a, b| (&a.from, a.kind, &a.key).cmp(&(&b.from, b.kind, &b.key)));
    }
    Ok(out)
}

/// Reports log files no proven digest lists: inside the time a chain
/// covers (less the grace for delivery), one by one; in a region with no
/// chain at all, together.
fn unsigned(
    store: &dyn TrailStore,
    bucket: &str,
    root: &str,
    logs: &BTreeMap<(String, String), BTreeMap<String, i64>>,
    signed: &BTreeSet<String>,
    spans: &BTreeMap<(String, String), (i64, i64)>,
    v: &mut Validation,
) {
    let mut too_recent = 0u64;
    for ((scope, region), files) in logs {
        let loose: Vec<(&String, i64)> =
            files.iter().filter(|(k, _)| !signed.contains(*k)).map(|(k, t)| (k, *t)).collect();
        let Some(&(start, end)) = spans.get(&(scope.clone(), region.clone())) else {
            let (Some(min), Some(max)) =
                (loose.iter().map(|(_, t)| *t).min(), loose.iter().map(|(_, t)| *t).max())
            else {
                continue;
            };
            let folder = format!("{root}{scope}/CloudTrail/{region}/");
            v.findings.push(IntegrityFinding {
                kind: FindingKind::LogUnsigned,
                key: format!("s3://{bucket}/{folder}"),
                from: rfc3339(min),
                to: rfc3339(max + 3600),
                detail: format!(
                    "{} log file(s) of {scope} in {region}, and no proven digest of that region: \
                     nothing proves them ({})",
                    loose.len(),
                    store.location(bucket, &folder)
                ),
            });
            continue;
        };
        for (key, t) in loose {
            if t < start {
                continue;
            }
            if t + SIGNING_GRACE_SECS > end {
                too_recent += 1;
                continue;
            }
            v.findings.push(IntegrityFinding {
                kind: FindingKind::LogUnsigned,
                key: format!("s3://{bucket}/{key}"),
                from: rfc3339(t),
                to: rfc3339(t + 3600),
                detail: format!(
                    "no proven digest lists this log file, though digests cover its time: it was \
                     added after delivery, or its digest was replaced ({})",
                    store.location(bucket, key)
                ),
            });
        }
    }
    if too_recent > 0 {
        v.notes
            .push(format!("{too_recent} log file(s) are too recent for a digest to list them yet"));
    }
}

/// Validates one chain, oldest first; returns the time its proven digests
/// cover.
async fn chain(
    store: &dyn TrailStore,
    keyring: &Keyring,
    bucket: &str,
    files: Vec<(String, DigestName)>,
    options: Options,
    v: &mut Validation,
    signed: &mut BTreeSet<String>,
) -> Result<Option<(i64, i64)>> {
    // Read every digest (in order, several at once) and check signatures.
    let read: Vec<_> = futures::stream::iter(files)
        .map(|(key, name)| async move {
            let obj = store.get(bucket, &key).await?;
            Ok::<_, escrow_sync_core::Error>((key, name, obj))
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let mut entries = Vec::with_capacity(read.len());
    for (key, name, obj) in read {
        entries.push(check_digest(store, keyring, bucket, key, name, obj, v).await?);
    }
    // A digest whose own signature fails is still proven when the next
    // proven digest chains to its exact content.
    let chained: Vec<usize> = (0..entries.len()).filter(|&i| !entries[i].name.backfill).collect();
    for e in &mut entries {
        e.proven = e.signed_ok;
    }
    for w in chained.windows(2).rev() {
        let (p, n) = (w[0], w[1]);
        if entries[p].proven || !entries[n].proven {
            continue;
        }
        let next = entries[n].digest.as_ref();
        let links = next.is_some_and(|d| {
            d.previous_digest_s3_object.as_deref() == Some(entries[p].key.as_str())
                && d.previous_digest_hash_value.is_some()
                && d.previous_digest_hash_value == entries[p].sha
        });
        entries[p].proven = links;
    }
    // The links.
    let present: BTreeSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    let mut previous: Option<&Entry> = None;
    for &i in &chained {
        link(store, bucket, &entries[i], previous, &present, options, v).await;
        previous = Some(&entries[i]);
    }
    if let (Some(now), Some(last)) = (options.now, previous)
        && now - last.name.end > STALE_SECS
    {
        let folder = last.key.rsplit_once('/').map_or("", |(f, _)| f);
        let region_folder = folder.split("/CloudTrail-Digest/").next().unwrap_or(folder);
        v.findings.push(IntegrityFinding {
            kind: FindingKind::DigestMissing,
            key: format!("s3://{bucket}/{region_folder}/CloudTrail-Digest/{}/", last.name.region),
            from: rfc3339(last.name.end),
            to: rfc3339(now),
            detail: format!(
                "no digest of {} after {}: the newest digests were deleted, logging stopped, or \
                 the logs were not copied since",
                last.name.region,
                rfc3339(last.name.end)
            ),
        });
    }
    // Log files, against proven digests only.
    let mut span: Option<(i64, i64)> = None;
    let mut unproven = 0u64;
    for e in &entries {
        let Some(d) = e.digest.as_ref().filter(|_| e.proven) else {
            unproven += 1;
            continue;
        };
        v.digests += 1;
        let (start, end) = (e.start(), e.name.end);
        span = Some(span.map_or((start, end), |(f, t)| (f.min(start), t.max(end))));
        check_logs(store, &d.log_files, (start, end), v, signed).await?;
    }
    if unproven > 0 {
        v.notes.push(format!(
            "{unproven} digest(s) of {} are not proven: the log files only they list are \
             reported as unsigned",
            entries[0].name.region
        ));
    }
    if let Some((from, to)) = span {
        let widen = |cur: &Option<String>, t: i64, earlier: bool| match cur
            .as_deref()
            .and_then(parse_rfc3339)
        {
            Some(c) if (earlier && c <= t) || (!earlier && c >= t) => cur.clone(),
            _ => Some(rfc3339(t)),
        };
        v.covered_from = widen(&v.covered_from, from, true);
        v.covered_to = widen(&v.covered_to, to, false);
    }
    Ok(span)
}

/// Parses and checks the signature of one digest; reports what is wrong.
async fn check_digest(
    store: &dyn TrailStore,
    keyring: &Keyring,
    bucket: &str,
    key: String,
    name: DigestName,
    obj: Option<crate::store::StoredObject>,
    v: &mut Validation,
) -> Result<Entry> {
    let here = format!("s3://{bucket}/{key}");
    let mut entry = Entry {
        key: key.clone(),
        name,
        digest: None,
        sha: None,
        signature: None,
        signed_ok: false,
        proven: false,
    };
    let hour = (rfc3339(entry.name.end - 3600), rfc3339(entry.name.end));
    let mut push = |kind, from: &str, to: &str, detail: String| {
        v.findings.push(IntegrityFinding {
            kind,
            key: here.clone(),
            from: from.to_string(),
            to: to.to_string(),
            detail,
        })
    };
    let Some(obj) = obj else {
        push(
            FindingKind::DigestMissing,
            &hour.0,
            &hour.1,
            format!("listed but gone when read ({})", store.location(bucket, &key)),
        );
        return Ok(entry);
    };
    let parsed = if obj.over_cap() {
        Err(over_cap_detail())
    } else {
        gunzip_capped(&obj.body, MAX_DIGEST_UNCOMPRESSED).map_err(|e| e.to_string()).and_then(|c| {
            serde_json::from_slice::<Digest>(&c).map(|d| (c, d)).map_err(|e| e.to_string())
        })
    };
    let (content, digest) = match parsed {
        Ok(p) => p,
        Err(e) => {
            let original = original_version(store, bucket, &key, None).await?;
            push(
                FindingKind::DigestInvalidSignature,
                &hour.0,
                &hour.1,
                format!("not a digest file ({e}): altered{original}"),
            );
            return Ok(entry);
        }
    };
    let sha = sha256_hex(&content);
    let signature = obj.metadata.get(SIGNATURE_META).cloned();
    let (from, to) = (digest.digest_start_time.clone(), digest.digest_end_time.clone());
    if digest.digest_s3_bucket != bucket || digest.digest_s3_object != key {
        push(
            FindingKind::ChainBroken,
            &from,
            &to,
            format!(
                "the digest names s3://{}/{} but is stored here: moved or forged",
                digest.digest_s3_bucket, digest.digest_s3_object
            ),
        );
    }
    match signature.as_deref().map(hex::decode) {
        None => push(
            FindingKind::DigestUnsigned,
            &from,
            &to,
            "no signature metadata (x-amz-meta-signature)".into(),
        ),
        Some(Err(_)) => push(
            FindingKind::DigestInvalidSignature,
            &from,
            &to,
            "its signature metadata is not hex: altered".into(),
        ),
        Some(Ok(sig)) => {
            let message = digest.signing_string(&sha);
            match keyring.verify(&digest.digest_public_key_fingerprint, message.as_bytes(), &sig) {
                SignatureCheck::Valid => entry.signed_ok = true,
                SignatureCheck::UnknownKey => push(
                    FindingKind::DigestUnsigned,
                    &from,
                    &to,
                    format!(
                        "signed with key {:?}, which CloudTrail's public keys for {} do not \
                         include: forged, or the keys were not fetched for its region",
                        digest.digest_public_key_fingerprint, entry.name.region
                    ),
                ),
                SignatureCheck::Invalid => {
                    let original = original_version(store, bucket, &key, None).await?;
                    push(
                        FindingKind::DigestInvalidSignature,
                        &from,
                        &to,
                        format!("its signature does not verify: altered or forged{original}"),
                    )
                }
            }
        }
    }
    entry.digest = Some(digest);
    entry.sha = Some(sha);
    entry.signature = signature;
    Ok(entry)
}

/// Checks the link from `d` back to the digest before it.
async fn link(
    store: &dyn TrailStore,
    bucket: &str,
    d: &Entry,
    previous: Option<&Entry>,
    present: &BTreeSet<&str>,
    options: Options,
    v: &mut Validation,
) {
    let here = format!("s3://{bucket}/{}", d.key);
    // An unreadable digest was reported; its links cannot be checked.
    let Some(digest) = &d.digest else { return };
    let start = rfc3339(d.start());
    let Some(prev_key) = digest.previous_digest_s3_object.as_deref() else {
        match previous {
            Some(p) => v.warnings.push(format!(
                "the chain restarts at {here}: no digest covers {} to {start} (logging was \
                 stopped, or log file validation turned off)",
                rfc3339(p.name.end)
            )),
            None => v.notes.push(format!("the chain starts at {here} ({start})")),
        }
        return;
    };
    let prev_bucket = digest.previous_digest_s3_bucket.as_deref().unwrap_or(bucket);
    match previous {
        Some(p) if p.key == prev_key && prev_bucket == bucket => {
            let Some(p_digest) = &p.digest else { return };
            let mut wrong = Vec::new();
            // An unsigned predecessor is reported as such; its link is only
            // checked by hash.
            if p.signature.is_some() && digest.previous_digest_signature != p.signature {
                wrong.push("signature");
            }
            if digest.previous_digest_hash_value.as_deref() != p.sha.as_deref() {
                wrong.push("SHA-256");
            }
            if !wrong.is_empty() {
                v.findings.push(IntegrityFinding {
                    kind: FindingKind::ChainBroken,
                    key: format!("s3://{bucket}/{}", p.key),
                    from: p_digest.digest_start_time.clone(),
                    to: digest.digest_end_time.clone(),
                    detail: format!(
                        "the next digest ({here}) chains to a digest with another {}: one of the \
                         two was replaced",
                        wrong.join(" and ")
                    ),
                });
            }
        }
        _ if present.contains(prev_key) && prev_bucket == bucket => {
            v.findings.push(IntegrityFinding {
                kind: FindingKind::ChainBroken,
                key: here,
                from: start,
                to: digest.digest_end_time.clone(),
                detail: format!(
                    "it chains to s3://{prev_bucket}/{prev_key}, which is not the digest before it"
                ),
            });
        }
        _ => {
            let named_end = DigestName::parse(prev_key).map(|n| n.end);
            // The gap runs from the last digest escrow holds before this one
            // (or the named one's hour, or `since`) to this one's start.
            let gap_from = match (previous, named_end, options.since) {
                (Some(p), ..) => p.name.end,
                (None, Some(e), Some(since)) => (e - 3600).max(since),
                (None, Some(e), None) => e - 3600,
                (None, None, since) => since.unwrap_or(d.start() - 3600),
            };
            let before_since = previous.is_none()
                && match (options.since, named_end) {
                    (Some(since), Some(e)) => e <= since,
                    (Some(_), None) => false,
                    (None, _) => true,
                };
            if before_since {
                v.notes.push(format!(
                    "the chain is checked from {here} ({start}); the digest before it \
                     (s3://{prev_bucket}/{prev_key}) is older than what escrow must hold"
                ));
                return;
            }
            let original =
                original_version(store, prev_bucket, prev_key, None).await.unwrap_or_default();
            v.findings.push(IntegrityFinding {
                kind: FindingKind::DigestMissing,
                key: format!("s3://{prev_bucket}/{prev_key}"),
                from: rfc3339(gap_from),
                to: start,
                detail: format!(
                    "the digest {here} chains to it, but it is not there: no digest proves the log \
                     files of this time{original}"
                ),
            });
        }
    }
}

/// Checks every log file a proven digest lists.
async fn check_logs(
    store: &dyn TrailStore,
    entries: &[LogFileEntry],
    hour: (i64, i64),
    v: &mut Validation,
    signed: &mut BTreeSet<String>,
) -> Result<()> {
    // By index: a closure over `&LogFileEntry` makes the future
    // lifetime-generic, and then not `Send` for callers that need it.
    let results: Vec<Option<IntegrityFinding>> = futures::stream::iter(0..entries.len())
        .map(|i| check_log(store, &entries[i], hour))
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    for (e, f) in entries.iter().zip(results) {
        v.log_files += 1;
        signed.insert(e.s3_object.clone());
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
        Some(obj) if obj.over_cap() => (FindingKind::LogAltered, over_cap_detail()),
        Some(obj) => match sha256_of_gunzip(&obj.body, MAX_UNCOMPRESSED) {
            Ok(sha) if sha.eq_ignore_ascii_case(&e.hash_value) => {
                return Ok(None);
            }
            Ok(sha) => (
                FindingKind::LogAltered,
                format!("SHA-256 {sha} but its digest says {}", e.hash_value),
            ),
            Err(err) => (FindingKind::LogAltered, format!("not readable as gzip ({err})")),
        },
    };
    let original = original_version(store, &e.s3_bucket, &e.s3_object, Some(&e.hash_value)).await?;
    Ok(Some(IntegrityFinding { kind, key, from, to, detail: format!("{detail}{original}") }))
}

/// Why a file over [`MAX_STORED_BYTES`](crate::store::MAX_STORED_BYTES) is
/// not read.
fn over_cap_detail() -> String {
    format!(
        "larger than {} MiB, more than any CloudTrail file: not read (planted or altered)",
        crate::store::MAX_STORED_BYTES >> 20
    )
}

/// ", escrow still holds the original as version …" when an earlier
/// version of the file is there (and hashes to `hash`, when given).
async fn original_version(
    store: &dyn TrailStore,
    bucket: &str,
    key: &str,
    hash: Option<&str>,
) -> Result<String> {
    for ver in store.earlier_versions(bucket, key).await? {
        let matches = match hash {
            None => true,
            Some(h) => store
                .get_version(bucket, key, &ver.version_id)
                .await?
                .and_then(|b| sha256_of_gunzip(&b, MAX_UNCOMPRESSED).ok())
                .is_some_and(|sha| sha.eq_ignore_ascii_case(h)),
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
