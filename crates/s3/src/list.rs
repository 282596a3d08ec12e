//! Streaming ListObjectsV2 that does not wait.
//!
//! - **Ahead of its reader.** A listing runs in a task of its own from the
//!   moment it is made, a few pages ahead of whoever reads it, so a
//!   primary's and an escrow's listing overlap each other and the planning
//!   (bounded: at most [`READAHEAD`] pages wait per listing).
//! - **Split past its first pages.** When a listing is longer than
//!   [`SPLIT_AFTER_PAGES`] pages, the keys after them are cut into key
//!   ranges at split points sampled from those pages ([`split_points`]), and
//!   up to `ranges` ranges are listed at once
//!   (`StartAfter` the range's start, stopping past its end). The ranges are
//!   disjoint and read back in order, so the listing stays in S3's key order
//!   and its memory stays bounded by the ranges in flight, whatever the
//!   bucket's size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::Object;
use futures::stream::BoxStream;
use futures::{SinkExt, Stream, StreamExt, TryStreamExt};

use crate::shard::KeyRange;
use crate::util::PaceExt;
use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Item, ItemKind, ItemStream, RequestPacer, Result};

/// Pages a listing fetches ahead of its reader.
pub(crate) const READAHEAD: usize = 2;
/// Key ranges listed at once by default, once a listing is longer than
/// [`SPLIT_AFTER_PAGES`] pages.
pub const DEFAULT_LIST_RANGES: usize = 8;
/// Pages listed one after the other before the rest is split: a bucket of up
/// to this many pages (10,000 keys) costs no request beyond its pages, and
/// the split points are sampled from all of them.
pub const SPLIT_AFTER_PAGES: usize = 10;
/// The most split points taken from a listing's first pages.
const MAX_SPLIT_POINTS: usize = 64;
/// How many character positions, up to the first pages' varying one, are
/// split (each earlier position is a coarser cut of the keys after the page).
const SPLIT_DEPTH: usize = 4;

type Pages = BoxStream<'static, Result<Vec<Object>>>;

/// One bucket listing's settings, shared by its ranges.
#[derive(Debug)]
struct Lister {
    client: Client,
    bucket: String,
    prefix: String,
    owner: Option<String>,
    pacer: Option<RequestPacer>,
    /// Only keys in this range (full keys): the first request starts after
    /// its lower bound, and the listing stops past its upper bound.
    range: KeyRange,
}

/// One page: its objects and the token of the next, if truncated.
struct Page {
    objects: Vec<Object>,
    next: Option<String>,
}

/// Where a range's first request starts.
#[derive(Debug, Clone, Default)]
enum Start {
    /// At the beginning of the prefix.
    #[default]
    Beginning,
    /// After a key (`StartAfter`).
    After(String),
    /// A continuation token.
    Token(String),
}

impl Lister {
    async fn page(&self, start: &Start) -> Result<Page> {
        let (after, token) = match start {
            Start::Beginning => (self.range.after().map(str::to_string), None),
            Start::After(k) => (Some(k.clone()), None),
            Start::Token(t) => (None, Some(t.clone())),
        };
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .set_start_after(after)
            .set_continuation_token(token)
            .set_expected_bucket_owner(self.owner.clone())
            .send()
            .paced(self.pacer.as_ref())
            .await
            .map_err(|e| {
                sdk_error(e, "s3:ListObjectsV2", format!("s3://{}/{}", self.bucket, self.prefix))
            })?;
        let next = match out.next_continuation_token() {
            Some(t) if out.is_truncated().unwrap_or(false) && !t.is_empty() => Some(t.to_string()),
            _ => None,
        };
        if let (Start::Token(given), Some(next)) = (start, &next)
            && given == next
        {
            return Err(escrow_sync_core::Error::new(
                escrow_sync_core::ErrorKind::Failed,
                "s3:ListObjectsV2",
                format!("s3://{}/{}", self.bucket, self.prefix),
                "the store returned the continuation token it was given: the listing would \
                 never end",
            ));
        }
        let mut objects = out.contents.unwrap_or_default();
        let mut next = next;
        // Only the range's keys: none at or before its start (a store that
        // ignores StartAfter), and none past its end (the listing stops).
        if !self.range.is_all() {
            objects.retain(|o| self.range.after().is_none_or(|a| o.key().unwrap_or("") > a));
            if let Some(end) = self.range.until()
                && let Some(cut) = objects.iter().position(|o| o.key().unwrap_or("") > end)
            {
                objects.truncate(cut);
                next = None;
            }
        }
        Ok(Page { objects, next })
    }

    /// The pages of the keys `k` with `start < k <= until` (`until` `None`:
    /// to the end). Keys at or before a `StartAfter` start are dropped (a
    /// store that ignores it still yields each key once), and a store that
    /// hands back the continuation token it was given is an error, not an
    /// endless listing.
    fn range(self: Arc<Self>, start: Start, until: Option<String>) -> Pages {
        let floor = match &start {
            Start::After(k) => Some(k.clone()),
            Start::Beginning | Start::Token(_) => None,
        };
        futures::stream::try_unfold(Some(start), move |state| {
            let (lister, until, floor) = (self.clone(), until.clone(), floor.clone());
            async move {
                let Some(start) = state else { return Ok(None) };
                let page = lister.page(&start).await?;
                let mut objects = page.objects;
                if let Some(floor) = &floor {
                    objects.retain(|o| o.key().unwrap_or("") > floor.as_str());
                }
                let mut next = page.next.map(Start::Token);
                if let Some(end) = &until
                    && let Some(cut) =
                        objects.iter().position(|o| o.key().unwrap_or("") > end.as_str())
                {
                    objects.truncate(cut);
                    next = None;
                }
                Ok(Some((objects, next)))
            }
        })
        .boxed()
    }
}

/// One listing of a bucket: where, as whom, how fast.
#[derive(Debug, Clone)]
pub(crate) struct ListRequest {
    pub(crate) client: Client,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    /// Bytes removed from each key (a sink's destination prefix).
    pub(crate) strip: usize,
    pub(crate) owner: Option<String>,
    pub(crate) pacer: Option<RequestPacer>,
    /// Key ranges listed at once past the first pages (1: one listing).
    pub(crate) ranges: usize,
    /// Only keys in this range (full keys; [`KeyRange::all`]: every key).
    pub(crate) range: KeyRange,
}

/// Lists the request's bucket under its prefix, page by page in key order,
/// yielding items whose keys have the first `strip` bytes removed; up to
/// `ranges` key ranges at once past its first [`SPLIT_AFTER_PAGES`] pages.
pub(crate) fn list_objects(req: ListRequest) -> ItemStream<'static> {
    let ListRequest { client, bucket, prefix, strip, owner, pacer, ranges, range } = req;
    let lister = Arc::new(Lister { client, bucket, prefix, owner, pacer, range });
    let start = Phase::Sequential(Sampled { start: Start::Beginning, ..Sampled::default() });
    let pages = futures::stream::try_unfold(start, move |phase| {
        let lister = lister.clone();
        async move {
            match phase {
                Phase::Sequential(sample) => sample.next(lister, ranges).await,
                Phase::Split(mut rest) => match rest.next().await {
                    Some(Ok(page)) => Ok(Some((page, Phase::Split(rest)))),
                    Some(Err(e)) => Err(e),
                    None => Ok(None),
                },
                Phase::Done => Ok(None),
            }
        }
    });
    ahead(pages.boxed(), READAHEAD)
        .map_ok(move |objects| futures::stream::iter(items(objects, strip).map(Ok)))
        .try_flatten()
        .boxed()
}

/// Where a listing is: its first pages one after the other, then (past
/// [`SPLIT_AFTER_PAGES`]) the rest in key ranges.
enum Phase {
    Sequential(Sampled),
    Split(Pages),
    Done,
}

/// The first pages of a listing, and what they tell of its keys.
#[derive(Default)]
struct Sampled {
    start: Start,
    pages: usize,
    first: Option<String>,
    alphabet: std::collections::BTreeSet<char>,
}

impl Sampled {
    /// The next page, and the phase after it.
    async fn next(
        mut self,
        lister: Arc<Lister>,
        ranges: usize,
    ) -> Result<Option<(Vec<Object>, Phase)>> {
        let page = lister.page(&self.start).await?;
        let Some(token) = page.next else { return Ok(Some((page.objects, Phase::Done))) };
        let keys = page.objects.iter().filter_map(|o| o.key());
        for key in keys.clone() {
            self.alphabet.extend(key.get(lister.prefix.len()..).unwrap_or("").chars());
        }
        if self.first.is_none() {
            self.first = keys.clone().next().map(str::to_string);
        }
        self.pages += 1;
        let last = keys.clone().next_back().map(str::to_string);
        if ranges > 1
            && self.pages >= SPLIT_AFTER_PAGES
            && let (Some(first), Some(last)) = (&self.first, last)
        {
            let alphabet: Vec<char> = self.alphabet.iter().copied().collect();
            let mut points =
                split_points(first, &last, &alphabet, &lister.prefix, MAX_SPLIT_POINTS);
            // Past the range's end, a split range would hold nothing.
            if let Some(end) = lister.range.until() {
                points.retain(|p| p.as_str() < end);
            }
            if !points.is_empty() {
                let rest = split(lister, last, points, ranges);
                return Ok(Some((page.objects, Phase::Split(rest))));
            }
        }
        self.start = Start::Token(token);
        Ok(Some((page.objects, Phase::Sequential(self))))
    }
}

/// The keys after `last` as ranges cut at `points` (ascending, all above
/// `last`), listed up to `ranges` at once and read back in order.
fn split(lister: Arc<Lister>, last: String, points: Vec<String>, ranges: usize) -> Pages {
    let starts: Vec<String> = std::iter::once(last).chain(points.iter().cloned()).collect();
    let ends = points.into_iter().map(Some).chain(std::iter::once(None));
    let bounds: Vec<(String, Option<String>)> = starts.into_iter().zip(ends).collect();
    tracing::debug!(bucket = %lister.bucket, ranges = bounds.len(), "listing in key ranges");
    futures::stream::iter(bounds)
        .map(move |(after, until)| {
            // Each range starts listing when it comes within `ranges` of
            // the one being read: at most `ranges` run ahead.
            futures::future::ready(ahead(
                lister.clone().range(Start::After(after), until),
                READAHEAD,
            ))
        })
        .buffered(ranges)
        .flatten()
        .boxed()
}

/// Split points for the keys after the first pages of a listing, which ran
/// from `first` to `last` using the characters of `alphabet`: for the last
/// few character positions up to the one where `first` and `last` differ,
/// the last key's stem up to that position followed by each character of
/// the alphabet that sorts above the last key's own. Every point sorts above
/// `last` and starts with `prefix`; at most `max`, ascending.
pub(crate) fn split_points(
    first: &str,
    last: &str,
    alphabet: &[char],
    prefix: &str,
    max: usize,
) -> Vec<String> {
    // Where the keys begin to differ (a char boundary of both).
    let differ = first
        .char_indices()
        .zip(last.chars())
        .find(|((_, a), b)| a != b)
        .map_or(first.len().min(last.len()), |((i, _), _)| i);
    let positions: Vec<(usize, char)> =
        last.char_indices().filter(|(i, _)| *i >= prefix.len() && *i <= differ).collect();
    let mut points: Vec<String> = positions
        .iter()
        .rev()
        .take(SPLIT_DEPTH)
        .flat_map(|&(at, own)| {
            let stem = &last[..at];
            alphabet.iter().filter(move |c| **c > own).map(move |c| format!("{stem}{c}"))
        })
        .filter(|p| p.as_str() > last)
        .collect();
    points.sort_unstable();
    points.dedup();
    if points.len() > max {
        let step = points.len().div_ceil(max);
        points = points.into_iter().step_by(step).collect();
    }
    points
}

/// Items from listed objects, keys with their first `strip` bytes removed.
fn items(objects: Vec<Object>, strip: usize) -> impl Iterator<Item = Item> {
    objects.into_iter().filter_map(move |o| {
        let logical = o.key()?.get(strip..)?.to_string();
        let modified = o.last_modified().and_then(|d| SystemTime::try_from(*d).ok());
        Some(
            Item::new(
                logical,
                ItemKind::Object,
                o.size().unwrap_or(0).max(0) as u64,
                o.e_tag().unwrap_or_default(),
            )
            .with_modified(modified)
            .with_checksum_algorithm(
                o.checksum_algorithm().first().map(|a| a.as_str().to_string()),
            ),
        )
    })
}

/// Runs `pages` in a task of its own, at most `capacity` pages ahead of the
/// returned stream; the task stops when the stream is dropped. Outside an
/// async runtime, `pages` as is.
fn ahead(pages: Pages, capacity: usize) -> Pages {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return pages };
    let (mut tx, rx) = futures::channel::mpsc::channel(capacity.saturating_sub(1));
    let task = runtime.spawn(async move {
        let mut pages = pages;
        while let Some(page) = pages.next().await {
            let end = page.is_err();
            if tx.send(page).await.is_err() || end {
                return;
            }
        }
    });
    Ahead { rx, task }.boxed()
}

/// The reading end of [`ahead`]: aborts the listing task when dropped.
struct Ahead {
    rx: futures::channel::mpsc::Receiver<Result<Vec<Object>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for Ahead {
    type Item = Result<Vec<Object>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listing started ahead of its use ([`crate::S3Source::prefetch`]): the
/// next `list` of the same prefix takes it instead of starting another.
#[derive(Clone, Default)]
pub(crate) struct Prefetch(Arc<std::sync::Mutex<Option<(String, ItemStream<'static>)>>>);

impl std::fmt::Debug for Prefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map(|p| p.as_ref().map(|(k, _)| k.clone())).ok().flatten();
        f.debug_tuple("Prefetch").field(&held).finish()
    }
}

impl Prefetch {
    /// Starts `versions`/`req`'s listing now and keeps it for the next
    /// [`Prefetch::list`] of the same prefix.
    pub(crate) fn start(&self, versions: bool, req: ListRequest) {
        let prefix = req.prefix.clone();
        let stream = list_keys(versions, req);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((prefix, stream));
    }

    /// The listing started for `req`'s prefix, or a new one.
    pub(crate) fn list(&self, versions: bool, req: ListRequest) -> ItemStream<'static> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match held.take() {
            Some((prefix, stream)) if prefix == req.prefix => stream,
            _ => list_keys(versions, req),
        }
    }
}

/// Lists the request's bucket: every version of every key (one item per
/// key) when `versions`, else the current objects.
pub(crate) fn list_keys(versions: bool, req: ListRequest) -> ItemStream<'static> {
    if versions {
        let ListRequest { client, bucket, prefix, strip, owner, pacer, range, .. } = req;
        // A part starts at its lower bound (KeyMarker: the keys after it)
        // and stops past its upper one, so N parts list the bucket's
        // versions once between them, not N times.
        let after = range.after().map(str::to_string);
        let head = prefix.get(..strip).unwrap_or_default().to_string();
        let all =
            crate::versions::list_versions(pacer, client, bucket, prefix, strip, owner, after);
        if range.is_all() {
            return all;
        }
        // The range is of full keys, the items' are stripped of `head`.
        let until = range.until().map(str::to_string);
        let past =
            move |key: &str| until.as_deref().is_some_and(|u| format!("{head}{key}").as_str() > u);
        let range = range.stripped(strip);
        all.try_take_while(move |item| futures::future::ready(Ok(!past(&item.key))))
            .try_filter(move |item| futures::future::ready(range.contains(&item.key)))
            .boxed()
    } else {
        list_objects(req)
    }
}

#[cfg(test)]
mod tests {
    use super::split_points;

    fn digits() -> Vec<char> {
        ('0'..='9').collect()
    }

    #[test]
    fn split_points_cut_the_keys_after_numbered_pages() {
        let points = split_points("obj/000000", "obj/009999", &digits(), "obj/", 64);
        // Past obj/009999: obj/01..obj/09, then obj/1..obj/9.
        assert!(points.contains(&"obj/01".to_string()), "{points:?}");
        assert!(points.contains(&"obj/1".to_string()), "{points:?}");
        assert!(points.iter().all(|p| p.as_str() > "obj/009999" && p.starts_with("obj/")));
        assert!(points.windows(2).all(|w| w[0] < w[1]), "ascending: {points:?}");
        assert!(split_points("obj/000000", "obj/009999", &digits(), "obj/", 5).len() <= 5);
    }

    #[test]
    fn split_points_stay_within_the_prefix_and_above_the_page() {
        // One key: nothing differs; points still sort above it.
        let abc: Vec<char> = "abc".chars().collect();
        let points = split_points("p/abc", "p/abc", &abc, "p/", 64);
        assert!(points.iter().all(|p| p.as_str() > "p/abc" && p.starts_with("p/")), "{points:?}");
        // Multibyte characters cut on character boundaries.
        let chars: Vec<char> = "é123ü".chars().collect();
        let points = split_points("p/é1", "p/ü3", &chars, "p/", 64);
        assert!(points.iter().all(|p| p.as_str() > "p/ü3" && p.starts_with("p/")), "{points:?}");
    }
}
