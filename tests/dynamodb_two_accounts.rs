//! The DynamoDB scan on the emulator, through the reader role: every item
//! once across segments, under the read budget, and a resume from
//! checkpoints that reads nothing twice.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use futures::TryStreamExt;

use escrow_sync_dynamodb::scan::{ScanOptions, ScanPage, TableScanner};
use escrow_sync_e2e::{PRIMARY, admin, sessions, unique};

async fn table_with(n: usize) -> String {
    let ddb = aws_sdk_dynamodb::Client::new(admin(PRIMARY).await.sdk_config());
    let table = unique("orders");
    ddb.create_table()
        .table_name(&table)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    for i in 0..n {
        ddb.put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S(format!("order#{i:05}")))
            .item("total", AttributeValue::N(format!("{i}.{i:02}")))
            .send()
            .await
            .unwrap();
    }
    table
}

fn keys(pages: &[ScanPage]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.items.iter())
        .map(|i: &HashMap<String, AttributeValue>| match &i["pk"] {
            AttributeValue::S(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_segmented_scan_reads_every_item_once_and_resumes_from_checkpoints() {
    let table = table_with(300).await;
    let s = sessions().await;
    let client = aws_sdk_dynamodb::Client::new(s.primary.sdk_config());
    let options = ScanOptions::new().with_segments(4).with_page_limit(Some(25));

    let scanner =
        TableScanner::from_client(client.clone(), &table, 10_000.0).with_options(options.clone());
    let pages: Vec<ScanPage> = scanner.pages(&[]).try_collect().await.unwrap();
    let all = keys(&pages);
    assert_eq!(all.len(), 300);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 300, "no item twice");
    assert!(scanner.budget().consumed() > 0.0, "capacity was charged");

    // Interrupt after the first page of each segment, then resume.
    let scanner =
        TableScanner::from_client(client.clone(), &table, 10_000.0).with_options(options.clone());
    let mut stream = scanner.pages(&[]);
    let mut first = Vec::new();
    let mut checkpoints = HashMap::new();
    while checkpoints.len() < 4 {
        let page = stream.try_next().await.unwrap().expect("a page");
        checkpoints.entry(page.checkpoint.segment).or_insert_with(|| page.checkpoint.clone());
        if checkpoints.get(&page.checkpoint.segment) == Some(&page.checkpoint) {
            first.push(page);
        }
    }
    drop(stream);
    let resume: Vec<_> = checkpoints.into_values().collect();
    let scanner = TableScanner::from_client(client, &table, 10_000.0).with_options(options);
    let rest: Vec<ScanPage> = scanner.pages(&resume).try_collect().await.unwrap();
    let mut seen = keys(&first);
    seen.extend(keys(&rest));
    assert_eq!(seen.len(), 300, "the resumed scan reads each remaining item once");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 300);
}
