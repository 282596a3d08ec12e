//! The conformance suite every Source/Sink pair runs.
//!
//! Each check is a plain async function over a [`Fixture`] that starts empty
//! (fresh primary and escrow locations). Panics describe what broke.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use escrow_sync_core::{
    CancellationToken, Executor, ExecutorOptions, Item, ItemStream, Mode, Payload, ProgressEvent,
    Report, Result, RetryPolicy, Scope, Sink, Source,
};

/// A Source/Sink pair under test plus the means to seed the primary and read
/// back the escrow.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The source (primary side).
    fn source(&self) -> &dyn Source;
    /// The sink (escrow side).
    fn sink(&self) -> &dyn Sink;
    /// Creates or replaces `key` in the primary.
    async fn put_source(&self, key: &str, data: Bytes) -> Result<()>;
    /// Deletes `key` from the primary.
    async fn delete_source(&self, key: &str) -> Result<()>;
    /// What escrow holds under `key`, if anything.
    async fn escrow_content(&self, key: &str) -> Result<Option<Bytes>>;
}

/// Keys with the awkward characters real buckets have.
pub fn sample_keys() -> Vec<String> {
    [
        "a.txt",
        "dir/b.bin",
        "dir/sub/c.json",
        "space name.txt",
        "plus+sign&amp=x",
        "ünïcode/straße.txt",
        "empty",
        "percent%20literal",
        "deep/a/b/c/d/e/f.txt",
        "z-last",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Deterministic content for `key`, `variant` changes it.
pub fn sample_content(key: &str, variant: u8) -> Bytes {
    if key == "empty" {
        return Bytes::new();
    }
    let len = 16 + (key.len() * 37 + variant as usize * 11) % 2000;
    let seed = key.bytes().fold(variant as u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    Bytes::from((0..len).map(|i| (seed.wrapping_add(i as u32 * 7) % 251) as u8).collect::<Vec<_>>())
}

fn executor() -> Executor {
    Executor::new(ExecutorOptions::new().with_concurrency(4).with_retry(RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }))
}

async fn run(ex: &Executor, f: &dyn Fixture) -> Report {
    ex.execute(Mode::Run, f.source(), f.sink(), &Scope::all()).await.expect("run lists both sides")
}

async fn seed(f: &dyn Fixture, keys: &[String], variant: u8) {
    for k in keys {
        f.put_source(k, sample_content(k, variant)).await.expect("seed the primary");
    }
}

async fn assert_escrow_holds(f: &dyn Fixture, keys: &[String], variant: u8) {
    for k in keys {
        let got = f.escrow_content(k).await.expect("read escrow");
        assert_eq!(got, Some(sample_content(k, variant)), "escrow content of {k:?}");
    }
}

/// Everything in the primary arrives in escrow, byte for byte.
pub async fn round_trip(f: &dyn Fixture) {
    let keys = sample_keys();
    seed(f, &keys, 0).await;
    let r = run(&executor(), f).await;
    assert_eq!(r.failed, 0, "failures: {:?}", r.failures);
    assert_eq!(r.copied, keys.len() as u64);
    // Bytes as the source lists its items: the content's length for object
    // stores, the encoded item for tables.
    use futures::TryStreamExt;
    let listed: Vec<Item> = f.source().list(&Scope::all()).try_collect().await.expect("listing");
    let bytes: u64 = listed.iter().map(|i| i.size).sum();
    assert!(bytes >= keys.iter().map(|k| sample_content(k, 0).len() as u64).sum::<u64>());
    assert_eq!(r.bytes_copied, bytes);
    assert_escrow_holds(f, &keys, 0).await;
}

/// A second run with no change copies nothing, and a plan says so.
pub async fn idempotent_rerun(f: &dyn Fixture) {
    let keys = sample_keys();
    seed(f, &keys, 0).await;
    let ex = executor();
    let first = run(&ex, f).await;
    assert_eq!(first.copied, keys.len() as u64, "failures: {:?}", first.failures);
    let second = run(&ex, f).await;
    assert_eq!((second.copied, second.failed), (0, 0), "second run: {second:?}");
    assert_eq!(second.skipped, keys.len() as u64);
    let plan = ex.execute(Mode::Plan, f.source(), f.sink(), &Scope::all()).await.unwrap();
    assert_eq!(plan.copied, 0);
    let verify = ex.execute(Mode::Verify, f.source(), f.sink(), &Scope::all()).await.unwrap();
    assert!(verify.is_clean(), "verify after run: {verify:?}");
}

/// A run cancelled part-way is finished by the next run, without duplicates.
pub async fn resume_after_partial(f: &dyn Fixture) {
    let keys = sample_keys();
    seed(f, &keys, 0).await;
    let token = CancellationToken::new();
    let copied = Arc::new(AtomicU64::new(0));
    let (t, c) = (token.clone(), copied.clone());
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(1))
        .with_cancellation(token)
        .with_progress(Arc::new(move |e: &ProgressEvent| {
            if matches!(e, ProgressEvent::Copied { .. })
                && c.fetch_add(1, Ordering::SeqCst) + 1 == 3
            {
                t.cancel();
            }
        }));
    let first = run(&ex, f).await;
    assert!(first.cancelled, "the first run was cancelled");
    assert!(first.copied >= 3 && first.copied < keys.len() as u64, "partial: {first:?}");
    assert_eq!(first.failed, 0);
    let second = run(&executor(), f).await;
    assert_eq!(second.failed, 0, "failures: {:?}", second.failures);
    assert_eq!(second.copied + first.copied, keys.len() as u64, "no item copied twice");
    assert_eq!(second.skipped, first.copied);
    assert_escrow_holds(f, &keys, 0).await;
}

/// A source item that disappears between listing and copying fails alone,
/// and the failure names its key.
pub async fn errors_surface_with_key(f: &dyn Fixture) {
    let keys = sample_keys();
    seed(f, &keys, 0).await;
    let victim = "dir/sub/c.json";
    let hooked = DeleteBeforeRead { fixture: f, victim: victim.to_string() };
    let r = executor().execute(Mode::Run, &hooked, f.sink(), &Scope::all()).await.unwrap();
    assert_eq!(r.failed, 1, "{r:?}");
    assert_eq!(r.copied, keys.len() as u64 - 1);
    let failure = &r.failures[0];
    assert_eq!(failure.key, victim);
    assert!(failure.error.contains(victim), "error names the key: {}", failure.error);
    assert_eq!(f.escrow_content(victim).await.unwrap(), None, "nothing half-written");
}

/// A changed source item is copied again, and only that one.
pub async fn changed_item_recopied(f: &dyn Fixture) {
    let keys = sample_keys();
    seed(f, &keys, 0).await;
    let ex = executor();
    run(&ex, f).await;
    f.put_source("a.txt", sample_content("a.txt", 1)).await.unwrap();
    let r = run(&ex, f).await;
    assert_eq!((r.copied, r.failed), (1, 0), "{r:?}");
    assert_eq!(f.escrow_content("a.txt").await.unwrap(), Some(sample_content("a.txt", 1)));
}

/// An item deleted in the primary stays in escrow.
pub async fn deleted_item_retained(f: &dyn Fixture) {
    let keys = sample_keys();
    seed(f, &keys, 0).await;
    let ex = executor();
    run(&ex, f).await;
    f.delete_source("z-last").await.unwrap();
    let r = run(&ex, f).await;
    assert_eq!((r.copied, r.failed, r.retained, r.deleted), (0, 0, 1, 0), "{r:?}");
    assert_eq!(f.escrow_content("z-last").await.unwrap(), Some(sample_content("z-last", 0)));
}

/// Runs every check, each on a fresh fixture from `make`.
pub async fn run_all<F, Fut, X>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = X>,
    X: Fixture,
{
    round_trip(&make().await).await;
    idempotent_rerun(&make().await).await;
    resume_after_partial(&make().await).await;
    errors_surface_with_key(&make().await).await;
    changed_item_recopied(&make().await).await;
    deleted_item_retained(&make().await).await;
}

struct DeleteBeforeRead<'a> {
    fixture: &'a dyn Fixture,
    victim: String,
}

#[async_trait]
impl Source for DeleteBeforeRead<'_> {
    fn describe(&self) -> String {
        self.fixture.source().describe()
    }
    fn sorted(&self) -> bool {
        self.fixture.source().sorted()
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.fixture.source().list(scope)
    }
    async fn read(&self, item: &Item) -> Result<Payload> {
        if item.key == self.victim {
            self.fixture.delete_source(&item.key).await?;
        }
        self.fixture.source().read(item).await
    }
}
