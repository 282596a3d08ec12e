//! DynamoDB for escrow-sync: the item format (DynamoDB JSON lines as
//! DynamoDB ImportTable reads them, exact for every attribute type), the
//! read budget, the segmented parallel scan with per-segment checkpoints
//! kept in escrow, the escrow table (a clone of the source's schema with
//! point-in-time recovery and deletion protection, never TTL) written with
//! BatchWriteItem, and the [`TableJob`] that ties them together.
//!
//! ```
//! use std::collections::HashMap;
//! use aws_sdk_dynamodb::types::AttributeValue;
//! use escrow_sync_dynamodb::json::{from_line, to_line};
//!
//! let mut item = HashMap::new();
//! item.insert("pk".to_string(), AttributeValue::S("order#1".into()));
//! item.insert("amount".to_string(), AttributeValue::N("19.990".into()));
//! let line = to_line(&item);
//! assert_eq!(line, r#"{"Item":{"amount":{"N":"19.990"},"pk":{"S":"order#1"}}}"#);
//! assert_eq!(from_line(&line).unwrap(), item);
//! ```
#![deny(missing_docs)]

pub mod budget;
pub mod checkpoint;
mod compare;
pub mod export;
pub mod history;
pub mod incremental;
pub mod job;
pub mod json;
pub mod keys;
pub mod pair;
pub mod scan;
#[cfg(feature = "strategies")]
pub mod strategies;
pub mod table;

pub use checkpoint::CheckpointStore;
pub use export::{ExportJob, ExportTarget};
pub use job::TableJob;
pub use keys::KeySchema;
pub use pair::{DynamoDbSink, DynamoDbSource};
pub use scan::{ScanOptions, TableScanner};
pub use table::{EscrowBilling, EscrowTable, TableInfo};

/// A DynamoDB client for `session`.
pub fn client(session: &escrow_sync_aws::Session) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(session.sdk_config())
}
