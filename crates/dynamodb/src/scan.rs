//! Segmented parallel Scan under a read budget, with a checkpoint per
//! segment so an interrupted scan resumes where it stopped.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{KeysAndAttributes, ReturnConsumedCapacity};
use futures::StreamExt;
use futures::stream::BoxStream;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Error, ErrorKind, Result, RetryPolicy};

use crate::budget::ReadBudget;
use crate::json::Record;

/// Where one segment of a scan stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The segment.
    pub segment: u32,
    /// The key to start after (`LastEvaluatedKey`), if any page was read.
    pub last_key: Option<Record>,
    /// Whether the segment has been read to its end.
    pub done: bool,
}

/// Where each of `segments` segments stands: its checkpoint in `resume`
/// (an interrupted scan's), else the beginning.
pub fn starting_points(segments: u32, resume: &[Checkpoint]) -> BTreeMap<u32, Checkpoint> {
    (0..segments)
        .map(|segment| {
            let c = resume.iter().find(|c| c.segment == segment).cloned().unwrap_or(Checkpoint {
                segment,
                last_key: None,
                done: false,
            });
            (segment, c)
        })
        .collect()
}

/// One page of one segment, with the checkpoint after it.
#[derive(Debug, Clone)]
pub struct ScanPage {
    /// The items.
    pub items: Vec<Record>,
    /// Where the segment stands after this page.
    pub checkpoint: Checkpoint,
}

/// How to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    segments: u32,
    consistent_read: bool,
    page_limit: Option<i32>,
    retry: RetryPolicy,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            segments: 4,
            consistent_read: false,
            page_limit: None,
            retry: RetryPolicy::default(),
        }
    }
}

impl ScanOptions {
    /// Four segments, eventually consistent reads, 1 MB pages.
    pub fn new() -> Self {
        Self::default()
    }

    /// Segments scanned in parallel (1..=1,000,000).
    pub fn with_segments(mut self, n: u32) -> Self {
        self.segments = n.clamp(1, 1_000_000);
        self
    }

    /// Strongly consistent reads (twice the read capacity).
    pub fn with_consistent_read(mut self, on: bool) -> Self {
        self.consistent_read = on;
        self
    }

    /// At most this many items a page.
    pub fn with_page_limit(mut self, limit: Option<i32>) -> Self {
        self.page_limit = limit;
        self
    }

    /// Retries of one page (throttling and transient errors only).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The number of segments.
    pub fn segments(&self) -> u32 {
        self.segments
    }

    /// Whether reads are strongly consistent.
    pub fn consistent_read(&self) -> bool {
        self.consistent_read
    }
}

/// Scans one table of the primary.
#[derive(Debug, Clone)]
pub struct TableScanner {
    client: Client,
    table: String,
    options: ScanOptions,
    budget: Arc<ReadBudget>,
}

struct Cursor {
    checkpoint: Checkpoint,
}

impl TableScanner {
    /// A scanner of `table` with `client` (primary credentials), under a
    /// budget of `read_units_per_second`.
    pub fn from_client(
        client: Client,
        table: impl Into<String>,
        read_units_per_second: f64,
    ) -> Self {
        TableScanner {
            client,
            table: table.into(),
            options: ScanOptions::default(),
            budget: Arc::new(ReadBudget::new(read_units_per_second)),
        }
    }

    /// Sets the options.
    pub fn with_options(mut self, options: ScanOptions) -> Self {
        self.options = options;
        self
    }

    /// The read budget (shared by all segments).
    pub fn budget(&self) -> &ReadBudget {
        &self.budget
    }

    /// Pages of every segment, segments in parallel, resuming from
    /// `resume` (checkpoints of an earlier, interrupted scan with the same
    /// number of segments). A page's checkpoint is safe to persist once its
    /// items are written.
    pub fn pages(&self, resume: &[Checkpoint]) -> BoxStream<'_, Result<ScanPage>> {
        self.pages_limited(resume, self.options.segments as usize)
    }

    /// Like [`TableScanner::pages`], with at most `workers` segments read
    /// at once.
    pub fn pages_limited(
        &self,
        resume: &[Checkpoint],
        workers: usize,
    ) -> BoxStream<'_, Result<ScanPage>> {
        let segments: Vec<_> = starting_points(self.options.segments, resume)
            .into_values()
            .filter(|c| !c.done)
            .map(|c| self.segment(c))
            .collect();
        futures::stream::iter(segments).flatten_unordered(workers.max(1)).boxed()
    }

    /// The pages of one segment, in order, from `checkpoint` on (nothing if
    /// the segment is done).
    pub fn segment(&self, checkpoint: Checkpoint) -> BoxStream<'_, Result<ScanPage>> {
        let start = (!checkpoint.done).then_some(Cursor { checkpoint });
        futures::stream::try_unfold(start, move |cursor| async move {
            let Some(cursor) = cursor else { return Ok(None) };
            let page = self.page(&cursor.checkpoint).await?;
            let next =
                (!page.checkpoint.done).then(|| Cursor { checkpoint: page.checkpoint.clone() });
            Ok(Some((page, next)))
        })
        .boxed()
    }

    /// The table scanned.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The options.
    pub fn options(&self) -> &ScanOptions {
        &self.options
    }

    /// The items of `keys` (key attributes only) as the table holds them
    /// now, read with BatchGetItem (strongly consistent, 100 keys a request)
    /// under the same read budget as the scan. Keys the table no longer
    /// holds are left out; keys still unprocessed after the retry budget
    /// fail the call.
    pub async fn get_items(&self, keys: Vec<Record>) -> Result<Vec<Record>> {
        let retry = self.options.retry;
        let resource = format!("table {}", self.table);
        let mut found = Vec::new();
        for chunk in keys.chunks(crate::table::READ_BATCH) {
            let mut pending = chunk.to_vec();
            let mut attempt = 1;
            while !pending.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| {
                        Error::new(ErrorKind::Failed, "build", &resource, e.to_string())
                    })?;
                let reserved = self.budget.reserve().await;
                let res = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request.clone())
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .customize()
                    .config_override(crate::table::no_retries())
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "dynamodb:BatchGetItem", resource.clone()));
                let failure = match res {
                    Ok(mut out) => {
                        let units: f64 =
                            out.consumed_capacity().iter().filter_map(|c| c.capacity_units()).sum();
                        self.budget.settle(reserved, units);
                        if let Some(items) =
                            out.responses.as_mut().and_then(|r| r.remove(&self.table))
                        {
                            found.extend(items);
                        }
                        pending = out
                            .unprocessed_keys
                            .and_then(|mut u| u.remove(&self.table))
                            .map(|k| k.keys)
                            .unwrap_or_default();
                        if pending.is_empty() {
                            break;
                        }
                        self.budget.throttled();
                        Error::new(
                            ErrorKind::Throttled,
                            "dynamodb:BatchGetItem",
                            &resource,
                            format!("keys still unprocessed after {attempt} attempts"),
                        )
                    }
                    Err(e) if e.is_retryable() => {
                        self.budget.release(reserved);
                        if e.is_throttle() {
                            self.budget.throttled();
                        }
                        pending = request.keys;
                        e
                    }
                    Err(e) => {
                        self.budget.release(reserved);
                        return Err(e);
                    }
                };
                if attempt >= retry.max_attempts {
                    return Err(failure);
                }
                tokio::time::sleep(retry.delay(attempt)).await;
                attempt += 1;
            }
        }
        Ok(found)
    }

    async fn page(&self, at: &Checkpoint) -> Result<ScanPage> {
        let retry = self.options.retry;
        let resource = format!("table {} segment {}", self.table, at.segment);
        let mut attempt = 1;
        loop {
            let reserved = self.budget.reserve().await;
            let res = self
                .client
                .scan()
                .table_name(&self.table)
                .segment(at.segment as i32)
                .total_segments(self.options.segments as i32)
                .set_exclusive_start_key(at.last_key.clone())
                .consistent_read(self.options.consistent_read)
                .set_limit(self.options.page_limit)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .customize()
                .config_override(crate::table::no_retries())
                .send()
                .await
                .map_err(|e| sdk_error(e, "dynamodb:Scan", resource.clone()));
            match res {
                Ok(out) => {
                    let units =
                        out.consumed_capacity().and_then(|c| c.capacity_units()).unwrap_or(0.0);
                    self.budget.settle(reserved, units);
                    let last_key = out.last_evaluated_key().filter(|k| !k.is_empty()).cloned();
                    let done = last_key.is_none();
                    return Ok(ScanPage {
                        items: out.items().to_vec(),
                        checkpoint: Checkpoint { segment: at.segment, last_key, done },
                    });
                }
                Err(e) if e.is_retryable() && attempt < retry.max_attempts => {
                    self.budget.release(reserved);
                    if e.is_throttle() {
                        self.budget.throttled();
                    }
                    tokio::time::sleep(retry.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    self.budget.release(reserved);
                    return Err(e);
                }
            }
        }
    }
}
