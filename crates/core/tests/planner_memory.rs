//! The streaming planner's peak heap does not grow with the number of keys.
//!
//! Measured with dhat's heap statistics (bytes, not time). This binary has
//! its own `main` (one heap profiler per process), and prints a line the
//! test runners read.

use futures::StreamExt;

use escrow_sync_core::{CopyPlan, Item, ItemKind, ItemStream, Policy, plan_stream};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// `n` items generated lazily, in key order; every third one differs.
fn listing(n: usize, salt: usize) -> impl Iterator<Item = Item> {
    (0..n).map(move |i| {
        let fp = if i % 3 == 0 { format!("\"{}\"", i + salt) } else { format!("\"{i}\"") };
        Item::new(format!("objects/{i:09}"), ItemKind::Object, i as u64, fp)
    })
}

fn stream(n: usize, salt: usize) -> ItemStream<'static> {
    futures::stream::iter(listing(n, salt).map(Ok)).boxed()
}

/// Peak heap growth while streaming-planning `n` keys (the plan is consumed
/// as it is produced, as the executor does).
fn streaming_peak(n: usize) -> (u64, u64) {
    let before = dhat::HeapStats::get();
    let mut copies = 0u64;
    futures::executor::block_on(async {
        let mut plan = plan_stream(stream(n, 0), stream(n, 1), &Policy::new());
        while let Some(a) = plan.next().await {
            if a.expect("sorted input").is_copy() {
                copies += 1;
            }
        }
    });
    let after = dhat::HeapStats::get();
    (after.max_bytes.saturating_sub(before.curr_bytes) as u64, copies)
}

fn main() {
    // Speak enough of libtest's protocol for cargo-nextest to list and run
    // this binary as one test.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("planner_memory_is_bounded: test");
        }
        return;
    }
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut failed = 0;
    let mut check = |name: &str, ok: bool, detail: String| {
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            eprintln!("{name}: {detail}");
            failed += 1;
        }
    };

    // Peaks are cumulative in dhat, so measure the small case first.
    let (small, small_copies) = streaming_peak(1_000);
    let (large, large_copies) = streaming_peak(100_000);
    check(
        "streaming_plan_memory_is_flat",
        small_copies == 334
            && large_copies == 33_334
            && large <= small.max(1) * 2
            && large < 64 * 1024,
        format!("peak heap growth: 1k keys {small} B, 100k keys {large} B"),
    );

    // The batch planner holds both listings: the measurement can see growth.
    let before = dhat::HeapStats::get();
    let plan = CopyPlan::compute(listing(100_000, 0), listing(100_000, 1), &Policy::new()).unwrap();
    let batch = dhat::HeapStats::get().max_bytes.saturating_sub(before.curr_bytes) as u64;
    check(
        "batch_plan_memory_grows_and_is_measured",
        plan.summary().copy == 33_334 && batch > 100 * large.max(1),
        format!("batch peak {batch} B vs streaming {large} B"),
    );
    drop(plan);

    let passed = 2 - failed;
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    println!(
        "peak heap: streaming 1k keys {small} B, streaming 100k keys {large} B, batch 100k keys {batch} B"
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
