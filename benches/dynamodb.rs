//! `cargo xtask bench dynamodb`: DynamoDB items/s on the emulator, each
//! figure beside a baseline measured in the same run.
//!
//! - scan: a one-segment Scan loop with the plain SDK (the baseline) against
//!   the segmented parallel scan under the read budget;
//! - copy: a naive copy (one-segment Scan, every page written with
//!   BatchWriteItem, no comparison: the baseline) against escrow-sync's
//!   table job on a new escrow table, then its re-run against the unchanged
//!   table (compares, writes nothing);
//! - export: the export job writing a gzip generation into an escrow bucket.
//!
//! The emulator is the bottleneck: the figures compare strategies on one
//! server, not DynamoDB's speed. Items: `ESCROW_SYNC_BENCH_DDB_ITEMS`
//! (default 20,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;

use escrow_sync_core::Mode;
use escrow_sync_dynamodb::{
    CheckpointStore, EscrowTable, ExportJob, ExportTarget, ScanOptions, TableInfo, TableJob,
    TableScanner,
};
use escrow_sync_e2e::ddb::{create_source, item, put_items, scan_all};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_bucket, s3, sessions, unique};
use escrow_sync_s3::{S3Sink, S3Source};

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn line(name: &str, n: u64, d: Duration, baseline: Option<f64>) {
    let r = rate(n, d);
    let ratio = baseline.map(|b| format!("  {:.2}x the baseline", r / b)).unwrap_or_default();
    println!("{name:<66} {n:>7} items in {:>7.2} s  {r:>9.0} items/s{ratio}", d.as_secs_f64());
}

async fn naive_copy(primary: &Client, escrow: &Client, source: &str, dest: &str) -> u64 {
    let mut start = None;
    let mut n = 0;
    loop {
        let page = primary
            .scan()
            .table_name(source)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        let items = page.items.unwrap_or_default();
        n += items.len() as u64;
        put_items(escrow, dest, items.into_iter()).await;
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return n,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // libtest's listing protocol: no benchmarks for `cargo test` to run.
        return;
    }
    if args.iter().any(|a| a == "--bench") && std::env::var("AWS_ENDPOINT_URL").is_err() {
        eprintln!(
            "dynamodb bench: AWS_ENDPOINT_URL is not set: run it with `cargo xtask bench dynamodb`"
        );
        std::process::exit(2);
    }
    let n: usize = std::env::var("ESCROW_SYNC_BENCH_DDB_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let primary_admin = escrow_sync_dynamodb::client(&admin(PRIMARY).await);
        let escrow_session = admin(ESCROW).await;
        let escrow_admin = escrow_sync_dynamodb::client(&escrow_session);
        let s = sessions().await;
        let (primary, escrow) =
            (escrow_sync_dynamodb::client(&s.primary), escrow_sync_dynamodb::client(&s.escrow));
        let source = create_source(&primary_admin).await;
        let seeded = Instant::now();
        put_items(&primary_admin, &source, (0..n).map(item)).await;
        println!(
            "seeded {n} items (a GSI, an LSI, every attribute type) in {:.1} s",
            seeded.elapsed().as_secs_f64()
        );
        let info = TableInfo::describe(&primary, &source).await.unwrap();

        let t = Instant::now();
        let all = scan_all(&primary, &source).await;
        let base_scan = t.elapsed();
        line("scan: baseline, one-segment SDK Scan loop", all.len() as u64, base_scan, None);
        let b = rate(all.len() as u64, base_scan);
        let scanner = TableScanner::from_client(primary.clone(), &source, 1e9)
            .with_options(ScanOptions::new().with_segments(8));
        let t = Instant::now();
        let mut pages = scanner.pages(&[]);
        let mut scanned = 0u64;
        use futures::TryStreamExt;
        while let Some(p) = pages.try_next().await.unwrap() {
            scanned += p.items.len() as u64;
        }
        line("scan: segmented, 8 segments", scanned, t.elapsed(), Some(b));

        // The naive copy needs a table to write into: a clone made by the job.
        let naive_dest = unique("bench-naive");
        EscrowTable::from_client(escrow.clone(), &naive_dest)
            .ensure(&info, PRIMARY, "bench")
            .await
            .unwrap();
        let t = Instant::now();
        let copied = naive_copy(&primary, &escrow, &source, &naive_dest).await;
        let base_copy = t.elapsed();
        line("copy: baseline, Scan + BatchWriteItem, no comparison", copied, base_copy, None);
        let b = rate(copied, base_copy);

        let dest = unique("bench-escrow");
        let job = || {
            TableJob::new(
                "bench",
                primary.clone(),
                info.clone(),
                PRIMARY,
                EscrowTable::from_client(escrow.clone(), &dest),
                escrow_sync_aws::now_rfc3339(),
            )
            .unwrap()
            .with_scan_options(ScanOptions::new().with_segments(8))
            .with_read_units(1e9)
            .with_workers(8)
            .with_checkpoints(Some(CheckpointStore::from_client(
                escrow.clone(),
                unique("bench-cp"),
            )))
        };
        let t = Instant::now();
        let r = job().execute(Mode::Run).await.unwrap();
        line(
            "copy: escrow-sync table job, first run (creates the table)",
            r.copied,
            t.elapsed(),
            Some(b),
        );
        let t = Instant::now();
        let r = job().execute(Mode::Run).await.unwrap();
        line(
            "copy: escrow-sync table job, re-run (compares, writes nothing)",
            r.skipped,
            t.elapsed(),
            Some(b),
        );

        let bucket = unique("bench-exports");
        let es3 = s3(&escrow_session);
        create_bucket(&es3, &bucket, true).await;
        let s3c = escrow_sync_s3::client(&s.escrow);
        let export = ExportJob::new(
            "bench-export",
            primary.clone(),
            info.clone(),
            PRIMARY,
            ExportTarget {
                files: Arc::new(S3Sink::from_client(s3c.clone(), &bucket)),
                reader: Arc::new(S3Source::from_client(s3c, &bucket).with_streaming(true)),
                location: format!("s3://{bucket}/"),
                dest_prefix: String::new(),
            },
            escrow_sync_aws::now_rfc3339(),
        )
        .unwrap()
        .with_scan_options(ScanOptions::new().with_segments(8))
        .with_read_units(1e9);
        let t = Instant::now();
        let r = export.execute(Mode::Run).await.unwrap();
        line("export: escrow-sync generation (gzip, manifest)", r.copied, t.elapsed(), Some(b));
        drop(escrow_admin);
    });
}
