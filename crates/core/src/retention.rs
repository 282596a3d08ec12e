//! Retention of escrow copies (snapshots, images): which copies an explicit
//! `prune` may delete, and the contract of a store that can delete them.
//!
//! Never part of a run: escrow is append-only, and only `escrow-sync prune
//! --apply` deletes. The selection is pure ([`select`]); its safety floor
//! keeps the newest complete copy of every lineage (source volume, database,
//! cluster) whatever the policy says, so later copies stay incremental.

use async_trait::async_trait;

use crate::Result;
use crate::time::{epoch_day, epoch_seconds, rfc3339};

/// One copy escrow holds, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EscrowCopy {
    /// The escrow resource's id (snapshot id, image id, snapshot identifier).
    pub id: String,
    /// The source item the copy was made from (its key in the job's listing).
    pub source: String,
    /// The lineage the source belongs to: the source volume, DB instance or
    /// cluster, or for an AMI its root volume. Retention counts copies per
    /// lineage.
    pub lineage: String,
    /// When the source was created (RFC 3339, UTC), from the copy's
    /// provenance tags; retention orders copies by it.
    pub created: String,
    /// Whether the copy is complete (available / completed).
    pub complete: bool,
    /// When escrow made the copy (RFC 3339, UTC): the escrow resource's own
    /// creation time (else its `escrow-sync:copied-at` tag); `None` when
    /// unknown. `keep_within_days` counts from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copied: Option<String>,
    /// The job that made the copy (its [`crate::tags::JOB`]); `None` for copies made
    /// before copies recorded their job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// A store of escrow copies that `prune` may delete from.
#[async_trait]
pub trait Retained: Send + Sync {
    /// A human-readable location, e.g. `ebs://escrow/us-east-1`.
    fn describe(&self) -> String;

    /// Every copy escrow-sync made in this store (found by provenance tags,
    /// escrow credentials only), in any state.
    async fn copies(&self) -> Result<Vec<EscrowCopy>>;

    /// Deletes one copy (and what belongs only to it, e.g. an AMI copy's
    /// snapshots). Called only by `prune --apply`.
    async fn delete_copy(&self, copy: &EscrowCopy) -> Result<()>;

    /// The copies among `copies` that a lock in force keeps from deletion
    /// (an EBS Snapshot Lock, AMI deregistration protection), by id, each
    /// with why (e.g. `locked (compliance) until 2027-01-05T00:00:00Z`):
    /// `prune` keeps them instead of trying to delete them. Read whatever
    /// the store is configured to do, as a lock set earlier still holds.
    /// The default: a store without locks has none.
    async fn locked(
        &self,
        copies: &[EscrowCopy],
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let _ = copies;
        Ok(Default::default())
    }

    /// Keeps `copies` (complete copies of one job) locked as the store is
    /// configured to: locks those without a lock in force and extends the
    /// locks that lapse soon, never shortening one; a run calls it after
    /// copying. The default: a store without locks does nothing.
    async fn keep_locked(&self, copies: &[EscrowCopy]) -> Result<LockUpkeep> {
        let _ = copies;
        Ok(LockUpkeep::default())
    }
}

/// What [`Retained::keep_locked`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LockUpkeep {
    /// Locks set on copies that had none in force (new copies, copies made
    /// before the job asked for a lock, lapsed locks).
    pub locked: u64,
    /// Locks extended because they lapse within the renewal window.
    pub renewed: u64,
    /// Images given deregistration protection.
    pub protected: u64,
    /// Locks and protections already in force and not due (no call made).
    pub unchanged: u64,
}

impl LockUpkeep {
    /// Whether any lock or protection was set or extended.
    pub fn changed(&self) -> bool {
        self.locked + self.renewed + self.protected > 0
    }

    /// Adds `other`'s counts.
    pub fn absorb(&mut self, other: LockUpkeep) {
        self.locked += other.locked;
        self.renewed += other.renewed;
        self.protected += other.protected;
        self.unchanged += other.unchanged;
    }
}

/// How many copies `prune` keeps per lineage. Copies kept by any rule are
/// kept; the rest may be deleted. With no rule set nothing is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    /// The newest N copies.
    pub keep_last: Option<u32>,
    /// The newest copy of each of the last N days that have copies (UTC).
    pub keep_daily: Option<u32>,
    /// The newest copy of each of the last N ISO weeks that have copies.
    pub keep_weekly: Option<u32>,
    /// The newest copy of each of the last N calendar months that have copies.
    pub keep_monthly: Option<u32>,
}

impl Retention {
    /// Whether any rule is set.
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
    }
}

/// One copy `prune` keeps, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kept {
    /// The copy.
    #[serde(flatten)]
    pub copy: EscrowCopy,
    /// Why it is kept, e.g. `newest of its lineage`, `keep_last 7`.
    pub reasons: Vec<String>,
}

/// What `prune` would keep and delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrunePlan {
    /// Copies kept, each with its reasons.
    pub keep: Vec<Kept>,
    /// Copies the policy lets go, oldest first.
    pub delete: Vec<EscrowCopy>,
}

/// The period keys of one copy's creation date: day, ISO week, month.
fn periods(time: &str) -> Option<[i64; 3]> {
    let day = epoch_day(time)?;
    // 1970-01-01 was a Thursday: shifting by 3 makes weeks start on Monday.
    let week = (day + 3).div_euclid(7);
    let year: i64 = time.get(..4)?.parse().ok()?;
    let month: i64 = time.get(5..7)?.parse().ok()?;
    Some([day, week, year * 12 + month])
}

/// Selects, per lineage, the copies `retention` keeps and those it lets go.
///
/// The safety floor holds whatever the policy says: the newest complete
/// copy of every lineage is kept; copies not complete (in progress, failed)
/// are never deleted here; a copy whose creation time cannot be read is
/// kept. With no rule set, everything is kept.
pub fn select(copies: &[EscrowCopy], retention: &Retention) -> PrunePlan {
    let mut lineages: std::collections::BTreeMap<&str, Vec<&EscrowCopy>> = Default::default();
    for copy in copies {
        lineages.entry(copy.lineage.as_str()).or_default().push(copy);
    }
    let mut plan = PrunePlan::default();
    for (_, mut group) in lineages {
        // Newest first; ties broken by id so the outcome is stable.
        group.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); group.len()];
        // The copies the rules count: complete, with a readable creation time.
        let complete: Vec<usize> = (0..group.len())
            .filter(|&i| group[i].complete && periods(&group[i].created).is_some())
            .collect();
        for (i, copy) in group.iter().enumerate() {
            if !copy.complete {
                reasons[i].push("not complete".to_string());
            } else if periods(&copy.created).is_none() {
                reasons[i].push(format!("creation time {:?} unreadable", copy.created));
            }
        }
        if let Some(&newest) = complete.first() {
            reasons[newest].push("newest complete copy of its lineage".to_string());
        }
        if !retention.is_set() {
            for r in &mut reasons {
                r.push("no retention rule set".to_string());
            }
        }
        if let Some(n) = retention.keep_last {
            for &i in complete.iter().take(n as usize) {
                reasons[i].push(format!("keep_last {n}"));
            }
        }
        let rules = [
            (retention.keep_daily, "keep_daily"),
            (retention.keep_weekly, "keep_weekly"),
            (retention.keep_monthly, "keep_monthly"),
        ];
        for (slot, (count, name)) in rules.into_iter().enumerate() {
            let Some(n) = count else { continue };
            let mut seen = std::collections::BTreeSet::new();
            for &i in &complete {
                let Some(p) = periods(&group[i].created) else { continue };
                if seen.len() as u32 >= n {
                    break;
                }
                if seen.insert(p[slot]) {
                    reasons[i].push(format!("{name} {n}"));
                }
            }
        }
        for (copy, why) in group.into_iter().zip(reasons) {
            if why.is_empty() {
                plan.delete.push(copy.clone());
            } else {
                plan.keep.push(Kept { copy: copy.clone(), reasons: why });
            }
        }
    }
    plan.delete.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    plan
}

/// Per group (`group` of each item), the newest item by `started`, among
/// those started at or before `at` (`None`: all), in group order. What a
/// restore takes "as of" a time: per volume, database or image, the newest
/// escrow copy made by then. An item without a start time always counts.
pub fn newest_per_group<T, K: Ord>(
    items: Vec<T>,
    at: Option<std::time::SystemTime>,
    started: impl Fn(&T) -> Option<std::time::SystemTime>,
    group: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut newest: std::collections::BTreeMap<K, T> = std::collections::BTreeMap::new();
    for item in items {
        let time = started(&item);
        if let (Some(at), Some(t)) = (at, time)
            && t > at
        {
            continue;
        }
        match newest.get(&group(&item)) {
            Some(n) if started(n) >= time => {}
            _ => {
                newest.insert(group(&item), item);
            }
        }
    }
    newest.into_values().collect()
}

/// What `prune` holds to besides the keep_* rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PruneLimits {
    /// A copy made in escrow less than this many days ago is never deleted
    /// (0: no such floor).
    pub keep_within_days: u32,
    /// A prune that would delete more than this share (percent) of a job's
    /// escrow copies deletes nothing (100: no limit).
    pub max_delete_percent: u8,
}

impl Default for PruneLimits {
    fn default() -> Self {
        PruneLimits { keep_within_days: 7, max_delete_percent: 25 }
    }
}

/// [`select`], then the `keep_within_days` floor: a copy made in escrow
/// (its [`EscrowCopy::copied`]) less than `keep_within_days` days before
/// `now`, or at a time unknown or unreadable, is kept whatever the rules
/// say. Everything escrow-side: no listing of the primary decides it.
pub fn select_within(
    copies: &[EscrowCopy],
    retention: &Retention,
    keep_within_days: u32,
    now: std::time::SystemTime,
) -> PrunePlan {
    let mut plan = select(copies, retention);
    if keep_within_days == 0 {
        return plan;
    }
    let now = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let window = i64::from(keep_within_days) * 86_400;
    let (gone, young): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.delete).into_iter().partition(
        |c| matches!(c.copied.as_deref().and_then(epoch_seconds), Some(t) if now - t >= window),
    );
    plan.delete = gone;
    for copy in young {
        let why = match copy.copied.as_deref() {
            Some(t) if epoch_seconds(t).is_some() => format!(
                "made in escrow at {t}, less than {keep_within_days} days ago (keep_within_days)"
            ),
            Some(t) => format!("escrow creation time {t:?} unreadable (keep_within_days)"),
            None => "escrow creation time unknown (keep_within_days)".to_string(),
        };
        plan.keep.push(Kept { copy, reasons: vec![why] });
    }
    plan
}

/// Whether deleting `deleting` of a job's `total` escrow copies is more
/// than `max_delete_percent` of them (then `prune` deletes nothing unless
/// told to accept it). 100 never is.
pub fn over_delete_limit(deleting: usize, total: usize, max_delete_percent: u8) -> bool {
    deleting as u128 * 100 > total as u128 * u128::from(max_delete_percent.min(100))
}

/// The snapshot-job circuit breaker: splits the `new` items a run would
/// copy into those it copies and those it holds back, at most
/// `max_per_lineage` per lineage (source volume, database, cluster; an
/// item without one is its own): the newest by `modified` go, the rest are
/// held back. Both lists keep the input order.
pub fn cap_new_per_lineage(
    new: Vec<crate::Item>,
    max_per_lineage: u32,
) -> (Vec<crate::Item>, Vec<crate::Item>) {
    let mut lineages: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, item) in new.iter().enumerate() {
        let lineage = item.lineage.clone().unwrap_or_else(|| item.key.clone());
        lineages.entry(lineage).or_default().push(i);
    }
    let mut held = std::collections::BTreeSet::new();
    for (_, mut group) in lineages {
        // Newest first (no time: oldest); ties by key, so the outcome is stable.
        group.sort_by(|&a, &b| {
            new[b].modified.cmp(&new[a].modified).then_with(|| new[b].key.cmp(&new[a].key))
        });
        held.extend(group.into_iter().skip(max_per_lineage as usize));
    }
    let (mut go, mut back) = (Vec::new(), Vec::new());
    for (i, item) in new.into_iter().enumerate() {
        if held.contains(&i) { back.push(item) } else { go.push(item) }
    }
    (go, back)
}

/// Splits a source listing into the items `retention` keeps and those it
/// lets go, as [`select`] would for copies of them: a run copies only the
/// former, so `prune` never deletes what the next run would copy back.
/// Items are grouped by their lineage (each item alone when it has none)
/// and ordered by their `modified` time (creation, for snapshots; an item
/// without one is kept). With no rule set, every item is kept.
pub fn within_retention(
    items: Vec<crate::Item>,
    retention: &Retention,
) -> (Vec<crate::Item>, Vec<crate::Item>) {
    if !retention.is_set() {
        return (items, Vec::new());
    }
    let copies: Vec<EscrowCopy> = items
        .iter()
        .map(|i| EscrowCopy {
            id: i.key.clone(),
            source: i.key.clone(),
            lineage: i.lineage.clone().unwrap_or_else(|| i.key.clone()),
            created: i.modified.map(rfc3339).unwrap_or_default(),
            complete: true,
            copied: None,
            job: None,
        })
        .collect();
    let gone: std::collections::BTreeSet<String> =
        select(&copies, retention).delete.into_iter().map(|c| c.id).collect();
    items.into_iter().partition(|i| !gone.contains(&i.key))
}

#[cfg(test)]
mod tests {
    #[test]
    fn newest_per_group_takes_each_groups_newest_by_then() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        let items = vec![("a", t(10)), ("a", t(30)), ("b", t(20)), ("b", None), ("c", t(50))];
        let pick = |at| newest_per_group(items.clone(), at, |i: &(&str, _)| i.1, |i| i.0);
        assert_eq!(pick(None), vec![("a", t(30)), ("b", t(20)), ("c", t(50))]);
        assert_eq!(pick(t(25)), vec![("a", t(10)), ("b", t(20))]);
        assert_eq!(pick(t(5)), vec![("b", None)]);
    }

    use super::*;

    fn copy(id: &str, lineage: &str, created: &str) -> EscrowCopy {
        EscrowCopy {
            id: id.into(),
            source: format!("src-{id}"),
            lineage: lineage.into(),
            created: created.into(),
            complete: true,
            copied: None,
            job: None,
        }
    }

    fn deleted(plan: &PrunePlan) -> Vec<&str> {
        plan.delete.iter().map(|c| c.id.as_str()).collect()
    }

    #[test]
    fn rfc3339_formats_utc_seconds() {
        let t = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(rfc3339(t(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(t(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(t(1_795_899_661)), "2026-11-28T21:01:01Z");
        for s in [0, 86_399, 951_868_799, 1_795_899_661] {
            let day = epoch_day(&rfc3339(t(s))).unwrap();
            assert_eq!(day, s as i64 / 86_400, "{s}");
        }
    }

    #[test]
    fn a_source_listing_is_cut_to_what_retention_keeps() {
        let t = |d: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(d * 86_400);
        let item = |k: &str, lineage: Option<&str>, day: u64| {
            crate::Item::new(k, crate::ItemKind::Snapshot, 1, k)
                .with_lineage(lineage.map(str::to_string))
                .with_modified(Some(t(day)))
        };
        let items = vec![
            item("a1", Some("vol-a"), 1),
            item("a2", Some("vol-a"), 2),
            item("a3", Some("vol-a"), 3),
            item("b1", None, 1),
            crate::Item::new("undated", crate::ItemKind::Snapshot, 1, "u")
                .with_lineage(Some("vol-a".into())),
        ];
        let keep = Retention { keep_last: Some(2), ..Default::default() };
        let (kept, gone) = within_retention(items.clone(), &keep);
        let keys = |v: &[crate::Item]| v.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&gone), ["a1"]);
        assert_eq!(keys(&kept), ["a2", "a3", "b1", "undated"]);
        assert_eq!(within_retention(items, &Retention::default()).1, vec![]);
    }

    #[test]
    fn epoch_days_and_weeks() {
        assert_eq!(epoch_day("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_day("2000-03-01T00:00:00Z"), Some(11_017));
        assert_eq!(epoch_day("2026-11-28T21:00:00Z"), Some(20_785));
        assert_eq!(epoch_day("2026-13-01"), None);
        // Monday 2026-11-23 and Sunday 2026-11-29 share a week; Monday 30th does not.
        let week = |t: &str| periods(t).unwrap()[1];
        assert_eq!(week("2026-11-23T00:00:00Z"), week("2026-11-29T23:59:59Z"));
        assert_ne!(week("2026-11-29T00:00:00Z"), week("2026-11-30T00:00:00Z"));
    }

    #[test]
    fn keep_last_counts_per_lineage_and_keeps_the_newest_whatever_the_policy() {
        let copies = vec![
            copy("a1", "vol-a", "2026-11-01T00:00:00Z"),
            copy("a2", "vol-a", "2026-11-02T00:00:00Z"),
            copy("a3", "vol-a", "2026-11-03T00:00:00Z"),
            copy("b1", "vol-b", "2026-10-01T00:00:00Z"),
        ];
        let plan = select(&copies, &Retention { keep_last: Some(2), ..Default::default() });
        assert_eq!(deleted(&plan), ["a1"]);
        let plan = select(&copies, &Retention { keep_last: Some(0), ..Default::default() });
        assert_eq!(deleted(&plan), ["a1", "a2"], "the newest of each lineage stays");
    }

    #[test]
    fn no_rule_and_incomplete_or_unreadable_copies_are_kept() {
        let mut pending = copy("p", "vol-a", "2026-11-05T00:00:00Z");
        pending.complete = false;
        let copies = vec![
            copy("a1", "vol-a", "2026-11-01T00:00:00Z"),
            copy("odd", "vol-a", "yesterday"),
            copy("a2", "vol-a", "2026-11-02T00:00:00Z"),
            pending,
        ];
        assert!(select(&copies, &Retention::default()).delete.is_empty());
        let plan = select(&copies, &Retention { keep_last: Some(1), ..Default::default() });
        assert_eq!(deleted(&plan), ["a1"], "{plan:?}");
        let kept: Vec<_> = plan.keep.iter().map(|k| k.copy.id.as_str()).collect();
        assert!(kept.contains(&"p") && kept.contains(&"odd") && kept.contains(&"a2"));
    }

    #[test]
    fn daily_weekly_monthly_keep_the_newest_of_each_period() {
        let copies = vec![
            copy("d1-early", "v", "2026-11-28T01:00:00Z"),
            copy("d1-late", "v", "2026-11-28T23:00:00Z"),
            copy("d2", "v", "2026-11-27T12:00:00Z"),
            copy("d3", "v", "2026-11-20T12:00:00Z"),
            copy("oct", "v", "2026-10-15T12:00:00Z"),
            copy("sep", "v", "2026-09-15T12:00:00Z"),
        ];
        let plan = select(&copies, &Retention { keep_daily: Some(2), ..Default::default() });
        assert_eq!(deleted(&plan), ["sep", "oct", "d3", "d1-early"]);
        let plan = select(&copies, &Retention { keep_weekly: Some(2), ..Default::default() });
        // Week of the 23rd: d1-late (newest); week of the 16th: d3.
        assert_eq!(deleted(&plan), ["sep", "oct", "d2", "d1-early"]);
        let plan = select(&copies, &Retention { keep_monthly: Some(3), ..Default::default() });
        assert_eq!(deleted(&plan), ["d3", "d2", "d1-early"]);
        let both = Retention { keep_daily: Some(1), keep_monthly: Some(2), ..Default::default() };
        assert_eq!(deleted(&select(&copies, &both)), ["sep", "d3", "d2", "d1-early"]);
    }

    #[test]
    fn epoch_seconds_reads_aws_times() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_seconds("2026-11-28T21:01:01Z"), Some(1_795_899_661));
        assert_eq!(epoch_seconds("2026-11-28T21:01:01.123Z"), Some(1_795_899_661));
        assert_eq!(epoch_seconds("2026-11-28T22:01:01+01:00"), Some(1_795_899_661));
        assert_eq!(epoch_seconds("2026-11-28T20:31:01-00:30"), Some(1_795_899_661));
        for bad in ["", "2026-11-28", "2026-11-28T21:01", "2026-11-28T25:00:00Z", "yesterday"] {
            assert_eq!(epoch_seconds(bad), None, "{bad}");
        }
    }

    fn made(mut c: EscrowCopy, copied: Option<&str>) -> EscrowCopy {
        c.copied = copied.map(str::to_string);
        c
    }

    fn at(time: &str) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch_seconds(time).unwrap() as u64)
    }

    #[test]
    fn keep_within_days_keeps_young_and_undated_copies_from_escrows_own_time() {
        // A flood: the source says old, escrow made them yesterday.
        let copies = vec![
            made(copy("old", "v", "2026-10-01T00:00:00Z"), Some("2026-10-01T01:00:00Z")),
            made(copy("flood1", "v", "2026-11-27T00:00:00Z"), Some("2026-11-27T00:00:00Z")),
            made(copy("flood2", "v", "2026-11-27T00:00:01Z"), Some("2026-11-27T00:00:01Z")),
            made(copy("nodate", "v", "2026-09-01T00:00:00Z"), None),
            made(copy("odd", "v", "2026-09-02T00:00:00Z"), Some("soon")),
            made(copy("newest", "v", "2026-11-28T00:00:00Z"), Some("2026-11-28T00:00:00Z")),
        ];
        let rule = Retention { keep_last: Some(1), ..Default::default() };
        let now = at("2026-11-28T12:00:00Z");
        let plan = select_within(&copies, &rule, 7, now);
        assert_eq!(deleted(&plan), ["old"]);
        let why = |id: &str| {
            plan.keep.iter().find(|k| k.copy.id == id).map(|k| k.reasons.join(", ")).unwrap()
        };
        assert!(why("flood1").contains("keep_within_days"), "{}", why("flood1"));
        assert!(why("nodate").contains("unknown"), "{}", why("nodate"));
        assert!(why("odd").contains("unreadable"), "{}", why("odd"));
        // 0 turns the floor off; a copy exactly 7 days old may go.
        assert_eq!(
            deleted(&select_within(&copies, &rule, 0, now)),
            ["nodate", "odd", "old", "flood1", "flood2"]
        );
        let week = select_within(&copies, &rule, 1, at("2026-11-28T00:00:00Z"));
        assert_eq!(deleted(&week), ["old", "flood1"]);
    }

    #[test]
    fn the_delete_limit_is_a_share_of_the_jobs_copies() {
        assert!(!over_delete_limit(0, 0, 25));
        assert!(!over_delete_limit(1, 4, 25));
        assert!(over_delete_limit(2, 4, 25));
        assert!(over_delete_limit(1, 3, 25));
        assert!(!over_delete_limit(10, 10, 100));
        assert!(over_delete_limit(1, 1000, 0));
    }

    fn snap(key: &str, lineage: Option<&str>, secs: Option<u64>) -> crate::Item {
        crate::Item::new(key, crate::ItemKind::Snapshot, 1, key)
            .with_lineage(lineage.map(str::to_string))
            .with_modified(secs.map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)))
    }

    #[test]
    fn the_breaker_copies_the_newest_n_of_each_lineage_and_holds_back_the_rest() {
        let new = vec![
            snap("a1", Some("vol-a"), Some(1)),
            snap("a5", Some("vol-a"), Some(5)),
            snap("a3", Some("vol-a"), Some(3)),
            snap("b1", Some("vol-b"), Some(1)),
            snap("a4", Some("vol-a"), Some(4)),
            snap("a0", Some("vol-a"), None),
            snap("solo", None, Some(9)),
        ];
        let keys = |v: &[crate::Item]| v.iter().map(|i| i.key.clone()).collect::<Vec<_>>();
        let (go, held) = cap_new_per_lineage(new.clone(), 3);
        assert_eq!(keys(&go), ["a5", "a3", "b1", "a4", "solo"]);
        assert_eq!(keys(&held), ["a1", "a0"]);
        let (go, held) = cap_new_per_lineage(new.clone(), 100);
        assert_eq!((go.len(), held.len()), (7, 0));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn copies() -> impl Strategy<Value = Vec<EscrowCopy>> {
            proptest::collection::vec(
                (0u8..3, 0u32..40, proptest::option::of(0u32..40), any::<bool>()),
                0..30,
            )
            .prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (l, src_day, copied_day, complete))| EscrowCopy {
                        id: format!("c{i}"),
                        source: format!("s{i}"),
                        lineage: format!("vol-{l}"),
                        created: rfc3339(std::time::UNIX_EPOCH + day(src_day)),
                        complete,
                        copied: copied_day.map(|d| rfc3339(std::time::UNIX_EPOCH + day(d))),
                        job: None,
                    })
                    .collect()
            })
        }

        fn day(d: u32) -> std::time::Duration {
            std::time::Duration::from_secs(u64::from(d) * 86_400 + 3600)
        }

        proptest! {
            #[test]
            fn nothing_young_undated_or_newest_is_ever_deleted(
                copies in copies(),
                keep_last in proptest::option::of(0u32..4),
                within in 0u32..20,
                now_day in 0u32..60,
            ) {
                let rule = Retention { keep_last, ..Default::default() };
                let now = std::time::UNIX_EPOCH + day(now_day);
                let plan = select_within(&copies, &rule, within, now);
                prop_assert_eq!(plan.keep.len() + plan.delete.len(), copies.len());
                let now_s = epoch_seconds(&rfc3339(now)).unwrap();
                for c in &plan.delete {
                    if within > 0 {
                        let made = c.copied.as_deref().and_then(epoch_seconds);
                        prop_assert!(made.is_some(), "undated {:?} deleted", c);
                        prop_assert!(now_s - made.unwrap() >= i64::from(within) * 86_400);
                    }
                    prop_assert!(c.complete);
                    let newest = copies.iter().filter(|o| o.lineage == c.lineage && o.complete)
                        .map(|o| (&o.created, &o.id)).max().unwrap();
                    prop_assert!(newest != (&c.created, &c.id), "newest deleted: {:?}", c);
                }
                // The floor only ever keeps more than the rules alone.
                let rules = select(&copies, &rule);
                prop_assert!(plan.delete.iter().all(|c| rules.delete.contains(c)));
            }

            #[test]
            fn the_breaker_caps_each_lineage_and_loses_nothing(
                v in proptest::collection::vec((0u8..3, proptest::option::of(0u64..50)), 0..30),
                cap in 1u32..5,
            ) {
                let new: Vec<_> = v.iter().enumerate()
                    .map(|(i, (l, t))| snap(&format!("s{i}"), Some(&format!("vol-{l}")), *t))
                    .collect();
                let (go, held) = cap_new_per_lineage(new.clone(), cap);
                prop_assert_eq!(go.len() + held.len(), new.len());
                for l in 0u8..3 {
                    let lineage = format!("vol-{l}");
                    let of = |v: &[crate::Item]| v.iter()
                        .filter(|i| i.lineage.as_deref() == Some(lineage.as_str()))
                        .map(|i| i.modified).collect::<Vec<_>>();
                    let (g, h) = (of(&go), of(&held));
                    let total = g.len() + h.len();
                    prop_assert_eq!(g.len(), total.min(cap as usize));
                    // Every copy that goes is at least as new as every one held back.
                    if let (Some(oldest_go), Some(newest_held)) = (g.iter().min(), h.iter().max()) {
                        prop_assert!(oldest_go >= newest_held);
                    }
                }
            }
        }
    }
}
