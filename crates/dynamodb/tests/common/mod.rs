//! Mock rules and items shared by the DynamoDB mock suites.
#![allow(dead_code)]

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::describe_continuous_backups::DescribeContinuousBackupsOutput;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::describe_time_to_live::DescribeTimeToLiveOutput;
use aws_sdk_dynamodb::operation::list_tags_of_resource::ListTagsOfResourceOutput;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, ContinuousBackupsDescription, ContinuousBackupsStatus, KeySchemaElement,
    KeyType, PointInTimeRecoveryDescription, PointInTimeRecoveryStatus, ScalarAttributeType,
    TableDescription, TableStatus, Tag,
};
use aws_smithy_mocks::{Rule, mock};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use escrow_sync_core::RetryPolicy;
use escrow_sync_dynamodb::json::Record;

/// Items by `pk`, a fake table's content.
pub type Store = Arc<Mutex<BTreeMap<String, Record>>>;

/// The item `{pk, v}`.
pub fn item(pk: &str, v: u32) -> Record {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(pk.to_string())),
        ("v".to_string(), AttributeValue::N(v.to_string())),
    ])
}

/// An item's `pk`.
pub fn pk_of(r: &Record) -> String {
    match &r["pk"] {
        AttributeValue::S(s) => s.clone(),
        other => panic!("{other:?}"),
    }
}

/// An item's `v`.
pub fn v_of(r: &Record) -> String {
    match &r["v"] {
        AttributeValue::N(n) => n.clone(),
        other => panic!("{other:?}"),
    }
}

/// A fake table holding `items`.
pub fn store(items: impl IntoIterator<Item = Record>) -> Store {
    Arc::new(Mutex::new(items.into_iter().map(|r| (pk_of(&r), r)).collect()))
}

/// BatchGetItem on `table` answered from `data` (consistent reads only).
pub fn batch_get(table: &'static str, data: Store) -> Rule {
    mock!(Client::batch_get_item)
        .match_requests(move |r| {
            r.request_items()
                .and_then(|m| m.get(table))
                .is_some_and(|k| k.consistent_read() == Some(true))
        })
        .then_compute_output(move |r| {
            let data = data.lock().unwrap();
            let found: Vec<Record> = r.request_items().unwrap()[table]
                .keys()
                .iter()
                .filter_map(|k| data.get(&pk_of(k)).cloned())
                .collect();
            BatchGetItemOutput::builder().responses(table, found).build()
        })
}

/// Retries that take milliseconds.
pub fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }
}

/// An active table `name` of account 111111111111 keyed by `pk` (S), with
/// deletion protection on.
pub fn table(name: &str) -> TableDescription {
    TableDescription::builder()
        .table_name(name)
        .table_arn(format!("arn:aws:dynamodb:us-east-1:111111111111:table/{name}"))
        .table_status(TableStatus::Active)
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
        .deletion_protection_enabled(true)
        .build()
}

/// What TableInfo::describe asks about table `name`, in this order:
/// DescribeTable, DescribeTimeToLive (off), DescribeContinuousBackups
/// (PITR as `pitr` says), ListTagsOfResource (`tags`).
pub fn table_rules(
    name: &'static str,
    pitr: bool,
    tags: Vec<(&'static str, &'static str)>,
) -> Vec<Rule> {
    vec![
        mock!(Client::describe_table)
            .match_requests(move |r| r.table_name() == Some(name))
            .then_output(move || DescribeTableOutput::builder().table(table(name)).build()),
        mock!(Client::describe_time_to_live)
            .then_output(|| DescribeTimeToLiveOutput::builder().build()),
        mock!(Client::describe_continuous_backups).then_output(move || {
            let status = if pitr {
                PointInTimeRecoveryStatus::Enabled
            } else {
                PointInTimeRecoveryStatus::Disabled
            };
            DescribeContinuousBackupsOutput::builder()
                .continuous_backups_description(
                    ContinuousBackupsDescription::builder()
                        .continuous_backups_status(ContinuousBackupsStatus::Enabled)
                        .point_in_time_recovery_description(
                            PointInTimeRecoveryDescription::builder()
                                .point_in_time_recovery_status(status)
                                .build(),
                        )
                        .build()
                        .unwrap(),
                )
                .build()
        }),
        mock!(Client::list_tags_of_resource).then_output(move || {
            ListTagsOfResourceOutput::builder()
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| Tag::builder().key(*k).value(*v).build().unwrap())
                        .collect(),
                ))
                .build()
        }),
    ]
}
