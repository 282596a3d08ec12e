//! A forensic timeline from escrowed log files: the events an
//! [`EventQuery`] selects, day by day, each listed only once its log file
//! is proven by a digest whose signature verifies with CloudTrail's public
//! keys (the file's SHA-256 is the one the digest lists). Events of a file
//! that is not proven (planted: no digest lists it; altered: its hash
//! differs; its digest's signature fails) are handed over apart, marked
//! with why. When escrow holds an earlier version of an altered file that
//! hashes right, that original's events are the proven ones.
//!
//! Memory stays with one day: the files of a trail are read day folder by
//! day folder (`…/CloudTrail/<region>/<yyyy>/<mm>/<dd>/`), with that day's
//! and the next day's digests (a file delivered before midnight is signed
//! by a digest of the next day). A day's proven events are sorted by time
//! and handed over before the next day is read; unproven ones as they are
//! read.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use escrow_sync_core::Result;

use crate::digest::{
    Digest, MAX_DIGEST_UNCOMPRESSED, MAX_UNCOMPRESSED, SIGNATURE_META, gunzip_capped, sha256_hex,
};
use crate::events::{Event, EventQuery, parse_log_file};
use crate::keys::{KeySource, Keyring, SignatureCheck};
use crate::store::TrailStore;
use crate::time::{parse_rfc3339, rfc3339};
use crate::validate::{FindingKind, root};

/// How many files are read at once.
const READ_CONCURRENCY: usize = 16;

/// At most this many unproven files are named in a [`TimelineSummary`].
const MAX_PROBLEMS: usize = 1000;

/// Why a file's events are not proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unproven {
    /// `log-unsigned`, `log-altered`, `digest-unsigned`,
    /// `digest-invalid-signature` ([`FindingKind`]).
    pub kind: &'static str,
    /// What was found.
    pub detail: String,
}

/// One selected event and the file it was read from.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEvent {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// The log file (`s3://<log bucket>/<key>`, as CloudTrail named it),
    /// with `?versionId=…` when an earlier escrow version was read.
    pub log_file: String,
    /// Whether its log file is proven by a signed digest.
    pub verified: bool,
    /// Why not, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Unproven>,
}

/// Takes the events of a timeline as they are read.
pub trait EventSink: Send {
    /// One event: the proven ones of a day in time order, a day at a time;
    /// unproven ones as their files are read.
    fn event(&mut self, event: TimelineEvent) -> Result<()>;
}

impl<F: FnMut(TimelineEvent) -> Result<()> + Send> EventSink for F {
    fn event(&mut self, event: TimelineEvent) -> Result<()> {
        self(event)
    }
}

/// What a timeline read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimelineSummary {
    /// Day folders read.
    pub days: u64,
    /// Log files read.
    pub log_files: u64,
    /// Of them, proven by a signed digest.
    pub verified_files: u64,
    /// Of them, not proven.
    pub unverified_files: u64,
    /// Selected events of proven files.
    pub events: u64,
    /// Selected events of unproven files.
    pub unverified_events: u64,
    /// Unproven files (the first [`MAX_PROBLEMS`]): file, kind, detail.
    pub problems: Vec<(String, String, String)>,
}

/// One (account path, region) of a root, with its day folders.
struct Place {
    bucket: String,
    root: String,
    scope: String,
    region: String,
    days: BTreeSet<String>,
}

/// `yyyy/mm/dd` of an epoch second.
fn day_of(secs: i64) -> String {
    rfc3339(secs)[..10].replace('-', "/")
}

/// The day after `yyyy/mm/dd`.
fn next_day(day: &str) -> String {
    parse_rfc3339(&format!("{}T00:00:00Z", day.replace('/', "-")))
        .map(|t| day_of(t + 86_400))
        .unwrap_or_default()
}

/// The name of the last folder of `prefix` (`a/b/` → `b`).
fn last(prefix: &str) -> &str {
    prefix.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// Reads the events of the trails delivering to `roots` (log bucket, key
/// prefix) in `store` that `query` selects, and hands them to `sink`.
pub async fn timeline(
    store: &dyn TrailStore,
    keys: &dyn KeySource,
    roots: &[(String, String)],
    query: &EventQuery,
    sink: &mut dyn EventSink,
) -> Result<TimelineSummary> {
    let (from, to) = query.range();
    // Files are foldered by delivery, a little after their events.
    let first = from.map(day_of);
    let last_day = to.map(|t| next_day(&day_of(t)));
    let wanted = |day: &str| {
        first.as_deref().is_none_or(|f| day >= f) && last_day.as_deref().is_none_or(|l| day <= l)
    };
    let mut places = Vec::new();
    for (bucket, key_prefix) in roots {
        let root = root(key_prefix);
        let mut scopes = Vec::new();
        for f in store.folders(bucket, &root).await? {
            if last(&f).starts_with("o-") {
                scopes.extend(store.folders(bucket, &f).await?);
            } else {
                scopes.push(f);
            }
        }
        for scope in scopes {
            for region in store.folders(bucket, &format!("{scope}CloudTrail/")).await? {
                let mut days = BTreeSet::new();
                for y in store.folders(bucket, &region).await? {
                    for m in store.folders(bucket, &y).await? {
                        for d in store.folders(bucket, &m).await? {
                            let day = format!("{}/{}/{}", last(&y), last(&m), last(&d));
                            if wanted(&day) {
                                days.insert(day);
                            }
                        }
                    }
                }
                places.push(Place {
                    bucket: bucket.clone(),
                    root: root.clone(),
                    scope: scope.strip_prefix(&root).unwrap_or(&scope).to_string(),
                    region: last(&region).to_string(),
                    days,
                });
            }
        }
    }
    let all_days: BTreeSet<&String> = places.iter().flat_map(|p| &p.days).collect();
    let mut summary = TimelineSummary::default();
    let (Some(first_day), Some(last_day)) = (all_days.first(), all_days.last()) else {
        return Ok(summary);
    };
    let regions: BTreeSet<String> = places.iter().map(|p| p.region.clone()).collect();
    let at = |d: &str| parse_rfc3339(&format!("{}T00:00:00Z", d.replace('/', "-"))).unwrap_or(0);
    let keyring = keys.keyring(&regions, at(first_day), at(last_day) + 2 * 86_400).await?;
    for day in all_days.iter().copied() {
        summary.days += 1;
        let mut proven: Vec<TimelineEvent> = Vec::new();
        for place in places.iter().filter(|p| p.days.contains(day)) {
            read_day(store, &keyring, place, day, query, &mut proven, sink, &mut summary).await?;
        }
        proven.sort_by(|a, b| {
            (a.event.epoch, &a.event.event_id).cmp(&(b.event.epoch, &b.event.event_id))
        });
        summary.events += proven.len() as u64;
        for e in proven {
            sink.event(e)?;
        }
    }
    Ok(summary)
}

/// A log file's hash as a digest lists it, and whether that digest is
/// proven by its signature.
type Signed = BTreeMap<String, (String, std::result::Result<(), Unproven>)>;

/// The log files the digests of `day` and the next day list.
async fn digests(
    store: &dyn TrailStore,
    keyring: &Keyring,
    place: &Place,
    day: &str,
) -> Result<Signed> {
    let mut signed = Signed::new();
    for d in [day.to_string(), next_day(day)] {
        let folder =
            format!("{}{}CloudTrail-Digest/{}/{d}/", place.root, place.scope, place.region);
        let keys = store.list(&place.bucket, &folder).await?;
        let read: Vec<_> = futures::stream::iter(keys)
            .map(|key| async move {
                Ok::<_, escrow_sync_core::Error>((store.get(&place.bucket, &key).await?, key))
            })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        for (obj, key) in read {
            let Some(obj) = obj.filter(|o| !o.over_cap()) else { continue };
            let Some((content, digest)) = gunzip_capped(&obj.body, MAX_DIGEST_UNCOMPRESSED)
                .ok()
                .and_then(|c| serde_json::from_slice::<Digest>(&c).ok().map(|d| (c, d)))
            else {
                continue;
            };
            let proof = signature(keyring, &digest, &content, obj.metadata.get(SIGNATURE_META))
                .map_err(|(kind, why)| Unproven {
                    kind: kind.as_str(),
                    detail: format!("its digest s3://{}/{key} {why}", place.bucket),
                });
            for entry in digest.log_files {
                if entry.s3_bucket != place.bucket {
                    continue;
                }
                // A proven listing outranks an unproven one of the same file.
                match signed.get(&entry.s3_object) {
                    Some((_, Ok(()))) => {}
                    _ => {
                        signed.insert(entry.s3_object, (entry.hash_value, proof.clone()));
                    }
                }
            }
        }
    }
    Ok(signed)
}

/// Whether a digest's signature verifies.
fn signature(
    keyring: &Keyring,
    digest: &Digest,
    content: &[u8],
    signature: Option<&String>,
) -> std::result::Result<(), (FindingKind, String)> {
    let Some(sig) = signature else {
        return Err((FindingKind::DigestUnsigned, "has no signature".into()));
    };
    let Ok(sig) = hex::decode(sig) else {
        return Err((
            FindingKind::DigestInvalidSignature,
            "has a signature that is not hex".into(),
        ));
    };
    let message = digest.signing_string(&sha256_hex(content));
    match keyring.verify(&digest.digest_public_key_fingerprint, message.as_bytes(), &sig) {
        SignatureCheck::Valid => Ok(()),
        SignatureCheck::UnknownKey => Err((
            FindingKind::DigestUnsigned,
            "is signed with a key CloudTrail's public keys do not include".into(),
        )),
        SignatureCheck::Invalid => Err((
            FindingKind::DigestInvalidSignature,
            "has a signature that does not verify".into(),
        )),
    }
}

/// A log file's bytes, and what proves it.
struct Read {
    key: String,
    content: std::result::Result<Vec<u8>, String>,
    proof: std::result::Result<(), Unproven>,
    /// An earlier escrow version that hashes to what the digest says.
    original: Option<(String, Vec<u8>)>,
}

async fn read_log(
    store: &dyn TrailStore,
    bucket: &str,
    key: String,
    signed: &Signed,
) -> Result<Option<Read>> {
    let Some(obj) = store.get(bucket, &key).await? else { return Ok(None) };
    let content = if obj.over_cap() {
        Err(format!(
            "larger than {} MiB: not a CloudTrail file",
            crate::store::MAX_STORED_BYTES >> 20
        ))
    } else {
        gunzip_capped(&obj.body, MAX_UNCOMPRESSED)
            .map_err(|e| format!("not readable as gzip ({e})"))
    };
    let (proof, original) = match (signed.get(&key), &content) {
        (None, _) => (
            Err(Unproven {
                kind: FindingKind::LogUnsigned.as_str(),
                detail: "no digest lists it: added after delivery, or too recent to be signed"
                    .into(),
            }),
            None,
        ),
        (Some((_, Err(why))), _) => (Err(why.clone()), None),
        (Some((hash, Ok(()))), Ok(c)) if sha256_hex(c).eq_ignore_ascii_case(hash) => (Ok(()), None),
        (Some((hash, Ok(()))), _) => {
            let why = match &content {
                Ok(c) => format!("SHA-256 {} but its digest says {hash}", sha256_hex(c)),
                Err(e) => e.clone(),
            };
            let mut original = None;
            for v in store.earlier_versions(bucket, &key).await? {
                if let Some(c) = store
                    .get_version(bucket, &key, &v.version_id)
                    .await?
                    .and_then(|b| gunzip_capped(&b, MAX_UNCOMPRESSED).ok())
                    .filter(|c| sha256_hex(c).eq_ignore_ascii_case(hash))
                {
                    original = Some((v.version_id, c));
                    break;
                }
            }
            (Err(Unproven { kind: FindingKind::LogAltered.as_str(), detail: why }), original)
        }
    };
    Ok(Some(Read { key, content, proof, original }))
}

/// Reads one day folder of one place.
#[allow(clippy::too_many_arguments)]
async fn read_day(
    store: &dyn TrailStore,
    keyring: &Keyring,
    place: &Place,
    day: &str,
    query: &EventQuery,
    proven: &mut Vec<TimelineEvent>,
    sink: &mut dyn EventSink,
    summary: &mut TimelineSummary,
) -> Result<()> {
    let signed = digests(store, keyring, place, day).await?;
    let folder = format!("{}{}CloudTrail/{}/{day}/", place.root, place.scope, place.region);
    let keys = store.list(&place.bucket, &folder).await?;
    let signed = &signed;
    let mut reads = futures::stream::iter(keys)
        .map(|key| read_log(store, &place.bucket, key, signed))
        .buffered(READ_CONCURRENCY);
    while let Some(read) = reads.try_next().await? {
        let Some(read) = read else { continue };
        summary.log_files += 1;
        let file = format!("s3://{}/{}", place.bucket, read.key);
        if let Some((version, content)) = &read.original {
            let at = format!("{file}?versionId={version}");
            for event in parse_log_file(content).unwrap_or_default() {
                if query.matches(&event) {
                    proven.push(TimelineEvent {
                        event,
                        log_file: at.clone(),
                        verified: true,
                        problem: None,
                    });
                }
            }
        }
        let events = match &read.content {
            Ok(c) => parse_log_file(c),
            Err(e) => Err(e.clone()),
        };
        match (read.proof, events) {
            (Ok(()), Ok(events)) => {
                summary.verified_files += 1;
                proven.extend(events.into_iter().filter(|e| query.matches(e)).map(|event| {
                    TimelineEvent { event, log_file: file.clone(), verified: true, problem: None }
                }));
            }
            (proof, events) => {
                summary.unverified_files += 1;
                let problem = proof.err().unwrap_or_else(|| Unproven {
                    kind: FindingKind::LogAltered.as_str(),
                    detail: "proven, but not a log file".into(),
                });
                let problem = match (&events, &read.original) {
                    (_, Some((v, _))) => Unproven {
                        detail: format!(
                            "{}; escrow holds the original as version {v}",
                            problem.detail
                        ),
                        ..problem
                    },
                    (Err(e), None) => Unproven {
                        detail: format!("{}; unreadable: {e}", problem.detail),
                        ..problem
                    },
                    _ => problem,
                };
                if summary.problems.len() < MAX_PROBLEMS {
                    summary.problems.push((
                        file.clone(),
                        problem.kind.to_string(),
                        problem.detail.clone(),
                    ));
                }
                for event in events.unwrap_or_default().into_iter().filter(|e| query.matches(e)) {
                    summary.unverified_events += 1;
                    sink.event(TimelineEvent {
                        event,
                        log_file: file.clone(),
                        verified: false,
                        problem: Some(problem.clone()),
                    })?;
                }
            }
        }
    }
    Ok(())
}
