//! SDK error classification, in one place for every service crate.

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::result::SdkError;
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
/// precondition failed, invalid config (no credentials), or failed
/// (permanent).
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
        SdkError::DispatchFailure(d) => match d.as_connector_error() {
            Some(c) => dispatch_kind(c),
            None => ErrorKind::Transient,
        },
        _ => ErrorKind::Failed,
    }
}

/// A request that never left: its credentials could not be had (no
/// credentials, an expired SSO token, a role STS refused or could not
/// answer), or the connection failed.
fn dispatch_kind(connector: &ConnectorError) -> ErrorKind {
    let Some(creds) = find::<CredentialsError>(connector) else {
        return ErrorKind::Transient;
    };
    match creds {
        CredentialsError::ProviderTimedOut(_) => ErrorKind::Transient,
        CredentialsError::ProviderError(_) => {
            // The provider's own call (AssumeRole...) failed: as that call.
            if let Some(sts) = find::<SdkError<AssumeRoleError, HttpResponse>>(creds) {
                return classify(sts);
            }
            match provider_failure(creds) {
                Some(CredentialsFailure::Missing(_)) => ErrorKind::InvalidConfig,
                Some(_) => ErrorKind::AccessDenied,
                None => ErrorKind::Transient,
            }
        }
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            ErrorKind::InvalidConfig
        }
        _ => ErrorKind::Failed,
    }
}

/// The first error of type `T` in `err`'s source chain (`err` included).
fn find<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// Every message of `err`'s source chain on one line, repeated fragments
/// left out (never a `Debug` dump).
fn display_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// Service error codes of credentials that have expired.
const EXPIRED_CODES: &[&str] = &["ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired"];

/// Service error codes of credentials the service does not know or accept.
const REJECTED_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "AuthFailure",
];

/// Why a call could not be made with its credentials, when that is why it
/// failed (see [`credentials_failure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsFailure {
    /// No credentials were found (why, as the SDK said it).
    Missing(String),
    /// The credentials have expired: an SSO token, a session.
    Expired(String),
    /// The service does not know or accept them (its error code).
    Rejected(String),
}

/// Whether `err` failed for want of usable credentials: none in the chain,
/// an expired SSO token or session, keys STS does not know. `None` for any
/// other failure (a throttled or unreachable STS is a transient fault, not
/// a credentials problem).
pub fn credentials_failure<E>(err: &SdkError<E, HttpResponse>) -> Option<CredentialsFailure>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(ctx) => code_failure(ctx.err().code()?),
        SdkError::DispatchFailure(d) => {
            let creds = find::<CredentialsError>(d.as_connector_error()?)?;
            match creds {
                CredentialsError::CredentialsNotLoaded(_)
                | CredentialsError::InvalidConfiguration(_) => {
                    Some(CredentialsFailure::Missing(cause(creds)))
                }
                CredentialsError::ProviderError(_) => {
                    match find::<SdkError<AssumeRoleError, HttpResponse>>(creds) {
                        Some(sts) => credentials_failure(sts),
                        None => provider_failure(creds),
                    }
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn code_failure(code: &str) -> Option<CredentialsFailure> {
    if EXPIRED_CODES.contains(&code) {
        Some(CredentialsFailure::Expired(code.to_string()))
    } else if REJECTED_CODES.contains(&code) {
        Some(CredentialsFailure::Rejected(code.to_string()))
    } else {
        None
    }
}

/// A credentials provider's own failure that is not an STS call (an SSO
/// token, a credential process): expired or missing, unless it is a
/// network fault (`None`).
fn provider_failure(creds: &CredentialsError) -> Option<CredentialsFailure> {
    if let Some(c) = find::<ConnectorError>(creds)
        && (c.is_io() || c.is_timeout())
    {
        return None;
    }
    let why = cause(creds);
    if why.to_ascii_lowercase().contains("expired") {
        Some(CredentialsFailure::Expired(why))
    } else {
        Some(CredentialsFailure::Missing(why))
    }
}

/// What a credentials error says below its own generic line.
fn cause(creds: &CredentialsError) -> String {
    match std::error::Error::source(creds) {
        Some(inner) => display_chain(inner),
        None => creds.to_string(),
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
    let message = describe(&err);
    Error::new(kind, operation, resource, message).with_source(err)
}

/// One line on `err`: the service's code, status and message; or, for a
/// request that never left for want of credentials, why (the role's
/// AssumeRole answer when that is it); or the connection's failure.
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match (ctx.err().code(), ctx.err().message()) {
                (Some(c), Some(m)) if !m.is_empty() => format!("{c} ({status}): {m}"),
                (Some(c), _) => format!("{c} ({status})"),
                (None, _) => format!("HTTP {status}"),
            }
        }
        SdkError::DispatchFailure(d) => match d
            .as_connector_error()
            .and_then(|c| find::<CredentialsError>(c))
        {
            Some(creds) => match find::<SdkError<AssumeRoleError, HttpResponse>>(creds) {
                Some(sts) => format!("cannot get credentials: sts:AssumeRole: {}", describe(sts)),
                None => format!("cannot get credentials: {}", cause(creds)),
            },
            None => display_chain(err),
        },
        _ => display_chain(err),
    }
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

    /// A credentials provider that always fails with `err`.
    #[derive(Debug)]
    struct Failing(fn() -> CredentialsError);

    impl aws_credential_types::provider::ProvideCredentials for Failing {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err((self.0)()))
        }
    }

    /// An HTTP client that answers every request `status` with `body`.
    fn answering(
        status: u16,
        body: &'static str,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
        use aws_smithy_runtime_api::client::http::{
            HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
        };
        #[derive(Debug)]
        struct Answer(u16, &'static str);
        impl HttpConnector for Answer {
            fn call(
                &self,
                _: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
            ) -> HttpConnectorFuture {
                HttpConnectorFuture::ready(Ok(HttpResponse::new(
                    aws_smithy_runtime_api::http::StatusCode::try_from(self.0).unwrap(),
                    aws_smithy_types::body::SdkBody::from(self.1),
                )))
            }
        }
        http_client_fn(move |_, _| SharedHttpConnector::new(Answer(status, body)))
    }

    /// GetCallerIdentity made with `provider`; every request that reaches
    /// the wire is answered `status` with `body`.
    async fn identify_with(
        provider: aws_credential_types::provider::SharedCredentialsProvider,
        status: u16,
        body: &'static str,
    ) -> SdkError<aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError, HttpResponse>
    {
        let http = answering(status, body);
        let conf = aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .http_client(http)
            .credentials_provider(provider)
            .retry_config(RetryConfig::disabled())
            .build();
        Client::from_conf(conf).get_caller_identity().send().await.unwrap_err()
    }

    fn shared(
        p: impl aws_credential_types::provider::ProvideCredentials + 'static,
    ) -> aws_credential_types::provider::SharedCredentialsProvider {
        aws_credential_types::provider::SharedCredentialsProvider::new(p)
    }

    #[tokio::test]
    async fn no_credentials_is_invalid_config_never_a_transient_dispatch_failure() {
        let err = identify_with(
            shared(Failing(|| {
                CredentialsError::not_loaded("no providers in chain provided credentials")
            })),
            200,
            "",
        )
        .await;
        assert_eq!(classify(&err), ErrorKind::InvalidConfig);
        assert!(
            matches!(credentials_failure(&err), Some(CredentialsFailure::Missing(m)) if m.contains("no providers")),
            "{:?}",
            credentials_failure(&err)
        );
        let e = sdk_error(err, "sts:GetCallerIdentity", "escrow identity");
        assert!(!e.is_retryable(), "{e}");
        let line = e.chain();
        assert!(line.contains("cannot get credentials"), "{line}");
        assert!(!line.contains("ConnectorError") && !line.contains('{'), "no Debug dump: {line}");
    }

    #[tokio::test]
    async fn an_expired_sso_token_is_an_expired_credential() {
        let err = identify_with(
            shared(Failing(|| {
                CredentialsError::provider_error(
                    "the SSO token has expired and cannot be refreshed",
                )
            })),
            200,
            "",
        )
        .await;
        assert!(matches!(credentials_failure(&err), Some(CredentialsFailure::Expired(_))));
        assert_eq!(classify(&err), ErrorKind::AccessDenied);
    }

    /// The reader role's AssumeRole, answered `status`/`body`, as the
    /// credentials of a GetCallerIdentity.
    async fn through_a_role(
        status: u16,
        body: &'static str,
    ) -> SdkError<aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError, HttpResponse>
    {
        let http = answering(status, body);
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_types::region::Region::new("us-east-1"))
            .endpoint_url("http://sts.test")
            .http_client(http)
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIA", "s", None, None, "t",
            ))
            .retry_config(RetryConfig::disabled())
            .load()
            .await;
        let role = aws_config::sts::AssumeRoleProvider::builder("arn:aws:iam::111111111111:role/r")
            .configure(&base)
            .build()
            .await;
        identify_with(shared(role), 200, "").await
    }

    #[tokio::test]
    async fn a_throttled_assume_role_is_throttled_not_a_credentials_problem() {
        let err = through_a_role(400, "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>").await;
        assert_eq!(classify(&err), ErrorKind::Throttled);
        assert_eq!(credentials_failure(&err), None);
        assert!(sdk_error(err, "sts:GetCallerIdentity", "primary").is_retryable());

        let err = through_a_role(503, "").await;
        assert_eq!(classify(&err), ErrorKind::Transient);

        let err = through_a_role(403, "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not allowed</Message></Error></ErrorResponse>").await;
        assert_eq!(classify(&err), ErrorKind::AccessDenied);
        assert_eq!(credentials_failure(&err), None);

        let err = through_a_role(403, "<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code><Message>expired</Message></Error></ErrorResponse>").await;
        assert_eq!(
            credentials_failure(&err),
            Some(CredentialsFailure::Expired("ExpiredToken".into()))
        );
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
