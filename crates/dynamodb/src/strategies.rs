//! proptest strategies for DynamoDB items (feature `strategies`): every
//! attribute type, nested, numbers as DynamoDB returns them, for the
//! property tests here and in embedders' own suites.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use proptest::prelude::*;

use crate::json::Record;

/// Numbers as DynamoDB returns them: up to 38 significant digits, signs,
/// fractions and exponents, kept as text.
pub fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[1-9][0-9]{0,37}",
        "-?0\\.[0-9]{1,20}",
        "-?[1-9][0-9]{0,10}\\.[0-9]{1,20}",
        "[1-9]\\.[0-9]{1,10}E[+-]?[1-9][0-9]?",
    ]
}

/// A non-empty binary value.
pub fn blob() -> impl Strategy<Value = Blob> {
    proptest::collection::vec(any::<u8>(), 1..64).prop_map(Blob::new)
}

/// A scalar or set value.
pub fn leaf() -> impl Strategy<Value = AttributeValue> {
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

/// Any value, maps and lists nested up to four deep (empty ones included).
pub fn value() -> impl Strategy<Value = AttributeValue> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(AttributeValue::L),
            proptest::collection::hash_map(".{1,10}", inner, 0..6).prop_map(AttributeValue::M),
        ]
    })
}

/// An item of 1 to 11 attributes, with no particular key.
pub fn record() -> impl Strategy<Value = Record> {
    proptest::collection::hash_map("[a-zA-Z_#.-][a-zA-Z0-9_#.:-]{0,20}", value(), 1..12)
}

/// An item with a string partition key `pk` of value `key`.
pub fn keyed_record(key: String) -> impl Strategy<Value = Record> {
    record().prop_map(move |mut r| {
        r.insert("pk".to_string(), AttributeValue::S(key.clone()));
        r
    })
}
