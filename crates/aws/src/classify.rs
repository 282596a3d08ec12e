//! SDK error classification, in one place for every service crate.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use escrow_sync_core::{Error, ErrorKind};

const THROTTLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    // Quotas on copies in flight: back off and try again (snapshot copies).
    "ResourceLimitExceeded",
    "SnapshotCreationPerVolumeRateExceeded",
    "SnapshotQuotaExceeded",
    "SnapshotQuotaExceededFault",
    "TransactionInProgressException",
    // Redshift's quota faults (snapshots, clusters, nodes, authorizations).
    "ClusterSnapshotQuotaExceeded",
    "ClusterQuotaExceeded",
    "NumberOfNodesQuotaExceeded",
    "InsufficientClusterCapacity",
    "AuthorizationQuotaExceeded",
    "LimitExceededFault",
    "DependentServiceRequestThrottlingFault",
];

const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "IDPCommunicationError",
];

const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "AllAccessDisabled",
    "AccountProblem",
    "AuthFailure",
];

const NOT_FOUND_CODES: &[&str] = &[
    "NoSuchKey",
    "NoSuchBucket",
    "NoSuchVersion",
    "NoSuchUpload",
    "NoSuchTagSet",
    "NotFound",
    "ResourceNotFoundException",
    "TableNotFoundException",
    "ExportNotFoundException",
    "NoSuchEntity",
    // RDS and Redshift snapshots and clusters.
    "DBSnapshotNotFound",
    "DBSnapshotNotFoundFault",
    "DBClusterSnapshotNotFoundFault",
    "ClusterNotFound",
    "ClusterSnapshotNotFound",
];

const PRECONDITION_CODES: &[&str] = &["PreconditionFailed", "ConditionalCheckFailedException"];

/// Codes that are permanent whatever their HTTP status says.
const PERMANENT_CODES: &[&str] = &["InvalidObjectState", "ObjectNotInActiveTierError"];

/// Classifies a service error code and HTTP status.
pub fn classify_code(code: Option<&str>, status: Option<u16>) -> ErrorKind {
    if let Some(code) = code {
        let is = |set: &[&str]| set.contains(&code);
        if is(THROTTLE_CODES) {
            return ErrorKind::Throttled;
        }
        if is(TRANSIENT_CODES) {
            return ErrorKind::Transient;
        }
        if is(ACCESS_CODES) {
            return ErrorKind::AccessDenied;
        }
        if is(NOT_FOUND_CODES) {
            return ErrorKind::NotFound;
        }
        if is(PRECONDITION_CODES) {
            return ErrorKind::PreconditionFailed;
        }
        if is(PERMANENT_CODES) {
            return ErrorKind::Failed;
        }
    }
    match status {
        Some(429) => ErrorKind::Throttled,
        Some(403) => ErrorKind::AccessDenied,
        Some(404) => ErrorKind::NotFound,
        Some(412) => ErrorKind::PreconditionFailed,
        Some(s) if s >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Failed,
    }
}

/// The kind of an SDK error: throttled, transient, access denied, not found,
/// precondition failed, or failed (permanent).
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> ErrorKind
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(ctx) => {
            classify_code(ctx.err().code(), Some(ctx.raw().status().as_u16()))
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorKind::Transient,
        SdkError::DispatchFailure(d) if d.is_user() => ErrorKind::Failed,
        SdkError::DispatchFailure(_) => ErrorKind::Transient,
        _ => ErrorKind::Failed,
    }
}

/// Converts an SDK error into the public [`Error`], naming `operation` and
/// `resource`. The SDK error stays reachable through `source()`.
pub fn sdk_error<E>(
    err: SdkError<E, HttpResponse>,
    operation: &str,
    resource: impl Into<String>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = classify(&err);
    let message = match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match (ctx.err().code(), ctx.err().message()) {
                (Some(c), Some(m)) if !m.is_empty() => format!("{c} ({status}): {m}"),
                (Some(c), _) => format!("{c} ({status})"),
                (None, _) => format!("HTTP {status}"),
            }
        }
        other => DisplayErrorContext(other).to_string(),
    };
    Error::new(kind, operation, resource, message).with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sts::Client;
    use aws_sdk_sts::config::retry::RetryConfig;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    #[test]
    fn codes_and_statuses() {
        assert_eq!(classify_code(Some("SlowDown"), Some(503)), ErrorKind::Throttled);
        assert_eq!(classify_code(Some("AccessDenied"), Some(403)), ErrorKind::AccessDenied);
        assert_eq!(classify_code(Some("NoSuchBucket"), Some(404)), ErrorKind::NotFound);
        assert_eq!(
            classify_code(Some("PreconditionFailed"), Some(412)),
            ErrorKind::PreconditionFailed
        );
        assert_eq!(classify_code(Some("InternalError"), Some(500)), ErrorKind::Transient);
        assert_eq!(classify_code(None, Some(502)), ErrorKind::Transient);
        assert_eq!(classify_code(None, Some(429)), ErrorKind::Throttled);
        assert_eq!(classify_code(Some("InvalidArgument"), Some(400)), ErrorKind::Failed);
        assert_eq!(classify_code(Some("Whatever"), Some(403)), ErrorKind::AccessDenied);
    }

    async fn status_error(status: u16, body: &str) -> Error {
        let rule = mock!(Client::get_caller_identity)
            .sequence()
            .http_status(status, Some(body.to_string()))
            .build();
        let client = mock_client!(aws_sdk_sts, RuleMode::Sequential, [&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        let err = client.get_caller_identity().send().await.unwrap_err();
        sdk_error(err, "sts:GetCallerIdentity", "escrow account")
    }

    fn sts_error(code: &str, message: &str) -> String {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>"
        )
    }

    #[tokio::test]
    async fn service_errors_from_the_wire_are_classified() {
        let e = status_error(403, &sts_error("AccessDenied", "not allowed")).await;
        assert_eq!(e.kind(), ErrorKind::AccessDenied);
        assert!(
            e.to_string().contains("sts:GetCallerIdentity escrow account: access denied"),
            "{e}"
        );
        assert!(e.to_string().contains("not allowed"), "{e}");
        assert!(std::error::Error::source(&e).is_some(), "SDK error kept as source");

        let e = status_error(400, &sts_error("Throttling", "Rate exceeded")).await;
        assert!(e.is_retryable() && e.is_throttle(), "{e}");

        let e = status_error(503, "").await;
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");

        let e = status_error(400, &sts_error("ValidationError", "bad")).await;
        assert_eq!(e.kind(), ErrorKind::Failed);
        assert!(!e.is_retryable());
    }
}
