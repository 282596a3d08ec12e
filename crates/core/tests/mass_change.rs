//! The mass-change circuit breaker in the executor: a run that finds more
//! than the share of escrow's items changed in the primary copies at most
//! that share, holds the rest back and says so; legitimate change goes
//! through, wherever in the key order it falls.

use std::sync::{Arc, Mutex};

use escrow_sync_core::{
    Executor, ExecutorOptions, ItemLog, ItemOutcome, ItemRecord, MASS_CHANGE, MassChangeGuard,
    Mode, Scope,
};
use escrow_sync_testkit::{MemBucket, MemSink, MemSource};

fn bucket(name: &str, n: usize, content: &str) -> MemBucket {
    let b = MemBucket::new(name);
    for i in 0..n {
        b.put(format!("k{i:04}"), format!("{content}-{i}").into_bytes());
    }
    b
}

/// A primary of `n` keys, an escrow holding them, then the primary's keys
/// `changed` rewritten.
fn incident(n: usize, changed: impl Fn(usize) -> bool) -> (MemBucket, MemBucket) {
    let primary = bucket("primary", n, "original");
    let escrow = bucket("escrow", n, "original");
    for i in (0..n).filter(|&i| changed(i)) {
        primary.put(format!("k{i:04}"), format!("ciphertext-{i}").into_bytes());
    }
    (primary, escrow)
}

fn log() -> (ItemLog, Arc<Mutex<Vec<ItemRecord>>>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    (Arc::new(move |r| sink.lock().unwrap().push(r)), records)
}

async fn run(
    primary: &MemBucket,
    escrow: &MemBucket,
    guard: Option<MassChangeGuard>,
    unsorted: bool,
) -> (escrow_sync_core::Report, Vec<ItemRecord>) {
    let (item_log, records) = log();
    let mut source = MemSource::new(primary.clone());
    let mut sink = MemSink::new(escrow.clone());
    if unsorted {
        source = source.with_unsorted_listing();
        sink = sink.with_unsorted_listing();
    }
    let options = ExecutorOptions::new()
        .with_concurrency(4)
        .with_mass_change_guard(guard)
        .with_item_log(item_log);
    let report =
        Executor::new(options).execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    let records = records.lock().unwrap().clone();
    (report, records)
}

fn still_original(escrow: &MemBucket) -> usize {
    escrow.keys().iter().filter(|k| escrow.get(k).unwrap().data.starts_with(b"original")).count()
}

#[tokio::test]
async fn a_rewrite_of_everything_copies_at_most_the_share_and_reports_it() {
    for unsorted in [false, true] {
        let (primary, escrow) = incident(40, |_| true);
        let (report, records) =
            run(&primary, &escrow, Some(MassChangeGuard::new(25)), unsorted).await;
        assert!(report.copied <= 10, "copied {} (unsorted {unsorted})", report.copied);
        assert_eq!(report.copied + report.held_back, 40);
        assert!(still_original(&escrow) >= 30, "escrow lost its pre-incident content");
        let finding = report.findings.iter().find(|f| f.kind.as_deref() == Some(MASS_CHANGE));
        let finding = finding.expect("a mass-change finding");
        assert!(finding.problem.contains("40 of 40"), "{}", finding.problem);
        assert!(finding.problem.contains("k00"), "{}", finding.problem);
        assert!(!report.is_clean());
        // The held-back items are recorded as not done, so the run's
        // manifest does not vouch for them.
        let held = records
            .iter()
            .filter(|r| r.outcome == ItemOutcome::Failed)
            .filter(|r| r.error.as_deref().unwrap_or("").starts_with("held back: mass change"))
            .count();
        assert_eq!(held as u64, report.held_back);
        assert_eq!(report.failed, 0, "held back is not a copy failure");
    }
}

#[tokio::test]
async fn accepting_the_change_copies_the_rest() {
    let (primary, escrow) = incident(40, |_| true);
    let (first, _) = run(&primary, &escrow, Some(MassChangeGuard::new(25)), false).await;
    assert!(first.held_back > 0);
    let accepted = MassChangeGuard::for_job(25, true);
    let (second, _) = run(&primary, &escrow, accepted, false).await;
    assert_eq!(second.copied, first.held_back);
    assert_eq!(second.held_back, 0);
    assert!(second.findings.is_empty());
    assert_eq!(still_original(&escrow), 0);
}

#[tokio::test]
async fn changes_first_in_key_order_still_go_through_when_within_the_share() {
    // 8 of 100 changed, all at the start of the listing: each waits until
    // the count is known, then goes.
    for unsorted in [false, true] {
        let (primary, escrow) = incident(100, |i| i < 8);
        let (report, _) = run(&primary, &escrow, Some(MassChangeGuard::new(25)), unsorted).await;
        assert_eq!(report.copied, 8, "unsorted {unsorted}");
        assert_eq!(report.held_back, 0);
        assert!(report.findings.is_empty());
        assert!(report.is_clean());
        assert_eq!(still_original(&escrow), 92);
    }
}

#[tokio::test]
async fn a_small_escrow_never_trips_and_new_keys_are_not_changes() {
    let (primary, escrow) = incident(19, |_| true);
    let (report, _) = run(&primary, &escrow, Some(MassChangeGuard::new(25)), false).await;
    assert_eq!((report.copied, report.held_back), (19, 0));

    let (primary, escrow) = incident(40, |_| false);
    for i in 40..200 {
        primary.put(format!("k{i:04}"), b"new".to_vec());
    }
    let (report, _) = run(&primary, &escrow, Some(MassChangeGuard::new(25)), false).await;
    assert_eq!((report.copied, report.held_back), (160, 0));
    assert!(report.findings.is_empty());
}

#[tokio::test]
async fn without_a_guard_everything_is_copied() {
    let (primary, escrow) = incident(40, |_| true);
    let (report, _) = run(&primary, &escrow, MassChangeGuard::for_job(100, false), false).await;
    assert_eq!((report.copied, report.held_back), (40, 0));
    assert!(report.findings.is_empty());
}

#[tokio::test]
async fn plan_warns_that_a_run_would_trip() {
    let (primary, escrow) = incident(40, |i| i % 2 == 0);
    let options = ExecutorOptions::new().with_mass_change_guard(Some(MassChangeGuard::new(25)));
    let report = Executor::new(options)
        .execute(Mode::Plan, &MemSource::new(primary), &MemSink::new(escrow.clone()), &Scope::all())
        .await
        .unwrap();
    assert_eq!(report.different, 20);
    assert!(
        report.warnings.iter().any(|w| w.contains("mass-change breaker")),
        "{:?}",
        report.warnings
    );
    assert_eq!(still_original(&escrow), 40);
}

#[tokio::test]
async fn keys_the_primary_deleted_do_not_dilute_a_rewrite() {
    // 100 planted keys escrow copied and the primary then deleted, and 40
    // real keys all rewritten: 40 of 40, not 40 of 140.
    let (primary, escrow) = incident(40, |_| true);
    for i in 0..100 {
        escrow.put(format!("junk{i:04}"), b"planted".to_vec());
    }
    let (report, _) = run(&primary, &escrow, Some(MassChangeGuard::new(25)), false).await;
    assert_eq!(report.retained, 100);
    assert!(report.copied <= 10, "copied {}", report.copied);
    let finding = &report.findings[0];
    assert!(finding.problem.contains("40 of 40"), "{}", finding.problem);
}
