//! `escrow-sync generate`: shell completions and man pages, written from the
//! command line's own clap definition, so they never drift from the flags.
//! Hidden from `--help`: it is for packagers (`cargo xtask dist` runs it),
//! not for operators.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::Cli;
use crate::output::exit;

/// Arguments of `generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// What to generate.
    #[command(subcommand)]
    pub what: Generate,
}

/// What `generate` writes.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Generate {
    /// Shell completion scripts, one file per shell.
    Completions {
        /// The shells (bash, zsh, fish, powershell, elvish).
        #[arg(required = true, value_enum)]
        shells: Vec<Shell>,
        /// The directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Man pages in roff: `escrow-sync.1` and one `escrow-sync-<command>.1`
    /// per command.
    Man {
        /// The directory to write into (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Runs `generate`: writes the files, prints each path written on stdout;
/// returns the exit code (2 when a file cannot be written).
pub fn run(args: &GenerateArgs) -> u8 {
    match write(&args.what) {
        Ok(paths) => {
            for path in paths {
                println!("{}", path.display());
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FATAL
        }
    }
}

/// Writes what `what` asks for; returns the paths written.
pub fn write(what: &Generate) -> Result<Vec<PathBuf>, String> {
    let name = Cli::command().get_name().to_owned();
    match what {
        Generate::Completions { shells, dir } => {
            create_dir(dir)?;
            shells
                .iter()
                .map(|shell| {
                    clap_complete::generate_to(*shell, &mut Cli::command(), &name, dir).map_err(
                        |e| {
                            format!(
                                "cannot write the {shell} completions into {}: {e}",
                                dir.display()
                            )
                        },
                    )
                })
                .collect()
        }
        Generate::Man { dir } => {
            create_dir(dir)?;
            let mut cmd = Cli::command().disable_help_subcommand(true);
            cmd.build();
            let mut written = Vec::new();
            man_pages(&cmd, dir, &mut written)
                .map_err(|e| format!("cannot write the man pages into {}: {e}", dir.display()))?;
            Ok(written)
        }
    }
}

/// Writes the man page of `cmd` and of each of its visible subcommands
/// (as `clap_mangen::generate_to` does), recording each path.
fn man_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    written.push(clap_mangen::Man::new(cmd.clone()).generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, written)?;
    }
    Ok(())
}

/// Creates `dir` and its parents.
fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}
