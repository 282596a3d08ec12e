//! Shared AWS plumbing for escrow-sync: account sessions and SDK error
//! classification.
//!
//! The escrow identity comes from the standard credential chain or a named
//! profile, optionally through an escrow role (external id, session name
//! and duration); its region from the config or the SDK's region chain. The
//! primary identity is an AssumeRole into the primary's reader role **made
//! with the escrow credentials** (or a primary profile's, as the AWS CLI's
//! `source_profile`), with an optional external id, on the primary's own
//! endpoint, so the escrow pulls and the primary never holds credentials
//! for the escrow. Both account ids are checked with STS, and a
//! same-account "escrow" is refused. Missing or expired credentials are one
//! clear error that says what was tried and how to fix it.
//!
//! Every configuration the [`Connector`] loads retries with the shared
//! retry policy ([`retry_config`]).
//!
//! Endpoint overrides (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, or
//! `endpoint_url` in the config) are honoured through aws-config.
//!
//! ```
//! use escrow_sync_aws::{EscrowAccount, PrimaryAccount, check_accounts};
//!
//! let escrow = EscrowAccount::new("us-east-1")
//!     .with_role_arn(Some("arn:aws:iam::222222222222:role/escrow-operator".into()));
//! let primary = PrimaryAccount::new("111111111111")
//!     .with_role_arn(Some("arn:aws:iam::111111111111:role/escrow-reader".into()))
//!     .with_external_id(Some("my-external-id".into()));
//! check_accounts(&escrow, &primary).unwrap();
//! // `Connector::new().connect(&escrow, &primary).await` then yields the sessions.
//! ```
#![deny(missing_docs)]

mod account;
mod classify;

pub use account::{
    Connector, EscrowAccount, PrimaryAccount, ROLE_SESSION_SECONDS, Session, Sessions,
    check_accounts, check_escrow_role, retry_config, role_account,
};
pub use classify::{CredentialsFailure, classify, classify_code, credentials_failure, sdk_error};

pub mod time;

/// The current time in RFC 3339 (UTC, seconds), as provenance tags and
/// run records carry it.
pub fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}
