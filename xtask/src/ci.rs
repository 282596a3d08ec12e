//! `cargo xtask test`: the whole check, as `.ci/run` and the README run it.
//!
//! Besides the build, fmt, cargo-deny and the tests, it installs the pinned policy tools
//! ([`policy_tools`]) and runs cfn-lint on both CloudFormation templates of the demo's config.
//!
//! One compile serves clippy, the tests and the `escrow-sync` binary (DESIGN.md §5): the build
//! runs with `RUSTC_WORKSPACE_WRAPPER=clippy-driver` and `CLIPPY_ARGS` (what
//! `cargo clippy -- -D warnings` sets), and every later cargo step gets exactly the same
//! variables, so nothing is rebuilt between the build, the test run and the doc tests.

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::emulator;
use crate::paths::Paths;
use crate::policy_tools;
use crate::process::{self, describe, failure_code, probe, run_status, secs};

/// Separator `cargo clippy` puts after each argument in `CLIPPY_ARGS`.
const CLIPPY_ARG_SEPARATOR: &str = "__CLIPPY_HACKERY__";
/// The arguments `cargo clippy -- ...` would pass to clippy-driver.
const CLIPPY_ARGS: &[&str] = &["-D", "warnings"];

/// The build environment shared by every cargo step of a test run.
#[derive(Debug, Clone)]
pub struct ClippyBuild {
    /// Path of `clippy-driver`.
    driver: PathBuf,
    /// `CLIPPY_ARGS` in cargo-clippy's encoding.
    clippy_args: String,
}

impl ClippyBuild {
    /// Finds `clippy-driver` next to the running cargo (`$CARGO`), else through
    /// `rustup which clippy-driver`, else on `PATH`.
    pub fn discover() -> Result<Self> {
        let beside_cargo = env::var_os("CARGO").and_then(|cargo| {
            let dir = PathBuf::from(cargo).parent()?.to_path_buf();
            Some(dir.join(format!("clippy-driver{}", env::consts::EXE_SUFFIX)))
        });
        let from_rustup = || {
            let output = Command::new("rustup").args(["which", "clippy-driver"]).output().ok()?;
            let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            (output.status.success() && path.is_file()).then_some(path)
        };
        let driver = beside_cargo
            .filter(|path| path.is_file())
            .or_else(from_rustup)
            .or_else(|| process::which("clippy-driver"))
            .context("clippy-driver not found: install it with `rustup component add clippy`")?;
        Ok(Self { driver, clippy_args: encode_clippy_args(CLIPPY_ARGS) })
    }

    /// Sets the wrapper variables on `cmd`. Every cargo step of the run must get them: they
    /// are part of the build fingerprint, and a step without them would rebuild the workspace.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("RUSTC_WORKSPACE_WRAPPER", &self.driver).env("CLIPPY_ARGS", &self.clippy_args);
    }
}

/// The one build of a test run: `cargo build --workspace --all-targets` with the clippy
/// wrapper. `cargo build --all-targets` compiles exactly the test units `cargo test --no-run`
/// would (same profile, same feature unification: dev-dependencies included) *and* the normal
/// binaries, which the two-account suites run (`target/debug/escrow-sync`). The demo does not
/// share it: it builds only the binary (`demo::demo_build`), so a newcomer's first command
/// does not compile every test target.
pub fn workspace_build(paths: &Paths, clippy: &ClippyBuild) -> Command {
    let mut cmd = process::cargo(paths);
    clippy.apply(&mut cmd);
    cmd.args(["build", "--workspace", "--all-targets"]);
    cmd
}

/// Encodes arguments the way `cargo clippy` does: each followed by [`CLIPPY_ARG_SEPARATOR`].
fn encode_clippy_args(args: &[&str]) -> String {
    args.iter().map(|arg| format!("{arg}{CLIPPY_ARG_SEPARATOR}")).collect()
}

/// Where fault tests record how many faults they injected, under the target directory.
const FAULT_COUNTS_DIR: &str = "fault-counts";

/// Sums the counts fault tests recorded in `dir`: one file per test holding
/// `faults injected: <test>: <n> (<kinds>)`. Returns the sum and how many files had a count.
fn sum_fault_counts(dir: &std::path::Path) -> (u64, usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return (0, 0) };
    let mut total = 0;
    let mut files = 0;
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if let Some(n) = text.lines().find_map(parse_fault_count) {
            total += n;
            files += 1;
        }
    }
    (total, files)
}

/// The `<n>` of `faults injected: <test>: <n> (<kinds>)`.
fn parse_fault_count(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("faults injected: ")?;
    let (_, after) = rest.rsplit_once(": ")?;
    after.split_whitespace().next()?.parse().ok()
}

/// The outcome of one step, for the summary.
#[derive(Debug)]
struct Step {
    /// What ran.
    name: String,
    /// `None` when skipped, else whether it passed.
    passed: Option<bool>,
    /// Why it was skipped, or how long it took.
    note: String,
}

/// The steps run so far.
#[derive(Debug, Default)]
struct Steps(Vec<Step>);

impl Steps {
    /// Prints a header, runs `cmd` with inherited stdio, records and returns its status.
    fn run(&mut self, name: &str, cmd: &mut Command) -> Result<ExitStatus> {
        println!("\n==> {name}: {}", describe(cmd));
        let started = Instant::now();
        let status = run_status(cmd)?;
        self.record(name, status, started);
        Ok(status)
    }

    /// Like [`Steps::run`], but keeps the output unless the step fails; on success prints only
    /// the last line and how many warnings it had. For chatty tools (cargo-deny prints a whole
    /// inclusion graph per duplicate-version warning).
    fn run_quiet(&mut self, name: &str, cmd: &mut Command) -> Result<ExitStatus> {
        println!("\n==> {name}: {}", describe(cmd));
        let started = Instant::now();
        let output = cmd.output().with_context(|| format!("could not run `{}`", describe(cmd)))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let text = format!("{stdout}{stderr}");
        if output.status.success() {
            let warnings = text.lines().filter(|l| l.starts_with("warning")).count();
            let last_line =
                |s: &str| s.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_owned);
            let last = last_line(&stdout).or_else(|| last_line(&stderr));
            println!("{}", last.as_deref().unwrap_or("(no output)"));
            if warnings > 0 {
                println!("({warnings} warnings hidden; run the command above to see them)");
            }
        } else {
            print!("{text}");
        }
        self.record(name, output.status, started);
        Ok(output.status)
    }

    /// Records the outcome of a step that started at `started`.
    fn record(&mut self, name: &str, status: ExitStatus, started: Instant) {
        self.0.push(Step {
            name: name.to_owned(),
            passed: Some(status.success()),
            note: if status.success() {
                secs(started.elapsed())
            } else {
                format!("{} after {}", status, secs(started.elapsed()))
            },
        });
    }

    /// Records a skipped step and prints why.
    fn skip(&mut self, name: &str, why: &str) {
        println!("\n==> {name}: skipped ({why})");
        self.0.push(Step { name: name.to_owned(), passed: None, note: format!("skipped: {why}") });
    }

    /// Prints one line per step.
    fn summary(&self, total: std::time::Duration) {
        println!("\n==> summary ({})", secs(total));
        for step in &self.0 {
            let mark = match step.passed {
                Some(true) => "ok     ",
                Some(false) => "FAILED ",
                None => "skipped",
            };
            println!("  {mark} {:<14} {}", step.name, step.note);
        }
    }

    /// True when no recorded step failed.
    fn all_passed(&self) -> bool {
        self.0.iter().all(|step| step.passed != Some(false))
    }
}

/// `cargo check` of the binary built for S3 alone: every other service
/// feature off.
const ONE_SERVICE_CHECK: &[&str] =
    &["check", "-p", "escrow-sync-cli", "--no-default-features", "--features", "s3"];

/// `cargo xtask test [-- ARGS]`: build once (with clippy), check formatting, cargo-deny, start
/// the emulator, run every test with `ARGS`, run the doc tests, stop the emulator.
///
/// Exits with the test runner's status if the tests failed, 1 if another step failed, else 0.
/// A failed build stops the run (there is nothing to test).
pub fn test(paths: &Paths, extra: Vec<String>) -> Result<ExitCode> {
    let started = Instant::now();
    let clippy = ClippyBuild::discover()?;
    let mut steps = Steps::default();
    // Every cargo step that compiles gets the same wrapper environment.
    let cargo = || {
        let mut cmd = process::cargo(paths);
        clippy.apply(&mut cmd);
        cmd
    };

    // One compile serves clippy, the tests and the binary (see `workspace_build`).
    let build = steps.run("build+clippy", &mut workspace_build(paths, &clippy))?;
    if !build.success() {
        steps.summary(started.elapsed());
        eprintln!("xtask: the build (or clippy) failed; no tests were run");
        return Ok(ExitCode::from(failure_code(build)));
    }

    steps.run("fmt", process::cargo(paths).args(["fmt", "--all", "--", "--check"]))?;

    // The binary with one service only still builds, clippy-clean, without
    // the other services' SDKs (the facade's and the binary's features).
    steps.run("features", cargo().args(ONE_SERVICE_CHECK))?;

    if probe(process::cargo(paths).args(["deny", "--version"])) {
        steps.run_quiet(
            "deny",
            process::cargo(paths).args(["deny", "check", "licenses", "bans", "sources"]),
        )?;
    } else {
        steps.skip("deny", "cargo-deny is not installed; `cargo install --locked cargo-deny`");
    }

    // The pinned policy checkers (once), then cfn-lint on both templates of the demo's config;
    // the reference data goes to tests/policy_reference.rs through the environment.
    println!("\n==> policy tools");
    let tools_started = Instant::now();
    let tools = policy_tools::ensure_installed(paths)?;
    steps.0.push(Step {
        name: "policy tools".to_owned(),
        passed: Some(true),
        note: secs(tools_started.elapsed()),
    });
    steps.run("cfn-lint", &mut policy_tools::lint_templates(&tools, &paths.escrow_sync_bin())?)?;

    let tests_status = {
        println!("\n==> emulator");
        let emulator_started = Instant::now();
        let guard = emulator::Guard::start(paths)?;
        steps.0.push(Step {
            name: "emulator".to_owned(),
            passed: Some(true),
            note: secs(emulator_started.elapsed()),
        });
        let endpoint = guard.emulator().endpoint.clone();
        let with_emulator = |mut cmd: Command| {
            emulator::apply_client_env(&mut cmd, paths, &endpoint);
            cmd
        };

        let mut runner = cargo();
        if probe(cargo().args(["nextest", "--version"])) {
            runner.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        } else {
            println!("\nxtask: cargo-nextest not found; running the tests with cargo test");
            runner.args(["test", "--workspace", "--no-fail-fast"]);
        }
        runner.args(&extra);
        runner.env(policy_tools::REFERENCE_ENV, &tools.reference);
        // Each fault test writes its count here (escrow_sync_testkit::record_faults).
        let counts_dir = paths.target.join(FAULT_COUNTS_DIR);
        match std::fs::remove_dir_all(&counts_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("could not clear {}", counts_dir.display()));
            }
            _ => {}
        }
        let tests = steps.run("tests", &mut with_emulator(runner))?;
        let (faults, files) = sum_fault_counts(&counts_dir);
        println!("\nfaults injected in all: {faults} (recorded by {files} fault tests)");

        let mut doc = cargo();
        doc.args(["test", "--workspace", "--doc"]);
        steps.run("doc tests", &mut with_emulator(doc))?;
        tests
        // The guard stops the emulator here, also when a step above returned an error or
        // panicked.
    };

    steps.summary(started.elapsed());
    if !tests_status.success() {
        return Ok(ExitCode::from(failure_code(tests_status)));
    }
    if !steps.all_passed() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clippy_args_use_cargo_clippy_encoding() {
        assert_eq!(
            encode_clippy_args(&["-D", "warnings"]),
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
        );
        assert_eq!(encode_clippy_args(&[]), "");
    }

    #[test]
    fn fault_counts_are_summed_from_one_file_per_test() {
        assert_eq!(
            parse_fault_count("faults injected: s3::soak: 1234 (transient 3, throttle 4)"),
            Some(1234)
        );
        assert_eq!(parse_fault_count("something else"), None);
        let dir = std::env::temp_dir().join(format!("xtask-fault-counts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), "faults injected: a: 12 (transient 12)\n").unwrap();
        std::fs::write(dir.join("b.txt"), "faults injected: b::c: 30 (throttle 30)\n").unwrap();
        std::fs::write(dir.join("junk.txt"), "not a count\n").unwrap();
        assert_eq!(sum_fault_counts(&dir), (42, 2));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(sum_fault_counts(&dir), (0, 0));
    }
}
