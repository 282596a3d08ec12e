//! The item log (run manifests): every item's outcome, once, in runs only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use escrow_sync_core::{
    Executor, ExecutorOptions, ItemLog, ItemOutcome, ItemRecord, Mode, RetryPolicy, Scope,
};
use escrow_sync_testkit::{FaultKind, FaultLayer, MemBucket, MemSink, MemSource};

type Seen = Arc<Mutex<Vec<(String, ItemOutcome, Option<String>)>>>;

fn recorder() -> (ItemLog, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let log: ItemLog = Arc::new(move |r: ItemRecord| {
        s.lock().unwrap().push((r.item.key.clone(), r.outcome, r.error.clone()));
    });
    (log, seen)
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }
}

#[tokio::test]
async fn every_item_is_logged_once_failed_copies_included() {
    let primary = MemBucket::new("primary");
    for i in 0..6 {
        primary.put(format!("k{i}"), vec![i as u8; 3]);
    }
    let escrow = MemBucket::new("escrow");
    escrow.put("k0", vec![0u8; 3]);
    escrow.put("only-in-escrow", vec![9u8; 3]);
    let src = MemSource::new(primary);
    let sink = FaultLayer::new().with_failing_keys(["k2", "k4"]).wrap(MemSink::new(escrow));
    let (log, seen) = recorder();
    let ex = Executor::new(ExecutorOptions::new().with_retry(fast_retry()).with_item_log(log));
    let r = ex.execute(Mode::Run, &src, &sink, &Scope::all()).await.unwrap();
    assert_eq!(r.failed, 2, "{:?}", r.failures);
    let seen = seen.lock().unwrap().clone();
    let mut by_key: BTreeMap<String, Vec<ItemOutcome>> = BTreeMap::new();
    for (k, o, _) in &seen {
        by_key.entry(k.clone()).or_default().push(*o);
    }
    let failed: Vec<_> = seen.iter().filter(|(_, o, _)| *o == ItemOutcome::Failed).collect();
    assert_eq!(failed.len(), 2, "a failed copy is in the log, with its error: {seen:?}");
    assert!(failed.iter().all(|(_, _, e)| e.is_some()), "{seen:?}");
    assert_eq!(by_key.len(), 7, "every item: {by_key:?}");
    assert!(by_key.values().all(|v| v.len() == 1), "each item once: {by_key:?}");
    assert_eq!(by_key["only-in-escrow"], [ItemOutcome::Retained]);
    assert_eq!(by_key["k1"], [ItemOutcome::Copied]);
    assert_eq!(by_key["k2"], [ItemOutcome::Failed]);
    let logged = seen.len() as u64;
    assert_eq!(logged, r.copied + r.skipped + r.failed + r.retained);
    let n = sink.counts().record("core::item_log::failed_copies_logged");
    assert_eq!((n, sink.counts().get(FaultKind::Permanent)), (2, 2), "one per failing key");
}
