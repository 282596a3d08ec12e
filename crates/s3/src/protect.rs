//! Escrow protection of every copy: SSE-KMS with the escrow's own key, and
//! Object Lock retention.

use std::time::{Duration, SystemTime};

use aws_smithy_types::DateTime;

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockMode {
    /// Nobody, not even the root user, can shorten or remove the retention.
    Compliance,
    /// Principals with `s3:BypassGovernanceRetention` can.
    Governance,
}

impl LockMode {
    /// Parses `COMPLIANCE` or `GOVERNANCE`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "COMPLIANCE" => Some(LockMode::Compliance),
            "GOVERNANCE" => Some(LockMode::Governance),
            _ => None,
        }
    }

    /// The S3 name.
    pub fn as_str(&self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

/// Retention set on every copy: `mode` for `days` days from the copy,
/// extended to `days` from the run by every run once fewer than
/// `renew_within_days` are left ([`crate::S3Sink::renew_retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// The mode.
    pub mode: LockMode,
    /// Days of retention from the time of the copy (or of the renewal).
    pub days: u32,
    /// Renewed when fewer days than this are left (default: a quarter of
    /// `days`, at least 1).
    pub renew_within_days: u32,
}

impl ObjectLock {
    /// `mode` for `days` days, renewed within the last quarter of them.
    pub fn new(mode: LockMode, days: u32) -> Self {
        ObjectLock { mode, days, renew_within_days: Self::default_renew_within(days) }
    }

    /// The default renewal window: a quarter of `days`, at least one day.
    pub fn default_renew_within(days: u32) -> u32 {
        days.div_ceil(4).max(1)
    }

    /// Renews when fewer than `days` are left.
    pub fn with_renew_within_days(mut self, days: u32) -> Self {
        self.renew_within_days = days;
        self
    }

    /// The retain-until time for a copy made now.
    pub fn retain_until(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(u64::from(self.days) * 86_400)
    }
}

/// How every escrow copy is protected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protection {
    /// The escrow-owned KMS key (id, alias or ARN) for SSE-KMS.
    pub kms_key_id: Option<String>,
    /// Object Lock retention.
    pub object_lock: Option<ObjectLock>,
}

impl Protection {
    /// No protection beyond the bucket's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encrypts every copy with this escrow key.
    pub fn with_kms_key_id(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }

    /// Sets this retention on every copy.
    pub fn with_object_lock(mut self, lock: Option<ObjectLock>) -> Self {
        self.object_lock = lock;
        self
    }

    pub(crate) fn lock_mode(&self) -> Option<aws_sdk_s3::types::ObjectLockMode> {
        self.object_lock.map(|l| match l.mode {
            LockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
            LockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
        })
    }

    pub(crate) fn retain_until(&self) -> Option<DateTime> {
        self.object_lock.map(|l| DateTime::from(l.retain_until()))
    }

    pub(crate) fn sse(&self) -> Option<aws_sdk_s3::types::ServerSideEncryption> {
        self.kms_key_id.as_ref().map(|_| aws_sdk_s3::types::ServerSideEncryption::AwsKms)
    }
}

/// Whether the key S3 reports (`got`, an ARN) is the configured key `want`
/// (an ARN, a key id, or an alias, which only KMS can resolve: any key is
/// accepted for an alias).
pub(crate) fn same_key(want: &str, got: &str) -> bool {
    if want.starts_with("arn:") {
        return want == got;
    }
    if want.starts_with("alias/") {
        return !got.is_empty();
    }
    got == want || got.ends_with(&format!("key/{want}"))
}

/// Applies a [`Protection`] to a CopyObject, PutObject or
/// CreateMultipartUpload request builder.
macro_rules! protect {
    ($builder:expr, $protection:expr) => {{
        let p: &$crate::protect::Protection = $protection;
        $builder
            .set_server_side_encryption(p.sse())
            .set_ssekms_key_id(p.kms_key_id.clone())
            .set_object_lock_mode(p.lock_mode())
            .set_object_lock_retain_until_date(p.retain_until())
    }};
}
pub(crate) use protect;

/// The MD5 of an empty body. Some S3 implementations want Content-MD5 on
/// requests that set Object Lock headers, even without a body (CopyObject);
/// it is always valid for a bodiless request.
pub(crate) const EMPTY_BODY_MD5: &str = "1B2M2Y8AsgTpgAmY7PHvCQ==";
