//! Governance for escrow-sync: what makes an escrow an escrow, checked and
//! proven.
//!
//! - [`inventory`]: the resources and accounts a config names, the input of
//!   everything else here (the CLI builds it from its config file).
//! - [`policy`]: least-privilege IAM policies for both accounts, derived
//!   from the inventory, as JSON documents or CloudFormation templates.
//! - [`audit`]: an isolation audit of the escrow account: findings with a
//!   severity, the resource and the fix.
#![deny(missing_docs)]

pub mod audit;
pub mod inventory;
pub mod policy;

pub use inventory::Inventory;
