//! Export generations: the primary's table written into an escrow bucket
//! as a point-in-time generation,
//!
//! ```text
//! <dest_prefix><table>/<generation>/data/<segment>-<part>.json.gz   DynamoDB JSON lines, gzip
//! <dest_prefix><table>/<generation>/schema.json                     DescribeTable, TTL, PITR, tags
//! <dest_prefix><table>/<generation>/manifest.json                   counts, bytes, per-file SHA-256
//! ```
//!
//! the data files in the format DynamoDB ImportTable reads
//! (`InputFormat=DYNAMODB_JSON`, `InputCompressionType=GZIP`). A generation
//! is complete once its `manifest.json` exists, which is written last.
//!
//! Files go through any [`Sink`] (the escrow bucket's `S3Sink`, with the
//! escrow key and Object Lock as configured), each with its SHA-256 for the
//! store to check. A segment's checkpoint is saved after each of its files
//! is written, so an interrupted generation resumes where it stopped: the
//! next run continues the same generation, rewriting at most the one file
//! that was written after the last checkpoint.
//!
//! Every run of an export job writes a new generation: that is its
//! purpose (a table kept incrementally is the `dest_table` job).
//!
//! A native export is written by DynamoDB into a staging prefix
//! (`<staging_prefix><table>/<generation>/`, the only place the primary may
//! write); its files are checked against DynamoDB's manifest there and
//! copied into the generation under `native/` with escrow credentials.
//! Each completed generation is recorded (its `manifest.json`'s key and
//! SHA-256) in the run manifest through the item log: `verify` and
//! `restore` trust only generations so recorded ([`choose_generation`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use escrow_sync_core::poll::{Polled, Polling, poll_until};
use escrow_sync_core::{
    CancellationToken, Error, ErrorKind, Finding, Item, ItemKind, ItemLog, ItemOutcome, ItemRecord,
    KeyDigest, Mode, Payload, ProgressEvent, ProgressFn, Report, Result, RetryPolicy, Scope, Sink,
    Source,
};

use crate::checkpoint::{CheckpointStore, SavedScan};
use crate::compare::{compare, tally};
use crate::incremental::{
    self, Change, ChangeLine, ExportPlan, KIND_FULL, KIND_INCREMENTAL, Link, ViewType, Watermark,
    check_base, micros, plan_export, read_changes_capped, time_text,
};
use crate::json::{Record, from_line, to_line};
use crate::keys::{KeySchema, KeySetDigest, content_digest};
use crate::scan::{Checkpoint, ScanOptions, TableScanner, starting_points};
use crate::table::TableInfo;

/// How long a native-incremental job's chain of incremental generations
/// grows on top of its full export before a run makes a full export again
/// (`full_export_every`, 7 days).
pub const DEFAULT_FULL_EXPORT_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long after its window ended a started (checkpointed) export is
/// still waited on and completed; an older one is dropped and the run
/// plans anew (DynamoDB exports a window of 24 hours at most).
pub const RESUME_LIMIT: Duration = incremental::MAX_WINDOW;

/// The manifest's format tag.
pub const FORMAT: &str = "escrow-sync-dynamodb-export/1";

/// The most bytes read back from escrow for one manifest or schema object
/// (`manifest.json`, `schema.json`, a native export's
/// `manifest-summary.json` / `manifest-files.json`). escrow-sync writes a
/// few hundred bytes per data file: 64 MiB is some 200,000 files.
pub const MANIFEST_CAP: u64 = 64 << 20;

/// The longest line of a data file: one item in DynamoDB JSON. DynamoDB
/// items are at most 400 KB; base64 (binary) and JSON escapes (`\u0001`, six
/// bytes for one) make the line at most about six times that.
pub const LINE_CAP: u64 = 8 << 20;

/// The smallest decompressed cap of a data file, whatever `file_size` says.
pub const DATA_FILE_CAP_MIN: u64 = 256 << 20;

/// The default uncompressed size of a data file (`file_size`).
pub const DEFAULT_FILE_SIZE: u64 = 64 << 20;

/// The most decompressed bytes read back from one data file of a job whose
/// data files hold `file_size` bytes: a scan's file ends at the first page
/// (at most 1 MB of items, a few MB of JSON) that takes it past
/// `file_size`, so four times `file_size`, and never under
/// [`DATA_FILE_CAP_MIN`] (256 MiB; native exports' files are DynamoDB's own
/// size). The compressed object is capped alike: gzip does not grow data by
/// more than a few bytes per 16 KiB.
pub fn data_file_cap(file_size: u64) -> u64 {
    file_size.saturating_mul(4).max(DATA_FILE_CAP_MIN)
}

fn over_cap(operation: &str, name: &str, what: &str, cap: u64) -> Error {
    Error::new(
        ErrorKind::PreconditionFailed,
        operation.to_string(),
        name,
        format!(
            "{what} is over the cap of {cap} bytes: escrow-sync did not write it so (an altered \
             or foreign object?); check the object's versions in the escrow bucket, and raise \
             file_size only if the job's files are really that large"
        ),
    )
}

/// Collects `payload`, an escrow object named `name`, failing as soon as it
/// is over `cap` bytes (before reading it when its length says so).
pub async fn collect_capped(payload: Payload, name: &str, cap: u64) -> Result<Bytes> {
    match payload {
        Payload::Bytes { len, mut stream, .. } => {
            if len > cap {
                return Err(over_cap("read escrow object", name, "the object", cap));
            }
            let mut buf = Vec::with_capacity(len as usize);
            while let Some(chunk) = stream.try_next().await? {
                if (buf.len() + chunk.len()) as u64 > cap {
                    return Err(over_cap("read escrow object", name, "the object", cap));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(buf))
        }
        Payload::Ranged(r) if r.len() > cap => {
            Err(over_cap("read escrow object", name, "the object", cap))
        }
        other => Ok(other.collect().await?.0),
    }
}

/// The generation id for a run started at `started` (RFC 3339): the time
/// to the millisecond without separators, e.g. `20261128T193500123Z`, of
/// fixed width so that ids sort by time.
pub fn generation_id(started: &str) -> String {
    let body = started.trim_end_matches('Z');
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    let millis: String = fraction.chars().chain(std::iter::repeat('0')).take(3).collect();
    let whole: String = whole.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{whole}{millis}Z")
}

/// The generation `restore` and `verify` take, and what they say about
/// the others ([`choose_generation`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationChoice {
    /// The generation taken, if any.
    pub generation: Option<String>,
    /// The SHA-256 (hex) of its `manifest.json` as a run manifest recorded
    /// it; `None` when no manifest bucket is configured.
    pub manifest_sha256: Option<String>,
    /// Generations passed over because no run manifest records them.
    pub ignored: Vec<String>,
    /// Notes for the report (each ignored generation, named).
    pub notes: Vec<String>,
    /// Warnings for the report (no run manifests to tell generations apart).
    pub warnings: Vec<String>,
}

/// Chooses the generation to trust among `present` (the complete
/// generations listed under `location`, e.g. `s3://bucket/dynamodb/orders/`):
/// the newest one at or before `bound` (a generation id) that a run
/// manifest records in `recorded` (generation id -> SHA-256 of its
/// `manifest.json`). A generation no run manifest records was not written
/// by escrow-sync (the primary's native-export grant, or anyone else with
/// write access, may have planted it): it is ignored with a note naming it.
/// Without run manifests (`recorded` is `None`) the newest is taken, with a
/// warning that a planted generation cannot be told apart.
pub fn choose_generation(
    present: &[String],
    recorded: Option<&BTreeMap<String, String>>,
    bound: Option<&str>,
    location: &str,
) -> GenerationChoice {
    let mut sorted: Vec<&String> =
        present.iter().filter(|g| bound.is_none_or(|b| g.as_str() <= b)).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut choice = GenerationChoice::default();
    let Some(recorded) = recorded else {
        choice.generation = sorted.last().map(|g| g.to_string());
        if choice.generation.is_some() {
            choice.warnings.push(format!(
                "no run manifests ([escrow] manifest_bucket is not set): the newest generation \
                 under {location} is taken as it is, and one planted there (by the primary's \
                 native-export grant or anyone else who can write the bucket) cannot be told \
                 apart from escrow-sync's own; set [escrow] manifest_bucket so that runs record \
                 the generations they write"
            ));
        }
        return choice;
    };
    for g in sorted.into_iter().rev() {
        match recorded.get(g.as_str()) {
            Some(sha) => {
                choice.generation = Some(g.clone());
                choice.manifest_sha256 = Some(sha.clone());
                break;
            }
            None => {
                choice.ignored.push(g.clone());
                choice.notes.push(format!(
                    "generation {g} under {location}: not written by escrow-sync (no run \
                     manifest records it): ignored"
                ));
            }
        }
    }
    choice
}

/// Checks a generation's `manifest.json` (`data`, the object `name`)
/// against the SHA-256 a run manifest recorded for it.
pub fn check_manifest_sha256(data: &[u8], expected: &str, name: &str) -> Result<()> {
    let actual = hex(&Sha256::digest(data));
    if actual.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::PreconditionFailed,
        "read manifest",
        name,
        format!(
            "its SHA-256 is {actual} but the run manifest that recorded this generation says \
             {expected}: the manifest was replaced after escrow-sync wrote it, so the generation \
             is not trusted; look at the object's versions in the escrow bucket (the version \
             escrow-sync wrote has the recorded SHA-256) and find out who could write there"
        ),
    ))
}

/// The key, relative to the bucket, under which a run manifest records a
/// generation's `manifest.json`: `<dest_prefix><table>/<generation>/manifest.json`.
pub fn manifest_key(table_prefix: &str, generation: &str) -> String {
    format!("{table_prefix}{generation}/manifest.json")
}

/// One data file of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// The key relative to the generation, e.g. `data/00003-00000.json.gz`.
    pub key: String,
    /// Items in the file.
    pub items: u64,
    /// Bytes of DynamoDB JSON before compression.
    pub bytes: u64,
    /// Bytes stored.
    pub compressed_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

impl FileStat {
    fn json(&self) -> Value {
        json!({
            "key": self.key,
            "items": self.items,
            "bytes": self.bytes,
            "compressed_bytes": self.compressed_bytes,
            "sha256": self.sha256,
        })
    }

    fn from_json(v: &Value) -> Option<FileStat> {
        Some(FileStat {
            key: v["key"].as_str()?.to_string(),
            items: v["items"].as_u64()?,
            bytes: v["bytes"].as_u64()?,
            compressed_bytes: v["compressed_bytes"].as_u64()?,
            sha256: v["sha256"].as_str()?.to_string(),
        })
    }
}

fn data_key(segment: u32, part: u32) -> String {
    format!("data/{segment:05}-{part:05}.json.gz")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One data file being written: DynamoDB JSON lines, gzip-compressed as
/// they come, with counts.
pub struct DataFile {
    encoder: GzEncoder<Vec<u8>>,
    items: u64,
    bytes: u64,
}

impl Default for DataFile {
    fn default() -> Self {
        Self::new()
    }
}

impl DataFile {
    /// An empty file.
    pub fn new() -> Self {
        DataFile { encoder: GzEncoder::new(Vec::new(), Compression::default()), items: 0, bytes: 0 }
    }

    /// Appends one item as one line.
    pub fn push(&mut self, record: &Record) -> Result<()> {
        let line = to_line(record);
        self.encoder
            .write_all(line.as_bytes())
            .and_then(|_| self.encoder.write_all(b"\n"))
            .map_err(|e| {
                Error::new(ErrorKind::Failed, "gzip", "export data file", e.to_string())
            })?;
        self.items += 1;
        self.bytes += line.len() as u64 + 1;
        Ok(())
    }

    /// Items so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Uncompressed bytes so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The compressed file.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.encoder
            .finish()
            .map_err(|e| Error::new(ErrorKind::Failed, "gzip", "export data file", e.to_string()))
    }
}

/// Gunzips `data` and reads its DynamoDB JSON lines, with the cap of a job
/// of the default `file_size` ([`data_file_cap`]).
pub fn read_data_file(data: &[u8], name: &str) -> Result<Vec<Record>> {
    read_data_file_capped(data, name, data_file_cap(DEFAULT_FILE_SIZE))
}

/// Gunzips `data` (the data file `name`) as a stream and reads its
/// DynamoDB JSON lines; fails once more than `cap` bytes come out, or a
/// line is longer than [`LINE_CAP`], before holding them (a gzip bomb
/// costs at most a line's worth of memory beyond the items).
pub fn read_data_file_capped(data: &[u8], name: &str, cap: u64) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for_each_line(data, name, cap, |line| {
        out.push(line?);
        Ok(())
    })?;
    Ok(out)
}

/// Counts the items and decompressed bytes of the data file `name` as
/// [`read_data_file_capped`] reads it, holding one line at a time.
pub fn count_data_file(data: &[u8], name: &str, cap: u64) -> Result<(u64, u64)> {
    let mut items = 0;
    let bytes = for_each_line(data, name, cap, |line| {
        line?;
        items += 1;
        Ok(())
    })?;
    Ok((items, bytes))
}

/// Streams the lines of a gzip data file into `f` (each parsed); returns
/// the decompressed bytes.
fn for_each_line(
    data: &[u8],
    name: &str,
    cap: u64,
    mut f: impl FnMut(Result<Record>) -> Result<()>,
) -> Result<u64> {
    let fail = |what: String| Error::new(ErrorKind::Failed, "read export file", name, what);
    for_each_text_line(data, name, cap, |text| f(from_line(text).map_err(|e| fail(e.to_string()))))
}

/// Streams the non-empty lines of a gzip data file (at most `cap` bytes
/// decompressed, each line at most [`LINE_CAP`]) into `f`; returns the
/// decompressed bytes.
pub(crate) fn for_each_text_line(
    data: &[u8],
    name: &str,
    cap: u64,
    mut f: impl FnMut(&str) -> Result<()>,
) -> Result<u64> {
    use std::io::BufRead;
    let fail = |what: String| Error::new(ErrorKind::Failed, "read export file", name, what);
    let mut reader = std::io::BufReader::new(GzDecoder::new(data).take(cap.saturating_add(1)));
    let mut total = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(LINE_CAP + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| fail(format!("not gzip text: {e}")))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        if total > cap {
            return Err(over_cap("read export file", name, "the decompressed file", cap));
        }
        if n as u64 > LINE_CAP && line.last() != Some(&b'\n') {
            return Err(over_cap("read export file", name, "a line (one item)", LINE_CAP));
        }
        let text = std::str::from_utf8(&line).map_err(|e| fail(format!("not UTF-8 text: {e}")))?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            continue;
        }
        f(text)?;
    }
}

/// Reads the generation manifest `name` (`manifest.json`, at most
/// [`MANIFEST_CAP`] bytes) and checks its schema: an object of format
/// [`FORMAT`] whose `files` each have a key (relative, no `..`), item and
/// byte counts and a SHA-256, adding up to its `item_count`. Anything else is
/// an error naming the object and what to do.
pub fn parse_manifest(data: &[u8], name: &str) -> Result<Value> {
    let bad = |why: String| {
        Error::new(
            ErrorKind::PreconditionFailed,
            "read manifest",
            name,
            format!(
                "not a valid export generation manifest: {why}; the generation cannot be \
                 checked against it: look at the object's earlier versions in the escrow \
                 bucket, and run escrow-sync run to write a new generation"
            ),
        )
    };
    if data.len() as u64 > MANIFEST_CAP {
        return Err(over_cap("read manifest", name, "the manifest", MANIFEST_CAP));
    }
    let v: Value = serde_json::from_slice(data).map_err(|e| bad(format!("not JSON ({e})")))?;
    if !v.is_object() {
        return Err(bad("not a JSON object".into()));
    }
    if v["format"].as_str() != Some(FORMAT) {
        return Err(bad(format!("format is {}, not {FORMAT:?}", v["format"])));
    }
    let files = v["files"].as_array().ok_or_else(|| bad("no \"files\" list".into()))?;
    let mut items = 0u64;
    for (n, f) in files.iter().enumerate() {
        let stat = FileStat::from_json(f).ok_or_else(|| {
            bad(format!("files[{n}] lacks a key, items, bytes, compressed_bytes or sha256"))
        })?;
        if stat.key.is_empty()
            || stat.key.starts_with('/')
            || stat.key.split('/').any(|p| p == ".." || p == ".")
        {
            return Err(bad(format!(
                "files[{n}] has key {:?}, not a path in the generation",
                stat.key
            )));
        }
        if stat.sha256.len() != 64 || !stat.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "files[{n}] has sha256 {:?}, not a SHA-256 in hex",
                stat.sha256
            )));
        }
        items = items.saturating_add(stat.items);
    }
    match v["item_count"].as_u64() {
        Some(count) if count == items => Ok(v),
        Some(count) => Err(bad(format!("item_count is {count} but its files hold {items} items"))),
        None => Err(bad("no item_count".into())),
    }
}

/// Refuses a native export of `source` (for job `job`) when point-in-time
/// recovery is off: ExportTableToPointInTime needs it.
pub fn check_native_source(job: &str, source: &TableInfo) -> Result<()> {
    if source.pitr {
        return Ok(());
    }
    Err(Error::invalid_config(format!(
        "job {job}: mode = \"native-export\" needs point-in-time recovery on source table {}, and \
         it is off: enable it in the primary (aws dynamodb update-continuous-backups --table-name \
         {} --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true) or use mode = \
         \"scan\" (mode = \"native-incremental\" needs it too)",
        source.name(),
        source.name()
    )))
}

fn secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn from_secs(v: &Value) -> Option<std::time::SystemTime> {
    Some(std::time::UNIX_EPOCH + Duration::from_secs(v.as_u64()?))
}

/// The RFC 3339 time a generation id names (`20261128T193500123Z`).
fn generation_time(id: &str) -> String {
    let d = id.get(..15).unwrap_or_default();
    match (d.get(..4), d.get(4..6), d.get(6..8), d.get(9..11), d.get(11..13), d.get(13..15)) {
        (Some(y), Some(mo), Some(da), Some(h), Some(mi), Some(se)) => {
            format!("{y}-{mo}-{da}T{h}:{mi}:{se}Z")
        }
        _ => String::new(),
    }
}

/// A duration as config would write it (`7d`, `12h`, `90m`, `30s`).
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The plan of a started export, as its checkpoint keeps it.
fn plan_to_json(plan: &ExportPlan) -> Value {
    match plan {
        ExportPlan::Full { at, .. } => json!({"kind": KIND_FULL, "at": secs(*at)}),
        ExportPlan::Incremental { base, from, to } => json!({
            "kind": KIND_INCREMENTAL, "base": base, "from": secs(*from), "to": secs(*to)
        }),
        ExportPlan::Skip { .. } => Value::Null,
    }
}

fn plan_from_json(v: &Value) -> Option<ExportPlan> {
    match v["kind"].as_str()? {
        KIND_FULL => Some(ExportPlan::Full { at: from_secs(&v["at"])?, reason: String::new() }),
        KIND_INCREMENTAL => Some(ExportPlan::Incremental {
            base: v["base"].as_str()?.to_string(),
            from: from_secs(&v["from"])?,
            to: from_secs(&v["to"])?,
        }),
        _ => None,
    }
}

/// Refuses a finished export whose description is not the export asked
/// for: another export type, or another window or export time than
/// requested (a watermark comes from what escrow-sync asked, checked here).
pub(crate) fn check_reported(
    plan: &ExportPlan,
    d: &aws_sdk_dynamodb::types::ExportDescription,
    arn: &str,
) -> Result<()> {
    use aws_sdk_dynamodb::types::ExportType;
    let refuse = |what: String| {
        Error::new(
            ErrorKind::PreconditionFailed,
            "dynamodb:DescribeExport",
            arn,
            format!("{what}: not the export escrow-sync asked for; the next run asks again"),
        )
    };
    let same = |t: Option<&aws_smithy_types::DateTime>, want: std::time::SystemTime| {
        t.is_none_or(|t| t.secs() == secs(want) as i64)
    };
    let shown = |t: Option<&aws_smithy_types::DateTime>| {
        t.map_or("none".to_string(), |t| format!("{} s since 1970", t.secs()))
    };
    match plan {
        ExportPlan::Incremental { from, to, .. } => {
            // DynamoDB reports an incremental export's type and window: an
            // answer without them is not trusted.
            match d.export_type() {
                Some(ExportType::IncrementalExport) => {}
                Some(t) => return Err(refuse(format!("DynamoDB reports a {} export", t.as_str()))),
                None => return Err(refuse("DynamoDB reports no export type".into())),
            }
            let Some(spec) = d.incremental_export_specification() else {
                return Err(refuse("DynamoDB reports no incremental export window".into()));
            };
            if spec.export_from_time().is_none()
                || spec.export_to_time().is_none()
                || !same(spec.export_from_time(), *from)
                || !same(spec.export_to_time(), *to)
            {
                return Err(refuse(format!(
                    "DynamoDB reports the window {} to {}, escrow-sync asked for {} to {}",
                    shown(spec.export_from_time()),
                    shown(spec.export_to_time()),
                    time_text(*from),
                    time_text(*to)
                )));
            }
        }
        ExportPlan::Full { at, .. } => {
            if let Some(t) = d.export_type()
                && *t != ExportType::FullExport
            {
                return Err(refuse(format!("DynamoDB reports a {} export", t.as_str())));
            }
            // A full export of a native-incremental job sets the
            // watermark: DynamoDB must report the time it exported.
            if d.export_time().is_none() || !same(d.export_time(), *at) {
                return Err(refuse(format!(
                    "DynamoDB reports the export time {}, escrow-sync asked for {}",
                    shown(d.export_time()),
                    time_text(*at)
                )));
            }
        }
        ExportPlan::Skip { .. } => {}
    }
    Ok(())
}

/// The end of the window a plan exports (its export time for a full one).
fn plan_end(plan: &ExportPlan) -> Option<std::time::SystemTime> {
    match plan {
        ExportPlan::Full { at, .. } => Some(*at),
        ExportPlan::Incremental { to, .. } => Some(*to),
        ExportPlan::Skip { .. } => None,
    }
}

/// An error reading what DynamoDB staged (a data file or its manifest): one
/// that another try would meet again (not gzip, not UTF-8, not DynamoDB
/// JSON, …) is [`ErrorKind::PreconditionFailed`], which drops the
/// checkpoint so that the next run asks for a new export rather than
/// re-reading the same bad file every run; a passing failure (throttled,
/// transient, access denied, cancelled) stays as it is.
fn staged_error(e: Error) -> Error {
    match e.kind() {
        ErrorKind::PreconditionFailed
        | ErrorKind::Throttled
        | ErrorKind::Transient
        | ErrorKind::AccessDenied
        | ErrorKind::Cancelled => e,
        _ => Error::new(
            ErrorKind::PreconditionFailed,
            "copy native export",
            "staged export",
            format!("{}; the next run asks for a new export", e.chain()),
        ),
    }
}

/// The decompressed length of a gzip data file (already read once, under
/// its cap).
fn gunzipped_len(data: &[u8]) -> u64 {
    for_each_text_line(data, "", u64::MAX, |_| Ok(())).unwrap_or(0)
}

/// The sink's state kept with the checkpoints: which generation is being
/// written, each segment's next file number and the SHA-256 of every file
/// written so far (the checkpoint table is escrow's: a resumed generation
/// takes a file an earlier run wrote only when it is still that file).
#[derive(Debug, Clone, Default)]
struct Progress {
    generation: String,
    next_part: BTreeMap<u32, u32>,
    sha256: BTreeMap<String, String>,
}

impl Progress {
    fn to_text(&self) -> String {
        json!({"generation": self.generation, "next_part": self.next_part, "sha256": self.sha256})
            .to_string()
    }

    fn from_text(text: &str) -> Option<Progress> {
        let v: Value = serde_json::from_str(text).ok()?;
        let generation = v["generation"].as_str()?.to_string();
        let next_part = v["next_part"]
            .as_object()?
            .iter()
            .filter_map(|(k, n)| Some((k.parse().ok()?, n.as_u64()? as u32)))
            .collect();
        let sha256 = v["sha256"]
            .as_object()
            .map(|m| {
                m.iter().filter_map(|(k, s)| Some((k.clone(), s.as_str()?.to_string()))).collect()
            })
            .unwrap_or_default();
        Some(Progress { generation, next_part, sha256 })
    }
}

struct State {
    report: Report,
    checkpoints: BTreeMap<u32, Checkpoint>,
    progress: Progress,
    written: BTreeMap<String, FileStat>,
}

/// A DynamoDB table-to-export-generation job.
///
/// It is a [`escrow_sync_core::Job`]: its `execute(mode, ctx)` takes
/// cancellation, progress, the item log and the retry policy (of the scan's
/// reads and of each file write) from the
/// [`escrow_sync_core::JobContext`], in place of what
/// [`ExportJob::with_cancellation`], [`ExportJob::with_progress`],
/// [`ExportJob::with_item_log`] and [`ExportJob::with_retry`] set for
/// [`ExportJob::execute`]. It has no mass-change breaker: each run writes a
/// new generation and replaces nothing escrow holds.
#[derive(Clone)]
pub struct ExportJob {
    name: String,
    primary: Client,
    source: TableInfo,
    source_account: String,
    keys: KeySchema,
    files: Arc<dyn Sink>,
    reader: Arc<dyn Source>,
    location: String,
    prefix: String,
    staging: String,
    options: ScanOptions,
    read_units: f64,
    workers: usize,
    file_size: usize,
    checkpoints: Option<CheckpointStore>,
    started: String,
    cancel: CancellationToken,
    progress: Option<ProgressFn>,
    retry: RetryPolicy,
    difference_limit: usize,
    native: Option<Native>,
    incremental: Option<ViewType>,
    full_export_every: Duration,
    item_log: Option<ItemLog>,
    recorded: Option<BTreeMap<String, String>>,
}

/// One data file of a native export in the staging prefix, as DynamoDB's
/// manifest describes it.
pub(crate) struct StagedFile {
    /// The key relative to the generation's staging prefix.
    pub(crate) key: String,
    /// Items, as manifest-files.json says.
    pub(crate) items: Option<u64>,
    /// MD5 of the object, base64, as manifest-files.json says.
    pub(crate) md5: Option<String>,
}

/// The default staging prefix of native exports for `dest_prefix`:
/// `<dest_prefix>.staging/`, beside (not under) the generations
/// `<dest_prefix><table>/`.
pub fn default_staging_prefix(dest_prefix: &str) -> String {
    escrow_sync_core::layout::staging_prefix(dest_prefix)
}

/// How a native export is asked for and waited on.
#[derive(Debug, Clone)]
pub(crate) struct Native {
    bucket: String,
    bucket_owner: String,
    kms_key_id: Option<String>,
    timeout: Duration,
    max_poll: Duration,
}

impl Native {
    /// Exports into `bucket` (owned by `bucket_owner`), encrypted with
    /// `kms_key_id` when given; waited on for 6 hours at most, polled at
    /// most every 30 s.
    pub(crate) fn new(
        bucket: impl Into<String>,
        bucket_owner: impl Into<String>,
        kms_key_id: Option<String>,
    ) -> Self {
        Native {
            bucket: bucket.into(),
            bucket_owner: bucket_owner.into(),
            kms_key_id,
            timeout: Duration::from_secs(6 * 3600),
            max_poll: Duration::from_secs(30),
        }
    }

    /// Waits at most `timeout`, polling at most every `max_poll`.
    pub(crate) fn with_timeout(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.timeout = timeout;
        self.max_poll = max_poll.max(Duration::from_millis(1));
        self
    }
}

/// Where generations go: the escrow bucket, as a [`Sink`] to write files
/// and a [`Source`] to read them back (resumed generations, verify).
#[derive(Clone)]
pub struct ExportTarget {
    /// Writes files (the escrow bucket's `S3Sink`, with its protection).
    pub files: Arc<dyn Sink>,
    /// Reads the same bucket.
    pub reader: Arc<dyn Source>,
    /// The bucket as reports name it, e.g. `s3://escrow-exports/`.
    pub location: String,
    /// The key prefix of every table's generations, e.g. `dynamodb/`.
    pub dest_prefix: String,
}

impl ExportJob {
    /// A job named `name` exporting `source` (read with `primary`, the
    /// reader role's client) into `target`; `started` is the run's start
    /// time (RFC 3339), which names a new generation.
    pub fn new(
        name: impl Into<String>,
        primary: Client,
        source: TableInfo,
        source_account: impl Into<String>,
        target: ExportTarget,
        started: impl Into<String>,
    ) -> Result<Self> {
        let keys = source.key_schema()?;
        let ExportTarget { files, reader, location, dest_prefix } = target;
        let prefix = format!("{dest_prefix}{}/", source.name());
        let staging = default_staging_prefix(&dest_prefix);
        Ok(ExportJob {
            name: name.into(),
            primary,
            read_units: source.read_budget(25),
            keys,
            source,
            source_account: source_account.into(),
            files,
            reader,
            location,
            prefix,
            staging,
            options: ScanOptions::new(),
            workers: 8,
            file_size: 64 << 20,
            checkpoints: None,
            started: started.into(),
            cancel: CancellationToken::new(),
            progress: None,
            retry: RetryPolicy::default(),
            difference_limit: 1000,
            native: None,
            incremental: None,
            full_export_every: DEFAULT_FULL_EXPORT_EVERY,
            item_log: None,
            recorded: None,
        })
    }

    /// Native export: instead of scanning, ask the primary's DynamoDB
    /// (ExportTableToPointInTime, through the reader role) to write the
    /// generation's data into `bucket` (owned by `bucket_owner`, the escrow
    /// account; encrypted with `kms_key_id` when given), wait for it, then
    /// write `schema.json` and `manifest.json` beside it. Costs the source
    /// no read capacity; needs point-in-time recovery on the source.
    pub fn with_native_export(
        mut self,
        bucket: impl Into<String>,
        bucket_owner: impl Into<String>,
        kms_key_id: Option<String>,
    ) -> Self {
        self.native = Some(Native::new(bucket, bucket_owner, kms_key_id));
        self
    }

    /// Native incremental export (`mode = "native-incremental"`, with
    /// [`ExportJob::with_native_export`]): each run exports only the
    /// changes since the watermark of the newest generation a run manifest
    /// records ([`ExportJob::with_recorded_generations`]), with the `view`
    /// asked for, and stores them as an incremental generation; a first run,
    /// a gap over 24 hours or no recorded generation falls back to a full
    /// export, and a run within 15 minutes of the watermark exports nothing
    /// ([`crate::incremental::plan_export`]).
    pub fn with_incremental(mut self, view: ViewType) -> Self {
        self.incremental = Some(view);
        self
    }

    /// Native incremental export: how long a chain of incremental
    /// generations may grow on top of its full export before a run makes a
    /// full export again (default [`DEFAULT_FULL_EXPORT_EVERY`], 7 days):
    /// `verify` and `restore` read the whole chain, and one lost
    /// generation breaks every later point of it.
    pub fn with_full_export_every(mut self, every: Duration) -> Self {
        self.full_export_every = every.max(Duration::from_secs(1));
        self
    }

    /// Native export: the key prefix DynamoDB writes exports into (default
    /// `<dest_prefix>.staging/`, see [`default_staging_prefix`]), the only
    /// place the generated bucket policy lets the primary's reader role
    /// write. Each export lands in `<staging_prefix><table>/<generation>/`;
    /// escrow-sync checks its files against DynamoDB's manifest and copies
    /// them into the generation with escrow credentials.
    pub fn with_staging_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.staging = prefix.into();
        self
    }

    /// Native export: how long to wait for the export (default 6 hours; a
    /// run that stops waiting leaves a checkpoint and the next run waits on).
    pub fn with_export_timeout(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.native = self.native.take().map(|n| n.with_timeout(timeout, max_poll));
        self
    }

    /// Refuses a native export of a source without point-in-time recovery.
    pub fn check(&self) -> Result<()> {
        if self.native.is_some() {
            check_native_source(&self.name, &self.source)?;
        }
        Ok(())
    }

    /// Scan options (segments, consistency, page size, retries).
    pub fn with_scan_options(mut self, options: ScanOptions) -> Self {
        self.options = options;
        self
    }

    /// The read budget as a percentage of the source's read capacity.
    pub fn with_read_capacity_percent(mut self, percent: u32) -> Self {
        self.read_units = self.source.read_budget(percent.clamp(1, 100));
        self
    }

    /// The read budget in read units per second.
    pub fn with_read_units(mut self, units: f64) -> Self {
        self.read_units = units.max(1.0);
        self
    }

    /// Segments scanned at once.
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Uncompressed bytes per data file (default 64 MiB).
    pub fn with_file_size(mut self, bytes: usize) -> Self {
        self.file_size = bytes.max(1);
        self
    }

    /// Where checkpoints are kept (none: an interrupted generation starts over).
    pub fn with_checkpoints(mut self, store: Option<CheckpointStore>) -> Self {
        self.checkpoints = store;
        self
    }

    /// Stops scheduling new pages when `token` is cancelled.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Receives a progress event per file written.
    pub fn with_progress(mut self, f: Option<ProgressFn>) -> Self {
        self.progress = f;
        self
    }

    /// Retries of one file write (retryable errors only).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Records each generation this job completes (its `manifest.json`'s
    /// key, size and SHA-256) in the run manifest: what `restore` and
    /// `verify` later trust.
    pub fn with_item_log(mut self, log: Option<ItemLog>) -> Self {
        self.item_log = log;
        self
    }

    /// The generations run manifests record (generation id -> SHA-256 of
    /// its `manifest.json`), for `verify`: only those are trusted. `None`
    /// (no manifest bucket): the newest generation is taken, with a warning.
    pub fn with_recorded_generations(mut self, recorded: Option<BTreeMap<String, String>>) -> Self {
        self.recorded = recorded;
        self
    }

    /// The key prefix of this table's generations, e.g. `dynamodb/orders/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn emit(&self, e: ProgressEvent) {
        if let Some(p) = &self.progress {
            p(&e);
        }
    }

    fn destination(&self) -> String {
        format!("{}{}", self.location, self.prefix)
    }

    fn saved(&self, segments: u32, checkpoints: Vec<Checkpoint>, sink_state: String) -> SavedScan {
        SavedScan {
            source_arn: self.source.arn().to_string(),
            table_id: self.source.table_id().to_string(),
            destination: self.destination(),
            segments,
            checkpoints,
            sink_state,
        }
    }

    /// This job's saved state, unless it belongs to another source table
    /// or destination (then ignored, with a warning).
    async fn load_saved(
        &self,
        store: &CheckpointStore,
        report: &mut Report,
    ) -> Result<Option<SavedScan>> {
        store
            .load_for(
                &self.name,
                &self.source,
                &self.destination(),
                &mut report.warnings,
                "a new generation starts",
            )
            .await
    }

    /// Runs the job: plan (what a generation would hold, from DynamoDB's
    /// estimates; reads nothing), run (write or resume a generation) or
    /// verify (the primary against the latest complete generation).
    pub async fn execute(&self, mode: Mode) -> Result<Report> {
        self.check()?;
        match (mode, &self.native) {
            (Mode::Plan, _) => Ok(self.plan()),
            (Mode::Run, Some(native)) => self.run_native(native).await,
            (Mode::Run, None) => self.run().await,
            (Mode::Verify, _) => self.verify().await,
        }
    }

    fn plan(&self) -> Report {
        let mut report = Report::new(
            Mode::Plan,
            format!("dynamodb://{}", self.source.name()),
            self.destination(),
        );
        report.copied = self.source.item_count();
        // A new generation holds every item: all of them are missing from it.
        report.missing = report.copied;
        report.bytes_copied = self.source.size_bytes();
        report.notes.push(format!(
            "a run writes a new export generation of about {} items under {} (DynamoDB's \
             estimate, updated about every six hours)",
            self.source.item_count(),
            self.destination()
        ));
        report
    }

    /// Starts (or, after an interrupted run, goes on waiting for) a native
    /// export, then completes the generation.
    async fn run_native(&self, native: &Native) -> Result<Report> {
        let began = Instant::now();
        let mut report = Report::new(
            Mode::Run,
            format!("dynamodb://{}", self.source.name()),
            self.destination(),
        );
        let saved = match &self.checkpoints {
            Some(store) => self.load_saved(store, &mut report).await?,
            None => None,
        };
        // The generation (and, once DynamoDB answered, the export ARN) is
        // saved before the export is asked for: a run that stops in between
        // asks again with the same client token, which DynamoDB answers with
        // the same export rather than starting a second one.
        let resumed = saved.and_then(|s| {
            let v: Value = serde_json::from_str(&s.sink_state).ok()?;
            Some((
                v["generation"].as_str()?.to_string(),
                v["export_arn"].as_str().map(String::from),
                plan_from_json(&v["plan"]),
            ))
        });
        let now = self.started_at();
        let resumed = match resumed {
            // Saved before DynamoDB accepted the request (it refused it, or
            // the run stopped): the saved window may be one DynamoDB no
            // longer exports (point-in-time recovery turned off and on, a
            // day gone by), so this run plans anew.
            Some((generation, None, _)) => {
                self.forget().await;
                report.notes.push(format!(
                    "dropped the plan of generation {generation} that an earlier run saved but \
                     DynamoDB never started: planned anew"
                ));
                None
            }
            Some((generation, Some(arn), Some(plan)))
                if plan_end(&plan)
                    .is_some_and(|end| now.duration_since(end).is_ok_and(|d| d > RESUME_LIMIT)) =>
            {
                self.forget().await;
                report.warnings.push(format!(
                    "dropped native export {arn} (generation {generation}) that an earlier run \
                     started for a window that ended more than 24 hours ago: planned anew"
                ));
                None
            }
            other => other,
        };
        let (generation, known_arn, plan) = match resumed {
            Some((generation, arn, plan)) => {
                report.notes.push(format!(
                    "went on with native export generation {generation} that an earlier run started"
                ));
                (generation, arn, plan)
            }
            None => {
                let plan = match self.incremental {
                    Some(_) => Some(self.plan_incremental(&mut report).await?),
                    None => None,
                };
                match &plan {
                    Some(ExportPlan::Skip { reason }) => {
                        report.notes.push(reason.clone());
                        report.elapsed = began.elapsed();
                        return Ok(report);
                    }
                    Some(ExportPlan::Full { reason, .. }) => report.notes.push(reason.clone()),
                    Some(ExportPlan::Incremental { base, from, to }) => report.notes.push(format!(
                        "incremental export of the changes from {} to {} on top of \
                             generation {base}",
                        time_text(*from),
                        time_text(*to)
                    )),
                    None => {}
                }
                (generation_id(&self.started), None, plan)
            }
        };
        let plan_json = plan.as_ref().map(plan_to_json);
        let save = |arn: Option<&str>| {
            let state =
                json!({"generation": generation, "export_arn": arn, "plan": plan_json}).to_string();
            let scan = self.saved(0, Vec::new(), state);
            async move {
                match &self.checkpoints {
                    Some(store) => store.save(&self.name, &scan).await,
                    None => Ok(()),
                }
            }
        };
        let arn = match known_arn {
            Some(arn) => arn,
            None => {
                save(None).await?;
                let requested = request_export(
                    &self.primary,
                    &self.source,
                    native,
                    format!("{}{generation}", self.staged_prefix()),
                    &generation,
                    plan.as_ref(),
                    self.incremental,
                )
                .await;
                let arn = match requested {
                    Ok(arn) => arn,
                    Err(e) => {
                        // Refused as asked (a window DynamoDB no longer
                        // exports, …): the next run plans anew.
                        if e.kind() == ErrorKind::PreconditionFailed {
                            self.forget().await;
                        }
                        return Err(e);
                    }
                };
                save(Some(&arn)).await?;
                arn
            }
        };
        let waited = wait_export(&self.primary, native, &arn, &self.cancel).await;
        if let Err(e) = &waited
            && e.kind() == ErrorKind::NotFound
        {
            // DynamoDB no longer knows the export: the next run starts anew.
            self.forget().await;
        }
        let Some(description) = waited? else {
            report.cancelled = true;
            report.warnings.push(format!(
                "stopped waiting for native export {arn}: it goes on in DynamoDB, and the next \
                 run waits for it and completes generation {generation}"
            ));
            report.elapsed = began.elapsed();
            return Ok(report);
        };
        let status =
            description.export_status().map(|s| s.as_str().to_string()).unwrap_or_default();
        if status != "COMPLETED" {
            // The next run starts a new export.
            self.forget().await;
            return Err(Error::new(
                ErrorKind::Failed,
                "dynamodb:DescribeExport",
                &arn,
                format!(
                    "the export ended {status}: {} {} (the next run starts a new export)",
                    description.failure_code().unwrap_or_default(),
                    description.failure_message().unwrap_or_default()
                ),
            ));
        }
        if let Some(plan) = &plan
            && let Err(e) = check_reported(plan, &description, &arn)
        {
            // DynamoDB's answer is not the export asked for: the next run
            // asks again rather than trusting it.
            self.forget().await;
            return Err(e);
        }
        let dir = format!("{}{generation}/", self.prefix);
        let fmt = |t: Option<&aws_smithy_types::DateTime>| {
            t.and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
        };
        let mut extra = json!({
            "mode": "native-export",
            "export_arn": arn,
            "export_time": fmt(description.export_time()),
            "export_item_count": description.item_count(),
            "billed_size_bytes": description.billed_size_bytes(),
            "export_manifest": description.export_manifest(),
        });
        let window = match &plan {
            Some(ExportPlan::Incremental { from, to, .. }) => Some((micros(*from), micros(*to))),
            _ => None,
        };
        if let (Some(plan), Some(m)) = (&plan, extra.as_object_mut()) {
            m.insert("mode".into(), json!("native-incremental"));
            match plan {
                ExportPlan::Incremental { base, from, to } => {
                    m.insert("kind".into(), json!(KIND_INCREMENTAL));
                    m.insert("base_generation".into(), json!(base));
                    m.insert("export_from_time".into(), json!(time_text(*from)));
                    m.insert("export_to_time".into(), json!(time_text(*to)));
                    m.insert("watermark".into(), json!(time_text(*to)));
                    m.insert(
                        "export_view_type".into(),
                        json!(self.incremental.unwrap_or_default().as_str()),
                    );
                    m.insert("data_format".into(), json!("DYNAMODB_JSON_CHANGES"));
                }
                ExportPlan::Full { at, .. } => {
                    m.insert("kind".into(), json!(KIND_FULL));
                    m.insert("watermark".into(), json!(time_text(*at)));
                }
                ExportPlan::Skip { .. } => {}
            }
        }
        let expected = description.item_count().map(|n| n.max(0) as u64);
        let staged = format!("{}{generation}/", self.staged_prefix());
        let completed = match self
            .area()
            .files(&staged, &description, window.is_some(), &mut report)
            .await
            .map_err(staged_error)
        {
            Ok(files) => match self.copy_staged(&generation, &staged, files, window).await {
                Ok((keys, written)) => {
                    self.complete(&generation, keys, written, extra, expected).await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let files = match completed {
            Ok(files) => files,
            Err(e) => {
                // Files that do not add up to DynamoDB's manifest or count: the
                // next run asks for a new export rather than trusting these.
                // Any other error keeps the checkpoint: the next run completes
                // this one.
                if e.kind() == ErrorKind::PreconditionFailed {
                    self.forget().await;
                }
                return Err(e);
            }
        };
        if let Some(store) = &self.checkpoints {
            store.clear(&self.name).await?;
        }
        report.copied = files.iter().map(|f| f.items).sum();
        report.bytes_copied = files.iter().map(|f| f.compressed_bytes).sum();
        let what = if window.is_some() { "incremental native export" } else { "native export" };
        report.notes.push(format!(
            "{what} generation {generation} is complete: {} items in {} files under {}{dir}",
            report.copied,
            files.len(),
            self.location
        ));
        report.elapsed = began.elapsed();
        Ok(report)
    }

    /// The newest generation a run manifest records, when its verified
    /// `manifest.json` records a watermark (a native-incremental
    /// generation); `None` otherwise, with a note saying why.
    pub async fn watermark(&self, notes: &mut Vec<String>) -> Result<Option<Watermark>> {
        let Some(recorded) = &self.recorded else {
            notes.push(
                "no run manifests ([escrow] manifest_bucket): no watermark can be trusted".into(),
            );
            return Ok(None);
        };
        let choice = choose_generation(
            &self.complete_generations().await?,
            Some(recorded),
            None,
            &self.destination(),
        );
        notes.extend(choice.notes);
        let Some(generation) = choice.generation else { return Ok(None) };
        let manifest =
            self.trusted_manifest(&generation, choice.manifest_sha256.as_deref()).await?;
        let Some(text) = manifest["watermark"].as_str() else {
            notes.push(format!(
                "generation {generation} records no watermark (it was not written by a \
                 native-incremental run)"
            ));
            return Ok(None);
        };
        // Changes are only worth exporting on top of a chain that reaches
        // back to a full export: a broken one is re-based by a full export
        // (and so is one grown older than full_export_every).
        let chain = if Link::from_manifest(&generation, &manifest).incremental() {
            match self.chain(&generation, choice.manifest_sha256.as_deref()).await {
                Ok(chain) => chain,
                Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                    notes.push(format!(
                        "full export: the chain of generation {generation} does not reach back \
                         to a full export ({}); a full export starts a new chain",
                        e.chain()
                    ));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        } else {
            vec![(generation.clone(), manifest.clone())]
        };
        let (full, full_manifest) = &chain[0];
        let full_time = full_manifest["watermark"]
            .as_str()
            .and_then(escrow_sync_core::time::parse_rfc3339)
            .or_else(|| escrow_sync_core::time::parse_rfc3339(&generation_time(full)));
        if let Some(t) = full_time
            && self.started_at().duration_since(t).is_ok_and(|d| d >= self.full_export_every)
        {
            notes.push(format!(
                "full export: the chain's full export (generation {full}, at {}) is older than \
                 full_export_every ({}), after {} incremental generation(s)",
                time_text(t),
                humanize(self.full_export_every),
                chain.len() - 1
            ));
            return Ok(None);
        }
        let time = escrow_sync_core::time::parse_rfc3339(text).ok_or_else(|| {
            Error::new(
                ErrorKind::PreconditionFailed,
                "read manifest",
                format!("{}{}", self.location, manifest_key(&self.prefix, &generation)),
                format!("watermark {text:?} is not an RFC 3339 time"),
            )
        })?;
        Ok(Some(Watermark { generation, time }))
    }

    /// What this run of a native-incremental job asks for: the watermark,
    /// this run's time (or DynamoDB's latest restorable time, if earlier)
    /// and the earliest time point-in-time recovery reaches.
    async fn plan_incremental(&self, report: &mut Report) -> Result<ExportPlan> {
        let watermark = self.watermark(&mut report.notes).await?;
        let now = self.started_at();
        let (earliest, latest) = pitr_window(&self.primary, &self.source, report).await;
        let to = latest.map_or(now, |l| l.min(now));
        Ok(plan_export(watermark.as_ref(), to, earliest))
    }

    /// This run's start time.
    fn started_at(&self) -> std::time::SystemTime {
        escrow_sync_core::time::parse_rfc3339(&self.started)
            .unwrap_or_else(std::time::SystemTime::now)
    }

    /// Where this table's native exports land: `<staging_prefix><table>/`.
    fn staged_prefix(&self) -> String {
        format!("{}{}/", self.staging, self.source.name())
    }

    /// Copies the staged data files of a finished native export (under
    /// `staged`) into `generation` with escrow credentials, as
    /// `native/<key relative to staged>`: each read under the data file
    /// cap, checked against what DynamoDB's manifest says of it (MD5, item
    /// count) and written with its SHA-256. Returns the keys and their stats.
    async fn copy_staged(
        &self,
        generation: &str,
        staged: &str,
        files: Vec<StagedFile>,
        window: Option<(u64, u64)>,
    ) -> Result<(Vec<String>, BTreeMap<String, FileStat>)> {
        let dir = format!("{}{generation}/", self.prefix);
        let mut keys = Vec::new();
        let mut written = BTreeMap::new();
        for file in files {
            let StagedData { data, items, bytes, .. } = self
                .area()
                .read_staged(staged, &file, self.data_cap(), &self.keys, window)
                .await
                .map_err(staged_error)?;
            let key = format!("native/{}", file.key);
            let compressed_bytes = data.len() as u64;
            let sha256 = self.put(&format!("{dir}{key}"), data, "application/gzip").await?;
            self.emit(ProgressEvent::Copied { key: key.clone(), bytes: compressed_bytes });
            written.insert(
                key.clone(),
                FileStat { key: key.clone(), items, bytes, compressed_bytes, sha256 },
            );
            keys.push(key);
        }
        Ok((keys, written))
    }

    /// Deletes this job's checkpoint after a failure that the next run must
    /// not resume; a failure to delete it is logged, not returned (the
    /// failure that led here is the one to report).
    async fn forget(&self) {
        if let Some(store) = &self.checkpoints
            && let Err(e) = store.clear(&self.name).await
        {
            tracing::warn!(job = %self.name, error = %e.chain(), "could not clear the checkpoint");
        }
    }

    /// Writes (or resumes) a generation.
    async fn run(&self) -> Result<Report> {
        let began = Instant::now();
        let mut report = Report::new(
            Mode::Run,
            format!("dynamodb://{}", self.source.name()),
            self.destination(),
        );
        let saved = match &self.checkpoints {
            Some(store) => self.load_saved(store, &mut report).await?,
            None => None,
        };
        let resumed =
            saved.as_ref().and_then(|s| Progress::from_text(&s.sink_state).map(|p| (s, p)));
        let mut options = self.options.clone();
        let (progress, resume) = match resumed {
            Some((s, p)) => {
                options = options.with_segments(s.segments);
                report.notes.push(format!(
                    "resumed export generation {} of {} from its checkpoints",
                    p.generation,
                    self.source.name()
                ));
                (p, s.checkpoints.clone())
            }
            None => (
                Progress { generation: generation_id(&self.started), ..Progress::default() },
                vec![],
            ),
        };
        let segments = options.segments();
        let checkpoints = starting_points(segments, &resume);
        let generation = progress.generation.clone();
        let state =
            Arc::new(Mutex::new(State { report, checkpoints, progress, written: BTreeMap::new() }));
        let scanner =
            TableScanner::from_client(self.primary.clone(), self.source.name(), self.read_units)
                .with_options(options);
        let save_lock = tokio::sync::Mutex::new(());
        let stop = self.cancel.child_token();
        let starts: Vec<Checkpoint> = state
            .lock()
            .expect("export lock")
            .checkpoints
            .values()
            .filter(|c| !c.done)
            .cloned()
            .collect();
        let results: Vec<Result<()>> = futures::stream::iter(starts)
            .map(|start| self.segment(&scanner, start, &state, &save_lock, &stop))
            .buffer_unordered(self.workers)
            .collect()
            .await;
        let first_error = results.into_iter().find_map(|r| r.err());
        let (mut report, all_done, progress, written) = {
            let mut s = state.lock().expect("export lock");
            let all_done = s.checkpoints.values().all(|c| c.done);
            let report = std::mem::replace(&mut s.report, Report::new(Mode::Run, "", ""));
            (report, all_done, s.progress.clone(), std::mem::take(&mut s.written))
        };
        report.throttled += scanner.budget().throttles();
        if let Some(e) = first_error {
            return Err(e);
        }
        if !all_done {
            report.cancelled = true;
            report.warnings.push(format!(
                "export generation {generation} is incomplete (no manifest.json): the next run \
                 resumes it"
            ));
            report.elapsed = began.elapsed();
            return Ok(report);
        }
        let keys = progress
            .next_part
            .iter()
            .flat_map(|(&segment, &parts)| (0..parts).map(move |p| data_key(segment, p)))
            .collect();
        let extra = json!({
            "mode": "scan",
            "segments": progress.next_part.len(),
            "consistent_read": self.options.consistent_read(),
        });
        let files = self
            .complete_checked(&generation, keys, written, extra, None, &progress.sha256)
            .await?;
        let items: u64 = files.iter().map(|f| f.items).sum();
        report.notes.push(format!(
            "export generation {generation} is complete: {items} items in {} files under {}{}/",
            files.len(),
            self.location,
            format_args!("{}{generation}", self.prefix)
        ));
        if let Some(store) = &self.checkpoints {
            store.clear(&self.name).await?;
        }
        report.elapsed = began.elapsed();
        Ok(report)
    }

    async fn segment(
        &self,
        scanner: &TableScanner,
        start: Checkpoint,
        state: &Arc<Mutex<State>>,
        save_lock: &tokio::sync::Mutex<()>,
        stop: &CancellationToken,
    ) -> Result<()> {
        let segment = start.segment;
        let mut pages = scanner.segment(start);
        let mut file = DataFile::new();
        let mut pending: Option<Checkpoint> = None;
        let mut wrote_one = false;
        loop {
            let page = if stop.is_cancelled() {
                None
            } else {
                match pages.try_next().await {
                    Ok(p) => p,
                    Err(e) => {
                        stop.cancel();
                        return Err(e);
                    }
                }
            };
            let Some(page) = page else { break };
            for item in &page.items {
                file.push(item)?;
            }
            pending = Some(page.checkpoint);
            if file.bytes() as usize >= self.file_size {
                let full = std::mem::take(&mut file);
                self.flush(segment, full, pending.take(), state, save_lock).await?;
                wrote_one = true;
            }
        }
        // Nothing read in this run (cancelled at once): the checkpoint stands.
        if stop.is_cancelled() && file.items() == 0 && !wrote_one {
            return Ok(());
        }
        // The segment's last file. The first file a run writes for a segment
        // is written even when empty: it replaces the one file an interrupted
        // run may have written after its last checkpoint.
        if file.items() > 0 || !wrote_one {
            self.flush(segment, file, pending, state, save_lock).await?;
        } else if let Some(c) = pending {
            self.commit(segment, None, Some(c), state, save_lock).await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn flush(
        &self,
        segment: u32,
        file: DataFile,
        checkpoint: Option<Checkpoint>,
        state: &Arc<Mutex<State>>,
        save_lock: &tokio::sync::Mutex<()>,
    ) -> Result<()> {
        let (items, bytes) = (file.items(), file.bytes());
        let data = Bytes::from(file.finish()?);
        let (generation, part) = {
            let s = state.lock().expect("export lock");
            (
                s.progress.generation.clone(),
                s.progress.next_part.get(&segment).copied().unwrap_or(0),
            )
        };
        let key = data_key(segment, part);
        let sha256 = self
            .put(&format!("{}{generation}/{key}", self.prefix), data.clone(), "application/gzip")
            .await?;
        let stat = FileStat {
            key: key.clone(),
            items,
            bytes,
            compressed_bytes: data.len() as u64,
            sha256,
        };
        self.emit(ProgressEvent::Copied { key, bytes: data.len() as u64 });
        self.commit(segment, Some(stat), checkpoint, state, save_lock).await
    }

    /// Records a written file (the segment's next part) and the segment's
    /// checkpoint after it, and saves the checkpoints.
    async fn commit(
        &self,
        segment: u32,
        file: Option<FileStat>,
        checkpoint: Option<Checkpoint>,
        state: &Arc<Mutex<State>>,
        save_lock: &tokio::sync::Mutex<()>,
    ) -> Result<()> {
        let _guard = save_lock.lock().await;
        let scan = {
            let mut s = state.lock().expect("export lock");
            if let Some(stat) = file {
                let next = s.progress.next_part.get(&segment).copied().unwrap_or(0) + 1;
                s.progress.next_part.insert(segment, next);
                s.report.copied += stat.items;
                s.report.bytes_copied += stat.compressed_bytes;
                s.progress.sha256.insert(stat.key.clone(), stat.sha256.clone());
                s.written.insert(stat.key.clone(), stat);
            }
            if let Some(c) = checkpoint {
                s.checkpoints.insert(segment, c);
            }
            self.saved(
                s.checkpoints.len() as u32,
                s.checkpoints.values().cloned().collect(),
                s.progress.to_text(),
            )
        };
        if let Some(store) = &self.checkpoints {
            store.save(&self.name, &scan).await?;
        }
        Ok(())
    }

    /// Writes one object with its SHA-256 for the store to check; returns
    /// the SHA-256 in hex.
    async fn put(&self, key: &str, data: Bytes, content_type: &str) -> Result<String> {
        let digest = Sha256::digest(&data);
        let sha = hex(&digest);
        let item = Item::new(key, ItemKind::Object, data.len() as u64, &sha);
        let attributes = BTreeMap::from([
            ("content-type".to_string(), content_type.to_string()),
            ("checksum-algorithm".to_string(), "SHA256".to_string()),
            ("checksum-value".to_string(), aws_smithy_types::base64::encode(digest.as_slice())),
        ]);
        let mut attempt = 1;
        loop {
            match self
                .files
                .write(&item, Payload::from_bytes(data.clone(), attributes.clone()))
                .await
            {
                Ok(_) => return Ok(sha),
                Err(e) if e.is_retryable() && attempt < self.retry.max_attempts => {
                    self.emit(ProgressEvent::Retrying {
                        key: key.to_string(),
                        attempt,
                        error: e.chain(),
                        delay: Duration::ZERO,
                    });
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one object of the escrow bucket, if it exists, failing when it
    /// is over `cap` bytes.
    async fn fetch(&self, key: &str, cap: u64) -> Result<Option<Bytes>> {
        self.area().fetch(key, cap).await
    }

    /// The escrow bucket as the native export's staging area.
    fn area(&self) -> StagingArea {
        StagingArea { reader: self.reader.clone(), location: self.location.clone() }
    }

    /// The cap on one data file of this job ([`data_file_cap`]).
    fn data_cap(&self) -> u64 {
        data_file_cap(self.file_size as u64)
    }

    /// Finishes a generation whose data files are all written: the stats
    /// of files this run did not write are read back, then `schema.json`
    /// and, last, `manifest.json` (with `extra` fields) are written. With
    /// `expected`, the files must hold exactly that many items, or no
    /// manifest is written.
    async fn complete(
        &self,
        generation: &str,
        keys: Vec<String>,
        written: BTreeMap<String, FileStat>,
        extra: Value,
        expected: Option<u64>,
    ) -> Result<Vec<FileStat>> {
        self.complete_checked(generation, keys, written, extra, expected, &BTreeMap::new()).await
    }

    /// [`Self::complete`], where a file an earlier run wrote must have the
    /// SHA-256 the checkpoint recorded for it in `checkpointed` (else it is
    /// not the file escrow-sync wrote, and the generation is not completed).
    async fn complete_checked(
        &self,
        generation: &str,
        keys: Vec<String>,
        mut written: BTreeMap<String, FileStat>,
        extra: Value,
        expected: Option<u64>,
        checkpointed: &BTreeMap<String, String>,
    ) -> Result<Vec<FileStat>> {
        let dir = format!("{}{generation}/", self.prefix);
        let mut files = Vec::new();
        for key in keys {
            let stat = match written.remove(&key) {
                Some(s) => s,
                None => {
                    let data = self.fetch(&format!("{dir}{key}"), self.data_cap()).await?;
                    let data = data.ok_or_else(|| {
                        Error::new(
                            ErrorKind::NotFound,
                            "complete export generation",
                            format!("{}{dir}{key}", self.location),
                            "a data file of the generation is missing",
                        )
                    })?;
                    let name = format!("{}{dir}{key}", self.location);
                    let sha256 = hex(&Sha256::digest(&data));
                    if let Some(saved) = checkpointed.get(&key)
                        && *saved != sha256
                    {
                        return Err(Error::new(
                            ErrorKind::PreconditionFailed,
                            "complete export generation",
                            &name,
                            format!(
                                "its SHA-256 is {sha256} but the checkpoint recorded {saved} \
                                 when escrow-sync wrote it: the file was replaced since, and \
                                 the generation is not completed; find out who can write the \
                                 escrow bucket (escrow-sync audit), then clear the job's \
                                 checkpoint so that the next run writes a new generation"
                            ),
                        ));
                    }
                    let (items, bytes) = count_data_file(&data, &name, self.data_cap())?;
                    FileStat {
                        key: key.clone(),
                        items,
                        bytes,
                        compressed_bytes: data.len() as u64,
                        sha256,
                    }
                }
            };
            files.push(stat);
        }
        let items: u64 = files.iter().map(|f| f.items).sum();
        if let Some(expected) = expected
            && expected != items
        {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "complete export generation",
                format!("{}{dir}", self.location),
                format!(
                    "DynamoDB reports {expected} items exported but the data files hold {items}: \
                     no manifest is written"
                ),
            ));
        }
        let schema = self.source.schema_json();
        self.put(
            &format!("{dir}schema.json"),
            Bytes::from(serde_json::to_vec_pretty(&schema).unwrap_or_default()),
            "application/json",
        )
        .await?;
        let mut manifest = json!({
            "format": FORMAT,
            "table": self.source.name(),
            "table_arn": self.source.arn(),
            "source_account": self.source_account,
            "generation": generation,
            "started_at": self.started,
            "completed_at": escrow_sync_aws::now_rfc3339(),
            "item_count": files.iter().map(|f| f.items).sum::<u64>(),
            "bytes": files.iter().map(|f| f.bytes).sum::<u64>(),
            "compressed_bytes": files.iter().map(|f| f.compressed_bytes).sum::<u64>(),
            "data_format": "DYNAMODB_JSON",
            "compression": "GZIP",
            "schema": "schema.json",
            "files": files.iter().map(FileStat::json).collect::<Vec<_>>(),
        });
        if let (Some(m), Value::Object(extra)) = (manifest.as_object_mut(), extra) {
            m.extend(extra);
        }
        let text = Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap_or_default());
        let key = manifest_key(&self.prefix, generation);
        let size = text.len() as u64;
        let sha = self.put(&key, text, "application/json").await?;
        if let Some(log) = &self.item_log {
            let mut item = Item::new(key, ItemKind::Object, size, &sha);
            item.lineage = Some(self.source.arn().to_string());
            let mut record = ItemRecord::new(item, ItemOutcome::Copied);
            record.escrow_fingerprint = Some(sha);
            log(record);
        }
        Ok(files)
    }

    /// The generations of this table that are complete (have a manifest),
    /// oldest first.
    pub async fn complete_generations(&self) -> Result<Vec<String>> {
        let mut out = BTreeSet::new();
        let mut list = self.reader.list(&Scope::with_prefix(&self.prefix));
        while let Some(item) = list.try_next().await? {
            if let Some(rest) = item.key.strip_prefix(&self.prefix)
                && let Some(generation) = rest.strip_suffix("/manifest.json")
                && !generation.contains('/')
            {
                out.insert(generation.to_string());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The manifest of `generation`.
    pub async fn manifest(&self, generation: &str) -> Result<Value> {
        self.trusted_manifest(generation, None).await
    }

    /// The manifest of `generation`, checked against the SHA-256 a run
    /// manifest recorded for it when given.
    async fn trusted_manifest(&self, generation: &str, sha256: Option<&str>) -> Result<Value> {
        let key = manifest_key(&self.prefix, generation);
        let name = format!("{}{key}", self.location);
        let data = self
            .fetch(&key, MANIFEST_CAP)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "read manifest", &name, ""))?;
        if let Some(sha) = sha256 {
            check_manifest_sha256(&data, sha, &name)?;
        }
        parse_manifest(&data, &name)
    }

    /// The generations `head` builds on, oldest (a full one) first, each
    /// with its manifest: a base must be recorded by a run manifest (when
    /// run manifests are kept), its `manifest.json` checked against the
    /// recorded SHA-256, and its watermark where the next one's changes
    /// start ([`crate::incremental::check_base`]).
    pub async fn chain(
        &self,
        head: &str,
        head_sha256: Option<&str>,
    ) -> Result<Vec<(String, Value)>> {
        let location = self.destination();
        let mut chain = vec![(head.to_string(), self.trusted_manifest(head, head_sha256).await?)];
        loop {
            let (generation, manifest) = chain.last().expect("the head");
            let link = Link::from_manifest(generation, manifest);
            if !link.incremental() {
                break;
            }
            let base_name = link.base.clone().unwrap_or_default();
            let sha = self.recorded.as_ref().map(|r| r.get(&base_name));
            let base = match sha {
                // Not recorded: unverified, a gap.
                Some(None) => None,
                Some(Some(sha)) => self.trusted_manifest_opt(&base_name, Some(sha)).await?,
                None => self.trusted_manifest_opt(&base_name, None).await?,
            };
            let base_link = base.as_ref().map(|m| Link::from_manifest(&base_name, m));
            check_base(&link, base_link.as_ref(), &location)?;
            chain.push((base_name, base.expect("checked")));
        }
        chain.reverse();
        Ok(chain)
    }

    /// [`Self::trusted_manifest`], `None` when there is no `manifest.json`.
    async fn trusted_manifest_opt(
        &self,
        generation: &str,
        sha256: Option<&str>,
    ) -> Result<Option<Value>> {
        match self.trusted_manifest(generation, sha256).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Compares the primary with the latest complete generation: every
    /// data file checked against the manifest's SHA-256, then every
    /// primary item looked up in the generation.
    async fn verify(&self) -> Result<Report> {
        let began = Instant::now();
        let mut report = Report::new(
            Mode::Verify,
            format!("dynamodb://{}", self.source.name()),
            self.destination(),
        );
        let mut held: HashMap<[u8; 32], [u8; 32]> = HashMap::new();
        let choice = choose_generation(
            &self.complete_generations().await?,
            self.recorded.as_ref(),
            None,
            &self.destination(),
        );
        report.notes.extend(choice.notes);
        report.warnings.extend(choice.warnings);
        match choice.generation {
            None => report.warnings.push(format!(
                "no complete export generation{} under {}: every item counts as missing",
                if self.recorded.is_some() { " recorded by a run manifest" } else { "" },
                self.destination()
            )),
            Some(head) => {
                let chain = self.chain(&head, choice.manifest_sha256.as_deref()).await?;
                for (generation, manifest) in &chain {
                    let incremental = Link::from_manifest(generation, manifest).incremental();
                    let dir = format!("{}{generation}/", self.prefix);
                    for file in manifest["files"].as_array().into_iter().flatten() {
                        let Some(stat) = FileStat::from_json(file) else { continue };
                        let url = format!("{}{dir}{}", self.location, stat.key);
                        let Some(data) =
                            self.fetch(&format!("{dir}{}", stat.key), self.data_cap()).await?
                        else {
                            report.unprotected += 1;
                            report
                                .findings
                                .push(Finding::new(url, "listed in the manifest but missing"));
                            continue;
                        };
                        if hex(&Sha256::digest(&data)) != stat.sha256 {
                            report.unprotected += 1;
                            report.findings.push(Finding::new(
                                url,
                                "its SHA-256 differs from the manifest's: the file was altered",
                            ));
                            continue;
                        }
                        // Its protection: the escrow key, and a lock still
                        // in force where the job locks (renewed every run).
                        if self.files.audits() {
                            let item = Item::new(
                                format!("{dir}{}", stat.key),
                                ItemKind::Object,
                                data.len() as u64,
                                "",
                            );
                            let problems = self.files.audit(&item).await?;
                            if !problems.is_empty() {
                                report.unprotected += 1;
                            }
                            report.findings.extend(problems.into_iter().map(|p| {
                                Finding::new(url.clone(), p)
                                    .with_kind(escrow_sync_core::UNPROTECTED)
                            }));
                        }
                        if incremental {
                            for c in read_changes_capped(&data, &url, self.data_cap(), None, None)?
                            {
                                let text = self.keys.key_text(c.change.keys())?;
                                let key: [u8; 32] = Sha256::digest(text.as_bytes()).into();
                                match c.change {
                                    Change::Put { item, .. } => {
                                        held.insert(key, content_digest(&item));
                                    }
                                    Change::Delete { .. } => {
                                        held.remove(&key);
                                    }
                                }
                            }
                            continue;
                        }
                        for record in read_data_file_capped(&data, &url, self.data_cap())? {
                            let text = self.keys.key_text(&record)?;
                            held.insert(
                                Sha256::digest(text.as_bytes()).into(),
                                content_digest(&record),
                            );
                        }
                    }
                }
                let names: Vec<&str> = chain.iter().map(|(g, _)| g.as_str()).collect();
                report.notes.push(if names.len() == 1 {
                    format!("compared with export generation {head}")
                } else {
                    format!(
                        "compared with export generation {head}, composed of {}",
                        names.join(" + ")
                    )
                });
            }
        }
        let scanner =
            TableScanner::from_client(self.primary.clone(), self.source.name(), self.read_units)
                .with_options(self.options.clone());
        let mut pages = scanner.pages_limited(&[], self.workers);
        let mut digests: BTreeMap<u32, (KeySetDigest, KeySetDigest)> = BTreeMap::new();
        while let Some(page) = pages.try_next().await? {
            let segment = page.checkpoint.segment;
            let c = compare(&self.keys, page.items, |k| {
                held.get(&<[u8; 32]>::from(Sha256::digest(k.as_bytes()))).copied()
            })?;
            let d = digests.entry(segment).or_default();
            d.0.merge(&c.primary);
            d.1.merge(&c.escrow);
            report.skipped += c.unchanged.len() as u64;
            tally(&mut report, c.differences, Mode::Verify, self.difference_limit);
        }
        let present: u64 = digests.values().map(|d| d.1.count).sum();
        report.retained = (held.len() as u64).saturating_sub(present);
        report.key_digests = digests
            .into_iter()
            .map(|(segment, (p, e))| KeyDigest {
                scope: format!("segment {segment}"),
                primary_items: p.count,
                escrow_items: e.count,
                primary_digest: p.hex(),
                escrow_digest: e.hex(),
            })
            .collect();
        report.throttled += scanner.budget().throttles();
        report.elapsed = began.elapsed();
        Ok(report)
    }
}

#[async_trait::async_trait]
impl escrow_sync_core::Job for ExportJob {
    fn describe(&self) -> String {
        format!("dynamodb://{} -> {}", self.source.name(), self.destination())
    }

    /// [`ExportJob::execute`] with the context's cancellation, progress,
    /// item log and retry policy.
    async fn execute(&self, mode: Mode, ctx: &escrow_sync_core::JobContext) -> Result<Report> {
        let mut job = self.clone();
        job.cancel = ctx.cancellation().clone();
        job.progress = ctx.progress().cloned();
        job.item_log = ctx.item_log().cloned();
        job.retry = ctx.retry();
        job.options = job.options.with_retry(ctx.retry());
        ExportJob::execute(&job, mode).await
    }
}

/// Asks the primary (the reader role's `primary` client) for a native
/// export of `source` into `native`'s bucket under `s3_prefix`, with the
/// client token of `generation` (a run that stops before saving the ARN
/// asks again and gets the same export): the full export at the plan's
/// time, or the incremental window with `view`. Returns the export's ARN.
pub(crate) async fn request_export(
    primary: &Client,
    source: &TableInfo,
    native: &Native,
    s3_prefix: String,
    generation: &str,
    plan: Option<&ExportPlan>,
    view: Option<ViewType>,
) -> Result<String> {
    let mut req = primary
        .export_table_to_point_in_time()
        .table_arn(source.arn())
        .s3_bucket(&native.bucket)
        .s3_bucket_owner(&native.bucket_owner)
        .s3_prefix(s3_prefix)
        .export_format(aws_sdk_dynamodb::types::ExportFormat::DynamodbJson)
        .client_token(format!("escrow-sync-{generation}"));
    if let Some(key) = &native.kms_key_id {
        req = req
            .s3_sse_algorithm(aws_sdk_dynamodb::types::S3SseAlgorithm::Kms)
            .s3_sse_kms_key_id(key);
    }
    req = match (plan, view) {
        (Some(ExportPlan::Incremental { from, to, .. }), Some(view)) => {
            use aws_sdk_dynamodb::types::{
                ExportType, ExportViewType, IncrementalExportSpecification,
            };
            let view = match view {
                ViewType::NewAndOldImages => ExportViewType::NewAndOldImages,
                ViewType::NewImage => ExportViewType::NewImage,
            };
            req.export_type(ExportType::IncrementalExport).incremental_export_specification(
                IncrementalExportSpecification::builder()
                    .export_from_time(aws_smithy_types::DateTime::from(*from))
                    .export_to_time(aws_smithy_types::DateTime::from(*to))
                    .export_view_type(view)
                    .build(),
            )
        }
        (Some(ExportPlan::Full { at, .. }), _) => req
            .export_type(aws_sdk_dynamodb::types::ExportType::FullExport)
            .export_time(aws_smithy_types::DateTime::from(*at)),
        _ => req,
    };
    let out = req.send().await.map_err(|e| {
        use aws_sdk_dynamodb::error::ProvideErrorMetadata;
        let refused =
            e.as_service_error().and_then(|s| s.code()).is_some_and(|c| REFUSED.contains(&c));
        let e = escrow_sync_aws::sdk_error(
            e,
            "dynamodb:ExportTableToPointInTime",
            format!("table {}", source.arn()),
        );
        if refused {
            Error::new(
                ErrorKind::PreconditionFailed,
                "dynamodb:ExportTableToPointInTime",
                format!("table {}", source.arn()),
                format!(
                    "{}: DynamoDB refused the export as asked; the next run plans anew (a full \
                     export when the window can no longer be exported)",
                    e.message()
                ),
            )
        } else {
            e
        }
    })?;
    out.export_description.and_then(|d| d.export_arn).ok_or_else(|| {
        Error::new(
            ErrorKind::Failed,
            "dynamodb:ExportTableToPointInTime",
            source.arn(),
            "no export ARN in the answer",
        )
    })
}

/// The error codes of ExportTableToPointInTime that refuse the request as
/// asked (asking the same again is refused again).
const REFUSED: &[&str] = &[
    "ValidationException",
    "InvalidExportTimeException",
    "PointInTimeRecoveryUnavailableException",
    "ExportConflictException",
    "IdempotentParameterMismatchException",
];

/// Polls DescribeExport with capped exponential intervals until the
/// export ends (`Some`), or cancellation (`None`); fails on timeout.
pub(crate) async fn wait_export(
    primary: &Client,
    native: &Native,
    arn: &str,
    cancel: &CancellationToken,
) -> Result<Option<aws_sdk_dynamodb::types::ExportDescription>> {
    let polling = Polling::new("dynamodb:DescribeExport", arn)
        .with_first_pause(Duration::from_millis(200))
        .with_max_pause(native.max_poll)
        .with_timeout(native.timeout)
        .with_deadline_error(
            ErrorKind::Transient,
            "still in progress",
            "the next run goes on waiting for it",
        )
        .with_cancel(cancel.clone());
    let done = poll_until(&polling, || async {
        let out = primary
            .describe_export()
            .export_arn(arn)
            .send()
            .await
            .map_err(|e| escrow_sync_aws::sdk_error(e, "dynamodb:DescribeExport", arn))?;
        let d = out.export_description.ok_or_else(|| {
            Error::new(ErrorKind::Failed, "dynamodb:DescribeExport", arn, "no description")
        })?;
        match d.export_status() {
            Some(s) if s.as_str() != "IN_PROGRESS" => Ok(Polled::Done(d)),
            s => Ok(Polled::Pending(s.map_or("unknown", |s| s.as_str()).to_string())),
        }
    })
    .await;
    match done {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == ErrorKind::Cancelled => Ok(None),
        Err(e) => Err(e),
    }
}

/// The window point-in-time recovery of `source` reaches (earliest,
/// latest restorable time), when DynamoDB says; a failure to read it is a
/// warning in `report` (the run then asks up to its own time).
pub(crate) async fn pitr_window(
    primary: &Client,
    source: &TableInfo,
    report: &mut Report,
) -> (Option<std::time::SystemTime>, Option<std::time::SystemTime>) {
    match primary.describe_continuous_backups().table_name(source.name()).send().await {
        Ok(out) => {
            let pitr = out
                .continuous_backups_description
                .and_then(|d| d.point_in_time_recovery_description);
            let time = |t: Option<&aws_smithy_types::DateTime>| {
                t.and_then(|t| std::time::SystemTime::try_from(*t).ok())
            };
            (
                pitr.as_ref().and_then(|p| time(p.earliest_restorable_date_time())),
                pitr.as_ref().and_then(|p| time(p.latest_restorable_date_time())),
            )
        }
        Err(e) => {
            let e =
                escrow_sync_aws::sdk_error(e, "dynamodb:DescribeContinuousBackups", source.name());
            report.warnings.push(format!(
                "could not read the point-in-time recovery window ({}): asking up to this run's \
                 time",
                e.chain()
            ));
            (None, None)
        }
    }
}

/// One staged data file, read and checked ([`StagingArea::read_staged`]).
pub(crate) struct StagedData {
    /// The file as DynamoDB wrote it (gzip).
    pub(crate) data: Bytes,
    /// Items (lines) it holds.
    pub(crate) items: u64,
    /// Its decompressed length.
    pub(crate) bytes: u64,
    /// An incremental export's change lines, each checked.
    pub(crate) changes: Vec<ChangeLine>,
}

/// The escrow bucket DynamoDB's native exports are staged in, read with
/// escrow credentials: `location` names it in reports.
#[derive(Clone)]
pub(crate) struct StagingArea {
    pub(crate) reader: Arc<dyn Source>,
    pub(crate) location: String,
}

impl StagingArea {
    /// Reads one object, if it exists, failing when it is over `cap` bytes.
    pub(crate) async fn fetch(&self, key: &str, cap: u64) -> Result<Option<Bytes>> {
        let mut list = self.reader.list(&Scope::with_prefix(key));
        while let Some(item) = list.try_next().await? {
            if item.key == key {
                let name = format!("{}{key}", self.location);
                if item.size > cap {
                    return Err(over_cap("read escrow object", &name, "the object", cap));
                }
                let payload = self.reader.read(&item).await?;
                return Ok(Some(collect_capped(payload, &name, cap).await?));
            }
        }
        Ok(None)
    }

    /// Reads the staged data file `file` of the export under `staged`
    /// (at most `cap` bytes) and checks it against what DynamoDB's manifest
    /// says of it (MD5, item count); with `window`, each change line
    /// against the key schema `keys` and the window asked for.
    pub(crate) async fn read_staged(
        &self,
        staged: &str,
        file: &StagedFile,
        cap: u64,
        keys: &KeySchema,
        window: Option<(u64, u64)>,
    ) -> Result<StagedData> {
        let from = format!("{staged}{}", file.key);
        let name = format!("{}{from}", self.location);
        let data = self.fetch(&from, cap).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::PreconditionFailed,
                "copy native export",
                &name,
                "DynamoDB's manifest lists this data file but the staging prefix lacks it",
            )
        })?;
        let refuse = |what: String| {
            Error::new(
                ErrorKind::PreconditionFailed,
                "copy native export",
                &name,
                format!(
                    "{what}: the staged file is not the one DynamoDB wrote (altered in the \
                     staging prefix?); the next run asks for a new export"
                ),
            )
        };
        if let Some(md5) = &file.md5 {
            let actual = aws_smithy_types::base64::encode(md5::Md5::digest(&data).as_slice());
            if &actual != md5 {
                return Err(refuse(format!("its MD5 is {actual}, DynamoDB's manifest says {md5}")));
            }
        }
        let (items, bytes, changes) = match window {
            // Change lines, each checked against the key schema and the
            // window asked for.
            Some(w) => {
                let changes = read_changes_capped(&data, &name, cap, Some(keys), Some(w))?;
                (changes.len() as u64, gunzipped_len(&data), changes)
            }
            None => {
                let (items, bytes) = count_data_file(&data, &name, cap)?;
                (items, bytes, Vec::new())
            }
        };
        if let Some(n) = file.items
            && n != items
        {
            return Err(refuse(format!("it holds {items} items, DynamoDB's manifest says {n}")));
        }
        Ok(StagedData { data, items, bytes, changes })
    }

    /// The data files of a finished native export, relative to `dir` (the
    /// staging prefix of its generation): those DynamoDB's own manifest
    /// (manifest-summary.json, then manifest-files.json) lists, with the
    /// MD5 and item count it gives, when the export has one; otherwise the
    /// `.gz` files under `…/data/` (the emulator writes no manifest).
    pub(crate) async fn files(
        &self,
        dir: &str,
        description: &aws_sdk_dynamodb::types::ExportDescription,
        incremental: bool,
        report: &mut Report,
    ) -> Result<Vec<StagedFile>> {
        let relative = |key: &str| key.strip_prefix(dir).map(str::to_string);
        if let Some(summary_key) = description.export_manifest()
            && let Some(summary) = self.fetch(summary_key, MANIFEST_CAP).await?
        {
            let bad = |what: String| {
                Error::new(
                    ErrorKind::PreconditionFailed,
                    "read native export manifest",
                    format!("{}{summary_key}", self.location),
                    what,
                )
            };
            let summary: Value = serde_json::from_slice(&summary)
                .map_err(|e| bad(format!("manifest-summary.json is not JSON: {e}")))?;
            let files_key = summary["manifestFilesS3Key"]
                .as_str()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| bad("manifest-summary.json names no manifestFilesS3Key".into()))?;
            let listing = self.fetch(files_key, MANIFEST_CAP).await?.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    "read native export manifest",
                    format!("{}{files_key}", self.location),
                    "manifest-summary.json names a manifest-files.json that is missing",
                )
            })?;
            let text = String::from_utf8_lossy(&listing);
            let mut keys = Vec::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line).map_err(|e| {
                    bad(format!("manifest-files.json has a line that is not JSON: {e}"))
                })?;
                let key = v["dataFileS3Key"].as_str().and_then(relative).filter(|k| {
                    !k.is_empty() && !k.split('/').any(|p| p == ".." || p == "." || p.is_empty())
                });
                let key = key.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Failed,
                        "read native export manifest",
                        format!("{}{files_key}", self.location),
                        format!("a line names no data file under {dir}: {line}"),
                    )
                })?;
                keys.push(StagedFile {
                    key,
                    items: v["itemCount"].as_u64(),
                    md5: v["md5Checksum"].as_str().map(String::from),
                });
            }
            return Ok(keys);
        }
        if incremental {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "read native export manifest",
                format!("{}{dir}", self.location),
                "the incremental export has no DynamoDB manifest (manifest-summary.json and \
                 manifest-files.json): its files are not trusted; the next run asks for a new \
                 export",
            ));
        }
        report.warnings.push(format!(
            "the native export has no DynamoDB manifest: took the data files listed under \
             {}{dir} (their item count must add up to DynamoDB's)",
            self.location
        ));
        let mut keys = Vec::new();
        let mut list = self.reader.list(&Scope::with_prefix(dir));
        while let Some(item) = list.try_next().await? {
            if let Some(rel) = relative(&item.key)
                && rel.contains("/data/")
                && rel.ends_with(".gz")
            {
                keys.push(StagedFile { key: rel, items: None, md5: None });
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_ids_have_one_width_and_sort_by_time() {
        assert_eq!(generation_id("2026-11-28T19:37:23Z"), "20261128T193723000Z");
        assert_eq!(generation_id("2026-11-28T19:37:23.5Z"), "20261128T193723500Z");
        assert_eq!(generation_id("2026-11-28T19:37:23.778876Z"), "20261128T193723778Z");
        assert!(generation_id("2026-11-28T19:37:23Z") < generation_id("2026-11-28T19:37:23.001Z"));
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_planted_newer_generation_no_run_manifest_records_is_ignored() {
        let present = ids(&["20261101T000000000Z", "20261102T000000000Z", "99991231T235959999Z"]);
        let recorded = BTreeMap::from([
            ("20261101T000000000Z".to_string(), "a".repeat(64)),
            ("20261102T000000000Z".to_string(), "b".repeat(64)),
        ]);
        let c = choose_generation(&present, Some(&recorded), None, "s3://e/dynamodb/orders/");
        assert_eq!(c.generation.as_deref(), Some("20261102T000000000Z"));
        assert_eq!(c.manifest_sha256, Some("b".repeat(64)));
        assert_eq!(c.ignored, ids(&["99991231T235959999Z"]));
        assert!(
            c.notes[0].contains("99991231T235959999Z")
                && c.notes[0].contains("not written by escrow-sync")
                && c.notes[0].contains("ignored"),
            "{:?}",
            c.notes
        );
        assert!(c.warnings.is_empty());
        // --at bounds the choice among recorded generations.
        let c = choose_generation(
            &present,
            Some(&recorded),
            Some("20261101T120000000Z"),
            "s3://e/dynamodb/orders/",
        );
        assert_eq!(c.generation.as_deref(), Some("20261101T000000000Z"));
        // Nothing recorded: nothing is taken.
        let none = BTreeMap::new();
        let c = choose_generation(&present, Some(&none), None, "s3://e/p/");
        assert_eq!(c.generation, None);
        assert_eq!(c.ignored.len(), 3);
    }

    #[test]
    fn without_run_manifests_the_newest_is_taken_with_a_warning() {
        let present = ids(&["20261101T000000000Z", "99991231T235959999Z"]);
        let c = choose_generation(&present, None, None, "s3://e/p/");
        assert_eq!(c.generation.as_deref(), Some("99991231T235959999Z"));
        assert_eq!(c.manifest_sha256, None);
        assert!(c.warnings[0].contains("manifest_bucket"), "{:?}", c.warnings);
    }

    #[test]
    fn a_recorded_manifest_with_another_sha256_is_refused() {
        let data = b"{\"format\": \"x\"}";
        let good = hex(&Sha256::digest(data));
        check_manifest_sha256(data, &good, "s3://e/p/g/manifest.json").unwrap();
        let e =
            check_manifest_sha256(data, &"0".repeat(64), "s3://e/p/g/manifest.json").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
        let text = e.chain();
        assert!(text.contains("s3://e/p/g/manifest.json"), "{text}");
        assert!(text.contains("run manifest") && text.contains("not trusted"), "{text}");
    }
}
