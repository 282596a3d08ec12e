//! Item history of table-to-table jobs: no item state escrow ever held is
//! lost.
//!
//! An escrow table holds each item's latest state only: a run that copies a
//! changed item replaces escrow's copy. So before a run writes items into the
//! escrow table, it makes their previous states durable in an escrow bucket
//! (`history_bucket`, versioned): one gzip JSON-lines object per page of
//! writes, each line an [`Event`] — the item's key, when it was replaced, and
//! the state escrow held until then (none for an item escrow did not hold).
//! Only once that object is written does the table write go ahead.
//!
//! The state escrow held at a time `T` follows: per key, the earliest event
//! after `T` holds the state of `T` (none: escrow did not hold the key yet);
//! a key with no event after `T` is as the table holds it now.
//! [`HistoryView`] computes that from the events, and [`AsOf`] lists and
//! reads an escrow table as it was at `T`, for `restore --at`.
//!
//! Objects are written through any [`Sink`] (the S3 sink, with the escrow
//! key and Object Lock) and read through any [`Source`] that hands over
//! bytes, so this crate depends on neither.
//!
//! ```
//! use escrow_sync_dynamodb::history::{Event, HistoryView};
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
//! let events = vec![
//!     Event::at("pk=1", t(100), None),                                   // created at 100
//!     Event::at("pk=1", t(200), Some(serde_json::json!({"v": {"N": "1"}}))), // replaced at 200
//! ];
//! let view = HistoryView::from_events(events.clone(), t(150)).unwrap();
//! assert!(matches!(view.state("pk=1"), Some(Some(_)))); // version 1, as escrow held it then
//! let view = HistoryView::from_events(events, t(50)).unwrap();
//! assert!(matches!(view.state("pk=1"), Some(None))); // escrow did not hold it yet
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Result, RetryPolicy, Scope, Sink, Source,
};

use crate::json::{Record, record_from_json, record_to_json, to_line};
use crate::keys::{KeySchema, content_digest};
use crate::pair::item_of;

/// The default `history_prefix`.
pub const DEFAULT_PREFIX: &str = escrow_sync_core::layout::HISTORY_PREFIX;

/// The most bytes one history object may hold once decompressed: a page of
/// writes is at most a few MiB (a Scan page is 1 MiB), so this leaves a wide
/// margin and still stops a planted gzip bomb long before memory runs out.
pub const MAX_OBJECT_BYTES: u64 = 256 << 20;

/// The most bytes one history object may hold compressed.
pub const MAX_COMPRESSED_BYTES: u64 = 64 << 20;

/// One item state escrow held until `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The item's key ([`KeySchema::key_text`]).
    pub key: String,
    /// When escrow's copy was replaced (RFC 3339, milliseconds, UTC).
    pub at: String,
    /// Milliseconds since 1970 of `at`, to order by.
    pub at_ms: u64,
    /// The state escrow held until then, as DynamoDB JSON (`None`: escrow
    /// did not hold the item).
    pub previous: Option<serde_json::Value>,
    /// The content digest (hex SHA-256) of the state written then, so that
    /// `verify` can check the history is unbroken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
}

impl Event {
    /// The event of `key` replaced at `when`, escrow having held `previous`.
    pub fn at(
        key: impl Into<String>,
        when: SystemTime,
        previous: Option<serde_json::Value>,
    ) -> Self {
        let at_ms = when.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        Event {
            key: key.into(),
            at: escrow_sync_core::rfc3339(when),
            at_ms,
            previous,
            written: None,
        }
    }

    /// The event of `key` about to be replaced now by `written`, escrow
    /// holding `previous`.
    pub fn now(key: impl Into<String>, previous: Option<&Record>, written: &Record) -> Self {
        let mut e = Event::at(key, SystemTime::now(), previous.map(record_to_json));
        e.written = Some(hex(&content_digest(written)));
        e
    }

    /// The content digest of the previous state, if any.
    fn previous_digest(&self) -> Result<Option<String>> {
        match &self.previous {
            Some(json) => Ok(Some(hex(&content_digest(&record_from_json(json, &self.key)?)))),
            None => Ok(None),
        }
    }
}

/// Where a job's history goes: a sink over the history bucket and prefix,
/// and the escrow table it is the history of.
pub struct History {
    sink: Arc<dyn Sink>,
    table: String,
    run: String,
    seq: AtomicU64,
    retry: RetryPolicy,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("sink", &self.sink.describe())
            .field("table", &self.table)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// A file-name-safe form of an RFC 3339 time.
fn compact(time: &str) -> String {
    time.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

impl History {
    /// The history of escrow table `table`, written through `sink` (the
    /// history bucket, under the history prefix) by the run started at
    /// `started` (RFC 3339).
    pub fn new(sink: Arc<dyn Sink>, table: impl Into<String>, started: &str) -> Self {
        History {
            sink,
            table: table.into(),
            run: format!("{}-{:08x}", compact(started), rand_suffix()),
            seq: AtomicU64::new(0),
            retry: RetryPolicy::default(),
        }
    }

    /// The retry policy of each object write.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Where the history is, for reports.
    pub fn describe(&self) -> String {
        format!("{}{}/", self.sink.describe(), self.table)
    }

    /// Makes `events` durable: one object, written (with retries) before
    /// this returns. Nothing to do for no events.
    pub async fn record(&self, segment: u32, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for e in events {
            let line = serde_json::to_string(e)
                .map_err(|err| Error::new(ErrorKind::Failed, "encode", &e.key, err.to_string()))?;
            gz.write_all(line.as_bytes()).and_then(|_| gz.write_all(b"\n")).map_err(|err| {
                Error::new(ErrorKind::Failed, "compress", &e.key, err.to_string())
            })?;
        }
        let data = Bytes::from(gz.finish().map_err(|err| {
            Error::new(ErrorKind::Failed, "compress", self.describe(), err.to_string())
        })?);
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let key = format!("{}/{}/{segment:05}-{seq:08}.jsonl.gz", self.table, self.run);
        let item = Item::new(&key, ItemKind::Object, data.len() as u64, "");
        let mut attempt = 1;
        loop {
            let payload = Payload::from_bytes(data.clone(), BTreeMap::new());
            match self.sink.write(&item, payload).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retryable() && attempt < self.retry.max_attempts => {
                    tokio::time::sleep(self.retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Error::new(
                        e.kind(),
                        "write item history",
                        format!("{}{key}", self.sink.describe()),
                        "the items were not written to the escrow table: escrow keeps their \
                         earlier state",
                    )
                    .with_source(e));
                }
            }
        }
    }
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads every history object of escrow table `table` from `source` (the
/// history bucket under the history prefix, bytes handed over), each under
/// the size caps. An object over a cap, or not history, is an error naming
/// it.
pub async fn load_events(source: &dyn Source, table: &str) -> Result<Vec<Event>> {
    let scope = Scope::with_prefix(format!("{table}/"));
    let objects: Vec<Item> = source.list(&scope).try_collect().await?;
    let mut events = Vec::new();
    for object in objects {
        let name = format!("{}{}", source.describe(), object.key);
        if object.size > MAX_COMPRESSED_BYTES {
            return Err(Error::new(
                ErrorKind::Failed,
                "read item history",
                &name,
                format!(
                    "{} bytes, over the {} MiB escrow-sync ever writes in one object: not \
                     written by escrow-sync; look at who wrote it",
                    object.size,
                    MAX_COMPRESSED_BYTES >> 20
                ),
            ));
        }
        let (data, _) = source.read(&object).await?.collect().await?;
        events.extend(parse_object(&name, &data)?);
    }
    Ok(events)
}

/// What `verify` found in a table's history.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistoryCheck {
    /// Events read.
    pub events: u64,
    /// Keys with at least one event.
    pub keys: u64,
    /// Escrow items with no event (written before the job kept history).
    pub without_history: u64,
    /// Breaks: a state written that no later event or the table holds.
    pub findings: Vec<escrow_sync_core::Finding>,
}

/// Checks that `events` account for every state escrow held: per key, in
/// time order, each event's previous state is the state the event before it
/// wrote (or, where that write failed, the state before it), and the last
/// state written is what the table holds now (`current`: key text → hex
/// content digest of the escrow table's items). A break means a state escrow
/// held is missing from the history: a finding of kind `history-gap`.
pub fn check(events: Vec<Event>, current: &HashMap<String, String>) -> Result<HistoryCheck> {
    let mut out = HistoryCheck { events: events.len() as u64, ..Default::default() };
    let mut by_key: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(e.key.clone()).or_default().push(e);
    }
    out.keys = by_key.len() as u64;
    out.without_history = current.keys().filter(|k| !by_key.contains_key(*k)).count() as u64;
    let gap = |key: &str, problem: String| {
        escrow_sync_core::Finding::new(key, problem).with_kind("history-gap")
    };
    for (key, mut list) in by_key {
        list.sort_by_key(|e| e.at_ms);
        // Each event replaced what the one before it wrote, or, where that
        // write failed (it went to the dead-letter file), what it found.
        let mut broken = false;
        for pair in list.windows(2) {
            let (e, next) = (&pair[0], &pair[1]);
            let before = e.previous_digest()?;
            let next_previous = next.previous_digest()?;
            if next_previous == e.written || next_previous == before {
                continue;
            }
            out.findings.push(gap(
                &key,
                format!(
                    "the state written at {} is not the state replaced at {}: a state escrow \
                     held in between is missing from the item history",
                    e.at, next.at
                ),
            ));
            broken = true;
            break;
        }
        if broken {
            continue;
        }
        let last = list.last().expect("one event at least");
        let now = current.get(&key).cloned();
        if now.is_some() && now != last.written && now != last.previous_digest()? {
            out.findings.push(gap(
                &key,
                format!(
                    "the escrow table holds a state the item history does not record (last \
                     recorded write at {}): it was written without a history event",
                    last.at
                ),
            ));
        }
    }
    Ok(out)
}

/// A random 32-bit suffix keeping two runs started in the same second apart.
fn rand_suffix() -> u32 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

/// Decompresses one history object, refusing more than
/// [`MAX_OBJECT_BYTES`], and parses its events.
pub fn parse_object(name: &str, data: &[u8]) -> Result<Vec<Event>> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(data).take(MAX_OBJECT_BYTES + 1).read_to_end(&mut text).map_err(
        |e| Error::new(ErrorKind::Failed, "read item history", name, format!("not gzip: {e}")),
    )?;
    if text.len() as u64 > MAX_OBJECT_BYTES {
        return Err(Error::new(
            ErrorKind::Failed,
            "read item history",
            name,
            format!(
                "decompresses to more than {} MiB, which escrow-sync never writes: the object \
                 was not written by escrow-sync; look at who wrote it",
                MAX_OBJECT_BYTES >> 20
            ),
        ));
    }
    let text = String::from_utf8(text).map_err(|_| {
        Error::new(ErrorKind::Failed, "read item history", name, "not UTF-8 JSON lines")
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str::<Event>(line).map_err(|e| {
                Error::new(
                    ErrorKind::Failed,
                    "read item history",
                    name,
                    format!("line {}: not an item history event: {e}", i + 1),
                )
            })
        })
        .collect()
}

/// What escrow held at one time, from a table's history: per key that
/// changed since, the state of that time.
#[derive(Debug, Default, Clone)]
pub struct HistoryView {
    /// Key → (event time, state then). The earliest event after the time.
    states: HashMap<String, (u64, Option<Record>)>,
    /// Events read.
    events: u64,
}

impl HistoryView {
    /// The view at `at` from `events` (in any order).
    pub fn from_events(events: Vec<Event>, at: SystemTime) -> Result<Self> {
        let mut view = HistoryView::default();
        let at_ms = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        for e in events {
            view.add(e, at_ms)?;
        }
        Ok(view)
    }

    fn add(&mut self, e: Event, at_ms: u64) -> Result<()> {
        self.events += 1;
        if e.at_ms <= at_ms {
            return Ok(());
        }
        if self.states.get(&e.key).is_some_and(|(t, _)| *t <= e.at_ms) {
            return Ok(());
        }
        let state = match &e.previous {
            Some(json) => Some(record_from_json(json, &e.key)?),
            None => None,
        };
        self.states.insert(e.key, (e.at_ms, state));
        Ok(())
    }

    /// Reads every history object of escrow table `table` from `source`
    /// (the history bucket under the history prefix, bytes handed over) and
    /// builds the view at `at`. Objects over the caps, or not history,
    /// are errors naming the object.
    pub async fn load(source: &dyn Source, table: &str, at: SystemTime) -> Result<Self> {
        Self::from_events(load_events(source, table).await?, at)
    }

    /// The state of `key` at the view's time, if it changed since: `Some(None)`
    /// when escrow did not hold the key then; `None` when the table's
    /// current state is that of the time.
    pub fn state(&self, key: &str) -> Option<Option<&Record>> {
        self.states.get(key).map(|(_, s)| s.as_ref())
    }

    /// How many events were read.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// How many keys changed since the view's time.
    pub fn changed_since(&self) -> usize {
        self.states.len()
    }
}

/// An escrow table as it was at a time: the table's items, each replaced by
/// its state of then where the history says it changed since, and left out
/// where escrow did not hold it yet.
pub struct AsOf<S> {
    inner: S,
    keys: KeySchema,
    view: Arc<HistoryView>,
    at: SystemTime,
    only: Option<Arc<std::collections::BTreeSet<String>>>,
}

impl<S: Source> AsOf<S> {
    /// `inner` (a listing of the escrow table) as of `view`'s time `at`.
    pub fn new(inner: S, keys: KeySchema, view: HistoryView, at: SystemTime) -> Self {
        AsOf { inner, keys, view: Arc::new(view), at, only: None }
    }

    /// Only these keys (key texts: those the primary held at the time, by a
    /// run manifest); `None`: every key escrow held then.
    pub fn with_keys(mut self, keys: Option<std::collections::BTreeSet<String>>) -> Self {
        self.only = keys.map(Arc::new);
        self
    }
}

#[async_trait]
impl<S: Source> Source for AsOf<S> {
    fn describe(&self) -> String {
        format!("{} as of {}", self.inner.describe(), escrow_sync_core::rfc3339(self.at))
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let view = self.view.clone();
        let keys = self.keys.clone();
        let only = self.only.clone();
        self.inner
            .list(scope)
            .try_filter_map(move |item| {
                if only.as_ref().is_some_and(|k| !k.contains(&item.key)) {
                    return futures::future::ready(Ok(None));
                }
                let out = match view.state(&item.key) {
                    None => Ok(Some(item)),
                    Some(None) => Ok(None),
                    Some(Some(record)) => item_of(&keys, record).map(Some),
                };
                futures::future::ready(out)
            })
            .boxed()
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        match self.view.state(&item.key) {
            Some(Some(record)) => {
                Ok(Payload::from_bytes(Bytes::from(to_line(record)), BTreeMap::new()))
            }
            _ => self.inner.read(item).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;
    use std::time::Duration;

    fn record(v: &str) -> Record {
        HashMap::from([
            ("pk".to_string(), AttributeValue::S("1".into())),
            ("v".to_string(), AttributeValue::S(v.into())),
        ])
    }

    #[test]
    fn an_unbroken_history_checks_clean_and_a_lost_state_is_a_gap() {
        let digest = |r: &Record| hex(&content_digest(r));
        let (one, two, three) = (record("one"), record("two"), record("three"));
        let create = Event::now("k", None, &one);
        let mut replace = Event::now("k", Some(&one), &two);
        replace.at_ms = create.at_ms + 10;
        let current = HashMap::from([("k".to_string(), digest(&two))]);
        let clean = check(vec![replace.clone(), create.clone()], &current).unwrap();
        assert_eq!((clean.events, clean.keys, clean.findings.len()), (2, 1, 0));

        // The event that replaced "two" by "three" is lost: the table holds
        // "three", which no event wrote.
        let current3 =
            HashMap::from([("k".to_string(), digest(&three)), ("old".to_string(), digest(&one))]);
        let r = check(vec![create.clone(), replace.clone()], &current3).unwrap();
        assert_eq!(r.findings.len(), 1, "{r:?}");
        assert_eq!(r.findings[0].kind.as_deref(), Some("history-gap"));
        assert_eq!(r.without_history, 1);

        // An event in the middle is lost: "three" replaced a state no event
        // wrote.
        let mut later = Event::now("k", Some(&three), &one);
        later.at_ms = replace.at_ms + 10;
        let r = check(vec![create.clone(), later], &current).unwrap();
        assert_eq!(r.findings.len(), 1, "{r:?}");

        // A write that failed (dead-lettered): the next event replaced what
        // the failed one found. Not a gap.
        let mut retried = Event::now("k", Some(&one), &two);
        retried.at_ms = replace.at_ms + 10;
        let r = check(vec![create, replace, retried], &current).unwrap();
        assert!(r.findings.is_empty(), "{r:?}");
    }

    #[test]
    fn the_earliest_event_after_the_time_holds_the_state_of_then() {
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let events = vec![
            Event::at("k", t(300), Some(record_to_json(&record("two")))),
            Event::at("k", t(100), None),
            Event::at("k", t(200), Some(record_to_json(&record("one")))),
        ];
        let at = |s| HistoryView::from_events(events.clone(), t(s)).unwrap();
        assert_eq!(at(50).state("k"), Some(None));
        assert_eq!(at(150).state("k").unwrap().unwrap()["v"], AttributeValue::S("one".into()));
        assert_eq!(at(250).state("k").unwrap().unwrap()["v"], AttributeValue::S("two".into()));
        assert_eq!(at(300).state("k"), None);
        assert_eq!(at(300).events(), 3);
    }

    #[test]
    fn objects_round_trip_and_bombs_and_garbage_are_refused() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let e = Event::now("k", Some(&record("one")), &record("two"));
        gz.write_all(serde_json::to_string(&e).unwrap().as_bytes()).unwrap();
        let data = gz.finish().unwrap();
        assert_eq!(parse_object("h", &data).unwrap(), vec![e]);

        // 300 MiB of zeros, compressed to a few hundred KiB, streamed in.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..300 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        let err = parse_object("bomb", &bomb).unwrap_err().to_string();
        assert!(err.contains("more than 256 MiB") && err.contains("bomb"), "{err}");

        let err = parse_object("plain", b"not gzip").unwrap_err().to_string();
        assert!(err.contains("not gzip"), "{err}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"key\": 1}\n").unwrap();
        let err = parse_object("odd", &gz.finish().unwrap()).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
