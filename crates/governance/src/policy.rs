//! Least-privilege IAM policies for both accounts (issue 6, item 1),
//! derived from an [`Inventory`].
//!
//! - [`generate`]: every document as JSON ([`Policies`]): the primary's
//!   reader role (trust and permissions), the statements each primary bucket
//!   policy and each primary customer key policy needs, the escrow
//!   operator's permissions, the escrow key policy and the escrow bucket
//!   settings.
//! - [`cloudformation`]: the same as two CloudFormation templates, one per
//!   account (deploy the escrow one first: the primary's trust policy and
//!   bucket policies name the escrow operator role).
//! - [`check`]: refuses an inventory no escrow can be built from (the same
//!   account on both sides, roles or keys in the wrong account).
//!
//! The reader role reads and shares; it deletes nothing, and its resources
//! are the configured buckets, prefixes, tables and snapshot selections
//! wherever AWS can scope an action to them. The external id is never
//! printed: the trust policy carries [`EXTERNAL_ID_PLACEHOLDER`] (the
//! templates take it as a `NoEcho` parameter).
//!
//! ```
//! use escrow_sync_governance::inventory::{Inventory, S3Grant};
//! use escrow_sync_governance::policy;
//! let inv = Inventory {
//!     region: "us-east-1".into(),
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
//! policy::check(&inv).unwrap();
//! let p = policy::generate(&inv);
//! let reader = p.primary.reader_role.permission_policy.to_string();
//! assert!(reader.contains("arn:aws:s3:::prod-assets/*"));
//! assert!(!reader.contains("Delete"));
//! let (primary, escrow) = policy::cloudformation(&inv);
//! assert!(primary["Resources"]["ReaderRole"].is_object());
//! assert!(escrow["Resources"]["OperatorRole"].is_object());
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value, json};

use escrow_sync_core::layout::RETENTION_DIR;
use escrow_sync_core::{Error, Result, tags};

use crate::inventory::{Ec2Grant, Inventory, RdsGrant, RedshiftGrant};

/// Stands for the external id in the reader role's trust policy: the id is
/// a secret of the config and is never printed. Replace it when creating
/// the role (the CloudFormation template takes it as a `NoEcho` parameter).
pub const EXTERNAL_ID_PLACEHOLDER: &str = "<[primary] external_id>";

/// The reader role's name when the config names no `role_arn`.
pub const DEFAULT_READER_ROLE: &str = "escrow-reader";

/// The operator role's name when the config names no escrow `role_arn`.
pub const DEFAULT_OPERATOR_ROLE: &str = "escrow-operator";

/// The IAM policy language version every document uses.
pub const POLICY_VERSION: &str = "2012-10-17";

/// Every policy both accounts need, as JSON documents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policies {
    /// What the primary account grants the escrow.
    pub primary: PrimaryPolicies,
    /// What the escrow account sets up for itself.
    pub escrow: EscrowPolicies,
    /// What the documents cannot say (grants to add by hand, trade-offs).
    pub notes: Vec<String>,
}

/// The primary account's side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrimaryPolicies {
    /// The reader role escrow-sync assumes.
    pub reader_role: Role,
    /// Per source bucket (of server-side copies), the statements its bucket
    /// policy needs (an array of statements to add to the bucket's policy).
    pub bucket_policies: BTreeMap<String, Value>,
    /// Per customer-managed key of the primary (re-encryption keys), the
    /// statements its key policy needs.
    pub kms_key_policies: BTreeMap<String, Value>,
}

/// An IAM role: its name, trust policy and (inline) permission policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// Who may assume it.
    pub trust_policy: Value,
    /// What it may do.
    pub permission_policy: Value,
}

/// The escrow account's side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EscrowPolicies {
    /// The identity escrow-sync runs as (the config's escrow `role_arn`, or
    /// the escrow account's root as a stand-in for whichever identity runs
    /// it).
    pub operator: String,
    /// The operator's permission policy.
    pub operator_policy: Value,
    /// What `escrow-sync audit` reads, for the identity that runs it (the
    /// operator role, to which the escrow template attaches it): read-only
    /// configuration of the escrow's roles, buckets, tables, key, trails and
    /// snapshot shares; no data.
    pub audit_policy: Value,
    /// The escrow KMS key's policy (escrow principals only), when the config
    /// names an escrow key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_policy: Option<Value>,
    /// Per escrow bucket, the settings it must have.
    pub buckets: BTreeMap<String, Value>,
    /// The role S3 Batch Operations copies as (`[[s3]] engine =
    /// "batch-operations"`): trusted by `batchoperations.s3.amazonaws.com`
    /// for this account only; reads the jobs' source prefixes and the
    /// manifests, writes the escrow prefixes and the completion reports,
    /// deletes nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_role: Option<Role>,
}

/// Refuses an inventory no escrow policy can be written for: account ids
/// that are not 12 digits, the same account on both sides, a reader role
/// outside the primary, an operator role or escrow key outside the escrow,
/// a re-encryption key outside the primary.
pub fn check(inv: &Inventory) -> Result<()> {
    for (what, id) in [
        ("[escrow] account_id", &inv.escrow_account),
        ("[primary] account_id", &inv.primary_account),
    ] {
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid_config(format!(
                "{what} {id:?} is not an AWS account id: set it to the account's 12 digits"
            )));
        }
    }
    if inv.escrow_account == inv.primary_account {
        return Err(Error::invalid_config(format!(
            "escrow and primary are the same account {}: an escrow must live in another \
             account, so set [escrow] account_id to the escrow account",
            inv.escrow_account
        )));
    }
    let in_account = |arn: &str, account: &str| arn.split(':').nth(4) == Some(account);
    if let Some(arn) = &inv.reader_role_arn
        && !in_account(arn, &inv.primary_account)
    {
        return Err(Error::invalid_config(format!(
            "[primary] role_arn {arn} is not in the primary account {}: the reader role lives \
             in the primary",
            inv.primary_account
        )));
    }
    if let Some(arn) = &inv.operator_role_arn
        && !in_account(arn, &inv.escrow_account)
    {
        return Err(Error::invalid_config(format!(
            "[escrow] role_arn {arn} is not in the escrow account {}: nothing in the escrow may \
             depend on another account, so use a role of the escrow account",
            inv.escrow_account
        )));
    }
    if let Some(key) = &inv.escrow_kms_key
        && key.starts_with("arn:")
        && !in_account(key, &inv.escrow_account)
    {
        return Err(Error::invalid_config(format!(
            "[escrow] kms_key_id {key} is not in the escrow account {}: escrow copies are \
             encrypted with a key the escrow owns",
            inv.escrow_account
        )));
    }
    let reencrypt = inv
        .ec2
        .iter()
        .filter_map(|j| j.reencrypt_key.as_ref().map(|k| (&j.name, k)))
        .chain(inv.rds.iter().filter_map(|j| j.reencrypt_key.as_ref().map(|k| (&j.name, k))));
    for (job, key) in reencrypt {
        if key.starts_with("arn:") && !in_account(key, &inv.primary_account) {
            return Err(Error::invalid_config(format!(
                "job {job}: reencrypt_key_id {key} is not in the primary account {}: use a \
                 customer key of the primary",
                inv.primary_account
            )));
        }
    }
    Ok(())
}

/// Where jobs without a manifest bucket keep their leases in their own
/// escrow bucket (the same as `escrow_sync_s3::BUCKET_LEASE_PREFIX`).
pub const LEASE_PREFIX: &str = escrow_sync_core::layout::LEASE_PREFIX;

/// Every policy the inventory needs, as JSON documents.
pub fn generate(inv: &Inventory) -> Policies {
    let ctx = Ctx::new(inv);
    let mut notes = Vec::new();
    let reader = Role {
        name: ctx.reader_name.clone(),
        arn: ctx.reader_arn.clone(),
        trust_policy: document(ctx.reader_trust(&json!(EXTERNAL_ID_PLACEHOLDER))),
        permission_policy: document(ctx.reader_statements(&mut notes)),
    };
    let escrow = EscrowPolicies {
        operator: ctx.operator.clone(),
        operator_policy: document(ctx.operator_statements()),
        audit_policy: document(ctx.audit_statements()),
        kms_key_policy: ctx.escrow_key.as_ref().map(|_| document(ctx.escrow_key_statements())),
        buckets: ctx.escrow_buckets(),
        batch_role: ctx.batch_role(),
    };
    notes.extend(ctx.notes());
    Policies {
        primary: PrimaryPolicies {
            reader_role: reader,
            bucket_policies: ctx.bucket_policies(),
            kms_key_policies: ctx.primary_key_policies(),
        },
        escrow,
        notes,
    }
}

/// The two CloudFormation templates `(primary, escrow)` that create what
/// [`generate`] describes: in the escrow, the operator role, the escrow
/// buckets (retained when the stack is deleted) and, for a key configured
/// by alias, the escrow key; in the primary, the reader role (external id as
/// a `NoEcho` parameter) and the source bucket policies. A primary key's
/// policy cannot be set on an existing key by CloudFormation: its
/// statements are in the primary template's `Metadata`.
pub fn cloudformation(inv: &Inventory) -> (Value, Value) {
    let ctx = Ctx::new(inv);
    let p = generate(inv);
    (ctx.primary_template(&p), ctx.escrow_template(&p))
}

/// `{"Version": ..., "Statement": statements}`.
fn document(statements: Vec<Value>) -> Value {
    json!({"Version": POLICY_VERSION, "Statement": statements})
}

/// One Allow statement.
fn allow(sid: impl Into<String>, actions: &[&str], resources: Vec<String>) -> Value {
    let resource = match resources.len() {
        1 => json!(resources[0]),
        _ => json!(resources),
    };
    let actions = match actions.len() {
        1 => json!(actions[0]),
        _ => json!(actions),
    };
    json!({"Sid": sid.into(), "Effect": "Allow", "Action": actions, "Resource": resource})
}

/// `statement` with `condition` as its Condition block.
fn when(mut statement: Value, condition: Value) -> Value {
    if condition.as_object().is_some_and(|c| !c.is_empty()) {
        statement["Condition"] = condition;
    }
    statement
}

/// A statement id: `prefix` then the job's name, letters and digits only.
fn sid(prefix: &str, name: &str) -> String {
    let clean: String = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            cs.next().map(|c| c.to_ascii_uppercase().to_string() + cs.as_str()).unwrap_or_default()
        })
        .collect();
    format!("{prefix}{clean}")
}

/// A KMS key as the config names it.
#[derive(Debug, Clone)]
enum KeyRef {
    /// A key ARN.
    Arn(String),
    /// An alias (`alias/...`) in `account`.
    Alias { alias: String, account: String },
}

impl KeyRef {
    fn parse(key: &str, region: &str, account: &str) -> KeyRef {
        if let Some(rest) = key.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if let [_, _, _, acct, res] = parts.as_slice()
                && res.starts_with("alias/")
            {
                return KeyRef::Alias { alias: res.to_string(), account: acct.to_string() };
            }
            return KeyRef::Arn(key.to_string());
        }
        if key.starts_with("alias/") {
            return KeyRef::Alias { alias: key.to_string(), account: account.to_string() };
        }
        KeyRef::Arn(format!("arn:aws:kms:{region}:{account}:key/{key}"))
    }

    /// The resource (and condition) an identity policy names the key by: an
    /// alias can only be matched through `kms:ResourceAliases`.
    fn scope(&self, region: &str) -> (String, Value) {
        match self {
            KeyRef::Arn(arn) => (arn.clone(), json!({})),
            KeyRef::Alias { alias, account } => (
                format!("arn:aws:kms:{region}:{account}:key/*"),
                json!({"ForAnyValue:StringEquals": {"kms:ResourceAliases": alias}}),
            ),
        }
    }
}

/// What the generators share.
struct Ctx<'a> {
    inv: &'a Inventory,
    region: &'a str,
    escrow_acct: &'a str,
    primary_acct: &'a str,
    reader_name: String,
    reader_arn: String,
    operator: String,
    operator_name: String,
    escrow_key: Option<KeyRef>,
}

impl<'a> Ctx<'a> {
    fn new(inv: &'a Inventory) -> Self {
        let reader_arn = inv.reader_role_arn.clone().unwrap_or_else(|| {
            format!("arn:aws:iam::{}:role/{DEFAULT_READER_ROLE}", inv.primary_account)
        });
        let reader_name = reader_arn.rsplit('/').next().unwrap_or(DEFAULT_READER_ROLE).to_string();
        let operator = inv
            .operator_role_arn
            .clone()
            .unwrap_or_else(|| format!("arn:aws:iam::{}:root", inv.escrow_account));
        let operator_name = inv
            .operator_role_arn
            .as_deref()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or(DEFAULT_OPERATOR_ROLE)
            .to_string();
        let escrow_key = inv
            .escrow_kms_key
            .as_deref()
            .map(|k| KeyRef::parse(k, &inv.region, &inv.escrow_account));
        Ctx {
            inv,
            region: &inv.region,
            escrow_acct: &inv.escrow_account,
            primary_acct: &inv.primary_account,
            reader_name,
            reader_arn,
            operator,
            operator_name,
            escrow_key,
        }
    }

    fn escrow_root(&self) -> String {
        format!("arn:aws:iam::{}:root", self.escrow_acct)
    }

    fn table_arn(&self, account: &str, table: &str) -> String {
        format!("arn:aws:dynamodb:{}:{account}:table/{table}", self.region)
    }

    fn primary_key_ref(&self, key: &str) -> KeyRef {
        KeyRef::parse(key, self.region, self.primary_acct)
    }

    fn reencrypt_keys(&self) -> BTreeSet<String> {
        self.inv
            .ec2
            .iter()
            .filter_map(|j| j.reencrypt_key.clone())
            .chain(self.inv.rds.iter().filter_map(|j| j.reencrypt_key.clone()))
            .collect()
    }

    // ---- the primary's reader role -------------------------------------

    /// The trust policy: only the escrow operator (or the escrow account),
    /// with the external id when one is configured.
    fn reader_trust(&self, external_id: &Value) -> Vec<Value> {
        let mut s = json!({
            "Sid": "EscrowOperatorAssumes",
            "Effect": "Allow",
            "Principal": {"AWS": self.operator},
            "Action": "sts:AssumeRole",
        });
        if self.inv.external_id.is_some() {
            s["Condition"] = json!({"StringEquals": {"sts:ExternalId": external_id}});
        }
        vec![s]
    }

    fn reader_statements(&self, notes: &mut Vec<String>) -> Vec<Value> {
        let mut out = Vec::new();
        if !self.inv.cloudtrail.is_empty() {
            // ListTrails and DescribeTrails list every trail: no trail resource.
            out.push(allow(
                "FindTrails",
                &["cloudtrail:ListTrails", "cloudtrail:DescribeTrails"],
                vec!["*".into()],
            ));
        }
        for j in &self.inv.s3 {
            let bucket = format!("arn:aws:s3:::{}", j.source_bucket);
            let mut list = vec!["s3:ListBucket"];
            if j.versions {
                list.push("s3:ListBucketVersions");
            }
            // HeadBucket (the bucket check) is authorized as s3:ListBucket
            // and carries no prefix, hence IfExists: key names outside the
            // prefix may be listed, objects outside it are never read.
            let cond = if j.prefix.is_empty() {
                json!({})
            } else {
                json!({"StringLikeIfExists": {"s3:prefix": format!("{}*", j.prefix)}})
            };
            out.push(when(allow(sid("ReadList", &j.name), &list, vec![bucket]), cond));
            let mut read = vec!["s3:GetObject", "s3:GetObjectTagging"];
            if j.versions {
                read.extend(["s3:GetObjectVersion", "s3:GetObjectVersionTagging"]);
            }
            out.push(allow(
                sid("ReadObjects", &j.name),
                &read,
                vec![format!("arn:aws:s3:::{}/{}*", j.source_bucket, j.prefix)],
            ));
        }
        for j in &self.inv.dynamodb {
            let table = self.table_arn(self.primary_acct, &j.source_table);
            out.push(allow(
                sid("ReadTable", &j.name),
                &[
                    "dynamodb:DescribeTable",
                    "dynamodb:Scan",
                    "dynamodb:DescribeTimeToLive",
                    "dynamodb:DescribeContinuousBackups",
                    "dynamodb:ListTagsOfResource",
                ],
                vec![table.clone()],
            ));
            if j.native_export {
                out.push(allow(
                    sid("ExportTable", &j.name),
                    &["dynamodb:ExportTableToPointInTime", "dynamodb:DescribeExport"],
                    vec![table.clone(), format!("{table}/export/*")],
                ));
                // Only the staging prefix: escrow-sync copies each export
                // from there into its generation with escrow credentials.
                let bucket = j.staging_bucket().unwrap_or_default();
                out.push(allow(
                    sid("ExportWrite", &j.name),
                    &["s3:PutObject", "s3:AbortMultipartUpload"],
                    vec![format!("arn:aws:s3:::{bucket}/{}*", j.staging().unwrap_or_default())],
                ));
                if let Some(key) = &self.escrow_key {
                    let (res, cond) = key.scope(self.region);
                    out.push(when(
                        allow(sid("ExportEncrypt", &j.name), &["kms:GenerateDataKey", "kms:Decrypt"], vec![res]),
                        merge(cond, json!({"StringEquals": {"kms:ViaService": format!("s3.{}.amazonaws.com", self.region)}})),
                    ));
                }
            }
        }
        let snapshots =
            !self.inv.ec2.is_empty() || !self.inv.rds.is_empty() || !self.inv.redshift.is_empty();
        if snapshots {
            // Whether a snapshot's key is AWS-managed (aws/ebs, aws/rds...):
            // the keys are the primary's, and the config does not name them.
            out.push(allow(
                "DescribeSnapshotKeys",
                &["kms:DescribeKey"],
                vec![format!("arn:aws:kms:{}:{}:key/*", self.region, self.primary_acct)],
            ));
        }
        for j in &self.inv.ec2 {
            out.extend(self.reader_ec2(j));
        }
        for j in &self.inv.rds {
            out.extend(self.reader_rds(j, notes));
        }
        for j in &self.inv.redshift {
            out.extend(self.reader_redshift(j, notes));
        }
        let reencrypt = self.reencrypt_keys();
        if !reencrypt.is_empty() {
            let mut keys = Vec::new();
            let mut cond = json!({});
            for k in &reencrypt {
                let (res, c) = self.primary_key_ref(k).scope(self.region);
                keys.push(res);
                cond = merge(cond, c);
            }
            keys.dedup();
            out.push(when(
                allow(
                    "ReencryptWithSharedKey",
                    &[
                        "kms:CreateGrant",
                        "kms:Decrypt",
                        "kms:DescribeKey",
                        "kms:Encrypt",
                        "kms:GenerateDataKeyWithoutPlaintext",
                        "kms:ReEncryptFrom",
                        "kms:ReEncryptTo",
                    ],
                    keys,
                ),
                cond,
            ));
            let mut via: Vec<String> = Vec::new();
            if self.inv.ec2.iter().any(|j| j.reencrypt_key.is_some()) {
                via.push(format!("ec2.{}.amazonaws.com", self.region));
            }
            if self.inv.rds.iter().any(|j| j.reencrypt_key.is_some()) {
                via.push(format!("rds.{}.amazonaws.com", self.region));
            }
            // The source snapshots are under the AWS-managed key of the
            // service (not named by the config): usable only through it.
            out.push(when(
                allow(
                    "ReencryptFromManagedKey",
                    &["kms:Decrypt", "kms:ReEncryptFrom", "kms:CreateGrant", "kms:DescribeKey"],
                    vec![format!("arn:aws:kms:{}:{}:key/*", self.region, self.primary_acct)],
                ),
                json!({"StringEquals": {"kms:ViaService": via}}),
            ));
        }
        out
    }

    fn reader_ec2(&self, j: &Ec2Grant) -> Vec<Value> {
        let mut out = Vec::new();
        let region = self.region;
        let mut describe = Vec::new();
        if j.snapshots || j.images {
            describe.push("ec2:DescribeSnapshots");
        }
        if j.images {
            describe.push("ec2:DescribeImages");
        }
        // AWS's rule: EC2 Describe* actions support no resource-level
        // permissions, so they take Resource "*" (they only read metadata).
        if !describe.is_empty() {
            out.push(allow(sid("Describe", &j.name), &describe, vec!["*".into()]));
        }
        let snap_ids: Vec<&String> = j.ids.iter().filter(|i| i.starts_with("snap-")).collect();
        let ami_ids: Vec<&String> = j.ids.iter().filter(|i| i.starts_with("ami-")).collect();
        let tags = tag_condition(&j.tags);
        let escrow = self.escrow_acct;
        // Snapshots only: ec2:Add/userId and ec2:Remove/userId are keys of
        // ModifySnapshotAttribute, not of ModifyImageAttribute (the Service
        // Authorization Reference lists no account key for images): a
        // statement for images guarded by them would never match on AWS.
        let share = json!({"StringEquals": {"ec2:Add/userId": escrow}});
        let unshare = json!({"StringEquals": {"ec2:Remove/userId": escrow}});
        // Snapshots: those named, else those tagged. An AMI's backing
        // snapshots carry neither its id nor its tags, so a job with images
        // shares any snapshot, to the escrow account only.
        let (snap_res, snap_tags) = if j.images {
            (vec![format!("arn:aws:ec2:{region}::snapshot/*")], json!({}))
        } else if !snap_ids.is_empty() && j.tags.is_empty() {
            (
                snap_ids.iter().map(|i| format!("arn:aws:ec2:{region}::snapshot/{i}")).collect(),
                json!({}),
            )
        } else {
            (vec![format!("arn:aws:ec2:{region}::snapshot/*")], tags.clone())
        };
        if j.snapshots || j.images {
            out.push(when(
                allow(
                    sid("ShareSnapshots", &j.name),
                    &["ec2:ModifySnapshotAttribute"],
                    snap_res.clone(),
                ),
                merge(share.clone(), snap_tags.clone()),
            ));
            out.push(when(
                allow(sid("UnshareSnapshots", &j.name), &["ec2:ModifySnapshotAttribute"], snap_res),
                merge(unshare.clone(), snap_tags),
            ));
        }
        if j.images {
            let (img_res, img_tags) = if !ami_ids.is_empty() && j.tags.is_empty() {
                (
                    ami_ids.iter().map(|i| format!("arn:aws:ec2:{region}::image/{i}")).collect(),
                    json!({}),
                )
            } else {
                (vec![format!("arn:aws:ec2:{region}::image/*")], tags.clone())
            };
            // Sharing and unsharing are one action on images, with no
            // key for the account: one statement, selected AMIs only.
            out.push(when(
                allow(sid("ShareImages", &j.name), &["ec2:ModifyImageAttribute"], img_res),
                img_tags,
            ));
        }
        if j.reencrypt_key.is_some() {
            let mut copy = Vec::new();
            let mut res = Vec::new();
            let mut create = Vec::new();
            if j.snapshots || j.images {
                copy.push("ec2:CopySnapshot");
                res.push(format!("arn:aws:ec2:{region}::snapshot/*"));
                create.push("CopySnapshot");
            }
            if j.images {
                copy.push("ec2:CopyImage");
                res.push(format!("arn:aws:ec2:{region}::image/*"));
                create.push("CopyImage");
            }
            out.push(allow(sid("Reencrypt", &j.name), &copy, res.clone()));
            out.push(when(
                allow(sid("TagReencrypted", &j.name), &["ec2:CreateTags"], res.clone()),
                json!({"StringEquals": {"ec2:CreateAction": create}}),
            ));
            // The re-encrypted copies carry only escrow-sync's tag, not the
            // selection's: they are shared by that tag.
            let reencrypted = format!("aws:ResourceTag/{}", tags::REENCRYPTED_FROM);
            let reenc = json!({"Null": {reencrypted: "false"}});
            let snapshots = format!("arn:aws:ec2:{region}::snapshot/*");
            out.push(when(
                allow(
                    sid("ShareReencryptedSnapshots", &j.name),
                    &["ec2:ModifySnapshotAttribute"],
                    vec![snapshots.clone()],
                ),
                merge(share.clone(), reenc.clone()),
            ));
            out.push(when(
                allow(
                    sid("UnshareReencryptedSnapshots", &j.name),
                    &["ec2:ModifySnapshotAttribute"],
                    vec![snapshots],
                ),
                merge(unshare.clone(), reenc.clone()),
            ));
            if j.images {
                out.push(when(
                    allow(
                        sid("ShareReencryptedImages", &j.name),
                        &["ec2:ModifyImageAttribute"],
                        vec![format!("arn:aws:ec2:{region}::image/*")],
                    ),
                    reenc,
                ));
            }
        }
        out
    }

    fn reader_rds(&self, j: &RdsGrant, notes: &mut Vec<String>) -> Vec<Value> {
        let (region, acct) = (self.region, self.primary_acct);
        let arn = |kind: &str, id: &str| format!("arn:aws:rds:{region}:{acct}:{kind}:{id}");
        let mut out = Vec::new();
        let mut kinds = Vec::new();
        if j.db {
            kinds.push(("snapshot", "db", "DBSnapshot", "DbSnapshots"));
        }
        if j.cluster {
            kinds.push(("cluster-snapshot", "cluster", "DBClusterSnapshot", "ClusterSnapshots"));
        }
        for (kind, parent, api, label) in kinds {
            // RDS's own tag keys: rds:snapshot-tag/<k>, rds:cluster-snapshot-tag/<k>.
            let tags = tag_condition_with(&j.tags, &format!("rds:{kind}-tag/"));
            out.push(allow(
                sid(&format!("Describe{label}"), &j.name),
                &[&format!("rds:Describe{api}s"), &format!("rds:Describe{api}Attributes")],
                vec![arn(kind, "*"), arn(parent, "*")],
            ));
            // Named snapshots, else tagged ones; automated (and re-encrypted)
            // ones are shared through escrow-sync's manual copy.
            let named: Vec<String> =
                j.ids.iter().filter(|i| !i.starts_with("rds:")).map(|i| arn(kind, i)).collect();
            let copies = arn(kind, "escrow-sync-*");
            let modify = format!("rds:Modify{api}Attribute");
            if !j.tags.is_empty() || j.ids.is_empty() {
                out.push(when(
                    allow(
                        sid(&format!("ShareTagged{label}"), &j.name),
                        &[&modify],
                        vec![arn(kind, "*")],
                    ),
                    tags.clone(),
                ));
            }
            let mut share = named;
            share.push(copies.clone());
            out.push(allow(sid(&format!("Share{label}"), &j.name), &[&modify], share));
            out.push(allow(
                sid(&format!("Copy{label}"), &j.name),
                &[&format!("rds:Copy{api}")],
                vec![arn(kind, "*")],
            ));
            out.push(allow(
                sid(&format!("TagCopies{label}"), &j.name),
                &["rds:AddTagsToResource"],
                vec![copies],
            ));
        }
        notes.push(format!(
            "job {}: RDS has no condition key for the accounts a snapshot is shared with: \
             escrow-sync shares only with the escrow account, and `escrow-sync audit` checks it",
            j.name
        ));
        out
    }

    fn reader_redshift(&self, j: &RedshiftGrant, notes: &mut Vec<String>) -> Vec<Value> {
        let (region, acct) = (self.region, self.primary_acct);
        let snap = |id: &str| format!("arn:aws:redshift:{region}:{acct}:snapshot:*/{id}");
        // AWS's rule: DescribeClusterSnapshots takes no resource, so only
        // "*" matches it (scoped to snapshots it would never be allowed).
        let mut out = vec![allow(
            sid("DescribeRedshift", &j.name),
            &["redshift:DescribeClusterSnapshots"],
            vec!["*".into()],
        )];
        let mut named: Vec<String> =
            j.ids.iter().filter(|i| !i.starts_with("rs:")).map(|i| snap(i)).collect();
        named.push(snap("escrow-sync-*"));
        let share = ["redshift:AuthorizeSnapshotAccess", "redshift:RevokeSnapshotAccess"];
        if !j.tags.is_empty() || j.ids.is_empty() {
            out.push(when(
                allow(sid("ShareTaggedRedshift", &j.name), &share, vec![snap("*")]),
                tag_condition(&j.tags),
            ));
        }
        out.push(allow(sid("ShareRedshift", &j.name), &share, named));
        // Automated snapshots are first copied to a manual one.
        out.push(allow(
            sid("CopyRedshift", &j.name),
            &["redshift:CopyClusterSnapshot"],
            vec![snap("*")],
        ));
        out.push(allow(
            sid("TagRedshiftCopies", &j.name),
            &["redshift:CreateTags"],
            vec![snap("escrow-sync-*")],
        ));
        notes.push(format!(
            "job {}: Redshift has no condition key for the account a snapshot is authorized \
             for: escrow-sync authorizes only the escrow account, and `escrow-sync audit` checks it",
            j.name
        ));
        out
    }

    // ---- what the primary's resource policies need ---------------------

    /// Server-side copies read the source with escrow credentials: the
    /// source bucket policy must let the operator read the job's prefix.
    fn bucket_policies(&self) -> BTreeMap<String, Value> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for j in self.inv.s3.iter().filter(|j| !j.streamed) {
            let mut read = vec!["s3:GetObject", "s3:GetObjectTagging"];
            if j.versions {
                read.extend(["s3:GetObjectVersion", "s3:GetObjectVersionTagging"]);
            }
            let mut s = allow(
                sid("EscrowPull", &j.name),
                &read,
                vec![format!("arn:aws:s3:::{}/{}*", j.source_bucket, j.prefix)],
            );
            s["Principal"] = json!({"AWS": self.operator});
            out.entry(j.source_bucket.clone()).or_default().push(s);
            if let Some(role) = self.batch_role_for(j) {
                let mut b = allow(
                    sid("EscrowBatchPull", &j.name),
                    &[
                        "s3:GetObject",
                        "s3:GetObjectVersion",
                        "s3:GetObjectTagging",
                        "s3:GetObjectVersionTagging",
                    ],
                    vec![format!("arn:aws:s3:::{}/{}*", j.source_bucket, j.prefix)],
                );
                b["Principal"] = json!({"AWS": role});
                out.entry(j.source_bucket.clone()).or_default().push(b);
            }
        }
        out.into_iter().map(|(k, v)| (k, Value::Array(v))).collect()
    }

    /// Each re-encryption key of the primary lets the escrow copy what it
    /// encrypted: decrypt and describe, and grants for AWS services only.
    fn primary_key_policies(&self) -> BTreeMap<String, Value> {
        self.reencrypt_keys()
            .into_iter()
            .map(|k| {
                let principal = json!({"AWS": self.operator});
                let mut use_key = allow(
                    "EscrowCopiesSharedSnapshots",
                    &["kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom"],
                    // In a key policy, "*" is this key.
                    vec!["*".into()],
                );
                use_key["Principal"] = principal.clone();
                let mut grant = when(
                    allow("EscrowGrantsForCopies", &["kms:CreateGrant"], vec!["*".into()]),
                    json!({"Bool": {"kms:GrantIsForAWSResource": "true"}}),
                );
                grant["Principal"] = principal;
                (k, json!([use_key, grant]))
            })
            .collect()
    }

    // ---- the escrow side ------------------------------------------------

    fn operator_statements(&self) -> Vec<Value> {
        let inv = self.inv;
        let region = self.region;
        let escrow = self.escrow_acct;
        let mut out =
            vec![allow("AssumeReaderRole", &["sts:AssumeRole"], vec![self.reader_arn.clone()])];
        // Escrow buckets: what each is used for, merged per bucket.
        #[derive(Default)]
        struct Use {
            prefixes: BTreeSet<String>,
            journals: BTreeSet<String>,
            /// Read only: native export staging prefixes.
            reads: BTreeSet<String>,
            lock: bool,
            versions: bool,
        }
        let mut buckets: BTreeMap<&str, Use> = BTreeMap::new();
        for j in &inv.s3 {
            let u = buckets.entry(&j.dest_bucket).or_default();
            u.prefixes.insert(j.dest_prefix.clone());
            u.journals.insert(format!("{}.escrow-sync-uploads/", j.dest_prefix));
            if j.object_lock {
                // The retention ledger: a due object is removed once its
                // copies are renewed and filed again.
                u.journals.insert(format!("{}{RETENTION_DIR}", j.dest_prefix));
            }
            u.lock |= j.object_lock;
            u.versions |= j.versions;
        }
        for j in &inv.dynamodb {
            if let Some(b) = &j.dest_bucket {
                let u = buckets.entry(b).or_default();
                u.prefixes.insert(format!("{}{}/", j.dest_prefix, j.source_table));
                if j.object_lock {
                    u.journals
                        .insert(format!("{}{}/{RETENTION_DIR}", j.dest_prefix, j.source_table));
                }
                u.lock |= j.object_lock;
                if let Some(staging) = j.staging() {
                    // Native exports are read here, checked and copied
                    // into the generation.
                    u.reads.insert(staging);
                }
            }
            if let (Some(b), Some(table)) = (&j.history_bucket, &j.dest_table) {
                // Item history: written before each table write, read back
                // by restore --at and verify.
                let u = buckets.entry(b).or_default();
                u.prefixes.insert(format!("{}{table}/", j.history_prefix));
                if let Some(staging) = j.staging() {
                    // native-incremental: the exports are read here, checked
                    // and applied to the escrow table.
                    u.reads.insert(staging);
                }
            }
        }
        if let Some(m) = &inv.manifest {
            let u = buckets.entry(&m.bucket).or_default();
            u.prefixes.insert(m.prefix.clone());
            if m.object_lock {
                // Run manifests' and verification records' retention
                // ledgers.
                u.journals.insert(format!("{}{RETENTION_DIR}", m.prefix));
                u.journals.insert(format!("{}verifications/{RETENTION_DIR}", m.prefix));
            }
            u.lock |= m.object_lock;
        } else {
            // Without a manifest bucket, jobs keep their leases (one run
            // per job: PutObject and GetObject, never a delete) at the root
            // of their own escrow bucket (`escrow_sync_s3::BUCKET_LEASE_PREFIX`).
            for u in buckets.values_mut() {
                u.prefixes.insert(LEASE_PREFIX.to_string());
            }
        }
        for (bucket, u) in &buckets {
            let name = sid("", bucket);
            let mut check = vec!["s3:ListBucket", "s3:GetBucketVersioning"];
            if u.lock {
                check.push("s3:GetBucketObjectLockConfiguration");
            }
            // Renewals look at every version of a due key (a rewritten
            // object's earlier ones, those under a delete marker).
            if u.versions || u.lock {
                check.push("s3:ListBucketVersions");
            }
            out.push(allow(
                format!("EscrowBucket{name}"),
                &check,
                vec![format!("arn:aws:s3:::{bucket}")],
            ));
            // GetObjectTagging: `verify` compares the escrow copy's tags
            // with the source's.
            let mut write = vec![
                "s3:PutObject",
                "s3:GetObject",
                "s3:GetObjectTagging",
                "s3:PutObjectTagging",
                "s3:AbortMultipartUpload",
            ];
            if u.lock {
                // GetObjectRetention: HeadObject shows a copy's lock only
                // with it (verify, and renewals that never shorten a lock).
                write.push("s3:PutObjectRetention");
                write.push("s3:GetObjectRetention");
            }
            if u.versions || u.lock {
                write.push("s3:GetObjectVersion");
            }
            let objects: Vec<String> =
                u.prefixes.iter().map(|p| format!("arn:aws:s3:::{bucket}/{p}*")).collect();
            out.push(allow(format!("EscrowWrite{name}"), &write, objects));
            if !u.reads.is_empty() {
                let staged: Vec<String> =
                    u.reads.iter().map(|p| format!("arn:aws:s3:::{bucket}/{p}*")).collect();
                out.push(allow(format!("EscrowStagingRead{name}"), &["s3:GetObject"], staged));
            }
            if !u.journals.is_empty() {
                // The only deletes: escrow-sync's own multipart journal
                // entries and retention ledger objects (a versioned bucket
                // keeps a delete marker).
                let journals: Vec<String> =
                    u.journals.iter().map(|p| format!("arn:aws:s3:::{bucket}/{p}*")).collect();
                out.push(allow(format!("EscrowJournal{name}"), &["s3:DeleteObject"], journals));
            }
        }
        for j in &inv.cloudtrail {
            // Validation searches escrow's earlier versions of an altered or
            // deleted log file for the original.
            out.push(allow(
                sid("TrailVersions", &j.name),
                &["s3:ListBucketVersions"],
                vec![format!("arn:aws:s3:::{}", j.dest_bucket)],
            ));
            out.push(allow(
                sid("TrailOriginals", &j.name),
                &["s3:GetObjectVersion"],
                vec![format!("arn:aws:s3:::{}/{}*", j.dest_bucket, j.dest_prefix)],
            ));
        }
        if !inv.cloudtrail.is_empty() {
            // CloudTrail's public keys, per region: no resource.
            out.push(allow("TrailPublicKeys", &["cloudtrail:ListPublicKeys"], vec!["*".into()]));
        }
        if !buckets.is_empty() {
            // AWS's rule: ListAllMyBuckets has no resource. Optional: it
            // lets the bucket check see that an escrow bucket is escrow's own
            // (ExpectedBucketOwner does it otherwise).
            out.push(allow("ListEscrowBuckets", &["s3:ListAllMyBuckets"], vec!["*".into()]));
        }
        for j in inv.s3.iter().filter(|j| !j.streamed) {
            // Server-side copies read the source with escrow credentials
            // (the source bucket policy grants the other half).
            let mut read = vec!["s3:GetObject", "s3:GetObjectTagging"];
            if j.versions {
                read.extend(["s3:GetObjectVersion", "s3:GetObjectVersionTagging"]);
            }
            out.push(allow(
                sid("PullSource", &j.name),
                &read,
                vec![format!("arn:aws:s3:::{}/{}*", j.source_bucket, j.prefix)],
            ));
        }
        let tables: BTreeSet<&str> =
            inv.dynamodb.iter().filter_map(|j| j.dest_table.as_deref()).collect();
        if !tables.is_empty() {
            out.push(allow(
                "EscrowTables",
                &[
                    "dynamodb:CreateTable",
                    "dynamodb:DescribeTable",
                    "dynamodb:UpdateTable",
                    "dynamodb:UpdateContinuousBackups",
                    "dynamodb:DescribeContinuousBackups",
                    "dynamodb:DescribeTimeToLive",
                    "dynamodb:ListTagsOfResource",
                    "dynamodb:TagResource",
                    "dynamodb:BatchGetItem",
                    "dynamodb:BatchWriteItem",
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:Scan",
                ],
                tables.iter().map(|t| self.table_arn(escrow, t)).collect(),
            ));
        }
        let checkpoints: BTreeSet<&str> =
            inv.dynamodb.iter().map(|j| j.checkpoint_table.as_str()).collect();
        if !checkpoints.is_empty() {
            out.push(allow(
                "CheckpointTable",
                &[
                    "dynamodb:CreateTable",
                    "dynamodb:DescribeTable",
                    // Point-in-time recovery, turned on at creation.
                    "dynamodb:UpdateContinuousBackups",
                    "dynamodb:DescribeContinuousBackups",
                    // A saved checkpoint is read by key, chunk by chunk.
                    "dynamodb:GetItem",
                    "dynamodb:Query",
                    "dynamodb:PutItem",
                    "dynamodb:DeleteItem",
                ],
                checkpoints.iter().map(|t| self.table_arn(escrow, t)).collect(),
            ));
        }
        out.extend(self.operator_snapshots());
        out.extend(self.operator_batch());
        if let Some(key) = &self.escrow_key {
            let (res, cond) = key.scope(region);
            out.push(when(
                allow(
                    "UseEscrowKey",
                    &[
                        "kms:DescribeKey",
                        "kms:Encrypt",
                        "kms:Decrypt",
                        "kms:ReEncryptFrom",
                        "kms:ReEncryptTo",
                        "kms:GenerateDataKey",
                        "kms:GenerateDataKeyWithoutPlaintext",
                    ],
                    vec![res.clone()],
                ),
                cond.clone(),
            ));
            out.push(when(
                allow("EscrowKeyGrants", &["kms:CreateGrant"], vec![res]),
                merge(cond, json!({"Bool": {"kms:GrantIsForAWSResource": "true"}})),
            ));
        }
        let reencrypt = self.reencrypt_keys();
        if !reencrypt.is_empty() {
            let mut keys = Vec::new();
            let mut cond = json!({});
            for k in &reencrypt {
                let (res, c) = self.primary_key_ref(k).scope(region);
                keys.push(res);
                cond = merge(cond, c);
            }
            keys.dedup();
            out.push(when(
                allow(
                    "DecryptSharedSnapshots",
                    &["kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom", "kms:CreateGrant"],
                    keys,
                ),
                cond,
            ));
        }
        if let Some(m) = &inv.metrics {
            // PutMetricData has no resource-level permission: "*" narrowed
            // to escrow-sync's namespace by its condition key.
            out.push(when(
                allow("PutEscrowSyncMetrics", &["cloudwatch:PutMetricData"], vec!["*".into()]),
                json!({"StringEquals": {"cloudwatch:namespace": m.namespace}}),
            ));
        }
        out
    }

    /// What the audit reads in the escrow account (see
    /// [`crate::audit`]): scoped to the escrow's own buckets, tables and key
    /// where the config names them; `*` for the listings that look at
    /// everything the escrow holds (roles, trails, snapshots and their
    /// shares), which is where a quiet change would hide.
    fn audit_statements(&self) -> Vec<Value> {
        let inv = self.inv;
        let (region, escrow) = (self.region, self.escrow_acct);
        // AWS's rule: ListRoles and the CloudTrail and EC2 Describe* take "*".
        let mut out = vec![
            allow("AuditRoleTrust", &["iam:ListRoles"], vec!["*".into()]),
            // IAM users and their access keys beyond the runner's.
            allow("AuditIamUsers", &["iam:ListUsers"], vec!["*".into()]),
            allow(
                "AuditAccessKeys",
                &["iam:ListAccessKeys"],
                vec![format!("arn:aws:iam::{escrow}:user/*")],
            ),
            allow(
                "AuditTrails",
                &["cloudtrail:DescribeTrails", "cloudtrail:GetTrailStatus"],
                vec!["*".into()],
            ),
        ];
        let mut buckets: BTreeSet<&str> = inv.s3.iter().map(|j| j.dest_bucket.as_str()).collect();
        buckets.extend(inv.dynamodb.iter().filter_map(|j| j.dest_bucket.as_deref()));
        buckets.extend(inv.dynamodb.iter().filter_map(|j| j.history_bucket.as_deref()));
        if let Some(m) = &inv.manifest {
            buckets.insert(&m.bucket);
        }
        if !buckets.is_empty() {
            out.push(allow(
                "AuditBuckets",
                &[
                    "s3:GetBucketVersioning",
                    "s3:GetBucketPolicy",
                    "s3:GetBucketAcl",
                    "s3:GetBucketObjectLockConfiguration",
                    "s3:GetBucketPublicAccessBlock",
                    "s3:GetLifecycleConfiguration",
                    "s3:GetReplicationConfiguration",
                    "s3:GetEncryptionConfiguration",
                ],
                buckets.iter().map(|b| format!("arn:aws:s3:::{b}")).collect(),
            ));
        }
        let mut tables: BTreeSet<&str> =
            inv.dynamodb.iter().filter_map(|j| j.dest_table.as_deref()).collect();
        tables.extend(inv.dynamodb.iter().map(|j| j.checkpoint_table.as_str()));
        if !tables.is_empty() {
            out.push(allow(
                "AuditTables",
                &[
                    "dynamodb:DescribeTable",
                    "dynamodb:DescribeContinuousBackups",
                    "dynamodb:DescribeTimeToLive",
                ],
                tables.iter().map(|t| self.table_arn(escrow, t)).collect(),
            ));
        }
        if let Some(key) = &self.escrow_key {
            let (res, cond) = key.scope(region);
            out.push(when(
                allow(
                    "AuditEscrowKey",
                    &["kms:DescribeKey", "kms:GetKeyPolicy", "kms:ListGrants"],
                    vec![res],
                ),
                cond,
            ));
        }
        if !inv.ec2.is_empty() {
            out.push(allow(
                "AuditEc2Shares",
                &[
                    "ec2:DescribeSnapshots",
                    "ec2:DescribeSnapshotAttribute",
                    "ec2:DescribeImages",
                    "ec2:DescribeImageAttribute",
                ],
                vec!["*".into()],
            ));
            if inv.ec2.iter().any(|j| j.lock.is_some()) {
                out.push(allow(
                    "AuditEc2Locks",
                    &["ec2:DescribeLockedSnapshots"],
                    vec!["*".into()],
                ));
            }
        }
        if !inv.ec2.is_empty() || !inv.rds.is_empty() || !inv.redshift.is_empty() {
            // Which key each escrow snapshot copy is under: an AWS-managed
            // one (aws/ebs, aws/rds, aws/redshift) is a finding.
            out.push(allow(
                "AuditCopyKeys",
                &["kms:DescribeKey"],
                vec![format!("arn:aws:kms:{region}:{escrow}:key/*")],
            ));
        }
        if !inv.rds.is_empty() {
            out.push(allow(
                "AuditRdsSnapshots",
                &["rds:DescribeDBSnapshots", "rds:DescribeDBClusterSnapshots"],
                vec!["*".into()],
            ));
            out.push(allow(
                "AuditRdsShares",
                &["rds:DescribeDBSnapshotAttributes", "rds:DescribeDBClusterSnapshotAttributes"],
                vec![
                    format!("arn:aws:rds:{region}:{escrow}:snapshot:*"),
                    format!("arn:aws:rds:{region}:{escrow}:cluster-snapshot:*"),
                ],
            ));
        }
        if !crate::audit::recycle_bin::rules(inv).is_empty() {
            // AWS's rule: ListRules takes no resource.
            out.push(allow("AuditRecycleBinRules", &["rbin:ListRules"], vec!["*".into()]));
            out.push(allow(
                "AuditRecycleBinRule",
                &["rbin:GetRule"],
                vec![format!("arn:aws:rbin:{region}:{escrow}:rule/*")],
            ));
        }
        if !inv.redshift.is_empty() {
            out.push(allow(
                "AuditRedshiftShares",
                &["redshift:DescribeClusterSnapshots"],
                vec!["*".into()],
            ));
        }
        out
    }

    fn operator_snapshots(&self) -> Vec<Value> {
        let inv = self.inv;
        let (region, escrow, primary) = (self.region, self.escrow_acct, self.primary_acct);
        let mut out = Vec::new();
        let source_account = format!("aws:ResourceTag/{}", tags::SOURCE_ACCOUNT);
        let provenance = json!({"StringEquals": {source_account: primary}});
        if !inv.ec2.is_empty() {
            let images = inv.ec2.iter().any(|j| j.images);
            let mut describe = vec!["ec2:DescribeSnapshots"];
            let mut copy = vec!["ec2:CopySnapshot"];
            let mut res = vec![format!("arn:aws:ec2:{region}::snapshot/*")];
            if images {
                describe.push("ec2:DescribeImages");
                copy.push("ec2:CopyImage");
                res.push(format!("arn:aws:ec2:{region}::image/*"));
            }
            // AWS's rule: EC2 Describe* take Resource "*".
            out.push(allow("DescribeEc2Copies", &describe, vec!["*".into()]));
            out.push(allow("CopyEc2", &copy, res.clone()));
            // Copies are tagged only as they are made (the sinks tag through
            // CopySnapshot's and CopyImage's TagSpecifications): an existing
            // copy's escrow-sync:* tags cannot be changed, so no copy can be
            // retagged out of its job (and out of its lock's renewal).
            let mut create = vec!["CopySnapshot"];
            if images {
                create.push("CopyImage");
            }
            out.push(when(
                allow("TagEc2Copies", &["ec2:CreateTags"], res.clone()),
                json!({"StringEquals": {"ec2:CreateAction": create}}),
            ));
            if images {
                // The AMI sink gives an image copy's backing snapshots the
                // image's provenance tags when CopyImage left them without:
                // only snapshots that carry no provenance tag yet, so no
                // escrow copy (each carries one) can be retagged this way.
                let untagged = json!({"Null": {
                    format!("aws:ResourceTag/{}", tags::SOURCE_IMAGE_ID): "true",
                    format!("aws:ResourceTag/{}", tags::SOURCE_SNAPSHOT_ID): "true",
                }});
                out.push(when(
                    allow(
                        "TagEc2BackingSnapshots",
                        &["ec2:CreateTags"],
                        vec![format!("arn:aws:ec2:{region}::snapshot/*")],
                    ),
                    untagged,
                ));
            }
            let locks = inv.ec2.iter().any(|j| j.lock.is_some());
            if locks || inv.ec2.iter().any(|j| j.prunes) {
                // Runs read locks to renew them, prune to keep locked copies.
                // AWS's rule: DescribeLockedSnapshots takes Resource "*".
                out.push(allow("ReadEc2Locks", &["ec2:DescribeLockedSnapshots"], vec!["*".into()]));
            }
            if locks {
                // Only escrow's own copies (their provenance tag): lock and
                // protect, never unlock or disable.
                let snapshots = vec![format!("arn:aws:ec2:{region}::snapshot/*")];
                out.push(when(
                    allow("LockEc2Copies", &["ec2:LockSnapshot"], snapshots),
                    provenance.clone(),
                ));
                if inv.ec2.iter().any(|j| j.lock.is_some() && j.images) {
                    let images = vec![format!("arn:aws:ec2:{region}::image/*")];
                    out.push(when(
                        allow(
                            "ProtectEc2Images",
                            &["ec2:EnableImageDeregistrationProtection"],
                            images,
                        ),
                        provenance.clone(),
                    ));
                }
            }
            if inv.ec2.iter().any(|j| j.prunes) {
                let mut delete = vec!["ec2:DeleteSnapshot"];
                if images {
                    delete.push("ec2:DeregisterImage");
                }
                out.push(when(allow("PruneEc2Copies", &delete, res), provenance.clone()));
            }
        }
        if !inv.rds.is_empty() {
            let arn = |acct: &str, kind: &str, id: &str| {
                format!("arn:aws:rds:{region}:{acct}:{kind}:{id}")
            };
            let mut describe = vec!["rds:DescribeEvents"];
            let mut copy = Vec::new();
            let mut src = Vec::new();
            let mut dst = Vec::new();
            if inv.rds.iter().any(|j| j.db) {
                describe.push("rds:DescribeDBSnapshots");
                copy.push("rds:CopyDBSnapshot");
                src.push(arn(primary, "snapshot", "*"));
                dst.push(arn(escrow, "snapshot", "escrow-*"));
            }
            if inv.rds.iter().any(|j| j.cluster) {
                describe.push("rds:DescribeDBClusterSnapshots");
                copy.push("rds:CopyDBClusterSnapshot");
                src.push(arn(primary, "cluster-snapshot", "*"));
                dst.push(arn(escrow, "cluster-snapshot", "escrow-*"));
            }
            // Lists what the primary shares as well as escrow's own copies.
            out.push(allow("DescribeRdsCopies", &describe, vec!["*".into()]));
            let mut both = src.clone();
            both.extend(dst.iter().cloned());
            out.push(allow("CopyRds", &copy, both));
            out.push(allow("TagRdsCopies", &["rds:AddTagsToResource"], dst.clone()));
            if inv.rds.iter().any(|j| j.prunes) {
                let delete: Vec<&str> = copy
                    .iter()
                    .map(|c| {
                        if c.contains("Cluster") {
                            "rds:DeleteDBClusterSnapshot"
                        } else {
                            "rds:DeleteDBSnapshot"
                        }
                    })
                    .collect();
                out.push(allow("PruneRdsCopies", &delete, dst));
            }
        }
        if !inv.redshift.is_empty() {
            let r = |acct: &str, kind: &str| format!("arn:aws:redshift:{region}:{acct}:{kind}");
            out.push(allow(
                "DescribeRedshift",
                &["redshift:DescribeClusterSnapshots", "redshift:DescribeClusters"],
                vec!["*".into()],
            ));
            if inv.redshift.iter().any(|j| j.independent_copy) {
                let cluster = r(escrow, "cluster:escrow-sync-restore-*");
                let snaps = r(escrow, "snapshot:escrow-sync-restore-*/escrow-sync-*");
                out.push(allow(
                    "RestoreRedshift",
                    &["redshift:RestoreFromClusterSnapshot"],
                    vec![r(primary, "snapshot:*/*"), cluster.clone()],
                ));
                out.push(allow(
                    "SnapshotRedshift",
                    &["redshift:CreateClusterSnapshot", "redshift:CreateTags"],
                    vec![cluster.clone(), snaps.clone()],
                ));
                // The restored cluster is a step of the copy, never data.
                out.push(allow(
                    "DeleteRestoredCluster",
                    &["redshift:DeleteCluster"],
                    vec![cluster],
                ));
                if inv.redshift.iter().any(|j| j.prunes) {
                    out.push(when(
                        allow(
                            "PruneRedshiftCopies",
                            &["redshift:DeleteClusterSnapshot"],
                            vec![snaps],
                        ),
                        provenance.clone(),
                    ));
                }
            }
        }
        out
    }

    /// The escrow key's policy: the escrow account administers it, the
    /// operator uses it; nothing of the primary, except what a native
    /// DynamoDB export needs (said in the Sid and the notes).
    fn escrow_key_statements(&self) -> Vec<Value> {
        let root = self.escrow_root();
        let mut admin = allow("EscrowAccountAdministers", &["kms:*"], vec!["*".into()]);
        admin["Principal"] = json!({"AWS": root});
        let mut use_key = allow(
            "OperatorUses",
            &[
                "kms:DescribeKey",
                "kms:Encrypt",
                "kms:Decrypt",
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
                "kms:GenerateDataKey",
                "kms:GenerateDataKeyWithoutPlaintext",
            ],
            vec!["*".into()],
        );
        use_key["Principal"] = json!({"AWS": self.operator});
        let mut grants = when(
            allow("OperatorGrantsForAwsServices", &["kms:CreateGrant"], vec!["*".into()]),
            json!({"Bool": {"kms:GrantIsForAWSResource": "true"}}),
        );
        grants["Principal"] = json!({"AWS": self.operator});
        let mut out = vec![admin, use_key, grants];
        if let Some(b) = &self.inv.batch {
            // Only through S3 (the copies it writes), never directly.
            let mut batch = when(
                allow(
                    "BatchRoleEncryptsCopies",
                    &["kms:GenerateDataKey", "kms:Decrypt"],
                    vec!["*".into()],
                ),
                json!({"StringEquals": {"kms:ViaService": format!("s3.{}.amazonaws.com", self.region)}}),
            );
            batch["Principal"] = json!({"AWS": b.role_arn});
            out.push(batch);
        }
        if self.inv.dynamodb.iter().any(|j| j.native_export) {
            let mut export = when(
                allow(
                    "PrimaryReaderNativeExportOnly",
                    &["kms:GenerateDataKey", "kms:Decrypt"],
                    vec!["*".into()],
                ),
                json!({"StringEquals": {"kms:ViaService": format!("s3.{}.amazonaws.com", self.region)}}),
            );
            export["Principal"] = json!({"AWS": self.reader_arn});
            out.push(export);
        }
        out
    }

    /// The batch role's ARN when job `j` may copy with Batch Operations.
    fn batch_role_for(&self, j: &crate::inventory::S3Grant) -> Option<&str> {
        let b = self.inv.batch.as_ref()?;
        (!j.streamed && b.jobs.contains(&j.name)).then_some(b.role_arn.as_str())
    }

    /// The operator's half of Batch Operations: create and describe jobs,
    /// pass the batch role to S3 Batch Operations only, and write and read
    /// the jobs' files.
    fn operator_batch(&self) -> Vec<Value> {
        let Some(b) = &self.inv.batch else { return Vec::new() };
        let mut out = vec![
            // Copy jobs only: no job that deletes, tags or restores.
            when(
                allow("BatchCreateJobs", &["s3:CreateJob"], vec!["*".into()]),
                json!({"StringEquals": {"s3:RequestJobOperation": "S3PutObjectCopy"}}),
            ),
            allow(
                "BatchDescribeJobs",
                &["s3:DescribeJob"],
                vec![format!("arn:aws:s3:{}:{}:job/*", self.region, self.escrow_acct)],
            ),
            when(
                allow("BatchPassRole", &["iam:PassRole"], vec![b.role_arn.clone()]),
                json!({"StringEquals": {"iam:PassedToService": "batchoperations.s3.amazonaws.com"}}),
            ),
        ];
        for (bucket, prefixes) in &b.files {
            let objects: Vec<String> =
                prefixes.iter().map(|p| format!("arn:aws:s3:::{bucket}/{p}*")).collect();
            out.push(allow(sid("BatchFiles", bucket), &["s3:PutObject", "s3:GetObject"], objects));
            out.push(when(
                allow(sid("BatchListFiles", bucket), &["s3:ListBucket"], vec![format!("arn:aws:s3:::{bucket}")]),
                json!({"StringLike": {"s3:prefix": prefixes.iter().map(|p| format!("{p}*")).collect::<Vec<_>>()}}),
            ));
        }
        out
    }

    /// The batch role: trusted by S3 Batch Operations on behalf of this
    /// account only; reads the batch jobs' source prefixes and the
    /// manifests; writes the escrow prefixes (with their Object Lock
    /// retention) and the completion reports; no delete, no write in the
    /// primary.
    fn batch_role(&self) -> Option<Role> {
        let b = self.inv.batch.as_ref()?;
        let name = b.role_arn.rsplit('/').next().unwrap_or(&b.role_arn).to_string();
        let trust = vec![json!({
            "Sid": "S3BatchOperationsAssumes",
            "Effect": "Allow",
            "Principal": {"Service": "batchoperations.s3.amazonaws.com"},
            "Action": "sts:AssumeRole",
            // Jobs of this account only (the confused deputy: the service
            // acting for another account's job).
            "Condition": {
                "StringEquals": {"aws:SourceAccount": self.escrow_acct},
                "ArnLike": {"aws:SourceArn": format!("arn:aws:s3:{}:{}:job/*", self.region, self.escrow_acct)},
            },
        })];
        let mut out = Vec::new();
        for j in self.inv.s3.iter().filter(|j| self.batch_role_for(j).is_some()) {
            out.push(allow(
                sid("BatchReadSource", &j.name),
                &[
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:GetObjectTagging",
                    "s3:GetObjectVersionTagging",
                ],
                vec![format!("arn:aws:s3:::{}/{}*", j.source_bucket, j.prefix)],
            ));
            let mut write = vec!["s3:PutObject", "s3:PutObjectTagging"];
            if j.object_lock {
                write.push("s3:PutObjectRetention");
            }
            out.push(allow(
                sid("BatchWriteEscrow", &j.name),
                &write,
                vec![format!("arn:aws:s3:::{}/{}*", j.dest_bucket, j.dest_prefix)],
            ));
        }
        for (bucket, prefixes) in &b.files {
            let objects: Vec<String> =
                prefixes.iter().map(|p| format!("arn:aws:s3:::{bucket}/{p}*")).collect();
            out.push(allow(
                sid("BatchReadManifests", bucket),
                &["s3:GetObject", "s3:GetObjectVersion"],
                objects.clone(),
            ));
            out.push(allow(sid("BatchWriteReports", bucket), &["s3:PutObject"], objects));
            out.push(allow(
                sid("BatchReportBucket", bucket),
                &["s3:GetBucketLocation"],
                vec![format!("arn:aws:s3:::{bucket}")],
            ));
        }
        if let Some(key) = &self.escrow_key {
            let (res, cond) = key.scope(self.region);
            out.push(when(
                allow("BatchUseEscrowKey", &["kms:GenerateDataKey", "kms:Decrypt"], vec![res]),
                merge(
                    cond,
                    json!({"StringEquals": {"kms:ViaService": format!("s3.{}.amazonaws.com", self.region)}}),
                ),
            ));
        }
        Some(Role {
            name,
            arn: b.role_arn.clone(),
            trust_policy: document(trust),
            permission_policy: document(out),
        })
    }

    /// The bucket policy statement letting the primary's reader role write
    /// a native export job's staging prefix, and only that.
    fn staging_write(&self, j: &crate::inventory::TableGrant) -> Value {
        let mut s = allow(
            sid("PrimaryReaderNativeExport", &j.name),
            &["s3:PutObject", "s3:AbortMultipartUpload"],
            vec![format!(
                "arn:aws:s3:::{}/{}*",
                j.staging_bucket().unwrap_or_default(),
                j.staging().unwrap_or_default()
            )],
        );
        s["Principal"] = json!({"AWS": self.reader_arn});
        s
    }

    /// The settings every escrow bucket must have.
    fn escrow_buckets(&self) -> BTreeMap<String, Value> {
        let mut uses: BTreeMap<String, (bool, Vec<String>, Vec<Value>)> = BTreeMap::new();
        for j in &self.inv.s3 {
            let e = uses.entry(j.dest_bucket.clone()).or_default();
            e.0 |= j.object_lock;
            e.1.push(j.name.clone());
        }
        for j in &self.inv.dynamodb {
            if let Some(b) = &j.dest_bucket {
                let e = uses.entry(b.clone()).or_default();
                e.0 |= j.object_lock;
                e.1.push(j.name.clone());
                if j.native_export {
                    // The staging prefix only: nothing the primary writes
                    // lands where restore and verify read.
                    e.2.push(self.staging_write(j));
                }
            }
            if let Some(b) = &j.history_bucket {
                let e = uses.entry(b.clone()).or_default();
                e.1.push(format!("{} (item history)", j.name));
                if j.native_export && j.dest_bucket.is_none() {
                    // native-incremental table job: the staging prefix only,
                    // beside the history, never under it.
                    e.2.push(self.staging_write(j));
                }
            }
        }
        if let Some(m) = &self.inv.manifest {
            let e = uses.entry(m.bucket.clone()).or_default();
            e.0 |= m.object_lock;
            e.1.push("run manifests".into());
        }
        uses.into_iter()
            .map(|(bucket, (lock, jobs, policy))| {
                let encryption = match &self.escrow_key {
                    Some(k) => json!({"sse_algorithm": "aws:kms", "kms_key": key_display(k), "bucket_key": true}),
                    None => json!({"sse_algorithm": "AES256"}),
                };
                let mut v = json!({
                    "account": self.escrow_acct,
                    "versioning": "Enabled",
                    "object_lock": lock,
                    "public_access_block": {
                        "BlockPublicAcls": true,
                        "IgnorePublicAcls": true,
                        "BlockPublicPolicy": true,
                        "RestrictPublicBuckets": true,
                    },
                    "ownership": "BucketOwnerEnforced",
                    "encryption": encryption,
                    "used_by": jobs,
                });
                if !policy.is_empty() {
                    v["bucket_policy"] = Value::Array(policy);
                }
                (bucket, v)
            })
            .collect()
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.inv.operator_role_arn.is_none() {
            notes.push(format!(
                "[escrow] role_arn is not set: policies name the escrow account's root ({}) \
                 where they mean the operator; set role_arn to the identity that runs \
                 escrow-sync to narrow them",
                self.escrow_root()
            ));
        }
        if self.inv.external_id.is_some() {
            notes.push(format!(
                "the reader role's trust policy requires the external id: replace \
                 {EXTERNAL_ID_PLACEHOLDER} with [primary] external_id (it is never printed)"
            ));
        } else {
            notes.push(
                "no [primary] external_id: set one (a long random string) and the trust policy \
                 requires it"
                    .into(),
            );
        }
        if self.inv.dynamodb.iter().any(|j| j.native_export) {
            notes.push(
                "native-export jobs: DynamoDB writes the export as the primary's reader role, so \
                 the escrow export bucket policy (and the escrow key policy) grant it writes \
                 under the staging prefix only (staging_prefix, default \
                 <dest_prefix>.staging/): the one grant from escrow to primary, which `scan` \
                 mode does not need; escrow-sync checks each export there against DynamoDB's \
                 manifest and copies it into its generation with escrow credentials, and \
                 `audit` reports any grant that lets the primary write elsewhere"
                    .into(),
            );
        }
        for j in self.inv.ec2.iter().filter(|j| j.images) {
            notes.push(format!(
                "job {}: AWS has no condition key for the accounts an AMI is shared with \
                 (ec2:Add/userId is a key of snapshots only), so the reader role may share the \
                 job's AMIs with any account: escrow-sync shares them with the escrow account \
                 only; turn on block public access for AMIs in the primary \
                 (ec2:EnableImageBlockPublicAccess) so that no one can make them public",
                j.name
            ));
        }
        if !self.inv.s3.is_empty() {
            notes.push(
                "source objects encrypted with a customer key of the primary also need that \
                 key's policy to allow kms:Decrypt to the escrow operator (objects under the \
                 AWS-managed aws/s3 key cannot be read from another account)"
                    .into(),
            );
        }
        if !self.bucket_policies().is_empty() {
            notes.push(
                "bucket_policies are statements to add to each source bucket's policy (the \
                 CloudFormation template sets them as the whole policy: merge existing \
                 statements first)"
                    .into(),
            );
        }
        notes
    }

    // ---- CloudFormation -------------------------------------------------

    fn primary_template(&self, p: &Policies) -> Value {
        let mut params = Map::new();
        let external = if self.inv.external_id.is_some() {
            params.insert(
                "ExternalId".into(),
                json!({
                    "Type": "String",
                    "NoEcho": true,
                    "MinLength": 1,
                    "Description": "[primary] external_id of the escrow-sync config",
                }),
            );
            json!({"Ref": "ExternalId"})
        } else {
            Value::Null
        };
        let mut resources = Map::new();
        resources.insert(
            "ReaderRole".into(),
            json!({
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": self.reader_name,
                    "Description": "escrow-sync reader: the escrow account reads and shares, never deletes",
                    "AssumeRolePolicyDocument": document(self.reader_trust(&external)),
                    "Policies": [{
                        "PolicyName": "escrow-sync-reader",
                        "PolicyDocument": p.primary.reader_role.permission_policy,
                    }],
                },
            }),
        );
        for (i, (bucket, statements)) in p.primary.bucket_policies.iter().enumerate() {
            resources.insert(
                format!("SourceBucketPolicy{i}"),
                json!({
                    "Type": "AWS::S3::BucketPolicy",
                    "Properties": {"Bucket": bucket, "PolicyDocument": {"Version": POLICY_VERSION, "Statement": statements}},
                }),
            );
        }
        let mut t = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": format!(
                "escrow-sync: what the primary account {} grants the escrow account {}",
                self.primary_acct, self.escrow_acct
            ),
            "Resources": resources,
            "Outputs": {"ReaderRoleArn": {"Value": {"Fn::GetAtt": ["ReaderRole", "Arn"]}}},
        });
        if !params.is_empty() {
            t["Parameters"] = Value::Object(params);
        }
        if !p.primary.kms_key_policies.is_empty() {
            t["Metadata"] = json!({"EscrowSync": {
                "KmsKeyPolicyStatements": p.primary.kms_key_policies,
                "Note": "add these statements to each key's policy (CloudFormation cannot change an existing key's policy)",
            }});
        }
        t
    }

    fn escrow_template(&self, p: &Policies) -> Value {
        let mut resources = Map::new();
        resources.insert(
            "OperatorRole".into(),
            json!({
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": self.operator_name,
                    "Description": "escrow-sync operator: pulls from the primary into the escrow",
                    // Escrow principals only: the escrow account decides who runs escrow-sync.
                    "AssumeRolePolicyDocument": document(vec![json!({
                        "Sid": "EscrowAccountOnly",
                        "Effect": "Allow",
                        "Principal": {"AWS": self.escrow_root()},
                        "Action": "sts:AssumeRole",
                    })]),
                    "Policies": [{
                        "PolicyName": "escrow-sync-operator",
                        "PolicyDocument": p.escrow.operator_policy,
                    }, {
                        "PolicyName": "escrow-sync-audit",
                        "PolicyDocument": p.escrow.audit_policy,
                    }],
                },
            }),
        );
        if let Some(batch) = &p.escrow.batch_role {
            resources.insert(
                "BatchRole".into(),
                json!({
                    "Type": "AWS::IAM::Role",
                    "Properties": {
                        "RoleName": batch.name,
                        "Description": "escrow-sync: S3 Batch Operations copies into the escrow; no delete, no write in the primary",
                        "AssumeRolePolicyDocument": batch.trust_policy,
                        "Policies": [{
                            "PolicyName": "escrow-sync-batch",
                            "PolicyDocument": batch.permission_policy,
                        }],
                    },
                }),
            );
        }
        let mut metadata = Map::new();
        let mut key_ref = None;
        if let (Some(k), Some(policy)) = (&self.escrow_key, &p.escrow.kms_key_policy) {
            match k {
                KeyRef::Alias { alias, .. } => {
                    resources.insert(
                        "EscrowKey".into(),
                        json!({
                            "Type": "AWS::KMS::Key",
                            "DeletionPolicy": "Retain",
                            "UpdateReplacePolicy": "Retain",
                            "Properties": {
                                "Description": "escrow-sync: the escrow's own key for every copy",
                                "EnableKeyRotation": true,
                                "KeyPolicy": policy,
                            },
                        }),
                    );
                    resources.insert(
                        "EscrowKeyAlias".into(),
                        json!({
                            "Type": "AWS::KMS::Alias",
                            "Properties": {"AliasName": alias, "TargetKeyId": {"Ref": "EscrowKey"}},
                        }),
                    );
                    key_ref = Some(json!({"Fn::GetAtt": ["EscrowKey", "Arn"]}));
                }
                KeyRef::Arn(arn) => {
                    metadata.insert(
                        "KmsKeyPolicy".into(),
                        json!({"Key": arn, "Policy": policy, "Note": "the key exists: set this policy with kms:PutKeyPolicy"}),
                    );
                    key_ref = Some(json!(arn));
                }
            }
        }
        for (i, (bucket, s)) in p.escrow.buckets.iter().enumerate() {
            let encryption = match &key_ref {
                Some(k) => {
                    json!({"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": k}, "BucketKeyEnabled": true})
                }
                None => json!({"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}),
            };
            let mut props = json!({
                "BucketName": bucket,
                "VersioningConfiguration": {"Status": "Enabled"},
                "PublicAccessBlockConfiguration": s["public_access_block"],
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [encryption]},
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            });
            if s["object_lock"] == json!(true) {
                props["ObjectLockEnabled"] = json!(true);
            }
            let logical = format!("EscrowBucket{i}");
            resources.insert(
                logical.clone(),
                json!({
                    // Escrow data outlives the stack.
                    "Type": "AWS::S3::Bucket",
                    "DeletionPolicy": "Retain",
                    "UpdateReplacePolicy": "Retain",
                    "Properties": props,
                }),
            );
            if let Some(policy) = s.get("bucket_policy") {
                resources.insert(
                    format!("EscrowBucketPolicy{i}"),
                    json!({
                        "Type": "AWS::S3::BucketPolicy",
                        "Properties": {"Bucket": {"Ref": logical}, "PolicyDocument": {"Version": POLICY_VERSION, "Statement": policy}},
                    }),
                );
            }
        }
        // Recycle Bin: a deleted escrow snapshot or AMI copy stays
        // recoverable for recycle_bin_days (locked Region-level rules).
        for rule in crate::audit::recycle_bin::rules(self.inv) {
            resources.insert(
                rule.logical_id.into(),
                crate::audit::recycle_bin::template_resource(self.inv, &rule),
            );
        }
        let mut parameters = Map::new();
        if let Some(m) = &self.inv.metrics
            && !m.alarms.is_empty()
        {
            parameters.insert(
                "AlarmTopicArn".into(),
                json!({
                    "Type": "String",
                    "Description": "The SNS topic told when a job's newest verified copy is older than its max_age",
                }),
            );
            for a in &m.alarms {
                // Job names that fold to one logical id get a counter, so
                // no job is left without its alarm.
                let mut logical = sid("StaleAlarm", &a.job);
                let mut n = 2;
                while resources.contains_key(&logical) {
                    logical = format!("{}{n}", sid("StaleAlarm", &a.job));
                    n += 1;
                }
                resources.insert(
                    logical,
                    json!({
                        "Type": "AWS::CloudWatch::Alarm",
                        "Properties": {
                            "AlarmName": format!("escrow-sync-{}-stale", a.job),
                            "AlarmDescription": format!(
                                "escrow-sync job {}: no verified escrow copy for more than its max_age ({} s); run `escrow-sync status`",
                                a.job, a.max_age_seconds
                            ),
                            "Namespace": m.namespace,
                            "MetricName": "SecondsSinceLastVerifiedCopy",
                            "Dimensions": [{"Name": "Job", "Value": a.job}],
                            "Statistic": "Minimum",
                            // Hourly datapoints (run `status` hourly); three
                            // hours without one (or three stale ones) alarm,
                            // so one late schedule does not.
                            "Period": 3600,
                            "EvaluationPeriods": 3,
                            "DatapointsToAlarm": 3,
                            "Threshold": a.max_age_seconds,
                            "ComparisonOperator": "GreaterThanThreshold",
                            // No data means nothing ran (or nothing published):
                            // as alarming as a stale copy.
                            "TreatMissingData": "breaching",
                            "AlarmActions": [{"Ref": "AlarmTopicArn"}],
                            "OKActions": [{"Ref": "AlarmTopicArn"}],
                        },
                    }),
                );
            }
        }
        let mut outputs =
            json!({"OperatorRoleArn": {"Value": {"Fn::GetAtt": ["OperatorRole", "Arn"]}}});
        let mut conditions = Map::new();
        if !self.inv.rds.is_empty() || !self.inv.redshift.is_empty() {
            self.backup_vault(key_ref.as_ref(), &mut parameters, &mut conditions, &mut resources);
            outputs["BackupVaultArn"] = json!({
                "Condition": "BackupVaultEnabled",
                "Value": {"Fn::GetAtt": ["EscrowBackupVault", "BackupVaultArn"]},
            });
        }
        let mut t = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": format!(
                "escrow-sync: the escrow account {} (operator role, buckets, key); deploy before the primary's",
                self.escrow_acct
            ),
            "Resources": resources,
            "Outputs": outputs,
        });
        if !parameters.is_empty() {
            t["Parameters"] = Value::Object(parameters);
        }
        if !conditions.is_empty() {
            t["Conditions"] = Value::Object(conditions);
        }
        if !metadata.is_empty() {
            t["Metadata"] = json!({"EscrowSync": metadata});
        }
        t
    }
}

/// The default Vault Lock `MaxRetentionDays` of the escrow's backup vault:
/// ten years. A recovery point the primary copies in with a longer (or no)
/// expiry is refused, so planted recovery points cost escrow at most this.
const MAX_VAULT_RETENTION_DAYS: u32 = 3650;

impl Ctx<'_> {
    /// RDS and Redshift copies have no native lock: an AWS Backup vault
    /// under Vault Lock in escrow, off unless `EnableBackupVault` is
    /// `true`. Recovery points in it (copied in by the primary's AWS Backup
    /// plans, `CopyIntoBackupVault`, the one thing the vault lets the
    /// primary do) cannot be deleted before `BackupVaultMinRetentionDays`,
    /// by anyone once the lock's grace period (`ChangeableForDays`) is
    /// over. `BackupVaultMaxRetentionDays` (default 3650, ten years) bounds
    /// what the primary can plant: the vault refuses a copy whose lifecycle
    /// keeps it longer (or forever), so whatever the primary copies in
    /// expires within that many days and escrow pays for it no longer.
    fn backup_vault(
        &self,
        key: Option<&Value>,
        parameters: &mut Map<String, Value>,
        conditions: &mut Map<String, Value>,
        resources: &mut Map<String, Value>,
    ) {
        parameters.insert(
            "EnableBackupVault".into(),
            json!({
                "Type": "String",
                "AllowedValues": ["true", "false"],
                "Default": "false",
                "Description": "true: an AWS Backup vault under Vault Lock (compliance mode) for RDS, Aurora and Redshift recovery points, which have no lock of their own",
            }),
        );
        parameters.insert(
            "BackupVaultMinRetentionDays".into(),
            json!({
                "Type": "Number",
                "Default": 35,
                "MinValue": 1,
                "Description": "Vault Lock: no recovery point in the vault can be deleted before this many days",
            }),
        );
        parameters.insert(
            "BackupVaultMaxRetentionDays".into(),
            json!({
                "Type": "Number",
                "Default": MAX_VAULT_RETENTION_DAYS,
                "MinValue": 1,
                "MaxValue": 36500,
                "Description": "Vault Lock: a recovery point whose lifecycle keeps it longer than this many days (or forever) cannot be copied in, so what the primary copies in expires within it; at least BackupVaultMinRetentionDays",
            }),
        );
        parameters.insert(
            "BackupVaultChangeableForDays".into(),
            json!({
                "Type": "Number",
                "Default": 3,
                "MinValue": 3,
                "Description": "Vault Lock grace period: after it the lock can be removed by no one (compliance mode)",
            }),
        );
        conditions.insert(
            "BackupVaultEnabled".into(),
            json!({"Fn::Equals": [{"Ref": "EnableBackupVault"}, "true"]}),
        );
        let mut props = json!({
            "BackupVaultName": "escrow-sync-vault",
            "LockConfiguration": {
                "MinRetentionDays": {"Ref": "BackupVaultMinRetentionDays"},
                "MaxRetentionDays": {"Ref": "BackupVaultMaxRetentionDays"},
                "ChangeableForDays": {"Ref": "BackupVaultChangeableForDays"},
            },
            // The primary may copy recovery points in, nothing else.
            "AccessPolicy": document(vec![json!({
                "Sid": "PrimaryCopiesInOnly",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{}:root", self.primary_acct)},
                "Action": "backup:CopyIntoBackupVault",
                "Resource": "*",
            })]),
        });
        if let Some(k) = key {
            props["EncryptionKeyArn"] = k.clone();
        }
        resources.insert(
            "EscrowBackupVault".into(),
            json!({
                "Type": "AWS::Backup::BackupVault",
                "Condition": "BackupVaultEnabled",
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
                "Properties": props,
            }),
        );
    }
}

/// How a key is shown in bucket settings.
fn key_display(k: &KeyRef) -> String {
    match k {
        KeyRef::Arn(a) => a.clone(),
        KeyRef::Alias { alias, .. } => alias.clone(),
    }
}

/// `aws:ResourceTag/<k>` equal to each selecting tag.
fn tag_condition(tags: &BTreeMap<String, String>) -> Value {
    tag_condition_with(tags, "aws:ResourceTag/")
}

/// `<prefix><k>` equal to each selecting tag.
fn tag_condition_with(tags: &BTreeMap<String, String>, prefix: &str) -> Value {
    if tags.is_empty() {
        return json!({});
    }
    let m: Map<String, Value> =
        tags.iter().map(|(k, v)| (format!("{prefix}{k}"), json!(v))).collect();
    json!({"StringEquals": m})
}

/// Two Condition blocks as one (operators merged key by key).
fn merge(a: Value, b: Value) -> Value {
    let mut out = a.as_object().cloned().unwrap_or_default();
    for (op, keys) in b.as_object().cloned().unwrap_or_default() {
        let entry = out.entry(op).or_insert_with(|| json!({}));
        if let (Some(e), Some(k)) = (entry.as_object_mut(), keys.as_object()) {
            for (key, v) in k {
                e.insert(key.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_role_is_trusted_by_batch_operations_and_never_deletes_or_writes_the_primary() {
        let role_arn = "arn:aws:iam::222222222222:role/escrow-batch";
        let inv = Inventory {
            region: "us-east-1".into(),
            escrow_account: "222222222222".into(),
            primary_account: "111111111111".into(),
            escrow_kms_key: Some("arn:aws:kms:us-east-1:222222222222:key/k".into()),
            s3: vec![crate::inventory::S3Grant {
                name: "bulk".into(),
                source_bucket: "prod-bulk".into(),
                dest_bucket: "escrow-bulk".into(),
                object_lock: true,
                ..Default::default()
            }],
            batch: Some(crate::inventory::BatchGrant {
                role_arn: role_arn.into(),
                jobs: vec!["bulk".into()],
                files: BTreeMap::from([(
                    "escrow-batch".into(),
                    BTreeSet::from(["escrow-sync/batch/".to_string()]),
                )]),
            }),
            ..Default::default()
        };
        let p = generate(&inv);
        let role = p.escrow.batch_role.expect("a batch role");
        assert_eq!(role.arn, role_arn);
        let trust = &role.trust_policy["Statement"][0];
        assert_eq!(trust["Principal"]["Service"], "batchoperations.s3.amazonaws.com");
        assert_eq!(trust["Condition"]["StringEquals"]["aws:SourceAccount"], "222222222222");
        assert_eq!(
            trust["Condition"]["ArnLike"]["aws:SourceArn"],
            "arn:aws:s3:us-east-1:222222222222:job/*"
        );
        let key_use = role.permission_policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "BatchUseEscrowKey")
            .expect("the batch role uses the escrow key");
        assert_eq!(
            key_use["Condition"]["StringEquals"]["kms:ViaService"],
            "s3.us-east-1.amazonaws.com"
        );
        let encrypts = p.escrow.kms_key_policy.as_ref().expect("a key policy")["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == "BatchRoleEncryptsCopies")
            .cloned()
            .expect("the key policy lets the batch role encrypt");
        assert_eq!(
            encrypts["Condition"]["StringEquals"]["kms:ViaService"],
            "s3.us-east-1.amazonaws.com"
        );
        let perms = role.permission_policy.to_string();
        assert!(!perms.contains("Delete"), "no delete anywhere: {perms}");
        for s in role.permission_policy["Statement"].as_array().unwrap() {
            let text = s.to_string();
            if text.contains("prod-bulk") {
                assert!(!text.contains("Put"), "no write on the primary: {text}");
            }
        }
        assert!(perms.contains("s3:PutObjectRetention"), "{perms}");
        assert!(perms.contains("arn:aws:s3:::escrow-batch/escrow-sync/batch/*"), "{perms}");
        // The operator creates and describes jobs and passes only this role,
        // only to S3 Batch Operations.
        let op = p.escrow.operator_policy.to_string();
        assert!(op.contains("s3:CreateJob") && op.contains("s3:DescribeJob"), "{op}");
        let create = p.escrow.operator_policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Action"] == "s3:CreateJob")
            .unwrap();
        assert_eq!(
            create["Condition"]["StringEquals"]["s3:RequestJobOperation"], "S3PutObjectCopy",
            "copy jobs only"
        );
        let pass = p.escrow.operator_policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Action"] == "iam:PassRole")
            .unwrap();
        assert_eq!(pass["Resource"], role_arn);
        assert_eq!(
            pass["Condition"]["StringEquals"]["iam:PassedToService"],
            "batchoperations.s3.amazonaws.com"
        );
        // The primary's bucket policy lets the batch role read, nothing more.
        let bp = p.primary.bucket_policies["prod-bulk"].to_string();
        assert!(bp.contains(role_arn) && !bp.contains("Put"), "{bp}");
        let (_, escrow) = cloudformation(&inv);
        let template = &escrow["Resources"]["BatchRole"];
        assert_eq!(template["Type"], "AWS::IAM::Role");
        assert_eq!(template["Properties"]["RoleName"], "escrow-batch");
        // Without a batch engine: no role, no CreateJob.
        let without = Inventory { batch: None, ..inv };
        let p = generate(&without);
        assert!(p.escrow.batch_role.is_none());
        assert!(!p.escrow.operator_policy.to_string().contains("CreateJob"));
    }

    #[test]
    fn metrics_grant_put_metric_data_on_the_namespace_and_an_alarm_per_job_with_a_max_age() {
        let inv = Inventory {
            region: "us-east-1".into(),
            escrow_account: "222222222222".into(),
            primary_account: "111111111111".into(),
            metrics: Some(crate::inventory::MetricsGrant {
                namespace: "EscrowSync".into(),
                alarms: vec![crate::inventory::JobAlarm {
                    job: "prod-assets".into(),
                    max_age_seconds: 26 * 3600,
                }],
            }),
            ..Default::default()
        };
        let p = generate(&inv);
        let statements = p.escrow.operator_policy["Statement"].as_array().unwrap();
        let put: Vec<_> =
            statements.iter().filter(|s| s["Action"] == "cloudwatch:PutMetricData").collect();
        assert_eq!(put.len(), 1, "{statements:#?}");
        assert_eq!(put[0]["Condition"]["StringEquals"]["cloudwatch:namespace"], "EscrowSync");
        let cloudwatch: Vec<_> =
            statements.iter().filter(|s| s["Action"].to_string().contains("cloudwatch:")).collect();
        assert_eq!(cloudwatch.len(), 1, "exactly PutMetricData, nothing else of CloudWatch");
        let (_, escrow) = cloudformation(&inv);
        let alarm = &escrow["Resources"]["StaleAlarmProdAssets"];
        assert_eq!(alarm["Type"], "AWS::CloudWatch::Alarm");
        let props = &alarm["Properties"];
        assert_eq!(props["MetricName"], "SecondsSinceLastVerifiedCopy");
        assert_eq!(props["Namespace"], "EscrowSync");
        assert_eq!(props["Threshold"], 26 * 3600);
        assert_eq!(props["Dimensions"][0], json!({"Name": "Job", "Value": "prod-assets"}));
        assert_eq!(props["TreatMissingData"], "breaching");
        assert_eq!(props["AlarmActions"][0], json!({"Ref": "AlarmTopicArn"}));
        assert_eq!(escrow["Parameters"]["AlarmTopicArn"]["Type"], "String");

        let without = Inventory { metrics: None, ..inv };
        let p = generate(&without);
        assert!(!p.escrow.operator_policy.to_string().contains("cloudwatch"));
        assert!(cloudformation(&without).1.get("Parameters").is_none());
    }

    #[test]
    fn a_native_incremental_table_job_lets_the_primary_write_only_its_staging_prefix() {
        let inv = Inventory {
            region: "us-east-1".into(),
            escrow_account: "222222222222".into(),
            primary_account: "111111111111".into(),
            dynamodb: vec![crate::inventory::TableGrant {
                name: "orders".into(),
                source_table: "orders".into(),
                dest_table: Some("escrow-orders".into()),
                native_export: true,
                staging_prefix: "dynamodb-history/.staging/".into(),
                checkpoint_table: "cp".into(),
                history_bucket: Some("hist".into()),
                history_prefix: "dynamodb-history/".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let p = generate(&inv);
        let staged = "arn:aws:s3:::hist/dynamodb-history/.staging/orders/*";
        let reader = p.primary.reader_role.permission_policy.to_string();
        assert!(reader.contains("dynamodb:ExportTableToPointInTime"), "{reader}");
        assert!(reader.contains(staged), "{reader}");
        let bucket = p.escrow.buckets["hist"].to_string();
        assert!(bucket.contains("PrimaryReaderNativeExportOrders"), "{bucket}");
        assert!(bucket.contains(staged), "{bucket}");
        // Nothing of the history itself is the primary's to write.
        assert!(!bucket.contains("arn:aws:s3:::hist/dynamodb-history/escrow-orders"), "{bucket}");
        assert!(!reader.contains("arn:aws:s3:::hist/dynamodb-history/escrow-orders"), "{reader}");
    }

    #[test]
    fn sids_are_alphanumeric() {
        assert_eq!(sid("ReadList", "s3:prod-assets"), "ReadListS3ProdAssets");
        assert_eq!(sid("X", ""), "X");
    }

    #[test]
    fn keys_are_scoped_by_arn_or_alias() {
        let k = KeyRef::parse("alias/escrow", "us-east-1", "222222222222");
        let (res, cond) = k.scope("us-east-1");
        assert_eq!(res, "arn:aws:kms:us-east-1:222222222222:key/*");
        assert_eq!(cond["ForAnyValue:StringEquals"]["kms:ResourceAliases"], "alias/escrow");
        let k = KeyRef::parse("1234abcd", "us-east-1", "222222222222");
        assert_eq!(k.scope("us-east-1").0, "arn:aws:kms:us-east-1:222222222222:key/1234abcd");
        let arn = "arn:aws:kms:eu-west-1:222222222222:key/k";
        assert_eq!(KeyRef::parse(arn, "us-east-1", "x").scope("us-east-1").0, arn);
        let k = KeyRef::parse("arn:aws:kms:us-east-1:222222222222:alias/e", "us-east-1", "x");
        assert!(
            matches!(k, KeyRef::Alias { ref alias, ref account } if alias == "alias/e" && account == "222222222222")
        );
    }

    #[test]
    fn conditions_merge_key_by_key() {
        let m = merge(
            json!({"StringEquals": {"a": "1"}}),
            json!({"StringEquals": {"b": "2"}, "Null": {"c": "false"}}),
        );
        assert_eq!(m, json!({"StringEquals": {"a": "1", "b": "2"}, "Null": {"c": "false"}}));
    }
}
