//! Planner throughput: the streaming merge against the batch computation
//! (the baseline), on the same listings.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;

use escrow_sync_benches::listing;
use escrow_sync_core::{CopyPlan, Policy, plan_stream};

fn planner(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    for n in [10_000usize, 100_000, 1_000_000] {
        let (src, dst) = (listing(n, 0), listing(n, 1));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("batch", n), &n, |b, _| {
            b.iter(|| {
                CopyPlan::compute(src.clone(), dst.clone(), &Policy::new()).unwrap().summary()
            })
        });
        g.bench_with_input(BenchmarkId::new("streaming", n), &n, |b, _| {
            b.iter(|| {
                let s = futures::stream::iter(src.clone().into_iter().map(Ok)).boxed();
                let d = futures::stream::iter(dst.clone().into_iter().map(Ok)).boxed();
                futures::executor::block_on(
                    plan_stream(s, d, &Policy::new())
                        .filter(|a| futures::future::ready(a.as_ref().is_ok_and(|a| a.is_copy())))
                        .count(),
                )
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = planner
}
criterion_main!(benches);
