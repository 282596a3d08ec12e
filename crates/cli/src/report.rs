//! `--report FILE.md|FILE.html`: the human report of a command, checked
//! before the command starts (a wrong extension or a missing directory is
//! bad input: exit 2, nothing done) and written when it ends.

use std::path::PathBuf;

use escrow_sync::Error;
use escrow_sync::report::{HumanReport, ReportFormat};

use crate::ReportPath;

/// Where a report goes, checked.
pub(crate) type Target = Option<(PathBuf, ReportFormat)>;

/// Checks `--report` before anything runs.
pub(crate) fn check(report: &ReportPath) -> Result<Target, Error> {
    let Some(path) = &report.path else { return Ok(None) };
    let format = ReportFormat::of_path(path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir
        && !dir.is_dir()
    {
        return Err(Error::invalid_config(format!(
            "--report {}: the directory {} does not exist: create it or name another file",
            path.display(),
            dir.display()
        )));
    }
    Ok(Some((path.clone(), format)))
}

/// Writes the report (redacted, as everything this binary prints); a
/// failure is said on stderr and turns an exit code of 0 into 1.
pub(crate) fn write(target: &Target, report: impl FnOnce() -> HumanReport, code: u8) -> u8 {
    let Some((path, format)) = target else { return code };
    let text = crate::redact::redact(&report().render(*format));
    match std::fs::write(path, text) {
        Ok(()) => code,
        Err(e) => {
            eprintln!("error: the report {} was not written: {e}", path.display());
            code.max(crate::output::exit::ITEMS_FAILED)
        }
    }
}
