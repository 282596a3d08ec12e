//! Where things live: the workspace root, the target directory and the emulator's files.

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The directories every command works from, independent of the current directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The workspace root (the parent of `xtask/`).
    pub root: PathBuf,
    /// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `<root>/target`.
    pub target: PathBuf,
}

impl Paths {
    /// Finds the workspace root from this crate's manifest directory and the target directory
    /// from `CARGO_TARGET_DIR` (relative values are taken from the current directory, as cargo
    /// does).
    ///
    /// The manifest directory is the one `cargo run` passes at run time, else the one this
    /// binary was compiled in: cargo may reuse a binary built in a copy of the workspace.
    pub fn discover() -> Result<Self> {
        let compiled = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let at_run_time = env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let is_xtask_dir = |dir: &PathBuf| {
            dir.file_name().is_some_and(|name| name == "xtask")
                && dir.join("Cargo.toml").is_file()
                && dir.parent().is_some_and(|root| root.join("Cargo.toml").is_file())
        };
        let manifest_dir = at_run_time.filter(is_xtask_dir).unwrap_or(compiled);
        let root = manifest_dir
            .parent()
            .with_context(|| format!("{} has no parent directory", manifest_dir.display()))?
            .to_path_buf();
        let target = match env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    env::current_dir().context("reading the current directory")?.join(dir)
                }
            }
            None => root.join("target"),
        };
        Ok(Self { root, target })
    }

    /// `<target>/emulator`: the emulator's virtual environment, log, pid and endpoint files.
    pub fn emulator_dir(&self) -> PathBuf {
        self.target.join("emulator")
    }

    /// The `escrow-sync` binary of a debug build.
    pub fn escrow_sync_bin(&self) -> PathBuf {
        self.target.join("debug").join(format!("escrow-sync{}", env::consts::EXE_SUFFIX))
    }

    /// `path` shown relative to the workspace root when it is inside it, for shorter messages.
    pub fn display(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }
}

/// Creates the Python virtual environment `venv` unless its interpreter
/// `python` is there already; `who` (e.g. `emulator`) prefixes the message
/// and `need` says what it is for when `python3` cannot be run.
pub fn ensure_venv(paths: &Paths, who: &str, venv: &Path, python: &Path, need: &str) -> Result<()> {
    if python.is_file() {
        return Ok(());
    }
    println!("{who}: creating {}", paths.display(venv));
    let status = std::process::Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .status()
        .with_context(|| format!("could not run `python3`: {need}"))?;
    if !status.success() {
        anyhow::bail!(
            "`python3 -m venv {}` failed ({status}); on Debian/Ubuntu install python3-venv",
            venv.display()
        );
    }
    Ok(())
}
