//! The one public error type of escrow-sync.

use std::fmt;

/// A boxed error kept as the `source()` of an [`Error`], so service SDK error
/// types never appear in public signatures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, said in terms of what the caller can do about it.
///
/// Every variant names the operation and the resource (bucket, key, table,
/// snapshot id) it concerns. The underlying service error, when there is one,
/// is reachable through [`std::error::Error::source`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The resource does not exist (or is not visible to these credentials).
    #[error("{operation} {resource}: not found{}", detail(.message))]
    NotFound {
        /// The operation that failed (for example `s3:CopyObject`).
        operation: String,
        /// The resource it was applied to.
        resource: String,
        /// Extra explanation, possibly empty.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The credentials in use are not allowed to do this.
    #[error("{operation} {resource}: access denied{}", detail(.message))]
    AccessDenied {
        /// The operation that failed.
        operation: String,
        /// The resource it was applied to.
        resource: String,
        /// Extra explanation, possibly empty.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A precondition did not hold, for example the source object changed
    /// between listing and copying.
    #[error("{operation} {resource}: precondition failed{}", detail(.message))]
    PreconditionFailed {
        /// The operation that failed.
        operation: String,
        /// The resource it was applied to.
        resource: String,
        /// Extra explanation, possibly empty.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The service asked us to slow down. Retryable.
    #[error("{operation} {resource}: throttled{}", detail(.message))]
    Throttled {
        /// The operation that failed.
        operation: String,
        /// The resource it was applied to.
        resource: String,
        /// Extra explanation, possibly empty.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A transient failure (network, timeout, 5xx). Retryable.
    #[error("{operation} {resource}: transient failure{}", detail(.message))]
    Transient {
        /// The operation that failed.
        operation: String,
        /// The resource it was applied to.
        resource: String,
        /// Extra explanation, possibly empty.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The operation is not supported for this resource (yet).
    #[error("{operation} {resource}: not supported{}", detail(.message))]
    Unsupported {
        /// The operation that was refused.
        operation: String,
        /// The resource it was applied to.
        resource: String,
        /// Why, and what to do instead.
        message: String,
    },
    /// The configuration or the input is invalid; the message says how to fix it.
    #[error("invalid config: {message}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The work was cancelled before it finished.
    #[error("{operation} {resource}: cancelled")]
    Cancelled {
        /// The operation that was interrupted.
        operation: String,
        /// The resource it was applied to.
        resource: String,
    },
    /// Any other permanent failure.
    #[error("{operation} {resource}: failed{}", detail(.message))]
    Failed {
        /// The operation that failed.
        operation: String,
        /// The resource it was applied to.
        resource: String,
        /// Extra explanation, possibly empty.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

fn detail(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(": {message}") }
}

/// The kind of an [`Error`], without its payload: handy for matching,
/// counting and serialising.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::AccessDenied`].
    AccessDenied,
    /// See [`Error::PreconditionFailed`].
    PreconditionFailed,
    /// See [`Error::Throttled`].
    Throttled,
    /// See [`Error::Transient`].
    Transient,
    /// See [`Error::Unsupported`].
    Unsupported,
    /// See [`Error::InvalidConfig`].
    InvalidConfig,
    /// See [`Error::Cancelled`].
    Cancelled,
    /// See [`Error::Failed`].
    Failed,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AccessDenied => "access denied",
            ErrorKind::PreconditionFailed => "precondition failed",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Transient => "transient",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::InvalidConfig => "invalid config",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Failed => "failed",
        };
        f.write_str(s)
    }
}

impl Error {
    /// Builds an error of `kind` for `operation` on `resource`.
    ///
    /// For [`ErrorKind::InvalidConfig`] the message is `operation resource: message`.
    pub fn new(
        kind: ErrorKind,
        operation: impl Into<String>,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (operation, resource, message) = (operation.into(), resource.into(), message.into());
        match kind {
            ErrorKind::NotFound => Error::NotFound { operation, resource, message, source: None },
            ErrorKind::AccessDenied => {
                Error::AccessDenied { operation, resource, message, source: None }
            }
            ErrorKind::PreconditionFailed => {
                Error::PreconditionFailed { operation, resource, message, source: None }
            }
            ErrorKind::Throttled => Error::Throttled { operation, resource, message, source: None },
            ErrorKind::Transient => Error::Transient { operation, resource, message, source: None },
            ErrorKind::Unsupported => Error::Unsupported { operation, resource, message },
            ErrorKind::InvalidConfig => Error::InvalidConfig {
                message: [operation, resource, message]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            ErrorKind::Cancelled => Error::Cancelled { operation, resource },
            ErrorKind::Failed => Error::Failed { operation, resource, message, source: None },
        }
    }

    /// An invalid configuration or input; `message` names what is wrong and the fix.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Error::InvalidConfig { message: message.into() }
    }

    /// Attaches the underlying error (kept reachable through `source()`).
    pub fn with_source(mut self, err: impl Into<BoxError>) -> Self {
        match &mut self {
            Error::NotFound { source, .. }
            | Error::AccessDenied { source, .. }
            | Error::PreconditionFailed { source, .. }
            | Error::Throttled { source, .. }
            | Error::Transient { source, .. }
            | Error::Failed { source, .. } => *source = Some(err.into()),
            Error::Unsupported { .. } | Error::InvalidConfig { .. } | Error::Cancelled { .. } => {}
        }
        self
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AccessDenied { .. } => ErrorKind::AccessDenied,
            Error::PreconditionFailed { .. } => ErrorKind::PreconditionFailed,
            Error::Throttled { .. } => ErrorKind::Throttled,
            Error::Transient { .. } => ErrorKind::Transient,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::Failed { .. } => ErrorKind::Failed,
        }
    }

    /// The error's own message (why, and what to do), without the
    /// operation and resource; empty for a cancellation.
    pub fn message(&self) -> &str {
        match self {
            Error::NotFound { message, .. }
            | Error::AccessDenied { message, .. }
            | Error::PreconditionFailed { message, .. }
            | Error::Throttled { message, .. }
            | Error::Transient { message, .. }
            | Error::Unsupported { message, .. }
            | Error::InvalidConfig { message }
            | Error::Failed { message, .. } => message,
            Error::Cancelled { .. } => "",
        }
    }

    /// Whether trying the same thing again later may succeed
    /// (throttling and transient failures only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Throttled { .. } | Error::Transient { .. })
    }

    /// Whether this is a throttling error (callers may want to slow down).
    pub fn is_throttle(&self) -> bool {
        matches!(self, Error::Throttled { .. })
    }

    /// The error and every `source()` below it, joined with `": "`, with
    /// repeated fragments removed. Good for one-line reports.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            let s = e.to_string();
            if !s.is_empty() && !out.contains(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            cur = e.source();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_and_resource() {
        let e = Error::new(ErrorKind::AccessDenied, "s3:CopyObject", "escrow/a.txt", "");
        assert_eq!(e.to_string(), "s3:CopyObject escrow/a.txt: access denied");
        let e = Error::new(ErrorKind::NotFound, "s3:HeadBucket", "b", "create it first");
        assert_eq!(e.to_string(), "s3:HeadBucket b: not found: create it first");
    }

    #[test]
    fn only_throttle_and_transient_are_retryable() {
        for (kind, retry) in [
            (ErrorKind::NotFound, false),
            (ErrorKind::AccessDenied, false),
            (ErrorKind::PreconditionFailed, false),
            (ErrorKind::Throttled, true),
            (ErrorKind::Transient, true),
            (ErrorKind::Unsupported, false),
            (ErrorKind::InvalidConfig, false),
            (ErrorKind::Cancelled, false),
            (ErrorKind::Failed, false),
        ] {
            let e = Error::new(kind, "op", "res", "");
            assert_eq!(e.is_retryable(), retry, "{kind}");
            assert_eq!(e.kind(), kind);
        }
    }

    #[test]
    fn chain_includes_source() {
        let io = std::io::Error::other("connection reset");
        let e = Error::new(ErrorKind::Transient, "s3:GetObject", "b/k", "").with_source(io);
        assert_eq!(e.chain(), "s3:GetObject b/k: transient failure: connection reset");
    }
}
