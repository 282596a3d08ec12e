//! Generated policies: valid JSON, every statement scoped, read-and-share
//! only for the reader role, sharing limited to the escrow account, escrow
//! principals only on escrow resources, and templates that hold together.
//! (What the emulator cannot evaluate — trust conditions across accounts,
//! resource policies, KMS, EC2/RDS/Redshift resources — is pinned here.)

use std::collections::BTreeMap;

use serde_json::Value;

use escrow_sync_governance::inventory::{
    Ec2Grant, Ec2LockGrant, Inventory, ManifestLocation, RdsGrant, RedshiftGrant, S3Grant,
    TableGrant, TrailGrant,
};
use escrow_sync_governance::policy::{self, EXTERNAL_ID_PLACEHOLDER};

const ESCROW: &str = "222222222222";
const PRIMARY: &str = "111111111111";
const OPERATOR: &str = "arn:aws:iam::222222222222:role/escrow-operator";
const READER: &str = "arn:aws:iam::111111111111:role/escrow-reader";
const PRIMARY_KEY: &str = "arn:aws:kms:us-east-1:111111111111:key/primary-key";

fn tags(k: &str, v: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(k.to_string(), v.to_string())])
}

/// One of everything.
fn inventory() -> Inventory {
    Inventory {
        region: "us-east-1".into(),
        escrow_account: ESCROW.into(),
        primary_account: PRIMARY.into(),
        reader_role_arn: Some(READER.into()),
        operator_role_arn: Some(OPERATOR.into()),
        external_id: Some("the-secret-external-id".into()),
        escrow_kms_key: Some("alias/escrow".into()),
        manifest: Some(ManifestLocation {
            bucket: "escrow-manifests".into(),
            prefix: "runs/".into(),
            object_lock: true,
        }),
        s3: vec![
            // The log bucket of the `trails` job.
            S3Grant {
                name: "trails".into(),
                source_bucket: "prod-trail-logs".into(),
                dest_bucket: "escrow-trails".into(),
                dest_prefix: "ct/prod-trail-logs/".into(),
                ..Default::default()
            },
            S3Grant {
                name: "assets".into(),
                source_bucket: "prod-assets".into(),
                prefix: "data/".into(),
                dest_bucket: "escrow-assets".into(),
                object_lock: true,
                ..Default::default()
            },
            S3Grant {
                name: "logs".into(),
                source_bucket: "prod-logs".into(),
                dest_bucket: "escrow-logs".into(),
                versions: true,
                ..Default::default()
            },
            S3Grant {
                name: "offsite".into(),
                source_bucket: "prod-offsite".into(),
                dest_bucket: "escrow-offsite".into(),
                streamed: true,
                ..Default::default()
            },
        ],
        dynamodb: vec![
            TableGrant {
                name: "orders".into(),
                source_table: "orders".into(),
                dest_table: Some("escrow-orders".into()),
                checkpoint_table: "escrow-sync-checkpoints".into(),
                ..Default::default()
            },
            TableGrant {
                name: "events".into(),
                source_table: "events".into(),
                dest_bucket: Some("escrow-exports".into()),
                dest_prefix: "dynamodb/".into(),
                checkpoint_table: "escrow-sync-checkpoints".into(),
                ..Default::default()
            },
        ],
        ec2: vec![
            Ec2Grant {
                name: "ebs".into(),
                snapshots: true,
                tags: tags("backup", "true"),
                reencrypt_key: Some(PRIMARY_KEY.into()),
                prunes: true,
                ..Default::default()
            },
            Ec2Grant {
                name: "amis".into(),
                images: true,
                snapshots: true,
                ids: vec!["ami-0123".into()],
                ..Default::default()
            },
        ],
        rds: vec![RdsGrant {
            name: "rds".into(),
            db: true,
            cluster: true,
            tags: tags("backup", "true"),
            prunes: true,
            ..Default::default()
        }],
        redshift: vec![RedshiftGrant {
            name: "redshift".into(),
            ids: vec!["analytics-2026-11-28".into()],
            independent_copy: true,
            prunes: true,
            ..Default::default()
        }],
        cloudtrail: vec![TrailGrant {
            name: "trails".into(),
            dest_bucket: "escrow-trails".into(),
            dest_prefix: "ct/".into(),
        }],
        metrics: None,
        recycle_bin_days: Some(10),
        batch: None,
    }
}

#[test]
fn cloudtrail_jobs_find_trails_read_their_bucket_and_validate_in_escrow() {
    let p = policy::generate(&inventory());
    let reader = statements(&p.primary.reader_role.permission_policy);
    assert_eq!(
        list(&by_sid(&reader, "FindTrails")["Action"]),
        ["cloudtrail:ListTrails", "cloudtrail:DescribeTrails"]
    );
    let read = by_sid(&reader, "ReadObjectsTrails");
    assert_eq!(list(&read["Resource"]), ["arn:aws:s3:::prod-trail-logs/*"]);
    let operator = statements(&p.escrow.operator_policy);
    let keys = by_sid(&operator, "TrailPublicKeys");
    assert_eq!(list(&keys["Action"]), ["cloudtrail:ListPublicKeys"]);
    let originals = by_sid(&operator, "TrailOriginalsTrails");
    assert_eq!(list(&originals["Resource"]), ["arn:aws:s3:::escrow-trails/ct/*"]);
    let write = by_sid(&operator, "EscrowWriteEscrowTrails");
    assert_eq!(list(&write["Resource"]), ["arn:aws:s3:::escrow-trails/ct/prod-trail-logs/*"]);
    // Nothing of CloudTrail's in a config without [[cloudtrail]] jobs.
    let none = policy::generate(&Inventory { cloudtrail: vec![], ..inventory() });
    assert!(!none.escrow.operator_policy.to_string().contains("ListPublicKeys"));
    assert!(!none.primary.reader_role.permission_policy.to_string().contains("DescribeTrails"));
}

fn statements(doc: &Value) -> Vec<Value> {
    assert_eq!(doc["Version"], "2012-10-17", "{doc}");
    doc["Statement"].as_array().expect("a Statement array").clone()
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|x| x.as_str().expect("a string").to_string()).collect(),
        other => panic!("not a string or list: {other}"),
    }
}

fn by_sid<'a>(all: &'a [Value], sid: &str) -> &'a Value {
    all.iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {}", Value::Array(all.to_vec())))
}

/// Actions that AWS lets take no resource but "*".
const UNSCOPABLE: &[&str] = &[
    "ec2:DescribeSnapshots",
    "ec2:DescribeImages",
    "ec2:DescribeLockedSnapshots",
    "s3:ListAllMyBuckets",
    "rds:DescribeEvents",
    "rds:DescribeDBSnapshots",
    "rds:DescribeDBClusterSnapshots",
    "redshift:DescribeClusterSnapshots",
    "redshift:DescribeClusters",
    // The audit looks at every role, trail and snapshot share the escrow
    // holds, not only those the config names.
    "iam:ListRoles",
    "iam:ListUsers",
    "cloudtrail:DescribeTrails",
    "cloudtrail:ListTrails",
    "cloudtrail:GetTrailStatus",
    "ec2:DescribeSnapshotAttribute",
    "ec2:DescribeImageAttribute",
    // CloudTrail's public keys belong to no account.
    "cloudtrail:ListPublicKeys",
    // Recycle Bin lists rules per account and region.
    "rbin:ListRules",
];

#[test]
fn output_is_valid_json_and_round_trips() {
    let p = policy::generate(&inventory());
    let text = serde_json::to_string_pretty(&p).unwrap();
    let back: Value = serde_json::from_str(&text).unwrap();
    for path in [
        "/primary/reader_role/trust_policy",
        "/primary/reader_role/permission_policy",
        "/escrow/operator_policy",
        "/escrow/kms_key_policy",
    ] {
        let doc = back.pointer(path).unwrap_or_else(|| panic!("{path} missing"));
        for s in statements(doc) {
            assert!(
                s["Sid"].as_str().is_some_and(|x| x.chars().all(|c| c.is_ascii_alphanumeric()))
            );
            assert_eq!(s["Effect"], "Allow", "{s}");
        }
    }
    let (primary, escrow) = policy::cloudformation(&inventory());
    for t in [&primary, &escrow] {
        let again: Value = serde_json::from_str(&t.to_string()).unwrap();
        assert_eq!(&again, t);
    }
}

#[test]
fn every_identity_statement_is_scoped() {
    let p = policy::generate(&inventory());
    let docs = [
        &p.primary.reader_role.permission_policy,
        &p.escrow.operator_policy,
        &p.escrow.audit_policy,
    ];
    for doc in docs {
        let all = statements(doc);
        // Sids are unique within a policy.
        let mut sids: Vec<&str> = all.iter().map(|s| s["Sid"].as_str().unwrap()).collect();
        sids.sort();
        let n = sids.len();
        sids.dedup();
        assert_eq!(sids.len(), n, "duplicate Sids in {doc}");
        for s in &all {
            let actions = list(&s["Action"]);
            for a in &actions {
                assert!(!a.ends_with(":*") && a != "*", "wildcard action in {s}");
            }
            for r in list(&s["Resource"]) {
                if r == "*" {
                    assert!(
                        actions.iter().all(|a| UNSCOPABLE.contains(&a.as_str())),
                        "Resource \"*\" for actions AWS can scope: {s}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_reader_role_reads_and_shares_and_never_deletes() {
    let p = policy::generate(&inventory());
    let all = statements(&p.primary.reader_role.permission_policy);
    for s in &all {
        for a in list(&s["Action"]) {
            assert!(!a.contains("Delete") && !a.contains("Deregister"), "{a} in {s}");
            assert!(
                !a.starts_with("s3:Put") || s["Sid"].as_str().unwrap().starts_with("ExportWrite")
            );
        }
    }
    // The configured names, not wildcards.
    let list_assets = by_sid(&all, "ReadListAssets");
    assert_eq!(list_assets["Resource"], "arn:aws:s3:::prod-assets");
    assert_eq!(list_assets["Condition"]["StringLikeIfExists"]["s3:prefix"], "data/*");
    assert_eq!(by_sid(&all, "ReadObjectsAssets")["Resource"], "arn:aws:s3:::prod-assets/data/*");
    let logs = list(&by_sid(&all, "ReadObjectsLogs")["Action"]);
    assert!(logs.contains(&"s3:GetObjectVersion".to_string()), "{logs:?}");
    assert!(by_sid(&all, "ReadListLogs").get("Condition").is_none());
    assert_eq!(
        by_sid(&all, "ReadTableOrders")["Resource"],
        "arn:aws:dynamodb:us-east-1:111111111111:table/orders"
    );
    let table = list(&by_sid(&all, "ReadTableOrders")["Action"]);
    for a in ["dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:DescribeTimeToLive"] {
        assert!(table.contains(&a.to_string()), "{table:?}");
    }
    // No native export configured: no export rights.
    assert!(
        !p.primary.reader_role.permission_policy.to_string().contains("ExportTableToPointInTime")
    );
    assert!(list(&by_sid(&all, "DescribeSnapshotKeys")["Action"]) == ["kms:DescribeKey"]);
}

#[test]
fn sharing_is_limited_to_the_escrow_account() {
    let p = policy::generate(&inventory());
    let all = statements(&p.primary.reader_role.permission_policy);
    let (mut snapshots, mut images) = (0, 0);
    for s in &all {
        let actions = list(&s["Action"]);
        if actions.iter().any(|a| a == "ec2:ModifySnapshotAttribute") {
            snapshots += 1;
            let c = &s["Condition"]["StringEquals"];
            let add = c.get("ec2:Add/userId");
            let remove = c.get("ec2:Remove/userId");
            assert!(
                add == Some(&Value::from(ESCROW)) || remove == Some(&Value::from(ESCROW)),
                "sharing not limited to the escrow account: {s}"
            );
            assert!(add.is_none() || remove.is_none(), "{s}");
        }
        if actions.iter().any(|a| a == "ec2:ModifyImageAttribute") {
            images += 1;
            assert_eq!(actions, ["ec2:ModifyImageAttribute"], "{s}");
            // AWS sets no account key for ModifyImageAttribute: a statement
            // guarded by one would never match (tests/policy_reference.rs).
            let text = s.to_string();
            assert!(!text.contains("userId"), "{s}");
            // Selected AMIs only: named, tagged, or re-encrypted by escrow-sync.
            assert!(
                s["Resource"] != "*"
                    && (s["Resource"] != "arn:aws:ec2:us-east-1::image/*"
                        || s.get("Condition").is_some()),
                "{s}"
            );
        }
    }
    assert!(snapshots >= 4, "share and unshare of snapshots: {snapshots}");
    assert_eq!(images, 1, "one statement shares and unshares the named AMIs");
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("job amis") && n.contains("ec2:EnableImageBlockPublicAccess")),
        "{:?}",
        p.notes
    );
    // Tag-selected snapshots are shared only when tagged.
    let ebs = by_sid(&all, "ShareSnapshotsEbs");
    assert_eq!(ebs["Condition"]["StringEquals"]["aws:ResourceTag/backup"], "true");
    assert_eq!(ebs["Condition"]["StringEquals"]["ec2:Add/userId"], ESCROW);
    // Named AMIs only.
    assert_eq!(
        by_sid(&all, "ShareImagesAmis")["Resource"],
        "arn:aws:ec2:us-east-1::image/ami-0123"
    );
    // Re-encryption only where configured, tagging only at creation.
    assert!(all.iter().any(|s| s["Sid"] == "ReencryptEbs"));
    assert!(!all.iter().any(|s| s["Sid"] == "ReencryptAmis"));
    let tag = by_sid(&all, "TagReencryptedEbs");
    assert_eq!(
        tag["Condition"]["StringEquals"]["ec2:CreateAction"],
        serde_json::json!(["CopySnapshot"])
    );
    // RDS and Redshift: the tag selection as a condition.
    assert_eq!(
        by_sid(&all, "ShareTaggedDbSnapshotsRds")["Condition"]["StringEquals"]["rds:snapshot-tag/backup"],
        "true"
    );
    assert_eq!(
        by_sid(&all, "ShareTaggedClusterSnapshotsRds")["Condition"]["StringEquals"]["rds:cluster-snapshot-tag/backup"],
        "true"
    );
    let rs = list(&by_sid(&all, "ShareRedshiftRedshift")["Resource"]);
    assert!(rs.contains(
        &"arn:aws:redshift:us-east-1:111111111111:snapshot:*/analytics-2026-11-28".to_string()
    ));
    assert!(
        !all.iter().any(|s| s["Sid"] == "ShareTaggedRedshiftRedshift"),
        "ids only: no tag statement"
    );
}

#[test]
fn the_trust_policy_admits_only_the_escrow_operator_with_the_external_id() {
    let p = policy::generate(&inventory());
    let trust = statements(&p.primary.reader_role.trust_policy);
    assert_eq!(trust.len(), 1);
    assert_eq!(trust[0]["Principal"]["AWS"], OPERATOR);
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
    assert_eq!(trust[0]["Condition"]["StringEquals"]["sts:ExternalId"], EXTERNAL_ID_PLACEHOLDER);
    assert_eq!(p.primary.reader_role.arn, READER);
    // The secret is printed nowhere.
    let all = serde_json::to_string(&p).unwrap();
    let (a, b) = policy::cloudformation(&inventory());
    for text in [all, a.to_string(), b.to_string()] {
        assert!(!text.contains("the-secret-external-id"));
    }
    // Without an operator role: the escrow account, never anything else.
    let mut inv = inventory();
    inv.operator_role_arn = None;
    inv.external_id = None;
    let p = policy::generate(&inv);
    let trust = statements(&p.primary.reader_role.trust_policy);
    assert_eq!(trust[0]["Principal"]["AWS"], "arn:aws:iam::222222222222:root");
    assert!(trust[0].get("Condition").is_none());
    assert!(p.notes.iter().any(|n| n.contains("external_id")));
}

#[test]
fn resource_policies_of_the_primary_name_the_escrow_operator() {
    let p = policy::generate(&inventory());
    // Server-side copies need the bucket policy; a streamed job does not.
    assert!(p.primary.bucket_policies.contains_key("prod-assets"));
    assert!(p.primary.bucket_policies.contains_key("prod-logs"));
    assert!(!p.primary.bucket_policies.contains_key("prod-offsite"));
    let s = &p.primary.bucket_policies["prod-assets"][0];
    assert_eq!(s["Principal"]["AWS"], OPERATOR);
    assert_eq!(s["Resource"], "arn:aws:s3:::prod-assets/data/*");
    assert!(list(&s["Action"]).iter().all(|a| a.starts_with("s3:GetObject")));
    let key = p.primary.kms_key_policies[PRIMARY_KEY].as_array().unwrap();
    let actions: Vec<String> = key.iter().flat_map(|s| list(&s["Action"])).collect();
    for a in ["kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"] {
        assert!(actions.contains(&a.to_string()), "{actions:?}");
    }
    let grant = key.iter().find(|s| s["Action"] == "kms:CreateGrant").unwrap();
    assert_eq!(grant["Condition"]["Bool"]["kms:GrantIsForAWSResource"], "true");
    assert!(key.iter().all(|s| s["Principal"]["AWS"] == OPERATOR));
}

#[test]
fn the_escrow_side_writes_its_own_resources_and_deletes_only_where_pruning() {
    let p = policy::generate(&inventory());
    let all = statements(&p.escrow.operator_policy);
    assert_eq!(by_sid(&all, "AssumeReaderRole")["Resource"], READER);
    // Writes go to escrow buckets and tables only.
    for s in &all {
        for a in list(&s["Action"]) {
            let writes = a.starts_with("s3:Put")
                || a.starts_with("dynamodb:BatchWrite")
                || a.starts_with("dynamodb:Create");
            if writes {
                for r in list(&s["Resource"]) {
                    assert!(
                        r.contains(":222222222222:") || r.starts_with("arn:aws:s3:::escrow-"),
                        "{a} on {r} outside escrow"
                    );
                }
            }
        }
    }
    let write = list(&by_sid(&all, "EscrowWriteEscrowAssets")["Action"]);
    assert!(write.contains(&"s3:PutObjectRetention".to_string()), "object lock: {write:?}");
    let journal = by_sid(&all, "EscrowJournalEscrowAssets");
    // The upload journal and, under Object Lock, the retention ledger.
    assert_eq!(
        journal["Resource"],
        serde_json::json!([
            "arn:aws:s3:::escrow-assets/.escrow-sync-retention/*",
            "arn:aws:s3:::escrow-assets/.escrow-sync-uploads/*"
        ])
    );
    assert!(
        list(&by_sid(&all, "EscrowWriteEscrowManifests")["Resource"])
            .contains(&"arn:aws:s3:::escrow-manifests/runs/*".to_string())
    );
    assert!(
        list(&by_sid(&all, "EscrowTables")["Resource"])
            .contains(&"arn:aws:dynamodb:us-east-1:222222222222:table/escrow-orders".to_string())
    );
    assert_eq!(
        by_sid(&all, "CheckpointTable")["Resource"],
        "arn:aws:dynamodb:us-east-1:222222222222:table/escrow-sync-checkpoints"
    );
    // Deletes: the multipart journal, the checkpoints, and prune.
    for s in &all {
        for a in list(&s["Action"]) {
            if a.contains("Delete") || a.contains("Deregister") {
                let sid = s["Sid"].as_str().unwrap();
                assert!(
                    sid.starts_with("EscrowJournal")
                        || sid == "CheckpointTable"
                        || sid.starts_with("Prune")
                        || sid == "DeleteRestoredCluster",
                    "{a} in {s}"
                );
            }
        }
    }
    let prune = by_sid(&all, "PruneEc2Copies");
    assert_eq!(
        prune["Condition"]["StringEquals"]["aws:ResourceTag/escrow-sync:source-account"],
        PRIMARY
    );
    // Without retention, nothing prunes.
    let mut inv = inventory();
    inv.ec2.iter_mut().for_each(|j| j.prunes = false);
    inv.rds.iter_mut().for_each(|j| j.prunes = false);
    inv.redshift.iter_mut().for_each(|j| j.prunes = false);
    let quiet = policy::generate(&inv).escrow.operator_policy.to_string();
    for a in [
        "ec2:DeleteSnapshot",
        "ec2:DeregisterImage",
        "rds:DeleteDBSnapshot",
        "redshift:DeleteClusterSnapshot",
    ] {
        assert!(!quiet.contains(a), "{a} without retention");
    }
    // The escrow key by alias.
    let key = by_sid(&all, "UseEscrowKey");
    assert_eq!(key["Resource"], "arn:aws:kms:us-east-1:222222222222:key/*");
    assert_eq!(key["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"], "alias/escrow");
}

#[test]
fn ec2_locks_are_granted_with_a_lock_only_and_on_escrow_copies_only() {
    let mut inv = inventory();
    for j in &mut inv.ec2 {
        j.prunes = false;
    }
    let plain = policy::generate(&inv);
    let text = plain.escrow.operator_policy.to_string();
    for a in [
        "ec2:LockSnapshot",
        "ec2:EnableImageDeregistrationProtection",
        "ec2:DescribeLockedSnapshots",
    ] {
        assert!(!text.contains(a), "{a} without a lock or prune");
    }
    assert!(!plain.escrow.audit_policy.to_string().contains("ec2:DescribeLockedSnapshots"));
    let amis = inv.ec2.iter_mut().find(|j| j.images).unwrap();
    amis.lock = Some(Ec2LockGrant { mode: "compliance".into(), days: 30 });
    let p = policy::generate(&inv);
    let all = statements(&p.escrow.operator_policy);
    let lock = by_sid(&all, "LockEc2Copies");
    assert_eq!(list(&lock["Action"]), ["ec2:LockSnapshot"]);
    assert_eq!(list(&lock["Resource"]), ["arn:aws:ec2:us-east-1::snapshot/*"]);
    assert_eq!(
        lock["Condition"]["StringEquals"]["aws:ResourceTag/escrow-sync:source-account"],
        PRIMARY
    );
    let protect = by_sid(&all, "ProtectEc2Images");
    assert_eq!(list(&protect["Action"]), ["ec2:EnableImageDeregistrationProtection"]);
    assert_eq!(list(&protect["Resource"]), ["arn:aws:ec2:us-east-1::image/*"]);
    assert_eq!(
        protect["Condition"]["StringEquals"]["aws:ResourceTag/escrow-sync:source-account"],
        PRIMARY
    );
    assert_eq!(by_sid(&all, "ReadEc2Locks")["Resource"], "*");
    let text = p.escrow.operator_policy.to_string();
    for never in ["ec2:UnlockSnapshot", "ec2:DisableImageDeregistrationProtection"] {
        assert!(!text.contains(never), "{never} granted");
    }
    // Copies are tagged only as they are made: an existing copy's
    // escrow-sync:job tag cannot be changed to slip it out of its lock.
    let tag = by_sid(&all, "TagEc2Copies");
    assert_eq!(list(&tag["Action"]), ["ec2:CreateTags"]);
    assert_eq!(
        tag["Condition"]["StringEquals"]["ec2:CreateAction"],
        serde_json::json!(["CopySnapshot", "CopyImage"])
    );
    // After the copy, only backing snapshots without any provenance tag.
    let backing = by_sid(&all, "TagEc2BackingSnapshots");
    assert_eq!(list(&backing["Resource"]), ["arn:aws:ec2:us-east-1::snapshot/*"]);
    assert_eq!(backing["Condition"]["Null"]["aws:ResourceTag/escrow-sync:source-image-id"], "true");
    assert_eq!(
        backing["Condition"]["Null"]["aws:ResourceTag/escrow-sync:source-snapshot-id"],
        "true"
    );
    let unconditioned = all.iter().filter(|s| {
        list(&s["Action"]).iter().any(|a| a == "ec2:CreateTags") && s["Condition"].is_null()
    });
    assert_eq!(unconditioned.count(), 0, "CreateTags is never unconditioned");
    let audit = statements(&p.escrow.audit_policy);
    assert_eq!(list(&by_sid(&audit, "AuditEc2Locks")["Action"]), ["ec2:DescribeLockedSnapshots"]);
    assert_eq!(
        list(&by_sid(&audit, "AuditCopyKeys")["Resource"]),
        ["arn:aws:kms:us-east-1:222222222222:key/*"]
    );
}

#[test]
fn the_audit_policy_reads_escrow_configuration_only() {
    let p = policy::generate(&inventory());
    let all = statements(&p.escrow.audit_policy);
    for s in &all {
        for a in list(&s["Action"]) {
            let verb = a.split(':').nth(1).unwrap();
            assert!(
                ["Describe", "Get", "List"].iter().any(|v| verb.starts_with(v)),
                "{a} is not a read in {s}"
            );
            assert!(
                !["s3:GetObject", "dynamodb:GetItem", "kms:Decrypt"].contains(&a.as_str()),
                "{a} reads data in {s}"
            );
        }
        for r in list(&s["Resource"]) {
            assert!(
                r == "*" || r.contains(":222222222222:") || r.starts_with("arn:aws:s3:::escrow-"),
                "{r} is not an escrow resource in {s}"
            );
        }
    }
    let buckets = list(&by_sid(&all, "AuditBuckets")["Resource"]);
    for b in
        ["escrow-assets", "escrow-logs", "escrow-offsite", "escrow-exports", "escrow-manifests"]
    {
        assert!(buckets.contains(&format!("arn:aws:s3:::{b}")), "{b} not audited: {buckets:?}");
    }
    let tables = list(&by_sid(&all, "AuditTables")["Resource"]);
    assert!(tables.iter().any(|t| t.ends_with("table/escrow-orders")), "{tables:?}");
    assert!(tables.iter().any(|t| t.ends_with("table/escrow-sync-checkpoints")), "{tables:?}");
    let key = by_sid(&all, "AuditEscrowKey");
    assert_eq!(key["Condition"]["ForAnyValue:StringEquals"]["kms:ResourceAliases"], "alias/escrow");
    for sid in ["AuditRoleTrust", "AuditTrails", "AuditEc2Shares", "AuditRdsShares"] {
        by_sid(&all, sid);
    }
    // The template attaches it to the operator role.
    let (_, escrow) = policy::cloudformation(&inventory());
    let policies = escrow["Resources"]["OperatorRole"]["Properties"]["Policies"].to_string();
    assert!(policies.contains("escrow-sync-audit"), "{policies}");
}

#[test]
fn the_escrow_key_policy_names_escrow_principals_only() {
    let p = policy::generate(&inventory());
    let key = statements(p.escrow.kms_key_policy.as_ref().unwrap());
    for s in &key {
        let principal = s["Principal"]["AWS"].as_str().unwrap();
        assert!(principal.starts_with("arn:aws:iam::222222222222:"), "{s}");
    }
    // A native export is the one exception, named as such.
    let mut inv = inventory();
    inv.dynamodb[1].native_export = true;
    let p = policy::generate(&inv);
    let key = statements(p.escrow.kms_key_policy.as_ref().unwrap());
    let foreign: Vec<&Value> =
        key.iter().filter(|s| !s["Principal"]["AWS"].as_str().unwrap().contains(ESCROW)).collect();
    assert_eq!(foreign.len(), 1);
    assert_eq!(foreign[0]["Sid"], "PrimaryReaderNativeExportOnly");
    let bucket = &p.escrow.buckets["escrow-exports"]["bucket_policy"][0];
    assert_eq!(bucket["Principal"]["AWS"], READER);
    // The primary writes the staging prefix only, never the generations.
    assert_eq!(bucket["Resource"], "arn:aws:s3:::escrow-exports/dynamodb/.staging/events/*");
    let reader = statements(&p.primary.reader_role.permission_policy);
    let writes: Vec<&Value> = reader
        .iter()
        .filter(|s| list(&s["Action"]).iter().any(|a| a.starts_with("s3:Put")))
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        list(&writes[0]["Resource"]),
        vec!["arn:aws:s3:::escrow-exports/dynamodb/.staging/events/*".to_string()]
    );
    // The escrow operator reads the staging prefix (and writes only the
    // generations).
    let operator = statements(&p.escrow.operator_policy);
    assert_eq!(
        list(&by_sid(&operator, "EscrowStagingReadEscrowExports")["Resource"]),
        vec!["arn:aws:s3:::escrow-exports/dynamodb/.staging/events/*".to_string()]
    );
    // A configured staging prefix is the one granted.
    inv.dynamodb[1].staging_prefix = "exports-staging/".into();
    let p = policy::generate(&inv);
    let bucket = &p.escrow.buckets["escrow-exports"]["bucket_policy"][0];
    assert_eq!(bucket["Resource"], "arn:aws:s3:::escrow-exports/exports-staging/events/*");
    assert!(
        list(&by_sid(&reader, "ExportTableEvents")["Action"])
            .contains(&"dynamodb:ExportTableToPointInTime".to_string())
    );
    assert!(p.notes.iter().any(|n| n.contains("native-export")));
}

#[test]
fn escrow_buckets_are_versioned_locked_where_asked_and_private() {
    let p = policy::generate(&inventory());
    let b = &p.escrow.buckets;
    for name in
        ["escrow-assets", "escrow-logs", "escrow-offsite", "escrow-exports", "escrow-manifests"]
    {
        let s = &b[name];
        assert_eq!(s["versioning"], "Enabled", "{name}");
        for k in
            ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"]
        {
            assert_eq!(s["public_access_block"][k], true, "{name} {k}");
        }
        assert_eq!(s["encryption"]["kms_key"], "alias/escrow");
        assert!(s.get("bucket_policy").is_none(), "{name}: no grant without native export");
    }
    assert_eq!(b["escrow-assets"]["object_lock"], true);
    assert_eq!(b["escrow-manifests"]["object_lock"], true);
    assert_eq!(b["escrow-logs"]["object_lock"], false);
}

#[test]
fn templates_create_everything_and_refer_only_to_what_they_hold() {
    let (primary, escrow) = policy::cloudformation(&inventory());
    for t in [&primary, &escrow] {
        assert_eq!(t["AWSTemplateFormatVersion"], "2010-09-09");
        let resources = t["Resources"].as_object().unwrap();
        let params = t.get("Parameters").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut refs = Vec::new();
        collect_refs(t, &mut refs);
        for r in refs {
            assert!(resources.contains_key(&r) || params.contains_key(&r), "Ref {r} to nothing");
        }
    }
    let reader = &primary["Resources"]["ReaderRole"]["Properties"];
    assert_eq!(reader["RoleName"], "escrow-reader");
    assert_eq!(
        reader["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"],
        serde_json::json!({"Ref": "ExternalId"})
    );
    assert_eq!(primary["Parameters"]["ExternalId"]["NoEcho"], true);
    let p = policy::generate(&inventory());
    assert_eq!(reader["Policies"][0]["PolicyDocument"], p.primary.reader_role.permission_policy);
    let policies: Vec<&Value> = primary["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::S3::BucketPolicy")
        .collect();
    assert_eq!(policies.len(), 3, "prod-trail-logs, prod-assets and prod-logs");
    assert!(primary["Metadata"]["EscrowSync"]["KmsKeyPolicyStatements"][PRIMARY_KEY].is_array());

    let r = escrow["Resources"].as_object().unwrap();
    assert_eq!(
        r["OperatorRole"]["Properties"]["Policies"][0]["PolicyDocument"],
        p.escrow.operator_policy
    );
    assert_eq!(
        r["OperatorRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::222222222222:root"
    );
    assert_eq!(r["EscrowKey"]["Type"], "AWS::KMS::Key");
    assert_eq!(
        r["EscrowKey"]["Properties"]["KeyPolicy"],
        *p.escrow.kms_key_policy.as_ref().unwrap()
    );
    assert_eq!(r["EscrowKeyAlias"]["Properties"]["AliasName"], "alias/escrow");
    let buckets: Vec<&Value> = r.values().filter(|v| v["Type"] == "AWS::S3::Bucket").collect();
    assert_eq!(buckets.len(), 6, "with escrow-trails");
    for b in &buckets {
        assert_eq!(b["DeletionPolicy"], "Retain");
        let props = &b["Properties"];
        assert_eq!(props["VersioningConfiguration"]["Status"], "Enabled");
        assert_eq!(props["PublicAccessBlockConfiguration"]["BlockPublicPolicy"], true);
        assert!(props["BucketEncryption"]["ServerSideEncryptionConfiguration"].is_array());
        let locked = props.get("ObjectLockEnabled") == Some(&Value::Bool(true));
        let name = props["BucketName"].as_str().unwrap();
        assert_eq!(locked, name == "escrow-assets" || name == "escrow-manifests", "{name}");
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("Ref") {
                out.push(r.clone());
            }
            if let Some(Value::Array(a)) = m.get("Fn::GetAtt")
                && let Some(Value::String(r)) = a.first()
            {
                out.push(r.clone());
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[test]
fn an_inventory_no_escrow_can_be_built_from_is_refused() {
    policy::check(&inventory()).unwrap();
    type Change = Box<dyn Fn(&mut Inventory)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|i| i.escrow_account = PRIMARY.into()), "same account"),
        (Box::new(|i| i.escrow_account = "22".into()), "12 digits"),
        (
            Box::new(|i| i.reader_role_arn = Some("arn:aws:iam::222222222222:role/r".into())),
            "primary account",
        ),
        (
            Box::new(|i| i.operator_role_arn = Some("arn:aws:iam::111111111111:role/o".into())),
            "escrow account",
        ),
        (
            Box::new(|i| {
                i.escrow_kms_key = Some("arn:aws:kms:us-east-1:111111111111:key/k".into())
            }),
            "escrow owns",
        ),
        (
            Box::new(|i| {
                i.ec2[0].reencrypt_key = Some("arn:aws:kms:us-east-1:222222222222:key/k".into())
            }),
            "job ebs",
        ),
    ];
    for (change, says) in cases {
        let mut inv = inventory();
        change(&mut inv);
        let err = policy::check(&inv).unwrap_err().to_string();
        assert!(err.contains(says), "{says}: {err}");
    }
}

#[test]
fn the_escrow_template_locks_recycle_bin_rules_for_ec2_copies() {
    let inv = inventory();
    let (_, escrow) = policy::cloudformation(&inv);
    for (logical, kind) in
        [("RecycleBinEbsSnapshots", "EBS_SNAPSHOT"), ("RecycleBinImages", "EC2_IMAGE")]
    {
        let r = &escrow["Resources"][logical];
        assert_eq!(r["Type"], "AWS::Rbin::Rule", "{logical}: {r}");
        assert_eq!(r["DeletionPolicy"], "Retain");
        let p = &r["Properties"];
        assert_eq!(p["ResourceType"], kind);
        // recycle_bin_days of the inventory, in days.
        assert_eq!(
            p["RetentionPeriod"],
            serde_json::json!({"RetentionPeriodValue": 10, "RetentionPeriodUnit": "DAYS"})
        );
        // Locked, so Region-level: AWS cannot lock a rule with resource tags.
        assert_eq!(
            p["LockConfiguration"],
            serde_json::json!({"UnlockDelayValue": 10, "UnlockDelayUnit": "DAYS"})
        );
        assert!(p.get("ResourceTags").is_none() && p.get("ExcludeResourceTags").is_none(), "{p}");
    }
    // The audit reads them.
    let audit = statements(&policy::generate(&inv).escrow.audit_policy);
    assert_eq!(list(&by_sid(&audit, "AuditRecycleBinRules")["Action"]), ["rbin:ListRules"]);
    assert_eq!(
        list(&by_sid(&audit, "AuditRecycleBinRule")["Resource"]),
        ["arn:aws:rbin:us-east-1:222222222222:rule/*"]
    );
    // No AMI job: the snapshot rule only; no EC2 job: none.
    let snapshots_only = Inventory {
        ec2: inventory().ec2.into_iter().filter(|j| !j.images).collect(),
        ..inventory()
    };
    let (_, escrow) = policy::cloudformation(&snapshots_only);
    assert!(escrow["Resources"]["RecycleBinEbsSnapshots"].is_object());
    assert!(escrow["Resources"].get("RecycleBinImages").is_none());
    let none = Inventory { ec2: vec![], ..inventory() };
    let (_, escrow) = policy::cloudformation(&none);
    assert!(!escrow.to_string().contains("AWS::Rbin::Rule"));
    assert!(!policy::generate(&none).escrow.audit_policy.to_string().contains("rbin:"));
}

#[test]
fn rds_and_redshift_get_an_optional_locked_backup_vault_in_escrow() {
    let (_, escrow) = policy::cloudformation(&inventory());
    assert_eq!(escrow["Parameters"]["EnableBackupVault"]["Default"], "false");
    assert_eq!(
        escrow["Conditions"]["BackupVaultEnabled"],
        serde_json::json!({"Fn::Equals": [{"Ref": "EnableBackupVault"}, "true"]})
    );
    let vault = &escrow["Resources"]["EscrowBackupVault"];
    assert_eq!(vault["Type"], "AWS::Backup::BackupVault");
    assert_eq!(vault["Condition"], "BackupVaultEnabled", "off unless enabled");
    assert_eq!(vault["DeletionPolicy"], "Retain");
    let lock = &vault["Properties"]["LockConfiguration"];
    assert_eq!(lock["MinRetentionDays"], serde_json::json!({"Ref": "BackupVaultMinRetentionDays"}));
    // What the primary copies in (or plants) expires within a bound.
    assert_eq!(lock["MaxRetentionDays"], serde_json::json!({"Ref": "BackupVaultMaxRetentionDays"}));
    let max = &escrow["Parameters"]["BackupVaultMaxRetentionDays"];
    assert_eq!((max["Default"].as_u64(), max["MaxValue"].as_u64()), (Some(3650), Some(36500)));
    assert_eq!(
        lock["ChangeableForDays"],
        serde_json::json!({"Ref": "BackupVaultChangeableForDays"}),
        "compliance mode after the grace period"
    );
    assert_eq!(escrow["Parameters"]["BackupVaultChangeableForDays"]["MinValue"], 3);
    // Encrypted with the escrow key the template creates.
    assert_eq!(
        vault["Properties"]["EncryptionKeyArn"],
        serde_json::json!({"Fn::GetAtt": ["EscrowKey", "Arn"]})
    );
    // The primary may only copy recovery points in.
    let access = statements(&vault["Properties"]["AccessPolicy"]);
    assert_eq!(access.len(), 1);
    assert_eq!(list(&access[0]["Action"]), ["backup:CopyIntoBackupVault"]);
    assert_eq!(access[0]["Principal"]["AWS"], format!("arn:aws:iam::{PRIMARY}:root"));
    assert_eq!(escrow["Outputs"]["BackupVaultArn"]["Condition"], "BackupVaultEnabled");
    // Without RDS or Redshift jobs, no vault.
    let none = Inventory { rds: vec![], redshift: vec![], ..inventory() };
    let (_, escrow) = policy::cloudformation(&none);
    assert!(escrow["Resources"].get("EscrowBackupVault").is_none());
    assert!(escrow.get("Conditions").is_none());
}
