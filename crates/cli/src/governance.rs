//! `policy` and `audit`: the governance commands (the `governance`
//! feature).

use std::io::Write;

use escrow_sync::governance::{Audited, PolicyFormat as Policy};
use escrow_sync::governance_checks::audit;

use crate::output::exit;
use crate::{AuditArgs, OutputFormat, PolicyArgs, PolicyFormat, Severity, fatal, load};

/// `policy`: prints the document; returns the exit code.
pub(crate) fn policy(args: &PolicyArgs) -> u8 {
    let format = match args.format {
        PolicyFormat::Json => Policy::Json,
        PolicyFormat::Cloudformation => Policy::Cloudformation,
    };
    let started = escrow_sync::RunInfo::start();
    let policies = load(&args.config.path).and_then(|c| {
        let doc = escrow_sync::governance::policy(&c, format)?;
        // The head names the accounts the policies were written for.
        let inv = escrow_sync::governance::inventory(&c, None)?;
        Ok((doc, started.with_accounts(Some(inv.escrow_account), Some(inv.primary_account))))
    });
    match policies {
        Ok((doc, info)) => {
            let text = match args.format {
                PolicyFormat::Json => escrow_sync::doc::policy(&info, doc),
                PolicyFormat::Cloudformation => {
                    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
                }
            };
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            exit::OK
        }
        Err(e) => {
            fatal(&e);
            exit::FATAL
        }
    }
}

/// `audit`: prints the findings; exit 3 when one is at or above
/// `--fail-on`.
pub(crate) async fn audit(args: &AuditArgs) -> u8 {
    use escrow_sync::governance_checks::audit as checks;
    let target = match crate::report::check(&args.report) {
        Ok(t) => t,
        Err(e) => {
            fatal(&e);
            return exit::FATAL;
        }
    };
    let fail_on = match args.fail_on {
        Severity::Low => checks::Severity::Low,
        Severity::Medium => checks::Severity::Medium,
        Severity::High => checks::Severity::High,
    };
    let info = escrow_sync::RunInfo::start();
    let result = match load(&args.config.path) {
        Ok(config) => escrow_sync::governance::audit(&config).await,
        Err(e) => Err(e),
    };
    let code = match &result {
        Err(e) => crate::render::error_code(e),
        Ok(a) if checks::fails(&a.findings, fail_on) => exit::DIFFERENCES,
        Ok(_) => exit::OK,
    };
    let mut stdout = std::io::stdout().lock();
    match (args.output, &result) {
        (OutputFormat::Json, _) => {
            let doc =
                escrow_sync::doc::audit(&info, result.as_ref().ok(), result.as_ref().err(), code);
            let _ = writeln!(stdout, "{doc}");
        }
        (OutputFormat::Text, Ok(a)) => {
            let _ = write!(stdout, "{}", audit_text(a, fail_on, code));
        }
        (OutputFormat::Text, Err(_)) => {}
    }
    if let Err(e) = &result {
        eprintln!("error: {}", e.chain());
    }
    match &result {
        Ok(a) => crate::report::write(
            &target,
            || escrow_sync::report::HumanReport::of_audit(&info, a, code),
            code,
        ),
        Err(_) => code,
    }
}

/// The text report: one line per finding, then a summary.
fn audit_text(audited: &Audited, fail_on: audit::Severity, code: u8) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for f in &audited.findings {
        let _ = writeln!(s, "{:<6}  {}: {} (fix: {})", f.severity, f.resource, f.problem, f.fix);
    }
    let count =
        |level: audit::Severity| audited.findings.iter().filter(|f| f.severity == level).count();
    if audited.findings.is_empty() {
        let _ = writeln!(s, "audit of escrow account {}: no findings", audited.escrow_account);
    } else {
        let _ = writeln!(
            s,
            "audit of escrow account {}: {} finding(s): {} high, {} medium, {} low; failing on {} \
             and above: exit {code}",
            audited.escrow_account,
            audited.findings.len(),
            count(audit::Severity::High),
            count(audit::Severity::Medium),
            count(audit::Severity::Low),
            fail_on.as_str(),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use escrow_sync::governance_checks::audit::{self, Finding};

    fn audited() -> Audited {
        Audited::new(
            "222222222222",
            vec![
                Finding::high(
                    "s3.bucket.versioning",
                    "s3://esc",
                    "versioning is suspended",
                    "enable it",
                ),
                Finding::new(
                    audit::Severity::Medium,
                    "audit.access-denied",
                    "r",
                    "could not",
                    "allow",
                ),
            ],
        )
    }

    #[test]
    fn text_lists_each_finding_and_a_summary() {
        let t = audit_text(&audited(), audit::Severity::High, 3);
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines[0], "HIGH    s3://esc: versioning is suspended (fix: enable it)");
        assert_eq!(lines[1], "MEDIUM  r: could not (fix: allow)");
        assert!(lines[2].contains("2 finding(s): 1 high, 1 medium, 0 low"), "{t}");
        assert!(lines[2].ends_with("exit 3"), "{t}");
        let clean = Audited::new("222222222222", vec![]);
        assert_eq!(
            audit_text(&clean, audit::Severity::High, 0),
            "audit of escrow account 222222222222: no findings\n"
        );
    }
}
