//! A forensic timeline from escrowed log files: the events an
//! [`EventQuery`] selects, day by day, each listed only once its log file
//! is proven by a digest whose signature verifies with CloudTrail's public
//! keys (the file's SHA-256 is the one the digest lists). Events of a file
//! that is not proven (planted: no digest lists it; altered: its hash
//! differs; its digest's signature fails) are handed over apart, marked
//! with why. When escrow holds an earlier version of an altered file that
//! hashes right, that original's events are the proven ones; likewise a
//! digest overwritten in escrow is read from its newest earlier version
//! whose signature verifies, and a file or digest under a delete marker
//! from the version under it. A log file a proven digest lists that escrow
//! does not hold at all is a problem (`log-missing`).
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

/// How many files are read at once (each decompressed under the caps of
/// [`MAX_UNCOMPRESSED`] and [`MAX_DIGEST_UNCOMPRESSED`]).
const READ_CONCURRENCY: usize = 4;

/// CloudTrail began in November 2013: no file is older.
const FIRST_YEAR: i64 = 2013;

/// A day holds at most this many proven events in memory; beyond, they are
/// sorted into runs in temporary files, merged when the day is handed over.
const SPILL_EVENTS: usize = 100_000;

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
    /// Days with log files (or missing ones).
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
    /// Log files a proven digest lists that escrow does not hold (or holds
    /// only under a delete marker).
    pub missing_files: u64,
    /// What the reader must know though it is no event: regions whose keys
    /// could not be had, folders left out.
    pub warnings: Vec<String>,
    /// Unproven files (the first [`MAX_PROBLEMS`]): file, kind, detail.
    pub problems: Vec<(String, String, String)>,
}

/// A day's proven events: in memory up to `spill` of them, beyond that
/// sorted into runs in anonymous temporary files, merged in time order when
/// the day is handed over. Memory stays with `spill` events whatever a day
/// holds (an intruder can flood a day with real, cheap calls).
struct DayBuffer {
    spill: usize,
    events: Vec<TimelineEvent>,
    runs: Vec<std::io::Lines<std::io::BufReader<std::fs::File>>>,
}

/// What a run keeps of an event (a proven one has no problem).
#[derive(Serialize, serde::Deserialize)]
struct Spilled {
    event: Event,
    log_file: String,
}

fn spill_error(e: impl std::fmt::Display) -> escrow_sync_core::Error {
    escrow_sync_core::Error::new(
        escrow_sync_core::ErrorKind::Transient,
        "spill",
        "a temporary file",
        format!("{e}: set TMPDIR to a folder with room"),
    )
}

fn order(e: &TimelineEvent) -> (i64, &str) {
    (e.event.epoch, e.event.event_id.as_str())
}

impl DayBuffer {
    fn new(spill: usize) -> Self {
        DayBuffer { spill: spill.max(1), events: Vec::new(), runs: Vec::new() }
    }

    fn push(&mut self, e: TimelineEvent) -> Result<()> {
        self.events.push(e);
        if self.events.len() >= self.spill { self.write_run() } else { Ok(()) }
    }

    /// The events of a proven log file that `query` selects.
    fn push_selected(&mut self, events: Vec<Event>, query: &EventQuery, file: &str) -> Result<()> {
        for event in events.into_iter().filter(|e| query.matches(e)) {
            let log_file = file.to_string();
            self.push(TimelineEvent { event, log_file, verified: true, problem: None })?;
        }
        Ok(())
    }

    fn write_run(&mut self) -> Result<()> {
        use std::io::{Seek, Write};
        self.events.sort_by(|a, b| order(a).cmp(&order(b)));
        let mut file = tempfile::tempfile().map_err(spill_error)?;
        {
            let mut w = std::io::BufWriter::new(&mut file);
            for e in self.events.drain(..) {
                serde_json::to_writer(&mut w, &Spilled { event: e.event, log_file: e.log_file })
                    .map_err(spill_error)?;
                w.write_all(b"\n").map_err(spill_error)?;
            }
            w.flush().map_err(spill_error)?;
        }
        file.rewind().map_err(spill_error)?;
        use std::io::BufRead;
        self.runs.push(std::io::BufReader::new(file).lines());
        Ok(())
    }

    /// Hands every event over in time order; returns how many.
    fn hand_over(mut self, sink: &mut dyn EventSink) -> Result<u64> {
        let mut n = 0;
        if self.runs.is_empty() {
            self.events.sort_by(|a, b| order(a).cmp(&order(b)));
            for e in self.events {
                n += 1;
                sink.event(e)?;
            }
            return Ok(n);
        }
        if !self.events.is_empty() {
            self.write_run()?;
        }
        let next = |run: &mut std::io::Lines<std::io::BufReader<std::fs::File>>| -> Result<Option<TimelineEvent>> {
            let Some(line) = run.next() else { return Ok(None) };
            let s: Spilled = serde_json::from_str(&line.map_err(spill_error)?).map_err(spill_error)?;
            let mut event = s.event;
            event.epoch = parse_rfc3339(&event.time).unwrap_or(0);
            Ok(Some(TimelineEvent { event, log_file: s.log_file, verified: true, problem: None }))
        };
        let mut heads: Vec<Option<TimelineEvent>> = Vec::with_capacity(self.runs.len());
        for run in &mut self.runs {
            heads.push(next(run)?);
        }
        loop {
            let Some(i) = (0..heads.len()).filter(|&i| heads[i].is_some()).min_by(|&a, &b| {
                order(heads[a].as_ref().unwrap()).cmp(&order(heads[b].as_ref().unwrap()))
            }) else {
                return Ok(n);
            };
            let e = std::mem::replace(&mut heads[i], next(&mut self.runs[i])?);
            if let Some(e) = e {
                n += 1;
                sink.event(e)?;
            }
        }
    }
}

/// One (account path, region) of a root, with its day folders.
struct Place {
    bucket: String,
    root: String,
    scope: String,
    region: String,
    days: BTreeSet<String>,
}

/// A region's name as AWS writes it (`us-east-1`, `us-gov-west-1`).
fn is_region(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Epoch seconds of the start of `yyyy/mm/dd`, when it is a real day
/// between CloudTrail's start and tomorrow.
fn day_start(day: &str) -> Option<i64> {
    let parts: Vec<&str> = day.split('/').collect();
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() != 3 || !digits(parts[0], 4) || !digits(parts[1], 2) || !digits(parts[2], 2) {
        return None;
    }
    let t = parse_rfc3339(&format!("{}T00:00:00Z", day.replace('/', "-")))?;
    // The parse must not have rolled the date over (02/30).
    let now = crate::time::epoch(std::time::SystemTime::now());
    (day_of(t) == day && parts[0].parse::<i64>().ok()? >= FIRST_YEAR && t <= now + 86_400)
        .then_some(t)
}

/// `yyyy/mm/dd` of an epoch second.
fn day_of(secs: i64) -> String {
    rfc3339(secs)[..10].replace('-', "/")
}

/// The day `n` days after `yyyy/mm/dd` (before, when negative).
fn add_days(day: &str, n: i64) -> String {
    parse_rfc3339(&format!("{}T00:00:00Z", day.replace('/', "-")))
        .map(|t| day_of(t + n * 86_400))
        .unwrap_or_default()
}

/// The day after `yyyy/mm/dd`.
fn next_day(day: &str) -> String {
    add_days(day, 1)
}

/// The real day folders under `folder` (`…/<yyyy>/<mm>/<dd>/`) that
/// `wanted` takes; others are named in `skipped`.
async fn day_folders(
    store: &dyn TrailStore,
    bucket: &str,
    folder: &str,
    wanted: &(dyn Fn(&str) -> bool + Sync),
    skipped: &mut Vec<String>,
) -> Result<BTreeSet<String>> {
    let mut days = BTreeSet::new();
    for y in store.folders(bucket, folder).await? {
        for m in store.folders(bucket, &y).await? {
            for d in store.folders(bucket, &m).await? {
                let day = format!("{}/{}/{}", last(&y), last(&m), last(&d));
                if day_start(&day).is_none() {
                    skipped.push(format!("s3://{bucket}/{d}: not a day folder CloudTrail writes"));
                } else if wanted(&day) {
                    days.insert(day);
                }
            }
        }
    }
    Ok(days)
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
    let mut summary = TimelineSummary::default();
    // Files are foldered by delivery, after their events (CloudTrail
    // delivers within minutes; two days leave room for late ones).
    let first = from.map(day_of);
    let last_day = to.map(|t| add_days(&day_of(t), 2));
    let wanted = move |day: &str| {
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
            let mut regions: BTreeSet<String> = BTreeSet::new();
            for marker in ["CloudTrail/", "CloudTrail-Digest/"] {
                for r in store.folders(bucket, &format!("{scope}{marker}")).await? {
                    if is_region(last(&r)) {
                        regions.insert(last(&r).to_string());
                    } else {
                        summary.warnings.push(format!("s3://{bucket}/{r}: not a region, left out"));
                    }
                }
            }
            for region in regions {
                let logs = format!("{scope}CloudTrail/{region}/");
                let digests = format!("{scope}CloudTrail-Digest/{region}/");
                let mut days =
                    day_folders(store, bucket, &logs, &wanted, &mut summary.warnings).await?;
                // A day whose log files are all gone (or under delete
                // markers) is found through its digests (a digest of a day
                // lists files of that day and the day before).
                let any = |_: &str| true;
                for d in day_folders(store, bucket, &digests, &any, &mut summary.warnings).await? {
                    for day in [add_days(&d, -1), d] {
                        if wanted(&day) {
                            days.insert(day);
                        }
                    }
                }
                places.push(Place {
                    bucket: bucket.clone(),
                    root: root.clone(),
                    scope: scope.strip_prefix(&root).unwrap_or(&scope).to_string(),
                    region,
                    days,
                });
            }
        }
    }
    let all_days: BTreeSet<&String> = places.iter().flat_map(|p| &p.days).collect();
    let (Some(first_day), Some(last_day)) = (all_days.first(), all_days.last()) else {
        return Ok(summary);
    };
    // Keys valid over the days read, asked region by region: a region whose
    // keys cannot be had (a planted folder name, CloudTrail unreachable)
    // leaves its digests unproven, and says so, instead of stopping.
    let now = crate::time::epoch(std::time::SystemTime::now());
    let key_from = day_start(first_day).unwrap_or(now).clamp(EARLIEST, now);
    let key_to =
        (day_start(last_day).unwrap_or(now) + 2 * 86_400).clamp(key_from, now.max(key_from));
    let regions: BTreeSet<String> = places.iter().map(|p| p.region.clone()).collect();
    let mut keyring = Keyring::default();
    for region in regions {
        match keys.keyring(&BTreeSet::from([region.clone()]), key_from, key_to).await {
            Ok(k) => keyring.extend(k),
            Err(e) => summary.warnings.push(format!(
                "CloudTrail's public keys of {region} could not be had ({}): its digests prove \
                 nothing, so its events are listed as unverified",
                e.chain()
            )),
        }
    }
    for day in all_days.iter().copied() {
        let (files, missing) = (summary.log_files, summary.missing_files);
        let mut proven = DayBuffer::new(SPILL_EVENTS);
        for place in places.iter().filter(|p| p.days.contains(day)) {
            read_day(store, &keyring, place, day, query, &mut proven, sink, &mut summary).await?;
        }
        if (summary.log_files, summary.missing_files) != (files, missing) {
            summary.days += 1;
        }
        summary.events += proven.hand_over(sink)?;
    }
    Ok(summary)
}

/// Log file validation began in 2015: keys are not asked for before.
const EARLIEST: i64 = 1_420_070_400;

/// A log file's hash as a digest lists it, and whether that digest is
/// proven by its signature.
type Signed = BTreeMap<String, (String, std::result::Result<(), Unproven>)>;

/// The log files the digests of `day` and the next day list. Each digest
/// is its current version when that verifies and names where it is, else
/// the newest earlier escrow version that does (an overwritten or
/// delete-marked digest), else its current content, unproven.
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
        let mut keys = store.list(&place.bucket, &folder).await?;
        keys.extend(store.deleted(&place.bucket, &folder).await?);
        let bucket = place.bucket.as_str();
        let mut reads = futures::stream::iter(keys)
            .map(|key| async move {
                let found = proven_digest(store, keyring, bucket, &key).await?;
                Ok::<_, escrow_sync_core::Error>((key, found))
            })
            .buffered(READ_CONCURRENCY);
        while let Some((_key, found)) = reads.try_next().await? {
            let Some((digest, proof)) = found else { continue };
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

/// A digest, parsed (`None`: it is not one) and checked: proven when it
/// names where it is kept and its signature verifies.
type Checked = (Option<Digest>, std::result::Result<(), Unproven>);

fn check_digest(keyring: &Keyring, bucket: &str, key: &str, obj: &crate::StoredObject) -> Checked {
    let here = format!("its digest s3://{bucket}/{key}");
    let unproven = |kind: FindingKind, why: &str| {
        Err(Unproven { kind: kind.as_str(), detail: format!("{here} {why}") })
    };
    if obj.over_cap() {
        return (None, unproven(FindingKind::DigestInvalidSignature, "is too large to be one"));
    }
    let parsed = gunzip_capped(&obj.body, MAX_DIGEST_UNCOMPRESSED)
        .ok()
        .and_then(|c| serde_json::from_slice::<Digest>(&c).ok().map(|d| (c, d)));
    let Some((content, digest)) = parsed else {
        return (None, unproven(FindingKind::DigestInvalidSignature, "is not a digest file"));
    };
    if digest.digest_s3_bucket != bucket || digest.digest_s3_object != key {
        let why = format!(
            "names s3://{}/{}: moved or forged",
            digest.digest_s3_bucket, digest.digest_s3_object
        );
        return (Some(digest), unproven(FindingKind::ChainBroken, &why));
    }
    match signature(keyring, &digest, &content, obj.metadata.get(SIGNATURE_META)) {
        Ok(()) => (Some(digest), Ok(())),
        Err((kind, why)) => (Some(digest), unproven(kind, &why)),
    }
}

/// The digest at `key` and what proves it (see [`digests`]); `None` when
/// nothing of it can be read as a digest.
async fn proven_digest(
    store: &dyn TrailStore,
    keyring: &Keyring,
    bucket: &str,
    key: &str,
) -> Result<Option<(Digest, std::result::Result<(), Unproven>)>> {
    let mut failed: Checked = (None, Ok(()));
    if let Some(obj) = store.get(bucket, key).await? {
        failed = check_digest(keyring, bucket, key, &obj);
        if let (Some(d), Ok(())) = failed {
            return Ok(Some((d, Ok(()))));
        }
    }
    for v in store.earlier_versions(bucket, key).await? {
        if let Some(obj) = store.get_version_object(bucket, key, &v.version_id).await?
            && let (Some(d), Ok(())) = check_digest(keyring, bucket, key, &obj)
        {
            return Ok(Some((d, Ok(()))));
        }
    }
    Ok(failed.0.map(|d| (d, failed.1)))
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

/// Reads one log file (its current version; `deleted`: it is under a
/// delete marker) and, when a proven digest lists it with another hash or
/// it is gone, the newest earlier version that hashes right.
async fn read_log(
    store: &dyn TrailStore,
    bucket: &str,
    key: String,
    deleted: bool,
    signed: &Signed,
) -> Result<Read> {
    let current = if deleted { None } else { store.get(bucket, &key).await? };
    let content = match &current {
        None => Err("a delete marker hides it in escrow".to_string()),
        Some(obj) if obj.over_cap() => Err(format!(
            "larger than {} MiB: not a CloudTrail file",
            crate::store::MAX_STORED_BYTES >> 20
        )),
        Some(obj) => gunzip_capped(&obj.body, MAX_UNCOMPRESSED)
            .map_err(|e| format!("not readable as gzip ({e})")),
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
            let (kind, why) = match &content {
                Ok(c) => (
                    FindingKind::LogAltered,
                    format!("SHA-256 {} but its digest says {hash}", sha256_hex(c)),
                ),
                Err(e) if current.is_none() => (FindingKind::LogMissing, e.clone()),
                Err(e) => (FindingKind::LogAltered, e.clone()),
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
            (Err(Unproven { kind: kind.as_str(), detail: why }), original)
        }
    };
    Ok(Read { key, content, proof, original })
}

/// Records an unproven file in the summary.
fn problem(summary: &mut TimelineSummary, file: &str, p: &Unproven) {
    if summary.problems.len() < MAX_PROBLEMS {
        summary.problems.push((file.to_string(), p.kind.to_string(), p.detail.clone()));
    }
}

/// Reads one day folder of one place.
#[allow(clippy::too_many_arguments)]
async fn read_day(
    store: &dyn TrailStore,
    keyring: &Keyring,
    place: &Place,
    day: &str,
    query: &EventQuery,
    proven: &mut DayBuffer,
    sink: &mut dyn EventSink,
    summary: &mut TimelineSummary,
) -> Result<()> {
    let signed = digests(store, keyring, place, day).await?;
    let folder = format!("{}{}CloudTrail/{}/{day}/", place.root, place.scope, place.region);
    let mut keys: Vec<(String, bool)> =
        store.list(&place.bucket, &folder).await?.into_iter().map(|k| (k, false)).collect();
    keys.extend(store.deleted(&place.bucket, &folder).await?.into_iter().map(|k| (k, true)));
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let signed = &signed;
    let mut reads = futures::stream::iter(keys)
        .map(|(key, deleted)| read_log(store, &place.bucket, key, deleted, signed))
        .buffered(READ_CONCURRENCY);
    while let Some(read) = reads.try_next().await? {
        seen.insert(read.key.clone());
        summary.log_files += 1;
        let file = format!("s3://{}/{}", place.bucket, read.key);
        if let Some((version, content)) = &read.original {
            let at = format!("{file}?versionId={version}");
            match parse_log_file(content) {
                Ok(events) => proven.push_selected(events, query, &at)?,
                Err(e) => problem(
                    summary,
                    &at,
                    &Unproven {
                        kind: FindingKind::LogAltered.as_str(),
                        detail: format!("proven by its digest, but its events cannot be read: {e}"),
                    },
                ),
            }
        }
        let events = match &read.content {
            Ok(c) => parse_log_file(c),
            Err(e) => Err(e.clone()),
        };
        match (read.proof, events) {
            (Ok(()), Ok(events)) => {
                summary.verified_files += 1;
                proven.push_selected(events, query, &file)?;
            }
            (proof, events) => {
                if proof.as_ref().is_err_and(|p| p.kind == FindingKind::LogMissing.as_str()) {
                    summary.missing_files += 1;
                } else {
                    summary.unverified_files += 1;
                }
                let problem_here = match proof {
                    Err(p) => p,
                    Ok(()) => Unproven {
                        kind: FindingKind::LogAltered.as_str(),
                        detail: "proven by its digest, but its events cannot be read".into(),
                    },
                };
                let problem_here = match (&events, &read.original) {
                    (_, Some((v, _))) => Unproven {
                        detail: format!(
                            "{}; escrow holds the original as version {v}",
                            problem_here.detail
                        ),
                        ..problem_here
                    },
                    (Err(e), None) if read.content.is_ok() => Unproven {
                        detail: format!("{}; unreadable: {e}", problem_here.detail),
                        ..problem_here
                    },
                    _ => problem_here,
                };
                problem(summary, &file, &problem_here);
                for event in events.unwrap_or_default().into_iter().filter(|e| query.matches(e)) {
                    summary.unverified_events += 1;
                    sink.event(TimelineEvent {
                        event,
                        log_file: file.clone(),
                        verified: false,
                        problem: Some(problem_here.clone()),
                    })?;
                }
            }
        }
    }
    // What a proven digest lists in this folder and escrow does not hold.
    for (key, (_, proof)) in signed.range(folder.clone()..) {
        if !key.starts_with(&folder) {
            break;
        }
        if proof.is_ok() && !seen.contains(key) {
            summary.missing_files += 1;
            problem(
                summary,
                &format!("s3://{}/{key}", place.bucket),
                &Unproven {
                    kind: FindingKind::LogMissing.as_str(),
                    detail: "listed by a proven digest, but escrow does not hold it: its events \
                             are lost to this timeline (run verify on the job)"
                        .into(),
                },
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_past_the_spill_size_comes_back_whole_and_in_order() {
        let mut buffer = DayBuffer::new(3);
        let times = [7, 3, 9, 1, 8, 2, 6, 5, 4, 0, 3];
        for (i, t) in times.iter().enumerate() {
            let mut event = Event::from_record(serde_json::json!({
                "eventTime": rfc3339(1_800_000_000 + t), "eventID": format!("e{i}"),
                "requestParameters": {"key": "a\nb"}}));
            event.epoch = 1_800_000_000 + t;
            buffer
                .push(TimelineEvent { event, log_file: "f".into(), verified: true, problem: None })
                .unwrap();
        }
        assert_eq!(buffer.runs.len(), 3);
        let mut out = Vec::new();
        let mut sink = |e: TimelineEvent| {
            out.push((e.event.epoch - 1_800_000_000, e.event.resources.clone()));
            Ok(())
        };
        assert_eq!(buffer.hand_over(&mut sink).unwrap(), times.len() as u64);
        let got: Vec<i64> = out.iter().map(|(t, _)| *t).collect();
        let mut want = times.to_vec();
        want.sort();
        assert_eq!(got, want);
        assert!(out.iter().all(|(_, r)| r == &["key=a\nb".to_string()]));
    }
}
