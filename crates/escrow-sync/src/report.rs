//! Human reports (`--report FILE.md|FILE.html`) of a run, a verify, an
//! audit, a status or a drill: to attach to a ticket or an audit. One
//! [`HumanReport`] per command: who ran it and when, a table of the jobs,
//! the RPO achieved where known, each finding with what to do about it.
//! [`HumanReport::markdown`] and [`HumanReport::html`] render it; the HTML
//! is one self-contained file (inline style, no script, nothing fetched).

use crate::doc::RunInfo;
use crate::runner::JobOutcome;
use crate::status::StatusReport;
use escrow_sync_core::Mode;

/// The formats of a report file, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportFormat {
    /// `.md`
    Markdown,
    /// `.html` or `.htm`
    Html,
}

impl ReportFormat {
    /// The format a file name asks for, or an error naming the fix.
    pub fn of_path(path: &std::path::Path) -> Result<Self, crate::Error> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("md" | "markdown") => Ok(ReportFormat::Markdown),
            Some("html" | "htm") => Ok(ReportFormat::Html),
            _ => Err(crate::Error::invalid_config(format!(
                "--report {}: name a .md (Markdown) or .html (one self-contained page) file",
                path.display()
            ))),
        }
    }
}

/// One finding in a report, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportFinding {
    /// The job (or the audited account).
    pub job: String,
    /// The finding's kind (`stale`, `mass-change`, `missing`, an audit
    /// check...).
    pub kind: String,
    /// The resource concerned (a key, a snapshot, a bucket).
    pub resource: String,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

/// A command's human report.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HumanReport {
    /// The title (`escrow-sync run`, ...).
    pub title: String,
    /// Who ran it, when.
    pub info: RunInfo,
    /// The exit code it came to.
    pub exit_code: u8,
    /// The job table's column names.
    pub columns: Vec<String>,
    /// The job table's rows.
    pub rows: Vec<Vec<String>>,
    /// Every finding.
    pub findings: Vec<ReportFinding>,
    /// Errors and warnings worth reading.
    pub notes: Vec<String>,
}

/// What to do about a finding of `kind`.
pub fn fix_for(kind: &str) -> &'static str {
    match kind {
        crate::status::STALE => {
            "run the job (see its last run's failures and errors) until a run finishes it clean; \
             if runs stopped, check the scheduler, the escrow credentials and the lease"
        }
        escrow_sync_core::MASS_CHANGE => {
            "check the primary for a mass rewrite or encryption (an attack looks like this); \
             when the change is legitimate, run again with --accept-mass-change"
        }
        "missing" => {
            "run the job again; if the item stays missing, check the escrow bucket's policy and lifecycle rules"
        }
        "changed" | "different" | "mismatch" => {
            "run the job again; if escrow still differs, compare the versions escrow keeps \
             before trusting either side"
        }
        "unprotected" => {
            "set the job's object_lock or lock (or the escrow kms_key_id) and run again: each run \
             locks copies without a lock and renews those whose lock ends within \
             renew_within_days; a lapsed lock means runs stopped or the retention ledger was \
             removed, so find out why; escrow copies without protection can be deleted by an \
             escrow insider"
        }
        "prune-limit" => {
            "look at why so many copies would go; prune with --accept-mass-delete only if that is intended"
        }
        _ => "read the problem and the documentation (docs/recovery.md, docs/operations.md)",
    }
}

/// A byte count for people (`4.0 KiB`, `1.2 GiB`), as every report and
/// the binary's text output give it.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn age(seconds: Option<u64>) -> String {
    match seconds {
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
        None => "none".into(),
    }
}

impl HumanReport {
    fn new(title: &str, info: &RunInfo, exit_code: u8, columns: &[&str]) -> Self {
        HumanReport {
            title: title.to_string(),
            info: info.finished(),
            exit_code,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            findings: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// With the config's protection warnings among the notes (one line
    /// each, `warning: <job>: ...`).
    pub fn with_protection_warnings(mut self, warnings: &[crate::ProtectionWarning]) -> Self {
        self.notes.extend(warnings.iter().map(|w| format!("warning: {w}")));
        self
    }

    /// The report of a `plan`, `run` or `verify`.
    pub fn of_jobs(info: &RunInfo, mode: Mode, jobs: &[JobOutcome], exit_code: u8) -> Self {
        let command = match mode {
            Mode::Plan => "plan",
            Mode::Run => "run",
            Mode::Verify => "verify",
        };
        let mut report = HumanReport::new(
            &format!("escrow-sync {command}"),
            info,
            exit_code,
            &[
                "job",
                "kind",
                "outcome",
                "copied",
                "up to date",
                "failed",
                "bytes",
                "findings",
                "seconds",
            ],
        );
        for j in jobs {
            let Some(r) = &j.report else {
                report.rows.push(vec![j.name.clone(), j.kind.into(), "error".into()]);
                if let Some(e) = &j.error {
                    report.notes.push(format!("job {}: {}", j.name, e.chain()));
                }
                continue;
            };
            let findings = r.findings.len() as u64 + r.missing + r.different;
            let outcome = if j.error.is_some() {
                "error"
            } else if r.cancelled {
                "cancelled"
            } else if findings > 0 || r.held_back > 0 {
                "findings"
            } else if r.failed > 0 {
                "failed"
            } else {
                "ok"
            };
            report.rows.push(vec![
                j.name.clone(),
                j.kind.into(),
                outcome.into(),
                r.copied.to_string(),
                r.skipped.to_string(),
                r.failed.to_string(),
                human_bytes(r.bytes_copied),
                findings.to_string(),
                format!("{:.1}", r.elapsed.as_secs_f64()),
            ]);
            for d in &r.differences {
                let kind = match d.reason {
                    escrow_sync_core::CopyReason::Missing => "missing",
                    escrow_sync_core::CopyReason::Changed => "different",
                };
                if mode == Mode::Verify {
                    report.findings.push(ReportFinding {
                        job: j.name.clone(),
                        kind: kind.into(),
                        resource: d.key.clone(),
                        problem: format!("{kind} in escrow"),
                        fix: fix_for(kind).into(),
                    });
                }
            }
            for f in &r.findings {
                let kind = f.kind.clone().unwrap_or_else(|| "unprotected".into());
                report.findings.push(ReportFinding {
                    job: j.name.clone(),
                    fix: fix_for(&kind).into(),
                    kind,
                    resource: f.key.clone(),
                    problem: f.problem.clone(),
                });
            }
            for f in &r.failures {
                report.notes.push(format!("job {}: failed {}: {}", j.name, f.key, f.error));
            }
            report.notes.extend(r.warnings.iter().map(|w| format!("job {}: warning: {w}", j.name)));
            if let Some(e) = &j.error {
                report.notes.push(format!("job {}: {}", j.name, e.chain()));
            }
        }
        report
    }

    /// The report of a `status`: the RPO achieved per job.
    pub fn of_status(info: &RunInfo, status: &StatusReport, exit_code: u8) -> Self {
        let mut report = HumanReport::new(
            "escrow-sync status",
            info,
            exit_code,
            &["job", "kind", "last run", "outcome", "newest verified copy", "age (RPO)", "max age"],
        );
        for s in &status.jobs {
            report.rows.push(vec![
                s.name.clone(),
                s.kind.into(),
                s.last_run.as_ref().map(|r| r.finished_at.clone()).unwrap_or_else(|| "none".into()),
                s.last_run.as_ref().map(|r| r.outcome.as_str().into()).unwrap_or_default(),
                s.last_verified
                    .as_ref()
                    .map(|v| v.started_at.clone())
                    .unwrap_or_else(|| "none".into()),
                age(s.seconds_since_last_verified_copy),
                s.max_age_seconds.map(|m| age(Some(m))).unwrap_or_else(|| "-".into()),
            ]);
            for f in &s.findings {
                let kind = f.kind.clone().unwrap_or_default();
                report.findings.push(ReportFinding {
                    job: s.name.clone(),
                    fix: fix_for(&kind).into(),
                    kind,
                    resource: f.key.clone(),
                    problem: f.problem.clone(),
                });
            }
        }
        report.notes.extend(status.warnings.iter().cloned());
        report
    }

    /// The report of an `audit`.
    #[cfg(feature = "governance")]
    pub fn of_audit(info: &RunInfo, audited: &crate::governance::Audited, exit_code: u8) -> Self {
        let info = info.clone().with_accounts(Some(audited.escrow_account.clone()), None);
        let mut report =
            HumanReport::new("escrow-sync audit", &info, exit_code, &["severity", "findings"]);
        for level in ["high", "medium", "low"] {
            let n = audited.findings.iter().filter(|f| f.severity.as_str() == level).count();
            report.rows.push(vec![level.into(), n.to_string()]);
        }
        for f in &audited.findings {
            report.findings.push(ReportFinding {
                job: audited.escrow_account.clone(),
                kind: format!("{} {}", f.severity.as_str(), f.check),
                resource: f.resource.clone(),
                problem: f.problem.clone(),
                fix: f.fix.clone(),
            });
        }
        report
    }

    /// The report of a `restore` (a drill's verification and clean-up).
    pub fn of_restore(
        info: &RunInfo,
        restore: &crate::restore::RestoreReport,
        exit_code: u8,
    ) -> Self {
        let mut report = HumanReport::new(
            &format!("escrow-sync restore ({})", restore.mode),
            info,
            exit_code,
            &[
                "job",
                "kind",
                "target",
                "restored",
                "bytes",
                "already there",
                "failed",
                "verified",
                "cleaned up",
            ],
        );
        let drill = restore.drill.as_ref();
        report.rows.push(vec![
            restore.job.clone(),
            restore.kind.into(),
            restore.target.clone(),
            restore.restored.to_string(),
            human_bytes(restore.bytes),
            restore.already_there.to_string(),
            restore.failed.len().to_string(),
            drill.map(|d| d.verified.to_string()).unwrap_or_else(|| "-".into()),
            drill
                .map(|d| if d.cleaned_target { "yes" } else { "no" }.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
        for key in drill.map(|d| d.mismatched.as_slice()).unwrap_or_default() {
            report.findings.push(ReportFinding {
                job: restore.job.clone(),
                kind: "mismatch".into(),
                resource: key.clone(),
                problem: "the restored copy differs from escrow".into(),
                fix: fix_for("mismatch").into(),
            });
        }
        if let Some(e) = drill.and_then(|d| d.cleanup_error.as_ref()) {
            report.notes.push(format!("clean-up: {e}"));
        }
        report.notes.extend(restore.failed.iter().map(|f| format!("failed: {f}")));
        report.notes.extend(restore.notes.iter().cloned());
        report
    }

    fn head(&self) -> Vec<(&'static str, String)> {
        let i = &self.info;
        let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        vec![
            ("run id", i.run_id.clone()),
            ("started", i.started_at.clone()),
            ("finished", or_unknown(&i.finished_at)),
            ("escrow account", or_unknown(&i.escrow_account)),
            ("primary account", or_unknown(&i.primary_account)),
            ("tool version", crate::doc::TOOL_VERSION.to_string()),
            ("exit code", format!("{} ({})", self.exit_code, verdict_word(self.exit_code))),
        ]
    }

    /// The report in Markdown. Every text is escaped ([`md`]): keys and
    /// errors come from the primary, and none may become a heading, a link,
    /// markup or a code span of its own.
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let cell = md;
        let mut s = format!("# {}\n\n", self.title);
        for (k, v) in self.head() {
            let _ = writeln!(s, "- **{k}**: {}", cell(&v));
        }
        let _ = writeln!(s, "\n## Jobs\n");
        let _ = writeln!(s, "| {} |", self.columns.join(" | "));
        let _ = writeln!(s, "|{}", "---|".repeat(self.columns.len()));
        for row in &self.rows {
            let mut cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
            cells.resize(self.columns.len(), String::new());
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        let _ = writeln!(s, "\n## Findings\n");
        if self.findings.is_empty() {
            let _ = writeln!(s, "None.");
        }
        for f in &self.findings {
            let _ = writeln!(
                s,
                "- **{}** {} ({}): {}\n  - *What to do:* {}",
                cell(&f.kind),
                cell(&f.resource),
                cell(&f.job),
                cell(&f.problem),
                cell(&f.fix)
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\n## Notes\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {}", cell(n));
            }
        }
        s
    }

    /// The report as one self-contained HTML page.
    pub fn html(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let title = esc(&self.title);
        let _ = write!(
            s,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{title}</title><style>body{{font-family:sans-serif;margin:2em;}}\
             table{{border-collapse:collapse;}}td,th{{border:1px solid #999;padding:.3em .6em;\
             text-align:left;}}.bad{{color:#a00;}}</style></head><body>\n<h1>{title}</h1>\n<dl>"
        );
        for (k, v) in self.head() {
            let _ = write!(s, "<dt>{k}</dt><dd>{}</dd>", esc(&v));
        }
        let _ = write!(s, "</dl>\n<h2>Jobs</h2>\n<table><tr>");
        for c in &self.columns {
            let _ = write!(s, "<th>{}</th>", esc(c));
        }
        s.push_str("</tr>\n");
        for row in &self.rows {
            s.push_str("<tr>");
            for c in row {
                let _ = write!(s, "<td>{}</td>", esc(c));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</table>\n<h2>Findings</h2>\n");
        if self.findings.is_empty() {
            s.push_str("<p>None.</p>\n");
        } else {
            s.push_str("<ul>\n");
            for f in &self.findings {
                let _ = writeln!(
                    s,
                    "<li class=\"bad\"><b>{}</b> <code>{}</code> ({}): {}<br><i>What to do:</i> {}</li>",
                    esc(&f.kind),
                    esc(&f.resource),
                    esc(&f.job),
                    esc(&f.problem),
                    esc(&f.fix)
                );
            }
            s.push_str("</ul>\n");
        }
        if !self.notes.is_empty() {
            s.push_str("<h2>Notes</h2>\n<ul>\n");
            for n in &self.notes {
                let _ = writeln!(s, "<li>{}</li>", esc(n));
            }
            s.push_str("</ul>\n");
        }
        s.push_str("</body></html>\n");
        s
    }

    /// The report in `format`.
    pub fn render(&self, format: ReportFormat) -> String {
        match format {
            ReportFormat::Markdown => self.markdown(),
            ReportFormat::Html => self.html(),
        }
    }
}

/// `s` as literal Markdown text: control characters (line breaks
/// included, `\r` and U+2028/2029 too) become spaces, so nothing starts a
/// line of its own (where `#`, `-` or `1.` would mean something), and every
/// character with a meaning inside a line (`` \ ` * _ [ ] < > | ~ & ``) is
/// backslash-escaped: no emphasis, code span, link, HTML or table cell.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn verdict_word(code: u8) -> &'static str {
    match code {
        0 => "ok",
        1 => "failures",
        3 => "findings",
        _ => "error",
    }
}

/// `s` with HTML's special characters escaped (key names, problems and
/// errors come from the primary: nothing in them may become markup).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{JobStatus, StatusReport};

    fn stale_status() -> StatusReport {
        let job = JobStatus {
            name: "assets".into(),
            kind: "s3",
            last_run: None,
            last_verified: None,
            seconds_since_last_verified_copy: None,
            max_age_seconds: Some(60),
            findings: vec![
                escrow_sync_core::Finding::new("assets", "no verified copy: none recorded")
                    .with_kind(crate::status::STALE),
            ],
            shards: None,
            batch_job: None,
        };
        StatusReport { jobs: vec![job], warnings: vec!["skipped one".into()] }
    }

    #[test]
    fn markdown_has_the_head_the_table_and_each_finding_with_its_fix() {
        let info = RunInfo::start().with_accounts(Some("222222222222".into()), None);
        let md = HumanReport::of_status(&info, &stale_status(), 3).markdown();
        assert!(md.starts_with("# escrow-sync status\n"), "{md}");
        assert!(md.contains("- **escrow account**: 222222222222"), "{md}");
        assert!(md.contains("- **exit code**: 3 (findings)"), "{md}");
        assert!(md.contains("| job | kind | last run |"), "{md}");
        assert!(md.contains("| assets | s3 | none |"), "{md}");
        assert!(md.contains("- **stale** assets (assets): no verified copy"), "{md}");
        assert!(md.contains("*What to do:* run the job"), "{md}");
        assert!(md.contains("## Notes\n\n- skipped one"), "{md}");
    }

    #[test]
    fn markdown_gives_a_key_no_markup_of_its_own() {
        let mut report = HumanReport::of_status(&RunInfo::start(), &stale_status(), 3);
        report.findings[0].resource = "k\r# Findings\n\nNone.`[x](http://evil)`<b>\u{2028}".into();
        let text = report.markdown();
        let line = text.lines().find(|l| l.starts_with("- **stale**")).unwrap();
        assert!(line.contains("k # Findings  None.\\`\\[x\\](http://evil)\\`\\<b\\> "), "{line}");
        assert_eq!(text.matches("## Findings").count(), 1, "{text}");
        assert!(!text.contains('\r') && !text.contains('\u{2028}'));
    }

    #[test]
    fn html_is_self_contained_and_escapes_what_the_primary_named() {
        let mut report = HumanReport::of_status(&RunInfo::start(), &stale_status(), 3);
        report.findings[0].resource = "<script>alert(1)</script>".into();
        let html = report.html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing fetched");
        assert!(html.contains("<th>age (RPO)</th>"), "{html}");
    }

    #[test]
    fn the_format_comes_from_the_extension() {
        use std::path::Path;
        assert_eq!(ReportFormat::of_path(Path::new("r.md")).unwrap(), ReportFormat::Markdown);
        assert_eq!(ReportFormat::of_path(Path::new("r.HTML")).unwrap(), ReportFormat::Html);
        let err = ReportFormat::of_path(Path::new("r.pdf")).unwrap_err();
        assert!(err.to_string().contains(".md (Markdown) or .html"), "{err}");
    }
}
