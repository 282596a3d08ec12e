//! The checks, one function per service. Each reads, never writes.

use std::collections::BTreeMap;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use futures::StreamExt;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::Result;

use super::principals::{Outsider, outsiders, parse_document};
use super::{Auditor, Finding, Findings, PrimaryClients, Severity};

/// The service error code of an SDK error, if it is a service error.
fn code<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<String> {
    e.as_service_error().and_then(|s| s.code()).map(str::to_string)
}

/// The body of an answer the SDK could not parse although it was a 200.
fn raw_200_body<E>(e: &aws_sdk_s3::error::SdkError<E>) -> Option<String> {
    let raw = e.raw_response()?;
    if raw.status().as_u16() != 200 {
        return None;
    }
    raw.body().bytes().map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The text of the first `<tag>` element in `xml`.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim().to_string())
}

/// Whether a probe got through: an answer, or a 200 the SDK could not parse.
fn reached<T, E>(r: &std::result::Result<T, aws_sdk_s3::error::SdkError<E>>) -> bool {
    match r {
        Ok(_) => true,
        Err(e) => e.raw_response().is_some_and(|raw| raw.status().is_success()),
    }
}

fn describe_all(found: &[Outsider], primary: &str) -> String {
    found.iter().map(|o| o.describe(primary)).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------- IAM

pub(super) async fn iam_trust(
    a: &Auditor,
    iam: &aws_sdk_iam::Client,
    f: &mut Findings,
) -> Result<()> {
    let (own, primary) = (&a.inventory.escrow_account, &a.inventory.primary_account);
    let resource = format!("iam roles of account {own}");
    let mut pages = iam.list_roles().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let err = sdk_error(e, "iam:ListRoles", &resource);
                return f.could_not(err, "the trust policies of the escrow's IAM roles");
            }
        };
        for role in page.roles() {
            let Some(text) = role.assume_role_policy_document() else { continue };
            let doc = match parse_document(text) {
                Ok(d) => d,
                Err(why) => {
                    f.push(Finding::new(
                        Severity::Medium,
                        "iam.trust.unreadable",
                        role.arn(),
                        format!(
                            "could not check the trust policy of role {}: {why}",
                            role.role_name()
                        ),
                        "read the trust policy by hand (aws iam get-role) and make sure it admits \
                         only escrow principals",
                    ));
                    continue;
                }
            };
            let found = outsiders(&doc, own);
            if found.is_empty() {
                continue;
            }
            let admits_primary = found.iter().any(|o| o.account.as_deref() == Some(primary));
            f.push(Finding::high(
                "iam.trust.foreign-principal",
                role.arn(),
                format!(
                    "role {} can be assumed from outside the escrow account{}: its trust policy \
                     admits {}",
                    role.role_name(),
                    if admits_primary { ", by the primary" } else { "" },
                    describe_all(&found, primary)
                ),
                format!(
                    "remove those principals from the trust policy (aws iam \
                     update-assume-role-policy --role-name {}) or delete the role: nothing in the \
                     escrow may trust the primary or another account",
                    role.role_name()
                ),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- S3

/// An escrow bucket and what the config asks of it.
#[derive(Debug, Default)]
struct EscrowBucket {
    object_lock: bool,
    uses: Vec<String>,
    /// The key prefixes escrow data lives under (empty: the whole bucket).
    prefixes: Vec<String>,
    /// Key prefixes where native exports land (`<staging_prefix><table>/`):
    /// the only place a principal outside escrow may write.
    staging: Vec<String>,
}

fn escrow_buckets(a: &Auditor) -> BTreeMap<String, EscrowBucket> {
    let inv = &a.inventory;
    let mut out: BTreeMap<String, EscrowBucket> = BTreeMap::new();
    let mut add = |bucket: &str, lock: bool, use_: String, prefix: &str| {
        let b = out.entry(bucket.to_string()).or_default();
        b.object_lock |= lock;
        b.uses.push(use_);
        b.prefixes.push(prefix.to_string());
    };
    for j in &inv.s3 {
        add(&j.dest_bucket, j.object_lock, format!("job {}", j.name), &j.dest_prefix);
    }
    for j in &inv.dynamodb {
        if let Some(b) = &j.dest_bucket {
            add(b, j.object_lock, format!("job {}", j.name), &j.dest_prefix);
        }
        if let Some(b) = &j.history_bucket {
            add(b, false, format!("job {} (item history)", j.name), &j.history_prefix);
        }
    }
    if let Some(m) = &inv.manifest {
        add(&m.bucket, m.object_lock, "run manifests".to_string(), &m.prefix);
    }
    for j in &inv.dynamodb {
        if let (Some(b), Some(staging)) = (&j.dest_bucket, j.staging()) {
            out.entry(b.clone()).or_default().staging.push(staging);
        }
    }
    out
}

/// The escrow buckets' checks; `key` is the escrow key as KMS resolves it
/// ([`super::hardening::escrow_key`]).
pub(super) async fn buckets(
    a: &Auditor,
    s3: &aws_sdk_s3::Client,
    key: Option<&str>,
    f: &mut Findings,
) -> Result<()> {
    for (bucket, need) in escrow_buckets(a) {
        bucket_check(a, s3, &bucket, &need, key, f).await?;
    }
    Ok(())
}

/// Lifecycle rules that expire escrow data: a rule that is enabled, expires
/// current versions (`Expiration` by days or date) or noncurrent ones
/// (`NoncurrentVersionExpiration`), and covers an escrow prefix. A rule
/// filtered by tag covers every prefix: tags are copied from the primary,
/// so its attacker can plant them.
async fn lifecycle_check(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    need: &EscrowBucket,
    resource: &str,
    uses: &str,
    f: &mut Findings,
) -> Result<()> {
    let rules = match s3.get_bucket_lifecycle_configuration().bucket(bucket).send().await {
        Ok(out) => out.rules.unwrap_or_default(),
        Err(e) if code(&e).as_deref() == Some("NoSuchLifecycleConfiguration") => return Ok(()),
        Err(e) => {
            let err = sdk_error(e, "s3:GetLifecycleConfiguration", resource);
            return f.could_not(err, &format!("the lifecycle rules of escrow bucket {bucket}"));
        }
    };
    for rule in rules {
        if rule.status() != &aws_sdk_s3::types::ExpirationStatus::Enabled {
            continue;
        }
        let current = rule.expiration().is_some_and(|e| e.days().is_some() || e.date().is_some());
        let noncurrent = rule.noncurrent_version_expiration().is_some();
        if !current && !noncurrent {
            continue;
        }
        let (prefix, tagged) = rule_scope(&rule);
        let covered = tagged
            || need
                .prefixes
                .iter()
                .any(|p| p.starts_with(&prefix) || prefix.starts_with(p.as_str()));
        if !covered {
            continue;
        }
        let id = rule.id().unwrap_or("(no id)");
        let what = match (current, noncurrent) {
            (true, true) => "current and noncurrent versions",
            (true, false) => "current versions",
            _ => "noncurrent versions",
        };
        let scope = if tagged {
            format!(
                "objects with its tags (tags are copied from the primary, so it can plant them), prefix {prefix:?}"
            )
        } else {
            format!("prefix {prefix:?}")
        };
        f.push(Finding::high(
            "s3.bucket.lifecycle-expiry",
            resource,
            format!(
                "escrow bucket {bucket} ({uses}): lifecycle rule {id} expires {what} of {scope}, \
                 so escrow data (and every pre-incident version) ages out without a delete by \
                 anyone"
            ),
            format!(
                "remove the rule's expiration from the escrow prefixes (aws s3api \
                 put-bucket-lifecycle-configuration --bucket {bucket} ..., or \
                 delete-bucket-lifecycle --bucket {bucket}); Object Lock retention keeps locked \
                 versions whatever the rules"
            ),
        ));
    }
    Ok(())
}

/// Replication out of an escrow bucket: an enabled rule whose destination
/// is not shown to be the escrow account's copies escrow data out of
/// escrow. The destination bucket's owner is always checked (HeadBucket
/// with `ExpectedBucketOwner` = the escrow account), whatever the rule's
/// `Account` says: `Account` only names the account that owner override
/// hands the replicas to, and a rule can name escrow there while the bucket
/// belongs to someone else.
async fn replication_check(
    a: &Auditor,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    resource: &str,
    uses: &str,
    f: &mut Findings,
) -> Result<()> {
    let own = &a.inventory.escrow_account;
    let config = match s3.get_bucket_replication().bucket(bucket).send().await {
        Ok(out) => out.replication_configuration,
        Err(e) if code(&e).as_deref() == Some("ReplicationConfigurationNotFoundError") => None,
        Err(e) => {
            let err = sdk_error(e, "s3:GetReplicationConfiguration", resource);
            return f.could_not(err, &format!("the replication of escrow bucket {bucket}"));
        }
    };
    let Some(config) = config else { return Ok(()) };
    for rule in config.rules() {
        if rule.status() != &aws_sdk_s3::types::ReplicationRuleStatus::Enabled {
            continue;
        }
        let Some(dest) = rule.destination() else { continue };
        let target = dest.bucket().trim_start_matches("arn:aws:s3:::").to_string();
        let owned =
            s3.head_bucket().bucket(&target).expected_bucket_owner(own).send().await.is_ok();
        let outside = match dest.account() {
            Some(account) if account != own => Some(format!("account {account}")),
            Some(_) if !owned => Some(format!(
                "a bucket the escrow account {own} does not own (though the rule names {own} \
                 as its account)"
            )),
            _ => (!owned).then(|| format!("a bucket the escrow account {own} does not own")),
        };
        if let Some(whose) = outside {
            let id = rule.id().unwrap_or("(no id)");
            f.push(Finding::high(
                "s3.bucket.replication-out",
                resource,
                format!(
                    "escrow bucket {bucket} ({uses}): replication rule {id} copies escrow data to \
                     s3://{target}, {whose}: outside escrow"
                ),
                format!(
                    "remove the rule (aws s3api delete-bucket-replication --bucket {bucket}, or \
                     put-bucket-replication without it); replicate only to buckets of the escrow \
                     account {own}"
                ),
            ));
        }
    }
    Ok(())
}

/// A lifecycle rule's key prefix (empty: the whole bucket), and whether it
/// is filtered by tag.
fn rule_scope(rule: &aws_sdk_s3::types::LifecycleRule) -> (String, bool) {
    #[allow(deprecated)]
    let legacy = rule.prefix().map(str::to_string);
    match rule.filter() {
        Some(filter) => {
            let and = filter.and();
            let prefix = filter
                .prefix()
                .or_else(|| and.and_then(|a| a.prefix()))
                .map(str::to_string)
                .or(legacy)
                .unwrap_or_default();
            let tagged = filter.tag().is_some() || and.is_some_and(|a| !a.tags().is_empty());
            (prefix, tagged)
        }
        None => (legacy.unwrap_or_default(), false),
    }
}

async fn bucket_check(
    a: &Auditor,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    need: &EscrowBucket,
    key: Option<&str>,
    f: &mut Findings,
) -> Result<()> {
    let resource = format!("s3://{bucket}");
    let uses = need.uses.join(", ");
    // Versioning first: it also says whether the bucket exists.
    let versioning = match s3.get_bucket_versioning().bucket(bucket).send().await {
        Ok(out) => Ok(out.status().map(|s| s.as_str().to_string())),
        // Some S3 implementations (moto) wrap the answer in an element the
        // SDK does not expect; a 200 answer's Status element still tells.
        Err(e) => match raw_200_body(&e) {
            Some(body) => Ok(xml_text(&body, "Status")),
            None => Err(e),
        },
    };
    match versioning {
        Ok(status) => {
            let problem = match status.as_deref() {
                Some("Enabled") => None,
                Some("Suspended") => Some("versioning is suspended"),
                _ => Some("versioning was never enabled"),
            };
            if let Some(problem) = problem {
                f.push(Finding::high(
                    "s3.bucket.versioning",
                    &resource,
                    format!(
                        "escrow bucket {bucket} ({uses}): {problem}, so an overwrite or delete \
                         destroys the only copy"
                    ),
                    format!(
                        "aws s3api put-bucket-versioning --bucket {bucket} \
                         --versioning-configuration Status=Enabled"
                    ),
                ));
            }
        }
        Err(e) if code(&e).as_deref() == Some("NoSuchBucket") => {
            f.push(Finding::high(
                "s3.bucket.missing",
                &resource,
                format!("escrow bucket {bucket} ({uses}) does not exist in the escrow account"),
                format!(
                    "create {bucket} in the escrow account with versioning, Block Public Access{} \
                     (escrow-sync policy prints the settings); if it existed, it was deleted: \
                     find out who could",
                    if need.object_lock { " and Object Lock" } else { "" }
                ),
            ));
            return Ok(());
        }
        Err(e) => {
            let err = sdk_error(e, "s3:GetBucketVersioning", &resource);
            f.could_not(err, &format!("whether escrow bucket {bucket} is versioned"))?;
        }
    }
    if need.object_lock {
        match s3.get_object_lock_configuration().bucket(bucket).send().await {
            Ok(out) => {
                let on = out.object_lock_configuration().and_then(|c| c.object_lock_enabled())
                    == Some(&aws_sdk_s3::types::ObjectLockEnabled::Enabled);
                if !on {
                    f.push(object_lock_missing(bucket, &resource, &uses));
                }
            }
            Err(e) if code(&e).as_deref() == Some("ObjectLockConfigurationNotFoundError") => {
                f.push(object_lock_missing(bucket, &resource, &uses));
            }
            Err(e) => {
                let err = sdk_error(e, "s3:GetObjectLockConfiguration", &resource);
                f.could_not(err, &format!("Object Lock on escrow bucket {bucket}"))?;
            }
        }
    }
    super::hardening::bucket(a, s3, bucket, need.object_lock, &uses, key, f).await?;
    lifecycle_check(s3, bucket, need, &resource, &uses, f).await?;
    replication_check(a, s3, bucket, &resource, &uses, f).await?;
    match s3.get_public_access_block().bucket(bucket).send().await {
        Ok(out) => {
            let c = out.public_access_block_configuration();
            let flags = [
                ("BlockPublicAcls", c.and_then(|c| c.block_public_acls())),
                ("IgnorePublicAcls", c.and_then(|c| c.ignore_public_acls())),
                ("BlockPublicPolicy", c.and_then(|c| c.block_public_policy())),
                ("RestrictPublicBuckets", c.and_then(|c| c.restrict_public_buckets())),
            ];
            let off: Vec<&str> =
                flags.iter().filter(|(_, v)| *v != Some(true)).map(|(n, _)| *n).collect();
            if !off.is_empty() {
                f.push(Finding::high(
                    "s3.bucket.public-access-block",
                    &resource,
                    format!(
                        "escrow bucket {bucket} ({uses}): public access block flags off: {}",
                        off.join(", ")
                    ),
                    pab_fix(bucket),
                ));
            }
        }
        Err(e) if code(&e).as_deref() == Some("NoSuchPublicAccessBlockConfiguration") => {
            f.push(Finding::high(
                "s3.bucket.public-access-block",
                &resource,
                format!("escrow bucket {bucket} ({uses}) has no public access block"),
                pab_fix(bucket),
            ));
        }
        Err(e) => {
            let err = sdk_error(e, "s3:GetBucketPublicAccessBlock", &resource);
            f.could_not(err, &format!("the public access block of escrow bucket {bucket}"))?;
        }
    }
    match s3.get_bucket_policy().bucket(bucket).send().await {
        Ok(out) => {
            let text = out.policy().unwrap_or("{}");
            match parse_document(text) {
                Ok(doc) => {
                    // The native-export grant (writes under a staging
                    // prefix only) is the one allowed; any other grant to
                    // an outsider is reported, and a write outside the
                    // staging prefixes once more on its own.
                    let own = &a.inventory.escrow_account;
                    let mut found = Vec::new();
                    let mut writes = Vec::new();
                    for st in policy_statements(&doc) {
                        let who = outsiders(&serde_json::json!({"Statement": [st]}), own);
                        if who.is_empty() || staging_write_only(st, bucket, &need.staging) {
                            continue;
                        }
                        if grants_put(st) {
                            let names: Vec<String> = who
                                .iter()
                                .map(|o| o.describe(&a.inventory.primary_account))
                                .collect();
                            writes.push(format!(
                                "{} on {}",
                                names.join(", "),
                                strings(st.get("Resource").or(st.get("NotResource"))).join(", ")
                            ));
                        }
                        for o in who {
                            if !found.contains(&o) {
                                found.push(o);
                            }
                        }
                    }
                    if !writes.is_empty() {
                        let staging = if need.staging.is_empty() {
                            "no job of this bucket is a native export, so nothing outside the \
                             escrow may write here"
                                .to_string()
                        } else {
                            format!(
                                "the only place the primary may write is the native-export \
                                 staging prefix ({})",
                                need.staging.join(", ")
                            )
                        };
                        f.push(Finding::high(
                            "s3.bucket-policy.outside-write",
                            &resource,
                            format!(
                                "the bucket policy of escrow bucket {bucket} ({uses}) lets a \
                                 principal outside the escrow write (s3:PutObject) outside a \
                                 staging prefix: {}; it could plant export generations, \
                                 manifests or copies that restore and verify read ({staging})",
                                writes.join("; ")
                            ),
                            format!(
                                "narrow the statement to the staging prefix as `escrow-sync \
                                 policy` prints it, or remove it (aws s3api get-bucket-policy \
                                 --bucket {bucket}, then put-bucket-policy)"
                            ),
                        ));
                    }
                    if !found.is_empty() {
                        f.push(Finding::high(
                            "s3.bucket-policy.foreign-principal",
                            &resource,
                            format!(
                                "the bucket policy of escrow bucket {bucket} grants access to {}",
                                describe_all(&found, &a.inventory.primary_account)
                            ),
                            format!(
                                "remove those statements (aws s3api get-bucket-policy --bucket \
                                 {bucket}, then put-bucket-policy or delete-bucket-policy): no \
                                 escrow bucket grants anything to the primary or another account"
                            ),
                        ));
                    }
                }
                Err(why) => f.push(Finding::new(
                    Severity::Medium,
                    "s3.bucket-policy.unreadable",
                    &resource,
                    format!("could not check the bucket policy of {bucket}: {why}"),
                    "read the policy by hand and make sure it grants nothing outside the escrow",
                )),
            }
        }
        Err(e) if code(&e).as_deref() == Some("NoSuchBucketPolicy") => {}
        Err(e) => {
            let err = sdk_error(e, "s3:GetBucketPolicy", &resource);
            f.could_not(err, &format!("the bucket policy of escrow bucket {bucket}"))?;
        }
    }
    match s3.get_bucket_acl().bucket(bucket).send().await {
        Ok(out) => {
            let owner = out.owner().and_then(|o| o.id()).unwrap_or_default();
            let found = acl_outsiders(out.grants(), owner);
            if !found.is_empty() {
                f.push(Finding::high(
                    "s3.bucket-acl.foreign-grantee",
                    &resource,
                    format!(
                        "the ACL of escrow bucket {bucket} grants access to {}",
                        found.join(", ")
                    ),
                    format!(
                        "aws s3api put-bucket-acl --bucket {bucket} --acl private, then \
                         aws s3api put-bucket-ownership-controls --bucket {bucket} \
                         --ownership-controls Rules=[{{ObjectOwnership=BucketOwnerEnforced}}] \
                         so that ACLs no longer apply"
                    ),
                ));
            }
        }
        Err(e) => {
            let err = sdk_error(e, "s3:GetBucketAcl", &resource);
            f.could_not(err, &format!("the ACL of escrow bucket {bucket}"))?;
        }
    }
    Ok(())
}

/// The statements of a policy document.
fn policy_statements(doc: &serde_json::Value) -> Vec<&serde_json::Value> {
    match doc.get("Statement") {
        Some(serde_json::Value::Array(a)) => a.iter().collect(),
        Some(v @ serde_json::Value::Object(_)) => vec![v],
        _ => Vec::new(),
    }
}

/// A policy element that is a string or a list of strings.
fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => {
            a.iter().filter_map(|s| s.as_str()).map(String::from).collect()
        }
        _ => Vec::new(),
    }
}

/// Whether an IAM wildcard pattern (`*`, `?`) matches `text`, ignoring case.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) =
        (pattern.to_lowercase().chars().collect(), text.to_lowercase().chars().collect());
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some((c, rest)) => {
                t.split_first().is_some_and(|(d, tr)| (*c == '?' || c == d) && go(rest, tr))
            }
        }
    }
    go(&p, &t)
}

/// Whether an Allow statement grants s3:PutObject (by name, by a wildcard,
/// or through NotAction).
fn grants_put(st: &serde_json::Value) -> bool {
    let allow = st
        .get("Effect")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|e| e.eq_ignore_ascii_case("allow"));
    if !allow {
        return false;
    }
    if let Some(not) = st.get("NotAction") {
        return !strings(Some(not)).iter().any(|a| glob(a, "s3:PutObject"));
    }
    strings(st.get("Action")).iter().any(|a| glob(a, "s3:PutObject"))
}

/// Whether a statement only lets its principals write objects under one of
/// `staging` (key prefixes of `bucket`): the grant a native export needs.
fn staging_write_only(st: &serde_json::Value, bucket: &str, staging: &[String]) -> bool {
    if st.get("NotAction").is_some() || st.get("NotResource").is_some() {
        return false;
    }
    let actions = strings(st.get("Action"));
    let resources = strings(st.get("Resource"));
    let writes = ["s3:putobject", "s3:abortmultipartupload"];
    !actions.is_empty()
        && actions.iter().all(|a| writes.contains(&a.to_lowercase().as_str()))
        && !resources.is_empty()
        && resources.iter().all(|r| {
            staging.iter().any(|p| {
                !p.is_empty()
                    && r.strip_prefix(&format!("arn:aws:s3:::{bucket}/{p}"))
                        .is_some_and(|rest| !rest.contains(".."))
            })
        })
}

/// The grantees of a bucket ACL other than its owner, described: everyone,
/// any AWS account, another canonical user or an e-mail address. S3's log
/// delivery group is AWS's own service, like a service principal.
fn acl_outsiders(grants: &[aws_sdk_s3::types::Grant], owner: &str) -> Vec<String> {
    use aws_sdk_s3::types::Type;
    let mut found: Vec<String> = grants
        .iter()
        .filter_map(|g| {
            let grantee = g.grantee()?;
            let permission = g.permission().map(|p| p.as_str()).unwrap_or("some access");
            let who = match grantee.r#type() {
                Type::CanonicalUser => match grantee.id() {
                    Some(id) if id == owner => return None,
                    Some(id) => format!("canonical user {id}"),
                    None => "an unnamed canonical user".to_string(),
                },
                Type::Group => match grantee.uri().unwrap_or_default() {
                    u if u.ends_with("/global/AllUsers") => "everyone (AllUsers)".to_string(),
                    u if u.ends_with("/global/AuthenticatedUsers") => {
                        "any AWS account (AuthenticatedUsers)".to_string()
                    }
                    u if u.ends_with("/s3/LogDelivery") => return None,
                    u => format!("group {u}"),
                },
                Type::AmazonCustomerByEmail => {
                    grantee.email_address().unwrap_or("an e-mail address").to_string()
                }
                other => format!("grantee {}", other.as_str()),
            };
            Some(format!("{who} ({permission})"))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

fn object_lock_missing(bucket: &str, resource: &str, uses: &str) -> Finding {
    Finding::high(
        "s3.bucket.object-lock",
        resource,
        format!(
            "escrow bucket {bucket} ({uses}): the config asks for Object Lock but the bucket does \
             not have it"
        ),
        format!(
            "enable Object Lock on {bucket} (aws s3api put-object-lock-configuration --bucket \
             {bucket} --object-lock-configuration ObjectLockEnabled=Enabled; versioning must be \
             on), or drop object_lock from the job"
        ),
    )
}

fn pab_fix(bucket: &str) -> String {
    format!(
        "aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration \
         BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true"
    )
}

// ---------------------------------------------------------------- DynamoDB

/// Escrow tables: name -> (uses, whether escrow-sync creates it lazily).
fn escrow_tables(a: &Auditor) -> BTreeMap<String, (Vec<String>, bool)> {
    let mut out: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    for j in &a.inventory.dynamodb {
        if let Some(t) = &j.dest_table {
            let e = out.entry(t.clone()).or_insert((Vec::new(), false));
            e.0.push(format!("job {}", j.name));
        }
        // Scans (table jobs, scan exports) keep checkpoints; native exports
        // do not, but a native-incremental table job keeps its watermark
        // (and its full runs' scan checkpoints) there.
        if (!j.native_export || j.dest_table.is_some()) && !j.checkpoint_table.is_empty() {
            let e = out.entry(j.checkpoint_table.clone()).or_insert((Vec::new(), true));
            if !e.0.iter().any(|u| u == "scan checkpoints") {
                e.0.push("scan checkpoints".to_string());
            }
        }
    }
    out
}

/// The escrow tables' checks; `key` as for [`buckets`].
pub(super) async fn tables(
    a: &Auditor,
    ddb: &aws_sdk_dynamodb::Client,
    key: Option<&str>,
    f: &mut Findings,
) -> Result<()> {
    for (table, (uses, lazy)) in escrow_tables(a) {
        let resource = format!("dynamodb://{table}");
        let uses = uses.join(", ");
        match ddb.describe_table().table_name(&table).send().await {
            Ok(out) => {
                let sse = out.table().and_then(|t| t.sse_description());
                super::hardening::table_sse(a, &table, &uses, sse, key, f).await;
                let protected =
                    out.table().and_then(|t| t.deletion_protection_enabled()).unwrap_or(false);
                if !protected {
                    f.push(Finding::high(
                        "dynamodb.table.deletion-protection",
                        &resource,
                        format!("escrow table {table} ({uses}) has no deletion protection"),
                        format!(
                            "aws dynamodb update-table --table-name {table} \
                             --deletion-protection-enabled"
                        ),
                    ));
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                if !lazy {
                    f.push(Finding::high(
                        "dynamodb.table.missing",
                        &resource,
                        format!(
                            "escrow table {table} ({uses}) does not exist in the escrow account"
                        ),
                        "run escrow-sync run (it creates the escrow table with point-in-time \
                         recovery and deletion protection); if it existed, it was deleted: restore \
                         it from a backup and find out who could delete it",
                    ));
                }
                continue;
            }
            Err(e) => {
                let err = sdk_error(e, "dynamodb:DescribeTable", &resource);
                f.could_not(err, &format!("escrow table {table}"))?;
                continue;
            }
        }
        match ddb.describe_continuous_backups().table_name(&table).send().await {
            Ok(out) => {
                let on = out
                    .continuous_backups_description()
                    .and_then(|d| d.point_in_time_recovery_description())
                    .and_then(|p| p.point_in_time_recovery_status())
                    == Some(&aws_sdk_dynamodb::types::PointInTimeRecoveryStatus::Enabled);
                if !on {
                    f.push(Finding::high(
                        "dynamodb.table.pitr",
                        &resource,
                        format!("escrow table {table} ({uses}) has no point-in-time recovery"),
                        format!(
                            "aws dynamodb update-continuous-backups --table-name {table} \
                             --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true"
                        ),
                    ));
                }
            }
            Err(e) => {
                let err = sdk_error(e, "dynamodb:DescribeContinuousBackups", &resource);
                f.could_not(err, &format!("point-in-time recovery of escrow table {table}"))?;
            }
        }
        match ddb.describe_time_to_live().table_name(&table).send().await {
            Ok(out) => {
                use aws_sdk_dynamodb::types::TimeToLiveStatus as T;
                let d = out.time_to_live_description();
                let status = d.and_then(|d| d.time_to_live_status());
                if matches!(status, Some(T::Enabled | T::Enabling)) {
                    let attr = d.and_then(|d| d.attribute_name()).unwrap_or("?");
                    f.push(Finding::high(
                        "dynamodb.table.ttl",
                        &resource,
                        format!(
                            "escrow table {table} ({uses}) has TTL on attribute {attr}: DynamoDB \
                             deletes escrowed items when they expire"
                        ),
                        format!(
                            "aws dynamodb update-time-to-live --table-name {table} \
                             --time-to-live-specification Enabled=false,AttributeName={attr}"
                        ),
                    ));
                }
            }
            Err(e) => {
                let err = sdk_error(e, "dynamodb:DescribeTimeToLive", &resource);
                f.could_not(err, &format!("TTL of escrow table {table}"))?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- KMS

pub(super) async fn key(a: &Auditor, kms: &aws_sdk_kms::Client, f: &mut Findings) -> Result<()> {
    let Some(key) = &a.inventory.escrow_kms_key else { return Ok(()) };
    let (own, primary) = (&a.inventory.escrow_account, &a.inventory.primary_account);
    let meta = match kms.describe_key().key_id(key).send().await {
        Ok(out) => match out.key_metadata {
            Some(m) => m,
            None => return Ok(()),
        },
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => {
            f.push(Finding::high(
                "kms.key.missing",
                key,
                format!("the escrow key {key} ([escrow] kms_key_id) does not exist"),
                "create a customer-managed key in the escrow account whose policy admits only \
                 escrow principals, and set [escrow] kms_key_id to it; if it existed, it was \
                 deleted and every copy under it is unreadable",
            ));
            return Ok(());
        }
        Err(e) => {
            let err = sdk_error(e, "kms:DescribeKey", key);
            return f.could_not(err, &format!("the escrow key {key}"));
        }
    };
    let arn = meta.arn().unwrap_or(meta.key_id()).to_string();
    if let Some(account) = meta.aws_account_id()
        && account != own
    {
        let whose = if account == primary { "the primary account" } else { "account" };
        f.push(Finding::high(
            "kms.key.foreign-account",
            &arn,
            format!("the escrow key {key} belongs to {whose} {account}, not the escrow {own}"),
            "use a key created in the escrow account: whoever holds the key holds the copies",
        ));
        return Ok(());
    }
    use aws_sdk_kms::types::KeyState as K;
    match meta.key_state() {
        Some(K::Enabled) | None => {}
        Some(K::Disabled) => f.push(Finding::high(
            "kms.key.disabled",
            &arn,
            format!("the escrow key {key} is disabled: no copy can be written or read"),
            format!("aws kms enable-key --key-id {arn}, then find out who disabled it"),
        )),
        Some(K::PendingDeletion | K::PendingReplicaDeletion) => {
            let when = meta
                .deletion_date()
                .and_then(|d| d.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
                .map(|d| format!(" on {d}"))
                .unwrap_or_default();
            f.push(Finding::high(
                "kms.key.pending-deletion",
                &arn,
                format!(
                    "the escrow key {key} is scheduled for deletion{when}: every copy under it \
                     becomes unreadable"
                ),
                format!(
                    "aws kms cancel-key-deletion --key-id {arn} && aws kms enable-key --key-id \
                     {arn}; then find out who scheduled it"
                ),
            ));
        }
        Some(other) => f.push(Finding::high(
            "kms.key.unusable",
            &arn,
            format!("the escrow key {key} is {}", other.as_str()),
            "make the key Enabled, or point [escrow] kms_key_id at an enabled escrow key",
        )),
    }
    match kms.get_key_policy().key_id(&arn).policy_name("default").send().await {
        Ok(out) => match parse_document(out.policy().unwrap_or("{}")) {
            Ok(doc) => {
                let found = outsiders(&doc, own);
                if !found.is_empty() {
                    f.push(Finding::high(
                        "kms.key-policy.foreign-principal",
                        &arn,
                        format!(
                            "the policy of the escrow key {key} admits {}",
                            describe_all(&found, primary)
                        ),
                        format!(
                            "remove those principals (aws kms get-key-policy --key-id {arn} \
                             --policy-name default, then put-key-policy): the escrow key admits \
                             escrow principals only"
                        ),
                    ));
                }
            }
            Err(why) => f.push(Finding::new(
                Severity::Medium,
                "kms.key-policy.unreadable",
                &arn,
                format!("could not check the policy of the escrow key {key}: {why}"),
                "read the key policy by hand and make sure it admits escrow principals only",
            )),
        },
        Err(e) => {
            let err = sdk_error(e, "kms:GetKeyPolicy", &arn);
            f.could_not(err, &format!("the policy of the escrow key {key}"))?;
        }
    }
    let mut pages = kms.list_grants().key_id(&arn).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let err = sdk_error(e, "kms:ListGrants", &arn);
                return f.could_not(err, &format!("the grants of the escrow key {key}"));
            }
        };
        for g in page.grants() {
            let Some(grantee) = g.grantee_principal() else { continue };
            let account = super::principals::account_of(grantee);
            if account.as_deref().is_none_or(|acct| acct == own) {
                // A service principal (no account) or an escrow identity.
                continue;
            }
            let who = Outsider { principal: grantee.to_string(), account };
            f.push(Finding::high(
                "kms.grant.foreign-principal",
                &arn,
                format!(
                    "grant {} on the escrow key {key} admits {}",
                    g.grant_id().unwrap_or("?"),
                    who.describe(primary)
                ),
                format!(
                    "aws kms revoke-grant --key-id {arn} --grant-id {}",
                    g.grant_id().unwrap_or("<grant id>")
                ),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- shares

/// Who a share names besides the escrow: account ids, `all` (public),
/// organizations.
fn shared_with(own: &str, accounts: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = accounts.into_iter().filter(|a| a != own).collect();
    out.sort();
    out.dedup();
    out
}

fn share_text(who: &[String], primary: &str) -> String {
    who.iter()
        .map(|w| match w.as_str() {
            "all" => "everyone (public)".to_string(),
            a if a == primary => format!("the primary account {a}"),
            a if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => format!("account {a}"),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) async fn ec2_shares(
    a: &Auditor,
    ec2: &aws_sdk_ec2::Client,
    f: &mut Findings,
) -> Result<()> {
    let (own, primary) = (a.inventory.escrow_account.clone(), a.inventory.primary_account.clone());
    let snapshots = a.inventory.ec2.iter().any(|j| j.snapshots || j.images);
    let images = a.inventory.ec2.iter().any(|j| j.images);
    if snapshots {
        let resource = format!("ec2 snapshots of account {own}");
        let mut ids = Vec::new();
        let mut pages = ec2.describe_snapshots().owner_ids("self").into_paginator().send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => ids.extend(
                    p.snapshots().iter().filter_map(|s| s.snapshot_id()).map(str::to_string),
                ),
                Err(e) => {
                    let err = sdk_error(e, "ec2:DescribeSnapshots", &resource);
                    return f.could_not(err, "the shares of escrow EBS snapshots");
                }
            }
        }
        let results: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move {
                let out = ec2
                    .describe_snapshot_attribute()
                    .snapshot_id(&id)
                    .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                    .send()
                    .await;
                (id, out)
            })
            .buffered(a.concurrency)
            .collect()
            .await;
        for (id, out) in results {
            match out {
                Ok(out) => {
                    let who = shared_with(
                        &own,
                        out.create_volume_permissions().iter().filter_map(|p| {
                            p.user_id()
                                .map(str::to_string)
                                .or_else(|| p.group().map(|g| g.as_str().to_string()))
                        }),
                    );
                    if !who.is_empty() {
                        f.push(Finding::high(
                            "ec2.snapshot.shared",
                            &id,
                            format!(
                                "escrow EBS snapshot {id} is shared with {} (createVolumePermission)",
                                share_text(&who, &primary)
                            ),
                            format!(
                                "aws ec2 modify-snapshot-attribute --snapshot-id {id} --attribute \
                                 createVolumePermission --operation-type remove --user-ids {}",
                                who.join(" ")
                            ),
                        ));
                    }
                }
                Err(e) if code(&e).is_some_and(|c| c.contains("NotFound")) => {}
                Err(e) => {
                    let err = sdk_error(e, "ec2:DescribeSnapshotAttribute", &id);
                    f.could_not(err, &format!("the shares of escrow EBS snapshot {id}"))?;
                }
            }
        }
    }
    if images {
        let resource = format!("ec2 images of account {own}");
        let mut ids = Vec::new();
        let mut pages = ec2.describe_images().owners("self").into_paginator().send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => {
                    ids.extend(p.images().iter().filter_map(|i| i.image_id()).map(str::to_string))
                }
                Err(e) => {
                    let err = sdk_error(e, "ec2:DescribeImages", &resource);
                    return f.could_not(err, "the shares of escrow AMIs");
                }
            }
        }
        let results: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move {
                let out = ec2
                    .describe_image_attribute()
                    .image_id(&id)
                    .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
                    .send()
                    .await;
                (id, out)
            })
            .buffered(a.concurrency)
            .collect()
            .await;
        for (id, out) in results {
            match out {
                Ok(out) => {
                    let who = shared_with(
                        &own,
                        out.launch_permissions().iter().filter_map(|p| {
                            p.user_id()
                                .or(p.organization_arn())
                                .or(p.organizational_unit_arn())
                                .map(str::to_string)
                                .or_else(|| p.group().map(|g| g.as_str().to_string()))
                        }),
                    );
                    if !who.is_empty() {
                        f.push(Finding::high(
                            "ec2.image.shared",
                            &id,
                            format!(
                                "escrow AMI {id} is shared with {} (launchPermission)",
                                share_text(&who, &primary)
                            ),
                            format!(
                                "aws ec2 reset-image-attribute --image-id {id} --attribute \
                                 launchPermission"
                            ),
                        ));
                    }
                }
                Err(e) if code(&e).is_some_and(|c| c.contains("NotFound")) => {}
                Err(e) => {
                    let err = sdk_error(e, "ec2:DescribeImageAttribute", &id);
                    f.could_not(err, &format!("the shares of escrow AMI {id}"))?;
                }
            }
        }
    }
    Ok(())
}

pub(super) async fn rds_shares(
    a: &Auditor,
    rds: &aws_sdk_rds::Client,
    f: &mut Findings,
) -> Result<()> {
    let (own, primary) = (a.inventory.escrow_account.clone(), a.inventory.primary_account.clone());
    let db = a.inventory.rds.iter().any(|j| j.db);
    let cluster = a.inventory.rds.iter().any(|j| j.cluster);
    if db {
        let resource = format!("rds db snapshots of account {own}");
        let mut ids = Vec::new();
        let mut pages = rds.describe_db_snapshots().snapshot_type("manual").into_paginator().send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => ids.extend(
                    p.db_snapshots()
                        .iter()
                        .filter(|s| s.snapshot_type().is_none_or(|t| t == "manual"))
                        .filter_map(|s| s.db_snapshot_identifier())
                        .map(str::to_string),
                ),
                Err(e) => {
                    let err = sdk_error(e, "rds:DescribeDBSnapshots", &resource);
                    return f.could_not(err, "the shares of escrow RDS snapshots");
                }
            }
        }
        let results: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move {
                let out =
                    rds.describe_db_snapshot_attributes().db_snapshot_identifier(&id).send().await;
                (id, out)
            })
            .buffered(a.concurrency)
            .collect()
            .await;
        for (id, out) in results {
            match out {
                Ok(out) => {
                    let values = out
                        .db_snapshot_attributes_result()
                        .map(|r| r.db_snapshot_attributes())
                        .unwrap_or_default()
                        .iter()
                        .filter(|at| at.attribute_name() == Some("restore"))
                        .flat_map(|at| at.attribute_values().iter().cloned());
                    let who = shared_with(&own, values);
                    if !who.is_empty() {
                        f.push(Finding::high(
                            "rds.snapshot.shared",
                            format!("rds snapshot {id}"),
                            format!(
                                "escrow RDS snapshot {id} can be restored by {} (restore attribute)",
                                share_text(&who, &primary)
                            ),
                            format!(
                                "aws rds modify-db-snapshot-attribute --db-snapshot-identifier {id} \
                                 --attribute-name restore --values-to-remove {}",
                                who.join(" ")
                            ),
                        ));
                    }
                }
                Err(e) if code(&e).is_some_and(|c| c.contains("NotFound")) => {}
                Err(e) => {
                    let err = sdk_error(e, "rds:DescribeDBSnapshotAttributes", &id);
                    f.could_not(err, &format!("the shares of escrow RDS snapshot {id}"))?;
                }
            }
        }
    }
    if cluster {
        let resource = format!("rds cluster snapshots of account {own}");
        let mut ids = Vec::new();
        let mut pages =
            rds.describe_db_cluster_snapshots().snapshot_type("manual").into_paginator().send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => ids.extend(
                    p.db_cluster_snapshots()
                        .iter()
                        .filter(|s| s.snapshot_type().is_none_or(|t| t == "manual"))
                        .filter_map(|s| s.db_cluster_snapshot_identifier())
                        .map(str::to_string),
                ),
                Err(e) => {
                    let err = sdk_error(e, "rds:DescribeDBClusterSnapshots", &resource);
                    return f.could_not(err, "the shares of escrow Aurora cluster snapshots");
                }
            }
        }
        let results: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move {
                let out = rds
                    .describe_db_cluster_snapshot_attributes()
                    .db_cluster_snapshot_identifier(&id)
                    .send()
                    .await;
                (id, out)
            })
            .buffered(a.concurrency)
            .collect()
            .await;
        for (id, out) in results {
            match out {
                Ok(out) => {
                    let values = out
                        .db_cluster_snapshot_attributes_result()
                        .map(|r| r.db_cluster_snapshot_attributes())
                        .unwrap_or_default()
                        .iter()
                        .filter(|at| at.attribute_name() == Some("restore"))
                        .flat_map(|at| at.attribute_values().iter().cloned());
                    let who = shared_with(&own, values);
                    if !who.is_empty() {
                        f.push(Finding::high(
                            "rds.cluster-snapshot.shared",
                            format!("rds cluster snapshot {id}"),
                            format!(
                                "escrow Aurora cluster snapshot {id} can be restored by {} \
                                 (restore attribute)",
                                share_text(&who, &primary)
                            ),
                            format!(
                                "aws rds modify-db-cluster-snapshot-attribute \
                                 --db-cluster-snapshot-identifier {id} --attribute-name restore \
                                 --values-to-remove {}",
                                who.join(" ")
                            ),
                        ));
                    }
                }
                Err(e) if code(&e).is_some_and(|c| c.contains("NotFound")) => {}
                Err(e) => {
                    let err = sdk_error(e, "rds:DescribeDBClusterSnapshotAttributes", &id);
                    f.could_not(err, &format!("the shares of escrow cluster snapshot {id}"))?;
                }
            }
        }
    }
    Ok(())
}

pub(super) async fn redshift_shares(
    a: &Auditor,
    redshift: &aws_sdk_redshift::Client,
    f: &mut Findings,
) -> Result<()> {
    if a.inventory.redshift.is_empty() {
        return Ok(());
    }
    let (own, primary) = (&a.inventory.escrow_account, &a.inventory.primary_account);
    let resource = format!("redshift snapshots of account {own}");
    let mut pages =
        redshift.describe_cluster_snapshots().owner_account(own).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let err = sdk_error(e, "redshift:DescribeClusterSnapshots", &resource);
                return f.could_not(err, "the shares of escrow Redshift snapshots");
            }
        };
        for s in page.snapshots() {
            if s.owner_account().is_some_and(|o| o != own) {
                continue;
            }
            let id = s.snapshot_identifier().unwrap_or("?");
            let who = shared_with(
                own,
                s.accounts_with_restore_access()
                    .iter()
                    .filter_map(|x| x.account_id())
                    .map(str::to_string),
            );
            if !who.is_empty() {
                f.push(Finding::high(
                    "redshift.snapshot.shared",
                    format!("redshift snapshot {id}"),
                    format!(
                        "escrow Redshift snapshot {id} can be restored by {} \
                         (AccountsWithRestoreAccess)",
                        share_text(&who, primary)
                    ),
                    format!(
                        "aws redshift revoke-snapshot-access --snapshot-identifier {id} \
                         --account-with-restore-access {}",
                        who.join(" / ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- CloudTrail

pub(super) async fn trails(
    a: &Auditor,
    ct: &aws_sdk_cloudtrail::Client,
    f: &mut Findings,
) -> Result<()> {
    let own = &a.inventory.escrow_account;
    let region = &a.escrow_region;
    let resource = format!("cloudtrail of account {own} ({region})");
    let list = match ct.describe_trails().include_shadow_trails(true).send().await {
        Ok(out) => out.trail_list.unwrap_or_default(),
        Err(e) => {
            let err = sdk_error(e, "cloudtrail:DescribeTrails", &resource);
            return f.could_not(err, "whether a CloudTrail trail logs the escrow account");
        }
    };
    let mut logging = Vec::new();
    let mut stopped = Vec::new();
    for t in &list {
        let name = t.name().unwrap_or("?").to_string();
        let id = t.trail_arn().map(str::to_string).unwrap_or_else(|| name.clone());
        match ct.get_trail_status().name(&id).send().await {
            Ok(s) if s.is_logging() == Some(true) => logging.push(id),
            Ok(_) => stopped.push((id, name)),
            Err(e) => {
                let err = sdk_error(e, "cloudtrail:GetTrailStatus", &id);
                f.could_not(err, &format!("whether trail {name} logs"))?;
            }
        }
    }
    let fix = "aws cloudtrail start-logging --name <trail> (or create a multi-region trail into an \
               escrow bucket): without it nobody can tell who touched the escrow";
    if list.is_empty() {
        f.push(Finding::high(
            "cloudtrail.not-logging",
            &resource,
            format!("no CloudTrail trail in the escrow account {own} ({region})"),
            fix,
        ));
    }
    let severity = if logging.is_empty() { Severity::High } else { Severity::Low };
    for (id, name) in stopped {
        let (check, problem) = if logging.is_empty() {
            (
                "cloudtrail.not-logging",
                format!(
                    "trail {name} is not logging, and no other trail logs the escrow account {own} \
                     ({region})"
                ),
            )
        } else {
            ("cloudtrail.trail.stopped", format!("trail {name} is not logging (another trail is)"))
        };
        f.push(Finding::new(
            severity,
            check,
            id,
            problem,
            format!("aws cloudtrail start-logging --name {name}, or delete the trail"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- isolation

/// Read-only calls against escrow resources with the primary's credentials:
/// any success is a finding; every failure (access denied, not found...)
/// is what isolation looks like.
pub(super) async fn isolation(a: &Auditor, p: &PrimaryClients, f: &mut Findings) {
    let inv = &a.inventory;
    let own = &inv.escrow_account;
    let who = format!("the primary's credentials (account {})", p.account);
    let fix = |what: &str| {
        format!(
            "remove whatever grants the primary access to {what} (bucket, key or resource \
             policies, role trust, IAM permissions in the primary naming escrow resources): the \
             primary must never reach the escrow"
        )
    };
    for bucket in escrow_buckets(a).into_keys() {
        let mut calls = Vec::new();
        if reached(&p.s3.get_bucket_versioning().bucket(&bucket).send().await) {
            calls.push("s3:GetBucketVersioning");
        }
        if reached(&p.s3.list_objects_v2().bucket(&bucket).max_keys(1).send().await) {
            calls.push("s3:ListObjectsV2");
        }
        if !calls.is_empty() {
            f.push(Finding::high(
                "isolation.primary-access",
                format!("s3://{bucket}"),
                format!("{who} can call {} on escrow bucket {bucket}", calls.join(" and ")),
                fix(&format!("s3://{bucket}")),
            ));
        }
    }
    for table in escrow_tables(a).into_keys() {
        let arn = format!("arn:aws:dynamodb:{}:{own}:table/{table}", a.escrow_region);
        if reached(&p.dynamodb.describe_table().table_name(&arn).send().await) {
            f.push(Finding::high(
                "isolation.primary-access",
                format!("dynamodb://{table}"),
                format!("{who} can call dynamodb:DescribeTable on escrow table {arn}"),
                fix(&arn),
            ));
        }
    }
    if let Some(key) = &inv.escrow_kms_key {
        // An alias or bare id would resolve in the primary's own account.
        let key_arn = key.starts_with("arn:").then(|| key.clone());
        if let Some(arn) = key_arn
            && reached(&p.kms.describe_key().key_id(&arn).send().await)
        {
            f.push(Finding::high(
                "isolation.primary-access",
                &arn,
                format!("{who} can call kms:DescribeKey on the escrow key {arn}"),
                fix(&arn),
            ));
        }
    }
    if let Some(role) = &inv.operator_role_arn
        && reached(
            &p.sts
                .assume_role()
                .role_arn(role)
                .role_session_name("escrow-sync-audit-probe")
                .send()
                .await,
        )
    {
        f.push(Finding::high(
            "isolation.primary-access",
            role,
            format!("{who} can assume the escrow operator role {role}"),
            fix(role),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{ManifestLocation, S3Grant, TableGrant};

    fn auditor(inv: crate::Inventory) -> Auditor {
        Auditor::new(inv)
    }

    #[test]
    fn escrow_buckets_merge_jobs_and_manifests() {
        let inv = crate::Inventory {
            s3: vec![
                S3Grant { name: "a".into(), dest_bucket: "esc".into(), ..Default::default() },
                S3Grant {
                    name: "b".into(),
                    dest_bucket: "esc".into(),
                    object_lock: true,
                    ..Default::default()
                },
            ],
            dynamodb: vec![TableGrant {
                name: "t".into(),
                dest_bucket: Some("exports".into()),
                checkpoint_table: "cp".into(),
                ..Default::default()
            }],
            manifest: Some(ManifestLocation { bucket: "m".into(), ..Default::default() }),
            ..Default::default()
        };
        let b = escrow_buckets(&auditor(inv.clone()));
        assert_eq!(b.keys().collect::<Vec<_>>(), ["esc", "exports", "m"]);
        assert!(b["esc"].object_lock && !b["m"].object_lock);
        assert_eq!(b["esc"].uses, ["job a", "job b"]);
        let t = escrow_tables(&auditor(inv));
        assert_eq!(t.keys().collect::<Vec<_>>(), ["cp"], "scan exports keep checkpoints");
        assert!(t["cp"].1, "checkpoint tables are created lazily");
    }

    #[test]
    fn native_exports_have_no_checkpoint_table() {
        let inv = crate::Inventory {
            dynamodb: vec![
                TableGrant {
                    name: "n".into(),
                    dest_bucket: Some("x".into()),
                    native_export: true,
                    checkpoint_table: "cp".into(),
                    ..Default::default()
                },
                TableGrant {
                    name: "t".into(),
                    dest_table: Some("escrow-orders".into()),
                    checkpoint_table: "cp2".into(),
                    ..Default::default()
                },
                TableGrant {
                    name: "i".into(),
                    dest_table: Some("escrow-items".into()),
                    native_export: true,
                    history_bucket: Some("h".into()),
                    checkpoint_table: "cp3".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let t = escrow_tables(&auditor(inv));
        // A native-incremental table job keeps its watermark in cp3.
        assert_eq!(t.keys().collect::<Vec<_>>(), ["cp2", "cp3", "escrow-items", "escrow-orders"]);
        assert!(!t["escrow-orders"].1);
    }

    #[test]
    fn xml_elements_are_read() {
        let body = "<?xml version=\"1.0\"?><GetBucketVersioningResponse><Status>Suspended</Status>\
                    </GetBucketVersioningResponse>";
        assert_eq!(xml_text(body, "Status").as_deref(), Some("Suspended"));
        assert_eq!(xml_text("<GetBucketVersioningResponse/>", "Status"), None);
    }

    #[test]
    fn shares_name_everyone_but_the_escrow() {
        let who = shared_with(
            "222222222222",
            ["111111111111", "222222222222", "all", "111111111111"].map(String::from),
        );
        assert_eq!(who, ["111111111111", "all"]);
        assert_eq!(
            share_text(&who, "111111111111"),
            "the primary account 111111111111, everyone (public)"
        );
    }
}
