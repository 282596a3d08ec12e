//! Property tests of the planner.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use proptest::prelude::*;

use escrow_sync_core::{Action, CopyPlan, Item, ItemStream, Policy, plan_stream};
use escrow_sync_testkit::strategies::{arb_listing, arb_listing_pair};

fn keys(items: &[Item]) -> BTreeSet<String> {
    items.iter().map(|i| i.key.clone()).collect()
}

fn sorted(mut items: Vec<Item>) -> Vec<Item> {
    items.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    items
}

fn stream(items: Vec<Item>) -> ItemStream<'static> {
    futures::stream::iter(items.into_iter().map(Ok)).boxed()
}

fn apply(dest: &[Item], plan: &CopyPlan) -> Vec<Item> {
    let mut out: BTreeMap<String, Item> = dest.iter().map(|i| (i.key.clone(), i.clone())).collect();
    for a in plan.actions() {
        match a {
            Action::Copy { item, .. } => {
                out.insert(item.key.clone(), item.clone());
            }
            Action::Delete { item } => {
                out.remove(&item.key);
            }
            Action::Skip { .. } | Action::Retain { .. } => {}
        }
    }
    out.into_values().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_source_key_gets_exactly_one_action((src, dst) in arb_listing_pair(40)) {
        let plan = CopyPlan::compute(src.clone(), dst.clone(), &Policy::new()).unwrap();
        let src_keys = keys(&src);
        for k in &src_keys {
            let acts: Vec<_> = plan.actions().iter().filter(|a| a.key() == k).collect();
            prop_assert_eq!(acts.len(), 1, "key {:?}", k);
            let copy_or_skip = matches!(acts[0], Action::Copy { .. } | Action::Skip { .. });
            prop_assert!(copy_or_skip);
        }
        // Escrow-only keys are retained, and nothing else appears.
        let all: BTreeSet<_> = src_keys.union(&keys(&dst)).cloned().collect();
        prop_assert_eq!(plan.actions().len(), all.len());
    }

    #[test]
    fn planning_a_listing_against_itself_copies_nothing(src in arb_listing(40)) {
        let plan = CopyPlan::compute(src.clone(), src.clone(), &Policy::new()).unwrap();
        let all_skip = plan.actions().iter().all(|a| matches!(a, Action::Skip { .. }));
        prop_assert!(all_skip);
        prop_assert_eq!(plan.summary().skip as usize, src.len());
    }

    #[test]
    fn after_applying_a_plan_planning_again_copies_nothing((src, dst) in arb_listing_pair(40), delete in any::<bool>()) {
        let policy = Policy::new().with_delete_missing(delete);
        let plan = CopyPlan::compute(src.clone(), dst.clone(), &policy).unwrap();
        let after = apply(&dst, &plan);
        let again = CopyPlan::compute(src.clone(), after, &policy).unwrap();
        prop_assert_eq!(again.summary().copy, 0);
        prop_assert_eq!(again.summary().delete, 0);
    }

    #[test]
    fn no_delete_unless_the_policy_allows((src, dst) in arb_listing_pair(40)) {
        let plan = CopyPlan::compute(src.clone(), dst.clone(), &Policy::new()).unwrap();
        let no_delete = plan.actions().iter().all(|a| !matches!(a, Action::Delete { .. }));
        prop_assert!(no_delete);
        let escrow_only: BTreeSet<_> = keys(&dst).difference(&keys(&src)).cloned().collect();
        prop_assert_eq!(plan.summary().retain as usize, escrow_only.len());

        let allowed = CopyPlan::compute(src, dst, &Policy::new().with_delete_missing(true)).unwrap();
        let deleted: BTreeSet<_> = allowed.actions().iter()
            .filter(|a| matches!(a, Action::Delete { .. }))
            .map(|a| a.key().to_string()).collect();
        prop_assert_eq!(deleted, escrow_only);
    }

    #[test]
    fn input_order_does_not_change_the_plan(
        (s1, d1, s2, d2) in arb_listing_pair(40).prop_flat_map(|(s, d)| {
            (Just(s.clone()), Just(d.clone()), Just(s).prop_shuffle(), Just(d).prop_shuffle())
        })
    ) {
        let a = CopyPlan::compute(s1, d1, &Policy::new()).unwrap();
        let b = CopyPlan::compute(s2, d2, &Policy::new()).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn streaming_merge_equals_batch((src, dst) in arb_listing_pair(40), delete in any::<bool>()) {
        let policy = Policy::new().with_delete_missing(delete);
        let batch = CopyPlan::compute(src.clone(), dst.clone(), &policy).unwrap();
        let streamed: Vec<Action> = futures::executor::block_on(
            plan_stream(stream(sorted(src)), stream(sorted(dst)), &policy)
                .map(|r| r.unwrap())
                .collect(),
        );
        prop_assert_eq!(streamed, batch.into_actions());
    }
}
