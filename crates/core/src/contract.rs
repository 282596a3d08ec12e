//! The Source and Sink contracts and the payload that travels between them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::{Error, ErrorKind, Item, Result};

/// A stream of listed items; errors end the listing.
pub type ItemStream<'a> = BoxStream<'a, Result<Item>>;

/// A stream of byte chunks.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Which part of a Source or Sink to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only keys starting with this (logical) prefix; empty for everything.
    pub prefix: String,
}

impl Scope {
    /// Everything.
    pub fn all() -> Self {
        Scope::default()
    }

    /// Only keys starting with `prefix`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Scope { prefix: prefix.into() }
    }
}

/// A reference to data that the sink can copy without the bytes passing
/// through this process (S3 CopyObject, EC2 CopySnapshot...).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSideRef {
    /// The service that understands the reference, e.g. `"s3"`.
    pub service: String,
    /// The container (bucket, region...).
    pub container: String,
    /// The key (object key, snapshot id...) inside the container.
    pub key: String,
    /// The fingerprint the data must still have for the copy to be valid
    /// (for S3, the ETag used as `CopySourceIfMatch`).
    pub fingerprint: String,
    /// The account that owns the container, when known.
    pub owner: Option<String>,
    /// A specific version of the key, when the container keeps versions.
    pub version: Option<String>,
    /// Extra attributes the sink must set explicitly (for S3: the object tags).
    pub attributes: BTreeMap<String, String>,
}

impl ServerSideRef {
    /// A reference to `key` in `container` of `service`.
    pub fn new(
        service: impl Into<String>,
        container: impl Into<String>,
        key: impl Into<String>,
        fingerprint: impl Into<String>,
    ) -> Self {
        ServerSideRef {
            service: service.into(),
            container: container.into(),
            key: key.into(),
            fingerprint: fingerprint.into(),
            owner: None,
            version: None,
            attributes: BTreeMap::new(),
        }
    }

    /// Refers to one version of the key.
    pub fn with_version(mut self, version: Option<String>) -> Self {
        self.version = version;
        self
    }

    /// Sets the owning account.
    pub fn with_owner(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    /// Sets the attributes.
    pub fn with_attributes(mut self, attributes: BTreeMap<String, String>) -> Self {
        self.attributes = attributes;
        self
    }
}

/// What a [`Source`] hands to a [`Sink`] for one item.
#[non_exhaustive]
pub enum Payload {
    /// The bytes themselves, as a stream of `len` bytes in total, with the
    /// item's attributes (metadata, tags: sink-specific names).
    Bytes {
        /// Total length.
        len: u64,
        /// The data.
        stream: ByteStream,
        /// Attributes to keep with the copy.
        attributes: BTreeMap<String, String>,
    },
    /// A server-side reference: copy without moving bytes through the client.
    Reference(ServerSideRef),
    /// Bytes the sink reads range by range, as it needs them (streamed copies
    /// in bounded memory: the sink holds only the ranges in flight).
    Ranged(std::sync::Arc<dyn RangeRead>),
}

/// Random access to one item's bytes, for streamed copies.
#[async_trait]
pub trait RangeRead: Send + Sync {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Whether the item is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attributes to keep with the copy (metadata, content headers, tags:
    /// sink-specific names).
    fn attributes(&self) -> &BTreeMap<String, String>;

    /// Bytes `first..=last`. Fails if the item changed since it was listed.
    async fn read_range(&self, first: u64, last: u64) -> Result<Bytes>;
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Bytes { len, attributes, .. } => f
                .debug_struct("Bytes")
                .field("len", len)
                .field("attributes", attributes)
                .finish_non_exhaustive(),
            Payload::Reference(r) => f.debug_tuple("Reference").field(r).finish(),
            Payload::Ranged(r) => f
                .debug_struct("Ranged")
                .field("len", &r.len())
                .field("attributes", r.attributes())
                .finish_non_exhaustive(),
        }
    }
}

impl Payload {
    /// A byte payload from one in-memory buffer.
    pub fn from_bytes(data: Bytes, attributes: BTreeMap<String, String>) -> Self {
        let len = data.len() as u64;
        Payload::Bytes {
            len,
            stream: Box::pin(futures::stream::once(async move { Ok(data) })),
            attributes,
        }
    }

    /// Collects a byte payload into memory (tests and small objects only).
    pub async fn collect(self) -> Result<(Bytes, BTreeMap<String, String>)> {
        use futures::TryStreamExt;
        match self {
            Payload::Bytes { stream, attributes, len } => {
                let chunks: Vec<Bytes> = stream.try_collect().await?;
                let mut buf = Vec::with_capacity(len as usize);
                for c in chunks {
                    buf.extend_from_slice(&c);
                }
                Ok((Bytes::from(buf), attributes))
            }
            Payload::Ranged(r) => {
                let data =
                    if r.is_empty() { Bytes::new() } else { r.read_range(0, r.len() - 1).await? };
                Ok((data, r.attributes().clone()))
            }
            Payload::Reference(r) => Err(Error::new(
                ErrorKind::Unsupported,
                "collect",
                format!("{}://{}/{}", r.service, r.container, r.key),
                "a server-side reference has no bytes to collect",
            )),
        }
    }
}

/// What a sink reports after writing one item.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// Bytes copied (server-side copies count the object size).
    pub bytes: u64,
    /// The fingerprint of the copy as the sink sees it, when known.
    pub fingerprint: Option<String>,
    /// How many parts the copy was made of (0 or 1: a single request).
    pub parts: u32,
    /// The sink found escrow already held the item: nothing was written.
    pub unchanged: bool,
}

impl Receipt {
    /// A receipt for `bytes` copied.
    pub fn new(bytes: u64, fingerprint: Option<String>) -> Self {
        Receipt { bytes, fingerprint, parts: 1, unchanged: false }
    }

    /// Nothing was written: escrow already held the item.
    pub fn unchanged() -> Self {
        Receipt { bytes: 0, fingerprint: None, parts: 0, unchanged: true }
    }

    /// Records that the copy was made of `parts` parts.
    pub fn with_parts(mut self, parts: u32) -> Self {
        self.parts = parts;
        self
    }
}

/// Where data comes from (the primary account).
#[async_trait]
pub trait Source: Send + Sync {
    /// A human-readable location, e.g. `s3://prod-assets/data/`.
    fn describe(&self) -> String;

    /// Whether [`Source::list`] yields keys in ascending byte order.
    /// When both sides are sorted the planner streams instead of buffering.
    fn sorted(&self) -> bool {
        false
    }

    /// Lists the items in `scope`.
    fn list(&self, scope: &Scope) -> ItemStream<'_>;

    /// Produces the payload for one listed item.
    async fn read(&self, item: &Item) -> Result<Payload>;

    /// The item's full-content checksum (`ALGORITHM:value`), if the source
    /// keeps one; used by verify to compare content beyond the listing.
    async fn checksum(&self, item: &Item) -> Result<Option<String>> {
        let _ = item;
        Ok(None)
    }

    /// Whether [`Source::tags`] says anything: `verify` then compares each
    /// item's tags on both sides (a difference is a finding).
    fn keeps_tags(&self) -> bool {
        false
    }

    /// The item's tags, where its copies carry them (`None`: not kept).
    async fn tags(&self, item: &Item) -> Result<Option<BTreeMap<String, String>>> {
        let _ = item;
        Ok(None)
    }

    /// Called once the item is safely in escrow, to undo what
    /// [`Source::read`] had to do in the primary (for snapshots: remove the
    /// share with the escrow account). Retried like a copy; a failure is
    /// reported as a warning, the copy stands.
    async fn finish(&self, item: &Item) -> Result<()> {
        let _ = item;
        Ok(())
    }

    /// Whether a run also calls [`Source::finish`] for items escrow already
    /// holds, so the source can undo what an interrupted run left behind (a
    /// share never removed because the run stopped between the copy and
    /// `finish`). `finish` must then change nothing when there is nothing to
    /// undo, or a re-run would no longer be free of mutating calls.
    fn finishes_skipped(&self) -> bool {
        false
    }

    /// Whether [`Source::assess`] says anything (plan asks it per missing
    /// item only then).
    fn assesses(&self) -> bool {
        false
    }

    /// For `plan`: what copying `item` would take beyond a plain copy, found
    /// without changing anything. `Ok(None)` for a plain copy;
    /// `Ok(Some(status))` for one that needs more (e.g. `"needs
    /// re-encryption: ..."`); an error of kind [`ErrorKind::Unsupported`]
    /// when it cannot be copied (its message says why).
    async fn assess(&self, item: &Item) -> Result<Option<String>> {
        let _ = item;
        Ok(None)
    }
}

/// Where data goes (the escrow account).
#[async_trait]
pub trait Sink: Send + Sync {
    /// A human-readable location, e.g. `s3://escrow-assets/`.
    fn describe(&self) -> String;

    /// Whether [`Sink::list`] yields keys in ascending byte order.
    fn sorted(&self) -> bool {
        false
    }

    /// Lists what escrow already holds in `scope`, keys in the source's key space.
    fn list(&self, scope: &Scope) -> ItemStream<'_>;

    /// Writes one item. Must be idempotent: writing the same item twice
    /// leaves one copy. Must not leave a partial copy that a later listing
    /// would take for complete.
    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt>;

    /// Whether the escrow item `escrow` holds the same content as the source
    /// `item` although their listings differ (a multipart copy's ETag, for
    /// example). Called for changed items before copying them and when
    /// planning or verifying; must not change anything. Default: no.
    async fn confirm_same(&self, item: &Item, escrow: &Item) -> Result<bool> {
        let _ = (item, escrow);
        Ok(false)
    }

    /// The escrow copy's full-content checksum (`ALGORITHM:value`), if kept.
    async fn checksum(&self, item: &Item) -> Result<Option<String>> {
        let _ = item;
        Ok(None)
    }

    /// The escrow copy's tags (`None`: not kept), compared by `verify`
    /// with [`Source::tags`].
    async fn tags(&self, item: &Item) -> Result<Option<BTreeMap<String, String>>> {
        let _ = item;
        Ok(None)
    }

    /// Whether [`Sink::audit`] checks anything (protection is configured).
    fn audits(&self) -> bool {
        false
    }

    /// The protection problems of the escrow copy of `item` (missing
    /// encryption with the escrow key, missing retention...), each a short
    /// sentence; empty when the copy is as protected as configured. Called by
    /// `verify` for items escrow holds, when [`Sink::audits`] says so.
    async fn audit(&self, item: &Item) -> Result<Vec<String>> {
        let _ = item;
        Ok(Vec::new())
    }

    /// Deletes one item. Only called when the policy explicitly allows it;
    /// escrow sinks refuse by default.
    async fn delete(&self, key: &str) -> Result<()> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "delete",
            format!("{}{}", self.describe(), key),
            "escrow is append-only: this sink never deletes",
        ))
    }
}

/// Forwards every [`Source`] and [`Sink`] method through a smart pointer, so
/// `Box<dyn Source>`, `Arc<dyn Sink>` and the like are sources and sinks
/// themselves (a [`crate::CopyJob`] of trait objects).
macro_rules! forward {
    ($ptr:ident) => {
        #[async_trait]
        impl<T: Source + ?Sized> Source for $ptr<T> {
            fn describe(&self) -> String {
                (**self).describe()
            }
            fn sorted(&self) -> bool {
                (**self).sorted()
            }
            fn list(&self, scope: &Scope) -> ItemStream<'_> {
                (**self).list(scope)
            }
            async fn read(&self, item: &Item) -> Result<Payload> {
                (**self).read(item).await
            }
            async fn checksum(&self, item: &Item) -> Result<Option<String>> {
                (**self).checksum(item).await
            }
            fn keeps_tags(&self) -> bool {
                (**self).keeps_tags()
            }
            async fn tags(&self, item: &Item) -> Result<Option<BTreeMap<String, String>>> {
                (**self).tags(item).await
            }
            async fn finish(&self, item: &Item) -> Result<()> {
                (**self).finish(item).await
            }
            fn finishes_skipped(&self) -> bool {
                (**self).finishes_skipped()
            }
            fn assesses(&self) -> bool {
                (**self).assesses()
            }
            async fn assess(&self, item: &Item) -> Result<Option<String>> {
                (**self).assess(item).await
            }
        }

        #[async_trait]
        impl<T: Sink + ?Sized> Sink for $ptr<T> {
            fn describe(&self) -> String {
                (**self).describe()
            }
            fn sorted(&self) -> bool {
                (**self).sorted()
            }
            fn list(&self, scope: &Scope) -> ItemStream<'_> {
                (**self).list(scope)
            }
            async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
                (**self).write(item, payload).await
            }
            async fn confirm_same(&self, item: &Item, escrow: &Item) -> Result<bool> {
                (**self).confirm_same(item, escrow).await
            }
            async fn checksum(&self, item: &Item) -> Result<Option<String>> {
                (**self).checksum(item).await
            }
            async fn tags(&self, item: &Item) -> Result<Option<BTreeMap<String, String>>> {
                (**self).tags(item).await
            }
            fn audits(&self) -> bool {
                (**self).audits()
            }
            async fn audit(&self, item: &Item) -> Result<Vec<String>> {
                (**self).audit(item).await
            }
            async fn delete(&self, key: &str) -> Result<()> {
                (**self).delete(key).await
            }
        }
    };
}

use std::sync::Arc;
forward!(Box);
forward!(Arc);
