//! Core contracts of escrow-sync: the item model, the [`Source`] and [`Sink`]
//! traits, the pure [`CopyPlan`] planner (batch and streaming merge), the
//! [`Executor`], the [`Job`] contract with its [`JobContext`] and the
//! [`CopyJob`] of any Source/Sink pair, the [`Report`] and the one public
//! [`Error`] type.
//!
//! Nothing here talks to AWS: everything is testable in memory.
//!
//! ```
//! use escrow_sync_core::{CopyPlan, Item, ItemKind, Policy, Action};
//!
//! let primary = vec![
//!     Item::new("a.txt", ItemKind::Object, 5, "\"etag-a\""),
//!     Item::new("b.txt", ItemKind::Object, 7, "\"etag-b2\""),
//! ];
//! let escrow = vec![
//!     Item::new("b.txt", ItemKind::Object, 7, "\"etag-b1\""),
//!     Item::new("gone.txt", ItemKind::Object, 1, "\"etag-g\""),
//! ];
//! let plan = CopyPlan::compute(primary, escrow, &Policy::new()).unwrap();
//! let s = plan.summary();
//! assert_eq!((s.missing, s.changed, s.retain, s.delete), (1, 1, 1, 0));
//! assert!(plan.actions().iter().all(|a| !matches!(a, Action::Delete { .. })));
//! ```
#![deny(missing_docs)]

mod contract;
mod error;
mod executor;
mod guard;
mod item;
mod job;
pub mod layout;
pub mod manifest;
mod pace;
mod plan;
pub mod poll;
mod report;
mod retention;
pub mod snapshot;
pub mod tags;
pub mod time;

pub use contract::{
    ByteStream, ItemStream, Payload, RangeRead, Receipt, Scope, ServerSideRef, Sink, Source,
};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use executor::{
    Executor, ExecutorOptions, ItemLog, ItemOutcome, ItemRecord, ProgressEvent, ProgressFn,
    RetryPolicy,
};
pub use guard::{ChangeTally, MASS_CHANGE, MassChangeGuard};
pub use item::{Item, ItemKind};
pub use job::{CopyJob, Job, JobContext, StopAfterDrain};
pub use pace::{AdaptiveLimit, RequestPacer, paced};
pub use plan::{Action, CopyPlan, CopyReason, PlanSummary, Policy, plan_stream};
pub use report::{Difference, Failure, Finding, KeyDigest, Mode, Report, UNPROTECTED};
pub use retention::{
    EscrowCopy, Kept, LockUpkeep, PruneLimits, PrunePlan, Retained, Retention, cap_new_per_lineage,
    newest_per_group, over_delete_limit, select as select_retained, select_within,
    within_retention,
};
pub use time::{epoch_seconds, rfc3339};

pub use tokio_util::sync::CancellationToken;
