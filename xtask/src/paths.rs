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
    pub fn discover() -> Result<Self> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
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
                    env::current_dir()
                        .context("reading the current directory")?
                        .join(dir)
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
        self.target
            .join("debug")
            .join(format!("escrow-sync{}", env::consts::EXE_SUFFIX))
    }

    /// `path` shown relative to the workspace root when it is inside it, for shorter messages.
    pub fn display(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}
