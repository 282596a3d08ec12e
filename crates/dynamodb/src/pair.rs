//! DynamoDB as a core [`Source`] / [`Sink`] pair, item by item, for the
//! generic [`escrow_sync_core::Executor`] and the conformance suite.
//!
//! An item's key is its [`KeySchema::key_text`]; its fingerprint the hex
//! SHA-256 of its content ([`content_digest`]); its size the length of its
//! DynamoDB JSON line. The payload is that line.
//!
//! Listing scans the whole table and reading fetches each item again
//! (GetItem): a first copy through this pair reads the primary twice.
//! [`crate::TableJob`] streams pages instead and reads it once; the binary
//! uses that. This pair is for embedders who drive the core executor.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Receipt, Result, Scope, Sink, Source,
};

use crate::json::{Record, from_line, to_line};
use crate::keys::{KeySchema, content_digest};
use crate::scan::{ScanOptions, TableScanner};
use crate::table::EscrowTable;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The listing item for `record`.
pub fn item_of(keys: &KeySchema, record: &Record) -> Result<Item> {
    Ok(Item::new(
        keys.key_text(record)?,
        ItemKind::Record,
        to_line(record).len() as u64,
        hex(&content_digest(record)),
    ))
}

/// Lists a table's items, whole-table scan, filtered by key prefix.
fn list_table<'a>(scanner: &'a TableScanner, keys: &'a KeySchema, scope: &Scope) -> ItemStream<'a> {
    let prefix = scope.prefix.clone();
    scanner
        .pages(&[])
        .map_ok(move |page| {
            let items: Vec<Result<Item>> = page.items.iter().map(|r| item_of(keys, r)).collect();
            futures::stream::iter(items)
        })
        .try_flatten()
        .try_filter(move |item| futures::future::ready(item.key.starts_with(&prefix)))
        .boxed()
}

/// A table of the primary as a core [`Source`].
pub struct DynamoDbSource {
    client: Client,
    table: String,
    keys: KeySchema,
    scanner: TableScanner,
}

impl DynamoDbSource {
    /// `table` (keyed by `keys`), read with `client` (the reader role),
    /// scanned with `options` under `read_units` per second.
    pub fn from_client(
        client: Client,
        table: impl Into<String>,
        keys: KeySchema,
        options: ScanOptions,
        read_units: f64,
    ) -> Self {
        let table = table.into();
        let scanner =
            TableScanner::from_client(client.clone(), &table, read_units).with_options(options);
        DynamoDbSource { client, table, keys, scanner }
    }
}

#[async_trait]
impl Source for DynamoDbSource {
    fn describe(&self) -> String {
        format!("dynamodb://{}", self.table)
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        list_table(&self.scanner, &self.keys, scope)
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        let resource = format!("dynamodb table {} item {}", self.table, item.key);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.keys.parse_key(&item.key)?))
            // Strongly consistent: an eventually consistent read may return
            // an older version than the listing saw.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error(e, "dynamodb:GetItem", resource.clone()))?;
        let record = out.item.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                "dynamodb:GetItem",
                &resource,
                "deleted after it was listed",
            )
        })?;
        if hex(&content_digest(&record)) != item.fingerprint {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "dynamodb:GetItem",
                &resource,
                "changed after it was listed; the next run copies it",
            ));
        }
        Ok(Payload::from_bytes(Bytes::from(to_line(&record)), BTreeMap::new()))
    }
}

/// An escrow table as a core [`Sink`]; the table must exist (see
/// [`EscrowTable::ensure`]).
pub struct DynamoDbSink {
    table: EscrowTable,
    keys: KeySchema,
    scanner: TableScanner,
}

impl DynamoDbSink {
    /// Writes into `table`, listed with `client` (escrow credentials).
    pub fn new(client: Client, table: EscrowTable, keys: KeySchema) -> Self {
        // Listing escrow costs escrow's capacity only: no budget to keep.
        let scanner = TableScanner::from_client(client, table.name(), 1e12)
            .with_options(ScanOptions::new().with_segments(4));
        DynamoDbSink { table, keys, scanner }
    }
}

#[async_trait]
impl Sink for DynamoDbSink {
    fn describe(&self) -> String {
        format!("dynamodb://{}", self.table.name())
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        list_table(&self.scanner, &self.keys, scope)
    }

    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        let (data, _) = payload.collect().await?;
        let text = std::str::from_utf8(&data).map_err(|e| {
            Error::new(ErrorKind::Failed, "dynamodb:PutItem", &item.key, e.to_string())
        })?;
        let record = from_line(text.trim_end())?;
        if self.keys.key_text(&record)? != item.key {
            return Err(Error::new(
                ErrorKind::Failed,
                "dynamodb:PutItem",
                &item.key,
                "the payload is another item",
            ));
        }
        let mut out = self.table.write(vec![record], &self.keys).await?;
        if let Some((_, e)) = out.dead.pop() {
            return Err(e);
        }
        Ok(Receipt::new(out.bytes, Some(item.fingerprint.clone())))
    }
}
