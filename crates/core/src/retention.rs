//! Retention of escrow copies (snapshots, images): which copies an explicit
//! `prune` may delete, and the contract of a store that can delete them.
//!
//! Never part of a run: escrow is append-only, and only `escrow-sync prune
//! --apply` deletes. The selection is pure ([`select`]); its safety floor
//! keeps the newest complete copy of every lineage (source volume, database,
//! cluster) whatever the policy says, so later copies stay incremental.

use async_trait::async_trait;

use crate::Result;

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

/// Days since 1970-01-01 of an RFC 3339 time's date (`YYYY-MM-DD...`).
fn epoch_day(time: &str) -> Option<i64> {
    let date = time.get(..10)?;
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
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

/// `t` as RFC 3339 in UTC, to the second (`1970-01-01T00:00:00Z`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
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
}
