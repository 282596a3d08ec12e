//! Governance for escrow-sync: what makes an escrow an escrow, checked and
//! proven.
//!
//! - [`inventory`]: the resources and accounts a config names, the input of
//!   everything else here (the `escrow-sync` facade builds it from a config).
//! - [`policy`]: least-privilege IAM policies for both accounts, derived
//!   from the inventory, as JSON documents or CloudFormation templates.
//! - [`audit`]: an isolation audit of the escrow account: findings with a
//!   severity, the resource and the fix.
//!
//! ```
//! use escrow_sync_governance::inventory::{Inventory, S3Grant};
//! use escrow_sync_governance::policy;
//!
//! // What a config names, as governance sees it: one bucket escrowed.
//! let inventory = Inventory {
//!     region: "eu-west-1".into(),
//!     escrow_account: "222222222222".into(),
//!     primary_account: "111111111111".into(),
//!     s3: vec![S3Grant {
//!         name: "assets".into(),
//!         source_bucket: "prod-assets".into(),
//!         dest_bucket: "escrow-prod-assets".into(),
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! };
//! policy::check(&inventory).unwrap();
//! // The primary's reader role may read the bucket, and never delete.
//! let reader = policy::generate(&inventory).primary.reader_role.permission_policy.to_string();
//! assert!(reader.contains("arn:aws:s3:::prod-assets/*") && !reader.contains("Delete"));
//! ```
#![deny(missing_docs)]

pub mod audit;
pub mod inventory;
pub mod policy;

pub use inventory::Inventory;
