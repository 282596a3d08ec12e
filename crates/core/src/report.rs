//! Per-job reports: what was copied, skipped, missing, different or failed.

use std::time::Duration;

use crate::{CopyReason, Error, ErrorKind};

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
// Exhaustive on purpose: every crate matches it, and a new variant must
// be handled everywhere rather than fall into a wildcard.
pub enum Mode {
    /// A dry run: counts say what a run would do.
    Plan,
    /// A real run: counts say what was done.
    Run,
    /// A comparison of primary and escrow.
    Verify,
}

/// One item that failed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// The item's key.
    pub key: String,
    /// The error, with its causes, on one line.
    pub error: String,
    /// The error's kind.
    pub kind: ErrorKind,
    /// How many attempts were made.
    pub attempts: u32,
}

impl Failure {
    /// A failure of `key` with `error` after `attempts` attempts.
    pub fn new(key: impl Into<String>, error: &Error, attempts: u32) -> Self {
        Failure { key: key.into(), error: error.chain(), kind: error.kind(), attempts }
    }
}

/// One key where escrow does not match the primary (plan and verify).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The key.
    pub key: String,
    /// `missing` (escrow lacks it) or `changed` (escrow holds other content).
    pub reason: CopyReason,
    /// Size in the primary.
    pub size: u64,
    /// For `plan`, when copying takes more than a plain copy (the source's
    /// `assess`): `needs re-encryption: ...`, `not copyable: ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The kind of a [`Finding`] about an escrow copy without the protection
/// its job configures: no encryption with the escrow key, no Object Lock
/// or snapshot lock, or a lock that has lapsed.
pub const UNPROTECTED: &str = "unprotected";

/// A problem verify found with an escrow copy: configured protection
/// missing, a checksum mismatch, or (CloudTrail) a break in a log file
/// integrity chain, with the time range it leaves unproven.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    /// The key.
    pub key: String,
    /// What is missing.
    pub problem: String,
    /// What kind of problem (e.g. `log-altered`), when the job names kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Start of the time range affected (RFC 3339), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End of the time range affected (RFC 3339), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl Finding {
    /// A finding about `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Finding { key: key.into(), problem: problem.into(), kind: None, from: None, to: None }
    }

    /// Names the kind of problem.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// The time range affected.
    pub fn with_range(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self.to = Some(to.into());
        self
    }
}

/// An order-independent digest of the keys in one part of a job (a
/// DynamoDB scan segment): the primary's keys, and those of them escrow
/// holds. They agree exactly when escrow holds every key of that part.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyDigest {
    /// The part, e.g. `segment 3`.
    pub scope: String,
    /// Keys read in the primary.
    pub primary_items: u64,
    /// Of those, keys escrow holds.
    pub escrow_items: u64,
    /// Digest of the primary's keys (hex).
    pub primary_digest: String,
    /// Digest of the keys escrow holds (hex).
    pub escrow_digest: String,
}

/// The outcome of one job in one mode.
#[non_exhaustive]
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Plan, run or verify.
    pub mode: Mode,
    /// Where the data comes from.
    pub source: String,
    /// Where it goes.
    pub destination: String,
    /// Items copied (plan: items that would be copied).
    pub copied: u64,
    /// Items already in escrow.
    pub skipped: u64,
    /// Items that failed.
    pub failed: u64,
    /// Bytes copied (plan: bytes that would be copied).
    pub bytes_copied: u64,
    /// Of the items copied, those copied in parts (multipart).
    pub copied_in_parts: u64,
    /// Items escrow lacks (plan and verify).
    pub missing: u64,
    /// Items escrow holds with different content (plan and verify).
    pub different: u64,
    /// Escrow-only items, kept because escrow is append-only.
    pub retained: u64,
    /// Escrow-only items deleted (only with a policy that allows it).
    pub deleted: u64,
    /// Changed items the mass-change breaker held back: escrow keeps their
    /// earlier content until a run with `--accept-mass-change` copies them
    /// (a finding of kind `mass-change` says why).
    pub held_back: u64,
    /// Every failed item.
    pub failures: Vec<Failure>,
    /// Missing or different items: every one for verify; for plan, up to
    /// the executor's listing limit (see `differences_truncated`).
    pub differences: Vec<Difference>,
    /// Differences counted but not listed.
    pub differences_truncated: u64,
    /// Items escrow already holds, by key (only when the executor was asked
    /// to list them: snapshot jobs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_escrow: Vec<String>,
    /// Escrow copies lacking configured protection (verify).
    pub unprotected: u64,
    /// Each protection problem found (verify).
    pub findings: Vec<Finding>,
    /// Per-part key digests (DynamoDB plan and verify).
    pub key_digests: Vec<KeyDigest>,
    /// Throttling errors seen (each halved the concurrency).
    pub throttled: u64,
    /// Whether the run was cancelled before it finished.
    pub cancelled: bool,
    /// Warnings the operator must see (e.g. a same-account "escrow").
    pub warnings: Vec<String>,
    /// What the operator may want to know (a table created, a generation
    /// completed, a run resumed).
    pub notes: Vec<String>,
    /// Wall-clock time.
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Report {
    /// An empty report.
    pub fn new(mode: Mode, source: impl Into<String>, destination: impl Into<String>) -> Self {
        Report {
            mode,
            source: source.into(),
            destination: destination.into(),
            copied: 0,
            skipped: 0,
            failed: 0,
            bytes_copied: 0,
            copied_in_parts: 0,
            missing: 0,
            different: 0,
            retained: 0,
            deleted: 0,
            held_back: 0,
            failures: Vec::new(),
            differences: Vec::new(),
            differences_truncated: 0,
            unprotected: 0,
            findings: Vec::new(),
            key_digests: Vec::new(),
            throttled: 0,
            cancelled: false,
            warnings: Vec::new(),
            notes: Vec::new(),
            in_escrow: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    /// Adds another report of the same job (one part of it) to this one:
    /// counts add up, lists are appended, `cancelled` sticks.
    pub fn absorb(&mut self, other: Report) {
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.bytes_copied += other.bytes_copied;
        self.copied_in_parts += other.copied_in_parts;
        self.missing += other.missing;
        self.different += other.different;
        self.retained += other.retained;
        self.deleted += other.deleted;
        self.held_back += other.held_back;
        self.failures.extend(other.failures);
        self.differences.extend(other.differences);
        self.differences_truncated += other.differences_truncated;
        self.in_escrow.extend(other.in_escrow);
        self.unprotected += other.unprotected;
        self.findings.extend(other.findings);
        self.key_digests.extend(other.key_digests);
        self.throttled += other.throttled;
        self.cancelled |= other.cancelled;
        self.warnings.extend(other.warnings);
        self.notes.extend(other.notes);
        self.elapsed += other.elapsed;
    }

    /// Whether the job fully succeeded: nothing failed, nothing was
    /// cancelled, and (for verify) escrow matches and is protected.
    pub fn is_clean(&self) -> bool {
        self.failed == 0
            && self.held_back == 0
            && !self.cancelled
            && (self.mode != Mode::Verify
                || (self.missing == 0 && self.different == 0 && self.unprotected == 0))
    }
}
