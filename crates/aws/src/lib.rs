//! Shared AWS plumbing for escrow-sync: account sessions and SDK error
//! classification.
//!
//! The escrow identity comes from the standard credential chain or a named
//! profile, optionally through an escrow role. The primary identity is an
//! AssumeRole into the primary's reader role **made with the escrow
//! credentials** (with an optional external id), so the escrow pulls and the
//! primary never holds credentials for the escrow. Both account ids are
//! checked with STS, and a same-account "escrow" is refused.
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
    Connector, EscrowAccount, PrimaryAccount, Session, Sessions, check_accounts, role_account,
};
pub use classify::{classify, classify_code, sdk_error};

pub mod time;

/// The current time in RFC 3339 (UTC, seconds), as provenance tags and
/// run records carry it.
pub fn now_rfc3339() -> String {
    aws_smithy_types::DateTime::from(std::time::SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}
