//! Shared inputs for the escrow-sync benchmarks.
#![deny(missing_docs)]

use escrow_sync_core::{Item, ItemKind};

/// `n` items in key order; every third one has a fingerprint that depends
/// on `salt`, so planning two listings with different salts copies a third.
pub fn listing(n: usize, salt: usize) -> Vec<Item> {
    (0..n)
        .map(|i| {
            let fp = if i % 3 == 0 { format!("\"{}\"", i + salt) } else { format!("\"{i}\"") };
            Item::new(format!("objects/{i:09}"), ItemKind::Object, i as u64, fp)
        })
        .collect()
}
