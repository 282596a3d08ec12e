//! Listing and planning stream end to end: the peak heap of a run over
//! mocked S3 listings (1,000 keys a page, generated on request) does not
//! grow with the number of keys. Measured with dhat's heap statistics
//! (bytes, not time); one heap profiler per process, so this binary has its
//! own `main` and speaks enough of libtest's protocol for nextest.

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::Object;
use aws_smithy_mocks::{RuleMode, mock, mock_client};

use escrow_sync_core::{Executor, ExecutorOptions, Mode, Scope};
use escrow_sync_s3::{S3Sink, S3Source};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const PAGE: usize = 1000;

/// A client whose ListObjectsV2 serves `n` keys, page by page.
fn listing_client(n: usize) -> Client {
    let rule = mock!(Client::list_objects_v2).then_compute_output(move |req| {
        // As S3: from the continuation token, else after StartAfter (the
        // key ranges of a split listing).
        let start: usize = match (req.continuation_token(), req.start_after()) {
            (Some(t), _) => t.parse().expect("token"),
            (None, Some(after)) => {
                let keys = (0..n).map(|i| format!("objects/{i:09}"));
                keys.take_while(|k| k.as_str() <= after).count()
            }
            (None, None) => 0,
        };
        let end = (start + PAGE).min(n);
        let mut out = ListObjectsV2Output::builder();
        for i in start..end {
            out = out.contents(
                Object::builder()
                    .key(format!("objects/{i:09}"))
                    .size(4096)
                    .e_tag("\"etag\"")
                    .build(),
            );
        }
        if end < n {
            out = out.is_truncated(true).next_continuation_token(end.to_string());
        }
        out.build()
    });
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&rule])
}

/// Peak heap growth of a run where escrow already holds every key.
fn run_peak(n: usize) -> (u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let before = dhat::HeapStats::get();
    let skipped = rt.block_on(async {
        let source = S3Source::from_client(listing_client(n), "src");
        let sink = S3Sink::from_client(listing_client(n), "dst");
        let r = Executor::new(ExecutorOptions::new())
            .execute(Mode::Run, &source, &sink, &Scope::all())
            .await
            .expect("run");
        r.skipped
    });
    let after = dhat::HeapStats::get();
    (after.max_bytes.saturating_sub(before.curr_bytes) as u64, skipped)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("listing_and_planning_memory_is_flat: test");
        }
        return;
    }
    let _profiler = dhat::Profiler::builder().testing().build();
    // Peaks are cumulative in dhat: measure the small run first.
    // Both past the pages a listing reads before it splits into key ranges.
    let (small, small_n) = run_peak(12 * PAGE);
    let (large, large_n) = run_peak(40 * PAGE);
    let ok = small_n == 12_000 && large_n == 40_000 && large <= small + small / 2;
    println!("test listing_and_planning_memory_is_flat ... {}", if ok { "ok" } else { "FAILED" });
    println!("peak heap growth: 12,000 keys {small} B, 40,000 keys {large} B");
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if ok { "ok" } else { "FAILED" },
        u8::from(ok),
        u8::from(!ok)
    );
    if !ok {
        std::process::exit(1);
    }
}
