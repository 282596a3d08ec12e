//! Rendering reports as text or JSON, and the exit code.

use serde::Serialize;

use escrow_sync::JobOutcome;
use escrow_sync_core::{CopyReason, Error, Mode, Report};

/// Process exit codes.
pub mod exit {
    /// All good.
    pub const OK: u8 = 0;
    /// Some items failed (or the run was cancelled).
    pub const ITEMS_FAILED: u8 = 1;
    /// Invalid config or usage, or a fatal error.
    pub const FATAL: u8 = 2;
    /// Verify found differences; a run stopped at the mass-change breaker.
    pub const DIFFERENCES: u8 = 3;
}

/// The exit code for a set of outcomes.
pub fn exit_code(mode: Mode, jobs: &[JobOutcome]) -> u8 {
    crate::render::code(escrow_sync::Verdict::of_jobs(mode, jobs))
}

#[derive(Serialize)]
struct JsonFailure<'a> {
    key: &'a str,
    error: &'a str,
    kind: escrow_sync_core::ErrorKind,
    attempts: u32,
}

#[derive(Serialize)]
struct JsonJob<'a> {
    name: &'a str,
    kind: &'a str,
    copied: u64,
    skipped: u64,
    failed: u64,
    bytes_copied: u64,
    copied_in_parts: u64,
    streamed: bool,
    missing: u64,
    different: u64,
    failures: Vec<JsonFailure<'a>>,
    retained: u64,
    held_back: u64,
    unprotected: u64,
    findings: Vec<&'a escrow_sync_core::Finding>,
    throttled: u64,
    cancelled: bool,
    source: Option<&'a str>,
    destination: Option<&'a str>,
    differences: Vec<&'a escrow_sync_core::Difference>,
    differences_truncated: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    in_escrow: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    key_digests: Vec<&'a escrow_sync_core::KeyDigest>,
    warnings: Vec<&'a str>,
    notes: Vec<&'a str>,
    elapsed_seconds: f64,
    error: Option<String>,
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    ok: bool,
    command: &'a str,
    jobs: Vec<JsonJob<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    exit_code: u8,
}

fn command_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Plan => "plan",
        Mode::Run => "run",
        Mode::Verify => "verify",
    }
}

/// The JSON document for `--output json`.
pub fn json(mode: Mode, jobs: &[JobOutcome], fatal: Option<&Error>, code: u8) -> String {
    let jobs = jobs
        .iter()
        .map(|j| {
            let r = j.report.as_ref();
            let n = |f: fn(&Report) -> u64| r.map(f).unwrap_or(0);
            JsonJob {
                name: &j.name,
                kind: j.kind,
                copied: n(|r| r.copied),
                skipped: n(|r| r.skipped),
                failed: n(|r| r.failed),
                bytes_copied: n(|r| r.bytes_copied),
                copied_in_parts: n(|r| r.copied_in_parts),
                streamed: j.streamed,
                missing: n(|r| r.missing),
                different: n(|r| r.different),
                failures: r
                    .map(|r| {
                        r.failures
                            .iter()
                            .map(|f| JsonFailure {
                                key: &f.key,
                                error: &f.error,
                                kind: f.kind,
                                attempts: f.attempts,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                retained: n(|r| r.retained),
                held_back: n(|r| r.held_back),
                unprotected: n(|r| r.unprotected),
                findings: r.map(|r| r.findings.iter().collect()).unwrap_or_default(),
                throttled: n(|r| r.throttled),
                cancelled: r.is_some_and(|r| r.cancelled),
                source: r.map(|r| r.source.as_str()),
                destination: r.map(|r| r.destination.as_str()),
                differences: r.map(|r| r.differences.iter().collect()).unwrap_or_default(),
                differences_truncated: n(|r| r.differences_truncated),
                in_escrow: r
                    .map(|r| r.in_escrow.iter().map(String::as_str).collect())
                    .unwrap_or_default(),
                key_digests: r.map(|r| r.key_digests.iter().collect()).unwrap_or_default(),
                warnings: r
                    .map(|r| r.warnings.iter().map(String::as_str).collect())
                    .unwrap_or_default(),
                notes: r.map(|r| r.notes.iter().map(String::as_str).collect()).unwrap_or_default(),
                elapsed_seconds: r.map(|r| r.elapsed.as_secs_f64()).unwrap_or(0.0),
                error: j.error.as_ref().map(Error::chain),
            }
        })
        .collect();
    let doc = JsonDoc {
        ok: code == exit::OK,
        command: command_name(mode),
        jobs,
        error: fatal.map(Error::chain),
        exit_code: code,
    };
    serde_json::to_string_pretty(&doc).expect("reports serialise")
}

/// Human-readable byte counts.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn reason(r: CopyReason) -> &'static str {
    match r {
        CopyReason::Missing => "missing",
        CopyReason::Changed => "changed",
    }
}

/// How many planned copies the text output lists by key.
const PLAN_TEXT_LIMIT: usize = 50;

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
