//! The Recycle Bin check of the audit (issue 17, point 3) against
//! aws-smithy-mocks: ListRules per resource type and its paging, GetRule of
//! the candidate, and each way a rule falls short (none, unlocked, too
//! short, tag-level, not yet available); access denied as a medium "could
//! not check" finding. The emulator suite (tests/governance_audit.rs) runs
//! it against xtask's Recycle Bin model.

use aws_sdk_rbin::operation::get_rule::GetRuleOutput;
use aws_sdk_rbin::operation::list_rules::{ListRulesError, ListRulesOutput};
use aws_sdk_rbin::types::{
    LockState, ResourceTag, ResourceType, RetentionPeriod, RetentionPeriodUnit, RuleStatus,
    RuleSummary,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;

use escrow_sync_governance::Inventory;
use escrow_sync_governance::audit::{Auditor, Finding, Severity};
use escrow_sync_governance::inventory::Ec2Grant;

fn inventory(images: bool) -> Inventory {
    Inventory {
        region: "us-east-1".into(),
        escrow_account: "222222222222".into(),
        primary_account: "111111111111".into(),
        ec2: vec![Ec2Grant { name: "ec2".into(), snapshots: true, images, ..Default::default() }],
        recycle_bin_days: Some(14),
        ..Default::default()
    }
}

fn retention(days: i32) -> RetentionPeriod {
    RetentionPeriod::builder()
        .retention_period_value(days)
        .retention_period_unit(RetentionPeriodUnit::Days)
        .build()
        .unwrap()
}

fn summary(id: &str, lock: Option<LockState>, days: i32) -> RuleSummary {
    RuleSummary::builder()
        .identifier(id)
        .retention_period(retention(days))
        .set_lock_state(lock)
        .build()
}

/// ListRules of `kind` answering `rules` (one page).
fn list(kind: ResourceType, rules: Vec<RuleSummary>) -> Rule {
    mock!(aws_sdk_rbin::Client::list_rules)
        .match_requests(move |r| r.resource_type() == Some(&kind))
        .then_output(move || ListRulesOutput::builder().set_rules(Some(rules.clone())).build())
}

/// GetRule of `id`: Region-level unless `tagged`, locked, `days`, available.
fn get(id: &'static str, days: i32, tagged: bool, status: RuleStatus) -> Rule {
    mock!(aws_sdk_rbin::Client::get_rule)
        .match_requests(move |r| r.identifier() == Some(id))
        .then_output(move || {
            let mut b = GetRuleOutput::builder()
                .identifier(id)
                .retention_period(retention(days))
                .lock_state(LockState::Locked)
                .status(status.clone());
            if tagged {
                b = b.resource_tags(
                    ResourceTag::builder()
                        .resource_tag_key("escrow-sync:source-account")
                        .resource_tag_value("111111111111")
                        .build()
                        .unwrap(),
                );
            }
            b.build()
        })
}

async fn audit(inv: Inventory, rules: &[&Rule]) -> Vec<Finding> {
    let rbin = mock_client!(aws_sdk_rbin, RuleMode::MatchAny, rules);
    Auditor::new(inv).with_rbin_client(rbin).run().await.unwrap()
}

fn checks(found: &[Finding]) -> Vec<(Severity, &str, &str)> {
    found.iter().map(|f| (f.severity, f.check.as_str(), f.resource.as_str())).collect()
}

#[tokio::test]
async fn no_rule_is_a_medium_finding_per_resource_type_with_the_fix() {
    let snaps = list(ResourceType::EbsSnapshot, vec![]);
    let images = list(ResourceType::Ec2Image, vec![]);
    let found = audit(inventory(true), &[&snaps, &images]).await;
    assert_eq!(
        checks(&found),
        [
            (Severity::Medium, "rbin.rule.missing", "rbin://EBS_SNAPSHOT"),
            (Severity::Medium, "rbin.rule.missing", "rbin://EC2_IMAGE"),
        ]
    );
    assert!(found[0].problem.contains("no Recycle Bin rule for EBS snapshots"), "{found:?}");
    assert!(found[0].problem.contains("at least 14 days"), "{found:?}");
    assert!(found[0].fix.contains("RecycleBinEbsSnapshots"), "{found:?}");
    assert!(found[1].fix.contains("--resource-type EC2_IMAGE"), "{found:?}");
    assert_eq!((snaps.num_calls(), images.num_calls()), (1, 1));

    // Snapshots only: no AMI rule is asked for.
    let snaps = list(ResourceType::EbsSnapshot, vec![]);
    let images = list(ResourceType::Ec2Image, vec![]);
    let found = audit(inventory(false), &[&snaps, &images]).await;
    assert_eq!(checks(&found), [(Severity::Medium, "rbin.rule.missing", "rbin://EBS_SNAPSHOT")]);
    assert_eq!(images.num_calls(), 0);
}

#[tokio::test]
async fn a_locked_region_level_rule_long_enough_is_clean() {
    let snaps =
        list(ResourceType::EbsSnapshot, vec![summary("aaaaaaaaaaa", Some(LockState::Locked), 14)]);
    let images =
        list(ResourceType::Ec2Image, vec![summary("bbbbbbbbbbb", Some(LockState::Locked), 30)]);
    let get_a = get("aaaaaaaaaaa", 14, false, RuleStatus::Available);
    let get_b = get("bbbbbbbbbbb", 30, false, RuleStatus::Available);
    let found = audit(inventory(true), &[&snaps, &images, &get_a, &get_b]).await;
    assert!(found.is_empty(), "{found:?}");
    assert_eq!((get_a.num_calls(), get_b.num_calls()), (1, 1));
}

#[tokio::test]
async fn each_shortfall_is_named_and_only_candidates_are_fetched() {
    let snaps = list(
        ResourceType::EbsSnapshot,
        vec![
            summary("unlocked001", Some(LockState::Unlocked), 30),
            summary("neverlocked", None, 30),
            summary("pendingunlo", Some(LockState::PendingUnlock), 30),
            summary("tooshort001", Some(LockState::Locked), 7),
            summary("tagged00001", Some(LockState::Locked), 30),
            summary("pending0001", Some(LockState::Locked), 30),
        ],
    );
    let tagged = get("tagged00001", 30, true, RuleStatus::Available);
    let pending = get("pending0001", 30, false, RuleStatus::Pending);
    let found = audit(inventory(false), &[&snaps, &tagged, &pending]).await;
    assert_eq!(checks(&found), [(Severity::Medium, "rbin.rule.missing", "rbin://EBS_SNAPSHOT")]);
    let problem = &found[0].problem;
    for expected in [
        "rule unlocked001: it is unlocked",
        "rule neverlocked: it is not locked",
        "rule pendingunlo: it is pending_unlock",
        "rule tooshort001: it keeps deleted resources 7 days, under 14",
        "rule tagged00001: it selects resources by tag",
        "rule pending0001: it is pending",
    ] {
        assert!(problem.contains(expected), "{expected:?} not in {problem}");
    }
    // GetRule only for the rules the summary lets pass.
    assert_eq!((tagged.num_calls(), pending.num_calls()), (1, 1));
}

#[tokio::test]
async fn rules_are_read_page_by_page() {
    let page1 = mock!(aws_sdk_rbin::Client::list_rules)
        .match_requests(|r| r.next_token().is_none())
        .then_output(|| {
            ListRulesOutput::builder()
                .rules(summary("unlocked001", Some(LockState::Unlocked), 30))
                .next_token("page-2")
                .build()
        });
    let page2 = mock!(aws_sdk_rbin::Client::list_rules)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(|| {
            ListRulesOutput::builder()
                .rules(summary("aaaaaaaaaaa", Some(LockState::Locked), 14))
                .build()
        });
    let get_a = get("aaaaaaaaaaa", 14, false, RuleStatus::Available);
    let found = audit(inventory(false), &[&page1, &page2, &get_a]).await;
    assert!(found.is_empty(), "{found:?}");
    assert_eq!((page1.num_calls(), page2.num_calls()), (1, 1));
}

#[tokio::test]
async fn access_denied_is_a_could_not_check_finding_and_no_ec2_job_no_call() {
    let denied = mock!(aws_sdk_rbin::Client::list_rules).then_error(|| {
        ListRulesError::generic(
            ErrorMetadata::builder().code("AccessDeniedException").message("no").build(),
        )
    });
    let found = audit(inventory(false), &[&denied]).await;
    assert_eq!(checks(&found), [(Severity::Medium, "audit.access-denied", "rbin://EBS_SNAPSHOT")]);
    assert!(found[0].fix.contains("rbin:ListRules"), "{found:?}");

    let any =
        mock!(aws_sdk_rbin::Client::list_rules).then_output(|| ListRulesOutput::builder().build());
    let found = audit(Inventory { ec2: vec![], ..inventory(true) }, &[&any]).await;
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(any.num_calls(), 0);
}
