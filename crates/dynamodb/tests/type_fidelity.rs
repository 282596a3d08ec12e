//! Property tests: arbitrary items, every attribute type, nested, round-trip
//! exactly through DynamoDB JSON lines.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use proptest::prelude::*;

use escrow_sync_dynamodb::json::{Record, from_line, to_line};

/// Numbers as DynamoDB returns them: up to 38 significant digits, signs,
/// fractions and exponents, kept as text.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[1-9][0-9]{0,37}",
        "-?0\\.[0-9]{1,20}",
        "-?[1-9][0-9]{0,10}\\.[0-9]{1,20}",
        "[1-9]\\.[0-9]{1,10}E[+-]?[1-9][0-9]?",
    ]
}

fn blob() -> impl Strategy<Value = Blob> {
    proptest::collection::vec(any::<u8>(), 1..64).prop_map(Blob::new)
}

fn leaf() -> impl Strategy<Value = AttributeValue> {
    prop_oneof![
        ".{0,40}".prop_map(AttributeValue::S),
        number().prop_map(AttributeValue::N),
        blob().prop_map(AttributeValue::B),
        proptest::collection::btree_set(".{1,12}", 1..6)
            .prop_map(|s| AttributeValue::Ss(s.into_iter().collect())),
        proptest::collection::btree_set(number(), 1..6)
            .prop_map(|s| AttributeValue::Ns(s.into_iter().collect())),
        proptest::collection::vec(blob(), 1..4).prop_map(AttributeValue::Bs),
        Just(AttributeValue::Null(true)),
        any::<bool>().prop_map(AttributeValue::Bool),
    ]
}

fn value() -> impl Strategy<Value = AttributeValue> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(AttributeValue::L),
            proptest::collection::hash_map(".{1,10}", inner, 0..6).prop_map(AttributeValue::M),
        ]
    })
}

fn record() -> impl Strategy<Value = Record> {
    proptest::collection::hash_map("[a-zA-Z_#.-][a-zA-Z0-9_#.:-]{0,20}", value(), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_item_round_trips_through_an_import_table_line(item in record()) {
        let line = to_line(&item);
        prop_assert!(!line.contains('\n'), "one item, one line");
        prop_assert_eq!(from_line(&line).unwrap(), item);
    }
}

#[test]
fn an_item_near_400_kb_round_trips() {
    let mut item: HashMap<String, AttributeValue> = HashMap::new();
    item.insert("pk".into(), AttributeValue::S("big".into()));
    item.insert("payload".into(), AttributeValue::B(Blob::new(vec![0xAB; 300 * 1024])));
    item.insert("text".into(), AttributeValue::S("é".repeat(45 * 1024)));
    let line = to_line(&item);
    assert!(line.len() > 400 * 1000, "{} bytes of JSON", line.len());
    assert_eq!(from_line(&line).unwrap(), item);
}

#[test]
fn empty_values_dynamodb_allows_round_trip() {
    let mut item: HashMap<String, AttributeValue> = HashMap::new();
    item.insert("pk".into(), AttributeValue::S("k".into()));
    item.insert("empty_string".into(), AttributeValue::S(String::new()));
    item.insert("empty_binary".into(), AttributeValue::B(Blob::new(Vec::new())));
    item.insert("empty_list".into(), AttributeValue::L(Vec::new()));
    item.insert("empty_map".into(), AttributeValue::M(HashMap::new()));
    assert_eq!(from_line(&to_line(&item)).unwrap(), item);
}
