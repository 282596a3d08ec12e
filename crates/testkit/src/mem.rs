//! In-memory Source and Sink over a shared map of objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Receipt, Result, Scope, Sink, Source,
};

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemObject {
    /// The content.
    pub data: Bytes,
    /// Attributes (metadata, tags).
    pub attributes: BTreeMap<String, String>,
}

/// The fingerprint the in-memory store gives `data` (FNV-1a 64, hex, quoted like an ETag).
pub fn fingerprint(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// A shared in-memory bucket: clones see the same objects.
#[derive(Debug, Clone, Default)]
pub struct MemBucket {
    name: String,
    objects: Arc<Mutex<BTreeMap<String, MemObject>>>,
}

impl MemBucket {
    /// An empty bucket called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MemBucket { name: name.into(), objects: Arc::default() }
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stores `data` under `key`.
    pub fn put(&self, key: impl Into<String>, data: impl Into<Bytes>) {
        self.put_with(key, data, BTreeMap::new());
    }

    /// Stores `data` with attributes under `key`.
    pub fn put_with(
        &self,
        key: impl Into<String>,
        data: impl Into<Bytes>,
        attributes: BTreeMap<String, String>,
    ) {
        let obj = MemObject { data: data.into(), attributes };
        self.objects.lock().expect("lock").insert(key.into(), obj);
    }

    /// Removes `key`.
    pub fn remove(&self, key: &str) -> Option<MemObject> {
        self.objects.lock().expect("lock").remove(key)
    }

    /// The object under `key`.
    pub fn get(&self, key: &str) -> Option<MemObject> {
        self.objects.lock().expect("lock").get(key).cloned()
    }

    /// All keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().expect("lock").keys().cloned().collect()
    }

    /// How many objects are stored.
    pub fn len(&self) -> usize {
        self.objects.lock().expect("lock").len()
    }

    /// Whether no object is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn listing(&self, scope: &Scope) -> Vec<Item> {
        self.objects
            .lock()
            .expect("lock")
            .iter()
            .filter(|(k, _)| k.starts_with(&scope.prefix))
            .map(|(k, o)| {
                Item::new(k.clone(), ItemKind::Object, o.data.len() as u64, fingerprint(&o.data))
            })
            .collect()
    }
}

impl MemBucket {
    fn stream(&self, scope: &Scope, sorted: bool) -> ItemStream<'static> {
        let mut items = self.listing(scope);
        if !sorted {
            shuffle_deterministic(&mut items);
        }
        futures::stream::iter(items.into_iter().map(Ok)).boxed()
    }
}

fn shuffle_deterministic(items: &mut [Item]) {
    // Reverse-interleave: deterministic and clearly not sorted.
    items.reverse();
    let n = items.len();
    for i in (0..n).step_by(2) {
        if i + 1 < n {
            items.swap(i, i + 1);
        }
    }
}

/// An in-memory [`Source`].
#[derive(Debug, Clone)]
pub struct MemSource {
    bucket: MemBucket,
    sorted: bool,
    reads: Arc<AtomicU64>,
}

impl MemSource {
    /// A source over `bucket`, listing in key order.
    pub fn new(bucket: MemBucket) -> Self {
        MemSource { bucket, sorted: true, reads: Arc::default() }
    }

    /// Lists in a scrambled order instead (exercises the batch planner).
    pub fn with_unsorted_listing(mut self) -> Self {
        self.sorted = false;
        self
    }

    /// How many reads were made.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Source for MemSource {
    fn describe(&self) -> String {
        format!("mem://{}/", self.bucket.name)
    }

    fn sorted(&self) -> bool {
        self.sorted
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.bucket.stream(scope, self.sorted)
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let resource = format!("{}/{}", self.bucket.name, item.key);
        let obj = self
            .bucket
            .get(&item.key)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "mem:read", resource.clone(), ""))?;
        if fingerprint(&obj.data) != item.fingerprint {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "mem:read",
                resource,
                "the object changed after it was listed; the next run copies it",
            ));
        }
        Ok(Payload::from_bytes(obj.data, obj.attributes))
    }
}

/// An in-memory [`Sink`] that counts its mutating calls.
#[derive(Debug, Clone)]
pub struct MemSink {
    bucket: MemBucket,
    sorted: bool,
    writes: Arc<AtomicU64>,
    per_key: Arc<Mutex<HashMap<String, u64>>>,
}

impl MemSink {
    /// A sink over `bucket`, listing in key order.
    pub fn new(bucket: MemBucket) -> Self {
        MemSink { bucket, sorted: true, writes: Arc::default(), per_key: Arc::default() }
    }

    /// Lists in a scrambled order instead.
    pub fn with_unsorted_listing(mut self) -> Self {
        self.sorted = false;
        self
    }

    /// How many writes (mutating calls) were made.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// How many times `key` was written.
    pub fn writes_of(&self, key: &str) -> u64 {
        self.per_key.lock().expect("lock").get(key).copied().unwrap_or(0)
    }

    /// The bucket.
    pub fn bucket(&self) -> &MemBucket {
        &self.bucket
    }
}

#[async_trait]
impl Sink for MemSink {
    fn describe(&self) -> String {
        format!("mem://{}/", self.bucket.name)
    }

    fn sorted(&self) -> bool {
        self.sorted
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.bucket.stream(scope, self.sorted)
    }

    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        let (data, attributes) = payload.collect().await?;
        if data.len() as u64 != item.size {
            return Err(Error::new(
                ErrorKind::Failed,
                "mem:write",
                format!("{}/{}", self.bucket.name, item.key),
                format!("expected {} bytes, got {}", item.size, data.len()),
            ));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        *self.per_key.lock().expect("lock").entry(item.key.clone()).or_default() += 1;
        let fp = fingerprint(&data);
        let len = data.len() as u64;
        self.bucket.put_with(item.key.clone(), data, attributes);
        Ok(Receipt::new(len, Some(fp)))
    }
}
