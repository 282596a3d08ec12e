//! `cargo xtask dist`: what a package or a release ships, in `target/dist/`.
//!
//! Builds the release binary (`cargo build --release -p escrow-sync-cli --locked`: the binary
//! alone, exactly Cargo.lock's versions), copies it to `target/dist/escrow-sync`, and has that
//! binary write its shell completions and man pages (the hidden `escrow-sync generate`), so
//! they come from the very clap definition that ships. xtask itself stays std + anyhow.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::paths::Paths;
use crate::process::{self, describe, run_status, secs};

/// The shells `escrow-sync generate completions` writes for (clap_complete's five).
pub const SHELLS: &[&str] = &["bash", "zsh", "fish", "powershell", "elvish"];

/// The release build of the binary alone.
pub const RELEASE_BUILD: &[&str] = &["build", "--release", "-p", "escrow-sync-cli", "--locked"];

/// `cargo xtask dist`: release build, then binary, completions and man pages in `target/dist/`.
pub fn dist(paths: &Paths) -> Result<ExitCode> {
    let started = Instant::now();
    let mut build = process::cargo(paths);
    build.args(RELEASE_BUILD);
    println!("==> {}", describe(&build));
    let status = run_status(&mut build)?;
    if !status.success() {
        eprintln!("xtask: the release build failed");
        return Ok(process::exit_code(status));
    }
    let built = started.elapsed();

    let dist = dist_dir(paths);
    // A fresh directory: nothing left over from an earlier version (a removed command's page).
    match fs::remove_dir_all(&dist) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("could not clear {}", dist.display()));
        }
        _ => {}
    }
    fs::create_dir_all(&dist).with_context(|| format!("could not create {}", dist.display()))?;
    let binary = dist.join(binary_name());
    let release = paths.target.join("release").join(binary_name());
    fs::copy(&release, &binary)
        .with_context(|| format!("could not copy {} to {}", release.display(), binary.display()))?;

    for mut cmd in generate_commands(&binary, &dist) {
        println!("==> {}", describe(&cmd));
        let output = cmd.output().with_context(|| format!("could not run `{}`", describe(&cmd)))?;
        if !output.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                describe(&cmd),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }

    println!("\nwrote {} (release build {}):", relative(paths, &dist), secs(built));
    for (path, size) in listing(&dist)? {
        println!("  {:>10}  {}", human_bytes(size), relative(paths, &path));
    }
    println!("({} in all)", secs(started.elapsed()));
    Ok(ExitCode::SUCCESS)
}

/// `<target>/dist`.
pub fn dist_dir(paths: &Paths) -> PathBuf {
    paths.target.join("dist")
}

/// The binary's file name on this platform.
fn binary_name() -> String {
    format!("escrow-sync{}", std::env::consts::EXE_SUFFIX)
}

/// The two `escrow-sync generate` runs: completions into `<dist>/completions`, man pages into
/// `<dist>/man/man1` (the layout `MANPATH` expects).
fn generate_commands(binary: &Path, dist: &Path) -> Vec<Command> {
    let mut completions = Command::new(binary);
    completions.args(["generate", "completions"]).args(SHELLS);
    completions.arg("--dir").arg(dist.join("completions"));
    let mut man = Command::new(binary);
    man.args(["generate", "man", "--dir"]).arg(dist.join("man").join("man1"));
    vec![completions, man]
}

/// Every file under `dir` with its size, sorted by path.
fn listing(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `path` relative to the workspace root when it is under it.
fn relative(paths: &Paths, path: &Path) -> String {
    path.strip_prefix(&paths.root).unwrap_or(path).display().to_string()
}

/// Byte counts for people: `812 B`, `29.8 KiB`, `41.2 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program and arguments of `cmd`, as strings.
    fn argv(cmd: &Command) -> Vec<String> {
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_release_build_is_the_binary_alone_and_locked() {
        assert_eq!(RELEASE_BUILD.join(" "), "build --release -p escrow-sync-cli --locked");
    }

    #[test]
    fn generate_runs_the_copied_binary_for_every_shell_and_the_man_pages() {
        let dist = Path::new("/t/dist");
        let binary = dist.join("escrow-sync");
        let cmds = generate_commands(&binary, dist);
        assert_eq!(
            argv(&cmds[0]),
            [
                "/t/dist/escrow-sync",
                "generate",
                "completions",
                "bash",
                "zsh",
                "fish",
                "powershell",
                "elvish",
                "--dir",
                "/t/dist/completions"
            ]
        );
        assert_eq!(
            argv(&cmds[1]),
            ["/t/dist/escrow-sync", "generate", "man", "--dir", "/t/dist/man/man1"]
        );
    }

    #[test]
    fn listing_walks_subdirectories_with_sizes() {
        let dir = std::env::temp_dir().join(format!("xtask-dist-listing-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("man/man1")).unwrap();
        fs::write(dir.join("escrow-sync"), b"12345").unwrap();
        fs::write(dir.join("man/man1/escrow-sync.1"), b"12").unwrap();
        let got = listing(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, [(dir.join("escrow-sync"), 5), (dir.join("man/man1/escrow-sync.1"), 2)]);
        assert_eq!(human_bytes(812), "812 B");
        assert_eq!(human_bytes(30_522), "29.8 KiB");
        assert_eq!(human_bytes(43_200_000), "41.2 MiB");
    }
}
