//! The mass-change circuit breaker: a run that finds too large a share of
//! what escrow holds changed in the primary stops changing escrow.
//!
//! The attack it answers: someone holding the primary rewrites every object
//! or item (ransomware) and waits for the next scheduled run to copy the
//! rewrite into escrow. Escrow keeps earlier versions, but a run that reports
//! "ok" while it copies a whole bucket of ciphertext hides the incident. The
//! breaker turns that run into a finding of kind [`MASS_CHANGE`] (exit 3)
//! and holds the excess changes back until an operator accepts them.
//!
//! The share is measured against escrow's own count of the job's items,
//! which the primary cannot inflate: new keys in the primary are additions,
//! not changes, and count for nothing.
//!
//! ```
//! use escrow_sync_core::MassChangeGuard;
//!
//! let guard = MassChangeGuard::new(25);
//! // Under 20 escrow items the breaker never trips.
//! assert!(!guard.exceeded(19, 19));
//! // 26 of 100 changed is over 25 %.
//! assert!(guard.exceeded(26, 100));
//! assert!(!guard.exceeded(25, 100));
//! // A change may go ahead at once only while it is certain to stay within
//! // the share, whatever the final count turns out to be.
//! assert!(guard.allows_now(2, 8));
//! assert!(!guard.allows_now(3, 8));
//! ```

use crate::Finding;

/// The finding kind a tripped breaker reports.
pub const MASS_CHANGE: &str = "mass-change";

/// How many changed keys a finding names.
const FIRST_KEYS: usize = 10;

/// The mass-change limit of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MassChangeGuard {
    max_percent: u8,
    min_items: u64,
}

impl MassChangeGuard {
    /// Escrow must hold at least this many items of a job before the
    /// breaker can trip.
    pub const MIN_ITEMS: u64 = 20;
    /// The default `max_change_percent`.
    pub const DEFAULT_PERCENT: u8 = 25;

    /// A breaker that trips when more than `max_percent` % of the job's
    /// escrow items changed (100 or more: never).
    pub fn new(max_percent: u8) -> Self {
        MassChangeGuard { max_percent: max_percent.min(100), min_items: Self::MIN_ITEMS }
    }

    /// The breaker a job gets: `None` when it is off (`max_change_percent =
    /// 100`) or accepted for this run (`--accept-mass-change`).
    pub fn for_job(max_percent: u8, accepted: bool) -> Option<Self> {
        let guard = Self::new(max_percent);
        (!accepted && !guard.is_off()).then_some(guard)
    }

    /// The minimum for one part of a job cut into `parts` (a sharded run):
    /// [`Self::MIN_ITEMS`] shared among the parts, rounded up, so that a job
    /// that would trip the breaker whole trips it in its parts too (each part
    /// counts only the escrow items of its key range).
    pub fn min_items_per_part(parts: u32) -> u64 {
        Self::MIN_ITEMS.div_ceil(u64::from(parts.max(1)))
    }

    /// Sets how many escrow items a job needs before the breaker can trip.
    pub fn with_min_items(mut self, n: u64) -> Self {
        self.min_items = n;
        self
    }

    /// The share, in percent.
    pub fn max_percent(&self) -> u8 {
        self.max_percent
    }

    /// Whether the breaker never trips.
    pub fn is_off(&self) -> bool {
        self.max_percent >= 100
    }

    /// The most changes `escrow` escrow items allow.
    pub fn limit(&self, escrow: u64) -> u64 {
        (escrow as u128 * self.max_percent as u128 / 100) as u64
    }

    /// Whether `changed` changes among `escrow` escrow items trip the
    /// breaker.
    pub fn exceeded(&self, changed: u64, escrow: u64) -> bool {
        !self.is_off() && escrow >= self.min_items && changed > self.limit(escrow)
    }

    /// Whether the `changed`-th change may be made at once, with `seen`
    /// escrow items known so far: only when it stays within the share of
    /// `seen`, so that no final count (never below `seen`) can make it one
    /// too many. Changes refused here wait until the count is final.
    pub fn allows_now(&self, changed: u64, seen: u64) -> bool {
        self.is_off() || changed <= self.limit(seen)
    }

    /// The finding for a tripped breaker on `scope` (bucket, table, job):
    /// `changed` of `escrow` items changed, `held` changes held back,
    /// naming the first changed keys.
    pub fn finding(
        &self,
        scope: &str,
        changed: u64,
        escrow: u64,
        held: u64,
        first_keys: &[String],
    ) -> Finding {
        let share = if escrow == 0 { 0.0 } else { changed as f64 * 100.0 / escrow as f64 };
        let mut keys = first_keys.iter().take(FIRST_KEYS).cloned().collect::<Vec<_>>().join(", ");
        if first_keys.len() > FIRST_KEYS || (changed as usize) > first_keys.len().min(FIRST_KEYS) {
            keys.push_str(", ...");
        }
        Finding::new(
            scope,
            format!(
                "{changed} of {escrow} escrow items ({share:.0}%) changed in the primary in one \
                 run, over max_change_percent = {}: {held} change(s) held back, escrow keeps \
                 the earlier content; first keys: {keys}. If the change is legitimate, run again \
                 with --accept-mass-change; if not, treat the primary as compromised and restore \
                 from escrow",
                self.max_percent
            ),
        )
        .with_kind(MASS_CHANGE)
    }
}

/// Counts what a run changes against what escrow holds, and keeps the first
/// changed keys for the finding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeTally {
    /// Escrow items seen so far (kept, changed or retained).
    pub escrow_seen: u64,
    /// Items found changed so far.
    pub changed: u64,
    /// Changes let through so far.
    pub let_through: u64,
    /// The first changed keys, in the order found.
    pub first_keys: Vec<String>,
}

impl ChangeTally {
    /// Counts one escrow item.
    pub fn saw_escrow_item(&mut self) {
        self.escrow_seen += 1;
    }

    /// Counts one changed item; returns whether `guard` lets it through at
    /// once (it then counts as let through).
    pub fn changed(&mut self, key: &str, guard: &MassChangeGuard) -> bool {
        self.changed += 1;
        if self.first_keys.len() < FIRST_KEYS {
            self.first_keys.push(key.to_string());
        }
        let now = guard.allows_now(self.let_through + 1, self.escrow_seen);
        if now {
            self.let_through += 1;
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_small_job_cut_in_parts_still_trips_in_each_part() {
        // 20 escrow items, all rewritten, cut 4 ways: 5 a part.
        let per_part = MassChangeGuard::min_items_per_part(4);
        assert_eq!(per_part, 5);
        assert!(MassChangeGuard::new(25).with_min_items(per_part).exceeded(5, 5));
        assert!(!MassChangeGuard::new(25).exceeded(5, 5), "the whole job's minimum would not");
        assert_eq!(MassChangeGuard::min_items_per_part(3), 7, "rounded up");
        assert_eq!(MassChangeGuard::min_items_per_part(256), 1);
        assert_eq!(MassChangeGuard::min_items_per_part(1), MassChangeGuard::MIN_ITEMS);
    }

    #[test]
    fn a_hundred_percent_or_an_acceptance_turns_it_off() {
        assert!(MassChangeGuard::for_job(100, false).is_none());
        assert!(MassChangeGuard::for_job(25, true).is_none());
        let on = MassChangeGuard::for_job(25, false).unwrap();
        assert!(on.exceeded(1000, 1000));
        assert!(!MassChangeGuard::new(100).exceeded(1000, 1000));
    }

    #[test]
    fn the_finding_names_counts_keys_and_the_way_out() {
        let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
        let f = MassChangeGuard::new(25).finding("s3://escrow/", 40, 40, 30, &keys);
        assert_eq!(f.kind.as_deref(), Some(MASS_CHANGE));
        assert!(f.problem.contains("40 of 40"), "{}", f.problem);
        assert!(f.problem.contains("30 change(s) held back"), "{}", f.problem);
        assert!(f.problem.contains("k0, k1"), "{}", f.problem);
        assert!(!f.problem.contains("k10"), "{}", f.problem);
        assert!(f.problem.contains("--accept-mass-change"), "{}", f.problem);
    }

    proptest! {
        /// Whatever order changes and escrow items arrive in, the changes let
        /// through at once never exceed the share of the final count.
        #[test]
        fn changes_let_through_at_once_stay_within_the_final_share(
            order in proptest::collection::vec(any::<bool>(), 0..400),
            pct in 1u8..100,
        ) {
            let guard = MassChangeGuard::new(pct);
            let mut tally = ChangeTally::default();
            for changed in &order {
                tally.saw_escrow_item();
                if *changed {
                    tally.changed("k", &guard);
                }
            }
            prop_assert!(tally.let_through <= guard.limit(tally.escrow_seen));
            prop_assert!(tally.let_through <= tally.changed);
        }
    }
}
