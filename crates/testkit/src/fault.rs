//! Fault injection: wrap any Source or Sink so that its reads and writes fail
//! transiently, get throttled or fail for good, at chosen rates or keys.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use escrow_sync_core::{
    Error, ErrorKind, Item, ItemStream, Payload, Receipt, Result, Scope, Sink, Source,
};

/// Which faults to inject, and how often. Build with the `with_*` setters and
/// wrap a Source or Sink with [`FaultLayer::wrap`].
#[derive(Debug, Clone)]
pub struct FaultLayer {
    transient: f64,
    throttle: f64,
    permanent: f64,
    fail_keys: BTreeSet<String>,
    seed: u64,
}

impl Default for FaultLayer {
    fn default() -> Self {
        FaultLayer {
            transient: 0.0,
            throttle: 0.0,
            permanent: 0.0,
            fail_keys: BTreeSet::new(),
            seed: 0x5eed,
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

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
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
