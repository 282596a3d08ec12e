//! Sharded runs (`run --shard I/N`): one S3 job cut into N disjoint key
//! ranges, each run by its own process.
//!
//! - **Parts are key ranges.** `N - 1` [`Boundaries`], strictly ascending,
//!   cut the key space: part 1 holds the keys `k <= b1`, part `i` the keys
//!   `b(i-1) < k <= b(i)`, part `N` the keys `k > b(N-1)`. Every key is in
//!   exactly one part whatever the boundaries are (a key equal to a
//!   boundary is in the part below it), so the boundaries decide only how
//!   even the parts are, never what is copied. ListObjectsV2 is sorted: a
//!   part lists from `StartAfter` its lower bound and stops past its upper
//!   one, on both sides (the primary's listing and escrow's), so the plan
//!   never takes a key of another part for missing.
//! - **Computed once per job.** The boundaries of a job for `N` parts are
//!   given in the config (`shard_boundaries`) or sampled from a listing of
//!   the job's keys and stored in escrow ([`BoundaryStore`]) with a
//!   conditional create (`If-None-Match: *`): of N runners starting at
//!   once, one record wins and every runner uses it (a loser reads the
//!   winner's). Each N has a record of its own, so a set made for another N
//!   is never used; a record that does not parse, is not for N parts or
//!   whose digest does not match its boundaries is refused.
//! - **Sampled.** [`KeySampler`] keeps every `stride`-th key of one listing
//!   of the job's keys, doubling the stride whenever it holds
//!   [`SAMPLE_KEYS`] (so memory stays bounded), and takes the N-quantiles
//!   of what it kept. The cost is one listing of the job: one ListObjectsV2
//!   per 1,000 keys (listed in key ranges at once, as every run lists),
//!   once per job and N — ListObjectsV2 cannot count keys, so a listing of
//!   part of the key space could not say how the rest is spread. Runners
//!   that start before the record exists each list; only one set is kept.

use std::fmt;
use std::str::FromStr;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Error, ErrorKind, Result, Scope, Source};

use crate::S3Source;

/// The most parts a job may be cut into.
pub const MAX_SHARDS: u32 = 256;

/// The most keys a [`KeySampler`] holds.
pub const SAMPLE_KEYS: usize = 4096;

/// The longest boundary (S3's longest key, in bytes).
const MAX_BOUNDARY_BYTES: usize = 1024;

/// The most bytes a stored boundary record may hold: [`MAX_SHARDS`] keys of
/// [`MAX_BOUNDARY_BYTES`] each, every byte escaped in JSON at worst (`\u0001`
/// is six bytes for one), with room for the indentation and other fields.
const MAX_RECORD_BYTES: usize = (MAX_SHARDS as usize + 8) * (MAX_BOUNDARY_BYTES * 6 + 64);

/// The format tag of a stored boundary record.
pub const BOUNDARIES_FORMAT: &str = "escrow-sync-shard-boundaries/1";

/// One part of N (`I/N`, `I` from 1 to N).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Part `index` (1 to `count`) of `count` (1 to [`MAX_SHARDS`]); else an
    /// [`ErrorKind::InvalidConfig`] error naming the fix.
    pub fn new(index: u32, count: u32) -> Result<Shard> {
        Shard::checked(index, count).map_err(Error::invalid_config)
    }

    fn checked(index: u32, count: u32) -> std::result::Result<Shard, String> {
        if !(1..=MAX_SHARDS).contains(&count) {
            return Err(format!(
                "--shard {index}/{count}: N is the number of parts, 1 to {MAX_SHARDS}"
            ));
        }
        if !(1..=count).contains(&index) {
            return Err(format!(
                "--shard {index}/{count}: I is the part this process runs, 1 to N ({count}); \
                 run N processes with --shard 1/{count} to {count}/{count}"
            ));
        }
        Ok(Shard { index, count })
    }

    /// Reads `I/N` (e.g. `2/4`); an error naming the fix otherwise.
    pub fn parse(text: &str) -> Result<Shard> {
        text.parse().map_err(Error::invalid_config)
    }

    /// `I`, from 1.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// `N`.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this is part 1, the one that does what a job does once for
    /// all its parts (the rolling retention pass, aborting stale uploads).
    pub fn is_first(&self) -> bool {
        self.index == 1
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Shard, String> {
        let bad = || {
            format!(
                "--shard {text:?}: write I/N, e.g. --shard 2/4 for the second of four parts (I \
                 from 1 to N)"
            )
        };
        let (i, n) = text.trim().split_once('/').ok_or_else(bad)?;
        let (i, n) = (i.trim().parse::<u32>(), n.trim().parse::<u32>());
        let (Ok(i), Ok(n)) = (i, n) else { return Err(bad()) };
        Shard::checked(i, n)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The keys `k` with `after < k <= until` (a bound that is `None` is
/// open).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyRange {
    after: Option<String>,
    until: Option<String>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange::default()
    }

    /// The keys after `after` up to and including `until`.
    pub fn new(after: Option<String>, until: Option<String>) -> Self {
        KeyRange { after, until }
    }

    /// The exclusive lower bound.
    pub fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// The inclusive upper bound.
    pub fn until(&self) -> Option<&str> {
        self.until.as_deref()
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &str) -> bool {
        self.after.as_deref().is_none_or(|a| key > a)
            && self.until.as_deref().is_none_or(|u| key <= u)
    }

    /// Whether the range holds every key.
    pub fn is_all(&self) -> bool {
        self.after.is_none() && self.until.is_none()
    }

    /// The same range of keys with `prefix` before each (a sink's
    /// destination prefix).
    pub(crate) fn prefixed(&self, prefix: &str) -> KeyRange {
        let with = |b: &Option<String>| b.as_ref().map(|b| format!("{prefix}{b}"));
        KeyRange { after: with(&self.after), until: with(&self.until) }
    }

    /// The same range with the first `strip` bytes of each bound removed
    /// (listed keys stripped of a destination prefix). A bound shorter than
    /// that (or not cut at a character boundary) becomes empty.
    pub(crate) fn stripped(&self, strip: usize) -> KeyRange {
        let cut = |b: &Option<String>| b.as_ref().map(|b| b.get(strip..).unwrap_or("").to_string());
        KeyRange { after: cut(&self.after), until: cut(&self.until) }
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.after, &self.until) {
            (None, None) => write!(f, "every key"),
            (Some(a), None) => write!(f, "keys after {a:?}"),
            (None, Some(u)) => write!(f, "keys up to {u:?}"),
            (Some(a), Some(u)) => write!(f, "keys after {a:?} up to {u:?}"),
        }
    }
}

/// `N - 1` keys, strictly ascending, that cut a job's key space into `N`
/// parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boundaries {
    keys: Vec<String>,
}

impl Boundaries {
    /// Boundaries from `keys`: each non-empty and at most 1,024 bytes, all
    /// strictly ascending (sorted as S3 sorts keys, by their UTF-8 bytes,
    /// none twice); else the problem, naming the fix.
    pub fn new(keys: Vec<String>) -> std::result::Result<Boundaries, String> {
        if let Some(k) = keys.iter().find(|k| k.is_empty() || k.len() > MAX_BOUNDARY_BYTES) {
            return Err(format!(
                "shard boundary {k:?} is empty or longer than {MAX_BOUNDARY_BYTES} bytes: give \
                 keys as S3 names them"
            ));
        }
        if let Some(w) = keys.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!(
                "shard boundaries must be sorted and distinct (as S3 lists keys, by their \
                 UTF-8 bytes): {:?} is followed by {:?}; sort them and remove duplicates",
                w[0], w[1]
            ));
        }
        if keys.len() >= MAX_SHARDS as usize {
            return Err(format!(
                "{} shard boundaries make {} parts; at most {MAX_SHARDS} parts",
                keys.len(),
                keys.len() + 1
            ));
        }
        Ok(Boundaries { keys })
    }

    /// The keys.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// How many parts they make (one more than the keys).
    pub fn parts(&self) -> u32 {
        self.keys.len() as u32 + 1
    }

    /// `sha256:<hex>` of the boundaries: what each part's manifest records,
    /// so that parts cut by different boundaries are never merged.
    pub fn digest(&self) -> String {
        let mut h = sha2::Sha256::new();
        for k in &self.keys {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
        }
        format!("sha256:{}", h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    /// The key range of `shard`; an error when the boundaries make another
    /// number of parts.
    pub fn range(&self, shard: Shard) -> Result<KeyRange> {
        if shard.count() != self.parts() {
            return Err(Error::invalid_config(format!(
                "--shard {shard} asks for {} parts, but the {} shard boundaries make {}: run \
                 --shard I/{} or give {} boundaries",
                shard.count(),
                self.keys.len(),
                self.parts(),
                self.parts(),
                shard.count() - 1
            )));
        }
        let i = shard.index() as usize;
        let after = (i > 1).then(|| self.keys[i - 2].clone());
        let until = (i < self.keys.len() + 1).then(|| self.keys[i - 1].clone());
        Ok(KeyRange { after, until })
    }
}

/// Keeps a bounded, evenly spaced sample of a sorted listing: every
/// `stride`-th key, the stride doubling whenever [`SAMPLE_KEYS`] are held.
#[derive(Debug, Clone)]
pub struct KeySampler {
    kept: Vec<String>,
    stride: u64,
    seen: u64,
}

impl Default for KeySampler {
    fn default() -> Self {
        KeySampler { kept: Vec::new(), stride: 1, seen: 0 }
    }
}

impl KeySampler {
    /// An empty sampler.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next key of the listing (keys come in ascending order).
    pub fn push(&mut self, key: &str) {
        if self.seen.is_multiple_of(self.stride) {
            self.kept.push(key.to_string());
            if self.kept.len() >= SAMPLE_KEYS {
                // Keep positions 0, 2*stride, 4*stride...
                let mut i = 0;
                self.kept.retain(|_| {
                    i += 1;
                    (i - 1) % 2 == 0
                });
                self.stride *= 2;
            }
        }
        self.seen += 1;
    }

    /// Keys pushed.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Boundaries that cut the listing into `parts` parts of about the same
    /// number of keys. With fewer distinct keys than parts, the last
    /// boundaries are made above the last key (those parts hold nothing
    /// now).
    pub fn boundaries(&self, parts: u32) -> Boundaries {
        let n = parts.max(1) as usize;
        let mut keys: Vec<String> = Vec::with_capacity(n - 1);
        for j in 1..n {
            // The key that ends part j: at about j/n of the listing.
            let at = (j * self.kept.len()) / n;
            if let Some(k) = at.checked_sub(1).and_then(|a| self.kept.get(a))
                && keys.last().is_none_or(|last| k > last)
            {
                keys.push(k.clone());
            }
        }
        let base = keys.last().cloned().or_else(|| self.kept.last().cloned()).unwrap_or_default();
        let above = short_key_above(&base);
        let mut extra = 0;
        while keys.len() < n - 1 {
            extra += 1;
            keys.push(format!("{above}{extra:04}"));
        }
        Boundaries { keys }
    }
}

/// A short key prefix above `base` in S3's order (UTF-8 bytes), so that
/// `<it><anything>` sorts after `base` however long `base` is: `base` up to
/// its first character below U+10FFFF, that character's successor in its
/// place. Only a `base` made of U+10FFFF alone (or empty) is kept whole.
fn short_key_above(base: &str) -> String {
    for (at, c) in base.char_indices() {
        let next = match c as u32 {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(next) = next {
            return format!("{}{next}", &base[..at]);
        }
    }
    base.to_string()
}

/// Samples boundaries for `parts` parts from one listing of `source`'s
/// keys in `scope` (see the module docs for the cost); returns them and
/// how many keys were listed.
pub async fn sample_boundaries(
    source: &S3Source,
    scope: &Scope,
    parts: u32,
) -> Result<(Boundaries, u64)> {
    let whole = source.clone().with_key_range(KeyRange::all());
    let mut sampler = KeySampler::new();
    let mut items = whole.list(scope);
    while let Some(item) = items.try_next().await? {
        sampler.push(&item.key);
    }
    let sampled = sampler.boundaries(parts);
    // Checked before they are stored: boundaries that would be refused once
    // stored are never stored.
    let checked = Boundaries::new(sampled.keys).map_err(|why| {
        Error::new(
            ErrorKind::Unsupported,
            "shard boundaries",
            source.bucket().to_string(),
            format!(
                "the boundaries sampled from the listing cannot be used ({why}): give the job \
                 shard_boundaries in the config"
            ),
        )
    })?;
    Ok((checked, sampler.seen()))
}

/// A stored set of boundaries (JSON), as [`BoundaryStore`] writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundaryRecord {
    /// [`BOUNDARIES_FORMAT`].
    pub format: String,
    /// The job.
    pub job: String,
    /// How many parts.
    pub parts: u32,
    /// The boundaries.
    pub boundaries: Vec<String>,
    /// [`Boundaries::digest`] of them.
    pub digest: String,
    /// How many keys the sampled listing held.
    pub listed_keys: u64,
    /// When they were made (RFC 3339).
    pub made_at: String,
    /// Who made them (host, process, run id).
    pub made_by: String,
}

impl BoundaryRecord {
    /// The record of `boundaries` for `job`, made now by run `run_id`.
    pub fn new(job: &str, boundaries: &Boundaries, listed_keys: u64, run_id: &str) -> Self {
        BoundaryRecord {
            format: BOUNDARIES_FORMAT.to_string(),
            job: job.to_string(),
            parts: boundaries.parts(),
            boundaries: boundaries.keys().to_vec(),
            digest: boundaries.digest(),
            listed_keys,
            made_at: escrow_sync_core::rfc3339(std::time::SystemTime::now()),
            made_by: format!("host {} pid {} run {run_id}", crate::host_name(), std::process::id()),
        }
    }

    /// The boundaries, checked: the format, the number of parts, their
    /// order and the digest.
    pub fn boundaries(&self, parts: u32) -> std::result::Result<Boundaries, String> {
        if self.format != BOUNDARIES_FORMAT {
            return Err(format!("its format is {:?}, not {BOUNDARIES_FORMAT}", self.format));
        }
        let b = Boundaries::new(self.boundaries.clone())?;
        if b.parts() != parts || self.parts != parts {
            return Err(format!(
                "it holds {} boundaries for {} parts, not {} for {parts}",
                self.boundaries.len(),
                self.parts,
                parts - 1
            ));
        }
        if b.digest() != self.digest {
            return Err(format!(
                "its digest {} is not that of its boundaries ({}): it was edited",
                self.digest,
                b.digest()
            ));
        }
        Ok(b)
    }
}

/// Where a job's sampled boundaries for N parts are kept in escrow, and
/// how they are agreed on.
#[derive(Debug, Clone)]
pub struct BoundaryStore {
    client: Client,
    bucket: String,
    key: String,
    owner: Option<String>,
    kms_key_id: Option<String>,
}

/// Boundaries a part runs with, and where they came from.
#[derive(Debug, Clone)]
pub struct AgreedBoundaries {
    /// The boundaries.
    pub boundaries: Boundaries,
    /// The record as stored.
    pub record: BoundaryRecord,
    /// Whether this run made them (else another run had).
    pub made_here: bool,
}

impl BoundaryStore {
    /// The record at `bucket`/`key`, written with `client` (escrow
    /// credentials).
    pub fn from_client(client: Client, bucket: impl Into<String>, key: impl Into<String>) -> Self {
        BoundaryStore {
            client,
            bucket: bucket.into(),
            key: key.into(),
            owner: None,
            kms_key_id: None,
        }
    }

    /// The account that must own the bucket (`ExpectedBucketOwner`).
    pub fn with_expected_owner(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    /// Encrypt the record with this escrow KMS key (SSE-KMS).
    pub fn with_kms_key_id(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }

    /// `s3://bucket/key` of the record.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The stored record, if any (not checked).
    pub async fn read(&self) -> Result<Option<BoundaryRecord>> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_expected_bucket_owner(self.owner.clone())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let err = sdk_error(e, "s3:GetObject", self.location());
                return if err.kind() == ErrorKind::NotFound { Ok(None) } else { Err(err) };
            }
        };
        if out.content_length().unwrap_or(0) > MAX_RECORD_BYTES as i64 {
            return Err(self.refused("it is larger than any boundary record"));
        }
        let body = out.body.collect().await.map_err(|e| {
            Error::new(ErrorKind::Transient, "s3:GetObject", self.location(), "").with_source(e)
        })?;
        serde_json::from_slice(&body.into_bytes())
            .map(Some)
            .map_err(|e| self.refused(&format!("it is not a boundary record ({e})")))
    }

    fn refused(&self, why: &str) -> Error {
        Error::new(
            ErrorKind::PreconditionFailed,
            "shard boundaries",
            self.location(),
            format!(
                "{why}; escrow-sync did not write it so and will not cut the job by it. Find \
                 out who wrote it (its versions in the bucket say when), then either give the \
                 job shard_boundaries in the config (they replace the stored set), or remove \
                 the record so that the next part samples the job again; the parts cut by \
                 other boundaries are never merged with the earlier parts, so run every part \
                 again"
            ),
        )
    }

    /// The boundaries of `job` for `parts` parts: the stored record, else
    /// the ones `make` computes, stored with `If-None-Match: *`; when
    /// another run stored its own meanwhile, that one (every runner uses
    /// the same). A stored record that does not check
    /// ([`BoundaryRecord::boundaries`]) is an error, never replaced.
    pub async fn agree<F, Fut>(&self, parts: u32, make: F) -> Result<AgreedBoundaries>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<BoundaryRecord>>,
    {
        if let Some(record) = self.read().await? {
            return self.checked(record, parts, false);
        }
        let record = make().await?;
        // Checked before it is stored: a record this build would refuse once
        // stored (order, count, digest, size) is never stored.
        self.checked(record.clone(), parts, true)?;
        match self.create(&record).await {
            Ok(()) => self.checked(record, parts, true),
            Err(e) if crate::lease::lost_race(&e) => match self.read().await? {
                Some(winner) => self.checked(winner, parts, false),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn checked(
        &self,
        record: BoundaryRecord,
        parts: u32,
        made_here: bool,
    ) -> Result<AgreedBoundaries> {
        let boundaries = record.boundaries(parts).map_err(|why| self.refused(&why))?;
        Ok(AgreedBoundaries { boundaries, record, made_here })
    }

    /// Creates the record (`If-None-Match: *`: only when there is none).
    async fn create(&self, record: &BoundaryRecord) -> Result<()> {
        let body = serde_json::to_vec_pretty(record).map_err(|e| {
            Error::new(ErrorKind::Failed, "shard boundaries", self.location(), e.to_string())
        })?;
        if body.len() > MAX_RECORD_BYTES {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "shard boundaries",
                self.location(),
                format!(
                    "the boundary record would be {} bytes, more than the {MAX_RECORD_BYTES} a \
                     record may hold: give the job shard_boundaries in the config",
                    body.len()
                ),
            ));
        }
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .if_none_match("*")
            .set_expected_bucket_owner(self.owner.clone());
        if let Some(key) = &self.kms_key_id {
            req = req.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(key);
        }
        req.send().await.map_err(|e| sdk_error(e, "s3:PutObject", self.location()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shards_parse_as_i_of_n_and_bad_ones_name_the_fix() {
        let s = Shard::parse("2/4").unwrap();
        assert_eq!((s.index(), s.count(), s.to_string()), (2, 4, "2/4".to_string()));
        assert!(Shard::parse("1/1").unwrap().is_first());
        for bad in ["0/4", "5/4", "2", "a/b", "2/0", "-1/4", "1/100000", ""] {
            let e = Shard::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad}");
            assert!(e.message().contains("--shard"), "{bad}: {}", e.message());
        }
        assert!(Shard::parse("5/4").unwrap_err().message().contains("1 to N"));
    }

    #[test]
    fn boundaries_must_ascend_and_match_the_parts_asked_for() {
        assert!(Boundaries::new(vec!["b".into(), "a".into()]).unwrap_err().contains("sorted"));
        assert!(Boundaries::new(vec!["a".into(), "a".into()]).unwrap_err().contains("distinct"));
        assert!(Boundaries::new(vec!["".into()]).is_err());
        let b = Boundaries::new(vec!["g".into(), "p".into()]).unwrap();
        assert_eq!(b.parts(), 3);
        let e = b.range(Shard::new(1, 4).unwrap()).unwrap_err();
        assert!(e.message().contains("--shard I/3"), "{}", e.message());
        assert_eq!(
            b.range(Shard::new(1, 3).unwrap()).unwrap(),
            KeyRange::new(None, Some("g".into()))
        );
        assert_eq!(
            b.range(Shard::new(2, 3).unwrap()).unwrap(),
            KeyRange::new(Some("g".into()), Some("p".into()))
        );
        assert_eq!(
            b.range(Shard::new(3, 3).unwrap()).unwrap(),
            KeyRange::new(Some("p".into()), None)
        );
        assert_ne!(b.digest(), Boundaries::new(vec!["g".into(), "q".into()]).unwrap().digest());
        // Length-prefixed: ["ab"] and ["a", "b"] differ.
        assert_ne!(
            Boundaries::new(vec!["ab".into()]).unwrap().digest(),
            Boundaries::new(vec!["a".into(), "b".into()]).unwrap().digest()
        );
    }

    #[test]
    fn a_stored_record_for_another_n_or_edited_is_refused() {
        let b = Boundaries::new(vec!["g".into(), "p".into()]).unwrap();
        let record = BoundaryRecord::new("job", &b, 10, "r1");
        assert_eq!(record.boundaries(3).unwrap(), b);
        assert!(record.boundaries(4).unwrap_err().contains("for 3 parts"));
        let mut edited = record.clone();
        edited.boundaries[1] = "q".into();
        assert!(edited.boundaries(3).unwrap_err().contains("edited"));
        let mut unsorted = record;
        unsorted.boundaries = vec!["p".into(), "g".into()];
        assert!(unsorted.boundaries(3).unwrap_err().contains("sorted"));
    }

    #[test]
    fn the_sampler_cuts_a_listing_into_even_parts_in_bounded_memory() {
        let mut s = KeySampler::new();
        for i in 0..100_000 {
            s.push(&format!("obj/{i:06}"));
        }
        assert!(s.kept.len() < SAMPLE_KEYS, "{}", s.kept.len());
        let b = s.boundaries(4);
        assert_eq!(b.parts(), 4);
        // Each part within a few percent of a quarter.
        for (k, want) in b.keys().iter().zip([25_000, 50_000, 75_000]) {
            let at: i64 = k["obj/".len()..].parse().unwrap();
            assert!((at - want).abs() < 1_000, "{k} for {want}");
        }
        // Fewer keys than parts: boundaries are still N-1, distinct.
        let mut tiny = KeySampler::new();
        tiny.push("a");
        let b = tiny.boundaries(4);
        assert_eq!(b.parts(), 4);
        assert!(Boundaries::new(b.keys().to_vec()).is_ok());
        assert_eq!(KeySampler::new().boundaries(3).parts(), 3);
    }

    #[test]
    fn boundaries_padded_above_a_key_of_s3s_longest_stay_within_its_limit() {
        // The primary holds one key of 1,024 bytes (S3's limit): the padding
        // above it must be a key S3 could hold, and above it.
        let high = format!("{}k", "\u{10ffff}".repeat(200));
        for (base, most) in [("k".repeat(1024), 5), (high, 806), ("\u{d7ff}".into(), 7)] {
            let mut s = KeySampler::new();
            s.push(&base);
            let b = s.boundaries(4);
            assert!(Boundaries::new(b.keys().to_vec()).is_ok(), "{:?}", b.keys());
            assert!(b.keys().iter().all(|k| k.len() <= most && *k > base), "{:?}", b.keys());
        }
    }

    fn key() -> impl Strategy<Value = String> {
        // Short keys from a small alphabet (collisions with boundaries are
        // likely), and multibyte characters.
        proptest::collection::vec(prop_oneof!["a", "b", "/", "z", "é", "\u{10ffff}"], 1..5)
            .prop_map(|v| v.concat())
    }

    proptest! {
        /// Every key is in exactly one part, whatever the boundaries and
        /// the keys (keys equal to a boundary included).
        #[test]
        fn the_parts_are_disjoint_and_cover_every_key(
            mut cuts in proptest::collection::btree_set(key(), 0..6),
            keys in proptest::collection::vec(key(), 0..40),
        ) {
            // Some keys are boundaries themselves.
            let keys: Vec<String> = keys.into_iter().chain(cuts.iter().cloned()).collect();
            let b = Boundaries::new(std::mem::take(&mut cuts).into_iter().collect()).unwrap();
            let n = b.parts();
            let ranges: Vec<KeyRange> =
                (1..=n).map(|i| b.range(Shard::new(i, n).unwrap()).unwrap()).collect();
            for k in &keys {
                let holders = ranges.iter().filter(|r| r.contains(k)).count();
                prop_assert_eq!(holders, 1, "key {:?} in {} parts of {:?}", k, holders, b);
            }
            // A sink's prefixed range holds the same keys, prefixed.
            for r in &ranges {
                for k in &keys {
                    prop_assert_eq!(r.contains(k), r.prefixed("d/").contains(&format!("d/{k}")));
                    prop_assert_eq!(r.contains(k), r.prefixed("d/").stripped(2).contains(k));
                }
            }
        }

        /// Sampled boundaries always make exactly N parts.
        #[test]
        fn sampled_boundaries_make_n_parts(
            keys in proptest::collection::btree_set(key(), 0..300),
            n in 1u32..12,
        ) {
            let mut s = KeySampler::new();
            for k in &keys {
                s.push(k);
            }
            let b = s.boundaries(n);
            prop_assert_eq!(b.parts(), n);
            prop_assert!(Boundaries::new(b.keys().to_vec()).is_ok());
        }
    }
}
