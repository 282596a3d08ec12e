//! Executor behaviour: concurrency bound, retries, cancellation, progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use escrow_sync_core::{
    CancellationToken, Error, ErrorKind, Executor, ExecutorOptions, Item, ItemStream, Mode,
    Payload, ProgressEvent, Receipt, Result, RetryPolicy, Scope, Sink, Source,
};
use escrow_sync_testkit::{FaultCounts, FaultKind, FaultLayer, MemBucket, MemSink, MemSource};

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
    }
}

fn primary(n: usize) -> MemBucket {
    let b = MemBucket::new("primary");
    for i in 0..n {
        b.put(format!("k{i:04}"), vec![i as u8; i % 17 + 1]);
    }
    b
}

/// A sink that records the most writes it ever saw at once.
struct SlowSink {
    inner: MemSink,
    now: AtomicUsize,
    peak: AtomicUsize,
    delay: Duration,
}

#[async_trait]
impl Sink for SlowSink {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }
    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let r = self.inner.write(item, payload).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

#[tokio::test]
async fn concurrency_is_bounded_and_used() {
    let src = MemSource::new(primary(40));
    let sink = SlowSink {
        inner: MemSink::new(MemBucket::new("escrow")),
        now: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        delay: Duration::from_millis(5),
    };
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(6));
    let r = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!(r.copied, 40);
    assert_eq!(sink.peak.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn transient_and_throttle_errors_are_retried_until_success() {
    let src = MemSource::new(primary(60));
    let escrow = MemBucket::new("escrow");
    let sink = FaultLayer::new()
        .with_transient_rate(0.2)
        .with_throttle_rate(0.2)
        .with_seed(11)
        .wrap(MemSink::new(escrow.clone()));
    let ex = Executor::new(ExecutorOptions::new().with_retry(fast_retry(20)));
    let r = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((r.copied, r.failed), (60, 0), "{:?}", r.failures);
    let counts = sink.counts();
    let n = counts.record("core::executor::transient_and_throttle_retried");
    // Deterministic: every item ends in success, so the faults are those the
    // seeded sequence draws before its 60th pass, whatever the interleaving.
    assert_eq!(n, 23, "faults injected: {}", counts.summary());
    assert_eq!((counts.get(FaultKind::Transient), counts.get(FaultKind::Throttle)), (10, 13));
    assert_eq!(sink.injected(), n);
    assert_eq!(escrow.len(), 60);
    assert_eq!(sink.inner().writes(), 60, "each item written once");
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let src = MemSource::new(primary(10));
    let sink = FaultLayer::new()
        .with_failing_keys(["k0003", "k0007"])
        .wrap(MemSink::new(MemBucket::new("escrow")));
    let ex = Executor::new(ExecutorOptions::new().with_retry(fast_retry(5)));
    let r = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((r.copied, r.failed), (8, 2));
    let mut keys: Vec<_> = r.failures.iter().map(|f| (f.key.as_str(), f.attempts)).collect();
    keys.sort();
    assert_eq!(keys, [("k0003", 1), ("k0007", 1)]);
    assert!(r.failures.iter().all(|f| f.kind == ErrorKind::Failed && f.error.contains(&f.key)));
    let n = sink.counts().record("core::executor::permanent_errors_not_retried");
    assert_eq!((n, sink.counts().get(FaultKind::Permanent)), (2, 2), "one per failing key");
}

#[tokio::test]
async fn retries_stop_at_the_budget() {
    let src = MemSource::new(primary(3));
    let sink = FaultLayer::new().with_transient_rate(1.0).wrap(MemSink::new(MemBucket::new("e")));
    let ex = Executor::new(ExecutorOptions::new().with_retry(fast_retry(4)));
    let r = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!(r.failed, 3);
    assert!(r.failures.iter().all(|f| f.attempts == 4 && f.kind == ErrorKind::Transient));
    assert_eq!(sink.injected(), 12);
    assert_eq!(sink.counts().record("core::executor::retries_stop_at_the_budget"), 12);
}

#[tokio::test]
async fn cancellation_stops_scheduling_and_lets_in_flight_items_finish() {
    let src = MemSource::new(primary(50));
    let sink = SlowSink {
        inner: MemSink::new(MemBucket::new("escrow")),
        now: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        delay: Duration::from_millis(20),
    };
    let token = CancellationToken::new();
    let t = token.clone();
    let started = Arc::new(AtomicU64::new(0));
    let s2 = started.clone();
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(4))
        .with_cancellation(token)
        .with_progress(Arc::new(move |e: &ProgressEvent| {
            if matches!(e, ProgressEvent::Started { .. }) && s2.fetch_add(1, Ordering::SeqCst) == 5
            {
                t.cancel();
            }
        }));
    let r = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert!(r.cancelled);
    assert_eq!(r.failed, 0, "in-flight items finished: {:?}", r.failures);
    let started = started.load(Ordering::SeqCst);
    assert_eq!(r.copied, started, "every started item finished");
    assert!(r.copied < 50);
    assert_eq!(sink.inner.writes(), r.copied);
}

#[tokio::test]
async fn cancellation_during_backoff_fails_the_item_cleanly() {
    let src = MemSource::new(primary(1));
    let sink = FaultLayer::new().with_transient_rate(1.0).wrap(MemSink::new(MemBucket::new("e")));
    let token = CancellationToken::new();
    let t = token.clone();
    let ex = Executor::new(ExecutorOptions::new().with_retry(RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
    }))
    .with_cancellation(token)
    .with_progress(Arc::new(move |e: &ProgressEvent| {
        if matches!(e, ProgressEvent::Retrying { .. }) {
            t.cancel();
        }
    }));
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        ex.execute(Mode::Run, &src, &sink, &Scope::all()),
    )
    .await
    .expect("cancellation interrupts the backoff")
    .unwrap();
    assert!(r.cancelled);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].kind, ErrorKind::Cancelled);
    let n = sink.counts().record("core::executor::cancellation_during_backoff");
    assert_eq!(n, 1, "one attempt, then the backoff was cancelled");
}

#[tokio::test]
async fn progress_events_account_for_every_item() {
    let bucket = primary(20);
    let escrow = MemBucket::new("escrow");
    for k in bucket.keys().into_iter().take(5) {
        escrow.put(k.clone(), bucket.get(&k).unwrap().data);
    }
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let c = counts.clone();
    let ex = Executor::new(ExecutorOptions::new()).with_progress(Arc::new(move |e| match e {
        ProgressEvent::Started { .. } => {
            c[0].fetch_add(1, Ordering::SeqCst);
        }
        ProgressEvent::Copied { .. } => {
            c[1].fetch_add(1, Ordering::SeqCst);
        }
        ProgressEvent::Skipped { .. } => {
            c[2].fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    }));
    let r = ex
        .execute(Mode::Run, &MemSource::new(bucket), &MemSink::new(escrow), &Scope::all())
        .await
        .unwrap();
    assert_eq!((r.copied, r.skipped), (15, 5));
    let got: Vec<u64> = counts.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    assert_eq!(got, [15, 15, 5]);
}

#[tokio::test]
async fn unsorted_listings_plan_in_memory_with_the_same_result() {
    let escrow_a = MemBucket::new("a");
    let escrow_b = MemBucket::new("b");
    let ex = Executor::new(ExecutorOptions::new());
    let sorted = ex
        .execute(
            Mode::Run,
            &MemSource::new(primary(30)),
            &MemSink::new(escrow_a.clone()),
            &Scope::all(),
        )
        .await
        .unwrap();
    let unsorted = ex
        .execute(
            Mode::Run,
            &MemSource::new(primary(30)).with_unsorted_listing(),
            &MemSink::new(escrow_b.clone()).with_unsorted_listing(),
            &Scope::all(),
        )
        .await
        .unwrap();
    assert_eq!((sorted.copied, unsorted.copied), (30, 30));
    assert_eq!(escrow_a.keys(), escrow_b.keys());
}

#[tokio::test]
async fn plan_and_verify_change_nothing() {
    let src = MemSource::new(primary(10));
    let escrow = MemBucket::new("escrow");
    escrow.put("k0001", "stale");
    let sink = MemSink::new(escrow.clone());
    let ex = Executor::new(ExecutorOptions::new());
    let plan = ex.execute(Mode::Plan, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((plan.copied, plan.missing, plan.different), (10, 9, 1));
    let verify = ex.execute(Mode::Verify, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((verify.missing, verify.different, verify.differences.len()), (9, 1, 10));
    assert!(!verify.is_clean());
    assert_eq!(sink.writes(), 0);
    assert_eq!(src.reads(), 0);
    assert_eq!(escrow.len(), 1);
}

struct BrokenListing;

#[async_trait]
impl Source for BrokenListing {
    fn describe(&self) -> String {
        "broken://".into()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, _: &Scope) -> ItemStream<'_> {
        futures::stream::iter(vec![Err(Error::new(
            ErrorKind::AccessDenied,
            "s3:ListObjectsV2",
            "prod-bucket",
            "",
        ))])
        .boxed()
    }
    async fn read(&self, _: &Item) -> Result<Payload> {
        unreachable!("nothing listed")
    }
}

#[tokio::test]
async fn a_listing_failure_fails_the_job() {
    let sink = MemSink::new(MemBucket::new("escrow"));
    let err = Executor::new(ExecutorOptions::new())
        .execute(Mode::Run, &BrokenListing, &sink, &Scope::all())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessDenied);
    assert!(err.to_string().contains("prod-bucket"));
}

/// A sink that vouches for escrow items whose listing differs (as S3 does
/// for multipart copies, whose ETag is not the source's).
struct VouchingSink {
    inner: MemSink,
    vouch_for: &'static str,
}

#[async_trait]
impl Sink for VouchingSink {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }
    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        self.inner.write(item, payload).await
    }
    async fn confirm_same(&self, item: &Item, escrow: &Item) -> Result<bool> {
        Ok(item.key == self.vouch_for && escrow.key == item.key)
    }
}

#[tokio::test]
async fn a_sink_can_confirm_a_changed_listing_is_the_same_content() {
    let primary = MemBucket::new("primary");
    primary.put("same-content", "a");
    primary.put("really-changed", "b");
    let escrow = MemBucket::new("escrow");
    escrow.put("same-content", "different listing");
    escrow.put("really-changed", "old");
    let sink = VouchingSink { inner: MemSink::new(escrow.clone()), vouch_for: "same-content" };
    let src = MemSource::new(primary);
    let ex = Executor::new(ExecutorOptions::new());

    let verify = ex.execute(Mode::Verify, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((verify.skipped, verify.different), (1, 1));
    assert_eq!(verify.differences[0].key, "really-changed");
    let plan = ex.execute(Mode::Plan, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((plan.copied, plan.skipped), (1, 1));

    let run = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.skipped), (1, 1));
    assert_eq!(sink.inner.writes_of("same-content"), 0);
    assert_eq!(sink.inner.writes_of("really-changed"), 1);
}

/// A sink that throttles its first `n` writes.
struct ThrottleFirst {
    inner: MemSink,
    left: AtomicU64,
}

#[async_trait]
impl Sink for ThrottleFirst {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }
    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        if self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            return Err(Error::new(ErrorKind::Throttled, "write", &item.key, "SlowDown"));
        }
        self.inner.write(item, payload).await
    }
}

#[tokio::test]
async fn throttling_halves_the_concurrency_and_success_grows_it_back() {
    let sink =
        ThrottleFirst { inner: MemSink::new(MemBucket::new("escrow")), left: AtomicU64::new(3) };
    let limits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = limits.clone();
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(8).with_retry(fast_retry(10)))
        .with_progress(Arc::new(move |e| {
            if let ProgressEvent::Concurrency { limit } = e {
                l.lock().unwrap().push(*limit);
            }
        }));
    let r =
        ex.execute(Mode::Run, &MemSource::new(primary(200)), &sink, &Scope::all()).await.unwrap();
    assert_eq!((r.copied, r.failed, r.throttled), (200, 0, 3));
    let counts = FaultCounts::new();
    for _ in 0..3 - sink.left.load(Ordering::SeqCst) {
        counts.add(FaultKind::Throttle);
    }
    assert_eq!(counts.record("core::executor::throttling_halves_the_concurrency"), 3);
    let limits = limits.lock().unwrap().clone();
    assert_eq!(&limits[..3], [4, 2, 1], "halved on each throttle: {limits:?}");
    assert_eq!(*limits.last().unwrap(), 8, "grew back to the maximum: {limits:?}");
    assert!(limits.windows(2).skip(3).all(|w| w[1] == w[0] + 1), "one step at a time: {limits:?}");
}

/// Listings that say a checksum is kept.
fn with_algorithm(list: ItemStream<'_>) -> ItemStream<'_> {
    list.map(|r| r.map(|i| i.with_checksum_algorithm(Some("CRC64NVME".into())))).boxed()
}

/// A source and sink that keep a checksum per key, independent of the
/// listed fingerprint (as S3 keeps a full-object CRC64NVME whatever the ETag).
struct Summed<T> {
    inner: T,
    sums: std::collections::HashMap<String, String>,
}

#[async_trait]
impl Source for Summed<MemSource> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        with_algorithm(self.inner.list(scope))
    }
    async fn read(&self, item: &Item) -> Result<Payload> {
        self.inner.read(item).await
    }
    async fn checksum(&self, item: &Item) -> Result<Option<String>> {
        Ok(self.sums.get(&item.key).cloned())
    }
}

#[async_trait]
impl Sink for Summed<MemSink> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        with_algorithm(self.inner.list(scope))
    }
    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        self.inner.write(item, payload).await
    }
    async fn checksum(&self, item: &Item) -> Result<Option<String>> {
        Ok(self.sums.get(&item.key).cloned())
    }
}

/// Only a cryptographic hash proves two listings' objects hold the same
/// bytes: a CRC (even CRC64NVME) can be forged by whoever writes the
/// source, so a rewrite in the primary with a CRC equal to escrow's must
/// still be copied (and counted as a change).
#[tokio::test]
async fn equal_strong_checksums_prove_sameness_when_listings_differ() {
    let primary = MemBucket::new("primary");
    let escrow = MemBucket::new("escrow");
    for k in ["same-sha256", "same-crc64", "same-crc32", "different"] {
        primary.put(k, "new layout");
        escrow.put(k, "old layout");
    }
    let sums = |escrow_side: bool| -> std::collections::HashMap<String, String> {
        [
            ("same-sha256", "SHA256:EEEE".to_string()),
            ("same-crc64", "CRC64NVME:AAAA".to_string()),
            ("same-crc32", "CRC32C:BBBB".to_string()),
            ("different", if escrow_side { "SHA256:CCCC" } else { "SHA256:DDDD" }.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    let src = Summed { inner: MemSource::new(primary), sums: sums(false) };
    let sink = Summed { inner: MemSink::new(escrow), sums: sums(true) };
    let r = Executor::new(ExecutorOptions::new())
        .execute(Mode::Run, &src, &sink, &Scope::all())
        .await
        .unwrap();
    assert_eq!((r.copied, r.skipped), (3, 1), "{r:?}");
    assert_eq!(sink.inner.writes_of("same-sha256"), 0, "a SHA-256 match proves sameness");
    assert_eq!(sink.inner.writes_of("same-crc64"), 1, "a forgeable CRC64NVME match does not");
    assert_eq!(sink.inner.writes_of("same-crc32"), 1, "a 32-bit CRC match does not");
    assert_eq!(sink.inner.writes_of("different"), 1);
}

/// A source whose `finish` (undo a share, say) is counted, and fails for
/// one key.
struct Finishing {
    inner: MemSource,
    finished: std::sync::Mutex<Vec<String>>,
    fails_for: &'static str,
}

#[async_trait]
impl Source for Finishing {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }
    async fn read(&self, item: &Item) -> Result<Payload> {
        self.inner.read(item).await
    }
    async fn finish(&self, item: &Item) -> Result<()> {
        if item.key == self.fails_for {
            return Err(Error::new(ErrorKind::AccessDenied, "unshare", &item.key, "denied"));
        }
        self.finished.lock().unwrap().push(item.key.clone());
        Ok(())
    }
}

#[tokio::test]
async fn the_source_finishes_each_copied_item_and_a_failure_is_a_warning() {
    let src = Finishing {
        inner: MemSource::new(primary(5)),
        finished: Default::default(),
        fails_for: "k0003",
    };
    let sink = MemSink::new(MemBucket::new("escrow"));
    let ex = Executor::new(ExecutorOptions::new().with_retry(fast_retry(2)));
    let plan = ex.execute(Mode::Plan, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!(plan.copied, 5);
    assert!(src.finished.lock().unwrap().is_empty(), "a plan finishes nothing");
    let run = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (5, 0), "{run:?}");
    let mut finished = src.finished.lock().unwrap().clone();
    finished.sort();
    assert_eq!(finished, ["k0000", "k0001", "k0002", "k0004"]);
    assert_eq!(run.warnings.len(), 1, "{:?}", run.warnings);
    assert!(run.warnings[0].contains("k0003 is in escrow") && run.warnings[0].contains("denied"));
}

/// A source that says, for plan, that k0001 needs more than a plain copy
/// and k0002 cannot be copied.
struct Assessing(MemSource);

#[async_trait]
impl Source for Assessing {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.0.list(scope)
    }
    async fn read(&self, item: &Item) -> Result<Payload> {
        self.0.read(item).await
    }
    fn assesses(&self) -> bool {
        true
    }
    async fn assess(&self, item: &Item) -> Result<Option<String>> {
        match item.key.as_str() {
            "k0001" => Ok(Some("needs re-encryption: aws/ebs".into())),
            "k0002" => Err(Error::new(ErrorKind::Unsupported, "share", "k0002", "a billing code")),
            _ => Ok(None),
        }
    }
}

#[tokio::test]
async fn plan_shows_what_the_source_says_each_missing_item_needs() {
    let src = Assessing(MemSource::new(primary(4)));
    let sink = MemSink::new(MemBucket::new("escrow"));
    let plan = Executor::new(ExecutorOptions::new())
        .execute(Mode::Plan, &src, &sink, &Scope::all())
        .await
        .unwrap();
    assert_eq!((plan.missing, plan.copied), (4, 3), "the uncopyable one is not counted");
    let status =
        |k: &str| plan.differences.iter().find(|d| d.key == k).and_then(|d| d.status.clone());
    assert_eq!(status("k0000"), None);
    assert_eq!(status("k0001").as_deref(), Some("needs re-encryption: aws/ebs"));
    assert!(status("k0002").unwrap().starts_with("not copyable: "), "{:?}", status("k0002"));
    assert!(status("k0002").unwrap().contains("a billing code"));
    assert_eq!(sink.writes(), 0);
}

/// A source that counts `finish` calls, and asks for them on skipped items.
struct FinishingSkipped {
    inner: MemSource,
    finished: AtomicUsize,
}

#[async_trait]
impl Source for FinishingSkipped {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }
    async fn read(&self, item: &Item) -> Result<Payload> {
        self.inner.read(item).await
    }
    fn finishes_skipped(&self) -> bool {
        true
    }
    async fn finish(&self, _: &Item) -> Result<()> {
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_run_finishes_items_escrow_already_holds_when_the_source_asks() {
    let src = FinishingSkipped { inner: MemSource::new(primary(5)), finished: AtomicUsize::new(0) };
    let sink = MemSink::new(MemBucket::new("escrow"));
    let ex = Executor::new(ExecutorOptions::new().with_listed_in_escrow(true));
    let first = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((first.copied, src.finished.load(Ordering::SeqCst)), (5, 5));
    for mode in [Mode::Plan, Mode::Verify] {
        ex.execute(mode, &src, &sink, &Scope::all()).await.unwrap();
    }
    assert_eq!(src.finished.load(Ordering::SeqCst), 5, "plan and verify finish nothing");
    let again = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 5));
    assert_eq!(again.in_escrow.len(), 5);
    assert_eq!(src.finished.load(Ordering::SeqCst), 10, "each skipped item finished once");
    assert_eq!(sink.writes(), 5);
}

#[tokio::test]
async fn a_run_logs_every_items_outcome_and_plan_and_verify_log_nothing() {
    use escrow_sync_core::{ItemOutcome, ItemRecord};
    let bucket = primary(4);
    let src = MemSource::new(bucket.clone());
    let escrow = MemBucket::new("escrow");
    escrow.put("k0000", bucket.get("k0000").unwrap().data);
    escrow.put("gone", "only in escrow");
    let sink = MemSink::new(escrow.clone());
    let log: Arc<std::sync::Mutex<Vec<ItemRecord>>> = Default::default();
    let l = log.clone();
    let options = ExecutorOptions::new()
        .with_item_log(Arc::new(move |r: ItemRecord| l.lock().unwrap().push(r)));
    let ex = Executor::new(options);
    for mode in [Mode::Plan, Mode::Verify] {
        ex.execute(mode, &src, &sink, &Scope::all()).await.unwrap();
    }
    assert!(log.lock().unwrap().is_empty(), "plan and verify record nothing");
    ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    let mut seen: Vec<(String, ItemOutcome)> =
        log.lock().unwrap().iter().map(|r| (r.item.key.clone(), r.outcome)).collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            ("gone".to_string(), ItemOutcome::Retained),
            ("k0000".to_string(), ItemOutcome::InEscrow),
            ("k0001".to_string(), ItemOutcome::Copied),
            ("k0002".to_string(), ItemOutcome::Copied),
            ("k0003".to_string(), ItemOutcome::Copied),
        ]
    );
    let copied = log.lock().unwrap().iter().find(|r| r.item.key == "k0001").cloned().unwrap();
    let data = bucket.get("k0001").unwrap().data;
    assert_eq!(copied.item.fingerprint, escrow_sync_testkit::fingerprint(&data));
}

/// A sink whose writes never end (a copy stuck in flight).
struct StuckSink {
    inner: MemSink,
    started: AtomicUsize,
}

#[async_trait]
impl Sink for StuckSink {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }
    async fn write(&self, _: &Item, _: Payload) -> Result<Receipt> {
        self.started.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

#[tokio::test]
async fn the_hard_stop_fails_the_items_in_flight_and_starts_nothing_new() {
    let src = MemSource::new(primary(20));
    let sink = Arc::new(StuckSink {
        inner: MemSink::new(MemBucket::new("escrow")),
        started: AtomicUsize::new(0),
    });
    let (cancel, stop) = (CancellationToken::new(), CancellationToken::new());
    let logged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = logged.clone();
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let (s, c, t) = (sink.clone(), cancel.clone(), stop.clone());
    let ex = Executor::new(
        ExecutorOptions::new()
            .with_concurrency(4)
            .with_item_log(Arc::new(move |r| log.lock().unwrap().push(r))),
    )
    .with_cancellation(cancel)
    .with_stop(stop)
    .with_progress(Arc::new(move |e: &ProgressEvent| {
        seen.lock().unwrap().push(e.clone());
        // Once four copies hang, a signal comes, and the drain runs out.
        if matches!(e, ProgressEvent::Started { .. }) && s.started.load(Ordering::SeqCst) >= 3 {
            c.cancel();
            t.cancel();
        }
    }));
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        ex.execute(Mode::Run, &src, sink.as_ref(), &Scope::all()),
    )
    .await
    .expect("the hard stop ends the execution")
    .unwrap();
    assert!(r.cancelled);
    assert_eq!((r.copied, r.failed), (0, 4), "{r:?}");
    assert!(r.failures.iter().all(|f| f.kind == ErrorKind::Cancelled), "{:?}", r.failures);
    assert!(sink.started.load(Ordering::SeqCst) <= 4);
    let logged = logged.lock().unwrap();
    assert_eq!(logged.len(), 4);
    assert!(logged.iter().all(|r| r.outcome == escrow_sync_core::ItemOutcome::Failed));
    let events = events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(e, ProgressEvent::Stopping)));
    let started = events.iter().filter(|e| matches!(e, ProgressEvent::Started { .. })).count();
    assert_eq!(started, 4, "nothing new started");
    assert!(!events.iter().any(|e| matches!(e, ProgressEvent::Copied { .. })));
}

#[tokio::test(start_paused = true)]
async fn the_drain_timer_stops_after_the_drain_and_not_before_the_cancellation() {
    let (cancel, stop) = (CancellationToken::new(), CancellationToken::new());
    let _timer = escrow_sync_core::StopAfterDrain::start(&cancel, &stop, Duration::from_secs(30));
    // Waits on the stop itself; the paused clock jumps to each deadline.
    let never = tokio::time::timeout(Duration::from_secs(3600), stop.cancelled()).await;
    assert!(never.is_err(), "no cancellation, no stop");
    let cancelled_at = tokio::time::Instant::now();
    cancel.cancel();
    stop.cancelled().await;
    assert_eq!(
        cancelled_at.elapsed(),
        Duration::from_secs(30),
        "the stop comes when the drain is over, not before"
    );
    // Dropped, the timer stops nothing.
    let (cancel, stop) = (CancellationToken::new(), CancellationToken::new());
    drop(escrow_sync_core::StopAfterDrain::start(&cancel, &stop, Duration::ZERO));
    cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(1), stop.cancelled()).await;
    assert!(stopped.is_err(), "a dropped timer stops nothing");
}

#[tokio::test]
async fn the_plan_totals_are_announced_streamed_or_in_memory() {
    let escrow = MemBucket::new("escrow");
    escrow.put("k0000", vec![0u8; 1]);
    let totals = |sorted: bool| {
        let escrow = escrow.clone();
        async move {
            let events = Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen = events.clone();
            let ex = Executor::new(ExecutorOptions::new()).with_progress(Arc::new(move |e| {
                if let ProgressEvent::Planned { .. } = e {
                    seen.lock().unwrap().push(e.clone());
                }
            }));
            let src = MemSource::new(primary(5));
            let src = if sorted { src } else { src.with_unsorted_listing() };
            ex.execute(Mode::Plan, &src, &MemSink::new(escrow), &Scope::all()).await.unwrap();
            events.lock().unwrap().clone()
        }
    };
    // k0000 is in escrow; k0001..k0004 (2 + 3 + 4 + 5 bytes) are not.
    let want = ProgressEvent::Planned { items: 5, copies: 4, bytes: 14 };
    assert_eq!(totals(true).await, std::slice::from_ref(&want));
    assert_eq!(totals(false).await, [want]);
}

#[tokio::test]
async fn throttles_are_reported_as_such() {
    let src = MemSource::new(primary(10));
    let sink = FaultLayer::new()
        .with_throttle_rate(0.5)
        .with_seed(3)
        .wrap(MemSink::new(MemBucket::new("escrow")));
    let throttled = Arc::new(AtomicU64::new(0));
    let t = throttled.clone();
    let ex = Executor::new(ExecutorOptions::new().with_retry(fast_retry(20))).with_progress(
        Arc::new(move |e| {
            if matches!(e, ProgressEvent::Throttled { .. }) {
                t.fetch_add(1, Ordering::SeqCst);
            }
        }),
    );
    let r = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!(r.copied, 10);
    assert!(r.throttled > 0);
    assert_eq!(throttled.load(Ordering::SeqCst), sink.counts().get(FaultKind::Throttle));
}
