//! Running child processes: cargo, probes, and lookups on `PATH`.

use std::env;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus, Stdio};

use anyhow::{Context, Result};

use crate::paths::Paths;

/// A `cargo` command run from the workspace root.
///
/// Uses `$CARGO` (set by `cargo run`, the toolchain's own cargo) so that every child runs the
/// same toolchain as the one that built xtask; falls back to `cargo` on `PATH`.
pub fn cargo(paths: &Paths) -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&paths.root);
    cmd
}

/// Runs `cmd` with inherited stdio and returns its status; an error only if it cannot start.
pub fn run_status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status().with_context(|| format!("could not run `{}`", describe(cmd)))
}

/// True when `cmd` runs and exits 0; its output is discarded. Used to probe for tools.
pub fn probe(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The exit code to report for a child's status: its own code, or 1 if it died by a signal.
pub fn exit_code(status: ExitStatus) -> ExitCode {
    if status.success() { ExitCode::SUCCESS } else { ExitCode::from(failure_code(status)) }
}

/// A non-zero exit code for a failed child status (1 when killed by a signal or out of range).
pub fn failure_code(status: ExitStatus) -> u8 {
    status.code().and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0).unwrap_or(1)
}

/// `cmd` as a shell-like string, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first executable called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(format!("{name}{}", env::consts::EXE_SUFFIX)))
        .find(|candidate| candidate.is_file())
}

/// Human-readable seconds for step timings.
pub fn secs(duration: std::time::Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}
