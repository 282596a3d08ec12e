//! The policy tools (issue 17, point 7): pinned PyPI packages in a virtual environment under
//! `<target>/policy-tools`, so that what the emulator cannot tell about the generated policies
//! is checked against AWS's own data:
//!
//! - [`PARLIAMENT_REQUIREMENT`]: only for the copy of the AWS Service Authorization Reference it
//!   ships (`parliament/iam_definition.json`: every service's actions, resource types and
//!   condition keys). `tests/policy_reference.rs` holds every generated statement against it
//!   and finds it through [`REFERENCE_ENV`], which `cargo xtask test` sets.
//! - [`CFN_LINT_REQUIREMENT`]: cfn-lint, run on both CloudFormation templates of the demo's
//!   config (`escrow-sync policy --output cloudformation`) as a step of `cargo xtask test`.
//!
//! Installed once (a marker records the pins; a changed pin reinstalls); afterwards each step
//! takes a few seconds.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::paths::Paths;
use crate::process;

/// The pinned parliament release: its `iam_definition.json` is the reference data.
pub const PARLIAMENT_REQUIREMENT: &str = "parliament==1.6.4";
/// The pinned cfn-lint release.
pub const CFN_LINT_REQUIREMENT: &str = "cfn-lint==1.58.0";
/// The variable that tells `tests/policy_reference.rs` where the reference data is.
pub const REFERENCE_ENV: &str = "ESCROW_SYNC_IAM_REFERENCE";

/// Splits `policy --output cloudformation` into its two templates and runs cfn-lint on them
/// (see the file).
const LINT_SCRIPT: &str = include_str!("lint_templates.py");

/// The installed tools.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `<target>/policy-tools`.
    pub dir: PathBuf,
    /// The venv's Python.
    pub python: PathBuf,
    /// parliament's copy of the Service Authorization Reference.
    pub reference: PathBuf,
}

/// The marker recording which pins the venv holds.
fn marker(dir: &Path) -> PathBuf {
    dir.join("installed-requirements")
}

/// The pins, one a line, as the marker records them.
fn pins() -> String {
    format!("{PARLIAMENT_REQUIREMENT}\n{CFN_LINT_REQUIREMENT}\n")
}

/// `parliament/iam_definition.json` in the venv's site-packages, if there.
fn locate_reference(venv: &Path) -> Option<PathBuf> {
    fs::read_dir(venv.join("lib"))
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/parliament/iam_definition.json"))
        .find(|p| p.is_file())
}

/// Creates `<target>/policy-tools/venv` and installs the pins unless the marker says they are
/// there. parliament is installed without its dependencies (boto3 and friends): only its data
/// file is used.
pub fn ensure_installed(paths: &Paths) -> Result<Tools> {
    let dir = paths.target.join("policy-tools");
    let venv = dir.join("venv");
    let python = venv.join("bin").join("python");
    let cfn_lint = venv.join("bin").join("cfn-lint");
    let installed = fs::read_to_string(marker(&dir)).is_ok_and(|m| m == pins());
    if installed
        && cfn_lint.is_file()
        && let Some(reference) = locate_reference(&venv)
    {
        return Ok(Tools { dir, python, reference });
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::paths::ensure_venv(
        paths,
        "policy tools",
        &venv,
        &python,
        "the policy tools need Python 3 with the venv module on PATH",
    )?;
    let pip_log = dir.join("pip.log");
    println!(
        "policy tools: installing {PARLIAMENT_REQUIREMENT} (data only) and \
         {CFN_LINT_REQUIREMENT} into {} (once; pip log {})",
        paths.display(&venv),
        paths.display(&pip_log)
    );
    let started = Instant::now();
    let log = File::create(&pip_log).with_context(|| format!("creating {}", pip_log.display()))?;
    for args in [&["--no-deps", PARLIAMENT_REQUIREMENT][..], &[CFN_LINT_REQUIREMENT][..]] {
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the pip log handle")?)
            .stderr(log.try_clone().context("duplicating the pip log handle")?)
            .status()
            .context("running pip in the policy tools' venv")?;
        if !status.success() {
            bail!("installing {} failed ({status}); see {}", args.join(" "), pip_log.display());
        }
    }
    let Some(reference) = locate_reference(&venv) else {
        bail!(
            "{PARLIAMENT_REQUIREMENT} installed, but {} has no parliament/iam_definition.json",
            venv.display()
        );
    };
    if !cfn_lint.is_file() {
        bail!("{CFN_LINT_REQUIREMENT} installed, but {} is missing", cfn_lint.display());
    }
    fs::write(marker(&dir), pins())
        .with_context(|| format!("writing {}", marker(&dir).display()))?;
    println!("policy tools: installed in {}", process::secs(started.elapsed()));
    Ok(Tools { dir, python, reference })
}

/// The command that lints both templates of the demo's config: writes the config under the
/// tools' directory, and the script runs `escrow-sync policy --output cloudformation` with
/// `bin`, splits the two templates into files and runs cfn-lint on each.
pub fn lint_templates(tools: &Tools, bin: &Path) -> Result<Command> {
    let config = tools.dir.join("demo.toml");
    fs::write(&config, crate::demo::DEMO_CONFIG)
        .with_context(|| format!("writing {}", config.display()))?;
    let script = tools.dir.join("lint_templates.py");
    fs::write(&script, LINT_SCRIPT).with_context(|| format!("writing {}", script.display()))?;
    let mut cmd = Command::new(&tools.python);
    cmd.arg(&script).arg(bin).arg(&config).arg(&tools.dir).current_dir(&tools.dir);
    // `policy` contacts nothing; the region is the config's.
    cmd.env_remove("AWS_PROFILE").env_remove("AWS_ENDPOINT_URL");
    Ok(cmd)
}

/// `cargo xtask policy-tools`: installs the tools, prints where the reference data is (for
/// running `tests/policy_reference.rs` alone) and lints the demo's templates with the debug
/// binary when it is built.
pub fn command(paths: &Paths) -> Result<std::process::ExitCode> {
    let tools = ensure_installed(paths)?;
    println!("export {REFERENCE_ENV}='{}'", tools.reference.display());
    let bin = paths.escrow_sync_bin();
    if !bin.is_file() {
        println!(
            "policy tools: {} is not built; `cargo build -p escrow-sync-cli` then run this \
             again to lint the templates",
            paths.display(&bin)
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let status = process::run_status(&mut lint_templates(&tools, &bin)?)?;
    Ok(process::exit_code(status))
}
