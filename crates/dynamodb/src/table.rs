//! Tables: what the primary's table looks like ([`TableInfo`]), and the
//! escrow table ([`EscrowTable`]) that clones it — key schema, attribute
//! definitions, indexes with their projections, billing mode, SSE with the
//! escrow key, tags plus provenance — with point-in-time recovery and
//! deletion protection on, and never TTL.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    BillingMode, GlobalSecondaryIndex, KeyType, KeysAndAttributes, LocalSecondaryIndex,
    PointInTimeRecoverySpecification, ProvisionedThroughput, PutRequest, SseSpecification, SseType,
    TableDescription, TableStatus, Tag, TimeToLiveStatus, WriteRequest,
};
use futures::StreamExt;
use serde_json::{Value, json};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::poll::{Polled, Polling, poll_until};
use escrow_sync_core::tags;
use escrow_sync_core::{Error, ErrorKind, Result, RetryPolicy};

use crate::json::{Record, to_line};
use crate::keys::{KeySchema, content_digest};

/// Items per BatchWriteItem request (the service's limit).
pub const WRITE_BATCH: usize = 25;
/// Keys per BatchGetItem request (the service's limit).
pub const READ_BATCH: usize = 100;

pub(crate) fn no_retries() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default()
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
}

/// A table of the primary as DescribeTable, DescribeTimeToLive,
/// DescribeContinuousBackups and ListTagsOfResource show it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    description: TableDescription,
    /// The table's tags.
    pub tags: BTreeMap<String, String>,
    /// The TTL attribute, when TTL is enabled (or being enabled).
    pub ttl_attribute: Option<String>,
    /// Whether point-in-time recovery is enabled.
    pub pitr: bool,
}

impl TableInfo {
    /// Describes `table` with `client` (a source table). Tags, TTL and
    /// PITR that the credentials may not read are left empty/off rather
    /// than failing: they are recorded, not relied on.
    pub async fn describe(client: &Client, table: &str) -> Result<TableInfo> {
        Self::describe_with(client, table, false).await
    }

    /// Describes `table` with `client`, failing when TTL, PITR or tags
    /// cannot be read (an escrow table: its TTL and PITR are checked).
    pub async fn describe_strict(client: &Client, table: &str) -> Result<TableInfo> {
        Self::describe_with(client, table, true).await
    }

    async fn describe_with(client: &Client, table: &str, strict: bool) -> Result<TableInfo> {
        let resource = format!("dynamodb table {table}");
        let description = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_error(e, "dynamodb:DescribeTable", resource.clone()))?
            .table
            .ok_or_else(|| {
                Error::new(ErrorKind::Failed, "dynamodb:DescribeTable", &resource, "no description")
            })?;
        let ttl_attribute = match client.describe_time_to_live().table_name(table).send().await {
            Err(e) if strict => {
                return Err(sdk_error(e, "dynamodb:DescribeTimeToLive", resource));
            }
            Ok(out) => out.time_to_live_description.and_then(|d| {
                matches!(
                    d.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
                .then(|| d.attribute_name().map(str::to_string))
                .flatten()
            }),
            Err(_) => None,
        };
        let pitr = match client.describe_continuous_backups().table_name(table).send().await {
            Err(e) if strict => {
                return Err(sdk_error(e, "dynamodb:DescribeContinuousBackups", resource));
            }
            Ok(out) => out
                .continuous_backups_description
                .and_then(|d| d.point_in_time_recovery_description)
                .and_then(|p| p.point_in_time_recovery_status)
                .is_some_and(|s| s.as_str() == "ENABLED"),
            Err(_) => false,
        };
        let mut tags = BTreeMap::new();
        if let Some(arn) = description.table_arn() {
            let mut next: Option<String> = None;
            loop {
                let out = match client
                    .list_tags_of_resource()
                    .resource_arn(arn)
                    .set_next_token(next.take())
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(e) if strict => {
                        return Err(sdk_error(e, "dynamodb:ListTagsOfResource", resource));
                    }
                    Err(_) => break,
                };
                for t in out.tags() {
                    tags.insert(t.key().to_string(), t.value().to_string());
                }
                match out.next_token {
                    Some(n) if !n.is_empty() => next = Some(n),
                    _ => break,
                }
            }
        }
        Ok(TableInfo { description, tags, ttl_attribute, pitr })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        self.description.table_name().unwrap_or_default()
    }

    /// The table's ARN.
    pub fn arn(&self) -> &str {
        self.description.table_arn().unwrap_or_default()
    }

    /// The table's id (a table deleted and re-created under the same name
    /// gets a new one).
    pub fn table_id(&self) -> &str {
        self.description.table_id().unwrap_or_default()
    }

    /// The primary key.
    pub fn key_schema(&self) -> Result<KeySchema> {
        key_schema_of(&self.description)
    }

    /// Size in bytes (DynamoDB updates it about every six hours).
    pub fn size_bytes(&self) -> u64 {
        self.description.table_size_bytes().unwrap_or(0).max(0) as u64
    }

    /// Item count (DynamoDB updates it about every six hours).
    pub fn item_count(&self) -> u64 {
        self.description.item_count().unwrap_or(0).max(0) as u64
    }

    /// Whether the table is on-demand (pay per request).
    pub fn on_demand(&self) -> bool {
        self.description
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .is_some_and(|m| *m == BillingMode::PayPerRequest)
    }

    /// Provisioned read capacity units, for a provisioned table.
    pub fn provisioned_reads(&self) -> Option<u64> {
        if self.on_demand() {
            return None;
        }
        self.description
            .provisioned_throughput()
            .and_then(|p| p.read_capacity_units())
            .filter(|r| *r > 0)
            .map(|r| r as u64)
    }

    /// The warm read throughput DynamoDB reports (read units per second).
    pub fn warm_reads(&self) -> Option<u64> {
        self.description
            .warm_throughput()
            .and_then(|w| w.read_units_per_second())
            .filter(|r| *r > 0)
            .map(|r| r as u64)
    }

    /// Names of the global secondary indexes.
    pub fn global_indexes(&self) -> Vec<String> {
        self.description
            .global_secondary_indexes()
            .iter()
            .filter_map(|g| g.index_name().map(str::to_string))
            .collect()
    }

    /// Names of the local secondary indexes.
    pub fn local_indexes(&self) -> Vec<String> {
        self.description
            .local_secondary_indexes()
            .iter()
            .filter_map(|l| l.index_name().map(str::to_string))
            .collect()
    }

    /// Whether deletion protection is on.
    pub fn deletion_protection(&self) -> bool {
        self.description.deletion_protection_enabled().unwrap_or(false)
    }

    /// The read budget in read units per second: `percent` of the
    /// provisioned read capacity, or for an on-demand table of its warm
    /// read throughput (12,000 units, DynamoDB's floor for on-demand
    /// tables, when the service does not report one).
    pub fn read_budget(&self, percent: u32) -> f64 {
        let base = self.provisioned_reads().or(self.warm_reads()).unwrap_or(12_000);
        (base as f64 * f64::from(percent) / 100.0).max(1.0)
    }

    /// A table as an export generation's `schema.json` recorded it (see
    /// [`TableInfo::schema_json`]): keys, attribute definitions, indexes,
    /// billing, TTL, point-in-time recovery and tags, enough to create a
    /// table like it ([`EscrowTable::ensure`]) when restoring a generation.
    pub fn from_schema_json(schema: &Value) -> Result<TableInfo> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingModeSummary, GlobalSecondaryIndexDescription,
            KeySchemaElement, LocalSecondaryIndexDescription, Projection, ProjectionType,
            ProvisionedThroughputDescription, ScalarAttributeType,
        };
        let name = schema["TableName"].as_str().unwrap_or_default().to_string();
        let bad = |what: &str| {
            Error::new(ErrorKind::Failed, "read schema.json", &name, format!("{what} is missing"))
        };
        let keys = |v: &Value| -> Result<Vec<KeySchemaElement>> {
            v.as_array()
                .ok_or_else(|| bad("KeySchema"))?
                .iter()
                .map(|k| {
                    KeySchemaElement::builder()
                        .attribute_name(k["AttributeName"].as_str().unwrap_or_default())
                        .key_type(KeyType::from(k["KeyType"].as_str().unwrap_or_default()))
                        .build()
                        .map_err(|e| bad(&e.to_string()))
                })
                .collect()
        };
        let projection = |v: &Value| {
            Projection::builder()
                .set_projection_type(v["ProjectionType"].as_str().map(ProjectionType::from))
                .set_non_key_attributes(
                    v["NonKeyAttributes"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()),
                )
                .build()
        };
        let mut d = TableDescription::builder()
            .table_name(&name)
            .set_table_arn(schema["TableArn"].as_str().map(str::to_string))
            .set_key_schema(Some(keys(&schema["KeySchema"])?));
        for a in
            schema["AttributeDefinitions"].as_array().ok_or_else(|| bad("AttributeDefinitions"))?
        {
            d = d.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(a["AttributeName"].as_str().unwrap_or_default())
                    .attribute_type(ScalarAttributeType::from(
                        a["AttributeType"].as_str().unwrap_or_default(),
                    ))
                    .build()
                    .map_err(|e| bad(&e.to_string()))?,
            );
        }
        for g in schema["GlobalSecondaryIndexes"].as_array().into_iter().flatten() {
            d = d.global_secondary_indexes(
                GlobalSecondaryIndexDescription::builder()
                    .set_index_name(g["IndexName"].as_str().map(str::to_string))
                    .set_key_schema(Some(keys(&g["KeySchema"])?))
                    .projection(projection(&g["Projection"]))
                    .build(),
            );
        }
        for l in schema["LocalSecondaryIndexes"].as_array().into_iter().flatten() {
            d = d.local_secondary_indexes(
                LocalSecondaryIndexDescription::builder()
                    .set_index_name(l["IndexName"].as_str().map(str::to_string))
                    .set_key_schema(Some(keys(&l["KeySchema"])?))
                    .projection(projection(&l["Projection"]))
                    .build(),
            );
        }
        if schema["BillingMode"].as_str() == Some("PAY_PER_REQUEST") {
            d = d.billing_mode_summary(
                BillingModeSummary::builder().billing_mode(BillingMode::PayPerRequest).build(),
            );
        }
        if let Some(p) = schema["ProvisionedThroughput"].as_object() {
            d = d.provisioned_throughput(
                ProvisionedThroughputDescription::builder()
                    .set_read_capacity_units(p.get("ReadCapacityUnits").and_then(Value::as_i64))
                    .set_write_capacity_units(p.get("WriteCapacityUnits").and_then(Value::as_i64))
                    .build(),
            );
        }
        let tags = schema["Tags"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let ttl = &schema["TimeToLive"];
        Ok(TableInfo {
            description: d.build(),
            tags,
            ttl_attribute: (ttl["Enabled"] == true)
                .then(|| ttl["AttributeName"].as_str().map(str::to_string))
                .flatten(),
            pitr: schema["PointInTimeRecovery"]["Enabled"] == true,
        })
    }

    /// The table's description as `schema.json` records it: DescribeTable's
    /// key schema, attribute definitions, indexes and billing, plus TTL,
    /// point-in-time recovery and tags.
    pub fn schema_json(&self) -> Value {
        let d = &self.description;
        let keys = |k: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Value {
            k.iter()
                .map(|e| json!({"AttributeName": e.attribute_name(), "KeyType": e.key_type().as_str()}))
                .collect()
        };
        let projection = |p: Option<&aws_sdk_dynamodb::types::Projection>| -> Value {
            p.map(|p| {
                json!({
                    "ProjectionType": p.projection_type().map(|t| t.as_str()),
                    "NonKeyAttributes": p.non_key_attributes(),
                })
            })
            .unwrap_or(Value::Null)
        };
        json!({
            "TableName": d.table_name(),
            "TableArn": d.table_arn(),
            "KeySchema": keys(d.key_schema()),
            "AttributeDefinitions": d.attribute_definitions().iter().map(|a| json!({
                "AttributeName": a.attribute_name(),
                "AttributeType": a.attribute_type().as_str(),
            })).collect::<Vec<_>>(),
            "GlobalSecondaryIndexes": d.global_secondary_indexes().iter().map(|g| json!({
                "IndexName": g.index_name(),
                "KeySchema": keys(g.key_schema()),
                "Projection": projection(g.projection()),
            })).collect::<Vec<_>>(),
            "LocalSecondaryIndexes": d.local_secondary_indexes().iter().map(|l| json!({
                "IndexName": l.index_name(),
                "KeySchema": keys(l.key_schema()),
                "Projection": projection(l.projection()),
            })).collect::<Vec<_>>(),
            "BillingMode": if self.on_demand() { "PAY_PER_REQUEST" } else { "PROVISIONED" },
            "ProvisionedThroughput": d.provisioned_throughput().map(|p| json!({
                "ReadCapacityUnits": p.read_capacity_units(),
                "WriteCapacityUnits": p.write_capacity_units(),
            })),
            "ItemCount": d.item_count(),
            "TableSizeBytes": d.table_size_bytes(),
            "TimeToLive": {"Enabled": self.ttl_attribute.is_some(), "AttributeName": self.ttl_attribute},
            "PointInTimeRecovery": {"Enabled": self.pitr},
            "DeletionProtectionEnabled": self.deletion_protection(),
            "Tags": self.tags,
        })
    }
}

fn key_schema_of(d: &TableDescription) -> Result<KeySchema> {
    let find = |t: KeyType| {
        d.key_schema().iter().find(|k| *k.key_type() == t).map(|k| k.attribute_name().to_string())
    };
    let hash = find(KeyType::Hash).ok_or_else(|| {
        Error::new(
            ErrorKind::Failed,
            "dynamodb:DescribeTable",
            d.table_name().unwrap_or_default(),
            "the description has no partition key",
        )
    })?;
    Ok(KeySchema::new(hash, find(KeyType::Range)))
}

/// Turns on point-in-time recovery of `table` (`resource` names it in
/// errors). A table that has just become active may answer
/// ContinuousBackupsUnavailableException for a while: that is waited out with
/// `retry`'s backoff, up to `timeout`.
pub(crate) async fn enable_pitr(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    resource: &str,
    timeout: Duration,
    retry: &escrow_sync_core::RetryPolicy,
) -> Result<()> {
    let spec = PointInTimeRecoverySpecification::builder()
        .point_in_time_recovery_enabled(true)
        .build()
        .map_err(|e| Error::new(ErrorKind::Failed, "build", resource, e.to_string()))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempt = 1;
    loop {
        let res = client
            .update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(spec.clone())
            .send()
            .await;
        match res {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_continuous_backups_unavailable_exception())
                    && tokio::time::Instant::now() < deadline =>
            {
                // The table's retry backoff, until the deadline.
                tokio::time::sleep(retry.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(sdk_error(e, "dynamodb:UpdateContinuousBackups", resource)),
        }
    }
}

/// Polls DescribeTable (from 100 ms, doubling to 5 s) until `table` is
/// active; fails after `timeout`. `resource` names it in errors.
pub(crate) async fn wait_table_active(
    client: &Client,
    table: &str,
    timeout: Duration,
    resource: &str,
) -> Result<()> {
    let polling = Polling::new("dynamodb:DescribeTable", resource)
        .with_first_pause(Duration::from_millis(100))
        .with_max_pause(Duration::from_secs(5))
        .with_timeout(timeout)
        .with_deadline_error(ErrorKind::Transient, "not active", "run again to continue");
    poll_until(&polling, || async {
        let out = client.describe_table().table_name(table).send().await;
        match out.map_err(|e| sdk_error(e, "dynamodb:DescribeTable", resource)) {
            Ok(o) => match o.table().and_then(|t| t.table_status()) {
                Some(TableStatus::Active) => Ok(Polled::Done(())),
                status => Ok(Polled::Pending(status.map_or("unknown", |s| s.as_str()).into())),
            },
            // Just created: DescribeTable may not see it yet.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Polled::Pending("not found".into())),
            Err(e) => Err(e),
        }
    })
    .await
}

/// The key attributes with their types, e.g. `pk (S, HASH), sk (N, RANGE)`.
fn key_signature(d: &TableDescription) -> String {
    d.key_schema()
        .iter()
        .map(|k| {
            let ty = d
                .attribute_definitions()
                .iter()
                .find(|a| a.attribute_name() == k.attribute_name())
                .map(|a| a.attribute_type().as_str().to_string())
                .unwrap_or_else(|| "?".into());
            format!("{} ({ty}, {})", k.attribute_name(), k.key_type().as_str())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the escrow table is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EscrowBilling {
    /// On-demand (the default).
    #[default]
    OnDemand,
    /// Provisioned with the source's read and write capacity.
    LikeSource,
}

/// What [`EscrowTable::ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ensured {
    /// The table was created by this call.
    pub created: bool,
    /// Settings turned on on an existing table (point-in-time recovery,
    /// deletion protection).
    pub fixed: Vec<String>,
    /// The item count DescribeTable reported for the existing escrow table
    /// (DynamoDB updates it about every six hours; 0 for a created table).
    /// Escrow's own statistic: the primary cannot raise it.
    pub item_count: u64,
}

/// The outcome of writing a batch of items.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    /// Items written.
    pub written: u64,
    /// Bytes written (their DynamoDB JSON).
    pub bytes: u64,
    /// Items that still failed after the retry budget, with the reason.
    pub dead: Vec<(Record, Error)>,
    /// Throttling responses and unprocessed-item rounds seen.
    pub throttled: u64,
}

/// The escrow copy of one table.
#[derive(Debug, Clone)]
pub struct EscrowTable {
    client: Client,
    table: String,
    kms_key_id: Option<String>,
    billing: EscrowBilling,
    retry: RetryPolicy,
    wait_timeout: Duration,
    write_concurrency: usize,
}

impl EscrowTable {
    /// The escrow table `table`, reached with `client` (escrow credentials).
    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        EscrowTable {
            client,
            table: table.into(),
            kms_key_id: None,
            billing: EscrowBilling::OnDemand,
            retry: RetryPolicy { max_attempts: 8, ..RetryPolicy::default() },
            wait_timeout: Duration::from_secs(600),
            write_concurrency: 4,
        }
    }

    /// Encrypts a created table with this escrow KMS key.
    pub fn with_kms_key_id(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }

    /// How a created table is billed.
    pub fn with_billing(mut self, billing: EscrowBilling) -> Self {
        self.billing = billing;
        self
    }

    /// Retries of one batch (throttling, transient errors, unprocessed
    /// items). Default: 8 attempts, full jitter from 200 ms up to 20 s.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long to wait for a created table to become active.
    pub fn with_wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// BatchWriteItem requests in flight at once for one page of items.
    pub fn with_write_concurrency(mut self, n: usize) -> Self {
        self.write_concurrency = n.max(1);
        self
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.table
    }

    fn resource(&self) -> String {
        format!("escrow dynamodb table {}", self.table)
    }

    /// The escrow table's description, or `None` when it does not exist.
    pub async fn describe(&self) -> Result<Option<TableInfo>> {
        match TableInfo::describe_strict(&self.client, &self.table).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks an existing escrow table against `source` before anything is
    /// written: the same key schema, and no TTL. Errors are invalid-input
    /// errors that say what to change.
    pub async fn check(&self, source: &TableInfo) -> Result<Option<TableInfo>> {
        let Some(existing) = self.describe().await? else { return Ok(None) };
        let (want, have) =
            (key_signature(&source.description), key_signature(&existing.description));
        if want != have {
            return Err(Error::invalid_config(format!(
                "escrow dynamodb table {} has key schema [{have}] but source table {} has \
                 [{want}]: set dest_table to a new table name (escrow-sync creates it) or to a \
                 table with the same key schema",
                self.table,
                source.name()
            )));
        }
        match existing.tags.get(tags::SOURCE_TABLE_ARN) {
            Some(recorded) if recorded == source.arn() => {}
            Some(recorded) => {
                return Err(Error::invalid_config(format!(
                    "escrow dynamodb table {} holds the escrow of {recorded} (its {tag} \
                     tag), not of {}: give this job its own dest_table",
                    self.table,
                    source.arn(),
                    tag = tags::SOURCE_TABLE_ARN
                )));
            }
            None => {
                return Err(Error::invalid_config(format!(
                    "escrow dynamodb table {} exists but escrow-sync did not create it for {} (it \
                     has no {tag} tag), and writing would overwrite its items: set \
                     dest_table to a new name, or adopt the table by tagging it {tag}={}",
                    self.table,
                    source.name(),
                    source.arn(),
                    tag = tags::SOURCE_TABLE_ARN
                )));
            }
        }
        if let Some(attr) = &existing.ttl_attribute {
            return Err(Error::invalid_config(format!(
                "escrow dynamodb table {} has TTL enabled on attribute {attr:?}: TTL would expire \
                 escrow data; disable it (aws dynamodb update-time-to-live --table-name {} \
                 --time-to-live-specification Enabled=false,AttributeName={attr})",
                self.table, self.table
            )));
        }
        Ok(Some(existing))
    }

    /// Creates the escrow table as a clone of `source` if it is missing,
    /// waits for it to be active, and turns on point-in-time recovery and
    /// deletion protection where they are off. Never enables TTL.
    pub async fn ensure(
        &self,
        source: &TableInfo,
        source_account: &str,
        now: &str,
    ) -> Result<Ensured> {
        let mut ensured = Ensured::default();
        let existing = self.check(source).await?;
        let existing = match existing {
            Some(t) => {
                ensured.item_count = t.item_count();
                t
            }
            None => {
                self.create(source, source_account, now).await?;
                ensured.created = true;
                self.wait_active().await?
            }
        };
        if !existing.pitr {
            self.enable_pitr().await?;
            if !ensured.created {
                ensured.fixed.push("point-in-time recovery".into());
            }
        }
        if !existing.deletion_protection() {
            self.client
                .update_table()
                .table_name(&self.table)
                .deletion_protection_enabled(true)
                .send()
                .await
                .map_err(|e| sdk_error(e, "dynamodb:UpdateTable", self.resource()))?;
            if !ensured.created {
                ensured.fixed.push("deletion protection".into());
            }
        }
        Ok(ensured)
    }

    /// Turns on point-in-time recovery. A table that has just become
    /// active may answer ContinuousBackupsUnavailableException for a while:
    /// that is waited out (up to the wait timeout).
    async fn enable_pitr(&self) -> Result<()> {
        enable_pitr(&self.client, &self.table, &self.resource(), self.wait_timeout, &self.retry)
            .await
    }

    async fn create(&self, source: &TableInfo, source_account: &str, now: &str) -> Result<()> {
        let d = &source.description;
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            Error::new(ErrorKind::Failed, "dynamodb:CreateTable", self.resource(), e.to_string())
        };
        let provisioned = self.billing == EscrowBilling::LikeSource && !source.on_demand();
        let throughput = |p: Option<&aws_sdk_dynamodb::types::ProvisionedThroughputDescription>| {
            let p = p?;
            ProvisionedThroughput::builder()
                .read_capacity_units(p.read_capacity_units().unwrap_or(1).max(1))
                .write_capacity_units(p.write_capacity_units().unwrap_or(1).max(1))
                .build()
                .ok()
        };
        let mut req = self
            .client
            .create_table()
            .table_name(&self.table)
            .set_key_schema(Some(d.key_schema().to_vec()))
            .set_attribute_definitions(Some(d.attribute_definitions().to_vec()))
            .deletion_protection_enabled(true);
        req = if provisioned {
            req.billing_mode(BillingMode::Provisioned)
                .set_provisioned_throughput(throughput(d.provisioned_throughput()))
        } else {
            req.billing_mode(BillingMode::PayPerRequest)
        };
        for g in d.global_secondary_indexes() {
            let mut b = GlobalSecondaryIndex::builder()
                .set_index_name(g.index_name().map(str::to_string))
                .set_key_schema(Some(g.key_schema().to_vec()))
                .set_projection(g.projection().cloned());
            if provisioned {
                b = b.set_provisioned_throughput(
                    throughput(g.provisioned_throughput())
                        .or_else(|| throughput(d.provisioned_throughput())),
                );
            }
            req = req.global_secondary_indexes(b.build().map_err(build)?);
        }
        for l in d.local_secondary_indexes() {
            req = req.local_secondary_indexes(
                LocalSecondaryIndex::builder()
                    .set_index_name(l.index_name().map(str::to_string))
                    .set_key_schema(Some(l.key_schema().to_vec()))
                    .set_projection(l.projection().cloned())
                    .build()
                    .map_err(build)?,
            );
        }
        if let Some(key) = &self.kms_key_id {
            req = req.sse_specification(
                SseSpecification::builder()
                    .enabled(true)
                    .sse_type(SseType::Kms)
                    .kms_master_key_id(key)
                    .build(),
            );
        }
        for (k, v) in provenance_tags(source, source_account, now) {
            req = req.tags(Tag::builder().key(k).value(v).build().map_err(build)?);
        }
        req.send().await.map_err(|e| sdk_error(e, "dynamodb:CreateTable", self.resource()))?;
        Ok(())
    }

    async fn wait_active(&self) -> Result<TableInfo> {
        wait_table_active(&self.client, &self.table, self.wait_timeout, &self.resource()).await?;
        self.describe().await?.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "dynamodb:DescribeTable", self.resource(), "")
        })
    }

    /// The digests of the items escrow holds for `keys` (key text → content
    /// digest), read with BatchGetItem, consistent reads. Keys still
    /// unprocessed after the retry budget are left out, so the caller
    /// writes them again (a write of an equal item is harmless).
    pub async fn lookup(
        &self,
        keys: &[(String, Record)],
        schema: &KeySchema,
    ) -> Result<HashMap<String, [u8; 32]>> {
        let records = self.lookup_records(keys, schema).await?;
        Ok(records.into_iter().map(|(k, r)| (k, content_digest(&r))).collect())
    }

    /// The items escrow holds for `keys` (key text → item), as
    /// [`EscrowTable::lookup`] reads them: what a write would replace.
    pub async fn lookup_records(
        &self,
        keys: &[(String, Record)],
        schema: &KeySchema,
    ) -> Result<HashMap<String, Record>> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(READ_BATCH) {
            let mut pending: Vec<Record> = chunk.iter().map(|(_, k)| k.clone()).collect();
            let mut attempt = 1;
            while !pending.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| {
                        Error::new(ErrorKind::Failed, "build", self.resource(), e.to_string())
                    })?;
                let res = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request.clone())
                    .customize()
                    .config_override(no_retries())
                    .send()
                    .await;
                match res {
                    Ok(out) => {
                        if let Some(items) = out.responses.and_then(|mut r| r.remove(&self.table)) {
                            for item in items {
                                found.insert(schema.key_text(&item)?, item);
                            }
                        }
                        pending = out
                            .unprocessed_keys
                            .and_then(|mut u| u.remove(&self.table))
                            .map(|k| k.keys)
                            .unwrap_or_default();
                    }
                    Err(e) => {
                        let e = sdk_error(e, "dynamodb:BatchGetItem", self.resource());
                        if !e.is_retryable() {
                            return Err(e);
                        }
                        pending = request.keys;
                    }
                }
                if pending.is_empty() || attempt >= self.retry.max_attempts {
                    break;
                }
                tokio::time::sleep(self.retry.delay(attempt)).await;
                attempt += 1;
            }
        }
        Ok(found)
    }

    /// Writes `records` with BatchWriteItem: batches of at most 25 with no
    /// key twice in one batch, several batches in flight, unprocessed
    /// items re-sent with exponential backoff and full jitter. Items still
    /// failing after the retry budget come back in
    /// [`WriteOutcome::dead`]; access denied or a missing table fails the
    /// whole call.
    pub async fn write(&self, records: Vec<Record>, schema: &KeySchema) -> Result<WriteOutcome> {
        let batches = batches(records, schema)?;
        let results: Vec<Result<WriteOutcome>> = futures::stream::iter(batches)
            .map(|b| self.write_batch(b))
            .buffer_unordered(self.write_concurrency)
            .collect()
            .await;
        let mut total = WriteOutcome::default();
        for r in results {
            let r = r?;
            total.written += r.written;
            total.bytes += r.bytes;
            total.throttled += r.throttled;
            total.dead.extend(r.dead);
        }
        Ok(total)
    }

    async fn write_batch(&self, batch: Vec<Record>) -> Result<WriteOutcome> {
        let mut out = WriteOutcome::default();
        let size = |r: &Record| to_line(r).len() as u64;
        let mut pending = batch;
        let mut attempt = 1;
        loop {
            let requests: Vec<WriteRequest> = pending
                .iter()
                .map(|r| {
                    PutRequest::builder()
                        .set_item(Some(r.clone()))
                        .build()
                        .map(|p| WriteRequest::builder().put_request(p).build())
                })
                .collect::<std::result::Result<_, aws_sdk_dynamodb::error::BuildError>>()
                .map_err(|e| {
                    Error::new(ErrorKind::Failed, "build", self.resource(), e.to_string())
                })?;
            let res = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .customize()
                .config_override(no_retries())
                .send()
                .await;
            let failure = match res {
                Ok(o) => {
                    let unprocessed: Vec<Record> = o
                        .unprocessed_items
                        .and_then(|mut u| u.remove(&self.table))
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|w| w.put_request.map(|p| p.item))
                        .collect();
                    for r in &pending {
                        if !unprocessed.contains(r) {
                            out.written += 1;
                            out.bytes += size(r);
                        }
                    }
                    if unprocessed.is_empty() {
                        return Ok(out);
                    }
                    out.throttled += 1;
                    pending = unprocessed;
                    Error::new(
                        ErrorKind::Throttled,
                        "dynamodb:BatchWriteItem",
                        self.resource(),
                        format!("item still unprocessed after {attempt} attempts"),
                    )
                }
                Err(e) => {
                    let e = sdk_error(e, "dynamodb:BatchWriteItem", self.resource());
                    match e.kind() {
                        ErrorKind::AccessDenied | ErrorKind::NotFound => return Err(e),
                        _ if e.is_retryable() => {
                            if e.is_throttle() {
                                out.throttled += 1;
                            }
                            e
                        }
                        // A request the service refuses as such (a validation
                        // error): find the item at fault by writing one at a time.
                        _ => return self.write_singly(pending, out).await,
                    }
                }
            };
            if attempt >= self.retry.max_attempts {
                let message = failure.chain();
                out.dead.extend(pending.into_iter().map(|r| {
                    let e = Error::new(
                        failure.kind(),
                        "dynamodb:BatchWriteItem",
                        self.resource(),
                        message.clone(),
                    );
                    (r, e)
                }));
                return Ok(out);
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// Deletes the items of `keys` (each the key attributes only), one
    /// DeleteItem each, several in flight: what `restore` does with the
    /// deletions of an incremental export generation. Returns how many.
    pub async fn delete_keys(&self, keys: Vec<Record>) -> Result<u64> {
        let results: Vec<Result<()>> = futures::stream::iter(keys)
            .map(|key| async move {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| sdk_error(e, "dynamodb:DeleteItem", self.resource()))
            })
            .buffer_unordered(self.write_concurrency)
            .collect()
            .await;
        let mut n = 0;
        for r in results {
            r?;
            n += 1;
        }
        Ok(n)
    }

    /// Writes `items` one PutItem at a time, to find the items a batch
    /// error is about. An error every item meets alike (the first three
    /// fail the same way, none succeeds: a disabled key, a schema problem)
    /// is the table's, not the items': it fails the write instead of
    /// filling the dead-letter file.
    async fn write_singly(
        &self,
        items: Vec<Record>,
        mut out: WriteOutcome,
    ) -> Result<WriteOutcome> {
        let total = items.len();
        let mut succeeded = 0u64;
        let mut alike: Vec<String> = Vec::new();
        for item in items {
            let mut attempt = 1;
            loop {
                let res = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item.clone()))
                    .customize()
                    .config_override(no_retries())
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "dynamodb:PutItem", self.resource()));
                match res {
                    Ok(_) => {
                        succeeded += 1;
                        out.written += 1;
                        out.bytes += to_line(&item).len() as u64;
                        break;
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::AccessDenied | ErrorKind::NotFound) => {
                        return Err(e);
                    }
                    Err(e) if e.is_retryable() && attempt < self.retry.max_attempts => {
                        tokio::time::sleep(self.retry.delay(attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        alike.push(e.to_string());
                        if succeeded == 0
                            && alike.len() >= 3
                            && alike.iter().all(|m| *m == alike[0])
                        {
                            return Err(e);
                        }
                        out.dead.push((item, e));
                        break;
                    }
                }
            }
        }
        // Every item of the batch (two or more) failed the same way: that is
        // the table's problem too.
        if succeeded == 0
            && total >= 2
            && alike.len() == total
            && alike.iter().all(|m| *m == alike[0])
            && let Some((_, e)) = out.dead.pop()
        {
            return Err(e);
        }
        Ok(out)
    }

    /// Tags the table with the start of a run that wrote items
    /// ([`escrow_sync_core::tags::LAST_RUN_AT`]); a run that wrote nothing does not call this, so
    /// an unchanged source costs no mutating call.
    pub async fn record_run(&self, started: &str) -> Result<()> {
        let arn = self.describe().await?.map(|t| t.arn().to_string()).ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "dynamodb:DescribeTable", self.resource(), "")
        })?;
        let tag = Tag::builder().key(tags::LAST_RUN_AT).value(started).build().map_err(|e| {
            Error::new(ErrorKind::Failed, "dynamodb:TagResource", self.resource(), e.to_string())
        })?;
        self.client
            .tag_resource()
            .resource_arn(arn)
            .tags(tag)
            .send()
            .await
            .map_err(|e| sdk_error(e, "dynamodb:TagResource", self.resource()))?;
        Ok(())
    }

    /// Deletes this table, turning its deletion protection off first: for a
    /// restore drill's own table in a recovery account, never an escrow
    /// table.
    pub async fn delete_restored(&self) -> Result<()> {
        self.client
            .update_table()
            .table_name(&self.table)
            .deletion_protection_enabled(false)
            .send()
            .await
            .map_err(|e| sdk_error(e, "dynamodb:UpdateTable", self.resource()))?;
        self.client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| sdk_error(e, "dynamodb:DeleteTable", self.resource()))?;
        Ok(())
    }

    /// Counts the items escrow holds (a Scan with `Select=COUNT`, which
    /// reads only escrow's capacity).
    pub async fn count(&self) -> Result<u64> {
        let mut total = 0u64;
        let mut start: Option<Record> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(e, "dynamodb:Scan", self.resource()))?;
            total += out.count.max(0) as u64;
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(total),
            }
        }
    }
}

/// Splits `records` into BatchWriteItem batches: at most 25 items, and no
/// key twice in one batch (a repeated key starts a new batch, so the later
/// version is written later and wins).
pub fn batches(records: Vec<Record>, schema: &KeySchema) -> Result<Vec<Vec<Record>>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for r in records {
        let key = schema.key_text(&r)?;
        if current.len() == WRITE_BATCH || keys.contains(&key) {
            out.push(std::mem::take(&mut current));
            keys.clear();
        }
        keys.insert(key);
        current.push(r);
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// The escrow table's tags: the source's own (those AWS reserves left out)
/// and the provenance tags.
pub fn provenance_tags(
    source: &TableInfo,
    source_account: &str,
    now: &str,
) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = source
        .tags
        .iter()
        .filter(|(k, _)| !k.starts_with("aws:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.insert(tags::SOURCE_TABLE_ARN.into(), source.arn().to_string());
    tags.insert(tags::SOURCE_ACCOUNT.into(), source_account.to_string());
    tags.insert(tags::CREATED_AT.into(), now.to_string());
    if let Some(ttl) = &source.ttl_attribute {
        tags.insert(tags::SOURCE_TTL_ATTRIBUTE.into(), ttl.clone());
    }
    tags
}
