//! The isolation audit of the escrow account (issue 6, item 2): the ways an
//! escrow quietly stops being one, each reported as a [`Finding`] with a
//! severity, the resource and the fix.
//!
//! [`Auditor::run`] checks, with escrow credentials (every check is
//! [`Severity::High`] unless said otherwise):
//!
//! - **IAM trust** (`iam.trust.foreign-principal`): every escrow role whose
//!   trust policy admits the primary account or any principal outside the
//!   escrow account (ListRoles; AWS service principals are fine).
//! - **Grants to other accounts**: the escrow bucket policies
//!   (`s3.bucket-policy.foreign-principal`) and ACLs
//!   (`s3.bucket-acl.foreign-grantee`: another canonical user, everyone,
//!   any AWS account, an e-mail address), the escrow key's policy and
//!   grants (`kms.key-policy.foreign-principal`, `kms.grant.foreign-principal`),
//!   and escrow-owned EBS snapshots, AMIs, RDS DB / cluster snapshots and
//!   Redshift snapshots shared with another account (`ec2.snapshot.shared`,
//!   `ec2.image.shared`, `rds.snapshot.shared`, `rds.cluster-snapshot.shared`,
//!   `redshift.snapshot.shared`; checked when the config has jobs of that
//!   kind, for every manual snapshot / image the escrow owns).
//! - **Escrow buckets** (the buckets the jobs write and the manifest bucket):
//!   missing (`s3.bucket.missing`), without versioning (`s3.bucket.versioning`),
//!   without Object Lock where a job asks for it (`s3.bucket.object-lock`),
//!   without all four public access block flags
//!   (`s3.bucket.public-access-block`), or with an enabled lifecycle rule
//!   that expires current or noncurrent versions under an escrow prefix or
//!   by tag (`s3.bucket.lifecycle-expiry`), or replicating to another account
//!   or a bucket escrow does not own (`s3.bucket.replication-out`).
//! - **Escrow tables** (table jobs' escrow tables, the checkpoint tables):
//!   missing (`dynamodb.table.missing`; a checkpoint table not created yet is
//!   fine), without point-in-time recovery (`dynamodb.table.pitr`) or
//!   deletion protection (`dynamodb.table.deletion-protection`), or with TTL
//!   (`dynamodb.table.ttl`).
//! - **Snapshot copies** (see `copies`): without the lock their job asks for
//!   (`ec2.snapshot.unlocked`, `ec2.image.deregistration-unprotected`), or
//!   only a governance lock when it asks for compliance
//!   (`ec2.snapshot.weak-lock`), tagged with a job the config does not have
//!   (`ec2.snapshot.unclaimed`, `ec2.image.unclaimed`), or
//!   under an AWS-managed key ([`Severity::Medium`]:
//!   `ec2.snapshot.aws-managed-key`, `rds.snapshot.aws-managed-key`,
//!   `redshift.snapshot.aws-managed-key`).
//! - **The escrow key** (`[escrow] kms_key_id`; aliases resolve with
//!   DescribeKey): missing, in another account, disabled, pending deletion
//!   (`kms.key.missing`, `kms.key.foreign-account`, `kms.key.disabled`,
//!   `kms.key.pending-deletion`, `kms.key.unusable`).
//! - **Recycle Bin** (with `[[ec2]]` jobs; [`Severity::Medium`],
//!   `rbin.rule.missing`): no locked Region-level retention rule keeping
//!   deleted EBS snapshots (and, with AMI jobs, AMIs) at least `[escrow]
//!   recycle_bin_days`, so one deletion of an escrow copy is final.
//! - **CloudTrail**: no trail logging in the escrow account's region
//!   (`cloudtrail.not-logging`, naming each stopped trail); a stopped trail
//!   beside one that logs is [`Severity::Low`] (`cloudtrail.trail.stopped`).
//! - **Isolation**: escrow and primary the same account
//!   (`accounts.same-account`); with the primary session
//!   ([`Auditor::with_primary`]), read-only calls against escrow resources
//!   (`s3:GetBucketVersioning` and `s3:ListObjectsV2` on each escrow
//!   bucket, `dynamodb:DescribeTable` on each escrow table by ARN,
//!   `kms:DescribeKey` on the escrow key, `sts:AssumeRole` on the escrow
//!   operator role): any success is a finding (`isolation.primary-access`).
//!   A primary that could not be reached is [`Severity::Medium`]
//!   (`isolation.primary-unreachable`).
//!
//! A resource that does not exist is a finding, not an error. An audit call
//! refused with access denied is a [`Severity::Medium`] finding of its own
//! (`audit.access-denied`, "could not check ..."); any other failure (the
//! SDK's retries spent) ends the audit with an [`Error`].
//!
//! ```no_run
//! # async fn demo(escrow: escrow_sync_aws::Session, primary: escrow_sync_aws::Session,
//! #     inventory: escrow_sync_governance::Inventory) -> escrow_sync_core::Result<()> {
//! use escrow_sync_governance::audit::{Auditor, Severity};
//!
//! let findings = Auditor::from_session(&escrow, inventory).with_primary(&primary).run().await?;
//! for f in &findings {
//!     println!("{} {}: {} (fix: {})", f.severity, f.resource, f.problem, f.fix);
//! }
//! let failed = findings.iter().any(|f| f.severity >= Severity::High);
//! # let _ = failed; Ok(()) }
//! ```

mod checks;
mod copies;
mod hardening;
mod principals;
pub(crate) mod recycle_bin;

use std::fmt;

use serde::{Deserialize, Serialize};

use escrow_sync_aws::Session;
use escrow_sync_core::{Error, ErrorKind, Result};

use crate::Inventory;

/// How much a finding matters, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing.
    Low,
    /// Weakens the escrow, or something could not be checked.
    Medium,
    /// The escrow can stop being one.
    High,
}

impl Severity {
    /// `low`, `medium` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

impl fmt::Display for Severity {
    /// `LOW`, `MEDIUM` or `HIGH` (as text reports print it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.as_str().to_ascii_uppercase())
    }
}

/// One way the escrow account falls short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// A stable id of the check (`iam.trust.foreign-principal`).
    pub check: String,
    /// The resource: `s3://bucket`, `dynamodb://table`, a role, key or
    /// trail ARN, a snapshot id, `account 222222222222`.
    pub resource: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl Finding {
    /// A finding of `severity`.
    pub fn new(
        severity: Severity,
        check: impl Into<String>,
        resource: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            check: check.into(),
            resource: resource.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A high-severity finding.
    pub fn high(
        check: impl Into<String>,
        resource: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(Severity::High, check, resource, problem, fix)
    }
}

/// Whether any finding is at or above `level` (the CLI's `--fail-on`).
pub fn fails(findings: &[Finding], level: Severity) -> bool {
    findings.iter().any(|f| f.severity >= level)
}

/// The SDK clients of the escrow account; a check runs only when its
/// client is set.
#[derive(Debug, Clone, Default)]
struct EscrowClients {
    iam: Option<aws_sdk_iam::Client>,
    s3: Option<aws_sdk_s3::Client>,
    kms: Option<aws_sdk_kms::Client>,
    dynamodb: Option<aws_sdk_dynamodb::Client>,
    ec2: Option<aws_sdk_ec2::Client>,
    rds: Option<aws_sdk_rds::Client>,
    redshift: Option<aws_sdk_redshift::Client>,
    cloudtrail: Option<aws_sdk_cloudtrail::Client>,
    rbin: Option<aws_sdk_rbin::Client>,
    sts: Option<aws_sdk_sts::Client>,
}

/// The primary's clients, for the isolation probes.
#[derive(Debug, Clone)]
struct PrimaryClients {
    account: String,
    s3: aws_sdk_s3::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    kms: aws_sdk_kms::Client,
    sts: aws_sdk_sts::Client,
}

/// Audits an escrow account against an [`Inventory`].
///
/// Built from an escrow [`Session`] ([`Auditor::from_session`]: every
/// check), or from nothing plus the clients of the checks wanted
/// ([`Auditor::new`] and the `with_*_client` setters: embedders and
/// tests). Changes nothing.
#[derive(Debug, Clone)]
pub struct Auditor {
    inventory: Inventory,
    escrow: EscrowClients,
    escrow_region: String,
    primary: Option<PrimaryClients>,
    primary_unreachable: Option<String>,
    concurrency: usize,
}

/// An S3 client for `session` (path-style on an overridden endpoint, as
/// escrow-sync builds them).
fn s3_client(session: &Session) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(session.sdk_config())
        .force_path_style(session.endpoint_overridden())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

impl Auditor {
    /// An auditor of `inventory` with no client: only the account check
    /// runs until clients are set.
    pub fn new(inventory: Inventory) -> Self {
        let escrow_region = inventory.region.clone();
        Auditor {
            inventory,
            escrow: EscrowClients::default(),
            escrow_region,
            primary: None,
            primary_unreachable: None,
            concurrency: 8,
        }
    }

    /// An auditor with every escrow check, on `escrow`'s credentials.
    pub fn from_session(escrow: &Session, inventory: Inventory) -> Self {
        let conf = escrow.sdk_config();
        let mut a = Self::new(inventory)
            .with_iam_client(aws_sdk_iam::Client::new(conf))
            .with_s3_client(s3_client(escrow))
            .with_kms_client(aws_sdk_kms::Client::new(conf))
            .with_dynamodb_client(aws_sdk_dynamodb::Client::new(conf))
            .with_ec2_client(aws_sdk_ec2::Client::new(conf))
            .with_rds_client(aws_sdk_rds::Client::new(conf))
            .with_redshift_client(aws_sdk_redshift::Client::new(conf))
            .with_cloudtrail_client(aws_sdk_cloudtrail::Client::new(conf))
            .with_rbin_client(aws_sdk_rbin::Client::new(conf))
            // The runner: the identity whose credentials assumed the
            // escrow role (or the session's own).
            .with_sts_client(aws_sdk_sts::Client::new(escrow.runner_config()));
        if let Some(region) = conf.region() {
            a.escrow_region = region.to_string();
        }
        a
    }

    /// Probes escrow resources with the primary's credentials (the
    /// isolation check), and compares the two accounts.
    pub fn with_primary(mut self, primary: &Session) -> Self {
        let conf = primary.sdk_config();
        self.primary = Some(PrimaryClients {
            account: primary.account_id().to_string(),
            s3: s3_client(primary),
            dynamodb: aws_sdk_dynamodb::Client::new(conf),
            kms: aws_sdk_kms::Client::new(conf),
            sts: aws_sdk_sts::Client::new(conf),
        });
        self
    }

    /// Probes with these primary clients (embedders, tests); `account` is
    /// the account they act in.
    pub fn with_primary_clients(
        mut self,
        account: impl Into<String>,
        s3: aws_sdk_s3::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        kms: aws_sdk_kms::Client,
        sts: aws_sdk_sts::Client,
    ) -> Self {
        self.primary = Some(PrimaryClients { account: account.into(), s3, dynamodb, kms, sts });
        self
    }

    /// Records that the primary could not be reached (`reason`): the
    /// isolation probes cannot run, which is a finding of its own.
    pub fn with_primary_unreachable(mut self, reason: impl Into<String>) -> Self {
        self.primary_unreachable = Some(reason.into());
        self
    }

    /// Checks IAM role trust policies with this client.
    pub fn with_iam_client(mut self, client: aws_sdk_iam::Client) -> Self {
        self.escrow.iam = Some(client);
        self
    }

    /// Checks the escrow buckets with this client.
    pub fn with_s3_client(mut self, client: aws_sdk_s3::Client) -> Self {
        self.escrow.s3 = Some(client);
        self
    }

    /// Checks the escrow key with this client.
    pub fn with_kms_client(mut self, client: aws_sdk_kms::Client) -> Self {
        self.escrow.kms = Some(client);
        self
    }

    /// Checks the escrow tables with this client.
    pub fn with_dynamodb_client(mut self, client: aws_sdk_dynamodb::Client) -> Self {
        self.escrow.dynamodb = Some(client);
        self
    }

    /// Checks escrow EBS snapshot and AMI shares with this client.
    pub fn with_ec2_client(mut self, client: aws_sdk_ec2::Client) -> Self {
        self.escrow.ec2 = Some(client);
        self
    }

    /// Checks escrow RDS snapshot shares with this client.
    pub fn with_rds_client(mut self, client: aws_sdk_rds::Client) -> Self {
        self.escrow.rds = Some(client);
        self
    }

    /// Checks escrow Redshift snapshot shares with this client.
    pub fn with_redshift_client(mut self, client: aws_sdk_redshift::Client) -> Self {
        self.escrow.redshift = Some(client);
        self
    }

    /// Checks CloudTrail with this client (trails of its region).
    pub fn with_cloudtrail_client(mut self, client: aws_sdk_cloudtrail::Client) -> Self {
        self.escrow.cloudtrail = Some(client);
        self
    }

    /// Checks the escrow's Recycle Bin rules with this client (with
    /// `[[ec2]]` jobs).
    pub fn with_rbin_client(mut self, client: aws_sdk_rbin::Client) -> Self {
        self.escrow.rbin = Some(client);
        self
    }

    /// Tells the runner (the identity running the audit, by
    /// GetCallerIdentity) from other IAM users with this client; without it
    /// every IAM user is reported.
    pub fn with_sts_client(mut self, client: aws_sdk_sts::Client) -> Self {
        self.escrow.sts = Some(client);
        self
    }

    /// Attribute lookups in flight at once (snapshot and image shares);
    /// default 8, at least 1.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Runs every check that has its client; returns the findings, highest
    /// severity first (then by check and resource). Changes nothing.
    pub async fn run(&self) -> Result<Vec<Finding>> {
        let mut f = Findings::default();
        self.check_accounts(&mut f);
        if let Some(iam) = &self.escrow.iam {
            checks::iam_trust(self, iam, &mut f).await?;
            hardening::iam_users(self, iam, &mut f).await?;
        }
        // The escrow key as KMS resolves it, once for buckets and tables.
        let key = match (&self.escrow.s3, &self.escrow.dynamodb) {
            (None, None) => None,
            _ => hardening::escrow_key(self).await,
        };
        if let Some(s3) = &self.escrow.s3 {
            checks::buckets(self, s3, key.as_deref(), &mut f).await?;
        }
        if let Some(ddb) = &self.escrow.dynamodb {
            checks::tables(self, ddb, key.as_deref(), &mut f).await?;
        }
        if let Some(kms) = &self.escrow.kms {
            checks::key(self, kms, &mut f).await?;
        }
        if let Some(ec2) = &self.escrow.ec2 {
            checks::ec2_shares(self, ec2, &mut f).await?;
        }
        if let Some(rds) = &self.escrow.rds {
            checks::rds_shares(self, rds, &mut f).await?;
        }
        if let Some(redshift) = &self.escrow.redshift {
            checks::redshift_shares(self, redshift, &mut f).await?;
        }
        copies::check(self, &mut f).await?;
        if let Some(ct) = &self.escrow.cloudtrail {
            checks::trails(self, ct, &mut f).await?;
        }
        if let Some(rbin) = &self.escrow.rbin {
            recycle_bin::check(self, rbin, &mut f).await?;
        }
        if let Some(primary) = &self.primary {
            checks::isolation(self, primary, &mut f).await;
        }
        let mut out = f.0;
        out.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.check.cmp(&b.check))
                .then_with(|| a.resource.cmp(&b.resource))
        });
        out.dedup();
        Ok(out)
    }

    fn check_accounts(&self, f: &mut Findings) {
        let inv = &self.inventory;
        let escrow = &inv.escrow_account;
        let mut same = !escrow.is_empty() && *escrow == inv.primary_account;
        if let Some(p) = &self.primary {
            same |= !p.account.is_empty() && p.account == *escrow;
        }
        if same {
            f.push(Finding::high(
                "accounts.same-account",
                format!("account {escrow}"),
                format!(
                    "escrow and primary are the same account {escrow}: one stolen login reaches \
                     both the data and its escrow"
                ),
                "keep the escrow in a separate AWS account run by different people, and point \
                 [escrow] at it (allow_same_account is for labs only)",
            ));
        }
        if let Some(reason) = &self.primary_unreachable {
            f.push(Finding::new(
                Severity::Medium,
                "isolation.primary-unreachable",
                format!("account {}", inv.primary_account),
                format!(
                    "could not check whether the primary's credentials reach the escrow: the \
                     primary could not be reached ({reason})"
                ),
                "fix [primary] role_arn / external_id (or the reader role's trust policy) and \
                 audit again",
            ));
        }
    }
}

/// The findings collected so far.
#[derive(Debug, Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, f: Finding) {
        self.0.push(f);
    }

    /// An audit call failed: access denied becomes a medium "could not
    /// check" finding; anything else ends the audit.
    fn could_not(&mut self, err: Error, what: &str) -> Result<()> {
        if err.kind() != ErrorKind::AccessDenied {
            return Err(err);
        }
        let (operation, resource) = match &err {
            Error::AccessDenied { operation, resource, .. } => {
                (operation.clone(), resource.clone())
            }
            _ => (String::new(), String::new()),
        };
        self.push(Finding::new(
            Severity::Medium,
            "audit.access-denied",
            resource.clone(),
            format!("could not check {what}: {}", err.chain()),
            format!(
                "allow {operation} on {resource} to the identity that runs the audit (the escrow \
                 operator's policy from `escrow-sync policy` has it)"
            ),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_print() {
        assert!(Severity::High > Severity::Medium && Severity::Medium > Severity::Low);
        assert_eq!(Severity::High.to_string(), "HIGH");
        assert_eq!(format!("{:<6}|", Severity::Low), "LOW   |");
        assert_eq!(serde_json::to_string(&Severity::Medium).unwrap(), "\"medium\"");
    }

    #[test]
    fn findings_serialise_with_the_documented_fields() {
        let f = Finding::high("s3.bucket.versioning", "s3://b", "not versioned", "enable it");
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"severity": "high", "check": "s3.bucket.versioning",
                "resource": "s3://b", "problem": "not versioned", "fix": "enable it"})
        );
        assert!(fails(std::slice::from_ref(&f), Severity::High));
        let low = Finding::new(Severity::Low, "x", "r", "p", "f");
        assert!(!fails(std::slice::from_ref(&low), Severity::Medium));
        assert!(fails(&[low], Severity::Low));
        assert!(!fails(&[], Severity::Low));
    }

    #[tokio::test]
    async fn same_account_and_unreachable_primary_are_findings() {
        let inv = Inventory {
            escrow_account: "111111111111".into(),
            primary_account: "111111111111".into(),
            ..Default::default()
        };
        let found = Auditor::new(inv).with_primary_unreachable("AccessDenied").run().await.unwrap();
        let checks: Vec<_> = found.iter().map(|f| (f.severity, f.check.as_str())).collect();
        assert_eq!(
            checks,
            [
                (Severity::High, "accounts.same-account"),
                (Severity::Medium, "isolation.primary-unreachable")
            ]
        );
        assert_eq!(found[0].resource, "account 111111111111");
        assert!(found[1].problem.contains("AccessDenied"), "{found:?}");
    }

    #[test]
    fn only_access_denied_becomes_a_finding() {
        let mut f = Findings::default();
        let denied = Error::new(ErrorKind::AccessDenied, "s3:GetBucketPolicy", "s3://b", "no");
        f.could_not(denied, "the bucket policy of s3://b").unwrap();
        assert_eq!(f.0.len(), 1);
        assert_eq!(f.0[0].severity, Severity::Medium);
        assert_eq!(f.0[0].resource, "s3://b");
        assert!(f.0[0].problem.starts_with("could not check the bucket policy of s3://b"));
        assert!(f.0[0].fix.contains("s3:GetBucketPolicy"));
        let other = Error::new(ErrorKind::Transient, "s3:GetBucketPolicy", "s3://b", "503");
        assert!(f.could_not(other, "x").is_err());
    }
}
