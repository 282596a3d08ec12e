//! Mock rules shared by the DynamoDB mock suites.

use aws_sdk_dynamodb::Client;
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
