//! Scan checkpoints, kept in the escrow account: one item per job in the
//! escrow DynamoDB table `escrow-sync-checkpoints` (configurable), created
//! on first use. The item holds the number of segments and each segment's
//! `LastEvaluatedKey` (DynamoDB JSON), so an interrupted run resumes every
//! segment where it stopped. A scan that finishes deletes its item.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus,
};
use serde_json::{Value, json};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Error, ErrorKind, Result};

use crate::json::{record_from_json, record_to_json};
use crate::scan::Checkpoint;

/// The default name of the escrow table that holds checkpoints.
pub const DEFAULT_TABLE: &str = "escrow-sync-checkpoints";

/// A saved, unfinished scan.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedScan {
    /// The source table's ARN the checkpoints belong to.
    pub source_arn: String,
    /// The number of segments the scan runs with.
    pub segments: u32,
    /// Where each segment stands.
    pub checkpoints: Vec<Checkpoint>,
    /// Free-form state of the sink (an export's generation id).
    pub sink_state: String,
}

impl SavedScan {
    fn to_json(&self) -> Value {
        json!({
            "source_arn": self.source_arn,
            "segments": self.segments,
            "sink_state": self.sink_state,
            "checkpoints": self.checkpoints.iter().map(|c| json!({
                "segment": c.segment,
                "done": c.done,
                "last_key": c.last_key.as_ref().map(record_to_json),
            })).collect::<Vec<_>>(),
        })
    }

    fn from_json(v: &Value) -> Result<SavedScan> {
        let bad = |what: &str| {
            Error::new(ErrorKind::Failed, "read checkpoint", "escrow checkpoint item", what)
        };
        let checkpoints = v["checkpoints"]
            .as_array()
            .ok_or_else(|| bad("no checkpoints"))?
            .iter()
            .map(|c| {
                Ok(Checkpoint {
                    segment: c["segment"].as_u64().ok_or_else(|| bad("no segment"))? as u32,
                    done: c["done"].as_bool().unwrap_or(false),
                    last_key: match &c["last_key"] {
                        Value::Null => None,
                        k => Some(record_from_json(k, "last_key")?),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SavedScan {
            source_arn: v["source_arn"].as_str().unwrap_or_default().to_string(),
            segments: v["segments"].as_u64().ok_or_else(|| bad("no segment count"))? as u32,
            sink_state: v["sink_state"].as_str().unwrap_or_default().to_string(),
            checkpoints,
        })
    }
}

/// Checkpoints in an escrow DynamoDB table.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    client: Client,
    table: String,
}

impl CheckpointStore {
    /// The store in escrow table `table`, reached with `client` (escrow
    /// credentials).
    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        CheckpointStore { client, table: table.into() }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn resource(&self, job: &str) -> String {
        format!("escrow dynamodb table {} item {job}", self.table)
    }

    /// The saved scan of `job`, if there is one.
    pub async fn load(&self, job: &str) -> Result<Option<SavedScan>> {
        let res = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("job", AttributeValue::S(job.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(e, "dynamodb:GetItem", self.resource(job)));
        let out = match res {
            Ok(out) => out,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(item) = out.item else { return Ok(None) };
        let Some(AttributeValue::S(text)) = item.get("state") else { return Ok(None) };
        let v: Value = serde_json::from_str(text).map_err(|e| {
            Error::new(ErrorKind::Failed, "read checkpoint", self.resource(job), e.to_string())
        })?;
        SavedScan::from_json(&v).map(Some)
    }

    /// Saves `scan` as `job`'s checkpoint, creating the table if needed.
    pub async fn save(&self, job: &str, scan: &SavedScan) -> Result<()> {
        let put = || {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("job", AttributeValue::S(job.to_string()))
                .item("state", AttributeValue::S(scan.to_json().to_string()))
                .send()
        };
        match put().await.map_err(|e| sdk_error(e, "dynamodb:PutItem", self.resource(job))) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.create().await?;
                put().await.map_err(|e| sdk_error(e, "dynamodb:PutItem", self.resource(job)))?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes `job`'s checkpoint (a finished scan).
    pub async fn clear(&self, job: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("job", AttributeValue::S(job.to_string()))
            .send()
            .await
            .map_err(|e| sdk_error(e, "dynamodb:DeleteItem", self.resource(job)))?;
        Ok(())
    }

    async fn create(&self) -> Result<()> {
        let resource = format!("escrow dynamodb table {}", self.table);
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            Error::new(ErrorKind::Failed, "dynamodb:CreateTable", &resource, e.to_string())
        };
        let res = self
            .client
            .create_table()
            .table_name(&self.table)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("job")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build)?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("job")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        if let Err(e) = res {
            // Another run may have created it meanwhile.
            if e.as_service_error().is_none_or(|s| !s.is_resource_in_use_exception()) {
                return Err(sdk_error(e, "dynamodb:CreateTable", resource));
            }
        }
        let mut delay = Duration::from_millis(100);
        for _ in 0..60 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| sdk_error(e, "dynamodb:DescribeTable", resource.clone()))?;
            if out.table.and_then(|t| t.table_status) == Some(TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        Err(Error::new(ErrorKind::Transient, "dynamodb:DescribeTable", resource, "not active yet"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_scans_round_trip_through_json() {
        let scan = SavedScan {
            source_arn: "arn:aws:dynamodb:us-east-1:111111111111:table/orders".into(),
            segments: 2,
            sink_state: "gen".into(),
            checkpoints: vec![
                Checkpoint { segment: 0, last_key: None, done: true },
                Checkpoint {
                    segment: 1,
                    last_key: Some(
                        [("pk".to_string(), AttributeValue::B(vec![1u8, 2].into()))].into(),
                    ),
                    done: false,
                },
            ],
        };
        assert_eq!(SavedScan::from_json(&scan.to_json()).unwrap(), scan);
    }
}
