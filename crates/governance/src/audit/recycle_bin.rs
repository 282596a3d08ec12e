//! Recycle Bin (issue 17, point 3): whether a deleted escrow EBS snapshot
//! or AMI copy can still be recovered.
//!
//! An escrow with `[[ec2]]` jobs needs, in its region, a Region-level
//! retention rule per resource type it holds (`EBS_SNAPSHOT` always: AMIs
//! are backed by snapshots; `EC2_IMAGE` when a job copies AMIs) that is
//! locked and keeps deleted resources at least `[escrow] recycle_bin_days`.
//! AWS locks Region-level rules only (a rule with resource tags or
//! exclusion tags cannot be locked, and an unlocked rule is deleted as
//! easily as the copies it keeps), so only such a rule counts. Its absence
//! is [`Severity::Medium`] (`rbin.rule.missing`): the copies exist, but one
//! deletion by a stolen escrow login is final.
//!
//! `escrow-sync policy --output cloudformation` emits these rules
//! ([`rules`]); the audit reads them with `rbin:ListRules` and
//! `rbin:GetRule`.

use serde_json::{Value, json};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::Result;

use super::{Auditor, Finding, Findings, Severity};
use crate::Inventory;

/// One retention rule the escrow needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// `EBS_SNAPSHOT` or `EC2_IMAGE`.
    pub resource_type: &'static str,
    /// What it keeps, for messages and the template's description.
    pub what: &'static str,
    /// The template's logical id.
    pub logical_id: &'static str,
}

/// The rules the inventory needs: none without `[[ec2]]` jobs.
pub(crate) fn rules(inv: &Inventory) -> Vec<Rule> {
    let mut out = Vec::new();
    if inv.ec2.is_empty() {
        return out;
    }
    out.push(Rule {
        resource_type: "EBS_SNAPSHOT",
        what: "EBS snapshots (AMI backing snapshots included)",
        logical_id: "RecycleBinEbsSnapshots",
    });
    if inv.ec2.iter().any(|j| j.images) {
        out.push(Rule { resource_type: "EC2_IMAGE", what: "AMIs", logical_id: "RecycleBinImages" });
    }
    out
}

/// How long a locked rule stays in force after someone unlocks it: the
/// retention itself, within AWS's 7 to 30 days.
pub(crate) fn unlock_delay_days(inv: &Inventory) -> u32 {
    inv.recycle_bin_days().clamp(7, 30)
}

/// The `AWS::Rbin::Rule` resource of `rule` for the escrow template.
pub(crate) fn template_resource(inv: &Inventory, rule: &Rule) -> Value {
    let days = inv.recycle_bin_days();
    json!({
        "Type": "AWS::Rbin::Rule",
        // Escrow protections outlive the stack (a locked rule cannot be
        // deleted anyway).
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "Description": format!(
                "escrow-sync: deleted escrow {} stay recoverable for {days} days",
                rule.what
            ),
            "ResourceType": rule.resource_type,
            // Region-level (no resource tags): AWS locks only those.
            "RetentionPeriod": {"RetentionPeriodValue": days, "RetentionPeriodUnit": "DAYS"},
            // CloudFormation's shape (the API nests these in UnlockDelay).
            "LockConfiguration": {
                "UnlockDelayValue": unlock_delay_days(inv),
                "UnlockDelayUnit": "DAYS",
            },
        },
    })
}

/// Why one rule does not count, or `None` when it does.
fn shortfall(
    lock_state: Option<&str>,
    retention_days: Option<i32>,
    tagged: bool,
    status: Option<&str>,
    days: u32,
) -> Option<String> {
    if tagged {
        return Some("it selects resources by tag (AWS locks only Region-level rules)".into());
    }
    if lock_state != Some("locked") {
        return Some(format!("it is {}", lock_state.unwrap_or("not locked")));
    }
    match retention_days {
        Some(d) if i64::from(d) >= i64::from(days) => {}
        Some(d) => return Some(format!("it keeps deleted resources {d} days, under {days}")),
        None => return Some("it names no retention period".into()),
    }
    if status.is_some_and(|s| s != "available") {
        return Some(format!("it is {}", status.unwrap_or_default()));
    }
    None
}

/// The check: for each rule the inventory needs, a locked Region-level
/// rule of that resource type with at least `recycle_bin_days`.
pub(super) async fn check(
    a: &Auditor,
    rbin: &aws_sdk_rbin::Client,
    f: &mut Findings,
) -> Result<()> {
    use aws_sdk_rbin::types::ResourceType;
    let inv = &a.inventory;
    let days = inv.recycle_bin_days();
    for rule in rules(inv) {
        let resource = format!("rbin://{}", rule.resource_type);
        let mut seen: Vec<String> = Vec::new();
        let mut covered = false;
        let mut pages = rbin
            .list_rules()
            .resource_type(ResourceType::from(rule.resource_type))
            .into_paginator()
            .send();
        'pages: while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let err = sdk_error(e, "rbin:ListRules", &resource);
                    return f.could_not(err, &format!("the Recycle Bin rules for {}", rule.what));
                }
            };
            for summary in page.rules() {
                let id = summary.identifier().unwrap_or("?").to_string();
                let retention = summary.retention_period().map(|r| r.retention_period_value());
                let lock = summary.lock_state().map(|l| l.as_str());
                // The summary tells lock and retention; the rule itself
                // tells the tags and whether it is in force.
                if let Some(why) = shortfall(lock, retention, false, None, days) {
                    seen.push(format!("rule {id}: {why}"));
                    continue;
                }
                let got = match rbin.get_rule().identifier(&id).send().await {
                    Ok(r) => r,
                    Err(e) => {
                        let err = sdk_error(e, "rbin:GetRule", format!("rbin rule {id}"));
                        return f.could_not(err, &format!("Recycle Bin rule {id}"));
                    }
                };
                let tagged =
                    !got.resource_tags().is_empty() || !got.exclude_resource_tags().is_empty();
                let lock = got.lock_state().map(|l| l.as_str()).or(lock);
                let retention =
                    got.retention_period().map(|r| r.retention_period_value()).or(retention);
                let status = got.status().map(|s| s.as_str());
                match shortfall(lock, retention, tagged, status, days) {
                    Some(why) => seen.push(format!("rule {id}: {why}")),
                    None => {
                        covered = true;
                        break 'pages;
                    }
                }
            }
        }
        if covered {
            continue;
        }
        let found = if seen.is_empty() {
            format!("there is no Recycle Bin rule for {}", rule.what)
        } else {
            format!("no Recycle Bin rule for {} counts ({})", rule.what, seen.join("; "))
        };
        f.push(Finding::new(
            Severity::Medium,
            "rbin.rule.missing",
            resource,
            format!(
                "{found}: a deleted escrow copy cannot be recovered; escrow needs a locked \
                 Region-level rule keeping deleted {} at least {days} days \
                 ([escrow] recycle_bin_days)",
                rule.what
            ),
            format!(
                "deploy the escrow template of `escrow-sync policy --output cloudformation` \
                 (resource {}), or: aws rbin create-rule --resource-type {} --retention-period \
                 RetentionPeriodValue={days},RetentionPeriodUnit=DAYS --lock-configuration \
                 'UnlockDelay={{UnlockDelayValue={},UnlockDelayUnit=DAYS}}'",
                rule.logical_id,
                rule.resource_type,
                unlock_delay_days(inv)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_counts_only_locked_region_level_long_enough_and_available() {
        assert_eq!(shortfall(Some("locked"), Some(14), false, Some("available"), 14), None);
        assert_eq!(shortfall(Some("locked"), Some(30), false, None, 14), None);
        let why = |l, r, t, s| shortfall(l, r, t, s, 14).unwrap();
        assert!(why(None, Some(14), false, None).contains("not locked"));
        assert!(why(Some("pending_unlock"), Some(14), false, None).contains("pending_unlock"));
        assert!(why(Some("locked"), Some(7), false, None).contains("7 days, under 14"));
        assert!(why(Some("locked"), Some(14), true, None).contains("by tag"));
        assert!(why(Some("locked"), Some(14), false, Some("pending")).contains("pending"));
    }

    #[test]
    fn rules_follow_the_ec2_jobs_and_the_unlock_delay_stays_in_range() {
        let none = Inventory::default();
        assert!(rules(&none).is_empty());
        let snaps = Inventory {
            ec2: vec![crate::inventory::Ec2Grant { snapshots: true, ..Default::default() }],
            ..Default::default()
        };
        let r: Vec<_> = rules(&snaps).into_iter().map(|r| r.resource_type).collect();
        assert_eq!(r, ["EBS_SNAPSHOT"]);
        let images = Inventory {
            ec2: vec![crate::inventory::Ec2Grant { images: true, ..Default::default() }],
            recycle_bin_days: Some(365),
            ..Default::default()
        };
        let r: Vec<_> = rules(&images).into_iter().map(|r| r.resource_type).collect();
        assert_eq!(r, ["EBS_SNAPSHOT", "EC2_IMAGE"]);
        assert_eq!(unlock_delay_days(&images), 30);
        assert_eq!(unlock_delay_days(&Inventory { recycle_bin_days: Some(1), ..images }), 7);
        assert_eq!(unlock_delay_days(&snaps), 14);
    }
}
