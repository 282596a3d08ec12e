//! Counting an SDK client's calls (feature `http`): [`CallLog`] is an
//! interceptor that records the name of every operation a client sends, so
//! a test can prove that a re-run makes no mutating call.
//!
//! ```
//! let log = escrow_sync_testkit::calls::CallLog::new();
//! // aws_sdk_ec2::config::Builder::from(&sdk_config).interceptor(log.clone())
//! assert_eq!(log.mutating_count(), 0);
//! ```

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Operation name prefixes that only read.
const READS: [&str; 4] = ["Describe", "List", "Get", "Head"];

/// Records the operation name of every request of the clients it is
/// installed on (`config::Builder::interceptor(log.clone())`); clones share
/// the record.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<String>>>);

impl CallLog {
    /// An empty log.
    pub fn new() -> Self {
        CallLog::default()
    }

    /// Every operation sent so far, in order (e.g. `CopySnapshot`).
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().expect("call log").clone()
    }

    /// The operations sent so far that are not reads (not `Describe*`,
    /// `List*`, `Get*` or `Head*`).
    pub fn mutating(&self) -> Vec<String> {
        self.calls().into_iter().filter(|c| !READS.iter().any(|r| c.starts_with(r))).collect()
    }

    /// How many of [`CallLog::mutating`] there are.
    pub fn mutating_count(&self) -> u64 {
        self.mutating().len() as u64
    }

    /// How many times `operation` was sent.
    pub fn count(&self, operation: &str) -> u64 {
        self.0.lock().expect("call log").iter().filter(|c| *c == operation).count() as u64
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            self.0.lock().expect("call log").push(m.name().to_string());
        }
        Ok(())
    }
}
