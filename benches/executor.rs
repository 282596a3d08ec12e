//! Executor throughput against a sink with 2 ms of latency per write: the
//! same 400 items at concurrency 1 (the baseline), 16 and 64.

use std::time::Duration;

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use escrow_sync_core::{
    Executor, ExecutorOptions, Item, ItemStream, Mode, Payload, Receipt, Result, Scope, Sink,
};
use escrow_sync_testkit::{MemBucket, MemSink, MemSource};

struct LatencySink(MemSink);

#[async_trait]
impl Sink for LatencySink {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn sorted(&self) -> bool {
        true
    }
    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.0.list(scope)
    }
    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0.write(item, payload).await
    }
}

fn executor(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let primary = MemBucket::new("primary");
    for i in 0..400 {
        primary.put(format!("k{i:05}"), vec![1u8; 1024]);
    }
    let mut g = c.benchmark_group("copy_400_items_2ms_latency");
    g.throughput(Throughput::Elements(400));
    for conc in [1usize, 16, 64] {
        g.bench_with_input(BenchmarkId::new("concurrency", conc), &conc, |b, &conc| {
            b.to_async(&rt).iter(|| async {
                let sink = LatencySink(MemSink::new(MemBucket::new("escrow")));
                let r = Executor::new(ExecutorOptions::new().with_concurrency(conc))
                    .execute(Mode::Run, &MemSource::new(primary.clone()), &sink, &Scope::all())
                    .await
                    .unwrap();
                assert_eq!(r.copied, 400);
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(8));
    targets = executor
}
criterion_main!(benches);
