//! `escrow-sync audit`: the isolation audit of the escrow account.
//!
//! Connects like `run` (the escrow identity, then the primary's reader role
//! assumed with it); when the primary cannot be reached the escrow is still
//! audited and that is a finding of its own. Exit 0 when nothing at or above
//! `--fail-on` (default high) is found, 3 otherwise, 2 for an invalid config
//! or an escrow that cannot be reached.

use std::io::Write;

use serde::Serialize;

use escrow_sync_aws::Connector;
use escrow_sync_core::Error;
use escrow_sync_governance::audit::{self, Auditor, Finding};

use crate::config::Config;
use crate::output::exit;
use crate::{AuditArgs, OutputFormat, Severity};

/// Exit code when a finding at or above `--fail-on` is found.
const FINDINGS: u8 = exit::DIFFERENCES;

fn level(s: Severity) -> audit::Severity {
    match s {
        Severity::Low => audit::Severity::Low,
        Severity::Medium => audit::Severity::Medium,
        Severity::High => audit::Severity::High,
    }
}

/// What the audit found, and of which account.
struct Audited {
    escrow_account: String,
    findings: Vec<Finding>,
}

async fn audit(args: &AuditArgs) -> Result<Audited, Error> {
    let config = Config::load(&args.config)?;
    let escrow_account = config.escrow_account();
    let connector = Connector::new();
    let escrow = connector.connect_escrow(&escrow_account).await?;
    let known = (!escrow.account_id().is_empty()).then(|| escrow.account_id().to_string());
    let inventory = crate::governance::inventory(&config, known.as_deref())?;
    let account = inventory.escrow_account.clone();
    let mut auditor = Auditor::from_session(&escrow, inventory);
    auditor = match connector.connect(&escrow_account, &config.primary_account()).await {
        Ok(sessions) => auditor.with_primary(&sessions.primary),
        Err(e) => auditor.with_primary_unreachable(e.chain()),
    };
    let findings = auditor.run().await?;
    Ok(Audited { escrow_account: account, findings })
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    ok: bool,
    command: &'static str,
    escrow_account: Option<&'a str>,
    findings: &'a [Finding],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    exit_code: u8,
}

/// The JSON document of `audit --output json`.
fn json(audited: Option<&Audited>, fatal: Option<&Error>, code: u8) -> String {
    let doc = JsonDoc {
        ok: code == exit::OK,
        command: "audit",
        escrow_account: audited.map(|a| a.escrow_account.as_str()),
        findings: audited.map(|a| a.findings.as_slice()).unwrap_or_default(),
        error: fatal.map(Error::chain),
        exit_code: code,
    };
    serde_json::to_string_pretty(&doc).expect("findings serialise")
}

/// The text report: one line per finding, then a summary.
fn text(audited: &Audited, fail_on: audit::Severity, code: u8) -> String {
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

/// Runs `audit`; returns the exit code.
pub(crate) async fn run(args: &AuditArgs) -> u8 {
    let fail_on = level(args.fail_on);
    let (audited, fatal) = match audit(args).await {
        Ok(a) => (Some(a), None),
        Err(e) => (None, Some(e)),
    };
    let code = match &audited {
        None => exit::FATAL,
        Some(a) if audit::fails(&a.findings, fail_on) => FINDINGS,
        Some(_) => exit::OK,
    };
    let mut stdout = std::io::stdout().lock();
    match args.output {
        OutputFormat::Json => {
            let _ = writeln!(stdout, "{}", json(audited.as_ref(), fatal.as_ref(), code));
        }
        OutputFormat::Text => {
            if let Some(a) = &audited {
                let _ = write!(stdout, "{}", text(a, fail_on, code));
            }
        }
    }
    if let Some(e) = &fatal {
        eprintln!("error: {}", e.chain());
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audited() -> Audited {
        Audited {
            escrow_account: "222222222222".into(),
            findings: vec![
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
        }
    }

    #[test]
    fn text_lists_each_finding_and_a_summary() {
        let t = text(&audited(), audit::Severity::High, 3);
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines[0], "HIGH    s3://esc: versioning is suspended (fix: enable it)");
        assert_eq!(lines[1], "MEDIUM  r: could not (fix: allow)");
        assert!(lines[2].contains("2 finding(s): 1 high, 1 medium, 0 low"), "{t}");
        assert!(lines[2].ends_with("exit 3"), "{t}");
        let clean = Audited { escrow_account: "222222222222".into(), findings: vec![] };
        assert_eq!(
            text(&clean, audit::Severity::High, 0),
            "audit of escrow account 222222222222: no findings\n"
        );
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_str(&json(Some(&audited()), None, 3)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["command"], "audit");
        assert_eq!(v["escrow_account"], "222222222222");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["findings"][0]["severity"], "high");
        assert_eq!(v["findings"][0]["check"], "s3.bucket.versioning");
        assert_eq!(v["findings"][0]["resource"], "s3://esc");
        assert!(v.get("error").is_none());
        let fatal = Error::invalid_config("[escrow] region is empty");
        let v: serde_json::Value = serde_json::from_str(&json(None, Some(&fatal), 2)).unwrap();
        assert_eq!(v["exit_code"], 2);
        assert_eq!(v["findings"], serde_json::json!([]));
        assert!(v["error"].as_str().unwrap().contains("region is empty"));
    }
}
