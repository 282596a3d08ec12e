//! Rendering reports as text (JSON documents come from `escrow_sync::doc`),
//! and the exit codes.

use escrow_sync::JobOutcome;
use escrow_sync_core::{CopyReason, Mode};

/// Process exit codes.
pub mod exit {
    /// All good.
    pub const OK: u8 = 0;
    /// Some items failed (or the run was cancelled), or a fault (throttling,
    /// a transient failure) outlasted the retries.
    pub const ITEMS_FAILED: u8 = 1;
    /// Invalid config or usage, or a refusal (access denied, a check that
    /// failed).
    pub const FATAL: u8 = 2;
    /// Verify found differences; a run stopped at the mass-change breaker.
    pub const DIFFERENCES: u8 = 3;
}

/// The exit code for a set of outcomes.
pub fn exit_code(mode: Mode, jobs: &[JobOutcome]) -> u8 {
    crate::render::code(escrow_sync::Verdict::of_jobs(mode, jobs))
}

pub use escrow_sync::report::human_bytes as bytes;

fn reason(r: CopyReason) -> &'static str {
    match r {
        CopyReason::Missing => "missing",
        CopyReason::Changed => "changed",
    }
}

/// How many planned copies the text output lists by key.
const PLAN_TEXT_LIMIT: usize = 50;

/// The config's protection warnings, one line each (nothing when none).
pub fn protection(warnings: &[escrow_sync::ProtectionWarning]) -> String {
    warnings.iter().map(|w| format!("warning: {w}\n")).collect()
}

/// The text rendering.
pub fn text(mode: Mode, jobs: &[JobOutcome]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for j in jobs {
        match &j.report {
            Some(r) => {
                let how = if j.streamed { ", streamed" } else { "" };
                let _ = writeln!(s, "job {} ({} -> {}{how})", j.name, r.source, r.destination);
                for n in &r.notes {
                    let _ = writeln!(s, "  note: {n}");
                }
                for w in &r.warnings {
                    let _ = writeln!(s, "  warning: {w}");
                }
                match mode {
                    Mode::Plan => {
                        let _ = writeln!(
                            s,
                            "  plan: {} to copy ({} missing, {} changed, {}), {} up to date, {} escrow-only kept",
                            r.copied,
                            r.missing,
                            r.different,
                            bytes(r.bytes_copied),
                            r.skipped,
                            r.retained
                        );
                        for d in r.differences.iter().take(PLAN_TEXT_LIMIT) {
                            let _ = match d.status.as_deref() {
                                Some(why) if why.starts_with("not copyable") => {
                                    writeln!(s, "    {}: {why}", d.key)
                                }
                                Some(status) => writeln!(
                                    s,
                                    "    copy {} ({}, {}): {status}",
                                    d.key,
                                    reason(d.reason),
                                    bytes(d.size)
                                ),
                                None => writeln!(
                                    s,
                                    "    copy {} ({}, {})",
                                    d.key,
                                    reason(d.reason),
                                    bytes(d.size)
                                ),
                            };
                        }
                        for key in r.in_escrow.iter().take(PLAN_TEXT_LIMIT) {
                            let _ = writeln!(s, "    already in escrow {key}");
                        }
                        let more = r.differences.len().saturating_sub(PLAN_TEXT_LIMIT) as u64
                            + r.differences_truncated;
                        if more > 0 {
                            let _ = writeln!(
                                s,
                                "    ... and {more} more (--output json lists up to {} by key)",
                                r.differences.len().max(PLAN_TEXT_LIMIT)
                            );
                        }
                    }
                    Mode::Run => {
                        let _ = writeln!(
                            s,
                            "  run: copied {} ({}{}), skipped {}, failed {}, escrow-only kept {}, in {:.1}s{}",
                            r.copied,
                            bytes(r.bytes_copied),
                            if r.copied_in_parts > 0 {
                                format!("; {} in parts", r.copied_in_parts)
                            } else {
                                String::new()
                            },
                            r.skipped,
                            r.failed,
                            r.retained,
                            r.elapsed.as_secs_f64(),
                            if r.cancelled { " (cancelled: run again to finish)" } else { "" }
                        );
                        for f in &r.findings {
                            let what = f.kind.as_deref().unwrap_or("finding");
                            let _ = writeln!(s, "  {what} {}: {}", f.key, f.problem);
                        }
                    }
                    Mode::Verify => {
                        // `verify --offline` compares with a run manifest
                        // (its reports name the manifest as their source).
                        let against = if r.source.starts_with(escrow_sync::OFFLINE_SOURCE) {
                            "the run manifest"
                        } else {
                            "the primary"
                        };
                        if r.missing == 0 && r.different == 0 {
                            let _ = writeln!(
                                s,
                                "  verify: escrow matches {against} ({} items; {} escrow-only kept)",
                                r.skipped, r.retained
                            );
                        } else {
                            let _ = writeln!(
                                s,
                                "  verify: {} missing, {} different, {} matching",
                                r.missing, r.different, r.skipped
                            );
                            for d in &r.differences {
                                let _ = writeln!(s, "    {} {}", reason(d.reason), d.key);
                            }
                        }
                        if r.unprotected > 0 {
                            let _ = writeln!(
                                s,
                                "  verify: {} escrow copies lack the configured protection or a signature",
                                r.unprotected
                            );
                        }
                        for f in &r.findings {
                            let what = match &f.kind {
                                Some(kind) => kind.as_str(),
                                None if f.problem.starts_with("checksum mismatch") => "mismatch",
                                None => "unprotected",
                            };
                            let range = match (&f.from, &f.to) {
                                (Some(from), Some(to)) => format!(" [{from} .. {to}]"),
                                _ => String::new(),
                            };
                            let _ = writeln!(s, "    {what} {}{range}: {}", f.key, f.problem);
                        }
                    }
                }
                for f in &r.failures {
                    let _ = writeln!(s, "  failed {}: {}", f.key, f.error);
                }
            }
            None => {
                let _ = writeln!(s, "job {}", j.name);
            }
        }
        if let Some(e) = &j.error {
            let _ = writeln!(s, "  error: {}", e.chain());
        }
    }
    s
}
