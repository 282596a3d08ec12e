//! `cargo xtask bench snapshots`: EBS snapshots escrowed per second on the
//! emulator, each figure beside a baseline measured in the same run.
//!
//! - baseline: a plain SDK loop, one snapshot after another: share
//!   (ModifySnapshotAttribute), CopySnapshot with escrow credentials and the
//!   escrow key, DescribeSnapshots until completed, unshare;
//! - escrow-sync's EbsSnapshotSource/Sink through the core executor, with one
//!   copy in flight (the per-item overhead: key check, provenance lookup,
//!   tags, polling) and with the default 20;
//! - a re-run with nothing to copy (listing both sides only).
//!
//! On the emulator a copy completes at once, so the figures measure request
//! overhead and concurrency, not EBS copy speed (AWS copies take minutes to
//! hours, which `max_in_flight` overlaps). Snapshots per set:
//! `ESCROW_SYNC_BENCH_SNAPSHOTS` (default 200).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    OperationType, ResourceType, SnapshotAttributeName, SnapshotState, Tag, TagSpecification,
};

use escrow_sync_core::{Executor, ExecutorOptions, Mode, Scope};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_kms_key, sessions, unique};
use escrow_sync_ec2::{EbsSnapshotSink, EbsSnapshotSource};

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn line(name: &str, n: u64, d: Duration, baseline: Option<f64>) {
    let r = rate(n, d);
    let ratio = baseline.map(|b| format!("  {:.2}x the baseline", r / b)).unwrap_or_default();
    println!("{name:<62} {n:>5} snapshots in {:>6.2} s  {r:>7.1}/s{ratio}", d.as_secs_f64());
}

/// `n` snapshots in the primary tagged `set = tag`; their ids.
async fn seed(ec2: &Client, tag: &str, n: usize) -> Vec<String> {
    let volume = ec2
        .create_volume()
        .availability_zone("us-east-1a")
        .size(1)
        .send()
        .await
        .unwrap()
        .volume_id
        .unwrap();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .tags(Tag::builder().key("set").value(tag).build())
            .build();
        let out =
            ec2.create_snapshot().volume_id(&volume).tag_specifications(spec).send().await.unwrap();
        ids.push(out.snapshot_id.unwrap());
    }
    ids
}

/// The baseline: share, copy, wait, unshare, one snapshot at a time.
async fn naive(primary: &Client, escrow: &Client, ids: &[String], key: &str) -> u64 {
    let share = |id: String, op: OperationType| {
        primary
            .modify_snapshot_attribute()
            .snapshot_id(id)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .operation_type(op)
            .user_ids(ESCROW)
            .send()
    };
    for id in ids {
        share(id.clone(), OperationType::Add).await.unwrap();
        let copy = escrow
            .copy_snapshot()
            .source_snapshot_id(id)
            .source_region("us-east-1")
            .encrypted(true)
            .kms_key_id(key)
            .send()
            .await
            .unwrap()
            .snapshot_id
            .unwrap();
        loop {
            let s = escrow.describe_snapshots().snapshot_ids(&copy).send().await.unwrap();
            if s.snapshots().first().and_then(|s| s.state()) == Some(&SnapshotState::Completed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        share(id.clone(), OperationType::Remove).await.unwrap();
    }
    ids.len() as u64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // libtest's listing protocol: no benchmarks for `cargo test` to run.
        return;
    }
    if args.iter().any(|a| a == "--bench") && std::env::var("AWS_ENDPOINT_URL").is_err() {
        eprintln!(
            "snapshots bench: AWS_ENDPOINT_URL is not set: run it with `cargo xtask bench snapshots`"
        );
        std::process::exit(2);
    }
    let n: usize = std::env::var("ESCROW_SYNC_BENCH_SNAPSHOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let primary_admin = escrow_sync_ec2::client(&admin(PRIMARY).await);
        let escrow_session = admin(ESCROW).await;
        let key = create_kms_key(&escrow_session).await;
        let s = sessions().await;
        let (primary, escrow) =
            (escrow_sync_ec2::client(&s.primary), escrow_sync_ec2::client(&s.escrow));
        let sets: Vec<String> = (0..3).map(|i| unique(&format!("bench-{i}"))).collect();
        let t = Instant::now();
        let mut seeded = Vec::new();
        for set in &sets {
            seeded.push(seed(&primary_admin, set, n).await);
        }
        println!("seeded 3 sets of {n} EBS snapshots in {:.1} s", t.elapsed().as_secs_f64());

        let t = Instant::now();
        let copied = naive(&primary, &escrow, &seeded[0], &key).await;
        let base = t.elapsed();
        line("baseline: SDK loop, share/copy/wait/unshare one at a time", copied, base, None);
        let b = rate(copied, base);

        let pair = |set: &str| {
            let source = EbsSnapshotSource::from_client(
                primary.clone(),
                escrow_sync_ec2::kms_client(&s.primary),
                "us-east-1",
                PRIMARY,
                ESCROW,
            )
            .with_tags(BTreeMap::from([("set".to_string(), set.to_string())]));
            let sink = EbsSnapshotSink::from_client(escrow.clone(), "us-east-1")
                .with_kms_key_id(Some(key.clone()))
                .with_wait(Duration::from_secs(600), Duration::from_millis(50));
            (source, sink)
        };
        for (set, in_flight) in [(&sets[1], 1), (&sets[2], 20)] {
            let (source, sink) = pair(set);
            let ex = Executor::new(ExecutorOptions::new().with_concurrency(in_flight));
            let t = Instant::now();
            let report = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
            assert_eq!((report.copied, report.failed), (n as u64, 0), "{report:?}");
            line(
                &format!("escrow-sync run, max_in_flight {in_flight}"),
                report.copied,
                t.elapsed(),
                Some(b),
            );
        }
        let (source, sink) = pair(&sets[2]);
        let ex = Executor::new(ExecutorOptions::new().with_concurrency(20));
        let t = Instant::now();
        let report = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
        assert_eq!((report.copied, report.skipped), (0, n as u64), "{report:?}");
        line("escrow-sync re-run, nothing to copy", report.skipped, t.elapsed(), Some(b));
    });
}
