//! Scan checkpoints, kept in the escrow account: in the escrow DynamoDB
//! table `escrow-sync-checkpoints` (configurable), created on first use
//! (with the escrow KMS key when one is configured), keyed by job name
//! (`job`) and part (`part`).
//!
//! A saved scan is the number of segments and each segment's
//! `LastEvaluatedKey` (DynamoDB JSON), with what it belongs to: the source
//! table's ARN and id (a table deleted and re-created under the same name
//! has another id) and the destination. It is stored as chunks of at most
//! 300 KB (`part` = `v<version>#<n>`) and a head item (`part` = `head`)
//! naming the version; the head is written last, in one PutItem, so a save
//! interrupted half-way leaves the previous save whole. Older chunks are
//! deleted after the head moves on. A scan that finishes deletes its items.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, SseSpecification, SseType,
};
use serde_json::{Value, json};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Error, ErrorKind, Result};

use crate::json::{record_from_json, record_to_json};
use crate::scan::Checkpoint;

/// The default name of the escrow table that holds checkpoints.
pub const DEFAULT_TABLE: &str = escrow_sync_core::layout::CHECKPOINT_TABLE;

/// Characters of saved state per chunk item (DynamoDB items are at most
/// 400 KB).
const CHUNK: usize = 300_000;

/// The most bytes of saved state read back (or saved) for one job: 16 MiB,
/// some 50 chunk items. A segment's checkpoint is its number and its
/// `LastEvaluatedKey` (a primary key: at most 3 KB, typically a few dozen
/// bytes), so this holds thousands of segments even with the largest keys.
pub const CHECKPOINT_CAP: usize = 16 << 20;

/// A saved, unfinished scan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SavedScan {
    /// The source table's ARN the checkpoints belong to.
    pub source_arn: String,
    /// The source table's id (changes when the table is re-created).
    pub table_id: String,
    /// Where the scan writes (`dynamodb://<table>` or `s3://<bucket>/<prefix>`).
    pub destination: String,
    /// The number of segments the scan runs with.
    pub segments: u32,
    /// Where each segment stands.
    pub checkpoints: Vec<Checkpoint>,
    /// Free-form state of the sink (an export's generation id).
    pub sink_state: String,
}

impl SavedScan {
    /// Whether this saved scan belongs to a scan of the table `arn` with
    /// id `table_id` into `destination`.
    pub fn belongs_to(&self, arn: &str, table_id: &str, destination: &str) -> bool {
        self.source_arn == arn && self.table_id == table_id && self.destination == destination
    }

    fn to_json(&self) -> Value {
        json!({
            "source_arn": self.source_arn,
            "table_id": self.table_id,
            "destination": self.destination,
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
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
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
            source_arn: text("source_arn"),
            table_id: text("table_id"),
            destination: text("destination"),
            segments: v["segments"].as_u64().ok_or_else(|| bad("no segment count"))? as u32,
            sink_state: text("sink_state"),
            checkpoints,
        })
    }
}

/// Splits `text` into pieces of at most `max` bytes on character boundaries.
fn chunks(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        out.push(head);
        rest = tail;
    }
    out
}

/// The watermark of a `native-incremental` table job: the point in time
/// its escrow table holds every change up to (the start of a full scan
/// that completed, or the end of an incremental export applied whole). It
/// is kept only here, in escrow's checkpoint table (`job` =
/// `<job>#incremental`, `part` = `watermark`), never read from anything the
/// primary can write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWatermark {
    /// The point in time (whole seconds).
    pub time: std::time::SystemTime,
    /// The source table's ARN it belongs to.
    pub source_arn: String,
    /// The source table's id (a re-created table has another).
    pub table_id: String,
    /// The escrow table (`dynamodb://<table>`).
    pub destination: String,
}

impl TableWatermark {
    /// Whether it belongs to this source table (same ARN and id) and
    /// destination.
    pub fn belongs_to(&self, arn: &str, table_id: &str, destination: &str) -> bool {
        self.source_arn == arn && self.table_id == table_id && self.destination == destination
    }
}

/// The checkpoint table's `job` of `job`'s watermark.
pub fn watermark_row(job: &str) -> String {
    format!("{job}#incremental")
}

/// Checkpoints in an escrow DynamoDB table.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    client: Client,
    table: String,
    kms_key_id: Option<String>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

impl CheckpointStore {
    /// The store in escrow table `table`, reached with `client` (escrow
    /// credentials).
    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        CheckpointStore { client, table: table.into(), kms_key_id: None }
    }

    /// Encrypts the table, when this call creates it, with the escrow key
    /// (checkpoints hold primary key values of the source).
    pub fn with_kms_key_id(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn resource(&self, job: &str) -> String {
        format!("escrow dynamodb table {} job {job}", self.table)
    }

    /// Checks, before anything runs, that an existing checkpoint table has
    /// the key escrow-sync gives it (`job` and `part`, both strings); a
    /// missing one is created on first use.
    pub async fn check(&self) -> Result<()> {
        let res = self.client.describe_table().table_name(&self.table).send().await;
        let table = match res.map_err(|e| sdk_error(e, "dynamodb:DescribeTable", &self.table)) {
            Ok(out) => out.table,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let keys: Vec<(String, String)> = table
            .iter()
            .flat_map(|t| t.key_schema())
            .map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string()))
            .collect();
        let want =
            [("job".to_string(), "HASH".to_string()), ("part".to_string(), "RANGE".to_string())];
        if keys != want {
            return Err(Error::invalid_config(format!(
                "checkpoint table {} exists with key {keys:?}, not (job HASH, part RANGE): set \
                 checkpoint_table to a new name (escrow-sync creates it) or to a table it created",
                self.table
            )));
        }
        Ok(())
    }

    /// Every item of `job` (part → item); none when the table is missing.
    async fn items(&self, job: &str) -> Result<HashMap<String, HashMap<String, AttributeValue>>> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#j = :j")
            .expression_attribute_names("#j", "job")
            .expression_attribute_values(":j", s(job))
            .consistent_read(true)
            .into_paginator()
            .send();
        let res: std::result::Result<Vec<_>, _> = pages.try_collect().await;
        let pages = match res.map_err(|e| sdk_error(e, "dynamodb:Query", self.resource(job))) {
            Ok(p) => p,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(e),
        };
        Ok(pages
            .into_iter()
            .flat_map(|p| p.items.unwrap_or_default())
            .filter_map(|i| match i.get("part") {
                Some(AttributeValue::S(p)) => Some((p.clone(), i)),
                _ => None,
            })
            .collect())
    }

    /// One item of `job` (consistent read); none when it or the table is
    /// missing.
    async fn get(&self, job: &str, part: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let res = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("job", s(job))
            .key("part", s(part))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(e, "dynamodb:GetItem", self.resource(job)));
        match res {
            Ok(out) => Ok(out.item),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn over_cap(&self, job: &str, what: String) -> Error {
        Error::new(
            ErrorKind::PreconditionFailed,
            "read checkpoint",
            self.resource(job),
            format!(
                "{what}, over the cap of {CHECKPOINT_CAP} bytes: escrow-sync does not save one \
                 so large (an altered item?); delete job {job}'s items from table {} (the next \
                 run starts the scan over)",
                self.table
            ),
        )
    }

    /// The saved scan of `job`, if there is a whole one. The head and then
    /// each chunk are read by key, at most [`CHECKPOINT_CAP`] bytes in all:
    /// a head naming more is an error that says what to delete.
    pub async fn load(&self, job: &str) -> Result<Option<SavedScan>> {
        let Some(head) = self.get(job, "head").await? else { return Ok(None) };
        let (Some(AttributeValue::S(version)), Some(AttributeValue::N(count))) =
            (head.get("version"), head.get("chunks"))
        else {
            return Ok(None);
        };
        let count: usize = count.parse().unwrap_or(0);
        if count > CHECKPOINT_CAP.div_ceil(CHUNK) {
            return Err(self.over_cap(job, format!("the saved checkpoint has {count} chunks")));
        }
        let mut text = String::new();
        for n in 0..count {
            let chunk = self.get(job, &format!("v{version}#{n:05}")).await?;
            match chunk.as_ref().and_then(|i| i.get("data")) {
                Some(AttributeValue::S(piece)) => {
                    if text.len() + piece.len() > CHECKPOINT_CAP {
                        return Err(self.over_cap(job, "the saved checkpoint is larger".into()));
                    }
                    text.push_str(piece)
                }
                _ => {
                    // Another run of the same job saved over this one: its
                    // scan starts over rather than resuming a torn state.
                    tracing::warn!(job, table = %self.table, "checkpoint chunk {n} of version {version} is missing: not resuming");
                    return Ok(None);
                }
            }
        }
        let parsed = serde_json::from_str::<Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| SavedScan::from_json(&v).map_err(|e| e.to_string()));
        match parsed {
            Ok(scan) => Ok(Some(scan)),
            Err(e) => {
                tracing::warn!(job, table = %self.table, error = %e, "unreadable checkpoint: not resuming");
                Ok(None)
            }
        }
    }

    /// The saved scan of `job` if it belongs to a scan of `source` into
    /// `destination`. One saved for another table (or for this name
    /// re-created) or another destination is ignored: then a warning saying
    /// so, ending in `then`, is pushed onto `warnings`.
    pub async fn load_for(
        &self,
        job: &str,
        source: &crate::table::TableInfo,
        destination: &str,
        warnings: &mut Vec<String>,
        then: &str,
    ) -> Result<Option<SavedScan>> {
        let loaded = match self.load(job).await {
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                warnings.push(format!("ignored a checkpoint of job {job}: {}; {then}", e.chain()));
                return Ok(None);
            }
            other => other?,
        };
        Ok(match loaded {
            Some(s) if s.belongs_to(source.arn(), source.table_id(), destination) => Some(s),
            Some(_) => {
                warnings.push(format!(
                    "ignored a checkpoint of job {job} saved for another source table or \
                     destination: {then}"
                ));
                None
            }
            None => None,
        })
    }

    /// Saves `scan` as `job`'s checkpoint, creating the table if needed:
    /// chunks first, then the head, then older chunks are deleted.
    pub async fn save(&self, job: &str, scan: &SavedScan) -> Result<()> {
        let version = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0)
            .to_string();
        let text = scan.to_json().to_string();
        if text.len() > CHECKPOINT_CAP {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "save checkpoint",
                self.resource(job),
                format!(
                    "the checkpoints of {} segments take {} bytes, over the cap of \
                     {CHECKPOINT_CAP}: set segments lower for job {job}",
                    scan.segments,
                    text.len()
                ),
            ));
        }
        let pieces = chunks(&text, CHUNK);
        for (n, piece) in pieces.iter().enumerate() {
            self.put(
                job,
                HashMap::from([
                    ("job".to_string(), s(job)),
                    ("part".to_string(), s(format!("v{version}#{n:05}"))),
                    ("data".to_string(), s(*piece)),
                ]),
            )
            .await?;
        }
        self.put(
            job,
            HashMap::from([
                ("job".to_string(), s(job)),
                ("part".to_string(), s("head")),
                ("version".to_string(), s(version.clone())),
                ("chunks".to_string(), AttributeValue::N(pieces.len().to_string())),
                ("source_arn".to_string(), s(scan.source_arn.clone())),
                ("updated_at".to_string(), s(escrow_sync_aws::now_rfc3339())),
            ]),
        )
        .await?;
        // Only older versions: a newer one is another run's, saved meanwhile.
        let ours: u128 = version.parse().unwrap_or(0);
        for part in self.items(job).await?.into_keys() {
            let older = part
                .strip_prefix('v')
                .and_then(|p| p.split('#').next())
                .and_then(|v| v.parse::<u128>().ok())
                .is_some_and(|v| v < ours);
            if older {
                self.delete(job, &part).await?;
            }
        }
        Ok(())
    }

    async fn put(&self, job: &str, item: HashMap<String, AttributeValue>) -> Result<()> {
        let put =
            || self.client.put_item().table_name(&self.table).set_item(Some(item.clone())).send();
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

    async fn delete(&self, job: &str, part: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("job", s(job))
            .key("part", s(part))
            .send()
            .await
            .map_err(|e| sdk_error(e, "dynamodb:DeleteItem", self.resource(job)))?;
        Ok(())
    }

    /// `job`'s watermark ([`TableWatermark`]), if one was saved; a row that
    /// does not read as one is an error naming it and what to delete.
    pub async fn load_watermark(&self, job: &str) -> Result<Option<TableWatermark>> {
        let row = watermark_row(job);
        let Some(item) = self.get(&row, "watermark").await? else { return Ok(None) };
        let text = |k: &str| match item.get(k) {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        };
        let time = text("time").and_then(|t| escrow_sync_core::time::parse_rfc3339(&t));
        match (time, text("source_arn"), text("table_id"), text("destination")) {
            (Some(time), Some(source_arn), Some(table_id), Some(destination)) => {
                Ok(Some(TableWatermark { time, source_arn, table_id, destination }))
            }
            _ => Err(Error::new(
                ErrorKind::PreconditionFailed,
                "read watermark",
                self.resource(&row),
                format!(
                    "the watermark item is incomplete (time, source_arn, table_id, destination): \
                     delete item (job {row}, part watermark) from table {}; the next run takes a \
                     full scan",
                    self.table
                ),
            )),
        }
    }

    /// Saves `job`'s watermark, creating the table if needed (one PutItem:
    /// the old watermark stands until the new one is whole).
    pub async fn save_watermark(&self, job: &str, w: &TableWatermark) -> Result<()> {
        let row = watermark_row(job);
        self.put(
            &row,
            HashMap::from([
                ("job".to_string(), s(row.clone())),
                ("part".to_string(), s("watermark")),
                ("time".to_string(), s(escrow_sync_core::rfc3339(w.time))),
                ("source_arn".to_string(), s(w.source_arn.clone())),
                ("table_id".to_string(), s(w.table_id.clone())),
                ("destination".to_string(), s(w.destination.clone())),
                ("updated_at".to_string(), s(escrow_sync_aws::now_rfc3339())),
            ]),
        )
        .await
    }

    /// Deletes `job`'s checkpoint (a finished scan).
    pub async fn clear(&self, job: &str) -> Result<()> {
        let items = self.items(job).await?;
        // The head first: a clear interrupted half-way leaves no whole save.
        if items.contains_key("head") {
            self.delete(job, "head").await?;
        }
        for part in items.into_keys().filter(|p| p != "head") {
            self.delete(job, &part).await?;
        }
        Ok(())
    }

    async fn create(&self) -> Result<()> {
        let resource = format!("escrow dynamodb table {}", self.table);
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            Error::new(ErrorKind::Failed, "dynamodb:CreateTable", &resource, e.to_string())
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(build)
        };
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build)
        };
        let mut req = self
            .client
            .create_table()
            .table_name(&self.table)
            .key_schema(key("job", KeyType::Hash)?)
            .key_schema(key("part", KeyType::Range)?)
            .attribute_definitions(attr("job")?)
            .attribute_definitions(attr("part")?)
            .billing_mode(BillingMode::PayPerRequest)
            // An escrow table like any other: it cannot be deleted by
            // mistake, and its history is kept (the audit checks both).
            .deletion_protection_enabled(true);
        if let Some(k) = &self.kms_key_id {
            req = req.sse_specification(
                SseSpecification::builder()
                    .enabled(true)
                    .sse_type(SseType::Kms)
                    .kms_master_key_id(k)
                    .build(),
            );
        }
        if let Err(e) = req.send().await {
            // Another run may have created it meanwhile.
            if e.as_service_error().is_none_or(|s| !s.is_resource_in_use_exception()) {
                return Err(sdk_error(e, "dynamodb:CreateTable", resource));
            }
        }
        crate::table::wait_table_active(
            &self.client,
            &self.table,
            Duration::from_secs(300),
            &resource,
        )
        .await?;
        crate::table::enable_pitr(
            &self.client,
            &self.table,
            &resource,
            Duration::from_secs(300),
            &escrow_sync_core::RetryPolicy::default(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_scans_round_trip_through_json() {
        let scan = SavedScan {
            source_arn: "arn:aws:dynamodb:us-east-1:111111111111:table/orders".into(),
            table_id: "id-1".into(),
            destination: "dynamodb://escrow-orders".into(),
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
        assert!(scan.belongs_to(&scan.source_arn, "id-1", "dynamodb://escrow-orders"));
        assert!(!scan.belongs_to(&scan.source_arn, "id-2", "dynamodb://escrow-orders"));
        assert!(!scan.belongs_to(&scan.source_arn, "id-1", "dynamodb://elsewhere"));
    }

    #[test]
    fn chunks_split_on_character_boundaries() {
        let text = "ab\u{e9}cd\u{1F600}e";
        for max in 4..12 {
            let parts = chunks(text, max);
            assert!(parts.iter().all(|p| p.len() <= max), "{parts:?}");
            assert_eq!(parts.concat(), text);
        }
        assert!(chunks("", 10).is_empty());
    }
}
