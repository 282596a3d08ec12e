//! Every statement escrow-sync generates, held against the AWS Service
//! Authorization Reference (issue 17, point 7).
//!
//! The emulator evaluates neither condition keys nor resource formats, so
//! only AWS's own data can tell whether an Allow would ever match there. The
//! data is parliament 1.6.4's copy of the reference (`iam_definition.json`),
//! pinned and installed under `target/policy-tools` by `cargo xtask test`
//! (or `cargo xtask policy-tools`), found through `ESCROW_SYNC_IAM_REFERENCE`.
//!
//! Checked, for every statement of every document (the reader role's trust
//! and permissions, the primary's bucket and key policy statements, the
//! operator and audit policies, the escrow key and bucket policies, and
//! every policy in both CloudFormation templates), for each action it names:
//! - the action exists (a wildcard matches at least one);
//! - an action that takes no resource has `"*"` among the resources (any
//!   other resource is never matched for it); an action that takes resources
//!   has at least one resource of one of its types, and one of each type it
//!   requires (`ec2:CopyImage`: the image and its snapshots);
//! - each resource ARN is a resource of some action of the statement (a
//!   statement may name the snapshots of one action and the images of
//!   another: IAM matches each action against the resources of its types);
//! - each condition key is listed for the action (its rows of the actions
//!   table, or the resource types the statement's resources match), or is a
//!   global `aws:` key; the tag keys `aws:ResourceTag/`, `aws:RequestTag/`
//!   and `aws:TagKeys` must be listed like service keys, since a service
//!   that does not list them does not set them.
//!
//! A key AWS does not set for the action makes `StringEquals` false, so the
//! Allow it guards never matches on AWS (and an `...IfExists` guard never
//! restricts).
//!
//! Policies come from the demo's config (`xtask/src/demo.rs`) through the
//! `escrow-sync policy` binary, and from inventories with one of everything
//! through the governance crate.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use escrow_sync_governance::inventory::{
    BatchGrant, Ec2Grant, Inventory, JobAlarm, ManifestLocation, MetricsGrant, RdsGrant,
    RedshiftGrant, S3Grant, TableGrant, TrailGrant,
};
use escrow_sync_governance::policy;

const REFERENCE_ENV: &str = "ESCROW_SYNC_IAM_REFERENCE";
const REGION: &str = "us-east-1";
const ESCROW: &str = "222222222222";
const PRIMARY: &str = "111111111111";

// ---- the reference --------------------------------------------------------

/// One resource type of a service: its ARN pattern and its condition keys.
#[derive(Debug, Default, Clone)]
struct ResourceType {
    arn: Vec<String>,
    keys: Vec<String>,
}

/// One row of an action: a resource type (empty: the action's own keys),
/// whether it is required, and the condition keys of the row.
#[derive(Debug, Clone)]
struct Row {
    resource: String,
    required: bool,
    keys: Vec<String>,
}

#[derive(Debug, Default)]
struct Service {
    /// Lower-case action name -> rows.
    actions: HashMap<String, Vec<Row>>,
    resources: HashMap<String, ResourceType>,
}

#[derive(Debug, Default)]
struct Reference {
    services: HashMap<String, Service>,
}

fn reference_path() -> PathBuf {
    if let Some(p) = std::env::var_os(REFERENCE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| escrow_sync_e2e::workspace_root().join("target"));
    let lib = target.join("policy-tools/venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dir| {
        dir.flatten()
            .map(|p| p.path().join("site-packages/parliament/iam_definition.json"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no copy of the Service Authorization Reference: run the suites with `cargo xtask \
             test`, or `cargo xtask policy-tools` (it installs parliament==1.6.4 under {} and \
             prints {REFERENCE_ENV})",
            lib.display()
        )
    })
}

fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let path = reference_path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let data: Value = serde_json::from_str(&text).expect("the reference is JSON");
        let mut r = Reference::default();
        for s in data.as_array().expect("a list of services") {
            let svc = r.services.entry(s["prefix"].as_str().unwrap().to_string()).or_default();
            for p in s["privileges"].as_array().unwrap() {
                let rows = p["resource_types"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| {
                        let name = t["resource_type"].as_str().unwrap();
                        Row {
                            resource: name.trim_end_matches('*').to_string(),
                            required: name.ends_with('*'),
                            keys: strings(&t["condition_keys"]),
                        }
                    })
                    .collect::<Vec<_>>();
                let name = p["privilege"].as_str().unwrap().to_ascii_lowercase();
                svc.actions.entry(name).or_default().extend(rows);
            }
            for t in s["resources"].as_array().unwrap() {
                let e =
                    svc.resources.entry(t["resource"].as_str().unwrap().to_string()).or_default();
                e.arn.push(t["arn"].as_str().unwrap().to_string());
                e.keys.extend(strings(&t["condition_keys"]));
            }
        }
        assert!(r.services.len() > 300, "{} has too few services", path.display());
        r
    })
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => vec![],
    }
}

/// Whether `text` matches `pattern` (`*` any run, `?` one character),
/// ignoring case.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (
        pattern.to_ascii_lowercase().chars().collect(),
        text.to_ascii_lowercase().chars().collect(),
    );
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether a resource ARN of a policy (wildcards filled in) can be an ARN of
/// the pattern `template` (`arn:${Partition}:ec2:${Region}::snapshot/${SnapshotId}`).
/// A variable stands for one ARN segment (no `:` or `/`), except object
/// names and paths, which may hold `/`.
fn arn_matches(template: &str, arn: &str) -> bool {
    let concrete = arn.replace(['*', '?'], "x");
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        parts.push(Part::Lit(rest[..start].to_string()));
        let end = rest[start..].find('}').map(|e| start + e).expect("closed variable");
        parts.push(Part::Var(rest[start + 2..end].to_string()));
        rest = &rest[end + 1..];
    }
    parts.push(Part::Lit(rest.to_string()));
    match_parts(&parts, &concrete)
}

enum Part {
    Lit(String),
    Var(String),
}

fn match_parts(parts: &[Part], s: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else { return s.is_empty() };
    match first {
        Part::Lit(l) => {
            s.len() >= l.len()
                && s[..l.len()].eq_ignore_ascii_case(l)
                && match_parts(rest, &s[l.len()..])
        }
        Part::Var(v) => {
            let ok = |c: char| match v.as_str() {
                "Partition" => c.is_ascii_lowercase() || c == '-',
                "Region" => c.is_ascii_alphanumeric() || c == '-',
                "Account" => c.is_ascii_digit(),
                _ if v.contains("Path") || v.contains("ObjectName") => true,
                _ => c != ':' && c != '/',
            };
            // A variable may be empty only where AWS leaves the segment
            // empty (no region or account in S3 ARNs is written as `::`).
            for (i, c) in s.char_indices() {
                if match_parts(rest, &s[i..]) && i > 0 {
                    return true;
                }
                if !ok(c) {
                    return false;
                }
            }
            !s.is_empty() && match_parts(rest, "")
        }
    }
}

/// Whether the documented key `doc` (`rds:snapshot-tag/${TagKey}`) covers
/// the key `key` of a policy.
fn key_matches(doc: &str, key: &str) -> bool {
    match doc.find("${") {
        Some(i) => key.len() > i && key[..i].eq_ignore_ascii_case(&doc[..i]),
        None => doc.eq_ignore_ascii_case(key),
    }
}

/// Tag keys: global in name, but set only by the services that list them.
fn is_tag_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.starts_with("aws:resourcetag/") || k.starts_with("aws:requesttag/") || k == "aws:tagkeys"
}

// ---- the check ------------------------------------------------------------

/// What AWS would not evaluate as written, one line per problem, for the
/// statement `s` found at `at`.
fn check_statement(at: &str, s: &Value) -> Vec<String> {
    let r = reference();
    let mut out = Vec::new();
    let sid = s["Sid"].as_str().unwrap_or("(no Sid)");
    let here = format!("{at} {sid}");
    let resources = s.get("Resource").map(strings);
    if let Some(res) = s.get("Resource")
        && strings(res).len() != res.as_array().map_or(1, Vec::len)
    {
        out.push(format!("{here}: a resource is not a string (unresolved intrinsic?): {res}"));
    }
    // Resources that are some action's of the statement.
    let mut used: Vec<&str> = Vec::new();
    let mut any_action = false;
    for action in strings(&s["Action"]) {
        let Some((prefix, name)) = action.split_once(':') else {
            out.push(format!("{here}: {action} is not service:Action"));
            continue;
        };
        let Some(svc) = r.services.get(&prefix.to_ascii_lowercase()) else {
            out.push(format!("{here}: no service {prefix} in the reference"));
            continue;
        };
        let matched: Vec<&Vec<Row>> =
            svc.actions.iter().filter(|(n, _)| glob(name, n)).map(|(_, rows)| rows).collect();
        if matched.is_empty() {
            out.push(format!("{here}: {action} is no action of {prefix}"));
            continue;
        }
        any_action = true;
        for rows in matched {
            let typed: Vec<&Row> = rows.iter().filter(|r| !r.resource.is_empty()).collect();
            // The resource types the statement's resources select for it.
            let mut selected: Vec<&str> = Vec::new();
            match &resources {
                // A trust policy: the role itself.
                None => selected.extend(typed.iter().map(|t| t.resource.as_str())),
                Some(list) => {
                    let star = list.iter().any(|r| r == "*");
                    if star {
                        selected.extend(typed.iter().map(|t| t.resource.as_str()));
                        used.push("*");
                    }
                    if typed.is_empty() && !star {
                        out.push(format!(
                            "{here}: {action} takes no resource, so AWS matches it only with \
                             \"*\", not {list:?}"
                        ));
                    }
                    for res in list.iter().filter(|r| *r != "*") {
                        let hits: Vec<&str> = typed
                            .iter()
                            .filter(|t| {
                                svc.resources
                                    .get(&t.resource)
                                    .is_some_and(|rt| rt.arn.iter().any(|a| arn_matches(a, res)))
                            })
                            .map(|t| t.resource.as_str())
                            .collect();
                        if !hits.is_empty() {
                            used.push(res);
                        }
                        selected.extend(hits);
                    }
                    if !typed.is_empty() && selected.is_empty() {
                        out.push(format!(
                            "{here}: none of {list:?} is a resource of {action} (its types: {})",
                            typed
                                .iter()
                                .map(|t| t.resource.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    for t in typed.iter().filter(|t| t.required) {
                        if !selected.is_empty() && !selected.contains(&t.resource.as_str()) {
                            out.push(format!(
                                "{here}: {action} requires a {} resource, and none of {list:?} is one",
                                t.resource
                            ));
                        }
                    }
                }
            }
            // The keys AWS sets for this action on these resources.
            let mut keys: Vec<&str> = rows
                .iter()
                .filter(|row| row.resource.is_empty() || selected.contains(&row.resource.as_str()))
                .flat_map(|row| row.keys.iter().map(String::as_str))
                .collect();
            for t in &selected {
                if let Some(rt) = svc.resources.get(*t) {
                    keys.extend(rt.keys.iter().map(String::as_str));
                }
            }
            let Some(cond) = s.get("Condition").and_then(Value::as_object) else { continue };
            for (op, block) in cond {
                for key in
                    block.as_object().map(|b| b.keys().collect::<Vec<_>>()).unwrap_or_default()
                {
                    let global = key.to_ascii_lowercase().starts_with("aws:") && !is_tag_key(key);
                    if !global && !keys.iter().any(|d| key_matches(d, key)) {
                        out.push(format!(
                            "{here}: {op} {key} is not a condition key of {action}{}: AWS does \
                             not set it, so the statement never matches",
                            if selected.is_empty() {
                                String::new()
                            } else {
                                format!(" on {}", selected.join("/"))
                            }
                        ));
                    }
                }
            }
        }
    }
    // A resource no action of the statement takes: a mistake (a wrong ARN
    // format, or a statement that lost the action it was for).
    if any_action {
        for res in resources.iter().flatten() {
            if !used.contains(&res.as_str()) {
                out.push(format!(
                    "{here}: {res} is a resource of no action of the statement ({})",
                    strings(&s["Action"]).join(", ")
                ));
            }
        }
    }
    out
}

/// Every statement (an object with `Effect`) anywhere in `doc`, with where
/// it is; CloudFormation `Fn::GetAtt ... Arn` resolved with `template`'s
/// resources in `account`.
fn statements(doc: &Value, at: &str, out: &mut Vec<(String, Value)>) {
    match doc {
        Value::Object(m) if m.contains_key("Effect") => out.push((at.to_string(), doc.clone())),
        Value::Object(m) => {
            for (k, v) in m {
                statements(v, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                statements(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `template` with each `{"Fn::GetAtt": [X, "Arn"]}` and `{"Ref": X}` of a
/// resource replaced by an ARN of that resource in `account`.
fn resolve(template: &Value, account: &str) -> Value {
    let resources = template["Resources"].as_object().cloned().unwrap_or_default();
    let arn_of = |logical: &str| -> Option<String> {
        let r = resources.get(logical)?;
        let props = &r["Properties"];
        Some(match r["Type"].as_str()? {
            "AWS::KMS::Key" => {
                format!("arn:aws:kms:{REGION}:{account}:key/0a1b2c3d-1234-5678-9abc-def012345678")
            }
            "AWS::IAM::Role" => {
                format!("arn:aws:iam::{account}:role/{}", props["RoleName"].as_str()?)
            }
            "AWS::S3::Bucket" => format!("arn:aws:s3:::{}", props["BucketName"].as_str()?),
            "AWS::Backup::BackupVault" => format!(
                "arn:aws:backup:{REGION}:{account}:backup-vault:{}",
                props["BackupVaultName"].as_str().unwrap_or("vault")
            ),
            _ => return None,
        })
    };
    fn walk(v: &Value, arn_of: &dyn Fn(&str) -> Option<String>) -> Value {
        match v {
            Value::Object(m) => {
                if let Some(Value::Array(a)) = m.get("Fn::GetAtt")
                    && a.get(1) == Some(&json!("Arn"))
                    && let Some(arn) = a[0].as_str().and_then(arn_of)
                {
                    return json!(arn);
                }
                Value::Object(m.iter().map(|(k, v)| (k.clone(), walk(v, arn_of))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, arn_of)).collect()),
            other => other.clone(),
        }
    }
    walk(template, &arn_of)
}

/// Every problem in the policies `json` (the `policy` document) and the two
/// templates.
fn check_all(label: &str, json: &Value, primary: &Value, escrow: &Value) -> Vec<String> {
    let mut found = Vec::new();
    statements(json, &format!("{label} policy"), &mut found);
    statements(&resolve(primary, PRIMARY), &format!("{label} primary template"), &mut found);
    statements(&resolve(escrow, ESCROW), &format!("{label} escrow template"), &mut found);
    assert!(found.len() > 20, "{label}: too few statements found: {}", found.len());
    let mut problems: Vec<String> =
        found.iter().flat_map(|(at, s)| check_statement(at, s)).collect();
    problems.dedup();
    problems
}

// ---- the policies ---------------------------------------------------------

/// The demo's config, as `cargo xtask demo` writes it.
fn demo_config() -> String {
    let src = std::fs::read_to_string(escrow_sync_e2e::workspace_root().join("xtask/src/demo.rs"))
        .expect("xtask/src/demo.rs");
    let start = src.find("DEMO_CONFIG: &str = r#\"").expect("DEMO_CONFIG in demo.rs");
    let body = &src[start..];
    let body = &body[body.find('"').unwrap() + 1..];
    body[..body.find("\"#;").expect("the end of DEMO_CONFIG")].to_string()
}

fn policy_cli(config: &std::path::Path, format: &str) -> Value {
    let out = Command::new(escrow_sync_e2e::binary())
        .args(["policy", "--config"])
        .arg(config)
        .args(["--output", format])
        .env_remove("ESCROW_SYNC_CONFIG")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run escrow-sync policy");
    assert!(out.status.success(), "policy: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("policy prints JSON")
}

fn tags(k: &str, v: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(k.to_string(), v.to_string())])
}

/// One of everything, the escrow key and re-encryption keys by alias.
fn everything() -> Inventory {
    Inventory {
        region: REGION.into(),
        escrow_account: ESCROW.into(),
        primary_account: PRIMARY.into(),
        reader_role_arn: Some(format!("arn:aws:iam::{PRIMARY}:role/escrow-reader")),
        operator_role_arn: Some(format!("arn:aws:iam::{ESCROW}:role/escrow-operator")),
        external_id: Some("secret".into()),
        escrow_kms_key: Some("alias/escrow".into()),
        manifest: Some(ManifestLocation {
            bucket: "escrow-manifests".into(),
            prefix: "runs/".into(),
            object_lock: true,
        }),
        s3: vec![
            S3Grant {
                name: "assets".into(),
                source_bucket: "prod-assets".into(),
                prefix: "data/".into(),
                dest_bucket: "escrow-assets".into(),
                dest_prefix: "assets/".into(),
                object_lock: true,
                versions: true,
                ..Default::default()
            },
            S3Grant {
                name: "bulk".into(),
                source_bucket: "prod-bulk".into(),
                dest_bucket: "escrow-bulk".into(),
                object_lock: true,
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
                history_bucket: Some("escrow-history".into()),
                history_prefix: "history/".into(),
                native_export: true,
                ..Default::default()
            },
            TableGrant {
                name: "events".into(),
                source_table: "events".into(),
                dest_bucket: Some("escrow-exports".into()),
                dest_prefix: "dynamodb/".into(),
                native_export: true,
                object_lock: true,
                checkpoint_table: "escrow-sync-checkpoints".into(),
                ..Default::default()
            },
        ],
        ec2: vec![
            Ec2Grant {
                name: "ebs".into(),
                snapshots: true,
                tags: tags("backup", "true"),
                reencrypt_key: Some("alias/primary-ebs".into()),
                prunes: true,
                ..Default::default()
            },
            Ec2Grant {
                name: "amis".into(),
                images: true,
                snapshots: true,
                ids: vec!["ami-0123".into(), "snap-0456".into()],
                reencrypt_key: Some(format!("arn:aws:kms:{REGION}:{PRIMARY}:key/k1")),
                ..Default::default()
            },
            Ec2Grant {
                name: "named".into(),
                snapshots: true,
                ids: vec!["snap-0789".into()],
                ..Default::default()
            },
        ],
        rds: vec![
            RdsGrant {
                name: "rds".into(),
                db: true,
                cluster: true,
                tags: tags("backup", "true"),
                reencrypt_key: Some("alias/primary-rds".into()),
                prunes: true,
                ..Default::default()
            },
            RdsGrant {
                name: "named".into(),
                db: true,
                ids: vec!["db-snap-1".into(), "rds:automated-1".into()],
                ..Default::default()
            },
        ],
        redshift: vec![
            RedshiftGrant {
                name: "warehouse".into(),
                tags: tags("backup", "true"),
                independent_copy: true,
                prunes: true,
                ..Default::default()
            },
            RedshiftGrant {
                name: "named".into(),
                ids: vec!["analytics-1".into()],
                ..Default::default()
            },
        ],
        cloudtrail: vec![TrailGrant {
            name: "trails".into(),
            dest_bucket: "escrow-trails".into(),
            dest_prefix: "ct/".into(),
        }],
        metrics: Some(MetricsGrant {
            namespace: "EscrowSync".into(),
            alarms: vec![JobAlarm { job: "assets".into(), max_age_seconds: 3600 }],
        }),
        recycle_bin_days: Some(30),
        batch: Some(BatchGrant {
            role_arn: format!("arn:aws:iam::{ESCROW}:role/escrow-batch"),
            jobs: vec!["bulk".into()],
            files: BTreeMap::from([(
                "escrow-batch".into(),
                std::collections::BTreeSet::from(["escrow-sync/batch/".into()]),
            )]),
        }),
    }
}

fn check_inventory(label: &str, inv: &Inventory) -> Vec<String> {
    policy::check(inv).expect("a valid inventory");
    let json = serde_json::to_value(policy::generate(inv)).unwrap();
    let (primary, escrow) = policy::cloudformation(inv);
    check_all(label, &json, &primary, &escrow)
}

// ---- the tests ------------------------------------------------------------

#[test]
fn the_demo_policies_hold_against_the_reference() {
    let dir = std::env::temp_dir().join(format!("policy-reference-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("escrow.toml");
    std::fs::write(&config, demo_config()).unwrap();
    let json = policy_cli(&config, "json");
    let templates = policy_cli(&config, "cloudformation");
    let problems = check_all("demo", &json, &templates["primary"], &templates["escrow"]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn policies_of_every_job_kind_hold_against_the_reference() {
    let mut problems = check_inventory("everything (aliases)", &everything());
    // The same with the keys named by ARN and by key id, and no role ARNs.
    let by_arn = Inventory {
        escrow_kms_key: Some(format!("arn:aws:kms:{REGION}:{ESCROW}:key/escrow-key")),
        reader_role_arn: None,
        operator_role_arn: None,
        ec2: everything()
            .ec2
            .into_iter()
            .map(|j| Ec2Grant { reencrypt_key: j.reencrypt_key.map(|_| "key-id-1".into()), ..j })
            .collect(),
        ..everything()
    };
    problems.extend(check_inventory("everything (ARNs)", &by_arn));
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// The check finds each kind of statement AWS would not match, and passes
/// the same statements written right.
#[test]
fn the_check_finds_what_aws_would_never_match() {
    let bad = [
        (
            json!({"Sid": "A", "Effect": "Allow", "Action": "redshift:DescribeClusterSnapshots",
                   "Resource": "arn:aws:redshift:us-east-1:111111111111:snapshot:*/*"}),
            "takes no resource",
        ),
        (
            json!({"Sid": "B", "Effect": "Allow", "Action": "ec2:ModifyImageAttribute",
                   "Resource": "arn:aws:ec2:us-east-1::image/*",
                   "Condition": {"StringEquals": {"ec2:Add/userId": "222222222222"}}}),
            "ec2:Add/userId is not a condition key of ec2:ModifyImageAttribute",
        ),
        (
            json!({"Sid": "C", "Effect": "Allow", "Action": "s3:GetObjects", "Resource": "*"}),
            "is no action of s3",
        ),
        (
            json!({"Sid": "D", "Effect": "Allow", "Action": "s3:ListBucket",
                   "Resource": "arn:aws:s3:::bucket/prefix/*"}),
            "is a resource of no action of the statement",
        ),
        (
            json!({"Sid": "E", "Effect": "Allow", "Action": "ec2:CopyImage",
                   "Resource": "arn:aws:ec2:us-east-1::image/*"}),
            "requires a snapshot resource",
        ),
        (
            json!({"Sid": "F", "Effect": "Allow", "Action": "redshift:AuthorizeSnapshotAccess",
                   "Resource": "arn:aws:redshift:us-east-1:111111111111:snapshot:*/*",
                   "Condition": {"StringEquals": {"aws:RequestTag/backup": "true"}}}),
            "aws:RequestTag/backup is not a condition key",
        ),
        (
            json!({"Sid": "G", "Effect": "Allow", "Action": "nosuchservice:Get", "Resource": "*"}),
            "no service nosuchservice",
        ),
    ];
    for (s, expected) in bad {
        let problems = check_statement("test", &s);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{s}: expected a problem with {expected:?}, got {problems:?}"
        );
    }
    let good = [
        json!({"Sid": "A", "Effect": "Allow", "Action": "redshift:DescribeClusterSnapshots", "Resource": "*"}),
        json!({"Sid": "B", "Effect": "Allow", "Action": "ec2:ModifySnapshotAttribute",
               "Resource": "arn:aws:ec2:us-east-1::snapshot/*",
               "Condition": {"StringEquals": {"ec2:Add/userId": "222222222222",
                                              "aws:ResourceTag/backup": "true"}}}),
        json!({"Sid": "D", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions"],
               "Resource": "arn:aws:s3:::bucket",
               "Condition": {"StringLikeIfExists": {"s3:prefix": "data/*"}}}),
        json!({"Sid": "E", "Effect": "Allow", "Action": "ec2:CopyImage",
               "Resource": ["arn:aws:ec2:us-east-1::image/*", "arn:aws:ec2:us-east-1::snapshot/*"]}),
        json!({"Sid": "H", "Effect": "Allow", "Action": "rds:ModifyDBSnapshotAttribute",
               "Resource": "arn:aws:rds:us-east-1:111111111111:snapshot:*",
               "Condition": {"StringEquals": {"rds:snapshot-tag/backup": "true"}}}),
        json!({"Sid": "K", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"],
               "Resource": "arn:aws:kms:us-east-1:222222222222:key/*",
               "Condition": {"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/escrow"},
                             "StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}}),
        json!({"Sid": "T", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::222222222222:root"},
               "Action": "sts:AssumeRole",
               "Condition": {"StringEquals": {"sts:ExternalId": "x"}}}),
        json!({"Sid": "W", "Effect": "Allow", "Principal": {"AWS": "x"}, "Action": "kms:*", "Resource": "*"}),
    ];
    for s in good {
        let problems = check_statement("test", &s);
        assert!(problems.is_empty(), "{s}: {problems:?}");
    }
}

#[test]
fn arn_patterns_match_segment_by_segment() {
    let snap = "arn:${Partition}:ec2:${Region}::snapshot/${SnapshotId}";
    assert!(arn_matches(snap, "arn:aws:ec2:us-east-1::snapshot/*"));
    assert!(arn_matches(snap, "arn:aws:ec2:us-east-1::snapshot/snap-1"));
    assert!(!arn_matches(snap, "arn:aws:ec2:us-east-1::image/*"));
    let bucket = "arn:${Partition}:s3:::${BucketName}";
    let object = "arn:${Partition}:s3:::${BucketName}/${ObjectName}";
    assert!(arn_matches(bucket, "arn:aws:s3:::b"));
    assert!(!arn_matches(bucket, "arn:aws:s3:::b/*"));
    assert!(arn_matches(object, "arn:aws:s3:::b/p/q/*"));
    assert!(!arn_matches(object, "arn:aws:s3:::b"));
    let rs =
        "arn:${Partition}:redshift:${Region}:${Account}:snapshot:${ClusterName}/${SnapshotName}";
    assert!(arn_matches(rs, "arn:aws:redshift:us-east-1:111111111111:snapshot:*/escrow-sync-*"));
    assert!(!arn_matches(rs, "arn:aws:redshift:us-east-1:111111111111:cluster:*"));
    assert!(glob("Describe*", "describesnapshots") && !glob("Describe?", "describe"));
    assert!(key_matches("rds:snapshot-tag/${TagKey}", "rds:snapshot-tag/backup"));
    assert!(!key_matches("rds:snapshot-tag/${TagKey}", "rds:snapshot-tag/"));
}
