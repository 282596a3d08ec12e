//! Test support for escrow-sync: an in-memory [`MemSource`] and [`MemSink`],
//! a fault-injecting [`FaultLayer`], proptest [`strategies`], and the
//! [`conformance`] suite that every Source/Sink pair runs; with the `http`
//! feature, HTTP-level fault injection for SDK clients ([`http::HttpFaults`])
//! and a log of an SDK client's calls ([`calls::CallLog`]).
//!
//! ```
//! use escrow_sync_core::{Executor, ExecutorOptions, Mode, Scope};
//! use escrow_sync_testkit::{MemBucket, MemSink, MemSource};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let primary = MemBucket::new("primary");
//! primary.put("a.txt", "hello");
//! let escrow = MemBucket::new("escrow");
//! let report = Executor::new(ExecutorOptions::new())
//!     .execute(Mode::Run, &MemSource::new(primary), &MemSink::new(escrow.clone()), &Scope::all())
//!     .await
//!     .unwrap();
//! assert_eq!(report.copied, 1);
//! assert_eq!(escrow.get("a.txt").unwrap().data, "hello");
//! # });
//! ```
#![deny(missing_docs)]

#[cfg(feature = "http")]
pub mod calls;
pub mod conformance;
mod fault;
#[cfg(feature = "http")]
pub mod http;
mod mem;
pub mod strategies;

pub use fault::{FaultCounts, FaultKind, FaultLayer, Faulty, record_faults};
pub use mem::{MemBucket, MemObject, MemSink, MemSource, fingerprint};
