//! DynamoDB for escrow-sync. So far: the item format (DynamoDB JSON lines as
//! DynamoDB ImportTable reads them, exact for every attribute type), the
//! read budget, and the segmented parallel scan with per-segment
//! checkpoints. The table sink and export generations build on them.
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
pub mod json;
pub mod scan;
