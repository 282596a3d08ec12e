//! proptest strategies for items and listings.

use std::collections::BTreeMap;

use proptest::prelude::*;

use escrow_sync_core::{Item, ItemKind};

/// Keys drawn from a small alphabet (so listings collide often), including
/// `/`, multi-byte characters and the empty-ish edge cases S3 allows.
pub fn arb_key() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-c/é0-2]{1,6}").expect("valid regex")
}

/// An item with a small size and a fingerprint from a small set (so equal
/// contents are common).
pub fn arb_item() -> impl Strategy<Value = Item> {
    (arb_key(), 0u64..4, 0u8..3)
        .prop_map(|(key, size, fp)| Item::new(key, ItemKind::Object, size, format!("\"fp{fp}\"")))
}

/// A listing with unique keys, in no particular order.
pub fn arb_listing(max: usize) -> impl Strategy<Value = Vec<Item>> {
    proptest::collection::vec(arb_item(), 0..max)
        .prop_map(|items| {
            let unique: BTreeMap<String, Item> =
                items.into_iter().map(|i| (i.key.clone(), i)).collect();
            unique.into_values().collect::<Vec<_>>()
        })
        .prop_shuffle()
}

/// A source listing and an escrow listing that share many keys.
pub fn arb_listing_pair(max: usize) -> impl Strategy<Value = (Vec<Item>, Vec<Item>)> {
    (arb_listing(max), arb_listing(max))
}
