//! `run --shard I/N`: which part of each selected S3 job this process
//! runs, with which boundaries, under which lease; and how `status` and
//! `verify --offline` put the parts of a job back together.
//!
//! The cut itself is `escrow_sync_s3::shard`. Here:
//!
//! - **Boundaries** come from the job's `shard_boundaries`, else from the
//!   record `<manifest_prefix>shards/<job>/<N>.json` in the manifest bucket,
//!   sampled and stored by the first part that needs it
//!   ([`escrow_sync_s3::BoundaryStore::agree`]).
//! - **Leases**: each part holds its own, `<leases>/parts/<job>/I-of-N.json`
//!   (a folder of the job's own). A part refuses to run while the job runs
//!   whole or while a part of the job cut into another number of parts
//!   runs (their key ranges overlap, and both would be part 1); a whole run
//!   refuses while any part runs.
//! - **One run of N parts.** Each part writes its own run manifest; its
//!   job summary names the part ([`ShardPart`]: I, N and the digest of the
//!   boundaries). N processes need not agree on a run id: a sharded run of
//!   a job is the newest record of each part `1..=N` that agree on N and
//!   the boundaries with the job's newest part record. So one part that
//!   failed is run again alone, and the job is whole again once it
//!   succeeds. A part with no record under that cut (never run, or run with
//!   other boundaries or another N) is *missing*, and a job with a missing
//!   or failed part is never reported whole: `status` says which part and
//!   the age of the merged copy is that of its oldest part. `restore --at`
//!   takes the primary's keys from every part of one cut the same way.

use escrow_sync_aws::Sessions;
use escrow_sync_core::manifest::ShardPart;
use escrow_sync_core::{Error, Scope};
use escrow_sync_s3::{
    Boundaries, BoundaryRecord, BoundaryStore, KeyRange, S3Source, Shard, sample_boundaries,
};

use crate::spec::{Config, S3Job};

/// The folder of the stored boundaries, under the manifest prefix.
pub const SHARDS_DIR: &str = "shards/";

/// The part of `job` that `shard` runs.
pub(crate) struct Part {
    /// Its keys.
    pub(crate) range: KeyRange,
    /// What its manifest records.
    pub(crate) record: ShardPart,
    /// What the report says of it.
    pub(crate) notes: Vec<String>,
}

/// Refuses `--shard` where it cannot work: outside `run`, or without a
/// manifest bucket (the parts' manifests are merged from there).
pub(crate) fn check(config: &Config, mode: escrow_sync_core::Mode) -> Result<(), Error> {
    if mode != escrow_sync_core::Mode::Run {
        return Err(Error::invalid_config(
            "--shard cuts a run into parts: use it with `run` (plan and verify take the whole job)",
        ));
    }
    if config.escrow.manifest_bucket.is_none() {
        return Err(Error::invalid_config(
            "run --shard needs [escrow] manifest_bucket: each part writes its run manifest there, \
             status and verify --offline merge the parts from there, and sampled boundaries are \
             kept there; set manifest_bucket",
        ));
    }
    Ok(())
}

/// The manifest prefix of `config`.
fn manifest_prefix(config: &Config) -> String {
    config
        .escrow
        .manifest_prefix
        .clone()
        .unwrap_or_else(|| escrow_sync_core::manifest::DEFAULT_PREFIX.to_string())
}

/// Where the sampled boundaries of job `name` for `parts` parts are kept.
pub fn boundaries_key(config: &Config, name: &str, parts: u32) -> String {
    format!("{}{SHARDS_DIR}{name}/{parts}.json", manifest_prefix(config))
}

/// The folder of the leases of job `name`'s parts, given the job's own
/// lease key `<leases>/<name>.json`: `<leases>/parts/<name>/`. A folder of
/// the job's own: no other job's lease (`<leases>/<other>.json`) is in it.
pub(crate) fn part_lease_dir(key: &str, name: &str) -> String {
    let dir = key.strip_suffix(&format!("{name}.json")).unwrap_or(key);
    format!("{dir}parts/{name}/")
}

/// The lease key of part `shard` of job `name`:
/// `<leases>/parts/<name>/I-of-N.json`.
pub(crate) fn part_lease_key(key: &str, name: &str, shard: Shard) -> String {
    format!("{}{}-of-{}.json", part_lease_dir(key, name), shard.index(), shard.count())
}

/// The part a lease name in a job's part folder is of (`I-of-N.json`);
/// `None` for any other name.
pub(crate) fn parse_part_lease(name: &str) -> Option<Shard> {
    let (i, n) = name.strip_suffix(".json")?.split_once("-of-")?;
    if i.starts_with('+') || n.starts_with('+') {
        return None;
    }
    Shard::new(i.parse().ok()?, n.parse().ok()?).ok()
}

/// The part of `job` that `shard` runs: its key range from the job's
/// boundaries (configured, else agreed on in escrow, sampled from
/// `source` by the first part to need them).
pub(crate) async fn part(
    config: &Config,
    job: &S3Job,
    sessions: &Sessions,
    source: &S3Source,
    shard: Shard,
    run_id: &str,
) -> Result<Part, Error> {
    let name = job.name();
    if job.engine() != crate::spec::S3Engine::Direct {
        return Err(Error::invalid_config(format!(
            "[[s3]] ({name}) has engine = \"{}\": a Batch Operations job already runs the copy \
             inside S3 and keeps one job record per job, so it is not cut into parts; run it \
             without --shard (--job), or set engine = \"direct\"",
            job.engine()
        )));
    }
    let (boundaries, whence) = match &job.shard_boundaries {
        Some(keys) => {
            let b = Boundaries::new(keys.clone())
                .map_err(|why| Error::invalid_config(format!("[[s3]] ({name}): {why}")))?;
            (b, "shard_boundaries in the config".to_string())
        }
        None => {
            let bucket = config.escrow.manifest_bucket.clone().ok_or_else(|| {
                Error::invalid_config("run --shard needs [escrow] manifest_bucket")
            })?;
            let escrow_id = sessions.escrow.account_id();
            let store = BoundaryStore::from_client(
                escrow_sync_s3::client(&sessions.escrow),
                bucket,
                boundaries_key(config, &name, shard.count()),
            )
            .with_expected_owner(crate::runner::known(escrow_id))
            .with_kms_key_id(config.escrow.kms_key_id.clone());
            let scope = Scope::with_prefix(&job.prefix);
            let agreed = store
                .agree(shard.count(), || async {
                    let (b, listed) = sample_boundaries(source, &scope, shard.count()).await?;
                    Ok(BoundaryRecord::new(&name, &b, listed, run_id))
                })
                .await?;
            let how = if agreed.made_here { "sampled by this run" } else { "stored" };
            let r = &agreed.record;
            let whence = format!(
                "{how} at {} ({}, from {} listed keys, by {})",
                store.location(),
                r.made_at,
                r.listed_keys,
                r.made_by
            );
            (agreed.boundaries, whence)
        }
    };
    let range = boundaries
        .range(shard)
        .map_err(|e| Error::invalid_config(format!("[[s3]] ({name}): {}", e.message())))?;
    let record = ShardPart {
        index: shard.index(),
        count: shard.count(),
        boundaries: boundaries.digest(),
        after: range.after().map(str::to_string),
        until: range.until().map(str::to_string),
    };
    let mut notes = vec![format!(
        "part {shard} of a sharded run: {range}; boundaries {} ({whence})",
        record.boundaries
    )];
    if !shard.is_first() {
        notes.push(
            "the rolling retention pass and the clean-up of stale uploads are part 1's".into(),
        );
    }
    Ok(Part { range, record, notes })
}

/// A part record that failed before its boundaries were known: it counts
/// as a part of no cut (never merged), so the job is not whole.
pub(crate) fn unknown_part(shard: Shard) -> ShardPart {
    ShardPart { index: shard.index(), count: shard.count(), ..ShardPart::default() }
}

/// Whether a part record read from a manifest can be of a sharded run:
/// 1 ≤ index ≤ count ≤ [`escrow_sync_s3::MAX_SHARDS`] (a manifest is escrow
/// data an insider may have edited: its numbers are not trusted to size
/// anything). When not, a warning naming the record, and it is skipped.
pub(crate) fn usable_part(part: &ShardPart, job: &str, whence: &str) -> bool {
    let ok =
        part.index >= 1 && part.index <= part.count && part.count <= escrow_sync_s3::MAX_SHARDS;
    if !ok {
        tracing::warn!(
            "job {job}: the part record in {whence} says part {}/{}, which no sharded run writes \
             (1 <= I <= N <= {}): it is skipped (find out who edited that manifest)",
            part.index,
            part.count,
            escrow_sync_s3::MAX_SHARDS
        );
    }
    ok
}

/// The parts of one job found newest first, merged under the cut of the
/// newest part record.
#[derive(Debug, Clone)]
pub(crate) struct Merge<T> {
    /// The cut: N and the boundaries' digest (of the newest part record).
    pub(crate) cut: ShardPart,
    /// Per part index (1-based, `index - 1`), the newest record taken.
    pub(crate) parts: Vec<Option<T>>,
}

impl<T> Merge<T> {
    /// A merge under `cut` (of at most [`escrow_sync_s3::MAX_SHARDS`]
    /// parts: a larger count makes a merge that is never whole).
    pub(crate) fn new(cut: &ShardPart) -> Self {
        let count = if cut.count <= escrow_sync_s3::MAX_SHARDS { cut.count } else { 0 };
        Merge { cut: cut.clone(), parts: (0..count).map(|_| None).collect() }
    }

    /// Takes `value` for `part` if it is of this cut and its index has
    /// nothing yet; whether it was taken.
    pub(crate) fn offer(&mut self, part: &ShardPart, value: T) -> bool {
        if !self.cut.same_cut(part) || part.boundaries.is_empty() {
            return false;
        }
        match self.parts.get_mut(part.index.saturating_sub(1) as usize) {
            Some(slot @ None) if part.index >= 1 => {
                *slot = Some(value);
                true
            }
            _ => false,
        }
    }

    /// Whether every part has a record (and the cut has parts and a
    /// digest: a merge of nothing is never whole).
    pub(crate) fn whole(&self) -> bool {
        !self.parts.is_empty()
            && !self.cut.boundaries.is_empty()
            && self.parts.iter().all(Option::is_some)
    }

    /// The parts without a record, as `I/N`.
    pub(crate) fn missing(&self) -> Vec<String> {
        self.parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_none())
            .map(|(i, _)| format!("{}/{}", i + 1, self.cut.count))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(index: u32, count: u32, boundaries: &str) -> ShardPart {
        ShardPart { index, count, boundaries: boundaries.into(), ..ShardPart::default() }
    }

    #[test]
    fn a_merge_takes_the_newest_of_each_part_of_one_cut_and_names_the_missing() {
        let mut m = Merge::new(&part(2, 3, "d1"));
        assert!(m.offer(&part(2, 3, "d1"), "new 2"));
        assert!(!m.offer(&part(2, 3, "d1"), "older 2"), "the newest of a part is kept");
        assert!(!m.offer(&part(1, 3, "d0"), "other boundaries"));
        assert!(!m.offer(&part(1, 4, "d1"), "other N"));
        assert!(!m.offer(&part(1, 3, ""), "a part that never knew its cut"));
        assert!(!m.offer(&part(4, 3, "d1"), "out of range"));
        assert!(m.offer(&part(3, 3, "d1"), "3"));
        assert!(!m.whole());
        assert_eq!(m.missing(), vec!["1/3".to_string()]);
        assert!(m.offer(&part(1, 3, "d1"), "1"));
        assert!(m.whole() && m.missing().is_empty());
    }

    #[test]
    fn part_records_out_of_range_are_skipped_and_a_merge_of_nothing_is_never_whole() {
        assert!(usable_part(&part(1, 1, "d"), "j", "m"));
        assert!(usable_part(&part(256, 256, "d"), "j", "m"));
        for bad in [part(0, 3, "d"), part(4, 3, "d"), part(1, 0, "d"), part(1, u32::MAX, "d")] {
            assert!(!usable_part(&bad, "j", "m"), "{bad:?}");
        }
        assert!(!Merge::<()>::new(&part(0, 0, "d")).whole(), "count 0");
        assert!(!Merge::<()>::new(&part(1, u32::MAX, "d")).whole(), "count past MAX_SHARDS");
        let mut empty = Merge::new(&part(1, 1, ""));
        assert!(!empty.offer(&part(1, 1, ""), ()) && !empty.whole(), "no digest");
    }

    #[test]
    fn part_leases_sit_in_a_folder_of_the_jobs_own() {
        let s = Shard::new(2, 4).unwrap();
        let key = part_lease_key("m/leases/s3:a.json", "s3:a", s);
        assert_eq!(key, "m/leases/parts/s3:a/2-of-4.json");
        // A bucket named like a part lease of another job's is no part lease.
        let other = "m/leases/s3:a.part-1-of-2.json.json";
        assert!(!other.starts_with(&part_lease_dir("m/leases/s3:a.json", "s3:a")));
        assert_eq!(parse_part_lease("2-of-4.json"), Some(s));
        for bad in ["2-of-4", "x-of-4.json", "5-of-4.json", "+2-of-4.json", "2-of-4.json.json"] {
            assert_eq!(parse_part_lease(bad), None, "{bad}");
        }
    }
}
