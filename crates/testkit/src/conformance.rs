//! The conformance suite every Source/Sink pair runs.
//!
//! Shaped like `object_store`'s integration module: each check is a
//! separately callable `pub async fn` over a kind-agnostic [`Fixture`] that
//! starts empty (a fresh primary location; an escrow that holds nothing of
//! this fixture's). A fixture states its [`Capabilities`] (can the primary
//! change an item in place, or are items immutable like snapshots, where a
//! change is a new item? can it delete one, or make one fail to read? does
//! the sink keep escrow-only items?) and how to seed, change and delete
//! primary items; a check that needs a capability the fixture lacks returns
//! [`Outcome::Skipped`] with the reason, and [`run_all`] runs every check on a
//! fresh fixture and says in its [`Summary`] which ran and which were
//! skipped. Panics describe what broke.
//!
//! A byte store's fixture implements [`Fixture::put_source`],
//! [`Fixture::delete_source`] and [`Fixture::escrow_content`]; the defaults
//! seed and change items through `put_source` with [`sample_content`]. A
//! snapshot's fixture overrides [`Fixture::seed`], [`Fixture::change`] (a new
//! snapshot: a new key), [`Fixture::expected_content`] (what escrow's copy
//! must show: its source, size, key) and [`Fixture::capabilities`]; when its
//! clients count their calls ([`Fixture::mutating_calls`]), the checks also
//! prove that a re-run makes no mutating call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;

use escrow_sync_core::{
    CancellationToken, Error, ErrorKind, Executor, ExecutorOptions, Item, ItemOutcome, ItemRecord,
    ItemStream, Mode, Payload, ProgressEvent, Report, Result, RetryPolicy, Scope, Sink, Source,
};

/// What a fixture's pair and primary can do. Checks that need a capability
/// the fixture lacks are skipped, and say so.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`Fixture::change`] rewrites an item in place: same key, new content.
    pub change_in_place: bool,
    /// Items are immutable (snapshots): [`Fixture::change`] makes a new item
    /// under a new key, and the earlier one stays.
    pub immutable_items: bool,
    /// [`Fixture::delete_source`] deletes an item from the primary.
    pub delete_in_source: bool,
    /// [`Fixture::break_item`] makes one item fail to read (by default: it
    /// deletes it between the listing and the read).
    pub fail_item: bool,
    /// The sink keeps (and lists) items the primary no longer has.
    pub keeps_escrow_only: bool,
    /// Listed sizes count the seeded bytes (object stores, tables).
    pub byte_content: bool,
    /// The sink lists only this fixture's items (an escrow of its own); when
    /// not, counts of escrow-only items are taken relative to a baseline.
    pub exclusive_escrow: bool,
}

impl Capabilities {
    /// Nothing beyond seeding, copying and reading escrow back.
    pub fn none() -> Self {
        Capabilities {
            change_in_place: false,
            immutable_items: false,
            delete_in_source: false,
            fail_item: false,
            keeps_escrow_only: false,
            byte_content: false,
            exclusive_escrow: false,
        }
    }

    /// A mutable byte store or table with an escrow of its own: everything
    /// but immutable items.
    pub fn mutable_objects() -> Self {
        Capabilities {
            change_in_place: true,
            delete_in_source: true,
            fail_item: true,
            keeps_escrow_only: true,
            byte_content: true,
            exclusive_escrow: true,
            ..Capabilities::none()
        }
    }

    /// Snapshots: immutable items (a change is a new snapshot), deletable
    /// in the primary, kept in an escrow other runs may share.
    pub fn snapshots() -> Self {
        Capabilities {
            immutable_items: true,
            delete_in_source: true,
            fail_item: true,
            keeps_escrow_only: true,
            ..Capabilities::none()
        }
    }

    /// Sets [`Capabilities::change_in_place`].
    pub fn with_change_in_place(mut self, on: bool) -> Self {
        self.change_in_place = on;
        self
    }

    /// Sets [`Capabilities::immutable_items`].
    pub fn with_immutable_items(mut self, on: bool) -> Self {
        self.immutable_items = on;
        self
    }

    /// Sets [`Capabilities::delete_in_source`].
    pub fn with_delete_in_source(mut self, on: bool) -> Self {
        self.delete_in_source = on;
        self
    }

    /// Sets [`Capabilities::fail_item`].
    pub fn with_fail_item(mut self, on: bool) -> Self {
        self.fail_item = on;
        self
    }

    /// Sets [`Capabilities::keeps_escrow_only`].
    pub fn with_keeps_escrow_only(mut self, on: bool) -> Self {
        self.keeps_escrow_only = on;
        self
    }

    /// Sets [`Capabilities::byte_content`].
    pub fn with_byte_content(mut self, on: bool) -> Self {
        self.byte_content = on;
        self
    }

    /// Sets [`Capabilities::exclusive_escrow`].
    pub fn with_exclusive_escrow(mut self, on: bool) -> Self {
        self.exclusive_escrow = on;
        self
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::mutable_objects()
    }
}

fn unsupported(op: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        op,
        what,
        "this conformance fixture does not implement it: implement the method or leave the \
         capability off",
    )
}

/// A Source/Sink pair under test plus the means to seed, change and delete
/// primary items and to read back what escrow holds.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The source (primary side).
    fn source(&self) -> &dyn Source;
    /// The sink (escrow side).
    fn sink(&self) -> &dyn Sink;

    /// What the fixture can do (default: [`Capabilities::mutable_objects`]).
    fn capabilities(&self) -> Capabilities {
        Capabilities::mutable_objects()
    }

    /// The names of the items the checks seed (default: [`sample_keys`]).
    /// Resuming after a partial run needs at least four.
    fn names(&self) -> Vec<String> {
        sample_keys()
    }

    /// Creates the item `name` in the primary with content `variant`;
    /// returns the key the source lists it under. Default:
    /// [`Fixture::put_source`] of [`sample_content`] under `name`.
    async fn seed(&self, name: &str, variant: u8) -> Result<String> {
        self.put_source(name, sample_content(name, variant)).await?;
        Ok(name.to_string())
    }

    /// Changes the item seeded as `name` (listed as `key`) to content
    /// `variant`; returns the key of the changed item: `key` for a change in
    /// place, a new key for immutable items. Default: a change in place by
    /// [`Fixture::put_source`].
    async fn change(&self, name: &str, key: &str, variant: u8) -> Result<String> {
        self.put_source(key, sample_content(name, variant)).await?;
        Ok(key.to_string())
    }

    /// Creates or replaces `key` in the primary (byte stores).
    async fn put_source(&self, key: &str, data: Bytes) -> Result<()> {
        let _ = data;
        Err(unsupported("put_source", key))
    }

    /// Deletes `key` from the primary.
    async fn delete_source(&self, key: &str) -> Result<()> {
        Err(unsupported("delete_source", key))
    }

    /// Makes reading `key` fail from now on (called between the listing and
    /// the read). Default: [`Fixture::delete_source`].
    async fn break_item(&self, key: &str) -> Result<()> {
        self.delete_source(key).await
    }

    /// What escrow holds under `key`, if anything, in the form
    /// [`Fixture::expected_content`] gives.
    async fn escrow_content(&self, key: &str) -> Result<Option<Bytes>>;

    /// What escrow must hold for the item seeded as `name`, listed as `key`,
    /// with content `variant`. Default: [`sample_content`].
    fn expected_content(&self, name: &str, key: &str, variant: u8) -> Bytes {
        let _ = key;
        sample_content(name, variant)
    }

    /// How many mutating calls (anything but reads) the source's and the
    /// sink's clients have made so far, when the fixture counts them.
    fn mutating_calls(&self) -> Option<u64> {
        None
    }
}

/// What one check did.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The check ran and passed (a failing check panics).
    Ran,
    /// The check did not run: the fixture lacks what it needs (the reason).
    Skipped(&'static str),
}

/// Which checks [`run_all`] ran and which it skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The checks that ran and passed, by name.
    pub ran: Vec<&'static str>,
    /// The checks skipped, by name, with the reason.
    pub skipped: Vec<(&'static str, &'static str)>,
}

impl Summary {
    /// Whether every check ran.
    pub fn all_ran(&self) -> bool {
        self.skipped.is_empty() && self.ran.len() == CHECKS.len()
    }
}

/// The names of the checks, in the order [`run_all`] runs them.
pub const CHECKS: [&str; 6] = [
    "round_trip",
    "idempotent_rerun",
    "resume_after_partial",
    "errors_surface_with_key",
    "changed_item_recopied",
    "deleted_item_retained",
];

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

/// The seeded items: (name, key).
type Seeded = Vec<(String, String)>;

async fn seed(f: &dyn Fixture, variant: u8) -> Seeded {
    let mut out = Vec::new();
    for name in f.names() {
        let key = f.seed(&name, variant).await.expect("seed the primary");
        out.push((name, key));
    }
    out
}

async fn assert_escrow_holds(f: &dyn Fixture, seeded: &Seeded, variant: u8) {
    for (name, key) in seeded {
        let got = f.escrow_content(key).await.expect("read escrow");
        let want = f.expected_content(name, key, variant);
        assert_eq!(got, Some(want), "escrow content of {name:?} (key {key:?})");
    }
}

fn skipped(check: &'static str, reason: &'static str) -> Outcome {
    eprintln!("conformance: {check} skipped: {reason}");
    Outcome::Skipped(reason)
}

/// Everything in the primary arrives in escrow: the source lists exactly
/// what was seeded, the run copies each once, the bytes counted are the
/// listed sizes, and escrow holds what was seeded.
pub async fn round_trip(f: &dyn Fixture) -> Outcome {
    let seeded = seed(f, 0).await;
    let r = run(&executor(), f).await;
    assert_eq!(r.failed, 0, "failures: {:?}", r.failures);
    assert_eq!(r.copied, seeded.len() as u64, "{r:?}");
    let listed: Vec<Item> = f.source().list(&Scope::all()).try_collect().await.expect("listing");
    let mut keys: Vec<&str> = listed.iter().map(|i| i.key.as_str()).collect();
    let mut want: Vec<&str> = seeded.iter().map(|(_, k)| k.as_str()).collect();
    keys.sort_unstable();
    want.sort_unstable();
    assert_eq!(keys, want, "the source lists what was seeded");
    let bytes: u64 = listed.iter().map(|i| i.size).sum();
    if f.capabilities().byte_content {
        // Bytes as the source lists its items: the content's length for
        // object stores, the encoded item for tables.
        let content: u64 =
            seeded.iter().map(|(n, k)| f.expected_content(n, k, 0).len() as u64).sum();
        assert!(bytes >= content, "listed {bytes} bytes, seeded {content}");
    }
    assert_eq!(r.bytes_copied, bytes);
    assert_escrow_holds(f, &seeded, 0).await;
    Outcome::Ran
}

/// A second run with no change copies nothing, a plan says so, verify is
/// clean; and where the fixture counts calls, neither the re-run nor the
/// plan nor the verify makes a mutating call.
pub async fn idempotent_rerun(f: &dyn Fixture) -> Outcome {
    let seeded = seed(f, 0).await;
    let n = seeded.len() as u64;
    let ex = executor();
    let first = run(&ex, f).await;
    assert_eq!(first.copied, n, "failures: {:?}", first.failures);
    let before = f.mutating_calls();
    let second = run(&ex, f).await;
    assert_eq!((second.copied, second.failed), (0, 0), "second run: {second:?}");
    assert_eq!(second.skipped, n);
    let plan = ex.execute(Mode::Plan, f.source(), f.sink(), &Scope::all()).await.unwrap();
    assert_eq!((plan.copied, plan.missing, plan.different), (0, 0, 0), "plan: {plan:?}");
    let verify = ex.execute(Mode::Verify, f.source(), f.sink(), &Scope::all()).await.unwrap();
    assert!(verify.is_clean(), "verify after run: {verify:?}");
    if let (Some(before), Some(after)) = (before, f.mutating_calls()) {
        assert_eq!(after, before, "mutating calls in a re-run, a plan and a verify");
    }
    assert_escrow_holds(f, &seeded, 0).await;
    Outcome::Ran
}

/// A run cancelled part-way is finished by the next run, without duplicates.
pub async fn resume_after_partial(f: &dyn Fixture) -> Outcome {
    const CHECK: &str = "resume_after_partial";
    if f.names().len() < 4 {
        return skipped(CHECK, "needs at least four items to cancel after three");
    }
    let seeded = seed(f, 0).await;
    let n = seeded.len() as u64;
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
    assert!(first.copied >= 3 && first.copied < n, "partial: {first:?}");
    assert_eq!(first.failed, 0);
    let second = run(&executor(), f).await;
    assert_eq!(second.failed, 0, "failures: {:?}", second.failures);
    assert_eq!(second.copied + first.copied, n, "no item copied twice");
    assert_eq!(second.skipped, first.copied);
    assert_escrow_holds(f, &seeded, 0).await;
    Outcome::Ran
}

/// A source item that fails between listing and copying (it disappears)
/// fails alone, the failure names its key, and escrow holds nothing of it.
pub async fn errors_surface_with_key(f: &dyn Fixture) -> Outcome {
    const CHECK: &str = "errors_surface_with_key";
    if !f.capabilities().fail_item {
        return skipped(CHECK, "the fixture cannot make an item fail to read");
    }
    let seeded = seed(f, 0).await;
    let (_, victim) = seeded[2.min(seeded.len() - 1)].clone();
    let hooked = BreakBeforeRead { fixture: f, victim: victim.clone() };
    let r = executor().execute(Mode::Run, &hooked, f.sink(), &Scope::all()).await.unwrap();
    assert_eq!(r.failed, 1, "{r:?}");
    assert_eq!(r.copied, seeded.len() as u64 - 1);
    let failure = &r.failures[0];
    assert_eq!(failure.key, victim);
    assert!(failure.error.contains(&victim), "error names the key: {}", failure.error);
    assert_eq!(f.escrow_content(&victim).await.unwrap(), None, "nothing half-written");
    Outcome::Ran
}

/// A changed source item is copied again, and only that one: in place, the
/// escrow copy is updated; for immutable items, the new item is copied and
/// escrow keeps the earlier one.
pub async fn changed_item_recopied(f: &dyn Fixture) -> Outcome {
    const CHECK: &str = "changed_item_recopied";
    let caps = f.capabilities();
    if !caps.change_in_place && !caps.immutable_items {
        return skipped(CHECK, "the fixture cannot change an item in the primary");
    }
    let seeded = seed(f, 0).await;
    let ex = executor();
    let first = run(&ex, f).await;
    assert_eq!(first.copied, seeded.len() as u64, "{first:?}");
    let (name, key) = seeded[0].clone();
    let changed = f.change(&name, &key, 1).await.expect("change a primary item");
    if caps.immutable_items {
        assert_ne!(changed, key, "a change of an immutable item is a new item");
    } else {
        assert_eq!(changed, key, "a change in place keeps the key");
    }
    let r = run(&ex, f).await;
    assert_eq!((r.copied, r.failed), (1, 0), "{r:?}");
    let unchanged = if caps.immutable_items { seeded.len() } else { seeded.len() - 1 };
    assert_eq!(r.skipped, unchanged as u64, "{r:?}");
    let want = f.expected_content(&name, &changed, 1);
    assert_eq!(f.escrow_content(&changed).await.unwrap(), Some(want));
    if caps.immutable_items {
        let earlier = f.expected_content(&name, &key, 0);
        assert_eq!(f.escrow_content(&key).await.unwrap(), Some(earlier), "earlier copy kept");
    }
    Outcome::Ran
}

/// An item deleted in the primary stays in escrow: the next run retains
/// it (of this fixture's items, it alone; with an escrow of its own, nothing
/// else either), copies and deletes nothing.
pub async fn deleted_item_retained(f: &dyn Fixture) -> Outcome {
    const CHECK: &str = "deleted_item_retained";
    let caps = f.capabilities();
    if !caps.delete_in_source {
        return skipped(CHECK, "the fixture cannot delete an item in the primary");
    }
    if !caps.keeps_escrow_only {
        return skipped(CHECK, "the sink does not keep items the primary no longer has");
    }
    let seeded = seed(f, 0).await;
    let first = run(&executor(), f).await;
    assert_eq!(first.copied, seeded.len() as u64, "{first:?}");
    let (name, key) = seeded.last().expect("seeded items").clone();
    f.delete_source(&key).await.unwrap();
    let retained = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = retained.clone();
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(4).with_item_log(Arc::new(
        move |r: ItemRecord| {
            if r.outcome == ItemOutcome::Retained {
                log.lock().expect("retained").push(r.item.key);
            }
        },
    )));
    let r = run(&ex, f).await;
    assert_eq!((r.copied, r.failed, r.deleted), (0, 0, 0), "{r:?}");
    assert_eq!(r.skipped, seeded.len() as u64 - 1, "{r:?}");
    let retained = retained.lock().expect("retained").clone();
    assert_eq!(r.retained, retained.len() as u64, "{r:?}");
    if caps.exclusive_escrow {
        assert_eq!(
            retained,
            std::slice::from_ref(&key),
            "an escrow of its own retains only the deleted item"
        );
    } else {
        let mine: Vec<&String> =
            retained.iter().filter(|k| seeded.iter().any(|(_, s)| s == *k)).collect();
        assert_eq!(mine, [&key], "of this fixture's items only the deleted one is retained");
    }
    let want = f.expected_content(&name, &key, 0);
    assert_eq!(f.escrow_content(&key).await.unwrap(), Some(want));
    Outcome::Ran
}

/// Runs every check, each on a fresh fixture from `make`, and says which ran
/// and which were skipped (and why).
pub async fn run_all<F, Fut, X>(mut make: F) -> Summary
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = X>,
    X: Fixture,
{
    let mut summary = Summary::default();
    let mut record = |name: &'static str, o: Outcome| match o {
        Outcome::Ran => summary.ran.push(name),
        Outcome::Skipped(why) => summary.skipped.push((name, why)),
    };
    record(CHECKS[0], round_trip(&make().await).await);
    record(CHECKS[1], idempotent_rerun(&make().await).await);
    record(CHECKS[2], resume_after_partial(&make().await).await);
    record(CHECKS[3], errors_surface_with_key(&make().await).await);
    record(CHECKS[4], changed_item_recopied(&make().await).await);
    record(CHECKS[5], deleted_item_retained(&make().await).await);
    summary
}

/// The fixture's source, breaking one item just before it is read.
struct BreakBeforeRead<'a> {
    fixture: &'a dyn Fixture,
    victim: String,
}

#[async_trait]
impl Source for BreakBeforeRead<'_> {
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
            self.fixture.break_item(&item.key).await?;
        }
        self.fixture.source().read(item).await
    }
    async fn checksum(&self, item: &Item) -> Result<Option<String>> {
        self.fixture.source().checksum(item).await
    }
    async fn finish(&self, item: &Item) -> Result<()> {
        self.fixture.source().finish(item).await
    }
    fn finishes_skipped(&self) -> bool {
        self.fixture.source().finishes_skipped()
    }
    fn assesses(&self) -> bool {
        self.fixture.source().assesses()
    }
    async fn assess(&self, item: &Item) -> Result<Option<String>> {
        self.fixture.source().assess(item).await
    }
}
