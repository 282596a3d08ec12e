//! Rendering of `restore`, `prune` and `audit` reports, and the exit code
//! of each verdict.

use escrow_sync::restore::RestoreReport;
use escrow_sync::{PruneOutcome, Verdict};

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

/// The exit code of an error that stopped a command: 1 for a fault that
/// outlasted the retries, 2 for bad input or a refusal.
pub(crate) fn error_code(e: &escrow_sync::Error) -> u8 {
    code(Verdict::of_error(e))
}

/// The text report of a `status`.
pub(crate) fn status_text(r: &escrow_sync::status::StatusReport) -> String {
    use std::fmt::Write;
    let age = |s: u64| humantime::format_duration(std::time::Duration::from_secs(s)).to_string();
    let mut s = String::new();
    for j in &r.jobs {
        let _ = writeln!(s, "job {} ({})", j.name, j.kind);
        match &j.last_run {
            Some(run) => {
                let _ = writeln!(
                    s,
                    "  last run: {} {} (finished {}): copied {} ({}), up to date {}, failed {}, \
                     {} findings",
                    run.run_id,
                    run.outcome.as_str(),
                    run.finished_at,
                    run.copied,
                    crate::output::bytes(run.bytes_copied),
                    run.skipped,
                    run.failed,
                    run.findings
                );
            }
            None => {
                let _ = writeln!(s, "  last run: none recorded");
            }
        }
        if let Some(sh) = &j.shards {
            let parts: Vec<String> =
                sh.parts.iter().map(|p| format!("{} {}", p.part, p.run.outcome.as_str())).collect();
            let missing = if sh.missing.is_empty() {
                String::new()
            } else {
                format!("; missing {}", sh.missing.join(", "))
            };
            let _ = writeln!(
                s,
                "  sharded: {} parts ({}){missing}; boundaries {}",
                sh.count,
                parts.join(", "),
                sh.boundaries
            );
        }
        if let Some(error) =
            j.last_run.as_ref().and_then(|r| r.error.as_ref()).filter(|_| j.shards.is_some())
        {
            let _ = writeln!(s, "  last run: {error}");
        }
        let limit = j.max_age_seconds.map(|m| format!(" (max age {})", age(m))).unwrap_or_default();
        match (&j.last_verified, j.seconds_since_last_verified_copy) {
            (Some(v), Some(a)) => {
                let by = match v.by {
                    escrow_sync::status::VerifiedBy::Run => "run",
                    _ => "verify",
                };
                let _ = writeln!(
                    s,
                    "  newest verified copy: of {} by {by} {}, {} old{limit}",
                    v.started_at,
                    v.run_id,
                    age(a)
                );
            }
            _ => {
                let _ = writeln!(s, "  newest verified copy: none{limit}");
            }
        }
        if let Some(b) = &j.batch_job {
            let _ = writeln!(
                s,
                "  batch job {}: {}, {} of {} task(s) succeeded, {} failed{}",
                b.job_id,
                b.status,
                b.succeeded,
                b.total,
                b.failed,
                if b.folded { "" } else { " (the next run folds it in)" }
            );
        }
        for f in &j.findings {
            let _ = writeln!(
                s,
                "  {} {}: {}",
                f.kind.as_deref().unwrap_or("finding"),
                f.key,
                f.problem
            );
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    let stale = r.jobs.iter().filter(|j| !j.findings.is_empty()).count();
    let _ = writeln!(s, "status: {} job(s), {stale} stale", r.jobs.len());
    s
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
