//! The mass-change circuit breaker of a table job against aws-smithy-mocks,
//! with a fake primary and a fake escrow table kept in memory: a primary
//! whose every item was rewritten overwrites at most `max_change_percent`
//! of the escrow items and gets a `mass-change` finding; new items are
//! still copied; an escrow of fewer than 20 items, a change within the
//! share, `--accept-mass-change` and `max_change_percent = 100` write every
//! change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::scan::ScanOutput;
use aws_sdk_dynamodb::operation::tag_resource::TagResourceOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

mod common;

use common::{Store, batch_get, fast, item, pk_of, store, v_of};

use escrow_sync_core::{Mode, Report};
use escrow_sync_dynamodb::json::Record;
use escrow_sync_dynamodb::{EscrowTable, ScanOptions, TableInfo, TableJob};

fn client(rules: &[Rule]) -> Client {
    let rules: Vec<&Rule> = rules.iter().collect();
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules)
}

/// The primary `orders`, keyed by `pk`: DescribeTable and friends, a Scan of
/// one segment in pages of 10 items in key order, and BatchGetItem.
fn primary_rules(data: Store) -> Vec<Rule> {
    let mut rules = common::table_rules("orders", true, vec![]);
    let scan_data = data.clone();
    rules.push(mock!(Client::scan).then_compute_output(move |r| {
        let data = scan_data.lock().unwrap();
        let after = r.exclusive_start_key().map(pk_of);
        let page: Vec<Record> = data
            .values()
            .filter(|i| after.as_ref().is_none_or(|a| pk_of(i) > *a))
            .take(10)
            .cloned()
            .collect();
        let last = page.last().map(pk_of);
        let more = last.as_ref().is_some_and(|l| data.keys().any(|k| k > l));
        ScanOutput::builder()
            .set_items(Some(page.clone()))
            .set_last_evaluated_key(
                more.then(|| page.last().unwrap())
                    .map(|i| HashMap::from([("pk".to_string(), i["pk"].clone())])),
            )
            .build()
    }));
    rules.push(batch_get("orders", data));
    rules
}

/// The escrow table `escrow-orders` (escrow-sync's, PITR on) whose
/// DescribeTable reports `item_count`; reads and writes go to `data`.
fn escrow_rules(data: Store, item_count: i64) -> Vec<Rule> {
    let mut rules = common::table_rules(
        "escrow-orders",
        true,
        vec![(
            "escrow-sync:source-table-arn",
            "arn:aws:dynamodb:us-east-1:111111111111:table/orders",
        )],
    );
    rules[0] = mock!(Client::describe_table)
        .match_requests(|r| r.table_name() == Some("escrow-orders"))
        .then_output(move || {
            let mut t = common::table("escrow-orders");
            t.item_count = Some(item_count);
            DescribeTableOutput::builder().table(t).build()
        });
    rules.push(batch_get("escrow-orders", data.clone()));
    rules.push(mock!(Client::batch_write_item).then_compute_output(move |r| {
        let mut data = data.lock().unwrap();
        for w in &r.request_items().unwrap()["escrow-orders"] {
            let item = w.put_request().unwrap().item().clone();
            data.insert(pk_of(&item), item);
        }
        BatchWriteItemOutput::builder().build()
    }));
    rules.push(mock!(Client::tag_resource).then_output(|| TagResourceOutput::builder().build()));
    rules
}

struct Setup {
    primary: Store,
    escrow: Store,
    primary_rules: Vec<Rule>,
    escrow_rules: Vec<Rule>,
}

impl Setup {
    /// Escrow holds `held` items at v=1 (DescribeTable says `item_count`);
    /// the primary holds the same keys, those `changed` says at v=2, plus
    /// `new` keys escrow lacks.
    fn new(held: usize, changed: impl Fn(usize) -> bool, new: usize, item_count: i64) -> Self {
        let escrow = store((0..held).map(|i| item(&format!("k{i:03}"), 1)));
        let primary = store(
            (0..held)
                .map(|i| item(&format!("k{i:03}"), if changed(i) { 2 } else { 1 }))
                .chain((0..new).map(|i| item(&format!("n{i:03}"), 2))),
        );
        Setup {
            primary_rules: primary_rules(primary.clone()),
            escrow_rules: escrow_rules(escrow.clone(), item_count),
            primary,
            escrow,
        }
    }

    async fn run(&self, percent: u8, accept: bool) -> Report {
        let primary = client(&self.primary_rules);
        let info = TableInfo::describe(&primary, "orders").await.unwrap();
        let sink = EscrowTable::from_client(client(&self.escrow_rules), "escrow-orders")
            .with_retry(fast());
        TableJob::new("orders", primary, info, "111111111111", sink, "2026-11-28T00:00:00Z")
            .unwrap()
            .with_scan_options(ScanOptions::new().with_segments(1).with_retry(fast()))
            .with_max_change_percent(percent)
            .with_accept_mass_change(accept)
            .execute(Mode::Run)
            .await
            .unwrap()
    }

    /// Escrow items at v=2 (overwritten or new).
    fn escrow_at_v2(&self) -> usize {
        self.escrow.lock().unwrap().values().filter(|r| v_of(r) == "2").count()
    }

    /// How often the primary was read by key (held-back changes re-read).
    fn primary_rereads(&self) -> usize {
        self.primary_rules.last().unwrap().num_calls()
    }
}

fn mass_change(report: &Report) -> Vec<&escrow_sync_core::Finding> {
    report.findings.iter().filter(|f| f.kind.as_deref() == Some("mass-change")).collect()
}

#[tokio::test]
async fn a_rewritten_primary_trips_the_breaker_and_overwrites_at_most_the_share() {
    // 40 escrow items, every one rewritten in the primary, 5 new ones; the
    // escrow table's ItemCount is stale (0: DynamoDB updates it every six
    // hours), so the share is of the escrow items seen so far.
    let s = Setup::new(40, |_| true, 5, 0);
    let report = s.run(25, false).await;
    let found = mass_change(&report);
    assert_eq!(found.len(), 1, "{report:?}");
    let f = found[0];
    assert_eq!(f.key, "orders");
    assert!(
        f.problem.starts_with(
            "40 of 40 escrow items (100%) changed in the primary in one run, over \
             max_change_percent = 25; 30 changes held back; first keys: "
        ),
        "{}",
        f.problem
    );
    assert!(f.problem.ends_with("re-run with --accept-mass-change"), "{}", f.problem);
    assert!(f.problem.contains("k000"), "{}", f.problem);
    // At most 25 % of the 40 escrow items were overwritten; the 5 new items
    // were copied all the same.
    let escrow = s.escrow.lock().unwrap();
    let overwritten = escrow.values().filter(|r| pk_of(r).starts_with('k') && v_of(r) == "2");
    assert_eq!(overwritten.count(), 10);
    assert_eq!(escrow.values().filter(|r| pk_of(r).starts_with('n')).count(), 5);
    assert_eq!(escrow.values().filter(|r| v_of(r) == "1").count(), 30, "30 items unchanged");
    assert_eq!(report.copied, 15, "10 changes and 5 new items");
    assert_eq!(s.primary_rereads(), 0, "a tripped run re-reads nothing");
    drop(escrow);
    assert_eq!(s.primary.lock().unwrap().len(), 45);
}

#[tokio::test]
async fn the_escrow_tables_own_item_count_sets_the_share_from_the_start() {
    // ItemCount 40: 10 changes (25 %) at the start of the scan are within
    // the share at once; nothing is held back or re-read.
    let s = Setup::new(40, |i| i < 10, 0, 40);
    let report = s.run(25, false).await;
    assert!(mass_change(&report).is_empty(), "{report:?}");
    assert_eq!((report.copied, s.escrow_at_v2()), (10, 10));
    assert_eq!(s.primary_rereads(), 0);
}

#[tokio::test]
async fn changes_held_back_early_are_written_once_they_prove_within_the_share() {
    // ItemCount stale (0): the first page's 8 changes are over 25 % of the
    // 10 items seen then and are held back; the whole table shows 8 of 40
    // (20 %), so they are re-read from the primary and written.
    let s = Setup::new(40, |i| i < 8, 0, 0);
    let report = s.run(25, false).await;
    assert!(mass_change(&report).is_empty(), "{report:?}");
    assert_eq!((report.copied, s.escrow_at_v2()), (8, 8), "{report:?}");
    assert!(s.primary_rereads() >= 1, "the held-back changes were re-read by key");
}

#[tokio::test]
async fn an_escrow_of_fewer_than_20_items_never_trips() {
    let s = Setup::new(19, |_| true, 0, 19);
    let report = s.run(25, false).await;
    assert!(mass_change(&report).is_empty(), "{report:?}");
    assert_eq!((report.copied, s.escrow_at_v2()), (19, 19));
    assert!(s.primary_rereads() >= 1);
}

#[tokio::test]
async fn twenty_items_all_changed_trip() {
    let s = Setup::new(20, |_| true, 0, 20);
    let report = s.run(25, false).await;
    assert_eq!(mass_change(&report).len(), 1, "{report:?}");
    assert_eq!(s.escrow_at_v2(), 5, "25 % of 20");
}

#[tokio::test]
async fn accepting_the_mass_change_lets_the_job_go_on() {
    let s = Setup::new(40, |_| true, 0, 40);
    let report = s.run(25, true).await;
    assert!(mass_change(&report).is_empty(), "{report:?}");
    assert_eq!((report.copied, s.escrow_at_v2()), (40, 40));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("40 of 40 escrow items (100%)")
                && w.contains("--accept-mass-change")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn max_change_percent_100_turns_the_breaker_off() {
    let s = Setup::new(40, |_| true, 0, 0);
    let report = s.run(100, false).await;
    assert!(report.findings.is_empty(), "{report:?}");
    // No breaker warning (only the one about a job without item history).
    assert!(!report.warnings.iter().any(|w| w.contains("mass-change")), "{:?}", report.warnings);
    assert_eq!((report.copied, s.escrow_at_v2()), (40, 40));
    assert_eq!(s.primary_rereads(), 0);
}

#[tokio::test]
async fn a_second_run_after_a_trip_trips_again_and_holds_the_rest() {
    let s = Setup::new(40, |_| true, 0, 40);
    s.run(25, false).await;
    assert_eq!(s.escrow_at_v2(), 10);
    // 30 changed of 40: still over the share; 10 more at most.
    let report = s.run(25, false).await;
    assert_eq!(mass_change(&report).len(), 1, "{report:?}");
    assert!(mass_change(&report)[0].problem.starts_with("30 of 40"), "{report:?}");
    assert_eq!(s.escrow_at_v2(), 20);
}

#[tokio::test]
async fn a_plan_warns_that_a_run_would_trip() {
    let s = Setup::new(40, |_| true, 0, 40);
    let primary = client(&s.primary_rules);
    let info = TableInfo::describe(&primary, "orders").await.unwrap();
    let sink = EscrowTable::from_client(client(&s.escrow_rules), "escrow-orders");
    let report = TableJob::new("orders", primary, info, "111111111111", sink, "now")
        .unwrap()
        .with_scan_options(ScanOptions::new().with_segments(1).with_retry(fast()))
        .execute(Mode::Plan)
        .await
        .unwrap();
    assert!(report.findings.is_empty());
    assert!(
        report.warnings.iter().any(|w| w.contains("a run stops at that share")),
        "{:?}",
        report.warnings
    );
    assert_eq!(s.escrow_at_v2(), 0, "a plan writes nothing");
}

/// Runs a job whose scan fails on its third page (after `k019`), with
/// checkpoints kept in a fake store; returns the `last_key` of segment 0 in
/// the checkpoint the failed run saved.
async fn checkpoint_after_failure(s: &mut Setup, accept: bool) -> serde_json::Value {
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
    use aws_sdk_dynamodb::operation::query::QueryOutput;
    let failing = mock!(Client::scan)
        .match_requests(|r| r.exclusive_start_key().is_some_and(|k| pk_of(k) == "k019"))
        .sequence()
        .http_status(
            400,
            Some(
                r#"{"__type":"com.amazon.coral.validation#ValidationException","message":"boom"}"#
                    .into(),
            ),
        )
        .build();
    s.primary_rules.insert(0, failing);
    let saved: Arc<Mutex<Vec<String>>> = Arc::default();
    let put = {
        let saved = saved.clone();
        mock!(Client::put_item).then_compute_output(move |r| {
            if let Some(AttributeValue::S(data)) = r.item().and_then(|i| i.get("data")) {
                saved.lock().unwrap().push(data.clone());
            }
            PutItemOutput::builder().build()
        })
    };
    let store_rules = vec![
        put,
        mock!(Client::query).then_output(|| QueryOutput::builder().build()),
        mock!(Client::get_item).then_output(|| GetItemOutput::builder().build()),
    ];
    let store = escrow_sync_dynamodb::CheckpointStore::from_client(
        client(&store_rules),
        "escrow-sync-checkpoints",
    );
    let primary = client(&s.primary_rules);
    let info = TableInfo::describe(&primary, "orders").await.unwrap();
    let sink =
        EscrowTable::from_client(client(&s.escrow_rules), "escrow-orders").with_retry(fast());
    let err = TableJob::new("orders", primary, info, "111111111111", sink, "now")
        .unwrap()
        .with_scan_options(ScanOptions::new().with_segments(1).with_retry(fast()))
        .with_checkpoints(Some(store))
        .with_accept_mass_change(accept)
        .execute(Mode::Run)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    let saved = saved.lock().unwrap();
    let last: serde_json::Value =
        serde_json::from_str(saved.last().expect("a checkpoint")).unwrap();
    last["checkpoints"][0]["last_key"].clone()
}

#[tokio::test]
async fn no_checkpoint_is_saved_past_a_held_back_change() {
    // Changes held back on the first page: an interrupted run's checkpoint
    // stays before them, so the next run reads them again.
    let mut s = Setup::new(40, |_| true, 0, 0);
    let last_key = checkpoint_after_failure(&mut s, false).await;
    assert_eq!(last_key, serde_json::Value::Null);
    assert!(s.escrow_at_v2() > 0 && s.escrow_at_v2() < 20, "some changes were written");
    // The same failure with nothing held back saves the scan's position.
    let mut s = Setup::new(40, |_| true, 0, 0);
    let last_key = checkpoint_after_failure(&mut s, true).await;
    assert_eq!(last_key, serde_json::json!({"pk": {"S": "k019"}}));
}

/// The job of `s` (max_change_percent 25), for runs through `Job`.
async fn table_job(s: &Setup) -> TableJob {
    let primary = client(&s.primary_rules);
    let info = TableInfo::describe(&primary, "orders").await.unwrap();
    let sink =
        EscrowTable::from_client(client(&s.escrow_rules), "escrow-orders").with_retry(fast());
    TableJob::new("orders", primary, info, "111111111111", sink, "2026-11-28T00:00:00Z")
        .unwrap()
        .with_scan_options(ScanOptions::new().with_segments(1).with_retry(fast()))
}

#[tokio::test]
async fn through_job_the_context_decides_acceptance_and_gets_every_item_and_event() {
    use escrow_sync_core::{ItemOutcome, ItemRecord, Job, JobContext, ProgressEvent, ProgressFn};
    let s = Setup::new(40, |_| true, 0, 40);
    // The context's acceptance replaces the builder's: the breaker holds.
    let job = table_job(&s).await.with_accept_mass_change(true);
    let report = Job::execute(&job, Mode::Run, &JobContext::new()).await.unwrap();
    assert_eq!(mass_change(&report).len(), 1, "{report:?}");
    assert_eq!(s.escrow_at_v2(), 10);

    // Accepted by the context: the other 30 are written, every item is
    // logged and every page's events are reported.
    let records: Arc<Mutex<Vec<ItemRecord>>> = Arc::default();
    let to = records.clone();
    let events: Arc<Mutex<Vec<ProgressEvent>>> = Arc::default();
    let seen = events.clone();
    let progress: ProgressFn =
        Arc::new(move |e: &ProgressEvent| seen.lock().unwrap().push(e.clone()));
    let ctx = JobContext::new()
        .with_accept_mass_change(true)
        .with_item_log(Arc::new(move |r| to.lock().unwrap().push(r)))
        .with_progress(progress);
    let job: Box<dyn Job> = Box::new(table_job(&s).await);
    assert_eq!(job.describe(), "dynamodb://orders -> dynamodb://escrow-orders");
    let report = job.execute(Mode::Run, &ctx).await.unwrap();
    assert!(mass_change(&report).is_empty(), "{report:?}");
    assert_eq!((report.copied, s.escrow_at_v2()), (30, 40));
    let records = records.lock().unwrap();
    let count = |o| records.iter().filter(|r| r.outcome == o).count();
    assert_eq!((count(ItemOutcome::Copied), count(ItemOutcome::InEscrow)), (30, 10));
    let events = events.lock().unwrap();
    let copied = events.iter().filter(|e| matches!(e, ProgressEvent::Copied { .. })).count();
    let skipped = events.iter().filter(|e| matches!(e, ProgressEvent::Skipped { .. })).count();
    assert_eq!((copied, skipped), (30, 10));
}

#[tokio::test]
async fn through_job_a_cancelled_context_writes_nothing() {
    use escrow_sync_core::{CancellationToken, Job, JobContext};
    let s = Setup::new(5, |_| true, 0, 5);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let job = table_job(&s).await;
    let ctx = JobContext::new().with_cancellation(cancel);
    let report = Job::execute(&job, Mode::Run, &ctx).await.unwrap();
    assert!(report.cancelled, "{report:?}");
    assert_eq!((report.copied, s.escrow_at_v2()), (0, 0));
    // The job itself is not cancelled: its own execute still runs.
    let report = job.execute(Mode::Run).await.unwrap();
    assert!(!report.cancelled);
    assert_eq!(s.escrow_at_v2(), 5);
}
