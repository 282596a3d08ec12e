//! Rendering of `restore`, `prune` and `audit` reports, and the exit code
//! of each verdict.

use serde::Serialize;

use escrow_sync::governance::Audited;
use escrow_sync::governance_checks::audit;
use escrow_sync::restore::RestoreReport;
use escrow_sync::{Error, PruneOutcome, Verdict};

use crate::output::exit;

/// The exit code of a verdict.
pub(crate) fn code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Ok => exit::OK,
        Verdict::Failed => exit::ITEMS_FAILED,
        Verdict::Findings => exit::DIFFERENCES,
        _ => exit::FATAL,
    }
}

/// The JSON document of a restore.
pub(crate) fn restore_json(result: &Result<RestoreReport, Error>, code: u8) -> String {
    let doc = serde_json::json!({
        "ok": code == exit::OK,
        "command": "restore",
        "restore": result.as_ref().ok(),
        "error": result.as_ref().err().map(Error::chain),
        "exit_code": code,
    });
    serde_json::to_string_pretty(&doc).expect("a report serialises")
}

/// The text report of a restore.
pub(crate) fn restore_text(r: &RestoreReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "restore job {} ({}): {} -> {} (account {})",
        r.job, r.kind, r.source, r.target, r.target_account
    );
    for n in &r.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    for f in &r.failed {
        let _ = writeln!(s, "  failed: {f}");
    }
    let verb = if r.mode == "dry-run" { "would restore" } else { "restored" };
    let _ = writeln!(
        s,
        "  {}: {verb} {} {} ({} bytes); {} already in the target",
        r.mode,
        r.restored,
        match r.kind {
            "s3" => "objects",
            "ec2" => "snapshots and AMIs",
            "rds" | "redshift" => "snapshots",
            _ => "items",
        },
        r.bytes,
        r.already_there
    );
    if let Some(d) = &r.drill {
        for m in &d.mismatched {
            let _ = writeln!(s, "  drill: MISMATCH {m}");
        }
        let what = match r.kind {
            "s3" => "objects identical to escrow byte for byte",
            "ec2" => "copies complete as the escrow copy (size; AMIs: block devices)",
            "rds" => "snapshot copies available with the escrow copy's storage and engine",
            "redshift" => "shares the recovery account sees, available",
            _ => "items identical to escrow's",
        };
        let cleaned = match (r.kind, d.cleaned_target) {
            ("s3", true) => format!("{} object versions and the drill's bucket", d.cleaned_items),
            ("s3", false) => format!("{} object versions", d.cleaned_items),
            ("ec2" | "rds", _) => format!("{} recovered copies", d.cleaned_items),
            ("redshift", _) => format!("{} shares (revoked)", d.cleaned_items),
            (_, true) => "the drill's table".to_string(),
            (_, false) => "nothing".to_string(),
        };
        let _ = writeln!(
            s,
            "  drill: {} {what}, {} not; cleaned up {cleaned}",
            d.verified,
            d.mismatched.len(),
        );
        if let Some(e) = &d.cleanup_error {
            let _ = writeln!(s, "  drill: CLEAN-UP INCOMPLETE: {e}");
        }
    }
    s
}

/// The JSON document of a prune.
pub(crate) fn prune_json(
    outcomes: &[PruneOutcome],
    apply: bool,
    fatal: Option<&Error>,
    code: u8,
) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        ok: bool,
        command: &'static str,
        apply: bool,
        jobs: &'a [PruneOutcome],
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        exit_code: u8,
    }
    let doc = Doc {
        ok: code == exit::OK,
        command: "prune",
        apply,
        jobs: outcomes,
        error: fatal.map(Error::chain),
        exit_code: code,
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The text summary of a prune.
pub(crate) fn prune_text(outcomes: &[PruneOutcome], apply: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let verb = if apply { "deleted" } else { "would delete" };
    for o in outcomes {
        let _ = writeln!(s, "{} ({}):", o.name, o.kind);
        for copy in &o.deleted {
            let _ = writeln!(
                s,
                "  {verb} {} (copy of {}, {}, created {})",
                copy.id, copy.source, copy.lineage, copy.created
            );
        }
        for k in &o.kept {
            let _ = writeln!(
                s,
                "  keep {} (copy of {}): {}",
                k.copy.id,
                k.copy.source,
                k.reasons.join(", ")
            );
        }
        for f in &o.failures {
            let _ = writeln!(s, "  failed to delete {}: {}", f.id, f.error);
        }
        for n in &o.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        for f in &o.findings {
            let _ = writeln!(s, "  finding ({}): {}", f.kind.as_deref().unwrap_or("-"), f.problem);
        }
        if let Some(e) = &o.error {
            let _ = writeln!(s, "  error: {e}");
        }
        let _ = writeln!(s, "  prune: {} kept, {} {verb}", o.kept.len(), o.deleted.len());
    }
    if outcomes.is_empty() {
        let _ = writeln!(s, "no [[ec2]], [[rds]] or [[redshift]] job: nothing to prune");
    }
    s
}

#[derive(Serialize)]
struct AuditDoc<'a> {
    ok: bool,
    command: &'static str,
    escrow_account: Option<&'a str>,
    findings: &'a [audit::Finding],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    exit_code: u8,
}

/// The JSON document of `audit --output json`.
pub(crate) fn audit_json(audited: Option<&Audited>, fatal: Option<&Error>, code: u8) -> String {
    let doc = AuditDoc {
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
pub(crate) fn audit_text(audited: &Audited, fail_on: audit::Severity, code: u8) -> String {
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

    #[test]
    fn json_has_the_documented_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&audit_json(Some(&audited()), None, 3)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["command"], "audit");
        assert_eq!(v["escrow_account"], "222222222222");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["findings"][0]["severity"], "high");
        assert_eq!(v["findings"][0]["check"], "s3.bucket.versioning");
        assert_eq!(v["findings"][0]["resource"], "s3://esc");
        assert!(v.get("error").is_none());
        let fatal = Error::invalid_config("[escrow] region is empty");
        let v: serde_json::Value =
            serde_json::from_str(&audit_json(None, Some(&fatal), 2)).unwrap();
        assert_eq!(v["exit_code"], 2);
        assert_eq!(v["findings"], serde_json::json!([]));
        assert!(v["error"].as_str().unwrap().contains("region is empty"));
    }
}
