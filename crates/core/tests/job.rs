//! The `Job` contract: a `CopyJob` of in-memory pairs, run through `dyn
//! Job`, gets everything the `JobContext` carries into its executor.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use escrow_sync_core::{
    CancellationToken, CopyJob, Error, ErrorKind, ExecutorOptions, Item, ItemLog, ItemOutcome,
    ItemRecord, ItemStream, Job, JobContext, MASS_CHANGE, Mode, Payload, ProgressEvent, ProgressFn,
    Receipt, Result, RetryPolicy, Scope, Sink, Source,
};
use escrow_sync_testkit::{MemBucket, MemSink, MemSource};

fn bucket(name: &str, keys: &[&str], content: &str) -> MemBucket {
    let b = MemBucket::new(name);
    for k in keys {
        b.put(*k, format!("{content}-{k}").into_bytes());
    }
    b
}

fn job(primary: &MemBucket, escrow: &MemBucket) -> Box<dyn Job> {
    Box::new(CopyJob::new(MemSource::new(primary.clone()), MemSink::new(escrow.clone())))
}

fn recorder() -> (ItemLog, Arc<Mutex<Vec<ItemRecord>>>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    (Arc::new(move |r| sink.lock().unwrap().push(r)), records)
}

#[tokio::test]
async fn a_context_cancelled_before_the_start_copies_nothing_and_says_so() {
    let primary = bucket("primary", &["a", "b", "c"], "x");
    let escrow = MemBucket::new("escrow");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let ctx = JobContext::new().with_cancellation(cancel);
    let report = job(&primary, &escrow).execute(Mode::Run, &ctx).await.unwrap();
    assert!(report.cancelled, "{report:?}");
    assert_eq!(report.copied, 0);
    assert!(escrow.is_empty());

    // The same job with a live token copies everything.
    let report = job(&primary, &escrow).execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert!(!report.cancelled);
    assert_eq!(report.copied, 3);
}

#[tokio::test]
async fn the_item_log_receives_every_item_of_a_run() {
    let primary = bucket("primary", &["a", "b", "c"], "x");
    let escrow = bucket("escrow", &["c"], "x");
    let (log, records) = recorder();
    let ctx = JobContext::new().with_item_log(log);
    let report = job(&primary, &escrow).execute(Mode::Run, &ctx).await.unwrap();
    assert_eq!((report.copied, report.skipped), (2, 1));
    let mut logged: Vec<(String, ItemOutcome)> =
        records.lock().unwrap().iter().map(|r| (r.item.key.clone(), r.outcome)).collect();
    logged.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        logged,
        [
            ("a".to_string(), ItemOutcome::Copied),
            ("b".to_string(), ItemOutcome::Copied),
            ("c".to_string(), ItemOutcome::InEscrow),
        ]
    );
}

#[tokio::test]
async fn progress_receives_the_jobs_events() {
    let primary = bucket("primary", &["a", "b"], "x");
    let escrow = bucket("escrow", &["b"], "x");
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let progress: ProgressFn =
        Arc::new(move |e: &ProgressEvent| seen.lock().unwrap().push(e.clone()));
    let ctx = JobContext::new().set_progress(Some(progress));
    job(&primary, &escrow).execute(Mode::Run, &ctx).await.unwrap();
    let events = events.lock().unwrap().clone();
    assert!(
        events.iter().any(|e| matches!(e, ProgressEvent::Copied { key, .. } if key == "a")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, ProgressEvent::Skipped { key, .. } if key == "b")),
        "{events:?}"
    );
}

/// 40 keys in escrow, every one rewritten in the primary.
fn rewritten() -> (MemBucket, MemBucket) {
    let keys: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    (bucket("primary", &keys, "ciphertext"), bucket("escrow", &keys, "original"))
}

#[tokio::test]
async fn accept_mass_change_lets_through_what_the_guard_holds_back() {
    let (primary, escrow) = rewritten();
    let report = job(&primary, &escrow).execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert!(report.held_back > 0, "{report:?}");
    assert!(report.copied <= 10, "{report:?}");
    assert!(report.findings.iter().any(|f| f.kind.as_deref() == Some(MASS_CHANGE)));

    let (primary, escrow) = rewritten();
    let ctx = JobContext::new().with_accept_mass_change(true);
    let report = job(&primary, &escrow).execute(Mode::Run, &ctx).await.unwrap();
    assert_eq!((report.copied, report.held_back), (40, 0), "{report:?}");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert!(escrow.keys().iter().all(|k| escrow.get(k).unwrap().data.starts_with(b"ciphertext")));
}

#[tokio::test]
async fn a_job_of_max_change_percent_100_has_no_breaker() {
    let (primary, escrow) = rewritten();
    let job =
        CopyJob::new(MemSource::new(primary), MemSink::new(escrow)).with_max_change_percent(100);
    let report = job.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!((report.copied, report.held_back), (40, 0));
}

/// A source whose first read of each item fails with a transient error.
struct FlakyOnce {
    inner: MemSource,
    reads: AtomicU32,
}

#[async_trait]
impl Source for FlakyOnce {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }
    async fn read(&self, item: &Item) -> Result<Payload> {
        if self.reads.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Error::new(ErrorKind::Transient, "mem:read", &item.key, "flaky"));
        }
        self.inner.read(item).await
    }
}

#[tokio::test]
async fn the_retry_policy_comes_from_the_context() {
    let fast = |attempts| RetryPolicy {
        max_attempts: attempts,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };
    for (attempts, copied, failed) in [(1, 0, 1), (2, 1, 0)] {
        let primary = bucket("primary", &["a"], "x");
        let escrow = MemBucket::new("escrow");
        let source = FlakyOnce { inner: MemSource::new(primary), reads: AtomicU32::new(0) };
        // The options' own retry is replaced by the context's.
        let job = CopyJob::new(source, MemSink::new(escrow))
            .with_options(ExecutorOptions::new().with_retry(fast(9)));
        let ctx = JobContext::new().with_retry(fast(attempts));
        let report = job.execute(Mode::Run, &ctx).await.unwrap();
        assert_eq!((report.copied, report.failed), (copied, failed), "attempts {attempts}");
    }
}

/// A pair that keeps a fixed checksum for every item.
struct Summed<T>(T, &'static str);

#[async_trait]
impl Source for Summed<MemSource> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.0.list(scope)
    }
    async fn read(&self, item: &Item) -> Result<Payload> {
        self.0.read(item).await
    }
    async fn checksum(&self, _: &Item) -> Result<Option<String>> {
        Ok(Some(self.1.to_string()))
    }
}

#[async_trait]
impl Sink for Summed<MemSink> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.0.list(scope)
    }
    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        self.0.write(item, payload).await
    }
    async fn checksum(&self, _: &Item) -> Result<Option<String>> {
        Ok(Some(self.1.to_string()))
    }
}

#[tokio::test]
async fn verify_compares_checksums_when_the_context_asks() {
    let primary = bucket("primary", &["a"], "x");
    let escrow = bucket("escrow", &["a"], "x");
    let job = CopyJob::new(
        Summed(MemSource::new(primary), "SHA256:one"),
        Summed(MemSink::new(escrow), "SHA256:two"),
    );
    let report = job.execute(Mode::Verify, &JobContext::new()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let ctx = JobContext::new().with_verify_checksums(true);
    let report = job.execute(Mode::Verify, &ctx).await.unwrap();
    assert!(report.findings.iter().any(|f| f.problem.contains("checksum mismatch")), "{report:?}");
}

#[tokio::test]
async fn trait_objects_of_sources_and_sinks_make_a_job() {
    let primary = bucket("primary", &["a", "b"], "x");
    let escrow = MemBucket::new("escrow");
    let source: Arc<dyn Source> = Arc::new(MemSource::new(primary));
    let sink: Box<dyn Sink> = Box::new(MemSink::new(escrow.clone()));
    let job: Arc<dyn Job> =
        Arc::new(CopyJob::new(source, sink).with_scope(Scope::with_prefix("a")));
    assert_eq!(job.describe(), "mem://primary/ -> mem://escrow/");
    let report = job.execute(Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!(report.copied, 1);
    assert_eq!(escrow.keys(), ["a"]);
}
