//! Fault injection: wrap any Source or Sink so that its reads and writes fail
//! transiently, get throttled or fail for good, at chosen rates or keys; and
//! [`FaultCounts`], what every fault suite counts and records.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use escrow_sync_core::{
    Error, ErrorKind, Item, ItemStream, Payload, Receipt, Result, Scope, Sink, Source,
};

/// A kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FaultKind {
    /// A transient error (HTTP 500 InternalError at the HTTP level).
    Transient,
    /// Throttling (HTTP 503 SlowDown).
    Throttle,
    /// A permanent error.
    Permanent,
    /// HTTP 200 whose body is an `<Error>` (S3 CopyObject, UploadPartCopy,
    /// CompleteMultipartUpload).
    ErrorIn200,
    /// A connection dropped before the request reached the server, or in the
    /// middle of the response body.
    ConnectionReset,
}

impl FaultKind {
    /// Every kind, in the order summaries list them.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Transient,
        FaultKind::Throttle,
        FaultKind::Permanent,
        FaultKind::ErrorIn200,
        FaultKind::ConnectionReset,
    ];

    /// The name summaries use.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Transient => "transient",
            FaultKind::Throttle => "throttle",
            FaultKind::Permanent => "permanent",
            FaultKind::ErrorIn200 => "200-with-error",
            FaultKind::ConnectionReset => "connection reset",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How many faults of each kind were injected; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct FaultCounts(Arc<[AtomicU64; 5]>);

impl FaultCounts {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one fault of `kind`.
    pub fn add(&self, kind: FaultKind) {
        self.0[kind.index()].fetch_add(1, Ordering::SeqCst);
    }

    /// How many faults of `kind` were injected.
    pub fn get(&self, kind: FaultKind) -> u64 {
        self.0[kind.index()].load(Ordering::SeqCst)
    }

    /// How many faults were injected in all.
    pub fn total(&self) -> u64 {
        FaultKind::ALL.iter().map(|k| self.get(*k)).sum()
    }

    /// `transient 3, throttle 1, …` (every kind, zeros included).
    pub fn summary(&self) -> String {
        FaultKind::ALL
            .iter()
            .map(|k| format!("{} {}", k.as_str(), self.get(*k)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Adds `other`'s counts to these.
    pub fn absorb(&self, other: &FaultCounts) {
        for k in FaultKind::ALL {
            self.0[k.index()].fetch_add(other.get(k), Ordering::SeqCst);
        }
    }

    /// Prints `faults injected: <test>: <n> (<summary>)` and writes the same
    /// into `target/fault-counts/<test>.txt` (one file per test, so tests
    /// running in parallel do not clash), where `cargo xtask test` sums them.
    /// Returns the total.
    pub fn record(&self, test: &str) -> u64 {
        record_faults(test, self)
    }
}

/// See [`FaultCounts::record`].
pub fn record_faults(test: &str, counts: &FaultCounts) -> u64 {
    let total = counts.total();
    let line = format!("faults injected: {test}: {total} ({})", counts.summary());
    eprintln!("{line}");
    if let Some(dir) = fault_counts_dir() {
        let name: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '.' })
            .collect();
        // Best effort: a read-only target directory must not fail the test.
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{line}\n"));
        }
    }
    total
}

/// `<target>/fault-counts`: `CARGO_TARGET_DIR` when set, else found from the
/// test binary's path (`<target>/<profile>/deps/<binary>`).
fn fault_counts_dir() -> Option<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().ok()?;
            let deps = exe.parent()?;
            if deps.file_name()? != "deps" {
                return None;
            }
            deps.parent()?.parent()?.to_path_buf()
        }
    };
    Some(target.join("fault-counts"))
}

/// Which faults to inject, and how often. Build with the `with_*` setters and
/// wrap a Source or Sink with [`FaultLayer::wrap`]. Everything wrapped by one
/// layer (and its clones) counts into the same [`FaultLayer::counts`].
#[derive(Debug, Clone)]
pub struct FaultLayer {
    transient: f64,
    throttle: f64,
    permanent: f64,
    fail_keys: BTreeSet<String>,
    seed: u64,
    counts: FaultCounts,
}

impl Default for FaultLayer {
    fn default() -> Self {
        FaultLayer {
            transient: 0.0,
            throttle: 0.0,
            permanent: 0.0,
            fail_keys: BTreeSet::new(),
            seed: 0x5eed,
            counts: FaultCounts::new(),
        }
    }
}

impl FaultLayer {
    /// No faults (add them with the setters).
    pub fn new() -> Self {
        Self::default()
    }

    /// The share of calls (0.0..=1.0) that fail with a transient error.
    pub fn with_transient_rate(mut self, rate: f64) -> Self {
        self.transient = rate;
        self
    }

    /// The share of calls that fail with a throttling error.
    pub fn with_throttle_rate(mut self, rate: f64) -> Self {
        self.throttle = rate;
        self
    }

    /// The share of calls that fail with a permanent error.
    pub fn with_permanent_rate(mut self, rate: f64) -> Self {
        self.permanent = rate;
        self
    }

    /// Keys whose every call fails with a permanent error.
    pub fn with_failing_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fail_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// The random seed (runs with the same seed inject the same faults).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The faults injected so far by everything this layer wrapped.
    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }

    /// Wraps `inner`.
    pub fn wrap<T>(&self, inner: T) -> Faulty<T> {
        Faulty {
            inner,
            layer: self.clone(),
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(self.seed))),
            injected: Arc::default(),
        }
    }
}

/// A Source or Sink with faults injected into `read` / `write` / `delete`.
/// Listings pass through untouched.
#[derive(Debug, Clone)]
pub struct Faulty<T> {
    inner: T,
    layer: FaultLayer,
    rng: Arc<Mutex<StdRng>>,
    injected: Arc<AtomicU64>,
}

impl<T> Faulty<T> {
    /// The wrapped value.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// How many faults were injected so far into this wrapped value.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The faults injected by its layer (this value and everything else the
    /// layer wrapped), per kind.
    pub fn counts(&self) -> &FaultCounts {
        &self.layer.counts
    }

    fn maybe_fail(&self, op: &str, key: &str) -> Result<()> {
        let kind = if self.layer.fail_keys.contains(key) {
            Some(ErrorKind::Failed)
        } else {
            let x: f64 = self.rng.lock().expect("lock").random();
            let l = &self.layer;
            if x < l.permanent {
                Some(ErrorKind::Failed)
            } else if x < l.permanent + l.throttle {
                Some(ErrorKind::Throttled)
            } else if x < l.permanent + l.throttle + l.transient {
                Some(ErrorKind::Transient)
            } else {
                None
            }
        };
        match kind {
            None => Ok(()),
            Some(kind) => {
                self.injected.fetch_add(1, Ordering::SeqCst);
                self.layer.counts.add(match kind {
                    ErrorKind::Throttled => FaultKind::Throttle,
                    ErrorKind::Transient => FaultKind::Transient,
                    _ => FaultKind::Permanent,
                });
                Err(Error::new(kind, op, key, "injected fault"))
            }
        }
    }
}

#[async_trait]
impl<T: Source> Source for Faulty<T> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn sorted(&self) -> bool {
        self.inner.sorted()
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        self.maybe_fail("read", &item.key)?;
        self.inner.read(item).await
    }
}

#[async_trait]
impl<T: Sink> Sink for Faulty<T> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn sorted(&self) -> bool {
        self.inner.sorted()
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }

    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        self.maybe_fail("write", &item.key)?;
        self.inner.write(item, payload).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.maybe_fail("delete", key)?;
        self.inner.delete(key).await
    }
}
