//! The JSON documents of each command (`--output json`): the shapes scripts
//! parse, the same for the binary and for an embedder. Each carries the
//! head of [`RunInfo`] (`schema_version`, `tool_version`, `run_id`,
//! `started_at`, `finished_at`, `escrow_account`, `primary_account`), then
//! `ok`, `command`, an `error` when the command failed outright, and the
//! `exit_code` the binary exits with (0 ok, 1 items failed, 2 fatal, 3
//! findings). Their JSON Schemas are in the repository's `docs/schema/`.

use serde::Serialize;

use escrow_sync_core::{Error, Mode, Report};

use crate::restore::RestoreReport;
use crate::{JobOutcome, ProtectionWarning, PruneOutcome};

/// The version of the documents' shape: raised when a field changes
/// meaning or goes away (new fields do not raise it).
pub const SCHEMA_VERSION: u32 = 1;

/// escrow-sync's version, as every document and manifest gives it.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who ran a command and when: the head of every document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunInfo {
    /// The run's id: a `run`'s is its manifest's (and a `verify`'s its
    /// verification record's); other commands get one of the same form.
    pub run_id: String,
    /// When the command started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339); `None` while it runs.
    pub finished_at: Option<String>,
    /// The escrow account, when known.
    pub escrow_account: Option<String>,
    /// The primary account, when known.
    pub primary_account: Option<String>,
}

impl RunInfo {
    /// A command starting now, with a new run id.
    pub fn start() -> Self {
        RunInfo {
            run_id: escrow_sync_core::manifest::run_id(),
            started_at: escrow_sync_core::manifest::now_rfc3339(),
            finished_at: None,
            escrow_account: None,
            primary_account: None,
        }
    }

    /// With the accounts (empty ids count as unknown).
    pub fn with_accounts(mut self, escrow: Option<String>, primary: Option<String>) -> Self {
        self.escrow_account = escrow.filter(|a| !a.is_empty()).or(self.escrow_account);
        self.primary_account = primary.filter(|a| !a.is_empty()).or(self.primary_account);
        self
    }

    /// Marks it finished now (once: a second call keeps the first time).
    pub fn finish(&mut self) {
        if self.finished_at.is_none() {
            self.finished_at = Some(escrow_sync_core::manifest::now_rfc3339());
        }
    }

    /// A finished copy (for a document of a command that may still be
    /// marked running).
    pub fn finished(&self) -> Self {
        let mut done = self.clone();
        done.finish();
        done
    }
}

/// The head every document starts with.
#[derive(Serialize)]
struct Head {
    schema_version: u32,
    tool_version: &'static str,
    #[serde(flatten)]
    run: RunInfo,
}

impl Head {
    fn of(run: &RunInfo) -> Self {
        Head { schema_version: SCHEMA_VERSION, tool_version: TOOL_VERSION, run: run.finished() }
    }
}

/// `value` (a JSON object) with the head's fields first.
fn with_head(run: &RunInfo, value: serde_json::Value) -> String {
    let mut doc = serde_json::to_value(Head::of(run)).expect("the head serialises");
    if let (Some(head), serde_json::Value::Object(rest)) = (doc.as_object_mut(), value) {
        head.extend(rest);
    }
    serde_json::to_string_pretty(&doc).expect("documents serialise")
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
    protection_warnings: &'a [ProtectionWarning],
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

/// The document of `plan`, `run` and `verify` (`--offline` too), with
/// the config's `protection_warnings` ([`crate::Run::protection_warnings`],
/// or [`crate::spec::Config::protection_warnings_for`] when the command
/// stopped before its jobs).
pub fn jobs(
    run: &RunInfo,
    mode: Mode,
    jobs: &[JobOutcome],
    protection_warnings: &[ProtectionWarning],
    fatal: Option<&Error>,
    code: u8,
) -> String {
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
        ok: code == 0,
        command: command_name(mode),
        jobs,
        protection_warnings,
        error: fatal.map(Error::chain),
        exit_code: code,
    };
    with_head(run, serde_json::to_value(&doc).expect("reports serialise"))
}

/// The JSON document of a restore.
pub fn restore(run: &RunInfo, result: &Result<RestoreReport, Error>, code: u8) -> String {
    let doc = serde_json::json!({
        "ok": code == 0,
        "command": "restore",
        "restore": result.as_ref().ok(),
        "error": result.as_ref().err().map(Error::chain),
        "exit_code": code,
    });
    with_head(run, doc)
}

/// The JSON document of a prune.
pub fn prune(
    run: &RunInfo,
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
        ok: code == 0,
        command: "prune",
        apply,
        jobs: outcomes,
        error: fatal.map(Error::chain),
        exit_code: code,
    };
    with_head(run, serde_json::to_value(&doc).expect("prune outcomes serialise"))
}

/// The document of `status`.
pub fn status(
    run: &RunInfo,
    report: Option<&crate::status::StatusReport>,
    fatal: Option<&Error>,
    code: u8,
) -> String {
    let doc = serde_json::json!({
        "ok": code == 0,
        "command": "status",
        "jobs": report.map(|r| r.jobs.as_slice()).unwrap_or_default(),
        "warnings": report.map(|r| r.warnings.as_slice()).unwrap_or_default(),
        "error": fatal.map(Error::chain),
        "exit_code": code,
    });
    with_head(run, doc)
}

/// The head's fields (and `ok`, `command`, `error`, `exit_code`) of a
/// document written as it goes, such as `trail events --output json`:
/// its events come first, these fields last (a JSON object's fields have
/// no order).
pub fn head_fields(
    run: &RunInfo,
    command: &str,
    error: Option<&Error>,
    exit_code: u8,
) -> serde_json::Map<String, serde_json::Value> {
    let mut head = match serde_json::to_value(Head::of(run)) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    head.insert("ok".into(), (exit_code == 0).into());
    head.insert("command".into(), command.into());
    if let Some(e) = error {
        head.insert("error".into(), e.chain().into());
    }
    head.insert("exit_code".into(), exit_code.into());
    head
}

/// The document of `trail athena --output json`: each table's DDL and
/// example queries, and the folders left out, after the head.
#[cfg(feature = "cloudtrail")]
pub fn athena(
    run: &RunInfo,
    result: &Result<escrow_sync_cloudtrail::AthenaDdl, Error>,
    exit_code: u8,
) -> String {
    let mut doc = serde_json::Value::Object(head_fields(
        run,
        "trail athena",
        result.as_ref().err(),
        exit_code,
    ));
    if let (Some(d), Ok(ddl)) = (doc.as_object_mut(), result) {
        d.insert("tables".into(), serde_json::to_value(&ddl.tables).unwrap_or_default());
        d.insert("skipped".into(), serde_json::to_value(&ddl.skipped).unwrap_or_default());
    }
    serde_json::to_string_pretty(&doc).expect("documents serialise")
}

/// The document of `policy --output json`: the policies, after the head.
pub fn policy(run: &RunInfo, policies: serde_json::Value) -> String {
    let head = serde_json::json!({ "ok": true, "command": "policy", "exit_code": 0 });
    let mut doc = head;
    if let (Some(d), serde_json::Value::Object(p)) = (doc.as_object_mut(), policies) {
        d.extend(p);
    }
    with_head(run, doc)
}

#[cfg(feature = "governance")]
#[derive(Serialize)]
struct AuditDoc<'a> {
    ok: bool,
    command: &'static str,
    findings: &'a [escrow_sync_governance::audit::Finding],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    exit_code: u8,
}

/// The document of `audit`.
#[cfg(feature = "governance")]
pub fn audit(
    run: &RunInfo,
    audited: Option<&crate::governance::Audited>,
    fatal: Option<&Error>,
    code: u8,
) -> String {
    let run = run.clone().with_accounts(audited.map(|a| a.escrow_account.clone()), None);
    let doc = AuditDoc {
        ok: code == 0,
        command: "audit",
        findings: audited.map(|a| a.findings.as_slice()).unwrap_or_default(),
        error: fatal.map(Error::chain),
        exit_code: code,
    };
    with_head(&run, serde_json::to_value(&doc).expect("findings serialise"))
}

#[cfg(all(test, feature = "governance"))]
mod tests {
    use super::*;
    use crate::governance::Audited;
    use escrow_sync_governance::audit::{self as checks, Finding};

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
                    checks::Severity::Medium,
                    "audit.access-denied",
                    "r",
                    "could not",
                    "allow",
                ),
            ],
        )
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&audit(&RunInfo::start(), Some(&audited()), None, 3)).unwrap();
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
            serde_json::from_str(&audit(&RunInfo::start(), None, Some(&fatal), 2)).unwrap();
        assert_eq!(v["exit_code"], 2);
        assert_eq!(v["findings"], serde_json::json!([]));
        assert!(v["error"].as_str().unwrap().contains("region is empty"));
    }
}
