//! Property tests: arbitrary items, every attribute type, nested, round-trip
//! exactly through DynamoDB JSON lines and through an export generation's
//! gzip data file. (Through the table sink: tests/dynamodb_tables.rs, on
//! the emulator.)

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use proptest::prelude::*;

use escrow_sync_dynamodb::export::{DataFile, read_data_file};
use escrow_sync_dynamodb::json::{from_line, to_line};
use escrow_sync_dynamodb::strategies::record;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_item_round_trips_through_an_import_table_line(item in record()) {
        let line = to_line(&item);
        prop_assert!(!line.contains('\n'), "one item, one line");
        prop_assert_eq!(from_line(&line).unwrap(), item);
    }

    #[test]
    fn every_item_round_trips_through_an_export_data_file(
        items in proptest::collection::vec(record(), 0..20)
    ) {
        let mut file = DataFile::new();
        for i in &items {
            file.push(i).unwrap();
        }
        prop_assert_eq!(file.items(), items.len() as u64);
        let data = file.finish().unwrap();
        prop_assert_eq!(read_data_file(&data, "f").unwrap(), items);
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
