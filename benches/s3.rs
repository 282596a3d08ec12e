//! `cargo xtask bench s3`: S3 throughput on a local S3 server (the emulator),
//! each figure beside a baseline measured in the same run, with peak RSS.
//!
//! - objects/s for N small objects bucket to bucket, server-side, against a
//!   naive sequential CopyObject loop (the baseline);
//! - MiB/s for large objects, server-side in parts and streamed;
//! - the planner's keys/s and peak RSS at 10k, 100k and 1M keys, streaming
//!   merge against the in-memory batch plan (the baseline).
//!
//! Each measurement runs in a child process of this binary, so its peak RSS
//! (VmHWM) is its own. The emulator is the bottleneck for the S3 figures:
//! they compare strategies on one server, not S3's own speed.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use escrow_sync_core::{CopyPlan, Executor, ExecutorOptions, Item, ItemKind, Mode, Policy, Scope};
use escrow_sync_e2e::{ESCROW, admin, create_bucket, s3, sessions, unique};
use escrow_sync_s3::{MultipartOptions, S3Sink, S3Source};

const MIB: u64 = 1024 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Peak resident set size of this process, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn report(elapsed: Duration, units: u64) {
    println!("RESULT {} {} {}", elapsed.as_secs_f64(), units, peak_rss_kib());
}

fn listing(n: usize, salt: usize) -> impl Iterator<Item = Item> {
    (0..n).map(move |i| {
        let fp = if i % 3 == 0 { format!("\"{}\"", i + salt) } else { format!("\"{i}\"") };
        Item::new(format!("objects/{i:09}"), ItemKind::Object, i as u64, fp)
    })
}

/// A static-key S3 endpoint to measure instead of the emulator's two
/// accounts (`ESCROW_SYNC_BENCH_S3_ENDPOINT`, set by `cargo xtask bench s3
/// --store s3s-fs`): one account, no STS, no tagging or versioning.
fn store_endpoint() -> Option<String> {
    std::env::var("ESCROW_SYNC_BENCH_S3_ENDPOINT").ok().filter(|v| !v.is_empty())
}

/// Primary and escrow clients: the emulator's two accounts, or one
/// static-key client on a plain S3 store.
async fn clients() -> (aws_sdk_s3::Client, aws_sdk_s3::Client) {
    match store_endpoint() {
        Some(ep) => {
            let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(ep)
                .credentials_provider(aws_credential_types::Credentials::new(
                    "bench",
                    "bench-secret",
                    None,
                    None,
                    "bench",
                ))
                .load()
                .await;
            let c = aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build(),
            );
            (c.clone(), c)
        }
        None => {
            let s = sessions().await;
            (s3(&s.primary), s3(&s.escrow))
        }
    }
}

async fn child(args: &[String]) {
    match args[0].as_str() {
        "naive" => {
            // The baseline: one CopyObject after another, with escrow credentials.
            let (src, dst) = (&args[1], &args[2]);
            let (primary, escrow) = clients().await;
            let keys = escrow_sync_e2e::keys(&primary, src).await;
            let start = Instant::now();
            for k in &keys {
                escrow
                    .copy_object()
                    .bucket(dst)
                    .key(k)
                    .copy_source(escrow_sync_s3::copy_source(src, k))
                    .send()
                    .await
                    .expect("copy");
            }
            report(start.elapsed(), keys.len() as u64);
        }
        "sync" => {
            let (src, dst, stream) = (&args[1], &args[2], args[3] == "stream");
            let (primary, escrow) = clients().await;
            let source = S3Source::from_client(primary, src).with_streaming(stream);
            let sink = S3Sink::from_client(escrow, dst).with_multipart(
                MultipartOptions::new()
                    .with_threshold(8 * MIB)
                    .with_part_size(8 * MIB)
                    .with_part_concurrency(8),
            );
            let start = Instant::now();
            let r = Executor::new(ExecutorOptions::new().with_concurrency(64))
                .execute(Mode::Run, &source, &sink, &Scope::all())
                .await
                .expect("run");
            assert_eq!(r.failed, 0, "{:?}", r.failures);
            let units = if args[4] == "bytes" { r.bytes_copied } else { r.copied };
            report(start.elapsed(), units);
        }
        "plan" => {
            let (n, stream) = (args[1].parse::<usize>().expect("keys"), args[2] == "stream");
            let start = Instant::now();
            let copies = if stream {
                let s = futures::stream::iter(listing(n, 0).map(Ok)).boxed();
                let d = futures::stream::iter(listing(n, 1).map(Ok)).boxed();
                escrow_sync_core::plan_stream(s, d, &Policy::new())
                    .filter(|a| futures::future::ready(a.as_ref().is_ok_and(|a| a.is_copy())))
                    .count()
                    .await as u64
            } else {
                CopyPlan::compute(listing(n, 0), listing(n, 1), &Policy::new())
                    .unwrap()
                    .summary()
                    .copy
            };
            assert_eq!(copies, n.div_ceil(3) as u64);
            report(start.elapsed(), n as u64);
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// Runs one scenario in a child process: (seconds, units, peak RSS KiB).
fn measure(args: &[&str]) -> (f64, u64, u64) {
    let out = Command::new(std::env::current_exe().expect("self"))
        .arg("--child")
        .args(args)
        .output()
        .expect("run a scenario");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("RESULT ")).unwrap_or_else(|| {
        panic!("scenario {args:?} failed: {}", String::from_utf8_lossy(&out.stderr))
    });
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap())
}

async fn seed(objects: usize, large: usize, large_mib: u64) -> (String, String) {
    let primary = match store_endpoint() {
        Some(_) => clients().await.0,
        None => s3(&admin(escrow_sync_e2e::PRIMARY).await),
    };
    let small = unique("bench-small");
    let big = unique("bench-large");
    create_bucket(&primary, &small, false).await;
    create_bucket(&primary, &big, false).await;
    let body = Bytes::from(vec![7u8; 4096]);
    futures::stream::iter(0..objects)
        .map(|i| {
            let (p, b, body) = (primary.clone(), small.clone(), body.clone());
            async move {
                p.put_object()
                    .bucket(b)
                    .key(format!("obj/{i:06}"))
                    .body(body.into())
                    .send()
                    .await
                    .expect("seed");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for i in 0..large {
        let data: Bytes = (0..large_mib * MIB).map(|j| (j % 251) as u8).collect::<Vec<_>>().into();
        primary
            .put_object()
            .bucket(&big)
            .key(format!("large/{i}.bin"))
            .body(data.into())
            .send()
            .await
            .expect("seed large");
    }
    (small, big)
}

async fn dest_bucket(name: &str) -> String {
    let b = unique(name);
    match store_endpoint() {
        Some(_) => create_bucket(&clients().await.1, &b, false).await,
        None => create_bucket(&s3(&admin(ESCROW).await), &b, true).await,
    }
    b
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if args.first().map(String::as_str) == Some("--child") {
        rt.block_on(child(&args[1..]));
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // nothing for test runners here
    }
    let objects = env_usize("ESCROW_SYNC_BENCH_OBJECTS", 10_000);
    let large = env_usize("ESCROW_SYNC_BENCH_LARGE", 2);
    let large_mib = env_usize("ESCROW_SYNC_BENCH_LARGE_MIB", 64) as u64;
    let target = store_endpoint().map_or_else(
        || format!("the emulator at {} (two accounts)", escrow_sync_e2e::endpoint()),
        |ep| format!("the S3 store at {ep} (one account, static keys)"),
    );
    println!("seeding {objects} x 4 KiB objects and {large} x {large_mib} MiB objects on {target}");
    let started = Instant::now();
    let (small, big) = rt.block_on(seed(objects, large, large_mib));
    println!("seeded in {:.1}s\n", started.elapsed().as_secs_f64());

    let d = |n: &str| rt.block_on(dest_bucket(n));
    let naive = measure(&["naive", &small, &d("bench-naive")]);
    let ours = measure(&["sync", &small, &d("bench-sync"), "server-side", "objects"]);
    println!("small objects ({objects} x 4 KiB), server-side:");
    println!(
        "  naive sequential CopyObject   {:>9.1} objects/s  peak RSS {:>7} KiB  (baseline)",
        naive.1 as f64 / naive.0,
        naive.2
    );
    println!(
        "  escrow-sync (concurrency 64)  {:>9.1} objects/s  peak RSS {:>7} KiB  ({:.2}x the baseline)",
        ours.1 as f64 / ours.0,
        ours.2,
        (ours.1 as f64 / ours.0) / (naive.1 as f64 / naive.0)
    );

    let server = measure(&["sync", &big, &d("bench-parts"), "server-side", "bytes"]);
    let stream = measure(&["sync", &big, &d("bench-stream"), "stream", "bytes"]);
    let mibs = |r: (f64, u64, u64)| r.1 as f64 / MIB as f64 / r.0;
    println!("\nlarge objects ({large} x {large_mib} MiB, 8 MiB parts, 8 parts in flight):");
    println!(
        "  server-side (UploadPartCopy)  {:>9.1} MiB/s      peak RSS {:>7} KiB  (baseline)",
        mibs(server),
        server.2
    );
    println!(
        "  streamed (GET + UploadPart)   {:>9.1} MiB/s      peak RSS {:>7} KiB  ({:.2}x the baseline)",
        mibs(stream),
        stream.2,
        mibs(stream) / mibs(server)
    );

    println!("\nplanner (two listings, a third of keys differ):");
    for n in ["10000", "100000", "1000000"] {
        let batch = measure(&["plan", n, "batch"]);
        let streaming = measure(&["plan", n, "stream"]);
        println!(
            "  {n:>8} keys  batch {:>10.0} keys/s  peak RSS {:>7} KiB (baseline) | streaming {:>10.0} keys/s  peak RSS {:>7} KiB  ({:.2}x the time, {:.2}x the RSS)",
            batch.1 as f64 / batch.0,
            batch.2,
            streaming.1 as f64 / streaming.0,
            streaming.2,
            streaming.0 / batch.0,
            streaming.2 as f64 / batch.2 as f64
        );
    }
}
